/* lorad — tests/test_model.c: unit tests of lib/model.c (SPEC.md 2.1):
 * loading models written by testutil's independent safetensors writer in
 * every dtype and layout, defaults, activations, and every load error. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/model.h"
#include "testutil.h"

static char *tmpdir;

static void setup(void)
{
    tmpdir = tu_mkdtemp();
}

static void teardown(void)
{
    tu_rmrf(tmpdir);
    free(tmpdir);
    tmpdir = NULL;
}

static void write_config(const char *json)
{
    char *p = tu_path(tmpdir, "config.json");
    tu_write_text(p, "%s", json);
    free(p);
}

static void write_tensors(const struct tu_tensor *t, size_t n)
{
    char *p = tu_path(tmpdir, "model.safetensors");
    tu_write_safetensors(p, t, n);
    free(p);
}

static int nwarn;
static char last_warn[2048];
static void on_warn(const char *line)
{
    nwarn++;
    snprintf(last_warn, sizeof(last_warn), "%s", line);
}

/* Loads tmpdir expecting failure with `code`; returns the message in a
 * static buffer. */
static const char *load_fails(int code)
{
    static struct lorad_error err;
    struct model *m = NULL;
    memset(&err, 0, sizeof(err));
    int rc = model_load(tmpdir, &m, on_warn, &err);
    ck_assert_int_eq(rc, code);
    ck_assert_int_eq(err.code, code);
    ck_assert_ptr_null(m);
    ck_assert_msg(err.msg[0] != '\0', "empty error message");
    return err.msg;
}

static struct model *load_ok(void)
{
    struct lorad_error err = {0};
    struct model *m = NULL;
    int rc = model_load(tmpdir, &m, on_warn, &err);
    ck_assert_msg(rc == 0, "model_load failed: %s", err.msg);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* A two-layer model: l0 5->3 (bias, relu), l1 3->4 (no bias). Tensors in
 * `dtype`; values returned through w0/b0/w1 (file layout). */
static const char *const two_layer_cfg =
    "{\"layers\": ["
    "{\"name\": \"l0\", \"in_features\": 5, \"out_features\": 3, \"bias\": true, "
    "\"activation\": \"relu\"},"
    "{\"name\": \"l1\", \"in_features\": 3, \"out_features\": 4}]}";

struct two_layer {
    double *w0, *b0, *w1;
};

static void write_two_layer(const char *dtype, struct two_layer *v)
{
    uint64_t seed = 42;
    v->w0 = tu_rand_array(&seed, 15, -1, 1);
    v->b0 = tu_rand_array(&seed, 3, -1, 1);
    v->w1 = tu_rand_array(&seed, 12, -1, 1);
    struct tu_tensor t[] = {
        {"l0.weight", dtype, 2, {3, 5}, v->w0},
        {"l0.bias", dtype, 1, {3}, v->b0},
        {"l1.weight", dtype, 2, {4, 3}, v->w1},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 3);
}

static void free_two_layer(struct two_layer *v)
{
    free(v->w0);
    free(v->b0);
    free(v->w1);
}

static void assert_values(const float *got, const double *want, size_t n, const char *dtype)
{
    for (size_t i = 0; i < n; i++) {
        float w = (float)tu_round_to(dtype, want[i]);
        ck_assert_msg(got[i] == w, "%s element %zu: got %.9g want %.9g", dtype, i, got[i], w);
    }
}

/* got holds W^T ([in][out], model.h) of want's file layout [out][in]. */
static void assert_weight(const float *got, const double *want, int out, int in, const char *dtype)
{
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            float w = (float)tu_round_to(dtype, want[o * in + i]);
            ck_assert_msg(got[i * out + o] == w, "%s W[%d][%d]: got %.9g want %.9g", dtype, o, i,
                          got[i * out + o], w);
        }
}

static const char *const dtypes[] = {"F32", "F16", "BF16"};

START_TEST(test_load_dtypes)
{
    const char *dtype = dtypes[_i];
    struct two_layer v;
    write_two_layer(dtype, &v);
    nwarn = 0;
    struct model *m = load_ok();
    ck_assert_int_eq(nwarn, 0);
    ck_assert_uint_eq(m->nlayers, 2);
    ck_assert_str_eq(m->layers[0].name, "l0");
    ck_assert_str_eq(m->layers[1].name, "l1");
    ck_assert_int_eq(m->layers[0].in_features, 5);
    ck_assert_int_eq(m->layers[0].out_features, 3);
    ck_assert(m->layers[0].has_bias);
    ck_assert(!m->layers[1].has_bias);
    ck_assert_ptr_null(m->layers[1].bias);
    ck_assert_int_eq(m->layers[0].act, MODEL_ACT_RELU);
    ck_assert_int_eq(m->layers[1].act, MODEL_ACT_NONE);
    ck_assert(!m->layers[0].fan_in_fan_out);
    ck_assert_int_eq(m->in_features, 5);
    ck_assert_int_eq(m->out_features, 4);
    ck_assert_int_eq(m->max_width, 5);
    ck_assert_uint_eq(m->parameters, 15 + 3 + 12);
    ck_assert_uint_eq(m->bytes, (15 + 3 + 12) * sizeof(float));
    assert_weight(m->layers[0].weight, v.w0, 3, 5, dtype);
    assert_values(m->layers[0].bias, v.b0, 3, dtype);
    assert_weight(m->layers[1].weight, v.w1, 4, 3, dtype);
    ck_assert_int_eq(model_find_layer(m, "l1"), 1);
    ck_assert_int_eq(model_find_layer(m, "l0"), 0);
    ck_assert_int_eq(model_find_layer(m, "l2"), -1);
    model_free(&m);
    ck_assert_ptr_null(m);
    free_two_layer(&v);
}
END_TEST

START_TEST(test_fan_in_fan_out)
{
    const char *dtype = dtypes[_i];
    uint64_t seed = 7;
    /* GPT-2 Conv1D layout: file [in=4][out=6]. */
    double *w = tu_rand_array(&seed, 24, -2, 2);
    double *b = tu_rand_array(&seed, 6, -2, 2);
    struct tu_tensor t[] = {
        {"h.0.attn.c_attn.weight", dtype, 2, {4, 6}, w},
        {"h.0.attn.c_attn.bias", dtype, 1, {6}, b},
    };
    write_config("{\"layers\": [{\"name\": \"h.0.attn.c_attn\", \"in_features\": 4, "
                 "\"out_features\": 6, \"bias\": true, \"fan_in_fan_out\": true}]}");
    write_tensors(t, 2);
    struct model *m = load_ok();
    ck_assert(m->layers[0].fan_in_fan_out);
    for (int o = 0; o < 6; o++)
        for (int i = 0; i < 4; i++)
            ck_assert_msg(m->layers[0].weight[i * 6 + o] == (float)tu_round_to(dtype, w[i * 6 + o]),
                          "W[%d][%d]", o, i);
    assert_values(m->layers[0].bias, b, 6, dtype);
    model_free(&m);
    free(w);
    free(b);
}
END_TEST

START_TEST(test_defaults_and_unknown_keys)
{
    uint64_t seed = 3;
    double *w = tu_rand_array(&seed, 6, -1, 1);
    struct tu_tensor t[] = {{"x.weight", "F32", 2, {2, 3}, w}};
    write_config("{\"layers\": [{\"name\": \"x\", \"in_features\": 3, \"out_features\": 2, "
                 "\"comment\": [1, 2], \"dropout\": 0.1}], \"model_type\": \"toy\"}");
    write_tensors(t, 1);
    struct model *m = load_ok();
    ck_assert(!m->layers[0].has_bias);
    ck_assert(!m->layers[0].fan_in_fan_out);
    ck_assert_int_eq(m->layers[0].act, MODEL_ACT_NONE);
    ck_assert_ptr_null(m->layers[0].bias);
    model_free(&m);
    free(w);
}
END_TEST

static const char *const act_names[] = {"none", "relu", "gelu",   "gelu_tanh",
                                        "silu", "tanh", "sigmoid"};

START_TEST(test_each_activation)
{
    const char *act = act_names[_i];
    char cfg[512];
    uint64_t seed = 11;
    double *w = tu_rand_array(&seed, 4, -1, 1);
    struct tu_tensor t[] = {{"a.weight", "F32", 2, {2, 2}, w}};
    snprintf(cfg, sizeof(cfg),
             "{\"layers\": [{\"name\": \"a\", \"in_features\": 2, \"out_features\": 2, "
             "\"activation\": \"%s\"}]}",
             act);
    write_config(cfg);
    write_tensors(t, 1);
    struct model *m = load_ok();
    ck_assert_str_eq(model_act_name(m->layers[0].act), act);
    ck_assert_int_eq(model_act_parse(act), (int)m->layers[0].act);
    model_free(&m);
    free(w);

    /* The float formulas against testutil's double ones. */
    float v[41];
    for (int i = 0; i < 41; i++)
        v[i] = (float)(-10.0 + 0.5 * i);
    model_act_apply((enum model_act)model_act_parse(act), v, 41);
    for (int i = 0; i < 41; i++) {
        double want = tu_act(act, (float)(-10.0 + 0.5 * i));
        ck_assert_msg(fabs(v[i] - want) <= 1e-6 + 1e-5 * fabs(want), "%s(%g): got %.9g want %.9g",
                      act, -10.0 + 0.5 * i, v[i], want);
    }
}
END_TEST

START_TEST(test_act_parse_unknown)
{
    ck_assert_int_eq(model_act_parse("swish"), -1);
    ck_assert_int_eq(model_act_parse(NULL), -1);
    ck_assert_int_eq(model_act_parse("RELU"), -1);
}
END_TEST

START_TEST(test_relu_propagates_nan)
{
    float v[3] = {NAN, -INFINITY, INFINITY};
    model_act_apply(MODEL_ACT_RELU, v, 3);
    ck_assert(isnan(v[0]));
    ck_assert(v[1] == 0.0f);
    ck_assert(isinf(v[2]) && v[2] > 0);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_missing_config)
{
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_ptr_nonnull(strstr(msg, "config.json"));
}
END_TEST

START_TEST(test_malformed_json)
{
    write_config("{\"layers\": [{\"name\": \"a\",");
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_ptr_nonnull(strstr(msg, "config.json"));
    ck_assert_ptr_nonnull(strstr(msg, "malformed"));
}
END_TEST

START_TEST(test_layers_not_array)
{
    write_config("{\"layers\": {}}");
    ck_assert_ptr_nonnull(strstr(load_fails(LORAD_E_INVALID_MODEL), "layers"));
    write_config("{\"layers\": []}");
    ck_assert_ptr_nonnull(strstr(load_fails(LORAD_E_INVALID_MODEL), "layers"));
    write_config("[1, 2]");
    ck_assert_ptr_nonnull(strstr(load_fails(LORAD_E_INVALID_MODEL), "layers"));
}
END_TEST

static const struct {
    const char *layer1; /* the second layer's JSON */
    const char *key;    /* what the message must name */
} wrong_types[] = {
    {"{\"name\": \"b\", \"in_features\": \"3\", \"out_features\": 2}", "layers[1].in_features"},
    {"{\"name\": \"b\", \"in_features\": 3, \"out_features\": 2.5}", "layers[1].out_features"},
    {"{\"name\": \"b\", \"in_features\": 3, \"out_features\": 0}", "layers[1].out_features"},
    {"{\"name\": \"b\", \"in_features\": 3, \"out_features\": -2}", "layers[1].out_features"},
    {"{\"name\": \"b\", \"in_features\": 3}", "layers[1].out_features"},
    {"{\"name\": \"b\", \"in_features\": 3, \"out_features\": 2, \"bias\": 1}", "layers[1].bias"},
    {"{\"name\": \"b\", \"in_features\": 3, \"out_features\": 2, \"fan_in_fan_out\": \"no\"}",
     "layers[1].fan_in_fan_out"},
    {"{\"name\": \"b\", \"in_features\": 3, \"out_features\": 2, \"activation\": null}",
     "layers[1].activation"},
    {"{\"name\": 7, \"in_features\": 3, \"out_features\": 2}", "layers[1].name"},
    {"{\"in_features\": 3, \"out_features\": 2}", "layers[1].name"},
    {"{\"name\": \"\", \"in_features\": 3, \"out_features\": 2}", "layers[1].name"},
    {"\"b\"", "layers[1]"},
};

START_TEST(test_wrong_type)
{
    char cfg[1024];
    snprintf(cfg, sizeof(cfg),
             "{\"layers\": [{\"name\": \"a\", \"in_features\": 2, \"out_features\": 3}, %s]}",
             wrong_types[_i].layer1);
    write_config(cfg);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, wrong_types[_i].key), "message \"%s\" does not name %s", msg,
                  wrong_types[_i].key);
}
END_TEST

START_TEST(test_unknown_activation)
{
    write_config("{\"layers\": [{\"name\": \"a\", \"in_features\": 2, \"out_features\": 3, "
                 "\"activation\": \"swish\"}]}");
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_ptr_nonnull(strstr(msg, "layers[0].activation"));
    ck_assert_ptr_nonnull(strstr(msg, "swish"));
}
END_TEST

START_TEST(test_not_chaining)
{
    write_config("{\"layers\": [{\"name\": \"first\", \"in_features\": 2, \"out_features\": 3},"
                 "{\"name\": \"second\", \"in_features\": 4, \"out_features\": 3}]}");
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_ptr_nonnull(strstr(msg, "first"));
    ck_assert_ptr_nonnull(strstr(msg, "second"));
}
END_TEST

START_TEST(test_duplicate_names)
{
    write_config("{\"layers\": [{\"name\": \"a\", \"in_features\": 2, \"out_features\": 2},"
                 "{\"name\": \"a\", \"in_features\": 2, \"out_features\": 2}]}");
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_ptr_nonnull(strstr(msg, "\"a\""));
}
END_TEST

START_TEST(test_missing_model_file)
{
    write_config(two_layer_cfg);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_ptr_nonnull(strstr(msg, "model.safetensors"));
}
END_TEST

START_TEST(test_missing_weight)
{
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    struct tu_tensor t[] = {
        {"l0.weight", "F32", 2, {3, 5}, v},
        {"l0.bias", "F32", 1, {3}, v},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 2);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "l1.weight") && strstr(msg, "missing"), "%s", msg);
    free(v);
}
END_TEST

START_TEST(test_misshaped_weight)
{
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    struct tu_tensor t[] = {
        {"l0.weight", "F32", 2, {5, 3}, v}, /* transposed: wrong without fan_in_fan_out */
        {"l0.bias", "F32", 1, {3}, v},
        {"l1.weight", "F32", 2, {4, 3}, v},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 3);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "l0.weight") && strstr(msg, "[5, 3]") && strstr(msg, "[3, 5]"), "%s",
                  msg);
    free(v);
}
END_TEST

START_TEST(test_misshaped_bias_and_rank)
{
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    struct tu_tensor t[] = {
        {"l0.weight", "F32", 2, {3, 5}, v},
        {"l0.bias", "F32", 2, {1, 3}, v},
        {"l1.weight", "F32", 2, {4, 3}, v},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 3);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "l0.bias") && strstr(msg, "[1, 3]") && strstr(msg, "[3]"), "%s", msg);
    free(v);
}
END_TEST

START_TEST(test_missing_bias)
{
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    struct tu_tensor t[] = {
        {"l0.weight", "F32", 2, {3, 5}, v},
        {"l1.weight", "F32", 2, {4, 3}, v},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 2);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "l0.bias"), "%s", msg);
    free(v);
}
END_TEST

START_TEST(test_extra_tensors_warn_once)
{
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    struct tu_tensor t[] = {
        {"l0.weight", "F32", 2, {3, 5}, v},
        {"l0.bias", "F32", 1, {3}, v},
        {"l1.weight", "F32", 2, {4, 3}, v},
        {"l1.bias", "F32", 1, {4}, v}, /* l1 declared without bias: extra */
        {"lm_head.weight", "F32", 2, {2, 2}, v},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 5);
    nwarn = 0;
    last_warn[0] = '\0';
    struct model *m = load_ok();
    ck_assert_int_eq(nwarn, 1);
    ck_assert_msg(strstr(last_warn, "2 extra") && strstr(last_warn, "l1.bias") &&
                      strstr(last_warn, "lm_head.weight"),
                  "%s", last_warn);
    ck_assert_ptr_null(m->layers[1].bias);
    model_free(&m);

    /* A NULL callback is allowed. */
    struct lorad_error err = {0};
    ck_assert_int_eq(model_load(tmpdir, &m, NULL, &err), 0);
    model_free(&m);
    free(v);
}
END_TEST

START_TEST(test_non_finite_weight)
{
    static const double bad[] = {NAN, INFINITY, -INFINITY};
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    double *w = tu_rand_array(&seed, 12, -1, 1);
    w[7] = bad[_i];
    struct tu_tensor t[] = {
        {"l0.weight", "F32", 2, {3, 5}, v},
        {"l0.bias", "F32", 1, {3}, v},
        {"l1.weight", "F32", 2, {4, 3}, w},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 3);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "l1.weight") && strstr(msg, "non-finite"), "%s", msg);
    free(v);
    free(w);
}
END_TEST

START_TEST(test_non_finite_bias_f16)
{
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    double *b = tu_rand_array(&seed, 3, -1, 1);
    b[1] = 1e6; /* beyond F16's range: encodes as Inf */
    struct tu_tensor t[] = {
        {"l0.weight", "F16", 2, {3, 5}, v},
        {"l0.bias", "F16", 1, {3}, b},
        {"l1.weight", "F16", 2, {4, 3}, v},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 3);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "l0.bias"), "%s", msg);
    free(v);
    free(b);
}
END_TEST

START_TEST(test_unsupported_dtype)
{
    uint64_t seed = 1;
    double *v = tu_rand_array(&seed, 15, -1, 1);
    struct tu_tensor t[] = {
        {"l0.weight", "F32", 2, {3, 5}, v},
        {"l0.bias", "F32", 1, {3}, v},
        {"l1.weight", "I32", 2, {4, 3}, v},
    };
    write_config(two_layer_cfg);
    write_tensors(t, 3);
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "l1.weight"), "%s", msg);
    free(v);
}
END_TEST

START_TEST(test_corrupt_safetensors)
{
    static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{'};
    char *p = tu_path(tmpdir, "model.safetensors");
    write_config(two_layer_cfg);
    tu_write_file(p, junk, sizeof(junk));
    const char *msg = load_fails(LORAD_E_INVALID_MODEL);
    ck_assert_msg(strstr(msg, "model.safetensors"), "%s", msg);
    free(p);
}
END_TEST

START_TEST(test_free_null)
{
    struct model *m = NULL;
    model_free(&m);
    model_free(NULL);
    ck_assert_int_eq(model_find_layer(NULL, "a"), -1);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_load_dtypes, 0, 3);
    tcase_add_loop_test(tc, test_fan_in_fan_out, 0, 3);
    tcase_add_test(tc, test_defaults_and_unknown_keys);
    tcase_add_loop_test(tc, test_each_activation, 0, 7);
    tcase_add_test(tc, test_act_parse_unknown);
    tcase_add_test(tc, test_relu_propagates_nan);
    tcase_add_test(tc, test_free_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_missing_config);
    tcase_add_test(tc, test_malformed_json);
    tcase_add_test(tc, test_layers_not_array);
    tcase_add_loop_test(tc, test_wrong_type, 0, sizeof(wrong_types) / sizeof(wrong_types[0]));
    tcase_add_test(tc, test_unknown_activation);
    tcase_add_test(tc, test_not_chaining);
    tcase_add_test(tc, test_duplicate_names);
    tcase_add_test(tc, test_missing_model_file);
    tcase_add_test(tc, test_missing_weight);
    tcase_add_test(tc, test_misshaped_weight);
    tcase_add_test(tc, test_misshaped_bias_and_rank);
    tcase_add_test(tc, test_missing_bias);
    tcase_add_test(tc, test_extra_tensors_warn_once);
    tcase_add_loop_test(tc, test_non_finite_weight, 0, 3);
    tcase_add_test(tc, test_non_finite_bias_f16);
    tcase_add_test(tc, test_unsupported_dtype);
    tcase_add_test(tc, test_corrupt_safetensors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
