/*
 * bench/ceiling: what Debian's mbedTLS (2.28 on Debian 12, 3.6 on Debian 13)
 * can do on one core, in memory, with funneld's TLS settings (ECDSA P-256
 * certificate, session tickets with AES-256-GCM keys, TLS 1.3 resumption
 * with psk_dhe_ke only, as funneld configures it).  Built against either
 * line with funneld/tls_compat.h, as the daemon is.
 *
 *   ceiling CERT.pem KEY.pem SECONDS [WHAT] [-v 1.2|1.3] [-g GROUP] [-c SUITE]
 *
 * WHAT (default "all"):
 *   all      every TLS 1.2 figure below, as one block (hs, res, prim, gcm, rec)
 *   hs       full handshakes only: hs_server_us, hs_ceiling
 *   res      resumed handshakes only: res_server_us, res_ceiling
 *   bulk     the suite's AEAD on 16 KiB records (enc_mibs, dec_mibs) and the
 *            server's record layer (rec_write_mibs, rec_read_mibs)
 *   gcm      "bulk" with TLS 1.2 AES-128-GCM, under the old key names too
 *   version  mbedtls_version, tls13 (1 when this mbedTLS has a TLS 1.3 server)
 * -v VERSION  TLS version of the handshake / records (default 1.2)
 * -g GROUP    the key exchange group the client offers: secp256r1 (default) or
 *             x25519 (TLS 1.3: the client's key share)
 * -c SUITE    mbedTLS suite name (default TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256
 *             for 1.2, TLS1-3-AES-128-GCM-SHA256 for 1.3)
 * -t THREADS  hs/res only: THREADS threads in this one process, each running
 *             client+server handshake pairs for SECONDS of wall-clock time;
 *             prints hs_wall_rate (pairs per second, all threads): run with 1
 *             and with 2, and 2 processes of 1 at once, to see whether
 *             something process-wide (TLS 1.3 key shares come from PSA's one
 *             DRBG behind one mutex) serialises threads
 *
 * Prints "key=value" lines:
 *   hs_*      a whole handshake between an mbedTLS client and an mbedTLS
 *             server over in-memory pipes, repeated; every server call
 *             (mbedtls_ssl_setup, each mbedtls_ssl_handshake, mbedtls_ssl_free)
 *             is timed on its own with the thread CPU clock, so hs_server_us is
 *             the server side alone, the client side is subtracted by
 *             construction.  hs_ceiling = 1e6 / hs_server_us handshakes/s.
 *             A TLS 1.3 server's handshake includes its NewSessionTicket.
 *   res_*     the same with the client offering the ticket of the first
 *             handshake (resumption ceiling; TLS 1.3: psk_dhe_ke, so an ECDHE
 *             on the client's key share, as funneld allows no other mode).
 *   prim_*    (TLS 1.2, "all") the three big operations as the TLS stack does
 *             them: ECDHE keygen (mbedtls_ecdh_setup loads the group each time,
 *             then mbedtls_ecdh_make_params), the shared secret (read_public +
 *             calc_secret), the ECDSA P-256 signature (mbedtls_pk_sign over a
 *             SHA-256 hash); prim_ceiling = 1e6 / their sum.
 *   enc/dec   the suite's AEAD on 16 KiB records, in place as the record layer
 *             does it (12-byte nonce, 13-byte AAD, 16-byte tag), MiB/s.
 *   rec_*     the server's mbedtls_ssl_write / mbedtls_ssl_read of 16 KiB
 *             records over the in-memory pipe (record layer + AEAD + copies).
 * Every figure is the median of 5 repetitions (their min and max are printed
 * too), so a neighbour's burst on the core moves one repetition, not the result.
 * Times are thread CPU time, so a noisy neighbour on the core does not count.
 *
 * mbedTLS's AEAD speed here depends on the process's address layout (where
 * the stack lands relative to the cipher context and the data: 4 KiB
 * aliasing): bench/run runs "bulk" in several fresh processes and takes the
 * best as the ceiling.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/chachapoly.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/gcm.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "tls_compat.h"         /* funneld's own 2.28 / 3.6 glue */

#define PIPE_CAP (256 * 1024)
#define REC 16384
#define REPS 5

struct pipe {
	unsigned char buf[PIPE_CAP];
	size_t off, len;
};

/* Per thread (-t): each has its pipes, random generator and session. */
static __thread struct pipe c2s, s2c;
static __thread mbedtls_entropy_context entropy;
static __thread mbedtls_ctr_drbg_context drbg;
static int tls13;                       /* -v 1.3 */
static const char *group_name = "secp256r1";
static const char *suite_name;

static double
cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
check(int ret, const char *what)
{
	if (ret != 0) {
		char buf[200];
		mbedtls_strerror(ret, buf, sizeof(buf));
		fprintf(stderr, "ceiling: %s: %s (-0x%04x)\n", what, buf, (unsigned)-ret);
		exit(1);
	}
}

static int
drbg_random(void *unused, unsigned char *out, size_t len)
{
	(void)unused;
	return mbedtls_ctr_drbg_random(&drbg, out, len);
}

static int
pipe_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct pipe *p = ctx;
	if (p->off > 0 && p->off == p->len)
		p->off = p->len = 0;
	if (p->len + len > PIPE_CAP) {
		memmove(p->buf, p->buf + p->off, p->len - p->off);
		p->len -= p->off;
		p->off = 0;
	}
	size_t room = PIPE_CAP - p->len;
	if (room == 0)
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	if (len > room)
		len = room;
	memcpy(p->buf + p->len, buf, len);
	p->len += len;
	return (int)len;
}

static int
pipe_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct pipe *p = ctx;
	size_t have = p->len - p->off;
	if (have == 0)
		return MBEDTLS_ERR_SSL_WANT_READ;
	if (len > have)
		len = have;
	memcpy(buf, p->buf + p->off, len);
	p->off += len;
	return (int)len;
}

static int suite_list[2];
static compat_group server_groups[3], client_groups[2];

static void
conf_common(mbedtls_ssl_config *c, int endpoint)
{
	mbedtls_ssl_config_init(c);
	check(mbedtls_ssl_config_defaults(c, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT),
	    "config_defaults");
	mbedtls_ssl_conf_rng(c, drbg_random, NULL);
	compat_conf_versions(c, !tls13, tls13);
	compat_conf_tls13(c);
	mbedtls_ssl_conf_ciphersuites(c, suite_list);
	compat_conf_groups(c, endpoint == MBEDTLS_SSL_IS_SERVER ? server_groups : client_groups);
	mbedtls_ssl_conf_renegotiation(c, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
}

static int srv_send(void *x, const unsigned char *b, size_t l) { (void)x; return pipe_send(&s2c, b, l); }
static int srv_recv(void *x, unsigned char *b, size_t l) { (void)x; return pipe_recv(&c2s, b, l); }
static int cli_send(void *x, const unsigned char *b, size_t l) { (void)x; return pipe_send(&c2s, b, l); }
static int cli_recv(void *x, unsigned char *b, size_t l) { (void)x; return pipe_recv(&s2c, b, l); }

static __thread mbedtls_ssl_session first_session;
static __thread int have_first_session;

struct hs_result {
	double server, client;
	long n;
};

/* Both ends' handshakes, turn about, until both are done. */
static void
handshake_pair(mbedtls_ssl_context *srv, mbedtls_ssl_context *cli, double *server_t, double *client_t)
{
	int rs = 1, rc = 1, guard = 0;
	double t;

	while ((rs != 0 || rc != 0) && guard++ < 1000) {
		if (rc != 0) {
			t = cpu_now();
			rc = mbedtls_ssl_handshake(cli);
			if (client_t)
				*client_t += cpu_now() - t;
			if (rc != 0 && rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE)
				check(rc, "client handshake");
		}
		if (rs != 0) {
			t = cpu_now();
			rs = mbedtls_ssl_handshake(srv);
			if (server_t)
				*server_t += cpu_now() - t;
			if (rs != 0 && rs != MBEDTLS_ERR_SSL_WANT_READ && rs != MBEDTLS_ERR_SSL_WANT_WRITE)
				check(rs, "server handshake");
		}
	}
	if (rs != 0 || rc != 0) {
		fprintf(stderr, "ceiling: handshake did not finish\n");
		exit(1);
	}
}

/* The client's session, once it has a ticket (TLS 1.3: read the NewSessionTicket). */
static void
save_session(mbedtls_ssl_context *cli)
{
	if (tls13) {
#ifdef TLS_COMPAT_TLS13
		unsigned char b[64];
		int r, guard = 0;
		while ((r = mbedtls_ssl_read(cli, b, sizeof(b))) != MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
			if (r != MBEDTLS_ERR_SSL_WANT_READ || ++guard > 10)
				check(r < 0 ? r : -1, "waiting for the NewSessionTicket");
		}
#endif
	}
	mbedtls_ssl_session_init(&first_session);
	check(mbedtls_ssl_get_session(cli, &first_session), "get_session");
	have_first_session = 1;
}

/* Handshakes until `seconds` of server+client CPU time are spent (at least 3). */
static struct hs_result
handshakes(mbedtls_ssl_config *sconf, mbedtls_ssl_config *cconf, double seconds, int resume)
{
	struct hs_result r = { 0, 0, 0 };
	double t;

	while (r.server + r.client < seconds || r.n < 3) {
		mbedtls_ssl_context srv, cli;

		c2s.off = c2s.len = s2c.off = s2c.len = 0;
		t = cpu_now();
		mbedtls_ssl_init(&srv);
		check(mbedtls_ssl_setup(&srv, sconf), "server ssl_setup");
		mbedtls_ssl_set_bio(&srv, NULL, srv_send, srv_recv, NULL);
		r.server += cpu_now() - t;

		t = cpu_now();
		mbedtls_ssl_init(&cli);
		check(mbedtls_ssl_setup(&cli, cconf), "client ssl_setup");
		check(mbedtls_ssl_set_hostname(&cli, "funnel.bench.test"), "set_hostname");
		mbedtls_ssl_set_bio(&cli, NULL, cli_send, cli_recv, NULL);
		if (resume)
			check(mbedtls_ssl_set_session(&cli, &first_session), "set_session");
		r.client += cpu_now() - t;

		handshake_pair(&srv, &cli, &r.server, &r.client);
		r.n++;
		if (!have_first_session)
			save_session(&cli);
		t = cpu_now();
		mbedtls_ssl_free(&srv);
		r.server += cpu_now() - t;
		t = cpu_now();
		mbedtls_ssl_free(&cli);
		r.client += cpu_now() - t;
	}
	return r;
}

static void
seed_thread_drbg(void)
{
	static const char pers[] = "funneld-bench-ceiling";

	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	check(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers,
	    sizeof(pers) - 1), "drbg_seed");
}

struct wall_job {
	mbedtls_ssl_config *sconf, *cconf;
	double seconds;
	int resume;
	long n;
	double cpu;
};

static double
wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* -t: handshake pairs for a wall-clock time. */
static void *
wall_thread(void *arg)
{
	struct wall_job *j = arg;
	double end;

	seed_thread_drbg();
	handshakes(j->sconf, j->cconf, 0.02, 0);        /* warm-up, and the ticket */
	end = wall_now() + j->seconds;
	double c0 = cpu_now();
	while (wall_now() < end) {
		struct hs_result r = handshakes(j->sconf, j->cconf, 0, j->resume);
		j->n += r.n;
	}
	j->cpu = cpu_now() - c0;
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void
time_loop_keygen(double seconds, double *per)
{
	unsigned char buf[200];
	size_t olen;
	long n = 0;
	double spent = 0;

	while (spent < seconds || n < 5) {
		mbedtls_ecdh_context e;
		double t = cpu_now();
		mbedtls_ecdh_init(&e);
		check(mbedtls_ecdh_setup(&e, MBEDTLS_ECP_DP_SECP256R1), "ecdh_setup");
		check(mbedtls_ecdh_make_params(&e, &olen, buf, sizeof(buf), drbg_random, NULL), "ecdh_make_params");
		mbedtls_ecdh_free(&e);
		spent += cpu_now() - t;
		n++;
	}
	*per = spent / n;
}

static void
time_loop_secret(double seconds, double *per)
{
	/* A client public value to agree with, made once. */
	mbedtls_ecdh_context peer;
	unsigned char pub[100], params[200], secret[66];
	size_t publen, plen, slen;
	long n = 0;
	double spent = 0;

	mbedtls_ecdh_init(&peer);
	check(mbedtls_ecdh_setup(&peer, MBEDTLS_ECP_DP_SECP256R1), "ecdh_setup");
	check(mbedtls_ecdh_make_public(&peer, &publen, pub, sizeof(pub), drbg_random, NULL), "make_public");
	while (spent < seconds || n < 5) {
		mbedtls_ecdh_context e;
		mbedtls_ecdh_init(&e);
		check(mbedtls_ecdh_setup(&e, MBEDTLS_ECP_DP_SECP256R1), "ecdh_setup");
		check(mbedtls_ecdh_make_params(&e, &plen, params, sizeof(params), drbg_random, NULL), "make_params");
		double t = cpu_now();
		check(mbedtls_ecdh_read_public(&e, pub, publen), "read_public");
		check(mbedtls_ecdh_calc_secret(&e, &slen, secret, sizeof(secret), drbg_random, NULL), "calc_secret");
		spent += cpu_now() - t;
		mbedtls_ecdh_free(&e);
		n++;
	}
	mbedtls_ecdh_free(&peer);
	*per = spent / n;
}

static void
time_loop_sign(mbedtls_pk_context *key, double seconds, double *per)
{
	unsigned char hash[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
	size_t slen;
	long n = 0;
	double spent = 0;

	memset(hash, 0, sizeof(hash));
	while (spent < seconds || n < 5) {
		hash[0] = (unsigned char)n;
		double t = cpu_now();
		check(compat_pk_sign(key, hash, sizeof(hash), sig, sizeof(sig), &slen, drbg_random), "pk_sign");
		spent += cpu_now() - t;
		n++;
	}
	*per = spent / n;
}

/*
 * The suite's AEAD in place, as the record layer does it: encrypt a record,
 * then decrypt it back.  AES-GCM or ChaCha20-Poly1305.
 */
static void
aead(int chacha, double seconds, double *enc_mibs, double *dec_mibs)
{
	static unsigned char rec[REC];
	unsigned char key[32] = { 1, 2, 3 }, iv[12] = { 0 }, aad[13] = { 23, 3, 3 }, tag[16];
	mbedtls_gcm_context g;
	mbedtls_chachapoly_context cp;
	long n = 0;
	double enc = 0, dec = 0;

	mbedtls_gcm_init(&g);
	mbedtls_chachapoly_init(&cp);
	if (chacha)
		check(mbedtls_chachapoly_setkey(&cp, key), "chachapoly_setkey");
	else
		check(mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, key, 128), "gcm_setkey");
	while (enc + dec < seconds || n < 10) {
		iv[11] = (unsigned char)n;
		double t0 = cpu_now();
		if (chacha)
			check(mbedtls_chachapoly_encrypt_and_tag(&cp, REC, iv, aad, 13, rec, rec, tag), "chachapoly encrypt");
		else
			check(mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, REC, iv, 12, aad, 13, rec, rec, 16, tag),
			    "gcm encrypt");
		double t1 = cpu_now();
		if (chacha)
			check(mbedtls_chachapoly_auth_decrypt(&cp, REC, iv, aad, 13, tag, rec, rec), "chachapoly decrypt");
		else
			check(mbedtls_gcm_auth_decrypt(&g, REC, iv, 12, aad, 13, tag, 16, rec, rec), "gcm decrypt");
		double t2 = cpu_now();
		enc += t1 - t0;
		dec += t2 - t1;
		n++;
	}
	*enc_mibs = n * (double)REC / (1024.0 * 1024.0) / enc;
	*dec_mibs = n * (double)REC / (1024.0 * 1024.0) / dec;
	mbedtls_gcm_free(&g);
	mbedtls_chachapoly_free(&cp);
}

/* Server-side record throughput over a finished in-memory connection. */
static void
records(mbedtls_ssl_config *sconf, mbedtls_ssl_config *cconf, double seconds, double *w_mibs, double *r_mibs)
{
	static unsigned char data[REC], sink[REC];
	mbedtls_ssl_context srv, cli;

	c2s.off = c2s.len = s2c.off = s2c.len = 0;
	mbedtls_ssl_init(&srv);
	mbedtls_ssl_init(&cli);
	check(mbedtls_ssl_setup(&srv, sconf), "ssl_setup");
	check(mbedtls_ssl_setup(&cli, cconf), "ssl_setup");
	check(mbedtls_ssl_set_hostname(&cli, "funnel.bench.test"), "set_hostname");
	mbedtls_ssl_set_bio(&srv, NULL, srv_send, srv_recv, NULL);
	mbedtls_ssl_set_bio(&cli, NULL, cli_send, cli_recv, NULL);
	handshake_pair(&srv, &cli, NULL, NULL);
	long n = 0;
	double spent = 0;
	int guard = 0;
	while (spent < seconds || n < 10) {
		/* A TLS 1.3 record carries one byte less of data: what is left goes in the next one. */
		for (size_t put = 0; put < REC;) {
			double t = cpu_now();
			int w = mbedtls_ssl_write(&srv, data + put, REC - put);
			spent += cpu_now() - t;
			if (w <= 0)
				check(w < 0 ? w : -1, "ssl_write");
			put += (size_t)w;
		}
		for (size_t got = 0; got < REC;) {
			int r = mbedtls_ssl_read(&cli, sink, REC);
			/* TLS 1.3: a NewSessionTicket comes first; 3.6 answers it with
			 * WANT_READ, then RECEIVED_NEW_SESSION_TICKET, with data behind it. */
			if (r == MBEDTLS_ERR_SSL_WANT_READ && s2c.len > s2c.off && guard++ < 10)
				continue;
#ifdef TLS_COMPAT_TLS13
			if (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
				continue;
#endif
			if (r <= 0)
				check(r ? r : -1, "client ssl_read");
			got += (size_t)r;
		}
		n++;
	}
	*w_mibs = n * (double)REC / (1024.0 * 1024.0) / spent;
	n = 0;
	spent = 0;
	while (spent < seconds || n < 10) {
		for (size_t put = 0; put < REC;) {
			int w = mbedtls_ssl_write(&cli, data + put, REC - put);
			if (w <= 0)
				check(w < 0 ? w : -1, "client ssl_write");
			put += (size_t)w;
		}
		for (size_t got = 0; got < REC;) {
			double t = cpu_now();
			int r = mbedtls_ssl_read(&srv, sink, REC);
			spent += cpu_now() - t;
			if (r <= 0)
				check(r ? r : -1, "server ssl_read");
			got += (size_t)r;
		}
		n++;
	}
	*r_mibs = n * (double)REC / (1024.0 * 1024.0) / spent;
	mbedtls_ssl_free(&srv);
	mbedtls_ssl_free(&cli);
}

/* Median (and min, max) of REPS values, printed as NAME=, NAME_min=, NAME_max=. */
static double
report(const char *name, double *v, int minmax)
{
	qsort(v, REPS, sizeof(double), cmp_double);
	printf("%s=%.1f\n", name, v[REPS / 2]);
	if (minmax)
		printf("%s_min=%.1f\n%s_max=%.1f\n", name, v[0], name, v[REPS - 1]);
	return v[REPS / 2];
}

static void
usage(void)
{
	fprintf(stderr, "usage: ceiling CERT.pem KEY.pem SECONDS [all|hs|res|bulk|gcm|version] "
	    "[-v 1.2|1.3] [-g secp256r1|x25519] [-c SUITE]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	mbedtls_x509_crt crt;
	mbedtls_pk_context key;
	mbedtls_ssl_config sconf, cconf;
	mbedtls_ssl_ticket_context tickets;
	const char *what = "all";
	double secs;
	int opt, nthreads = 0;

	if (argc < 4)
		usage();
	secs = atof(argv[3]);
	if (argc > 4 && argv[4][0] != '-')
		what = argv[4];
	optind = argc > 4 && argv[4][0] != '-' ? 5 : 4;
	while ((opt = getopt(argc, argv, "v:g:c:t:")) != -1) {
		switch (opt) {
		case 'v':
			if (strcmp(optarg, "1.3") == 0)
				tls13 = 1;
			else if (strcmp(optarg, "1.2") != 0)
				usage();
			break;
		case 'g': group_name = optarg; break;
		case 'c': suite_name = optarg; break;
		case 't': nthreads = atoi(optarg); break;
		default: usage();
		}
	}
	if (strcmp(what, "version") == 0) {
		char v[32];
		mbedtls_version_get_string(v);
		printf("mbedtls_version=%s\ntls13=%d\n", v, compat_tls13() ? 1 : 0);
		return 0;
	}
	if (strcmp(what, "gcm") == 0)
		tls13 = 0, suite_name = NULL;
	if (tls13 && !compat_tls13()) {
		fprintf(stderr, "ceiling: this mbedTLS (%s) has no TLS 1.3 server\n", MBEDTLS_VERSION_STRING);
		return 1;
	}
	if (suite_name == NULL)
		suite_name = tls13 ? "TLS1-3-AES-128-GCM-SHA256" : "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256";
	suite_list[0] = mbedtls_ssl_get_ciphersuite_id(suite_name);
	suite_list[1] = 0;
	if (suite_list[0] == 0) {
		fprintf(stderr, "ceiling: suite %s missing\n", suite_name);
		return 1;
	}
	int chacha = strstr(suite_name, "CHACHA20") != NULL;
	mbedtls_ecp_group_id gid = strcmp(group_name, "x25519") == 0 ? MBEDTLS_ECP_DP_CURVE25519 :
	    strcmp(group_name, "secp256r1") == 0 ? MBEDTLS_ECP_DP_SECP256R1 : MBEDTLS_ECP_DP_NONE;
	if (gid == MBEDTLS_ECP_DP_NONE)
		usage();
	/* The server offers what funneld offers by default; the client picks. */
	server_groups[0] = compat_group_of(MBEDTLS_ECP_DP_CURVE25519);
	server_groups[1] = compat_group_of(MBEDTLS_ECP_DP_SECP256R1);
	server_groups[2] = COMPAT_GROUP_END;
	client_groups[0] = compat_group_of(gid);
	client_groups[1] = COMPAT_GROUP_END;

	check(compat_global_init(), "psa_crypto_init");
	seed_thread_drbg();
	mbedtls_x509_crt_init(&crt);
	mbedtls_pk_init(&key);
	check(mbedtls_x509_crt_parse_file(&crt, argv[1]), "cert");
	check(compat_pk_parse_keyfile(&key, argv[2], drbg_random), "key");

	conf_common(&sconf, MBEDTLS_SSL_IS_SERVER);
	check(mbedtls_ssl_conf_own_cert(&sconf, &crt, &key), "own_cert");
	mbedtls_ssl_ticket_init(&tickets);
	check(mbedtls_ssl_ticket_setup(&tickets, drbg_random, NULL, MBEDTLS_CIPHER_AES_256_GCM, 43200),
	    "ticket_setup");
	mbedtls_ssl_conf_session_tickets_cb(&sconf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse, &tickets);

	conf_common(&cconf, MBEDTLS_SSL_IS_CLIENT);
	mbedtls_ssl_conf_authmode(&cconf, MBEDTLS_SSL_VERIFY_NONE);
	mbedtls_ssl_conf_session_tickets(&cconf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
#ifdef TLS_COMPAT_TLS13
	mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(&cconf,
	    MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
#endif

	if (nthreads > 0) {
		struct wall_job jobs[16];
		pthread_t th[16];
		long n = 0;
		if (nthreads > 16 || (strcmp(what, "hs") != 0 && strcmp(what, "res") != 0))
			usage();
		for (int i = 0; i < nthreads; i++) {
			jobs[i] = (struct wall_job){ &sconf, &cconf, secs, what[0] == 'r', 0, 0 };
			if (pthread_create(&th[i], NULL, wall_thread, &jobs[i]) != 0)
				check(-1, "pthread_create");
		}
		for (int i = 0; i < nthreads; i++) {
			pthread_join(th[i], NULL);
			n += jobs[i].n;
			printf("thread%d_n=%ld\nthread%d_cpu=%.3f\n", i, jobs[i].n, i, jobs[i].cpu);
		}
		printf("threads=%d\nhs_wall_rate=%.1f\n", nthreads, n / secs);
		return 0;
	}

	/* Warm up (first signature, page faults, ...); also fetches the ticket. */
	if (strcmp(what, "bulk") != 0 && strcmp(what, "gcm") != 0)
		handshakes(&sconf, &cconf, 0.05, 0);

	double a[REPS], b[REPS], c[REPS], d[REPS];
	if (strcmp(what, "hs") == 0 || strcmp(what, "res") == 0) {
		int res = what[0] == 'r';
		for (int i = 0; i < REPS; i++) {
			struct hs_result r = handshakes(&sconf, &cconf, secs / REPS, res);
			a[i] = r.server / r.n * 1e6;
			b[i] = r.client / r.n * 1e6;
		}
		double us = report(res ? "res_server_us" : "hs_server_us", a, 1);
		report(res ? "res_client_us" : "hs_client_us", b, 0);
		printf("%s=%.1f\n", res ? "res_ceiling" : "hs_ceiling", 1e6 / us);
		return 0;
	}
	if (strcmp(what, "bulk") == 0 || strcmp(what, "gcm") == 0) {
		for (int i = 0; i < REPS; i++) {
			aead(chacha, secs / 2 / REPS, &a[i], &b[i]);
			records(&sconf, &cconf, secs / 2 / REPS, &c[i], &d[i]);
		}
		const int old = strcmp(what, "gcm") == 0;
		report(old ? "gcm_enc_mibs" : "enc_mibs", a, 0);
		report(old ? "gcm_dec_mibs" : "dec_mibs", b, 0);
		report("rec_write_mibs", c, 0);
		report("rec_read_mibs", d, 0);
		return 0;
	}
	if (strcmp(what, "all") != 0 || tls13 || chacha)
		usage();
	double v[REPS][12];
	for (int i = 0; i < REPS; i++) {
		struct hs_result full = handshakes(&sconf, &cconf, secs / REPS, 0);
		struct hs_result res = handshakes(&sconf, &cconf, secs / 4 / REPS, 1);
		v[i][0] = full.server / full.n * 1e6;
		v[i][1] = full.client / full.n * 1e6;
		v[i][2] = res.server / res.n * 1e6;
		v[i][3] = res.client / res.n * 1e6;
		time_loop_keygen(secs / 4 / REPS, &v[i][4]);
		time_loop_secret(secs / 4 / REPS, &v[i][5]);
		time_loop_sign(&key, secs / 4 / REPS, &v[i][6]);
		v[i][4] *= 1e6, v[i][5] *= 1e6, v[i][6] *= 1e6;
		aead(0, secs / 4 / REPS, &v[i][7], &v[i][8]);
		records(&sconf, &cconf, secs / 4 / REPS, &v[i][9], &v[i][10]);
		v[i][11] = full.n;
	}
	static const char *names[] = { "hs_server_us", "hs_client_us", "res_server_us", "res_client_us",
		"prim_keygen_us", "prim_secret_us", "prim_sign_us", "gcm_enc_mibs", "gcm_dec_mibs",
		"rec_write_mibs", "rec_read_mibs", "hs_n" };
	double m[12];
	for (int k = 0; k < 12; k++) {
		double col[REPS];
		for (int i = 0; i < REPS; i++)
			col[i] = v[i][k];
		m[k] = report(names[k], col, k < 11);
	}
	printf("reps=%d\nhs_ceiling=%.1f\nres_ceiling=%.1f\nprim_ceiling=%.1f\n", REPS, 1e6 / m[0], 1e6 / m[2],
	    1e6 / (m[4] + m[5] + m[6]));
	return 0;
}
