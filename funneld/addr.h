/*
 * Address rules, written once: ports, host:port, DNS names, IPv6 canonical
 * form, IPv4-mapped addresses, CIDR lists, listen addresses and how a socket
 * address is printed.  Pure functions: no I/O, no allocation.
 */
#ifndef FUNNELD_ADDR_H
#define FUNNELD_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_HOST_MAX 253               /* a DNS name, without its trailing dot */
#define ADDR_TEXT_MAX 64                /* "[" + 45 + "]:" + 5 + NUL, or "unix" */

/* An IP address as it goes on a wire or into a rule: IPv4-mapped IPv6 is IPv4. */
struct ip_addr {
	int family;                     /* AF_INET or AF_INET6 */
	uint8_t a[16];                  /* network order; AF_INET uses the first 4 bytes */
	uint16_t port;                  /* host order */
};

struct cidr {
	int family;                     /* AF_INET or AF_INET6 (IPv4-mapped nets are stored as AF_INET) */
	uint8_t addr[16];               /* network order; IPv4 uses the first 4 bytes */
	unsigned prefix;                /* 0..32 or 0..128 */
};

enum listen_kind { LISTEN_TCP, LISTEN_UNIX };

struct listen_addr {
	enum listen_kind kind;
	struct sockaddr_storage ss;     /* TCP: the address; UNIX: sockaddr_un with the path */
	socklen_t sslen;
	char text[128];                 /* as written: "127.0.0.1:4443", "[::1]:443", "unix:/run/x.sock" */
	int line;                       /* of the configuration, for messages */
};

/* "1".."65535": 1 to 5 decimal digits (leading zeros taken, as Go does).  0 or -1. */
int addr_parse_port(const char *s, size_t len, uint16_t *port);

/*
 * Split "host:port" or "[v6]:port" (len bytes, no NUL needed): host gets
 * what is before the port, brackets removed, NUL-terminated (it must fit
 * hostcap).  The host is not checked beyond its shape; an unbracketed IPv6
 * address fails (what follows its first colon is no port).  0 or -1.
 */
int addr_split_host_port(const char *s, size_t len, char *host, size_t hostcap, uint16_t *port);

/*
 * A DNS name: labels of 1..63 letters, digits, '-' or '_' (underscores occur
 * in real names), separated by single dots, at most ADDR_HOST_MAX bytes, no
 * trailing dot (strip one first).
 */
bool addr_hostname_valid(const char *s, size_t len);

/*
 * Normalise a host as targets and SNI are compared: a name in lower case
 * without one trailing dot, valid as above; or an IPv6 literal (bracketed
 * when bracketed is true) in inet_ntop's canonical form without brackets.
 * out must hold ADDR_HOST_MAX + 1 bytes.  0 or -1.
 */
int addr_normalize_host(const char *s, size_t len, bool bracketed, char *out);

/* "host:port" / "[v6]:port" as a target: the host normalised as above. */
int addr_parse_target(const char *s, size_t len, char *host, uint16_t *port);

/*
 * A strict "a.b.c.d:port" or "[v6]:port" into ss, and its canonical text
 * (ADDR_TEXT_MAX bytes: no leading zeros in the port, canonical IPv6).
 */
int addr_parse_ip_port(const char *s, size_t len, struct sockaddr_storage *ss, char *text);

/* AF_INET / AF_INET6 into ip (an IPv4-mapped address becomes AF_INET).  0 or -1. */
int addr_ip_from_sockaddr(const struct sockaddr *sa, struct ip_addr *ip);
bool addr_is_v4mapped(const uint8_t a[16]);

/* "1.2.3.4:5", "[2001:db8::1]:5", or "unix" for anything else.  Returns out. */
const char *addr_format(const struct sockaddr *sa, char *out, size_t cap);

/*
 * "a.b.c.d[/n]" or "v6[/n]"; host bits must be clear.  why, when not NULL,
 * gets a detail for a message.  0 or -1.
 */
int addr_parse_cidr(const char *s, struct cidr *out, const char **why);
/* Whether sa (AF_INET / AF_INET6, IPv4-mapped compared as IPv4) is inside any of list. */
bool addr_cidr_match(const struct cidr *list, size_t n, const struct sockaddr *sa);

/* Whether sa is a tailnet address (100.64.0.0/10, fd7a:115c:a1e0::/48) rather than the internet. */
bool addr_is_tailnet(const struct sockaddr *sa);

/* "host:port" (IPv4, "localhost", "*" = every address), "[v6]:port" or "unix:/path".  0 or -1. */
int addr_parse_listen(const char *s, struct listen_addr *out);

/* ASCII only, whatever the locale: protocol text is not the user's language. */
static inline bool
ascii_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static inline unsigned char
ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

#endif
