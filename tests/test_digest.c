/* lorad — tests/test_digest.c: unit tests of lib/digest.c: known sha256
 * vectors, the real PEFT file against the sha256sum command (an
 * independent implementation), the hex comparison rules, and the memo of
 * file digests: directly with crafted file identities ("memo": what is
 * remembered, when a file counts as settled, which entry is evicted), and
 * through staging with a file rewritten in place ("staging", with
 * tests/adfixture). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/adapter.h"
#include "../lib/digest.h"
#include "../lib/errors.h"
#include "adfixture.h"
#include "testutil.h"

#define PEFT_FILE "../shared/testdata/peft-distilbert-imdb/adapter_model.safetensors"

#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_MILLION_A "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

START_TEST(test_known_vectors)
{
    char out[65];
    char *million = malloc(1000000);

    ck_assert_int_eq(digest_sha256_hex("", 0, out), 0);
    ck_assert_str_eq(out, SHA_EMPTY);
    ck_assert_int_eq(digest_sha256_hex(NULL, 0, out), 0);
    ck_assert_str_eq(out, SHA_EMPTY);
    ck_assert_int_eq(digest_sha256_hex("abc", 3, out), 0);
    ck_assert_str_eq(out, SHA_ABC);
    ck_assert_ptr_nonnull(million);
    memset(million, 'a', 1000000);
    ck_assert_int_eq(digest_sha256_hex(million, 1000000, out), 0);
    ck_assert_str_eq(out, SHA_MILLION_A);
    free(million);
    ck_assert_int_eq(digest_sha256_hex(NULL, 3, out), LORAD_E_INTERNAL);
    ck_assert_int_eq(digest_sha256_hex("abc", 3, NULL), LORAD_E_INTERNAL);
}
END_TEST

START_TEST(test_real_file_vs_sha256sum)
{
    char out[65], want[65] = {0}, cmd[512];
    size_t len;
    uint8_t *data;
    FILE *p;

    if (access(PEFT_FILE, R_OK) != 0)
        ck_abort_msg("test data missing: %s (tests run from the repository root)", PEFT_FILE);
    data = tu_read_file(PEFT_FILE, &len);
    ck_assert_int_eq(digest_sha256_hex(data, len, out), 0);
    snprintf(cmd, sizeof(cmd), "sha256sum '%s'", PEFT_FILE);
    ck_assert_ptr_nonnull(p = popen(cmd, "r"));
    ck_assert_int_eq(fscanf(p, "%64s", want), 1);
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_uint_eq(strlen(want), 64);
    ck_assert_str_eq(out, want);
    free(data);
}
END_TEST

START_TEST(test_hex_equal)
{
    char upper[65];

    for (int i = 0; i < 65; i++)
        upper[i] = (char)(SHA_ABC[i] >= 'a' && SHA_ABC[i] <= 'f' ? SHA_ABC[i] - 32 : SHA_ABC[i]);
    ck_assert(digest_hex_equal(SHA_ABC, SHA_ABC));
    ck_assert(digest_hex_equal(SHA_ABC, upper));
    ck_assert(digest_hex_equal(upper, SHA_ABC));
    ck_assert(!digest_hex_equal(SHA_ABC, SHA_EMPTY));
    /* last digit differs */
    char last[65];
    memcpy(last, SHA_ABC, 65);
    last[63] = last[63] == '0' ? '1' : '0';
    ck_assert(!digest_hex_equal(SHA_ABC, last));
    /* wrong lengths, non-hex, NULL */
    char shortx[65], longx[66], nonhex[65], spaced[66];
    memcpy(shortx, SHA_ABC, 63), shortx[63] = '\0';
    memcpy(longx, SHA_ABC, 64), longx[64] = 'a', longx[65] = '\0';
    memcpy(nonhex, SHA_ABC, 65), nonhex[10] = 'g';
    memcpy(spaced, SHA_ABC, 64), spaced[64] = ' ', spaced[65] = '\0';
    ck_assert(!digest_hex_equal(SHA_ABC, shortx));
    ck_assert(!digest_hex_equal(shortx, shortx));
    ck_assert(!digest_hex_equal(SHA_ABC, longx));
    ck_assert(!digest_hex_equal(longx, longx));
    ck_assert(!digest_hex_equal(nonhex, nonhex));
    ck_assert(!digest_hex_equal(spaced, spaced));
    ck_assert(!digest_hex_equal(NULL, SHA_ABC));
    ck_assert(!digest_hex_equal(SHA_ABC, NULL));
    ck_assert(!digest_hex_equal("", ""));
    ck_assert(digest_hex_valid(upper));
    ck_assert(!digest_hex_valid(nonhex));
    ck_assert(!digest_hex_valid(NULL));
}
END_TEST

/* ---- the memo ---- */

/* sha256sum of the text `what` printf'd (an independent digest). */
static void sha_of_text(const char *what, char out[65])
{
    char cmd[256];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "printf '%s' | sha256sum", what);
    ck_assert_ptr_nonnull(p = popen(cmd, "r"));
    ck_assert_int_eq(fscanf(p, "%64s", out), 1);
    ck_assert_int_eq(pclose(p), 0);
}

/* A file identity of 3 bytes whose timestamps are `age` seconds old. */
static struct stat ident(dev_t dev, ino_t ino, time_t age)
{
    struct stat st;
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    memset(&st, 0, sizeof(st));
    st.st_dev = dev;
    st.st_ino = ino;
    st.st_size = 3;
    st.st_mtim.tv_sec = st.st_ctim.tv_sec = now.tv_sec - age;
    st.st_mtim.tv_nsec = st.st_ctim.tv_nsec = 5;
    return st;
}

/* digest_file_sha256 of data[0..3) for st, as a string. */
static void file_sha(const struct stat *st, const char *data, char out[65])
{
    ck_assert_int_eq(digest_file_sha256(st, data, 3, out), 0);
}

START_TEST(test_memo_settled)
{
    struct stat st = ident(901, 1, 10);
    char got[65], abd[65];

    sha_of_text("abd", abd);
    file_sha(&st, "abc", got);
    ck_assert_str_eq(got, SHA_ABC);
    /* the same identity: remembered, the bytes are not read again */
    file_sha(&st, "abd", got);
    ck_assert_str_eq(got, SHA_ABC);
    /* any change of size, mtime or ctime is another file */
    st.st_ctim.tv_nsec++;
    file_sha(&st, "abd", got);
    ck_assert_str_eq(got, abd);
    st.st_mtim.tv_sec--;
    file_sha(&st, "abc", got);
    ck_assert_str_eq(got, SHA_ABC);
    /* a second name of the same file (same device and inode) shares it */
    file_sha(&st, "abd", got);
    ck_assert_str_eq(got, SHA_ABC);
    /* another inode on the same device is another file */
    st.st_ino = 2;
    file_sha(&st, "abd", got);
    ck_assert_str_eq(got, abd);
}
END_TEST

START_TEST(test_memo_unsettled)
{
    struct stat fresh = ident(902, 1, 0), half = ident(902, 2, 10);
    char got[65], abd[65];

    sha_of_text("abd", abd);
    /* timestamps younger than DIGEST_MEMO_SETTLE_S: never remembered */
    file_sha(&fresh, "abc", got);
    ck_assert_str_eq(got, SHA_ABC);
    file_sha(&fresh, "abd", got);
    ck_assert_str_eq(got, abd);
    /* an old mtime is not enough: the ctime must be settled too */
    half.st_ctim.tv_sec += 10 - (DIGEST_MEMO_SETTLE_S - 1);
    file_sha(&half, "abc", got);
    ck_assert_str_eq(got, SHA_ABC);
    file_sha(&half, "abd", got);
    ck_assert_str_eq(got, abd);
    /* older than DIGEST_MEMO_SETTLE_S: settled */
    half = ident(902, 3, DIGEST_MEMO_SETTLE_S + 1);
    file_sha(&half, "abc", got);
    file_sha(&half, "abd", got);
    ck_assert_str_eq(got, SHA_ABC);
}
END_TEST

START_TEST(test_memo_eviction)
{
    struct stat st[DIGEST_MEMO_SIZE + 1];
    char got[65], abd[65];

    sha_of_text("abd", abd);
    for (size_t i = 0; i <= DIGEST_MEMO_SIZE; i++)
        st[i] = ident(903, (ino_t)(i + 1), 10);
    /* fill every entry, use the first again, then one more file */
    for (size_t i = 0; i < DIGEST_MEMO_SIZE; i++)
        file_sha(&st[i], "abc", got);
    file_sha(&st[0], "abd", got);
    ck_assert_str_eq(got, SHA_ABC);
    file_sha(&st[DIGEST_MEMO_SIZE], "abc", got);
    /* the least recently used (the second) went; the others stayed */
    file_sha(&st[0], "abd", got);
    ck_assert_str_eq(got, SHA_ABC);
    file_sha(&st[DIGEST_MEMO_SIZE], "abd", got);
    ck_assert_str_eq(got, SHA_ABC);
    file_sha(&st[2], "abd", got);
    ck_assert_str_eq(got, SHA_ABC);
    file_sha(&st[1], "abd", got);
    ck_assert_str_eq(got, abd);
}
END_TEST

START_TEST(test_memo_arguments)
{
    struct stat st = ident(904, 1, 10);
    char got[65];

    ck_assert_int_eq(digest_file_sha256(NULL, "abc", 3, got), LORAD_E_INTERNAL);
    ck_assert_int_eq(digest_file_sha256(&st, "abc", 3, NULL), LORAD_E_INTERNAL);
    ck_assert_int_eq(digest_file_sha256(&st, NULL, 3, got), LORAD_E_INTERNAL);
    ck_assert_int_eq(digest_file_sha256(&st, "abcd", 4, got), LORAD_E_INTERNAL); /* size 3 */
    st.st_size = 0;
    ck_assert_int_eq(digest_file_sha256(&st, NULL, 0, got), 0);
    ck_assert_str_eq(got, SHA_EMPTY);
}
END_TEST

/* ---- the memo through staging ---- */

/* The remembered sha256 never hides a change of the file: rewriting it in
 * place (same inode, same size) is seen. */
START_TEST(test_checksum_memo)
{
    char first[65], second[65], *p;
    struct snapshot *s;
    struct af_adapter a;
    size_t len;
    uint8_t *img;
    FILE *f;

    af_simple("memo", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "memo/adapter_model.safetensors");
    af_sha256sum(p, first);
    sleep(3); /* let the file settle so that its digest is remembered */
    for (int i = 0; i < 2; i++) {
        s = af_expect_ok("memo", NULL, first, NULL);
        ck_assert_str_eq(s->sha256, first);
        snapshot_free(&s);
    }
    af_init(&a, "memo2", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    img = tu_safetensors_image(a.t, a.n, NULL, &len);
    f = fopen(p, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(img, 1, len, f), len);
    fclose(f);
    free(img);
    af_free(&a);
    af_sha256sum(p, second);
    ck_assert_str_ne(first, second);
    af_expect_err("memo", NULL, first, LORAD_E_CHECKSUM_MISMATCH, second, NULL);
    s = af_expect_ok("memo", NULL, second, NULL);
    ck_assert_str_eq(s->sha256, second);
    snapshot_free(&s);
    free(p);
}
END_TEST

static Suite *digest_suite(void)
{
    Suite *s = suite_create("digest");
    TCase *tc = tcase_create("core"), *memo = tcase_create("memo");
    TCase *staging = tcase_create("staging");

    tcase_add_test(tc, test_known_vectors);
    tcase_add_test(tc, test_real_file_vs_sha256sum);
    tcase_add_test(tc, test_hex_equal);
    suite_add_tcase(s, tc);
    tcase_add_test(memo, test_memo_settled);
    tcase_add_test(memo, test_memo_unsettled);
    tcase_add_test(memo, test_memo_eviction);
    tcase_add_test(memo, test_memo_arguments);
    suite_add_tcase(s, memo);
    tcase_set_timeout(staging, 60);
    tcase_add_checked_fixture(staging, af_setup, af_teardown);
    tcase_add_test(staging, test_checksum_memo);
    suite_add_tcase(s, staging);
    return s;
}
int main(void)
{
    SRunner *sr = srunner_create(digest_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
