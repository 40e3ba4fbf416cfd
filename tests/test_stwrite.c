/* lorad — tests/test_stwrite.c: unit tests of lib/stwrite.c, the
 * safetensors writer: the bytes of a written file read independently (and
 * through the reader), nothing left behind, the mode, a replaced file, and
 * every refused tensor writing nothing. */
#include <check.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/safetensors.h"
#include "../lib/stwrite.h"
#include "testutil.h"

START_TEST(test_write_roundtrip)
{
    static const float a[6] = {1, 2, 3, 4, 5, -6.5f};
    static const uint16_t h[4] = {0x3c00, 0x8000, 0x7c00, 0x0001};
    static const uint16_t s = 0x4049;
    static const uint8_t none[1] = {0};
    const char *weird = "we\"ird\\name\n\x01/é";
    struct stwrite_tensor w[4] = {
        {"layers.0.proj.weight", ST_F32, 2, {2, 3}, a},
        {weird, ST_F16, 1, {4}, h},
        {"scalar", ST_BF16, 0, {0}, &s},
        {"empty", ST_I32, 1, {0}, none},
    };
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    char *dir = tu_mkdtemp(), *path = tu_path(dir, "out.safetensors");
    size_t len, n = 0;
    uint8_t *raw;
    DIR *d;

    ck_assert_int_eq(stwrite_file(path, w, 4, &err), 0);
    /* raw shape of the file, read independently */
    raw = tu_read_file(path, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | raw[i];
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(len, 8 + hl + 24 + 8 + 2 + 0);
    ck_assert(!memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"}", 31));
    size_t e = hl;
    while (e > 0 && raw[8 + e - 1] == ' ')
        e--;
    ck_assert_int_eq(raw[8 + e - 1], '}');
    ck_assert_uint_lt(hl - e, 8);
    /* and through the reader */
    ck_assert_int_eq(st_open(path, &f, &err), 0);
    ck_assert_str_eq(st_metadata(f, "format"), "pt");
    ck_assert_uint_eq(st_count(f), 4);
    for (size_t i = 0; i < 4; i++) {
        const struct st_tensor *t = st_get(f, i);
        ck_assert_str_eq(t->name, w[i].name);
        ck_assert_ptr_eq(st_find(f, w[i].name), t);
        ck_assert_int_eq(t->dtype, w[i].dtype);
        ck_assert_int_eq(t->ndim, w[i].ndim);
        for (int k = 0; k < t->ndim; k++)
            ck_assert_uint_eq(t->shape[k], w[i].shape[k]);
        ck_assert_int_eq(memcmp(t->data, w[i].data, t->nbytes), 0);
    }
    ck_assert_uint_eq(st_get(f, 2)->nelems, 1);
    ck_assert_uint_eq(st_get(f, 3)->nbytes, 0);
    const uint8_t *img = st_image(f, &n);
    ck_assert_uint_eq(n, len);
    ck_assert_int_eq(memcmp(img, raw, len), 0);
    st_close(&f);
    /* no temp file left behind */
    ck_assert_ptr_nonnull(d = opendir(dir));
    n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += de->d_name[0] != '.';
    closedir(d);
    ck_assert_uint_eq(n, 1);
    /* duplicate names and bad arguments are refused, nothing written */
    struct stwrite_tensor dup[2] = {w[0], w[0]};
    char *p2 = tu_path(dir, "dup.safetensors");
    ck_assert_int_eq(stwrite_file(p2, dup, 2, &err), LORAD_E_INTERNAL);
    ck_assert_int_eq(access(p2, F_OK), -1);
    ck_assert_int_eq(stwrite_file(NULL, w, 1, &err), LORAD_E_INTERNAL);
    /* into a missing directory: an I/O error */
    char *p3 = tu_path(dir, "missing/x.safetensors");
    ck_assert_int_eq(stwrite_file(p3, w, 1, &err), LORAD_E_INTERNAL);
    free(p3);
    free(p2);
    free(raw);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_refused_tensors)
{
    static const float v[2] = {1, 2};
    struct stwrite_tensor good = {"t", ST_F32, 1, {2}, v};
    struct stwrite_tensor bad[] = {
        {"", ST_F32, 1, {2}, v},
        {NULL, ST_F32, 1, {2}, v},
        {"__metadata__", ST_F32, 1, {2}, v},
        {"bad\xff", ST_F32, 1, {2}, v},         /* not UTF-8 */
        {"over\xc0\xaf", ST_F32, 1, {2}, v},    /* overlong */
        {"t", ST_DTYPE_COUNT, 1, {2}, v},       /* no such dtype */
        {"t", ST_F32, ST_MAX_DIMS + 1, {2}, v}, /* too many dimensions */
        {"t", ST_F32, -1, {2}, v},
        {"t", ST_F32, 1, {9007199254740992ULL}, v},    /* beyond 2^53 - 1 */
        {"t", ST_F32, 2, {1ULL << 40, 1ULL << 40}, v}, /* elements overflow */
        {"t", ST_F32, 1, {2}, NULL},                   /* bytes without data */
    };
    struct lorad_error err = {0, ""};
    char *dir = tu_mkdtemp(), *path = tu_path(dir, "x.safetensors");
    struct stat st;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct stwrite_tensor two[2] = {good, bad[i]};
        memset(&err, 0, sizeof(err));
        ck_assert_msg(stwrite_file(path, two, 2, &err) == LORAD_E_INTERNAL, "case %zu", i);
        ck_assert_int_eq(err.code, LORAD_E_INTERNAL);
        ck_assert_msg(strstr(err.msg, "stwrite_file"), "case %zu: %s", i, err.msg);
        ck_assert_int_eq(access(path, F_OK), -1);
    }
    /* a valid file replaces the old one, mode 0644, nothing else left */
    tu_write_text(path, "old");
    umask(0077);
    ck_assert_int_eq(stwrite_file(path, &good, 1, &err), 0);
    umask(0022);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    ck_assert_int_gt(st.st_size, 3);
    {
        struct st_file *f = NULL;
        ck_assert_int_eq(st_open(path, &f, &err), 0);
        ck_assert_uint_eq(st_count(f), 1);
        ck_assert_uint_eq(st_get(f, 0)->nbytes, 8);
        st_close(&f);
    }
    /* an empty set of tensors is a valid file too */
    ck_assert_int_eq(stwrite_file(path, NULL, 0, &err), 0);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static Suite *stwrite_suite(void)
{
    Suite *s = suite_create("stwrite");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_write_roundtrip);
    tcase_add_test(tc, test_refused_tensors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(stwrite_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
