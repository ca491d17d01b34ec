/* Listening sockets: from the configuration, or passed by systemd. */
#ifndef FUNNELD_LISTENER_H
#define FUNNELD_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* What comes in on a listener: the relay's POST /v0/ingress, or raw TLS from a forwarder ([listener]). */
enum listener_role { ROLE_INGRESS, ROLE_TLS };

struct listener {
	int fd;
	enum listen_kind kind;
	enum listener_role role;        /* ROLE_TLS: text names its [listener] section */
	char text[128];
	char *unlink_path;              /* a socket file we created, removed at exit */
	int worker;                     /* -1: every worker accepts on it; else only that one */
};

/*
 * Open cfg's listen and [listener] addresses into server.listeners (when
 * activated, only the [listener]s systemd did not pass).  0, or -1 with
 * "FILE:LINE: ..." in err.
 */
int listeners_open(const struct config *cfg, unsigned nworkers, bool activated, char *err, size_t errlen);
/* Sockets passed by systemd (sd_listen_fds): one whose address is a [listener]'s is that
 * listener, any other an ingress listener.  Returns how many, or -1. */
int listeners_adopt_activated(const struct config *cfg);
void listeners_close(void);

#endif
