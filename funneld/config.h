/* Configuration: parsed from the INI file (inih), validated, immutable once built. */
#ifndef FUNNELD_CONFIG_H
#define FUNNELD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#define CONFIG_DEFAULT_PATH "/etc/funneld/funneld.conf"
#define CONFIG_ERR_MAX 512
#define TARGET_HOST_MAX 255

enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARNING = 4, LOG_LVL_NOTICE = 5, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };
enum proxy_mode { PROXY_OFF = 0, PROXY_V1, PROXY_V2 };
enum listen_kind { LISTEN_TCP, LISTEN_UNIX };

struct cidr {
	int family;            /* AF_INET or AF_INET6 */
	uint8_t addr[16];      /* network order; IPv4 uses the first 4 bytes */
	unsigned prefix;       /* 0..32 or 0..128 */
};

struct listen_addr {
	enum listen_kind kind;
	struct sockaddr_storage ss;   /* TCP: the address; UNIX: sockaddr_un with the path */
	socklen_t sslen;
	char text[128];               /* as written: "127.0.0.1:4443", "[::1]:443", "unix:/run/x.sock" */
	int line;
};

/* A string list (alpn, ...).  When n > 0, v[n] is NULL (mbedtls_ssl_conf_alpn_protocols()
 * takes v as is); do not hand mbedTLS an empty list: it would refuse every client with ALPN. */
struct strlist {
	char **v;
	size_t n;
};

struct tls_conf {
	char *cert, *key;             /* paths, ${CREDENTIALS_DIRECTORY} expanded; NULL = inherit */
	int cert_line, key_line;
	struct strlist alpn;          /* offered protocols */
	bool alpn_set;                /* alpn key given (an empty value = no ALPN) */
};

struct backend_conf {
	char *name;                   /* "host:port" or "*:port", normalised (lower case, no trailing dot) */
	char *host;                   /* NULL for the wildcard "*" */
	uint16_t port;
	char *socket;                 /* path of the backend's Unix socket */
	enum proxy_mode proxy;
	struct tls_conf tls;          /* overrides of [tls] for this target */
	int line;                     /* line of the section header */
};

struct config {
	char *path;

	struct listen_addr *listens;
	size_t nlistens;
	struct cidr *allow;
	size_t nallow;
	unsigned max_connections;
	unsigned header_timeout, handshake_timeout, idle_timeout, shutdown_timeout;   /* seconds */
	unsigned workers;             /* 0 = auto (one per CPU) */
	enum log_level log_level;
	char *metrics;                /* NULL, "unix:/path", or host:port */
	char *user;                   /* NULL = stay as started */

	struct tls_conf tls;          /* [tls] cert, key, alpn */
	bool session_tickets;
	unsigned ticket_rotation;     /* seconds */
	int *ciphers;                 /* mbedTLS ciphersuite ids, server preference order, 0-terminated */
	size_t nciphers;
	int *curves;                  /* mbedtls_ecp_group_id values, 0 (MBEDTLS_ECP_DP_NONE)-terminated */
	size_t ncurves;

	struct backend_conf *backends;
	size_t nbackends;
};

/*
 * Parse and validate FILE.  On success returns 0 and sets *out.  On failure
 * returns -1 and writes "FILE:LINE: what is wrong" (or "FILE: what is wrong"
 * when no line applies) into err.  Certificates are not read here: see tls.h.
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);
/* Same, from a string (for tests and fuzzing); name is used in messages. */
int config_parse_string(const char *name, const char *text, struct config **out, char *err, size_t errlen);
void config_free(struct config *cfg);

/*
 * Pick the backend serving a Tailscale-Ingress-Target: exact host
 * (case-insensitive, a trailing dot ignored) and port, then "*:port".
 * Returns NULL when none.  Pure.
 */
const struct backend_conf *config_route(const struct config *cfg, const char *host, uint16_t port);

/*
 * What is in force for backend b: its own cert / key / alpn, else [tls]'s.
 * After a successful parse, cert and key are never NULL (the parser refuses a
 * backend left without them).
 */
const char *config_backend_cert(const struct config *cfg, const struct backend_conf *b);
const char *config_backend_key(const struct config *cfg, const struct backend_conf *b);
const struct strlist *config_backend_alpn(const struct config *cfg, const struct backend_conf *b);

/*
 * The parser accepts a file without `listen` (socket activation ignores it).
 * Call this when systemd passed no sockets: -1 and "FILE: no listen address
 * ..." in err when cfg->nlistens is 0.
 */
int config_check_listen(const struct config *cfg, char *err, size_t errlen);

/* Value parsers, exposed for tests. Return 0 on success, -1 on error. */
int parse_duration(const char *s, unsigned *seconds);
int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);
int parse_cidr(const char *s, struct cidr *out);
int parse_listen(const char *s, struct listen_addr *out);
/* Whether sa (AF_INET / AF_INET6, IPv4-mapped compared as IPv4) is inside any of list. */
bool cidr_list_match(const struct cidr *list, size_t n, const struct sockaddr *sa);

#endif
