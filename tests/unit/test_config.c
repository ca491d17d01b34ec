/* Unit tests of the configuration parser (funneld/config.c), cmocka 1.1. */
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <mbedtls/ecp.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>

#include "backend.h"
#include "config.h"
#include "config_values.h"
#include "tls_suites.h"

/* The smallest valid tail: a cert pair and one backend. */
#define TAIL "[tls]\ncert = /c.pem\nkey = /k.pem\n[backend a.example:443]\nsocket = /run/a.sock\n"

static struct config *
parse_ok(const char *text)
{
	struct config *cfg = NULL;
	char err[CONFIG_ERR_MAX] = "";
	int rc;

	rc = config_parse_string("t.conf", text, &cfg, err, sizeof(err));
	if (rc != 0)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(cfg);
	return cfg;
}

static void
expect_error(const char *text, const char *want)
{
	struct config *cfg = (struct config *)&cfg;
	char err[CONFIG_ERR_MAX] = "";
	int rc;

	rc = config_parse_string("t.conf", text, &cfg, err, sizeof(err));
	if (rc != -1 || strcmp(err, want) != 0)
		print_error("rc %d, error \"%s\"\n  wanted \"%s\"\n", rc, err, want);
	assert_int_equal(rc, -1);
	assert_null(cfg);
	assert_string_equal(err, want);
}

static int
cipher(const char *name)
{
	int id = mbedtls_ssl_get_ciphersuite_id(name);

	assert_int_not_equal(id, 0);
	return id;
}

static int
curve(const char *name)
{
	const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_name(name);

	assert_non_null(ci);
	return (int)ci->grp_id;
}

static bool
have_tls13(void)
{
	return (tls_versions_available() & TLS_V13) != 0;
}

/*
 * cfg->ciphers from index `from` on: the TLS 1.3 defaults a list that names
 * no 1.3 suite keeps where the library has 1.3, then the end.  Returns the
 * number of suites in all.
 */
static size_t
tls13_defaults_at(const struct config *cfg, size_t from)
{
	static const char *const tls13[] = {
		"TLS1-3-AES-128-GCM-SHA256", "TLS1-3-CHACHA20-POLY1305-SHA256", "TLS1-3-AES-256-GCM-SHA384",
	};
	size_t n = from;

	if (have_tls13())
		for (size_t i = 0; i < sizeof(tls13) / sizeof(tls13[0]); i++)
			assert_int_equal(cfg->ciphers[n++], cipher(tls13[i]));
	assert_int_equal(cfg->ciphers[n], 0);
	return n;
}

/*
 * Defaults and every key
 */

static void
test_defaults(void **state)
{
	struct config *cfg = parse_ok(TAIL);
	const struct backend_conf *b;

	assert_string_equal(cfg->path, "t.conf");
	assert_int_equal(cfg->nlistens, 0);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->max_pending, 1000);
	assert_int_equal(cfg->max_pending_per_peer, 64);
	assert_int_equal(cfg->max_buffer_memory, 256 << 20);
	assert_int_equal(cfg->ndeny, 0);
	assert_int_equal(cfg->client_limits.max_conns, 0);
	assert_int_equal(cfg->client_limits.rate.count, 0);
	assert_int_equal(cfg->ntls_listeners, 0);
	assert_int_equal(cfg->header_timeout, 10);
	assert_int_equal(cfg->handshake_timeout, 10);
	assert_int_equal(cfg->idle_timeout, 600);
	assert_int_equal(cfg->shutdown_timeout, 30);
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_null(cfg->metrics);
	assert_null(cfg->user);
	assert_true(cfg->session_tickets);
	assert_int_equal(cfg->ticket_rotation, 12 * 3600);

	/* allow = 100.64.0.0/10, fd7a:115c:a1e0::/48 */
	assert_int_equal(cfg->nallow, 2);
	assert_int_equal(cfg->allow[0].family, AF_INET);
	assert_int_equal(cfg->allow[0].prefix, 10);
	assert_memory_equal(cfg->allow[0].addr, "\x64\x40\x00\x00", 4);
	assert_int_equal(cfg->allow[1].family, AF_INET6);
	assert_int_equal(cfg->allow[1].prefix, 48);
	assert_memory_equal(cfg->allow[1].addr, "\xfd\x7a\x11\x5c\xa1\xe0\0\0\0\0\0\0\0\0\0\0", 16);

	assert_false(cfg->tls.alpn_set);
	assert_int_equal(cfg->tls.alpn.n, 2);
	assert_string_equal(cfg->tls.alpn.v[0], "h2");
	assert_string_equal(cfg->tls.alpn.v[1], "http/1.1");
	assert_null(cfg->tls.alpn.v[2]);

	assert_int_equal(cfg->ciphers[0], cipher("TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"));
	assert_int_equal(cfg->ciphers[1], cipher("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"));
	assert_int_equal(cfg->ciphers[2], cipher("TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"));
	assert_int_equal(cfg->ciphers[3], cipher("TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256"));
	assert_int_equal(cfg->ciphers[4], cipher("TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"));
	assert_int_equal(cfg->ciphers[5], cipher("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"));
	assert_int_equal(cfg->nciphers, tls13_defaults_at(cfg, 6));
	/* Every version the library has. */
	assert_int_equal(cfg->tls_versions, have_tls13() ? TLS_V12 | TLS_V13 : TLS_V12);

	assert_int_equal(cfg->ncurves, 2);
	assert_int_equal(cfg->curves[0], MBEDTLS_ECP_DP_CURVE25519);
	assert_int_equal(cfg->curves[1], MBEDTLS_ECP_DP_SECP256R1);
	assert_int_equal(cfg->curves[2], MBEDTLS_ECP_DP_NONE);

	assert_string_equal(cfg->tls.cert, "/c.pem");
	assert_string_equal(cfg->tls.key, "/k.pem");
	assert_int_equal(cfg->tls.cert_line, 2);
	assert_int_equal(cfg->tls.key_line, 3);

	assert_int_equal(cfg->nbackends, 1);
	b = &cfg->backends[0];
	assert_string_equal(b->name, "a.example:443");
	assert_string_equal(b->host, "a.example");
	assert_int_equal(b->port, 443);
	assert_string_equal(b->socket, "/run/a.sock");
	assert_int_equal(b->proxy, PROXY_OFF);
	assert_int_equal(b->line, 4);
	/* What [tls] gives it is in force in its own tls_conf. */
	assert_false(b->tls.alpn_set);
	assert_string_equal(b->tls.cert, "/c.pem");
	assert_string_equal(b->tls.key, "/k.pem");
	assert_int_equal(b->tls.cert_line, cfg->tls.cert_line);
	assert_int_equal(b->tls.alpn.n, 2);
	assert_string_equal(b->tls.alpn.v[0], "h2");
	assert_string_equal(b->tls.alpn.v[1], "http/1.1");
	assert_null(b->tls.alpn.v[2]);
	config_free(cfg);
}

static void
test_every_key(void **state)
{
	struct config *cfg = parse_ok(
	    "[funneld]\n"
	    "listen = 127.0.0.1:4443, [::1]:4443\n"
	    "allow = 10.0.0.0/8\n"
	    "max_connections = 5\n"
	    "header_timeout = 3s\n"
	    "handshake_timeout = 4\n"
	    "idle_timeout = 2m\n"
	    "shutdown_timeout = 0\n"
	    "workers = auto\n"
	    "log_level = debug\n"
	    "metrics = unix:/run/funneld/metrics.sock\n"
	    "user = funneld\n"
	    "[tls]\n"
	    "cert = /etc/c.pem\n"
	    "key = /etc/k.pem\n"
	    "alpn = http/1.1\n"
	    "session_tickets = no\n"
	    "ticket_rotation = 1h\n"
	    "ciphers = TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384\n"
	    "curves = secp384r1\n"
	    "versions = TLSv1.2\n"
	    "[backend B.Example.:8443]\n"
	    "socket = /run/b.sock\n"
	    "proxy_protocol = v2\n"
	    "cert = /etc/b.pem\n"
	    "key = /etc/b.key\n"
	    "alpn = h2\n");
	const struct backend_conf *b;

	assert_int_equal(cfg->nlistens, 2);
	assert_string_equal(cfg->listens[0].text, "127.0.0.1:4443");
	assert_int_equal(cfg->listens[0].line, 2);
	assert_string_equal(cfg->listens[1].text, "[::1]:4443");
	assert_int_equal(cfg->listens[1].line, 2);
	assert_int_equal(cfg->nallow, 1);
	assert_int_equal(cfg->max_connections, 5);
	assert_int_equal(cfg->header_timeout, 3);
	assert_int_equal(cfg->handshake_timeout, 4);
	assert_int_equal(cfg->idle_timeout, 120);
	assert_int_equal(cfg->shutdown_timeout, 0);
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->log_level, LOG_LVL_DEBUG);
	assert_string_equal(cfg->metrics, "unix:/run/funneld/metrics.sock");
	assert_string_equal(cfg->user, "funneld");
	assert_true(cfg->tls.alpn_set);
	assert_int_equal(cfg->tls.alpn.n, 1);
	assert_string_equal(cfg->tls.alpn.v[0], "http/1.1");
	assert_false(cfg->session_tickets);
	assert_int_equal(cfg->ticket_rotation, 3600);
	assert_int_equal(cfg->ciphers[0], cipher("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"));
	assert_int_equal(cfg->nciphers, tls13_defaults_at(cfg, 1));
	assert_int_equal(cfg->tls_versions, TLS_V12);
	assert_int_equal(cfg->ncurves, 1);
	assert_int_equal(cfg->curves[0], MBEDTLS_ECP_DP_SECP384R1);
	assert_int_equal(cfg->curves[1], 0);

	b = &cfg->backends[0];
	assert_string_equal(b->name, "b.example:8443");
	assert_string_equal(b->host, "b.example");
	assert_int_equal(b->port, 8443);
	assert_int_equal(b->line, 22);
	assert_int_equal(b->proxy, PROXY_V2);
	assert_string_equal(b->tls.cert, "/etc/b.pem");
	assert_int_equal(b->tls.cert_line, 25);
	assert_true(b->tls.alpn_set);
	assert_string_equal(b->tls.key, "/etc/b.key");
	assert_int_equal(b->tls.alpn.n, 1);
	assert_string_equal(b->tls.alpn.v[0], "h2");
	config_free(cfg);
}

static void
test_enums_and_booleans(void **state)
{
	static const struct {
		const char *v;
		enum log_level l;
	} levels[] = {
		{ "debug", LOG_LVL_DEBUG }, { "info", LOG_LVL_INFO }, { "notice", LOG_LVL_NOTICE },
		{ "warning", LOG_LVL_WARNING }, { "err", LOG_LVL_ERR }, { "NOTICE", LOG_LVL_NOTICE },
	};
	static const struct {
		const char *v;
		bool b;
	} bools[] = {
		{ "yes", true }, { "no", false }, { "true", true }, { "false", false },
		{ "on", true }, { "off", false }, { "1", true }, { "0", false }, { "Yes", true },
	};
	static const struct {
		const char *v;
		enum proxy_mode m;
	} proxies[] = { { "off", PROXY_OFF }, { "v1", PROXY_V1 }, { "v2", PROXY_V2 } };
	char text[512];
	struct config *cfg;
	size_t i;

	for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		snprintf(text, sizeof(text), "[funneld]\nlog_level = %s\n" TAIL, levels[i].v);
		cfg = parse_ok(text);
		assert_int_equal(cfg->log_level, levels[i].l);
		config_free(cfg);
	}
	for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		snprintf(text, sizeof(text), TAIL "[tls]\nsession_tickets = %s\n", bools[i].v);
		cfg = parse_ok(text);
		assert_int_equal(cfg->session_tickets, bools[i].b);
		config_free(cfg);
	}
	for (i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++) {
		snprintf(text, sizeof(text), TAIL "proxy_protocol = %s\n", proxies[i].v);
		cfg = parse_ok(text);
		assert_int_equal(cfg->backends[0].proxy, proxies[i].m);
		config_free(cfg);
	}
	expect_error("[funneld]\nlog_level = verbose\n",
	    "t.conf:2: bad log_level \"verbose\" (debug, info, notice, warning or err)");
	expect_error("[tls]\nsession_tickets = maybe\n",
	    "t.conf:2: bad boolean \"maybe\" for session_tickets (yes or no)");
	expect_error(TAIL "proxy_protocol = v3\n", "t.conf:6: bad proxy_protocol \"v3\" (off, v1 or v2)");
}

/*
 * Numbers and durations
 */

static void
test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		unsigned v;
	} good[] = {
		{ "0", 0 }, { "10", 10 }, { "10s", 10 }, { "5m", 300 }, { "2h", 7200 }, { "1d", 86400 },
		{ "007", 7 }, { "4294967295", 4294967295u }, { "49710d", 4294944000u },
	};
	static const char *const bad[] = {
		"", "s", "10x", "10ss", "10sm", "-1", "+1", " 10", "10 ", "10 s", "1.5h", "10S", "1H",
		"4294967296", "49711d", "99999999999999999999", "1e3", "0x10",
	};
	unsigned v;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 12345;
		if (parse_duration(good[i].s, &v) != 0 || v != good[i].v)
			print_error("duration \"%s\" -> %u\n", good[i].s, v);
		assert_int_equal(parse_duration(good[i].s, &v), 0);
		assert_int_equal(v, good[i].v);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_duration(bad[i], &v) != -1)
			print_error("duration \"%s\" accepted\n", bad[i]);
		assert_int_equal(parse_duration(bad[i], &v), -1);
	}
	assert_int_equal(parse_duration(NULL, &v), -1);
}

static void
test_duration_keys(void **state)
{
	struct config *cfg;

	cfg = parse_ok("[funneld]\nheader_timeout = 1\nhandshake_timeout = 1m\nidle_timeout = 1d\n"
	    "shutdown_timeout = 7d\n[tls]\nticket_rotation = 1s\n" TAIL);
	assert_int_equal(cfg->header_timeout, 1);
	assert_int_equal(cfg->handshake_timeout, 60);
	assert_int_equal(cfg->idle_timeout, 86400);
	assert_int_equal(cfg->shutdown_timeout, 7 * 86400);
	assert_int_equal(cfg->ticket_rotation, 1);
	config_free(cfg);

	expect_error("[funneld]\n\nheader_timeout = 10x\n", "t.conf:3: bad duration \"10x\" for header_timeout");
	expect_error("[funneld]\nheader_timeout = 0\n",
	    "t.conf:2: bad duration \"0\" for header_timeout: must be between 1s and 7d");
	expect_error("[funneld]\nhandshake_timeout = 0s\n",
	    "t.conf:2: bad duration \"0s\" for handshake_timeout: must be between 1s and 7d");
	expect_error("[funneld]\nidle_timeout = 0m\n",
	    "t.conf:2: bad duration \"0m\" for idle_timeout: must be between 1s and 7d");
	expect_error("[funneld]\nidle_timeout = 8d\n",
	    "t.conf:2: bad duration \"8d\" for idle_timeout: must be between 1s and 7d");
	expect_error("[funneld]\nshutdown_timeout = 604801\n",
	    "t.conf:2: bad duration \"604801\" for shutdown_timeout: must be between 0s and 7d");
	expect_error("[tls]\nticket_rotation = 0\n",
	    "t.conf:2: bad duration \"0\" for ticket_rotation: must be between 1s and 7d");
	expect_error("[funneld]\nheader_timeout =\n", "t.conf:2: empty value for header_timeout");
}

static void
test_parse_uint(void **state)
{
	unsigned v = 0;

	assert_int_equal(parse_uint("0", 0, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_uint("10", 0, 10, &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(parse_uint("0010", 0, 10, &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(parse_uint("4294967295", 0, 4294967295u, &v), 0);
	assert_int_equal(v, 4294967295u);
	assert_int_equal(parse_uint("11", 0, 10, &v), -1);
	assert_int_equal(parse_uint("4", 5, 10, &v), -1);
	assert_int_equal(parse_uint("4294967296", 0, 4294967295u, &v), -1);
	assert_int_equal(parse_uint("", 0, 10, &v), -1);
	assert_int_equal(parse_uint("abc", 0, 10, &v), -1);
	assert_int_equal(parse_uint("+1", 0, 10, &v), -1);
	assert_int_equal(parse_uint("-1", 0, 10, &v), -1);
	assert_int_equal(parse_uint(" 1", 0, 10, &v), -1);
	assert_int_equal(parse_uint("1 ", 0, 10, &v), -1);
	assert_int_equal(parse_uint("1e3", 0, 10000, &v), -1);
	assert_int_equal(parse_uint(NULL, 0, 10, &v), -1);
}

static void
test_number_keys(void **state)
{
	struct config *cfg;

	cfg = parse_ok("[funneld]\nmax_connections = 1000000\nworkers = 256\n" TAIL);
	assert_int_equal(cfg->max_connections, 1000000);
	assert_int_equal(cfg->workers, 256);
	config_free(cfg);
	cfg = parse_ok("[funneld]\nmax_connections = 1\nworkers = AUTO\n" TAIL);
	assert_int_equal(cfg->max_connections, 1);
	assert_int_equal(cfg->workers, 0);
	config_free(cfg);

	expect_error("[funneld]\nmax_connections = abc\n", "t.conf:2: bad number \"abc\" for max_connections");
	expect_error("[funneld]\n; x\nmax_connections = 0\n",
	    "t.conf:3: bad number \"0\" for max_connections: must be between 1 and 1000000");
	expect_error("[funneld]\nmax_connections = 1000001\n",
	    "t.conf:2: bad number \"1000001\" for max_connections: must be between 1 and 1000000");
	expect_error("[funneld]\nworkers = 0\n",
	    "t.conf:2: bad number \"0\" for workers: must be between 1 and 256, or auto");
	expect_error("[funneld]\nworkers = 257\n",
	    "t.conf:2: bad number \"257\" for workers: must be between 1 and 256, or auto");
	expect_error("[funneld]\nworkers = many\n", "t.conf:2: bad number \"many\" for workers");
}

/*
 * The file's structure: sections, keys, lines
 */

static void
test_error_messages(void **state)
{
	expect_error("[funneld]\nlisten = 127.0.0.1:1\n; comment\n\n# comment\nmax_connections = 3\nfoo = bar\n",
	    "t.conf:7: unknown key \"foo\" in [funneld]");
	expect_error("[tls]\nsocket = /x\n", "t.conf:2: unknown key \"socket\" in [tls]");
	expect_error("[backend Example.COM:443]\nsocket = /x\nlisten = 1.2.3.4:5\n",
	    "t.conf:3: unknown key \"listen\" in [backend example.com:443]");
	expect_error("[funneld]\n[foo]\n", "t.conf:2: unknown section [foo]");
	expect_error("[funneld x]\n", "t.conf:1: unknown section [funneld x]");
	expect_error("listen = 1.2.3.4:5\n", "t.conf:1: key \"listen\" outside any section");
	expect_error("[funneld]\nmax_connections = 1\n[tls]\n[funneld]\nmax_connections = 2\n",
	    "t.conf:5: max_connections given twice (first at line 2)");
	expect_error("[funneld]\nlisten 1.2.3.4\n", "t.conf:2: expected \"key = value\" or \"[section]\"");
	/* inih takes ':' as '=' too. */
	expect_error("[funneld]\nlisten 1.2.3.4:5\n", "t.conf:2: unknown key \"listen 1.2.3.4\" in [funneld]");
	expect_error("[funneld]\n= 5\n", "t.conf:2: missing key name before \"=\"");
	expect_error("[funneld\n", "t.conf:1: missing \"]\" in section header");
	expect_error("[tls ;x]\n", "t.conf:1: missing \"]\" in section header");
	expect_error("[tls] x\n", "t.conf:1: unexpected text after section header");
	expect_error("[tls #]\n", "t.conf:1: missing \"]\" in section header");
	expect_error("[funneld]\nuser = a\x01" "b\n", "t.conf:2: control character in value of user");
	expect_error("[funneld]\nfo\x1b[1mo = 1\n", "t.conf:2: unknown key \"fo\\x1b[1mo\" in [funneld]");
	expect_error("", "t.conf: no [backend HOST:PORT] section");
	expect_error("[tls]\ncert = /c\nkey = /k\n", "t.conf: no [backend HOST:PORT] section");
}

static void
test_backend_errors(void **state)
{
	expect_error("[tls]\ncert = /c\nkey = /k\n\n[backend example.com:443]\nproxy_protocol = v1\n",
	    "t.conf:5: backend example.com:443: no socket");
	expect_error("[tls]\ncert = /c\nkey = /k\n[backend a:1]\nsocket = /a\n[backend example.com:443]\n",
	    "t.conf:6: backend example.com:443: no socket");
	expect_error(
	    "[tls]\ncert = /c\nkey = /k\n[backend x:1]\nsocket = /a\n[backend y:1]\nsocket = /a\n"
	    "[backend x:2]\nsocket = /a\n[backend x:3]\nsocket = /a\n[backend example.com:443]\n"
	    "socket = /b\n[backend EXAMPLE.com.:443]\nsocket = /c\n",
	    "t.conf:14: backend example.com:443 defined twice (first at line 12)");
	expect_error("[backend *:80]\nsocket = /a\n[backend *:80]\n", "t.conf:3: backend *:80 defined twice (first at line 1)");
	expect_error("[backend [2001:DB8::1]:80]\nsocket = /a\n[backend [2001:db8:0::1]:80]\n",
	    "t.conf:3: backend [2001:db8::1]:80 defined twice (first at line 1)");
	expect_error("[backend]\n", "t.conf:1: missing target in [backend] (want [backend HOST:PORT])");
	expect_error("[backend example.com]\n", "t.conf:1: bad backend target \"example.com\" (want [backend HOST:PORT])");
	expect_error("[backend example.com:0]\n", "t.conf:1: bad backend target \"example.com:0\" (want [backend HOST:PORT])");
	expect_error("[backend example.com:65536]\n",
	    "t.conf:1: bad backend target \"example.com:65536\" (want [backend HOST:PORT])");
	expect_error("[backend a..b:1]\n", "t.conf:1: bad backend target \"a..b:1\" (want [backend HOST:PORT])");
	expect_error("[backend :1]\n", "t.conf:1: bad backend target \":1\" (want [backend HOST:PORT])");
	expect_error("[backend a b:1]\n", "t.conf:1: bad backend target \"a b:1\" (want [backend HOST:PORT])");
	expect_error("[backend [::1:80]\n", "t.conf:1: bad backend target \"[::1:80\" (want [backend HOST:PORT])");
	expect_error("[backend ::1:80]\n", "t.conf:1: bad backend target \"::1:80\" (want [backend HOST:PORT])");
	expect_error("[backend x:1]\nsocket = /a\nsocket = /b\n", "t.conf:3: socket given twice (first at line 2)");
	expect_error("[backend x:1]\nsocket = run/a.sock\n", "t.conf:2: socket \"run/a.sock\" is not an absolute path");
}

static void
test_backend_targets(void **state)
{
	/* Longer than inih's 50-byte section buffer: kept whole. */
	struct config *cfg = parse_ok(
	    "[tls]\ncert = /c\nkey = /k\n"
	    "[backend a-rather-long-node-name.tail0123456789abcdef.ts.net:443]\nsocket = /a\n"
	    "[backend *:8443]\nsocket = /b\n"
	    "[backend [2001:DB8:0::1]:443]\nsocket = /c\n"
	    "[ backend\t100.64.0.1:80 ]  ; comment\nsocket = /d\n");

	assert_int_equal(cfg->nbackends, 4);
	assert_string_equal(cfg->backends[0].name, "a-rather-long-node-name.tail0123456789abcdef.ts.net:443");
	assert_string_equal(cfg->backends[0].host, "a-rather-long-node-name.tail0123456789abcdef.ts.net");
	assert_string_equal(cfg->backends[1].name, "*:8443");
	assert_null(cfg->backends[1].host);
	assert_int_equal(cfg->backends[1].port, 8443);
	assert_string_equal(cfg->backends[2].name, "[2001:db8::1]:443");
	assert_string_equal(cfg->backends[2].host, "2001:db8::1");
	assert_string_equal(cfg->backends[3].name, "100.64.0.1:80");
	assert_int_equal(cfg->backends[3].line, 10);
	config_free(cfg);
}

static void
test_cert_key_pairs(void **state)
{
	struct config *cfg;

	expect_error("[tls]\ncert = /c\n[backend x:1]\nsocket = /a\n", "t.conf:2: [tls]: cert without key");
	expect_error("[tls]\n\nkey = /k\n[backend x:1]\nsocket = /a\n", "t.conf:3: [tls]: key without cert");
	expect_error("[tls]\ncert = /c\nkey = /k\n[backend x:1]\nsocket = /a\ncert = /xc\n",
	    "t.conf:6: backend x:1: cert without key");
	expect_error("[tls]\ncert = /c\nkey = /k\n[backend x:1]\nsocket = /a\nkey = /xk\n",
	    "t.conf:6: backend x:1: key without cert");
	expect_error("[backend x:1]\nsocket = /a\ncert = /xc\nkey = /xk\n[backend y:1]\nsocket = /b\n",
	    "t.conf:5: backend y:1: no cert and key (set them in [tls] or here)");
	expect_error("[tls]\ncert = /c\ncert = /d\n", "t.conf:3: cert given twice (first at line 2)");

	/* Every backend with its own pair: [tls] needs none. */
	cfg = parse_ok("[backend x:1]\nsocket = /a\ncert = /xc\nkey = /xk\nalpn =\n");
	assert_null(cfg->tls.cert);
	assert_string_equal(cfg->backends[0].tls.cert, "/xc");
	assert_string_equal(cfg->backends[0].tls.key, "/xk");
	assert_true(cfg->backends[0].tls.alpn_set);
	assert_int_equal(cfg->backends[0].tls.alpn.n, 0);
	assert_int_equal(cfg->tls.alpn.n, 2);
	config_free(cfg);
}

static void
test_line_too_long(void **state)
{
	/* inih's buffer is 200 bytes: 197 characters and "\r\n\0". */
	char text[1024], val[256], want[512];
	struct config *cfg;

	memset(val, 'c', 195);          /* "; " and this: 197 characters */
	val[195] = '\0';
	snprintf(text, sizeof(text), "[funneld]\r\n; %s\r\n" TAIL, val);
	cfg = parse_ok(text);
	config_free(cfg);
	snprintf(text, sizeof(text), "[funneld]\n; %s\n" TAIL, val);
	cfg = parse_ok(text);
	config_free(cfg);

	snprintf(text, sizeof(text), "[tls]\ncert = /c\nkey = /k\n\n[backend x:1]\n; %sX\nsocket = /a\n", val);
	expect_error(text, "t.conf:6: line too long (at most 197 characters)");
	/* The same without a final newline, and with CRLF. */
	snprintf(text, sizeof(text), "[funneld]\n; %sX", val);
	expect_error(text, "t.conf:2: line too long (at most 197 characters)");
	snprintf(text, sizeof(text), "[funneld]\r\n; %sX\r\n", val);
	expect_error(text, "t.conf:2: line too long (at most 197 characters)");

	/* A 197-character key line reaches its check whole; messages quote 88 bytes. */
	memset(val, 'u', 190);
	val[190] = '\0';
	snprintf(text, sizeof(text), "[funneld]\nuser = %s\n" TAIL, val);
	snprintf(want, sizeof(want), "t.conf:2: bad user name \"%.88s...\"", val);
	expect_error(text, want);
}

static void
test_inih_quirks(void **state)
{
	struct config *cfg;

	/* BOM, CRLF, "key: value", inline comments, '#' comment lines. */
	cfg = parse_ok("\xef\xbb\xbf[funneld]\r\n"
	    "max_connections: 7 ; seven\r\n"
	    "  # indented comment\r\n"
	    "[tls] # TLS\n"
	    "alpn = h2;x ; only ';' after a blank starts a comment\r\n"
	    "cert = /c#1 ; the cert\nkey = /k\n[backend x:1]\nsocket = /a\n");
	assert_int_equal(cfg->max_connections, 7);
	assert_int_equal(cfg->tls.alpn.n, 1);
	assert_string_equal(cfg->tls.alpn.v[0], "h2;x");
	assert_string_equal(cfg->tls.cert, "/c#1");
	config_free(cfg);
	/* An indented line right after a section header is a key of its own. */
	cfg = parse_ok("[funneld]\n  max_connections = 8\n" TAIL);
	assert_int_equal(cfg->max_connections, 8);
	config_free(cfg);
	expect_error("[funneld]\nuser = a;b\n", "t.conf:2: bad user name \"a;b\"");
}

/*
 * Lists
 */

static void
test_list_appending(void **state)
{
	struct config *cfg = parse_ok(
	    "[funneld]\n"
	    "listen = 127.0.0.1:1, 127.0.0.1:2\n"
	    "allow = 10.0.0.0/8\n"
	    "listen = unix:/run/f.sock\n"
	    "allow = 192.168.0.0/16,\n"
	    "        ::1 ; loopback\n"
	    "[tls]\n"
	    "alpn = h2\n"
	    "alpn = http/1.1, \n"
	    "\tacme-tls/1\n"
	    "ciphers = ECDHE-RSA-AES128-GCM-SHA256\n"
	    "ciphers = TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384,\n"
	    "  TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256\n"
	    "curves = secp521r1\n"
	    "curves = x25519\n"
	    TAIL);

	assert_int_equal(cfg->nlistens, 3);
	assert_string_equal(cfg->listens[1].text, "127.0.0.1:2");
	assert_string_equal(cfg->listens[2].text, "unix:/run/f.sock");
	assert_int_equal(cfg->listens[2].line, 4);
	assert_int_equal(cfg->nallow, 3);
	assert_int_equal(cfg->allow[1].prefix, 16);
	assert_int_equal(cfg->allow[2].family, AF_INET6);
	assert_int_equal(cfg->allow[2].prefix, 128);
	assert_int_equal(cfg->tls.alpn.n, 3);
	assert_string_equal(cfg->tls.alpn.v[2], "acme-tls/1");
	assert_null(cfg->tls.alpn.v[3]);
	assert_int_equal(cfg->ciphers[0], cipher("TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"));
	assert_int_equal(cfg->ciphers[1], cipher("TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"));
	assert_int_equal(cfg->ciphers[2], cipher("TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"));
	assert_int_equal(cfg->nciphers, tls13_defaults_at(cfg, 3));
	assert_int_equal(cfg->ncurves, 2);
	assert_int_equal(cfg->curves[0], curve("secp521r1"));
	assert_int_equal(cfg->curves[1], curve("x25519"));
	assert_int_equal(cfg->curves[2], 0);
	config_free(cfg);

	/* An empty allow or alpn means none; the default does not come back. */
	cfg = parse_ok("[funneld]\nallow =\n[tls]\nalpn =\n" TAIL);
	assert_int_equal(cfg->nallow, 0);
	assert_true(cfg->tls.alpn_set);
	assert_int_equal(cfg->tls.alpn.n, 0);
	config_free(cfg);
}

static void
test_list_errors(void **state)
{
	expect_error("[funneld]\nlisten =\n", "t.conf:2: empty value for listen");
	expect_error("[tls]\nciphers =\n", "t.conf:2: empty value for ciphers");
	expect_error("[tls]\ncurves =\n", "t.conf:2: empty value for curves");
	expect_error("[funneld]\nallow = 10.0.0.0/8,,10.1.0.0/16\n", "t.conf:2: empty item in allow");
	expect_error("[funneld]\nallow = ,\n", "t.conf:2: empty item in allow");
	expect_error("[funneld]\nlisten = 127.0.0.1:1\n\n  header_timeout = 5\n",
	    "t.conf:4: indented line continues listen; unindent it to start a new key");
	expect_error("[funneld]\nheader_timeout = 5\n  6\n",
	    "t.conf:3: header_timeout takes one value (an indented line continues the key above)");
	expect_error("[funneld]\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:2, 127.0.0.1:1\n",
	    "t.conf:3: listen address \"127.0.0.1:1\" given twice (first at line 2)");
	expect_error("[tls]\nalpn = h2\nalpn = h2\n", "t.conf:3: ALPN protocol \"h2\" listed twice");
	expect_error("[tls]\nalpn = h 2\n", "t.conf:2: bad ALPN protocol \"h 2\"");
}

static void
test_alpn_length(void **state)
{
	char text[1024], val[300];
	struct config *cfg;

	/* 255 bytes cannot fit inih's line; the longest that can is taken. */
	memset(val, 'a', 190);
	val[190] = '\0';
	snprintf(text, sizeof(text), "[tls]\nalpn = %s\n" TAIL, val);
	cfg = parse_ok(text);
	assert_int_equal(strlen(cfg->tls.alpn.v[0]), 190);
	config_free(cfg);
}

/*
 * Addresses
 */

static void
test_address_keys(void **state)
{
	expect_error("[funneld]\nallow = 10.0.0.0/33\n", "t.conf:2: bad CIDR \"10.0.0.0/33\" in allow");
	expect_error("[funneld]\nallow = 10.0.0.0/8, 10.0.0.1/8\n",
	    "t.conf:2: bad CIDR \"10.0.0.1/8\" in allow: host bits set");
	expect_error("[funneld]\nlisten = 127.0.0.1:1,\n  1.2.3:80\n", "t.conf:3: bad listen address \"1.2.3:80\"");
	expect_error("[funneld]\nmetrics = /run/m.sock\n",
	    "t.conf:2: bad metrics address \"/run/m.sock\" (unix:/path or host:port)");
}

/*
 * Routing
 */

static void
test_route(void **state)
{
	struct config *cfg = parse_ok(
	    "[tls]\ncert = /c\nkey = /k\n"
	    "[backend *:443]\nsocket = /wild443\n"
	    "[backend Node.Tailnet.ts.net:443]\nsocket = /node443\n"
	    "[backend node.tailnet.ts.net.:8443]\nsocket = /node8443\n"
	    "[backend other.ts.net:443]\nsocket = /other443\n"
	    "[backend [2001:db8::1]:443]\nsocket = /v6\n");
	const struct backend_conf *b;

	b = backend_route(cfg, "node.tailnet.ts.net", 443);
	assert_non_null(b);
	assert_string_equal(b->socket, "/node443");
	/* Case and a trailing dot do not matter. */
	assert_ptr_equal(backend_route(cfg, "NODE.tailnet.TS.net", 443), b);
	assert_ptr_equal(backend_route(cfg, "node.tailnet.ts.net.", 443), b);
	assert_string_equal(backend_route(cfg, "node.tailnet.ts.net", 8443)->socket, "/node8443");
	assert_string_equal(backend_route(cfg, "other.ts.net.", 443)->socket, "/other443");
	/* Exact beats the wildcard defined before it; others get the wildcard. */
	assert_string_equal(backend_route(cfg, "unknown.ts.net", 443)->socket, "/wild443");
	assert_string_equal(backend_route(cfg, "node.tailnet.ts.net..", 443)->socket, "/wild443");
	assert_string_equal(backend_route(cfg, "node.tailnet.ts", 443)->socket, "/wild443");
	assert_string_equal(backend_route(cfg, "node.tailnet.ts.net.x", 443)->socket, "/wild443");
	assert_string_equal(backend_route(cfg, "", 443)->socket, "/wild443");
	assert_string_equal(backend_route(cfg, NULL, 443)->socket, "/wild443");
	/* IPv6 literals match in any spelling. */
	assert_string_equal(backend_route(cfg, "2001:DB8:0:0::1", 443)->socket, "/v6");
	assert_string_equal(backend_route(cfg, "2001:db8::2", 443)->socket, "/wild443");
	/* No backend on the port, no wildcard there. */
	assert_null(backend_route(cfg, "other.ts.net", 8443));
	assert_null(backend_route(cfg, "unknown.ts.net", 8443));
	assert_null(backend_route(cfg, "node.tailnet.ts.net", 80));
	assert_null(backend_route(NULL, "node.tailnet.ts.net", 443));
	config_free(cfg);
}

/*
 * Paths, credentials
 */

static void
test_credentials(void **state)
{
	struct config *cfg;

	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "/run/credentials/funneld.service", 1), 0);
	cfg = parse_ok("[tls]\ncert = ${CREDENTIALS_DIRECTORY}/node.crt\nkey = ${CREDENTIALS_DIRECTORY}/node.key\n"
	    "[backend x:1]\nsocket = /a\ncert = /x/${CREDENTIALS_DIRECTORY}${CREDENTIALS_DIRECTORY}\nkey = /k\n");
	assert_string_equal(cfg->tls.cert, "/run/credentials/funneld.service/node.crt");
	assert_string_equal(cfg->tls.key, "/run/credentials/funneld.service/node.key");
	assert_string_equal(cfg->backends[0].tls.cert,
	    "/x//run/credentials/funneld.service/run/credentials/funneld.service");
	config_free(cfg);

	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "relative", 1), 0);
	expect_error("[tls]\ncert = ${CREDENTIALS_DIRECTORY}/c\n", "t.conf:2: cert \"relative/c\" is not an absolute path");

	assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
	expect_error("[tls]\n\nkey = ${CREDENTIALS_DIRECTORY}/node.key\n",
	    "t.conf:3: key uses ${CREDENTIALS_DIRECTORY} but CREDENTIALS_DIRECTORY is not set");
	expect_error("[tls]\ncert = /c\nkey = /k\n[backend x:1]\nsocket = ${CREDENTIALS_DIRECTORY}/s\n",
	    "t.conf:5: socket uses ${CREDENTIALS_DIRECTORY} but CREDENTIALS_DIRECTORY is not set");
	expect_error("[tls]\ncert = ${HOME}/c\n",
	    "t.conf:2: unknown variable in cert \"${HOME}/c\" (only ${CREDENTIALS_DIRECTORY} is expanded)");
	expect_error("[tls]\ncert = certs/c.pem\n", "t.conf:2: cert \"certs/c.pem\" is not an absolute path");
	/* A path without the variable needs nothing from the environment. */
	cfg = parse_ok("[tls]\ncert = /$c\nkey = /k$\n[backend x:1]\nsocket = /a\n");
	assert_string_equal(cfg->tls.cert, "/$c");
	config_free(cfg);
}

static void
test_socket_path(void **state)
{
	char text[512], path[200], want[512];
	struct config *cfg;

	memset(path, 's', sizeof(path));
	path[0] = '/';
	path[107] = '\0';
	snprintf(text, sizeof(text), "[backend x:1]\ncert = /c\nkey = /k\nsocket = %s\n", path);
	cfg = parse_ok(text);
	assert_int_equal(strlen(cfg->backends[0].socket), 107);
	config_free(cfg);
	path[107] = 's';
	path[108] = '\0';
	snprintf(text, sizeof(text), "[backend x:1]\ncert = /c\nkey = /k\nsocket = %s\n", path);
	snprintf(want, sizeof(want), "t.conf:4: socket path \"%.88s...\" too long (at most 107 bytes)", path);
	expect_error(text, want);
}

static void
test_metrics_user(void **state)
{
	struct config *cfg;

	cfg = parse_ok("[funneld]\nmetrics = 127.0.0.1:9100\nuser = _funneld-1.x\n" TAIL);
	assert_string_equal(cfg->metrics, "127.0.0.1:9100");
	assert_string_equal(cfg->user, "_funneld-1.x");
	config_free(cfg);
	cfg = parse_ok("[funneld]\nmetrics = [::1]:9100\n" TAIL);
	assert_string_equal(cfg->metrics, "[::1]:9100");
	config_free(cfg);
	expect_error("[funneld]\nmetrics = localhost\n",
	    "t.conf:2: bad metrics address \"localhost\" (unix:/path or host:port)");
	expect_error("[funneld]\nuser = -x\n", "t.conf:2: bad user name \"-x\"");
	expect_error("[funneld]\nuser = a b\n", "t.conf:2: bad user name \"a b\"");
	expect_error("[funneld]\nuser = abcdefghijabcdefghijabcdefghijabc\n",
	    "t.conf:2: bad user name \"abcdefghijabcdefghijabcdefghijabc\"");
	expect_error("[funneld]\nuser =\n", "t.conf:2: empty value for user");
}

/*
 * TLS names
 */

static void
test_ciphers(void **state)
{
	struct config *cfg = parse_ok("[tls]\nciphers = tls-ecdhe-rsa-with-chacha20-poly1305-sha256, "
	    "ECDHE-ECDSA-AES128-GCM-SHA256, ecdhe-rsa-aes256-gcm-sha384\n"
	    "ciphers = ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384\n"
	    "cert = /c\nkey = /k\n[backend x:1]\nsocket = /a\n");

	assert_int_equal(cfg->ciphers[0], cipher("TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256"));
	assert_int_equal(cfg->ciphers[1], cipher("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"));
	assert_int_equal(cfg->ciphers[2], cipher("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"));
	assert_int_equal(cfg->ciphers[3], cipher("TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"));
	assert_int_equal(cfg->ciphers[4], cipher("TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"));
	assert_int_equal(cfg->ciphers[5], cipher("TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"));
	assert_int_equal(cfg->nciphers, tls13_defaults_at(cfg, 6));
	config_free(cfg);

	cfg = parse_ok("[tls]\nciphers = TLS-ECDHE-ECDSA-WITH-CAMELLIA-128-GCM-SHA256\n" TAIL);
	assert_int_equal(cfg->ciphers[0], cipher("TLS-ECDHE-ECDSA-WITH-CAMELLIA-128-GCM-SHA256"));
	config_free(cfg);

#define NOT_ALLOWED "\" not allowed: only ECDHE key exchange with an AEAD cipher (GCM or ChaCha20-Poly1305)"
	expect_error("[tls]\nciphers = ECDHE-RSA-AES128-SHA256\n",
	    "t.conf:2: cipher suite \"ECDHE-RSA-AES128-SHA256" NOT_ALLOWED);
	expect_error("[tls]\nciphers = TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256\n",
	    "t.conf:2: cipher suite \"TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256" NOT_ALLOWED);
	expect_error("[tls]\nciphers = AES128-GCM-SHA256\n", "t.conf:2: cipher suite \"AES128-GCM-SHA256" NOT_ALLOWED);
	expect_error("[tls]\nciphers = TLS-DHE-RSA-WITH-AES-256-GCM-SHA384\n",
	    "t.conf:2: cipher suite \"TLS-DHE-RSA-WITH-AES-256-GCM-SHA384" NOT_ALLOWED);
	expect_error("[tls]\nciphers = ECDHE-ECDSA-AES128-CCM\n", "t.conf:2: cipher suite \"ECDHE-ECDSA-AES128-CCM" NOT_ALLOWED);
	expect_error("[tls]\nciphers = TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256\n",
	    "t.conf:2: cipher suite \"TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256" NOT_ALLOWED);
	expect_error("[tls]\nciphers = TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256,\n  FOO\n",
	    "t.conf:3: unknown cipher suite \"FOO\" (or not in this mbedTLS)");
	expect_error("[tls]\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256, TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256\n",
	    "t.conf:2: cipher suite \"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256\" listed twice");
}

/* TLS 1.3 suites in the same list, by either name; where the library has no
 * 1.3 they are an error, never quietly dropped. */
static void
test_tls13_ciphers(void **state)
{
	struct config *cfg;

	if (!have_tls13()) {
		expect_error("[tls]\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256,\n  TLS_AES_128_GCM_SHA256\n",
		    "t.conf:3: cipher suite \"TLS_AES_128_GCM_SHA256\" not allowed: a TLS 1.3 suite, and this mbedTLS ("
		    MBEDTLS_VERSION_STRING ") has no TLS 1.3 server");
		expect_error("[tls]\nciphers = TLS1-3-CHACHA20-POLY1305-SHA256\n",
		    "t.conf:2: cipher suite \"TLS1-3-CHACHA20-POLY1305-SHA256\" not allowed: a TLS 1.3 suite, and this "
		    "mbedTLS (" MBEDTLS_VERSION_STRING ") has no TLS 1.3 server");
		return;
	}
	cfg = parse_ok("[tls]\nciphers = TLS_CHACHA20_POLY1305_SHA256, ECDHE-ECDSA-AES128-GCM-SHA256, "
	    "tls1-3-aes-256-gcm-sha384\n" TAIL);
	/* Both versions named: nothing is added. */
	assert_int_equal(cfg->nciphers, 3);
	assert_int_equal(cfg->ciphers[0], cipher("TLS1-3-CHACHA20-POLY1305-SHA256"));
	assert_int_equal(cfg->ciphers[1], cipher("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"));
	assert_int_equal(cfg->ciphers[2], cipher("TLS1-3-AES-256-GCM-SHA384"));
	assert_int_equal(cfg->ciphers[3], 0);
	config_free(cfg);

	/* 1.3 alone named: 1.2 keeps its defaults, after it. */
	cfg = parse_ok("[tls]\nciphers = TLS_AES_128_GCM_SHA256\n" TAIL);
	assert_int_equal(cfg->nciphers, 7);
	assert_int_equal(cfg->ciphers[0], cipher("TLS1-3-AES-128-GCM-SHA256"));
	assert_int_equal(cfg->ciphers[1], cipher("TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"));
	assert_int_equal(cfg->ciphers[6], cipher("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"));
	config_free(cfg);

#define NOT_ALLOWED13 "\" not allowed: only ECDHE key exchange with an AEAD cipher (GCM or ChaCha20-Poly1305)"
	expect_error("[tls]\nciphers = TLS_AES_128_CCM_SHA256\n", "t.conf:2: cipher suite \"TLS_AES_128_CCM_SHA256" NOT_ALLOWED13);
	expect_error("[tls]\nciphers = TLS1-3-AES-128-CCM-8-SHA256\n",
	    "t.conf:2: cipher suite \"TLS1-3-AES-128-CCM-8-SHA256" NOT_ALLOWED13);
	expect_error("[tls]\nciphers = TLS_AES_128_GCM_SHA256, tls1-3-aes-128-gcm-sha256\n",
	    "t.conf:2: cipher suite \"tls1-3-aes-128-gcm-sha256\" listed twice");
}

static void
test_versions(void **state)
{
	struct config *cfg = parse_ok("[tls]\nversions = 1.2\n" TAIL);

	assert_int_equal(cfg->tls_versions, TLS_V12);
	config_free(cfg);
	expect_error("[tls]\nversions = 1.4\n", "t.conf:2: unknown TLS version \"1.4\" (1.2 or 1.3)");
	expect_error("[tls]\nversions = 1.2,\n  1.1\n", "t.conf:3: TLS version \"1.1\" not available: 1.2 and 1.3 only");
	expect_error("[tls]\nversions = TLSv1.0\n", "t.conf:2: TLS version \"TLSv1.0\" not available: 1.2 and 1.3 only");
	expect_error("[tls]\nversions = 1.2, TLSv1.2\n", "t.conf:2: TLS version \"TLSv1.2\" listed twice");
	expect_error("[tls]\nversions =\n", "t.conf:2: empty value for versions");
	if (!have_tls13()) {
		/* DESIGN.md §2: naming 1.3 on 2.28 is a configuration error. */
		expect_error("[tls]\nversions = 1.2\nversions = 1.3\n",
		    "t.conf:3: TLS version \"1.3\" not available: this mbedTLS (" MBEDTLS_VERSION_STRING
		    ") has no TLS 1.3 server (3.6.6 or later has)");
		return;
	}
	cfg = parse_ok("[tls]\nversions = 1.2, 1.3\n" TAIL);
	assert_int_equal(cfg->tls_versions, TLS_V12 | TLS_V13);
	config_free(cfg);
	cfg = parse_ok("[tls]\nversions = tlsv1.3\n" TAIL);
	assert_int_equal(cfg->tls_versions, TLS_V13);
	config_free(cfg);
}

static void
test_curves(void **state)
{
	struct config *cfg = parse_ok("[tls]\ncurves = secp256r1, SECP384R1, secp521r1, X25519\n" TAIL);

	assert_int_equal(cfg->ncurves, 4);
	assert_int_equal(cfg->curves[0], MBEDTLS_ECP_DP_SECP256R1);
	assert_int_equal(cfg->curves[1], MBEDTLS_ECP_DP_SECP384R1);
	assert_int_equal(cfg->curves[2], MBEDTLS_ECP_DP_SECP521R1);
	assert_int_equal(cfg->curves[3], MBEDTLS_ECP_DP_CURVE25519);
	assert_int_equal(cfg->curves[4], MBEDTLS_ECP_DP_NONE);
	config_free(cfg);

	cfg = parse_ok("[tls]\ncurves = P-384, prime256v1\n" TAIL);
	assert_int_equal(cfg->ncurves, 2);
	assert_int_equal(cfg->curves[0], MBEDTLS_ECP_DP_SECP384R1);
	assert_int_equal(cfg->curves[1], MBEDTLS_ECP_DP_SECP256R1);
	config_free(cfg);

	expect_error("[tls]\ncurves = x448\n", "t.conf:2: curve \"x448\" not allowed (x25519, secp256r1, secp384r1 or secp521r1)");
	expect_error("[tls]\ncurves = brainpoolP256r1\n",
	    "t.conf:2: curve \"brainpoolP256r1\" not allowed (x25519, secp256r1, secp384r1 or secp521r1)");
	expect_error("[tls]\ncurves = secp192r1\n",
	    "t.conf:2: curve \"secp192r1\" not allowed (x25519, secp256r1, secp384r1 or secp521r1)");
	expect_error("[tls]\ncurves = x25519, ed25519\n", "t.conf:2: unknown curve \"ed25519\"");
	expect_error("[tls]\ncurves = x25519, X25519\n", "t.conf:2: curve \"X25519\" listed twice");
}

/*
 * Files
 */

static void
test_load_file(void **state)
{
	char path[] = "/tmp/test_config.XXXXXX", err[CONFIG_ERR_MAX], want[CONFIG_ERR_MAX];
	struct config *cfg = NULL;
	FILE *f;
	int fd;

	assert_true((fd = mkstemp(path)) >= 0);
	assert_non_null(f = fdopen(fd, "w"));
	fputs("[funneld]\nmax_connections = 9\n" TAIL, f);
	fclose(f);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(cfg);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->max_connections, 9);
	config_free(cfg);

	/* A NUL byte is not the end of the file. */
	assert_non_null(f = fopen(path, "w"));
	fwrite("[funneld]\n\nuser = a\0b\n", 1, 22, f);
	fclose(f);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s:3: NUL byte", path);
	assert_string_equal(err, want);

	/* Errors name the file as given. */
	assert_non_null(f = fopen(path, "w"));
	fputs("[funneld]\nheader_timeout = 10x\n", f);
	fclose(f);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:2: bad duration \"10x\" for header_timeout", path);
	assert_string_equal(err, want);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s: cannot open: %s", path, strerror(ENOENT));
	assert_string_equal(err, want);

	assert_int_equal(config_load("/", &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "/: cannot read: %s", strerror(EISDIR));
	assert_string_equal(err, want);
}

static void
test_example_file(void **state)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg = NULL, *def;
	const char *path = "funneld.conf.example";

	if (access(path, R_OK) != 0)
		path = "../../funneld.conf.example";
	if (config_load(path, &cfg, err, sizeof(err)) != 0)
		print_error("%s\n", err);
	assert_non_null(cfg);
	assert_true(cfg->nlistens > 0);
	assert_true(cfg->nbackends > 0);
	assert_non_null(backend_route(cfg, "node.tailnet.ts.net", 443));

	/* The values it shows as defaults are the defaults. */
	def = parse_ok(TAIL);
	assert_int_equal(cfg->nallow, def->nallow);
	assert_memory_equal(cfg->allow, def->allow, def->nallow * sizeof(*def->allow));
	assert_int_equal(cfg->max_connections, def->max_connections);
	assert_int_equal(cfg->header_timeout, def->header_timeout);
	assert_int_equal(cfg->handshake_timeout, def->handshake_timeout);
	assert_int_equal(cfg->idle_timeout, def->idle_timeout);
	assert_int_equal(cfg->shutdown_timeout, def->shutdown_timeout);
	assert_int_equal(cfg->workers, def->workers);
	assert_int_equal(cfg->log_level, def->log_level);
	assert_int_equal(cfg->tls.alpn.n, def->tls.alpn.n);
	assert_string_equal(cfg->tls.alpn.v[0], def->tls.alpn.v[0]);
	assert_string_equal(cfg->tls.alpn.v[1], def->tls.alpn.v[1]);
	assert_int_equal(cfg->session_tickets, def->session_tickets);
	assert_int_equal(cfg->ticket_rotation, def->ticket_rotation);
	assert_int_equal(cfg->nciphers, def->nciphers);
	assert_memory_equal(cfg->ciphers, def->ciphers, (def->nciphers + 1) * sizeof(int));
	assert_int_equal(cfg->ncurves, def->ncurves);
	assert_memory_equal(cfg->curves, def->curves, (def->ncurves + 1) * sizeof(int));
	assert_int_equal(cfg->backends[0].proxy, def->backends[0].proxy);
	config_free(def);
	config_free(cfg);
}

static void
test_limit_keys(void **state)
{
	struct config *cfg = parse_ok("[funneld]\nmax_pending = 5\nmax_pending_per_peer = 2\n"
	    "max_buffer_memory = 64M\n" TAIL);

	assert_int_equal(cfg->max_pending, 5);
	assert_int_equal(cfg->max_pending_per_peer, 2);
	assert_int_equal(cfg->max_buffer_memory, 64 << 20);
	config_free(cfg);
	cfg = parse_ok("[funneld]\nmax_buffer_memory = 1048576\n" TAIL);
	assert_int_equal(cfg->max_buffer_memory, 1 << 20);
	config_free(cfg);
	cfg = parse_ok("[funneld]\nmax_buffer_memory = 2g\n" TAIL);
	assert_int_equal(cfg->max_buffer_memory, (size_t)2 << 30);
	config_free(cfg);
	expect_error("[funneld]\nmax_buffer_memory = 512K\n",
	    "t.conf:2: bad size \"512K\" for max_buffer_memory (bytes, or with K, M or G; at least 1M)");
	expect_error("[funneld]\nmax_buffer_memory = 1T\n",
	    "t.conf:2: bad size \"1T\" for max_buffer_memory (bytes, or with K, M or G; at least 1M)");
	expect_error("[funneld]\nmax_pending = 0\n",
	    "t.conf:2: bad number \"0\" for max_pending: must be between 1 and 1000000");
}

static void
test_clients_section(void **state)
{
	struct config *cfg = parse_ok("[clients]\ndeny = 198.51.100.0/24, 2001:db8::/32\n"
	    "max_connections = 32\nrate = 20/s\n" TAIL);

	assert_int_equal(cfg->ndeny, 2);
	assert_int_equal(cfg->deny[0].prefix, 24);
	assert_int_equal(cfg->deny[1].family, AF_INET6);
	assert_int_equal(cfg->client_limits.max_conns, 32);
	assert_int_equal(cfg->client_limits.rate.count, 20);
	assert_int_equal(cfg->client_limits.rate.per_ms, 1000);
	config_free(cfg);
	cfg = parse_ok("[clients]\nrate = 100/m\n" TAIL);
	assert_int_equal(cfg->client_limits.rate.per_ms, 60000);
	config_free(cfg);
	expect_error("[clients]\nrate = 20\n", "t.conf:2: bad rate \"20\" (N/s, N/m or N/h, N from 1 to 1000000)");
	expect_error("[clients]\nrate = 0/s\n", "t.conf:2: bad rate \"0/s\" (N/s, N/m or N/h, N from 1 to 1000000)");
	expect_error("[clients]\ndeny = 10.0.0.1/8\n", "t.conf:2: bad CIDR \"10.0.0.1/8\" in deny: host bits set");
	expect_error("[clients]\nmax_connections = 0\n",
	    "t.conf:2: bad number \"0\" for max_connections: must be between 1 and 1000000");
	expect_error("[clients]\nsocket = /x\n", "t.conf:2: unknown key \"socket\" in [clients]");
}

static void
test_listener_sections(void **state)
{
	struct config *cfg = parse_ok("[funneld]\nlisten = 127.0.0.1:4443\n"
	    "[listener 127.0.0.1:8443]\npublic_port = 8443\nproxy_protocol = v2\n"
	    "[listener unix:/run/f/tls.sock]\n"
	    "[listener [::1]:9443]\ntrusted = ::1, 10.0.0.0/8\n" TAIL);
	const struct listener_conf *l;

	assert_int_equal(cfg->ntls_listeners, 3);
	l = &cfg->tls_listeners[0];
	assert_string_equal(l->addr.text, "127.0.0.1:8443");
	assert_int_equal(l->public_port, 8443);
	assert_int_equal(l->proxy, PROXY_V2);
	assert_int_equal(l->ntrusted, 2);       /* the default: loopback */
	assert_int_equal(l->line, 3);
	l = &cfg->tls_listeners[1];
	assert_int_equal(l->addr.kind, LISTEN_UNIX);
	assert_int_equal(l->public_port, 443);
	assert_int_equal(l->proxy, PROXY_OFF);
	assert_int_equal(l->ntrusted, 0);       /* a unix: listener has none */
	l = &cfg->tls_listeners[2];
	assert_int_equal(l->ntrusted, 2);
	assert_int_equal(l->trusted[1].family, AF_INET);
	assert_ptr_equal(config_tls_listener(cfg, "[::1]:9443"), l);
	assert_null(config_tls_listener(cfg, "127.0.0.1:4443"));
	config_free(cfg);

	/* trusted = nothing: nobody. */
	cfg = parse_ok("[listener 127.0.0.1:8443]\ntrusted =\n" TAIL);
	assert_int_equal(cfg->tls_listeners[0].ntrusted, 0);
	config_free(cfg);

	expect_error("[listener]\n", "t.conf:1: missing address in [listener] (want [listener HOST:PORT])");
	expect_error("[listener example.com:1]\n",
	    "t.conf:1: bad listener address \"example.com:1\" (want [listener HOST:PORT] or [listener unix:/path])");
	expect_error("[listener 127.0.0.1:1]\n[listener 127.0.0.1:1]\n",
	    "t.conf:2: listener 127.0.0.1:1 defined twice (first at line 1)");
	expect_error("[listener 127.0.0.1:1]\npublic_port = 0\n", "t.conf:2: bad public_port \"0\" (1 to 65535)");
	expect_error("[listener 127.0.0.1:1]\nproxy_protocol = v3\n", "t.conf:2: bad proxy_protocol \"v3\" (off, v1 or v2)");
	expect_error("[listener unix:/x]\ntrusted = ::1\n",
	    "t.conf:2: trusted does not apply to a unix: listener (its file's permissions do)");
	expect_error("[listener 127.0.0.1:1]\npublic_port = 1\npublic_port = 2\n",
	    "t.conf:3: public_port given twice (first at line 2)");
	expect_error("[funneld]\nlisten = 127.0.0.1:1\n[listener 127.0.0.1:1]\n" TAIL,
	    "t.conf:3: listener 127.0.0.1:1 is also a listen address (line 2)");
	/* Keys are counted per section. */
	cfg = parse_ok("[listener 127.0.0.1:1]\npublic_port = 1\n[listener 127.0.0.1:2]\npublic_port = 2\n" TAIL);
	assert_int_equal(cfg->tls_listeners[1].public_port, 2);
	config_free(cfg);
}

static void
test_err_buffer(void **state)
{
	struct config *cfg = NULL;
	char err[12];

	/* A small or absent buffer is not overrun; the parse still fails. */
	assert_int_equal(config_parse_string("t.conf", "[x]\n", &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "t.conf:1: u");
	assert_int_equal(config_parse_string("t.conf", "[x]\n", &cfg, NULL, 0), -1);
	assert_null(cfg);
	assert_int_equal(config_parse_string(NULL, "[x]\n", &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "(config):1:");
	config_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_enums_and_booleans),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_duration_keys),
		cmocka_unit_test(test_parse_uint),
		cmocka_unit_test(test_number_keys),
		cmocka_unit_test(test_error_messages),
		cmocka_unit_test(test_backend_errors),
		cmocka_unit_test(test_backend_targets),
		cmocka_unit_test(test_cert_key_pairs),
		cmocka_unit_test(test_line_too_long),
		cmocka_unit_test(test_inih_quirks),
		cmocka_unit_test(test_list_appending),
		cmocka_unit_test(test_list_errors),
		cmocka_unit_test(test_alpn_length),
		cmocka_unit_test(test_address_keys),
		cmocka_unit_test(test_route),
		cmocka_unit_test(test_credentials),
		cmocka_unit_test(test_socket_path),
		cmocka_unit_test(test_metrics_user),
		cmocka_unit_test(test_ciphers),
		cmocka_unit_test(test_tls13_ciphers),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_curves),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_limit_keys),
		cmocka_unit_test(test_clients_section),
		cmocka_unit_test(test_listener_sections),
		cmocka_unit_test(test_err_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
