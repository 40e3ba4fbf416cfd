/* lorad — adapter.c: this file contains the PEFT LoRA adapter reader, the
 * compatibility profile and adapter_stage(), which turns an adapter
 * directory into a complete snapshot (see adapter.h for the design).
 *
 * Staging runs as a pipeline of small steps over one `struct stage`, each
 * step a check class of SPEC.md 4 in the order SPEC gives, so the first
 * failing step is the error reported: name (directory and file opening with
 * openat2 RESOLVE_BENEATH), checksum, files and safetensors validity,
 * config (peft_type, field types, compared fields), tensor names and
 * shapes, ranks, dtypes, values (conversion to f32 and the finiteness check
 * in one pass), then DoRA norms.
 *
 * Confinement is to adapter_dir, not to each adapter's own directory: the
 * directory is opened as "NAME" and its files as "NAME/FILE", all relative
 * to the adapter_dir fd, so a file may be a relative symlink to anywhere
 * inside adapter_dir (a sibling adapter, a Hugging Face cache blob) and
 * nowhere else (SPEC 6). Each file is read only through the fd that
 * confined open returned; the safetensors image is mmap()ed from that very
 * fd and validated with st_parse(), so there is no window between the
 * confinement check and the read. Because the files are opened by path, NAME
 * is checked to still be the directory first opened (same device and inode)
 * after both files are open, and everything is opened again if it was
 * renamed or relinked meanwhile (up to 3 times, then invalid_adapter), so
 * config and weights come from one version of NAME (only a swap away and
 * back between the two checks could go unseen).
 */
#include "adapter.h"
#include "fileio.h"
#include "jsontext.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "digest.h"
#include "safetensors.h"

#define CONFIG_FILE "adapter_config.json"
#define MODEL_FILE "adapter_model.safetensors"
#define PICKLE_FILE "adapter_model.bin"
#define KEY_PREFIX "base_model.model."
#define CONFIG_MAX_BYTES (4u << 20)
#define RANK_LIMIT 65536 /* largest r accepted from a config */
#define PEFT_DEFAULT_R 8
#define PEFT_DEFAULT_ALPHA 8.0

/* ---- names ---- */

static bool name_char_ok(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool adapter_name_valid(const char *name)
{
    size_t i;

    if (!name || !((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') ||
                   (name[0] >= '0' && name[0] <= '9')))
        return false;
    for (i = 1; name[i]; i++)
        if (i > 127 || !name_char_ok(name[i]))
            return false;
    return true;
}

/* ---- confined opening ----
 *
 * Every path is resolved beneath the adapter_dir fd: the adapter directory
 * as "NAME", its files as "NAME/FILE". So a symlink may point anywhere
 * inside adapter_dir (a sibling adapter's file, a Hugging Face cache blob
 * "../../blobs/<sha>") but never out of it, not even in passing through
 * "..", and never through an absolute target (openat2 RESOLVE_BENEATH cannot
 * confine one, so it refuses it even when it points inside). */

/* Whether a failed confined open means "resolves outside adapter_dir". */
static bool open_escaped(int e)
{
    return e == EXDEV || e == ELOOP;
}

/* Maps a failed O_NOFOLLOW open of `comp` in `fd` to -errno, a symlink to
 * -EXDEV (O_DIRECTORY on a symlink fails with ENOTDIR, not ELOOP). */
static int nofollow_error(int fd, const char *comp, int e)
{
    struct stat st;

    if (e == ELOOP ||
        (e == ENOTDIR && fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)))
        return -EXDEV;
    return -e;
}

/* The fallback without openat2: walks `path` one component at a time with
 * O_NOFOLLOW, so every symlink, every "." or ".." component and an absolute
 * path give -EXDEV (stricter than openat2, never looser). */
static int open_walk_nofollow(int dirfd, const char *path, int flags)
{
    int fd = dirfd;

    for (;;) {
        const char *slash = strchr(path, '/');
        size_t len = slash ? (size_t)(slash - path) : strlen(path);
        char comp[NAME_MAX + 1];
        int rc;

        if (len == 0 || len > NAME_MAX) {
            rc = len ? -ENAMETOOLONG : -EXDEV;
        } else {
            memcpy(comp, path, len);
            comp[len] = '\0';
            if (strcmp(comp, ".") == 0 || strcmp(comp, "..") == 0)
                rc = -EXDEV;
            else if ((rc = openat(fd, comp,
                                  (slash ? O_PATH | O_DIRECTORY : flags | O_NOCTTY) | O_CLOEXEC |
                                      O_NOFOLLOW)) < 0)
                rc = nofollow_error(fd, comp, errno);
        }
        if (fd != dirfd)
            close(fd);
        if (rc < 0 || !slash)
            return rc;
        fd = rc;
        path = slash + 1;
    }
}

/* Opens `path` beneath `dirfd` (symlinks only if they stay beneath it).
 * Returns an fd or -errno (-EXDEV or -ELOOP: it resolves outside). Without
 * openat2 (old kernel, seccomp) falls back to refusing every symlink. */
static int open_beneath(int dirfd, const char *path, int flags)
{
    struct open_how how;
    long fd;

    memset(&how, 0, sizeof(how));
    how.flags = (uint64_t)(flags | O_CLOEXEC | O_NOCTTY);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    if (fd >= 0)
        return (int)fd;
    if (errno != ENOSYS && errno != EPERM)
        return -errno;
    return open_walk_nofollow(dirfd, path, flags);
}

int adapter_open_dir(int adapter_dirfd, const char *name, int *dirfd_out, struct lorad_error *err)
{
    char ebuf[128];
    int fd;

    if (!dirfd_out)
        return lorad_error_set(err, LORAD_E_INTERNAL, "adapter_open_dir: bad arguments");
    *dirfd_out = -1;
    if (!adapter_name_valid(name))
        return lorad_error_set(err, LORAD_E_FORBIDDEN_NAME,
                               "adapter name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
    fd = open_beneath(adapter_dirfd, name, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        *dirfd_out = fd;
        return 0;
    }
    if (open_escaped(-fd))
        return lorad_error_set(err, LORAD_E_FORBIDDEN_NAME,
                               "adapter %s resolves outside adapter_dir", name);
    if (fd == -ENOENT || fd == -ENOTDIR)
        return lorad_error_set(err, LORAD_E_ADAPTER_NOT_FOUND,
                               "adapter %s: no such adapter directory", name);
    return lorad_error_set(err, LORAD_E_INTERNAL, "adapter %s: cannot open: %s", name,
                           strerror_r(-fd, ebuf, sizeof(ebuf)));
}

/* ---- profile ---- */

static bool prof_has_max_rank(const struct adapter_profile *p)
{
    return p->has_limits || p->has_max_rank;
}

static bool prof_has_targets(const struct adapter_profile *p)
{
    return (p->has_limits || p->has_targets) && p->targets;
}

static struct adapter_profile *profile_alloc(size_t nlayers)
{
    struct adapter_profile *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->nlayers = nlayers;
    p->targets = calloc(nlayers ? nlayers : 1, sizeof(*p->targets));
    if (!p->targets) {
        free(p);
        return NULL;
    }
    return p;
}

void adapter_profile_free(struct adapter_profile **pp)
{
    struct adapter_profile *p;

    if (!pp || !*pp)
        return;
    p = *pp;
    for (size_t i = 0; i < p->n_alpha_pattern; i++)
        free(p->alpha_pattern[i].key);
    free(p->alpha_pattern);
    free(p->targets);
    free(p);
    *pp = NULL;
}

static int patterns_copy(const struct adapter_pattern *src, size_t n, struct adapter_pattern **out)
{
    struct adapter_pattern *d;

    *out = NULL;
    if (n == 0)
        return 0;
    d = calloc(n, sizeof(*d));
    if (!d)
        return -1;
    for (size_t i = 0; i < n; i++) {
        d[i].value = src[i].value;
        if (!(d[i].key = strdup(src[i].key))) {
            for (size_t k = 0; k < i; k++)
                free(d[k].key);
            free(d);
            return -1;
        }
    }
    *out = d;
    return 0;
}

struct adapter_profile *adapter_profile_dup(const struct adapter_profile *p)
{
    struct adapter_profile *d;
    bool *targets;

    if (!p)
        return NULL;
    d = profile_alloc(p->nlayers);
    if (!d)
        return NULL;
    targets = d->targets;
    *d = *p;
    d->targets = targets;
    if (p->targets)
        memcpy(d->targets, p->targets, p->nlayers * sizeof(*d->targets));
    d->alpha_pattern = NULL;
    d->n_alpha_pattern = 0;
    if (patterns_copy(p->alpha_pattern, p->n_alpha_pattern, &d->alpha_pattern) < 0) {
        adapter_profile_free(&d);
        return NULL;
    }
    d->n_alpha_pattern = p->n_alpha_pattern;
    return d;
}

/* Marks the layers `name` designates: the layer of that exact name, else
 * every layer whose name ends in "." + name (PEFT's suffix rule). Returns
 * how many were marked. */
static size_t mark_targets(const struct model *m, const char *name, bool *targets)
{
    size_t n = 0, len = strlen(name);
    int exact = model_find_layer(m, name);

    if (exact >= 0) {
        targets[exact] = true;
        return 1;
    }
    for (size_t i = 0; i < m->nlayers; i++) {
        size_t ll = strlen(m->layers[i].name);
        if (len > 0 && ll > len && m->layers[i].name[ll - len - 1] == '.' &&
            strcmp(m->layers[i].name + ll - len, name) == 0) {
            targets[i] = true;
            n++;
        }
    }
    return n;
}

int adapter_profile_from_config(const struct model *m, int max_rank,
                                const char *const *target_modules, size_t n_targets,
                                struct adapter_profile **out, struct lorad_error *err)
{
    struct adapter_profile *p;

    if (!m || !out || max_rank < 0 || (n_targets > 0 && !target_modules))
        return lorad_error_set(err, LORAD_E_INTERNAL, "adapter_profile_from_config: bad arguments");
    *out = NULL;
    if (!(p = profile_alloc(m->nlayers)))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    if (max_rank > 0) {
        p->has_max_rank = true;
        p->max_rank = max_rank;
        p->max_rank_from_config = true;
    }
    if (target_modules) {
        for (size_t i = 0; i < n_targets; i++) {
            if (!target_modules[i] || mark_targets(m, target_modules[i], p->targets) == 0) {
                lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                                "target_modules: \"%s\" is not a layer of the model",
                                target_modules[i] ? target_modules[i] : "(null)");
                adapter_profile_free(&p);
                return LORAD_E_INVALID_CONFIG;
            }
        }
        p->has_targets = true;
    }
    p->has_limits = p->has_max_rank && p->has_targets;
    *out = p;
    return 0;
}

cJSON *adapter_profile_to_json(const struct adapter_profile *p, const struct model *m)
{
    cJSON *o, *t, *ap;
    bool rank_known, targets_known;

    if (!p)
        return cJSON_CreateNull();
    rank_known = prof_has_max_rank(p);
    targets_known = prof_has_targets(p);
    if (!rank_known && !targets_known && !p->has_fields)
        return cJSON_CreateNull();
    if (!(o = cJSON_CreateObject()))
        return NULL;
    if (!cJSON_AddItemToObject(o, "max_rank",
                               rank_known ? cJSON_CreateNumber(p->max_rank) : cJSON_CreateNull()))
        goto fail;
    if (targets_known) {
        if (!(t = cJSON_AddArrayToObject(o, "target_modules")))
            goto fail;
        for (size_t i = 0; i < p->nlayers && m && i < m->nlayers; i++)
            if (p->targets[i] && !cJSON_AddItemToArray(t, cJSON_CreateString(m->layers[i].name)))
                goto fail;
    } else if (!cJSON_AddNullToObject(o, "target_modules")) {
        goto fail;
    }
    if (p->has_fields) {
        if (!cJSON_AddBoolToObject(o, "use_rslora", p->use_rslora) ||
            !cJSON_AddBoolToObject(o, "use_dora", p->use_dora) ||
            !cJSON_AddNumberToObject(o, "lora_dropout", p->lora_dropout) ||
            !(ap = cJSON_AddObjectToObject(o, "alpha_pattern")))
            goto fail;
        for (size_t i = 0; i < p->n_alpha_pattern; i++)
            if (!cJSON_AddNumberToObject(ap, p->alpha_pattern[i].key, p->alpha_pattern[i].value))
                goto fail;
    } else if (!cJSON_AddNullToObject(o, "use_rslora") || !cJSON_AddNullToObject(o, "use_dora") ||
               !cJSON_AddNullToObject(o, "lora_dropout") ||
               !cJSON_AddNullToObject(o, "alpha_pattern")) {
        goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static int pj_fail(struct adapter_profile **p, struct lorad_error *err, const char *field)
{
    adapter_profile_free(p);
    return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "%s: wrong type or value", field);
}

static int profile_fields_from_json(const cJSON *j, struct adapter_profile *p,
                                    struct lorad_error *err)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "use_rslora");
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(j, "use_dora");
    const cJSON *dp = cJSON_GetObjectItemCaseSensitive(j, "lora_dropout");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(j, "alpha_pattern");
    const cJSON *it;
    size_t n = 0;

    if ((!rs || cJSON_IsNull(rs)) && (!dr || cJSON_IsNull(dr)) && (!dp || cJSON_IsNull(dp)) &&
        (!ap || cJSON_IsNull(ap)))
        return 0;
    if (!cJSON_IsBool(rs) || !cJSON_IsBool(dr) || !cJSON_IsNumber(dp) ||
        !isfinite(dp->valuedouble) || !cJSON_IsObject(ap))
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "use_rslora, use_dora, lora_dropout, alpha_pattern: wrong types");
    p->use_rslora = cJSON_IsTrue(rs);
    p->use_dora = cJSON_IsTrue(dr);
    p->lora_dropout = dp->valuedouble;
    cJSON_ArrayForEach(it, ap) n++;
    if (n > 0 && !(p->alpha_pattern = calloc(n, sizeof(*p->alpha_pattern))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    cJSON_ArrayForEach(it, ap)
    {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || !it->string)
            return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "alpha_pattern: wrong type");
        if (!(p->alpha_pattern[p->n_alpha_pattern].key = strdup(it->string)))
            return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        p->alpha_pattern[p->n_alpha_pattern++].value = it->valuedouble;
    }
    p->has_fields = true;
    return 0;
}

int adapter_profile_from_json(const cJSON *j, const struct model *m, struct adapter_profile **out,
                              struct lorad_error *err)
{
    struct adapter_profile *p;
    const cJSON *mr, *tm, *it;
    int rc;

    if (!m || !out)
        return lorad_error_set(err, LORAD_E_INTERNAL, "adapter_profile_from_json: bad arguments");
    *out = NULL;
    if (!(p = profile_alloc(m->nlayers)))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    if (!j || cJSON_IsNull(j)) {
        *out = p;
        return 0;
    }
    if (!cJSON_IsObject(j))
        return pj_fail(&p, err, "profile");
    mr = cJSON_GetObjectItemCaseSensitive(j, "max_rank");
    if (mr && !cJSON_IsNull(mr)) {
        if (!cJSON_IsNumber(mr) || mr->valuedouble < 1 || mr->valuedouble > RANK_LIMIT ||
            mr->valuedouble != floor(mr->valuedouble))
            return pj_fail(&p, err, "max_rank");
        p->max_rank = (int)mr->valuedouble;
        p->has_max_rank = true;
    }
    tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    if (tm && !cJSON_IsNull(tm)) {
        if (!cJSON_IsArray(tm))
            return pj_fail(&p, err, "target_modules");
        cJSON_ArrayForEach(it, tm)
        {
            int idx = cJSON_IsString(it) ? model_find_layer(m, it->valuestring) : -1;
            if (idx < 0) {
                adapter_profile_free(&p);
                return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                                       "target_modules: \"%s\" is not a layer of the model",
                                       cJSON_IsString(it) ? it->valuestring : "(not a string)");
            }
            p->targets[idx] = true;
        }
        p->has_targets = true;
    }
    p->has_limits = p->has_max_rank && p->has_targets;
    if ((rc = profile_fields_from_json(j, p, err)) < 0) {
        adapter_profile_free(&p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- adapter config ---- */

struct pattern {
    char *key;
    double value;
    regex_t re;
    bool compiled;
};

struct adapter_config {
    bool parsed; /* every field below valid */
    int r;
    double lora_alpha;
    bool use_rslora, use_dora, lora_bias;
    double lora_dropout;
    size_t n_rank, n_alpha;
    struct pattern *rank_pattern, *alpha_pattern;
};

static void patterns_free(struct pattern *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i].compiled)
            regfree(&p[i].re);
        free(p[i].key);
    }
    free(p);
}

static void config_free(struct adapter_config *c)
{
    patterns_free(c->rank_pattern, c->n_rank);
    patterns_free(c->alpha_pattern, c->n_alpha);
    memset(c, 0, sizeof(*c));
}

static int cfg_bad(struct lorad_error *err, const char *field, const char *want)
{
    return lorad_error_set(err, LORAD_E_INVALID_ADAPTER, CONFIG_FILE ": %s must be %s", field,
                           want);
}

/* A bool field; missing or null = PEFT's default false. */
static int cfg_bool(const cJSON *root, const char *field, bool *out, struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);

    *out = false;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return cfg_bad(err, field, "true or false");
    *out = cJSON_IsTrue(v);
    return 0;
}

static int cfg_number(const cJSON *root, const char *field, double dflt, double *out,
                      struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);

    *out = dflt;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return cfg_bad(err, field, "a finite number");
    *out = v->valuedouble;
    return 0;
}

static bool is_rank_value(double v)
{
    return isfinite(v) && v >= 1 && v <= RANK_LIMIT && v == floor(v);
}

/* glibc's regcomp copies a subexpression once per count of a bounded
 * repetition, so "(a{999}){999}" asks for a million parse-tree nodes and
 * gigabytes of memory; its epsilon-closure pass takes time exponential in
 * the copies of a repeated repetition ("((a*)*){25}": 45 s; "j**{20}":
 * 1.3 s); its matcher recurses without limit on some back-references. All
 * found by fuzz_adapter_config. So before regcomp a key is refused when it
 * holds a back-reference (\1 to \9), when a conservative count of the
 * nodes it expands to passes PATTERN_NODE_LIMIT (an atom is one node, an
 * interval multiplies its operand by its upper bound, the lower bound + 1
 * when open, '*', '+' and '?' by two, a group counts its branches' sum), or
 * when its expanded form holds more than PATTERN_NESTED_LIMIT repetitions
 * of an operand that itself holds a repetition ("j**{10}" holds 11). Real
 * PEFT keys ("layers\.3\.q_proj", "model.*attn", "(\w+\.)*proj") count
 * tens of nodes and at most one such repetition. */
#define PATTERN_NODE_LIMIT 1024
#define PATTERN_NESTED_LIMIT 8
#define PATTERN_MAX_DEPTH 64
#define PATTERN_STR_(x) #x
#define PATTERN_STR(x) PATTERN_STR_(x)

/* What pattern_refusal counts, for a sequence of operands (a group's
 * branches so far) and for its last operand. */
struct pattern_count {
    size_t nodes, last_nodes;   /* expanded parse-tree nodes */
    size_t nested, last_nested; /* expanded repetitions of repeated operands */
    bool reps, last_reps;       /* holds a repetition at all */
};

/* Appends an operand to c. */
static void pattern_add(struct pattern_count *c, size_t nodes, size_t nested, bool reps)
{
    c->nodes += nodes;
    c->last_nodes = nodes;
    c->nested += nested;
    c->last_nested = nested;
    c->reps = c->reps || reps;
    c->last_reps = reps;
}

/* Applies a repetition of upper bound `factor` to c's last operand:
 * `factor` copies of it, plus the repetition node. */
static void pattern_repeat(struct pattern_count *c, size_t factor)
{
    size_t nodes, nested;

    /* the counts are <= their limits here, so this cannot overflow */
    if (factor > PATTERN_NODE_LIMIT)
        factor = PATTERN_NODE_LIMIT + 1;
    nodes = c->last_nodes * factor + 1;
    nested = c->last_nested * factor + (c->last_reps ? 1 : 0);
    c->nodes += nodes - c->last_nodes;
    c->nested += nested - c->last_nested;
    c->last_nodes = nodes;
    c->last_nested = nested;
    c->reps = c->last_reps = true;
}

/* The decimal count at *s (saturated past PATTERN_NODE_LIMIT); advances *s. */
static size_t pattern_decimal(const char **s, bool *any)
{
    size_t v = 0;

    *any = false;
    for (; **s >= '0' && **s <= '9'; (*s)++) {
        *any = true;
        if (v <= PATTERN_NODE_LIMIT)
            v = v * 10 + (size_t)(**s - '0');
    }
    return v;
}

/* When *p is at the '{' of an interval "{m}", "{m,}", "{m,n}" or "{,n}":
 * true, *bound its upper bound (at least 1) and *p moved past it. Else
 * false and *p unmoved. */
static bool pattern_interval(const char **p, size_t *bound)
{
    const char *s = *p + 1;
    bool any_m, any_n = false, comma = false;
    size_t m = pattern_decimal(&s, &any_m), n = m;

    if (*s == ',') {
        comma = true;
        s++;
        n = pattern_decimal(&s, &any_n);
    }
    if (*s != '}' || (!any_m && !any_n))
        return false;
    *p = s + 1;
    if (comma && !any_n)
        n = m + 1;
    *bound = n > m ? n : m > 0 ? m : 1;
    return true;
}

/* *p at '['; moves *p past the bracket expression's closing ']'. */
static void pattern_skip_bracket(const char **p)
{
    const char *s = *p + 1;

    if (*s == '^')
        s++;
    if (*s == ']')
        s++;
    while (*s && *s != ']') {
        if (s[0] == '[' && (s[1] == ':' || s[1] == '.' || s[1] == '=')) {
            char close = s[1];

            for (s += 2; *s && !(s[0] == close && s[1] == ']'); s++)
                ;
            if (*s)
                s += 2;
        } else {
            s++;
        }
    }
    *p = *s ? s + 1 : s;
}

/* Why the key is refused before regcomp, or NULL when it may be compiled. */
static const char *pattern_refusal(const char *key)
{
    struct pattern_count frame[PATTERN_MAX_DEPTH + 1] = {{0}};
    size_t depth = 0, factor;
    const char *s = key;

    while (*s) {
        struct pattern_count *c = &frame[depth];

        switch (*s) {
        case '(':
            if (depth == PATTERN_MAX_DEPTH)
                return "nests groups more than " PATTERN_STR(PATTERN_MAX_DEPTH) " deep";
            frame[++depth] = (struct pattern_count){0};
            s++;
            continue;
        case '|':
            c->last_nodes = c->last_nested = 0;
            c->last_reps = false;
            s++;
            continue;
        case ')':
            /* unmatched, it would close the group lorad wraps the key in */
            if (depth == 0)
                return "has an unmatched ')'";
            s++;
            depth--;
            pattern_add(&frame[depth], c->nodes + 1, c->nested, c->reps);
            c = &frame[depth];
            break;
        case '*':
        case '?':
        case '+':
            s++;
            pattern_repeat(c, 2);
            break;
        case '{':
            if (pattern_interval(&s, &factor)) {
                pattern_repeat(c, factor);
                break;
            }
            s++; /* not an interval: a literal '{' */
            pattern_add(c, 1, 0, false);
            break;
        case '[':
            pattern_skip_bracket(&s);
            pattern_add(c, 1, 0, false);
            break;
        case '\\':
            if (s[1] >= '1' && s[1] <= '9')
                return "holds a back-reference, which lorad does not support";
            if (s[1] == '\0')
                return "ends with a lone backslash";
            s += 2;
            pattern_add(c, 1, 0, false);
            break;
        default:
            s++;
            pattern_add(c, 1, 0, false);
            break;
        }
        if (c->nodes > PATTERN_NODE_LIMIT || c->last_nodes > PATTERN_NODE_LIMIT)
            return "expands to more than " PATTERN_STR(PATTERN_NODE_LIMIT)
                   " regular-expression nodes (its repetitions multiply)";
        if (c->nested > PATTERN_NESTED_LIMIT)
            return "repeats a repeated operand more than " PATTERN_STR(PATTERN_NESTED_LIMIT)
                   " times once expanded (as in \"(a*)*{9}\")";
    }
    return NULL;
}

/* rank_pattern / alpha_pattern: object key -> number, in file order, each
 * key compiled as ^(.*\.)?(KEY)$. */
static int cfg_patterns(const cJSON *root, const char *field, bool ranks, struct pattern **out,
                        size_t *nout, struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field), *it;
    struct pattern *p;
    size_t n = 0;
    char ebuf[128];
    const char *why;

    *out = NULL;
    *nout = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsObject(v))
        return cfg_bad(err, field, "an object");
    cJSON_ArrayForEach(it, v) n++;
    if (n == 0)
        return 0;
    if (!(p = calloc(n, sizeof(*p))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    *out = p;
    cJSON_ArrayForEach(it, v)
    {
        struct pattern *q = &p[*nout];
        char *re;
        size_t len;
        int rc;

        if (!cJSON_IsNumber(it) ||
            (ranks ? !is_rank_value(it->valuedouble) : !isfinite(it->valuedouble)))
            return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                                   CONFIG_FILE ": %s[\"%s\"] must be %s", field, it->string,
                                   ranks ? "a positive integer" : "a finite number");
        if (!(q->key = strdup(it->string)))
            return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        q->value = it->valuedouble;
        (*nout)++;
        if ((why = pattern_refusal(q->key)))
            return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                                   CONFIG_FILE ": %s key \"%s\" %s", field, q->key, why);
        len = strlen(q->key) + 16;
        if (!(re = malloc(len)))
            return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        snprintf(re, len, "^(.*\\.)?(%s)$", q->key);
        rc = regcomp(&q->re, re, REG_EXTENDED | REG_NOSUB);
        free(re);
        if (rc != 0) {
            regerror(rc, NULL, ebuf, sizeof(ebuf));
            return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                                   CONFIG_FILE ": %s key \"%s\" is not a valid regular "
                                               "expression: %s",
                                   field, q->key, ebuf);
        }
        q->compiled = true;
    }
    return 0;
}

static int config_fields(const cJSON *root, struct adapter_config *c, struct lorad_error *err)
{
    double r;
    int rc;

    if ((rc = cfg_number(root, "r", PEFT_DEFAULT_R, &r, err)) < 0)
        return rc;
    if (!is_rank_value(r))
        return cfg_bad(err, "r", "a positive integer");
    c->r = (int)r;
    if ((rc = cfg_number(root, "lora_alpha", PEFT_DEFAULT_ALPHA, &c->lora_alpha, err)) < 0 ||
        (rc = cfg_bool(root, "use_rslora", &c->use_rslora, err)) < 0 ||
        (rc = cfg_bool(root, "use_dora", &c->use_dora, err)) < 0 ||
        (rc = cfg_bool(root, "lora_bias", &c->lora_bias, err)) < 0 ||
        (rc = cfg_number(root, "lora_dropout", 0.0, &c->lora_dropout, err)) < 0 ||
        (rc = cfg_patterns(root, "rank_pattern", true, &c->rank_pattern, &c->n_rank, err)) < 0 ||
        (rc = cfg_patterns(root, "alpha_pattern", false, &c->alpha_pattern, &c->n_alpha, err)) < 0)
        return rc;
    if (c->lora_bias && c->use_dora)
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                               CONFIG_FILE ": lora_bias with use_dora: PEFT does not support "
                                           "lora_bias with DoRA");
    c->parsed = true;
    return 0;
}

/* Parses the config text: JSON, then peft_type, then every used field. */
static int config_parse(const char *text, size_t len, struct adapter_config *c,
                        struct lorad_error *err)
{
    cJSON *root;
    const cJSON *pt;
    int rc;

    if (json_has_nul_escape(text, len))
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                               CONFIG_FILE ": a string contains a NUL character (\\u0000)");
    root = cJSON_ParseWithLength(text, len);

    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                               CONFIG_FILE " is not a valid JSON object");
    }
    pt = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    if (!pt)
        rc = lorad_error_set(err, LORAD_E_INVALID_ADAPTER, CONFIG_FILE ": peft_type is missing");
    else if (!cJSON_IsString(pt))
        rc = cfg_bad(err, "peft_type", "a string");
    else if (strcmp(pt->valuestring, "LORA") != 0)
        rc = lorad_error_set(err, LORAD_E_UNSUPPORTED_PEFT_TYPE,
                             "peft_type \"%.64s\" is not supported (only LORA)", pt->valuestring);
    else
        rc = config_fields(root, c, err);
    cJSON_Delete(root);
    return rc;
}

/* r and alpha of layer `name`: first matching key in file order. */
static const struct pattern *pattern_match(const struct pattern *p, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (regexec(&p[i].re, name, 0, NULL, 0) == 0)
            return &p[i];
    return NULL;
}

/* ---- the staging pipeline ---- */

enum tkind { TK_A, TK_B, TK_BIAS_B, TK_MAG, TK_W, TK_BIAS };

struct plan_layer {
    const struct st_tensor *t[6]; /* by enum tkind */
    int rank;
    double alpha;
    double scaling;
    const char *rank_from; /* pattern key or NULL (config r) */
};

struct stage {
    const struct adapter_stage_args *a;
    const struct model *m;
    struct lorad_error *err;
    struct timespec t0;
    int dirfd, cfg_fd, st_fd;
    int cfg_errno, st_errno;
    void *map;
    size_t map_len;
    struct st_file *st;
    char sha[65];
    struct adapter_config cfg;
    struct plan_layer *plan;      /* [nlayers] */
    struct adapter_profile *prof; /* working copy, completed here */
    bool prof_partial;
    struct snapshot *snap;
};

static void stage_close_files(struct stage *s)
{
    if (s->cfg_fd >= 0)
        close(s->cfg_fd);
    if (s->st_fd >= 0)
        close(s->st_fd);
    if (s->dirfd >= 0)
        close(s->dirfd);
    s->cfg_fd = s->st_fd = s->dirfd = -1;
}

static void stage_cleanup(struct stage *s)
{
    st_close(&s->st);
    if (s->map && s->map_len)
        munmap(s->map, s->map_len);
    s->map = NULL;
    stage_close_files(s);
    config_free(&s->cfg);
    free(s->plan);
    s->plan = NULL;
    adapter_profile_free(&s->prof);
    snapshot_free(&s->snap);
}

/* Opens `file` of the adapter as "NAME/file" beneath adapter_dir (see
 * "confined opening"). Returns an fd or -errno. */
static int open_adapter_file(const struct stage *s, const char *file, int flags)
{
    char path[SNAPSHOT_NAME_MAX + 64];
    int n = snprintf(path, sizeof(path), "%s/%s", s->a->name, file);

    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    return open_beneath(s->a->adapter_dirfd, path, flags);
}

/* Opens the directory (which classifies the name: forbidden or not found)
 * and both files; a file that cannot be opened is recorded in *_errno. */
static int open_adapter_once(struct stage *s)
{
    int rc = adapter_open_dir(s->a->adapter_dirfd, s->a->name, &s->dirfd, s->err);
    int fd;

    if (rc < 0)
        return rc;
    fd = open_adapter_file(s, CONFIG_FILE, O_RDONLY | O_NONBLOCK);
    s->cfg_fd = fd >= 0 ? fd : -1;
    s->cfg_errno = fd >= 0 ? 0 : -fd;
    fd = open_adapter_file(s, MODEL_FILE, O_RDONLY | O_NONBLOCK);
    s->st_fd = fd >= 0 ? fd : -1;
    s->st_errno = fd >= 0 ? 0 : -fd;
    return 0;
}

/* Whether NAME still resolves to the directory s->dirfd was opened on: the
 * files were opened by path, so a rename or symlink swap of NAME in between
 * could pair one version's config with another's weights. */
static bool adapter_dir_unchanged(const struct stage *s)
{
    struct stat now, then;
    int fd = open_beneath(s->a->adapter_dirfd, s->a->name, O_RDONLY | O_DIRECTORY);
    bool same;

    if (fd < 0)
        return false;
    same = fstat(fd, &now) == 0 && fstat(s->dirfd, &then) == 0 && now.st_dev == then.st_dev &&
           now.st_ino == then.st_ino;
    close(fd);
    return same;
}

#define STAGE_OPEN_TRIES 3

/* Step 1, name: the directory and both files, confined, all from one
 * version of the directory (opened again when NAME changed meanwhile). */
static int stage_open(struct stage *s)
{
    const char *file;

    for (int i = 0; i < STAGE_OPEN_TRIES; i++) {
        int rc = open_adapter_once(s);
        if (rc < 0)
            return rc;
        if (adapter_dir_unchanged(s))
            break;
        stage_close_files(s);
    }
    if (s->dirfd < 0)
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                               "adapter %s was replaced (renamed or relinked) while its files "
                               "were being opened, %d times in a row; try again",
                               s->a->name, STAGE_OPEN_TRIES);
    file = open_escaped(s->cfg_errno) ? CONFIG_FILE : open_escaped(s->st_errno) ? MODEL_FILE : NULL;
    if (file)
        return lorad_error_set(s->err, LORAD_E_FORBIDDEN_NAME,
                               "adapter %s: %s resolves outside adapter_dir (a symbolic link "
                               "leaving it, or an absolute one)",
                               s->a->name, file);
    return 0;
}

/* ---- sha256 cache ----
 *
 * sha256 of 16 MiB costs ~20-40 ms with nettle's portable code, more than
 * the whole staging budget (SPEC 10), and the same files are staged again
 * and again (alternating rollouts, /adapters, restore). So digests are
 * remembered per file identity: device, inode, size, mtime and ctime. Any
 * write to the file changes its ctime (which user space cannot set back).
 * As git does with its index, a digest is remembered only when both
 * timestamps were at least SHA_CACHE_SETTLE_S seconds old when hashing
 * started, so a write within the same timestamp tick cannot hide. */
#define SHA_CACHE_SIZE 64
#define SHA_CACHE_SETTLE_S 2

struct sha_cache_entry {
    bool valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
    uint64_t used;
    char sha[65];
};

static struct sha_cache_entry sha_cache[SHA_CACHE_SIZE];
static uint64_t sha_cache_clock;
static pthread_mutex_t sha_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static bool ts_eq(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool sha_entry_is(const struct sha_cache_entry *e, const struct stat *st)
{
    return e->valid && e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           ts_eq(&e->mtim, &st->st_mtim) && ts_eq(&e->ctim, &st->st_ctim);
}

static bool sha_cache_get(const struct stat *st, char out[65])
{
    bool hit = false;

    pthread_mutex_lock(&sha_cache_lock);
    for (size_t i = 0; i < SHA_CACHE_SIZE && !hit; i++)
        if (sha_entry_is(&sha_cache[i], st)) {
            memcpy(out, sha_cache[i].sha, 65);
            sha_cache[i].used = ++sha_cache_clock;
            hit = true;
        }
    pthread_mutex_unlock(&sha_cache_lock);
    return hit;
}

/* Remembers sha for st when the file had settled before `started`. */
static void sha_cache_put(const struct stat *st, const struct timespec *started, const char sha[65])
{
    size_t victim = 0;

    if (st->st_mtim.tv_sec + SHA_CACHE_SETTLE_S > started->tv_sec ||
        st->st_ctim.tv_sec + SHA_CACHE_SETTLE_S > started->tv_sec)
        return;
    pthread_mutex_lock(&sha_cache_lock);
    for (size_t i = 0; i < SHA_CACHE_SIZE; i++) {
        if (!sha_cache[i].valid ||
            (sha_cache[i].dev == st->st_dev && sha_cache[i].ino == st->st_ino)) {
            victim = i;
            break;
        }
        if (sha_cache[i].used < sha_cache[victim].used)
            victim = i;
    }
    sha_cache[victim] = (struct sha_cache_entry){
        true, st->st_dev, st->st_ino, st->st_size, st->st_mtim, st->st_ctim, ++sha_cache_clock, ""};
    memcpy(sha_cache[victim].sha, sha, 65);
    pthread_mutex_unlock(&sha_cache_lock);
}

/* Step 2, checksum: map the safetensors file (when there is one) and hash
 * it (or take the remembered digest). The snapshot always records it. */
static int stage_checksum(struct stage *s)
{
    struct stat st;
    char ebuf[128];

    if (s->st_fd < 0)
        return 0; /* reported by stage_files */
    if (fstat(s->st_fd, &st) < 0)
        return lorad_error_set(s->err, LORAD_E_INTERNAL, MODEL_FILE ": fstat: %s",
                               strerror_r(errno, ebuf, sizeof(ebuf)));
    if (!S_ISREG(st.st_mode))
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER, MODEL_FILE ": not a regular file");
    if (st.st_size > 0) {
        void *map =
            mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, s->st_fd, 0);
        if (map == MAP_FAILED)
            return lorad_error_set(s->err, LORAD_E_INTERNAL, MODEL_FILE ": mmap: %s",
                                   strerror_r(errno, ebuf, sizeof(ebuf)));
        s->map = map;
        s->map_len = (size_t)st.st_size;
    }
    if (!sha_cache_get(&st, s->sha)) {
        struct timespec started;
        clock_gettime(CLOCK_REALTIME, &started);
        if (digest_sha256_hex(s->map, s->map_len, s->sha) < 0)
            return lorad_error_set(s->err, LORAD_E_INTERNAL, "sha256 failed");
        sha_cache_put(&st, &started, s->sha);
    }
    if (s->a->expected_sha256 && !digest_hex_equal(s->a->expected_sha256, s->sha))
        return lorad_error_set(s->err, LORAD_E_CHECKSUM_MISMATCH,
                               "sha256 of " MODEL_FILE " is %s but %.80s was expected", s->sha,
                               s->a->expected_sha256);
    return 0;
}

static int read_config(struct stage *s, char **text, size_t *len)
{
    int rc = fileio_read_fd(s->cfg_fd, CONFIG_MAX_BYTES, text, len);
    if (rc == -EINVAL || rc == -EFBIG)
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER, CONFIG_FILE ": %s (at most %u bytes)",
                               fileio_strerror(rc), CONFIG_MAX_BYTES);
    if (rc < 0)
        return lorad_error_set(s->err, LORAD_E_INTERNAL, CONFIG_FILE ": read: %s",
                               fileio_strerror(rc));
    return 0;
}

static int missing_file(struct stage *s, const char *file, int e)
{
    char ebuf[128];

    if (e == ENOENT || e == ENOTDIR)
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER, "adapter %s: %s is missing",
                               s->a->name, file);
    return lorad_error_set(s->err, LORAD_E_INTERNAL, "adapter %s: %s: %s", s->a->name, file,
                           strerror_r(e, ebuf, sizeof(ebuf)));
}

/* Step 3, files and safetensors validity, and step 4, config. */
static int stage_files(struct stage *s)
{
    char *text = NULL;
    size_t len = 0;
    int rc, fd;

    if (s->st_fd < 0 && (s->st_errno == ENOENT || s->st_errno == ENOTDIR)) {
        fd = open_adapter_file(s, PICKLE_FILE, O_RDONLY | O_NONBLOCK);
        if (fd >= 0) {
            close(fd);
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "adapter %s: " PICKLE_FILE " (pickle) is not supported; "
                                   "convert it to safetensors (PEFT: save_pretrained(..., "
                                   "safe_serialization=True)) as " MODEL_FILE,
                                   s->a->name);
        }
    }
    if (s->cfg_fd < 0)
        return missing_file(s, CONFIG_FILE, s->cfg_errno);
    if (s->st_fd < 0)
        return missing_file(s, MODEL_FILE, s->st_errno);
    rc = st_parse(s->map ? s->map : (const uint8_t *)"", s->map_len, MODEL_FILE, &s->st, s->err);
    if (rc < 0)
        return rc;
    if ((rc = read_config(s, &text, &len)) < 0)
        return rc;
    rc = config_parse(text, len, &s->cfg, s->err);
    free(text);
    return rc;
}

static const char *bool_str(bool b)
{
    return b ? "true" : "false";
}

static bool alpha_patterns_equal(const struct adapter_config *c, const struct adapter_profile *p)
{
    if (c->n_alpha != p->n_alpha_pattern)
        return false;
    for (size_t i = 0; i < c->n_alpha; i++) {
        bool found = false;
        for (size_t k = 0; k < p->n_alpha_pattern && !found; k++)
            found = strcmp(c->alpha_pattern[i].key, p->alpha_pattern[k].key) == 0 &&
                    c->alpha_pattern[i].value == p->alpha_pattern[k].value;
        if (!found)
            return false;
    }
    return true;
}

/* {"k": v, ...} of at most `len` bytes. */
static void format_pattern(char *buf, size_t len, const char *const *keys, const double *vals,
                           size_t n)
{
    size_t off = 0;

    off += (size_t)snprintf(buf, len, "{");
    for (size_t i = 0; i < n && off < len; i++)
        off +=
            (size_t)snprintf(buf + off, len - off, "%s\"%s\": %g", i ? ", " : "", keys[i], vals[i]);
    if (off < len)
        snprintf(buf + off, len - off, "}");
}

static int alpha_mismatch(struct stage *s)
{
    const struct adapter_profile *p = s->a->profile;
    size_t na = s->cfg.n_alpha, np = p->n_alpha_pattern;
    const char **ka = calloc(na + 1, sizeof(*ka)), **kp = calloc(np + 1, sizeof(*kp));
    double *va = calloc(na + 1, sizeof(*va)), *vp = calloc(np + 1, sizeof(*vp));
    char ba[160], bp[160];

    if (ka && kp && va && vp) {
        for (size_t i = 0; i < na; i++) {
            ka[i] = s->cfg.alpha_pattern[i].key;
            va[i] = s->cfg.alpha_pattern[i].value;
        }
        for (size_t i = 0; i < np; i++) {
            kp[i] = p->alpha_pattern[i].key;
            vp[i] = p->alpha_pattern[i].value;
        }
        format_pattern(ba, sizeof(ba), ka, va, na);
        format_pattern(bp, sizeof(bp), kp, vp, np);
    } else {
        snprintf(ba, sizeof(ba), "?");
        snprintf(bp, sizeof(bp), "?");
    }
    free(ka);
    free(kp);
    free(va);
    free(vp);
    return lorad_error_set(s->err, LORAD_E_INCOMPATIBLE_CONFIG,
                           "alpha_pattern is %s in this adapter but %s in the profile", ba, bp);
}

/* Step 4b: the compared fields against the profile's. */
static int stage_compat(struct stage *s)
{
    const struct adapter_profile *p = s->a->profile;
    const struct adapter_config *c = &s->cfg;

    if (!p->has_fields)
        return 0;
    if (c->use_rslora != p->use_rslora)
        return lorad_error_set(s->err, LORAD_E_INCOMPATIBLE_CONFIG,
                               "use_rslora is %s in this adapter but %s in the profile",
                               bool_str(c->use_rslora), bool_str(p->use_rslora));
    if (c->use_dora != p->use_dora)
        return lorad_error_set(s->err, LORAD_E_INCOMPATIBLE_CONFIG,
                               "use_dora is %s in this adapter but %s in the profile",
                               bool_str(c->use_dora), bool_str(p->use_dora));
    if (c->lora_dropout != p->lora_dropout)
        return lorad_error_set(s->err, LORAD_E_INCOMPATIBLE_CONFIG,
                               "lora_dropout is %g in this adapter but %g in the profile",
                               c->lora_dropout, p->lora_dropout);
    if (!alpha_patterns_equal(c, p))
        return alpha_mismatch(s);
    return 0;
}

static bool ends_with(const char *s, size_t len, const char *suffix, size_t *stem)
{
    size_t n = strlen(suffix);

    if (len <= n || memcmp(s + len - n, suffix, n) != 0)
        return false;
    *stem = len - n;
    return true;
}

/* Splits a tensor key into (layer stem, kind). Returns false for a key of
 * no known form. */
static bool classify(const char *key, const char **stem, size_t *stem_len, enum tkind *kind)
{
    static const struct {
        const char *suffix;
        enum tkind kind;
    } lora[] = {
        {".lora_A.weight", TK_A},           {".lora_B.weight", TK_B},
        {".lora_B.bias", TK_BIAS_B},        {".lora_magnitude_vector.weight", TK_MAG},
        {".lora_magnitude_vector", TK_MAG},
    };
    size_t len, n;

    if (strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX)) == 0)
        key += strlen(KEY_PREFIX);
    len = strlen(key);
    *stem = key;
    for (size_t i = 0; i < sizeof(lora) / sizeof(lora[0]); i++)
        if (ends_with(key, len, lora[i].suffix, &n)) {
            *stem_len = n;
            *kind = lora[i].kind;
            return true;
        }
    if (strstr(key, ".lora_") || strncmp(key, "lora_", 5) == 0)
        return false;
    if (ends_with(key, len, ".weight", &n)) {
        *stem_len = n;
        *kind = TK_W;
        return true;
    }
    if (ends_with(key, len, ".bias", &n)) {
        *stem_len = n;
        *kind = TK_BIAS;
        return true;
    }
    return false;
}

/* A growing comma-separated list, truncated to fit an error message. */
struct namelist {
    char buf[224];
    size_t len;
    size_t count;
    bool cut; /* names left out; buf ends with ", ..." */
};

static void namelist_add(struct namelist *l, const char *name, size_t len)
{
    const size_t cap = sizeof(l->buf) - 6; /* room kept for ", ..." */
    size_t need = len + (l->len ? 2 : 0);

    /* skip duplicates (a layer named by several tensors) */
    for (const char *p = l->buf; l->len && p && *p;) {
        const char *e = strstr(p, ", ");
        size_t pl = e ? (size_t)(e - p) : strlen(p);
        if (pl == len && memcmp(p, name, len) == 0)
            return;
        p = e ? e + 2 : NULL;
    }
    l->count++;
    if (l->cut)
        return;
    if (l->len + need >= cap) {
        memcpy(l->buf + l->len, l->len ? ", ..." : "...", l->len ? 6 : 4);
        l->cut = true;
        return;
    }
    snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s%.*s", l->len ? ", " : "", (int)len,
             name);
    l->len += need;
}

/* Step 5a: every tensor key is known; every layer named exists and may
 * carry what it carries. Fills s->plan. */
static int stage_names(struct stage *s)
{
    struct namelist unknown_t = {0}, missing = {0}, untargeted = {0};
    const struct adapter_profile *p = s->a->profile;
    bool targets_known = prof_has_targets(p);
    char stem[1024];

    for (size_t i = 0; i < st_count(s->st); i++) {
        const struct st_tensor *t = st_get(s->st, i);
        const char *st_name;
        size_t sl;
        enum tkind k;
        int idx;

        if (!classify(t->name, &st_name, &sl, &k)) {
            namelist_add(&unknown_t, t->name, strlen(t->name));
            continue;
        }
        if (sl >= sizeof(stem)) {
            namelist_add(&missing, st_name, sl);
            continue;
        }
        memcpy(stem, st_name, sl);
        stem[sl] = '\0';
        idx = model_find_layer(s->m, stem);
        if (idx < 0) {
            namelist_add(&missing, stem, sl);
            continue;
        }
        if (k <= TK_MAG && targets_known && !p->targets[idx])
            namelist_add(&untargeted, stem, sl);
        if (s->plan[idx].t[k])
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "tensors %s and %s are the same tensor of layer %s",
                                   s->plan[idx].t[k]->name, t->name, stem);
        s->plan[idx].t[k] = t;
    }
    if (unknown_t.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_TENSOR,
                               "%zu tensor(s) of no PEFT LoRA form: %s", unknown_t.count,
                               unknown_t.buf);
    if (missing.count && untargeted.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_MODULE,
                               "%zu layer(s) not in the model: %s; %zu layer(s) not in the "
                               "profile's target set: %s",
                               missing.count, missing.buf, untargeted.count, untargeted.buf);
    if (missing.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_MODULE, "%zu layer(s) not in the model: %s",
                               missing.count, missing.buf);
    if (untargeted.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_MODULE,
                               "%zu layer(s) not in the profile's target set: %s", untargeted.count,
                               untargeted.buf);
    return 0;
}

/* Step 5b: lora_A with lora_B, DoRA magnitudes, lora_B.bias. */
static int stage_pairing(struct stage *s)
{
    for (size_t l = 0; l < s->m->nlayers; l++) {
        const struct plan_layer *pl = &s->plan[l];
        const char *name = s->m->layers[l].name;
        bool a = pl->t[TK_A], b = pl->t[TK_B];

        if (a != b)
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER, "layer %s: %s without %s", name,
                                   a ? "lora_A.weight" : "lora_B.weight",
                                   a ? "lora_B.weight" : "lora_A.weight");
        if (!a && (pl->t[TK_BIAS_B] || pl->t[TK_MAG]))
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "layer %s: %s without lora_A.weight and lora_B.weight", name,
                                   pl->t[TK_MAG] ? "lora_magnitude_vector" : "lora_B.bias");
        if (a && s->cfg.use_dora && !pl->t[TK_MAG])
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "layer %s: use_dora is true but lora_magnitude_vector (DoRA "
                                   "magnitude) is missing",
                                   name);
        if (pl->t[TK_MAG] && !s->cfg.use_dora)
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "tensor %s: a DoRA magnitude but use_dora is false",
                                   pl->t[TK_MAG]->name);
        if (pl->t[TK_BIAS_B] && !s->cfg.lora_bias)
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "tensor %s: a lora_B bias but lora_bias is false",
                                   pl->t[TK_BIAS_B]->name);
    }
    return 0;
}

static void shape_str(const struct st_tensor *t, char *buf, size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < t->ndim && off < len; d++)
        off += (size_t)snprintf(buf + off, len - off, "%s%llu", d ? ", " : "",
                                (unsigned long long)t->shape[d]);
    if (off < len)
        snprintf(buf + off, len - off, "]");
}

static int want_shape(struct stage *s, const struct st_tensor *t, int ndim, uint64_t d0,
                      uint64_t d1, size_t l)
{
    char got[96];

    if (!t)
        return 0;
    if (t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1))
        return 0;
    shape_str(t, got, sizeof(got));
    if (ndim == 1)
        return lorad_error_set(s->err, LORAD_E_SHAPE_MISMATCH,
                               "tensor %s has shape %s but layer %s needs [%llu]", t->name, got,
                               s->m->layers[l].name, (unsigned long long)d0);
    return lorad_error_set(s->err, LORAD_E_SHAPE_MISMATCH,
                           "tensor %s has shape %s but layer %s needs [%llu, %llu]", t->name, got,
                           s->m->layers[l].name, (unsigned long long)d0, (unsigned long long)d1);
}

/* Per-layer r, alpha, scaling from the config and its patterns. */
static void layer_rank(struct stage *s, size_t l)
{
    struct plan_layer *pl = &s->plan[l];
    const char *name = s->m->layers[l].name;
    const struct pattern *rp = pattern_match(s->cfg.rank_pattern, s->cfg.n_rank, name);
    const struct pattern *ap = pattern_match(s->cfg.alpha_pattern, s->cfg.n_alpha, name);

    pl->rank = rp ? (int)rp->value : s->cfg.r;
    pl->rank_from = rp ? rp->key : NULL;
    pl->alpha = ap ? ap->value : s->cfg.lora_alpha;
    pl->scaling =
        s->cfg.use_rslora ? pl->alpha / sqrt((double)pl->rank) : pl->alpha / (double)pl->rank;
}

static int rank_mismatch(struct stage *s, const struct st_tensor *t, uint64_t got, size_t l)
{
    const struct plan_layer *pl = &s->plan[l];
    char from[200];

    if (pl->rank_from)
        snprintf(from, sizeof(from), "rank_pattern key \"%.150s\"", pl->rank_from);
    else
        snprintf(from, sizeof(from), "r");
    return lorad_error_set(s->err, LORAD_E_RANK_MISMATCH,
                           "tensor %s has rank %llu but layer %s has r=%d (from %s)", t->name,
                           (unsigned long long)got, s->m->layers[l].name, pl->rank, from);
}

/* Step 5c: shapes against the model, ranks against r. */
static int stage_shapes(struct stage *s)
{
    for (size_t l = 0; l < s->m->nlayers; l++) {
        const struct model_layer *L = &s->m->layers[l];
        struct plan_layer *pl = &s->plan[l];
        uint64_t in = (uint64_t)L->in_features, out = (uint64_t)L->out_features;
        const struct st_tensor *A = pl->t[TK_A], *B = pl->t[TK_B], *W = pl->t[TK_W];
        int rc;

        if (A) {
            layer_rank(s, l);
            if (A->ndim != 2 || A->shape[1] != in)
                return want_shape(s, A, 2, (uint64_t)pl->rank, in, l);
            if (B->ndim != 2 || B->shape[0] != out)
                return want_shape(s, B, 2, out, (uint64_t)pl->rank, l);
            if (A->shape[0] != (uint64_t)pl->rank)
                return rank_mismatch(s, A, A->shape[0], l);
            if (B->shape[1] != (uint64_t)pl->rank)
                return rank_mismatch(s, B, B->shape[1], l);
        }
        if ((rc = want_shape(s, pl->t[TK_BIAS_B], 1, out, 0, l)) < 0 ||
            (rc = want_shape(s, pl->t[TK_MAG], 1, out, 0, l)) < 0)
            return rc;
        if (W && (rc = L->fan_in_fan_out ? want_shape(s, W, 2, in, out, l)
                                         : want_shape(s, W, 2, out, in, l)) < 0)
            return rc;
        if (pl->t[TK_BIAS] && !L->has_bias)
            return lorad_error_set(s->err, LORAD_E_SHAPE_MISMATCH,
                                   "tensor %s: layer %s has no bias", pl->t[TK_BIAS]->name,
                                   L->name);
        if ((rc = want_shape(s, pl->t[TK_BIAS], 1, out, 0, l)) < 0)
            return rc;
    }
    return 0;
}

/* Step 6: ranks against max_rank; completes the profile's limits. */
static int stage_ranks(struct stage *s)
{
    const struct adapter_profile *p = s->a->profile;
    int largest = 0;
    bool any = false;

    for (size_t l = 0; l < s->m->nlayers; l++) {
        if (!s->plan[l].t[TK_A])
            continue;
        any = true;
        if (s->plan[l].rank > largest)
            largest = s->plan[l].rank;
        if (prof_has_max_rank(p) && s->plan[l].rank > p->max_rank)
            return lorad_error_set(s->err, LORAD_E_RANK_TOO_LARGE,
                                   "layer %s: rank %d exceeds the limit %d; the config key "
                                   "max_rank raises the limit",
                                   s->m->layers[l].name, s->plan[l].rank, p->max_rank);
    }
    if (s->prof_partial && any) {
        if (!prof_has_max_rank(s->prof)) {
            s->prof->max_rank = largest;
            s->prof->has_max_rank = true;
        }
        if (!prof_has_targets(s->prof)) {
            for (size_t l = 0; l < s->m->nlayers; l++)
                s->prof->targets[l] = s->plan[l].t[TK_A] != NULL;
            s->prof->has_targets = true;
        }
        s->prof->has_limits = prof_has_max_rank(s->prof) && prof_has_targets(s->prof);
    }
    if (s->snap)
        s->snap->rank = largest;
    return 0;
}

/* Step 7: every tensor's dtype is one lorad converts. */
static int stage_dtypes(struct stage *s)
{
    for (size_t i = 0; i < st_count(s->st); i++) {
        const struct st_tensor *t = st_get(s->st, i);
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
            return lorad_error_set(s->err, LORAD_E_UNSUPPORTED_DTYPE,
                                   "tensor %s has dtype %s; only F32, F16 and BF16 are supported",
                                   t->name, st_dtype_name(t->dtype));
    }
    return 0;
}

/* 1 when any of the n f32 bit patterns at u is an infinity or a NaN. A
 * fixed-count inner loop, so that -O2 vectorizes it. */
static uint32_t any_non_finite(const uint32_t *u, size_t n)
{
    enum { LANES = 16 };
    uint32_t bad = 0;
    size_t i = 0;

    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES; k++)
            bad |= (uint32_t)((u[i + k] & 0x7f800000u) == 0x7f800000u);
    for (; i < n; i++)
        bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    return bad;
}

/* Converts t to f32 into dst and checks every value is finite, in one pass
 * for F32. Returns 0, LORAD_E_NON_FINITE_WEIGHTS or the conversion error. */
static int convert_finite(struct stage *s, const struct st_tensor *t, float *dst)
{
    uint32_t bad = 0;
    int rc;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (t->dtype == ST_F32) {
        /* copy a cache-sized block, then scan it while it is hot */
        enum { BLOCK = 8192 };
        for (size_t b = 0; b < t->nelems; b += BLOCK) {
            size_t n = t->nelems - b < BLOCK ? t->nelems - b : BLOCK;
            memcpy(dst + b, t->data + 4 * b, 4 * n);
            bad |= any_non_finite((const uint32_t *)(void *)(dst + b), n);
        }
        goto done;
    }
#endif
    if ((rc = st_to_f32(t, dst, s->err)) < 0)
        return rc;
    for (size_t i = 0; i < t->nelems; i++)
        bad |= (uint32_t)!isfinite(dst[i]);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
done:
#endif
    if (bad)
        return lorad_error_set(s->err, LORAD_E_NON_FINITE_WEIGHTS,
                               "tensor %s holds a non-finite value (NaN or infinity)", t->name);
    return 0;
}

/* Allocates and converts one tensor into *out (bytes accounted). */
static int take(struct stage *s, const struct st_tensor *t, float **out)
{
    *out = NULL;
    if (!t)
        return 0;
    if (t->nelems > SIZE_MAX / sizeof(float) ||
        !(*out = malloc((t->nelems ? t->nelems : 1) * sizeof(float))))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    s->snap->bytes += t->nelems * sizeof(float);
    return convert_finite(s, t, *out);
}

/* DoRA: dora_scale[o] = m[o] / ||W_o + s (B A)_o||_2, in double. */
static int dora_scale(struct stage *s, size_t l, const float *mag)
{
    const struct model_layer *L = &s->m->layers[l];
    struct snapshot_layer *sl = &s->snap->layers[l];
    struct snapshot_lora *lo = sl->lora;
    const float *W = sl->weight ? sl->weight : L->weight;
    const size_t in = (size_t)L->in_features, out = (size_t)L->out_features;
    const size_t r = (size_t)lo->rank;
    const double sc = s->plan[l].scaling;
    double *row = malloc((in ? in : 1) * sizeof(*row));

    if (!row)
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    for (size_t o = 0; o < out; o++) {
        double norm = 0.0, v;
        for (size_t i = 0; i < in; i++)
            row[i] = 0.0;
        for (size_t k = 0; k < r; k++) {
            const double b = lo->B[o * r + k];
            const float *a = lo->A + k * in;
            for (size_t i = 0; i < in; i++)
                row[i] += b * a[i];
        }
        for (size_t i = 0; i < in; i++) {
            const double w = (double)W[i * out + o] + sc * row[i]; /* W is [in][out] */
            norm += w * w;
        }
        v = mag[o] / sqrt(norm);
        if (!isfinite(v) || !isfinite((float)v)) {
            free(row);
            return lorad_error_set(s->err, LORAD_E_NON_FINITE_WEIGHTS,
                                   "layer %s: DoRA scale of output row %zu is not finite "
                                   "(weight norm %g)",
                                   L->name, o, sqrt(norm));
        }
        lo->dora_scale[o] = (float)v;
    }
    free(row);
    return 0;
}

static int stage_layer_values(struct stage *s, size_t l)
{
    const struct model_layer *L = &s->m->layers[l];
    struct plan_layer *pl = &s->plan[l];
    struct snapshot_layer *sl = &s->snap->layers[l];
    float *mag = NULL;
    int rc;

    if ((rc = take(s, pl->t[TK_W], &sl->weight)) < 0 ||
        (rc = take(s, pl->t[TK_BIAS], &sl->bias)) < 0)
        return rc;
    /* held [in][out] like the model's (model.h) */
    if (sl->weight && !L->fan_in_fan_out &&
        model_weight_transpose(&sl->weight, L->out_features, L->in_features))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    if (!pl->t[TK_A])
        return 0;
    if (!(sl->lora = calloc(1, sizeof(*sl->lora))))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    sl->lora->rank = pl->rank;
    sl->lora->alpha = pl->alpha;
    sl->lora->scaling = (float)pl->scaling;
    if ((rc = take(s, pl->t[TK_A], &sl->lora->A)) < 0 ||
        (rc = take(s, pl->t[TK_B], &sl->lora->B)) < 0 ||
        (rc = take(s, pl->t[TK_BIAS_B], &sl->lora->bias_B)) < 0 ||
        (rc = take(s, pl->t[TK_MAG], &mag)) < 0) {
        free(mag);
        return rc;
    }
    if (mag) {
        sl->lora->dora_scale = mag; /* overwritten in place, row by row */
        rc = dora_scale(s, l, mag);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Step 8: values, converted and checked, into the snapshot. */
static int stage_values(struct stage *s)
{
    int rc;

    for (size_t l = 0; l < s->m->nlayers; l++)
        if ((rc = stage_layer_values(s, l)) < 0)
            return rc;
    return 0;
}

/* The completed profile's compared fields, from this adapter. */
static int complete_fields(struct stage *s)
{
    struct adapter_profile *p = s->prof;

    if (!s->prof_partial || p->has_fields)
        return 0;
    p->use_rslora = s->cfg.use_rslora;
    p->use_dora = s->cfg.use_dora;
    p->lora_dropout = s->cfg.lora_dropout;
    if (s->cfg.n_alpha > 0) {
        if (!(p->alpha_pattern = calloc(s->cfg.n_alpha, sizeof(*p->alpha_pattern))))
            return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
        for (size_t i = 0; i < s->cfg.n_alpha; i++) {
            if (!(p->alpha_pattern[i].key = strdup(s->cfg.alpha_pattern[i].key)))
                return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
            p->alpha_pattern[i].value = s->cfg.alpha_pattern[i].value;
            p->n_alpha_pattern = i + 1;
        }
    }
    p->has_fields = true;
    return 0;
}

static double elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The whole pipeline; leaves what it learned in *s (for describe). */
static int stage_run(struct stage *s)
{
    const struct adapter_profile *p = s->a->profile;
    int rc;

    s->prof_partial = !p->has_fields || !prof_has_max_rank(p) || !prof_has_targets(p);
    if ((rc = stage_open(s)) < 0 || (rc = stage_checksum(s)) < 0 || (rc = stage_files(s)) < 0 ||
        (rc = stage_compat(s)) < 0)
        return rc;
    if (!(s->plan = calloc(s->m->nlayers ? s->m->nlayers : 1, sizeof(*s->plan))) ||
        !(s->snap = snapshot_new(s->m->nlayers)) || !(s->prof = adapter_profile_dup(p)))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    if ((rc = stage_names(s)) < 0 || (rc = stage_pairing(s)) < 0 || (rc = stage_shapes(s)) < 0 ||
        (rc = stage_ranks(s)) < 0 || (rc = stage_dtypes(s)) < 0 || (rc = stage_values(s)) < 0 ||
        (rc = complete_fields(s)) < 0)
        return rc;
    snprintf(s->snap->name, sizeof(s->snap->name), "%s", s->a->name);
    s->snap->lora_alpha = s->cfg.lora_alpha;
    memcpy(s->snap->sha256, s->sha, sizeof(s->sha));
    return 0;
}

static void stage_init(struct stage *s, const struct adapter_stage_args *a, struct lorad_error *err)
{
    memset(s, 0, sizeof(*s));
    s->a = a;
    s->m = a->model;
    s->err = err;
    s->dirfd = s->cfg_fd = s->st_fd = -1;
    clock_gettime(CLOCK_MONOTONIC, &s->t0);
}

int adapter_stage(const struct adapter_stage_args *a, struct snapshot **snap_out,
                  struct adapter_profile **profile_out, struct lorad_error *err)
{
    struct stage s;
    int rc;

    if (snap_out)
        *snap_out = NULL;
    if (profile_out)
        *profile_out = NULL;
    if (!a || !a->model || !a->profile || !snap_out || !profile_out ||
        a->profile->nlayers != a->model->nlayers)
        return lorad_error_set(err, LORAD_E_INTERNAL, "adapter_stage: bad arguments");
    stage_init(&s, a, err);
    if ((rc = stage_run(&s)) < 0) {
        if (err && err->code == 0)
            lorad_error_set(err, rc, "staging failed");
        stage_cleanup(&s);
        return rc;
    }
    clock_gettime(CLOCK_REALTIME, &s.snap->loaded_at);
    s.snap->stage_ms = elapsed_ms(&s.t0);
    *snap_out = s.snap;
    s.snap = NULL;
    if (s.prof_partial) {
        *profile_out = s.prof;
        s.prof = NULL;
    }
    stage_cleanup(&s);
    return 0;
}

/* ---- GET /adapters ---- */

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Valid adapter directory names under dirfd, sorted; NULL on OOM. */
static char **list_dirs(int dirfd, size_t *n_out)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;

    *n_out = 0;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return calloc(1, sizeof(char *));
    }
    while ((de = readdir(d))) {
        struct stat st;
        if (!adapter_name_valid(de->d_name) || fstatat(dirfd, de->d_name, &st, 0) < 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        if (n + 1 >= cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(names, nc * sizeof(*nn));
            if (!nn)
                goto fail;
            names = nn;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name)))
            goto fail;
        n++;
    }
    closedir(d);
    if (!names)
        return calloc(1, sizeof(char *));
    qsort(names, n, sizeof(*names), cmp_str);
    *n_out = n;
    return names;
fail:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return NULL;
}

static cJSON *describe_one(int adapter_dirfd, const char *name, const struct model *m,
                           const struct adapter_profile *profile)
{
    struct adapter_stage_args a = {adapter_dirfd, name, NULL, m, profile};
    struct lorad_error err = {0, ""};
    struct stage s;
    cJSON *o = cJSON_CreateObject(), *layers, *e;
    int rc;

    if (!o)
        return NULL;
    stage_init(&s, &a, &err);
    rc = stage_run(&s);
    if (!cJSON_AddStringToObject(o, "name", name))
        goto fail;
    if (s.cfg.parsed) {
        if (!cJSON_AddNumberToObject(o, "r", s.cfg.r) ||
            !cJSON_AddNumberToObject(o, "lora_alpha", s.cfg.lora_alpha))
            goto fail;
    } else if (!cJSON_AddNullToObject(o, "r") || !cJSON_AddNullToObject(o, "lora_alpha")) {
        goto fail;
    }
    if (!(layers = cJSON_AddArrayToObject(o, "layers")))
        goto fail;
    for (size_t l = 0; s.plan && l < m->nlayers; l++)
        if (s.plan[l].t[TK_A] &&
            !cJSON_AddItemToArray(layers, cJSON_CreateString(m->layers[l].name)))
            goto fail;
    if (!cJSON_AddBoolToObject(o, "compatible", rc == 0))
        goto fail;
    if (rc == 0) {
        if (!cJSON_AddNullToObject(o, "error"))
            goto fail;
    } else {
        if (!(e = cJSON_AddObjectToObject(o, "error")) ||
            !cJSON_AddStringToObject(e, "code", lorad_err_name(rc)) ||
            !cJSON_AddStringToObject(e, "message", err.msg))
            goto fail;
    }
    stage_cleanup(&s);
    return o;
fail:
    stage_cleanup(&s);
    cJSON_Delete(o);
    return NULL;
}

cJSON *adapter_describe_all(int adapter_dirfd, const struct model *m,
                            const struct adapter_profile *profile)
{
    struct adapter_profile *empty = NULL;
    cJSON *arr = NULL;
    char **names;
    size_t n = 0;

    if (!m)
        return NULL;
    if (!profile) {
        if (adapter_profile_from_config(m, 0, NULL, 0, &empty, NULL) < 0)
            return NULL;
        profile = empty;
    }
    if (!(names = list_dirs(adapter_dirfd, &n)))
        goto done;
    if (!(arr = cJSON_CreateArray()))
        goto done;
    for (size_t i = 0; i < n; i++) {
        cJSON *o = describe_one(adapter_dirfd, names[i], m, profile);
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            arr = NULL;
            goto done;
        }
    }
done:
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    adapter_profile_free(&empty);
    return arr;
}
