/* Logging: readable lines on stderr, or journald's native protocol with
 * structured fields when stderr is the journal (JOURNAL_STREAM). */
#ifndef FUNNELD_LOG_H
#define FUNNELD_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

void log_init(void);                    /* decides stderr vs journald */
void log_set_level(enum log_level lvl);
bool log_to_journal(void);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));   /* appends strerror(errno) */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The one record a connection leaves when it ends. */
struct conn_record {
	uint64_t id;
	const char *listener;           /* "ingress" (POST /v0/ingress) or "tls" (a [listener]) */
	const char *client;             /* "tailnet" or "internet" (by src), NULL when unknown */
	const char *peer, *src, *target, *backend, *sni, *alpn, *tls_version, *cipher;
	uint64_t bytes_in, bytes_out;   /* plaintext: client→backend, backend→client */
	uint64_t duration_ms;
	const char *result;             /* "ok", "refused_404", "handshake_failed", ... */
	const char *reason;             /* detail, may be NULL */
	int status;                     /* HTTP status answered (101 for a hijack), 0 if none */
};
void log_conn(const struct conn_record *r);

#endif
