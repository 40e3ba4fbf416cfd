/* lorad — tests/fuzz/fuzz_model_config.c: libFuzzer harness of the base
 * model's config.json parser (model_config_parse in lib/model.c, the code
 * model_load runs before it opens model.safetensors; SPEC.md 2.1).
 *
 * An accepted config must describe a chain of layers with sane feature
 * counts; the harness checks that and model_find_layer on every name.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lorad_error err = {0};
    struct model *m = NULL;
    char *buf = malloc(size ? size : 1); /* no NUL: the parser must respect len */

    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (model_config_parse(buf, size, "fuzz/config.json", &m, &err) == 0) {
        if (m->nlayers < 1)
            __builtin_trap();
        for (size_t i = 0; i < m->nlayers; i++) {
            const struct model_layer *L = &m->layers[i];
            if (L->in_features < 1 || L->out_features < 1 || !L->name || L->weight || L->bias)
                __builtin_trap();
            if (i + 1 < m->nlayers && L->out_features != m->layers[i + 1].in_features)
                __builtin_trap();
            if (model_find_layer(m, L->name) != (int)i)
                __builtin_trap(); /* names are unique */
            (void)model_act_name(L->act);
        }
        model_free(&m);
        if (m)
            __builtin_trap();
    } else if (err.code == 0 || err.msg[0] == '\0' || m) {
        __builtin_trap();
    }
    free(buf);
    return 0;
}
