/* lorad — tests/test_confine.c: unit tests of lib/confine.c, the open(2)
 * confined beneath a directory.
 *
 * "direct": confine_open() on a scratch tree, with openat2 and, in a
 * forked child whose seccomp filter answers ENOSYS for openat2, through
 * the O_NOFOLLOW walk: relative links inside (followed by openat2, refused
 * by the walk), links leaving the directory, absolute links (even ones
 * pointing inside), "..", chains, missing and non-directory components.
 * "staging": the same rules as staging reports them (forbidden_name naming
 * the file), with the adapters of tests/adfixture: names, directory and
 * file links, Hugging Face cache layouts, and staging without openat2. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/adapter.h"
#include "../lib/confine.h"
#include "../lib/snapshot.h"
#include "adfixture.h"
#include "testutil.h"

/* ---- confine_open on a scratch tree ---- */

static char *root, *base;
static int basefd = -1;

/* root/base: f ("x"), d/g ("g"), and the links below; root/outside/file. */
static void tree_setup(void)
{
    char *p, *abs_f;

    root = tu_mkdtemp();
    base = tu_path(root, "base");
    tu_mkdir(base);
    p = tu_path(root, "outside");
    tu_mkdir(p);
    free(p);
    p = tu_path(root, "outside/file");
    tu_write_text(p, "out");
    free(p);
    basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(basefd, 0);
    ck_assert_int_eq(mkdirat(basefd, "d", 0755), 0);
    p = tu_path(base, "f");
    tu_write_text(p, "x");
    free(p);
    p = tu_path(base, "d/g");
    tu_write_text(p, "g");
    free(p);
    abs_f = tu_path(base, "f");
    ck_assert_int_eq(symlinkat("f", basefd, "in"), 0);
    ck_assert_int_eq(symlinkat("d", basefd, "din"), 0);
    ck_assert_int_eq(symlinkat("../f", basefd, "d/back"), 0);
    ck_assert_int_eq(symlinkat("in", basefd, "chain"), 0);
    ck_assert_int_eq(symlinkat("../outside/file", basefd, "up"), 0);
    ck_assert_int_eq(symlinkat("up", basefd, "chainout"), 0);
    ck_assert_int_eq(symlinkat("../base/f", basefd, "reenter"), 0);
    ck_assert_int_eq(symlinkat(abs_f, basefd, "abs"), 0);
    ck_assert_int_eq(symlinkat("nope", basefd, "dangling"), 0);
    free(abs_f);
}

static void tree_teardown(void)
{
    close(basefd);
    basefd = -1;
    tu_rmrf(root);
    free(root);
    free(base);
}

/* The first byte of what confine_open(path) opened, or -errno. */
static int first_byte(const char *path)
{
    char c;
    int fd = confine_open(basefd, path, O_RDONLY), rc;

    if (fd < 0)
        return fd;
    rc = read(fd, &c, 1) == 1 ? (unsigned char)c : -EIO;
    close(fd);
    return rc;
}

START_TEST(test_escaped)
{
    ck_assert(confine_escaped(EXDEV));
    ck_assert(confine_escaped(ELOOP));
    ck_assert(!confine_escaped(ENOENT));
    ck_assert(!confine_escaped(ENOTDIR));
    ck_assert(!confine_escaped(EACCES));
    ck_assert(!confine_escaped(0));
}
END_TEST

/* The directory a (possibly linked) name leads to, named by its own path. */
START_TEST(test_relpath)
{
    char rel[256];
    int fd = confine_open(basefd, "din", O_RDONLY | O_DIRECTORY);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(confine_relpath(basefd, fd, rel, sizeof(rel)), 0);
    ck_assert_str_eq(rel, "d"); /* the link "din" resolved: no link in it */
    ck_assert_int_eq(confine_relpath(basefd, fd, rel, 1), -ENAMETOOLONG);
    close(fd);
    /* the base itself is not beneath itself */
    ck_assert_int_eq(confine_relpath(basefd, basefd, rel, sizeof(rel)), -EXDEV);
    /* a directory outside */
    fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(confine_relpath(basefd, fd, rel, sizeof(rel)), -EXDEV);
    close(fd);
    /* a sibling whose name starts with the base's: not beneath it */
    char *sib = tu_path(root, "base2");
    tu_mkdir(sib);
    fd = open(sib, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(confine_relpath(basefd, fd, rel, sizeof(rel)), -EXDEV);
    close(fd);
    free(sib);
}
END_TEST

START_TEST(test_openat2_rules)
{
    static const struct {
        const char *path;
        int want; /* first byte, or -errno */
    } cases[] = {
        {"f", 'x'},
        {"d/g", 'g'},
        {"in", 'x'},     /* a relative link inside */
        {"din/g", 'g'},  /* through a directory link inside */
        {"d/back", 'x'}, /* ".." in a link, staying inside */
        {"chain", 'x'},  /* a link to a link inside */
        {"d/../f", 'x'}, /* ".." in the path, staying inside */
        {"up", -EXDEV},  /* a link leaving */
        {"chainout", -EXDEV},
        {"reenter", -EXDEV}, /* leaves and comes back: refused on the way */
        {"abs", -EXDEV},     /* absolute, even pointing inside */
        {"../outside/file", -EXDEV},
        {"d/../../outside/file", -EXDEV},
        {"/etc/passwd", -EXDEV},
        {"nope", -ENOENT},
        {"dangling", -ENOENT},
        {"d/nope", -ENOENT},
        {"f/x", -ENOTDIR},
    };
    int fd;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = first_byte(cases[i].path);
        ck_assert_msg(got == cases[i].want, "%s: got %d, want %d", cases[i].path, got,
                      cases[i].want);
    }
    ck_assert_int_eq(confine_open(basefd, "f", O_RDONLY | O_DIRECTORY), -ENOTDIR);
    ck_assert_int_eq(confine_open(basefd, NULL, O_RDONLY), -EINVAL);
    /* a directory, and the fd is close-on-exec */
    fd = confine_open(basefd, "din", O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(fd, 0);
    ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
}
END_TEST

/* Makes openat2 fail with ENOSYS in this process, as on a kernel before 5.6
 * or under a seccomp policy that does not know it. */
static bool deny_openat2(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(f) / sizeof(f[0])), f};

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return false;
    return syscall(SYS_openat2, AT_FDCWD, ".", NULL, 0) < 0 && errno == ENOSYS;
}

/* The child of test_no_openat2: 0, or the number of the failed check. */

/* The child of test_walk_rules: 0, or 1 + the index of the failed check
 * (1: seccomp unavailable). */
static int walk_checks(void)
{
    static const struct {
        const char *path;
        int want;
    } cases[] = {
        {"f", 'x'},         {"d/g", 'g'},
        {"in", -EXDEV}, /* every link is refused, even one inside */
        {"din/g", -EXDEV},  {"d/back", -EXDEV},
        {"chain", -EXDEV},  {"up", -EXDEV},
        {"abs", -EXDEV},    {"dangling", -EXDEV},
        {"./f", -EXDEV}, /* ".", "..", empty components, absolute paths */
        {"d/../f", -EXDEV}, {"../outside/file", -EXDEV},
        {"d//g", -EXDEV},   {"/etc/passwd", -EXDEV},
        {"nope", -ENOENT},  {"d/nope", -ENOENT},
        {"f/x", -ENOTDIR},
    };
    char longname[NAME_MAX + 2];

    if (!deny_openat2())
        return 1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = first_byte(cases[i].path);
        if (got != cases[i].want) {
            fprintf(stderr, "walk: %s: got %d, want %d\n", cases[i].path, got, cases[i].want);
            return (int)i + 2;
        }
    }
    /* O_DIRECTORY on a link fails with ENOTDIR in open(2): still a link */
    if (confine_open(basefd, "din", O_RDONLY | O_DIRECTORY) != -EXDEV)
        return 100;
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    if (confine_open(basefd, longname, O_RDONLY) != -ENAMETOOLONG)
        return 101;
    return 0;
}

START_TEST(test_walk_rules)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(walk_checks());
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "without openat2: check %d failed (1: seccomp unavailable; status %#x)",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
}
END_TEST

/* ---- as staging reports it ---- */

START_TEST(test_forbidden_names)
{
    char long_bad[130], *p, *q, *outside;
    struct af_adapter a;

    memset(long_bad, 'a', 129);
    long_bad[129] = 0;
    af_simple("ok", NULL, 2, 4, 1);
    af_expect_err("..", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    af_expect_err("/abs", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    af_expect_err("/tmp", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    af_expect_err("a/b", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    af_expect_err("ok/..", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    af_expect_err(".hidden", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);
    af_expect_err(long_bad, NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);

    /* a directory symlink leaving adapter_dir */
    outside = tu_path(AF.root, "outside");
    tu_mkdir(outside);
    af_init(&a, "x", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    p = tu_path(outside, "adapter_config.json");
    tu_write_text(p, "%s", a.cfg);
    free(p);
    p = tu_path(outside, "adapter_model.safetensors");
    tu_write_safetensors(p, a.t, a.n);
    free(p);
    af_free(&a);
    p = tu_path(AF.adir, "escape");
    ck_assert_int_eq(symlink(outside, p), 0);
    free(p);
    af_expect_err("escape", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "outside", NULL);
    p = tu_path(AF.adir, "escape2");
    ck_assert_int_eq(symlink("../outside", p), 0);
    free(p);
    af_expect_err("escape2", NULL, NULL, LORAD_E_FORBIDDEN_NAME, NULL);

    /* a directory symlink staying inside is fine */
    p = tu_path(AF.adir, "alias");
    ck_assert_int_eq(symlink("ok", p), 0);
    free(p);
    struct snapshot *s = af_expect_ok("alias", NULL, NULL, NULL);
    ck_assert_str_eq(s->name, "alias");
    snapshot_free(&s);

    /* file symlinks inside an adapter directory pointing outside */
    af_simple("fsym", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "fsym/adapter_model.safetensors");
    q = tu_path(outside, "adapter_model.safetensors");
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(symlink(q, p), 0);
    free(p);
    free(q);
    af_expect_err("fsym", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    af_simple("csym", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "csym/adapter_config.json");
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(symlink("../../outside/adapter_config.json", p), 0);
    free(p);
    af_expect_err("csym", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_config.json", NULL);
    /* an absolute target is refused even when it points inside adapter_dir
     * (openat2 cannot confine it), and so is a relative one that leaves
     * adapter_dir and comes back */
    af_simple("absin", NULL, 2, 4, 1);
    p = tu_path(AF.adir, "ok/adapter_model.safetensors");
    af_relink("absin/adapter_model.safetensors", p);
    free(p);
    af_expect_err("absin", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    af_simple("reenter", NULL, 2, 4, 1);
    af_relink("reenter/adapter_config.json", "../../adapters/ok/adapter_config.json");
    af_expect_err("reenter", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_config.json", NULL);
    /* a chain of links that starts inside and ends outside, and a link
     * through a directory symlink that escapes */
    ck_assert_int_eq(mkdirat(AF.adirfd, "blobs", 0755), 0);
    af_relink("blobs/evil", "../../outside/adapter_model.safetensors");
    af_simple("chain", NULL, 2, 4, 1);
    af_relink("chain/adapter_model.safetensors", "../blobs/evil");
    af_expect_err("chain", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    af_simple("via", NULL, 2, 4, 1);
    af_relink("via/adapter_model.safetensors", "../escape/adapter_model.safetensors");
    af_expect_err("via", NULL, NULL, LORAD_E_FORBIDDEN_NAME, "adapter_model.safetensors", NULL);
    free(outside);
}
END_TEST

static void assert_same_snapshot(const struct snapshot *x, const struct snapshot *y)
{
    ck_assert_str_eq(x->sha256, y->sha256);
    ck_assert_int_eq(x->rank, y->rank);
    ck_assert(x->lora_alpha == y->lora_alpha);
    ck_assert_uint_eq(x->nlayers, y->nlayers);
    for (size_t l = 0; l < x->nlayers; l++) {
        const struct snapshot_lora *a = x->layers[l].lora, *b = y->layers[l].lora;
        ck_assert_int_eq(a != NULL, b != NULL);
        ck_assert(!x->layers[l].weight && !y->layers[l].weight);
        if (!a)
            continue;
        ck_assert_int_eq(a->rank, b->rank);
        ck_assert(a->scaling == b->scaling);
        ck_assert(memcmp(a->A, b->A, sizeof(float) * (size_t)a->rank * (size_t)AF_IN[l]) == 0);
        ck_assert(memcmp(a->B, b->B, sizeof(float) * (size_t)a->rank * (size_t)AF_OUT[l]) == 0);
    }
}

/* Stages `name` and `plain` and checks both give the same values. */
static void expect_same_as(const char *name, const char *plain)
{
    struct snapshot *s = af_expect_ok(name, NULL, NULL, NULL);
    struct snapshot *ref = af_expect_ok(plain, NULL, NULL, NULL);

    ck_assert_str_eq(s->name, name);
    assert_same_snapshot(s, ref);
    snapshot_free(&s);
    snapshot_free(&ref);
}

/* Writes the config and weights of `a` as dir/cfg and dir/st (dir relative
 * to adapter_dir, existing). */
static void write_files_as(const struct af_adapter *a, const char *dir, const char *cfg,
                           const char *st)
{
    char *d = tu_path(AF.adir, dir), *p;

    p = tu_path(d, cfg);
    tu_write_text(p, "%s", a->cfg);
    free(p);
    p = tu_path(d, st);
    tu_write_safetensors(p, a->t, a->n);
    free(p);
    free(d);
}

START_TEST(test_symlinks_inside)
{
    static const char *const dirs[] = {"hf", "models--org--x", "models--org--x/blobs",
                                       "models--org--x/snapshots", "models--org--x/snapshots/rev1"};
    struct af_adapter a;

    /* the audit's case: an adapter whose weights are a sibling's file */
    af_simple("ok", NULL, 2, 4, 5);
    af_simple("sib", NULL, 2, 4, 5);
    af_relink("sib/adapter_model.safetensors", "../ok/adapter_model.safetensors");
    expect_same_as("sib", "ok");

    /* Hugging Face cache layouts: the files are links into a blobs
     * directory, NAME itself a link to a snapshot directory */
    af_init(&a, "hfplain", NULL, 2, 4);
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    af_ab(&a, 2, 2, "F32", NULL, NULL);
    free(af_write(&a));
    ck_assert_int_eq(mkdirat(AF.adirfd, "blobs", 0755), 0);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        ck_assert_int_eq(mkdirat(AF.adirfd, dirs[i], 0755), 0);
    write_files_as(&a, "blobs", "cfg", "st");
    write_files_as(&a, "models--org--x/blobs", "0a1b", "2c3d");
    af_free(&a);
    af_relink("hf/adapter_config.json", "../blobs/cfg");
    af_relink("hf/adapter_model.safetensors", "../blobs/st");
    expect_same_as("hf", "hfplain");
    af_relink("models--org--x/snapshots/rev1/adapter_config.json", "../../blobs/0a1b");
    af_relink("models--org--x/snapshots/rev1/adapter_model.safetensors", "../../blobs/2c3d");
    af_relink("hfsnap", "models--org--x/snapshots/rev1");
    expect_same_as("hfsnap", "hfplain");
    /* a pickle-only adapter is recognised through a link too */
    ck_assert_int_eq(mkdirat(AF.adirfd, "pkl", 0755), 0);
    af_relink("pkl/adapter_config.json", "../blobs/cfg");
    af_relink("pkl/adapter_model.bin", "../blobs/st");
    af_expect_err("pkl", NULL, NULL, LORAD_E_INVALID_ADAPTER, "adapter_model.bin", "pickle", NULL);
}
END_TEST

static int no_openat2_checks(void)
{
    static const struct {
        const char *name;
        int code;
    } want[] = {{"plain", 0},
                {"alias", LORAD_E_FORBIDDEN_NAME},
                {"fsib", LORAD_E_FORBIDDEN_NAME},
                {"nocfg", LORAD_E_INVALID_ADAPTER},
                {"nope", LORAD_E_ADAPTER_NOT_FOUND}};
    struct snapshot *snap = NULL;
    struct profile *pout = NULL;
    struct lorad_error err;

    if (!deny_openat2())
        return 1;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int rc = af_stage(want[i].name, NULL, NULL, &snap, &pout, &err);
        snapshot_free(&snap);
        profile_free(&pout);
        if (rc != want[i].code) {
            fprintf(stderr, "without openat2: %s: got %s (%s)\n", want[i].name, lorad_err_name(rc),
                    err.msg);
            return (int)i + 2;
        }
    }
    return 0;
}

START_TEST(test_no_openat2)
{
    struct af_adapter a;
    pid_t pid;
    int status;

    af_simple("plain", NULL, 2, 4, 5);
    af_relink("alias", "plain");
    af_simple("fsib", NULL, 2, 4, 5);
    af_relink("fsib/adapter_model.safetensors", "../plain/adapter_model.safetensors");
    af_init(&a, "nocfg", NULL, 2, 4);
    a.no_cfg = true;
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    free(af_write(&a));
    af_free(&a);
    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(no_openat2_checks());
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "without openat2: check %d failed (1: seccomp unavailable; status %#x)",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
}
END_TEST

static Suite *confine_suite(void)
{
    Suite *s = suite_create("confine");
    TCase *direct = tcase_create("direct"), *staging = tcase_create("staging");

    tcase_add_checked_fixture(direct, tree_setup, tree_teardown);
    tcase_add_test(direct, test_escaped);
    tcase_add_test(direct, test_relpath);
    tcase_add_test(direct, test_openat2_rules);
    tcase_add_test(direct, test_walk_rules);
    suite_add_tcase(s, direct);
    tcase_set_timeout(staging, 60);
    tcase_add_checked_fixture(staging, af_setup, af_teardown);
    tcase_add_test(staging, test_forbidden_names);
    tcase_add_test(staging, test_symlinks_inside);
    tcase_add_test(staging, test_no_openat2);
    suite_add_tcase(s, staging);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(confine_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
