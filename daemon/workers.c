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
 * Team (threads > 1): `leading` marks a batch in progress; only one
 * worker leads at a time (it becomes leader under ws->mu, waking the
 * idle workers on the condvar so they stand by as helpers). The leader
 * posts team work by writing team_fn/team_arg, bumping team_gen, then
 * wake (the futex word helpers wait on, lib/team.h: spin, then sleep);
 * each helper takes a member index from team_next, runs fn and meets
 * the others at team_bar, whose last round ends the team run. A helper
 * reads wake BEFORE it looks at team_gen, so a post between the two still
 * wakes it. The leader cannot post the next work before every helper
 * joined the last (the barrier), so no helper misses one. Giving up the
 * lead bumps wake too, so helpers re-check the queue.
 *
 * Batch window: with requests in flight from clients that wait for their
 * answers, the rows of the batch just answered come back a moment later.
 * Starting the next batch on the first of them would split those clients
 * into two half batches that alternate, and a forward's cost hardly grows
 * with its rows (OpenBLAS packs the whole weight per call: on W1 a 16-row
 * forward takes 1.5x the time of a 2-row one), so half batches halve the
 * throughput. So when a batch ends its leader records the rows it expects
 * next: the rows it ran plus those still queued (capped at
 * max_batch_rows). A free worker takes the queue at once when it holds
 * that many rows; otherwise it waits for them on the condvar, at most a
 * quarter of the last batch's run time from when it became free (or from
 * the first queued item, if later), then takes what is there. One client
 * never waits (it expects one row and has it); a client that left costs
 * at most that quarter once, and the expectation follows what arrives.
 * Draining never waits.
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
#include <time.h>

#include <cblas.h>

#include "../lib/serving.h"
#include "../lib/team.h"
#include "clock.h"
#include "log.h"

struct worker {
    struct workers *ws;
    pthread_t tid;
    bool started;
    _Atomic bool alive;
    _Atomic bool busy;
    _Atomic uint64_t batch_start_ns;
    size_t batch_items;          /* items of the batch being run (under ws->mu) */
    unsigned seen_gen;           /* the last team_gen this worker ran or posted */
    struct workers_item **items; /* [max_batch_rows]: the batch it leads */
    bool online;                 /* its RCU reader state */
};

struct workers {
    struct workers_config cfg;
    struct workers_ops ops;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct workers_item *head, *tail;
    _Atomic size_t qlen;
    int qrows; /* the queued items' rows (under mu) */
    bool stopping;
    /* batch window (under mu): see the top */
    int expect_rows;           /* rows the next batch waits for */
    uint64_t window_ns;        /* the longest wait: a quarter of the last run */
    uint64_t free_ns;          /* when the last batch ended */
    uint64_t first_ns;         /* when the queue last became non-empty */
    struct worker *w;          /* [cfg.threads] */
    _Atomic uint64_t progress; /* batches run */
    /* team (threads > 1) */
    bool team;             /* cfg.threads > 1 */
    bool leading;          /* a batch is being run (under mu) */
    struct worker *leader; /* its worker, while leading */
    void (*team_fn)(void *, int);
    void *team_arg;
    _Atomic unsigned team_gen; /* team works posted */
    _Atomic int team_next;     /* the next helper's member index */
    _Atomic unsigned wake;     /* bumped on each post and end of lead */
    _Atomic int wake_sleepers;
    struct team_barrier team_bar;
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
        ws->qrows -= it->rows;
        atomic_fetch_sub(&ws->qlen, 1);
    }
    return n;
}

/* How long a free worker waits for the rows it expects before it takes
 * the queue (see the top); 0: take it now. Called with ws->mu held and the
 * queue non-empty. */
static uint64_t window_left_ns(const struct workers *ws)
{
    uint64_t start, now;
    if (ws->stopping || ws->qrows >= ws->expect_rows || ws->window_ns == 0)
        return 0;
    start = ws->first_ns > ws->free_ns ? ws->first_ns : ws->free_ns;
    now = clock_now_ns();
    return now - start >= ws->window_ns ? 0 : start + ws->window_ns - now;
}

/* The batch of `rows` rows that ran for run_ns ended (ws->mu held). */
static void window_note_end(struct workers *ws, int rows, uint64_t run_ns)
{
    int expect = rows + ws->qrows;
    ws->expect_rows = expect < ws->cfg.max_batch_rows ? expect : ws->cfg.max_batch_rows;
    ws->window_ns = run_ns / 4;
    ws->free_ns = clock_now_ns();
}

static void cond_wait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ns += (uint64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(cv, mu, &ts);
}

static void go_online(struct worker *w)
{
    if (!w->online)
        serving_reader_online();
    w->online = true;
}

static void go_offline(struct worker *w)
{
    if (w->online)
        serving_reader_offline();
    w->online = false;
}

enum work { WORK_LEAD, WORK_HELP, WORK_EXIT };

/* What this worker does next: lead the next batch (into items[], *n), help
 * the leader, or exit (stopping, queue empty, no batch running). Offline
 * while it waits. */
static enum work next_work(struct worker *w, struct workers_item **items, size_t *n)
{
    struct workers *ws = w->ws;
    pthread_mutex_lock(&ws->mu);
    w->batch_items = 0; /* the last batch is handed back (push_done) */
    for (;;) {
        unsigned wake = atomic_load(&ws->wake); /* before team_gen: see the top */
        if (ws->team && atomic_load(&ws->team_gen) != w->seen_gen) {
            pthread_mutex_unlock(&ws->mu);
            go_offline(w);
            return WORK_HELP;
        }
        if (ws->head && !ws->leading) {
            uint64_t wait = window_left_ns(ws);
            if (wait) {
                go_offline(w);
                cond_wait_ns(&ws->cv, &ws->mu, wait);
                continue;
            }
            *n = take_items(ws, items);
            w->batch_items = *n;
            if (ws->team) {
                ws->leading = true;
                ws->leader = w;
                pthread_cond_broadcast(&ws->cv); /* the idle stand by */
            }
            pthread_mutex_unlock(&ws->mu);
            go_online(w);
            return WORK_LEAD;
        }
        if (ws->stopping && !ws->head && !ws->leading) {
            pthread_mutex_unlock(&ws->mu);
            go_online(w);
            return WORK_EXIT;
        }
        go_offline(w);
        if (ws->leading) { /* stand by for team work, the end of the lead */
            pthread_mutex_unlock(&ws->mu);
            team_wait_change(&ws->wake, wake, &ws->wake_sleepers);
            pthread_mutex_lock(&ws->mu);
        } else {
            pthread_cond_wait(&ws->cv, &ws->mu);
        }
    }
}

/* A helper's part of the posted team work. */
static void help(struct worker *w)
{
    struct workers *ws = w->ws;
    w->seen_gen = atomic_load(&ws->team_gen);
    ws->team_fn(ws->team_arg, atomic_fetch_add(&ws->team_next, 1));
    team_barrier_wait(&ws->team_bar);
}

/* The batch of `rows` rows ended after run_ns: the window's bookkeeping,
 * and with a team the lead is given up. */
static void end_lead(struct workers *ws, int rows, uint64_t run_ns)
{
    pthread_mutex_lock(&ws->mu);
    window_note_end(ws, rows, run_ns);
    ws->leading = false;
    ws->leader = NULL;
    pthread_mutex_unlock(&ws->mu);
    if (!ws->team)
        return;
    atomic_fetch_add(&ws->wake, 1);
    team_wake(&ws->wake, &ws->wake_sleepers);
}

static void lead(struct worker *w, struct workers_item **items, size_t n, void *ctx)
{
    struct workers *ws = w->ws;
    uint64_t start = clock_now_ns();
    int rows = 0;
    for (size_t i = 0; i < n; i++)
        rows += items[i]->rows;
    atomic_store(&w->batch_start_ns, start);
    atomic_store(&w->busy, true);
    ws->ops.run(items, n, ctx, ws->team ? (struct workers_team *)ws : NULL, ws->ops.arg);
    serving_reader_quiescent();
    atomic_store(&w->busy, false);
    atomic_fetch_add(&ws->progress, 1);
    end_lead(ws, rows, clock_now_ns() - start);
    for (size_t i = 0; i + 1 < n; i++)
        items[i]->next = items[i + 1];
    push_done(ws, items[0], items[n - 1]);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct workers *ws = w->ws;
    struct workers_item **items = w->items;
    void *ctx = NULL;
    sigset_t all;
    size_t n = 0;
    enum work what;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    serving_reader_register();
    w->online = true;
    if (ws->ops.thread_start)
        ctx = ws->ops.thread_start(ws->ops.arg);
    while ((what = next_work(w, items, &n)) != WORK_EXIT) {
        if (what == WORK_HELP)
            help(w);
        else
            lead(w, items, n, ctx);
    }
    if (ws->ops.thread_end)
        ws->ops.thread_end(ctx, ws->ops.arg);
    serving_reader_unregister();
    atomic_store(&w->alive, false);
    return NULL;
}

/* ---- the team (leader thread) ---- */

int workers_team_size(const struct workers_team *t)
{
    return ((const struct workers *)t)->cfg.threads;
}

void workers_team_run(struct workers_team *t, void (*fn)(void *, int), void *fn_arg)
{
    struct workers *ws = (struct workers *)t;
    ws->team_fn = fn;
    ws->team_arg = fn_arg;
    atomic_store(&ws->team_next, 1);
    ws->leader->seen_gen = atomic_fetch_add(&ws->team_gen, 1) + 1;
    atomic_fetch_add(&ws->wake, 1);
    team_wake(&ws->wake, &ws->wake_sleepers);
    fn(fn_arg, 0);
    team_barrier_wait(&ws->team_bar);
}

void workers_team_barrier(struct workers_team *t)
{
    team_barrier_wait(&((struct workers *)t)->team_bar);
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
    for (int i = 0; i < ws->cfg.threads; i++)
        free(ws->w[i].items);
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&ws->done_mu, NULL);
    for (int i = 0; i < c->threads; i++)
        if (!(ws->w[i].items = calloc((size_t)c->max_batch_rows, sizeof(struct workers_item *)))) {
            pool_free(ws);
            return NULL;
        }
    ws->team = c->threads > 1;
    team_barrier_init(&ws->team_bar, c->threads);
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
        if (ws->tail) {
            ws->tail->next = it;
        } else {
            ws->head = it;
            ws->first_ns = clock_now_ns();
        }
        ws->tail = it;
        ws->qrows += it->rows;
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
    ws->qrows = 0;
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
