/*
 * Process-wide state: the phase the server is in, the counters every worker
 * shares, and the configuration snapshot in force.
 */
#ifndef FUNNELD_SERVER_H
#define FUNNELD_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct listener;
struct worker;
struct tls_ctx;
struct backend_stats;

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
void snapshot_install(struct snapshot *s);      /* takes the caller's reference; NULL at exit */

enum server_phase { PHASE_RUNNING, PHASE_DRAINING, PHASE_STOPPING };

struct server {
	struct listener *listeners;
	size_t nlisteners;
	struct worker *workers;
	size_t nworkers;
	_Atomic int phase;
	atomic_uint conns_open;         /* every accepted connection not yet closed */
	atomic_uint conns_active;       /* past the checks (101 written or being written) */
	atomic_uint conns_pending;      /* head not complete yet */
	atomic_uint accept_limit;       /* conns_open at which accepting pauses */
	atomic_ullong next_conn_id;
	struct clients *clients;        /* [clients] limits, by public client */
	struct clients *peers;          /* max_pending_per_peer, by TCP peer */
};

extern struct server server;

/*
 * The limits tables, sized for cfg's bounds (they live for the process: a
 * reload that raises the bounds far past them is told to restart).  0, or
 * -1 with err set.
 */
int server_limits_init(const struct config *cfg, char *err, size_t errlen);
void server_limits_apply(const struct config *cfg);     /* at start and on reload */
void server_limits_free(void);

#endif
