/*
 * The line reader in front of inih.
 *
 * Debian's inih is built without INI_HANDLER_LINENO, with a fixed 200-byte
 * line buffer that silently splits longer lines, and it cuts section names
 * at 49 bytes (a backend target can be 253).  So we feed inih one line at a
 * time through ini_parse_stream(): we know the line of every handler call,
 * refuse long lines, and classify each line the way inih will, so that
 * sections are opened here with their full name, even when empty.
 *
 * inih behaviours mirrored here (ini.c, ini_parse_stream, built with
 * INI_ALLOW_MULTILINE, INI_ALLOW_INLINE_COMMENTS, ';' and '#' starting a line
 * comment, ';' after whitespace starting an inline comment, a UTF-8 BOM on
 * line 1 skipped, an indented line after a key continuing that key, "=" or
 * ":" separating a key from its value).
 */
#ifndef FUNNELD_CONFIG_READER_H
#define FUNNELD_CONFIG_READER_H

#include <stdbool.h>
#include <stddef.h>

struct ini_reader {
	/* Set by the caller. */
	const char *name;               /* file name in messages */
	/* A "[section]" line: text is the name between the brackets, trimmed. */
	int (*section)(struct ini_reader *r, char *text);
	/* "key = value", or an indented line continuing the key above (its value
	 * cut at an inline comment and trimmed, as inih does not do for those). */
	int (*key)(struct ini_reader *r, const char *name, char *value, bool continuation);
	char *err;                      /* the first error, "FILE:LINE: what" */
	size_t errlen;

	/* Read by the callbacks. */
	int line;                       /* of the current call */
	bool failed;

	/* Private. */
	const char *cur, *end;          /* input not yet handed to inih */
	int cont_line;                  /* that line continues the previous key */
	bool have_key;                  /* inih's prev_name is set */
};

/* Parse text (NUL-terminated).  0, or -1 with r->err set. */
int ini_reader_parse(struct ini_reader *r, const char *text);

/* Record the first error; line 0 means "no line applies".  Returns -1. */
int ini_reader_fail(struct ini_reader *r, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* s without its leading and trailing blanks (spaces, tabs), cut in place. */
char *ini_trim(char *s);

/* User text for a message: printable ASCII, the rest escaped, at most cap bytes. */
const char *ini_quote(char *buf, size_t cap, const char *s);

#endif
