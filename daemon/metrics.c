/* lorad — daemon/metrics.c: request evidence per variant (SPEC 6 /status
 * "requests") and the Prometheus counters and histograms of /metrics.
 *
 * Design: everything is updated on the loop thread (answers and control
 * events are recorded there), except the batch-size histogram, which
 * workers update with relaxed atomics. The per-variant evidence keeps a
 * fixed log-spaced latency histogram (20 buckets per decade from 1 us), so
 * p50/p99 cost no allocation and no sorting; a quantile is interpolated
 * linearly inside its bucket. The Prometheus side is cumulative for the
 * life of the process; the evidence is reset when a canary begins. The
 * gauges are the caller's (struct metrics_gauges): this file reads no
 * other module's state.
 */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define EV_PER_DECADE 20
#define EV_BUCKETS 200 /* 1 us .. 1e4 s */
#define EV_MIN_NS 1000.0
#define REQ_CODES_MAX 64
#define SLOTS_MAX 65536 /* a bound beside max_slots: unloads forget theirs */

struct evidence {
    uint64_t requests;
    uint64_t errors; /* status >= 500 */
    uint64_t nonfinite_rows;
    uint64_t hist[EV_BUCKETS + 1]; /* last: overflow */
};

/* A Prometheus histogram (loop thread). */
struct phist {
    const double *bounds;
    size_t n;
    uint64_t counts[24]; /* n + 1 <= 24 */
    double sum;
    uint64_t count;
};

struct req_count {
    enum metrics_variant variant;
    int code;
    uint64_t n;
};

static const double dur_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
static const double stage_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25,  0.5,    1,     2.5,  5,     10};
static const double commit_bounds[] = {1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5,
                                       1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2};
#define NBATCH (sizeof(batch_bounds) / sizeof(batch_bounds[0]))

/* One slot's series and evidence (loop thread). */
struct slot_metrics {
    char name[SERVING_SLOT_NAME_MAX + 1];
    struct evidence ev[2];
    struct req_count req[REQ_CODES_MAX];
    size_t nreq;
    struct phist dur[2]; /* per variant */
};

struct metrics {
    struct slot_metrics **slots; /* sorted by name; at most SLOTS_MAX */
    size_t nslots, cap;
    struct req_count req[REQ_CODES_MAX];
    size_t nreq;
    struct phist dur;
    _Atomic uint64_t batch_counts[NBATCH + 1];
    _Atomic uint64_t batch_sum;
    _Atomic uint64_t batch_count;
    _Atomic uint64_t snap_sum;   /* distinct snapshots summed over batches */
    _Atomic uint64_t snap_count; /* batches */
    uint64_t swaps_ok, swaps_failed, rollbacks;
    uint64_t state_write_failures;
    struct phist stage, commit;
};

static void phist_init(struct phist *h, const double *b, size_t n)
{
    memset(h, 0, sizeof(*h));
    h->bounds = b;
    h->n = n;
}

static void phist_observe(struct phist *h, double v)
{
    size_t i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    phist_init(&m->dur, dur_bounds, sizeof(dur_bounds) / sizeof(dur_bounds[0]));
    phist_init(&m->stage, stage_bounds, sizeof(stage_bounds) / sizeof(stage_bounds[0]));
    phist_init(&m->commit, commit_bounds, sizeof(commit_bounds) / sizeof(commit_bounds[0]));
    return m;
}

void metrics_free(struct metrics **mp)
{
    struct metrics *m = *mp;
    if (!m)
        return;
    for (size_t i = 0; i < m->nslots; i++)
        free(m->slots[i]);
    free(m->slots);
    free(m);
    *mp = NULL;
}

/* ---- slots ---- */

/* Index of `name` or -(insertion point) - 1. */
static long slot_index(const struct metrics *m, const char *name)
{
    size_t lo = 0, hi = m->nslots;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->slots[mid]->name, name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long)lo - 1;
}

static const struct slot_metrics *slot_get(const struct metrics *m, const char *name)
{
    long i = slot_index(m, name);
    return i >= 0 ? m->slots[i] : NULL;
}

/* The record of slot `name`, created on first use (NULL: out of memory
 * or past SLOTS_MAX). */
static struct slot_metrics *slot_make(struct metrics *m, const char *name)
{
    long i = slot_index(m, name);
    struct slot_metrics *sm;
    size_t at;
    if (i >= 0)
        return m->slots[i];
    if (m->nslots >= SLOTS_MAX)
        return NULL;
    if (m->nslots == m->cap) {
        size_t ncap = m->cap ? 2 * m->cap : 16;
        struct slot_metrics **n = realloc(m->slots, ncap * sizeof(*n));
        if (!n)
            return NULL;
        m->slots = n;
        m->cap = ncap;
    }
    if (!(sm = calloc(1, sizeof(*sm))))
        return NULL;
    snprintf(sm->name, sizeof(sm->name), "%s", name);
    phist_init(&sm->dur[0], dur_bounds, sizeof(dur_bounds) / sizeof(dur_bounds[0]));
    phist_init(&sm->dur[1], dur_bounds, sizeof(dur_bounds) / sizeof(dur_bounds[0]));
    at = (size_t)(-i - 1);
    memmove(&m->slots[at + 1], &m->slots[at], (m->nslots - at) * sizeof(m->slots[0]));
    m->slots[at] = sm;
    m->nslots++;
    return sm;
}

void metrics_forget_slot(struct metrics *m, const char *name)
{
    long i = slot_index(m, name);
    if (i < 0)
        return;
    free(m->slots[i]);
    m->nslots--;
    memmove(&m->slots[i], &m->slots[i + 1], (m->nslots - (size_t)i) * sizeof(m->slots[0]));
}

/* ---- recording ---- */

static size_t ev_bucket(uint64_t ns)
{
    double d;
    if ((double)ns <= EV_MIN_NS)
        return 0;
    d = ceil(log10((double)ns / EV_MIN_NS) * EV_PER_DECADE);
    if (d < 0)
        return 0;
    if (d >= EV_BUCKETS)
        return EV_BUCKETS;
    return (size_t)d;
}

/* Upper bound (ns) of evidence bucket i. */
static double ev_upper(size_t i)
{
    return EV_MIN_NS * pow(10.0, (double)i / EV_PER_DECADE);
}

static void count_code(struct req_count *req, size_t *nreq, enum metrics_variant variant, int code)
{
    size_t i;
    for (i = 0; i < *nreq; i++) {
        if (req[i].variant == variant && req[i].code == code) {
            req[i].n++;
            return;
        }
    }
    if (*nreq < REQ_CODES_MAX) {
        req[*nreq].variant = variant;
        req[*nreq].code = code;
        req[*nreq].n = 1;
        (*nreq)++;
    }
}

void metrics_record_infer(struct metrics *m, const char *slot, enum metrics_variant v, int status,
                          uint64_t latency_ns, int nonfinite_rows)
{
    struct slot_metrics *sm = NULL;
    count_code(m->req, &m->nreq, v, status);
    phist_observe(&m->dur, (double)latency_ns / 1e9);
    if (v != METRICS_NONE && slot && slot[0] && (sm = slot_make(m, slot))) {
        struct evidence *e = &sm->ev[v];
        count_code(sm->req, &sm->nreq, v, status);
        phist_observe(&sm->dur[v], (double)latency_ns / 1e9);
        e->requests++;
        if (status >= 500)
            e->errors++;
        if (nonfinite_rows > 0)
            e->nonfinite_rows += (uint64_t)nonfinite_rows;
        e->hist[ev_bucket(latency_ns)]++;
    }
}

void metrics_record_batch(struct metrics *m, int rows)
{
    size_t i = 0;
    if (rows <= 0)
        return;
    while (i < NBATCH && (double)rows > batch_bounds[i])
        i++;
    atomic_fetch_add_explicit(&m->batch_counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->batch_sum, (uint64_t)rows, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->batch_count, 1, memory_order_relaxed);
}

void metrics_record_batch_snapshots(struct metrics *m, int snapshots)
{
    atomic_fetch_add_explicit(&m->snap_sum, (uint64_t)snapshots, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->snap_count, 1, memory_order_relaxed);
}

void metrics_record_swap(struct metrics *m, bool ok, double stage_ms, double commit_us)
{
    if (!ok) {
        m->swaps_failed++;
        return;
    }
    m->swaps_ok++;
    if (stage_ms >= 0)
        phist_observe(&m->stage, stage_ms / 1e3);
    if (commit_us >= 0)
        phist_observe(&m->commit, commit_us / 1e6);
}

void metrics_record_rollback(struct metrics *m, double commit_us)
{
    m->rollbacks++;
    if (commit_us >= 0)
        phist_observe(&m->commit, commit_us / 1e6);
}

void metrics_record_state_write_failure(struct metrics *m)
{
    m->state_write_failures++;
}

void metrics_reset_evidence(struct metrics *m, const char *slot)
{
    struct slot_metrics *sm = slot_make(m, slot ? slot : "default");
    if (sm)
        memset(sm->ev, 0, sizeof(sm->ev));
}

/* ---- evidence ---- */

/* Quantile q of the evidence histogram in milliseconds; NAN when empty. */
static double ev_quantile_ms(const struct evidence *e, double q)
{
    uint64_t total = 0, cum = 0;
    double rank;
    size_t i;
    for (i = 0; i <= EV_BUCKETS; i++)
        total += e->hist[i];
    if (total == 0)
        return NAN;
    rank = q * (double)total;
    for (i = 0; i <= EV_BUCKETS; i++) {
        if (e->hist[i] == 0)
            continue;
        if ((double)(cum + e->hist[i]) >= rank) {
            double lo = i == 0 ? 0.0 : ev_upper(i - 1);
            double hi = i == EV_BUCKETS ? ev_upper(EV_BUCKETS - 1) : ev_upper(i);
            double frac = (rank - (double)cum) / (double)e->hist[i];
            if (frac < 0)
                frac = 0;
            if (frac > 1)
                frac = 1;
            return (lo + (hi - lo) * frac) / 1e6;
        }
        cum += e->hist[i];
    }
    return ev_upper(EV_BUCKETS - 1) / 1e6;
}

static cJSON *evidence_json(const struct evidence *e)
{
    cJSON *o = cJSON_CreateObject();
    double p50 = ev_quantile_ms(e, 0.50), p99 = ev_quantile_ms(e, 0.99);
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "requests", (double)e->requests);
    cJSON_AddNumberToObject(o, "errors", (double)e->errors);
    cJSON_AddNumberToObject(o, "nonfinite_rows", (double)e->nonfinite_rows);
    if (isnan(p50))
        cJSON_AddNullToObject(o, "p50_ms");
    else
        cJSON_AddNumberToObject(o, "p50_ms", round(p50 * 1000.0) / 1000.0);
    if (isnan(p99))
        cJSON_AddNullToObject(o, "p99_ms");
    else
        cJSON_AddNumberToObject(o, "p99_ms", round(p99 * 1000.0) / 1000.0);
    return o;
}

cJSON *metrics_evidence_json(const struct metrics *m, const char *slot)
{
    static const struct evidence none[2];
    const struct slot_metrics *sm = slot_get(m, slot ? slot : "default");
    const struct evidence *ev = sm ? sm->ev : none;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddItemToObject(o, "stable", evidence_json(&ev[METRICS_STABLE]));
    cJSON_AddItemToObject(o, "canary", evidence_json(&ev[METRICS_CANARY]));
    return o;
}

/* ---- Prometheus text format 0.0.4 ---- */

struct metrics_text {
    char *p;
    size_t len, cap;
    bool oom;
};

static void bprintf(struct metrics_text *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void bprintf(struct metrics_text *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* Label value escaping: backslash, double quote, newline. */
static void escape_label(char *out, size_t n, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < n; s++) {
        if (*s == '\\' || *s == '"') {
            out[o++] = '\\';
            out[o++] = *s;
        } else if (*s == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

static void put_head(struct metrics_text *b, const char *name, const char *type, const char *help)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A histogram's series; `labels` ("" or `k="v",...,`) precede le. */
static void render_phist_series(struct metrics_text *b, const char *name, const char *labels,
                                const struct phist *h)
{
    uint64_t cum = 0;
    size_t i, ln = strlen(labels);
    for (i = 0; i < h->n; i++) {
        cum += h->counts[i];
        bprintf(b, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, h->bounds[i],
                (unsigned long long)cum);
    }
    cum += h->counts[h->n];
    bprintf(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    /* _sum and _count take the labels without the trailing comma */
    if (ln)
        bprintf(b, "%s_sum{%.*s} %.9g\n%s_count{%.*s} %llu\n", name, (int)ln - 1, labels, h->sum,
                name, (int)ln - 1, labels, (unsigned long long)h->count);
    else
        bprintf(b, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name,
                (unsigned long long)h->count);
}

static void render_phist(struct metrics_text *b, const char *name, const char *help,
                         const struct phist *h)
{
    put_head(b, name, "histogram", help);
    render_phist_series(b, name, "", h);
}

/* The per-slot series (label slot; cardinality bounded by max_slots). */
static void render_slots(struct metrics_text *b, const struct metrics *m)
{
    static const char *const vnames[] = {"stable", "canary", "none"};
    char labels[SERVING_SLOT_NAME_MAX * 2 + 64];
    put_head(b, "lorad_slot_requests_total", "counter",
             "Answered /infer requests by slot, variant and HTTP status.");
    for (size_t k = 0; k < m->nslots; k++) {
        const struct slot_metrics *sm = m->slots[k];
        for (size_t i = 0; i < sm->nreq; i++)
            bprintf(b, "lorad_slot_requests_total{slot=\"%s\",variant=\"%s\",code=\"%d\"} %llu\n",
                    sm->name, vnames[sm->req[i].variant], sm->req[i].code,
                    (unsigned long long)sm->req[i].n);
    }
    put_head(b, "lorad_slot_request_duration_seconds", "histogram",
             "Latency of /infer answers by slot and variant, first header to answer.");
    for (size_t k = 0; k < m->nslots; k++)
        for (int v = 0; v < 2; v++) {
            if (m->slots[k]->dur[v].count == 0)
                continue;
            snprintf(labels, sizeof(labels), "slot=\"%s\",variant=\"%s\",", m->slots[k]->name,
                     vnames[v]);
            render_phist_series(b, "lorad_slot_request_duration_seconds", labels,
                                &m->slots[k]->dur[v]);
        }
}

static void render_batch(struct metrics_text *b, const struct metrics *m)
{
    uint64_t cum = 0;
    size_t i;
    put_head(b, "lorad_batch_rows", "histogram", "Rows per forward batch formed by the workers.");
    for (i = 0; i < NBATCH; i++) {
        cum += atomic_load_explicit(&m->batch_counts[i], memory_order_relaxed);
        bprintf(b, "lorad_batch_rows_bucket{le=\"%g\"} %llu\n", batch_bounds[i],
                (unsigned long long)cum);
    }
    cum += atomic_load_explicit(&m->batch_counts[NBATCH], memory_order_relaxed);
    bprintf(b, "lorad_batch_rows_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    bprintf(b, "lorad_batch_rows_sum %llu\nlorad_batch_rows_count %llu\n",
            (unsigned long long)atomic_load_explicit(&m->batch_sum, memory_order_relaxed),
            (unsigned long long)atomic_load_explicit(&m->batch_count, memory_order_relaxed));
    put_head(b, "lorad_batch_snapshots", "summary",
             "Distinct snapshots (slot and variant) served by each worker batch.");
    bprintf(b, "lorad_batch_snapshots_sum %llu\nlorad_batch_snapshots_count %llu\n",
            (unsigned long long)atomic_load_explicit(&m->snap_sum, memory_order_relaxed),
            (unsigned long long)atomic_load_explicit(&m->snap_count, memory_order_relaxed));
}

static void render_requests(struct metrics_text *b, const struct metrics *m)
{
    static const char *const vnames[] = {"stable", "canary", "none"};
    size_t i;
    put_head(b, "lorad_requests_total", "counter",
             "Answered /infer requests by variant and HTTP status.");
    for (i = 0; i < m->nreq; i++)
        bprintf(b, "lorad_requests_total{variant=\"%s\",code=\"%d\"} %llu\n",
                vnames[m->req[i].variant], m->req[i].code, (unsigned long long)m->req[i].n);
}

static void render_adapter(struct metrics_text *b, const char *slot, const char *variant,
                           const struct snapshot *s)
{
    char name[2 * SNAPSHOT_NAME_MAX + 8];
    escape_label(name, sizeof(name), s ? s->name : "");
    if (slot)
        bprintf(
            b,
            "lorad_slot_adapter_info{slot=\"%s\",variant=\"%s\",adapter=\"%s\",version=\"%llu\"} "
            "1\n",
            slot, variant, name, (unsigned long long)(s ? s->version : 0));
    else
        bprintf(b, "lorad_adapter_info{variant=\"%s\",adapter=\"%s\",version=\"%llu\"} 1\n",
                variant, name, (unsigned long long)(s ? s->version : 0));
}

static void render_slot_gauges(struct metrics_text *b, const struct serving_view *v)
{
    put_head(b, "lorad_slots", "gauge", "Slots served (default included).");
    bprintf(b, "lorad_slots %zu\n", v ? v->nslots : 1);
    put_head(
        b, "lorad_slot_adapter_info", "gauge",
        "Adapter serving each slot and variant (adapter=\"\" and version 0: base model only).");
    for (size_t i = 0; v && i < v->nslots; i++) {
        render_adapter(b, v->slots[i].name, "stable", v->slots[i].stable);
        if (v->slots[i].canary)
            render_adapter(b, v->slots[i].name, "canary", v->slots[i].canary);
    }
    put_head(b, "lorad_slot_canary_percent", "gauge",
             "Share of each slot's traffic on its canary (0 without one).");
    for (size_t i = 0; v && i < v->nslots; i++)
        bprintf(b, "lorad_slot_canary_percent{slot=\"%s\"} %.2f\n", v->slots[i].name,
                v->slots[i].canary ? (double)v->slots[i].canary_bp / 100.0 : 0.0);
}

static void render_gauges(struct metrics_text *b, const struct metrics_gauges *g)
{
    const struct serving_view *v = g->view;
    put_head(b, "lorad_generation", "gauge", "Serving state generation (every commit adds one).");
    bprintf(b, "lorad_generation %llu\n", (unsigned long long)(v ? v->generation : 0));
    put_head(b, "lorad_adapter_info", "gauge",
             "Adapter serving each variant (adapter=\"\" and version 0: base model only).");
    if (v) {
        render_adapter(b, NULL, "stable", v->stable);
        if (v->canary)
            render_adapter(b, NULL, "canary", v->canary);
    }
    put_head(b, "lorad_canary_percent", "gauge", "Share of traffic on the canary (0 without one).");
    bprintf(b, "lorad_canary_percent %.2f\n",
            (v && v->canary) ? (double)v->canary_bp / 100.0 : 0.0);
    render_slot_gauges(b, v);
    put_head(b, "lorad_resident_snapshot_bytes", "gauge",
             "Bytes of every stable, canary and history snapshot of every slot.");
    bprintf(b, "lorad_resident_snapshot_bytes %llu\n", (unsigned long long)g->resident_bytes);
    put_head(b, "lorad_adapter_memory_limit_bytes", "gauge",
             "max_adapter_memory_mb in bytes (0: no bound).");
    bprintf(b, "lorad_adapter_memory_limit_bytes %llu\n", (unsigned long long)g->limit_bytes);
    put_head(b, "lorad_queue_depth", "gauge", "/infer requests waiting for a worker.");
    bprintf(b, "lorad_queue_depth %zu\n", g->queue_depth);
    put_head(b, "lorad_inflight_requests", "gauge", "HTTP requests received and not yet answered.");
    bprintf(b, "lorad_inflight_requests %zu\n", g->inflight);
    put_head(b, "lorad_up", "gauge", "1 while the daemon runs.");
    bprintf(b, "lorad_up 1\n");
}

char *metrics_render(const struct metrics *m, const struct metrics_gauges *g, size_t *len)
{
    struct metrics_text b = {0};
    render_requests(&b, m);
    render_phist(&b, "lorad_request_duration_seconds",
                 "Latency of /infer answers, first header to answer.", &m->dur);
    render_slots(&b, m);
    render_batch(&b, m);
    put_head(&b, "lorad_swaps_total", "counter", "/swap requests by result (ok: committed).");
    bprintf(&b,
            "lorad_swaps_total{result=\"ok\"} %llu\nlorad_swaps_total{result=\"failed\"} %llu\n",
            (unsigned long long)m->swaps_ok, (unsigned long long)m->swaps_failed);
    render_phist(&b, "lorad_swap_stage_seconds", "Staging time of committed swaps.", &m->stage);
    render_phist(&b, "lorad_swap_commit_seconds",
                 "Commit time (pointer exchange and bookkeeping) of swaps and rollbacks.",
                 &m->commit);
    put_head(&b, "lorad_rollbacks_total", "counter", "Committed rollbacks.");
    bprintf(&b, "lorad_rollbacks_total %llu\n", (unsigned long long)m->rollbacks);
    put_head(&b, "lorad_state_write_failures_total", "counter",
             "State-file writes that failed (each refused change, 507 not_durable, included).");
    bprintf(&b, "lorad_state_write_failures_total %llu\n",
            (unsigned long long)m->state_write_failures);
    render_gauges(&b, g);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
