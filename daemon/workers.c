/* lorad — daemon/workers.c: the worker pool (see workers.h).
 *
 * Design: a bounded FIFO of items (mutex + condvar) fed by the loop thread.
 * A worker takes as many queued items as fit in max_batch_rows of their
 * row estimates (at least one), runs them with ops->run, reports a QSBR
 * quiescent state, and hands the batch to the loop thread through a
 * completion list and uv_async_send; the async callback drains the whole
 * list (sends coalesce) into ops->done. Idle workers are RCU-offline while
 * they wait. What a batch computes is the caller's: this file knows items
 * only by their link and row estimate. Worker i is named lorad-worker-i.
 *
 * Drain: until the drain deadline the pool runs as usual, so every queued
 * item is run. At the deadline the loop thread calls
 * workers_refuse_queued(): it marks the pool stopping (no batch starts any
 * more, new items are refused), takes every queued item out of the queue
 * and hands it to ops->refuse at once. A batch already running finishes
 * and goes to ops->done; its worker then exits. The loop thread never
 * waits for that: it polls workers_exited() and calls workers_stop()
 * (whose pthread_join then returns at once) only when no batch can be
 * running. ws->mu is held only to queue or take items, never during a
 * batch, so the loop thread never waits on a batch either.
 */
#include "workers.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <cblas.h>

#include "../lib/serving.h"
#include "clock.h"
#include "log.h"

struct worker {
    struct workers *ws;
    pthread_t tid;
    bool started;
    _Atomic bool alive;
    _Atomic bool busy;
    _Atomic uint64_t batch_start_ns;
    size_t batch_items; /* items of the batch being run (under ws->mu) */
};

struct workers {
    struct workers_config cfg;
    struct workers_ops ops;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct workers_item *head, *tail;
    _Atomic size_t qlen;
    bool stopping;
    struct worker *w;          /* [cfg.threads] */
    _Atomic uint64_t progress; /* batches run */
    /* completions */
    pthread_mutex_t done_mu;
    struct workers_item *done_head, *done_tail;
    uv_async_t async;
};

/* ---- completions (loop thread) ---- */

static void drain_done(struct workers *ws)
{
    struct workers_item *it, *next;
    pthread_mutex_lock(&ws->done_mu);
    it = ws->done_head;
    ws->done_head = ws->done_tail = NULL;
    pthread_mutex_unlock(&ws->done_mu);
    for (; it; it = next) {
        next = it->next;
        it->next = NULL;
        ws->ops.done(it, ws->ops.arg);
    }
}

static void on_async(uv_async_t *a)
{
    drain_done(a->data);
}

static void push_done(struct workers *ws, struct workers_item *first, struct workers_item *last)
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

/* ---- worker threads ---- */

/* Moves up to max_batch_rows (estimated) items, at least one, from the
 * queue into out[] (room for max_batch_rows); returns how many, 0 when the
 * queue is empty. Called with ws->mu held. */
static size_t take_items(struct workers *ws, struct workers_item **out)
{
    int budget = ws->cfg.max_batch_rows, rows = 0;
    size_t n = 0;
    while (ws->head && n < (size_t)budget) {
        struct workers_item *it = ws->head;
        if (n > 0 && rows + it->rows > budget)
            break;
        ws->head = it->next;
        if (!ws->head)
            ws->tail = NULL;
        it->next = NULL;
        out[n++] = it;
        rows += it->rows;
        atomic_fetch_sub(&ws->qlen, 1);
    }
    return n;
}

/* The next batch into items[]; 0 when stopping and the queue is empty.
 * Offline while it waits. */
static size_t next_batch(struct worker *w, struct workers_item **items)
{
    struct workers *ws = w->ws;
    size_t n;
    pthread_mutex_lock(&ws->mu);
    w->batch_items = 0; /* the last batch is handed back (push_done) */
    while (!ws->head && !ws->stopping) {
        serving_reader_offline();
        pthread_cond_wait(&ws->cv, &ws->mu);
        serving_reader_online();
    }
    n = take_items(ws, items); /* 0 only when stopping */
    w->batch_items = n;
    pthread_mutex_unlock(&ws->mu);
    return n;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct workers *ws = w->ws;
    struct workers_item **items = calloc((size_t)ws->cfg.max_batch_rows, sizeof(*items));
    void *ctx = NULL;
    sigset_t all;
    size_t n, i;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    serving_reader_register();
    if (!items)
        goto out;
    if (ws->ops.thread_start)
        ctx = ws->ops.thread_start(ws->ops.arg);
    while ((n = next_batch(w, items)) > 0) {
        atomic_store(&w->batch_start_ns, clock_now_ns());
        atomic_store(&w->busy, true);
        ws->ops.run(items, n, ctx, ws->ops.arg);
        serving_reader_quiescent();
        atomic_store(&w->busy, false);
        atomic_fetch_add(&ws->progress, 1);
        for (i = 0; i + 1 < n; i++)
            items[i]->next = items[i + 1];
        push_done(ws, items[0], items[n - 1]);
    }
    if (ws->ops.thread_end)
        ws->ops.thread_end(ctx, ws->ops.arg);
out:
    free(items);
    serving_reader_unregister();
    atomic_store(&w->alive, false);
    return NULL;
}

/* ---- the pool (loop thread) ---- */

/* "lorad-worker-N", N from 0 (SPEC 8); the kernel keeps 15 bytes, so from
 * worker 100 on the name is cut ("lorad-worker-10" for 100..109). */
static void name_worker(pthread_t tid, int i)
{
    char name[32];
    snprintf(name, sizeof(name), "lorad-worker-%d", i);
    name[15] = '\0';
    (void)pthread_setname_np(tid, name);
}

static void pool_free(struct workers *ws)
{
    pthread_mutex_destroy(&ws->mu);
    pthread_cond_destroy(&ws->cv);
    pthread_mutex_destroy(&ws->done_mu);
    free(ws->w);
    free(ws);
}

static struct workers *pool_new(const struct workers_config *c, const struct workers_ops *ops)
{
    struct workers *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return NULL;
    ws->w = calloc((size_t)c->threads, sizeof(*ws->w));
    if (!ws->w) {
        free(ws);
        return NULL;
    }
    ws->cfg = *c;
    ws->ops = *ops;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->cv, NULL);
    pthread_mutex_init(&ws->done_mu, NULL);
    return ws;
}

int workers_start(struct workers **out, uv_loop_t *loop, const struct workers_config *c,
                  const struct workers_ops *ops, struct lorad_error *err)
{
    struct workers *ws = pool_new(c, ops);
    int i;

    if (!ws)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    if (uv_async_init(loop, &ws->async, on_async) != 0) {
        pool_free(ws);
        return lorad_error_set(err, LORAD_E_INTERNAL, "uv_async_init failed");
    }
    ws->async.data = ws;
    *out = ws;
    openblas_set_num_threads(1);
    for (i = 0; i < c->threads; i++) {
        struct worker *w = &ws->w[i];
        w->ws = ws;
        atomic_store(&w->alive, true);
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            atomic_store(&w->alive, false);
            workers_stop(out);
            return lorad_error_set(err, LORAD_E_INTERNAL, "cannot start worker thread %d", i);
        }
        w->started = true;
        name_worker(w->tid, i);
    }
    LOG_I("event=workers_started workers=%d max_batch_rows=%d queue_max=%zu", c->threads,
          c->max_batch_rows, c->queue_max);
    return 0;
}

int workers_submit(struct workers *ws, struct workers_item *it)
{
    int rc = 0;
    if (!ws)
        return LORAD_E_INTERNAL;
    pthread_mutex_lock(&ws->mu);
    if (ws->stopping) {
        rc = LORAD_E_DRAINING;
    } else if (atomic_load(&ws->qlen) >= ws->cfg.queue_max) {
        rc = LORAD_E_OVERLOADED;
    } else {
        it->next = NULL;
        if (ws->tail)
            ws->tail->next = it;
        else
            ws->head = it;
        ws->tail = it;
        atomic_fetch_add(&ws->qlen, 1);
        pthread_cond_signal(&ws->cv);
    }
    pthread_mutex_unlock(&ws->mu);
    return rc;
}

size_t workers_queue_depth(const struct workers *ws)
{
    return ws ? atomic_load(&ws->qlen) : 0;
}

bool workers_healthy(const struct workers *ws)
{
    uint64_t now = clock_now_ns();
    int i;
    if (!ws)
        return false;
    for (i = 0; i < ws->cfg.threads; i++) {
        const struct worker *w = &ws->w[i];
        if (!atomic_load(&w->alive))
            return false;
        if (atomic_load(&w->busy) &&
            now - atomic_load(&w->batch_start_ns) > (uint64_t)WORKERS_STUCK_MS * 1000000ull)
            return false;
    }
    return true;
}

bool workers_exited(const struct workers *ws)
{
    int i;
    if (!ws)
        return true;
    for (i = 0; i < ws->cfg.threads; i++)
        if (atomic_load(&ws->w[i].alive))
            return false;
    return true;
}

/* Detaches the whole queue and marks the pool stopping; *running gets the
 * items in batches being run at that instant. */
static struct workers_item *detach_queue(struct workers *ws, size_t *running)
{
    struct workers_item *q;
    int i;
    pthread_mutex_lock(&ws->mu);
    ws->stopping = true;
    q = ws->head;
    ws->head = ws->tail = NULL;
    atomic_store(&ws->qlen, 0);
    *running = 0;
    for (i = 0; i < ws->cfg.threads; i++)
        *running += ws->w[i].batch_items;
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
    return q;
}

size_t workers_refuse_queued(struct workers *ws, size_t *running)
{
    struct workers_item *it, *next;
    size_t n = 0;
    *running = 0;
    if (!ws)
        return 0;
    for (it = detach_queue(ws, running); it; it = next) {
        next = it->next;
        it->next = NULL;
        ws->ops.refuse(it, ws->ops.arg);
        n++;
    }
    return n;
}

static void on_async_closed(uv_handle_t *h)
{
    pool_free(h->data);
}

void workers_stop(struct workers **wsp)
{
    struct workers *ws = *wsp;
    int i;
    if (!ws)
        return;
    pthread_mutex_lock(&ws->mu);
    ws->stopping = true;
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
    /* Returns at once when called as the drain does (queue empty, or
     * workers_exited()); only a start-up failure may wait for a batch. */
    for (i = 0; i < ws->cfg.threads; i++)
        if (ws->w[i].started)
            pthread_join(ws->w[i].tid, NULL);
    drain_done(ws); /* hand back what the workers finished last */
    *wsp = NULL;
    LOG_I("event=workers_stopped batches=%llu", (unsigned long long)atomic_load(&ws->progress));
    uv_close((uv_handle_t *)&ws->async, on_async_closed);
}
