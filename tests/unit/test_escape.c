/* Unit tests for funneld/escape.c: log escaping and the SNI host name check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "escape.h"

/* Escape s (its strlen, or n bytes) into a buffer of cap and compare. */
static void
check(const char *in, size_t n, size_t cap, const char *want, size_t want_ret)
{
	char	out[1100];

	assert_true(cap <= sizeof(out));
	memset(out, 'Z', sizeof(out));
	assert_int_equal(log_escape(in, n, out, cap), want_ret);
	assert_string_equal(out, want);
	/* Nothing written past cap. */
	for (size_t i = cap; i < sizeof(out); i++)
		assert_int_equal(out[i], 'Z');
}

#define CHECK_STR(in, want) \
	check((in), strlen(in), LOG_ESCAPE_SIZE(strlen(in)), (want), strlen(want))

static void
test_plain(void **state)
{
	CHECK_STR("node.tailnet.ts.net", "node.tailnet.ts.net");
	CHECK_STR("", "");
	CHECK_STR("h2,http/1.1:443[::1]_~!#$%&'()*+-;<>?@^`{|}",
	    "h2,http/1.1:443[::1]_~!#$%&'()*+-;<>?@^`{|}");
}

static void
test_escaped_bytes(void **state)
{
	CHECK_STR("a\r\nb", "a\\x0d\\x0ab");
	CHECK_STR("a b", "a\\x20b");
	CHECK_STR("\"q\"", "\\x22q\\x22");
	CHECK_STR("back\\slash", "back\\x5cslash");
	CHECK_STR("k=v", "k\\x3dv");
	CHECK_STR("\x1b[31m\x7f\x80\xff", "\\x1b[31m\\x7f\\x80\\xff");
	/* A NUL is a byte like any other. */
	check("a\0b", 3, 64, "a\\x00b", 6);
}

/* Every byte value: itself if 0x21..0x7e other than \ " =, else \xNN. */
static void
test_every_byte(void **state)
{
	char	in[1], out[8], want[8];

	for (int c = 0; c < 256; c++) {
		bool plain = c >= 0x21 && c <= 0x7e && c != '\\' && c != '"' && c != '=';

		in[0] = (char)c;
		if (plain)
			snprintf(want, sizeof(want), "%c", c);
		else
			snprintf(want, sizeof(want), "\\x%02x", c);
		assert_int_equal(log_escape(in, 1, out, sizeof(out)), strlen(want));
		assert_string_equal(out, want);
	}
}

/* A client cannot forge a field or a line of "funneld: conn ... sni=X ...". */
static void
test_no_forgery(void **state)
{
	static const char evil[] =
	    "x.example result=ok\nfunneld: conn 2 peer=1.2.3.4 reason=\"\" \\";
	char	out[LOG_ESCAPE_SIZE(sizeof(evil))];

	log_escape(evil, sizeof(evil) - 1, out, sizeof(out));
	assert_null(strpbrk(out, " \t\r\n\"="));
	for (const char *p = out; *p != '\0'; p++) {
		assert_true(*p >= 0x21 && *p <= 0x7e);
		if (*p == '\\')
			assert_int_equal(p[1], 'x');
	}
}

static void
test_truncation(void **state)
{
	/* Exactly fits: need == cap - 1. */
	check("abcd", 4, 5, "abcd", 4);
	/* One short: marked, within cap. */
	check("abcde", 5, 5, "a...", 5);
	check("abcdefghij", 10, 8, "abcd...", 10);
	/* Never inside an escape: "\x0a" is 4 bytes, whole or not at all. */
	check("\n\n\n", 3, 8, "\\x0a...", 12);
	check("\n\n\n", 3, 10, "\\x0a...", 12);
	check("\n\n\n", 3, 11, "\\x0a...", 12);
	check("\n\n\n", 3, 12, "\\x0a\\x0a...", 12);
	check("\n\n\n", 3, 13, "\\x0a\\x0a\\x0a", 12);
	check("\n\n\n", 3, 7, "...", 12);
	check("a\n", 2, 6, "a\\x0a", 5);
	check("a\n", 2, 5, "a...", 5);
	/* Tiny buffers: as many dots as fit, still terminated. */
	check("abcdef", 6, 4, "...", 6);
	check("abcdef", 6, 3, "..", 6);
	check("abcdef", 6, 2, ".", 6);
	check("abcdef", 6, 1, "", 6);
	check("", 0, 1, "", 0);
}

static void
test_cap_zero(void **state)
{
	char	out[4] = "XYZ";

	assert_int_equal(log_escape("a\n", 2, out, 0), 5);
	assert_string_equal(out, "XYZ");
}

/* LOG_ESCAPE_SIZE is enough for the worst input. */
static void
test_worst_case_size(void **state)
{
	uint8_t	in[256];
	char	out[LOG_ESCAPE_SIZE(sizeof(in))];

	memset(in, 0xff, sizeof(in));
	assert_int_equal(log_escape(in, sizeof(in), out, sizeof(out)), 4 * sizeof(in));
	assert_int_equal(strlen(out), 4 * sizeof(in));
	assert_memory_equal(out + 4 * 255, "\\xff", 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_escaped_bytes),
		cmocka_unit_test(test_every_byte),
		cmocka_unit_test(test_no_forgery),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_cap_zero),
		cmocka_unit_test(test_worst_case_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
