/* lorad — client/reconcile.c: desired + observed -> the control requests
 * that converge one slot (the rules are listed in reconcile.h).
 */
#include "reconcile.h"

#include <assert.h>
#include <math.h>
#include <string.h>
#include <strings.h>

/* lorad keeps percents to 0.01. */
#define RECONCILE_PERCENT_EPS 0.005

static bool snap_is(const struct observed_snap *s, const struct desired *d)
{
    return s->present && !strcmp(s->adapter, d->adapter) &&
           (!d->sha256[0] || !strcasecmp(s->sha256, d->sha256));
}

static void add(struct reconcile_plan *p, enum reconcile_op op, const struct desired *d)
{
    assert(p->n_actions < sizeof(p->action) / sizeof(p->action[0]));
    struct reconcile_action *a = &p->action[p->n_actions++];
    a->op = op;
    a->adapter = d ? d->adapter : NULL;
    a->sha256 = d ? d->sha256 : "";
    a->percent = d ? d->percent : 0;
    p->status = RECONCILE_ACT;
}

void reconcile_slot(const char *slot, const struct desired *d, const struct observed *o,
                    const struct observed_slot *s, struct reconcile_plan *plan)
{
    bool is_default = !strcmp(slot, "default");
    memset(plan, 0, sizeof(*plan));
    plan->slot = slot;
    plan->d = d;
    plan->status = RECONCILE_CONVERGED;
    if (!is_default && !o->has_slots) {
        if (d || s)
            plan->status = RECONCILE_UNSUPPORTED;
        return;
    }
    if (!d) { /* rule 1 */
        if (s && !is_default)
            add(plan, RECONCILE_UNLOAD, NULL);
        return;
    }
    bool canary = s && s->canary.present;
    if (s && snap_is(&s->stable, d) && !canary) /* rule 2 */
        return;
    if (canary && !snap_is(&s->canary, d)) { /* rule 3 */
        add(plan, RECONCILE_ABORT, NULL);
        canary = false;
        if (snap_is(&s->stable, d)) /* rule 2 once the canary is gone */
            return;
    }
    if (d->has_percent) { /* rule 4 */
        if (!canary)
            add(plan, RECONCILE_SWAP_CANARY, d);
        else if (fabs(s->canary.percent - d->percent) >= RECONCILE_PERCENT_EPS)
            add(plan, RECONCILE_PERCENT, d);
        return;
    }
    add(plan, canary ? RECONCILE_PROMOTE : RECONCILE_SWAP, d); /* rule 5 */
}

const char *reconcile_op_name(enum reconcile_op op)
{
    switch (op) {
    case RECONCILE_SWAP:
        return "swap";
    case RECONCILE_SWAP_CANARY:
        return "swap_canary";
    case RECONCILE_PERCENT:
        return "canary_percent";
    case RECONCILE_PROMOTE:
        return "promote";
    case RECONCILE_ABORT:
        return "abort";
    case RECONCILE_UNLOAD:
        return "unload";
    }
    return "?";
}
