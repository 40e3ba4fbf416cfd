/* lorad — batch.h: one batch of /infer jobs, from request bodies to
 * answers (SPEC.md 6 data plane, 7 concurrency), without HTTP.
 *
 * batch_run() takes the jobs a worker dequeued together and answers every
 * one: it parses each body (lib/inferbody.h), reads the serving view ONCE
 * for the whole batch, routes each job (a pin wins over a route key; a
 * body's pin and key win over the headers'), groups the jobs by the
 * snapshot that serves them, runs ONE forward pass over all the batch's
 * rows (lib/forward.h: one base GEMM per layer, each group's snapshot on
 * its own rows) in chunks of at most the scratch's max_rows, and writes
 * each job's answer from the rows of its own snapshot, so no answer mixes
 * two snapshots. With a team (struct batch_team) the parsing, the forward
 * (split by output features) and the answers are shared by its members.
 * A job that cannot be served (a malformed body, a canary pin without a
 * canary, out of memory) gets its error and does not hold up the others.
 *
 * Ownership: the caller owns each struct batch_job and every input
 * pointer in it (they must stay valid during batch_run); batch_run leaves
 * a malloc'd answer in resp, which the caller takes or frees. A
 * batch_scratch belongs to one thread.
 *
 * Threads: batch_run on a registered RCU reader thread (serving.h), online;
 * the caller reports the quiescent state after it. One scratch per thread.
 * Team members run only what batch_run hands them through team->run, while
 * batch_run's thread stays in its read-side section (so the snapshots they
 * read stay alive); they need not be online themselves.
 */
#ifndef LORAD_BATCH_H
#define LORAD_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "inferbody.h"
#include "model.h"
#include "serving.h"
#include "snapshot.h"

/* No X-Lorad-Variant pin. */
#define BATCH_PIN_NONE INFERBODY_PIN_NONE

struct batch_job {
    /* in: set by the caller */
    const char *body; /* the request body, body_len bytes */
    size_t body_len;
    bool binary;           /* rows of little-endian f32 (else JSON) */
    const char *route_key; /* a route key copied from the headers, or NULL */
    size_t route_key_len;
    int pin;          /* a pin from the headers: BATCH_PIN_NONE or an enum serving_variant */
    const char *slot; /* X-Lorad-Slot copied from the headers, or NULL */
    size_t slot_len;
    /* out: set by batch_run */
    int code;               /* 0: answered; else the negative lorad_err of err */
    struct lorad_error err; /* when code < 0: the message */
    char *resp;             /* code 0: the answer (malloc'd; the caller takes it) */
    size_t resp_len;
    const char *resp_type;                     /* its media type (static string) */
    char adapter[SNAPSHOT_NAME_MAX + 1];       /* the snapshot that answered; "" = base model */
    uint64_t version;                          /* its version (0: base model) */
    enum serving_variant variant;              /* the variant that answered */
    char slot_name[SERVING_SLOT_NAME_MAX + 1]; /* the slot that answered */
    int rows;                                  /* rows answered */
    int nonfinite_rows;                        /* rows with a non-finite output */
    /* private to batch.c */
    struct inferbody_req req;
    const struct snapshot *snap; /* what serves it (NULL: base model) */
    size_t row_off;              /* its first row in the batch's rows */
};

/* Threads that share one batch: the caller's thread is member 0. */
struct batch_team {
    int n; /* members, >= 1 */
    /* Runs fn(arg, me) on every member me in 0..n-1, this thread as 0;
     * returns once every member has returned from it. */
    void (*run)(void *team, void (*fn)(void *arg, int me), void *arg);
    /* Returns once all n members called it (inside a fn of run). */
    void (*barrier)(void *team);
    void *team;
};

/* What a batch may take and who hears of its forward passes. */
struct batch_params {
    int max_rows; /* rows per request (max_rows_per_request), >= 1 */
    /* Called after each forward pass with its rows (NULL: nobody), on the
     * thread running batch_run: the daemon's batch-size histogram. */
    void (*on_forward)(void *arg, int rows);
    /* Called once per batch with the number of distinct snapshots that
     * served it (NULL: nobody), on the same thread. */
    void (*on_snapshots)(void *arg, int snapshots);
    void *arg;
    /* The team sharing the batch, or NULL: this thread alone. Its n must
     * not exceed the scratch's lanes. */
    const struct batch_team *team;
};

/* Working memory of one thread: row buffers and the forward scratch for
 * chunks of `max_rows` rows (max_batch_rows) and LoRA ranks up to
 * `base_rank` (grown when a snapshot needs more). NULL on out-of-memory. */
struct batch_scratch *batch_scratch_new(const struct model *m, int max_rows, int base_rank);
/* The same for teams of up to `lanes` threads. */
struct batch_scratch *batch_scratch_new_lanes(const struct model *m, int max_rows, int base_rank,
                                              int lanes);
void batch_scratch_free(struct batch_scratch **sc);

/* Answers jobs[0..n) (see above). With sc NULL every job fails with
 * LORAD_E_INTERNAL (out of memory in the worker). */
void batch_run(const struct model *m, struct serving *s, const struct batch_params *p,
               struct batch_job *const *jobs, size_t n, struct batch_scratch *sc);

#endif
