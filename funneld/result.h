/* How a connection ended, and why a handshake failed: the words logs and metrics share. */
#ifndef FUNNELD_RESULT_H
#define FUNNELD_RESULT_H

enum conn_result {
	RESULT_OK,
	RESULT_REFUSED_400,
	RESULT_REFUSED_403,
	RESULT_REFUSED_404,
	RESULT_REFUSED_405,
	RESULT_REFUSED_408,
	RESULT_REFUSED_429,
	RESULT_REFUSED_431,
	RESULT_REFUSED_502,
	RESULT_REFUSED_503,
	RESULT_HANDSHAKE_FAILED,
	RESULT_HANDSHAKE_TIMEOUT,
	RESULT_IDLE_TIMEOUT,
	RESULT_RELAY_ERROR,
	RESULT_BACKEND_ERROR,
	RESULT_SHUTDOWN,
	RESULT_UNTRUSTED,               /* [listener]: the peer is not in trusted */
	RESULT_BAD_PROXY,               /* [listener]: the PROXY header is missing, bad or late */
	RESULT_PROXY_LOCAL,             /* [listener]: PROXY LOCAL, a health check */
	RESULT_COUNT
};

enum hs_failure {
	HS_FAIL_NONE,                   /* the handshake did not fail */
	HS_FAIL_TIMEOUT,
	HS_FAIL_UNRECOGNIZED_NAME,
	HS_FAIL_NO_APPLICATION_PROTOCOL,
	HS_FAIL_RESUMPTION_NAME_MISMATCH,
	HS_FAIL_EOF,
	HS_FAIL_RESET,
	HS_FAIL_NO_SHARED_CIPHER,
	HS_FAIL_PROTOCOL_VERSION,
	HS_FAIL_CLIENT_ALERT,
	HS_FAIL_NOT_TLS,
	HS_FAIL_BAD_CLIENT_HELLO,
	HS_FAIL_OTHER,
	HS_FAIL_COUNT
};

/* Refusals that the limits decide (counted apart from the status answered). */
enum refusal {
	REFUSAL_PENDING,                /* max_pending */
	REFUSAL_PENDING_PEER,           /* max_pending_per_peer */
	REFUSAL_CLIENT_DENY,            /* [clients] deny */
	REFUSAL_CLIENT_CONNECTIONS,     /* [clients] max_connections */
	REFUSAL_CLIENT_RATE,            /* [clients] rate */
	REFUSAL_CLIENT_TABLE_FULL,      /* the client table has no room (capacity too small) */
	REFUSAL_UNTRUSTED,              /* [listener] trusted */
	REFUSAL_COUNT
};

const char *conn_result_name(enum conn_result r);
const char *refusal_name(enum refusal r);            /* "max_pending", "deny", ... */      /* "ok", "refused_404", ... */
enum conn_result conn_result_for_status(int status);   /* 400 -> RESULT_REFUSED_400, ... */
const char *hs_failure_name(enum hs_failure f);        /* "unrecognized_name", ... */

#endif
