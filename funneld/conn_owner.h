/*
 * What a connection needs from the worker that owns it.  The worker keeps
 * the list of its connections; a connection tells it through closed() that
 * it has closed, and the worker frees it (conn_free) once the callbacks
 * that closed it have returned.
 */
#ifndef FUNNELD_CONN_OWNER_H
#define FUNNELD_CONN_OWNER_H

#include "buf.h"
#include "slab.h"

struct conn;
struct event_base;

struct conn_owner {
	unsigned id;                    /* the worker's number, for logs */
	struct event_base *base;
	struct bufpool pool;            /* data path buffers of its connections */
	struct slab slab;               /* its connections' structs */
	unsigned char *scratch;         /* CONN_SCRATCH bytes for input that is thrown away */
	void (*closed)(struct conn_owner *o, struct conn *c);
};

#define CONN_SCRATCH (16 * 1024 + 512)

#endif
