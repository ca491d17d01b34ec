/* Logging to stderr or journald; see log.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "escape.h"
#include "log.h"

static enum log_level log_level = LOG_LVL_INFO;
static bool use_journal;

/* stderr is the journal when JOURNAL_STREAM names its device and inode. */
void
log_init(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	char *end;
	struct stat st;

	use_journal = false;
	if (js == NULL)
		return;
	/* "DEV:INO"; strtoull, unlike sscanf, reports out-of-range numbers. */
	errno = 0;
	dev = strtoull(js, &end, 10);
	if (errno != 0 || end == js || *end != ':')
		return;
	js = end + 1;
	ino = strtoull(js, &end, 10);
	if (errno != 0 || end == js || *end != '\0')
		return;
	if (fstat(STDERR_FILENO, &st) == 0 && st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino)
		use_journal = true;
}

void
log_set_level(enum log_level lvl)
{
	log_level = lvl;
}

bool
log_to_journal(void)
{
	return use_journal;
}

static const char *
level_name(int prio)
{
	switch (prio) {
	case LOG_ERR: return "error";
	case LOG_WARNING: return "warning";
	case LOG_NOTICE: return "notice";
	case LOG_INFO: return "info";
	default: return "debug";
	}
}

static void
vlog(int prio, int errnum, const char *fmt, va_list ap)
{
	char msg[2048];
	int n;

	if (prio > (int)log_level)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if (errnum != 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(errnum));
	if (use_journal) {
		sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", prio, "SYSLOG_IDENTIFIER=funneld", NULL);
		return;
	}
	char line[2200];
	int len = snprintf(line, sizeof(line), "funneld: %s: %s\n", level_name(prio), msg);
	if (len > (int)sizeof(line) - 1)
		len = (int)sizeof(line) - 1;
	/* One write per line, so lines from several threads do not interleave. */
	if (write(STDERR_FILENO, line, (size_t)len) < 0)
		return;
}

#define LOGFN(name, prio, witherr)                      \
	void name(const char *fmt, ...)                 \
	{                                               \
		int saved = errno;                      \
		va_list ap;                             \
		va_start(ap, fmt);                      \
		vlog(prio, (witherr) ? saved : 0, fmt, ap); \
		va_end(ap);                             \
		errno = saved;                          \
	}

LOGFN(log_debug, LOG_DEBUG, 0)
LOGFN(log_info, LOG_INFO, 0)
LOGFN(log_notice, LOG_NOTICE, 0)
LOGFN(log_warnx, LOG_WARNING, 0)
LOGFN(log_warn, LOG_WARNING, 1)

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

static const char *
dash(const char *s)
{
	return s != NULL && *s != '\0' ? s : "-";
}

/* A field that came from a client (or may hold any byte): escaped, "-" when empty. */
static const char *
field(const char *s, char *buf, size_t cap)
{
	if (s == NULL || *s == '\0')
		return "-";
	log_escape(s, strlen(s), buf, cap);
	return buf;
}

#define FIELD_MAX 256                   /* escaped; longer ones end in "..." */

void
log_conn(const struct conn_record *r)
{
	/* Anything but a clean end is worth a notice; a clean one, or a
	 * forwarder's health check (PROXY LOCAL), is info. */
	int prio = strcmp(r->result, "ok") == 0 || strcmp(r->result, "proxy_local") == 0 ? LOG_INFO : LOG_NOTICE;
	char peer_b[FIELD_MAX], src_b[FIELD_MAX], target_b[FIELD_MAX], sni_b[FIELD_MAX], alpn_b[FIELD_MAX],
	    backend_b[FIELD_MAX];
	const char *peer, *src, *target, *sni, *alpn, *backend;

	if (prio > (int)log_level)
		return;
	peer = field(r->peer, peer_b, sizeof(peer_b));
	src = field(r->src, src_b, sizeof(src_b));
	target = field(r->target, target_b, sizeof(target_b));
	sni = field(r->sni, sni_b, sizeof(sni_b));
	alpn = field(r->alpn, alpn_b, sizeof(alpn_b));
	backend = field(r->backend, backend_b, sizeof(backend_b));
	if (use_journal) {
		sd_journal_send(
		    "MESSAGE=conn %llu peer=%s src=%s target=%s status=%d result=%s%s%s",
		    (unsigned long long)r->id, peer, src, target, r->status,
		    r->result, r->reason ? " reason=" : "", r->reason ? r->reason : "",
		    "PRIORITY=%d", prio,
		    "SYSLOG_IDENTIFIER=funneld",
		    "FUNNEL_CONN=%llu", (unsigned long long)r->id,
		    "FUNNEL_LISTENER=%s", dash(r->listener),
		    "FUNNEL_CLIENT=%s", dash(r->client),
		    "FUNNEL_PEER=%s", peer,
		    "FUNNEL_SRC=%s", src,
		    "FUNNEL_TARGET=%s", target,
		    "FUNNEL_BACKEND=%s", backend,
		    "FUNNEL_SNI=%s", sni,
		    "FUNNEL_ALPN=%s", alpn,
		    "FUNNEL_TLS_VERSION=%s", dash(r->tls_version),
		    "FUNNEL_CIPHER=%s", dash(r->cipher),
		    "FUNNEL_BYTES_IN=%llu", (unsigned long long)r->bytes_in,
		    "FUNNEL_BYTES_OUT=%llu", (unsigned long long)r->bytes_out,
		    "FUNNEL_DURATION_MS=%llu", (unsigned long long)r->duration_ms,
		    "FUNNEL_STATUS=%d", r->status,
		    "FUNNEL_RESULT=%s", r->result,
		    "FUNNEL_REASON=%s", dash(r->reason),
		    NULL);
		return;
	}
	char line[2048];
	int len = snprintf(line, sizeof(line),
	    "funneld: conn %llu listener=%s client=%s peer=%s src=%s target=%s backend=%s sni=%s alpn=%s tls=%s "
	    "cipher=%s in=%llu out=%llu duration=%llums status=%d result=%s%s%s%s\n",
	    (unsigned long long)r->id, dash(r->listener), dash(r->client), peer, src, target, backend, sni, alpn,
	    dash(r->tls_version), dash(r->cipher),
	    (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out,
	    (unsigned long long)r->duration_ms, r->status, r->result,
	    r->reason ? " reason=\"" : "", r->reason ? r->reason : "", r->reason ? "\"" : "");
	if (len > (int)sizeof(line) - 1)
		len = (int)sizeof(line) - 1;
	if (write(STDERR_FILENO, line, (size_t)len) < 0)
		return;
}
