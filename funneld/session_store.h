/*
 * The TLS 1.2 session-ID cache: serialised sessions in one table of fixed
 * size, allocated once, shared by every worker.  mbedTLS's own cache makes
 * one small allocation per session in whichever heap the handshake ran in,
 * where each pins a page long after the connections around it are gone;
 * here the sessions stay in their own memory, and a flood of handshakes
 * costs no more than the table.  Pure: no clock, no mbedTLS.
 *
 * An entry belongs to an owner (a resumption partition: one per server
 * name), so a session made for one name is never found under another.
 * Owners are never reused (an evicted partition's entries simply age out).
 * When a session's hash slots are full, the oldest of them goes.
 */
#ifndef FUNNELD_SESSION_STORE_H
#define FUNNELD_SESSION_STORE_H

#include <stddef.h>
#include <stdint.h>

#define SESSION_ID_MAX 32
#define SESSION_BLOB_MAX 240            /* a serialised server session (about 110 bytes) */
#define SESSION_STORE_WAYS 8            /* slots a session may take */

struct session_store;

/* capacity entries (a power of two, at least SESSION_STORE_WAYS); key: a
 * secret random hash key.  NULL when out of memory or a bad capacity. */
struct session_store *session_store_new(size_t capacity, const uint8_t key[16]);
void session_store_free(struct session_store *st);

/* Keep blob for (owner, id) at now.  0, or -1 when it is too large. */
int session_store_put(struct session_store *st, uint64_t owner, const uint8_t *id, size_t id_len,
    const uint8_t *blob, size_t len, uint64_t now);

/*
 * The blob kept for (owner, id), if stored at most max_age before now:
 * its length, copied into out (cap >= SESSION_BLOB_MAX); 0 when none.
 */
size_t session_store_get(struct session_store *st, uint64_t owner, const uint8_t *id, size_t id_len, uint64_t now,
    uint64_t max_age, uint8_t *out, size_t cap);

#endif
