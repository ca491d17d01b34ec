/*
 * One relay connection, from accept to close:
 *
 *   READ_HEAD → CONNECT_BACKEND → HANDSHAKE → SPLICE → (closed)
 *        └──────────┴─────→ CLOSING (a refusal is written, input drained) → (closed)
 *
 * struct conn owns both sockets, the TLS context, its events and timer, and
 * the snapshot it started with; conn_close() is the one place that frees it
 * and writes its log record.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <mbedtls/ssl.h>

#include "funneld.h"
#include "ingress.h"
#include "log.h"
#include "proxy.h"

#define TLS_RECORD_MAX 16384            /* plaintext bytes per record */
#define LINGER_SECONDS 2                /* after a refusal, how long to drain input */
#define LINGER_BYTES (64 * 1024)        /* ... and how much of it */
#define HEAD_BUF_START 512
#define DISCARD_BYTES (16 * 1024 * 1024)       /* taken from a client after its backend failed */

static const char response_101[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";

enum conn_state {
	CONN_READ_HEAD,
	CONN_CONNECT_BACKEND,
	CONN_HANDSHAKE,
	CONN_SPLICE,
	CONN_CLOSING,
};

/* What a direction of the splice waits for. */
#define WANT_RELAY_READ    0x1
#define WANT_RELAY_WRITE   0x2
#define WANT_BACKEND_READ  0x4
#define WANT_BACKEND_WRITE 0x8

struct conn {
	TAILQ_ENTRY(conn) entry;
	struct worker *w;
	struct snapshot *snap;
	enum conn_state state;
	uint64_t id;
	int relay_fd, backend_fd;
	struct event *relay_rev, *relay_wev, *backend_rev, *backend_wev, *timer;
	unsigned interest;
	struct timespec started;
	uint64_t last_active;           /* monotonic milliseconds, for idle_timeout */

	bool peer_allowed;
	char peer[64];
	struct sockaddr_storage local;  /* the relay connection's local address */

	char *head;                     /* only for heads that arrive in pieces */
	size_t head_len, head_cap;
	struct ingress_req req;
	size_t backend;                 /* index in snap->cfg->backends */
	bool active;                    /* counted in server.conns_active */

	char *out;                      /* rest of a refusal or the 101 not yet sent */
	size_t out_len, out_off;
	size_t lingered;                /* bytes drained after a refusal or a backend failure */
	bool relay_shut;                /* our FIN is out */

	mbedtls_ssl_context ssl;
	bool ssl_ready;
	struct tls_io io;

	unsigned char *c2b;             /* decrypted bytes the backend has not taken yet */
	size_t c2b_len, c2b_off;
	size_t b2c_inflight;            /* bytes inside mbedtls_ssl_write awaiting a flush */
	bool c2b_eof, c2b_shut, b2c_eof, b2c_done;
	bool backend_failed;            /* client gets a FIN without close_notify; its bytes are dropped */
	uint64_t bytes_in, bytes_out;

	int status;
	enum conn_result result;
	const char *reason;
	const char *hs_reason;
	char detail[96];
};

static void conn_pump(struct conn *c);
static void conn_io(evutil_socket_t fd, short what, void *arg);
static void conn_timeout(evutil_socket_t fd, short what, void *arg);

/* Cheap enough to call on every transfer; a few ms of resolution. */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, ntohs(s->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, ntohs(s->sin6_port));
		break;
	}
	default:
		snprintf(out, cap, "unix");
	}
}

static void
arm_timer_ms(struct conn *c, uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(c->timer, &tv);
}

static void
arm_timer(struct conn *c, unsigned seconds)
{
	arm_timer_ms(c, (uint64_t)seconds * 1000);
}

static void
set_interest(struct conn *c, unsigned want)
{
	struct { unsigned bit; struct event *ev; } map[] = {
		{ WANT_RELAY_READ, c->relay_rev }, { WANT_RELAY_WRITE, c->relay_wev },
		{ WANT_BACKEND_READ, c->backend_rev }, { WANT_BACKEND_WRITE, c->backend_wev },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (map[i].ev == NULL || ((c->interest ^ want) & map[i].bit) == 0)
			continue;
		if (want & map[i].bit)
			event_add(map[i].ev, NULL);
		else
			event_del(map[i].ev);
	}
	c->interest = want;
}

/* The one place a connection ends. */
static void
conn_close(struct conn *c, enum conn_result result, const char *reason)
{
	struct timespec end;
	const struct config *cfg = c->snap->cfg;
	const struct backend_conf *b = c->active ? &cfg->backends[c->backend] : NULL;

	c->result = result;
	if (reason != NULL)
		c->reason = reason;
	clock_gettime(CLOCK_MONOTONIC, &end);

	struct conn_record r = {
		.id = c->id,
		.peer = c->peer,
		.src = c->req.src_text,
		.target = c->req.target_text,
		.backend = b ? b->socket : NULL,
		.sni = c->io.sni,
		.bytes_in = c->bytes_in,
		.bytes_out = c->bytes_out,
		.duration_ms = (uint64_t)(end.tv_sec - c->started.tv_sec) * 1000 +
		    (uint64_t)((end.tv_nsec - c->started.tv_nsec) / 1000000),
		.result = conn_result_name(result),
		.reason = c->reason,
		.status = c->status,
	};
	if (c->ssl_ready && c->state == CONN_SPLICE) {
		r.alpn = mbedtls_ssl_get_alpn_protocol(&c->ssl);
		r.tls_version = mbedtls_ssl_get_version(&c->ssl);
		r.cipher = mbedtls_ssl_get_ciphersuite(&c->ssl);
	}
	log_conn(&r);
	metrics_conn_end(result, c->hs_reason, b ? c->snap->stats[c->backend] : NULL, c->bytes_in, c->bytes_out);

	struct event *evs[] = { c->relay_rev, c->relay_wev, c->backend_rev, c->backend_wev, c->timer };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (c->ssl_ready)
		mbedtls_ssl_free(&c->ssl);
	tls_io_free(&c->io);
	if (c->relay_fd >= 0)
		close(c->relay_fd);
	if (c->backend_fd >= 0)
		close(c->backend_fd);
	if (c->active)
		atomic_fetch_sub(&server.conns_active, 1);
	atomic_fetch_sub(&server.conns_open, 1);
	free(c->head);
	free(c->out);
	free(c->c2b);
	snapshot_release(c->snap);
	TAILQ_REMOVE(&c->w->conns, c, entry);
	struct worker *w = c->w;
	free(c);
	worker_conn_done(w);
}

/*
 * Queue bytes for the relay; what send() does not take now waits in c->out,
 * behind anything already waiting there.  Returns -1 on a socket error.
 */
static int
relay_send(struct conn *c, const char *data, size_t len)
{
	ssize_t n;

	if (c->out_off < c->out_len) {
		char *p = realloc(c->out, c->out_len + len);
		if (p == NULL)
			return -1;
		memcpy(p + c->out_len, data, len);
		c->out = p;
		c->out_len += len;
		return 0;
	}
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_off = 0;
	n = send(c->relay_fd, data, len, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		n = 0;
	}
	if ((size_t)n == len)
		return 0;
	if ((c->out = malloc(len - (size_t)n)) == NULL)
		return -1;
	memcpy(c->out, data + n, len - (size_t)n);
	c->out_len = len - (size_t)n;
	c->out_off = 0;
	return 0;
}

/* Answer with a status and close, after draining what the relay still sends. */
static void
refuse(struct conn *c, int status, const char *reason)
{
	char buf[512];
	size_t len = ingress_format_refusal(status, reason, buf, sizeof(buf));

	c->status = status;
	c->reason = reason;
	c->result = conn_result_for_status(status);
	c->state = CONN_CLOSING;
	if (relay_send(c, buf, len) != 0) {
		conn_close(c, c->result, NULL);
		return;
	}
	arm_timer(c, LINGER_SECONDS);
	conn_pump(c);
}

static int
connect_backend(struct conn *c, const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	/* A Unix socket connects at once or not at all (EAGAIN: backlog full). */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* The head passed every check: pick the backend, connect it, answer 101. */
static void
accept_request(struct conn *c)
{
	const struct config *cfg = c->snap->cfg;
	const struct backend_conf *b;
	struct event_base *base = c->w->base;

	c->state = CONN_CONNECT_BACKEND;
	b = config_route(cfg, c->req.target_host, c->req.target_port);
	if (b == NULL) {
		refuse(c, 404, "no backend for target");
		return;
	}
	c->backend = (size_t)(b - cfg->backends);
	if (atomic_fetch_add(&server.conns_active, 1) >= cfg->max_connections) {
		atomic_fetch_sub(&server.conns_active, 1);
		refuse(c, 503, "max_connections reached");
		return;
	}
	c->active = true;
	if ((c->backend_fd = connect_backend(c, b->socket)) < 0) {
		snprintf(c->detail, sizeof(c->detail), "backend %s: %s", b->socket, strerror(errno));
		c->active = false;
		atomic_fetch_sub(&server.conns_active, 1);
		refuse(c, 502, c->detail);
		return;
	}
	c->backend_rev = event_new(base, c->backend_fd, EV_READ | EV_PERSIST, conn_io, c);
	c->backend_wev = event_new(base, c->backend_fd, EV_WRITE | EV_PERSIST, conn_io, c);
	c->io.fd = c->relay_fd;
	c->io.target_host = c->req.target_host;
	if (c->backend_rev == NULL || c->backend_wev == NULL ||
	    tls_conn_setup(c->snap->tls, c->backend, &c->ssl, &c->io) != 0) {
		c->ssl_ready = true;    /* mbedtls_ssl_init ran: free it */
		conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
		return;
	}
	c->ssl_ready = true;
	c->status = 101;
	/* The 101 and the server's first flight leave in one send(). */
	tls_stage_begin(&c->io);
	if (tls_stage_add(&c->io, response_101, sizeof(response_101) - 1) != 0) {
		conn_close(c, RESULT_RELAY_ERROR, "out of memory");
		return;
	}
	c->state = CONN_HANDSHAKE;
	arm_timer(c, cfg->handshake_timeout);
	conn_pump(c);
}

/* Consume n bytes the kernel holds for us (they were only peeked so far). */
static int
consume(struct conn *c, size_t n)
{
	while (n > 0) {
		ssize_t r = recv(c->relay_fd, c->w->scratch, n < WORKER_SCRATCH ? n : WORKER_SCRATCH, 0);
		if (r <= 0)
			return -1;
		n -= (size_t)r;
	}
	return 0;
}

/*
 * Read the request head.  Bytes are peeked and only the head is consumed,
 * so a ClientHello the relay pipelined behind it stays in the socket for
 * TLS.  A head that arrives whole costs no allocation; one that trickles in
 * is kept in c->head, at most INGRESS_HEAD_MAX + 1 bytes.
 */
static void
read_head(struct conn *c)
{
	unsigned char *scratch = c->w->scratch;
	char *buf;
	size_t have = c->head_len;
	ssize_t n;

	if (have == 0) {
		buf = (char *)scratch;
		n = recv(c->relay_fd, buf, INGRESS_HEAD_MAX + 1, MSG_PEEK);
	} else {
		if (c->head_cap < INGRESS_HEAD_MAX + 1 && c->head_len == c->head_cap) {
			size_t cap = c->head_cap * 4 > INGRESS_HEAD_MAX + 1 ? INGRESS_HEAD_MAX + 1 : c->head_cap * 4;
			char *p = realloc(c->head, cap);
			if (p == NULL) {
				conn_close(c, RESULT_RELAY_ERROR, "out of memory");
				return;
			}
			c->head = p;
			c->head_cap = cap;
		}
		buf = c->head;
		n = recv(c->relay_fd, buf + have, c->head_cap - have, MSG_PEEK);
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		conn_close(c, RESULT_RELAY_ERROR, "relay error before the head ended");
		return;
	}
	if (n == 0) {
		conn_close(c, RESULT_RELAY_ERROR, "relay closed before the head ended");
		return;
	}
	size_t total = have + (size_t)n;
	/* A trickled head can only end, or break, where a new line arrives. */
	if (have > 0 && total <= INGRESS_HEAD_MAX && memchr(buf + have, '\n', (size_t)n) == NULL) {
		c->head_len = total;
		if (consume(c, (size_t)n) != 0)
			conn_close(c, RESULT_RELAY_ERROR, "relay error before the head ended");
		return;
	}
	if (ingress_parse(buf, total, c->peer_allowed, &c->req) == INGRESS_INCOMPLETE) {
		if (have == 0) {
			size_t cap = HEAD_BUF_START;
			while (cap < total + 1)
				cap *= 4;
			if (cap > INGRESS_HEAD_MAX + 1)
				cap = INGRESS_HEAD_MAX + 1;
			if ((c->head = malloc(cap)) == NULL) {
				conn_close(c, RESULT_RELAY_ERROR, "out of memory");
				return;
			}
			c->head_cap = cap;
			memcpy(c->head, buf, total);
		}
		c->head_len = total;
		if (consume(c, (size_t)n) != 0)
			conn_close(c, RESULT_RELAY_ERROR, "relay error before the head ended");
		return;
	}
	if (c->req.status != 0) {
		refuse(c, c->req.status, c->req.reason);
		return;
	}
	if (consume(c, c->req.head_len - have) != 0) {
		conn_close(c, RESULT_RELAY_ERROR, "relay error before the head ended");
		return;
	}
	free(c->head);
	c->head = NULL;
	c->head_len = c->head_cap = 0;
	accept_request(c);
}

static void
handshake_done(struct conn *c)
{
	const struct config *cfg = c->snap->cfg;
	const struct backend_conf *b = &cfg->backends[c->backend];
	struct sockaddr_storage dst;
	uint8_t hdr[PROXY_HEADER_MAX];
	int len;

	c->state = CONN_SPLICE;
	c->last_active = now_ms();
	arm_timer(c, cfg->idle_timeout);
	if (b->proxy == PROXY_OFF)
		return;
	socklen_t llen = sizeof(c->local);
	if (getsockname(c->relay_fd, (struct sockaddr *)&c->local, &llen) != 0)
		memset(&c->local, 0, sizeof(c->local));
	proxy_destination((struct sockaddr *)&c->req.src, (struct sockaddr *)&c->local, c->req.target_port, &dst);
	struct proxy_info pi = {
		.src = (struct sockaddr *)&c->req.src,
		.dst = (struct sockaddr *)&dst,
		.authority = c->io.sni[0] ? c->io.sni : c->req.target_host,
		.alpn = mbedtls_ssl_get_alpn_protocol(&c->ssl),
		.tls_version = mbedtls_ssl_get_version(&c->ssl),
		.cipher = mbedtls_ssl_get_ciphersuite(&c->ssl),
	};
	len = b->proxy == PROXY_V1 ? proxy_build_v1(&pi, hdr, sizeof(hdr)) : proxy_build_v2(&pi, hdr, sizeof(hdr));
	if (len <= 0) {
		conn_close(c, RESULT_BACKEND_ERROR, "cannot build PROXY header");
		return;
	}
	/* Goes first through the same queue as decrypted bytes. */
	if ((c->c2b = malloc(TLS_RECORD_MAX)) == NULL) {
		conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
		return;
	}
	memcpy(c->c2b, hdr, (size_t)len);
	c->c2b_len = (size_t)len;
	c->c2b_off = 0;
}

/*
 * The backend failed mid-stream.  The client gets what the backend sent
 * before that, then a FIN without close_notify: TLS tells it the stream was
 * cut short, and TCP does not reset it.  What it still sends is dropped
 * until it closes or the linger timer ends the connection.
 */
static void
backend_failed(struct conn *c, const char *why)
{
	set_interest(c, c->interest & ~(unsigned)(WANT_BACKEND_READ | WANT_BACKEND_WRITE));
	close(c->backend_fd);
	c->backend_fd = -1;
	free(c->c2b);
	c->c2b = NULL;
	c->c2b_off = c->c2b_len = 0;
	c->backend_failed = true;
	c->reason = why;
	c->b2c_eof = true;              /* splice_b2c flushes, then ends without close_notify */
	arm_timer(c, LINGER_SECONDS);
}

/* Client → backend.  Returns what it waits for, or -1 when c was closed. */
static int
splice_c2b(struct conn *c)
{
	unsigned char *scratch = c->w->scratch;

	for (;;) {
		if (c->c2b_off < c->c2b_len) {
			ssize_t n = send(c->backend_fd, c->c2b + c->c2b_off, c->c2b_len - c->c2b_off, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
					return WANT_BACKEND_WRITE;
				backend_failed(c, "backend write failed");
				return 0;       /* conn_pump ends the client's stream first */
			}
			c->c2b_off += (size_t)n;
			if (c->c2b_off == c->c2b_len) {
				/* Drained: give the memory back, idle connections hold none. */
				free(c->c2b);
				c->c2b = NULL;
				c->c2b_off = c->c2b_len = 0;
			}
			continue;
		}
		if (c->c2b_eof) {
			if (!c->c2b_shut) {
				if (!c->backend_failed)
					shutdown(c->backend_fd, SHUT_WR);
				c->c2b_shut = true;
			}
			return 0;
		}
		/* After a backend failure, read nothing more until the FIN is out:
		 * a client pushing hard would otherwise outrun it. */
		if (c->backend_failed && !c->b2c_done)
			return 0;
		int ret = mbedtls_ssl_read(&c->ssl, scratch, TLS_RECORD_MAX);
		if (ret > 0) {
			c->last_active = now_ms();
			if (c->backend_failed) {
				/* Nobody left to take it; a client that keeps pushing
				 * after the FIN is cut off. */
				c->lingered += (size_t)ret;
				if (c->lingered < DISCARD_BYTES)
					continue;
				conn_close(c, RESULT_BACKEND_ERROR, NULL);
				return -1;
			}
			c->bytes_in += (uint64_t)ret;
			ssize_t n = send(c->backend_fd, scratch, (size_t)ret, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
					backend_failed(c, "backend write failed");
					return 0;
				}
				n = 0;
			}
			if (n < ret) {
				if (c->c2b == NULL && (c->c2b = malloc(TLS_RECORD_MAX)) == NULL) {
					conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
					return -1;
				}
				memcpy(c->c2b, scratch + n, (size_t)(ret - n));
				c->c2b_off = 0;
				c->c2b_len = (size_t)(ret - n);
			}
			continue;
		}
		switch (ret) {
		case MBEDTLS_ERR_SSL_WANT_READ:
			return WANT_RELAY_READ;
		case MBEDTLS_ERR_SSL_WANT_WRITE:
			return WANT_RELAY_WRITE;
		case 0:
		case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
		case MBEDTLS_ERR_SSL_CONN_EOF:
			c->c2b_eof = true;
			continue;
		default:
			snprintf(c->detail, sizeof(c->detail), "TLS read: %s", tls_strerror(ret, (char[80]){0}, 80));
			conn_close(c, RESULT_RELAY_ERROR, c->detail);
			return -1;
		}
	}
}

/* Backend → client. */
static int
splice_b2c(struct conn *c)
{
	unsigned char *scratch = c->w->scratch;
	int ret;

	for (;;) {
		if (c->b2c_inflight > 0) {
			/* mbedTLS holds the encrypted record; a retry only flushes it
			 * and returns the length, it does not read the buffer again. */
			ret = mbedtls_ssl_write(&c->ssl, scratch, c->b2c_inflight);
			if (ret < 0)
				goto tls_error;
			c->bytes_out += (uint64_t)ret;
			c->b2c_inflight = 0;
			continue;
		}
		if (c->b2c_eof) {
			if (c->b2c_done)
				return 0;
			/* close_notify would vouch for a stream the backend cut short. */
			if (!c->backend_failed && (ret = mbedtls_ssl_close_notify(&c->ssl)) < 0)
				goto tls_error;
			shutdown(c->relay_fd, SHUT_WR);
			c->relay_shut = true;
			c->b2c_done = true;
			return 0;
		}
		ssize_t n = recv(c->backend_fd, scratch, TLS_RECORD_MAX, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return WANT_BACKEND_READ;
			backend_failed(c, "backend read failed");
			continue;
		}
		if (n == 0) {
			c->b2c_eof = true;
			continue;
		}
		c->last_active = now_ms();
		c->b2c_inflight = (size_t)n;
		ret = mbedtls_ssl_write(&c->ssl, scratch, (size_t)n);
		if (ret < 0)
			goto tls_error;
		c->bytes_out += (uint64_t)ret;
		c->b2c_inflight = 0;
	}
tls_error:
	if (ret == MBEDTLS_ERR_SSL_WANT_WRITE)
		return WANT_RELAY_WRITE;
	if (ret == MBEDTLS_ERR_SSL_WANT_READ)
		return WANT_RELAY_READ;
	if (c->c2b_eof && (ret == MBEDTLS_ERR_NET_CONN_RESET || ret == MBEDTLS_ERR_NET_SEND_FAILED)) {
		/* The client has gone after its own close: nobody is left to read. */
		c->b2c_done = true;
		c->reason = "client closed before the backend finished";
		return 0;
	}
	snprintf(c->detail, sizeof(c->detail), "TLS write: %s", tls_strerror(ret, (char[80]){0}, 80));
	conn_close(c, RESULT_RELAY_ERROR, c->detail);
	return -1;
}

/* After a refusal: discard input until EOF, a bound, or the linger timer. */
static void
linger(struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->relay_fd, c->w->scratch, WORKER_SCRATCH, 0);
		if (n > 0) {
			c->lingered += (size_t)n;
			if (c->lingered < LINGER_BYTES)
				continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			set_interest(c, WANT_RELAY_READ);
			return;
		}
		conn_close(c, c->result, NULL);
		return;
	}
}

/* Move everything that can move now, then wait for what is missing. */
static void
conn_pump(struct conn *c)
{
	unsigned want = 0;
	int ret;

	if (c->out_off < c->out_len) {
		ssize_t n = send(c->relay_fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			conn_close(c, c->state == CONN_CLOSING ? c->result : RESULT_RELAY_ERROR, NULL);
			return;
		}
		if (n > 0)
			c->out_off += (size_t)n;
		if (c->out_off < c->out_len) {
			set_interest(c, WANT_RELAY_WRITE);
			return;
		}
		free(c->out);
		c->out = NULL;
		c->out_len = c->out_off = 0;
	}

	switch (c->state) {
	case CONN_READ_HEAD:
		read_head(c);
		return;
	case CONN_CONNECT_BACKEND:
		return;                 /* not reached: connecting a Unix socket does not wait */
	case CONN_CLOSING:
		if (!c->relay_shut) {
			shutdown(c->relay_fd, SHUT_WR);
			c->relay_shut = true;
		}
		linger(c);
		return;
	case CONN_HANDSHAKE:
		ret = tls_handshake(&c->ssl, &c->io);
		if (c->io.stage_len > 0) {
			int sent = relay_send(c, (const char *)c->io.stage, c->io.stage_len);
			c->io.stage_len = 0;
			if (sent != 0 && ret >= 0)
				ret = MBEDTLS_ERR_NET_SEND_FAILED;
		}
		if (ret == MBEDTLS_ERR_SSL_WANT_READ) {
			set_interest(c, c->out_off < c->out_len ? WANT_RELAY_WRITE : WANT_RELAY_READ);
			return;
		}
		if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
			set_interest(c, WANT_RELAY_WRITE);
			return;
		}
		if (ret != 0) {
			char ebuf[80];
			c->hs_reason = tls_failure_reason(ret, &c->io);
			snprintf(c->detail, sizeof(c->detail), "%s: %s", c->hs_reason, tls_strerror(ret, ebuf, sizeof(ebuf)));
			conn_close(c, RESULT_HANDSHAKE_FAILED, c->detail);
			return;
		}
		tls_stage_end(&c->io);
		handshake_done(c);
		if (c->state != CONN_SPLICE)
			return;
		if (c->out_off < c->out_len) {
			/* The last flight is still queued: it goes before any data. */
			set_interest(c, WANT_RELAY_WRITE);
			return;
		}
		/* FALLTHROUGH */
	case CONN_SPLICE:
		for (;;) {
			bool failed_before = c->backend_failed;
			int first, second;
			/* Once the backend is gone, end the client's stream (FIN)
			 * before draining what it still sends. */
			if (c->backend_failed) {
				if ((first = splice_b2c(c)) < 0 || (second = splice_c2b(c)) < 0)
					return;
			} else {
				if ((first = splice_c2b(c)) < 0 || (second = splice_b2c(c)) < 0)
					return;
			}
			want = (unsigned)first | (unsigned)second;
			/* What was waited for is stale once the backend failed. */
			if (c->backend_failed == failed_before)
				break;
		}
		if (c->c2b_shut && c->b2c_done) {
			conn_close(c, c->backend_failed ? RESULT_BACKEND_ERROR : RESULT_OK, NULL);
			return;
		}
		set_interest(c, want);
		return;
	}
}

static void
conn_io(evutil_socket_t fd, short what, void *arg)
{
	conn_pump(arg);
}

static void
conn_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	uint64_t idle, limit;

	switch (c->state) {
	case CONN_READ_HEAD:
		refuse(c, 408, "head not complete within header_timeout");
		return;
	case CONN_HANDSHAKE:
		c->hs_reason = "timeout";
		conn_close(c, RESULT_HANDSHAKE_TIMEOUT, "handshake not complete within handshake_timeout");
		return;
	case CONN_SPLICE:
		if (c->backend_failed) {
			conn_close(c, RESULT_BACKEND_ERROR, NULL);
			return;
		}
		idle = now_ms() - c->last_active;
		limit = (uint64_t)c->snap->cfg->idle_timeout * 1000;
		if (idle < limit) {
			arm_timer_ms(c, limit - idle);
			return;
		}
		conn_close(c, RESULT_IDLE_TIMEOUT, "no data within idle_timeout");
		return;
	default:
		conn_close(c, c->result, NULL);
		return;
	}
}

void
conn_accept(struct worker *w, int fd, const struct listener *l, const struct sockaddr *peer)
{
	static const struct sockaddr unknown = { .sa_family = AF_UNSPEC };
	struct conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->w = w;
	c->relay_fd = fd;
	c->backend_fd = -1;
	c->id = atomic_fetch_add(&server.next_conn_id, 1) + 1;
	c->snap = snapshot_acquire();
	c->state = CONN_READ_HEAD;
	clock_gettime(CLOCK_MONOTONIC, &c->started);
	atomic_fetch_add(&server.conns_open, 1);
	TAILQ_INSERT_TAIL(&w->conns, c, entry);
	w->nconns++;

	if (peer == NULL)
		peer = &unknown;
	format_addr(peer, c->peer, sizeof(c->peer));
	/* On a unix: listener the socket file's permissions decide who connects.
	 * TCP_NODELAY comes from the listener (accepted sockets inherit it). */
	c->peer_allowed = l->kind == LISTEN_UNIX ||
	    cidr_list_match(c->snap->cfg->allow, c->snap->cfg->nallow, peer);

	c->relay_rev = event_new(w->base, fd, EV_READ | EV_PERSIST, conn_io, c);
	c->relay_wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST, conn_io, c);
	c->timer = evtimer_new(w->base, conn_timeout, c);
	if (c->relay_rev == NULL || c->relay_wev == NULL || c->timer == NULL) {
		conn_close(c, RESULT_RELAY_ERROR, "out of memory");
		return;
	}
	arm_timer(c, c->snap->cfg->header_timeout);
	set_interest(c, WANT_RELAY_READ);
}

void
conn_shutdown(struct conn *c)
{
	conn_close(c, RESULT_SHUTDOWN, "shutdown_timeout reached");
}
