/* lorad — daemon/lorad.h: the daemon's state, one struct passed to every
 * module explicitly.
 *
 * Threads:
 *  - the loop thread runs libuv: libmicrohttpd in external-epoll mode
 *    (http.c), the control and status handlers, signals, timers, systemd
 *    notifications. It never blocks: no file I/O, no math.
 *  - worker threads (workers.c, running infer.c's batches) parse /infer
 *    bodies, run the forward pass and format the answers; they hand the
 *    jobs back through a queue + uv_async_send.
 *  - libuv's threadpool runs staging (adapter_stage), state-file writes,
 *    SIGHUP reloads and /adapters scans (uv_queue_work), their
 *    after-callbacks on the loop.
 *
 * Everything in struct lorad_server is owned by the loop thread unless a
 * field's comment says otherwise. The only state shared with workers is the
 * immutable model, the RCU-published serving view (lib/serving.h), the
 * metrics' batch histogram (atomics) and the fields marked "workers read".
 */
#ifndef LORAD_DAEMON_H
#define LORAD_DAEMON_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include <uv.h>

#include "../lib/adapter.h"
#include "../lib/model.h"
#include "../lib/serving.h"
#include "config.h"

#define LORAD_VERSION "0.1.0"

enum lorad_run_state { LORAD_STARTING, LORAD_SERVING, LORAD_DRAINING };

struct metrics;    /* metrics.c */
struct workers;    /* workers.c */
struct http;       /* http.c */
struct control;    /* control.c: swap bookkeeping */
struct statewrite; /* statewrite.c: the state-write FIFO */

struct lorad_server {
    struct lorad_config cfg;
    char *config_path; /* for SIGHUP */
    uv_loop_t *loop;
    struct model *model;              /* immutable after start; workers read */
    int adapter_dirfd;                /* adapter_dir opened O_DIRECTORY */
    struct serving *serving;          /* writer: loop thread; readers: workers */
    struct profile *profile;          /* the config's limits (template of every slot's
                                       * profile); each slot's own lives in serving */
    _Atomic int run_state;            /* enum lorad_run_state */
    _Atomic int max_rows_per_request; /* cfg's, reloadable: workers read it */
    int scratch_rank;                 /* workers' forward scratch rank (set before they start) */
    int restored;                     /* -1 null, 0 false, 1 true (/status) */
    uint64_t started_ns;              /* clock_now_ns() at start (uptime) */
    struct timespec started_rt;       /* CLOCK_REALTIME when the model was loaded */
    char *auth_token;                 /* NULL: no auth; re-read on SIGHUP */
    unsigned adapter_scans;           /* /adapters scans in the threadpool (status.c) */
    struct workers *workers;
    struct http *http;
    struct metrics *metrics; /* allocated once by main.c */
    struct control *control;
    struct statewrite *statewrite;
};

#endif
