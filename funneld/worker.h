/*
 * Workers: each thread owns an event_base, an accept event per listener and
 * its connections.  Nothing per connection crosses threads; the main thread
 * only flips server.phase and wakes the workers with worker_notify().
 */
#ifndef FUNNELD_WORKER_H
#define FUNNELD_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "conn_owner.h"

struct conn;
struct event;
struct event_base;
struct listener;

TAILQ_HEAD(conn_list, conn);

struct worker {
	struct conn_owner owner;        /* id, event_base, buffer pool: what its connections use */
	pthread_t thread;
	struct listener *listeners;     /* copies of server.listeners */
	size_t nlisteners;
	struct event **accept_ev;       /* one per listener */
	struct event *ctl_ev;           /* main thread → worker: phase changed */
	struct event *accept_pause_ev;  /* out of descriptors: accept again later */

	/*
	 * Its connections.  One that closes moves to `closed` and is freed by
	 * the reap event, once the callbacks that closed it have returned.
	 */
	struct conn_list conns, closed;
	unsigned nconns;                /* in conns */
	struct event *reap_ev;

	struct event *pool_trim_ev;     /* frees the pool's spares once it goes quiet */
	uint64_t pool_takes_seen;
	void (*on_exit)(void);          /* called in the thread as it leaves its loop */
	void (*on_accept_stopped)(void);        /* called in the thread once it accepts no more */
};

int worker_start(struct worker *w);             /* worker_init, then its thread */
int worker_init(struct worker *w);              /* everything but the thread (also for tests) */
/* A connection accepted on l (or handed over otherwise) becomes the worker's. */
void worker_adopt(struct worker *w, int fd, const struct listener *l, const struct sockaddr *peer);
void worker_free(struct worker *w);             /* after its thread ended */
void worker_notify(struct worker *w);           /* wake it to look at server.phase */

#endif
