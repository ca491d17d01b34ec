/* Counters for GET /metrics (Prometheus text format). */
#ifndef FUNNELD_METRICS_H
#define FUNNELD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "result.h"

struct event_base;

/* Per backend (by its section name), kept across reloads. */
struct backend_stats {
	char *name;
	atomic_ullong conns;
	atomic_ullong bytes_in, bytes_out;
	struct backend_stats *next;
};

struct backend_stats *metrics_backend(const char *name);        /* find or create */

void metrics_conn_end(enum conn_result r, enum hs_failure hs, struct backend_stats *b,
    uint64_t bytes_in, uint64_t bytes_out);

/* Which listener served a connection, and what its client is. */
enum client_class { CLIENT_CLASS_INTERNET, CLIENT_CLASS_TAILNET, CLIENT_CLASS_UNKNOWN, CLIENT_CLASSES };
void metrics_listener_conn(bool tls_listener, enum client_class cls);

/* A connection refused by a limit (DESIGN §9, max_pending). */
void metrics_refusal(enum refusal r);

/* Render the whole text exposition into a malloc'd string. */
char *metrics_render(unsigned conns_open, size_t *len);

/* Serve GET /metrics on "unix:/path" or host:port with evhttp on base. */
int metrics_listen(struct event_base *base, const char *where, char *err, size_t errlen);
void metrics_close(void);

#endif
