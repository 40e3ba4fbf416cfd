/* lorad — serving.h: the serving state of every slot and its RCU
 * publication.
 *
 * A slot (SPEC.md 1) is a named serving position: stable + optional canary
 * (with a share) + a history of the last K retired stables + its profile.
 * Slot "default" always exists. `generation` (changes to any slot) and the
 * next version number are global, so (slot, adapter, version) names a
 * snapshot uniquely. Workers see the whole state through one pointer to an
 * immutable `struct serving_view` that holds every slot, sorted by name.
 * Every change to any slot (swap, canary share, promote, rollback, unload,
 * a new slot) builds a new view completely (sharing the unchanged slots'
 * snapshot pointers), publishes it with one rcu_xchg_pointer (liburcu, QSBR
 * flavour), and retires the old view (and any snapshot or slot no longer in
 * the state) after a grace period, off the caller's thread. Nothing a
 * reader can see is ever written again (the per-slot routing counter
 * aside: an atomic).
 *
 * Threads: one writer thread (the daemon's loop thread) calls every
 * serving_* function not marked "reader". Reader threads (workers) call
 * serving_reader_register() once, serving_read() once per batch,
 * serving_reader_quiescent() after each batch, serving_reader_offline()
 * before they block waiting for work and serving_reader_online() after.
 *
 * A snapshot pointer of NULL means "base model only" (adapter null,
 * version 0), which is a valid stable and a valid history entry.
 *
 * Ownership: every snapshot in the state belongs to exactly one slot (its
 * stable, canary or one history entry): snapshots are never shared between
 * slots, so no reference counts. serving_*swap() takes ownership of the
 * snapshot it is given (on success and on failure). A snapshot or a slot
 * leaving the state is freed after a grace period, with the view that
 * last showed it. Each slot also owns its profile (writer-only).
 *
 * Memory bound (SPEC 6): with a limit set, the resident bytes (snap->bytes
 * of every stable, canary and history snapshot of every slot) stay within
 * it: a swap that would pass it first drops the oldest history entries of
 * any slot (oldest retirement first); when stables and canaries alone
 * would pass it, the swap is LORAD_E_MEMORY_LIMIT and nothing changes.
 *
 * The functions without a slot argument act on slot "default" (the whole
 * API of a one-slot deployment).
 */
#ifndef LORAD_SERVING_H
#define LORAD_SERVING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "snapshot.h"

struct profile; /* profile.h */

#define SERVING_BP_MAX 10000 /* 100.00 % in basis points */
#define SERVING_DEFAULT_SLOT "default"
#define SERVING_SLOT_NAME_MAX 128

enum serving_variant { SERVING_STABLE = 0, SERVING_CANARY = 1 };

/* "stable" or "canary": the name SPEC 6 gives a variant (answers, headers,
 * logs). Any thread. */
const char *serving_variant_name(enum serving_variant v);

struct serving_slot;

/* One slot as readers see it. */
struct serving_slot_view {
    const char *name;              /* the slot's name (lives as long as the view) */
    const struct snapshot *stable; /* NULL = base model only */
    const struct snapshot *canary; /* NULL = no canary */
    int canary_bp;                 /* canary share, 0..10000 (0.01 % steps) */
    struct serving_slot *slot;     /* private: the unkeyed routing counter */
};

struct serving_view {
    /* slot "default" (repeated here: what a one-slot deployment reads) */
    const struct snapshot *stable;        /* NULL = base model only */
    const struct snapshot *canary;        /* NULL = no canary */
    int canary_bp;                        /* canary share, 0..10000 (0.01 % steps) */
    uint64_t generation;                  /* changes to any slot */
    const struct serving_slot_view *dflt; /* slot "default" in slots[] */
    size_t nslots;                        /* >= 1 */
    struct serving_slot_view slots[];     /* sorted by name (strcmp) */
};

/* What a commit did, for the control-plane answer. */
struct serving_commit {
    const struct snapshot *now;   /* the snapshot the answer names (NULL = base) */
    enum serving_variant variant; /* "variant" of the answer */
    uint64_t generation;
    bool has_previous;                            /* false: "previous": null */
    char previous_adapter[SNAPSHOT_NAME_MAX + 1]; /* "" = base (adapter null) */
    uint64_t previous_version;
    double commit_us; /* pointer exchange + bookkeeping */
};

struct serving;

/* A state with one slot, "default", serving the base model only,
 * generation 0, next version 1, with room for `history_max` retired
 * stables per slot, at most 256 slots and no memory bound. NULL on
 * out-of-memory. */
struct serving *serving_new(int history_max);

/* The slot bound (default included, >= 1) and the memory bound in bytes
 * (0: none). Writer; both apply from the next change on. */
void serving_set_limits(struct serving *s, size_t max_slots, uint64_t max_bytes);

/* True when `name` is a valid slot name (the adapter name rule of SPEC 6:
 * ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$). Any thread. */
bool serving_slot_name_valid(const char *name);

/* Frees the state and every snapshot it owns after waiting for a grace
 * period (all readers must have unregistered). Sets *s to NULL. */
void serving_free(struct serving **s);

/* ---- writer side (one thread) ---- */

/* ---- slots (writer) ---- */

/* The slot named `name` (NULL: "default"), or NULL when there is none;
 * slots by index in name order, i < serving_slot_count(). A slot handle is
 * valid until the writer's next change. */
const struct serving_slot *serving_slot_get(const struct serving *s, const char *name);
size_t serving_slot_count(const struct serving *s);
const struct serving_slot *serving_slot_at(const struct serving *s, size_t i);
const char *serving_slot_name(const struct serving_slot *sl);
const struct snapshot *serving_slot_stable(const struct serving_slot *sl);
/* The canary (NULL: none) and its share in *bp (may be NULL). */
const struct snapshot *serving_slot_canary(const struct serving_slot *sl, int *bp);
size_t serving_slot_history_len(const struct serving_slot *sl);
const struct snapshot *serving_slot_history_at(const struct serving_slot *sl, size_t i);
/* The slot's profile (NULL: none yet). */
const struct profile *serving_slot_profile(const struct serving_slot *sl);
/* Replaces slot `name`'s profile (ownership taken; freed when the slot
 * has gone). No-op (p freed) when the slot does not exist. */
void serving_slot_set_profile(struct serving *s, const char *name, struct profile *p);
/* Resident snapshot bytes of every slot; the bound (0: none). */
uint64_t serving_resident_bytes(const struct serving *s);
uint64_t serving_memory_limit(const struct serving *s);
size_t serving_max_slots(const struct serving *s);

/* ---- durable before visible: two-phase commits (SPEC 8) ----
 * serving_hold() makes the next change function (any serving_*swap,
 * rollback, set_canary, promote, unload) do everything but publish: the
 * version is assigned, `out` filled (commit_us: the bookkeeping), the
 * persisted accessors below show the new state; readers, serving_current()
 * and every other writer-side accessor still show the old one. Then
 * exactly one of:
 *   serving_pending_abort()   drops it unpublished (the next version too);
 *   serving_pending_publish() flips (returns the microseconds it took),
 *     then serving_pending_finish() retires what left the state, or
 *     serving_pending_undo() republishes the old view and bookkeeping
 *     (but not the next version: the undone one may have been seen).
 * While a change is pending every other change fails with
 * LORAD_E_SWAP_IN_PROGRESS. When the held change function fails (nothing
 * changed), serving_pending_abort() clears the hold. */
void serving_hold(struct serving *s);
bool serving_pending(const struct serving *s);
double serving_pending_publish(struct serving *s);
void serving_pending_finish(struct serving *s);
void serving_pending_undo(struct serving *s);
void serving_pending_abort(struct serving *s);

/* What the state file records (lib/statefile.h): the state including a
 * held change not yet published. Every slot in name order (valid until
 * the writer's next change), and the counters. */
size_t serving_persisted_slots(const struct serving *s, const struct serving_slot *const **out);
void serving_persisted_counters(const struct serving *s, uint64_t *generation,
                                uint64_t *next_version);
/* The same for slot default alone. */
struct serving_state {
    const struct snapshot *stable, *canary;
    int canary_bp;
    const struct snapshot *const *history; /* newest first */
    size_t nhistory;
    uint64_t generation, next_version;
};
void serving_persisted(const struct serving *s, struct serving_state *out);

/* The current view. Valid until the writer's next change. */
const struct serving_view *serving_current(const struct serving *s);
/* History, newest first; i < serving_history_len(). NULL entries are the
 * base model. */
size_t serving_history_len(const struct serving *s);
const struct snapshot *serving_history_at(const struct serving *s, size_t i);
uint64_t serving_next_version(const struct serving *s);
/* The history bound given to serving_new(). */
size_t serving_history_max(const struct serving *s);

/* Assigns snap->version = next version, then publishes it as the new stable
 * (canary_bp < 0; old stable to history, oldest history entry dropped when
 * full) or as the canary at canary_bp (0..10000). LORAD_E_CANARY_ACTIVE if a
 * canary is live, LORAD_E_INVALID_REQUEST for canary_bp > 10000.
 * out->previous names the stable serving before (also for a canary swap:
 * the snapshot the canary takes its share from). On error nothing changed
 * (and snap is freed). */
int serving_swap(struct serving *s, struct snapshot *snap, int canary_bp,
                 struct serving_commit *out, struct lorad_error *err);

/* SPEC 6 /rollback: with a canary live, aborts it (version == NULL only;
 * out->has_previous names the aborted canary). Else with version == NULL
 * the newest history entry becomes stable and the current stable is
 * dropped; with *version == N that retained entry becomes stable and the
 * current stable and every newer history entry are dropped (a live canary
 * is dropped too: N then serves all traffic). out->previous names the
 * stable that was replaced. LORAD_E_NO_HISTORY (version == NULL and an
 * empty history), LORAD_E_VERSION_NOT_FOUND (N not in history, including
 * the current stable's version and any N when history is empty). */
int serving_rollback(struct serving *s, const uint64_t *version, struct serving_commit *out,
                     struct lorad_error *err);

/* Changes the live canary's share (out->now = the canary, "previous":
 * null). LORAD_E_NO_CANARY, LORAD_E_INVALID_REQUEST outside 0..10000. */
int serving_set_canary(struct serving *s, int canary_bp, struct serving_commit *out,
                       struct lorad_error *err);

/* The canary becomes stable (keeping its version); old stable to history.
 * LORAD_E_NO_CANARY. */
int serving_promote(struct serving *s, struct serving_commit *out, struct lorad_error *err);

/* Start-up only, before any reader runs: installs restored snapshots
 * (ownership taken; snap->version must already be set), generation and
 * next version (the next version never decreases). history[] newest first;
 * entries beyond history_max are freed. Replaces (and retires) whatever
 * the state held. */
void serving_restore(struct serving *s, struct snapshot *stable, struct snapshot *canary,
                     int canary_bp, struct snapshot **history, size_t nhistory, uint64_t generation,
                     uint64_t next_version);

/* ---- the same changes in a named slot (NULL: "default") ----
 * Each acts on that slot alone; LORAD_E_SLOT_NOT_FOUND when it does not
 * exist, except serving_slot_swap, which creates it (it starts as the base
 * model only, which the swap retires into its history like any swap;
 * LORAD_E_TOO_MANY_SLOTS past max_slots; LORAD_E_INVALID_REQUEST for an
 * invalid name), and which honours the memory bound (LORAD_E_MEMORY_LIMIT).
 * On error nothing changed. */
int serving_slot_swap(struct serving *s, const char *slot, struct snapshot *snap, int canary_bp,
                      struct serving_commit *out, struct lorad_error *err);
int serving_slot_rollback(struct serving *s, const char *slot, const uint64_t *version,
                          struct serving_commit *out, struct lorad_error *err);
int serving_slot_set_canary(struct serving *s, const char *slot, int canary_bp,
                            struct serving_commit *out, struct lorad_error *err);
int serving_slot_promote(struct serving *s, const char *slot, struct serving_commit *out,
                         struct lorad_error *err);
/* Removes slot `slot` with its stable, canary, history and profile (freed
 * after a grace period); generation increments. out->now is NULL and
 * out->previous names the stable it served. LORAD_E_DEFAULT_SLOT for
 * "default", LORAD_E_SLOT_NOT_FOUND. Read what the answer needs of the slot
 * before the call. */
int serving_slot_unload(struct serving *s, const char *slot, struct serving_commit *out,
                        struct lorad_error *err);

/* Start-up only, before any reader runs: installs slot `slot` (created
 * when missing, past max_slots included) as serving_restore does for
 * "default": stable, canary, history newest first (ownership of every
 * snapshot and of the profile taken; versions already set). Generation
 * and the version floor are serving_restore_counters'. */
int serving_restore_slot(struct serving *s, const char *slot, struct snapshot *stable,
                         struct snapshot *canary, int canary_bp, struct snapshot **history,
                         size_t nhistory, struct profile *profile, struct lorad_error *err);
void serving_restore_counters(struct serving *s, uint64_t generation, uint64_t next_version);

/* Names liburcu's call_rcu thread, the one that frees what commits
 * retire, `name` (at most 15 bytes): a callback queued now renames the
 * thread it runs on, after a grace period (at once while no reader is
 * online). Starts that thread if it is not running yet. Writer thread.
 * 0, LORAD_E_INVALID_REQUEST (name too long) or LORAD_E_INTERNAL. */
int serving_name_reclaimer(const char *name);

/* Blocks until every retired object has been freed (tests, benchmarks of
 * memory, shutdown). Not for the loop thread while serving. */
void serving_barrier(struct serving *s);

/* ---- reader side (worker threads) ---- */

void serving_reader_register(void);
void serving_reader_unregister(void);
void serving_reader_online(void);
void serving_reader_offline(void);
void serving_reader_quiescent(void);

/* reader: the current view, valid until this thread's next quiescent state
 * or offline. */
const struct serving_view *serving_read(struct serving *s);

/* reader (and writer): slot `name` (len bytes, no NUL needed; NULL: the
 * default slot) of view v by binary search, or NULL when v has none. */
const struct serving_slot_view *serving_view_slot(const struct serving_view *v, const char *name,
                                                  size_t len);

/* reader (and writer): serving_route for one slot of a view (its own
 * canary, share and unkeyed counter). */
enum serving_variant serving_route_slot(const struct serving_slot_view *sv, const char *key,
                                        size_t keylen);

/* reader (and writer): which variant serves a request under view v.
 * With a route key (key != NULL), a deterministic hash of the key picks a
 * bucket in 0..9999 and the canary serves buckets < canary_bp, so a key
 * keeps its variant at a fixed share and a key on the canary at P stays on
 * it at any larger P. Without a key, a shared counter splits traffic so the
 * realised share over any run of requests is within one request of
 * canary_bp / 10000 (one counter per slot). No canary: always
 * SERVING_STABLE. This one routes slot "default". */
enum serving_variant serving_route(struct serving *s, const struct serving_view *v, const char *key,
                                   size_t keylen);

#endif
