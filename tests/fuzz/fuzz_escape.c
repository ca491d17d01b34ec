/*
 * libFuzzer target for log_escape() (and addr_hostname_valid()).
 *
 * The first byte sizes the output buffer (0..255, and once with room for
 * anything); the rest is the client's bytes.  Invariants: nothing is
 * written past cap; the output is NUL-terminated printable ASCII without
 * space, '"' or '='; the return value is the whole escaped length; a
 * truncated output is a prefix of whole escapes of the full one followed by
 * "..." (fewer dots only when cap < 4); an untruncated one unescapes to the
 * input exactly.  A name addr_hostname_valid() accepts is never changed by
 * escaping.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "escape.h"
#include "fuzz.h"

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Unescape n bytes of s into out; the length, or -1 when s is not the
 * escaper's form (a bare '\', upper-case hex, a byte that should be escaped). */
static long
unescape(const char *s, size_t n, uint8_t *out)
{
	size_t i = 0, w = 0;

	while (i < n) {
		if (s[i] != '\\') {
			out[w++] = (uint8_t)s[i++];
			continue;
		}
		if (i + 4 > n || s[i + 1] != 'x' || hexval(s[i + 2]) < 0 || hexval(s[i + 3]) < 0)
			return -1;
		out[w++] = (uint8_t)(hexval(s[i + 2]) << 4 | hexval(s[i + 3]));
		i += 4;
	}
	return (long)w;
}

/* Escape in into an exact-size heap buffer of cap bytes, so ASan sees any
 * write past it, and check every invariant. */
static void
run(const uint8_t *in, size_t n, size_t cap)
{
	char *out = malloc(cap ? cap : 1), *full;
	size_t need, len, want = 0;
	uint8_t *back;

	CHECK(out != NULL);
	for (size_t i = 0; i < n; i++)
		want += (in[i] >= 0x21 && in[i] <= 0x7e && in[i] != '\\' &&
		    in[i] != '"' && in[i] != '=') ? 1 : 4;
	need = log_escape(in, n, out, cap);
	CHECK(need == want);
	if (cap == 0) {
		free(out);
		return;
	}
	len = strnlen(out, cap);
	CHECK(len < cap);
	for (size_t i = 0; i < len; i++)
		CHECK(out[i] >= 0x21 && out[i] <= 0x7e && out[i] != '"' && out[i] != '=');

	full = malloc(need + 1);
	back = malloc(n ? n : 1);
	CHECK(full != NULL && back != NULL);
	CHECK(log_escape(in, n, full, need + 1) == need);
	CHECK(strlen(full) == need);
	CHECK(unescape(full, need, back) == (long)n);
	CHECK(n == 0 || memcmp(back, in, n) == 0);
	if (need < cap) {
		CHECK(len == need && strcmp(out, full) == 0);
	} else {
		size_t dots = cap - 1 < 3 ? cap - 1 : 3;

		CHECK(len >= dots && memcmp(out + len - dots, "...", dots) == 0);
		/* What precedes the dots is whole escapes of the full output. */
		CHECK(memcmp(out, full, len - dots) == 0);
		CHECK(unescape(out, len - dots, back) >= 0);
		CHECK(cap - 1 < 3 || len - dots + 3 <= cap - 1);
	}
	free(back);
	free(full);
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *in;
	size_t n;

	if (size < 1)
		return 0;
	in = data + 1;
	n = size - 1;
	run(in, n, data[0]);
	run(in, n, LOG_ESCAPE_SIZE(n));

	if (addr_hostname_valid((const char *)in, n)) {
		char *out = malloc(LOG_ESCAPE_SIZE(n));

		CHECK(out != NULL);
		CHECK(n >= 1 && n <= 253);
		CHECK(log_escape(in, n, out, LOG_ESCAPE_SIZE(n)) == n);
		CHECK(memcmp(out, in, n) == 0);
		CHECK(in[0] != '.' && memchr(in, '\0', n) == NULL);
		free(out);
	}
	return 0;
}
