/*
 * A relay connection from accept to close (see conn.h for its states):
 * the request head, refusals and their linger, routing and the 101, the
 * TLS handshake, timers, and the one place it ends.  The splice after the
 * handshake is splice.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "backend.h"
#include "conn.h"
#include "fault.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "proxy_protocol.h"
#include "server.h"

#define LINGER_BYTES (64 * 1024)        /* after a refusal, how much input to drain */
#define HEAD_BUF_START 512              /* a head that trickles in starts in this much */
#define TRIM_AFTER_MS 500               /* idle this long: TLS record buffers go back to the kernel */
#define BUDGET_RETRY_MS 10              /* at max_buffer_memory, read again this much later */

static const char response_101[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";

/*
 * A connection's events live right behind its struct, in its slab slot
 * (event_assign(), sized by event_get_struct_event_size() as libevent
 * asks), so that nothing of a connection is in the heap.
 */
enum { EV_RELAY_READ, EV_RELAY_WRITE, EV_BACKEND_READ, EV_BACKEND_WRITE, EV_TIMER, EV_BUDGET, CONN_EVENTS };

static size_t
round16(size_t n)
{
	return (n + 15) / 16 * 16;
}

size_t
conn_alloc_size(void)
{
	return round16(sizeof(struct conn)) + CONN_EVENTS * round16(event_get_struct_event_size());
}

/* Event slot i of c, set up for fd / what / cb; NULL if libevent refuses. */
static struct event *
conn_event(struct conn *c, int i, evutil_socket_t fd, short what, event_callback_fn cb)
{
	struct event *ev = (struct event *)(void *)((char *)c + round16(sizeof(*c)) +
	    (size_t)i * round16(event_get_struct_event_size()));

	return event_assign(ev, c->owner->base, fd, what, cb, c) == 0 ? ev : NULL;
}

static void conn_pump(struct conn *c);
static void conn_step(struct conn *c);
static void conn_io(evutil_socket_t fd, short what, void *arg);
static void conn_timeout(evutil_socket_t fd, short what, void *arg);

/* Cheap enough to call on every transfer; a few ms of resolution. */
uint64_t
conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
conn_arm_timer_ms(struct conn *c, uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(c->timer, &tv);
}

static void
arm_timer(struct conn *c, unsigned seconds)
{
	conn_arm_timer_ms(c, (uint64_t)seconds * 1000);
}

/* Data moved: the idle clock restarts, and trimmed buffers will be trimmed again. */
void
conn_note_activity(struct conn *c)
{
	c->last_active = conn_now_ms();
	if (c->trimmed) {
		c->trimmed = false;
		conn_arm_timer_ms(c, TRIM_AFTER_MS);
	}
}

void
conn_set_interest(struct conn *c, unsigned want)
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

static void
log_record(struct conn *c)
{
	struct timespec end;

	clock_gettime(CLOCK_MONOTONIC, &end);
	const struct sockaddr *src = (const struct sockaddr *)&c->req.src;
	bool known = src->sa_family == AF_INET || src->sa_family == AF_INET6;
	struct conn_record r = {
		.id = c->id,
		.listener = c->forward != NULL ? "tls" : "ingress",
		.client = !known ? NULL : addr_is_tailnet(src) ? "tailnet" : "internet",
		.peer = c->peer,
		.src = c->req.src_text,
		.target = c->req.target_text,
		.backend = c->backend != NULL ? c->backend->socket : NULL,
		.sni = c->tls.ready ? c->tls.sni : NULL,
		.bytes_in = c->bytes_in,
		.bytes_out = c->bytes_out,
		.duration_ms = (uint64_t)(end.tv_sec - c->started.tv_sec) * 1000 +
		    (uint64_t)((end.tv_nsec - c->started.tv_nsec) / 1000000),
		.result = conn_result_name(c->result),
		.reason = c->reason,
		.status = c->status,
	};
	if (c->state == CONN_SPLICE) {
		r.alpn = mbedtls_ssl_get_alpn_protocol(&c->tls.ssl);
		r.tls_version = mbedtls_ssl_get_version(&c->tls.ssl);
		r.cipher = mbedtls_ssl_get_ciphersuite(&c->tls.ssl);
	}
	log_conn(&r);
}

/* The head is complete (or the connection ends): it no longer counts as pending. */
void
conn_pending_done(struct conn *c)
{
	if (!c->pending)
		return;
	c->pending = false;
	atomic_fetch_sub(&server.conns_pending, 1);
	if (c->peer_ref.slot != 0)
		clients_release(server.peers, &c->peer_ref);
}

/*
 * The one place a connection ends: its record is written, its descriptors,
 * events and buffers released, and it goes to its owner to be freed once
 * the callbacks that got here have returned.  Closing twice does nothing.
 */
void
conn_close(struct conn *c, enum conn_result result, const char *reason)
{
	struct event *evs[] = { c->relay_rev, c->relay_wev, c->backend_rev, c->backend_wev, c->timer, c->budget_ev };

	if (c->state == CONN_CLOSED)
		return;
	c->result = result;
	if (reason != NULL)
		c->reason = reason;
	if (!c->quiet)
		log_record(c);
	metrics_conn_end(result, c->hs_failure, c->backend != NULL ? c->snap->stats[c->backend_index] : NULL,
	    c->bytes_in, c->bytes_out);
	metrics_listener_conn(c->forward != NULL, (c->req.src.ss_family == AF_INET || c->req.src.ss_family == AF_INET6) ?
	    (addr_is_tailnet((const struct sockaddr *)&c->req.src) ? CLIENT_CLASS_TAILNET : CLIENT_CLASS_INTERNET) :
	    CLIENT_CLASS_UNKNOWN);

	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_del(evs[i]);
	c->relay_rev = c->relay_wev = c->backend_rev = c->backend_wev = c->timer = c->budget_ev = NULL;
	c->interest = 0;
	if (c->relay_fd >= 0)
		close(c->relay_fd);
	if (c->backend_fd >= 0)
		close(c->backend_fd);
	c->relay_fd = c->backend_fd = c->io.fd = -1;
	relay_io_release(&c->io);
	buf_release(&c->owner->pool, &c->c2b);
	buf_release(&c->owner->pool, &c->b2c);
	if (c->active)
		atomic_fetch_sub(&server.conns_active, 1);
	atomic_fetch_sub(&server.conns_open, 1);
	c->active = false;
	conn_pending_done(c);
	if (c->client_ref.slot != 0)
		clients_release(server.clients, &c->client_ref);
	c->state = CONN_CLOSED;
	c->owner->closed(c->owner, c);
}

/* What is left once closed; called by the owner from its reap step. */
void
conn_free(struct conn *c)
{
	tls_conn_free(&c->tls);
	snapshot_release(c->snap);
	slab_free(&c->owner->slab, c);
}

/*
 * mbedTLS reads from the relay only through io.rx: with bytes there (or
 * within mbedTLS) it needs no new buffer; otherwise a read must wait while
 * the buffers are at max_buffer_memory.
 */
bool
conn_relay_may_read(struct conn *c)
{
	if (buf_pending(&c->io.rx) > 0 || !c->io.readable || buf_may_read())
		return true;
	c->io.starved = true;
	return false;
}

/* Send what io.tx holds while the relay takes it; see buf_send(). */
int
conn_flush_tx(struct conn *c)
{
	return buf_send(&c->owner->pool, &c->io.tx, c->relay_fd, &c->relay_writable);
}

/*
 * Answer with a status and close, after draining what the relay still
 * sends.  reason goes into the answer; detail, when set, only into the log
 * (what the relay must not learn about the node, such as a socket path).
 */
static void
refuse(struct conn *c, int status, const char *reason, const char *detail)
{
	char buf[512];
	size_t len = ingress_format_refusal(status, reason, buf, sizeof(buf));

	c->status = status;
	c->reason = detail != NULL ? detail : reason;
	c->result = conn_result_for_status(status);
	c->state = CONN_REFUSING;
	buf_release(&c->owner->pool, &c->io.rx);        /* nothing read will be looked at */
	if (buf_append(&c->owner->pool, &c->io.tx, buf, len, TLS_TX_MAX) != 0) {
		conn_close(c, c->result, NULL);
		return;
	}
	arm_timer(c, LINGER_SECONDS);
	conn_pump(c);
}

bool
conn_take_active(struct conn *c)
{
	if (atomic_fetch_add(&server.conns_active, 1) >= c->snap->cfg->max_connections) {
		atomic_fetch_sub(&server.conns_active, 1);
		return false;
	}
	c->active = true;
	return true;
}

/*
 * A refusal that a limit decided: counted, and logged once per client per
 * interval (log), with how many of its refusals went unlogged meanwhile.
 */
static void
refuse_limited(struct conn *c, int status, const char *reason, enum refusal r, bool log, uint32_t suppressed)
{
	metrics_refusal(r);
	if (!log)
		c->quiet = true;
	else if (suppressed > 0)
		snprintf(c->detail, sizeof(c->detail), "%s (and %u more since the last logged)", reason, suppressed);
	refuse(c, status, reason, log && suppressed > 0 ? c->detail : NULL);
}

int
conn_client_check(struct conn *c, struct conn_refusal *why)
{
	const struct config *cfg = c->snap->cfg;
	const struct sockaddr *src = (const struct sockaddr *)&c->req.src;
	const struct client_limits *lim = &cfg->client_limits;
	struct client_admission adm;

	*why = (struct conn_refusal){ 0 };
	if (src->sa_family != AF_INET && src->sa_family != AF_INET6)
		return 0;               /* no client address (a unix: listener without PROXY) */
	if (addr_cidr_match(cfg->deny, cfg->ndeny, src)) {
		why->log = clients_should_log(server.clients, src, conn_now_ms(), &why->suppressed);
		why->limit = REFUSAL_CLIENT_DENY;
		why->reason = "client denied";
		return why->status = 403;
	}
	if (lim->max_conns == 0 && lim->rate.count == 0)
		return 0;
	switch (clients_admit(server.clients, lim, src, conn_now_ms(), &adm)) {
	case CLIENT_ADMIT:
		c->client_ref = adm.ref;
		return 0;
	case CLIENT_OVER_CONNECTIONS:
		why->status = 429;
		why->limit = REFUSAL_CLIENT_CONNECTIONS;
		why->reason = "too many connections from this client";
		break;
	case CLIENT_OVER_RATE:
		why->status = 429;
		why->limit = REFUSAL_CLIENT_RATE;
		why->reason = "too many new connections from this client";
		break;
	default:
		why->status = 503;
		why->limit = REFUSAL_CLIENT_TABLE_FULL;
		why->reason = "client table full";
		break;
	}
	why->log = adm.log;
	why->suppressed = adm.suppressed;
	return why->status;
}

void
conn_drop_refused(struct conn *c, const struct conn_refusal *why)
{
	metrics_refusal(why->limit);
	c->quiet = !why->log;
	if (why->log && why->suppressed > 0) {
		snprintf(c->detail, sizeof(c->detail), "%s (and %u more since the last logged)", why->reason,
		    why->suppressed);
		conn_close(c, conn_result_for_status(why->status), c->detail);
		return;
	}
	conn_close(c, conn_result_for_status(why->status), why->reason);
}

int
conn_begin_handshake(struct conn *c, const struct backend_conf *b, bool answer_101)
{
	c->backend_index = (size_t)(b - c->snap->cfg->backends);
	if ((c->backend_fd = backend_connect(b)) < 0) {
		snprintf(c->detail, sizeof(c->detail), "backend %s: %s", b->socket, strerror(errno));
		/* It will not be past the checks: its place is free again. */
		if (c->active)
			atomic_fetch_sub(&server.conns_active, 1);
		c->active = false;
		return -1;
	}
	c->backend = b;
	c->backend_rev = conn_event(c, EV_BACKEND_READ, c->backend_fd, EV_READ | EV_PERSIST, conn_io);
	c->backend_wev = conn_event(c, EV_BACKEND_WRITE, c->backend_fd, EV_WRITE | EV_PERSIST, conn_io);
	if (c->backend_rev == NULL || c->backend_wev == NULL ||
	    tls_conn_setup(c->snap->tls, c->backend_index, c->req.target_host, &c->tls, &c->io) != 0) {
		conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
		return 0;
	}
	if (answer_101) {
		c->status = 101;
		/* The 101 and the server's first flight leave in one send(). */
		if (buf_append(&c->owner->pool, &c->io.tx, response_101, sizeof(response_101) - 1, TLS_TX_MAX) != 0) {
			conn_close(c, RESULT_RELAY_ERROR, "out of memory");
			return 0;
		}
	}
	c->state = CONN_HANDSHAKE;
	arm_timer(c, c->snap->cfg->handshake_timeout);
	conn_pump(c);
	return 0;
}

/* The head passed every check: pick the backend, connect it, answer 101. */
static void
accept_request(struct conn *c)
{
	const struct config *cfg = c->snap->cfg;
	const struct backend_conf *b;
	struct conn_refusal why;

	if (conn_client_check(c, &why) != 0) {
		refuse_limited(c, why.status, why.reason, why.limit, why.log, why.suppressed);
		return;
	}
	if ((b = backend_route(cfg, c->req.target_host, c->req.target_port)) == NULL) {
		refuse(c, 404, "no backend for target", NULL);
		return;
	}
	if (!conn_take_active(c)) {
		refuse(c, 503, "max_connections reached", NULL);
		return;
	}
	if (conn_begin_handshake(c, b, true) != 0)
		refuse(c, 502, "backend unavailable", c->detail);
}

/* rx holds a head that trickles in: move it out of the pool buffer into
 * one sized for a head, so that slow heads do not pin pool buffers. */
static int
keep_partial_head(struct conn *c)
{
	struct buf *rx = &c->io.rx;
	size_t cap = HEAD_BUF_START;

	if (!rx->pooled)
		return 0;
	while (cap < rx->len + 1)
		cap *= 4;
	return buf_resize_private(&c->owner->pool, rx, cap > INGRESS_HEAD_MAX + 1 ? INGRESS_HEAD_MAX + 1 : cap);
}

/*
 * Read the request head.  It goes into io.rx, where whatever follows it (a
 * ClientHello the relay pipelined) stays for TLS.  A head that arrives whole
 * costs one recv() into a pool buffer; one that trickles in is kept in a
 * buffer of its own, at most INGRESS_HEAD_MAX + 1 bytes.
 */
static void
read_head(struct conn *c)
{
	struct buf *rx = &c->io.rx;
	size_t have = buf_pending(rx), room;
	ssize_t n;

	if (!c->io.readable) {
		if (conn_wait_pending(c))
			conn_set_interest(c, WANT_RELAY_READ);
		return;
	}
	if (have == 0) {
		if (buf_take(&c->owner->pool, rx) != 0) {
			conn_close(c, RESULT_RELAY_ERROR, "out of memory");
			return;
		}
		room = BUF_READ;
	} else {
		if (rx->cap < INGRESS_HEAD_MAX + 1 && rx->len == rx->cap &&
		    buf_resize_private(&c->owner->pool, rx, rx->cap * 4 > INGRESS_HEAD_MAX + 1 ? INGRESS_HEAD_MAX + 1 :
		    rx->cap * 4) != 0) {
			conn_close(c, RESULT_RELAY_ERROR, "out of memory");
			return;
		}
		room = rx->cap - rx->len;
	}
	n = recv(c->relay_fd, rx->p + rx->len, room, 0);
	if (n < 0) {
		if (have == 0)
			buf_release(&c->owner->pool, rx);
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			c->io.readable = false;
			if (conn_wait_pending(c))
				conn_set_interest(c, WANT_RELAY_READ);
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

	/* Only the new bytes are looked at (struct ingress_state). */
	if (ingress_parse_more(&c->head, (const char *)rx->p, rx->len > INGRESS_HEAD_MAX + 1 ? INGRESS_HEAD_MAX + 1 :
	    rx->len, c->peer_allowed, &c->req) == INGRESS_INCOMPLETE) {
		if (keep_partial_head(c) != 0) {
			conn_close(c, RESULT_RELAY_ERROR, "out of memory");
			return;
		}
		if (conn_wait_pending(c))
			conn_set_interest(c, WANT_RELAY_READ);
		return;
	}
	conn_pending_done(c);
	if (c->req.status != 0) {
		refuse(c, c->req.status, c->req.reason, NULL);
		return;
	}
	/* What follows the head is the client's TLS. */
	rx->off = c->req.head_len;
	if (buf_pending(rx) == 0)
		buf_release(&c->owner->pool, rx);
	accept_request(c);
}

/* The handshake completed: the splice starts, behind the PROXY header if the backend wants one. */
static void
handshake_done(struct conn *c)
{
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	uint8_t hdr[PROXY_HEADER_MAX];
	int len;

	c->state = CONN_SPLICE;
	c->last_active = conn_now_ms();
	conn_arm_timer_ms(c, TRIM_AFTER_MS);
	if (c->backend->proxy == PROXY_OFF)
		return;
	/* The node's side: what the forwarder's PROXY header said, else this socket's. */
	if (c->proxy_dst.ss_family != AF_UNSPEC)
		local = c->proxy_dst;
	else if (getsockname(c->relay_fd, (struct sockaddr *)&local, &llen) != 0)
		memset(&local, 0, sizeof(local));
	struct backend_client client = {
		.src = (struct sockaddr *)&c->req.src,
		.local = (struct sockaddr *)&local,
		.target_port = c->req.target_port,
		.authority = c->tls.sni[0] ? c->tls.sni : c->req.target_host,
		.alpn = mbedtls_ssl_get_alpn_protocol(&c->tls.ssl),
		.tls_version = mbedtls_ssl_get_version(&c->tls.ssl),
		.cipher = mbedtls_ssl_get_ciphersuite(&c->tls.ssl),
	};
	if ((len = backend_proxy_header(c->backend, &client, hdr, sizeof(hdr))) <= 0) {
		conn_close(c, RESULT_BACKEND_ERROR, "cannot build PROXY header");
		return;
	}
	/* Goes first through the same queue as decrypted bytes. */
	if (FAULT("proxy_header_queue") || buf_append(&c->owner->pool, &c->c2b, hdr, (size_t)len, BUF_SIZE) != 0)
		conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
}

/* One step of the handshake; its flight (or the alert of a failure) goes out first. */
static void
handshake_step(struct conn *c)
{
	int ret;

	if (!conn_relay_may_read(c)) {
		conn_set_interest(c, buf_pending(&c->io.tx) > 0 ? WANT_RELAY_WRITE : 0);
		return;
	}
	ret = tls_conn_handshake(&c->tls);

	/* A send that failed ends the connection, whatever mbedTLS wants next:
	 * a reset socket stays writable, and waiting on it would spin. */
	if (conn_flush_tx(c) != 0 && (ret >= 0 || ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE))
		ret = errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_SEND_FAILED;
	if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
		conn_set_interest(c, buf_pending(&c->io.tx) > 0 ? WANT_RELAY_WRITE : WANT_RELAY_READ);
		return;
	}
	if (ret != 0) {
		char ebuf[80];
		c->hs_failure = tls_conn_failure(&c->tls, ret);
		snprintf(c->detail, sizeof(c->detail), "%s: %s", hs_failure_name(c->hs_failure),
		    tls_strerror(ret, ebuf, sizeof(ebuf)));
		conn_close(c, RESULT_HANDSHAKE_FAILED, c->detail);
		return;
	}
	handshake_done(c);
}

/* After a refusal: discard input until EOF, a bound, or the linger timer. */
static void
linger(struct conn *c)
{
	for (;;) {
		if (!c->io.readable) {
			conn_set_interest(c, WANT_RELAY_READ);
			return;
		}
		ssize_t n = recv(c->relay_fd, c->owner->scratch, CONN_SCRATCH, 0);
		if (n > 0) {
			if ((size_t)n < CONN_SCRATCH)
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

/* The refusal goes out, then our FIN, then input is drained. */
static void
refusing_step(struct conn *c)
{
	if (conn_flush_tx(c) != 0) {
		conn_close(c, c->result, NULL);
		return;
	}
	if (buf_pending(&c->io.tx) > 0) {
		conn_set_interest(c, WANT_RELAY_WRITE);
		return;
	}
	if (!c->relay_shut) {
		shutdown(c->relay_fd, SHUT_WR);
		c->relay_shut = true;
	}
	linger(c);
}

static void
budget_retry(evutil_socket_t fd, short what, void *arg)
{
	conn_pump(arg);
}

/* A read was put off for max_buffer_memory: try again shortly (no event
 * says when buffers come free, in this worker or another). */
static void
wait_for_budget(struct conn *c)
{
	struct timeval tv = { 0, BUDGET_RETRY_MS * 1000 };

	c->io.starved = false;
	if (c->budget_ev == NULL && (c->budget_ev = conn_event(c, EV_BUDGET, -1, 0, budget_retry)) == NULL) {
		conn_close(c, RESULT_RELAY_ERROR, "out of memory");
		return;
	}
	evtimer_add(c->budget_ev, &tv);
}

/* Move everything that can move now, then wait for what is missing. */
static void
conn_pump(struct conn *c)
{
	conn_step(c);
	if (c->io.starved && c->state != CONN_CLOSED)
		wait_for_budget(c);
}

static void
conn_step(struct conn *c)
{
	switch (c->state) {
	case CONN_READ_HEAD:
		read_head(c);
		return;
	case CONN_READ_PROXY:
	case CONN_READ_HELLO:
		forwarded_step(c);
		return;
	case CONN_REFUSING:
		refusing_step(c);
		return;
	case CONN_HANDSHAKE:
		handshake_step(c);
		if (c->state != CONN_SPLICE)
			return;
		/* Records the client sent behind its Finished are read now. */
		/* FALLTHROUGH */
	case CONN_SPLICE: {
		/* Buffers released while idle come back before mbedTLS reads or writes a record. */
		if (c->tls.parked != NULL && (FAULT("untrim") || !tls_conn_untrim(&c->tls))) {
			conn_close(c, RESULT_RELAY_ERROR, "out of memory");
			return;
		}
		unsigned want = splice_pump(c);
		if (c->state != CONN_CLOSED)
			conn_set_interest(c, want);
		return;
	}
	case CONN_CLOSED:
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

/* Idle in the splice: trim the TLS buffers once, end at idle_timeout. */
static void
splice_timeout(struct conn *c)
{
	uint64_t idle = conn_now_ms() - c->last_active;
	uint64_t limit = (uint64_t)c->snap->cfg->idle_timeout * 1000;

	if (c->backend_lost) {
		conn_close(c, RESULT_BACKEND_ERROR, NULL);
		return;
	}
	if (idle >= limit) {
		conn_close(c, RESULT_IDLE_TIMEOUT, "no data within idle_timeout");
		return;
	}
	if (!c->trimmed && idle >= TRIM_AFTER_MS) {
		c->trimmed = true;
		if (tls_conn_trim(&c->tls))
			log_debug("conn %llu: idle for %llu ms, TLS record buffers trimmed",
			    (unsigned long long)c->id, (unsigned long long)idle);
	}
	/* Wake for the idle limit, or earlier to trim. */
	conn_arm_timer_ms(c, !c->trimmed && TRIM_AFTER_MS - idle < limit - idle ? TRIM_AFTER_MS - idle : limit - idle);
}

static void
conn_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	switch (c->state) {
	case CONN_READ_HEAD:
		refuse(c, 408, "head not complete within header_timeout", NULL);
		return;
	case CONN_READ_PROXY:
	case CONN_READ_HELLO:
		forwarded_timeout(c);
		return;
	case CONN_HANDSHAKE:
		c->hs_failure = HS_FAIL_TIMEOUT;
		conn_close(c, RESULT_HANDSHAKE_TIMEOUT, "handshake not complete within handshake_timeout");
		return;
	case CONN_SPLICE:
		splice_timeout(c);
		return;
	case CONN_REFUSING:
		conn_close(c, c->result, NULL);
		return;
	case CONN_CLOSED:
		return;
	}
}

/*
 * Refused before its head is read (a pending bound): the answer goes out
 * if the socket takes it now, and the connection ends at once, holding no
 * descriptor for a linger.
 */
static void
refuse_at_once(struct conn *c, int status, const char *reason, enum refusal r, bool log, uint32_t suppressed)
{
	char buf[512];
	size_t len = ingress_format_refusal(status, reason, buf, sizeof(buf));

	metrics_refusal(r);
	c->status = status;
	c->quiet = !log;
	if (log && suppressed > 0) {
		snprintf(c->detail, sizeof(c->detail), "%s (and %u more since the last logged)", reason, suppressed);
		reason = c->detail;
	}
	/* A [listener]'s peer speaks TLS, not HTTP: it only sees the close. */
	if (c->forward == NULL && send(c->relay_fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("conn %llu: %s", (unsigned long long)c->id, strerror(errno));
	conn_close(c, conn_result_for_status(status), reason);
}

/*
 * A connection must wait for more of its head (or PROXY header): only now
 * does it count as pending, against max_pending and max_pending_per_peer,
 * so that a peer whose heads arrive whole (the relay) is never held to
 * them.  False when refused (c is closed).
 */
bool
conn_wait_pending(struct conn *c)
{
	const struct config *cfg = c->snap->cfg;
	const struct sockaddr *peer = (const struct sockaddr *)&c->peer_addr;
	struct client_limits per_peer = { .max_conns = cfg->max_pending_per_peer };
	struct client_admission adm;
	uint32_t suppressed = 0;

	if (c->pending)
		return true;
	c->pending = true;
	if (atomic_fetch_add(&server.conns_pending, 1) >= cfg->max_pending) {
		bool log = server.peers == NULL || peer->sa_family == AF_UNSPEC ||
		    clients_should_log(server.peers, peer, conn_now_ms(), &suppressed);
		refuse_at_once(c, 503, "too many pending connections", REFUSAL_PENDING, log, suppressed);
		return false;
	}
	/* A unix: listener's peer (no address) is one, whose socket permissions decide. */
	if (peer->sa_family == AF_UNSPEC || server.peers == NULL)
		return true;
	if (clients_admit(server.peers, &per_peer, peer, conn_now_ms(), &adm) != CLIENT_ADMIT) {
		refuse_at_once(c, 429, "too many pending connections from this peer", REFUSAL_PENDING_PEER, adm.log,
		    adm.suppressed);
		return false;
	}
	c->peer_ref = adm.ref;
	return true;
}

struct conn *
conn_new(struct conn_owner *o, int fd, const struct sockaddr *peer)
{
	static const struct sockaddr unknown = { .sa_family = AF_UNSPEC };
	struct conn *c;

	if ((c = slab_alloc(&o->slab)) == NULL) {
		close(fd);
		return NULL;
	}
	c->owner = o;
	c->relay_fd = fd;
	c->backend_fd = -1;
	c->io.fd = fd;
	c->io.pool = &o->pool;
	c->relay_writable = c->backend_writable = true;
	c->id = atomic_fetch_add(&server.next_conn_id, 1) + 1;
	c->snap = snapshot_acquire();
	c->state = CONN_READ_HEAD;
	ingress_begin(&c->head, &c->req);
	clock_gettime(CLOCK_MONOTONIC, &c->started);
	atomic_fetch_add(&server.conns_open, 1);
	addr_format(peer != NULL ? peer : &unknown, c->peer, sizeof(c->peer));
	if (peer != NULL && (peer->sa_family == AF_INET || peer->sa_family == AF_INET6))
		memcpy(&c->peer_addr, peer, peer->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
		    sizeof(struct sockaddr_in6));
	/* On a unix: listener the socket file's permissions decide who connects. */
	c->peer_allowed = peer != NULL && addr_cidr_match(c->snap->cfg->allow, c->snap->cfg->nallow, peer);
	return c;
}

void
conn_start(struct conn *c, const struct listener *l)
{
	struct conn_owner *o = c->owner;

	log_debug("conn %llu: from %s on %s, worker %u", (unsigned long long)c->id, c->peer, l->text, o->id);
	/* TCP_NODELAY comes from the listener (accepted sockets inherit it). */
	if (l->kind == LISTEN_UNIX)
		c->peer_allowed = true;
	c->relay_rev = conn_event(c, EV_RELAY_READ, c->relay_fd, EV_READ | EV_PERSIST, conn_io);
	c->relay_wev = conn_event(c, EV_RELAY_WRITE, c->relay_fd, EV_WRITE | EV_PERSIST, conn_io);
	c->timer = conn_event(c, EV_TIMER, -1, 0, conn_timeout);
	if (c->relay_rev == NULL || c->relay_wev == NULL || c->timer == NULL) {
		conn_close(c, RESULT_RELAY_ERROR, "out of memory");
		return;
	}
	arm_timer(c, c->snap->cfg->header_timeout);
	if (l->role == ROLE_TLS && (!forwarded_check_peer(c, l) || !forwarded_start(c)))
		return;
	/* The head (or PROXY header) is usually in already: read it now. */
	c->io.readable = true;
	conn_pump(c);
}
