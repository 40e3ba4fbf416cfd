/* lorad — statefile.c: the persistent serving state: rendering it as
 * JSON, writing it atomically, and restoring it at start-up (see
 * statefile.h).
 *
 * File format (one JSON object, written by statefile_render):
 *   {"format": "lorad-state", "format_version": 1,
 *    "generation": G, "next_version": V,
 *    "stable": ENTRY, "canary": ENTRY + {"percent": P} | null,
 *    "history": [ENTRY, ...] (newest first),
 *    "profile": profile_to_json() | null}
 *   ENTRY = {"adapter": NAME | null (base model), "version": N,
 *            "sha256": HEX | null}
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
 * with its recorded sha256 as the expected checksum, and installs
 * everything with one serving_restore() only when every entry staged.
 * Otherwise it installs only the version floor and generation.
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

static cJSON *canary_json(const struct serving_state *v)
{
    cJSON *c;
    if (!v->canary)
        return cJSON_CreateNull();
    c = entry_json(v->canary);
    if (c && !cJSON_AddNumberToObject(c, "percent", v->canary_bp / 100.0)) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

static cJSON *history_json(const struct serving_state *v)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < v->nhistory; i++) {
        cJSON *e = entry_json(v->history[i]);
        if (!e || !cJSON_AddItemToArray(a, e)) {
            cJSON_Delete(e);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

char *statefile_render(const struct serving *s, const struct profile *profile,
                       const struct model *m)
{
    struct serving_state st, *v = &st;
    cJSON *root = cJSON_CreateObject();
    char *text = NULL, *out = NULL;
    size_t len;

    if (!root)
        return NULL;
    serving_persisted(s, &st); /* a held change included (durable before visible) */
    if (!cJSON_AddStringToObject(root, "format", SF_FORMAT) ||
        !cJSON_AddNumberToObject(root, "format_version", SF_FORMAT_VERSION) ||
        !cJSON_AddNumberToObject(root, "generation", (double)v->generation) ||
        !cJSON_AddNumberToObject(root, "next_version", (double)(v->next_version + 1)) ||
        !add_item(root, "stable", entry_json(v->stable)) ||
        !add_item(root, "canary", canary_json(v)) || !add_item(root, "history", history_json(v)) ||
        !add_item(root, "profile", profile ? profile_to_json(profile, m) : cJSON_CreateNull()))
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

struct sf_state {
    bool has_generation;
    uint64_t generation;
    bool has_floor;
    uint64_t next_version;
    struct sf_entry stable;
    bool has_canary;
    struct sf_entry canary;
    int canary_bp;
    struct sf_entry *history; /* malloc'd */
    size_t nhistory;
    const cJSON *profile; /* NULL or a JSON null: none */
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

static int parse_canary(const cJSON *root, struct sf_state *st, struct lorad_error *err)
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

static int parse_history(const cJSON *root, struct sf_state *st, struct lorad_error *err)
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

/* Versions are unique, below the floor, and the base model appears at most
 * once: what serving itself guarantees. */
static int check_consistency(const struct sf_state *st, struct lorad_error *err)
{
    size_t n = st->nhistory + 2, k = 0;
    uint64_t *v = malloc(n * sizeof(*v));
    int rc = 0;
    if (!v)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    v[k++] = st->stable.version;
    if (st->has_canary)
        v[k++] = st->canary.version;
    for (size_t i = 0; i < st->nhistory; i++)
        v[k++] = st->history[i].version;
    for (size_t i = 0; i < k && rc == 0; i++) {
        if (v[i] >= st->next_version)
            rc = lorad_error_set(err, LORAD_E_INTERNAL,
                                 "version %" PRIu64 " is not below next_version %" PRIu64, v[i],
                                 st->next_version);
        for (size_t j = i + 1; j < k && rc == 0; j++)
            if (v[i] == v[j])
                rc = lorad_error_set(err, LORAD_E_INTERNAL, "version %" PRIu64 " appears twice",
                                     v[i]);
    }
    free(v);
    return rc;
}

static int parse_state(const cJSON *root, struct sf_state *st, struct lorad_error *err)
{
    const cJSON *fmt, *stable;
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
    stable = member(root, "stable");
    st->profile = member(root, "profile");
    if ((rc = parse_entry(stable, "stable", &st->stable, err)) < 0 ||
        (rc = parse_canary(root, st, err)) < 0 || (rc = parse_history(root, st, err)) < 0)
        return rc;
    if (st->profile && !cJSON_IsNull(st->profile) && !cJSON_IsObject(st->profile))
        return lorad_error_set(err, LORAD_E_INTERNAL, "\"profile\" is not an object or null");
    if (st->profile && cJSON_IsNull(st->profile))
        st->profile = NULL;
    return check_consistency(st, err);
}

/* ---- restoring ---- */

/* The profile to stage against: the recorded one (with the caller's
 * configured limits when it has limits), else a copy of the caller's. */
static int working_profile(const struct sf_state *st, const struct model *m,
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

struct staged {
    struct snapshot *stable, *canary;
    struct snapshot **history;
    size_t nhistory;
};

static void staged_free(struct staged *sg)
{
    snapshot_free(&sg->stable);
    snapshot_free(&sg->canary);
    for (size_t i = 0; sg->history && i < sg->nhistory; i++)
        snapshot_free(&sg->history[i]);
    free(sg->history);
    memset(sg, 0, sizeof(*sg));
}

static int stage_all(const struct sf_state *st, int adapter_dirfd, const struct model *m,
                     size_t history_max, struct profile **work, struct staged *sg,
                     struct lorad_error *err)
{
    size_t n = st->nhistory < history_max ? st->nhistory : history_max;
    int rc;

    sg->history = calloc(n ? n : 1, sizeof(*sg->history));
    if (!sg->history)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    if ((rc = stage_entry(&st->stable, adapter_dirfd, m, work, &sg->stable, err)) < 0)
        return rc;
    if (st->has_canary &&
        (rc = stage_entry(&st->canary, adapter_dirfd, m, work, &sg->canary, err)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        rc = stage_entry(&st->history[i], adapter_dirfd, m, work, &sg->history[i], err);
        if (rc < 0)
            return rc;
        sg->nhistory = i + 1;
    }
    return 0;
}

enum statefile_restored statefile_restore(const char *path, int adapter_dirfd,
                                          const struct model *m, struct serving *s,
                                          struct profile **profile, struct lorad_error *err)
{
    struct sf_state st = {0};
    struct staged sg = {0};
    struct profile *work = NULL;
    cJSON *root = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc;

    rc = read_file(path, &text, &len, err);
    if (rc == 1)
        return STATEFILE_NONE;
    if (rc < 0)
        return STATEFILE_FAILED;
    root = cJSON_ParseWithLength(text, len);
    if (!root) {
        lorad_error_set(err, LORAD_E_INTERNAL,
                        "state file %s: not valid JSON; its version floor is unknown", path);
        goto fail;
    }
    if ((rc = parse_state(root, &st, err)) < 0) {
        char prefix[64 + 4096];
        snprintf(prefix, sizeof(prefix), "state file %s", path);
        lorad_error_prefix(err, prefix);
        goto fail;
    }
    if ((rc = working_profile(&st, m, profile ? *profile : NULL, &work, err)) < 0 ||
        (rc = stage_all(&st, adapter_dirfd, m, serving_history_max(s), &work, &sg, err)) < 0) {
        char prefix[64 + 4096];
        snprintf(prefix, sizeof(prefix), "state file %s", path);
        lorad_error_prefix(err, prefix);
        goto fail;
    }
    serving_restore(s, sg.stable, sg.canary, st.canary_bp, sg.history, sg.nhistory, st.generation,
                    st.next_version);
    free(sg.history);
    if (profile && work) {
        profile_free(profile);
        *profile = work;
    } else {
        profile_free(&work);
    }
    free(st.history);
    cJSON_Delete(root);
    free(text);
    return STATEFILE_RESTORED;
fail:
    staged_free(&sg);
    profile_free(&work);
    if (st.has_floor)
        serving_restore(s, NULL, NULL, 0, NULL, 0,
                        st.has_generation ? st.generation : serving_current(s)->generation,
                        st.next_version);
    free(st.history);
    cJSON_Delete(root);
    free(text);
    return STATEFILE_FAILED;
}
