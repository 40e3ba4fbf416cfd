/* lorad — tests/fuzz/fuzz_adapter_config.c: libFuzzer harness of the PEFT
 * adapter_config.json parser and the compatibility checks that follow it
 * (lib/peftcfg.c, lib/profile.c, SPEC.md 2.2, 3, 4), driven through the
 * public adapter_stage() so that what follows the parse (the compared
 * fields, the per-layer ranks, the completed profile) runs on every input.
 *
 * Once per process: a scratch directory with adapter_dir/a/ holding a fixed,
 * valid adapter_model.safetensors (LoRA r=2 on layers.0.proj, r=4 on
 * layers.1.proj) for a two-layer in-memory model, adapter_dir/d/ with the
 * same plus DoRA magnitudes and a modules_to_save weight for layers.1.proj,
 * and adapter_dir/b/ with lora_B biases and that weight instead. Each input is written as
 * a/adapter_config.json and staged three ways: against a fully partial profile, then (when that
 * succeeds) against the profile it completed (which must succeed again: an
 * adapter is compatible with its own profile), and against a profile from
 * the config (max_rank 4, both layers targeted); then as the config of d/
 * and of b/ against the partial profile. Staging must either
 * return a snapshot or an error with a code and a message.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../lib/adapter.h"
#include "../../lib/stwrite.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[256];
static int adir = -1;
static struct model *M;
static struct profile *P_partial, *P_config;

static void cleanup(void)
{
    char cmd[300];
    if (root[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz: could not remove %s\n", root);
    }
}

static void die(const char *what, const struct lorad_error *err)
{
    fprintf(stderr, "fuzz_adapter_config setup: %s: %s\n", what, err ? err->msg : "");
    abort();
}

static void setup(void)
{
    static const char model_json[] =
        "{\"layers\": [{\"name\": \"layers.0.proj\", \"in_features\": 4, \"out_features\": 4, "
        "\"bias\": true, \"activation\": \"relu\"}, {\"name\": \"layers.1.proj\", "
        "\"in_features\": 4, \"out_features\": 3, \"bias\": true}]}";
    static const char *const targets[] = {"layers.0.proj", "layers.1.proj"};
    struct lorad_error err = {0};
    float a0[2 * 4], b0[4 * 2], a1[4 * 4], b1[3 * 4];
    char path[400];
    const char *tmp = getenv("TMPDIR");

    snprintf(root, sizeof(root), "%s/lorad-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root))
        die("mkdtemp", NULL);
    atexit(cleanup);
    snprintf(path, sizeof(path), "%s/adapters", root);
    if (mkdir(path, 0700))
        die("mkdir adapters", NULL);
    snprintf(path, sizeof(path), "%s/adapters/a", root);
    if (mkdir(path, 0700))
        die("mkdir a", NULL);
    for (size_t i = 0; i < 16; i++) {
        if (i < 8) {
            a0[i] = 0.125f * (float)i - 0.5f;
            b0[i] = 0.25f - 0.0625f * (float)i;
        }
        a1[i] = 0.03125f * (float)i;
        if (i < 12)
            b1[i] = -0.5f + 0.0625f * (float)i;
    }
    struct stwrite_tensor t[4] = {
        {"base_model.model.layers.0.proj.lora_A.weight", ST_F32, 2, {2, 4}, a0},
        {"base_model.model.layers.0.proj.lora_B.weight", ST_F32, 2, {4, 2}, b0},
        {"base_model.model.layers.1.proj.lora_A.weight", ST_F32, 2, {4, 4}, a1},
        {"base_model.model.layers.1.proj.lora_B.weight", ST_F32, 2, {3, 4}, b1},
    };
    snprintf(path, sizeof(path), "%s/adapters/a/adapter_model.safetensors", root);
    if (stwrite_file(path, t, 4, &err))
        die("stwrite_file", &err);
    {
        float m0[4] = {1, 0.5f, 2, 1}, m1[3] = {1, 1, 0.25f}, bb0[4] = {0.5f, 0, 0, -0.5f};
        float bb1[3] = {1, 2, 3}, w1[3 * 4];
        for (size_t i = 0; i < 12; i++)
            w1[i] = 0.0625f * (float)i;
        struct stwrite_tensor td[7] = {
            t[0],
            t[1],
            t[2],
            t[3],
            {"base_model.model.layers.1.proj.weight", ST_F32, 2, {3, 4}, w1},
            {"base_model.model.layers.0.proj.lora_magnitude_vector", ST_F32, 1, {4}, m0},
            {"base_model.model.layers.1.proj.lora_magnitude_vector", ST_F32, 1, {3}, m1},
        };
        struct stwrite_tensor tb[7] = {
            t[0],
            t[1],
            t[2],
            t[3],
            td[4],
            {"base_model.model.layers.0.proj.lora_B.bias", ST_F32, 1, {4}, bb0},
            {"base_model.model.layers.1.proj.lora_B.bias", ST_F32, 1, {3}, bb1},
        };
        snprintf(path, sizeof(path), "%s/adapters/d", root);
        if (mkdir(path, 0700))
            die("mkdir d", NULL);
        snprintf(path, sizeof(path), "%s/adapters/d/adapter_model.safetensors", root);
        if (stwrite_file(path, td, 7, &err))
            die("stwrite_file d", &err);
        snprintf(path, sizeof(path), "%s/adapters/b", root);
        if (mkdir(path, 0700))
            die("mkdir b", NULL);
        snprintf(path, sizeof(path), "%s/adapters/b/adapter_model.safetensors", root);
        if (stwrite_file(path, tb, 7, &err))
            die("stwrite_file b", &err);
    }
    if (model_config_parse(model_json, sizeof(model_json) - 1, NULL, &M, &err))
        die("model", &err);
    for (size_t i = 0; i < M->nlayers; i++) {
        struct model_layer *L = &M->layers[i];
        L->weight = calloc((size_t)L->in_features * (size_t)L->out_features, sizeof(float));
        L->bias = calloc((size_t)L->out_features, sizeof(float));
        if (!L->weight || !L->bias)
            die("calloc", NULL);
    }
    if (profile_from_config(M, 0, NULL, 0, &P_partial, &err))
        die("partial profile", &err);
    if (profile_from_config(M, 4, targets, 2, &P_config, &err))
        die("config profile", &err);
    snprintf(path, sizeof(path), "%s/adapters", root);
    adir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (adir < 0)
        die("open adapters", NULL);
}

static int stage(const char *name, const struct profile *p, struct profile **completed)
{
    struct adapter_stage_args a = {adir, name, NULL, M, p};
    struct lorad_error err = {0};
    struct snapshot *s = NULL;
    struct profile *po = NULL;
    int rc = adapter_stage(&a, &s, &po, &err);

    if (getenv("FUZZ_VERBOSE")) /* for checking what the seeds reach */
        fprintf(stderr, "stage %s (%s profile): %d %s\n", name,
                p == P_config    ? "config"
                : p == P_partial ? "partial"
                                 : "completed",
                rc, rc ? err.msg : "ok");

    if (rc == 0) {
        if (!s)
            __builtin_trap();
        snapshot_free(&s);
    } else if (s || po || err.code != rc || err.msg[0] == '\0') {
        __builtin_trap();
    }
    if (completed)
        *completed = po;
    else
        profile_free(&po);
    return rc;
}

static void write_config(const char *name, const uint8_t *data, size_t size)
{
    char path[400];
    FILE *f;
    snprintf(path, sizeof(path), "%s/adapters/%s/adapter_config.json", root, name);
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct profile *done = NULL;

    if (adir < 0)
        setup();
    write_config("a", data, size);
    if (stage("a", P_partial, &done) == 0 && done) {
        if (stage("a", done, NULL) != 0)
            __builtin_trap(); /* must be compatible with the profile it made */
    }
    profile_free(&done);
    stage("a", P_config, NULL);
    write_config("d", data, size);
    stage("d", P_partial, NULL);
    write_config("b", data, size);
    stage("b", P_partial, NULL);
    return 0;
}
