/*
 * libFuzzer target for ingress_parse() and friends.
 *
 * The first byte steers: bit 0 is peer_allowed, the other bits pick a split
 * point.  The rest is what the relay sent.  Besides memory safety, it checks
 * that a verdict never depends on how the bytes were segmented: a prefix is
 * either INCOMPLETE or gets exactly the verdict of the whole input, and
 * nothing after the head changes anything.
 */

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "ingress.h"
#include "fuzz.h"

/* Parse from an exact-size heap copy so that ASan sees a read past n. */
static enum ingress_result
parse(const uint8_t *in, size_t n, bool allowed, struct ingress_req *req)
{
	char *c = malloc(n ? n : 1);
	enum ingress_result r;

	CHECK(c != NULL);
	if (n > 0)
		memcpy(c, in, n);
	r = ingress_parse(c, n, allowed, req);
	free(c);
	return r;
}

static void
check_same(const struct ingress_req *a, const struct ingress_req *b)
{
	CHECK(a->status == b->status);
	CHECK(a->reason == b->reason);
	CHECK(a->head_len == b->head_len);
	CHECK(memcmp(&a->src, &b->src, sizeof(a->src)) == 0);
	CHECK(strcmp(a->src_text, b->src_text) == 0);
	CHECK(strcmp(a->target_host, b->target_host) == 0);
	CHECK(a->target_port == b->target_port);
	CHECK(strcmp(a->target_text, b->target_text) == 0);
}

static void
check_accepted(const uint8_t *in, const struct ingress_req *q)
{
	char addr[INET6_ADDRSTRLEN], text[64], host[256];
	size_t hl = strlen(q->target_host);
	uint16_t port;

	CHECK(memcmp(in, "POST /v0/ingress", 16) == 0);
	CHECK(in[16] == ' ' || in[16] == '?');

	/* src_text is the sockaddr, printed back. */
	if (q->src.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&q->src;
		CHECK(sin->sin_port != 0);
		CHECK(inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr)) != NULL);
		snprintf(text, sizeof(text), "%s:%u", addr, ntohs(sin->sin_port));
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&q->src;
		CHECK(q->src.ss_family == AF_INET6);
		CHECK(sin6->sin6_port != 0);
		CHECK(inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr)) != NULL);
		snprintf(text, sizeof(text), "[%s]:%u", addr, ntohs(sin6->sin6_port));
	}
	CHECK(strcmp(text, q->src_text) == 0);

	/* Target: lower case, no trailing dot, and what was received. */
	CHECK(hl >= 1 && hl <= 253);
	CHECK(q->target_host[hl - 1] != '.');
	for (size_t i = 0; i < hl; i++)
		CHECK(!(q->target_host[i] >= 'A' && q->target_host[i] <= 'Z'));
	CHECK(q->target_port != 0);
	CHECK(addr_split_host_port(q->target_text, strlen(q->target_text), host,
	    sizeof(host), &port) == 0);
	CHECK(port == q->target_port);
}

static void
check_verdict(const uint8_t *in, size_t n, enum ingress_result r,
    const struct ingress_req *q)
{
	CHECK(q->reason != NULL && q->reason[0] != '\0');
	CHECK(strpbrk(q->reason, "\r\n") == NULL);
	if (r == INGRESS_INCOMPLETE) {
		CHECK(n <= INGRESS_HEAD_MAX);
		CHECK(q->status == 0 && q->head_len == 0);
		CHECK(strcmp(q->reason, "incomplete") == 0);
		/* Nothing seen is malformed, so no head can have ended. */
		CHECK(memmem(in, n, "\r\n\r\n", 4) == NULL);
		CHECK(memchr(in, '\0', n) == NULL);
		return;
	}
	CHECK(r == INGRESS_DONE);
	switch (q->status) {
	case 0: case 400: case 403: case 404: case 405: case 431:
		break;
	default:
		CHECK(!"unexpected status");
	}
	CHECK(q->head_len <= n && q->head_len <= INGRESS_HEAD_MAX);
	if (q->head_len > 0) {
		/* The head ends at the first blank line, and holds no NUL. */
		CHECK(q->head_len >= 4);
		CHECK(memmem(in, q->head_len, "\r\n\r\n", 4) ==
		    in + q->head_len - 4);
		CHECK(memchr(in, '\0', q->head_len) == NULL);
	}
	if (q->status == 431) {
		CHECK(n > INGRESS_HEAD_MAX && q->head_len == 0);
		CHECK(memmem(in, INGRESS_HEAD_MAX, "\r\n\r\n", 4) == NULL);
	}
	if (q->status != 400 && q->status != 431)
		CHECK(q->head_len > 0);
	if (q->status == 0)
		check_accepted(in, q);
}

static void
check_refusal(const struct ingress_req *q)
{
	char out[512];
	const char *body, *cl;
	size_t n;

	n = ingress_format_refusal(q->status, q->reason, out, sizeof(out));
	CHECK(n > 0 && n < sizeof(out) && strlen(out) == n);
	CHECK((body = strstr(out, "\r\n\r\n")) != NULL);
	CHECK((cl = strstr(out, "\r\nContent-Length: ")) != NULL && cl < body);
	CHECK(strtoul(cl + 18, NULL, 10) == strlen(body + 4));
	CHECK(strstr(out, "\r\nConnection: close\r\n") != NULL);
	CHECK((strstr(out, "\r\nAllow: POST\r\n") != NULL) == (q->status == 405));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ingress_req whole, other, pre;
	const uint8_t *in;
	enum ingress_result r, ro, rp;
	bool allowed;
	size_t n, k;
	char host[64];
	uint16_t port;

	if (size < 1)
		return 0;
	allowed = data[0] & 1;
	in = data + 1;
	n = size - 1;

	r = parse(in, n, allowed, &whole);
	check_verdict(in, n, r, &whole);
	if (r == INGRESS_DONE && whole.status != 0)
		check_refusal(&whole);

	/* The peer check sits after the head's own checks and before the rest. */
	ro = parse(in, n, !allowed, &other);
	check_verdict(in, n, ro, &other);
	CHECK(ro == r);
	CHECK(other.head_len == whole.head_len);
	{
		const struct ingress_req *yes = allowed ? &whole : &other;
		const struct ingress_req *no = allowed ? &other : &whole;

		if (r == INGRESS_DONE && no->status == 403 &&
		    strcmp(no->reason, "peer not allowed") == 0) {
			CHECK(yes->head_len > 0);
			CHECK(yes->status != 431);
			CHECK(strcmp(yes->reason, "missing Host") != 0);
		} else if (r == INGRESS_DONE)
			CHECK(yes->status == no->status && yes->reason == no->reason);
	}

	/* A prefix chosen by the first byte. */
	k = (size_t)(data[0] >> 1) * (n + 1) / 128;
	rp = parse(in, k, allowed, &pre);
	check_verdict(in, k, rp, &pre);
	if (r == INGRESS_INCOMPLETE)
		CHECK(rp == INGRESS_INCOMPLETE);
	if (rp == INGRESS_DONE)
		check_same(&pre, &whole);
	if (whole.head_len > 0 && k < whole.head_len)
		CHECK(rp == INGRESS_INCOMPLETE);

	/* The same bytes in two pieces, cut at k, parsed incrementally (the
	 * second call with the buffer copied elsewhere): the whole's verdict. */
	{
		struct ingress_state st;
		struct ingress_req inc;
		enum ingress_result ri;
		char *first = malloc(k ? k : 1), *all = malloc(n ? n : 1);

		CHECK(first != NULL && all != NULL);
		if (k > 0)
			memcpy(first, in, k);
		if (n > 0)
			memcpy(all, in, n);
		ingress_begin(&st, &inc);
		ri = ingress_parse_more(&st, first, k, allowed, &inc);
		CHECK(ri == rp);
		if (ri == INGRESS_INCOMPLETE) {
			ri = ingress_parse_more(&st, all, n, allowed, &inc);
			CHECK(ri == r);
			if (ri == INGRESS_DONE)
				check_same(&inc, &whole);
		}
		free(first);
		free(all);
	}

	/* Right before the blank line ends, and exactly at its end. */
	if (whole.head_len > 0) {
		CHECK(parse(in, whole.head_len - 1, allowed, &pre) ==
		    INGRESS_INCOMPLETE);
		CHECK(parse(in, whole.head_len, allowed, &pre) == INGRESS_DONE);
		check_same(&pre, &whole);
	}

	/* split_host_port on raw bytes, with a host buffer the first byte sizes. */
	{
		size_t cap = 1 + (data[0] % sizeof(host));
		char *c = malloc(n ? n : 1);

		CHECK(c != NULL);
		if (n > 0)
			memcpy(c, in, n);
		if (addr_split_host_port(c, n, host, cap, &port) == 0) {
			CHECK(strlen(host) < cap);
			CHECK(port != 0);
		}
		free(c);
	}
	return 0;
}
