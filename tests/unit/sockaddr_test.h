/*
 * Socket addresses for unit tests: one from text, one checked against text.
 * Include after <cmocka.h>.
 */
#ifndef SOCKADDR_TEST_H
#define SOCKADDR_TEST_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define SA(ss) ((const struct sockaddr *)&(ss))

/* A socket address from "1.2.3.4" or "2001:db8::1" and a port. */
static inline struct sockaddr_storage
sa(const char *ip, uint16_t port)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
	} else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
	} else
		fail_msg("bad address in test: %s", ip);
	return ss;
}

/* Check *ss is family/ip/port exactly. */
static inline void
assert_sa(const struct sockaddr_storage *ss, int family, const char *ip,
    uint16_t port)
{
	char	 buf[INET6_ADDRSTRLEN];

	assert_int_equal(ss->ss_family, family);
	if (family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf,
		    sizeof(buf)));
		assert_int_equal(ntohs(sin->sin_port), port);
	} else {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)ss;

		assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, buf,
		    sizeof(buf)));
		assert_int_equal(ntohs(sin6->sin6_port), port);
	}
	assert_string_equal(buf, ip);
}

#endif
