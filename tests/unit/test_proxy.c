/* Unit tests for funneld/proxy_protocol.c: PROXY protocol v1/v2 headers. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "sockaddr_test.h"

#include "proxy_protocol.h"

static struct sockaddr_storage
sa_unix(const char *path)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_un	*sun = (struct sockaddr_un *)&ss;

	memset(&ss, 0, sizeof(ss));
	sun->sun_family = AF_UNIX;
	strncpy(sun->sun_path, path, sizeof(sun->sun_path) - 1);
	return ss;
}

static void
assert_bytes(const uint8_t *got, int got_len, const char *want,
    size_t want_len)
{
	assert_int_equal(got_len, (int)want_len);
	assert_memory_equal(got, want, want_len);
}

/* ---- v1 ---- */

static void
test_v1_ipv4(void **state)
{
	struct sockaddr_storage	 s = sa("203.0.113.7", 51234);
	struct sockaddr_storage	 d = sa("100.101.102.103", 443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d),
	    .authority = "ignored", .alpn = "h2" };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    "PROXY TCP4 203.0.113.7 100.101.102.103 51234 443\r\n";

	assert_bytes(out, proxy_build_v1(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
}

static void
test_v1_ipv6(void **state)
{
	struct sockaddr_storage	 s = sa("2001:db8::7", 51234);
	struct sockaddr_storage	 d = sa("fd7a:115c:a1e0::1", 443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d) };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    "PROXY TCP6 2001:db8::7 fd7a:115c:a1e0::1 51234 443\r\n";

	assert_bytes(out, proxy_build_v1(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
}

static void
test_v1_mapped(void **state)
{
	struct sockaddr_storage	 s = sa("::ffff:203.0.113.7", 51234);
	struct sockaddr_storage	 dm = sa("::ffff:100.101.102.103", 443);
	struct sockaddr_storage	 d4 = sa("100.101.102.103", 443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(dm) };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    "PROXY TCP4 203.0.113.7 100.101.102.103 51234 443\r\n";

	/* mapped src, mapped dst */
	assert_bytes(out, proxy_build_v1(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
	/* mapped src, plain AF_INET dst */
	memset(out, 0, sizeof(out));
	pi.dst = SA(d4);
	assert_bytes(out, proxy_build_v1(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
	/* plain AF_INET src, mapped dst */
	memset(out, 0, sizeof(out));
	pi.src = SA(d4);
	pi.dst = SA(s);
	assert_bytes(out, proxy_build_v1(&pi, out, sizeof(out)),
	    "PROXY TCP4 100.101.102.103 203.0.113.7 443 51234\r\n",
	    sizeof("PROXY TCP4 100.101.102.103 203.0.113.7 443 51234\r\n") - 1);
}

static void
test_v1_longest(void **state)
{
	struct sockaddr_storage	 s = sa("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	struct sockaddr_storage	 d = sa("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d) };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] = "PROXY TCP6 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	int			 n;

	n = proxy_build_v1(&pi, out, sizeof(out));
	assert_bytes(out, n, want, sizeof(want) - 1);
	assert_true(n <= PROXY_V1_MAX);
	/* exactly enough room is enough */
	assert_int_equal(proxy_build_v1(&pi, out, (size_t)n), n);
}

/* Each builder, over a few mismatched pairs. */
static void
check_mismatch(int (*build)(const struct proxy_info *, uint8_t *, size_t))
{
	struct sockaddr_storage	 v4 = sa("203.0.113.7", 1);
	struct sockaddr_storage	 v6 = sa("2001:db8::7", 2);
	struct sockaddr_storage	 m4 = sa("::ffff:203.0.113.7", 3);
	struct sockaddr_storage	 un = sa_unix("/tmp/x.sock");
	struct sockaddr_storage	 unspec;
	struct proxy_info	 pi;
	uint8_t			 out[PROXY_HEADER_MAX];

	memset(&unspec, 0, sizeof(unspec));
	memset(out, 0xa5, sizeof(out));
	memset(&pi, 0, sizeof(pi));

	pi.src = SA(v4), pi.dst = SA(v6);
	assert_int_equal(build(&pi, out, sizeof(out)), -1);
	pi.src = SA(v6), pi.dst = SA(v4);
	assert_int_equal(build(&pi, out, sizeof(out)), -1);
	pi.src = SA(m4), pi.dst = SA(v6);
	assert_int_equal(build(&pi, out, sizeof(out)), -1);
	pi.src = SA(v6), pi.dst = SA(m4);
	assert_int_equal(build(&pi, out, sizeof(out)), -1);
	pi.src = SA(un), pi.dst = SA(un);
	assert_int_equal(build(&pi, out, sizeof(out)), -1);
	pi.src = SA(v4), pi.dst = SA(unspec);
	assert_int_equal(build(&pi, out, sizeof(out)), -1);
	pi.src = SA(v4), pi.dst = NULL;
	assert_int_equal(build(&pi, out, sizeof(out)), -1);
	assert_int_equal(build(NULL, out, sizeof(out)), -1);
	/* nothing written */
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 0xa5);
	/* and the matching pair does work, so the -1s above mean something */
	pi.src = SA(v4), pi.dst = SA(m4);
	assert_true(build(&pi, out, sizeof(out)) > 0);
}

/* No source to tell (a unix: [listener] without a header of its own). */
static void
test_unknown_source(void **state)
{
	struct sockaddr_storage	 unspec, v4 = sa("100.100.100.100", 443);
	struct proxy_info	 pi = { .authority = "node.tailnet.ts.net", .alpn = "h2" };
	uint8_t			 out[PROXY_HEADER_MAX];
	struct proxy_header	 ph;
	int			 n;

	memset(&unspec, 0, sizeof(unspec));
	for (int k = 0; k < 3; k++) {
		pi.src = k == 0 ? NULL : SA(unspec);
		pi.dst = k == 2 ? SA(v4) : NULL;
		n = proxy_build_v1(&pi, out, sizeof(out));
		assert_int_equal(n, 15);
		assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
		/* ... which a reader takes as "no address". */
		assert_int_equal(proxy_read_v1(out, (size_t)n, &ph, NULL), PROXY_READ_LOCAL);
		n = proxy_build_v2(&pi, out, sizeof(out));
		assert_true(n > 16);
		assert_int_equal(out[12], 0x21);        /* version 2, PROXY */
		assert_int_equal(out[13], 0x00);        /* UNSPEC: no addresses */
		assert_int_equal((out[14] << 8 | out[15]) + 16, n);
		assert_int_equal(out[16], 0x01);        /* the ALPN TLV comes first */
	}
	assert_int_equal(proxy_build_v1(&pi, out, 14), -1);
}

static void
test_v1_mismatch(void **state)
{
	check_mismatch(proxy_build_v1);
}

static void
test_v2_mismatch(void **state)
{
	check_mismatch(proxy_build_v2);
}

/* For every cap below the header's length: -1 and not a byte written. */
static void
check_cap(int (*build)(const struct proxy_info *, uint8_t *, size_t))
{
	struct sockaddr_storage	 s = sa("2001:db8::7", 51234);
	struct sockaddr_storage	 d = sa("2001:db8::1", 443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d),
	    .authority = "node.tailnet.ts.net", .alpn = "http/1.1",
	    .tls_version = "TLSv1.3", .cipher = "TLS1-3-AES-128-GCM-SHA256" };
	uint8_t			 out[PROXY_HEADER_MAX];
	int			 n;

	n = build(&pi, out, sizeof(out));
	assert_true(n > 0);
	for (size_t cap = 0; cap < (size_t)n; cap++) {
		memset(out, 0xa5, sizeof(out));
		assert_int_equal(build(&pi, out, cap), -1);
		for (size_t i = 0; i < sizeof(out); i++)
			assert_int_equal(out[i], 0xa5);
	}
	memset(out, 0xa5, sizeof(out));
	assert_int_equal(build(&pi, out, (size_t)n), n);
	assert_int_equal(out[n], 0xa5);         /* no NUL, no overrun */
}

static void
test_v1_cap(void **state)
{
	check_cap(proxy_build_v1);
}

static void
test_v2_cap(void **state)
{
	check_cap(proxy_build_v2);
}

/* ---- v2 ---- */

#define SIG "\r\n\r\n\0\r\nQUIT\n"

static void
test_v2_ipv4_all_tlvs(void **state)
{
	struct sockaddr_storage	 s = sa("203.0.113.7", 51234);
	struct sockaddr_storage	 d = sa("100.101.102.103", 443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d),
	    .authority = "node.tailnet.ts.net", .alpn = "h2",
	    .tls_version = "TLSv1.2", .cipher = "TLS-AES-128-GCM-SHA256" };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    SIG
	    "\x21"                      /* v2, PROXY */
	    "\x11"                      /* TCP over IPv4 */
	    "\x00\x52"                  /* 12 + 5 + 22 + 43 = 82 */
	    "\xcb\x00\x71\x07"          /* 203.0.113.7 */
	    "\x64\x65\x66\x67"          /* 100.101.102.103 */
	    "\xc8\x22"                  /* 51234 */
	    "\x01\xbb"                  /* 443 */
	    "\x01\x00\x02" "h2"         /* PP2_TYPE_ALPN */
	    "\x02\x00\x13" "node.tailnet.ts.net"        /* PP2_TYPE_AUTHORITY */
	    "\x20\x00\x28"              /* PP2_TYPE_SSL, 5 + 10 + 25 = 40 */
	    "\x01"                      /* PP2_CLIENT_SSL */
	    "\x00\x00\x00\x00"          /* verify */
	    "\x21\x00\x07" "TLSv1.2"    /* PP2_SUBTYPE_SSL_VERSION */
	    "\x23\x00\x16" "TLS-AES-128-GCM-SHA256";    /* PP2_SUBTYPE_SSL_CIPHER */

	assert_int_equal(sizeof(want) - 1, 98);
	assert_bytes(out, proxy_build_v2(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
}

static void
test_v2_ipv6_no_tlvs(void **state)
{
	struct sockaddr_storage	 s = sa("2001:db8::7", 51234);
	struct sockaddr_storage	 d = sa("fd7a:115c:a1e0::1", 443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d),
	    .authority = "", .alpn = "", .tls_version = "", .cipher = "" };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    SIG
	    "\x21"
	    "\x21"                      /* TCP over IPv6 */
	    "\x00\x24"                  /* 36 */
	    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07"
	    "\xfd\x7a\x11\x5c\xa1\xe0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
	    "\xc8\x22"
	    "\x01\xbb";

	/* empty strings are absent */
	assert_bytes(out, proxy_build_v2(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
	/* and so are NULL ones */
	memset(out, 0, sizeof(out));
	pi.authority = pi.alpn = pi.tls_version = pi.cipher = NULL;
	assert_bytes(out, proxy_build_v2(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
}

static void
test_v2_authority_only(void **state)
{
	struct sockaddr_storage	 s = sa("::ffff:192.0.2.1", 1234);
	struct sockaddr_storage	 d = sa("0.0.0.0", 8443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d),
	    .authority = "a.example" };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    SIG
	    "\x21"
	    "\x11"                      /* mapped source: sent as IPv4 */
	    "\x00\x18"                  /* 12 + 3 + 9 = 24 */
	    "\xc0\x00\x02\x01"
	    "\x00\x00\x00\x00"
	    "\x04\xd2"
	    "\x20\xfb"
	    "\x02\x00\x09" "a.example";

	assert_bytes(out, proxy_build_v2(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
}

static void
test_v2_ssl_cipher_only(void **state)
{
	struct sockaddr_storage	 s = sa("192.0.2.1", 1);
	struct sockaddr_storage	 d = sa("192.0.2.2", 2);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d),
	    .cipher = "C" };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    SIG "\x21\x11\x00\x18"
	    "\xc0\x00\x02\x01" "\xc0\x00\x02\x02" "\x00\x01" "\x00\x02"
	    "\x20\x00\x09" "\x01" "\x00\x00\x00\x00"
	    "\x23\x00\x01" "C";

	assert_bytes(out, proxy_build_v2(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
}

/* The length field is the number of bytes after the 16-byte header. */
static void
test_v2_length_field(void **state)
{
	struct sockaddr_storage	 s4 = sa("192.0.2.1", 1), d4 = sa("192.0.2.2", 2);
	struct sockaddr_storage	 s6 = sa("2001:db8::1", 1), d6 = sa("::", 2);
	const char		*strs[] = { NULL, "", "x", "http/1.1",
	    "a-rather-longer-string-of-forty-bytes-xx" };
	uint8_t			 out[PROXY_HEADER_MAX];
	size_t			 ns = sizeof(strs) / sizeof(strs[0]);
	int			 n, fam, cases = 0;

	for (fam = 0; fam < 2; fam++)
	for (size_t a = 0; a < ns; a++)
	for (size_t b = 0; b < ns; b++)
	for (size_t c = 0; c < ns; c++)
	for (size_t e = 0; e < ns; e++) {
		struct proxy_info pi = {
			.src = fam ? SA(s6) : SA(s4),
			.dst = fam ? SA(d6) : SA(d4),
			.authority = strs[a], .alpn = strs[b],
			.tls_version = strs[c], .cipher = strs[e] };
		size_t want = 16 + (fam ? 36 : 12);
		size_t la = strs[a] ? strlen(strs[a]) : 0;
		size_t lb = strs[b] ? strlen(strs[b]) : 0;
		size_t lc = strs[c] ? strlen(strs[c]) : 0;
		size_t le = strs[e] ? strlen(strs[e]) : 0;

		want += la ? 3 + la : 0;
		want += lb ? 3 + lb : 0;
		if (lc || le)
			want += 3 + 5 + (lc ? 3 + lc : 0) + (le ? 3 + le : 0);
		n = proxy_build_v2(&pi, out, sizeof(out));
		assert_int_equal(n, (int)want);
		assert_memory_equal(out, SIG, 12);
		assert_int_equal(out[12], 0x21);
		assert_int_equal(out[13], fam ? 0x21 : 0x11);
		assert_int_equal((out[14] << 8 | out[15]) + 16, n);
		cases++;
	}
	assert_int_equal(cases, 2 * 5 * 5 * 5 * 5);
}

static void
fill(char *buf, size_t len)
{
	memset(buf, 'a', len);
	buf[len] = '\0';
}

/* PROXY_HEADER_MAX holds the longest strings; one byte more is refused. */
static void
test_v2_string_bounds(void **state)
{
	struct sockaddr_storage	 s = sa("2001:db8::7", 51234);
	struct sockaddr_storage	 d = sa("2001:db8::1", 443);
	char			 auth[PROXY_AUTHORITY_MAX + 2];
	char			 alpn[PROXY_ALPN_MAX + 2];
	char			 ver[PROXY_TLS_STR_MAX + 2];
	char			 ciph[PROXY_TLS_STR_MAX + 2];
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d),
	    .authority = auth, .alpn = alpn, .tls_version = ver,
	    .cipher = ciph };
	uint8_t			 out[PROXY_HEADER_MAX];
	int			 n;

	assert_int_equal(PROXY_AUTHORITY_MAX, 255);
	assert_int_equal(PROXY_ALPN_MAX, 255);
	assert_int_equal(PROXY_TLS_STR_MAX, 64);
	fill(auth, PROXY_AUTHORITY_MAX);
	fill(alpn, PROXY_ALPN_MAX);
	fill(ver, PROXY_TLS_STR_MAX);
	fill(ciph, PROXY_TLS_STR_MAX);
	n = proxy_build_v2(&pi, out, sizeof(out));
	assert_int_equal(n, 16 + 36 + 258 + 258 + 3 + 5 + 67 + 67);
	assert_true(n <= PROXY_HEADER_MAX);
	assert_int_equal((out[14] << 8 | out[15]) + 16, n);

	fill(auth, PROXY_AUTHORITY_MAX + 1);
	assert_int_equal(proxy_build_v2(&pi, out, sizeof(out)), -1);
	fill(auth, PROXY_AUTHORITY_MAX);
	fill(alpn, PROXY_ALPN_MAX + 1);
	assert_int_equal(proxy_build_v2(&pi, out, sizeof(out)), -1);
	fill(alpn, PROXY_ALPN_MAX);
	fill(ver, PROXY_TLS_STR_MAX + 1);
	assert_int_equal(proxy_build_v2(&pi, out, sizeof(out)), -1);
	fill(ver, PROXY_TLS_STR_MAX);
	fill(ciph, PROXY_TLS_STR_MAX + 1);
	assert_int_equal(proxy_build_v2(&pi, out, sizeof(out)), -1);
	fill(ciph, PROXY_TLS_STR_MAX);
	assert_int_equal(proxy_build_v2(&pi, out, sizeof(out)), n);
}

/* ---- proxy_destination ---- */

static void
test_dest_v4_src_v6_local(void **state)
{
	struct sockaddr_storage	 s = sa("203.0.113.7", 51234);
	struct sockaddr_storage	 l = sa("fd7a:115c:a1e0::5", 4443);
	struct sockaddr_storage	 out;

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l), 443, &out);
	assert_sa(&out, AF_INET, "0.0.0.0", 443);
}

static void
test_dest_v6_src_v6_local(void **state)
{
	struct sockaddr_storage	 s = sa("2001:db8::7", 51234);
	struct sockaddr_storage	 l = sa("fd7a:115c:a1e0::5", 4443);
	struct sockaddr_storage	 out;

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l), 443, &out);
	assert_sa(&out, AF_INET6, "fd7a:115c:a1e0::5", 443);
}

static void
test_dest_v4_src_mapped_local(void **state)
{
	struct sockaddr_storage	 s = sa("203.0.113.7", 51234);
	struct sockaddr_storage	 l = sa("::ffff:100.101.102.103", 4443);
	struct sockaddr_storage	 out;

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l), 8443, &out);
	assert_sa(&out, AF_INET, "100.101.102.103", 8443);
}

static void
test_dest_v4_src_v4_local(void **state)
{
	struct sockaddr_storage	 s = sa("203.0.113.7", 51234);
	struct sockaddr_storage	 l = sa("100.101.102.103", 4443);
	struct sockaddr_storage	 out;

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l), 443, &out);
	assert_sa(&out, AF_INET, "100.101.102.103", 443);
}

static void
test_dest_mapped_src(void **state)
{
	struct sockaddr_storage	 s = sa("::ffff:203.0.113.7", 51234);
	struct sockaddr_storage	 l4 = sa("100.101.102.103", 4443);
	struct sockaddr_storage	 lm = sa("::ffff:100.101.102.104", 4443);
	struct sockaddr_storage	 l6 = sa("fd7a:115c:a1e0::5", 4443);
	struct sockaddr_storage	 out;

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l4), 443, &out);
	assert_sa(&out, AF_INET, "100.101.102.103", 443);
	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(lm), 443, &out);
	assert_sa(&out, AF_INET, "100.101.102.104", 443);
	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l6), 443, &out);
	assert_sa(&out, AF_INET, "0.0.0.0", 443);
}

static void
test_dest_v6_src_v4_local(void **state)
{
	struct sockaddr_storage	 s = sa("2001:db8::7", 51234);
	struct sockaddr_storage	 l4 = sa("100.101.102.103", 4443);
	struct sockaddr_storage	 lm = sa("::ffff:100.101.102.103", 4443);
	struct sockaddr_storage	 out;

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l4), 443, &out);
	assert_sa(&out, AF_INET6, "::", 443);
	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(lm), 443, &out);
	assert_sa(&out, AF_INET6, "::", 443);
}

static void
test_dest_unix_local(void **state)
{
	struct sockaddr_storage	 s4 = sa("203.0.113.7", 51234);
	struct sockaddr_storage	 s6 = sa("2001:db8::7", 51234);
	struct sockaddr_storage	 l = sa_unix("/run/funneld/ingress.sock");
	struct sockaddr_storage	 out;

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s4), SA(l), 443, &out);
	assert_sa(&out, AF_INET, "0.0.0.0", 443);
	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s6), SA(l), 443, &out);
	assert_sa(&out, AF_INET6, "::", 443);
	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s6), NULL, 443, &out);
	assert_sa(&out, AF_INET6, "::", 443);
}

static void
test_dest_bad_src(void **state)
{
	struct sockaddr_storage	 s = sa_unix("/tmp/x");
	struct sockaddr_storage	 l = sa("100.101.102.103", 4443);
	struct sockaddr_storage	 out;
	struct proxy_info	 pi = { .src = SA(l) };
	uint8_t			 buf[PROXY_HEADER_MAX];

	memset(&out, 0xa5, sizeof(out));
	proxy_destination(SA(s), SA(l), 443, &out);
	assert_int_equal(out.ss_family, AF_UNSPEC);
	pi.dst = SA(out);
	assert_int_equal(proxy_build_v1(&pi, buf, sizeof(buf)), -1);
	assert_int_equal(proxy_build_v2(&pi, buf, sizeof(buf)), -1);
}

/* proxy_destination's output feeds the builders. */
static void
test_dest_into_v1(void **state)
{
	struct sockaddr_storage	 s = sa("::ffff:203.0.113.7", 51234);
	struct sockaddr_storage	 l = sa("fd7a:115c:a1e0::5", 4443);
	struct sockaddr_storage	 d;
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d) };
	uint8_t			 out[PROXY_HEADER_MAX];
	static const char	 want[] =
	    "PROXY TCP4 203.0.113.7 0.0.0.0 51234 443\r\n";

	proxy_destination(SA(s), SA(l), 443, &d);
	assert_bytes(out, proxy_build_v1(&pi, out, sizeof(out)), want,
	    sizeof(want) - 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_ipv4),
		cmocka_unit_test(test_v1_ipv6),
		cmocka_unit_test(test_v1_mapped),
		cmocka_unit_test(test_v1_longest),
		cmocka_unit_test(test_unknown_source),
		cmocka_unit_test(test_v1_mismatch),
		cmocka_unit_test(test_v1_cap),
		cmocka_unit_test(test_v2_ipv4_all_tlvs),
		cmocka_unit_test(test_v2_ipv6_no_tlvs),
		cmocka_unit_test(test_v2_authority_only),
		cmocka_unit_test(test_v2_ssl_cipher_only),
		cmocka_unit_test(test_v2_length_field),
		cmocka_unit_test(test_v2_string_bounds),
		cmocka_unit_test(test_v2_mismatch),
		cmocka_unit_test(test_v2_cap),
		cmocka_unit_test(test_dest_v4_src_v6_local),
		cmocka_unit_test(test_dest_v6_src_v6_local),
		cmocka_unit_test(test_dest_v4_src_mapped_local),
		cmocka_unit_test(test_dest_v4_src_v4_local),
		cmocka_unit_test(test_dest_mapped_src),
		cmocka_unit_test(test_dest_v6_src_v4_local),
		cmocka_unit_test(test_dest_unix_local),
		cmocka_unit_test(test_dest_bad_src),
		cmocka_unit_test(test_dest_into_v1),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
