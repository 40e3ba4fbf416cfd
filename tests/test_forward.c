/* lorad — tests/test_forward.c: unit tests of lib/forward.c (SPEC.md 3).
 * Every output is compared against testutil's naive double-precision
 * reference (tu_ref_forward) fed the same f32-representable values: base
 * model, LoRA at several ranks, lora_bias, DoRA, modules_to_save, every
 * activation, batch sizes 1/7/64, a fan_in_fan_out model, row independence;
 * batches of several groups (LoRA, DoRA, modules_to_save, base only) with
 * interleaved or contiguous rows, on one thread and split across teams of
 * 2 and 3 threads, each row against the reference of its own snapshot.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/forward.h"
#include "../lib/model.h"
#include "../lib/snapshot.h"
#include "../lib/team.h"
#include "testutil.h"

#define MAX_ROWS 64
#define MAX_RANK 16
#define ATOL 1e-5
#define RTOL 1e-4

/* ---- fixture: everything allocated by a test is freed in teardown ---- */

static void *kept[512];
static size_t nkept;

static void *keep(void *p)
{
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_lt(nkept, sizeof(kept) / sizeof(kept[0]));
    kept[nkept++] = p;
    return p;
}

static void teardown(void)
{
    while (nkept)
        free(kept[--nkept]);
}

static float *to_float(const double *v, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof(*f));
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)v[i];
    return f;
}

/* A reference weight [out][in] as lib holds it: f32 W^T, [in][out]. */
static float *weight_of(const double *W, size_t out, size_t in)
{
    float *f = malloc((out * in > 0 ? out * in : 1) * sizeof(*f));
    ck_assert_ptr_nonnull(f);
    for (size_t o = 0; o < out; o++)
        for (size_t i = 0; i < in; i++)
            f[i * out + o] = (float)W[o * in + i];
    return f;
}

static double *rand_kept(uint64_t *seed, size_t n, double lo, double hi)
{
    return keep(tu_rand_array(seed, n, lo, hi));
}

/* ---- a model built by hand, with its double twin for the reference ---- */

struct spec_layer {
    int in, out;
    const char *act;
    bool bias;
};

struct fixture {
    struct model *m;
    struct snapshot *snap;
    size_t n;
    struct tu_layer ref[8];
    struct tu_lora lora[8];
};

static void build_model(struct fixture *f, const struct spec_layer *sp, size_t n, uint64_t seed)
{
    struct model *m = calloc(1, sizeof(*m));
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_le(n, 8);
    m->nlayers = n;
    m->layers = calloc(n, sizeof(*m->layers));
    ck_assert_ptr_nonnull(m->layers);
    memset(f, 0, sizeof(*f));
    f->n = n;
    for (size_t l = 0; l < n; l++) {
        struct model_layer *L = &m->layers[l];
        size_t nw = (size_t)sp[l].in * (size_t)sp[l].out;
        char name[32];
        double bound = 1.0 / sqrt(sp[l].in);
        double *W = rand_kept(&seed, nw, -bound, bound);
        double *b = sp[l].bias ? rand_kept(&seed, (size_t)sp[l].out, -0.5, 0.5) : NULL;
        snprintf(name, sizeof(name), "layers.%zu.proj", l);
        L->name = strdup(name);
        L->in_features = sp[l].in;
        L->out_features = sp[l].out;
        L->has_bias = sp[l].bias;
        L->act = (enum model_act)model_act_parse(sp[l].act);
        ck_assert_int_ge((int)L->act, 0);
        L->weight = weight_of(W, (size_t)sp[l].out, (size_t)sp[l].in);
        L->bias = b ? to_float(b, (size_t)sp[l].out) : NULL;
        if (sp[l].in > m->max_width)
            m->max_width = sp[l].in;
        if (sp[l].out > m->max_width)
            m->max_width = sp[l].out;
        f->ref[l] = (struct tu_layer){sp[l].in, sp[l].out, sp[l].act, W, b, NULL};
    }
    m->in_features = sp[0].in;
    m->out_features = sp[n - 1].out;
    f->m = m;
    f->snap = NULL;
}

static void free_fixture(struct fixture *f)
{
    model_free(&f->m);
    snapshot_free(&f->snap);
}

static struct snapshot *snap_of(struct fixture *f)
{
    if (!f->snap) {
        f->snap = snapshot_new(f->n);
        ck_assert_ptr_nonnull(f->snap);
    }
    return f->snap;
}

/* DoRA's per-row scale m / ||W + s B A||_row, in double, as staging stores it. */
static float *dora_scale(const struct tu_layer *L, const struct tu_lora *lo)
{
    float *d = malloc(sizeof(*d) * (size_t)L->out);
    ck_assert_ptr_nonnull(d);
    for (int o = 0; o < L->out; o++) {
        double ss = 0;
        for (int i = 0; i < L->in; i++) {
            double ba = 0;
            for (int k = 0; k < lo->r; k++)
                ba += lo->B[(size_t)o * lo->r + k] * lo->A[(size_t)k * L->in + i];
            double w = L->W[(size_t)o * L->in + i] + lo->scaling * ba;
            ss += w * w;
        }
        d[o] = (float)(lo->magnitude[o] / sqrt(ss));
    }
    return d;
}

/* Gives layer l a LoRA delta of rank r (values from `seed`). */
static void add_lora(struct fixture *f, size_t l, int r, double scaling, bool bias_B, bool dora,
                     uint64_t seed, double bmax)
{
    struct tu_layer *L = &f->ref[l];
    struct tu_lora *tl = &f->lora[l];
    struct snapshot_lora *lo = calloc(1, sizeof(*lo));
    ck_assert_ptr_nonnull(lo);
    *tl = (struct tu_lora){.r = r, .scaling = (float)scaling};
    tl->A = rand_kept(&seed, (size_t)r * L->in, -1.0 / sqrt(L->in), 1.0 / sqrt(L->in));
    tl->B = rand_kept(&seed, (size_t)L->out * r, -bmax, bmax);
    tl->bias_B = bias_B ? rand_kept(&seed, (size_t)L->out, -0.3, 0.3) : NULL;
    tl->magnitude = dora ? rand_kept(&seed, (size_t)L->out, 0.5, 1.5) : NULL;
    lo->rank = r;
    lo->alpha = scaling * r;
    lo->scaling = (float)scaling;
    lo->A = to_float(tl->A, (size_t)r * L->in);
    lo->B = to_float(tl->B, (size_t)L->out * r);
    lo->bias_B = bias_B ? to_float(tl->bias_B, (size_t)L->out) : NULL;
    lo->dora_scale = dora ? dora_scale(L, tl) : NULL;
    snap_of(f)->layers[l].lora = lo;
    L->lora = tl;
    if (r > f->snap->rank)
        f->snap->rank = r;
}

/* modules_to_save: replaces layer l's weight (and bias when `bias`). */
static void replace_layer(struct fixture *f, size_t l, bool bias, uint64_t seed)
{
    struct tu_layer *L = &f->ref[l];
    size_t nw = (size_t)L->in * (size_t)L->out;
    double *W = rand_kept(&seed, nw, -0.3, 0.3);
    snap_of(f)->layers[l].weight = weight_of(W, (size_t)L->out, (size_t)L->in);
    L->W = W;
    if (bias) {
        double *b = rand_kept(&seed, (size_t)L->out, -1, 1);
        f->snap->layers[l].bias = to_float(b, (size_t)L->out);
        L->b = b;
    }
}

/* Runs `rows` random rows through forward_run and the reference; asserts
 * they agree. Returns nothing; output checked in place. */
static void check_against_ref(struct fixture *f, int rows, uint64_t seed)
{
    const struct model *m = f->m;
    size_t nin = (size_t)rows * m->in_features, nout = (size_t)rows * m->out_features;
    double *x = tu_rand_array(&seed, nin, -1, 1);
    float *xf = to_float(x, nin);
    float *y = calloc(nout, sizeof(*y));
    double *want = calloc(nout, sizeof(*want));
    struct forward_scratch *s = forward_scratch_new(m, MAX_ROWS, MAX_RANK);
    ck_assert_ptr_nonnull(s);
    ck_assert(y && want);

    forward_run(m, f->snap, xf, rows, y, s);
    tu_ref_forward(f->ref, f->n, x, rows, want);
    double worst = tu_worst_ratio(y, want, nout, ATOL, RTOL);
    ck_assert_msg(worst <= 1.0, "rows %d: worst error ratio %g (y[0]=%.9g want %.9g)", rows, worst,
                  y[0], want[0]);
    /* x is untouched. */
    for (size_t i = 0; i < nin; i++)
        ck_assert(xf[i] == (float)x[i]);

    forward_scratch_free(&s);
    ck_assert_ptr_null(s);
    free(x);
    free(xf);
    free(y);
    free(want);
}

static const int batch_sizes[] = {1, 7, 64};

/* Uneven widths catch stride mix-ups. */
static const struct spec_layer three[] = {
    {33, 20, "relu", true},
    {20, 47, "gelu", false},
    {47, 9, "none", true},
};

/* ---- tests ---- */

START_TEST(test_base_only)
{
    struct fixture f;
    build_model(&f, three, 3, 100);
    check_against_ref(&f, batch_sizes[_i], 1);
    /* An empty snapshot is the base model. */
    snap_of(&f);
    check_against_ref(&f, batch_sizes[_i], 1);
    free_fixture(&f);
}
END_TEST

static const int ranks[] = {1, 4, 16};

START_TEST(test_lora_ranks)
{
    /* _i: rank index x batch index */
    int r = ranks[_i / 3], rows = batch_sizes[_i % 3];
    struct fixture f;
    build_model(&f, three, 3, 200);
    add_lora(&f, 0, r, 16.0 / r, false, false, 300, 0.2);
    add_lora(&f, 2, r, 2.0, false, false, 301, 0.2);
    check_against_ref(&f, rows, 2);
    free_fixture(&f);
}
END_TEST

START_TEST(test_lora_mixed_ranks)
{
    struct fixture f;
    build_model(&f, three, 3, 210);
    add_lora(&f, 0, 3, 1.5, false, false, 310, 0.2);
    add_lora(&f, 1, 16, 0.5, false, false, 311, 0.2);
    add_lora(&f, 2, 5, 4.0 / sqrt(5.0), false, false, 312, 0.2); /* rsLoRA-style */
    check_against_ref(&f, batch_sizes[_i], 3);
    free_fixture(&f);
}
END_TEST

START_TEST(test_lora_bias)
{
    struct fixture f;
    build_model(&f, three, 3, 220);
    add_lora(&f, 0, 4, 2.0, true, false, 320, 0.2);  /* base bias + bias_B */
    add_lora(&f, 1, 8, 0.75, true, false, 321, 0.2); /* no base bias */
    check_against_ref(&f, batch_sizes[_i], 4);
    free_fixture(&f);
}
END_TEST

START_TEST(test_dora)
{
    struct fixture f;
    build_model(&f, three, 3, 230);
    add_lora(&f, 0, 8, 2.0, false, true, 330, 0.2);
    add_lora(&f, 1, 2, 1.0, false, true, 331, 0.2);
    add_lora(&f, 2, 16, 0.5, true, true, 332, 0.2); /* DoRA with lora_bias too */
    check_against_ref(&f, batch_sizes[_i], 5);
    free_fixture(&f);
}
END_TEST

START_TEST(test_modules_to_save)
{
    struct fixture f;
    build_model(&f, three, 3, 240);
    replace_layer(&f, 0, false, 340); /* weight only: base bias stays */
    replace_layer(&f, 1, false, 341); /* layer without bias */
    replace_layer(&f, 2, true, 342);  /* weight and bias, plus LoRA */
    add_lora(&f, 2, 4, 2.0, false, false, 343, 0.2);
    check_against_ref(&f, batch_sizes[_i], 6);
    free_fixture(&f);
}
END_TEST

static const char *const acts[] = {"none", "relu", "gelu", "gelu_tanh", "silu", "tanh", "sigmoid"};

START_TEST(test_each_activation)
{
    struct spec_layer sp[] = {
        {16, 24, acts[_i], true},
        {24, 8, acts[(_i + 3) % 7], true},
    };
    struct fixture f;
    build_model(&f, sp, 2, 250 + (uint64_t)_i);
    add_lora(&f, 0, 4, 2.0, false, false, 350, 0.3);
    check_against_ref(&f, 7, 7);
    check_against_ref(&f, 1, 8);
    free_fixture(&f);
}
END_TEST

START_TEST(test_rows_independent)
{
    struct fixture f;
    const int rows = 7;
    build_model(&f, three, 3, 260);
    add_lora(&f, 0, 8, 2.0, true, false, 360, 0.2);
    add_lora(&f, 1, 3, 1.0, false, true, 361, 0.2);
    const struct model *m = f.m;
    size_t in = (size_t)m->in_features, out = (size_t)m->out_features;
    uint64_t seed = 9;
    double *x = keep(tu_rand_array(&seed, rows * in, -1, 1));
    float *xf = keep(to_float(x, rows * in));
    float *y = keep(calloc(rows * out, sizeof(float)));
    float *y1 = keep(calloc(out, sizeof(float)));
    struct forward_scratch *s = forward_scratch_new(m, MAX_ROWS, MAX_RANK);
    ck_assert_ptr_nonnull(s);
    forward_run(m, f.snap, xf, rows, y, s);
    for (int r = 0; r < rows; r++) {
        forward_run(m, f.snap, xf + (size_t)r * in, 1, y1, s);
        for (size_t o = 0; o < out; o++) {
            float a = y[(size_t)r * out + o], b = y1[o];
            ck_assert_msg(fabsf(a - b) <= 1e-6f + 1e-5f * fabsf(b),
                          "row %d col %zu: batch %.9g alone %.9g", r, o, a, b);
        }
    }
    forward_scratch_free(&s);
    free_fixture(&f);
}
END_TEST

/* Overflowing LoRA weights (finite, huge) give non-finite outputs without
 * harm: what a canary's non-finite counters see. */
START_TEST(test_overflow_is_non_finite)
{
    struct fixture f;
    build_model(&f, three, 3, 270);
    add_lora(&f, 0, 8, 2.0, false, false, 370, 1e30);
    add_lora(&f, 1, 8, 2.0, false, false, 371, 1e30);
    size_t out = (size_t)f.m->out_features;
    uint64_t seed = 10;
    double *x = keep(tu_rand_array(&seed, 33, -1, 1));
    float *xf = keep(to_float(x, 33));
    float *y = keep(calloc(out, sizeof(float)));
    struct forward_scratch *s = forward_scratch_new(f.m, 4, MAX_RANK);
    forward_run(f.m, f.snap, xf, 1, y, s);
    int nonfinite = 0;
    for (size_t o = 0; o < out; o++)
        nonfinite += !isfinite(y[o]);
    ck_assert_int_gt(nonfinite, 0);
    forward_scratch_free(&s);
    free_fixture(&f);
}
END_TEST

/* A fan_in_fan_out model loaded from a file: model.c transposes, forward.c
 * computes x W^T with the transposed memory. */
START_TEST(test_fan_in_fan_out_model)
{
    char *dir = keep(tu_mkdtemp());
    char *cfg = keep(tu_path(dir, "config.json"));
    char *st = keep(tu_path(dir, "model.safetensors"));
    uint64_t seed = 280;
    const int in = 12, hid = 10, out = 6;
    double *w0f = rand_kept(&seed, (size_t)in * hid, -0.4, 0.4); /* file [in][hid] */
    double *b0 = rand_kept(&seed, (size_t)hid, -0.4, 0.4);
    double *w1 = rand_kept(&seed, (size_t)out * hid, -0.4, 0.4);  /* file [out][hid] */
    double *w0 = keep(malloc(sizeof(double) * (size_t)in * hid)); /* [hid][in] */
    for (int i = 0; i < in; i++)
        for (int o = 0; o < hid; o++)
            w0[o * in + i] = w0f[i * hid + o];
    tu_write_text(cfg,
                  "{\"layers\": [{\"name\": \"c0\", \"in_features\": %d, \"out_features\": %d, "
                  "\"bias\": true, \"activation\": \"gelu_tanh\", \"fan_in_fan_out\": true},"
                  "{\"name\": \"c1\", \"in_features\": %d, \"out_features\": %d}]}",
                  in, hid, hid, out);
    struct tu_tensor t[] = {
        {"c0.weight", "F32", 2, {(uint64_t)in, (uint64_t)hid}, w0f},
        {"c0.bias", "F32", 1, {(uint64_t)hid}, b0},
        {"c1.weight", "F32", 2, {(uint64_t)out, (uint64_t)hid}, w1},
    };
    tu_write_safetensors(st, t, 3);

    struct fixture f;
    struct lorad_error err = {0};
    memset(&f, 0, sizeof(f));
    ck_assert_msg(model_load(dir, &f.m, NULL, &err) == 0, "%s", err.msg);
    f.n = 2;
    f.ref[0] = (struct tu_layer){in, hid, "gelu_tanh", w0, b0, NULL};
    f.ref[1] = (struct tu_layer){hid, out, "none", w1, NULL, NULL};
    check_against_ref(&f, 7, 11);
    add_lora(&f, 0, 4, 2.0, false, false, 380, 0.2);
    check_against_ref(&f, 64, 12);
    free_fixture(&f);
    tu_rmrf(dir);
}
END_TEST

START_TEST(test_scratch)
{
    struct fixture f;
    build_model(&f, three, 3, 290);
    struct forward_scratch *s = forward_scratch_new(f.m, 5, 3);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(forward_scratch_max_rows(s), 5);
    ck_assert_int_eq(forward_scratch_max_rank(s), 3);
    forward_scratch_free(&s);
    ck_assert_ptr_null(s);
    forward_scratch_free(&s);
    forward_scratch_free(NULL);
    ck_assert_ptr_null(forward_scratch_new(f.m, 0, 3));
    ck_assert_ptr_null(forward_scratch_new(f.m, 5, -1));
    ck_assert_ptr_null(forward_scratch_new(NULL, 5, 3));
    /* max_rank 0: base-only scratch still runs the base model. */
    s = forward_scratch_new(f.m, 2, 0);
    ck_assert_ptr_nonnull(s);
    float x[33] = {0}, y[9];
    double xd[33] = {0}, want[9];
    forward_run(f.m, NULL, x, 1, y, s);
    tu_ref_forward(f.ref, f.n, xd, 1, want);
    ck_assert(tu_worst_ratio(y, want, 9, ATOL, RTOL) <= 1.0);
    forward_scratch_free(&s);
    free_fixture(&f);
}
END_TEST

/* ---- groups: several snapshots in one batch ---- */

#define NGROUPS 4

/* Four fixtures on the same base model (same spec and seed), each with its
 * own snapshot: LoRA + lora_bias; DoRA + modules_to_save with bias; base
 * only; modules_to_save without bias + LoRA. */
static void build_groups(struct fixture f[NGROUPS])
{
    for (int k = 0; k < NGROUPS; k++)
        build_model(&f[k], three, 3, 500);
    add_lora(&f[0], 0, 8, 2.0, true, false, 510, 0.2);
    add_lora(&f[0], 2, 4, 0.5, false, false, 511, 0.2);
    add_lora(&f[1], 1, 16, 1.0, false, true, 520, 0.2);
    replace_layer(&f[1], 2, true, 521);
    replace_layer(&f[3], 0, false, 530);
    add_lora(&f[3], 1, 2, 3.0, true, false, 531, 0.2);
}

/* Row r's group: interleaved (seeded) when `mixed`, else in blocks. */
static int group_of_row(int r, int rows, bool mixed, uint64_t *seed)
{
    if (mixed)
        return (int)(tu_rand(seed) % NGROUPS);
    return r * NGROUPS / rows;
}

struct split_arg {
    const struct model *m;
    const struct forward_group *g;
    int ng, rows, me, n;
    const float *x;
    float *y;
    struct forward_scratch *s;
    struct team_barrier *b;
};

static void *split_main(void *arg)
{
    struct split_arg *a = arg;
    forward_run_split(a->m, a->g, a->ng, a->x, a->rows, a->y, a->s, a->me, a->n, team_barrier_cb,
                      a->b);
    return NULL;
}

/* The groups' forward on `team` threads (1: forward_run_groups). */
static void run_team(const struct model *m, const struct forward_group *g, int ng, const float *x,
                     int rows, float *y, struct forward_scratch *s, int team)
{
    pthread_t tid[4];
    struct split_arg a[4];
    struct team_barrier b;
    if (team == 1) {
        forward_run_groups(m, g, ng, x, rows, y, s);
        return;
    }
    team_barrier_init(&b, team);
    for (int k = 0; k < team; k++) {
        a[k] = (struct split_arg){m, g, ng, rows, k, team, x, y, s, &b};
        ck_assert_int_eq(pthread_create(&tid[k], NULL, split_main, &a[k]), 0);
    }
    for (int k = 0; k < team; k++)
        pthread_join(tid[k], NULL);
}

/* `rows` rows spread over the four groups, run on `team` threads: every
 * row matches its own snapshot's reference and its forward alone. */
static void check_groups(int rows, bool mixed, int team)
{
    struct fixture f[NGROUPS];
    const struct model *m;
    size_t in, out;
    uint64_t seed = 600 + (uint64_t)rows;
    int *idx = keep(calloc((size_t)rows, sizeof(int)));
    int *grp = keep(calloc((size_t)rows, sizeof(int)));
    struct forward_group g[NGROUPS];
    int ng = 0, used = 0;

    build_groups(f);
    m = f[0].m;
    in = (size_t)m->in_features;
    out = (size_t)m->out_features;
    double *x = keep(tu_rand_array(&seed, (size_t)rows * in, -1, 1));
    float *xf = keep(to_float(x, (size_t)rows * in));
    float *y = keep(calloc((size_t)rows * out, sizeof(float)));
    float *y1 = keep(calloc(out, sizeof(float)));
    double *want = keep(calloc(out, sizeof(double)));
    struct forward_scratch *s = forward_scratch_new_lanes(m, MAX_ROWS, MAX_RANK, 3);
    ck_assert_ptr_nonnull(s);
    for (int r = 0; r < rows; r++)
        grp[r] = group_of_row(r, rows, mixed, &seed);
    for (int k = 0; k < NGROUPS; k++) {
        int n = 0;
        for (int r = 0; r < rows; r++)
            if (grp[r] == k)
                idx[used + n++] = r;
        if (n == 0)
            continue;
        g[ng++] = (struct forward_group){f[k].snap, idx + used, n};
        used += n;
    }
    ck_assert_int_eq(used, rows);
    run_team(m, g, ng, xf, rows, y, s, team);
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * out;
        tu_ref_forward(f[grp[r]].ref, f[grp[r]].n, x + (size_t)r * in, 1, want);
        double worst = tu_worst_ratio(yr, want, out, ATOL, RTOL);
        ck_assert_msg(worst <= 1.0, "rows %d team %d row %d (group %d): worst ratio %g", rows, team,
                      r, grp[r], worst);
        forward_run(m, f[grp[r]].snap, xf + (size_t)r * in, 1, y1, s);
        for (size_t o = 0; o < out; o++)
            ck_assert_msg(fabsf(yr[o] - y1[o]) <= 1e-6f + 1e-5f * fabsf(y1[o]),
                          "row %d col %zu: in batch %.9g alone %.9g", r, o, yr[o], y1[o]);
    }
    forward_scratch_free(&s);
    for (int k = 0; k < NGROUPS; k++)
        free_fixture(&f[k]);
}

static const int group_rows[] = {1, 5, 23, 64};

START_TEST(test_groups_mixed)
{
    check_groups(group_rows[_i], true, 1);
}
END_TEST

START_TEST(test_groups_blocks)
{
    check_groups(group_rows[_i], false, 1);
}
END_TEST

START_TEST(test_split_two)
{
    check_groups(group_rows[_i], true, 2);
    check_groups(group_rows[_i], false, 2);
}
END_TEST

START_TEST(test_split_three)
{
    check_groups(group_rows[_i], true, 3);
}
END_TEST

/* One group covering the batch whose snapshot replaces a layer: its weight
 * is the base sgemm's, split or not. */
START_TEST(test_split_single_replacing_group)
{
    struct fixture f;
    const int rows = 9, team = 1 + _i;
    build_model(&f, three, 3, 700);
    replace_layer(&f, 1, true, 701);
    add_lora(&f, 1, 4, 1.5, false, true, 702, 0.2);
    const struct model *m = f.m;
    size_t in = (size_t)m->in_features, out = (size_t)m->out_features;
    uint64_t seed = 703;
    double *x = keep(tu_rand_array(&seed, rows * in, -1, 1));
    float *xf = keep(to_float(x, rows * in));
    float *y = keep(calloc(rows * out, sizeof(float)));
    double *want = keep(calloc(rows * out, sizeof(double)));
    int idx[9];
    for (int r = 0; r < rows; r++)
        idx[r] = r;
    struct forward_group g = {f.snap, idx, rows};
    struct forward_scratch *s = forward_scratch_new_lanes(m, MAX_ROWS, MAX_RANK, 3);
    ck_assert_ptr_nonnull(s);
    run_team(m, &g, 1, xf, rows, y, s, team);
    tu_ref_forward(f.ref, f.n, x, rows, want);
    ck_assert(tu_worst_ratio(y, want, rows * out, ATOL, RTOL) <= 1.0);
    forward_scratch_free(&s);
    free_fixture(&f);
}
END_TEST

/* Slices cover the features exactly, 16-float aligned, some empty. */
START_TEST(test_slices)
{
    static const int outs[] = {1, 9, 16, 47, 1024, 1025};
    for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++)
        for (int n = 1; n <= 4; n++) {
            int next = 0;
            for (int me = 0; me < n; me++) {
                int c0, c1;
                forward_slice(outs[i], me, n, &c0, &c1);
                ck_assert_int_eq(c0, next);
                ck_assert_int_ge(c1, c0);
                ck_assert(c0 % 16 == 0 || c0 == outs[i]);
                next = c1;
            }
            ck_assert_int_eq(next, outs[i]);
        }
}
END_TEST

static Suite *forward_suite(void)
{
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create("math");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_loop_test(tc, test_base_only, 0, 3);
    tcase_add_loop_test(tc, test_lora_ranks, 0, 9);
    tcase_add_loop_test(tc, test_lora_mixed_ranks, 0, 3);
    tcase_add_loop_test(tc, test_lora_bias, 0, 3);
    tcase_add_loop_test(tc, test_dora, 0, 3);
    tcase_add_loop_test(tc, test_modules_to_save, 0, 3);
    tcase_add_loop_test(tc, test_each_activation, 0, 7);
    tcase_add_test(tc, test_rows_independent);
    tcase_add_test(tc, test_overflow_is_non_finite);
    tcase_add_test(tc, test_fan_in_fan_out_model);
    tcase_add_test(tc, test_scratch);
    tcase_add_loop_test(tc, test_groups_mixed, 0, 4);
    tcase_add_loop_test(tc, test_groups_blocks, 0, 4);
    tcase_add_loop_test(tc, test_split_two, 0, 4);
    tcase_add_loop_test(tc, test_split_three, 0, 4);
    tcase_add_loop_test(tc, test_split_single_replacing_group, 0, 3);
    tcase_add_test(tc, test_slices);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(forward_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
