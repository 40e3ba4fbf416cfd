/* lorad — forward.c: the batched forward pass (SPEC.md 3) on OpenBLAS.
 * See forward.h for the contract.
 *
 * Per layer, for the M rows of the batch:
 *   y  = x W^T                      one sgemm, W held as W^T [in][out] (model.h)
 *   t  = x A^T          (M x r)     LoRA layers only, at the layer's own rank
 *   y += s * t B^T                  sgemm with beta = 1
 *   y ⊙= dora_scale                 DoRA, per output column of y
 *   y += b (+ s * bias_B)
 *   y  = act(y)
 * Layer outputs ping-pong between two scratch buffers; the last layer writes
 * straight into the caller's y. Nothing is allocated per call.
 */
#include "forward.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

struct forward_scratch {
    int max_rows;
    int max_rank;
    size_t width;  /* model max_width */
    float *buf[2]; /* [max_rows][width] each */
    float *t;      /* [max_rows][max_rank] */
};

static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0)
        return NULL;
    return p;
}

struct forward_scratch *forward_scratch_new(const struct model *m, int max_rows, int max_rank)
{
    struct forward_scratch *s;
    size_t rows, rank;

    if (!m || m->max_width <= 0 || max_rows < 1 || max_rank < 0)
        return NULL;
    rows = (size_t)max_rows;
    rank = max_rank > 0 ? (size_t)max_rank : 1;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max_rows = max_rows;
    s->max_rank = max_rank;
    s->width = (size_t)m->max_width;
    s->buf[0] = alloc_floats(rows * s->width);
    s->buf[1] = alloc_floats(rows * s->width);
    s->t = alloc_floats(rows * rank);
    if (!s->buf[0] || !s->buf[1] || !s->t)
        forward_scratch_free(&s);
    return s;
}

void forward_scratch_free(struct forward_scratch **sp)
{
    if (!sp || !*sp)
        return;
    free((*sp)->buf[0]);
    free((*sp)->buf[1]);
    free((*sp)->t);
    free(*sp);
    *sp = NULL;
}

int forward_scratch_max_rows(const struct forward_scratch *s)
{
    return s ? s->max_rows : 0;
}

int forward_scratch_max_rank(const struct forward_scratch *s)
{
    return s ? s->max_rank : 0;
}

/* y += s * (x A^T) B^T, at the layer's real rank. */
static void lora_delta(const struct snapshot_lora *lo, const float *x, int rows, int in, int out,
                       float *y, float *t)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, lo->rank, in, 1.0f, x, in, lo->A, in,
                0.0f, t, lo->rank);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, lo->rank, lo->scaling, t,
                lo->rank, lo->B, lo->rank, 1.0f, y, out);
}

/* DoRA scale, bias (+ s * bias_B) and activation, row by row. */
static void finish_rows(const struct model_layer *L, const struct snapshot_lora *lo,
                        const float *bias, float *y, int rows)
{
    const size_t out = (size_t)L->out_features;
    const float *dora = lo ? lo->dora_scale : NULL;
    const float *bias_B = lo ? lo->bias_B : NULL;
    const float s = lo ? lo->scaling : 0.0f;

    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * out;
        if (dora)
            for (size_t o = 0; o < out; o++)
                yr[o] *= dora[o];
        if (bias)
            for (size_t o = 0; o < out; o++)
                yr[o] += bias[o];
        if (bias_B)
            for (size_t o = 0; o < out; o++)
                yr[o] += s * bias_B[o];
    }
    model_act_apply(L->act, y, (size_t)rows * out);
}

void forward_run(const struct model *m, const struct snapshot *snap, const float *x, int rows,
                 float *y, struct forward_scratch *s)
{
    const float *cur = x;

    assert(m && x && y && s);
    assert(rows >= 1 && rows <= s->max_rows);
    assert(!snap || snap->nlayers == m->nlayers);
    for (size_t l = 0; l < m->nlayers; l++) {
        const struct model_layer *L = &m->layers[l];
        const struct snapshot_layer *sl = snap ? &snap->layers[l] : NULL;
        const struct snapshot_lora *lo = sl ? sl->lora : NULL;
        const float *W = sl && sl->weight ? sl->weight : L->weight;
        const float *b = sl && sl->bias ? sl->bias : L->bias;
        float *out = l + 1 == m->nlayers ? y : s->buf[l & 1];
        const int in = L->in_features, nout = L->out_features;

        assert((size_t)in <= s->width && (size_t)nout <= s->width);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, nout, in, 1.0f, cur, in, W,
                    nout, 0.0f, out, nout);
        if (lo && lo->rank > 0) {
            assert(lo->rank <= s->max_rank);
            lora_delta(lo, cur, rows, in, nout, out, s->t);
        }
        finish_rows(L, lo, b, out, rows);
        cur = out;
    }
}

void forward_run_spans(const struct model *m, const struct forward_span *spans, int nspans,
                       const float *x, int rows, float *y, struct forward_scratch *s)
{
    const float *cur = x;

    assert(m && spans && x && y && s);
    assert(rows >= 1 && rows <= s->max_rows && nspans >= 1);
    for (size_t l = 0; l < m->nlayers; l++) {
        const struct model_layer *L = &m->layers[l];
        float *out = l + 1 == m->nlayers ? y : s->buf[l & 1];
        const int in = L->in_features, nout = L->out_features;

        assert((size_t)in <= s->width && (size_t)nout <= s->width);
        /* one base GEMM over every row of the batch */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, nout, in, 1.0f, cur, in,
                    L->weight, nout, 0.0f, out, nout);
        for (int g = 0; g < nspans; g++) {
            const struct forward_span *sp = &spans[g];
            const struct snapshot_layer *sl = sp->snap ? &sp->snap->layers[l] : NULL;
            const struct snapshot_lora *lo = sl ? sl->lora : NULL;
            const float *gx = cur + (size_t)sp->off * (size_t)in;
            float *gy = out + (size_t)sp->off * (size_t)nout;
            assert(sp->off >= 0 && sp->n >= 1 && sp->off + sp->n <= rows);
            assert(!sp->snap || sp->snap->nlayers == m->nlayers);
            if (sl && sl->weight) /* modules_to_save: this snapshot's own weight */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sp->n, nout, in, 1.0f, gx,
                            in, sl->weight, nout, 0.0f, gy, nout);
            if (lo && lo->rank > 0) {
                assert(lo->rank <= s->max_rank);
                lora_delta(lo, gx, sp->n, in, nout, gy, s->t);
            }
            finish_rows(L, lo, sl && sl->bias ? sl->bias : L->bias, gy, sp->n);
        }
        cur = out;
    }
}
