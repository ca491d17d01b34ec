/*
 * Public clients' limits: a fixed, set-associative table of per-client state
 * in shards, each behind its own mutex.  See clients.h for the contract.
 *
 * A client hashes (SipHash, secret key) to one bucket of CLIENTS_WAYS slots
 * in one shard.  Slots are filled in order and then only replaced, never
 * emptied, so the free slots of a bucket are always its tail: a lookup
 * stops at the first free one.  Every operation touches one bucket under
 * one shard's lock, so probes are bounded and the limits hold whatever
 * thread a client's connections land on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clients.h"

/*
 * Tokens are counted in units of 1/3,600,000: a rate of N per second,
 * minute or hour then adds a whole number of units every millisecond
 * (N x 3600, N x 60, N), so refilling is exact and rounds nothing.  A
 * bucket keeps its units across a reload that changes the rate's period.
 */
#define HOUR_MS		3600000u
#define TOKEN		((uint64_t)HOUR_MS)
#define CREDIT_FULL	UINT64_MAX	/* full, whatever the burst */
#define CACHELINE	64

struct client_entry {
	uint64_t	key;		/* IPv4 address, or IPv6 /64 prefix */
	uint64_t	credit;		/* in 1/TOKEN, as of seen_ms */
	uint64_t	seen_ms;	/* the bucket was last refilled to this time */
	uint64_t	logged_ms;	/* its last logged refusal (when logged) */
	uint32_t	open;		/* connections admitted and not released */
	uint32_t	suppressed;	/* refusals not logged since logged_ms */
	uint8_t		family;		/* 0: free slot, else 4 or 6 */
	bool		logged;
};

struct shard {
	_Alignas(CACHELINE) pthread_mutex_t mu;	/* no two shards' locks share a line */
	size_t		used;
	size_t		active;
	uint64_t	evictions;
	uint64_t	full;
};

struct clients {
	struct shard		*shards;
	struct client_entry	*slots;		/* shard s owns [s * per_shard, +per_shard) */
	uint32_t		 nshards;	/* a power of two */
	uint32_t		 nbuckets;	/* per shard, a power of two */
	uint32_t		 per_shard;	/* nbuckets * CLIENTS_WAYS */
	uint64_t		 log_interval_ms;
	uint8_t			 hkey[SIPHASH_KEY_LEN];
};

struct ckey {
	uint64_t	v;
	uint8_t		family;
};

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static uint64_t
be_load(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

static int
key_of(const struct sockaddr *sa, struct ckey *k)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;

	if (sa == NULL)
		return -1;
	switch (sa->sa_family) {
	case AF_INET:
		memcpy(&sin, sa, sizeof(sin));
		k->family = 4;
		k->v = be_load((const uint8_t *)&sin.sin_addr, 4);
		return 0;
	case AF_INET6:
		memcpy(&sin6, sa, sizeof(sin6));
		if (memcmp(sin6.sin6_addr.s6_addr, v4mapped, sizeof(v4mapped)) == 0) {
			k->family = 4;
			k->v = be_load(sin6.sin6_addr.s6_addr + 12, 4);
		} else {
			k->family = 6;
			k->v = be_load(sin6.sin6_addr.s6_addr, 8);
		}
		return 0;
	default:
		return -1;
	}
}

/* The first slot of k's bucket, and its shard. */
static size_t
bucket_of(const struct clients *c, const struct ckey *k, struct shard **sh)
{
	uint8_t		m[9];
	uint64_t	h;
	uint32_t	s, b;

	m[0] = k->family;
	for (int i = 0; i < 8; i++)
		m[1 + i] = (uint8_t)(k->v >> (56 - 8 * i));
	h = siphash24(c->hkey, m, sizeof(m));
	s = (uint32_t)h & (c->nshards - 1);
	b = (uint32_t)(h >> 32) & (c->nbuckets - 1);
	*sh = &c->shards[s];
	return (size_t)s * c->per_shard + (size_t)b * CLIENTS_WAYS;
}

static bool
rate_on(const struct client_rate *r)
{
	return r != NULL && r->count > 0 && r->per_ms > 0 && r->per_ms <= HOUR_MS;
}

/*
 * e's credit at now under r: what it had at seen_ms plus the refill since,
 * capped at the burst.  No rate limit: full.
 */
static uint64_t
credit_now(const struct client_entry *e, const struct client_rate *r, uint64_t now)
{
	uint64_t count, burst, step, gap;

	if (!rate_on(r))
		return CREDIT_FULL;
	count = r->count < CLIENTS_RATE_MAX ? r->count : CLIENTS_RATE_MAX;
	burst = 2 * count * TOKEN;
	if (e->credit >= burst)
		return burst;
	step = count * (HOUR_MS / r->per_ms);
	gap = now > e->seen_ms ? now - e->seen_ms : 0;
	/* gap * step would pass the burst: do not multiply, it could overflow. */
	if (gap >= (burst - e->credit + step - 1) / step)
		return burst;
	return e->credit + gap * step;
}

/*
 * k's entry in the bucket at first, created if need be: in a free slot, else
 * in place of the idle entry nearest a fresh one (the fullest bucket by r's
 * refill, or by its credit as it stands when r is NULL; the least recently
 * refilled among equals).  NULL when every slot has open connections.
 */
static struct client_entry *
lookup(struct clients *c, struct shard *sh, size_t first, const struct ckey *k,
    const struct client_rate *r, uint64_t now)
{
	struct client_entry	*b = &c->slots[first], *e = NULL, *victim = NULL;
	uint64_t		 best = 0, cr;

	for (size_t i = 0; i < CLIENTS_WAYS; i++) {
		if (b[i].family == 0) {
			e = &b[i];
			sh->used++;
			break;
		}
		if (b[i].family == k->family && b[i].key == k->v)
			return &b[i];
	}
	if (e == NULL) {
		for (size_t i = 0; i < CLIENTS_WAYS; i++) {
			if (b[i].open > 0)
				continue;
			cr = r != NULL ? credit_now(&b[i], r, now) : b[i].credit;
			if (victim == NULL || cr > best ||
			    (cr == best && b[i].seen_ms < victim->seen_ms)) {
				victim = &b[i];
				best = cr;
			}
		}
		if (victim == NULL)
			return NULL;
		sh->evictions++;
		e = victim;
	}
	memset(e, 0, sizeof(*e));
	e->key = k->v;
	e->family = k->family;
	e->credit = CREDIT_FULL;
	e->seen_ms = now;
	return e;
}

/* A refusal of e at now: log it, or count it for the next line that is. */
static bool
note_refusal(const struct clients *c, struct client_entry *e, uint64_t now, uint32_t *suppressed)
{
	uint64_t since = now > e->logged_ms ? now - e->logged_ms : 0;

	if (e->logged && since < c->log_interval_ms) {
		if (e->suppressed < UINT32_MAX)
			e->suppressed++;
		return false;
	}
	*suppressed = e->suppressed;
	e->suppressed = 0;
	e->logged = true;
	e->logged_ms = now;
	return true;
}

struct clients *
clients_new(size_t capacity, const uint8_t key[SIPHASH_KEY_LEN], uint64_t log_interval_ms)
{
	struct clients	*c;
	size_t		 nb = 1, i;

	if (capacity == 0 || capacity > CLIENTS_CAPACITY_MAX) {
		errno = EINVAL;
		return NULL;
	}
	while (nb * CLIENTS_WAYS < capacity)
		nb <<= 1;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->nshards = (uint32_t)(nb < CLIENTS_SHARDS_MAX ? nb : CLIENTS_SHARDS_MAX);
	c->nbuckets = (uint32_t)(nb / c->nshards);
	c->per_shard = c->nbuckets * CLIENTS_WAYS;
	c->log_interval_ms = log_interval_ms;
	memcpy(c->hkey, key, SIPHASH_KEY_LEN);
	c->slots = calloc(nb * CLIENTS_WAYS, sizeof(*c->slots));
	/* sizeof(struct shard) is a multiple of its alignment, as aligned_alloc() wants. */
	c->shards = aligned_alloc(CACHELINE, c->nshards * sizeof(*c->shards));
	if (c->slots == NULL || c->shards == NULL) {
		free(c->slots);
		free(c->shards);
		free(c);
		return NULL;
	}
	memset(c->shards, 0, c->nshards * sizeof(*c->shards));
	for (i = 0; i < c->nshards; i++) {
		if (pthread_mutex_init(&c->shards[i].mu, NULL) != 0) {
			while (i-- > 0)
				pthread_mutex_destroy(&c->shards[i].mu);
			free(c->slots);
			free(c->shards);
			free(c);
			errno = ENOMEM;
			return NULL;
		}
	}
	return c;
}

void
clients_free(struct clients *c)
{
	if (c == NULL)
		return;
	for (uint32_t i = 0; i < c->nshards; i++)
		pthread_mutex_destroy(&c->shards[i].mu);
	free(c->slots);
	free(c->shards);
	free(c);
}

enum client_verdict
clients_admit(struct clients *c, const struct client_limits *lim, const struct sockaddr *sa,
    uint64_t now_ms, struct client_admission *out)
{
	struct ckey		 k;
	struct shard		*sh;
	struct client_entry	*e;
	enum client_verdict	 v;
	size_t			 first;
	uint64_t		 cr;

	memset(out, 0, sizeof(*out));
	if (key_of(sa, &k) == -1) {
		out->log = true;
		return CLIENT_BAD_ADDRESS;
	}
	first = bucket_of(c, &k, &sh);
	pthread_mutex_lock(&sh->mu);
	if ((e = lookup(c, sh, first, &k, &lim->rate, now_ms)) == NULL) {
		sh->full++;
		pthread_mutex_unlock(&sh->mu);
		out->log = true;
		return CLIENT_TABLE_FULL;
	}
	cr = credit_now(e, &lim->rate, now_ms);
	e->credit = cr;
	if (now_ms > e->seen_ms)
		e->seen_ms = now_ms;
	if (lim->max_conns > 0 && e->open >= lim->max_conns)
		v = CLIENT_OVER_CONNECTIONS;
	else if (rate_on(&lim->rate) && cr < TOKEN)
		v = CLIENT_OVER_RATE;
	else {
		v = CLIENT_ADMIT;
		if (rate_on(&lim->rate))
			e->credit -= TOKEN;
		if (e->open++ == 0)
			sh->active++;
		out->ref.slot = (uint32_t)(e - c->slots) + 1;
	}
	if (v != CLIENT_ADMIT)
		out->log = note_refusal(c, e, now_ms, &out->suppressed);
	pthread_mutex_unlock(&sh->mu);
	return v;
}

void
clients_release(struct clients *c, struct client_ref *ref)
{
	struct shard		*sh;
	struct client_entry	*e;
	size_t			 i;

	if (ref->slot == 0)
		return;
	i = ref->slot - 1;
	ref->slot = 0;
	if (i >= (size_t)c->nshards * c->per_shard)
		return;
	sh = &c->shards[i / c->per_shard];
	e = &c->slots[i];
	pthread_mutex_lock(&sh->mu);
	/* open > 0 pinned the entry since admission: it is still this client. */
	if (e->open > 0 && --e->open == 0)
		sh->active--;
	pthread_mutex_unlock(&sh->mu);
}

bool
clients_should_log(struct clients *c, const struct sockaddr *sa, uint64_t now_ms,
    uint32_t *suppressed)
{
	struct ckey		 k;
	struct shard		*sh;
	struct client_entry	*e;
	size_t			 first;
	bool			 log = true;

	*suppressed = 0;
	if (key_of(sa, &k) == -1)
		return true;
	first = bucket_of(c, &k, &sh);
	pthread_mutex_lock(&sh->mu);
	if ((e = lookup(c, sh, first, &k, NULL, now_ms)) != NULL)
		log = note_refusal(c, e, now_ms, suppressed);
	pthread_mutex_unlock(&sh->mu);
	return log;
}

void
clients_stats(struct clients *c, struct clients_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->capacity = (size_t)c->nshards * c->per_shard;
	for (uint32_t i = 0; i < c->nshards; i++) {
		struct shard *sh = &c->shards[i];

		pthread_mutex_lock(&sh->mu);
		st->entries += sh->used;
		st->active += sh->active;
		st->evictions += sh->evictions;
		st->table_full += sh->full;
		pthread_mutex_unlock(&sh->mu);
	}
}

int
clients_parse_rate(const char *s, struct client_rate *out)
{
	uint32_t	n = 0, per;
	const char	*p = s;

	if (s == NULL || *p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		n = n * 10 + (uint32_t)(*p - '0');
		if (n > CLIENTS_RATE_MAX)
			return -1;
	}
	if (n == 0 || *p++ != '/')
		return -1;
	switch (*p) {
	case 's':
		per = 1000;
		break;
	case 'm':
		per = 60 * 1000;
		break;
	case 'h':
		per = HOUR_MS;
		break;
	default:
		return -1;
	}
	if (p[1] != '\0')
		return -1;
	out->count = n;
	out->per_ms = per;
	return 0;
}

int
clients_key_text(const struct sockaddr *sa, char *buf, size_t len)
{
	struct ckey	k;
	uint8_t		a[16];
	char		t[INET6_ADDRSTRLEN];
	size_t		n, bytes;

	memset(a, 0, sizeof(a));
	if (key_of(sa, &k) == -1)
		goto bad;
	bytes = k.family == 4 ? 4 : 8;
	for (size_t i = 0; i < bytes; i++)
		a[i] = (uint8_t)(k.v >> (8 * (bytes - 1 - i)));
	if (inet_ntop(k.family == 4 ? AF_INET : AF_INET6, a, t, sizeof(t)) == NULL)
		goto bad;
	n = strlen(t);
	if (n + (k.family == 6 ? 3 : 0) >= len)
		goto bad;
	memcpy(buf, t, n + 1);
	if (k.family == 6)
		memcpy(buf + n, "/64", 4);
	return 0;
bad:
	if (len >= 2)
		memcpy(buf, "-", 2);
	else if (len == 1)
		buf[0] = '\0';
	return -1;
}

const char *
clients_verdict_name(enum client_verdict v)
{
	switch (v) {
	case CLIENT_ADMIT:
		return "admitted";
	case CLIENT_OVER_CONNECTIONS:
		return "too_many_connections";
	case CLIENT_OVER_RATE:
		return "rate_limited";
	case CLIENT_TABLE_FULL:
		return "table_full";
	case CLIENT_BAD_ADDRESS:
		return "bad_address";
	}
	return "unknown";
}
