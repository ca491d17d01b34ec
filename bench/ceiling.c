/*
 * bench/ceiling: what Debian's mbedTLS can do on one core, in memory, with
 * funneld's TLS settings (TLS 1.2, TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256,
 * ECDHE on secp256r1, session tickets with AES-256-GCM keys).
 *
 *   ceiling CERT.pem KEY.pem [SECONDS [gcm|hs]]
 *
 * With "hs" only the full-handshake lines (bench/run measures that again
 * right before each funneld run of row 1).  With "gcm" only the gcm_* and rec_* lines: bench/run runs that several
 * times, because mbedTLS 2.28's GCM speed here depends on the process's
 * address layout (ASLR): one process may encrypt at ~180 MiB/s and decrypt at
 * ~145, the next the other way round, stable within a process.  The best of
 * several processes is the ceiling.
 *
 * Prints "key=value" lines:
 *   hs_*      a whole TLS 1.2 handshake between an mbedTLS client and an
 *             mbedTLS server over in-memory pipes, repeated; every server call
 *             (mbedtls_ssl_setup, each mbedtls_ssl_handshake, mbedtls_ssl_free)
 *             is timed on its own with the thread CPU clock, so hs_server_us is
 *             the server side alone, the client side is subtracted by
 *             construction.  hs_ceiling = 1e6 / hs_server_us handshakes/s.
 *   res_*     the same with the client offering the ticket of the first
 *             handshake (resumption ceiling).
 *   prim_*    the three big operations as the TLS stack does them: ECDHE keygen
 *             (mbedtls_ecdh_setup loads the group each time, then
 *             mbedtls_ecdh_make_params), the shared secret (read_public +
 *             calc_secret), the ECDSA P-256 signature (mbedtls_pk_sign over a
 *             SHA-256 hash); prim_ceiling = 1e6 / their sum.
 * Every figure is the median of 5 repetitions (their min and max are printed
 * too), so a neighbour's burst on the core moves one repetition, not the result.
 *   gcm_*     AES-128-GCM on 16 KiB records, in place as the record layer does
 *             (mbedtls_gcm_crypt_and_tag / mbedtls_gcm_auth_decrypt, 12-byte IV,
 *             13-byte AAD, 16-byte tag), MiB/s.
 *   rec_*     the server's mbedtls_ssl_write / mbedtls_ssl_read of 16 KiB
 *             records over the pipe (record layer + GCM + copies), MiB/s.
 * Times are thread CPU time, so a noisy neighbour on the core does not count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/gcm.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#define PIPE_CAP (256 * 1024)
#define REC 16384
#define REPS 5

struct pipe {
	unsigned char buf[PIPE_CAP];
	size_t off, len;
};

static struct pipe c2s, s2c;
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

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
static const mbedtls_ecp_group_id curves[] = { MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE };

static void
conf_common(mbedtls_ssl_config *c, int endpoint)
{
	mbedtls_ssl_config_init(c);
	check(mbedtls_ssl_config_defaults(c, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT),
	    "config_defaults");
	mbedtls_ssl_conf_rng(c, mbedtls_ctr_drbg_random, &drbg);
	mbedtls_ssl_conf_min_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_ciphersuites(c, suite_list);
	mbedtls_ssl_conf_curves(c, curves);
	mbedtls_ssl_conf_renegotiation(c, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
}

static int srv_send(void *x, const unsigned char *b, size_t l) { (void)x; return pipe_send(&s2c, b, l); }
static int srv_recv(void *x, unsigned char *b, size_t l) { (void)x; return pipe_recv(&c2s, b, l); }
static int cli_send(void *x, const unsigned char *b, size_t l) { (void)x; return pipe_send(&c2s, b, l); }
static int cli_recv(void *x, unsigned char *b, size_t l) { (void)x; return pipe_recv(&s2c, b, l); }

static mbedtls_ssl_session first_session;
static int have_first_session;

struct hs_result {
	double server, client;
	long n;
};

/* Handshakes until `seconds` of server+client CPU time are spent (at least 5). */
static struct hs_result
handshakes(mbedtls_ssl_config *sconf, mbedtls_ssl_config *cconf, double seconds, int resume)
{
	struct hs_result r = { 0, 0, 0 };
	double t;

	while (r.server + r.client < seconds || r.n < 3) {
		mbedtls_ssl_context srv, cli;
		int rs = 1, rc = 1, guard = 0;

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

		while ((rs != 0 || rc != 0) && guard++ < 1000) {
			if (rc != 0) {
				t = cpu_now();
				rc = mbedtls_ssl_handshake(&cli);
				r.client += cpu_now() - t;
				if (rc != 0 && rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE)
					check(rc, "client handshake");
			}
			if (rs != 0) {
				t = cpu_now();
				rs = mbedtls_ssl_handshake(&srv);
				r.server += cpu_now() - t;
				if (rs != 0 && rs != MBEDTLS_ERR_SSL_WANT_READ && rs != MBEDTLS_ERR_SSL_WANT_WRITE)
					check(rs, "server handshake");
			}
		}
		if (rs != 0 || rc != 0) {
			fprintf(stderr, "ceiling: handshake did not finish\n");
			exit(1);
		}
		r.n++;
		if (!have_first_session) {
			mbedtls_ssl_session_init(&first_session);
			check(mbedtls_ssl_get_session(&cli, &first_session), "get_session");
			have_first_session = 1;
		}
		t = cpu_now();
		mbedtls_ssl_free(&srv);
		r.server += cpu_now() - t;
		t = cpu_now();
		mbedtls_ssl_free(&cli);
		r.client += cpu_now() - t;
	}
	return r;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
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
		check(mbedtls_ecdh_make_params(&e, &olen, buf, sizeof(buf), mbedtls_ctr_drbg_random, &drbg),
		    "ecdh_make_params");
		mbedtls_ecdh_free(&e);
		spent += cpu_now() - t;
		n++;
	}
	*per = spent / n;
	return spent;
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
	check(mbedtls_ecdh_make_public(&peer, &publen, pub, sizeof(pub), mbedtls_ctr_drbg_random, &drbg),
	    "make_public");
	while (spent < seconds || n < 5) {
		mbedtls_ecdh_context e;
		mbedtls_ecdh_init(&e);
		check(mbedtls_ecdh_setup(&e, MBEDTLS_ECP_DP_SECP256R1), "ecdh_setup");
		check(mbedtls_ecdh_make_params(&e, &plen, params, sizeof(params), mbedtls_ctr_drbg_random, &drbg),
		    "make_params");
		double t = cpu_now();
		check(mbedtls_ecdh_read_public(&e, pub, publen), "read_public");
		check(mbedtls_ecdh_calc_secret(&e, &slen, secret, sizeof(secret), mbedtls_ctr_drbg_random, &drbg),
		    "calc_secret");
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

	while (spent < seconds || n < 5) {
		hash[0] = (unsigned char)n;
		double t = cpu_now();
		check(mbedtls_sha256_ret(hash, 1, hash, 0), "sha256");
		check(mbedtls_pk_sign(key, MBEDTLS_MD_SHA256, hash, 32, sig, &slen, mbedtls_ctr_drbg_random, &drbg),
		    "pk_sign");
		spent += cpu_now() - t;
		n++;
	}
	*per = spent / n;
}

/* In place, as the record layer does it: encrypt a record, then decrypt it back. */
static void
gcm(double seconds, double *enc_mibs, double *dec_mibs)
{
	static unsigned char rec[REC];
	unsigned char key[16] = { 1, 2, 3 }, iv[12] = { 0 }, aad[13] = { 23, 3, 3 }, tag[16];
	mbedtls_gcm_context g;
	long n = 0;
	double enc = 0, dec = 0;

	mbedtls_gcm_init(&g);
	check(mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, key, 128), "gcm_setkey");
	while (enc + dec < seconds || n < 10) {
		iv[11] = (unsigned char)n;
		double t0 = cpu_now();
		check(mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, REC, iv, 12, aad, 13, rec, rec, 16, tag),
		    "gcm encrypt");
		double t1 = cpu_now();
		check(mbedtls_gcm_auth_decrypt(&g, REC, iv, 12, aad, 13, tag, 16, rec, rec), "gcm decrypt");
		double t2 = cpu_now();
		enc += t1 - t0;
		dec += t2 - t1;
		n++;
	}
	*enc_mibs = n * (double)REC / (1024.0 * 1024.0) / enc;
	*dec_mibs = n * (double)REC / (1024.0 * 1024.0) / dec;
	mbedtls_gcm_free(&g);
}

/* Server-side record throughput over a finished in-memory connection. */
static void
records(mbedtls_ssl_config *sconf, mbedtls_ssl_config *cconf, double seconds, double *w_mibs, double *r_mibs)
{
	static unsigned char data[REC], sink[REC];
	mbedtls_ssl_context srv, cli;
	int rs = 1, rc = 1;

	c2s.off = c2s.len = s2c.off = s2c.len = 0;
	mbedtls_ssl_init(&srv);
	mbedtls_ssl_init(&cli);
	check(mbedtls_ssl_setup(&srv, sconf), "ssl_setup");
	check(mbedtls_ssl_setup(&cli, cconf), "ssl_setup");
	mbedtls_ssl_set_bio(&srv, NULL, srv_send, srv_recv, NULL);
	mbedtls_ssl_set_bio(&cli, NULL, cli_send, cli_recv, NULL);
	while (rs != 0 || rc != 0) {
		if (rc != 0)
			rc = mbedtls_ssl_handshake(&cli);
		if (rs != 0)
			rs = mbedtls_ssl_handshake(&srv);
		if (rc < 0 && rc != MBEDTLS_ERR_SSL_WANT_READ)
			check(rc, "client handshake");
		if (rs < 0 && rs != MBEDTLS_ERR_SSL_WANT_READ)
			check(rs, "server handshake");
	}
	long n = 0;
	double spent = 0;
	while (spent < seconds || n < 10) {
		double t = cpu_now();
		int w = mbedtls_ssl_write(&srv, data, REC);
		spent += cpu_now() - t;
		if (w != REC)
			check(w < 0 ? w : -1, "ssl_write");
		for (size_t got = 0; got < REC;) {
			int r = mbedtls_ssl_read(&cli, sink, REC);
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
		int w = mbedtls_ssl_write(&cli, data, REC);
		if (w != REC)
			check(w < 0 ? w : -1, "client ssl_write");
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

int
main(int argc, char **argv)
{
	mbedtls_x509_crt crt;
	mbedtls_pk_context key;
	mbedtls_ssl_config sconf, cconf;
	mbedtls_ssl_ticket_context tickets;
	double secs = argc > 3 ? atof(argv[3]) : 2.0;
	static const char pers[] = "funneld-bench-ceiling";

	if (argc < 3) {
		fprintf(stderr, "usage: ceiling CERT.pem KEY.pem [SECONDS]\n");
		return 2;
	}
	suite_list[0] = mbedtls_ssl_get_ciphersuite_id("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256");
	suite_list[1] = 0;
	if (suite_list[0] == 0) {
		fprintf(stderr, "ceiling: suite missing\n");
		return 1;
	}
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	check(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers,
	    sizeof(pers) - 1), "drbg_seed");
	mbedtls_x509_crt_init(&crt);
	mbedtls_pk_init(&key);
	check(mbedtls_x509_crt_parse_file(&crt, argv[1]), "cert");
	check(mbedtls_pk_parse_keyfile(&key, argv[2], NULL), "key");

	conf_common(&sconf, MBEDTLS_SSL_IS_SERVER);
	check(mbedtls_ssl_conf_own_cert(&sconf, &crt, &key), "own_cert");
	mbedtls_ssl_ticket_init(&tickets);
	check(mbedtls_ssl_ticket_setup(&tickets, mbedtls_ctr_drbg_random, &drbg, MBEDTLS_CIPHER_AES_256_GCM, 43200),
	    "ticket_setup");
	mbedtls_ssl_conf_session_tickets_cb(&sconf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse, &tickets);

	conf_common(&cconf, MBEDTLS_SSL_IS_CLIENT);
	mbedtls_ssl_conf_authmode(&cconf, MBEDTLS_SSL_VERIFY_NONE);
	mbedtls_ssl_conf_session_tickets(&cconf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);

	/* Warm up (first signature builds the key's comb table, page faults, ...). */
	if (argc <= 4 || strcmp(argv[4], "hs") == 0)
		handshakes(&sconf, &cconf, 0.05, 0);

	/* Every figure is the median of REPS short repetitions: the machine may be shared. */
	double v[REPS][12];
	int gcm_only = argc > 4 && strcmp(argv[4], "gcm") == 0;
	if (argc > 4 && strcmp(argv[4], "hs") == 0) {
		double us[REPS];
		for (int i = 0; i < REPS; i++) {
			struct hs_result full = handshakes(&sconf, &cconf, secs / REPS, 0);
			us[i] = full.server / full.n * 1e6;
		}
		qsort(us, REPS, sizeof(double), cmp_double);
		printf("hs_server_us=%.1f\nhs_ceiling=%.1f\n", us[REPS / 2], 1e6 / us[REPS / 2]);
		return 0;
	}
	if (gcm_only) {
		double ge[REPS], gd[REPS], rw[REPS], rr[REPS];
		for (int i = 0; i < REPS; i++) {
			gcm(secs / 2 / REPS, &ge[i], &gd[i]);
			records(&sconf, &cconf, secs / 2 / REPS, &rw[i], &rr[i]);
		}
		qsort(ge, REPS, sizeof(double), cmp_double);
		qsort(gd, REPS, sizeof(double), cmp_double);
		qsort(rw, REPS, sizeof(double), cmp_double);
		qsort(rr, REPS, sizeof(double), cmp_double);
		printf("gcm_enc_mibs=%.1f\ngcm_dec_mibs=%.1f\nrec_write_mibs=%.1f\nrec_read_mibs=%.1f\n", ge[REPS / 2],
		    gd[REPS / 2], rw[REPS / 2], rr[REPS / 2]);
		return 0;
	}
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
		gcm(secs / 4 / REPS, &v[i][7], &v[i][8]);
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
		qsort(col, REPS, sizeof(double), cmp_double);
		m[k] = col[REPS / 2];
		printf("%s=%.1f\n", names[k], m[k]);
		if (k < 11) {
			printf("%s_min=%.1f\n%s_max=%.1f\n", names[k], col[0], names[k], col[REPS - 1]);
		}
	}
	printf("reps=%d\nhs_ceiling=%.1f\nres_ceiling=%.1f\nprim_ceiling=%.1f\n", REPS, 1e6 / m[0], 1e6 / m[2],
	    1e6 / (m[4] + m[5] + m[6]));
	return 0;
}
