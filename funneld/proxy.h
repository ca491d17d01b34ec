/* PROXY protocol v1/v2 header to the backend (HAProxy's specification).  Pure. */
#ifndef FUNNELD_PROXY_H
#define FUNNELD_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_HEADER_MAX 1024

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
 * the target's port.
 */
void proxy_destination(const struct sockaddr *src, const struct sockaddr *local, uint16_t target_port,
    struct sockaddr_storage *out);

/* Build a header into out (cap >= PROXY_HEADER_MAX is always enough).
 * Returns its length, or -1 when src/dst are not a matching AF_INET/AF_INET6 pair. */
int proxy_build_v1(const struct proxy_info *pi, uint8_t *out, size_t cap);
int proxy_build_v2(const struct proxy_info *pi, uint8_t *out, size_t cap);

#endif
