/* lorad — client/ctlout.h: loradctl's human-readable output.
 *
 * This file turns lorad's JSON answers (SPEC.md 6) into the short, aligned
 * text an operator reads at 3 am: what serves, in which slot, since when,
 * with what evidence. It is pure formatting: it reads the cJSON answer it
 * is given and writes to `out`; it never talks to lorad and never fails
 * (a member that is missing or of another type prints as "?", so a newer
 * or older daemon still gets readable output).
 *
 * Conventions: a snapshot is written NAME@VERSION, the base model alone
 * "(base)@0" (parentheses cannot occur in adapter names); percentages as
 * lorad rounded them; durations as lorad measured them.
 *
 * Ownership: nothing is retained; the caller owns every cJSON.
 * Threads: any thread (no shared state).
 */
#ifndef LORAD_CLIENT_CTLOUT_H
#define LORAD_CLIENT_CTLOUT_H

#include <stdio.h>

#include <cjson/cJSON.h>

/* GET /status: daemon lines, then every slot (the /status "slots" object,
 * or the top-level serving state as slot "default" from a lorad without
 * slots), then the swap counters. */
void ctlout_status(FILE *out, const cJSON *status);

/* The /status "slots" object (or NULL: a lorad without slots, whose top
 * level is printed as slot "default") as one aligned line per slot. */
void ctlout_slots(FILE *out, const cJSON *status);

/* GET /adapters: one aligned line per adapter directory. */
void ctlout_adapters(FILE *out, const cJSON *adapters);

/* The answer of a committed change: `cmd` is "swap", "rollback",
 * "canary", "promote" or "unload"; `slot` the slot asked for (NULL:
 * default), used when the answer does not name one. One line. */
void ctlout_change(FILE *out, const char *cmd, const cJSON *answer, const char *slot);

/* A POST /infer answer: a '#' line naming slot, snapshot and variant, then
 * one line per output row (values %.9g separated by spaces, a non-finite
 * value as null). */
void ctlout_infer(FILE *out, const cJSON *answer);

#endif
