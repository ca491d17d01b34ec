/*
 * TLS with mbedTLS's public API: certificates, one server configuration per
 * backend, SNI, ALPN, session tickets and the session cache, and the glue
 * between mbedTLS and a relay connection's buffers (struct relay_io).
 */
#ifndef FUNNELD_TLS_H
#define FUNNELD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>

#include "buf.h"
#include "config.h"
#include "result.h"

struct tls_ctx;
struct tls_parked;

#define TLS_NAME_MAX 256                /* a server name (a host name, at most 253 bytes) and its NUL */

/* One connection's TLS: the mbedTLS context and what its handshake learnt. */
struct tls_conn {
	mbedtls_ssl_context ssl;
	bool ready;                     /* ssl is set up: tls_conn_free() frees it */
	struct tls_parked *parked;      /* record buffers released while idle (tls_conn_trim) */
	struct relay_io *io;
	size_t server;                  /* the routed backend's index: its certificate and ALPN */
	const char *target_host;        /* the routed target's host: the server name without SNI */
	char sni[TLS_NAME_MAX];         /* the client's server name: a host name, lower case; "" if none */
	bool sni_rejected;
	int first_byte;                 /* of the client's TLS stream, -1 before any */
	uint64_t taken;                 /* bytes of that stream mbedTLS has taken from io->rx */
	unsigned char alert_sent;       /* fatal alert we sent during the handshake, 0 if none */
	bool hello_sent;                /* our first handshake message went out */
	char resumed[TLS_NAME_MAX];     /* server name of the session resumed, "" if none */
	bool resumption_mismatch;
};

/* The most io->tx may hold: a handshake flight with a long chain, or a buffer of records and an alert. */
#define TLS_TX_MAX (4 * BUF_SIZE)

/* Process-wide, once: mbedTLS's own set-up; what says what is in use (for the log). */
int tls_global_init(char *what, size_t len);
void tls_global_done(void);
/* Per thread: the random generator of every thread that runs TLS. */
int tls_thread_init(void);
void tls_thread_done(void);

/*
 * Load every certificate and key the configuration names and build one
 * server configuration per backend.  Errors read "FILE:LINE: what".
 */
int tls_load(const struct config *cfg, struct tls_ctx **out, char *err, size_t errlen);
void tls_free(struct tls_ctx *ctx);

/* Prepare tc for backend number backend of the configuration ctx was built from. */
int tls_conn_setup(const struct tls_ctx *ctx, size_t backend, const char *target_host, struct tls_conn *tc,
    struct relay_io *io);
void tls_conn_free(struct tls_conn *tc);

/* mbedtls_ssl_handshake, with resumption bound to the server name. */
int tls_conn_handshake(struct tls_conn *tc);

/* Why a handshake that returned err failed. */
enum hs_failure tls_conn_failure(const struct tls_conn *tc, int err);

/*
 * Free mbedTLS's record buffers while a connection is idle (where the
 * library allows it; not an input buffer holding a record it has not
 * processed).  True when one was.  tls_conn_untrim() puts them back, and
 * must run before any mbedTLS call that reads or writes records: false
 * when out of memory (the connection cannot go on).
 */
bool tls_conn_trim(struct tls_conn *tc);
bool tls_conn_untrim(struct tls_conn *tc);

/* mbedtls_strerror into buf. */
const char *tls_strerror(int err, char *buf, size_t len);

#endif
