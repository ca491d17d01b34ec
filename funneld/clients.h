/*
 * Public clients (DESIGN.md §2 [clients], §9): per-client connection and
 * rate limits in one fixed-size table shared by every worker.  Pure: no
 * clock (the caller passes monotonic milliseconds), no I/O, no globals.
 * The deny list is checked elsewhere; this is the limits.
 *
 * A client is an IPv4 address (an IPv4-mapped IPv6 address counts as IPv4),
 * or an IPv6 /64: one host usually holds a whole /64, so keying on the full
 * address would let it take 2^64 separate allowances.
 *
 * Use:
 *	at start-up	c = clients_new(capacity, random_key, log_interval_ms)
 *	per connection	v = clients_admit(c, &snap->limits, src, now_ms, &a)
 *			CLIENT_ADMIT: keep a.ref with the connection;
 *			else refuse (see each verdict) and log if a.log
 *	at its close	clients_release(c, &conn->client_ref)	(any path, any thread)
 *	reload		nothing: the next admit passes the new snapshot's limits
 *	metrics		clients_stats(c, &st)
 *
 * Invariants the caller keeps:
 *  - Every CLIENT_ADMIT is released exactly once.  clients_release() clears
 *    the ref, so releasing the same ref twice, or an empty one, is a no-op;
 *    copying a ref and releasing both copies is a bug.
 *  - capacity >= 4 x the process-wide bound on connections that can hold a
 *    ref at once (max_connections, plus any unchecked ones that are admitted).
 *    An entry with open connections is never evicted, so at most that many
 *    entries are pinned; the rest of the table holds idle clients.  The
 *    table is set-associative (CLIENTS_WAYS entries per hash bucket), so a
 *    bucket can fill with pinned entries while others have room; at 1/4
 *    pinned that happens with probability about 1e-10 per bucket (Poisson,
 *    mean 8, 32 ways), and then the newcomer gets CLIENT_TABLE_FULL.
 *  - The table lives as long as any ref: free it only after every
 *    connection has closed.
 *  - now_ms comes from one monotonic clock.  Threads may pass slightly
 *    stale values (read before waiting for a lock): time never runs
 *    backwards for an entry, it only stands still.
 *
 * Memory: capacity (rounded up, see clients_new) x 48 bytes, allocated once
 * (its pages touched as slots fill); a flood of distinct sources costs
 * nothing more.  It replaces idle entries (0 open connections) only.  A replaced entry's successor starts with a
 * full bucket, which is a gift to the replaced client if its own bucket was
 * empty; so the victim is the idle entry whose bucket would be fullest now
 * (equivalent to a fresh one), the least recently seen among equals.  A
 * flood's own entries have each just spent a token, so they go before a
 * rate-limited client's drained bucket does.
 */
#ifndef FUNNELD_CLIENTS_H
#define FUNNELD_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "siphash.h"

#define CLIENTS_WAYS 32                 /* entries per hash bucket */
#define CLIENTS_SHARDS_MAX 64           /* locks: buckets are spread over this many */
#define CLIENTS_CAPACITY_MAX (1u << 24)
#define CLIENTS_RATE_MAX 1000000u       /* largest N in "N/s" */
#define CLIENTS_KEY_TEXT_MAX 48         /* "ffff:ffff:ffff:ffff::/64" and NUL, with room */

/*
 * New connections per client: a token bucket that gains count tokens per
 * per_ms milliseconds and holds at most 2 x count (DESIGN: burst 2 x rate).
 * The burst is twice the number written, so "1200/m" allows 2400 at once
 * where "20/s" allows 40.  Fill it with clients_parse_rate() (per_ms is
 * 1000, 60000 or 3600000), or leave it zeroed: no rate limit.  By hand,
 * per_ms must divide 3600000 for exact refills; count == 0, per_ms == 0 or
 * per_ms > 3600000 mean no rate limit; count above CLIENTS_RATE_MAX counts
 * as CLIENTS_RATE_MAX.
 */
struct client_rate {
	uint32_t count;
	uint32_t per_ms;
};

/* One configuration snapshot's limits; all zero means no limits. */
struct client_limits {
	uint32_t max_conns;             /* open connections per client; 0: unlimited */
	struct client_rate rate;
};

enum client_verdict {
	CLIENT_ADMIT,                   /* counted: release the ref at close */
	CLIENT_OVER_CONNECTIONS,        /* max_conns already open: 429 */
	CLIENT_OVER_RATE,               /* no token left: 429 */
	CLIENT_TABLE_FULL,              /* its bucket holds only clients with open
					 * connections (capacity too small for the
					 * connection bound): 503, it is not the
					 * client's doing */
	CLIENT_BAD_ADDRESS,             /* not AF_INET/AF_INET6: a caller bug; refused */
};
#define CLIENT_VERDICTS 5

/* What clients_release() needs; zeroed means it holds nothing.  Stays valid
 * across reloads: an entry with open connections is never moved or evicted. */
struct client_ref {
	uint32_t slot;                  /* 1 + the entry's index */
};

struct client_admission {
	struct client_ref ref;          /* CLIENT_ADMIT: the connection's; else empty */
	bool log;                       /* refused, and this refusal is the one to log */
	uint32_t suppressed;            /* with log: this client's refusals not logged
					 * since its last logged one ("and N more") */
};

struct clients_stats {
	size_t capacity;                /* entries, as rounded up by clients_new */
	size_t entries;                 /* slots filled (replaced, never emptied) */
	size_t active;                  /* of those, clients with open connections */
	uint64_t evictions;             /* idle entries replaced by another client */
	uint64_t table_full;            /* CLIENT_TABLE_FULL answers */
};

/*
 * A table of at least capacity entries (rounded up to a power of two times
 * CLIENTS_WAYS; at most CLIENTS_CAPACITY_MAX), hashed with SipHash under key,
 * which must be secret and random per process (getrandom()).  A client's
 * refusals are logged at most once per log_interval_ms.  NULL on a bad
 * capacity (EINVAL) or out of memory.
 */
struct clients *clients_new(size_t capacity, const uint8_t key[SIPHASH_KEY_LEN],
    uint64_t log_interval_ms);
void clients_free(struct clients *c);

/*
 * Count a new connection from sa against lim at now_ms.  Checks the
 * connection limit first, then the rate; a refusal costs no token, so a
 * client that backs off gets in again as its bucket refills.  Limits are
 * read afresh on every call: after a reload, open connections stay counted
 * and a lower max_conns refuses new ones until enough have closed; a bucket
 * keeps its tokens, capped at the new burst, and refills at the new rate
 * (one that had no rate limit starts full).  out is always filled in.
 * CLIENT_TABLE_FULL and CLIENT_BAD_ADDRESS have no client state to limit
 * their logging: out->log is always true for them.  c, lim, out: not NULL.
 */
enum client_verdict clients_admit(struct clients *c, const struct client_limits *lim,
    const struct sockaddr *sa, uint64_t now_ms, struct client_admission *out);

/* Give back an admitted connection's count, from any thread; clears *ref. */
void clients_release(struct clients *c, struct client_ref *ref);

/*
 * For a refusal decided elsewhere (deny, a global bound): true at most once
 * per log interval per client, with *suppressed set to the refusals of this
 * client not logged since its last logged one (clients_admit()'s refusals
 * included).  Tracks the client like an admission would, without counting
 * a connection; true when it cannot be tracked (a full bucket).
 */
bool clients_should_log(struct clients *c, const struct sockaddr *sa, uint64_t now_ms,
    uint32_t *suppressed);

void clients_stats(struct clients *c, struct clients_stats *st);

/* "20/s", "100/m" or "5/h": N from 1 to CLIENTS_RATE_MAX, nothing else (no
 * spaces, no sign, lower-case unit).  0, or -1 with *out untouched. */
int clients_parse_rate(const char *s, struct client_rate *out);

/* The client sa counts as, for logs: "203.0.113.7" or "2001:db8:1:2::/64".
 * 0, or -1 (buf "-" when it fits) for another family or a short buffer. */
int clients_key_text(const struct sockaddr *sa, char *buf, size_t len);

/* A metric label / log word per verdict: "admitted", "too_many_connections",
 * "rate_limited", "table_full", "bad_address". */
const char *clients_verdict_name(enum client_verdict v);

#endif
