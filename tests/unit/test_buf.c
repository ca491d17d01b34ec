/* Unit tests of the pooled data buffers (funneld/buf.c), cmocka 1.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static unsigned spare_calls;

static void
on_spare(void *arg)
{
	(void)arg;
	spare_calls++;
}

static void
test_take_and_release_reuse(void **state)
{
	struct bufpool pool = { .on_spare = on_spare };
	struct buf a = { 0 }, b = { 0 };
	unsigned char *first;
	size_t spare0 = bufpool_spare_bytes();

	spare_calls = 0;
	assert_int_equal(buf_take(&pool, &a), 0);
	assert_non_null(a.p);
	assert_true(a.pooled);
	assert_int_equal(a.cap, BUF_SIZE);
	assert_int_equal(buf_pending(&a), 0);
	assert_int_equal(pool.takes, 1);
	/* Taking again with a buffer in hand changes nothing. */
	first = a.p;
	assert_int_equal(buf_take(&pool, &a), 0);
	assert_ptr_equal(a.p, first);
	assert_int_equal(pool.takes, 1);

	/* Released, it is kept as a spare (once: the pool went from none to one). */
	buf_release(&pool, &a);
	assert_null(a.p);
	assert_int_equal(pool.nspare, 1);
	assert_int_equal(spare_calls, 1);
	assert_int_equal(bufpool_spare_bytes(), spare0 + BUF_SIZE);
	/* ... and handed out again. */
	assert_int_equal(buf_take(&pool, &b), 0);
	assert_ptr_equal(b.p, first);
	assert_int_equal(pool.nspare, 0);
	assert_int_equal(bufpool_spare_bytes(), spare0);
	buf_release(&pool, &b);
	bufpool_clear(&pool);
	assert_int_equal(pool.nspare, 0);
	assert_int_equal(bufpool_spare_bytes(), spare0);
}

static void
test_pool_keeps_a_bound(void **state)
{
	struct bufpool pool = { 0 };
	struct buf bufs[BUF_POOL_KEEP + 3] = { 0 };
	size_t spare0 = bufpool_spare_bytes();

	for (size_t i = 0; i < BUF_POOL_KEEP + 3; i++)
		assert_int_equal(buf_take(&pool, &bufs[i]), 0);
	for (size_t i = 0; i < BUF_POOL_KEEP + 3; i++)
		buf_release(&pool, &bufs[i]);
	/* The rest went back to the kernel. */
	assert_int_equal(pool.nspare, BUF_POOL_KEEP);
	assert_int_equal(bufpool_spare_bytes(), spare0 + BUF_POOL_KEEP * BUF_SIZE);
	bufpool_clear(&pool);
	assert_int_equal(bufpool_spare_bytes(), spare0);
}

static void
test_append_grows_up_to_max(void **state)
{
	struct bufpool pool = { 0 };
	struct buf b = { 0 };
	unsigned char *chunk = malloc(BUF_SIZE);

	assert_non_null(chunk);
	for (size_t i = 0; i < BUF_SIZE; i++)
		chunk[i] = (unsigned char)(i * 7);
	assert_int_equal(buf_append(&pool, &b, "", 0, BUF_SIZE), 0);
	assert_null(b.p);               /* nothing to hold: no buffer taken */
	assert_int_equal(buf_append(&pool, &b, chunk, BUF_SIZE, 4 * BUF_SIZE), 0);
	assert_true(b.pooled);
	/* Past one pool buffer it moves to a larger one of its own, contents kept. */
	assert_int_equal(buf_append(&pool, &b, chunk, 100, 4 * BUF_SIZE), 0);
	assert_false(b.pooled);
	assert_int_equal(buf_pending(&b), BUF_SIZE + 100);
	assert_memory_equal(b.p, chunk, BUF_SIZE);
	assert_memory_equal(b.p + BUF_SIZE, chunk, 100);
	assert_int_equal(pool.nspare, 1);       /* the pool buffer it left */
	/* Never past max: the append fails and what was there stays. */
	assert_int_equal(buf_append(&pool, &b, chunk, BUF_SIZE, BUF_SIZE + 200), -1);
	assert_int_equal(buf_pending(&b), BUF_SIZE + 100);
	buf_release(&pool, &b);
	bufpool_clear(&pool);
	free(chunk);
}

static void
test_append_compacts_before_growing(void **state)
{
	struct bufpool pool = { 0 };
	struct buf b = { 0 };
	static unsigned char big[BUF_SIZE];

	memset(big, 'x', sizeof(big));
	assert_int_equal(buf_append(&pool, &b, big, BUF_SIZE - 10, BUF_SIZE), 0);
	b.off = BUF_SIZE - 20;          /* all but 10 bytes were sent */
	assert_int_equal(buf_append(&pool, &b, "0123456789abcdef", 16, BUF_SIZE), 0);
	assert_true(b.pooled);          /* room was made by moving, not by growing */
	assert_int_equal(b.off, 0);
	assert_int_equal(buf_pending(&b), 26);
	assert_memory_equal(b.p + 10, "0123456789abcdef", 16);
	buf_release(&pool, &b);
	bufpool_clear(&pool);
}

static void
test_relay_io_release(void **state)
{
	struct bufpool pool = { 0 };
	struct relay_io io = { .fd = -1, .pool = &pool };

	assert_int_equal(buf_append(&pool, &io.tx, "abc", 3, BUF_SIZE), 0);
	assert_int_equal(buf_take(&pool, &io.rx), 0);
	relay_io_release(&io);
	assert_null(io.rx.p);
	assert_null(io.tx.p);
	assert_int_equal(pool.nspare, 2);
	bufpool_clear(&pool);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_take_and_release_reuse),
		cmocka_unit_test(test_pool_keeps_a_bound),
		cmocka_unit_test(test_append_grows_up_to_max),
		cmocka_unit_test(test_append_compacts_before_growing),
		cmocka_unit_test(test_relay_io_release),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
