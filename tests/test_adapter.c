/* lorad — tests/test_adapter.c: unit tests of lib/adapter.c and
 * lib/snapshot.c: every error staging can produce (SPEC.md 4 and 6) from a
 * crafted adapter, the order in which they are reported, the confinement of
 * names, and the numbers of staged snapshots checked against independent
 * double-precision computations (testutil), including the real PEFT adapter
 * in ../shared/testdata/peft-distilbert-imdb. */
#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../lib/adapter.h"
#include "../lib/forward.h"
#include "../lib/model.h"
#include "../lib/snapshot.h"
#include "testutil.h"

/* ---- the small base model every test serves ---- */

#define NL 3
static const int IN[NL] = {6, 5, 4};
static const int OUT[NL] = {5, 4, 3};
static const char *const NAMES[NL] = {"layers.0.proj", "layers.1.proj", "head"};
static const char *const ACTS[NL] = {"relu", "tanh", "none"};
static const bool HASB[NL] = {true, false, true};
static const bool FIFO[NL] = {false, true, false}; /* layer 1 stored [in, out] */

struct fixture {
    char *root, *adir;
    int adirfd;
    struct model *m;
    double *W[NL]; /* [out][in] */
    double *b[NL];
    struct profile *empty; /* fully partial profile */
    uint64_t rng;
};
static struct fixture F;

static void write_model(const char *dir)
{
    struct tu_tensor t[2 * NL];
    double *fileW[NL];
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
                  NAMES[0], IN[0], OUT[0], ACTS[0], NAMES[1], IN[1], OUT[1], ACTS[1], NAMES[2],
                  IN[2], OUT[2], ACTS[2]);
    free(p);
    for (int l = 0; l < NL; l++) {
        char *wn = malloc(64), *bn = malloc(64);
        F.W[l] = tu_rand_array(&F.rng, (size_t)IN[l] * OUT[l], -0.6, 0.6);
        F.b[l] = HASB[l] ? tu_rand_array(&F.rng, (size_t)OUT[l], -0.3, 0.3) : NULL;
        fileW[l] = malloc(sizeof(double) * (size_t)IN[l] * OUT[l]);
        for (int o = 0; o < OUT[l]; o++)
            for (int i = 0; i < IN[l]; i++)
                fileW[l][FIFO[l] ? (size_t)i * OUT[l] + o : (size_t)o * IN[l] + i] =
                    F.W[l][(size_t)o * IN[l] + i];
        snprintf(wn, 64, "%s.weight", NAMES[l]);
        snprintf(bn, 64, "%s.bias", NAMES[l]);
        t[n++] = (struct tu_tensor){wn,
                                    "F32",
                                    2,
                                    {FIFO[l] ? (uint64_t)IN[l] : (uint64_t)OUT[l],
                                     FIFO[l] ? (uint64_t)OUT[l] : (uint64_t)IN[l]},
                                    fileW[l]};
        if (HASB[l])
            t[n++] = (struct tu_tensor){bn, "F32", 1, {(uint64_t)OUT[l]}, F.b[l]};
        else
            free(bn);
    }
    p = tu_path(dir, "model.safetensors");
    tu_write_safetensors(p, t, n);
    free(p);
    for (size_t i = 0; i < n; i++)
        free((char *)t[i].name);
    for (int l = 0; l < NL; l++)
        free(fileW[l]);
}

static void setup(void)
{
    struct lorad_error err = {0, ""};
    char *mdir;

    memset(&F, 0, sizeof(F));
    F.rng = 42;
    F.root = tu_mkdtemp();
    mdir = tu_path(F.root, "model");
    F.adir = tu_path(F.root, "adapters");
    tu_mkdir(mdir);
    tu_mkdir(F.adir);
    write_model(mdir);
    ck_assert_msg(model_load(mdir, &F.m, NULL, &err) == 0, "model_load: %s", err.msg);
    free(mdir);
    F.adirfd = open(F.adir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(F.adirfd, 0);
    ck_assert_int_eq(profile_from_config(F.m, 0, NULL, 0, &F.empty, &err), 0);
}

static void teardown(void)
{
    close(F.adirfd);
    model_free(&F.m);
    profile_free(&F.empty);
    for (int l = 0; l < NL; l++) {
        free(F.W[l]);
        free(F.b[l]);
    }
    tu_rmrf(F.root);
    free(F.root);
    free(F.adir);
}

/* ---- building adapters ---- */

#define AD_MAX 32
struct ad {
    char name[160];
    char cfg[2048];
    bool no_cfg, no_st;
    struct tu_tensor t[AD_MAX];
    size_t n;
    double *vals[AD_MAX];
};

static void ad_init(struct ad *a, const char *name, const char *cfg_extra, int r, double alpha)
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
static double *ad_add(struct ad *a, const char *key, const char *dtype, int ndim, uint64_t d0,
                      uint64_t d1, double lo, double hi)
{
    size_t n = ndim == 1 ? d0 : d0 * d1;
    double *v = tu_rand_array(&F.rng, n, lo, hi);

    ck_assert_uint_lt(a->n, AD_MAX);
    for (size_t i = 0; i < n; i++)
        v[i] = tu_round_to(dtype, v[i]);
    a->vals[a->n] = v;
    a->t[a->n] = (struct tu_tensor){strdup(key), dtype, ndim, {d0, ndim == 2 ? d1 : 0}, v};
    a->n++;
    return v;
}

static double *ad_lora(struct ad *a, int layer, const char *part, const char *dtype, uint64_t d0,
                       uint64_t d1, int ndim)
{
    char key[256];
    snprintf(key, sizeof(key), "base_model.model.%s.%s", NAMES[layer], part);
    return ad_add(a, key, dtype, ndim, d0, d1, -0.5, 0.5);
}

/* lora_A [r, in] and lora_B [out, r] of layer l. */
static void ad_ab(struct ad *a, int l, int r, const char *dtype, double **A, double **B)
{
    double *x = ad_lora(a, l, "lora_A.weight", dtype, (uint64_t)r, (uint64_t)IN[l], 2);
    double *y = ad_lora(a, l, "lora_B.weight", dtype, (uint64_t)OUT[l], (uint64_t)r, 2);
    if (A)
        *A = x;
    if (B)
        *B = y;
}

static char *ad_write(struct ad *a)
{
    char *dir = tu_path(F.adir, a->name), *p;

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

static void ad_free(struct ad *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free((char *)a->t[i].name);
        free(a->vals[i]);
    }
    a->n = 0;
}

/* Writes and frees a simple adapter: LoRA r on the listed layers. */
static void simple(const char *name, const char *extra, int r, double alpha, unsigned layers)
{
    struct ad a;
    ad_init(&a, name, extra, r, alpha);
    for (int l = 0; l < NL; l++)
        if (layers & (1u << l))
            ad_ab(&a, l, r, "F32", NULL, NULL);
    free(ad_write(&a));
    ad_free(&a);
}

/* Same with per-layer ranks (0: no LoRA on that layer). */
static void ranked(const char *name, const char *extra, int r, double alpha, const int *ranks)
{
    struct ad a;
    ad_init(&a, name, extra, r, alpha);
    for (int l = 0; l < NL; l++)
        if (ranks[l])
            ad_ab(&a, l, ranks[l], "F32", NULL, NULL);
    free(ad_write(&a));
    ad_free(&a);
}

/* ---- staging helpers ---- */

static int stage(const char *name, const struct profile *p, const char *sha,
                 struct snapshot **snap, struct profile **pout, struct lorad_error *err)
{
    struct adapter_stage_args args = {F.adirfd, name, sha, F.m, p ? p : F.empty};
    memset(err, 0, sizeof(*err));
    return adapter_stage(&args, snap, pout, err);
}

/* Stages and expects `code` with every NULL-terminated substring in the
 * message. */
static void expect_err(const char *name, const struct profile *p, const char *sha, int code,
                       ...)
{
    struct snapshot *snap = (struct snapshot *)1;
    struct profile *pout = (struct profile *)1;
    struct lorad_error err;
    va_list ap;
    const char *sub;
    int rc = stage(name, p, sha, &snap, &pout, &err);

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

static struct snapshot *expect_ok(const char *name, const struct profile *p,
                                  const char *sha, struct profile **pout)
{
    struct snapshot *snap = NULL;
    struct profile *po = NULL;
    struct lorad_error err;
    int rc = stage(name, p, sha, &snap, &po, &err);

    ck_assert_msg(rc == 0, "adapter %s: %s: %s", name, lorad_err_name(rc), err.msg);
    ck_assert_ptr_nonnull(snap);
    if (pout)
        *pout = po;
    else
        profile_free(&po);
    return snap;
}

/* A profile completed from adapter `name` (staged against the empty one). */
static struct profile *profile_of(const char *name)
{
    struct profile *p = NULL;
    struct snapshot *s = expect_ok(name, NULL, NULL, &p);
    snapshot_free(&s);
    ck_assert_ptr_nonnull(p);
    return p;
}

static struct profile *config_profile(int max_rank, const char *const *t, size_t n)
{
    struct profile *p = NULL;
    struct lorad_error err = {0, ""};
    ck_assert_int_eq(profile_from_config(F.m, max_rank, t, n, &p, &err), 0);
    return p;
}

/* ---- names ---- */

START_TEST(test_name_rule)
{
    char long_ok[129], long_bad[130];

    memset(long_ok, 'a', 128);
    long_ok[128] = 0;
    memset(long_bad, 'a', 129);
    long_bad[129] = 0;
    ck_assert(adapter_name_valid("a"));
    ck_assert(adapter_name_valid("My-adapter_1.2"));
    ck_assert(adapter_name_valid(long_ok));
    ck_assert(!adapter_name_valid(long_bad));
    ck_assert(!adapter_name_valid(""));
    ck_assert(!adapter_name_valid(NULL));
    ck_assert(!adapter_name_valid(".hidden"));
    ck_assert(!adapter_name_valid(".."));
    ck_assert(!adapter_name_valid("a/b"));
    ck_assert(!adapter_name_valid("/abs"));
    ck_assert(!adapter_name_valid("-x"));
    ck_assert(!adapter_name_valid("a b"));
    ck_assert(!adapter_name_valid("a\xc3\xa9"));
}
END_TEST

/* Makes `path` (relative to adapter_dir) a symlink to `target`, replacing
 * the file there if any. */
static void relink(const char *path, const char *target)
{
    ck_assert(unlinkat(F.adirfd, path, 0) == 0 || errno == ENOENT);
    ck_assert_msg(symlinkat(target, F.adirfd, path) == 0, "symlink %s: %s", path, strerror(errno));
}

START_TEST(test_forbidden_names)
{
    char long_bad[130], *p, *q, *outside;
    struct ad a;

    memset(long_bad, 'a', 129);
    long_bad[129] = 0;
    simple("ok", NULL, 2, 4, 1);
    expect_err("..", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    expect_err("/abs", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    expect_err("/tmp", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    expect_err("a/b", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    expect_err("ok/..", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    expect_err(".hidden", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    expect_err(long_bad, NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);

    /* a directory symlink leaving adapter_dir */
    outside = tu_path(F.root, "outside");
    tu_mkdir(outside);
    ad_init(&a, "x", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    p = tu_path(outside, "adapter_config.json");
    tu_write_text(p, "%s", a.cfg);
    free(p);
    p = tu_path(outside, "adapter_model.safetensors");
    tu_write_safetensors(p, a.t, a.n);
    free(p);
    ad_free(&a);
    p = tu_path(F.adir, "escape");
    ck_assert_int_eq(symlink(outside, p), 0);
    free(p);
    expect_err("escape", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "outside", NULL);
    p = tu_path(F.adir, "escape2");
    ck_assert_int_eq(symlink("../outside", p), 0);
    free(p);
    expect_err("escape2", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);

    /* a directory symlink staying inside is fine */
    p = tu_path(F.adir, "alias");
    ck_assert_int_eq(symlink("ok", p), 0);
    free(p);
    struct snapshot *s = expect_ok("alias", NULL, NULL, NULL);
    ck_assert_str_eq(s->name, "alias");
    snapshot_free(&s);

    /* file symlinks inside an adapter directory pointing outside */
    simple("fsym", NULL, 2, 4, 1);
    p = tu_path(F.adir, "fsym/adapter_model.safetensors");
    q = tu_path(outside, "adapter_model.safetensors");
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(symlink(q, p), 0);
    free(p);
    free(q);
    expect_err("fsym", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    simple("csym", NULL, 2, 4, 1);
    p = tu_path(F.adir, "csym/adapter_config.json");
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(symlink("../../outside/adapter_config.json", p), 0);
    free(p);
    expect_err("csym", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_config.json", NULL);
    /* an absolute target is refused even when it points inside adapter_dir
     * (openat2 cannot confine it), and so is a relative one that leaves
     * adapter_dir and comes back */
    simple("absin", NULL, 2, 4, 1);
    p = tu_path(F.adir, "ok/adapter_model.safetensors");
    relink("absin/adapter_model.safetensors", p);
    free(p);
    expect_err("absin", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    simple("reenter", NULL, 2, 4, 1);
    relink("reenter/adapter_config.json", "../../adapters/ok/adapter_config.json");
    expect_err("reenter", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_config.json", NULL);
    /* a chain of links that starts inside and ends outside, and a link
     * through a directory symlink that escapes */
    ck_assert_int_eq(mkdirat(F.adirfd, "blobs", 0755), 0);
    relink("blobs/evil", "../../outside/adapter_model.safetensors");
    simple("chain", NULL, 2, 4, 1);
    relink("chain/adapter_model.safetensors", "../blobs/evil");
    expect_err("chain", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    simple("via", NULL, 2, 4, 1);
    relink("via/adapter_model.safetensors", "../escape/adapter_model.safetensors");
    expect_err("via", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    free(outside);
}
END_TEST

static void assert_same_snapshot(const struct snapshot *x, const struct snapshot *y)
{
    ck_assert_str_eq(x->sha256, y->sha256);
    ck_assert_int_eq(x->rank, y->rank);
    ck_assert(x->lora_alpha == y->lora_alpha);
    ck_assert_uint_eq(x->nlayers, y->nlayers);
    for (size_t l = 0; l < x->nlayers; l++) {
        const struct snapshot_lora *a = x->layers[l].lora, *b = y->layers[l].lora;
        ck_assert_int_eq(a != NULL, b != NULL);
        ck_assert(!x->layers[l].weight && !y->layers[l].weight);
        if (!a)
            continue;
        ck_assert_int_eq(a->rank, b->rank);
        ck_assert(a->scaling == b->scaling);
        ck_assert(memcmp(a->A, b->A, sizeof(float) * (size_t)a->rank * (size_t)IN[l]) == 0);
        ck_assert(memcmp(a->B, b->B, sizeof(float) * (size_t)a->rank * (size_t)OUT[l]) == 0);
    }
}

/* Stages `name` and `plain` and checks both give the same values. */
static void expect_same_as(const char *name, const char *plain)
{
    struct snapshot *s = expect_ok(name, NULL, NULL, NULL);
    struct snapshot *ref = expect_ok(plain, NULL, NULL, NULL);

    ck_assert_str_eq(s->name, name);
    assert_same_snapshot(s, ref);
    snapshot_free(&s);
    snapshot_free(&ref);
}

/* Writes the config and weights of `a` as dir/cfg and dir/st (dir relative
 * to adapter_dir, existing). */
static void write_files_as(const struct ad *a, const char *dir, const char *cfg, const char *st)
{
    char *d = tu_path(F.adir, dir), *p;

    p = tu_path(d, cfg);
    tu_write_text(p, "%s", a->cfg);
    free(p);
    p = tu_path(d, st);
    tu_write_safetensors(p, a->t, a->n);
    free(p);
    free(d);
}

START_TEST(test_symlinks_inside)
{
    static const char *const dirs[] = {"hf", "models--org--x", "models--org--x/blobs",
                                       "models--org--x/snapshots", "models--org--x/snapshots/rev1"};
    struct ad a;

    /* the audit's case: an adapter whose weights are a sibling's file */
    simple("ok", NULL, 2, 4, 5);
    simple("sib", NULL, 2, 4, 5);
    relink("sib/adapter_model.safetensors", "../ok/adapter_model.safetensors");
    expect_same_as("sib", "ok");

    /* Hugging Face cache layouts: the files are links into a blobs
     * directory, NAME itself a link to a snapshot directory */
    ad_init(&a, "hfplain", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    ad_ab(&a, 2, 2, "F32", NULL, NULL);
    free(ad_write(&a));
    ck_assert_int_eq(mkdirat(F.adirfd, "blobs", 0755), 0);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        ck_assert_int_eq(mkdirat(F.adirfd, dirs[i], 0755), 0);
    write_files_as(&a, "blobs", "cfg", "st");
    write_files_as(&a, "models--org--x/blobs", "0a1b", "2c3d");
    ad_free(&a);
    relink("hf/adapter_config.json", "../blobs/cfg");
    relink("hf/adapter_model.safetensors", "../blobs/st");
    expect_same_as("hf", "hfplain");
    relink("models--org--x/snapshots/rev1/adapter_config.json", "../../blobs/0a1b");
    relink("models--org--x/snapshots/rev1/adapter_model.safetensors", "../../blobs/2c3d");
    relink("hfsnap", "models--org--x/snapshots/rev1");
    expect_same_as("hfsnap", "hfplain");
    /* a pickle-only adapter is recognised through a link too */
    ck_assert_int_eq(mkdirat(F.adirfd, "pkl", 0755), 0);
    relink("pkl/adapter_config.json", "../blobs/cfg");
    relink("pkl/adapter_model.bin", "../blobs/st");
    expect_err("pkl", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.bin", "pickle", NULL);
}
END_TEST

/* Makes openat2 fail with ENOSYS in this process, as on a kernel before 5.6
 * or under a seccomp policy that does not know it. */
static bool deny_openat2(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(f) / sizeof(f[0])), f};

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return false;
    return syscall(SYS_openat2, AT_FDCWD, ".", NULL, 0) < 0 && errno == ENOSYS;
}

/* The child of test_no_openat2: 0, or the number of the failed check. */
static int no_openat2_checks(void)
{
    static const struct {
        const char *name;
        int code;
    } want[] = {{"plain", 0},
                {"alias", LORAD_E_FORBIDDEN_NAME},
                {"fsib", LORAD_E_FORBIDDEN_NAME},
                {"nocfg", LORAD_E_INVALID_ADAPTER},
                {"nope", LORAD_E_ADAPTER_NOT_FOUND}};
    struct snapshot *snap = NULL;
    struct profile *pout = NULL;
    struct lorad_error err;

    if (!deny_openat2())
        return 1;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int rc = stage(want[i].name, NULL, NULL, &snap, &pout, &err);
        snapshot_free(&snap);
        profile_free(&pout);
        if (rc != want[i].code) {
            fprintf(stderr, "without openat2: %s: got %s (%s)\n", want[i].name, lorad_err_name(rc),
                    err.msg);
            return (int)i + 2;
        }
    }
    return 0;
}

START_TEST(test_no_openat2)
{
    struct ad a;
    pid_t pid;
    int status;

    simple("plain", NULL, 2, 4, 5);
    relink("alias", "plain");
    simple("fsib", NULL, 2, 4, 5);
    relink("fsib/adapter_model.safetensors", "../plain/adapter_model.safetensors");
    ad_init(&a, "nocfg", NULL, 2, 4);
    a.no_cfg = true;
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    free(ad_write(&a));
    ad_free(&a);
    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(no_openat2_checks());
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "without openat2: check %d failed (1: seccomp unavailable; status %#x)",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
}
END_TEST

struct flipper {
    atomic_bool stop;
    atomic_ulong flips;
    atomic_int failed_errno;
};

/* Swaps the symlink "cur" between v1 and v2 as fast as it can (the
 * atomic ln -sfn way: a new link renamed over the old one). */
static void *flip_main(void *arg)
{
    struct flipper *f = arg;

    for (unsigned long i = 0; !atomic_load(&f->stop); i++) {
        if (symlinkat(i % 2 ? "v1" : "v2", F.adirfd, "cur.tmp") != 0 ||
            renameat(F.adirfd, "cur.tmp", F.adirfd, "cur") != 0) {
            atomic_store(&f->failed_errno, errno);
            break;
        }
        atomic_fetch_add(&f->flips, 1);
    }
    return NULL;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* An adapter NAME that is a symlink swapped between versions while it is
 * staged: every snapshot has one version's config and the same version's
 * weights (or, rarely, staging says the adapter kept being replaced). */
START_TEST(test_symlink_swap_consistent)
{
    struct flipper f = {false, 0, 0};
    struct snapshot *s;
    char sha1[65], sha2[65];
    int consistent = 0;
    struct timespec t0;
    pthread_t th;

    /* two versions whose config (lora_alpha) and weights both differ */
    simple("v1", NULL, 2, 4, 5);
    simple("v2", NULL, 2, 8, 5);
    s = expect_ok("v1", NULL, NULL, NULL);
    memcpy(sha1, s->sha256, sizeof(sha1));
    snapshot_free(&s);
    s = expect_ok("v2", NULL, NULL, NULL);
    memcpy(sha2, s->sha256, sizeof(sha2));
    snapshot_free(&s);
    ck_assert_str_ne(sha1, sha2);
    relink("cur", "v1");
    ck_assert_int_eq(pthread_create(&th, NULL, flip_main, &f), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* stage while the link flips, at least 400 times and through 1000
     * flips (at most 2 s: a loaded machine may starve the flipper); without
     * the check that NAME did not change, a torn pair shows up within a few
     * hundred flips */
    for (int i = 0; (i < 400 || atomic_load(&f.flips) < 1000) && seconds_since(&t0) < 2; i++) {
        struct profile *pout = NULL;
        struct lorad_error err;
        int rc = stage("cur", NULL, NULL, &s, &pout, &err);

        profile_free(&pout);
        if (rc == 0) {
            ck_assert_msg((strcmp(s->sha256, sha1) == 0 && s->lora_alpha == 4) ||
                              (strcmp(s->sha256, sha2) == 0 && s->lora_alpha == 8),
                          "torn stage: weights %s with lora_alpha %g", s->sha256, s->lora_alpha);
            consistent++;
            snapshot_free(&s);
        } else {
            ck_assert_msg(rc == LORAD_E_INVALID_ADAPTER && strstr(err.msg, "replaced"),
                          "stage during swaps: %s: %s", lorad_err_name(rc), err.msg);
        }
    }
    atomic_store(&f.stop, true);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(atomic_load(&f.failed_errno), 0);
    ck_assert_uint_gt(atomic_load(&f.flips), 0);
    ck_assert_int_gt(consistent, 0);
}
END_TEST

START_TEST(test_not_found)
{
    char *p = tu_path(F.adir, "plainfile");
    int fd;

    expect_err("nope", NULL, NULL, LORAD_E_ADAPTER_NOT_FOUND, "nope", NULL);
    tu_write_text(p, "x");
    free(p);
    expect_err("plainfile", NULL, NULL, LORAD_E_ADAPTER_NOT_FOUND, NULL);
    p = tu_path(F.adir, "dangling");
    ck_assert_int_eq(symlink("gone", p), 0);
    free(p);
    expect_err("dangling", NULL, NULL, LORAD_E_ADAPTER_NOT_FOUND, NULL);
    ck_assert_int_eq(adapter_open_dir(F.adirfd, "nope", &fd, NULL), LORAD_E_ADAPTER_NOT_FOUND);
    ck_assert_int_eq(fd, -1);
}
END_TEST

/* sha256 of a file by the sha256sum tool (independent of lib/digest.c). */
static void sha256sum(const char *path, char out[65])
{
    char cmd[4096];
    FILE *f;

    snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%64s", out), 1);
    pclose(f);
}

START_TEST(test_checksum)
{
    char want[65], upper[65], *p;
    const char *wrong = "00000000000000000000000000000000000000000000000000000000000000ff";
    struct snapshot *s;

    simple("c", NULL, 2, 4, 1);
    p = tu_path(F.adir, "c/adapter_model.safetensors");
    sha256sum(p, want);
    free(p);
    s = expect_ok("c", NULL, want, NULL);
    ck_assert_str_eq(s->sha256, want);
    snapshot_free(&s);
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(want[i] >= 'a' && want[i] <= 'f' ? want[i] - 32 : want[i]);
    s = expect_ok("c", NULL, upper, NULL);
    snapshot_free(&s);
    expect_err("c", NULL, wrong, LORAD_E_CHECKSUM_MISMATCH, want, wrong, NULL);
    expect_err("c", NULL, "nothex", LORAD_E_CHECKSUM_MISMATCH, want, NULL);
}
END_TEST

/* The remembered sha256 never hides a change of the file: rewriting it in
 * place (same inode, same size) is seen. */
START_TEST(test_checksum_memo)
{
    char first[65], second[65], *p;
    struct snapshot *s;
    struct ad a;
    size_t len;
    uint8_t *img;
    FILE *f;

    simple("memo", NULL, 2, 4, 1);
    p = tu_path(F.adir, "memo/adapter_model.safetensors");
    sha256sum(p, first);
    sleep(3); /* let the file settle so that its digest is remembered */
    for (int i = 0; i < 2; i++) {
        s = expect_ok("memo", NULL, first, NULL);
        ck_assert_str_eq(s->sha256, first);
        snapshot_free(&s);
    }
    ad_init(&a, "memo2", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    img = tu_safetensors_image(a.t, a.n, NULL, &len);
    f = fopen(p, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(img, 1, len, f), len);
    fclose(f);
    free(img);
    ad_free(&a);
    sha256sum(p, second);
    ck_assert_str_ne(first, second);
    expect_err("memo", NULL, first, LORAD_E_CHECKSUM_MISMATCH, second, NULL);
    s = expect_ok("memo", NULL, second, NULL);
    ck_assert_str_eq(s->sha256, second);
    snapshot_free(&s);
    free(p);
}
END_TEST

/* ---- invalid_adapter and friends ---- */

START_TEST(test_invalid_files)
{
    struct ad a;
    char *p;

    ad_init(&a, "nocfg", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    a.no_cfg = true;
    free(ad_write(&a));
    expect_err("nocfg", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_config.json", NULL);
    a.no_cfg = false;
    a.no_st = true;
    snprintf(a.name, sizeof(a.name), "nost");
    free(ad_write(&a));
    expect_err("nost", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.safetensors", NULL);
    snprintf(a.name, sizeof(a.name), "pickle");
    free(ad_write(&a));
    p = tu_path(F.adir, "pickle/adapter_model.bin");
    tu_write_text(p, "not really a pickle");
    free(p);
    expect_err("pickle", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.bin", "pickle",
               "convert", "safetensors", NULL);
    ad_free(&a);

    simple("badjson", NULL, 2, 4, 1);
    p = tu_path(F.adir, "badjson/adapter_config.json");
    tu_write_text(p, "{\"peft_type\": \"LORA\", ");
    free(p);
    expect_err("badjson", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_config.json", NULL);

    simple("badst", NULL, 2, 4, 1);
    p = tu_path(F.adir, "badst/adapter_model.safetensors");
    tu_write_text(p, "\xff\xff\xff\xff\xff\xff\xff\x7f garbage");
    free(p);
    expect_err("badst", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.safetensors", NULL);
    p = tu_path(F.adir, "badst/adapter_model.safetensors");
    tu_write_text(p, "%s", "");
    free(p);
    expect_err("badst", NULL, NULL, LORAD_E_INVALID_ADAPTER, NULL);

    simple("nopeft", NULL, 2, 4, 1);
    p = tu_path(F.adir, "nopeft/adapter_config.json");
    tu_write_text(p, "{\"r\": 2, \"lora_alpha\": 4}");
    free(p);
    expect_err("nopeft", NULL, NULL, LORAD_E_INVALID_ADAPTER, "peft_type", NULL);
}
END_TEST

START_TEST(test_invalid_config_fields)
{
    static const struct {
        const char *extra, *field;
    } cases[] = {
        {"\"use_dora\": \"yes\"", "use_dora"},
        {"\"use_rslora\": 1", "use_rslora"},
        {"\"lora_dropout\": \"0.1\"", "lora_dropout"},
        {"\"rank_pattern\": []", "rank_pattern"},
        {"\"rank_pattern\": {\"proj\": 0}", "rank_pattern"},
        {"\"rank_pattern\": {\"proj\": 2.5}", "rank_pattern"},
        {"\"alpha_pattern\": {\"proj\": \"x\"}", "alpha_pattern"},
        {"\"rank_pattern\": {\"pro(j\": 2}", "pro(j"},
        {"\"alpha_pattern\": {\"[a-\": 2}", "[a-"},
        {"\"lora_bias\": true, \"use_dora\": true", "lora_bias"},
        {"\"lora_bias\": 3", "lora_bias"},
        /* refused before regcomp: glibc would build a million nodes, or
         * recurse on a back-reference */
        {"\"rank_pattern\": {\"(a{999}){999}\": 2}", "regular-expression nodes"},
        {"\"alpha_pattern\": {\"(((x{20}){20}){20})\": 2}", "regular-expression nodes"},
        {"\"rank_pattern\": {\"(pro|j+){4000}\": 2}", "(pro|j+){4000}"},
        {"\"alpha_pattern\": {\"(a)\\\\1\": 2}", "back-reference"},
        {"\"rank_pattern\": {\"((a*)*){25}\": 2}", "repeated operand"},
        {"\"alpha_pattern\": {\"j**{20}\": 2}", "repeated operand"},
        {"\"rank_pattern\": {\"(0{99})*j**{20}\": 2}", "repeated operand"},
        /* a key must not close or escape the group it is wrapped in */
        {"\"rank_pattern\": {\"proj)|(head\": 2}", "unmatched ')'"},
        {"\"rank_pattern\": {\"9}0.0)****{20}\": 2}", "unmatched ')'"},
        {"\"alpha_pattern\": {\"proj\\\\\": 2}", "lone backslash"},
    };
    char name[32], deep[160];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "f%zu", i);
        simple(name, cases[i].extra, 2, 4, 1);
        expect_err(name, NULL, NULL, LORAD_E_INVALID_ADAPTER, cases[i].field, NULL);
    }
    /* groups nested deeper than lorad compiles */
    memset(deep, 0, sizeof(deep));
    strcpy(deep, "\"rank_pattern\": {\"");
    for (size_t i = strlen(deep), k = 0; k < 65; k++)
        deep[i + k] = '(';
    strcat(deep, "proj\": 2}");
    simple("deep", deep, 2, 4, 1);
    expect_err("deep", NULL, NULL, LORAD_E_INVALID_ADAPTER, "nests groups", NULL);
    /* keys within the budget still compile and match: intervals, bracket
     * expressions (with ']' and '{' inside) and alternation */
    ranked("okre",
           "\"rank_pattern\": {\"[]{x]?(pro){1,3}j|q{2,}\": 2, \"(x){0}[[:alpha:]]{1,40}\": 3, "
           "\"(\\\\w+\\\\.)*proj{1}\": 2}",
           8, 4,
           (const int[NL]){2, 2, 3});
    struct profile *okp = profile_of("okre");
    ck_assert_int_eq(okp->max_rank, 3);
    profile_free(&okp);
    /* r of the wrong type */
    struct ad a;
    ad_init(&a, "rstr", NULL, 2, 4);
    snprintf(a.cfg, sizeof(a.cfg), "{\"peft_type\": \"LORA\", \"r\": \"8\", \"lora_alpha\": 4}");
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("rstr", NULL, NULL, LORAD_E_INVALID_ADAPTER, "r must", NULL);
    /* the DoRA message */
    simple("dorabias", "\"lora_bias\": true, \"use_dora\": true", 2, 4, 1);
    expect_err("dorabias", NULL, NULL, LORAD_E_INVALID_ADAPTER, "PEFT does not support", NULL);
}
END_TEST

START_TEST(test_peft_type)
{
    struct ad a;
    ad_init(&a, "ia3", NULL, 2, 4);
    snprintf(a.cfg, sizeof(a.cfg), "{\"peft_type\": \"IA3\", \"target_modules\": [\"x\"]}");
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("ia3", NULL, NULL, LORAD_E_UNSUPPORTED_PEFT_TYPE, "IA3", NULL);
}
END_TEST

START_TEST(test_pairing)
{
    struct ad a;

    ad_init(&a, "aonly", NULL, 2, 4);
    ad_lora(&a, 0, "lora_A.weight", "F32", 2, (uint64_t)IN[0], 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("aonly", NULL, NULL, LORAD_E_INVALID_ADAPTER, "layers.0.proj", "lora_A.weight",
               "lora_B.weight", NULL);
    ad_init(&a, "bonly", NULL, 2, 4);
    ad_lora(&a, 1, "lora_B.weight", "F32", (uint64_t)OUT[1], 2, 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("bonly", NULL, NULL, LORAD_E_INVALID_ADAPTER, "layers.1.proj", NULL);
    simple("nomag", "\"use_dora\": true", 2, 4, 1);
    expect_err("nomag", NULL, NULL, LORAD_E_INVALID_ADAPTER, "magnitude", "layers.0.proj", NULL);
    ad_init(&a, "magnodora", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    ad_lora(&a, 0, "lora_magnitude_vector", "F32", (uint64_t)OUT[0], 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("magnodora", NULL, NULL, LORAD_E_INVALID_ADAPTER, "use_dora", NULL);
}
END_TEST

START_TEST(test_incompatible_config)
{
    struct profile *p;

    simple("first", "\"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}", 2, 4, 3);
    p = profile_of("first");
    ck_assert(p->has_fields);
    simple("rs", "\"use_rslora\": true, \"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}", 2,
           4, 1);
    expect_err("rs", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "use_rslora", "true", "false", NULL);
    simple("dora", "\"use_dora\": true, \"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}", 2,
           4, 0);
    expect_err("dora", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "use_dora", "true", "false", NULL);
    simple("drop", "\"alpha_pattern\": {\"head\": 3}", 2, 4, 1);
    expect_err("drop", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "lora_dropout", "0.1", "0", NULL);
    simple("ap", "\"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3.5}", 2, 4, 1);
    expect_err("ap", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "alpha_pattern", "3.5", "3", NULL);
    simple("ap2", "\"lora_dropout\": 0.1", 2, 4, 1);
    expect_err("ap2", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "alpha_pattern", "{}", NULL);
    /* numbers by value, maps by content, null/missing = default */
    simple("same",
           "\"lora_dropout\": 1e-1, \"alpha_pattern\": {\"head\": 3.0},"
           " \"use_rslora\": false, \"use_dora\": null",
           2, 4, 1);
    struct snapshot *s = expect_ok("same", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);

    simple("zero", NULL, 2, 4, 1);
    p = profile_of("zero");
    simple("zero2", "\"lora_dropout\": 0.0, \"alpha_pattern\": {}, \"rank_pattern\": null", 2, 4,
           1);
    s = expect_ok("zero2", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);
}
END_TEST

START_TEST(test_unknown_tensor_and_module)
{
    struct ad a;
    struct profile *p;
    const char *t0[] = {"layers.0.proj"};

    ad_init(&a, "ut", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    ad_add(&a, "base_model.model.layers.0.proj.lora_embedding_A", "F32", 1, 2, 0, 0, 1);
    ad_add(&a, "something_else", "F32", 1, 2, 0, 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("ut", NULL, NULL, LORAD_E_UNKNOWN_TENSOR, "lora_embedding_A", "something_else",
               NULL);

    ad_init(&a, "um", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    ad_add(&a, "base_model.model.nope.proj.lora_A.weight", "F32", 2, 2, 6, 0, 1);
    ad_add(&a, "base_model.model.nope.proj.lora_B.weight", "F32", 2, 5, 2, 0, 1);
    ad_add(&a, "other.lora_A.weight", "F32", 2, 2, 6, 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("um", NULL, NULL, LORAD_E_UNKNOWN_MODULE, "nope.proj", "other", NULL);

    /* a long list is cut with "..." but counted in full */
    ad_init(&a, "many", NULL, 2, 4);
    for (int i = 0; i < 30; i++) {
        char k[64];
        snprintf(k, sizeof(k), "model.encoder.block_%02d.mlp.lora_A.weight", i);
        ad_add(&a, k, "F32", 2, 2, 6, 0, 1);
    }
    free(ad_write(&a));
    ad_free(&a);
    expect_err("many", NULL, NULL, LORAD_E_UNKNOWN_MODULE, "30 layer(s)", "block_00", ", ...",
               NULL);

    ad_init(&a, "umw", NULL, 2, 4);
    ad_add(&a, "base_model.model.classifier.weight", "F32", 2, 2, 6, 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("umw", NULL, NULL, LORAD_E_UNKNOWN_MODULE, "classifier", NULL);

    /* a layer of the model outside the profile's target set */
    p = config_profile(0, t0, 1);
    simple("tgt", NULL, 2, 4, 7);
    expect_err("tgt", p, NULL, LORAD_E_UNKNOWN_MODULE, "layers.1.proj", "head", "target", NULL);
    simple("tgt_ok", NULL, 2, 4, 1);
    struct snapshot *s = expect_ok("tgt_ok", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);
    /* ... and from the first adapter */
    p = profile_of("tgt_ok");
    expect_err("tgt", p, NULL, LORAD_E_UNKNOWN_MODULE, "layers.1.proj", "head", NULL);
    profile_free(&p);
}
END_TEST

START_TEST(test_shape_mismatch)
{
    struct ad a;

    ad_init(&a, "sa", NULL, 2, 4);
    ad_lora(&a, 0, "lora_A.weight", "F32", 2, 7, 2);
    ad_lora(&a, 0, "lora_B.weight", "F32", (uint64_t)OUT[0], 2, 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("sa", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "lora_A.weight", "[2, 7]", "[2, 6]", NULL);
    ad_init(&a, "sb", NULL, 2, 4);
    ad_lora(&a, 0, "lora_A.weight", "F32", 2, (uint64_t)IN[0], 2);
    ad_lora(&a, 0, "lora_B.weight", "F32", 9, 2, 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("sb", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "lora_B.weight", "layers.0.proj", NULL);
    ad_init(&a, "nobias", NULL, 2, 4);
    ad_lora(&a, 1, "bias", "F32", (uint64_t)OUT[1], 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("nobias", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "layers.1.proj", "no bias", NULL);
    /* modules_to_save weight: fan_in_fan_out layer wants [in, out] */
    ad_init(&a, "mtsw", NULL, 2, 4);
    ad_lora(&a, 1, "weight", "F32", (uint64_t)OUT[1], (uint64_t)IN[1], 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("mtsw", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "[4, 5]", "[5, 4]", NULL);
    ad_init(&a, "mag", "\"use_dora\": true", 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    ad_lora(&a, 0, "lora_magnitude_vector", "F32", 3, 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("mag", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "lora_magnitude_vector", NULL);
}
END_TEST

START_TEST(test_rank_mismatch)
{
    struct ad a;

    ad_init(&a, "rm", NULL, 4, 4);
    ad_lora(&a, 0, "lora_A.weight", "F32", 3, (uint64_t)IN[0], 2);
    ad_lora(&a, 0, "lora_B.weight", "F32", (uint64_t)OUT[0], 3, 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("rm", NULL, NULL, LORAD_E_RANK_MISMATCH, "layers.0.proj", "3", "r=4", NULL);
    ad_init(&a, "rp", "\"rank_pattern\": {\"head\": 2}", 4, 4);
    ad_ab(&a, 2, 4, "F32", NULL, NULL);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("rp", NULL, NULL, LORAD_E_RANK_MISMATCH, "head", "r=2", "rank_pattern", NULL);
    ad_init(&a, "rb", NULL, 2, 4);
    ad_lora(&a, 0, "lora_A.weight", "F32", 2, (uint64_t)IN[0], 2);
    ad_lora(&a, 0, "lora_B.weight", "F32", (uint64_t)OUT[0], 3, 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("rb", NULL, NULL, LORAD_E_RANK_MISMATCH, "lora_B.weight", NULL);
}
END_TEST

START_TEST(test_rank_too_large)
{
    struct profile *p = config_profile(4, NULL, 0);
    struct snapshot *s;

    simple("big", NULL, 8, 8, 1);
    expect_err("big", p, NULL, LORAD_E_RANK_TOO_LARGE, "layers.0.proj", "8", "4", "max_rank", NULL);
    ranked("bigpat", "\"rank_pattern\": {\"head\": 5}", 2, 8, (const int[NL]){2, 0, 5});
    expect_err("bigpat", p, NULL, LORAD_E_RANK_TOO_LARGE, "head", "5", "max_rank", NULL);
    profile_free(&p);
    /* limit from the first adapter (its largest rank, rank_pattern included) */
    ranked("first", "\"rank_pattern\": {\"head\": 3}", 2, 8, (const int[NL]){2, 0, 3});
    p = profile_of("first");
    ck_assert_int_eq(p->max_rank, 3);
    expect_err("big", p, NULL, LORAD_E_RANK_TOO_LARGE, "8", "3", "max_rank", NULL);
    simple("small", NULL, 3, 8, 1);
    s = expect_ok("small", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);
}
END_TEST

START_TEST(test_dtype_and_values)
{
    struct ad a;
    double *v;

    ad_init(&a, "f64", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    ad_lora(&a, 2, "bias", "F64", (uint64_t)OUT[2], 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("f64", NULL, NULL, LORAD_E_UNSUPPORTED_DTYPE, "head.bias", "F64", NULL);

    ad_init(&a, "nan", NULL, 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, &v);
    v[3] = NAN;
    free(ad_write(&a));
    ad_free(&a);
    expect_err("nan", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "layers.0.proj.lora_B.weight", NULL);

    ad_init(&a, "inf16", NULL, 2, 4);
    ad_ab(&a, 0, 2, "BF16", &v, NULL);
    v[0] = -INFINITY;
    free(ad_write(&a));
    ad_free(&a);
    expect_err("inf16", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "lora_A.weight", NULL);

    ad_init(&a, "mts", NULL, 2, 4);
    v = ad_lora(&a, 2, "weight", "F16", (uint64_t)OUT[2], (uint64_t)IN[2], 2);
    v[5] = INFINITY;
    free(ad_write(&a));
    ad_free(&a);
    expect_err("mts", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "head.weight", NULL);

    ad_init(&a, "magnan", "\"use_dora\": true", 2, 4);
    ad_ab(&a, 0, 2, "F32", NULL, NULL);
    v = ad_lora(&a, 0, "lora_magnitude_vector", "F32", (uint64_t)OUT[0], 0, 1);
    v[1] = NAN;
    free(ad_write(&a));
    ad_free(&a);
    expect_err("magnan", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "lora_magnitude_vector", NULL);
}
END_TEST

/* An adapter breaking two rules reports the earlier one. */
START_TEST(test_order)
{
    struct profile *p4 = config_profile(4, NULL, 0), *pf;
    const char *wrong = "1111111111111111111111111111111111111111111111111111111111111111";
    struct ad a;
    double *v;
    char *path;

    /* checksum before files validity */
    simple("o1", NULL, 2, 4, 1);
    path = tu_path(F.adir, "o1/adapter_config.json");
    tu_write_text(path, "not json");
    free(path);
    expect_err("o1", NULL, wrong, LORAD_E_CHECKSUM_MISMATCH, NULL);
    expect_err("o1", NULL, NULL, LORAD_E_INVALID_ADAPTER, NULL);
    /* files validity before config type */
    ad_init(&a, "o2", NULL, 2, 4);
    snprintf(a.cfg, sizeof(a.cfg), "{\"peft_type\": \"IA3\"}");
    free(ad_write(&a));
    ad_free(&a);
    path = tu_path(F.adir, "o2/adapter_model.safetensors");
    tu_write_text(path, "short");
    free(path);
    expect_err("o2", NULL, NULL, LORAD_E_INVALID_ADAPTER, NULL);
    /* config compatibility before tensor names */
    simple("base", NULL, 2, 4, 1);
    pf = profile_of("base");
    ad_init(&a, "o3", "\"use_rslora\": true", 2, 4);
    ad_add(&a, "weird", "F32", 1, 1, 0, 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("o3", pf, NULL, LORAD_E_INCOMPATIBLE_CONFIG, NULL);
    expect_err("o3", NULL, NULL, LORAD_E_UNKNOWN_TENSOR, NULL);
    /* tensor names before ranks */
    ad_init(&a, "o4", NULL, 8, 8);
    ad_ab(&a, 0, 8, "F32", NULL, NULL);
    ad_add(&a, "zzz.lora_A.weight", "F32", 2, 8, 6, 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("o4", p4, NULL, LORAD_E_UNKNOWN_MODULE, NULL);
    /* shapes before ranks */
    ad_init(&a, "o5", NULL, 8, 8);
    ad_ab(&a, 0, 8, "F32", NULL, NULL);
    ad_lora(&a, 2, "weight", "F32", 1, 1, 2);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("o5", p4, NULL, LORAD_E_SHAPE_MISMATCH, NULL);
    /* ranks before dtypes and values */
    ad_init(&a, "o6", NULL, 8, 8);
    ad_ab(&a, 0, 8, "F32", &v, NULL);
    v[0] = NAN;
    ad_lora(&a, 2, "bias", "F64", (uint64_t)OUT[2], 0, 1);
    free(ad_write(&a));
    ad_free(&a);
    expect_err("o6", p4, NULL, LORAD_E_RANK_TOO_LARGE, NULL);
    expect_err("o6", NULL, NULL, LORAD_E_UNSUPPORTED_DTYPE, NULL);
    /* forbidden name before everything */
    expect_err("../o6", NULL, wrong, LORAD_E_FORBIDDEN_NAME, NULL);
    profile_free(&p4);
    profile_free(&pf);
}
END_TEST

/* ---- numbers ---- */

struct ref_lora {
    int r;
    double alpha, s;
    double *A, *B, *bias_B, *mag;
    double *W, *b; /* modules_to_save replacement ([out][in] order), or NULL */
};

static void check_forward(const struct snapshot *snap, const struct ref_lora *rl, int max_rank)
{
    struct tu_layer L[NL];
    struct tu_lora lo[NL];
    enum { ROWS = 5 };
    double *x = tu_rand_array(&F.rng, (size_t)ROWS * IN[0], -1, 1), want[ROWS * 3];
    float xf[ROWS * 6], got[ROWS * 3];
    struct forward_scratch *sc = forward_scratch_new(F.m, ROWS, max_rank);

    ck_assert_ptr_nonnull(sc);
    for (int l = 0; l < NL; l++) {
        L[l] = (struct tu_layer){
            IN[l], OUT[l], ACTS[l], rl[l].W ? rl[l].W : F.W[l], rl[l].b ? rl[l].b : F.b[l], NULL};
        if (rl[l].A) {
            lo[l] = (struct tu_lora){rl[l].r, rl[l].s, rl[l].A, rl[l].B, rl[l].bias_B, rl[l].mag};
            L[l].lora = &lo[l];
        }
    }
    for (int i = 0; i < ROWS * IN[0]; i++)
        xf[i] = (float)x[i];
    tu_ref_forward(L, NL, x, ROWS, want);
    forward_run(F.m, snap, xf, ROWS, got, sc);
    double worst = tu_worst_ratio(got, want, (size_t)ROWS * OUT[NL - 1], 1e-5, 1e-4);
    ck_assert_msg(worst <= 1.0, "forward differs from the reference: worst ratio %g", worst);
    forward_scratch_free(&sc);
    free(x);
}

static void check_array(const float *got, const double *want, size_t n, const char *what)
{
    ck_assert_ptr_nonnull(got);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg((double)got[i] == want[i], "%s[%zu]: %.9g != %.9g", what, i, got[i], want[i]);
}

/* A modules_to_save weight held as W^T ([in][out], model.h) against want,
 * [out][in]. */
static void check_weight(const float *got, const double *want, int out, int in, const char *what)
{
    ck_assert_ptr_nonnull(got);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++)
            ck_assert_msg((double)got[i * out + o] == want[o * in + i], "%s[%d][%d]: %.9g != %.9g",
                          what, o, i, got[i * out + o], want[o * in + i]);
}

/* Stages a fresh adapter with LoRA on every layer in `dtype` and checks
 * scaling, arrays and the forward pass. */
static void numeric_case(const char *dtype)
{
    struct ad a;
    struct ref_lora rl[NL] = {{0}};
    struct snapshot *s;
    char *dir, *p, want_sha[65];
    struct timespec before, after;

    ad_init(&a, dtype, NULL, 4, 8);
    for (int l = 0; l < NL; l++) {
        rl[l].r = 4;
        rl[l].alpha = 8;
        rl[l].s = 2.0;
        ad_ab(&a, l, 4, dtype, &rl[l].A, &rl[l].B);
    }
    dir = ad_write(&a);
    p = tu_path(dir, "adapter_model.safetensors");
    sha256sum(p, want_sha);
    free(p);
    free(dir);
    clock_gettime(CLOCK_REALTIME, &before);
    s = expect_ok(dtype, NULL, NULL, NULL);
    clock_gettime(CLOCK_REALTIME, &after);
    ck_assert_str_eq(s->name, dtype);
    ck_assert_uint_eq(s->version, 0);
    ck_assert_int_eq(s->rank, 4);
    ck_assert(s->lora_alpha == 8.0);
    ck_assert_str_eq(s->sha256, want_sha);
    ck_assert(s->stage_ms >= 0);
    ck_assert(s->loaded_at.tv_sec >= before.tv_sec && s->loaded_at.tv_sec <= after.tv_sec);
    ck_assert_uint_eq(s->nlayers, NL);
    size_t bytes = 0;
    for (int l = 0; l < NL; l++) {
        const struct snapshot_lora *lo = s->layers[l].lora;
        ck_assert_ptr_nonnull(lo);
        ck_assert_int_eq(lo->rank, 4);
        ck_assert(lo->scaling == 2.0f);
        ck_assert(lo->alpha == 8.0);
        ck_assert_ptr_null(lo->bias_B);
        ck_assert_ptr_null(lo->dora_scale);
        ck_assert_ptr_null(s->layers[l].weight);
        check_array(lo->A, rl[l].A, (size_t)4 * IN[l], "A");
        check_array(lo->B, rl[l].B, (size_t)4 * OUT[l], "B");
        bytes += sizeof(float) * 4 * (size_t)(IN[l] + OUT[l]);
    }
    ck_assert_uint_eq(s->bytes, bytes);
    check_forward(s, rl, 4);
    snapshot_free(&s);
    ck_assert_ptr_null(s);
    ad_free(&a);
}

START_TEST(test_numeric_dtypes)
{
    numeric_case("F32");
    numeric_case("F16");
    numeric_case("BF16");
}
END_TEST

START_TEST(test_patterns_rslora_bias)
{
    struct ad a;
    struct ref_lora rl[NL] = {{0}};
    struct snapshot *s;
    struct profile *pout = NULL;
    /* "0.proj" matches layers.0.proj (first in file order), "proj" then
     * layers.1.proj; head keeps r; alpha_pattern "h.ad" is a regex. */
    const char *extra = "\"rank_pattern\": {\"0.proj\": 2, \"proj\": 3, \"xhead\": 7},"
                        " \"alpha_pattern\": {\"h.ad\": 5, \"head\": 9}, \"use_rslora\": true,"
                        " \"lora_bias\": true, \"lora_dropout\": 0.05";
    const int ranks[NL] = {2, 3, 6};
    const double alphas[NL] = {12, 12, 5};

    ad_init(&a, "pat", extra, 6, 12);
    for (int l = 0; l < NL; l++) {
        rl[l].r = ranks[l];
        rl[l].alpha = alphas[l];
        rl[l].s = alphas[l] / sqrt((double)ranks[l]);
        ad_ab(&a, l, ranks[l], "F32", &rl[l].A, &rl[l].B);
    }
    rl[1].bias_B = ad_lora(&a, 1, "lora_B.bias", "F32", (uint64_t)OUT[1], 0, 1);
    free(ad_write(&a));
    s = expect_ok("pat", NULL, NULL, &pout);
    ck_assert_int_eq(s->rank, 6);
    for (int l = 0; l < NL; l++) {
        const struct snapshot_lora *lo = s->layers[l].lora;
        ck_assert_int_eq(lo->rank, ranks[l]);
        ck_assert(lo->alpha == alphas[l]);
        ck_assert_msg(lo->scaling == (float)rl[l].s, "layer %d: scaling %.9g want %.9g", l,
                      lo->scaling, rl[l].s);
    }
    check_array(s->layers[1].lora->bias_B, rl[1].bias_B, (size_t)OUT[1], "bias_B");
    ck_assert_ptr_null(s->layers[0].lora->bias_B);
    check_forward(s, rl, 6);
    /* the completed profile */
    ck_assert_ptr_nonnull(pout);
    ck_assert(pout->has_limits && pout->has_fields);
    ck_assert_int_eq(pout->max_rank, 6);
    ck_assert(pout->targets[0] && pout->targets[1] && pout->targets[2]);
    ck_assert(pout->use_rslora && !pout->use_dora);
    ck_assert(pout->lora_dropout == 0.05);
    ck_assert_uint_eq(pout->n_alpha_pattern, 2);
    ck_assert_str_eq(pout->alpha_pattern[0].key, "h.ad");
    ck_assert(pout->alpha_pattern[0].value == 5);
    snapshot_free(&s);
    profile_free(&pout);
    ad_free(&a);
}
END_TEST

START_TEST(test_dora_and_modules_to_save)
{
    struct ad a;
    struct ref_lora rl[NL] = {{0}};
    struct snapshot *s;
    double *fileW;

    ad_init(&a, "dora", "\"use_dora\": true", 3, 6);
    /* layer 0: DoRA with the PEFT key form; layer 1: modules_to_save weight
     * ([in, out] file layout) plus DoRA with the ".weight" key form; head:
     * modules_to_save weight and bias only. */
    for (int l = 0; l < 2; l++) {
        rl[l].r = 3;
        rl[l].alpha = 6;
        rl[l].s = 2.0;
        ad_ab(&a, l, 3, "F32", &rl[l].A, &rl[l].B);
    }
    rl[0].mag = ad_lora(&a, 0, "lora_magnitude_vector", "F32", (uint64_t)OUT[0], 0, 1);
    rl[1].mag = ad_lora(&a, 1, "lora_magnitude_vector.weight", "BF16", (uint64_t)OUT[1], 0, 1);
    for (int o = 0; o < OUT[0]; o++)
        rl[0].mag[o] = fabs(rl[0].mag[o]) + 0.5;
    fileW = ad_lora(&a, 1, "weight", "F32", (uint64_t)IN[1], (uint64_t)OUT[1], 2);
    rl[1].W = malloc(sizeof(double) * (size_t)IN[1] * OUT[1]);
    for (int i = 0; i < IN[1]; i++)
        for (int o = 0; o < OUT[1]; o++)
            rl[1].W[(size_t)o * IN[1] + i] = fileW[(size_t)i * OUT[1] + o];
    rl[2].W = ad_lora(&a, 2, "weight", "F16", (uint64_t)OUT[2], (uint64_t)IN[2], 2);
    rl[2].b = ad_lora(&a, 2, "bias", "F32", (uint64_t)OUT[2], 0, 1);
    free(ad_write(&a));
    s = expect_ok("dora", NULL, NULL, NULL);
    for (int l = 0; l < 2; l++) {
        const double *W = rl[l].W ? rl[l].W : F.W[l];
        const struct snapshot_lora *lo = s->layers[l].lora;
        ck_assert_ptr_nonnull(lo->dora_scale);
        for (int o = 0; o < OUT[l]; o++) {
            double ss = 0;
            for (int i = 0; i < IN[l]; i++) {
                double ba = 0;
                for (int k = 0; k < 3; k++)
                    ba += rl[l].B[o * 3 + k] * rl[l].A[k * IN[l] + i];
                double w = W[(size_t)o * IN[l] + i] + 2.0 * ba;
                ss += w * w;
            }
            double want = rl[l].mag[o] / sqrt(ss);
            ck_assert_msg(fabs(lo->dora_scale[o] - want) <= 1e-6 * fabs(want),
                          "layer %d row %d: dora_scale %.9g want %.9g", l, o, lo->dora_scale[o],
                          want);
        }
    }
    check_weight(s->layers[1].weight, rl[1].W, OUT[1], IN[1], "weight1");
    ck_assert_ptr_null(s->layers[1].bias);
    check_weight(s->layers[2].weight, rl[2].W, OUT[2], IN[2], "weight2");
    check_array(s->layers[2].bias, rl[2].b, (size_t)OUT[2], "bias2");
    ck_assert_ptr_null(s->layers[2].lora);
    check_forward(s, rl, 3);
    snapshot_free(&s);
    free(rl[1].W);
    ad_free(&a);
}
END_TEST

/* A rank smaller than the profile's max_rank serves at its real rank. */
START_TEST(test_smaller_rank)
{
    struct profile *p = config_profile(16, NULL, 0);
    struct ad a;
    struct ref_lora rl[NL] = {{0}};
    struct snapshot *s;

    ad_init(&a, "small", NULL, 2, 3);
    rl[2].r = 2;
    rl[2].alpha = 3;
    rl[2].s = 1.5;
    ad_ab(&a, 2, 2, "F32", &rl[2].A, &rl[2].B);
    free(ad_write(&a));
    s = expect_ok("small", p, NULL, NULL);
    ck_assert_int_eq(s->rank, 2);
    ck_assert_int_eq(s->layers[2].lora->rank, 2);
    ck_assert_ptr_null(s->layers[0].lora);
    ck_assert_ptr_null(s->layers[1].lora);
    check_forward(s, rl, 16);
    snapshot_free(&s);
    profile_free(&p);
    ad_free(&a);
}
END_TEST

/* ---- the real PEFT adapter ---- */

#define DB_LAYERS 14
#define DB_W 768

static const char *testdata_dir(void)
{
    static const char *const cands[] = {"../shared/testdata/peft-distilbert-imdb",
                                        "/work/shared/testdata/peft-distilbert-imdb"};
    const char *env = getenv("LORAD_TESTDATA");
    static char buf[4096];
    struct stat st;

    if (env && *env) {
        snprintf(buf, sizeof(buf), "%s/peft-distilbert-imdb", env);
        if (stat(buf, &st) == 0)
            return buf;
    }
    for (size_t i = 0; i < 2; i++)
        if (stat(cands[i], &st) == 0)
            return cands[i];
    return NULL;
}

/* Values of tensor `key` of a safetensors image, read independently:
 * header parsed with cJSON, F32 bytes taken at the header's offsets. */
static double *raw_f32(const uint8_t *img, size_t len, const char *key, size_t *n)
{
    uint64_t hl = 0;
    cJSON *h, *t, *off, *dt;
    double *out;
    size_t b, e;

    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)img[i] << (8 * i);
    ck_assert(8 + hl <= len);
    h = cJSON_ParseWithLength((const char *)img + 8, hl);
    ck_assert_ptr_nonnull(h);
    t = cJSON_GetObjectItemCaseSensitive(h, key);
    ck_assert_msg(t != NULL, "tensor %s not in the file", key);
    dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    ck_assert_str_eq(dt->valuestring, "F32");
    off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    e = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    ck_assert(b <= e && 8 + hl + e <= len && (e - b) % 4 == 0);
    *n = (e - b) / 4;
    out = malloc(sizeof(double) * (*n ? *n : 1));
    for (size_t i = 0; i < *n; i++) {
        float f;
        memcpy(&f, img + 8 + hl + b + 4 * i, 4);
        out[i] = f;
    }
    cJSON_Delete(h);
    return out;
}

static void db_name(int l, char *buf, size_t len)
{
    if (l < 12)
        snprintf(buf, len, "distilbert.transformer.layer.%d.attention.%s", l / 2,
                 l % 2 ? "v_lin" : "q_lin");
    else
        snprintf(buf, len, "%s", l == 12 ? "pre_classifier" : "classifier");
}

START_TEST(test_real_peft_adapter)
{
    const char *src = testdata_dir();
    char *root, *mdir, *adir, *dst, *p, name[128], key[256];
    struct tu_tensor t[2 * DB_LAYERS];
    struct tu_layer L[DB_LAYERS];
    struct tu_lora lo[DB_LAYERS];
    double *W[DB_LAYERS], *b[DB_LAYERS], *rep[4];
    struct model *m = NULL;
    struct profile *prof = NULL, *pout = NULL;
    struct snapshot *s = NULL;
    struct lorad_error err = {0, ""};
    uint64_t rng = 7;
    FILE *cfg;
    uint8_t *img, *cfgtext;
    size_t len, cl, n;
    int adfd;

    if (!src) {
        fprintf(stderr, "test_real_peft_adapter: testdata not found, skipped\n");
        return;
    }
    root = tu_mkdtemp();
    mdir = tu_path(root, "model");
    adir = tu_path(root, "adapters");
    tu_mkdir(mdir);
    tu_mkdir(adir);
    p = tu_path(mdir, "config.json");
    cfg = fopen(p, "w");
    ck_assert_ptr_nonnull(cfg);
    fprintf(cfg, "{\"layers\": [");
    for (int l = 0; l < DB_LAYERS; l++) {
        int out = l == 13 ? 2 : DB_W;
        db_name(l, name, sizeof(name));
        fprintf(cfg,
                "%s{\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d, "
                "\"bias\": true, \"activation\": \"%s\"}",
                l ? "," : "", name, DB_W, out, l == 12 ? "relu" : "none");
        W[l] = tu_rand_array(&rng, (size_t)DB_W * out, -0.06, 0.06);
        b[l] = tu_rand_array(&rng, (size_t)out, -0.1, 0.1);
        snprintf(key, sizeof(key), "%s.weight", name);
        t[2 * l] = (struct tu_tensor){strdup(key), "F32", 2, {(uint64_t)out, DB_W}, W[l]};
        snprintf(key, sizeof(key), "%s.bias", name);
        t[2 * l + 1] = (struct tu_tensor){strdup(key), "F32", 1, {(uint64_t)out}, b[l]};
    }
    fprintf(cfg, "]}");
    fclose(cfg);
    free(p);
    p = tu_path(mdir, "model.safetensors");
    tu_write_safetensors(p, t, 2 * DB_LAYERS);
    free(p);
    ck_assert_msg(model_load(mdir, &m, NULL, &err) == 0, "%s", err.msg);

    /* copy the adapter under adapter_dir (a symlink would leave it) */
    dst = tu_path(adir, "imdb");
    tu_mkdir(dst);
    p = tu_path(src, "adapter_model.safetensors");
    img = tu_read_file(p, &len);
    free(p);
    p = tu_path(dst, "adapter_model.safetensors");
    tu_write_file(p, img, len);
    free(p);
    p = tu_path(src, "adapter_config.json");
    cfgtext = tu_read_file(p, &cl);
    free(p);
    p = tu_path(dst, "adapter_config.json");
    tu_write_file(p, cfgtext, cl);
    free(p);
    free(cfgtext);

    adfd = open(adir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(adfd, 0);
    ck_assert_int_eq(profile_from_config(m, 0, NULL, 0, &prof, &err), 0);
    struct adapter_stage_args args = {adfd, "imdb", NULL, m, prof};
    ck_assert_msg(adapter_stage(&args, &s, &pout, &err) == 0, "%s: %s", lorad_err_name(err.code),
                  err.msg);
    ck_assert_ptr_nonnull(pout);
    ck_assert_int_eq(pout->max_rank, 8);
    size_t ntargets = 0;
    for (int l = 0; l < DB_LAYERS; l++)
        ntargets += pout->targets[l];
    ck_assert_uint_eq(ntargets, 12);
    ck_assert(pout->lora_dropout == 0.1);
    ck_assert(!pout->use_rslora && !pout->use_dora && pout->n_alpha_pattern == 0);
    ck_assert_int_eq(s->rank, 8);
    ck_assert(s->lora_alpha == 16);
    ck_assert_ptr_nonnull(s->layers[12].weight);
    ck_assert_ptr_nonnull(s->layers[12].bias);
    ck_assert_ptr_nonnull(s->layers[13].weight);
    ck_assert_ptr_nonnull(s->layers[13].bias);
    ck_assert_ptr_null(s->layers[12].lora);

    /* the reference, from values read independently */
    for (int l = 0; l < DB_LAYERS; l++) {
        int out = l == 13 ? 2 : DB_W;
        db_name(l, name, sizeof(name));
        L[l] = (struct tu_layer){DB_W, out, l == 12 ? "relu" : "none", W[l], b[l], NULL};
        if (l < 12) {
            snprintf(key, sizeof(key), "base_model.model.%s.lora_A.weight", name);
            const double *A = raw_f32(img, len, key, &n);
            ck_assert_uint_eq(n, 8 * DB_W);
            snprintf(key, sizeof(key), "base_model.model.%s.lora_B.weight", name);
            const double *B = raw_f32(img, len, key, &n);
            lo[l] = (struct tu_lora){8, 16.0 / 8.0, A, B, NULL, NULL};
            L[l].lora = &lo[l];
            ck_assert(s->layers[l].lora && s->layers[l].lora->scaling == 2.0f);
        } else {
            snprintf(key, sizeof(key), "base_model.model.%s.weight", name);
            rep[2 * (l - 12)] = raw_f32(img, len, key, &n);
            snprintf(key, sizeof(key), "base_model.model.%s.bias", name);
            rep[2 * (l - 12) + 1] = raw_f32(img, len, key, &n);
            L[l].W = rep[2 * (l - 12)];
            L[l].b = rep[2 * (l - 12) + 1];
        }
    }
    enum { ROWS = 4 };
    double *x = tu_rand_array(&rng, (size_t)ROWS * DB_W, -1, 1), want[ROWS * 2];
    float *xf = malloc(sizeof(float) * ROWS * DB_W), got[ROWS * 2];
    for (int i = 0; i < ROWS * DB_W; i++)
        xf[i] = (float)x[i];
    struct forward_scratch *sc = forward_scratch_new(m, ROWS, 8);
    tu_ref_forward(L, DB_LAYERS, x, ROWS, want);
    forward_run(m, s, xf, ROWS, got, sc);
    double worst = tu_worst_ratio(got, want, ROWS * 2, 1e-4, 1e-4);
    ck_assert_msg(worst <= 1.0, "distilbert forward: worst ratio %g (got %g want %g)", worst,
                  got[0], want[0]);
    /* and it differs from the base model (the adapter does something) */
    float base[ROWS * 2];
    forward_run(m, NULL, xf, ROWS, base, sc);
    ck_assert(fabsf(base[0] - got[0]) > 1e-6f || fabsf(base[1] - got[1]) > 1e-6f);

    /* a second stage against the completed profile passes too */
    snapshot_free(&s);
    struct profile *pout2 = NULL;
    args.profile = pout;
    ck_assert_int_eq(adapter_stage(&args, &s, &pout2, &err), 0);
    ck_assert_ptr_null(pout2);

    forward_scratch_free(&sc);
    snapshot_free(&s);
    for (int l = 0; l < DB_LAYERS; l++) {
        if (l < 12) {
            free((double *)lo[l].A);
            free((double *)lo[l].B);
        }
        free(W[l]);
        free(b[l]);
        free((char *)t[2 * l].name);
        free((char *)t[2 * l + 1].name);
    }
    for (int i = 0; i < 4; i++)
        free(rep[i]);
    free(x);
    free(xf);
    free(img);
    close(adfd);
    profile_free(&prof);
    profile_free(&pout);
    model_free(&m);
    tu_rmrf(root);
    free(root);
    free(mdir);
    free(adir);
    free(dst);
}
END_TEST

/* ---- profile ---- */

START_TEST(test_profile_json_roundtrip)
{
    const char *t[] = {"layers.0.proj", "head"};
    struct profile *p = config_profile(8, t, 2), *q = NULL, *d;
    struct lorad_error err = {0, ""};
    cJSON *j, *j2;
    char *s1, *s2;

    ck_assert(p->has_limits && !p->has_fields);
    p->has_fields = true;
    p->use_rslora = true;
    p->lora_dropout = 0.25;
    p->n_alpha_pattern = 1;
    p->alpha_pattern = calloc(1, sizeof(*p->alpha_pattern));
    p->alpha_pattern[0].key = strdup("h.ad");
    p->alpha_pattern[0].value = 3.5;
    j = profile_to_json(p, F.m);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "max_rank")->valueint, 8);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "target_modules")), 2);
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "target_modules"), 1)->valuestring,
                     "head");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "use_rslora")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "use_dora")));
    ck_assert(cJSON_GetObjectItem(j, "lora_dropout")->valuedouble == 0.25);
    ck_assert(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "alpha_pattern"), "h.ad")->valuedouble ==
              3.5);
    ck_assert_int_eq(profile_from_json(j, F.m, &q, &err), 0);
    ck_assert(q->has_limits && q->has_fields && q->max_rank == 8 && q->use_rslora);
    ck_assert(q->targets[0] && !q->targets[1] && q->targets[2]);
    j2 = profile_to_json(q, F.m);
    s1 = cJSON_PrintUnformatted(j);
    s2 = cJSON_PrintUnformatted(j2);
    ck_assert_str_eq(s1, s2);
    d = profile_dup(q);
    cJSON_Delete(j2);
    j2 = profile_to_json(d, F.m);
    free(s2);
    s2 = cJSON_PrintUnformatted(j2);
    ck_assert_str_eq(s1, s2);
    free(s1);
    free(s2);
    cJSON_Delete(j);
    cJSON_Delete(j2);
    profile_free(&q);
    profile_free(&d);
    ck_assert_ptr_null(d);

    /* a fully partial profile is null and comes back partial */
    j = profile_to_json(F.empty, F.m);
    ck_assert(cJSON_IsNull(j));
    ck_assert_int_eq(profile_from_json(j, F.m, &q, &err), 0);
    ck_assert(!q->has_limits && !q->has_fields && !q->has_max_rank && !q->has_targets);
    cJSON_Delete(j);
    profile_free(&q);
    /* limits only from config (max_rank without target_modules) */
    profile_free(&p);
    p = config_profile(4, NULL, 0);
    j = profile_to_json(p, F.m);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "target_modules")));
    ck_assert_int_eq(profile_from_json(j, F.m, &q, &err), 0);
    ck_assert(q->has_max_rank && !q->has_targets && q->max_rank == 4);
    cJSON_Delete(j);
    profile_free(&q);
    profile_free(&p);
    /* errors */
    j = cJSON_Parse("{\"max_rank\": 4, \"target_modules\": [\"nope\"]}");
    ck_assert_int_eq(profile_from_json(j, F.m, &q, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_null(q);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"max_rank\": \"4\"}");
    ck_assert_int_eq(profile_from_json(j, F.m, &q, &err), LORAD_E_INVALID_CONFIG);
    cJSON_Delete(j);
    const char *bad[] = {"layers.9.proj"};
    ck_assert_int_eq(profile_from_config(F.m, 0, bad, 1, &q, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "layers.9.proj"));
    /* PEFT-style suffix names in target_modules */
    const char *suf[] = {"proj"};
    p = config_profile(0, suf, 1);
    ck_assert(p->targets[0] && p->targets[1] && !p->targets[2] && p->has_targets);
    ck_assert(!p->has_limits);
    profile_free(&p);
}
END_TEST

START_TEST(test_describe_all)
{
    struct profile *p = config_profile(2, NULL, 0);
    cJSON *arr, *e;
    char *f;

    simple("b-ok", NULL, 2, 4, 3);
    simple("a-big", NULL, 4, 4, 1);
    f = tu_path(F.adir, "zfile");
    tu_write_text(f, "x");
    free(f);
    f = tu_path(F.adir, ".hidden");
    tu_mkdir(f);
    free(f);
    arr = adapter_describe_all(F.adirfd, F.m, p);
    ck_assert_ptr_nonnull(arr);
    ck_assert_int_eq(cJSON_GetArraySize(arr), 2);
    e = cJSON_GetArrayItem(arr, 0);
    ck_assert_str_eq(cJSON_GetObjectItem(e, "name")->valuestring, "a-big");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(e, "compatible")));
    ck_assert_int_eq(cJSON_GetObjectItem(e, "r")->valueint, 4);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "code")->valuestring,
                     "rank_too_large");
    e = cJSON_GetArrayItem(arr, 1);
    ck_assert_str_eq(cJSON_GetObjectItem(e, "name")->valuestring, "b-ok");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(e, "compatible")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(e, "error")));
    ck_assert(cJSON_GetObjectItem(e, "lora_alpha")->valuedouble == 4);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(e, "layers")), 2);
    cJSON_Delete(arr);
    profile_free(&p);
}
END_TEST

START_TEST(test_snapshot_basics)
{
    struct snapshot *s = snapshot_new(3);
    struct timespec ts = {1795873512, 345678901};
    char buf[64];

    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->nlayers, 3);
    ck_assert_ptr_null(s->layers[2].lora);
    s->layers[1].lora = calloc(1, sizeof(*s->layers[1].lora));
    s->layers[1].lora->A = malloc(16);
    s->layers[0].weight = malloc(16);
    snapshot_free(&s);
    ck_assert_ptr_null(s);
    snapshot_free(&s);
    snapshot_free(NULL);
    snapshot_format_time(&ts, buf, sizeof(buf));
    ck_assert_str_eq(buf, "2026-11-28T13:45:12.345Z");
    ts.tv_nsec = 0;
    ts.tv_sec = 0;
    snapshot_format_time(&ts, buf, sizeof(buf));
    ck_assert_str_eq(buf, "1970-01-01T00:00:00.000Z");
}
END_TEST

static Suite *adapter_suite(void)
{
    Suite *s = suite_create("adapter");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_name_rule);
    tcase_add_test(tc, test_forbidden_names);
    tcase_add_test(tc, test_symlinks_inside);
    tcase_add_test(tc, test_no_openat2);
    tcase_add_test(tc, test_symlink_swap_consistent);
    tcase_add_test(tc, test_not_found);
    tcase_add_test(tc, test_checksum);
    tcase_add_test(tc, test_checksum_memo);
    tcase_add_test(tc, test_invalid_files);
    tcase_add_test(tc, test_invalid_config_fields);
    tcase_add_test(tc, test_peft_type);
    tcase_add_test(tc, test_pairing);
    tcase_add_test(tc, test_incompatible_config);
    tcase_add_test(tc, test_unknown_tensor_and_module);
    tcase_add_test(tc, test_shape_mismatch);
    tcase_add_test(tc, test_rank_mismatch);
    tcase_add_test(tc, test_rank_too_large);
    tcase_add_test(tc, test_dtype_and_values);
    tcase_add_test(tc, test_order);
    tcase_add_test(tc, test_numeric_dtypes);
    tcase_add_test(tc, test_patterns_rslora_bias);
    tcase_add_test(tc, test_dora_and_modules_to_save);
    tcase_add_test(tc, test_smaller_rank);
    tcase_add_test(tc, test_real_peft_adapter);
    tcase_add_test(tc, test_profile_json_roundtrip);
    tcase_add_test(tc, test_describe_all);
    tcase_add_test(tc, test_snapshot_basics);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(adapter_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
