/* lorad — client/loradctl.c: loradctl, the operator's control client for
 * lorad (SPEC.md 11), as knotc or unbound-control are for their daemons.
 *
 * This file contains the command line: option parsing, one table row per
 * command (its synopsis, help, options and handler), finding the daemon
 * (lorad's config file, or --url / --socket) and the token, sending the
 * request through client/api.c, and mapping the outcome to the exit
 * status. Human output lives in client/ctlout.c; with --json the server's
 * answer body is printed unchanged.
 *
 * Invariants:
 * - The exit status says what happened: 0 done, 1 refused by lorad (4xx;
 *   the error code and message are printed), 2 server error (5xx and any
 *   other non-2xx answer), 3 no usable answer (unreachable, timeout, not
 *   lorad's JSON), 64 usage (bad arguments, unreadable config or token
 *   file: nothing was sent).
 * - A request carries "slot" only when --slot was given, so loradctl
 *   works unchanged against a lorad that predates slots.
 * - The token goes only to the control plane, in a header, never to the
 *   data plane (/infer) and never on the command line of another process.
 * - Global options may come before or after the command.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "ctlout.h"
#include "../lib/fileio.h"

/* The lorad release this client belongs to (daemon/lorad.h LORAD_VERSION). */
#define LORADCTL_VERSION "0.1.0"
#define LORADCTL_DEFAULT_CONFIG "/etc/lorad/lorad.json"
#define LORADCTL_ROWS_MAX (256u << 20)
#define LORADCTL_POS_MAX 4

enum ctl_exit {
    CTL_DONE = 0,
    CTL_REFUSED = 1,
    CTL_SERVER = 2,
    CTL_UNREACHABLE = 3,
    CTL_USAGE = 64,
};

/* Options; the command ones are a bit mask in each command's row. */
enum ctl_opt {
    OPT_CONFIG,
    OPT_URL,
    OPT_SOCKET,
    OPT_TOKEN_FILE,
    OPT_JSON,
    OPT_TIMEOUT,
    OPT_HELP,
    OPT_VERSION,
    OPT_SLOT,
    OPT_CANARY,
    OPT_SHA256,
    OPT_TO,
};
#define OPT_BIT(o) (1u << (o))
#define OPT_GLOBAL (OPT_BIT(OPT_SLOT) - 1)

struct ctl_optdef {
    const char *name; /* long name without "--" */
    char short_name;  /* 0: none */
    bool has_arg;
    enum ctl_opt id;
};

static const struct ctl_optdef ctl_optdefs[] = {
    {"config", 'c', true, OPT_CONFIG}, {"url", 0, true, OPT_URL},
    {"socket", 0, true, OPT_SOCKET},   {"token-file", 0, true, OPT_TOKEN_FILE},
    {"json", 0, false, OPT_JSON},      {"timeout", 0, true, OPT_TIMEOUT},
    {"help", 'h', false, OPT_HELP},    {"version", 'V', false, OPT_VERSION},
    {"slot", 0, true, OPT_SLOT},       {"canary", 0, true, OPT_CANARY},
    {"sha256", 0, true, OPT_SHA256},   {"to", 0, true, OPT_TO},
};
#define CTL_NOPTS (sizeof(ctl_optdefs) / sizeof(ctl_optdefs[0]))

/* Everything one run knows. */
struct ctl {
    const struct ctl_cmd *cmd;
    const char *config; /* -c, or NULL: the default when needed */
    const char *url, *socket, *token_file;
    bool json, help, version;
    double timeout_s;
    unsigned given; /* OPT_BIT of every option given */
    const char *slot, *canary, *sha256, *to;
    const char *pos[LORADCTL_POS_MAX]; /* the command's operands */
    int npos;
    struct api_client *control; /* with the token */
    struct api_client *data;    /* /infer: never the token */
};

struct ctl_cmd {
    const char *name;
    unsigned opts; /* OPT_BIT of the command options it takes */
    int min_pos, max_pos;
    const char *synopsis;
    const char *help;
    int (*run)(struct ctl *ctl);
};

static const char *ctl_prog = "loradctl";

static void ctl_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ctl_say(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", ctl_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int ctl_usage_error(const struct ctl *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int ctl_usage_error(const struct ctl *ctl, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", ctl_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s: try '%s%s%s --help'\n", ctl_prog, ctl_prog, ctl->cmd ? " " : "",
            ctl->cmd ? ctl->cmd->name : "");
    return CTL_USAGE;
}

/* ---- talking to lorad ---- */

/* Sends one request and maps the outcome to an exit status. On CTL_DONE
 * *r holds a 2xx answer whose body is JSON; otherwise the problem was
 * printed (and, with --json, an error answer's body too) and *r is empty. */
static int ctl_call(struct ctl *ctl, struct api_client *c, const char *method, const char *path,
                    const cJSON *body, struct api_resp *r)
{
    struct lorad_error err = {0};
    const char *code, *msg;
    int rc = body ? api_post_json(c, path, body, r, &err) : api_get(c, path, r, &err);
    if (rc < 0) {
        ctl_say("%s: no answer from lorad: %s", ctl->cmd->name, err.msg);
        return CTL_UNREACHABLE;
    }
    code = api_resp_error_code(r);
    msg = api_resp_error_message(r);
    if (r->status >= 200 && r->status < 300) {
        if (cJSON_IsObject(r->json))
            return CTL_DONE;
        ctl_say("%s: %s %s at %s: HTTP %ld but not lorad's JSON: %.200s", ctl->cmd->name, method,
                path, api_client_where(c), r->status, r->body);
        rc = CTL_UNREACHABLE;
    } else {
        if (ctl->json && r->json)
            printf("%s%s", r->body, r->len && r->body[r->len - 1] == '\n' ? "" : "\n");
        if (code)
            ctl_say("%s %s: HTTP %ld %s: %s", ctl->cmd->name,
                    r->status < 500 ? "refused" : "failed (server error)", r->status, code,
                    msg ? msg : "");
        else
            ctl_say("%s %s: HTTP %ld from %s: %.200s", ctl->cmd->name,
                    r->status >= 400 && r->status < 500 ? "refused" : "failed", r->status,
                    api_client_where(c), r->body);
        rc = r->status >= 400 && r->status < 500 ? CTL_REFUSED : CTL_SERVER;
    }
    api_resp_free(r);
    return rc;
}

/* The answer body, unchanged, on stdout (--json). */
static void ctl_print_body(const struct api_resp *r)
{
    fwrite(r->body, 1, r->len, stdout);
    if (!r->len || r->body[r->len - 1] != '\n')
        fputc('\n', stdout);
}

/* Sends one request through `c` and prints a 2xx answer: with --json its
 * body, else through `human`, or as a change (ctlout_change) when `human`
 * is NULL. Returns the exit status. */
static int ctl_send(struct ctl *ctl, struct api_client *c, const char *method, const char *path,
                    const cJSON *body, void (*human)(FILE *, const cJSON *))
{
    struct api_resp r;
    int rc = ctl_call(ctl, c, method, path, body, &r);
    if (rc != CTL_DONE)
        return rc;
    if (ctl->json)
        ctl_print_body(&r);
    else if (human)
        human(stdout, r.json);
    else
        ctlout_change(stdout, ctl->cmd->name, r.json, ctl->slot);
    api_resp_free(&r);
    return CTL_DONE;
}

/* GET path on the control plane, printed by `human`. */
static int ctl_show(struct ctl *ctl, const char *path, void (*human)(FILE *, const cJSON *))
{
    return ctl_send(ctl, ctl->control, "GET", path, NULL, human);
}

/* A request body with "slot" when --slot was given (NULL: out of memory). */
static cJSON *ctl_body(const struct ctl *ctl)
{
    cJSON *b = cJSON_CreateObject();
    if (b && ctl->slot && !cJSON_AddStringToObject(b, "slot", ctl->slot)) {
        cJSON_Delete(b);
        b = NULL;
    }
    return b;
}

/* POST path with `body` (consumed) on the control plane, printed as a
 * change. */
static int ctl_change(struct ctl *ctl, const char *path, cJSON *body)
{
    int rc;
    if (!body) {
        ctl_say("out of memory");
        return CTL_UNREACHABLE;
    }
    rc = ctl_send(ctl, ctl->control, "POST", path, body, NULL);
    cJSON_Delete(body);
    return rc;
}

/* ---- argument checks ---- */

/* A finite number (the server checks the range). */
static bool ctl_number(const char *s, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return *s && !*end && errno == 0 && isfinite(*v) && strpbrk(s, "xXpP") == NULL;
}

static bool ctl_version_number(const char *s, double *v)
{
    char *end;
    unsigned long long n;
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return false;
    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno || n > (1ull << 53))
        return false;
    *v = (double)n;
    return true;
}

static bool ctl_hex64(const char *s)
{
    return strlen(s) == 64 && strspn(s, "0123456789abcdefABCDEF") == 64;
}

/* ---- the commands ---- */

static int ctl_status(struct ctl *ctl)
{
    return ctl_show(ctl, "/status", ctlout_status);
}

static int ctl_adapters(struct ctl *ctl)
{
    return ctl_show(ctl, "/adapters", ctlout_adapters);
}

/* /status .slots; a lorad without slots serves one state, shown as slot
 * "default" (with --json: {"default": {its stable, canary, history,
 * profile, requests}}). */
static int ctl_slots(struct ctl *ctl)
{
    static const char *const keys[] = {"stable", "canary", "history", "profile", "requests"};
    struct api_resp r;
    const cJSON *slots;
    int rc = ctl_call(ctl, ctl->control, "GET", "/status", NULL, &r);
    if (rc != CTL_DONE)
        return rc;
    slots = cJSON_GetObjectItemCaseSensitive(r.json, "slots");
    if (!cJSON_IsObject(slots))
        ctl_say("note: this lorad reports no slots (it predates them); its one serving state "
                "is slot default");
    if (!ctl->json) {
        ctlout_slots(stdout, r.json);
    } else if (cJSON_IsObject(slots)) {
        char *text = cJSON_PrintUnformatted(slots);
        printf("%s\n", text ? text : "null");
        free(text);
    } else {
        cJSON *all = cJSON_CreateObject(), *def = cJSON_AddObjectToObject(all, "default");
        for (size_t i = 0; def && i < sizeof(keys) / sizeof(keys[0]); i++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(r.json, keys[i]);
            if (v)
                cJSON_AddItemToObject(def, keys[i], cJSON_Duplicate(v, 1));
        }
        char *text = cJSON_PrintUnformatted(all);
        printf("%s\n", text ? text : "null");
        free(text);
        cJSON_Delete(all);
    }
    api_resp_free(&r);
    return CTL_DONE;
}

static int ctl_swap(struct ctl *ctl)
{
    cJSON *b;
    double p = 0;
    if (ctl->canary && !ctl_number(ctl->canary, &p))
        return ctl_usage_error(ctl, "--canary: not a number: %s", ctl->canary);
    if (ctl->sha256 && !ctl_hex64(ctl->sha256))
        return ctl_usage_error(ctl, "--sha256: not 64 hex digits: %s", ctl->sha256);
    b = ctl_body(ctl);
    if (b && (!cJSON_AddStringToObject(b, "adapter", ctl->pos[0]) ||
              (ctl->canary && !cJSON_AddNumberToObject(b, "canary_percent", p)) ||
              (ctl->sha256 && !cJSON_AddStringToObject(b, "sha256", ctl->sha256)))) {
        cJSON_Delete(b);
        b = NULL;
    }
    return ctl_change(ctl, "/swap", b);
}

static int ctl_rollback(struct ctl *ctl)
{
    cJSON *b;
    double v = 0;
    if (ctl->to && !ctl_version_number(ctl->to, &v))
        return ctl_usage_error(ctl, "--to: not a version number: %s", ctl->to);
    b = ctl_body(ctl);
    if (b && ctl->to && !cJSON_AddNumberToObject(b, "version", v)) {
        cJSON_Delete(b);
        b = NULL;
    }
    return ctl_change(ctl, "/rollback", b);
}

static int ctl_canary(struct ctl *ctl)
{
    cJSON *b;
    double p;
    if (!ctl_number(ctl->pos[0], &p))
        return ctl_usage_error(ctl, "canary: P is not a number: %s", ctl->pos[0]);
    b = ctl_body(ctl);
    if (b && !cJSON_AddNumberToObject(b, "percent", p)) {
        cJSON_Delete(b);
        b = NULL;
    }
    return ctl_change(ctl, "/canary", b);
}

static int ctl_promote(struct ctl *ctl)
{
    return ctl_change(ctl, "/promote", ctl_body(ctl));
}

static int ctl_unload(struct ctl *ctl)
{
    if (!ctl->slot)
        return ctl_usage_error(ctl, "unload: --slot S is required");
    return ctl_change(ctl, "/unload", ctl_body(ctl));
}

/* A non-empty array of numbers. */
static bool ctl_numbers(const cJSON *row)
{
    const cJSON *v;
    if (!cJSON_IsArray(row) || !row->child)
        return false;
    cJSON_ArrayForEach(v, row)
    {
        if (!cJSON_IsNumber(v))
            return false;
    }
    return true;
}

/* ROWS.json: an array of rows (arrays of numbers), or one row (an array of
 * numbers). Returns the /infer body (without "slot"), or NULL with *why. */
static cJSON *ctl_rows_body(cJSON *rows, const char **why)
{
    const cJSON *e;
    bool one = cJSON_IsArray(rows) && cJSON_IsNumber(rows->child);
    cJSON *b;
    *why = "not a JSON array of rows, nor one row of numbers";
    if (!cJSON_IsArray(rows) || !rows->child)
        return NULL;
    cJSON_ArrayForEach(e, rows)
    {
        if (one ? !cJSON_IsNumber(e) : !ctl_numbers(e))
            return NULL;
    }
    b = cJSON_CreateObject();
    *why = "out of memory";
    if (b && !cJSON_AddItemToObject(b, one ? "input" : "inputs", rows)) {
        cJSON_Delete(b);
        return NULL;
    }
    return b;
}

static int ctl_infer(struct ctl *ctl)
{
    const char *why = NULL;
    char *text = NULL;
    size_t len = 0;
    cJSON *rows, *b;
    int rc = fileio_read_path(ctl->pos[0], LORADCTL_ROWS_MAX, &text, &len);
    if (rc < 0)
        return ctl_usage_error(ctl, "infer: %s: %s", ctl->pos[0], fileio_strerror(rc));
    rows = strlen(text) == len ? cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1) : NULL;
    free(text);
    b = ctl_rows_body(rows, &why);
    if (!b) {
        cJSON_Delete(rows);
        return ctl_usage_error(ctl, "infer: %s: %s", ctl->pos[0], why);
    }
    if (ctl->slot && !cJSON_AddStringToObject(b, "slot", ctl->slot)) {
        cJSON_Delete(b);
        ctl_say("out of memory");
        return CTL_UNREACHABLE;
    }
    rc = ctl_send(ctl, ctl->data, "POST", "/infer", b, ctlout_infer);
    cJSON_Delete(b);
    return rc;
}

#define SLOT_OPT                                                                                   \
    "  --slot S        act on slot S (default: the default slot; sent only when given)\n"

static const struct ctl_cmd ctl_cmds[] = {
    {"status", 0, 0, 0, "status",
     "Shows what lorad serves: state, uptime, generation, whether the state file was\n"
     "restored; per slot the stable snapshot (adapter@version and rank), the canary and\n"
     "its percent, the history (newest first) and the request evidence; the swap counts.\n",
     ctl_status},
    {"slots", 0, 0, 0, "slots",
     "One line per slot: stable snapshot and rank, canary and percent, history length\n"
     "(from GET /status .slots; a lorad without slots shows its one state as default).\n",
     ctl_slots},
    {"adapters", 0, 0, 0, "adapters",
     "The adapter directories lorad finds: rank, alpha, the slots serving each, and\n"
     "whether each is compatible with the default slot's profile (and why not).\n",
     ctl_adapters},
    {"swap", OPT_BIT(OPT_SLOT) | OPT_BIT(OPT_CANARY) | OPT_BIT(OPT_SHA256), 1, 1,
     "swap ADAPTER [--slot S] [--canary P] [--sha256 HEX]",
     "Stages ADAPTER (a directory under lorad's adapter_dir) and makes it stable, the\n"
     "old stable going to history; with --canary, makes it the canary at P%. Answers\n"
     "once the change is committed and durable.\n" SLOT_OPT
     "  --canary P      serve ADAPTER as a canary to P% of the traffic (0..100)\n"
     "  --sha256 HEX    refuse unless adapter_model.safetensors has this sha256\n",
     ctl_swap},
    {"rollback", OPT_BIT(OPT_SLOT) | OPT_BIT(OPT_TO), 0, 0, "rollback [--slot S] [--to VERSION]",
     "Aborts the live canary; without one, makes the newest history snapshot stable\n"
     "again (repeat to walk back). No adapter file is read.\n" SLOT_OPT
     "  --to VERSION    make that retained version stable (0: the base model alone),\n"
     "                  dropping every newer one\n",
     ctl_rollback},
    {"canary", OPT_BIT(OPT_SLOT), 1, 1, "canary P [--slot S]",
     "Changes the live canary's share of the traffic to P% (0..100).\n" SLOT_OPT, ctl_canary},
    {"promote", OPT_BIT(OPT_SLOT), 0, 0, "promote [--slot S]",
     "Makes the canary stable (it keeps its version); the old stable goes to history.\n" SLOT_OPT,
     ctl_promote},
    {"unload", OPT_BIT(OPT_SLOT), 0, 0, "unload --slot S",
     "Removes slot S with its stable, canary and history (not default: roll it back\n"
     "to version 0 instead).\n"
     "  --slot S        the slot to remove (required)\n",
     ctl_unload},
    {"infer", OPT_BIT(OPT_SLOT), 1, 1, "infer [--slot S] ROWS.json",
     "Runs rows through the model on lorad's data plane (the config's \"listen\", or\n"
     "--url/--socket) and prints one line of outputs per row after a '#' line naming\n"
     "the slot, adapter@version and variant that answered. ROWS.json holds a JSON\n"
     "array of rows, [[x, ...], ...], or one row, [x, ...]; each row has the model's\n"
     "in_features numbers. No token is sent.\n" SLOT_OPT,
     ctl_infer},
};
#define CTL_NCMDS (sizeof(ctl_cmds) / sizeof(ctl_cmds[0]))

static void ctl_usage(FILE *out)
{
    fprintf(out, "usage: loradctl [options] COMMAND [command options]\n"
                 "Controls a running lorad daemon (serving state, swaps, canaries, slots).\n\n"
                 "commands:\n");
    for (size_t i = 0; i < CTL_NCMDS; i++)
        fprintf(out, "  %s\n", ctl_cmds[i].synopsis);
    fprintf(out,
            "\noptions (before or after the command):\n"
            "  -c, --config FILE   lorad's config: control address (control_listen, else\n"
            "                      listen) and auth_token_file (default " LORADCTL_DEFAULT_CONFIG
            ")\n"
            "      --url URL       talk to this base URL instead (e.g. http://127.0.0.1:8080)\n"
            "      --socket PATH   talk over this unix socket instead\n"
            "      --token-file F  bearer token file (default: the config's auth_token_file)\n"
            "      --json          print lorad's JSON answer unchanged\n"
            "      --timeout S     seconds to wait for an answer (default 30)\n"
            "  -h, --help          this text; 'loradctl COMMAND --help' for a command\n"
            "  -V, --version       print the version\n\n"
            "exit status: 0 done, 1 refused by lorad (4xx), 2 server error (5xx),\n"
            "3 no answer (unreachable, timeout), 64 usage error. See loradctl(1).\n");
}

static void ctl_cmd_usage(const struct ctl_cmd *cmd)
{
    printf("usage: loradctl [options] %s\n\n%s\nSee 'loradctl --help' for the options every "
           "command takes.\n",
           cmd->synopsis, cmd->help);
}

/* ---- the command line ---- */

static const struct ctl_optdef *ctl_find_opt(const char *arg, const char **value)
{
    *value = NULL;
    if (arg[1] != '-') {
        for (size_t i = 0; i < CTL_NOPTS; i++)
            if (ctl_optdefs[i].short_name && arg[1] == ctl_optdefs[i].short_name) {
                *value = arg[2] ? arg + 2 : NULL;
                return &ctl_optdefs[i];
            }
        return NULL;
    }
    for (size_t i = 0; i < CTL_NOPTS; i++) {
        size_t n = strlen(ctl_optdefs[i].name);
        if (strncmp(arg + 2, ctl_optdefs[i].name, n) == 0 &&
            (arg[2 + n] == '\0' || arg[2 + n] == '=')) {
            *value = arg[2 + n] == '=' ? arg + 3 + n : NULL;
            return &ctl_optdefs[i];
        }
    }
    return NULL;
}

static void ctl_set_opt(struct ctl *ctl, enum ctl_opt id, const char *v)
{
    ctl->given |= OPT_BIT(id);
    switch (id) {
    case OPT_CONFIG:
        ctl->config = v;
        break;
    case OPT_URL:
        ctl->url = v;
        break;
    case OPT_SOCKET:
        ctl->socket = v;
        break;
    case OPT_TOKEN_FILE:
        ctl->token_file = v;
        break;
    case OPT_JSON:
        ctl->json = true;
        break;
    case OPT_HELP:
        ctl->help = true;
        break;
    case OPT_VERSION:
        ctl->version = true;
        break;
    case OPT_SLOT:
        ctl->slot = v;
        break;
    case OPT_CANARY:
        ctl->canary = v;
        break;
    case OPT_SHA256:
        ctl->sha256 = v;
        break;
    case OPT_TO:
        ctl->to = v;
        break;
    case OPT_TIMEOUT:
        if (!ctl_number(v, &ctl->timeout_s))
            ctl->timeout_s = -1; /* refused by ctl_check */
        break;
    }
}

static const struct ctl_cmd *ctl_find_cmd(const char *name)
{
    for (size_t i = 0; i < CTL_NCMDS; i++)
        if (strcmp(ctl_cmds[i].name, name) == 0)
            return &ctl_cmds[i];
    return NULL;
}

/* One operand: the command name first, then its operands. */
static int ctl_operand(struct ctl *ctl, const char *arg)
{
    if (!ctl->cmd) {
        ctl->cmd = ctl_find_cmd(arg);
        return ctl->cmd ? 0 : ctl_usage_error(ctl, "unknown command: %s", arg);
    }
    if (ctl->npos == LORADCTL_POS_MAX)
        return ctl_usage_error(ctl, "%s: too many arguments", ctl->cmd->name);
    ctl->pos[ctl->npos++] = arg;
    return 0;
}

static int ctl_parse(struct ctl *ctl, int argc, char **argv)
{
    bool operands_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        const struct ctl_optdef *o;
        int rc;
        if (operands_only || a[0] != '-' || a[1] == '\0') {
            if ((rc = ctl_operand(ctl, a)) != 0)
                return rc;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            operands_only = true;
            continue;
        }
        if (!(o = ctl_find_opt(a, &v)))
            return ctl_usage_error(ctl, "unknown option: %s", a);
        if (o->has_arg && !v) {
            if (i + 1 >= argc)
                return ctl_usage_error(ctl, "%s needs a value", a);
            v = argv[++i];
        } else if (!o->has_arg && v) {
            return ctl_usage_error(ctl, "--%s takes no value", o->name);
        }
        ctl_set_opt(ctl, o->id, v);
    }
    return 0;
}

/* Options and operands against the command's row. */
static int ctl_check(struct ctl *ctl)
{
    unsigned extra = ctl->given & ~OPT_GLOBAL & ~ctl->cmd->opts;
    for (size_t i = 0; extra && i < CTL_NOPTS; i++)
        if (extra & OPT_BIT(ctl_optdefs[i].id))
            return ctl_usage_error(ctl, "%s: no option --%s", ctl->cmd->name, ctl_optdefs[i].name);
    if (ctl->npos < ctl->cmd->min_pos)
        return ctl_usage_error(ctl, "%s: missing argument (usage: loradctl %s)", ctl->cmd->name,
                               ctl->cmd->synopsis);
    if (ctl->npos > ctl->cmd->max_pos)
        return ctl_usage_error(ctl, "%s: unexpected argument: %s", ctl->cmd->name,
                               ctl->pos[ctl->cmd->max_pos]);
    if ((ctl->given & OPT_BIT(OPT_TIMEOUT)) && !(ctl->timeout_s > 0 && ctl->timeout_s <= 86400))
        return ctl_usage_error(ctl, "--timeout: not a number of seconds in (0, 86400]");
    if (ctl->slot && !ctl->slot[0])
        return ctl_usage_error(ctl, "--slot: empty slot name");
    return 0;
}

/* ---- finding lorad ---- */

static struct api_client *ctl_client(const struct ctl *ctl, const char *url, const char *socket,
                                     const char *token)
{
    struct lorad_error err = {0};
    struct api_conf conf = {
        .url = url, .socket = socket, .token = token, .timeout_ms = (long)(ctl->timeout_s * 1000)};
    struct api_client *c = api_client_new(&conf, &err);
    if (!c)
        ctl_say("%s", err.msg);
    return c;
}

/* The control and data clients, from --url/--socket or the config file,
 * the token from --token-file or the config's auth_token_file. */
static int ctl_connect(struct ctl *ctl)
{
    struct api_target t = {0};
    struct lorad_error err = {0};
    const char *token_file = ctl->token_file;
    char *token = NULL;
    bool explicit = ctl->url || ctl->socket;
    int rc = CTL_USAGE;

    if (ctl->config || !explicit) {
        const char *path = ctl->config ? ctl->config : LORADCTL_DEFAULT_CONFIG;
        if (api_config_read(path, &t, &err) < 0) {
            ctl_say("%s%s", err.msg, ctl->config ? "" : " (give -c FILE, --url or --socket)");
            goto fail;
        }
        if (!token_file)
            token_file = t.token_file;
    }
    if (token_file && api_token_read(token_file, &token, &err) < 0) {
        ctl_say("%s", err.msg);
        goto fail;
    }
    if (explicit) {
        ctl->control = ctl_client(ctl, ctl->url, ctl->socket, token);
        ctl->data = ctl_client(ctl, ctl->url, ctl->socket, NULL);
    } else {
        ctl->control = ctl_client(ctl, t.control_url, t.control_socket, token);
        ctl->data = ctl_client(ctl, t.data_url, t.data_socket, NULL);
    }
    if (ctl->control && ctl->data)
        rc = 0;
fail:
    if (token)
        memset(token, 0, strlen(token));
    free(token);
    api_target_free(&t);
    return rc;
}

int main(int argc, char **argv)
{
    struct ctl ctl = {.timeout_s = API_DEFAULT_TIMEOUT_MS / 1000.0};
    struct lorad_error err = {0};
    int rc = ctl_parse(&ctl, argc, argv);
    if (rc != 0)
        return rc;
    if (ctl.version) {
        printf("loradctl %s\n", LORADCTL_VERSION);
        return CTL_DONE;
    }
    if (ctl.help) {
        if (ctl.cmd)
            ctl_cmd_usage(ctl.cmd);
        else
            ctl_usage(stdout);
        return CTL_DONE;
    }
    if (!ctl.cmd) {
        ctl_usage(stderr);
        return CTL_USAGE;
    }
    if ((rc = ctl_check(&ctl)) != 0)
        return rc;
    if (api_global_init(&err) < 0) {
        ctl_say("%s", err.msg);
        return CTL_UNREACHABLE;
    }
    rc = ctl_connect(&ctl);
    if (rc == 0)
        rc = ctl.cmd->run(&ctl);
    api_client_free(&ctl.control);
    api_client_free(&ctl.data);
    api_global_cleanup();
    return rc;
}
