/* Process-wide state and configuration snapshots; see server.h. */
#include <pthread.h>
#include <stdlib.h>

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
