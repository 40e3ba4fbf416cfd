/* lorad — serving.c: the serving state of every slot (stable, canary,
 * history) and its RCU publication (see serving.h).
 *
 * Design: the writer (one thread) owns `struct serving`: the mutable
 * bookkeeping (the slots sorted by name, each with stable, canary, history
 * and profile; the counters) lives there and is touched by the writer
 * only. Readers see nothing of it but `s->view`, a pointer to an immutable
 * `struct serving_view` holding every slot, which every change replaces by
 * a freshly built one in serving_publish(), the one function that stores
 * to `s->view` (rcu_xchg_pointer). Each change is done in three steps:
 * (1) allocate everything that can fail (the new view, sized for the slots
 * after the change, a `struct retired` record big enough for whatever the
 * change drops, a new slot and room for it), so a failure leaves serving
 * untouched; (2) update the bookkeeping and publish; (3) hand the old view
 * and every snapshot (and an unloaded slot) that left the state to
 * call_rcu(), whose helper thread frees them after a grace period. The
 * writer never waits for readers. A view's slot entries point at the
 * slots' names and routing counters, so a slot is freed only with (after)
 * the last view that showed it. The call_rcu helper thread is liburcu's
 * and inherits the name of whichever thread started it;
 * serving_name_reclaimer() names it from inside a callback it runs.
 *
 * liburcu's QSBR call_rcu() must be called from a registered, online
 * thread. The writer thread is registered lazily on its first retire and
 * is online only for the duration of each call_rcu() (it never reads the
 * view through RCU, so being offline the rest of the time never delays a
 * grace period). A thread that already is a registered reader keeps its
 * state. serving_free() unregisters a lazily registered writer.
 *
 * Two-phase commits (durable before visible, SPEC 8): after
 * serving_hold(), the next change runs steps (1) and the bookkeeping half
 * of (2) but stops before publishing: `pend` keeps the new view, the
 * retire record (what leaves the state) and, in `books`, a copy of every
 * slot's bookkeeping and of the counters as they were. Until it is
 * published the writer-side accessors answer from that copy, so nothing
 * but the persisted accessors (serving_persisted*) sees the change.
 * serving_pending_publish() flips; serving_pending_finish() retires what
 * left; serving_pending_undo() (after the flip) and
 * serving_pending_abort() (before it) put the old bookkeeping back and
 * retire instead what only the change brought in (the snapshot a swap
 * entered, a slot it created).
 *
 * Memory accounting: `resident` is the sum of snap->bytes over every
 * snapshot of every slot, kept by acct_in()/acct_out() at each entry and
 * exit. Each history entry carries the sequence number of its retirement
 * (hseq), so "oldest history entry of any slot" is the smallest hseq.
 */
#include "serving.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <urcu-qsbr.h>

#include "profile.h"

#define SERVING_MAX_SLOTS_DEFAULT 256

/* One slot's bookkeeping (writer), and its routing counter (readers). */
struct serving_slot {
    char name[SERVING_SLOT_NAME_MAX + 1];
    struct snapshot *stable; /* NULL = base model */
    struct snapshot *canary; /* NULL = none */
    int canary_bp;
    struct snapshot **history; /* [history_max], newest first */
    uint64_t *hseq;            /* [history_max]: retirement sequence of each entry */
    size_t nhistory;
    struct profile *profile;    /* NULL until known */
    _Atomic uint64_t route_ctr; /* unkeyed routing counter (readers) */
};

/* What one commit retires: freed together after a grace period. */
struct retired {
    struct rcu_head head;
    struct serving_view *view; /* the view that was replaced (may be NULL) */
    struct serving_slot *slot; /* an unloaded slot (NULL: none) */
    size_t n;
    struct snapshot *snaps[]; /* snapshots that left the state */
};

/* The writer's bookkeeping as it was before a held change. */
struct books_slot {
    struct serving_slot *obj; /* the slot object */
    struct serving_slot copy; /* its fields then (history/hseq: books' buffers) */
};
struct books {
    struct books_slot *slots; /* [nslots], name order */
    size_t nslots, cap;
    struct snapshot **hbuf; /* [cap * history_max] */
    uint64_t *sbuf;
    size_t dflt; /* index of default */
    uint64_t generation, next_version, resident, retire_seq;
};

enum pend_state { PEND_NONE = 0, PEND_HELD, PEND_PUBLISHED };

struct serving {
    struct serving_view *view; /* RCU-published; readers use serving_read() */
    bool hold;                 /* the next change stays pending */
    struct {
        enum pend_state state;
        struct serving_view *view;    /* HELD: the new view; PUBLISHED: the old one */
        struct retired *r;            /* what the change retires when it stands */
        struct snapshot *entered;     /* a swap's new snapshot (undo frees it) */
        struct serving_slot *created; /* a slot the change created (undo frees it) */
    } pend;
    struct books books; /* the state before a held change */
    /* Writer-only bookkeeping, mirrors the view with owning pointers. */
    struct serving_slot **slots; /* [cap], nslots sorted by name */
    size_t nslots, cap;
    struct serving_slot *dflt; /* slot "default", always present */
    size_t history_max;
    size_t max_slots;
    uint64_t max_bytes; /* 0: no bound */
    uint64_t resident;  /* bytes of every snapshot of every slot */
    uint64_t generation;
    uint64_t next_version;
    uint64_t retire_seq; /* hseq of the next history entry */
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

/* ---- slots ---- */

bool serving_slot_name_valid(const char *n)
{
    size_t i;
    if (!n || !((n[0] >= 'A' && n[0] <= 'Z') || (n[0] >= 'a' && n[0] <= 'z') ||
                (n[0] >= '0' && n[0] <= '9')))
        return false;
    for (i = 1; n[i]; i++) {
        char c = n[i];
        if (i > SERVING_SLOT_NAME_MAX - 1 ||
            !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static struct serving_slot *slot_new(const char *name, size_t history_max)
{
    struct serving_slot *sl = calloc(1, sizeof(*sl));
    if (!sl)
        return NULL;
    snprintf(sl->name, sizeof(sl->name), "%s", name);
    sl->history = calloc(history_max ? history_max : 1, sizeof(sl->history[0]));
    sl->hseq = calloc(history_max ? history_max : 1, sizeof(sl->hseq[0]));
    if (!sl->history || !sl->hseq) {
        free(sl->history);
        free(sl->hseq);
        free(sl);
        return NULL;
    }
    atomic_init(&sl->route_ctr, 0);
    return sl;
}

/* Frees the slot's own memory (not its snapshots). */
static void slot_free(struct serving_slot *sl)
{
    if (!sl)
        return;
    profile_free(&sl->profile);
    free(sl->history);
    free(sl->hseq);
    free(sl);
}

/* Index of `name` in s->slots, or -(insertion point) - 1. */
static ssize_t slot_index(const struct serving *s, const char *name)
{
    size_t lo = 0, hi = s->nslots;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->slots[mid]->name, name);
        if (c == 0)
            return (ssize_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(ssize_t)lo - 1;
}

static struct serving_slot *slot_find(const struct serving *s, const char *name)
{
    ssize_t i;
    if (!name)
        return s->dflt;
    i = slot_index(s, name);
    return i >= 0 ? s->slots[i] : NULL;
}

static int slot_missing(const char *name, struct lorad_error *err)
{
    return lorad_error_set(err, LORAD_E_SLOT_NOT_FOUND, "no slot \"%.130s\"", name);
}

/* ---- retire and publish ---- */

static void retired_free_cb(struct rcu_head *head)
{
    struct retired *r = caa_container_of(head, struct retired, head);
    grace_acquire();
    for (size_t i = 0; i < r->n; i++)
        snapshot_free(&r->snaps[i]);
    free(r->view);
    if (r->slot) {
        /* An unloaded slot's weights will not be staged again soon: hand
         * its pages back to the kernel. The daemon keeps freed weights in
         * the heap for the next stage (daemon/main.c keep_freed_weights),
         * which SPEC 10 bounds by the resident snapshots; after unloads
         * the resident bytes shrink and RSS must follow. */
        slot_free(r->slot);
        (void)malloc_trim(0);
    }
    free(r);
}

static struct retired *retired_new(size_t cap)
{
    struct retired *r = calloc(1, sizeof(*r) + cap * sizeof(r->snaps[0]));
    return r;
}

/* A snapshot enters the state: counted. */
static void acct_in(struct serving *s, const struct snapshot *snap)
{
    if (snap)
        s->resident += snap->bytes;
}

/* A snapshot leaves the state: uncounted and added to `r` (NULL, the base
 * model, is not freed). The record was sized by the caller for the worst
 * case. */
static void acct_out(struct serving *s, struct retired *r, struct snapshot *snap)
{
    if (snap) {
        s->resident -= snap->bytes;
        r->snaps[r->n++] = snap;
    }
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

static struct serving_view *view_alloc(size_t nslots)
{
    return malloc(sizeof(struct serving_view) + nslots * sizeof(struct serving_slot_view));
}

/* Fills v from the (already updated) bookkeeping. */
static void view_fill(const struct serving *s, struct serving_view *v)
{
    for (size_t i = 0; i < s->nslots; i++) {
        struct serving_slot *sl = s->slots[i];
        struct serving_slot_view *sv = &v->slots[i];
        sv->name = sl->name;
        sv->stable = sl->stable;
        sv->canary = sl->canary;
        sv->canary_bp = sl->canary ? sl->canary_bp : 0;
        sv->slot = sl;
        if (sl == s->dflt)
            v->dflt = sv;
    }
    v->nslots = s->nslots;
    v->stable = v->dflt->stable;
    v->canary = v->dflt->canary;
    v->canary_bp = v->dflt->canary_bp;
    v->generation = s->generation;
}

/* Step (1) of every change: allocates the new view for `nslots` slots and
 * a retire record for up to `cap` snapshots, so nothing can fail after the
 * state changes. LORAD_E_INTERNAL ("<what>: out of memory") with nothing
 * allocated. */
static int books_save(struct serving *s);

static int commit_alloc(struct serving *s, size_t nslots, size_t cap, const char *what,
                        struct serving_view **v, struct retired **r, struct lorad_error *err)
{
    if (s->pend.state != PEND_NONE)
        return lorad_error_set(err, LORAD_E_SWAP_IN_PROGRESS,
                               "%s: another change is not yet published", what);
    *v = view_alloc(nslots);
    *r = retired_new(cap < 2 ? 2 : cap); /* undo may retire a swap's snapshot */
    if (*v && *r && (!s->hold || books_save(s) == 0))
        return 0;
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
    view_fill(s, v);
    if (s->hold) {
        s->hold = false;
        s->pend.view = v;
        s->pend.r = r;
        s->pend.state = PEND_HELD;
        return;
    }
    s->pend.entered = NULL;
    s->pend.created = NULL;
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

/* Pushes a slot's old stable to the front of its history; the oldest
 * entry is moved to `r` when history is full. */
static void history_push(struct serving *s, struct serving_slot *sl, struct snapshot *old_stable,
                         struct retired *r)
{
    if (s->history_max == 0) {
        acct_out(s, r, old_stable);
        return;
    }
    if (sl->nhistory == s->history_max)
        acct_out(s, r, sl->history[--sl->nhistory]);
    memmove(&sl->history[1], &sl->history[0], sl->nhistory * sizeof(sl->history[0]));
    memmove(&sl->hseq[1], &sl->hseq[0], sl->nhistory * sizeof(sl->hseq[0]));
    sl->history[0] = old_stable;
    sl->hseq[0] = s->retire_seq++;
    sl->nhistory++;
}

/* Removes history entry i of slot sl (to `r`). */
static void history_remove(struct serving *s, struct serving_slot *sl, size_t i, struct retired *r)
{
    acct_out(s, r, sl->history[i]);
    sl->nhistory--;
    memmove(&sl->history[i], &sl->history[i + 1], (sl->nhistory - i) * sizeof(sl->history[0]));
    memmove(&sl->hseq[i], &sl->hseq[i + 1], (sl->nhistory - i) * sizeof(sl->hseq[0]));
}

static size_t history_total(const struct serving *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nslots; i++)
        n += s->slots[i]->nhistory;
    return n;
}

/* Bytes of every stable and canary: what the memory bound cannot drop. */
static uint64_t pinned_bytes(const struct serving *s)
{
    uint64_t b = 0;
    for (size_t i = 0; i < s->nslots; i++) {
        const struct serving_slot *sl = s->slots[i];
        b += (sl->stable ? sl->stable->bytes : 0) + (sl->canary ? sl->canary->bytes : 0);
    }
    return b;
}

/* Drops the oldest history entries of any slot (smallest hseq; base-model
 * entries hold no bytes and stay) until resident is within the bound. The
 * caller checked that stables and canaries alone fit and sized `r` for
 * every history entry. */
static void memory_trim(struct serving *s, struct retired *r)
{
    while (s->max_bytes && s->resident > s->max_bytes) {
        struct serving_slot *best = NULL;
        size_t bi = 0;
        for (size_t k = 0; k < s->nslots; k++) {
            struct serving_slot *sl = s->slots[k];
            for (size_t i = sl->nhistory; i-- > 0;) {
                if (!sl->history[i])
                    continue;
                if (!best || sl->hseq[i] < best->hseq[bi]) {
                    best = sl;
                    bi = i;
                }
                break; /* older entries of this slot come later: the last one is its oldest */
            }
        }
        if (!best)
            return;
        history_remove(s, best, bi, r);
    }
}

static bool bp_valid(int bp)
{
    return bp >= 0 && bp <= SERVING_BP_MAX;
}

/* ---- two-phase commits: the saved bookkeeping ---- */

/* Copies every slot's bookkeeping and the counters into s->books (room
 * grown as needed): -1 on out-of-memory, nothing changed. */
static int books_save(struct serving *s)
{
    struct books *b = &s->books;
    size_t hm = s->history_max ? s->history_max : 1;
    if (b->cap < s->nslots) {
        size_t ncap = s->nslots * 2;
        struct books_slot *ns = realloc(b->slots, ncap * sizeof(*ns));
        if (!ns)
            return -1;
        b->slots = ns;
        struct snapshot **nh = realloc(b->hbuf, ncap * hm * sizeof(*nh));
        if (!nh)
            return -1;
        b->hbuf = nh;
        uint64_t *nsq = realloc(b->sbuf, ncap * hm * sizeof(*nsq));
        if (!nsq)
            return -1;
        b->sbuf = nsq;
        b->cap = ncap;
    }
    for (size_t i = 0; i < s->nslots; i++) {
        struct serving_slot *sl = s->slots[i];
        struct books_slot *bs = &b->slots[i];
        bs->obj = sl;
        /* field by field: readers update the object's routing counter
         * concurrently (the copy's is never read) */
        memcpy(bs->copy.name, sl->name, sizeof(sl->name));
        bs->copy.stable = sl->stable;
        bs->copy.canary = sl->canary;
        bs->copy.canary_bp = sl->canary_bp;
        bs->copy.nhistory = sl->nhistory;
        bs->copy.profile = sl->profile;
        bs->copy.history = b->hbuf + i * hm;
        bs->copy.hseq = b->sbuf + i * hm;
        memcpy(bs->copy.history, sl->history, sl->nhistory * sizeof(sl->history[0]));
        memcpy(bs->copy.hseq, sl->hseq, sl->nhistory * sizeof(sl->hseq[0]));
        if (sl == s->dflt)
            b->dflt = i;
    }
    b->nslots = s->nslots;
    b->generation = s->generation;
    b->next_version = s->next_version;
    b->resident = s->resident;
    b->retire_seq = s->retire_seq;
    return 0;
}

/* Puts the saved bookkeeping back (the slots array holds at least as many
 * entries as it did then). */
static void books_load(struct serving *s)
{
    struct books *b = &s->books;
    for (size_t i = 0; i < b->nslots; i++) {
        struct serving_slot *sl = b->slots[i].obj;
        const struct serving_slot *c = &b->slots[i].copy;
        s->slots[i] = sl;
        sl->stable = c->stable;
        sl->canary = c->canary;
        sl->canary_bp = c->canary_bp;
        sl->nhistory = c->nhistory;
        memcpy(sl->history, c->history, c->nhistory * sizeof(sl->history[0]));
        memcpy(sl->hseq, c->hseq, c->nhistory * sizeof(sl->hseq[0]));
    }
    s->nslots = b->nslots;
    s->generation = b->generation;
    s->next_version = b->next_version;
    s->resident = b->resident;
    s->retire_seq = b->retire_seq;
}

static bool held(const struct serving *s)
{
    return s->pend.state == PEND_HELD;
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
    s->max_slots = SERVING_MAX_SLOTS_DEFAULT;
    s->cap = 8;
    s->slots = calloc(s->cap, sizeof(s->slots[0]));
    s->dflt = slot_new(SERVING_DEFAULT_SLOT, s->history_max);
    s->view = view_alloc(1);
    if (!s->slots || !s->dflt || !s->view)
        goto fail;
    s->slots[0] = s->dflt;
    s->nslots = 1;
    s->next_version = 1;
    view_fill(s, s->view);
    return s;
fail:
    free(s->slots);
    slot_free(s->dflt);
    free(s->view);
    free(s);
    return NULL;
}

void serving_set_limits(struct serving *s, size_t max_slots, uint64_t max_bytes)
{
    s->max_slots = max_slots ? max_slots : 1;
    s->max_bytes = max_bytes;
}

static void slot_free_all(struct serving_slot *sl)
{
    snapshot_free(&sl->stable);
    snapshot_free(&sl->canary);
    for (size_t i = 0; i < sl->nhistory; i++)
        snapshot_free(&sl->history[i]);
    slot_free(sl);
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
    for (size_t i = 0; i < s->nslots; i++)
        slot_free_all(s->slots[i]);
    free(s->slots);
    free(s->books.slots);
    free(s->books.hbuf);
    free(s->books.sbuf);
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
    return serving_slot_history_len(serving_slot_get(s, NULL));
}

const struct snapshot *serving_history_at(const struct serving *s, size_t i)
{
    return serving_slot_history_at(serving_slot_get(s, NULL), i);
}

uint64_t serving_next_version(const struct serving *s)
{
    return held(s) ? s->books.next_version : s->next_version;
}

size_t serving_history_max(const struct serving *s)
{
    return s->history_max;
}

const struct serving_slot *serving_slot_get(const struct serving *s, const char *name)
{
    if (!held(s))
        return slot_find(s, name);
    /* a held change: the bookkeeping as it was */
    if (!name)
        return &s->books.slots[s->books.dflt].copy;
    for (size_t lo = 0, hi = s->books.nslots; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->books.slots[mid].copy.name, name);
        if (c == 0)
            return &s->books.slots[mid].copy;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t serving_slot_count(const struct serving *s)
{
    return held(s) ? s->books.nslots : s->nslots;
}

const struct serving_slot *serving_slot_at(const struct serving *s, size_t i)
{
    if (held(s))
        return i < s->books.nslots ? &s->books.slots[i].copy : NULL;
    return i < s->nslots ? s->slots[i] : NULL;
}

size_t serving_persisted_slots(const struct serving *s, const struct serving_slot *const **out)
{
    *out = (const struct serving_slot *const *)s->slots;
    return s->nslots;
}

void serving_persisted_counters(const struct serving *s, uint64_t *generation,
                                uint64_t *next_version)
{
    *generation = s->generation;
    *next_version = s->next_version;
}

void serving_persisted(const struct serving *s, struct serving_state *out)
{
    const struct serving_slot *d = s->dflt;
    out->stable = d->stable;
    out->canary = d->canary;
    out->canary_bp = d->canary ? d->canary_bp : 0;
    out->history = (const struct snapshot *const *)d->history;
    out->nhistory = d->nhistory;
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

static void pend_clear(struct serving *s)
{
    s->pend.state = PEND_NONE;
    s->pend.view = NULL;
    s->pend.r = NULL;
    s->pend.entered = NULL;
    s->pend.created = NULL;
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
    if (s->pend.state != PEND_PUBLISHED)
        return;
    struct retired *r = s->pend.r;
    r->view = s->pend.view;
    pend_clear(s);
    retire(r);
}

/* Puts the bookkeeping back as it was and retires, with `view`, what only
 * the change brought in (what it would have retired stays). A version
 * readers may have seen (published, then undone) is never issued again. */
static void pend_revert(struct serving *s, struct serving_view *view, bool was_published)
{
    struct retired *r = s->pend.r;
    uint64_t next = s->next_version;
    r->n = 0;
    r->slot = s->pend.created; /* an unloaded slot comes back; a created one goes */
    if (s->pend.entered)
        r->snaps[r->n++] = s->pend.entered;
    books_load(s);
    if (was_published)
        s->next_version = next;
    r->view = view;
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

const char *serving_slot_name(const struct serving_slot *sl)
{
    return sl->name;
}

const struct snapshot *serving_slot_stable(const struct serving_slot *sl)
{
    return sl->stable;
}

const struct snapshot *serving_slot_canary(const struct serving_slot *sl, int *bp)
{
    if (bp)
        *bp = sl->canary ? sl->canary_bp : 0;
    return sl->canary;
}

size_t serving_slot_history_len(const struct serving_slot *sl)
{
    return sl->nhistory;
}

const struct snapshot *serving_slot_history_at(const struct serving_slot *sl, size_t i)
{
    return i < sl->nhistory ? sl->history[i] : NULL;
}

const struct profile *serving_slot_profile(const struct serving_slot *sl)
{
    return sl->profile;
}

void serving_slot_set_profile(struct serving *s, const char *name, struct profile *p)
{
    struct serving_slot *sl = slot_find(s, name);
    if (!sl) {
        profile_free(&p);
        return;
    }
    profile_free(&sl->profile);
    sl->profile = p;
}

uint64_t serving_resident_bytes(const struct serving *s)
{
    return held(s) ? s->books.resident : s->resident;
}

uint64_t serving_memory_limit(const struct serving *s)
{
    return s->max_bytes;
}

size_t serving_max_slots(const struct serving *s)
{
    return s->max_slots;
}

/* ---- changes ---- */

/* Room in s->slots for one more slot (before anything changes). */
static int slots_reserve(struct serving *s, struct lorad_error *err)
{
    struct serving_slot **n;
    if (s->nslots < s->cap)
        return 0;
    n = realloc(s->slots, 2 * s->cap * sizeof(s->slots[0]));
    if (!n)
        return lorad_error_set(err, LORAD_E_INTERNAL, "swap: out of memory");
    s->slots = n;
    s->cap *= 2;
    return 0;
}

static void slots_insert(struct serving *s, struct serving_slot *sl)
{
    ssize_t at = -slot_index(s, sl->name) - 1;
    memmove(&s->slots[at + 1], &s->slots[at], (s->nslots - (size_t)at) * sizeof(s->slots[0]));
    s->slots[at] = sl;
    s->nslots++;
}

/* The checks of a swap into slot `name` that change nothing: *sl is the
 * slot (NULL: it must be created). */
static int swap_check(struct serving *s, const char *name, const struct snapshot *snap,
                      int canary_bp, struct serving_slot **slp, struct lorad_error *err)
{
    struct serving_slot *sl = slot_find(s, name);
    *slp = sl;
    if (!snap)
        return lorad_error_set(err, LORAD_E_INTERNAL, "swap: no snapshot given");
    if (!sl && !serving_slot_name_valid(name))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "slot name \"%.130s\" does not match "
                               "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                               name);
    if (canary_bp >= 0 && !bp_valid(canary_bp))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "canary share %d.%02d%% is outside [0, 100]", canary_bp / 100,
                               canary_bp % 100);
    if (sl && sl->canary)
        return lorad_error_set(err, LORAD_E_CANARY_ACTIVE,
                               "canary %s (version %" PRIu64
                               ") is live: promote it or roll it back first",
                               sl->canary->name, sl->canary->version);
    if (!sl && s->nslots >= s->max_slots)
        return lorad_error_set(err, LORAD_E_TOO_MANY_SLOTS,
                               "%zu slots exist, the limit (max_slots) is %zu: unload one first",
                               s->nslots, s->max_slots);
    if (s->max_bytes) {
        /* after the swap, stables and canaries hold: today's, plus the new
         * snapshot, less the old stable when it goes to history */
        uint64_t pinned = pinned_bytes(s) + snap->bytes;
        if (sl && canary_bp < 0 && sl->stable)
            pinned -= sl->stable->bytes;
        if (pinned > s->max_bytes)
            return lorad_error_set(err, LORAD_E_MEMORY_LIMIT,
                                   "the stables and canaries of every slot would hold %" PRIu64
                                   " bytes with this adapter (%zu bytes), over "
                                   "max_adapter_memory_mb (%" PRIu64
                                   " bytes): unload a slot or roll a canary back first",
                                   pinned, snap->bytes, s->max_bytes);
    }
    return 0;
}

int serving_slot_swap(struct serving *s, const char *name, struct snapshot *snap, int canary_bp,
                      struct serving_commit *out, struct lorad_error *err)
{
    struct serving_view *v = NULL;
    struct retired *r = NULL;
    struct serving_slot *sl = NULL, *created = NULL;
    struct timespec t0;
    int rc;

    if ((rc = swap_check(s, name, snap, canary_bp, &sl, err)) < 0)
        goto fail;
    if (!sl && ((rc = slots_reserve(s, err)) < 0 || !(created = slot_new(name, s->history_max)))) {
        rc = rc < 0 ? rc : lorad_error_set(err, LORAD_E_INTERNAL, "swap: out of memory");
        goto fail;
    }
    rc = commit_alloc(s, s->nslots + (created ? 1 : 0), 2 + (s->max_bytes ? history_total(s) : 0),
                      "swap", &v, &r, err);
    if (rc < 0)
        goto fail;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    s->pend.created = created;
    s->pend.entered = snap;
    if (created) {
        slots_insert(s, created);
        sl = created;
        created = NULL;
    }
    snap->version = s->next_version++;
    s->generation++;
    set_previous(out, sl->stable);
    acct_in(s, snap);
    if (canary_bp >= 0) {
        sl->canary = snap;
        sl->canary_bp = canary_bp;
    } else {
        history_push(s, sl, sl->stable, r);
        sl->stable = snap;
    }
    memory_trim(s, r);
    commit_finish(s, v, r);
    fill_commit(s, out, snap, canary_bp >= 0 ? SERVING_CANARY : SERVING_STABLE, &t0);
    return 0;
fail:
    slot_free(created);
    free(v);
    free(r);
    snapshot_free(&snap);
    return rc;
}

int serving_swap(struct serving *s, struct snapshot *snap, int canary_bp,
                 struct serving_commit *out, struct lorad_error *err)
{
    return serving_slot_swap(s, NULL, snap, canary_bp, out, err);
}

/* Index in a slot's history of version `ver`, or -1. */
static ssize_t history_find(const struct serving_slot *sl, uint64_t ver)
{
    for (size_t i = 0; i < sl->nhistory; i++) {
        uint64_t hv = sl->history[i] ? sl->history[i]->version : 0;
        if (hv == ver)
            return (ssize_t)i;
    }
    return -1;
}

/* Aborts the slot's live canary. */
static int rollback_canary(struct serving *s, struct serving_slot *sl, struct serving_commit *out,
                           struct lorad_error *err)
{
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;
    int rc = commit_alloc(s, s->nslots, 1, "rollback", &v, &r, err);
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    set_previous(out, sl->canary);
    acct_out(s, r, sl->canary);
    sl->canary = NULL;
    sl->canary_bp = 0;
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, sl->stable, SERVING_STABLE, &t0);
    return 0;
}

int serving_slot_rollback(struct serving *s, const char *name, const uint64_t *version,
                          struct serving_commit *out, struct lorad_error *err)
{
    struct serving_slot *sl = slot_find(s, name);
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;
    ssize_t idx;

    if (!sl)
        return slot_missing(name, err);
    if (sl->canary && !version)
        return rollback_canary(s, sl, out, err);
    /* An explicit version not in history is version_not_found even when
     * history is empty: only {} can have nothing to go back to. */
    if (version) {
        idx = history_find(sl, *version);
        if (idx < 0)
            return lorad_error_set(err, LORAD_E_VERSION_NOT_FOUND,
                                   "version %" PRIu64 " is not in history%s%s", *version,
                                   (sl->stable ? sl->stable->version : 0) == *version
                                       ? " (it is the current stable)"
                                       : "",
                                   sl->nhistory == 0 ? "; history is empty" : "");
    } else if (sl->nhistory == 0) {
        return lorad_error_set(err, LORAD_E_NO_HISTORY, "no history to roll back to");
    } else {
        idx = 0;
    }
    int rc = commit_alloc(s, s->nslots, (size_t)idx + 2, "rollback", &v, &r, err);
    if (rc < 0)
        return rc;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    set_previous(out, sl->stable);
    /* {"version": N} with a canary live: N serves everything, so the
     * canary goes too. */
    acct_out(s, r, sl->canary);
    sl->canary = NULL;
    sl->canary_bp = 0;
    acct_out(s, r, sl->stable);
    for (ssize_t i = 0; i < idx; i++)
        acct_out(s, r, sl->history[i]);
    sl->stable = sl->history[idx];
    sl->nhistory -= (size_t)idx + 1;
    memmove(&sl->history[0], &sl->history[idx + 1], sl->nhistory * sizeof(sl->history[0]));
    memmove(&sl->hseq[0], &sl->hseq[idx + 1], sl->nhistory * sizeof(sl->hseq[0]));
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, sl->stable, SERVING_STABLE, &t0);
    return 0;
}

int serving_rollback(struct serving *s, const uint64_t *version, struct serving_commit *out,
                     struct lorad_error *err)
{
    return serving_slot_rollback(s, NULL, version, out, err);
}

int serving_slot_set_canary(struct serving *s, const char *name, int canary_bp,
                            struct serving_commit *out, struct lorad_error *err)
{
    struct serving_slot *sl = slot_find(s, name);
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;

    if (!sl)
        return slot_missing(name, err);
    if (!sl->canary)
        return lorad_error_set(err, LORAD_E_NO_CANARY, "no canary is live");
    if (!bp_valid(canary_bp))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "canary share %d basis points is outside [0, 10000]", canary_bp);
    int rc = commit_alloc(s, s->nslots, 0, "canary", &v, &r, err);
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    out->has_previous = false;
    out->previous_adapter[0] = '\0';
    out->previous_version = 0;
    sl->canary_bp = canary_bp;
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, sl->canary, SERVING_CANARY, &t0);
    return 0;
}

int serving_set_canary(struct serving *s, int canary_bp, struct serving_commit *out,
                       struct lorad_error *err)
{
    return serving_slot_set_canary(s, NULL, canary_bp, out, err);
}

int serving_slot_promote(struct serving *s, const char *name, struct serving_commit *out,
                         struct lorad_error *err)
{
    struct serving_slot *sl = slot_find(s, name);
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;

    if (!sl)
        return slot_missing(name, err);
    if (!sl->canary)
        return lorad_error_set(err, LORAD_E_NO_CANARY, "no canary is live");
    int rc = commit_alloc(s, s->nslots, 1, "promote", &v, &r, err);
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    set_previous(out, sl->stable);
    history_push(s, sl, sl->stable, r);
    sl->stable = sl->canary;
    sl->canary = NULL;
    sl->canary_bp = 0;
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, sl->stable, SERVING_STABLE, &t0);
    return 0;
}

int serving_promote(struct serving *s, struct serving_commit *out, struct lorad_error *err)
{
    return serving_slot_promote(s, NULL, out, err);
}

int serving_slot_unload(struct serving *s, const char *name, struct serving_commit *out,
                        struct lorad_error *err)
{
    struct serving_view *v;
    struct retired *r;
    struct timespec t0;
    ssize_t idx;
    struct serving_slot *sl;

    if (!name || strcmp(name, SERVING_DEFAULT_SLOT) == 0)
        return lorad_error_set(err, LORAD_E_DEFAULT_SLOT,
                               "slot default cannot be unloaded; roll it back to version 0 "
                               "instead");
    idx = slot_index(s, name);
    if (idx < 0)
        return slot_missing(name, err);
    sl = s->slots[idx];
    int rc = commit_alloc(s, s->nslots - 1, sl->nhistory + 2, "unload", &v, &r, err);
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    set_previous(out, sl->stable);
    acct_out(s, r, sl->stable);
    acct_out(s, r, sl->canary);
    for (size_t i = 0; i < sl->nhistory; i++)
        acct_out(s, r, sl->history[i]);
    sl->stable = sl->canary = NULL;
    sl->nhistory = 0;
    s->nslots--;
    memmove(&s->slots[idx], &s->slots[idx + 1], (s->nslots - (size_t)idx) * sizeof(s->slots[0]));
    r->slot = sl; /* the old view still points at its name and counter */
    s->generation++;
    commit_finish(s, v, r);
    fill_commit(s, out, NULL, SERVING_STABLE, &t0);
    return 0;
}

/* Installs a slot's restored state (start-up; see serving.h). */
static void restore_into(struct serving *s, struct serving_slot *sl, struct snapshot *stable,
                         struct snapshot *canary, int canary_bp, struct snapshot **history,
                         size_t nhistory, struct retired *r)
{
    size_t i;
    if (r) {
        acct_out(s, r, sl->stable);
        acct_out(s, r, sl->canary);
        for (i = 0; i < sl->nhistory; i++)
            acct_out(s, r, sl->history[i]);
    } else {
        /* Out of memory at start-up: no reader runs yet, so the old state
         * can go now. */
        s->resident -= (sl->stable ? sl->stable->bytes : 0) + (sl->canary ? sl->canary->bytes : 0);
        snapshot_free(&sl->stable);
        snapshot_free(&sl->canary);
        for (i = 0; i < sl->nhistory; i++) {
            s->resident -= sl->history[i] ? sl->history[i]->bytes : 0;
            snapshot_free(&sl->history[i]);
        }
    }
    sl->stable = stable;
    sl->canary = canary;
    sl->canary_bp = canary ? (bp_valid(canary_bp) ? canary_bp : 0) : 0;
    acct_in(s, stable);
    acct_in(s, canary);
    sl->nhistory = 0;
    for (i = 0; i < nhistory; i++) {
        if (sl->nhistory < s->history_max) {
            sl->history[sl->nhistory] = history[i];
            sl->hseq[sl->nhistory] = nhistory - i; /* oldest: smallest */
            acct_in(s, history[i]);
            sl->nhistory++;
        } else {
            snapshot_free(&history[i]); /* beyond the configured depth */
        }
    }
    if (s->retire_seq <= nhistory)
        s->retire_seq = nhistory + 1;
}

/* Publishes after a start-up change (or, out of memory, rewrites the view
 * in place: no reader can see it yet). */
static void restore_publish(struct serving *s, struct serving_view *v, struct retired *r)
{
    if (v && r) {
        commit_finish(s, v, r);
        return;
    }
    free(v);
    free(r);
    if (s->view && s->view->nslots >= s->nslots)
        view_fill(s, s->view);
}

void serving_restore(struct serving *s, struct snapshot *stable, struct snapshot *canary,
                     int canary_bp, struct snapshot **history, size_t nhistory, uint64_t generation,
                     uint64_t next_version)
{
    struct serving_view *v = view_alloc(s->nslots);
    struct retired *r = retired_new(s->dflt->nhistory + 2);
    if (!v || !r) {
        free(v);
        free(r);
        v = NULL;
        r = NULL;
    }
    restore_into(s, s->dflt, stable, canary, canary_bp, history, nhistory, r);
    s->generation = generation;
    if (next_version > s->next_version)
        s->next_version = next_version;
    restore_publish(s, v, r);
}

int serving_restore_slot(struct serving *s, const char *name, struct snapshot *stable,
                         struct snapshot *canary, int canary_bp, struct snapshot **history,
                         size_t nhistory, struct profile *profile, struct lorad_error *err)
{
    struct serving_slot *sl = slot_find(s, name);
    struct serving_view *v;
    struct retired *r;
    int rc = 0;

    if (!sl && (!serving_slot_name_valid(name) || slots_reserve(s, err) < 0 ||
                !(sl = slot_new(name, s->history_max)))) {
        rc = lorad_error_set(
            err, serving_slot_name_valid(name) ? LORAD_E_INTERNAL : LORAD_E_INVALID_REQUEST,
            "slot \"%.130s\": %s", name,
            serving_slot_name_valid(name) ? "out of memory" : "invalid name");
        snapshot_free(&stable);
        snapshot_free(&canary);
        for (size_t i = 0; i < nhistory; i++)
            snapshot_free(&history[i]);
        profile_free(&profile);
        return rc;
    }
    if (slot_find(s, name) != sl)
        slots_insert(s, sl);
    v = view_alloc(s->nslots);
    r = retired_new(sl->nhistory + 2);
    if (!v || !r) {
        free(v);
        free(r);
        v = NULL;
        r = NULL;
    }
    restore_into(s, sl, stable, canary, canary_bp, history, nhistory, r);
    profile_free(&sl->profile);
    sl->profile = profile;
    if (!v) {
        /* the view in place cannot take a new slot: grow it (start-up) */
        struct serving_view *nv = view_alloc(s->nslots);
        if (nv) {
            free(s->view);
            s->view = nv;
        }
    }
    restore_publish(s, v, r);
    return 0;
}

void serving_restore_counters(struct serving *s, uint64_t generation, uint64_t next_version)
{
    struct serving_view *v = view_alloc(s->nslots);
    struct retired *r = retired_new(0);
    s->generation = generation;
    if (next_version > s->next_version)
        s->next_version = next_version;
    restore_publish(s, v && r ? v : (free(v), NULL), v && r ? r : (free(r), NULL));
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

const struct serving_slot_view *serving_view_slot(const struct serving_view *v, const char *name,
                                                  size_t len)
{
    size_t lo = 0, hi;
    if (!v)
        return NULL;
    if (!name)
        return v->dflt;
    hi = v->nslots;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *n = v->slots[mid].name;
        int c = strncmp(n, name, len);
        if (c == 0 && n[len] != '\0')
            c = 1; /* n is longer: after name */
        if (c == 0)
            return &v->slots[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
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

enum serving_variant serving_route_slot(const struct serving_slot_view *sv, const char *key,
                                        size_t keylen)
{
    uint64_t c, bp;
    if (!sv || !sv->canary || sv->canary_bp <= 0)
        return SERVING_STABLE;
    bp = (uint64_t)sv->canary_bp;
    if (key)
        return route_hash(key, keylen) % SERVING_BP_MAX < bp ? SERVING_CANARY : SERVING_STABLE;
    /* Request c goes to the canary iff floor((c+1) bp / 10000) moves past
     * floor(c bp / 10000): over any run the canary count is within one of
     * the exact share. Only c mod 10000 matters, so no overflow. */
    c = atomic_fetch_add_explicit(&sv->slot->route_ctr, 1, memory_order_relaxed) % SERVING_BP_MAX;
    return (c + 1) * bp / SERVING_BP_MAX > c * bp / SERVING_BP_MAX ? SERVING_CANARY
                                                                   : SERVING_STABLE;
}

enum serving_variant serving_route(struct serving *s, const struct serving_view *v, const char *key,
                                   size_t keylen)
{
    (void)s;
    return v ? serving_route_slot(v->dflt, key, keylen) : SERVING_STABLE;
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
