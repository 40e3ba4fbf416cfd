/* lorad — daemon/workers.c: the worker pool that batches /infer requests.
 *
 * Design: a bounded FIFO of jobs (mutex + condvar) fed by the loop thread.
 * A worker takes as many queued jobs as fit in max_batch_rows (at least
 * one), parses their bodies, reads the serving view ONCE for the whole
 * batch, routes every job to stable or canary, and runs one forward pass
 * per variant over the concatenated rows (in chunks of max_batch_rows, all
 * with the same view), so a response never mixes two snapshots. It formats
 * every answer itself, reports a QSBR quiescent state, and hands the
 * finished jobs to the loop thread through a completion list and
 * uv_async_send; the async callback drains the whole list (sends coalesce).
 * Idle workers are RCU-offline while they wait.
 *
 * Drain: until the drain deadline the pool runs as usual, so every queued
 * job is answered. At the deadline the loop thread calls
 * workers_refuse_queued(): it marks the pool stopping (no batch starts any
 * more, new jobs are refused), takes every queued job out of the queue and
 * answers it 503 draining at once. A batch already running finishes and is
 * answered normally; its worker then exits. The loop thread never waits
 * for that: it polls workers_exited() and calls workers_stop() (whose
 * pthread_join then returns at once) only when no batch can be running.
 * ws->mu is held only to queue or take jobs, never during a batch, so the
 * loop thread never waits on a batch either.
 *
 * Threads: workers_start / workers_submit* / workers_refuse_queued /
 * workers_stop on the loop thread; the progress, health and exit probes on
 * any thread.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "../lib/forward.h"
#include "dataplane.h"
#include "lorad.h"

#define QUEUE_DEFAULT 4096
#define DEFAULT_RANK 64

struct worker {
    struct workers *ws;
    pthread_t tid;
    int idx;
    bool started;
    _Atomic bool alive;
    _Atomic bool busy;
    _Atomic uint64_t batch_start_ns;
    size_t batch_jobs; /* jobs of the batch being computed (under ws->mu) */
    struct forward_scratch *scratch;
    float *x, *y; /* group buffers [cap_rows][width] */
    size_t cap_rows;
};

struct workers {
    struct lorad_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct infer_job *head, *tail;
    _Atomic size_t qlen;
    size_t qmax;
    int base_rank; /* scratch rank: the profile's max_rank or 64 */
    bool stopping;
    int n;
    struct worker *w;
    _Atomic uint64_t progress;
    /* completions */
    pthread_mutex_t done_mu;
    struct infer_job *done_head, *done_tail;
    uv_async_t async;
};

/* ---- completions (loop thread) ---- */

static void drain_done(struct workers *ws)
{
    struct infer_job *j, *next;
    pthread_mutex_lock(&ws->done_mu);
    j = ws->done_head;
    ws->done_head = ws->done_tail = NULL;
    pthread_mutex_unlock(&ws->done_mu);
    for (; j; j = next) {
        next = j->next;
        j->next = NULL;
        infer_complete(ws->srv, j);
    }
}

static void on_async(uv_async_t *a)
{
    drain_done(a->data);
}

static void push_done(struct workers *ws, struct infer_job *first, struct infer_job *last)
{
    pthread_mutex_lock(&ws->done_mu);
    if (ws->done_tail)
        ws->done_tail->next = first;
    else
        ws->done_head = first;
    ws->done_tail = last;
    pthread_mutex_unlock(&ws->done_mu);
    uv_async_send(&ws->async);
}

/* ---- batch processing (worker thread) ---- */

static int ensure_buffers(struct worker *w, size_t rows)
{
    const struct model *m = w->ws->srv->model;
    float *nx, *ny;
    if (rows <= w->cap_rows)
        return 0;
    nx = realloc(w->x, rows * (size_t)m->in_features * sizeof(float));
    if (!nx)
        return LORAD_E_INTERNAL;
    w->x = nx;
    ny = realloc(w->y, rows * (size_t)m->out_features * sizeof(float));
    if (!ny)
        return LORAD_E_INTERNAL;
    w->y = ny;
    w->cap_rows = rows;
    return 0;
}

static int ensure_scratch(struct worker *w, const struct snapshot *snap)
{
    const struct lorad_server *srv = w->ws->srv;
    int rows = srv->cfg.max_batch_rows > 0 ? srv->cfg.max_batch_rows : 64;
    int rank = w->ws->base_rank;
    if (snap && snap->rank > rank)
        rank = snap->rank;
    if (w->scratch && (!snap || snap->rank <= forward_scratch_max_rank(w->scratch)))
        return 0;
    forward_scratch_free(&w->scratch);
    w->scratch = forward_scratch_new(srv->model, rows, rank);
    return w->scratch ? 0 : LORAD_E_INTERNAL;
}

/* Routes a parsed job under view v: a pin wins over a route key. */
static int route_job(struct lorad_server *srv, const struct serving_view *v, struct infer_job *j,
                     struct lorad_error *err)
{
    int pin = j->pin != INFER_PIN_NONE ? j->pin : j->hdr_pin;
    const char *key = j->route_key ? j->route_key : j->hdr_route_key;
    size_t keylen = j->route_key ? j->route_key_len : j->hdr_route_key_len;
    if (pin == SERVING_CANARY) {
        if (!v->canary)
            return lorad_error_set(err, LORAD_E_NO_CANARY,
                                   "variant \"canary\" requested but no canary is live");
        j->variant = SERVING_CANARY;
    } else if (pin == SERVING_STABLE) {
        j->variant = SERVING_STABLE;
    } else {
        j->variant = serving_route(srv->serving, v, key, keylen);
    }
    return 0;
}

static void fail_job(struct infer_job *j, int code, const char *msg)
{
    infer_format_error(j, code, msg);
    j->variant = METRICS_VARIANT_NONE;
}

/* Runs every job of `jobs` (n) routed to variant `var` as one group. */
static void run_group(struct worker *w, const struct serving_view *v, enum serving_variant var,
                      struct infer_job **jobs, size_t n)
{
    struct lorad_server *srv = w->ws->srv;
    const struct model *m = srv->model;
    const struct snapshot *snap = var == SERVING_CANARY ? v->canary : v->stable;
    size_t width = (size_t)m->in_features, outw = (size_t)m->out_features;
    size_t total = 0, off = 0, i;
    int chunk;

    for (i = 0; i < n; i++)
        if (jobs[i]->variant == var && jobs[i]->status == 0)
            total += (size_t)jobs[i]->rows;
    if (total == 0)
        return;
    if (ensure_buffers(w, total) != 0 || ensure_scratch(w, snap) != 0) {
        for (i = 0; i < n; i++)
            if (jobs[i]->variant == var && jobs[i]->status == 0)
                fail_job(jobs[i], LORAD_E_INTERNAL, "out of memory in the worker");
        return;
    }
    for (i = 0; i < n; i++) {
        struct infer_job *j = jobs[i];
        if (j->variant != var || j->status != 0)
            continue;
        memcpy(w->x + off * width, j->x, (size_t)j->rows * width * sizeof(float));
        off += (size_t)j->rows;
    }
    chunk = forward_scratch_max_rows(w->scratch);
    for (off = 0; off < total; off += (size_t)chunk) {
        int rows = (int)(total - off < (size_t)chunk ? total - off : (size_t)chunk);
        forward_run(m, snap, w->x + off * width, rows, w->y + off * outw, w->scratch);
        metrics_record_batch(srv, rows);
    }
    off = 0;
    for (i = 0; i < n; i++) {
        struct infer_job *j = jobs[i];
        if (j->variant != var || j->status != 0)
            continue;
        if (infer_format_ok(srv, j, snap, w->y + off * outw) != 0)
            fail_job(j, LORAD_E_INTERNAL, "out of memory formatting the answer");
        off += (size_t)j->rows;
    }
}

static void process_batch(struct worker *w, struct infer_job **jobs, size_t n)
{
    struct lorad_server *srv = w->ws->srv;
    const struct serving_view *v;
    struct lorad_error err = {0};
    size_t i;

    for (i = 0; i < n; i++) {
        struct infer_job *j = jobs[i];
        j->status = 0;
        if (infer_parse(srv, j, &err) != 0)
            fail_job(j, err.code, err.msg);
    }
    v = serving_read(srv->serving); /* once per batch */
    for (i = 0; i < n; i++) {
        if (jobs[i]->status == 0 && route_job(srv, v, jobs[i], &err) != 0)
            fail_job(jobs[i], err.code, err.msg);
    }
    run_group(w, v, SERVING_STABLE, jobs, n);
    run_group(w, v, SERVING_CANARY, jobs, n);
    for (i = 0; i < n; i++) {
        free(jobs[i]->x); /* the rows are no longer needed */
        jobs[i]->x = NULL;
    }
}

/* Takes up to max_batch_rows (estimated) jobs; NULL when stopping and empty.
 * Called with ws->mu held. */
static size_t take_jobs(struct workers *ws, struct infer_job **out, size_t max)
{
    int budget = ws->srv->cfg.max_batch_rows > 0 ? ws->srv->cfg.max_batch_rows : 64;
    int rows = 0;
    size_t n = 0;
    while (ws->head && n < max) {
        struct infer_job *j = ws->head;
        if (n > 0 && rows + j->est_rows > budget)
            break;
        ws->head = j->next;
        if (!ws->head)
            ws->tail = NULL;
        j->next = NULL;
        out[n++] = j;
        rows += j->est_rows;
        atomic_fetch_sub(&ws->qlen, 1);
    }
    return n;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct workers *ws = w->ws;
    size_t max = (size_t)(ws->srv->cfg.max_batch_rows > 0 ? ws->srv->cfg.max_batch_rows : 64);
    struct infer_job **jobs = calloc(max, sizeof(*jobs));
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    serving_reader_register();
    if (!jobs)
        goto out;
    for (;;) {
        size_t n, i;
        pthread_mutex_lock(&ws->mu);
        w->batch_jobs = 0; /* the last batch is answered (push_done) */
        while (!ws->head && !ws->stopping) {
            serving_reader_offline();
            pthread_cond_wait(&ws->cv, &ws->mu);
            serving_reader_online();
        }
        n = take_jobs(ws, jobs, max);
        w->batch_jobs = n;
        pthread_mutex_unlock(&ws->mu);
        if (n == 0)
            break; /* stopping and the queue is empty */
        atomic_store(&w->batch_start_ns, lorad_now_ns());
        atomic_store(&w->busy, true);
        process_batch(w, jobs, n);
        serving_reader_quiescent();
        atomic_store(&w->busy, false);
        atomic_fetch_add(&ws->progress, 1);
        for (i = 0; i + 1 < n; i++)
            jobs[i]->next = jobs[i + 1];
        push_done(ws, jobs[0], jobs[n - 1]);
    }
out:
    free(jobs);
    forward_scratch_free(&w->scratch);
    free(w->x);
    free(w->y);
    w->x = w->y = NULL;
    serving_reader_unregister();
    atomic_store(&w->alive, false);
    return NULL;
}

/* ---- public ---- */

int workers_start(struct lorad_server *srv, struct lorad_error *err)
{
    struct workers *ws;
    int i, n = srv->cfg.workers > 0 ? srv->cfg.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        n = 1;
    if (srv->workers)
        return lorad_error_set(err, LORAD_E_INTERNAL, "workers already started");
    if (!srv->model || !srv->serving)
        return lorad_error_set(err, LORAD_E_INTERNAL, "workers need the model and serving state");
    if (metrics_ensure(srv) != 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    ws = calloc(1, sizeof(*ws));
    if (!ws)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    ws->w = calloc((size_t)n, sizeof(*ws->w));
    if (!ws->w) {
        free(ws);
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    }
    ws->srv = srv;
    ws->n = n;
    ws->base_rank =
        srv->profile && srv->profile->max_rank > 0 ? srv->profile->max_rank : DEFAULT_RANK;
    ws->qmax =
        srv->cfg.queue_max_requests > 0 ? (size_t)srv->cfg.queue_max_requests : QUEUE_DEFAULT;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->cv, NULL);
    pthread_mutex_init(&ws->done_mu, NULL);
    if (uv_async_init(srv->loop, &ws->async, on_async) != 0) {
        free(ws->w);
        free(ws);
        return lorad_error_set(err, LORAD_E_INTERNAL, "uv_async_init failed");
    }
    ws->async.data = ws;
    srv->workers = ws;
    openblas_set_num_threads(1);
    for (i = 0; i < n; i++) {
        struct worker *w = &ws->w[i];
        w->ws = ws;
        w->idx = i;
        atomic_store(&w->alive, true);
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            atomic_store(&w->alive, false);
            workers_stop(srv);
            return lorad_error_set(err, LORAD_E_INTERNAL, "cannot start worker thread %d", i);
        }
        w->started = true;
    }
    LOG_I("event=workers_started workers=%d max_batch_rows=%d queue_max=%zu", n,
          srv->cfg.max_batch_rows, ws->qmax);
    return 0;
}

int workers_submit_job(struct lorad_server *srv, struct infer_job *j)
{
    struct workers *ws = srv->workers;
    int rc = 0;
    if (!ws)
        return LORAD_E_INTERNAL;
    pthread_mutex_lock(&ws->mu);
    if (ws->stopping) {
        rc = LORAD_E_DRAINING;
    } else if (atomic_load(&ws->qlen) >= ws->qmax) {
        rc = LORAD_E_OVERLOADED;
    } else {
        j->next = NULL;
        if (ws->tail)
            ws->tail->next = j;
        else
            ws->head = j;
        ws->tail = j;
        atomic_fetch_add(&ws->qlen, 1);
        pthread_cond_signal(&ws->cv);
    }
    pthread_mutex_unlock(&ws->mu);
    return rc;
}

int workers_submit(struct lorad_server *srv, struct http_request *r)
{
    struct infer_job *j;
    int rc;
    if (r->priv)
        return workers_submit_job(srv, r->priv);
    j = calloc(1, sizeof(*j));
    if (!j)
        return LORAD_E_INTERNAL;
    j->r = r;
    j->variant = METRICS_VARIANT_NONE;
    j->hdr_pin = j->pin = INFER_PIN_NONE;
    j->est_rows = 1;
    rc = workers_submit_job(srv, j);
    if (rc != 0)
        infer_job_free(&j);
    return rc;
}

size_t workers_queue_depth(const struct lorad_server *srv)
{
    return srv->workers ? atomic_load(&srv->workers->qlen) : 0;
}

int workers_count(const struct lorad_server *srv)
{
    return srv->workers ? srv->workers->n : 0;
}

uint64_t workers_progress(const struct lorad_server *srv)
{
    return srv->workers ? atomic_load(&srv->workers->progress) : 0;
}

bool workers_healthy(const struct lorad_server *srv, int stuck_ms)
{
    const struct workers *ws = srv->workers;
    uint64_t now = lorad_now_ns();
    int i;
    if (!ws)
        return false;
    for (i = 0; i < ws->n; i++) {
        const struct worker *w = &ws->w[i];
        if (!atomic_load(&w->alive))
            return false;
        if (atomic_load(&w->busy) &&
            now - atomic_load(&w->batch_start_ns) > (uint64_t)stuck_ms * 1000000ull)
            return false;
    }
    return true;
}

bool workers_exited(const struct lorad_server *srv)
{
    const struct workers *ws = srv->workers;
    int i;
    if (!ws)
        return true;
    for (i = 0; i < ws->n; i++)
        if (atomic_load(&ws->w[i].alive))
            return false;
    return true;
}

/* Detaches the whole queue and marks the pool stopping; *running gets the
 * jobs in batches being computed at that instant. */
static struct infer_job *detach_queue(struct workers *ws, size_t *running)
{
    struct infer_job *q;
    int i;
    pthread_mutex_lock(&ws->mu);
    ws->stopping = true;
    q = ws->head;
    ws->head = ws->tail = NULL;
    atomic_store(&ws->qlen, 0);
    *running = 0;
    for (i = 0; i < ws->n; i++)
        *running += ws->w[i].batch_jobs;
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
    return q;
}

size_t workers_refuse_queued(struct lorad_server *srv, size_t *running)
{
    struct workers *ws = srv->workers;
    struct infer_job *j, *next;
    size_t n = 0;
    *running = 0;
    if (!ws)
        return 0;
    for (j = detach_queue(ws, running); j; j = next) {
        next = j->next;
        j->next = NULL;
        infer_refuse_draining(j);
        n++;
    }
    return n;
}

static void on_async_closed(uv_handle_t *h)
{
    struct workers *ws = h->data;
    pthread_mutex_destroy(&ws->mu);
    pthread_cond_destroy(&ws->cv);
    pthread_mutex_destroy(&ws->done_mu);
    free(ws->w);
    free(ws);
}

void workers_stop(struct lorad_server *srv)
{
    struct workers *ws = srv->workers;
    int i;
    if (!ws)
        return;
    pthread_mutex_lock(&ws->mu);
    ws->stopping = true;
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
    /* Returns at once when called as the drain does (queue empty, or
     * workers_exited()); only a start-up failure may wait for a batch. */
    for (i = 0; i < ws->n; i++)
        if (ws->w[i].started)
            pthread_join(ws->w[i].tid, NULL);
    drain_done(ws); /* answer what the workers finished last */
    srv->workers = NULL;
    LOG_I("event=workers_stopped batches=%llu", (unsigned long long)atomic_load(&ws->progress));
    uv_close((uv_handle_t *)&ws->async, on_async_closed);
}
