/* Names of connection results and handshake failures; see result.h. */
#include "result.h"

static const char *const result_names[RESULT_COUNT] = {
	[RESULT_OK] = "ok",
	[RESULT_REFUSED_400] = "refused_400",
	[RESULT_REFUSED_403] = "refused_403",
	[RESULT_REFUSED_404] = "refused_404",
	[RESULT_REFUSED_405] = "refused_405",
	[RESULT_REFUSED_408] = "refused_408",
	[RESULT_REFUSED_429] = "refused_429",
	[RESULT_REFUSED_431] = "refused_431",
	[RESULT_REFUSED_502] = "refused_502",
	[RESULT_REFUSED_503] = "refused_503",
	[RESULT_HANDSHAKE_FAILED] = "handshake_failed",
	[RESULT_HANDSHAKE_TIMEOUT] = "handshake_timeout",
	[RESULT_IDLE_TIMEOUT] = "idle_timeout",
	[RESULT_RELAY_ERROR] = "relay_error",
	[RESULT_BACKEND_ERROR] = "backend_error",
	[RESULT_SHUTDOWN] = "shutdown",
	[RESULT_UNTRUSTED] = "untrusted_peer",
	[RESULT_BAD_PROXY] = "bad_proxy_header",
	[RESULT_PROXY_LOCAL] = "proxy_local",
};

static const char *const hs_failure_names[HS_FAIL_COUNT] = {
	[HS_FAIL_NONE] = "none",
	[HS_FAIL_TIMEOUT] = "timeout",
	[HS_FAIL_UNRECOGNIZED_NAME] = "unrecognized_name",
	[HS_FAIL_NO_APPLICATION_PROTOCOL] = "no_application_protocol",
	[HS_FAIL_RESUMPTION_NAME_MISMATCH] = "resumption_name_mismatch",
	[HS_FAIL_EOF] = "eof",
	[HS_FAIL_RESET] = "reset",
	[HS_FAIL_NO_SHARED_CIPHER] = "no_shared_cipher",
	[HS_FAIL_PROTOCOL_VERSION] = "protocol_version",
	[HS_FAIL_CLIENT_ALERT] = "client_alert",
	[HS_FAIL_NOT_TLS] = "not_tls",
	[HS_FAIL_BAD_CLIENT_HELLO] = "bad_client_hello",
	[HS_FAIL_OTHER] = "other",
};

static const char *const refusal_names[REFUSAL_COUNT] = {
	[REFUSAL_PENDING] = "max_pending",
	[REFUSAL_PENDING_PEER] = "max_pending_per_peer",
	[REFUSAL_CLIENT_DENY] = "deny",
	[REFUSAL_CLIENT_CONNECTIONS] = "too_many_connections",
	[REFUSAL_CLIENT_RATE] = "rate_limited",
	[REFUSAL_CLIENT_TABLE_FULL] = "table_full",
	[REFUSAL_UNTRUSTED] = "trusted",
};

const char *
refusal_name(enum refusal r)
{
	return (unsigned)r < REFUSAL_COUNT ? refusal_names[r] : "unknown";
}

const char *
conn_result_name(enum conn_result r)
{
	return (unsigned)r < RESULT_COUNT ? result_names[r] : "unknown";
}

const char *
hs_failure_name(enum hs_failure f)
{
	return (unsigned)f < HS_FAIL_COUNT ? hs_failure_names[f] : "other";
}

enum conn_result
conn_result_for_status(int status)
{
	switch (status) {
	case 400: return RESULT_REFUSED_400;
	case 403: return RESULT_REFUSED_403;
	case 404: return RESULT_REFUSED_404;
	case 405: return RESULT_REFUSED_405;
	case 408: return RESULT_REFUSED_408;
	case 429: return RESULT_REFUSED_429;
	case 431: return RESULT_REFUSED_431;
	case 502: return RESULT_REFUSED_502;
	case 503: return RESULT_REFUSED_503;
	default: return RESULT_RELAY_ERROR;
	}
}
