/*
 * libFuzzer target for the whole pre-TLS path of a relay connection:
 * worker_adopt() → conn_new() → read_head() (peek, trickle, consume) → ingress_parse() →
 * backend_route() → max_connections → backend connect → 101 or a refusal →
 * linger, and the start of the TLS handshake behind the 101.
 *
 * At the first call it writes an embedded test-only EC P-256 certificate and
 * key and a configuration into a temp dir, installs the snapshot, and sets up
 * a struct worker with its own event_base, driven here with EVLOOP_NONBLOCK
 * (no thread).  The backend is a Unix listener owned by this file.
 *
 * Input:  flags(1) split(3) then the bytes the relay sends.
 *   flags bit 0: arrive on a TCP listener (the socketpair peer is not in
 *                `allow`: the 403 row) instead of a unix: one;
 *   flags bit 1: max_connections already reached (the 503 row).
 *   split:       up to three cut points (b * len / 255) for the payload;
 *                each piece is written, then the loop runs until funneld
 *                took it, so the head trickles in.
 * Then the write side is shut down (funneld sees EOF: no timeout is waited
 * for) and the loop runs until the connection is gone.
 *
 * Checks (abort on violation, in the libFuzzer and the replay build):
 *  - the connection ends by itself after EOF, within a bounded number of
 *    loop passes, and leaves server.conns_open / conns_active as it found them;
 *  - the answer is exactly "HTTP/1.1 101 Switching Protocols\r\n\r\n"
 *    (followed only by TLS records) when the input starts with a well-formed
 *    head for a configured, live target on an allowed peer below the limit,
 *    and never otherwise;
 *  - otherwise it is empty (head never ended, or a malformed line still open
 *    at EOF) or one well-formed refusal: a status from DESIGN.md's table, the
 *    one ingress_parse() / routing give for the whole input, Content-Length
 *    matching the body, Connection: close, Allow: POST iff 405, and nothing after;
 *  - the backend is dialled only for a 101, and receives zero bytes (no TLS
 *    handshake can complete here).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "backend.h"
#include "conn.h"
#include "ingress.h"
#include "listener.h"
#include "log.h"
#include "server.h"
#include "worker.h"
#include "fuzz.h"

#define HEADER_BYTES 4
#define PASSES_PER_PIECE 32     /* loop passes to let funneld take one piece */
#define PASSES_AFTER_EOF 64     /* a connection must be gone after this many */
#define RESPONSE_MAX 65536

static const char response_101[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";

/* Test-only key and self-signed certificate for node.example.ts.net and
 * *.example.ts.net (EC P-256, valid until 2126), made with openssl req -x509. */
static const char test_key[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWWDMLTit8XebSPEm\n"
    "49Aq2gqEboP4EN1NhZEDE4qgRKahRANCAAR/33POj9ClocHAvWD5MkaXIPCsa+6h\n"
    "Kyf5RR6IiRp3FU+G76H5uNgzs5lbJfqkw5de0N+kogTOZW7PVFiTFV5X\n"
    "-----END PRIVATE KEY-----\n";
static const char test_cert[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBxzCCAW2gAwIBAgIUdKFKvLDaWPKwor4fQ2BnltE7AYYwCgYIKoZIzj0EAwIw\n"
    "HjEcMBoGA1UEAwwTbm9kZS5leGFtcGxlLnRzLm5ldDAgFw0yNjExMjUxNjMzMTNa\n"
    "GA8yMTI2MTEwMTE2MzMxM1owHjEcMBoGA1UEAwwTbm9kZS5leGFtcGxlLnRzLm5l\n"
    "dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABH/fc86P0KWhwcC9YPkyRpcg8Kxr\n"
    "7qErJ/lFHoiJGncVT4bvofm42DOzmVsl+qTDl17Q36SiBM5lbs9UWJMVXlejgYYw\n"
    "gYMwHQYDVR0OBBYEFHSk0tIa9n3bF7f2AQsHTKaP+JlwMB8GA1UdIwQYMBaAFHSk\n"
    "0tIa9n3bF7f2AQsHTKaP+JlwMA8GA1UdEwEB/wQFMAMBAf8wMAYDVR0RBCkwJ4IT\n"
    "bm9kZS5leGFtcGxlLnRzLm5ldIIQKi5leGFtcGxlLnRzLm5ldDAKBggqhkjOPQQD\n"
    "AgNIADBFAiAjP84otPUuEFxxlltZi0L6vgqkpywAmMET9z075LCN/AIhAPaWFzcR\n"
    "Taxo+Js6boUnWGrDXvEH89Mxp4BAo3BX8O3L\n"
    "-----END CERTIFICATE-----\n";

static char tmpdir[64];
static char backend_path[128], dead_path[128];
static int backend_fd = -1;
static struct worker worker;
static struct listener listeners[2];    /* [0] unix: (always allowed), [1] TCP */
static unsigned max_connections;
static unsigned char *response;

static void
write_file(const char *dir, const char *name, const char *text, char *path, size_t cap)
{
	FILE *f;

	CHECK((size_t)snprintf(path, cap, "%s/%s", dir, name) < cap);
	CHECK((f = fopen(path, "w")) != NULL);
	CHECK(fputs(text, f) >= 0);
	CHECK(fclose(f) == 0);
}

static void
cleanup(void)
{
	if (backend_fd >= 0)
		close(backend_fd);
	unlink(backend_path);
	rmdir(tmpdir);
}

static void
init(void)
{
	char cert[128], key[128], conf[128], text[1024], err[CONFIG_ERR_MAX];
	const char *t = getenv("TMPDIR");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct snapshot *s;

	log_set_level(getenv("FUZZ_CONN_VERBOSE") ? LOG_LVL_DEBUG : LOG_LVL_ERR);
	CHECK((size_t)snprintf(tmpdir, sizeof(tmpdir), "%s/fuzz-conn.XXXXXX",
	    t != NULL && *t == '/' && strlen(t) < 32 ? t : "/tmp") < sizeof(tmpdir));
	CHECK(mkdtemp(tmpdir) != NULL);
	CHECK(atexit(cleanup) == 0);

	/* The backend: a Unix listener; what funneld dials stays in its backlog. */
	CHECK((size_t)snprintf(backend_path, sizeof(backend_path), "%s/backend.sock", tmpdir) <
	    sizeof(backend_path));
	CHECK((size_t)snprintf(dead_path, sizeof(dead_path), "%s/absent.sock", tmpdir) < sizeof(dead_path));
	CHECK(strlen(backend_path) < sizeof(sun.sun_path));
	strcpy(sun.sun_path, backend_path);
	CHECK((backend_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) >= 0);
	CHECK(bind(backend_fd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	CHECK(listen(backend_fd, 64) == 0);

	write_file(tmpdir, "cert.pem", test_cert, cert, sizeof(cert));
	write_file(tmpdir, "key.pem", test_key, key, sizeof(key));
	max_connections = 4;
	CHECK((size_t)snprintf(text, sizeof(text),
	    "[funneld]\n"
	    "listen = unix:%s/unused.sock\n"
	    "max_connections = %u\n"
	    "header_timeout = 1s\n"
	    "handshake_timeout = 1s\n"
	    "idle_timeout = 1s\n"
	    "log_level = err\n"
	    "[tls]\n"
	    "cert = %s\n"
	    "key = %s\n"
	    "[backend node.example.ts.net:443]\n"
	    "socket = %s\n"
	    "[backend dead.example.ts.net:443]\n"
	    "socket = %s\n"
	    "[backend *:8443]\n"
	    "socket = %s\n",
	    tmpdir, max_connections, cert, key, backend_path, dead_path, backend_path) < sizeof(text));
	write_file(tmpdir, "funneld.conf", text, conf, sizeof(conf));
	if ((s = snapshot_load(conf, err, sizeof(err))) == NULL) {
		fprintf(stderr, "fuzz_conn: %s\n", err);
		abort();
	}
	CHECK(s->cfg->max_connections == max_connections);
	snapshot_install(s);
	/* Loaded: the files are not needed any more. */
	unlink(conf);
	unlink(cert);
	unlink(key);

	listeners[0] = (struct listener){ .fd = -1, .kind = LISTEN_UNIX, .text = "unix:fuzz" };
	listeners[1] = (struct listener){ .fd = -1, .kind = LISTEN_TCP, .text = "fuzz:443" };
	server.listeners = listeners;
	server.nlisteners = 2;
	server.workers = &worker;
	server.nworkers = 1;
	atomic_store(&server.phase, PHASE_RUNNING);

	/* As worker_start(), minus the thread. */
	CHECK(worker_init(&worker) == 0);
	CHECK((response = malloc(RESPONSE_MAX)) != NULL);
}

static void
run_once(void)
{
	CHECK(event_base_loop(worker.owner.base, EVLOOP_NONBLOCK) >= 0);
}

/* Bytes waiting in the socket funneld reads (only while it still owns it). */
static int
unread(int fd)
{
	int n = 0;

	CHECK(ioctl(fd, FIONREAD, &n) == 0);
	return n;
}

/* Write one piece, letting funneld read as it goes. */
static void
send_piece(int fd, int peer, const uint8_t *p, size_t len)
{
	int passes = 0;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				return;         /* funneld closed: the rest goes nowhere */
			n = 0;
			CHECK(++passes < 1000);
		}
		p += n;
		len -= (size_t)n;
		run_once();
		if (worker.nconns == 0)
			return;
	}
	for (passes = 0; passes < PASSES_PER_PIECE && worker.nconns > 0 && unread(peer) > 0; passes++)
		run_once();
	if (worker.nconns > 0)
		run_once();
}

/* What funneld should answer, from the whole input. */
struct expect {
	enum ingress_result r;
	int status;             /* 101 for a hijack, else the refusal */
};

static struct expect
oracle(const uint8_t *p, size_t len, bool allowed, bool saturated)
{
	struct expect e = { INGRESS_INCOMPLETE, 0 };
	struct ingress_req req;
	struct snapshot *s;
	const struct backend_conf *b;

	e.r = ingress_parse((const char *)p, len, allowed, &req);
	if (e.r == INGRESS_INCOMPLETE)
		return e;
	if (req.status != 0) {
		e.status = req.status;
		return e;
	}
	s = snapshot_acquire();
	b = backend_route(s->cfg, req.target_host, req.target_port);
	if (b == NULL)
		e.status = 404;
	else if (saturated)
		e.status = 503;
	else if (strcmp(b->socket, backend_path) != 0)
		e.status = 502;
	else
		e.status = 101;
	snapshot_release(s);
	return e;
}

static size_t
read_response(int fd)
{
	size_t len = 0;

	for (;;) {
		ssize_t n = recv(fd, response + len, RESPONSE_MAX - len, 0);
		if (n > 0) {
			len += (size_t)n;
			CHECK(len < RESPONSE_MAX);
			continue;
		}
		/* After EOF, or a reset when funneld closed with input unread. */
		CHECK(n == 0 || errno == ECONNRESET);
		return len;
	}
}

/* One refusal, well formed, with the expected status and nothing after. */
static void
check_refusal(const unsigned char *r, size_t len, int want)
{
	char line[64];
	const char *text = http_status_text(want);
	const unsigned char *end, *cl;
	unsigned long clen;
	int n;

	n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", want, text);
	CHECK(n > 0 && (size_t)n < sizeof(line));
	if (len < (size_t)n || memcmp(r, line, (size_t)n) != 0) {
		fprintf(stderr, "expected \"HTTP/1.1 %d\", got \"%.*s\"\n", want,
		    (int)(len < 40 ? len : 40), (const char *)r);
		CHECK(!"wrong status line");
	}
	CHECK(memchr(r, '\0', len) == NULL);
	CHECK((end = memmem(r, len, "\r\n\r\n", 4)) != NULL);
	end += 4;
	CHECK(memmem(r, (size_t)(end - r), "\r\nConnection: close\r\n", 21) != NULL);
	CHECK((memmem(r, (size_t)(end - r), "\r\nAllow: POST\r\n", 15) != NULL) == (want == 405));
	CHECK((cl = memmem(r, (size_t)(end - r), "\r\nContent-Length: ", 18)) != NULL);
	clen = strtoul((const char *)cl + 18, NULL, 10);
	CHECK(clen == (size_t)(r + len - end));
}

/* Accept what funneld dialled; returns how many, and the bytes they carried. */
static unsigned
drain_backend(size_t *bytes)
{
	unsigned conns = 0;
	int c;

	*bytes = 0;
	while ((c = accept4(backend_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		unsigned char buf[4096];
		ssize_t n;

		conns++;
		while ((n = recv(c, buf, sizeof(buf), 0)) > 0)
			*bytes += (size_t)n;
		/* funneld closed its end before we looked: EOF, never EAGAIN. */
		CHECK(n == 0 || errno == ECONNRESET);
		close(c);
	}
	CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
	return conns;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	const uint8_t *p;
	size_t len, cut[5], k, rlen, bbytes;
	bool tcp, saturated;
	unsigned open_before, active_before, dialled;
	int fds[2], passes;
	struct expect want;

	if (!ready) {
		init();
		ready = true;
	}
	if (size < HEADER_BYTES)
		return 0;
	tcp = data[0] & 1;
	saturated = data[0] & 2;
	p = data + HEADER_BYTES;
	len = size - HEADER_BYTES;

	/* Cut points, sorted: pieces [cut[i], cut[i+1]). */
	cut[0] = 0;
	for (k = 1; k <= 3; k++)
		cut[k] = (size_t)data[k] * len / 255;
	cut[4] = len;
	for (size_t i = 1; i < 4; i++)
		for (size_t j = i + 1; j < 4; j++)
			if (cut[j] < cut[i]) {
				size_t t = cut[i];
				cut[i] = cut[j];
				cut[j] = t;
			}

	if (saturated)
		atomic_store(&server.conns_active, max_connections);
	open_before = atomic_load(&server.conns_open);
	active_before = atomic_load(&server.conns_active);

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
	worker_adopt(&worker, fds[1], &listeners[tcp ? 1 : 0], NULL);  /* funneld owns fds[1] now */
	CHECK(worker.nconns == 1);
	want = oracle(p, len, !tcp, saturated);

	for (k = 0; k < 4 && worker.nconns > 0; k++)
		if (cut[k + 1] > cut[k])
			send_piece(fds[0], fds[1], p + cut[k], cut[k + 1] - cut[k]);
	shutdown(fds[0], SHUT_WR);
	for (passes = 0; worker.nconns > 0 && passes < PASSES_AFTER_EOF; passes++)
		run_once();
	if (worker.nconns > 0) {
		/* Still open after the relay's EOF: it would sit until a timeout. */
		fprintf(stderr, "connection still open %d loop passes after EOF\n", passes);
		CHECK(!"connection outlived the relay's EOF");
	}
	CHECK(atomic_load(&server.conns_open) == open_before);
	CHECK(atomic_load(&server.conns_active) == active_before);
	atomic_store(&server.conns_active, 0);

	rlen = read_response(fds[0]);
	close(fds[0]);
	dialled = drain_backend(&bbytes);
	CHECK(bbytes == 0);             /* no handshake completes: not one byte */

	if (rlen >= sizeof(response_101) - 1 && memcmp(response, response_101, sizeof(response_101) - 1) == 0) {
		CHECK(want.r == INGRESS_DONE && want.status == 101);
		CHECK(dialled == 1);
		/* Only TLS records after it: a handshake message or an alert. */
		if (rlen > sizeof(response_101) - 1) {
			unsigned char type = response[sizeof(response_101) - 1];
			CHECK(type == 0x15 || type == 0x16);
		}
		return 0;
	}
	CHECK(dialled == 0);
	CHECK(!(want.r == INGRESS_DONE && want.status == 101));
	if (want.r == INGRESS_INCOMPLETE) {
		CHECK(rlen == 0);       /* the head never ended: nothing to answer */
		return 0;
	}
	/* A malformed line still open at EOF may end the connection unanswered. */
	if (rlen == 0) {
		CHECK(want.status == 400);
		return 0;
	}
	check_refusal(response, rlen, want.status);
	return 0;
}
