/* lorad — tests/itload.c: background /infer load (see itload.h).
 *
 * Each client thread owns one itu_client and one request body, and keeps
 * its counters in atomics that itl_requests() sums while it runs.
 */
#include "itload.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct itl_client {
    pthread_t th;
    struct itu_client *hc;
    const char *body;
    size_t len;
    atomic_int *stop;
    _Atomic long requests, ok, s4xx, s5xx, failed;
};

struct itl_load {
    int n;
    atomic_int stop;
    char *body;
    struct itl_client *c; /* [n] */
};

static void *itl_client_main(void *arg)
{
    struct itl_client *c = arg;
    while (!atomic_load(c->stop)) {
        struct itu_resp r;
        long s = itu_client_do(c->hc, "POST", "/infer", c->body, c->len, "application/json", NULL,
                               10000, &r);
        itu_resp_free(&r);
        if (s == 0) {
            atomic_fetch_add(&c->failed, 1);
            continue;
        }
        if (s == 200)
            atomic_fetch_add(&c->ok, 1);
        else if (s >= 500)
            atomic_fetch_add(&c->s5xx, 1);
        else if (s >= 400)
            atomic_fetch_add(&c->s4xx, 1);
        atomic_fetch_add(&c->requests, 1);
    }
    return NULL;
}

struct itl_load *itl_start(const struct itu_daemon *d, int clients, int rows, int in_width)
{
    struct itl_load *l = calloc(1, sizeof(*l));
    double *x = itu_rows(0x17ad, rows, in_width);
    ck_assert(l != NULL && x != NULL);
    l->c = calloc((size_t)clients, sizeof(*l->c));
    ck_assert(l->c != NULL);
    l->body = itu_json_rows(x, rows, in_width, true, NULL);
    free(x);
    l->n = clients;
    for (int i = 0; i < clients; i++) {
        struct itl_client *c = &l->c[i];
        c->hc = itu_daemon_client(d);
        c->body = l->body;
        c->len = strlen(l->body);
        c->stop = &l->stop;
        ck_assert_msg(pthread_create(&c->th, NULL, itl_client_main, c) == 0,
                      "cannot start load client %d", i);
    }
    return l;
}

long itl_requests(const struct itl_load *l)
{
    long n = 0;
    for (int i = 0; i < l->n; i++)
        n += atomic_load(&l->c[i].requests) + atomic_load(&l->c[i].failed);
    return n;
}

bool itl_wait_more(const struct itl_load *l, long n, int max_ms)
{
    long want = itl_requests(l) + n;
    struct timespec ts = {0, 10 * 1000000L};
    for (int waited = 0; waited < max_ms; waited += 10) {
        if (itl_requests(l) >= want)
            return true;
        nanosleep(&ts, NULL);
    }
    return itl_requests(l) >= want;
}

void itl_stop(struct itl_load **lp, struct itl_counts *out)
{
    struct itl_load *l = *lp;
    struct itl_counts sum = {0};
    atomic_store(&l->stop, 1);
    for (int i = 0; i < l->n; i++) {
        struct itl_client *c = &l->c[i];
        pthread_join(c->th, NULL);
        sum.requests += atomic_load(&c->requests);
        sum.ok += atomic_load(&c->ok);
        sum.s4xx += atomic_load(&c->s4xx);
        sum.s5xx += atomic_load(&c->s5xx);
        sum.failed += atomic_load(&c->failed);
        itu_client_free(&c->hc);
    }
    if (out)
        *out = sum;
    free(l->body);
    free(l->c);
    free(l);
    *lp = NULL;
}
