/*
 * Fuzz target for funneld/proxy_protocol.c.  The input picks the address kinds,
 * addresses, ports, strings and a buffer size; the target builds v1 and v2
 * headers and checks them against the specification's invariants and
 * against what went in.  Any violation aborts.
 *
 * Input: kinds(1) flags(1) cap(1) src(16) dst(16) local(16) sport(2)
 * dport(2) lport(2) tport(2), then four length-prefixed strings (1 byte
 * length, 0..255, doubled when flags say so, to pass the bounds).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "proxy_protocol.h"
#include "fuzz.h"

static const uint8_t sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

struct cursor {
	const uint8_t	*p;
	size_t		 left;
};

/* Take n bytes, zero-padded when the input runs out. */
static void
take(struct cursor *c, void *dst, size_t n)
{
	size_t	 k = n < c->left ? n : c->left;

	memset(dst, 0, n);
	memcpy(dst, c->p, k);
	c->p += k;
	c->left -= k;
}

/* What an address means on the wire: family after unmapping, bytes, port. */
struct norm {
	int		family;		/* AF_INET, AF_INET6, or 0: not an IP */
	uint8_t		addr[16];
	uint16_t	port;
};

/* kind 0: AF_INET, 1: AF_INET6, 2: IPv4-mapped AF_INET6, 3: AF_UNIX, 4: zeroed */
static void
make_addr(int kind, const uint8_t raw[16], uint16_t port,
    struct sockaddr_storage *ss, struct norm *n)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;
	struct sockaddr_un	 sun;

	memset(ss, 0, sizeof(*ss));
	memset(n, 0, sizeof(*n));
	switch (kind) {
	case 0:
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(port);
		memcpy(&sin.sin_addr, raw, 4);
		memcpy(ss, &sin, sizeof(sin));
		n->family = AF_INET;
		memcpy(n->addr, raw, 4);
		n->port = port;
		break;
	case 1:
	case 2:
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(port);
		memcpy(&sin6.sin6_addr, raw, 16);
		if (kind == 2)
			memcpy(&sin6.sin6_addr, mapped, 12);
		memcpy(ss, &sin6, sizeof(sin6));
		if (memcmp(sin6.sin6_addr.s6_addr, mapped, 12) == 0) {
			n->family = AF_INET;
			memcpy(n->addr, sin6.sin6_addr.s6_addr + 12, 4);
		} else {
			n->family = AF_INET6;
			memcpy(n->addr, sin6.sin6_addr.s6_addr, 16);
		}
		n->port = port;
		break;
	case 3:
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, raw, 16);
		sun.sun_path[16] = '\0';
		memcpy(ss, &sun, sizeof(sun));
		break;
	default:
		break;
	}
}

static size_t
alen(int family)
{
	return family == AF_INET ? 4 : 16;
}

/* Split a v1 line back into its fields and compare with what went in. */
static void
check_v1(const uint8_t *out, int n, const struct norm *s, const struct norm *d)
{
	char		 line[PROXY_V1_MAX + 1], num[8], *tok[6], *p;
	uint8_t		 bin[16];
	int		 fam = s->family, i;

	CHECK(n >= 2 && n <= PROXY_V1_MAX);
	CHECK(out[n - 2] == '\r' && out[n - 1] == '\n');
	CHECK(memchr(out, '\0', (size_t)n) == NULL);
	CHECK(memchr(out, '\n', (size_t)n - 1) == NULL);
	CHECK(memchr(out, '\r', (size_t)n - 2) == NULL);
	memcpy(line, out, (size_t)n - 2);
	line[n - 2] = '\0';
	/* exactly six fields separated by single spaces */
	for (i = 0, p = line; i < 6; i++) {
		tok[i] = p;
		p = strchr(p, ' ');
		if (i < 5) {
			CHECK(p != NULL);
			*p++ = '\0';
		} else
			CHECK(p == NULL);
		CHECK(*tok[i] != '\0');
	}
	CHECK(strcmp(tok[0], "PROXY") == 0);
	CHECK(strcmp(tok[1], fam == AF_INET ? "TCP4" : "TCP6") == 0);
	CHECK(inet_pton(fam, tok[2], bin) == 1);
	CHECK(memcmp(bin, s->addr, alen(fam)) == 0);
	CHECK(inet_pton(fam, tok[3], bin) == 1);
	CHECK(memcmp(bin, d->addr, alen(fam)) == 0);
	/* ports in plain decimal: no sign, no leading zeros */
	snprintf(num, sizeof(num), "%u", (unsigned int)s->port);
	CHECK(strcmp(tok[4], num) == 0);
	snprintf(num, sizeof(num), "%u", (unsigned int)d->port);
	CHECK(strcmp(tok[5], num) == 0);
}

/* Walk one level of TLVs in [p, end); record the values of known types. */
struct tlvs {
	const uint8_t	*val[256];
	size_t		 len[256];
	int		 count[256];
	uint8_t		 order[16];
	int		 n;
};

static void
walk(const uint8_t *p, const uint8_t *end, struct tlvs *t)
{
	memset(t, 0, sizeof(*t));
	while (p < end) {
		size_t l;

		CHECK(end - p >= 3);
		l = (size_t)p[1] << 8 | p[2];
		CHECK((size_t)(end - p - 3) >= l);
		CHECK(t->n < (int)sizeof(t->order));
		t->order[t->n++] = p[0];
		t->val[p[0]] = p + 3;
		t->len[p[0]] = l;
		t->count[p[0]]++;
		p += 3 + l;
	}
	CHECK(p == end);
}

static void
check_str_tlv(const struct tlvs *t, int type, const char *want)
{
	size_t	 wl = want ? strlen(want) : 0;

	if (wl == 0) {
		CHECK(t->count[type] == 0);
		return;
	}
	CHECK(t->count[type] == 1);
	CHECK(t->len[type] == wl);
	CHECK(memcmp(t->val[type], want, wl) == 0);
}

static void
check_v2(const uint8_t *out, int n, const struct proxy_info *pi,
    const struct norm *s, const struct norm *d)
{
	struct tlvs	 top, sub;
	/* no source to tell: UNSPEC with no addresses, the TLVs all the same */
	size_t		 addr = s->family == 0 ? 0 : s->family == AF_INET ? 12 : 36;
	const uint8_t	*a = out + 16;
	int		 ssl;

	CHECK(n >= 16 && n <= PROXY_HEADER_MAX);
	CHECK(memcmp(out, sig, 12) == 0);
	CHECK(out[12] == 0x21);
	CHECK(out[13] == (s->family == 0 ? 0x00 : s->family == AF_INET ? 0x11 : 0x21));
	CHECK(((size_t)out[14] << 8 | out[15]) == (size_t)n - 16);
	CHECK((size_t)n >= 16 + addr);
	if (s->family != 0) {
		CHECK(memcmp(a, s->addr, alen(s->family)) == 0);
		CHECK(memcmp(a + alen(s->family), d->addr, alen(s->family)) == 0);
		a += 2 * alen(s->family);
		CHECK(((unsigned int)a[0] << 8 | a[1]) == s->port);
		CHECK(((unsigned int)a[2] << 8 | a[3]) == d->port);
	}

	walk(out + 16 + addr, out + n, &top);
	check_str_tlv(&top, 0x01, pi->alpn);
	check_str_tlv(&top, 0x02, pi->authority);
	ssl = (pi->tls_version && *pi->tls_version) ||
	    (pi->cipher && *pi->cipher);
	CHECK(top.count[0x20] == ssl);
	CHECK(top.n == top.count[0x01] + top.count[0x02] + top.count[0x20]);
	if (ssl) {
		const uint8_t *v = top.val[0x20];

		CHECK(top.len[0x20] >= 5);
		CHECK(v[0] == 0x01);
		CHECK(v[1] == 0 && v[2] == 0 && v[3] == 0 && v[4] == 0);
		walk(v + 5, v + top.len[0x20], &sub);
		check_str_tlv(&sub, 0x21, pi->tls_version);
		check_str_tlv(&sub, 0x23, pi->cipher);
		CHECK(sub.n == sub.count[0x21] + sub.count[0x23]);
	}
}

/* Build into a heap buffer of exactly cap bytes, so overruns are caught. */
static void
check_cap(int (*build)(const struct proxy_info *, uint8_t *, size_t),
    const struct proxy_info *pi, const uint8_t *full, int n, size_t cap)
{
	uint8_t	*buf = malloc(cap ? cap : 1);
	int	 m;

	CHECK(buf != NULL);
	memset(buf, 0xa5, cap);
	m = build(pi, buf, cap);
	if (n < 0 || (size_t)n > cap)
		CHECK(m == -1);
	else {
		CHECK(m == n);
		CHECK(memcmp(buf, full, (size_t)n) == 0);
	}
	if (m == -1)
		for (size_t i = 0; i < cap; i++)
			CHECK(buf[i] == 0xa5);
	free(buf);
}

static const char *
take_str(struct cursor *c, char *buf, int doubled, int present)
{
	uint8_t	 l;
	size_t	 len;

	take(c, &l, 1);
	len = doubled ? (size_t)l * 2 : l;
	take(c, buf, len);
	buf[len] = '\0';
	return present ? buf : NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor		 c = { data, size };
	struct sockaddr_storage	 ss, ds, ls, dest;
	struct norm		 sn, dn, ln, destn;
	struct proxy_info	 pi;
	uint8_t			 kinds, flags, capb, raw[3][16], pb[8];
	uint16_t		 tport;
	char			 str[4][2 * 255 + 1];
	uint8_t			 out1[PROXY_HEADER_MAX], out2[PROXY_HEADER_MAX];
	int			 n1, n2, unknown, match, fits;
	size_t			 cap;

	take(&c, &kinds, 1);
	take(&c, &flags, 1);
	take(&c, &capb, 1);
	take(&c, raw, sizeof(raw));
	take(&c, pb, sizeof(pb));
	tport = (uint16_t)(pb[6] << 8 | pb[7]);

	make_addr(kinds % 5, raw[0], (uint16_t)(pb[0] << 8 | pb[1]), &ss, &sn);
	make_addr(kinds / 5 % 5, raw[1], (uint16_t)(pb[2] << 8 | pb[3]), &ds, &dn);
	make_addr(kinds / 25 % 5, raw[2], (uint16_t)(pb[4] << 8 | pb[5]), &ls, &ln);

	memset(&pi, 0, sizeof(pi));
	pi.src = (const struct sockaddr *)&ss;
	pi.dst = (const struct sockaddr *)&ds;
	pi.authority = take_str(&c, str[0], flags & 0x10, flags & 0x01);
	pi.alpn = take_str(&c, str[1], flags & 0x20, flags & 0x02);
	pi.tls_version = take_str(&c, str[2], flags & 0x40, flags & 0x04);
	pi.cipher = take_str(&c, str[3], flags & 0x80, flags & 0x08);
	/* every size up to 127, then steps of 8 up to 1008, or the full size */
	if (capb == 0xff)
		cap = PROXY_HEADER_MAX;
	else if (capb < 0x80)
		cap = capb;
	else
		cap = (size_t)(capb - 0x80) * 8;

	/* a source of family AF_UNSPEC: "PROXY UNKNOWN" (v1), UNSPEC (v2), whatever dst is */
	unknown = ss.ss_family == AF_UNSPEC;
	match = unknown || (sn.family != 0 && sn.family == dn.family);
	fits = (!pi.authority || strlen(pi.authority) <= PROXY_AUTHORITY_MAX) &&
	    (!pi.alpn || strlen(pi.alpn) <= PROXY_ALPN_MAX) &&
	    (!pi.tls_version || strlen(pi.tls_version) <= PROXY_TLS_STR_MAX) &&
	    (!pi.cipher || strlen(pi.cipher) <= PROXY_TLS_STR_MAX);

	/* v1 */
	n1 = proxy_build_v1(&pi, out1, sizeof(out1));
	CHECK(match ? n1 > 0 : n1 == -1);
	if (n1 > 0 && unknown)
		CHECK(n1 == 15 && memcmp(out1, "PROXY UNKNOWN\r\n", 15) == 0);
	else if (n1 > 0)
		check_v1(out1, n1, &sn, &dn);
	check_cap(proxy_build_v1, &pi, out1, n1, cap);
	if (n1 > 0) {
		check_cap(proxy_build_v1, &pi, out1, n1, (size_t)n1 - 1);
		check_cap(proxy_build_v1, &pi, out1, n1, (size_t)n1);
	}

	/* v2 */
	n2 = proxy_build_v2(&pi, out2, sizeof(out2));
	CHECK(match && fits ? n2 > 0 : n2 == -1);
	if (n2 > 0)
		check_v2(out2, n2, &pi, &sn, &dn);
	check_cap(proxy_build_v2, &pi, out2, n2, cap);
	if (n2 > 0) {
		check_cap(proxy_build_v2, &pi, out2, n2, (size_t)n2 - 1);
		check_cap(proxy_build_v2, &pi, out2, n2, (size_t)n2);
	}

	/* proxy_destination, and its result used as dst */
	proxy_destination(pi.src, (const struct sockaddr *)&ls, tport, &dest);
	if (sn.family == 0) {
		CHECK(dest.ss_family == AF_UNSPEC);
		return 0;
	}
	CHECK(dest.ss_family == sn.family);
	make_addr(sn.family == AF_INET ? 0 : 1, sn.family == AF_INET ?
	    (const uint8_t *)&((struct sockaddr_in *)&dest)->sin_addr :
	    ((struct sockaddr_in6 *)&dest)->sin6_addr.s6_addr, 0, &ds, &destn);
	CHECK(destn.family == sn.family);
	CHECK(ntohs(sn.family == AF_INET ?
	    ((struct sockaddr_in *)&dest)->sin_port :
	    ((struct sockaddr_in6 *)&dest)->sin6_port) == tport);
	if (ln.family == sn.family)
		CHECK(memcmp(destn.addr, ln.addr, 16) == 0);
	else {
		static const uint8_t zero[16];

		CHECK(memcmp(destn.addr, zero, 16) == 0);
	}
	pi.dst = (const struct sockaddr *)&dest;
	dn = destn;
	dn.port = tport;
	n1 = proxy_build_v1(&pi, out1, sizeof(out1));
	CHECK(n1 > 0);
	check_v1(out1, n1, &sn, &dn);
	n2 = proxy_build_v2(&pi, out2, sizeof(out2));
	CHECK(fits ? n2 > 0 : n2 == -1);
	if (n2 > 0)
		check_v2(out2, n2, &pi, &sn, &dn);
	return 0;
}
