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
 * The record buffers come from calloc, once, at mbedtls_ssl_setup(), in
 * both lines: malloc_usable_size() and madvise() below rely on it.
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
		snprintf(what, len, "mbedTLS %s: record buffer trim%s", MBEDTLS_VERSION_STRING,
#if defined(BASE_TABLES)
		    " and shared ECDHE base-point tables"
#elif defined(INTERNALS_3_6)
		    " and TLS 1.3 handshake release"
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
 * (2.28 and 3.6 alike: ssl_msg.c's in/out pointers).  The whole pages past
 * that are dropped (they read back as zeros).
 */
#define TRIM_KEEP 64

static void
trim_buffer(unsigned char *p)
{
	long page = sysconf(_SC_PAGESIZE);
	uintptr_t start, end;

	if (p == NULL || page <= 0)
		return;
	start = ((uintptr_t)p + TRIM_KEEP + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
	end = ((uintptr_t)p + malloc_usable_size(p)) & ~((uintptr_t)page - 1);
	if (end > start)
		madvise((void *)start, end - start, MADV_DONTNEED);
}

bool
tls_internals_trim(mbedtls_ssl_context *ssl)
{
	bool trimmed = false;

	if (!active)
		return false;
	/* in_left: part of a record is in; check_pending: a whole one is not processed yet. */
	if (ssl->in_left == 0 && mbedtls_ssl_check_pending(ssl) == 0 && mbedtls_ssl_get_bytes_avail(ssl) == 0) {
		trim_buffer(ssl->in_buf);
		trimmed = true;
	}
	if (ssl->out_left == 0) {
		trim_buffer(ssl->out_buf);
		trimmed = true;
	}
	return trimmed;
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
bool tls_internals_trim(mbedtls_ssl_context *ssl) { (void)ssl; return false; }
void tls_internals_done(void) {}

#endif
