/* lorad — tests/fuzz/fuzz_infer.c: libFuzzer harness of the /infer request
 * parser and answer formatter (daemon/infer.c: infer_parse,
 * infer_format_ok; SPEC.md 6 data plane).
 *
 * Each input is parsed twice against a fake server (model width 4,
 * max_rows_per_request 8): as a JSON body and, as the workers would for
 * Content-Type application/octet-stream, as binary rows. Whatever is
 * accepted must be 1..8 rows of finite floats; the harness then formats
 * those rows back as a JSON answer (as an identity model would produce
 * them) and checks that every printed number reads back, with strtof, as
 * the very same f32 (SPEC: "%.9g" round trip), and that the binary answer is
 * the exact bytes.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/dataplane.h"
#include "../../daemon/lorad.h"

#define WIDTH 4
#define MAX_ROWS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* lorad_now_ns lives in daemon/main.c, which is not linked here. */
uint64_t lorad_now_ns(void)
{
    return 0;
}

static void check_json_answer(const struct infer_job *j)
{
    const char *p = memchr(j->resp_body, '[', j->resp_len);
    const char *end = j->resp_body + j->resp_len;
    const char *stop;
    size_t n = 0, want = (size_t)j->rows * WIDTH;
    char *copy;

    if (!p || memchr(j->resp_body, '\0', j->resp_len))
        __builtin_trap(); /* no array, or a NUL inside the answer */
    copy = malloc(j->resp_len + 1);
    if (!copy)
        return;
    memcpy(copy, j->resp_body, j->resp_len);
    copy[j->resp_len] = '\0';
    stop = strstr(copy, ",\"adapter\":");
    if (!stop)
        __builtin_trap();
    p = copy + (p - j->resp_body);
    end = stop;
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
        memcpy(&b, &j->x[n], 4);
        if (a != b && !(f == 0 && j->x[n] == 0))
            __builtin_trap(); /* printed value does not round-trip */
        n++;
        p = e;
    }
    if (n != want)
        __builtin_trap();
    free(copy);
}

static void one(const struct lorad_server *srv, const uint8_t *data, size_t size, bool binary)
{
    struct http_request req;
    struct infer_job *j = calloc(1, sizeof(*j));
    struct lorad_error err = {0};
    int rc;

    if (!j)
        return;
    memset(&req, 0, sizeof(req));
    req.body = malloc(size + 1);
    if (!req.body) {
        free(j);
        return;
    }
    memcpy(req.body, data, size);
    req.body[size] = '\0';
    req.body_len = size;
    j->r = &req;
    j->binary = binary;
    j->variant = SERVING_STABLE;
    rc = infer_parse(srv, j, &err);
    if (rc == 0) {
        if (j->rows < 1 || j->rows > MAX_ROWS || !j->x)
            __builtin_trap();
        for (size_t i = 0; i < (size_t)j->rows * WIDTH; i++)
            if (!isfinite(j->x[i]))
                __builtin_trap();
        if (j->route_key && j->route_key_len > 4096)
            __builtin_trap();
        j->binary = false;
        if (infer_format_ok(srv, j, NULL, j->x) == 0)
            check_json_answer(j);
        j->binary = true;
        if (infer_format_ok(srv, j, NULL, j->x) == 0 &&
            (j->resp_len != (size_t)j->rows * WIDTH * 4 ||
             memcmp(j->resp_body, j->x, j->resp_len) != 0))
            __builtin_trap();
    } else if (rc != LORAD_E_INVALID_REQUEST || err.msg[0] == '\0') {
        __builtin_trap();
    }
    infer_job_free(&j);
    free(req.body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct model m;
    static struct lorad_server srv;

    if (!srv.model) {
        m.nlayers = 0;
        m.in_features = WIDTH;
        m.out_features = WIDTH;
        m.max_width = WIDTH;
        srv.model = &m;
        srv.cfg.max_rows_per_request = MAX_ROWS;
        srv.cfg.max_body_bytes = 1 << 20;
    }
    one(&srv, data, size, false);
    one(&srv, data, size, true);
    return 0;
}
