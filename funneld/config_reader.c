/* The line reader in front of inih; see config_reader.h. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config_reader.h"

/* The continuation rule below is inih's multi-line mode. */
#if defined(INI_ALLOW_MULTILINE) && !INI_ALLOW_MULTILINE
#error "funneld needs inih built with INI_ALLOW_MULTILINE"
#endif

const char *
ini_quote(char *buf, size_t cap, const char *s)
{
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (o + 8 >= cap) {
			memcpy(buf + o, "...", 4);
			return buf;
		}
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, cap - o, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	buf[o] = '\0';
	return buf;
}

int
ini_reader_fail(struct ini_reader *r, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->failed)
		return -1;
	r->failed = true;
	if (r->err == NULL || r->errlen == 0)
		return -1;
	if (line > 0)
		n = snprintf(r->err, r->errlen, "%s:%d: ", r->name, line);
	else
		n = snprintf(r->err, r->errlen, "%s: ", r->name);
	if (n < 0 || (size_t)n >= r->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

char *
ini_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

/* inih's find_chars_or_comment(): ';' after whitespace starts a comment. */
static char *
find_chars_or_comment(char *s, const char *chars)
{
	bool was_space = false;

	while (*s != '\0' && (chars == NULL || strchr(chars, *s) == NULL) && !(was_space && *s == ';')) {
		was_space = isspace((unsigned char)*s);
		s++;
	}
	return s;
}

/* "[name]": inih ends the name at the first ']', but "[backend [::1]:443]"
 * has two, so take the last one before a comment.  inih's idea of the name
 * is not used. */
static int
section_line(struct ini_reader *r, char *start)
{
	char *end, *rest;

	end = find_chars_or_comment(start + 1, "]");
	if (*end != ']')
		return ini_reader_fail(r, r->line, "missing \"]\" in section header");
	for (rest = start + 1; *rest != '\0'; rest++)
		if ((*rest == ';' || *rest == '#') && isspace((unsigned char)rest[-1]))
			break;
	*rest = '\0';
	if ((end = strrchr(start + 1, ']')) == NULL)
		return ini_reader_fail(r, r->line, "missing \"]\" in section header");
	for (rest = end + 1; *rest != '\0'; rest++)
		if (!isspace((unsigned char)*rest))
			return ini_reader_fail(r, r->line, "unexpected text after section header");
	*end = '\0';
	r->have_key = false;
	return r->section(r, ini_trim(start + 1));
}

/* Decide what inih will make of this line and act on what it will not
 * tell us: section headers and syntax errors. */
static int
classify(struct ini_reader *r, char *line)
{
	char *start = line, *end;

	if (r->line == 1 && strncmp(start, "\xef\xbb\xbf", 3) == 0)
		start += 3;
	while (*start != '\0' && isspace((unsigned char)*start))
		start++;
	if (*start == '\0' || *start == ';' || *start == '#')
		return 0;
	if (r->have_key && start > line) {
		r->cont_line = r->line;
		return 0;
	}
	if (*start == '[')
		return section_line(r, start);
	end = find_chars_or_comment(start, "=:");
	if (*end != '=' && *end != ':')
		return ini_reader_fail(r, r->line, "expected \"key = value\" or \"[section]\"");
	while (end > start && isspace((unsigned char)end[-1]))
		end--;
	if (end == start)
		return ini_reader_fail(r, r->line, "missing key name before \"=\"");
	r->have_key = true;
	return 0;
}

/* ini_reader for inih: one line per call, never one inih would split. */
static char *
next_line(char *buf, int num, void *stream)
{
	struct ini_reader *r = stream;
	const char *nl;
	char *copy;
	size_t len;
	int rc;

	if (r->failed || r->cur >= r->end)
		return NULL;
	nl = memchr(r->cur, '\n', (size_t)(r->end - r->cur));
	len = (size_t)((nl != NULL ? nl : r->end) - r->cur);
	r->line++;
	if (len > 0 && r->cur[len - 1] == '\r')
		len--;
	/* inih wants room for "\r\n\0" beyond the longest line. */
	if (num < 4 || len > (size_t)num - 3) {
		ini_reader_fail(r, r->line, "line too long (at most %d characters)", num < 4 ? 0 : num - 3);
		return NULL;
	}
	memcpy(buf, r->cur, len);
	buf[len] = '\n';
	buf[len + 1] = '\0';
	r->cur = nl != NULL ? nl + 1 : r->end;
	/* classify() cuts its copy; inih must get the line intact. */
	if ((copy = strndup(buf, len)) == NULL) {
		ini_reader_fail(r, r->line, "out of memory");
		return NULL;
	}
	rc = classify(r, copy);
	free(copy);
	return rc == -1 ? NULL : buf;
}

static int
on_pair(void *user, const char *section, const char *name, const char *value)
{
	struct ini_reader *r = user;
	bool cont = r->cont_line == r->line;
	char *v, *c;
	int rc;

	if (r->failed)
		return 0;
	if ((v = strdup(value)) == NULL) {
		ini_reader_fail(r, r->line, "out of memory");
		return 0;
	}
	if (cont) {
		/* inih hands continuation lines over with their comment. */
		c = find_chars_or_comment(v, NULL);
		*c = '\0';
		c = ini_trim(v);
		memmove(v, c, strlen(c) + 1);
	}
	rc = r->key(r, name, v, cont);
	free(v);
	return rc == 0;
}

int
ini_reader_parse(struct ini_reader *r, const char *text)
{
	int rc;

	r->cur = text != NULL ? text : "";
	r->end = r->cur + strlen(r->cur);
	r->line = 0;
	rc = ini_parse_stream(next_line, r, on_pair, r);
	/* next_line stops inih at the first error; this is a safety net. */
	if (!r->failed && rc == -2)
		ini_reader_fail(r, r->line, "out of memory");
	else if (!r->failed && rc != 0)
		ini_reader_fail(r, rc, "syntax error");
	return r->failed ? -1 : 0;
}
