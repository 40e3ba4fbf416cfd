/* lorad — tests/test_adapter.c: unit tests of lib/adapter.c: staging and
 * the /adapters listing. Every error staging can produce (SPEC.md 4 and 6)
 * from a crafted adapter, the order in which they are reported, one
 * version of an adapter directory swapped while it is staged, and the
 * numbers of staged snapshots checked against independent double-precision
 * computations (testutil), including the real PEFT adapter in
 * ../shared/testdata/peft-distilbert-imdb. The tests of what staging is
 * built from live beside their modules: test_confine (names and links),
 * test_peftcfg (adapter_config.json fields), test_profile (compatibility),
 * test_digest (the checksum memo), test_peftkey, test_weights. The
 * adapters are built with tests/adfixture. */
#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/adapter.h"
#include "../lib/forward.h"
#include "../lib/model.h"
#include "../lib/snapshot.h"
#include "adfixture.h"
#include "testutil.h"

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
        if (symlinkat(i % 2 ? "v1" : "v2", AF.adirfd, "cur.tmp") != 0 ||
            renameat(AF.adirfd, "cur.tmp", AF.adirfd, "cur") != 0) {
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
    af_simple("v1", NULL, 2, 4, 5);
    af_simple("v2", NULL, 2, 8, 5);
    s = af_expect_ok("v1", NULL, NULL, NULL);
    memcpy(sha1, s->sha256, sizeof(sha1));
    snapshot_free(&s);
    s = af_expect_ok("v2", NULL, NULL, NULL);
    memcpy(sha2, s->sha256, sizeof(sha2));
    snapshot_free(&s);
    ck_assert_str_ne(sha1, sha2);
    af_relink("cur", "v1");
    ck_assert_int_eq(pthread_create(&th, NULL, flip_main, &f), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* stage while the link flips, at least 400 times and through 1000
     * flips (at most 2 s: a loaded machine may starve the flipper); without
     * the check that NAME did not change, a torn pair shows up within a few
     * hundred flips */
    for (int i = 0; (i < 400 || atomic_load(&f.flips) < 1000) && seconds_since(&t0) < 2; i++) {
        struct profile *pout = NULL;
        struct lorad_error err;
        int rc = af_stage("cur", NULL, NULL, &s, &pout, &err);

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
    char *p = tu_path(AF.adir, "plainfile");
    int fd;

    af_expect_err("nope", NULL, NULL, LORAD_E_ADAPTER_NOT_FOUND, "nope", NULL);
    tu_write_text(p, "x");
    free(p);
    af_expect_err("plainfile", NULL, NULL, LORAD_E_ADAPTER_NOT_FOUND, NULL);
    p = tu_path(AF.adir, "dangling");
    ck_assert_int_eq(symlink("gone", p), 0);
    free(p);
    af_expect_err("dangling", NULL, NULL, LORAD_E_ADAPTER_NOT_FOUND, NULL);
    ck_assert_int_eq(adapter_open_dir(AF.adirfd, "nope", &fd, NULL), LORAD_E_ADAPTER_NOT_FOUND);
    ck_assert_int_eq(fd, -1);
}
END_TEST

START_TEST(test_checksum)
{
    char want[65], upper[65], *p;
    const char *wrong = "00000000000000000000000000000000000000000000000000000000000000ff";
    struct snapshot *s;

    af_simple("c", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "c/adapter_model.safetensors");
    af_sha256sum(p, want);
    free(p);
    s = af_expect_ok("c", NULL, want, NULL);
    ck_assert_str_eq(s->sha256, want);
    snapshot_free(&s);
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(want[i] >= 'a' && want[i] <= 'f' ? want[i] - 32 : want[i]);
    s = af_expect_ok("c", NULL, upper, NULL);
    snapshot_free(&s);
    af_expect_err("c", NULL, wrong, LORAD_E_CHECKSUM_MISMATCH, want, wrong, NULL);
    af_expect_err("c", NULL, "nothex", LORAD_E_CHECKSUM_MISMATCH, want, NULL);
}
END_TEST

/* ---- invalid_adapter and friends ---- */

START_TEST(test_invalid_files)
{
    struct af_adapter a;
    char *p;

    af_init(&a, "nocfg", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    a.no_cfg = true;
    free(af_write(&a));
    af_expect_err("nocfg", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_config.json", NULL);
    a.no_cfg = false;
    a.no_st = true;
    snprintf(a.name, sizeof(a.name), "nost");
    free(af_write(&a));
    af_expect_err("nost", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.safetensors", NULL);
    snprintf(a.name, sizeof(a.name), "pickle");
    free(af_write(&a));
    p = tu_path(AF.adir, "pickle/adapter_model.bin");
    tu_write_text(p, "not really a pickle");
    free(p);
    af_expect_err("pickle", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.bin", "pickle",
                  "convert", "safetensors", NULL);
    af_free(&a);

    af_simple("badjson", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "badjson/adapter_config.json");
    tu_write_text(p, "{\"peft_type\": \"LORA\", ");
    free(p);
    af_expect_err("badjson", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_config.json", NULL);

    af_simple("badst", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "badst/adapter_model.safetensors");
    tu_write_text(p, "\xff\xff\xff\xff\xff\xff\xff\x7f garbage");
    free(p);
    af_expect_err("badst", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.safetensors", NULL);
    p = tu_path(AF.adir, "badst/adapter_model.safetensors");
    tu_write_text(p, "%s", "");
    free(p);
    af_expect_err("badst", NULL, NULL, LORAD_E_INVALID_ADAPTER, NULL);

    af_simple("nopeft", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "nopeft/adapter_config.json");
    tu_write_text(p, "{\"r\": 2, \"lora_alpha\": 4}");
    free(p);
    af_expect_err("nopeft", NULL, NULL, LORAD_E_INVALID_ADAPTER, "peft_type", NULL);
}
END_TEST

START_TEST(test_pairing)
{
    struct af_adapter a;

    af_init(&a, "aonly", NULL, 2, 4);
    af_lora(&a, 0, "lora_A.weight", "F32", 2, (uint64_t)AF_IN[0], 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("aonly", NULL, NULL, LORAD_E_INVALID_ADAPTER, "layers.0.proj", "lora_A.weight",
                  "lora_B.weight", NULL);
    af_init(&a, "bonly", NULL, 2, 4);
    af_lora(&a, 1, "lora_B.weight", "F32", (uint64_t)AF_OUT[1], 2, 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("bonly", NULL, NULL, LORAD_E_INVALID_ADAPTER, "layers.1.proj", NULL);
    af_simple("nomag", "\"use_dora\": true", 2, 4, 1);
    af_expect_err("nomag", NULL, NULL, LORAD_E_INVALID_ADAPTER, "magnitude", "layers.0.proj", NULL);
    af_init(&a, "magnodora", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    af_lora(&a, 0, "lora_magnitude_vector", "F32", (uint64_t)AF_OUT[0], 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("magnodora", NULL, NULL, LORAD_E_INVALID_ADAPTER, "use_dora", NULL);
}
END_TEST

START_TEST(test_unknown_tensor_and_module)
{
    struct af_adapter a;
    struct profile *p;
    const char *t0[] = {"layers.0.proj"};

    af_init(&a, "ut", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    af_add(&a, "base_model.model.layers.0.proj.lora_embedding_A", "F32", 1, 2, 0, 0, 1);
    af_add(&a, "something_else", "F32", 1, 2, 0, 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("ut", NULL, NULL, LORAD_E_UNKNOWN_TENSOR, "lora_embedding_A", "something_else",
                  NULL);

    af_init(&a, "um", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    af_add(&a, "base_model.model.nope.proj.lora_A.weight", "F32", 2, 2, 6, 0, 1);
    af_add(&a, "base_model.model.nope.proj.lora_B.weight", "F32", 2, 5, 2, 0, 1);
    af_add(&a, "other.lora_A.weight", "F32", 2, 2, 6, 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("um", NULL, NULL, LORAD_E_UNKNOWN_MODULE, "nope.proj", "other", NULL);

    /* a long list is cut with "..." but counted in full */
    af_init(&a, "many", NULL, 2, 4);
    for (int i = 0; i < 30; i++) {
        char k[64];
        snprintf(k, sizeof(k), "model.encoder.block_%02d.mlp.lora_A.weight", i);
        af_add(&a, k, "F32", 2, 2, 6, 0, 1);
    }
    free(af_write(&a));
    af_free(&a);
    af_expect_err("many", NULL, NULL, LORAD_E_UNKNOWN_MODULE, "30 layer(s)", "block_00", ", ...",
                  NULL);

    af_init(&a, "umw", NULL, 2, 4);
    af_add(&a, "base_model.model.classifier.weight", "F32", 2, 2, 6, 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("umw", NULL, NULL, LORAD_E_UNKNOWN_MODULE, "classifier", NULL);

    /* a layer of the model outside the profile's target set */
    p = af_config_profile(0, t0, 1);
    af_simple("tgt", NULL, 2, 4, 7);
    af_expect_err("tgt", p, NULL, LORAD_E_UNKNOWN_MODULE, "layers.1.proj", "head", "target", NULL);
    af_simple("tgt_ok", NULL, 2, 4, 1);
    struct snapshot *s = af_expect_ok("tgt_ok", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);
    /* ... and from the first adapter */
    p = af_profile_of("tgt_ok");
    af_expect_err("tgt", p, NULL, LORAD_E_UNKNOWN_MODULE, "layers.1.proj", "head", NULL);
    profile_free(&p);
}
END_TEST

START_TEST(test_shape_mismatch)
{
    struct af_adapter a;

    af_init(&a, "sa", NULL, 2, 4);
    af_lora(&a, 0, "lora_A.weight", "F32", 2, 7, 2);
    af_lora(&a, 0, "lora_B.weight", "F32", (uint64_t)AF_OUT[0], 2, 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("sa", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "lora_A.weight", "[2, 7]", "[2, 6]",
                  NULL);
    af_init(&a, "sb", NULL, 2, 4);
    af_lora(&a, 0, "lora_A.weight", "F32", 2, (uint64_t)AF_IN[0], 2);
    af_lora(&a, 0, "lora_B.weight", "F32", 9, 2, 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("sb", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "lora_B.weight", "layers.0.proj", NULL);
    af_init(&a, "nobias", NULL, 2, 4);
    af_lora(&a, 1, "bias", "F32", (uint64_t)AF_OUT[1], 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("nobias", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "layers.1.proj", "no bias", NULL);
    /* modules_to_save weight: fan_in_fan_out layer wants [in, out] */
    af_init(&a, "mtsw", NULL, 2, 4);
    af_lora(&a, 1, "weight", "F32", (uint64_t)AF_OUT[1], (uint64_t)AF_IN[1], 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("mtsw", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "[4, 5]", "[5, 4]", NULL);
    af_init(&a, "mag", "\"use_dora\": true", 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    af_lora(&a, 0, "lora_magnitude_vector", "F32", 3, 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("mag", NULL, NULL, LORAD_E_SHAPE_MISMATCH, "lora_magnitude_vector", NULL);
}
END_TEST

START_TEST(test_rank_mismatch)
{
    struct af_adapter a;

    af_init(&a, "rm", NULL, 4, 4);
    af_lora(&a, 0, "lora_A.weight", "F32", 3, (uint64_t)AF_IN[0], 2);
    af_lora(&a, 0, "lora_B.weight", "F32", (uint64_t)AF_OUT[0], 3, 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("rm", NULL, NULL, LORAD_E_RANK_MISMATCH, "layers.0.proj", "3", "r=4", NULL);
    af_init(&a, "rp", "\"rank_pattern\": {\"head\": 2}", 4, 4);
    af_ab(&a, 2, 4, "F32", NULL, NULL);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("rp", NULL, NULL, LORAD_E_RANK_MISMATCH, "head", "r=2", "rank_pattern", NULL);
    af_init(&a, "rb", NULL, 2, 4);
    af_lora(&a, 0, "lora_A.weight", "F32", 2, (uint64_t)AF_IN[0], 2);
    af_lora(&a, 0, "lora_B.weight", "F32", (uint64_t)AF_OUT[0], 3, 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("rb", NULL, NULL, LORAD_E_RANK_MISMATCH, "lora_B.weight", NULL);
}
END_TEST

START_TEST(test_rank_too_large)
{
    struct profile *p = af_config_profile(4, NULL, 0);
    struct snapshot *s;

    af_simple("big", NULL, 8, 8, 1);
    af_expect_err("big", p, NULL, LORAD_E_RANK_TOO_LARGE, "layers.0.proj", "8", "4", "max_rank",
                  NULL);
    af_ranked("bigpat", "\"rank_pattern\": {\"head\": 5}", 2, 8, (const int[AF_NL]){2, 0, 5});
    af_expect_err("bigpat", p, NULL, LORAD_E_RANK_TOO_LARGE, "head", "5", "max_rank", NULL);
    profile_free(&p);
    /* limit from the first adapter (its largest rank, rank_pattern included) */
    af_ranked("first", "\"rank_pattern\": {\"head\": 3}", 2, 8, (const int[AF_NL]){2, 0, 3});
    p = af_profile_of("first");
    ck_assert_int_eq(p->max_rank, 3);
    af_expect_err("big", p, NULL, LORAD_E_RANK_TOO_LARGE, "8", "3", "max_rank", NULL);
    af_simple("small", NULL, 3, 8, 1);
    s = af_expect_ok("small", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);
}
END_TEST

START_TEST(test_dtype_and_values)
{
    struct af_adapter a;
    double *v;

    af_init(&a, "f64", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    af_lora(&a, 2, "bias", "F64", (uint64_t)AF_OUT[2], 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("f64", NULL, NULL, LORAD_E_UNSUPPORTED_DTYPE, "head.bias", "F64", NULL);

    af_init(&a, "nan", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, &v);
    v[3] = NAN;
    free(af_write(&a));
    af_free(&a);
    af_expect_err("nan", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "layers.0.proj.lora_B.weight",
                  NULL);

    af_init(&a, "inf16", NULL, 2, 4);
    af_ab(&a, 0, 2, "BF16", &v, NULL);
    v[0] = -INFINITY;
    free(af_write(&a));
    af_free(&a);
    af_expect_err("inf16", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "lora_A.weight", NULL);

    af_init(&a, "mts", NULL, 2, 4);
    v = af_lora(&a, 2, "weight", "F16", (uint64_t)AF_OUT[2], (uint64_t)AF_IN[2], 2);
    v[5] = INFINITY;
    free(af_write(&a));
    af_free(&a);
    af_expect_err("mts", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "head.weight", NULL);

    af_init(&a, "magnan", "\"use_dora\": true", 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    v = af_lora(&a, 0, "lora_magnitude_vector", "F32", (uint64_t)AF_OUT[0], 0, 1);
    v[1] = NAN;
    free(af_write(&a));
    af_free(&a);
    af_expect_err("magnan", NULL, NULL, LORAD_E_NON_FINITE_WEIGHTS, "lora_magnitude_vector", NULL);
}
END_TEST

/* An adapter breaking two rules reports the earlier one. */
START_TEST(test_order)
{
    struct profile *p4 = af_config_profile(4, NULL, 0), *pf;
    const char *wrong = "1111111111111111111111111111111111111111111111111111111111111111";
    struct af_adapter a;
    double *v;
    char *path;

    /* checksum before files validity */
    af_simple("o1", NULL, 2, 4, 1);
    path = tu_path(AF.adir, "o1/adapter_config.json");
    tu_write_text(path, "not json");
    free(path);
    af_expect_err("o1", NULL, wrong, LORAD_E_CHECKSUM_MISMATCH, NULL);
    af_expect_err("o1", NULL, NULL, LORAD_E_INVALID_ADAPTER, NULL);
    /* files validity before config type */
    af_init(&a, "o2", NULL, 2, 4);
    snprintf(a.cfg, sizeof(a.cfg), "{\"peft_type\": \"IA3\"}");
    free(af_write(&a));
    af_free(&a);
    path = tu_path(AF.adir, "o2/adapter_model.safetensors");
    tu_write_text(path, "short");
    free(path);
    af_expect_err("o2", NULL, NULL, LORAD_E_INVALID_ADAPTER, NULL);
    /* config compatibility before tensor names */
    af_simple("base", NULL, 2, 4, 1);
    pf = af_profile_of("base");
    af_init(&a, "o3", "\"use_rslora\": true", 2, 4);
    af_add(&a, "weird", "F32", 1, 1, 0, 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("o3", pf, NULL, LORAD_E_INCOMPATIBLE_CONFIG, NULL);
    af_expect_err("o3", NULL, NULL, LORAD_E_UNKNOWN_TENSOR, NULL);
    /* tensor names before ranks */
    af_init(&a, "o4", NULL, 8, 8);
    af_ab(&a, 0, 8, "F32", NULL, NULL);
    af_add(&a, "zzz.lora_A.weight", "F32", 2, 8, 6, 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("o4", p4, NULL, LORAD_E_UNKNOWN_MODULE, NULL);
    /* shapes before ranks */
    af_init(&a, "o5", NULL, 8, 8);
    af_ab(&a, 0, 8, "F32", NULL, NULL);
    af_lora(&a, 2, "weight", "F32", 1, 1, 2);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("o5", p4, NULL, LORAD_E_SHAPE_MISMATCH, NULL);
    /* ranks before dtypes and values */
    af_init(&a, "o6", NULL, 8, 8);
    af_ab(&a, 0, 8, "F32", &v, NULL);
    v[0] = NAN;
    af_lora(&a, 2, "bias", "F64", (uint64_t)AF_OUT[2], 0, 1);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("o6", p4, NULL, LORAD_E_RANK_TOO_LARGE, NULL);
    af_expect_err("o6", NULL, NULL, LORAD_E_UNSUPPORTED_DTYPE, NULL);
    /* forbidden name before everything */
    af_expect_err("../o6", NULL, wrong, LORAD_E_FORBIDDEN_NAME, NULL);
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
    struct tu_layer L[AF_NL];
    struct tu_lora lo[AF_NL];
    enum { ROWS = 5 };
    double *x = tu_rand_array(&AF.rng, (size_t)ROWS * AF_IN[0], -1, 1), want[ROWS * 3];
    float xf[ROWS * 6], got[ROWS * 3];
    struct forward_scratch *sc = forward_scratch_new(AF.m, ROWS, max_rank);

    ck_assert_ptr_nonnull(sc);
    for (int l = 0; l < AF_NL; l++) {
        L[l] = (struct tu_layer){AF_IN[l],
                                 AF_OUT[l],
                                 AF_ACTS[l],
                                 rl[l].W ? rl[l].W : AF.W[l],
                                 rl[l].b ? rl[l].b : AF.b[l],
                                 NULL};
        if (rl[l].A) {
            lo[l] = (struct tu_lora){rl[l].r, rl[l].s, rl[l].A, rl[l].B, rl[l].bias_B, rl[l].mag};
            L[l].lora = &lo[l];
        }
    }
    for (int i = 0; i < ROWS * AF_IN[0]; i++)
        xf[i] = (float)x[i];
    tu_ref_forward(L, AF_NL, x, ROWS, want);
    forward_run(AF.m, snap, xf, ROWS, got, sc);
    double worst = tu_worst_ratio(got, want, (size_t)ROWS * AF_OUT[AF_NL - 1], 1e-5, 1e-4);
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
    struct af_adapter a;
    struct ref_lora rl[AF_NL] = {{0}};
    struct snapshot *s;
    char *dir, *p, want_sha[65];
    struct timespec before, after;

    af_init(&a, dtype, NULL, 4, 8);
    for (int l = 0; l < AF_NL; l++) {
        rl[l].r = 4;
        rl[l].alpha = 8;
        rl[l].s = 2.0;
        af_ab(&a, l, 4, dtype, &rl[l].A, &rl[l].B);
    }
    dir = af_write(&a);
    p = tu_path(dir, "adapter_model.safetensors");
    af_sha256sum(p, want_sha);
    free(p);
    free(dir);
    clock_gettime(CLOCK_REALTIME, &before);
    s = af_expect_ok(dtype, NULL, NULL, NULL);
    clock_gettime(CLOCK_REALTIME, &after);
    ck_assert_str_eq(s->name, dtype);
    ck_assert_uint_eq(s->version, 0);
    ck_assert_int_eq(s->rank, 4);
    ck_assert(s->lora_alpha == 8.0);
    ck_assert_str_eq(s->sha256, want_sha);
    ck_assert(s->stage_ms >= 0);
    ck_assert(s->loaded_at.tv_sec >= before.tv_sec && s->loaded_at.tv_sec <= after.tv_sec);
    ck_assert_uint_eq(s->nlayers, AF_NL);
    size_t bytes = 0;
    for (int l = 0; l < AF_NL; l++) {
        const struct snapshot_lora *lo = s->layers[l].lora;
        ck_assert_ptr_nonnull(lo);
        ck_assert_int_eq(lo->rank, 4);
        ck_assert(lo->scaling == 2.0f);
        ck_assert(lo->alpha == 8.0);
        ck_assert_ptr_null(lo->bias_B);
        ck_assert_ptr_null(lo->dora_scale);
        ck_assert_ptr_null(s->layers[l].weight);
        check_array(lo->A, rl[l].A, (size_t)4 * AF_IN[l], "A");
        check_array(lo->B, rl[l].B, (size_t)4 * AF_OUT[l], "B");
        bytes += sizeof(float) * 4 * (size_t)(AF_IN[l] + AF_OUT[l]);
    }
    ck_assert_uint_eq(s->bytes, bytes);
    check_forward(s, rl, 4);
    snapshot_free(&s);
    ck_assert_ptr_null(s);
    af_free(&a);
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
    struct af_adapter a;
    struct ref_lora rl[AF_NL] = {{0}};
    struct snapshot *s;
    struct profile *pout = NULL;
    /* "0.proj" matches layers.0.proj (first in file order), "proj" then
     * layers.1.proj; head keeps r; alpha_pattern "h.ad" is a regex. */
    const char *extra = "\"rank_pattern\": {\"0.proj\": 2, \"proj\": 3, \"xhead\": 7},"
                        " \"alpha_pattern\": {\"h.ad\": 5, \"head\": 9}, \"use_rslora\": true,"
                        " \"lora_bias\": true, \"lora_dropout\": 0.05";
    const int ranks[AF_NL] = {2, 3, 6};
    const double alphas[AF_NL] = {12, 12, 5};

    af_init(&a, "pat", extra, 6, 12);
    for (int l = 0; l < AF_NL; l++) {
        rl[l].r = ranks[l];
        rl[l].alpha = alphas[l];
        rl[l].s = alphas[l] / sqrt((double)ranks[l]);
        af_ab(&a, l, ranks[l], "F32", &rl[l].A, &rl[l].B);
    }
    rl[1].bias_B = af_lora(&a, 1, "lora_B.bias", "F32", (uint64_t)AF_OUT[1], 0, 1);
    free(af_write(&a));
    s = af_expect_ok("pat", NULL, NULL, &pout);
    ck_assert_int_eq(s->rank, 6);
    for (int l = 0; l < AF_NL; l++) {
        const struct snapshot_lora *lo = s->layers[l].lora;
        ck_assert_int_eq(lo->rank, ranks[l]);
        ck_assert(lo->alpha == alphas[l]);
        ck_assert_msg(lo->scaling == (float)rl[l].s, "layer %d: scaling %.9g want %.9g", l,
                      lo->scaling, rl[l].s);
    }
    check_array(s->layers[1].lora->bias_B, rl[1].bias_B, (size_t)AF_OUT[1], "bias_B");
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
    af_free(&a);
}
END_TEST

START_TEST(test_dora_and_modules_to_save)
{
    struct af_adapter a;
    struct ref_lora rl[AF_NL] = {{0}};
    struct snapshot *s;
    double *fileW;

    af_init(&a, "dora", "\"use_dora\": true", 3, 6);
    /* layer 0: DoRA with the PEFT key form; layer 1: modules_to_save weight
     * ([in, out] file layout) plus DoRA with the ".weight" key form; head:
     * modules_to_save weight and bias only. */
    for (int l = 0; l < 2; l++) {
        rl[l].r = 3;
        rl[l].alpha = 6;
        rl[l].s = 2.0;
        af_ab(&a, l, 3, "F32", &rl[l].A, &rl[l].B);
    }
    rl[0].mag = af_lora(&a, 0, "lora_magnitude_vector", "F32", (uint64_t)AF_OUT[0], 0, 1);
    rl[1].mag = af_lora(&a, 1, "lora_magnitude_vector.weight", "BF16", (uint64_t)AF_OUT[1], 0, 1);
    for (int o = 0; o < AF_OUT[0]; o++)
        rl[0].mag[o] = fabs(rl[0].mag[o]) + 0.5;
    fileW = af_lora(&a, 1, "weight", "F32", (uint64_t)AF_IN[1], (uint64_t)AF_OUT[1], 2);
    rl[1].W = malloc(sizeof(double) * (size_t)AF_IN[1] * AF_OUT[1]);
    for (int i = 0; i < AF_IN[1]; i++)
        for (int o = 0; o < AF_OUT[1]; o++)
            rl[1].W[(size_t)o * AF_IN[1] + i] = fileW[(size_t)i * AF_OUT[1] + o];
    rl[2].W = af_lora(&a, 2, "weight", "F16", (uint64_t)AF_OUT[2], (uint64_t)AF_IN[2], 2);
    rl[2].b = af_lora(&a, 2, "bias", "F32", (uint64_t)AF_OUT[2], 0, 1);
    free(af_write(&a));
    s = af_expect_ok("dora", NULL, NULL, NULL);
    for (int l = 0; l < 2; l++) {
        const double *W = rl[l].W ? rl[l].W : AF.W[l];
        const struct snapshot_lora *lo = s->layers[l].lora;
        ck_assert_ptr_nonnull(lo->dora_scale);
        for (int o = 0; o < AF_OUT[l]; o++) {
            double ss = 0;
            for (int i = 0; i < AF_IN[l]; i++) {
                double ba = 0;
                for (int k = 0; k < 3; k++)
                    ba += rl[l].B[o * 3 + k] * rl[l].A[k * AF_IN[l] + i];
                double w = W[(size_t)o * AF_IN[l] + i] + 2.0 * ba;
                ss += w * w;
            }
            double want = rl[l].mag[o] / sqrt(ss);
            ck_assert_msg(fabs(lo->dora_scale[o] - want) <= 1e-6 * fabs(want),
                          "layer %d row %d: dora_scale %.9g want %.9g", l, o, lo->dora_scale[o],
                          want);
        }
    }
    check_weight(s->layers[1].weight, rl[1].W, AF_OUT[1], AF_IN[1], "weight1");
    ck_assert_ptr_null(s->layers[1].bias);
    check_weight(s->layers[2].weight, rl[2].W, AF_OUT[2], AF_IN[2], "weight2");
    check_array(s->layers[2].bias, rl[2].b, (size_t)AF_OUT[2], "bias2");
    ck_assert_ptr_null(s->layers[2].lora);
    check_forward(s, rl, 3);
    snapshot_free(&s);
    free(rl[1].W);
    af_free(&a);
}
END_TEST

/* A rank smaller than the profile's max_rank serves at its real rank. */
START_TEST(test_smaller_rank)
{
    struct profile *p = af_config_profile(16, NULL, 0);
    struct af_adapter a;
    struct ref_lora rl[AF_NL] = {{0}};
    struct snapshot *s;

    af_init(&a, "small", NULL, 2, 3);
    rl[2].r = 2;
    rl[2].alpha = 3;
    rl[2].s = 1.5;
    af_ab(&a, 2, 2, "F32", &rl[2].A, &rl[2].B);
    free(af_write(&a));
    s = af_expect_ok("small", p, NULL, NULL);
    ck_assert_int_eq(s->rank, 2);
    ck_assert_int_eq(s->layers[2].lora->rank, 2);
    ck_assert_ptr_null(s->layers[0].lora);
    ck_assert_ptr_null(s->layers[1].lora);
    check_forward(s, rl, 16);
    snapshot_free(&s);
    profile_free(&p);
    af_free(&a);
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

START_TEST(test_describe_all)
{
    struct profile *p = af_config_profile(2, NULL, 0);
    cJSON *arr, *e;
    char *f;

    af_simple("b-ok", NULL, 2, 4, 3);
    af_simple("a-big", NULL, 4, 4, 1);
    f = tu_path(AF.adir, "zfile");
    tu_write_text(f, "x");
    free(f);
    f = tu_path(AF.adir, ".hidden");
    tu_mkdir(f);
    free(f);
    arr = adapter_describe_all(AF.adirfd, AF.m, p);
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

/* Directories that are no adapter are skipped; an incompatible adapter
 * still lists its layers, also when staging stopped before its tensors. */
START_TEST(test_describe_skips_and_layers)
{
    struct profile *p;
    cJSON *arr, *e, *layers;
    char *f;

    af_simple("b-ok", NULL, 2, 4, 3);
    af_simple("c-dora", "\"use_dora\": true", 2, 4, 5); /* layers 0 and 2 */
    p = af_profile_of("b-ok");                          /* use_dora false */
    /* a Hugging Face cache's helper directories, and an empty one */
    f = tu_path(AF.adir, "blobs");
    tu_mkdir(f);
    free(f);
    f = tu_path(AF.adir, "blobs/0123abcd");
    tu_write_text(f, "blob");
    free(f);
    f = tu_path(AF.adir, "models--org--name");
    tu_mkdir(f);
    free(f);
    /* only a config: an adapter, broken */
    f = tu_path(AF.adir, "d-cfgonly");
    tu_mkdir(f);
    free(f);
    f = tu_path(AF.adir, "d-cfgonly/adapter_config.json");
    tu_write_text(f, "{\"peft_type\": \"LORA\"}");
    free(f);
    arr = adapter_describe_all(AF.adirfd, AF.m, p);
    ck_assert_ptr_nonnull(arr);
    ck_assert_int_eq(cJSON_GetArraySize(arr), 3); /* b-ok, c-dora, d-cfgonly */
    e = cJSON_GetArrayItem(arr, 1);
    ck_assert_str_eq(cJSON_GetObjectItem(e, "name")->valuestring, "c-dora");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(e, "compatible")));
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "code")->valuestring,
                     "incompatible_config");
    layers = cJSON_GetObjectItem(e, "layers");
    ck_assert_int_eq(cJSON_GetArraySize(layers), 2);
    ck_assert_str_eq(cJSON_GetArrayItem(layers, 0)->valuestring, AF_NAMES[0]);
    ck_assert_str_eq(cJSON_GetArrayItem(layers, 1)->valuestring, AF_NAMES[2]);
    e = cJSON_GetArrayItem(arr, 2);
    ck_assert_str_eq(cJSON_GetObjectItem(e, "name")->valuestring, "d-cfgonly");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "code")->valuestring,
                     "invalid_adapter");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(e, "layers")), 0);
    cJSON_Delete(arr);
    profile_free(&p);
}
END_TEST

static Suite *adapter_suite(void)
{
    Suite *s = suite_create("adapter");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, af_setup, af_teardown);
    tcase_add_test(tc, test_name_rule);
    tcase_add_test(tc, test_symlink_swap_consistent);
    tcase_add_test(tc, test_not_found);
    tcase_add_test(tc, test_checksum);
    tcase_add_test(tc, test_invalid_files);
    tcase_add_test(tc, test_pairing);
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
    tcase_add_test(tc, test_describe_all);
    tcase_add_test(tc, test_describe_skips_and_layers);
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
