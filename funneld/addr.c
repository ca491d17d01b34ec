/* Address rules; see addr.h. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "addr.h"

int
addr_parse_port(const char *s, size_t len, uint16_t *port)
{
	unsigned v = 0;

	if (s == NULL || len == 0 || len > 5)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!ascii_digit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

int
addr_split_host_port(const char *s, size_t len, char *host, size_t hostcap, uint16_t *port)
{
	const char *h, *colon;
	size_t hlen;

	if (s == NULL || len == 0 || hostcap == 0 || memchr(s, '\0', len) != NULL)
		return -1;
	if (s[0] == '[') {
		const char *rb = memchr(s, ']', len);
		if (rb == NULL || rb == s + 1 || (size_t)(rb - s) + 1 >= len || rb[1] != ':')
			return -1;
		h = s + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
		if (memchr(h, '[', hlen) != NULL)
			return -1;
	} else {
		if ((colon = memchr(s, ':', len)) == NULL || colon == s)
			return -1;
		h = s;
		hlen = (size_t)(colon - s);
		if (memchr(h, '[', hlen) != NULL || memchr(h, ']', hlen) != NULL)
			return -1;
	}
	if (addr_parse_port(colon + 1, len - (size_t)(colon + 1 - s), port) != 0 || hlen >= hostcap)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	return 0;
}

bool
addr_hostname_valid(const char *s, size_t len)
{
	size_t label = 0;

	if (s == NULL || len == 0 || len > ADDR_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!ascii_digit(c) && !(ascii_lower(c) >= 'a' && ascii_lower(c) <= 'z') && c != '-' && c != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

int
addr_normalize_host(const char *s, size_t len, bool bracketed, char *out)
{
	char buf[INET6_ADDRSTRLEN];
	struct in6_addr a6;

	if (bracketed) {
		if (len == 0 || len >= sizeof(buf))
			return -1;
		memcpy(buf, s, len);
		buf[len] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) != 1 || inet_ntop(AF_INET6, &a6, out, ADDR_HOST_MAX + 1) == NULL)
			return -1;
		return 0;
	}
	if (len > 1 && s[len - 1] == '.')
		len--;
	if (!addr_hostname_valid(s, len))
		return -1;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)ascii_lower((unsigned char)s[i]);
	out[len] = '\0';
	return 0;
}

int
addr_parse_target(const char *s, size_t len, char *host, uint16_t *port)
{
	char raw[ADDR_HOST_MAX + 2];    /* room for one trailing dot */

	if (addr_split_host_port(s, len, raw, sizeof(raw), port) != 0)
		return -1;
	return addr_normalize_host(raw, strlen(raw), s[0] == '[', host);
}

/* Append the decimal v to p; returns the new end.  (snprintf is slow.) */
static char *
put_uint(char *p, unsigned v)
{
	char tmp[10];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* Canonical text of an address and port: the one form logs and headers use. */
static void
format_ip_port(int family, const void *a, uint16_t port, char *out)
{
	char *t = out;

	if (family == AF_INET6) {
		*t++ = '[';
		inet_ntop(AF_INET6, a, t, INET6_ADDRSTRLEN);
		t += strlen(t);
		*t++ = ']';
	} else {
		const uint8_t *b = a;
		for (int i = 0; i < 4; i++) {
			t = put_uint(t, b[i]);
			if (i < 3)
				*t++ = '.';
		}
	}
	*t++ = ':';
	t = put_uint(t, port);
	*t = '\0';
}

int
addr_parse_ip_port(const char *s, size_t len, struct sockaddr_storage *ss, char *text)
{
	char host[INET6_ADDRSTRLEN];
	uint16_t port;

	memset(ss, 0, sizeof(*ss));
	if (addr_split_host_port(s, len, host, sizeof(host), &port) != 0)
		return -1;
	if (s[0] == '[') {
		struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
		if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1)
			return -1;
		memcpy(ss, &sin6, sizeof(sin6));
		format_ip_port(AF_INET6, &sin6.sin6_addr, port, text);
	} else {
		struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
		/* glibc's inet_pton takes strict dotted quads only. */
		if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
			return -1;
		memcpy(ss, &sin, sizeof(sin));
		format_ip_port(AF_INET, &sin.sin_addr, port, text);
	}
	return 0;
}

bool
addr_is_v4mapped(const uint8_t a[16])
{
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(a, pfx, sizeof(pfx)) == 0;
}

int
addr_ip_from_sockaddr(const struct sockaddr *sa, struct ip_addr *ip)
{
	memset(ip, 0, sizeof(*ip));
	if (sa == NULL)
		return -1;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, sa, sizeof(sin));
		ip->family = AF_INET;
		memcpy(ip->a, &sin.sin_addr, 4);
		ip->port = ntohs(sin.sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, sa, sizeof(sin6));
		ip->port = ntohs(sin6.sin6_port);
		if (addr_is_v4mapped(sin6.sin6_addr.s6_addr)) {
			ip->family = AF_INET;
			memcpy(ip->a, sin6.sin6_addr.s6_addr + 12, 4);
		} else {
			ip->family = AF_INET6;
			memcpy(ip->a, sin6.sin6_addr.s6_addr, 16);
		}
		return 0;
	}
	return -1;
}

const char *
addr_format(const struct sockaddr *sa, char *out, size_t cap)
{
	char text[ADDR_TEXT_MAX];

	if (sa != NULL && sa->sa_family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, sa, sizeof(sin));
		format_ip_port(AF_INET, &sin.sin_addr, ntohs(sin.sin_port), text);
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, sa, sizeof(sin6));
		format_ip_port(AF_INET6, &sin6.sin6_addr, ntohs(sin6.sin6_port), text);
	} else {
		strcpy(text, "unix");
	}
	snprintf(out, cap, "%s", text);
	return out;
}

static bool
prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;
	uint8_t mask;

	if (memcmp(a, net, bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	mask = (uint8_t)(0xff << (8 - bits));
	return (a[bytes] & mask) == (net[bytes] & mask);
}

int
addr_parse_cidr(const char *s, struct cidr *out, const char **why)
{
	char buf[INET6_ADDRSTRLEN];
	const char *slash;
	size_t alen;
	unsigned max;
	struct cidr c;

	memset(&c, 0, sizeof(c));
	if (why != NULL)
		*why = NULL;
	if (s == NULL)
		return -1;
	slash = strchr(s, '/');
	alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= sizeof(buf))
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (strchr(buf, ':') != NULL) {
		if (inet_pton(AF_INET6, buf, c.addr) != 1)
			return -1;
		c.family = AF_INET6;
		max = 128;
	} else {
		if (inet_pton(AF_INET, buf, c.addr) != 1)
			return -1;
		c.family = AF_INET;
		max = 32;
	}
	c.prefix = max;
	if (slash != NULL) {
		size_t n = strlen(slash + 1);
		unsigned v = 0;

		if (n == 0 || n > 3)
			return -1;
		for (size_t i = 0; i < n; i++) {
			if (!ascii_digit((unsigned char)slash[1 + i]))
				return -1;
			v = v * 10 + (unsigned)(slash[1 + i] - '0');
		}
		if (v > max)
			return -1;
		c.prefix = v;
	}
	for (unsigned i = c.prefix; i < max; i++) {
		if (c.addr[i / 8] & (0x80 >> (i % 8))) {
			if (why != NULL)
				*why = "host bits set";
			return -1;
		}
	}
	/* Peers in ::ffff:0:0/96 are compared as IPv4: store such nets so. */
	if (c.family == AF_INET6 && c.prefix >= 96 && addr_is_v4mapped(c.addr)) {
		memmove(c.addr, c.addr + 12, 4);
		memset(c.addr + 4, 0, 12);
		c.family = AF_INET;
		c.prefix -= 96;
	}
	*out = c;
	return 0;
}

bool
addr_cidr_match(const struct cidr *list, size_t n, const struct sockaddr *sa)
{
	struct ip_addr ip;

	if (addr_ip_from_sockaddr(sa, &ip) != 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (list[i].family == ip.family && prefix_match(ip.a, list[i].addr, list[i].prefix))
			return true;
	return false;
}

bool
addr_is_tailnet(const struct sockaddr *sa)
{
	static const struct cidr tailnet[] = {
		{ .family = AF_INET, .addr = { 100, 64 }, .prefix = 10 },
		{ .family = AF_INET6, .addr = { 0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0 }, .prefix = 48 },
	};

	return addr_cidr_match(tailnet, sizeof(tailnet) / sizeof(tailnet[0]), sa);
}

static int
parse_listen_unix(const char *path, struct listen_addr *out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t plen = strlen(path);

	if (path[0] != '/' || plen >= sizeof(sun.sun_path))
		return -1;
	for (const char *h = path; *h != '\0'; h++)
		if ((unsigned char)*h < 0x20 || *h == 0x7f)
			return -1;
	memcpy(sun.sun_path, path, plen);
	memcpy(&out->ss, &sun, sizeof(sun));
	out->sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
	out->kind = LISTEN_UNIX;
	return 0;
}

int
addr_parse_listen(const char *s, struct listen_addr *out)
{
	char host[INET6_ADDRSTRLEN];
	size_t len;
	uint16_t port;

	memset(out, 0, sizeof(*out));
	if (s == NULL || (len = strlen(s)) == 0 || len >= sizeof(out->text))
		return -1;
	memcpy(out->text, s, len + 1);
	if (strncmp(s, "unix:", 5) == 0)
		return parse_listen_unix(s + 5, out);
	if (addr_split_host_port(s, len, host, sizeof(host), &port) != 0)
		return -1;
	out->kind = LISTEN_TCP;
	if (s[0] == '[' || strcmp(host, "*") == 0) {
		struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
		if (s[0] != '[')
			sin6.sin6_addr = in6addr_any;
		else if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1)
			return -1;
		memcpy(&out->ss, &sin6, sizeof(sin6));
		out->sslen = sizeof(sin6);
	} else {
		struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
		if (strcasecmp(host, "localhost") == 0)
			sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		else if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
			return -1;
		memcpy(&out->ss, &sin, sizeof(sin));
		out->sslen = sizeof(sin);
	}
	return 0;
}
