/* lorad — client/ctlout.c: loradctl's human-readable output (see ctlout.h).
 *
 * Every printer reads members with the small accessors below, which
 * tolerate absent or mistyped members, so output never depends on the
 * daemon's exact version. Tables are built in memory and printed with
 * every column as wide as its widest cell.
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ctlout.h"

#define CTLOUT_COLS 6
#define CTLOUT_NAMES 4096 /* the slot names of one adapter */
#define CTLOUT_LABEL "  %-9s"

/* ---- member access ---- */

static const cJSON *ctlout_get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static const char *ctlout_str(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *v = ctlout_get(o, key);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

static bool ctlout_num(const cJSON *o, const char *key, double *v)
{
    const cJSON *n = ctlout_get(o, key);
    if (!cJSON_IsNumber(n))
        return false;
    *v = n->valuedouble;
    return true;
}

/* A number as lorad printed it (integers without a fraction), or "?". */
static const char *ctlout_numtext(const cJSON *o, const char *key, char *buf, size_t n)
{
    double v;
    if (!ctlout_num(o, key, &v))
        snprintf(buf, n, "?");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, n, "%.0f", v);
    else
        snprintf(buf, n, "%.9g", v);
    return buf;
}

/* NAME@VERSION of a snapshot object; "(base)@0" for the base model. */
static const char *ctlout_snap(const cJSON *s, char *buf, size_t n)
{
    const cJSON *a = ctlout_get(s, "adapter");
    char v[32];
    if (!cJSON_IsObject(s))
        snprintf(buf, n, "none");
    else
        snprintf(buf, n, "%s@%s", cJSON_IsString(a) ? a->valuestring : "(base)",
                 ctlout_numtext(s, "version", v, sizeof(v)));
    return buf;
}

/* ---- tables ---- */

struct ctlout_table {
    size_t nrows, cap;
    char *(*cells)[CTLOUT_COLS]; /* strdup'd; NULL: empty cell */
};

/* Appends a row of up to CTLOUT_COLS cells, the list ended by NULL. */
static void ctlout_row(struct ctlout_table *t, const char *first, ...) __attribute__((sentinel));
static void ctlout_row(struct ctlout_table *t, const char *first, ...)
{
    va_list ap;
    const char *c = first;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        void *p = realloc(t->cells, cap * sizeof(*t->cells));
        if (!p)
            return; /* out of memory: the row is left out */
        t->cells = p;
        t->cap = cap;
    }
    memset(t->cells[t->nrows], 0, sizeof(*t->cells));
    va_start(ap, first);
    for (size_t i = 0; c; i++) {
        t->cells[t->nrows][i] = strdup(c);
        c = i + 1 < CTLOUT_COLS ? va_arg(ap, const char *) : NULL;
    }
    va_end(ap);
    t->nrows++;
}

static const char *ctlout_cell(const struct ctlout_table *t, size_t r, size_t i)
{
    return t->cells[r][i] ? t->cells[r][i] : "";
}

/* Prints the table, each column but the last padded to its widest cell;
 * frees it. */
static void ctlout_table_print(FILE *out, struct ctlout_table *t)
{
    int w[CTLOUT_COLS] = {0};
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < CTLOUT_COLS; i++)
            if ((int)strlen(ctlout_cell(t, r, i)) > w[i])
                w[i] = (int)strlen(ctlout_cell(t, r, i));
    for (size_t r = 0; r < t->nrows; r++) {
        size_t last = 0;
        for (size_t i = 0; i < CTLOUT_COLS; i++)
            if (t->cells[r][i])
                last = i;
        for (size_t i = 0; i < last; i++)
            fprintf(out, "%-*s  ", w[i], ctlout_cell(t, r, i));
        fprintf(out, "%s\n", ctlout_cell(t, r, last));
        for (size_t i = 0; i < CTLOUT_COLS; i++)
            free(t->cells[r][i]);
    }
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* ---- status ---- */

static void ctlout_uptime(double s, char *buf, size_t n)
{
    long long t = (long long)s;
    if (t >= 86400)
        snprintf(buf, n, "%lldd%02lldh%02lldm", t / 86400, t % 86400 / 3600, t % 3600 / 60);
    else if (t >= 3600)
        snprintf(buf, n, "%lldh%02lldm%02llds", t / 3600, t % 3600 / 60, t % 60);
    else if (t >= 60)
        snprintf(buf, n, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, n, "%llds", t);
}

static const char *ctlout_restored(const cJSON *st)
{
    const cJSON *r = ctlout_get(st, "restored");
    if (cJSON_IsTrue(r))
        return "yes";
    if (cJSON_IsFalse(r))
        return "NO (the state file did not match the files; see the log)";
    return "none (no state file was there)";
}

static void ctlout_daemon(FILE *out, const cJSON *st)
{
    const cJSON *m = ctlout_get(st, "model"), *sf = ctlout_get(st, "state_file");
    const cJSON *mem = ctlout_get(st, "memory");
    char a[32], b[32], c[32], d[32];
    double up = 0;
    ctlout_uptime(ctlout_num(st, "uptime_s", &up) ? up : 0, a, sizeof(a));
    fprintf(out, "%-10s %s, up %s, generation %s, restored: %s\n", "state",
            ctlout_str(st, "state", "?"), a, ctlout_numtext(st, "generation", b, sizeof(b)),
            ctlout_restored(st));
    fprintf(out, "%-10s %s layers, %s -> %s features, %s parameters\n", "model",
            ctlout_numtext(m, "layers", a, sizeof(a)), ctlout_numtext(m, "in_features", b, 32),
            ctlout_numtext(m, "out_features", c, 32), ctlout_numtext(m, "parameters", d, 32));
    fprintf(out, "%-10s lorad %s, workers %s, BLAS kernel %s\n", "daemon",
            ctlout_str(st, "lorad_version", "?"), ctlout_numtext(st, "workers", a, sizeof(a)),
            ctlout_str(st, "blas_core", "?"));
    if (cJSON_IsObject(sf))
        fprintf(out, "%-10s %s: %s%s\n", "state file", ctlout_str(sf, "path", "(none)"),
                cJSON_IsTrue(ctlout_get(sf, "ok")) ? "ok" : "NOT WRITABLE: ",
                cJSON_IsTrue(ctlout_get(sf, "ok")) ? "" : ctlout_str(sf, "error", "?"));
    if (cJSON_IsObject(mem)) {
        const cJSON *lim = ctlout_get(mem, "limit_bytes");
        fprintf(out, "%-10s %s bytes resident, limit %s\n", "memory",
                ctlout_numtext(mem, "resident_bytes", a, sizeof(a)),
                cJSON_IsNumber(lim) ? ctlout_numtext(mem, "limit_bytes", b, sizeof(b)) : "none");
    }
}

static void ctlout_history(FILE *out, const cJSON *h)
{
    const cJSON *e;
    char buf[200];
    bool first = true;
    fprintf(out, CTLOUT_LABEL, "history");
    cJSON_ArrayForEach(e, h)
    {
        fprintf(out, "%s%s", first ? "" : ", ", ctlout_snap(e, buf, sizeof(buf)));
        first = false;
    }
    fprintf(out, "%s\n", first ? "empty" : " (newest first)");
}

/* "1.2 ms", or "-" before the first request. */
static const char *ctlout_ms(const cJSON *r, const char *key, char *buf, size_t n)
{
    char v[32];
    if (!cJSON_IsNumber(ctlout_get(r, key)))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%s ms", ctlout_numtext(r, key, v, sizeof(v)));
    return buf;
}

static void ctlout_requests(FILE *out, const char *label, const char *variant, const cJSON *r)
{
    char a[32], b[32], c[32], d[48], e[48];
    fprintf(out, CTLOUT_LABEL "%s %s requests (%s errors, %s non-finite rows), p50 %s, p99 %s\n",
            label, variant, ctlout_numtext(r, "requests", a, sizeof(a)),
            ctlout_numtext(r, "errors", b, sizeof(b)),
            ctlout_numtext(r, "nonfinite_rows", c, sizeof(c)), ctlout_ms(r, "p50_ms", d, sizeof(d)),
            ctlout_ms(r, "p99_ms", e, sizeof(e)));
}

/* One slot's serving state (an object with stable, canary, history,
 * requests, as /status has them at the top level and per slot). */
static void ctlout_slot(FILE *out, const char *name, const cJSON *s)
{
    const cJSON *st = ctlout_get(s, "stable"), *ca = ctlout_get(s, "canary");
    const cJSON *rq = ctlout_get(s, "requests");
    char snap[200], a[32], b[32];
    fprintf(out, "slot %s\n", name);
    fprintf(out, CTLOUT_LABEL "%s (rank %s), loaded %s\n", "stable", ctlout_snap(st, snap, 200),
            ctlout_numtext(st, "rank", a, sizeof(a)), ctlout_str(st, "loaded_at", "?"));
    if (cJSON_IsObject(ca))
        fprintf(out, CTLOUT_LABEL "%s (rank %s) at %s%%, loaded %s\n", "canary",
                ctlout_snap(ca, snap, 200), ctlout_numtext(ca, "rank", a, sizeof(a)),
                ctlout_numtext(ca, "percent", b, sizeof(b)), ctlout_str(ca, "loaded_at", "?"));
    else
        fprintf(out, CTLOUT_LABEL "none\n", "canary");
    ctlout_history(out, ctlout_get(s, "history"));
    if (cJSON_IsObject(rq)) {
        ctlout_requests(out, "traffic", "stable", ctlout_get(rq, "stable"));
        if (cJSON_IsObject(ca))
            ctlout_requests(out, "", "canary", ctlout_get(rq, "canary"));
    }
}

static void ctlout_swaps(FILE *out, const cJSON *st)
{
    const cJSON *sw = ctlout_get(st, "swaps"), *last = ctlout_get(sw, "last");
    char a[32], b[32], snap[200];
    fprintf(out, "%-10s %s ok, %s failed", "swaps", ctlout_numtext(sw, "ok", a, sizeof(a)),
            ctlout_numtext(sw, "failed", b, sizeof(b)));
    if (cJSON_IsFalse(ctlout_get(last, "ok")))
        fprintf(out, "; last: %s FAILED (%s) at %s", ctlout_str(last, "adapter", "?"),
                ctlout_str(last, "code", "?"), ctlout_str(last, "at", "?"));
    else if (cJSON_IsObject(last))
        fprintf(out, "; last: %s at %s", ctlout_snap(last, snap, sizeof(snap)),
                ctlout_str(last, "at", "?"));
    fprintf(out, "\n");
}

void ctlout_status(FILE *out, const cJSON *st)
{
    const cJSON *slots = ctlout_get(st, "slots"), *s;
    ctlout_daemon(out, st);
    ctlout_swaps(out, st);
    if (!cJSON_IsObject(slots)) {
        ctlout_slot(out, "default", st);
        return;
    }
    cJSON_ArrayForEach(s, slots)
    {
        ctlout_slot(out, s->string, s);
    }
}

/* ---- slots ---- */

static void ctlout_slot_row(struct ctlout_table *t, const char *name, const cJSON *s)
{
    const cJSON *st = ctlout_get(s, "stable"), *ca = ctlout_get(s, "canary");
    char snap[200], canary[200], rank[32], pct[40], hist[32];
    ctlout_snap(st, snap, sizeof(snap));
    ctlout_numtext(st, "rank", rank, sizeof(rank));
    if (cJSON_IsObject(ca)) {
        ctlout_snap(ca, canary, sizeof(canary));
        ctlout_numtext(ca, "percent", pct, sizeof(pct) - 1);
        strcat(pct, "%");
    } else {
        snprintf(canary, sizeof(canary), "-");
        snprintf(pct, sizeof(pct), "-");
    }
    snprintf(hist, sizeof(hist), "%d", cJSON_GetArraySize(ctlout_get(s, "history")));
    ctlout_row(t, name, snap, rank, canary, pct, hist, NULL);
}

void ctlout_slots(FILE *out, const cJSON *st)
{
    const cJSON *slots = ctlout_get(st, "slots"), *s;
    struct ctlout_table t = {0};
    ctlout_row(&t, "SLOT", "STABLE", "RANK", "CANARY", "PERCENT", "HISTORY", NULL);
    if (!cJSON_IsObject(slots))
        ctlout_slot_row(&t, "default", st);
    else
        cJSON_ArrayForEach(s, slots)
        {
            ctlout_slot_row(&t, s->string, s);
        }
    ctlout_table_print(out, &t);
}

/* ---- adapters ---- */

static void ctlout_names(const cJSON *arr, char *buf, size_t n)
{
    const cJSON *e;
    size_t used = 0;
    buf[0] = '\0';
    cJSON_ArrayForEach(e, arr)
    {
        if (cJSON_IsString(e) && used < n)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? "," : "", e->valuestring);
    }
    if (!buf[0])
        snprintf(buf, n, "-");
}

void ctlout_adapters(FILE *out, const cJSON *ad)
{
    const cJSON *list = ctlout_get(ad, "adapters"), *a;
    struct ctlout_table t = {0};
    ctlout_row(&t, "NAME", "R", "ALPHA", "SLOTS", "COMPATIBLE", NULL);
    cJSON_ArrayForEach(a, list)
    {
        const cJSON *e = ctlout_get(a, "error");
        char r[32], alpha[32], slots[CTLOUT_NAMES], why[1024];
        const char *rr = cJSON_IsNumber(ctlout_get(a, "r")) ? ctlout_numtext(a, "r", r, 32) : "-";
        const char *al = cJSON_IsNumber(ctlout_get(a, "lora_alpha"))
                             ? ctlout_numtext(a, "lora_alpha", alpha, 32)
                             : "-";
        ctlout_names(ctlout_get(a, "slots"), slots, sizeof(slots));
        if (cJSON_IsTrue(ctlout_get(a, "compatible")))
            snprintf(why, sizeof(why), "yes");
        else
            snprintf(why, sizeof(why), "no: %s: %s", ctlout_str(e, "code", "?"),
                     ctlout_str(e, "message", "?"));
        ctlout_row(&t, ctlout_str(a, "name", "?"), rr, al, slots, why, NULL);
    }
    ctlout_table_print(out, &t);
}

/* ---- changes ---- */

static const char *ctlout_answer_slot(const cJSON *ans, const char *slot)
{
    return ctlout_str(ans, "slot", slot ? slot : "default");
}

void ctlout_change(FILE *out, const char *cmd, const cJSON *ans, const char *slot)
{
    const char *sl = ctlout_answer_slot(ans, slot);
    const cJSON *prev = ctlout_get(ans, "previous");
    char now[200], was[200], gen[32], stage[32], commit[32], pct[32];
    bool canary = strcmp(ctlout_str(ans, "variant", ""), "canary") == 0;

    ctlout_snap(ans, now, sizeof(now));
    ctlout_snap(prev, was, sizeof(was));
    ctlout_numtext(ans, "generation", gen, sizeof(gen));
    ctlout_numtext(ans, "commit_us", commit, sizeof(commit));
    ctlout_numtext(ans, "percent", pct, sizeof(pct));
    if (strcmp(cmd, "unload") == 0) {
        const cJSON *st = ctlout_get(ans, "stable");
        fprintf(out, "unloaded slot %s (it served %s)\n", sl,
                ctlout_snap(cJSON_IsObject(st) ? st : ans, now, sizeof(now)));
    } else if (strcmp(cmd, "swap") == 0) {
        ctlout_numtext(ans, "stage_ms", stage, sizeof(stage));
        if (canary)
            fprintf(out, "%s is the canary at %s%% beside %s in slot %s", now, pct, was, sl);
        else
            fprintf(out, "%s is stable in slot %s (was %s)", now, sl, was);
        fprintf(out, "; generation %s, staged in %s ms, committed in %s us\n", gen, stage, commit);
    } else if (strcmp(cmd, "canary") == 0) {
        fprintf(out, "canary %s now at %s%% in slot %s; generation %s\n", now, pct, sl, gen);
    } else {
        fprintf(out, "%s: %s is stable in slot %s (was %s); generation %s, committed in %s us\n",
                strcmp(cmd, "promote") == 0 ? "promoted" : "rolled back", now, sl, was, gen,
                commit);
    }
}

/* ---- infer ---- */

static void ctlout_row_values(FILE *out, const cJSON *row)
{
    const cJSON *v;
    bool first = true;
    cJSON_ArrayForEach(v, row)
    {
        if (cJSON_IsNumber(v))
            fprintf(out, first ? "%.9g" : " %.9g", v->valuedouble);
        else
            fprintf(out, first ? "null" : " null");
        first = false;
    }
    fprintf(out, "\n");
}

void ctlout_infer(FILE *out, const cJSON *ans)
{
    const cJSON *rows = ctlout_get(ans, "outputs"), *one = ctlout_get(ans, "output"), *r;
    char snap[200];
    fprintf(out, "# slot %s, %s, variant %s, %d row(s)\n", ctlout_str(ans, "slot", "default"),
            ctlout_snap(ans, snap, sizeof(snap)), ctlout_str(ans, "variant", "?"),
            cJSON_IsArray(rows) ? cJSON_GetArraySize(rows) : 1);
    if (!cJSON_IsArray(rows)) {
        ctlout_row_values(out, one);
        return;
    }
    cJSON_ArrayForEach(r, rows)
    {
        ctlout_row_values(out, r);
    }
}
