/* lorad — daemon/metrics.h: request evidence per variant (SPEC 6 /status
 * "requests") and the Prometheus counters, histograms and gauges of
 * /metrics.
 *
 * metrics is a leaf: it records what it is told and renders what it is
 * handed. The gauges of /metrics (queue depth, requests in flight, the
 * serving view) are collected by the caller (status.c) and passed to
 * metrics_render().
 *
 * Ownership: main.c allocates the one struct metrics at start
 * (metrics_new) and frees it after the workers stopped (metrics_free).
 * Threads: the loop thread, except metrics_record_batch (any thread:
 * relaxed atomics).
 */
#ifndef LORAD_METRICS_H
#define LORAD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "../lib/serving.h"

/* The variant label of an /infer answer: the one that produced it, or
 * none (it failed before or while routing: bad request, overloaded, ...). */
enum metrics_variant { METRICS_STABLE, METRICS_CANARY, METRICS_NONE };

struct metrics;

/* NULL on out-of-memory. metrics_free() sets *m to NULL. */
struct metrics *metrics_new(void);
void metrics_free(struct metrics **m);

/* An /infer answer: the slot that answered (NULL or "": none, it failed
 * before routing), its variant, HTTP status, latency (first header to
 * answer) and rows with a non-finite output. The unlabelled series count
 * every slot; the per-slot series and evidence are created on a slot's
 * first answer. */
void metrics_record_infer(struct metrics *m, const char *slot, enum metrics_variant v, int status,
                          uint64_t latency_ns, int nonfinite_rows);
/* A slot was unloaded: its series and evidence go (a slot created again
 * under the name starts from zero). */
void metrics_forget_slot(struct metrics *m, const char *slot);
/* One worker batch served by `snapshots` distinct snapshots (any thread). */
void metrics_record_batch_snapshots(struct metrics *m, int snapshots);
/* One forward pass of `rows` rows (any thread). */
void metrics_record_batch(struct metrics *m, int rows);
/* Control-plane events: a /swap that committed (ok) or not, a rollback. */
void metrics_record_swap(struct metrics *m, bool ok, double stage_ms, double commit_us);
void metrics_record_rollback(struct metrics *m, double commit_us);
/* A state-file write that failed (lorad_state_write_failures_total). */
void metrics_record_state_write_failure(struct metrics *m);
/* Resets a slot's per-variant evidence windows (a canary begins there;
 * NULL: "default"). */
void metrics_reset_evidence(struct metrics *m, const char *slot);

/* {"stable": {...}, "canary": {...}} of /status for one slot (NULL:
 * "default"). */
cJSON *metrics_evidence_json(const struct metrics *m, const char *slot);

/* What /metrics shows beside the counters, read by the caller. */
struct metrics_gauges {
    const struct serving_view *view; /* NULL: no serving state yet */
    size_t queue_depth;              /* /infer requests waiting for a worker */
    size_t inflight;                 /* HTTP requests received, not answered */
    uint64_t resident_bytes;         /* serving_resident_bytes */
    uint64_t limit_bytes;            /* serving_memory_limit (0: none) */
};
/* Prometheus text format 0.0.4 (malloc'd, *len bytes), or NULL. */
char *metrics_render(const struct metrics *m, const struct metrics_gauges *g, size_t *len);

#endif
