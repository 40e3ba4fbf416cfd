/* lorad — daemon/statewrite.c: commits, durable before visible (see
 * statewrite.h).
 *
 * Design: one FIFO of struct state_write. statewrite_kick() starts the head
 * commit unless one runs: change (held) → render → STAGE in the threadpool
 * → flip on the loop → PUBLISH in the threadpool → finish or undo → done →
 * kick the next. One commit at a time keeps the fixed temp name safe
 * (lib/fileio.h) and lets every change be computed against the state its
 * predecessor left.
 *
 * Invariants: `running` is the one commit between its change and its done
 * (NULL when none); the queue holds the commits not yet started; a pending
 * serving change exists exactly while `running` is between its change and
 * its finish / undo / abort.
 */
#include "statewrite.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../lib/statefile.h"
#include "log.h"
#include "lorad.h"
#include "metrics.h"

enum write_phase { PHASE_STAGE, PHASE_PUBLISH };

/* One commit. */
struct state_write {
    struct state_write *next;
    struct lorad_server *srv;
    struct statewrite_commit cm;
    uv_work_t work;
    enum write_phase phase;
    char *path; /* copy of cfg.state_file */
    char *text; /* statefile_render() output */
    size_t len;
    int rc; /* of the phase that ran in the threadpool */
    struct lorad_error err;
    struct serving_commit c;
};

struct statewrite {
    struct state_write *head, *tail; /* queued, not yet started */
    struct state_write *running;
    bool ok;                         /* the last write succeeded (or none failed yet) */
    char error[LORAD_ERROR_MSG_MAX]; /* when !ok */
};

int statewrite_init(struct lorad_server *srv, struct lorad_error *err)
{
    if (!(srv->statewrite = calloc(1, sizeof(*srv->statewrite))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    srv->statewrite->ok = true;
    return 0;
}

void statewrite_free(struct lorad_server *srv)
{
    free(srv->statewrite);
    srv->statewrite = NULL;
}

bool statewrite_idle(const struct lorad_server *srv)
{
    const struct statewrite *sw = srv->statewrite;
    return !sw || (!sw->running && !sw->head);
}

/* ---- the state_file status ---- */

static void note_ok(struct lorad_server *srv)
{
    srv->statewrite->ok = true;
    srv->statewrite->error[0] = '\0';
}

static void note_failed(struct lorad_server *srv, const char *after, const char *msg)
{
    struct statewrite *sw = srv->statewrite;
    char q[LORAD_ERROR_MSG_MAX + 8];
    sw->ok = false;
    snprintf(sw->error, sizeof(sw->error), "%s", msg);
    if (srv->metrics)
        metrics_record_state_write_failure(srv->metrics);
    LOG_E("event=state_write_failed after=%s path=%s reason=%s", after, srv->cfg.state_file,
          log_quote(q, sizeof(q), msg));
}

cJSON *statewrite_status_json(const struct lorad_server *srv)
{
    const struct statewrite *sw = srv->statewrite;
    if (!srv->cfg.state_file || !sw)
        return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "path", srv->cfg.state_file);
    cJSON_AddBoolToObject(o, "ok", sw->ok);
    if (sw->ok)
        cJSON_AddNullToObject(o, "error");
    else
        cJSON_AddStringToObject(o, "error", sw->error);
    return o;
}

int statewrite_sync(struct lorad_server *srv, struct lorad_error *err)
{
    if (!srv->cfg.state_file)
        return 0;
    char *text = statefile_render(srv->serving, srv->profile, srv->model);
    if (!text)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory rendering the state file");
    int rc = statefile_write(srv->cfg.state_file, text, strlen(text), err);
    free(text);
    if (rc < 0)
        note_failed(srv, "sync", err->msg);
    else
        note_ok(srv);
    return rc;
}

/* ---- the queue ---- */

static void statewrite_kick(struct lorad_server *srv);

static void write_free(struct state_write *w)
{
    free(w->text);
    free(w->path);
    free(w);
}

/* The commit's outcome: done, free, next. */
static void write_end(struct state_write *w, int rc, const struct lorad_error *err)
{
    struct lorad_server *srv = w->srv;
    if (srv->statewrite->running == w)
        srv->statewrite->running = NULL;
    w->cm.done(srv, w->cm.arg, rc, rc < 0 ? NULL : &w->c, err);
    write_free(w);
    statewrite_kick(srv);
}

static void write_work(uv_work_t *work)
{
    struct state_write *w = work->data;
    if (w->phase == PHASE_STAGE)
        w->rc = statefile_stage(w->path, w->text, w->len, &w->err);
    else
        w->rc = statefile_publish(w->path, &w->err);
}

static void write_done(uv_work_t *work, int status);

static int write_queue(struct state_write *w, enum write_phase phase)
{
    w->phase = phase;
    w->rc = 0;
    w->work.data = w;
    int rc = uv_queue_work(w->srv->loop, &w->work, write_work, write_done);
    if (rc < 0)
        lorad_error_set(&w->err, LORAD_E_INTERNAL, "uv_queue_work: %s", uv_strerror(rc));
    return rc;
}

/* The temp file is on disk (or not): flip and rename, or drop the change. */
static void stage_written(struct state_write *w)
{
    struct lorad_server *srv = w->srv;
    if (w->rc < 0) {
        serving_pending_abort(srv->serving);
        note_failed(srv, w->cm.what, w->err.msg);
        write_end(w, w->err.code, &w->err);
        return;
    }
    w->c.commit_us += serving_pending_publish(srv->serving); /* the flip */
    if (write_queue(w, PHASE_PUBLISH) < 0) {
        serving_pending_undo(srv->serving); /* the next stage reuses the temp file */
        write_end(w, w->err.code, &w->err);
    }
}

/* The rename (and the directory fsync) ran: keep the flip or undo it. */
static void publish_written(struct state_write *w)
{
    struct lorad_server *srv = w->srv;
    if (w->rc < 0) {
        serving_pending_undo(srv->serving);
        note_failed(srv, w->cm.what, w->err.msg);
        write_end(w, w->err.code, &w->err);
        return;
    }
    serving_pending_finish(srv->serving);
    if (w->rc > 0) /* renamed; only the directory fsync failed */
        note_failed(srv, w->cm.what, w->err.msg);
    else
        note_ok(srv);
    write_end(w, 0, NULL);
}

static void write_done(uv_work_t *work, int status)
{
    struct state_write *w = work->data;
    if (status < 0 && w->rc == 0)
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "state write cancelled");
    if (w->phase == PHASE_STAGE)
        stage_written(w);
    else
        publish_written(w);
}

/* Starts w (the head): its change, held; then the stage write. */
static void write_start(struct state_write *w)
{
    struct lorad_server *srv = w->srv;
    struct lorad_error err = {0};
    const struct profile *profile = srv->profile;
    srv->statewrite->running = w;
    if (w->cm.change(srv, w->cm.arg, &w->c, &profile, &err) < 0) {
        serving_pending_abort(srv->serving); /* clears the hold */
        write_end(w, err.code, &err);
        return;
    }
    if (!srv->cfg.state_file) {
        w->c.commit_us += serving_pending_publish(srv->serving);
        serving_pending_finish(srv->serving);
        write_end(w, 0, NULL);
        return;
    }
    w->path = strdup(srv->cfg.state_file);
    w->text = statefile_render(srv->serving, profile, srv->model);
    if (!w->path || !w->text) {
        serving_pending_abort(srv->serving);
        lorad_error_set(&err, LORAD_E_INTERNAL, "out of memory rendering the state file");
        write_end(w, err.code, &err);
        return;
    }
    w->len = strlen(w->text);
    if (write_queue(w, PHASE_STAGE) < 0) {
        serving_pending_abort(srv->serving);
        write_end(w, w->err.code, &w->err);
    }
}

static void statewrite_kick(struct lorad_server *srv)
{
    struct statewrite *sw = srv->statewrite;
    if (sw->running || !sw->head)
        return;
    struct state_write *w = sw->head;
    sw->head = w->next;
    if (!sw->head)
        sw->tail = NULL;
    write_start(w);
}

void statewrite_commit(struct lorad_server *srv, const struct statewrite_commit *cm)
{
    struct statewrite *sw = srv->statewrite;
    struct state_write *w = calloc(1, sizeof(*w));
    if (!w) {
        struct lorad_error err = {0};
        lorad_error_set(&err, LORAD_E_INTERNAL, "%s: out of memory", cm->what);
        cm->done(srv, cm->arg, err.code, NULL, &err);
        return;
    }
    w->srv = srv;
    w->cm = *cm;
    if (sw->tail)
        sw->tail->next = w;
    else
        sw->head = w;
    sw->tail = w;
    statewrite_kick(srv);
}

size_t statewrite_refuse_queued(struct lorad_server *srv)
{
    struct statewrite *sw = srv->statewrite;
    size_t n = 0;
    struct lorad_error err = {0};
    lorad_error_set(&err, LORAD_E_DRAINING, "lorad is shutting down; nothing was changed");
    while (sw->head) {
        struct state_write *w = sw->head;
        sw->head = w->next;
        w->cm.done(srv, w->cm.arg, err.code, NULL, &err);
        write_free(w);
        n++;
    }
    sw->tail = NULL;
    return n;
}
