/* lorad — daemon/blas.c: choosing the OpenBLAS kernel (SPEC.md 7).
 *
 * Debian's OpenBLAS (DYNAMIC_ARCH) picks its kernel when the library loads
 * and does not know recent Intel CPUs: it falls back to the generic
 * "Prescott" kernel, several times slower than the AVX-512 "SkylakeX" or
 * AVX2 "Haswell" kernels such a CPU runs. OpenBLAS reads OPENBLAS_CORETYPE
 * only at load time, so when lorad wants another kernel it re-executes
 * itself once (its own binary, same argv) with the variable set. A marker
 * variable (LORAD_BLAS_REEXEC) names the core lorad asked for; it stops any
 * second re-exec and tells the new process why the core is what it is.
 * An OPENBLAS_CORETYPE the operator set always wins.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cblas.h>

#include "blas.h"
#include "log.h"

#define BLAS_MARKER "LORAD_BLAS_REEXEC"

static const char *const core_names[] = {
    "Prescott", "Core2",     "Penryn",     "Dunnington",     "Nehalem",   "Sandybridge",
    "Haswell",  "SkylakeX",  "Cooperlake", "SapphireRapids", "Atom",      "Barcelona",
    "Opteron",  "Bulldozer", "Piledriver", "Steamroller",    "Excavator", "Zen",
};
#define N_CORES (sizeof(core_names) / sizeof(core_names[0]))

bool blas_core_name_valid(const char *name)
{
    for (size_t i = 0; i < N_CORES; i++)
        if (name && strcasecmp(name, core_names[i]) == 0)
            return true;
    return false;
}

const char *blas_core_names(void)
{
    return "Prescott, Core2, Penryn, Dunnington, Nehalem, Sandybridge, Haswell, SkylakeX, "
           "Cooperlake, SapphireRapids, Atom, Barcelona, Opteron, Bulldozer, Piledriver, "
           "Steamroller, Excavator, Zen";
}

static const char *canonical_core(const char *name)
{
    for (size_t i = 0; i < N_CORES; i++)
        if (strcasecmp(name, core_names[i]) == 0)
            return core_names[i];
    return NULL;
}

static bool cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

static bool cpu_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* Whether this CPU can run the kernel `core` (only the AVX2 / AVX-512
 * kernels are checked; older ones run on any x86_64 lorad supports). */
static bool cpu_can_run(const char *core)
{
    if (!strcmp(core, "SkylakeX") || !strcmp(core, "Cooperlake") || !strcmp(core, "SapphireRapids"))
        return cpu_has_avx512();
    if (!strcmp(core, "Haswell") || !strcmp(core, "Zen") || !strcmp(core, "Excavator"))
        return cpu_has_avx2_fma();
    return true;
}

/* The kernel "auto" wants instead of `current`, or NULL to keep it. */
static const char *auto_choice(const char *current)
{
    if (strcasecmp(current, "Prescott") != 0)
        return NULL; /* OpenBLAS recognised the CPU */
    if (cpu_has_avx512())
        return "SkylakeX";
    if (cpu_has_avx2_fma())
        return "Haswell";
    return NULL;
}

static void log_config(const char *why)
{
    char cfg[512], core[64];
    log_quote(cfg, sizeof(cfg), openblas_get_config());
    log_quote(core, sizeof(core), openblas_get_corename());
    LOG_I("event=blas config=%s core=%s reason=%s", cfg, core, why);
}

static void reexec(const char *core, char **argv, const char *why)
{
    LOG_I("event=blas_reexec core=%s from=%s reason=%s", core, openblas_get_corename(), why);
    if (setenv("OPENBLAS_CORETYPE", core, 1) < 0 || setenv(BLAS_MARKER, core, 1) < 0) {
        LOG_W("event=blas_reexec_failed reason=\"%s\"", strerror(errno));
        return;
    }
    /* By the binary's own path, so the new image is still called "lorad"
     * (comm is taken from the executed file's name: /proc/self/exe would
     * make it "exe"); /proc/self/exe when the path cannot be read. */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0 && !strstr(self, " (deleted)")) {
        self[n] = '\0';
        execv(self, argv);
    }
    execv("/proc/self/exe", argv);
    LOG_W("event=blas_reexec_failed reason=\"execv: %s\"", strerror(errno));
    unsetenv("OPENBLAS_CORETYPE");
}

void blas_select(const char *coretype, char **argv)
{
    const char *marker = getenv(BLAS_MARKER);
    const char *env = getenv("OPENBLAS_CORETYPE");
    const char *current = openblas_get_corename();
    if (!coretype)
        coretype = "auto";
    if (marker) {
        char why[160];
        snprintf(why, sizeof(why), "\"selected by lorad (blas_coretype %s), re-executed once\"",
                 coretype);
        log_config(why);
        unsetenv(BLAS_MARKER);
        return;
    }
    if (env && *env) {
        log_config("\"OPENBLAS_CORETYPE set by the operator\"");
        return;
    }
    if (strcmp(coretype, "keep") == 0) {
        log_config("\"blas_coretype keep\"");
        return;
    }
    const char *want = NULL;
    if (strcmp(coretype, "auto") == 0) {
        want = auto_choice(current);
        if (!want) {
            log_config("\"detected by OpenBLAS (blas_coretype auto)\"");
            return;
        }
        reexec(want, argv, "\"OpenBLAS fell back to Prescott; the CPU supports a faster kernel\"");
    } else {
        want = canonical_core(coretype);
        if (!want || strcasecmp(want, current) == 0) {
            log_config("\"blas_coretype\"");
            return;
        }
        if (!cpu_can_run(want)) {
            LOG_W("event=blas_coretype_ignored core=%s reason=\"this CPU lacks the instructions "
                  "that kernel needs\"",
                  want);
            log_config("\"detected by OpenBLAS\"");
            return;
        }
        reexec(want, argv, "\"blas_coretype\"");
    }
    log_config("\"re-exec failed; kept the detected kernel\"");
}
