/*
 * The only place funneld reaches into mbedTLS's private structures.
 *
 * Compiled for mbedTLS 2.28.x and 3.6.x exactly (the lines these accesses
 * were written and tested for: Debian 12's 2.28.3, Debian 13's 3.6.6), and
 * used only when the library running is the one compiled against
 * (tls_internals_init).  Everywhere else every function here does nothing
 * and the public API path is all there is.  Called from tls.c only.
 */
#ifndef FUNNELD_TLS_INTERNALS_H
#define FUNNELD_TLS_INTERNALS_H

#include <stdbool.h>

#include <mbedtls/ssl.h>

/* At start-up: whether the internals are in use (compiled in, and the
 * running library is the version they were written for).  what gets a
 * line for the log. */
bool tls_internals_init(char *what, size_t len);

/*
 * ECDHE base-point tables, 2.28 only (it recomputes the comb table of G for
 * every handshake; 3.x has ROM tables): compute one per curve at load, lend it to a handshake while it
 * makes its ServerKeyExchange key, take it back when mbedtls_ssl_handshake()
 * returns.
 */
void tls_internals_prepare_curve(int grp_id, int (*rng)(void *, unsigned char *, size_t));
void tls_internals_lend_base_table(mbedtls_ssl_context *ssl);
void tls_internals_take_back(mbedtls_ssl_context *ssl);

/* A handshake completed: free what the library keeps of it and needs no
 * more (3.6's TLS 1.3 handshake parameters). */
void tls_internals_handshake_done(mbedtls_ssl_context *ssl);

/*
 * An idle connection's record buffers: release (free) those that hold
 * nothing mbedTLS has yet to process, keeping aside what it needs of them in
 * *parked; restore them before any mbedTLS call that reads or writes
 * records (false: out of memory, the connection cannot go on); forget what
 * is parked when the connection ends without a restore (mbedtls_ssl_free()
 * takes released buffers as absent).  True from release: something was.
 */
struct tls_parked;
bool tls_internals_release(mbedtls_ssl_context *ssl, struct tls_parked **parked);
bool tls_internals_restore(mbedtls_ssl_context *ssl, struct tls_parked **parked);
void tls_internals_forget(struct tls_parked **parked);

void tls_internals_done(void);

#endif
