/*
 * The configuration parser's own pieces, shared by config.c (sections, the
 * key table, defaults, what needs the whole file) and config_keys.c (one
 * handler per key).  Private to those two files.
 */
#ifndef FUNNELD_CONFIG_PARSER_H
#define FUNNELD_CONFIG_PARSER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "config_reader.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#define DURATION_MAX (7 * 86400)        /* keeps seconds * 1000 within 32 bits */
#define QUOTE_MAX 96                    /* user text quoted in a message */
#define BUFFER_MEMORY_MIN ((size_t)1 << 20)

enum section { SEC_NONE, SEC_FUNNELD, SEC_TLS, SEC_BACKEND, SEC_CLIENTS, SEC_LISTENER };

struct parser;
struct keydef;
typedef int (*key_fn)(struct parser *, const struct keydef *, const char *);

struct keydef {
	const char *name;
	enum section sec;
	bool list;              /* comma-separated, repeating appends */
	bool empty_ok;          /* list: an empty value means "none" */
	key_fn fn;              /* scalar: the value; list: one item */
	size_t off;             /* field in struct config (numbers, sizes) */
	unsigned min, max;
};

struct parser {
	struct ini_reader rd;   /* first: the reader's callbacks get &rd */
	struct config *cfg;
	enum section sec;
	size_t be;              /* current backend (SEC_BACKEND) */
	size_t ls;              /* current listener (SEC_LISTENER) */
	char sectext[ADDR_HOST_MAX + 32];
	int seen[40];           /* line of each key's first use, by keys[] index */
};

#define Q(s) ini_quote((char[QUOTE_MAX]){ 0 }, QUOTE_MAX, (s))
#define fail(p, line, ...) ini_reader_fail(&(p)->rd, (line), __VA_ARGS__)

int oom(struct parser *p);
int grow(void **v, size_t n, size_t size);
int strlist_add(struct strlist *l, const char *s);
int add_cidr(struct cidr **v, size_t *n, const struct cidr *c);
struct tls_conf *cur_tls(struct parser *p);      /* of the section being read */
int add_id(struct parser *p, int **v, size_t *n, size_t max, int id, const char *key, const char *text);

/* config_keys.c: one handler per key (the value of a scalar, one item of a list). */
int k_listen(struct parser *, const struct keydef *, const char *);
int k_allow(struct parser *, const struct keydef *, const char *);
int k_uint(struct parser *, const struct keydef *, const char *);
int k_duration(struct parser *, const struct keydef *, const char *);
int k_workers(struct parser *, const struct keydef *, const char *);
int k_log_level(struct parser *, const struct keydef *, const char *);
int k_metrics(struct parser *, const struct keydef *, const char *);
int k_user(struct parser *, const struct keydef *, const char *);
int k_cert(struct parser *, const struct keydef *, const char *);
int k_key(struct parser *, const struct keydef *, const char *);
int k_alpn(struct parser *, const struct keydef *, const char *);
int k_session_tickets(struct parser *, const struct keydef *, const char *);
int k_cipher(struct parser *, const struct keydef *, const char *);
int k_curve(struct parser *, const struct keydef *, const char *);
int k_version(struct parser *, const struct keydef *, const char *);
int k_socket(struct parser *, const struct keydef *, const char *);
int k_proxy(struct parser *, const struct keydef *, const char *);
int k_size(struct parser *, const struct keydef *, const char *);
int k_deny(struct parser *, const struct keydef *, const char *);
int k_client_max(struct parser *, const struct keydef *, const char *);
int k_rate(struct parser *, const struct keydef *, const char *);
int k_public_port(struct parser *, const struct keydef *, const char *);
int k_listener_proxy(struct parser *, const struct keydef *, const char *);
int k_trusted(struct parser *, const struct keydef *, const char *);

#endif
