/* lorad — weights.h: turning adapter tensors into the f32 weights a
 * snapshot holds: conversion with the finiteness check of SPEC.md 4, and
 * the DoRA scale of SPEC 3.
 *
 * Every value of every staged tensor must be finite (modules_to_save
 * weights and DoRA magnitudes included), so the check is made while
 * converting: for F32 data in one pass (copy a cache-sized block, scan it
 * while it is hot), for F16 and BF16 after st_to_f32().
 *
 * DoRA: a layer's output row o is scaled by m[o] / ||W_o + s (B A)_o||_2,
 * computed once at staging, in double, from the f32 arrays the snapshot
 * will hold (W in lorad's [in][out] layout, model.h).
 *
 * Ownership: callers own every array; nothing is kept. The functions
 * allocate only scratch they free before returning.
 *
 * Thread-safety: reentrant; any thread.
 */
#ifndef LORAD_WEIGHTS_H
#define LORAD_WEIGHTS_H

#include <stddef.h>

#include "errors.h"
#include "safetensors.h"

/* Converts tensor t (F32, F16 or BF16) to f32 into dst (t->nelems floats)
 * and checks that every value is finite. Returns 0,
 * LORAD_E_NON_FINITE_WEIGHTS naming the tensor, or st_to_f32()'s error for
 * another dtype. */
int weights_to_f32(const struct st_tensor *t, float *dst, struct lorad_error *err);

/* One LoRA layer for weights_dora_scale(): A [rank][in], B [out][rank],
 * the scaling s and the layer's weight W [in][out] (the replacement when
 * modules_to_save gives one, else the base). */
struct weights_dora {
    const float *A, *B, *W;
    size_t rank, in, out;
    double scaling;
};

/* Replaces the DoRA magnitudes in scale[0..out) by the scales
 * m[o] / ||W_o + s (B A)_o||_2. Returns 0, LORAD_E_NON_FINITE_WEIGHTS
 * naming `layer` and the row when a scale is not a finite f32 (scale then
 * partly rewritten), or LORAD_E_INTERNAL (out of memory). */
int weights_dora_scale(const struct weights_dora *d, float *scale, const char *layer,
                       struct lorad_error *err);

#endif
