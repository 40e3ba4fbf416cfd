/* lorad — tests/itestutil.c: the integration-test harness (see
 * itestutil.h): demo tree, daemon processes, HTTP over libcurl, JSON
 * access and an independent reference of the model math. Nothing here
 * calls lib/. */
#include "itestutil.h"

#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *itu_root_dir;
static bool itu_in_setup; /* outside Check's test cases: no ck_* calls */

static void itu_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void itu_fail(const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (itu_in_setup) {
        fprintf(stderr, "%s\n", msg);
        exit(2);
    }
    ck_abort_msg("%s", msg);
    abort(); /* not reached */
}

#define ITU_CHECK(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            itu_fail(__VA_ARGS__);                                                                 \
    } while (0)

static char *itu_demo;
static char *itu_model;
static char *itu_adapters;

/* ---- small helpers ---- */

static void itu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static char *itu_strdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        itu_fail("itest: out of memory");
    return p;
}

static char *itu_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *itu_fmt(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        itu_fail("itest: out of memory");
    return s;
}

static char *itu_read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

/* ---- per-binary setup ---- */

const char *itu_lorad_bin(void)
{
    const char *b = getenv("LORAD_BIN");
    return b && *b ? b : "build/lorad";
}

static const char *itu_mkdemo_bin(void)
{
    const char *b = getenv("MKDEMO_BIN");
    return b && *b ? b : "build/lorad-mkdemo";
}

void itu_init(void)
{
    const char *tmp = getenv("TMPDIR");
    char buf[4096];
    itu_in_setup = true;
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "itest: curl_global_init failed\n");
        exit(2);
    }
    snprintf(buf, sizeof(buf), "%s/lorad-itest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(buf)) {
        fprintf(stderr, "itest: mkdtemp %s: %s\n", buf, strerror(errno));
        exit(2);
    }
    itu_root_dir = strdup(buf);
    itu_demo = tu_path(itu_root_dir, "demo");
    itu_model = tu_path(itu_demo, "model");
    itu_adapters = tu_path(itu_demo, "adapters");
    char *out = NULL;
    char *argv[] = {(char *)itu_mkdemo_bin(), itu_demo, NULL};
    int rc = itu_run(argv, &out);
    if (rc != 0) {
        fprintf(stderr, "itest: %s %s failed (exit %d):\n%s\n", argv[0], itu_demo, rc,
                out ? out : "");
        free(out);
        itu_cleanup();
        exit(2);
    }
    free(out);
}

int itu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    itu_in_setup = false;
    srunner_run_all(sr, CK_NORMAL);
    itu_in_setup = true;
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

void itu_cleanup(void)
{
    if (itu_root_dir && !getenv("ITEST_KEEP"))
        tu_rmrf(itu_root_dir);
    else if (itu_root_dir)
        fprintf(stderr, "itest: kept %s\n", itu_root_dir);
    free(itu_root_dir);
    free(itu_demo);
    free(itu_model);
    free(itu_adapters);
    itu_root_dir = itu_demo = itu_model = itu_adapters = NULL;
    curl_global_cleanup();
}

const char *itu_root(void)
{
    return itu_root_dir;
}
const char *itu_demo_dir(void)
{
    return itu_demo;
}
const char *itu_model_dir(void)
{
    return itu_model;
}
const char *itu_adapters_dir(void)
{
    return itu_adapters;
}

char *itu_tmpdir(void)
{
    char *tmpl = itu_fmt("%s/d-XXXXXX", itu_root_dir);
    if (!mkdtemp(tmpl))
        itu_fail("itest: mkdtemp %s: %s", tmpl, strerror(errno));
    return tmpl;
}

char *itu_sha256_file(const char *path)
{
    char *cmd = itu_fmt("sha256sum '%s'", path);
    char hex[128] = "";
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        itu_fail("itest: popen sha256sum: %s", strerror(errno));
    if (fscanf(p, "%64s", hex) != 1)
        hex[0] = 0;
    pclose(p);
    ITU_CHECK(strlen(hex) == 64, "itest: sha256sum %s gave no digest", path);
    return itu_strdup(hex);
}

int itu_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        itu_fail("itest: free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

int itu_run(char *const argv[], char **output)
{
    char path[] = "/tmp/lorad-itest-run-XXXXXX";
    int fd = mkstemp(path);
    int status = 0;
    if (fd < 0)
        itu_fail("itest: mkstemp: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        itu_fail("itest: fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (output)
        *output = itu_read_text(path);
    unlink(path);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

/* ---- the daemon ---- */

/* The harness defaults as a cJSON object. */
static cJSON *itu_config_defaults(const char *dir, int port)
{
    struct itu_model *m = itu_model_load(itu_model);
    cJSON *c = cJSON_CreateObject();
    char *listen = itu_fmt("127.0.0.1:%d", port);
    char *state = tu_path(dir, "state.json");
    cJSON_AddStringToObject(c, "listen", listen);
    cJSON_AddStringToObject(c, "model_dir", itu_model);
    cJSON_AddStringToObject(c, "adapter_dir", itu_adapters);
    cJSON_AddStringToObject(c, "initial_adapter", "demo-a");
    cJSON_AddStringToObject(c, "state_file", state);
    cJSON_AddNumberToObject(c, "workers", 2);
    cJSON_AddNumberToObject(c, "history", 4);
    cJSON_AddNumberToObject(c, "max_rank", 16);
    cJSON *t = cJSON_AddArrayToObject(c, "target_modules");
    for (size_t i = 0; i < m->n; i++)
        cJSON_AddItemToArray(t, cJSON_CreateString(m->L[i].name));
    cJSON_AddStringToObject(c, "log_level", "info");
    free(listen);
    free(state);
    itu_model_free(&m);
    return c;
}

char *itu_config_write(const char *dir, const char *overrides, int *port)
{
    int p = itu_free_port();
    cJSON *c = itu_config_defaults(dir, p);
    if (overrides) {
        cJSON *o = cJSON_Parse(overrides);
        ITU_CHECK(o && cJSON_IsObject(o), "itest: bad overrides %s", overrides);
        for (cJSON *it = o->child; it; it = it->next) {
            cJSON_DeleteItemFromObjectCaseSensitive(c, it->string);
            if (!cJSON_IsNull(it))
                cJSON_AddItemToObject(c, it->string, cJSON_Duplicate(it, 1));
        }
        cJSON_Delete(o);
    }
    const char *listen = itu_jstr(c, "listen");
    if (listen && strncmp(listen, "127.0.0.1:", 10) == 0)
        p = atoi(listen + 10);
    char *text = cJSON_Print(c);
    char *path = tu_path(dir, "lorad.json");
    tu_write_text(path, "%s\n", text);
    free(text);
    cJSON_Delete(c);
    if (port)
        *port = p;
    return path;
}

static bool itu_daemon_reap(struct itu_daemon *d, int *status_out, bool block)
{
    int status = 0;
    pid_t r;
    if (!d->pid)
        return true;
    do
        r = waitpid(d->pid, &status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    d->pid = 0;
    if (status_out) {
        if (r < 0)
            *status_out = -1;
        else if (WIFEXITED(status))
            *status_out = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
            *status_out = 128 + WTERMSIG(status);
        else
            *status_out = -1;
    }
    return true;
}

struct itu_client *itu_daemon_client(const struct itu_daemon *d)
{
    char *text = itu_read_text(d->config_path);
    cJSON *c = text ? cJSON_Parse(text) : NULL;
    const char *listen = itu_jstr(c, "listen");
    struct itu_client *cl = listen && strncmp(listen, "unix:", 5) == 0
                                ? itu_client_new_unix(listen + 5)
                                : itu_client_new(d->port);
    cJSON_Delete(c);
    free(text);
    return cl;
}

struct itu_daemon *itu_daemon_start(const char *dir, const char *overrides)
{
    struct itu_daemon *d = calloc(1, sizeof(*d));
    ITU_CHECK(d != NULL, "itest: out of memory");
    d->dir = dir ? itu_strdup(dir) : itu_tmpdir();
    d->config_path = itu_config_write(d->dir, overrides, &d->port);
    d->log_path = tu_path(d->dir, "lorad.log");
    d->state_path = tu_path(d->dir, "state.json");
    int fd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        itu_fail("itest: open %s: %s", d->log_path, strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        itu_fail("itest: fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(itu_lorad_bin(), itu_lorad_bin(), "--config", d->config_path, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", itu_lorad_bin(), strerror(errno));
        _exit(127);
    }
    close(fd);
    d->pid = pid;
    d->client = itu_daemon_client(d);
    for (int i = 0; i < 500; i++) { /* 500 x 20 ms = 10 s */
        struct itu_resp r;
        int st = 0;
        if (itu_daemon_reap(d, &st, false))
            itu_fail("itest: lorad exited with status %d before ready; log tail:\n%s", st,
                     itu_log_tail(d, 3000));
        itu_client_do(d->client, "GET", "/readyz", NULL, 0, NULL, NULL, 500, &r);
        long status = r.status;
        itu_resp_free(&r);
        if (status == 200)
            return d;
        itu_sleep_ms(20);
    }
    itu_daemon_kill(d);
    itu_fail("itest: lorad not ready (GET /readyz != 200) after 10 s; log tail:\n%s",
             itu_log_tail(d, 3000));
    return NULL;
}

void itu_daemon_signal(struct itu_daemon *d, int sig)
{
    if (d && d->pid)
        kill(d->pid, sig);
}

int itu_daemon_wait(struct itu_daemon *d, int timeout_ms)
{
    int st = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        if (itu_daemon_reap(d, &st, false))
            return st;
        itu_sleep_ms(10);
    }
    itu_daemon_kill(d);
    return -1;
}

int itu_daemon_stop(struct itu_daemon *d, int timeout_ms)
{
    if (!d->pid)
        return -1;
    itu_daemon_signal(d, SIGTERM);
    return itu_daemon_wait(d, timeout_ms);
}

void itu_daemon_kill(struct itu_daemon *d)
{
    if (d && d->pid) {
        kill(d->pid, SIGKILL);
        itu_daemon_reap(d, NULL, true);
    }
}

void itu_daemon_free(struct itu_daemon **dp)
{
    struct itu_daemon *d = dp ? *dp : NULL;
    if (!d)
        return;
    itu_daemon_kill(d);
    itu_client_free(&d->client);
    free(d->dir);
    free(d->config_path);
    free(d->log_path);
    free(d->state_path);
    free(d);
    *dp = NULL;
}

const char *itu_log_tail(const struct itu_daemon *d, size_t max)
{
    static _Thread_local char buf[8192];
    char *text = d ? itu_read_text(d->log_path) : NULL;
    if (max >= sizeof(buf))
        max = sizeof(buf) - 1;
    if (!text) {
        snprintf(buf, sizeof(buf), "(no log)");
        return buf;
    }
    size_t n = strlen(text);
    const char *from = n > max ? text + n - max : text;
    snprintf(buf, sizeof(buf), "%s", from);
    free(text);
    return buf;
}

/* ---- HTTP ---- */

struct itu_client {
    CURL *curl;
    int port;
    char *unix_path; /* set: talk HTTP over this unix socket instead */
};

struct itu_buf {
    char *p;
    size_t len, cap;
};

static size_t itu_buf_put(struct itu_buf *b, const char *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return 0;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return n;
}

static size_t itu_write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    return itu_buf_put(ud, data, size * nmemb);
}

static size_t itu_header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct itu_buf *b = ud;
    size_t n = size * nmemb;
    /* A new status line starts a new header block (100-continue, ...). */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        b->len = 0;
    return itu_buf_put(b, data, n);
}

struct itu_client *itu_client_new(int port)
{
    struct itu_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->curl = curl_easy_init();
    c->port = port;
    if (!c->curl) {
        free(c);
        return NULL;
    }
    return c;
}

struct itu_client *itu_client_new_unix(const char *path)
{
    struct itu_client *c = itu_client_new(0);
    if (c && !(c->unix_path = strdup(path)))
        itu_client_free(&c);
    return c;
}

void itu_client_free(struct itu_client **c)
{
    if (!c || !*c)
        return;
    free((*c)->unix_path);
    curl_easy_cleanup((*c)->curl);
    free(*c);
    *c = NULL;
}

long itu_client_do(struct itu_client *c, const char *method, const char *path, const void *body,
                   size_t len, const char *ctype, const char *const *headers, int timeout_ms,
                   struct itu_resp *out)
{
    struct itu_buf rb = {0}, hb = {0};
    struct curl_slist *hl = NULL;
    char url[512], line[512];
    CURL *h = c->curl;
    memset(out, 0, sizeof(*out));
    curl_easy_reset(h);
    if (c->unix_path) {
        snprintf(url, sizeof(url), "http://localhost%s", path);
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
    } else {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", c->port, path);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 30000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, itu_write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &rb);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, itu_header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hb);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, out->err);
    if (strcmp(method, "GET") == 0 && !body) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        if (strcmp(method, "POST") != 0 && strcmp(method, "GET") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip */
    if (ctype) {
        snprintf(line, sizeof(line), "Content-Type: %s", ctype);
        hl = curl_slist_append(hl, line);
    } else if (body || strcmp(method, "GET") != 0) {
        hl = curl_slist_append(hl, "Content-Type:");
    }
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    } else {
        out->status = 0;
        if (!out->err[0])
            snprintf(out->err, sizeof(out->err), "%s", curl_easy_strerror(rc));
    }
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hl);
    out->body = rb.p ? rb.p : calloc(1, 1);
    out->len = rb.len;
    out->headers = hb.p ? hb.p : calloc(1, 1);
    if (out->len)
        out->json = cJSON_ParseWithLength(out->body, out->len);
    return out->status;
}

void itu_resp_free(struct itu_resp *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->headers);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

long itu_req(struct itu_daemon *d, const char *method, const char *path, const void *body,
             size_t len, const char *ctype, const char *const *headers, struct itu_resp *out)
{
    return itu_client_do(d->client, method, path, body, len, ctype, headers, 0, out);
}

long itu_get(struct itu_daemon *d, const char *path, struct itu_resp *out)
{
    return itu_req(d, "GET", path, NULL, 0, NULL, NULL, out);
}

long itu_post(struct itu_daemon *d, const char *path, const char *json, struct itu_resp *out)
{
    return itu_req(d, "POST", path, json, strlen(json), "application/json", NULL, out);
}

bool itu_header(const struct itu_resp *r, const char *name, char *buf, size_t n)
{
    size_t nl = strlen(name);
    const char *p = r->headers;
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            const char *end = p + ll;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == '\r' || end[-1] == ' '))
                end--;
            snprintf(buf, n, "%.*s", (int)(end - v), v);
            return true;
        }
        p = eol ? eol + 1 : NULL;
    }
    if (n)
        buf[0] = 0;
    return false;
}

const char *itu_describe(const struct itu_resp *r)
{
    static _Thread_local char buf[1024];
    if (r->status == 0)
        snprintf(buf, sizeof(buf), "no HTTP answer (%s)", r->err);
    else
        snprintf(buf, sizeof(buf), "status %ld body %.600s", r->status, r->body ? r->body : "");
    return buf;
}

bool itu_error_shape_ok(const struct itu_resp *r, const char **why)
{
    const char *w = NULL;
    cJSON *e = r->json ? cJSON_GetObjectItemCaseSensitive(r->json, "error") : NULL;
    if (!r->json || !cJSON_IsObject(r->json))
        w = "body is not a JSON object";
    else if (cJSON_GetArraySize(r->json) != 1 || !cJSON_IsObject(e))
        w = "top level is not exactly {\"error\": {...}}";
    else if (cJSON_GetArraySize(e) != 2)
        w = "\"error\" does not have exactly the members code and message";
    else if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "code")))
        w = "error.code is not a string";
    else if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")))
        w = "error.message is not a string";
    else if (!cJSON_GetObjectItemCaseSensitive(e, "message")->valuestring[0])
        w = "error.message is empty";
    if (why)
        *why = w ? w : "ok";
    return w == NULL;
}

const char *itu_error_code(const struct itu_resp *r)
{
    const char *c = itu_jstr(r->json, "error.code");
    return c ? c : "";
}

/* ---- JSON ---- */

cJSON *itu_jget(const cJSON *root, const char *path)
{
    char comp[256];
    const cJSON *cur = root;
    const char *p = path;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof(comp))
            return NULL;
        memcpy(comp, p, n);
        comp[n] = 0;
        if (cJSON_IsArray(cur)) {
            char *end;
            long i = strtol(comp, &end, 10);
            cur = (*end || i < 0) ? NULL : cJSON_GetArrayItem(cur, (int)i);
        } else if (cJSON_IsObject(cur)) {
            cur = cJSON_GetObjectItemCaseSensitive(cur, comp);
        } else {
            cur = NULL;
        }
        p = dot ? dot + 1 : p + n;
    }
    return (cJSON *)cur;
}

double itu_jnum(const cJSON *root, const char *path, double dflt)
{
    cJSON *j = itu_jget(root, path);
    return cJSON_IsNumber(j) ? j->valuedouble : dflt;
}

const char *itu_jstr(const cJSON *root, const char *path)
{
    cJSON *j = itu_jget(root, path);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

int itu_jsize(const cJSON *root, const char *path)
{
    cJSON *j = itu_jget(root, path);
    return (cJSON_IsArray(j) || cJSON_IsObject(j)) ? cJSON_GetArraySize(j) : -1;
}

/* ---- request bodies ---- */

char *itu_json_rows(const double *x, int rows, int width, bool batch, const char *extra)
{
    struct itu_buf b = {0};
    char num[64];
    bool many = batch || rows != 1;
    itu_buf_put(&b, many ? "{\"inputs\":[" : "{\"input\":", many ? 11 : 9);
    for (int r = 0; r < rows; r++) {
        itu_buf_put(&b, r ? ",[" : "[", r ? 2 : 1);
        for (int i = 0; i < width; i++) {
            int n = snprintf(num, sizeof(num), "%s%.9g", i ? "," : "",
                             (double)(float)x[(size_t)r * width + i]);
            itu_buf_put(&b, num, (size_t)n);
        }
        itu_buf_put(&b, "]", 1);
    }
    if (many)
        itu_buf_put(&b, "]", 1);
    if (extra && *extra) {
        itu_buf_put(&b, ",", 1);
        itu_buf_put(&b, extra, strlen(extra));
    }
    itu_buf_put(&b, "}", 1);
    if (!b.p)
        itu_fail("itest: out of memory");
    return b.p;
}

float *itu_f32_rows(const double *x, int rows, int width)
{
    size_t n = (size_t)rows * width;
    float *f = malloc(n ? n * sizeof(float) : 1);
    ITU_CHECK(f != NULL, "itest: out of memory");
    for (size_t i = 0; i < n; i++)
        f[i] = (float)x[i];
    return f;
}

static int itu_row_values(const cJSON *row, int width, float *out)
{
    int k = 0;
    if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != width)
        return -1;
    for (const cJSON *v = row->child; v; v = v->next, k++) {
        if (cJSON_IsNumber(v))
            out[k] = (float)v->valuedouble;
        else if (cJSON_IsNull(v))
            out[k] = NAN;
        else
            return -1;
    }
    return k;
}

int itu_json_outputs(const cJSON *json, int rows, int width, float *out)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(json, "outputs");
    if (o) {
        if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) != rows)
            return -1;
        int r = 0;
        for (const cJSON *row = o->child; row; row = row->next, r++)
            if (itu_row_values(row, width, out + (size_t)r * width) < 0)
                return -1;
        return rows * width;
    }
    o = cJSON_GetObjectItemCaseSensitive(json, "output");
    if (!o || rows != 1 || itu_row_values(o, width, out) < 0)
        return -1;
    return width;
}

/* ---- raw safetensors reading (independent of lib/safetensors.c) ---- */

struct itu_tensor {
    char *name;
    int ndim;
    uint64_t shape[4];
    size_t nelems;
    double *v; /* decoded */
};

struct itu_st {
    size_t n;
    struct itu_tensor *t;
};

static void itu_st_free(struct itu_st *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->t[i].name);
        free(st->t[i].v);
    }
    free(st->t);
    st->t = NULL;
    st->n = 0;
}

static double itu_decode(const uint8_t *p, const char *dtype)
{
    if (strcmp(dtype, "F32") == 0) {
        uint32_t u =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    return strcmp(dtype, "F16") == 0 ? tu_f16_value(h) : tu_bf16_value(h);
}

static void itu_st_load(const char *path, struct itu_st *st)
{
    size_t len;
    uint8_t *img = tu_read_file(path, &len);
    memset(st, 0, sizeof(*st));
    ITU_CHECK(len >= 8, "itest: %s: too short", path);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)img[i] << (8 * i);
    ITU_CHECK(hl <= len - 8, "itest: %s: header length", path);
    cJSON *h = cJSON_ParseWithLength((const char *)img + 8, hl);
    ITU_CHECK(cJSON_IsObject(h), "itest: %s: header is not JSON", path);
    st->t = calloc((size_t)cJSON_GetArraySize(h) + 1, sizeof(*st->t));
    const uint8_t *data = img + 8 + hl;
    size_t dlen = len - 8 - hl;
    for (cJSON *e = h->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0)
            continue;
        struct itu_tensor *t = &st->t[st->n++];
        const char *dt = itu_jstr(e, "dtype");
        cJSON *shape = itu_jget(e, "shape");
        size_t es;
        ITU_CHECK(dt != NULL && cJSON_IsArray(shape), "itest: %s: %s", path, e->string);
        es = strcmp(dt, "F32") == 0 ? 4 : (!strcmp(dt, "F16") || !strcmp(dt, "BF16")) ? 2 : 0;
        ITU_CHECK(es > 0, "itest: %s: %s: dtype %s not in the reference", path, e->string, dt);
        t->name = itu_strdup(e->string);
        t->nelems = 1;
        for (cJSON *d = shape->child; d; d = d->next) {
            ITU_CHECK(t->ndim < 4, "itest: %s: rank", path);
            t->shape[t->ndim++] = (uint64_t)d->valuedouble;
            t->nelems *= (size_t)d->valuedouble;
        }
        size_t b = (size_t)itu_jnum(e, "data_offsets.0", -1);
        size_t en = (size_t)itu_jnum(e, "data_offsets.1", -1);
        ITU_CHECK(b <= en && en <= dlen && en - b == t->nelems * es, "itest: %s: %s: offsets", path,
                  e->string);
        t->v = malloc(t->nelems * sizeof(double) + 1);
        for (size_t k = 0; k < t->nelems; k++)
            t->v[k] = itu_decode(data + b + k * es, dt);
    }
    cJSON_Delete(h);
    free(img);
}

/* The tensor named `name`, with the PEFT prefix "base_model.model."
 * optional; NULL when absent. */
static struct itu_tensor *itu_st_find(struct itu_st *st, const char *name)
{
    static const char pre[] = "base_model.model.";
    for (size_t i = 0; i < st->n; i++) {
        const char *n = st->t[i].name;
        if (strncmp(n, pre, sizeof(pre) - 1) == 0)
            n += sizeof(pre) - 1;
        if (strcmp(n, name) == 0)
            return &st->t[i];
    }
    return NULL;
}

/* ---- reference model ---- */

struct itu_model *itu_model_load(const char *model_dir)
{
    char *cp = tu_path(model_dir, "config.json");
    char *sp = tu_path(model_dir, "model.safetensors");
    char *text = itu_read_text(cp);
    ITU_CHECK(text != NULL, "itest: cannot read %s", cp);
    cJSON *c = cJSON_Parse(text);
    cJSON *layers = itu_jget(c, "layers");
    ITU_CHECK(cJSON_IsArray(layers), "itest: %s: no layers", cp);
    struct itu_st st;
    itu_st_load(sp, &st);
    struct itu_model *m = calloc(1, sizeof(*m));
    m->n = (size_t)cJSON_GetArraySize(layers);
    m->L = calloc(m->n, sizeof(*m->L));
    size_t i = 0;
    for (cJSON *l = layers->child; l; l = l->next, i++) {
        struct itu_ref_layer *L = &m->L[i];
        const char *act = itu_jstr(l, "activation");
        bool fifo = cJSON_IsTrue(itu_jget(l, "fan_in_fan_out"));
        char key[512];
        L->name = itu_strdup(itu_jstr(l, "name"));
        L->in = (int)itu_jnum(l, "in_features", 0);
        L->out = (int)itu_jnum(l, "out_features", 0);
        snprintf(L->act, sizeof(L->act), "%s", act ? act : "none");
        snprintf(key, sizeof(key), "%s.weight", L->name);
        struct itu_tensor *w = itu_st_find(&st, key);
        ITU_CHECK(w && w->nelems == (size_t)L->in * L->out, "itest: %s: %s", sp, key);
        L->W = malloc(w->nelems * sizeof(double));
        for (int o = 0; o < L->out; o++)
            for (int k = 0; k < L->in; k++)
                L->W[(size_t)o * L->in + k] =
                    fifo ? w->v[(size_t)k * L->out + o] : w->v[(size_t)o * L->in + k];
        if (cJSON_IsTrue(itu_jget(l, "bias"))) {
            snprintf(key, sizeof(key), "%s.bias", L->name);
            struct itu_tensor *b = itu_st_find(&st, key);
            ITU_CHECK(b && b->nelems == (size_t)L->out, "itest: %s: %s", sp, key);
            L->b = malloc(b->nelems * sizeof(double));
            memcpy(L->b, b->v, b->nelems * sizeof(double));
        }
    }
    m->in = m->L[0].in;
    m->out = m->L[m->n - 1].out;
    itu_st_free(&st);
    cJSON_Delete(c);
    free(text);
    free(cp);
    free(sp);
    return m;
}

void itu_model_free(struct itu_model **mp)
{
    struct itu_model *m = mp ? *mp : NULL;
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->L[i].name);
        free(m->L[i].W);
        free(m->L[i].b);
    }
    free(m->L);
    free(m);
    *mp = NULL;
}

/* Value of the first key of `pattern` (an object, file order) matching the
 * layer name as ^(.*\.)?(KEY)$ (POSIX ERE), else dflt. */
static double itu_pattern_value(const cJSON *pattern, const char *layer, double dflt)
{
    if (!cJSON_IsObject(pattern))
        return dflt;
    for (const cJSON *k = pattern->child; k; k = k->next) {
        char *re_text = itu_fmt("^(.*\\.)?(%s)$", k->string);
        regex_t re;
        int ok = regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB);
        free(re_text);
        ITU_CHECK(ok == 0, "itest: pattern %s does not compile", k->string);
        int hit = regexec(&re, layer, 0, NULL, 0) == 0;
        regfree(&re);
        if (hit && cJSON_IsNumber(k))
            return k->valuedouble;
    }
    return dflt;
}

static double *itu_copy_values(const struct itu_tensor *t)
{
    double *v = malloc(t->nelems * sizeof(double) + 1);
    memcpy(v, t->v, t->nelems * sizeof(double));
    return v;
}

static void itu_adapter_layer(struct itu_adapter *a, const struct itu_ref_layer *L, size_t i,
                              struct itu_st *st, const cJSON *cfg, const char *dir)
{
    char key[512];
    struct tu_lora *lo = &a->lora[i];
    snprintf(key, sizeof(key), "%s.lora_A.weight", L->name);
    struct itu_tensor *A = itu_st_find(st, key);
    snprintf(key, sizeof(key), "%s.lora_B.weight", L->name);
    struct itu_tensor *B = itu_st_find(st, key);
    snprintf(key, sizeof(key), "%s.weight", L->name);
    struct itu_tensor *Wr = itu_st_find(st, key);
    snprintf(key, sizeof(key), "%s.bias", L->name);
    struct itu_tensor *br = itu_st_find(st, key);
    if (Wr)
        a->W_repl[i] = itu_copy_values(Wr); /* same layout as base: [out][in] */
    if (br)
        a->b_repl[i] = itu_copy_values(br);
    if (!A && !B)
        return;
    ITU_CHECK(A && B, "itest: %s: %s has only one of lora_A/lora_B", dir, L->name);
    double r = itu_pattern_value(itu_jget(cfg, "rank_pattern"), L->name, itu_jnum(cfg, "r", 8));
    double alpha =
        itu_pattern_value(itu_jget(cfg, "alpha_pattern"), L->name, itu_jnum(cfg, "lora_alpha", 8));
    bool rs = cJSON_IsTrue(itu_jget(cfg, "use_rslora"));
    lo->r = (int)r;
    ITU_CHECK(A->ndim == 2 && A->shape[0] == (uint64_t)lo->r && A->shape[1] == (uint64_t)L->in,
              "itest: %s: %s lora_A shape", dir, L->name);
    ITU_CHECK(B->ndim == 2 && B->shape[0] == (uint64_t)L->out && B->shape[1] == (uint64_t)lo->r,
              "itest: %s: %s lora_B shape", dir, L->name);
    lo->scaling = rs ? alpha / sqrt(r) : alpha / r;
    lo->A = itu_copy_values(A);
    lo->B = itu_copy_values(B);
    snprintf(key, sizeof(key), "%s.lora_B.bias", L->name);
    struct itu_tensor *bb = itu_st_find(st, key);
    lo->bias_B = bb ? itu_copy_values(bb) : NULL;
    snprintf(key, sizeof(key), "%s.lora_magnitude_vector", L->name);
    struct itu_tensor *mv = itu_st_find(st, key);
    lo->magnitude = mv ? itu_copy_values(mv) : NULL;
}

struct itu_adapter *itu_adapter_load(const struct itu_model *m, const char *dir)
{
    char *cp = tu_path(dir, "adapter_config.json");
    char *sp = tu_path(dir, "adapter_model.safetensors");
    char *text = itu_read_text(cp);
    ITU_CHECK(text != NULL, "itest: cannot read %s", cp);
    cJSON *cfg = cJSON_Parse(text);
    ITU_CHECK(cJSON_IsObject(cfg), "itest: %s is not a JSON object", cp);
    struct itu_st st;
    itu_st_load(sp, &st);
    struct itu_adapter *a = calloc(1, sizeof(*a));
    const char *base = strrchr(dir, '/');
    a->name = itu_strdup(base ? base + 1 : dir);
    a->n = m->n;
    a->lora = calloc(m->n, sizeof(*a->lora));
    a->W_repl = calloc(m->n, sizeof(*a->W_repl));
    a->b_repl = calloc(m->n, sizeof(*a->b_repl));
    for (size_t i = 0; i < m->n; i++)
        itu_adapter_layer(a, &m->L[i], i, &st, cfg, dir);
    itu_st_free(&st);
    cJSON_Delete(cfg);
    free(text);
    free(cp);
    free(sp);
    return a;
}

struct itu_adapter *itu_demo_adapter(const struct itu_model *m, const char *name)
{
    char *dir = tu_path(itu_adapters, name);
    struct itu_adapter *a = itu_adapter_load(m, dir);
    free(dir);
    return a;
}

void itu_adapter_free(struct itu_adapter **ap)
{
    struct itu_adapter *a = ap ? *ap : NULL;
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free((void *)a->lora[i].A);
        free((void *)a->lora[i].B);
        free((void *)a->lora[i].bias_B);
        free((void *)a->lora[i].magnitude);
        free(a->W_repl[i]);
        free(a->b_repl[i]);
    }
    free(a->lora);
    free(a->W_repl);
    free(a->b_repl);
    free(a->name);
    free(a);
    *ap = NULL;
}

void itu_forward(const struct itu_model *m, const struct itu_adapter *a, const double *x, int rows,
                 double *y)
{
    struct tu_layer *tl = calloc(m->n, sizeof(*tl));
    for (size_t i = 0; i < m->n; i++) {
        const struct itu_ref_layer *L = &m->L[i];
        tl[i].in = L->in;
        tl[i].out = L->out;
        tl[i].act = L->act;
        tl[i].W = a && a->W_repl[i] ? a->W_repl[i] : L->W;
        tl[i].b = a && a->b_repl[i] ? a->b_repl[i] : L->b;
        tl[i].lora = a && a->lora[i].A ? &a->lora[i] : NULL;
    }
    tu_ref_forward(tl, m->n, x, rows, y);
    free(tl);
}

double itu_match(const float *got, const double *want, size_t n)
{
    return tu_worst_ratio(got, want, n, 1e-5, 1e-4);
}

double *itu_rows(uint64_t seed, int rows, int width)
{
    uint64_t s = seed;
    return tu_rand_array(&s, (size_t)rows * width, -1.0, 1.0);
}

/* ---- /infer ---- */

static bool itu_infer_fail(struct itu_infer *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool itu_infer_fail(struct itu_infer *res, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(res->why, sizeof(res->why), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(res->why))
        snprintf(res->why + n, sizeof(res->why) - (size_t)n, " [%.400s]", itu_describe(&res->r));
    return false;
}

/* Reads the three naming headers into res; false when one is malformed. */
static bool itu_infer_headers(struct itu_infer *res, char *h_adapter, size_t n, bool *has_adapter,
                              long long *h_version, char *h_variant, size_t vn)
{
    char ver[64];
    *has_adapter = itu_header(&res->r, "X-Lorad-Adapter", h_adapter, n);
    if (!itu_header(&res->r, "X-Lorad-Version", ver, sizeof(ver)))
        return itu_infer_fail(res, "no X-Lorad-Version header");
    char *end;
    *h_version = strtoll(ver, &end, 10);
    if (!ver[0] || *end || *h_version < 0)
        return itu_infer_fail(res, "X-Lorad-Version '%s' is not a version", ver);
    if (!itu_header(&res->r, "X-Lorad-Variant", h_variant, vn))
        return itu_infer_fail(res, "no X-Lorad-Variant header");
    if (strcmp(h_variant, "stable") != 0 && strcmp(h_variant, "canary") != 0)
        return itu_infer_fail(res, "X-Lorad-Variant '%s'", h_variant);
    if (*has_adapter && *h_version == 0)
        return itu_infer_fail(res, "X-Lorad-Adapter '%s' with X-Lorad-Version 0", h_adapter);
    if (!*has_adapter && *h_version != 0)
        return itu_infer_fail(res, "no X-Lorad-Adapter with X-Lorad-Version %lld", *h_version);
    char nf[32];
    if (itu_header(&res->r, "X-Lorad-Nonfinite", nf, sizeof(nf)))
        res->nonfinite_hdr = atoi(nf);
    return true;
}

static bool itu_infer_check_json(struct itu_infer *res, int rows, int out_width, bool batch)
{
    const cJSON *j = res->r.json;
    const cJSON *ad = cJSON_GetObjectItemCaseSensitive(j, "adapter");
    const cJSON *ve = cJSON_GetObjectItemCaseSensitive(j, "version");
    const char *va = itu_jstr(j, "variant");
    if (!cJSON_IsObject(j))
        return itu_infer_fail(res, "200 body is not a JSON object");
    if (!(cJSON_IsString(ad) || cJSON_IsNull(ad)))
        return itu_infer_fail(res, "\"adapter\" missing or not string/null");
    if (!cJSON_IsNumber(ve) || ve->valuedouble < 0 || ve->valuedouble != floor(ve->valuedouble))
        return itu_infer_fail(res, "\"version\" missing or not a non-negative integer");
    if (!va)
        return itu_infer_fail(res, "\"variant\" missing");
    if (cJSON_IsNull(ad) != (ve->valuedouble == 0))
        return itu_infer_fail(res, "adapter null iff version 0 violated");
    if (strcmp(va, res->variant) != 0)
        return itu_infer_fail(res, "body variant %s != header %s", va, res->variant);
    if ((double)res->version != ve->valuedouble)
        return itu_infer_fail(res, "body version %.0f != header %lld", ve->valuedouble,
                              res->version);
    if (cJSON_IsString(ad) ? strcmp(ad->valuestring, res->adapter) != 0 : res->adapter[0] != 0)
        return itu_infer_fail(res, "body adapter != header X-Lorad-Adapter '%s'", res->adapter);
    bool many = batch || rows != 1;
    if (!cJSON_GetObjectItemCaseSensitive(j, many ? "outputs" : "output"))
        return itu_infer_fail(res, "no \"%s\" member", many ? "outputs" : "output");
    res->out = malloc((size_t)rows * out_width * sizeof(float) + 1);
    if (itu_json_outputs(j, rows, out_width, res->out) < 0)
        return itu_infer_fail(res, "outputs are not %d x %d numbers", rows, out_width);
    return true;
}

bool itu_infer_do(struct itu_client *c, const double *x, int rows, int in_width, int out_width,
                  bool binary, bool batch, const char *extra, const char *const *headers,
                  struct itu_infer *res)
{
    char h_adapter[160], h_variant[16], ct[128];
    bool has_adapter = false;
    long long h_version = 0;
    memset(res, 0, sizeof(*res));
    res->version = -1;
    if (binary) {
        float *f = itu_f32_rows(x, rows, in_width);
        itu_client_do(c, "POST", "/infer", f, (size_t)rows * in_width * sizeof(float),
                      "application/octet-stream", headers, 0, &res->r);
        free(f);
    } else {
        char *body = itu_json_rows(x, rows, in_width, batch, extra);
        itu_client_do(c, "POST", "/infer", body, strlen(body), "application/json", headers, 0,
                      &res->r);
        free(body);
    }
    res->status = res->r.status;
    if (res->status != 200)
        return itu_infer_fail(res, "status %ld, expected 200", res->status);
    if (!itu_infer_headers(res, h_adapter, sizeof(h_adapter), &has_adapter, &h_version, h_variant,
                           sizeof(h_variant)))
        return false;
    snprintf(res->adapter, sizeof(res->adapter), "%s", has_adapter ? h_adapter : "");
    snprintf(res->variant, sizeof(res->variant), "%s", h_variant);
    res->version = h_version;
    if (!binary)
        return itu_infer_check_json(res, rows, out_width, batch);
    if (!itu_header(&res->r, "Content-Type", ct, sizeof(ct)) ||
        strncmp(ct, "application/octet-stream", 24) != 0)
        return itu_infer_fail(res, "binary answer Content-Type '%s'", ct);
    if (res->r.len != (size_t)rows * out_width * sizeof(float))
        return itu_infer_fail(res, "binary answer of %zu bytes, expected %zu", res->r.len,
                              (size_t)rows * out_width * sizeof(float));
    res->out = malloc(res->r.len + 1);
    memcpy(res->out, res->r.body, res->r.len);
    return true;
}

void itu_infer_free(struct itu_infer *res)
{
    if (!res)
        return;
    free(res->out);
    itu_resp_free(&res->r);
    res->out = NULL;
}

cJSON *itu_take_json(struct itu_resp *r)
{
    cJSON *j = r->json;
    r->json = NULL;
    itu_resp_free(r);
    return j;
}

cJSON *itu_post_ok(struct itu_daemon *d, const char *path, const char *body)
{
    struct itu_resp r;
    itu_post(d, path, body, &r);
    ck_assert_msg(r.status == 200 && cJSON_IsObject(r.json), "POST %s %s: expected 200, got %s",
                  path, body, itu_describe(&r));
    return itu_take_json(&r);
}

cJSON *itu_status(struct itu_daemon *d)
{
    struct itu_resp r;
    itu_get(d, "/status", &r);
    ck_assert_msg(r.status == 200 && cJSON_IsObject(r.json), "GET /status: %s", itu_describe(&r));
    return itu_take_json(&r);
}
