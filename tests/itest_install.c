/* lorad — tests/itest_install.c: what `make install` ships (mk/install.mk)
 * and the manual pages.
 *
 * - `make -f mk/install.mk install DESTDIR=D PREFIX=/usr` (B: the
 *   directory of $LORAD_BIN, where loradctl is built too): every expected
 *   file with its mode, /usr/local/ rewritten to /usr/ in the units and
 *   man pages, the dashboard (deploy/grafana/lorad.json, byte for byte, as
 *   usr/share/lorad/grafana/lorad.json) installed when its file exists and
 *   not when it does not (DASHBOARD= a missing file), the installed tools finding
 *   each other under their installed names; a second install keeps the
 *   operator's config; `make uninstall` leaves only /etc/lorad/lorad.json.
 * - man/loradctl.1, man/lorad.8 and man/lorad-sync.8: `groff -man -ww -z`
 *   prints no warning,
 *   and each has the sections an operator looks for.
 *
 * A missing tool (make, groff) prints "SKIP: ..." and the test passes:
 * Check has no skip. Sources are found relative to $LORAD_SRCDIR (default:
 * the current directory, the repository root under `make check`).
 */
#include <check.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itestutil.h"

struct inst_file {
    const char *path; /* under DESTDIR, PREFIX=/usr */
    mode_t mode;
};

static const struct inst_file inst_files[] = {
    {"usr/bin/lorad", 0755},
    {"usr/bin/loradctl", 0755},
    {"usr/bin/lorad-sync", 0755},
    {"usr/bin/lorad-canary-rollout", 0755},
    {"usr/bin/lorad-fleet-rollout", 0755},
    {"usr/bin/lorad-update", 0755},
    {"usr/lib/systemd/system/lorad.service", 0644},
    {"usr/lib/systemd/system/lorad.socket", 0644},
    {"usr/lib/systemd/system/lorad@.service", 0644},
    {"usr/lib/systemd/system/lorad-update@.service", 0644},
    {"usr/lib/systemd/system/lorad-update@.timer", 0644},
    {"usr/lib/systemd/system/lorad-sync@.service", 0644},
    {"usr/share/man/man1/loradctl.1", 0644},
    {"usr/share/man/man8/lorad.8", 0644},
    {"usr/share/man/man8/lorad-sync.8", 0644},
    {"usr/share/doc/lorad/README.md", 0644},
    {"usr/share/doc/lorad/update.conf.example", 0644},
    {"etc/lorad/lorad.json", 0644},
};
#define INST_NFILES (sizeof(inst_files) / sizeof(inst_files[0]))
#define INST_DASHBOARD "usr/share/lorad/grafana/lorad.json"

static const char *srcdir(void)
{
    const char *s = getenv("LORAD_SRCDIR");
    return s && *s ? s : ".";
}

/* Whether `tool` runs (found on $PATH by /usr/bin/env). */
static bool have_tool(const char *tool)
{
    char *argv[] = {"/bin/sh", "-c", "command -v \"$0\" >/dev/null", (char *)tool, NULL};
    return itu_run(argv, NULL) == 0;
}

static char *read_text(const char *path)
{
    size_t len = 0;
    char *t = (char *)tu_read_file(path, &len);
    t[len] = '\0';
    return t;
}

/* make -C SRCDIR -f mk/install.mk B=... DESTDIR=... PREFIX=/usr [DASHBOARD=...] TARGET
 * (dashboard NULL: the Makefile's default, deploy/grafana/lorad.json) */
static void run_make(const char *dest, const char *dashboard, const char *target)
{
    const char *bin = itu_lorad_bin();
    char *abs = realpath(bin, NULL), *out = NULL;
    char barg[PATH_MAX + 8], darg[PATH_MAX + 16], dash[PATH_MAX + 16];
    int rc;
    ck_assert_msg(abs != NULL, "the daemon binary %s is missing: set LORAD_BIN", bin);
    *strrchr(abs, '/') = '\0';
    snprintf(barg, sizeof(barg), "B=%s", abs);
    snprintf(darg, sizeof(darg), "DESTDIR=%s", dest);
    snprintf(dash, sizeof(dash), "DASHBOARD=%s", dashboard ? dashboard : "");
    char *argv[] = {"/usr/bin/env",
                    "make",
                    "--no-print-directory",
                    "-C",
                    (char *)srcdir(),
                    "-f",
                    "mk/install.mk",
                    barg,
                    darg,
                    "PREFIX=/usr",
                    dashboard ? dash : (char *)target,
                    dashboard ? (char *)target : NULL,
                    NULL};
    rc = itu_run(argv, &out);
    ck_assert_msg(rc == 0, "make %s exited %d:\n%s", target, rc, out);
    free(out);
    free(abs);
}

static void expect_file(const char *dest, const char *rel, mode_t mode)
{
    char *p = tu_path(dest, rel);
    struct stat st;
    ck_assert_msg(stat(p, &st) == 0, "%s not installed", rel);
    ck_assert_msg(S_ISREG(st.st_mode), "%s is not a regular file", rel);
    ck_assert_msg((st.st_mode & 07777) == mode, "%s: mode %04o, expected %04o", rel,
                  (unsigned)(st.st_mode & 07777), (unsigned)mode);
    free(p);
}

/* The installed units and man pages name the installed paths. */
static void expect_rewritten(const char *dest)
{
    static const char *const want[][2] = {
        {"usr/lib/systemd/system/lorad.service",
         "\nExecStart=/usr/bin/lorad --config /etc/lorad/lorad.json\n"},
        {"usr/lib/systemd/system/lorad@.service",
         "\nExecStart=/usr/bin/lorad --config /etc/lorad/%i.json\n"},
        {"usr/lib/systemd/system/lorad-update@.service",
         "\nExecStart=/usr/bin/lorad-update --slot %i $LORAD_UPDATE_OPTS\n"},
        {"usr/lib/systemd/system/lorad-update@.timer",
         "\nDocumentation=file:/usr/share/doc/lorad/README.md\n"},
        {"usr/lib/systemd/system/lorad.socket",
         "\nDocumentation=file:/usr/share/doc/lorad/README.md\n"},
        {"usr/share/man/man8/lorad.8", "/usr/share/doc/lorad/README.md"},
        {"usr/share/man/man8/lorad-sync.8", "/usr/share/doc/lorad/README.md"},
        {"usr/lib/systemd/system/lorad-sync@.service",
         "\nExecStart=/usr/bin/lorad-sync --config /etc/lorad/sync-%i.json\n"},
        {"usr/share/man/man1/loradctl.1", "/usr/share/doc/lorad/README.md"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char *p = tu_path(dest, want[i][0]), *t = read_text(p);
        ck_assert_msg(strstr(t, "/usr/local") == NULL, "%s still names /usr/local", want[i][0]);
        ck_assert_msg(strstr(t, want[i][1]) != NULL, "%s lacks %s", want[i][0], want[i][1]);
        free(t);
        free(p);
    }
}

/* The installed tools run, and find their siblings by installed names. */
static void expect_tools_run(const char *dest)
{
    char *ctl = tu_path(dest, "usr/bin/loradctl"), *upd = tu_path(dest, "usr/bin/lorad-update");
    char *empty = tu_path(dest, "empty"), *out = NULL;
    int rc;
    tu_mkdir(empty);
    {
        char *argv[] = {ctl, "--version", NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 0 && strcmp(out, "loradctl 0.1.0\n") == 0, "loradctl: %d %s", rc, out);
        free(out);
    }
    {
        char *sync = tu_path(dest, "usr/bin/lorad-sync");
        char *argv[] = {sync, "--version", NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 0 && strcmp(out, "lorad-sync 0.1.0\n") == 0, "lorad-sync: %d %s", rc,
                      out);
        free(out);
        free(sync);
    }
    {
        /* gets past finding lorad-canary-rollout, stops at the empty dir */
        char *argv[] = {upd,   "--url", "http://127.0.0.1:1", "--adapter-dir", empty, "--pattern",
                        "x-*", NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 64 && strstr(out, "no adapter directory in") != NULL,
                      "installed lorad-update: exit %d:\n%s", rc, out);
        free(out);
    }
    rmdir(empty);
    free(empty);
    free(upd);
    free(ctl);
}

/* Every regular file under `dir` (relative to `root`) appended to list. */
static void walk(const char *root, const char *dir, char *list, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    ck_assert_msg(d != NULL, "opendir %s", dir);
    while ((e = readdir(d)) != NULL) {
        char *p;
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        p = tu_path(dir, e->d_name);
        ck_assert_int_eq(lstat(p, &st), 0);
        if (S_ISDIR(st.st_mode))
            walk(root, p, list, cap);
        else
            snprintf(list + strlen(list), cap - strlen(list), "%s\n", p + strlen(root) + 1);
        free(p);
    }
    closedir(d);
}

START_TEST(test_install_uninstall)
{
    char *dest, *none, *p, *text, *want, *src;
    size_t wlen = 0, glen = 0;
    char files[4096] = "";
    if (!have_tool("make")) {
        printf("SKIP: test_install_uninstall: make is not installed; make install was not "
               "tested\n");
        return;
    }
    dest = tu_mkdtemp();
    none = tu_path(dest, "no-dashboard.json");
    run_make(dest, none, "install");
    for (size_t i = 0; i < INST_NFILES; i++)
        expect_file(dest, inst_files[i].path, inst_files[i].mode);
    p = tu_path(dest, INST_DASHBOARD);
    ck_assert_msg(access(p, F_OK) != 0, "a dashboard was installed from a missing file");
    free(p);
    expect_rewritten(dest);
    expect_tools_run(dest);
    p = tu_path(dest, "usr/bin/lorad-mkdemo");
    ck_assert_msg(access(p, F_OK) != 0, "lorad-mkdemo is installed (a development tool)");
    free(p);
    /* the default config names the state directory the unit creates */
    p = tu_path(dest, "etc/lorad/lorad.json");
    text = read_text(p);
    ck_assert(strstr(text, "\"state_file\": \"/var/lib/lorad/state.json\"") != NULL);
    free(text);
    /* a second install (now with the tree's dashboard) keeps the operator's
     * config and installs deploy/grafana/lorad.json as it is */
    tu_write_text(p, "{\"listen\": \"127.0.0.1:9999\"}\n");
    run_make(dest, NULL, "install");
    expect_file(dest, INST_DASHBOARD, 0644);
    src = tu_path(srcdir(), "deploy/grafana/lorad.json");
    want = (char *)tu_read_file(src, &wlen);
    free(src);
    src = tu_path(dest, INST_DASHBOARD);
    text = (char *)tu_read_file(src, &glen);
    ck_assert_msg(wlen == glen && memcmp(want, text, wlen) == 0,
                  "%s differs from deploy/grafana/lorad.json", INST_DASHBOARD);
    free(text);
    free(want);
    free(src);
    text = read_text(p);
    ck_assert_str_eq(text, "{\"listen\": \"127.0.0.1:9999\"}\n");
    free(text);
    free(p);
    /* uninstall: only the config is left */
    run_make(dest, NULL, "uninstall");
    walk(dest, dest, files, sizeof(files));
    ck_assert_msg(strcmp(files, "etc/lorad/lorad.json\n") == 0, "after make uninstall:\n%s", files);
    p = tu_path(dest, "usr/share/lorad");
    ck_assert_msg(access(p, F_OK) != 0, "usr/share/lorad was left behind");
    free(p);
    p = tu_path(dest, "usr/share/doc/lorad");
    ck_assert_msg(access(p, F_OK) != 0, "usr/share/doc/lorad was left behind");
    free(p);
    tu_rmrf(dest);
    free(none);
    free(dest);
}
END_TEST

static void check_man(const char *name, const char *const *sections, size_t n)
{
    char *dir = tu_path(srcdir(), "man"), *page = tu_path(dir, name), *text, *out = NULL;
    int rc;
    text = read_text(page);
    for (size_t i = 0; i < n; i++) {
        char want[64];
        snprintf(want, sizeof(want), "\n.SH %s\n", sections[i]);
        ck_assert_msg(strstr(text, want) != NULL, "%s: no section %s", name, sections[i]);
    }
    free(text);
    if (!have_tool("groff")) {
        printf("SKIP: man page %s: groff is not installed (Debian package groff-base); not "
               "checked for warnings\n",
               name);
    } else {
        char *argv[] = {"/usr/bin/env", "groff", "-man", "-ww", "-z", page, NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 0 && out[0] == '\0', "groff -man -ww -z %s: exit %d:\n%s", name, rc,
                      out);
        printf("groff -man -ww -z man/%s: no warning\n", name);
        free(out);
    }
    free(page);
    free(dir);
}

START_TEST(test_man_pages)
{
    static const char *const ctl[] = {"NAME",  "SYNOPSIS",    "DESCRIPTION", "OPTIONS", "COMMANDS",
                                      "FILES", "EXIT STATUS", "EXAMPLES",    "SEE ALSO"};
    static const char *const daemon[] = {"NAME",        "SYNOPSIS", "DESCRIPTION",
                                         "OPTIONS",     "SIGNALS",  "FILES",
                                         "EXIT STATUS", "EXAMPLES", "SEE ALSO"};
    check_man("loradctl.1", ctl, sizeof(ctl) / sizeof(ctl[0]));
    check_man("lorad.8", daemon, sizeof(daemon) / sizeof(daemon[0]));
    check_man("lorad-sync.8", daemon, sizeof(daemon) / sizeof(daemon[0]));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("itest_install");
    TCase *tc = tcase_create("install");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_install_uninstall);
    tcase_add_test(tc, test_man_pages);
    suite_add_tcase(s, tc);
    return itu_run_suite(s) ? 1 : 0;
}
