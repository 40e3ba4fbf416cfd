/* lorad — tests/test_digest.c: unit tests of lib/digest.c: known sha256
 * vectors, the real PEFT file against the sha256sum command (an
 * independent implementation), and the hex comparison rules. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/digest.h"
#include "../lib/errors.h"
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

static Suite *digest_suite(void)
{
    Suite *s = suite_create("digest");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_known_vectors);
    tcase_add_test(tc, test_real_file_vs_sha256sum);
    tcase_add_test(tc, test_hex_equal);
    suite_add_tcase(s, tc);
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
