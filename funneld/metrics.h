/* Counters for GET /metrics (Prometheus text format). */
#ifndef FUNNELD_METRICS_H
#define FUNNELD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* How a connection ended; the metric label and the log's result= value. */
enum conn_result {
	RESULT_OK,
	RESULT_REFUSED_400,
	RESULT_REFUSED_403,
	RESULT_REFUSED_404,
	RESULT_REFUSED_405,
	RESULT_REFUSED_408,
	RESULT_REFUSED_431,
	RESULT_REFUSED_502,
	RESULT_REFUSED_503,
	RESULT_HANDSHAKE_FAILED,
	RESULT_HANDSHAKE_TIMEOUT,
	RESULT_IDLE_TIMEOUT,
	RESULT_RELAY_ERROR,
	RESULT_BACKEND_ERROR,
	RESULT_SHUTDOWN,
	RESULT_COUNT
};

const char *conn_result_name(enum conn_result r);
enum conn_result conn_result_for_status(int status);

/* Per backend (by its section name), kept across reloads. */
struct backend_stats {
	char *name;
	atomic_ullong conns;
	atomic_ullong bytes_in, bytes_out;
	struct backend_stats *next;
};

struct backend_stats *metrics_backend(const char *name);        /* find or create */

void metrics_conn_end(enum conn_result r, const char *hs_reason, struct backend_stats *b,
    uint64_t bytes_in, uint64_t bytes_out);

/* Render the whole text exposition into a malloc'd string. */
char *metrics_render(unsigned conns_open, size_t *len);

/* Serve GET /metrics on "unix:/path" or host:port with evhttp on base. */
int metrics_listen(struct event_base *base, const char *where, char *err, size_t errlen);
void metrics_close(void);

#endif
