/* lorad — snapshot.h: an immutable, fully prepared adapter.
 *
 * A snapshot is what a worker computes with: for every model layer either
 * nothing (base weights only), a LoRA delta already converted to f32 with
 * its scaling computed (and DoRA's per-row magnitude scale precomputed), and/
 * or a modules_to_save replacement weight. It is built completely by
 * adapter_stage() off the serving path, given its version by serving.c just
 * before it is published, and never written again once published: workers
 * read it concurrently with no lock. It is freed only after an RCU grace
 * period (serving.c) or when it was never published.
 *
 * LoRA at the adapter's real rank: A is [rank][in], B is [out][rank] for the
 * layer's own rank, never padded to the profile's max_rank.
 *
 * Ownership: the snapshot owns every array it points to; snapshot_free()
 * frees them all.
 */
#ifndef LORAD_SNAPSHOT_H
#define LORAD_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SNAPSHOT_NAME_MAX 128

struct snapshot_lora {
    int rank;          /* this layer's r (rank_pattern applied) */
    double alpha;      /* this layer's alpha (alpha_pattern applied) */
    float scaling;     /* alpha / r, or alpha / sqrt(r) with rsLoRA */
    float *A;          /* lora_A: [rank][in_features] */
    float *B;          /* lora_B: [out_features][rank] */
    float *bias_B;     /* lora_B.bias [out_features] (lora_bias), or NULL */
    float *dora_scale; /* DoRA: m / ||W + s B A||_row, [out_features], or NULL */
};

struct snapshot_layer {
    struct snapshot_lora *lora; /* NULL: this layer has no LoRA delta */
    float *weight;              /* modules_to_save: [in][out] replacement, or NULL */
    float *bias;                /* modules_to_save: [out] replacement, or NULL */
};

struct snapshot {
    char name[SNAPSHOT_NAME_MAX + 1]; /* adapter directory name */
    uint64_t version;                 /* set by serving.c at commit; 0 until then */
    int rank;                         /* largest layer rank */
    double lora_alpha;                /* the config's lora_alpha */
    char sha256[65];                  /* lowercase hex of adapter_model.safetensors */
    struct timespec loaded_at;        /* CLOCK_REALTIME when staging finished */
    double stage_ms;                  /* wall time of staging */
    size_t nlayers;                   /* == model->nlayers */
    struct snapshot_layer *layers;    /* [nlayers] */
    size_t bytes;                     /* bytes of f32 data held (for memory accounting) */
};

/* Allocates an empty snapshot for a model of `nlayers` layers (all layers
 * base-only). Returns NULL on out-of-memory. */
struct snapshot *snapshot_new(size_t nlayers);

/* Frees the snapshot and everything it owns; sets *s to NULL. Safe on NULL.
 * Must only be called on a snapshot no reader can still see. */
void snapshot_free(struct snapshot **s);

/* Writes loaded_at as RFC 3339 UTC ("2026-11-28T13:45:12.345Z") into buf. */
void snapshot_format_time(const struct timespec *ts, char *buf, size_t len);

#endif
