/* lorad — tests/test_statefile.c: the persistent serving state
 * (lib/statefile.c): render -> write -> restore round trips (stable,
 * canary and share, history order, generation, versions, sha256s,
 * profile), the one-ahead version floor, the base model as an entry,
 * failures that install nothing but the floor (tampered or missing
 * adapter, corrupt JSON, wrong types, every truncation), and the atomic
 * write (temp file handling, error naming the path).
 *
 * Real adapters are written with testutil's independent safetensors writer
 * and staged with adapter_stage(); the test thread is the single writer of
 * every serving state. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../lib/adapter.h"
#include "../lib/model.h"
#include "../lib/serving.h"
#include "../lib/snapshot.h"
#include "../lib/statefile.h"
#include "testutil.h"

/* ---- fixture: a 2-layer 8x8 model and three adapters ---- */

#define NL 2
#define W 8
#define RANK 2
static const char *const LNAMES[NL] = {"layers.0.proj", "layers.1.proj"};
static const char *const ADAPTERS[] = {"a1", "a2", "a3"};
#define NAD 3

struct fixture {
    char *root, *adir, *state;
    int adirfd;
    struct model *m;
    struct profile *profile; /* the daemon's current profile */
    uint64_t rng;
};
static struct fixture F;

static void write_model(const char *dir)
{
    struct tu_tensor t[2 * NL];
    double *v[2 * NL];
    char names[2 * NL][64];
    char *p = tu_path(dir, "config.json");

    tu_write_text(p,
                  "{\"layers\": ["
                  "{\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d, \"bias\": true,"
                  " \"activation\": \"relu\"},"
                  "{\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d, \"bias\": true,"
                  " \"activation\": \"none\"}]}",
                  LNAMES[0], W, W, LNAMES[1], W, W);
    free(p);
    for (int l = 0; l < NL; l++) {
        snprintf(names[2 * l], 64, "%s.weight", LNAMES[l]);
        snprintf(names[2 * l + 1], 64, "%s.bias", LNAMES[l]);
        v[2 * l] = tu_rand_array(&F.rng, W * W, -0.5, 0.5);
        v[2 * l + 1] = tu_rand_array(&F.rng, W, -0.2, 0.2);
        t[2 * l] = (struct tu_tensor){names[2 * l], "F32", 2, {W, W}, v[2 * l]};
        t[2 * l + 1] = (struct tu_tensor){names[2 * l + 1], "F32", 1, {W}, v[2 * l + 1]};
    }
    p = tu_path(dir, "model.safetensors");
    tu_write_safetensors(p, t, 2 * NL);
    free(p);
    for (int i = 0; i < 2 * NL; i++)
        free(v[i]);
}

/* Writes (or rewrites) adapter `name`: LoRA rank RANK on both layers with
 * fresh random values. */
static void write_adapter(const char *name)
{
    char *dir = tu_path(F.adir, name), *p;
    struct tu_tensor t[2 * NL];
    double *v[2 * NL];
    char keys[2 * NL][128];

    mkdir(dir, 0755);
    p = tu_path(dir, "adapter_config.json");
    tu_write_text(p,
                  "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": 4, \"task_type\": null,"
                  " \"target_modules\": [\"proj\"], \"lora_dropout\": 0.05}",
                  RANK);
    free(p);
    for (int l = 0; l < NL; l++) {
        snprintf(keys[2 * l], 128, "base_model.model.%s.lora_A.weight", LNAMES[l]);
        snprintf(keys[2 * l + 1], 128, "base_model.model.%s.lora_B.weight", LNAMES[l]);
        v[2 * l] = tu_rand_array(&F.rng, RANK * W, -0.5, 0.5);
        v[2 * l + 1] = tu_rand_array(&F.rng, W * RANK, -0.5, 0.5);
        t[2 * l] = (struct tu_tensor){keys[2 * l], "F32", 2, {RANK, W}, v[2 * l]};
        t[2 * l + 1] = (struct tu_tensor){keys[2 * l + 1], "F32", 2, {W, RANK}, v[2 * l + 1]};
    }
    p = tu_path(dir, "adapter_model.safetensors");
    tu_write_safetensors(p, t, 2 * NL);
    free(p);
    for (int i = 0; i < 2 * NL; i++)
        free(v[i]);
    free(dir);
}

static void setup(void)
{
    struct lorad_error err = {0, ""};
    char *mdir;

    memset(&F, 0, sizeof(F));
    F.rng = 7;
    F.root = tu_mkdtemp();
    mdir = tu_path(F.root, "model");
    F.adir = tu_path(F.root, "adapters");
    F.state = tu_path(F.root, "state.json");
    tu_mkdir(mdir);
    tu_mkdir(F.adir);
    write_model(mdir);
    ck_assert_msg(model_load(mdir, &F.m, NULL, &err) == 0, "model_load: %s", err.msg);
    free(mdir);
    for (int i = 0; i < NAD; i++)
        write_adapter(ADAPTERS[i]);
    F.adirfd = open(F.adir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(F.adirfd, 0);
    ck_assert_int_eq(profile_from_config(F.m, 0, NULL, 0, &F.profile, &err), 0);
}

static void teardown(void)
{
    close(F.adirfd);
    model_free(&F.m);
    profile_free(&F.profile);
    tu_rmrf(F.root);
    free(F.root);
    free(F.adir);
    free(F.state);
}

/* ---- helpers ---- */

/* Stages `name` against F.profile (adopting a completed profile). */
static struct snapshot *stage(const char *name)
{
    struct adapter_stage_args a = {F.adirfd, name, NULL, F.m, F.profile};
    struct snapshot *snap = NULL;
    struct profile *done = NULL;
    struct lorad_error err = {0, ""};
    int rc = adapter_stage(&a, &snap, &done, &err);

    ck_assert_msg(rc == 0, "stage %s: %s", name, err.msg);
    if (done) {
        profile_free(&F.profile);
        F.profile = done;
    }
    return snap;
}

/* Swaps `name` in (stable for bp < 0, else canary at bp); its version. */
static uint64_t swap(struct serving *s, const char *name, int bp)
{
    struct serving_commit c;
    struct lorad_error err = {0, ""};
    int rc = serving_swap(s, stage(name), bp, &c, &err);
    ck_assert_msg(rc == 0, "swap %s: %s", name, err.msg);
    return c.now->version;
}

static void done(struct serving **s)
{
    serving_barrier(*s);
    serving_free(s);
}

/* Renders s with F.profile and writes it to F.state; returns the text. */
static char *save(const struct serving *s)
{
    struct lorad_error err = {0, ""};
    char *text = statefile_render(s, F.profile, F.m);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(statefile_write(F.state, text, strlen(text), &err) == 0, "write: %s", err.msg);
    return text;
}

/* Restores F.state into a fresh serving (history 4) with a fresh partial
 * profile (as the daemon passes its config profile). */
static enum statefile_restored restore(struct serving **out, struct profile **pout,
                                       struct lorad_error *err)
{
    struct profile *p = NULL;
    enum statefile_restored r;

    *out = serving_new(4);
    ck_assert_ptr_nonnull(*out);
    ck_assert_int_eq(profile_from_config(F.m, 0, NULL, 0, &p, err), 0);
    memset(err, 0, sizeof(*err));
    r = statefile_restore(F.state, F.adirfd, F.m, *out, &p, err);
    if (pout)
        *pout = p;
    else
        profile_free(&p);
    return r;
}

/* Same adapter name, version, sha256 and identical f32 LoRA data. */
static void same_snapshot(const struct snapshot *a, const struct snapshot *b)
{
    if (!a || !b) {
        ck_assert_ptr_eq(a, b);
        return;
    }
    ck_assert_str_eq(a->name, b->name);
    ck_assert_uint_eq(a->version, b->version);
    ck_assert_str_eq(a->sha256, b->sha256);
    ck_assert_uint_eq(a->nlayers, b->nlayers);
    for (size_t l = 0; l < a->nlayers; l++) {
        const struct snapshot_lora *x = a->layers[l].lora, *y = b->layers[l].lora;
        ck_assert_ptr_nonnull(x);
        ck_assert_ptr_nonnull(y);
        ck_assert_int_eq(x->rank, y->rank);
        ck_assert(x->scaling == y->scaling);
        ck_assert_int_eq(memcmp(x->A, y->A, sizeof(float) * (size_t)x->rank * W), 0);
        ck_assert_int_eq(memcmp(x->B, y->B, sizeof(float) * (size_t)x->rank * W), 0);
    }
}

static void write_text_file(const char *text, size_t len)
{
    tu_write_file(F.state, text, len);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static char *file_text(const char *path)
{
    size_t len;
    uint8_t *d = tu_read_file(path, &len);
    char *t = malloc(len + 1);
    memcpy(t, d, len);
    t[len] = '\0';
    free(d);
    return t;
}

/* Expects a failed restore that installed nothing but the floor. */
static void expect_failed_empty(uint64_t floor, uint64_t generation, const char *needle)
{
    struct serving *s2;
    struct lorad_error err;
    enum statefile_restored r = restore(&s2, NULL, &err);
    const struct serving_view *v = serving_current(s2);

    ck_assert_msg(r == STATEFILE_FAILED, "restore gave %d", (int)r);
    ck_assert_int_ne(err.code, 0);
    ck_assert_msg(err.msg[0] != '\0', "no message");
    if (needle)
        ck_assert_msg(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
    ck_assert_ptr_null(v->stable);
    ck_assert_ptr_null(v->canary);
    ck_assert_uint_eq(serving_history_len(s2), 0);
    ck_assert_uint_ge(serving_next_version(s2), floor);
    ck_assert_uint_eq(v->generation, generation);
    done(&s2);
}

/* ---- round trips ---- */

START_TEST(test_roundtrip_full)
{
    struct serving *s = serving_new(4), *s2 = NULL;
    struct profile *p2 = NULL;
    struct lorad_error err;
    const struct serving_view *v, *v2;
    cJSON *j, *pj1, *pj2;
    char *text;
    uint64_t v1, v2n, v3, floor, nv;

    v1 = swap(s, "a1", -1);
    v2n = swap(s, "a2", -1);
    v3 = swap(s, "a3", 2537); /* 25.37 % */
    ck_assert_uint_eq(v1, 1);
    ck_assert_uint_eq(v2n, 2);
    ck_assert_uint_eq(v3, 3);
    text = save(s);

    /* The recorded floor is one reservation ahead. */
    j = cJSON_Parse(text);
    ck_assert_ptr_nonnull(j);
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "next_version")));
    floor = (uint64_t)cJSON_GetObjectItemCaseSensitive(j, "next_version")->valuedouble;
    ck_assert_uint_eq(floor, serving_next_version(s) + 1);
    ck_assert_uint_eq(floor, 5);
    ck_assert_uint_eq((uint64_t)cJSON_GetObjectItemCaseSensitive(j, "generation")->valuedouble, 3);
    cJSON_Delete(j);

    ck_assert_int_eq(restore(&s2, &p2, &err), STATEFILE_RESTORED);
    ck_assert_int_eq(err.code, 0);
    v = serving_current(s);
    v2 = serving_current(s2);
    same_snapshot(v->stable, v2->stable);
    same_snapshot(v->canary, v2->canary);
    ck_assert_str_eq(v2->stable->name, "a2");
    ck_assert_uint_eq(v2->stable->version, 2);
    ck_assert_str_eq(v2->canary->name, "a3");
    ck_assert_uint_eq(v2->canary->version, 3);
    ck_assert_int_eq(v2->canary_bp, 2537);
    ck_assert_uint_eq(v2->generation, v->generation);
    ck_assert_uint_eq(serving_history_len(s2), 2);
    ck_assert_uint_eq(serving_history_len(s2), serving_history_len(s));
    for (size_t i = 0; i < serving_history_len(s); i++)
        same_snapshot(serving_history_at(s, i), serving_history_at(s2, i));
    ck_assert_str_eq(serving_history_at(s2, 0)->name, "a1");
    ck_assert_ptr_null(serving_history_at(s2, 1)); /* the base model */

    /* The profile round-trips. */
    pj1 = profile_to_json(F.profile, F.m);
    pj2 = profile_to_json(p2, F.m);
    ck_assert_ptr_nonnull(pj1);
    ck_assert_ptr_nonnull(pj2);
    ck_assert(cJSON_IsObject(pj1));
    ck_assert_msg(cJSON_Compare(pj1, pj2, true), "profile differs after restore");
    cJSON_Delete(pj1);
    cJSON_Delete(pj2);

    /* Versions are never reissued: the next one is above every version seen
     * and above the recorded floor's reservation. */
    ck_assert_uint_eq(serving_next_version(s2), floor); /* the recorded floor, exactly */
    {
        struct serving_commit c;
        struct lorad_error e = {0, ""};
        ck_assert_int_eq(serving_promote(s2, &c, &e), 0);
        nv = swap(s2, "a1", -1);
        ck_assert_uint_gt(nv, v3);
        ck_assert_uint_gt(nv, serving_next_version(s) - 1);
        ck_assert_uint_ge(nv, floor);
    }
    profile_free(&p2);
    free(text);
    done(&s2);
    done(&s);
}
END_TEST

/* Restoring then saving again gives the same entries (a second restart). */
START_TEST(test_roundtrip_twice)
{
    struct serving *s = serving_new(4), *s2 = NULL, *s3 = NULL;
    struct lorad_error err;
    char *t1, *t2;

    swap(s, "a1", -1);
    swap(s, "a2", -1);
    {
        struct serving_commit c;
        ck_assert_int_eq(serving_rollback(s, NULL, &c, &err), 0); /* back to a1, gen 3 */
    }
    swap(s, "a3", 10000);
    t1 = save(s);
    ck_assert_int_eq(restore(&s2, NULL, &err), STATEFILE_RESTORED);
    t2 = save(s2);
    ck_assert_int_eq(restore(&s3, NULL, &err), STATEFILE_RESTORED);
    ck_assert_str_eq(serving_current(s3)->stable->name, "a1");
    ck_assert_uint_eq(serving_current(s3)->stable->version, 1);
    ck_assert_str_eq(serving_current(s3)->canary->name, "a3");
    ck_assert_uint_eq(serving_current(s3)->canary->version, 3);
    ck_assert_int_eq(serving_current(s3)->canary_bp, 10000);
    ck_assert_uint_eq(serving_current(s3)->generation, 4);
    ck_assert_uint_eq(serving_history_len(s3), 1);
    ck_assert_ptr_null(serving_history_at(s3, 0));
    /* Each restart moves the floor up by at least the one reservation. */
    ck_assert_uint_ge(serving_next_version(s2), serving_next_version(s) + 1);
    ck_assert_uint_ge(serving_next_version(s3), serving_next_version(s2) + 1);
    free(t1);
    free(t2);
    done(&s3);
    done(&s2);
    done(&s);
}
END_TEST

static cJSON *entry_of(cJSON *j, const char *key)
{
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    ck_assert_ptr_nonnull(e);
    return e;
}

static void expect_base_entry(cJSON *e)
{
    ck_assert(cJSON_IsObject(e));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(e, "adapter")));
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "version")));
    ck_assert(cJSON_GetObjectItemCaseSensitive(e, "version")->valuedouble == 0.0);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(e, "sha256")));
}

START_TEST(test_base_model_entries)
{
    struct serving *s = serving_new(4), *s2 = NULL;
    struct serving_commit c;
    struct lorad_error err;
    cJSON *j;
    char *text;

    /* A fresh state: base stable, no history, no profile yet. */
    {
        struct profile *keep = F.profile;
        F.profile = NULL;
        text = save(s);
        F.profile = keep;
    }
    j = cJSON_Parse(text);
    ck_assert_ptr_nonnull(j);
    expect_base_entry(entry_of(j, "stable"));
    ck_assert(cJSON_IsNull(entry_of(j, "canary")));
    ck_assert(cJSON_IsNull(entry_of(j, "profile")));
    ck_assert_int_eq(cJSON_GetArraySize(entry_of(j, "history")), 0);
    ck_assert(entry_of(j, "next_version")->valuedouble == 2.0);
    cJSON_Delete(j);
    free(text);
    ck_assert_int_eq(restore(&s2, NULL, &err), STATEFILE_RESTORED);
    ck_assert_ptr_null(serving_current(s2)->stable);
    ck_assert_uint_eq(serving_history_len(s2), 0);
    ck_assert_uint_ge(serving_next_version(s2), 2);
    done(&s2);

    /* Base model as a history entry. */
    swap(s, "a1", -1);
    text = save(s);
    j = cJSON_Parse(text);
    ck_assert_int_eq(cJSON_GetArraySize(entry_of(j, "history")), 1);
    expect_base_entry(cJSON_GetArrayItem(entry_of(j, "history"), 0));
    cJSON_Delete(j);
    free(text);
    ck_assert_int_eq(restore(&s2, NULL, &err), STATEFILE_RESTORED);
    ck_assert_str_eq(serving_current(s2)->stable->name, "a1");
    ck_assert_uint_eq(serving_history_len(s2), 1);
    ck_assert_ptr_null(serving_history_at(s2, 0));
    ck_assert_uint_ge(serving_next_version(s2), 3);
    done(&s2);

    /* Base model as stable after a rollback, with a retained adapter. */
    swap(s, "a2", -1); /* v2; history a1, base */
    ck_assert_int_eq(serving_rollback(s, (const uint64_t[]){1}, &c, &err), 0); /* a1; [base] */
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &err), 0);                  /* base; [] */
    swap(s, "a3", 5000); /* canary over the base model */
    text = save(s);
    j = cJSON_Parse(text);
    expect_base_entry(entry_of(j, "stable"));
    cJSON_Delete(j);
    free(text);
    ck_assert_int_eq(restore(&s2, NULL, &err), STATEFILE_RESTORED);
    ck_assert_ptr_null(serving_current(s2)->stable);
    ck_assert_str_eq(serving_current(s2)->canary->name, "a3");
    ck_assert_uint_eq(serving_current(s2)->canary->version, 3);
    ck_assert_int_eq(serving_current(s2)->canary_bp, 5000);
    ck_assert_uint_eq(serving_current(s2)->generation, serving_current(s)->generation);
    ck_assert_uint_ge(serving_next_version(s2), 5);
    done(&s2);
    done(&s);
}
END_TEST

/* ---- failures install nothing but the floor ---- */

/* Stable a2, canary a3, history a1, base; gen 3, floor 5. */
static void standard_state(void)
{
    struct serving *s = serving_new(4);
    swap(s, "a1", -1);
    swap(s, "a2", -1);
    swap(s, "a3", 1000);
    free(save(s));
    done(&s);
}

START_TEST(test_tampered_adapter)
{
    char *p;
    uint8_t *d;
    size_t len;

    standard_state();
    /* Flip one byte of a1's tensor data (the last byte). */
    p = tu_path(F.adir, "a1/adapter_model.safetensors");
    d = tu_read_file(p, &len);
    d[len - 1] ^= 0x01;
    tu_write_file(p, d, len);
    free(d);
    free(p);
    expect_failed_empty(5, 3, "a1");
}
END_TEST

START_TEST(test_rewritten_adapter)
{
    standard_state();
    write_adapter("a3"); /* same shapes, other values: the canary */
    expect_failed_empty(5, 3, "a3");
}
END_TEST

START_TEST(test_missing_adapter)
{
    char *p;
    standard_state();
    p = tu_path(F.adir, "a2");
    tu_rmrf(p);
    free(p);
    expect_failed_empty(5, 3, "a2");
}
END_TEST

START_TEST(test_no_file)
{
    struct serving *s = serving_new(4);
    struct profile *p = F.profile;
    struct lorad_error err = {0, ""};
    const struct serving_view *v;
    uint64_t gen, nv;

    swap(s, "a1", -1);
    gen = serving_current(s)->generation;
    nv = serving_next_version(s);
    p = F.profile;
    ck_assert(!exists(F.state));
    ck_assert_int_eq(statefile_restore(F.state, F.adirfd, F.m, s, &F.profile, &err),
                     STATEFILE_NONE);
    ck_assert_ptr_eq(F.profile, p); /* profile untouched */
    v = serving_current(s);
    ck_assert_str_eq(v->stable->name, "a1");
    ck_assert_uint_eq(v->generation, gen);
    ck_assert_uint_eq(serving_next_version(s), nv);
    ck_assert_uint_eq(serving_history_len(s), 1);
    done(&s);
}
END_TEST

/* Every proper prefix of a valid file (without its trailing whitespace) is
 * a failed restore, never a crash, and installs nothing. */
START_TEST(test_truncated_prefixes)
{
    char *text;
    size_t n;

    standard_state();
    text = file_text(F.state);
    n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        n--;
    for (size_t k = 0; k < n; k++) {
        struct serving *s2;
        struct lorad_error err;
        enum statefile_restored r;

        write_text_file(text, k);
        r = restore(&s2, NULL, &err);
        ck_assert_msg(r == STATEFILE_FAILED, "prefix of %zu bytes gave %d", k, (int)r);
        ck_assert_ptr_null(serving_current(s2)->stable);
        ck_assert_ptr_null(serving_current(s2)->canary);
        ck_assert_uint_eq(serving_history_len(s2), 0);
        ck_assert_uint_ge(serving_next_version(s2), 1);
        done(&s2);
    }
    free(text);
}
END_TEST

START_TEST(test_corrupt_json)
{
    static const char *const bad[] = {
        "",
        "{",
        "}",
        "null",
        "[]",
        "42",
        "\"lorad-state\"",
        "{}",
        "{\"format\": \"lorad-state\"",
        "\xff\xfe{}",
        "{\"format\": \"lorad-state\",,}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct serving *s2;
        struct lorad_error err;
        write_text_file(bad[i], strlen(bad[i]));
        ck_assert_msg(restore(&s2, NULL, &err) == STATEFILE_FAILED, "case %zu", i);
        ck_assert_ptr_null(serving_current(s2)->stable);
        ck_assert_uint_eq(serving_current(s2)->generation, 0);
        ck_assert_uint_eq(serving_next_version(s2), 1);
        done(&s2);
    }
}
END_TEST

/* Mutations of a valid file: each must fail the restore, install no
 * snapshot, and never crash. */
typedef void (*mutator)(cJSON *root);

static cJSON *hist0(cJSON *r)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "history"), 0);
}
static cJSON *stab(cJSON *r)
{
    return cJSON_GetObjectItemCaseSensitive(r, "stable");
}
static cJSON *can(cJSON *r)
{
    return cJSON_GetObjectItemCaseSensitive(r, "canary");
}
static void rep(cJSON *obj, const char *key, cJSON *v)
{
    ck_assert_ptr_nonnull(obj);
    ck_assert(cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v));
}

static void m_gen_string(cJSON *r)
{
    rep(r, "generation", cJSON_CreateString("3"));
}
static void m_gen_negative(cJSON *r)
{
    rep(r, "generation", cJSON_CreateNumber(-1));
}
static void m_gen_fraction(cJSON *r)
{
    rep(r, "generation", cJSON_CreateNumber(2.5));
}
static void m_nv_string(cJSON *r)
{
    rep(r, "next_version", cJSON_CreateString("5"));
}
static void m_nv_zero(cJSON *r)
{
    rep(r, "next_version", cJSON_CreateNumber(0));
}
static void m_nv_low(cJSON *r)
{
    rep(r, "next_version", cJSON_CreateNumber(3));
}
static void m_nv_huge(cJSON *r)
{
    rep(r, "next_version", cJSON_CreateNumber(1e300));
}
static void m_format(cJSON *r)
{
    rep(r, "format", cJSON_CreateString("other"));
}
static void m_format_version(cJSON *r)
{
    rep(r, "format_version", cJSON_CreateNumber(99));
}
static void m_no_stable(cJSON *r)
{
    cJSON_DeleteItemFromObjectCaseSensitive(r, "stable");
}
static void m_stable_array(cJSON *r)
{
    rep(r, "stable", cJSON_CreateArray());
}
static void m_stable_null(cJSON *r)
{
    rep(r, "stable", cJSON_CreateNull());
}
static void m_stable_name_num(cJSON *r)
{
    rep(stab(r), "adapter", cJSON_CreateNumber(1));
}
static void m_stable_bad_name(cJSON *r)
{
    rep(stab(r), "adapter", cJSON_CreateString("../a2"));
}
static void m_stable_ver_str(cJSON *r)
{
    rep(stab(r), "version", cJSON_CreateString("2"));
}
static void m_stable_ver_zero(cJSON *r)
{
    rep(stab(r), "version", cJSON_CreateNumber(0));
}
static void m_stable_sha_short(cJSON *r)
{
    rep(stab(r), "sha256", cJSON_CreateString("abcd"));
}
static void m_stable_sha_null(cJSON *r)
{
    rep(stab(r), "sha256", cJSON_CreateNull());
}
static void m_stable_sha_other(cJSON *r)
{
    char h[65];
    memset(h, '0', 64);
    h[64] = '\0';
    rep(stab(r), "sha256", cJSON_CreateString(h));
}
static void m_stable_sha_nonhex(cJSON *r)
{
    char h[65];
    memset(h, 'g', 64);
    h[64] = '\0';
    rep(stab(r), "sha256", cJSON_CreateString(h));
}
static void m_dup_version(cJSON *r)
{
    rep(hist0(r), "version", cJSON_CreateNumber(2));
}
static void m_history_object(cJSON *r)
{
    rep(r, "history", cJSON_CreateObject());
}
static void m_history_missing(cJSON *r)
{
    cJSON_DeleteItemFromObjectCaseSensitive(r, "history");
}
static void m_history_item_num(cJSON *r)
{
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(r, "history"), cJSON_CreateNumber(7));
}
static void m_base_with_version(cJSON *r)
{
    cJSON *h = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "history"), 1);
    rep(h, "version", cJSON_CreateNumber(4));
}
static void m_canary_string(cJSON *r)
{
    rep(r, "canary", cJSON_CreateString("a3"));
}
static void m_canary_pct_big(cJSON *r)
{
    rep(can(r), "percent", cJSON_CreateNumber(100.5));
}
static void m_canary_pct_neg(cJSON *r)
{
    rep(can(r), "percent", cJSON_CreateNumber(-1));
}
static void m_canary_pct_str(cJSON *r)
{
    rep(can(r), "percent", cJSON_CreateString("10"));
}
static void m_canary_no_pct(cJSON *r)
{
    cJSON_DeleteItemFromObjectCaseSensitive(can(r), "percent");
}
static void m_canary_base(cJSON *r)
{
    rep(can(r), "adapter", cJSON_CreateNull());
    rep(can(r), "sha256", cJSON_CreateNull());
    rep(can(r), "version", cJSON_CreateNumber(0));
}
static void m_profile_array(cJSON *r)
{
    rep(r, "profile", cJSON_CreateArray());
}
static void m_profile_bad_rank(cJSON *r)
{
    cJSON *p = cJSON_GetObjectItemCaseSensitive(r, "profile");
    ck_assert(cJSON_IsObject(p));
    rep(p, "max_rank", cJSON_CreateString("x"));
}

START_TEST(test_wrong_types)
{
    static const struct {
        const char *what;
        mutator fn;
    } cases[] = {
        {"generation string", m_gen_string},
        {"generation negative", m_gen_negative},
        {"generation fraction", m_gen_fraction},
        {"next_version string", m_nv_string},
        {"next_version zero", m_nv_zero},
        {"next_version below versions", m_nv_low},
        {"next_version huge", m_nv_huge},
        {"format", m_format},
        {"format_version", m_format_version},
        {"no stable", m_no_stable},
        {"stable array", m_stable_array},
        {"stable null", m_stable_null},
        {"stable adapter number", m_stable_name_num},
        {"stable adapter name outside", m_stable_bad_name},
        {"stable version string", m_stable_ver_str},
        {"stable version zero", m_stable_ver_zero},
        {"stable sha short", m_stable_sha_short},
        {"stable sha null", m_stable_sha_null},
        {"stable sha other", m_stable_sha_other},
        {"stable sha non-hex", m_stable_sha_nonhex},
        {"duplicate version", m_dup_version},
        {"history object", m_history_object},
        {"history missing", m_history_missing},
        {"history item number", m_history_item_num},
        {"base with version", m_base_with_version},
        {"canary string", m_canary_string},
        {"canary percent > 100", m_canary_pct_big},
        {"canary percent < 0", m_canary_pct_neg},
        {"canary percent string", m_canary_pct_str},
        {"canary without percent", m_canary_no_pct},
        {"canary base", m_canary_base},
        {"profile array", m_profile_array},
        {"profile bad max_rank", m_profile_bad_rank},
    };
    char *good;

    standard_state();
    good = file_text(F.state);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *root = cJSON_Parse(good);
        struct serving *s2;
        struct lorad_error err;
        enum statefile_restored r;
        char *t;

        ck_assert_ptr_nonnull(root);
        cases[i].fn(root);
        t = cJSON_Print(root);
        write_text_file(t, strlen(t));
        cJSON_free(t);
        cJSON_Delete(root);
        r = restore(&s2, NULL, &err);
        ck_assert_msg(r == STATEFILE_FAILED, "%s: restore gave %d", cases[i].what, (int)r);
        ck_assert_msg(err.msg[0] != '\0', "%s: no message", cases[i].what);
        ck_assert_msg(serving_current(s2)->stable == NULL && serving_current(s2)->canary == NULL &&
                          serving_history_len(s2) == 0,
                      "%s: something was installed", cases[i].what);
        done(&s2);
    }
    /* Unmodified, the same file restores (the cases above failed for their
     * mutation, not for something else). */
    {
        struct serving *s2;
        struct lorad_error err;
        write_text_file(good, strlen(good));
        ck_assert_int_eq(restore(&s2, NULL, &err), STATEFILE_RESTORED);
        done(&s2);
    }
    free(good);
}
END_TEST

/* Unparseable after the floor: the floor and generation still apply. */
START_TEST(test_floor_applied_on_bad_entry)
{
    char *good;
    cJSON *root;
    char *t;

    standard_state();
    good = file_text(F.state);
    root = cJSON_Parse(good);
    rep(root, "next_version", cJSON_CreateNumber(40));
    rep(root, "generation", cJSON_CreateNumber(17));
    rep(stab(root), "version", cJSON_CreateString("2"));
    t = cJSON_Print(root);
    write_text_file(t, strlen(t));
    cJSON_free(t);
    cJSON_Delete(root);
    expect_failed_empty(40, 17, NULL);
    free(good);
}
END_TEST

/* A key given twice in any object of the file fails the restore, names
 * the key, and (read before the rest) the floor and generation still
 * apply. lorad never writes a key twice; cJSON_Add* does not check. */
START_TEST(test_duplicate_keys)
{
    static const struct {
        const char *where, *needle;
    } cases[] = {
        {"root", "key \"extra\" appears twice"},
        {"root history", "key \"history\" appears twice"},
        {"stable", "stable: key \"version\" appears twice"},
        {"canary", "canary: key \"percent\" appears twice"},
        {"history", "history[0]: key \"sha256\" appears twice"},
    };
    char *good;

    standard_state();
    good = file_text(F.state);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *root = cJSON_Parse(good);
        char *t;

        ck_assert_ptr_nonnull(root);
        rep(root, "next_version", cJSON_CreateNumber(40));
        rep(root, "generation", cJSON_CreateNumber(17));
        if (i == 0) {
            cJSON_AddNumberToObject(root, "extra", 1);
            cJSON_AddNumberToObject(root, "extra", 2);
        } else if (i == 1) {
            cJSON_AddItemToObject(root, "history", cJSON_CreateArray());
        } else if (i == 2) {
            cJSON_AddNumberToObject(stab(root), "version", 2);
        } else if (i == 3) {
            cJSON_AddNumberToObject(can(root), "percent", 5);
        } else {
            cJSON_AddStringToObject(hist0(root), "sha256", "00");
        }
        t = cJSON_Print(root);
        write_text_file(t, strlen(t));
        cJSON_free(t);
        cJSON_Delete(root);
        expect_failed_empty(40, 17, cases[i].needle);
    }
    free(good);
}
END_TEST

/* ---- the atomic write ---- */

START_TEST(test_write_replaces_atomically)
{
    struct lorad_error err = {0, ""};
    char *tmp = malloc(strlen(F.state) + 5), *t;

    sprintf(tmp, "%s.tmp", F.state);
    ck_assert_int_eq(statefile_write(F.state, "first version\n", 14, &err), 0);
    t = file_text(F.state);
    ck_assert_str_eq(t, "first version\n");
    free(t);
    ck_assert(!exists(tmp));

    ck_assert_int_eq(statefile_write(F.state, "2nd", 3, &err), 0); /* shorter */
    t = file_text(F.state);
    ck_assert_str_eq(t, "2nd");
    free(t);
    ck_assert(!exists(tmp));

    /* A stale temp file left by a crash is overwritten, not appended to,
     * and gone afterwards. */
    tu_write_text(tmp, "stale garbage from a crash, much longer than the new text");
    ck_assert_int_eq(statefile_write(F.state, "third", 5, &err), 0);
    t = file_text(F.state);
    ck_assert_str_eq(t, "third");
    free(t);
    ck_assert(!exists(tmp));

    /* The temp name blocked by a directory: an error, old file intact. */
    tu_mkdir(tmp);
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(statefile_write(F.state, "fourth", 6, &err), LORAD_E_INTERNAL);
    ck_assert_int_eq(err.code, LORAD_E_INTERNAL);
    t = file_text(F.state);
    ck_assert_str_eq(t, "third");
    free(t);
    rmdir(tmp);
    free(tmp);
}
END_TEST

START_TEST(test_write_missing_dir)
{
    struct lorad_error err = {0, ""};
    char *dir = tu_path(F.root, "nope"), *path = tu_path(dir, "state.json");

    ck_assert_int_eq(statefile_write(path, "x", 1, &err), LORAD_E_INTERNAL);
    ck_assert_int_eq(err.code, LORAD_E_INTERNAL);
    ck_assert_msg(strstr(err.msg, path), "message \"%s\" lacks the path %s", err.msg, path);
    ck_assert(!exists(dir));
    free(path);
    free(dir);
}
END_TEST

/* ---- profile ---- */

/* The caller may pass no profile slot at all (profile == NULL). */
START_TEST(test_restore_without_profile_slot)
{
    struct serving *s = serving_new(4), *s2 = serving_new(4);
    struct lorad_error err = {0, ""};

    swap(s, "a1", -1);
    swap(s, "a2", 0);
    free(save(s));
    ck_assert_int_eq(statefile_restore(F.state, F.adirfd, F.m, s2, NULL, &err), STATEFILE_RESTORED);
    ck_assert_str_eq(serving_current(s2)->stable->name, "a1");
    ck_assert_str_eq(serving_current(s2)->canary->name, "a2");
    ck_assert_int_eq(serving_current(s2)->canary_bp, 0);
    ck_assert_uint_eq(serving_next_version(s2), 4);
    done(&s2);
    done(&s);
}
END_TEST

/* A profile recorded in the file is restored even when the caller passes
 * no profile yet, and the restored adapters were staged against it. */
START_TEST(test_profile_restored)
{
    struct serving *s = serving_new(4), *s2;
    struct profile *p2 = NULL;
    struct lorad_error err = {0, ""};
    cJSON *a, *b;

    swap(s, "a1", -1);
    free(save(s));
    s2 = serving_new(4);
    ck_assert_int_eq(statefile_restore(F.state, F.adirfd, F.m, s2, &p2, &err), STATEFILE_RESTORED);
    ck_assert_ptr_nonnull(p2);
    a = profile_to_json(F.profile, F.m);
    b = profile_to_json(p2, F.m);
    ck_assert(cJSON_IsObject(a));
    ck_assert_msg(cJSON_Compare(a, b, true), "profile differs");
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(b, "lora_dropout")));
    ck_assert(cJSON_GetObjectItemCaseSensitive(b, "lora_dropout")->valuedouble == 0.05);
    cJSON_Delete(a);
    cJSON_Delete(b);
    profile_free(&p2);
    done(&s2);
    done(&s);
}
END_TEST

/* ---- slots ---- */

static uint64_t swap_in(struct serving *s, const char *slot, const char *name, int bp)
{
    struct serving_commit c;
    struct lorad_error err = {0, ""};
    int rc = serving_slot_swap(s, slot, stage(name), bp, &c, &err);
    ck_assert_msg(rc == 0, "swap %s into %s: %s", name, slot, err.msg);
    return c.now->version;
}

static char failed_slots[256];
static void note_failed(void *arg, const char *slot, const struct lorad_error *why)
{
    (void)arg;
    ck_assert(why->msg[0]);
    strcat(failed_slots, slot);
    strcat(failed_slots, " ");
}

/* Runs the tasks in reverse order: restoring must not depend on order. */
static void run_reversed(void *arg, size_t n, void (*task)(void *, size_t), void *targ)
{
    (void)arg;
    for (size_t i = n; i-- > 0;)
        task(targ, i);
}

/* Two slots besides default: x (stable a2, history a1 + base) and y
 * (canary a3 over the base model). */
static void slots_state(struct serving *s)
{
    swap(s, "a1", -1);           /* v1 default */
    swap_in(s, "x", "a1", -1);   /* v2 */
    swap_in(s, "x", "a2", -1);   /* v3 */
    swap_in(s, "y", "a3", 2500); /* v4 */
}

START_TEST(test_slots_roundtrip)
{
    struct serving *s = serving_new(4), *s2 = serving_new(4);
    struct lorad_error err = {0, ""};
    struct statefile_restore_opts o = {run_reversed, note_failed, NULL, false};
    cJSON *j;
    char *text;

    slots_state(s);
    text = save(s);
    j = cJSON_Parse(text);
    ck_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "slots")));
    ck_assert_ptr_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "slots"), "default"));
    ck_assert_str_eq(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "slots"), "x"), "stable")
            ->child->valuestring,
        "a2");
    cJSON_Delete(j);
    free(text);
    failed_slots[0] = '\0';
    ck_assert_int_eq(statefile_restore_slots(F.state, F.adirfd, F.m, s2, NULL, &o, &err),
                     STATEFILE_RESTORED);
    ck_assert(o.default_restored);
    ck_assert_str_eq(failed_slots, "");
    ck_assert_uint_eq(serving_slot_count(s2), 3);
    for (size_t i = 0; i < 3; i++) {
        const struct serving_slot *a = serving_slot_at(s, i), *b = serving_slot_at(s2, i);
        int bpa, bpb;
        ck_assert_str_eq(serving_slot_name(a), serving_slot_name(b));
        same_snapshot(serving_slot_stable(a), serving_slot_stable(b));
        same_snapshot(serving_slot_canary(a, &bpa), serving_slot_canary(b, &bpb));
        ck_assert_int_eq(bpa, bpb);
        ck_assert_uint_eq(serving_slot_history_len(a), serving_slot_history_len(b));
        for (size_t k = 0; k < serving_slot_history_len(a); k++)
            same_snapshot(serving_slot_history_at(a, k), serving_slot_history_at(b, k));
        if (i > 0) /* each slot its own profile (default's goes to the caller) */
            ck_assert_ptr_nonnull(serving_slot_profile(b));
    }
    ck_assert_uint_eq(serving_current(s2)->generation, serving_current(s)->generation);
    ck_assert_uint_ge(serving_next_version(s2), 5);
    ck_assert_uint_eq(serving_current(s2)->nslots, 3); /* published */
    done(&s2);
    done(&s);
}
END_TEST

/* A file written before slots (no "slots" member) restores as default. */
START_TEST(test_slots_old_format)
{
    struct serving *s = serving_new(4), *s2;
    struct lorad_error err = {0, ""};
    char *text, *out;
    cJSON *j;

    swap(s, "a1", -1);
    swap(s, "a2", -1);
    text = save(s);
    j = cJSON_Parse(text);
    cJSON_DeleteItemFromObject(j, "slots");
    out = cJSON_Print(j);
    write_text_file(out, strlen(out));
    ck_assert_int_eq(restore(&s2, NULL, &err), STATEFILE_RESTORED);
    ck_assert_str_eq(serving_current(s2)->stable->name, "a2");
    ck_assert_uint_eq(serving_history_len(s2), 2);
    ck_assert_uint_eq(serving_slot_count(s2), 1);
    cJSON_free(out);
    cJSON_Delete(j);
    free(text);
    done(&s2);
    done(&s);
}
END_TEST

/* A slot whose files changed comes back on the base model with the
 * history entries that still match; default and the others restore; the
 * result is "failed" and the slot is reported. */
START_TEST(test_slots_one_changed)
{
    struct serving *s = serving_new(4), *s2 = serving_new(4);
    struct lorad_error err = {0, ""};
    struct statefile_restore_opts o = {NULL, note_failed, NULL, false};
    const struct serving_slot *x, *y;

    slots_state(s);
    free(save(s));
    write_adapter("a2"); /* x's stable changed on disk */
    failed_slots[0] = '\0';
    ck_assert_int_eq(statefile_restore_slots(F.state, F.adirfd, F.m, s2, NULL, &o, &err),
                     STATEFILE_FAILED);
    ck_assert(o.default_restored);
    ck_assert_str_eq(failed_slots, "x ");
    ck_assert_msg(strstr(err.msg, "a2") && strstr(err.msg, "sha256"), "%s", err.msg);
    ck_assert_str_eq(serving_current(s2)->stable->name, "a1"); /* default as recorded */
    x = serving_slot_get(s2, "x");
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_null(serving_slot_stable(x));        /* base model only */
    ck_assert_uint_eq(serving_slot_history_len(x), 1); /* a1 kept; the base model not twice */
    ck_assert_str_eq(serving_slot_history_at(x, 0)->name, "a1");
    ck_assert_uint_eq(serving_slot_history_at(x, 0)->version, 2);
    y = serving_slot_get(s2, "y");
    ck_assert_str_eq(serving_slot_canary(y, NULL)->name, "a3");
    ck_assert_uint_ge(serving_next_version(s2), 5);
    done(&s2);

    /* default's own files changed: default falls back (nothing of it), the
     * other slots restore */
    write_adapter("a1");
    s2 = serving_new(4);
    failed_slots[0] = '\0';
    ck_assert_int_eq(statefile_restore_slots(F.state, F.adirfd, F.m, s2, NULL, &o, &err),
                     STATEFILE_FAILED);
    ck_assert(!o.default_restored);
    ck_assert_ptr_null(serving_current(s2)->stable);
    ck_assert_uint_eq(serving_history_len(s2), 0);
    ck_assert_str_eq(serving_slot_canary(serving_slot_get(s2, "y"), NULL)->name, "a3");
    ck_assert_uint_ge(serving_next_version(s2), 5);
    ck_assert_uint_eq(serving_current(s2)->generation, serving_current(s)->generation);
    done(&s2);
    done(&s);
}
END_TEST

/* "slots" that break the format fail the whole restore (floor kept). */
START_TEST(test_slots_bad)
{
    static const char *const bad[] = {
        "\"slots\": []",
        "\"slots\": {\"default\": {\"stable\": {\"adapter\": null, \"version\": 0, \"sha256\": "
        "null}, \"canary\": null, \"history\": []}}",
        "\"slots\": {\"bad name\": {\"stable\": {\"adapter\": null, \"version\": 0, \"sha256\": "
        "null}, \"canary\": null, \"history\": []}}",
        "\"slots\": {\"x\": 1}",
        "\"slots\": {\"x\": {\"canary\": null, \"history\": []}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[1024];
        struct serving *s2;
        struct lorad_error err;
        snprintf(text, sizeof(text),
                 "{\"format\": \"lorad-state\", \"format_version\": 1, \"generation\": 2, "
                 "\"next_version\": 7, \"stable\": {\"adapter\": null, \"version\": 0, "
                 "\"sha256\": null}, \"canary\": null, \"history\": [], \"profile\": null, %s}",
                 bad[i]);
        write_text_file(text, strlen(text));
        ck_assert_msg(restore(&s2, NULL, &err) == STATEFILE_FAILED, "accepted: %s", bad[i]);
        ck_assert_uint_ge(serving_next_version(s2), 7);
        ck_assert_uint_eq(serving_slot_count(s2), 1);
        done(&s2);
    }
}
END_TEST

static Suite *statefile_suite(void)
{
    Suite *su = suite_create("statefile");
    TCase *tc = tcase_create("statefile");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_roundtrip_full);
    tcase_add_test(tc, test_roundtrip_twice);
    tcase_add_test(tc, test_base_model_entries);
    tcase_add_test(tc, test_tampered_adapter);
    tcase_add_test(tc, test_rewritten_adapter);
    tcase_add_test(tc, test_missing_adapter);
    tcase_add_test(tc, test_no_file);
    tcase_add_test(tc, test_truncated_prefixes);
    tcase_add_test(tc, test_corrupt_json);
    tcase_add_test(tc, test_wrong_types);
    tcase_add_test(tc, test_floor_applied_on_bad_entry);
    tcase_add_test(tc, test_duplicate_keys);
    tcase_add_test(tc, test_write_replaces_atomically);
    tcase_add_test(tc, test_write_missing_dir);
    tcase_add_test(tc, test_restore_without_profile_slot);
    tcase_add_test(tc, test_profile_restored);
    tcase_add_test(tc, test_slots_roundtrip);
    tcase_add_test(tc, test_slots_old_format);
    tcase_add_test(tc, test_slots_one_changed);
    tcase_add_test(tc, test_slots_bad);
    suite_add_tcase(su, tc);
    return su;
}

int main(void)
{
    Suite *su = statefile_suite();
    SRunner *sr = srunner_create(su);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
