/* lorad — daemon/control.h: private contracts of the control plane
 * (control.c) beyond the handlers declared in daemon/lorad.h: the control
 * bookkeeping's life cycle and the state-file writes main.c needs at start
 * and at shutdown.
 *
 * Threads: loop thread only (or start-up / shutdown, when no loop runs).
 */
#ifndef LORAD_CONTROL_H
#define LORAD_CONTROL_H

#include <stdbool.h>

#include "lorad.h"

/* Allocates srv->control (swap counters, the state-write queue). Records the
 * start time shown as the base model's loaded_at. 0 or LORAD_E_INTERNAL. */
int control_init(struct lorad_server *srv, struct lorad_error *err);
/* Frees srv->control and sets it to NULL. Only when control_idle(). */
void control_free(struct lorad_server *srv);

/* Renders and writes the state file synchronously (start-up, shutdown).
 * 0 when state_file is unset. */
int control_write_state_sync(struct lorad_server *srv, struct lorad_error *err);

/* True when no staging, /adapters scan or state write is in flight. */
bool control_idle(const struct lorad_server *srv);

#endif
