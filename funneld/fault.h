/*
 * Fault injection, for tests only.  The test binary build/funneld-faults is
 * compiled with -DFUNNELD_FAULTS: there FAULT("name") is true when the
 * environment variable FUNNELD_FAULT lists that name (comma-separated), so
 * a test can make one step fail that real conditions make fail only rarely
 * (out of memory at a given point).  In funneld itself FAULT() is false and
 * compiles away.
 */
#ifndef FUNNELD_FAULT_H
#define FUNNELD_FAULT_H

#ifdef FUNNELD_FAULTS
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static inline bool
fault_hit(const char *name)
{
	const char *list = getenv("FUNNELD_FAULT"), *p;
	size_t n = strlen(name);

	for (p = list; p != NULL && (p = strstr(p, name)) != NULL; p += n)
		if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
			return true;
	return false;
}
#define FAULT(name) fault_hit(name)
#else
#define FAULT(name) 0
#endif

#endif
