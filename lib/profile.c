/* lorad — profile.c: this file contains the compatibility profile: its
 * construction from the config, copies, its JSON form, the comparison of
 * an adapter config's PEFT fields against it, and its completion from a
 * staged adapter (see profile.h).
 *
 * Invariants: p->targets always holds p->nlayers entries (a calloc'd array
 * even while the target set is unknown, so completing it allocates
 * nothing); p->alpha_pattern holds p->n_alpha_pattern entries, each key
 * owned; has_limits == has_max_rank && has_targets after every
 * constructor (has_limits alone may also be set by a caller that installs
 * both limits at once).
 */
#include "profile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- construction ---- */

bool profile_has_max_rank(const struct profile *p)
{
    return p->has_limits || p->has_max_rank;
}

bool profile_has_targets(const struct profile *p)
{
    return (p->has_limits || p->has_targets) && p->targets;
}

static struct profile *profile_alloc(size_t nlayers)
{
    struct profile *p = calloc(1, sizeof(*p));

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

static void patterns_free(struct profile_pattern *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(p[i].key);
    free(p);
}

/* Copies key and value into the empty entry d; -1 on out-of-memory. */
static int pattern_set(struct profile_pattern *d, const char *key, double value)
{
    d->value = value;
    return (d->key = strdup(key)) ? 0 : -1;
}

void profile_free(struct profile **pp)
{
    struct profile *p;

    if (!pp || !*pp)
        return;
    p = *pp;
    patterns_free(p->alpha_pattern, p->n_alpha_pattern);
    free(p->targets);
    free(p);
    *pp = NULL;
}

static int patterns_copy(const struct profile_pattern *src, size_t n, struct profile_pattern **out)
{
    struct profile_pattern *d;

    *out = NULL;
    if (n == 0)
        return 0;
    d = calloc(n, sizeof(*d));
    if (!d)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (pattern_set(&d[i], src[i].key, src[i].value) < 0) {
            patterns_free(d, i);
            return -1;
        }
    }
    *out = d;
    return 0;
}

struct profile *profile_dup(const struct profile *p)
{
    struct profile *d;
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
        profile_free(&d);
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

int profile_from_config(const struct model *m, int max_rank, const char *const *target_modules,
                        size_t n_targets, struct profile **out, struct lorad_error *err)
{
    struct profile *p;

    if (!m || !out || max_rank < 0 || (n_targets > 0 && !target_modules))
        return lorad_error_set(err, LORAD_E_INTERNAL, "profile_from_config: bad arguments");
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
                profile_free(&p);
                return LORAD_E_INVALID_CONFIG;
            }
        }
        p->has_targets = true;
    }
    p->has_limits = p->has_max_rank && p->has_targets;
    *out = p;
    return 0;
}

cJSON *profile_to_json(const struct profile *p, const struct model *m)
{
    cJSON *o, *t, *ap;
    bool rank_known, targets_known;

    if (!p)
        return cJSON_CreateNull();
    rank_known = profile_has_max_rank(p);
    targets_known = profile_has_targets(p);
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

static int pj_fail(struct profile **p, struct lorad_error *err, const char *field)
{
    profile_free(p);
    return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "%s: wrong type or value", field);
}

static int profile_fields_from_json(const cJSON *j, struct profile *p, struct lorad_error *err)
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
        if (pattern_set(&p->alpha_pattern[p->n_alpha_pattern], it->string, it->valuedouble) < 0)
            return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        p->n_alpha_pattern++;
    }
    p->has_fields = true;
    return 0;
}

int profile_from_json(const cJSON *j, const struct model *m, struct profile **out,
                      struct lorad_error *err)
{
    struct profile *p;
    const cJSON *mr, *tm, *it;
    int rc;

    if (!m || !out)
        return lorad_error_set(err, LORAD_E_INTERNAL, "profile_from_json: bad arguments");
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
        if (!cJSON_IsNumber(mr) || mr->valuedouble < 1 || mr->valuedouble > PEFTCFG_RANK_LIMIT ||
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
                profile_free(&p);
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
        profile_free(&p);
        return rc;
    }
    *out = p;
    return 0;
}

bool profile_partial(const struct profile *p)
{
    return !p->has_fields || !profile_has_max_rank(p) || !profile_has_targets(p);
}

/* ---- the compared fields (SPEC 4) ---- */

static const char *bool_str(bool b)
{
    return b ? "true" : "false";
}

static bool alpha_patterns_equal(const struct peftcfg *c, const struct profile *p)
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

static int alpha_mismatch(const struct profile *p, const struct peftcfg *c, struct lorad_error *err)
{
    size_t na = c->n_alpha, np = p->n_alpha_pattern;
    const char **ka = calloc(na + 1, sizeof(*ka)), **kp = calloc(np + 1, sizeof(*kp));
    double *va = calloc(na + 1, sizeof(*va)), *vp = calloc(np + 1, sizeof(*vp));
    char ba[160], bp[160];

    if (ka && kp && va && vp) {
        for (size_t i = 0; i < na; i++) {
            ka[i] = c->alpha_pattern[i].key;
            va[i] = c->alpha_pattern[i].value;
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
    return lorad_error_set(err, LORAD_E_INCOMPATIBLE_CONFIG,
                           "alpha_pattern is %s in this adapter but %s in the profile", ba, bp);
}

int profile_check_fields(const struct profile *p, const struct peftcfg *c, struct lorad_error *err)
{
    if (!p->has_fields)
        return 0;
    if (c->use_rslora != p->use_rslora)
        return lorad_error_set(err, LORAD_E_INCOMPATIBLE_CONFIG,
                               "use_rslora is %s in this adapter but %s in the profile",
                               bool_str(c->use_rslora), bool_str(p->use_rslora));
    if (c->use_dora != p->use_dora)
        return lorad_error_set(err, LORAD_E_INCOMPATIBLE_CONFIG,
                               "use_dora is %s in this adapter but %s in the profile",
                               bool_str(c->use_dora), bool_str(p->use_dora));
    if (c->lora_dropout != p->lora_dropout)
        return lorad_error_set(err, LORAD_E_INCOMPATIBLE_CONFIG,
                               "lora_dropout is %g in this adapter but %g in the profile",
                               c->lora_dropout, p->lora_dropout);
    if (!alpha_patterns_equal(c, p))
        return alpha_mismatch(p, c, err);
    return 0;
}

/* ---- completion from a staged adapter ---- */

void profile_complete_limits(struct profile *p, int largest, const bool *lora)
{
    if (!profile_has_max_rank(p)) {
        p->max_rank = largest;
        p->has_max_rank = true;
    }
    if (!profile_has_targets(p)) {
        for (size_t l = 0; l < p->nlayers; l++)
            p->targets[l] = lora[l];
        p->has_targets = true;
    }
    p->has_limits = profile_has_max_rank(p) && profile_has_targets(p);
}

int profile_complete_fields(struct profile *p, const struct peftcfg *c, struct lorad_error *err)
{
    struct profile_pattern *ap = NULL;

    if (p->has_fields)
        return 0;
    if (c->n_alpha > 0 && !(ap = calloc(c->n_alpha, sizeof(*ap))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    for (size_t i = 0; i < c->n_alpha; i++) {
        if (pattern_set(&ap[i], c->alpha_pattern[i].key, c->alpha_pattern[i].value) < 0) {
            patterns_free(ap, i);
            return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        }
    }
    p->use_rslora = c->use_rslora;
    p->use_dora = c->use_dora;
    p->lora_dropout = c->lora_dropout;
    p->alpha_pattern = ap;
    p->n_alpha_pattern = c->n_alpha;
    p->has_fields = true;
    return 0;
}
