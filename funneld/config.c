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

#include "config_parser.h"
#include "config_values.h"
#include "tls_suites.h"

#define CONFIG_FILE_MAX (1024 * 1024)

#define OFF(f) offsetof(struct config, f)

static const struct keydef keys[] = {
	{ "listen", SEC_FUNNELD, true, false, k_listen, 0, 0, 0 },
	{ "allow", SEC_FUNNELD, true, true, k_allow, 0, 0, 0 },
	{ "max_connections", SEC_FUNNELD, false, false, k_uint, OFF(max_connections), 1, 1000000 },
	{ "max_pending", SEC_FUNNELD, false, false, k_uint, OFF(max_pending), 1, 1000000 },
	{ "max_pending_per_peer", SEC_FUNNELD, false, false, k_uint, OFF(max_pending_per_peer), 1, 1000000 },
	{ "max_buffer_memory", SEC_FUNNELD, false, false, k_size, OFF(max_buffer_memory), 0, 0 },
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

	{ "deny", SEC_CLIENTS, true, true, k_deny, 0, 0, 0 },
	{ "max_connections", SEC_CLIENTS, false, false, k_client_max, 0, 1, 1000000 },
	{ "rate", SEC_CLIENTS, false, false, k_rate, 0, 0, 0 },

	{ "public_port", SEC_LISTENER, false, false, k_public_port, 0, 0, 0 },
	{ "proxy_protocol", SEC_LISTENER, false, false, k_listener_proxy, 0, 0, 0 },
	{ "trusted", SEC_LISTENER, true, true, k_trusted, 0, 0, 0 },
};

_Static_assert(nitems(keys) <= nitems(((struct parser *)0)->seen), "parser.seen too small");

/*
 * Defaults: every value a file may leave out, set here and nowhere else
 * (apply_defaults() runs after the last line, for what was not given).
 */
static const struct {
	unsigned max_connections, max_pending, max_pending_per_peer;
	size_t max_buffer_memory;
	unsigned header_timeout, handshake_timeout, idle_timeout, shutdown_timeout;
	unsigned workers, ticket_rotation;
	enum log_level log_level;
	bool session_tickets;
	const char *allow[2], *alpn[2], *trusted[2];
} defaults = {
	.max_connections = 10000,
	.max_pending = 1000,
	.max_pending_per_peer = 64,
	.max_buffer_memory = (size_t)256 << 20,
	.header_timeout = 10,
	.handshake_timeout = 10,
	.idle_timeout = 600,
	.shutdown_timeout = 30,
	.workers = 1,
	.ticket_rotation = 12 * 3600,
	.log_level = LOG_LVL_INFO,
	.session_tickets = true,
	.allow = { "100.64.0.0/10", "fd7a:115c:a1e0::/48" },
	.trusted = { "127.0.0.0/8", "::1" },
	.alpn = { "h2", "http/1.1" },
};

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
listener_open(struct parser *p, const char *address)
{
	struct config *cfg = p->cfg;
	struct listener_conf *l;
	struct listen_addr la;

	if (addr_parse_listen(address, &la) != 0)
		return fail(p, p->rd.line, "bad listener address \"%s\" (want [listener HOST:PORT] or "
		    "[listener unix:/path])", Q(address));
	for (size_t i = 0; i < cfg->ntls_listeners; i++)
		if (cfg->tls_listeners[i].addr.sslen == la.sslen &&
		    memcmp(&cfg->tls_listeners[i].addr.ss, &la.ss, la.sslen) == 0)
			return fail(p, p->rd.line, "listener %s defined twice (first at line %d)", la.text,
			    cfg->tls_listeners[i].line);
	if (grow((void **)&cfg->tls_listeners, cfg->ntls_listeners, sizeof(*l)) == -1)
		return oom(p);
	l = &cfg->tls_listeners[cfg->ntls_listeners];
	memset(l, 0, sizeof(*l));
	l->addr = la;
	l->addr.line = l->line = p->rd.line;
	l->public_port = 443;
	l->proxy = PROXY_OFF;
	p->ls = cfg->ntls_listeners++;
	p->sec = SEC_LISTENER;
	snprintf(p->sectext, sizeof(p->sectext), "listener %s", la.text);
	return 0;
}

static int
on_section(struct ini_reader *rd, char *text)
{
	struct parser *p = (struct parser *)rd;

	/* Keys of backend and listener sections are counted per section. */
	for (size_t i = 0; i < nitems(keys); i++)
		if (keys[i].sec == SEC_BACKEND || keys[i].sec == SEC_LISTENER)
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
	if (strcasecmp(text, "clients") == 0) {
		p->sec = SEC_CLIENTS;
		strcpy(p->sectext, "clients");
		return 0;
	}
	if (strncasecmp(text, "backend", 7) == 0 && (text[7] == ' ' || text[7] == '\t'))
		return backend_open(p, ini_trim(text + 8));
	if (strcasecmp(text, "backend") == 0)
		return fail(p, p->rd.line, "missing target in [backend] (want [backend HOST:PORT])");
	if (strncasecmp(text, "listener", 8) == 0 && (text[8] == ' ' || text[8] == '\t'))
		return listener_open(p, ini_trim(text + 9));
	if (strcasecmp(text, "listener") == 0)
		return fail(p, p->rd.line, "missing address in [listener] (want [listener HOST:PORT])");
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
		item = ini_trim(item);
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
		if (k->fn == k_trusted)
			p->cfg->tls_listeners[p->ls].trusted_set = true;
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
	if (!key_given(p, "max_pending", SEC_FUNNELD))
		cfg->max_pending = defaults.max_pending;
	if (!key_given(p, "max_pending_per_peer", SEC_FUNNELD))
		cfg->max_pending_per_peer = defaults.max_pending_per_peer;
	if (!key_given(p, "max_buffer_memory", SEC_FUNNELD))
		cfg->max_buffer_memory = defaults.max_buffer_memory;
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
			if (addr_parse_cidr(defaults.allow[i], &c, NULL) == -1 || add_cidr(&cfg->allow, &cfg->nallow, &c) == -1)
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

/* Each [listener]'s trusted peers (default loopback), and no address both a listener and a listen. */
static int
finalize_listeners(struct parser *p)
{
	struct config *cfg = p->cfg;
	struct cidr c;

	for (size_t i = 0; i < cfg->ntls_listeners; i++) {
		struct listener_conf *l = &cfg->tls_listeners[i];
		for (size_t j = 0; j < cfg->nlistens; j++)
			if (cfg->listens[j].sslen == l->addr.sslen &&
			    memcmp(&cfg->listens[j].ss, &l->addr.ss, l->addr.sslen) == 0)
				return fail(p, l->line, "listener %s is also a listen address (line %d)", l->addr.text,
				    cfg->listens[j].line);
		if (l->addr.kind == LISTEN_UNIX || l->trusted_set)
			continue;
		for (size_t k = 0; k < nitems(defaults.trusted); k++) {
			if (addr_parse_cidr(defaults.trusted[k], &c, NULL) != 0 || add_cidr(&l->trusted, &l->ntrusted, &c) != 0)
				return oom(p);
		}
	}
	return 0;
}

static int
finalize(struct parser *p)
{
	struct config *cfg = p->cfg;
	char where[ADDR_HOST_MAX + 32];

	if (apply_defaults(p) != 0 || check_pair(p, &cfg->tls, "[tls]: ") == -1 || finalize_listeners(p) != 0)
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

const struct listener_conf *
config_tls_listener(const struct config *cfg, const char *addr_text)
{
	for (size_t i = 0; i < cfg->ntls_listeners; i++)
		if (strcmp(cfg->tls_listeners[i].addr.text, addr_text) == 0)
			return &cfg->tls_listeners[i];
	return NULL;
}

const char *
config_restart_needed(const struct config *a, const struct config *b)
{
	if (a->nlistens != b->nlistens || a->ntls_listeners != b->ntls_listeners)
		return "listen or [listener]";
	for (size_t i = 0; i < a->nlistens; i++)
		if (strcmp(a->listens[i].text, b->listens[i].text) != 0)
			return "listen";
	for (size_t i = 0; i < a->ntls_listeners; i++)
		if (strcmp(a->tls_listeners[i].addr.text, b->tls_listeners[i].addr.text) != 0)
			return "[listener]";
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
	for (size_t i = 0; i < cfg->ntls_listeners; i++)
		free(cfg->tls_listeners[i].trusted);
	free(cfg->tls_listeners);
	free(cfg->deny);
	free(cfg);
}
