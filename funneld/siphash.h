/* SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed hash for tables that
 * face attacker-chosen keys.  Pure. */
#ifndef FUNNELD_SIPHASH_H
#define FUNNELD_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_LEN 16

/* The 64-bit SipHash-2-4 of len bytes at msg under a 128-bit key (the
 * paper's byte order: both read little-endian).  Without the key, an
 * attacker cannot choose inputs that collide. */
uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *msg, size_t len);

#endif
