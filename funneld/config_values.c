/* Values of configuration keys; see config_values.h. */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_values.h"

static bool
all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int
parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	unsigned long long v = 0;

	if (s == NULL || !all_digits(s))
		return -1;
	for (; *s != '\0'; s++) {
		v = v * 10 + (unsigned)(*s - '0');
		if (v > UINT_MAX)
			return -1;
	}
	if (v < min || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int
parse_duration(const char *s, unsigned *seconds)
{
	static const struct word units[] = { { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 } };
	unsigned long long v = 0;
	int mul = 1;
	const char *p;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	for (p = s; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > UINT_MAX)
			return -1;
	}
	if (*p != '\0') {
		/* One lower-case unit letter, nothing after it. */
		if (p[1] != '\0' || !islower((unsigned char)*p) ||
		    parse_word(p, units, sizeof(units) / sizeof(units[0]), &mul) != 0)
			return -1;
	}
	if (v * (unsigned)mul > UINT_MAX)
		return -1;
	*seconds = (unsigned)(v * (unsigned)mul);
	return 0;
}

int
parse_size(const char *s, size_t min, size_t max, size_t *out)
{
	static const struct word units[] = { { "k", 10 }, { "m", 20 }, { "g", 30 } };
	unsigned long long v = 0;
	const char *p;
	int shift = 0;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	for (p = s; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > (1ULL << 40))
			return -1;
	}
	if (*p != '\0' && (p[1] != '\0' || parse_word(p, units, sizeof(units) / sizeof(units[0]), &shift) != 0))
		return -1;
	v <<= shift;
	if (v < min || v > max)
		return -1;
	*out = (size_t)v;
	return 0;
}

int
parse_word(const char *s, const struct word *words, size_t n, int *out)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(s, words[i].name) == 0) {
			*out = words[i].value;
			return 0;
		}
	return -1;
}

int
parse_bool(const char *s, bool *out)
{
	static const struct word words[] = {
		{ "yes", 1 }, { "true", 1 }, { "on", 1 }, { "1", 1 },
		{ "no", 0 }, { "false", 0 }, { "off", 0 }, { "0", 0 },
	};
	int v;

	if (parse_word(s, words, sizeof(words) / sizeof(words[0]), &v) != 0)
		return -1;
	*out = v != 0;
	return 0;
}

bool
user_name_valid(const char *s)
{
	if (strlen(s) > 32 || s[0] == '-' || s[0] == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

enum expand_result
expand_path(const char *v, char **out)
{
	const char *creds = NULL, *s, *var;
	size_t n = 0, clen = 0, len;
	char *o;

	*out = NULL;
	for (s = v; (var = strstr(s, "${")) != NULL; s = var + strlen(CREDS_VAR)) {
		if (strncmp(var, CREDS_VAR, strlen(CREDS_VAR)) != 0)
			return EXPAND_UNKNOWN_VARIABLE;
		n++;
	}
	if (n > 0) {
		creds = getenv("CREDENTIALS_DIRECTORY");
		if (creds == NULL || *creds == '\0')
			return EXPAND_NO_CREDENTIALS;
		clen = strlen(creds);
	}
	len = strlen(v) + n * clen;
	if (len >= PATH_MAX)
		return EXPAND_TOO_LONG;
	if ((*out = malloc(len + 1)) == NULL)
		return EXPAND_NO_MEMORY;
	for (o = *out, s = v; n > 0 && (var = strstr(s, CREDS_VAR)) != NULL; s = var + strlen(CREDS_VAR)) {
		memcpy(o, s, (size_t)(var - s));
		o += var - s;
		memcpy(o, creds, clen);
		o += clen;
	}
	strcpy(o, s);
	return EXPAND_OK;
}
