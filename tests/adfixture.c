/* lorad — tests/adfixture.c: the adapter fixture shared by the staging
 * tests (see adfixture.h). */
#include "adfixture.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/model.h"
#include "../lib/snapshot.h"

const int AF_IN[AF_NL] = {6, 5, 4};
const int AF_OUT[AF_NL] = {5, 4, 3};
const char *const AF_NAMES[AF_NL] = {"layers.0.proj", "layers.1.proj", "head"};
const char *const AF_ACTS[AF_NL] = {"relu", "tanh", "none"};
const bool AF_HASB[AF_NL] = {true, false, true};
const bool AF_FIFO[AF_NL] = {false, true, false}; /* layer 1 stored [in, out] */

struct af_fixture AF;

static void write_model(const char *dir)
{
    struct tu_tensor t[2 * AF_NL];
    double *fileW[AF_NL];
    size_t n = 0;
    char *p;

    p = tu_path(dir, "config.json");
    tu_write_text(p,
                  "{\"layers\": ["
                  "{\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d, \"bias\": true,"
                  " \"activation\": \"%s\"},"
                  "{\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d, \"bias\": false,"
                  " \"activation\": \"%s\", \"fan_in_fan_out\": true},"
                  "{\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d, \"bias\": true,"
                  " \"activation\": \"%s\"}]}",
                  AF_NAMES[0], AF_IN[0], AF_OUT[0], AF_ACTS[0], AF_NAMES[1], AF_IN[1], AF_OUT[1],
                  AF_ACTS[1], AF_NAMES[2], AF_IN[2], AF_OUT[2], AF_ACTS[2]);
    free(p);
    for (int l = 0; l < AF_NL; l++) {
        char *wn = malloc(64), *bn = malloc(64);
        AF.W[l] = tu_rand_array(&AF.rng, (size_t)AF_IN[l] * AF_OUT[l], -0.6, 0.6);
        AF.b[l] = AF_HASB[l] ? tu_rand_array(&AF.rng, (size_t)AF_OUT[l], -0.3, 0.3) : NULL;
        fileW[l] = malloc(sizeof(double) * (size_t)AF_IN[l] * AF_OUT[l]);
        for (int o = 0; o < AF_OUT[l]; o++)
            for (int i = 0; i < AF_IN[l]; i++)
                fileW[l][AF_FIFO[l] ? (size_t)i * AF_OUT[l] + o : (size_t)o * AF_IN[l] + i] =
                    AF.W[l][(size_t)o * AF_IN[l] + i];
        snprintf(wn, 64, "%s.weight", AF_NAMES[l]);
        snprintf(bn, 64, "%s.bias", AF_NAMES[l]);
        t[n++] = (struct tu_tensor){wn,
                                    "F32",
                                    2,
                                    {AF_FIFO[l] ? (uint64_t)AF_IN[l] : (uint64_t)AF_OUT[l],
                                     AF_FIFO[l] ? (uint64_t)AF_OUT[l] : (uint64_t)AF_IN[l]},
                                    fileW[l]};
        if (AF_HASB[l])
            t[n++] = (struct tu_tensor){bn, "F32", 1, {(uint64_t)AF_OUT[l]}, AF.b[l]};
        else
            free(bn);
    }
    p = tu_path(dir, "model.safetensors");
    tu_write_safetensors(p, t, n);
    free(p);
    for (size_t i = 0; i < n; i++)
        free((char *)t[i].name);
    for (int l = 0; l < AF_NL; l++)
        free(fileW[l]);
}

void af_setup(void)
{
    struct lorad_error err = {0, ""};
    char *mdir;

    memset(&AF, 0, sizeof(AF));
    AF.rng = 42;
    AF.root = tu_mkdtemp();
    mdir = tu_path(AF.root, "model");
    AF.adir = tu_path(AF.root, "adapters");
    tu_mkdir(mdir);
    tu_mkdir(AF.adir);
    write_model(mdir);
    ck_assert_msg(model_load(mdir, &AF.m, NULL, &err) == 0, "model_load: %s", err.msg);
    free(mdir);
    AF.adirfd = open(AF.adir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(AF.adirfd, 0);
    ck_assert_int_eq(profile_from_config(AF.m, 0, NULL, 0, &AF.empty, &err), 0);
}

void af_teardown(void)
{
    close(AF.adirfd);
    model_free(&AF.m);
    profile_free(&AF.empty);
    for (int l = 0; l < AF_NL; l++) {
        free(AF.W[l]);
        free(AF.b[l]);
    }
    tu_rmrf(AF.root);
    free(AF.root);
    free(AF.adir);
}

/* ---- building adapters ---- */

void af_init(struct af_adapter *a, const char *name, const char *cfg_extra, int r, double alpha)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->name, sizeof(a->name), "%s", name);
    snprintf(a->cfg, sizeof(a->cfg),
             "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": %g, \"task_type\": null,"
             " \"target_modules\": [\"proj\"]%s%s}",
             r, alpha, cfg_extra && *cfg_extra ? ", " : "", cfg_extra ? cfg_extra : "");
}

/* Adds a tensor of random values in [lo, hi) (rounded to dtype) or of the
 * given values; returns the (rounded) values kept for the reference. */
double *af_add(struct af_adapter *a, const char *key, const char *dtype, int ndim, uint64_t d0,
               uint64_t d1, double lo, double hi)
{
    size_t n = ndim == 1 ? d0 : d0 * d1;
    double *v = tu_rand_array(&AF.rng, n, lo, hi);

    ck_assert_uint_lt(a->n, AD_MAX);
    for (size_t i = 0; i < n; i++)
        v[i] = tu_round_to(dtype, v[i]);
    a->vals[a->n] = v;
    a->t[a->n] = (struct tu_tensor){strdup(key), dtype, ndim, {d0, ndim == 2 ? d1 : 0}, v};
    a->n++;
    return v;
}

double *af_lora(struct af_adapter *a, int layer, const char *part, const char *dtype, uint64_t d0,
                uint64_t d1, int ndim)
{
    char key[256];
    snprintf(key, sizeof(key), "base_model.model.%s.%s", AF_NAMES[layer], part);
    return af_add(a, key, dtype, ndim, d0, d1, -0.5, 0.5);
}

/* lora_A [r, in] and lora_B [out, r] of layer l. */
void af_ab(struct af_adapter *a, int l, int r, const char *dtype, double **A, double **B)
{
    double *x = af_lora(a, l, "lora_A.weight", dtype, (uint64_t)r, (uint64_t)AF_IN[l], 2);
    double *y = af_lora(a, l, "lora_B.weight", dtype, (uint64_t)AF_OUT[l], (uint64_t)r, 2);
    if (A)
        *A = x;
    if (B)
        *B = y;
}

char *af_write(struct af_adapter *a)
{
    char *dir = tu_path(AF.adir, a->name), *p;

    tu_mkdir(dir);
    if (!a->no_cfg) {
        p = tu_path(dir, "adapter_config.json");
        tu_write_text(p, "%s", a->cfg);
        free(p);
    }
    if (!a->no_st) {
        p = tu_path(dir, "adapter_model.safetensors");
        tu_write_safetensors(p, a->t, a->n);
        free(p);
    }
    return dir;
}

void af_free(struct af_adapter *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free((char *)a->t[i].name);
        free(a->vals[i]);
    }
    a->n = 0;
}

/* Writes and frees a simple adapter: LoRA r on the listed layers. */
void af_simple(const char *name, const char *extra, int r, double alpha, unsigned layers)
{
    struct af_adapter a;
    af_init(&a, name, extra, r, alpha);
    for (int l = 0; l < AF_NL; l++)
        if (layers & (1u << l))
            af_ab(&a, l, r, "F32", NULL, NULL);
    free(af_write(&a));
    af_free(&a);
}

/* Same with per-layer ranks (0: no LoRA on that layer). */
void af_ranked(const char *name, const char *extra, int r, double alpha, const int *ranks)
{
    struct af_adapter a;
    af_init(&a, name, extra, r, alpha);
    for (int l = 0; l < AF_NL; l++)
        if (ranks[l])
            af_ab(&a, l, ranks[l], "F32", NULL, NULL);
    free(af_write(&a));
    af_free(&a);
}

/* ---- staging helpers ---- */

int af_stage(const char *name, const struct profile *p, const char *sha, struct snapshot **snap,
             struct profile **pout, struct lorad_error *err)
{
    struct adapter_stage_args args = {AF.adirfd, name, sha, AF.m, p ? p : AF.empty};
    memset(err, 0, sizeof(*err));
    return adapter_stage(&args, snap, pout, err);
}

/* Stages and expects `code` with every NULL-terminated substring in the
 * message. */
void af_expect_err(const char *name, const struct profile *p, const char *sha, int code, ...)
{
    struct snapshot *snap = (struct snapshot *)1;
    struct profile *pout = (struct profile *)1;
    struct lorad_error err;
    va_list ap;
    const char *sub;
    int rc = af_stage(name, p, sha, &snap, &pout, &err);

    ck_assert_msg(rc == code, "adapter %s: got %s (%s), want %s", name, lorad_err_name(rc), err.msg,
                  lorad_err_name(code));
    ck_assert_int_eq(err.code, code);
    ck_assert_ptr_null(snap);
    ck_assert_ptr_null(pout);
    va_start(ap, code);
    while ((sub = va_arg(ap, const char *)))
        ck_assert_msg(strstr(err.msg, sub), "adapter %s: message \"%s\" lacks \"%s\"", name,
                      err.msg, sub);
    va_end(ap);
}

struct snapshot *af_expect_ok(const char *name, const struct profile *p, const char *sha,
                              struct profile **pout)
{
    struct snapshot *snap = NULL;
    struct profile *po = NULL;
    struct lorad_error err;
    int rc = af_stage(name, p, sha, &snap, &po, &err);

    ck_assert_msg(rc == 0, "adapter %s: %s: %s", name, lorad_err_name(rc), err.msg);
    ck_assert_ptr_nonnull(snap);
    if (pout)
        *pout = po;
    else
        profile_free(&po);
    return snap;
}

/* A profile completed from adapter `name` (staged against the empty one). */
struct profile *af_profile_of(const char *name)
{
    struct profile *p = NULL;
    struct snapshot *s = af_expect_ok(name, NULL, NULL, &p);
    snapshot_free(&s);
    ck_assert_ptr_nonnull(p);
    return p;
}

struct profile *af_config_profile(int max_rank, const char *const *t, size_t n)
{
    struct profile *p = NULL;
    struct lorad_error err = {0, ""};
    ck_assert_int_eq(profile_from_config(AF.m, max_rank, t, n, &p, &err), 0);
    return p;
}

/* Makes `path` (relative to adapter_dir) a symlink to `target`, replacing
 * the file there if any. */
void af_relink(const char *path, const char *target)
{
    ck_assert(unlinkat(AF.adirfd, path, 0) == 0 || errno == ENOENT);
    ck_assert_msg(symlinkat(target, AF.adirfd, path) == 0, "symlink %s: %s", path, strerror(errno));
}

/* sha256 of a file by the sha256sum tool (independent of lib/digest.c). */
void af_sha256sum(const char *path, char out[65])
{
    char cmd[4096];
    FILE *f;

    snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%64s", out), 1);
    pclose(f);
}
