/* lorad — tests/test_batch.c: unit tests of lib/batch.c (SPEC.md 6 data
 * plane, 7 concurrency). A real model and two real PEFT adapters are
 * written with testutil's safetensors writer, loaded and staged by lib/,
 * and published as stable and canary; batches of jobs then run through
 * batch_run. Every output is checked against testutil's naive double
 * reference (tu_ref_forward) for the snapshot the answer names. Covered:
 * a batch mixing stable, canary, binary, multi-row and bad jobs (every job
 * answered, bad ones with their precise 400, good ones correct, all rows
 * in one forward), jobs of several slots in one forward, the
 * routing rules (a pin wins over a route key; the body's over the
 * headers'), a canary pin without a canary, chunking at the scratch's row
 * limit with the rows of each forward reported, a rank larger than the
 * scratch's, and a missing scratch. The mixed batch and the chunks run on
 * this thread alone and shared by teams of 2 and 3 threads; stable and
 * canary rows of one batch go through one forward.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/adapter.h"
#include "../lib/batch.h"
#include "../lib/model.h"
#include "../lib/serving.h"
#include "../lib/team.h"
#include "testutil.h"

#define NL 2
#define IN0 6
static const int IN[NL] = {IN0, 5};
static const int OUT[NL] = {5, 3};
static const char *const NAMES[NL] = {"layers.0.proj", "layers.1.proj"};
static const char *const ACTS[NL] = {"relu", "none"};
#define OUTW 3
#define ATOL 1e-5
#define RTOL 1e-4

struct adapter_ref {
    const char *name;
    int r;
    double alpha;
    double *A[NL], *B[NL];
    struct tu_lora lora[NL];
};

struct fixture {
    char *root;
    struct model *m;
    struct serving *s;
    double *W[NL], *b[NL];
    struct adapter_ref ad[2]; /* [0] stable "a-stable" r 2, [1] canary "a-canary" r 4 */
    uint64_t rng;
    int forwards, forward_rows, max_forward;
};
static struct fixture F;

/* ---- files ---- */

static void write_model(const char *dir)
{
    struct tu_tensor t[2 * NL];
    char names[2 * NL][64];
    char *p = tu_path(dir, "config.json");
    tu_write_text(p,
                  "{\"layers\": [{\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d,"
                  " \"bias\": true, \"activation\": \"%s\"},"
                  " {\"name\": \"%s\", \"in_features\": %d, \"out_features\": %d,"
                  " \"bias\": true, \"activation\": \"%s\"}]}",
                  NAMES[0], IN[0], OUT[0], ACTS[0], NAMES[1], IN[1], OUT[1], ACTS[1]);
    free(p);
    for (int l = 0; l < NL; l++) {
        F.W[l] = tu_rand_array(&F.rng, (size_t)IN[l] * OUT[l], -0.6, 0.6);
        F.b[l] = tu_rand_array(&F.rng, (size_t)OUT[l], -0.3, 0.3);
        snprintf(names[2 * l], 64, "%s.weight", NAMES[l]);
        snprintf(names[2 * l + 1], 64, "%s.bias", NAMES[l]);
        t[2 * l] =
            (struct tu_tensor){names[2 * l], "F32", 2, {(uint64_t)OUT[l], (uint64_t)IN[l]}, F.W[l]};
        t[2 * l + 1] = (struct tu_tensor){names[2 * l + 1], "F32", 1, {(uint64_t)OUT[l]}, F.b[l]};
    }
    p = tu_path(dir, "model.safetensors");
    tu_write_safetensors(p, t, 2 * NL);
    free(p);
}

static void write_adapter(const char *adir, struct adapter_ref *a)
{
    struct tu_tensor t[2 * NL];
    char names[2 * NL][96];
    char *dir = tu_path(adir, a->name), *p;
    tu_mkdir(dir);
    p = tu_path(dir, "adapter_config.json");
    tu_write_text(p, "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": %g}", a->r, a->alpha);
    free(p);
    for (int l = 0; l < NL; l++) {
        a->A[l] = tu_rand_array(&F.rng, (size_t)a->r * IN[l], -0.5, 0.5);
        a->B[l] = tu_rand_array(&F.rng, (size_t)OUT[l] * a->r, -0.5, 0.5);
        a->lora[l] = (struct tu_lora){a->r, a->alpha / a->r, a->A[l], a->B[l], NULL, NULL};
        snprintf(names[2 * l], 96, "base_model.model.%s.lora_A.weight", NAMES[l]);
        snprintf(names[2 * l + 1], 96, "base_model.model.%s.lora_B.weight", NAMES[l]);
        t[2 * l] =
            (struct tu_tensor){names[2 * l], "F32", 2, {(uint64_t)a->r, (uint64_t)IN[l]}, a->A[l]};
        t[2 * l + 1] = (struct tu_tensor){
            names[2 * l + 1], "F32", 2, {(uint64_t)OUT[l], (uint64_t)a->r}, a->B[l]};
    }
    p = tu_path(dir, "adapter_model.safetensors");
    tu_write_safetensors(p, t, 2 * NL);
    free(p);
    free(dir);
}

static struct snapshot *stage(int adirfd, const struct adapter_ref *a, struct profile *prof)
{
    struct adapter_stage_args args = {adirfd, a->name, NULL, F.m, prof};
    struct snapshot *snap = NULL;
    struct profile *done = NULL;
    struct lorad_error err = {0};
    ck_assert_msg(adapter_stage(&args, &snap, &done, &err) == 0, "stage %s: %s", a->name, err.msg);
    profile_free(&done);
    return snap;
}

/* Model, adapters, serving: stable a-stable, canary a-canary at 50 %
 * (or no canary). */
static int team_n = 1; /* the team run() hands batch_run */

static void fixture_up(bool with_canary)
{
    struct lorad_error err = {0};
    team_n = 1;
    struct profile *prof = NULL;
    struct serving_commit c;
    char *mdir, *adir;
    int fd;

    memset(&F, 0, sizeof(F));
    F.rng = 2024;
    F.root = tu_mkdtemp();
    mdir = tu_path(F.root, "model");
    adir = tu_path(F.root, "adapters");
    tu_mkdir(mdir);
    tu_mkdir(adir);
    write_model(mdir);
    ck_assert_msg(model_load(mdir, &F.m, NULL, &err) == 0, "model_load: %s", err.msg);
    F.ad[0] = (struct adapter_ref){.name = "a-stable", .r = 2, .alpha = 4};
    F.ad[1] = (struct adapter_ref){.name = "a-canary", .r = 4, .alpha = 2};
    write_adapter(adir, &F.ad[0]);
    write_adapter(adir, &F.ad[1]);
    fd = open(adir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(profile_from_config(F.m, 8, NULL, 0, &prof, &err), 0);
    F.s = serving_new(4);
    ck_assert_ptr_nonnull(F.s);
    ck_assert_int_eq(serving_swap(F.s, stage(fd, &F.ad[0], prof), -1, &c, &err), 0);
    if (with_canary)
        ck_assert_int_eq(serving_swap(F.s, stage(fd, &F.ad[1], prof), 5000, &c, &err), 0);
    profile_free(&prof);
    close(fd);
    free(mdir);
    free(adir);
    serving_reader_register();
}

static void fixture_down(void)
{
    serving_reader_unregister();
    serving_free(&F.s);
    model_free(&F.m);
    for (int l = 0; l < NL; l++) {
        free(F.W[l]);
        free(F.b[l]);
        for (int k = 0; k < 2; k++) {
            free(F.ad[k].A[l]);
            free(F.ad[k].B[l]);
        }
    }
    tu_rmrf(F.root);
    free(F.root);
}

/* ---- jobs ---- */

static void on_forward(void *arg, int rows)
{
    (void)arg;
    F.forwards++;
    F.forward_rows += rows;
    if (rows > F.max_forward)
        F.max_forward = rows;
}

static const struct batch_params params = {.max_rows = 4, .on_forward = on_forward};

/* A JSON body of `rows` rows of x (inputs when multi), with `extra`
 * members after them. */
static char *json_body(const double *x, int rows, bool multi, const char *extra)
{
    size_t cap = (size_t)rows * IN0 * 20 + 256;
    char *b = malloc(cap);
    size_t o = (size_t)snprintf(b, cap, "{\"%s\":%s", multi ? "inputs" : "input", multi ? "[" : "");
    for (int r = 0; r < rows; r++) {
        o += (size_t)snprintf(b + o, cap - o, "%s[", r ? "," : "");
        for (int i = 0; i < IN0; i++)
            o += (size_t)snprintf(b + o, cap - o, "%s%.9g", i ? "," : "",
                                  x[(size_t)r * IN0 + (size_t)i]);
        o += (size_t)snprintf(b + o, cap - o, "]");
    }
    snprintf(b + o, cap - o, "%s%s%s}", multi ? "]" : "", extra ? "," : "", extra ? extra : "");
    return b;
}

static float *f32_rows(const double *x, int rows)
{
    float *f = malloc(sizeof(float) * (size_t)rows * IN0);
    for (size_t i = 0; i < (size_t)rows * IN0; i++)
        f[i] = (float)x[i]; /* exact: tu_rand_array values are f32 */
    return f;
}

static struct batch_job job_json(const char *body, const char *hdr_key, int hdr_pin)
{
    return (struct batch_job){.body = body,
                              .body_len = strlen(body),
                              .route_key = hdr_key,
                              .route_key_len = hdr_key ? strlen(hdr_key) : 0,
                              .pin = hdr_pin};
}

/* The reference outputs of x under adapter k (-1: base model). */
static double *reference(const double *x, int rows, int k)
{
    struct tu_layer L[NL];
    double *y = malloc(sizeof(double) * (size_t)rows * OUTW);
    for (int l = 0; l < NL; l++)
        L[l] = (struct tu_layer){IN[l],  OUT[l], ACTS[l],
                                 F.W[l], F.b[l], k < 0 ? NULL : &F.ad[k].lora[l]};
    tu_ref_forward(L, NL, x, rows, y);
    return y;
}

/* Checks an answered job: adapter, version and variant as `k`'s, and its
 * outputs (JSON or binary) against the reference of x. */
static void expect_answer(const struct batch_job *j, const double *x, int rows, int k,
                          enum serving_variant var, const char *what)
{
    const struct serving_view *v = serving_current(F.s);
    const struct snapshot *snap = var == SERVING_CANARY ? v->canary : v->stable;
    double *want = reference(x, rows, k);
    float got[64 * OUTW];

    ck_assert_msg(j->code == 0, "%s: failed: %s", what, j->err.msg);
    ck_assert_int_eq(j->variant, var);
    ck_assert_str_eq(j->adapter, F.ad[k].name);
    ck_assert_str_eq(snap->name, F.ad[k].name);
    ck_assert_uint_eq(j->version, snap->version);
    ck_assert_int_eq(j->rows, rows);
    ck_assert_int_eq(j->nonfinite_rows, 0);
    if (j->binary) {
        ck_assert_str_eq(j->resp_type, "application/octet-stream");
        ck_assert_uint_eq(j->resp_len, (size_t)rows * OUTW * 4);
        memcpy(got, j->resp, j->resp_len);
    } else {
        cJSON *o = cJSON_ParseWithLength(j->resp, j->resp_len);
        ck_assert_str_eq(j->resp_type, "application/json");
        ck_assert_msg(o, "%s: answer is not JSON: %.*s", what, (int)j->resp_len, j->resp);
        const cJSON *out =
            cJSON_GetObjectItem(o, rows > 1 || strstr(j->body, "inputs") ? "outputs" : "output");
        ck_assert_ptr_nonnull(out);
        ck_assert_str_eq(cJSON_GetObjectItem(o, "adapter")->valuestring, F.ad[k].name);
        ck_assert(cJSON_GetObjectItem(o, "version")->valuedouble == (double)snap->version);
        ck_assert_str_eq(cJSON_GetObjectItem(o, "variant")->valuestring, serving_variant_name(var));
        size_t n = 0;
        const cJSON *row, *val;
        if (cJSON_IsNumber(cJSON_GetArrayItem(out, 0))) {
            cJSON_ArrayForEach(val, out) got[n++] = (float)val->valuedouble;
        } else {
            cJSON_ArrayForEach(row, out) cJSON_ArrayForEach(val, row) got[n++] =
                (float)val->valuedouble;
        }
        ck_assert_uint_eq(n, (size_t)rows * OUTW);
        cJSON_Delete(o);
    }
    double worst = tu_worst_ratio(got, want, (size_t)rows * OUTW, ATOL, RTOL);
    ck_assert_msg(worst <= 1.0, "%s: outputs off the reference (worst ratio %g)", what, worst);
    free(want);
}

static void expect_refused(const struct batch_job *j, int code, const char *msg)
{
    ck_assert_msg(j->code == code, "job %.40s: code %d (%s), want %d", j->body, j->code, j->err.msg,
                  code);
    ck_assert_str_eq(j->err.msg, msg);
    ck_assert_ptr_null(j->resp);
}

/* ---- a team of threads started per team run ---- */

static struct team_barrier team_bar;

struct member {
    void (*fn)(void *, int);
    void *arg;
    int me;
};

static void *member_main(void *arg)
{
    struct member *mb = arg;
    mb->fn(mb->arg, mb->me);
    return NULL;
}

static void team_run(void *team, void (*fn)(void *, int), void *arg)
{
    pthread_t tid[4];
    struct member mb[4];
    (void)team;
    for (int k = 1; k < team_n; k++) {
        mb[k] = (struct member){fn, arg, k};
        ck_assert_int_eq(pthread_create(&tid[k], NULL, member_main, &mb[k]), 0);
    }
    fn(arg, 0);
    for (int k = 1; k < team_n; k++)
        pthread_join(tid[k], NULL);
}

static void run(struct batch_job *jobs, size_t n, struct batch_scratch *sc)
{
    struct batch_job *p[16];
    struct batch_team team = {team_n, team_run, team_barrier_cb, &team_bar};
    struct batch_params bp = params;
    for (size_t i = 0; i < n; i++)
        p[i] = &jobs[i];
    team_barrier_init(&team_bar, team_n);
    if (team_n > 1)
        bp.team = &team;
    serving_reader_online();
    batch_run(F.m, F.s, &bp, p, n, sc);
    serving_reader_quiescent();
    serving_reader_offline();
}

static void free_jobs(struct batch_job *jobs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(jobs[i].resp);
}

/* ---- tests ---- */

START_TEST(test_mixed_batch)
{
    fixture_up(true);
    team_n = 1 + _i;
    double *x = tu_rand_array(&F.rng, 16 * IN0, -1, 1);
    char *b0 = json_body(x, 1, false, NULL);                          /* header pin stable */
    char *b1 = json_body(x + IN0, 3, true, "\"variant\":\"canary\""); /* body pin */
    char *b2 = json_body(x + 4 * IN0, 2, true, NULL);                 /* header pin canary */
    float *f3 = f32_rows(x + 6 * IN0, 2);                             /* binary, stable */
    char *bad_len = strdup("{\"input\":[1,2,3]}");
    char *bad_json = strdup("{\"input\":[1,2");
    char *b6 = json_body(x + 8 * IN0, 1, false, "\"variant\":\"stable\""); /* body over header */
    char *b7 = json_body(x + 9 * IN0, 5, true, NULL);                      /* over max_rows 4 */
    struct batch_job jobs[9] = {
        job_json(b0, NULL, SERVING_STABLE),
        job_json(b1, "any-key", BATCH_PIN_NONE),
        job_json(b2, NULL, SERVING_CANARY),
        {.body = (const char *)f3, .body_len = 2 * IN0 * 4, .binary = true, .pin = SERVING_STABLE},
        job_json(bad_len, NULL, SERVING_STABLE),
        job_json(bad_json, NULL, BATCH_PIN_NONE),
        job_json(b6, NULL, SERVING_CANARY),
        job_json(b7, NULL, BATCH_PIN_NONE),
        {.body = (const char *)f3, .body_len = 7, .binary = true, .pin = BATCH_PIN_NONE},
    };
    struct batch_scratch *sc = batch_scratch_new_lanes(F.m, 64, 1, 3);

    run(jobs, 9, sc);
    expect_answer(&jobs[0], x, 1, 0, SERVING_STABLE, "JSON, header pin stable");
    expect_answer(&jobs[1], x + IN0, 3, 1, SERVING_CANARY, "JSON inputs, body pin canary");
    expect_answer(&jobs[2], x + 4 * IN0, 2, 1, SERVING_CANARY, "JSON, header pin canary");
    expect_answer(&jobs[3], x + 6 * IN0, 2, 0, SERVING_STABLE, "binary, pin stable");
    expect_refused(&jobs[4], LORAD_E_INVALID_REQUEST,
                   "input: row 0 has 3 values, expected 6 (the model's in_features)");
    expect_refused(&jobs[5], LORAD_E_INVALID_REQUEST,
                   "malformed JSON at byte 13: expected ',' or ']' in array");
    expect_answer(&jobs[6], x + 8 * IN0, 1, 0, SERVING_STABLE, "body pin over header pin");
    expect_refused(&jobs[7], LORAD_E_INVALID_REQUEST,
                   "inputs: more than max_rows_per_request (4) rows");
    expect_refused(&jobs[8], LORAD_E_INVALID_REQUEST,
                   "binary body of 7 bytes is not a positive multiple of one row "
                   "(6 f32 = 24 bytes)");
    /* one forward for both snapshots: stable 1+2+1 rows, canary 3+2 */
    ck_assert_int_eq(F.forwards, 1);
    ck_assert_int_eq(F.forward_rows, 9);
    free_jobs(jobs, 9);
    batch_scratch_free(&sc);
    ck_assert_ptr_null(sc);
    free(b0), free(b1), free(b2), free(f3), free(bad_len), free(bad_json), free(b6), free(b7);
    free(x);
    fixture_down();
}
END_TEST

/* Routing by key: the same key always lands on the same variant, and the
 * answer's snapshot is the one that computed it; a pin wins over a key. */
START_TEST(test_route_keys)
{
    fixture_up(true);
    double *x = tu_rand_array(&F.rng, IN0, -1, 1);
    char keys[12][64], *bodies[12];
    struct batch_job jobs[12];
    struct batch_scratch *sc = batch_scratch_new(F.m, 64, 8);

    for (int i = 0; i < 12; i++) {
        snprintf(keys[i], sizeof(keys[i]), "\"route_key\":\"user-%d\"", i % 6);
        /* 0..5: key in the body; 6..11: the same keys in the header */
        bodies[i] = json_body(x, 1, false, i < 6 ? keys[i] : NULL);
        jobs[i] = job_json(bodies[i], i < 6 ? NULL : keys[i] + 13, BATCH_PIN_NONE);
        if (i >= 6)
            jobs[i].route_key_len = strlen(keys[i] + 13) - 1; /* without the closing quote */
    }
    run(jobs, 12, sc);
    for (int i = 0; i < 12; i++) {
        int k = jobs[i].variant == SERVING_CANARY;
        expect_answer(&jobs[i], x, 1, k, jobs[i].variant, "keyed");
        if (i >= 6)
            ck_assert_int_eq(jobs[i].variant, jobs[i - 6].variant); /* same key, same variant */
    }
    free_jobs(jobs, 12);
    for (int i = 0; i < 12; i++)
        free(bodies[i]);
    /* a pin beats a route key, in the body and in the headers */
    char *b = json_body(x, 1, false, "\"route_key\":\"user-1\",\"variant\":\"canary\"");
    char *c = json_body(x, 1, false, "\"route_key\":\"user-1\"");
    jobs[0] = job_json(b, NULL, BATCH_PIN_NONE);
    jobs[1] = job_json(c, NULL, SERVING_STABLE);
    jobs[2] = job_json(c, NULL, SERVING_CANARY);
    run(jobs, 3, sc);
    expect_answer(&jobs[0], x, 1, 1, SERVING_CANARY, "body pin over body key");
    expect_answer(&jobs[1], x, 1, 0, SERVING_STABLE, "header pin over body key");
    expect_answer(&jobs[2], x, 1, 1, SERVING_CANARY, "header pin over body key");
    free_jobs(jobs, 3);
    free(b), free(c), free(x);
    batch_scratch_free(&sc);
    fixture_down();
}
END_TEST

START_TEST(test_no_canary)
{
    fixture_up(false);
    double *x = tu_rand_array(&F.rng, IN0, -1, 1);
    char *b = json_body(x, 1, false, "\"variant\":\"canary\"");
    char *c = json_body(x, 1, false, "\"route_key\":\"k\"");
    struct batch_job jobs[3] = {job_json(b, NULL, BATCH_PIN_NONE),
                                job_json(c, NULL, SERVING_CANARY),
                                job_json(c, NULL, BATCH_PIN_NONE)};
    struct batch_scratch *sc = batch_scratch_new(F.m, 64, 8);
    run(jobs, 3, sc);
    expect_refused(&jobs[0], LORAD_E_NO_CANARY,
                   "variant \"canary\" requested but no canary is live");
    expect_refused(&jobs[1], LORAD_E_NO_CANARY,
                   "variant \"canary\" requested but no canary is live");
    expect_answer(&jobs[2], x, 1, 0, SERVING_STABLE, "keyed without a canary");
    free_jobs(jobs, 3);
    free(b), free(c), free(x);
    batch_scratch_free(&sc);
    fixture_down();
}
END_TEST

/* A scratch of 3 rows: 4 + 4 + 2 rows of one snapshot run as 3, 3, 3, 1,
 * each reported; the outputs are the same as unchunked. */
START_TEST(test_chunks)
{
    fixture_up(true);
    double *x = tu_rand_array(&F.rng, 10 * IN0, -1, 1);
    float *f = f32_rows(x, 4);
    char *b1 = json_body(x + 4 * IN0, 4, true, NULL);
    char *b2 = json_body(x + 8 * IN0, 2, true, NULL);
    struct batch_job jobs[3] = {
        {.body = (const char *)f, .body_len = 4 * IN0 * 4, .binary = true, .pin = SERVING_CANARY},
        job_json(b1, NULL, SERVING_CANARY),
        job_json(b2, NULL, SERVING_CANARY),
    };
    struct batch_scratch *sc = /* rank 1 < 4: grown */
        _i == 0 ? batch_scratch_new(F.m, 3, 1) : batch_scratch_new_lanes(F.m, 3, 1, 3);
    team_n = 1 + _i;
    run(jobs, 3, sc);
    expect_answer(&jobs[0], x, 4, 1, SERVING_CANARY, "binary, chunked");
    expect_answer(&jobs[1], x + 4 * IN0, 4, 1, SERVING_CANARY, "JSON, chunked");
    expect_answer(&jobs[2], x + 8 * IN0, 2, 1, SERVING_CANARY, "JSON, last chunk");
    ck_assert_int_eq(F.forwards, 4);
    ck_assert_int_eq(F.forward_rows, 10);
    ck_assert_int_eq(F.max_forward, 3);
    free_jobs(jobs, 3);
    free(f), free(b1), free(b2), free(x);
    batch_scratch_free(&sc);
    fixture_down();
}
END_TEST

/* Without a scratch (out of memory in the worker) the good jobs fail with
 * 500 internal, the bad ones still with their own error. */
START_TEST(test_no_scratch)
{
    fixture_up(true);
    double *x = tu_rand_array(&F.rng, IN0, -1, 1);
    char *b = json_body(x, 1, false, NULL);
    struct batch_job jobs[2] = {job_json(b, NULL, SERVING_STABLE),
                                job_json("{\"input\":[]}", NULL, SERVING_STABLE)};
    run(jobs, 2, NULL);
    expect_refused(&jobs[0], LORAD_E_INTERNAL, "out of memory in the worker");
    expect_refused(&jobs[1], LORAD_E_INVALID_REQUEST,
                   "input: row 0 has 0 values, expected 6 (the model's in_features)");
    ck_assert_int_eq(F.forwards, 0);
    free(b), free(x);
    fixture_down();
}
END_TEST

/* A slot's job answered by adapter k (-1: the base model): the slot, the
 * snapshot and the outputs against the reference. */
static void expect_slot_answer(const struct batch_job *j, const double *x, int k, const char *slot,
                               const char *what)
{
    double *want = reference(x, 1, k);
    float got[OUTW];
    ck_assert_msg(j->code == 0, "%s: failed: %s", what, j->err.msg);
    ck_assert_str_eq(j->slot_name, slot);
    ck_assert_str_eq(j->adapter, k < 0 ? "" : F.ad[k].name);
    if (j->binary) {
        memcpy(got, j->resp, sizeof(got));
    } else {
        cJSON *o = cJSON_ParseWithLength(j->resp, j->resp_len), *val;
        size_t n = 0;
        ck_assert_ptr_nonnull(o);
        ck_assert_str_eq(cJSON_GetObjectItem(o, "slot")->valuestring, slot);
        cJSON_ArrayForEach(val, cJSON_GetObjectItem(o, "output")) got[n++] =
            (float)val->valuedouble;
        ck_assert_uint_eq(n, OUTW);
        cJSON_Delete(o);
    }
    double worst = tu_worst_ratio(got, want, OUTW, ATOL, RTOL);
    ck_assert_msg(worst <= 1.0, "%s: outputs off the reference (worst ratio %g)", what, worst);
    free(want);
}

static int snapshots_seen;
static void on_snapshots(void *arg, int n)
{
    (void)arg;
    snapshots_seen = n;
}

/* Slots: "slot" in the body wins over X-Lorad-Slot; each slot serves its
 * own snapshot; jobs of several slots share the batch, one forward per
 * distinct snapshot (the base model's rows of every slot together); an
 * unknown slot is slot_not_found, a bad name 400, a canary pin in a slot
 * without one no_canary. */
START_TEST(test_slots)
{
    fixture_up(true);
    struct lorad_error err = {0};
    struct serving_commit c;
    struct profile *prof = NULL;
    char *adir = tu_path(F.root, "adapters");
    int fd = open(adir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(profile_from_config(F.m, 8, NULL, 0, &prof, &err), 0);
    ck_assert_int_eq(serving_slot_swap(F.s, "team", stage(fd, &F.ad[1], prof), -1, &c, &err), 0);
    ck_assert_int_eq(serving_slot_swap(F.s, "base", stage(fd, &F.ad[0], prof), -1, &c, &err), 0);
    ck_assert_int_eq(serving_slot_rollback(F.s, "base", NULL, &c, &err), 0); /* base model */
    ck_assert_int_eq(serving_slot_swap(F.s, "base2", stage(fd, &F.ad[0], prof), -1, &c, &err), 0);
    ck_assert_int_eq(serving_slot_rollback(F.s, "base2", NULL, &c, &err), 0);
    profile_free(&prof);
    close(fd);
    free(adir);

    double *x = tu_rand_array(&F.rng, 10 * IN0, -1, 1);
    char *b0 = json_body(x, 1, false, "\"slot\":\"team\"");
    float *f1 = f32_rows(x + IN0, 1);
    char *b2 = json_body(x + 2 * IN0, 1, false, "\"slot\":\"team\"");
    char *b3 = json_body(x + 3 * IN0, 1, false, "\"slot\":\"nope\"");
    char *b4 = json_body(x + 4 * IN0, 1, false, "\"slot\":\"bad name\"");
    char *b5 = json_body(x + 5 * IN0, 1, false, "\"slot\":\"team\",\"variant\":\"canary\"");
    char *b6 = json_body(x + 6 * IN0, 1, false, NULL);
    char *b7 = json_body(x + 7 * IN0, 1, false, "\"slot\":\"base\"");
    char *b8 = json_body(x + 8 * IN0, 1, false, "\"slot\":\"base2\"");
    struct batch_job jobs[9] = {
        job_json(b0, NULL, BATCH_PIN_NONE),
        {.body = (const char *)f1,
         .body_len = IN0 * 4,
         .binary = true,
         .pin = BATCH_PIN_NONE,
         .slot = "team",
         .slot_len = 4},
        job_json(b2, NULL, BATCH_PIN_NONE),
        job_json(b3, NULL, BATCH_PIN_NONE),
        job_json(b4, NULL, BATCH_PIN_NONE),
        job_json(b5, NULL, BATCH_PIN_NONE),
        job_json(b6, NULL, SERVING_STABLE),
        job_json(b7, NULL, BATCH_PIN_NONE),
        job_json(b8, NULL, BATCH_PIN_NONE),
    };
    jobs[2].slot = "default"; /* the body's "team" wins */
    jobs[2].slot_len = 7;
    jobs[6].slot = "default-and-more"; /* only its first 7 bytes name the slot */
    jobs[6].slot_len = 7;
    struct batch_params bp = params;
    bp.on_snapshots = on_snapshots;
    struct batch_job *pj[9];
    for (int i = 0; i < 9; i++)
        pj[i] = &jobs[i];
    struct batch_scratch *sc = batch_scratch_new(F.m, 64, 1);
    serving_reader_online();
    batch_run(F.m, F.s, &bp, pj, 9, sc);
    serving_reader_quiescent();
    serving_reader_offline();
    expect_slot_answer(&jobs[0], x, 1, "team", "body slot");
    expect_slot_answer(&jobs[1], x + IN0, 1, "team", "binary, X-Lorad-Slot");
    expect_slot_answer(&jobs[2], x + 2 * IN0, 1, "team", "body over header");
    expect_refused(&jobs[3], LORAD_E_SLOT_NOT_FOUND, "no slot \"nope\"");
    expect_refused(&jobs[4], LORAD_E_INVALID_REQUEST,
                   "slot name \"bad name\" does not match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
    expect_refused(&jobs[5], LORAD_E_NO_CANARY,
                   "variant \"canary\" requested but no canary is live");
    expect_slot_answer(&jobs[6], x + 6 * IN0, 0, "default", "default, pinned stable");
    expect_slot_answer(&jobs[7], x + 7 * IN0, -1, "base", "base model slot");
    expect_slot_answer(&jobs[8], x + 8 * IN0, -1, "base2", "another base model slot");
    /* team's snapshot, default's stable, the base model (two slots): three
     * snapshots in one forward */
    ck_assert_int_eq(snapshots_seen, 3);
    ck_assert_int_eq(F.forwards, 1);
    ck_assert_int_eq(F.forward_rows, 6);
    free_jobs(jobs, 9);
    batch_scratch_free(&sc);
    free(b0), free(f1), free(b2), free(b3), free(b4), free(b5), free(b6), free(b7), free(b8);
    free(x);
    fixture_down();
}
END_TEST

static Suite *batch_suite(void)
{
    Suite *s = suite_create("batch");
    TCase *tc = tcase_create("batch");
    tcase_add_loop_test(tc, test_mixed_batch, 0, 3);
    tcase_add_test(tc, test_route_keys);
    tcase_add_test(tc, test_no_canary);
    tcase_add_loop_test(tc, test_chunks, 0, 3);
    tcase_add_test(tc, test_no_scratch);
    tcase_add_test(tc, test_slots);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(batch_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
