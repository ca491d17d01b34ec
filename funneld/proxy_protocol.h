/* PROXY protocol v1/v2 header to the backend (HAProxy's specification).  Pure. */
#ifndef FUNNELD_PROXY_PROTOCOL_H
#define FUNNELD_PROXY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_HEADER_MAX 1024

/*
 * Longest strings proxy_build_v2() accepts (longer ones make it return -1,
 * never a truncated TLV).  With these bounds PROXY_HEADER_MAX always holds a
 * v2 header: 16 + 36 + (3 + 255) * 2 + 3 + 5 + (3 + 64) * 2 = 710 bytes.
 */
#define PROXY_AUTHORITY_MAX 255         /* a DNS name / SNI */
#define PROXY_ALPN_MAX 255              /* RFC 7301 protocol id */
#define PROXY_TLS_STR_MAX 64            /* tls_version, cipher */
#define PROXY_V1_MAX 107                /* the specification's bound, CRLF included */

struct proxy_info {
	const struct sockaddr *src;     /* the public client (Tailscale-Ingress-Src) */
	const struct sockaddr *dst;     /* node side, same family as src, port = target's */
	const char *authority;          /* SNI, or the target host; may be NULL */
	const char *alpn;               /* negotiated protocol; may be NULL */
	const char *tls_version;        /* e.g. "TLSv1.2"; may be NULL */
	const char *cipher;             /* negotiated suite name; may be NULL */
};

/*
 * The destination address DESIGN.md §1.5 asks for: the local address of the
 * relay's connection when it has the source's family (IPv4-mapped IPv6 counts
 * as IPv4), else the unspecified address of the source's family; always with
 * the target's port (host order).  out is AF_INET for an IPv4 or IPv4-mapped
 * source.  A local of another family (AF_UNIX: the relay came in over a unix:
 * listener) or NULL gives the unspecified address.  A src that is neither
 * AF_INET nor AF_INET6 gives out->ss_family == AF_UNSPEC, which the builders
 * refuse.
 */
void proxy_destination(const struct sockaddr *src, const struct sockaddr *local, uint16_t target_port,
    struct sockaddr_storage *out);

/* Build a header into out (cap >= PROXY_HEADER_MAX is always enough).
 * Returns its length, or -1 when src/dst are not a matching AF_INET/AF_INET6 pair
 * (an IPv4-mapped IPv6 address counts as AF_INET and is sent as such), when a
 * string is longer than its bound above, or when cap is too small; nothing is
 * written to out then.  No NUL is appended; an empty string counts as NULL.  v1 carries addresses only; v2 adds
 * PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, and PP2_TYPE_SSL when tls_version or
 * cipher is set. */
int proxy_build_v1(const struct proxy_info *pi, uint8_t *out, size_t cap);
int proxy_build_v2(const struct proxy_info *pi, uint8_t *out, size_t cap);

#endif
