/* lorad — daemon/main.c: the daemon's entry point: command line, start-up
 * sequence, signals (drain on SIGTERM/SIGINT, reload on SIGHUP) and the
 * orderly shutdown (SPEC.md 5, 7, 8).
 *
 * Start-up runs before the loop and may block: config → log level →
 * OpenBLAS kernel (may re-exec once) → the library threads' names
 * (threadname.h) → model → adapter_dir → profile →
 * serving state → state file restore, or initial_adapter → one state write
 * (the version floor) → workers → listeners → READY=1 → uv_run. Any
 * failure is one clear log line and exit status 1.
 *
 * Shutdown: SIGTERM/SIGINT marks the daemon draining at once (readyz 503,
 * STOPPING=1), keeps serving for shutdown_delay_ms, stops accepting, and
 * polls (a 10 ms timer; the loop thread never waits on a worker) until
 * every received request is answered and no control work is in flight.
 * If drain_timeout_ms passes first: no batch starts any more, every
 * request still queued is answered 503 draining at once
 * (workers_refuse_queued), and so are a /swap still staging
 * (control_refuse_staging: its job is detached) and the commits queued
 * behind the one running (statewrite_refuse_queued); the batches already
 * running finish and are answered (so the overrun is at most one batch
 * per worker); once every worker has exited, those answers get up to
 * DRAIN_FLUSH_MS to be written. Then the workers are joined (they have
 * exited), the state file is written (unless a staging job or a state
 * write still runs: the file keeps the last committed state), every
 * connection still open is closed, event=drain_end logs what clients got,
 * and lorad exits 0 (without freeing what a detached job may still use).
 * Only a state write still running past the flush makes it exit without
 * closing its connection.
 *
 * main.c is the top of the daemon: it owns the route table it hands to
 * http_start(), wires the worker pool to infer.c's callbacks, and keeps
 * the watchdog policy (pet systemd only while the workers are healthy);
 * the modules below it never call back up.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../lib/statefile.h"
#include "blas.h"
#include "clock.h"
#include "config.h"
#include "control.h"
#include "http.h"
#include "infer.h"
#include "log.h"
#include "lorad.h"
#include "metrics.h"
#include "statewrite.h"
#include "status.h"
#include "systemd.h"
#include "threadname.h"
#include "workers.h"

#define DRAIN_POLL_MS 10
/* Past the drain deadline, once no batch runs: how long the answers
 * already given (200s of the last batches, 503 refusals) get to be
 * written before their connections are closed. */
#define DRAIN_FLUSH_MS 1000
/* Scratch rank of the workers when the profile sets no max_rank. */
#define DEFAULT_SCRATCH_RANK 64

/* The HTTP API (SPEC 6): what http.c routes to. */
static const struct http_route routes[] = {
    {"/infer", "POST", HTTP_PLANE_DATA, false, infer_handle},
    {"/swap", "POST", HTTP_PLANE_CONTROL, true, control_swap},
    {"/rollback", "POST", HTTP_PLANE_CONTROL, true, control_rollback},
    {"/canary", "POST", HTTP_PLANE_CONTROL, true, control_canary},
    {"/promote", "POST", HTTP_PLANE_CONTROL, true, control_promote},
    {"/unload", "POST", HTTP_PLANE_CONTROL, true, control_unload},
    {"/status", "GET", HTTP_PLANE_CONTROL, false, status_report},
    {"/adapters", "GET", HTTP_PLANE_CONTROL, false, status_adapters},
    {"/healthz", "GET", HTTP_PLANE_BOTH, false, status_healthz},
    {"/readyz", "GET", HTTP_PLANE_BOTH, false, status_readyz},
    {"/metrics", "GET", HTTP_PLANE_BOTH, false, status_metrics},
};

/* Signals, timers and reload bookkeeping of the loop (loop thread). */
struct lifecycle {
    struct lorad_server *srv;
    struct config_overrides ovr; /* command-line flags, re-applied on reload */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t delay_timer; /* shutdown_delay_ms */
    uv_timer_t drain_timer; /* 10 ms drain poll */
    uv_timer_t watchdog;    /* systemd WATCHDOG=1 */
    uint64_t drain_deadline_ns;
    uint64_t flush_deadline_ns; /* 0 until the workers exited past the deadline */
    bool draining;
    bool expired;      /* drain_timeout_ms passed: queued requests refused */
    bool reloading;    /* a SIGHUP reload runs in the threadpool */
    bool reload_again; /* another SIGHUP came meanwhile */
    bool abandoned;    /* control work in flight at the end: exit, close nothing */
};

/* A SIGHUP reload: files read in the threadpool, applied on the loop. */
struct reload_job {
    uv_work_t work;
    struct lifecycle *lc;
    char *path;
    struct lorad_config cfg;
    char *token;
    int rc;
    struct lorad_error err;
};

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: lorad [--config FILE] [options]\n"
               "Serves a LoRA-augmented linear model and hot-swaps its adapter.\n\n"
               "  -c, --config FILE         configuration file (JSON, comments allowed)\n"
               "      --check-config        validate config, model, adapter_dir, token and\n"
               "                            initial adapter, print \"config ok\" and exit\n"
               "      --listen ADDR         data plane address (HOST:PORT or unix:/path)\n"
               "      --control-listen ADDR separate control plane address (\"null\": none)\n"
               "      --model-dir DIR       base model directory\n"
               "      --adapter-dir DIR     directory of PEFT adapter directories\n"
               "      --initial-adapter N   adapter to serve when no state is restored\n"
               "      --state-file FILE     persistent serving state (\"null\": none)\n"
               "      --workers N           worker threads (0 = one per CPU)\n"
               "      --log-level LEVEL     error, warning, notice, info or debug\n"
               "  -h, --help                this help\n"
               "  -V, --version             print the version\n\n"
               "Flags override the file's keys, also after SIGHUP. Signals: SIGTERM/SIGINT\n"
               "drain and exit, SIGHUP re-reads the reloadable keys and the token file.\n");
}

enum {
    OPT_CHECK = 256,
    OPT_LISTEN,
    OPT_CONTROL,
    OPT_MODEL,
    OPT_ADAPTERS,
    OPT_INITIAL,
    OPT_STATE,
    OPT_WORKERS,
    OPT_LEVEL
};

struct cmdline {
    const char *config_path;
    bool check_only;
    struct config_overrides ovr;
};

/* 0 to go on, 1 to exit 0 (help, version), -1 to exit 1. */
static int parse_args(int argc, char **argv, struct cmdline *cl)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"control-listen", required_argument, NULL, OPT_CONTROL},
        {"model-dir", required_argument, NULL, OPT_MODEL},
        {"adapter-dir", required_argument, NULL, OPT_ADAPTERS},
        {"initial-adapter", required_argument, NULL, OPT_INITIAL},
        {"state-file", required_argument, NULL, OPT_STATE},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"log-level", required_argument, NULL, OPT_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    memset(cl, 0, sizeof(*cl));
    cl->ovr.workers = -1;
    int o;
    char *end;
    while ((o = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            cl->config_path = optarg;
            break;
        case OPT_CHECK:
            cl->check_only = true;
            break;
        case OPT_LISTEN:
            cl->ovr.listen = optarg;
            break;
        case OPT_CONTROL:
            cl->ovr.control_listen = optarg;
            break;
        case OPT_MODEL:
            cl->ovr.model_dir = optarg;
            break;
        case OPT_ADAPTERS:
            cl->ovr.adapter_dir = optarg;
            break;
        case OPT_INITIAL:
            cl->ovr.initial_adapter = optarg;
            break;
        case OPT_STATE:
            cl->ovr.state_file = optarg;
            break;
        case OPT_LEVEL:
            cl->ovr.log_level = optarg;
            break;
        case OPT_WORKERS:
            errno = 0;
            long w = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || w < 0 || w > 1024) {
                fprintf(stderr, "lorad: --workers: expected an integer in 0..1024\n");
                return -1;
            }
            cl->ovr.workers = (int)w;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case 'V':
            printf("lorad %s\n", LORAD_VERSION);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lorad: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* ---- start-up steps ---- */

static void model_warn(const char *line)
{
    char q[LORAD_ERROR_MSG_MAX + 8];
    LOG_W("event=model_warning message=%s", log_quote(q, sizeof(q), line));
}

static int open_adapter_dir(const char *dir, int *fd, struct lorad_error *err)
{
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "adapter_dir %s: %s", dir,
                               strerror(errno));
    return 0;
}

/* The slot and memory bounds of the config into the serving state. */
static void serving_apply_config(struct lorad_server *srv)
{
    serving_set_limits(srv->serving, (size_t)srv->cfg.max_slots,
                       (uint64_t)srv->cfg.max_adapter_memory_mb << 20);
}

/* Stages `name` synchronously (start-up may block) and makes it stable. */
static int load_initial_adapter(struct lorad_server *srv, const char *name, struct lorad_error *err)
{
    struct snapshot *snap = NULL;
    struct profile *completed = NULL;
    struct adapter_stage_args a = {
        .adapter_dirfd = srv->adapter_dirfd,
        .name = name,
        .expected_sha256 = NULL,
        .model = srv->model,
        .profile = serving_slot_profile(serving_slot_get(srv->serving, NULL)),
    };
    if (!a.profile)
        a.profile = srv->profile;
    int rc = adapter_stage(&a, &snap, &completed, err);
    if (rc < 0) {
        char pfx[200];
        snprintf(pfx, sizeof(pfx), "initial_adapter %s (%s)", name, lorad_err_name(rc));
        lorad_error_prefix(err, pfx);
        return rc;
    }
    struct serving_commit c;
    if ((rc = serving_swap(srv->serving, snap, -1, &c, err)) < 0) {
        profile_free(&completed);
        return rc;
    }
    if (completed)
        serving_slot_set_profile(srv->serving, NULL, completed);
    LOG_I("event=swap adapter=%s version=%llu variant=stable generation=%llu stage_ms=%.3f "
          "reason=initial_adapter",
          c.now->name, (unsigned long long)c.now->version, (unsigned long long)c.generation,
          c.now->stage_ms);
    return 0;
}

/* ---- state restore: one task per slot on libuv's threadpool ---- */

struct restore_task {
    uv_work_t work;
    void (*task)(void *arg, size_t i);
    void *arg;
    size_t i;
};

static void restore_work(uv_work_t *w)
{
    struct restore_task *t = w->data;
    t->task(t->arg, t->i);
}

static void restore_after(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
}

/* statefile's runner: every slot staged in parallel on the threadpool of a
 * private loop (start-up: the serving loop does not exist yet); in order
 * on this thread when that cannot be set up. */
static void restore_run(void *arg, size_t n, void (*task)(void *, size_t), void *targ)
{
    uv_loop_t loop;
    struct restore_task *t = calloc(n ? n : 1, sizeof(*t));
    size_t queued = 0;
    (void)arg;
    if (t && uv_loop_init(&loop) == 0) {
        for (size_t i = 0; i < n; i++) {
            t[i] = (struct restore_task){.task = task, .arg = targ, .i = i};
            t[i].work.data = &t[i];
            if (uv_queue_work(&loop, &t[i].work, restore_work, restore_after) == 0)
                queued++;
            else
                task(targ, i);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    } else {
        for (size_t i = 0; i < n; i++)
            task(targ, i);
    }
    LOG_D("event=state_restore_tasks slots=%zu on_threadpool=%zu", n, queued);
    free(t);
}

static void restore_slot_failed(void *arg, const char *slot, const struct lorad_error *why)
{
    struct lorad_server *srv = arg;
    char q[LORAD_ERROR_MSG_MAX + 8];
    if (strcmp(slot, SERVING_DEFAULT_SLOT) == 0)
        return; /* logged with its fallback below */
    LOG_E("event=state_restore_slot_failed path=%s slot=%s code=%s reason=%s "
          "fallback=\"base model, with the history entries whose files still match\"",
          srv->cfg.state_file, slot, lorad_err_name(why->code), log_quote(q, sizeof(q), why->msg));
}

/* State file restore, else initial_adapter. */
static int load_serving_state(struct lorad_server *srv, struct lorad_error *err)
{
    srv->restored = -1;
    if (srv->cfg.state_file) {
        struct lorad_error rerr = {0};
        struct statefile_restore_opts o = {restore_run, restore_slot_failed, srv, false};
        struct profile *dp = srv->profile ? profile_dup(srv->profile) : NULL;
        enum statefile_restored res = statefile_restore_slots(
            srv->cfg.state_file, srv->adapter_dirfd, srv->model, srv->serving, &dp, &o, &rerr);
        srv->restored = (int)res;
        bool dflt_ok = o.default_restored;
        if (dflt_ok)
            serving_slot_set_profile(srv->serving, NULL, dp);
        else
            profile_free(&dp);
        if (res == STATEFILE_RESTORED || (res == STATEFILE_FAILED && dflt_ok)) {
            const struct serving_view *v = serving_current(srv->serving);
            LOG_I("event=state_restored path=%s adapter=%s version=%llu generation=%llu "
                  "history=%zu canary=%s slots=%zu complete=%s",
                  srv->cfg.state_file, v->stable ? v->stable->name : "null",
                  (unsigned long long)(v->stable ? v->stable->version : 0),
                  (unsigned long long)v->generation, serving_history_len(srv->serving),
                  v->canary ? v->canary->name : "null", serving_slot_count(srv->serving),
                  res == STATEFILE_RESTORED ? "true" : "false");
            return 0;
        }
        if (res == STATEFILE_FAILED) {
            char q[LORAD_ERROR_MSG_MAX + 8];
            LOG_E("event=state_restore_failed path=%s reason=%s fallback=%s", srv->cfg.state_file,
                  log_quote(q, sizeof(q), rerr.msg),
                  srv->cfg.initial_adapter ? srv->cfg.initial_adapter : "base_model");
        }
    }
    if (srv->cfg.initial_adapter)
        return load_initial_adapter(srv, srv->cfg.initial_adapter, err);
    return 0;
}

/* Everything up to (not including) the listeners and the loop. */
static int startup_core(struct lorad_server *srv, struct lorad_error *err)
{
    int rc;
    if (srv->cfg.auth_token_file &&
        (rc = config_read_token(srv->cfg.auth_token_file, &srv->auth_token, err)) < 0)
        return rc;
    if ((rc = model_load(srv->cfg.model_dir, &srv->model, model_warn, err)) < 0) {
        lorad_error_prefix(err, "model_dir");
        return rc;
    }
    LOG_I("event=model_loaded dir=%s layers=%zu in_features=%d out_features=%d parameters=%llu",
          srv->cfg.model_dir, srv->model->nlayers, srv->model->in_features,
          srv->model->out_features, (unsigned long long)srv->model->parameters);
    if ((rc = open_adapter_dir(srv->cfg.adapter_dir, &srv->adapter_dirfd, err)) < 0)
        return rc;
    if ((rc = profile_from_config(srv->model, srv->cfg.max_rank,
                                  (const char *const *)srv->cfg.target_modules,
                                  srv->cfg.n_target_modules, &srv->profile, err)) < 0)
        return rc;
    return 0;
}

/* ---- the workers ---- */

/* Starts the pool that serves /infer (infer.c's callbacks). */
static int start_workers(struct lorad_server *srv, struct lorad_error *err)
{
    struct workers_config wc = {
        .threads = srv->cfg.workers,
        .max_batch_rows = srv->cfg.max_batch_rows,
        .queue_max = (size_t)srv->cfg.queue_max_requests,
    };
    struct workers_ops ops;
    srv->scratch_rank =
        srv->profile && srv->profile->max_rank > 0 ? srv->profile->max_rank : DEFAULT_SCRATCH_RANK;
    infer_workers_ops(srv, &ops);
    return workers_start(&srv->workers, srv->loop, &wc, &ops, err);
}

/* The watchdog policy: the timer firing proves the loop runs; the workers
 * must also move. */
static void watchdog_tick(uv_timer_t *t)
{
    struct lorad_server *srv = t->data;
    if (workers_healthy(srv->workers))
        systemd_notify("WATCHDOG=1");
    else
        LOG_W("event=watchdog_skipped reason=\"workers are not making progress\"");
}

/* Pets the systemd watchdog at half its interval (no-op when it is off).
 * `t` is closed with the loop. */
static void watchdog_start(struct lorad_server *srv, uv_timer_t *t)
{
    uint64_t usec = systemd_watchdog_usec();
    uv_timer_init(srv->loop, t);
    t->data = srv;
    if (usec == 0)
        return;
    uint64_t ms = usec / 2000;
    if (ms == 0)
        ms = 1;
    uv_timer_start(t, watchdog_tick, ms, ms);
    uv_unref((uv_handle_t *)t);
    LOG_I("event=watchdog interval_ms=%llu", (unsigned long long)(usec / 1000));
}

/* ---- shutdown ---- */

/* No control-plane work in the threadpool: staging, state writes, scans. */
static bool control_work_idle(const struct lorad_server *srv)
{
    return control_idle(srv) && statewrite_idle(srv) && status_idle(srv);
}

static void on_close_free_nothing(uv_handle_t *h)
{
    (void)h;
}

static void close_loop_handles(struct lifecycle *lc)
{
    uv_close((uv_handle_t *)&lc->sig_term, on_close_free_nothing);
    uv_close((uv_handle_t *)&lc->sig_int, on_close_free_nothing);
    uv_close((uv_handle_t *)&lc->sig_hup, on_close_free_nothing);
    uv_close((uv_handle_t *)&lc->delay_timer, on_close_free_nothing);
    uv_close((uv_handle_t *)&lc->drain_timer, on_close_free_nothing);
    uv_close((uv_handle_t *)&lc->watchdog, on_close_free_nothing);
}

/* Called when nothing is queued and no batch runs (the drain settled, or
 * every worker exited past the deadline), so workers_stop() joins threads
 * that have ended and the loop thread does not wait. */
static void shutdown_finish(struct lifecycle *lc)
{
    struct lorad_server *srv = lc->srv;
    uv_timer_stop(&lc->drain_timer);
    workers_stop(&srv->workers);
    if (control_work_idle(srv)) {
        struct lorad_error err = {0};
        if (statewrite_sync(srv, &err) < 0)
            LOG_E("event=state_write_failed when=shutdown reason=\"%s\"", err.msg);
    } else {
        LOG_W("event=state_write_skipped reason=\"a control operation is still in flight; the "
              "state file keeps its last committed state\"");
    }
    if (!control_work_idle(srv) && http_inflight(srv) == 0) {
        /* A staging job still runs, detached: its request was answered
         * 503 draining, so every connection can close; the state it uses
         * must not be freed (teardown is skipped, exit status 0). */
        http_close(srv);
        close_loop_handles(lc);
        lc->abandoned = true;
    } else if (!control_work_idle(srv)) {
        /* A state write still runs and its request is suspended (MHD
         * cannot close it): exit without closing anything. */
        struct http_drain_tally t;
        http_get_drain_tally(srv, &t);
        LOG_W("event=drain_end answered=%zu refused=%zu open=%zu action=\"exit without closing "
              "the open connections: a control operation is still in flight\"",
              t.answered, t.refused, http_inflight(srv));
        lc->abandoned = true;
    } else {
        http_close(srv); /* closes what is still open; logs event=drain_end */
        close_loop_handles(lc);
    }
    LOG_I("event=shutdown_done");
    uv_stop(srv->loop);
}

/* Past the deadline a /swap still staging has been answered (its job is
 * detached), so only the answers count. */
static bool drain_settled(struct lorad_server *srv, bool expired)
{
    return http_inflight(srv) == 0 && (expired || control_work_idle(srv));
}

/* drain_timeout_ms passed: refuse what is queued, let running batches end. */
static void drain_expire(struct lifecycle *lc)
{
    struct lorad_server *srv = lc->srv;
    size_t running = 0, refused = workers_refuse_queued(srv->workers, &running);
    size_t staging = control_refuse_staging(srv), commits = statewrite_refuse_queued(srv);
    lc->expired = true;
    LOG_W("event=drain_timeout timeout_ms=%d refused_queued=%zu running=%zu "
          "refused_staging=%zu refused_commits=%zu "
          "action=\"queued requests answered 503 draining; running batches finish and are "
          "answered\"",
          srv->cfg.drain_timeout_ms, refused, running, staging, commits);
}

static void drain_tick(uv_timer_t *t)
{
    struct lifecycle *lc = t->data;
    struct lorad_server *srv = lc->srv;
    uint64_t now = clock_now_ns();
    if (!lc->expired) {
        if (drain_settled(srv, false)) {
            shutdown_finish(lc);
            return;
        }
        if (now < lc->drain_deadline_ns)
            return;
        drain_expire(lc);
    }
    if (!workers_exited(srv->workers))
        return; /* a batch still runs: it ends on its own, we do not wait */
    if (!lc->flush_deadline_ns)
        lc->flush_deadline_ns = now + (uint64_t)DRAIN_FLUSH_MS * 1000000ull;
    if (drain_settled(srv, true) || now >= lc->flush_deadline_ns)
        shutdown_finish(lc);
}

static void delay_done(uv_timer_t *t)
{
    struct lifecycle *lc = t->data;
    struct lorad_server *srv = lc->srv;
    LOG_I("event=drain_begin inflight=%zu timeout_ms=%d", http_inflight(srv),
          srv->cfg.drain_timeout_ms);
    http_stop_accepting(srv);
    lc->drain_deadline_ns = clock_now_ns() + (uint64_t)srv->cfg.drain_timeout_ms * 1000000ull;
    uv_timer_start(&lc->drain_timer, drain_tick, 0, DRAIN_POLL_MS);
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
    struct lifecycle *lc = s->data;
    struct lorad_server *srv = lc->srv;
    if (lc->draining) {
        LOG_I("event=signal signal=%s action=ignored reason=\"already draining\"",
              strsignal(signum));
        return;
    }
    lc->draining = true;
    atomic_store(&srv->run_state, LORAD_DRAINING);
    systemd_notify("STOPPING=1\nSTATUS=draining");
    LOG_I("event=shutdown_begin signal=%s shutdown_delay_ms=%d",
          signum == SIGTERM ? "SIGTERM" : "SIGINT", srv->cfg.shutdown_delay_ms);
    uv_timer_start(&lc->delay_timer, delay_done, (uint64_t)srv->cfg.shutdown_delay_ms, 0);
}

/* ---- SIGHUP reload ---- */

static void reload_start(struct lifecycle *lc);

static void reload_work(uv_work_t *w)
{
    struct reload_job *j = w->data;
    j->rc = config_build(&j->cfg, j->path, &j->lc->ovr, &j->err);
    if (j->rc == 0 && j->cfg.auth_token_file &&
        (j->rc = config_read_token(j->cfg.auth_token_file, &j->token, &j->err)) < 0)
        config_free(&j->cfg);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

static bool targets_differ(const struct lorad_config *a, const struct lorad_config *b)
{
    if ((a->target_modules == NULL) != (b->target_modules == NULL) ||
        a->n_target_modules != b->n_target_modules)
        return true;
    for (size_t i = 0; i < a->n_target_modules; i++)
        if (strcmp(a->target_modules[i], b->target_modules[i]) != 0)
            return true;
    return false;
}

/* Logs every changed key that only a restart applies. */
static void reload_note_restart_keys(const struct lorad_config *o, const struct lorad_config *n)
{
    struct {
        const char *key;
        bool changed;
    } k[] = {
        {"listen", str_differs(o->listen, n->listen)},
        {"control_listen", str_differs(o->control_listen, n->control_listen)},
        {"model_dir", str_differs(o->model_dir, n->model_dir)},
        {"adapter_dir", str_differs(o->adapter_dir, n->adapter_dir)},
        {"initial_adapter", str_differs(o->initial_adapter, n->initial_adapter)},
        {"state_file", str_differs(o->state_file, n->state_file)},
        {"blas_coretype", str_differs(o->blas_coretype, n->blas_coretype)},
        {"workers", n->workers != o->workers},
        {"max_batch_rows", o->max_batch_rows != n->max_batch_rows},
        {"history", o->history != n->history},
        {"max_rank", o->max_rank != n->max_rank},
        {"target_modules", targets_differ(o, n)},
        {"max_connections", o->max_connections != n->max_connections},
        {"connection_timeout_s", o->connection_timeout_s != n->connection_timeout_s},
        {"queue_max_requests", o->queue_max_requests != n->queue_max_requests},
    };
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
        if (k[i].changed)
            LOG_W("event=reload_needs_restart key=%s reason=\"changed, applies at the next "
                  "start\"",
                  k[i].key);
}

static void reload_apply(struct lorad_server *srv, struct reload_job *j)
{
    struct lorad_config *c = &srv->cfg, *n = &j->cfg;
    reload_note_restart_keys(c, n);
    c->log_level = n->log_level;
    log_set_level(c->log_level);
    free(c->auth_token_file);
    c->auth_token_file = n->auth_token_file;
    n->auth_token_file = NULL;
    free(srv->auth_token);
    srv->auth_token = j->token;
    j->token = NULL;
    c->max_body_bytes = n->max_body_bytes;
    c->max_rows_per_request = n->max_rows_per_request;
    atomic_store(&srv->max_rows_per_request, c->max_rows_per_request); /* workers read it */
    c->drain_timeout_ms = n->drain_timeout_ms;
    c->shutdown_delay_ms = n->shutdown_delay_ms;
    c->max_slots = n->max_slots;
    c->max_adapter_memory_mb = n->max_adapter_memory_mb;
    serving_apply_config(srv);
    LOG_I("event=reload log_level=%s auth=%s max_body_bytes=%zu max_rows_per_request=%d "
          "drain_timeout_ms=%d shutdown_delay_ms=%d max_slots=%d max_adapter_memory_mb=%d",
          log_level_name(c->log_level), srv->auth_token ? "on" : "off", c->max_body_bytes,
          c->max_rows_per_request, c->drain_timeout_ms, c->shutdown_delay_ms, c->max_slots,
          c->max_adapter_memory_mb);
}

static void reload_done(uv_work_t *w, int status)
{
    struct reload_job *j = w->data;
    struct lifecycle *lc = j->lc;
    struct lorad_server *srv = lc->srv;
    lc->reloading = false;
    if (status < 0 || j->rc < 0) {
        char q[LORAD_ERROR_MSG_MAX + 8];
        LOG_E("event=reload_failed action=\"kept the running configuration\" reason=%s",
              log_quote(q, sizeof(q), status < 0 ? "cancelled" : j->err.msg));
    } else if (!lc->draining) {
        reload_apply(srv, j);
    }
    config_free(&j->cfg);
    free(j->token);
    free(j->path);
    free(j);
    if (lc->draining)
        return;
    const struct serving_view *v = serving_current(srv->serving);
    systemd_notify("READY=1\nSTATUS=serving adapter=%s version=%llu",
                   v->stable ? v->stable->name : "(base)",
                   (unsigned long long)(v->stable ? v->stable->version : 0));
    if (lc->reload_again) {
        lc->reload_again = false;
        reload_start(lc);
    }
}

static void reload_start(struct lifecycle *lc)
{
    struct lorad_server *srv = lc->srv;
    systemd_notify("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(clock_now_ns() / 1000));
    struct reload_job *j = calloc(1, sizeof(*j));
    if (!j || (srv->config_path && !(j->path = strdup(srv->config_path))))
        goto fail;
    j->lc = lc;
    j->work.data = j;
    if (uv_queue_work(srv->loop, &j->work, reload_work, reload_done) < 0)
        goto fail;
    lc->reloading = true;
    LOG_I("event=reload_begin config=%s", srv->config_path ? srv->config_path : "null");
    return;
fail:
    if (j)
        free(j->path);
    free(j);
    LOG_E("event=reload_failed reason=\"could not start the reload\"");
    systemd_notify("READY=1");
}

static void on_hup(uv_signal_t *s, int signum)
{
    (void)signum;
    struct lifecycle *lc = s->data;
    if (lc->draining)
        return;
    if (lc->reloading) {
        lc->reload_again = true;
        return;
    }
    reload_start(lc);
}

/* ---- the loop ---- */

static int start_loop_handles(struct lifecycle *lc)
{
    struct lorad_server *srv = lc->srv;
    uv_signal_t *sigs[] = {&lc->sig_term, &lc->sig_int, &lc->sig_hup};
    for (size_t i = 0; i < 3; i++) {
        uv_signal_init(srv->loop, sigs[i]);
        sigs[i]->data = lc;
    }
    uv_timer_init(srv->loop, &lc->delay_timer);
    uv_timer_init(srv->loop, &lc->drain_timer);
    lc->delay_timer.data = lc;
    lc->drain_timer.data = lc;
    if (uv_signal_start(&lc->sig_term, on_stop_signal, SIGTERM) < 0 ||
        uv_signal_start(&lc->sig_int, on_stop_signal, SIGINT) < 0 ||
        uv_signal_start(&lc->sig_hup, on_hup, SIGHUP) < 0)
        return -1;
    watchdog_start(srv, &lc->watchdog);
    return 0;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Frees what start-up allocated (after the loop, or on a start-up error).
 * False when a threadpool job still refers to the state (drain timed out
 * during a swap): nothing is freed and the caller must _exit(). */
static bool teardown(struct lorad_server *srv)
{
    if (!control_work_idle(srv)) {
        LOG_W("event=teardown_skipped reason=\"control work still in flight\"");
        return false;
    }
    if (srv->loop) {
        uv_walk(srv->loop, close_any, NULL);
        uv_run(srv->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(srv->loop) == 0)
            free(srv->loop);
        srv->loop = NULL;
    }
    metrics_free(&srv->metrics);
    control_free(srv);
    statewrite_free(srv);
    serving_free(&srv->serving);
    profile_free(&srv->profile);
    if (srv->adapter_dirfd >= 0)
        close(srv->adapter_dirfd);
    model_free(&srv->model);
    free(srv->auth_token);
    config_free(&srv->cfg);
    return true;
}

/* --check-config: everything start-up reads, nothing served. */
static int check_config(struct lorad_server *srv)
{
    struct lorad_error err = {0};
    int rc = startup_core(srv, &err);
    if (rc == 0 && srv->cfg.initial_adapter) {
        struct snapshot *snap = NULL;
        struct profile *completed = NULL;
        struct adapter_stage_args a = {
            .adapter_dirfd = srv->adapter_dirfd,
            .name = srv->cfg.initial_adapter,
            .model = srv->model,
            .profile = srv->profile,
        };
        if ((rc = adapter_stage(&a, &snap, &completed, &err)) < 0)
            lorad_error_prefix(&err, "initial_adapter");
        snapshot_free(&snap);
        profile_free(&completed);
    }
    if (rc < 0) {
        fprintf(stderr, "lorad: %s: %s\n", lorad_err_name(err.code), err.msg);
        return 1;
    }
    printf("config ok\n");
    return 0;
}

static int serve(struct lorad_server *srv, struct lifecycle *lc)
{
    struct lorad_error err = {0};
    int rc;
    if ((rc = startup_core(srv, &err)) < 0)
        goto fail;
    if (!(srv->serving = serving_new(srv->cfg.history)) ||
        serving_name_reclaimer(THREADNAME_RCU) < 0) {
        rc = lorad_error_set(&err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    serving_apply_config(srv);
    clock_gettime(CLOCK_REALTIME, &srv->started_rt); /* the base model's loaded_at */
    if ((rc = control_init(srv, &err)) < 0 || (rc = statewrite_init(srv, &err)) < 0 ||
        (rc = load_serving_state(srv, &err)) < 0)
        goto fail;
    if ((rc = statewrite_sync(srv, &err)) < 0) {
        lorad_error_prefix(&err, "state_file");
        goto fail;
    }
    if (!(srv->loop = malloc(sizeof(*srv->loop))) || uv_loop_init(srv->loop) < 0) {
        free(srv->loop);
        srv->loop = NULL;
        rc = lorad_error_set(&err, LORAD_E_INTERNAL, "cannot create the event loop");
        goto fail;
    }
    if (threadname_uv_pool(srv->loop, THREADNAME_POOL) < 0)
        LOG_W("event=thread_names_incomplete reason=\"cannot queue work to libuv's threadpool\"");
    if (!(srv->metrics = metrics_new())) {
        rc = lorad_error_set(&err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    if ((rc = start_workers(srv, &err)) < 0) {
        lorad_error_prefix(&err, "workers");
        goto fail;
    }
    if ((rc = http_start(srv, routes, sizeof(routes) / sizeof(routes[0]), &err)) < 0) {
        lorad_error_prefix(&err, "listen");
        workers_stop(&srv->workers);
        goto fail;
    }
    if (start_loop_handles(lc) < 0) {
        rc = lorad_error_set(&err, LORAD_E_INTERNAL, "cannot install signal handlers");
        workers_stop(&srv->workers);
        http_close(srv);
        goto fail;
    }
    atomic_store(&srv->run_state, LORAD_SERVING);
    const struct serving_view *v = serving_current(srv->serving);
    LOG_I("event=ready listen=%s control_listen=%s workers=%d adapter=%s version=%llu "
          "generation=%llu restored=%s auth=%s",
          srv->cfg.listen, srv->cfg.control_listen ? srv->cfg.control_listen : "same",
          srv->cfg.workers, v->stable ? v->stable->name : "null",
          (unsigned long long)(v->stable ? v->stable->version : 0),
          (unsigned long long)v->generation,
          srv->restored < 0 ? "null"
          : srv->restored   ? "true"
                            : "false",
          srv->auth_token ? "on" : "off");
    systemd_notify("READY=1\nSTATUS=serving adapter=%s version=%llu",
                   v->stable ? v->stable->name : "(base)",
                   (unsigned long long)(v->stable ? v->stable->version : 0));
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return 0;
fail : {
    char q[LORAD_ERROR_MSG_MAX + 8];
    LOG_E("event=startup_failed code=%s reason=%s", lorad_err_name(err.code ? err.code : rc),
          log_quote(q, sizeof(q), err.msg));
}
    return 1;
}

/* Weights are malloc'd per tensor when an adapter is staged and freed when
 * its snapshot retires. glibc would hand tensors of 128 KiB and more back
 * to the kernel (mmap/munmap, arena trimming), so every swap paid a page
 * fault and a page clear per 4 KiB of weights: half of a 16 MiB adapter's
 * stage time. Serving them from the heap and never trimming it lets the
 * next stage reuse the memory its predecessor freed; RSS stays at its
 * high-water mark, which SPEC 10 bounds (model + (history + 2) adapters). */
static void keep_freed_weights(void)
{
    (void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

int main(int argc, char **argv)
{
    struct cmdline cl;
    int rc = parse_args(argc, argv, &cl);
    if (rc != 0)
        return rc > 0 ? 0 : 1;
    signal(SIGPIPE, SIG_IGN);
    /* A state write past RLIMIT_FSIZE (systemd's LimitFSIZE=) fails with
     * EFBIG, answered 507 not_durable, instead of killing lorad. */
    signal(SIGXFSZ, SIG_IGN);
    /* ps, top, pgrep and journald's _COMM show "lorad" whatever the binary
     * is called (SPEC 8); threads started later inherit it until they are
     * named for what they do. */
    (void)prctl(PR_SET_NAME, "lorad", 0, 0, 0);
    keep_freed_weights();
    struct lorad_server srv;
    static struct lifecycle lc;
    memset(&srv, 0, sizeof(srv));
    srv.adapter_dirfd = -1;
    srv.restored = -1;
    srv.started_ns = clock_now_ns();
    atomic_store(&srv.run_state, LORAD_STARTING);
    lc.srv = &srv;
    lc.ovr = cl.ovr;
    struct lorad_error err = {0};
    if (config_build(&srv.cfg, cl.config_path, &cl.ovr, &err) < 0) {
        if (cl.check_only) {
            fprintf(stderr, "lorad: %s: %s\n", lorad_err_name(err.code), err.msg);
            return 1;
        }
        char q[LORAD_ERROR_MSG_MAX + 8];
        LOG_E("event=startup_failed code=%s reason=%s", lorad_err_name(err.code),
              log_quote(q, sizeof(q), err.msg));
        return 1;
    }
    srv.config_path = (char *)cl.config_path;
    log_set_level(srv.cfg.log_level);
    if (cl.check_only) {
        rc = check_config(&srv);
        teardown(&srv);
        return rc;
    }
    atomic_store(&srv.max_rows_per_request, srv.cfg.max_rows_per_request);
    blas_select(srv.cfg.blas_coretype, argv);
    /* After the re-exec (if any) and before lorad starts a thread of its
     * own, so the only other threads are OpenBLAS's (threadname.h). */
    int nblas = threadname_others(THREADNAME_BLAS);
    LOG_I("event=start version=%s pid=%d config=%s blas_threads=%d", LORAD_VERSION, (int)getpid(),
          cl.config_path ? cl.config_path : "null", nblas);
    rc = serve(&srv, &lc);
    bool clean = !lc.abandoned && teardown(&srv);
    if (rc == 0)
        LOG_I("event=exit status=0");
    if (!clean)
        _exit(rc); /* a staging thread may still run; do not run exit handlers */
    return rc;
}
