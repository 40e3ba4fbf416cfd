/* lorad — daemon/threadname.h: names for the threads lorad does not start
 * itself (SPEC.md 8), so that top -H, ps -L, gdb and /proc show what each
 * thread does.
 *
 * lorad's threads and their names (the kernel keeps 15 bytes):
 *   lorad            the loop thread (main; also the process name)
 *   lorad-worker-N   the inference workers, N from 0 (daemon/workers.c)
 *   lorad-pool       libuv's threadpool: staging, state writes, /adapters
 *                    scans, SIGHUP reloads (threadname_uv_pool)
 *   lorad-rcu        liburcu's call_rcu thread, which frees what commits
 *                    retire (serving_name_reclaimer in lib/serving.h)
 *   lorad-blas       OpenBLAS's server threads, started by its library
 *                    constructor before main (threadname_others)
 *
 * Threads: the loop thread (main), at start-up.
 */
#ifndef LORAD_THREADNAME_H
#define LORAD_THREADNAME_H

#include <uv.h>

#define THREADNAME_BLAS "lorad-blas"
#define THREADNAME_POOL "lorad-pool"
#define THREADNAME_RCU "lorad-rcu"

/* Names every thread of the process except the calling one `name`
 * (through /proc/self/task/TID/comm). Call it before lorad starts any
 * thread of its own: the threads it finds are the libraries' (OpenBLAS's
 * server threads; a sanitizer's background thread under SAN/TSAN builds).
 * Returns how many threads it named, or -1 when /proc/self/task cannot be
 * read. */
int threadname_others(const char *name);

/* Names every thread of libuv's threadpool `name`: queues as many work
 * items as the pool has threads (UV_THREADPOOL_SIZE, as libuv reads it)
 * that meet before they return, so each runs on a thread of its own. The
 * meeting gives up after a second, so a pool of another size cannot hang
 * (some threads then keep the name they inherited, "lorad"). Starts the
 * pool if it is not running yet. The naming finishes asynchronously, as the
 * loop runs. 0, or -1 when the work could not be queued. */
int threadname_uv_pool(uv_loop_t *loop, const char *name);

#endif
