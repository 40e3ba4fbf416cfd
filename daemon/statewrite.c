/* lorad — daemon/statewrite.c: the state-file writes (see statewrite.h).
 *
 * Design: one FIFO of struct state_write, each holding the text rendered
 * right after its commit and the reply to give when it is on disk.
 * statewrite_kick() starts the head write in libuv's threadpool unless one
 * runs; its after-callback answers, frees it and kicks the next. So writes
 * reach the disk in commit order and a reply never precedes its write.
 *
 * Invariant: `writing` is true exactly while one write is in the
 * threadpool; the queue holds the writes not yet started.
 */
#include "statewrite.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../lib/statefile.h"
#include "log.h"
#include "lorad.h"

/* One state-file write, queued after a commit. */
struct state_write {
    struct state_write *next;
    struct lorad_server *srv;
    uv_work_t work;
    char *path; /* copy of cfg.state_file */
    char *text; /* statefile_render() output */
    size_t len;
    int rc;
    struct lorad_error err;
    struct statewrite_reply reply;
};

struct statewrite {
    struct state_write *head, *tail; /* queued, not yet started */
    bool writing;                    /* a write runs in the threadpool */
};

int statewrite_init(struct lorad_server *srv, struct lorad_error *err)
{
    if (!(srv->statewrite = calloc(1, sizeof(*srv->statewrite))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
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
    return !sw || (!sw->writing && !sw->head);
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
    return rc;
}

/* ---- the FIFO ---- */

static void statewrite_kick(struct lorad_server *srv);

static void write_free(struct state_write *w)
{
    cJSON_Delete(w->reply.answer);
    free(w->text);
    free(w->path);
    free(w);
}

/* Answers w's reply: 200, or 500 when the write failed. */
static void write_answer(struct state_write *w)
{
    struct lorad_server *srv = w->srv;
    struct statewrite_reply *y = &w->reply;
    if (w->rc < 0) {
        LOG_E("event=state_write_failed after=%s path=%s reason=\"%s\"", y->what,
              srv->cfg.state_file, w->err.msg);
        if (y->r)
            http_respond_error(y->r, LORAD_E_INTERNAL,
                               "the %s is committed and serving, but it is not durable: the "
                               "state file could not be written (%s)",
                               y->what, w->err.msg);
    } else if (y->r) {
        http_respond_json(y->r, 200, y->answer, NULL);
        y->answer = NULL;
    }
    if (y->answered)
        y->answered(srv);
}

/* Answers and frees w. */
static void write_finish(struct state_write *w)
{
    write_answer(w);
    write_free(w);
}

static void write_work(uv_work_t *work)
{
    struct state_write *w = work->data;
    w->rc = statefile_write(w->path, w->text, w->len, &w->err);
}

static void write_done(uv_work_t *work, int status)
{
    struct state_write *w = work->data;
    struct lorad_server *srv = w->srv;
    srv->statewrite->writing = false;
    if (status < 0 && w->rc == 0)
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "cancelled");
    write_finish(w);
    statewrite_kick(srv);
}

static void statewrite_kick(struct lorad_server *srv)
{
    struct statewrite *sw = srv->statewrite;
    if (sw->writing || !sw->head)
        return;
    struct state_write *w = sw->head;
    sw->head = w->next;
    if (!sw->head)
        sw->tail = NULL;
    w->work.data = w;
    int rc = uv_queue_work(srv->loop, &w->work, write_work, write_done);
    if (rc < 0) {
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "uv_queue_work: %s", uv_strerror(rc));
        write_finish(w);
        statewrite_kick(srv);
        return;
    }
    sw->writing = true;
}

/* The write for w's commit: the state rendered now. */
static int write_prepare(struct state_write *w)
{
    struct lorad_server *srv = w->srv;
    w->path = strdup(srv->cfg.state_file);
    w->text = statefile_render(srv->serving, srv->profile, srv->model);
    if (!w->path || !w->text)
        return w->rc =
                   lorad_error_set(&w->err, LORAD_E_INTERNAL, "out of memory rendering the state");
    w->len = strlen(w->text);
    return 0;
}

void statewrite_enqueue(struct lorad_server *srv, const struct statewrite_reply *reply)
{
    struct statewrite *sw = srv->statewrite;
    struct state_write *w = calloc(1, sizeof(*w));
    if (!w) {
        cJSON_Delete(reply->answer);
        LOG_E("event=state_write_failed after=%s reason=\"out of memory\"", reply->what);
        http_respond_error(reply->r, LORAD_E_INTERNAL,
                           "the %s is committed and serving, but it is not durable: out of memory",
                           reply->what);
        if (reply->answered)
            reply->answered(srv);
        return;
    }
    w->srv = srv;
    w->reply = *reply;
    if (!reply->answer)
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "out of memory");
    if (!srv->cfg.state_file || w->rc < 0 || write_prepare(w) < 0) {
        write_finish(w); /* nothing to persist (or nothing to say) */
        return;
    }
    if (sw->tail)
        sw->tail->next = w;
    else
        sw->head = w;
    sw->tail = w;
    statewrite_kick(srv);
}
