/*
 * Reload by itself when a certificate or key file is replaced on disk
 * (`tailscale cert` writes new files): inotify on the directories that
 * hold them, debounced so that a cert and key written one after the other
 * cause one reload.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <event2/event.h>

#include "certwatch.h"
#include "log.h"

#define DEBOUNCE_MS 500
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB)

struct watched {
	int wd;
	char *dir;
	char **names;                   /* base names of the files watched in dir */
	size_t nnames;
};

static int inotify_fd = -1;
static struct event *inotify_ev, *debounce_ev;
static struct watched *watches;
static size_t nwatches;
static void (*on_change)(void);

static void
clear_watches(void)
{
	for (size_t i = 0; i < nwatches; i++) {
		inotify_rm_watch(inotify_fd, watches[i].wd);
		for (size_t j = 0; j < watches[i].nnames; j++)
			free(watches[i].names[j]);
		free(watches[i].names);
		free(watches[i].dir);
	}
	free(watches);
	watches = NULL;
	nwatches = 0;
}

static int
watch_file(const char *path)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	const char *base;
	struct watched *w = NULL;

	if (slash == NULL) {
		strcpy(dir, ".");
		base = path;
	} else {
		size_t len = slash == path ? 1 : (size_t)(slash - path);
		if (len >= sizeof(dir))
			return -1;
		memcpy(dir, path, len);
		dir[len] = '\0';
		base = slash + 1;
	}
	for (size_t i = 0; i < nwatches; i++)
		if (strcmp(watches[i].dir, dir) == 0)
			w = &watches[i];
	if (w == NULL) {
		int wd = inotify_add_watch(inotify_fd, dir, WATCH_MASK);
		if (wd < 0) {
			log_warn("cannot watch %s for certificate changes", dir);
			return -1;
		}
		struct watched *v = realloc(watches, (nwatches + 1) * sizeof(*v));
		if (v == NULL)
			return -1;
		watches = v;
		w = &watches[nwatches++];
		memset(w, 0, sizeof(*w));
		w->wd = wd;
		if ((w->dir = strdup(dir)) == NULL)
			return -1;
	}
	for (size_t j = 0; j < w->nnames; j++)
		if (strcmp(w->names[j], base) == 0)
			return 0;
	char **names = realloc(w->names, (w->nnames + 1) * sizeof(*names));
	if (names == NULL)
		return -1;
	w->names = names;
	if ((w->names[w->nnames] = strdup(base)) == NULL)
		return -1;
	w->nnames++;
	return 0;
}

static bool
is_watched(int wd, const char *name)
{
	for (size_t i = 0; i < nwatches; i++) {
		if (watches[i].wd != wd)
			continue;
		for (size_t j = 0; j < watches[i].nnames; j++)
			if (strcmp(watches[i].names[j], name) == 0)
				return true;
	}
	return false;
}

static void
on_inotify(evutil_socket_t fd, short what, void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool hit = false;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			if (ev->len > 0 && is_watched(ev->wd, ev->name))
				hit = true;
			p += sizeof(*ev) + ev->len;
		}
	}
	if (hit) {
		struct timeval tv = { 0, DEBOUNCE_MS * 1000 };
		evtimer_add(debounce_ev, &tv);  /* re-adding pushes the deadline back */
	}
}

static void
on_debounced(evutil_socket_t fd, short what, void *arg)
{
	log_notice("certificate or key file changed on disk: reloading");
	on_change();
}

int
certwatch_init(struct event_base *base, void (*changed)(void))
{
	on_change = changed;
	if ((inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0)
		return -1;
	inotify_ev = event_new(base, inotify_fd, EV_READ | EV_PERSIST, on_inotify, NULL);
	debounce_ev = evtimer_new(base, on_debounced, NULL);
	if (inotify_ev == NULL || debounce_ev == NULL || event_add(inotify_ev, NULL) != 0)
		return -1;
	return 0;
}

void
certwatch_update(const struct config *cfg)
{
	if (inotify_fd < 0)
		return;
	clear_watches();
	if (cfg->tls.cert != NULL) {
		watch_file(cfg->tls.cert);
		watch_file(cfg->tls.key);
	}
	for (size_t i = 0; i < cfg->nbackends; i++) {
		if (cfg->backends[i].tls.cert != NULL) {
			watch_file(cfg->backends[i].tls.cert);
			watch_file(cfg->backends[i].tls.key);
		}
	}
}

void
certwatch_close(void)
{
	if (inotify_fd < 0)
		return;
	clear_watches();
	event_free(inotify_ev);
	event_free(debounce_ev);
	close(inotify_fd);
	inotify_fd = -1;
}
