/* lorad — errors.h: the one error convention of lorad.
 *
 * Every fallible function returns an `int`: 0 on success, or a negative
 * `enum lorad_err` value. Constructors return NULL on failure. Human detail
 * ("layer foo: rank 32 exceeds max_rank 16 ...") goes into a caller-provided
 * `struct lorad_error`, so the HTTP layer can put it into the JSON message
 * unchanged. The snake_case names of SPEC.md section 6 live here, in one
 * table; the HTTP status that goes with each lives in daemon/http.c, since
 * lib/ knows nothing of HTTP.
 *
 * Thread-safety: all functions are pure or write only to the caller's
 * struct; any thread may call them.
 */
#ifndef LORAD_ERRORS_H
#define LORAD_ERRORS_H

#include <stddef.h>

enum lorad_err {
    LORAD_OK = 0,
    /* 400 */
    LORAD_E_INVALID_REQUEST = -1,
    /* 401, 403, 404, 405 */
    LORAD_E_UNAUTHORIZED = -2,
    LORAD_E_FORBIDDEN_NAME = -3,
    LORAD_E_NOT_FOUND = -4,
    LORAD_E_ADAPTER_NOT_FOUND = -5,
    LORAD_E_VERSION_NOT_FOUND = -6,
    LORAD_E_METHOD_NOT_ALLOWED = -7,
    /* 409 */
    LORAD_E_INCOMPATIBLE_CONFIG = -8,
    LORAD_E_UNKNOWN_MODULE = -9,
    LORAD_E_RANK_TOO_LARGE = -10,
    LORAD_E_SHAPE_MISMATCH = -11,
    LORAD_E_CHECKSUM_MISMATCH = -12,
    LORAD_E_SWAP_IN_PROGRESS = -13,
    LORAD_E_NO_HISTORY = -14,
    LORAD_E_NO_CANARY = -15,
    LORAD_E_CANARY_ACTIVE = -16,
    /* 413 */
    LORAD_E_BODY_TOO_LARGE = -17,
    /* 422 */
    LORAD_E_INVALID_ADAPTER = -18,
    LORAD_E_UNSUPPORTED_PEFT_TYPE = -19,
    LORAD_E_UNSUPPORTED_DTYPE = -20,
    LORAD_E_NON_FINITE_WEIGHTS = -21,
    LORAD_E_RANK_MISMATCH = -22,
    LORAD_E_UNKNOWN_TENSOR = -23,
    /* 503 */
    LORAD_E_NOT_READY = -24,
    LORAD_E_DRAINING = -25,
    LORAD_E_OVERLOADED = -26,
    /* 500: not in SPEC's table; an operator still needs a code. */
    LORAD_E_INTERNAL = -27, /* out of memory, I/O error, broken invariant */
    /* Start-up only (never sent over HTTP): bad model directory or config. */
    LORAD_E_INVALID_MODEL = -28,
    LORAD_E_INVALID_CONFIG = -29,
    /* 507: the state file could not be written; nothing serving changed. */
    LORAD_E_NOT_DURABLE = -30,
    /* 414 and 431: lorad's own bounds on the request line and the headers
     * (below libmicrohttpd's, whose own answers are HTML). */
    LORAD_E_URI_TOO_LONG = -31,
    LORAD_E_HEADERS_TOO_LARGE = -32,
    /* Slots (SPEC 1, 6): 404, 409, 409, 409. */
    LORAD_E_SLOT_NOT_FOUND = -33,
    LORAD_E_TOO_MANY_SLOTS = -34,
    LORAD_E_MEMORY_LIMIT = -35,
    LORAD_E_DEFAULT_SLOT = -36,
};

#define LORAD_ERROR_MSG_MAX 512

/* Detail of the last error. `code` is 0 while nothing failed. */
struct lorad_error {
    int code;
    char msg[LORAD_ERROR_MSG_MAX];
};

/* The SPEC.md snake_case name of `code` ("invalid_adapter"); "internal" for
 * anything unknown. Never NULL. */
const char *lorad_err_name(int code);

/* Records `code` and a printf-formatted message into `err` (which may be
 * NULL), truncating the message to fit. Returns `code`, so callers write
 * `return lorad_error_set(err, LORAD_E_INVALID_ADAPTER, "...", ...);`. */
int lorad_error_set(struct lorad_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err->msg with "prefix: " (used to add a file or layer name on the
 * way up). Does nothing when err is NULL. */
void lorad_error_prefix(struct lorad_error *err, const char *prefix);

#endif
