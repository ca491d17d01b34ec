/* Pooled byte buffers; see buf.h. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "buf.h"

static atomic_size_t spare_bytes;       /* in pools' spare buffers */
static atomic_size_t used_bytes;        /* held by connections' buffers */
static atomic_size_t budget = SIZE_MAX; /* max_buffer_memory */
static atomic_ullong budget_waits;

/*
 * Pool buffers are whole mappings of their own: freed, they go straight
 * back to the kernel (a heap would keep them resident), and the pool
 * reuses them while busy, so mapping them costs nothing per transfer.
 */
static unsigned char *
map_buffer(void)
{
	/* cppcheck-suppress invalidFunctionArg ; MAP_ANONYMOUS takes fd -1, see mmap(2) */
	void *p = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	return p;
}

static void
count_used(size_t add, size_t sub)
{
	if (add > 0)
		atomic_fetch_add_explicit(&used_bytes, add, memory_order_relaxed);
	if (sub > 0)
		atomic_fetch_sub_explicit(&used_bytes, sub, memory_order_relaxed);
}

/* Storage b does not keep: a pool buffer goes back to the pool (or the kernel). */
static void
drop_storage(struct bufpool *pool, unsigned char *p, bool pooled, size_t cap)
{
	if (p == NULL)
		return;
	count_used(0, pooled ? BUF_SIZE : cap);
	if (!pooled) {
		free(p);
	} else if (pool->nspare < BUF_POOL_KEEP) {
		pool->spare[pool->nspare++] = p;
		atomic_fetch_add_explicit(&spare_bytes, BUF_SIZE, memory_order_relaxed);
		if (pool->nspare == 1 && pool->on_spare != NULL)
			pool->on_spare(pool->arg);
	} else {
		munmap(p, BUF_SIZE);
	}
}

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
	} else if ((b->p = map_buffer()) == NULL) {
		return -1;
	}
	pool->takes++;
	count_used(BUF_SIZE, 0);
	b->off = b->len = 0;
	b->cap = BUF_SIZE;
	b->pooled = true;
	return 0;
}

bool
buf_may_read(void)
{
	if (atomic_load_explicit(&used_bytes, memory_order_relaxed) < atomic_load_explicit(&budget, memory_order_relaxed))
		return true;
	atomic_fetch_add_explicit(&budget_waits, 1, memory_order_relaxed);
	return false;
}

void
buf_set_budget(size_t bytes)
{
	atomic_store(&budget, bytes);
}

size_t
buf_used_bytes(void)
{
	return atomic_load_explicit(&used_bytes, memory_order_relaxed);
}

unsigned long long
buf_budget_waits(void)
{
	return atomic_load_explicit(&budget_waits, memory_order_relaxed);
}

int
buf_resize_private(struct bufpool *pool, struct buf *b, size_t cap)
{
	unsigned char *p;

	if (b->pooled || b->p == NULL) {
		if ((p = malloc(cap)) == NULL)
			return -1;
		if (b->p != NULL)
			memcpy(p, b->p + b->off, b->len - b->off);
	} else if ((p = realloc(b->p, cap)) == NULL) {
		return -1;
	} else {
		memmove(p, p + b->off, b->len - b->off);
		count_used(cap, b->cap);
		b->len -= b->off;
		b->off = 0;
		b->p = p;
		b->cap = cap;
		return 0;
	}
	size_t len = b->len - b->off;
	drop_storage(pool, b->p, b->pooled, b->cap);
	count_used(cap, 0);
	*b = (struct buf){ .p = p, .len = len, .cap = cap };
	return 0;
}

void
buf_release(struct bufpool *pool, struct buf *b)
{
	drop_storage(pool, b->p, b->pooled, b->cap);
	*b = (struct buf){ 0 };
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
		unsigned char *p = malloc(cap);
		if (p == NULL)
			return -1;
		memcpy(p, b->p, b->len);
		drop_storage(pool, b->p, b->pooled, b->cap);
		count_used(cap, 0);
		b->p = p;
		b->cap = cap;
		b->pooled = false;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

int
buf_send(struct bufpool *pool, struct buf *b, int fd, bool *writable)
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
	buf_release(pool, b);
	return 0;
}

void
bufpool_clear(struct bufpool *pool)
{
	while (pool->nspare > 0) {
		munmap(pool->spare[--pool->nspare], BUF_SIZE);
		atomic_fetch_sub_explicit(&spare_bytes, BUF_SIZE, memory_order_relaxed);
	}
}

void
relay_io_release(struct relay_io *io)
{
	buf_release(io->pool, &io->rx);
	buf_release(io->pool, &io->tx);
}
