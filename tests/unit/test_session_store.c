/* Unit tests of the TLS session-ID store (funneld/session_store.c), cmocka 1.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "session_store.h"

static const uint8_t key[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

static void
id_of(unsigned n, uint8_t id[SESSION_ID_MAX])
{
	memset(id, 0, SESSION_ID_MAX);
	memcpy(id, &n, sizeof(n));
}

static void
test_put_get(void **state)
{
	struct session_store *st = session_store_new(64, key);
	uint8_t id[SESSION_ID_MAX], out[SESSION_BLOB_MAX];

	assert_non_null(st);
	id_of(1, id);
	assert_int_equal(session_store_put(st, 7, id, sizeof(id), (const uint8_t *)"session-one", 11, 100), 0);
	assert_int_equal(session_store_get(st, 7, id, sizeof(id), 100, 60, out, sizeof(out)), 11);
	assert_memory_equal(out, "session-one", 11);
	/* Another owner (another server name) does not find it. */
	assert_int_equal(session_store_get(st, 8, id, sizeof(id), 100, 60, out, sizeof(out)), 0);
	/* Nor another id, or a shorter one. */
	id[0] ^= 1;
	assert_int_equal(session_store_get(st, 7, id, sizeof(id), 100, 60, out, sizeof(out)), 0);
	id[0] ^= 1;
	assert_int_equal(session_store_get(st, 7, id, 16, 100, 60, out, sizeof(out)), 0);
	/* The same key again replaces it. */
	assert_int_equal(session_store_put(st, 7, id, sizeof(id), (const uint8_t *)"two", 3, 101), 0);
	assert_int_equal(session_store_get(st, 7, id, sizeof(id), 101, 60, out, sizeof(out)), 3);
	assert_memory_equal(out, "two", 3);
	session_store_free(st);
}

static void
test_expiry(void **state)
{
	struct session_store *st = session_store_new(64, key);
	uint8_t id[SESSION_ID_MAX], out[SESSION_BLOB_MAX];

	id_of(2, id);
	assert_int_equal(session_store_put(st, 1, id, sizeof(id), (const uint8_t *)"s", 1, 1000), 0);
	assert_int_equal(session_store_get(st, 1, id, sizeof(id), 1060, 60, out, sizeof(out)), 1);
	/* Older than max_age: gone, and stays gone. */
	assert_int_equal(session_store_get(st, 1, id, sizeof(id), 1061, 60, out, sizeof(out)), 0);
	assert_int_equal(session_store_get(st, 1, id, sizeof(id), 1000, 60, out, sizeof(out)), 0);
	session_store_free(st);
}

static void
test_refusals(void **state)
{
	struct session_store *st = session_store_new(64, key);
	uint8_t id[SESSION_ID_MAX], big[SESSION_BLOB_MAX + 1] = { 0 }, out[SESSION_BLOB_MAX];

	id_of(3, id);
	assert_int_equal(session_store_put(st, 1, id, sizeof(id), big, sizeof(big), 1), -1);
	assert_int_equal(session_store_put(st, 1, id, 0, big, 1, 1), -1);
	assert_int_equal(session_store_put(st, 0, id, sizeof(id), big, 1, 1), -1);
	assert_int_equal(session_store_get(st, 1, id, sizeof(id), 1, 60, out, sizeof(out)), 0);
	session_store_free(st);
	assert_null(session_store_new(100, key));       /* not a power of two */
	assert_null(session_store_new(4, key));         /* smaller than the ways */
}

/* Any number of sessions: the table keeps the newest it can, never more than its size. */
static void
test_bounded_and_newest_kept(void **state)
{
	enum { CAP = 256, N = 20000 };
	struct session_store *st = session_store_new(CAP, key);
	uint8_t id[SESSION_ID_MAX], out[SESSION_BLOB_MAX];
	unsigned found_old = 0, found_new = 0;

	for (unsigned i = 0; i < N; i++) {
		id_of(i, id);
		assert_int_equal(session_store_put(st, 1, id, sizeof(id), (const uint8_t *)&i, sizeof(i), i), 0);
	}
	for (unsigned i = 0; i < N; i++) {
		id_of(i, id);
		if (session_store_get(st, 1, id, sizeof(id), N, N, out, sizeof(out)) == sizeof(i)) {
			assert_memory_equal(out, &i, sizeof(i));
			if (i < N - CAP)
				found_old++;
			else
				found_new++;
		}
	}
	assert_true(found_old + found_new <= CAP);
	/* The oldest of a session's slots goes first: most of the newest stay. */
	assert_true(found_new > CAP / 2);
	assert_true(found_old < CAP / 4);
	session_store_free(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_bounded_and_newest_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
