/* lorad — tests/itest_units.c: checks the systemd units, the install rules
 * and the canary script as operators will use them.
 *
 * - `systemd-analyze verify` on lorad.service, lorad.socket and
 *   lorad@.service, each rewritten into a temp dir with ExecStart naming
 *   the built daemon ($LORAD_BIN, else build/lorad): exit 0 and no output
 *   line about them.
 * - `systemd-analyze security --offline=yes lorad.service`: the overall
 *   exposure level is at most 2.0.
 * - the directives the daemon relies on (SPEC.md 8) are in the units.
 * - `make -f mk/install.mk install DESTDIR=...` puts the binary, the units
 *   (ExecStart rewritten to the prefix) and the default config in place and
 *   keeps an existing config.
 * - shellcheck on scripts/canary-rollout.sh and its usage errors.
 *
 * A missing tool (systemd-analyze, make, shellcheck) prints "SKIP: ..." and
 * the test passes: Check has no skip. Sources are found relative to
 * $LORAD_SRCDIR (default: the current directory, the repository root under
 * `make check`).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static const char *const ut_units[] = {"lorad.service", "lorad.socket", "lorad@.service"};
#define UT_NUNITS (sizeof(ut_units) / sizeof(ut_units[0]))

static const char *ut_srcdir(void)
{
    const char *s = getenv("LORAD_SRCDIR");
    return s && *s ? s : ".";
}

/* Absolute path of the daemon binary (malloc'd), or NULL when it is absent. */
static char *ut_lorad_bin(void)
{
    const char *b = getenv("LORAD_BIN");
    char *p = tu_path(ut_srcdir(), "build/lorad");
    char *abs = realpath(b && *b ? b : p, NULL);
    free(p);
    if (abs && access(abs, X_OK) != 0) {
        free(abs);
        return NULL;
    }
    return abs;
}

/* Whether `tool` is an executable on $PATH. */
static bool ut_have_tool(const char *tool)
{
    const char *path = getenv("PATH");
    char *copy, *dir, *save = NULL;
    bool found = false;
    if (!path)
        path = "/usr/bin:/bin";
    copy = strdup(path);
    ck_assert_ptr_nonnull(copy);
    for (dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char *f = tu_path(*dir ? dir : ".", tool);
        found = access(f, X_OK) == 0;
        free(f);
    }
    free(copy);
    return found;
}

/* Runs argv in `cwd` (NULL: here) with stdout and stderr captured into
 * *out (malloc'd, NUL-terminated). Returns the exit status, or -1 when the
 * command did not exit normally. */
static int ut_run(char *const argv[], const char *cwd, char **out)
{
    char *dir = tu_mkdtemp();
    char *log = tu_path(dir, "out");
    size_t len = 0;
    int status = 0;
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        close(fd);
        if (cwd && chdir(cwd) != 0)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    *out = (char *)tu_read_file(log, &len);
    (*out)[len] = '\0';
    tu_rmrf(dir);
    free(log);
    free(dir);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The unit's text with every "/usr/local/bin/lorad" replaced by `bin`
 * (malloc'd). */
static char *ut_rewrite(const char *text, const char *bin)
{
    static const char from[] = "/usr/local/bin/lorad";
    size_t n = 0, cap = strlen(text) + 1;
    const char *p;
    char *out;
    for (p = text; (p = strstr(p, from)) != NULL; p += sizeof(from) - 1)
        cap += strlen(bin);
    out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    for (p = text; *p;) {
        if (strncmp(p, from, sizeof(from) - 1) == 0) {
            memcpy(out + n, bin, strlen(bin));
            n += strlen(bin);
            p += sizeof(from) - 1;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

static char *ut_read_unit(const char *unit)
{
    char *dir = tu_path(ut_srcdir(), "systemd");
    char *path = tu_path(dir, unit);
    size_t len = 0;
    char *text = (char *)tu_read_file(path, &len);
    text[len] = '\0';
    free(path);
    free(dir);
    return text;
}

/* Writes every unit, rewritten for `bin`, into a fresh temp dir; returns it. */
static char *ut_stage_units(const char *bin)
{
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < UT_NUNITS; i++) {
        char *text = ut_read_unit(ut_units[i]);
        char *rw = ut_rewrite(text, bin);
        char *path = tu_path(dir, ut_units[i]);
        tu_write_file(path, rw, strlen(rw));
        free(path);
        free(rw);
        free(text);
    }
    return dir;
}

/* Count of output lines that mention lorad (the units or the binary); each
 * is printed. */
static int ut_lines_about_lorad(const char *out, const char *what)
{
    int n = 0;
    const char *line = out;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *l = strndup(line, len);
        ck_assert_ptr_nonnull(l);
        if (strstr(l, "lorad")) {
            printf("%s: %s\n", what, l);
            n++;
        }
        free(l);
        line += len + (end ? 1 : 0);
    }
    return n;
}

/* The directive line "key=..." of a unit, or NULL (points into text). */
static const char *ut_directive(const char *text, const char *key_eq)
{
    const char *p = text;
    size_t k = strlen(key_eq);
    while (p && *p) {
        if (strncmp(p, key_eq, k) == 0)
            return p + k;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return NULL;
}

static bool ut_directive_is(const char *text, const char *key_eq, const char *value)
{
    const char *v = ut_directive(text, key_eq);
    size_t n = strlen(value);
    return v && strncmp(v, value, n) == 0 && (v[n] == '\n' || v[n] == '\0');
}

START_TEST(units_verify)
{
    char *bin, *dir, *out = NULL;
    if (!ut_have_tool("systemd-analyze")) {
        printf("SKIP: units_verify: systemd-analyze is not installed (Debian package "
               "systemd); the units were not verified\n");
        return;
    }
    bin = ut_lorad_bin();
    ck_assert_msg(bin != NULL, "the daemon binary is missing: set LORAD_BIN or build build/lorad");
    ck_assert_msg(strpbrk(bin, " \t\"'\\") == NULL, "binary path with blanks or quotes: %s", bin);
    dir = ut_stage_units(bin);
    for (size_t i = 0; i < UT_NUNITS; i++) {
        char *argv[] = {"systemd-analyze", "verify", (char *)ut_units[i], NULL};
        int rc = ut_run(argv, dir, &out);
        int bad = ut_lines_about_lorad(out, ut_units[i]);
        ck_assert_msg(rc == 0, "systemd-analyze verify %s exited %d:\n%s", ut_units[i], rc, out);
        ck_assert_msg(bad == 0, "systemd-analyze verify %s complained:\n%s", ut_units[i], out);
        free(out);
    }
    tu_rmrf(dir);
    free(dir);
    free(bin);
}
END_TEST

/* The figure of the "Overall exposure level for X: 1.1 OK" line, or -1. */
static double ut_exposure(const char *out)
{
    const char *p = strstr(out, "Overall exposure level for ");
    if (!p)
        return -1;
    p = strchr(p, ':');
    if (!p)
        return -1;
    return strtod(p + 1, NULL);
}

static void ut_check_security(const char *unit)
{
    char *bin, *dir, *out = NULL;
    double level;
    int rc;
    if (!ut_have_tool("systemd-analyze")) {
        printf("SKIP: security %s: systemd-analyze is not installed (Debian package "
               "systemd); the exposure level was not measured\n", unit);
        return;
    }
    bin = ut_lorad_bin();
    ck_assert_msg(bin != NULL, "the daemon binary is missing: set LORAD_BIN or build build/lorad");
    dir = ut_stage_units(bin);
    {
        char *argv[] = {"systemd-analyze", "security", "--offline=yes", "--no-pager",
                        (char *)unit, NULL};
        rc = ut_run(argv, dir, &out);
    }
    level = ut_exposure(out);
    ck_assert_msg(level >= 0, "no \"Overall exposure level\" line (exit %d):\n%s", rc, out);
    printf("systemd-analyze security --offline=yes %s: overall exposure %.1f\n", unit, level);
    ck_assert_msg(level <= 2.0, "exposure level %.1f > 2.0:\n%s", level, out);
    ck_assert_msg(rc == 0, "systemd-analyze security exited %d:\n%s", rc, out);
    free(out);
    tu_rmrf(dir);
    free(dir);
    free(bin);
}

START_TEST(units_security)
{
    ut_check_security("lorad.service");
}
END_TEST

START_TEST(units_security_template)
{
    ut_check_security("lorad@.service");
}
END_TEST

/* What the daemon and SPEC.md 8 rely on, independent of systemd-analyze. */
START_TEST(units_contract)
{
    for (size_t i = 0; i < UT_NUNITS; i++) {
        char *t = ut_read_unit(ut_units[i]);
        bool tmpl = strchr(ut_units[i], '@') != NULL;
        const char *conf = tmpl ? "/etc/lorad/%i.json" : "/etc/lorad/lorad.json";
        char want[256];
        if (strstr(ut_units[i], ".socket")) {
            ck_assert_msg(ut_directive(t, "ListenStream=") != NULL, "lorad.socket: no ListenStream");
            ck_assert(ut_directive_is(t, "Accept=", "no"));
            ck_assert(ut_directive_is(t, "Service=", "lorad.service"));
            free(t);
            continue;
        }
        ck_assert(ut_directive_is(t, "Type=", "notify"));
        ck_assert(ut_directive_is(t, "NotifyAccess=", "main"));
        snprintf(want, sizeof(want), "/usr/local/bin/lorad --config %s", conf);
        ck_assert_msg(ut_directive_is(t, "ExecStart=", want), "%s: ExecStart is not %s",
                      ut_units[i], want);
        snprintf(want, sizeof(want), "/usr/local/bin/lorad --check-config --config %s", conf);
        ck_assert_msg(ut_directive_is(t, "ExecStartPre=", want), "%s: ExecStartPre is not %s",
                      ut_units[i], want);
        ck_assert(ut_directive_is(t, "ExecReload=", "/bin/kill -HUP $MAINPID"));
        ck_assert(ut_directive_is(t, "WatchdogSec=", "10s"));
        ck_assert(ut_directive_is(t, "Restart=", "on-failure"));
        ck_assert(ut_directive_is(t, "DynamicUser=", "yes"));
        ck_assert(ut_directive_is(t, "StateDirectory=", tmpl ? "lorad/%i" : "lorad"));
        ck_assert(ut_directive_is(t, "ConfigurationDirectory=", "lorad"));
        ck_assert(ut_directive_is(t, "MemoryDenyWriteExecute=", "yes"));
        ck_assert(ut_directive_is(t, "CapabilityBoundingSet=", ""));
        ck_assert(ut_directive_is(t, "UMask=", "0077"));
        ck_assert(ut_directive_is(t, "LimitNOFILE=", "65536"));
        /* SIGTERM drains for up to drain_timeout_ms (10 s by default). */
        {
            const char *v = ut_directive(t, "TimeoutStopSec=");
            ck_assert_ptr_nonnull(v);
            ck_assert_int_gt(atoi(v), 10);
        }
        free(t);
    }
}
END_TEST

/* make -f mk/install.mk install into a DESTDIR, twice. */
START_TEST(install_rules)
{
    char *bin, *dest, *bdir, *out = NULL, *p, *mk, *text;
    char destarg[4096], barg[4096];
    size_t len;
    int rc;
    if (!ut_have_tool("make")) {
        printf("SKIP: install_rules: make is not installed\n");
        return;
    }
    bin = ut_lorad_bin();
    ck_assert_msg(bin != NULL, "the daemon binary is missing: set LORAD_BIN or build build/lorad");
    bdir = strdup(bin);
    ck_assert_ptr_nonnull(bdir);
    *strrchr(bdir, '/') = '\0';
    dest = tu_mkdtemp();
    mk = tu_path(ut_srcdir(), "mk/install.mk");
    snprintf(destarg, sizeof(destarg), "DESTDIR=%s", dest);
    snprintf(barg, sizeof(barg), "B=%s", bdir);
    {
        char *argv[] = {"make", "--no-print-directory", "-f", mk, barg, destarg,
                        "PREFIX=/opt/lorad", "install", NULL};
        rc = ut_run(argv, ut_srcdir(), &out);
        ck_assert_msg(rc == 0, "make install exited %d:\n%s", rc, out);
        free(out);

        p = tu_path(dest, "opt/lorad/bin/lorad");
        ck_assert_msg(access(p, X_OK) == 0, "%s not installed", p);
        free(p);
        p = tu_path(dest, "opt/lorad/bin/lorad-canary-rollout");
        ck_assert_msg(access(p, X_OK) == 0, "%s not installed", p);
        free(p);
        for (size_t i = 0; i < UT_NUNITS; i++) {
            char rel[256];
            snprintf(rel, sizeof(rel), "opt/lorad/lib/systemd/system/%s", ut_units[i]);
            p = tu_path(dest, rel);
            text = (char *)tu_read_file(p, &len);
            text[len] = '\0';
            ck_assert_msg(strstr(text, "/usr/local") == NULL, "%s still names /usr/local", p);
            if (!strstr(ut_units[i], ".socket"))
                ck_assert_msg(strstr(text, "\nExecStart=/opt/lorad/bin/lorad --config ") != NULL,
                              "%s: ExecStart not rewritten", p);
            free(text);
            free(p);
        }
        /* The default config: valid enough to name the state directory. */
        p = tu_path(dest, "etc/lorad/lorad.json");
        text = (char *)tu_read_file(p, &len);
        text[len] = '\0';
        ck_assert(strstr(text, "\"state_file\": \"/var/lib/lorad/state.json\"") != NULL);
        free(text);
        /* A second install keeps the operator's config. */
        tu_write_text(p, "{\"listen\": \"127.0.0.1:9999\"}\n");
        rc = ut_run(argv, ut_srcdir(), &out);
        ck_assert_msg(rc == 0, "second make install exited %d:\n%s", rc, out);
        free(out);
        text = (char *)tu_read_file(p, &len);
        text[len] = '\0';
        ck_assert_str_eq(text, "{\"listen\": \"127.0.0.1:9999\"}\n");
        free(text);
        free(p);
    }
    tu_rmrf(dest);
    free(dest);
    free(mk);
    free(bdir);
    free(bin);
}
END_TEST

START_TEST(canary_script_lint)
{
    char *script = tu_path(ut_srcdir(), "scripts/canary-rollout.sh");
    char *out = NULL;
    int rc;
    ck_assert_msg(access(script, X_OK) == 0, "%s is not executable", script);
    if (!ut_have_tool("shellcheck")) {
        printf("SKIP: canary_script_lint: shellcheck is not installed (Debian package "
               "shellcheck); the script was not linted\n");
    } else {
        char *argv[] = {"shellcheck", "-s", "sh", script, NULL};
        rc = ut_run(argv, NULL, &out);
        ck_assert_msg(rc == 0, "shellcheck %s:\n%s", script, out);
        free(out);
    }
    {
        char *argv[] = {script, "--help", NULL};
        rc = ut_run(argv, NULL, &out);
        ck_assert_int_eq(rc, 0);
        ck_assert(strstr(out, "--max-p99-ratio") != NULL);
        free(out);
    }
    {
        char *argv[] = {script, "--url", "http://127.0.0.1:1", NULL};
        rc = ut_run(argv, NULL, &out);
        ck_assert_msg(rc == 64, "missing --adapter: exit %d:\n%s", rc, out);
        free(out);
    }
    {
        char *argv[] = {script, "--url", "http://127.0.0.1:1", "--adapter", "a",
                        "--steps", "5,1", NULL};
        rc = ut_run(argv, NULL, &out);
        ck_assert_msg(rc == 64, "decreasing steps: exit %d:\n%s", rc, out);
        free(out);
    }
    if (ut_have_tool("curl") && ut_have_tool("jq")) {
        /* Port 1 on loopback: nothing listens there. */
        char *argv[] = {script, "--url", "http://127.0.0.1:1", "--adapter", "a",
                        "--interval", "0", NULL};
        rc = ut_run(argv, NULL, &out);
        ck_assert_msg(rc == 3, "unreachable daemon: exit %d:\n%s", rc, out);
        ck_assert(strstr(out, "unreachable") != NULL);
        free(out);
    } else {
        printf("SKIP: canary_script_lint: curl or jq missing; the unreachable case was not run\n");
    }
    free(script);
}
END_TEST

static Suite *ut_suite(void)
{
    Suite *s = suite_create("units");
    TCase *tc = tcase_create("units");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, units_contract);
    tcase_add_test(tc, units_verify);
    tcase_add_test(tc, units_security);
    tcase_add_test(tc, units_security_template);
    tcase_add_test(tc, install_rules);
    tcase_add_test(tc, canary_script_lint);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ut_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
