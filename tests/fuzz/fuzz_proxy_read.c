/*
 * Fuzz target for the PROXY protocol reader (proxy_read_v1/v2 in
 * funneld/proxy_protocol.c).  Any violation of these aborts:
 *
 *  - prefix monotonicity: for every prefix of the input, each reader says
 *    INCOMPLETE ("truncated") up to some length, then from there on one
 *    verdict, with the same reason and header, however many bytes follow;
 *  - INCOMPLETE only below PROXY_V1_MAX / PROXY_READ_MAX bytes;
 *  - no byte is read past len (each call sees the buffer with everything
 *    after len poisoned under ASan);
 *  - OK: header_len <= len, src and dst both AF_INET or both AF_INET6, the
 *    header's shape (v1: "PROXY " ... CRLF within 107 bytes; v2: 16 + the
 *    length field); LOCAL: no address; BAD: nothing filled in;
 *  - the two readers never both accept the same bytes;
 *  - writer round trip: what was read, written again with proxy_build_v1/v2,
 *    reads back to the same addresses (a v2 header without TLVs and without
 *    a mapped address is rebuilt byte for byte).
 *
 * Input: a first byte, then the payload.  First byte even: the payload is
 * raw bytes for both readers.  Odd: the payload describes addresses and
 * strings (as in fuzz_proxy.c); the writer's headers, with the rest of the
 * payload behind them as the client's TLS, must read back exactly.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy_protocol.h"
#include "fuzz.h"

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(a, s) ((void)(a), (void)(s))
#define ASAN_UNPOISON_MEMORY_REGION(a, s) ((void)(a), (void)(s))
#endif

typedef enum proxy_read_result (*reader_fn)(const uint8_t *, size_t,
    struct proxy_header *, const char **);

struct verdict {
	enum proxy_read_result	 r;
	const char		*why;
	struct proxy_header	 ph;
};

static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* Read the first k of the n bytes at buf, the rest poisoned meanwhile. */
static void
read_prefix(reader_fn fn, uint8_t *buf, size_t n, size_t k, struct verdict *v)
{
	memset(v, 0xa5, sizeof(*v));
	ASAN_POISON_MEMORY_REGION(buf + k, n - k);
	v->why = NULL;
	v->r = fn(buf, k, &v->ph, &v->why);
	ASAN_UNPOISON_MEMORY_REGION(buf + k, n - k);
	CHECK(v->why != NULL);
}

static bool
same(const struct verdict *a, const struct verdict *b)
{
	return a->r == b->r && strcmp(a->why, b->why) == 0 &&
	    memcmp(&a->ph, &b->ph, sizeof(a->ph)) == 0;
}

/* What an address means: family (IPv4-mapped IPv6 as IPv4), bytes, port. */
struct norm {
	int		 family;
	uint8_t		 addr[16];
	uint16_t	 port;
};

static void
normalise(const struct sockaddr_storage *ss, struct norm *n)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;

	memset(n, 0, sizeof(*n));
	if (ss->ss_family == AF_INET) {
		memcpy(&sin, ss, sizeof(sin));
		n->family = AF_INET;
		memcpy(n->addr, &sin.sin_addr, 4);
		n->port = ntohs(sin.sin_port);
	} else if (ss->ss_family == AF_INET6) {
		memcpy(&sin6, ss, sizeof(sin6));
		n->port = ntohs(sin6.sin6_port);
		if (memcmp(sin6.sin6_addr.s6_addr, mapped, 12) == 0) {
			n->family = AF_INET;
			memcpy(n->addr, sin6.sin6_addr.s6_addr + 12, 4);
		} else {
			n->family = AF_INET6;
			memcpy(n->addr, sin6.sin6_addr.s6_addr, 16);
		}
	}
}

static bool
norm_eq(const struct norm *a, const struct norm *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

static bool
is_mapped(const struct sockaddr_storage *ss)
{
	struct sockaddr_in6	 sin6;

	if (ss->ss_family != AF_INET6)
		return false;
	memcpy(&sin6, ss, sizeof(sin6));
	return memcmp(sin6.sin6_addr.s6_addr, mapped, 12) == 0;
}

/* The shape of a final verdict on buf[0..n). */
static void
check_final(int version, const uint8_t *buf, size_t n, const struct verdict *v)
{
	const struct proxy_header	*ph = &v->ph;
	size_t				 limit = version == 1 ? PROXY_V1_MAX :
					    PROXY_READ_MAX;
	static const struct proxy_header zero;

	switch (v->r) {
	case PROXY_READ_INCOMPLETE:
		CHECK(n < limit);
		CHECK(strcmp(v->why, "truncated") == 0);
		CHECK(memcmp(ph, &zero, sizeof(zero)) == 0);
		break;
	case PROXY_READ_BAD:
		CHECK(memcmp(ph, &zero, sizeof(zero)) == 0);
		CHECK(strcmp(v->why, "truncated") != 0);
		break;
	case PROXY_READ_LOCAL:
	case PROXY_READ_OK:
		CHECK(ph->header_len > 0 && ph->header_len <= n);
		CHECK(ph->header_len <= limit);
		if (v->r == PROXY_READ_LOCAL) {
			CHECK(ph->src.ss_family == AF_UNSPEC);
			CHECK(ph->dst.ss_family == AF_UNSPEC);
			CHECK(strcmp(v->why, version == 1 ? "v1 UNKNOWN" :
			    "v2 LOCAL") == 0);
		} else {
			CHECK(ph->src.ss_family == AF_INET ||
			    ph->src.ss_family == AF_INET6);
			CHECK(ph->src.ss_family == ph->dst.ss_family);
			CHECK(strcmp(v->why, ph->src.ss_family == AF_INET ?
			    (version == 1 ? "v1 TCP4" : "v2 TCP4") :
			    (version == 1 ? "v1 TCP6" : "v2 TCP6")) == 0);
		}
		if (version == 1) {
			CHECK(ph->header_len >= 8);
			CHECK(memcmp(buf, "PROXY ", 6) == 0);
			CHECK(buf[ph->header_len - 2] == '\r');
			CHECK(buf[ph->header_len - 1] == '\n');
			CHECK(memchr(buf, '\n', ph->header_len - 1) == NULL);
			CHECK(memchr(buf, '\r', ph->header_len - 2) == NULL);
		} else {
			CHECK(ph->header_len >= 16);
			CHECK(ph->header_len ==
			    16 + ((size_t)buf[14] << 8 | buf[15]));
			CHECK((buf[12] & 0xf0) == 0x20);
			CHECK(v->r == PROXY_READ_OK ? buf[12] == 0x21 :
			    buf[12] == 0x20);
			if (v->r == PROXY_READ_OK)
				CHECK(ph->header_len >=
				    (buf[13] == 0x11 ? 28u : 52u));
		}
		break;
	default:
		CHECK(!"unknown result");
	}
}

/* Write src/dst again with the writer and read them back. */
static void
check_rebuild(int version, const uint8_t *in, const struct verdict *v)
{
	struct proxy_info	 pi = { .src = (const struct sockaddr *)&v->ph.src,
	    .dst = (const struct sockaddr *)&v->ph.dst };
	struct norm		 s, d, s2, d2;
	struct proxy_header	 ph;
	uint8_t			 out[PROXY_HEADER_MAX];
	const char		*why;
	int			 n;

	normalise(&v->ph.src, &s);
	normalise(&v->ph.dst, &d);
	/* the writer refuses a mapped / plain pair of different kinds only
	 * when they differ after unmapping */
	if (s.family != d.family) {
		CHECK(proxy_build_v1(&pi, out, sizeof(out)) == -1);
		CHECK(proxy_build_v2(&pi, out, sizeof(out)) == -1);
		return;
	}

	n = proxy_build_v1(&pi, out, sizeof(out));
	CHECK(n > 0);
	CHECK(proxy_read_v1(out, (size_t)n, &ph, &why) == PROXY_READ_OK);
	CHECK(ph.header_len == (size_t)n);
	normalise(&ph.src, &s2);
	normalise(&ph.dst, &d2);
	CHECK(norm_eq(&s, &s2) && norm_eq(&d, &d2));

	n = proxy_build_v2(&pi, out, sizeof(out));
	CHECK(n > 0);
	CHECK(proxy_read_v2(out, (size_t)n, &ph, &why) == PROXY_READ_OK);
	CHECK(ph.header_len == (size_t)n);
	normalise(&ph.src, &s2);
	normalise(&ph.dst, &d2);
	CHECK(norm_eq(&s, &s2) && norm_eq(&d, &d2));

	/* v2 without TLVs and unmapped: the same bytes */
	if (version == 2 && !is_mapped(&v->ph.src) && !is_mapped(&v->ph.dst) &&
	    v->ph.header_len == (v->ph.src.ss_family == AF_INET ? 28u : 52u)) {
		CHECK((size_t)n == v->ph.header_len);
		CHECK(memcmp(out, in, (size_t)n) == 0);
	}
}

/*
 * Every prefix of buf[0..n) (a heap buffer of exactly n bytes), then the
 * whole.  Returns the final verdict in *fin.
 */
static void
check_reader(int version, uint8_t *buf, size_t n, struct verdict *fin)
{
	reader_fn	 fn = version == 1 ? proxy_read_v1 : proxy_read_v2;
	struct verdict	 v;
	size_t		 k, first = n + 1;

	read_prefix(fn, buf, n, n, fin);
	check_final(version, buf, n, fin);
	for (k = 0; k <= n; k++) {
		read_prefix(fn, buf, n, k, &v);
		check_final(version, buf, k, &v);
		if (v.r == PROXY_READ_INCOMPLETE) {
			CHECK(first > n);	/* no INCOMPLETE after a verdict */
			continue;
		}
		if (first > n)
			first = k;
		CHECK(same(&v, fin));
		/* past the header or the deciding byte, every prefix is
		 * alike: a few more, then the whole (above) */
		if (k >= first + 8)
			break;
	}
	if (fin->r == PROXY_READ_INCOMPLETE)
		CHECK(first > n);
	if (fin->r == PROXY_READ_OK || fin->r == PROXY_READ_LOCAL)
		CHECK(first == fin->ph.header_len);
	if (fin->r == PROXY_READ_OK)
		check_rebuild(version, buf, fin);
}

static void
fuzz_raw(const uint8_t *data, size_t size)
{
	struct verdict	 v1, v2;
	uint8_t		*buf = malloc(size ? size : 1);

	CHECK(buf != NULL);
	memcpy(buf, data, size);
	check_reader(1, buf, size, &v1);
	check_reader(2, buf, size, &v2);
	/* the version is configured, never guessed: one of them refuses */
	if (size > 0)
		CHECK(v1.r == PROXY_READ_BAD || v2.r == PROXY_READ_BAD);
	free(buf);
}

struct cursor {
	const uint8_t	*p;
	size_t		 left;
};

static void
take(struct cursor *c, void *dst, size_t n)
{
	size_t	 k = n < c->left ? n : c->left;

	memset(dst, 0, n);
	memcpy(dst, c->p, k);
	c->p += k;
	c->left -= k;
}

static const char *
take_str(struct cursor *c, char *buf, size_t max)
{
	uint8_t	 l;

	take(c, &l, 1);
	if (l == 0)
		return NULL;
	if (l > max)
		l = (uint8_t)max;
	take(c, buf, l);
	buf[l] = '\0';
	return buf;
}

/* kind 0: AF_INET, 1: AF_INET6, 2: IPv4-mapped AF_INET6 */
static void
make_addr(int kind, const uint8_t raw[16], uint16_t port,
    struct sockaddr_storage *ss)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;

	memset(ss, 0, sizeof(*ss));
	if (kind == 0) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(port);
		memcpy(&sin.sin_addr, raw, 4);
		memcpy(ss, &sin, sizeof(sin));
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(port);
		memcpy(&sin6.sin6_addr, raw, 16);
		if (kind == 2)
			memcpy(&sin6.sin6_addr, mapped, 12);
		memcpy(ss, &sin6, sizeof(sin6));
	}
}

/* Build with the writer, read back with the client's bytes behind. */
static void
check_written(int version, const struct proxy_info *pi, const uint8_t *tls,
    size_t tls_len)
{
	struct norm	 s, d, s2, d2;
	struct verdict	 fin;
	uint8_t		 out[PROXY_HEADER_MAX];
	uint8_t		*buf;
	int		 n;

	n = version == 1 ? proxy_build_v1(pi, out, sizeof(out)) :
	    proxy_build_v2(pi, out, sizeof(out));
	normalise((const struct sockaddr_storage *)pi->src, &s);
	normalise((const struct sockaddr_storage *)pi->dst, &d);
	if (s.family != d.family) {
		CHECK(n == -1);
		return;
	}
	CHECK(n > 0);
	buf = malloc((size_t)n + tls_len);
	CHECK(buf != NULL);
	memcpy(buf, out, (size_t)n);
	memcpy(buf + n, tls, tls_len);
	check_reader(version, buf, (size_t)n + tls_len, &fin);
	CHECK(fin.r == PROXY_READ_OK);
	CHECK(fin.ph.header_len == (size_t)n);
	CHECK(memcmp(buf + n, tls, tls_len) == 0);
	normalise(&fin.ph.src, &s2);
	normalise(&fin.ph.dst, &d2);
	CHECK(norm_eq(&s, &s2) && norm_eq(&d, &d2));
	/* the writer unmaps: what comes back is never a mapped address */
	CHECK(!is_mapped(&fin.ph.src) && !is_mapped(&fin.ph.dst));
	free(buf);
}

static void
fuzz_written(const uint8_t *data, size_t size)
{
	struct cursor		 c = { data, size };
	struct sockaddr_storage	 ss, ds;
	struct proxy_info	 pi;
	uint8_t			 kinds, raw[2][16], pb[4];
	char			 str[4][PROXY_AUTHORITY_MAX + 1];

	take(&c, &kinds, 1);
	take(&c, raw, sizeof(raw));
	take(&c, pb, sizeof(pb));
	make_addr(kinds % 3, raw[0], (uint16_t)(pb[0] << 8 | pb[1]), &ss);
	make_addr(kinds / 3 % 3, raw[1], (uint16_t)(pb[2] << 8 | pb[3]), &ds);
	memset(&pi, 0, sizeof(pi));
	pi.src = (const struct sockaddr *)&ss;
	pi.dst = (const struct sockaddr *)&ds;
	pi.authority = take_str(&c, str[0], PROXY_AUTHORITY_MAX);
	pi.alpn = take_str(&c, str[1], PROXY_ALPN_MAX);
	pi.tls_version = take_str(&c, str[2], PROXY_TLS_STR_MAX);
	pi.cipher = take_str(&c, str[3], PROXY_TLS_STR_MAX);

	check_written(1, &pi, c.p, c.left);
	check_written(2, &pi, c.p, c.left);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_written(data + 1, size - 1);
	else
		fuzz_raw(data + 1, size - 1);
	return 0;
}
