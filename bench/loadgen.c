/*
 * bench/loadgen: the TLS load client of bench/run (OpenSSL, one epoll thread).
 *
 *   loadgen -m MODE (-a HOST:PORT | -U UNIX_PATH) [options]
 *
 * Modes (what one run measures; a result line "key=value ..." goes to stdout):
 *   hs      full handshakes/s: -c connections in flight, each a new TCP
 *           connection, no resumption; a handshake counts when the client
 *           has the server's Finished; the client then closes
 *   resume  resumed handshakes/s: one full handshake first saves the ticket,
 *           then every connection offers that same session
 *   req     HTTP/1.1 keep-alive GET /, -c connections, one request in flight each
 *   up      bulk client->backend on one connection (sink acks each MiB it got)
 *   down    bulk backend->client on one connection (source streams)
 *   lat     1-byte echo round trips on one connection: -n pings after 200 warm-ups
 *           (-U: the same through a plain Unix socket, no TLS; -o FILE: every
 *           round trip in microseconds, one per line)
 *   hold    open -n connections (-c at a time), handshake + one echo each,
 *           print "HELD n" (with partial=1 when the server would not take all
 *           of them), keep them until stdin closes
 *
 * Storm modes (tests/flood.py; -a and -f required): -c connections in flight,
 * at most -n of them in all (0: no limit), for at most -d seconds (or until
 * SIGTERM/SIGINT), each ended connection replaced at once.  Every connection's
 * outcome is counted (the status of a refusal, hs_ok, reset, eof, timeout,
 * ...), a "progress ..." line goes to stdout every second and one final
 * "mode=... key=value ..." line at the end.  Errors are counted, never fatal.
 *   flood   head + ClientHello in one write, 101, full handshake, close
 *   rst     head + ClientHello, then SO_LINGER {1,0} close (a reset): every
 *           other connection as soon as its bytes are sent, the others once
 *           the 101 arrived (the server's first flight then meets the reset)
 *   idle    hold -n connections open (-c connecting at a time) that send
 *           nothing (even ones) or a head cut short (odd ones); one the
 *           server closes is counted and opened again -R ms later
 * Their options:
 *   -i SRC  Tailscale-Ingress-Src (ip:port or [v6]:port; default 203.0.113.7:51234);
 *           given twice, connections alternate between the two
 *   -D N    N distinct sources: connection k uses the base -i plus (k/bases mod N),
 *           added to the IPv4 address, or to the /64 prefix of an IPv6 one
 *   -B A,B  bind each connection to these local IPv4 addresses in turn
 *   -T S    give up on a connection (timeout) after S seconds (flood, rst; default 10)
 *   -N      flood: head only, no ClientHello (a 101 is counted, then closed)
 *   -R MS   idle: reopen delay (default 1000)
 *   -r N    flood, rst: start at most N connections per second (paced evenly)
 *
 * With -f TARGET the client speaks to funneld as the Funnel relay does: the
 * "POST /v0/ingress" head and the ClientHello leave in ONE write, and the
 * "HTTP/1.1 101 Switching Protocols\r\n\r\n" answer is stripped before TLS.
 * Otherwise it is plain TLS.  Either way: TLS 1.2 only (-V 1.3: TLS 1.3 only),
 * ECDHE-ECDSA-AES128-GCM-SHA256 (TLS 1.3: TLS_AES_128_GCM_SHA256; -C: another
 * suite), group P-256 (-g: another; in TLS 1.3 the one key share), no
 * certificate verification, SNI funnel.bench.test (-s), session tickets
 * offered.  TLS 1.3 resumption: the first connection waits for the server's
 * NewSessionTicket, every later one offers it (psk_dhe_ke, OpenSSL's only
 * mode as a client: an ECDHE on every resumption, for every server alike).
 *
 * Timing: -w warm-up seconds, then a -d seconds window; only the window counts.
 * -P PID[,PID...]: also report those processes' CPU use over the window
 * (srv_cpu, in cores), so results can be read per server core-second.
 * -S CPU: also report that CPU's irq+softirq time over the window (si_cpu):
 * on loopback a send runs the receiver's packet processing in softirq context,
 * charged to no task.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define RBUF (256 * 1024)
#define REC 16384
#define MIB (1024.0 * 1024.0)

enum mode { M_HS, M_RESUME, M_REQ, M_UP, M_DOWN, M_LAT, M_HOLD, M_FLOOD, M_RST, M_IDLE };
#define STORM(m) ((m) == M_FLOOD || (m) == M_RST || (m) == M_IDLE)

static const char resp101[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
#define RESP101_LEN (sizeof(resp101) - 1)

/* Options. */
static enum mode mode;
static struct sockaddr_in addr;
static const char *unix_path;
static const char *target;              /* -f: funneld ingress target */
static const char *sni = "funnel.bench.test";
static int tls_version = TLS1_2_VERSION;        /* -V */
static const char *groups = "P-256";            /* -g */
static const char *suite;                       /* -C: OpenSSL name (1.2 cipher list or 1.3 ciphersuites) */
static int conc = 32;
static double dur = 5, warm = 1;
static long count = 5000;
static char *pids;
static int si_cpu = -1;
static const char *rtt_file;            /* -o: lat mode writes every round trip (us) here */                 /* -S: CPU whose irq+softirq time is the server's too */
/* Storm modes (-i, -D, -B, -T, -N, -R). */
static const char *src_text[2] = { "203.0.113.7:51234", NULL };
static struct sockaddr_storage src_base[2];
static int nsrc_base = 1;
static long distinct;
static struct in_addr bind_addrs[64];
static int nbind;
static double conn_timeout = 10;
static int no_hello;
static double reopen_ms = 1000;
static double max_rate;                 /* -r: new connections per second at most (0: no limit) */

static SSL_CTX *ctx;
static SSL_SESSION *saved;
static char preamble[512];
static size_t preamble_len;
static int ep;
static unsigned char rbuf[RBUF], wrec[REC];

struct conn {
	int fd;
	int connecting;
	SSL *ssl;
	BIO *rb, *wb;
	unsigned char *obuf;
	size_t olen, ooff, ocap;
	size_t m101;                    /* bytes of the 101 matched so far */
	int hs_done;
	int primer;                     /* resume: the connection that fetches the ticket */
	/* application state */
	char *hbuf;                     /* req: response bytes */
	size_t hlen, hcap;
	int held;
	double t0;
	int lat_waiting;
	/* storm modes */
	struct conn *prev, *next;       /* the live list (timeouts, the end) */
	int linked;
	int variant;                    /* rst: 0 reset after sending, 1 after the 101; idle: 1 partial head */
	int got101;
	unsigned char rhead[40];        /* the start of the server's answer */
	size_t rlen;
};

/* Results and run state. */
static double t_start, t_win0, t_win1;
static int window_open, window_closed;
static long done_ok, done_reused, done_full, errors, inflight, started;
static long held, dropped;
static char first_err[200];
static double *rtts;
static long nrtt, lat_sent;
static double up_t1, up_t2;
static long up_acks, up_k1 = -1, up_k2;
static double dn_t1, dn_t2;
static unsigned long long dn_bytes, dn_b1, dn_b2;
static int dn_started;
static long req_ready;
static double cli_cpu0, srv_cpu0, srv_cpu_used, cli_cpu_used, si0, si_used;
static int quit;

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "loadgen: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static void
note_err(const char *fmt, ...)
{
	va_list ap;
	errors++;
	if (first_err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(first_err, sizeof(first_err), fmt, ap);
	va_end(ap);
	for (char *p = first_err; *p; p++)
		if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '=')
			*p = '_';
}

static double
self_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Sum of utime+stime of the -P processes, in seconds. */
static double
server_cpu(void)
{
	double total = 0;
	long hz = sysconf(_SC_CLK_TCK);
	char *list, *tok, *save = NULL;

	if (pids == NULL)
		return 0;
	list = strdup(pids);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char path[64], line[4096];
		snprintf(path, sizeof(path), "/proc/%s/stat", tok);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(line, sizeof(line), f) != NULL) {
			char *p = strrchr(line, ')');
			unsigned long ut = 0, st = 0;
			/* after ") ": state(3) ... utime is field 14, stime 15 */
			if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
				total += (double)(ut + st) / (double)hz;
		}
		fclose(f);
	}
	free(list);
	return total;
}

/* irq + softirq seconds of CPU si_cpu (loopback packet processing runs there, uncharged to any task) */
static double
softirq_cpu(void)
{
	char line[512], want[16];
	double total = 0;
	FILE *f;

	if (si_cpu < 0 || (f = fopen("/proc/stat", "r")) == NULL)
		return 0;
	snprintf(want, sizeof(want), "cpu%d ", si_cpu);
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long long v[7];
		if (strncmp(line, want, strlen(want)) == 0 &&
		    sscanf(line + strlen(want), "%llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
		    &v[5], &v[6]) == 7)
			total = (double)(v[5] + v[6]) / (double)sysconf(_SC_CLK_TCK);
	}
	fclose(f);
	return total;
}

static void
window_begin(double t)
{
	window_open = 1;
	t_win0 = t;
	cli_cpu0 = self_cpu();
	srv_cpu0 = server_cpu();
	si0 = softirq_cpu();
}

static void
window_end(double t)
{
	window_closed = 1;
	t_win1 = t;
	cli_cpu_used = self_cpu() - cli_cpu0;
	srv_cpu_used = server_cpu() - srv_cpu0;
	si_used = softirq_cpu() - si0;
}

/* --- connections --- */

static void conn_pump(struct conn *c, unsigned events);
static void conn_new(void);

static struct conn *live;               /* storm modes: every open connection */

static void
conn_free(struct conn *c)
{
	if (c->linked) {
		if (c->prev)
			c->prev->next = c->next;
		else
			live = c->next;
		if (c->next)
			c->next->prev = c->prev;
	}
	if (c->fd >= 0)
		close(c->fd);
	if (c->ssl) {
		/* Without this, SSL_free marks the session not resumable. */
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(c->ssl);
	}
	free(c->obuf);
	free(c->hbuf);
	if (!c->held)
		inflight--;
	free(c);
}

static void
obuf_add(struct conn *c, const void *p, size_t n)
{
	if (c->olen + n > c->ocap) {
		if (c->ooff > 0) {
			memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
			c->olen -= c->ooff;
			c->ooff = 0;
		}
		if (c->olen + n > c->ocap) {
			size_t cap = c->ocap ? c->ocap : 4096;
			while (cap < c->olen + n)
				cap *= 2;
			if ((c->obuf = realloc(c->obuf, cap)) == NULL)
				die("out of memory");
			c->ocap = cap;
		}
	}
	if (p != NULL)
		memcpy(c->obuf + c->olen, p, n);
	c->olen += n;
}

/* Move what TLS produced into obuf. */
static void
drain_wbio(struct conn *c)
{
	size_t p;
	while (c->wb && (p = BIO_ctrl_pending(c->wb)) > 0) {
		obuf_add(c, NULL, p);           /* reserve */
		c->olen -= p;
		int n = BIO_read(c->wb, c->obuf + c->olen, (int)p);
		if (n <= 0)
			break;
		c->olen += (size_t)n;
	}
}

/* Returns 1 when everything left, 0 when the socket is full, -1 on error. */
static int
flush(struct conn *c)
{
	drain_wbio(c);
	while (c->ooff < c->olen) {
		ssize_t n = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			return -1;
		}
		c->ooff += (size_t)n;
	}
	c->ooff = c->olen = 0;
	return 1;
}

static void
app_write(struct conn *c, const void *p, size_t n)
{
	if (c->ssl == NULL) {
		obuf_add(c, p, n);
		return;
	}
	int r = SSL_write(c->ssl, p, (int)n);
	if (r != (int)n)
		die("SSL_write %d", SSL_get_error(c->ssl, r));
	drain_wbio(c);
}

static void
conn_new(void)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev;
	int one = 1;

	if (c == NULL)
		die("out of memory");
	inflight++;
	started++;
	c->primer = (mode == M_RESUME && saved == NULL);
	if (unix_path) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		strncpy(sun.sun_path, unix_path, sizeof(sun.sun_path) - 1);
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
			die("connect %s: %s", unix_path, strerror(errno));
	} else {
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->fd < 0)
			die("socket: %s", strerror(errno));
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS)
			die("connect: %s", strerror(errno));
		c->connecting = 1;
	}
	ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
	ev.data.ptr = c;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
		die("epoll_ctl: %s", strerror(errno));
	if (unix_path)
		conn_pump(c, EPOLLOUT);
}

/* A connection ended (ok or failed); the handshake modes replace it. */
static void
conn_end(struct conn *c, int failed, const char *why)
{
	double t = now();

	if (failed) {
		unsigned long e = ERR_peek_error();
		char eb[120] = "";
		if (e)
			ERR_error_string_n(e, eb, sizeof(eb));
		ERR_clear_error();
		if (mode == M_HOLD && c->held) {
			dropped++;
			held--;
			inflight++;     /* conn_free does not count a held one */
		} else {
			note_err("%s%s%s", why, eb[0] ? ":" : "", eb);
		}
	}
	conn_free(c);
	switch (mode) {
	case M_HS:
	case M_RESUME:
		if (!quit && (!window_closed && (!window_open || t < t_win1)))
			conn_new();
		break;
	case M_HOLD:
		if (!quit && started < count + count / 10 + 100 && held + inflight < count)
			conn_new();
		break;
	default:
		if (!quit && !window_closed)
			die("connection lost: %s (%s)", why, first_err);
	}
}

static void
send_request(struct conn *c)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: funnel.bench.test\r\n\r\n";
	app_write(c, req, sizeof(req) - 1);
}

static void
lat_ping(struct conn *c)
{
	c->t0 = now();
	c->lat_waiting = 1;
	app_write(c, "x", 1);
	lat_sent++;
}

/* The resume primer has the ticket: the measured connections start. */
static void
primer_done(struct conn *c)
{
	conn_free(c);
	for (int i = 0; i < conc; i++)
		conn_new();
}

/* OpenSSL's new-session callback: the first session with a ticket is the one offered. */
static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	if (saved != NULL || !SSL_SESSION_has_ticket(sess))
		return 0;
	saved = sess;
	return 1;               /* we keep the reference */
}

static void
on_handshake(struct conn *c)
{
	c->hs_done = 1;
	switch (mode) {
	case M_HS:
		if (window_open && !window_closed)
			done_ok++;
		flush(c);       /* whatever the client still owes (its Finished when resuming) */
		conn_end(c, 0, NULL);
		return;
	case M_RESUME:
		if (c->primer) {
			/* TLS 1.2: the ticket came in the handshake; 1.3: it comes
			 * after it (drive_tls reads on until on_new_session has it). */
			if (saved == NULL && tls_version == TLS1_2_VERSION)
				die("no session ticket from the server");
			if (saved != NULL)
				primer_done(c);
			return;
		}
		if (window_open && !window_closed) {
			if (SSL_session_reused(c->ssl))
				done_reused++;
			else
				done_full++;
		}
		/* Resumed, the client speaks last: its CCS + Finished must leave
		 * before the close, or the server sees EOF mid-handshake. */
		flush(c);
		conn_end(c, 0, NULL);
		return;
	case M_REQ:
		req_ready++;
		send_request(c);
		return;
	case M_UP:
		app_write(c, "S", 1);
		return;
	case M_DOWN:
		app_write(c, "G", 1);
		return;
	case M_LAT:
		app_write(c, "E", 1);
		lat_ping(c);
		return;
	case M_HOLD:
		app_write(c, "Ex", 2);
		return;
	default:                        /* storm modes: storm_pump ends the connection */
		return;
	}
}

/* Plaintext from the server side. Returns -1 when c was freed. */
static int
on_data(struct conn *c, unsigned char *p, size_t n)
{
	double t;

	switch (mode) {
	case M_REQ:
		if (c->hlen + n > c->hcap) {
			size_t cap = c->hcap ? c->hcap * 2 : 8192;
			while (cap < c->hlen + n)
				cap *= 2;
			c->hbuf = realloc(c->hbuf, cap);
			c->hcap = cap;
		}
		memcpy(c->hbuf + c->hlen, p, n);
		c->hlen += n;
		for (;;) {
			char *end = memmem(c->hbuf, c->hlen, "\r\n\r\n", 4);
			if (end == NULL)
				return 0;
			size_t hl = (size_t)(end - c->hbuf) + 4, cl = 0;
			if (c->hlen < 12 || memcmp(c->hbuf, "HTTP/1.1 200", 12) != 0) {
				conn_end(c, 1, "bad_http_response");
				return -1;
			}
			for (char *q = c->hbuf; q < end; q++)
				if ((q == c->hbuf || q[-1] == '\n') && strncasecmp(q, "content-length:", 15) == 0)
					cl = strtoul(q + 15, NULL, 10);
			if (c->hlen < hl + cl)
				return 0;
			memmove(c->hbuf, c->hbuf + hl + cl, c->hlen - hl - cl);
			c->hlen -= hl + cl;
			if (window_open && !window_closed)
				done_ok++;
			send_request(c);
		}
	case M_UP:
		t = now();
		for (size_t i = 0; i < n; i++) {
			up_acks++;
			if (t >= t_start + warm && up_k1 < 0) {
				up_k1 = up_acks, up_t1 = t;
				window_begin(t);
			}
			if (up_k1 >= 0)
				up_k2 = up_acks, up_t2 = t;
		}
		if (up_k1 >= 0 && t - up_t1 >= dur) {
			window_end(t);
			quit = 1;
		}
		return 0;
	case M_DOWN:
		t = now();
		dn_bytes += n;
		if (!dn_started && t >= t_start + warm) {
			dn_started = 1, dn_t1 = t, dn_b1 = dn_bytes;
			window_begin(t);
		}
		if (dn_started && t - dn_t1 >= dur) {
			dn_t2 = t, dn_b2 = dn_bytes;
			window_end(t);
			quit = 1;
		}
		return 0;
	case M_LAT:
		t = now();
		if (!c->lat_waiting || n != 1)
			die("echo: unexpected %zu bytes", n);
		c->lat_waiting = 0;
		if (lat_sent > 200) {
			if (nrtt == 0)
				window_begin(t);
			rtts[nrtt++] = t - c->t0;
		}
		if (nrtt >= count) {
			window_end(t);
			quit = 1;
			return 0;
		}
		lat_ping(c);
		return 0;
	case M_HOLD:
		if (!c->held && n >= 1) {
			c->held = 1;
			held++;
			inflight--;              /* no longer in flight, still open */
			if (held + inflight < count && started < count + count / 10 + 100)
				conn_new();
		}
		return 0;
	default:
		return 0;
	}
}

static void
start_tls(struct conn *c)
{
	if ((c->ssl = SSL_new(ctx)) == NULL)
		die("SSL_new");
	c->rb = BIO_new(BIO_s_mem());
	c->wb = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(c->rb, -1);
	SSL_set_bio(c->ssl, c->rb, c->wb);
	SSL_set_connect_state(c->ssl);
	SSL_set_tlsext_host_name(c->ssl, sni);
	if (mode == M_RESUME && !c->primer) {
		/* OpenSSL marks a TLS 1.3 session used once it resumed (tickets
		 * are for one use): each connection offers a copy of it. */
		SSL_SESSION *copy = tls_version == TLS1_3_VERSION ? SSL_SESSION_dup(saved) : saved;
		if (copy == NULL || !SSL_set_session(c->ssl, copy))
			die("SSL_set_session");
		if (copy != saved)
			SSL_SESSION_free(copy);
	}
	int r = SSL_do_handshake(c->ssl);
	if (r != -1 || SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
		die("ClientHello not produced");
	if (target && !STORM(mode))     /* the relay: head and ClientHello in one write */
		obuf_add(c, preamble, preamble_len);    /* (storm modes put their own head first) */
	drain_wbio(c);
}

/* Run TLS (handshake, then application reads). Returns -1 when c was freed. */
static int
drive_tls(struct conn *c)
{
	if (!c->hs_done) {
		int r = SSL_do_handshake(c->ssl);
		if (r == 1) {
			on_handshake(c);
			if (mode == M_HS || (mode == M_RESUME && !c->primer))
				return -1;      /* freed */
			if (c->primer && saved != NULL)
				return -1;      /* freed by primer_done */
		} else {
			int e = SSL_get_error(c->ssl, r);
			if (e != SSL_ERROR_WANT_READ) {
				conn_end(c, 1, "handshake_failed");
				return -1;
			}
			return 0;
		}
	}
	for (;;) {
		int r = SSL_read(c->ssl, rbuf, RBUF);
		if (r > 0) {
			if (on_data(c, rbuf, (size_t)r) < 0)
				return -1;
			if (quit)
				return 0;
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ) {
			if (c->primer && saved != NULL) {
				primer_done(c);
				return -1;
			}
			return 0;
		}
		conn_end(c, 1, e == SSL_ERROR_ZERO_RETURN ? "server_closed" : "tls_read_error");
		return -1;
	}
}

/* A non-blocking connect() on fd has an outcome: -1 not yet, 0 connected,
 * else the errno it failed with. */
static int
connect_outcome(int fd, unsigned events)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		return -1;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err;
}

static void
conn_pump(struct conn *c, unsigned events)
{
	if (c->connecting) {
		int err = connect_outcome(c->fd, events);
		if (err < 0)
			return;
		if (err != 0) {
			conn_end(c, 1, strerror(err));
			return;
		}
		c->connecting = 0;
		start_tls(c);
	} else if (c->ssl == NULL && !c->hs_done && unix_path) {
		c->hs_done = 1;                 /* plain Unix socket: "handshake" is immediate */
		on_handshake(c);
	}

	for (;;) {
		int eof = 0;

		/* Bulk upload keeps ~256 KiB queued while the socket takes it. */
		if (mode == M_UP && c->hs_done)
			while (!quit && c->olen - c->ooff < 256 * 1024)
				app_write(c, wrec, REC);
		if (flush(c) < 0) {
			conn_end(c, 1, "send_failed");
			return;
		}
		/* Edge-triggered: read until EAGAIN every time. */
		for (;;) {
			ssize_t n = recv(c->fd, rbuf, RBUF, 0);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_end(c, 1, "recv_failed");
				return;
			}
			if (n == 0) {
				eof = 1;
				break;
			}
			unsigned char *p = rbuf;
			size_t len = (size_t)n;
			if (target && c->m101 < RESP101_LEN) {
				size_t k = RESP101_LEN - c->m101 < len ? RESP101_LEN - c->m101 : len;
				if (memcmp(p, resp101 + c->m101, k) != 0) {
					char shown[40];
					size_t sl = len < sizeof(shown) - 1 ? len : sizeof(shown) - 1;
					memcpy(shown, p, sl);
					shown[sl] = 0;
					conn_end(c, 1, c->m101 == 0 ? shown : "bad_101");
					return;
				}
				c->m101 += k;
				p += k;
				len -= k;
			}
			if (len == 0)
				continue;
			if (c->ssl) {
				if (BIO_write(c->rb, p, (int)len) != (int)len)
					die("BIO_write");
				/* Keep the memory BIO small during bulk downloads. */
				if (BIO_ctrl_pending(c->rb) > 1024 * 1024 && drive_tls(c) < 0)
					return;
			} else if (on_data(c, p, len) < 0) {
				return;
			}
			if (quit)
				return;
		}
		if (c->ssl && drive_tls(c) < 0)
			return;
		if (quit)
			return;
		int f = flush(c);
		if (f < 0) {
			conn_end(c, 1, "send_failed");
			return;
		}
		if (eof) {
			conn_end(c, 1, c->hs_done ? "server_closed" : "eof_in_handshake");
			return;
		}
		/* Uploading and the socket still takes bytes: go on; otherwise
		 * both directions are at EAGAIN or idle, and epoll will say when. */
		if (mode == M_UP && c->hs_done && f == 1)
			continue;
		return;
	}
}

/* --- storm modes: flood, rst, idle (tests/flood.py) --- */

enum outcome {
	O_HS_OK,                /* flood: the handshake completed */
	O_STATUS,               /* a response other than 101 (counted by status) */
	O_101,                  /* flood -N: the 101 arrived (no TLS offered) */
	O_RST_SENT,             /* rst: the reset went out */
	O_HS_FAIL,              /* after the 101, the handshake failed */
	O_RESET,                /* ECONNRESET / EPIPE from the server's side */
	O_EOF,                  /* closed without a (whole) status line */
	O_TIMEOUT,              /* -T passed */
	O_CONNECT_ERR,          /* socket/bind/connect failed */
	O_UNFINISHED,           /* still open when the run ended */
	O_N
};
static const char *const outcome_name[O_N] = {
	"hs_ok", "status", "got101", "rst_sent", "hs_fail", "reset", "eof", "timeout", "connect_err", "unfinished",
};
static long outcomes[O_N], statuses[600];
static long connecting_now, open_now, open_peak;        /* idle */
static double *reopen_at;                               /* idle: FIFO of reopen times */
static long reopen_head, reopen_tail, idle_budget;
static char first_connect_err[64];
static volatile sig_atomic_t stop_signal;

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_signal = 1;
}

/* "ip:port" / "[v6]:port" -> sockaddr (port ignored).  0 on success. */
static int
parse_src(const char *s, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(s, ':');
	size_t n;

	if (colon == NULL || (n = (size_t)(colon - s)) >= sizeof(host))
		return -1;
	memcpy(host, s, n);
	host[n] = 0;
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
		host[n - 1] = 0;
		ss->ss_family = AF_INET6;
		return inet_pton(AF_INET6, host + 1, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1 ? 0 : -1;
	}
	ss->ss_family = AF_INET;
	return inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1 ? 0 : -1;
}

/* The Tailscale-Ingress-Src of the k-th connection. */
static void
src_for(long k, char *out, size_t outlen)
{
	int b = (int)(k % nsrc_base);
	long i = k / nsrc_base;
	char a[INET6_ADDRSTRLEN];
	unsigned port = 1024 + (unsigned)(k % 60000);

	if (distinct <= 0) {
		snprintf(out, outlen, "%s", src_text[b]);
		return;
	}
	i %= distinct;
	if (src_base[b].ss_family == AF_INET) {
		struct in_addr in = ((struct sockaddr_in *)&src_base[b])->sin_addr;
		in.s_addr = htonl(ntohl(in.s_addr) + (uint32_t)i);
		inet_ntop(AF_INET, &in, a, sizeof(a));
		snprintf(out, outlen, "%s:%u", a, port);
	} else {
		struct in6_addr in6 = ((struct sockaddr_in6 *)&src_base[b])->sin6_addr;
		uint64_t hi = 0;
		for (int j = 0; j < 8; j++)
			hi = hi << 8 | in6.s6_addr[j];
		hi += (uint64_t)i;
		for (int j = 7; j >= 0; j--, hi >>= 8)
			in6.s6_addr[j] = (unsigned char)hi;
		in6.s6_addr[15] ^= (unsigned char)(k & 0xff);  /* the host part varies too */
		inet_ntop(AF_INET6, &in6, a, sizeof(a));
		snprintf(out, outlen, "[%s]:%u", a, port);
	}
}

static void
storm_end(struct conn *c, enum outcome o, int status)
{
	outcomes[o]++;
	if (o == O_STATUS && status >= 100 && status < 600)
		statuses[status]++;
	if (c->connecting)
		connecting_now--;
	else if (mode == M_IDLE)
		open_now--;
	if (mode == M_IDLE && reopen_at != NULL)
		reopen_at[reopen_tail++ % (count + 1)] = now() + reopen_ms / 1000.0;
	if (o == O_RST_SENT) {
		struct linger lg = { 1, 0 };
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	conn_free(c);
}

static void
storm_conn_new(void)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev;
	int one = 1;
	long k = started;

	if (c == NULL)
		die("out of memory");
	inflight++;
	started++;
	connecting_now++;
	c->connecting = 1;
	c->t0 = now();
	c->variant = (int)(k & 1);
	c->linked = 1;
	c->next = live;
	if (live)
		live->prev = c;
	live = c;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		snprintf(first_connect_err, sizeof(first_connect_err), "socket:%s", strerror(errno));
		storm_end(c, O_CONNECT_ERR, 0);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nbind > 0) {
		struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = bind_addrs[k % nbind] };
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(c->fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
			snprintf(first_connect_err, sizeof(first_connect_err), "bind:%s", strerror(errno));
			storm_end(c, O_CONNECT_ERR, 0);
			return;
		}
	}
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
		if (!first_connect_err[0])
			snprintf(first_connect_err, sizeof(first_connect_err), "connect:%s", strerror(errno));
		storm_end(c, O_CONNECT_ERR, 0);
		return;
	}
	if (mode != M_IDLE) {
		char src[INET6_ADDRSTRLEN + 16];
		char head[sizeof(preamble)];
		src_for(k, src, sizeof(src));
		int n = snprintf(head, sizeof(head),
		    "POST /v0/ingress HTTP/1.1\r\n"
		    "Host: %s\r\n"
		    "Tailscale-Ingress-Src: %s\r\n"
		    "Tailscale-Ingress-Target: %s\r\n"
		    "\r\n", sni, src, target);
		obuf_add(c, head, (size_t)n);
	} else if (c->variant) {
		static const char part[] = "POST /v0/ingress HTTP/1.1\r\nHost: idle.flood.test\r\n";
		obuf_add(c, part, sizeof(part) - 1);
	}
	ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
	ev.data.ptr = c;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
		die("epoll_ctl: %s", strerror(errno));
}

/* The server's answer so far, once it is not (or not yet) a 101: its status, 0 if unknown. */
static int
answer_status(const struct conn *c)
{
	if (c->rlen < 12 || memcmp(c->rhead, "HTTP/1.", 7) != 0)
		return 0;
	int st = 0;
	for (int i = 9; i < 12; i++) {
		if (c->rhead[i] < '0' || c->rhead[i] > '9')
			return 0;
		st = st * 10 + (c->rhead[i] - '0');
	}
	return st;
}

static void
storm_pump(struct conn *c, unsigned events)
{
	if (c->connecting) {
		int err = connect_outcome(c->fd, events);
		if (err < 0)
			return;
		if (err != 0) {
			if (!first_connect_err[0])
				snprintf(first_connect_err, sizeof(first_connect_err), "connect:%s", strerror(err));
			storm_end(c, O_CONNECT_ERR, 0);
			return;
		}
		c->connecting = 0;
		connecting_now--;
		if (mode == M_IDLE) {
			if (++open_now > open_peak)
				open_peak = open_now;
		} else if (!no_hello) {
			start_tls(c);
		}
	}
	if (flush(c) < 0) {
		storm_end(c, O_RESET, 0);
		return;
	}
	if (mode == M_RST && c->variant == 0 && c->olen == 0 && !c->got101) {
		storm_end(c, O_RST_SENT, 0);
		return;
	}
	for (;;) {
		ssize_t n = recv(c->fd, rbuf, RBUF, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			int st = answer_status(c);
			if (st != 0 && st != 101)
				storm_end(c, O_STATUS, st);
			else
				storm_end(c, c->got101 ? O_HS_FAIL : O_RESET, 0);
			return;
		}
		if (n == 0) {
			int st = answer_status(c);
			if (st != 0 && st != 101)
				storm_end(c, O_STATUS, st);
			else
				storm_end(c, c->got101 ? O_HS_FAIL : O_EOF, 0);
			return;
		}
		unsigned char *p = rbuf;
		size_t len = (size_t)n;
		if (!c->got101) {
			size_t k = sizeof(c->rhead) - c->rlen < len ? sizeof(c->rhead) - c->rlen : len;
			memcpy(c->rhead + c->rlen, p, k);
			c->rlen += k;
			int st = answer_status(c);
			if (st != 0 && st != 101) {
				storm_end(c, O_STATUS, st);
				return;
			}
			size_t m = c->rlen < RESP101_LEN ? c->rlen : RESP101_LEN;
			if (memcmp(c->rhead, resp101, m) != 0) {
				storm_end(c, O_EOF, 0);         /* not HTTP: counted with the cut-short ones */
				return;
			}
			if (c->rlen < RESP101_LEN)
				continue;
			/* The 101 is whole: what followed it in this read is TLS. */
			size_t used = RESP101_LEN - (c->rlen - k);
			p += used;
			len -= used;
			c->got101 = 1;
			if (mode == M_RST) {
				storm_end(c, O_RST_SENT, 0);
				return;
			}
			if (mode == M_IDLE || no_hello) {
				if (mode == M_IDLE)
					statuses[101]++;
				storm_end(c, mode == M_IDLE ? O_STATUS : O_101, mode == M_IDLE ? 101 : 0);
				return;
			}
		}
		if (len > 0 && c->ssl && BIO_write(c->rb, p, (int)len) != (int)len)
			die("BIO_write");
	}
	if (c->got101 && c->ssl) {
		int r = SSL_do_handshake(c->ssl);
		if (r == 1) {
			flush(c);
			storm_end(c, O_HS_OK, 0);
			return;
		}
		if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
			ERR_clear_error();
			storm_end(c, O_HS_FAIL, 0);
			return;
		}
		if (flush(c) < 0) {
			storm_end(c, O_RESET, 0);
			return;
		}
	}
}

static void
storm_print(const char *what, double t)
{
	double el = t - t_start;
	printf("%s=%s elapsed=%.3f started=%ld rate=%.1f", what, what[0] == 'm' ? (mode == M_FLOOD ? "flood" :
	    mode == M_RST ? "rst" : "idle") : "1", el, started, el > 0 ? started / el : 0);
	for (int o = 0; o < O_N; o++)
		if (o != O_STATUS)
			printf(" %s=%ld", outcome_name[o], outcomes[o]);
	for (int st = 100; st < 600; st++)
		if (statuses[st])
			printf(" st_%d=%ld", st, statuses[st]);
	if (mode == M_IDLE)
		printf(" open=%ld open_peak=%ld connecting=%ld", open_now, open_peak, connecting_now);
	else
		printf(" inflight=%ld", inflight);
	printf(" cli_cpu_s=%.2f first_connect_err=%s\n", self_cpu(), first_connect_err[0] ? first_connect_err : "-");
	fflush(stdout);
}

static int
storm_main(void)
{
	struct epoll_event evs[512];
	struct sigaction sa = { .sa_handler = on_stop_signal };
	struct rlimit rl;
	double t_end, next_progress, next_scan;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (mode == M_IDLE) {
		if (count <= 0)
			die("idle: -n must be positive");
		if ((reopen_at = calloc((size_t)count + 1, sizeof(*reopen_at))) == NULL)
			die("out of memory");
		idle_budget = count;
	}
	t_start = now();
	t_end = t_start + dur;
	next_progress = t_start + 1;
	next_scan = t_start + 0.1;
	for (;;) {
		double t = now();
		if (stop_signal || t >= t_end)
			break;
		if (mode != M_IDLE && count > 0 && started >= count && inflight == 0)
			break;
		/* Top up. */
		if (mode == M_IDLE) {
			while (reopen_head < reopen_tail && reopen_at[reopen_head % (count + 1)] <= t) {
				reopen_head++;
				idle_budget++;
			}
			while (idle_budget > 0 && connecting_now < conc) {
				idle_budget--;
				storm_conn_new();
			}
		} else {
			long before = outcomes[O_CONNECT_ERR];
			while (inflight < conc && (count <= 0 || started < count) &&
			    (max_rate <= 0 || started < (long)((t - t_start) * max_rate) + 1)) {
				storm_conn_new();
				if (outcomes[O_CONNECT_ERR] != before)
					break;          /* no spinning on a refused connect: next turn */
			}
		}
		int n = epoll_wait(ep, evs, 512, 20);
		for (int i = 0; i < n; i++)
			storm_pump(evs[i].data.ptr, evs[i].events);
		t = now();
		if (t >= next_scan && mode != M_IDLE && conn_timeout > 0) {
			next_scan = t + 0.1;
			for (struct conn *c = live, *nx; c; c = nx) {
				nx = c->next;
				if (t - c->t0 > conn_timeout)
					storm_end(c, O_TIMEOUT, 0);
			}
		}
		if (t >= next_progress) {
			next_progress = t + 1;
			storm_print("progress", t);
		}
	}
	double t = now();
	while (live) {
		struct conn *c = live;
		storm_end(c, O_UNFINISHED, 0);
	}
	storm_print("mode", t);
	return 0;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void
usage(void)
{
	fprintf(stderr, "usage: loadgen -m hs|resume|req|up|down|lat|hold (-a HOST:PORT | -U PATH)\n"
	    "  [-f TARGET] [-s SNI] [-c CONC] [-d SECONDS] [-w SECONDS] [-n COUNT] [-P PID,...] [-S CPU] [-o FILE]\n"
	    "  [-V 1.2|1.3] [-g GROUPS] [-C SUITE]\n"
	    "       loadgen -m flood|rst|idle -a HOST:PORT [-f TARGET] [-c CONC] [-n COUNT] [-d SECONDS]\n"
	    "  [-i SRC [-i SRC]] [-D N] [-B ADDR,...] [-T SECONDS] [-N] [-R MS] [-r PER_SECOND]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	int opt, nsrc_given = 0;
	struct epoll_event evs[512];

	while ((opt = getopt(argc, argv, "m:a:U:f:s:c:d:w:n:P:S:o:i:D:B:T:NR:r:V:g:C:")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "hs")) mode = M_HS;
			else if (!strcmp(optarg, "resume")) mode = M_RESUME;
			else if (!strcmp(optarg, "req")) mode = M_REQ;
			else if (!strcmp(optarg, "up")) mode = M_UP;
			else if (!strcmp(optarg, "down")) mode = M_DOWN;
			else if (!strcmp(optarg, "lat")) mode = M_LAT;
			else if (!strcmp(optarg, "hold")) mode = M_HOLD;
			else if (!strcmp(optarg, "flood")) mode = M_FLOOD;
			else if (!strcmp(optarg, "rst")) mode = M_RST;
			else if (!strcmp(optarg, "idle")) mode = M_IDLE;
			else usage();
			break;
		case 'a': {
			char *colon = strrchr(optarg, ':');
			if (colon == NULL)
				usage();
			*colon = 0;
			addr.sin_family = AF_INET;
			addr.sin_port = htons((unsigned short)atoi(colon + 1));
			if (inet_pton(AF_INET, optarg, &addr.sin_addr) != 1)
				usage();
			break;
		}
		case 'U': unix_path = optarg; break;
		case 'f': target = optarg; break;
		case 's': sni = optarg; break;
		case 'V':
			if (!strcmp(optarg, "1.3")) tls_version = TLS1_3_VERSION;
			else if (!strcmp(optarg, "1.2")) tls_version = TLS1_2_VERSION;
			else usage();
			break;
		case 'g': groups = optarg; break;
		case 'C': suite = optarg; break;
		case 'c': conc = atoi(optarg); break;
		case 'd': dur = atof(optarg); break;
		case 'w': warm = atof(optarg); break;
		case 'n': count = atol(optarg); break;
		case 'P': pids = optarg; break;
		case 'S': si_cpu = atoi(optarg); break;
		case 'o': rtt_file = optarg; break;
		case 'i':
			if (nsrc_given == 2 || parse_src(optarg, &src_base[nsrc_given]) != 0)
				usage();
			src_text[nsrc_given++] = optarg;
			nsrc_base = nsrc_given;
			break;
		case 'D': distinct = atol(optarg); break;
		case 'B':
			for (char *save = NULL, *tok = strtok_r(optarg, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
				if (nbind == (int)(sizeof(bind_addrs) / sizeof(bind_addrs[0])) ||
				    inet_pton(AF_INET, tok, &bind_addrs[nbind++]) != 1)
					usage();
			break;
		case 'T': conn_timeout = atof(optarg); break;
		case 'N': no_hello = 1; break;
		case 'R': reopen_ms = atof(optarg); break;
		case 'r': max_rate = atof(optarg); break;
		default: usage();
		}
	}
	if ((!addr.sin_family) == (!unix_path) || (unix_path && mode != M_LAT))
		usage();
	if (STORM(mode) && (unix_path || (mode != M_IDLE && !target)))
		usage();
	if (nsrc_given == 0 && parse_src(src_text[0], &src_base[0]) != 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	memset(wrec, 'u', sizeof(wrec));

	if (target) {
		int n = snprintf(preamble, sizeof(preamble),
		    "POST /v0/ingress HTTP/1.1\r\n"
		    "Host: %s\r\n"
		    "Tailscale-Ingress-Src: %s\r\n"
		    "Tailscale-Ingress-Target: %s\r\n"
		    "\r\n", sni, src_text[0], target);
		preamble_len = (size_t)n;
	}
	if (!unix_path) {
		ctx = SSL_CTX_new(TLS_client_method());
		int v13 = tls_version == TLS1_3_VERSION;
		if (ctx == NULL ||
		    !SSL_CTX_set_min_proto_version(ctx, tls_version) ||
		    !SSL_CTX_set_max_proto_version(ctx, tls_version) ||
		    !SSL_CTX_set_cipher_list(ctx, !v13 && suite ? suite : "ECDHE-ECDSA-AES128-GCM-SHA256") ||
		    !SSL_CTX_set_ciphersuites(ctx, v13 && suite ? suite : "TLS_AES_128_GCM_SHA256") ||
		    !SSL_CTX_set1_groups_list(ctx, groups))
			die("SSL_CTX setup failed (-V/-C/-g)");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		/* No internal cache: on_new_session keeps the one session resumption offers. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, on_new_session);
		SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	}
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		die("epoll_create1");
	if (mode == M_LAT && (rtts = calloc((size_t)count, sizeof(*rtts))) == NULL)
		die("out of memory");
	if (STORM(mode))
		return storm_main();

	t_start = now();
	int nconn = (mode == M_REQ || mode == M_HS || mode == M_HOLD) ? conc : 1;
	if (mode == M_HOLD && nconn > count)
		nconn = (int)count;
	for (int i = 0; i < nconn; i++)
		conn_new();
	int hold_announced = 0, stdin_watched = 0;
	/* A system that stopped answering fails the run soon, not the whole bench. */
	double hard_end = t_start + warm + dur + (mode == M_HOLD ? 900 : mode == M_LAT ? 120 : 20);

	while (!quit) {
		double t = now();
		if (t > hard_end)
			die("run did not finish in time (errors=%ld first_err=%s)", errors, first_err);
		if ((mode == M_HS || mode == M_RESUME) && !window_open && t >= t_start + warm &&
		    (mode == M_HS || saved != NULL)) {
			window_begin(t);
			t_win1 = t + dur;
		}
		if (mode == M_REQ && !window_open && req_ready >= conc && t >= t_start + warm) {
			window_begin(t);
			t_win1 = t + dur;
		}
		if ((mode == M_HS || mode == M_RESUME || mode == M_REQ) && window_open && t >= t_win1) {
			window_end(t);
			break;
		}
		if (mode == M_HOLD && !hold_announced && held >= count) {
			printf("HELD %ld errors=%ld first_err=%s\n", held, errors, first_err[0] ? first_err : "-");
			fflush(stdout);
			hold_announced = 1;
		}
		if (mode == M_HOLD && !hold_announced && inflight == 0 && held < count) {
			/* The server refuses more (descriptors, threads): report what it holds. */
			printf("HELD %ld partial=1 errors=%ld first_err=%s\n", held, errors, first_err[0] ? first_err : "-");
			fflush(stdout);
			hold_announced = 1;
		}
		if (mode == M_HOLD && hold_announced && !stdin_watched) {
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
			epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
			stdin_watched = 1;
		}
		int timeout = 50;
		int n = epoll_wait(ep, evs, 512, timeout);
		for (int i = 0; i < n && !quit; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c == NULL) {
				char tmp[64];
				if (read(0, tmp, sizeof(tmp)) <= 0)
					quit = 1;
				continue;
			}
			conn_pump(c, evs[i].events);
		}
	}

	double win = t_win1 - t_win0;
	double cli = win > 0 ? cli_cpu_used / win : 0, srv = win > 0 ? srv_cpu_used / win : 0;
	if (mode == M_UP || mode == M_DOWN) {
		double w2 = mode == M_UP ? up_t2 - up_t1 : dn_t2 - dn_t1;
		if (w2 > 0)
			printf("si_cpu=%.3f ", si_used / w2);
	} else if (win > 0) {
		printf("si_cpu=%.3f ", si_used / win);
	}
	switch (mode) {
	case M_HS:
		printf("rate=%.1f ok=%ld err=%ld window=%.3f cli_cpu=%.3f srv_cpu=%.3f first_err=%s\n",
		    done_ok / win, done_ok, errors, win, cli, srv, first_err[0] ? first_err : "-");
		break;
	case M_RESUME:
		printf("rate=%.1f ok=%ld full=%ld err=%ld window=%.3f cli_cpu=%.3f srv_cpu=%.3f first_err=%s\n",
		    done_reused / win, done_reused, done_full, errors, win, cli, srv, first_err[0] ? first_err : "-");
		break;
	case M_REQ:
		printf("rate=%.1f ok=%ld err=%ld window=%.3f cli_cpu=%.3f srv_cpu=%.3f first_err=%s\n",
		    done_ok / win, done_ok, errors, win, cli, srv, first_err[0] ? first_err : "-");
		break;
	case M_UP:
		win = up_t2 - up_t1;
		printf("rate=%.2f mib=%ld window=%.3f cli_cpu=%.3f srv_cpu=%.3f err=%ld\n",
		    win > 0 ? (up_k2 - up_k1) / win : 0, up_k2 - up_k1, win,
		    win > 0 ? cli_cpu_used / win : 0, win > 0 ? srv_cpu_used / win : 0, errors);
		break;
	case M_DOWN:
		win = dn_t2 - dn_t1;
		printf("rate=%.2f mib=%.1f window=%.3f cli_cpu=%.3f srv_cpu=%.3f err=%ld\n",
		    win > 0 ? (double)(dn_b2 - dn_b1) / MIB / win : 0, (double)(dn_b2 - dn_b1) / MIB, win,
		    win > 0 ? cli_cpu_used / win : 0, win > 0 ? srv_cpu_used / win : 0, errors);
		break;
	case M_LAT: {
		if (rtt_file != NULL) {
			FILE *f = fopen(rtt_file, "w");
			if (f == NULL)
				die("%s: %s", rtt_file, strerror(errno));
			for (long i = 0; i < nrtt; i++)
				fprintf(f, "%.2f\n", rtts[i] * 1e6);
			fclose(f);
		}
		qsort(rtts, (size_t)nrtt, sizeof(*rtts), cmp_double);
		double sum = 0;
		for (long i = 0; i < nrtt; i++)
			sum += rtts[i];
		printf("p50_us=%.2f p99_us=%.2f p999_us=%.2f mean_us=%.2f max_us=%.2f n=%ld\n",
		    rtts[nrtt / 2] * 1e6, rtts[(long)(nrtt * 0.99)] * 1e6, rtts[(long)(nrtt * 0.999)] * 1e6,
		    sum / (double)nrtt * 1e6, rtts[nrtt - 1] * 1e6, nrtt);
		break;
	}
	case M_HOLD:
		printf("released=%ld dropped=%ld errors=%ld\n", held, dropped, errors);
		break;
	default:                /* storm modes returned from storm_main() */
		break;
	}
	return 0;
}
