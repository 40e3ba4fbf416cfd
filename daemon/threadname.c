/* lorad — daemon/threadname.c: names for the threads of the libraries
 * lorad links (see threadname.h).
 *
 * Design: a thread starts with the name of the thread that created it.
 * OpenBLAS's threads are created before main, by its library constructor,
 * so they are named from outside through /proc/self/task/TID/comm (any
 * thread may rename another of its own process). libuv's threadpool threads
 * are named from inside: one work item per thread, each renaming the thread
 * it runs on and then waiting at a meeting point until every item has
 * started, so that no thread takes two items and none is left out. The
 * meeting has a deadline: the pool never blocks for long, whatever its size.
 */
#include "threadname.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* libuv 1.44's threadpool size (src/threadpool.c init_threads): 4 by
 * default, UV_THREADPOOL_SIZE read with atoi into an unsigned, 0 -> 1,
 * capped at 1024. */
#define UV_POOL_DEFAULT 4u
#define UV_POOL_MAX 1024u
#define MEET_TIMEOUT_S 1

/* ---- threads that exist before main ---- */

static int name_task(long tid, const char *name)
{
    char path[64];
    size_t len = strlen(name);
    int fd, ok;
    snprintf(path, sizeof(path), "/proc/self/task/%ld/comm", tid);
    if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
        return -1;
    ok = write(fd, name, len) == (ssize_t)len;
    close(fd);
    return ok ? 0 : -1;
}

int threadname_others(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    long self = (long)syscall(SYS_gettid);
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        long tid = strtol(e->d_name, NULL, 10);
        if (tid <= 0 || tid == self)
            continue;
        if (name_task(tid, name) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* ---- libuv's threadpool ---- */

struct pool_namer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned n;        /* work items queued: the pool's size */
    unsigned started;  /* items that renamed their thread (under mu) */
    unsigned finished; /* after_work callbacks run (loop thread) */
    char name[16];
    uv_work_t works[]; /* [n] */
};

static unsigned uv_pool_size(void)
{
    const char *v = getenv("UV_THREADPOOL_SIZE");
    unsigned n = v ? (unsigned)atoi(v) : UV_POOL_DEFAULT;
    if (n == 0)
        n = 1;
    return n > UV_POOL_MAX ? UV_POOL_MAX : n;
}

static void namer_free(struct pool_namer *p)
{
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* Pool thread: rename this thread, then wait for the other items. */
static void namer_work(uv_work_t *w)
{
    struct pool_namer *p = w->data;
    struct timespec deadline;
    (void)pthread_setname_np(pthread_self(), p->name);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += MEET_TIMEOUT_S;
    pthread_mutex_lock(&p->mu);
    p->started++;
    pthread_cond_broadcast(&p->cv);
    while (p->started < p->n)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &deadline) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&p->mu);
}

/* Loop thread: the last item back frees the namer. */
static void namer_done(uv_work_t *w, int status)
{
    struct pool_namer *p = w->data;
    (void)status;
    if (++p->finished < p->n)
        return;
    if (p->started < p->n)
        LOG_W("event=thread_names_incomplete threads=%u named=%u reason=\"the threadpool "
              "did not run every naming item at once\"",
              p->n, p->started);
    namer_free(p);
}

int threadname_uv_pool(uv_loop_t *loop, const char *name)
{
    unsigned n = uv_pool_size(), i;
    struct pool_namer *p = calloc(1, sizeof(*p) + n * sizeof(p->works[0]));
    if (!p)
        return -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->n = n;
    for (i = 0; i < n; i++) {
        p->works[i].data = p;
        if (uv_queue_work(loop, &p->works[i], namer_work, namer_done) < 0) {
            /* libuv refuses only a NULL callback: all or nothing */
            assert(i == 0);
            namer_free(p);
            return -1;
        }
    }
    return 0;
}
