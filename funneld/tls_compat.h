/*
 * The differences between the mbedTLS lines funneld builds against (2.28 on
 * Debian 12, 3.6 on Debian 13) in the public API, in one place: tls.c and
 * tls_suites.c call these and have no version #if of their own.
 */
#ifndef FUNNELD_TLS_COMPAT_H
#define FUNNELD_TLS_COMPAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/version.h>

#include "result.h"

#if MBEDTLS_VERSION_MAJOR >= 3
#define TLS_COMPAT_MBEDTLS3 1
#include <psa/crypto.h>
#endif

/*
 * A TLS 1.3 server from 3.6.6 on only: that release fixes a
 * HelloRetryRequest that downgrades a 1.3 ticket resumption to 1.2 with an
 * all-zero master secret.
 */
#define COMPAT_TLS13_MIN 0x03060600
#if defined(TLS_COMPAT_MBEDTLS3) && MBEDTLS_VERSION_NUMBER >= COMPAT_TLS13_MIN && \
    defined(MBEDTLS_SSL_PROTO_TLS1_3) && defined(MBEDTLS_SSL_SRV_C)
#define TLS_COMPAT_TLS13 1
#endif

/* TLS 1.3 is compiled in, and the library running is recent enough for it. */
static inline bool
compat_tls13(void)
{
#ifdef TLS_COMPAT_TLS13
	return mbedtls_version_get_number() >= COMPAT_TLS13_MIN;
#else
	return false;
#endif
}

/* Once per process, before any thread runs TLS: 3.x's TLS 1.3 keys come from PSA. */
static inline int
compat_global_init(void)
{
#ifdef TLS_COMPAT_MBEDTLS3
	return psa_crypto_init() == PSA_SUCCESS ? 0 : -1;
#else
	return 0;
#endif
}

static inline void
compat_global_done(void)
{
#ifdef TLS_COMPAT_MBEDTLS3
	mbedtls_psa_crypto_free();
#endif
}

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

/* The versions offered: TLS 1.2 and/or 1.3 (never neither; 1.3 only where compat_tls13()). */
static inline void
compat_conf_versions(mbedtls_ssl_config *c, bool v12, bool v13)
{
#ifdef TLS_COMPAT_MBEDTLS3
	mbedtls_ssl_conf_min_tls_version(c, v12 ? MBEDTLS_SSL_VERSION_TLS1_2 : MBEDTLS_SSL_VERSION_TLS1_3);
	mbedtls_ssl_conf_max_tls_version(c, v13 ? MBEDTLS_SSL_VERSION_TLS1_3 : MBEDTLS_SSL_VERSION_TLS1_2);
#else
	(void)v12;
	(void)v13;
	mbedtls_ssl_conf_min_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
}

/* TLS 1.3: an (EC)DHE exchange in every handshake (no psk_ke, which has no
 * forward secrecy), and early data refused wherever the library has it. */
static inline void
compat_conf_tls13(mbedtls_ssl_config *c)
{
#ifdef TLS_COMPAT_TLS13
	mbedtls_ssl_conf_tls13_key_exchange_modes(c, MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ALL);
#ifdef MBEDTLS_SSL_EARLY_DATA
	mbedtls_ssl_conf_early_data(c, MBEDTLS_SSL_EARLY_DATA_DISABLED);
#endif
#else
	(void)c;
#endif
}

/* Key exchange groups: 2.28 takes mbedTLS curve ids, 3.x TLS (IANA) group ids. */
#ifdef TLS_COMPAT_MBEDTLS3
typedef uint16_t compat_group;
#define COMPAT_GROUP_END 0
#else
typedef mbedtls_ecp_group_id compat_group;
#define COMPAT_GROUP_END MBEDTLS_ECP_DP_NONE
#endif

static inline compat_group
compat_group_of(mbedtls_ecp_group_id id)
{
#ifdef TLS_COMPAT_MBEDTLS3
	const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_grp_id(id);

	return ci != NULL ? ci->tls_id : COMPAT_GROUP_END;
#else
	return id;
#endif
}

static inline void
compat_conf_groups(mbedtls_ssl_config *c, const compat_group *groups)
{
#ifdef TLS_COMPAT_MBEDTLS3
	mbedtls_ssl_conf_groups(c, groups);
#else
	mbedtls_ssl_conf_curves(c, groups);
#endif
}

/*
 * Session cache callbacks, written once with the session ID as an argument
 * (3.x's shape); 2.28 keeps the ID in the session, and the adapters below
 * take it from there.  struct compat_cache must outlive the configuration.
 */
struct compat_cache {
	void *arg;
	int (*get)(void *arg, const unsigned char *id, size_t len, mbedtls_ssl_session *session);
	int (*set)(void *arg, const unsigned char *id, size_t len, const mbedtls_ssl_session *session);
};

#ifndef TLS_COMPAT_MBEDTLS3
static inline int
compat_cache_get_adapter(void *arg, mbedtls_ssl_session *session)
{
	const struct compat_cache *cc = arg;

	return cc->get(cc->arg, session->id, session->id_len, session);
}

static inline int
compat_cache_set_adapter(void *arg, const mbedtls_ssl_session *session)
{
	const struct compat_cache *cc = arg;

	return cc->set(cc->arg, session->id, session->id_len, session);
}
#endif

static inline void
compat_conf_session_cache(mbedtls_ssl_config *c, struct compat_cache *cc)
{
#ifdef TLS_COMPAT_MBEDTLS3
	mbedtls_ssl_conf_session_cache(c, cc->arg, cc->get, cc->set);
#else
	mbedtls_ssl_conf_session_cache(c, cc, compat_cache_get_adapter, compat_cache_set_adapter);
#endif
}

static inline int
compat_cache_get(mbedtls_ssl_cache_context *cache, const unsigned char *id, size_t len, mbedtls_ssl_session *session)
{
#ifdef TLS_COMPAT_MBEDTLS3
	return mbedtls_ssl_cache_get(cache, id, len, session);
#else
	(void)id;
	(void)len;
	return mbedtls_ssl_cache_get(cache, session);
#endif
}

static inline int
compat_cache_set(mbedtls_ssl_cache_context *cache, const unsigned char *id, size_t len,
    const mbedtls_ssl_session *session)
{
#ifdef TLS_COMPAT_MBEDTLS3
	return mbedtls_ssl_cache_set(cache, id, len, session);
#else
	(void)id;
	(void)len;
	return mbedtls_ssl_cache_set(cache, session);
#endif
}

/*
 * Handshake errors whose names differ between the lines (3.x removed the
 * BAD_HS_* family and reused some of their values: the labels are guarded,
 * never aliased by number).  HS_FAIL_NONE for every other error.
 */
static inline enum hs_failure
compat_hs_failure(int err)
{
	switch (err) {
#ifdef TLS_COMPAT_MBEDTLS3
	case MBEDTLS_ERR_SSL_HANDSHAKE_FAILURE:         /* no suite, group or signature in common */
		return HS_FAIL_NO_SHARED_CIPHER;
	case MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION:
		return HS_FAIL_PROTOCOL_VERSION;
	case MBEDTLS_ERR_SSL_DECODE_ERROR:
	case MBEDTLS_ERR_SSL_ILLEGAL_PARAMETER:
		return HS_FAIL_BAD_CLIENT_HELLO;
#else
	case MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN:
	case MBEDTLS_ERR_SSL_NO_USABLE_CIPHERSUITE:
		return HS_FAIL_NO_SHARED_CIPHER;
	case MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION:
		return HS_FAIL_PROTOCOL_VERSION;
	case MBEDTLS_ERR_SSL_BAD_HS_CLIENT_HELLO:
		return HS_FAIL_BAD_CLIENT_HELLO;
#endif
	default:
		return HS_FAIL_NONE;
	}
}

/* What funneld returns when it ends a handshake mbedTLS would have completed. */
#ifdef TLS_COMPAT_MBEDTLS3
#define COMPAT_ERR_HANDSHAKE_REFUSED MBEDTLS_ERR_SSL_HANDSHAKE_FAILURE
#else
#define COMPAT_ERR_HANDSHAKE_REFUSED MBEDTLS_ERR_SSL_BAD_HS_CLIENT_HELLO
#endif

#endif
