/* A peek at a TLS ClientHello for its SNI, before any TLS library sees the
 * stream (DESIGN.md section 8: route by SNI, then start the handshake).  Pure. */
#ifndef FUNNELD_CLIENTHELLO_H
#define FUNNELD_CLIENTHELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLIENTHELLO_MAX 16384           /* handshake message, its 4-byte header included */
#define CLIENTHELLO_RECORDS_MAX 64      /* records it may be split over */
#define CLIENTHELLO_EXTENSIONS_MAX 128  /* extensions in it */
#define CLIENTHELLO_SNI_MAX 255         /* bytes of host_name */
#define CLIENTHELLO_RECORD_MAX 16384    /* record payload (RFC 8446 5.1: 2^14) */

/* The most stream bytes a ClientHello can span (the longest message in the
 * most records).  INCOMPLETE only below it: a caller that buffers this many
 * bytes always gets a verdict. */
#define CLIENTHELLO_READ_MAX (CLIENTHELLO_MAX + 5 * CLIENTHELLO_RECORDS_MAX)

/*
 * clienthello_peek() reads the first TLS records of a client's stream (what
 * follows the PROXY header, if any) and returns what its ClientHello says.
 * It copies nothing out of buf but the server name, and looks at no byte past
 * the records holding the ClientHello: the caller then hands the very same
 * bytes to the TLS library.  Stateless: call again with the whole buffer each
 * time bytes arrive.  A call costs O(records + extensions + host_name
 * bytes), not O(len): opaque fields are stepped over, so a hello that
 * trickles in a byte at a time is not parsed quadratically.
 *
 * The verdict is that of the first decisive byte, walking in order, so once a
 * prefix gets a result other than HELLO_INCOMPLETE, every longer input gets
 * the same result, reason and *out.  Every prefix of an acceptable ClientHello
 * is INCOMPLETE, and a prefix that no continuation could make acceptable is
 * refused at the byte that makes it so.
 *
 *   HELLO_INCOMPLETE  every byte so far can begin an acceptable ClientHello;
 *                     read more.  Only while len < CLIENTHELLO_READ_MAX.
 *   HELLO_OK          a well-formed ClientHello; *out filled.  It ended
 *                     bytes into buf, at a record boundary.
 *   HELLO_NOT_TLS     the stream does not start with a TLS handshake record:
 *                     its first byte is not 22, or its second is not 3 (so a
 *                     plaintext "GET /" is told on its first byte).  Nothing
 *                     TLS-like to answer: close.
 *   HELLO_BAD         TLS records, but not an acceptable ClientHello (fail
 *                     the handshake: close, or a decode_error alert).
 *
 * *why (may be NULL) gets a static string for logs and metric labels:
 * "truncated" while incomplete, "not TLS", "ClientHello with SNI" or
 * "ClientHello without SNI" on success, what was wrong for HELLO_BAD ("bad
 * record version", "record not handshake", "empty record", "record
 * oversize", "too many records", "data after ClientHello", "not a
 * ClientHello", "ClientHello oversize", "ClientHello too short", "bad
 * legacy_version", "bad session_id length", "bad cipher_suites length", "bad
 * compression_methods length", "bad extensions length", "too many
 * extensions", "bad extension length", "duplicate extension", "bad
 * server_name length", "bad server_name list", "unknown server name type",
 * "more than one server name", "bad host_name length", "NUL in host_name").
 *
 * What is checked (RFC 5246 7.4.1.2, RFC 8446 4.1.2 and 5.1, RFC 6066 3):
 *  - records: type 22 (handshake; no other type before or inside the
 *    ClientHello), version 0x0301..0x0303, length 1..2^14, at most
 *    CLIENTHELLO_RECORDS_MAX of them; the message may be split anywhere
 *    between them and must end where a record ends (a client sends nothing
 *    after its ClientHello before the server's answer, and nothing else in
 *    the records that hold it).
 *  - the message: type 1 (ClientHello), at most CLIENTHELLO_MAX bytes;
 *    legacy_version 0x0301..0x03ff; 32 random bytes; a session_id of 0..32
 *    bytes; cipher_suites of even length >= 2; compression_methods of length
 *    >= 1; then either nothing (a TLS 1.2 hello without extensions) or an
 *    extensions block that fills the rest of the message exactly.  The
 *    contents of the lists are the TLS library's business.
 *  - extensions: each fits its block exactly; no type twice (RFC 8446 4.2,
 *    RFC 5246 7.4.1.4); at most CLIENTHELLO_EXTENSIONS_MAX of them.  Only
 *    server_name (0) is looked into; application_layer_protocol_negotiation
 *    (16) is only noted.
 *  - server_name: a ServerNameList holding exactly one entry, a host_name
 *    (name_type 0) of 1..255 bytes without NUL, copied as received.  RFC 6066
 *    allows at most one name per type and leaves room for other types, but
 *    none was ever defined and the common stacks refuse any other (OpenSSL
 *    and BoringSSL parse exactly this shape), so a second entry or another
 *    type is refused rather than stepped over: one name, read one way.  Its
 *    syntax (addr_hostname_valid) and case are the caller's.
 */
enum hello_result {
	HELLO_INCOMPLETE = 0,
	HELLO_OK,
	HELLO_NOT_TLS,
	HELLO_BAD,
};

struct clienthello {
	char		 sni[CLIENTHELLO_SNI_MAX + 1]; /* NUL-terminated; "" without */
	bool		 has_sni;
	bool		 has_alpn;       /* an ALPN extension was offered */
	uint16_t	 legacy_version; /* 0x0303 from TLS 1.2 and 1.3 clients */
	size_t		 bytes;          /* stream bytes of the records holding it */
};

/* *out is all zero unless HELLO_OK. */
enum hello_result clienthello_peek(const uint8_t *buf, size_t len, struct clienthello *out, const char **why);

#endif
