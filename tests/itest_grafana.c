/* lorad — tests/itest_grafana.c: the Grafana dashboard deploy/grafana/lorad.json
 * against a real Prometheus (SPEC.md 11).
 *
 * - test_dashboard_shape: the file is a Grafana dashboard (title, uid,
 *   schemaVersion, panels with unique ids and a 24-column grid), has a
 *   Prometheus datasource variable that every panel and target uses, every
 *   panel but a row has targets with an expr, and the metrics the dashboard
 *   is for (request rate, errors, latency, batch rows, queue depth,
 *   in-flight, swaps, rollbacks, stage and commit durations, state-file
 *   failures, canary percent, resident snapshot memory, generation) each
 *   appear in some expr.
 * - test_dashboard_queries: lorad (one worker, queue_max_requests 2, so
 *   eight clients also get 503 overloaded) is scraped every second by
 *   Debian's prometheus (a temp config and storage directory on a loopback
 *   port) while it serves load, commits a swap, refuses one (bad-shape),
 *   rolls back and starts a canary at 25%. After a few more scrapes EVERY
 *   target's expr is evaluated through /api/v1/query, with $__rate_interval,
 *   $__interval and $__range replaced by 1m and $instance by .*, and each
 *   must return at least one series with a finite value; the panels that
 *   show that story (request rate with a canary series, errors, swaps ok
 *   and failed, rollbacks, canary percent 25, stage and commit durations)
 *   must show it (values above zero). A target naming a lorad_ metric
 *   this build's /metrics does not export yet, one that other work adds
 *   (gr_pending), prints "SKIP: panel X: metric Y not exported by this
 *   build" instead (it becomes active once the build exports it); any
 *   other lorad_ name /metrics lacks fails. Prometheus is killed at the end. Without
 *   /usr/bin/prometheus (Debian package prometheus) the test prints SKIP.
 *
 * Sources are found relative to $LORAD_SRCDIR (default: the current
 * directory, the repository root under `make check`); $PROMETHEUS_BIN
 * overrides /usr/bin/prometheus.
 */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "itestutil.h"
#include "itload.h"

#define GR_WINDOW "1m"
#define GR_MAX_NAMES 256

/* What the dashboard must show (a metric name or a prefix of samples). */
static const char *const gr_required[] = {
    "lorad_requests_total",      "lorad_slot_request_duration_seconds_bucket",
    "lorad_batch_rows",          "lorad_queue_depth",
    "lorad_inflight_requests",   "lorad_swaps_total",
    "lorad_rollbacks_total",     "lorad_swap_stage_seconds",
    "lorad_swap_commit_seconds", "lorad_state_write_failures_total",
    "lorad_canary_percent",      "lorad_resident_snapshot_bytes",
    "lorad_generation",
};

/* Metrics that other work adds to /metrics (the "durable" and "slots"
 * branches): a panel on one of them is skipped while this build does not
 * export it. Any other lorad_ name /metrics lacks is a mistake. */
static const char *const gr_pending[] = {
    "lorad_state_write_failures_total",
    "lorad_resident_snapshot_bytes",
};

static bool gr_is_pending(const char *name)
{
    for (size_t i = 0; i < sizeof(gr_pending) / sizeof(gr_pending[0]); i++)
        if (!strcmp(name, gr_pending[i]))
            return true;
    return false;
}

static const char *gr_srcdir(void)
{
    const char *s = getenv("LORAD_SRCDIR");
    return s && *s ? s : ".";
}

static const char *gr_prometheus_bin(void)
{
    const char *s = getenv("PROMETHEUS_BIN");
    return s && *s ? s : "/usr/bin/prometheus";
}

static void gr_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static cJSON *gr_load_dashboard(void)
{
    char *path = tu_path(gr_srcdir(), "deploy/grafana/lorad.json");
    size_t len = 0;
    char *text = (char *)tu_read_file(path, &len);
    cJSON *j;
    text[len] = '\0';
    j = cJSON_Parse(text);
    ck_assert_msg(j != NULL && cJSON_IsObject(j), "%s is not a JSON object", path);
    free(text);
    free(path);
    return j;
}

static bool gr_is_ds(const cJSON *ds)
{
    const char *type = itu_jstr(ds, "type"), *uid = itu_jstr(ds, "uid");
    return type && uid && !strcmp(type, "prometheus") &&
           (!strcmp(uid, "${datasource}") || !strcmp(uid, "$datasource"));
}

/* ---- the file ---- */

START_TEST(test_dashboard_shape)
{
    cJSON *d = gr_load_dashboard(), *p, *t, *v;
    bool have_ds_var = false, ids[1024] = {false};
    char all_exprs[65536] = "";
    int npanels = 0, ntargets = 0;
    ck_assert_msg(itu_jstr(d, "title") && itu_jstr(d, "uid"), "no title or uid");
    ck_assert_msg(itu_jnum(d, "schemaVersion", 0) >= 30, "schemaVersion missing or old");
    cJSON_ArrayForEach(v, itu_jget(d, "templating.list"))
    {
        const char *type = itu_jstr(v, "type"), *q = itu_jstr(v, "query");
        const char *name = itu_jstr(v, "name");
        if (type && q && name && !strcmp(type, "datasource") && !strcmp(q, "prometheus") &&
            !strcmp(name, "datasource"))
            have_ds_var = true;
    }
    ck_assert_msg(have_ds_var, "no datasource variable \"datasource\" of type prometheus");
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(d, "panels"))
    {
        const char *type = itu_jstr(p, "type"), *title = itu_jstr(p, "title");
        int id = (int)itu_jnum(p, "id", -1);
        double x = itu_jnum(p, "gridPos.x", -1), w = itu_jnum(p, "gridPos.w", -1);
        ck_assert_msg(type && title, "panel %d: no type or title", npanels);
        ck_assert_msg(id >= 0 && id < 1024 && !ids[id], "panel %s: id %d missing or repeated",
                      title, id);
        ids[id] = true;
        ck_assert_msg(x >= 0 && w > 0 && x + w <= 24 && itu_jnum(p, "gridPos.h", 0) > 0 &&
                          itu_jnum(p, "gridPos.y", -1) >= 0,
                      "panel %s: gridPos outside the 24-column grid", title);
        npanels++;
        if (!strcmp(type, "row"))
            continue;
        ck_assert_msg(gr_is_ds(cJSON_GetObjectItem(p, "datasource")),
                      "panel %s: datasource is not the ${datasource} variable", title);
        ck_assert_msg(itu_jsize(p, "targets") > 0, "panel %s: no targets", title);
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(p, "targets"))
        {
            const char *expr = itu_jstr(t, "expr");
            ck_assert_msg(expr && *expr && itu_jstr(t, "refId"),
                          "panel %s: a target without expr or refId", title);
            ck_assert_msg(gr_is_ds(cJSON_GetObjectItem(t, "datasource")),
                          "panel %s: target %s: datasource is not ${datasource}", title,
                          itu_jstr(t, "refId"));
            snprintf(all_exprs + strlen(all_exprs), sizeof(all_exprs) - strlen(all_exprs), "%s\n",
                     expr);
            ntargets++;
        }
    }
    for (size_t i = 0; i < sizeof(gr_required) / sizeof(gr_required[0]); i++)
        ck_assert_msg(strstr(all_exprs, gr_required[i]) != NULL, "no panel shows %s",
                      gr_required[i]);
    printf("itest_grafana: deploy/grafana/lorad.json: %d panels, %d targets\n", npanels, ntargets);
    cJSON_Delete(d);
}
END_TEST

/* ---- Prometheus ---- */

struct gr_prom {
    pid_t pid;
    int port;
    char *dir, *log;
    struct itu_client *c;
};

static struct gr_prom *gr_prom_start(int lorad_port)
{
    struct gr_prom *p = calloc(1, sizeof(*p));
    char *cfg, *data, arg_cfg[4200], arg_data[4200], arg_listen[64];
    int fd;
    ck_assert(p != NULL);
    p->dir = itu_tmpdir();
    p->port = itu_free_port();
    cfg = tu_path(p->dir, "prometheus.yml");
    data = tu_path(p->dir, "data");
    p->log = tu_path(p->dir, "prometheus.log");
    tu_write_text(cfg,
                  "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                  "scrape_configs:\n  - job_name: lorad\n    scrape_interval: 1s\n"
                  "    scrape_timeout: 900ms\n    static_configs:\n"
                  "      - targets: ['127.0.0.1:%d']\n",
                  lorad_port);
    snprintf(arg_cfg, sizeof(arg_cfg), "--config.file=%s", cfg);
    snprintf(arg_data, sizeof(arg_data), "--storage.tsdb.path=%s", data);
    snprintf(arg_listen, sizeof(arg_listen), "--web.listen-address=127.0.0.1:%d", p->port);
    fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    ck_assert_msg(fd >= 0, "open %s: %s", p->log, strerror(errno));
    p->pid = fork();
    ck_assert_msg(p->pid >= 0, "fork: %s", strerror(errno));
    if (p->pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(gr_prometheus_bin(), gr_prometheus_bin(), arg_cfg, arg_data, arg_listen,
              "--log.level=warn", "--storage.tsdb.retention.time=1h", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", gr_prometheus_bin(), strerror(errno));
        _exit(127);
    }
    close(fd);
    free(cfg);
    free(data);
    p->c = itu_client_new(p->port);
    return p;
}

static const char *gr_prom_log(const struct gr_prom *p)
{
    static char buf[4096];
    FILE *f = fopen(p->log, "r");
    size_t n = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        long end = ftell(f);
        fseek(f, end > (long)sizeof(buf) - 1 ? end - (long)sizeof(buf) + 1 : 0, SEEK_SET);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static void gr_prom_stop(struct gr_prom **pp)
{
    struct gr_prom *p = *pp;
    int st;
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        for (int i = 0; i < 1000 && waitpid(p->pid, &st, WNOHANG) == 0; i++)
            gr_sleep_ms(10);
        if (waitpid(p->pid, &st, WNOHANG) == 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
        }
    }
    itu_client_free(&p->c);
    free(p->log);
    free(p->dir);
    free(p);
    *pp = NULL;
}

static void gr_prom_ready(struct gr_prom *p)
{
    for (int i = 0; i < 600; i++) { /* 600 x 50 ms = 30 s */
        struct itu_resp r;
        int st;
        ck_assert_msg(waitpid(p->pid, &st, WNOHANG) == 0, "prometheus exited:\n%s", gr_prom_log(p));
        itu_client_do(p->c, "GET", "/-/ready", NULL, 0, NULL, NULL, 1000, &r);
        long s = r.status;
        itu_resp_free(&r);
        if (s == 200)
            return;
        gr_sleep_ms(50);
    }
    ck_abort_msg("prometheus not ready after 30 s:\n%s", gr_prom_log(p));
}

/* POST /api/v1/query; returns data.result (an array) detached from the
 * answer, or NULL with *why. */
static cJSON *gr_query(struct gr_prom *p, const char *expr, char *why, size_t wn)
{
    CURL *h = curl_easy_init();
    char *esc = curl_easy_escape(h, expr, 0), *body;
    struct itu_resp r;
    cJSON *res = NULL;
    size_t n = strlen(esc) + 8;
    ck_assert((body = malloc(n)) != NULL);
    snprintf(body, n, "query=%s", esc);
    itu_client_do(p->c, "POST", "/api/v1/query", body, strlen(body),
                  "application/x-www-form-urlencoded", NULL, 10000, &r);
    const char *status = itu_jstr(r.json, "status");
    if (r.status == 200 && status && !strcmp(status, "success") &&
        cJSON_IsArray(itu_jget(r.json, "data.result")))
        res = cJSON_DetachItemViaPointer(cJSON_GetObjectItem(r.json, "data"),
                                         itu_jget(r.json, "data.result"));
    else
        snprintf(why, wn, "%s", itu_describe(&r));
    itu_resp_free(&r);
    free(body);
    curl_free(esc);
    curl_easy_cleanup(h);
    return res;
}

/* The value of the first series of `expr` (NAN when none). */
static double gr_scalar(struct gr_prom *p, const char *expr)
{
    char why[1024];
    cJSON *res = gr_query(p, expr, why, sizeof(why));
    double v = NAN;
    const char *s = itu_jstr(res, "0.value.1");
    if (s)
        v = strtod(s, NULL);
    cJSON_Delete(res);
    return v;
}

/* Waits until Prometheus holds a scrape of lorad at least `after` (unix
 * seconds; 0: any scrape). Returns that scrape's time. */
static double gr_wait_scrape(struct gr_prom *p, double after)
{
    for (int i = 0; i < 300; i++) { /* 300 x 100 ms = 30 s */
        double t = gr_scalar(p, "max(timestamp(lorad_up))");
        if (!isnan(t) && t >= after)
            return t;
        gr_sleep_ms(100);
    }
    ck_abort_msg("prometheus has no scrape of lorad after %.0f:\n%s", after, gr_prom_log(p));
    return 0;
}

/* ---- lorad's metric names ---- */

struct gr_names {
    char *v[GR_MAX_NAMES];
    int n;
};

/* Every sample name of lorad's /metrics (with _bucket/_sum/_count). */
static void gr_exported(struct itu_daemon *d, struct gr_names *out)
{
    struct itu_resp r;
    ck_assert_msg(itu_get(d, "/metrics", &r) == 200, "GET /metrics: %s", itu_describe(&r));
    out->n = 0;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        size_t k = strcspn(line, "{ ");
        bool seen = false;
        if (line[0] == '#' || k == 0)
            continue;
        for (int i = 0; i < out->n && !seen; i++)
            seen = strlen(out->v[i]) == k && !strncmp(out->v[i], line, k);
        if (!seen && out->n < GR_MAX_NAMES)
            out->v[out->n++] = strndup(line, k);
    }
    itu_resp_free(&r);
}

static bool gr_has(const struct gr_names *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], name))
            return true;
    return false;
}

static void gr_names_free(struct gr_names *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->v[i]);
    s->n = 0;
}

/* The first lorad_ metric in expr that `exported` lacks, into missing;
 * false when there is none. */
static bool gr_missing_metric(const char *expr, const struct gr_names *exported, char *missing,
                              size_t n)
{
    for (const char *s = strstr(expr, "lorad_"); s; s = strstr(s + 1, "lorad_")) {
        size_t k = 0;
        if (s > expr && (isalnum((unsigned char)s[-1]) || s[-1] == '_'))
            continue;
        while (isalnum((unsigned char)s[k]) || s[k] == '_')
            k++;
        snprintf(missing, n, "%.*s", (int)k, s);
        if (!gr_has(exported, missing))
            return true;
    }
    return false;
}

/* expr with Grafana's variables replaced (malloc'd); NULL when a $ is left. */
static char *gr_substitute(const char *expr)
{
    static const char *const sub[][2] = {
        {"$__rate_interval", GR_WINDOW}, {"${__rate_interval}", GR_WINDOW},
        {"$__interval", GR_WINDOW},      {"${__interval}", GR_WINDOW},
        {"$__range", GR_WINDOW},         {"${__range}", GR_WINDOW},
        {"${instance}", ".*"},           {"$instance", ".*"},
    };
    size_t cap = strlen(expr) * 2 + 64, o = 0;
    char *out = malloc(cap);
    ck_assert(out != NULL);
    for (const char *s = expr; *s;) {
        size_t i, k = 0;
        for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
            if (!strncmp(s, sub[i][0], (k = strlen(sub[i][0]))))
                break;
        if (i < sizeof(sub) / sizeof(sub[0])) {
            o += (size_t)snprintf(out + o, cap - o, "%s", sub[i][1]);
            s += k;
        } else if (*s == '$') {
            free(out);
            return NULL;
        } else {
            out[o++] = *s++;
        }
        ck_assert(o + 8 < cap);
    }
    out[o] = '\0';
    return out;
}

/* At least one series with a finite value (instant vector or scalar). */
static bool gr_has_finite(const cJSON *result)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, result)
    {
        const char *v = itu_jstr(s, "value.1");
        if (v && isfinite(strtod(v, NULL)))
            return true;
    }
    return false;
}

/* Panels whose first target must show the story of gr_events: a value
 * above zero, and a series whose labels hold `label` (NULL: any); the
 * canary panel shows exactly 25. */
static const struct {
    const char *title;
    const char *label; /* "name=value" or NULL */
    double exact;      /* 0: any value > 0 */
} gr_story[] = {
    {"Request rate", "variant=canary", 0},
    {"Error rate (status >= 500)", NULL, 0},
    {"Swaps", "result=failed", 0},
    {"Swaps", "result=ok", 0},
    {"Rollbacks", NULL, 0},
    {"Canary percent", NULL, 25},
    {"Swap stage duration", NULL, 0},
    {"Commit duration", NULL, 0},
};

/* Whether some series of result has `label` and a value > 0 (== exact
 * when exact != 0). */
static bool gr_shows(const cJSON *result, const char *label, double exact)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, result)
    {
        const char *v = itu_jstr(s, "value.1");
        double x = v ? strtod(v, NULL) : NAN;
        if (label) {
            char name[64];
            const char *eq = strchr(label, '=');
            snprintf(name, sizeof(name), "metric.%.*s", (int)(eq - label), label);
            const char *got = itu_jstr(s, name);
            if (!got || strcmp(got, eq + 1) != 0)
                continue;
        }
        if (isfinite(x) && (exact != 0 ? x == exact : x > 0))
            return true;
    }
    return false;
}

/* gr_story's expectations for this panel's first target (refId A). */
static bool gr_story_ok(const char *title, const char *ref, const cJSON *res, char *why, size_t wn)
{
    for (size_t i = 0; i < sizeof(gr_story) / sizeof(gr_story[0]); i++) {
        if (strcmp(gr_story[i].title, title) != 0 || strcmp(ref, "A") != 0)
            continue;
        if (!gr_shows(res, gr_story[i].label, gr_story[i].exact)) {
            char *text = cJSON_PrintUnformatted(res);
            snprintf(why, wn, "expected a series%s%s with %s, got %.600s",
                     gr_story[i].label ? " with " : "", gr_story[i].label ? gr_story[i].label : "",
                     gr_story[i].exact != 0 ? "the value 25" : "a value above 0", text);
            free(text);
            return false;
        }
    }
    return true;
}

/* The control-plane story the panels are to show. */
static void gr_events(struct itu_daemon *d)
{
    struct itu_resp r;
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\": \"demo-b\"}"));
    itu_post(d, "/swap", "{\"adapter\": \"bad-shape\"}", &r);
    ck_assert_msg(r.status >= 400 && r.status < 500, "swap bad-shape: %s", itu_describe(&r));
    itu_resp_free(&r);
    cJSON_Delete(itu_post_ok(d, "/rollback", "{}"));
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\": \"demo-c\", \"canary_percent\": 25}"));
}

START_TEST(test_dashboard_queries)
{
    struct itu_daemon *d;
    struct itu_model *m;
    struct itl_load *load;
    struct itl_counts cnt;
    struct gr_prom *p;
    struct gr_names exported;
    cJSON *dash, *panel, *t;
    char failures[16384] = "", why[2048];
    int evaluated = 0, skipped = 0, nfail = 0;
    if (access(gr_prometheus_bin(), X_OK) != 0) {
        printf("SKIP: test_dashboard_queries: %s is not installed (Debian package prometheus); "
               "the dashboard's queries were not evaluated\n",
               gr_prometheus_bin());
        return;
    }
    m = itu_model_load(itu_model_dir());
    d = itu_daemon_start(NULL, "{\"workers\": 1, \"queue_max_requests\": 2}");
    p = gr_prom_start(d->port);
    gr_prom_ready(p);
    gr_wait_scrape(p, 0);
    load = itl_start(d, 8, 8, m->in);
    ck_assert_msg(itl_wait_more(load, 100, 20000), "no load: %s", itu_log_tail(d, 2000));
    double t0 = gr_wait_scrape(p, 0);
    gr_events(d);
    ck_assert_msg(itl_wait_more(load, 100, 20000), "the load stopped: %s", itu_log_tail(d, 2000));
    gr_wait_scrape(p, gr_wait_scrape(p, t0 + 1) + 3); /* the events are in some scrapes */
    itl_stop(&load, &cnt);
    ck_assert_msg(cnt.ok > 0 && cnt.s5xx > 0 && cnt.failed == 0,
                  "load: %ld answers, %ld ok, %ld 5xx, %ld without an answer (want ok and 5xx)",
                  cnt.requests, cnt.ok, cnt.s5xx, cnt.failed);
    gr_exported(d, &exported);
    dash = gr_load_dashboard();
    cJSON_ArrayForEach(panel, cJSON_GetObjectItem(dash, "panels"))
    {
        const char *title = itu_jstr(panel, "title");
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(panel, "targets"))
        {
            const char *expr = itu_jstr(t, "expr"), *ref = itu_jstr(t, "refId");
            char missing[128], *q = expr ? gr_substitute(expr) : NULL;
            cJSON *res;
            size_t o = strlen(failures);
            if (!q) {
                snprintf(failures + o, sizeof(failures) - o,
                         "panel \"%s\" %s: a Grafana variable the test does not know: %s\n", title,
                         ref, expr ? expr : "(no expr)");
                nfail++;
                continue;
            }
            if (gr_missing_metric(q, &exported, missing, sizeof(missing)) &&
                !gr_is_pending(missing)) {
                snprintf(failures + o, sizeof(failures) - o,
                         "panel \"%s\" %s: lorad does not export %s (a typo?)\n", title, ref,
                         missing);
                nfail++;
                free(q);
                continue;
            }
            if (gr_missing_metric(q, &exported, missing, sizeof(missing))) {
                printf("SKIP: panel \"%s\" %s: metric %s not exported by this build\n", title, ref,
                       missing);
                skipped++;
                free(q);
                continue;
            }
            res = gr_query(p, q, why, sizeof(why));
            evaluated++;
            if (res && gr_has_finite(res) && !gr_story_ok(title, ref, res, why, sizeof(why))) {
                snprintf(failures + o, sizeof(failures) - o, "panel \"%s\" %s: %s\n    %s\n", title,
                         ref, why, q);
                nfail++;
            } else if (!res || !gr_has_finite(res)) {
                snprintf(failures + o, sizeof(failures) - o, "panel \"%s\" %s: %s\n    %s\n", title,
                         ref,
                         !res                      ? why
                         : cJSON_GetArraySize(res) ? "only NaN/Inf values"
                                                   : "no data",
                         q);
                nfail++;
            }
            cJSON_Delete(res);
            free(q);
        }
    }
    ck_assert_msg(nfail == 0, "%d of %d dashboard queries failed against prometheus:\n%s", nfail,
                  evaluated, failures);
    printf("itest_grafana: %d queries returned data from prometheus (scraping lorad every 1 s, "
           "%ld requests: %ld ok, %ld 5xx), %d skipped\n",
           evaluated, cnt.requests, cnt.ok, cnt.s5xx, skipped);
    cJSON_Delete(dash);
    gr_names_free(&exported);
    gr_prom_stop(&p);
    ck_assert_int_eq(itu_daemon_stop(d, 10000), 0);
    itu_daemon_free(&d);
    itu_model_free(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("itest_grafana");
    TCase *tc = tcase_create("grafana");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_dashboard_shape);
    tcase_add_test(tc, test_dashboard_queries);
    suite_add_tcase(s, tc);
    itu_init();
    int failed = itu_run_suite(s);
    itu_cleanup();
    return failed ? 1 : 0;
}
