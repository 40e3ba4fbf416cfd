/* lorad — tools/mkdemo.c: `lorad-mkdemo`, writes a deterministic demo base
 * model, a set of PEFT LoRA adapters (good ones and deliberately bad ones)
 * and a lorad config that serves them.
 *
 *   lorad-mkdemo [--width W] [--layers L] [--seed N] DIR
 *
 * Layout written (one line per file printed on stdout):
 *   DIR/model/{config.json,model.safetensors}   L layers "layers.{i}.proj",
 *       W x W, bias, relu between layers (none on the last), F32
 *   DIR/adapters/<name>/{adapter_config.json,adapter_model.safetensors}
 *       in real PEFT layout ("base_model.model.<layer>.lora_A.weight" ...)
 *   DIR/lorad.json                               a config serving them
 * Every value comes from a fixed PRNG stream per tensor (seeded from --seed
 * and the tensor's name), so the same arguments always write the same
 * bytes. Exits non-zero on any failure.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../lib/errors.h"
#include "../lib/half.h"
#include "../lib/safetensors.h"
#include "../lib/stwrite.h"

#define MKDEMO_MAX_WIDTH 16384
#define MKDEMO_MAX_LAYERS 64
#define MKDEMO_MAX_TENSORS 256 /* 3 per layer (DoRA) + one extra layer */
#define MKDEMO_PREFIX "base_model.model."

struct demo {
    char *dir; /* absolute */
    int width;
    int layers;
    uint64_t seed;
};

enum adapter_kind {
    AK_GOOD,
    AK_OVERFLOW,   /* finite but huge lora_B: outputs overflow to Inf */
    AK_BAD_RANK,   /* r above max_rank */
    AK_BAD_DORA,   /* use_dora true */
    AK_BAD_MODULE, /* LoRA for a layer the model lacks */
    AK_BAD_SHAPE,  /* lora_A [r, W+1] */
    AK_BAD_NAN,    /* a NaN in lora_B */
    AK_BAD_PICKLE, /* only adapter_model.bin */
    AK_BAD_TYPE,   /* peft_type PREFIX_TUNING */
};

struct adapter_spec {
    const char *name;
    int r;
    double alpha;
    enum st_dtype dtype;
    int layer0_rank; /* rank_pattern {"layers.0.proj": N} when > 0 */
    enum adapter_kind kind;
};

static const struct adapter_spec adapters[] = {
    {"demo-a", 8, 16, ST_F32, 0, AK_GOOD},
    {"demo-b", 16, 32, ST_F32, 0, AK_GOOD},
    {"demo-c", 4, 8, ST_F32, 8, AK_GOOD},
    {"demo-f16", 8, 16, ST_F16, 0, AK_GOOD},
    {"demo-bf16", 8, 16, ST_BF16, 0, AK_GOOD},
    {"demo-overflow", 8, 16, ST_F32, 0, AK_OVERFLOW},
    {"bad-rank", 64, 128, ST_F32, 0, AK_BAD_RANK},
    {"bad-dora", 8, 16, ST_F32, 0, AK_BAD_DORA},
    {"bad-module", 8, 16, ST_F32, 0, AK_BAD_MODULE},
    {"bad-shape", 8, 16, ST_F32, 0, AK_BAD_SHAPE},
    {"bad-nan", 8, 16, ST_F32, 0, AK_BAD_NAN},
    {"bad-pickle", 8, 16, ST_F32, 0, AK_BAD_PICKLE},
    {"bad-type", 8, 16, ST_F32, 0, AK_BAD_TYPE},
};

/* ---- small helpers ---- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The PRNG state of one tensor: the seed mixed with FNV-1a of its name. */
static uint64_t stream_for(const struct demo *d, const char *tag, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ d->seed;
    for (const char *p = tag; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    return h;
}

static void fill_uniform(float *a, size_t n, uint64_t state, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(lo + (hi - lo) * ((double)(splitmix(&state) >> 11) / 9007199254740992.0));
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "lorad-mkdemo: mkdir %s: %s\n", buf, strerror(errno));
            return -1;
        }
        buf[i] = c;
    }
    return 0;
}

static int write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        fprintf(stderr, "lorad-mkdemo: write %s: %s\n", path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "lorad-mkdemo: close %s: %s\n", path, strerror(errno));
        return -1;
    }
    printf("wrote %s\n", path);
    return 0;
}

/* Pretty-prints `j` to `path` with a trailing newline; frees j. */
static int write_json(const char *path, cJSON *j)
{
    char *text = j ? cJSON_Print(j) : NULL;
    int rc = -1;
    if (!text) {
        fprintf(stderr, "lorad-mkdemo: out of memory building %s\n", path);
        goto fail;
    }
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (!withnl)
        goto fail;
    text = withnl;
    text[n] = '\n';
    text[n + 1] = '\0';
    rc = write_bytes(path, text, n + 1);
fail:
    free(text);
    cJSON_Delete(j);
    return rc;
}

/* ---- tensors ---- */

/* A list of tensors being assembled for stwrite_file; owns the data. */
struct tlist {
    struct stwrite_tensor t[MKDEMO_MAX_TENSORS];
    char names[MKDEMO_MAX_TENSORS][256];
    size_t n;
};

static void tlist_free(struct tlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free((void *)l->t[i].data);
    l->n = 0;
}

/* Adds a tensor of shape [d0] or [d0, d1] (d1 == 0: 1-D) holding `v`
 * (n floats, taken over) converted to `dtype`. */
static int tlist_add(struct tlist *l, const char *name, enum st_dtype dtype, uint64_t d0,
                     uint64_t d1, float *v)
{
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    struct stwrite_tensor *t;

    if (l->n >= sizeof(l->t) / sizeof(l->t[0]) || strlen(name) >= sizeof(l->names[0])) {
        free(v);
        return -1;
    }
    t = &l->t[l->n];
    snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
    t->name = l->names[l->n];
    t->dtype = dtype;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    if (dtype == ST_F16 || dtype == ST_BF16) {
        uint16_t *h = malloc(n * sizeof(*h));
        if (!h) {
            free(v);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            h[i] = dtype == ST_F16 ? half_f32_to_f16(v[i]) : half_f32_to_bf16(v[i]);
        free(v);
        t->data = h;
    } else {
        t->data = v;
    }
    l->n++;
    return 0;
}

/* A fresh uniform random tensor named `name`. */
static int tlist_rand(struct tlist *l, const struct demo *d, const char *tag, const char *name,
                      enum st_dtype dtype, uint64_t d0, uint64_t d1, double lo, double hi)
{
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    float *v = malloc((n ? n : 1) * sizeof(*v));
    if (!v)
        return -1;
    fill_uniform(v, n, stream_for(d, tag, name), lo, hi);
    return tlist_add(l, name, dtype, d0, d1, v);
}

static int tlist_write(struct tlist *l, const char *path)
{
    struct lorad_error err = {0};
    if (stwrite_file(path, l->t, l->n, &err) != 0) {
        fprintf(stderr, "lorad-mkdemo: %s: %s\n", path, err.msg);
        return -1;
    }
    printf("wrote %s\n", path);
    return 0;
}

/* ---- the model ---- */

static int write_model(const struct demo *d)
{
    char *mdir = join(d->dir, "model"), *path = NULL;
    struct tlist *l = calloc(1, sizeof(*l));
    cJSON *cfg = cJSON_CreateObject(), *layers = cJSON_AddArrayToObject(cfg, "layers");
    double bound = 1.0 / sqrt((double)d->width);
    uint64_t w = (uint64_t)d->width;
    char name[256];
    int rc = -1;

    if (!mdir || !l || !layers || mkdir_p(mdir) != 0)
        goto fail;
    for (int i = 0; i < d->layers; i++) {
        cJSON *jl = cJSON_CreateObject();
        if (!jl)
            goto fail;
        cJSON_AddItemToArray(layers, jl);
        snprintf(name, sizeof(name), "layers.%d.proj", i);
        cJSON_AddStringToObject(jl, "name", name);
        cJSON_AddNumberToObject(jl, "in_features", d->width);
        cJSON_AddNumberToObject(jl, "out_features", d->width);
        cJSON_AddBoolToObject(jl, "bias", 1);
        cJSON_AddStringToObject(jl, "activation", i + 1 < d->layers ? "relu" : "none");
        cJSON_AddBoolToObject(jl, "fan_in_fan_out", 0);
        snprintf(name, sizeof(name), "layers.%d.proj.weight", i);
        if (tlist_rand(l, d, "model", name, ST_F32, w, w, -bound, bound) != 0)
            goto fail;
        snprintf(name, sizeof(name), "layers.%d.proj.bias", i);
        if (tlist_rand(l, d, "model", name, ST_F32, w, 0, -bound, bound) != 0)
            goto fail;
    }
    if (!(path = join(mdir, "config.json")))
        goto fail;
    rc = write_json(path, cfg); /* frees cfg */
    cfg = NULL;
    if (rc != 0)
        goto fail;
    rc = -1;
    free(path);
    path = join(mdir, "model.safetensors");
    rc = path ? tlist_write(l, path) : -1;
fail:
    cJSON_Delete(cfg);
    if (l)
        tlist_free(l);
    free(l);
    free(path);
    free(mdir);
    return rc;
}

/* ---- adapters ---- */

static cJSON *adapter_config(const struct adapter_spec *a)
{
    cJSON *c = cJSON_CreateObject(), *rp, *tm;
    if (!c)
        return NULL;
    cJSON_AddObjectToObject(c, "alpha_pattern");
    cJSON_AddNullToObject(c, "auto_mapping");
    cJSON_AddStringToObject(c, "base_model_name_or_path", "lorad-demo");
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(c, "inference_mode", 1);
    cJSON_AddBoolToObject(c, "init_lora_weights", 1);
    cJSON_AddNullToObject(c, "layers_pattern");
    cJSON_AddNullToObject(c, "layers_to_transform");
    cJSON_AddNumberToObject(c, "lora_alpha", a->alpha);
    cJSON_AddBoolToObject(c, "lora_bias", 0);
    cJSON_AddNumberToObject(c, "lora_dropout", 0.0);
    cJSON_AddNullToObject(c, "modules_to_save");
    cJSON_AddStringToObject(c, "peft_type", a->kind == AK_BAD_TYPE ? "PREFIX_TUNING" : "LORA");
    cJSON_AddNumberToObject(c, "r", a->r);
    rp = cJSON_AddObjectToObject(c, "rank_pattern");
    if (rp && a->layer0_rank > 0)
        cJSON_AddNumberToObject(rp, "layers.0.proj", a->layer0_rank);
    cJSON_AddNullToObject(c, "revision");
    tm = cJSON_AddArrayToObject(c, "target_modules");
    if (tm)
        cJSON_AddItemToArray(tm, cJSON_CreateString("proj"));
    cJSON_AddNullToObject(c, "task_type");
    cJSON_AddBoolToObject(c, "use_dora", a->kind == AK_BAD_DORA);
    cJSON_AddBoolToObject(c, "use_rslora", 0);
    return c;
}

/* lora_A, lora_B (and DoRA magnitude) of one layer. */
static int adapter_layer(struct tlist *l, const struct demo *d, const struct adapter_spec *a,
                         const char *layer, int rank)
{
    char name[256];
    uint64_t w = (uint64_t)d->width;
    double bound = 1.0 / sqrt((double)d->width);
    double bmax = a->kind == AK_OVERFLOW ? 1e30 : 0.05;
    uint64_t a_in = a->kind == AK_BAD_SHAPE ? w + 1 : w;

    snprintf(name, sizeof(name), MKDEMO_PREFIX "%s.lora_A.weight", layer);
    if (tlist_rand(l, d, a->name, name, a->dtype, (uint64_t)rank, a_in, -bound, bound) != 0)
        return -1;
    snprintf(name, sizeof(name), MKDEMO_PREFIX "%s.lora_B.weight", layer);
    if (tlist_rand(l, d, a->name, name, a->dtype, w, (uint64_t)rank, -bmax, bmax) != 0)
        return -1;
    if (a->kind == AK_BAD_NAN && a->dtype == ST_F32) {
        float *b = (float *)l->t[l->n - 1].data;
        b[(size_t)w * (size_t)rank / 2] = NAN;
    }
    if (a->kind == AK_BAD_DORA) {
        snprintf(name, sizeof(name), MKDEMO_PREFIX "%s.lora_magnitude_vector", layer);
        if (tlist_rand(l, d, a->name, name, a->dtype, w, 0, 0.5, 1.5) != 0)
            return -1;
    }
    return 0;
}

static int adapter_tensors(struct tlist *l, const struct demo *d, const struct adapter_spec *a)
{
    char layer[64];
    for (int i = 0; i < d->layers; i++) {
        int rank = i == 0 && a->layer0_rank > 0 ? a->layer0_rank : a->r;
        snprintf(layer, sizeof(layer), "layers.%d.proj", i);
        if (adapter_layer(l, d, a, layer, rank) != 0)
            return -1;
    }
    if (a->kind == AK_BAD_MODULE) {
        /* A layer the model lacks: layers.9.proj, or one past the last. */
        snprintf(layer, sizeof(layer), "layers.%d.proj", d->layers > 9 ? d->layers : 9);
        if (adapter_layer(l, d, a, layer, a->r) != 0)
            return -1;
    }
    return 0;
}

/* What a torch.save() file starts with; lorad must refuse it by name. */
static int write_pickle(const char *adir)
{
    static const unsigned char pickle[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                           0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e, '.'};
    char *path = join(adir, "adapter_model.bin"), *st = join(adir, "adapter_model.safetensors");
    int rc = -1;
    if (path && st) {
        if (unlink(st) != 0 && errno != ENOENT)
            fprintf(stderr, "lorad-mkdemo: unlink %s: %s\n", st, strerror(errno));
        else
            rc = write_bytes(path, pickle, sizeof(pickle));
    }
    free(path);
    free(st);
    return rc;
}

static int write_adapter(const struct demo *d, const struct adapter_spec *a)
{
    char *adirs = join(d->dir, "adapters"), *adir = NULL, *path = NULL;
    struct tlist *l = calloc(1, sizeof(*l));
    int rc = -1;

    if (!adirs || !l || !(adir = join(adirs, a->name)) || mkdir_p(adir) != 0)
        goto fail;
    path = join(adir, "adapter_config.json");
    if (!path || write_json(path, adapter_config(a)) != 0)
        goto fail;
    free(path);
    path = NULL;
    if (a->kind == AK_BAD_PICKLE) {
        rc = write_pickle(adir);
        goto fail;
    }
    if (adapter_tensors(l, d, a) != 0) {
        fprintf(stderr, "lorad-mkdemo: %s: out of memory or too many tensors\n", a->name);
        goto fail;
    }
    path = join(adir, "adapter_model.safetensors");
    rc = path ? tlist_write(l, path) : -1;
fail:
    if (l)
        tlist_free(l);
    free(l);
    free(path);
    free(adir);
    free(adirs);
    return rc;
}

/* ---- lorad.json ---- */

static int write_lorad_config(const struct demo *d)
{
    cJSON *c = cJSON_CreateObject(), *tm;
    char *mdir = join(d->dir, "model"), *adir = join(d->dir, "adapters");
    char *state = join(d->dir, "state.json"), *path = join(d->dir, "lorad.json");
    char name[64];
    int rc = -1;

    if (!c || !mdir || !adir || !state || !path)
        goto fail;
    cJSON_AddStringToObject(c, "listen", "127.0.0.1:8080");
    cJSON_AddStringToObject(c, "model_dir", mdir);
    cJSON_AddStringToObject(c, "adapter_dir", adir);
    cJSON_AddStringToObject(c, "initial_adapter", "demo-a");
    cJSON_AddStringToObject(c, "state_file", state);
    cJSON_AddNumberToObject(c, "max_rank", 16);
    tm = cJSON_AddArrayToObject(c, "target_modules");
    for (int i = 0; tm && i < d->layers; i++) {
        snprintf(name, sizeof(name), "layers.%d.proj", i);
        cJSON_AddItemToArray(tm, cJSON_CreateString(name));
    }
    cJSON_AddNumberToObject(c, "workers", 0);
    cJSON_AddNumberToObject(c, "history", 4);
    cJSON_AddStringToObject(c, "log_level", "info");
    rc = write_json(path, c);
    c = NULL;
fail:
    cJSON_Delete(c);
    free(mdir);
    free(adir);
    free(state);
    free(path);
    return rc;
}

/* ---- main ---- */

static void usage(FILE *out)
{
    fprintf(out, "usage: lorad-mkdemo [--width W] [--layers L] [--seed N] DIR\n"
                 "  writes DIR/model, DIR/adapters/* and DIR/lorad.json (defaults: width 256,\n"
                 "  layers 4, seed 1)\n");
}

static int parse_num(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    long long v;
    errno = 0;
    v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "lorad-mkdemo: %s: expected an integer in [%lld, %lld]\n", opt, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct demo *d, const char **dir)
{
    long long v;
    d->width = 256;
    d->layers = 4;
    d->seed = 1;
    *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--width")) {
            if (parse_num(a, argv[++i < argc ? i : argc - 1], 1, MKDEMO_MAX_WIDTH, &v) != 0)
                return -1;
            d->width = (int)v;
        } else if (!strcmp(a, "--layers")) {
            if (parse_num(a, argv[++i < argc ? i : argc - 1], 1, MKDEMO_MAX_LAYERS, &v) != 0)
                return -1;
            d->layers = (int)v;
        } else if (!strcmp(a, "--seed")) {
            if (parse_num(a, argv[++i < argc ? i : argc - 1], 0, LLONG_MAX, &v) != 0)
                return -1;
            d->seed = (uint64_t)v;
        } else if (a[0] == '-' || *dir) {
            fprintf(stderr, "lorad-mkdemo: unexpected argument %s\n", a);
            return -1;
        } else {
            *dir = a;
        }
    }
    if (!*dir) {
        fprintf(stderr, "lorad-mkdemo: missing DIR\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct demo d = {0};
    const char *dir;

    if (parse_args(argc, argv, &d, &dir) != 0) {
        usage(stderr);
        return 2;
    }
    if (mkdir_p(dir) != 0 || !(d.dir = realpath(dir, NULL))) {
        fprintf(stderr, "lorad-mkdemo: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (write_model(&d) != 0)
        goto fail;
    for (size_t i = 0; i < sizeof(adapters) / sizeof(adapters[0]); i++)
        if (write_adapter(&d, &adapters[i]) != 0)
            goto fail;
    if (write_lorad_config(&d) != 0)
        goto fail;
    free(d.dir);
    return 0;
fail:
    fprintf(stderr, "lorad-mkdemo: failed writing the demo under %s\n", d.dir);
    free(d.dir);
    return 1;
}
