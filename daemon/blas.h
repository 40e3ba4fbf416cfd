/* lorad — daemon/blas.h: choosing the OpenBLAS kernel (SPEC.md 7).
 *
 * Threads: start-up only (blas_select may re-execute the process); the
 * name checks are pure.
 */
#ifndef LORAD_BLAS_H
#define LORAD_BLAS_H

#include <stdbool.h>

/* The OpenBLAS DYNAMIC_ARCH x86_64 core names accepted by blas_coretype. */
bool blas_core_name_valid(const char *name);
/* "Prescott, Core2, ..." (static string). */
const char *blas_core_names(void);

/* Decides the kernel for config value `coretype` ("auto", "keep" or a core
 * name) and, when a different kernel must be loaded and the operator has
 * not set OPENBLAS_CORETYPE, re-executes /proc/self/exe with argv and
 * OPENBLAS_CORETYPE set (once: an environment marker prevents loops).
 * Returns only when no re-exec happened (or it failed, which is logged),
 * after logging openblas_get_config(), the core in use and why. */
void blas_select(const char *coretype, char **argv);

#endif
