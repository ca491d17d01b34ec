/*
 * Values of configuration keys: numbers, durations, words from a fixed
 * set, booleans, user names, paths with ${CREDENTIALS_DIRECTORY}.  Pure:
 * no parser state; each says what is wrong and config.c words the message.
 */
#ifndef FUNNELD_CONFIG_VALUES_H
#define FUNNELD_CONFIG_VALUES_H

#include <stdbool.h>
#include <stddef.h>

#define CREDS_VAR "${CREDENTIALS_DIRECTORY}"

/* Decimal, within min..max.  0 or -1. */
int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);

/* Whole seconds: "10", "10s", "5m", "2h", "1d".  0 or -1. */
int parse_duration(const char *s, unsigned *seconds);

/* Bytes: "65536", "64K", "256M", "1G" (binary units), within min..max.  0 or -1. */
int parse_size(const char *s, size_t min, size_t max, size_t *out);

/* One of a fixed set of words, any case: its value, or -1. */
struct word {
	const char *name;
	int value;
};
int parse_word(const char *s, const struct word *words, size_t n, int *out);

/* yes/no, true/false, on/off, 1/0.  0 or -1. */
int parse_bool(const char *s, bool *out);

/* The portable user name set (POSIX), as useradd and systemd take it. */
bool user_name_valid(const char *s);

/*
 * Expand ${CREDENTIALS_DIRECTORY} (from the environment) in a path into a
 * malloc'd *out.  Whether it is absolute is the caller's question.
 */
enum expand_result { EXPAND_OK, EXPAND_UNKNOWN_VARIABLE, EXPAND_NO_CREDENTIALS, EXPAND_TOO_LONG, EXPAND_NO_MEMORY };
enum expand_result expand_path(const char *s, char **out);

#endif
