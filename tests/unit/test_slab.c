/* Unit tests of the connection slab (funneld/slab.c), cmocka 1.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "slab.h"

static void
test_alloc_free_reuse(void **state)
{
	struct slab s;
	unsigned char *a, *b;

	slab_init(&s, 3000);
	a = slab_alloc(&s);
	b = slab_alloc(&s);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a != b);
	assert_int_equal((uintptr_t)a % 16, 0);
	for (size_t i = 0; i < 3000; i++)
		assert_int_equal(a[i], 0);      /* zeroed */
	memset(a, 0xa5, 3000);
	memset(b, 0x5a, 3000);
	assert_int_equal(s.in_use, 2);
	assert_int_equal(s.chunks, 1);
	slab_free(&s, a);
	/* The slot comes back, zeroed again; the other is untouched. */
	a = slab_alloc(&s);
	assert_int_equal(a[0], 0);
	assert_int_equal(b[2999], 0x5a);
	slab_free(&s, a);
	slab_free(&s, b);
	slab_free(&s, NULL);
	assert_int_equal(s.in_use, 0);
	slab_clear(&s);
	assert_int_equal(s.chunks, 0);
}

/* A burst fills many chunks; as it ends they go back, all but one spare. */
static void
test_chunks_given_back(void **state)
{
	enum { N = 1000 };
	struct slab s;
	void **p = calloc(N, sizeof(*p));

	assert_non_null(p);
	slab_init(&s, 3000);
	for (size_t i = 0; i < N; i++) {
		assert_non_null(p[i] = slab_alloc(&s));
		memset(p[i], (int)i, 3000);
	}
	assert_true(s.chunks >= N / s.per_chunk);
	/* Objects never overlap: each still holds its own pattern. */
	for (size_t i = 0; i < N; i++)
		assert_int_equal(((unsigned char *)p[i])[2999], (unsigned char)i);
	/* Free every other one, then the rest. */
	for (size_t i = 0; i < N; i += 2)
		slab_free(&s, p[i]);
	for (size_t i = 1; i < N; i += 2)
		slab_free(&s, p[i]);
	assert_int_equal(s.in_use, 0);
	assert_int_equal(s.chunks, 1);                  /* the spare */
	slab_clear(&s);
	assert_int_equal(s.chunks, 0);
	free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_free_reuse),
		cmocka_unit_test(test_chunks_given_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
