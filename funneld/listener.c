/* Listening sockets: from the configuration, or passed by systemd. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "listener.h"
#include "server.h"
#include "log.h"

#define LISTEN_BACKLOG 4096

static int
add_listener(int fd, enum listen_kind kind, enum listener_role role, const char *text, const char *unlink_path,
    int worker)
{
	struct listener *v = realloc(server.listeners, (server.nlisteners + 1) * sizeof(*v));

	if (v == NULL)
		return -1;
	server.listeners = v;
	v[server.nlisteners].fd = fd;
	v[server.nlisteners].kind = kind;
	v[server.nlisteners].role = role;
	snprintf(v[server.nlisteners].text, sizeof(v[server.nlisteners].text), "%s", text);
	v[server.nlisteners].unlink_path = NULL;
	v[server.nlisteners].worker = worker;
	if (unlink_path != NULL && (v[server.nlisteners].unlink_path = strdup(unlink_path)) == NULL)
		return -1;
	server.nlisteners++;
	return 0;
}

/* A socket file nobody listens on is left over from a previous run. */
static int
remove_stale_socket(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, ret;

	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISSOCK(st.st_mode)) {
		errno = EEXIST;
		return -1;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	ret = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	if (ret == 0) {
		errno = EADDRINUSE;
		return -1;
	}
	return unlink(path);
}

/* A TCP socket bound to sa; listening unless it is only a probe. */
static int
tcp_socket(const struct sockaddr *sa, socklen_t salen, bool reuseport, bool probe)
{
	int fd, one = 1;

	if ((fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* The Tailscale address may not exist yet at boot: bind anyway. */
	setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
	/* Inherited by every accepted relay connection. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (sa->sa_family == AF_INET6) {
		/* [::] takes IPv4 too (as mapped addresses); a specific IPv6
		 * address only itself. */
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		int v6only = !IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
	}
	if (bind(fd, sa, salen) != 0 || (!probe && listen(fd, LISTEN_BACKLOG) != 0)) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/*
 * With several workers, a TCP address gets one socket per worker in a
 * SO_REUSEPORT group: the kernel spreads new connections over the workers'
 * queues, and no worker wakes up for a connection another one takes.  A
 * plain bind first makes an address that another process holds (with
 * SO_REUSEPORT or not) fail as in use instead of being shared with it.
 */
static int
open_tcp(const struct listen_addr *la, enum listener_role role, unsigned nworkers)
{
	struct sockaddr_storage ss = la->ss;
	socklen_t len = la->sslen;
	int fd;

	if (nworkers <= 1)
		return (fd = tcp_socket((struct sockaddr *)&ss, len, false, false)) < 0 ? -1 :
		    add_listener(fd, LISTEN_TCP, role, la->text, NULL, -1);
	if ((fd = tcp_socket((struct sockaddr *)&ss, len, false, true)) < 0)
		return -1;
	close(fd);
	for (unsigned k = 0; k < nworkers; k++) {
		if ((fd = tcp_socket((struct sockaddr *)&ss, len, true, false)) < 0)
			return -1;
		if (add_listener(fd, LISTEN_TCP, role, la->text, NULL, (int)k) != 0) {
			close(fd);
			return -1;
		}
		/* Port 0: the others join the port the first one got. */
		if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
			return -1;
	}
	return 0;
}

static int
open_one(const struct listen_addr *la, enum listener_role role, unsigned nworkers, char *err, size_t errlen,
    const char *cfgpath)
{
	int fd = -1;

	if (la->kind == LISTEN_TCP) {
		if (open_tcp(la, role, nworkers) != 0)
			goto fail;
		return 0;
	}
	const struct sockaddr_un *sun = (const struct sockaddr_un *)&la->ss;
	if (remove_stale_socket(sun->sun_path) != 0)
		goto fail;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&la->ss, la->sslen) != 0 || listen(fd, LISTEN_BACKLOG) != 0)
		goto fail;
	if (add_listener(fd, LISTEN_UNIX, role, la->text, sun->sun_path, -1) != 0)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "%s:%d: listen %s: %s", cfgpath, la->line, la->text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static bool
already_open(const char *text)
{
	for (size_t i = 0; i < server.nlisteners; i++)
		if (strcmp(server.listeners[i].text, text) == 0)
			return true;
	return false;
}

int
listeners_open(const struct config *cfg, unsigned nworkers, bool activated, char *err, size_t errlen)
{
	if (!activated && cfg->nlistens == 0 && cfg->ntls_listeners == 0) {
		snprintf(err, errlen, "%s: no listen address or [listener], and not started by socket activation",
		    cfg->path);
		return -1;
	}
	for (size_t i = 0; i < cfg->nlistens && !activated; i++)
		if (open_one(&cfg->listens[i], ROLE_INGRESS, nworkers, err, errlen, cfg->path) != 0)
			return -1;
	/* A [listener] that systemd did not pass is opened here. */
	for (size_t i = 0; i < cfg->ntls_listeners; i++)
		if (!already_open(cfg->tls_listeners[i].addr.text) &&
		    open_one(&cfg->tls_listeners[i].addr, ROLE_TLS, nworkers, err, errlen, cfg->path) != 0)
			return -1;
	return 0;
}

/* The [listener] whose address is the socket's own, if any. */
static const struct listener_conf *
activated_tls_listener(const struct config *cfg, const struct sockaddr_storage *ss, socklen_t len)
{
	for (size_t i = 0; i < cfg->ntls_listeners; i++) {
		const struct listen_addr *la = &cfg->tls_listeners[i].addr;
		if (la->ss.ss_family != ss->ss_family)
			continue;
		if (ss->ss_family == AF_UNIX) {
			if (strcmp(((const struct sockaddr_un *)&la->ss)->sun_path,
			    ((const struct sockaddr_un *)ss)->sun_path) == 0)
				return &cfg->tls_listeners[i];
		} else if (la->sslen == len && memcmp(&la->ss, ss, len) == 0) {
			return &cfg->tls_listeners[i];
		}
	}
	return NULL;
}

int
listeners_adopt_activated(const struct config *cfg)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);

	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		struct sockaddr_storage ss = { 0 };     /* clang-analyzer: getsockname() fills it */
		socklen_t len = sizeof(ss);
		char text[128];

		if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
			log_warnx("passed descriptor %d (%s) is not a listening stream socket; ignored", fd,
			    names && names[i] ? names[i] : "?");
			continue;
		}
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
			log_warn("passed descriptor %d: getsockname", fd);
			continue;
		}
		const struct listener_conf *tl = activated_tls_listener(cfg, &ss, len);
		if (tl != NULL)
			snprintf(text, sizeof(text), "%s", tl->addr.text);
		else
			snprintf(text, sizeof(text), "fd %d (%s)", fd, names && names[i] ? names[i] : "activated");
		if (ss.ss_family != AF_UNIX) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		if (add_listener(fd, ss.ss_family == AF_UNIX ? LISTEN_UNIX : LISTEN_TCP, tl != NULL ? ROLE_TLS : ROLE_INGRESS,
		    text, NULL, -1) != 0)
			n = -1;
	}
	if (names != NULL) {
		for (int i = 0; names[i] != NULL; i++)
			free(names[i]);
		free(names);
	}
	return n < 0 ? -1 : (int)server.nlisteners;
}

void
listeners_close(void)
{
	for (size_t i = 0; i < server.nlisteners; i++) {
		close(server.listeners[i].fd);
		if (server.listeners[i].unlink_path != NULL)
			unlink(server.listeners[i].unlink_path);
		free(server.listeners[i].unlink_path);
	}
	free(server.listeners);
	server.listeners = NULL;
	server.nlisteners = 0;
}
