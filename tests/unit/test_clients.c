/* Unit tests for funneld/clients.c (per-client limits) and funneld/siphash.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sockaddr_test.h"

#include "clients.h"

static const uint8_t tkey[SIPHASH_KEY_LEN] = {
	0x6b, 0x21, 0x90, 0x0e, 0x3c, 0xd4, 0x57, 0xa8,
	0x11, 0xf2, 0x4d, 0x86, 0x2a, 0xbe, 0x73, 0x05,
};

/* Client number i: 2001:db8:X:Y::1, a /64 of its own. */
static struct sockaddr_storage
sa_n(uint32_t i)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_addr.s6_addr[0] = 0x20;
	sin6->sin6_addr.s6_addr[1] = 0x01;
	sin6->sin6_addr.s6_addr[2] = 0x0d;
	sin6->sin6_addr.s6_addr[3] = 0xb8;
	sin6->sin6_addr.s6_addr[4] = (uint8_t)(i >> 24);
	sin6->sin6_addr.s6_addr[5] = (uint8_t)(i >> 16);
	sin6->sin6_addr.s6_addr[6] = (uint8_t)(i >> 8);
	sin6->sin6_addr.s6_addr[7] = (uint8_t)i;
	sin6->sin6_addr.s6_addr[15] = 1;
	sin6->sin6_port = htons(443);
	return ss;
}

static struct clients *
mk(size_t capacity, uint64_t log_interval_ms)
{
	struct clients *c = clients_new(capacity, tkey, log_interval_ms);

	assert_non_null(c);
	return c;
}

static enum client_verdict
admit(struct clients *c, const struct client_limits *lim, struct sockaddr_storage ss,
    uint64_t now, struct client_ref *ref)
{
	struct client_admission	a;
	enum client_verdict	v;

	v = clients_admit(c, lim, SA(ss), now, &a);
	assert_true((v == CLIENT_ADMIT) == (a.ref.slot != 0));
	if (ref != NULL)
		*ref = a.ref;
	return v;
}

/* Admit and release at once: spends a token, holds nothing. */
static enum client_verdict
touch(struct clients *c, const struct client_limits *lim, struct sockaddr_storage ss, uint64_t now)
{
	struct client_ref	ref;
	enum client_verdict	v = admit(c, lim, ss, now, &ref);

	clients_release(c, &ref);
	return v;
}

static bool
should_log_n(struct clients *c, uint32_t i, uint64_t now, uint32_t *sup)
{
	struct sockaddr_storage x = sa_n(i);

	return clients_should_log(c, SA(x), now, sup);
}

static struct clients_stats
stats(struct clients *c)
{
	struct clients_stats st;

	clients_stats(c, &st);
	return st;
}

/* ---- SipHash ---- */

/* The paper's vectors: key 00..0f, message 00..(len-1). */
static void
test_siphash_vectors(void **state)
{
	uint8_t	k[16], m[16];

	for (int i = 0; i < 16; i++)
		k[i] = m[i] = (uint8_t)i;
	assert_true(siphash24(k, m, 0) == 0x726fdb47dd0e0e31ULL);
	assert_true(siphash24(k, m, 8) == 0x93f5f5799a932462ULL);
	assert_true(siphash24(k, m, 15) == 0xa129ca6149be45e5ULL);
	/* The key matters. */
	k[0] ^= 1;
	assert_true(siphash24(k, m, 15) != 0xa129ca6149be45e5ULL);
}

/* ---- configuration ---- */

static void
test_parse_rate(void **state)
{
	static const char *bad[] = {
		"", "/s", "0/s", "20", "20/", "20/x", "20/ss", "20/S", " 20/s", "20/s ",
		"20 /s", "-1/s", "+1/s", "1.5/s", "1000001/s", "99999999999999999999/s", "20/d",
	};
	struct client_rate r = { 7, 7 };

	assert_int_equal(clients_parse_rate("20/s", &r), 0);
	assert_int_equal(r.count, 20);
	assert_int_equal(r.per_ms, 1000);
	assert_int_equal(clients_parse_rate("100/m", &r), 0);
	assert_int_equal(r.count, 100);
	assert_int_equal(r.per_ms, 60000);
	assert_int_equal(clients_parse_rate("5/h", &r), 0);
	assert_int_equal(r.count, 5);
	assert_int_equal(r.per_ms, 3600000);
	assert_int_equal(clients_parse_rate("1000000/s", &r), 0);
	assert_int_equal(r.count, 1000000);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r.count = r.per_ms = 7;
		if (clients_parse_rate(bad[i], &r) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_int_equal(r.count, 7);
		assert_int_equal(r.per_ms, 7);
	}
	assert_int_equal(clients_parse_rate(NULL, &r), -1);
}

static void
test_new_capacity(void **state)
{
	struct clients	*c;

	c = mk(1, 0);
	assert_int_equal(stats(c).capacity, CLIENTS_WAYS);
	clients_free(c);
	c = mk(65536, 0);
	assert_int_equal(stats(c).capacity, 65536);
	assert_int_equal(stats(c).entries, 0);
	clients_free(c);
	c = mk(65537, 0);
	assert_int_equal(stats(c).capacity, 131072);
	clients_free(c);
	errno = 0;
	assert_null(clients_new(0, tkey, 0));
	assert_int_equal(errno, EINVAL);
	assert_null(clients_new((size_t)CLIENTS_CAPACITY_MAX + 1, tkey, 0));
	clients_free(NULL);
}

/* ---- keying ---- */

static void
test_key_text(void **state)
{
	struct sockaddr_storage	 a;
	struct sockaddr_un	 un;
	char			 buf[CLIENTS_KEY_TEXT_MAX];

	a = sa("203.0.113.7", 1);
	assert_int_equal(clients_key_text(SA(a), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "203.0.113.7");
	a = sa("::ffff:203.0.113.7", 1);
	assert_int_equal(clients_key_text(SA(a), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "203.0.113.7");
	a = sa("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 1);
	assert_int_equal(clients_key_text(SA(a), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "2001:db8:1:2::/64");
	a = sa("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1);
	assert_int_equal(clients_key_text(SA(a), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ffff:ffff:ffff:ffff::/64");
	a = sa("::1", 1);
	assert_int_equal(clients_key_text(SA(a), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "::/64");
	/* Short buffer, other family. */
	a = sa("2001:db8:1:2::1", 1);
	assert_int_equal(clients_key_text(SA(a), buf, 17), -1);
	assert_string_equal(buf, "-");
	assert_int_equal(clients_key_text(SA(a), buf, 18), 0);
	assert_string_equal(buf, "2001:db8:1:2::/64");
	assert_int_equal(clients_key_text(SA(a), buf, 1), -1);
	assert_string_equal(buf, "");
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	assert_int_equal(clients_key_text((struct sockaddr *)&un, buf, sizeof(buf)), -1);
	assert_string_equal(buf, "-");
}

/* Two addresses are one client iff the second is refused with max_conns 1. */
static bool
same_client(const char *x, const char *y)
{
	struct clients		*c = mk(64, 0);
	struct client_limits	 lim = { .max_conns = 1 };
	struct client_ref	 r;
	enum client_verdict	 v;

	assert_int_equal(admit(c, &lim, sa(x, 1000), 0, &r), CLIENT_ADMIT);
	v = admit(c, &lim, sa(y, 2000), 0, NULL);
	clients_free(c);
	assert_true(v == CLIENT_ADMIT || v == CLIENT_OVER_CONNECTIONS);
	return v == CLIENT_OVER_CONNECTIONS;
}

static void
test_keying(void **state)
{
	assert_true(same_client("203.0.113.7", "203.0.113.7"));
	assert_false(same_client("203.0.113.7", "203.0.113.8"));
	assert_true(same_client("203.0.113.7", "::ffff:203.0.113.7"));
	assert_true(same_client("::ffff:203.0.113.7", "203.0.113.7"));
	assert_true(same_client("2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3"));
	assert_false(same_client("2001:db8:1:2::1", "2001:db8:1:3::1"));
	assert_false(same_client("2001:db8:1:2::1", "2001:db9:1:2::1"));
	/* The same 64 bits as an IPv4 key and an IPv6 prefix: two clients. */
	assert_false(same_client("1.2.3.4", "0:0:102:304::1"));
	/* NAT64 or 6to4 are IPv6 prefixes like any other. */
	assert_false(same_client("1.2.3.4", "64:ff9b::1.2.3.4"));
}

static void
test_bad_address(void **state)
{
	struct clients		*c = mk(64, 1000);
	struct client_limits	 lim = { 0 };
	struct client_admission	 a;
	struct sockaddr_un	 un;
	uint32_t		 sup = 9;

	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	assert_int_equal(clients_admit(c, &lim, (struct sockaddr *)&un, 0, &a), CLIENT_BAD_ADDRESS);
	assert_int_equal(a.ref.slot, 0);
	assert_true(a.log);
	assert_int_equal(clients_admit(c, &lim, NULL, 0, &a), CLIENT_BAD_ADDRESS);
	assert_true(clients_should_log(c, (struct sockaddr *)&un, 0, &sup));
	assert_int_equal(sup, 0);
	assert_int_equal(stats(c).entries, 0);
	clients_free(c);
}

static void
test_verdict_names(void **state)
{
	assert_string_equal(clients_verdict_name(CLIENT_ADMIT), "admitted");
	assert_string_equal(clients_verdict_name(CLIENT_OVER_CONNECTIONS), "too_many_connections");
	assert_string_equal(clients_verdict_name(CLIENT_OVER_RATE), "rate_limited");
	assert_string_equal(clients_verdict_name(CLIENT_TABLE_FULL), "table_full");
	assert_string_equal(clients_verdict_name(CLIENT_BAD_ADDRESS), "bad_address");
	assert_int_equal(CLIENT_BAD_ADDRESS + 1, CLIENT_VERDICTS);
}

/* ---- max_connections ---- */

static void
test_max_connections(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 lim = { .max_conns = 3 };
	struct client_ref	 r[4], other;
	struct client_admission	 a;
	struct sockaddr_storage	 x;

	for (int i = 0; i < 3; i++)
		assert_int_equal(admit(c, &lim, sa("198.51.100.1", (uint16_t)(1000 + i)), 0, &r[i]),
		    CLIENT_ADMIT);
	x = sa("198.51.100.1", 2000);
	assert_int_equal(clients_admit(c, &lim, SA(x), 0, &a),
	    CLIENT_OVER_CONNECTIONS);
	assert_int_equal(a.ref.slot, 0);
	/* Another client is not affected. */
	assert_int_equal(admit(c, &lim, sa("198.51.100.2", 1), 0, &other), CLIENT_ADMIT);
	assert_int_equal(stats(c).active, 2);
	assert_int_equal(stats(c).entries, 2);

	clients_release(c, &r[1]);
	assert_int_equal(r[1].slot, 0);
	/* Releasing the cleared ref again does nothing. */
	clients_release(c, &r[1]);
	assert_int_equal(admit(c, &lim, sa("198.51.100.1", 3000), 0, &r[3]), CLIENT_ADMIT);
	assert_int_equal(admit(c, &lim, sa("198.51.100.1", 3001), 0, NULL), CLIENT_OVER_CONNECTIONS);

	clients_release(c, &r[0]);
	clients_release(c, &r[2]);
	clients_release(c, &r[3]);
	clients_release(c, &other);
	assert_int_equal(stats(c).active, 0);
	/* Unlimited. */
	lim.max_conns = 0;
	for (int i = 0; i < 1000; i++)
		assert_int_equal(admit(c, &lim, sa("198.51.100.1", 1), 0, NULL), CLIENT_ADMIT);
	clients_free(c);
}

/* ---- rate ---- */

static void
test_rate_burst_and_refill(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 lim = { 0 };
	struct sockaddr_storage	 x = sa("192.0.2.9", 5);
	uint64_t		 t = 1000000;

	assert_int_equal(clients_parse_rate("2/s", &lim.rate), 0);
	/* A new client has the whole burst, 2 x 2. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(touch(c, &lim, x, t), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, x, t), CLIENT_OVER_RATE);
	/* One token per 500 ms, exactly. */
	assert_int_equal(touch(c, &lim, x, t + 499), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, t + 500), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, x, t + 500), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, t + 1250), CLIENT_ADMIT);
	/* 250 ms carried over: the next token at 1500, not 1750. */
	assert_int_equal(touch(c, &lim, x, t + 1499), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, t + 1500), CLIENT_ADMIT);
	/* A long idle spell fills the bucket to the burst and no further. */
	t += 3600 * 1000;
	for (int i = 0; i < 4; i++)
		assert_int_equal(touch(c, &lim, x, t), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, x, t), CLIENT_OVER_RATE);
	clients_free(c);
}

static void
test_rate_per_minute_and_hour(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 lim = { 0 };
	struct sockaddr_storage	 x = sa("192.0.2.9", 5), y = sa("192.0.2.10", 5);

	assert_int_equal(clients_parse_rate("3/m", &lim.rate), 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(touch(c, &lim, x, 0), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, x, 0), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, 19999), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, 20000), CLIENT_ADMIT);

	assert_int_equal(clients_parse_rate("1/h", &lim.rate), 0);
	assert_int_equal(touch(c, &lim, y, 0), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, y, 0), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, y, 3599999), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, y, 3600000), CLIENT_ADMIT);
	clients_free(c);
}

/* A refusal spends nothing; the connection limit is checked first. */
static void
test_refusals_cost_nothing(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 lim = { .max_conns = 1 };
	struct sockaddr_storage	 x = sa("192.0.2.9", 5);
	struct client_ref	 r;

	assert_int_equal(clients_parse_rate("1/s", &lim.rate), 0);
	assert_int_equal(admit(c, &lim, x, 0, &r), CLIENT_ADMIT);
	for (int i = 0; i < 100; i++)
		assert_int_equal(admit(c, &lim, x, 0, NULL), CLIENT_OVER_CONNECTIONS);
	clients_release(c, &r);
	/* One token left of the burst of 2. */
	assert_int_equal(touch(c, &lim, x, 0), CLIENT_ADMIT);
	for (int i = 0; i < 100; i++)
		assert_int_equal(touch(c, &lim, x, 999), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, 1000), CLIENT_ADMIT);
	clients_free(c);
}

/* Threads pass times read before they got the lock: an older now_ms than
 * the entry has seen neither refills nor underflows. */
static void
test_time_skew(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 lim = { 0 };
	struct sockaddr_storage	 x = sa("192.0.2.9", 5);

	assert_int_equal(clients_parse_rate("1/s", &lim.rate), 0);
	assert_int_equal(touch(c, &lim, x, 5000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, x, 4990), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, x, 4980), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, 0), CLIENT_OVER_RATE);
	/* The refill counts from 5000, the latest time seen. */
	assert_int_equal(touch(c, &lim, x, 5999), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &lim, x, 6000), CLIENT_ADMIT);
	clients_free(c);
}

/* ---- reload: each admission passes the limits of its snapshot ---- */

static void
test_reload_max_connections(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 old = { .max_conns = 2 }, new = { .max_conns = 1 };
	struct sockaddr_storage	 x = sa("192.0.2.9", 5);
	struct client_ref	 r1, r2, r3;

	assert_int_equal(admit(c, &old, x, 0, &r1), CLIENT_ADMIT);
	assert_int_equal(admit(c, &old, x, 0, &r2), CLIENT_ADMIT);
	/* Lowered: the two open ones stay, nothing new until below the new max. */
	assert_int_equal(admit(c, &new, x, 0, NULL), CLIENT_OVER_CONNECTIONS);
	clients_release(c, &r1);
	assert_int_equal(admit(c, &new, x, 0, NULL), CLIENT_OVER_CONNECTIONS);
	clients_release(c, &r2);
	assert_int_equal(admit(c, &new, x, 0, &r3), CLIENT_ADMIT);
	/* Raised again. */
	assert_int_equal(admit(c, &old, x, 0, &r1), CLIENT_ADMIT);
	assert_int_equal(admit(c, &old, x, 0, NULL), CLIENT_OVER_CONNECTIONS);
	clients_release(c, &r1);
	clients_release(c, &r3);
	assert_int_equal(stats(c).active, 0);
	clients_free(c);
}

static void
test_reload_rate(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 slow = { 0 }, fast = { 0 }, none = { 0 }, min = { 0 };
	struct sockaddr_storage	 x = sa("192.0.2.9", 5);

	assert_int_equal(clients_parse_rate("2/s", &slow.rate), 0);
	assert_int_equal(clients_parse_rate("10/s", &fast.rate), 0);
	assert_int_equal(clients_parse_rate("1/m", &min.rate), 0);

	/* Drained under 2/s; 10/s refills from empty, at its own rate. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(touch(c, &slow, x, 0), CLIENT_ADMIT);
	assert_int_equal(touch(c, &fast, x, 0), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &fast, x, 99), CLIENT_OVER_RATE);
	assert_int_equal(touch(c, &fast, x, 100), CLIENT_ADMIT);
	/* 19 tokens left of 10/s's 20 are capped at 1/m's burst of 2. */
	assert_int_equal(touch(c, &fast, x, 100000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &min, x, 100000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &min, x, 100000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &min, x, 100000), CLIENT_OVER_RATE);
	/* Limit removed: anything goes; restored: the bucket starts full. */
	for (int i = 0; i < 100; i++)
		assert_int_equal(touch(c, &none, x, 200000), CLIENT_ADMIT);
	for (int i = 0; i < 4; i++)
		assert_int_equal(touch(c, &slow, x, 200000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &slow, x, 200000), CLIENT_OVER_RATE);
	clients_free(c);
}

/* ---- eviction ---- */

/* A flood of distinct sources: memory fixed, pinned clients stay counted. */
static void
test_flood_of_sources(void **state)
{
	struct clients		*c = mk(256, 0);
	struct client_limits	 lim = { .max_conns = 1 };
	struct client_ref	 pinned[40];
	struct clients_stats	 st;
	uint32_t		 i;

	assert_int_equal(clients_parse_rate("20/s", &lim.rate), 0);
	for (i = 0; i < 40; i++)
		assert_int_equal(admit(c, &lim, sa_n(i), 0, &pinned[i]), CLIENT_ADMIT);
	for (i = 1000; i < 101000; i++) {
		assert_int_equal(touch(c, &lim, sa_n(i), i), CLIENT_ADMIT);
		if (i % 10000 == 0)
			assert_true(stats(c).entries <= stats(c).capacity);
	}
	st = stats(c);
	assert_int_equal(st.capacity, 256);
	assert_int_equal(st.entries, 256);
	assert_int_equal(st.active, 40);
	assert_int_equal(st.table_full, 0);
	assert_true(st.evictions >= 100000 - 256);
	/* Every pinned client is still there, still at its limit. */
	for (i = 0; i < 40; i++)
		assert_int_equal(admit(c, &lim, sa_n(i), 200000, NULL), CLIENT_OVER_CONNECTIONS);
	for (i = 0; i < 40; i++)
		clients_release(c, &pinned[i]);
	assert_int_equal(stats(c).active, 0);
	for (i = 0; i < 40; i++)
		assert_int_equal(touch(c, &lim, sa_n(i), 200000), CLIENT_ADMIT);
	clients_free(c);
}

/* One bucket full of open connections: the next client is refused. */
static void
test_table_full(void **state)
{
	struct clients		*c = mk(1, 1000);
	struct client_limits	 lim = { 0 };
	struct client_ref	 r[CLIENTS_WAYS];
	struct client_admission	 a;
	struct sockaddr_storage	 x;
	uint32_t		 i;

	for (i = 0; i < CLIENTS_WAYS; i++)
		assert_int_equal(admit(c, &lim, sa_n(i), 0, &r[i]), CLIENT_ADMIT);
	x = sa_n(999);
	assert_int_equal(clients_admit(c, &lim, SA(x), 0, &a), CLIENT_TABLE_FULL);
	assert_int_equal(a.ref.slot, 0);
	assert_true(a.log);
	assert_int_equal(stats(c).table_full, 1);
	/* Those already in are not: the lookup comes before any eviction. */
	assert_int_equal(admit(c, &lim, sa_n(5), 0, NULL), CLIENT_ADMIT);
	/* One closes: its entry is idle, the newcomer takes it. */
	clients_release(c, &r[7]);
	assert_int_equal(admit(c, &lim, sa_n(999), 0, &r[7]), CLIENT_ADMIT);
	assert_int_equal(stats(c).evictions, 1);
	assert_int_equal(stats(c).entries, CLIENTS_WAYS);
	clients_free(c);
}

/* The victim is the idle entry with the fullest bucket: a flood cannot
 * wash out a drained client's state to hand it a fresh burst. */
static void
test_evicts_fullest_bucket(void **state)
{
	struct clients		*c = mk(1, 0);
	struct client_limits	 lim = { 0 };
	struct sockaddr_storage	 victim = sa("192.0.2.66", 1);

	assert_int_equal(clients_parse_rate("1/s", &lim.rate), 0);
	assert_int_equal(touch(c, &lim, victim, 1000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, victim, 1000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, victim, 1000), CLIENT_OVER_RATE);
	for (uint32_t i = 0; i < 1000; i++)
		assert_int_equal(touch(c, &lim, sa_n(i), 1000), CLIENT_ADMIT);
	assert_true(stats(c).evictions >= 1000 - CLIENTS_WAYS);
	assert_int_equal(touch(c, &lim, victim, 1000), CLIENT_OVER_RATE);
	/* Its drained bucket was kept: one token a second, not a fresh burst of 2. */
	assert_int_equal(touch(c, &lim, victim, 2000), CLIENT_ADMIT);
	assert_int_equal(touch(c, &lim, victim, 2000), CLIENT_OVER_RATE);
	clients_free(c);
}

/* Among equals (no rate limit), the least recently seen entry goes. */
static void
test_evicts_least_recent(void **state)
{
	struct clients	*c = mk(1, 1000000);
	uint32_t	 sup;

	for (uint32_t i = 0; i < CLIENTS_WAYS; i++)
		assert_true(should_log_n(c, i, 100 + i, &sup));
	/* All remembered: a second refusal is suppressed. */
	assert_false(should_log_n(c, CLIENTS_WAYS - 1, 200, &sup));
	assert_false(should_log_n(c, 1, 200, &sup));
	/* A newcomer replaces client 0, the oldest. */
	assert_true(should_log_n(c, 500, 300, &sup));
	assert_false(should_log_n(c, 1, 300, &sup));
	assert_false(should_log_n(c, CLIENTS_WAYS - 1, 300, &sup));
	assert_true(should_log_n(c, 0, 300, &sup));
	assert_int_equal(sup, 0);
	clients_free(c);
}

/* ---- logging refusals ---- */

static void
test_log_once_per_interval(void **state)
{
	struct clients		*c = mk(256, 1000);
	struct client_limits	 lim = { .max_conns = 1 };
	struct sockaddr_storage	 x = sa("192.0.2.9", 5), y = sa("192.0.2.10", 5);
	struct client_admission	 a;
	struct client_ref	 rx, ry;
	uint32_t		 sup;

	assert_int_equal(admit(c, &lim, x, 0, &rx), CLIENT_ADMIT);
	assert_int_equal(admit(c, &lim, y, 0, &ry), CLIENT_ADMIT);
	/* The first refusal is logged, the next ones in the interval counted. */
	assert_int_equal(clients_admit(c, &lim, SA(x), 10, &a), CLIENT_OVER_CONNECTIONS);
	assert_true(a.log);
	assert_int_equal(a.suppressed, 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(clients_admit(c, &lim, SA(x), 11 + (uint64_t)i * 100, &a),
		    CLIENT_OVER_CONNECTIONS);
		assert_false(a.log);
	}
	/* Another client has its own interval. */
	assert_int_equal(clients_admit(c, &lim, SA(y), 500, &a), CLIENT_OVER_CONNECTIONS);
	assert_true(a.log);
	assert_int_equal(clients_admit(c, &lim, SA(x), 1009, &a), CLIENT_OVER_CONNECTIONS);
	assert_false(a.log);
	/* The interval is over: logged, with the 6 in between. */
	assert_int_equal(clients_admit(c, &lim, SA(x), 1010, &a), CLIENT_OVER_CONNECTIONS);
	assert_true(a.log);
	assert_int_equal(a.suppressed, 6);
	assert_int_equal(clients_admit(c, &lim, SA(x), 1011, &a), CLIENT_OVER_CONNECTIONS);
	assert_false(a.log);
	/* A refusal decided elsewhere shares the client's interval and count. */
	assert_false(clients_should_log(c, SA(x), 1500, &sup));
	assert_true(clients_should_log(c, SA(x), 2010, &sup));
	assert_int_equal(sup, 2);
	/* Admissions are not refusals: never logged. */
	clients_release(c, &rx);
	assert_int_equal(clients_admit(c, &lim, SA(x), 3000, &a), CLIENT_ADMIT);
	assert_false(a.log);
	clients_release(c, &a.ref);
	clients_release(c, &ry);
	clients_free(c);
}

static void
test_log_interval_zero(void **state)
{
	struct clients		*c = mk(256, 0);
	struct sockaddr_storage	 x = sa("192.0.2.9", 1);
	uint32_t		 sup;

	for (int i = 0; i < 3; i++) {
		assert_true(clients_should_log(c, SA(x), 7, &sup));
		assert_int_equal(sup, 0);
	}
	clients_free(c);
}

/* ---- threads ---- */

#define NTHREADS 4
#define NCLIENTS 8
#define MAXC 3

struct race {
	struct clients		*c;
	struct client_limits	 lim;
	atomic_uint		 open[NCLIENTS];	/* admitted and not yet released */
	atomic_uint		 over;			/* times open[] went above MAXC */
	atomic_uint		 admitted;
	unsigned		 iters;
	uint64_t		 now;
};

struct racer {
	struct race	*r;
	unsigned	 id;
};

static void *
racer(void *arg)
{
	struct racer		*me = arg;
	struct race		*r = me->r;
	struct client_ref	 held[MAXC] = { { 0 } };
	unsigned		 who[MAXC] = { 0 };
	struct client_admission	 a;

	for (unsigned i = 0; i < r->iters; i++) {
		unsigned k = (i * 7 + me->id) % NCLIENTS, h = i % MAXC;
		struct sockaddr_storage x = sa_n(k);

		/* Hold up to MAXC connections at a time, releasing the oldest. */
		if (held[h].slot != 0) {
			atomic_fetch_sub(&r->open[who[h]], 1);
			clients_release(r->c, &held[h]);
		}
		if (clients_admit(r->c, &r->lim, SA(x), r->now, &a) == CLIENT_ADMIT) {
			if (atomic_fetch_add(&r->open[k], 1) + 1 > MAXC)
				atomic_fetch_add(&r->over, 1);
			atomic_fetch_add(&r->admitted, 1);
			held[h] = a.ref;
			who[h] = k;
		}
	}
	for (unsigned h = 0; h < MAXC; h++)
		if (held[h].slot != 0) {
			atomic_fetch_sub(&r->open[who[h]], 1);
			clients_release(r->c, &held[h]);
		}
	return NULL;
}

static void
run_racers(struct race *r)
{
	pthread_t	t[NTHREADS];
	struct racer	me[NTHREADS];

	for (unsigned i = 0; i < NTHREADS; i++) {
		me[i].r = r;
		me[i].id = i;
		assert_int_equal(pthread_create(&t[i], NULL, racer, &me[i]), 0);
	}
	for (unsigned i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
}

/* Connections of one client spread over threads never exceed its max. */
static void
test_threads_max_connections(void **state)
{
	struct race	r;

	memset(&r, 0, sizeof(r));
	r.c = mk(4096, 0);
	r.lim.max_conns = MAXC;
	r.iters = 50000;
	run_racers(&r);
	assert_int_equal(atomic_load(&r.over), 0);
	assert_true(atomic_load(&r.admitted) > 0);
	assert_int_equal(stats(r.c).active, 0);
	assert_int_equal(stats(r.c).entries, NCLIENTS);
	clients_free(r.c);
}

/* At one instant, threads together get exactly the burst, no more, no less. */
static void
test_threads_rate(void **state)
{
	struct race	r;

	memset(&r, 0, sizeof(r));
	r.c = mk(4096, 0);
	assert_int_equal(clients_parse_rate("50/s", &r.lim.rate), 0);
	r.iters = 4000;
	r.now = 123456;
	run_racers(&r);
	assert_int_equal(atomic_load(&r.admitted), NCLIENTS * 100);
	assert_int_equal(stats(r.c).active, 0);
	clients_free(r.c);
}

/* ---- cost of the lock, printed for the record ---- */

struct bench {
	struct clients		*c;
	struct client_limits	 lim;
	unsigned		 n;
	bool			 same;	/* every thread on one client (one shard lock) */
	unsigned		 id;
};

static void *
bench_loop(void *arg)
{
	struct bench		*b = arg;
	struct sockaddr_storage	 x = sa_n(b->same ? 0 : b->id);
	struct client_admission	 a;

	for (unsigned i = 0; i < b->n; i++) {
		if (clients_admit(b->c, &b->lim, SA(x), i, &a) == CLIENT_ADMIT)
			clients_release(b->c, &a.ref);
	}
	return NULL;
}

static double
bench_run(struct clients *c, unsigned threads, bool same, unsigned n)
{
	pthread_t	t[NTHREADS];
	struct bench	b[NTHREADS];
	struct timespec	t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < threads; i++) {
		b[i] = (struct bench){ .c = c, .n = n, .same = same, .id = i };
		b[i].lim.max_conns = 32;
		assert_int_equal(clients_parse_rate("1000000/s", &b[i].lim.rate), 0);
		assert_int_equal(pthread_create(&t[i], NULL, bench_loop, &b[i]), 0);
	}
	for (unsigned i = 0; i < threads; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Wall time per admit + release pair, per thread. */
	return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / n;
}

static void
test_bench_lock_cost(void **state)
{
	struct clients	*c = mk(65536, 1000);
	unsigned	 n = 200000;
	double		 one, d2, s2, d4, s4;

	one = bench_run(c, 1, true, n);
	d2 = bench_run(c, 2, false, n);
	s2 = bench_run(c, 2, true, n);
	d4 = bench_run(c, NTHREADS, false, n);
	s4 = bench_run(c, NTHREADS, true, n);
	printf("# clients bench, admit + release, wall ns per pair per thread (%ld CPUs): "
	    "1 thread %.0f; 2 threads: distinct clients %.0f, one client %.0f; "
	    "4 threads: distinct %.0f, one %.0f\n",
	    sysconf(_SC_NPROCESSORS_ONLN), one, d2, s2, d4, s4);
	assert_int_equal(stats(c).active, 0);
	clients_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_siphash_vectors),
		cmocka_unit_test(test_parse_rate),
		cmocka_unit_test(test_new_capacity),
		cmocka_unit_test(test_key_text),
		cmocka_unit_test(test_keying),
		cmocka_unit_test(test_bad_address),
		cmocka_unit_test(test_verdict_names),
		cmocka_unit_test(test_max_connections),
		cmocka_unit_test(test_rate_burst_and_refill),
		cmocka_unit_test(test_rate_per_minute_and_hour),
		cmocka_unit_test(test_refusals_cost_nothing),
		cmocka_unit_test(test_time_skew),
		cmocka_unit_test(test_reload_max_connections),
		cmocka_unit_test(test_reload_rate),
		cmocka_unit_test(test_flood_of_sources),
		cmocka_unit_test(test_table_full),
		cmocka_unit_test(test_evicts_fullest_bucket),
		cmocka_unit_test(test_evicts_least_recent),
		cmocka_unit_test(test_log_once_per_interval),
		cmocka_unit_test(test_log_interval_zero),
		cmocka_unit_test(test_threads_max_connections),
		cmocka_unit_test(test_threads_rate),
		cmocka_unit_test(test_bench_lock_cost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
