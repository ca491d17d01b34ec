/*
 * PROXY protocol, v1 (text) and v2 (binary), after HAProxy's
 * doc/proxy-protocol.txt: the header written to the backend, and the strict
 * reader for [listener] sections.  Pure functions: no allocation, no I/O, no
 * global state.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "proxy_protocol.h"

/* proxy-protocol.txt section 2.2 */
static const uint8_t pp2_signature[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
#define PP2_HDR_LEN		16
#define PP2_VERSION_PROXY	0x21	/* version 2, command PROXY */
#define PP2_FAM_UNSPEC		0x00	/* no address */
#define PP2_FAM_TCP4		0x11	/* AF_INET, SOCK_STREAM */
#define PP2_FAM_TCP6		0x21	/* AF_INET6, SOCK_STREAM */
#define PP2_ADDR_LEN_TCP4	12
#define PP2_ADDR_LEN_TCP6	36
#define PP2_TLV_HDR_LEN		3
#define PP2_TYPE_ALPN		0x01
#define PP2_TYPE_AUTHORITY	0x02
#define PP2_TYPE_SSL		0x20
#define PP2_SUBTYPE_SSL_VERSION	0x21
#define PP2_SUBTYPE_SSL_CIPHER	0x23
#define PP2_CLIENT_SSL		0x01
#define PP2_SSL_FIXED_LEN	5	/* uint8_t client, uint32_t verify */

_Static_assert(PP2_HDR_LEN + PP2_ADDR_LEN_TCP6 +
    2 * PP2_TLV_HDR_LEN + PROXY_AUTHORITY_MAX + PROXY_ALPN_MAX +
    PP2_TLV_HDR_LEN + PP2_SSL_FIXED_LEN + 2 * (PP2_TLV_HDR_LEN + PROXY_TLS_STR_MAX) <=
    PROXY_HEADER_MAX, "PROXY_HEADER_MAX too small for the longest v2 header");
_Static_assert(PROXY_V1_MAX <= PROXY_HEADER_MAX, "PROXY_HEADER_MAX too small for v1");

/* An address as it goes on the wire: addr.c's rule (IPv4-mapped is IPv4). */
#define pp_addr ip_addr

static int
pp_addr_get(const struct sockaddr *sa, struct pp_addr *pa)
{
	return addr_ip_from_sockaddr(sa, pa);
}

/* Both addresses, of one family once IPv4-mapped ones are unmapped. */
static int
pp_addr_pair(const struct proxy_info *pi, struct pp_addr *src,
    struct pp_addr *dst)
{
	if (pi == NULL)
		return -1;
	if (pp_addr_get(pi->src, src) == -1 || pp_addr_get(pi->dst, dst) == -1)
		return -1;
	if (src->family != dst->family)
		return -1;
	return 0;
}

void
proxy_destination(const struct sockaddr *src, const struct sockaddr *local,
    uint16_t target_port, struct sockaddr_storage *out)
{
	struct pp_addr		 s, l;
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;
	int			 have_local;

	memset(out, 0, sizeof(*out));
	out->ss_family = AF_UNSPEC;
	if (pp_addr_get(src, &s) == -1)
		return;
	have_local = pp_addr_get(local, &l) == 0 && l.family == s.family;

	if (s.family == AF_INET) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(target_port);
		if (have_local)
			memcpy(&sin.sin_addr, l.a, 4);
		else
			sin.sin_addr.s_addr = htonl(INADDR_ANY);
		memcpy(out, &sin, sizeof(sin));
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(target_port);
		if (have_local)
			memcpy(&sin6.sin6_addr, l.a, 16);
		else
			sin6.sin6_addr = in6addr_any;
		memcpy(out, &sin6, sizeof(sin6));
	}
}

static unsigned int
pp_port(const struct pp_addr *pa)
{
	return pa->port;
}

/* No client address to tell (a unix: listener without a PROXY header of its own). */
static bool
pp_unknown(const struct proxy_info *pi)
{
	return pi != NULL && (pi->src == NULL || pi->src->sa_family == AF_UNSPEC);
}

int
proxy_build_v1(const struct proxy_info *pi, uint8_t *out, size_t cap)
{
	struct pp_addr	 src, dst;
	char		 sbuf[INET6_ADDRSTRLEN], dbuf[INET6_ADDRSTRLEN];
	char		 line[PROXY_V1_MAX + 1];
	int		 n;

	if (pp_unknown(pi)) {
		static const char unknown[] = "PROXY UNKNOWN\r\n";
		if (cap < sizeof(unknown) - 1)
			return -1;
		memcpy(out, unknown, sizeof(unknown) - 1);
		return (int)(sizeof(unknown) - 1);
	}
	if (pp_addr_pair(pi, &src, &dst) == -1)
		return -1;
	if (inet_ntop(src.family, src.a, sbuf, sizeof(sbuf)) == NULL ||
	    inet_ntop(dst.family, dst.a, dbuf, sizeof(dbuf)) == NULL)
		return -1;
	n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
	    src.family == AF_INET ? "TCP4" : "TCP6", sbuf, dbuf,
	    pp_port(&src), pp_port(&dst));
	if (n < 0 || (size_t)n >= sizeof(line) || (size_t)n > cap)
		return -1;
	memcpy(out, line, (size_t)n);
	return n;
}

/* strlen() bounded by max; max + 1 when longer.  NULL is empty. */
static size_t
pp_strlen(const char *s, size_t max)
{
	return s == NULL ? 0 : strnlen(s, max + 1);
}

static uint8_t *
pp_put_tlv_hdr(uint8_t *p, uint8_t type, size_t len)
{
	*p++ = type;
	*p++ = (uint8_t)(len >> 8);
	*p++ = (uint8_t)len;
	return p;
}

static uint8_t *
pp_put_tlv(uint8_t *p, uint8_t type, const char *val, size_t len)
{
	p = pp_put_tlv_hdr(p, type, len);
	memcpy(p, val, len);
	return p + len;
}

int
proxy_build_v2(const struct proxy_info *pi, uint8_t *out, size_t cap)
{
	struct pp_addr	 src, dst;
	size_t		 alpn_len, auth_len, ver_len, ciph_len;
	size_t		 addr_len, ssl_len = 0, total;
	uint8_t		*p;

	if (pp_unknown(pi))
		src.family = AF_UNSPEC;
	else if (pp_addr_pair(pi, &src, &dst) == -1)
		return -1;

	alpn_len = pp_strlen(pi->alpn, PROXY_ALPN_MAX);
	auth_len = pp_strlen(pi->authority, PROXY_AUTHORITY_MAX);
	ver_len = pp_strlen(pi->tls_version, PROXY_TLS_STR_MAX);
	ciph_len = pp_strlen(pi->cipher, PROXY_TLS_STR_MAX);
	if (alpn_len > PROXY_ALPN_MAX || auth_len > PROXY_AUTHORITY_MAX ||
	    ver_len > PROXY_TLS_STR_MAX || ciph_len > PROXY_TLS_STR_MAX)
		return -1;

	addr_len = src.family == AF_UNSPEC ? 0 : src.family == AF_INET ? PP2_ADDR_LEN_TCP4 : PP2_ADDR_LEN_TCP6;
	total = PP2_HDR_LEN + addr_len;
	if (alpn_len > 0)
		total += PP2_TLV_HDR_LEN + alpn_len;
	if (auth_len > 0)
		total += PP2_TLV_HDR_LEN + auth_len;
	if (ver_len > 0 || ciph_len > 0) {
		ssl_len = PP2_SSL_FIXED_LEN;
		if (ver_len > 0)
			ssl_len += PP2_TLV_HDR_LEN + ver_len;
		if (ciph_len > 0)
			ssl_len += PP2_TLV_HDR_LEN + ciph_len;
		total += PP2_TLV_HDR_LEN + ssl_len;
	}
	/* The bounds above keep total <= PROXY_HEADER_MAX < 65535 + 16. */
	if (total > cap)
		return -1;

	p = out;
	memcpy(p, pp2_signature, sizeof(pp2_signature));
	p += sizeof(pp2_signature);
	*p++ = PP2_VERSION_PROXY;
	*p++ = src.family == AF_UNSPEC ? PP2_FAM_UNSPEC : src.family == AF_INET ? PP2_FAM_TCP4 : PP2_FAM_TCP6;
	*p++ = (uint8_t)((total - PP2_HDR_LEN) >> 8);
	*p++ = (uint8_t)(total - PP2_HDR_LEN);

	if (src.family != AF_UNSPEC) {
		size_t alen = src.family == AF_INET ? 4 : 16;
		memcpy(p, src.a, alen);
		memcpy(p + alen, dst.a, alen);
		p += 2 * alen;
		*p++ = (uint8_t)(src.port >> 8);
		*p++ = (uint8_t)src.port;
		*p++ = (uint8_t)(dst.port >> 8);
		*p++ = (uint8_t)dst.port;
	}

	if (alpn_len > 0)
		p = pp_put_tlv(p, PP2_TYPE_ALPN, pi->alpn, alpn_len);
	if (auth_len > 0)
		p = pp_put_tlv(p, PP2_TYPE_AUTHORITY, pi->authority, auth_len);
	if (ssl_len > 0) {
		p = pp_put_tlv_hdr(p, PP2_TYPE_SSL, ssl_len);
		/*
		 * client: the connection is TLS; no client certificate was
		 * asked for, so neither PP2_CLIENT_CERT_CONN nor _SESS.
		 * verify: 0, as HAProxy sends it when no certificate was
		 * presented; receivers read it only with a CERT flag set.
		 */
		*p++ = PP2_CLIENT_SSL;
		memset(p, 0, 4);
		p += 4;
		if (ver_len > 0)
			p = pp_put_tlv(p, PP2_SUBTYPE_SSL_VERSION,
			    pi->tls_version, ver_len);
		if (ciph_len > 0)
			p = pp_put_tlv(p, PP2_SUBTYPE_SSL_CIPHER, pi->cipher,
			    ciph_len);
	}
	return (int)(p - out);
}

/* ---- Reading ---- */

#define PP2_VERSION_MASK	0xf0
#define PP2_VERSION_2		0x20
#define PP2_CMD_MASK		0x0f
#define PP2_CMD_LOCAL		0x00
#define PP2_CMD_PROXY		0x01
#define PP2_FAM_UDP4		0x12
#define PP2_FAM_UDP6		0x22
#define PP2_FAM_UNIX_STREAM	0x31
#define PP2_FAM_UNIX_DGRAM	0x32
#define PP2_TYPE_CRC32C		0x03
#define PP2_CRC32C_LEN		4
#define V1_ADDR4_MAX		15	/* 255.255.255.255 */
#define V1_ADDR6_MAX		45	/* INET6_ADDRSTRLEN - 1 */
#define V1_PORT_MAX		5

_Static_assert(PROXY_READ_MAX >= PROXY_HEADER_MAX,
    "the reader must take every header the writer builds");
_Static_assert(PROXY_READ_MAX >= PP2_HDR_LEN + PP2_ADDR_LEN_TCP6,
    "PROXY_READ_MAX too small for a v2 TCP6 header");

static enum proxy_read_result
pp_verdict(enum proxy_read_result r, const char *reason, const char **why)
{
	if (why != NULL)
		*why = reason;
	return r;
}

#define INCOMPLETE()	pp_verdict(PROXY_READ_INCOMPLETE, "truncated", why)
#define BAD(reason)	pp_verdict(PROXY_READ_BAD, (reason), why)

/* An AF_INET or AF_INET6 socket address from network-order bytes. */
static void
pp_sockaddr(int family, const uint8_t *addr, const uint8_t *port,
    struct sockaddr_storage *ss)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		memcpy(&sin.sin_addr, addr, 4);
		memcpy(&sin.sin_port, port, 2);
		memcpy(ss, &sin, sizeof(sin));
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		memcpy(&sin6.sin6_addr, addr, 16);
		memcpy(&sin6.sin6_port, port, 2);
		memcpy(ss, &sin6, sizeof(sin6));
	}
}

/*
 * v1 fields, checked as they arrive.  Each checker says whether s[0..n) can
 * still begin a valid field (complete == false) or is one (complete ==
 * true), so a bad byte is refused where it stands.
 */

/* Four decimal numbers 0..255 joined by single dots, no leading zeros. */
static bool
v1_addr4_ok(const char *s, size_t n, bool complete)
{
	unsigned int	 dots = 0, digits = 0, val = 0;

	if (n > V1_ADDR4_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (digits == 0 || ++dots > 3)
				return false;
			digits = val = 0;
		} else if (s[i] >= '0' && s[i] <= '9') {
			if (digits == 1 && val == 0)
				return false;
			val = val * 10 + (unsigned int)(s[i] - '0');
			if (++digits > 3 || val > 255)
				return false;
		} else
			return false;
	}
	return !complete || (dots == 3 && digits > 0);
}

/* Hex digits, colons and dots, then whatever inet_pton(AF_INET6) takes. */
static bool
v1_addr6_ok(const char *s, size_t n, bool complete)
{
	struct in6_addr	 a;

	if (n > V1_ADDR6_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		    (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
			return false;
	}
	/* s is NUL-terminated by the caller when complete */
	return !complete || inet_pton(AF_INET6, s, &a) == 1;
}

/* 0..65535 in decimal, no sign, no leading zero. */
static bool
v1_port_ok(const char *s, size_t n, bool complete)
{
	unsigned long	 val = 0;

	if (n > V1_PORT_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || (i == 1 && s[0] == '0'))
			return false;
		val = val * 10 + (unsigned long)(s[i] - '0');
	}
	return val <= 65535 && (!complete || n > 0);
}

struct v1_cursor {
	const uint8_t	*buf;
	size_t		 len;
	size_t		 pos;
};

/*
 * The next byte of the line: 1 and *c, 0 when it has not arrived yet, -1
 * when it would be past PROXY_V1_MAX (the line is too long).
 */
static int
v1_next(struct v1_cursor *cur, uint8_t *c)
{
	if (cur->pos >= PROXY_V1_MAX)
		return -1;
	if (cur->pos >= cur->len)
		return 0;
	*c = cur->buf[cur->pos++];
	return 1;
}

/*
 * One field ended by `end` (' ', or '\r' for the last one), into s
 * (NUL-terminated, cap > the field's longest form).
 */
static enum proxy_read_result
v1_field(struct v1_cursor *cur, uint8_t end,
    bool (*ok)(const char *, size_t, bool), const char *bad, char *s,
    size_t cap, const char **why)
{
	size_t		 n = 0;
	uint8_t		 c;
	int		 r;

	for (;;) {
		if ((r = v1_next(cur, &c)) <= 0)
			return r == 0 ? INCOMPLETE() : BAD("v1 line too long");
		s[n] = '\0';
		if (c == end)
			return ok(s, n, true) ? PROXY_READ_OK : BAD(bad);
		if (c == '\r' || c == '\n')
			return BAD(end == '\r' ? "v1 line not ended by CRLF" :
			    "v1 line ends early");
		if (n + 1 >= cap)
			return BAD(bad);
		s[n++] = (char)c;
		if (!ok(s, n, false))
			return BAD(bad);
	}
}

/* The rest of a v1 line after "\r": "\n". */
static enum proxy_read_result
v1_lf(struct v1_cursor *cur, const char **why)
{
	uint8_t		 c;
	int		 r;

	if ((r = v1_next(cur, &c)) <= 0)
		return r == 0 ? INCOMPLETE() : BAD("v1 line too long");
	return c == '\n' ? PROXY_READ_OK : BAD("v1 line not ended by CRLF");
}

enum v1_proto { V1_TCP4, V1_TCP6, V1_UNKNOWN_SP, V1_UNKNOWN_CR, V1_NPROTO };

/* What may follow "PROXY ", with the byte that ends it. */
static const char *const v1_protos[V1_NPROTO] = {
	[V1_TCP4] = "TCP4 ",
	[V1_TCP6] = "TCP6 ",
	[V1_UNKNOWN_SP] = "UNKNOWN ",
	[V1_UNKNOWN_CR] = "UNKNOWN\r",
};

static uint16_t
v1_port(const char *s)
{
	unsigned int	 val = 0;

	for (; *s != '\0'; s++)
		val = val * 10 + (unsigned int)(*s - '0');
	return (uint16_t)val;
}

enum proxy_read_result
proxy_read_v1(const uint8_t *buf, size_t len, struct proxy_header *out,
    const char **why)
{
	static const char	 sig[] = "PROXY ";
	struct v1_cursor	 cur = { buf, len, 0 };
	char			 src[V1_ADDR6_MAX + 1], dst[V1_ADDR6_MAX + 1];
	char			 sport[V1_PORT_MAX + 1], dport[V1_PORT_MAX + 1];
	uint8_t			 addr[2][16], port[2][2], c;
	unsigned int		 alive = (1u << V1_NPROTO) - 1;
	enum proxy_read_result	 r;
	bool			 (*addr_ok)(const char *, size_t, bool);
	size_t			 k, acap;
	int			 i, proto = -1, family;

	memset(out, 0, sizeof(*out));
	for (k = 0; k < sizeof(sig) - 1; k++) {
		if (k >= len)
			return INCOMPLETE();
		if (buf[k] != (uint8_t)sig[k])
			return BAD(k == 0 && buf[0] == pp2_signature[0] ?
			    "v2 header, v1 expected" : "bad v1 signature");
	}
	cur.pos = k;

	/* The protocol and the byte after it, matched as bytes arrive. */
	for (k = 0; proto == -1; k++) {
		if (v1_next(&cur, &c) == 0)
			return INCOMPLETE();
		for (i = 0; i < V1_NPROTO; i++) {
			if ((alive & (1u << i)) == 0)
				continue;
			if ((uint8_t)v1_protos[i][k] != c)
				alive &= ~(1u << i);
			else if (v1_protos[i][k + 1] == '\0')
				proto = i;
		}
		if (alive == 0)
			return BAD("bad v1 protocol");
	}

	switch (proto) {
	case V1_UNKNOWN_CR:
		if ((r = v1_lf(&cur, why)) != PROXY_READ_OK)
			return r;
		out->header_len = cur.pos;
		return pp_verdict(PROXY_READ_LOCAL, "v1 UNKNOWN", why);
	case V1_UNKNOWN_SP:
		/* Anything up to the CRLF, ignored as the specification says. */
		for (;;) {
			int n = v1_next(&cur, &c);

			if (n <= 0)
				return n == 0 ? INCOMPLETE() :
				    BAD("v1 line too long");
			if (c == '\n')
				return BAD("v1 line not ended by CRLF");
			if (c == '\r')
				break;
		}
		if ((r = v1_lf(&cur, why)) != PROXY_READ_OK)
			return r;
		out->header_len = cur.pos;
		return pp_verdict(PROXY_READ_LOCAL, "v1 UNKNOWN", why);
	case V1_TCP4:
		family = AF_INET;
		addr_ok = v1_addr4_ok;
		acap = V1_ADDR4_MAX + 1;
		break;
	default:
		family = AF_INET6;
		addr_ok = v1_addr6_ok;
		acap = V1_ADDR6_MAX + 1;
		break;
	}

	if ((r = v1_field(&cur, ' ', addr_ok, "bad v1 source address", src,
	    acap, why)) != PROXY_READ_OK ||
	    (r = v1_field(&cur, ' ', addr_ok, "bad v1 destination address",
	    dst, acap, why)) != PROXY_READ_OK ||
	    (r = v1_field(&cur, ' ', v1_port_ok, "bad v1 source port", sport,
	    sizeof(sport), why)) != PROXY_READ_OK ||
	    (r = v1_field(&cur, '\r', v1_port_ok, "bad v1 destination port",
	    dport, sizeof(dport), why)) != PROXY_READ_OK ||
	    (r = v1_lf(&cur, why)) != PROXY_READ_OK)
		return r;

	/* Checked above: inet_pton takes both forms. */
	if (inet_pton(family, src, addr[0]) != 1 ||
	    inet_pton(family, dst, addr[1]) != 1)
		return BAD(family == AF_INET ? "bad v1 source address" :
		    "bad v1 destination address");
	port[0][0] = (uint8_t)(v1_port(sport) >> 8);
	port[0][1] = (uint8_t)v1_port(sport);
	port[1][0] = (uint8_t)(v1_port(dport) >> 8);
	port[1][1] = (uint8_t)v1_port(dport);
	pp_sockaddr(family, addr[0], port[0], &out->src);
	pp_sockaddr(family, addr[1], port[1], &out->dst);
	out->header_len = cur.pos;
	return pp_verdict(PROXY_READ_OK, family == AF_INET ? "v1 TCP4" :
	    "v1 TCP6", why);
}

/* CRC-32C (Castagnoli, reflected), one bit at a time: headers are short. */
static uint32_t
pp_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
	while (n-- > 0) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
	}
	return crc;
}

/* A PP2_TYPE_CRC32C value at buf[at..at+4): the header's CRC with it zeroed. */
static bool
pp2_crc_ok(const uint8_t *buf, size_t total, size_t at)
{
	static const uint8_t	 zero[PP2_CRC32C_LEN];
	uint32_t		 crc = 0xffffffffu, want;

	crc = pp_crc32c(crc, buf, at);
	crc = pp_crc32c(crc, zero, sizeof(zero));
	crc = pp_crc32c(crc, buf + at + PP2_CRC32C_LEN,
	    total - at - PP2_CRC32C_LEN);
	want = (uint32_t)buf[at] << 24 | (uint32_t)buf[at + 1] << 16 |
	    (uint32_t)buf[at + 2] << 8 | buf[at + 3];
	return (crc ^ 0xffffffffu) == want;
}

enum proxy_read_result
proxy_read_v2(const uint8_t *buf, size_t len, struct proxy_header *out,
    const char **why)
{
	size_t		 i, total, addr_len = 0, p, tlv_len, crc_at = 0;
	uint8_t		 cmd;
	int		 family = AF_UNSPEC;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < sizeof(pp2_signature); i++) {
		if (i >= len)
			return INCOMPLETE();
		if (buf[i] != pp2_signature[i])
			return BAD(i == 0 && buf[0] == 'P' ?
			    "v1 header, v2 expected" : "bad v2 signature");
	}

	if (len <= 12)
		return INCOMPLETE();
	if ((buf[12] & PP2_VERSION_MASK) != PP2_VERSION_2)
		return BAD("bad v2 version");
	cmd = buf[12] & PP2_CMD_MASK;
	if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY)
		return BAD("bad v2 command");

	/* LOCAL ignores the family, but it must still be one that exists. */
	if (len <= 13)
		return INCOMPLETE();
	switch (buf[13]) {
	case PP2_FAM_TCP4:
		family = AF_INET;
		addr_len = PP2_ADDR_LEN_TCP4;
		break;
	case PP2_FAM_TCP6:
		family = AF_INET6;
		addr_len = PP2_ADDR_LEN_TCP6;
		break;
	case PP2_FAM_UNSPEC:
		if (cmd == PP2_CMD_PROXY)
			return BAD("v2 PROXY with AF_UNSPEC");
		break;
	case PP2_FAM_UDP4:
	case PP2_FAM_UDP6:
		if (cmd == PP2_CMD_PROXY)
			return BAD("v2 UDP not supported");
		break;
	case PP2_FAM_UNIX_STREAM:
	case PP2_FAM_UNIX_DGRAM:
		if (cmd == PP2_CMD_PROXY)
			return BAD("v2 AF_UNIX not supported");
		break;
	default:
		return BAD("bad v2 family");
	}

	if (len < PP2_HDR_LEN)
		return INCOMPLETE();
	total = PP2_HDR_LEN + ((size_t)buf[14] << 8 | buf[15]);
	if (total > PROXY_READ_MAX)
		return BAD("v2 header oversize");
	if (cmd == PP2_CMD_LOCAL) {
		if (len < total)
			return INCOMPLETE();
		out->header_len = total;
		return pp_verdict(PROXY_READ_LOCAL, "v2 LOCAL", why);
	}
	if (total < PP2_HDR_LEN + addr_len)
		return BAD("v2 address block too short");

	/* TLVs, each checked once its type and length are in. */
	for (p = PP2_HDR_LEN + addr_len; p < total; p += PP2_TLV_HDR_LEN + tlv_len) {
		if (total - p < PP2_TLV_HDR_LEN)
			return BAD("v2 TLV truncated");
		if (len < p + PP2_TLV_HDR_LEN)
			return INCOMPLETE();
		tlv_len = (size_t)buf[p + 1] << 8 | buf[p + 2];
		if (tlv_len > total - p - PP2_TLV_HDR_LEN)
			return BAD("v2 TLV overruns header");
		if (buf[p] == PP2_TYPE_CRC32C) {
			if (tlv_len != PP2_CRC32C_LEN || crc_at != 0)
				return BAD("bad v2 CRC32C TLV");
			crc_at = p + PP2_TLV_HDR_LEN;
		}
	}
	if (len < total)
		return INCOMPLETE();
	if (crc_at != 0 && !pp2_crc_ok(buf, total, crc_at))
		return BAD("v2 CRC32C mismatch");

	if (family == AF_INET) {
		pp_sockaddr(AF_INET, buf + 16, buf + 24, &out->src);
		pp_sockaddr(AF_INET, buf + 20, buf + 26, &out->dst);
	} else {
		pp_sockaddr(AF_INET6, buf + 16, buf + 48, &out->src);
		pp_sockaddr(AF_INET6, buf + 32, buf + 50, &out->dst);
	}
	out->header_len = total;
	return pp_verdict(PROXY_READ_OK, family == AF_INET ? "v2 TCP4" :
	    "v2 TCP6", why);
}
