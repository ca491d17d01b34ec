/* One handler per configuration key: validate the value, store it.  See config_parser.h. */
#include <sys/un.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_parser.h"
#include "config_values.h"
#include "tls_suites.h"

/*
 * Helpers
 */

int
oom(struct parser *p)
{
	return fail(p, p->rd.line, "out of memory");
}

/*
 * Make room for one more element plus a terminator.  Capacity is implied
 * by the count (next power of two), so no array needs a capacity field;
 * realloc to an unchanged size is cheap.
 */
int
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

struct tls_conf *
cur_tls(struct parser *p)
{
	if (p->sec == SEC_BACKEND)
		return &p->cfg->backends[p->be].tls;
	return &p->cfg->tls;
}

/*
 * Key handlers
 */

int
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

int
add_cidr(struct cidr **v, size_t *n, const struct cidr *c)
{
	if (grow((void **)v, *n, sizeof(*c)) == -1)
		return -1;
	(*v)[(*n)++] = *c;
	return 0;
}

int
k_allow(struct parser *p, const struct keydef *k, const char *v)
{
	const char *why;
	struct cidr c;

	if (addr_parse_cidr(v, &c, &why) == -1) {
		if (why != NULL)
			return fail(p, p->rd.line, "bad CIDR \"%s\" in allow: %s", Q(v), why);
		return fail(p, p->rd.line, "bad CIDR \"%s\" in allow", Q(v));
	}
	if (add_cidr(&p->cfg->allow, &p->cfg->nallow, &c) == -1)
		return oom(p);
	return 0;
}

int
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

int
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

int
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

int
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

int
k_metrics(struct parser *p, const struct keydef *k, const char *v)
{
	struct listen_addr la;

	if (addr_parse_listen(v, &la) == -1)
		return fail(p, p->rd.line, "bad metrics address \"%s\" (unix:/path or host:port)", Q(v));
	if ((p->cfg->metrics = strdup(v)) == NULL)
		return oom(p);
	return 0;
}

int
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

int
k_cert(struct parser *p, const struct keydef *k, const char *v)
{
	struct tls_conf *t = cur_tls(p);

	if ((t->cert = path_value(p, k, v)) == NULL)
		return -1;
	t->cert_line = p->rd.line;
	return 0;
}

int
k_key(struct parser *p, const struct keydef *k, const char *v)
{
	struct tls_conf *t = cur_tls(p);

	if ((t->key = path_value(p, k, v)) == NULL)
		return -1;
	t->key_line = p->rd.line;
	return 0;
}

int
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

int
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

int
k_session_tickets(struct parser *p, const struct keydef *k, const char *v)
{
	if (parse_bool(v, &p->cfg->session_tickets) != 0)
		return fail(p, p->rd.line, "bad boolean \"%s\" for %s (yes or no)", Q(v), k->name);
	return 0;
}

int
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

int
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

int
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

int
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

int
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
proxy_mode_value(struct parser *p, const char *v, enum proxy_mode *out)
{
	static const struct word modes[] = { { "off", PROXY_OFF }, { "v1", PROXY_V1 }, { "v2", PROXY_V2 } };
	int mode;

	if (parse_word(v, modes, nitems(modes), &mode) != 0)
		return fail(p, p->rd.line, "bad proxy_protocol \"%s\" (off, v1 or v2)", Q(v));
	*out = (enum proxy_mode)mode;
	return 0;
}

int
k_proxy(struct parser *p, const struct keydef *k, const char *v)
{
	return proxy_mode_value(p, v, &p->cfg->backends[p->be].proxy);
}

int
k_listener_proxy(struct parser *p, const struct keydef *k, const char *v)
{
	return proxy_mode_value(p, v, &p->cfg->tls_listeners[p->ls].proxy);
}

int
k_public_port(struct parser *p, const struct keydef *k, const char *v)
{
	if (addr_parse_port(v, strlen(v), &p->cfg->tls_listeners[p->ls].public_port) != 0)
		return fail(p, p->rd.line, "bad public_port \"%s\" (1 to 65535)", Q(v));
	return 0;
}

int
k_trusted(struct parser *p, const struct keydef *k, const char *v)
{
	struct listener_conf *l = &p->cfg->tls_listeners[p->ls];
	const char *why;
	struct cidr c;

	if (l->addr.kind == LISTEN_UNIX)
		return fail(p, p->rd.line, "trusted does not apply to a unix: listener (its file's permissions do)");
	if (addr_parse_cidr(v, &c, &why) == -1)
		return fail(p, p->rd.line, "bad CIDR \"%s\" in trusted%s%s", Q(v), why ? ": " : "", why ? why : "");
	if (add_cidr(&l->trusted, &l->ntrusted, &c) == -1)
		return oom(p);
	return 0;
}

int
k_size(struct parser *p, const struct keydef *k, const char *v)
{
	size_t *dst = (size_t *)(void *)((char *)p->cfg + k->off);

	/* One buffer's worth at the least: below that nothing could move. */
	if (parse_size(v, BUFFER_MEMORY_MIN, (size_t)1 << 40, dst) != 0)
		return fail(p, p->rd.line, "bad size \"%s\" for %s (bytes, or with K, M or G; at least 1M)", Q(v),
		    k->name);
	return 0;
}

int
k_deny(struct parser *p, const struct keydef *k, const char *v)
{
	struct config *cfg = p->cfg;
	const char *why;
	struct cidr c;

	if (addr_parse_cidr(v, &c, &why) == -1)
		return fail(p, p->rd.line, "bad CIDR \"%s\" in deny%s%s", Q(v), why ? ": " : "", why ? why : "");
	if (add_cidr(&cfg->deny, &cfg->ndeny, &c) == -1)
		return oom(p);
	return 0;
}

int
k_client_max(struct parser *p, const struct keydef *k, const char *v)
{
	unsigned n;

	if (parse_uint(v, k->min, k->max, &n) != 0)
		return fail(p, p->rd.line, "bad number \"%s\" for %s: must be between %u and %u", Q(v), k->name,
		    k->min, k->max);
	p->cfg->client_limits.max_conns = n;
	return 0;
}

int
k_rate(struct parser *p, const struct keydef *k, const char *v)
{
	if (clients_parse_rate(v, &p->cfg->client_limits.rate) != 0)
		return fail(p, p->rd.line, "bad rate \"%s\" (N/s, N/m or N/h, N from 1 to %u)", Q(v),
		    CLIENTS_RATE_MAX);
	return 0;
}

