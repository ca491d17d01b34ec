/* Backends; see backend.h. */
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "backend.h"
#include "proxy_protocol.h"

const struct backend_conf *
backend_route(const struct config *cfg, const char *host, uint16_t port)
{
	const struct backend_conf *wild = NULL;
	char canon[ADDR_HOST_MAX + 1];
	size_t len;

	if (cfg == NULL)
		return NULL;
	if (host == NULL)
		host = "";
	/* Compared as targets are stored: an IPv6 literal canonical, a name in lower case. */
	len = strlen(host);
	if (addr_normalize_host(host, len, memchr(host, ':', len) != NULL, canon) == 0)
		host = canon;
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct backend_conf *b = &cfg->backends[i];
		if (b->port != port)
			continue;
		if (b->host == NULL) {
			if (wild == NULL)
				wild = b;
		} else if (strcmp(b->host, host) == 0) {
			return b;
		}
	}
	return wild;
}

int
backend_connect(const struct backend_conf *b)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	/* The configuration refuses longer paths. */
	if (strlen(b->socket) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sun.sun_path, b->socket);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	/* A Unix socket connects at once or not at all (EAGAIN: backlog full). */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int
backend_proxy_header(const struct backend_conf *b, const struct backend_client *client, uint8_t *out, size_t cap)
{
	struct sockaddr_storage dst;

	if (b->proxy == PROXY_OFF)
		return 0;
	proxy_destination(client->src, client->local, client->target_port, &dst);
	struct proxy_info pi = {
		.src = client->src,
		.dst = (struct sockaddr *)&dst,
		.authority = client->authority,
		.alpn = client->alpn,
		.tls_version = client->tls_version,
		.cipher = client->cipher,
	};
	return b->proxy == PROXY_V1 ? proxy_build_v1(&pi, out, cap) : proxy_build_v2(&pi, out, cap);
}
