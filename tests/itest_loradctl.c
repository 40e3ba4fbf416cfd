/* lorad — tests/itest_loradctl.c: black-box tests of loradctl (SPEC.md 11)
 * against the real daemon.
 *
 * build/loradctl ($LORADCTL_BIN) runs as a subprocess, its stdout and
 * stderr captured apart, against lorad started by the itestutil harness:
 * over TCP, and with control_listen on a unix socket plus auth_token_file
 * read from lorad's own config. Every command and error path is asserted
 * by exit status (0 done, 1 refused, 2 server error, 3 unreachable, 64
 * usage) and output: human text for the operator, --json equal to what
 * the API itself answers, infer rows equal to a direct POST /infer of the
 * same rows. Slot commands are tested in their own case, which is skipped
 * with a printed "SKIP:" notice while the daemon has no slots (GET /status
 * without a "slots" member).
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itestutil.h"

#define CTL_MAX_ARGS 24

static struct itu_model *M;

/* ---- running loradctl ---- */

static const char *ctl_bin(void)
{
    const char *b = getenv("LORADCTL_BIN");
    return b && *b ? b : "build/loradctl";
}

/* Runs loradctl with `args`; returns the exit status, *out its stdout and
 * *err its stderr (malloc'd). stderr goes to a file through sh so that
 * itu_run captures stdout alone. */
static int ctl_runv(const char *const *args, char **out, char **err)
{
    char *dir = itu_tmpdir(), *errpath = tu_path(dir, "stderr");
    const char *argv[CTL_MAX_ARGS + 8] = {"/bin/sh", "-c",    "e=$1; shift; exec \"$@\" 2>\"$e\"",
                                          "sh",      errpath, ctl_bin()};
    size_t n = 6, len = 0;
    int rc;
    for (size_t i = 0; args[i]; i++) {
        ck_assert_int_lt(i, CTL_MAX_ARGS);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    rc = itu_run((char *const *)argv, out);
    *err = (char *)tu_read_file(errpath, &len);
    (*err)[len] = '\0';
    tu_rmrf(dir);
    free(errpath);
    free(dir);
    return rc;
}

/* Runs loradctl with the NULL-terminated arguments and asserts the exit
 * status; returns stdout, and stderr in *err (both malloc'd). */
static char *ctl_expect(int want, char **err, ...)
{
    const char *args[CTL_MAX_ARGS + 1];
    char cmd[1024] = "loradctl", *out = NULL;
    size_t n = 0;
    va_list ap;
    va_start(ap, err);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        ck_assert_int_lt(n, CTL_MAX_ARGS);
        args[n++] = a;
        snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s", a);
    }
    va_end(ap);
    args[n] = NULL;
    int rc = ctl_runv(args, &out, err);
    ck_assert_msg(rc == want, "%s: exit %d, expected %d\nstdout:\n%s\nstderr:\n%s", cmd, rc, want,
                  out, *err);
    return out;
}

#define CTL(want, errp, ...) ctl_expect((want), (errp), __VA_ARGS__, (const char *)NULL)

/* Asserts `text` contains `needle`. */
static void has(const char *text, const char *needle, const char *what)
{
    ck_assert_msg(strstr(text, needle) != NULL, "%s: '%s' not in:\n%s", what, needle, text);
}

/* Runs loradctl, asserts the status and that stdout holds `needle`. */
static void ctl_says(int want, const char *needle, ...)
{
    const char *args[CTL_MAX_ARGS + 1];
    char *out = NULL, *err = NULL;
    size_t n = 0;
    va_list ap;
    va_start(ap, needle);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        ck_assert_int_lt(n, CTL_MAX_ARGS);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    int rc = ctl_runv(args, &out, &err);
    ck_assert_msg(rc == want, "loradctl %s ...: exit %d, expected %d\nstdout:\n%s\nstderr:\n%s",
                  args[0] ? args[0] : "", rc, want, out, err);
    if (needle)
        ck_assert_msg(strstr(want == 0 ? out : err, needle) != NULL,
                      "loradctl %s ...: '%s' not in its %s:\nstdout:\n%s\nstderr:\n%s",
                      args[0] ? args[0] : "", needle, want == 0 ? "stdout" : "stderr", out, err);
    free(out);
    free(err);
}

#define SAYS(want, needle, ...) ctl_says((want), (needle), __VA_ARGS__, (const char *)NULL)

/* ---- helpers ---- */

static void stop_ok(struct itu_daemon **d)
{
    int rc = itu_daemon_stop(*d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM; log tail:\n%s", rc,
                  itu_log_tail(*d, 2000));
    itu_daemon_free(d);
}

static char *url_of(const struct itu_daemon *d)
{
    char *u = NULL;
    ck_assert_int_ge(asprintf(&u, "http://127.0.0.1:%d", d->port), 0);
    return u;
}

/* ROWS.json with `rows` rows of x: [[...], ...], or [...] when `one`. */
static char *rows_file(const char *dir, const char *name, const double *x, int rows, bool one)
{
    char *p = tu_path(dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(one ? "" : "[", f);
    for (int r = 0; r < rows; r++) {
        fputs(r ? ",\n[" : "[", f);
        for (int i = 0; i < M->in; i++)
            fprintf(f, i ? ", %.9g" : "%.9g", (double)(float)x[(size_t)r * M->in + i]);
        fputs("]", f);
    }
    fputs(one ? "\n" : "]\n", f);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

/* Parses `text` as one JSON object (the --json stdout). */
static cJSON *json_of(const char *text, const char *what)
{
    cJSON *j = cJSON_Parse(text);
    ck_assert_msg(cJSON_IsObject(j), "%s: stdout is not one JSON object:\n%s", what, text);
    return j;
}

/* --json of `cmd` equals GET `path` (uptime_s, which ticks, left out). */
static void json_equals_api(struct itu_daemon *d, const char *url, const char *cmd,
                            const char *path)
{
    struct itu_resp r;
    char *err = NULL, *out = CTL(0, &err, "--url", url, "--json", cmd);
    cJSON *got = json_of(out, cmd), *want;
    ck_assert_int_eq(itu_get(d, path, &r), 200);
    want = itu_take_json(&r);
    cJSON_DeleteItemFromObjectCaseSensitive(got, "uptime_s");
    cJSON_DeleteItemFromObjectCaseSensitive(want, "uptime_s");
    ck_assert_msg(cJSON_Compare(got, want, 1), "loradctl --json %s differs from GET %s:\n%s", cmd,
                  path, out);
    ck_assert_str_eq(err, "");
    cJSON_Delete(got);
    cJSON_Delete(want);
    free(out);
    free(err);
}

/* GET /status through `c` shows `adapter` (NULL: the base model) at
 * `version` as the default slot's stable. */
static void expect_stable_on(struct itu_client *c, const char *adapter, double version)
{
    struct itu_resp r;
    cJSON *st;
    const char *a;
    ck_assert_int_eq(itu_client_do(c, "GET", "/status", NULL, 0, NULL, NULL, 0, &r), 200);
    st = itu_take_json(&r);
    a = itu_jstr(st, "stable.adapter");
    ck_assert_msg(adapter ? a && strcmp(a, adapter) == 0 : a == NULL, "stable is %s, expected %s",
                  a ? a : "(base)", adapter ? adapter : "(base)");
    ck_assert_msg(itu_jnum(st, "stable.version", -1) == version, "stable version %g, expected %g",
                  itu_jnum(st, "stable.version", -1), version);
    cJSON_Delete(st);
}

static void expect_stable(struct itu_daemon *d, const char *adapter, double version)
{
    expect_stable_on(d->client, adapter, version);
}

/* ---- usage: nothing is sent ---- */

START_TEST(test_usage)
{
    static const char *const cmds[] = {"status", "slots",   "adapters", "swap", "rollback",
                                       "canary", "promote", "unload",   "infer"};
    const char *nowhere = "http://127.0.0.1:1"; /* nothing listens on port 1 */
    char *out, *err;
    out = CTL(0, &err, "--help");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        has(out, cmds[i], "loradctl --help");
    has(out, "exit status", "loradctl --help");
    free(out);
    free(err);
    out = CTL(0, &err, "--version");
    ck_assert_str_eq(out, "loradctl 0.1.0\n");
    free(out);
    free(err);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "usage: loradctl [options] %s", cmds[i]);
        out = CTL(0, &err, cmds[i], "--help");
        has(out, want, cmds[i]);
        free(out);
        free(err);
    }
    SAYS(64, "usage: loradctl", "--url", nowhere);
    SAYS(64, "unknown command: frobnicate", "--url", nowhere, "frobnicate");
    SAYS(64, "unknown option: --bogus", "--url", nowhere, "status", "--bogus");
    SAYS(64, "--url needs a value", "status", "--url");
    SAYS(64, "--json takes no value", "--json=1", "status");
    SAYS(64, "swap: missing argument", "--url", nowhere, "swap");
    SAYS(64, "canary: missing argument", "--url", nowhere, "canary");
    SAYS(64, "infer: missing argument", "--url", nowhere, "infer");
    SAYS(64, "swap: unexpected argument: b", "--url", nowhere, "swap", "a", "b");
    SAYS(64, "status: unexpected argument", "--url", nowhere, "status", "now");
    SAYS(64, "status: no option --slot", "--url", nowhere, "status", "--slot", "x");
    SAYS(64, "rollback: no option --canary", "--url", nowhere, "rollback", "--canary", "5");
    SAYS(64, "--canary: not a number", "--url", nowhere, "swap", "a", "--canary", "ten");
    SAYS(64, "--sha256: not 64 hex digits", "--url", nowhere, "swap", "a", "--sha256", "abc");
    SAYS(64, "--to: not a version number", "--url", nowhere, "rollback", "--to", "-1");
    SAYS(64, "P is not a number", "--url", nowhere, "canary", "5%");
    SAYS(64, "unload: --slot S is required", "--url", nowhere, "unload");
    SAYS(64, "--slot: empty slot name", "--url", nowhere, "promote", "--slot", "");
    SAYS(64, "--timeout", "--url", nowhere, "--timeout", "0", "status");
    SAYS(64, "--timeout", "--url", nowhere, "--timeout", "soon", "status");
    SAYS(64, "/nonexistent/lorad.json", "-c", "/nonexistent/lorad.json", "status");
    SAYS(64, "nope.json", "--url", nowhere, "infer", "nope.json");
    {
        char *dir = itu_tmpdir(), *tok = tu_path(dir, "token"), *cfg = tu_path(dir, "bad.json");
        char *bad = tu_path(dir, "rows.json");
        tu_write_text(tok, "s3cret\n");
        ck_assert_int_eq(chmod(tok, 0644), 0);
        SAYS(64, "world-readable", "--url", nowhere, "--token-file", tok, "status");
        tu_write_text(cfg, "{\"listen\": 8080}");
        SAYS(64, "config key listen", "-c", cfg, "status");
        tu_write_text(bad, "{\"inputs\": [[1]]}");
        SAYS(64, "not a JSON array of rows", "--url", nowhere, "infer", bad);
        tu_write_text(bad, "[[1, 2], \"x\"]");
        SAYS(64, "not a JSON array of rows", "--url", nowhere, "infer", bad);
        tu_write_text(bad, "[]");
        SAYS(64, "not a JSON array of rows", "--url", nowhere, "infer", bad);
        tu_write_text(bad, "[[1, 2]] trailing");
        SAYS(64, "not a JSON array of rows", "--url", nowhere, "infer", bad);
        free(bad);
        free(cfg);
        free(tok);
        free(dir);
    }
}
END_TEST

/* ---- no daemon there ---- */

START_TEST(test_unreachable)
{
    char *dir = itu_tmpdir(), *cfg = tu_path(dir, "lorad.json"), *sock = tu_path(dir, "none.sock");
    char url[64];
    int port = itu_free_port(); /* free: nothing listens there */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    SAYS(3, "no answer from lorad", "--url", url, "status");
    SAYS(3, "no answer from lorad", "--url", url, "swap", "demo-b");
    SAYS(3, "no answer from lorad", "--socket", sock, "rollback");
    tu_write_text(cfg, "// a lorad that is not running\n{\"listen\": \"127.0.0.1:%d\"}\n", port);
    SAYS(3, "no answer from lorad", "-c", cfg, "adapters");
    free(sock);
    free(cfg);
    free(dir);
}
END_TEST

/* ---- every command over TCP ---- */

static void check_status_human(const char *url)
{
    char *err, *out = CTL(0, &err, "--url", url, "status");
    has(out, "state      serving", "status");
    has(out, "generation 1", "status");
    has(out, "restored: none", "status");
    has(out, "slot default\n", "status");
    has(out, "  stable   demo-a@1 (rank 8)", "status");
    has(out, "  canary   none\n", "status");
    has(out, "  history  (base)@0 (newest first)\n", "status");
    has(out, "  traffic  stable 0 requests", "status");
    has(out, "swaps      0 ok, 0 failed", "status");
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
}

static void check_adapters(struct itu_daemon *d, const char *url)
{
    char *err, *out = CTL(0, &err, "--url", url, "adapters");
    has(out, "NAME", "adapters");
    ck_assert_msg(strstr(out, "\ndemo-a ") && strstr(strstr(out, "\ndemo-a "), "yes"),
                  "adapters: demo-a not compatible:\n%s", out);
    has(out, "no: rank_too_large: layer layers.0.proj: rank 64", "adapters");
    free(out);
    free(err);
    json_equals_api(d, url, "adapters", "/adapters");
    json_equals_api(d, url, "status", "/status");
}

/* swap and its refusals, canary, promote, rollback. */
static void check_changes(struct itu_daemon *d, const char *url)
{
    char *sha = NULL, *path = tu_path(itu_adapters_dir(), "demo-c/adapter_model.safetensors");
    char *err, *out;
    sha = itu_sha256_file(path);
    SAYS(0, "demo-b@2 is stable in slot default (was demo-a@1); generation 2", "--url", url, "swap",
         "demo-b");
    expect_stable(d, "demo-b", 2);
    SAYS(1, "swap refused: HTTP 409 rank_too_large: layer layers.0.proj", "--url", url, "swap",
         "bad-rank");
    SAYS(1, "HTTP 403 forbidden_name", "--url", url, "swap", "../demo-a");
    SAYS(1, "HTTP 404 adapter_not_found", "--url", url, "swap", "no-such-adapter");
    SAYS(1, "HTTP 422 invalid_adapter", "--url", url, "swap", "bad-pickle");
    SAYS(1, "HTTP 409 checksum_mismatch", "--url", url, "swap", "demo-c", "--sha256",
         "0000000000000000000000000000000000000000000000000000000000000000");
    SAYS(1, "HTTP 400 invalid_request", "--url", url, "swap", "demo-c", "--canary", "150");
    expect_stable(d, "demo-b", 2);
    /* --json: the answer as lorad sent it, on stdout only */
    out = CTL(0, &err, "--url", url, "swap", "demo-c", "--canary", "25", "--sha256", sha, "--json");
    {
        cJSON *j = json_of(out, "swap --json");
        ck_assert_str_eq(itu_jstr(j, "adapter"), "demo-c");
        ck_assert_str_eq(itu_jstr(j, "variant"), "canary");
        ck_assert(itu_jnum(j, "percent", -1) == 25);
        ck_assert(itu_jnum(j, "version", -1) == 3);
        ck_assert_str_eq(itu_jstr(j, "previous.adapter"), "demo-b");
        cJSON_Delete(j);
    }
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
    SAYS(0, "canary demo-c@3 now at 50% in slot default", "--url", url, "canary", "50");
    SAYS(1, "HTTP 400 invalid_request", "--url", url, "canary", "101");
    SAYS(1, "HTTP 409 canary_active", "--url", url, "swap", "demo-a");
    out = CTL(0, &err, "--url", url, "status");
    has(out, "  canary   demo-c@3 (rank ", "status with a canary");
    has(out, ") at 50%, loaded ", "status with a canary");
    has(out, "  history  demo-a@1, (base)@0 (newest first)", "status with a canary");
    free(out);
    free(err);
    SAYS(0, "promoted: demo-c@3 is stable in slot default (was demo-b@2)", "--url", url, "promote");
    SAYS(1, "HTTP 409 no_canary", "--url", url, "promote");
    SAYS(1, "HTTP 409 no_canary", "--url", url, "canary", "5");
    SAYS(0, "rolled back: demo-b@2 is stable in slot default (was demo-c@3)", "--url", url,
         "rollback");
    SAYS(1, "HTTP 404 version_not_found", "--url", url, "rollback", "--to", "99");
    SAYS(0, "rolled back: (base)@0 is stable in slot default (was demo-b@2)", "--url", url,
         "rollback", "--to", "0");
    SAYS(1, "HTTP 409 no_history", "--url", url, "rollback");
    expect_stable(d, NULL, 0);
    /* a refusal with --json: the error body on stdout, the message on stderr */
    out = CTL(1, &err, "--url", url, "--json", "rollback");
    {
        cJSON *j = json_of(out, "rollback --json refused");
        ck_assert_str_eq(itu_jstr(j, "error.code"), "no_history");
        cJSON_Delete(j);
    }
    has(err, "no_history", "rollback --json stderr");
    free(out);
    free(err);
    free(sha);
    free(path);
}

/* Output values of an /infer answer as floats (rows x M->out). */
static float *outputs_of(const cJSON *j, int rows)
{
    float *o = malloc(sizeof(float) * (size_t)rows * M->out);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(itu_json_outputs(j, rows, M->out, o), rows * M->out);
    return o;
}

/* The human infer output: a '#' line, then rows of %.9g values. */
static float *outputs_of_text(const char *text, int rows)
{
    float *o = malloc(sizeof(float) * (size_t)rows * M->out);
    const char *p = strchr(text, '\n');
    ck_assert_ptr_nonnull(o);
    ck_assert_msg(text[0] == '#' && p, "infer: no '#' line:\n%.300s", text);
    for (int i = 0; i < rows * M->out; i++) {
        char *end;
        o[i] = strtof(p, &end);
        ck_assert_msg(end != p, "infer: value %d missing", i);
        p = end;
    }
    while (*p == ' ' || *p == '\n')
        p++;
    ck_assert_msg(*p == '\0', "infer: more than %d rows:\n%.200s", rows, p);
    return o;
}

static void check_infer(struct itu_daemon *d, const char *url, const char *dir)
{
    double *x = itu_rows(31, 3, M->in);
    char *many = rows_file(dir, "rows.json", x, 3, false);
    char *one = rows_file(dir, "row.json", x, 1, true);
    char *body = itu_json_rows(x, 3, M->in, true, NULL), *err, *out;
    struct itu_resp r;
    cJSON *direct, *got;
    float *a, *b;

    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-a\"}"));
    ck_assert_int_eq(itu_post(d, "/infer", body, &r), 200);
    direct = itu_take_json(&r);
    out = CTL(0, &err, "--url", url, "--json", "infer", many);
    got = json_of(out, "infer --json");
    ck_assert_msg(cJSON_Compare(cJSON_GetObjectItem(got, "outputs"),
                                cJSON_GetObjectItem(direct, "outputs"), 1),
                  "loradctl infer outputs differ from a direct POST /infer");
    ck_assert_str_eq(itu_jstr(got, "adapter"), "demo-a");
    ck_assert_str_eq(itu_jstr(got, "variant"), "stable");
    cJSON_Delete(got);
    free(out);
    free(err);
    /* the human rows hold the same floats */
    out = CTL(0, &err, "--url", url, "infer", many);
    has(out, "# slot default, demo-a@", "infer");
    has(out, "variant stable, 3 row(s)\n", "infer");
    a = outputs_of(direct, 3);
    b = outputs_of_text(out, 3);
    ck_assert_msg(memcmp(a, b, sizeof(float) * 3 * (size_t)M->out) == 0,
                  "loradctl infer's printed rows differ from a direct POST /infer");
    free(a);
    free(b);
    free(out);
    free(err);
    /* one row: {"input"} and "output" */
    out = CTL(0, &err, "--url", url, "--json", "infer", one);
    got = json_of(out, "infer one row");
    ck_assert(cJSON_Compare(cJSON_GetObjectItem(got, "output"),
                            cJSON_GetArrayItem(cJSON_GetObjectItem(direct, "outputs"), 0), 1));
    cJSON_Delete(got);
    free(out);
    free(err);
    /* lorad refuses a row of the wrong length: exit 1 with its code */
    tu_write_text(one, "[1, 2, 3]\n");
    SAYS(1, "infer refused: HTTP 400 invalid_request", "--url", url, "infer", one);
    cJSON_Delete(direct);
    free(body);
    free(one);
    free(many);
    free(x);
}

START_TEST(test_tcp)
{
    char *dir = itu_tmpdir();
    struct itu_daemon *d = itu_daemon_start(dir, NULL);
    char *url = url_of(d);
    check_status_human(url);
    check_adapters(d, url);
    check_changes(d, url);
    check_infer(d, url, dir);
    /* -c: the harness config names the same TCP listener */
    SAYS(0, "slot default", "-c", d->config_path, "status");
    free(url);
    free(dir);
    stop_ok(&d);
}
END_TEST

/* ---- control_listen on a unix socket, the token from the config ---- */

START_TEST(test_unix_token)
{
    char *dir = itu_tmpdir(), *tok = tu_path(dir, "token"), *wrong = tu_path(dir, "wrong");
    char *sock = tu_path(dir, "control.sock"), *commented = tu_path(dir, "commented.json");
    char over[1024], *url, *text, *rows;
    double *x = itu_rows(32, 2, M->in);
    size_t len;
    tu_write_text(tok, "s3cret-Token_42\n");
    tu_write_text(wrong, "not-the-token\n");
    ck_assert_int_eq(chmod(tok, 0600), 0);
    ck_assert_int_eq(chmod(wrong, 0600), 0);
    snprintf(over, sizeof(over), "{\"control_listen\": \"unix:%s\", \"auth_token_file\": \"%s\"}",
             sock, tok);
    struct itu_daemon *d = itu_daemon_start(dir, over);
    url = url_of(d);
    rows = rows_file(dir, "rows.json", x, 2, false);
    /* lorad's config, with comments as operators write it */
    text = (char *)tu_read_file(d->config_path, &len);
    text[len] = '\0';
    tu_write_text(commented, "// lorad, with a unix control socket\n/* token: */ %s", text);
    free(text);

    SAYS(0, "  stable   demo-a@1 (rank 8)", "-c", commented, "status");
    SAYS(0, "demo-b@2 is stable in slot default", "-c", commented, "swap", "demo-b");
    /* /infer goes to "listen" (the control socket would answer 404) */
    SAYS(0, "# slot default, demo-b@2, variant stable, 2 row(s)", "-c", commented, "infer", rows);
    SAYS(1, "HTTP 401 unauthorized", "-c", commented, "--token-file", wrong, "rollback");
    SAYS(1, "HTTP 401 unauthorized", "--socket", sock, "rollback");
    SAYS(0, "rolled back: demo-a@1", "--socket", sock, "--token-file", tok, "rollback");
    SAYS(0, "NAME", "--socket", sock, "adapters"); /* GETs need no token */
    /* --url wins over the config: the data plane has no /status */
    SAYS(1, "HTTP 404 not_found", "-c", commented, "--url", url, "status");
    {
        struct itu_client *c = itu_client_new_unix(sock);
        expect_stable_on(c, "demo-a", 1);
        itu_client_free(&c);
    }
    free(rows);
    free(x);
    free(url);
    free(commented);
    free(sock);
    free(wrong);
    free(tok);
    free(dir);
    stop_ok(&d);
}
END_TEST

/* ---- slots (SPEC 1, 6): skipped until the daemon has them ---- */

static bool daemon_has_slots(struct itu_daemon *d)
{
    cJSON *st = itu_status(d);
    bool has_slots = cJSON_IsObject(cJSON_GetObjectItem(st, "slots"));
    cJSON_Delete(st);
    return has_slots;
}

/* Against a daemon without slots: "slots" shows the one state as default;
 * a --slot request is refused by lorad (it does not know the key). */
static void check_no_slots(const char *url)
{
    char *err, *out = CTL(0, &err, "--url", url, "slots");
    has(out, "SLOT", "slots");
    has(out, "\ndefault  demo-a@1", "slots");
    has(err, "reports no slots", "slots");
    free(out);
    free(err);
    out = CTL(0, &err, "--url", url, "--json", "slots");
    {
        cJSON *j = json_of(out, "slots --json");
        ck_assert_str_eq(itu_jstr(j, "default.stable.adapter"), "demo-a");
        cJSON_Delete(j);
    }
    free(out);
    free(err);
    SAYS(1, "HTTP 400 invalid_request", "--url", url, "swap", "demo-b", "--slot", "team-a");
    SAYS(1, "HTTP 404 not_found", "--url", url, "unload", "--slot", "team-a");
}

static void check_slots(struct itu_daemon *d, const char *url, const char *dir)
{
    double *x = itu_rows(33, 2, M->in);
    char *rows = rows_file(dir, "rows.json", x, 2, false), *err, *out;
    SAYS(0, "demo-b@2 is stable in slot team-a (was (base)@0)", "--url", url, "swap", "demo-b",
         "--slot", "team-a");
    out = CTL(0, &err, "--url", url, "slots");
    has(out, "\ndefault  demo-a@1", "slots");
    has(out, "\nteam-a   demo-b@2", "slots");
    free(out);
    free(err);
    out = CTL(0, &err, "--url", url, "status");
    has(out, "slot team-a\n  stable   demo-b@2 (rank 16)", "status with slots");
    free(out);
    free(err);
    {
        cJSON *st = itu_status(d), *got;
        out = CTL(0, &err, "--url", url, "--json", "slots");
        got = json_of(out, "slots --json");
        ck_assert(cJSON_Compare(got, cJSON_GetObjectItem(st, "slots"), 1));
        cJSON_Delete(got);
        cJSON_Delete(st);
        free(out);
        free(err);
    }
    SAYS(0, "# slot team-a, demo-b@2", "--url", url, "infer", "--slot", "team-a", rows);
    SAYS(0, "# slot default, demo-a@1", "--url", url, "infer", rows);
    SAYS(0, "demo-c@3 is the canary at 10% beside demo-b@2 in slot team-a", "--url", url, "swap",
         "demo-c", "--slot", "team-a", "--canary", "10");
    SAYS(0, "canary demo-c@3 now at 60% in slot team-a", "--url", url, "canary", "60", "--slot",
         "team-a");
    SAYS(1, "HTTP 409 no_canary", "--url", url, "promote"); /* default has none */
    SAYS(0, "promoted: demo-c@3 is stable in slot team-a", "--url", url, "promote", "--slot",
         "team-a");
    SAYS(0, "rolled back: demo-b@2 is stable in slot team-a", "--url", url, "rollback", "--slot",
         "team-a");
    SAYS(1, "HTTP 404 slot_not_found", "--url", url, "rollback", "--slot", "team-b");
    SAYS(1, "HTTP 400 invalid_request", "--url", url, "swap", "demo-b", "--slot", "bad name!");
    SAYS(1, "HTTP 409 default_slot", "--url", url, "unload", "--slot", "default");
    SAYS(0, "unloaded slot team-a", "--url", url, "unload", "--slot", "team-a");
    SAYS(1, "HTTP 404 slot_not_found", "--url", url, "infer", "--slot", "team-a", rows);
    expect_stable(d, "demo-a", 1);
    free(rows);
    free(x);
}

START_TEST(test_slots)
{
    char *dir = itu_tmpdir();
    struct itu_daemon *d = itu_daemon_start(dir, NULL);
    char *url = url_of(d);
    if (!daemon_has_slots(d)) {
        printf("SKIP: itest_loradctl test_slots: this lorad has no slots yet (GET /status has "
               "no \"slots\" member); the slot commands of loradctl (swap/rollback/canary/"
               "promote/infer --slot, slots, unload) were not tested against slots. Tested "
               "instead: their behaviour against a lorad without slots.\n");
        fflush(stdout);
        check_no_slots(url);
    } else {
        check_slots(d, url, dir);
    }
    free(url);
    free(dir);
    stop_ok(&d);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    Suite *s = suite_create("itest_loradctl");
    TCase *tc = tcase_create("loradctl");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_usage);
    tcase_add_test(tc, test_unreachable);
    tcase_add_test(tc, test_tcp);
    tcase_add_test(tc, test_unix_token);
    tcase_add_test(tc, test_slots);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    itu_model_free(&M);
    itu_cleanup();
    return failed ? 1 : 0;
}
