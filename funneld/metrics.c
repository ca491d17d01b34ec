/* Counters and GET /metrics in the Prometheus text format (evhttp). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "buf.h"
#include "clients.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

#define METRICS_HEAD_MAX 8192

static atomic_ullong results[RESULT_COUNT];
static atomic_ullong hs_failures[HS_FAIL_COUNT];
static atomic_ullong refusals[REFUSAL_COUNT];
static atomic_ullong by_listener[2][CLIENT_CLASSES];
static atomic_ullong total_bytes_in, total_bytes_out;

static pthread_mutex_t backends_lock = PTHREAD_MUTEX_INITIALIZER;
static struct backend_stats *backends;

static struct evhttp *http;
static struct evconnlistener *listener;
static struct event *accept_pause_ev;   /* re-enables the listener after EMFILE */
static char *metrics_path;              /* unix socket to remove at exit */

struct backend_stats *
metrics_backend(const char *name)
{
	struct backend_stats *b;

	pthread_mutex_lock(&backends_lock);
	for (b = backends; b != NULL; b = b->next)
		if (strcmp(b->name, name) == 0)
			goto out;
	if ((b = calloc(1, sizeof(*b))) == NULL || (b->name = strdup(name)) == NULL) {
		free(b);
		b = NULL;
		goto out;
	}
	b->next = backends;
	backends = b;
out:
	pthread_mutex_unlock(&backends_lock);
	return b;
}

void
metrics_conn_end(enum conn_result r, enum hs_failure hs, struct backend_stats *b, uint64_t in, uint64_t out)
{
	atomic_fetch_add_explicit(&results[r], 1, memory_order_relaxed);
	if (hs != HS_FAIL_NONE && (unsigned)hs < HS_FAIL_COUNT)
		atomic_fetch_add_explicit(&hs_failures[hs], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&total_bytes_in, in, memory_order_relaxed);
	atomic_fetch_add_explicit(&total_bytes_out, out, memory_order_relaxed);
	if (b != NULL) {
		atomic_fetch_add_explicit(&b->conns, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&b->bytes_in, in, memory_order_relaxed);
		atomic_fetch_add_explicit(&b->bytes_out, out, memory_order_relaxed);
	}
}

void
metrics_listener_conn(bool tls_listener, enum client_class cls)
{
	if ((unsigned)cls < CLIENT_CLASSES)
		atomic_fetch_add_explicit(&by_listener[tls_listener][cls], 1, memory_order_relaxed);
}

void
metrics_refusal(enum refusal r)
{
	if ((unsigned)r < REFUSAL_COUNT)
		atomic_fetch_add_explicit(&refusals[r], 1, memory_order_relaxed);
}

char *
metrics_render(unsigned conns_open, size_t *lenp)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		return NULL;
	fprintf(f, "# HELP funneld_connections_open Relay connections currently open.\n"
	    "# TYPE funneld_connections_open gauge\nfunneld_connections_open %u\n", conns_open);
	fprintf(f, "# HELP funneld_buffer_pool_bytes Memory in spare data buffers, kept for reuse while busy.\n"
	    "# TYPE funneld_buffer_pool_bytes gauge\nfunneld_buffer_pool_bytes %zu\n", bufpool_spare_bytes());
	fprintf(f, "# HELP funneld_buffer_bytes Memory in data buffers held by connections (max_buffer_memory bounds it).\n"
	    "# TYPE funneld_buffer_bytes gauge\nfunneld_buffer_bytes %zu\n", buf_used_bytes());
	fprintf(f, "# HELP funneld_buffer_budget_waits_total Reads put off because the buffers were at max_buffer_memory.\n"
	    "# TYPE funneld_buffer_budget_waits_total counter\nfunneld_buffer_budget_waits_total %llu\n",
	    buf_budget_waits());
	fprintf(f, "# HELP funneld_connections_total Relay connections ended, by how they ended.\n"
	    "# TYPE funneld_connections_total counter\n");
	for (int r = 0; r < RESULT_COUNT; r++)
		fprintf(f, "funneld_connections_total{result=\"%s\"} %llu\n", conn_result_name((enum conn_result)r),
		    (unsigned long long)atomic_load(&results[r]));
	fprintf(f, "# HELP funneld_handshake_failures_total TLS handshakes that failed, by reason.\n"
	    "# TYPE funneld_handshake_failures_total counter\n");
	for (int i = HS_FAIL_NONE + 1; i < HS_FAIL_COUNT; i++)
		fprintf(f, "funneld_handshake_failures_total{reason=\"%s\"} %llu\n", hs_failure_name((enum hs_failure)i),
		    (unsigned long long)atomic_load(&hs_failures[i]));
	fprintf(f, "# HELP funneld_listener_connections_total Connections ended, by the kind of listener that "
	    "served them and whether the client is a tailnet address.\n"
	    "# TYPE funneld_listener_connections_total counter\n");
	for (int l = 0; l < 2; l++)
		for (int k = 0; k < CLIENT_CLASSES; k++)
			fprintf(f, "funneld_listener_connections_total{listener=\"%s\",client=\"%s\"} %llu\n",
			    l ? "tls" : "ingress", k == CLIENT_CLASS_TAILNET ? "tailnet" : k == CLIENT_CLASS_INTERNET ?
			    "internet" : "unknown", (unsigned long long)atomic_load(&by_listener[l][k]));
	fprintf(f, "# HELP funneld_refusals_total Connections refused by a limit, by which one.\n"
	    "# TYPE funneld_refusals_total counter\n");
	for (int i = 0; i < REFUSAL_COUNT; i++)
		fprintf(f, "funneld_refusals_total{limit=\"%s\"} %llu\n", refusal_name((enum refusal)i),
		    (unsigned long long)atomic_load(&refusals[i]));
	if (server.clients != NULL) {
		struct clients_stats st;
		clients_stats(server.clients, &st);
		fprintf(f, "# HELP funneld_client_table_entries Public clients the [clients] table tracks (of its capacity).\n"
		    "# TYPE funneld_client_table_entries gauge\nfunneld_client_table_entries %zu\n"
		    "# HELP funneld_client_table_capacity Entries the [clients] table has.\n"
		    "# TYPE funneld_client_table_capacity gauge\nfunneld_client_table_capacity %zu\n"
		    "# HELP funneld_client_table_evictions_total Idle clients replaced by new ones.\n"
		    "# TYPE funneld_client_table_evictions_total counter\nfunneld_client_table_evictions_total %llu\n",
		    st.entries, st.capacity, (unsigned long long)st.evictions);
	}
	fprintf(f, "# HELP funneld_bytes_in_total Decrypted bytes from clients to backends.\n"
	    "# TYPE funneld_bytes_in_total counter\nfunneld_bytes_in_total %llu\n",
	    (unsigned long long)atomic_load(&total_bytes_in));
	fprintf(f, "# HELP funneld_bytes_out_total Bytes from backends to clients, before encryption.\n"
	    "# TYPE funneld_bytes_out_total counter\nfunneld_bytes_out_total %llu\n",
	    (unsigned long long)atomic_load(&total_bytes_out));
	fprintf(f, "# HELP funneld_backend_connections_total Connections routed to each backend (connected, 101 sent).\n"
	    "# TYPE funneld_backend_connections_total counter\n");
	pthread_mutex_lock(&backends_lock);
	for (struct backend_stats *b = backends; b != NULL; b = b->next)
		fprintf(f, "funneld_backend_connections_total{backend=\"%s\"} %llu\n", b->name,
		    (unsigned long long)atomic_load(&b->conns));
	fprintf(f, "# TYPE funneld_backend_bytes_in_total counter\n");
	for (struct backend_stats *b = backends; b != NULL; b = b->next)
		fprintf(f, "funneld_backend_bytes_in_total{backend=\"%s\"} %llu\n", b->name,
		    (unsigned long long)atomic_load(&b->bytes_in));
	fprintf(f, "# TYPE funneld_backend_bytes_out_total counter\n");
	for (struct backend_stats *b = backends; b != NULL; b = b->next)
		fprintf(f, "funneld_backend_bytes_out_total{backend=\"%s\"} %llu\n", b->name,
		    (unsigned long long)atomic_load(&b->bytes_out));
	pthread_mutex_unlock(&backends_lock);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*lenp = len;
	return buf;
}

static void
on_metrics(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out;
	size_t len;
	char *text;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		/* evhttp_send_error() would drop the Allow header. */
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
		if ((out = evbuffer_new()) != NULL)
			evbuffer_add_printf(out, "405 Method Not Allowed\n");
		evhttp_send_reply(req, 405, "Method Not Allowed", out);
		if (out != NULL)
			evbuffer_free(out);
		return;
	}
	if ((text = metrics_render(atomic_load(&server.conns_open), &len)) == NULL ||
	    (out = evbuffer_new()) == NULL) {
		free(text);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add(out, text, len);
	free(text);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void
on_other(struct evhttp_request *req, void *arg)
{
	evhttp_send_error(req, 404, NULL);
}

static void
metrics_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	if (listener != NULL)
		evconnlistener_enable(listener);
}

/*
 * evconnlistener keeps a listener enabled after an accept() error; out of
 * descriptors, the pending connection stays in the backlog and the socket
 * stays readable, so it would spin (and libevent would warn each time).
 * Pause accepting for a moment instead, as the workers do.
 */
static void
metrics_accept_error(struct evconnlistener *l, void *arg)
{
	static time_t last_warning;
	int err = EVUTIL_SOCKET_ERROR();
	time_t now = time(NULL);

	if (last_warning != now) {
		last_warning = now;
		log_warnx("metrics: accept: %s", strerror(err));
	}
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		struct timeval tv = { 0, 100 * 1000 };
		evconnlistener_disable(l);
		event_add(accept_pause_ev, &tv);
	}
}

int
metrics_listen(struct event_base *base, const char *where, char *err, size_t errlen)
{
	struct listen_addr la;
	int fd = -1;

	if (addr_parse_listen(where, &la) != 0) {
		snprintf(err, errlen, "metrics: bad address \"%s\"", where);
		return -1;
	}
	if ((http = evhttp_new(base)) == NULL ||
	    (accept_pause_ev = evtimer_new(base, metrics_accept_resume, NULL)) == NULL)
		goto fail;
	/* Let every method reach on_metrics, which answers 405 with Allow. */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	    EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_cb(http, "/metrics", on_metrics, NULL);
	evhttp_set_gencb(http, on_other, NULL);
	evhttp_set_timeout(http, 10);
	/* A scrape is a small GET: a larger head, or any body, is refused (413)
	 * before it is read into memory. */
	evhttp_set_max_headers_size(http, METRICS_HEAD_MAX);
	evhttp_set_max_body_size(http, 0);
	if (la.kind == LISTEN_UNIX) {
		const char *path = ((struct sockaddr_un *)&la.ss)->sun_path;
		unlink(path);
		if ((metrics_path = strdup(path)) == NULL)
			goto fail;
	}
	if ((fd = socket(la.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		goto fail;
	int one = 1;
	if (la.kind == LISTEN_TCP)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&la.ss, la.sslen) != 0 || listen(fd, 64) != 0)
		goto fail;
	/* The service's UMask=0077 would leave it to root alone: let the group scrape. */
	if (metrics_path != NULL && chmod(metrics_path, 0660) != 0)
		goto fail;
	struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(http, fd);
	if (bound == NULL)
		goto fail;
	listener = evhttp_bound_socket_get_listener(bound);
	evconnlistener_set_error_cb(listener, metrics_accept_error);
	return 0;
fail:
	snprintf(err, errlen, "metrics %s: %s", where, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

void
metrics_close(void)
{
	if (accept_pause_ev != NULL) {
		event_free(accept_pause_ev);
		accept_pause_ev = NULL;
	}
	listener = NULL;
	if (http != NULL) {
		evhttp_free(http);
		http = NULL;
	}
	if (metrics_path != NULL) {
		unlink(metrics_path);
		free(metrics_path);
		metrics_path = NULL;
	}
}
