/* lorad — client/desired.h: the two states lorad-sync compares (SPEC.md
 * 12): what etcd says a slot should serve (`desired/<slot>`), and what the
 * lorad instance serves (its GET /status), both parsed into plain structs
 * so that reconcile.c can stay a pure function of them.
 *
 * desired/<slot> is a JSON object {"adapter": A, "sha256": H?,
 * "canary_percent": P?}: A follows lorad's name rule
 * (^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$), H is 64 hex digits (any case,
 * kept lowercase), P a number in [0, 100]; null for H or P is the same as
 * absent; any other member is refused, so a typo ("canary_pecent") is an
 * error reported by the agent instead of a silent full rollout.
 *
 * The observed state is read from /status: with a "slots" object (lorad
 * with slots, issue 14) every slot from there, else the one slot
 * `default` from the top-level stable/canary/requests.
 *
 * Errors: LORAD_E_INVALID_REQUEST with the reason in err. No allocation:
 * every string is copied into fixed arrays of the structs.
 * Threads: pure functions, any thread.
 */
#ifndef LORAD_CLIENT_DESIRED_H
#define LORAD_CLIENT_DESIRED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "../lib/errors.h"

#define DESIRED_NAME_MAX 128 /* adapter and slot names (bytes, no NUL) */
#define DESIRED_MAX_SLOTS 32 /* slots one agent handles */

/* What desired/<slot> asks for. */
struct desired {
    char slot[DESIRED_NAME_MAX + 1];
    char adapter[DESIRED_NAME_MAX + 1];
    char sha256[65]; /* lowercase hex, "" when not given */
    bool has_percent;
    double percent;       /* [0, 100] with has_percent */
    int64_t mod_revision; /* of the key (set by the caller) */
};

/* True when s follows lorad's adapter (and slot) name rule. */
bool desired_name_ok(const char *s);

/* Parses `len` bytes of `text`, the value of desired/<slot>, into *d (slot
 * copied; mod_revision left 0). 0 or LORAD_E_INVALID_REQUEST. */
int desired_parse(const char *slot, const char *text, size_t len, struct desired *d,
                  struct lorad_error *err);

/* One served snapshot. */
struct observed_snap {
    bool present;                       /* false: no canary */
    char adapter[DESIRED_NAME_MAX + 1]; /* "" for the base model only */
    long long version;
    char sha256[65]; /* "" when null */
    double percent;  /* canary only */
};

/* One variant's counters, as /status gives them. */
struct observed_counters {
    long long requests, errors, nonfinite_rows;
    double p99_ms; /* -1 when null */
};

struct observed_slot {
    char name[DESIRED_NAME_MAX + 1];
    struct observed_snap stable, canary;
    struct observed_counters req_stable, req_canary;
};

struct observed {
    bool has_slots;       /* /status has a "slots" object */
    bool serving;         /* "state" is "serving" */
    long long generation; /* -1 when absent */
    size_t n;             /* slots */
    struct observed_slot slot[DESIRED_MAX_SLOTS];
};

/* Parses a GET /status answer into *o. 0 or LORAD_E_INVALID_REQUEST
 * (not an object, a slot without a stable, more than DESIRED_MAX_SLOTS
 * slots). */
int observed_parse(const cJSON *status, struct observed *o, struct lorad_error *err);

/* The slot named `name` in o, or NULL. */
const struct observed_slot *observed_find(const struct observed *o, const char *name);

#endif
