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
#include "proxy_protocol.h"

#define TLS_RECORD_MAX 16384            /* plaintext bytes per record */
#define TLS_RECORD_WIRE_MAX (TLS_RECORD_MAX + 256)      /* ... and what one costs on the wire */
#define LINGER_SECONDS 2                /* after a refusal, how long to drain input */
#define LINGER_BYTES (64 * 1024)        /* ... and how much of it */
#define HEAD_BUF_START 512              /* a head that trickles in starts in this much */
#define TRIM_AFTER_MS 500               /* idle this long: TLS record buffers go back to the kernel */
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
	bool trimmed;                   /* tls_trim() ran since last_active */

	bool peer_allowed;
	char peer[64];
	struct sockaddr_storage local;  /* the relay connection's local address */

	struct ingress_req req;
	size_t backend;                 /* index in snap->cfg->backends */
	bool active;                    /* counted in server.conns_active */

	size_t lingered;                /* bytes drained after a refusal or a backend failure */
	bool relay_shut;                /* our FIN is out */

	mbedtls_ssl_context ssl;
	bool ssl_ready;
	struct tls_io io;               /* relay bytes both ways (before TLS too), readable flag */
	bool relay_writable;            /* cleared by a short send, set by the write event */
	bool backend_readable, backend_writable;

	struct buf c2b;                 /* decrypted, for the backend */
	struct buf b2c;                 /* from the backend, to encrypt */
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

/* Data moved: the idle clock restarts, and trimmed buffers will be trimmed again. */
static void
note_activity(struct conn *c)
{
	c->last_active = now_ms();
	if (c->trimmed) {
		c->trimmed = false;
		arm_timer_ms(c, TRIM_AFTER_MS);
	}
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
	buf_release(&c->w->pool, &c->c2b);
	buf_release(&c->w->pool, &c->b2c);
	snapshot_release(c->snap);
	TAILQ_REMOVE(&c->w->conns, c, entry);
	struct worker *w = c->w;
	free(c);
	worker_conn_done(w);
}

/*
 * Send what b holds to fd while fd takes it; a short send clears *writable
 * (its write event sets it again), and b goes back once empty.  0 when all
 * went or the rest waits; -1 when the socket failed (errno says why).
 */
static int
send_buf(struct conn *c, int fd, struct buf *b, bool *writable)
{
	while (buf_pending(b) > 0) {
		if (!*writable)
			return 0;
		ssize_t n = send(fd, b->p + b->off, buf_pending(b), MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				return -1;
			n = 0;
		}
		b->off += (size_t)n;
		if (buf_pending(b) > 0)
			*writable = false;
	}
	buf_release(&c->w->pool, b);
	return 0;
}

/* What waits for the relay in io.tx: a refusal, the 101, TLS records. */
static int
flush_tx(struct conn *c)
{
	return send_buf(c, c->relay_fd, &c->io.tx, &c->relay_writable);
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
	buf_release(&c->w->pool, &c->io.rx);    /* nothing read will be looked at */
	if (buf_append(&c->w->pool, &c->io.tx, buf, len, TLS_TX_MAX) != 0) {
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
	if (buf_append(&c->w->pool, &c->io.tx, response_101, sizeof(response_101) - 1, TLS_TX_MAX) != 0) {
		conn_close(c, RESULT_RELAY_ERROR, "out of memory");
		return;
	}
	c->state = CONN_HANDSHAKE;
	arm_timer(c, cfg->handshake_timeout);
	conn_pump(c);
}

/*
 * Read the request head.  It goes into io.rx, where whatever follows it (a
 * ClientHello the relay pipelined) stays for TLS.  A head that arrives whole
 * costs one recv() into a pool buffer; one that trickles in is kept in a
 * buffer of its own, at most INGRESS_HEAD_MAX + 1 bytes, so that slow heads
 * do not pin pool buffers.
 */
static void
read_head(struct conn *c)
{
	struct buf *rx = &c->io.rx;
	size_t have = buf_pending(rx);
	size_t room;
	ssize_t n;

	if (!c->io.readable) {
		set_interest(c, WANT_RELAY_READ);
		return;
	}
	if (have == 0) {
		if (buf_take(&c->w->pool, rx) != 0) {
			conn_close(c, RESULT_RELAY_ERROR, "out of memory");
			return;
		}
		room = BUF_READ;
	} else {
		if (rx->cap < INGRESS_HEAD_MAX + 1 && rx->len == rx->cap) {
			size_t cap = rx->cap * 4 > INGRESS_HEAD_MAX + 1 ? INGRESS_HEAD_MAX + 1 : rx->cap * 4;
			unsigned char *p = realloc(rx->p, cap);
			if (p == NULL) {
				conn_close(c, RESULT_RELAY_ERROR, "out of memory");
				return;
			}
			rx->p = p;
			rx->cap = cap;
		}
		room = rx->cap - rx->len;
	}
	n = recv(c->relay_fd, rx->p + rx->len, room, 0);
	if (n < 0) {
		if (have == 0)
			buf_release(&c->w->pool, rx);
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			c->io.readable = false;
			set_interest(c, WANT_RELAY_READ);
			return;
		}
		conn_close(c, RESULT_RELAY_ERROR, "relay error before the head ended");
		return;
	}
	if (n == 0) {
		conn_close(c, RESULT_RELAY_ERROR, "relay closed before the head ended");
		return;
	}
	if ((size_t)n < room)
		c->io.readable = false;
	rx->len += (size_t)n;

	const char *head = (const char *)rx->p;
	size_t total = rx->len;
	/* A trickled head can only end, or break, where a new line arrives. */
	if (have > 0 && total <= INGRESS_HEAD_MAX && memchr(head + have, '\n', (size_t)n) == NULL) {
		set_interest(c, WANT_RELAY_READ);
		return;
	}
	if (ingress_parse(head, total > INGRESS_HEAD_MAX + 1 ? INGRESS_HEAD_MAX + 1 : total, c->peer_allowed,
	    &c->req) == INGRESS_INCOMPLETE) {
		if (have == 0) {
			/* Out of the pool buffer into one sized for a head. */
			size_t cap = HEAD_BUF_START;
			while (cap < total + 1)
				cap *= 4;
			if (cap > INGRESS_HEAD_MAX + 1)
				cap = INGRESS_HEAD_MAX + 1;
			unsigned char *p = malloc(cap);
			if (p == NULL) {
				conn_close(c, RESULT_RELAY_ERROR, "out of memory");
				return;
			}
			memcpy(p, rx->p, total);
			buf_release(&c->w->pool, rx);
			*rx = (struct buf){ .p = p, .len = total, .cap = cap };
		}
		set_interest(c, WANT_RELAY_READ);
		return;
	}
	if (c->req.status != 0) {
		refuse(c, c->req.status, c->req.reason);
		return;
	}
	/* What follows the head is the client's TLS. */
	rx->off = c->req.head_len;
	if (buf_pending(rx) == 0)
		buf_release(&c->w->pool, rx);
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
	arm_timer_ms(c, TRIM_AFTER_MS);
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
	if (buf_append(&c->w->pool, &c->c2b, hdr, (size_t)len, BUF_SIZE) != 0)
		conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
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
	buf_release(&c->w->pool, &c->c2b);
	c->backend_failed = true;
	c->reason = why;
	c->b2c_eof = true;              /* splice_b2c flushes, then ends without close_notify */
	arm_timer(c, LINGER_SECONDS);
}

/*
 * Decrypt into c2b while whole records fit (several per send to the
 * backend); c2b holds a buffer afterwards only if something came.  Returns
 * the last mbedtls_ssl_read() result: > 0 when c2b filled up, else why it
 * stopped.
 */
static int
decrypt_into_c2b(struct conn *c)
{
	struct buf *b = &c->c2b;
	int ret;

	if (buf_take(&c->w->pool, b) != 0)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;
	do {
		ret = mbedtls_ssl_read(&c->ssl, b->p + b->len, b->cap - b->len);
		if (ret > 0)
			b->len += (size_t)ret;
	} while (ret > 0 && b->cap - b->len >= TLS_RECORD_MAX);
	if (buf_pending(b) == 0)
		buf_release(&c->w->pool, b);
	return ret;
}

/* Client → backend.  Returns what it waits for, or -1 when c was closed. */
static int
splice_c2b(struct conn *c)
{
	for (;;) {
		if (buf_pending(&c->c2b) > 0) {
			if (send_buf(c, c->backend_fd, &c->c2b, &c->backend_writable) != 0) {
				backend_failed(c, "backend write failed");
				return 0;       /* conn_pump ends the client's stream first */
			}
			if (buf_pending(&c->c2b) > 0)
				return WANT_BACKEND_WRITE;
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
		int ret = decrypt_into_c2b(c);
		size_t got = buf_pending(&c->c2b);
		if (got > 0)
			note_activity(c);
		if (!c->backend_failed) {
			c->bytes_in += got;
		} else {
			/* Nobody left to take it; a client that keeps pushing
			 * after the FIN is cut off. */
			buf_release(&c->w->pool, &c->c2b);
			c->lingered += got;
			if (c->lingered >= DISCARD_BYTES) {
				conn_close(c, RESULT_BACKEND_ERROR, NULL);
				return -1;
			}
		}
		switch (ret) {
		case MBEDTLS_ERR_SSL_WANT_READ:
			if (buf_pending(&c->c2b) > 0)
				continue;       /* send it, then wait */
			return WANT_RELAY_READ;
		case 0:
		case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
		case MBEDTLS_ERR_SSL_CONN_EOF:
			c->c2b_eof = true;      /* after what came before it */
			continue;
		default:
			if (ret > 0)
				continue;       /* c2b is full: send it, then read on */
			/* What was authenticated before the error goes as far as
			 * the backend takes it now; the connection ends either way. */
			if (buf_pending(&c->c2b) > 0 && send(c->backend_fd, c->c2b.p + c->c2b.off, buf_pending(&c->c2b),
			    MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
				log_debug("conn %llu: backend: %s", (unsigned long long)c->id, strerror(errno));
			snprintf(c->detail, sizeof(c->detail), "TLS read: %s", tls_strerror(ret, (char[80]){0}, 80));
			conn_close(c, RESULT_RELAY_ERROR, c->detail);
			return -1;
		}
	}
}

/*
 * Backend → client.  Records go into io.tx while whole ones fit, so that
 * what one recv() took from the backend leaves in one send().  Returns what
 * it waits for, or -1 when c was closed.
 */
static int
splice_b2c(struct conn *c)
{
	struct buf *b = &c->b2c;
	int ret;

	for (;;) {
		if (buf_pending(b) > 0) {
			if (c->io.tx.cap - c->io.tx.len < TLS_RECORD_WIRE_MAX && buf_pending(&c->io.tx) > 0) {
				if (flush_tx(c) != 0)
					return 0;       /* conn_pump's flush sees the failure */
				if (buf_pending(&c->io.tx) > 0)
					return WANT_RELAY_WRITE;
			}
			size_t chunk = buf_pending(b) < TLS_RECORD_MAX ? buf_pending(b) : TLS_RECORD_MAX;
			/* bio_send only queues, so this never waits half done. */
			if ((ret = mbedtls_ssl_write(&c->ssl, b->p + b->off, chunk)) < 0)
				goto tls_error;
			b->off += (size_t)ret;
			c->bytes_out += (uint64_t)ret;
			if (buf_pending(b) == 0)
				buf_release(&c->w->pool, b);
			continue;
		}
		if (c->b2c_eof) {
			if (c->b2c_done)
				return 0;
			/* close_notify would vouch for a stream the backend cut short. */
			if (!c->backend_failed && (ret = mbedtls_ssl_close_notify(&c->ssl)) < 0)
				goto tls_error;
			c->b2c_done = true;     /* conn_pump sends our FIN once tx is out */
			return 0;
		}
		if (!c->backend_readable)
			return WANT_BACKEND_READ;
		if (buf_take(&c->w->pool, b) != 0) {
			conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
			return -1;
		}
		ssize_t n = recv(c->backend_fd, b->p, BUF_READ, 0);
		if (n <= 0) {
			buf_release(&c->w->pool, b);
			if (n == 0) {
				c->b2c_eof = true;
			} else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				c->backend_readable = false;
				return WANT_BACKEND_READ;
			} else {
				backend_failed(c, "backend read failed");
			}
			continue;
		}
		if ((size_t)n < BUF_READ)
			c->backend_readable = false;
		b->len = (size_t)n;
		note_activity(c);
	}
tls_error:
	snprintf(c->detail, sizeof(c->detail), "TLS write: %s", tls_strerror(ret, (char[80]){0}, 80));
	conn_close(c, RESULT_RELAY_ERROR, c->detail);
	return -1;
}

/*
 * Flush io.tx during the splice, and send our FIN once the last record is
 * out.  Returns what it waits for, or -1 when c was closed.
 */
static int
splice_flush(struct conn *c)
{
	if (flush_tx(c) != 0) {
		if (!c->c2b_eof) {
			snprintf(c->detail, sizeof(c->detail), "relay write failed: %s", strerror(errno));
			conn_close(c, RESULT_RELAY_ERROR, c->detail);
			return -1;
		}
		/* The client has gone after its own close: nobody is left to read. */
		buf_release(&c->w->pool, &c->io.tx);
		buf_release(&c->w->pool, &c->b2c);
		c->b2c_eof = c->b2c_done = c->relay_shut = true;
		c->reason = "client closed before the backend finished";
		return 0;
	}
	if (buf_pending(&c->io.tx) > 0)
		return WANT_RELAY_WRITE;
	if (c->b2c_done && !c->relay_shut) {
		/* With the client's side done too, close() right after sends the FIN. */
		if (!c->c2b_shut)
			shutdown(c->relay_fd, SHUT_WR);
		c->relay_shut = true;
	}
	return 0;
}

/* After a refusal: discard input until EOF, a bound, or the linger timer. */
static void
linger(struct conn *c)
{
	for (;;) {
		if (!c->io.readable) {
			set_interest(c, WANT_RELAY_READ);
			return;
		}
		ssize_t n = recv(c->relay_fd, c->w->scratch, WORKER_SCRATCH, 0);
		if (n > 0) {
			if ((size_t)n < WORKER_SCRATCH)
				c->io.readable = false;
			c->lingered += (size_t)n;
			if (c->lingered < LINGER_BYTES)
				continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			c->io.readable = false;
			continue;
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

	switch (c->state) {
	case CONN_READ_HEAD:
		read_head(c);
		return;
	case CONN_CONNECT_BACKEND:
		return;                 /* not reached: connecting a Unix socket does not wait */
	case CONN_CLOSING:
		if (flush_tx(c) != 0) {
			conn_close(c, c->result, NULL);
			return;
		}
		if (buf_pending(&c->io.tx) > 0) {
			set_interest(c, WANT_RELAY_WRITE);
			return;
		}
		if (!c->relay_shut) {
			shutdown(c->relay_fd, SHUT_WR);
			c->relay_shut = true;
		}
		linger(c);
		return;
	case CONN_HANDSHAKE:
		ret = tls_handshake(&c->ssl, &c->io);
		/* A flight, or the alert of a failure, goes out first. */
		if (flush_tx(c) != 0 && ret >= 0)
			ret = errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_SEND_FAILED;
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
			set_interest(c, buf_pending(&c->io.tx) > 0 ? WANT_RELAY_WRITE : WANT_RELAY_READ);
			return;
		}
		if (ret != 0) {
			char ebuf[80];
			c->hs_reason = tls_failure_reason(ret, &c->io);
			snprintf(c->detail, sizeof(c->detail), "%s: %s", c->hs_reason, tls_strerror(ret, ebuf, sizeof(ebuf)));
			conn_close(c, RESULT_HANDSHAKE_FAILED, c->detail);
			return;
		}
		handshake_done(c);
		if (c->state != CONN_SPLICE)
			return;
		/* Records the client sent behind its Finished are read now. */
		/* FALLTHROUGH */
	case CONN_SPLICE:
		for (;;) {
			bool failed_before = c->backend_failed;
			int first, second, third;
			/* Once the backend is gone, end the client's stream (FIN)
			 * before draining what it still sends. */
			if (c->backend_failed) {
				if ((first = splice_b2c(c)) < 0 || (second = splice_flush(c)) < 0 ||
				    (third = splice_c2b(c)) < 0)
					return;
			} else {
				if ((first = splice_c2b(c)) < 0 || (second = splice_b2c(c)) < 0 ||
				    (third = splice_flush(c)) < 0)
					return;
			}
			want = (unsigned)first | (unsigned)second | (unsigned)third;
			/* What was waited for is stale once the backend failed. */
			if (c->backend_failed == failed_before)
				break;
		}
		if (c->c2b_shut && c->b2c_done && c->relay_shut) {
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
	struct conn *c = arg;

	/* Level-triggered: an event means the socket is ready again. */
	if (fd == c->relay_fd) {
		if (what & EV_READ)
			c->io.readable = true;
		if (what & EV_WRITE)
			c->relay_writable = true;
	} else {
		if (what & EV_READ)
			c->backend_readable = true;
		if (what & EV_WRITE)
			c->backend_writable = true;
	}
	conn_pump(c);
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
		if (idle >= limit) {
			conn_close(c, RESULT_IDLE_TIMEOUT, "no data within idle_timeout");
			return;
		}
		if (!c->trimmed && idle >= TRIM_AFTER_MS) {
			tls_trim(&c->ssl);
			c->trimmed = true;
			log_debug("conn %llu: idle for %llu ms, TLS record buffers trimmed", (unsigned long long)c->id,
			    (unsigned long long)idle);
		}
		/* Wake for the idle limit, or earlier to trim. */
		arm_timer_ms(c, !c->trimmed && TRIM_AFTER_MS - idle < limit - idle ? TRIM_AFTER_MS - idle : limit - idle);
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
	c->io.fd = fd;
	c->io.pool = &w->pool;
	c->relay_writable = c->backend_writable = true;
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
	log_debug("conn %llu: from %s on %s, worker %u", (unsigned long long)c->id, c->peer, l->text, w->id);
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
