/* lorad — adapter.h: staging a PEFT LoRA adapter directory into a
 * snapshot, and the /adapters listing.
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
 * The pieces it is built from have their own modules: confine.h opens the
 * files beneath adapter_dir, digest.h hashes (and remembers digests),
 * peftcfg.h parses adapter_config.json, peftkey.h knows the tensor key
 * forms, weights.h converts and checks values and computes DoRA scales,
 * profile.h holds the compatibility profile, compares the config with it
 * and completes a partial one.
 * Staging against a partial profile returns the completed profile, which
 * the caller adopts when it commits.
 *
 * Files are opened confined relative to adapter_dir as "DIR/FILE", DIR
 * the link-free path of the directory NAME led to (a
 * relative symlink may point anywhere inside adapter_dir, e.g. to a sibling
 * adapter or a Hugging Face cache blob; one leaving it, or an absolute one,
 * is forbidden_name), and the safetensors image is mmap()ed from that same
 * fd, so what was checked is what is read; config and weights come from
 * one version of the directory even while NAME is relinked.
 *
 * Ownership: what a function returns (fd, snapshot, completed profile,
 * cJSON array) belongs to the caller; the arguments are borrowed for the
 * call only.
 *
 * Thread-safety: all functions are reentrant and may run on any thread
 * (staging and listing read files: keep them off the loop thread); a
 * profile and a model are read-only inputs that may be shared between
 * threads.
 */
#ifndef LORAD_ADAPTER_H
#define LORAD_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "errors.h"
#include "model.h"
#include "profile.h"
#include "snapshot.h"

/* SPEC 6: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$. */
bool adapter_name_valid(const char *name);

/* Opens directory `name` beneath `adapter_dirfd` with confine_open()
 * (symlinks only if they stay inside).
 * LORAD_E_FORBIDDEN_NAME when the name breaks the rule or resolves outside,
 * LORAD_E_ADAPTER_NOT_FOUND when it does not exist (or is not a directory).
 * On success *dirfd_out is an O_DIRECTORY fd the caller closes. */
int adapter_open_dir(int adapter_dirfd, const char *name, int *dirfd_out, struct lorad_error *err);

struct adapter_stage_args {
    int adapter_dirfd;           /* the configured adapter_dir, opened */
    const char *name;            /* directory name under adapter_dir */
    const char *expected_sha256; /* hex, any case, or NULL */
    const struct model *model;
    const struct profile *profile; /* may be partial */
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
                  struct profile **profile_out, struct lorad_error *err);

/* GET /adapters: one entry per directory under adapter_dirfd whose name is
 * valid and that holds an adapter_config.json or an adapter_model.* (other
 * directories, such as a Hugging Face cache's blobs, refs and models--*,
 * are skipped), sorted by name: {"name", "r", "lora_alpha", "layers":
 * [names], "compatible": bool, "error": {"code","message"} | null}.
 * "layers" are the layers its lora_A tensors name, also when it is
 * incompatible (the model's in model order, then unknown ones). Runs a full
 * stage of each (files are read), so call it off the loop thread. Returns a
 * cJSON array the caller owns, or NULL on out-of-memory. */
cJSON *adapter_describe_all(int adapter_dirfd, const struct model *m,
                            const struct profile *profile);

#endif
