/*
 * PROXY protocol header to the backend, v1 (text) and v2 (binary), after
 * HAProxy's doc/proxy-protocol.txt.  Pure functions: no allocation, no I/O,
 * no global state.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy_protocol.h"

/* proxy-protocol.txt section 2.2 */
static const uint8_t pp2_signature[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
#define PP2_HDR_LEN		16
#define PP2_VERSION_PROXY	0x21	/* version 2, command PROXY */
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

/* An address reduced to what goes on the wire. */
struct pp_addr {
	int		family;		/* AF_INET or AF_INET6 */
	uint8_t		addr[16];	/* network order; 4 bytes used for AF_INET */
	uint8_t		port[2];	/* network order */
};

static const uint8_t v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

/*
 * Read an AF_INET or AF_INET6 socket address, an IPv4-mapped IPv6 address
 * becoming AF_INET.  Returns -1 for anything else.
 */
static int
pp_addr_get(const struct sockaddr *sa, struct pp_addr *pa)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;

	memset(pa, 0, sizeof(*pa));
	if (sa == NULL)
		return -1;
	switch (sa->sa_family) {
	case AF_INET:
		memcpy(&sin, sa, sizeof(sin));
		pa->family = AF_INET;
		memcpy(pa->addr, &sin.sin_addr, 4);
		memcpy(pa->port, &sin.sin_port, 2);
		return 0;
	case AF_INET6:
		memcpy(&sin6, sa, sizeof(sin6));
		memcpy(pa->port, &sin6.sin6_port, 2);
		if (memcmp(sin6.sin6_addr.s6_addr, v4mapped_prefix,
		    sizeof(v4mapped_prefix)) == 0) {
			pa->family = AF_INET;
			memcpy(pa->addr, sin6.sin6_addr.s6_addr + 12, 4);
		} else {
			pa->family = AF_INET6;
			memcpy(pa->addr, sin6.sin6_addr.s6_addr, 16);
		}
		return 0;
	default:
		return -1;
	}
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
			memcpy(&sin.sin_addr, l.addr, 4);
		else
			sin.sin_addr.s_addr = htonl(INADDR_ANY);
		memcpy(out, &sin, sizeof(sin));
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(target_port);
		if (have_local)
			memcpy(&sin6.sin6_addr, l.addr, 16);
		else
			sin6.sin6_addr = in6addr_any;
		memcpy(out, &sin6, sizeof(sin6));
	}
}

static unsigned int
pp_port(const struct pp_addr *pa)
{
	return ((unsigned int)pa->port[0] << 8) | pa->port[1];
}

int
proxy_build_v1(const struct proxy_info *pi, uint8_t *out, size_t cap)
{
	struct pp_addr	 src, dst;
	char		 sbuf[INET6_ADDRSTRLEN], dbuf[INET6_ADDRSTRLEN];
	char		 line[PROXY_V1_MAX + 1];
	int		 n;

	if (pp_addr_pair(pi, &src, &dst) == -1)
		return -1;
	if (inet_ntop(src.family, src.addr, sbuf, sizeof(sbuf)) == NULL ||
	    inet_ntop(dst.family, dst.addr, dbuf, sizeof(dbuf)) == NULL)
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

	if (pp_addr_pair(pi, &src, &dst) == -1)
		return -1;

	alpn_len = pp_strlen(pi->alpn, PROXY_ALPN_MAX);
	auth_len = pp_strlen(pi->authority, PROXY_AUTHORITY_MAX);
	ver_len = pp_strlen(pi->tls_version, PROXY_TLS_STR_MAX);
	ciph_len = pp_strlen(pi->cipher, PROXY_TLS_STR_MAX);
	if (alpn_len > PROXY_ALPN_MAX || auth_len > PROXY_AUTHORITY_MAX ||
	    ver_len > PROXY_TLS_STR_MAX || ciph_len > PROXY_TLS_STR_MAX)
		return -1;

	addr_len = src.family == AF_INET ? PP2_ADDR_LEN_TCP4 : PP2_ADDR_LEN_TCP6;
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
	*p++ = src.family == AF_INET ? PP2_FAM_TCP4 : PP2_FAM_TCP6;
	*p++ = (uint8_t)((total - PP2_HDR_LEN) >> 8);
	*p++ = (uint8_t)(total - PP2_HDR_LEN);

	if (src.family == AF_INET) {
		memcpy(p, src.addr, 4);
		memcpy(p + 4, dst.addr, 4);
		p += 8;
	} else {
		memcpy(p, src.addr, 16);
		memcpy(p + 16, dst.addr, 16);
		p += 32;
	}
	memcpy(p, src.port, 2);
	memcpy(p + 2, dst.port, 2);
	p += 4;

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
