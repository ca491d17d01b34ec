/*
 * libFuzzer target for the public clients' table (clients.c).
 *
 * Four header bytes fix the limits, the log interval and a time step; then
 * each pair of bytes is one operation at a time that only moves forward:
 * admit a connection of one of 64 clients, release one held connection, or
 * ask whether a refusal decided elsewhere is to be logged.  The table has
 * one bucket (CLIENTS_WAYS entries), so eviction and a full table come
 * quickly.
 *
 * Always checked: a client never holds more than max_conns; an admission
 * and only it carries a ref; the table's count of clients with open
 * connections is the model's; entries never exceed the capacity; a full
 * table answers only when every entry is pinned; everything released
 * leaves nothing open.  Until the first eviction (which by design forgets a
 * client), every verdict and log decision must equal the model's: GCRA for
 * the rate (equivalent to a token bucket of burst 2 x count, but written
 * in other terms), plain counters for the rest.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "clients.h"
#include "fuzz.h"

#define NKEYS	64
#define MAXHELD	512

struct model {
	bool		seen;
	uint32_t	held;
	uint64_t	tat;		/* GCRA's theoretical arrival time, in 1/count ms */
	bool		logged;
	uint64_t	logged_ms;
	uint32_t	suppressed;
};

static const uint8_t key[SIPHASH_KEY_LEN] = "fuzz_clients key";

static struct sockaddr_in6
addr(unsigned k)
{
	struct sockaddr_in6 s;

	memset(&s, 0, sizeof(s));
	s.sin6_family = AF_INET6;
	s.sin6_addr.s6_addr[0] = 0x20;
	s.sin6_addr.s6_addr[1] = 0x01;
	s.sin6_addr.s6_addr[7] = (uint8_t)k;
	/* Same /64, different host: still client k. */
	s.sin6_addr.s6_addr[15] = (uint8_t)(k * 37);
	return s;
}

/* The model's answer to a refusal's log question. */
static bool
model_log(struct model *m, uint64_t now, uint64_t interval, uint32_t *sup)
{
	if (m->logged && now - m->logged_ms < interval) {
		m->suppressed++;
		return false;
	}
	*sup = m->suppressed;
	m->suppressed = 0;
	m->logged = true;
	m->logged_ms = now;
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t per[3] = { 1000, 60000, 3600000 };
	static const uint64_t scale[4] = { 1, 10, 100, 1000 };
	struct model m[NKEYS];
	struct client_ref held[MAXHELD];
	unsigned who[MAXHELD], nheld = 0, nseen = 0, pinned = 0;
	struct client_limits lim;
	struct clients_stats st;
	struct clients *c;
	uint64_t interval, now = 1000, step, burst = 0;
	bool exact = true;

	if (size < 4)
		return 0;
	memset(m, 0, sizeof(m));
	memset(&lim, 0, sizeof(lim));
	lim.max_conns = data[0] % 5;
	if (data[1] % 8 != 0) {
		lim.rate.count = data[1] % 8;
		lim.rate.per_ms = per[(data[1] >> 3) % 3];
		burst = 2 * (uint64_t)lim.rate.count;
	}
	interval = (uint64_t)data[2] * 10;
	step = scale[data[3] % 4];
	c = clients_new(1, key, interval);
	CHECK(c != NULL);

	for (size_t i = 4; i + 1 < size; i += 2) {
		unsigned op = data[i] & 3, k = data[i + 1] % NKEYS;
		struct sockaddr_in6 sa = addr(k);
		struct model *mk = &m[k];
		struct client_admission a;
		enum client_verdict v;
		uint32_t sup = 0;
		bool log;

		now += (uint64_t)(data[i] >> 2) * step;
		if (op == 2) {
			unsigned h;

			if (nheld == 0)
				continue;
			h = data[i + 1] % nheld;
			CHECK(held[h].slot != 0);
			clients_release(c, &held[h]);
			CHECK(held[h].slot == 0);
			if (--m[who[h]].held == 0)
				pinned--;
			held[h] = held[--nheld];
			who[h] = who[nheld];
		} else if (op == 3) {
			log = clients_should_log(c, (struct sockaddr *)&sa, now, &sup);
			if (exact && !mk->seen && nseen == CLIENTS_WAYS && pinned < CLIENTS_WAYS)
				exact = false;          /* it evicts someone */
			if (exact) {
				uint32_t msup = 0;

				if (!mk->seen && nseen == CLIENTS_WAYS) {
					CHECK(log && sup == 0);
				} else {
					if (!mk->seen) {
						mk->seen = true;
						nseen++;
						mk->tat = now * lim.rate.count;
					}
					CHECK(log == model_log(mk, now, interval, &msup));
					CHECK(sup == msup);
				}
			}
		} else {
			enum client_verdict want = CLIENT_ADMIT;
			uint64_t t = now * lim.rate.count;

			v = clients_admit(c, &lim, (struct sockaddr *)&sa, now, &a);
			CHECK((v == CLIENT_ADMIT) == (a.ref.slot != 0));
			CHECK(v != CLIENT_BAD_ADDRESS);
			if (v == CLIENT_TABLE_FULL)
				CHECK(pinned == CLIENTS_WAYS && mk->held == 0);
			if (exact && !mk->seen && nseen == CLIENTS_WAYS && pinned < CLIENTS_WAYS)
				exact = false;
			if (exact) {
				if (!mk->seen && nseen == CLIENTS_WAYS)
					want = CLIENT_TABLE_FULL;
				else {
					if (!mk->seen) {
						mk->seen = true;
						nseen++;
						mk->tat = t;
					}
					if (mk->tat < t)
						mk->tat = t;
					if (lim.max_conns > 0 && mk->held >= lim.max_conns)
						want = CLIENT_OVER_CONNECTIONS;
					else if (burst > 0 &&
					    mk->tat - t > (burst - 1) * lim.rate.per_ms)
						want = CLIENT_OVER_RATE;
					else if (burst > 0)
						mk->tat += lim.rate.per_ms;
				}
				CHECK(v == want);
				if (v == CLIENT_TABLE_FULL)
					CHECK(a.log && a.suppressed == 0);
				else if (v != CLIENT_ADMIT) {
					uint32_t msup = 0;

					CHECK(a.log == model_log(mk, now, interval, &msup));
					CHECK(!a.log || a.suppressed == msup);
				} else
					CHECK(!a.log);
			}
			if (v == CLIENT_ADMIT) {
				if (nheld == MAXHELD) {
					clients_release(c, &a.ref);
					continue;
				}
				if (mk->held++ == 0)
					pinned++;
				CHECK(lim.max_conns == 0 || mk->held <= lim.max_conns);
				held[nheld] = a.ref;
				who[nheld++] = k;
			}
		}
		clients_stats(c, &st);
		CHECK(st.capacity == CLIENTS_WAYS);
		CHECK(st.entries <= st.capacity);
		CHECK(st.active == pinned);
		if (exact)
			CHECK(st.evictions == 0 && st.entries == nseen);
	}
	while (nheld > 0)
		clients_release(c, &held[--nheld]);
	clients_stats(c, &st);
	CHECK(st.active == 0);
	clients_free(c);
	return 0;
}
