/* lorad — tests/test_fileio.c: unit tests of lib/fileio.c.
 *
 * The readers: whole files NUL-terminated, the size limit at its edge,
 * everything that is not a regular file refused, errno values passed on
 * and worded. The writer: both phases and their combination, the exact
 * mode, a replaced file renamed over (never rewritten in place), a temp
 * file left by a "crash" reused, and each failing step named with the old
 * file intact: a missing directory, a temp name taken by a directory, a
 * symlink or a FIFO, a target that is a directory, a read-only directory
 * (skipped as root, who may write anyway). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/fileio.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = tu_mkdtemp();
}

static void teardown(void)
{
    chmod(dir, 0700);
    tu_rmrf(dir);
    free(dir);
}

/* dir/name, malloc'd. */
static char *in_dir(const char *name)
{
    return tu_path(dir, name);
}

static char *text_of(const char *path)
{
    size_t len;
    uint8_t *d = tu_read_file(path, &len);
    char *s = malloc(len + 1);

    ck_assert_ptr_nonnull(s);
    memcpy(s, d, len);
    s[len] = '\0';
    free(d);
    return s;
}

static void assert_text(const char *path, const char *want)
{
    char *got = text_of(path);
    ck_assert_str_eq(got, want);
    free(got);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* ---- reading ---- */

START_TEST(test_read)
{
    char *p = in_dir("f"), *e = in_dir("empty"), *buf = NULL;
    size_t len = 99;

    tu_write_text(p, "hello\nworld");
    ck_assert_int_eq(fileio_read_path(p, 1024, &buf, &len), 0);
    ck_assert_uint_eq(len, 11);
    ck_assert_str_eq(buf, "hello\nworld");
    free(buf);
    /* exactly the limit is fine, one byte less is not */
    ck_assert_int_eq(fileio_read_path(p, 11, &buf, &len), 0);
    free(buf);
    ck_assert_int_eq(fileio_read_path(p, 10, &buf, &len), -EFBIG);
    tu_write_text(e, "%s", "");
    ck_assert_int_eq(fileio_read_path(e, 0, &buf, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_str_eq(buf, "");
    free(buf);
    free(p);
    free(e);
}
END_TEST

START_TEST(test_read_refusals)
{
    char *missing = in_dir("missing"), *fifo = in_dir("fifo"), *buf = NULL;
    int fds[2], fd;
    size_t len;

    ck_assert_int_eq(fileio_read_path(missing, 10, &buf, &len), -ENOENT);
    ck_assert_int_eq(fileio_read_path(dir, 10, &buf, &len), -EINVAL);
    ck_assert_int_eq(fileio_read_path("/dev/null", 10, &buf, &len), -EINVAL);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    fd = open(fifo, O_RDONLY | O_NONBLOCK);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fileio_read_fd(fd, 10, &buf, &len), -EINVAL);
    close(fd);
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(fileio_read_fd(fds[0], 10, &buf, &len), -EINVAL);
    close(fds[0]);
    close(fds[1]);
    ck_assert_int_eq(fileio_read_fd(-1, 10, &buf, &len), -EBADF);
    ck_assert_str_eq(fileio_strerror(-EINVAL), "not a regular file");
    ck_assert_str_eq(fileio_strerror(-EFBIG), "larger than the limit");
    ck_assert_str_eq(fileio_strerror(-EIO), "the file shrank while it was read");
    ck_assert_str_eq(fileio_strerror(-ENOENT), strerror(ENOENT));
    free(missing);
    free(fifo);
}
END_TEST

/* ---- the atomic writer ---- */

START_TEST(test_write_atomic)
{
    char *p = in_dir("state"), *tmp = in_dir("state.tmp"), *old = in_dir("old-link");
    const char *what = "unset";

    ck_assert_int_eq(fileio_write_atomic(p, "first version", 13, 0600, &what), 0);
    assert_text(p, "first version");
    ck_assert(!exists(tmp));
    /* the mode is exactly `mode`, whatever the umask */
    ck_assert_uint_eq(mode_of(p), 0600);
    ck_assert_int_eq(link(p, old), 0);
    umask(0077);
    ck_assert_int_eq(fileio_write_atomic(p, "2nd", 3, 0644, NULL), 0);
    umask(0022);
    assert_text(p, "2nd");
    ck_assert_uint_eq(mode_of(p), 0644);
    /* renamed over, not rewritten: the old file is untouched */
    assert_text(old, "first version");
    /* empty data */
    ck_assert_int_eq(fileio_write_atomic(p, NULL, 0, 0600, &what), 0);
    assert_text(p, "");
    free(p);
    free(tmp);
    free(old);
}
END_TEST

START_TEST(test_two_phases)
{
    char *p = in_dir("state"), *tmp = in_dir("state.tmp");
    const char *what = NULL;

    tu_write_text(p, "old");
    ck_assert_int_eq(fileio_stage(p, "new", 3, 0640, &what), 0);
    /* staged: written and durable under the temp name, path unchanged */
    assert_text(tmp, "new");
    ck_assert_uint_eq(mode_of(tmp), 0640);
    assert_text(p, "old");
    ck_assert_int_eq(fileio_publish(p, &what), 0);
    assert_text(p, "new");
    ck_assert(!exists(tmp));
    /* a staged write discarded */
    ck_assert_int_eq(fileio_stage(p, "newer", 5, 0640, &what), 0);
    fileio_discard(p);
    ck_assert(!exists(tmp));
    assert_text(p, "new");
    fileio_discard(p); /* nothing staged: harmless */
    fileio_discard(NULL);
    /* publishing what was never staged */
    what = NULL;
    ck_assert_int_eq(fileio_publish(p, &what), -ENOENT);
    ck_assert_str_eq(what, "rename");
    assert_text(p, "new");
    free(p);
    free(tmp);
}
END_TEST

/* A temp file left by a crash (longer, another mode) is truncated and
 * reused, and gone afterwards. */
START_TEST(test_crash_leftover)
{
    char *p = in_dir("state"), *tmp = in_dir("state.tmp");

    tu_write_text(tmp, "stale garbage from a crash, much longer than the new text");
    ck_assert_int_eq(chmod(tmp, 0666), 0);
    ck_assert_int_eq(fileio_write_atomic(p, "third", 5, 0600, NULL), 0);
    assert_text(p, "third");
    ck_assert_uint_eq(mode_of(p), 0600);
    ck_assert(!exists(tmp));
    free(p);
    free(tmp);
}
END_TEST

/* fileio_write_atomic(path) fails with `err` at step `step` (the callers
 * check that no temp file stays and that the old file is intact). */
static void expect_fail(const char *path, int err, const char *step)
{
    const char *what = "unset";
    int rc = fileio_write_atomic(path, "new", 3, 0600, &what);

    ck_assert_msg(rc == err, "%s: got %d (%s), want %d", path, rc, strerror(-rc), err);
    ck_assert_str_eq(what, step);
}

START_TEST(test_write_failures)
{
    char *p = in_dir("state"), *tmp = in_dir("state.tmp"), *target = in_dir("target");
    char *nodir = in_dir("nope/state"), *sub = in_dir("sub"), *subtmp = in_dir("sub.tmp");
    char *fifo = in_dir("f"), *fifotmp = in_dir("f.tmp"), longp[PATH_MAX + 8];

    tu_write_text(p, "old");
    /* the directory does not exist */
    expect_fail(nodir, -ENOENT, "create temp file");
    ck_assert(!exists(nodir));
    /* the temp name is a directory */
    tu_mkdir(tmp);
    expect_fail(p, -EISDIR, "create temp file");
    assert_text(p, "old");
    ck_assert_int_eq(rmdir(tmp), 0);
    /* the temp name is a symlink: not followed, its target untouched */
    tu_write_text(target, "target");
    ck_assert_int_eq(symlink(target, tmp), 0);
    expect_fail(p, -ELOOP, "create temp file");
    assert_text(target, "target");
    assert_text(p, "old");
    ck_assert_int_eq(unlink(tmp), 0);
    /* the temp name is a FIFO nobody reads: no hang */
    ck_assert_int_eq(mkfifo(fifotmp, 0600), 0);
    expect_fail(fifo, -ENXIO, "create temp file");
    /* the path is a directory: the rename fails, the temp file goes */
    tu_mkdir(sub);
    expect_fail(sub, -EISDIR, "rename");
    ck_assert(!exists(subtmp));
    /* bad arguments and a path too long for the temp suffix */
    ck_assert_int_eq(fileio_stage(NULL, "x", 1, 0600, NULL), -EINVAL);
    ck_assert_int_eq(fileio_stage("", "x", 1, 0600, NULL), -EINVAL);
    ck_assert_int_eq(fileio_stage(p, NULL, 1, 0600, NULL), -EINVAL);
    ck_assert_int_eq(fileio_publish(NULL, NULL), -EINVAL);
    memset(longp, 'a', PATH_MAX - 2);
    longp[PATH_MAX - 2] = '\0';
    expect_fail(longp, -ENAMETOOLONG, "create temp file");
    assert_text(p, "old");
    free(p);
    free(tmp);
    free(target);
    free(nodir);
    free(sub);
    free(subtmp);
    free(fifo);
    free(fifotmp);
}
END_TEST

START_TEST(test_read_only_dir)
{
    char *p = in_dir("state");

    if (geteuid() == 0) {
        fprintf(stderr, "test_read_only_dir: running as root, skipped\n");
        free(p);
        return;
    }
    tu_write_text(p, "old");
    ck_assert_int_eq(chmod(dir, 0500), 0);
    expect_fail(p, -EACCES, "create temp file");
    assert_text(p, "old");
    free(p);
}
END_TEST

static Suite *fileio_suite(void)
{
    Suite *s = suite_create("fileio");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_read);
    tcase_add_test(tc, test_read_refusals);
    tcase_add_test(tc, test_write_atomic);
    tcase_add_test(tc, test_two_phases);
    tcase_add_test(tc, test_crash_leftover);
    tcase_add_test(tc, test_write_failures);
    tcase_add_test(tc, test_read_only_dir);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fileio_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
