/* Fixed-size objects in chunks of their own; see slab.h. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "slab.h"

#define CHUNK_SIZE (64 * 1024)
#define ALIGN 16

struct slab_chunk {
	struct slab_chunk *next, *prev;         /* in s->partial */
	void *free;                             /* free slots, linked through their first word */
	size_t nfree;
};

/* Each slot starts with its chunk, so that a free finds it. */
struct slot {
	struct slab_chunk *chunk;
	uint64_t pad;                           /* keeps the object ALIGN-aligned */
};

static size_t
round_up(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

void
slab_init(struct slab *s, size_t size)
{
	memset(s, 0, sizeof(*s));
	s->size = round_up(sizeof(struct slot) + size, ALIGN);
	s->per_chunk = (CHUNK_SIZE - round_up(sizeof(struct slab_chunk), ALIGN)) / s->size;
}

static void
unlink_partial(struct slab *s, struct slab_chunk *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->partial = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
}

static void
link_partial(struct slab *s, struct slab_chunk *c)
{
	c->prev = NULL;
	c->next = s->partial;
	if (s->partial != NULL)
		s->partial->prev = c;
	s->partial = c;
}

static struct slab_chunk *
new_chunk(struct slab *s)
{
	struct slab_chunk *c;
	unsigned char *p;

	if (s->per_chunk == 0)
		return NULL;
	/* cppcheck-suppress invalidFunctionArg ; MAP_ANONYMOUS takes fd -1, see mmap(2) */
	if ((p = mmap(NULL, CHUNK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) == MAP_FAILED)
		return NULL;
	c = (struct slab_chunk *)(void *)p;
	p += round_up(sizeof(*c), ALIGN);
	for (size_t i = s->per_chunk; i-- > 0;) {
		void **slot = (void **)(void *)(p + i * s->size);
		*slot = c->free;
		c->free = slot;
	}
	c->nfree = s->per_chunk;
	s->chunks++;
	return c;
}

void *
slab_alloc(struct slab *s)
{
	struct slab_chunk *c = s->partial;
	struct slot *slot;

	if (c == NULL) {
		if ((c = s->spare) != NULL)
			s->spare = NULL;
		else if ((c = new_chunk(s)) == NULL)
			return NULL;
		link_partial(s, c);
	}
	slot = c->free;
	c->free = *(void **)c->free;
	if (--c->nfree == 0)
		unlink_partial(s, c);
	memset(slot, 0, s->size);
	slot->chunk = c;
	s->in_use++;
	return slot + 1;
}

void
slab_free(struct slab *s, void *p)
{
	struct slot *slot;
	struct slab_chunk *c;

	if (p == NULL)
		return;
	slot = (struct slot *)p - 1;
	c = slot->chunk;
	*(void **)(void *)slot = c->free;
	c->free = slot;
	if (c->nfree++ == 0)
		link_partial(s, c);
	s->in_use--;
	if (c->nfree < s->per_chunk)
		return;
	/* Empty: kept as the spare, or given back. */
	unlink_partial(s, c);
	if (s->spare == NULL) {
		s->spare = c;
		return;
	}
	munmap(c, CHUNK_SIZE);
	s->chunks--;
}

void
slab_clear(struct slab *s)
{
	if (s->spare != NULL) {
		munmap(s->spare, CHUNK_SIZE);
		s->spare = NULL;
		s->chunks--;
	}
}
