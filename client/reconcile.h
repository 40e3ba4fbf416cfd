/* lorad — client/reconcile.h: what lorad-sync does to converge one lorad
 * instance to etcd's desired state (SPEC.md 12), as a pure function of
 * the desired values and the observed /status.
 *
 * Rules, per slot, in this order (A the desired adapter, H its sha256 if
 * given, P its canary_percent if given; "stable is A" means the stable's
 * adapter is A and, with H, its sha256 is H):
 *   1. desired deleted: the slot is unloaded (`/unload`), except `default`,
 *      which is left as it is; a slot neither desired nor served: nothing.
 *   2. stable is A and no canary: nothing (converged; a percent does not
 *      make a canary of what is already stable).
 *   3. a canary is live that is not A (or not H): abort it (`/rollback`),
 *      then, unless rule 2 now holds (a rollback written as the previous
 *      desired value ends here), continue with rule 4 or 5 as if none were
 *      live.
 *   4. with P: a canary of A is live → set its percent when it differs
 *      (`/canary`; percents equal to 0.01, lorad's resolution); none is
 *      live → `/swap` A as the canary at P.
 *   5. without P: a canary of A is live → `/promote`; none is live →
 *      `/swap` A as the stable.
 * A slot other than `default` on a lorad without slots (its /status has
 * no "slots" object) cannot be acted on: RECONCILE_UNSUPPORTED, no action
 * (such a lorad refuses the "slot" member, and must never swap its
 * default slot for another slot's desired value).
 *
 * The actions of one slot are executed in order; each is one control
 * request. Nothing here does I/O, allocates or keeps state: backoff and
 * retries are the agent's (sync.c).
 * Threads: pure, any thread.
 */
#ifndef LORAD_CLIENT_RECONCILE_H
#define LORAD_CLIENT_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>

#include "desired.h"

enum reconcile_op {
    RECONCILE_SWAP,        /* /swap {adapter, sha256?} (stable) */
    RECONCILE_SWAP_CANARY, /* /swap {adapter, canary_percent, sha256?} */
    RECONCILE_PERCENT,     /* /canary {percent} */
    RECONCILE_PROMOTE,     /* /promote {} */
    RECONCILE_ABORT,       /* /rollback {} while a canary is live */
    RECONCILE_UNLOAD,      /* /unload {slot} */
};

struct reconcile_action {
    enum reconcile_op op;
    const char *adapter; /* SWAP*: borrowed from the desired value */
    const char *sha256;  /* SWAP*: "" or hex (borrowed) */
    double percent;      /* SWAP_CANARY, PERCENT */
};

enum reconcile_status {
    RECONCILE_CONVERGED,   /* nothing to do */
    RECONCILE_ACT,         /* n_actions > 0 */
    RECONCILE_UNSUPPORTED, /* a non-default slot on a lorad without slots */
};

/* The plan of one slot. */
struct reconcile_plan {
    const char *slot;        /* borrowed from desired or observed */
    const struct desired *d; /* NULL: not desired (deleted) */
    enum reconcile_status status;
    size_t n_actions;
    struct reconcile_action action[2];
};

/* The plan for one slot: d (NULL when desired/<slot> does not exist) and
 * the observed state o (with the slot's entry s, NULL when lorad does not
 * serve the slot). `slot` names it. */
void reconcile_slot(const char *slot, const struct desired *d, const struct observed *o,
                    const struct observed_slot *s, struct reconcile_plan *plan);

/* "swap", "swap_canary", "canary_percent", "promote", "abort", "unload". */
const char *reconcile_op_name(enum reconcile_op op);

#endif
