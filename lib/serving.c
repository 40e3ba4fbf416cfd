/* lorad — serving.c: the serving state (stable, canary, history) and its
 * RCU publication (see serving.h).
 *
 * Design: the writer (one thread) owns `struct serving`: the mutable
 * bookkeeping (stable, canary, history ring, counters) lives there and is
 * touched by the writer only. Readers see nothing of it but `s->view`, a
 * pointer to an immutable `struct serving_view` that every change replaces
 * by a freshly built one in serving_publish(), the one function that
 * stores to `s->view` (rcu_xchg_pointer). Each change is done in three
 * steps: (1) allocate everything that can fail (the new view and a
 * `struct retired` record big enough for whatever the change drops), so a
 * failure leaves serving untouched; (2) update the bookkeeping and publish;
 * (3) hand the old view and every snapshot that left the state to
 * call_rcu(), whose helper thread frees them after a grace period. The
 * writer never waits for readers. That helper thread is liburcu's and
 * inherits the name of whichever thread started it; serving_name_reclaimer()
 * names it from inside a callback it runs.
 *
 * Two-phase commits (durable before visible, SPEC 8): after
 * serving_hold(), the next change runs steps (1) and the bookkeeping half
 * of (2) but stops before publishing: `pend` keeps the new view, a retire
 * record sized for any outcome and a copy of the bookkeeping as it was.
 * Until it is published the accessors answer from that copy, so nothing
 * but serving_persisted() sees the change. serving_pending_publish()
 * flips; serving_pending_finish() retires what left; serving_pending_undo()
 * (after the flip) and serving_pending_abort() (before it) put the old
 * bookkeeping back. What a commit retires is computed at the end as the
 * snapshots of the state left that the state entered does not hold.
 *
 * liburcu's QSBR call_rcu() must be called from a registered, online
 * thread. The writer thread is registered lazily on its first retire and
 * is online only for the duration of each call_rcu() (it never reads the
 * view through RCU, so being offline the rest of the time never delays a
 * grace period). A thread that already is a registered reader keeps its
 * state. serving_free() unregisters a lazily registered writer.
 */
#include "serving.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <urcu-qsbr.h>

/* What one commit retires: freed together after a grace period. */
struct retired {
    struct rcu_head head;
    struct serving_view *view; /* the view that was replaced (may be NULL) */
    size_t n;
    struct snapshot *snaps[]; /* snapshots that left the state */
};

/* The writer's bookkeeping as it was before a held change. */
struct books {
    struct snapshot *stable, *canary;
    int canary_bp;
    struct snapshot **history; /* [history_max] */
    size_t nhistory;
    uint64_t generation, next_version;
};

enum pend_state { PEND_NONE = 0, PEND_HELD, PEND_PUBLISHED };

struct serving {
    struct serving_view *view; /* RCU-published; readers use serving_read() */
    bool hold;                 /* the next change stays pending */
    struct {
        enum pend_state state;
        struct serving_view *view; /* HELD: the new view; PUBLISHED: the old one */
        struct retired *r;         /* room for history_max + 3 snapshots */
        struct books old;          /* the bookkeeping before the change */
    } pend;
    /* Writer-only bookkeeping, mirrors the view with owning pointers. */
    struct snapshot *stable; /* NULL = base model */
    struct snapshot *canary; /* NULL = none */
    int canary_bp;
    struct snapshot **history; /* [history_max], newest first */
    size_t nhistory;
    size_t history_max;
    uint64_t generation;
    uint64_t next_version;
    _Atomic uint64_t route_ctr; /* unkeyed routing counter (readers) */
};

/* ThreadSanitizer cannot see liburcu's publication barriers (inline asm
 * xchg and a plain volatile load on x86), so under TSan the same publish
 * and read are spelled as C11 atomics of at least the same strength: a
 * sequentially consistent exchange and an acquire load. Everything else,
 * and every normal build, goes through liburcu. */
#if defined(__SANITIZE_THREAD__)
#define view_xchg(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
#define view_deref(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
/* The grace period itself, told to TSan: a reader's quiescent state (or
 * going offline, or unregistering) releases everything it read before; a
 * reclaim callback acquires all of that before it frees. This is exactly
 * the QSBR guarantee, so TSan checks the rest without false reports. */
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char tsan_grace_period;
#define grace_release() __tsan_release(&tsan_grace_period)
#define grace_acquire() __tsan_acquire(&tsan_grace_period)
#else
#define view_xchg(p, v) rcu_xchg_pointer((p), (v))
#define view_deref(p) rcu_dereference(p)
#define grace_release() ((void)0)
#define grace_acquire() ((void)0)
#endif

/* How this thread stands with liburcu. */
enum rcu_reg { REG_NONE = 0, REG_READER, REG_WRITER };
static _Thread_local enum rcu_reg tls_reg;

/* ---- retire and publish ---- */

static void retired_free_cb(struct rcu_head *head)
{
    struct retired *r = caa_container_of(head, struct retired, head);
    grace_acquire();
    for (size_t i = 0; i < r->n; i++)
        snapshot_free(&r->snaps[i]);
    free(r->view);
    free(r);
}

static struct retired *retired_new(size_t cap)
{
    struct retired *r = calloc(1, sizeof(*r) + cap * sizeof(r->snaps[0]));
    return r;
}

/* Adds a snapshot that leaves the state (NULL, the base model, is not
 * freed). The record was sized by the caller for the worst case. */
static void retired_add(struct retired *r, struct snapshot *snap)
{
    if (snap)
        r->snaps[r->n++] = snap;
}

/* call_rcu() from this thread, registered (lazily, as the writer) and
 * online for the duration of the call only. */
static void call_rcu_online(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
    bool was_online;
    if (tls_reg == REG_NONE) {
        rcu_register_thread(); /* QSBR: registers online */
        tls_reg = REG_WRITER;
        was_online = false;
    } else {
        was_online = rcu_read_ongoing();
        if (!was_online)
            rcu_thread_online();
    }
    grace_release(); /* the hand-off to call_rcu's thread, told to TSan */
    call_rcu(head, fn);
    if (!was_online)
        rcu_thread_offline();
}

/* Queues `r` for freeing after a grace period, without blocking. */
static void retire(struct retired *r)
{
    call_rcu_online(&r->head, retired_free_cb);
}

static struct serving_view *view_build(const struct serving *s)
{
    struct serving_view *v = malloc(sizeof(*v));
    if (!v)
        return NULL;
    v->stable = s->stable;
    v->canary = s->canary;
    v->canary_bp = s->canary ? s->canary_bp : 0;
    v->generation = s->generation;
    return v;
}

/* Step (1) of every change: allocates the new view and a retire record for
 * up to `cap` snapshots, so nothing can fail after the state changes.
 * LORAD_E_INTERNAL ("<what>: out of memory") with nothing allocated. */
static void books_save(const struct serving *s, struct books *b)
{
    b->stable = s->stable;
    b->canary = s->canary;
    b->canary_bp = s->canary_bp;
    memcpy(b->history, s->history, s->nhistory * sizeof(s->history[0]));
    b->nhistory = s->nhistory;
    b->generation = s->generation;
    b->next_version = s->next_version;
}

static void books_load(struct serving *s, const struct books *b)
{
    s->stable = b->stable;
    s->canary = b->canary;
    s->canary_bp = b->canary_bp;
    memcpy(s->history, b->history, b->nhistory * sizeof(s->history[0]));
    s->nhistory = b->nhistory;
    s->generation = b->generation;
    s->next_version = b->next_version;
}

static int commit_alloc(struct serving *s, size_t cap, const char *what, struct serving_view **v,
                        struct retired **r, struct lorad_error *err)
{
    if (s->pend.state != PEND_NONE)
        return lorad_error_set(err, LORAD_E_SWAP_IN_PROGRESS,
                               "%s: another change is not yet published", what);
    *v = malloc(sizeof(**v));
    /* a held change may end retiring either side: the larger bound */
    *r = retired_new(s->hold ? s->history_max + 3 : cap);
    if (*v && *r) {
        if (s->hold)
            books_save(s, &s->pend.old);
        return 0;
    }
    free(*v);
    free(*r);
    *v = NULL;
    *r = NULL;
    return lorad_error_set(err, LORAD_E_INTERNAL, "%s: out of memory", what);
}

/* The one publication point: makes `v` the view readers see and returns
 * the one it replaces (to be retired, never freed here). */
static struct serving_view *serving_publish(struct serving *s, struct serving_view *v)
{
    return view_xchg(&s->view, v);
}

/* Builds the view from the (already updated) bookkeeping, publishes it and
 * retires the old view together with what `r` holds. Cannot fail: the
 * caller allocated `v` and `r` before changing anything. */
static void commit_finish(struct serving *s, struct serving_view *v, struct retired *r)
{
    v->stable = s->stable;
    v->canary = s->canary;
    v->canary_bp = s->canary ? s->canary_bp : 0;
    v->generation = s->generation;
    if (s->hold) {
        s->hold = false;
        r->n = 0; /* computed when the change ends (leaving_add) */
        s->pend.view = v;
        s->pend.r = r;
        s->pend.state = PEND_HELD;
        return;
    }
    r->view = serving_publish(s, v);
    retire(r);
}

static double elapsed_us(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e6 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e3;
}

static void set_previous(struct serving_commit *out, const struct snapshot *prev)
{
    out->has_previous = true;
    if (prev) {
        snprintf(out->previous_adapter, sizeof(out->previous_adapter), "%s", prev->name);
        out->previous_version = prev->version;
    } else {
        out->previous_adapter[0] = '\0';
        out->previous_version = 0;
    }
}

static void fill_commit(const struct serving *s, struct serving_commit *out,
                        const struct snapshot *now, enum serving_variant variant,
                        const struct timespec *t0)
{
    out->now = now;
    out->variant = variant;
    out->generation = s->generation;
    out->commit_us = elapsed_us(t0);
}

/* Pushes the current stable to the front of history; the oldest entry is
 * moved to `r` when history is full. */
static void history_push(struct serving *s, struct snapshot *old_stable, struct retired *r)
{
    if (s->history_max == 0) {
        retired_add(r, old_stable);
        return;
    }
    if (s->nhistory == s->history_max)
        retired_add(r, s->history[--s->nhistory]);
    memmove(&s->history[1], &s->history[0], s->nhistory * sizeof(s->history[0]));
    s->history[0] = old_stable;
    s->nhistory++;
}

static bool bp_valid(int bp)
{
    return bp >= 0 && bp <= SERVING_BP_MAX;
}

/* ---- life cycle ---- */

struct serving *serving_new(int history_max)
{
    struct serving *s;
    if (history_max < 0)
        return NULL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->history_max = (size_t)history_max;
    s->history = calloc(s->history_max ? s->history_max : 1, sizeof(s->history[0]));
    s->pend.old.history = calloc(s->history_max ? s->history_max : 1, sizeof(s->history[0]));
    s->view = calloc(1, sizeof(*s->view));
    if (!s->history || !s->pend.old.history || !s->view)
        goto fail;
    s->next_version = 1;
    atomic_init(&s->route_ctr, 0);
    return s;
fail:
    free(s->history);
    free(s->pend.old.history);
    free(s->view);
    free(s);
    return NULL;
}

void serving_free(struct serving **sp)
{
    struct serving *s;
    if (!sp || !*sp)
        return;
    s = *sp;
    *sp = NULL;
    serving_pending_finish(s); /* a published change stays */
    serving_pending_abort(s);  /* a held one never was */
    /* Readers have unregistered (contract); the grace period and the
     * barrier make sure nothing retired or published is still in use. */
    synchronize_rcu();
    rcu_barrier();
    grace_acquire();
    snapshot_free(&s->stable);
    snapshot_free(&s->canary);
    for (size_t i = 0; i < s->nhistory; i++)
        snapshot_free(&s->history[i]);
    free(s->history);
    free(s->pend.old.history);
    free(s->view);
    free(s);
    if (tls_reg == REG_WRITER) {
        rcu_unregister_thread();
        tls_reg = REG_NONE;
    }
}

void serving_barrier(struct serving *s)
{
    (void)s;
    rcu_barrier();
}

/* ---- writer-side accessors ---- */

const struct serving_view *serving_current(const struct serving *s)
{
    return s->view;
}

size_t serving_history_len(const struct serving *s)
{
    return s->pend.state == PEND_HELD ? s->pend.old.nhistory : s->nhistory;
}

const struct snapshot *serving_history_at(const struct serving *s, size_t i)
{
    if (s->pend.state == PEND_HELD)
        return i < s->pend.old.nhistory ? s->pend.old.history[i] : NULL;
    return i < s->nhistory ? s->history[i] : NULL;
}

uint64_t serving_next_version(const struct serving *s)
{
    return s->pend.state == PEND_HELD ? s->pend.old.next_version : s->next_version;
}

void serving_persisted(const struct serving *s, struct serving_state *out)
{
    out->stable = s->stable;
    out->canary = s->canary;
    out->canary_bp = s->canary ? s->canary_bp : 0;
    out->history = (const struct snapshot *const *)s->history;
    out->nhistory = s->nhistory;
    out->generation = s->generation;
    out->next_version = s->next_version;
}

/* ---- two-phase commits ---- */

void serving_hold(struct serving *s)
{
    s->hold = true;
}

bool serving_pending(const struct serving *s)
{
    return s->pend.state != PEND_NONE;
}

static bool books_has(const struct books *b, const struct snapshot *snap)
{
    if (b->stable == snap || b->canary == snap)
        return true;
    for (size_t i = 0; i < b->nhistory; i++)
        if (b->history[i] == snap)
            return true;
    return false;
}

/* Adds to r every snapshot of `from` that `to` does not hold. */
static void leaving_add(struct retired *r, const struct books *from, const struct books *to)
{
    retired_add(r, books_has(to, from->stable) ? NULL : from->stable);
    retired_add(r, books_has(to, from->canary) ? NULL : from->canary);
    for (size_t i = 0; i < from->nhistory; i++)
        retired_add(r, books_has(to, from->history[i]) ? NULL : from->history[i]);
}

/* The bookkeeping now (the state a held change entered). */
static void books_now(const struct serving *s, struct books *b)
{
    b->stable = s->stable;
    b->canary = s->canary;
    b->canary_bp = s->canary_bp;
    b->history = s->history; /* borrowed, read only */
    b->nhistory = s->nhistory;
    b->generation = s->generation;
    b->next_version = s->next_version;
}

static void pend_clear(struct serving *s)
{
    s->pend.state = PEND_NONE;
    s->pend.view = NULL;
    s->pend.r = NULL;
}

double serving_pending_publish(struct serving *s)
{
    struct timespec t0;
    if (s->pend.state != PEND_HELD)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    s->pend.view = serving_publish(s, s->pend.view); /* now the old view */
    s->pend.state = PEND_PUBLISHED;
    return elapsed_us(&t0);
}

void serving_pending_finish(struct serving *s)
{
    struct books now;
    if (s->pend.state != PEND_PUBLISHED)
        return;
    books_now(s, &now);
    struct retired *r = s->pend.r;
    r->view = s->pend.view;
    leaving_add(r, &s->pend.old, &now);
    pend_clear(s);
    retire(r);
}

/* Puts the bookkeeping back as it was and retires what only the held
 * change held (with `view`). A version that was published (readers may
 * have named it) stays used: `keep_version`. */
static void pend_revert(struct serving *s, struct serving_view *view, bool keep_version)
{
    struct books now;
    books_now(s, &now);
    struct retired *r = s->pend.r;
    r->view = view;
    leaving_add(r, &now, &s->pend.old);
    books_load(s, &s->pend.old);
    if (keep_version)
        s->next_version = now.next_version;
    pend_clear(s);
    retire(r); /* readers may have seen them (undo): after a grace period */
}

void serving_pending_undo(struct serving *s)
{
    if (s->pend.state == PEND_HELD) {
        serving_pending_abort(s);
        return;
    }
    if (s->pend.state != PEND_PUBLISHED)
        return;
    pend_revert(s, serving_publish(s, s->pend.view), true);
}

void serving_pending_abort(struct serving *s)
{
    if (s->pend.state == PEND_PUBLISHED) {
        serving_pending_undo(s);
        return;
    }
    s->hold = false; /* also after a change function that failed */
    if (s->pend.state != PEND_HELD)
        return;
    pend_revert(s, s->pend.view, false); /* never published */
}

size_t serving_history_max(const struct serving *s)
{
    return s->history_max;
}

/* ---- changes ---- */

int serving_swap(struct serving *s, struct snapshot *snap, int canary_bp,
                 struct serving_commit *out, struct lorad_error *err)
{
    struct serving_view *v = NULL;
    struct retired *r = NULL;
    struct timespec t0;
    int rc;

    if (!snap) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "swap: no snapshot given");
        goto fail;
    }
    if (canary_bp >= 0 && !bp_valid(canary_bp)) {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                             "canary share %d.%02d%% is outside [0, 100]", canary_bp / 100,
                             canary_bp % 100);
        goto fail;
    }
    if (s->canary) {
        rc = lorad_error_set(err, LORAD_E_CANARY_ACTIVE,
                             "canary %s (version %" PRIu64
                             ") is live: promote it or roll it back first",
                             s->canary->name, s->canary->version);
        goto fail;
    }
    if ((rc = commit_alloc(s, 1, "swap", &v, &r, err)) < 0)
        goto fail;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    snap->version = s->next_version++;
    s->generation++;
    set_previous(out, s->stable);
    if (canary_bp >= 0) {
        s->canary = snap;
        s->canary_bp = canary_bp;
    } else {
        history_push(s, s->stable, r);
        s->stable = snap;
    }
    commit_finish(s, v, r);
    fill_commit(s, out, snap, canary_bp >= 0 ? SERVING_CANARY : SERVING_STABLE, &t0);
    return 0;
fail:
    free(v);
    free(r);
    snapshot_free(&snap);
    return rc;
}

/* Index in history of version `ver`, or -1. */
static ssize_t history_find(const struct serving *s, uint64_t ver)
{
    for (size_t i = 0; i < s->nhistory; i++) {
        uint64_t hv = s->history[i] ? s->history[i]->version : 0;
        if (hv == ver)
            return (ssize_t)i;
    }
    return -1;
}

/* Aborts the live canary. */
static int rollback_canary(struct serving *s, struct serving_commit *out, struct lorad_error *err)
{
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;
    int rc = commit_alloc(s, 1, "rollback", &v, &r, err);
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    set_previous(out, s->canary);
    retired_add(r, s->canary);
    s->canary = NULL;
    s->canary_bp = 0;
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, s->stable, SERVING_STABLE, &t0);
    return 0;
}

int serving_rollback(struct serving *s, const uint64_t *version, struct serving_commit *out,
                     struct lorad_error *err)
{
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;
    ssize_t idx;

    if (s->canary && !version)
        return rollback_canary(s, out, err);
    /* An explicit version not in history is version_not_found even when
     * history is empty: only {} can have nothing to go back to. */
    if (version) {
        idx = history_find(s, *version);
        if (idx < 0)
            return lorad_error_set(err, LORAD_E_VERSION_NOT_FOUND,
                                   "version %" PRIu64 " is not in history%s%s", *version,
                                   (s->stable ? s->stable->version : 0) == *version
                                       ? " (it is the current stable)"
                                       : "",
                                   s->nhistory == 0 ? "; history is empty" : "");
    } else if (s->nhistory == 0) {
        return lorad_error_set(err, LORAD_E_NO_HISTORY, "no history to roll back to");
    } else {
        idx = 0;
    }
    int rc = commit_alloc(s, (size_t)idx + 2, "rollback", &v, &r, err);
    if (rc < 0)
        return rc;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    set_previous(out, s->stable);
    /* {"version": N} with a canary live: N serves everything, so the
     * canary goes too. */
    retired_add(r, s->canary);
    s->canary = NULL;
    s->canary_bp = 0;
    retired_add(r, s->stable);
    for (ssize_t i = 0; i < idx; i++)
        retired_add(r, s->history[i]);
    s->stable = s->history[idx];
    s->nhistory -= (size_t)idx + 1;
    memmove(&s->history[0], &s->history[idx + 1], s->nhistory * sizeof(s->history[0]));
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, s->stable, SERVING_STABLE, &t0);
    return 0;
}

int serving_set_canary(struct serving *s, int canary_bp, struct serving_commit *out,
                       struct lorad_error *err)
{
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;

    if (!s->canary)
        return lorad_error_set(err, LORAD_E_NO_CANARY, "no canary is live");
    if (!bp_valid(canary_bp))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "canary share %d basis points is outside [0, 10000]", canary_bp);
    int rc = commit_alloc(s, 0, "canary", &v, &r, err);
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    out->has_previous = false;
    out->previous_adapter[0] = '\0';
    out->previous_version = 0;
    s->canary_bp = canary_bp;
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, s->canary, SERVING_CANARY, &t0);
    return 0;
}

int serving_promote(struct serving *s, struct serving_commit *out, struct lorad_error *err)
{
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;

    if (!s->canary)
        return lorad_error_set(err, LORAD_E_NO_CANARY, "no canary is live");
    int rc = commit_alloc(s, 1, "promote", &v, &r, err);
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    set_previous(out, s->stable);
    history_push(s, s->stable, r);
    s->stable = s->canary;
    s->canary = NULL;
    s->canary_bp = 0;
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, s->stable, SERVING_STABLE, &t0);
    return 0;
}

void serving_restore(struct serving *s, struct snapshot *stable, struct snapshot *canary,
                     int canary_bp, struct snapshot **history, size_t nhistory, uint64_t generation,
                     uint64_t next_version)
{
    struct serving_view *v = view_build(s);
    struct retired *r = retired_new(s->nhistory + 2);
    size_t i;

    if (!v || !r) {
        /* Start-up only: no reader runs yet, so the old state can go now. */
        free(v);
        free(r);
        v = NULL;
        r = NULL;
    }
    if (r) {
        retired_add(r, s->stable);
        retired_add(r, s->canary);
        for (i = 0; i < s->nhistory; i++)
            retired_add(r, s->history[i]);
    } else {
        snapshot_free(&s->stable);
        snapshot_free(&s->canary);
        for (i = 0; i < s->nhistory; i++)
            snapshot_free(&s->history[i]);
    }
    s->stable = stable;
    s->canary = canary;
    s->canary_bp = canary ? (bp_valid(canary_bp) ? canary_bp : 0) : 0;
    s->nhistory = 0;
    for (i = 0; i < nhistory; i++) {
        if (s->nhistory < s->history_max)
            s->history[s->nhistory++] = history[i];
        else
            snapshot_free(&history[i]); /* beyond the configured depth */
    }
    s->generation = generation;
    if (next_version > s->next_version)
        s->next_version = next_version;
    if (v && r) {
        commit_finish(s, v, r);
    } else {
        /* Out of memory: overwrite the current view in place (no reader
         * can see it yet). */
        s->view->stable = s->stable;
        s->view->canary = s->canary;
        s->view->canary_bp = s->canary_bp;
        s->view->generation = s->generation;
    }
}

/* ---- readers ---- */

void serving_reader_register(void)
{
    if (tls_reg == REG_NONE) {
        rcu_register_thread();
        tls_reg = REG_READER;
    }
}

void serving_reader_unregister(void)
{
    if (tls_reg != REG_NONE) {
        grace_release();
        rcu_unregister_thread();
        tls_reg = REG_NONE;
    }
}

void serving_reader_online(void)
{
    rcu_thread_online();
}

void serving_reader_offline(void)
{
    grace_release();
    rcu_thread_offline();
}

void serving_reader_quiescent(void)
{
    grace_release();
    rcu_quiescent_state();
}

const struct serving_view *serving_read(struct serving *s)
{
    return view_deref(s->view);
}

/* ---- routing ---- */

/* FNV-1a over the key, then splitmix64's finaliser so that every output
 * bit depends on every input bit (FNV's low bits alone are weak). */
static uint64_t route_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

const char *serving_variant_name(enum serving_variant v)
{
    return v == SERVING_CANARY ? "canary" : "stable";
}

enum serving_variant serving_route(struct serving *s, const struct serving_view *v, const char *key,
                                   size_t keylen)
{
    uint64_t c, bp;
    if (!v || !v->canary || v->canary_bp <= 0)
        return SERVING_STABLE;
    bp = (uint64_t)v->canary_bp;
    if (key)
        return route_hash(key, keylen) % SERVING_BP_MAX < bp ? SERVING_CANARY : SERVING_STABLE;
    /* Request c goes to the canary iff floor((c+1) bp / 10000) moves past
     * floor(c bp / 10000): over any run the canary count is within one of
     * the exact share. Only c mod 10000 matters, so no overflow. */
    c = atomic_fetch_add_explicit(&s->route_ctr, 1, memory_order_relaxed) % SERVING_BP_MAX;
    return (c + 1) * bp / SERVING_BP_MAX > c * bp / SERVING_BP_MAX ? SERVING_CANARY
                                                                   : SERVING_STABLE;
}

/* ---- the reclaimer thread's name ---- */

struct reclaimer_name {
    struct rcu_head head;
    char name[16];
};

static void reclaimer_name_cb(struct rcu_head *head)
{
    struct reclaimer_name *n = caa_container_of(head, struct reclaimer_name, head);
    grace_acquire();
    (void)pthread_setname_np(pthread_self(), n->name);
    free(n);
}

int serving_name_reclaimer(const char *name)
{
    struct reclaimer_name *n;
    if (!name || strlen(name) >= sizeof(n->name))
        return LORAD_E_INVALID_REQUEST;
    if (!(n = calloc(1, sizeof(*n))))
        return LORAD_E_INTERNAL;
    memcpy(n->name, name, strlen(name));
    call_rcu_online(&n->head, reclaimer_name_cb);
    return 0;
}
