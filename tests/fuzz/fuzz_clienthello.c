/*
 * Fuzz target for the ClientHello peek (clienthello_peek in
 * funneld/clienthello.c).  The input is the start of a TLS stream, as is;
 * the seeds are ClientHellos captured from real clients.  Any violation of
 * these aborts:
 *
 *  - prefix monotonicity: every prefix is INCOMPLETE ("truncated") up to
 *    some length, then from there on one verdict, with the same reason and
 *    the same *out, however many bytes follow;
 *  - no byte is read past len (each call sees the buffer with everything
 *    after len poisoned under ASan, and the buffer ends at the input's end);
 *  - the verdict's shape: INCOMPLETE only below CLIENTHELLO_READ_MAX bytes,
 *    *out all zero unless OK, NOT_TLS on the first or second byte; OK
 *    reached exactly at the hello's last byte (bytes), with has_sni iff a
 *    name, the name 1..255 bytes without NUL and found in the input;
 *  - agreement with a second, deliberately plain reader below (whole
 *    buffer, no streaming): the same OK and fields, NOT_TLS alike, its BAD
 *    is a BAD, and INCOMPLETE only where it ran out of bytes;
 *  - framing does not matter: the handshake message carried by the input's
 *    records, framed again as one record and as several (sizes drawn from
 *    the input), gives OK for both or for neither, with the same fields.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clienthello.h"
#include "fuzz.h"

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(a, s) ((void)(a), (void)(s))
#define ASAN_UNPOISON_MEMORY_REGION(a, s) ((void)(a), (void)(s))
#endif

struct verdict {
	enum hello_result	 r;
	const char		*why;
	struct clienthello	 ch;
};

/* Peek at the first k of the n bytes at buf, the rest poisoned meanwhile. */
static void
peek_prefix(uint8_t *buf, size_t n, size_t k, struct verdict *v)
{
	memset(v, 0xa5, sizeof(*v));
	v->why = NULL;
	ASAN_POISON_MEMORY_REGION(buf + k, n - k);
	v->r = clienthello_peek(buf, k, &v->ch, &v->why);
	ASAN_UNPOISON_MEMORY_REGION(buf + k, n - k);
	CHECK(v->why != NULL);
}

static bool
same(const struct verdict *a, const struct verdict *b)
{
	return a->r == b->r && strcmp(a->why, b->why) == 0 &&
	    memcmp(&a->ch, &b->ch, sizeof(a->ch)) == 0;
}

static bool
all_zero(const struct clienthello *ch)
{
	static const struct clienthello	 zero;

	return memcmp(ch, &zero, sizeof(zero)) == 0;
}

/* ---- The plain reader ---- */

enum ref_result { REF_SHORT, REF_OK, REF_NOT_TLS, REF_BAD };

struct ref {
	enum ref_result	 r;
	struct clienthello	 ch;
};

static unsigned int
get16(const uint8_t *p)
{
	return (unsigned int)p[0] << 8 | p[1];
}

/* The message m[0..mlen), whole: 0 if acceptable (ch filled), -1 if not. */
static int
ref_message(const uint8_t *m, size_t mlen, struct clienthello *ch)
{
	uint16_t	 types[CLIENTHELLO_EXTENSIONS_MAX];
	size_t		 p = 4, end = mlen, n, next, ntypes = 0;
	unsigned int	 v, type;

	if (end - p < 2 + 32 + 1)
		return -1;
	v = get16(m + p);
	if (v < 0x0301 || v > 0x03ff)
		return -1;
	ch->legacy_version = (uint16_t)v;
	p += 2 + 32;
	n = m[p++];
	if (n > 32 || end - p < n)
		return -1;
	p += n;
	if (end - p < 2)
		return -1;
	n = get16(m + p);
	p += 2;
	if (n < 2 || n % 2 != 0 || end - p < n)
		return -1;
	p += n;
	if (end - p < 1)
		return -1;
	n = m[p++];
	if (n < 1 || end - p < n)
		return -1;
	p += n;
	if (p == end)
		return 0;
	if (end - p < 2 || get16(m + p) != end - p - 2)
		return -1;
	for (p += 2; p < end; p = next) {
		if (end - p < 4)
			return -1;
		type = get16(m + p);
		n = get16(m + p + 2);
		p += 4;
		if (end - p < n)
			return -1;
		next = p + n;
		for (size_t i = 0; i < ntypes; i++)
			if (types[i] == type)
				return -1;
		if (ntypes == CLIENTHELLO_EXTENSIONS_MAX)
			return -1;
		types[ntypes++] = (uint16_t)type;
		if (type == 16)
			ch->has_alpn = true;
		if (type != 0)
			continue;
		/* exactly one host_name filling the list filling the data */
		if (n < 2 || get16(m + p) != n - 2 || n - 2 < 3 ||
		    m[p + 2] != 0 || get16(m + p + 3) != n - 5 ||
		    n - 5 < 1 || n - 5 > 255 || memchr(m + p + 5, 0, n - 5))
			return -1;
		memcpy(ch->sni, m + p + 5, n - 5);
		ch->has_sni = true;
	}
	return 0;
}

static void
ref_read(const uint8_t *b, size_t len, struct ref *out)
{
	static uint8_t	 m[CLIENTHELLO_MAX + CLIENTHELLO_RECORD_MAX];
	size_t		 p = 0, mlen = 0, nrec = 0, rl, total;

	memset(out, 0, sizeof(*out));
	for (;;) {
		/* a record header, as far as it goes */
		if (len - p >= 1 && b[p] != 22) {
			out->r = nrec == 0 ? REF_NOT_TLS : REF_BAD;
			return;
		}
		if (len - p >= 2 && b[p + 1] != 3) {
			out->r = nrec == 0 ? REF_NOT_TLS : REF_BAD;
			return;
		}
		if (len - p < 5) {
			if (len - p >= 3 && (b[p + 2] < 1 || b[p + 2] > 3))
				out->r = REF_BAD;
			return;		/* REF_SHORT, or BAD */
		}
		rl = get16(b + p + 3);
		if (b[p + 2] < 1 || b[p + 2] > 3 || rl < 1 ||
		    rl > CLIENTHELLO_RECORD_MAX ||
		    ++nrec > CLIENTHELLO_RECORDS_MAX) {
			out->r = REF_BAD;
			return;
		}
		p += 5;
		if (len - p < rl) {
			out->r = REF_SHORT;
			return;
		}
		memcpy(m + mlen, b + p, rl);
		mlen += rl;
		p += rl;
		if (m[0] != 1) {
			out->r = REF_BAD;
			return;
		}
		if (mlen < 4)
			continue;
		total = 4 + ((size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3]);
		if (total > CLIENTHELLO_MAX || total < 4 + 41 || mlen > total) {
			out->r = REF_BAD;
			return;
		}
		if (mlen == total)
			break;
		if (nrec == CLIENTHELLO_RECORDS_MAX) {
			out->r = REF_BAD;
			return;
		}
	}
	if (ref_message(m, mlen, &out->ch) != 0) {
		memset(&out->ch, 0, sizeof(out->ch));
		out->r = REF_BAD;
		return;
	}
	out->ch.bytes = p;
	out->r = REF_OK;
}

/* ---- The checks ---- */

static size_t payload(const uint8_t *, size_t, uint8_t *, size_t);

/* The shape of a verdict on k bytes of buf. */
static void
check_shape(const uint8_t *buf, size_t k, const struct verdict *v)
{
	const struct clienthello	*ch = &v->ch;
	size_t				 l;

	switch (v->r) {
	case HELLO_INCOMPLETE:
		CHECK(k < CLIENTHELLO_READ_MAX);
		CHECK(strcmp(v->why, "truncated") == 0);
		CHECK(all_zero(ch));
		break;
	case HELLO_NOT_TLS:
		CHECK(k >= 1 && (buf[0] != 22 || (k >= 2 && buf[1] != 3)));
		CHECK(strcmp(v->why, "not TLS") == 0);
		CHECK(all_zero(ch));
		break;
	case HELLO_BAD:
		CHECK(strcmp(v->why, "truncated") != 0);
		CHECK(all_zero(ch));
		break;
	case HELLO_OK:
		CHECK(ch->bytes >= 5 + 4 + 41 && ch->bytes <= k);
		CHECK(ch->bytes <= CLIENTHELLO_READ_MAX);
		CHECK(ch->legacy_version >= 0x0301 &&
		    ch->legacy_version <= 0x03ff);
		l = strnlen(ch->sni, sizeof(ch->sni));
		CHECK(l < sizeof(ch->sni));
		CHECK(ch->has_sni == (l > 0));
		CHECK(strcmp(v->why, ch->has_sni ? "ClientHello with SNI" :
		    "ClientHello without SNI") == 0);
		for (size_t i = l; i < sizeof(ch->sni); i++)
			CHECK(ch->sni[i] == '\0');
		if (l > 0) {
			static uint8_t	 msg[CLIENTHELLO_MAX];
			size_t		 n;

			/* the name may straddle records: look in the message */
			n = payload(buf, ch->bytes, msg, sizeof(msg));
			CHECK(memmem(msg, n, ch->sni, l) != NULL);
		}
		break;
	default:
		CHECK(!"unknown result");
	}
}

/*
 * Every prefix of buf[0..n) (a heap buffer of exactly n bytes), then the
 * plain reader on the whole.  The final verdict goes to *fin.
 */
static void
check_stream(uint8_t *buf, size_t n, struct verdict *fin)
{
	struct verdict	 v;
	struct ref	 ref;
	size_t		 k, first = n + 1;

	peek_prefix(buf, n, n, fin);
	check_shape(buf, n, fin);
	for (k = 0; k <= n; k++) {
		peek_prefix(buf, n, k, &v);
		check_shape(buf, k, &v);
		if (v.r == HELLO_INCOMPLETE) {
			CHECK(first > n);	/* no INCOMPLETE after a verdict */
			continue;
		}
		if (first > n)
			first = k;
		CHECK(same(&v, fin));
		/* past the deciding byte every prefix is alike: a few more,
		 * then the whole (above) */
		if (k >= first + 8)
			break;
	}
	if (fin->r == HELLO_INCOMPLETE)
		CHECK(first > n);
	if (fin->r == HELLO_NOT_TLS)
		CHECK(first == 1 || first == 2);
	if (fin->r == HELLO_OK)
		CHECK(first == fin->ch.bytes);

	ref_read(buf, n, &ref);
	switch (ref.r) {
	case REF_OK:
		CHECK(fin->r == HELLO_OK);
		CHECK(memcmp(&ref.ch, &fin->ch, sizeof(ref.ch)) == 0);
		break;
	case REF_NOT_TLS:
		CHECK(fin->r == HELLO_NOT_TLS);
		break;
	case REF_BAD:
		CHECK(fin->r == HELLO_BAD);
		break;
	case REF_SHORT:
		CHECK(fin->r == HELLO_INCOMPLETE || fin->r == HELLO_BAD);
		break;
	}
	if (fin->r == HELLO_INCOMPLETE)
		CHECK(ref.r == REF_SHORT);
}

/*
 * Frame msg[0..n) into records: as few as can be (seed 0), or of sizes
 * drawn from seed, now tiny, now a few hundred bytes.
 */
static size_t
frame(const uint8_t *msg, size_t n, uint32_t seed, uint8_t *out)
{
	size_t	 p = 0, o = 0, k;

	while (p < n) {
		k = n - p;
		if (seed != 0) {
			seed = seed * 1103515245u + 12345u;
			k = 1 + (seed >> 16) % ((seed >> 12 & 1) ? 8 : 700);
		}
		if (k > n - p)
			k = n - p;
		if (k > CLIENTHELLO_RECORD_MAX)
			k = CLIENTHELLO_RECORD_MAX;
		out[o++] = 22;
		out[o++] = 3;
		out[o++] = p == 0 ? 1 : 3;
		out[o++] = (uint8_t)(k >> 8);
		out[o++] = (uint8_t)k;
		memcpy(out + o, msg + p, k);
		o += k;
		p += k;
	}
	return o;
}

/* The handshake bytes of data's records, leniently (up to a bad header). */
static size_t
payload(const uint8_t *data, size_t size, uint8_t *msg, size_t cap)
{
	size_t	 p = 0, n = 0, rl;

	while (size - p >= 5 && data[p] == 22) {
		rl = get16(data + p + 3);
		p += 5;
		if (rl > size - p)
			rl = size - p;
		if (rl > cap - n)
			rl = cap - n;
		memcpy(msg + n, data + p, rl);
		n += rl;
		p += rl;
	}
	return n;
}

/* How many records frame() made. */
static size_t
records(const uint8_t *framed, size_t len)
{
	size_t	 p = 0, c = 0;

	while (p < len) {
		p += 5 + get16(framed + p + 3);
		c++;
	}
	return c;
}

static void
check_reframed(const uint8_t *data, size_t size, const struct verdict *orig)
{
	static uint8_t	 msg[CLIENTHELLO_MAX + 1];
	struct verdict	 one, many;
	uint32_t	 seed = 2166136261u;
	uint8_t		*a, *b;
	size_t		 n, na, nb, cap;

	/* an accepted hello's records only: what follows is not its */
	if (orig->r == HELLO_OK)
		size = orig->ch.bytes;
	n = payload(data, size, msg, sizeof(msg));
	if (n == 0)
		return;
	/* bytes past the message: framed apart from it they would be
	 * another record, unlooked at; framed with it, refused.  Drop them
	 * so that framing is all the two streams differ in. */
	if (n >= 4 && n > 4 + ((size_t)msg[1] << 16 | (size_t)msg[2] << 8 |
	    msg[3]))
		n = 4 + ((size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3]);
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 16777619u;
	cap = n + 5 * (n + 1);
	a = malloc(cap);
	b = malloc(cap);
	CHECK(a != NULL && b != NULL);

	na = frame(msg, n, 0, a);	/* one record (two past 2^14) */
	nb = frame(msg, n, seed | 1, b);
	/* exact-size copies, so a read past the end is caught */
	a = realloc(a, na);
	b = realloc(b, nb);
	CHECK(a != NULL && b != NULL);
	check_stream(a, na, &one);
	check_stream(b, nb, &many);

	if (orig->r == HELLO_OK)
		CHECK(one.r == HELLO_OK);
	if (records(b, nb) <= CLIENTHELLO_RECORDS_MAX &&
	    records(a, na) <= CLIENTHELLO_RECORDS_MAX) {
		CHECK((one.r == HELLO_OK) == (many.r == HELLO_OK));
		if (one.r == HELLO_OK) {
			CHECK(strcmp(one.ch.sni, many.ch.sni) == 0);
			CHECK(one.ch.has_sni == many.ch.has_sni);
			CHECK(one.ch.has_alpn == many.ch.has_alpn);
			CHECK(one.ch.legacy_version == many.ch.legacy_version);
			CHECK(one.ch.bytes == na && many.ch.bytes == nb);
		}
	}
	if (orig->r == HELLO_OK) {
		CHECK(strcmp(one.ch.sni, orig->ch.sni) == 0);
		CHECK(one.ch.has_alpn == orig->ch.has_alpn);
	}
	free(a);
	free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verdict	 fin;
	uint8_t		*buf;

	/* past the bound a verdict is certain; keep runs short */
	if (size > CLIENTHELLO_READ_MAX + 64)
		return 0;
	buf = malloc(size ? size : 1);
	CHECK(buf != NULL);
	memcpy(buf, data, size);
	check_stream(buf, size, &fin);
	free(buf);
	check_reframed(data, size, &fin);
	return 0;
}
