/* lorad — daemon/lorad.h: the daemon's state and the contracts between its
 * modules.
 *
 * Threads:
 *  - the loop thread runs libuv: libmicrohttpd in external-epoll mode
 *    (http.c), control handlers (control.c), signals, timers, systemd
 *    notifications (systemd.c). It never blocks: no file I/O, no math.
 *  - worker threads (workers.c) parse /infer bodies, run the forward pass
 *    in batches and format the answers; they hand results back through a
 *    queue + uv_async_send.
 *  - libuv's threadpool runs staging (adapter_stage), state-file writes and
 *    /adapters scans (uv_queue_work), their after-callbacks on the loop.
 *
 * Everything in struct lorad_server is owned by the loop thread unless a
 * field's comment says otherwise. The only state shared with workers is the
 * immutable model, the RCU-published serving view (lib/serving.h) and the
 * atomics marked below.
 */
#ifndef LORAD_DAEMON_H
#define LORAD_DAEMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "../lib/adapter.h"
#include "../lib/errors.h"
#include "../lib/model.h"
#include "../lib/serving.h"

#define LORAD_VERSION "0.1.0"

/* ---- config.c: SPEC.md 5 ---- */

struct lorad_config {
    char *listen;            /* "HOST:PORT" or "unix:/path" */
    char *control_listen;    /* NULL: control plane on `listen` */
    char *model_dir;
    char *adapter_dir;
    char *initial_adapter;   /* NULL: start on the base model */
    char *state_file;        /* NULL: no persistence */
    int workers;             /* 0 = one per CPU (resolved at start) */
    int max_batch_rows;
    int history;
    int max_rank;            /* 0 = from the first adapter */
    char **target_modules;   /* NULL = from the first adapter */
    size_t n_target_modules;
    char *auth_token_file;   /* NULL: control plane unauthenticated */
    size_t max_body_bytes;
    int max_rows_per_request;
    int drain_timeout_ms;
    int shutdown_delay_ms;
    char *blas_coretype;     /* "auto", "keep" or a core name */
    int log_level;           /* LOG_ERR..LOG_DEBUG (syslog numbers) */
    /* lorad additions (documented in README): */
    int max_connections;     /* concurrent HTTP connections per listener */
    int connection_timeout_s;/* idle/slow connection timeout */
    int queue_max_requests;  /* /infer requests queued before 503 overloaded */
};

/* Sets every field to its SPEC default (strings NULL or default copies). */
void config_defaults(struct lorad_config *c);
/* Parses the JSON file at `path` over the defaults already in *c. Unknown
 * keys and wrong types are LORAD_E_INVALID_CONFIG naming the key. */
int config_load_file(struct lorad_config *c, const char *path, struct lorad_error *err);
/* Checks cross-field rules (ranges, blas_coretype names, ...). */
int config_validate(const struct lorad_config *c, struct lorad_error *err);
void config_free(struct lorad_config *c);

/* ---- log.c: SPEC.md 8 logging ---- */

/* One line per event on stderr, "key=value" style, with a "<N>" syslog
 * priority prefix when JOURNAL_STREAM is set. Any thread. */
void log_set_level(int level);
void log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_E(...) log_emit(3, __VA_ARGS__)
#define LOG_W(...) log_emit(4, __VA_ARGS__)
#define LOG_I(...) log_emit(6, __VA_ARGS__)
#define LOG_D(...) log_emit(7, __VA_ARGS__)

/* ---- http.c: libmicrohttpd on the libuv loop ---- */

enum http_plane { HTTP_PLANE_DATA = 1, HTTP_PLANE_CONTROL = 2, HTTP_PLANE_BOTH = 3 };

/* One HTTP request, from its first header to its answer. Allocated by
 * http.c when the request starts, freed by http.c when MHD reports it
 * completed. Handlers answer exactly once with http_respond*(), either
 * before they return (synchronous) or later from the loop thread
 * (asynchronous: http.c suspends the connection when a handler returns
 * without answering and resumes it when the answer comes). */
struct http_request {
    struct lorad_server *srv;
    enum http_plane plane;   /* the listener it arrived on */
    const char *method;      /* owned by MHD */
    const char *url;         /* owned by MHD */
    char *body;              /* NUL-terminated copy of the body (malloc) */
    size_t body_len;
    uint64_t t_start_ns;     /* CLOCK_MONOTONIC at the first header */
    void *priv;              /* for the handler */
    /* private to http.c below */
    struct http_internal *in;
};

/* Request header value or NULL. Loop thread, before answering. */
const char *http_header(struct http_request *r, const char *name);

/* Answers with `body` (ownership taken; freed by http.c) of `len` bytes.
 * `headers` is NULL or a NULL-terminated list of name, value pairs (copied).
 * Loop thread only. */
void http_respond(struct http_request *r, int status, const char *content_type, char *body,
                  size_t len, const char *const *headers);
/* Answers with the JSON object (consumed). */
void http_respond_json(struct http_request *r, int status, cJSON *obj,
                       const char *const *headers);
/* Answers {"error": {"code", "message"}} with the status SPEC 6 gives
 * for `code`. */
void http_respond_error(struct http_request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The HTTP status of a lorad_err (400, 401, ... 503; 500 for internal). */
int http_status_of(int code);

/* Starts the listeners (config listen / control_listen, or the systemd
 * LISTEN_FDS sockets) on srv->loop. */
int http_start(struct lorad_server *srv, struct lorad_error *err);
/* Stops accepting new connections; requests already received are answered,
 * new requests on open connections get 503 draining. */
void http_stop_accepting(struct lorad_server *srv);
/* Number of requests received and not yet answered. */
size_t http_inflight(const struct lorad_server *srv);
/* Closes everything (after the drain). */
void http_close(struct lorad_server *srv);

/* ---- workers.c and infer.c: the data plane ---- */

/* Starts srv->cfg.workers threads (registered RCU readers, OpenBLAS single
 * threaded, signals blocked). */
int workers_start(struct lorad_server *srv, struct lorad_error *err);
/* Queues an /infer request (the connection stays suspended until the answer);
 * LORAD_E_OVERLOADED when the queue is full. Loop thread. */
int workers_submit(struct lorad_server *srv, struct http_request *r);
/* Total progress counter (batches done) for the watchdog; and whether
 * every worker is alive and not stuck (a worker holding a batch for more
 * than `stuck_ms` counts as stuck). Any thread. */
uint64_t workers_progress(const struct lorad_server *srv);
bool workers_healthy(const struct lorad_server *srv, int stuck_ms);
/* Stops and joins the workers after the queue is empty. */
void workers_stop(struct lorad_server *srv);

/* The /infer handler (http.c routes here). */
void infer_handle(struct http_request *r);

/* ---- control.c: the control plane ---- */

void control_swap(struct http_request *r);
void control_rollback(struct http_request *r);
void control_canary(struct http_request *r);
void control_promote(struct http_request *r);
void control_status(struct http_request *r);
void control_adapters(struct http_request *r);
void control_healthz(struct http_request *r);
void control_readyz(struct http_request *r);
void control_metrics(struct http_request *r);

/* ---- metrics.c ---- */

/* Allocates srv->metrics (start-up, before workers_start; http_start and
 * workers_start also create it when still NULL). 0 or LORAD_E_INTERNAL.
 * metrics_free() frees it and sets it to NULL (after workers_stop). */
int metrics_init(struct lorad_server *srv);
void metrics_free(struct lorad_server *srv);

/* Per-variant evidence (SPEC 6 /status "requests") and /metrics counters;
 * updated on the loop thread when an answer is sent. */
void metrics_record_infer(struct lorad_server *srv, enum serving_variant v, int status,
                          uint64_t latency_ns, int rows, int nonfinite_rows);
void metrics_record_batch(struct lorad_server *srv, int rows); /* any thread */
/* Control-plane events (loop thread): a /swap that committed (ok) or not,
 * a rollback, any commit's generation change. */
void metrics_record_swap(struct lorad_server *srv, bool ok, double stage_ms, double commit_us);
void metrics_record_rollback(struct lorad_server *srv, double commit_us);
/* Resets the per-variant evidence windows (a canary begins). */
void metrics_reset_evidence(struct lorad_server *srv);
/* {"stable": {...}, "canary": {...}} of /status. */
cJSON *metrics_evidence_json(const struct lorad_server *srv);
/* Prometheus text (malloc'd). */
char *metrics_render(const struct lorad_server *srv, size_t *len);

/* ---- systemd.c: SPEC.md 8 ---- */

/* Sends one NOTIFY_SOCKET datagram ("READY=1\nSTATUS=..."); no-op when
 * NOTIFY_SOCKET is unset. Any thread. */
void systemd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Watchdog interval from WATCHDOG_USEC/WATCHDOG_PID in microseconds, or 0. */
uint64_t systemd_watchdog_usec(void);
/* Sockets passed by systemd (LISTEN_FDS, LISTEN_PID): their count; fds start
 * at 3. Unsets the variables. */
int systemd_listen_fds(void);

/* ---- the daemon's state ---- */

enum lorad_run_state { LORAD_STARTING, LORAD_SERVING, LORAD_DRAINING };

struct metrics;   /* metrics.c */
struct workers;   /* workers.c */
struct http;      /* http.c */
struct control;   /* control.c: swap/state-write bookkeeping */

struct lorad_server {
    struct lorad_config cfg;
    char *config_path;             /* for SIGHUP */
    uv_loop_t *loop;
    struct model *model;           /* immutable after start */
    int adapter_dirfd;             /* adapter_dir opened O_DIRECTORY */
    struct serving *serving;       /* writer: loop thread; readers: workers */
    struct profile *profile; /* NULL until known; replaced, never mutated */
    _Atomic int run_state;         /* enum lorad_run_state; workers read it */
    int restored;                  /* -1 null, 0 false, 1 true (/status) */
    uint64_t started_ns;           /* CLOCK_MONOTONIC at start */
    char *auth_token;              /* NULL: no auth; re-read on SIGHUP */
    struct workers *workers;
    struct http *http;
    struct metrics *metrics;
    struct control *control;
};

/* Monotonic nanoseconds. */
uint64_t lorad_now_ns(void);

#endif
