/* lorad — tests/fuzz/fuzz_infer.c: libFuzzer harness of the /infer request
 * parsers and answer writers (lib/inferbody.c; SPEC.md 6 data plane).
 *
 * Each input is parsed twice (model width 4, max_rows_per_request 8), from
 * an exact-size heap copy so that a read past the body is caught: as a
 * JSON body and, as the workers would for Content-Type
 * application/octet-stream, as binary rows. Whatever is accepted must be
 * 1..8 rows of finite floats; the harness then writes those rows back as a
 * JSON answer (as an identity model would produce them) and checks that
 * every printed number reads back, with strtof, as the very same f32
 * (SPEC: "%.9g" round trip), and that the binary answer is the exact
 * bytes. A refusal must be LORAD_E_INVALID_REQUEST with a message.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/inferbody.h"

#define WIDTH 4
#define MAX_ROWS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_json_answer(const struct inferbody_req *q, const char *body, size_t len)
{
    const char *p = memchr(body, '[', len);
    const char *end;
    size_t n = 0, want = (size_t)q->rows * WIDTH;

    if (!p || memchr(body, '\0', len) || body[len] != '\0')
        __builtin_trap(); /* no array, a NUL inside the answer, or none after it */
    end = strstr(body, ",\"adapter\":");
    if (!end)
        __builtin_trap();
    while (p < end) {
        if (*p == '[' || *p == ']' || *p == ',') {
            p++;
            continue;
        }
        char *e;
        float f = strtof(p, &e);
        if (e == p || e > end || n >= want)
            __builtin_trap(); /* not a number where one belongs */
        uint32_t a, b;
        memcpy(&a, &f, 4);
        memcpy(&b, &q->x[n], 4);
        if (a != b && !(f == 0 && q->x[n] == 0))
            __builtin_trap(); /* printed value does not round-trip */
        n++;
        p = e;
    }
    if (n != want)
        __builtin_trap();
}

static void check_answers(const struct inferbody_req *q)
{
    struct inferbody_answer a = {q->x, q->rows, WIDTH,          q->multi_rows,
                                 NULL, 0,       SERVING_STABLE, NULL};
    char *body = NULL;
    size_t len = 0;
    int nf = -1;

    if (inferbody_write_json(&a, &body, &len, &nf) == 0) {
        if (nf != 0)
            __builtin_trap(); /* finite rows have no non-finite value */
        check_json_answer(q, body, len);
        free(body);
    }
    if (inferbody_write_binary(&a, &body, &len, &nf) == 0) {
        if (nf != 0 || len != (size_t)q->rows * WIDTH * 4 || memcmp(body, q->x, len) != 0)
            __builtin_trap();
        free(body);
    }
}

static void one(const uint8_t *data, size_t size, bool binary)
{
    struct inferbody_req q;
    struct lorad_error err = {0};
    char *body = malloc(size ? size : 1);
    int rc;

    if (!body)
        return;
    memcpy(body, data, size);
    rc = binary ? inferbody_parse_binary(body, size, WIDTH, MAX_ROWS, &q, &err)
                : inferbody_parse_json(body, size, WIDTH, MAX_ROWS, &q, &err);
    if (rc == 0) {
        if (q.rows < 1 || q.rows > MAX_ROWS || !q.x)
            __builtin_trap();
        for (size_t i = 0; i < (size_t)q.rows * WIDTH; i++)
            if (!isfinite(q.x[i]))
                __builtin_trap();
        if (q.route_key && q.route_key_len > INFERBODY_ROUTE_KEY_MAX)
            __builtin_trap();
        if (inferbody_estimate_rows(body, size, binary, WIDTH) < 1)
            __builtin_trap();
        check_answers(&q);
        inferbody_req_free(&q);
    } else if (rc != LORAD_E_INVALID_REQUEST || err.msg[0] == '\0') {
        __builtin_trap();
    }
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, false);
    one(data, size, true);
    return 0;
}
