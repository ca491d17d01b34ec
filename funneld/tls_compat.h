/*
 * The differences between the mbedTLS lines funneld builds against (2.28 on
 * Debian 12, 3.6 on Debian 13) in the public API, in one place: tls.c calls
 * these and has no version #if of its own.
 */
#ifndef FUNNELD_TLS_COMPAT_H
#define FUNNELD_TLS_COMPAT_H

#include <mbedtls/pk.h>
#include <mbedtls/version.h>

#if MBEDTLS_VERSION_MAJOR >= 3
#define TLS_COMPAT_MBEDTLS3 1
#endif

typedef int (*tls_rng_fn)(void *, unsigned char *, size_t);

static inline int
compat_pk_parse_keyfile(mbedtls_pk_context *key, const char *path, tls_rng_fn rng)
{
#ifdef TLS_COMPAT_MBEDTLS3
	return mbedtls_pk_parse_keyfile(key, path, NULL, rng, NULL);
#else
	(void)rng;
	return mbedtls_pk_parse_keyfile(key, path, NULL);
#endif
}

static inline int
compat_pk_check_pair(const mbedtls_pk_context *pub, const mbedtls_pk_context *prv, tls_rng_fn rng)
{
#ifdef TLS_COMPAT_MBEDTLS3
	return mbedtls_pk_check_pair(pub, prv, rng, NULL);
#else
	(void)rng;
	return mbedtls_pk_check_pair(pub, prv);
#endif
}

static inline int
compat_pk_sign(mbedtls_pk_context *key, const unsigned char *hash, size_t hlen, unsigned char *sig, size_t cap,
    size_t *siglen, tls_rng_fn rng)
{
#ifdef TLS_COMPAT_MBEDTLS3
	return mbedtls_pk_sign(key, MBEDTLS_MD_SHA256, hash, hlen, sig, cap, siglen, rng, NULL);
#else
	(void)cap;
	return mbedtls_pk_sign(key, MBEDTLS_MD_SHA256, hash, hlen, sig, siglen, rng, NULL);
#endif
}

#endif
