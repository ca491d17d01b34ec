/* TLS with mbedTLS's public API; see tls.h. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "addr.h"
#include "tls_compat.h"
#include "tls_internals.h"
#include "tls_suites.h"
#include "tls.h"

#define PARTITIONS_MAX 256              /* server names with resumption state: a ticket's first byte */
#define SESSION_CACHE_EXACT 10000       /* sessions kept for a name a certificate spells out */
#define SESSION_CACHE_WILDCARD 100      /* ... for one only a wildcard covers: clients invent those */

struct tls_cert {
	char *cert_path, *key_path;
	mbedtls_x509_crt chain;
	mbedtls_pk_context key;
	char **names;                   /* DNS names the leaf is valid for, lower case */
	size_t nnames;
};

struct tls_server {
	mbedtls_ssl_config conf;
	struct tls_cert *cert;          /* served when SNI names the target or nothing */
	const char **alpn;              /* NULL-terminated, or NULL for no ALPN */
};

/*
 * Resumption is bound to the server name (RFC 6066 §3): each name has its
 * own ticket keys and session cache, so a session made for one name never
 * resumes under another.  A ticket starts with its partition's slot; a
 * forged or stale slot only selects keys that cannot decrypt it.
 *
 * Partitions outlive reloads, so clients keep their sessions, but the table
 * is bounded: a new name takes the slot of the least recently used one,
 * names that only a wildcard covers (a client can invent any number of
 * them) before names a certificate spells out, so churn of invented names
 * never evicts a configured one, and a name in use stays.  An evicted
 * name's tickets no longer decrypt (new keys): a full handshake follows.
 * Memory: at most PARTITIONS_MAX partitions; a session cache holds
 * SESSION_CACHE_EXACT sessions for a name a certificate spells out, and
 * SESSION_CACHE_WILDCARD for any other (fixed when the partition is made).
 */
struct partition {
	size_t slot;                    /* in partitions[], written at the start of its tickets */
	char name[TLS_NAME_MAX];        /* lower case */
	unsigned rotation;              /* ticket key period: also the ticket lifetime */
	bool exact;                     /* a certificate spells the name out */
	uint64_t used;                  /* partition_clock at its last use */
	unsigned refs;                  /* the table's, and one per callback at work */
	mbedtls_ssl_ticket_context tickets;
	mbedtls_ssl_cache_context cache;
};

struct tls_ctx {
	struct tls_cert *certs;
	size_t ncerts;
	struct tls_server *servers;     /* one per backend, same order */
	size_t nservers;
	compat_group *groups;           /* key exchange groups, COMPAT_GROUP_END-terminated */
	unsigned rotation;              /* ticket_rotation, also the cache timeout */
	struct compat_cache cache;      /* the session cache callbacks */
};

static pthread_mutex_t partition_lock = PTHREAD_MUTEX_INITIALIZER;
static struct partition *partitions[PARTITIONS_MAX];
static uint64_t partition_clock;

/* The connection whose handshake this thread is running: the SNI, ticket
 * and cache callbacks (and the random generator) get no connection of their
 * own. */
static __thread struct tls_conn *handshaking;

/* One DRBG per thread: mbedTLS's own locking would serialise the workers. */
static __thread mbedtls_entropy_context *thread_entropy;
static __thread mbedtls_ctr_drbg_context *thread_drbg;

int
tls_thread_init(void)
{
	static const char pers[] = "funneld";

	if (thread_drbg != NULL)
		return 0;
	thread_entropy = calloc(1, sizeof(*thread_entropy));
	thread_drbg = calloc(1, sizeof(*thread_drbg));
	if (thread_entropy == NULL || thread_drbg == NULL)
		return -1;
	mbedtls_entropy_init(thread_entropy);
	mbedtls_ctr_drbg_init(thread_drbg);
	if (mbedtls_ctr_drbg_seed(thread_drbg, mbedtls_entropy_func, thread_entropy,
	    (const unsigned char *)pers, sizeof(pers) - 1) != 0)
		return -1;
	return 0;
}

void
tls_thread_done(void)
{
	if (thread_drbg != NULL) {
		mbedtls_ctr_drbg_free(thread_drbg);
		mbedtls_entropy_free(thread_entropy);
		free(thread_drbg);
		free(thread_entropy);
		thread_drbg = NULL;
		thread_entropy = NULL;
	}
}

static int
thread_random(void *unused, unsigned char *out, size_t len)
{
	if (handshaking != NULL)
		tls_internals_lend_base_table(&handshaking->ssl);
	if (thread_drbg == NULL && tls_thread_init() != 0)
		return MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
	return mbedtls_ctr_drbg_random(thread_drbg, out, len);
}

static void
partition_free(struct partition *p)
{
	mbedtls_ssl_ticket_free(&p->tickets);
	mbedtls_ssl_cache_free(&p->cache);
	free(p);
}

void
tls_global_done(void)
{
	pthread_mutex_lock(&partition_lock);
	for (size_t i = 0; i < PARTITIONS_MAX; i++) {
		if (partitions[i] != NULL)
			partition_free(partitions[i]);
		partitions[i] = NULL;
	}
	pthread_mutex_unlock(&partition_lock);
	tls_internals_done();
	compat_global_done();
}

int
tls_global_init(char *what, size_t len)
{
	char internals[128];

	if (compat_global_init() != 0) {
		snprintf(what, len, "mbedTLS %s: PSA crypto does not start", MBEDTLS_VERSION_STRING);
		return -1;
	}
	tls_internals_init(internals, sizeof(internals));
	snprintf(what, len, "%s; TLS %s", internals, compat_tls13() ? "1.2 and 1.3" : "1.2");
	return 0;
}

const char *
tls_strerror(int err, char *buf, size_t len)
{
	mbedtls_strerror(err, buf, len);
	return buf;
}

/* The socket glue.  Sending only queues: the connection flushes tx. */
static int
bio_send(void *arg, const unsigned char *buf, size_t len)
{
	struct tls_conn *tc = arg;
	struct relay_io *io = tc->io;

	/* Remember the fatal alert a failing handshake sends (still plaintext
	 * then): it names the failure better than mbedTLS's return code. */
	if (tc->alert_sent == 0 && len >= 7 && buf[0] == MBEDTLS_SSL_MSG_ALERT &&
	    buf[5] == MBEDTLS_SSL_ALERT_LEVEL_FATAL)
		tc->alert_sent = buf[6];
	if (len >= 1 && buf[0] == MBEDTLS_SSL_MSG_HANDSHAKE)
		tc->hello_sent = true;
	if (buf_append(io->pool, &io->tx, buf, len, TLS_TX_MAX) != 0)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;
	return (int)len;
}

/*
 * mbedTLS asks for a record's 5-byte header, then its body.  Reading up to
 * BUF_READ at once serves several records per recv().  A read shorter than
 * asked for emptied the socket: until the event loop says it is readable
 * again, WANT_READ costs no system call.
 */
static int
bio_recv(void *arg, unsigned char *buf, size_t len)
{
	struct tls_conn *tc = arg;
	struct relay_io *io = tc->io;
	struct buf *rx = &io->rx;

	if (buf_pending(rx) == 0) {
		ssize_t n;
		if (!io->readable)
			return MBEDTLS_ERR_SSL_WANT_READ;
		if (buf_take(io->pool, rx) != 0)
			return MBEDTLS_ERR_SSL_ALLOC_FAILED;
		n = recv(io->fd, rx->p, BUF_READ, 0);
		if (n <= 0) {
			buf_release(io->pool, rx);
			if (n == 0)
				return 0;       /* EOF: mbedTLS reports MBEDTLS_ERR_SSL_CONN_EOF */
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				io->readable = false;
				return MBEDTLS_ERR_SSL_WANT_READ;
			}
			return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
		}
		if ((size_t)n < BUF_READ)
			io->readable = false;
		rx->len = (size_t)n;
	}
	size_t take = buf_pending(rx) < len ? buf_pending(rx) : len;
	memcpy(buf, rx->p + rx->off, take);
	rx->off += take;
	if (buf_pending(rx) == 0)
		buf_release(io->pool, rx);
	if (tc->first_byte < 0 && take > 0)
		tc->first_byte = buf[0];
	tc->taken += take;
	return (int)take;
}

static bool
name_matches(const char *pattern, const char *name)
{
	if (strcasecmp(pattern, name) == 0)
		return true;
	/* "*.example.com" covers exactly one more label. */
	if (pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = strchr(name, '.');
		return dot != NULL && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
	}
	return false;
}

static bool
cert_covers(const struct tls_cert *c, const char *name)
{
	for (size_t i = 0; i < c->nnames; i++)
		if (name_matches(c->names[i], name))
			return true;
	return false;
}

/* Whether c spells name out (a wildcard covers names anyone can invent). */
static bool
cert_names(const struct tls_cert *c, const char *name)
{
	for (size_t i = 0; i < c->nnames; i++)
		if (c->names[i][0] != '*' && strcmp(c->names[i], name) == 0)
			return true;
	return false;
}

static int
add_name(struct tls_cert *c, const unsigned char *p, size_t len)
{
	char **v = realloc(c->names, (c->nnames + 1) * sizeof(*v));
	if (v == NULL)
		return -1;
	c->names = v;
	if ((v[c->nnames] = strndup((const char *)p, len)) == NULL)
		return -1;
	for (char *s = v[c->nnames]; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s += 'a' - 'A';
	c->nnames++;
	return 0;
}

/* The leaf's DNS subjectAltNames, or its CN when it has none. */
static int
collect_names(struct tls_cert *c)
{
	const mbedtls_x509_sequence *san;

	for (san = &c->chain.subject_alt_names; san != NULL && san->buf.p != NULL; san = san->next)
		if ((san->buf.tag & MBEDTLS_ASN1_TAG_VALUE_MASK) == MBEDTLS_X509_SAN_DNS_NAME &&
		    add_name(c, san->buf.p, san->buf.len) != 0)
			return -1;
	if (c->nnames > 0)
		return 0;
	for (const mbedtls_x509_name *n = &c->chain.subject; n != NULL; n = n->next)
		if (n->oid.p != NULL && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0 &&
		    add_name(c, n->val.p, n->val.len) != 0)
			return -1;
	return 0;
}

static void
cert_free(struct tls_cert *c)
{
	mbedtls_x509_crt_free(&c->chain);
	mbedtls_pk_free(&c->key);
	for (size_t i = 0; i < c->nnames; i++)
		free(c->names[i]);
	free(c->names);
	free(c->cert_path);
	free(c->key_path);
}

static int
readable(const char *path, const char *what, const char *cfgpath, int line, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		snprintf(err, errlen, "%s:%d: cannot read %s %s: %s", cfgpath, line, what, path, strerror(errno));
		return -1;
	}
	fclose(f);
	return 0;
}

/*
 * Sign once now, single-threaded: mbedTLS caches the curve's precomputed
 * table in the key's group on first use, which would otherwise happen in
 * two workers at once, and makes every later signature cheaper.
 */
static int
warm_up(struct tls_cert *c)
{
	unsigned char hash[32] = { 0 }, sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
	size_t siglen;

	return compat_pk_sign(&c->key, hash, sizeof(hash), sig, sizeof(sig), &siglen, thread_random);
}

/* Load (or find, when already loaded) the pair cert/key. */
static struct tls_cert *
load_cert(struct tls_ctx *ctx, const struct config *cfg, const struct tls_conf *conf, char *err, size_t errlen)
{
	char ebuf[160];
	int ret;

	for (size_t i = 0; i < ctx->ncerts; i++)
		if (strcmp(ctx->certs[i].cert_path, conf->cert) == 0 && strcmp(ctx->certs[i].key_path, conf->key) == 0)
			return &ctx->certs[i];

	if (readable(conf->cert, "certificate", cfg->path, conf->cert_line, err, errlen) != 0 ||
	    readable(conf->key, "key", cfg->path, conf->key_line, err, errlen) != 0)
		return NULL;

	struct tls_cert *c = &ctx->certs[ctx->ncerts];
	memset(c, 0, sizeof(*c));
	mbedtls_x509_crt_init(&c->chain);
	mbedtls_pk_init(&c->key);
	c->cert_path = strdup(conf->cert);
	c->key_path = strdup(conf->key);
	ctx->ncerts++;
	if (c->cert_path == NULL || c->key_path == NULL) {
		snprintf(err, errlen, "%s: out of memory", cfg->path);
		return NULL;
	}
	if ((ret = mbedtls_x509_crt_parse_file(&c->chain, conf->cert)) != 0) {
		snprintf(err, errlen, "%s:%d: bad certificate %s: %s", cfg->path, conf->cert_line, conf->cert,
		    tls_strerror(ret, ebuf, sizeof(ebuf)));
		return NULL;
	}
	if ((ret = compat_pk_parse_keyfile(&c->key, conf->key, thread_random)) != 0) {
		snprintf(err, errlen, "%s:%d: bad key %s: %s", cfg->path, conf->key_line, conf->key,
		    tls_strerror(ret, ebuf, sizeof(ebuf)));
		return NULL;
	}
	if (compat_pk_check_pair(&c->chain.pk, &c->key, thread_random) != 0) {
		snprintf(err, errlen, "%s:%d: key %s does not match certificate %s", cfg->path, conf->key_line,
		    conf->key, conf->cert);
		return NULL;
	}
	if (!mbedtls_pk_can_do(&c->key, MBEDTLS_PK_ECDSA) && !mbedtls_pk_can_do(&c->key, MBEDTLS_PK_RSA)) {
		snprintf(err, errlen, "%s:%d: key %s is neither ECDSA nor RSA", cfg->path, conf->key_line, conf->key);
		return NULL;
	}
	if (warm_up(c) != 0) {
		snprintf(err, errlen, "%s:%d: key %s cannot sign", cfg->path, conf->key_line, conf->key);
		return NULL;
	}
	if (collect_names(c) != 0) {
		snprintf(err, errlen, "%s: out of memory", cfg->path);
		return NULL;
	}
	return c;
}

/*
 * SNI (DESIGN.md §1.4): a host name (nothing else is kept: it reaches logs,
 * the PROXY header and partition names) that the certificate of the backend
 * the target routed to covers.  Anything else, a name of another backend's
 * certificate included, fails closed with unrecognized_name.
 */
static int
on_sni(void *arg, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len)
{
	const struct tls_ctx *ctx = arg;
	struct tls_conn *tc = handshaking;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (!addr_hostname_valid((const char *)name, len)) {
		tc->sni_rejected = true;
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		tc->sni[i] = (char)tolower(name[i]);
	tc->sni[len] = '\0';
	/* A ticket read before the SNI resumed a session of another name. */
	if (tc->resumed[0] != '\0' && strcmp(tc->resumed, tc->sni) != 0) {
		tc->resumption_mismatch = true;
		return -1;
	}
	if (!cert_covers(ctx->servers[tc->server].cert, tc->sni)) {
		tc->sni_rejected = true;
		return -1;
	}
	return 0;
}

static const char *
server_name(const struct tls_conn *tc)
{
	return tc->sni[0] != '\0' ? tc->sni : tc->target_host;
}

static struct partition *
partition_new(const char *name, unsigned rotation, bool exact)
{
	struct partition *p;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->rotation = rotation;
	p->exact = exact;
	p->refs = 1;
	mbedtls_ssl_ticket_init(&p->tickets);
	mbedtls_ssl_cache_init(&p->cache);
	/* mbedTLS rotates the key every `rotation` seconds, keeps the previous
	 * one, and refuses tickets older than that: exactly ticket_rotation. */
	if (mbedtls_ssl_ticket_setup(&p->tickets, thread_random, NULL, MBEDTLS_CIPHER_AES_256_GCM, rotation) != 0) {
		partition_free(p);
		return NULL;
	}
	mbedtls_ssl_cache_set_max_entries(&p->cache, exact ? SESSION_CACHE_EXACT : SESSION_CACHE_WILDCARD);
	mbedtls_ssl_cache_set_timeout(&p->cache, (int)rotation);
	return p;
}

static void
partition_put(struct partition *p)
{
	unsigned refs;

	pthread_mutex_lock(&partition_lock);
	refs = --p->refs;
	pthread_mutex_unlock(&partition_lock);
	if (refs == 0)
		partition_free(p);
}

/* The slot to reuse when the table is full: the least recently used name
 * only a wildcard covers, else the least recently used of all. */
static size_t
partition_victim(void)
{
	size_t lru = 0, lru_wild = PARTITIONS_MAX;

	for (size_t i = 0; i < PARTITIONS_MAX; i++) {
		if (partitions[i]->used < partitions[lru]->used)
			lru = i;
		if (!partitions[i]->exact && (lru_wild == PARTITIONS_MAX || partitions[i]->used < partitions[lru_wild]->used))
			lru_wild = i;
	}
	return lru_wild != PARTITIONS_MAX ? lru_wild : lru;
}

/*
 * The partition of name (made when create is true, evicting one when the
 * table is full), marked used and held: partition_put() when done.  NULL
 * when there is none, or no memory.
 */
static struct partition *
partition_get(const char *name, unsigned rotation, bool exact, bool create)
{
	struct partition *p = NULL, *evicted = NULL;
	size_t slot = PARTITIONS_MAX;

	pthread_mutex_lock(&partition_lock);
	for (size_t i = 0; i < PARTITIONS_MAX && p == NULL; i++) {
		if (partitions[i] == NULL) {
			if (slot == PARTITIONS_MAX)
				slot = i;
		} else if (partitions[i]->rotation == rotation && strcmp(partitions[i]->name, name) == 0) {
			p = partitions[i];
		}
	}
	if (p == NULL) {
		if (!create || (p = partition_new(name, rotation, exact)) == NULL)
			goto out;
		if (slot == PARTITIONS_MAX) {
			slot = partition_victim();
			evicted = partitions[slot];
		}
		p->slot = slot;
		partitions[slot] = p;
	}
	p->used = ++partition_clock;
	p->exact = p->exact || exact;
	p->refs++;
out:
	pthread_mutex_unlock(&partition_lock);
	if (evicted != NULL)
		partition_put(evicted);         /* the table's reference: freed once no callback holds it */
	return p;
}

/* The partition in slot i, marked used and held, or NULL. */
static struct partition *
partition_at(size_t i)
{
	struct partition *p;

	pthread_mutex_lock(&partition_lock);
	if ((p = i < PARTITIONS_MAX ? partitions[i] : NULL) != NULL) {
		p->used = ++partition_clock;
		p->refs++;
	}
	pthread_mutex_unlock(&partition_lock);
	return p;
}

/* The partition of the name the handshake on this thread is for. */
static struct partition *
partition_of(const struct tls_ctx *ctx, const struct tls_conn *tc, bool create)
{
	const char *name = server_name(tc);

	return partition_get(name, ctx->rotation, cert_names(ctx->servers[tc->server].cert, name), create);
}

/*
 * A ticket is the partition's slot and what mbedTLS seals with its keys.
 * Without memory for a partition the ticket is one byte that never
 * decrypts: TLS 1.3 would end the handshake, after the client's Finished,
 * over a failure here.
 */
static int
ticket_write(void *arg, const mbedtls_ssl_session *session, unsigned char *start, const unsigned char *end,
    size_t *tlen, uint32_t *lifetime)
{
	const struct tls_ctx *ctx = arg;
	struct partition *p;
	int ret;

	if (end - start < 2)
		return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
	if (handshaking == NULL || (p = partition_of(ctx, handshaking, true)) == NULL) {
		start[0] = 0;
		*tlen = 1;
		*lifetime = 0;
		return 0;
	}
	start[0] = (unsigned char)p->slot;
	ret = mbedtls_ssl_ticket_write(&p->tickets, session, start + 1, end, tlen, lifetime);
	partition_put(p);
	if (ret == 0)
		*tlen += 1;
	return ret;
}

static int
ticket_parse(void *arg, mbedtls_ssl_session *session, unsigned char *buf, size_t len)
{
	struct partition *p;
	int ret;

	if (handshaking == NULL || len < 2 || (p = partition_at(buf[0])) == NULL)
		return MBEDTLS_ERR_SSL_INVALID_MAC;     /* a full handshake follows */
	/* The client named a server already (always, in TLS 1.3): a session of
	 * another name does not resume. */
	if (handshaking->sni[0] != '\0' && strcmp(p->name, handshaking->sni) != 0)
		ret = MBEDTLS_ERR_SSL_INVALID_MAC;
	else if ((ret = mbedtls_ssl_ticket_parse(&p->tickets, session, buf + 1, len - 1)) == 0)
		snprintf(handshaking->resumed, sizeof(handshaking->resumed), "%s", p->name);
	partition_put(p);
	return ret;
}

/* TLS 1.2 session IDs.  The cache is asked once the whole ClientHello, SNI included, is read. */
static int
cache_get(void *arg, const unsigned char *id, size_t len, mbedtls_ssl_session *session)
{
	const struct tls_ctx *ctx = arg;
	struct partition *p;
	int ret;

	if (handshaking == NULL || (p = partition_of(ctx, handshaking, false)) == NULL)
		return 1;
	if ((ret = compat_cache_get(&p->cache, id, len, session)) == 0)
		snprintf(handshaking->resumed, sizeof(handshaking->resumed), "%s", p->name);
	partition_put(p);
	return ret != 0;
}

static int
cache_set(void *arg, const unsigned char *id, size_t len, const mbedtls_ssl_session *session)
{
	const struct tls_ctx *ctx = arg;
	struct partition *p;
	int ret;

	if (handshaking == NULL || (p = partition_of(ctx, handshaking, true)) == NULL)
		return 1;
	ret = compat_cache_set(&p->cache, id, len, session);
	partition_put(p);
	return ret;
}

static const char **
alpn_list(const struct strlist *l)
{
	const char **v;

	if (l->n == 0)
		return NULL;
	if ((v = calloc(l->n + 1, sizeof(*v))) == NULL)
		return NULL;
	for (size_t i = 0; i < l->n; i++)
		v[i] = l->v[i];
	return v;
}

static int
server_setup(struct tls_ctx *ctx, const struct config *cfg, struct tls_server *s, const struct backend_conf *b,
    char *err, size_t errlen)
{
	int ret;

	if ((s->cert = load_cert(ctx, cfg, &b->tls, err, errlen)) == NULL)
		return -1;

	mbedtls_ssl_config *c = &s->conf;
	if ((ret = mbedtls_ssl_config_defaults(c, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
	    MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
		snprintf(err, errlen, "%s: mbedtls_ssl_config_defaults failed (%d)", cfg->path, ret);
		return -1;
	}
	mbedtls_ssl_conf_rng(c, thread_random, NULL);
	compat_conf_versions(c, (cfg->tls_versions & TLS_V12) != 0, (cfg->tls_versions & TLS_V13) != 0);
	compat_conf_tls13(c);
	mbedtls_ssl_conf_renegotiation(c, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	/* One list for both versions: config.c gave each version suites of its own. */
	mbedtls_ssl_conf_ciphersuites(c, cfg->ciphers);
	compat_conf_groups(c, ctx->groups);
	mbedtls_ssl_conf_sni(c, on_sni, ctx);
	if ((ret = mbedtls_ssl_conf_own_cert(c, &s->cert->chain, &s->cert->key)) != 0) {
		snprintf(err, errlen, "%s: mbedtls_ssl_conf_own_cert failed (%d)", cfg->path, ret);
		return -1;
	}
	if (b->tls.alpn.n > 0) {
		if ((s->alpn = alpn_list(&b->tls.alpn)) == NULL ||
		    mbedtls_ssl_conf_alpn_protocols(c, s->alpn) != 0) {
			snprintf(err, errlen, "%s: bad alpn list", cfg->path);
			return -1;
		}
	}
	if (cfg->session_tickets)
		mbedtls_ssl_conf_session_tickets_cb(c, ticket_write, ticket_parse, ctx);
	compat_conf_session_cache(c, &ctx->cache);
	return 0;
}

int
tls_load(const struct config *cfg, struct tls_ctx **out, char *err, size_t errlen)
{
	struct tls_ctx *ctx;

	if (tls_thread_init() != 0) {
		snprintf(err, errlen, "%s: cannot seed the random generator", cfg->path);
		return -1;
	}
	if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
		goto oom;
	/* At most one certificate per backend plus [tls]'s. */
	ctx->certs = calloc(cfg->nbackends + 1, sizeof(*ctx->certs));
	ctx->servers = calloc(cfg->nbackends ? cfg->nbackends : 1, sizeof(*ctx->servers));
	ctx->groups = calloc(cfg->ncurves + 1, sizeof(*ctx->groups));
	if (ctx->certs == NULL || ctx->servers == NULL || ctx->groups == NULL)
		goto oom;
	for (size_t i = 0; i < cfg->ncurves; i++) {
		ctx->groups[i] = compat_group_of((mbedtls_ecp_group_id)cfg->curves[i]);
		tls_internals_prepare_curve(cfg->curves[i], thread_random);
	}
	ctx->groups[cfg->ncurves] = COMPAT_GROUP_END;
	ctx->rotation = cfg->ticket_rotation;
	ctx->cache = (struct compat_cache){ .arg = ctx, .get = cache_get, .set = cache_set };

	/* [tls] alone must load too, so that -t checks it even without backends. */
	if (cfg->tls.cert != NULL && cfg->tls.key != NULL && load_cert(ctx, cfg, &cfg->tls, err, errlen) == NULL)
		goto fail;
	for (size_t i = 0; i < cfg->nbackends; i++) {
		mbedtls_ssl_config_init(&ctx->servers[i].conf);
		ctx->nservers++;
		if (server_setup(ctx, cfg, &ctx->servers[i], &cfg->backends[i], err, errlen) != 0)
			goto fail;
	}
	*out = ctx;
	return 0;
oom:
	snprintf(err, errlen, "%s: out of memory", cfg->path);
fail:
	tls_free(ctx);
	return -1;
}

void
tls_free(struct tls_ctx *ctx)
{
	if (ctx == NULL)
		return;
	for (size_t i = 0; i < ctx->nservers; i++) {
		mbedtls_ssl_config_free(&ctx->servers[i].conf);
		free(ctx->servers[i].alpn);
	}
	for (size_t i = 0; i < ctx->ncerts; i++)
		cert_free(&ctx->certs[i]);
	free(ctx->servers);
	free(ctx->certs);
	free(ctx->groups);
	free(ctx);
}

int
tls_conn_setup(const struct tls_ctx *ctx, size_t backend, const char *target_host, struct tls_conn *tc,
    struct relay_io *io)
{
	tc->io = io;
	tc->server = backend;
	tc->target_host = target_host;
	tc->sni[0] = '\0';
	tc->sni_rejected = false;
	tc->first_byte = -1;
	tc->taken = 0;
	tc->alert_sent = 0;
	tc->hello_sent = false;
	tc->resumed[0] = '\0';
	tc->resumption_mismatch = false;
	mbedtls_ssl_init(&tc->ssl);
	tc->ready = true;
	mbedtls_ssl_set_bio(&tc->ssl, tc, bio_send, bio_recv, NULL);
	return mbedtls_ssl_setup(&tc->ssl, &ctx->servers[backend].conf);
}

void
tls_conn_free(struct tls_conn *tc)
{
	if (tc->ready)
		mbedtls_ssl_free(&tc->ssl);
	tls_internals_forget(&tc->parked);
	tc->ready = false;
}

bool
tls_conn_trim(struct tls_conn *tc)
{
	return tls_internals_release(&tc->ssl, &tc->parked);
}

bool
tls_conn_untrim(struct tls_conn *tc)
{
	return tls_internals_restore(&tc->ssl, &tc->parked);
}

enum hs_failure
tls_conn_failure(const struct tls_conn *tc, int err)
{
	enum hs_failure f;

	if (tc->resumption_mismatch)
		return HS_FAIL_RESUMPTION_NAME_MISMATCH;
	if (tc->sni_rejected || tc->alert_sent == MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME)
		return HS_FAIL_UNRECOGNIZED_NAME;
	if (tc->alert_sent == MBEDTLS_SSL_ALERT_MSG_NO_APPLICATION_PROTOCOL)
		return HS_FAIL_NO_APPLICATION_PROTOCOL;
	/* A TLS stream starts with a handshake record (content type 22). */
	if (tc->first_byte >= 0 && tc->first_byte != MBEDTLS_SSL_MSG_HANDSHAKE)
		return HS_FAIL_NOT_TLS;
	/* 3.x's decode errors come from any message: after our hello, not the ClientHello's. */
	if ((f = compat_hs_failure(err)) != HS_FAIL_NONE)
		return f == HS_FAIL_BAD_CLIENT_HELLO && tc->hello_sent ? HS_FAIL_OTHER : f;
	switch (err) {
	case MBEDTLS_ERR_SSL_CONN_EOF:
	case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
		return HS_FAIL_EOF;
	case MBEDTLS_ERR_NET_CONN_RESET:
	case MBEDTLS_ERR_NET_RECV_FAILED:
	case MBEDTLS_ERR_NET_SEND_FAILED:
		return HS_FAIL_RESET;
	case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
		return HS_FAIL_CLIENT_ALERT;
	case MBEDTLS_ERR_SSL_INVALID_RECORD:
	case MBEDTLS_ERR_SSL_UNEXPECTED_RECORD:
	case MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE:
	case MBEDTLS_ERR_SSL_BAD_INPUT_DATA:
		return HS_FAIL_NOT_TLS;
	default:
		return HS_FAIL_OTHER;
	}
}

int
tls_conn_handshake(struct tls_conn *tc)
{
	int ret;

	handshaking = tc;
	ret = mbedtls_ssl_handshake(&tc->ssl);
	handshaking = NULL;
	tls_internals_take_back(&tc->ssl);
	if (ret == 0)
		tls_internals_handshake_done(&tc->ssl);
	/* Resumed under a name other than the one the session was made for. */
	if (ret == 0 && tc->resumed[0] != '\0' && strcmp(tc->resumed, server_name(tc)) != 0) {
		tc->resumption_mismatch = true;
		return COMPAT_ERR_HANDSHAKE_REFUSED;
	}
	return ret;
}
