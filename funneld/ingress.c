/*
 * The relay's request head (DESIGN.md §1): a strict, bounded parser.
 *
 * ingress_parse() is stateless and is called again with the whole buffer
 * each time more bytes arrive.  Its verdict is that of the first decisive
 * event met while walking the bytes in order: a malformed byte or line
 * (400), the blank line that ends the head (every other check), or the
 * 8193rd byte with no end in sight (431).  A verdict for a prefix therefore
 * never changes when more bytes arrive, however TCP segments the stream, and
 * nothing past the head is read: those are the client's TLS bytes.
 */

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "ingress.h"

static inline bool
is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 9110 tchar: ALPHA, DIGIT and !#$%&'*+-.^_`|~, as a bitmap of ASCII. */
static inline bool
is_tchar(unsigned char c)
{
	static const uint64_t map[2] = { 0x03ff6cfa00000000ULL, 0x57ffffffc7fffffeULL };

	return c < 128 && ((map[c >> 6] >> (c & 63)) & 1);
}

/* ASCII case-insensitive compare against a lower-case literal (no locale). */
static bool
name_is(const char *p, size_t n, const char *lower, size_t lower_len)
{
	if (n != lower_len)
		return false;
	for (size_t i = 0; i < n; i++)
		if (ascii_lower((unsigned char)p[i]) != (unsigned char)lower[i])
			return false;
	return true;
}

#define NAME_IS(p, n, lit) name_is((p), (n), (lit), sizeof(lit) - 1)

/* Tailscale-Ingress-Src: "a.b.c.d:port" or "[v6]:port", kept with its canonical text. */
static int
parse_src(const char *v, size_t n, struct ingress_req *req)
{
	return addr_parse_ip_port(v, n, &req->src, req->src_text);
}

/*
 * Tailscale-Ingress-Target: "name:port" or "[v6]:port".  target_host is the
 * name normalised as backends are (addr_normalize_host), so routes compare
 * as strings; target_text keeps what was received, for the log.
 */
static int
parse_target(const char *v, size_t n, struct ingress_req *req)
{
	char host[sizeof(req->target_host)];
	uint16_t port;

	if (n >= sizeof(req->target_text) || addr_parse_target(v, n, host, &port) != 0)
		return -1;
	/* Only a target that parsed whole is stored. */
	memcpy(req->target_host, host, sizeof(host));
	req->target_port = port;
	memcpy(req->target_text, v, n);
	req->target_text[n] = '\0';
	return 0;
}

/* METHOD SP origin-form SP HTTP/1.x, nothing else.  The line is [off, off + n) of buf. */
static const char *
parse_request_line(const char *buf, size_t off, size_t n, struct ingress_head *h)
{
	const char *p = buf + off;
	size_t i = 0, t;

	while (i < n && is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i >= n || p[i] != ' ')
		return "malformed request line";
	h->method_off = off;
	h->method_len = i;
	t = ++i;
	/* Visible ASCII only: no obs-text, no whitespace in the target. */
	while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
		i++;
	if (i == t || i >= n || p[i] != ' ' || p[t] != '/')
		return "malformed request line";
	h->target_off = off + t;
	h->target_len = i - t;
	i++;
	if (n - i != 8 || memcmp(p + i, "HTTP/1.", 7) != 0)
		return "malformed request line";
	if (p[i + 7] == '1')
		h->http11 = true;
	else if (p[i + 7] != '0')
		return "malformed request line";
	return NULL;
}

static void
field_add(struct ingress_field *f, size_t off, size_t len)
{
	if (f->n++ == 0) {
		f->off = off;
		f->len = len;
	}
}

/* Content-Length: only a decimal zero is acceptable (no body); "00" is 0. */
static void
content_length(const char *buf, struct ingress_head *h, size_t off, size_t len)
{
	const char *v = buf + off;
	size_t i, z;

	for (i = 0; i < len; i++)
		if (!ascii_digit((unsigned char)v[i]))
			break;
	if (len == 0 || i != len) {
		h->cl_bad = true;
		return;
	}
	for (z = 0; z < len && v[z] == '0'; z++)
		;
	if (z != len)
		h->cl_body = true;
	if (h->cl.n > 0) {
		/* Compare without leading zeros: differing values are an attack. */
		const char *first = buf + h->cl.off;
		size_t fz;
		for (fz = 0; fz < h->cl.len && first[fz] == '0'; fz++)
			;
		if (h->cl.len - fz != len - z ||
		    memcmp(first + fz, v + z, len - z) != 0)
			h->cl_bad = true;
	}
	field_add(&h->cl, off, len);
}

/* "name: value" at [off, off + n) of buf; known free of CR, LF and controls but HT. */
static const char *
parse_header_line(const char *buf, size_t off, size_t n, struct ingress_head *h)
{
	const char *p = buf + off, *colon, *v, *e;
	size_t nlen, voff, vlen;

	if (is_ows((unsigned char)p[0]))
		return "obsolete line folding";
	if ((colon = memchr(p, ':', n)) == NULL)
		return "header line without colon";
	nlen = (size_t)(colon - p);
	if (nlen == 0)
		return "empty header name";
	if (is_ows((unsigned char)p[nlen - 1]))
		return "whitespace before colon";
	for (size_t i = 0; i < nlen; i++)
		if (!is_tchar((unsigned char)p[i]))
			return "bad header name";
	v = colon + 1;
	e = p + n;
	while (v < e && is_ows((unsigned char)*v))
		v++;
	while (e > v && is_ows((unsigned char)e[-1]))
		e--;
	voff = (size_t)(v - buf);
	vlen = (size_t)(e - v);

	/* Dispatch on length first: most headers are none of these. */
	switch (nlen) {
	case 4:
		if (NAME_IS(p, nlen, "host")) {
			if (h->host.n > 0)
				return "duplicate Host";
			field_add(&h->host, voff, vlen);
		}
		break;
	case 6:
		if (NAME_IS(p, nlen, "origin"))
			field_add(&h->origin, voff, vlen);
		break;
	case 7:
		if (NAME_IS(p, nlen, "referer"))
			field_add(&h->referer, voff, vlen);
		break;
	case 14:
		if (NAME_IS(p, nlen, "content-length"))
			content_length(buf, h, voff, vlen);
		break;
	case 17:
		if (NAME_IS(p, nlen, "transfer-encoding"))
			field_add(&h->te, voff, vlen);
		break;
	case 21:
		if (NAME_IS(p, nlen, "tailscale-ingress-src"))
			field_add(&h->src, voff, vlen);
		break;
	case 24:
		if (NAME_IS(p, nlen, "tailscale-ingress-target"))
			field_add(&h->tgt, voff, vlen);
		break;
	}
	return NULL;
}

static enum ingress_result
done(struct ingress_req *req, int status, const char *reason)
{
	req->status = status;
	req->reason = reason;
	return INGRESS_DONE;
}

/* The head is complete and well-formed line by line: DESIGN.md's order. */
static enum ingress_result
verdict(const char *buf, const struct ingress_head *h, bool peer_allowed, struct ingress_req *req)
{
	const char *target = buf + h->target_off;
	const char *q;
	size_t plen;
	bool src_ok, tgt_ok;

	if (h->http11 && h->host.n == 0)
		return done(req, 400, "missing Host");

	/*
	 * Parse Src and Target up front so that even a refused connection
	 * can be logged with them; the verdict still follows the table.
	 */
	src_ok = h->src.n == 1 && parse_src(buf + h->src.off, h->src.len, req) == 0;
	tgt_ok = h->tgt.n == 1 && parse_target(buf + h->tgt.off, h->tgt.len, req) == 0;

	if (!peer_allowed)
		return done(req, 403, "peer not allowed");
	if (h->origin.n > 0)
		return done(req, 403, "browser request (Origin)");
	if (h->referer.n > 0)
		return done(req, 403, "browser request (Referer)");

	q = memchr(target, '?', h->target_len);
	plen = q != NULL ? (size_t)(q - target) : h->target_len;
	if (plen != sizeof(INGRESS_PATH) - 1 ||
	    memcmp(target, INGRESS_PATH, plen) != 0)
		return done(req, 404, "not found");
	if (h->method_len != 4 || memcmp(buf + h->method_off, "POST", 4) != 0)
		return done(req, 405, "method not allowed");

	if (h->src.n == 0)
		return done(req, 400, "missing Tailscale-Ingress-Src");
	if (h->src.n > 1)
		return done(req, 400, "duplicate Tailscale-Ingress-Src");
	if (!src_ok)
		return done(req, 400, "bad Tailscale-Ingress-Src");
	if (h->tgt.n == 0)
		return done(req, 400, "missing Tailscale-Ingress-Target");
	if (h->tgt.n > 1)
		return done(req, 400, "duplicate Tailscale-Ingress-Target");
	if (!tgt_ok)
		return done(req, 400, "bad Tailscale-Ingress-Target");

	if (h->cl_bad)
		return done(req, 400, "bad Content-Length");
	if (h->cl_body || h->te.n > 0)
		return done(req, 400, "request has a body");
	return done(req, 0, "ok");
}

void
ingress_begin(struct ingress_state *st, struct ingress_req *req)
{
	memset(st, 0, sizeof(*st));
	/* Not all of *req: the strings only need their first byte cleared. */
	req->status = 0;
	req->reason = "incomplete";
	req->head_len = 0;
	memset(&req->src, 0, sizeof(req->src));
	req->src_text[0] = '\0';
	req->target_host[0] = '\0';
	req->target_port = 0;
	req->target_text[0] = '\0';
}

enum ingress_result
ingress_parse_more(struct ingress_state *st, const char *buf, size_t len, bool peer_allowed,
    struct ingress_req *req)
{
	const char *why;
	size_t lim, i;

	/* Bytes past the cap can only ever mean 431: never look at them. */
	lim = len < INGRESS_HEAD_MAX ? len : INGRESS_HEAD_MAX;
	for (i = st->scanned; i < lim; i++) {
		unsigned char c = (unsigned char)buf[i];

		/*
		 * Byte at a time, not word at a time: a word read could reach
		 * past the head into the TLS bytes, which are not ours to read.
		 */
		if ((unsigned char)(c - 0x20) < 0x5f || c >= 0x80)
			continue;
		if (c == '\t')
			continue;	/* only values may hold it: checked per line */
		if (c == '\n')
			return done(req, 400, "bare LF");
		if (c != '\r')
			return done(req, 400, c == '\0' ? "NUL byte" :
			    "control character");
		if (i + 1 >= lim)
			break;		/* CRLF may yet come (or 431) */
		if (buf[i + 1] != '\n')
			return done(req, 400, "bare CR");

		/* A line [pos, i) ended; the next one starts at i + 2. */
		if (!st->request_line_done)
			why = parse_request_line(buf, st->pos, i - st->pos, &st->head);
		else if (i == st->pos) {
			req->head_len = i + 2;
			return verdict(buf, &st->head, peer_allowed, req);
		} else
			why = parse_header_line(buf, st->pos, i - st->pos, &st->head);
		if (why != NULL)
			return done(req, 400, why);
		st->request_line_done = true;
		st->pos = i + 2;
		i++;
	}
	/* What is scanned is never looked at again (a CR at the end is, with its LF). */
	st->scanned = i;
	if (len > INGRESS_HEAD_MAX)
		return done(req, 431, "head too large");
	return INGRESS_INCOMPLETE;
}

enum ingress_result
ingress_parse(const char *buf, size_t len, bool peer_allowed, struct ingress_req *req)
{
	struct ingress_state st;

	ingress_begin(&st, req);
	return ingress_parse_more(&st, buf, len, peer_allowed, req);
}

const char *
http_status_text(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	}
	return "Unknown";
}

/* Keeps the whole refusal under 512 bytes whatever the caller's reason. */
#define REASON_MAX 256

size_t
ingress_format_refusal(int status, const char *reason, char *out, size_t cap)
{
	const char *text = http_status_text(status);
	char body[32 + 64 + REASON_MAX];
	int blen, n;

	if (cap == 0)
		return 0;
	if (reason != NULL && *reason != '\0')
		blen = snprintf(body, sizeof(body), "%d %s: %.*s\n", status, text,
		    REASON_MAX, reason);
	else
		blen = snprintf(body, sizeof(body), "%d %s\n", status, text);
	if (blen < 0) {
		out[0] = '\0';
		return 0;
	}
	if ((size_t)blen >= sizeof(body))
		blen = (int)sizeof(body) - 1;
	n = snprintf(out, cap,
	    "HTTP/1.1 %d %s\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: %d\r\n"
	    "Connection: close\r\n"
	    "%s"
	    "\r\n"
	    "%.*s",
	    status, text, blen, status == 405 ? "Allow: POST\r\n" : "", blen, body);
	if (n < 0) {
		out[0] = '\0';
		return 0;
	}
	return (size_t)n < cap ? (size_t)n : cap - 1;
}
