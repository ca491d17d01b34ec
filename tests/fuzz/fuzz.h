/*
 * What every fuzz target shares: libFuzzer's entry point (replay_main.c
 * calls it in the -replay builds that make check runs) and CHECK.
 */
#ifndef FUNNELD_FUZZ_H
#define FUNNELD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Not assert(): this must hold in the -replay build too, NDEBUG or not. */
#define CHECK(c) do {							\
	if (!(c)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n",		\
		    __FILE__, __LINE__, #c);				\
		abort();						\
	}								\
} while (0)

#endif
