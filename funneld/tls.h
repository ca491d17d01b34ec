/* TLS with mbedTLS: certificates, one server configuration per backend,
 * SNI, ALPN, session tickets and cache, and the socket glue. */
#ifndef FUNNELD_TLS_H
#define FUNNELD_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>

#include "config.h"

struct tls_ctx;

/* What a connection's TLS context reaches through its BIO pointer. */
struct tls_io {
	int fd;
	const char *target_host;        /* the target the relay asked for, for SNI */
	size_t backend;                 /* index of the backend in the configuration */
	char sni[256];                  /* the client's server name, "" if none */
	bool sni_rejected;
	int first_byte;                 /* of the client's TLS stream, -1 before any */
	unsigned char alert_sent;       /* fatal alert we sent during the handshake, 0 if none */
	const char *resumed_name;       /* server name of the session resumed, if any */
	bool resumption_mismatch;
	/* While staging, what mbedTLS sends is collected here, so that a
	 * handshake flight (and the 101 before it) goes out in one send(). */
	bool staging;
	unsigned char *stage;
	size_t stage_len, stage_cap;
	unsigned char *ahead;           /* read ahead of mbedTLS, not yet handed to it */
	size_t ahead_off, ahead_len;
};

void tls_io_free(struct tls_io *io);            /* what the glue still holds */

/* Collect sends instead of making them; tls_stage_add() queues bytes too. */
void tls_stage_begin(struct tls_io *io);
int tls_stage_add(struct tls_io *io, const void *data, size_t len);
void tls_stage_end(struct tls_io *io);          /* frees the stage; sends go direct again */

/* Process-wide: RNG for this thread; call in every thread using TLS. */
int tls_thread_init(void);
void tls_thread_done(void);
void tls_global_done(void);

/*
 * Load every certificate and key the configuration names and build one
 * server configuration per backend.  Errors read "FILE:LINE: what".
 */
int tls_load(const struct config *cfg, struct tls_ctx **out, char *err, size_t errlen);
void tls_free(struct tls_ctx *ctx);

/* Prepare ssl for backend number bi of the configuration ctx was built from. */
int tls_conn_setup(const struct tls_ctx *ctx, size_t bi, mbedtls_ssl_context *ssl, struct tls_io *io);

/* mbedtls_ssl_handshake, with resumption bound to the server name. */
int tls_handshake(mbedtls_ssl_context *ssl, struct tls_io *io);

/* A short, stable name for a handshake failure (for logs and metrics). */
const char *tls_failure_reason(int mbedtls_err, const struct tls_io *io);
/* mbedtls_strerror into buf. */
const char *tls_strerror(int err, char *buf, size_t len);

#endif
