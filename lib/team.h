/* lorad — team.h: a barrier for a fixed team of threads that split one
 * computation (the forward's layers, lib/forward.h), spin first, then
 * sleep.
 *
 * A member arriving last releases the others; the others spin for a
 * bounded number of polls (the wait between two layers is a few tens of
 * microseconds) and then sleep on a futex, so a member never burns a core
 * that the loop thread or another process needs for long. The barrier is
 * reusable at once: its generation counter tells rounds apart.
 *
 * Threads: team_barrier_wait from the `n` members; init before any of
 * them uses it. Linux (futex).
 */
#ifndef LORAD_TEAM_H
#define LORAD_TEAM_H

#include <stdatomic.h>

/* How long a waiter spins before it sleeps, in nanoseconds (the clock is
 * read every 64 polls: a pause costs 10-200 ns depending on the CPU). */
#define TEAM_SPIN_NS 50000

struct team_barrier {
    int n;                /* members */
    _Atomic int arrived;  /* members at the barrier this round */
    _Atomic unsigned gen; /* rounds completed (the futex word) */
    _Atomic int sleepers; /* members asleep on gen */
};

void team_barrier_init(struct team_barrier *b, int n);
/* Returns when all n members have called it for this round. */
void team_barrier_wait(struct team_barrier *b);
/* The same, as a callback (arg: the struct team_barrier). */
void team_barrier_cb(void *arg);

/* Waits until *word != old: spins up to TEAM_SPIN_NS, then sleeps on a
 * futex; `sleepers` counts the sleepers (so the waker can skip the
 * syscall). Wakers: team_wake(). */
void team_wait_change(_Atomic unsigned *word, unsigned old, _Atomic int *sleepers);
/* Wakes every thread sleeping in team_wait_change on `word`. */
void team_wake(_Atomic unsigned *word, _Atomic int *sleepers);

#endif
