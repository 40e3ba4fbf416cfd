/* lorad — bench/roof.c: the in-process roof of SPEC.md 10.
 *
 * Pushes rows through exactly the forward pass lorad's workers run
 * (forward_run: the same cblas_sgemm calls, the same OpenBLAS kernel, one
 * single-threaded OpenBLAS per thread, one thread per worker) with no HTTP,
 * no parsing and no queueing, at a range of batch sizes. lorad's
 * throughput is reported by bench/run.sh as a ratio to this figure at the
 * batch size lorad actually formed.
 *
 *   roof --model DIR [--adapters DIR --adapter NAME] [--threads N]
 *        [--seconds S] [--batches 1,2,4,...]
 *
 * Output: one line per batch size, "batch=B rows_per_s=R", preceded by
 * "kernel=..." naming the OpenBLAS core.
 */
#include <cblas.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../lib/adapter.h"
#include "../lib/forward.h"
#include "../lib/model.h"

struct roof_job {
    const struct model *model;
    const struct snapshot *snap;
    int rows;
    double seconds;
    atomic_ullong *rows_done;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *roof_thread(void *arg)
{
    struct roof_job *j = arg;
    int width = j->model->max_width;
    int rank = j->snap ? j->snap->rank : 1;
    struct forward_scratch *s = forward_scratch_new(j->model, j->rows, rank > 0 ? rank : 1);
    float *x = calloc((size_t)j->rows * (size_t)width, sizeof(float));
    float *y = calloc((size_t)j->rows * (size_t)width, sizeof(float));
    unsigned long long done = 0;
    if (!s || !x || !y) {
        fprintf(stderr, "roof: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < j->rows * j->model->in_features; i++)
        x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    double end = now_s() + j->seconds;
    while (now_s() < end) {
        forward_run(j->model, j->snap, x, j->rows, y, s);
        done += (unsigned long long)j->rows;
    }
    atomic_fetch_add(j->rows_done, done);
    forward_scratch_free(&s);
    free(x);
    free(y);
    return NULL;
}

static double roof_measure(const struct model *m, const struct snapshot *snap, int threads,
                           int rows, double seconds)
{
    pthread_t tid[256];
    struct roof_job job = {m, snap, rows, seconds, NULL};
    atomic_ullong done = 0;
    job.rows_done = &done;
    double t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, roof_thread, &job);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    return (double)atomic_load(&done) / (now_s() - t0);
}

static void usage(void)
{
    fprintf(stderr, "usage: roof --model DIR [--adapters DIR --adapter NAME] [--threads N] "
                    "[--seconds S] [--batches 1,2,4]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *adapters = NULL, *name = NULL, *batches = "1,2,4,8,16,32,64";
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    double seconds = 2.0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--model"))
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--adapters"))
            adapters = argv[++i];
        else if (!strcmp(argv[i], "--adapter"))
            name = argv[++i];
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--batches"))
            batches = argv[++i];
        else
            usage();
    }
    if (!model_dir || threads < 1 || threads > 256 || seconds <= 0)
        usage();
    openblas_set_num_threads(1);

    struct lorad_error err = {0};
    struct model *m = NULL;
    struct snapshot *snap = NULL;
    if (model_load(model_dir, &m, NULL, &err) != 0) {
        fprintf(stderr, "roof: %s\n", err.msg);
        return 1;
    }
    if (adapters && name) {
        struct profile *p = NULL, *done = NULL;
        int fd = open(adapters, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct adapter_stage_args a = {fd, name, NULL, m, NULL};
        if (fd < 0 || profile_from_config(m, 0, NULL, 0, &p, &err) != 0) {
            fprintf(stderr, "roof: cannot open %s\n", adapters);
            return 1;
        }
        a.profile = p;
        if (adapter_stage(&a, &snap, &done, &err) != 0) {
            fprintf(stderr, "roof: %s\n", err.msg);
            return 1;
        }
        profile_free(&p);
        profile_free(&done);
        close(fd);
    }
    printf("kernel=%s threads=%d layers=%zu width=%d adapter=%s\n", openblas_get_corename(),
           threads, m->nlayers, m->max_width, snap ? snap->name : "none");
    char *list = strdup(batches);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int rows = atoi(tok);
        if (rows < 1 || rows > 4096)
            usage();
        printf("batch=%d rows_per_s=%.0f\n", rows, roof_measure(m, snap, threads, rows, seconds));
        fflush(stdout);
    }
    free(list);
    snapshot_free(&snap);
    model_free(&m);
    return 0;
}
