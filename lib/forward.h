/* lorad — forward.h: the batched forward pass on OpenBLAS, over groups of
 * rows that each carry their own snapshot, on one thread or split across a
 * team of threads.
 *
 * For a batch of M rows, each layer costs ONE cblas_sgemm x W^T over all M
 * rows, whatever snapshots the rows use. Then, per group of rows whose
 * snapshot has LoRA on that layer: its rows' inputs are gathered,
 * t = x_g A^T (M_g x r, at the layer's real rank), y_g += s * t B^T
 * (scatter-added), DoRA scales per output feature, lora_bias adds s * b_B.
 * A layer a snapshot replaces (modules_to_save) is computed for that
 * group's rows with its own weight and bias. The activation is applied
 * last. This is the CPU form of Punica's SGMV / S-LoRA's batched LoRA.
 *
 * Split: forward_run_split() runs on each of n team members; member k
 * computes a slice of every layer's output features (a column slice of
 * W^T: a pointer offset and the full ldb), all rows, base and LoRA terms,
 * and the members meet at a barrier after each layer. t = x_g A^T is tiny
 * and every member computes it for itself.
 *
 * All intermediates live in a caller-provided scratch sized once, so a
 * call allocates nothing. The scratch's layer buffers are shared by a
 * team; each member uses its own lane of gather buffers.
 *
 * Thread-safety: the model and snapshots are only read. A scratch serves
 * one forward at a time (one thread, or one team with lanes >= n).
 * OpenBLAS must run single-threaded (openblas_set_num_threads(1)).
 */
#ifndef LORAD_FORWARD_H
#define LORAD_FORWARD_H

#include "model.h"
#include "snapshot.h"

struct forward_scratch;

/* Rows rows[0..n_rows) of the batch, served by snapshot snap. The groups
 * of one call partition the batch: each row in exactly one group, in any
 * order (interleaved rows are fine). */
struct forward_group {
    const struct snapshot *snap; /* NULL: base only */
    const int *rows;
    int n_rows;
};

/* Scratch for batches of up to `max_rows` rows and LoRA rank up to
 * `max_rank` (every snapshot passed later must respect it; the daemon passes
 * the largest rank a snapshot may have), with one lane (one thread).
 * NULL on out-of-memory. */
struct forward_scratch *forward_scratch_new(const struct model *m, int max_rows, int max_rank);
/* The same with `lanes` lanes, for teams of up to `lanes` threads. */
struct forward_scratch *forward_scratch_new_lanes(const struct model *m, int max_rows, int max_rank,
                                                  int lanes);
void forward_scratch_free(struct forward_scratch **s);
int forward_scratch_max_rows(const struct forward_scratch *s);
int forward_scratch_max_rank(const struct forward_scratch *s);
int forward_scratch_lanes(const struct forward_scratch *s);

/* y[rows][out_features] = model(x[rows][in_features]) with each group's
 * snapshot applied to its rows. rows in 1..max_rows, every rank <=
 * max_rank (asserted). x and y may not alias. */
void forward_run_groups(const struct model *m, const struct forward_group *g, int n_groups,
                        const float *x, int rows, float *y, struct forward_scratch *s);

/* forward_run_groups split across a team of n threads: each member calls
 * it with the same arguments and its own index me in 0..n-1 (n <= the
 * scratch's lanes); barrier(barg) must return once all n members called it
 * (team.h). It returns on every member once y is complete. */
void forward_run_split(const struct model *m, const struct forward_group *g, int n_groups,
                       const float *x, int rows, float *y, struct forward_scratch *s, int me, int n,
                       void (*barrier)(void *), void *barg);

/* One snapshot (NULL: base model) for all rows: forward_run_groups with
 * one group. */
void forward_run(const struct model *m, const struct snapshot *snap, const float *x, int rows,
                 float *y, struct forward_scratch *s);

/* Output features [*c0, *c1) of a layer of `out` features that member me
 * of n computes (slices of 16 floats: 64-byte aligned). */
void forward_slice(int out, int me, int n, int *c0, int *c1);

#endif
