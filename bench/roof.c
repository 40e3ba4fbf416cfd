/* lorad — bench/roof.c: the in-process roof of SPEC.md 10.
 *
 * Pushes rows through exactly the forward pass lorad's workers run, on
 * exactly the OpenBLAS kernel lorad runs (blas_select("auto"), the daemon's
 * own choice and re-exec), with no HTTP, no parsing and no queueing. For c
 * rows in flight on n threads it measures both policies of SPEC 10:
 *   indep: n threads, each a forward_run of c/n rows (single-threaded BLAS);
 *   split: one c-row forward split across the n threads (forward_run_split,
 *          the team barrier lorad's workers use);
 * and roof(c) is the faster. It also times, split across the threads, the
 * bare base GEMMs (the same cblas_sgemm calls without LoRA, bias and
 * activation) to show what the rest of the forward costs, and the CPU
 * time per row (getrusage: all threads, spinning included).
 *
 *   roof --model DIR [--adapters DIR --adapter NAME] [--threads N]
 *        [--seconds S] [--batches 1,2,4,...]
 *
 * Output: "kernel=..." naming the OpenBLAS core, then one line per batch:
 *   batch=B rows_per_s=ROOF indep=R split=R bare=R split_us=T cpu_us_row=C
 * (rows_per_s = max(indep, split); split_us = wall time of one split
 * forward; cpu_us_row = CPU per row of the winning policy).
 */
#include <cblas.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../daemon/blas.h"
#include "../daemon/log.h"
#include "../lib/adapter.h"
#include "../lib/forward.h"
#include "../lib/model.h"
#include "../lib/team.h"

enum roof_mode { ROOF_INDEP, ROOF_SPLIT, ROOF_BARE };

struct roof_run {
    const struct model *model;
    const struct snapshot *snap;
    enum roof_mode mode;
    int rows; /* per forward */
    int threads;
    double seconds;
    struct forward_scratch *shared; /* split / bare: the team's scratch */
    const float *x;
    float *y;
    struct team_barrier bar;
    _Atomic int stop; /* set by member 0, read at each forward's end */
    atomic_ullong rows_done;
};

struct roof_member {
    struct roof_run *run;
    int me;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static float *rows_of(const struct model *m, int rows)
{
    float *x = calloc((size_t)rows * (size_t)m->max_width, sizeof(float));
    if (!x) {
        fprintf(stderr, "roof: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < rows * m->in_features; i++)
        x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    return x;
}

/* The base GEMMs of one forward, member me's column slice, no LoRA, bias
 * or activation. */
static void bare_forward(const struct model *m, const float *x, int rows, float *buf0, float *buf1,
                         int me, int n, struct team_barrier *b)
{
    const float *cur = x;
    for (size_t l = 0; l < m->nlayers; l++) {
        const struct model_layer *L = &m->layers[l];
        float *out = l & 1 ? buf1 : buf0;
        int c0, c1;
        forward_slice(L->out_features, me, n, &c0, &c1);
        if (c1 > c0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, c1 - c0, L->in_features,
                        1.0f, cur, L->in_features, L->weight + c0, L->out_features, 0.0f, out + c0,
                        L->out_features);
        if (n > 1)
            team_barrier_wait(b);
        cur = out;
    }
}

static void *indep_thread(void *arg)
{
    struct roof_member *mb = arg;
    struct roof_run *r = mb->run;
    int rank = r->snap && r->snap->rank > 0 ? r->snap->rank : 1;
    struct forward_scratch *s = forward_scratch_new(r->model, r->rows, rank);
    float *x = rows_of(r->model, r->rows), *y = rows_of(r->model, r->rows);
    unsigned long long done = 0;
    double end = now_s() + r->seconds;
    if (!s) {
        fprintf(stderr, "roof: out of memory\n");
        exit(1);
    }
    while (now_s() < end) {
        forward_run(r->model, r->snap, x, r->rows, y, s);
        done += (unsigned long long)r->rows;
    }
    atomic_fetch_add(&r->rows_done, done);
    forward_scratch_free(&s);
    free(x);
    free(y);
    return NULL;
}

static void *team_thread(void *arg)
{
    struct roof_member *mb = arg;
    struct roof_run *r = mb->run;
    struct forward_group g = {r->snap, NULL, r->rows};
    int *idx = malloc((size_t)r->rows * sizeof(int));
    float *b0 = rows_of(r->model, r->rows), *b1 = rows_of(r->model, r->rows);
    double end = now_s() + r->seconds;
    unsigned long long done = 0;
    for (int i = 0; i < r->rows; i++)
        idx[i] = i;
    g.rows = idx;
    for (;;) {
        if (r->mode == ROOF_SPLIT)
            forward_run_split(r->model, &g, 1, r->x, r->rows, r->y, r->shared, mb->me, r->threads,
                              team_barrier_cb, &r->bar);
        else
            bare_forward(r->model, r->x, r->rows, r->y, b1, mb->me, r->threads, &r->bar);
        done += (unsigned long long)r->rows;
        if (mb->me == 0 && now_s() >= end)
            atomic_store(&r->stop, 1);
        team_barrier_wait(&r->bar); /* everyone sees the same stop */
        if (atomic_load(&r->stop))
            break;
        team_barrier_wait(&r->bar);
    }
    if (mb->me == 0)
        atomic_fetch_add(&r->rows_done, done);
    free(idx);
    free(b0);
    free(b1);
    return NULL;
}

/* Rows per second of one policy; *cpu_us_row gets CPU time per row. */
static double roof_measure(const struct model *m, const struct snapshot *snap, enum roof_mode mode,
                           int threads, int rows, double seconds, double *cpu_us_row)
{
    pthread_t tid[256];
    struct roof_member mb[256];
    struct roof_run r = {
        .model = m, .snap = snap, .mode = mode, .threads = threads, .seconds = seconds};
    int rank = snap && snap->rank > 0 ? snap->rank : 1;
    double t0, c0, rate;

    r.rows = mode == ROOF_INDEP ? (rows + threads - 1) / threads : rows;
    team_barrier_init(&r.bar, threads);
    if (mode != ROOF_INDEP) {
        r.shared = forward_scratch_new_lanes(m, rows, rank, threads);
        r.x = rows_of(m, rows);
        r.y = rows_of(m, rows);
    }
    t0 = now_s();
    c0 = cpu_s();
    for (int i = 0; i < threads; i++) {
        mb[i] = (struct roof_member){&r, i};
        pthread_create(&tid[i], NULL, mode == ROOF_INDEP ? indep_thread : team_thread, &mb[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    rate = (double)atomic_load(&r.rows_done) / (now_s() - t0);
    *cpu_us_row = (cpu_s() - c0) * 1e6 / (double)atomic_load(&r.rows_done);
    forward_scratch_free(&r.shared);
    free((void *)r.x);
    free(r.y);
    return rate;
}

static void usage(void)
{
    fprintf(stderr, "usage: roof --model DIR [--adapters DIR --adapter NAME] [--threads N] "
                    "[--seconds S] [--batches 1,2,4]\n");
    exit(2);
}

static struct snapshot *stage(const struct model *m, const char *adapters, const char *name)
{
    struct lorad_error err = {0};
    struct snapshot *snap = NULL;
    struct profile *p = NULL, *done = NULL;
    int fd = open(adapters, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct adapter_stage_args a = {fd, name, NULL, m, NULL};
    if (fd < 0 || profile_from_config(m, 0, NULL, 0, &p, &err) != 0) {
        fprintf(stderr, "roof: cannot open %s\n", adapters);
        exit(1);
    }
    a.profile = p;
    if (adapter_stage(&a, &snap, &done, &err) != 0) {
        fprintf(stderr, "roof: %s\n", err.msg);
        exit(1);
    }
    profile_free(&p);
    profile_free(&done);
    close(fd);
    return snap;
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
    log_set_level(4);
    blas_select("auto", argv); /* lorad's kernel choice (may re-execute) */
    openblas_set_num_threads(1);

    struct lorad_error err = {0};
    struct model *m = NULL;
    struct snapshot *snap = NULL;
    if (model_load(model_dir, &m, NULL, &err) != 0) {
        fprintf(stderr, "roof: %s\n", err.msg);
        return 1;
    }
    if (adapters && name)
        snap = stage(m, adapters, name);
    printf("kernel=%s threads=%d layers=%zu width=%d adapter=%s\n", openblas_get_corename(),
           threads, m->nlayers, m->max_width, snap ? snap->name : "none");
    char *list = strdup(batches);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int rows = atoi(tok);
        double ci, cs, cb;
        if (rows < 1 || rows > 4096)
            usage();
        double ind = roof_measure(m, snap, ROOF_INDEP, threads, rows, seconds, &ci);
        double spl = roof_measure(m, snap, ROOF_SPLIT, threads, rows, seconds, &cs);
        double bare = roof_measure(m, snap, ROOF_BARE, threads, rows, seconds, &cb);
        printf("batch=%d rows_per_s=%.0f indep=%.0f split=%.0f bare=%.0f split_us=%.1f "
               "cpu_us_row=%.1f\n",
               rows, ind > spl ? ind : spl, ind, spl, bare, 1e6 * rows / spl, ind > spl ? ci : cs);
        fflush(stdout);
    }
    free(list);
    snapshot_free(&snap);
    model_free(&m);
    return 0;
}
