/* Pooled byte buffers; see buf.h. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static atomic_size_t spare_bytes;

size_t
bufpool_spare_bytes(void)
{
	return atomic_load_explicit(&spare_bytes, memory_order_relaxed);
}

int
buf_take(struct bufpool *pool, struct buf *b)
{
	if (b->p != NULL)
		return 0;
	if (pool->nspare > 0) {
		b->p = pool->spare[--pool->nspare];
		atomic_fetch_sub_explicit(&spare_bytes, BUF_SIZE, memory_order_relaxed);
	} else if ((b->p = malloc(BUF_SIZE)) == NULL) {
		return -1;
	}
	pool->takes++;
	b->off = b->len = 0;
	b->cap = BUF_SIZE;
	return 0;
}

void
buf_release(struct bufpool *pool, struct buf *b)
{
	if (b->p != NULL) {
		/* Only pool-sized buffers go back; grown or small ones are freed. */
		if (b->cap == BUF_SIZE && pool->nspare < BUF_POOL_KEEP) {
			pool->spare[pool->nspare++] = b->p;
			atomic_fetch_add_explicit(&spare_bytes, BUF_SIZE, memory_order_relaxed);
			if (pool->nspare == 1 && pool->on_spare != NULL)
				pool->on_spare(pool->arg);
		} else {
			free(b->p);
		}
	}
	b->p = NULL;
	b->off = b->len = b->cap = 0;
}

int
buf_append(struct bufpool *pool, struct buf *b, const void *data, size_t n, size_t max)
{
	if (n == 0)
		return 0;
	if (buf_take(pool, b) != 0)
		return -1;
	if (b->cap - b->len < n && b->off > 0) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->cap - b->len < n) {
		size_t cap = b->cap * 2;
		while (cap < b->len + n)
			cap *= 2;
		if (cap > max)
			cap = max;
		if (cap < b->len + n)
			return -1;
		unsigned char *p = realloc(b->p, cap);
		if (p == NULL)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

void
bufpool_clear(struct bufpool *pool)
{
	while (pool->nspare > 0) {
		free(pool->spare[--pool->nspare]);
		atomic_fetch_sub_explicit(&spare_bytes, BUF_SIZE, memory_order_relaxed);
	}
}
