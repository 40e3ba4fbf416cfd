/* lorad — tests/test_weights.c: unit tests of lib/weights.c.
 *
 * weights_to_f32: values copied exactly (F32) or decoded as testutil's
 * independent decoders do (F16, BF16), and a NaN or an infinity found
 * wherever it sits: the first and last element, both sides of the 16-lane
 * and the 8192-element block boundaries of the F32 scan. weights_dora_scale
 * against the DoRA formula of SPEC.md 3 computed here with naive double
 * loops, and its non-finite cases. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/weights.h"
#include "testutil.h"

/* A 1-dimensional tensor of n elements of dtype over data. */
static struct st_tensor tensor(enum st_dtype dtype, const void *data, size_t n)
{
    struct st_tensor t;

    memset(&t, 0, sizeof(t));
    t.name = "layers.0.proj.lora_B.weight";
    t.dtype = dtype;
    t.ndim = 1;
    t.shape[0] = n;
    t.nelems = n;
    t.data = data;
    t.nbytes = n * st_dtype_size(dtype);
    return t;
}

START_TEST(test_f32_exact)
{
    enum { N = 20000 };
    uint64_t seed = 3;
    double *v = tu_rand_array(&seed, N, -2, 2);
    float *src = malloc(N * sizeof(float)), *dst = malloc(N * sizeof(float));
    struct lorad_error err = {0, ""};
    struct st_tensor t;

    ck_assert(src && dst);
    for (size_t i = 0; i < N; i++)
        src[i] = (float)v[i];
    src[7] = -0.0f;
    src[8] = 1e-45f; /* subnormal: finite */
    src[9] = 3.4e38f;
    t = tensor(ST_F32, src, N);
    ck_assert_int_eq(weights_to_f32(&t, dst, &err), 0);
    ck_assert_int_eq(memcmp(src, dst, N * sizeof(float)), 0);
    t = tensor(ST_F32, src, 0); /* empty */
    ck_assert_int_eq(weights_to_f32(&t, dst, &err), 0);
    free(v);
    free(src);
    free(dst);
}
END_TEST

START_TEST(test_f32_non_finite)
{
    enum { N = 20000 };
    static const size_t at[] = {0, 15, 16, 17, 8191, 8192, 8193, 16383, 16384, N - 1};
    float *src = calloc(N, sizeof(float)), *dst = malloc(N * sizeof(float));
    const float bad[] = {NAN, INFINITY, -INFINITY};
    struct lorad_error err;

    ck_assert(src && dst);
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
        for (size_t k = 0; k < 3; k++) {
            struct st_tensor t = tensor(ST_F32, src, N);
            src[at[i]] = bad[k];
            memset(&err, 0, sizeof(err));
            ck_assert_msg(weights_to_f32(&t, dst, &err) == LORAD_E_NON_FINITE_WEIGHTS,
                          "element %zu = %g not seen", at[i], (double)bad[k]);
            ck_assert_str_eq(err.msg, "tensor layers.0.proj.lora_B.weight holds a non-finite "
                                      "value (NaN or infinity)");
            src[at[i]] = 0;
        }
    free(src);
    free(dst);
}
END_TEST

START_TEST(test_half_formats)
{
    enum { N = 40 };
    uint8_t h[2 * N], b[2 * N];
    float dst[N];
    struct lorad_error err = {0, ""};
    struct st_tensor t;
    uint64_t seed = 9;

    for (size_t i = 0; i < N; i++) {
        double x = tu_uniform(&seed, -100, 100);
        uint16_t hb = tu_f16_bits(x), bb = tu_bf16_bits(x);
        h[2 * i] = (uint8_t)hb, h[2 * i + 1] = (uint8_t)(hb >> 8);
        b[2 * i] = (uint8_t)bb, b[2 * i + 1] = (uint8_t)(bb >> 8);
    }
    t = tensor(ST_F16, h, N);
    ck_assert_int_eq(weights_to_f32(&t, dst, &err), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert((double)dst[i] == tu_f16_value((uint16_t)(h[2 * i] | h[2 * i + 1] << 8)));
    t = tensor(ST_BF16, b, N);
    ck_assert_int_eq(weights_to_f32(&t, dst, &err), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert((double)dst[i] == tu_bf16_value((uint16_t)(b[2 * i] | b[2 * i + 1] << 8)));
    /* an f16 infinity (0x7c00) and a bf16 NaN (0x7fc0) */
    h[2 * 5] = 0x00, h[2 * 5 + 1] = 0x7c;
    t = tensor(ST_F16, h, N);
    ck_assert_int_eq(weights_to_f32(&t, dst, &err), LORAD_E_NON_FINITE_WEIGHTS);
    b[2 * (N - 1)] = 0xc0, b[2 * (N - 1) + 1] = 0x7f;
    t = tensor(ST_BF16, b, N);
    ck_assert_int_eq(weights_to_f32(&t, dst, &err), LORAD_E_NON_FINITE_WEIGHTS);
    /* other dtypes are st_to_f32's refusal; bad arguments */
    t = tensor(ST_F64, h, N / 4);
    ck_assert_int_eq(weights_to_f32(&t, dst, &err), LORAD_E_UNSUPPORTED_DTYPE);
    ck_assert_int_eq(weights_to_f32(NULL, dst, &err), LORAD_E_INTERNAL);
    t = tensor(ST_F32, h, 2);
    ck_assert_int_eq(weights_to_f32(&t, NULL, &err), LORAD_E_INTERNAL);
}
END_TEST

/* m[o] / ||W_o + s (B A)_o||_2 by the formula, W [in][out]. */
static double dora_ref(const double *A, const double *B, const double *W, size_t r, size_t in,
                       size_t out, double s, double m, size_t o)
{
    double ss = 0;

    for (size_t i = 0; i < in; i++) {
        double ba = 0;
        for (size_t k = 0; k < r; k++)
            ba += B[o * r + k] * A[k * in + i];
        ss += (W[i * out + o] + s * ba) * (W[i * out + o] + s * ba);
    }
    return m / sqrt(ss);
}

static float *to_f32(const double *v, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)v[i];
    return f;
}

START_TEST(test_dora_scale)
{
    enum { R = 3, IN = 7, OUT = 5 };
    uint64_t seed = 11;
    double *A = tu_rand_array(&seed, R * IN, -1, 1), *B = tu_rand_array(&seed, OUT * R, -1, 1);
    double *W = tu_rand_array(&seed, IN * OUT, -1, 1), *m = tu_rand_array(&seed, OUT, 0.5, 2);
    float *Af = to_f32(A, R * IN), *Bf = to_f32(B, OUT * R), *Wf = to_f32(W, IN * OUT);
    float *scale = to_f32(m, OUT);
    struct weights_dora d = {Af, Bf, Wf, R, IN, OUT, 1.5};
    struct lorad_error err = {0, ""};

    ck_assert_int_eq(weights_dora_scale(&d, scale, "q", &err), 0);
    for (size_t o = 0; o < OUT; o++) {
        double want = dora_ref(A, B, W, R, IN, OUT, 1.5, m[o], o);
        ck_assert_msg(fabs(scale[o] - want) <= 1e-6 * fabs(want), "row %zu: %.9g want %.9g", o,
                      (double)scale[o], want);
    }
    /* a zero row norm: W_o and (B A)_o both zero */
    memset(Wf, 0, sizeof(float) * IN * OUT);
    memset(Bf, 0, sizeof(float) * OUT * R);
    for (size_t o = 0; o < OUT; o++)
        scale[o] = 1;
    ck_assert_int_eq(weights_dora_scale(&d, scale, "q", &err), LORAD_E_NON_FINITE_WEIGHTS);
    ck_assert_str_eq(err.msg, "layer q: DoRA scale of output row 0 is not finite (weight norm 0)");
    /* finite in double but not as an f32 */
    Wf[0 * OUT + 1] = 1e-30f; /* row 1 only */
    scale[1] = 1e30f;
    d.in = 1;
    Wf[0] = 1;
    scale[0] = 1;
    ck_assert_int_eq(weights_dora_scale(&d, scale, "q", &err), LORAD_E_NON_FINITE_WEIGHTS);
    ck_assert_ptr_nonnull(strstr(err.msg, "output row 1"));
    ck_assert_int_eq(weights_dora_scale(NULL, scale, "q", &err), LORAD_E_INTERNAL);
    ck_assert_int_eq(weights_dora_scale(&d, NULL, "q", &err), LORAD_E_INTERNAL);
    free(A), free(B), free(W), free(m), free(Af), free(Bf), free(Wf), free(scale);
}
END_TEST

static Suite *weights_suite(void)
{
    Suite *s = suite_create("weights");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_f32_exact);
    tcase_add_test(tc, test_f32_non_finite);
    tcase_add_test(tc, test_half_formats);
    tcase_add_test(tc, test_dora_scale);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(weights_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
