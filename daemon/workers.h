/* lorad — daemon/workers.h: a pool of worker threads fed by a bounded FIFO
 * of opaque items, driven by callbacks, as libuv's threadpool is.
 *
 * The caller embeds a struct workers_item in its own item and submits it
 * from the loop thread. A worker takes a batch of queued items (as many as
 * fit in max_batch_rows of their `rows` estimates, at least one), hands it
 * to ops->run on its own thread, and then hands each item back to
 * ops->done on the loop thread. At the drain deadline, items still queued
 * go to ops->refuse instead.
 *
 * Team: with more than one thread, ONE batch runs at a time and every
 * worker works on it. The worker that takes a batch leads it (ops->run on
 * its thread); the others are its team: the leader hands them work with
 * workers_team_run (fn on every member, the leader as member 0) and they
 * meet at workers_team_barrier inside it. When the leader hands the batch
 * back, any worker may lead the next one (the leader itself first when
 * items wait), so no worker sleeps while items wait.
 *
 * Worker threads are registered RCU readers (lib/serving.h): the leader is
 * online while it runs a batch, a quiescent state after each; a worker
 * that helps or idles is offline (what it reads, the leader's read-side
 * section keeps alive). They block every signal and run OpenBLAS
 * single-threaded.
 *
 * Ownership: the caller owns its items; from workers_submit() until
 * ops->done or ops->refuse the pool holds them. workers_start allocates the
 * pool; workers_stop frees it (its memory in a loop close callback).
 *
 * Threads: workers_start / workers_submit / workers_refuse_queued /
 * workers_stop on the loop thread; the depth, health and exit probes on
 * any thread.
 */
#ifndef LORAD_WORKERS_H
#define LORAD_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../lib/errors.h"

/* A worker holding one batch longer than this is stuck (/healthz, the
 * systemd watchdog). */
#define WORKERS_STUCK_MS 10000

struct workers_item {
    struct workers_item *next; /* the pool's link */
    int rows;                  /* the caller's row estimate for batching, >= 1 */
};

/* The team of the batch being run (opaque). */
struct workers_team;

struct workers_ops {
    /* Worker thread, when it starts: its context for run (may be NULL). */
    void *(*thread_start)(void *arg);
    /* Worker thread: runs items[0..n), n >= 1, with the team (NULL with one
     * thread). */
    void (*run)(struct workers_item **items, size_t n, void *ctx, struct workers_team *team,
                void *arg);
    /* Worker thread, when it exits: frees ctx. */
    void (*thread_end)(void *ctx, void *arg);
    /* Loop thread: the item was run. */
    void (*done)(struct workers_item *item, void *arg);
    /* Loop thread: the drain deadline passed before a worker took the item. */
    void (*refuse)(struct workers_item *item, void *arg);
    void *arg;
};

struct workers_config {
    int threads;        /* >= 1 */
    int max_batch_rows; /* a batch's row budget, >= 1 */
    size_t queue_max;   /* items queued before workers_submit refuses, >= 1 */
};

struct workers;

/* Starts the threads on `loop` (for the completion async). The ops table is
 * copied. 0 or LORAD_E_INTERNAL. */
int workers_start(struct workers **out, uv_loop_t *loop, const struct workers_config *c,
                  const struct workers_ops *ops, struct lorad_error *err);
/* Queues an item. LORAD_E_OVERLOADED when the queue is full,
 * LORAD_E_DRAINING once stopping, LORAD_E_INTERNAL without a pool. */
int workers_submit(struct workers *ws, struct workers_item *it);
/* Items waiting in the queue (approximate); 0 without a pool. */
size_t workers_queue_depth(const struct workers *ws);
/* Every worker alive and none stuck (WORKERS_STUCK_MS); false without a
 * pool. */
bool workers_healthy(const struct workers *ws);
/* The drain deadline passed: no batch starts any more and new items are
 * refused (LORAD_E_DRAINING); every queued item goes to ops->refuse now.
 * Returns how many; *running gets the items in batches being run, which
 * finish and go to ops->done. Never waits. */
size_t workers_refuse_queued(struct workers *ws, size_t *running);
/* True when no worker thread runs any more (after workers_refuse_queued,
 * once the running batches ended), or there is no pool. */
bool workers_exited(const struct workers *ws);
/* Members of the team (every worker thread). */
int workers_team_size(const struct workers_team *t);
/* Leader, inside ops->run: fn(fn_arg, me) on every member me (this thread
 * is 0); returns when every member returned. */
void workers_team_run(struct workers_team *t, void (*fn)(void *fn_arg, int me), void *fn_arg);
/* Inside a fn of workers_team_run: returns once every member called it. */
void workers_team_barrier(struct workers_team *t);

/* Stops and joins the workers once the queue is empty, hands what they
 * finished last to ops->done, and frees the pool. Sets *ws to NULL. */
void workers_stop(struct workers **ws);

#endif
