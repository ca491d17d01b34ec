/* The TLS session-ID cache table; see session_store.h. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "session_store.h"
#include "siphash.h"

struct entry {
	uint64_t owner;                 /* 0: empty */
	uint64_t stored;
	uint8_t id_len;
	uint8_t id[SESSION_ID_MAX];
	uint16_t len;
	uint8_t blob[SESSION_BLOB_MAX];
};

struct session_store {
	pthread_mutex_t lock;
	size_t mask;                    /* capacity - 1 */
	uint8_t key[16];
	struct entry *entries;
};

struct session_store *
session_store_new(size_t capacity, const uint8_t key[16])
{
	struct session_store *st;

	if (capacity < SESSION_STORE_WAYS || (capacity & (capacity - 1)) != 0)
		return NULL;
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NULL;
	/* calloc: the pages are touched only as sessions fill them. */
	if ((st->entries = calloc(capacity, sizeof(*st->entries))) == NULL) {
		free(st);
		return NULL;
	}
	pthread_mutex_init(&st->lock, NULL);
	st->mask = capacity - 1;
	memcpy(st->key, key, sizeof(st->key));
	return st;
}

void
session_store_free(struct session_store *st)
{
	if (st == NULL)
		return;
	pthread_mutex_destroy(&st->lock);
	free(st->entries);
	free(st);
}

static size_t
first_slot(const struct session_store *st, const uint8_t *id, size_t id_len)
{
	return (size_t)siphash24(st->key, id, id_len) & st->mask;
}

static bool
same(const struct entry *e, uint64_t owner, const uint8_t *id, size_t id_len)
{
	return e->owner == owner && e->id_len == id_len && memcmp(e->id, id, id_len) == 0;
}

int
session_store_put(struct session_store *st, uint64_t owner, const uint8_t *id, size_t id_len, const uint8_t *blob,
    size_t len, uint64_t now)
{
	struct entry *victim = NULL;
	size_t s;

	if (owner == 0 || id_len == 0 || id_len > SESSION_ID_MAX || len > SESSION_BLOB_MAX)
		return -1;
	pthread_mutex_lock(&st->lock);
	s = first_slot(st, id, id_len);
	for (size_t i = 0; i < SESSION_STORE_WAYS; i++) {
		struct entry *e = &st->entries[(s + i) & st->mask];
		if (e->owner == 0 || same(e, owner, id, id_len)) {
			victim = e;
			break;
		}
		if (victim == NULL || e->stored < victim->stored)
			victim = e;
	}
	victim->owner = owner;
	victim->stored = now;
	victim->id_len = (uint8_t)id_len;
	memcpy(victim->id, id, id_len);
	victim->len = (uint16_t)len;
	memcpy(victim->blob, blob, len);
	pthread_mutex_unlock(&st->lock);
	return 0;
}

size_t
session_store_get(struct session_store *st, uint64_t owner, const uint8_t *id, size_t id_len, uint64_t now,
    uint64_t max_age, uint8_t *out, size_t cap)
{
	size_t s, len = 0;

	if (owner == 0 || id_len == 0 || id_len > SESSION_ID_MAX)
		return 0;
	pthread_mutex_lock(&st->lock);
	s = first_slot(st, id, id_len);
	for (size_t i = 0; i < SESSION_STORE_WAYS; i++) {
		struct entry *e = &st->entries[(s + i) & st->mask];
		if (!same(e, owner, id, id_len))
			continue;
		if (now >= e->stored && now - e->stored <= max_age && e->len <= cap) {
			memcpy(out, e->blob, e->len);
			len = e->len;
		} else {
			e->owner = 0;   /* expired: the slot is free again */
		}
		break;
	}
	pthread_mutex_unlock(&st->lock);
	return len;
}
