/* lorad — serving.h: the serving state and its RCU publication.
 *
 * The serving state is stable + optional canary (with a share) + a history
 * of the last K retired stables + generation + the next version number
 * (SPEC.md 1). Workers see it through one pointer to an immutable
 * `struct serving_view`. Every change (swap, canary share, promote,
 * rollback) builds a new view completely, publishes it with one
 * rcu_xchg_pointer (liburcu, QSBR flavour), and retires the old view (and
 * any snapshot no longer referenced by the new view or the history) after a
 * grace period, off the caller's thread. Nothing a reader can see is ever
 * written again.
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
 * Ownership: serving_swap() takes ownership of the snapshot it is given (on
 * success and on failure). Snapshots reachable from the serving state are
 * owned by it and freed after a grace period when they leave it.
 */
#ifndef LORAD_SERVING_H
#define LORAD_SERVING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "snapshot.h"

#define SERVING_BP_MAX 10000 /* 100.00 % in basis points */

enum serving_variant { SERVING_STABLE = 0, SERVING_CANARY = 1 };

/* "stable" or "canary": the name SPEC 6 gives a variant (answers, headers,
 * logs). Any thread. */
const char *serving_variant_name(enum serving_variant v);

struct serving_view {
    const struct snapshot *stable; /* NULL = base model only */
    const struct snapshot *canary; /* NULL = no canary */
    int canary_bp;                 /* canary share, 0..10000 (0.01 % steps) */
    uint64_t generation;
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

/* A state serving the base model only, generation 0, next version 1, with
 * room for `history_max` retired stables. NULL on out-of-memory. */
struct serving *serving_new(int history_max);

/* Frees the state and every snapshot it owns after waiting for a grace
 * period (all readers must have unregistered). Sets *s to NULL. */
void serving_free(struct serving **s);

/* ---- writer side (one thread) ---- */

/* The current view. Valid until the writer's next change. */
const struct serving_view *serving_current(const struct serving *s);
/* History, newest first; i < serving_history_len(). NULL entries are the
 * base model. */
size_t serving_history_len(const struct serving *s);
const struct snapshot *serving_history_at(const struct serving *s, size_t i);
uint64_t serving_next_version(const struct serving *s);
/* The history bound given to serving_new(). */
size_t serving_history_max(const struct serving *s);

/* The bookkeeping that the state file records (lib/statefile.h): the
 * state including a held change not yet published (see serving_hold). */
struct serving_state {
    const struct snapshot *stable, *canary;
    int canary_bp;
    const struct snapshot *const *history; /* newest first */
    size_t nhistory;
    uint64_t generation, next_version;
};
/* Valid until the writer's next change. */
void serving_persisted(const struct serving *s, struct serving_state *out);

/* ---- durable before visible: two-phase commits (SPEC 8) ----
 * serving_hold() makes the next change function (swap, rollback,
 * set_canary, promote) do everything but publish: the version is
 * assigned, `out` filled (commit_us: the bookkeeping), serving_persisted()
 * shows the new state; readers, serving_current() and the history and
 * version accessors still show the old one. Then exactly one of:
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

/* reader (and writer): which variant serves a request under view v.
 * With a route key (key != NULL), a deterministic hash of the key picks a
 * bucket in 0..9999 and the canary serves buckets < canary_bp, so a key
 * keeps its variant at a fixed share and a key on the canary at P stays on
 * it at any larger P. Without a key, a shared counter splits traffic so the
 * realised share over any run of requests is within one request of
 * canary_bp / 10000. No canary: always SERVING_STABLE. */
enum serving_variant serving_route(struct serving *s, const struct serving_view *v, const char *key,
                                   size_t keylen);

#endif
