/* lorad — profile.h: the compatibility profile every staged adapter must
 * match (SPEC.md 4).
 *
 * A profile has two halves that may come from different places:
 *   - the limits, max_rank and the target set (the layers that may carry
 *     LoRA), from the config when it sets them, else from the first
 *     adapter (its largest layer rank, rank_pattern included; its LoRA
 *     layers). Each limit may be known alone (the config sets only one).
 *   - the compared PEFT fields, use_rslora, use_dora, lora_dropout and
 *     alpha_pattern, always from the first adapter.
 * A profile whose halves are not all known is "partial" (profile_partial);
 * staging against one completes the missing parts from the staged adapter
 * (profile_complete_limits, profile_complete_fields) on a copy, which the
 * caller adopts when it commits. modules_to_save layers are not part of a
 * profile: any model layer may be replaced.
 *
 * The JSON form (profile_to_json) is /status "profile" (SPEC 6) and the
 * state file's "profile"; profile_from_json reads it back.
 *
 * Ownership: every constructor returns a profile the caller frees with
 * profile_free(), which owns its targets array and alpha_pattern entries.
 * A profile is never changed once shared: the daemon replaces it.
 *
 * Thread-safety: reentrant; a profile is a read-only input that any number
 * of threads may share, and only its owner may complete it.
 */
#ifndef LORAD_PROFILE_H
#define LORAD_PROFILE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "errors.h"
#include "model.h"
#include "peftcfg.h"

struct profile_pattern {
    char *key;    /* the regular expression as written in the file */
    double value; /* alpha */
};

struct profile {
    bool has_limits; /* max_rank and targets both known */
    int max_rank;
    size_t nlayers;            /* == model->nlayers */
    bool *targets;             /* [nlayers]: layer may carry LoRA (always allocated) */
    bool max_rank_from_config; /* for messages */
    /* Each limit may be known alone (config sets only one of them): max_rank
     * is known when has_limits || has_max_rank, the target set when
     * has_limits || has_targets. */
    bool has_max_rank;
    bool has_targets;

    bool has_fields; /* the compared PEFT fields known */
    bool use_rslora;
    bool use_dora;
    double lora_dropout;
    size_t n_alpha_pattern;
    struct profile_pattern *alpha_pattern; /* file order */
};

/* Builds the profile's limits from the config (max_rank > 0 and/or
 * target_modules given; either may be absent: 0 / NULL). A target name is
 * a layer name, or else (as PEFT's target_modules) a suffix after a '.' of
 * layer names; one that designates no layer is LORAD_E_INVALID_CONFIG.
 * With neither given, the profile is fully partial. Caller frees with
 * profile_free(). */
int profile_from_config(const struct model *m, int max_rank, const char *const *target_modules,
                        size_t n_targets, struct profile **out, struct lorad_error *err);

/* Deep copy (NULL on out-of-memory or when p is NULL). */
struct profile *profile_dup(const struct profile *p);

/* Frees *p and everything it owns; sets *p to NULL. Safe on NULL. */
void profile_free(struct profile **p);

/* Whether max_rank / the target set / everything is known. */
bool profile_has_max_rank(const struct profile *p);
bool profile_has_targets(const struct profile *p);
bool profile_partial(const struct profile *p);

/* JSON of SPEC 6 /status "profile": {max_rank, target_modules (names),
 * use_rslora, use_dora, lora_dropout, alpha_pattern}; cJSON null when the
 * profile is partial in both halves; an unknown member is null (max_rank
 * and target_modules each, the four compared fields together). Caller owns
 * the result (NULL on out-of-memory). The same object round-trips through
 * profile_from_json() (state file); errors there are
 * LORAD_E_INVALID_CONFIG naming the member. */
cJSON *profile_to_json(const struct profile *p, const struct model *m);
int profile_from_json(const cJSON *j, const struct model *m, struct profile **out,
                      struct lorad_error *err);

/* SPEC 4's compared fields of adapter config `c` against p's, in the
 * order use_rslora, use_dora, lora_dropout, alpha_pattern (numbers by
 * value, alpha_pattern as a map). 0 when they agree or p does not know
 * them yet, else LORAD_E_INCOMPATIBLE_CONFIG naming the field and both
 * values. */
int profile_check_fields(const struct profile *p, const struct peftcfg *c, struct lorad_error *err);

/* Completes the limits p lacks from an adapter whose LoRA layers are
 * those with lora[l] true (p->nlayers entries) and whose largest layer
 * rank is `largest`. */
void profile_complete_limits(struct profile *p, int largest, const bool *lora);

/* Completes the compared fields, when p lacks them, from adapter config
 * `c`. 0, or LORAD_E_INTERNAL (out of memory; p then still lacks them). */
int profile_complete_fields(struct profile *p, const struct peftcfg *c, struct lorad_error *err);

#endif
