/*
 * bench/backend: the plaintext Unix-socket backend behind every terminator.
 *
 *   backend SOCKET_PATH
 *
 * One epoll thread.  The first byte a connection sends picks its mode:
 *   'E'  echo: every further byte comes back (handshake, latency, idle tests)
 *   'S'  sink: bytes are discarded; one byte "K" goes back per full MiB received,
 *        so the client can time bytes *arriving at the backend*
 *   'G'  source: an endless stream of 256 KiB writes until the peer goes away
 * A connection that sends nothing and closes (the handshake tests) costs an
 * accept and a close.  Runs until SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF (256 * 1024)
#define MIB (1024 * 1024)

struct conn {
	int fd;
	int mode;                       /* 0 until the first byte */
	unsigned char *pend;            /* echo bytes not yet written back */
	size_t pend_len, pend_off;
	unsigned long long sunk;        /* sink: bytes after the mode byte */
	unsigned acks;                  /* sink: acks owed */
};

static unsigned char buf[BUF], src[BUF];
static volatile sig_atomic_t stop;
static int ep;

static void on_signal(int s) { (void)s; stop = 1; }

static void
conn_free(struct conn *c)
{
	close(c->fd);
	free(c->pend);
	free(c);
}

/* Returns -1 when c has been freed. */
static int
flush_out(struct conn *c)
{
	while (c->pend_off < c->pend_len) {
		ssize_t n = send(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			conn_free(c);
			return -1;
		}
		c->pend_off += (size_t)n;
	}
	c->pend_off = c->pend_len = 0;
	while (c->acks > 0) {
		ssize_t n = send(c->fd, "K", 1, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			conn_free(c);
			return -1;
		}
		c->acks--;
	}
	if (c->mode == 'G') {
		for (;;) {
			ssize_t n = send(c->fd, src, sizeof(src), MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					return 0;
				conn_free(c);
				return -1;
			}
		}
	}
	return 0;
}

static int
handle_data(struct conn *c, unsigned char *p, size_t n)
{
	if (c->mode == 0 && n > 0) {
		c->mode = p[0];
		p++, n--;
		if (c->mode != 'E' && c->mode != 'S' && c->mode != 'G') {
			conn_free(c);
			return -1;
		}
	}
	if (n == 0)
		return c->mode == 'G' ? flush_out(c) : 0;
	switch (c->mode) {
	case 'E': {
		ssize_t w = 0;
		if (c->pend_len == 0) {
			w = send(c->fd, p, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno != EAGAIN && errno != EINTR) {
					conn_free(c);
					return -1;
				}
				w = 0;
			}
		}
		if ((size_t)w < n) {
			unsigned char *q = realloc(c->pend, c->pend_len + n - (size_t)w);
			if (q == NULL) {
				conn_free(c);
				return -1;
			}
			c->pend = q;
			memcpy(c->pend + c->pend_len, p + w, n - (size_t)w);
			c->pend_len += n - (size_t)w;
		}
		return 0;
	}
	case 'G':
		return flush_out(c);
	case 'S': {
		unsigned long long before = c->sunk / MIB;
		c->sunk += n;
		c->acks += (unsigned)(c->sunk / MIB - before);
		return c->acks ? flush_out(c) : 0;
	}
	default:
		return 0;
	}
}

static void
conn_event(struct conn *c, unsigned events)
{
	if (flush_out(c) < 0)
		return;
	for (;;) {
		/* Echo with a backlog: stop reading until it drains (back-pressure). */
		if (c->mode == 'E' && c->pend_len > (4u << 20))
			return;
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_free(c);
			return;
		}
		if (n == 0) {
			conn_free(c);
			return;
		}
		if (handle_data(c, buf, (size_t)n) < 0)
			return;
	}
	(void)events;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct epoll_event ev, evs[256];
	int lfd;

	if (argc != 2 || strlen(argv[1]) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "usage: backend SOCKET_PATH\n");
		return 2;
	}
	memset(src, 'x', sizeof(src));
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	strcpy(sun.sun_path, argv[1]);
	unlink(argv[1]);
	if ((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(lfd, 4096) != 0) {
		perror(argv[1]);
		return 1;
	}
	chmod(argv[1], 0666);
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		perror("epoll_create1");
		return 1;
	}
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	while (!stop) {
		int n = epoll_wait(ep, evs, 256, 500);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr != NULL) {
				conn_event(evs[i].data.ptr, evs[i].events);
				continue;
			}
			for (;;) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0)
					break;
				struct conn *c = calloc(1, sizeof(*c));
				if (c == NULL) {
					close(fd);
					continue;
				}
				c->fd = fd;
				ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
				ev.data.ptr = c;
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
			}
		}
	}
	unlink(argv[1]);
	return 0;
}
