/* Unit tests for the relay's request head parser (funneld/ingress.c). */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ingress.h"

#define RL	"POST /v0/ingress HTTP/1.1\r\n"
#define HOST	"Host: node.example.ts.net\r\n"
#define SRC	"Tailscale-Ingress-Src: 203.0.113.7:51234\r\n"
#define TGT	"Tailscale-Ingress-Target: node.example.ts.net:443\r\n"
#define END	"\r\n"
#define VALID	RL HOST SRC TGT END

/*
 * The status table: every row is run whole, then at every split point (each
 * prefix either INCOMPLETE or the very same verdict, and INCOMPLETE for every
 * prefix shorter than a completed head).  X(id, peer_allowed, status, reason,
 * head); heads are literals so they may hold NUL bytes.
 */
#define ROWS(X) \
	/* accepted */ \
	X(ok_minimal, true, 0, "ok", VALID) \
	X(ok_content_length_0, true, 0, "ok", RL HOST SRC TGT "Content-Length: 0\r\n" END) \
	X(ok_odd_case, true, 0, "ok", "POST /v0/ingress HTTP/1.1\r\nhOsT: x\r\n" \
	    "tailscale-ingress-SRC: 1.2.3.4:5\r\nTAILSCALE-INGRESS-TARGET: a:1\r\n" \
	    "content-LENGTH:   0 \r\n\r\n") \
	X(ok_query, true, 0, "ok", "POST /v0/ingress?x=1&y HTTP/1.1\r\n" HOST SRC TGT END) \
	X(ok_http10_no_host, true, 0, "ok", "POST /v0/ingress HTTP/1.0\r\n" SRC TGT END) \
	X(ok_cl_zeros_dup, true, 0, "ok", RL HOST SRC TGT "Content-Length: 00\r\nContent-Length: 0\r\n" END) \
	X(ok_tabs_ows, true, 0, "ok", RL HOST "Tailscale-Ingress-Src:\t 1.2.3.4:5 \t\r\n" TGT END) \
	X(ok_no_ows, true, 0, "ok", RL "Host:x\r\nTailscale-Ingress-Src:1.2.3.4:5\r\nTailscale-Ingress-Target:a:1\r\n" END) \
	X(ok_obs_text_value, true, 0, "ok", RL HOST "X-Note: caf\xc3\xa9\r\n" SRC TGT END) \
	X(ok_tab_inside_value, true, 0, "ok", RL HOST "X-Note: a\tb\r\n" SRC TGT END) \
	X(ok_empty_host_value, true, 0, "ok", RL "Host:\r\n" SRC TGT END) \
	X(ok_other_headers, true, 0, "ok", RL HOST "User-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n" \
	    SRC TGT "X-Empty:\r\n" END) \
	/* 400: request line */ \
	X(rl_empty, true, 400, "malformed request line", "\r\n\r\n") \
	X(rl_lower_version, true, 400, "malformed request line", "POST /v0/ingress http/1.1\r\n" HOST SRC TGT END) \
	X(rl_http2, true, 400, "malformed request line", "POST /v0/ingress HTTP/2.0\r\n" HOST SRC TGT END) \
	X(rl_http12, true, 400, "malformed request line", "POST /v0/ingress HTTP/1.2\r\n" HOST SRC TGT END) \
	X(rl_http1, true, 400, "malformed request line", "POST /v0/ingress HTTP/1\r\n" HOST SRC TGT END) \
	X(rl_two_spaces, true, 400, "malformed request line", "POST  /v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(rl_trailing_space, true, 400, "malformed request line", "POST /v0/ingress HTTP/1.1 \r\n" HOST SRC TGT END) \
	X(rl_leading_space, true, 400, "malformed request line", " POST /v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(rl_no_version, true, 400, "malformed request line", "POST /v0/ingress\r\n" HOST SRC TGT END) \
	X(rl_asterisk, true, 400, "malformed request line", "OPTIONS * HTTP/1.1\r\n" HOST END) \
	X(rl_absolute_form, true, 400, "malformed request line", "POST http://x/v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(rl_bad_method, true, 400, "malformed request line", "PO(ST /v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(rl_tab, true, 400, "malformed request line", "POST\t/v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(rl_obs_text_target, true, 400, "malformed request line", "POST /v0/ingress\x80 HTTP/1.1\r\n" HOST SRC TGT END) \
	/* 400: bytes */ \
	X(bare_lf_request_line, true, 400, "bare LF", "POST /v0/ingress HTTP/1.1\n" HOST SRC TGT END) \
	X(bare_lf_header, true, 400, "bare LF", RL "Host: x\n" SRC TGT END) \
	X(bare_lf_end, true, 400, "bare LF", RL HOST SRC TGT "\n") \
	X(bare_cr, true, 400, "bare CR", RL "Host: x\ry\r\n" SRC TGT END) \
	X(nul_request_line, true, 400, "NUL byte", "POST /v0/ing\0ress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(nul_value, true, 400, "NUL byte", RL "Host: a\0b\r\n" SRC TGT END) \
	X(nul_first, true, 400, "NUL byte", "\0") \
	X(ctl_value, true, 400, "control character", RL HOST "X-A: \x01\r\n" SRC TGT END) \
	X(del_value, true, 400, "control character", RL HOST "X-A: a\x7f\r\n" SRC TGT END) \
	X(esc_name, true, 400, "control character", RL HOST "X\x1b: a\r\n" SRC TGT END) \
	/* 400: header lines */ \
	X(obs_fold_sp, true, 400, "obsolete line folding", RL HOST "X-A: a\r\n b\r\n" SRC TGT END) \
	X(obs_fold_ht, true, 400, "obsolete line folding", RL "\tHost: x\r\n" SRC TGT END) \
	X(no_colon, true, 400, "header line without colon", RL "Host x\r\n" SRC TGT END) \
	X(empty_name, true, 400, "empty header name", RL HOST ": v\r\n" SRC TGT END) \
	X(ws_before_colon, true, 400, "whitespace before colon", RL "Host : x\r\n" SRC TGT END) \
	X(tab_before_colon, true, 400, "whitespace before colon", RL HOST "Tailscale-Ingress-Src\t: 1.2.3.4:5\r\n" TGT END) \
	X(bad_name_char, true, 400, "bad header name", RL HOST "X@Y: v\r\n" SRC TGT END) \
	X(bad_name_space, true, 400, "bad header name", RL HOST "X Y: v\r\n" SRC TGT END) \
	X(bad_name_obs_text, true, 400, "bad header name", RL HOST "X\xc3\xa9: v\r\n" SRC TGT END) \
	X(missing_host, true, 400, "missing Host", RL SRC TGT END) \
	X(duplicate_host, true, 400, "duplicate Host", RL HOST "HOST: other\r\n" SRC TGT END) \
	/* 403 */ \
	X(peer_not_allowed, false, 403, "peer not allowed", VALID) \
	X(origin, true, 403, "browser request (Origin)", RL HOST "Origin: https://evil.example\r\n" SRC TGT END) \
	X(origin_empty, true, 403, "browser request (Origin)", RL HOST "origin:\r\n" SRC TGT END) \
	X(referer, true, 403, "browser request (Referer)", RL HOST SRC TGT "REFERER: https://x/\r\n" END) \
	X(origin_and_referer, true, 403, "browser request (Origin)", RL HOST "Referer: r\r\nOrigin: o\r\n" SRC TGT END) \
	/* 404 */ \
	X(path_slash, true, 404, "not found", "POST / HTTP/1.1\r\n" HOST SRC TGT END) \
	X(path_trailing_slash, true, 404, "not found", "POST /v0/ingress/ HTTP/1.1\r\n" HOST SRC TGT END) \
	X(path_case, true, 404, "not found", "POST /v0/Ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(path_prefix, true, 404, "not found", "POST /v0/ingres HTTP/1.1\r\n" HOST SRC TGT END) \
	X(path_fragment, true, 404, "not found", "POST /v0/ingress#x HTTP/1.1\r\n" HOST SRC TGT END) \
	X(path_escaped, true, 404, "not found", "POST /v0/%69ngress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(path_dotdot, true, 404, "not found", "POST /v0/x/../ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	/* 405 */ \
	X(method_get, true, 405, "method not allowed", "GET /v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(method_lower, true, 405, "method not allowed", "post /v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(method_posts, true, 405, "method not allowed", "POSTS /v0/ingress HTTP/1.1\r\n" HOST SRC TGT END) \
	X(method_put_query, true, 405, "method not allowed", "PUT /v0/ingress?a HTTP/1.1\r\n" HOST SRC TGT END) \
	/* 400: Tailscale-Ingress-Src */ \
	X(src_missing, true, 400, "missing Tailscale-Ingress-Src", RL HOST TGT END) \
	X(src_duplicate, true, 400, "duplicate Tailscale-Ingress-Src", RL HOST SRC TGT SRC END) \
	X(src_duplicate_case, true, 400, "duplicate Tailscale-Ingress-Src", RL HOST SRC \
	    "tailscale-ingress-src: 203.0.113.7:51234\r\n" TGT END) \
	X(src_empty, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: \r\n" TGT END) \
	X(src_no_port, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: 1.2.3.4\r\n" TGT END) \
	X(src_name, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: example.com:5\r\n" TGT END) \
	X(src_v6_bare, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: 2001:db8::1:443\r\n" TGT END) \
	X(src_v6_no_port, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: [2001:db8::1]\r\n" TGT END) \
	X(src_v6_zone, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: [fe80::1%eth0]:5\r\n" TGT END) \
	X(src_v4_bracketed, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: [1.2.3.4]:5\r\n" TGT END) \
	X(src_v4_short, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: 1.2.3:5\r\n" TGT END) \
	X(src_v4_octet, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: 1.2.3.256:5\r\n" TGT END) \
	X(src_v4_space, true, 400, "bad Tailscale-Ingress-Src", RL HOST "Tailscale-Ingress-Src: 1.2.3.4 :5\r\n" TGT END) \
	/* 400: Tailscale-Ingress-Target */ \
	X(tgt_missing, true, 400, "missing Tailscale-Ingress-Target", RL HOST SRC END) \
	X(tgt_duplicate, true, 400, "duplicate Tailscale-Ingress-Target", RL HOST TGT SRC TGT END) \
	X(tgt_no_port, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: node.ts.net\r\n" END) \
	X(tgt_no_host, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: :443\r\n" END) \
	X(tgt_wildcard, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: *:443\r\n" END) \
	X(tgt_space, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: a b:443\r\n" END) \
	X(tgt_two_colons, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: a:1:2\r\n" END) \
	X(tgt_bad_v6, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: [zz::1]:443\r\n" END) \
	X(tgt_only_dot, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: .:443\r\n" END) \
	X(tgt_slash, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC "Tailscale-Ingress-Target: a/b:443\r\n" END) \
	X(tgt_two_trailing_dots, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC \
	  "Tailscale-Ingress-Target: node.ts.net..:443\r\n" END) \
	X(tgt_empty_label, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC \
	  "Tailscale-Ingress-Target: node..ts.net:443\r\n" END) \
	X(tgt_leading_dot, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC \
	  "Tailscale-Ingress-Target: .node.ts.net:443\r\n" END) \
	/* 400: a body */ \
	X(cl_positive, true, 400, "request has a body", RL HOST SRC TGT "Content-Length: 5\r\n" END) \
	X(cl_positive_zero_led, true, 400, "request has a body", RL HOST SRC TGT "Content-Length: 01\r\n" END) \
	X(cl_letters, true, 400, "bad Content-Length", RL HOST SRC TGT "Content-Length: abc\r\n" END) \
	X(cl_empty, true, 400, "bad Content-Length", RL HOST SRC TGT "Content-Length:\r\n" END) \
	X(cl_list, true, 400, "bad Content-Length", RL HOST SRC TGT "Content-Length: 0, 0\r\n" END) \
	X(cl_signed, true, 400, "bad Content-Length", RL HOST SRC TGT "Content-Length: +0\r\n" END) \
	X(cl_differing, true, 400, "bad Content-Length", RL HOST SRC TGT "Content-Length: 0\r\nContent-Length: 1\r\n" END) \
	X(te_chunked, true, 400, "request has a body", RL HOST SRC TGT "Transfer-Encoding: chunked\r\n" END) \
	X(te_identity_cl0, true, 400, "request has a body", RL HOST SRC TGT "Content-Length: 0\r\ntransfer-encoding: identity\r\n" END) \
	X(te_empty, true, 400, "request has a body", RL HOST SRC TGT "Transfer-Encoding:\r\n" END) \
	/* the order of the checks */ \
	X(order_malformed_before_peer, false, 400, "missing Host", RL SRC TGT END) \
	X(order_early_400_before_peer, false, 400, "bare LF", RL "Host: x\n") \
	X(order_peer_before_origin, false, 403, "peer not allowed", "GET /x HTTP/1.1\r\n" HOST "Origin: o\r\n" END) \
	X(order_origin_before_404, true, 403, "browser request (Origin)", "GET /x HTTP/1.1\r\n" HOST "Origin: o\r\n" END) \
	X(order_404_before_405, true, 404, "not found", "GET /x HTTP/1.1\r\n" HOST SRC TGT END) \
	X(order_405_before_src, true, 405, "method not allowed", "GET /v0/ingress HTTP/1.1\r\n" HOST END) \
	X(order_src_before_target, true, 400, "bad Tailscale-Ingress-Src", RL HOST \
	    "Tailscale-Ingress-Src: x\r\nTailscale-Ingress-Target: y\r\n" END) \
	X(order_target_before_body, true, 400, "bad Tailscale-Ingress-Target", RL HOST SRC \
	    "Tailscale-Ingress-Target: y\r\nContent-Length: 5\r\n" END) \
	X(order_dup_host_before_404, true, 400, "duplicate Host", "GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\n" END)

struct row {
	bool allowed;
	int status;
	const char *reason;
	const char *head;
	size_t len;
};

#define ROW_DEF(id, a, st, r, h) \
	static struct row row_##id = { (a), (st), (r), (h), sizeof(h) - 1 };
ROWS(ROW_DEF)

static enum ingress_result
parse_str(const char *s, bool allowed, struct ingress_req *req)
{
	return ingress_parse(s, strlen(s), allowed, req);
}

/* Parse the first k bytes from an exact-size copy (so overreads show). */
static enum ingress_result
parse_prefix(const char *s, size_t k, bool allowed, struct ingress_req *req)
{
	char *p = malloc(k ? k : 1);
	enum ingress_result r;

	assert_non_null(p);
	memcpy(p, s, k);
	r = ingress_parse(p, k, allowed, req);
	free(p);
	return r;
}

/*
 * Feed every prefix of s: INCOMPLETE until the verdict's byte, then the very
 * same verdict as for the whole input; INCOMPLETE for every prefix shorter
 * than a head that ended.
 */
static void
check_splits(const char *s, size_t len, bool allowed, const struct ingress_req *whole)
{
	struct ingress_req req;
	bool decided = false;

	for (size_t k = 0; k <= len; k++) {
		enum ingress_result r = parse_prefix(s, k, allowed, &req);

		if (r == INGRESS_INCOMPLETE) {
			if (decided)
				fail_msg("prefix %zu INCOMPLETE after a verdict", k);
			assert_int_equal(req.status, 0);
			assert_string_equal(req.reason, "incomplete");
			continue;
		}
		assert_int_equal(r, INGRESS_DONE);
		decided = true;
		if (whole->head_len > 0 && k < whole->head_len)
			fail_msg("prefix %zu of a %zu-byte head decided %d",
			    k, whole->head_len, req.status);
		assert_int_equal(req.status, whole->status);
		assert_ptr_equal(req.reason, whole->reason);
		assert_int_equal(req.head_len, whole->head_len);
		assert_string_equal(req.src_text, whole->src_text);
		assert_string_equal(req.target_host, whole->target_host);
		assert_string_equal(req.target_text, whole->target_text);
		assert_int_equal(req.target_port, whole->target_port);
	}
	assert_true(decided);

	/*
	 * The same bytes arriving one at a time, parsed incrementally, each
	 * call with the buffer in a new place (as it moves when it grows):
	 * the first verdict is the whole head's, at the same byte.
	 */
	struct ingress_state st;
	ingress_begin(&st, &req);
	for (size_t k = 1; k <= len; k++) {
		char *moved = malloc(k);

		assert_non_null(moved);
		memcpy(moved, s, k);
		enum ingress_result r = ingress_parse_more(&st, moved, k, allowed, &req);
		free(moved);
		if (r == INGRESS_INCOMPLETE)
			continue;
		struct ingress_req at;
		assert_int_equal(parse_prefix(s, k, allowed, &at), INGRESS_DONE);
		assert_int_equal(req.status, at.status);
		assert_ptr_equal(req.reason, at.reason);
		assert_int_equal(req.head_len, at.head_len);
		assert_string_equal(req.src_text, at.src_text);
		assert_string_equal(req.target_text, at.target_text);
		return;
	}
	fail_msg("no verdict from the bytes one at a time");
}

static void
check_row(void **state)
{
	const struct row *row = *state;
	struct ingress_req req;

	assert_int_equal(parse_prefix(row->head, row->len, row->allowed, &req),
	    INGRESS_DONE);
	assert_int_equal(req.status, row->status);
	assert_string_equal(req.reason, row->reason);
	if (row->status != 400 || req.head_len > 0) {
		/* A verdict past the line checks needs the whole head. */
		assert_int_equal(req.head_len, row->len);
		assert_memory_equal(row->head + row->len - 4, "\r\n\r\n", 4);
	}
	if (row->status == 0) {
		assert_true(req.src.ss_family == AF_INET ||
		    req.src.ss_family == AF_INET6);
		assert_true(req.target_port > 0);
		assert_true(req.target_host[0] != '\0');
	}
	check_splits(row->head, row->len, row->allowed, &req);
}

static void
test_valid_fields(void **state)
{
	struct ingress_req req;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&req.src;
	struct in_addr want;

	assert_int_equal(parse_str(VALID, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_string_equal(req.reason, "ok");
	assert_int_equal(req.head_len, strlen(VALID));
	assert_int_equal(req.src.ss_family, AF_INET);
	assert_int_equal(inet_pton(AF_INET, "203.0.113.7", &want), 1);
	assert_int_equal(sin->sin_addr.s_addr, want.s_addr);
	assert_int_equal(ntohs(sin->sin_port), 51234);
	assert_string_equal(req.src_text, "203.0.113.7:51234");
	assert_string_equal(req.target_host, "node.example.ts.net");
	assert_int_equal(req.target_port, 443);
	assert_string_equal(req.target_text, "node.example.ts.net:443");
}

static void
test_ipv6_src(void **state)
{
	static const char head[] = RL HOST
	    "Tailscale-Ingress-Src: [2001:DB8:0:0::1]:0443\r\n" TGT END;
	struct ingress_req req;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&req.src;
	struct in6_addr want;

	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(req.src.ss_family, AF_INET6);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &want), 1);
	assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
	assert_int_equal(ntohs(sin6->sin6_port), 443);
	assert_string_equal(req.src_text, "[2001:db8::1]:443");
}

static void
test_ipv6_src_forms(void **state)
{
	static const struct {
		const char *in, *text;
	} cases[] = {
		{ "[::1]:1", "[::1]:1" },
		{ "[::ffff:192.0.2.1]:80", "[::ffff:192.0.2.1]:80" },
		{ "[fd7a:115c:a1e0::1]:65535", "[fd7a:115c:a1e0::1]:65535" },
		{ "[1111:2222:3333:4444:5555:6666:7777:8888]:9",
		    "[1111:2222:3333:4444:5555:6666:7777:8888]:9" },
	};
	char head[512];
	struct ingress_req req;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(head, sizeof(head), RL HOST
		    "Tailscale-Ingress-Src: %s\r\n" TGT END, cases[i].in);
		assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
		assert_int_equal(req.status, 0);
		assert_int_equal(req.src.ss_family, AF_INET6);
		assert_string_equal(req.src_text, cases[i].text);
	}
}

static void
test_target_normalised(void **state)
{
	static const struct {
		const char *in, *host;
		uint16_t port;
	} cases[] = {
		{ "Node.Tailnet.TS.net.:443", "node.tailnet.ts.net", 443 },
		{ "node.tailnet.ts.net:00443", "node.tailnet.ts.net", 443 },
		{ "_x-y.z:1", "_x-y.z", 1 },
		{ "192.0.2.1:8443", "192.0.2.1", 8443 },
		{ "[2001:DB8:0::1]:443", "2001:db8::1", 443 },
		{ "[::1]:65535", "::1", 65535 },
	};
	char head[512];
	struct ingress_req req;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(head, sizeof(head), RL HOST SRC
		    "Tailscale-Ingress-Target:  %s \r\n" END, cases[i].in);
		assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
		assert_int_equal(req.status, 0);
		assert_string_equal(req.target_host, cases[i].host);
		assert_int_equal(req.target_port, cases[i].port);
		assert_string_equal(req.target_text, cases[i].in);
	}
}

static void
test_target_length(void **state)
{
	char host[300], head[1024];
	struct ingress_req req;

	/* 253 characters: the longest DNS name (labels of at most 63). */
	memset(host, 'a', 253);
	host[63] = host[127] = host[191] = '.';
	host[253] = '\0';
	snprintf(head, sizeof(head), RL HOST SRC
	    "Tailscale-Ingress-Target: %s:443\r\n" END, host);
	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(strlen(req.target_host), 253);

	/* Its absolute form, with the trailing dot. */
	host[253] = '.';
	host[254] = '\0';
	snprintf(head, sizeof(head), RL HOST SRC
	    "Tailscale-Ingress-Target: %s:443\r\n" END, host);
	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(strlen(req.target_host), 253);
	assert_int_equal(strlen(req.target_text), 258);

	/* 254 and 300 characters. */
	host[253] = 'a';
	snprintf(head, sizeof(head), RL HOST SRC
	    "Tailscale-Ingress-Target: %s:443\r\n" END, host);
	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "bad Tailscale-Ingress-Target");
	memset(host, 'a', 299);
	host[299] = '\0';
	snprintf(head, sizeof(head), RL HOST SRC
	    "Tailscale-Ingress-Target: %s:443\r\n" END, host);
	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "bad Tailscale-Ingress-Target");

	/* A label of 64: the rule [backend] names follow too (addr.c). */
	memset(host, 'a', 64);
	memcpy(host + 64, ".ts.net", 8);
	snprintf(head, sizeof(head), RL HOST SRC
	    "Tailscale-Ingress-Target: %s:443\r\n" END, host);
	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	memcpy(host + 63, ".ts.net", 8);
	snprintf(head, sizeof(head), RL HOST SRC
	    "Tailscale-Ingress-Target: %s:443\r\n" END, host);
	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
}

static void
test_bad_ports(void **state)
{
	static const char *ports[] = {
		"0", "00000", "65536", "99999", "123456", "", "x", "8x", "+80",
		"-1", " 80", "8 0", "0x50", "1e3", "80.0", "٣",
	};
	char head[512];
	struct ingress_req req;

	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		snprintf(head, sizeof(head), RL HOST
		    "Tailscale-Ingress-Src: 192.0.2.1:%s\r\n" TGT END, ports[i]);
		assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
		if (req.status != 400)
			fail_msg("src port \"%s\": %d", ports[i], req.status);
		assert_string_equal(req.reason, "bad Tailscale-Ingress-Src");

		snprintf(head, sizeof(head), RL HOST
		    "Tailscale-Ingress-Src: [2001:db8::1]:%s\r\n" TGT END, ports[i]);
		assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
		assert_int_equal(req.status, 400);
		assert_string_equal(req.reason, "bad Tailscale-Ingress-Src");

		snprintf(head, sizeof(head), RL HOST SRC
		    "Tailscale-Ingress-Target: node.ts.net:%s\r\n" END, ports[i]);
		assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
		if (req.status != 400)
			fail_msg("target port \"%s\": %d", ports[i], req.status);
		assert_string_equal(req.reason, "bad Tailscale-Ingress-Target");
	}

	/* The bounds themselves are fine. */
	assert_int_equal(parse_str(RL HOST "Tailscale-Ingress-Src: 192.0.2.1:1\r\n"
	    "Tailscale-Ingress-Target: a:65535\r\n" END, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(ntohs(((struct sockaddr_in *)&req.src)->sin_port), 1);
	assert_int_equal(req.target_port, 65535);
}

static void
test_split_every_boundary_valid(void **state)
{
	static const char head[] = RL "host: x\r\n" SRC TGT "Content-Length: 0\r\n" END;
	struct ingress_req req;

	assert_int_equal(parse_str(head, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(req.head_len, sizeof(head) - 1);
	for (size_t k = 0; k < sizeof(head) - 1; k++) {
		struct ingress_req p;

		assert_int_equal(parse_prefix(head, k, true, &p), INGRESS_INCOMPLETE);
	}
	check_splits(head, sizeof(head) - 1, true, &req);
}

static void
test_split_every_boundary_invalid(void **state)
{
	/* Decided at the end of the head ... */
	static const char late[] = RL HOST "Tailscale-Ingress-Src: 1.2.3.4:0\r\n" TGT END;
	/* ... and as soon as the bad line has ended. */
	static const char early[] = RL "Host x\r\n" SRC TGT END;
	const size_t bad = sizeof(RL "Host x\r\n") - 1;
	struct ingress_req req, p;

	assert_int_equal(parse_str(late, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "bad Tailscale-Ingress-Src");
	check_splits(late, sizeof(late) - 1, true, &req);

	assert_int_equal(parse_str(early, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "header line without colon");
	assert_int_equal(req.head_len, 0);
	for (size_t k = 0; k <= sizeof(early) - 1; k++) {
		enum ingress_result r = parse_prefix(early, k, true, &p);

		assert_int_equal(r, k < bad ? INGRESS_INCOMPLETE : INGRESS_DONE);
	}
	check_splits(early, sizeof(early) - 1, true, &req);
}

/* A well-formed head of exactly total bytes (padded with an X-Pad header). */
static char *
make_head(size_t total)
{
	static const char pre[] = RL HOST SRC TGT "X-Pad: ";
	static const char post[] = "\r\n" END;
	char *p = malloc(total + 64);
	size_t pad = total - (sizeof(pre) - 1) - (sizeof(post) - 1);

	assert_non_null(p);
	assert_true(total > sizeof(pre) + sizeof(post));
	memcpy(p, pre, sizeof(pre) - 1);
	memset(p + sizeof(pre) - 1, 'a', pad);
	memcpy(p + sizeof(pre) - 1 + pad, post, sizeof(post) - 1);
	return p;
}

static void
test_oversize(void **state)
{
	struct ingress_req req;
	char *p;

	/* Exactly 8192 bytes, terminator included: fine. */
	p = make_head(INGRESS_HEAD_MAX);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(req.head_len, INGRESS_HEAD_MAX);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX - 1, true, &req),
	    INGRESS_INCOMPLETE);
	/* Followed by TLS bytes: still fine. */
	memset(p + INGRESS_HEAD_MAX, 0x16, 64);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX + 64, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(req.head_len, INGRESS_HEAD_MAX);
	free(p);

	/* 8193 bytes: too large, whether or not more follow. */
	p = make_head(INGRESS_HEAD_MAX + 1);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX + 1, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 431);
	assert_string_equal(req.reason, "head too large");
	assert_int_equal(req.head_len, 0);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX, true, &req), INGRESS_INCOMPLETE);
	memset(p + INGRESS_HEAD_MAX + 1, 'x', 32);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX + 33, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 431);
	/* 431 comes before the peer check. */
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX + 1, false, &req), INGRESS_DONE);
	assert_int_equal(req.status, 431);
	free(p);

	/* No terminator at all. */
	p = malloc(3 * INGRESS_HEAD_MAX);
	assert_non_null(p);
	memcpy(p, RL HOST "X-Pad: ", sizeof(RL HOST "X-Pad: ") - 1);
	memset(p + sizeof(RL HOST "X-Pad: ") - 1, 'a',
	    3 * INGRESS_HEAD_MAX - (sizeof(RL HOST "X-Pad: ") - 1));
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX, true, &req), INGRESS_INCOMPLETE);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX + 1, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 431);
	assert_int_equal(ingress_parse(p, 3 * INGRESS_HEAD_MAX, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 431);

	/* A CR as byte 8192 whose LF would be byte 8193. */
	p[INGRESS_HEAD_MAX - 1] = '\r';
	p[INGRESS_HEAD_MAX] = '\n';
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX, true, &req), INGRESS_INCOMPLETE);
	assert_int_equal(ingress_parse(p, INGRESS_HEAD_MAX + 1, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 431);

	/* A malformed byte inside the cap decides first, however much follows. */
	p[10] = '\0';
	assert_int_equal(ingress_parse(p, 3 * INGRESS_HEAD_MAX, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "NUL byte");
	assert_int_equal(ingress_parse(p, 11, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_int_equal(ingress_parse(p, 10, true, &req), INGRESS_INCOMPLETE);
	free(p);
}

static void
test_incomplete(void **state)
{
	static const char *prefixes[] = {
		"", "P", "POST", "POST /v0/ingress HTTP/1.1", RL, RL "\r",
		RL HOST, RL HOST SRC TGT, RL HOST SRC TGT "\r",
		"garbage without any line end yet", "GET / HTTP/9.9",
	};
	struct ingress_req req;

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		assert_int_equal(parse_str(prefixes[i], true, &req), INGRESS_INCOMPLETE);
		assert_int_equal(req.status, 0);
		assert_string_equal(req.reason, "incomplete");
		assert_int_equal(req.head_len, 0);
	}
	/* The same bad request line decides once its CRLF arrived. */
	assert_int_equal(parse_str("GET / HTTP/9.9\r", true, &req), INGRESS_INCOMPLETE);
	assert_int_equal(parse_str("GET / HTTP/9.9\r\n", true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "malformed request line");
}

static void
test_nul_bytes(void **state)
{
	static const char nul_after_head[] = VALID "\0\0\0";
	struct ingress_req req;
	char buf[sizeof(VALID) + 8];

	/* A NUL anywhere in the head decides at once. */
	for (size_t i = 0; i < sizeof(VALID) - 1; i++) {
		/* In place of a CRLF's LF, the CR is what is wrong. */
		const char *why = i > 0 && VALID[i - 1] == '\r' ? "bare CR" : "NUL byte";

		memcpy(buf, VALID, sizeof(VALID) - 1);
		buf[i] = '\0';
		assert_int_equal(ingress_parse(buf, sizeof(VALID) - 1, true, &req),
		    INGRESS_DONE);
		assert_int_equal(req.status, 400);
		assert_string_equal(req.reason, why);
		assert_int_equal(ingress_parse(buf, i, true, &req), INGRESS_INCOMPLETE);
		assert_int_equal(ingress_parse(buf, i + 1, true, &req), INGRESS_DONE);
		assert_int_equal(req.status, 400);
		assert_string_equal(req.reason, why);
	}
	/* After the head it is TLS's business. */
	assert_int_equal(ingress_parse(nul_after_head, sizeof(nul_after_head) - 1, true,
	    &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(req.head_len, sizeof(VALID) - 1);
}

static void
test_bare_lf_and_cr(void **state)
{
	struct ingress_req req;
	char buf[sizeof(VALID)];
	size_t n = sizeof(VALID) - 1;

	/* Every CRLF of the valid head turned into a bare LF, or a bare CR. */
	for (size_t i = 0; i < n; i++) {
		if (VALID[i] != '\r')
			continue;
		memcpy(buf, VALID, n);
		buf[i] = 'x';
		assert_int_equal(ingress_parse(buf, n, true, &req), INGRESS_DONE);
		assert_int_equal(req.status, 400);
		assert_string_equal(req.reason, "bare LF");
		memcpy(buf, VALID, n);
		buf[i + 1] = 'x';
		assert_int_equal(ingress_parse(buf, n, true, &req), INGRESS_DONE);
		assert_int_equal(req.status, 400);
		assert_string_equal(req.reason, "bare CR");
	}
}

static void
test_obs_fold(void **state)
{
	struct ingress_req req;

	assert_int_equal(parse_str(RL HOST SRC "Tailscale-Ingress-Target:\r\n"
	    " node.ts.net:443\r\n" END, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "obsolete line folding");
	/* Decided as soon as the folded line ended. */
	assert_int_equal(parse_str(RL HOST " x\r\n", true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_int_equal(parse_str(RL HOST " x", true, &req), INGRESS_INCOMPLETE);
}

static void
test_duplicates(void **state)
{
	struct ingress_req req;

	/* Even identical values: the relay never sends two. */
	assert_int_equal(parse_str(RL HOST SRC SRC TGT END, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "duplicate Tailscale-Ingress-Src");
	assert_int_equal(parse_str(RL HOST SRC TGT "TAILSCALE-INGRESS-TARGET: b:1\r\n" END,
	    true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.reason, "duplicate Tailscale-Ingress-Target");
	/* A duplicate, even a bad one, is reported as such. */
	assert_int_equal(parse_str(RL HOST "Tailscale-Ingress-Src: x\r\n"
	    "Tailscale-Ingress-Src: y\r\n" TGT END, true, &req), INGRESS_DONE);
	assert_string_equal(req.reason, "duplicate Tailscale-Ingress-Src");
	assert_int_equal(parse_str(RL HOST HOST SRC TGT END, true, &req), INGRESS_DONE);
	assert_string_equal(req.reason, "duplicate Host");
}

static void
test_pipelined(void **state)
{
	/* A TLS 1.2 ClientHello's start, with bytes that are illegal in HTTP. */
	static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\r\0"
	    "\r\n\r\nGET / HTTP/1.1\r\n\r\n";
	char buf[sizeof(VALID) + sizeof(hello)];
	size_t n = sizeof(VALID) - 1, m = sizeof(hello) - 1;
	struct ingress_req req;

	memcpy(buf, VALID, n);
	memcpy(buf + n, hello, m);
	for (size_t k = n; k <= n + m; k++) {
		assert_int_equal(ingress_parse(buf, k, true, &req), INGRESS_DONE);
		assert_int_equal(req.status, 0);
		assert_int_equal(req.head_len, n);
	}
	/* Pipelined bytes after a refused head do not change the refusal either. */
	assert_int_equal(buf[15], 's');
	buf[15] = 'z';		/* POST /v0/ingresz */
	assert_int_equal(ingress_parse(buf, n + m, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 404);
	assert_int_equal(req.head_len, n);
}

/*
 * The head ends exactly where readable memory ends; the "TLS bytes" the caller
 * says follow are on a PROT_NONE page.  Touching them would crash.
 */
static void
test_pipelined_untouched(void **state)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t n = sizeof(VALID) - 1;
	struct ingress_req req;
	char *map, *head;

	map = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(mprotect(map + pg, (size_t)pg, PROT_NONE), 0);
	head = map + pg - n;
	memcpy(head, VALID, n);
	assert_int_equal(ingress_parse(head, n + 517, true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 0);
	assert_int_equal(req.head_len, n);
	assert_int_equal(ingress_parse(head, n + 517, false, &req), INGRESS_DONE);
	assert_int_equal(req.status, 403);
	munmap(map, (size_t)pg * 2);
}

static void
test_fields_on_refusal(void **state)
{
	struct ingress_req req;

	/* Src/Target that parsed are there for the log even when refused ... */
	assert_int_equal(parse_str("GET /x HTTP/1.1\r\n" HOST SRC TGT END, true, &req),
	    INGRESS_DONE);
	assert_int_equal(req.status, 404);
	assert_string_equal(req.src_text, "203.0.113.7:51234");
	assert_string_equal(req.target_host, "node.example.ts.net");
	/* ... and a bad one leaves its fields empty. */
	assert_int_equal(parse_str(RL HOST SRC "Tailscale-Ingress-Target: ab!:1\r\n" END,
	    true, &req), INGRESS_DONE);
	assert_int_equal(req.status, 400);
	assert_string_equal(req.target_host, "");
	assert_string_equal(req.target_text, "");
	assert_int_equal(req.target_port, 0);
}

static void
test_refusal_404(void **state)
{
	static const char want[] =
	    "HTTP/1.1 404 Not Found\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 25\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "404 Not Found: not found\n";
	char out[512];
	size_t n;

	memset(out, 'Z', sizeof(out));
	n = ingress_format_refusal(404, "not found", out, sizeof(out));
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(out, want, sizeof(want));	/* NUL-terminated too */
}

static void
test_refusal_405(void **state)
{
	static const char want[] =
	    "HTTP/1.1 405 Method Not Allowed\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 43\r\n"
	    "Connection: close\r\n"
	    "Allow: POST\r\n"
	    "\r\n"
	    "405 Method Not Allowed: method not allowed\n";
	char out[512];
	size_t n;

	n = ingress_format_refusal(405, "method not allowed", out, sizeof(out));
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(out, want, sizeof(want));
}

static void
test_refusal_bounds(void **state)
{
	static const int codes[] = { 400, 403, 404, 405, 408, 431, 500, 502, 503 };
	char reason[2048], out[512], small[16];
	size_t n;

	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *cl;
		char *body;

		n = ingress_format_refusal(codes[i], reason, out, sizeof(out));
		assert_true(n < sizeof(out));
		assert_int_equal(strlen(out), n);
		/* Content-Length still matches the (shortened) body. */
		assert_non_null(cl = strstr(out, "Content-Length: "));
		assert_non_null(body = strstr(out, "\r\n\r\n"));
		body += 4;
		assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(body));
		assert_true((strstr(out, "Allow: POST\r\n") != NULL) == (codes[i] == 405));
	}
	/* A small buffer truncates, NUL-terminated. */
	n = ingress_format_refusal(400, "x", small, sizeof(small));
	assert_int_equal(n, sizeof(small) - 1);
	assert_string_equal(small, "HTTP/1.1 400 Ba");
	assert_int_equal(ingress_format_refusal(400, "x", small, 0), 0);
	/* No reason: the body is the status alone. */
	n = ingress_format_refusal(503, NULL, out, sizeof(out));
	assert_non_null(strstr(out, "Content-Length: 24\r\n"));
	assert_string_equal(out + n - 24, "503 Service Unavailable\n");
}

static void
test_status_text(void **state)
{
	assert_string_equal(http_status_text(101), "Unknown");
	assert_string_equal(http_status_text(400), "Bad Request");
	assert_string_equal(http_status_text(403), "Forbidden");
	assert_string_equal(http_status_text(404), "Not Found");
	assert_string_equal(http_status_text(405), "Method Not Allowed");
	assert_string_equal(http_status_text(408), "Request Timeout");
	assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
	assert_string_equal(http_status_text(500), "Unknown");
	assert_string_equal(http_status_text(502), "Bad Gateway");
	assert_string_equal(http_status_text(503), "Service Unavailable");
	assert_string_equal(http_status_text(999), "Unknown");
}

#define ROW_TEST(id, a, st, r, h) { "row_" #id, check_row, NULL, NULL, &row_##id },

int
main(void)
{
	const struct CMUnitTest tests[] = {
		ROWS(ROW_TEST)
		cmocka_unit_test(test_valid_fields),
		cmocka_unit_test(test_ipv6_src),
		cmocka_unit_test(test_ipv6_src_forms),
		cmocka_unit_test(test_target_normalised),
		cmocka_unit_test(test_target_length),
		cmocka_unit_test(test_bad_ports),
		cmocka_unit_test(test_split_every_boundary_valid),
		cmocka_unit_test(test_split_every_boundary_invalid),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_nul_bytes),
		cmocka_unit_test(test_bare_lf_and_cr),
		cmocka_unit_test(test_obs_fold),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_pipelined_untouched),
		cmocka_unit_test(test_fields_on_refusal),
		cmocka_unit_test(test_refusal_404),
		cmocka_unit_test(test_refusal_405),
		cmocka_unit_test(test_refusal_bounds),
		cmocka_unit_test(test_status_text),
	};

	return cmocka_run_group_tests_name("ingress", tests, NULL, NULL);
}
