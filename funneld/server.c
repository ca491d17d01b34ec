/* Process-wide state and configuration snapshots; see server.h. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "buf.h"
#include "clients.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "tls.h"

struct server server;

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapshot *current;

static void
snapshot_free(struct snapshot *s)
{
	tls_free(s->tls);
	config_free(s->cfg);
	free(s->stats);
	free(s);
}

struct snapshot *
snapshot_load(const char *path, char *err, size_t errlen)
{
	struct snapshot *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	atomic_init(&s->refs, 1);
	if (config_load(path, &s->cfg, err, errlen) != 0 || tls_load(s->cfg, &s->tls, err, errlen) != 0)
		goto fail;
	if ((s->stats = calloc(s->cfg->nbackends + 1, sizeof(struct backend_stats *))) == NULL)
		goto fail;
	for (size_t i = 0; i < s->cfg->nbackends; i++)
		if ((s->stats[i] = metrics_backend(s->cfg->backends[i].name)) == NULL)
			goto fail;
	return s;
fail:
	snapshot_free(s);
	return NULL;
}

struct snapshot *
snapshot_acquire(void)
{
	struct snapshot *s;

	/* The lock keeps a reload from freeing it between load and reference. */
	pthread_mutex_lock(&current_lock);
	s = current;
	atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&current_lock);
	return s;
}

void
snapshot_release(struct snapshot *s)
{
	if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
		snapshot_free(s);
}

void
snapshot_install(struct snapshot *s)
{
	struct snapshot *old;

	pthread_mutex_lock(&current_lock);
	old = current;
	current = s;
	pthread_mutex_unlock(&current_lock);
	snapshot_release(old);
}

#define CLIENT_LOG_INTERVAL_MS 10000    /* a client's refusals are logged once per this */
#define CLIENT_TABLE_MIN 65536

/* Four entries per connection that can hold one (clients.h), at least CLIENT_TABLE_MIN. */
static size_t
table_capacity(unsigned bound)
{
	size_t want = (size_t)bound * 4;

	return want < CLIENT_TABLE_MIN ? CLIENT_TABLE_MIN : want;
}

int
server_limits_init(const struct config *cfg, char *err, size_t errlen)
{
	uint8_t key[SIPHASH_KEY_LEN];

	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		return -1;
	}
	server.clients = clients_new(table_capacity(cfg->max_connections + cfg->max_pending), key,
	    CLIENT_LOG_INTERVAL_MS);
	key[0] ^= 0x5a;                 /* a different key: the tables need not collide alike */
	server.peers = clients_new(table_capacity(cfg->max_pending), key, CLIENT_LOG_INTERVAL_MS);
	explicit_bzero(key, sizeof(key));
	if (server.clients == NULL || server.peers == NULL) {
		snprintf(err, errlen, "client tables: %s", strerror(errno));
		return -1;
	}
	server_limits_apply(cfg);
	return 0;
}

void
server_limits_apply(const struct config *cfg)
{
	struct clients_stats st;

	atomic_store(&server.accept_limit, cfg->max_connections + cfg->max_pending);
	buf_set_budget(cfg->max_buffer_memory);
	clients_stats(server.clients, &st);
	if ((size_t)(cfg->max_connections + cfg->max_pending) * 4 > st.capacity)
		log_notice("max_connections + max_pending above a quarter of the client table (%zu entries): "
		    "restart to resize it", st.capacity);
}

void
server_limits_free(void)
{
	clients_free(server.clients);
	clients_free(server.peers);
	server.clients = server.peers = NULL;
}
