/*
 * funnel-relay: plays Tailscale's Funnel ingress relay on one machine.
 *
 * It accepts "public" TCP clients on a local port and, for each, connects to
 * funneld and sends the request head the real relay sends (DESIGN.md section
 * 1).  By default the client's first bytes (a TLS ClientHello) follow the
 * head at once, in the same write, before funneld has answered; --wait-101
 * holds every client byte back until the answer.  Once funneld has answered
 * exactly "HTTP/1.1 101 Switching Protocols", raw bytes are spliced both
 * ways with back-pressure and half-close.  There is no TLS here: bytes are
 * only moved.  Any other answer is logged and the client closed.
 */

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#define RELAY_NAME		"funnel-relay"
#define RELAY_MAX_CLIENTS	10000
#define RELAY_MAX_LISTEN	16
#define RELAY_HIGH_WATER	(256 * 1024)	/* stop reading a side above */
#define RELAY_LOW_WATER		(RELAY_HIGH_WATER / 2) /* resume below */
#define RELAY_FIRST_MAX		16384	/* client bytes sent behind the head */
#define RELAY_ANSWER_MAX	8192	/* longest answer head we wait for */
#define RELAY_WRITE_MAX		65536	/* bytes per write(): head + first */
#define RELAY_FIRST_WAIT_MS	1000
#define RELAY_ANSWER_TIMEOUT	30
#define RELAY_BACKLOG		1024

static const char answer_101[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";

struct relay_addr {
	struct sockaddr_storage	 ss;
	socklen_t		 len;
	char			 text[160];
};

struct relay_config {
	struct relay_addr	 listen[RELAY_MAX_LISTEN];
	int			 nlisten;
	struct relay_addr	 funneld;
	const char		*target;	/* -t host:port, sent as is */
	char			 host[256];	/* its host part, for Host: */
	const char		*src;		/* --src, or NULL: the client */
	bool			 wait_101;
	int			 first_wait_ms;
	int			 answer_timeout;	/* seconds */
	int			 max_clients;
	bool			 verbose;
};

enum conn_state {
	CONN_FIRST,		/* waiting for the client's first bytes */
	CONN_WAIT_101,		/* head sent, waiting for funneld's answer */
	CONN_SPLICE,		/* raw bytes both ways */
};

#define SIDE_CLIENT	0
#define SIDE_FUNNELD	1

struct side {
	struct bufferevent	*bev;
	bool			 eof;		/* nothing more to read */
	bool			 shut;		/* our writing is shut down */
	bool			 throttled;	/* reading paused: peer full */
	uint64_t		 bytes;		/* read here, passed on */
};

struct relay;

struct conn {
	struct relay		*relay;
	uint64_t		 id;
	char			 peer[INET6_ADDRSTRLEN + 16];
	enum conn_state		 state;
	bool			 connected;	/* to funneld */
	struct side		 side[2];
	struct timespec		 start;
	/* First-bytes wait, then the wait for the 101.  A timer of its own:
	 * libevent 2.1 keeps a bufferevent's old timeout when it is cleared
	 * with NULL, which would cut long one-way transfers later. */
	struct event		*timer;
	TAILQ_ENTRY(conn)	 entry;
};
TAILQ_HEAD(conn_list, conn);

struct relay {
	struct event_base		*base;
	const struct relay_config	*conf;
	struct evconnlistener		*listeners[RELAY_MAX_LISTEN];
	struct event			*sigterm;
	struct event			*sigint;
	struct conn_list		 conns;
	int				 nconns;
	uint64_t			 next_id;
};

static void	conn_close(struct conn *, bool, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
static void	relay_log(const char *, ...)
		    __attribute__((format(printf, 1, 2)));

static void
relay_log(const char *fmt, ...)
{
	char	line[1024];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", RELAY_NAME, line);
}

static void
usage(FILE *f)
{
	fprintf(f,
"usage: %s -f HOST:PORT|unix:PATH -t HOST:PORT [-l ADDR:PORT ...] [options]\n"
"\n"
"Plays Tailscale's Funnel ingress relay: accepts public TCP clients and hands\n"
"each to funneld with POST /v0/ingress, then splices raw bytes both ways.\n"
"\n"
"  -l, --listen ADDR:PORT    public address to listen on: 127.0.0.1:8443,\n"
"                            [::1]:8443 (port 0 = any free port; the one\n"
"                            chosen is printed).  Repeatable.\n"
"                            Default 127.0.0.1:8443.\n"
"  -f, --funneld ADDR        funneld's listener: HOST:PORT, [V6]:PORT or\n"
"                            unix:PATH.  Required.\n"
"  -t, --target HOST:PORT    Tailscale-Ingress-Target to send (its host is\n"
"                            also the Host header).  Required.\n"
"      --src IP:PORT         send this Tailscale-Ingress-Src instead of the\n"
"                            client's address (sent verbatim, for tests).\n"
"      --wait-101            forward no client byte before funneld answered\n"
"                            101 (default: the client's first bytes follow\n"
"                            the head in the same write, as the relay does).\n"
"      --first-wait MS       how long to wait for the client's first bytes\n"
"                            before sending the head without them\n"
"                            (default %d).\n"
"      --answer-timeout SEC  give up when funneld has not answered in time\n"
"                            (default %d).\n"
"      --max-clients N       concurrent clients, 1..%d; more are refused\n"
"                            (default %d).\n"
"  -v, --verbose             log one line per connection when it ends.\n"
"  -h, --help                this text.\n"
"\n"
"Prints \"%s: listening on ADDR:PORT\" on stderr once listening.\n"
"SIGTERM or SIGINT: exit 0.  Exit 1 on start-up errors, 2 on bad usage.\n",
	    RELAY_NAME, RELAY_FIRST_WAIT_MS, RELAY_ANSWER_TIMEOUT,
	    RELAY_MAX_CLIENTS, RELAY_MAX_CLIENTS, RELAY_NAME);
}

static void __attribute__((noreturn, format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
	char	msg[512];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", RELAY_NAME, msg);
	fprintf(stderr, "Try '%s --help'.\n", RELAY_NAME);
	exit(2);
}

/* Format an address as ip:port, [v6]:port or unix:path. */
static void
addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;
	const struct sockaddr_un	*sun;
	struct in_addr			 v4;
	char				 ip[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET:
		sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
		snprintf(buf, len, "%s:%u", ip, ntohs(sin->sin_port));
		break;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			memcpy(&v4, &sin6->sin6_addr.s6_addr[12], sizeof v4);
			inet_ntop(AF_INET, &v4, ip, sizeof ip);
			snprintf(buf, len, "%s:%u", ip, ntohs(sin6->sin6_port));
		} else {
			inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip);
			snprintf(buf, len, "[%s]:%u", ip,
			    ntohs(sin6->sin6_port));
		}
		break;
	case AF_UNIX:
		sun = (const struct sockaddr_un *)sa;
		snprintf(buf, len, "unix:%s", sun->sun_path);
		break;
	default:
		snprintf(buf, len, "(family %d)", sa->sa_family);
		break;
	}
}

/*
 * Split "host:port" or "[v6]:port".  The host keeps no brackets; bracketed
 * tells whether it had them.
 */
static int
split_hostport(const char *s, char *host, size_t hostlen, char *port,
    size_t portlen, bool *bracketed)
{
	const char	*colon, *end;
	size_t		 n;

	*bracketed = false;
	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL || end[1] != ':')
			return (-1);
		s++;
		n = end - s;
		colon = end + 1;
		*bracketed = true;
	} else {
		if ((colon = strrchr(s, ':')) == NULL ||
		    memchr(s, ':', colon - s) != NULL)
			return (-1);
		n = colon - s;
	}
	if (n == 0 || n >= hostlen || strlen(colon + 1) >= portlen)
		return (-1);
	memcpy(host, s, n);
	host[n] = '\0';
	strcpy(port, colon + 1);
	return (0);
}

static int
parse_port(const char *s)
{
	char	*end;
	long	 v;

	if (*s < '0' || *s > '9')
		return (-1);
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > 65535)
		return (-1);
	return ((int)v);
}

/* Resolve "host:port", "[v6]:port" or (when unix_ok) "unix:/path". */
static int
resolve_addr(const char *s, bool passive, bool unix_ok, struct relay_addr *a)
{
	struct sockaddr_un	*sun;
	struct addrinfo		 hints, *res;
	char			 host[256], port[16];
	bool			 bracketed;

	memset(a, 0, sizeof *a);
	if (unix_ok && strncmp(s, "unix:", 5) == 0) {
		sun = (struct sockaddr_un *)&a->ss;
		if (s[5] == '\0' || strlen(s + 5) >= sizeof sun->sun_path)
			return (-1);
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, s + 5);
		a->len = sizeof *sun;
		addr_format((struct sockaddr *)&a->ss, a->text, sizeof a->text);
		return (0);
	}
	if (split_hostport(s, host, sizeof host, port, sizeof port,
	    &bracketed) != 0 || parse_port(port) < 0)
		return (-1);
	if (!passive && parse_port(port) == 0)
		return (-1);

	memset(&hints, 0, sizeof hints);
	hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return (-1);
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	freeaddrinfo(res);
	addr_format((struct sockaddr *)&a->ss, a->text, sizeof a->text);
	return (0);
}

static int
parse_int(const char *s, int min, int max, int *out)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
		return (-1);
	*out = (int)v;
	return (0);
}

static bool
header_safe(const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\r' || *s == '\n')
			return (false);
	}
	return (true);
}

static void
set_nodelay(int fd, int family)
{
	int	one = 1;

	if (family == AF_INET || family == AF_INET6)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Two descriptors per client, plus a few; warn when short. */
static void
raise_nofile(int clients)
{
	struct rlimit	rl;
	rlim_t		need = (rlim_t)clients * 2 + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 ||
	    rl.rlim_cur < (rlim_t)clients * 2)
		relay_log("warning: descriptor limit %llu is too low for %d "
		    "clients", (unsigned long long)rl.rlim_cur, clients);
}

static double
elapsed(const struct timespec *start)
{
	struct timespec	now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return ((double)(now.tv_sec - start->tv_sec) +
	    (double)(now.tv_nsec - start->tv_nsec) / 1e9);
}

static int
conn_side(struct conn *c, struct bufferevent *bev)
{
	return (bev == c->side[SIDE_CLIENT].bev ? SIDE_CLIENT : SIDE_FUNNELD);
}

/* End a connection: one log line (always when loud, else with -v). */
static void
conn_close(struct conn *c, bool loud, const char *fmt, ...)
{
	struct relay	*r = c->relay;
	char		 reason[512];
	va_list		 ap;
	int		 i;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);

	if (r->conf->verbose) {
		relay_log("conn %llu from %s: %s; %llu bytes up, %llu bytes "
		    "down, %.3f s", (unsigned long long)c->id, c->peer, reason,
		    (unsigned long long)c->side[SIDE_CLIENT].bytes,
		    (unsigned long long)c->side[SIDE_FUNNELD].bytes,
		    elapsed(&c->start));
	} else if (loud) {
		relay_log("conn %llu from %s: %s", (unsigned long long)c->id,
		    c->peer, reason);
	}

	for (i = 0; i < 2; i++) {
		if (c->side[i].bev != NULL)
			bufferevent_free(c->side[i].bev);
	}
	if (c->timer != NULL)
		event_free(c->timer);
	TAILQ_REMOVE(&r->conns, c, entry);
	r->nconns--;
	free(c);
}

/* Move what side i has read to the other side's output. */
static void
conn_pass(struct conn *c, int i)
{
	struct bufferevent	*from = c->side[i].bev;
	struct evbuffer		*in, *out;
	size_t			 n;

	in = bufferevent_get_input(from);
	out = bufferevent_get_output(c->side[!i].bev);
	if ((n = evbuffer_get_length(in)) == 0)
		return;
	c->side[i].bytes += n;
	evbuffer_add_buffer(out, in);
	if (evbuffer_get_length(out) >= RELAY_HIGH_WATER) {
		bufferevent_disable(from, EV_READ);
		c->side[i].throttled = true;
	}
}

/*
 * Once the other side is at EOF and side j's output is written, shut down
 * writing on j; once both are shut, the connection is done (and freed: the
 * callers touch c no more).
 */
static void
conn_maybe_shut(struct conn *c, int j)
{
	struct side	*s = &c->side[j];

	if (!c->side[!j].eof || s->shut ||
	    evbuffer_get_length(bufferevent_get_output(s->bev)) != 0)
		return;
	shutdown(bufferevent_getfd(s->bev), SHUT_WR);
	s->shut = true;
	if (c->side[!j].shut)
		conn_close(c, false, "closed");
}

/* Side i has nothing more to say: pass that on once its bytes are out. */
static void
conn_eof(struct conn *c, int i)
{
	c->side[i].eof = true;
	conn_pass(c, i);
	/* Have the write callback fire once the output is empty. */
	bufferevent_setwatermark(c->side[!i].bev, EV_WRITE, 0, 0);
	conn_maybe_shut(c, !i);
}

static void
conn_splice(struct conn *c)
{
	int	i;

	c->state = CONN_SPLICE;
	evtimer_del(c->timer);
	for (i = 0; i < 2; i++) {
		bufferevent_setwatermark(c->side[i].bev, EV_WRITE,
		    c->side[!i].eof ? 0 : RELAY_LOW_WATER, 0);
	}
	conn_pass(c, SIDE_FUNNELD);	/* TLS bytes that came with the 101 */
	conn_pass(c, SIDE_CLIENT);	/* client bytes held back */
	for (i = 0; i < 2; i++) {
		if (!c->side[i].eof && !c->side[i].throttled)
			bufferevent_enable(c->side[i].bev, EV_READ);
	}
	if (c->side[SIDE_CLIENT].eof)
		conn_maybe_shut(c, SIDE_FUNNELD);
}

/* Write the request head, and (unless --wait-101) the client's first bytes. */
static void
conn_send_head(struct conn *c)
{
	const struct relay_config	*conf = c->relay->conf;
	struct bufferevent		*client = c->side[SIDE_CLIENT].bev;
	struct bufferevent		*up = c->side[SIDE_FUNNELD].bev;
	struct evbuffer			*in, *out;
	struct timeval			 tv;
	size_t				 n;

	bufferevent_disable(client, EV_READ);

	out = bufferevent_get_output(up);
	evbuffer_add_printf(out, "POST /v0/ingress HTTP/1.1\r\n"
	    "Host: %s\r\n"
	    "Tailscale-Ingress-Src: %s\r\n"
	    "Tailscale-Ingress-Target: %s\r\n"
	    "Content-Length: 0\r\n"
	    "\r\n", conf->host, conf->src != NULL ? conf->src : c->peer,
	    conf->target);
	if (!conf->wait_101) {
		/* Queued together, so one writev() carries both. */
		in = bufferevent_get_input(client);
		if ((n = evbuffer_get_length(in)) > RELAY_FIRST_MAX)
			n = RELAY_FIRST_MAX;
		evbuffer_remove_buffer(in, out, n);
		c->side[SIDE_CLIENT].bytes += n;
	}

	c->state = CONN_WAIT_101;
	tv.tv_sec = conf->answer_timeout;
	tv.tv_usec = 0;
	evtimer_add(c->timer, &tv);
	bufferevent_enable(up, EV_READ);
}

/* Copy the first line of buf, printable, for a log line. */
static void
first_line(struct evbuffer *buf, char *line, size_t len)
{
	ev_ssize_t	n;
	size_t		i;

	if ((n = evbuffer_copyout(buf, line, len - 1)) < 0)
		n = 0;
	line[n] = '\0';
	for (i = 0; line[i] != '\0'; i++) {
		if (line[i] == '\r' || line[i] == '\n') {
			line[i] = '\0';
			break;
		}
		if (!isprint((unsigned char)line[i]) || line[i] == '"')
			line[i] = '?';
	}
}

/* Look at what funneld answered so far. */
static void
conn_answer(struct conn *c)
{
	struct evbuffer		*in;
	struct evbuffer_ptr	 end;
	size_t			 len, hlen;
	char			 line[160];

	in = bufferevent_get_input(c->side[SIDE_FUNNELD].bev);
	len = evbuffer_get_length(in);
	end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (end.pos < 0) {
		if (len > RELAY_ANSWER_MAX) {
			first_line(in, line, sizeof line);
			conn_close(c, true, "funneld answered \"%s\" and "
			    "%zu bytes without ending the head", line, len);
		}
		return;
	}
	hlen = (size_t)end.pos + 4;
	if (hlen == sizeof answer_101 - 1 &&
	    memcmp(evbuffer_pullup(in, (ev_ssize_t)hlen), answer_101, hlen) == 0) {
		evbuffer_drain(in, hlen);
		conn_splice(c);
		return;
	}
	first_line(in, line, sizeof line);
	if (strcmp(line, "HTTP/1.1 101 Switching Protocols") == 0)
		conn_close(c, true, "funneld answered \"%s\" with unexpected "
		    "header lines", line);
	else
		conn_close(c, true, "funneld answered \"%s\"", line);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;
	int		 i = conn_side(c, bev);

	switch (c->state) {
	case CONN_FIRST:
		if (i == SIDE_CLIENT)
			conn_send_head(c);
		break;
	case CONN_WAIT_101:
		if (i == SIDE_FUNNELD)
			conn_answer(c);
		break;
	case CONN_SPLICE:
		conn_pass(c, i);
		break;
	}
}

/* Side j's output drained to its low watermark. */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;
	int		 j = conn_side(c, bev);
	struct side	*from = &c->side[!j];

	if (c->state != CONN_SPLICE)
		return;
	if (from->throttled &&
	    evbuffer_get_length(bufferevent_get_output(bev)) <
	    RELAY_HIGH_WATER) {
		from->throttled = false;
		bufferevent_enable(from->bev, EV_READ);
	}
	conn_maybe_shut(c, j);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn			*c = arg;
	const struct relay_config	*conf = c->relay->conf;
	int				 i = conn_side(c, bev);
	int				 error = EVUTIL_SOCKET_ERROR();
	char				 line[160];

	if (what & BEV_EVENT_CONNECTED) {
		c->connected = true;
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		return;		/* no bufferevent timeouts are set */
	if (what & BEV_EVENT_EOF) {
		if (c->state == CONN_SPLICE)
			conn_eof(c, i);
		else if (i == SIDE_CLIENT) {
			c->side[i].eof = true;
			if (c->state == CONN_FIRST)
				conn_send_head(c);
		} else {
			first_line(bufferevent_get_input(bev), line,
			    sizeof line);
			if (line[0] == '\0')
				conn_close(c, true, "funneld closed the "
				    "connection without answering");
			else
				conn_close(c, true, "funneld closed the "
				    "connection after \"%s\"", line);
		}
		return;
	}

	/* BEV_EVENT_ERROR */
	if (i == SIDE_FUNNELD && !c->connected)
		conn_close(c, true, "cannot connect to funneld %s: %s",
		    conf->funneld.text, strerror(error));
	else
		conn_close(c, c->state != CONN_SPLICE, "%s: %s",
		    i == SIDE_CLIENT ? "client" : "funneld", strerror(error));
}

/* Start connecting to funneld; the bufferevent owns the socket. */
static int
conn_connect(struct conn *c)
{
	struct relay		*r = c->relay;
	const struct relay_addr	*fa = &r->conf->funneld;
	struct bufferevent	*bev;
	int			 fd, family = fa->ss.ss_family;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		conn_close(c, true, "socket: %s", strerror(errno));
		return (-1);
	}
	set_nodelay(fd, family);
	if (connect(fd, (const struct sockaddr *)&fa->ss, fa->len) == 0)
		c->connected = true;
	else if (errno != EINPROGRESS) {
		conn_close(c, true, "cannot connect to funneld %s: %s",
		    fa->text, strerror(errno));
		close(fd);
		return (-1);
	}

	bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		conn_close(c, true, "bufferevent_socket_new failed");
		return (-1);
	}
	c->side[SIDE_FUNNELD].bev = bev;
	bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_set_max_single_write(bev, RELAY_WRITE_MAX);
	if (!c->connected && bufferevent_socket_connect(bev, NULL, 0) != 0) {
		conn_close(c, true, "bufferevent_socket_connect failed");
		return (-1);
	}
	return (0);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;

	if (c->state == CONN_FIRST)
		conn_send_head(c);	/* a client that waits */
	else
		conn_close(c, true, "no answer from funneld within %d s",
		    c->relay->conf->answer_timeout);
}

static void
conn_new(struct relay *r, int fd, const struct sockaddr *sa)
{
	const struct relay_config	*conf = r->conf;
	struct conn			*c;
	struct bufferevent		*bev;
	struct timeval			 tv;

	if ((c = calloc(1, sizeof *c)) == NULL) {
		relay_log("out of memory");
		close(fd);
		return;
	}
	c->relay = r;
	c->id = ++r->next_id;
	clock_gettime(CLOCK_MONOTONIC, &c->start);
	addr_format(sa, c->peer, sizeof c->peer);
	TAILQ_INSERT_TAIL(&r->conns, c, entry);
	r->nconns++;

	set_nodelay(fd, sa->sa_family);
	bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		conn_close(c, true, "bufferevent_socket_new failed");
		return;
	}
	c->side[SIDE_CLIENT].bev = bev;
	bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	if ((c->timer = evtimer_new(r->base, conn_timer_cb, c)) == NULL) {
		conn_close(c, true, "evtimer_new failed");
		return;
	}

	if (conn_connect(c) != 0)
		return;

	if (conf->wait_101) {
		conn_send_head(c);
		return;
	}
	c->state = CONN_FIRST;
	tv.tv_sec = conf->first_wait_ms / 1000;
	tv.tv_usec = (conf->first_wait_ms % 1000) * 1000;
	evtimer_add(c->timer, &tv);
	bufferevent_enable(bev, EV_READ);
}

static void
relay_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct relay	*r = arg;
	char		 peer[INET6_ADDRSTRLEN + 16];

	if (r->nconns >= r->conf->max_clients) {
		addr_format(sa, peer, sizeof peer);
		relay_log("refusing %s: %d clients already", peer,
		    r->nconns);
		close(fd);
		return;
	}
	conn_new(r, fd, sa);
}

static void
relay_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	evconnlistener_enable(arg);
}

static void
relay_accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct relay	*r = arg;
	int		 error = EVUTIL_SOCKET_ERROR();
	struct timeval	 tv = { 1, 0 };

	relay_log("accept: %s", strerror(error));
	if (error == EMFILE || error == ENFILE || error == ENOBUFS ||
	    error == ENOMEM) {
		/* Pause rather than spin; connections will end. */
		evconnlistener_disable(l);
		event_base_once(r->base, -1, EV_TIMEOUT, relay_resume_cb, l,
		    &tv);
	}
}

static void
relay_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct relay	*r = arg;

	event_base_loopbreak(r->base);
}

static int
relay_listen(struct relay *r)
{
	const struct relay_config	*conf = r->conf;
	const struct relay_addr		*a;
	struct sockaddr_storage		 ss;
	socklen_t			 len;
	char				 text[160];
	unsigned			 flags;
	int				 i;

	flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
	    LEV_OPT_REUSEABLE;
	for (i = 0; i < conf->nlisten; i++) {
		a = &conf->listen[i];
		r->listeners[i] = evconnlistener_new_bind(r->base,
		    relay_accept_cb, r, flags | (a->ss.ss_family == AF_INET6 ?
		    LEV_OPT_BIND_IPV6ONLY : 0), RELAY_BACKLOG,
		    (const struct sockaddr *)&a->ss, (int)a->len);
		if (r->listeners[i] == NULL) {
			relay_log("cannot listen on %s: %s", a->text,
			    strerror(errno));
			return (-1);
		}
		evconnlistener_set_error_cb(r->listeners[i],
		    relay_accept_error_cb);
		len = sizeof ss;
		if (getsockname(evconnlistener_get_fd(r->listeners[i]),
		    (struct sockaddr *)&ss, &len) == 0)
			addr_format((struct sockaddr *)&ss, text, sizeof text);
		else
			strcpy(text, a->text);
		relay_log("listening on %s", text);
	}
	return (0);
}

static void
relay_free(struct relay *r)
{
	struct conn	*c;
	int		 i;

	while ((c = TAILQ_FIRST(&r->conns)) != NULL)
		conn_close(c, false, "relay stopping");
	for (i = 0; i < RELAY_MAX_LISTEN; i++) {
		if (r->listeners[i] != NULL)
			evconnlistener_free(r->listeners[i]);
	}
	if (r->sigterm != NULL)
		event_free(r->sigterm);
	if (r->sigint != NULL)
		event_free(r->sigint);
	event_base_free(r->base);
}

static void
parse_args(int argc, char **argv, struct relay_config *conf)
{
	enum {
		OPT_SRC = 256, OPT_WAIT_101, OPT_FIRST_WAIT,
		OPT_ANSWER_TIMEOUT, OPT_MAX_CLIENTS,
	};
	static const struct option longopts[] = {
		{ "listen",		required_argument, NULL, 'l' },
		{ "funneld",		required_argument, NULL, 'f' },
		{ "target",		required_argument, NULL, 't' },
		{ "src",		required_argument, NULL, OPT_SRC },
		{ "wait-101",		no_argument,	   NULL, OPT_WAIT_101 },
		{ "first-wait",		required_argument, NULL, OPT_FIRST_WAIT },
		{ "answer-timeout",	required_argument, NULL,
		    OPT_ANSWER_TIMEOUT },
		{ "max-clients",	required_argument, NULL,
		    OPT_MAX_CLIENTS },
		{ "verbose",		no_argument,	   NULL, 'v' },
		{ "help",		no_argument,	   NULL, 'h' },
		{ NULL,			0,		   NULL, 0 },
	};
	const char	*funneld = NULL;
	char		 port[16];
	bool		 bracketed;
	int		 ch;

	memset(conf, 0, sizeof *conf);
	conf->first_wait_ms = RELAY_FIRST_WAIT_MS;
	conf->answer_timeout = RELAY_ANSWER_TIMEOUT;
	conf->max_clients = RELAY_MAX_CLIENTS;

	while ((ch = getopt_long(argc, argv, "l:f:t:vh", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'l':
			if (conf->nlisten == RELAY_MAX_LISTEN)
				usage_error("at most %d -l", RELAY_MAX_LISTEN);
			if (resolve_addr(optarg, true, false,
			    &conf->listen[conf->nlisten]) != 0)
				usage_error("bad -l %s: want ADDR:PORT or "
				    "[V6]:PORT", optarg);
			conf->nlisten++;
			break;
		case 'f':
			funneld = optarg;
			break;
		case 't':
			conf->target = optarg;
			break;
		case OPT_SRC:
			if (*optarg == '\0' || !header_safe(optarg))
				usage_error("bad --src: empty or has CR/LF");
			conf->src = optarg;
			break;
		case OPT_WAIT_101:
			conf->wait_101 = true;
			break;
		case OPT_FIRST_WAIT:
			if (parse_int(optarg, 0, 600000,
			    &conf->first_wait_ms) != 0)
				usage_error("bad --first-wait %s: want "
				    "milliseconds, 0..600000", optarg);
			break;
		case OPT_ANSWER_TIMEOUT:
			if (parse_int(optarg, 1, 86400,
			    &conf->answer_timeout) != 0)
				usage_error("bad --answer-timeout %s: want "
				    "seconds, 1..86400", optarg);
			break;
		case OPT_MAX_CLIENTS:
			if (parse_int(optarg, 1, RELAY_MAX_CLIENTS,
			    &conf->max_clients) != 0)
				usage_error("bad --max-clients %s: want "
				    "1..%d", optarg, RELAY_MAX_CLIENTS);
			break;
		case 'v':
			conf->verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage_error("bad usage");
		}
	}
	if (optind != argc)
		usage_error("unexpected argument: %s", argv[optind]);
	if (funneld == NULL)
		usage_error("-f HOST:PORT or -f unix:PATH is required");
	if (resolve_addr(funneld, false, true, &conf->funneld) != 0)
		usage_error("bad -f %s: want HOST:PORT, [V6]:PORT or "
		    "unix:PATH", funneld);
	if (conf->target == NULL)
		usage_error("-t HOST:PORT is required");
	if (!header_safe(conf->target) ||
	    split_hostport(conf->target, conf->host, sizeof conf->host,
	    port, sizeof port, &bracketed) != 0 || parse_port(port) <= 0)
		usage_error("bad -t %s: want HOST:PORT", conf->target);
	if (bracketed) {
		/* Host: keeps an IPv6 literal in brackets. */
		if (strlen(conf->host) + 2 >= sizeof conf->host)
			usage_error("bad -t %s: host too long", conf->target);
		memmove(conf->host + 1, conf->host, strlen(conf->host) + 1);
		conf->host[0] = '[';
		strcat(conf->host, "]");
	}
	if (conf->nlisten == 0 && resolve_addr("127.0.0.1:8443", true, false,
	    &conf->listen[conf->nlisten++]) != 0)
		usage_error("cannot use the default -l 127.0.0.1:8443");
}

int
main(int argc, char **argv)
{
	struct relay_config	 conf;
	struct relay		 r;

	parse_args(argc, argv, &conf);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile(conf.max_clients);

	memset(&r, 0, sizeof r);
	r.conf = &conf;
	TAILQ_INIT(&r.conns);
	if ((r.base = event_base_new()) == NULL) {
		relay_log("event_base_new failed");
		return (1);
	}
	r.sigterm = evsignal_new(r.base, SIGTERM, relay_signal_cb, &r);
	r.sigint = evsignal_new(r.base, SIGINT, relay_signal_cb, &r);
	if (r.sigterm == NULL || r.sigint == NULL ||
	    evsignal_add(r.sigterm, NULL) != 0 ||
	    evsignal_add(r.sigint, NULL) != 0) {
		relay_log("cannot set up signal handling");
		relay_free(&r);
		return (1);
	}
	if (relay_listen(&r) != 0) {
		relay_free(&r);
		return (1);
	}

	event_base_dispatch(r.base);

	relay_free(&r);
	return (0);
}
