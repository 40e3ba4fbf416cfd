/* lorad — tests/itest_units.c: checks the systemd units and the canary
 * script as operators will use them (make install: itest_install.c).
 *
 * - `systemd-analyze verify` on lorad.service, lorad.socket,
 *   lorad@.service, lorad-update@.service, lorad-update@.timer and
 *   lorad-sync@.service, each rewritten into a temp dir with ExecStart
 *   naming the built daemon ($LORAD_BIN, else build/lorad; lorad-sync
 *   beside it) and scripts/lorad-update.sh: exit 0 and no output line
 *   about them.
 * - `systemd-analyze security --offline=yes` on lorad.service,
 *   lorad@.service, lorad-update@.service and lorad-sync@.service: the
 *   overall exposure level is at most 2.0.
 * - the directives the daemon relies on (SPEC.md 8) are in the units,
 *   those of the scheduled updates (SPEC.md 11) in lorad-update@.*, and
 *   those of the fleet agent (SPEC.md 12) in lorad-sync@.service.
 * - shellcheck on every script (scripts/NAME.sh).
 * - canary-rollout.sh's usage errors; then the
 *   script against the real daemon serving the demo (build/lorad-mkdemo):
 *   demo-b passes every gate and is promoted (exit 0), demo-overflow fails
 *   the --probe gate and is rolled back (exit 1), bad-rank is refused by
 *   /swap (exit 2). --interval 0 and the probe gate: nothing depends on
 *   timing.
 *
 * A missing tool (systemd-analyze, shellcheck, curl, jq) prints "SKIP: ..." and
 * the test passes: Check has no skip. Sources are found relative to
 * $LORAD_SRCDIR (default: the current directory, the repository root under
 * `make check`).
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static const char *const ut_units[] = {"lorad.service",       "lorad.socket",
                                       "lorad@.service",      "lorad-update@.service",
                                       "lorad-update@.timer", "lorad-sync@.service"};
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

/* `text` with every `from` replaced by `to` (malloc'd). */
static char *ut_replace(const char *text, const char *from, const char *to)
{
    size_t n = 0, cap = strlen(text) + 1, flen = strlen(from), tlen = strlen(to);
    const char *p;
    char *out;
    for (p = text; (p = strstr(p, from)) != NULL; p += flen)
        cap += tlen;
    out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    for (p = text; *p;) {
        if (strncmp(p, from, flen) == 0) {
            memcpy(out + n, to, tlen);
            n += tlen;
            p += flen;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

/* The unit's text with /usr/local/bin/lorad-update naming the script in
 * the source tree and /usr/local/bin/lorad naming `bin` (malloc'd). */
static char *ut_rewrite(const char *text, const char *bin)
{
    char *script = tu_path(ut_srcdir(), "scripts/lorad-update.sh");
    char *abs = realpath(script, NULL);
    char *step, *out;
    ck_assert_msg(abs != NULL, "%s is missing", script);
    step = ut_replace(text, "/usr/local/bin/lorad-update", abs);
    out = ut_replace(step, "/usr/local/bin/lorad", bin);
    free(step);
    free(abs);
    free(script);
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
               "systemd); the exposure level was not measured\n",
               unit);
        return;
    }
    bin = ut_lorad_bin();
    ck_assert_msg(bin != NULL, "the daemon binary is missing: set LORAD_BIN or build build/lorad");
    dir = ut_stage_units(bin);
    {
        char *argv[] = {"systemd-analyze", "security",   "--offline=yes",
                        "--no-pager",      (char *)unit, NULL};
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

START_TEST(units_security_update)
{
    ut_check_security("lorad-update@.service");
}
END_TEST

START_TEST(units_security_sync)
{
    ut_check_security("lorad-sync@.service");
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
        if (strncmp(ut_units[i], "lorad-update@", 13) == 0 ||
            strncmp(ut_units[i], "lorad-sync@", 11) == 0) {
            free(t); /* units_update_contract, units_sync_contract */
            continue;
        }
        if (strstr(ut_units[i], ".socket")) {
            ck_assert_msg(ut_directive(t, "ListenStream=") != NULL,
                          "lorad.socket: no ListenStream");
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

/* The scheduled updates (SPEC.md 11): a daily timer per slot, a hardened
 * oneshot service running lorad-update for slot %i. */
START_TEST(units_update_contract)
{
    char *t = ut_read_unit("lorad-update@.timer");
    ck_assert(ut_directive_is(t, "OnCalendar=", "daily"));
    ck_assert_msg(ut_directive(t, "RandomizedDelaySec=") != NULL, "timer: no RandomizedDelaySec");
    ck_assert(ut_directive_is(t, "Persistent=", "true"));
    ck_assert(ut_directive_is(t, "Unit=", "lorad-update@%i.service"));
    ck_assert(ut_directive_is(t, "WantedBy=", "timers.target"));
    free(t);
    t = ut_read_unit("lorad-update@.service");
    ck_assert(ut_directive_is(t, "Type=", "oneshot"));
    ck_assert(ut_directive_is(
        t, "ExecStart=", "/usr/local/bin/lorad-update --slot %i $LORAD_UPDATE_OPTS"));
    ck_assert(ut_directive_is(t, "EnvironmentFile=", "/etc/lorad/update-%i.conf"));
    ck_assert(ut_directive_is(t, "DynamicUser=", "yes"));
    ck_assert(ut_directive_is(t, "User=", "lorad")); /* shares lorad.service's socket access */
    ck_assert(ut_directive_is(t, "ProtectSystem=", "strict"));
    ck_assert(ut_directive_is(t, "CapabilityBoundingSet=", ""));
    ck_assert(ut_directive_is(t, "NoNewPrivileges=", "yes"));
    ck_assert(ut_directive_is(t, "MemoryDenyWriteExecute=", "yes"));
    ck_assert(ut_directive_is(t, "SystemCallFilter=", "@system-service"));
    ck_assert(ut_directive_is(t, "IPAddressAllow=", "localhost"));
    ck_assert(ut_directive(t, "TimeoutStartSec=") != NULL);
    free(t);
}
END_TEST

/* The fleet agent (SPEC.md 12): one per lorad@ instance, started after it,
 * restarted always, hardened like lorad@.service. */
START_TEST(units_sync_contract)
{
    char *t = ut_read_unit("lorad-sync@.service");
    ck_assert(ut_directive_is(
        t, "ExecStart=", "/usr/local/bin/lorad-sync --config /etc/lorad/sync-%i.json"));
    ck_assert(ut_directive_is(t, "After=", "lorad@%i.service network-online.target"));
    ck_assert_msg(ut_directive(t, "Requires=") == NULL && ut_directive(t, "BindsTo=") == NULL,
                  "lorad-sync@ must not tie lorad's life to the agent's");
    ck_assert(ut_directive_is(t, "Restart=", "always"));
    ck_assert(ut_directive_is(t, "KillSignal=", "SIGTERM"));
    ck_assert(ut_directive_is(t, "DynamicUser=", "yes"));
    ck_assert(ut_directive_is(t, "ProtectSystem=", "strict"));
    ck_assert(ut_directive_is(t, "CapabilityBoundingSet=", ""));
    ck_assert(ut_directive_is(t, "NoNewPrivileges=", "yes"));
    ck_assert(ut_directive_is(t, "MemoryDenyWriteExecute=", "yes"));
    ck_assert(ut_directive_is(t, "SystemCallFilter=", "@system-service"));
    ck_assert(ut_directive_is(t, "UMask=", "0077"));
    ck_assert(ut_directive_is(t, "WantedBy=", "multi-user.target"));
    free(t);
}
END_TEST

/* shellcheck on every script (scripts/NAME.sh). */
START_TEST(scripts_lint)
{
    char *dir = tu_path(ut_srcdir(), "scripts");
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    if (!ut_have_tool("shellcheck")) {
        printf("SKIP: scripts_lint: shellcheck is not installed (Debian package shellcheck); "
               "scripts/ *.sh were not linted\n");
        closedir(d);
        free(dir);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        char *script, *out = NULL;
        int rc;
        if (len < 4 || strcmp(e->d_name + len - 3, ".sh") != 0)
            continue;
        script = tu_path(dir, e->d_name);
        ck_assert_msg(access(script, X_OK) == 0, "%s is not executable", script);
        {
            char *argv[] = {"shellcheck", "-s", "sh", script, NULL};
            rc = ut_run(argv, NULL, &out);
        }
        ck_assert_msg(rc == 0, "shellcheck %s:\n%s", script, out);
        printf("shellcheck %s: clean\n", e->d_name);
        free(out);
        free(script);
        n++;
    }
    closedir(d);
    ck_assert_int_ge(n, 4); /* canary-rollout, fleet-rollout, lorad-update, run-demo */
    free(dir);
}
END_TEST

START_TEST(canary_script_lint)
{
    char *script = tu_path(ut_srcdir(), "scripts/canary-rollout.sh");
    char *out = NULL;
    int rc;
    ck_assert_msg(access(script, X_OK) == 0, "%s is not executable", script);
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
        char *argv[] = {script, "--url", "http://127.0.0.1:1", "--adapter", "a", "--steps",
                        "5,1",  NULL};
        rc = ut_run(argv, NULL, &out);
        ck_assert_msg(rc == 64, "decreasing steps: exit %d:\n%s", rc, out);
        free(out);
    }
    if (ut_have_tool("curl") && ut_have_tool("jq")) {
        /* Port 1 on loopback: nothing listens there. */
        char *argv[] = {script, "--url", "http://127.0.0.1:1", "--adapter", "a", "--interval",
                        "0",    NULL};
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

/* ---- the canary script against the real daemon ---- */

/* A loopback TCP port that was free a moment ago. */
static int ut_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    ck_assert_int_ge(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Starts `argv` with output into `log`; it gets SIGTERM when the test
 * process ends, even on a failed assertion. */
static pid_t ut_spawn(char *const argv[], const char *log)
{
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
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Runs a shell command line; returns its exit status and output. */
static int ut_sh(const char *cmd, char **out)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    return ut_run(argv, NULL, out);
}

/* The first line of `jq -r FILTER` over GET /status. (malloc'd) */
static char *ut_status(const char *url, const char *filter)
{
    char cmd[1024], *out = NULL, *nl;
    int rc;
    snprintf(cmd, sizeof(cmd), "curl -sS --max-time 30 '%s/status' | jq -r '%s'", url, filter);
    rc = ut_sh(cmd, &out);
    ck_assert_msg(rc == 0, "%s: exit %d: %s", cmd, rc, out);
    if ((nl = strchr(out, '\n')) != NULL)
        *nl = '\0';
    return out;
}

START_TEST(canary_script_live)
{
    const char *mkdemo_env = getenv("MKDEMO_BIN");
    char *bin = ut_lorad_bin(), *mkdemo, *dir, *demo, *cfg, *log, *probe, *script, *out = NULL;
    char url[96], listen[64], cmd[2048];
    pid_t pid;
    int rc, status = 0;
    if (!ut_have_tool("curl") || !ut_have_tool("jq")) {
        printf("SKIP: canary_script_live: curl or jq is not installed\n");
        return;
    }
    ck_assert_msg(bin != NULL, "the daemon binary is missing: set LORAD_BIN or build build/lorad");
    {
        char *p = tu_path(ut_srcdir(), "build/lorad-mkdemo");
        mkdemo = realpath(mkdemo_env && *mkdemo_env ? mkdemo_env : p, NULL);
        free(p);
    }
    ck_assert_msg(mkdemo != NULL, "lorad-mkdemo is missing: set MKDEMO_BIN or build it");
    dir = tu_mkdtemp();
    demo = tu_path(dir, "demo");
    cfg = tu_path(demo, "lorad.json");
    log = tu_path(dir, "lorad.log");
    probe = tu_path(dir, "probe.json");
    script = tu_path(ut_srcdir(), "scripts/canary-rollout.sh");
    {
        char *argv[] = {mkdemo, demo, NULL};
        rc = ut_run(argv, NULL, &out);
        ck_assert_msg(rc == 0, "lorad-mkdemo exited %d:\n%s", rc, out);
        free(out);
    }
    /* Probe rows of the demo's width (the model's in_features). */
    snprintf(cmd, sizeof(cmd),
             "jq -c '.layers[0].in_features as $n | [range(3) as $r | [range($n) as $i | "
             "((($i * 7 + $r * 3) %% 11) - 5) / 10]]' '%s/model/config.json' > '%s'",
             demo, probe);
    rc = ut_sh(cmd, &out);
    ck_assert_msg(rc == 0, "building the probe: %s", out);
    free(out);

    snprintf(listen, sizeof(listen), "127.0.0.1:%d", ut_free_port());
    snprintf(url, sizeof(url), "http://%s", listen);
    {
        char *argv[] = {bin, "--config", cfg, "--listen", listen, NULL};
        pid = ut_spawn(argv, log);
    }
    /* Wait until it serves (a bounded number of polls, no timing claim). */
    snprintf(cmd, sizeof(cmd), "curl -sf --max-time 5 '%s/readyz'", url);
    for (int i = 0; i < 300; i++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        rc = ut_sh(cmd, &out);
        free(out);
        if (rc == 0 || waitpid(pid, &status, WNOHANG) == pid)
            break;
        nanosleep(&ts, NULL);
    }
    ck_assert_msg(rc == 0, "lorad did not become ready on %s (log %s)", listen, log);

    /* A good adapter: every step passes, then promote. */
    snprintf(cmd, sizeof(cmd),
             "'%s' --url '%s' --adapter demo-b --steps 1,50,100 --interval 0 --probe '%s'", script,
             url, probe);
    rc = ut_sh(cmd, &out);
    printf("%s", out);
    ck_assert_msg(rc == 0, "demo-b rollout exited %d:\n%s", rc, out);
    ck_assert(strstr(out, "step 3/3: canary at 100%") != NULL);
    ck_assert(strstr(out, "promoted: demo-b") != NULL);
    free(out);
    out = ut_status(url, ".stable.adapter + \" \" + (.canary | tostring)");
    ck_assert_str_eq(out, "demo-b null");
    free(out);

    /* An adapter whose outputs overflow: the probe gate rolls it back. */
    snprintf(cmd, sizeof(cmd), "'%s' --url '%s' --adapter demo-overflow --interval 0 --probe '%s'",
             script, url, probe);
    rc = ut_sh(cmd, &out);
    printf("%s", out);
    ck_assert_msg(rc == 1, "demo-overflow rollout exited %d:\n%s", rc, out);
    ck_assert(strstr(out, "gate failed: probe on canary") != NULL);
    ck_assert(strstr(out, "rolled back") != NULL);
    free(out);
    out = ut_status(url, ".stable.adapter + \" \" + (.canary | tostring)");
    ck_assert_str_eq(out, "demo-b null");
    free(out);

    /* An adapter the daemon refuses: exit 2 with the server's error. */
    snprintf(cmd, sizeof(cmd), "'%s' --url '%s' --adapter bad-rank --interval 0", script, url);
    rc = ut_sh(cmd, &out);
    printf("%s", out);
    ck_assert_msg(rc == 2, "bad-rank rollout exited %d:\n%s", rc, out);
    ck_assert(strstr(out, "rank_too_large") != NULL);
    free(out);

    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "lorad did not exit 0 (log %s)",
                  log);
    tu_rmrf(dir);
    free(script);
    free(probe);
    free(log);
    free(cfg);
    free(demo);
    free(dir);
    free(mkdemo);
    free(bin);
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
    tcase_add_test(tc, units_security_update);
    tcase_add_test(tc, units_security_sync);
    tcase_add_test(tc, units_update_contract);
    tcase_add_test(tc, units_sync_contract);
    tcase_add_test(tc, scripts_lint);
    tcase_add_test(tc, canary_script_lint);
    tcase_add_test(tc, canary_script_live);
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
