/*
 * The splice after the handshake: decrypted client bytes to the backend
 * (c2b), backend bytes encrypted to the client (b2c), each with bounded
 * buffers and back-pressure, half-close carried across, and what happens
 * when the backend goes away mid-stream.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"

#define DISCARD_BYTES (16 * 1024 * 1024)       /* taken from a client after its backend was lost */

/*
 * The backend went away mid-stream.  The client gets what the backend sent
 * before that, then a FIN without close_notify: TLS tells it the stream was
 * cut short, and TCP does not reset it.  What it still sends is dropped
 * until it closes or the linger timer ends the connection.
 */
static void
backend_lost(struct conn *c, const char *why)
{
	conn_set_interest(c, c->interest & ~(unsigned)(WANT_BACKEND_READ | WANT_BACKEND_WRITE));
	close(c->backend_fd);
	c->backend_fd = -1;
	buf_release(&c->owner->pool, &c->c2b);
	c->backend_lost = true;
	c->reason = why;
	c->b2c_eof = true;              /* b2c flushes, then ends without close_notify */
	conn_arm_timer_ms(c, (uint64_t)LINGER_SECONDS * 1000);
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
	bool more;
	int ret;

	if (buf_take(&c->owner->pool, b) != 0)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;
	do {
		uint64_t taken = c->tls.taken;

		ret = mbedtls_ssl_read(&c->tls.ssl, b->p + b->len, b->cap - b->len);
		if (ret > 0)
			b->len += (size_t)ret;
		/*
		 * A record with nothing for the backend (a no_renegotiation
		 * warning) ends in WANT_READ even when more records wait in io.rx,
		 * and the socket will not say so again.  mbedTLS takes a stream
		 * record by record, so io.rx is all the read-ahead there is: read
		 * on while it holds bytes and mbedTLS takes some.
		 */
		more = ret > 0 || (ret == MBEDTLS_ERR_SSL_WANT_READ && buf_pending(&c->io.rx) > 0 &&
		    c->tls.taken != taken);
	} while (more && b->cap - b->len >= TLS_RECORD_MAX);
	if (buf_pending(b) == 0)
		buf_release(&c->owner->pool, b);
	return ret;
}

/* Client → backend.  Returns what it waits for. */
static unsigned
splice_c2b(struct conn *c)
{
	for (;;) {
		if (buf_pending(&c->c2b) > 0) {
			if (buf_send(&c->owner->pool, &c->c2b, c->backend_fd, &c->backend_writable) != 0) {
				backend_lost(c, "backend write failed");
				return 0;       /* splice_pump ends the client's stream first */
			}
			if (buf_pending(&c->c2b) > 0)
				return WANT_BACKEND_WRITE;
		}
		if (c->c2b_eof) {
			if (!c->c2b_shut) {
				if (!c->backend_lost)
					shutdown(c->backend_fd, SHUT_WR);
				c->c2b_shut = true;
			}
			return 0;
		}
		/* After the backend was lost, read nothing more until the FIN is
		 * out: a client pushing hard would otherwise outrun it. */
		if (c->backend_lost && !c->b2c_done)
			return 0;
		if (mbedtls_ssl_get_bytes_avail(&c->tls.ssl) == 0 && !conn_relay_may_read(c))
			return 0;               /* conn_pump tries again shortly */
		int ret = decrypt_into_c2b(c);
		size_t got = buf_pending(&c->c2b);
		if (got > 0)
			conn_note_activity(c);
		if (!c->backend_lost) {
			c->bytes_in += got;
		} else {
			/* Nobody left to take it; a client that keeps pushing
			 * after the FIN is cut off. */
			buf_release(&c->owner->pool, &c->c2b);
			c->lingered += got;
			if (c->lingered >= DISCARD_BYTES) {
				conn_close(c, RESULT_BACKEND_ERROR, NULL);
				return 0;
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
			snprintf(c->detail, sizeof(c->detail), "TLS read: %s", tls_strerror(ret, (char[80]){ 0 }, 80));
			conn_close(c, RESULT_RELAY_ERROR, c->detail);
			return 0;
		}
	}
}

/*
 * Backend → client.  Records go into io.tx while whole ones fit, so that
 * what one recv() took from the backend leaves in one send().  Returns what
 * it waits for.
 */
static unsigned
splice_b2c(struct conn *c)
{
	struct buf *b = &c->b2c;
	int ret;

	for (;;) {
		if (buf_pending(b) > 0) {
			if (c->io.tx.cap - c->io.tx.len < TLS_RECORD_WIRE_MAX && buf_pending(&c->io.tx) > 0) {
				if (conn_flush_tx(c) != 0)
					return 0;       /* splice_flush sees the failure */
				if (buf_pending(&c->io.tx) > 0)
					return WANT_RELAY_WRITE;
			}
			size_t chunk = buf_pending(b) < TLS_RECORD_MAX ? buf_pending(b) : TLS_RECORD_MAX;
			/* bio_send only queues, so this never waits half done. */
			if ((ret = mbedtls_ssl_write(&c->tls.ssl, b->p + b->off, chunk)) < 0)
				goto tls_error;
			b->off += (size_t)ret;
			c->bytes_out += (uint64_t)ret;
			if (buf_pending(b) == 0)
				buf_release(&c->owner->pool, b);
			continue;
		}
		if (c->b2c_eof) {
			if (c->b2c_done)
				return 0;
			/* The data goes out before our close_notify: once that is
			 * queued, a client that has gone lost nothing of the stream. */
			if (buf_pending(&c->io.tx) > 0) {
				if (conn_flush_tx(c) != 0)
					return 0;       /* splice_flush sees the failure */
				if (buf_pending(&c->io.tx) > 0)
					return WANT_RELAY_WRITE;
			}
			/* close_notify would vouch for a stream the backend cut short. */
			if (!c->backend_lost && (ret = mbedtls_ssl_close_notify(&c->tls.ssl)) < 0)
				goto tls_error;
			c->b2c_done = true;     /* splice_flush sends our FIN once tx is out */
			return 0;
		}
		if (!c->backend_readable)
			return WANT_BACKEND_READ;
		if (!buf_may_read()) {
			c->io.starved = true;   /* conn_pump tries again shortly */
			return 0;
		}
		if (buf_take(&c->owner->pool, b) != 0) {
			conn_close(c, RESULT_BACKEND_ERROR, "out of memory");
			return 0;
		}
		ssize_t n = recv(c->backend_fd, b->p, BUF_READ, 0);
		if (n <= 0) {
			buf_release(&c->owner->pool, b);
			if (n == 0) {
				c->b2c_eof = true;
			} else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				c->backend_readable = false;
				return WANT_BACKEND_READ;
			} else {
				backend_lost(c, "backend read failed");
			}
			continue;
		}
		if ((size_t)n < BUF_READ)
			c->backend_readable = false;
		b->len = (size_t)n;
		conn_note_activity(c);
	}
tls_error:
	snprintf(c->detail, sizeof(c->detail), "TLS write: %s", tls_strerror(ret, (char[80]){ 0 }, 80));
	conn_close(c, RESULT_RELAY_ERROR, c->detail);
	return 0;
}

/* Flush io.tx, and send our FIN once the last record is out.  Returns what it waits for. */
static unsigned
splice_flush(struct conn *c)
{
	if (conn_flush_tx(c) != 0) {
		if (!c->c2b_eof) {
			snprintf(c->detail, sizeof(c->detail), "relay write failed: %s", strerror(errno));
			conn_close(c, RESULT_RELAY_ERROR, c->detail);
			return 0;
		}
		/* The client has gone after its own close.  If all the data was
		 * out, only our close_notify is lost: the stream ended well. */
		if (c->b2c_done) {
			buf_release(&c->owner->pool, &c->io.tx);
			c->relay_shut = true;
			return 0;
		}
		snprintf(c->detail, sizeof(c->detail), "client gone before the backend finished: %s", strerror(errno));
		conn_close(c, RESULT_RELAY_ERROR, c->detail);
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

unsigned
splice_pump(struct conn *c)
{
	unsigned (*const normal[])(struct conn *) = { splice_c2b, splice_b2c, splice_flush };
	/* Once the backend is lost, end the client's stream (FIN) before draining what it still sends. */
	unsigned (*const lost[])(struct conn *) = { splice_b2c, splice_flush, splice_c2b };
	unsigned want;

	for (;;) {
		bool lost_before = c->backend_lost;
		unsigned (*const *steps)(struct conn *) = c->backend_lost ? lost : normal;

		want = 0;
		for (size_t i = 0; i < 3; i++) {
			want |= steps[i](c);
			if (c->state == CONN_CLOSED)
				return 0;
		}
		/* What was waited for is stale once the backend was lost. */
		if (c->backend_lost == lost_before)
			break;
	}
	if (c->c2b_shut && c->b2c_done && c->relay_shut) {
		conn_close(c, c->backend_lost ? RESULT_BACKEND_ERROR : RESULT_OK, NULL);
		return 0;
	}
	return want;
}
