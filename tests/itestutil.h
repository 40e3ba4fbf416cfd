/* lorad — tests/itestutil.h: the harness of the integration tests
 * (tests/itest_*.c), which drive the real daemon binary over HTTP.
 *
 * It provides: a per-binary scratch directory with one demo tree written by
 * `lorad-mkdemo` (itu_init / itu_cleanup, called from each itest's main,
 * outside the forked test cases); starting and stopping `lorad` with a
 * config written per test on a free loopback port; HTTP over libcurl; small
 * cJSON accessors; and an INDEPENDENT reference: the demo model and adapter
 * files are parsed here (raw safetensors + adapter_config.json, nothing from
 * lib/) and the expected outputs come from testutil's double-precision
 * tu_ref_forward.
 *
 * Errors of the test environment (a binary missing, a file unreadable)
 * abort the current test with ck_abort_msg. Every itu_ name here is unique
 * because this file is linked into every test binary.
 *
 * Ownership: functions returning pointers return malloc'd memory the caller
 * frees with the matching itu_*_free (or free() for plain buffers).
 * Threads: the HTTP client functions may be used from any thread, one
 * itu_client per thread; everything else from the test's main thread.
 */
#ifndef LORAD_ITESTUTIL_H
#define LORAD_ITESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "testutil.h"

/* ---- per-binary setup (main thread, before/after srunner_run_all) ---- */

/* curl_global_init, a scratch root under $TMPDIR, and `MKDEMO_BIN ROOT/demo`
 * (default build/lorad-mkdemo). Exits the process with a message when the
 * demo cannot be written. */
void itu_init(void);
/* srunner_run_all(s, CK_NORMAL) with the harness in test mode (inside
 * test cases failures go through ck_abort_msg; outside, in main, they
 * print and exit(2)). Returns the number of failed tests; frees the
 * runner (and with it the suite). */
int itu_run_suite(Suite *s);
/* Removes the scratch root; curl_global_cleanup. */
void itu_cleanup(void);
/* ROOT, ROOT/demo, ROOT/demo/model, ROOT/demo/adapters. */
const char *itu_root(void);
const char *itu_demo_dir(void);
const char *itu_model_dir(void);
const char *itu_adapters_dir(void);
/* $LORAD_BIN or build/lorad. */
const char *itu_lorad_bin(void);
/* A fresh directory under ROOT (malloc'd path). */
char *itu_tmpdir(void);
/* Lowercase hex sha256 of a file, computed by `sha256sum` (malloc'd). */
char *itu_sha256_file(const char *path);
/* A free loopback TCP port (bind 127.0.0.1:0, read it, close). */
int itu_free_port(void);

/* ---- the daemon ---- */

struct itu_daemon {
    pid_t pid; /* 0 once reaped */
    int port;
    char *dir;                 /* its directory: config, log, state file */
    char *config_path;         /* dir/lorad.json */
    char *log_path;            /* dir/lorad.log (the daemon's stdout+stderr) */
    char *state_path;          /* dir/state.json (unless overridden) */
    struct itu_client *client; /* for itu_req and friends (main thread); TCP
                                * or the unix socket of "listen" */
};

/* Writes dir/lorad.json: the harness defaults (listen 127.0.0.1:<free
 * port>, the demo model and adapters, initial_adapter demo-a, state_file
 * dir/state.json, workers 2, history 4, max_rank 16, target_modules every
 * model layer, log_level info) with `overrides` (the text of a JSON object,
 * or NULL) applied: each key replaces the default, a null value removes
 * it. *port gets the port of "listen" (a free port, unused, when listen is
 * "unix:..."). Returns the config path. */
char *itu_config_write(const char *dir, const char *overrides, int *port);

/* Writes the config (as above) into `dir` (NULL: a fresh directory), starts
 * `lorad --config dir/lorad.json` with stdout+stderr to dir/lorad.log, and
 * waits up to 10 s for GET /readyz 200. Aborts the test with the log tail
 * when the daemon exits or does not get ready. The daemon is killed when
 * the calling test process dies (PR_SET_PDEATHSIG). */
struct itu_daemon *itu_daemon_start(const char *dir, const char *overrides);
/* A new client for the daemon's "listen" address (TCP or unix:). */
struct itu_client *itu_daemon_client(const struct itu_daemon *d);
/* SIGTERM, then waits up to `timeout_ms` for the exit. Returns the exit
 * status (0..255), 128+N when killed by signal N, or -1 on timeout (then
 * the daemon is SIGKILLed). */
int itu_daemon_stop(struct itu_daemon *d, int timeout_ms);
/* SIGKILL and reap. */
void itu_daemon_kill(struct itu_daemon *d);
/* Sends a signal without waiting. */
void itu_daemon_signal(struct itu_daemon *d, int sig);
/* Waits for the exit (after a signal): like itu_daemon_stop. */
int itu_daemon_wait(struct itu_daemon *d, int timeout_ms);
/* Kills the daemon if still running, frees the struct (keeps its dir:
 * ROOT is removed by itu_cleanup). Sets *d to NULL. */
void itu_daemon_free(struct itu_daemon **d);
/* The last `max` bytes of the daemon's log, for failure messages
 * (thread-local static buffer). */
const char *itu_log_tail(const struct itu_daemon *d, size_t max);

/* Runs `argv` (argv[0] the program) with stdout+stderr captured; returns
 * the exit status (128+N on signal) and *output (malloc'd) the text. */
int itu_run(char *const argv[], char **output);

/* ---- HTTP ---- */

struct itu_resp {
    long status; /* 0: no HTTP answer (see err) */
    char *body;  /* NUL-terminated */
    size_t len;
    char *headers; /* the raw header block of the final response */
    cJSON *json;   /* the body parsed, when it is JSON, else NULL */
    char err[256]; /* libcurl's error text when status is 0 */
};

struct itu_client;
/* One keep-alive connection's worth of libcurl state for 127.0.0.1:port. */
struct itu_client *itu_client_new(int port);
/* The same over the unix socket at `path` ("listen": "unix:/path"). */
struct itu_client *itu_client_new_unix(const char *path);
void itu_client_free(struct itu_client **c);
/* Sends one request. `headers`: NULL or a NULL-terminated list of
 * "Name: value" strings. `ctype` NULL: no Content-Type. `timeout_ms` 0:
 * 30 s. Fills *out (free with itu_resp_free); returns out->status. */
long itu_client_do(struct itu_client *c, const char *method, const char *path, const void *body,
                   size_t len, const char *ctype, const char *const *headers, int timeout_ms,
                   struct itu_resp *out);
void itu_resp_free(struct itu_resp *r);

/* Through the daemon's own client (main thread). */
long itu_req(struct itu_daemon *d, const char *method, const char *path, const void *body,
             size_t len, const char *ctype, const char *const *headers, struct itu_resp *out);
long itu_get(struct itu_daemon *d, const char *path, struct itu_resp *out);
/* POST with Content-Type: application/json. */
long itu_post(struct itu_daemon *d, const char *path, const char *json, struct itu_resp *out);

/* Header value of a response (case-insensitive name) copied into buf;
 * false when absent. */
bool itu_header(const struct itu_resp *r, const char *name, char *buf, size_t n);
/* "status N body <first 600 bytes>" for failure messages (thread-local
 * static buffer). */
const char *itu_describe(const struct itu_resp *r);
/* True when r->json is exactly {"error": {"code": STR, "message": STR}}
 * with a non-empty message; else false and *why says what is off. */
bool itu_error_shape_ok(const struct itu_resp *r, const char **why);
/* The error code string, or "" when there is none. */
const char *itu_error_code(const struct itu_resp *r);

/* ---- JSON ---- */

/* Member by dotted path ("stable.version", "history.0.adapter"; a numeric
 * component indexes an array); NULL when absent. */
cJSON *itu_jget(const cJSON *root, const char *path);
/* Number at path, or `dflt` when absent or not a number. */
double itu_jnum(const cJSON *root, const char *path, double dflt);
/* String at path, NULL when absent or not a string. */
const char *itu_jstr(const cJSON *root, const char *path);
/* Number of members of the object/array at path, -1 when absent. */
int itu_jsize(const cJSON *root, const char *path);

/* ---- request bodies ---- */

/* {"input": [...]} (rows == 1 && !batch) or {"inputs": [[...], ...]}, each
 * value printed %.9g from its f32; `extra` (NULL or text like
 * "\"variant\":\"canary\"") is appended as more members. malloc'd. */
char *itu_json_rows(const double *x, int rows, int width, bool batch, const char *extra);
/* Rows as little-endian f32 (malloc'd, rows*width*4 bytes). */
float *itu_f32_rows(const double *x, int rows, int width);
/* Output rows of a JSON /infer answer ("output" or "outputs") into out
 * (rows*width floats, null -> NaN). Returns the number of values found, or
 * -1 when the shape is not rows x width. */
int itu_json_outputs(const cJSON *json, int rows, int width, float *out);

/* ---- /infer ---- */

struct itu_infer {
    long status;
    char adapter[160]; /* "" when the answer names no adapter (base) */
    long long version; /* -1 when missing */
    char variant[16];
    float *out;        /* rows x out_width values (200 only), null -> NaN */
    int nonfinite_hdr; /* X-Lorad-Nonfinite value, 0 when absent */
    char why[768];     /* what is malformed, when itu_infer_do is false */
    struct itu_resp r;
};

/* POST /infer with `rows` rows of x (in_width each), as JSON ({"input"}
 * for one row unless `batch`, else {"inputs"}) or as binary f32. `extra`:
 * JSON members appended to the JSON body (ignored for binary); `headers`:
 * extra request headers. Returns true when the answer is 200 and well
 * formed: JSON body fields adapter/version/variant present and equal to the
 * X-Lorad-Adapter/-Version/-Variant headers (X-Lorad-Adapter absent and
 * version 0 for the base model), rows x out_width outputs; binary:
 * Content-Type application/octet-stream, exact length, the three headers.
 * Otherwise false with res->why. Free with itu_infer_free. Any thread (its
 * own client). */
bool itu_infer_do(struct itu_client *c, const double *x, int rows, int in_width, int out_width,
                  bool binary, bool batch, const char *extra, const char *const *headers,
                  struct itu_infer *res);
void itu_infer_free(struct itu_infer *res);

/* ---- the independent reference (SPEC 2, 3) ---- */

struct itu_ref_layer {
    char *name;
    int in, out;
    char act[16];
    double *W; /* [out][in] (transposed on load when fan_in_fan_out) */
    double *b; /* [out] or NULL */
};

struct itu_model {
    size_t n;
    struct itu_ref_layer *L;
    int in, out; /* of the first / last layer */
};

struct itu_adapter {
    char *name;
    size_t n;             /* == model layers */
    struct tu_lora *lora; /* [n]; lora[i].A == NULL: no LoRA on layer i */
    double **W_repl;      /* [n]: modules_to_save weight or NULL */
    double **b_repl;      /* [n]: modules_to_save bias or NULL */
};

/* Parses model_dir/config.json + model.safetensors. Aborts the test on any
 * problem (the reference only reads good files). */
struct itu_model *itu_model_load(const char *model_dir);
void itu_model_free(struct itu_model **m);
/* Parses adapter_dir/adapter_config.json (r, lora_alpha, use_rslora,
 * rank_pattern, alpha_pattern) + adapter_model.safetensors. */
struct itu_adapter *itu_adapter_load(const struct itu_model *m, const char *adapter_dir);
/* itu_adapter_load of ROOT/demo/adapters/<name>. */
struct itu_adapter *itu_demo_adapter(const struct itu_model *m, const char *name);
void itu_adapter_free(struct itu_adapter **a);
/* y[rows][m->out] = the model with adapter a (NULL: base only) on x. */
void itu_forward(const struct itu_model *m, const struct itu_adapter *a, const double *x, int rows,
                 double *y);
/* Worst |got-want| / (1e-5 + 1e-4 |want|) over n values (<= 1: match). */
double itu_match(const float *got, const double *want, size_t n);

/* n values uniform in [-1, 1), rounded to f32, from seed. malloc'd. */
double *itu_rows(uint64_t seed, int rows, int width);

/* The parsed JSON of r, taken out of it (r is freed; caller cJSON_Delete's). */
cJSON *itu_take_json(struct itu_resp *r);
/* POST path body; asserts 200 with a JSON object and returns it (caller
 * cJSON_Delete's). */
cJSON *itu_post_ok(struct itu_daemon *d, const char *path, const char *body);
/* GET /status; asserts 200 with a JSON object and returns it. */
cJSON *itu_status(struct itu_daemon *d);

#endif
