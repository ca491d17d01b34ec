/*
 * Configuration file (DESIGN.md §2): config_reader.c hands us sections and
 * key = value pairs with their line numbers; here every key is validated,
 * defaults are applied in one place, and what needs the whole file is
 * checked at the end.
 */
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "config_reader.h"
#include "config_values.h"
#include "tls_suites.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#define CONFIG_FILE_MAX (1024 * 1024)
#define DURATION_MAX (7 * 86400)        /* keeps seconds * 1000 within 32 bits */
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
	struct ini_reader rd;   /* first: the reader's callbacks get &rd */
	struct config *cfg;
	enum section sec;
	size_t be;              /* current backend (SEC_BACKEND) */
	char sectext[ADDR_HOST_MAX + 32];
	int seen[32];           /* line of each key's first use, by keys[] index */
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
static int k_version(struct parser *, const struct keydef *, const char *);
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
	{ "versions", SEC_TLS, true, false, k_version, 0, 0, 0 },

	{ "socket", SEC_BACKEND, false, false, k_socket, 0, 0, 0 },
	{ "proxy_protocol", SEC_BACKEND, false, false, k_proxy, 0, 0, 0 },
	{ "cert", SEC_BACKEND, false, false, k_cert, 0, 0, 0 },
	{ "key", SEC_BACKEND, false, false, k_key, 0, 0, 0 },
	{ "alpn", SEC_BACKEND, true, true, k_alpn, 0, 0, 0 },
};

_Static_assert(nitems(keys) <= 32, "parser.seen too small");

/*
 * Defaults: every value a file may leave out, set here and nowhere else
 * (apply_defaults() runs after the last line, for what was not given).
 */
static const struct {
	unsigned max_connections, header_timeout, handshake_timeout, idle_timeout, shutdown_timeout;
	unsigned workers, ticket_rotation;
	enum log_level log_level;
	bool session_tickets;
	const char *allow[2], *alpn[2];
} defaults = {
	.max_connections = 10000,
	.header_timeout = 10,
	.handshake_timeout = 10,
	.idle_timeout = 600,
	.shutdown_timeout = 30,
	.workers = 1,
	.ticket_rotation = 12 * 3600,
	.log_level = LOG_LVL_INFO,
	.session_tickets = true,
	.allow = { "100.64.0.0/10", "fd7a:115c:a1e0::/48" },
	.alpn = { "h2", "http/1.1" },
};

/*
 * Helpers
 */

#define Q(s) ini_quote((char[QUOTE_MAX]){ 0 }, QUOTE_MAX, (s))
#define fail(p, line, ...) ini_reader_fail(&(p)->rd, (line), __VA_ARGS__)

static int
oom(struct parser *p)
{
	return fail(p, p->rd.line, "out of memory");
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

static struct tls_conf *
cur_tls(struct parser *p)
{
	if (p->sec == SEC_BACKEND)
		return &p->cfg->backends[p->be].tls;
	return &p->cfg->tls;
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

	if (addr_parse_listen(v, &la) == -1)
		return fail(p, p->rd.line, "bad listen address \"%s\"", Q(v));
	la.line = p->rd.line;
	for (i = 0; i < cfg->nlistens; i++)
		if (cfg->listens[i].sslen == la.sslen && memcmp(&cfg->listens[i].ss, &la.ss, la.sslen) == 0)
			return fail(p, p->rd.line, "listen address \"%s\" given twice (first at line %d)",
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

	if (addr_parse_cidr(v, &c, &why) == -1) {
		if (why != NULL)
			return fail(p, p->rd.line, "bad CIDR \"%s\" in allow: %s", Q(v), why);
		return fail(p, p->rd.line, "bad CIDR \"%s\" in allow", Q(v));
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
		return fail(p, p->rd.line, "bad number \"%s\" for %s", Q(v), k->name);
	if (*dst < k->min || *dst > k->max)
		return fail(p, p->rd.line, "bad number \"%s\" for %s: must be between %u and %u",
		    Q(v), k->name, k->min, k->max);
	return 0;
}

static int
k_duration(struct parser *p, const struct keydef *k, const char *v)
{
	unsigned *dst = (unsigned *)(void *)((char *)p->cfg + k->off);

	if (parse_duration(v, dst) == -1)
		return fail(p, p->rd.line, "bad duration \"%s\" for %s", Q(v), k->name);
	if (*dst < k->min || *dst > k->max)
		return fail(p, p->rd.line, "bad duration \"%s\" for %s: must be between %us and %ud",
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
		return fail(p, p->rd.line, "bad number \"%s\" for workers", Q(v));
	if (n < k->min || n > k->max)
		return fail(p, p->rd.line, "bad number \"%s\" for workers: must be between %u and %u, or auto",
		    Q(v), k->min, k->max);
	p->cfg->workers = n;
	return 0;
}

static int
k_log_level(struct parser *p, const struct keydef *k, const char *v)
{
	static const struct word levels[] = {
		{ "debug", LOG_LVL_DEBUG }, { "info", LOG_LVL_INFO }, { "notice", LOG_LVL_NOTICE },
		{ "warning", LOG_LVL_WARNING }, { "err", LOG_LVL_ERR },
	};
	int level;

	if (parse_word(v, levels, nitems(levels), &level) != 0)
		return fail(p, p->rd.line, "bad log_level \"%s\" (debug, info, notice, warning or err)", Q(v));
	p->cfg->log_level = (enum log_level)level;
	return 0;
}

static int
k_metrics(struct parser *p, const struct keydef *k, const char *v)
{
	struct listen_addr la;

	if (addr_parse_listen(v, &la) == -1)
		return fail(p, p->rd.line, "bad metrics address \"%s\" (unix:/path or host:port)", Q(v));
	if ((p->cfg->metrics = strdup(v)) == NULL)
		return oom(p);
	return 0;
}

static int
k_user(struct parser *p, const struct keydef *k, const char *v)
{
	if (!user_name_valid(v))
		return fail(p, p->rd.line, "bad user name \"%s\"", Q(v));
	if ((p->cfg->user = strdup(v)) == NULL)
		return oom(p);
	return 0;
}

/* A path key's value: ${CREDENTIALS_DIRECTORY} expanded, absolute. */
static char *
path_value(struct parser *p, const struct keydef *k, const char *v)
{
	char *path;

	switch (expand_path(v, &path)) {
	case EXPAND_OK:
		break;
	case EXPAND_UNKNOWN_VARIABLE:
		fail(p, p->rd.line, "unknown variable in %s \"%s\" (only %s is expanded)", k->name, Q(v), CREDS_VAR);
		return NULL;
	case EXPAND_NO_CREDENTIALS:
		fail(p, p->rd.line, "%s uses %s but CREDENTIALS_DIRECTORY is not set", k->name, CREDS_VAR);
		return NULL;
	case EXPAND_TOO_LONG:
		fail(p, p->rd.line, "path too long for %s", k->name);
		return NULL;
	case EXPAND_NO_MEMORY:
		oom(p);
		return NULL;
	}
	if (path[0] != '/') {
		fail(p, p->rd.line, "%s \"%s\" is not an absolute path", k->name, Q(path));
		free(path);
		return NULL;
	}
	return path;
}

static int
k_cert(struct parser *p, const struct keydef *k, const char *v)
{
	struct tls_conf *t = cur_tls(p);

	if ((t->cert = path_value(p, k, v)) == NULL)
		return -1;
	t->cert_line = p->rd.line;
	return 0;
}

static int
k_key(struct parser *p, const struct keydef *k, const char *v)
{
	struct tls_conf *t = cur_tls(p);

	if ((t->key = path_value(p, k, v)) == NULL)
		return -1;
	t->key_line = p->rd.line;
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
		return fail(p, p->rd.line, "bad ALPN protocol \"%s\": longer than 255 bytes", Q(v));
	for (s = v; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return fail(p, p->rd.line, "bad ALPN protocol \"%s\"", Q(v));
	for (i = 0; i < t->alpn.n; i++)
		if (strcmp(t->alpn.v[i], v) == 0)
			return fail(p, p->rd.line, "ALPN protocol \"%s\" listed twice", Q(v));
	if (strlist_add(&t->alpn, v) == -1)
		return oom(p);
	return 0;
}

static int
k_session_tickets(struct parser *p, const struct keydef *k, const char *v)
{
	if (parse_bool(v, &p->cfg->session_tickets) != 0)
		return fail(p, p->rd.line, "bad boolean \"%s\" for %s (yes or no)", Q(v), k->name);
	return 0;
}

static int
add_id(struct parser *p, int **v, size_t *n, size_t max, int id, const char *key, const char *text)
{
	for (size_t i = 0; i < *n; i++)
		if ((*v)[i] == id)
			return fail(p, p->rd.line, "%s \"%s\" listed twice", key, Q(text));
	if (*n >= max)
		return fail(p, p->rd.line, "too many items in %s (at most %zu)", key, max);
	if (grow((void **)v, *n, sizeof(int)) == -1)
		return oom(p);
	(*v)[(*n)++] = id;
	(*v)[*n] = 0;
	return 0;
}

static int
k_cipher(struct parser *p, const struct keydef *k, const char *v)
{
	const char *why;
	int id = tls_suite_lookup(v, &why);

	if (id == 0)
		return fail(p, p->rd.line, "unknown cipher suite \"%s\" (or not in this mbedTLS)", Q(v));
	if (id < 0)
		return fail(p, p->rd.line, "cipher suite \"%s\" not allowed: %s", Q(v), why);
	return add_id(p, &p->cfg->ciphers, &p->cfg->nciphers, TLS_SUITES_MAX, id, "cipher suite", v);
}

static int
k_curve(struct parser *p, const struct keydef *k, const char *v)
{
	const char *why;
	int id = tls_curve_lookup(v, &why);

	if (id == 0)
		return fail(p, p->rd.line, "unknown curve \"%s\"", Q(v));
	if (id < 0)
		return fail(p, p->rd.line, "curve \"%s\" not allowed (%s)", Q(v), why);
	return add_id(p, &p->cfg->curves, &p->cfg->ncurves, TLS_CURVES_MAX, id, "curve", v);
}

static int
k_version(struct parser *p, const struct keydef *k, const char *v)
{
	const char *why;
	int bit = tls_version_lookup(v, &why);

	if (bit == 0)
		return fail(p, p->rd.line, "unknown TLS version \"%s\" (1.2 or 1.3)", Q(v));
	if (bit < 0)
		return fail(p, p->rd.line, "TLS version \"%s\" not available: %s", Q(v), why);
	if (p->cfg->tls_versions & (unsigned)bit)
		return fail(p, p->rd.line, "TLS version \"%s\" listed twice", Q(v));
	p->cfg->tls_versions |= (unsigned)bit;
	return 0;
}

static int
k_socket(struct parser *p, const struct keydef *k, const char *v)
{
	struct backend_conf *b = &p->cfg->backends[p->be];
	struct sockaddr_un sun;
	char *path;

	if ((path = path_value(p, k, v)) == NULL)
		return -1;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fail(p, p->rd.line, "socket path \"%s\" too long (at most %zu bytes)",
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
	static const struct word modes[] = { { "off", PROXY_OFF }, { "v1", PROXY_V1 }, { "v2", PROXY_V2 } };
	int mode;

	if (parse_word(v, modes, nitems(modes), &mode) != 0)
		return fail(p, p->rd.line, "bad proxy_protocol \"%s\" (off, v1 or v2)", Q(v));
	p->cfg->backends[p->be].proxy = (enum proxy_mode)mode;
	return 0;
}

/*
 * Sections
 */

static int
backend_open(struct parser *p, const char *target)
{
	struct config *cfg = p->cfg;
	struct backend_conf *b;
	char host[ADDR_HOST_MAX + 1], name[ADDR_HOST_MAX + 16];
	size_t len = strlen(target), i;
	uint16_t port;
	bool wild = len > 2 && target[0] == '*' && target[1] == ':';

	if (wild) {
		if (addr_parse_port(target + 2, len - 2, &port) != 0)
			goto bad;
		snprintf(name, sizeof(name), "*:%u", port);
	} else {
		if (addr_parse_target(target, len, host, &port) != 0)
			goto bad;
		snprintf(name, sizeof(name), target[0] == '[' ? "[%s]:%u" : "%s:%u", host, port);
	}
	for (i = 0; i < cfg->nbackends; i++)
		if (strcmp(cfg->backends[i].name, name) == 0)
			return fail(p, p->rd.line, "backend %s defined twice (first at line %d)", name,
			    cfg->backends[i].line);

	if (grow((void **)&cfg->backends, cfg->nbackends, sizeof(*b)) == -1)
		return oom(p);
	b = &cfg->backends[cfg->nbackends];
	memset(b, 0, sizeof(*b));
	b->port = port;
	b->line = p->rd.line;
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
	return fail(p, p->rd.line, "bad backend target \"%s\" (want [backend HOST:PORT])", Q(target));
}

static int
on_section(struct ini_reader *rd, char *text)
{
	struct parser *p = (struct parser *)rd;

	/* Keys of a backend section are counted per section. */
	for (size_t i = 0; i < nitems(keys); i++)
		if (keys[i].sec == SEC_BACKEND)
			p->seen[i] = 0;
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
		return fail(p, p->rd.line, "missing target in [backend] (want [backend HOST:PORT])");
	return fail(p, p->rd.line, "unknown section [%s]", Q(text));
}

/*
 * Keys
 */

static const struct keydef *
find_key(enum section sec, const char *name, size_t *idx)
{
	for (size_t i = 0; i < nitems(keys); i++) {
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
		return fail(p, p->rd.line, "empty value for %s", k->name);
	}
	for (item = v; item != NULL; item = next) {
		if ((next = strchr(item, ',')) != NULL)
			*next++ = '\0';
		item = trim(item);
		if (*item == '\0') {
			/* A trailing comma, before a continuation line, is fine. */
			if (next == NULL && item != v)
				break;
			return fail(p, p->rd.line, "empty item in %s", k->name);
		}
		if (k->fn(p, k, item) == -1)
			return -1;
	}
	return 0;
}

static int
on_key(struct ini_reader *rd, const char *name, char *v, bool cont)
{
	struct parser *p = (struct parser *)rd;
	const struct keydef *k;
	size_t idx;

	if (p->sec == SEC_NONE)
		return fail(p, p->rd.line, "key \"%s\" outside any section", Q(name));
	if ((k = find_key(p->sec, name, &idx)) == NULL)
		return fail(p, p->rd.line, "unknown key \"%s\" in [%s]", Q(name), p->sectext);
	for (const char *s = v; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return fail(p, p->rd.line, "control character in value of %s", k->name);
	if (cont) {
		if (!k->list)
			return fail(p, p->rd.line, "%s takes one value (an indented line continues the key above)",
			    k->name);
		if (strchr(v, '=') != NULL)
			return fail(p, p->rd.line, "indented line continues %s; unindent it to start a new key", k->name);
		return list_value(p, k, v);
	}
	if (p->seen[idx] != 0 && !k->list)
		return fail(p, p->rd.line, "%s given twice (first at line %d)", k->name, p->seen[idx]);
	if (p->seen[idx] == 0)
		p->seen[idx] = p->rd.line;
	if (k->list) {
		if (k->fn == k_alpn)
			cur_tls(p)->alpn_set = true;
		return list_value(p, k, v);
	}
	if (*v == '\0')
		return fail(p, p->rd.line, "empty value for %s", k->name);
	return k->fn(p, k, v);
}

/*
 * After the last line
 */

static bool
key_given(const struct parser *p, const char *name, enum section sec)
{
	size_t idx;

	return find_key(sec, name, &idx) != NULL && p->seen[idx] != 0;
}

static int
apply_defaults(struct parser *p)
{
	struct config *cfg = p->cfg;
	int ids[TLS_SUITES_MAX];
	unsigned named = 0;
	size_t n;
	struct cidr c;

	if (!key_given(p, "max_connections", SEC_FUNNELD))
		cfg->max_connections = defaults.max_connections;
	if (!key_given(p, "header_timeout", SEC_FUNNELD))
		cfg->header_timeout = defaults.header_timeout;
	if (!key_given(p, "handshake_timeout", SEC_FUNNELD))
		cfg->handshake_timeout = defaults.handshake_timeout;
	if (!key_given(p, "idle_timeout", SEC_FUNNELD))
		cfg->idle_timeout = defaults.idle_timeout;
	if (!key_given(p, "shutdown_timeout", SEC_FUNNELD))
		cfg->shutdown_timeout = defaults.shutdown_timeout;
	if (!key_given(p, "workers", SEC_FUNNELD))
		cfg->workers = defaults.workers;
	if (!key_given(p, "log_level", SEC_FUNNELD))
		cfg->log_level = defaults.log_level;
	if (!key_given(p, "session_tickets", SEC_TLS))
		cfg->session_tickets = defaults.session_tickets;
	if (!key_given(p, "ticket_rotation", SEC_TLS))
		cfg->ticket_rotation = defaults.ticket_rotation;
	if (!key_given(p, "versions", SEC_TLS))
		cfg->tls_versions = tls_versions_available();
	if (!key_given(p, "allow", SEC_FUNNELD))
		for (size_t i = 0; i < nitems(defaults.allow); i++)
			if (addr_parse_cidr(defaults.allow[i], &c, NULL) == -1 || add_cidr(cfg, &c) == -1)
				return oom(p);
	if (!cfg->tls.alpn_set)
		for (size_t i = 0; i < nitems(defaults.alpn); i++)
			if (strlist_add(&cfg->tls.alpn, defaults.alpn[i]) == -1)
				return oom(p);
	/*
	 * A default suite or curve missing from this mbedTLS is left out.  A
	 * TLS version the ciphers list names no suite of keeps its default
	 * suites (OpenSSL keeps 1.3's apart the same way): a list written for
	 * 1.2 alone does not turn 1.3 clients away.
	 */
	for (size_t i = 0; i < cfg->nciphers; i++)
		named |= tls_suite_version(cfg->ciphers[i]);
	if ((n = tls_suites_default(ids, nitems(ids))) == 0)
		return fail(p, 0, "none of the default cipher suites is in this mbedTLS");
	for (size_t i = 0; i < n; i++)
		if ((tls_suite_version(ids[i]) & named) == 0 &&
		    add_id(p, &cfg->ciphers, &cfg->nciphers, TLS_SUITES_MAX, ids[i], "cipher suite", "") != 0)
			return -1;
	if (cfg->ncurves == 0) {
		if ((n = tls_curves_default(ids, nitems(ids))) == 0)
			return fail(p, 0, "none of the default curves is in this mbedTLS");
		for (size_t i = 0; i < n; i++)
			if (add_id(p, &cfg->curves, &cfg->ncurves, TLS_CURVES_MAX, ids[i], "curve", "") != 0)
				return -1;
	}
	return 0;
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

/* What [tls] gives a backend that does not set it: a copy, so each frees its own. */
static int
inherit_tls(struct tls_conf *b, const struct tls_conf *t)
{
	if (b->cert == NULL) {
		if ((b->cert = strdup(t->cert)) == NULL || (b->key = strdup(t->key)) == NULL)
			return -1;
		b->cert_line = t->cert_line;
		b->key_line = t->key_line;
	}
	if (!b->alpn_set)
		for (size_t i = 0; i < t->alpn.n; i++)
			if (strlist_add(&b->alpn, t->alpn.v[i]) == -1)
				return -1;
	return 0;
}

static int
finalize(struct parser *p)
{
	struct config *cfg = p->cfg;
	char where[ADDR_HOST_MAX + 32];

	if (apply_defaults(p) != 0 || check_pair(p, &cfg->tls, "[tls]: ") == -1)
		return -1;
	if (cfg->nbackends == 0)
		return fail(p, 0, "no [backend HOST:PORT] section");
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct backend_conf *b = &cfg->backends[i];
		if (b->socket == NULL)
			return fail(p, b->line, "backend %s: no socket", b->name);
		snprintf(where, sizeof(where), "backend %s: ", b->name);
		if (check_pair(p, &b->tls, where) == -1)
			return -1;
		if (b->tls.cert == NULL && cfg->tls.cert == NULL)
			return fail(p, b->line, "backend %s: no cert and key (set them in [tls] or here)", b->name);
		if (inherit_tls(&b->tls, &cfg->tls) != 0)
			return oom(p);
	}
	return 0;
}

const char *
config_restart_needed(const struct config *a, const struct config *b)
{
	if (a->nlistens != b->nlistens)
		return "listen";
	for (size_t i = 0; i < a->nlistens; i++)
		if (strcmp(a->listens[i].text, b->listens[i].text) != 0)
			return "listen";
	if (a->workers != b->workers)
		return "workers";
	if ((a->user == NULL) != (b->user == NULL) || (a->user != NULL && strcmp(a->user, b->user) != 0))
		return "user";
	if ((a->metrics == NULL) != (b->metrics == NULL) || (a->metrics != NULL && strcmp(a->metrics, b->metrics) != 0))
		return "metrics";
	return NULL;
}

/*
 * Entry points
 */

int
config_parse_string(const char *name, const char *text, struct config **out, char *err, size_t errlen)
{
	struct parser p = {
		.rd = { .name = name != NULL ? name : "(config)", .section = on_section, .key = on_key,
			.err = err, .errlen = errlen },
	};
	struct config *cfg;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL || (cfg->path = strdup(p.rd.name)) == NULL) {
		free(cfg);
		return fail(&p, 0, "out of memory");
	}
	p.cfg = cfg;
	if (ini_reader_parse(&p.rd, text) != 0 || finalize(&p) != 0) {
		config_free(cfg);
		return -1;
	}
	*out = cfg;
	return 0;
}

int
config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct ini_reader rd = { .name = path != NULL ? path : CONFIG_DEFAULT_PATH, .err = err, .errlen = errlen };
	char *buf = NULL, *nul;
	size_t len = 0, n;
	FILE *f;
	int rc = 0;

	*out = NULL;
	if ((f = fopen(rd.name, "re")) == NULL)
		return ini_reader_fail(&rd, 0, "cannot open: %s", strerror(errno));
	if ((buf = malloc(CONFIG_FILE_MAX + 1)) == NULL) {
		fclose(f);
		return ini_reader_fail(&rd, 0, "out of memory");
	}
	while ((n = fread(buf + len, 1, CONFIG_FILE_MAX + 1 - len, f)) > 0 && len + n <= CONFIG_FILE_MAX)
		len += n;
	if (ferror(f))
		rc = ini_reader_fail(&rd, 0, "cannot read: %s", strerror(errno));
	else if (n > 0)
		rc = ini_reader_fail(&rd, 0, "larger than %d bytes", CONFIG_FILE_MAX);
	fclose(f);
	if (rc == 0 && (nul = memchr(buf, '\0', len)) != NULL) {
		int line = 1;
		for (const char *s = buf; s < nul; s++)
			if (*s == '\n')
				line++;
		rc = ini_reader_fail(&rd, line, "NUL byte");
	}
	if (rc == 0) {
		buf[len] = '\0';
		rc = config_parse_string(rd.name, buf, out, err, errlen);
	}
	free(buf);
	return rc;
}

static void
tls_conf_free(struct tls_conf *t)
{
	free(t->cert);
	free(t->key);
	for (size_t i = 0; i < t->alpn.n; i++)
		free(t->alpn.v[i]);
	free(t->alpn.v);
}

void
config_free(struct config *cfg)
{
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
	for (size_t i = 0; i < cfg->nbackends; i++) {
		free(cfg->backends[i].name);
		free(cfg->backends[i].host);
		free(cfg->backends[i].socket);
		tls_conf_free(&cfg->backends[i].tls);
	}
	free(cfg->backends);
	free(cfg);
}
