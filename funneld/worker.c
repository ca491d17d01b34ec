/* Workers; see worker.h.  The only owner of a worker's list of connections. */
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conn.h"
#include "listener.h"
#include "log.h"
#include "server.h"
#include "worker.h"

#define ACCEPT_BATCH 64                 /* per wake-up, so one listener cannot starve the rest */
#define ACCEPT_PAUSE_MS 100             /* after EMFILE/ENFILE */
#define ACCEPT_FULL_PAUSE_MS 20         /* at max_connections + max_pending */
#define POOL_QUIET_MS 1000              /* a pool unused this long frees its spare buffers */

static void
accept_enable(struct worker *w, bool on)
{
	for (size_t i = 0; i < w->nlisteners; i++) {
		if (on)
			event_add(w->accept_ev[i], NULL);
		else
			event_del(w->accept_ev[i]);
	}
}

static void
accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	if (atomic_load(&server.phase) == PHASE_RUNNING)
		accept_enable(w, true);
}

void
worker_adopt(struct worker *w, int fd, const struct listener *l, const struct sockaddr *peer)
{
	struct conn *c = conn_new(&w->owner, fd, peer);

	if (c == NULL)
		return;
	TAILQ_INSERT_TAIL(&w->conns, c, entry);
	w->nconns++;
	conn_start(c, l);
}

static void
on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	const struct listener *l = NULL;
	static _Atomic time_t last_warning;

	for (size_t i = 0; i < w->nlisteners; i++)
		if (w->listeners[i].fd == fd)
			l = &w->listeners[i];
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);

		/* Every connection counts, in any state: at the bound new ones
		 * wait in the kernel's backlog until one ends. */
		if (atomic_load(&server.conns_open) >= atomic_load(&server.accept_limit)) {
			struct timeval tv = { 0, ACCEPT_FULL_PAUSE_MS * 1000 };
			accept_enable(w, false);
			evtimer_add(w->accept_pause_ev, &tv);
			return;
		}
		int s = accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (s >= 0) {
			worker_adopt(w, s, l, plen > 0 ? (struct sockaddr *)&peer : NULL);
			continue;
		}
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/*
			 * Out of descriptors: the pending connection stays in the
			 * backlog and the listener stays readable, so polling it now
			 * would spin.  Stop accepting for a moment instead.
			 */
			time_t now = time(NULL);
			if (atomic_exchange(&last_warning, now) != now)
				log_warn("accept on %s", l ? l->text : "listener");
			struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
			accept_enable(w, false);
			evtimer_add(w->accept_pause_ev, &tv);
		} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
			log_warn("accept on %s", l ? l->text : "listener");
		}
		return;
	}
}

static void
pool_trim_arm(struct worker *w)
{
	struct timeval tv = { 0, POOL_QUIET_MS * 1000 };

	w->pool_takes_seen = w->owner.pool.takes;
	evtimer_add(w->pool_trim_ev, &tv);
}

static void
on_pool_spare(void *arg)
{
	struct worker *w = arg;

	if (!evtimer_pending(w->pool_trim_ev, NULL))
		pool_trim_arm(w);
}

/* Busy pools keep their spares; a quiet one gives the memory back. */
static void
pool_trim(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	if (w->owner.pool.takes != w->pool_takes_seen) {
		pool_trim_arm(w);
		return;
	}
	bufpool_clear(&w->owner.pool);
	/* Quiet: the heap a burst left behind (TLS contexts, connections) goes
	 * back to the kernel too, so bursts do not ratchet the RSS up. */
	malloc_trim(0);
}

/* A connection closed: it moves to the reap list, freed once the callbacks unwound. */
static void
conn_closed(struct conn_owner *o, struct conn *c)
{
	struct worker *w = (struct worker *)((char *)o - offsetof(struct worker, owner));

	TAILQ_REMOVE(&w->conns, c, entry);
	w->nconns--;
	TAILQ_INSERT_TAIL(&w->closed, c, entry);
	event_active(w->reap_ev, EV_READ, 0);
}

static void
free_closed(struct worker *w)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&w->closed)) != NULL) {
		TAILQ_REMOVE(&w->closed, c, entry);
		conn_free(c);
	}
}

/* Runs after the callbacks that closed connections have returned. */
static void
reap(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	free_closed(w);
	if (w->nconns == 0 && atomic_load(&server.phase) != PHASE_RUNNING)
		event_base_loopbreak(w->owner.base);
}

/* The main thread changed server.phase. */
static void
on_control(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct conn *c;

	switch (atomic_load(&server.phase)) {
	case PHASE_RUNNING:
		return;
	case PHASE_DRAINING:
		accept_enable(w, false);
		event_del(w->accept_pause_ev);
		if (w->on_accept_stopped != NULL)
			w->on_accept_stopped();
		if (w->nconns == 0)
			event_base_loopbreak(w->owner.base);
		return;
	case PHASE_STOPPING:
		accept_enable(w, false);
		event_del(w->accept_pause_ev);
		while ((c = TAILQ_FIRST(&w->conns)) != NULL)
			conn_close(c, RESULT_SHUTDOWN, "shutdown_timeout reached");
		event_base_loopbreak(w->owner.base);
		return;
	}
}

void
worker_notify(struct worker *w)
{
	event_active(w->ctl_ev, EV_READ, 0);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	if (tls_thread_init() != 0)
		fatalx("worker %u: cannot seed the random generator", w->owner.id);
	if (atomic_load(&server.phase) == PHASE_RUNNING)
		accept_enable(w, true);
	/* Runs until on_control breaks the loop, even with nothing to watch. */
	event_base_loop(w->owner.base, EVLOOP_NO_EXIT_ON_EMPTY);
	free_closed(w);
	tls_thread_done();
	if (w->on_exit != NULL)
		w->on_exit();
	return NULL;
}

int
worker_init(struct worker *w)
{
	TAILQ_INIT(&w->conns);
	TAILQ_INIT(&w->closed);
	w->owner.closed = conn_closed;
	slab_init(&w->owner.slab, conn_alloc_size());
	if ((w->owner.base = event_base_new()) == NULL)
		return -1;
	if ((w->owner.scratch = malloc(CONN_SCRATCH)) == NULL)
		return -1;
	/* Its own copy (the main thread closes the listeners once all workers
	 * have stopped accepting): the shared ones and its own. */
	w->listeners = calloc(server.nlisteners ? server.nlisteners : 1, sizeof(struct listener));
	w->accept_ev = calloc(server.nlisteners ? server.nlisteners : 1, sizeof(struct event *));
	if (w->listeners == NULL || w->accept_ev == NULL)
		return -1;
	for (size_t i = 0; i < server.nlisteners; i++) {
		if (server.listeners[i].worker >= 0 && (unsigned)server.listeners[i].worker != w->owner.id)
			continue;
		w->listeners[w->nlisteners] = server.listeners[i];
		w->listeners[w->nlisteners].unlink_path = NULL;
		if ((w->accept_ev[w->nlisteners] = event_new(w->owner.base, server.listeners[i].fd, EV_READ | EV_PERSIST,
		    on_accept, w)) == NULL)
			return -1;
		w->nlisteners++;
	}
	/* Woken by event_active() from the main thread. */
	if ((w->ctl_ev = event_new(w->owner.base, -1, EV_PERSIST, on_control, w)) == NULL)
		return -1;
	if ((w->reap_ev = event_new(w->owner.base, -1, 0, reap, w)) == NULL)
		return -1;
	if ((w->accept_pause_ev = evtimer_new(w->owner.base, accept_resume, w)) == NULL)
		return -1;
	if ((w->pool_trim_ev = evtimer_new(w->owner.base, pool_trim, w)) == NULL)
		return -1;
	w->owner.pool.on_spare = on_pool_spare;
	w->owner.pool.arg = w;
	return 0;
}

int
worker_start(struct worker *w)
{
	if (worker_init(w) != 0)
		return -1;
	if ((errno = pthread_create(&w->thread, NULL, worker_main, w)) != 0)
		return -1;
	return 0;
}

void
worker_free(struct worker *w)
{
	for (size_t i = 0; i < w->nlisteners && w->accept_ev != NULL; i++)
		if (w->accept_ev[i] != NULL)
			event_free(w->accept_ev[i]);
	free(w->accept_ev);
	free(w->listeners);
	if (w->ctl_ev != NULL)
		event_free(w->ctl_ev);
	if (w->accept_pause_ev != NULL)
		event_free(w->accept_pause_ev);
	if (w->pool_trim_ev != NULL)
		event_free(w->pool_trim_ev);
	if (w->reap_ev != NULL)
		event_free(w->reap_ev);
	if (w->owner.base != NULL)
		event_base_free(w->owner.base);
	free(w->owner.scratch);
	bufpool_clear(&w->owner.pool);
	slab_clear(&w->owner.slab);
}
