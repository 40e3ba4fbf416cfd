/* lorad — daemon/config.h: the configuration (SPEC.md 5): the file, the
 * command-line overrides, the checks, the defaults, and the bearer token
 * file.
 *
 * Every default is resolved here, once (config_defaults, and "workers": 0
 * becomes one per CPU in config_build): the daemon's modules use the
 * values of a built config as they are, without fallbacks of their own.
 *
 * Ownership: a struct lorad_config owns its strings; config_free() frees
 * them. Threads: every function is reentrant (config files are read at
 * start-up and, for SIGHUP, in libuv's threadpool).
 */
#ifndef LORAD_CONFIG_H
#define LORAD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "../lib/errors.h"

struct lorad_config {
    char *listen;         /* "HOST:PORT" or "unix:/path" */
    char *control_listen; /* NULL: control plane on `listen` */
    char *model_dir;
    char *adapter_dir;
    char *initial_adapter; /* NULL: start on the base model */
    char *state_file;      /* NULL: no persistence */
    int workers;           /* 0 = one per CPU (resolved by config_build) */
    int max_batch_rows;
    int history;               /* per slot */
    int max_slots;             /* slots, default included (1..65536) */
    int max_adapter_memory_mb; /* resident snapshot bytes of all slots; 0 = no bound */
    int max_rank;              /* 0 = from the first adapter */
    char **target_modules;     /* NULL = from the first adapter */
    size_t n_target_modules;
    char *auth_token_file; /* NULL: control plane unauthenticated */
    size_t max_body_bytes;
    int max_rows_per_request;
    int drain_timeout_ms;
    int shutdown_delay_ms;
    char *blas_coretype; /* "auto", "keep" or a core name */
    int log_level;       /* 3..7 (log.h) */
    /* lorad additions (documented in README): */
    int max_connections;      /* concurrent HTTP connections per listener */
    int connection_timeout_s; /* idle/slow connection timeout */
    int queue_max_requests;   /* /infer requests queued before 503 overloaded */
};

/* Command-line overrides (SPEC 5 "overridable by flags"). NULL / -1 = not
 * given. Strings point into argv (not owned). Kept for SIGHUP, so the flags
 * still win over the re-read file. */
struct config_overrides {
    const char *listen;
    const char *control_listen;
    const char *model_dir;
    const char *adapter_dir;
    const char *initial_adapter;
    const char *state_file;
    const char *log_level;
    int workers;
};

/* Sets every field to its SPEC default (strings NULL or default copies). */
void config_defaults(struct lorad_config *c);
/* Parses the JSON file at `path` over the values already in *c. Unknown
 * keys and wrong types are LORAD_E_INVALID_CONFIG naming the key. */
int config_load_file(struct lorad_config *c, const char *path, struct lorad_error *err);
/* Applies the overrides to *c. LORAD_E_INVALID_CONFIG naming the flag when a
 * value is malformed (an unknown log level). */
int config_apply_overrides(struct lorad_config *c, const struct config_overrides *o,
                           struct lorad_error *err);
/* Checks ranges and cross-field rules (addresses, blas_coretype names...). */
int config_validate(const struct lorad_config *c, struct lorad_error *err);
/* Defaults, then the file at `path` (NULL: none), then the overrides, then
 * config_validate, then "workers": 0 resolved to the CPU count (1..1024).
 * On failure *c holds nothing to free. */
int config_build(struct lorad_config *c, const char *path, const struct config_overrides *o,
                 struct lorad_error *err);
void config_free(struct lorad_config *c);

/* Reads the bearer token from `path`: a regular file, not world-readable,
 * one trailing newline ("\n" or "\r\n") stripped, not empty, at most 4096
 * bytes, printable ASCII without spaces. *out is malloc'd (caller frees).
 * LORAD_E_INVALID_CONFIG naming the file and the reason. */
int config_read_token(const char *path, char **out, struct lorad_error *err);

#endif
