/* lorad — tests/fuzz/fuzz_config.c: libFuzzer harness of the daemon's
 * configuration file parser (daemon/config.c, SPEC.md 5), driven through
 * the public config_load_file() + config_validate() since config.c has no
 * string entry point: each input is written to one scratch file (made once
 * per process) and loaded over the defaults. It links daemon/config.c and
 * the two modules config.c uses (log.c, blas.c), nothing else of daemon/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../daemon/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[300];

static void cleanup(void)
{
    if (path[0])
        unlink(path);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    int fd;
    snprintf(path, sizeof(path), "%s/lorad-fuzz-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    fd = mkstemp(path);
    if (fd < 0)
        abort();
    close(fd);
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lorad_config c;
    struct lorad_error err = {0};
    FILE *f;
    int rc;

    if (!path[0])
        setup();
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    config_defaults(&c);
    rc = config_load_file(&c, path, &err);
    if (rc == 0)
        rc = config_validate(&c, &err);
    if (rc != 0 && (err.code == 0 || err.msg[0] == '\0'))
        __builtin_trap();
    config_free(&c);
    return 0;
}
