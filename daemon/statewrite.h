/* lorad — daemon/statewrite.h: every control-plane commit, durable before
 * visible (SPEC.md 8), and the synchronous state write of start-up and
 * shutdown.
 *
 * A commit is queued with statewrite_commit(); commits run one at a time,
 * in the order they were queued. When one reaches the head of the queue,
 * on the loop thread: its `change` computes the change held pending
 * (serving_hold, lib/serving.h: nothing visible yet) and the new state
 * file is rendered; the temp file is written and fsynced in libuv's
 * threadpool; back on the loop the pointer flips (serving_pending_publish);
 * the rename and the directory fsync run in the threadpool; then `done`
 * answers. A failed stage write drops the change unpublished and `done`
 * gets LORAD_E_NOT_DURABLE (507) naming the path and the errno text; a
 * failed rename undoes the flip before `done` gets it. Without a
 * state_file the change is published and answered at once.
 *
 * /status `state_file` {"path", "ok", "error"} and the metric
 * lorad_state_write_failures_total report the writes: a failure sets ok
 * false with its message, the next good write clears it.
 *
 * Ownership: statewrite_init allocates srv->statewrite; statewrite_free
 * frees it (only when statewrite_idle). Threads: the loop thread (or
 * start-up / shutdown, when no loop runs).
 */
#ifndef LORAD_STATEWRITE_H
#define LORAD_STATEWRITE_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "../lib/adapter.h"
#include "../lib/errors.h"
#include "../lib/serving.h"

struct lorad_server;

/* One commit (copied by statewrite_commit). */
struct statewrite_commit {
    const char *what; /* "swap", "rollback", ... (log lines) */
    void *arg;        /* the caller's, passed to both callbacks */
    /* At the head of the queue: one serving change after serving_hold()
     * (the callee calls it). 0 with the change pending, or an error with
     * nothing changed. *profile starts as srv->profile; a change that
     * completes the profile points it at the new one (recorded in the
     * state file; the caller installs it in `done`). */
    int (*change)(struct lorad_server *srv, void *arg, struct serving_commit *c,
                  const struct profile **profile, struct lorad_error *err);
    /* The outcome, exactly once: rc 0 (published and on disk; c filled,
     * c->commit_us includes the flip) or the error to answer, nothing
     * serving changed. Answers the request. */
    void (*done)(struct lorad_server *srv, void *arg, int rc, const struct serving_commit *c,
                 const struct lorad_error *err);
};

int statewrite_init(struct lorad_server *srv, struct lorad_error *err);
void statewrite_free(struct lorad_server *srv);
/* True when no commit is queued or running. */
bool statewrite_idle(const struct lorad_server *srv);

/* Queues a commit (see above). */
void statewrite_commit(struct lorad_server *srv, const struct statewrite_commit *cm);

/* Drain past its deadline: every commit queued and not yet started gets
 * `done` with LORAD_E_DRAINING. Returns how many. */
size_t statewrite_refuse_queued(struct lorad_server *srv);

/* Renders and writes the state file synchronously (start-up, shutdown;
 * only when statewrite_idle). 0 when state_file is unset. Updates
 * state_file's status like the commits do. */
int statewrite_sync(struct lorad_server *srv, struct lorad_error *err);

/* /status "state_file": {"path", "ok", "error"} (null when no state_file
 * is configured). */
cJSON *statewrite_status_json(const struct lorad_server *srv);

#endif
