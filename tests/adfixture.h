/* lorad — tests/adfixture.h: the adapter fixture shared by the tests of
 * staging and of the modules staging is built from (test_adapter,
 * test_confine, test_peftcfg, test_profile, test_digest).
 *
 * A small base model of AF_NL layers (one with fan_in_fan_out, one without
 * bias) is written with testutil's independent safetensors writer and
 * loaded; adapters are crafted in a scratch adapter_dir, each from a
 * struct af_adapter (config text plus tensors of random values rounded to
 * their dtype, kept for the reference), and staged through the public
 * adapter_stage(). Unlike testutil, this fixture uses lib/ (model_load,
 * adapter_stage, profile_from_config): it is a harness, not a reference.
 *
 * Use: tcase_add_checked_fixture(tc, af_setup, af_teardown); every
 * function then works on AF. Failures abort the test (ck_assert).
 *
 * Ownership: af_write returns a malloc'd path; af_expect_ok, af_profile_of
 * and af_config_profile return objects the caller frees
 * (snapshot_free/profile_free); af_free frees what an af_adapter holds.
 */
#ifndef LORAD_ADFIXTURE_H
#define LORAD_ADFIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/adapter.h"
#include "testutil.h"

/* ---- the small base model every test serves ---- */

#define AF_NL 3
extern const int AF_IN[AF_NL];
extern const int AF_OUT[AF_NL];
extern const char *const AF_NAMES[AF_NL]; /* "layers.0.proj", "layers.1.proj", "head" */
extern const char *const AF_ACTS[AF_NL];
extern const bool AF_HASB[AF_NL];
extern const bool AF_FIFO[AF_NL]; /* layer 1 stored [in, out] */

struct af_fixture {
    char *root, *adir;
    int adirfd;
    struct model *m;
    double *W[AF_NL]; /* [out][in] */
    double *b[AF_NL];
    struct profile *empty; /* fully partial profile */
    uint64_t rng;
};
extern struct af_fixture AF;

void af_setup(void);
void af_teardown(void);

/* ---- building adapters ---- */

#define AD_MAX 32
struct af_adapter {
    char name[160];
    char cfg[2048];
    bool no_cfg, no_st;
    struct tu_tensor t[AD_MAX];
    size_t n;
    double *vals[AD_MAX];
};

/* A config {"peft_type": "LORA", "r", "lora_alpha", ...cfg_extra}, no
 * tensors yet. */
void af_init(struct af_adapter *a, const char *name, const char *cfg_extra, int r, double alpha);
/* Adds a tensor of random values in [lo, hi) rounded to dtype; returns the
 * values (kept by a, freed by af_free). */
double *af_add(struct af_adapter *a, const char *key, const char *dtype, int ndim, uint64_t d0,
               uint64_t d1, double lo, double hi);
/* The same for "base_model.model.<layer name>.<part>". */
double *af_lora(struct af_adapter *a, int layer, const char *part, const char *dtype, uint64_t d0,
                uint64_t d1, int ndim);
/* lora_A [r, in] and lora_B [out, r] of layer l (values out when not NULL). */
void af_ab(struct af_adapter *a, int l, int r, const char *dtype, double **A, double **B);
/* Writes the adapter under adapter_dir; returns its directory path. */
char *af_write(struct af_adapter *a);
void af_free(struct af_adapter *a);
/* Writes and frees an adapter with LoRA r on the layers of bit mask
 * `layers`, or with per-layer ranks (0: none). */
void af_simple(const char *name, const char *extra, int r, double alpha, unsigned layers);
void af_ranked(const char *name, const char *extra, int r, double alpha, const int *ranks);

/* ---- staging helpers ---- */

/* adapter_stage of `name` against p (NULL: the fully partial profile). */
int af_stage(const char *name, const struct profile *p, const char *sha, struct snapshot **snap,
             struct profile **pout, struct lorad_error *err);
/* Stages and expects `code` with every substring of the NULL-terminated
 * list in the message. */
void af_expect_err(const char *name, const struct profile *p, const char *sha, int code, ...);
/* Stages and expects success; *pout the completed profile (when pout). */
struct snapshot *af_expect_ok(const char *name, const struct profile *p, const char *sha,
                              struct profile **pout);
/* A profile completed from adapter `name` (staged against the empty one). */
struct profile *af_profile_of(const char *name);
/* profile_from_config on the fixture's model. */
struct profile *af_config_profile(int max_rank, const char *const *t, size_t n);

/* Makes `path` (relative to adapter_dir) a symlink to `target`, replacing
 * the file there if any. */
void af_relink(const char *path, const char *target);
/* sha256 of a file by the sha256sum tool (independent of lib/digest.c). */
void af_sha256sum(const char *path, char out[65]);

#endif
