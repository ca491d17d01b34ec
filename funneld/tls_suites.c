/* TLS version, cipher suite and curve policy; see tls_suites.h. */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/ecp.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>

#include "tls_compat.h"
#include "tls_suites.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Server preference order (DESIGN.md §2: "safe default").  Each version
 * looks only at its own; TLS 1.2 takes our order, 1.3 the client's.
 */
static const char *const default_suites[] = {
	"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
	"TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
	"TLS1-3-AES-128-GCM-SHA256",
	"TLS1-3-CHACHA20-POLY1305-SHA256",
	"TLS1-3-AES-256-GCM-SHA384",
};
static const char *const default_curves[] = { "x25519", "secp256r1" };

/*
 * OpenSSL spellings of mbedTLS suites.  The non-AEAD ones are here so that
 * a familiar name gets "not allowed" rather than "unknown".
 */
static const struct {
	const char *openssl, *mbedtls;
} suite_aliases[] = {
	{ "TLS_AES_128_GCM_SHA256", "TLS1-3-AES-128-GCM-SHA256" },
	{ "TLS_AES_256_GCM_SHA384", "TLS1-3-AES-256-GCM-SHA384" },
	{ "TLS_CHACHA20_POLY1305_SHA256", "TLS1-3-CHACHA20-POLY1305-SHA256" },
	{ "TLS_AES_128_CCM_SHA256", "TLS1-3-AES-128-CCM-SHA256" },
	{ "TLS_AES_128_CCM_8_SHA256", "TLS1-3-AES-128-CCM-8-SHA256" },
	{ "ECDHE-ECDSA-CHACHA20-POLY1305", "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256" },
	{ "ECDHE-RSA-CHACHA20-POLY1305", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256" },
	{ "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256" },
	{ "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384" },
	{ "ECDHE-RSA-AES128-GCM-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256" },
	{ "ECDHE-RSA-AES256-GCM-SHA384", "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384" },
	{ "ECDHE-ECDSA-ARIA128-GCM-SHA256", "TLS-ECDHE-ECDSA-WITH-ARIA-128-GCM-SHA256" },
	{ "ECDHE-ECDSA-ARIA256-GCM-SHA384", "TLS-ECDHE-ECDSA-WITH-ARIA-256-GCM-SHA384" },
	{ "ECDHE-ARIA128-GCM-SHA256", "TLS-ECDHE-RSA-WITH-ARIA-128-GCM-SHA256" },
	{ "ECDHE-ARIA256-GCM-SHA384", "TLS-ECDHE-RSA-WITH-ARIA-256-GCM-SHA384" },
	{ "ECDHE-ECDSA-AES128-SHA", "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA" },
	{ "ECDHE-ECDSA-AES256-SHA", "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA" },
	{ "ECDHE-ECDSA-AES128-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256" },
	{ "ECDHE-ECDSA-AES256-SHA384", "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384" },
	{ "ECDHE-RSA-AES128-SHA", "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA" },
	{ "ECDHE-RSA-AES256-SHA", "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA" },
	{ "ECDHE-RSA-AES128-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256" },
	{ "ECDHE-RSA-AES256-SHA384", "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384" },
	{ "ECDHE-ECDSA-AES128-CCM", "TLS-ECDHE-ECDSA-WITH-AES-128-CCM" },
	{ "ECDHE-ECDSA-AES256-CCM", "TLS-ECDHE-ECDSA-WITH-AES-256-CCM" },
	{ "DHE-RSA-AES128-GCM-SHA256", "TLS-DHE-RSA-WITH-AES-128-GCM-SHA256" },
	{ "DHE-RSA-AES256-GCM-SHA384", "TLS-DHE-RSA-WITH-AES-256-GCM-SHA384" },
	{ "DHE-RSA-CHACHA20-POLY1305", "TLS-DHE-RSA-WITH-CHACHA20-POLY1305-SHA256" },
	{ "AES128-GCM-SHA256", "TLS-RSA-WITH-AES-128-GCM-SHA256" },
	{ "AES256-GCM-SHA384", "TLS-RSA-WITH-AES-256-GCM-SHA384" },
	{ "AES128-SHA", "TLS-RSA-WITH-AES-128-CBC-SHA" },
	{ "AES256-SHA", "TLS-RSA-WITH-AES-256-CBC-SHA" },
};

static const struct {
	const char *alias, *name;
} curve_aliases[] = {
	{ "p-256", "secp256r1" },
	{ "prime256v1", "secp256r1" },
	{ "p-384", "secp384r1" },
	{ "p-521", "secp521r1" },
};
static const char *const curves_allowed[] = { "x25519", "secp256r1", "secp384r1", "secp521r1" };

#define TLS13_PREFIX "TLS1-3-"

/*
 * TLS 1.2: ECDHE key exchange with an AEAD cipher; TLS 1.3 (always
 * (EC)DHE here, see compat_conf_tls13()): GCM or ChaCha20-Poly1305.  Judged
 * by the suite's name, which mbedTLS 2.28 and 3.6 both publish (its fields
 * are private in 3.6): TLS-ECDHE-{ECDSA,RSA}-WITH-<cipher>-{GCM-<hash>,
 * CHACHA20-POLY1305-<hash>} and TLS1-3-{AES-*-GCM,CHACHA20-POLY1305}-<hash>.
 */
static bool
suite_acceptable(const char *name)
{
	if (name == NULL || (strncmp(name, "TLS-ECDHE-ECDSA-WITH-", 21) != 0 &&
	    strncmp(name, "TLS-ECDHE-RSA-WITH-", 19) != 0 && strncmp(name, TLS13_PREFIX, strlen(TLS13_PREFIX)) != 0))
		return false;
	return strstr(name, "-GCM-") != NULL || strstr(name, "CHACHA20-POLY1305-") != NULL;
}

unsigned
tls_suite_version(int id)
{
	const char *name = mbedtls_ssl_get_ciphersuite_name(id);

	return name != NULL && strncmp(name, TLS13_PREFIX, strlen(TLS13_PREFIX)) == 0 ? TLS_V13 : TLS_V12;
}

unsigned
tls_versions_available(void)
{
	return TLS_V12 | (compat_tls13() ? TLS_V13 : 0);
}

int
tls_version_lookup(const char *name, const char **why)
{
	static const struct {
		const char *name;
		unsigned bit;
	} versions[] = {
		{ "1.2", TLS_V12 }, { "tlsv1.2", TLS_V12 }, { "1.3", TLS_V13 }, { "tlsv1.3", TLS_V13 },
		{ "1.0", 0 }, { "tlsv1.0", 0 }, { "1.1", 0 }, { "tlsv1.1", 0 },
	};

	*why = NULL;
	for (size_t i = 0; i < nitems(versions); i++) {
		if (strcasecmp(name, versions[i].name) != 0)
			continue;
		if (versions[i].bit == 0) {
			*why = "1.2 and 1.3 only";
			return -1;
		}
		if ((tls_versions_available() & versions[i].bit) == 0) {
			*why = "this mbedTLS (" MBEDTLS_VERSION_STRING ") has no TLS 1.3 server (3.6.6 or later has)";
			return -1;
		}
		return (int)versions[i].bit;
	}
	return 0;
}

int
tls_suite_lookup(const char *name, const char **why)
{
	char up[64];
	const char *canon = up;
	size_t len = strlen(name);
	int id = 0;

	*why = NULL;
	if (len >= sizeof(up))
		return 0;
	for (size_t i = 0; i <= len; i++)
		up[i] = (char)toupper((unsigned char)name[i]);
	for (size_t i = 0; i < nitems(suite_aliases) && canon == up; i++)
		if (strcmp(up, suite_aliases[i].openssl) == 0)
			canon = suite_aliases[i].mbedtls;
	if (strncmp(canon, TLS13_PREFIX, strlen(TLS13_PREFIX)) == 0 && !compat_tls13()) {
		*why = "a TLS 1.3 suite, and this mbedTLS (" MBEDTLS_VERSION_STRING ") has no TLS 1.3 server";
		return -1;
	}
	if ((id = mbedtls_ssl_get_ciphersuite_id(canon)) == 0)
		return 0;
	if (!suite_acceptable(mbedtls_ssl_get_ciphersuite_name(id))) {
		*why = "only ECDHE key exchange with an AEAD cipher (GCM or ChaCha20-Poly1305)";
		return -1;
	}
	return id;
}

int
tls_curve_lookup(const char *name, const char **why)
{
	const mbedtls_ecp_curve_info *ci;
	const char *canon = NULL;
	char low[32];
	size_t len = strlen(name);

	*why = NULL;
	if (len >= sizeof(low))
		return 0;
	for (size_t i = 0; i <= len; i++)
		low[i] = (char)tolower((unsigned char)name[i]);
	for (size_t i = 0; i < nitems(curve_aliases); i++)
		if (strcmp(low, curve_aliases[i].alias) == 0)
			canon = curve_aliases[i].name;
	for (size_t i = 0; canon == NULL && i < nitems(curves_allowed); i++)
		if (strcmp(low, curves_allowed[i]) == 0)
			canon = curves_allowed[i];
	if (canon == NULL) {
		/* Known to mbedTLS ("brainpoolP256r1", any case) but not taken. */
		for (ci = mbedtls_ecp_curve_list(); ci->grp_id != MBEDTLS_ECP_DP_NONE; ci++)
			if (strcasecmp(name, ci->name) == 0) {
				*why = "x25519, secp256r1, secp384r1 or secp521r1";
				return -1;
			}
		return 0;
	}
	if ((ci = mbedtls_ecp_curve_info_from_name(canon)) == NULL)
		return 0;
	return (int)ci->grp_id;
}

size_t
tls_suites_default(int *out, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < nitems(default_suites) && n < cap; i++) {
		int id = mbedtls_ssl_get_ciphersuite_id(default_suites[i]);
		if (id != 0 && (tls_suite_version(id) & tls_versions_available()) != 0)
			out[n++] = id;
	}
	return n;
}

size_t
tls_curves_default(int *out, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < nitems(default_curves) && n < cap; i++) {
		const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_name(default_curves[i]);
		if (ci != NULL)
			out[n++] = (int)ci->grp_id;
	}
	return n;
}
