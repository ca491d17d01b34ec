/* Escaping of client-controlled text for logs; see escape.h. */
#include <stdbool.h>
#include <stdint.h>

#include "escape.h"

static bool
must_escape(uint8_t c)
{
	return c < 0x21 || c > 0x7e || c == '\\' || c == '"' || c == '=';
}

size_t
log_escape(const void *in, size_t inlen, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = in;
	size_t need = 0, w = 0, room, i;

	for (i = 0; i < inlen; i++)
		need += must_escape(p[i]) ? 4 : 1;
	if (cap == 0)
		return need;
	/* Whole escapes only; when it will not all fit, leave room for "...". */
	room = need < cap ? cap - 1 : (cap - 1 > 3 ? cap - 1 - 3 : 0);
	for (i = 0; i < inlen; i++) {
		if (!must_escape(p[i])) {
			if (w + 1 > room)
				break;
			out[w++] = (char)p[i];
		} else {
			if (w + 4 > room)
				break;
			out[w++] = '\\';
			out[w++] = 'x';
			out[w++] = hex[p[i] >> 4];
			out[w++] = hex[p[i] & 0xf];
		}
	}
	if (need >= cap)
		for (int d = 0; d < 3 && w < cap - 1; d++)
			out[w++] = '.';
	out[w] = '\0';
	return need;
}

