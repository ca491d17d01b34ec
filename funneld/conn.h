/*
 * One relay connection: the struct and its states.  Private to the files of
 * the connection (conn.c, splice.c) and its owner (worker.c).
 *
 *   READ_HEAD ──▶ HANDSHAKE ──▶ SPLICE ──▶ CLOSED ─(reap)─▶ freed
 *       └──▶ REFUSING (a refusal is written, input drained) ──▶ CLOSED
 *   [listener]: READ_PROXY ─▶ READ_HELLO ─▶ HANDSHAKE ─▶ ... (or CLOSED)
 *
 * struct conn owns both sockets, the TLS context, its events and timer, and
 * the snapshot it started with.  conn_close() is the one place a connection
 * ends: it writes the log record and releases descriptors, events and
 * buffers at once, and hands the struct to its owner, which frees it
 * (conn_free) from a reap step after the callbacks have unwound.  So code
 * that runs after a close (further up the same callback) finds state ==
 * CONN_CLOSED, never freed memory.
 */
#ifndef FUNNELD_CONN_H
#define FUNNELD_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include "buf.h"
#include "clients.h"
#include "conn_owner.h"
#include "ingress.h"
#include "result.h"
#include "tls.h"

struct listener;
struct backend_conf;
struct event;

enum conn_state {
	CONN_READ_HEAD,
	CONN_READ_PROXY,                /* [listener]: the PROXY header (forwarded.c) */
	CONN_READ_HELLO,                /* [listener]: the ClientHello, peeked for its SNI */
	CONN_HANDSHAKE,
	CONN_SPLICE,
	CONN_REFUSING,
	CONN_CLOSED,
};

/* What a connection waits for: its level-triggered events. */
#define WANT_RELAY_READ    0x1
#define WANT_RELAY_WRITE   0x2
#define WANT_BACKEND_READ  0x4
#define WANT_BACKEND_WRITE 0x8

#define TLS_RECORD_MAX 16384            /* plaintext bytes per record */
#define TLS_RECORD_WIRE_MAX (TLS_RECORD_MAX + 256)      /* ... and what one costs on the wire */
#define LINGER_SECONDS 2                /* after a refusal or a lost backend, how long to drain input */

struct conn {
	TAILQ_ENTRY(conn) entry;        /* in its owner's list */
	struct conn_owner *owner;
	struct snapshot *snap;
	enum conn_state state;
	uint64_t id;
	int relay_fd, backend_fd;
	struct event *relay_rev, *relay_wev, *backend_rev, *backend_wev, *timer;
	struct event *budget_ev;        /* reading was put off for max_buffer_memory: try again */
	unsigned interest;              /* WANT_* bits whose events are added */
	struct timespec started;
	uint64_t last_active;           /* monotonic milliseconds, for idle_timeout */
	bool trimmed;                   /* tls_conn_trim() ran since last_active */

	bool peer_allowed;
	char peer[64];
	struct sockaddr_storage peer_addr;      /* AF_UNSPEC on a unix: listener */

	/* What the limits counted: undone in conn_close(). */
	bool pending;                   /* in server.conns_pending (head not complete) */
	struct client_ref peer_ref;     /* max_pending_per_peer, while pending */
	struct client_ref client_ref;   /* [clients] max_connections */
	bool quiet;                     /* a refusal whose client was logged recently: no record */

	const struct listener_conf *forward;    /* its [listener] (in snap), NULL on the ingress path */
	struct sockaddr_storage proxy_dst;      /* the PROXY header's destination, AF_UNSPEC if none */
	struct ingress_state head;      /* the request head, parsed as it arrives */
	struct ingress_req req;
	const struct backend_conf *backend;     /* routed to; NULL before (or when refused) */
	size_t backend_index;           /* its index in snap->cfg->backends */
	bool active;                    /* counted in server.conns_active */

	size_t lingered;                /* bytes drained after a refusal or a lost backend */
	bool relay_shut;                /* our FIN is out */

	struct relay_io io;             /* the relay's socket and buffers, before TLS too */
	struct tls_conn tls;
	bool relay_writable;            /* cleared by a short send, set by the write event */
	bool backend_readable, backend_writable;

	struct buf c2b;                 /* decrypted, for the backend */
	struct buf b2c;                 /* from the backend, to encrypt */
	bool c2b_eof, c2b_shut, b2c_eof, b2c_done;
	bool backend_lost;              /* client gets a FIN without close_notify; its bytes are dropped */
	uint64_t bytes_in, bytes_out;

	int status;                     /* HTTP status answered */
	enum conn_result result;
	enum hs_failure hs_failure;
	const char *reason;
	char detail[96];
};

/*
 * For the owner (worker.c): a new connection on the accepted fd (NULL when
 * out of memory: fd is closed), which the owner lists before conn_start();
 * conn_close() for a forced end; conn_free() once closed() told it so.
 */
size_t conn_alloc_size(void);                  /* of a connection's slab slot */
struct conn *conn_new(struct conn_owner *o, int fd, const struct sockaddr *peer);
void conn_start(struct conn *c, const struct listener *l);
void conn_close(struct conn *c, enum conn_result result, const char *reason);
void conn_free(struct conn *c);

/* Why a [clients] check refused a connection (conn_client_check). */
struct conn_refusal {
	int status;                     /* the HTTP status it gets on the ingress path */
	enum refusal limit;
	const char *reason;
	bool log;                       /* the one refusal of this client to log now */
	uint32_t suppressed;            /* ... after this many unlogged ones */
};

/* forwarded.c: a [listener]'s connection before its handshake. */
bool forwarded_check_peer(struct conn *c, const struct listener *l);     /* trusted, and its section */
bool forwarded_start(struct conn *c);
void forwarded_step(struct conn *c);
void forwarded_timeout(struct conn *c);
bool conn_wait_pending(struct conn *c);         /* it waits for more of them: max_pending */
void conn_pending_done(struct conn *c);         /* its head or PROXY header is in */

/* Between conn.c and forwarded.c: [clients] for c->req.src (0: admitted), a
 * refused connection closed without an answer, a place past the checks
 * (max_connections), and the backend connected + the handshake started
 * (-1 when the backend refused: c->detail says why, nothing sent). */
int conn_client_check(struct conn *c, struct conn_refusal *why);
void conn_drop_refused(struct conn *c, const struct conn_refusal *why);
bool conn_take_active(struct conn *c);
int conn_begin_handshake(struct conn *c, const struct backend_conf *b, bool answer_101);

/* Between conn.c and splice.c. */
void conn_set_interest(struct conn *c, unsigned want);
void conn_arm_timer_ms(struct conn *c, uint64_t ms);
void conn_note_activity(struct conn *c);
uint64_t conn_now_ms(void);
int conn_flush_tx(struct conn *c);

/* Whether a read from the relay may start now (max_buffer_memory), for mbedTLS. */
bool conn_relay_may_read(struct conn *c);

/* splice.c: move what can move now both ways; returns the WANT_* bits to
 * wait for (the connection may be CONN_CLOSED afterwards). */
unsigned splice_pump(struct conn *c);

#endif
