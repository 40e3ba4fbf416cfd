/* lorad — batch.c: one batch of /infer jobs (see batch.h).
 *
 * Design: four passes over the jobs, each job visited once per pass:
 * parse (job->req), route (job->slot_name, job->variant, job->snap), then
 * ONE forward over every routed row of the batch, of every slot and
 * variant: the rows are copied into one buffer ordered by snapshot (so
 * each distinct snapshot's rows are one span), each chunk of
 * forward_scratch_max_rows() rows runs as one forward_run_spans (one base
 * GEMM per layer over all its rows, each snapshot's LoRA on its own), and
 * each job's answer is written from its slice of the outputs. A job leaves the batch as soon as
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
    float *x, *y; /* the batch's rows [cap_rows][in] and outputs [cap_rows][out] */
    size_t cap_rows;
    /* the batch's snapshots: each job's group, each group's snapshot and
     * first row, a chunk's spans [cap_jobs] */
    int *gid;
    const struct snapshot **gsnap;
    size_t *gstart;
    struct forward_span *spans;
    size_t cap_jobs;
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
    free(sc->gid);
    free(sc->gsnap);
    free(sc->gstart);
    free(sc->spans);
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

/* A forward scratch that takes LoRA ranks up to `need`. */
static int scratch_forward_rank(struct batch_scratch *sc, int need)
{
    int rank = sc->base_rank > need ? sc->base_rank : need;
    if (sc->fw && need <= forward_scratch_max_rank(sc->fw))
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

/* Room for the groups of n jobs. */
static int scratch_groups(struct batch_scratch *sc, size_t n)
{
    if (n <= sc->cap_jobs)
        return 0;
    int *g = realloc(sc->gid, n * sizeof(*g));
    if (!g)
        return LORAD_E_INTERNAL;
    sc->gid = g;
    const struct snapshot **gs = realloc(sc->gsnap, n * sizeof(*gs));
    if (!gs)
        return LORAD_E_INTERNAL;
    sc->gsnap = gs;
    size_t *st = realloc(sc->gstart, (n + 1) * sizeof(*st));
    if (!st)
        return LORAD_E_INTERNAL;
    sc->gstart = st;
    struct forward_span *sp = realloc(sc->spans, n * sizeof(*sp));
    if (!sp)
        return LORAD_E_INTERNAL;
    sc->spans = sp;
    sc->cap_jobs = n;
    return 0;
}

/* Pass 3 and 4: every routed job's rows, of every slot and variant,
 * through one forward (in chunks): rows ordered by snapshot so each
 * snapshot's rows are one span; per layer one base GEMM over all of them
 * (forward_run_spans). Returns the number of distinct snapshots. */
static int run_rows(const struct model *m, const struct batch_params *p,
                    struct batch_job *const *jobs, size_t n, struct batch_scratch *sc)
{
    size_t width = (size_t)m->in_features, outw = (size_t)m->out_features;
    size_t total = 0, off, i;
    int ng = 0, rank = 0, chunk, k;

    if (!sc || scratch_groups(sc, n) != 0)
        goto oom;
    for (i = 0; i < n; i++) {
        struct batch_job *j = jobs[i];
        if (j->code != 0)
            continue;
        for (k = 0; k < ng && sc->gsnap[k] != j->snap; k++)
            ;
        if (k == ng) {
            sc->gsnap[ng++] = j->snap;
            if (j->snap && j->snap->rank > rank)
                rank = j->snap->rank;
        }
        sc->gid[i] = k;
        total += (size_t)j->req.rows;
    }
    if (total == 0)
        return 0;
    if (scratch_rows(sc, total) != 0 || scratch_forward_rank(sc, rank) != 0)
        goto oom;
    off = 0;
    for (k = 0; k < ng; k++) { /* by snapshot: each one span */
        sc->gstart[k] = off;
        for (i = 0; i < n; i++) {
            struct batch_job *j = jobs[i];
            if (j->code != 0 || sc->gid[i] != k)
                continue;
            j->row_off = off;
            memcpy(sc->x + off * width, j->req.x, (size_t)j->req.rows * width * sizeof(float));
            off += (size_t)j->req.rows;
        }
    }
    sc->gstart[ng] = off;
    chunk = forward_scratch_max_rows(sc->fw);
    for (off = 0; off < total; off += (size_t)chunk) {
        size_t end = total - off < (size_t)chunk ? total : off + (size_t)chunk;
        int nsp = 0;
        for (k = 0; k < ng; k++) {
            size_t a = sc->gstart[k] > off ? sc->gstart[k] : off;
            size_t b = sc->gstart[k + 1] < end ? sc->gstart[k + 1] : end;
            if (a < b)
                sc->spans[nsp++] =
                    (struct forward_span){sc->gsnap[k], (int)(a - off), (int)(b - a)};
        }
        forward_run_spans(m, sc->spans, nsp, sc->x + off * width, (int)(end - off),
                          sc->y + off * outw, sc->fw);
        if (p->on_forward)
            p->on_forward(p->arg, (int)(end - off));
    }
    for (i = 0; i < n; i++)
        if (jobs[i]->code == 0)
            job_answer(jobs[i], m, jobs[i]->snap, sc->y + jobs[i]->row_off * outw);
    return ng;
oom:
    for (i = 0; i < n; i++)
        if (jobs[i]->code == 0)
            job_fail(jobs[i], LORAD_E_INTERNAL, "out of memory in the worker");
    return 0;
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
    groups = run_rows(m, p, jobs, n, sc);
    if (p->on_snapshots && groups > 0)
        p->on_snapshots(p->arg, groups);
    for (i = 0; i < n; i++)
        inferbody_req_free(&jobs[i]->req); /* the rows are no longer needed */
}
