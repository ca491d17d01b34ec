/* Configuration: parsed from the INI file, validated, immutable once built. */
#ifndef FUNNELD_CONFIG_H
#define FUNNELD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "clients.h"

#define CONFIG_DEFAULT_PATH "/etc/funneld/funneld.conf"
#define CONFIG_ERR_MAX 512

enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARNING = 4, LOG_LVL_NOTICE = 5, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };
enum proxy_mode { PROXY_OFF = 0, PROXY_V1, PROXY_V2 };

/* A string list; when n > 0, v[n] is NULL. */
struct strlist {
	char **v;
	size_t n;
};

struct tls_conf {
	char *cert, *key;               /* paths, ${CREDENTIALS_DIRECTORY} expanded */
	int cert_line, key_line;
	struct strlist alpn;            /* offered protocols; empty = no ALPN */
	bool alpn_set;                  /* the alpn key was given in this section */
};

struct backend_conf {
	char *name;                     /* "host:port" or "*:port", normalised (lower case, no trailing dot) */
	char *host;                     /* NULL for the wildcard "*" */
	uint16_t port;
	char *socket;                   /* path of the backend's Unix socket */
	enum proxy_mode proxy;
	struct tls_conf tls;            /* in force: its own keys, else [tls]'s (never NULL cert/key) */
	int line;                       /* of the section header */
};

/* [listener ADDRESS]: raw TLS from a local forwarder (DESIGN §8). */
struct listener_conf {
	struct listen_addr addr;
	uint16_t public_port;           /* the Funnel port: SNI host + this picks [backend HOST:PORT] */
	enum proxy_mode proxy;          /* the PROXY header that must come first */
	struct cidr *trusted;           /* who may connect (TCP); default loopback */
	size_t ntrusted;
	bool trusted_set;
	int line;                       /* of the section header */
};

struct config {
	char *path;

	struct listen_addr *listens;
	size_t nlistens;
	struct cidr *allow;
	size_t nallow;
	unsigned max_connections;       /* past the checks (101 written) */
	unsigned max_pending;           /* head not complete yet */
	unsigned max_pending_per_peer;  /* ... from one TCP peer address */
	size_t max_buffer_memory;       /* bytes of data buffers, all connections together */
	unsigned header_timeout, handshake_timeout, idle_timeout, shutdown_timeout;   /* seconds */
	unsigned workers;               /* 0 = auto (one per CPU) */
	enum log_level log_level;
	char *metrics;                  /* NULL, "unix:/path", or host:port */
	char *user;                     /* NULL = stay as started */

	struct tls_conf tls;            /* [tls] */
	bool session_tickets;
	unsigned ticket_rotation;       /* seconds */
	int *ciphers;                   /* mbedTLS ciphersuite ids, server preference order, 0-terminated */
	size_t nciphers;
	int *curves;                    /* mbedTLS group ids, 0-terminated */
	size_t ncurves;
	unsigned tls_versions;          /* TLS_V12 | TLS_V13 (tls_suites.h) */

	struct backend_conf *backends;
	size_t nbackends;

	struct listener_conf *tls_listeners;
	size_t ntls_listeners;

	/* [clients]: public clients, by Tailscale-Ingress-Src (or the PROXY source). */
	struct cidr *deny;
	size_t ndeny;
	struct client_limits client_limits;
};

/*
 * Parse and validate FILE.  On success returns 0 and sets *out.  On failure
 * returns -1 and writes "FILE:LINE: what is wrong" (or "FILE: what is wrong"
 * when no line applies) into err.  Certificates are not read here: see tls.h.
 * A file without `listen` passes (socket activation ignores it).
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);
/* Same, from a string (for tests and fuzzing); name is used in messages. */
int config_parse_string(const char *name, const char *text, struct config **out, char *err, size_t errlen);
void config_free(struct config *cfg);

/* The [listener] section of a listening address (by its text), or NULL. */
const struct listener_conf *config_tls_listener(const struct config *cfg, const char *addr_text);

/*
 * What a reload cannot change in a running process (listeners, workers,
 * user, metrics): the first such key, or NULL when the two agree.
 */
const char *config_restart_needed(const struct config *running, const struct config *next);

#endif
