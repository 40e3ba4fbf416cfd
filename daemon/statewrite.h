/* lorad — daemon/statewrite.h: writing the state file (SPEC.md 8): the
 * FIFO of writes that make each control-plane commit durable before it is
 * answered, and the synchronous write of start-up and shutdown.
 *
 * After each commit the caller enqueues the serving state as it is at that
 * instant (statewrite_enqueue renders it at once) together with the answer
 * to give once it is on disk. Writes run in libuv's threadpool one at a
 * time, in commit order. A failed write is answered 500 internal saying
 * the commit is live but not durable. Without a state_file the answer is
 * given at once.
 *
 * Ownership: statewrite_init allocates srv->statewrite; statewrite_free
 * frees it (only when statewrite_idle). Threads: the loop thread (or
 * start-up / shutdown, when no loop runs).
 */
#ifndef LORAD_STATEWRITE_H
#define LORAD_STATEWRITE_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "../lib/errors.h"
#include "http.h"

struct lorad_server;

/* What to answer once a commit is on disk. */
struct statewrite_reply {
    struct http_request *r; /* answered 200 with `answer`, or 500 not durable */
    cJSON *answer;          /* the 200 body (consumed); NULL: out of memory */
    const char *what;       /* "swap", "rollback", ... (log lines and messages) */
    /* Called once r is answered (may be NULL): the caller's bookkeeping. */
    void (*answered)(struct lorad_server *srv);
};

int statewrite_init(struct lorad_server *srv, struct lorad_error *err);
void statewrite_free(struct lorad_server *srv);
/* True when no write is queued or running. */
bool statewrite_idle(const struct lorad_server *srv);

/* Renders srv's serving state now and queues its write; answers `reply`
 * when the write completed (see above). */
void statewrite_enqueue(struct lorad_server *srv, const struct statewrite_reply *reply);

/* Renders and writes the state file synchronously (start-up, shutdown;
 * only when statewrite_idle). 0 when state_file is unset. */
int statewrite_sync(struct lorad_server *srv, struct lorad_error *err);

#endif
