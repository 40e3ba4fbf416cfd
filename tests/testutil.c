/* lorad — tests/testutil.c: independent helpers for the tests (see
 * testutil.h). Nothing here calls lib/. */
#include "testutil.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "testutil: %s: %s\n", what, strerror(errno));
    abort();
}

uint64_t tu_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double tu_uniform(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * ((double)(tu_rand(s) >> 11) / 9007199254740992.0);
}

double *tu_rand_array(uint64_t *s, size_t n, double lo, double hi)
{
    double *a = malloc((n ? n : 1) * sizeof(*a));
    if (!a)
        die("malloc");
    for (size_t i = 0; i < n; i++)
        a[i] = (float)tu_uniform(s, lo, hi);
    return a;
}

char *tu_mkdtemp(void)
{
    const char *tmp = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s/lorad-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(buf))
        die("mkdtemp");
    return strdup(buf);
}

void tu_rmrf(const char *path)
{
    char cmd[8192];
    if (!path || !*path || strcmp(path, "/") == 0)
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "testutil: could not remove %s\n", path);
}

char *tu_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p)
        die("malloc");
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        die(path);
    if (len && fwrite(data, 1, len, f) != len)
        die(path);
    if (fclose(f) != 0)
        die(path);
}

void tu_write_text(const char *path, const char *fmt, ...)
{
    va_list ap;
    FILE *f = fopen(path, "w");
    if (!f)
        die(path);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    if (fclose(f) != 0)
        die(path);
}

uint8_t *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f)
        die(path);
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        die(path);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        die(path);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

void tu_mkdir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die(path);
}

/* ---- IEEE encoders from the definitions ---- */

/* Rounds v to a binary float with `mant` explicit mantissa bits, minimum
 * normal exponent emin and maximum finite exponent emax; returns the value. */
static double round_ieee(double v, int mant, int emin, int emax)
{
    if (isnan(v) || isinf(v) || v == 0)
        return v;
    double a = fabs(v);
    int e;
    frexp(a, &e); /* a = f * 2^e, f in [0.5, 1) */
    e -= 1;       /* a = g * 2^e, g in [1, 2) */
    if (e < emin)
        e = emin; /* subnormal: fixed quantum */
    double quantum = ldexp(1.0, e - mant);
    double q = a / quantum;
    double r = nearbyint(q); /* default rounding mode: nearest even */
    double out = r * quantum;
    double maxfin = ldexp(2.0 - ldexp(1.0, -mant), emax);
    if (out > maxfin)
        out = INFINITY;
    return copysign(out, v);
}

double tu_round_to(const char *dtype, double v)
{
    if (strcmp(dtype, "F16") == 0)
        return round_ieee(v, 10, -14, 15);
    if (strcmp(dtype, "BF16") == 0)
        return round_ieee(v, 7, -126, 127);
    if (strcmp(dtype, "F32") == 0)
        return round_ieee(v, 23, -126, 127);
    return v;
}

static uint16_t encode_small(double v, int mant, int ebits, int bias)
{
    uint16_t sign = signbit(v) ? 1u << (mant + ebits) : 0;
    uint16_t expmask = (uint16_t)((1u << ebits) - 1);
    if (isnan(v))
        return (uint16_t)(sign | (expmask << mant) | (1u << (mant - 1)));
    double r = round_ieee(v, mant, 1 - bias, bias);
    double a = fabs(r);
    if (isinf(a))
        return (uint16_t)(sign | (expmask << mant));
    if (a == 0)
        return sign;
    int e;
    frexp(a, &e);
    e -= 1;
    if (e < 1 - bias) /* subnormal */
        return (uint16_t)(sign | (uint16_t)(a / ldexp(1.0, 1 - bias - mant)));
    double frac = a / ldexp(1.0, e) - 1.0;
    return (uint16_t)(sign | ((uint16_t)(e + bias) << mant) |
                      (uint16_t)nearbyint(frac * (1 << mant)));
}

uint16_t tu_f16_bits(double v)
{
    return encode_small(v, 10, 5, 15);
}

uint16_t tu_bf16_bits(double v)
{
    return encode_small(v, 7, 8, 127);
}

static double decode_small(uint16_t h, int mant, int ebits, int bias)
{
    int sign = (h >> (mant + ebits)) & 1;
    int e = (h >> mant) & ((1 << ebits) - 1);
    int f = h & ((1 << mant) - 1);
    double v;
    if (e == (1 << ebits) - 1)
        v = f ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)f, 1 - bias - mant);
    else
        v = ldexp(1.0 + (double)f / (1 << mant), e - bias);
    return sign ? -v : v;
}

double tu_f16_value(uint16_t h)
{
    return decode_small(h, 10, 5, 15);
}

double tu_bf16_value(uint16_t b)
{
    return decode_small(b, 7, 8, 127);
}

/* ---- raw safetensors writer ---- */

static size_t dtype_size(const char *d)
{
    if (!strcmp(d, "F64") || !strcmp(d, "I64") || !strcmp(d, "U64"))
        return 8;
    if (!strcmp(d, "F32") || !strcmp(d, "I32") || !strcmp(d, "U32"))
        return 4;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16") || !strcmp(d, "U16"))
        return 2;
    return 1;
}

static void put_value(uint8_t *p, const char *d, double v)
{
    if (!strcmp(d, "F32")) {
        float f = (float)v;
        memcpy(p, &f, 4); /* the test machines are little-endian */
    } else if (!strcmp(d, "F64")) {
        memcpy(p, &v, 8);
    } else if (!strcmp(d, "F16") || !strcmp(d, "BF16")) {
        uint16_t h = !strcmp(d, "F16") ? tu_f16_bits(v) : tu_bf16_bits(v);
        p[0] = (uint8_t)(h & 0xff);
        p[1] = (uint8_t)(h >> 8);
    } else if (!strcmp(d, "I32")) {
        int32_t i = (int32_t)v;
        memcpy(p, &i, 4);
    } else {
        memset(p, (int)v, dtype_size(d));
    }
}

uint8_t *tu_safetensors_image(const struct tu_tensor *t, size_t n, const char *metadata_json,
                              size_t *len)
{
    size_t hcap = 256 + n * 256, hlen = 0, dlen = 0;
    char *h = malloc(hcap);
    if (!h)
        die("malloc");
    hlen += (size_t)snprintf(h, hcap, "{\"__metadata__\":%s",
                             metadata_json ? metadata_json : "{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = 1;
        for (int d = 0; d < t[i].ndim; d++)
            ne *= t[i].shape[d];
        size_t nb = ne * dtype_size(t[i].dtype);
        hlen += (size_t)snprintf(h + hlen, hcap - hlen, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                 t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            hlen += (size_t)snprintf(h + hlen, hcap - hlen, "%s%llu", d ? "," : "",
                                     (unsigned long long)t[i].shape[d]);
        hlen += (size_t)snprintf(h + hlen, hcap - hlen, "],\"data_offsets\":[%zu,%zu]}", dlen,
                                 dlen + nb);
        dlen += nb;
    }
    hlen += (size_t)snprintf(h + hlen, hcap - hlen, "}");
    while (hlen % 8)
        h[hlen++] = ' ';
    uint8_t *img = malloc(8 + hlen + dlen + 1);
    if (!img)
        die("malloc");
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(img + 8, h, hlen);
    free(h);
    uint8_t *p = img + 8 + hlen;
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = 1;
        for (int d = 0; d < t[i].ndim; d++)
            ne *= t[i].shape[d];
        size_t es = dtype_size(t[i].dtype);
        for (uint64_t k = 0; k < ne; k++, p += es)
            put_value(p, t[i].dtype, t[i].values ? t[i].values[k] : 0.0);
    }
    *len = 8 + hlen + dlen;
    return img;
}

void tu_write_safetensors(const char *path, const struct tu_tensor *t, size_t n)
{
    size_t len;
    uint8_t *img = tu_safetensors_image(t, n, NULL, &len);
    tu_write_file(path, img, len);
    free(img);
}

/* ---- reference math ---- */

double tu_act(const char *act, double x)
{
    if (!act || !strcmp(act, "none"))
        return x;
    if (!strcmp(act, "relu"))
        return x > 0 ? x : 0;
    if (!strcmp(act, "gelu"))
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    if (!strcmp(act, "gelu_tanh"))
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    if (!strcmp(act, "silu"))
        return x / (1.0 + exp(-x));
    if (!strcmp(act, "tanh"))
        return tanh(x);
    if (!strcmp(act, "sigmoid"))
        return 1.0 / (1.0 + exp(-x));
    fprintf(stderr, "testutil: unknown activation %s\n", act);
    abort();
}

static void ref_layer(const struct tu_layer *L, const double *x, int rows, double *y)
{
    const struct tu_lora *lo = L->lora;
    double *norm_scale = NULL;
    if (lo && lo->magnitude) {
        norm_scale = malloc(sizeof(double) * (size_t)L->out);
        for (int o = 0; o < L->out; o++) {
            double ss = 0;
            for (int i = 0; i < L->in; i++) {
                double ba = 0;
                for (int k = 0; k < lo->r; k++)
                    ba += lo->B[(size_t)o * lo->r + k] * lo->A[(size_t)k * L->in + i];
                double w = L->W[(size_t)o * L->in + i] + lo->scaling * ba;
                ss += w * w;
            }
            norm_scale[o] = lo->magnitude[o] / sqrt(ss);
        }
    }
    for (int m = 0; m < rows; m++) {
        const double *xr = x + (size_t)m * L->in;
        for (int o = 0; o < L->out; o++) {
            double acc = 0, delta = 0;
            for (int i = 0; i < L->in; i++)
                acc += xr[i] * L->W[(size_t)o * L->in + i];
            if (lo) {
                for (int k = 0; k < lo->r; k++) {
                    double t = 0;
                    for (int i = 0; i < L->in; i++)
                        t += xr[i] * lo->A[(size_t)k * L->in + i];
                    delta += t * lo->B[(size_t)o * lo->r + k];
                }
                delta *= lo->scaling;
            }
            double v = acc + delta;
            if (norm_scale)
                v *= norm_scale[o];
            if (L->b)
                v += L->b[o];
            if (lo && lo->bias_B)
                v += lo->scaling * lo->bias_B[o];
            y[(size_t)m * L->out + o] = tu_act(L->act, v);
        }
    }
    free(norm_scale);
}

void tu_ref_forward(const struct tu_layer *layers, size_t nlayers, const double *x, int rows,
                    double *y)
{
    const double *cur = x;
    double *buf = NULL;
    for (size_t l = 0; l < nlayers; l++) {
        double *out = l + 1 == nlayers ? y : malloc(sizeof(double) * (size_t)rows * layers[l].out);
        if (!out)
            die("malloc");
        ref_layer(&layers[l], cur, rows, out);
        free(buf);
        buf = out == y ? NULL : out;
        cur = out;
    }
}

double tu_worst_ratio(const float *got, const double *want, size_t n, double atol, double rtol)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        double r = d / (atol + rtol * fabs(want[i]));
        if (isnan(got[i]) != isnan(want[i]) || (isnan(r) && !isnan(want[i])))
            r = INFINITY;
        if (r > worst)
            worst = r;
    }
    return worst;
}
