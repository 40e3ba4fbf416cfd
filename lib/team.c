/* lorad — team.c: the spin-then-futex barrier (see team.h).
 *
 * Sense by generation: a member reads gen, then increments arrived; the
 * last one resets arrived, bumps gen (release) and wakes sleepers; the
 * others wait for gen to move. arrived is reset before gen moves, so a
 * member that leaves and arrives at the next round at once counts there.
 */
#include "team.h"

#include <limits.h>
#include <stdint.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

void team_barrier_init(struct team_barrier *b, int n)
{
    b->n = n;
    atomic_store(&b->arrived, 0);
    atomic_store(&b->gen, 0);
    atomic_store(&b->sleepers, 0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void team_wait_change(_Atomic unsigned *word, unsigned old, _Atomic int *sleepers)
{
    uint64_t deadline = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != old)
            return;
        cpu_relax();
        if ((i & 63) == 0) {
            uint64_t now = now_ns();
            if (!deadline)
                deadline = now + TEAM_SPIN_NS;
            else if (now >= deadline)
                break;
        }
    }
    while (atomic_load_explicit(word, memory_order_acquire) == old) {
        atomic_fetch_add(sleepers, 1);
        /* FUTEX_WAIT returns at once when *word no longer equals old. */
        syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
        atomic_fetch_sub(sleepers, 1);
    }
}

void team_wake(_Atomic unsigned *word, _Atomic int *sleepers)
{
    if (atomic_load(sleepers) > 0)
        syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void team_barrier_wait(struct team_barrier *b)
{
    unsigned g = atomic_load_explicit(&b->gen, memory_order_acquire);
    if (b->n <= 1)
        return;
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) + 1 == b->n) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_fetch_add(&b->gen, 1); /* seq_cst: ordered before the sleepers load */
        team_wake(&b->gen, &b->sleepers);
        return;
    }
    team_wait_change(&b->gen, g, &b->sleepers);
}

void team_barrier_cb(void *arg)
{
    team_barrier_wait(arg);
}
