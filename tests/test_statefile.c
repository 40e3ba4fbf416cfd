/* lorad — tests/test_statefile.c: the persistent serving state
 * (lib/statefile.c): atomic write, render, restore of the base-only state,
 * the version floor, and failures (no file, corrupt JSON, missing adapter). */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/statefile.h"
#include "testutil.h"

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

START_TEST(test_write_atomic)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "state.json");
    struct lorad_error e = {0};
    size_t len;
    uint8_t *got;
    ck_assert_int_eq(statefile_write(p, "first", 5, &e), 0);
    ck_assert_int_eq(statefile_write(p, "second!", 7, &e), 0);
    got = tu_read_file(p, &len);
    ck_assert_uint_eq(len, 7);
    ck_assert_int_eq(memcmp(got, "second!", 7), 0);
    ck_assert_int_eq(count_entries(dir), 1); /* no temp file left */
    free(got);
    free(p);
    p = tu_path(dir, "nodir/state.json");
    ck_assert_int_eq(statefile_write(p, "x", 1, &e), LORAD_E_INTERNAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "nodir"));
    free(p);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_none_and_corrupt)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "state.json");
    struct serving *s = serving_new(4);
    struct lorad_error e = {0};
    ck_assert_int_eq(statefile_restore(p, -1, NULL, s, NULL, &e), STATEFILE_NONE);
    tu_write_text(p, "{\"format\": \"lorad-state\", ");
    ck_assert_int_eq(statefile_restore(p, -1, NULL, s, NULL, &e), STATEFILE_FAILED);
    ck_assert_uint_eq(serving_next_version(s), 1);
    tu_write_text(p, "{\"format\": \"lorad-state\", \"format_version\": 1, \"generation\": 3,"
                     " \"next_version\": 9, \"stable\": 5, \"canary\": null, \"history\": []}");
    ck_assert_int_eq(statefile_restore(p, -1, NULL, s, NULL, &e), STATEFILE_FAILED);
    ck_assert_uint_eq(serving_next_version(s), 9); /* the floor still applies */
    ck_assert_ptr_null(serving_current(s)->stable);
    serving_free(&s);
    free(p);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_roundtrip_base_and_floor)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "state.json");
    struct serving *s = serving_new(4), *s2 = serving_new(4);
    struct lorad_error e = {0};
    char *text;
    /* Base only, generation 5, next version 7 in memory. */
    serving_restore(s, NULL, NULL, 0, NULL, 0, 5, 7);
    text = statefile_render(s, NULL, NULL);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "\"next_version\":\t8"));
    ck_assert_int_eq(statefile_write(p, text, strlen(text), &e), 0);
    ck_assert_int_eq(statefile_restore(p, -1, NULL, s2, NULL, &e), STATEFILE_RESTORED);
    ck_assert_uint_eq(serving_next_version(s2), 8); /* one ahead */
    ck_assert_uint_eq(serving_current(s2)->generation, 5);
    ck_assert_ptr_null(serving_current(s2)->stable);
    free(text);
    serving_free(&s);
    serving_free(&s2);
    free(p);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_missing_adapter)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "state.json");
    struct serving *s = serving_new(4);
    struct lorad_error e = {0};
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    tu_write_text(p, "{\"format\": \"lorad-state\", \"format_version\": 1, \"generation\": 3,"
                     " \"next_version\": 12, \"stable\": {\"adapter\": \"gone\", \"version\": 4,"
                     " \"sha256\": \"%064d\"}, \"canary\": null, \"history\": [], \"profile\": null}",
                  0);
    ck_assert_int_eq(statefile_restore(p, dfd, NULL, s, NULL, &e), STATEFILE_FAILED);
    ck_assert_ptr_nonnull(strstr(e.msg, "gone"));
    ck_assert_ptr_null(serving_current(s)->stable);
    ck_assert_uint_eq(serving_next_version(s), 12);
    close(dfd);
    serving_free(&s);
    free(p);
    tu_rmrf(dir);
    free(dir);
}
END_TEST


/* A 1-layer model (4 -> 4) and adapter `name` (r = 2) under dir/adapters. */
static void write_fixture(const char *dir, const char *name, double seed)
{
    static double W[16], A[8], B[8];
    char *p, *ad = tu_path(dir, "adapters"), *a;
    for (int i = 0; i < 16; i++)
        W[i] = 0.25 * (i % 5) - 0.5;
    for (int i = 0; i < 8; i++) {
        A[i] = seed + 0.125 * i;
        B[i] = 0.5 - 0.0625 * i;
    }
    p = tu_path(dir, "config.json");
    tu_write_text(p, "{\"layers\": [{\"name\": \"l0\", \"in_features\": 4, "
                     "\"out_features\": 4}]}");
    free(p);
    p = tu_path(dir, "model.safetensors");
    {
        struct tu_tensor t = {"l0.weight", "F32", 2, {4, 4}, W};
        tu_write_safetensors(p, &t, 1);
    }
    free(p);
    mkdir(ad, 0755);
    a = tu_path(ad, name);
    tu_mkdir(a);
    p = tu_path(a, "adapter_config.json");
    tu_write_text(p, "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, "
                     "\"target_modules\": [\"l0\"]}");
    free(p);
    p = tu_path(a, "adapter_model.safetensors");
    {
        struct tu_tensor t[2] = {{"base_model.model.l0.lora_A.weight", "F32", 2, {2, 4}, A},
                                 {"base_model.model.l0.lora_B.weight", "F32", 2, {4, 2}, B}};
        tu_write_safetensors(p, t, 2);
    }
    free(p);
    free(a);
    free(ad);
}

static struct snapshot *stage(int dfd, const struct model *m, struct adapter_profile **prof,
                              const char *name)
{
    struct adapter_stage_args a = {dfd, name, NULL, m, *prof};
    struct snapshot *snap = NULL;
    struct adapter_profile *done = NULL;
    struct lorad_error e = {0};
    ck_assert_msg(adapter_stage(&a, &snap, &done, &e) == 0, "%s", e.msg);
    if (done) {
        adapter_profile_free(prof);
        *prof = done;
    }
    return snap;
}

START_TEST(test_roundtrip_adapters)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "state.json"), *ad = tu_path(dir, "adapters");
    struct model *m = NULL;
    struct adapter_profile *prof = NULL, *prof2 = NULL;
    struct serving *s = serving_new(4), *s2 = serving_new(4), *s3 = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};
    const struct serving_view *v;
    char *text;
    int dfd;

    write_fixture(dir, "a", 0.1);
    write_fixture(dir, "b", 0.2);
    write_fixture(dir, "c", 0.3);
    ck_assert_msg(model_load(dir, &m, NULL, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(adapter_profile_from_config(m, 0, NULL, 0, &prof, &e), 0);
    dfd = open(ad, O_RDONLY | O_DIRECTORY);
    ck_assert_int_eq(serving_swap(s, stage(dfd, m, &prof, "a"), -1, &c, &e), 0);
    ck_assert_int_eq(serving_swap(s, stage(dfd, m, &prof, "b"), -1, &c, &e), 0);
    ck_assert_int_eq(serving_swap(s, stage(dfd, m, &prof, "c"), 2500, &c, &e), 0);
    text = statefile_render(s, prof, m);
    ck_assert_int_eq(statefile_write(p, text, strlen(text), &e), 0);
    free(text);

    ck_assert_int_eq(adapter_profile_from_config(m, 0, NULL, 0, &prof2, &e), 0);
    ck_assert_msg(statefile_restore(p, dfd, m, s2, &prof2, &e) == STATEFILE_RESTORED, "%s",
                  e.msg);
    v = serving_current(s2);
    ck_assert_str_eq(v->stable->name, "b");
    ck_assert_uint_eq(v->stable->version, 2);
    ck_assert_str_eq(v->canary->name, "c");
    ck_assert_uint_eq(v->canary->version, 3);
    ck_assert_int_eq(v->canary_bp, 2500);
    ck_assert_uint_eq(v->generation, 3);
    ck_assert_uint_eq(serving_history_len(s2), 2);
    ck_assert_uint_eq(serving_history_at(s2, 0)->version, 1);
    ck_assert_ptr_null(serving_history_at(s2, 1));
    ck_assert_uint_eq(serving_next_version(s2), 5); /* 4 + 1 reserved */
    ck_assert_str_eq(v->stable->sha256, serving_current(s)->stable->sha256);

    /* Tamper with b: restore fails, nothing installed, floor kept. */
    {
        char *f = tu_path(ad, "b/adapter_model.safetensors");
        size_t len;
        uint8_t *img = tu_read_file(f, &len);
        img[len - 1] ^= 1;
        tu_write_file(f, img, len);
        free(img);
        free(f);
    }
    ck_assert_int_eq(statefile_restore(p, dfd, m, s3, &prof2, &e), STATEFILE_FAILED);
    ck_assert_ptr_nonnull(strstr(e.msg, "b"));
    ck_assert_ptr_null(serving_current(s3)->stable);
    ck_assert_ptr_null(serving_current(s3)->canary);
    ck_assert_uint_ge(serving_next_version(s3), 5);
    close(dfd);
    serving_free(&s);
    serving_free(&s2);
    serving_free(&s3);
    adapter_profile_free(&prof);
    adapter_profile_free(&prof2);
    model_free(&m);
    free(p);
    free(ad);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("statefile");
    TCase *tc = tcase_create("statefile");
    SRunner *sr;
    int failed;
    tcase_add_test(tc, test_write_atomic);
    tcase_add_test(tc, test_none_and_corrupt);
    tcase_add_test(tc, test_roundtrip_base_and_floor);
    tcase_add_test(tc, test_missing_adapter);
    tcase_add_test(tc, test_roundtrip_adapters);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(su, tc);
    sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
