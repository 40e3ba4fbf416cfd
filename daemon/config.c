/* lorad — daemon/config.c: the configuration file (SPEC.md 5).
 *
 * The file is one JSON object; `//` and block comments are allowed (they
 * are removed with cJSON_Minify before parsing), so the shipped example can
 * explain itself. Parsing is strict: an unknown key, a duplicate key or a
 * value of the wrong type is LORAD_E_INVALID_CONFIG naming the key; ranges
 * and cross-field rules are checked by config_validate() after the
 * command-line overrides were applied. Every default is set here once
 * (config_defaults; "workers": 0 resolved by config_build), so the modules
 * that use the config take its values as they are. Also here: the bearer
 * token file (read with lib/fileio.h, refused when world-readable).
 *
 * Threads: every function is reentrant (config files are read at start-up
 * and, for SIGHUP, in libuv's threadpool).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#include <cjson/cJSON.h>

#include "../lib/adapter.h"
#include "../lib/fileio.h"
#include "../lib/jsontext.h"
#include "blas.h"
#include "log.h"

#define CONFIG_FILE_MAX (1u << 20)
#define TOKEN_FILE_MAX 4096

void config_defaults(struct lorad_config *c)
{
    memset(c, 0, sizeof(*c));
    c->listen = strdup("127.0.0.1:8080");
    c->workers = 0;
    c->max_batch_rows = 64;
    c->history = 4;
    c->max_slots = 256;
    c->max_adapter_memory_mb = 0;
    c->max_rank = 0;
    c->max_body_bytes = 16777216;
    c->max_rows_per_request = 1024;
    c->drain_timeout_ms = 10000;
    c->shutdown_delay_ms = 0;
    c->blas_coretype = strdup("auto");
    c->log_level = 6;
    c->max_connections = 1024;
    c->connection_timeout_s = 30;
    c->queue_max_requests = 4096;
}

static void free_targets(struct lorad_config *c)
{
    for (size_t i = 0; i < c->n_target_modules; i++)
        free(c->target_modules[i]);
    free(c->target_modules);
    c->target_modules = NULL;
    c->n_target_modules = 0;
}

void config_free(struct lorad_config *c)
{
    if (!c)
        return;
    free(c->listen);
    free(c->control_listen);
    free(c->model_dir);
    free(c->adapter_dir);
    free(c->initial_adapter);
    free(c->state_file);
    free_targets(c);
    free(c->auth_token_file);
    free(c->blas_coretype);
    memset(c, 0, sizeof(*c));
}

/* ---- reading files ---- */

/* The message of a fileio_* failure `rc` (negative errno) reading `path`. */
static int read_failed(const char *path, int rc, size_t max, struct lorad_error *err)
{
    int code = rc == -ENOMEM ? LORAD_E_INTERNAL : LORAD_E_INVALID_CONFIG;
    if (rc == -ENOMEM || rc == -EINVAL || rc == -EFBIG || rc == -EIO)
        return lorad_error_set(err, code, "%s: %s (at most %zu bytes)", path, fileio_strerror(rc),
                               max);
    return lorad_error_set(err, code, "%s: %s", path, fileio_strerror(rc));
}

/* The token file: as fileio_read_path(), refusing a world-readable file. */
static int read_secret(const char *path, size_t max, char **out, size_t *len,
                       struct lorad_error *err)
{
    struct stat st;
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return read_failed(path, -errno, max, err);
    if (fstat(fd, &st) == 0 && (st.st_mode & S_IROTH))
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG, "%s: world-readable; chmod o-r it", path);
    else if ((rc = fileio_read_fd(fd, max, out, len)) < 0)
        rc = read_failed(path, rc, max, err);
    close(fd);
    return rc;
}

/* ---- typed setters: each names the key on error ---- */

static int set_string(char **dst, const cJSON *v, bool nullable, struct lorad_error *err)
{
    if (nullable && cJSON_IsNull(v)) {
        free(*dst);
        *dst = NULL;
        return 0;
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key %s: expected a string%s",
                               v->string, nullable ? " or null" : "");
    if (v->valuestring[0] == '\0')
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key %s: must not be empty",
                               v->string);
    char *s = strdup(v->valuestring);
    if (!s)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    free(*dst);
    *dst = s;
    return 0;
}

/* Integers: a JSON number that is integral and fits an int; the range is
 * checked by config_validate (so flag overrides are checked too). */
static int set_int(int *dst, const cJSON *v, struct lorad_error *err)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) || d < INT_MIN || d > INT_MAX)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key %s: expected an integer",
                               v->string);
    *dst = (int)d;
    return 0;
}

static int set_size(size_t *dst, const cJSON *v, struct lorad_error *err)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) || d < 0 || d > 9007199254740992.0)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key %s: expected a non-negative integer", v->string);
    *dst = (size_t)d;
    return 0;
}

static int set_targets(struct lorad_config *c, const cJSON *v, struct lorad_error *err)
{
    if (cJSON_IsNull(v)) {
        free_targets(c);
        return 0;
    }
    if (!cJSON_IsArray(v))
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key target_modules: expected a list of layer names or null");
    int n = cJSON_GetArraySize(v);
    char **t = calloc((size_t)n + 1, sizeof(*t));
    if (!t)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if (!cJSON_IsString(e) || !e->valuestring || !e->valuestring[0]) {
            lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                            "config key target_modules: entry %d is not a non-empty string", i);
            goto fail;
        }
        if (!(t[i++] = strdup(e->valuestring))) {
            lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
            goto fail;
        }
    }
    free_targets(c);
    c->target_modules = t;
    c->n_target_modules = (size_t)n;
    return 0;
fail:
    for (int k = 0; k < i; k++)
        free(t[k]);
    free(t);
    return err ? err->code : LORAD_E_INVALID_CONFIG;
}

static int set_level(int *dst, const cJSON *v, struct lorad_error *err)
{
    int l = cJSON_IsString(v) ? log_level_parse(v->valuestring) : -1;
    if (l < 0)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key log_level: expected one of \"error\", \"warning\", "
                               "\"notice\", \"info\", \"debug\"");
    *dst = l;
    return 0;
}

static int set_key(struct lorad_config *c, const cJSON *v, struct lorad_error *err)
{
    const char *k = v->string;
#define STR(name, nullable)                                                                        \
    if (strcmp(k, #name) == 0)                                                                     \
    return set_string(&c->name, v, nullable, err)
#define INT(name)                                                                                  \
    if (strcmp(k, #name) == 0)                                                                     \
    return set_int(&c->name, v, err)
    STR(listen, false);
    STR(control_listen, true);
    STR(model_dir, false);
    STR(adapter_dir, false);
    STR(initial_adapter, true);
    STR(state_file, true);
    STR(auth_token_file, true);
    STR(blas_coretype, false);
    INT(workers);
    INT(max_batch_rows);
    INT(history);
    INT(max_slots);
    INT(max_adapter_memory_mb);
    INT(max_rank);
    INT(max_rows_per_request);
    INT(drain_timeout_ms);
    INT(shutdown_delay_ms);
    INT(max_connections);
    INT(connection_timeout_s);
    INT(queue_max_requests);
#undef STR
#undef INT
    if (strcmp(k, "max_body_bytes") == 0)
        return set_size(&c->max_body_bytes, v, err);
    if (strcmp(k, "target_modules") == 0)
        return set_targets(c, v, err);
    if (strcmp(k, "log_level") == 0)
        return set_level(&c->log_level, v, err);
    return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key %s: unknown key", k);
}

int config_load_file(struct lorad_config *c, const char *path, struct lorad_error *err)
{
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    int rc = fileio_read_path(path, CONFIG_FILE_MAX, &text, &len);
    if (rc < 0)
        return read_failed(path, rc, CONFIG_FILE_MAX, err);
    if (json_has_nul_escape(text, len)) {
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                             "%s: contains a NUL character (raw or \\u0000)", path);
        goto fail;
    }
    cJSON_Minify(text); /* drops comments and whitespace */
    const char *end = NULL;
    root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root || !cJSON_IsObject(root)) {
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG, "%s: %s", path,
                             root ? "expected a JSON object" : "malformed JSON");
        goto fail;
    }
    /* keys in file order: the first repeated or bad one is the error */
    const char *dup = json_duplicate_key(root);
    bool dup_seen = false;
    for (const cJSON *v = root->child; v; v = v->next) {
        if (dup && strcmp(v->string, dup) == 0 && dup_seen) {
            rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG, "%s: config key %s: given twice",
                                 path, v->string);
            goto fail;
        }
        dup_seen = dup_seen || (dup && strcmp(v->string, dup) == 0);
        if ((rc = set_key(c, v, err)) < 0) {
            lorad_error_prefix(err, path);
            goto fail;
        }
    }
    rc = 0;
fail:
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ---- validation ---- */

static int check_range(const char *key, long long v, long long lo, long long hi,
                       struct lorad_error *err)
{
    if (v >= lo && v <= hi)
        return 0;
    return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key %s: %lld is outside %lld..%lld",
                           key, v, lo, hi);
}

static int check_address(const char *key, const char *a, struct lorad_error *err)
{
    if (!a)
        return 0;
    if (strncmp(a, "unix:", 5) == 0) {
        if (a[5] == '\0' || strlen(a + 5) >= 108)
            return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                                   "config key %s: \"unix:\" needs a socket path shorter than "
                                   "108 bytes",
                                   key);
        return 0;
    }
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || colon[1] == '\0')
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key %s: \"%s\" is not HOST:PORT or unix:/path", key, a);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key %s: \"%s\" has no valid port", key, a);
    return 0;
}

int config_validate(const struct lorad_config *c, struct lorad_error *err)
{
    int rc;
    if (!c->model_dir)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key model_dir: required");
    if (!c->adapter_dir)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key adapter_dir: required");
    if (!c->listen)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key listen: required");
    if ((rc = check_address("listen", c->listen, err)) < 0 ||
        (rc = check_address("control_listen", c->control_listen, err)) < 0)
        return rc;
    if (c->control_listen && strcmp(c->control_listen, c->listen) == 0)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key control_listen: equals listen (use null for one "
                               "listener)");
    if (c->initial_adapter && !adapter_name_valid(c->initial_adapter))
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key initial_adapter: \"%s\" is not a valid adapter name",
                               c->initial_adapter);
    if ((rc = check_range("workers", c->workers, 0, 1024, err)) < 0 ||
        (rc = check_range("max_batch_rows", c->max_batch_rows, 1, 4096, err)) < 0 ||
        (rc = check_range("history", c->history, 0, 1024, err)) < 0 ||
        (rc = check_range("max_slots", c->max_slots, 1, 65536, err)) < 0 ||
        (rc = check_range("max_adapter_memory_mb", c->max_adapter_memory_mb, 0, 1 << 24, err)) <
            0 ||
        (rc = check_range("max_rank", c->max_rank, 0, 65536, err)) < 0 ||
        (rc = check_range("max_body_bytes", (long long)c->max_body_bytes, 1024, 1LL << 31, err)) <
            0 ||
        (rc = check_range("max_rows_per_request", c->max_rows_per_request, 1, 1 << 20, err)) < 0 ||
        (rc = check_range("drain_timeout_ms", c->drain_timeout_ms, 0, 3600000, err)) < 0 ||
        (rc = check_range("shutdown_delay_ms", c->shutdown_delay_ms, 0, 3600000, err)) < 0 ||
        (rc = check_range("max_connections", c->max_connections, 1, 1 << 20, err)) < 0 ||
        (rc = check_range("connection_timeout_s", c->connection_timeout_s, 1, 86400, err)) < 0 ||
        (rc = check_range("queue_max_requests", c->queue_max_requests, 1, 1 << 24, err)) < 0 ||
        (rc = check_range("log_level", c->log_level, 3, 7, err)) < 0)
        return rc;
    if (c->target_modules && c->n_target_modules == 0)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key target_modules: empty list (use null to take the "
                               "first adapter's layers)");
    const char *bc = c->blas_coretype ? c->blas_coretype : "auto";
    if (strcmp(bc, "auto") != 0 && strcmp(bc, "keep") != 0 && !blas_core_name_valid(bc))
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key blas_coretype: unknown core \"%s\"; use \"auto\", "
                               "\"keep\" or one of %s",
                               bc, blas_core_names());
    return 0;
}

/* ---- overrides, build ---- */

static int override_str(char **dst, const char *v, bool nullable)
{
    if (!v)
        return 0;
    char *s = NULL;
    if (!(nullable && (strcmp(v, "") == 0 || strcmp(v, "null") == 0)) && !(s = strdup(v)))
        return LORAD_E_INTERNAL;
    free(*dst);
    *dst = s;
    return 0;
}

int config_apply_overrides(struct lorad_config *c, const struct config_overrides *o,
                           struct lorad_error *err)
{
    if (!o)
        return 0;
    if (override_str(&c->listen, o->listen, false) < 0 ||
        override_str(&c->control_listen, o->control_listen, true) < 0 ||
        override_str(&c->model_dir, o->model_dir, false) < 0 ||
        override_str(&c->adapter_dir, o->adapter_dir, false) < 0 ||
        override_str(&c->initial_adapter, o->initial_adapter, true) < 0 ||
        override_str(&c->state_file, o->state_file, true) < 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    if (o->workers >= 0)
        c->workers = o->workers;
    if (o->log_level) {
        int l = log_level_parse(o->log_level);
        if (l < 0)
            return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                                   "--log-level: expected error, warning, notice, info or debug");
        c->log_level = l;
    }
    return 0;
}

/* "workers": 0 is one thread per online CPU, at most 1024. */
static void resolve_workers(struct lorad_config *c)
{
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 ? (int)(n > 1024 ? 1024 : n) : 1;
    }
}

int config_build(struct lorad_config *c, const char *path, const struct config_overrides *o,
                 struct lorad_error *err)
{
    int rc;
    config_defaults(c);
    if (!c->listen || !c->blas_coretype) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    if (path && (rc = config_load_file(c, path, err)) < 0)
        goto fail;
    if ((rc = config_apply_overrides(c, o, err)) < 0 || (rc = config_validate(c, err)) < 0)
        goto fail;
    resolve_workers(c);
    return 0;
fail:
    config_free(c);
    return rc;
}

/* ---- the token file ---- */

int config_read_token(const char *path, char **out, struct lorad_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_secret(path, TOKEN_FILE_MAX, &text, &len, err);
    if (rc < 0) {
        lorad_error_prefix(err, "auth_token_file");
        return rc;
    }
    if (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    if (len > 0 && text[len - 1] == '\r')
        text[--len] = '\0';
    if (len == 0) {
        free(text);
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "auth_token_file %s: empty", path);
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] <= 0x20 || (unsigned char)text[i] >= 0x7f) {
            free(text);
            return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                                   "auth_token_file %s: the token must be printable ASCII "
                                   "without spaces (only one trailing newline is ignored)",
                                   path);
        }
    *out = text;
    return 0;
}
