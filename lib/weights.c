/* lorad — weights.c: this file contains the f32 conversion with the
 * finiteness check and the DoRA scale (see weights.h).
 *
 * An f32 is an infinity or a NaN exactly when its exponent bits are all
 * ones, so the F32 scan tests bit patterns (no floating-point compare):
 * a fixed-count inner loop that -O2 vectorizes. The DoRA row norm builds
 * (B A)_o one row at a time in a double scratch row of `in` entries.
 */
#include "weights.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 1 when any of the n f32 bit patterns at u is an infinity or a NaN. */
static uint32_t any_non_finite(const uint32_t *u, size_t n)
{
    enum { LANES = 16 };
    uint32_t bad = 0;
    size_t i = 0;

    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES; k++)
            bad |= (uint32_t)((u[i + k] & 0x7f800000u) == 0x7f800000u);
    for (; i < n; i++)
        bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    return bad;
}

int weights_to_f32(const struct st_tensor *t, float *dst, struct lorad_error *err)
{
    uint32_t bad = 0;
    int rc;

    if (!t || (!dst && t->nelems))
        return lorad_error_set(err, LORAD_E_INTERNAL, "weights_to_f32: bad arguments");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (t->dtype == ST_F32) {
        /* copy a cache-sized block, then scan it while it is hot */
        enum { BLOCK = 8192 };
        for (size_t b = 0; b < t->nelems; b += BLOCK) {
            size_t n = t->nelems - b < BLOCK ? t->nelems - b : BLOCK;
            memcpy(dst + b, t->data + 4 * b, 4 * n);
            bad |= any_non_finite((const uint32_t *)(void *)(dst + b), n);
        }
        goto done;
    }
#endif
    if ((rc = st_to_f32(t, dst, err)) < 0)
        return rc;
    for (size_t i = 0; i < t->nelems; i++)
        bad |= (uint32_t)!isfinite(dst[i]);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
done:
#endif
    if (bad)
        return lorad_error_set(err, LORAD_E_NON_FINITE_WEIGHTS,
                               "tensor %s holds a non-finite value (NaN or infinity)", t->name);
    return 0;
}

/* ||W_o + s (B A)_o||_2 of output row o; row is scratch of d->in doubles. */
static double row_norm(const struct weights_dora *d, size_t o, double *row)
{
    double norm = 0.0;

    for (size_t i = 0; i < d->in; i++)
        row[i] = 0.0;
    for (size_t k = 0; k < d->rank; k++) {
        const double b = d->B[o * d->rank + k];
        const float *a = d->A + k * d->in;
        for (size_t i = 0; i < d->in; i++)
            row[i] += b * a[i];
    }
    for (size_t i = 0; i < d->in; i++) {
        const double w = (double)d->W[i * d->out + o] + d->scaling * row[i]; /* W is [in][out] */
        norm += w * w;
    }
    return sqrt(norm);
}

int weights_dora_scale(const struct weights_dora *d, float *scale, const char *layer,
                       struct lorad_error *err)
{
    double *row;
    int rc = 0;

    if (!d || !scale || !d->A || !d->B || !d->W)
        return lorad_error_set(err, LORAD_E_INTERNAL, "weights_dora_scale: bad arguments");
    if (!(row = malloc((d->in ? d->in : 1) * sizeof(*row))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    for (size_t o = 0; o < d->out && rc == 0; o++) {
        double norm = row_norm(d, o, row), v = scale[o] / norm;
        if (!isfinite(v) || !isfinite((float)v))
            rc = lorad_error_set(err, LORAD_E_NON_FINITE_WEIGHTS,
                                 "layer %s: DoRA scale of output row %zu is not finite "
                                 "(weight norm %g)",
                                 layer ? layer : "?", o, norm);
        else
            scale[o] = (float)v;
    }
    free(row);
    return rc;
}
