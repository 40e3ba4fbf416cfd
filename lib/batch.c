/* lorad — batch.c: one batch of /infer jobs (see batch.h).
 *
 * Design: four passes over the jobs, each job visited once per pass:
 * parse (job->req), route (job->slot_name, job->variant, job->snap), then
 * one group per distinct snapshot (of any slot and variant): its jobs'
 * rows are copied into one buffer, the forward pass runs over it in
 * chunks of forward_scratch_max_rows() rows, and each job's answer is
 * written from its slice of the outputs. A job leaves the batch as soon as
 * it fails (job->code < 0); the passes after skip it. Every job that
 * reaches a group is served by the snapshot of the view read once at the
 * start, so one batch never mixes two views.
 *
 * Invariants: a job's code is 0 until it fails or is answered, and it is
 * answered (resp set) only in its group's last pass; the parsed rows are
 * freed before batch_run returns.
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"

struct batch_scratch {
    const struct model *m;
    int max_rows;  /* rows per forward pass */
    int base_rank; /* forward scratch rank unless a snapshot needs more */
    struct forward_scratch *fw;
    float *x, *y; /* a group's rows [cap_rows][in] and outputs [cap_rows][out] */
    size_t cap_rows;
};

struct batch_scratch *batch_scratch_new(const struct model *m, int max_rows, int base_rank)
{
    struct batch_scratch *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    sc->m = m;
    sc->max_rows = max_rows;
    sc->base_rank = base_rank;
    return sc;
}

void batch_scratch_free(struct batch_scratch **scp)
{
    struct batch_scratch *sc = *scp;
    if (!sc)
        return;
    forward_scratch_free(&sc->fw);
    free(sc->x);
    free(sc->y);
    free(sc);
    *scp = NULL;
}

/* Room for `rows` rows of inputs and outputs. */
static int scratch_rows(struct batch_scratch *sc, size_t rows)
{
    float *nx, *ny;
    if (rows <= sc->cap_rows)
        return 0;
    nx = realloc(sc->x, rows * (size_t)sc->m->in_features * sizeof(float));
    if (!nx)
        return LORAD_E_INTERNAL;
    sc->x = nx;
    ny = realloc(sc->y, rows * (size_t)sc->m->out_features * sizeof(float));
    if (!ny)
        return LORAD_E_INTERNAL;
    sc->y = ny;
    sc->cap_rows = rows;
    return 0;
}

/* A forward scratch that takes snapshot `snap` (NULL: the base model). */
static int scratch_forward(struct batch_scratch *sc, const struct snapshot *snap)
{
    int rank = sc->base_rank;
    if (snap && snap->rank > rank)
        rank = snap->rank;
    if (sc->fw && (!snap || snap->rank <= forward_scratch_max_rank(sc->fw)))
        return 0;
    forward_scratch_free(&sc->fw);
    sc->fw = forward_scratch_new(sc->m, sc->max_rows, rank);
    return sc->fw ? 0 : LORAD_E_INTERNAL;
}

static void job_fail(struct batch_job *j, int code, const char *msg)
{
    lorad_error_set(&j->err, code, "%s", msg);
    j->code = code;
}

/* Pass 1: the job's body into j->req. */
static void job_parse(struct batch_job *j, const struct model *m, const struct batch_params *p)
{
    int rc = j->binary ? inferbody_parse_binary(j->body, j->body_len, m->in_features, p->max_rows,
                                                &j->req, &j->err)
                       : inferbody_parse_json(j->body, j->body_len, m->in_features, p->max_rows,
                                              &j->req, &j->err);
    j->code = rc;
    j->rows = rc == 0 ? j->req.rows : 0;
}

/* The job's slot under view v (NULL: failed). */
static const struct serving_slot_view *job_slot(struct batch_job *j, const struct serving_view *v)
{
    const char *name = j->req.slot ? j->req.slot : j->slot;
    size_t len = j->req.slot ? j->req.slot_len : j->slot_len;
    const struct serving_slot_view *sv;
    char buf[SERVING_SLOT_NAME_MAX + 1];
    if (!name)
        return v->dflt;
    if (len > SERVING_SLOT_NAME_MAX || memchr(name, '\0', len)) {
        lorad_error_set(&j->err, LORAD_E_INVALID_REQUEST,
                        "slot name does not match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        j->code = LORAD_E_INVALID_REQUEST;
        return NULL;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    if (!serving_slot_name_valid(buf)) {
        lorad_error_set(&j->err, LORAD_E_INVALID_REQUEST,
                        "slot name \"%.130s\" does not match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                        buf);
        j->code = LORAD_E_INVALID_REQUEST;
        return NULL;
    }
    if (!(sv = serving_view_slot(v, buf, len))) {
        lorad_error_set(&j->err, LORAD_E_SLOT_NOT_FOUND, "no slot \"%s\"", buf);
        j->code = LORAD_E_SLOT_NOT_FOUND;
    }
    return sv;
}

/* Pass 2: routes a parsed job under view v: its slot, then a pin wins
 * over a route key. */
static void job_route(struct batch_job *j, const struct serving_view *v)
{
    int pin = j->req.pin != INFERBODY_PIN_NONE ? j->req.pin : j->pin;
    const char *key = j->req.route_key ? j->req.route_key : j->route_key;
    size_t keylen = j->req.route_key ? j->req.route_key_len : j->route_key_len;
    const struct serving_slot_view *sv = job_slot(j, v);
    if (!sv)
        return;
    if (pin == SERVING_CANARY && !sv->canary) {
        job_fail(j, LORAD_E_NO_CANARY, "variant \"canary\" requested but no canary is live");
        return;
    }
    if (pin == SERVING_CANARY || pin == SERVING_STABLE)
        j->variant = (enum serving_variant)pin;
    else
        j->variant = serving_route_slot(sv, key, keylen);
    j->snap = j->variant == SERVING_CANARY ? sv->canary : sv->stable;
    snprintf(j->slot_name, sizeof(j->slot_name), "%s", sv->name);
}

static bool in_group(const struct batch_job *j, const struct snapshot *snap)
{
    return j->code == 0 && j->snap == snap;
}

/* Pass 4: job j's answer from its outputs y, as served by snap. */
static void job_answer(struct batch_job *j, const struct model *m, const struct snapshot *snap,
                       const float *y)
{
    struct inferbody_answer a = {
        .y = y,
        .rows = j->req.rows,
        .width = m->out_features,
        .multi_rows = j->req.multi_rows,
        .adapter = snap ? snap->name : NULL,
        .version = snap ? snap->version : 0,
        .variant = j->variant,
        .slot = j->slot_name,
    };
    int rc = j->binary ? inferbody_write_binary(&a, &j->resp, &j->resp_len, &j->nonfinite_rows)
                       : inferbody_write_json(&a, &j->resp, &j->resp_len, &j->nonfinite_rows);
    if (rc != 0) {
        job_fail(j, LORAD_E_INTERNAL, "out of memory formatting the answer");
        return;
    }
    snprintf(j->adapter, sizeof(j->adapter), "%s", snap ? snap->name : "");
    j->version = a.version;
    j->resp_type = j->binary ? "application/octet-stream" : "application/json";
}

/* Pass 3 and 4 for the jobs served by `snap`: one forward over their rows. */
static void run_group(const struct model *m, const struct snapshot *snap,
                      const struct batch_params *p, struct batch_job *const *jobs, size_t n,
                      struct batch_scratch *sc)
{
    size_t width = (size_t)m->in_features, outw = (size_t)m->out_features;
    size_t total = 0, off = 0, i;
    int chunk;

    for (i = 0; i < n; i++)
        if (in_group(jobs[i], snap))
            total += (size_t)jobs[i]->req.rows;
    if (total == 0)
        return;
    if (!sc || scratch_rows(sc, total) != 0 || scratch_forward(sc, snap) != 0) {
        for (i = 0; i < n; i++)
            if (in_group(jobs[i], snap))
                job_fail(jobs[i], LORAD_E_INTERNAL, "out of memory in the worker");
        return;
    }
    for (i = 0; i < n; i++) {
        if (!in_group(jobs[i], snap))
            continue;
        memcpy(sc->x + off * width, jobs[i]->req.x, (size_t)jobs[i]->req.rows * width * 4);
        off += (size_t)jobs[i]->req.rows;
    }
    chunk = forward_scratch_max_rows(sc->fw);
    for (off = 0; off < total; off += (size_t)chunk) {
        int rows = (int)(total - off < (size_t)chunk ? total - off : (size_t)chunk);
        forward_run(m, snap, sc->x + off * width, rows, sc->y + off * outw, sc->fw);
        if (p->on_forward)
            p->on_forward(p->arg, rows);
    }
    for (i = off = 0; i < n; i++) {
        if (!in_group(jobs[i], snap))
            continue;
        job_answer(jobs[i], m, snap, sc->y + off * outw);
        off += (size_t)jobs[i]->req.rows;
    }
}

void batch_run(const struct model *m, struct serving *s, const struct batch_params *p,
               struct batch_job *const *jobs, size_t n, struct batch_scratch *sc)
{
    const struct serving_view *v;
    size_t i;
    int groups = 0;

    for (i = 0; i < n; i++) {
        struct batch_job *j = jobs[i];
        memset(&j->err, 0, sizeof(j->err));
        j->resp = NULL;
        j->resp_len = 0;
        j->resp_type = NULL;
        j->adapter[0] = '\0';
        j->version = 0;
        j->variant = SERVING_STABLE;
        j->slot_name[0] = '\0';
        j->snap = NULL;
        j->nonfinite_rows = 0;
        job_parse(j, m, p);
    }
    v = serving_read(s); /* once per batch */
    for (i = 0; i < n; i++)
        if (jobs[i]->code == 0)
            job_route(jobs[i], v);
    /* one group per distinct snapshot, in the order of their first job */
    for (i = 0; i < n; i++) {
        bool first = jobs[i]->code == 0;
        for (size_t k = 0; first && k < i; k++)
            first = !(jobs[k]->snap == jobs[i]->snap && jobs[k]->slot_name[0]);
        if (first) {
            run_group(m, jobs[i]->snap, p, jobs, n, sc);
            groups++;
        }
    }
    if (p->on_snapshots && groups > 0)
        p->on_snapshots(p->arg, groups);
    for (i = 0; i < n; i++)
        inferbody_req_free(&jobs[i]->req); /* the rows are no longer needed */
}
