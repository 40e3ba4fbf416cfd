/* lorad — model.c: loads the frozen base model (config.json +
 * model.safetensors, SPEC.md 2.1) into f32 [in][out] arrays, and the
 * activation functions. See model.h for the contract.
 *
 * Loading is two passes: the config is parsed and checked completely (types,
 * activations, chaining, duplicate names) before model.safetensors is
 * opened; then every expected tensor is looked up, shape-checked, converted
 * and checked for finiteness, and whatever the file holds beyond that is
 * reported once through the warning callback.
 */
#include "model.h"
#include "fileio.h"
#include "jsontext.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "safetensors.h"

/* Caps that keep a hostile or mistaken config from asking for absurd
 * allocations before a single tensor is looked at. */
#define MODEL_CONFIG_MAX_BYTES (16u * 1024u * 1024u)
#define MODEL_MAX_FEATURES (1 << 20)
#define MODEL_MAX_LAYERS 4096
#define MODEL_WARN_MAX 1024
#define MODEL_MAX_NAME 512

static const char *const act_names[] = {
    [MODEL_ACT_NONE] = "none",           [MODEL_ACT_RELU] = "relu", [MODEL_ACT_GELU] = "gelu",
    [MODEL_ACT_GELU_TANH] = "gelu_tanh", [MODEL_ACT_SILU] = "silu", [MODEL_ACT_TANH] = "tanh",
    [MODEL_ACT_SIGMOID] = "sigmoid",
};
#define N_ACTS (sizeof(act_names) / sizeof(act_names[0]))

const char *model_act_name(enum model_act a)
{
    if ((size_t)a >= N_ACTS)
        return "none";
    return act_names[a];
}

int model_act_parse(const char *s)
{
    if (!s)
        return -1;
    for (size_t i = 0; i < N_ACTS; i++)
        if (strcmp(s, act_names[i]) == 0)
            return (int)i;
    return -1;
}

void model_act_apply(enum model_act a, float *v, size_t n)
{
    size_t i;
    switch (a) {
    case MODEL_ACT_NONE:
        break;
    case MODEL_ACT_RELU:
        /* `v < 0` is false for NaN: NaN propagates, as in PyTorch. */
        for (i = 0; i < n; i++)
            v[i] = v[i] < 0.0f ? 0.0f : v[i];
        break;
    case MODEL_ACT_GELU:
        for (i = 0; i < n; i++)
            v[i] = 0.5f * v[i] * (1.0f + erff(v[i] * (float)M_SQRT1_2));
        break;
    case MODEL_ACT_GELU_TANH: {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        for (i = 0; i < n; i++) {
            float x = v[i];
            v[i] = 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
        }
        break;
    }
    case MODEL_ACT_SILU:
        for (i = 0; i < n; i++)
            v[i] = v[i] / (1.0f + expf(-v[i]));
        break;
    case MODEL_ACT_TANH:
        for (i = 0; i < n; i++)
            v[i] = tanhf(v[i]);
        break;
    case MODEL_ACT_SIGMOID:
        for (i = 0; i < n; i++)
            v[i] = 1.0f / (1.0f + expf(-v[i]));
        break;
    }
}

/* ---- config.json ---- */

static char *read_small_file(const char *path, size_t max, size_t *len, struct lorad_error *err)
{
    char *buf = NULL;
    int rc = fileio_read_path(path, max, &buf, len);
    if (rc < 0) {
        lorad_error_set(err, rc == -ENOMEM ? LORAD_E_INTERNAL : LORAD_E_INVALID_MODEL,
                        "%s: cannot read: %s", path, fileio_strerror(rc));
        return NULL;
    }
    return buf;
}

/* A positive integer feature count: JSON number, integral, 1..MAX. */
static int get_features(const cJSON *layer, size_t i, const char *key, int *out,
                        struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(layer, key);
    if (!v)
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "config.json: layers[%zu].%s: missing (a positive integer)", i, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1) || v->valuedouble > MODEL_MAX_FEATURES ||
        v->valuedouble != floor(v->valuedouble))
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "config.json: layers[%zu].%s: must be a positive integer "
                               "(at most %d)",
                               i, key, MODEL_MAX_FEATURES);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *layer, size_t i, const char *key, bool *out,
                    struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(layer, key);
    if (!v) {
        *out = false;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "config.json: layers[%zu].%s: must be true or false", i, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int parse_layer(const cJSON *jl, size_t i, struct model_layer *L, struct lorad_error *err)
{
    const cJSON *name, *act;
    int rc, a;

    if (!cJSON_IsObject(jl))
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "config.json: layers[%zu]: must be an object", i);
    name = cJSON_GetObjectItemCaseSensitive(jl, "name");
    if (!name)
        return lorad_error_set(err, LORAD_E_INVALID_MODEL, "config.json: layers[%zu].name: missing",
                               i);
    if (!cJSON_IsString(name) || !name->valuestring[0] ||
        strlen(name->valuestring) > MODEL_MAX_NAME)
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "config.json: layers[%zu].name: must be a non-empty string of "
                               "at most %d bytes",
                               i, MODEL_MAX_NAME);
    if ((rc = get_features(jl, i, "in_features", &L->in_features, err)) ||
        (rc = get_features(jl, i, "out_features", &L->out_features, err)) ||
        (rc = get_bool(jl, i, "bias", &L->has_bias, err)) ||
        (rc = get_bool(jl, i, "fan_in_fan_out", &L->fan_in_fan_out, err)))
        return rc;
    act = cJSON_GetObjectItemCaseSensitive(jl, "activation");
    L->act = MODEL_ACT_NONE;
    if (act) {
        if (!cJSON_IsString(act))
            return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                                   "config.json: layers[%zu].activation: must be a string", i);
        a = model_act_parse(act->valuestring);
        if (a < 0)
            return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                                   "config.json: layers[%zu].activation: unknown \"%.64s\" "
                                   "(valid: none, relu, gelu, gelu_tanh, silu, tanh, sigmoid)",
                                   i, act->valuestring);
        L->act = (enum model_act)a;
    }
    L->name = strdup(name->valuestring);
    if (!L->name)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    return 0;
}

/* Chaining and unique names, once every layer parsed. */
static int check_layers(const struct model *m, struct lorad_error *err)
{
    for (size_t i = 0; i < m->nlayers; i++) {
        const struct model_layer *L = &m->layers[i];
        if (i + 1 < m->nlayers && L->out_features != m->layers[i + 1].in_features)
            return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                                   "config.json: layers do not chain: layers[%zu] (%s) has "
                                   "out_features %d but layers[%zu] (%s) has in_features %d",
                                   i, L->name, L->out_features, i + 1, m->layers[i + 1].name,
                                   m->layers[i + 1].in_features);
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->layers[j].name, L->name) == 0)
                return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                                       "config.json: layers[%zu] and layers[%zu] are both "
                                       "named \"%s\"",
                                       j, i, L->name);
    }
    return 0;
}

/* Parses config.json text (len bytes, NUL not needed) into m->layers;
 * `display` names the file in messages. */
static int parse_config_text(const char *text, size_t len, const char *display, struct model *m,
                             struct lorad_error *err)
{
    cJSON *root = NULL;
    const cJSON *layers;
    int rc;

    if (json_has_nul_escape(text, len))
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "%s: a string contains a NUL character (\\u0000)", display);
    root = cJSON_ParseWithLength(text, len);
    if (!root) {
        rc =
            lorad_error_set(err, LORAD_E_INVALID_MODEL, "%s: malformed JSON near byte %td", display,
                            cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : (ptrdiff_t)0);
        goto fail;
    }
    layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(layers) || cJSON_GetArraySize(layers) < 1 ||
        cJSON_GetArraySize(layers) > MODEL_MAX_LAYERS) {
        rc = lorad_error_set(err, LORAD_E_INVALID_MODEL,
                             "%s: layers: must be an array of 1 to %d layer objects", display,
                             MODEL_MAX_LAYERS);
        goto fail;
    }
    m->nlayers = (size_t)cJSON_GetArraySize(layers);
    m->layers = calloc(m->nlayers, sizeof(*m->layers));
    if (!m->layers) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < m->nlayers; i++)
        if ((rc = parse_layer(cJSON_GetArrayItem(layers, (int)i), i, &m->layers[i], err)))
            goto fail;
    rc = check_layers(m, err);
fail:
    cJSON_Delete(root);
    return rc;
}

static int parse_config(const char *dir, struct model *m, struct lorad_error *err)
{
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    int rc;

    snprintf(path, sizeof(path), "%s/config.json", dir);
    text = read_small_file(path, MODEL_CONFIG_MAX_BYTES, &len, err);
    if (!text)
        return err ? err->code : LORAD_E_INVALID_MODEL;
    rc = parse_config_text(text, len, path, m, err);
    free(text);
    return rc;
}

static void compute_totals(struct model *m);

int model_config_parse(const char *json, size_t len, const char *display, struct model **out,
                       struct lorad_error *err)
{
    struct model *m;
    int rc;

    if (!json || !out)
        return lorad_error_set(err, LORAD_E_INTERNAL, "model_config_parse: bad arguments");
    *out = NULL;
    if (len > MODEL_CONFIG_MAX_BYTES)
        return lorad_error_set(err, LORAD_E_INVALID_MODEL, "%s: larger than %u bytes",
                               display ? display : "config.json", MODEL_CONFIG_MAX_BYTES);
    m = calloc(1, sizeof(*m));
    if (!m)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    rc = parse_config_text(json, len, display ? display : "config.json", m, err);
    if (rc) {
        model_free(&m);
        return rc;
    }
    compute_totals(m);
    *out = m;
    return 0;
}

/* ---- model.safetensors ---- */

static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0)
        return NULL;
    return p;
}

static void shape_str(const struct st_tensor *t, char *buf, size_t len)
{
    size_t off = 0;
    off += (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < t->ndim && off < len; d++)
        off += (size_t)snprintf(buf + off, len - off, "%s%llu", d ? ", " : "",
                                (unsigned long long)t->shape[d]);
    if (off < len)
        snprintf(buf + off, len - off, "]");
}

/* Finds `name`, checks its shape is [d0] (nd 1) or [d0, d1] (nd 2), converts
 * it into the freshly allocated *out, and checks every value is finite. */
static int load_tensor(const struct st_file *f, const char *name, int nd, uint64_t d0, uint64_t d1,
                       float **out, struct lorad_error *err)
{
    const struct st_tensor *t = st_find(f, name);
    char want[64], got[160];
    float *v = NULL;
    int rc;

    if (nd == 1)
        snprintf(want, sizeof(want), "[%llu]", (unsigned long long)d0);
    else
        snprintf(want, sizeof(want), "[%llu, %llu]", (unsigned long long)d0,
                 (unsigned long long)d1);
    if (!t)
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "model.safetensors: missing tensor %s (expected shape %s)", name,
                               want);
    if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        shape_str(t, got, sizeof(got));
        return lorad_error_set(err, LORAD_E_INVALID_MODEL,
                               "model.safetensors: tensor %s has shape %s, expected %s", name, got,
                               want);
    }
    v = alloc_floats((size_t)t->nelems);
    if (!v)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory loading %s", name);
    if ((rc = st_to_f32(t, v, err))) {
        lorad_error_prefix(err, "model.safetensors");
        goto fail;
    }
    for (uint64_t i = 0; i < t->nelems; i++)
        if (!isfinite(v[i])) {
            rc = lorad_error_set(err, LORAD_E_INVALID_MODEL,
                                 "model.safetensors: tensor %s holds a non-finite value at "
                                 "element %llu",
                                 name, (unsigned long long)i);
            goto fail;
        }
    *out = v;
    return 0;
fail:
    free(v);
    return rc;
}

int model_weight_transpose(float **w, int rows, int cols)
{
    float *t = alloc_floats((size_t)rows * (size_t)cols);
    if (!t)
        return -1;
    for (size_t r = 0; r < (size_t)rows; r++)
        for (size_t c = 0; c < (size_t)cols; c++)
            t[c * (size_t)rows + r] = (*w)[r * (size_t)cols + c];
    free(*w);
    *w = t;
    return 0;
}

/* The weight is held [in][out] (see model.h): a PyTorch Linear file
 * ([out][in]) is transposed once here, a fan_in_fan_out file already has
 * that layout. */
static int load_layer(const struct st_file *f, struct model_layer *L, struct lorad_error *err)
{
    char name[1024];
    int rc;
    uint64_t in = (uint64_t)L->in_features, out = (uint64_t)L->out_features;

    snprintf(name, sizeof(name), "%s.weight", L->name);
    rc = L->fan_in_fan_out ? load_tensor(f, name, 2, in, out, &L->weight, err)
                           : load_tensor(f, name, 2, out, in, &L->weight, err);
    if (rc)
        return rc;
    if (!L->fan_in_fan_out && model_weight_transpose(&L->weight, L->out_features, L->in_features))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory transposing %s", name);
    if (!L->has_bias)
        return 0;
    snprintf(name, sizeof(name), "%s.bias", L->name);
    return load_tensor(f, name, 1, out, 0, &L->bias, err);
}

/* Is `tname` one of the tensors the config asks for? */
static bool tensor_expected(const struct model *m, const char *tname)
{
    for (size_t i = 0; i < m->nlayers; i++) {
        const struct model_layer *L = &m->layers[i];
        size_t n = strlen(L->name);
        if (strncmp(tname, L->name, n) != 0 || tname[n] != '.')
            continue;
        if (strcmp(tname + n + 1, "weight") == 0)
            return true;
        if (L->has_bias && strcmp(tname + n + 1, "bias") == 0)
            return true;
    }
    return false;
}

static void warn_extra(const struct model *m, const struct st_file *f,
                       void (*warn)(const char *line))
{
    char names[MODEL_WARN_MAX], line[MODEL_WARN_MAX + 128];
    size_t n = 0, off = 0;

    names[0] = '\0';
    for (size_t i = 0; i < st_count(f); i++) {
        const char *tn = st_get(f, i)->name;
        if (tensor_expected(m, tn))
            continue;
        n++;
        if (off + strlen(tn) + 8 < sizeof(names))
            off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", off ? ", " : "", tn);
        else if (off + 5 < sizeof(names) && !strstr(names, ", ..."))
            off += (size_t)snprintf(names + off, sizeof(names) - off, ", ...");
    }
    if (n == 0 || !warn)
        return;
    snprintf(line, sizeof(line), "model: ignoring %zu extra tensor%s: %s", n, n == 1 ? "" : "s",
             names);
    warn(line);
}

static void compute_totals(struct model *m)
{
    m->in_features = m->layers[0].in_features;
    m->out_features = m->layers[m->nlayers - 1].out_features;
    m->max_width = 0;
    m->parameters = 0;
    for (size_t i = 0; i < m->nlayers; i++) {
        const struct model_layer *L = &m->layers[i];
        uint64_t p = (uint64_t)L->in_features * (uint64_t)L->out_features;
        if (L->has_bias)
            p += (uint64_t)L->out_features;
        m->parameters += p;
        if (L->in_features > m->max_width)
            m->max_width = L->in_features;
        if (L->out_features > m->max_width)
            m->max_width = L->out_features;
    }
    m->bytes = (size_t)m->parameters * sizeof(float);
}

int model_load(const char *dir, struct model **out, void (*warn)(const char *line),
               struct lorad_error *err)
{
    struct model *m = NULL;
    struct st_file *f = NULL;
    char path[4096];
    int rc;

    if (!dir || !out)
        return lorad_error_set(err, LORAD_E_INTERNAL, "model_load: bad arguments");
    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    if ((rc = parse_config(dir, m, err)))
        goto fail;
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if ((rc = st_open(path, &f, err))) {
        if (rc == LORAD_E_ADAPTER_NOT_FOUND)
            rc = lorad_error_set(err, LORAD_E_INVALID_MODEL, "%s: no such file", path);
        goto fail;
    }
    for (size_t i = 0; i < m->nlayers; i++)
        if ((rc = load_layer(f, &m->layers[i], err)))
            goto fail;
    warn_extra(m, f, warn);
    compute_totals(m);
    st_close(&f);
    *out = m;
    return 0;
fail:
    /* Any fault of the model files (format, dtype) is a model error; the
     * safetensors message already names the file and the rule. */
    if (rc != LORAD_E_INTERNAL && rc != LORAD_E_INVALID_MODEL) {
        rc = LORAD_E_INVALID_MODEL;
        if (err)
            err->code = rc;
    }
    st_close(&f);
    model_free(&m);
    return rc;
}

void model_free(struct model **mp)
{
    struct model *m;
    if (!mp || !*mp)
        return;
    m = *mp;
    for (size_t i = 0; m->layers && i < m->nlayers; i++) {
        free(m->layers[i].name);
        free(m->layers[i].weight);
        free(m->layers[i].bias);
    }
    free(m->layers);
    free(m);
    *mp = NULL;
}

int model_find_layer(const struct model *m, const char *name)
{
    if (!m || !name)
        return -1;
    for (size_t i = 0; i < m->nlayers; i++)
        if (strcmp(m->layers[i].name, name) == 0)
            return (int)i;
    return -1;
}
