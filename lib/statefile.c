/* lorad — statefile.c: the persistent serving state: rendering it as
 * JSON, writing it atomically, and restoring it at start-up (see
 * statefile.h).
 *
 * File format (one JSON object, written by statefile_render):
 *   {"format": "lorad-state", "format_version": 1,
 *    "generation": G, "next_version": V,
 *    "stable": ENTRY, "canary": ENTRY + {"percent": P} | null,
 *    "history": [ENTRY, ...] (newest first),
 *    "profile": profile_to_json() | null,
 *    "slots": {NAME: {"stable", "canary", "history", "profile"}, ...}}
 *   ENTRY = {"adapter": NAME | null (base model), "version": N,
 *            "sha256": HEX | null}
 * The top level is slot "default" (a file without "slots", as lorad wrote
 * before slots existed, restores as that one slot); "slots" holds every
 * other slot, each with the same four members.
 *
 * Writing goes through fileio_write_atomic() (temp file "<path>.tmp" with
 * mode 0600, fsync, rename, fsync of the directory), or its two phases
 * (statefile_stage, statefile_publish) when the daemon makes a change
 * durable before it makes it visible. Rendering reads serving_persisted(),
 * which includes a change held pending.
 *
 * Restoring parses the whole file into a `struct sf_state` (strictly: a
 * wrong type, an inconsistent value or a key given twice in an object
 * fails the restore; the version floor is read before the rest, so that it
 * applies even when the rest is broken), re-stages every recorded adapter
 * with its recorded sha256 as the expected checksum, one slot per task
 * (the caller's runner may run them in parallel: each task touches its
 * own slot's results only), and installs each slot on its own. Slot
 * "default" installs only when every entry of it staged (else the caller
 * falls back to initial_adapter); any other slot installs what staged: a
 * stable that did not stage leaves it on the base model, a canary that did
 * not is dropped, history keeps the entries that staged. The version floor
 * and generation are installed in any case once they were read.
 */
#include "statefile.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "fileio.h"
#include "jsontext.h"

#define SF_FORMAT "lorad-state"
#define SF_FORMAT_VERSION 1
#define SF_MAX_BYTES (4u << 20)       /* a state file is a few KiB */
#define SF_MAX_INT 9007199254740992.0 /* 2^53: exact in a JSON number */

/* ---- rendering ---- */

static cJSON *entry_json(const struct snapshot *snap)
{
    cJSON *e = cJSON_CreateObject();
    if (!e)
        return NULL;
    if (!(snap ? cJSON_AddStringToObject(e, "adapter", snap->name)
               : cJSON_AddNullToObject(e, "adapter")) ||
        !cJSON_AddNumberToObject(e, "version", snap ? (double)snap->version : 0.0) ||
        !(snap ? cJSON_AddStringToObject(e, "sha256", snap->sha256)
               : cJSON_AddNullToObject(e, "sha256"))) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

/* Adds `item` (which may be NULL after a failed allocation) to `obj`;
 * returns false on failure (item freed). */
static bool add_item(cJSON *obj, const char *key, cJSON *item)
{
    if (!item)
        return false;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

static cJSON *canary_json(const struct serving_slot *sl)
{
    cJSON *c;
    int bp = 0;
    const struct snapshot *canary = serving_slot_canary(sl, &bp);
    if (!canary)
        return cJSON_CreateNull();
    c = entry_json(canary);
    if (c && !cJSON_AddNumberToObject(c, "percent", bp / 100.0)) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

static cJSON *history_json(const struct serving_slot *sl)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < serving_slot_history_len(sl); i++) {
        cJSON *e = entry_json(serving_slot_history_at(sl, i));
        if (!e || !cJSON_AddItemToArray(a, e)) {
            cJSON_Delete(e);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* stable, canary, history and profile of one slot into obj. */
static bool slot_members(cJSON *obj, const struct serving_slot *sl, const struct profile *fallback,
                         const struct model *m)
{
    const struct profile *p = serving_slot_profile(sl) ? serving_slot_profile(sl) : fallback;
    return add_item(obj, "stable", entry_json(serving_slot_stable(sl))) &&
           add_item(obj, "canary", canary_json(sl)) && add_item(obj, "history", history_json(sl)) &&
           add_item(obj, "profile", p ? profile_to_json(p, m) : cJSON_CreateNull());
}

/* "slots": every slot but default. */
static cJSON *slots_json(const struct serving_slot *const *slots, size_t n,
                         const struct profile *fallback, const struct model *m)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < n; i++) {
        const struct serving_slot *sl = slots[i];
        cJSON *e;
        if (strcmp(serving_slot_name(sl), SERVING_DEFAULT_SLOT) == 0)
            continue;
        e = cJSON_CreateObject();
        if (!e || !slot_members(e, sl, fallback, m) ||
            !cJSON_AddItemToObject(o, serving_slot_name(sl), e)) {
            cJSON_Delete(e);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

char *statefile_render(const struct serving *s, const struct profile *profile,
                       const struct model *m)
{
    const struct serving_slot *const *slots, *dflt = NULL;
    size_t n = serving_persisted_slots(s, &slots);
    uint64_t generation, next_version;
    cJSON *root = cJSON_CreateObject();
    char *text = NULL, *out = NULL;
    size_t len;

    serving_persisted_counters(s, &generation, &next_version);
    for (size_t i = 0; i < n && !dflt; i++)
        if (strcmp(serving_slot_name(slots[i]), SERVING_DEFAULT_SLOT) == 0)
            dflt = slots[i];
    if (!root || !dflt)
        goto fail;
    if (!cJSON_AddStringToObject(root, "format", SF_FORMAT) ||
        !cJSON_AddNumberToObject(root, "format_version", SF_FORMAT_VERSION) ||
        !cJSON_AddNumberToObject(root, "generation", (double)generation) ||
        !cJSON_AddNumberToObject(root, "next_version", (double)(next_version + 1)) ||
        !slot_members(root, dflt, profile, m) ||
        !add_item(root, "slots", slots_json(slots, n, profile, m)))
        goto fail;
    text = cJSON_Print(root);
    if (!text)
        goto fail;
    /* cJSON's allocator may not be malloc: copy, with a final newline. */
    len = strlen(text);
    out = malloc(len + 2);
    if (out) {
        memcpy(out, text, len);
        out[len] = '\n';
        out[len + 1] = '\0';
    }
fail:
    if (text)
        cJSON_free(text);
    cJSON_Delete(root);
    return out;
}

/* ---- atomic write ---- */

int statefile_write(const char *path, const char *text, size_t len, struct lorad_error *err)
{
    const char *what = "create temp file";
    char ebuf[128];
    int rc;

    if (!path || !*path || (!text && len))
        return lorad_error_set(err, LORAD_E_INTERNAL, "state file: no path or text");
    if ((rc = fileio_write_atomic(path, text, len, 0600, &what)) < 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "state file %s: %s: %s", path, what,
                               strerror_r(-rc, ebuf, sizeof(ebuf)));
    return 0;
}

int statefile_stage(const char *path, const char *text, size_t len, struct lorad_error *err)
{
    const char *what = "create temp file";
    char ebuf[128];
    int rc;

    if (!path || !*path || (!text && len))
        return lorad_error_set(err, LORAD_E_INTERNAL, "state file: no path or text");
    if ((rc = fileio_stage(path, text, len, 0600, &what)) < 0)
        return lorad_error_set(err, LORAD_E_NOT_DURABLE, "state file %s.tmp: %s: %s", path, what,
                               strerror_r(-rc, ebuf, sizeof(ebuf)));
    return 0;
}

int statefile_publish(const char *path, struct lorad_error *err)
{
    const char *what = "rename";
    char ebuf[128];
    int rc = fileio_publish(path, &what);
    if (rc < 0) {
        bool renamed = strcmp(what, "rename") != 0;
        if (!renamed)
            fileio_discard(path);
        lorad_error_set(err, renamed ? LORAD_E_INTERNAL : LORAD_E_NOT_DURABLE,
                        "state file %s: %s: %s", path, what, strerror_r(-rc, ebuf, sizeof(ebuf)));
        return renamed ? 1 : err->code;
    }
    return 0;
}

/* ---- reading ---- */

/* Reads the whole file. 1: it does not exist; 0: *buf (NUL-terminated,
 * caller frees) and *len set; negative: error in err. */
static int read_file(const char *path, char **buf, size_t *len, struct lorad_error *err)
{
    int rc = fileio_read_path(path, SF_MAX_BYTES, buf, len);
    if (rc == -ENOENT)
        return 1;
    if (rc < 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "state file %s: %s (at most %u bytes)", path,
                               fileio_strerror(rc), SF_MAX_BYTES);
    return 0;
}

/* ---- parsing ---- */

struct sf_entry {
    const char *name; /* NULL = base model */
    uint64_t version;
    const char *sha256; /* NULL for the base model */
};

/* One slot of the file, and what restoring it staged. */
struct sf_slot {
    const char *name; /* "default" for the top level */
    struct sf_entry stable;
    bool has_canary;
    struct sf_entry canary;
    int canary_bp;
    struct sf_entry *history; /* malloc'd */
    size_t nhistory;
    const cJSON *profile; /* NULL or a JSON null: none */
    /* staging results (the slot's task) */
    struct snapshot *st_stable, *st_canary;
    struct snapshot **st_history; /* [nhistory or history_max], compacted */
    size_t st_nhistory;
    struct profile *work;
    int rc; /* 0, or the first failure (err) */
    struct lorad_error err;
};

struct sf_state {
    bool has_generation;
    uint64_t generation;
    bool has_floor;
    uint64_t next_version;
    struct sf_slot *slots; /* [nslots]; slots[0] is default */
    size_t nslots;
};

/* Every object of the file has unique keys (lorad writes none twice). */
static int unique_keys(const cJSON *obj, struct lorad_error *err)
{
    const char *dup = json_duplicate_key(obj);

    return dup ? lorad_error_set(err, LORAD_E_INTERNAL, "key \"%s\" appears twice", dup) : 0;
}

static const cJSON *member(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static int get_uint(const cJSON *obj, const char *key, uint64_t min, uint64_t *out,
                    struct lorad_error *err)
{
    const cJSON *j = member(obj, key);
    double d;

    if (!j || !cJSON_IsNumber(j))
        return lorad_error_set(err, LORAD_E_INTERNAL, "\"%s\" is %s, not a number", key,
                               j ? "of the wrong type" : "missing");
    d = j->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < (double)min || d > SF_MAX_INT)
        return lorad_error_set(err, LORAD_E_INTERNAL,
                               "\"%s\" is not an integer in [%" PRIu64 ", 2^53]", key, min);
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(const cJSON *j, const char *what, struct sf_entry *e,
                       struct lorad_error *err)
{
    const cJSON *name, *sha;
    int rc;
    if (!cJSON_IsObject(j))
        return lorad_error_set(err, LORAD_E_INTERNAL, "%s is not an object", what);
    name = member(j, "adapter");
    sha = member(j, "sha256");
    if ((rc = unique_keys(j, err)) < 0 || (rc = get_uint(j, "version", 0, &e->version, err)) < 0)
        goto fail;
    if (!name || !(cJSON_IsNull(name) || cJSON_IsString(name)) || !sha ||
        !(cJSON_IsNull(sha) || cJSON_IsString(sha))) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL,
                             "\"adapter\" and \"sha256\" must be strings or null");
        goto fail;
    }
    e->name = cJSON_IsString(name) ? name->valuestring : NULL;
    e->sha256 = cJSON_IsString(sha) ? sha->valuestring : NULL;
    if (!e->name && (e->sha256 || e->version != 0)) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL,
                             "the base model (adapter null) has version 0 and sha256 null");
        goto fail;
    }
    if (e->name && (!adapter_name_valid(e->name) || !e->sha256 || !digest_hex_valid(e->sha256) ||
                    e->version == 0)) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL,
                             "an adapter entry needs a valid name, version >= 1 and a "
                             "64-digit hex sha256");
        goto fail;
    }
    return 0;
fail:
    lorad_error_prefix(err, what);
    return rc;
}

static int parse_canary(const cJSON *root, struct sf_slot *st, struct lorad_error *err)
{
    const cJSON *c = member(root, "canary"), *pct;
    int rc;

    if (!c || cJSON_IsNull(c))
        return 0;
    if ((rc = parse_entry(c, "canary", &st->canary, err)) < 0)
        return rc;
    if (!st->canary.name)
        return lorad_error_set(err, LORAD_E_INTERNAL, "canary: the base model cannot be a canary");
    pct = member(c, "percent");
    if (!pct || !cJSON_IsNumber(pct) || !(pct->valuedouble >= 0.0 && pct->valuedouble <= 100.0))
        return lorad_error_set(err, LORAD_E_INTERNAL,
                               "canary: \"percent\" is not a number in [0, 100]");
    st->canary_bp = (int)lround(pct->valuedouble * 100.0);
    st->has_canary = true;
    return 0;
}

static int parse_history(const cJSON *root, struct sf_slot *st, struct lorad_error *err)
{
    const cJSON *h = member(root, "history"), *it;
    size_t n, i = 0;
    int rc;

    if (!h || !cJSON_IsArray(h))
        return lorad_error_set(err, LORAD_E_INTERNAL, "\"history\" is not an array");
    n = (size_t)cJSON_GetArraySize(h);
    st->history = calloc(n ? n : 1, sizeof(*st->history));
    if (!st->history)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    cJSON_ArrayForEach(it, h)
    {
        char what[32];
        snprintf(what, sizeof(what), "history[%zu]", i);
        if ((rc = parse_entry(it, what, &st->history[i], err)) < 0)
            return rc;
        i++;
    }
    st->nhistory = i;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Versions are unique across every slot (the base model's 0 at most once
 * per slot) and below the floor: what serving itself guarantees. */
static int check_consistency(const struct sf_state *st, struct lorad_error *err)
{
    size_t n = 0, k = 0;
    uint64_t *v;
    int rc = 0;
    for (size_t i = 0; i < st->nslots; i++)
        n += st->slots[i].nhistory + 2;
    if (!(v = malloc(n * sizeof(*v))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    for (size_t s = 0; s < st->nslots && rc == 0; s++) {
        const struct sf_slot *sl = &st->slots[s];
        size_t k0 = k;
        bool base = false;
        v[k++] = sl->stable.version;
        if (sl->has_canary)
            v[k++] = sl->canary.version;
        for (size_t i = 0; i < sl->nhistory; i++)
            v[k++] = sl->history[i].version;
        for (size_t i = k0; i < k && rc == 0; i++) {
            if (v[i] >= st->next_version)
                rc = lorad_error_set(err, LORAD_E_INTERNAL,
                                     "version %" PRIu64 " is not below next_version %" PRIu64, v[i],
                                     st->next_version);
            if (v[i] == 0 && base)
                rc = lorad_error_set(err, LORAD_E_INTERNAL, "version 0 appears twice");
            base = base || v[i] == 0;
        }
    }
    /* adapter versions (>= 1) are unique across slots */
    qsort(v, k, sizeof(*v), cmp_u64);
    for (size_t i = 1; i < k && rc == 0; i++)
        if (v[i] != 0 && v[i] == v[i - 1])
            rc = lorad_error_set(err, LORAD_E_INTERNAL, "version %" PRIu64 " appears twice", v[i]);
    free(v);
    return rc;
}

/* One slot's members (the top level for default, or a "slots" member). */
static int parse_slot(const cJSON *obj, struct sf_slot *sl, struct lorad_error *err)
{
    int rc;
    sl->profile = member(obj, "profile");
    if ((rc = parse_entry(member(obj, "stable"), "stable", &sl->stable, err)) < 0 ||
        (rc = parse_canary(obj, sl, err)) < 0 || (rc = parse_history(obj, sl, err)) < 0)
        return rc;
    if (sl->profile && !cJSON_IsNull(sl->profile) && !cJSON_IsObject(sl->profile))
        return lorad_error_set(err, LORAD_E_INTERNAL, "\"profile\" is not an object or null");
    if (sl->profile && cJSON_IsNull(sl->profile))
        sl->profile = NULL;
    return 0;
}

/* "slots": every slot but default (absent in files written before slots). */
static int parse_slots(const cJSON *root, struct sf_state *st, struct lorad_error *err)
{
    const cJSON *o = member(root, "slots"), *it;
    size_t n;
    int rc;
    if (!o || cJSON_IsNull(o))
        return 0;
    if (!cJSON_IsObject(o))
        return lorad_error_set(err, LORAD_E_INTERNAL, "\"slots\" is not an object");
    if ((rc = unique_keys(o, err)) < 0)
        return rc;
    n = (size_t)cJSON_GetArraySize(o);
    struct sf_slot *ns = realloc(st->slots, (n + 1) * sizeof(*ns));
    if (!ns)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    st->slots = ns;
    memset(&st->slots[1], 0, n * sizeof(*ns));
    cJSON_ArrayForEach(it, o)
    {
        struct sf_slot *sl = &st->slots[st->nslots];
        char what[SERVING_SLOT_NAME_MAX + 16];
        if (!serving_slot_name_valid(it->string) || strcmp(it->string, SERVING_DEFAULT_SLOT) == 0)
            return lorad_error_set(err, LORAD_E_INTERNAL,
                                   "slots: \"%.130s\" is not a valid slot name (or is default, "
                                   "which is the top level)",
                                   it->string);
        sl->name = it->string;
        st->nslots++;
        snprintf(what, sizeof(what), "slot %s", it->string);
        if (!cJSON_IsObject(it) || (rc = unique_keys(it, err)) < 0 ||
            (rc = parse_slot(it, sl, err)) < 0) {
            if (!cJSON_IsObject(it))
                rc = lorad_error_set(err, LORAD_E_INTERNAL, "not an object");
            lorad_error_prefix(err, what);
            return rc;
        }
    }
    return 0;
}

static int parse_state(const cJSON *root, struct sf_state *st, struct lorad_error *err)
{
    const cJSON *fmt;
    uint64_t fv;
    int rc;

    if (!cJSON_IsObject(root))
        return lorad_error_set(err, LORAD_E_INTERNAL, "not a JSON object");
    fmt = member(root, "format");
    if (!fmt || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, SF_FORMAT) != 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "\"format\" is not \"%s\"", SF_FORMAT);
    if ((rc = get_uint(root, "format_version", 0, &fv, err)) < 0)
        return rc;
    if (fv != SF_FORMAT_VERSION)
        return lorad_error_set(err, LORAD_E_INTERNAL,
                               "format_version %" PRIu64 " is not supported (only %d)", fv,
                               SF_FORMAT_VERSION);
    /* The floor first, so that it applies even if the rest is broken. */
    if ((rc = get_uint(root, "next_version", 1, &st->next_version, err)) < 0)
        return rc;
    st->has_floor = true;
    if ((rc = get_uint(root, "generation", 0, &st->generation, err)) < 0)
        return rc;
    st->has_generation = true;
    /* after the floor: a broken rest does not take the floor with it */
    if ((rc = unique_keys(root, err)) < 0)
        return rc;
    if (!(st->slots = calloc(1, sizeof(*st->slots))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    st->slots[0].name = SERVING_DEFAULT_SLOT;
    st->nslots = 1;
    if ((rc = parse_slot(root, &st->slots[0], err)) < 0 || (rc = parse_slots(root, st, err)) < 0)
        return rc;
    return check_consistency(st, err);
}

/* ---- restoring ---- */

/* The profile to stage against: the recorded one (with the caller's
 * configured limits when it has limits), else a copy of the caller's. */
static int working_profile(const struct sf_slot *st, const struct model *m,
                           const struct profile *caller, struct profile **out,
                           struct lorad_error *err)
{
    struct profile *p = NULL;
    int rc;

    if (!st->profile) {
        if (caller) {
            p = profile_dup(caller);
            if (!p)
                return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
            *out = p;
            return 0;
        }
        *out = NULL; /* made when the first adapter is staged */
        return 0;
    }
    if ((rc = profile_from_json(st->profile, m, &p, err)) < 0) {
        lorad_error_prefix(err, "profile");
        return rc;
    }
    if (caller && caller->has_limits && caller->targets && caller->nlayers == p->nlayers) {
        bool *t = malloc((p->nlayers ? p->nlayers : 1) * sizeof(*t));
        if (!t) {
            profile_free(&p);
            return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        }
        memcpy(t, caller->targets, p->nlayers * sizeof(*t));
        free(p->targets);
        p->targets = t;
        p->has_limits = true;
        p->max_rank = caller->max_rank;
        p->max_rank_from_config = caller->max_rank_from_config;
    }
    *out = p;
    return 0;
}

/* Re-stages one entry into *out (NULL for the base model). */
static int stage_entry(const struct sf_entry *e, int adapter_dirfd, const struct model *m,
                       struct profile **work, struct snapshot **out, struct lorad_error *err)
{
    struct adapter_stage_args a = {
        .adapter_dirfd = adapter_dirfd,
        .name = e->name,
        .expected_sha256 = e->sha256,
        .model = m,
        .profile = *work,
    };
    struct profile *completed = NULL;
    char prefix[SNAPSHOT_NAME_MAX + 64];
    int rc;

    *out = NULL;
    if (!e->name)
        return 0;
    rc = *work ? 0 : profile_from_config(m, 0, NULL, 0, work, err);
    a.profile = *work;
    if (rc == 0)
        rc = adapter_stage(&a, out, &completed, err);
    if (rc < 0) {
        snprintf(prefix, sizeof(prefix), "adapter %s (version %" PRIu64 ")", e->name, e->version);
        lorad_error_prefix(err, prefix);
        *out = NULL;
        return rc;
    }
    if (completed) {
        profile_free(work);
        *work = completed;
    }
    (*out)->version = e->version;
    return 0;
}

static void slot_results_free(struct sf_slot *sl)
{
    snapshot_free(&sl->st_stable);
    snapshot_free(&sl->st_canary);
    for (size_t i = 0; sl->st_history && i < sl->st_nhistory; i++)
        snapshot_free(&sl->st_history[i]);
    free(sl->st_history);
    sl->st_history = NULL;
    sl->st_nhistory = 0;
    profile_free(&sl->work);
}

static void state_free(struct sf_state *st)
{
    for (size_t i = 0; st->slots && i < st->nslots; i++) {
        slot_results_free(&st->slots[i]);
        free(st->slots[i].history);
    }
    free(st->slots);
    st->slots = NULL;
    st->nslots = 0;
}

/* Notes the slot's first failure. */
static void slot_failed(struct sf_slot *sl, int rc, const struct lorad_error *e)
{
    if (sl->rc == 0) {
        sl->rc = rc;
        sl->err = *e;
    }
}

/* What one restore task needs. */
struct sf_job {
    struct sf_state *st;
    int adapter_dirfd;
    const struct model *m;
    const struct profile *caller;
    size_t history_max;
};

/* Re-stages slot i of the file into its results: every entry is tried;
 * the first failure is kept in sl->rc / sl->err. Touches slot i only (and
 * reads the shared, immutable inputs), so tasks may run in parallel. */
static void stage_slot(void *arg, size_t i)
{
    struct sf_job *job = arg;
    struct sf_slot *sl = &job->st->slots[i];
    size_t n = sl->nhistory < job->history_max ? sl->nhistory : job->history_max;
    struct lorad_error e = {0, ""};
    int rc;

    if (!(sl->st_history = calloc(n ? n : 1, sizeof(*sl->st_history)))) {
        slot_failed(sl, LORAD_E_INTERNAL, &(struct lorad_error){LORAD_E_INTERNAL, "out of memory"});
        return;
    }
    if ((rc = working_profile(sl, job->m, job->caller, &sl->work, &e)) < 0) {
        slot_failed(sl, rc, &e);
        return;
    }
    if ((rc = stage_entry(&sl->stable, job->adapter_dirfd, job->m, &sl->work, &sl->st_stable, &e)) <
        0)
        slot_failed(sl, rc, &e);
    if (sl->has_canary && (rc = stage_entry(&sl->canary, job->adapter_dirfd, job->m, &sl->work,
                                            &sl->st_canary, &e)) < 0)
        slot_failed(sl, rc, &e);
    for (size_t k = 0; k < n; k++) {
        struct snapshot *h = NULL;
        if ((rc = stage_entry(&sl->history[k], job->adapter_dirfd, job->m, &sl->work, &h, &e)) <
            0) {
            slot_failed(sl, rc, &e);
            continue;
        }
        /* a stable that fell back to the base model already is version 0 */
        if (!h && !sl->history[k].name && sl->stable.name && !sl->st_stable)
            continue;
        sl->st_history[sl->st_nhistory++] = h;
    }
}

/* Installs slot i's results (see the top comment); 0 or the slot's
 * failure. */
static int install_slot(struct sf_state *st, size_t i, struct serving *s, struct profile **profile,
                        struct lorad_error *err)
{
    struct sf_slot *sl = &st->slots[i];
    bool dflt = i == 0;
    if (dflt && sl->rc < 0)
        return sl->rc; /* nothing of default: the caller falls back */
    if (dflt) {
        serving_restore(s, sl->st_stable, sl->st_canary, sl->canary_bp, sl->st_history,
                        sl->st_nhistory, st->generation, st->next_version);
        if (profile && sl->work) {
            profile_free(profile);
            *profile = sl->work;
            sl->work = NULL;
        } else {
            profile_free(&sl->work);
        }
    } else {
        int rc = serving_restore_slot(s, sl->name, sl->st_stable, sl->st_canary, sl->canary_bp,
                                      sl->st_history, sl->st_nhistory, sl->work, err);
        sl->work = NULL;
        if (rc < 0)
            slot_failed(sl, rc, err);
    }
    sl->st_stable = sl->st_canary = NULL;
    sl->st_nhistory = 0;
    return sl->rc;
}

/* The sequential runner: task(arg, i) for every i. */
static void run_in_order(void *runner_arg, size_t n, void (*task)(void *, size_t), void *arg)
{
    (void)runner_arg;
    for (size_t i = 0; i < n; i++)
        task(arg, i);
}

enum statefile_restored statefile_restore(const char *path, int adapter_dirfd,
                                          const struct model *m, struct serving *s,
                                          struct profile **profile, struct lorad_error *err)
{
    struct statefile_restore_opts o = {0};
    return statefile_restore_slots(path, adapter_dirfd, m, s, profile, &o, err);
}

enum statefile_restored statefile_restore_slots(const char *path, int adapter_dirfd,
                                                const struct model *m, struct serving *s,
                                                struct profile **profile,
                                                struct statefile_restore_opts *o,
                                                struct lorad_error *err)
{
    struct sf_state st = {0};
    cJSON *root = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc;
    bool failed = false;
    char prefix[64 + 4096];

    o->default_restored = false;
    rc = read_file(path, &text, &len, err);
    if (rc == 1)
        return STATEFILE_NONE;
    if (rc < 0)
        return STATEFILE_FAILED;
    snprintf(prefix, sizeof(prefix), "state file %s", path);
    root = cJSON_ParseWithLength(text, len);
    if (!root) {
        lorad_error_set(err, LORAD_E_INTERNAL,
                        "state file %s: not valid JSON; its version floor is unknown", path);
        goto fail;
    }
    if ((rc = parse_state(root, &st, err)) < 0) {
        lorad_error_prefix(err, prefix);
        goto fail;
    }
    struct sf_job job = {&st, adapter_dirfd, m, profile ? *profile : NULL, serving_history_max(s)};
    if (o->run)
        o->run(o->run_arg, st.nslots, stage_slot, &job);
    else
        run_in_order(NULL, st.nslots, stage_slot, &job);
    /* the other slots first: default's serving_restore sets the counters */
    for (size_t i = st.nslots; i-- > 0;) {
        struct lorad_error e = {0, ""};
        if (install_slot(&st, i, s, profile, &e) >= 0)
            continue;
        if (!failed) {
            *err = st.slots[i].err;
            lorad_error_prefix(err, prefix);
        }
        failed = true;
        if (o->on_slot_failed)
            o->on_slot_failed(o->run_arg, st.slots[i].name, &st.slots[i].err);
    }
    if (st.slots[0].rc < 0)
        serving_restore_counters(s, st.generation, st.next_version);
    o->default_restored = st.slots[0].rc == 0;
    state_free(&st);
    cJSON_Delete(root);
    free(text);
    return failed ? STATEFILE_FAILED : STATEFILE_RESTORED;
fail:
    if (st.has_floor)
        serving_restore(s, NULL, NULL, 0, NULL, 0,
                        st.has_generation ? st.generation : serving_current(s)->generation,
                        st.next_version);
    state_free(&st);
    cJSON_Delete(root);
    free(text);
    return STATEFILE_FAILED;
}
