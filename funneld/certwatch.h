/* Reload when certificate or key files change on disk (inotify). */
#ifndef FUNNELD_CERTWATCH_H
#define FUNNELD_CERTWATCH_H

#include "config.h"

struct event_base;

int certwatch_init(struct event_base *base, void (*changed)(void));
void certwatch_update(const struct config *cfg);        /* watch the files cfg names */
void certwatch_close(void);

#endif
