/* Escaping of client-controlled text for logs; see escape.h. */
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

// TODO(merge): move into addr.c's hostname rules
bool
sni_hostname_valid(const char *s, size_t len)
{
	size_t label = 0;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}
