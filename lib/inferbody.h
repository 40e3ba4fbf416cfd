/* lorad — inferbody.h: the bodies of an /infer request and of its answer
 * (SPEC.md 6, data plane), without HTTP.
 *
 * Requests come in two encodings. JSON has a fixed shape
 * ({"input": [...]} or {"inputs": [[...], ...]}, optional "route_key",
 * "variant" and "slot"), so a small strict parser written for that shape reads it:
 * numbers go straight into the row buffer, and every rule of SPEC 6 has its
 * own precise message (malformed JSON with its byte offset, trailing
 * garbage, duplicate and unknown keys, wrong types, row lengths, row
 * counts, values outside the f32 range). Binary bodies are rows of
 * little-endian f32. The caller gives the model's width (in_features) and
 * the row limit (max_rows_per_request); the parser gives rows or
 * LORAD_E_INVALID_REQUEST with the message.
 *
 * Answers: JSON ({"output": [...]} or {"outputs": [[...], ...]}, then
 * "adapter", "version", "variant", "slot") with every f32 printed exactly as
 * printf("%.9g") prints it, so it reads back as the same f32, and every
 * non-finite value as null; or binary, rows of little-endian f32. Both
 * count the rows holding a non-finite value (X-Lorad-Nonfinite).
 *
 * Ownership: the parsers fill a caller's struct inferbody_req with
 * malloc'd pointers that inferbody_req_free() frees (on failure they leave
 * it empty). The writers malloc the answer; the caller frees it. Bodies
 * are read in [body, body + len) only; they need no NUL terminator.
 *
 * Thread-safety: pure functions; any thread.
 */
#ifndef LORAD_INFERBODY_H
#define LORAD_INFERBODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "serving.h"

/* Longest "route_key" a JSON body may carry, in bytes (decoded). */
#define INFERBODY_ROUTE_KEY_MAX 4096
/* No "variant" pin. */
#define INFERBODY_PIN_NONE (-1)
/* Room inferbody_put_f32() needs: "-1.23456789e-38" and more. */
#define INFERBODY_F32_MAX 16

/* A parsed request. */
struct inferbody_req {
    float *x;             /* [rows][width], finite values */
    int rows;             /* 1..max_rows */
    bool multi_rows;      /* "inputs" (the answer says "outputs") */
    char *route_key;      /* "route_key" of a JSON body (NUL-terminated), or NULL */
    size_t route_key_len; /* its length in bytes */
    int pin;              /* "variant": INFERBODY_PIN_NONE or an enum serving_variant */
    char *slot;           /* "slot" (NUL-terminated), or NULL: the default slot */
    size_t slot_len;      /* its length in bytes */
};

/* Parses a JSON body of rows `width` values wide, at most `max_rows` rows
 * (both >= 1). 0, LORAD_E_INVALID_REQUEST with SPEC 6's message, or
 * LORAD_E_INTERNAL (out of memory). */
int inferbody_parse_json(const char *body, size_t len, int width, int max_rows,
                         struct inferbody_req *out, struct lorad_error *err);
/* The same for a binary body: rows of `width` little-endian f32. */
int inferbody_parse_binary(const void *body, size_t len, int width, int max_rows,
                           struct inferbody_req *out, struct lorad_error *err);
/* Frees what a parser put into *r and empties it. */
void inferbody_req_free(struct inferbody_req *r);

/* The rows a body holds, estimated without parsing it (exact for binary
 * bodies; the '[' count less one for JSON), in 1..1000000: what the
 * worker queue batches by. */
int inferbody_estimate_rows(const char *body, size_t len, bool binary, int width);

/* Writes finite or infinite f as printf("%.9g", f) would ("-0", "1e+30",
 * "1.17549435e-38"; no NUL) into o, which has room for INFERBODY_F32_MAX
 * bytes; returns the end of the text. NaN is the caller's to avoid. */
char *inferbody_put_f32(char *o, float f);

/* What an answer says. */
struct inferbody_answer {
    const float *y;      /* [rows][width] outputs */
    int rows, width;     /* rows >= 1 */
    bool multi_rows;     /* "outputs" (rows of rows) instead of "output" */
    const char *adapter; /* the snapshot's name; NULL or "": the base model */
    uint64_t version;    /* 0 for the base model */
    enum serving_variant variant;
    const char *slot; /* the slot that answered; NULL: "default" */
};

/* The JSON answer into *body (malloc'd, *len bytes, NUL-terminated) and
 * the count of rows with a non-finite value into *nonfinite_rows. 0 or
 * LORAD_E_INTERNAL (out of memory). */
int inferbody_write_json(const struct inferbody_answer *a, char **body, size_t *len,
                         int *nonfinite_rows);
/* The binary answer (rows of little-endian f32, as computed). */
int inferbody_write_binary(const struct inferbody_answer *a, char **body, size_t *len,
                           int *nonfinite_rows);

#endif
