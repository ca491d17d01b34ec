/* Process-wide objects: configuration snapshots, listeners, workers. */
#ifndef FUNNELD_H
#define FUNNELD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "buf.h"
#include "config.h"
#include "metrics.h"
#include "tls.h"

struct event;
struct event_base;
struct conn;

/*
 * An immutable configuration with its certificates loaded.  Reload builds a
 * new one off to the side and swaps the pointer; each connection keeps the
 * snapshot it started with until it ends.
 */
struct snapshot {
	atomic_uint refs;
	struct config *cfg;
	struct tls_ctx *tls;
	struct backend_stats **stats;   /* per backend, same order as cfg->backends */
};

struct snapshot *snapshot_load(const char *path, char *err, size_t errlen);
struct snapshot *snapshot_acquire(void);        /* the current one, referenced */
void snapshot_release(struct snapshot *s);
void snapshot_install(struct snapshot *s);      /* takes the caller's reference */

struct listener {
	int fd;
	enum listen_kind kind;
	char text[128];
	char *unlink_path;              /* a socket file we created, removed at exit */
	int worker;                     /* -1: every worker accepts on it; else only that one */
};

enum server_phase { PHASE_RUNNING, PHASE_DRAINING, PHASE_STOPPING };

struct worker {
	unsigned id;
	pthread_t thread;
	struct event_base *base;
	struct listener *listeners;     /* copies of server.listeners */
	size_t nlisteners;
	struct event **accept_ev;       /* one per listener */
	struct event *ctl_ev;           /* main thread → worker: phase changed */
	struct event *accept_pause_ev;  /* out of descriptors: accept again later */
	TAILQ_HEAD(, conn) conns;
	unsigned nconns;
	unsigned char *scratch;         /* WORKER_SCRATCH bytes for input that is thrown away */
	struct bufpool pool;            /* data path buffers of its connections */
	struct event *pool_trim_ev;     /* frees the pool's spares once it goes quiet */
	uint64_t pool_takes_seen;
	void (*on_exit)(void);          /* called in the thread as it leaves its loop */
	void (*on_accept_stopped)(void);        /* called in the thread once it accepts no more */
};

#define WORKER_SCRATCH (16 * 1024 + 512)

struct server {
	struct listener *listeners;
	size_t nlisteners;
	struct worker *workers;
	size_t nworkers;
	_Atomic int phase;
	atomic_uint conns_open;         /* every accepted connection not yet closed */
	atomic_uint conns_active;       /* past the checks (101 written or being written) */
	atomic_ullong next_conn_id;
};

extern struct server server;

/* worker.c */
int worker_start(struct worker *w);
void worker_free(struct worker *w);             /* after its thread ended */
void worker_notify(struct worker *w);           /* wake it to look at server.phase */
void worker_conn_done(struct worker *w);        /* a connection of w ended */

/* listener.c */
int listeners_open(const struct config *cfg, unsigned nworkers, char *err, size_t errlen);
int listeners_adopt_activated(void);            /* sd_listen_fds; returns count or -1 */
void listeners_close(void);

/* conn.c */
void conn_accept(struct worker *w, int fd, const struct listener *l, const struct sockaddr *peer);
void conn_shutdown(struct conn *c);             /* forced end at the close of shutdown_timeout */

#endif
