/* mbedTLS internals, fenced; see tls_internals.h. */

/* 3.x hides private fields behind MBEDTLS_PRIVATE(): this file alone may see them. */
#define MBEDTLS_ALLOW_PRIVATE_ACCESS

#include <stdio.h>

#include <mbedtls/version.h>

#include "tls_internals.h"

#if MBEDTLS_VERSION_NUMBER >= 0x021C0000 && MBEDTLS_VERSION_NUMBER < 0x021D0000
#define INTERNALS_2_28 1
#elif MBEDTLS_VERSION_NUMBER >= 0x03060000 && MBEDTLS_VERSION_NUMBER < 0x03070000
#define INTERNALS_3_6 1
#endif

#if defined(INTERNALS_2_28) || defined(INTERNALS_3_6)

#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mbedtls/ecp.h>
#include <mbedtls/platform.h>
#ifdef INTERNALS_2_28
#include <mbedtls/ssl_internal.h>       /* ssl->handshake and ssl->state */
#else
/* Exported by 3.6's libmbedtls, declared in its uninstalled ssl_misc.h. */
void mbedtls_ssl_handshake_free(mbedtls_ssl_context *ssl);
void mbedtls_ssl_transform_free(mbedtls_ssl_transform *transform);
#endif

/*
 * The record buffers come from calloc, once, at mbedtls_ssl_setup(), and
 * mbedtls_ssl_free() frees them with free(), in both lines: releasing one
 * with free() and putting calloc()'s in its place below relies on it.
 */
#if defined(MBEDTLS_PLATFORM_MEMORY) || defined(MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH)
#error "tls_internals.c assumes mbedtls_calloc is calloc and fixed-size record buffers"
#endif

/* 3.x loads ROM tables for its curves itself, and makes 1.3 keys in PSA. */
#if defined(INTERNALS_2_28) && defined(MBEDTLS_ECDH_LEGACY_CONTEXT) && MBEDTLS_ECP_FIXED_POINT_OPTIM == 1
#define BASE_TABLES 1
#endif

static bool active;

bool
tls_internals_init(char *what, size_t len)
{
	unsigned running = mbedtls_version_get_number();

	active = running == MBEDTLS_VERSION_NUMBER;
	if (active)
		snprintf(what, len, "mbedTLS %s: internals in use (idle record buffers released%s)", MBEDTLS_VERSION_STRING,
#if defined(BASE_TABLES)
		    ", shared ECDHE base-point tables"
#elif defined(INTERNALS_3_6)
		    ", TLS 1.3 handshake state freed"
#else
		    ""
#endif
		    );
	else
		snprintf(what, len, "mbedTLS: built with %s but running %u.%u.%u: internals not used",
		    MBEDTLS_VERSION_STRING, running >> 24, (running >> 16) & 0xff, (running >> 8) & 0xff);
	return active;
}

#ifdef BASE_TABLES
/*
 * ECDHE key generation computes k·G.  For each handshake mbedTLS 2.28 loads
 * a fresh group, precomputes the comb table of G on the first
 * multiplication, and throws it away with the handshake: about 40% of a
 * P-256 key generation here (698 µs fresh, 431 µs with the table).  So each
 * curve gets one group whose table is computed once, at load, and lent to a
 * handshake's group while it makes its key: the lend happens in the random
 * generator, which the key generation calls before it multiplies, and the
 * table is taken back as soon as mbedtls_ssl_handshake() returns, before
 * anything can free that group.  The table is read only (multiples of G,
 * public), so workers share it.  Groups live until the process ends.
 */
static _Atomic(mbedtls_ecp_group *) base_tables[MBEDTLS_ECP_DP_MAX];

void
tls_internals_prepare_curve(int id, int (*rng)(void *, unsigned char *, size_t))
{
	mbedtls_ecp_group *g;
	mbedtls_mpi d;
	mbedtls_ecp_point q;

	if (!active || id <= 0 || id >= MBEDTLS_ECP_DP_MAX || atomic_load(&base_tables[id]) != NULL ||
	    (g = calloc(1, sizeof(*g))) == NULL)
		return;
	mbedtls_ecp_group_init(g);
	mbedtls_mpi_init(&d);
	mbedtls_ecp_point_init(&q);
	/* Curve25519 and Curve448 use a ladder, no table. */
	if (mbedtls_ecp_group_load(g, (mbedtls_ecp_group_id)id) == 0 &&
	    mbedtls_ecp_get_type(g) == MBEDTLS_ECP_TYPE_SHORT_WEIERSTRASS &&
	    mbedtls_ecp_gen_keypair(g, &d, &q, rng, NULL) == 0 && g->T != NULL) {
		mbedtls_ecp_group *none = NULL;
		if (atomic_compare_exchange_strong(&base_tables[id], &none, g))
			g = NULL;
	}
	mbedtls_mpi_free(&d);
	mbedtls_ecp_point_free(&q);
	if (g != NULL) {
		mbedtls_ecp_group_free(g);
		free(g);
	}
}

static mbedtls_ecp_group *
handshake_group(mbedtls_ssl_context *ssl)
{
	return ssl != NULL && ssl->handshake != NULL ? &ssl->handshake->ecdh_ctx.grp : NULL;
}

void
tls_internals_lend_base_table(mbedtls_ssl_context *ssl)
{
	mbedtls_ecp_group *grp;
	const mbedtls_ecp_group *t;

	/* Only for the key of ServerKeyExchange: the client cannot answer it
	 * before this mbedtls_ssl_handshake() returns (its flight is only queued),
	 * so nothing frees the group before tls_internals_take_back(). */
	if (!active || (grp = handshake_group(ssl)) == NULL || ssl->state != MBEDTLS_SSL_SERVER_KEY_EXCHANGE ||
	    grp->T != NULL || (unsigned)grp->id >= MBEDTLS_ECP_DP_MAX ||
	    (t = atomic_load(&base_tables[grp->id])) == NULL || t->nbits != grp->nbits)
		return;
	grp->T = t->T;
	grp->T_size = t->T_size;
}

void
tls_internals_take_back(mbedtls_ssl_context *ssl)
{
	mbedtls_ecp_group *grp;
	const mbedtls_ecp_group *t;

	if (active && (grp = handshake_group(ssl)) != NULL && grp->T != NULL &&
	    (unsigned)grp->id < MBEDTLS_ECP_DP_MAX && (t = atomic_load(&base_tables[grp->id])) != NULL &&
	    grp->T == t->T) {
		grp->T = NULL;
		grp->T_size = 0;
	}
}

static void
base_tables_free(void)
{
	for (size_t i = 0; i < MBEDTLS_ECP_DP_MAX; i++) {
		mbedtls_ecp_group *g = atomic_exchange(&base_tables[i], NULL);
		if (g != NULL) {
			mbedtls_ecp_group_free(g);
			free(g);
		}
	}
}
#else
void tls_internals_prepare_curve(int id, int (*rng)(void *, unsigned char *, size_t)) { (void)id; (void)rng; }
void tls_internals_lend_base_table(mbedtls_ssl_context *ssl) { (void)ssl; }
void tls_internals_take_back(mbedtls_ssl_context *ssl) { (void)ssl; }
static void base_tables_free(void) {}
#endif

#ifdef INTERNALS_3_6
/*
 * A 3.6 TLS 1.3 server keeps its handshake parameters (transcript hashes,
 * key schedule, key share: about 7 KiB) until the connection ends, where
 * 1.2 frees them as the handshake completes
 * (mbedtls_ssl_handshake_wrapup_free_hs_transform).  Free them as
 * mbedtls_ssl_free() would, with what it frees along with them (1.2's
 * transform, made for every handshake; the negotiated session, already
 * moved on in 1.3): after the handshake a 1.3 server reads none of it (it
 * sends no post-handshake message, and answers a client's with
 * UNEXPECTED_MESSAGE).
 */
void
tls_internals_handshake_done(mbedtls_ssl_context *ssl)
{
	if (!active || ssl->handshake == NULL || mbedtls_ssl_get_version_number(ssl) != MBEDTLS_SSL_VERSION_TLS1_3 ||
	    !mbedtls_ssl_is_handshake_over(ssl))
		return;
	mbedtls_ssl_handshake_free(ssl);
	mbedtls_free(ssl->handshake);
	ssl->handshake = NULL;
	mbedtls_ssl_transform_free(ssl->transform_negotiate);
	mbedtls_free(ssl->transform_negotiate);
	ssl->transform_negotiate = NULL;
	mbedtls_ssl_session_free(ssl->session_negotiate);
	mbedtls_free(ssl->session_negotiate);
	ssl->session_negotiate = NULL;
}
#else
void tls_internals_handshake_done(mbedtls_ssl_context *ssl) { (void)ssl; }
#endif

/*
 * Between records a record buffer holds only its 8-byte sequence number and
 * the record header, at its start; the rest is scratch for the next record
 * (2.28 and 3.6 alike: ssl_msg.c's in/out pointers).  An idle connection's
 * buffer is released whole: those first bytes and where mbedTLS points into
 * it are kept aside, and a new buffer of the same size (zeros past them, as
 * the scratch reads after a trim) takes its place before mbedTLS runs again.
 */
#define KEEP_BYTES 64
#define BUFFER_POINTERS_MAX 7

struct parked_buffer {
	size_t size;                    /* of the buffer released; 0: it was kept */
	size_t at[BUFFER_POINTERS_MAX]; /* each pointer's offset into it */
	unsigned char head[KEEP_BYTES];
};

struct tls_parked {
	struct parked_buffer in, out;
};

/* The buffer (first) and mbedTLS's pointers into it; in_offt is NULL between records. */
static size_t
buffer_pointers(mbedtls_ssl_context *ssl, bool input, unsigned char **p[BUFFER_POINTERS_MAX])
{
	size_t n = 0;

	if (input) {
		p[n++] = &ssl->in_buf;
		p[n++] = &ssl->in_ctr;
		p[n++] = &ssl->in_hdr;
#ifdef MBEDTLS_SSL_DTLS_CONNECTION_ID
		p[n++] = &ssl->in_cid;
#endif
		p[n++] = &ssl->in_len;
		p[n++] = &ssl->in_iv;
		p[n++] = &ssl->in_msg;
	} else {
		p[n++] = &ssl->out_buf;
		p[n++] = &ssl->out_ctr;
		p[n++] = &ssl->out_hdr;
#ifdef MBEDTLS_SSL_DTLS_CONNECTION_ID
		p[n++] = &ssl->out_cid;
#endif
		p[n++] = &ssl->out_len;
		p[n++] = &ssl->out_iv;
		p[n++] = &ssl->out_msg;
	}
	return n;
}

/*
 * Plaintext was in a buffer about to be freed: wipe it, as mbedtls_ssl_free()
 * does.  Its whole pages go back to the kernel (reading as zeros from then
 * on), or they would stay resident in the heap, free, until reused.
 */
static void
wipe(unsigned char *p, size_t size)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t end = ((uintptr_t)p + size) & ~(page - 1);

	if (end <= start || madvise((void *)start, end - start, MADV_DONTNEED) != 0) {
		mbedtls_platform_zeroize(p, size);
		return;
	}
	mbedtls_platform_zeroize(p, start - (uintptr_t)p);
	mbedtls_platform_zeroize((void *)end, (uintptr_t)p + size - end);
}

static bool
release_buffer(mbedtls_ssl_context *ssl, bool input, struct parked_buffer *pb)
{
	unsigned char **p[BUFFER_POINTERS_MAX];
	size_t n = buffer_pointers(ssl, input, p);
	unsigned char *buf = *p[0];
	size_t size;

	if (buf == NULL || (size = malloc_usable_size(buf)) < KEEP_BYTES)
		return false;
	for (size_t i = 1; i < n; i++) {
		if (*p[i] < buf || *p[i] > buf + size)
			return false;
		pb->at[i] = (size_t)(*p[i] - buf);
	}
	memcpy(pb->head, buf, KEEP_BYTES);
	wipe(buf, size);
	free(buf);
	pb->size = size;
	for (size_t i = 0; i < n; i++)
		*p[i] = NULL;
	return true;
}

static bool
restore_buffer(mbedtls_ssl_context *ssl, bool input, struct parked_buffer *pb)
{
	unsigned char **p[BUFFER_POINTERS_MAX];
	size_t n = buffer_pointers(ssl, input, p);
	unsigned char *buf;

	if (pb->size == 0)
		return true;
	if ((buf = calloc(1, pb->size)) == NULL)
		return false;
	memcpy(buf, pb->head, KEEP_BYTES);
	*p[0] = buf;
	for (size_t i = 1; i < n; i++)
		*p[i] = buf + pb->at[i];
	pb->size = 0;
	return true;
}

bool
tls_internals_release(mbedtls_ssl_context *ssl, struct tls_parked **parked)
{
	struct tls_parked *tp;
	bool in, out;

	if (!active || *parked != NULL)
		return false;
	if ((tp = calloc(1, sizeof(*tp))) == NULL)
		return false;
	/* in_left: part of a record is in; check_pending: a whole one is not processed yet. */
	in = ssl->in_left == 0 && mbedtls_ssl_check_pending(ssl) == 0 && mbedtls_ssl_get_bytes_avail(ssl) == 0 &&
	    release_buffer(ssl, true, &tp->in);
	out = ssl->out_left == 0 && release_buffer(ssl, false, &tp->out);
	if (!in && !out) {
		free(tp);
		return false;
	}
	*parked = tp;
	return true;
}

bool
tls_internals_restore(mbedtls_ssl_context *ssl, struct tls_parked **parked)
{
	struct tls_parked *tp = *parked;

	if (tp == NULL)
		return true;
	if (!restore_buffer(ssl, true, &tp->in) || !restore_buffer(ssl, false, &tp->out))
		return false;   /* what was restored stays; tls_internals_forget() frees the rest */
	free(tp);
	*parked = NULL;
	return true;
}

void
tls_internals_forget(struct tls_parked **parked)
{
	free(*parked);
	*parked = NULL;
}

void
tls_internals_done(void)
{
	base_tables_free();
}

#else   /* neither 2.28.x nor 3.6.x: the public API only */

bool
tls_internals_init(char *what, size_t len)
{
	snprintf(what, len, "mbedTLS %s: public API only", MBEDTLS_VERSION_STRING);
	return false;
}

void tls_internals_prepare_curve(int id, int (*rng)(void *, unsigned char *, size_t)) { (void)id; (void)rng; }
void tls_internals_lend_base_table(mbedtls_ssl_context *ssl) { (void)ssl; }
void tls_internals_take_back(mbedtls_ssl_context *ssl) { (void)ssl; }
void tls_internals_handshake_done(mbedtls_ssl_context *ssl) { (void)ssl; }
bool tls_internals_release(mbedtls_ssl_context *ssl, struct tls_parked **parked) { (void)ssl; (void)parked; return false; }
bool tls_internals_restore(mbedtls_ssl_context *ssl, struct tls_parked **parked) { (void)ssl; (void)parked; return true; }
void tls_internals_forget(struct tls_parked **parked) { (void)parked; }
void tls_internals_done(void) {}

#endif
