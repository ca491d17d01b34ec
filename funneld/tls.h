/* TLS with mbedTLS: certificates, one server configuration per backend,
 * SNI, ALPN, session tickets and cache, and the socket glue. */
#ifndef FUNNELD_TLS_H
#define FUNNELD_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>

#include "buf.h"
#include "config.h"

struct tls_ctx;

/*
 * What a connection's TLS context reaches through its BIO pointer.  mbedTLS
 * never touches the socket itself: it takes ciphertext from rx, which is
 * read ahead of it, and puts what it sends into tx, which the connection
 * flushes, so that a handshake flight (with the 101 before it) or several
 * records leave in one send().
 */
struct tls_io {
	int fd;
	struct bufpool *pool;
	bool readable;                  /* the socket may hold bytes: cleared by a short read */
	struct buf rx;                  /* read from the socket, not yet taken by mbedTLS */
	struct buf tx;                  /* written by mbedTLS, not yet sent */
	const char *target_host;        /* the target the relay asked for, for SNI */
	size_t backend;                 /* index of the backend in the configuration */
	char sni[256];                  /* the client's server name, "" if none */
	bool sni_rejected;
	int first_byte;                 /* of the client's TLS stream, -1 before any */
	unsigned char alert_sent;       /* fatal alert we sent during the handshake, 0 if none */
	const char *resumed_name;       /* server name of the session resumed, if any */
	bool resumption_mismatch;
};

/* The most tx can hold: a handshake flight with a long chain, or a buffer of records and an alert. */
#define TLS_TX_MAX (4 * BUF_SIZE)

void tls_io_free(struct tls_io *io);            /* gives back what rx and tx hold */

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

/*
 * Give the memory behind mbedTLS's two ~16.7 KiB record buffers back to the
 * kernel while a connection is idle; they fault back in when used.  Does
 * nothing while mbedTLS holds input it has not processed.
 */
void tls_trim(mbedtls_ssl_context *ssl);

/* A short, stable name for a handshake failure (for logs and metrics). */
const char *tls_failure_reason(int mbedtls_err, const struct tls_io *io);
/* mbedtls_strerror into buf. */
const char *tls_strerror(int err, char *buf, size_t len);

#endif
