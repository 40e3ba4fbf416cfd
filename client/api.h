/* lorad — client/api.h: a small HTTP client for lorad's API (SPEC.md 6),
 * shared by the operator tools (loradctl, later the fleet agent lorad-sync).
 *
 * This file contains two things a client of lorad needs and nothing of the
 * daemon: one libcurl connection to a lorad listener (a base URL, or a unix
 * socket path with the URL naming only the Host; an optional bearer token;
 * timeouts) that sends GET and POST-with-JSON requests and returns the HTTP
 * status, the body and the body parsed as JSON; and readers for the two
 * files an operator already has, lorad's config file (for the control and
 * data addresses and the token file it names) and the token file itself,
 * read with lorad's own rules (SPEC.md 5, 8, 9).
 *
 * Design and invariants:
 * - lib/ stays free of HTTP: this module sits beside it and uses only its
 *   error convention (lib/errors.h) and small-file reader (lib/fileio.h).
 * - A request either got an HTTP answer (api_request returns 0, whatever
 *   the status: 4xx and 5xx are answers too, the caller decides) or it did
 *   not (connection refused, socket missing, timeout, a broken answer):
 *   LORAD_E_NOT_READY, with libcurl's text in the caller's lorad_error. A
 *   client cannot tell a dead daemon from an unreachable one, and either
 *   way it is not ready for this client.
 * - No proxy: proxy environment variables are ignored, so a control request
 *   and its token never leave for a proxy the operator's shell happens to
 *   name. Only http:// and https:// URLs are followed; redirects are not.
 * - Answers are capped at API_BODY_MAX bytes.
 *
 * Errors: negative enum lorad_err (lib/errors.h), the human detail in the
 * caller's struct lorad_error. Ownership is stated per function.
 * Threads: api_global_init/api_global_cleanup once per process from its
 * main thread (libcurl's rule); a struct api_client is used by one thread
 * at a time; the file readers are reentrant.
 */
#ifndef LORAD_CLIENT_API_H
#define LORAD_CLIENT_API_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "../lib/errors.h"

/* Largest answer body accepted (bytes). */
#define API_BODY_MAX (256u << 20)
/* Timeout when api_conf.timeout_ms is 0. */
#define API_DEFAULT_TIMEOUT_MS 30000L
/* The URL used with a unix socket when none is given (it names the Host). */
#define API_SOCKET_URL "http://localhost"

/* ---- process setup ---- */

/* curl_global_init(CURL_GLOBAL_DEFAULT). 0, or LORAD_E_INTERNAL. */
int api_global_init(struct lorad_error *err);
void api_global_cleanup(void);

/* ---- one connection ---- */

struct api_conf {
    const char *url;    /* base URL "http://HOST:PORT" (a trailing '/' is
                         * dropped); NULL with `socket`: API_SOCKET_URL */
    const char *socket; /* unix socket path, or NULL for TCP */
    const char *token;  /* bearer token sent with every request, or NULL */
    long timeout_ms;    /* whole request; 0: API_DEFAULT_TIMEOUT_MS */
};

struct api_resp {
    long status; /* HTTP status of the answer */
    char *body;  /* the body, NUL-terminated (malloc'd; "" when empty) */
    size_t len;  /* body bytes, the NUL not counted */
    cJSON *json; /* the body parsed when it is one JSON value, else NULL */
};

struct api_client;

/* A client for conf (every string is copied). NULL on error: an invalid
 * conf (no url and no socket, a socket path too long for sun_path, a
 * token with characters a header cannot carry) is LORAD_E_INVALID_REQUEST,
 * out of memory LORAD_E_INTERNAL; err says which. The caller frees it with
 * api_client_free. */
struct api_client *api_client_new(const struct api_conf *conf, struct lorad_error *err);
/* Frees the client and its connection; sets *c to NULL. NULL is fine. */
void api_client_free(struct api_client **c);
/* "http://127.0.0.1:8080" or "unix:/run/lorad.sock" (for messages; owned
 * by the client). */
const char *api_client_where(const struct api_client *c);

/* Sends METHOD base-url+PATH with `len` bytes of `body` (NULL: none) of
 * content type `ctype` (NULL: none). 0 when an answer arrived: *out is
 * filled (free with api_resp_free). LORAD_E_NOT_READY when none did,
 * LORAD_E_BODY_TOO_LARGE when it passed API_BODY_MAX, LORAD_E_INTERNAL on
 * out of memory, LORAD_E_INVALID_REQUEST for a bad method or path (it
 * must start with '/'); *out is then empty and err says why. */
int api_request(struct api_client *c, const char *method, const char *path, const void *body,
                size_t len, const char *ctype, struct api_resp *out, struct lorad_error *err);
/* GET path. */
int api_get(struct api_client *c, const char *path, struct api_resp *out, struct lorad_error *err);
/* POST path with `json` printed as the body (application/json). */
int api_post_json(struct api_client *c, const char *path, const cJSON *json, struct api_resp *out,
                  struct lorad_error *err);
/* Frees what *r holds and empties it. */
void api_resp_free(struct api_resp *r);

/* The answer's {"error": {"code", "message"}} strings, or NULL when the
 * body has no such member (pointers into r->json). */
const char *api_resp_error_code(const struct api_resp *r);
const char *api_resp_error_message(const struct api_resp *r);

/* ---- lorad's files ---- */

/* Where a lorad instance answers, from its config file (all malloc'd;
 * free with api_target_free). Exactly one of url/socket is set per plane. */
struct api_target {
    char *control_url, *control_socket; /* control_listen, or listen when it is null */
    char *data_url, *data_socket;       /* listen (where /infer is served) */
    char *token_file;                   /* auth_token_file, or NULL */
};

/* Reads lorad's config file at `path` (JSON with // and block comments, as
 * lorad reads it) for the keys "listen" (default "127.0.0.1:8080"),
 * "control_listen" and "auth_token_file"; other keys are not looked at
 * (lorad --check-config validates them). Fills *t (freed first by the
 * caller's api_target_free, or zeroed). LORAD_E_INVALID_CONFIG with the
 * reason (unreadable, not a JSON object, one of the keys given twice or
 * of the wrong type, an address that is not HOST:PORT or unix:/path),
 * LORAD_E_INTERNAL on out of memory. */
int api_config_read(const char *path, struct api_target *t, struct lorad_error *err);
void api_target_free(struct api_target *t);

/* A lorad listen address as a client reaches it: "unix:/p" -> *socket "/p"
 * (and *url NULL); "HOST:PORT", "[V6]:PORT" -> *url "http://HOST:PORT",
 * with the wildcard hosts lorad accepts ("", "0.0.0.0", "[::]") replaced
 * by the loopback address of their family. malloc'd. 0, or
 * LORAD_E_INVALID_CONFIG naming `key` and the address. */
int api_address_parse(const char *key, const char *addr, char **url, char **socket,
                      struct lorad_error *err);

/* Reads a bearer token file as lorad does: refused when world-readable or
 * empty, one trailing newline (and a \r before it) ignored, the rest
 * printable ASCII without spaces. *token is malloc'd. 0, or
 * LORAD_E_INVALID_CONFIG with the reason. */
int api_token_read(const char *path, char **token, struct lorad_error *err);

/* Appends src[0..n) to the NUL-terminated buffer *data (*len bytes used,
 * *cap allocated; all zero for an empty one), doubling it from 4 KiB as
 * needed: the body readers of libcurl's write callbacks (api.c, etcd.c).
 * 0, or -1 on out of memory with the buffer unchanged. The caller bounds
 * the total and frees *data. */
int api_buf_append(char **data, size_t *len, size_t *cap, const char *src, size_t n);

#endif
