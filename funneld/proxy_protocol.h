/* PROXY protocol v1/v2 (HAProxy's specification): the header funneld writes to
 * its backends, and the one it reads on [listener] sections.  Pure. */
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
 * AF_INET nor AF_INET6 gives out->ss_family == AF_UNSPEC.
 */
void proxy_destination(const struct sockaddr *src, const struct sockaddr *local, uint16_t target_port,
    struct sockaddr_storage *out);

/* Build a header into out (cap >= PROXY_HEADER_MAX is always enough).
 * Returns its length, or -1 when src/dst are not a matching AF_INET/AF_INET6 pair
 * (an IPv4-mapped IPv6 address counts as AF_INET and is sent as such), when a
 * string is longer than its bound above, or when cap is too small; nothing is
 * written to out then.  No NUL is appended; an empty string counts as NULL.  v1 carries addresses only; v2 adds
 * PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, and PP2_TYPE_SSL when tls_version or
 * cipher is set.  With no source to tell (src NULL or AF_UNSPEC: a unix:
 * [listener] without a PROXY header of its own), v1 is "PROXY UNKNOWN\r\n"
 * and v2 a PROXY command of family UNSPEC with no addresses (the receiver
 * uses the connection's own), its TLVs as usual. */
int proxy_build_v1(const struct proxy_info *pi, uint8_t *out, size_t cap);
int proxy_build_v2(const struct proxy_info *pi, uint8_t *out, size_t cap);

/*
 * Reading a header (DESIGN.md section 8: a [listener] with proxy_protocol).
 *
 * The version is configured, never guessed: proxy_read_v1() accepts only the
 * text form and proxy_read_v2() only the binary one, and each refuses the
 * other's with its own reason.  Both are stateless and pure (no I/O, no
 * allocation): call again with the whole buffer each time bytes arrive.
 * They look at no byte past the header: what follows header_len is the
 * client's TLS and stays where it is.
 *
 * The verdict is that of the first decisive byte, walking in order, so once
 * a prefix gets a result other than PROXY_READ_INCOMPLETE, every longer
 * input gets the same result, reason and header (however TCP splits it).
 *
 *   PROXY_READ_INCOMPLETE  every byte so far fits a valid header; read more
 *                          (within header_timeout).  Only returned while
 *                          len < PROXY_V1_MAX (v1) or len < PROXY_READ_MAX
 *                          (v2), so a caller that buffers PROXY_READ_MAX
 *                          bytes always gets a verdict.  EOF now: the header
 *                          was truncated; close.
 *   PROXY_READ_OK          command PROXY over TCP: src is the client (the
 *                          connection's src from now on), dst the address it
 *                          dialled, both AF_INET or both AF_INET6, as sent
 *                          (an IPv4-mapped source in TCP6 stays AF_INET6).
 *                          Skip header_len bytes; the TLS handshake starts
 *                          with the next one.
 *   PROXY_READ_LOCAL       a well-formed header without a client address:
 *                          v2 LOCAL (a sender's health check; family and
 *                          address block ignored, as the specification asks)
 *                          or v1 "PROXY UNKNOWN" (the sender could not say).
 *                          src/dst are AF_UNSPEC; header_len is exact.  The
 *                          daemon closes these cleanly, without TLS or a
 *                          backend, and counts them apart from refusals.
 *   PROXY_READ_BAD         not a header this reader accepts: close, nothing
 *                          forwarded.
 *
 * *why (may be NULL) gets a static string for logs and metrics labels:
 * "truncated" while incomplete, what was wrong for PROXY_READ_BAD ("bad v2
 * signature", "v1 header, v2 expected", "v1 line too long", "v2 UDP not
 * supported", "v2 header oversize", "v2 TLV overruns header", ...), what was
 * read otherwise ("v1 TCP4", "v2 LOCAL", "v1 UNKNOWN", ...).
 *
 * v1 is read strictly: "PROXY TCP4 a.b.c.d e.f.g.h sport dport\r\n" (or TCP6,
 * or "PROXY UNKNOWN" with anything up to CRLF), single spaces, at most
 * PROXY_V1_MAX bytes with the CRLF, a lone CR or LF refused.  IPv4 addresses
 * are four decimal numbers 0..255 without leading zeros (the specification
 * forbids them: they read as octal elsewhere); IPv6 ones are whatever
 * inet_pton(AF_INET6) takes (hex groups of up to 4 digits, one "::", an
 * embedded dotted IPv4 tail), no zone.  Ports: 0..65535 in decimal, no sign,
 * no leading zero.
 *
 * v2: the 12-byte signature, version 2, command LOCAL or PROXY, a family byte
 * the specification defines.  PROXY takes TCP over IPv4 (0x11) and IPv6
 * (0x21) only; UDP, AF_UNIX and AF_UNSPEC are refused.  The length field is
 * honoured: TLVs after the address block are walked and skipped whatever
 * their type (nested SSL sub-TLVs are not looked into), one that runs past
 * the header's end is refused, and a PP2_TYPE_CRC32C TLV is verified.  A
 * header longer than PROXY_READ_MAX bytes (16 + the length field) is refused
 * as soon as the length field is in.
 */
#define PROXY_READ_MAX 1024             /* longest v2 header accepted */

enum proxy_read_result {
	PROXY_READ_INCOMPLETE = 0,
	PROXY_READ_OK,
	PROXY_READ_LOCAL,
	PROXY_READ_BAD,
};

struct proxy_header {
	struct sockaddr_storage src;    /* AF_INET / AF_INET6; AF_UNSPEC for LOCAL */
	struct sockaddr_storage dst;    /* same family as src */
	size_t header_len;              /* bytes of the header (OK and LOCAL), else 0 */
};

enum proxy_read_result proxy_read_v1(const uint8_t *buf, size_t len, struct proxy_header *out, const char **why);
enum proxy_read_result proxy_read_v2(const uint8_t *buf, size_t len, struct proxy_header *out, const char **why);

#endif
