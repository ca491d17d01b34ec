/*
 * Byte buffers of the data path, taken from a per-worker pool.
 *
 * A connection holds a buffer only while bytes wait in it: every buffer is
 * given back the moment it empties, so an idle connection holds none and a
 * busy one moves data with no allocation per transfer.
 */
#ifndef FUNNELD_BUF_H
#define FUNNELD_BUF_H

#include <stddef.h>

#define BUF_READ (64 * 1024)            /* one recv() or send() moves at most this */
#define BUF_SIZE (BUF_READ + 1024)      /* a pool buffer: room for four whole TLS records */
#define BUF_POOL_KEEP 16                /* empty buffers a worker keeps for reuse */

struct buf {
	unsigned char *p;               /* NULL when empty */
	size_t off, len, cap;           /* bytes [off, len) wait */
};

struct bufpool {
	unsigned char *spare[BUF_POOL_KEEP];
	size_t nspare;
};

static inline size_t
buf_pending(const struct buf *b)
{
	return b->len - b->off;
}

/* Give b a pool buffer if it has none.  0, or -1 when out of memory. */
int buf_take(struct bufpool *pool, struct buf *b);

/* Hand b's storage back (to the pool when it came from there). */
void buf_release(struct bufpool *pool, struct buf *b);

/* Append n bytes, growing b up to max bytes in all.  0, or -1 when they do not fit. */
int buf_append(struct bufpool *pool, struct buf *b, const void *data, size_t n, size_t max);

/* Free the spare buffers (the worker is ending). */
void bufpool_clear(struct bufpool *pool);

#endif
