/* lorad — model.h: the frozen base model, a stack of linear layers.
 *
 * The model is loaded once at start from `config.json` + `model.safetensors`
 * (SPEC.md 2.1) and is immutable afterwards: every thread may read it
 * without locks for the life of the process. Weights are stored as f32,
 * row-major [in][out] (W^T) whatever the file layout: PyTorch Linear files
 * ([out][in]) are transposed at load, fan_in_fan_out (Conv1D) files already
 * have it. The forward pass y = x W^T + b is then one sgemm with neither
 * operand transposed, which OpenBLAS runs 1.15x (batch 64) to 1.6x (batch
 * 1) faster than the x W^T form, because it packs W faster.
 *
 * Ownership: model_load() allocates; model_free() frees everything.
 */
#ifndef LORAD_MODEL_H
#define LORAD_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

enum model_act {
    MODEL_ACT_NONE,
    MODEL_ACT_RELU,
    MODEL_ACT_GELU, /* erf form */
    MODEL_ACT_GELU_TANH,
    MODEL_ACT_SILU,
    MODEL_ACT_TANH,
    MODEL_ACT_SIGMOID,
};

struct model_layer {
    char *name; /* module path, e.g. "layers.0.proj" */
    int in_features;
    int out_features;
    bool has_bias;
    bool fan_in_fan_out; /* file layout is [in][out] (as memory) */
    enum model_act act;
    float *weight; /* [in_features][out_features]: W^T */
    float *bias;   /* [out_features], or NULL when !has_bias */
};

struct model {
    size_t nlayers;
    struct model_layer *layers;
    int in_features;     /* layers[0].in_features */
    int out_features;    /* layers[nlayers-1].out_features */
    int max_width;       /* max over all in/out features */
    uint64_t parameters; /* weights + biases */
    size_t bytes;        /* bytes of f32 weights and biases held */
};

/* Loads `dir`/config.json and `dir`/model.safetensors. Extra tensors are
 * ignored with one warning written through `warn` (may be NULL) as one
 * line "model: ignoring N extra tensors: a, b, ...". Errors are
 * LORAD_E_INVALID_MODEL (a broken model.safetensors or an unsupported dtype
 * included; the message names the file, key or tensor at fault), or
 * LORAD_E_INTERNAL (out of memory, I/O error). */
int model_load(const char *dir, struct model **out, void (*warn)(const char *line),
               struct lorad_error *err);

/* Parses the text of a config.json (SPEC 2.1; `len` bytes, no NUL needed)
 * exactly as model_load does, without reading any tensor: the result has
 * its layers named, sized and checked for chaining, totals computed, and
 * every weight/bias NULL. `display` (NULL: "config.json") names the file in
 * messages. Errors as model_load's. Used by model_load and the fuzzers;
 * free the result with model_free(). */
int model_config_parse(const char *json, size_t len, const char *display, struct model **out,
                       struct lorad_error *err);

/* Frees the model and sets *m to NULL. Safe on NULL. */
void model_free(struct model **m);

/* Index of the layer called `name`, or -1. */
int model_find_layer(const struct model *m, const char *name);

/* "relu", ... ; and the reverse (returns -1 for an unknown name). */
const char *model_act_name(enum model_act a);
int model_act_parse(const char *s);

/* Replaces *w, a malloc'd [rows][cols] f32 array, with a new [cols][rows]
 * one and frees the old; 0, or -1 (out of memory, *w untouched). Turns a
 * PyTorch [out][in] weight into the [in][out] that lorad holds. */
int model_weight_transpose(float **w, int rows, int cols);

/* Applies activation `a` in place to n floats (exact formulas of SPEC 2.1:
 * gelu = 0.5 x (1 + erf(x / sqrt 2)); gelu_tanh = 0.5 x (1 + tanh(sqrt(2/pi)
 * (x + 0.044715 x^3))); silu = x * sigmoid(x)). */
void model_act_apply(enum model_act a, float *v, size_t n);

#endif
