/*
 * Fixed-size objects in memory of their own: a worker's connections.
 *
 * A connection's struct lives as long as the connection, while the heap
 * around it gets the small, long-lived pieces other code allocates as
 * connections come (libevent's slot per descriptor number, for one):
 * from the heap, a burst would leave each of those pinning a page after the
 * connections are gone.  Here connections take slots of 64 KiB chunks
 * mapped for them, and a chunk that empties goes back to the kernel (one
 * empty chunk is kept for the next burst).  One thread per slab.
 */
#ifndef FUNNELD_SLAB_H
#define FUNNELD_SLAB_H

#include <stddef.h>

struct slab_chunk;

struct slab {
	size_t size;                    /* of an object, rounded up */
	size_t per_chunk;
	struct slab_chunk *partial;     /* chunks with a free slot */
	struct slab_chunk *spare;       /* one empty chunk kept */
	size_t chunks, in_use;
};

void slab_init(struct slab *s, size_t size);
void *slab_alloc(struct slab *s);       /* zeroed, or NULL (errno) */
void slab_free(struct slab *s, void *p);
void slab_clear(struct slab *s);        /* when empty: give everything back */

#endif
