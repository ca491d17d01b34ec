/*
 * Byte buffers of the data path, taken from a per-worker pool.
 *
 * A connection holds a buffer only while bytes wait in it: every buffer is
 * given back the moment it empties, so an idle connection holds none and a
 * busy one moves data with no allocation per transfer.
 */
#ifndef FUNNELD_BUF_H
#define FUNNELD_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One recv() or send() moves at most BUF_READ.  Bulk transfers measured
 * 10-20% faster per core with 256 KiB than with 64 KiB (fewer calls and
 * fewer wake-ups of the backend); a connection blocked both ways holds at
 * most four buffers, less than the kernel's own socket buffers may hold.
 */
#define BUF_READ (256 * 1024)
#define BUF_SIZE (BUF_READ + 4096)      /* a pool buffer: BUF_READ of plaintext as whole TLS records */
#define BUF_POOL_KEEP 8                 /* empty buffers a worker keeps for reuse */

struct buf {
	unsigned char *p;               /* NULL when empty */
	size_t off, len, cap;           /* bytes [off, len) wait */
	bool pooled;                    /* p is a pool buffer (else from malloc) */
};

struct bufpool {
	unsigned char *spare[BUF_POOL_KEEP];
	size_t nspare;
	uint64_t takes;                 /* buffers handed out so far */
	void (*on_spare)(void *arg);    /* if set: the pool went from no spare buffer to one */
	void *arg;
};

static inline size_t
buf_pending(const struct buf *b)
{
	return b->len - b->off;
}

/* Give b a pool buffer if it has none.  0, or -1 when out of memory. */
int buf_take(struct bufpool *pool, struct buf *b);

/*
 * max_buffer_memory: the bytes all connections' buffers may hold.  At the
 * budget funneld stops reading from sockets (buf_may_read() is false) and
 * moves only what it holds already, so memory stops growing and no byte is
 * dropped; writes never wait for it, so what was read can always leave.
 */
void buf_set_budget(size_t bytes);
bool buf_may_read(void);                /* false (and counted) at the budget */
size_t buf_used_bytes(void);
unsigned long long buf_budget_waits(void);

/* Make b a private buffer of cap bytes holding what it held (cap must fit it).  0 or -1. */
int buf_resize_private(struct bufpool *pool, struct buf *b, size_t cap);

/* Hand b's storage back (to the pool when it came from there). */
void buf_release(struct bufpool *pool, struct buf *b);

/* Append n bytes, growing b up to max bytes in all.  0, or -1 when they do not fit. */
int buf_append(struct bufpool *pool, struct buf *b, const void *data, size_t n, size_t max);

/*
 * Send what b holds on fd while the socket takes it; a short send clears
 * *writable (the caller's write event sets it again), and b goes back to
 * the pool once empty.  0 when all went or the rest waits; -1 when the
 * socket failed (errno says why).
 */
int buf_send(struct bufpool *pool, struct buf *b, int fd, bool *writable);

/*
 * The relay's socket and the bytes waiting on it, before TLS (the request
 * head, a refusal, the 101) and during it (records both ways).  mbedTLS
 * takes ciphertext from rx, which is read ahead of it, and puts what it
 * sends into tx, which the connection flushes, so that a handshake flight
 * (with the 101 before it) or several records leave in one send().
 */
struct relay_io {
	int fd;
	struct bufpool *pool;
	bool readable;                  /* the socket may hold bytes: cleared by a short read */
	bool starved;                   /* a read was put off: buffers are at max_buffer_memory */
	struct buf rx;                  /* read from the socket, not yet consumed */
	struct buf tx;                  /* to send */
};

/* Give back what rx and tx hold. */
void relay_io_release(struct relay_io *io);

/* Free the spare buffers (the pool went quiet, or its worker ends). */
void bufpool_clear(struct bufpool *pool);

/* Bytes in spare buffers, all pools together (a metrics gauge). */
size_t bufpool_spare_bytes(void);

#endif
