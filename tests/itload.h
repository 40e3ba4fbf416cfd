/* lorad — tests/itload.h: background /infer load for the integration tests
 * that look at a daemon while it serves (thread names, the Grafana
 * dashboard's queries against Prometheus).
 *
 * itl_start() starts `clients` threads, each with its own keep-alive
 * connection to the daemon's "listen" address, sending JSON /infer
 * requests of `rows` rows (known values from itu_rows) back to back until
 * itl_stop(). The answers are counted by status class; their outputs are
 * not checked (other itests do that).
 *
 * Ownership: itl_start allocates, itl_stop joins the threads and frees
 * (NULLs *l). Threads: both from the test's main thread; itl_requests from
 * any thread.
 */
#ifndef LORAD_ITLOAD_H
#define LORAD_ITLOAD_H

#include "itestutil.h"

struct itl_counts {
    long requests; /* answered (any status) */
    long ok;       /* 200 */
    long s4xx;     /* 400..499 */
    long s5xx;     /* 500..599 */
    long failed;   /* no HTTP answer */
};

struct itl_load;

/* Starts the clients (model input width `in_width`). Aborts the test when
 * a thread cannot be started. */
struct itl_load *itl_start(const struct itu_daemon *d, int clients, int rows, int in_width);
/* Requests answered so far, over every client. */
long itl_requests(const struct itl_load *l);
/* Waits until at least `n` more requests than now have been answered, up
 * to `max_ms`; false on timeout. */
bool itl_wait_more(const struct itl_load *l, long n, int max_ms);
/* Stops and joins every client; *out (may be NULL) gets the sums. */
void itl_stop(struct itl_load **l, struct itl_counts *out);

#endif
