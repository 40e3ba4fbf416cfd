/* lorad — daemon/http.h: libmicrohttpd on the libuv loop: listeners,
 * request bodies, routing by a table the caller gives, authentication,
 * answers and the drain.
 *
 * A request is a struct http_request, allocated by http.c when its first
 * header arrives and freed by http.c when MHD reports it completed.
 * Handlers answer exactly once with http_respond*(), either before they
 * return (synchronous) or later from the loop thread (asynchronous: http.c
 * suspends the connection when a handler returns without answering and
 * resumes it when the answer comes).
 *
 * Threads: the loop thread, except http_status_of() (pure).
 */
#ifndef LORAD_HTTP_H
#define LORAD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "../lib/errors.h"

struct lorad_server;

enum http_plane { HTTP_PLANE_DATA = 1, HTTP_PLANE_CONTROL = 2, HTTP_PLANE_BOTH = 3 };

struct http_request {
    struct lorad_server *srv;
    enum http_plane plane; /* the listener it arrived on */
    const char *method;    /* owned by MHD */
    const char *url;       /* owned by MHD */
    char *body;            /* NUL-terminated copy of the body (malloc) */
    size_t body_len;
    uint64_t t_start_ns; /* clock_now_ns() at the first header */
    /* private to http.c below */
    struct http_internal *in;
};

typedef void (*http_handler)(struct http_request *r);

/* One path of the API. */
struct http_route {
    const char *path;
    const char *method; /* "POST" or "GET" (GET also answers HEAD) */
    int planes;         /* enum http_plane bits it is served on */
    bool auth;          /* needs the bearer token when one is configured */
    http_handler fn;
};

/* Request header value or NULL. Before answering. */
const char *http_header(struct http_request *r, const char *name);

/* Answers with `body` (ownership taken; freed by http.c) of `len` bytes.
 * `headers` is NULL or a NULL-terminated list of name, value pairs (copied). */
void http_respond(struct http_request *r, int status, const char *content_type, char *body,
                  size_t len, const char *const *headers);
/* Answers with the JSON object (consumed). */
void http_respond_json(struct http_request *r, int status, cJSON *obj, const char *const *headers);
/* Answers {"error": {"code", "message"}} with the status SPEC 6 gives
 * for `code`. */
void http_respond_error(struct http_request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The HTTP status of a lorad_err (400, 401, ... 503; 500 for internal). */
int http_status_of(int code);

/* Starts the listeners (config listen / control_listen, or the systemd
 * LISTEN_FDS sockets) on srv->loop, serving routes[0..nroutes) (the table
 * must outlive the listeners). Sets srv->http. */
int http_start(struct lorad_server *srv, const struct http_route *routes, size_t nroutes,
               struct lorad_error *err);
/* Stops accepting new connections; requests already received are answered,
 * new requests on open connections get 503 draining. */
void http_stop_accepting(struct lorad_server *srv);
/* Number of requests received in full and not yet answered. */
size_t http_inflight(const struct lorad_server *srv);

/* What became of the requests received in full whose connection ended
 * after http_stop_accepting(): answered (any answer but a draining refusal,
 * written in full), refused (503 draining, written in full), closed (the
 * connection ended before its answer was written). http_close() logs the
 * final tally (event=drain_end). */
struct http_drain_tally {
    size_t answered, refused, closed;
};
void http_get_drain_tally(const struct lorad_server *srv, struct http_drain_tally *t);

/* Closes everything (after the drain) and clears srv->http. */
void http_close(struct lorad_server *srv);

#endif
