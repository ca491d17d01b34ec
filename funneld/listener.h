/* Listening sockets: from the configuration, or passed by systemd. */
#ifndef FUNNELD_LISTENER_H
#define FUNNELD_LISTENER_H

#include <stddef.h>

#include "config.h"

struct listener {
	int fd;
	enum listen_kind kind;
	char text[128];
	char *unlink_path;              /* a socket file we created, removed at exit */
	int worker;                     /* -1: every worker accepts on it; else only that one */
};

/* Open cfg's listen addresses into server.listeners.  0, or -1 with "FILE:LINE: ..." in err. */
int listeners_open(const struct config *cfg, unsigned nworkers, char *err, size_t errlen);
int listeners_adopt_activated(void);            /* sd_listen_fds; returns count or -1 */
void listeners_close(void);

#endif
