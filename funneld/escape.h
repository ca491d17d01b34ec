/* Client-controlled text made safe for log lines and journal fields.  Pure. */
#ifndef FUNNELD_ESCAPE_H
#define FUNNELD_ESCAPE_H

#include <stddef.h>

/* An out buffer this large never truncates inlen bytes. */
#define LOG_ESCAPE_SIZE(inlen) (4 * (size_t)(inlen) + 1)

/*
 * Copy inlen bytes (any bytes, NUL included) into out as printable ASCII
 * that cannot forge log structure.  Every byte outside 0x21..0x7e, and
 * '\\', '"' and '=', becomes "\xNN" (lower-case hex); all else is itself.
 * So an escaped value holds no space, control or line break (it cannot end
 * its field or its line, or start a record), no '"' (cannot close a quoted
 * value such as reason="..."), and no '=' (cannot look like another
 * key=value to a reader that scans for them); and since '\\' only ever
 * starts an escape, unescaping gives back the input exactly.
 *
 * Returns the length of the whole escaped text, as snprintf() does: it was
 * truncated iff the result is >= cap.  Truncation happens between escapes,
 * never inside one, and is marked by "..." at the end (as many dots as fit
 * when cap < 4).  out is always NUL-terminated when cap > 0; with cap == 0
 * nothing is written.
 */
size_t log_escape(const void *in, size_t inlen, char *out, size_t cap);

#endif
