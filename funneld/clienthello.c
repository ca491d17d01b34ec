/*
 * The server name of a TLS ClientHello, read before the TLS library starts
 * (RFC 5246 7.4.1.2, RFC 8446 4.1.2 and 5.1, RFC 6066 3).  Pure: no
 * allocation, no I/O, no global state.
 *
 * The stream is walked once, in order, a field at a time.  Each field is
 * checked byte by byte against the bounds that what came before leaves it
 * (the record, the message, the enclosing vector), so the first byte that no
 * continuation could make acceptable is the one refused, and a later byte
 * can never change a verdict already reached.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "clienthello.h"

#define TLS_CT_HANDSHAKE	22
#define TLS_MAJOR		3
#define TLS_REC_MINOR_MIN	1	/* TLS 1.0 record version (0x0301) */
#define TLS_REC_MINOR_MAX	3	/* TLS 1.2 / 1.3 (0x0303) */
#define TLS_REC_HDR_LEN		5
#define TLS_HS_CLIENT_HELLO	1
#define TLS_HS_HDR_LEN		4
#define TLS_RANDOM_LEN		32
#define TLS_SESSION_ID_MAX	32
#define TLS_EXT_SERVER_NAME	0
#define TLS_EXT_ALPN		16
#define TLS_EXT_HDR_LEN		4
#define SNI_HOST_NAME		0
#define SNI_ENTRY_HDR_LEN	3	/* name_type, 16-bit length */

/* legacy_version, random, empty session_id, one suite, one method */
#define CH_BODY_MIN		(2 + TLS_RANDOM_LEN + 1 + 2 + 2 + 1 + 1)
/* server_name data: list length, then one host_name entry */
#define SNI_EXT_MIN		(2 + SNI_ENTRY_HDR_LEN + 1)
#define SNI_EXT_MAX		(2 + SNI_ENTRY_HDR_LEN + CLIENTHELLO_SNI_MAX)

/* The message header is whole within 4 records, so hs_end is known by the last. */
_Static_assert(CLIENTHELLO_RECORDS_MAX > TLS_HS_HDR_LEN,
    "the record bound must leave room for a split message header");
_Static_assert(CLIENTHELLO_MAX <= 0xffffff, "a handshake length is 24 bits");
_Static_assert(CLIENTHELLO_MAX >= TLS_HS_HDR_LEN + CH_BODY_MIN,
    "CLIENTHELLO_MAX below the shortest ClientHello");
_Static_assert(CLIENTHELLO_READ_MAX ==
    CLIENTHELLO_MAX + TLS_REC_HDR_LEN * CLIENTHELLO_RECORDS_MAX,
    "CLIENTHELLO_READ_MAX: the message and every record header");

/* Where the walk stands, in the stream and in the handshake message. */
struct ch_cursor {
	const uint8_t	*buf;
	size_t		 len;
	size_t		 pos;		/* next byte of buf */
	size_t		 rec_left;	/* payload bytes left in this record */
	size_t		 nrec;		/* records begun */
	size_t		 hs_off;	/* message bytes read */
	size_t		 hs_end;	/* message length, header included; 0
					 * until its length field is in */
	const char	*why;
};

static enum hello_result
ch_verdict(struct ch_cursor *c, enum hello_result r, const char *why)
{
	c->why = why;
	return r;
}

#define INCOMPLETE(c)	ch_verdict((c), HELLO_INCOMPLETE, "truncated")
#define BAD(c, reason)	ch_verdict((c), HELLO_BAD, (reason))

static size_t
ch_min(size_t a, size_t b)
{
	return a < b ? a : b;
}

static size_t
ch_max(size_t a, size_t b)
{
	return a > b ? a : b;
}

/*
 * Whether the numbers that begin with the bytes v, `more` bytes still to
 * come, all lie above hi (why_hi) or all below lo (why_lo); NULL when some
 * are inside [lo, hi].  So a length is refused at the first byte that puts
 * it out.
 */
static const char *
ch_range(size_t v, size_t more, size_t lo, size_t hi, const char *why_lo,
    const char *why_hi)
{
	size_t	 min = v << (8 * more), max = ((v + 1) << (8 * more)) - 1;

	if (min > hi)
		return why_hi;
	if (max < lo)
		return why_lo;
	return NULL;
}

/* Message bytes still to come; only once hs_end is known. */
static size_t
ch_left(const struct ch_cursor *c)
{
	return c->hs_end - c->hs_off;
}

/*
 * The header of the next record, checked as its bytes arrive.  A record
 * carries 1..2^14 bytes of the message and nothing past its end; the last
 * record allowed must carry all the rest.
 */
static enum hello_result
ch_record(struct ch_cursor *c)
{
	const char	*why_lo = "empty record", *why_hi = "record oversize";
	const char	*bad;
	size_t		 lo = 1, hi = CLIENTHELLO_RECORD_MAX, room, v = 0;
	bool		 first = c->nrec == 0;
	uint8_t		 b;

	/* Not reached: the last record's length must end the message. */
	if (c->nrec >= CLIENTHELLO_RECORDS_MAX)
		return BAD(c, "too many records");

	if (c->pos >= c->len)
		return INCOMPLETE(c);
	if (c->buf[c->pos++] != TLS_CT_HANDSHAKE)
		return first ? ch_verdict(c, HELLO_NOT_TLS, "not TLS") :
		    BAD(c, "record not handshake");
	if (c->pos >= c->len)
		return INCOMPLETE(c);
	if (c->buf[c->pos++] != TLS_MAJOR)
		return first ? ch_verdict(c, HELLO_NOT_TLS, "not TLS") :
		    BAD(c, "bad record version");
	if (c->pos >= c->len)
		return INCOMPLETE(c);
	b = c->buf[c->pos++];
	if (b < TLS_REC_MINOR_MIN || b > TLS_REC_MINOR_MAX)
		return BAD(c, "bad record version");

	room = (c->hs_end != 0 ? c->hs_end : CLIENTHELLO_MAX) - c->hs_off;
	if (room < hi) {
		hi = room;
		why_hi = c->hs_end != 0 ? "data after ClientHello" :
		    "ClientHello oversize";
	}
	if (c->nrec + 1 == CLIENTHELLO_RECORDS_MAX) {
		lo = room;
		why_lo = "too many records";
	}
	for (size_t i = 0; i < 2; i++) {
		if (c->pos >= c->len)
			return INCOMPLETE(c);
		v = v << 8 | c->buf[c->pos++];
		if ((bad = ch_range(v, 1 - i, lo, hi, why_lo, why_hi)) != NULL)
			return BAD(c, bad);
	}
	c->nrec++;
	c->rec_left = v;
	return HELLO_OK;
}

/* The next byte of the message, across record headers. */
static enum hello_result
ch_byte(struct ch_cursor *c, uint8_t *b)
{
	enum hello_result	 r;

	if (c->rec_left == 0 && (r = ch_record(c)) != HELLO_OK)
		return r;
	if (c->pos >= c->len)
		return INCOMPLETE(c);
	*b = c->buf[c->pos++];
	c->rec_left--;
	c->hs_off++;
	return HELLO_OK;
}

/*
 * Take n bytes, a run of the record at a time: copied to dst, which must
 * then get no NUL (refused wherever it stands, as byte by byte would), or
 * stepped over when dst is NULL.
 */
static enum hello_result
ch_take(struct ch_cursor *c, char *dst, size_t n)
{
	enum hello_result	 r;
	size_t			 k;

	while (n > 0) {
		if (c->rec_left == 0 && (r = ch_record(c)) != HELLO_OK)
			return r;
		k = ch_min(ch_min(n, c->rec_left), c->len - c->pos);
		if (k == 0)
			return INCOMPLETE(c);
		if (dst != NULL) {
			if (memchr(c->buf + c->pos, '\0', k) != NULL)
				return BAD(c, "NUL in host_name");
			memcpy(dst, c->buf + c->pos, k);
			dst += k;
		}
		c->pos += k;
		c->rec_left -= k;
		c->hs_off += k;
		n -= k;
	}
	return HELLO_OK;
}

/*
 * An n-byte big-endian number in [lo, hi], refused at the first byte that
 * puts it out: why_lo below, why_hi above.  An empty range is refused before
 * any byte: what came before already made the field impossible.
 */
static enum hello_result
ch_num(struct ch_cursor *c, size_t n, size_t lo, size_t hi,
    const char *why_lo, const char *why_hi, size_t *val)
{
	enum hello_result	 r;
	const char		*bad;
	size_t			 v = 0;
	uint8_t			 b;

	if (lo > hi)
		return BAD(c, why_lo);
	for (size_t i = 0; i < n; i++) {
		if ((r = ch_byte(c, &b)) != HELLO_OK)
			return r;
		v = v << 8 | b;
		if ((bad = ch_range(v, n - 1 - i, lo, hi, why_lo, why_hi)) !=
		    NULL)
			return BAD(c, bad);
	}
	*val = v;
	return HELLO_OK;
}

/*
 * The message header.  Its length bounds everything after it; the record
 * it ends in must not run past the message, so that record's end is a lower
 * bound too (checked at each length byte, against the record that byte is in).
 */
static enum hello_result
ch_header(struct ch_cursor *c)
{
	enum hello_result	 r;
	const char		*bad;
	size_t			 v = 0, lo, rec_end;
	uint8_t			 b;

	if ((r = ch_byte(c, &b)) != HELLO_OK)
		return r;
	if (b != TLS_HS_CLIENT_HELLO)
		return BAD(c, "not a ClientHello");
	for (size_t i = 0; i < 3; i++) {
		if ((r = ch_byte(c, &b)) != HELLO_OK)
			return r;
		v = v << 8 | b;
		rec_end = c->hs_off + c->rec_left;
		lo = ch_max(TLS_HS_HDR_LEN + CH_BODY_MIN, rec_end) -
		    TLS_HS_HDR_LEN;
		if ((bad = ch_range(v, 2 - i, lo,
		    CLIENTHELLO_MAX - TLS_HS_HDR_LEN,
		    rec_end > TLS_HS_HDR_LEN + CH_BODY_MIN ?
		    "data after ClientHello" : "ClientHello too short",
		    "ClientHello oversize")) != NULL)
			return BAD(c, bad);
	}
	c->hs_end = TLS_HS_HDR_LEN + v;
	return HELLO_OK;
}

/* server_name data of elen bytes: a list of exactly one host_name. */
static enum hello_result
ch_server_name(struct ch_cursor *c, size_t elen, struct clienthello *out)
{
	enum hello_result	 r;
	size_t			 v, nlen;
	uint8_t			 b;

	if ((r = ch_num(c, 2, elen - 2, elen - 2, "bad server_name list",
	    "bad server_name list", &v)) != HELLO_OK)
		return r;
	if ((r = ch_byte(c, &b)) != HELLO_OK)
		return r;
	if (b != SNI_HOST_NAME)
		return BAD(c, "unknown server name type");
	/* the name fills the list: anything after it would be a second name */
	nlen = elen - 2 - SNI_ENTRY_HDR_LEN;
	if ((r = ch_num(c, 2, nlen, nlen, "more than one server name",
	    "bad host_name length", &v)) != HELLO_OK)
		return r;
	if ((r = ch_take(c, out->sni, nlen)) != HELLO_OK)
		return r;
	out->sni[nlen] = '\0';
	out->has_sni = true;
	return HELLO_OK;
}

/*
 * Add type to the n sorted types in seen[] (room for one more); false if it
 * is there already.  Sorted, so that 128 extensions cost 128 binary searches
 * and short moves, not 8128 comparisons, on every call.
 */
static bool
ch_add_type(uint16_t *seen, size_t n, uint16_t type)
{
	size_t	 lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (seen[mid] == type)
			return false;
		if (seen[mid] < type)
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(seen + lo + 1, seen + lo, (n - lo) * sizeof(*seen));
	seen[lo] = type;
	return true;
}

/*
 * The extensions block, which ends where the message ends.  At least 4
 * bytes are left at the top of each turn (the length checks see to it).
 */
static enum hello_result
ch_extensions(struct ch_cursor *c, struct clienthello *out)
{
	uint16_t		 seen[CLIENTHELLO_EXTENSIONS_MAX];
	enum hello_result	 r;
	const char		*why_lo, *why_hi;
	size_t			 n = 0, type, elen, rest, lo, hi;

	while (ch_left(c) > 0) {
		/* Not reached: the last extension allowed must end the block. */
		if (n >= CLIENTHELLO_EXTENSIONS_MAX)
			return BAD(c, "too many extensions");
		if ((r = ch_num(c, 2, 0, UINT16_MAX, NULL, NULL, &type)) !=
		    HELLO_OK)
			return r;
		/* at most 128 types so far: no first byte can rule out all */
		if (!ch_add_type(seen, n++, (uint16_t)type))
			return BAD(c, "duplicate extension");

		rest = ch_left(c) - 2;
		lo = 0;
		hi = rest;
		why_lo = why_hi = "bad extension length";
		if (type == TLS_EXT_SERVER_NAME) {
			lo = SNI_EXT_MIN;
			hi = ch_min(hi, SNI_EXT_MAX);
			why_lo = why_hi = "bad server_name length";
		}
		if (n == CLIENTHELLO_EXTENSIONS_MAX && rest > lo) {
			lo = rest;
			why_lo = "too many extensions";
		}
		if ((r = ch_num(c, 2, lo, hi, why_lo, why_hi, &elen)) !=
		    HELLO_OK)
			return r;
		/* 1..3 bytes left over could hold no extension */
		if (elen < rest && rest - elen < TLS_EXT_HDR_LEN)
			return BAD(c, "bad extension length");

		if (type == TLS_EXT_SERVER_NAME)
			r = ch_server_name(c, elen, out);
		else {
			if (type == TLS_EXT_ALPN)
				out->has_alpn = true;
			r = ch_take(c, NULL, elen);
		}
		if (r != HELLO_OK)
			return r;
	}
	return HELLO_OK;
}

/* The ClientHello body, after the message header. */
static enum hello_result
ch_body(struct ch_cursor *c, struct clienthello *out)
{
	enum hello_result	 r;
	size_t			 v, rest;

	/* 0x0301..0x03ff: TLS, any version; which one is the library's call */
	if ((r = ch_num(c, 2, 0x0301, 0x03ff, "bad legacy_version",
	    "bad legacy_version", &v)) != HELLO_OK)
		return r;
	out->legacy_version = (uint16_t)v;
	if ((r = ch_take(c, NULL, TLS_RANDOM_LEN)) != HELLO_OK)
		return r;

	/* session_id, leaving room for cipher_suites (4) and
	 * compression_methods (2); the body's minimum leaves >= 6 */
	rest = ch_left(c) - 1;
	if ((r = ch_num(c, 1, 0, ch_min(TLS_SESSION_ID_MAX, rest - 6),
	    "bad session_id length", "bad session_id length", &v)) != HELLO_OK ||
	    (r = ch_take(c, NULL, v)) != HELLO_OK)
		return r;

	/* cipher_suites: pairs, at least one, room for compression_methods */
	rest = ch_left(c) - 2;
	if ((r = ch_num(c, 2, 2, (rest - 2) & ~(size_t)1,
	    "bad cipher_suites length", "bad cipher_suites length", &v)) !=
	    HELLO_OK)
		return r;
	if (v % 2 != 0)
		return BAD(c, "bad cipher_suites length");
	if ((r = ch_take(c, NULL, v)) != HELLO_OK)
		return r;

	/*
	 * compression_methods.  What follows it is nothing (no extensions,
	 * TLS 1.2 only), an empty extensions block (2 bytes) or one with
	 * extensions (2 + 4 or more): never 1, 3, 4 or 5 bytes.
	 */
	rest = ch_left(c) - 1;
	if ((r = ch_num(c, 1, 1, ch_min(UINT8_MAX, rest),
	    "bad compression_methods length", "bad compression_methods length",
	    &v)) != HELLO_OK)
		return r;
	rest -= v;
	if (rest == 1 || (rest > 2 && rest < 2 + TLS_EXT_HDR_LEN))
		return BAD(c, "bad compression_methods length");
	if ((r = ch_take(c, NULL, v)) != HELLO_OK)
		return r;
	if (rest == 0)
		return HELLO_OK;

	if ((r = ch_num(c, 2, rest - 2, rest - 2, "bad extensions length",
	    "bad extensions length", &v)) != HELLO_OK)
		return r;
	return ch_extensions(c, out);
}

enum hello_result
clienthello_peek(const uint8_t *buf, size_t len, struct clienthello *out,
    const char **why)
{
	struct ch_cursor	 c;
	enum hello_result	 r;

	memset(out, 0, sizeof(*out));
	memset(&c, 0, sizeof(c));
	c.buf = buf;
	c.len = len;
	if ((r = ch_header(&c)) == HELLO_OK &&
	    (r = ch_body(&c, out)) == HELLO_OK) {
		/* the record lengths saw to it that the last one ends here */
		out->bytes = c.pos;
		c.why = out->has_sni ? "ClientHello with SNI" :
		    "ClientHello without SNI";
	} else
		memset(out, 0, sizeof(*out));
	if (why != NULL)
		*why = c.why;
	return r;
}
