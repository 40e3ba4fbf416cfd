/* lorad — decimal.h: the fast path of decimal-to-double conversion.
 *
 * /infer bodies carry thousands of decimal numbers per request; strtod's
 * arbitrary-precision path dominated their parsing. decimal_fast_parse()
 * returns exactly what strtod would (the correctly rounded double) for
 * numbers of up to 19 significant digits with a small exponent, using one
 * exact scaling (Clinger's fast path, extended to x87 long doubles), and
 * declines everything else so the caller falls back to strtod.
 *
 * Thread-safety: pure.
 */
#ifndef LORAD_DECIMAL_H
#define LORAD_DECIMAL_H

#include <stdbool.h>

/* p..end holds a number already checked to be JSON-number syntax
 * (-?digits[.digits][(e|E)[+-]digits]). Returns true and sets *out to the
 * correctly rounded double, or false when strtod must decide. */
bool decimal_fast_parse(const char *p, const char *end, double *out);

#endif
