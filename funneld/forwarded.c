/*
 * Connections on a [listener] (DESIGN §8): raw TLS that a local forwarder
 * (the stock tailscaled's Funnel TCP forwarder) hands over, after a PROXY
 * header when the listener asks for one.  Before anything else: the peer
 * must be trusted, the header must parse, the public client must pass
 * [clients], and the ClientHello's SNI with the listener's public_port must
 * route to a backend.  Only then is the backend connected and mbedTLS
 * started on the very bytes that were peeked at; from the handshake on it
 * is the same connection as one from the ingress path (conn.c, splice.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "backend.h"
#include "clienthello.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "proxy_protocol.h"
#include "server.h"

/* TLS alert descriptions sent before mbedTLS runs (RFC 8446 §6). */
#define ALERT_HANDSHAKE_FAILURE 40
#define ALERT_UNRECOGNIZED_NAME 112

/*
 * End the handshake before it began: a fatal alert in the clear (as a
 * server's first record may be), then close.  Nothing reached a backend.
 */
static void
refuse_with_alert(struct conn *c, unsigned char desc, enum conn_result result, enum hs_failure hs,
    const char *reason)
{
	const unsigned char alert[] = { 21, 3, 3, 0, 2, 2, desc };

	c->hs_failure = hs;
	if (buf_append(&c->owner->pool, &c->io.tx, alert, sizeof(alert), TLS_TX_MAX) == 0 && conn_flush_tx(c) != 0)
		log_debug("conn %llu: alert: %s", (unsigned long long)c->id, strerror(errno));
	conn_close(c, result, reason);
}

/*
 * Read what the socket has into io.rx (which keeps everything from the
 * start of the stream: the header and the ClientHello are only peeked at).
 * 1 when bytes came, 0 when it waits, -1 when c was closed.
 */
static int
read_more(struct conn *c)
{
	struct buf *rx = &c->io.rx;
	ssize_t n;

	if (!c->io.readable) {
		if (c->state != CONN_READ_PROXY || conn_wait_pending(c))
			conn_set_interest(c, WANT_RELAY_READ);
		return 0;
	}
	if (buf_take(&c->owner->pool, rx) != 0) {
		conn_close(c, RESULT_RELAY_ERROR, "out of memory");
		return -1;
	}
	if (rx->len == rx->cap) {
		/* Nothing that fits a buffer decided it: a bound of the parsers was broken. */
		conn_close(c, RESULT_RELAY_ERROR, "header or ClientHello larger than a buffer");
		return -1;
	}
	n = recv(c->relay_fd, rx->p + rx->len, rx->cap - rx->len, 0);
	if (n > 0) {
		if ((size_t)n < rx->cap - rx->len)
			c->io.readable = false;
		rx->len += (size_t)n;
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		c->io.readable = false;
		if (c->state != CONN_READ_PROXY || conn_wait_pending(c))
			conn_set_interest(c, WANT_RELAY_READ);
		return 0;
	}
	if (c->state == CONN_READ_HELLO) {
		c->hs_failure = n == 0 ? HS_FAIL_EOF : HS_FAIL_RESET;
		conn_close(c, RESULT_HANDSHAKE_FAILED, n == 0 ? "closed before the ClientHello" : "reset");
	} else {
		conn_close(c, RESULT_BAD_PROXY, n == 0 ? "closed before the PROXY header" : "reset");
	}
	return -1;
}

/* The client's address is known (the PROXY source, or the TCP peer): [clients]. */
static bool
client_ok(struct conn *c)
{
	struct conn_refusal why;

	if (conn_client_check(c, &why) == 0)
		return true;
	conn_drop_refused(c, &why);
	return false;
}

static void
wait_for_hello(struct conn *c)
{
	c->state = CONN_READ_HELLO;
	conn_arm_timer_ms(c, (uint64_t)c->snap->cfg->handshake_timeout * 1000);
}

static void
read_proxy(struct conn *c)
{
	struct buf *rx = &c->io.rx;
	struct proxy_header ph;
	const char *why = NULL;
	enum proxy_read_result r;

	for (;;) {
		if (rx->p == NULL)
			r = PROXY_READ_INCOMPLETE;
		else if (c->forward->proxy == PROXY_V1)
			r = proxy_read_v1(rx->p, rx->len, &ph, &why);
		else
			r = proxy_read_v2(rx->p, rx->len, &ph, &why);
		if (r != PROXY_READ_INCOMPLETE)
			break;
		if (read_more(c) <= 0)
			return;
	}
	conn_pending_done(c);
	switch (r) {
	case PROXY_READ_OK:
		break;
	case PROXY_READ_LOCAL:
		/* A health check: the forwarder only wanted to know we are here. */
		conn_close(c, RESULT_PROXY_LOCAL, "PROXY LOCAL (a health check)");
		return;
	default:
		snprintf(c->detail, sizeof(c->detail), "PROXY header: %s", why != NULL ? why : "bad");
		conn_close(c, RESULT_BAD_PROXY, c->detail);
		return;
	}
	rx->off = ph.header_len;        /* what follows is the client's TLS */
	memcpy(&c->req.src, &ph.src, sizeof(ph.src));
	memcpy(&c->proxy_dst, &ph.dst, sizeof(ph.dst));
	addr_format((struct sockaddr *)&c->req.src, c->req.src_text, sizeof(c->req.src_text));
	if (!client_ok(c))
		return;
	wait_for_hello(c);
	forwarded_step(c);
}

/* The ClientHello is in (not consumed): route its SNI, connect the backend, start TLS. */
static void
route_hello(struct conn *c, const struct clienthello *hello)
{
	const struct backend_conf *b;
	char host[ADDR_HOST_MAX + 1];

	if (!hello->has_sni) {
		refuse_with_alert(c, ALERT_UNRECOGNIZED_NAME, RESULT_HANDSHAKE_FAILED, HS_FAIL_UNRECOGNIZED_NAME,
		    "no SNI: nothing to route by");
		return;
	}
	if (addr_normalize_host(hello->sni, strlen(hello->sni), false, host) != 0) {
		refuse_with_alert(c, ALERT_UNRECOGNIZED_NAME, RESULT_HANDSHAKE_FAILED, HS_FAIL_UNRECOGNIZED_NAME,
		    "SNI is not a host name");
		return;
	}
	snprintf(c->req.target_host, sizeof(c->req.target_host), "%s", host);
	c->req.target_port = c->forward->public_port;
	snprintf(c->req.target_text, sizeof(c->req.target_text), "%s:%u", host, c->req.target_port);
	if ((b = backend_route(c->snap->cfg, host, c->req.target_port)) == NULL) {
		refuse_with_alert(c, ALERT_UNRECOGNIZED_NAME, RESULT_HANDSHAKE_FAILED, HS_FAIL_UNRECOGNIZED_NAME,
		    "no backend for the SNI");
		return;
	}
	if (!conn_take_active(c)) {
		refuse_with_alert(c, ALERT_HANDSHAKE_FAILURE, RESULT_REFUSED_503, HS_FAIL_NONE,
		    "max_connections reached");
		return;
	}
	if (conn_begin_handshake(c, b, false) != 0)
		refuse_with_alert(c, ALERT_HANDSHAKE_FAILURE, RESULT_REFUSED_502, HS_FAIL_NONE, c->detail);
}

static void
read_hello(struct conn *c)
{
	struct buf *rx = &c->io.rx;
	struct clienthello hello;
	const char *why = NULL;
	enum hello_result r;

	for (;;) {
		r = rx->p == NULL ? HELLO_INCOMPLETE :
		    clienthello_peek(rx->p + rx->off, rx->len - rx->off, &hello, &why);
		if (r != HELLO_INCOMPLETE)
			break;
		if (read_more(c) <= 0)
			return;
	}
	if (r != HELLO_OK) {
		c->hs_failure = r == HELLO_NOT_TLS ? HS_FAIL_NOT_TLS : HS_FAIL_BAD_CLIENT_HELLO;
		snprintf(c->detail, sizeof(c->detail), "%s: %s", hs_failure_name(c->hs_failure), why ? why : "bad");
		conn_close(c, RESULT_HANDSHAKE_FAILED, c->detail);
		return;
	}
	route_hello(c, &hello);
}

void
forwarded_step(struct conn *c)
{
	if (c->state == CONN_READ_PROXY)
		read_proxy(c);
	else if (c->state == CONN_READ_HELLO)
		read_hello(c);
}

void
forwarded_timeout(struct conn *c)
{
	if (c->state == CONN_READ_PROXY) {
		conn_close(c, RESULT_BAD_PROXY, "PROXY header not complete within header_timeout");
		return;
	}
	c->hs_failure = HS_FAIL_TIMEOUT;
	conn_close(c, RESULT_HANDSHAKE_TIMEOUT, "ClientHello not complete within handshake_timeout");
}

bool
forwarded_check_peer(struct conn *c, const struct listener *l)
{
	const struct sockaddr *peer = (const struct sockaddr *)&c->peer_addr;
	uint32_t suppressed = 0;

	if ((c->forward = config_tls_listener(c->snap->cfg, l->text)) == NULL) {
		conn_close(c, RESULT_RELAY_ERROR, "no [listener] for this address any more (restart to close it)");
		return false;
	}
	if (l->kind == LISTEN_UNIX || addr_cidr_match(c->forward->trusted, c->forward->ntrusted, peer))
		return true;
	/* Closed at once, not one byte read; logged once per peer and interval. */
	c->quiet = server.peers != NULL && !clients_should_log(server.peers, peer, conn_now_ms(), &suppressed);
	metrics_refusal(REFUSAL_UNTRUSTED);
	conn_close(c, RESULT_UNTRUSTED, "peer not in trusted");
	return false;
}

bool
forwarded_start(struct conn *c)
{
	if (c->forward->proxy != PROXY_OFF) {
		c->state = CONN_READ_PROXY;     /* pending while it waits for the header */
		return true;
	}
	/* No PROXY header: the TCP peer is the client (a unix: peer has no address). */
	memcpy(&c->req.src, &c->peer_addr, sizeof(c->req.src));
	if (c->peer_addr.ss_family != AF_UNSPEC)
		addr_format((const struct sockaddr *)&c->peer_addr, c->req.src_text, sizeof(c->req.src_text));
	if (!client_ok(c))
		return false;
	wait_for_hello(c);
	return true;
}
