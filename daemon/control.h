/* lorad — daemon/control.h: the mutating control plane (SPEC.md 6): /swap,
 * /rollback, /canary, /promote and /unload, each in one slot, and the bookkeeping of swaps that
 * /status reports.
 *
 * Ownership: control_init allocates srv->control; control_free frees it
 * (only when control_idle). Threads: the loop thread (or start-up /
 * shutdown, when no loop runs).
 */
#ifndef LORAD_CONTROL_H
#define LORAD_CONTROL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "../lib/errors.h"
#include "../lib/snapshot.h"
#include "http.h"

struct lorad_server;

int control_init(struct lorad_server *srv, struct lorad_error *err);
void control_free(struct lorad_server *srv);
/* True when no /swap (of any slot) is staging or waiting for its state
 * write. */
bool control_idle(const struct lorad_server *srv);

/* Drain past its deadline: answers every /swap still staging 503
 * draining (its job frees itself later). Returns how many. */
size_t control_refuse_staging(struct lorad_server *srv);

/* The handlers (routes of main.c's table). */
void control_swap(struct http_request *r);
void control_rollback(struct http_request *r);
void control_canary(struct http_request *r);
void control_promote(struct http_request *r);
void control_unload(struct http_request *r);

/* What /status says of swaps ("swaps": ok, failed, last). */
struct control_swaps {
    uint64_t ok, failed; /* /swap requests that committed, that did not (401 aside) */
    bool has_last;       /* false: "last": null */
    struct {
        bool adapter_null; /* the request named no adapter string */
        char adapter[SNAPSHOT_NAME_MAX + 1];
        bool ok;
        uint64_t version;   /* when ok */
        int code;           /* when not ok: its lorad_err */
        struct timespec at; /* CLOCK_REALTIME */
    } last;                 /* the last /swap */
};
const struct control_swaps *control_swaps(const struct lorad_server *srv);

#endif
