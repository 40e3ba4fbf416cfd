/* lorad — half.h: the 16-bit floating-point formats of safetensors files,
 * IEEE binary16 ("F16") and bfloat16 ("BF16"), to and from f32.
 *
 * Decoding (what st_to_f32 uses) is exact, subnormals, infinities and NaN
 * payloads included. Encoding (what the tools use to write F16 and BF16
 * tensors) rounds to nearest, ties to even; a NaN stays a (quiet) NaN.
 *
 * Thread-safety: pure functions; any thread.
 */
#ifndef LORAD_HALF_H
#define LORAD_HALF_H

#include <stdint.h>

/* IEEE half / bfloat16 bit patterns to f32, exact. */
float half_f16_to_f32(uint16_t h);
float half_bf16_to_f32(uint16_t b);

/* f32 to half / bfloat16 bit patterns, round to nearest even (a value at
 * or above 65520 in magnitude becomes an infinite half). */
uint16_t half_f32_to_f16(float f);
uint16_t half_f32_to_bf16(float f);

#endif
