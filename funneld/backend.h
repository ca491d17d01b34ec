/* Backends: which one serves a target, connecting its Unix socket, and the PROXY header it gets. */
#ifndef FUNNELD_BACKEND_H
#define FUNNELD_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

/*
 * The backend serving a target: exact host (any case, a trailing dot
 * ignored, an IPv6 literal in any form), then "*:port".  NULL when none.
 * Pure.
 */
const struct backend_conf *backend_route(const struct config *cfg, const char *host, uint16_t port);

/* A non-blocking connection to the backend's Unix socket, or -1 (errno). */
int backend_connect(const struct backend_conf *b);

/* What the PROXY header says about the client's side of the connection. */
struct backend_client {
	const struct sockaddr *src;     /* the public client */
	const struct sockaddr *local;   /* local address of the relay's connection (may be AF_UNIX) */
	uint16_t target_port;
	const char *authority, *alpn, *tls_version, *cipher;    /* may be NULL */
};

/*
 * The PROXY header backend b wants, into out (PROXY_HEADER_MAX bytes):
 * its length, 0 when b wants none, -1 when it cannot be built.  Pure.
 */
int backend_proxy_header(const struct backend_conf *b, const struct backend_client *client, uint8_t *out,
    size_t cap);

#endif
