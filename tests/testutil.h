/* lorad — tests/testutil.h: helpers shared by the tests, written
 * independently of lib/ so that what they produce or compute is a real
 * cross-check: a raw safetensors writer, deterministic random numbers, temp
 * directories, and the reference math of SPEC.md section 3 in double
 * precision with naive loops.
 *
 * Ownership: functions returning char * or double * return malloc'd memory
 * the caller frees. All functions abort the test (via ck_abort-like
 * fprintf+abort) on I/O failure: a test environment problem is not a
 * result.
 */
#ifndef LORAD_TESTUTIL_H
#define LORAD_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* ---- deterministic random numbers (splitmix64) ---- */
uint64_t tu_rand(uint64_t *state);
double tu_uniform(uint64_t *state, double lo, double hi);
/* n doubles uniform in [lo, hi), rounded to f32 (so the f32 file and the
 * double reference hold the same values). */
double *tu_rand_array(uint64_t *state, size_t n, double lo, double hi);

/* ---- files ---- */
/* A fresh directory under $TMPDIR (or /tmp); returns its path. */
char *tu_mkdtemp(void);
/* rm -rf path. */
void tu_rmrf(const char *path);
/* path = join(a, b) in a static-free malloc'd string. */
char *tu_path(const char *dir, const char *name);
void tu_write_file(const char *path, const void *data, size_t len);
void tu_write_text(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whole file into memory; *len set. */
uint8_t *tu_read_file(const char *path, size_t *len);
void tu_mkdir(const char *path);

/* ---- raw safetensors writer (independent of lib/safetensors.c) ---- */
struct tu_tensor {
    const char *name;
    const char *dtype; /* "F32", "F16", "BF16", "F64", "I32", ... */
    int ndim;
    uint64_t shape[4];
    const double *values; /* nelems values, encoded as dtype (F32/F16/BF16/F64) */
};
/* Builds the file image: 8-byte LE header length, JSON header (tensors in
 * the given order, offsets contiguous), padded with spaces to a multiple of
 * 8, then the data. `metadata_json` is the text of the __metadata__ object
 * or NULL for {"format":"pt"}. Returns malloc'd image and its length. */
uint8_t *tu_safetensors_image(const struct tu_tensor *t, size_t n, const char *metadata_json,
                              size_t *len);
void tu_write_safetensors(const char *path, const struct tu_tensor *t, size_t n);

/* IEEE encoders written from the definitions (round to nearest even). */
uint16_t tu_f16_bits(double v);
uint16_t tu_bf16_bits(double v);
/* And decoders, for what a reader must produce. */
double tu_f16_value(uint16_t h);
double tu_bf16_value(uint16_t b);
/* The value a dtype can hold nearest to v ("F32", "F16", "BF16"). */
double tu_round_to(const char *dtype, double v);

/* ---- reference math (SPEC.md 3) in double ---- */
double tu_act(const char *act, double x); /* "none", "relu", "gelu", ... */

struct tu_lora {
    int r;
    double scaling;          /* s */
    const double *A;         /* [r][in] */
    const double *B;         /* [out][r] */
    const double *bias_B;    /* [out] or NULL */
    const double *magnitude; /* DoRA m [out] or NULL */
};

struct tu_layer {
    int in, out;
    const char *act;
    const double *W;            /* [out][in] (already in [out][in] order) */
    const double *b;            /* [out] or NULL */
    const struct tu_lora *lora; /* NULL: base only */
};

/* y[rows][out of last] = stack(x[rows][in of first]); naive loops, double. */
void tu_ref_forward(const struct tu_layer *layers, size_t nlayers, const double *x, int rows,
                    double *y);

/* max |a-b| / (atol + rtol*|b|) <= 1 for all i ? returns the worst ratio. */
double tu_worst_ratio(const float *got, const double *want, size_t n, double atol, double rtol);

#endif
