/* lorad — tests/fuzz/fuzz_safetensors.c: libFuzzer harness of the
 * safetensors reader (lib/safetensors.c, SPEC.md 2.3).
 *
 * Every input is handed to st_parse() as a file image. When it is accepted,
 * every accessor is exercised and every tensor's bytes are read (a sum over
 * them), so ASan sees any tensor that points outside the image, and the
 * F32/F16/BF16 ones are converted with st_to_f32(). The image is copied
 * into an exactly sized heap buffer first so that a read one byte past the
 * end is caught.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch_tensor(const struct st_tensor *t, volatile unsigned *sink)
{
    unsigned acc = 0;
    for (size_t i = 0; i < t->nbytes; i++)
        acc += t->data[i];
    *sink += acc + (unsigned)t->ndim + (unsigned)strlen(t->name);
    if ((t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) &&
        t->nelems <= (1u << 20)) {
        float *dst = malloc((size_t)t->nelems * sizeof(float) + 1);
        if (dst) {
            struct lorad_error err = {0};
            if (st_to_f32(t, dst, &err) == 0 && t->nelems)
                *sink += (unsigned)(dst[0] == dst[0]);
            free(dst);
        }
    }
    (void)st_dtype_name(t->dtype);
    (void)st_dtype_size(t->dtype);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static volatile unsigned sink;
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    uint8_t *buf = malloc(size ? size : 1);
    size_t len = 0;

    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (st_parse(buf, size, "fuzz.safetensors", &f, &err) == 0) {
        size_t n = st_count(f);
        for (size_t i = 0; i < n; i++) {
            const struct st_tensor *t = st_get(f, i);
            touch_tensor(t, &sink);
            if (st_find(f, t->name) != t)
                __builtin_trap(); /* a name that is in the table must be found */
        }
        (void)st_find(f, "x");
        (void)st_metadata(f, "format");
        if (st_image(f, &len) != buf || len != size)
            __builtin_trap();
        st_close(&f);
    } else if (err.code == 0 || err.msg[0] == '\0') {
        __builtin_trap(); /* every refusal carries a code and a message */
    }
    free(buf);
    return 0;
}
