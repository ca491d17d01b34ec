/* Unit tests for the PROXY protocol reader in funneld/proxy_protocol.c. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "sockaddr_test.h"

#include "proxy_protocol.h"

typedef enum proxy_read_result (*reader_fn)(const uint8_t *, size_t,
    struct proxy_header *, const char **);

#define SIG "\r\n\r\n\0\r\nQUIT\n"
#define SIG_LEN 12

/* The first bytes of a TLS 1.2/1.3 ClientHello record, as pipelined data. */
static const uint8_t tls_bytes[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00,
    0x01, 0xfc, 0x03, 0x03, 'P', 'R', 'O', 'X', 'Y', ' ', '\r', '\n' };

/* Read exactly len bytes from a heap copy, so ASan sees any read past it. */
static enum proxy_read_result
rd(reader_fn fn, const void *bytes, size_t len, struct proxy_header *ph,
    const char **why)
{
	uint8_t			*copy = malloc(len ? len : 1);
	enum proxy_read_result	 r;

	assert_non_null(copy);
	memcpy(copy, bytes, len);
	*why = NULL;
	r = fn(copy, len, ph, why);
	assert_non_null(*why);
	free(copy);
	return r;
}

/*
 * hdr[0..n) is a whole header: every strict prefix is INCOMPLETE
 * ("truncated"), the whole is `want` with `want_why`, and the same holds,
 * with the same header_len and addresses, with TLS bytes pipelined behind.
 * *ph gets the verdict's header.
 */
static void
check_whole(reader_fn fn, const void *hdr, size_t n,
    enum proxy_read_result want, const char *want_why,
    struct proxy_header *ph)
{
	struct proxy_header	 again;
	const char		*why;
	uint8_t			 buf[PROXY_READ_MAX + sizeof(tls_bytes)];

	assert_true(n <= PROXY_READ_MAX);
	for (size_t k = 0; k < n; k++) {
		assert_int_equal(rd(fn, hdr, k, ph, &why),
		    PROXY_READ_INCOMPLETE);
		assert_string_equal(why, "truncated");
		assert_int_equal(ph->header_len, 0);
	}
	assert_int_equal(rd(fn, hdr, n, ph, &why), want);
	assert_string_equal(why, want_why);
	assert_int_equal(ph->header_len, n);

	memcpy(buf, hdr, n);
	memcpy(buf + n, tls_bytes, sizeof(tls_bytes));
	for (size_t extra = 1; extra <= sizeof(tls_bytes); extra++) {
		assert_int_equal(rd(fn, buf, n + extra, &again, &why), want);
		assert_string_equal(why, want_why);
		assert_memory_equal(&again, ph, sizeof(again));
	}
	/* and the TLS bytes are where they were, untouched */
	assert_memory_equal(buf + ph->header_len, tls_bytes, sizeof(tls_bytes));
}

/*
 * bytes[0..n) is refused with want_why, decided by byte `at`: shorter
 * prefixes are INCOMPLETE, from at + 1 bytes on (to n, and with more bytes
 * behind) it is BAD with the same reason.
 */
static void
check_bad_at(reader_fn fn, const void *bytes, size_t n, size_t at,
    const char *want_why)
{
	struct proxy_header	 ph;
	const char		*why;
	uint8_t			 buf[2048];

	assert_true(at < n && n + sizeof(tls_bytes) <= sizeof(buf));
	for (size_t k = 0; k <= at; k++) {
		assert_int_equal(rd(fn, bytes, k, &ph, &why),
		    PROXY_READ_INCOMPLETE);
		assert_string_equal(why, "truncated");
	}
	memcpy(buf, bytes, n);
	memcpy(buf + n, tls_bytes, sizeof(tls_bytes));
	for (size_t k = at + 1; k <= n + sizeof(tls_bytes); k++) {
		assert_int_equal(rd(fn, buf, k, &ph, &why), PROXY_READ_BAD);
		assert_string_equal(why, want_why);
		assert_int_equal(ph.header_len, 0);
		assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	}
}

/* A string refused with want_why; the deciding byte is where `mark` points
 * (the first byte of the first occurrence of mark in s). */
static void
check_bad_str(reader_fn fn, const char *s, const char *mark,
    const char *want_why)
{
	const char	*at = strstr(s, mark);

	assert_non_null(at);
	check_bad_at(fn, s, strlen(s), (size_t)(at - s), want_why);
}

/*
 * Refused with want_why by byte `mark` in s at the latest (maybe earlier):
 * once refused, every longer prefix is refused alike.
 */
static void
check_bad_by(reader_fn fn, const char *s, const char *mark,
    const char *want_why)
{
	struct proxy_header	 ph;
	const char		*why, *at = strstr(s, mark);
	size_t			 n = strlen(s), k;

	assert_non_null(at);
	for (k = 0; k <= n; k++) {
		if (rd(fn, s, k, &ph, &why) != PROXY_READ_INCOMPLETE)
			break;
		assert_string_equal(why, "truncated");
	}
	assert_true(k <= (size_t)(at - s) + 1);
	for (; k <= n; k++) {
		assert_int_equal(rd(fn, s, k, &ph, &why), PROXY_READ_BAD);
		assert_string_equal(why, want_why);
	}
}

/* Refused by the last byte of s. */
static void
check_bad_last(reader_fn fn, const char *s, const char *want_why)
{
	check_bad_at(fn, s, strlen(s), strlen(s) - 1, want_why);
}

/* ---- v1 ---- */

static void
test_v1_tcp4(void **state)
{
	static const char	 h[] =
	    "PROXY TCP4 203.0.113.7 100.100.100.100 51234 8443\r\n";
	struct proxy_header	 ph;

	check_whole(proxy_read_v1, h, sizeof(h) - 1, PROXY_READ_OK,
	    "v1 TCP4", &ph);
	assert_sa(&ph.src, AF_INET, "203.0.113.7", 51234);
	assert_sa(&ph.dst, AF_INET, "100.100.100.100", 8443);
}

static void
test_v1_tcp4_extremes(void **state)
{
	static const char	 h1[] =
	    "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
	static const char	 h2[] = "PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n";
	struct proxy_header	 ph;

	assert_int_equal(sizeof(h1) - 1, 56);	/* the specification's TCP4 bound */
	check_whole(proxy_read_v1, h1, sizeof(h1) - 1, PROXY_READ_OK,
	    "v1 TCP4", &ph);
	assert_sa(&ph.src, AF_INET, "255.255.255.255", 65535);
	assert_sa(&ph.dst, AF_INET, "255.255.255.255", 65535);
	check_whole(proxy_read_v1, h2, sizeof(h2) - 1, PROXY_READ_OK,
	    "v1 TCP4", &ph);
	assert_sa(&ph.src, AF_INET, "0.0.0.0", 0);
	assert_sa(&ph.dst, AF_INET, "10.0.0.1", 0);
}

static void
test_v1_tcp6(void **state)
{
	static const char	 h[] =
	    "PROXY TCP6 2001:db8::7 fd7a:115c:a1e0::1 51234 443\r\n";
	static const char	 upper[] =
	    "PROXY TCP6 2001:DB8:0:0:0:0:0:7 FD7A:115C:A1E0::0001 1 2\r\n";
	struct proxy_header	 ph;

	check_whole(proxy_read_v1, h, sizeof(h) - 1, PROXY_READ_OK,
	    "v1 TCP6", &ph);
	assert_sa(&ph.src, AF_INET6, "2001:db8::7", 51234);
	assert_sa(&ph.dst, AF_INET6, "fd7a:115c:a1e0::1", 443);
	/* upper case, uncompressed groups, leading zeros in a group */
	check_whole(proxy_read_v1, upper, sizeof(upper) - 1, PROXY_READ_OK,
	    "v1 TCP6", &ph);
	assert_sa(&ph.src, AF_INET6, "2001:db8::7", 1);
	assert_sa(&ph.dst, AF_INET6, "fd7a:115c:a1e0::1", 2);
}

/* An IPv4-mapped source in TCP6 is kept as sent. */
static void
test_v1_tcp6_mapped(void **state)
{
	static const char	 h[] =
	    "PROXY TCP6 ::ffff:203.0.113.7 ::ffff:100.100.100.100 1 443\r\n";
	struct proxy_header	 ph;

	check_whole(proxy_read_v1, h, sizeof(h) - 1, PROXY_READ_OK,
	    "v1 TCP6", &ph);
	assert_sa(&ph.src, AF_INET6, "::ffff:203.0.113.7", 1);
	assert_sa(&ph.dst, AF_INET6, "::ffff:100.100.100.100", 443);
}

static void
test_v1_tcp6_longest(void **state)
{
	static const char	 h[] = "PROXY TCP6 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct proxy_header	 ph;

	assert_int_equal(sizeof(h) - 1, 104);	/* the specification's TCP6 bound */
	check_whole(proxy_read_v1, h, sizeof(h) - 1, PROXY_READ_OK,
	    "v1 TCP6", &ph);
	assert_sa(&ph.src, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	    65535);
}

static void
test_v1_unknown(void **state)
{
	static const char	 shortf[] = "PROXY UNKNOWN\r\n";
	static const char	 worst[] = "PROXY UNKNOWN "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	static const char	 junk[] = "PROXY UNKNOWN  anything\tat all \x01\r\n";
	static const char	 empty[] = "PROXY UNKNOWN \r\n";
	struct proxy_header	 ph;

	check_whole(proxy_read_v1, shortf, sizeof(shortf) - 1,
	    PROXY_READ_LOCAL, "v1 UNKNOWN", &ph);
	assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	assert_int_equal(ph.dst.ss_family, AF_UNSPEC);
	assert_int_equal(sizeof(worst) - 1, PROXY_V1_MAX);
	check_whole(proxy_read_v1, worst, sizeof(worst) - 1, PROXY_READ_LOCAL,
	    "v1 UNKNOWN", &ph);
	assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	check_whole(proxy_read_v1, junk, sizeof(junk) - 1, PROXY_READ_LOCAL,
	    "v1 UNKNOWN", &ph);
	check_whole(proxy_read_v1, empty, sizeof(empty) - 1, PROXY_READ_LOCAL,
	    "v1 UNKNOWN", &ph);

	check_bad_last(proxy_read_v1, "PROXY UNKNOWNX", "bad v1 protocol");
	check_bad_last(proxy_read_v1, "PROXY UNKNOWN\rX", "v1 line not ended by CRLF");
	check_bad_last(proxy_read_v1, "PROXY UNKNOWN x\n", "v1 line not ended by CRLF");
	check_bad_last(proxy_read_v1, "PROXY UNKNOWN x\rx", "v1 line not ended by CRLF");
}

/* 107 bytes with the CRLF is the limit, whatever the line says. */
static void
test_v1_too_long(void **state)
{
	char		 line[200];
	struct proxy_header ph;
	const char	*why;
	size_t		 n;

	/* "PROXY UNKNOWN " + x... + "\r\n", 108 bytes: refused at byte 107 */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 106, "\r\n", 2);
	check_bad_at(proxy_read_v1, line, 108, 106, "v1 line too long");
	/* one shorter, 107 bytes: fine */
	memcpy(line + 105, "\r\n", 2);
	assert_int_equal(rd(proxy_read_v1, line, 107, &ph, &why),
	    PROXY_READ_LOCAL);
	assert_int_equal(ph.header_len, 107);
	/* no CRLF at all: refused once 107 bytes are in */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	check_bad_at(proxy_read_v1, line, sizeof(line), 106, "v1 line too long");

	/* TCP6 with both IPv4 tails at their longest: 116 bytes */
	n = strlen(strcpy(line, "PROXY TCP6 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n"));
	assert_int_equal(n, 116);
	check_bad_at(proxy_read_v1, line, n, 106, "v1 line too long");
	/* but one such address is fine */
	n = strlen(strcpy(line, "PROXY TCP6 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ::1 65535 65535\r\n"));
	check_whole(proxy_read_v1, line, n, PROXY_READ_OK, "v1 TCP6", &ph);
	assert_sa(&ph.src, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	    65535);
}

static void
test_v1_spaces(void **state)
{
	check_bad_str(proxy_read_v1, "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	    " TCP4", "bad v1 protocol");
	check_bad_str(proxy_read_v1, "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
	    " 1.2", "bad v1 source address");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
	    " 5.6", "bad v1 destination address");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
	    " 1 2", "bad v1 source port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
	    " 2\r", "bad v1 destination port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
	    " \r", "bad v1 destination port");
	check_bad_str(proxy_read_v1, "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
	    "\t", "bad v1 protocol");
	check_bad_str(proxy_read_v1, "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	    "\t", "bad v1 signature");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
	    "\t", "bad v1 source address");
	check_bad_str(proxy_read_v1, " PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	    " ", "bad v1 signature");
}

/* Leading zeros: refused in IPv4 numbers and ports (the specification
 * forbids them there), allowed inside IPv6 groups (4 hex digits). */
static void
test_v1_leading_zeros(void **state)
{
	struct proxy_header	 ph;
	static const char	 zero[] = "PROXY TCP4 1.0.0.1 0.0.0.0 0 10\r\n";

	check_bad_str(proxy_read_v1, "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
	    "1.2.3.4", "bad v1 source address");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.008 1 2\r\n",
	    "08 ", "bad v1 destination address");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 0443 2\r\n",
	    "443", "bad v1 source port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
	    "0\r", "bad v1 destination port");
	check_whole(proxy_read_v1, zero, sizeof(zero) - 1, PROXY_READ_OK,
	    "v1 TCP4", &ph);
	assert_sa(&ph.src, AF_INET, "1.0.0.1", 0);
	assert_sa(&ph.dst, AF_INET, "0.0.0.0", 10);
}

static void
test_v1_ports(void **state)
{
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
	    "6 2", "bad v1 source port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
	    "6\r", "bad v1 destination port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
	    "9\r", "bad v1 destination port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n",
	    "0\r", "bad v1 destination port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
	    "+", "bad v1 source port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n",
	    "-", "bad v1 destination port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n",
	    "x", "bad v1 source port");
	check_bad_str(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
	    "\r", "bad v1 destination port");
}

static void
test_v1_line_end(void **state)
{
	/* LF alone */
	check_bad_last(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
	    "v1 line not ended by CRLF");
	/* CR, then not LF */
	check_bad_last(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r",
	    "v1 line not ended by CRLF");
	check_bad_last(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
	    "v1 line not ended by CRLF");
	/* a field missing */
	check_bad_last(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 1\r",
	    "v1 line ends early");
	check_bad_last(proxy_read_v1, "PROXY TCP4 1.2.3.4\r",
	    "v1 line ends early");
	check_bad_last(proxy_read_v1, "PROXY TCP4\r", "bad v1 protocol");
	check_bad_last(proxy_read_v1, "PROXY\r", "bad v1 signature");
	/* NUL inside */
	check_bad_at(proxy_read_v1, "PROXY TCP4 1.2\0.3.4 5.6.7.8 1 2\r\n",
	    33, 14, "bad v1 source address");
}

static void
test_v1_addresses(void **state)
{
	static const char *const bad4[] = {
		"256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3",
		"1.2.3.4.", "1.2.3.1000", "::1", "1.2.3.a", "0x1.2.3.4",
	};
	static const char *const bad6[] = {
		"1.2.3.4", "fe80::1%eth0", "1:2:3:4:5:6:7:8:9", ":::1",
		"1::2::3", "12345::1", "[::1]", "g::1", "::ffff:1.2.3.256",
	};
	char	 line[160];

	for (size_t i = 0; i < sizeof(bad4) / sizeof(bad4[0]); i++) {
		snprintf(line, sizeof(line), "PROXY TCP4 %s 5.6.7.8 1 2\r\n",
		    bad4[i]);
		check_bad_by(proxy_read_v1, line, " 5.6.7.8",
		    "bad v1 source address");
	}
	for (size_t i = 0; i < sizeof(bad6) / sizeof(bad6[0]); i++) {
		snprintf(line, sizeof(line), "PROXY TCP6 ::1 %s 1 2\r\n",
		    bad6[i]);
		check_bad_by(proxy_read_v1, line, " 1 2",
		    "bad v1 destination address");
	}
}

/*
 * Refused by the first byte that makes a valid line impossible, not later:
 * these pin the deciding byte exactly.
 */
static void
test_v1_early(void **state)
{
	check_bad_at(proxy_read_v1, "PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", 34,
	    19, "bad v1 source address");
	check_bad_at(proxy_read_v1, "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", 34,
	    18, "bad v1 source address");
	check_bad_at(proxy_read_v1, "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 32,
	    9, "bad v1 protocol");
	check_bad_at(proxy_read_v1, "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", 32,
	    18, "bad v1 source address");
	check_bad_at(proxy_read_v1, "PROXY TCP4 ::1 ::1 1 2\r\n", 24,
	    11, "bad v1 source address");
	check_bad_at(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n",
	    37, 32, "bad v1 source port");
	check_bad_at(proxy_read_v1, "PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
	    36, 31, "bad v1 source port");
}

static void
test_v1_wrong_mode(void **state)
{
	struct sockaddr_storage	 s = sa("203.0.113.7", 51234);
	struct sockaddr_storage	 d = sa("100.100.100.100", 443);
	struct proxy_info	 pi = { .src = SA(s), .dst = SA(d) };
	uint8_t			 v2[PROXY_HEADER_MAX];
	int			 n;

	n = proxy_build_v2(&pi, v2, sizeof(v2));
	assert_int_equal(n, 28);
	check_bad_at(proxy_read_v1, v2, (size_t)n, 0, "v2 header, v1 expected");
	check_bad_at(proxy_read_v1, tls_bytes, sizeof(tls_bytes), 0,
	    "bad v1 signature");
	check_bad_at(proxy_read_v1, "GET / HTTP/1.1\r\n\r\n", 18, 0,
	    "bad v1 signature");
	check_bad_at(proxy_read_v1, "POST /v0/ingress HTTP/1.1\r\n", 27, 1,
	    "bad v1 signature");
	check_bad_at(proxy_read_v1, "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32,
	    0, "bad v1 signature");
	check_bad_at(proxy_read_v1, "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 32,
	    6, "bad v1 protocol");
}

/* ---- v2 ---- */

/* A v2 header: signature, ver_cmd, fam, length = body_len, body. */
static size_t
v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *body,
    size_t body_len)
{
	memcpy(out, SIG, SIG_LEN);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(body_len >> 8);
	out[15] = (uint8_t)body_len;
	if (body_len > 0)
		memcpy(out + 16, body, body_len);
	return 16 + body_len;
}

#define ADDR4 "\xcb\x00\x71\x07" "\x64\x64\x64\x64" "\xc8\x22" "\x01\xbb"
#define ADDR6 \
    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07" \
    "\xfd\x7a\x11\x5c\xa1\xe0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01" \
    "\xc8\x22" "\x20\xfb"

/* What tailscaled's forwarder sends: 28 bytes, no TLV. */
static void
test_v2_tcp4(void **state)
{
	static const uint8_t	 h[] = SIG "\x21\x11\x00\x0c" ADDR4;
	struct proxy_header	 ph;

	assert_int_equal(sizeof(h) - 1, 28);
	check_whole(proxy_read_v2, h, sizeof(h) - 1, PROXY_READ_OK, "v2 TCP4",
	    &ph);
	assert_sa(&ph.src, AF_INET, "203.0.113.7", 51234);
	assert_sa(&ph.dst, AF_INET, "100.100.100.100", 443);
}

static void
test_v2_tcp6(void **state)
{
	static const uint8_t	 h[] = SIG "\x21\x21\x00\x24" ADDR6;
	struct proxy_header	 ph;

	assert_int_equal(sizeof(h) - 1, 52);
	check_whole(proxy_read_v2, h, sizeof(h) - 1, PROXY_READ_OK, "v2 TCP6",
	    &ph);
	assert_sa(&ph.src, AF_INET6, "2001:db8::7", 51234);
	assert_sa(&ph.dst, AF_INET6, "fd7a:115c:a1e0::1", 8443);
}

static void
test_v2_tcp6_mapped(void **state)
{
	static const uint8_t	 h[] = SIG "\x21\x21\x00\x24"
	    "\0\0\0\0\0\0\0\0\0\0\xff\xff\xcb\x00\x71\x07"
	    "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01"
	    "\x00\x01" "\x00\x02";
	struct proxy_header	 ph;

	check_whole(proxy_read_v2, h, sizeof(h) - 1, PROXY_READ_OK, "v2 TCP6",
	    &ph);
	assert_sa(&ph.src, AF_INET6, "::ffff:203.0.113.7", 1);
	assert_sa(&ph.dst, AF_INET6, "::1", 2);
}

/* TLVs of every kind are skipped by their lengths; the address is kept. */
static void
test_v2_tlvs(void **state)
{
	static const uint8_t	 body4[] = ADDR4
	    "\x04\x00\x00"                      /* NOOP, empty */
	    "\x01\x00\x02" "h2"                 /* ALPN */
	    "\x02\x00\x13" "node.tailnet.ts.net"/* AUTHORITY */
	    "\x20\x00\x0f" "\x01" "\0\0\0\0" "\x21\x00\x07" "TLSv1.3" /* SSL */
	    "\xe0\x00\x05" "\r\n\r\n\0"         /* custom */
	    "\xff\x00\x01" "\xff";              /* future */
	static const uint8_t	 body6[] = ADDR6 "\x05\x00\x03" "abc";
	uint8_t			 h[256];
	struct proxy_header	 ph;
	size_t			 n;

	n = v2(h, 0x21, 0x11, body4, sizeof(body4) - 1);
	check_whole(proxy_read_v2, h, n, PROXY_READ_OK, "v2 TCP4", &ph);
	assert_sa(&ph.src, AF_INET, "203.0.113.7", 51234);
	assert_sa(&ph.dst, AF_INET, "100.100.100.100", 443);

	n = v2(h, 0x21, 0x21, body6, sizeof(body6) - 1);
	check_whole(proxy_read_v2, h, n, PROXY_READ_OK, "v2 TCP6", &ph);
	assert_sa(&ph.src, AF_INET6, "2001:db8::7", 51234);
}

static void
test_v2_tlv_overrun(void **state)
{
	uint8_t		 h[256];
	size_t		 n;

	/* a TLV claiming one byte more than the header holds: refused by
	 * its length's second byte, before the rest arrives */
	n = v2(h, 0x21, 0x11, ADDR4 "\x04\x00\x03" "ab", 12 + 5);
	check_bad_at(proxy_read_v2, h, n, 28 + 2, "v2 TLV overruns header");
	/* the second of two */
	n = v2(h, 0x21, 0x11, ADDR4 "\x04\x00\x01" "a" "\x04\x01\x00" "b",
	    12 + 8);
	check_bad_at(proxy_read_v2, h, n, 28 + 4 + 2, "v2 TLV overruns header");
	/* 1 or 2 bytes left after the addresses cannot be a TLV: the length
	 * field says so */
	n = v2(h, 0x21, 0x11, ADDR4 "\x04", 12 + 1);
	check_bad_at(proxy_read_v2, h, n, 15, "v2 TLV truncated");
	n = v2(h, 0x21, 0x21, ADDR6 "\x04\x00", 36 + 2);
	check_bad_at(proxy_read_v2, h, n, 15, "v2 TLV truncated");
	/* ... or after a TLV */
	n = v2(h, 0x21, 0x11, ADDR4 "\x04\x00\x01" "a" "\x04\x00", 12 + 6);
	check_bad_at(proxy_read_v2, h, n, 28 + 2, "v2 TLV truncated");
}

/* LOCAL: the length is honoured, the family and addresses ignored. */
static void
test_v2_local(void **state)
{
	uint8_t			 h[256];
	struct proxy_header	 ph;
	size_t			 n;

	n = v2(h, 0x20, 0x00, NULL, 0);
	check_whole(proxy_read_v2, h, n, PROXY_READ_LOCAL, "v2 LOCAL", &ph);
	assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	assert_int_equal(ph.dst.ss_family, AF_UNSPEC);
	/* with an address block, and one that is too short for its family */
	n = v2(h, 0x20, 0x11, ADDR4, 12);
	check_whole(proxy_read_v2, h, n, PROXY_READ_LOCAL, "v2 LOCAL", &ph);
	assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	n = v2(h, 0x20, 0x21, "abc", 3);
	check_whole(proxy_read_v2, h, n, PROXY_READ_LOCAL, "v2 LOCAL", &ph);
	/* any family the specification defines */
	n = v2(h, 0x20, 0x12, NULL, 0);
	check_whole(proxy_read_v2, h, n, PROXY_READ_LOCAL, "v2 LOCAL", &ph);
	n = v2(h, 0x20, 0x32, "\x04\x00", 2);	/* not walked as TLVs */
	check_whole(proxy_read_v2, h, n, PROXY_READ_LOCAL, "v2 LOCAL", &ph);
	/* but not an undefined one */
	n = v2(h, 0x20, 0x41, NULL, 0);
	check_bad_at(proxy_read_v2, h, n, 13, "bad v2 family");
}

static void
test_v2_families(void **state)
{
	static const struct {
		uint8_t		 fam;
		const char	*why;
	} t[] = {
		{ 0x00, "v2 PROXY with AF_UNSPEC" },
		{ 0x12, "v2 UDP not supported" },
		{ 0x22, "v2 UDP not supported" },
		{ 0x31, "v2 AF_UNIX not supported" },
		{ 0x32, "v2 AF_UNIX not supported" },
		{ 0x10, "bad v2 family" },
		{ 0x13, "bad v2 family" },
		{ 0x20, "bad v2 family" },
		{ 0x41, "bad v2 family" },
		{ 0xff, "bad v2 family" },
		{ 0x01, "bad v2 family" },
	};
	uint8_t		 h[512];
	size_t		 n;

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		n = v2(h, 0x21, t[i].fam, ADDR6 ADDR6 ADDR6 ADDR6 ADDR6 ADDR6,
		    216);
		check_bad_at(proxy_read_v2, h, n, 13, t[i].why);
	}
}

static void
test_v2_version_command(void **state)
{
	static const uint8_t	 bad_ver[] = { 0x01, 0x11, 0x31, 0xf1, 0x00 };
	static const uint8_t	 bad_cmd[] = { 0x22, 0x2f, 0x23 };
	uint8_t			 h[64];
	size_t			 n;

	for (size_t i = 0; i < sizeof(bad_ver); i++) {
		n = v2(h, bad_ver[i], 0x11, ADDR4, 12);
		check_bad_at(proxy_read_v2, h, n, 12, "bad v2 version");
	}
	for (size_t i = 0; i < sizeof(bad_cmd); i++) {
		n = v2(h, bad_cmd[i], 0x11, ADDR4, 12);
		check_bad_at(proxy_read_v2, h, n, 12, "bad v2 command");
	}
}

static void
test_v2_address_short(void **state)
{
	uint8_t		 h[64];
	size_t		 n;

	n = v2(h, 0x21, 0x11, ADDR4, 11);
	check_bad_at(proxy_read_v2, h, n, 15, "v2 address block too short");
	n = v2(h, 0x21, 0x21, ADDR6, 35);
	check_bad_at(proxy_read_v2, h, n, 15, "v2 address block too short");
	n = v2(h, 0x21, 0x21, ADDR4, 12);	/* a TCP4 block under TCP6 */
	check_bad_at(proxy_read_v2, h, n, 15, "v2 address block too short");
	n = v2(h, 0x21, 0x11, NULL, 0);
	check_bad_at(proxy_read_v2, h, n, 15, "v2 address block too short");
}

/* Up to PROXY_READ_MAX bytes in all; the length field decides at once. */
static void
test_v2_oversize(void **state)
{
	uint8_t			 h[PROXY_READ_MAX + 64];
	uint8_t			 body[PROXY_READ_MAX + 64];
	struct proxy_header	 ph;
	const char		*why;
	size_t			 n, noop;

	assert_int_equal(PROXY_READ_MAX, 1024);
	/* addresses, then one NOOP filling the header to exactly the limit */
	noop = PROXY_READ_MAX - 16 - 12 - 3;
	memcpy(body, ADDR4, 12);
	body[12] = 0x04;
	body[13] = (uint8_t)(noop >> 8);
	body[14] = (uint8_t)noop;
	memset(body + 15, 0xee, noop + 1);
	n = v2(h, 0x21, 0x11, body, 12 + 3 + noop);
	assert_int_equal(n, PROXY_READ_MAX);
	check_whole(proxy_read_v2, h, n, PROXY_READ_OK, "v2 TCP4", &ph);
	assert_sa(&ph.src, AF_INET, "203.0.113.7", 51234);

	/* one byte more is refused as soon as the length is in */
	noop++;
	body[13] = (uint8_t)(noop >> 8);
	body[14] = (uint8_t)noop;
	n = v2(h, 0x21, 0x11, body, 12 + 3 + noop);
	assert_int_equal(n, PROXY_READ_MAX + 1);
	check_bad_at(proxy_read_v2, h, n, 15, "v2 header oversize");
	/* as is the largest length field, LOCAL or not */
	h[14] = h[15] = 0xff;
	assert_int_equal(rd(proxy_read_v2, h, 16, &ph, &why), PROXY_READ_BAD);
	assert_string_equal(why, "v2 header oversize");
	h[12] = 0x20;
	assert_int_equal(rd(proxy_read_v2, h, 16, &ph, &why), PROXY_READ_BAD);
	assert_string_equal(why, "v2 header oversize");
}

/* PP2_TYPE_CRC32C is checked (vectors from an independent implementation). */
static void
test_v2_crc32c(void **state)
{
	/* CRC-32C over the header with the value zeroed: 0x6b533f08 */
	static const uint8_t	 good[] = SIG "\x21\x11\x00\x18" ADDR4
	    "\x03\x00\x04" "\x6b\x53\x3f\x08"
	    "\x04\x00\x02" "xy";
	uint8_t			 h[64];
	struct proxy_header	 ph;
	size_t			 n = sizeof(good) - 1;

	check_whole(proxy_read_v2, good, n, PROXY_READ_OK, "v2 TCP4", &ph);
	assert_sa(&ph.src, AF_INET, "203.0.113.7", 51234);

	/* any other bit flipped is caught, once the whole header is in */
	for (size_t i = 16; i < n; i++) {
		/* not the CRC TLV's type (0x13: no CRC then) nor the TLV
		 * lengths (framing errors, tested elsewhere) */
		if (i == 28 || i == 29 || i == 30 || i == 36 || i == 37)
			continue;
		memcpy(h, good, n);
		h[i] ^= 0x10;
		check_bad_at(proxy_read_v2, h, n, n - 1, "v2 CRC32C mismatch");
	}
	/* a CRC TLV of the wrong size, or two of them */
	n = v2(h, 0x21, 0x11, ADDR4 "\x03\x00\x03" "abc", 12 + 6);
	check_bad_at(proxy_read_v2, h, n, 30, "bad v2 CRC32C TLV");
	n = v2(h, 0x21, 0x11, ADDR4 "\x03\x00\x04" "abcd" "\x03\x00\x04" "abcd",
	    12 + 14);
	check_bad_at(proxy_read_v2, h, n, 37, "bad v2 CRC32C TLV");
}

static void
test_v2_wrong_mode(void **state)
{
	static const char	 v1[] =
	    "PROXY TCP4 203.0.113.7 100.100.100.100 51234 443\r\n";
	uint8_t			 h[64];
	size_t			 n;

	check_bad_at(proxy_read_v2, v1, sizeof(v1) - 1, 0,
	    "v1 header, v2 expected");
	check_bad_at(proxy_read_v2, tls_bytes, sizeof(tls_bytes), 0,
	    "bad v2 signature");
	check_bad_at(proxy_read_v2, "GET / HTTP/1.1\r\n\r\n", 18, 0,
	    "bad v2 signature");
	/* the first 4 bytes are also an HTTP request's blank line */
	check_bad_at(proxy_read_v2, "\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22, 4,
	    "bad v2 signature");
	/* each signature byte matters */
	for (size_t i = 0; i < SIG_LEN; i++) {
		n = v2(h, 0x21, 0x11, ADDR4, 12);
		h[i] ^= 0x01;
		check_bad_at(proxy_read_v2, h, n, i, "bad v2 signature");
	}
}

/* ---- the writer's headers read back ---- */

static void
check_roundtrip(const char *sip, uint16_t sport, const char *dip,
    uint16_t dport, const struct proxy_info *strings)
{
	struct sockaddr_storage	 s = sa(sip, sport), d = sa(dip, dport);
	struct proxy_info	 pi = *strings;
	struct proxy_header	 ph;
	uint8_t			 out[PROXY_HEADER_MAX];
	char			 want_src[INET6_ADDRSTRLEN], want_dst[INET6_ADDRSTRLEN];
	int			 n, family;

	pi.src = SA(s);
	pi.dst = SA(d);
	/* the writer sends IPv4-mapped addresses as IPv4 */
	family = strncmp(sip, "::ffff:", 7) == 0 || strchr(sip, ':') == NULL ?
	    AF_INET : AF_INET6;
	snprintf(want_src, sizeof(want_src), "%s",
	    strncmp(sip, "::ffff:", 7) == 0 ? sip + 7 : sip);
	snprintf(want_dst, sizeof(want_dst), "%s",
	    strncmp(dip, "::ffff:", 7) == 0 ? dip + 7 : dip);

	n = proxy_build_v1(&pi, out, sizeof(out));
	assert_true(n > 0);
	check_whole(proxy_read_v1, out, (size_t)n, PROXY_READ_OK,
	    family == AF_INET ? "v1 TCP4" : "v1 TCP6", &ph);
	assert_sa(&ph.src, family, want_src, sport);
	assert_sa(&ph.dst, family, want_dst, dport);

	n = proxy_build_v2(&pi, out, sizeof(out));
	assert_true(n > 0);
	check_whole(proxy_read_v2, out, (size_t)n, PROXY_READ_OK,
	    family == AF_INET ? "v2 TCP4" : "v2 TCP6", &ph);
	assert_sa(&ph.src, family, want_src, sport);
	assert_sa(&ph.dst, family, want_dst, dport);
}

static void
test_roundtrip(void **state)
{
	static char		 longest[PROXY_AUTHORITY_MAX + 1];
	static char		 longtls[PROXY_TLS_STR_MAX + 1];
	struct proxy_info	 none = { 0 };
	struct proxy_info	 all = { .authority = "node.tailnet.ts.net",
	    .alpn = "h2", .tls_version = "TLSv1.3",
	    .cipher = "TLS1-3-AES-128-GCM-SHA256" };
	struct proxy_info	 big;

	memset(longest, 'a', sizeof(longest) - 1);
	memset(longtls, 'b', sizeof(longtls) - 1);
	big = (struct proxy_info){ .authority = longest, .alpn = longest,
	    .tls_version = longtls, .cipher = longtls };

	check_roundtrip("203.0.113.7", 51234, "100.100.100.100", 443, &none);
	check_roundtrip("203.0.113.7", 51234, "100.100.100.100", 443, &all);
	check_roundtrip("0.0.0.0", 0, "255.255.255.255", 65535, &all);
	check_roundtrip("2001:db8::7", 1, "fd7a:115c:a1e0::1", 8443, &none);
	check_roundtrip("2001:db8::7", 1, "fd7a:115c:a1e0::1", 8443, &all);
	check_roundtrip("::", 65535, "::1", 0, &big);
	check_roundtrip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535, &big);
	check_roundtrip("::ffff:198.51.100.1", 4242, "::ffff:100.64.0.1", 10000,
	    &all);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_tcp4),
		cmocka_unit_test(test_v1_tcp4_extremes),
		cmocka_unit_test(test_v1_tcp6),
		cmocka_unit_test(test_v1_tcp6_mapped),
		cmocka_unit_test(test_v1_tcp6_longest),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_too_long),
		cmocka_unit_test(test_v1_spaces),
		cmocka_unit_test(test_v1_leading_zeros),
		cmocka_unit_test(test_v1_ports),
		cmocka_unit_test(test_v1_line_end),
		cmocka_unit_test(test_v1_addresses),
		cmocka_unit_test(test_v1_early),
		cmocka_unit_test(test_v1_wrong_mode),
		cmocka_unit_test(test_v2_tcp4),
		cmocka_unit_test(test_v2_tcp6),
		cmocka_unit_test(test_v2_tcp6_mapped),
		cmocka_unit_test(test_v2_tlvs),
		cmocka_unit_test(test_v2_tlv_overrun),
		cmocka_unit_test(test_v2_local),
		cmocka_unit_test(test_v2_families),
		cmocka_unit_test(test_v2_version_command),
		cmocka_unit_test(test_v2_address_short),
		cmocka_unit_test(test_v2_oversize),
		cmocka_unit_test(test_v2_crc32c),
		cmocka_unit_test(test_v2_wrong_mode),
		cmocka_unit_test(test_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
