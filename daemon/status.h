/* lorad — daemon/status.h: the read-only endpoints (SPEC.md 6): /status,
 * /adapters, /healthz, /readyz and /metrics.
 *
 * They change nothing: each reads the daemon's state (the serving view,
 * the profile, the metrics, the pool's health) and answers. /adapters
 * scans adapter_dir in libuv's threadpool (srv->adapter_scans counts the
 * scans in flight).
 *
 * Threads: the loop thread.
 */
#ifndef LORAD_STATUS_H
#define LORAD_STATUS_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "http.h"

struct lorad_server;

/* The handlers (routes of main.c's table). */
void status_report(struct http_request *r); /* GET /status */
struct serving_slot;
/* One slot as /status "slots" shows it (stable, canary, history, profile,
 * requests); NULL on out-of-memory. */
cJSON *status_slot_json(const struct lorad_server *srv, const struct serving_slot *sl);
void status_adapters(struct http_request *r);
void status_healthz(struct http_request *r);
void status_readyz(struct http_request *r);
void status_metrics(struct http_request *r);

/* True when no /adapters scan is in flight. */
bool status_idle(const struct lorad_server *srv);

#endif
