/* lorad — tests/itest_update.c: scheduled adapter updates end to end
 * (SPEC.md 11): scripts/lorad-update.sh against the real daemon.
 *
 * The daemon serves an adapter directory of versions (support-v1 = the
 * demo's demo-a, support-v2 = demo-b, support-v10 = demo-overflow, whose
 * outputs are not finite; other-v99 does not match the pattern), with
 * control_listen on a unix socket and auth_token_file, and the script
 * reads everything from lorad's config (comments included): the control
 * socket, the data plane for the probe, the token, adapter_dir.
 * - v1 serving, v2 present: v2 is rolled out through canary-rollout.sh's
 *   gates and promoted (exit 0);
 * - again: "already current", exit 0, no change (generation unchanged);
 * - v10 added: chosen by version sort over v2, its probe gate fails, it is
 *   rolled back (exit 1), v2 still stable, no canary left;
 * - --dry-run, a live canary (exit 2), usage and unreachable errors.
 * The same for a named slot is its own case, skipped with a "SKIP:" notice
 * while the daemon has no slots. --interval 0: nothing depends on timing.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itestutil.h"

static struct itu_model *M;

/* One daemon with its versions directory, socket and token. */
struct upd {
    struct itu_daemon *d;
    char *dir, *adapters, *sock, *token, *config, *probe, *script;
    struct itu_client *ctl; /* the control socket */
};

static void copy_adapter(const struct upd *u, const char *demo, const char *name)
{
    char *src = tu_path(itu_adapters_dir(), demo), *dst = tu_path(u->adapters, name), *out;
    char *argv[] = {"/bin/cp", "-r", src, dst, NULL};
    int rc = itu_run(argv, &out);
    ck_assert_msg(rc == 0, "cp -r %s %s: %s", src, dst, out);
    free(out);
    free(dst);
    free(src);
}

static void write_probe(const struct upd *u)
{
    double *x = itu_rows(41, 3, M->in);
    FILE *f = fopen(u->probe, "w");
    ck_assert_ptr_nonnull(f);
    for (int r = 0; r < 3; r++) {
        fputs(r ? ",[" : "[[", f);
        for (int i = 0; i < M->in; i++)
            fprintf(f, i ? ",%.9g" : "%.9g", x[(size_t)r * M->in + i]);
        fputs("]", f);
    }
    fputs("]\n", f);
    ck_assert_int_eq(fclose(f), 0);
    free(x);
}

static void upd_start(struct upd *u)
{
    char over[2048], *text;
    size_t len;
    memset(u, 0, sizeof(*u));
    u->dir = itu_tmpdir();
    u->adapters = tu_path(u->dir, "adapters");
    u->sock = tu_path(u->dir, "control.sock");
    u->token = tu_path(u->dir, "token");
    u->config = tu_path(u->dir, "lorad-commented.json");
    u->probe = tu_path(u->dir, "probe.json");
    {
        char *s = tu_path(getenv("LORAD_SRCDIR") ? getenv("LORAD_SRCDIR") : ".",
                          "scripts/lorad-update.sh");
        u->script = realpath(s, NULL);
        ck_assert_msg(u->script != NULL, "%s is missing", s);
        free(s);
    }
    tu_mkdir(u->adapters);
    copy_adapter(u, "demo-a", "support-v1");
    copy_adapter(u, "demo-b", "support-v2");
    copy_adapter(u, "demo-overflow", "other-v99");
    write_probe(u);
    tu_write_text(u->token, "upd-Token_7\n");
    ck_assert_int_eq(chmod(u->token, 0600), 0);
    snprintf(over, sizeof(over),
             "{\"adapter_dir\": \"%s\", \"initial_adapter\": \"support-v1\", "
             "\"control_listen\": \"unix:%s\", \"auth_token_file\": \"%s\"}",
             u->adapters, u->sock, u->token);
    u->d = itu_daemon_start(u->dir, over);
    u->ctl = itu_client_new_unix(u->sock);
    /* lorad's config as an operator writes it, comments included */
    text = (char *)tu_read_file(u->d->config_path, &len);
    text[len] = '\0';
    tu_write_text(u->config, "// lorad (scheduled updates test)\n/* a // in a comment */ %s", text);
    free(text);
}

static void upd_stop(struct upd *u)
{
    int rc = itu_daemon_stop(u->d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d; log tail:\n%s", rc, itu_log_tail(u->d, 2000));
    itu_daemon_free(&u->d);
    itu_client_free(&u->ctl);
    free(u->dir);
    free(u->adapters);
    free(u->sock);
    free(u->token);
    free(u->config);
    free(u->probe);
    free(u->script);
}

static cJSON *upd_status(struct upd *u)
{
    struct itu_resp r;
    ck_assert_int_eq(itu_client_do(u->ctl, "GET", "/status", NULL, 0, NULL, NULL, 0, &r), 200);
    return itu_take_json(&r);
}

/* The slot's state in /status (`slot` NULL: the top level). */
static const cJSON *slot_of(const cJSON *st, const char *slot)
{
    return slot ? cJSON_GetObjectItem(cJSON_GetObjectItem(st, "slots"), slot) : st;
}

/* Runs lorad-update.sh -c CONFIG --pattern 'support-v*' with the quick
 * gates and `extra` arguments (NULL-terminated); asserts the exit status;
 * returns the log. */
static char *upd_run(struct upd *u, int want, const char *slot, const char *const *extra)
{
    const char *argv[32] = {u->script,    "-c",      u->config, "--pattern",
                            "support-v*", "--steps", "1,100",   "--interval",
                            "0",          "--probe", u->probe};
    size_t n = 11;
    char *out = NULL;
    int rc;
    if (slot) {
        argv[n++] = "--slot";
        argv[n++] = slot;
    }
    for (size_t i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    rc = itu_run((char *const *)argv, &out);
    printf("%s", out);
    ck_assert_msg(rc == want, "lorad-update.sh exited %d, expected %d:\n%s", rc, want, out);
    return out;
}

static void has(const char *text, const char *needle)
{
    ck_assert_msg(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text);
}

/* The slot's stable is `adapter` and no canary is live. */
static void expect_serving(struct upd *u, const char *slot, const char *adapter)
{
    cJSON *st = upd_status(u);
    const cJSON *s = slot_of(st, slot);
    const char *a = itu_jstr(s, "stable.adapter");
    ck_assert_msg(a && strcmp(a, adapter) == 0, "slot %s serves %s, expected %s",
                  slot ? slot : "default", a ? a : "(base)", adapter);
    ck_assert_msg(cJSON_IsNull(cJSON_GetObjectItem(s, "canary")), "slot %s: a canary is live",
                  slot ? slot : "default");
    cJSON_Delete(st);
}

static double generation(struct upd *u)
{
    cJSON *st = upd_status(u);
    double g = itu_jnum(st, "generation", -1);
    cJSON_Delete(st);
    return g;
}

/* v2 rolled out, a no-op, then v10 (bad) rolled back: in `slot`. */
static void check_update_cycle(struct upd *u, const char *slot, const char *was)
{
    char *log;
    double g;
    log = upd_run(u, 0, slot, NULL);
    has(log, "update: ");
    has(log, was);
    has(log, " -> support-v2 (sha256 ");
    has(log, "canary-rollout: promoted: support-v2");
    has(log, "updated: support-v2 is stable");
    free(log);
    expect_serving(u, slot, "support-v2");

    g = generation(u);
    log = upd_run(u, 0, slot, NULL);
    has(log, "already current: support-v2 v");
    ck_assert_msg(strstr(log, "canary-rollout") == NULL, "a no-op ran the rollout:\n%s", log);
    free(log);
    ck_assert_msg(generation(u) == g, "a no-op run changed the generation");

    copy_adapter(u, "demo-overflow", "support-v10"); /* sort -V: v10 is newer than v2 */
    log = upd_run(u, 1, slot, NULL);
    has(log, " -> support-v10 (sha256 ");
    has(log, "gate failed: probe on canary");
    has(log, "rolled back");
    has(log, "gate failed: support-v10 rolled back, support-v2 v");
    free(log);
    expect_serving(u, slot, "support-v2");
}

START_TEST(test_update_default)
{
    struct upd u;
    char *log;
    double g;
    upd_start(&u);
    check_update_cycle(&u, NULL, "support-v1 v1");

    /* --dry-run says what it would do and changes nothing */
    g = generation(&u);
    {
        const char *dry[] = {"--dry-run", NULL};
        log = upd_run(&u, 0, NULL, dry);
    }
    has(log, "dry run: would run ");
    has(log, "--adapter support-v10");
    has(log, "--socket ");
    has(log, "--infer-url http://127.0.0.1:");
    free(log);
    ck_assert(generation(&u) == g);

    /* a live canary is somebody else's rollout: refuse to start (exit 2) */
    {
        struct itu_resp r;
        char auth[64];
        const char *hdrs[] = {auth, NULL};
        const char *swap = "{\"adapter\":\"support-v1\",\"canary_percent\":5}";
        snprintf(auth, sizeof(auth), "Authorization: Bearer upd-Token_7");
        ck_assert_int_eq(itu_client_do(u.ctl, "POST", "/swap", swap, strlen(swap),
                                       "application/json", hdrs, 0, &r),
                         200);
        itu_resp_free(&r);
        log = upd_run(&u, 2, NULL, NULL);
        has(log, "a canary is live (support-v1 v");
        free(log);
        ck_assert_int_eq(
            itu_client_do(u.ctl, "POST", "/rollback", "{}", 2, "application/json", hdrs, 0, &r),
            200);
        itu_resp_free(&r);
    }
    expect_serving(&u, NULL, "support-v2");

    /* a slot on a lorad without slots */
    {
        cJSON *st = upd_status(&u);
        bool slots = cJSON_IsObject(cJSON_GetObjectItem(st, "slots"));
        cJSON_Delete(st);
        if (!slots) {
            log = upd_run(&u, 2, "team-a", NULL);
            has(log, "this lorad has no slots");
            free(log);
        }
    }
    upd_stop(&u);
}
END_TEST

START_TEST(test_update_errors)
{
    char *dir = itu_tmpdir(), *empty = tu_path(dir, "empty"), *out;
    char *s =
        tu_path(getenv("LORAD_SRCDIR") ? getenv("LORAD_SRCDIR") : ".", "scripts/lorad-update.sh");
    char *script = realpath(s, NULL);
    char url[64];
    int rc;
    ck_assert_ptr_nonnull(script);
    tu_mkdir(empty);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", itu_free_port());
    {
        char *argv[] = {script, "--help", NULL};
        rc = itu_run(argv, &out);
        ck_assert_int_eq(rc, 0);
        has(out, "--pattern GLOB");
        free(out);
    }
    {
        char *argv[] = {script, "--url", url, "--adapter-dir", empty, NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 64, "no --pattern: exit %d:\n%s", rc, out);
        has(out, "--pattern is required");
        free(out);
    }
    {
        char *argv[] = {script,      "--url", url,      "--adapter-dir", empty,
                        "--pattern", "x*",    "--slot", "no good",       NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 64, "bad slot: exit %d:\n%s", rc, out);
        free(out);
    }
    {
        char *argv[] = {script, "--url", url, "--adapter-dir", empty, "--pattern", "x*", NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 64, "nothing matches: exit %d:\n%s", rc, out);
        has(out, "no adapter directory in");
        free(out);
    }
    {
        char *argv[] = {script,      "--url",  url, "--adapter-dir", (char *)itu_adapters_dir(),
                        "--pattern", "demo-*", NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 3, "unreachable: exit %d:\n%s", rc, out);
        has(out, "lorad unreachable");
        free(out);
    }
    {
        char *argv[] = {script, "-c", "/nonexistent/lorad.json", "--pattern", "x*", NULL};
        rc = itu_run(argv, &out);
        ck_assert_msg(rc == 64, "no config: exit %d:\n%s", rc, out);
        free(out);
    }
    tu_rmrf(dir);
    free(script);
    free(s);
    free(empty);
    free(dir);
}
END_TEST

/* SPEC 1, 11: the instance name is the slot. Skipped until slots land. */
START_TEST(test_update_slot)
{
    struct upd u;
    cJSON *st;
    bool slots;
    upd_start(&u);
    st = upd_status(&u);
    slots = cJSON_IsObject(cJSON_GetObjectItem(st, "slots"));
    cJSON_Delete(st);
    if (!slots) {
        printf("SKIP: itest_update test_update_slot: this lorad has no slots yet (GET /status "
               "has no \"slots\" member); lorad-update.sh --slot and canary-rollout.sh --slot "
               "were not tested against a slot\n");
        fflush(stdout);
        upd_stop(&u);
        return;
    }
    /* a new slot: created by the rollout, from the base model */
    check_update_cycle(&u, "team-a", "(base) v0");
    expect_serving(&u, NULL, "support-v1"); /* default untouched */
    upd_stop(&u);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    Suite *s = suite_create("itest_update");
    TCase *tc = tcase_create("update");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_update_default);
    tcase_add_test(tc, test_update_errors);
    tcase_add_test(tc, test_update_slot);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    itu_model_free(&M);
    itu_cleanup();
    return failed ? 1 : 0;
}
