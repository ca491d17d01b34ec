/* Unit tests of the address rules (funneld/addr.c), cmocka 1.1. */
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "addr.h"

static struct sockaddr_storage
sa(const char *addr, uint16_t port)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(addr, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
	}
	return ss;
}

static bool
match(const struct cidr *list, size_t n, const char *addr)
{
	struct sockaddr_storage ss = sa(addr, 1);

	return addr_cidr_match(list, n, (struct sockaddr *)&ss);
}

static int
port_of(const char *s, uint16_t *port)
{
	return addr_parse_port(s, strlen(s), port);
}

static void
test_ports(void **state)
{
	static const char *const bad[] = { "", "0", "00000", "65536", "99999", "123456", "+1", "-1", " 1", "1 ",
		"0x10", "1a" };
	uint16_t port;

	assert_int_equal(port_of("1", &port), 0);
	assert_int_equal(port, 1);
	assert_int_equal(port_of("65535", &port), 0);
	assert_int_equal(port, 65535);
	/* Leading zeros are taken, as Go does; at most 5 digits. */
	assert_int_equal(port_of("00443", &port), 0);
	assert_int_equal(port, 443);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (port_of(bad[i], &port) != -1)
			print_error("port \"%s\" accepted\n", bad[i]);
		assert_int_equal(port_of(bad[i], &port), -1);
	}
	assert_int_equal(addr_parse_port(NULL, 0, &port), -1);
	/* len, not the NUL, bounds it. */
	assert_int_equal(addr_parse_port("4431", 3, &port), 0);
	assert_int_equal(port, 443);
}

static void
test_split_host_port(void **state)
{
	static const char *const bad[] = { "", ":443", "host", "host:", "host:0", "a:b:443", "::1:443",
		"[::1]", "[::1]443", "[]:443", "[::1]:", "[[::1]]:443", "h]ost:443", "h[ost:443", "host:44 3" };
	char host[64];
	uint16_t port;

	assert_int_equal(addr_split_host_port("node.ts.net:443", 15, host, sizeof(host), &port), 0);
	assert_string_equal(host, "node.ts.net");
	assert_int_equal(port, 443);
	assert_int_equal(addr_split_host_port("[2001:db8::1]:8443", 18, host, sizeof(host), &port), 0);
	assert_string_equal(host, "2001:db8::1");
	assert_int_equal(port, 8443);
	/* The shape only: "*" passes, so does a name with bad characters. */
	assert_int_equal(addr_split_host_port("*:1", 3, host, sizeof(host), &port), 0);
	assert_string_equal(host, "*");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (addr_split_host_port(bad[i], strlen(bad[i]), host, sizeof(host), &port) != -1)
			print_error("\"%s\" split\n", bad[i]);
		assert_int_equal(addr_split_host_port(bad[i], strlen(bad[i]), host, sizeof(host), &port), -1);
	}
	/* A NUL inside, a host that does not fit. */
	assert_int_equal(addr_split_host_port("a\0b:1", 5, host, sizeof(host), &port), -1);
	assert_int_equal(addr_split_host_port("abcd:1", 6, host, 4, &port), -1);
	assert_int_equal(addr_split_host_port("abc:1", 5, host, 4, &port), 0);
}

static void
test_split_host_port_table(void **state)
{
	static const struct {
		const char *in;
		int ok;
		const char *host;
		uint16_t port;
	} cases[] = {
		{ "a:1", 0, "a", 1 },
		{ "127.0.0.1:4443", 0, "127.0.0.1", 4443 },
		{ "[::1]:443", 0, "::1", 443 },
		{ "*:8443", 0, "*", 8443 },
		{ "host:65535", 0, "host", 65535 },
		{ "host:065535", -1, NULL, 0 },
		{ "host:65536", -1, NULL, 0 },
		{ "host:0", -1, NULL, 0 },
		{ "host:", -1, NULL, 0 },
		{ ":80", -1, NULL, 0 },
		{ "host", -1, NULL, 0 },
		{ "", -1, NULL, 0 },
		{ "::1:443", -1, NULL, 0 },
		{ "[::1]", -1, NULL, 0 },
		{ "[::1]443", -1, NULL, 0 },
		{ "[]:443", -1, NULL, 0 },
		{ "[::1:443", -1, NULL, 0 },
		{ "[[::1]]:443", -1, NULL, 0 },
		{ "a]:1", -1, NULL, 0 },
		{ "a[:1", -1, NULL, 0 },
		{ "a:1a", -1, NULL, 0 },
	};
	char host[64];
	uint16_t port;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		port = 7;
		int r = addr_split_host_port(cases[i].in, strlen(cases[i].in), host,
		    sizeof(host), &port);
		if (r != cases[i].ok)
			fail_msg("addr_split_host_port(\"%s\") = %d", cases[i].in, r);
		if (r == 0) {
			assert_string_equal(host, cases[i].host);
			assert_int_equal(port, cases[i].port);
		}
	}
	/* len bounds the input: no NUL needed, and none allowed inside. */
	assert_int_equal(addr_split_host_port("a:12345", 4, host, sizeof(host), &port), 0);
	assert_int_equal(port, 12);
	assert_int_equal(addr_split_host_port("a\0b:1", 5, host, sizeof(host), &port), -1);
	/* The host must fit with its NUL. */
	assert_int_equal(addr_split_host_port("abcd:1", 6, host, 4, &port), -1);
	assert_int_equal(addr_split_host_port("abc:1", 5, host, 4, &port), 0);
	assert_string_equal(host, "abc");
}

static void
test_hostnames(void **state)
{
	char label63[64], label64[65], name253[254], name254[255];

	memset(label63, 'a', 63);
	label63[63] = '\0';
	memset(label64, 'a', 64);
	label64[64] = '\0';
	/* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
	snprintf(name253, sizeof(name253), "%s.%s.%s.%.*s", label63, label63, label63, 61, label63);
	snprintf(name254, sizeof(name254), "%s.%s.%s.%.*s", label63, label63, label63, 62, label63);
	assert_int_equal(strlen(name253), 253);

	assert_true(addr_hostname_valid("node.tailnet.ts.net", 19));
	assert_true(addr_hostname_valid("A-b_c.9", 7));
	assert_true(addr_hostname_valid(label63, 63));
	assert_false(addr_hostname_valid(label64, 64));
	assert_true(addr_hostname_valid(name253, 253));
	assert_false(addr_hostname_valid(name254, 254));
	assert_false(addr_hostname_valid("", 0));
	assert_false(addr_hostname_valid("a..b", 4));
	assert_false(addr_hostname_valid(".a", 2));
	assert_false(addr_hostname_valid("a.", 2));
	assert_false(addr_hostname_valid("a b", 3));
	assert_false(addr_hostname_valid("a\rb", 3));
	assert_false(addr_hostname_valid("a\033b", 3));
	assert_false(addr_hostname_valid("caf\xc3\xa9", 5));
	assert_false(addr_hostname_valid("*.a", 3));
	assert_false(addr_hostname_valid("a:b", 3));
}

/* As SNI is checked: one trailing dot stripped first. */
static bool
valid(const char *s)
{
	size_t len = strlen(s);

	return addr_hostname_valid(s, len > 1 && s[len - 1] == '.' ? len - 1 : len);
}

static void
test_sni_names_valid(void **state)
{
	char	name[300];

	assert_true(valid("node.tailnet.ts.net"));
	assert_true(valid("a"));
	assert_true(valid("a."));
	assert_true(valid("Node.Tailnet.TS.net."));
	assert_true(valid("xn--bcher-kva.example"));
	assert_true(valid("_acme-challenge.a-b.c_d"));
	assert_true(valid("-lead.trail-"));
	assert_true(valid("192.0.2.1"));

	/* Labels of 63 bytes pass, 64 do not. */
	memset(name, 'a', 63);
	name[63] = '\0';
	assert_true(valid(name));
	memset(name, 'a', 64);
	name[64] = '\0';
	assert_false(valid(name));
	strcpy(name + 63, ".b");
	assert_true(valid(name));

	/* 253 bytes pass (254 with the trailing dot), 254 do not. */
	for (int i = 0; i < 253; i++)
		name[i] = i % 2 ? '.' : 'a';
	name[253] = '\0';
	assert_true(valid(name));
	name[253] = '.';
	name[254] = '\0';
	assert_true(valid(name));
	name[253] = 'a';
	name[254] = '\0';
	assert_false(valid(name));
}

static void
test_sni_names_invalid(void **state)
{
	static const char *bad[] = {
		"", ".", "..", "a..b", ".a", "a..", "a b", "a\r", "a\n.b", "*.example",
		"a/b", "a:443", "[::1]", "b\xc3\xa9", "a\\b", "a=b", "\"a\"", "a\x7f",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (valid(bad[i]))
			fail_msg("accepted \"%s\"", bad[i]);
	/* A NUL inside the length is not the end of the name. */
	assert_false(addr_hostname_valid("a\0b", 3));
	assert_true(addr_hostname_valid("ab\0", 2));
	assert_false(addr_hostname_valid(NULL, 0));
}

static void
test_normalize_and_targets(void **state)
{
	char host[ADDR_HOST_MAX + 1];
	uint16_t port;

	assert_int_equal(addr_normalize_host("Node.TS.net.", 12, false, host), 0);
	assert_string_equal(host, "node.ts.net");
	assert_int_equal(addr_normalize_host("node.ts.net..", 13, false, host), -1);
	assert_int_equal(addr_normalize_host(".", 1, false, host), -1);
	assert_int_equal(addr_normalize_host("2001:DB8:0:0::1", 15, true, host), 0);
	assert_string_equal(host, "2001:db8::1");
	assert_int_equal(addr_normalize_host("1.2.3.4", 7, true, host), -1);

	assert_int_equal(addr_parse_target("NODE.ts.net.:443", 16, host, &port), 0);
	assert_string_equal(host, "node.ts.net");
	assert_int_equal(port, 443);
	assert_int_equal(addr_parse_target("[::FFFF:1.2.3.4]:1", 18, host, &port), 0);
	assert_string_equal(host, "::ffff:1.2.3.4");
	assert_int_equal(addr_parse_target("1.2.3.4:80", 10, host, &port), 0);
	assert_string_equal(host, "1.2.3.4");
	assert_int_equal(addr_parse_target("a..b:1", 6, host, &port), -1);
	assert_int_equal(addr_parse_target("[1.2.3.4]:1", 11, host, &port), -1);
	assert_int_equal(addr_parse_target("*:443", 5, host, &port), -1);
	assert_int_equal(addr_parse_target("exa mple:443", 12, host, &port), -1);
}

static void
test_ip_port(void **state)
{
	static const char *const bad[] = { "1.2.3.4", "1.2.3:4", "01.2.3.4:5", "1.2.3.4.5:6", "256.1.1.1:1",
		"[1.2.3.4]:5", "[fe80::1%eth0]:5", "host:5", "::1:5", "1.2.3.4:0" };
	struct sockaddr_storage ss;
	char text[ADDR_TEXT_MAX];

	assert_int_equal(addr_parse_ip_port("203.0.113.7:01234", 17, &ss, text), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_string_equal(text, "203.0.113.7:1234");
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 1234);
	assert_int_equal(addr_parse_ip_port("[2001:DB8:0::7]:443", 19, &ss, text), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_string_equal(text, "[2001:db8::7]:443");
	/* The longest text fits. */
	assert_int_equal(addr_parse_ip_port("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", 53, &ss, text), 0);
	assert_string_equal(text, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	assert_int_equal(addr_parse_ip_port("[::ffff:255.255.255.255]:65535", 30, &ss, text), 0);
	assert_string_equal(text, "[::ffff:255.255.255.255]:65535");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (addr_parse_ip_port(bad[i], strlen(bad[i]), &ss, text) != -1)
			print_error("\"%s\" accepted\n", bad[i]);
		assert_int_equal(addr_parse_ip_port(bad[i], strlen(bad[i]), &ss, text), -1);
	}
}

static void
test_ip_from_sockaddr_and_format(void **state)
{
	struct sockaddr_storage ss;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ip_addr ip;
	char out[ADDR_TEXT_MAX];

	ss = sa("192.0.2.1", 80);
	assert_int_equal(addr_ip_from_sockaddr((struct sockaddr *)&ss, &ip), 0);
	assert_int_equal(ip.family, AF_INET);
	assert_memory_equal(ip.a, "\xc0\x00\x02\x01", 4);
	assert_int_equal(ip.port, 80);
	assert_string_equal(addr_format((struct sockaddr *)&ss, out, sizeof(out)), "192.0.2.1:80");

	/* IPv4-mapped: an IPv4 address to rules and headers, printed as the socket has it. */
	ss = sa("::ffff:192.0.2.1", 443);
	assert_int_equal(addr_ip_from_sockaddr((struct sockaddr *)&ss, &ip), 0);
	assert_int_equal(ip.family, AF_INET);
	assert_memory_equal(ip.a, "\xc0\x00\x02\x01", 4);
	assert_int_equal(ip.port, 443);
	assert_true(addr_is_v4mapped(((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr));
	assert_string_equal(addr_format((struct sockaddr *)&ss, out, sizeof(out)), "[::ffff:192.0.2.1]:443");

	ss = sa("2001:db8::1", 1);
	assert_int_equal(addr_ip_from_sockaddr((struct sockaddr *)&ss, &ip), 0);
	assert_int_equal(ip.family, AF_INET6);
	assert_false(addr_is_v4mapped(((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr));
	assert_string_equal(addr_format((struct sockaddr *)&ss, out, sizeof(out)), "[2001:db8::1]:1");

	assert_int_equal(addr_ip_from_sockaddr((struct sockaddr *)&sun, &ip), -1);
	assert_int_equal(addr_ip_from_sockaddr(NULL, &ip), -1);
	assert_string_equal(addr_format((struct sockaddr *)&sun, out, sizeof(out)), "unix");
	assert_string_equal(addr_format(NULL, out, sizeof(out)), "unix");
	/* A short buffer truncates, NUL-terminated. */
	ss = sa("192.0.2.1", 80);
	assert_string_equal(addr_format((struct sockaddr *)&ss, out, 5), "192.");
}

static void
test_parse_cidr(void **state)
{
	static const char *const bad[] = {
		"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0/8", "10.0.0.0/8/8", "10.0.0.0/-1",
		"10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0/0008", "::/129", "fe80::1%eth0", "1.2.3.4.5",
		"010.0.0.0/8", "example.com/8", " 10.0.0.0/8", "10.0.0.1/8", "fd7a::1/16",
		"::1/0", "0.0.0.1/0", "11.0.0.0/7",
	};
	struct cidr c;
	size_t i;

	assert_int_equal(addr_parse_cidr("10.0.0.0/8", &c, NULL), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_memory_equal(c.addr, "\x0a\0\0\0", 4);
	assert_int_equal(addr_parse_cidr("0.0.0.0/0", &c, NULL), 0);
	assert_int_equal(c.prefix, 0);
	assert_int_equal(addr_parse_cidr("192.0.2.7", &c, NULL), 0);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(addr_parse_cidr("192.0.2.7/32", &c, NULL), 0);
	assert_int_equal(addr_parse_cidr("100.64.0.0/10", &c, NULL), 0);
	assert_int_equal(addr_parse_cidr("::/0", &c, NULL), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 0);
	assert_int_equal(addr_parse_cidr("2001:db8::1", &c, NULL), 0);
	assert_int_equal(c.prefix, 128);
	assert_int_equal(addr_parse_cidr("fd7a:115c:a1e0::/48", &c, NULL), 0);
	assert_int_equal(c.prefix, 48);
	/* IPv4-mapped nets become IPv4, as peers are compared. */
	assert_int_equal(addr_parse_cidr("::ffff:10.0.0.0/104", &c, NULL), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_memory_equal(c.addr, "\x0a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	assert_int_equal(addr_parse_cidr("::ffff:0:0/96", &c, NULL), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 0);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (addr_parse_cidr(bad[i], &c, NULL) != -1)
			print_error("CIDR \"%s\" accepted\n", bad[i]);
		assert_int_equal(addr_parse_cidr(bad[i], &c, NULL), -1);
	}
	assert_int_equal(addr_parse_cidr(NULL, &c, NULL), -1);

}
static void
test_cidr_match(void **state)
{
	struct cidr list[3];
	struct sockaddr_un sun;

	assert_int_equal(addr_parse_cidr("100.64.0.0/10", &list[0], NULL), 0);
	assert_int_equal(addr_parse_cidr("fd7a:115c:a1e0::/48", &list[1], NULL), 0);
	assert_int_equal(addr_parse_cidr("192.0.2.9", &list[2], NULL), 0);

	assert_true(match(list, 3, "100.64.0.0"));
	assert_true(match(list, 3, "100.100.1.2"));
	assert_true(match(list, 3, "100.127.255.255"));
	assert_false(match(list, 3, "100.128.0.0"));
	assert_false(match(list, 3, "100.63.255.255"));
	assert_true(match(list, 3, "192.0.2.9"));
	assert_false(match(list, 3, "192.0.2.8"));
	assert_true(match(list, 3, "fd7a:115c:a1e0::1"));
	assert_true(match(list, 3, "fd7a:115c:a1e0:ffff:ffff:ffff:ffff:ffff"));
	assert_false(match(list, 3, "fd7a:115c:a1e1::1"));
	assert_false(match(list, 3, "::1"));
	/* IPv4-mapped peers compare as IPv4. */
	assert_true(match(list, 3, "::ffff:100.101.102.103"));
	assert_true(match(list, 3, "::ffff:192.0.2.9"));
	assert_false(match(list, 3, "::ffff:100.128.0.1"));
	/* An empty list, or the first n only. */
	assert_false(match(list, 0, "100.64.0.1"));
	assert_false(match(list, 2, "192.0.2.9"));

	/* ::/0 does not take IPv4 peers, mapped or not; 0.0.0.0/0 takes them all. */
	assert_int_equal(addr_parse_cidr("::/0", &list[0], NULL), 0);
	assert_false(match(list, 1, "::ffff:1.2.3.4"));
	assert_false(match(list, 1, "1.2.3.4"));
	assert_true(match(list, 1, "2001:db8::1"));
	assert_int_equal(addr_parse_cidr("0.0.0.0/0", &list[0], NULL), 0);
	assert_true(match(list, 1, "::ffff:1.2.3.4"));
	assert_true(match(list, 1, "255.255.255.255"));
	assert_false(match(list, 1, "2001:db8::1"));

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	assert_false(addr_cidr_match(list, 1, (struct sockaddr *)&sun));
	assert_false(addr_cidr_match(list, 1, NULL));
}
static void
test_parse_listen(void **state)
{
	static const char *const bad[] = {
		"", "1.2.3:80", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:", "1.2.3.4:+80",
		"1.2.3.4:080000", ":80", "::1:80", "[::1]80", "[::1]", "[1.2.3.4]:80", "[fe80::1%eth0]:80",
		"example.com:80", "*", "*:", "unix:", "unix:run/x.sock", "unix:/a\tb", " 1.2.3.4:80",
		"1.2.3.4:80 ",
	};
	struct listen_addr la;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&la.ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&la.ss;
	struct sockaddr_un *su = (struct sockaddr_un *)&la.ss;
	char path[256];
	size_t i;

	assert_int_equal(addr_parse_listen("127.0.0.1:4443", &la), 0);
	assert_int_equal(la.kind, LISTEN_TCP);
	assert_int_equal(s4->sin_family, AF_INET);
	assert_int_equal(ntohs(s4->sin_port), 4443);
	assert_int_equal(ntohl(s4->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(la.sslen, sizeof(struct sockaddr_in));
	assert_string_equal(la.text, "127.0.0.1:4443");

	assert_int_equal(addr_parse_listen("LocalHost:1", &la), 0);
	assert_int_equal(ntohl(s4->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(ntohs(s4->sin_port), 1);

	assert_int_equal(addr_parse_listen("[::1]:65535", &la), 0);
	assert_int_equal(s6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(s6->sin6_port), 65535);
	assert_true(IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr));
	assert_int_equal(la.sslen, sizeof(struct sockaddr_in6));

	assert_int_equal(addr_parse_listen("*:443", &la), 0);
	assert_int_equal(s6->sin6_family, AF_INET6);
	assert_true(IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr));
	assert_int_equal(ntohs(s6->sin6_port), 443);
	assert_string_equal(la.text, "*:443");

	assert_int_equal(addr_parse_listen("unix:/run/funneld/ingress.sock", &la), 0);
	assert_int_equal(la.kind, LISTEN_UNIX);
	assert_int_equal(su->sun_family, AF_UNIX);
	assert_string_equal(su->sun_path, "/run/funneld/ingress.sock");
	assert_int_equal(la.sslen, offsetof(struct sockaddr_un, sun_path) + strlen("/run/funneld/ingress.sock") + 1);

	/* sun_path holds 107 bytes and the NUL. */
	memcpy(path, "unix:/", 6);
	memset(path + 6, 'p', 106);
	path[112] = '\0';
	assert_int_equal(addr_parse_listen(path, &la), 0);
	assert_int_equal(strlen(su->sun_path), 107);
	path[112] = 'p';
	path[113] = '\0';
	assert_int_equal(addr_parse_listen(path, &la), -1);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (addr_parse_listen(bad[i], &la) != -1)
			print_error("listen \"%s\" accepted\n", bad[i]);
		assert_int_equal(addr_parse_listen(bad[i], &la), -1);
	}
	assert_int_equal(addr_parse_listen(NULL, &la), -1);

}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ports),
		cmocka_unit_test(test_split_host_port),
		cmocka_unit_test(test_split_host_port_table),
		cmocka_unit_test(test_hostnames),
		cmocka_unit_test(test_sni_names_valid),
		cmocka_unit_test(test_sni_names_invalid),
		cmocka_unit_test(test_normalize_and_targets),
		cmocka_unit_test(test_ip_port),
		cmocka_unit_test(test_ip_from_sockaddr_and_format),
		cmocka_unit_test(test_parse_cidr),
		cmocka_unit_test(test_cidr_match),
		cmocka_unit_test(test_parse_listen),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
