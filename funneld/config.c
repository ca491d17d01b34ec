/*
 * Configuration file (DESIGN.md §2): inih tokenises key = value lines, we
 * track lines and sections ourselves and validate every value.
 *
 * Why our own reader in front of inih: Debian's inih is built without
 * INI_HANDLER_LINENO, with a fixed 200-byte line buffer that silently splits
 * longer lines, and it truncates section names to 49 bytes (a backend target
 * can be 253).  The reader feeds inih one line at a time, so it knows the
 * line number of every handler call, refuses long lines, and classifies each
 * line the way inih will (blank/comment, continuation, [section], key) so
 * that sections are opened here with their full name, even when empty.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>
#include <mbedtls/ecp.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>

#include "config.h"

/* The reader below mirrors inih's line rules, continuation lines included. */
#if defined(INI_ALLOW_MULTILINE) && !INI_ALLOW_MULTILINE
#error "funneld needs inih built with INI_ALLOW_MULTILINE"
#endif

/* mbedTLS 3.x hides struct fields behind this macro; 2.28 has none. */
#ifndef MBEDTLS_PRIVATE
#define MBEDTLS_PRIVATE(member) member
#endif

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#define CONFIG_FILE_MAX (1024 * 1024)
#define DURATION_MAX (7 * 86400)        /* keeps seconds * 1000 within 32 bits */
#define CREDS_VAR "${CREDENTIALS_DIRECTORY}"
#define QUOTE_MAX 96                    /* user text quoted in a message */

enum section { SEC_NONE, SEC_FUNNELD, SEC_TLS, SEC_BACKEND };

struct parser;
struct keydef;
typedef int (*key_fn)(struct parser *, const struct keydef *, const char *);

struct keydef {
	const char *name;
	enum section sec;
	bool list;              /* comma-separated, repeating appends */
	bool empty_ok;          /* list: an empty value means "none" */
	key_fn fn;              /* scalar: the value; list: one item */
	size_t off;             /* unsigned field in struct config (numbers) */
	unsigned min, max;
};

struct parser {
	struct config *cfg;
	const char *name;       /* file name in messages */
	const char *cur, *end;  /* input not yet handed to inih */
	int line;               /* line last handed to inih */
	int cont_line;          /* that line continues the previous key */
	bool have_key;          /* inih's prev_name is set */
	enum section sec;
	size_t be;              /* current backend (SEC_BACKEND) */
	char sectext[TARGET_HOST_MAX + 32];
	int seen[32];           /* line of each key's first use, by keys[] index */
	char *err;
	size_t errlen;
	bool failed;
};

static int k_listen(struct parser *, const struct keydef *, const char *);
static int k_allow(struct parser *, const struct keydef *, const char *);
static int k_uint(struct parser *, const struct keydef *, const char *);
static int k_duration(struct parser *, const struct keydef *, const char *);
static int k_workers(struct parser *, const struct keydef *, const char *);
static int k_log_level(struct parser *, const struct keydef *, const char *);
static int k_metrics(struct parser *, const struct keydef *, const char *);
static int k_user(struct parser *, const struct keydef *, const char *);
static int k_cert(struct parser *, const struct keydef *, const char *);
static int k_key(struct parser *, const struct keydef *, const char *);
static int k_alpn(struct parser *, const struct keydef *, const char *);
static int k_session_tickets(struct parser *, const struct keydef *, const char *);
static int k_cipher(struct parser *, const struct keydef *, const char *);
static int k_curve(struct parser *, const struct keydef *, const char *);
static int k_socket(struct parser *, const struct keydef *, const char *);
static int k_proxy(struct parser *, const struct keydef *, const char *);

#define OFF(f) offsetof(struct config, f)

static const struct keydef keys[] = {
	{ "listen", SEC_FUNNELD, true, false, k_listen, 0, 0, 0 },
	{ "allow", SEC_FUNNELD, true, true, k_allow, 0, 0, 0 },
	{ "max_connections", SEC_FUNNELD, false, false, k_uint, OFF(max_connections), 1, 1000000 },
	{ "header_timeout", SEC_FUNNELD, false, false, k_duration, OFF(header_timeout), 1, DURATION_MAX },
	{ "handshake_timeout", SEC_FUNNELD, false, false, k_duration, OFF(handshake_timeout), 1, DURATION_MAX },
	{ "idle_timeout", SEC_FUNNELD, false, false, k_duration, OFF(idle_timeout), 1, DURATION_MAX },
	{ "shutdown_timeout", SEC_FUNNELD, false, false, k_duration, OFF(shutdown_timeout), 0, DURATION_MAX },
	{ "workers", SEC_FUNNELD, false, false, k_workers, 0, 1, 256 },
	{ "log_level", SEC_FUNNELD, false, false, k_log_level, 0, 0, 0 },
	{ "metrics", SEC_FUNNELD, false, false, k_metrics, 0, 0, 0 },
	{ "user", SEC_FUNNELD, false, false, k_user, 0, 0, 0 },

	{ "cert", SEC_TLS, false, false, k_cert, 0, 0, 0 },
	{ "key", SEC_TLS, false, false, k_key, 0, 0, 0 },
	{ "alpn", SEC_TLS, true, true, k_alpn, 0, 0, 0 },
	{ "session_tickets", SEC_TLS, false, false, k_session_tickets, 0, 0, 0 },
	{ "ticket_rotation", SEC_TLS, false, false, k_duration, OFF(ticket_rotation), 1, DURATION_MAX },
	{ "ciphers", SEC_TLS, true, false, k_cipher, 0, 0, 0 },
	{ "curves", SEC_TLS, true, false, k_curve, 0, 0, 0 },

	{ "socket", SEC_BACKEND, false, false, k_socket, 0, 0, 0 },
	{ "proxy_protocol", SEC_BACKEND, false, false, k_proxy, 0, 0, 0 },
	{ "cert", SEC_BACKEND, false, false, k_cert, 0, 0, 0 },
	{ "key", SEC_BACKEND, false, false, k_key, 0, 0, 0 },
	{ "alpn", SEC_BACKEND, true, true, k_alpn, 0, 0, 0 },
};

_Static_assert(nitems(keys) <= 32, "parser.seen too small");

/* Server preference order (DESIGN.md §2: "safe default"). */
static const char *const default_ciphers[] = {
	"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
	"TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
};
static const char *const default_curves[] = { "x25519", "secp256r1" };
static const char *const default_allow[] = { "100.64.0.0/10", "fd7a:115c:a1e0::/48" };
static const char *const default_alpn[] = { "h2", "http/1.1" };

/*
 * OpenSSL spellings of mbedTLS suites.  The non-AEAD ones are here so that
 * a familiar name gets "not allowed" rather than "unknown".
 */
static const struct {
	const char *openssl, *mbedtls;
} cipher_aliases[] = {
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

/*
 * Helpers
 */

/* Copy user text for a message: printable ASCII, the rest escaped, bounded. */
static const char *
quote(char *buf, size_t cap, const char *s)
{
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (o + 8 >= cap) {
			memcpy(buf + o, "...", 4);
			return buf;
		}
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, cap - o, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	buf[o] = '\0';
	return buf;
}

#define Q(s) quote((char[QUOTE_MAX]){ 0 }, QUOTE_MAX, (s))

/* Record the first error; line 0 means "no line applies". Returns -1. */
static int __attribute__((format(printf, 3, 4)))
fail(struct parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->failed)
		return -1;
	p->failed = true;
	if (p->err == NULL || p->errlen == 0)
		return -1;
	if (line > 0)
		n = snprintf(p->err, p->errlen, "%s:%d: ", p->name, line);
	else
		n = snprintf(p->err, p->errlen, "%s: ", p->name);
	if (n < 0 || (size_t)n >= p->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static int
oom(struct parser *p)
{
	return fail(p, p->line, "out of memory");
}

/*
 * Make room for one more element plus a terminator.  Capacity is implied
 * by the count (next power of two), so no array needs a capacity field;
 * realloc to an unchanged size is cheap.
 */
static int
grow(void **v, size_t n, size_t size)
{
	size_t cap = 4;
	void *nv;

	while (cap < n + 2)
		cap *= 2;
	if (cap > SIZE_MAX / size)
		return -1;
	if ((nv = realloc(*v, cap * size)) == NULL)
		return -1;
	*v = nv;
	return 0;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

static bool
all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static int
parse_port(const char *s, uint16_t *port)
{
	unsigned v;

	if (strlen(s) > 5 || parse_uint(s, 1, 65535, &v) == -1)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

static struct tls_conf *
cur_tls(struct parser *p)
{
	if (p->sec == SEC_BACKEND)
		return &p->cfg->backends[p->be].tls;
	return &p->cfg->tls;
}

/*
 * Exposed value parsers
 */

int
parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	unsigned long long v = 0;

	if (s == NULL || !all_digits(s))
		return -1;
	for (; *s != '\0'; s++) {
		v = v * 10 + (unsigned)(*s - '0');
		if (v > UINT_MAX)
			return -1;
	}
	if (v < min || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int
parse_duration(const char *s, unsigned *seconds)
{
	unsigned long long v = 0, mul = 1;
	const char *p;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	for (p = s; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > UINT_MAX)
			return -1;
	}
	switch (*p) {
	case '\0':
	case 's':
		break;
	case 'm':
		mul = 60;
		break;
	case 'h':
		mul = 3600;
		break;
	case 'd':
		mul = 86400;
		break;
	default:
		return -1;
	}
	if (*p != '\0' && p[1] != '\0')
		return -1;
	if (v * mul > UINT_MAX)
		return -1;
	*seconds = (unsigned)(v * mul);
	return 0;
}

static bool
prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;
	uint8_t mask;

	if (memcmp(a, net, bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	mask = (uint8_t)(0xff << (8 - bits));
	return (a[bytes] & mask) == (net[bytes] & mask);
}

static bool
v4mapped(const uint8_t *a)
{
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(a, pfx, sizeof(pfx)) == 0;
}

/* why, when not NULL, gets a detail for the message. */
static int
cidr_parse(const char *s, struct cidr *out, const char **why)
{
	char buf[INET6_ADDRSTRLEN];
	const char *slash;
	size_t alen;
	unsigned max, i;
	struct cidr c;

	memset(&c, 0, sizeof(c));
	if (why != NULL)
		*why = NULL;
	if (s == NULL)
		return -1;
	slash = strchr(s, '/');
	alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= sizeof(buf))
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (strchr(buf, ':') != NULL) {
		if (inet_pton(AF_INET6, buf, c.addr) != 1)
			return -1;
		c.family = AF_INET6;
		max = 128;
	} else {
		if (inet_pton(AF_INET, buf, c.addr) != 1)
			return -1;
		c.family = AF_INET;
		max = 32;
	}
	c.prefix = max;
	if (slash != NULL &&
	    (strlen(slash + 1) > 3 || parse_uint(slash + 1, 0, max, &c.prefix) == -1))
		return -1;
	for (i = c.prefix; i < max; i++) {
		if (c.addr[i / 8] & (0x80 >> (i % 8))) {
			if (why != NULL)
				*why = "host bits set";
			return -1;
		}
	}
	/* Peers in ::ffff:0:0/96 are compared as IPv4: store such nets so. */
	if (c.family == AF_INET6 && c.prefix >= 96 && v4mapped(c.addr)) {
		memmove(c.addr, c.addr + 12, 4);
		memset(c.addr + 4, 0, 12);
		c.family = AF_INET;
		c.prefix -= 96;
	}
	*out = c;
	return 0;
}

int
parse_cidr(const char *s, struct cidr *out)
{
	return cidr_parse(s, out, NULL);
}

bool
cidr_list_match(const struct cidr *list, size_t n, const struct sockaddr *sa)
{
	uint8_t a[16];
	int family;
	size_t i;

	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;

		memcpy(&sin, sa, sizeof(sin));
		memcpy(a, &sin.sin_addr, 4);
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, sa, sizeof(sin6));
		if (v4mapped(sin6.sin6_addr.s6_addr)) {
			memcpy(a, sin6.sin6_addr.s6_addr + 12, 4);
			family = AF_INET;
		} else {
			memcpy(a, sin6.sin6_addr.s6_addr, 16);
			family = AF_INET6;
		}
	} else
		return false;
	for (i = 0; i < n; i++)
		if (list[i].family == family && prefix_match(a, list[i].addr, list[i].prefix))
			return true;
	return false;
}

int
parse_listen(const char *s, struct listen_addr *out)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *h;
	size_t len, hlen;
	uint16_t port;

	memset(out, 0, sizeof(*out));
	if (s == NULL || (len = strlen(s)) == 0 || len >= sizeof(out->text))
		return -1;
	if (strncmp(s, "unix:", 5) == 0) {
		struct sockaddr_un sun;
		const char *path = s + 5;
		size_t plen = strlen(path);

		memset(&sun, 0, sizeof(sun));
		if (path[0] != '/' || plen >= sizeof(sun.sun_path))
			return -1;
		for (h = path; *h != '\0'; h++)
			if ((unsigned char)*h < 0x20 || *h == 0x7f)
				return -1;
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, path, plen);
		memcpy(&out->ss, &sun, sizeof(sun));
		out->sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
		out->kind = LISTEN_UNIX;
		memcpy(out->text, s, len + 1);
		return 0;
	}

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return -1;
		h = s + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		if ((colon = strchr(s, ':')) == NULL || strchr(colon + 1, ':') != NULL)
			return -1;
		h = s;
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= sizeof(host) || parse_port(colon + 1, &port) == -1)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	if (s[0] == '[' || strcmp(host, "*") == 0) {
		struct sockaddr_in6 sin6;

		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(port);
		if (s[0] == '[') {
			if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1)
				return -1;
		} else
			sin6.sin6_addr = in6addr_any;
		memcpy(&out->ss, &sin6, sizeof(sin6));
		out->sslen = sizeof(sin6);
	} else {
		struct sockaddr_in sin;

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(port);
		if (strcasecmp(host, "localhost") == 0)
			sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		else if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
			return -1;
		memcpy(&out->ss, &sin, sizeof(sin));
		out->sslen = sizeof(sin);
	}
	out->kind = LISTEN_TCP;
	memcpy(out->text, s, len + 1);
	return 0;
}

/*
 * Routing
 */

const struct backend_conf *
config_route(const struct config *cfg, const char *host, uint16_t port)
{
	const struct backend_conf *wild = NULL, *b;
	char canon[INET6_ADDRSTRLEN];
	size_t hlen = 0, i;

	if (cfg == NULL)
		return NULL;
	if (host != NULL) {
		hlen = strlen(host);
		if (hlen > 0 && host[hlen - 1] == '.')
			hlen--;
		/* IPv6 literals are stored canonical: compare them so. */
		if (memchr(host, ':', hlen) != NULL && hlen < sizeof(canon)) {
			struct in6_addr a;

			memcpy(canon, host, hlen);
			canon[hlen] = '\0';
			if (inet_pton(AF_INET6, canon, &a) == 1 &&
			    inet_ntop(AF_INET6, &a, canon, sizeof(canon)) != NULL) {
				host = canon;
				hlen = strlen(canon);
			}
		}
	}
	for (i = 0; i < cfg->nbackends; i++) {
		b = &cfg->backends[i];
		if (b->port != port)
			continue;
		if (b->host == NULL) {
			if (wild == NULL)
				wild = b;
		} else if (hlen > 0 && strncasecmp(b->host, host, hlen) == 0 && b->host[hlen] == '\0')
			return b;
	}
	return wild;
}

const char *
config_backend_cert(const struct config *cfg, const struct backend_conf *b)
{
	return b->tls.cert != NULL ? b->tls.cert : cfg->tls.cert;
}

const char *
config_backend_key(const struct config *cfg, const struct backend_conf *b)
{
	return b->tls.key != NULL ? b->tls.key : cfg->tls.key;
}

const struct strlist *
config_backend_alpn(const struct config *cfg, const struct backend_conf *b)
{
	return b->tls.alpn_set ? &b->tls.alpn : &cfg->tls.alpn;
}

int
config_check_listen(const struct config *cfg, char *err, size_t errlen)
{
	if (cfg->nlistens > 0)
		return 0;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: no listen address in [funneld] and no socket from systemd",
		    cfg->path);
	return -1;
}

/*
 * Key handlers
 */

static int
k_listen(struct parser *p, const struct keydef *k, const char *v)
{
	struct config *cfg = p->cfg;
	struct listen_addr la;
	size_t i;

	if (parse_listen(v, &la) == -1)
		return fail(p, p->line, "bad listen address \"%s\"", Q(v));
	la.line = p->line;
	for (i = 0; i < cfg->nlistens; i++)
		if (cfg->listens[i].sslen == la.sslen && memcmp(&cfg->listens[i].ss, &la.ss, la.sslen) == 0)
			return fail(p, p->line, "listen address \"%s\" given twice (first at line %d)",
			    Q(v), cfg->listens[i].line);
	if (grow((void **)&cfg->listens, cfg->nlistens, sizeof(la)) == -1)
		return oom(p);
	cfg->listens[cfg->nlistens++] = la;
	return 0;
}

static int
add_cidr(struct config *cfg, const struct cidr *c)
{
	if (grow((void **)&cfg->allow, cfg->nallow, sizeof(*c)) == -1)
		return -1;
	cfg->allow[cfg->nallow++] = *c;
	return 0;
}

static int
k_allow(struct parser *p, const struct keydef *k, const char *v)
{
	const char *why;
	struct cidr c;

	if (cidr_parse(v, &c, &why) == -1) {
		if (why != NULL)
			return fail(p, p->line, "bad CIDR \"%s\" in allow: %s", Q(v), why);
		return fail(p, p->line, "bad CIDR \"%s\" in allow", Q(v));
	}
	if (add_cidr(p->cfg, &c) == -1)
		return oom(p);
	return 0;
}

static int
k_uint(struct parser *p, const struct keydef *k, const char *v)
{
	unsigned *dst = (unsigned *)(void *)((char *)p->cfg + k->off);

	if (parse_uint(v, 0, UINT_MAX, dst) == -1)
		return fail(p, p->line, "bad number \"%s\" for %s", Q(v), k->name);
	if (*dst < k->min || *dst > k->max)
		return fail(p, p->line, "bad number \"%s\" for %s: must be between %u and %u",
		    Q(v), k->name, k->min, k->max);
	return 0;
}

static int
k_duration(struct parser *p, const struct keydef *k, const char *v)
{
	unsigned *dst = (unsigned *)(void *)((char *)p->cfg + k->off);

	if (parse_duration(v, dst) == -1)
		return fail(p, p->line, "bad duration \"%s\" for %s", Q(v), k->name);
	if (*dst < k->min || *dst > k->max)
		return fail(p, p->line, "bad duration \"%s\" for %s: must be between %us and %ud",
		    Q(v), k->name, k->min, k->max / 86400);
	return 0;
}

static int
k_workers(struct parser *p, const struct keydef *k, const char *v)
{
	unsigned n;

	if (strcasecmp(v, "auto") == 0) {
		p->cfg->workers = 0;
		return 0;
	}
	if (parse_uint(v, 0, UINT_MAX, &n) == -1)
		return fail(p, p->line, "bad number \"%s\" for workers", Q(v));
	if (n < k->min || n > k->max)
		return fail(p, p->line, "bad number \"%s\" for workers: must be between %u and %u, or auto",
		    Q(v), k->min, k->max);
	p->cfg->workers = n;
	return 0;
}

static int
k_log_level(struct parser *p, const struct keydef *k, const char *v)
{
	static const struct {
		const char *name;
		enum log_level level;
	} levels[] = {
		{ "debug", LOG_LVL_DEBUG },
		{ "info", LOG_LVL_INFO },
		{ "notice", LOG_LVL_NOTICE },
		{ "warning", LOG_LVL_WARNING },
		{ "err", LOG_LVL_ERR },
	};
	size_t i;

	for (i = 0; i < nitems(levels); i++) {
		if (strcasecmp(v, levels[i].name) == 0) {
			p->cfg->log_level = levels[i].level;
			return 0;
		}
	}
	return fail(p, p->line, "bad log_level \"%s\" (debug, info, notice, warning or err)", Q(v));
}

static int
k_metrics(struct parser *p, const struct keydef *k, const char *v)
{
	struct listen_addr la;

	if (parse_listen(v, &la) == -1)
		return fail(p, p->line, "bad metrics address \"%s\" (unix:/path or host:port)", Q(v));
	if ((p->cfg->metrics = strdup(v)) == NULL)
		return oom(p);
	return 0;
}

static int
k_user(struct parser *p, const struct keydef *k, const char *v)
{
	const char *s;

	/* The portable user name set (POSIX), as useradd and systemd take it. */
	if (strlen(v) > 32 || v[0] == '-')
		return fail(p, p->line, "bad user name \"%s\"", Q(v));
	for (s = v; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return fail(p, p->line, "bad user name \"%s\"", Q(v));
	if ((p->cfg->user = strdup(v)) == NULL)
		return oom(p);
	return 0;
}

/* Expand ${CREDENTIALS_DIRECTORY}; the result must be an absolute path. */
static char *
expand_path(struct parser *p, const struct keydef *k, const char *v)
{
	const char *creds = NULL, *s, *var;
	size_t n = 0, clen = 0, len;
	char *out, *o;

	for (s = v; (var = strstr(s, "${")) != NULL; s = var + strlen(CREDS_VAR)) {
		if (strncmp(var, CREDS_VAR, strlen(CREDS_VAR)) != 0) {
			fail(p, p->line, "unknown variable in %s \"%s\" (only %s is expanded)",
			    k->name, Q(v), CREDS_VAR);
			return NULL;
		}
		n++;
	}
	if (n > 0) {
		creds = getenv("CREDENTIALS_DIRECTORY");
		if (creds == NULL || *creds == '\0') {
			fail(p, p->line, "%s uses %s but CREDENTIALS_DIRECTORY is not set", k->name, CREDS_VAR);
			return NULL;
		}
		clen = strlen(creds);
	}
	len = strlen(v) + n * clen;
	if (len >= PATH_MAX) {
		fail(p, p->line, "path too long for %s", k->name);
		return NULL;
	}
	if ((out = malloc(len + 1)) == NULL) {
		oom(p);
		return NULL;
	}
	for (o = out, s = v; n > 0 && (var = strstr(s, CREDS_VAR)) != NULL; s = var + strlen(CREDS_VAR)) {
		memcpy(o, s, (size_t)(var - s));
		o += var - s;
		memcpy(o, creds, clen);
		o += clen;
	}
	strcpy(o, s);
	if (out[0] != '/') {
		fail(p, p->line, "%s \"%s\" is not an absolute path", k->name, Q(out));
		free(out);
		return NULL;
	}
	return out;
}

static int
k_cert(struct parser *p, const struct keydef *k, const char *v)
{
	struct tls_conf *t = cur_tls(p);

	if ((t->cert = expand_path(p, k, v)) == NULL)
		return -1;
	t->cert_line = p->line;
	return 0;
}

static int
k_key(struct parser *p, const struct keydef *k, const char *v)
{
	struct tls_conf *t = cur_tls(p);

	if ((t->key = expand_path(p, k, v)) == NULL)
		return -1;
	t->key_line = p->line;
	return 0;
}

static int
strlist_add(struct strlist *l, const char *s)
{
	char *d;

	if ((d = strdup(s)) == NULL)
		return -1;
	if (grow((void **)&l->v, l->n, sizeof(*l->v)) == -1) {
		free(d);
		return -1;
	}
	l->v[l->n++] = d;
	l->v[l->n] = NULL;
	return 0;
}

static int
k_alpn(struct parser *p, const struct keydef *k, const char *v)
{
	struct tls_conf *t = cur_tls(p);
	const char *s;
	size_t i;

	/* RFC 7301 allows any bytes; we take visible ASCII, as registered ids are. */
	if (strlen(v) > 255)
		return fail(p, p->line, "bad ALPN protocol \"%s\": longer than 255 bytes", Q(v));
	for (s = v; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return fail(p, p->line, "bad ALPN protocol \"%s\"", Q(v));
	for (i = 0; i < t->alpn.n; i++)
		if (strcmp(t->alpn.v[i], v) == 0)
			return fail(p, p->line, "ALPN protocol \"%s\" listed twice", Q(v));
	if (strlist_add(&t->alpn, v) == -1)
		return oom(p);
	return 0;
}

static int
k_session_tickets(struct parser *p, const struct keydef *k, const char *v)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < nitems(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			p->cfg->session_tickets = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			p->cfg->session_tickets = false;
			return 0;
		}
	}
	return fail(p, p->line, "bad boolean \"%s\" for %s (yes or no)", Q(v), k->name);
}

/* An mbedTLS or OpenSSL suite name to its id; 0 when unknown or unsupported. */
static int
cipher_id(const char *name)
{
	char up[64];
	size_t i, len = strlen(name);
	int id;

	if (len >= sizeof(up))
		return 0;
	for (i = 0; i <= len; i++)
		up[i] = (char)toupper((unsigned char)name[i]);
	if ((id = mbedtls_ssl_get_ciphersuite_id(up)) != 0)
		return id;
	for (i = 0; i < nitems(cipher_aliases); i++)
		if (strcmp(up, cipher_aliases[i].openssl) == 0)
			return mbedtls_ssl_get_ciphersuite_id(cipher_aliases[i].mbedtls);
	return 0;
}

static bool
cipher_acceptable(int id)
{
	const mbedtls_ssl_ciphersuite_t *cs = mbedtls_ssl_ciphersuite_from_id(id);

	if (cs == NULL)
		return false;
	switch (cs->MBEDTLS_PRIVATE(key_exchange)) {
	case MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA:
	case MBEDTLS_KEY_EXCHANGE_ECDHE_RSA:
		break;
	default:
		return false;
	}
	/* Cipher types, not modes: the enum is the same in mbedTLS 2 and 3. */
	switch ((mbedtls_cipher_type_t)cs->MBEDTLS_PRIVATE(cipher)) {
	case MBEDTLS_CIPHER_AES_128_GCM:
	case MBEDTLS_CIPHER_AES_192_GCM:
	case MBEDTLS_CIPHER_AES_256_GCM:
	case MBEDTLS_CIPHER_CAMELLIA_128_GCM:
	case MBEDTLS_CIPHER_CAMELLIA_192_GCM:
	case MBEDTLS_CIPHER_CAMELLIA_256_GCM:
	case MBEDTLS_CIPHER_ARIA_128_GCM:
	case MBEDTLS_CIPHER_ARIA_192_GCM:
	case MBEDTLS_CIPHER_ARIA_256_GCM:
	case MBEDTLS_CIPHER_CHACHA20_POLY1305:
		return true;
	default:
		return false;
	}
}

static int
k_cipher(struct parser *p, const struct keydef *k, const char *v)
{
	struct config *cfg = p->cfg;
	size_t i;
	int id;

	if ((id = cipher_id(v)) == 0)
		return fail(p, p->line, "unknown cipher suite \"%s\" (or not in this mbedTLS)", Q(v));
	if (!cipher_acceptable(id))
		return fail(p, p->line, "cipher suite \"%s\" not allowed: "
		    "only ECDHE key exchange with an AEAD cipher (GCM or ChaCha20-Poly1305)", Q(v));
	for (i = 0; i < cfg->nciphers; i++)
		if (cfg->ciphers[i] == id)
			return fail(p, p->line, "cipher suite \"%s\" listed twice", Q(v));
	if (grow((void **)&cfg->ciphers, cfg->nciphers, sizeof(int)) == -1)
		return oom(p);
	cfg->ciphers[cfg->nciphers++] = id;
	cfg->ciphers[cfg->nciphers] = 0;
	return 0;
}

static int
k_curve(struct parser *p, const struct keydef *k, const char *v)
{
	struct config *cfg = p->cfg;
	const mbedtls_ecp_curve_info *ci;
	const char *name = NULL;
	char low[32];
	size_t i, len = strlen(v);

	if (len < sizeof(low)) {
		for (i = 0; i <= len; i++)
			low[i] = (char)tolower((unsigned char)v[i]);
		for (i = 0; i < nitems(curve_aliases); i++)
			if (strcmp(low, curve_aliases[i].alias) == 0)
				name = curve_aliases[i].name;
		for (i = 0; name == NULL && i < nitems(curves_allowed); i++)
			if (strcmp(low, curves_allowed[i]) == 0)
				name = curves_allowed[i];
		/* Known to mbedTLS ("brainpoolP256r1", any case) but not taken. */
		for (ci = mbedtls_ecp_curve_list(); name == NULL && ci->grp_id != MBEDTLS_ECP_DP_NONE; ci++)
			if (strcasecmp(v, ci->name) == 0)
				return fail(p, p->line, "curve \"%s\" not allowed "
				    "(x25519, secp256r1, secp384r1 or secp521r1)", Q(v));
	}
	if (name == NULL)
		return fail(p, p->line, "unknown curve \"%s\"", Q(v));
	if ((ci = mbedtls_ecp_curve_info_from_name(name)) == NULL)
		return fail(p, p->line, "curve \"%s\" is not in this mbedTLS", Q(v));
	for (i = 0; i < cfg->ncurves; i++)
		if (cfg->curves[i] == (int)ci->grp_id)
			return fail(p, p->line, "curve \"%s\" listed twice", Q(v));
	if (grow((void **)&cfg->curves, cfg->ncurves, sizeof(int)) == -1)
		return oom(p);
	cfg->curves[cfg->ncurves++] = (int)ci->grp_id;
	cfg->curves[cfg->ncurves] = MBEDTLS_ECP_DP_NONE;
	return 0;
}

static int
k_socket(struct parser *p, const struct keydef *k, const char *v)
{
	struct backend_conf *b = &p->cfg->backends[p->be];
	struct sockaddr_un sun;
	char *path;

	if ((path = expand_path(p, k, v)) == NULL)
		return -1;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fail(p, p->line, "socket path \"%s\" too long (at most %zu bytes)",
		    Q(path), sizeof(sun.sun_path) - 1);
		free(path);
		return -1;
	}
	b->socket = path;
	return 0;
}

static int
k_proxy(struct parser *p, const struct keydef *k, const char *v)
{
	struct backend_conf *b = &p->cfg->backends[p->be];

	if (strcasecmp(v, "off") == 0)
		b->proxy = PROXY_OFF;
	else if (strcasecmp(v, "v1") == 0)
		b->proxy = PROXY_V1;
	else if (strcasecmp(v, "v2") == 0)
		b->proxy = PROXY_V2;
	else
		return fail(p, p->line, "bad proxy_protocol \"%s\" (off, v1 or v2)", Q(v));
	return 0;
}

/*
 * Sections
 */

/* A DNS name as a Tailscale-Ingress-Target host: labels of 1..63 bytes. */
static bool
valid_hostname(const char *h)
{
	size_t label = 0, len = strlen(h);

	if (len == 0 || len > 253)
		return false;
	for (; *h != '\0'; h++) {
		if (*h == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*h) && *h != '-' && *h != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

static int
backend_open(struct parser *p, const char *target)
{
	struct config *cfg = p->cfg;
	struct backend_conf *b;
	char host[TARGET_HOST_MAX + 1], name[TARGET_HOST_MAX + 16];
	const char *colon, *h;
	size_t hlen, i;
	uint16_t port;
	bool v6 = false, wild = false;

	if (target[0] == '[') {
		const char *rb = strchr(target, ']');

		if (rb == NULL || rb[1] != ':')
			goto bad;
		h = target + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
		v6 = true;
	} else {
		if ((colon = strrchr(target, ':')) == NULL)
			goto bad;
		h = target;
		hlen = (size_t)(colon - target);
	}
	if (hlen == 0 || hlen >= sizeof(host) || parse_port(colon + 1, &port) == -1)
		goto bad;
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	if (v6) {
		struct in6_addr a;

		if (inet_pton(AF_INET6, host, &a) != 1 ||
		    inet_ntop(AF_INET6, &a, host, sizeof(host)) == NULL)
			goto bad;
		snprintf(name, sizeof(name), "[%s]:%u", host, port);
	} else if (strcmp(host, "*") == 0) {
		wild = true;
		snprintf(name, sizeof(name), "*:%u", port);
	} else {
		if (hlen > 1 && host[hlen - 1] == '.')
			host[--hlen] = '\0';
		if (!valid_hostname(host))
			goto bad;
		for (i = 0; i < hlen; i++)
			host[i] = (char)tolower((unsigned char)host[i]);
		snprintf(name, sizeof(name), "%s:%u", host, port);
	}

	for (i = 0; i < cfg->nbackends; i++)
		if (strcmp(cfg->backends[i].name, name) == 0)
			return fail(p, p->line, "backend %s defined twice (first at line %d)",
			    name, cfg->backends[i].line);

	if (grow((void **)&cfg->backends, cfg->nbackends, sizeof(*b)) == -1)
		return oom(p);
	b = &cfg->backends[cfg->nbackends];
	memset(b, 0, sizeof(*b));
	b->port = port;
	b->line = p->line;
	b->proxy = PROXY_OFF;
	if ((b->name = strdup(name)) == NULL || (!wild && (b->host = strdup(host)) == NULL)) {
		free(b->name);
		return oom(p);
	}
	p->be = cfg->nbackends++;
	p->sec = SEC_BACKEND;
	snprintf(p->sectext, sizeof(p->sectext), "backend %s", name);
	return 0;
bad:
	return fail(p, p->line, "bad backend target \"%s\" (want [backend HOST:PORT])", Q(target));
}

static int
section_open(struct parser *p, char *text)
{
	size_t i;

	/* Keys of a backend section are counted per section. */
	for (i = 0; i < nitems(keys); i++)
		if (keys[i].sec == SEC_BACKEND)
			p->seen[i] = 0;
	p->have_key = false;
	text = trim(text);
	if (strcasecmp(text, "funneld") == 0) {
		p->sec = SEC_FUNNELD;
		strcpy(p->sectext, "funneld");
		return 0;
	}
	if (strcasecmp(text, "tls") == 0) {
		p->sec = SEC_TLS;
		strcpy(p->sectext, "tls");
		return 0;
	}
	if (strncasecmp(text, "backend", 7) == 0 && (text[7] == ' ' || text[7] == '\t'))
		return backend_open(p, trim(text + 8));
	if (strcasecmp(text, "backend") == 0)
		return fail(p, p->line, "missing target in [backend] (want [backend HOST:PORT])");
	return fail(p, p->line, "unknown section [%s]", Q(text));
}

/*
 * Lines
 */

/* inih's find_chars_or_comment(): ';' after whitespace starts a comment. */
static char *
find_chars_or_comment(char *s, const char *chars)
{
	bool was_space = false;

	while (*s != '\0' && (chars == NULL || strchr(chars, *s) == NULL) &&
	    !(was_space && *s == ';')) {
		was_space = isspace((unsigned char)*s);
		s++;
	}
	return s;
}

/*
 * Decide what inih will make of this line (ini.c, ini_parse_stream) and act
 * on what it will not tell us: section headers and syntax errors.
 */
static int
classify(struct parser *p, char *line)
{
	char *start = line, *end, *rest;

	if (p->line == 1 && strncmp(start, "\xef\xbb\xbf", 3) == 0)
		start += 3;
	while (*start != '\0' && isspace((unsigned char)*start))
		start++;
	if (*start == '\0' || *start == ';' || *start == '#')
		return 0;
	if (p->have_key && start > line) {
		p->cont_line = p->line;
		return 0;
	}
	if (*start == '[') {
		end = find_chars_or_comment(start + 1, "]");
		if (*end != ']')
			return fail(p, p->line, "missing \"]\" in section header");
		/*
		 * inih ends the name at the first ']', but "[backend [::1]:443]"
		 * has two: take the last one before a comment (';' or '#' after
		 * whitespace).  inih's idea of the name is not used.
		 */
		for (rest = start + 1; *rest != '\0'; rest++)
			if ((*rest == ';' || *rest == '#') && isspace((unsigned char)rest[-1]))
				break;
		*rest = '\0';
		if ((end = strrchr(start + 1, ']')) == NULL)
			return fail(p, p->line, "missing \"]\" in section header");
		for (rest = end + 1; *rest != '\0'; rest++)
			if (!isspace((unsigned char)*rest))
				return fail(p, p->line, "unexpected text after section header");
		*end = '\0';
		return section_open(p, start + 1);
	}
	end = find_chars_or_comment(start, "=:");
	if (*end != '=' && *end != ':')
		return fail(p, p->line, "expected \"key = value\" or \"[section]\"");
	while (end > start && isspace((unsigned char)end[-1]))
		end--;
	if (end == start)
		return fail(p, p->line, "missing key name before \"=\"");
	p->have_key = true;
	return 0;
}

/* ini_reader: one line per call, never one inih would split. */
static char *
reader(char *buf, int num, void *stream)
{
	struct parser *p = stream;
	const char *nl;
	char *copy;
	size_t len;
	int rc;

	if (p->failed || p->cur >= p->end)
		return NULL;
	nl = memchr(p->cur, '\n', (size_t)(p->end - p->cur));
	len = (size_t)((nl != NULL ? nl : p->end) - p->cur);
	p->line++;
	if (len > 0 && p->cur[len - 1] == '\r')
		len--;
	/* inih wants room for "\r\n\0" beyond the longest line. */
	if (num < 4 || len > (size_t)num - 3) {
		fail(p, p->line, "line too long (at most %d characters)", num < 4 ? 0 : num - 3);
		return NULL;
	}
	memcpy(buf, p->cur, len);
	buf[len] = '\n';
	buf[len + 1] = '\0';
	p->cur = nl != NULL ? nl + 1 : p->end;
	/* classify() cuts its copy; inih must get the line intact. */
	if ((copy = strndup(buf, len)) == NULL) {
		oom(p);
		return NULL;
	}
	rc = classify(p, copy);
	free(copy);
	return rc == -1 ? NULL : buf;
}

static const struct keydef *
find_key(enum section sec, const char *name, size_t *idx)
{
	size_t i;

	for (i = 0; i < nitems(keys); i++) {
		if (keys[i].sec == sec && strcmp(keys[i].name, name) == 0) {
			*idx = i;
			return &keys[i];
		}
	}
	return NULL;
}

static int
list_value(struct parser *p, const struct keydef *k, char *v)
{
	char *item, *next;

	if (*v == '\0') {
		if (k->empty_ok)
			return 0;
		return fail(p, p->line, "empty value for %s", k->name);
	}
	for (item = v; item != NULL; item = next) {
		if ((next = strchr(item, ',')) != NULL)
			*next++ = '\0';
		item = trim(item);
		if (*item == '\0') {
			/* A trailing comma, before a continuation line, is fine. */
			if (next == NULL && item != v)
				break;
			return fail(p, p->line, "empty item in %s", k->name);
		}
		if (k->fn(p, k, item) == -1)
			return -1;
	}
	return 0;
}

static int
dispatch(struct parser *p, const char *name, const char *value)
{
	const struct keydef *k;
	bool cont = p->cont_line == p->line;
	const char *s;
	char *v, *c;
	size_t idx;
	int rc;

	if (p->sec == SEC_NONE)
		return fail(p, p->line, "key \"%s\" outside any section", Q(name));
	if ((k = find_key(p->sec, name, &idx)) == NULL)
		return fail(p, p->line, "unknown key \"%s\" in [%s]", Q(name), p->sectext);
	for (s = value; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return fail(p, p->line, "control character in value of %s", k->name);
	if ((v = strdup(value)) == NULL)
		return oom(p);
	if (cont) {
		/* inih hands continuation lines over with their comment. */
		c = find_chars_or_comment(v, NULL);
		*c = '\0';
		c = trim(v);
		memmove(v, c, strlen(c) + 1);
		if (!k->list)
			rc = fail(p, p->line, "%s takes one value (an indented line continues the key above)",
			    k->name);
		else if (strchr(v, '=') != NULL)
			rc = fail(p, p->line, "indented line continues %s; unindent it to start a new key",
			    k->name);
		else
			rc = list_value(p, k, v);
		free(v);
		return rc;
	}
	if (p->seen[idx] != 0 && !k->list) {
		free(v);
		return fail(p, p->line, "%s given twice (first at line %d)", k->name, p->seen[idx]);
	}
	if (p->seen[idx] == 0)
		p->seen[idx] = p->line;
	if (k->list) {
		if (k->fn == k_alpn)
			cur_tls(p)->alpn_set = true;
		rc = list_value(p, k, v);
	} else if (*v == '\0')
		rc = fail(p, p->line, "empty value for %s", k->name);
	else
		rc = k->fn(p, k, v);
	free(v);
	return rc;
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct parser *p = user;

	if (p->failed)
		return 0;
	return dispatch(p, name, value) == 0;
}

/*
 * After the last line: defaults of the lists, and what needs the whole file.
 */

static bool
key_given(const struct parser *p, const char *name, enum section sec)
{
	size_t idx;

	return find_key(sec, name, &idx) != NULL && p->seen[idx] != 0;
}

static int
check_pair(struct parser *p, const struct tls_conf *t, const char *where)
{
	if (t->cert != NULL && t->key == NULL)
		return fail(p, t->cert_line, "%scert without key", where);
	if (t->key != NULL && t->cert == NULL)
		return fail(p, t->key_line, "%skey without cert", where);
	return 0;
}

static int
finalize(struct parser *p)
{
	struct config *cfg = p->cfg;
	struct backend_conf *b;
	struct cidr c;
	char where[TARGET_HOST_MAX + 32];
	size_t i;
	int id;

	if (!key_given(p, "allow", SEC_FUNNELD))
		for (i = 0; i < nitems(default_allow); i++)
			if (parse_cidr(default_allow[i], &c) == -1 || add_cidr(cfg, &c) == -1)
				return oom(p);
	if (!cfg->tls.alpn_set)
		for (i = 0; i < nitems(default_alpn); i++)
			if (strlist_add(&cfg->tls.alpn, default_alpn[i]) == -1)
				return oom(p);
	/* A default suite or curve missing from this mbedTLS is left out. */
	if (cfg->nciphers == 0) {
		for (i = 0; i < nitems(default_ciphers); i++) {
			if ((id = mbedtls_ssl_get_ciphersuite_id(default_ciphers[i])) == 0)
				continue;
			if (grow((void **)&cfg->ciphers, cfg->nciphers, sizeof(int)) == -1)
				return oom(p);
			cfg->ciphers[cfg->nciphers++] = id;
			cfg->ciphers[cfg->nciphers] = 0;
		}
		if (cfg->nciphers == 0)
			return fail(p, 0, "none of the default cipher suites is in this mbedTLS");
	}
	if (cfg->ncurves == 0) {
		for (i = 0; i < nitems(default_curves); i++) {
			const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_name(default_curves[i]);

			if (ci == NULL)
				continue;
			if (grow((void **)&cfg->curves, cfg->ncurves, sizeof(int)) == -1)
				return oom(p);
			cfg->curves[cfg->ncurves++] = (int)ci->grp_id;
			cfg->curves[cfg->ncurves] = MBEDTLS_ECP_DP_NONE;
		}
		if (cfg->ncurves == 0)
			return fail(p, 0, "none of the default curves is in this mbedTLS");
	}

	if (check_pair(p, &cfg->tls, "[tls]: ") == -1)
		return -1;
	if (cfg->nbackends == 0)
		return fail(p, 0, "no [backend HOST:PORT] section");
	for (i = 0; i < cfg->nbackends; i++) {
		b = &cfg->backends[i];
		if (b->socket == NULL)
			return fail(p, b->line, "backend %s: no socket", b->name);
		snprintf(where, sizeof(where), "backend %s: ", b->name);
		if (check_pair(p, &b->tls, where) == -1)
			return -1;
		if (config_backend_cert(cfg, b) == NULL)
			return fail(p, b->line, "backend %s: no cert and key (set them in [tls] or here)", b->name);
	}
	return 0;
}

/*
 * Entry points
 */

int
config_parse_string(const char *name, const char *text, struct config **out, char *err, size_t errlen)
{
	struct parser p;
	struct config *cfg;
	int r;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	memset(&p, 0, sizeof(p));
	p.name = name != NULL ? name : "(config)";
	p.err = err;
	p.errlen = errlen;
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL || (cfg->path = strdup(p.name)) == NULL) {
		free(cfg);
		return fail(&p, 0, "out of memory");
	}
	p.cfg = cfg;
	cfg->max_connections = 10000;
	cfg->header_timeout = 10;
	cfg->handshake_timeout = 10;
	cfg->idle_timeout = 600;
	cfg->shutdown_timeout = 30;
	cfg->workers = 1;
	cfg->log_level = LOG_LVL_INFO;
	cfg->session_tickets = true;
	cfg->ticket_rotation = 12 * 3600;

	p.cur = text != NULL ? text : "";
	p.end = p.cur + strlen(p.cur);
	r = ini_parse_stream(reader, &p, handler, &p);
	/* Our reader stops inih at the first error; this is a safety net. */
	if (!p.failed && r == -2)
		oom(&p);
	else if (!p.failed && r != 0)
		fail(&p, r, "syntax error");
	if (!p.failed)
		finalize(&p);
	if (p.failed) {
		config_free(cfg);
		return -1;
	}
	*out = cfg;
	return 0;
}

int
config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct parser p;
	char *buf = NULL, *nul;
	size_t len = 0, n, i;
	FILE *f;
	int line, rc;

	*out = NULL;
	memset(&p, 0, sizeof(p));
	p.name = path != NULL ? path : CONFIG_DEFAULT_PATH;
	p.err = err;
	p.errlen = errlen;
	if ((f = fopen(p.name, "re")) == NULL)
		return fail(&p, 0, "cannot open: %s", strerror(errno));
	if ((buf = malloc(CONFIG_FILE_MAX + 1)) == NULL) {
		fclose(f);
		return fail(&p, 0, "out of memory");
	}
	while ((n = fread(buf + len, 1, CONFIG_FILE_MAX + 1 - len, f)) > 0 && len + n <= CONFIG_FILE_MAX)
		len += n;
	if (ferror(f))
		rc = fail(&p, 0, "cannot read: %s", strerror(errno));
	else if (n > 0)
		rc = fail(&p, 0, "larger than %d bytes", CONFIG_FILE_MAX);
	else
		rc = 0;
	fclose(f);
	if (rc == 0 && (nul = memchr(buf, '\0', len)) != NULL) {
		for (line = 1, i = 0; buf + i < nul; i++)
			if (buf[i] == '\n')
				line++;
		rc = fail(&p, line, "NUL byte");
	}
	if (rc == 0) {
		buf[len] = '\0';
		rc = config_parse_string(p.name, buf, out, err, errlen);
	}
	free(buf);
	return rc;
}

static void
tls_conf_free(struct tls_conf *t)
{
	size_t i;

	free(t->cert);
	free(t->key);
	for (i = 0; i < t->alpn.n; i++)
		free(t->alpn.v[i]);
	free(t->alpn.v);
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->listens);
	free(cfg->allow);
	free(cfg->metrics);
	free(cfg->user);
	tls_conf_free(&cfg->tls);
	free(cfg->ciphers);
	free(cfg->curves);
	for (i = 0; i < cfg->nbackends; i++) {
		free(cfg->backends[i].name);
		free(cfg->backends[i].host);
		free(cfg->backends[i].socket);
		tls_conf_free(&cfg->backends[i].tls);
	}
	free(cfg->backends);
	free(cfg);
}
