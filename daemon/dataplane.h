/* lorad — daemon/dataplane.h: private contracts of the data plane (http.c,
 * workers.c, infer.c, metrics.c) beyond daemon/lorad.h.
 *
 * An /infer request becomes a `struct infer_job`: infer_handle() (loop
 * thread) allocates it and copies what only the loop thread may read (the
 * route-key and variant headers, the content type); workers_submit() queues
 * it; a worker parses the body (infer_parse), routes it, runs the forward
 * pass for its rows and formats the answer (infer_format_ok or
 * infer_format_error) into job->resp_*; the loop thread then records
 * metrics, answers with http_respond() (which takes resp_body) and frees the
 * job (infer_job_free).
 *
 * Ownership: the job owns every pointer in it; infer_job_free frees them.
 * job->r belongs to http.c and stays valid until the job is answered (the
 * connection is suspended meanwhile).
 *
 * The drain (main.c) also uses this header: past drain_timeout_ms it calls
 * workers_refuse_queued(), which answers every job still queued with
 * infer_refuse_draining(), waits without blocking for workers_exited(), and
 * reads http_get_drain_tally() for its log line.
 */
#ifndef LORAD_DATAPLANE_H
#define LORAD_DATAPLANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lorad.h"

/* The metrics label for an /infer answer that no variant produced (it
 * failed before routing: bad request, overloaded, ...). */
#define METRICS_VARIANT_NONE ((enum serving_variant)2)

#define INFER_PIN_NONE (-1)

struct infer_job {
    struct infer_job *next; /* queue / completion list link */
    struct http_request *r;
    /* copied on the loop thread */
    bool binary;         /* Content-Type: application/octet-stream */
    char *hdr_route_key; /* X-Lorad-Route-Key or NULL */
    size_t hdr_route_key_len;
    int hdr_pin;  /* X-Lorad-Variant: INFER_PIN_NONE or variant */
    int est_rows; /* row estimate for batching (>= 1) */
    /* parsed in the worker */
    float *x; /* [rows][in_features] */
    int rows;
    bool multi_rows; /* "inputs" (answer "outputs") */
    char *route_key; /* "route_key" of the JSON body, or NULL */
    size_t route_key_len;
    int pin; /* "variant" of the JSON body or INFER_PIN_NONE */
    /* result, filled in the worker */
    enum serving_variant variant; /* METRICS_VARIANT_NONE before routing */
    int status;
    const char *resp_ctype; /* static string */
    char *resp_body;        /* malloc'd; handed to http_respond */
    size_t resp_len;
    char adapter[SNAPSHOT_NAME_MAX + 1]; /* "" = base model */
    uint64_t version;
    int nonfinite_rows;
};

/* ---- infer.c ---- */

void infer_job_free(struct infer_job **j);
/* Parses r->body into j->x / rows / route_key / pin (worker thread).
 * LORAD_E_INVALID_REQUEST with a precise message. */
int infer_parse(const struct lorad_server *srv, struct infer_job *j, struct lorad_error *err);
/* Formats the answer for rows y[rows][out_features] produced by `snap`
 * (NULL = base) as variant j->variant. 0 or LORAD_E_INTERNAL. */
int infer_format_ok(const struct lorad_server *srv, struct infer_job *j,
                    const struct snapshot *snap, const float *y);
/* Formats an error answer (status from http_status_of). Never fails (falls
 * back to a static body). */
void infer_format_error(struct infer_job *j, int code, const char *msg);
/* Loop thread: answers the finished job (metrics + http_respond) and frees
 * it. */
void infer_complete(struct lorad_server *srv, struct infer_job *j);
/* Loop thread: answers a job that no worker took 503 draining (the drain
 * deadline passed while it was queued) and frees it. */
void infer_refuse_draining(struct infer_job *j);

/* ---- workers.c ---- */

/* Queues a job (loop thread). LORAD_E_OVERLOADED when the queue is full,
 * LORAD_E_DRAINING after workers_stop began, LORAD_E_INTERNAL when the
 * workers were never started. On success the queue owns the job. */
int workers_submit_job(struct lorad_server *srv, struct infer_job *j);
/* Jobs waiting in the queue (any thread; approximate). */
size_t workers_queue_depth(const struct lorad_server *srv);
/* Number of worker threads. */
int workers_count(const struct lorad_server *srv);
/* The drain deadline passed (loop thread): no batch starts any more and
 * new jobs are refused (LORAD_E_DRAINING); every queued job is answered 503
 * draining now. Returns how many; *running gets the jobs in batches being
 * computed, which finish and are answered normally. Never waits. */
size_t workers_refuse_queued(struct lorad_server *srv, size_t *running);
/* True when no worker thread runs any more (after workers_refuse_queued,
 * once the running batches ended), or there is no pool. Any thread. */
bool workers_exited(const struct lorad_server *srv);

/* ---- http.c ---- */

/* {"error": {"code": name, "message": msg}} as a malloc'd string, or NULL
 * on out-of-memory. Any thread. */
char *http_error_body(int code, const char *msg, size_t *len);
/* True once http_stop_accepting() ran. */
bool http_draining(const struct lorad_server *srv);
/* What became of the requests received in full whose connection ended
 * after http_stop_accepting(): answered (any answer but a draining refusal,
 * written in full), refused (503 draining, written in full), closed (the
 * connection ended before its answer was written). http_close() logs the
 * final tally (event=drain_end). */
struct http_drain_tally {
    size_t answered, refused, closed;
};
void http_get_drain_tally(const struct lorad_server *srv, struct http_drain_tally *t);

/* ---- metrics.c ---- */

/* Creates srv->metrics when it is NULL (start-up, before workers run). */
int metrics_ensure(struct lorad_server *srv);

#endif
