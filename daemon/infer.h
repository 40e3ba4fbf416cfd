/* lorad — daemon/infer.h: POST /infer, the HTTP side of the data plane.
 *
 * The handler turns a request into a job (body, content type, the
 * X-Lorad-Route-Key and X-Lorad-Variant headers) and queues it on the
 * worker pool; a worker runs its batch with lib/batch.h; back on the loop
 * thread the job's answer is recorded in the metrics and sent.
 *
 * Threads: infer_handle and infer_workers_ops on the loop thread; the
 * callbacks it installs run where workers.h says.
 */
#ifndef LORAD_INFER_H
#define LORAD_INFER_H

#include "http.h"
#include "workers.h"

struct lorad_server;

/* The /infer handler (a route of main.c's table). */
void infer_handle(struct http_request *r);

/* Fills *ops with the pool callbacks that serve /infer jobs for srv (whose
 * model, serving state, metrics and scratch_rank are set). */
void infer_workers_ops(struct lorad_server *srv, struct workers_ops *ops);

#endif
