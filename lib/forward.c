/* lorad — forward.c: the batched forward pass (SPEC.md 3) on OpenBLAS,
 * over groups of rows with their own snapshots. See forward.h.
 *
 * Per layer, over the output features [c0, c1) this thread computes (all
 * of them on one thread; a slice of them per team member):
 *   y[:, c0:c1]  = x W^T[:, c0:c1]          one sgemm over ALL rows
 *   per group g whose snapshot touches the layer:
 *     modules_to_save: y_g[:, c0:c1] = x_g W_g^T[:, c0:c1]   (overwrites)
 *     LoRA:  t = x_g A^T (M_g x r);  y_g[:, c0:c1] += s * t B[c0:c1]^T
 *   per group, per row: y ⊙= dora_scale, y += b (+ s * bias_B), act(y)
 * x_g is x itself when the group's rows are one contiguous run (the usual
 * case: one group, or rows sorted by group), else gathered into the lane's
 * gx; a LoRA term computed off to the side (gy) is scatter-added. When one
 * group covers the batch and replaces the layer, its weight is the one
 * base sgemm. Layer outputs ping-pong between two shared buffers; the last
 * layer writes the caller's y. A team meets at a barrier after each layer:
 * the next layer reads every member's columns, and writes the buffer the
 * layer before read.
 */
#include "forward.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

struct forward_lane {
    float *gx; /* gathered inputs [max_rows][width] */
    float *gy; /* a group's term [max_rows][width] */
    float *t;  /* [max_rows][max_rank] */
};

struct forward_scratch {
    int max_rows;
    int max_rank;
    int lanes;
    size_t width;              /* model max_width */
    float *buf[2];             /* [max_rows][width] each, shared by a team */
    int *iota;                 /* 0..max_rows-1, forward_run's one group */
    struct forward_lane *lane; /* [lanes] */
};

static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0)
        return NULL;
    return p;
}

struct forward_scratch *forward_scratch_new_lanes(const struct model *m, int max_rows, int max_rank,
                                                  int lanes)
{
    struct forward_scratch *s;
    size_t rows, rank;
    bool ok;

    if (!m || m->max_width <= 0 || max_rows < 1 || max_rank < 0 || lanes < 1)
        return NULL;
    rows = (size_t)max_rows;
    rank = max_rank > 0 ? (size_t)max_rank : 1;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max_rows = max_rows;
    s->max_rank = max_rank;
    s->lanes = lanes;
    s->width = (size_t)m->max_width;
    s->buf[0] = alloc_floats(rows * s->width);
    s->buf[1] = alloc_floats(rows * s->width);
    s->iota = malloc(rows * sizeof(int));
    s->lane = calloc((size_t)lanes, sizeof(*s->lane));
    ok = s->buf[0] && s->buf[1] && s->iota && s->lane;
    for (int i = 0; ok && i < lanes; i++) {
        s->lane[i].gx = alloc_floats(rows * s->width);
        s->lane[i].gy = alloc_floats(rows * s->width);
        s->lane[i].t = alloc_floats(rows * rank);
        ok = s->lane[i].gx && s->lane[i].gy && s->lane[i].t;
    }
    if (!ok) {
        forward_scratch_free(&s);
        return NULL;
    }
    for (int i = 0; i < max_rows; i++)
        s->iota[i] = i;
    return s;
}

struct forward_scratch *forward_scratch_new(const struct model *m, int max_rows, int max_rank)
{
    return forward_scratch_new_lanes(m, max_rows, max_rank, 1);
}

void forward_scratch_free(struct forward_scratch **sp)
{
    struct forward_scratch *s;
    if (!sp || !*sp)
        return;
    s = *sp;
    for (int i = 0; s->lane && i < s->lanes; i++) {
        free(s->lane[i].gx);
        free(s->lane[i].gy);
        free(s->lane[i].t);
    }
    free(s->lane);
    free(s->iota);
    free(s->buf[0]);
    free(s->buf[1]);
    free(s);
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

int forward_scratch_lanes(const struct forward_scratch *s)
{
    return s ? s->lanes : 0;
}

void forward_slice(int out, int me, int n, int *c0, int *c1)
{
    int per = (out + n - 1) / n;
    per = (per + 15) / 16 * 16;
    *c0 = me * per < out ? me * per : out;
    *c1 = *c0 + per < out ? *c0 + per : out;
}

/* One layer of one call, as the columns [c0, c1) of it. */
struct layer_ctx {
    const struct model_layer *L;
    size_t l;
    const float *in;
    float *out;
    int rows, c0, c1;
    struct forward_lane *lane;
};

/* The first row of g when its rows are one contiguous run, else -1. */
static int run_start(const struct forward_group *g)
{
    for (int i = 1; i < g->n_rows; i++)
        if (g->rows[i] != g->rows[0] + i)
            return -1;
    return g->rows[0];
}

static const struct snapshot_layer *layer_of(const struct forward_group *g, size_t l)
{
    return g->snap ? &g->snap->layers[l] : NULL;
}

/* The group's inputs: x itself at its run, or gathered into the lane. */
static const float *group_inputs(const struct layer_ctx *c, const struct forward_group *g, int r0)
{
    const size_t in = (size_t)c->L->in_features;
    if (r0 >= 0)
        return c->in + (size_t)r0 * in;
    for (int i = 0; i < g->n_rows; i++)
        memcpy(c->lane->gx + (size_t)i * in, c->in + (size_t)g->rows[i] * in, in * sizeof(float));
    return c->lane->gx;
}

/* gy[n][c1-c0] into (add: onto) the group's rows of out, columns c0.. */
static void scatter(const struct layer_ctx *c, const struct forward_group *g, bool add)
{
    const size_t nc = (size_t)(c->c1 - c->c0), out = (size_t)c->L->out_features;
    for (int i = 0; i < g->n_rows; i++) {
        float *dst = c->out + (size_t)g->rows[i] * out + (size_t)c->c0;
        const float *src = c->lane->gy + (size_t)i * nc;
        if (add)
            for (size_t o = 0; o < nc; o++)
                dst[o] += src[o];
        else
            memcpy(dst, src, nc * sizeof(float));
    }
}

/* The group's own terms on this layer: a replacement weight (unless it was
 * the base sgemm's), then the LoRA delta. */
static void group_terms(const struct layer_ctx *c, const struct forward_group *g, bool w_done)
{
    const struct snapshot_layer *sl = layer_of(g, c->l);
    const struct snapshot_lora *lo = sl ? sl->lora : NULL;
    const int in = c->L->in_features, out = c->L->out_features, nc = c->c1 - c->c0;
    const bool own_w = sl && sl->weight && !w_done, has_lora = lo && lo->rank > 0;
    int r0;
    const float *xg;

    if ((!own_w && !has_lora) || g->n_rows == 0)
        return;
    r0 = run_start(g);
    xg = group_inputs(c, g, r0);
    if (own_w) {
        float *dst = r0 >= 0 ? c->out + (size_t)r0 * (size_t)out + c->c0 : c->lane->gy;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n_rows, nc, in, 1.0f, xg, in,
                    sl->weight + c->c0, out, 0.0f, dst, r0 >= 0 ? out : nc);
        if (r0 < 0)
            scatter(c, g, false);
    }
    if (has_lora) {
        float *dst = r0 >= 0 ? c->out + (size_t)r0 * (size_t)out + c->c0 : c->lane->gy;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->n_rows, lo->rank, in, 1.0f, xg, in,
                    lo->A, in, 0.0f, c->lane->t, lo->rank);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->n_rows, nc, lo->rank, lo->scaling,
                    c->lane->t, lo->rank, lo->B + (size_t)c->c0 * (size_t)lo->rank, lo->rank,
                    r0 >= 0 ? 1.0f : 0.0f, dst, r0 >= 0 ? out : nc);
        if (r0 < 0)
            scatter(c, g, true);
    }
}

/* DoRA scale, bias (+ s * bias_B) and activation on the group's rows. */
static void group_finish(const struct layer_ctx *c, const struct forward_group *g)
{
    const struct snapshot_layer *sl = layer_of(g, c->l);
    const struct snapshot_lora *lo = sl ? sl->lora : NULL;
    const float *dora = lo ? lo->dora_scale : NULL;
    const float *bias_B = lo ? lo->bias_B : NULL;
    const float *bias = sl && sl->bias ? sl->bias : c->L->bias;
    const float s = lo ? lo->scaling : 0.0f;
    const size_t out = (size_t)c->L->out_features, c0 = (size_t)c->c0, c1 = (size_t)c->c1;

    for (int i = 0; i < g->n_rows; i++) {
        float *yr = c->out + (size_t)g->rows[i] * out;
        if (dora)
            for (size_t o = c0; o < c1; o++)
                yr[o] *= dora[o];
        if (bias)
            for (size_t o = c0; o < c1; o++)
                yr[o] += bias[o];
        if (bias_B)
            for (size_t o = c0; o < c1; o++)
                yr[o] += s * bias_B[o];
        model_act_apply(c->L->act, yr + c0, c1 - c0);
    }
}

/* The base weight of the one sgemm: a replacement when a single group
 * covers the batch and replaces the layer. */
static const float *base_weight(const struct layer_ctx *c, const struct forward_group *g, int ng)
{
    const struct snapshot_layer *sl = ng == 1 ? layer_of(g, c->l) : NULL;
    if (sl && sl->weight && g->n_rows == c->rows)
        return sl->weight;
    return c->L->weight;
}

static void layer_cols(const struct layer_ctx *c, const struct forward_group *g, int ng)
{
    const int in = c->L->in_features, out = c->L->out_features, nc = c->c1 - c->c0;
    const float *W = base_weight(c, g, ng);

    if (nc <= 0)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->rows, nc, in, 1.0f, c->in, in,
                W + c->c0, out, 0.0f, c->out + c->c0, out);
    for (int i = 0; i < ng; i++)
        group_terms(c, &g[i], W != c->L->weight);
    for (int i = 0; i < ng; i++)
        group_finish(c, &g[i]);
}

static void check_args(const struct model *m, const struct forward_group *g, int ng, const float *x,
                       int rows, const float *y, const struct forward_scratch *s)
{
    int total = 0;
    (void)m, (void)x, (void)y;
    assert(m && x && y && s && (g || ng == 0));
    assert(rows >= 1 && rows <= s->max_rows);
    for (int i = 0; i < ng; i++) {
        assert(!g[i].snap || g[i].snap->nlayers == m->nlayers);
        assert(!g[i].snap || g[i].snap->rank <= s->max_rank);
        total += g[i].n_rows;
    }
    assert(total == rows);
    (void)total;
}

void forward_run_split(const struct model *m, const struct forward_group *g, int n_groups,
                       const float *x, int rows, float *y, struct forward_scratch *s, int me, int n,
                       void (*barrier)(void *), void *barg)
{
    const float *cur = x;

    check_args(m, g, n_groups, x, rows, y, s);
    assert(me >= 0 && me < n && n <= s->lanes && (n == 1 || barrier));
    for (size_t l = 0; l < m->nlayers; l++) {
        struct layer_ctx c = {
            .L = &m->layers[l],
            .l = l,
            .in = cur,
            .out = l + 1 == m->nlayers ? y : s->buf[l & 1],
            .rows = rows,
            .lane = &s->lane[me],
        };
        assert((size_t)c.L->in_features <= s->width && (size_t)c.L->out_features <= s->width);
        forward_slice(c.L->out_features, me, n, &c.c0, &c.c1);
        layer_cols(&c, g, n_groups);
        if (n > 1)
            barrier(barg);
        cur = c.out;
    }
}

void forward_run_groups(const struct model *m, const struct forward_group *g, int n_groups,
                        const float *x, int rows, float *y, struct forward_scratch *s)
{
    forward_run_split(m, g, n_groups, x, rows, y, s, 0, 1, NULL, NULL);
}

void forward_run(const struct model *m, const struct snapshot *snap, const float *x, int rows,
                 float *y, struct forward_scratch *s)
{
    struct forward_group g = {.snap = snap, .rows = s->iota, .n_rows = rows};
    forward_run_groups(m, &g, 1, x, rows, y, s);
}
