/* lorad — forward.h: the batched forward pass on OpenBLAS.
 *
 * For a batch of M rows, each layer costs one cblas_sgemm for x W^T and, for
 * a layer with LoRA, two thin ones: t = x A^T (M x r) and y += s * t B^T,
 * at the layer's real rank. DoRA scales per output row before the bias; the
 * activation is applied last. All intermediates live in a caller-provided
 * scratch sized once, so a call allocates nothing.
 *
 * Thread-safety: forward_run() reads the model and snapshot only; each
 * thread must use its own scratch. Callers set OpenBLAS to one thread
 * (openblas_set_num_threads(1)) when they run one forward per worker.
 */
#ifndef LORAD_FORWARD_H
#define LORAD_FORWARD_H

#include "model.h"
#include "snapshot.h"

struct forward_scratch;

/* Scratch for batches of up to `max_rows` rows and LoRA rank up to
 * `max_rank` (every snapshot passed later must respect it; the daemon passes
 * the largest rank a snapshot may have). NULL on out-of-memory. */
struct forward_scratch *forward_scratch_new(const struct model *m, int max_rows, int max_rank);
void forward_scratch_free(struct forward_scratch **s);
int forward_scratch_max_rows(const struct forward_scratch *s);
int forward_scratch_max_rank(const struct forward_scratch *s);

/* y[rows][out_features] = model(x[rows][in_features]) with snapshot `snap`
 * applied (NULL: base model only). rows must be in 1..max_rows and every
 * LoRA rank of snap <= max_rank (asserted). x and y may not alias. */
void forward_run(const struct model *m, const struct snapshot *snap, const float *x, int rows,
                 float *y, struct forward_scratch *s);

/* Rows [off, off + n) of a batch, served by one snapshot (NULL: base). */
struct forward_span {
    const struct snapshot *snap;
    int off, n;
};

/* The forward pass of `rows` rows whose spans (disjoint, covering them)
 * are served by different snapshots: per layer ONE base GEMM over every
 * row, then each span's own modules_to_save weight (when its snapshot
 * replaces the layer), LoRA term, DoRA scale, bias and activation on its
 * rows only. Each row's output equals forward_run's for its snapshot up
 * to float rounding. Same threads and scratch rules as forward_run. */
void forward_run_spans(const struct model *m, const struct forward_span *spans, int nspans,
                       const float *x, int rows, float *y, struct forward_scratch *s);

#endif
