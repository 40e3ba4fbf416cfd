/* lorad — daemon/infer.c: POST /infer, the glue between HTTP and the
 * batch engine (see infer.h).
 *
 * One request becomes one struct infer_job: the pool's item, the
 * lib/batch.h job, the request it answers. Its path, each step once:
 * infer_handle (loop thread: headers into the job, queued on the pool) ->
 * infer_run (worker thread: batch_run over the batch the pool formed) ->
 * infer_done (loop thread: metrics, the answer, free). A job the drain
 * deadline catches in the queue goes to infer_refuse instead.
 *
 * Ownership: the job owns its header copy and, until it is answered, the
 * answer batch_run left in it; http.c owns the request, which stays valid
 * (its connection suspended) until the job is answered.
 */
#include "infer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../lib/batch.h"
#include "clock.h"
#include "lorad.h"
#include "metrics.h"

struct infer_job {
    struct workers_item item; /* first member: what the pool sees */
    struct batch_job job;
    struct http_request *r;
    char *hdr_route_key; /* X-Lorad-Route-Key (copy) or NULL */
    char *hdr_slot;      /* X-Lorad-Slot (copy) or NULL */
};

/* One worker's context. */
struct infer_worker {
    struct batch_scratch *sc;
    struct batch_job *jobs[]; /* [max_batch_rows] */
};

/* The pool's team as lib/batch.h sees it. */
static void team_run(void *team, void (*fn)(void *arg, int me), void *arg)
{
    workers_team_run(team, fn, arg);
}

static void team_barrier(void *team)
{
    workers_team_barrier(team);
}

static struct infer_job *job_of(struct workers_item *it)
{
    return (struct infer_job *)it;
}

static void job_free(struct infer_job *j)
{
    free(j->hdr_route_key);
    free(j->hdr_slot);
    free(j->job.resp);
    free(j);
}

static enum metrics_variant label_of(const struct batch_job *b)
{
    if (b->code != 0)
        return METRICS_NONE;
    return b->variant == SERVING_CANARY ? METRICS_CANARY : METRICS_STABLE;
}

/* ---- worker thread ---- */

static void *infer_thread_start(void *arg)
{
    struct lorad_server *srv = arg;
    int rows = srv->cfg.max_batch_rows;
    struct infer_worker *w = calloc(1, sizeof(*w) + (size_t)rows * sizeof(w->jobs[0]));
    if (w)
        w->sc = batch_scratch_new_lanes(srv->model, rows, srv->scratch_rank,
                                        srv->cfg.workers > 0 ? srv->cfg.workers : 1);
    return w;
}

static void infer_thread_end(void *ctx, void *arg)
{
    struct infer_worker *w = ctx;
    (void)arg;
    if (w)
        batch_scratch_free(&w->sc);
    free(w);
}

static void count_forward(void *metrics, int rows)
{
    metrics_record_batch(metrics, rows);
}

static void count_snapshots(void *metrics, int snapshots)
{
    metrics_record_batch_snapshots(metrics, snapshots);
}

static void infer_run(struct workers_item **items, size_t n, void *ctx, struct workers_team *team,
                      void *arg)
{
    struct lorad_server *srv = arg;
    struct infer_worker *w = ctx;
    struct batch_team bt = {team ? workers_team_size(team) : 1, team_run, team_barrier, team};
    struct batch_params p = {
        .max_rows = atomic_load(&srv->max_rows_per_request),
        .on_forward = count_forward,
        .on_snapshots = count_snapshots,
        .arg = srv->metrics,
        .team = team ? &bt : NULL,
    };
    size_t i;

    if (!w) {
        for (i = 0; i < n; i++) {
            struct batch_job *b = &job_of(items[i])->job;
            b->code = lorad_error_set(&b->err, LORAD_E_INTERNAL, "out of memory in the worker");
        }
        return;
    }
    for (i = 0; i < n; i++)
        w->jobs[i] = &job_of(items[i])->job;
    batch_run(srv->model, srv->serving, &p, w->jobs, n, w->sc);
}

/* ---- loop thread ---- */

static void respond_now(struct http_request *r, int code, const char *fmt, const char *arg)
{
    metrics_record_infer(r->srv->metrics, NULL, METRICS_NONE, http_status_of(code),
                         clock_now_ns() - r->t_start_ns, 0);
    http_respond_error(r, code, fmt, arg);
}

static void infer_done(struct workers_item *it, void *arg)
{
    struct lorad_server *srv = arg;
    struct infer_job *j = job_of(it);
    struct batch_job *b = &j->job;
    struct http_request *r = j->r;
    char ver[24], nf[24];
    const char *h[12];
    int n = 0;

    metrics_record_infer(srv->metrics, b->slot_name, label_of(b),
                         b->code ? http_status_of(b->code) : 200, clock_now_ns() - r->t_start_ns,
                         b->nonfinite_rows);
    if (b->code != 0) {
        http_respond_error(r, b->code, "%s", b->err.msg);
        job_free(j);
        return;
    }
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)b->version);
    if (b->adapter[0]) {
        h[n++] = "X-Lorad-Adapter";
        h[n++] = b->adapter;
    }
    h[n++] = "X-Lorad-Version";
    h[n++] = ver;
    h[n++] = "X-Lorad-Variant";
    h[n++] = serving_variant_name(b->variant);
    h[n++] = "X-Lorad-Slot";
    h[n++] = b->slot_name;
    if (b->nonfinite_rows > 0) {
        snprintf(nf, sizeof(nf), "%d", b->nonfinite_rows);
        h[n++] = "X-Lorad-Nonfinite";
        h[n++] = nf;
    }
    h[n] = NULL;
    http_respond(r, 200, b->resp_type, b->resp, b->resp_len, h);
    b->resp = NULL; /* http.c took it */
    job_free(j);
}

/* A job that no worker took: 503 draining (the drain deadline passed while
 * it was queued). */
static void infer_refuse(struct workers_item *it, void *arg)
{
    struct infer_job *j = job_of(it);
    struct http_request *r = j->r;
    (void)arg;
    job_free(j);
    respond_now(r, LORAD_E_DRAINING, "%s",
                "lorad is shutting down: drain_timeout_ms passed before a worker took this "
                "request");
}

void infer_workers_ops(struct lorad_server *srv, struct workers_ops *ops)
{
    *ops = (struct workers_ops){
        .thread_start = infer_thread_start,
        .run = infer_run,
        .thread_end = infer_thread_end,
        .done = infer_done,
        .refuse = infer_refuse,
        .arg = srv,
    };
}

static bool is_octet_stream(const char *ct)
{
    static const char want[] = "application/octet-stream";
    size_t n = sizeof(want) - 1;
    while (ct && *ct == ' ')
        ct++;
    return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The request's headers into the job; 0, or the error answered. */
static int read_headers(struct http_request *r, struct infer_job *j)
{
    const char *pin = http_header(r, "X-Lorad-Variant");
    const char *rk = http_header(r, "X-Lorad-Route-Key");
    const char *slot = http_header(r, "X-Lorad-Slot");

    j->job.binary = is_octet_stream(http_header(r, "Content-Type"));
    j->job.pin = BATCH_PIN_NONE;
    if (pin) {
        if (strcasecmp(pin, "stable") == 0) {
            j->job.pin = SERVING_STABLE;
        } else if (strcasecmp(pin, "canary") == 0) {
            j->job.pin = SERVING_CANARY;
        } else {
            respond_now(r, LORAD_E_INVALID_REQUEST,
                        "X-Lorad-Variant must be \"stable\" or \"canary\", not \"%.64s\"", pin);
            return LORAD_E_INVALID_REQUEST;
        }
    }
    if (rk) {
        if (!(j->hdr_route_key = strdup(rk))) {
            respond_now(r, LORAD_E_INTERNAL, "%s", "out of memory");
            return LORAD_E_INTERNAL;
        }
        j->job.route_key = j->hdr_route_key;
        j->job.route_key_len = strlen(rk);
    }
    if (slot) {
        if (!(j->hdr_slot = strdup(slot))) {
            respond_now(r, LORAD_E_INTERNAL, "%s", "out of memory");
            return LORAD_E_INTERNAL;
        }
        j->job.slot = j->hdr_slot;
        j->job.slot_len = strlen(slot);
    }
    return 0;
}

static void refuse_submit(struct http_request *r, int rc)
{
    if (rc == LORAD_E_OVERLOADED)
        respond_now(r, rc, "%s", "the work queue is full (queue_max_requests); retry later");
    else if (rc == LORAD_E_DRAINING)
        respond_now(r, rc, "%s", "lorad is shutting down");
    else
        respond_now(r, rc, "%s", "the workers are not running");
}

void infer_handle(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct infer_job *j;
    int rc;

    if (atomic_load(&srv->run_state) == LORAD_STARTING || !srv->model) {
        respond_now(r, LORAD_E_NOT_READY, "%s", "lorad is starting; not serving yet");
        return;
    }
    if (!(j = calloc(1, sizeof(*j)))) {
        respond_now(r, LORAD_E_INTERNAL, "%s", "out of memory");
        return;
    }
    j->r = r;
    if (read_headers(r, j) != 0)
        goto fail;
    j->job.body = r->body;
    j->job.body_len = r->body_len;
    j->item.rows =
        inferbody_estimate_rows(r->body, r->body_len, j->job.binary, srv->model->in_features);
    if ((rc = workers_submit(srv->workers, &j->item)) != 0) {
        refuse_submit(r, rc);
        goto fail;
    }
    return;
fail:
    job_free(j);
}
