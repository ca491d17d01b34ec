/*
 * funnel-relay: plays Tailscale's Funnel path on one machine, in one of two
 * modes.  There is no TLS here in either: bytes are only moved.
 *
 * Ingress mode (the default) plays the ingress relay talking to a node's
 * peerAPI (DESIGN.md section 1).  It accepts "public" TCP clients on a
 * local port and, for each, connects to funneld and sends the request head
 * the real relay sends.  By default the client's first bytes (a TLS
 * ClientHello) follow the head at once, in the same write, before funneld
 * has answered; --wait-101 holds every client byte back until the answer.
 * Once funneld has answered exactly "HTTP/1.1 101 Switching Protocols", raw
 * bytes are spliced both ways with back-pressure and half-close.  Any other
 * answer is logged and the client closed.
 *
 * Forward mode (--forward) plays the relay and a stock tailscaled together,
 * as with `tailscale funnel --tcp 443 --proxy-protocol 2 tcp://HOST:PORT`
 * (DESIGN.md section 8): tailscaled answers the relay's /v0/ingress itself,
 * so funneld sees no head, only what tailscaled's TCP forwarder
 * (ipn/ipnlocal serve.go, forwardTCPWithProxyProtocol) writes.  For each
 * client it dials the backend (-f, funneld's [listener]; 10 s to connect,
 * else the client is closed), writes the PROXY header alone (v1 or v2 with
 * --proxy-protocol, none with 0: command PROXY; TCP4 or TCP6 by the
 * client's family, an IPv4-mapped client sent as TCP4; source = the client's
 * address and port, or --src; destination = the node's Tailscale address of
 * that family (--node-ipv4 / --node-ipv6) with the port tailscaled puts
 * there: the backend's, the one it dialled (--dst-port overrides); no TLVs,
 * so v2 is exactly 28 or 52 bytes), then reads the client and copies bytes
 * both ways.  There is no half-close: the first EOF (or error) from either
 * side ends both.  What that side sent before is written out first, as
 * io.Copy does before it returns; then both sockets are closed, whatever
 * is still on its way to the side that ended.  The header is formatted
 * here, as go-proxyproto does it (IPv6 in RFC 5952 text, as Go prints it),
 * not with funneld's writer, so tests compare two implementations.
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
#define RELAY_DIAL_TIMEOUT	10	/* tailscaled's, for the backend */
#define RELAY_DRAIN_TIMEOUT	30	/* forward mode: last bytes, then close */
#define RELAY_NODE_IPV4		"100.100.100.100"
#define RELAY_NODE_IPV6		"fd7a:115c:a1e0::1"
#define PP_V1_MAX		107
#define PP_V2_SIG_LEN		12
#define RELAY_BACKLOG		1024

static const char answer_101[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
static const uint8_t pp2_sig[PP_V2_SIG_LEN] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

/* An address as a PROXY header carries it. */
struct pp_addr {
	int			 family;	/* AF_INET or AF_INET6 */
	uint8_t			 addr[16];	/* network order; 4 bytes for AF_INET */
	uint16_t		 port;
};

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
	bool			 forward;	/* --forward: tailscaled's forwarder */
	int			 proxy_version;	/* --proxy-protocol: 0, 1 or 2 */
	struct pp_addr		 fwd_src;	/* --forward --src, parsed */
	bool			 fwd_src_set;
	bool			 fwd_src_port;	/* it had a port */
	uint8_t			 node4[4];	/* --node-ipv4 */
	uint8_t			 node6[16];	/* --node-ipv6 */
	int			 dst_port;	/* --dst-port; -1: the backend's */
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
	CONN_DIAL,		/* --forward: dialling the backend, client held */
	CONN_HEADER,		/* --forward: the PROXY header going out alone */
	CONN_FORWARD,		/* --forward: bytes both ways until an EOF */
	CONN_DRAIN,		/* --forward: a side ended; its last bytes go
				 * out to the other, then both close */
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
	struct sockaddr_storage	 peer_ss;	/* the client, as accepted */
	int			 drain_to;	/* CONN_DRAIN: the side written */
	char			 end_reason[160]; /* CONN_DRAIN: why, for the log */
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
"       %s --forward [--proxy-protocol 0|1|2] -f HOST:PORT [-l ADDR:PORT ...]\n"
"                   [options]\n"
"\n"
"Plays Tailscale's Funnel ingress relay: accepts public TCP clients and hands\n"
"each to funneld with POST /v0/ingress, then splices raw bytes both ways.\n"
"With --forward, plays the relay and a stock tailscaled's TCP forwarder\n"
"(tailscale funnel --tcp PORT --proxy-protocol N tcp://HOST:PORT): dials\n"
"funneld's [listener], writes a PROXY header, copies bytes both ways, and\n"
"ends both sides at the first EOF.\n"
"\n"
"  -l, --listen ADDR:PORT    public address to listen on: 127.0.0.1:8443,\n"
"                            [::1]:8443 (port 0 = any free port; the one\n"
"                            chosen is printed).  Repeatable.\n"
"                            Default 127.0.0.1:8443.\n"
"  -f, --funneld ADDR        funneld's listener: HOST:PORT, [V6]:PORT or\n"
"                            unix:PATH (with --forward: unix: only with\n"
"                            --proxy-protocol 0, as tailscaled).  Required.\n"
"  -t, --target HOST:PORT    Tailscale-Ingress-Target to send (its host is\n"
"                            also the Host header).  Required, except with\n"
"                            --forward, where there is no head.\n"
"      --src IP:PORT         send this Tailscale-Ingress-Src instead of the\n"
"                            client's address (sent verbatim, for tests).\n"
"                            With --forward: the PROXY source instead of the\n"
"                            client's: IP, IP:PORT, [V6] or [V6]:PORT (no\n"
"                            port: the client's); its family picks TCP4 or\n"
"                            TCP6 (an IPv4-mapped one is sent as TCP4).\n"
"\n"
"Forward mode (tailscaled's forwarder):\n"
"      --forward             this mode.\n"
"      --proxy-protocol N    PROXY header: 0 none (default, as tailscaled\n"
"                            without --proxy-protocol), 1 text, 2 binary\n"
"                            (28 bytes for TCP4, 52 for TCP6, no TLVs).\n"
"      --node-ipv4 IP        destination address in TCP4 headers: the\n"
"                            node's Tailscale IPv4 (default %s).\n"
"      --node-ipv6 IP        destination address in TCP6 headers: the\n"
"                            node's Tailscale IPv6 (default %s).\n"
"      --dst-port N          destination port in the header, 0..65535\n"
"                            (default: the port of -f, i.e. the backend's,\n"
"                            which is what tailscaled sends).\n"
"\n"
"Ingress mode only:\n"
"      --wait-101            forward no client byte before funneld answered\n"
"                            101 (default: the client's first bytes follow\n"
"                            the head in the same write, as the relay does).\n"
"      --first-wait MS       how long to wait for the client's first bytes\n"
"                            before sending the head without them\n"
"                            (default %d).\n"
"      --answer-timeout SEC  give up when funneld has not answered in time\n"
"                            (default %d).\n"
"\n"
"Both modes:\n"
"      --max-clients N       concurrent clients, 1..%d; more are refused\n"
"                            (default %d).\n"
"  -v, --verbose             log one line per connection when it ends.\n"
"  -h, --help                this text.\n"
"\n"
"Prints \"%s: listening on ADDR:PORT\" on stderr once listening.\n"
"SIGTERM or SIGINT: exit 0.  Exit 1 on start-up errors, 2 on bad usage.\n",
	    RELAY_NAME, RELAY_NAME, RELAY_NODE_IPV4, RELAY_NODE_IPV6,
	    RELAY_FIRST_WAIT_MS, RELAY_ANSWER_TIMEOUT,
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

/* ---- forward mode: tailscaled's TCP forwarder ---- */

/*
 * An IP address as Go's net.IP.String() prints it (go-proxyproto's v1
 * text): IPv4 dotted; IPv6 per RFC 5952, lower case, no leading zeros, the
 * first longest run of two or more zero groups as "::", and no dotted tail
 * (glibc's inet_ntop writes ::1.2.3.4 where Go writes ::102:304).
 */
static void
pp_addr_text(const struct pp_addr *a, char *out, size_t cap)
{
	unsigned int	 g[8];
	int		 i, j, best = -1, bestlen = 0;
	size_t		 n = 0;

	if (a->family == AF_INET) {
		snprintf(out, cap, "%u.%u.%u.%u", a->addr[0], a->addr[1],
		    a->addr[2], a->addr[3]);
		return;
	}
	for (i = 0; i < 8; i++)
		g[i] = (unsigned int)a->addr[2 * i] << 8 | a->addr[2 * i + 1];
	for (i = 0; i < 8; i = j + 1) {
		for (j = i; j < 8 && g[j] == 0; j++)
			;
		if (j - i > bestlen) {
			best = i;
			bestlen = j - i;
		}
	}
	if (bestlen < 2)
		best = -1;
	out[0] = '\0';
	for (i = 0; i < 8 && n < cap; i++) {
		if (i == best) {
			n += (size_t)snprintf(out + n, cap - n, "::");
			i += bestlen - 1;
		} else
			n += (size_t)snprintf(out + n, cap - n, "%s%x",
			    i == 0 || i == best + bestlen ? "" : ":", g[i]);
	}
}

/* A socket address as a header carries it, IPv4-mapped IPv6 unmapped
 * (tailscaled: Is4In6 -> Unmap).  -1 for other families. */
static int
pp_addr_from(const struct sockaddr *sa, struct pp_addr *a)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	memset(a, 0, sizeof *a);
	switch (sa->sa_family) {
	case AF_INET:
		sin = (const struct sockaddr_in *)sa;
		a->family = AF_INET;
		memcpy(a->addr, &sin->sin_addr, 4);
		a->port = ntohs(sin->sin_port);
		return (0);
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)sa;
		a->port = ntohs(sin6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			a->family = AF_INET;
			memcpy(a->addr, &sin6->sin6_addr.s6_addr[12], 4);
		} else {
			a->family = AF_INET6;
			memcpy(a->addr, &sin6->sin6_addr, 16);
		}
		return (0);
	default:
		return (-1);
	}
}

static uint16_t
sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohs(((const struct sockaddr_in *)ss)->sin_port));
	if (ss->ss_family == AF_INET6)
		return (ntohs(((const struct sockaddr_in6 *)ss)->sin6_port));
	return (0);
}

/*
 * The header tailscaled writes for this client: command PROXY, no TLVs.
 * Returns its length (0: --proxy-protocol 0), or -1 when the client is
 * not an IP client (no header can say who it is).
 */
static int
fwd_header(const struct conn *c, uint8_t *out, size_t cap)
{
	const struct relay_config	*conf = c->relay->conf;
	struct pp_addr			 src, dst, peer;
	char				 st[INET6_ADDRSTRLEN], dt[INET6_ADDRSTRLEN];
	size_t				 alen;
	int				 n;

	if (conf->proxy_version == 0)
		return (0);
	if (conf->fwd_src_set) {
		src = conf->fwd_src;
		if (!conf->fwd_src_port && pp_addr_from((const struct
		    sockaddr *)&c->peer_ss, &peer) == 0)
			src.port = peer.port;
	} else if (pp_addr_from((const struct sockaddr *)&c->peer_ss,
	    &src) != 0)
		return (-1);

	memset(&dst, 0, sizeof dst);
	dst.family = src.family;
	if (src.family == AF_INET)
		memcpy(dst.addr, conf->node4, 4);
	else
		memcpy(dst.addr, conf->node6, 16);
	dst.port = conf->dst_port >= 0 ? (uint16_t)conf->dst_port :
	    sockaddr_port(&conf->funneld.ss);

	if (conf->proxy_version == 1) {
		pp_addr_text(&src, st, sizeof st);
		pp_addr_text(&dst, dt, sizeof dt);
		n = snprintf((char *)out, cap, "PROXY %s %s %s %u %u\r\n",
		    src.family == AF_INET ? "TCP4" : "TCP6", st, dt,
		    (unsigned int)src.port, (unsigned int)dst.port);
		return (n > 0 && (size_t)n < cap && n <= PP_V1_MAX ? n : -1);
	}

	alen = src.family == AF_INET ? 4 : 16;
	if (cap < 16 + 4 * alen + 4)
		return (-1);
	memcpy(out, pp2_sig, sizeof pp2_sig);
	out[12] = 0x21;				/* version 2, PROXY */
	out[13] = src.family == AF_INET ? 0x11 : 0x21;	/* TCP4 / TCP6 */
	out[14] = 0;
	out[15] = (uint8_t)(2 * alen + 4);	/* 12 or 36 */
	memcpy(out + 16, src.addr, alen);
	memcpy(out + 16 + alen, dst.addr, alen);
	out[16 + 2 * alen] = (uint8_t)(src.port >> 8);
	out[17 + 2 * alen] = (uint8_t)src.port;
	out[18 + 2 * alen] = (uint8_t)(dst.port >> 8);
	out[19 + 2 * alen] = (uint8_t)dst.port;
	return ((int)(20 + 2 * alen));
}

/* Header written: the client's bytes may follow (tailscaled's io.Copy). */
static void
fwd_copy(struct conn *c)
{
	int	i;

	c->state = CONN_FORWARD;
	for (i = 0; i < 2; i++)
		bufferevent_setwatermark(c->side[i].bev, EV_WRITE,
		    RELAY_LOW_WATER, 0);
	bufferevent_enable(c->side[SIDE_CLIENT].bev, EV_READ);
}

/*
 * The backend is connected: queue the header alone (the client is not read
 * until it is out, so it leaves in a write of its own, as tailscaled's
 * Write(header) before io.Copy), and start copying the backend's bytes to
 * the client at once (tailscaled's other goroutine).
 */
static void
fwd_connected(struct conn *c)
{
	struct bufferevent	*up = c->side[SIDE_FUNNELD].bev;
	uint8_t			 hdr[128];
	int			 n;

	evtimer_del(c->timer);
	if ((n = fwd_header(c, hdr, sizeof hdr)) < 0) {
		conn_close(c, true, "cannot build a PROXY header for %s",
		    c->peer);
		return;
	}
	bufferevent_enable(up, EV_READ);
	if (n == 0) {
		fwd_copy(c);
		return;
	}
	c->state = CONN_HEADER;
	bufferevent_setwatermark(up, EV_WRITE, 0, 0);
	if (bufferevent_write(up, hdr, (size_t)n) != 0)
		conn_close(c, true, "cannot queue the PROXY header");
}

/*
 * Side i ended (EOF or error): no half-close.  What it sent before goes out
 * to the other side, then both are closed (tailscaled returns from the first
 * io.Copy that ends and closes both connections).
 */
static void
fwd_end(struct conn *c, int i, const char *reason)
{
	struct bufferevent	*to = c->side[!i].bev;
	struct timeval		 tv = { RELAY_DRAIN_TIMEOUT, 0 };

	c->side[i].eof = true;
	conn_pass(c, i);
	bufferevent_disable(c->side[SIDE_CLIENT].bev, EV_READ);
	bufferevent_disable(c->side[SIDE_FUNNELD].bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(to)) == 0) {
		conn_close(c, false, "%s", reason);
		return;
	}
	c->state = CONN_DRAIN;
	c->drain_to = !i;
	snprintf(c->end_reason, sizeof c->end_reason, "%s", reason);
	bufferevent_setwatermark(to, EV_WRITE, 0, 0);
	evtimer_del(c->timer);
	evtimer_add(c->timer, &tv);
}

/* A forward-mode connection's bufferevent event. */
static void
fwd_event(struct conn *c, int i, short what, int error)
{
	const struct relay_config	*conf = c->relay->conf;
	const char			*who = i == SIDE_CLIENT ? "client" :
					    "backend";
	char				 reason[160];

	if (c->state == CONN_DIAL) {
		if (i == SIDE_FUNNELD)
			conn_close(c, true, "cannot connect to backend %s: %s",
			    conf->funneld.text, (what & BEV_EVENT_EOF) ?
			    "closed" : strerror(error));
		else
			conn_close(c, false, "client: %s", (what &
			    BEV_EVENT_EOF) ? "closed" : strerror(error));
		return;
	}
	if (c->state == CONN_DRAIN) {
		/* Only the side still being written matters now. */
		if (i == c->drain_to)
			conn_close(c, false, "%s; then %s: %s", c->end_reason,
			    who, (what & BEV_EVENT_EOF) ? "closed" :
			    strerror(error));
		return;
	}
	if (what & BEV_EVENT_EOF)
		snprintf(reason, sizeof reason, "%s EOF, both closed", who);
	else
		snprintf(reason, sizeof reason, "%s: %s, both closed", who,
		    strerror(error));
	fwd_end(c, i, reason);
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
	case CONN_HEADER:
	case CONN_FORWARD:
		conn_pass(c, i);
		break;
	case CONN_DIAL:
	case CONN_DRAIN:
		break;		/* not reading then */
	}
}

/* Side j's output drained to its low watermark. */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;
	int		 j = conn_side(c, bev);
	struct side	*from = &c->side[!j];
	bool		 empty;

	empty = evbuffer_get_length(bufferevent_get_output(bev)) == 0;
	if (c->state == CONN_DRAIN) {
		if (j == c->drain_to && empty)
			conn_close(c, false, "%s", c->end_reason);
		return;
	}
	if (c->state == CONN_HEADER && j == SIDE_FUNNELD && empty)
		fwd_copy(c);
	if (c->state != CONN_SPLICE && c->state != CONN_FORWARD &&
	    c->state != CONN_HEADER)
		return;
	if (from->throttled &&
	    evbuffer_get_length(bufferevent_get_output(bev)) <
	    RELAY_HIGH_WATER) {
		from->throttled = false;
		bufferevent_enable(from->bev, EV_READ);
	}
	if (c->state == CONN_SPLICE)
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
		if (conf->forward)
			fwd_connected(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		return;		/* no bufferevent timeouts are set */
	if (conf->forward) {
		fwd_event(c, i, what, error);
		return;
	}
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
	else if (c->state == CONN_DIAL)
		conn_close(c, true, "cannot connect to backend %s within %d s",
		    c->relay->conf->funneld.text, RELAY_DIAL_TIMEOUT);
	else if (c->state == CONN_DRAIN)
		conn_close(c, true, "%s; last bytes not taken within %d s",
		    c->end_reason, RELAY_DRAIN_TIMEOUT);
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
	memcpy(&c->peer_ss, sa, sa->sa_family == AF_INET6 ?
	    sizeof(struct sockaddr_in6) : sa->sa_family == AF_INET ?
	    sizeof(struct sockaddr_in) : sizeof(sa_family_t));
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

	if (conf->forward) {
		/* The client waits, unread, until the header is out. */
		c->state = CONN_DIAL;
		if (conn_connect(c) != 0)
			return;
		if (c->connected) {
			fwd_connected(c);
			return;
		}
		tv.tv_sec = RELAY_DIAL_TIMEOUT;
		tv.tv_usec = 0;
		evtimer_add(c->timer, &tv);
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

/* Whether 16 address bytes are IPv4-mapped (no struct in6_addr cast: a
 * byte array need not be aligned for one). */
static bool
bytes_v4mapped(const uint8_t a[16])
{
	static const uint8_t	 prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0xff, 0xff };

	return (memcmp(a, prefix, sizeof prefix) == 0);
}

/*
 * --src in forward mode: IP, IP:PORT, [V6] or [V6]:PORT.  An IPv4-mapped
 * IPv6 address becomes IPv4, as tailscaled unmaps the client's.
 */
static int
parse_fwd_src(const char *s, struct relay_config *conf)
{
	struct pp_addr	*a = &conf->fwd_src;
	char		 host[INET6_ADDRSTRLEN + 2], port[16];
	size_t		 n;
	bool		 bracketed;
	int		 p = -1;

	memset(a, 0, sizeof *a);
	if (strlen(s) >= sizeof host)
		return (-1);
	if (*s == '[' && (n = strlen(s)) > 2 && s[n - 1] == ']') {
		memcpy(host, s + 1, n - 2);		/* [V6] */
		host[n - 2] = '\0';
		bracketed = true;
	} else if (inet_pton(AF_INET6, s, a->addr) == 1 ||
	    inet_pton(AF_INET, s, a->addr) == 1) {
		strcpy(host, s);			/* bare IP */
		bracketed = strchr(s, ':') != NULL;
	} else {
		if (split_hostport(s, host, sizeof host, port, sizeof port,
		    &bracketed) != 0 || (p = parse_port(port)) < 0)
			return (-1);
	}
	if (!bracketed && inet_pton(AF_INET, host, a->addr) == 1)
		a->family = AF_INET;
	else if (bracketed && inet_pton(AF_INET6, host, a->addr) == 1) {
		a->family = AF_INET6;
		if (bytes_v4mapped(a->addr)) {
			memmove(a->addr, a->addr + 12, 4);
			memset(a->addr + 4, 0, 12);
			a->family = AF_INET;
		}
	} else
		return (-1);
	conf->fwd_src_set = true;
	conf->fwd_src_port = p >= 0;
	a->port = p >= 0 ? (uint16_t)p : 0;
	return (0);
}

/* Forward mode: nothing of the ingress mode, and what tailscaled allows. */
static void
check_forward_args(struct relay_config *conf, const char *ingress_only)
{
	if (ingress_only != NULL)
		usage_error("%s is for the ingress mode, not --forward",
		    ingress_only);
	if (conf->funneld.ss.ss_family == AF_UNIX && conf->proxy_version != 0)
		usage_error("--proxy-protocol %d needs a TCP -f: tailscaled "
		    "sends no PROXY header to unix:", conf->proxy_version);
	if (conf->src != NULL && parse_fwd_src(conf->src, conf) != 0)
		usage_error("bad --src %s: want IP, IP:PORT, [V6] or [V6]:PORT",
		    conf->src);
}

/* Ingress mode: -t HOST:PORT, its host also the Host header. */
static void
check_ingress_target(struct relay_config *conf)
{
	char	 port[16];
	bool	 bracketed;

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
}

static void
parse_args(int argc, char **argv, struct relay_config *conf)
{
	enum {
		OPT_SRC = 256, OPT_WAIT_101, OPT_FIRST_WAIT,
		OPT_ANSWER_TIMEOUT, OPT_MAX_CLIENTS, OPT_FORWARD,
		OPT_PROXY_PROTOCOL, OPT_NODE_IPV4, OPT_NODE_IPV6,
		OPT_DST_PORT,
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
		{ "forward",		no_argument,	   NULL, OPT_FORWARD },
		{ "proxy-protocol",	required_argument, NULL,
		    OPT_PROXY_PROTOCOL },
		{ "node-ipv4",		required_argument, NULL, OPT_NODE_IPV4 },
		{ "node-ipv6",		required_argument, NULL, OPT_NODE_IPV6 },
		{ "dst-port",		required_argument, NULL, OPT_DST_PORT },
		{ "verbose",		no_argument,	   NULL, 'v' },
		{ "help",		no_argument,	   NULL, 'h' },
		{ NULL,			0,		   NULL, 0 },
	};
	const char	*funneld = NULL;
	const char	*ingress_only = NULL, *forward_only = NULL;
	int		 ch;

	memset(conf, 0, sizeof *conf);
	conf->first_wait_ms = RELAY_FIRST_WAIT_MS;
	conf->answer_timeout = RELAY_ANSWER_TIMEOUT;
	conf->max_clients = RELAY_MAX_CLIENTS;
	conf->dst_port = -1;
	if (inet_pton(AF_INET, RELAY_NODE_IPV4, conf->node4) != 1 ||
	    inet_pton(AF_INET6, RELAY_NODE_IPV6, conf->node6) != 1)
		usage_error("bad built-in node address");

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
			ingress_only = "-t";
			break;
		case OPT_SRC:
			if (*optarg == '\0' || !header_safe(optarg))
				usage_error("bad --src: empty or has CR/LF");
			conf->src = optarg;
			break;
		case OPT_WAIT_101:
			conf->wait_101 = true;
			ingress_only = "--wait-101";
			break;
		case OPT_FIRST_WAIT:
			ingress_only = "--first-wait";
			if (parse_int(optarg, 0, 600000,
			    &conf->first_wait_ms) != 0)
				usage_error("bad --first-wait %s: want "
				    "milliseconds, 0..600000", optarg);
			break;
		case OPT_ANSWER_TIMEOUT:
			ingress_only = "--answer-timeout";
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
		case OPT_FORWARD:
			conf->forward = true;
			break;
		case OPT_PROXY_PROTOCOL:
			forward_only = "--proxy-protocol";
			if (parse_int(optarg, 0, 2, &conf->proxy_version) != 0)
				usage_error("bad --proxy-protocol %s: want 0, 1 "
				    "or 2", optarg);
			break;
		case OPT_NODE_IPV4:
			forward_only = "--node-ipv4";
			if (inet_pton(AF_INET, optarg, conf->node4) != 1)
				usage_error("bad --node-ipv4 %s: want an IPv4 "
				    "address", optarg);
			break;
		case OPT_NODE_IPV6:
			forward_only = "--node-ipv6";
			if (inet_pton(AF_INET6, optarg, conf->node6) != 1 ||
			    bytes_v4mapped(conf->node6))
				usage_error("bad --node-ipv6 %s: want an IPv6 "
				    "address, not IPv4-mapped", optarg);
			break;
		case OPT_DST_PORT:
			forward_only = "--dst-port";
			if (parse_int(optarg, 0, 65535, &conf->dst_port) != 0)
				usage_error("bad --dst-port %s: want 0..65535",
				    optarg);
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
	if (conf->forward)
		check_forward_args(conf, ingress_only);
	else {
		if (forward_only != NULL)
			usage_error("%s needs --forward", forward_only);
		check_ingress_target(conf);
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
