/* libFuzzer target: arbitrary bytes as a configuration file. */
#include <sys/socket.h>
#include <netinet/in.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const hosts[] = { "node.tailnet.ts.net", "NODE.tailnet.ts.net.", "x", "", "::1" };
	struct sockaddr_in6 sin6;
	struct config *cfg = NULL;
	char err[CONFIG_ERR_MAX];
	char *text;
	size_t i;

	/* Exercise the expansion path too; the replay build has no init hook. */
	setenv("CREDENTIALS_DIRECTORY", "/run/credentials/funneld.service", 0);
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (config_parse_string("fuzz.conf", text, &cfg, err, sizeof(err)) == 0) {
		for (i = 0; i < cfg->nbackends; i++) {
			const struct backend_conf *b = &cfg->backends[i];

			/* What the daemon relies on after a successful parse. */
			if (b->socket == NULL || b->tls.cert == NULL || b->tls.key == NULL ||
			    (b->tls.alpn.n > 0 && b->tls.alpn.v[b->tls.alpn.n] != NULL) ||
			    backend_route(cfg, b->host, b->port) != b)
				abort();
		}
		if (cfg->nciphers == 0 || cfg->ciphers[cfg->nciphers] != 0 ||
		    cfg->ncurves == 0 || cfg->curves[cfg->ncurves] != 0)
			abort();
		for (i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++)
			(void)backend_route(cfg, hosts[i], 443);
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_addr.s6_addr[10] = sin6.sin6_addr.s6_addr[11] = 0xff;
		sin6.sin6_addr.s6_addr[12] = 100;
		sin6.sin6_addr.s6_addr[13] = 64;
		(void)addr_cidr_match(cfg->allow, cfg->nallow, (struct sockaddr *)&sin6);
		config_free(cfg);
	} else if (cfg != NULL || strchr(err, ':') == NULL)
		abort();
	free(text);
	return 0;
}
