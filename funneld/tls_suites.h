/*
 * TLS versions, cipher suite and curve names and the policy on them: which
 * the configuration may name, and the defaults.  The one place the
 * configuration meets mbedTLS's tables, so config.c includes no mbedTLS
 * header.  Ids are mbedTLS's (ciphersuite ids, mbedtls_ecp_group_id values).
 */
#ifndef FUNNELD_TLS_SUITES_H
#define FUNNELD_TLS_SUITES_H

#include <stddef.h>

#define TLS_SUITES_MAX 64
#define TLS_CURVES_MAX 8

/* TLS versions, as bits of a set. */
#define TLS_V12 0x1
#define TLS_V13 0x2

/*
 * "1.2" or "1.3" ("TLSv1.3" too, any case): its TLS_V* bit; 0 when unknown;
 * -1 when known but not offered (why says what is).
 */
int tls_version_lookup(const char *name, const char **why);

/* Every version this mbedTLS serves: the default. */
unsigned tls_versions_available(void);

/* The version a suite id is for (TLS_V12 or TLS_V13). */
unsigned tls_suite_version(int id);

/*
 * A suite by its mbedTLS or OpenSSL name, any case.  Returns its id (> 0);
 * 0 when unknown to this mbedTLS; -1 when known but not allowed (why says
 * what is allowed).
 */
int tls_suite_lookup(const char *name, const char **why);

/* A curve by name ("x25519", "secp256r1", "P-256", "prime256v1", ...): id > 0, 0 unknown, -1 not allowed. */
int tls_curve_lookup(const char *name, const char **why);

/* The defaults present in this mbedTLS, in preference order; returns how many. */
size_t tls_suites_default(int *out, size_t cap);
size_t tls_curves_default(int *out, size_t cap);

#endif
