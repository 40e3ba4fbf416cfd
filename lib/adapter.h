/* lorad — adapter.h: PEFT LoRA adapter directories, the compatibility
 * profile, and staging an adapter into a snapshot.
 *
 * Staging (adapter_stage) is the whole off-thread half of a swap: confine
 * and open the directory, read `adapter_config.json`, mmap and validate
 * `adapter_model.safetensors`, check the sha256, check every hot-swap rule
 * of SPEC.md section 4 against the profile in the order SPEC gives (name,
 * checksum, files and safetensors validity, config, tensor names and shapes,
 * ranks, values), convert to f32, compute scalings and DoRA norms, and
 * return a complete snapshot. Nothing serving is touched: the caller
 * publishes the snapshot (serving.c) or frees it.
 *
 * The profile (SPEC 4) has two halves that may come from different places:
 * the limits (max_rank, target set) from the config when set, else from the
 * first adapter; the compared PEFT fields (use_rslora, use_dora,
 * lora_dropout, alpha_pattern) always from the first adapter. A profile
 * whose halves are not both known is "partial"; staging against a partial
 * profile fills the missing halves from the staged adapter and returns the
 * completed profile, which the caller adopts when it commits.
 *
 * Files are opened confined with openat2(RESOLVE_BENEATH) relative to
 * adapter_dir as "NAME/FILE" (a relative symlink may point anywhere inside
 * adapter_dir, e.g. to a sibling adapter or a Hugging Face cache blob; one
 * leaving it, or an absolute one, is forbidden_name), and the safetensors
 * image is mmap()ed from that same fd, so what was checked is what is read;
 * NAME is opened again when it was renamed or relinked meanwhile, so config
 * and weights come from one version.
 * The sha256 of adapter_model.safetensors is always computed (the snapshot
 * records it), but remembered per file identity (device, inode, size,
 * mtime, ctime; only for files whose timestamps were at least 2 s old when
 * hashed), because hashing 16 MiB costs more than the whole staging budget
 * of SPEC 10; two names linked to one file share the entry.
 *
 * Thread-safety: all functions are reentrant (the sha256 memo is guarded by
 * a mutex); a profile and a model are read-only inputs that may be shared
 * between threads.
 */
#ifndef LORAD_ADAPTER_H
#define LORAD_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "errors.h"
#include "model.h"
#include "snapshot.h"

struct adapter_pattern {
    char *key;    /* the regular expression as written in the file */
    double value; /* rank (integral) or alpha */
};

struct adapter_profile {
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
    struct adapter_pattern *alpha_pattern; /* file order */
};

/* SPEC 6: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$. */
bool adapter_name_valid(const char *name);

/* Builds the profile's limits from the config (max_rank > 0 and/or
 * target_modules given; either may be absent: 0 / NULL). A target name is
 * a layer name, or else (as PEFT's target_modules) a suffix after a '.' of
 * layer names; one that designates no layer is LORAD_E_INVALID_CONFIG.
 * With neither given, the profile is fully partial. Caller frees with
 * adapter_profile_free(). */
int adapter_profile_from_config(const struct model *m, int max_rank,
                                const char *const *target_modules, size_t n_targets,
                                struct adapter_profile **out, struct lorad_error *err);

/* Deep copy (NULL on out-of-memory). */
struct adapter_profile *adapter_profile_dup(const struct adapter_profile *p);
void adapter_profile_free(struct adapter_profile **p);

/* JSON of SPEC 6 /status "profile": {max_rank, target_modules (names),
 * use_rslora, use_dora, lora_dropout, alpha_pattern}; cJSON null when the
 * profile is partial in both halves; an unknown member is null (max_rank
 * and target_modules each, the four compared fields together). Caller owns
 * the result (NULL on out-of-memory). The same object round-trips through
 * adapter_profile_from_json() (state file); errors there are
 * LORAD_E_INVALID_CONFIG naming the member. */
cJSON *adapter_profile_to_json(const struct adapter_profile *p, const struct model *m);
int adapter_profile_from_json(const cJSON *j, const struct model *m, struct adapter_profile **out,
                              struct lorad_error *err);

/* Opens directory `name` beneath `adapter_dirfd` with
 * openat2(RESOLVE_BENEATH) (symlinks only if they stay inside).
 * LORAD_E_FORBIDDEN_NAME when the name breaks the rule or resolves outside,
 * LORAD_E_ADAPTER_NOT_FOUND when it does not exist (or is not a directory).
 * On success *dirfd_out is an O_DIRECTORY fd the caller closes. */
int adapter_open_dir(int adapter_dirfd, const char *name, int *dirfd_out, struct lorad_error *err);

struct adapter_stage_args {
    int adapter_dirfd;           /* the configured adapter_dir, opened */
    const char *name;            /* directory name under adapter_dir */
    const char *expected_sha256; /* hex, any case, or NULL */
    const struct model *model;
    const struct adapter_profile *profile; /* may be partial */
};

/* Stages an adapter (see the top of this file). On success returns 0, sets
 * *snap_out to a complete snapshot (version 0) the caller owns, and, when the
 * input profile was partial, *profile_out to the completed profile the
 * caller owns (else *profile_out is NULL). The limits are completed only by
 * an adapter that has LoRA layers (one with modules_to_save tensors only
 * leaves them for the next). On failure nothing is allocated and err names
 * what is wrong with one of the codes of SPEC 4 / 6. Config fields PEFT
 * always writes default as PEFT does when absent (r 8, lora_alpha 8). */
int adapter_stage(const struct adapter_stage_args *a, struct snapshot **snap_out,
                  struct adapter_profile **profile_out, struct lorad_error *err);

/* GET /adapters: one entry per directory under adapter_dirfd whose name is
 * valid, sorted by name: {"name", "r", "lora_alpha", "layers": [names],
 * "compatible": bool, "error": {"code","message"} | null}. Runs a full
 * stage of each (files are read), so call it off the loop thread. Returns a
 * cJSON array the caller owns, or NULL on out-of-memory. */
cJSON *adapter_describe_all(int adapter_dirfd, const struct model *m,
                            const struct adapter_profile *profile);

#endif
