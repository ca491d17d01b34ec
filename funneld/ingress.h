/* The relay's request head: POST /v0/ingress.  Pure parsing, no I/O. */
#ifndef FUNNELD_INGRESS_H
#define FUNNELD_INGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"

#define INGRESS_HEAD_MAX 8192       /* a larger head is answered 431 */
#define INGRESS_PATH "/v0/ingress"

enum ingress_result {
	INGRESS_INCOMPLETE = 0,     /* need more bytes (and len <= INGRESS_HEAD_MAX) */
	INGRESS_DONE = 1,           /* a verdict: see status */
};

struct ingress_req {
	int status;                 /* 0 = accepted; otherwise the HTTP status to answer */
	const char *reason;         /* static text for the log and the response body */
	size_t head_len;            /* bytes of the head incl. the blank line (valid when a head ended) */

	/*
	 * Valid when status == 0.  After a complete head they are also filled
	 * for a refusal when that header parsed (for the log); otherwise
	 * zero / "".
	 */
	struct sockaddr_storage src;        /* Tailscale-Ingress-Src */
	char src_text[ADDR_TEXT_MAX];       /* as "ip:port" / "[v6]:port", normalised */
	char target_host[ADDR_HOST_MAX + 1];        /* Tailscale-Ingress-Target host, normalised
	                                               (addr_normalize_host) */
	uint16_t target_port;
	char target_text[272];              /* "host:port" as received (for logs) */
};

/* Private to ingress.c (here so that a connection can hold one). */
struct ingress_field {                  /* one header we care about: its first value and a count */
	size_t off, len;                /* in the caller's buffer, OWS trimmed */
	unsigned n;
};
struct ingress_head {                   /* what the complete lines said */
	size_t method_off, method_len, target_off, target_len;
	bool http11;
	struct ingress_field host, origin, referer, src, tgt, cl, te;
	bool cl_bad;                    /* a Content-Length not all digits, or two differing */
	bool cl_body;                   /* a Content-Length > 0 */
};

/*
 * A head read in pieces: each call of ingress_parse_more() looks only at
 * the bytes that came since the last one (a line is parsed once, when it
 * is complete), so a head that trickles in costs what it would whole.  The
 * state keeps offsets, not pointers: the buffer may move between calls, but
 * must hold the same bytes from its start.
 */
struct ingress_state {
	size_t pos;                     /* start of the first line not complete yet */
	size_t scanned;                 /* bytes already checked */
	bool request_line_done;
	struct ingress_head head;
};

void ingress_begin(struct ingress_state *st, struct ingress_req *req);
enum ingress_result ingress_parse_more(struct ingress_state *st, const char *buf, size_t len, bool peer_allowed,
    struct ingress_req *req);

/*
 * Look at the first len bytes received on a relay connection.  Returns
 * INGRESS_INCOMPLETE while the head has not ended and is still within
 * INGRESS_HEAD_MAX and nothing seen so far is malformed; otherwise
 * INGRESS_DONE with req->status set.  peer_allowed is the caller's
 * `allow` verdict on the peer address: it is applied in DESIGN.md's order
 * (after the head is complete and well-formed, before everything else).
 * Bytes after head_len are not looked at: they belong to TLS.
 *
 * The verdict is that of the first decisive event in byte order (a bad byte
 * or a bad line: 400; the end of the head: the rest of the table; byte 8193
 * with no end: 431), so once a prefix gets INGRESS_DONE, any longer input
 * gets the identical verdict.  The same as ingress_begin() + one
 * ingress_parse_more(); a prefix's verdict from successive calls of
 * ingress_parse_more() is the one this gives for the whole of it.
 * req->reason is a static string; "incomplete" while INGRESS_INCOMPLETE.
 */
enum ingress_result ingress_parse(const char *buf, size_t len, bool peer_allowed, struct ingress_req *req);

/* Reason phrase for the statuses funneld answers ("Bad Request", ...);
 * "Unknown" for others. */
const char *http_status_text(int status);

/*
 * Format a refusal: status line, Content-Type: text/plain, Content-Length,
 * Connection: close (and Allow: POST for 405), then a one-line body.
 * Returns the length written (always < cap when cap >= 512).
 */
size_t ingress_format_refusal(int status, const char *reason, char *out, size_t cap);

#endif
