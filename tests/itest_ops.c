/* lorad — tests/itest_ops.c: operations (SPEC.md 6, 8): the systemd
 * protocol seen from a fake NOTIFY_SOCKET (READY=1 + STATUS, WATCHDOG=1,
 * RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM), socket
 * activation (LISTEN_FDS/LISTEN_PID with listeners the test binds), crash
 * safety of the state file under SIGKILL at random moments of a stream of
 * /swap and /rollback requests, and GET /metrics checked by `promtool check
 * metrics` plus the SPEC 6 metric families by name.
 *
 * Daemons that need a special environment are started here with fork/exec
 * through `sh -c 'VAR=$$ exec lorad ...'` so that WATCHDOG_PID/LISTEN_PID
 * name lorad's own pid; they are wrapped in a struct itu_daemon so the
 * harness's wait/kill/free functions apply.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "itestutil.h"

#define KNOWN_ROWS 4

static struct itu_model *M;
static double *X; /* [KNOWN_ROWS][in] */
static struct itu_adapter *RA, *RB;

/* ---- small helpers ---- */

static void ops_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static long long ops_mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static char *ops_strdup(const char *s)
{
    char *p = strdup(s);
    ck_assert_msg(p != NULL, "out of memory");
    return p;
}

/* POST /infer of the known rows through client c; asserts the answer names
 * name/version (version < 0: any) and matches the reference `ref`. */
static void ops_infer_expect(struct itu_client *c, const struct itu_adapter *ref, const char *name,
                             long long version, const char *where)
{
    struct itu_infer res;
    ck_assert_msg(itu_infer_do(c, X, KNOWN_ROWS, M->in, M->out, false, true, NULL, NULL, &res),
                  "%s: POST /infer: %s", where, res.why);
    ck_assert_msg(strcmp(res.adapter, name) == 0 && (version < 0 || res.version == version),
                  "%s: POST /infer names %s v%lld, expected %s v%lld", where, res.adapter,
                  res.version, name, version);
    if (ref) {
        double *want = malloc(sizeof(double) * KNOWN_ROWS * M->out);
        itu_forward(M, ref, X, KNOWN_ROWS, want);
        double worst = itu_match(res.out, want, (size_t)KNOWN_ROWS * M->out);
        ck_assert_msg(worst <= 1.0, "%s: /infer outputs differ from the reference (worst %g)",
                      where, worst);
        free(want);
    }
    itu_infer_free(&res);
}

/* ---- daemons started with a special environment ---- */

/* Non-blocking reap; true (and d->pid 0, *st the status) when it exited. */
static bool ops_reaped(struct itu_daemon *d, int *st)
{
    int ws = 0;
    if (!d->pid)
        return true;
    if (waitpid(d->pid, &ws, WNOHANG) != d->pid)
        return false;
    *st = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    d->pid = 0;
    return true;
}

/* Child side of ops_spawn: never returns. */
static void ops_child(const char *log_path, const char *const *env, const int *fds, int nfds,
                      const char *shell_prefix, const char *cfg)
{
    int lfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int hi[4];
    if (lfd < 0 || (lfd = fcntl(lfd, F_DUPFD, 100)) < 0) /* away from 1..4 */
        _exit(126);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (int i = 0; i < nfds; i++) /* out of the way of 3, 4 first */
        hi[i] = fcntl(fds[i], F_DUPFD, 100);
    for (int i = 0; i < nfds; i++) {
        if (hi[i] < 0 || dup2(hi[i], 3 + i) < 0)
            _exit(126);
        close(hi[i]);
    }
    dup2(lfd, 1);
    dup2(lfd, 2);
    close(lfd);
    for (size_t i = 0; env && env[i]; i++)
        putenv((char *)env[i]);
    char script[512];
    snprintf(script, sizeof(script), "%s exec \"$0\" --config \"$1\"", shell_prefix);
    execl("/bin/sh", "sh", "-c", script, itu_lorad_bin(), cfg, (char *)NULL);
    _exit(127);
}

/* Writes the config into `dir` (fresh when NULL) and starts lorad through
 * `sh -c '<shell_prefix> exec lorad --config CFG'` with `env` ("K=V", NULL
 * terminated) added and fds[i] as fd 3+i. `port`: the port of the test's
 * client (0: the config's listen port); *cfg_port (may be NULL) gets the
 * config's listen port. Does not wait for readiness. */
static struct itu_daemon *ops_spawn(const char *dir, const char *overrides, const char *const *env,
                                    const int *fds, int nfds, const char *shell_prefix, int port,
                                    int *cfg_port)
{
    struct itu_daemon *d = calloc(1, sizeof(*d));
    ck_assert_msg(d != NULL && nfds <= 4, "test setup");
    d->dir = dir ? ops_strdup(dir) : itu_tmpdir();
    d->config_path = itu_config_write(d->dir, overrides, &d->port);
    d->log_path = tu_path(d->dir, "lorad.log");
    d->state_path = tu_path(d->dir, "state.json");
    if (cfg_port)
        *cfg_port = d->port;
    if (port)
        d->port = port;
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        ops_child(d->log_path, env, fds, nfds, shell_prefix, d->config_path);
    d->pid = pid;
    d->client = itu_client_new(d->port);
    return d;
}

/* Waits up to 10 s for GET /readyz 200 through d->client. */
static void ops_wait_ready(struct itu_daemon *d)
{
    int st = 0;
    for (int i = 0; i < 500; i++) {
        struct itu_resp r;
        ck_assert_msg(!ops_reaped(d, &st), "lorad exited with status %d before ready; log:\n%s", st,
                      itu_log_tail(d, 3000));
        itu_client_do(d->client, "GET", "/readyz", NULL, 0, NULL, NULL, 500, &r);
        long status = r.status;
        itu_resp_free(&r);
        if (status == 200)
            return;
        ops_sleep_ms(20);
    }
    itu_daemon_kill(d);
    ck_abort_msg("lorad not ready after 10 s; log:\n%s", itu_log_tail(d, 3000));
}

/* ---- the fake NOTIFY_SOCKET ---- */

/* Binds an abstract AF_UNIX datagram socket; *name gets "@...". */
static int notify_open(char *name, size_t n)
{
    static int counter;
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket(AF_UNIX): %s", strerror(errno));
    snprintf(name, n, "@lorad-itest-ops-%d-%d", (int)getpid(), counter++);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(name);
    memcpy(sa.sun_path, name, len);
    sa.sun_path[0] = '\0';
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, salen) == 0, "bind %s: %s", name,
                  strerror(errno));
    return fd;
}

/* One datagram into buf (NUL-terminated) within timeout_ms; -1 on timeout. */
static int notify_recv(int fd, char *buf, size_t n, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc <= 0)
        return -1;
    ssize_t got = recv(fd, buf, n - 1, 0);
    if (got < 0)
        return -1;
    buf[got] = 0;
    return (int)got;
}

/* The value after "KEY=" of a line of msg (copied into out); false when
 * no line starts with key (key includes the '='). */
static bool notify_field(const char *msg, const char *key, char *out, size_t n)
{
    size_t kl = strlen(key);
    for (const char *p = msg; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll >= kl && strncmp(p, key, kl) == 0) {
            snprintf(out, n, "%.*s", (int)(ll - kl), p + kl);
            return true;
        }
        p = eol ? eol + 1 : NULL;
    }
    return false;
}

/* Receives datagrams (up to timeout_ms in total) until one has a line
 * `key`; copies it to buf. Counts WATCHDOG=1 datagrams seen on the way
 * into *watchdogs (may be NULL). Fails the test on timeout. */
static void notify_expect(int fd, const char *key, char *buf, size_t n, int timeout_ms,
                          int *watchdogs, const char *what, struct itu_daemon *d)
{
    long long end = ops_mono_usec() + (long long)timeout_ms * 1000;
    char tmp[64];
    for (;;) {
        long long left = (end - ops_mono_usec()) / 1000;
        ck_assert_msg(left > 0 && notify_recv(fd, buf, n, (int)left) >= 0,
                      "NOTIFY_SOCKET: no datagram with %s within %d ms (%s); log:\n%s", key,
                      timeout_ms, what, itu_log_tail(d, 2000));
        if (watchdogs && strcmp(buf, "WATCHDOG=1") == 0)
            (*watchdogs)++;
        if (notify_field(buf, key, tmp, sizeof(tmp)))
            return;
    }
}

START_TEST(test_systemd_notify)
{
    char name[108], msg[1024], status[512], env_ns[160];
    int nfd = notify_open(name, sizeof(name));
    snprintf(env_ns, sizeof(env_ns), "NOTIFY_SOCKET=%s", name);
    const char *env[] = {env_ns, "WATCHDOG_USEC=400000", NULL};
    struct itu_daemon *d = ops_spawn(NULL, NULL, env, NULL, 0, "WATCHDOG_PID=$$", 0, NULL);

    /* READY=1 with STATUS naming what serves */
    notify_expect(nfd, "READY=1", msg, sizeof(msg), 15000, NULL, "start-up", d);
    ck_assert_msg(notify_field(msg, "STATUS=", status, sizeof(status)),
                  "READY=1 datagram without STATUS=: '%s'", msg);
    ops_wait_ready(d);
    cJSON *st = itu_status(d);
    char want[256];
    snprintf(want, sizeof(want), "adapter=%s version=%.0f", itu_jstr(st, "stable.adapter"),
             itu_jnum(st, "stable.version", -1));
    cJSON_Delete(st);
    ck_assert_msg(strstr(status, want) != NULL, "READY=1 STATUS='%s' does not contain '%s'", status,
                  want);
    ck_assert_msg(strstr(want, "adapter=demo-a ") != NULL, "first start serves %s, not demo-a",
                  want);
    ops_infer_expect(d->client, RA, "demo-a", -1, "after READY=1");

    /* WATCHDOG=1 every WATCHDOG_USEC/2 (200 ms): 3 within ~1 s */
    int wd = 0;
    long long t0 = ops_mono_usec();
    while (wd < 3 && ops_mono_usec() - t0 < 1500 * 1000LL) {
        if (notify_recv(nfd, msg, sizeof(msg), 100) >= 0 && strcmp(msg, "WATCHDOG=1") == 0)
            wd++;
    }
    ck_assert_msg(wd >= 3,
                  "WATCHDOG_USEC=400000 with WATCHDOG_PID=lorad's pid: %d WATCHDOG=1 within "
                  "1.5 s (expected >= 3 every 200 ms); log:\n%s",
                  wd, itu_log_tail(d, 2000));

    /* a swap updates STATUS */
    cJSON *a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}");
    snprintf(want, sizeof(want), "adapter=demo-b version=%.0f", itu_jnum(a, "version", -1));
    cJSON_Delete(a);
    for (int i = 0; i < 100; i++) { /* bounded: skip watchdogs */
        notify_expect(nfd, "STATUS=", msg, sizeof(msg), 5000, &wd, "after /swap", d);
        notify_field(msg, "STATUS=", status, sizeof(status));
        if (strstr(status, want))
            break;
    }
    ck_assert_msg(strstr(status, want) != NULL, "after /swap STATUS='%s' lacks '%s'", status, want);

    /* SIGHUP: RELOADING=1 + MONOTONIC_USEC (now), then READY=1 */
    long long before = ops_mono_usec();
    itu_daemon_signal(d, SIGHUP);
    notify_expect(nfd, "RELOADING=1", msg, sizeof(msg), 10000, &wd, "after SIGHUP", d);
    long long after = ops_mono_usec();
    char mono[64];
    ck_assert_msg(notify_field(msg, "MONOTONIC_USEC=", mono, sizeof(mono)),
                  "RELOADING=1 datagram without MONOTONIC_USEC=: '%s'", msg);
    char *endp;
    long long mu = strtoll(mono, &endp, 10);
    ck_assert_msg(mono[0] && !*endp && mu >= before && mu <= after,
                  "RELOADING=1 MONOTONIC_USEC=%s is not CLOCK_MONOTONIC between the signal "
                  "(%lld) and the datagram (%lld)",
                  mono, before, after);
    notify_expect(nfd, "READY=1", msg, sizeof(msg), 10000, &wd, "after RELOADING=1", d);
    ops_infer_expect(d->client, RB, "demo-b", -1, "after the reload");

    /* SIGTERM: STOPPING=1, exit 0 */
    itu_daemon_signal(d, SIGTERM);
    notify_expect(nfd, "STOPPING=1", msg, sizeof(msg), 10000, &wd, "after SIGTERM", d);
    int rc = itu_daemon_wait(d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM; log:\n%s", rc,
                  itu_log_tail(d, 2000));
    printf("itest_ops: notify: READY=1 STATUS='%s'..., %d+ WATCHDOG=1, RELOADING=1 "
           "MONOTONIC_USEC=%lld, READY=1, STOPPING=1, exit 0\n",
           want, wd, mu);
    itu_daemon_free(&d);
    close(nfd);
}
END_TEST

/* ---- socket activation ---- */

/* A listening TCP socket on 127.0.0.1:<free port> (not close-on-exec). */
static int ops_listen(int *port)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 128) == 0,
                  "bind/listen 127.0.0.1:0: %s", strerror(errno));
    ck_assert(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static long ops_get_status_code(struct itu_client *c, const char *method, const char *path,
                                const char *body, struct itu_resp *out)
{
    return itu_client_do(c, method, path, body, body ? strlen(body) : 0,
                         body ? "application/json" : NULL, NULL, 5000, out);
}

START_TEST(test_socket_activation)
{
    int port;
    int lfd = ops_listen(&port);
    int cfg_port = 0;
    struct itu_daemon *d =
        ops_spawn(NULL, NULL, NULL, &lfd, 1, "LISTEN_FDS=1 LISTEN_PID=$$", port, &cfg_port);
    close(lfd);
    ops_wait_ready(d);
    ops_infer_expect(d->client, RA, "demo-a", -1, "socket-activated fd 3");
    /* the config's own "listen" port must not have been opened */
    struct itu_resp r;
    struct itu_client *cc = itu_client_new(cfg_port);
    ck_assert_msg(itu_client_do(cc, "GET", "/readyz", NULL, 0, NULL, NULL, 2000, &r) == 0,
                  "the config's listen port %d answered although fd 3 was passed: %s", cfg_port,
                  itu_describe(&r));
    itu_resp_free(&r);
    itu_client_free(&cc);
    itu_get(d, "/status", &r);
    ck_assert_msg(r.status == 200, "GET /status on the activated socket: %s", itu_describe(&r));
    itu_resp_free(&r);
    ck_assert_msg(strstr(itu_log_tail(d, 4000), "source=systemd") != NULL ||
                      strstr(itu_log_tail(d, 4000), "fd=3") != NULL,
                  "no log line says the listener came from systemd:\n%s", itu_log_tail(d, 2000));
    int rc = itu_daemon_stop(d, 15000);
    ck_assert_msg(rc == 0, "socket-activated lorad exit status %d; log:\n%s", rc,
                  itu_log_tail(d, 2000));
    itu_daemon_free(&d);

    /* two sockets: fd 3 data, fd 4 control (control_listen set) */
    int dport, cport, fds[2];
    fds[0] = ops_listen(&dport);
    fds[1] = ops_listen(&cport);
    char over[128];
    int unused = itu_free_port();
    snprintf(over, sizeof(over), "{\"control_listen\": \"127.0.0.1:%d\"}", unused);
    d = ops_spawn(NULL, over, NULL, fds, 2, "LISTEN_FDS=2 LISTEN_PID=$$", dport, NULL);
    close(fds[0]);
    close(fds[1]);
    ops_wait_ready(d);
    struct itu_client *ctl = itu_client_new(cport);
    ops_infer_expect(d->client, RA, "demo-a", -1, "data socket fd 3");
    ck_assert_msg(ops_get_status_code(ctl, "GET", "/readyz", NULL, &r) == 200,
                  "GET /readyz on control fd 4: %s", itu_describe(&r));
    itu_resp_free(&r);
    ck_assert_msg(ops_get_status_code(ctl, "POST", "/swap", "{\"adapter\":\"demo-b\"}", &r) == 200,
                  "POST /swap on control fd 4: %s", itu_describe(&r));
    long long vb = (long long)itu_jnum(r.json, "version", -1);
    itu_resp_free(&r);
    ck_assert_msg(ops_get_status_code(d->client, "POST", "/swap", "{\"adapter\":\"demo-a\"}", &r) ==
                      404,
                  "POST /swap on the data socket fd 3 with control_listen set: %s (want 404)",
                  itu_describe(&r));
    itu_resp_free(&r);
    ck_assert_msg(ops_get_status_code(ctl, "POST", "/infer", "{\"input\":[1]}", &r) == 404,
                  "POST /infer on the control socket fd 4: %s (want 404)", itu_describe(&r));
    itu_resp_free(&r);
    ops_infer_expect(d->client, RB, "demo-b", vb, "data socket fd 3 after the swap");
    struct itu_client *un = itu_client_new(unused);
    ck_assert_msg(itu_client_do(un, "GET", "/readyz", NULL, 0, NULL, NULL, 2000, &r) == 0,
                  "control_listen port %d answered although fd 4 was passed: %s", unused,
                  itu_describe(&r));
    itu_resp_free(&r);
    itu_client_free(&un);
    itu_client_free(&ctl);
    rc = itu_daemon_stop(d, 15000);
    ck_assert_msg(rc == 0, "socket-activated lorad exit status %d; log:\n%s", rc,
                  itu_log_tail(d, 2000));
    itu_daemon_free(&d);
}
END_TEST

/* ---- crash safety ---- */

#define CRASH_ITERS 8
#define CRASH_KNOWN_MAX 8192
#define CRASH_ADAPTERS 5

static const char *const crash_names[CRASH_ADAPTERS] = {"demo-a", "demo-b", "demo-c", "demo-f16",
                                                        "demo-bf16"};

/* What the test has seen; guarded by mu. */
struct crash {
    pthread_mutex_t mu;
    pthread_t th;
    int port;
    atomic_int stop;
    uint64_t rng;
    /* every (version, adapter) seen in an answer or in /status */
    int nknown;
    long long known_v[CRASH_KNOWN_MAX];
    char known_a[CRASH_KNOWN_MAX][16];
    long long max_seen;
    /* stable after the last answered commit */
    long long last_v;
    char last_a[16];
    /* the request without an answer when the daemon died */
    bool inflight;
    bool inflight_swap;
    char inflight_a[16];
    long long inflight_floor; /* max_seen when it was sent */
    long commits;             /* answered commits, all iterations */
    long sent;
    char err[1024]; /* first violation seen by the stream thread */
};

static void crash_fail(struct crash *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void crash_fail(struct crash *c, const char *fmt, ...)
{
    va_list ap;
    if (c->err[0])
        return;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

/* The adapter recorded for version v, or NULL when v is unknown. */
static const char *crash_known(const struct crash *c, long long v)
{
    for (int i = 0; i < c->nknown; i++)
        if (c->known_v[i] == v)
            return c->known_a[i];
    return NULL;
}

/* Records (v, a) as seen and as the serving stable. */
static void crash_seen(struct crash *c, long long v, const char *a)
{
    if (!crash_known(c, v) && c->nknown < CRASH_KNOWN_MAX) {
        c->known_v[c->nknown] = v;
        snprintf(c->known_a[c->nknown], sizeof(c->known_a[0]), "%s", a);
        c->nknown++;
    }
    if (v > c->max_seen)
        c->max_seen = v;
    c->last_v = v;
    snprintf(c->last_a, sizeof(c->last_a), "%s", a);
}

/* Checks one 200 answer of the stream against what was seen (mu held). */
static void crash_answer(struct crash *c, const cJSON *j)
{
    const char *a = itu_jstr(j, "adapter");
    long long v = (long long)itu_jnum(j, "version", -1);
    a = a ? a : "";
    if (c->inflight_swap) {
        if (strcmp(a, c->inflight_a) != 0 || v <= c->inflight_floor)
            crash_fail(c,
                       "/swap %s answered %s v%lld: a new version must exceed every version "
                       "seen before (%lld), across restarts too",
                       c->inflight_a, a, v, c->inflight_floor);
    } else {
        const char *k = crash_known(c, v);
        if (!k || strcmp(k, a) != 0)
            crash_fail(c, "/rollback answered %s v%lld, which the test never saw (%s)", a, v,
                       k ? k : "unknown version");
    }
    crash_seen(c, v, a);
    c->commits++;
}

static void *crash_stream(void *arg)
{
    struct crash *c = arg;
    struct itu_client *hc = itu_client_new(c->port);
    char body[128];
    while (!atomic_load(&c->stop)) {
        pthread_mutex_lock(&c->mu);
        bool swap = tu_rand(&c->rng) % 10 < 6;
        const char *name = crash_names[tu_rand(&c->rng) % CRASH_ADAPTERS];
        if (swap)
            snprintf(body, sizeof(body), "{\"adapter\":\"%s\"}", name);
        else
            snprintf(body, sizeof(body), "{}");
        c->inflight = true;
        c->inflight_swap = swap;
        snprintf(c->inflight_a, sizeof(c->inflight_a), "%s", swap ? name : "");
        c->inflight_floor = c->max_seen;
        c->sent++;
        pthread_mutex_unlock(&c->mu);
        struct itu_resp r;
        itu_client_do(hc, "POST", swap ? "/swap" : "/rollback", body, strlen(body),
                      "application/json", NULL, 10000, &r);
        pthread_mutex_lock(&c->mu);
        if (r.status == 0) { /* killed: the outcome is unknown, stays in flight */
            pthread_mutex_unlock(&c->mu);
            itu_resp_free(&r);
            break;
        }
        if (r.status == 200)
            crash_answer(c, r.json);
        else if (!(r.status == 409 && !swap && !strcmp(itu_error_code(&r), "no_history")))
            crash_fail(c, "POST %s %s: unexpected %s", swap ? "/swap" : "/rollback", body,
                       itu_describe(&r));
        c->inflight = false;
        pthread_mutex_unlock(&c->mu);
        itu_resp_free(&r);
    }
    itu_client_free(&hc);
    return NULL;
}

/* After a SIGKILL: the state file parses (or is absent before any commit);
 * nothing but config, log, state file and the writer's temp files is in
 * the directory. Returns the number of leftover temp files. */
static int crash_check_files(struct crash *c, struct itu_daemon *d)
{
    size_t len = 0;
    int temps = 0;
    struct stat sb;
    if (stat(d->state_path, &sb) == 0) {
        uint8_t *img = tu_read_file(d->state_path, &len);
        cJSON *j = cJSON_ParseWithLength((const char *)img, len);
        ck_assert_msg(cJSON_IsObject(j), "after SIGKILL the state file is not a JSON object:\n%.*s",
                      (int)(len > 2000 ? 2000 : len), (const char *)img);
        cJSON_Delete(j);
        free(img);
    } else {
        ck_assert_msg(c->commits == 0,
                      "after SIGKILL the state file is gone (%s) after %ld commits",
                      strerror(errno), c->commits);
    }
    DIR *dir = opendir(d->dir);
    ck_assert_msg(dir != NULL, "opendir %s", d->dir);
    for (struct dirent *e; (e = readdir(dir));) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "lorad.json") ||
            !strcmp(n, "lorad.log") || !strcmp(n, "state.json"))
            continue;
        if (!strcmp(n, "state.json.tmp")) {
            temps++;
            continue;
        }
        ck_abort_msg("after SIGKILL an unexpected file '%s' is in the state directory", n);
    }
    closedir(dir);
    return temps;
}

/* After a restart: restored true, and stable is the last answered commit,
 * or the request in flight at the kill (a swap of that adapter with a new
 * version, or a rollback to a version seen before). */
static void crash_check_restart(struct crash *c, struct itu_daemon *d, bool had_file, int iter)
{
    cJSON *st = itu_status(d);
    const cJSON *restored = itu_jget(st, "restored");
    ck_assert_msg(had_file ? cJSON_IsTrue(restored) : cJSON_IsNull(restored),
                  "restart %d: \"restored\" is %s (state file %s); log:\n%s", iter,
                  cJSON_IsTrue(restored)    ? "true"
                  : cJSON_IsFalse(restored) ? "false"
                                            : "null/other",
                  had_file ? "present" : "absent", itu_log_tail(d, 1500));
    const char *sa = itu_jstr(st, "stable.adapter");
    long long sv = (long long)itu_jnum(st, "stable.version", -1);
    char a[16];
    snprintf(a, sizeof(a), "%s", sa ? sa : "");
    cJSON_Delete(st);
    bool last = sv == c->last_v && !strcmp(a, c->last_a);
    bool fl_swap =
        c->inflight && c->inflight_swap && !strcmp(a, c->inflight_a) && sv > c->inflight_floor;
    const char *k = crash_known(c, sv);
    bool fl_rb = c->inflight && !c->inflight_swap && k && !strcmp(k, a);
    ck_assert_msg(last || fl_swap || fl_rb,
                  "restart %d: serves %s v%lld; the last answered commit left %s v%lld, in "
                  "flight was %s %s (seen up to v%lld)",
                  iter, a, sv, c->last_a, c->last_v,
                  c->inflight ? (c->inflight_swap ? "/swap" : "/rollback") : "nothing",
                  c->inflight_a, c->inflight_floor);
    ops_infer_expect(d->client, NULL, a, sv, "after the restart");
    crash_seen(c, sv, a);
    c->inflight = false;
}

START_TEST(test_crash_safety)
{
    struct crash *c = calloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    uint64_t delay_rng = 0x6c6f726164ULL;
    c->rng = 0x5eed5eedULL;
    char *dir = itu_tmpdir();
    struct itu_daemon *d = itu_daemon_start(dir, NULL);
    cJSON *st = itu_status(d);
    crash_seen(c, (long long)itu_jnum(st, "stable.version", -1),
               itu_jstr(st, "stable.adapter") ? itu_jstr(st, "stable.adapter") : "");
    /* the base model (version 0) is a history entry rollbacks may reach */
    const cJSON *h = itu_jget(st, "history");
    for (const cJSON *e = h ? h->child : NULL; e; e = e->next) {
        const char *ha = itu_jstr(e, "adapter");
        crash_seen(c, (long long)itu_jnum(e, "version", -1), ha ? ha : "");
    }
    crash_seen(c, (long long)itu_jnum(st, "stable.version", -1),
               itu_jstr(st, "stable.adapter") ? itu_jstr(st, "stable.adapter") : "");
    cJSON_Delete(st);
    int temps = 0, inflight_kills = 0;
    for (int it = 0; it < CRASH_ITERS; it++) {
        int delay = (int)(tu_rand(&delay_rng) % 301);
        c->port = d->port;
        atomic_store(&c->stop, 0);
        ck_assert(pthread_create(&c->th, NULL, crash_stream, c) == 0);
        ops_sleep_ms(delay);
        itu_daemon_kill(d); /* SIGKILL + reap */
        atomic_store(&c->stop, 1);
        pthread_join(c->th, NULL);
        ck_assert_msg(!c->err[0], "iteration %d: %s", it, c->err);
        inflight_kills += c->inflight;
        temps = crash_check_files(c, d);
        ck_assert_msg(temps <= 1,
                      "%d temp files after %d SIGKILLs: the temp name is reused, "
                      "so there is never more than one",
                      temps, it + 1);
        bool had_file = access(d->state_path, F_OK) == 0;
        itu_daemon_free(&d);
        d = itu_daemon_start(dir, NULL);
        crash_check_restart(c, d, had_file, it);
    }
    /* versions issued after the last restart are new */
    cJSON *a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}");
    long long v = (long long)itu_jnum(a, "version", -1);
    cJSON_Delete(a);
    ck_assert_msg(v > c->max_seen, "swap after the last restart got v%lld, seen up to v%lld", v,
                  c->max_seen);
    ops_infer_expect(d->client, RB, "demo-b", v, "after the crash series");
    printf("itest_ops: crash: %d SIGKILLs, %ld requests sent, %ld commits answered, %d kills "
           "with a request in flight, versions up to %lld, %d stale temp files in the directory\n",
           CRASH_ITERS, c->sent, c->commits, inflight_kills, c->max_seen, temps);
    int rc = itu_daemon_stop(d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d; log:\n%s", rc, itu_log_tail(d, 2000));
    itu_daemon_free(&d);
    pthread_mutex_destroy(&c->mu);
    free(c);
    free(dir);
}
END_TEST

/* ---- /metrics ---- */

/* The value of the first sample line starting with `prefix` followed by
 * ' ' (prefix includes any labels), -1 when absent. */
static double metrics_sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return -1;
}

/* Asserts "# TYPE name type" and at least one sample of the family. */
static void metrics_family(const char *text, const char *name, const char *type)
{
    char line[160];
    snprintf(line, sizeof(line), "\n# TYPE %s %s\n", name, type);
    ck_assert_msg(strstr(text, line) != NULL, "GET /metrics: no '# TYPE %s %s' line", name, type);
    const char *p = strstr(text, line) + strlen(line);
    size_t n = strlen(name);
    ck_assert_msg(strncmp(p, name, n) == 0, "GET /metrics: no sample right after TYPE of %s", name);
}

/* For a histogram: buckets cumulative, +Inf bucket == _count. */
static void metrics_histogram(const char *text, const char *name)
{
    char pre[160];
    double prev = 0;
    int buckets = 0;
    metrics_family(text, name, "histogram");
    snprintf(pre, sizeof(pre), "%s_bucket{le=\"", name);
    size_t n = strlen(pre);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, pre, n) == 0) {
            const char *sp = strchr(p, ' ');
            double v = sp ? strtod(sp + 1, NULL) : -1;
            ck_assert_msg(v >= prev, "%s buckets are not cumulative", name);
            prev = v;
            buckets++;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    snprintf(pre, sizeof(pre), "%s_bucket{le=\"+Inf\"}", name);
    double inf = metrics_sample(text, pre);
    snprintf(pre, sizeof(pre), "%s_count", name);
    double count = metrics_sample(text, pre);
    ck_assert_msg(buckets >= 2 && inf >= 0 && inf == count, "%s: %d buckets, +Inf %g, _count %g",
                  name, buckets, inf, count);
}

/* `promtool check metrics` on the text; skips when promtool is absent. */
static void metrics_promtool(const char *text, size_t len, const char *dir)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        printf("SKIP: promtool not installed\n");
        return;
    }
    char *in = tu_path(dir, "metrics.txt");
    char *out = tu_path(dir, "promtool.out");
    tu_write_file(in, text, len);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < '%s' > '%s' 2>&1", in, out);
    int rc = system(cmd);
    size_t ol = 0;
    uint8_t *o = tu_read_file(out, &ol);
    ck_assert_msg(rc == 0,
                  "promtool check metrics failed (status %d):\n%.*s\n--- metrics:\n%.3000s", rc,
                  (int)ol, (const char *)o, text);
    printf("itest_ops: promtool check metrics: ok%s%.*s\n", ol ? ": " : "", (int)ol,
           (const char *)o);
    free(o);
    free(in);
    free(out);
}

START_TEST(test_metrics_promtool)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    struct itu_resp r;
    /* traffic: JSON and binary, one bad request */
    for (int i = 0; i < 6; i++) {
        struct itu_infer res;
        ck_assert_msg(itu_infer_do(d->client, X, 1 + i % KNOWN_ROWS, M->in, M->out, i % 2 == 1,
                                   false, NULL, NULL, &res),
                      "POST /infer: %s", res.why);
        itu_infer_free(&res);
    }
    itu_post(d, "/infer", "{\"input\": [1, 2]}", &r);
    ck_assert_msg(r.status == 400, "a row of 2 values: %s", itu_describe(&r));
    itu_resp_free(&r);
    /* swaps (one failed), a canary with pinned traffic, rollbacks */
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}"));
    itu_post(d, "/swap", "{\"adapter\":\"no-such-adapter\"}", &r);
    ck_assert_msg(r.status == 404, "swap of a missing adapter: %s", itu_describe(&r));
    itu_resp_free(&r);
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-c\",\"canary_percent\":30}"));
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":42.5}"));
    for (int i = 0; i < 4; i++) {
        struct itu_infer res;
        ck_assert_msg(itu_infer_do(d->client, X, 2, M->in, M->out, false, true,
                                   i % 2 ? "\"variant\":\"canary\"" : "\"route_key\":\"k\"", NULL,
                                   &res),
                      "POST /infer with a canary: %s", res.why);
        itu_infer_free(&res);
    }
    itu_get(d, "/metrics", &r);
    ck_assert_msg(r.status == 200, "GET /metrics: %s", itu_describe(&r));
    ck_assert_msg(metrics_sample(r.body, "lorad_canary_percent") == 42.5,
                  "lorad_canary_percent %g with a canary at 42.5%%",
                  metrics_sample(r.body, "lorad_canary_percent"));
    ck_assert_msg(strstr(r.body, "lorad_adapter_info{variant=\"canary\",adapter=\"demo-c\"") !=
                      NULL,
                  "no lorad_adapter_info sample for the canary demo-c");
    itu_resp_free(&r);
    cJSON_Delete(itu_post_ok(d, "/rollback", "{}")); /* aborts the canary */
    cJSON_Delete(itu_post_ok(d, "/rollback", "{}")); /* back to demo-a */

    cJSON *st = itu_status(d);
    itu_get(d, "/metrics", &r);
    ck_assert_msg(r.status == 200, "GET /metrics: %s", itu_describe(&r));
    char ct[128];
    ck_assert_msg(itu_header(&r, "Content-Type", ct, sizeof(ct)) && !strncmp(ct, "text/plain", 10),
                  "GET /metrics Content-Type '%s' (want text/plain; version=0.0.4)", ct);
    const char *t = r.body;
    metrics_promtool(t, r.len, d->dir);

    /* the SPEC 6 families, by name */
    metrics_family(t, "lorad_requests_total", "counter");
    metrics_histogram(t, "lorad_request_duration_seconds");
    metrics_histogram(t, "lorad_batch_rows");
    metrics_family(t, "lorad_swaps_total", "counter");
    metrics_histogram(t, "lorad_swap_stage_seconds");
    metrics_histogram(t, "lorad_swap_commit_seconds");
    metrics_family(t, "lorad_rollbacks_total", "counter");
    metrics_family(t, "lorad_generation", "gauge");
    metrics_family(t, "lorad_adapter_info", "gauge");
    metrics_family(t, "lorad_canary_percent", "gauge");
    metrics_family(t, "lorad_queue_depth", "gauge");
    metrics_family(t, "lorad_inflight_requests", "gauge");

    /* values that follow from what this test did */
    double ok = metrics_sample(t, "lorad_swaps_total{result=\"ok\"}");
    double failed = metrics_sample(t, "lorad_swaps_total{result=\"failed\"}");
    ck_assert_msg(ok == 2 && failed == 1, "lorad_swaps_total ok %g failed %g (want 2 and 1)", ok,
                  failed);
    double rb = metrics_sample(t, "lorad_rollbacks_total");
    ck_assert_msg(rb == 2, "lorad_rollbacks_total %g after 2 answered rollbacks", rb);
    ck_assert_msg(metrics_sample(t, "lorad_generation") == itu_jnum(st, "generation", -2),
                  "lorad_generation %g, /status generation %g",
                  metrics_sample(t, "lorad_generation"), itu_jnum(st, "generation", -2));
    ck_assert_msg(metrics_sample(t, "lorad_canary_percent") == 0,
                  "lorad_canary_percent %g without a canary",
                  metrics_sample(t, "lorad_canary_percent"));
    char info[256];
    snprintf(info, sizeof(info),
             "lorad_adapter_info{variant=\"stable\",adapter=\"%s\",version=\"%.0f\"}",
             itu_jstr(st, "stable.adapter"), itu_jnum(st, "stable.version", -1));
    ck_assert_msg(metrics_sample(t, info) == 1, "no '%s 1' sample", info);
    ck_assert_msg(strstr(t, "lorad_adapter_info{variant=\"canary\"") == NULL,
                  "lorad_adapter_info still names a canary after the abort");
    double stable200 = metrics_sample(t, "lorad_requests_total{variant=\"stable\",code=\"200\"}");
    ck_assert_msg(stable200 >= 6, "lorad_requests_total stable 200: %g (>= 6 answered)", stable200);
    double canary200 = metrics_sample(t, "lorad_requests_total{variant=\"canary\",code=\"200\"}");
    ck_assert_msg(canary200 >= 2, "lorad_requests_total canary 200: %g (>= 2 pinned)", canary200);
    ck_assert_msg(metrics_sample(t, "lorad_request_duration_seconds_count") >= 10,
                  "lorad_request_duration_seconds_count %g after 10 answered /infer",
                  metrics_sample(t, "lorad_request_duration_seconds_count"));
    ck_assert_msg(metrics_sample(t, "lorad_batch_rows_sum") == 13 + 8,
                  "lorad_batch_rows_sum %g, but 21 rows were answered",
                  metrics_sample(t, "lorad_batch_rows_sum"));
    ck_assert_msg(metrics_sample(t, "lorad_swap_stage_seconds_count") == 2,
                  "lorad_swap_stage_seconds_count %g after 2 committed swaps",
                  metrics_sample(t, "lorad_swap_stage_seconds_count"));
    ck_assert_msg(metrics_sample(t, "lorad_swap_commit_seconds_count") == 4,
                  "lorad_swap_commit_seconds_count %g after 2 swaps and 2 rollbacks",
                  metrics_sample(t, "lorad_swap_commit_seconds_count"));
    ck_assert_msg(metrics_sample(t, "lorad_queue_depth") >= 0 &&
                      metrics_sample(t, "lorad_inflight_requests") >= 0,
                  "queue depth / in-flight gauges are not numbers");
    itu_resp_free(&r);
    cJSON_Delete(st);
    int rc = itu_daemon_stop(d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d; log:\n%s", rc, itu_log_tail(d, 2000));
    itu_daemon_free(&d);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    X = itu_rows(505, KNOWN_ROWS, M->in);
    RA = itu_demo_adapter(M, "demo-a");
    RB = itu_demo_adapter(M, "demo-b");
    Suite *s = suite_create("itest_ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_systemd_notify);
    tcase_add_test(tc, test_socket_activation);
    tcase_add_test(tc, test_crash_safety);
    tcase_add_test(tc, test_metrics_promtool);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    itu_adapter_free(&RA);
    itu_adapter_free(&RB);
    free(X);
    itu_model_free(&M);
    itu_cleanup();
    return failed ? 1 : 0;
}
