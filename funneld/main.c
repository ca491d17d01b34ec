/*
 * funneld: the node side of Tailscale Funnel.  The main thread loads the
 * configuration, opens the listeners, drops privileges, starts the workers
 * and then handles signals, systemd notifications and metrics.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <systemd/sd-daemon.h>

#include "certwatch.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "tls.h"
#include "worker.h"

#define STATUS_INTERVAL 5               /* seconds between STATUS= updates */

/* What the main thread runs: its event base and the events on it. */
static struct {
	const char *config_path;
	struct event_base *base;
	struct event *sigs[3];
	struct event *status_ev, *shutdown_timer, *workers_done_ev, *listeners_done_ev;
	atomic_uint workers_running, workers_accepting;
	uint64_t watchdog_usec;
} mt = { .config_path = CONFIG_DEFAULT_PATH };

static void __attribute__((noreturn))
usage(int code)
{
	fprintf(code ? stderr : stdout,
	    "usage: funneld [-t] [-c file]\n"
	    "       funneld -V | -h\n"
	    "  -c file  configuration file (default %s)\n"
	    "  -t       check the configuration and certificates, then exit\n"
	    "  -V       print the version\n"
	    "  -h       print this help\n", CONFIG_DEFAULT_PATH);
	exit(code);
}

static void
notify_status(void)
{
	sd_notifyf(0, "STATUS=%u connections open", atomic_load(&server.conns_open));
}

static void
on_status_tick(evutil_socket_t fd, short what, void *arg)
{
	if (mt.watchdog_usec > 0)
		sd_notify(0, "WATCHDOG=1");
	notify_status();
}

static void
reload(void)
{
	char err[CONFIG_ERR_MAX];
	struct snapshot *s, *old;
	const char *key;

	sd_notify(0, "RELOADING=1");
	if ((s = snapshot_load(mt.config_path, err, sizeof(err))) == NULL) {
		log_warnx("reload failed, keeping the running configuration: %s", err);
		sd_notify(0, "READY=1");
		return;
	}
	old = snapshot_acquire();
	if ((key = config_restart_needed(old->cfg, s->cfg)) != NULL)
		log_notice("reload: a change to %s takes effect at the next restart", key);
	snapshot_release(old);
	log_set_level(s->cfg->log_level);
	certwatch_update(s->cfg);
	server_limits_apply(s->cfg);
	snapshot_install(s);
	log_notice("configuration reloaded from %s", mt.config_path);
	sd_notify(0, "READY=1");
}

static void
begin_stop(void)
{
	struct timeval tv = { 0, 0 };
	struct snapshot *s;

	if (atomic_load(&server.phase) != PHASE_RUNNING)
		return;
	s = snapshot_acquire();
	tv.tv_sec = s->cfg->shutdown_timeout;
	snapshot_release(s);
	sd_notify(0, "STOPPING=1");
	log_notice("stopping: no new connections; %u open ones have %lds to finish",
	    atomic_load(&server.conns_open), (long)tv.tv_sec);
	atomic_store(&server.phase, PHASE_DRAINING);
	for (size_t i = 0; i < server.nworkers; i++)
		worker_notify(&server.workers[i]);
	evtimer_add(mt.shutdown_timer, &tv);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	switch (sig) {
	case SIGHUP:
		reload();
		break;
	case SIGTERM:
	case SIGINT:
		begin_stop();
		break;
	}
}

static void
on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
	log_notice("shutdown_timeout reached: closing %u connections", atomic_load(&server.conns_open));
	atomic_store(&server.phase, PHASE_STOPPING);
	for (size_t i = 0; i < server.nworkers; i++)
		worker_notify(&server.workers[i]);
}

static void
on_worker_done(evutil_socket_t fd, short what, void *arg)
{
	if (atomic_load(&mt.workers_running) == 0)
		event_base_loopbreak(mt.base);
}

/*
 * Once no worker accepts any more, close the listeners, so that new
 * connections are refused at once instead of waiting in the backlog for
 * the whole drain.
 */
static void
on_listeners_done(evutil_socket_t fd, short what, void *arg)
{
	if (atomic_load(&mt.workers_accepting) == 0 && server.nlisteners > 0) {
		listeners_close();
		log_info("listeners closed");
	}
}

/* Called in each worker thread once it accepts no more. */
static void
worker_stopped_accepting(void)
{
	atomic_fetch_sub(&mt.workers_accepting, 1);
	event_active(mt.listeners_done_ev, EV_READ, 0);
}

/* Called by each worker thread as it leaves its loop. */
static void
worker_exited(void)
{
	atomic_fetch_sub(&mt.workers_running, 1);
	event_active(mt.workers_done_ev, EV_READ, 0);
}

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Become `user` once sockets and keys are open; refuse to go on otherwise. */
static void
drop_privileges(const char *user)
{
	struct passwd *pw;

	if (user == NULL || geteuid() != 0)
		return;
	if ((pw = getpwnam(user)) == NULL)
		fatalx("user %s: no such user", user);
	/* Its supplementary groups too: backend sockets are often shared through one. */
	if (initgroups(user, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
		fatal("cannot become user %s", user);
	if (setuid(0) == 0 || getuid() != pw->pw_uid || getgid() != pw->pw_gid)
		fatalx("privileges not dropped to %s", user);
	log_info("running as user %s (uid %u, gid %u)", user, (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
}

/* libevent's own warnings go through our log, with its level and fields. */
static void
on_libevent_log(int severity, const char *msg)
{
	if (severity >= EVENT_LOG_WARN)
		log_warnx("libevent: %s", msg);
	else
		log_debug("libevent: %s", msg);
}

/* "FILE:LINE: what" on stderr, or through the journal with a priority. */
static void
startup_error(const char *err)
{
	if (log_to_journal())
		log_warnx("not started: %s", err);
	else
		fprintf(stderr, "%s\n", err);
}

static unsigned
worker_count(const struct config *cfg)
{
	long n;

	if (cfg->workers > 0)
		return cfg->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

/* Load and check the configuration: the snapshot, or NULL after saying why. */
static struct snapshot *
load(void)
{
	char err[CONFIG_ERR_MAX], what[160];
	struct snapshot *snap;

	if (tls_global_init(what, sizeof(what)) != 0) {
		startup_error(what);
		return NULL;
	}
	if ((snap = snapshot_load(mt.config_path, err, sizeof(err))) == NULL) {
		startup_error(err);
		return NULL;
	}
	if (snap->cfg->user != NULL && getpwnam(snap->cfg->user) == NULL) {
		snprintf(err, sizeof(err), "%s: user %s: no such user", mt.config_path, snap->cfg->user);
		startup_error(err);
		snapshot_release(snap);
		return NULL;
	}
	log_debug("%s", what);
	return snap;
}

static void
start_workers(void)
{
	sigset_t set, old;

	if ((server.workers = calloc(server.nworkers, sizeof(*server.workers))) == NULL)
		fatal("calloc");
	/* Workers must not take these signals: block them before starting threads. */
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	atomic_store(&mt.workers_running, (unsigned)server.nworkers);
	atomic_store(&mt.workers_accepting, (unsigned)server.nworkers);
	for (size_t i = 0; i < server.nworkers; i++) {
		server.workers[i].owner.id = (unsigned)i;
		server.workers[i].on_exit = worker_exited;
		server.workers[i].on_accept_stopped = worker_stopped_accepting;
		if (worker_start(&server.workers[i]) != 0)
			fatal("cannot start worker %zu", i);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Everything up to READY=1: listeners, metrics, privileges, the main loop's events, workers. */
static int
start(struct snapshot *snap)
{
	char err[CONFIG_ERR_MAX];
	static const int signals[] = { SIGHUP, SIGTERM, SIGINT };
	struct timeval tick = { STATUS_INTERVAL, 0 };

	log_set_level(snap->cfg->log_level);
	if (server_limits_init(snap->cfg, err, sizeof(err)) != 0)
		fatalx("%s", err);
	snapshot_install(snap);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	server.nworkers = worker_count(snap->cfg);
	int activated = listeners_adopt_activated(snap->cfg);
	if (activated < 0)
		fatalx("socket activation: cannot adopt the passed sockets");
	if (listeners_open(snap->cfg, (unsigned)server.nworkers, activated > 0, err, sizeof(err)) != 0) {
		startup_error(err);
		return -1;
	}
	if (activated > 0 && snap->cfg->nlistens > 0)
		log_info("socket-activated: %d sockets; listen = ignored", activated);

	if ((mt.base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if (snap->cfg->metrics != NULL && metrics_listen(mt.base, snap->cfg->metrics, err, sizeof(err)) != 0)
		fatalx("%s", err);
	drop_privileges(snap->cfg->user);
	if (certwatch_init(mt.base, reload) != 0)
		log_warn("inotify: certificate changes on disk need a SIGHUP");
	certwatch_update(snap->cfg);

	mt.shutdown_timer = evtimer_new(mt.base, on_shutdown_timeout, NULL);
	mt.workers_done_ev = event_new(mt.base, -1, EV_PERSIST, on_worker_done, NULL);
	mt.listeners_done_ev = event_new(mt.base, -1, EV_PERSIST, on_listeners_done, NULL);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if ((mt.sigs[i] = evsignal_new(mt.base, signals[i], on_signal, NULL)) == NULL ||
		    evsignal_add(mt.sigs[i], NULL) != 0)
			fatalx("cannot install signal handlers");
	start_workers();

	if (sd_watchdog_enabled(0, &mt.watchdog_usec) > 0 && mt.watchdog_usec / 2 < (uint64_t)tick.tv_sec * 1000000) {
		tick.tv_sec = (time_t)(mt.watchdog_usec / 2 / 1000000);
		tick.tv_usec = (suseconds_t)(mt.watchdog_usec / 2 % 1000000);
	}
	mt.status_ev = event_new(mt.base, -1, EV_PERSIST, on_status_tick, NULL);
	if (mt.status_ev == NULL || event_add(mt.status_ev, &tick) != 0)
		fatalx("cannot start the status timer");
	return 0;
}

static void
run(void)
{
	size_t addresses = 0;

	for (size_t i = 0; i < server.nlisteners; i++) {
		if (server.listeners[i].worker > 0)
			continue;       /* the same address again, for another worker */
		addresses++;
		log_info("listening on %s", server.listeners[i].text);
	}
	log_notice("funneld %s started: %zu listeners, %zu workers", FUNNELD_VERSION, addresses, server.nworkers);
	sd_notify(0, "READY=1");
	notify_status();
	event_base_loop(mt.base, EVLOOP_NO_EXIT_ON_EMPTY);
}

/* After the workers have left their loops (SIGTERM, then drain or shutdown_timeout). */
static void
stop(void)
{
	for (size_t i = 0; i < server.nworkers; i++) {
		pthread_join(server.workers[i].thread, NULL);
		worker_free(&server.workers[i]);
	}
	log_notice("stopped");
	for (size_t i = 0; i < sizeof(mt.sigs) / sizeof(mt.sigs[0]); i++)
		event_free(mt.sigs[i]);
	event_free(mt.status_ev);
	event_free(mt.shutdown_timer);
	event_free(mt.workers_done_ev);
	event_free(mt.listeners_done_ev);
	metrics_close();
	certwatch_close();
	event_base_free(mt.base);
	listeners_close();
	free(server.workers);
	snapshot_install(NULL);
	server_limits_free();
}

int
main(int argc, char **argv)
{
	struct snapshot *snap;
	bool check_only = false;
	int ch, rc = 0;

	while ((ch = getopt(argc, argv, "c:thV")) != -1) {
		switch (ch) {
		case 'c':
			mt.config_path = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'V':
			printf("funneld %s\n", FUNNELD_VERSION);
			return 0;
		case 'h':
			usage(0);
		default:
			usage(2);
		}
	}
	if (optind != argc)
		usage(2);

	log_init();
	event_set_log_callback(on_libevent_log);
	if (evthread_use_pthreads() != 0)
		fatalx("libevent: no thread support");
	if ((snap = load()) == NULL)
		return 1;
	if (check_only) {
		printf("configuration OK\n");
		snapshot_release(snap);
	} else if (start(snap) == 0) {
		run();
		stop();
	} else {
		rc = 1;
	}
	tls_global_done();
	tls_thread_done();
	return rc;
}
