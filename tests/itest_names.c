/* lorad — tests/itest_names.c: what ps, top -H, pgrep and /proc call the
 * daemon and its threads (SPEC.md 8).
 *
 * The daemon runs from a copy of the binary under another file name
 * ("lrd-copy"), so nothing passes because the file happens to be called
 * lorad. While eight clients keep it busy (and a swap and a rollback run
 * through libuv's threadpool), /proc/PID/task/TID/comm of every thread
 * must be:
 *   the main thread     lorad (also /proc/PID/comm, and pgrep -x lorad finds it)
 *   lorad-worker-N      exactly one per worker, N = 0 .. workers-1
 *   lorad-pool          one per libuv threadpool thread (UV_THREADPOOL_SIZE=3)
 *   lorad-rcu           exactly one (liburcu's call_rcu thread)
 *   lorad-blas          as many as the threads the libraries start before
 *                       main (OpenBLAS's server threads; under TSAN=1 also
 *                       ThreadSanitizer's background thread): this test
 *                       binary links the same libraries (it calls
 *                       OpenBLAS, so the linker keeps it) and runs in the
 *                       same environment, so it counts its own threads at
 *                       the top of main(): at least
 *                       openblas_get_num_threads() - 1
 * and nothing else: every thread is lorad or lorad-*. The same holds after
 * the OpenBLAS re-exec (blas_coretype "Core2", which any x86_64 runs).
 * Names are set as the daemon starts; the test polls (bounded) until they
 * hold and fails with the last listing.
 */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "itestutil.h"
#include "itload.h"

#define NM_WORKERS 3
#define NM_POOL 3
#define NM_MAX_THREADS 256
#define NM_POLL_MS 20
#define NM_POLL_MAX 250 /* x 20 ms = 5 s */

/* Threads of this process at the top of main(), the main thread excluded. */
static int nm_premain_threads = -1;

struct nm_thread {
    long tid;
    char comm[32];
};

static void nm_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool nm_read_line(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    bool ok = f && fgets(buf, (int)n, f) != NULL;
    if (f)
        fclose(f);
    if (ok)
        buf[strcspn(buf, "\n")] = '\0';
    return ok;
}

/* Every thread of pid with its comm; returns how many. */
static int nm_list(pid_t pid, struct nm_thread *t, int max)
{
    char dir[64], path[128];
    DIR *d;
    struct dirent *e;
    int n = 0;
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    ck_assert_msg((d = opendir(dir)) != NULL, "opendir %s", dir);
    while ((e = readdir(d)) != NULL && n < max) {
        long tid = strtol(e->d_name, NULL, 10);
        if (tid <= 0)
            continue;
        snprintf(path, sizeof(path), "%s/%ld/comm", dir, tid);
        if (!nm_read_line(path, t[n].comm, sizeof(t[n].comm)))
            continue; /* the thread just exited */
        t[n++].tid = tid;
    }
    closedir(d);
    return n;
}

/* Threads of this process (outside a test case: no Check assertion). */
static int nm_count_self(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    if (!d) {
        fprintf(stderr, "itest_names: opendir /proc/self/task failed\n");
        exit(2);
    }
    while ((e = readdir(d)) != NULL)
        n += strtol(e->d_name, NULL, 10) > 0;
    closedir(d);
    return n;
}

static int nm_count(const struct nm_thread *t, int n, const char *comm)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += strcmp(t[i].comm, comm) == 0;
    return k;
}

/* The rules of the top comment; false with *why (and the listing). */
static bool nm_check(pid_t pid, int blas, char *why, size_t wn)
{
    struct nm_thread t[NM_MAX_THREADS];
    int n = nm_list(pid, t, NM_MAX_THREADS), named = 0;
    char list[4096] = "", name[32], path[64];
    size_t o = 0;
    for (int i = 0; i < n && o < sizeof(list) - 64; i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, " %ld=%s", t[i].tid, t[i].comm);
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    if (!nm_read_line(path, name, sizeof(name)) || strcmp(name, "lorad") != 0) {
        snprintf(why, wn, "/proc/%d/comm is \"%s\", not lorad;%s", (int)pid, name, list);
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (t[i].tid == (long)pid && strcmp(t[i].comm, "lorad") != 0) {
            snprintf(why, wn, "the main thread is %s, not lorad;%s", t[i].comm, list);
            return false;
        }
        if (strcmp(t[i].comm, "lorad") != 0 && strncmp(t[i].comm, "lorad-", 6) != 0) {
            snprintf(why, wn, "thread %ld is %s, not lorad or lorad-*;%s", t[i].tid, t[i].comm,
                     list);
            return false;
        }
    }
    for (int w = 0; w < NM_WORKERS; w++) {
        snprintf(name, sizeof(name), "lorad-worker-%d", w);
        if (nm_count(t, n, name) != 1) {
            snprintf(why, wn, "%d threads named %s, expected 1;%s", nm_count(t, n, name), name,
                     list);
            return false;
        }
        named++;
    }
    static const struct {
        const char *name;
        int want; /* -1: blas */
    } rules[] = {{"lorad", 1}, {"lorad-pool", NM_POOL}, {"lorad-rcu", 1}, {"lorad-blas", -1}};
    for (size_t r = 0; r < sizeof(rules) / sizeof(rules[0]); r++) {
        int want = rules[r].want < 0 ? blas : rules[r].want, got = nm_count(t, n, rules[r].name);
        if (got != want) {
            snprintf(why, wn, "%d threads named %s, expected %d;%s", got, rules[r].name, want,
                     list);
            return false;
        }
        named += got;
    }
    if (named != n) {
        snprintf(why, wn, "%d threads, %d of them accounted for (other lorad-* names);%s", n, named,
                 list);
        return false;
    }
    return true;
}

/* pgrep -x lorad lists pid. */
static bool nm_pgrep_finds(pid_t pid)
{
    char *argv[] = {"/usr/bin/env", "pgrep", "-x", "lorad", NULL}, *out = NULL, want[32];
    int rc = itu_run(argv, &out);
    bool found = false;
    snprintf(want, sizeof(want), "%d", (int)pid);
    for (char *line = strtok(out, "\n"); rc == 0 && line; line = strtok(NULL, "\n"))
        found = found || strcmp(line, want) == 0;
    free(out);
    return found;
}

/* Copies $LORAD_BIN to a fresh dir as lrd-copy and points LORAD_BIN at it
 * (this test process only: Check forks each test). */
static void nm_use_copy(void)
{
    char *dir = itu_tmpdir(), *copy = tu_path(dir, "lrd-copy"), *out = NULL;
    char *argv[] = {"/bin/cp", (char *)itu_lorad_bin(), copy, NULL};
    int rc = itu_run(argv, &out);
    ck_assert_msg(rc == 0, "cp %s %s: %s", itu_lorad_bin(), copy, out);
    setenv("LORAD_BIN", copy, 1);
    free(out);
    free(copy);
    free(dir);
}

static void nm_run(const char *overrides, bool expect_reexec)
{
    struct itu_daemon *d;
    struct itu_model *m = itu_model_load(itu_model_dir());
    struct itl_load *load;
    struct itl_counts cnt;
    char why[8192] = "";
    int blas = nm_premain_threads;
    ck_assert_msg(blas >= openblas_get_num_threads() - 1,
                  "this test saw %d threads before main, OpenBLAS runs %d", blas,
                  openblas_get_num_threads());
    bool ok = false;
    nm_use_copy();
    setenv("UV_THREADPOOL_SIZE", "3", 1);
    d = itu_daemon_start(NULL, overrides);
    const char *log = itu_log_tail(d, 1 << 16);
    if (expect_reexec && !strstr(log, "event=blas_reexec")) {
        printf("SKIP: thread names after the re-exec: lorad did not re-execute (OpenBLAS "
               "already runs the Core2 kernel)\n");
    } else if (expect_reexec) {
        ck_assert_msg(strstr(log, "re-executed once") != NULL, "no re-exec in the log:\n%s", log);
    }
    load = itl_start(d, 8, 4, m->in);
    ck_assert_msg(itl_wait_more(load, 50, 20000), "no load: %s", itu_log_tail(d, 2000));
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\": \"demo-b\"}"));
    cJSON_Delete(itu_post_ok(d, "/rollback", "{}"));
    for (int i = 0; i < NM_POLL_MAX && !ok; i++) {
        ok = nm_check(d->pid, blas, why, sizeof(why));
        if (!ok)
            nm_sleep_ms(NM_POLL_MS);
    }
    ck_assert_msg(ok, "thread names%s: %s", expect_reexec ? " after the re-exec" : "", why);
    ck_assert_msg(itl_wait_more(load, 50, 20000), "the load stopped");
    /* still so under load, after the control calls */
    ck_assert_msg(nm_check(d->pid, blas, why, sizeof(why)), "thread names under load: %s", why);
    ck_assert_msg(nm_pgrep_finds(d->pid), "pgrep -x lorad does not list pid %d", (int)d->pid);
    itl_stop(&load, &cnt);
    ck_assert_msg(cnt.requests > 0 && cnt.ok == cnt.requests && cnt.failed == 0,
                  "load: %ld answered, %ld ok, %ld without an answer", cnt.requests, cnt.ok,
                  cnt.failed);
    printf("itest_names: %s: %ld requests under load, every thread named (%d workers, %d "
           "pool, 1 rcu, %d blas)\n",
           expect_reexec ? "after re-exec" : "no re-exec", cnt.requests, NM_WORKERS, NM_POOL, blas);
    ck_assert_int_eq(itu_daemon_stop(d, 10000), 0);
    itu_daemon_free(&d);
    itu_model_free(&m);
}

START_TEST(test_thread_names)
{
    nm_run("{\"workers\": 3, \"blas_coretype\": \"keep\"}", false);
}
END_TEST

START_TEST(test_thread_names_after_reexec)
{
    nm_run("{\"workers\": 3, \"blas_coretype\": \"Core2\"}", true);
}
END_TEST

int main(void)
{
    nm_premain_threads = nm_count_self() - 1;
    Suite *s = suite_create("itest_names");
    TCase *tc = tcase_create("names");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_thread_names);
    tcase_add_test(tc, test_thread_names_after_reexec);
    suite_add_tcase(s, tc);
    itu_init();
    int failed = itu_run_suite(s);
    itu_cleanup();
    return failed ? 1 : 0;
}
