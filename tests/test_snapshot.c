/* lorad — tests/test_snapshot.c: unit tests of lib/snapshot.c: new and
 * free (every array a snapshot owns is freed, NULL-safe), and the RFC 3339
 * UTC time format of loaded_at (dates checked against `date -u`:
 * 1795873512 is 2026-11-28T13:45:12Z, 951868799 is 2000-02-29T23:59:59Z). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/snapshot.h"

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

START_TEST(test_new_free)
{
    struct snapshot *s = snapshot_new(0);

    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(s->layers);
    ck_assert_uint_eq(s->nlayers, 0);
    ck_assert_uint_eq(s->version, 0);
    ck_assert_uint_eq(s->bytes, 0);
    ck_assert_str_eq(s->name, "");
    snapshot_free(&s);
    ck_assert_ptr_null(s);
    /* every array of every layer (ASan: make check SAN=1 sees a leak) */
    s = snapshot_new(2);
    for (size_t l = 0; l < 2; l++) {
        struct snapshot_lora *lo = calloc(1, sizeof(*lo));
        ck_assert_ptr_nonnull(lo);
        lo->A = malloc(4);
        lo->B = malloc(4);
        lo->bias_B = malloc(4);
        lo->dora_scale = malloc(4);
        s->layers[l].lora = lo;
        s->layers[l].weight = malloc(4);
        s->layers[l].bias = malloc(4);
    }
    snapshot_free(&s);
    ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_format_time)
{
    struct timespec ts = {951868799, 999999999};
    char buf[64], small[6];

    snapshot_format_time(&ts, buf, sizeof(buf));
    ck_assert_str_eq(buf, "2000-02-29T23:59:59.999Z"); /* milliseconds truncated */
    ts.tv_nsec = 1000000;
    snapshot_format_time(&ts, buf, sizeof(buf));
    ck_assert_str_eq(buf, "2000-02-29T23:59:59.001Z");
    ts.tv_nsec = -5; /* out of range: no milliseconds */
    snapshot_format_time(&ts, buf, sizeof(buf));
    ck_assert_str_eq(buf, "2000-02-29T23:59:59.000Z");
    ts = (struct timespec){4102444800, 0};
    snapshot_format_time(&ts, buf, sizeof(buf));
    ck_assert_str_eq(buf, "2100-01-01T00:00:00.000Z");
    /* truncated to the buffer, always terminated */
    snapshot_format_time(&ts, small, sizeof(small));
    ck_assert_str_eq(small, "2100-");
    /* no time: an empty string; no buffer: nothing written */
    snapshot_format_time(NULL, buf, sizeof(buf));
    ck_assert_str_eq(buf, "");
    memcpy(buf, "keep", 5);
    snapshot_format_time(&ts, buf, 0);
    ck_assert_str_eq(buf, "keep");
    snapshot_format_time(&ts, NULL, 10);
}
END_TEST

static Suite *snapshot_suite(void)
{
    Suite *s = suite_create("snapshot");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_snapshot_basics);
    tcase_add_test(tc, test_new_free);
    tcase_add_test(tc, test_format_time);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(snapshot_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
