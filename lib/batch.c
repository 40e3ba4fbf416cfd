/* lorad — batch.c: one batch of /infer jobs (see batch.h).
 *
 * Design: passes over the jobs, each job visited once per pass: parse
 * (job->req; shared by the team's members, job i to member i mod n),
 * route (job->slot_name, job->variant, job->snap: the job's slot, then
 * the variant within it), then ONE forward over every routed row of the
 * batch, of every slot and variant: the jobs' rows are copied into one
 * buffer grouped by the snapshot that serves them (each distinct snapshot
 * one group, one contiguous run, which the forward computes in place, no
 * gather; the base model's rows of every slot are one group), each row
 * tagged with its group,
 * and each chunk of forward_scratch_max_rows()
 * rows runs as one forward_run_groups (or forward_run_split on every team
 * member) with one group per variant present in it; then every job's
 * answer is written from its slice of the outputs (shared like parsing). A
 * job leaves the batch as soon as it fails (job->code < 0); the passes
 * after skip it. Every job that reaches the forward is served by the
 * snapshot of the view read once at the start, so one batch never mixes
 * two views, and each row by its own job's snapshot, so no answer mixes
 * two snapshots.
 *
 * Invariants: a job's code is 0 until it fails or is answered, and it is
 * answered (resp set) only in the last pass; the parsed rows are freed
 * before batch_run returns.
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
    int lanes;     /* team members the forward scratch serves */
    struct forward_scratch *fw;
    float *x, *y; /* the batch's rows [cap_rows][in] and outputs [cap_rows][out] */
    int *grp;     /* each row's group [cap_rows] */
    size_t cap_rows;
    int *idx; /* a chunk's rows by group [max_rows] */
    /* the batch's groups: each job's, each group's snapshot, a chunk's
     * forward groups [cap_jobs] */
    int *gid;
    const struct snapshot **gsnap;
    struct forward_group *fg;
    size_t cap_jobs;
};

struct batch_scratch *batch_scratch_new_lanes(const struct model *m, int max_rows, int base_rank,
                                              int lanes)
{
    struct batch_scratch *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    sc->m = m;
    sc->max_rows = max_rows;
    sc->base_rank = base_rank;
    sc->lanes = lanes > 0 ? lanes : 1;
    sc->idx = malloc((size_t)(max_rows > 0 ? max_rows : 1) * sizeof(int));
    if (!sc->idx) {
        free(sc);
        return NULL;
    }
    return sc;
}

struct batch_scratch *batch_scratch_new(const struct model *m, int max_rows, int base_rank)
{
    return batch_scratch_new_lanes(m, max_rows, base_rank, 1);
}

void batch_scratch_free(struct batch_scratch **scp)
{
    struct batch_scratch *sc = *scp;
    if (!sc)
        return;
    forward_scratch_free(&sc->fw);
    free(sc->x);
    free(sc->y);
    free(sc->grp);
    free(sc->idx);
    free(sc->gid);
    free(sc->gsnap);
    free(sc->fg);
    free(sc);
    *scp = NULL;
}

/* Room for `rows` rows of inputs and outputs. */
static int scratch_rows(struct batch_scratch *sc, size_t rows)
{
    float *nx, *ny;
    int *nv;
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
    nv = realloc(sc->grp, rows * sizeof(*nv));
    if (!nv)
        return LORAD_E_INTERNAL;
    sc->grp = nv;
    sc->cap_rows = rows;
    return 0;
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
    struct forward_group *fg = realloc(sc->fg, n * sizeof(*fg));
    if (!fg)
        return LORAD_E_INTERNAL;
    sc->fg = fg;
    sc->cap_jobs = n;
    return 0;
}

/* A forward scratch that takes LoRA ranks up to `rank`. */
static int scratch_forward(struct batch_scratch *sc, int rank)
{
    if (sc->fw && rank <= forward_scratch_max_rank(sc->fw))
        return 0;
    if (sc->base_rank > rank)
        rank = sc->base_rank;
    forward_scratch_free(&sc->fw);
    sc->fw = forward_scratch_new_lanes(sc->m, sc->max_rows, rank, sc->lanes);
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

/* What the passes share, and what team members are handed. */
struct batch_ctx {
    const struct model *m;
    const struct batch_params *p;
    struct batch_job *const *jobs;
    size_t n;
    struct batch_scratch *sc;
    int ngroups; /* distinct snapshots: sc->gsnap[0..ngroups) */
    int members; /* threads sharing the pass being run */
    /* the chunk being run */
    const struct forward_group *g;
    int ng, rows;
    const float *x;
    float *y;
};

static int team_size(const struct batch_ctx *c)
{
    const struct batch_team *t = c->p->team;
    if (!t || t->n <= 1 || !c->sc || t->n > c->sc->lanes)
        return 1;
    return t->n;
}

/* fn(c, me) on every member (this thread alone without a team, or when
 * there is less than one job per member to share: waking the team would
 * cost more than the pass). */
static void on_team(struct batch_ctx *c, void (*fn)(void *, int), size_t units)
{
    c->members = team_size(c);
    if (units < (size_t)c->members)
        c->members = 1;
    if (c->members > 1)
        c->p->team->run(c->p->team->team, fn, c);
    else
        fn(c, 0);
}

static void parse_part(void *arg, int me)
{
    struct batch_ctx *c = arg;
    for (size_t i = (size_t)me; i < c->n; i += (size_t)c->members)
        job_parse(c->jobs[i], c->m, c->p);
}

static void answer_part(void *arg, int me)
{
    struct batch_ctx *c = arg;
    const size_t outw = (size_t)c->m->out_features;
    for (size_t i = (size_t)me; i < c->n; i += (size_t)c->members) {
        struct batch_job *j = c->jobs[i];
        if (j->code == 0)
            job_answer(j, c->m, j->snap, c->sc->y + j->row_off * outw);
    }
}

static void forward_part(void *arg, int me)
{
    struct batch_ctx *c = arg;
    const struct batch_team *t = c->p->team;
    forward_run_split(c->m, c->g, c->ng, c->x, c->rows, c->y, c->sc->fw, me, c->members,
                      t ? t->barrier : NULL, t ? t->team : NULL);
}

/* Rows [off, off + rows) as one forward, a group per snapshot in them. */
static void run_chunk(struct batch_ctx *c, size_t off, int rows)
{
    struct batch_scratch *sc = c->sc;
    struct forward_group *g = sc->fg;
    int ng = 0, used = 0;

    for (int grp = 0; grp < c->ngroups; grp++) {
        int k = 0;
        for (int r = 0; r < rows; r++)
            if (sc->grp[off + (size_t)r] == grp)
                sc->idx[used + k++] = r;
        if (k > 0)
            g[ng++] = (struct forward_group){sc->gsnap[grp], sc->idx + used, k};
        used += k;
    }
    c->g = g;
    c->ng = ng;
    c->rows = rows;
    c->x = sc->x + off * (size_t)c->m->in_features;
    c->y = sc->y + off * (size_t)c->m->out_features;
    on_team(c, forward_part, (size_t)team_size(c)); /* every member, even for one row */
    if (c->p->on_forward)
        c->p->on_forward(c->p->arg, rows);
}

/* Pass 3: every routed job's rows through one forward (in chunks). */
static void run_rows(struct batch_ctx *c)
{
    struct batch_scratch *sc = c->sc;
    const size_t width = (size_t)c->m->in_features;
    size_t total = 0, off, i;
    int rank = 0, chunk;

    if (sc && scratch_groups(sc, c->n) != 0)
        sc = NULL;
    c->ngroups = 0;
    for (i = 0; sc && i < c->n; i++) {
        struct batch_job *j = c->jobs[i];
        int k;
        if (j->code != 0)
            continue;
        for (k = 0; k < c->ngroups && sc->gsnap[k] != j->snap; k++)
            ;
        if (k == c->ngroups) {
            sc->gsnap[c->ngroups++] = j->snap;
            if (j->snap && j->snap->rank > rank)
                rank = j->snap->rank;
        }
        sc->gid[i] = k;
        total += (size_t)j->req.rows;
    }
    if (sc && total == 0)
        return;
    if (!sc || scratch_rows(sc, total) != 0 || scratch_forward(sc, rank) != 0) {
        c->ngroups = 0;
        for (i = 0; i < c->n; i++)
            if (c->jobs[i]->code == 0)
                job_fail(c->jobs[i], LORAD_E_INTERNAL, "out of memory in the worker");
        return;
    }
    off = 0;
    for (int grp = 0; grp < c->ngroups; grp++) /* by snapshot: each group one run */
        for (i = 0; i < c->n; i++) {
            struct batch_job *j = c->jobs[i];
            if (j->code != 0 || sc->gid[i] != grp)
                continue;
            j->row_off = off;
            memcpy(sc->x + off * width, j->req.x, (size_t)j->req.rows * width * sizeof(float));
            for (size_t r = 0; r < (size_t)j->req.rows; r++)
                sc->grp[off + r] = grp;
            off += (size_t)j->req.rows;
        }
    chunk = forward_scratch_max_rows(sc->fw);
    for (off = 0; off < total; off += (size_t)chunk)
        run_chunk(c, off, (int)(total - off < (size_t)chunk ? total - off : (size_t)chunk));
}

void batch_run(const struct model *m, struct serving *s, const struct batch_params *p,
               struct batch_job *const *jobs, size_t n, struct batch_scratch *sc)
{
    struct batch_ctx c = {.m = m, .p = p, .jobs = jobs, .n = n, .sc = sc};
    const struct serving_view *v;
    size_t i;

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
        j->row_off = 0;
    }
    on_team(&c, parse_part, n);
    v = serving_read(s); /* once per batch */
    for (i = 0; i < n; i++)
        if (jobs[i]->code == 0)
            job_route(jobs[i], v);
    run_rows(&c);
    if (p->on_snapshots && c.ngroups > 0)
        p->on_snapshots(p->arg, c.ngroups);
    on_team(&c, answer_part, n);
    for (i = 0; i < n; i++)
        inferbody_req_free(&jobs[i]->req); /* the rows are no longer needed */
}
