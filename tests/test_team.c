/* lorad — tests/test_team.c: unit tests of lib/team.c. Threads meet at
 * the barrier for many rounds (some rounds long enough that waiters go to
 * sleep on the futex): no member leaves round k before every member has
 * arrived at it, and team_wait_change returns once the word moves. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "../lib/team.h"

#define ROUNDS 2000
#define MAXN 4

static struct team_barrier bar;
static _Atomic int arrived[ROUNDS];
static _Atomic int bad;
static int members;

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void *member(void *arg)
{
    int me = (int)(long)arg;
    for (int k = 0; k < ROUNDS; k++) {
        atomic_fetch_add(&arrived[k], 1);
        if (k % 500 == me) /* longer than TEAM_SPIN_NS: the others sleep */
            nap_us(2 * TEAM_SPIN_NS / 1000);
        team_barrier_wait(&bar);
        if (atomic_load(&arrived[k]) != members)
            atomic_fetch_add(&bad, 1);
    }
    return NULL;
}

START_TEST(test_barrier_rounds)
{
    pthread_t tid[MAXN];
    members = 1 + _i;
    for (int k = 0; k < ROUNDS; k++)
        atomic_store(&arrived[k], 0);
    atomic_store(&bad, 0);
    team_barrier_init(&bar, members);
    for (int i = 0; i < members; i++)
        ck_assert_int_eq(pthread_create(&tid[i], NULL, member, (void *)(long)i), 0);
    for (int i = 0; i < members; i++)
        pthread_join(tid[i], NULL);
    ck_assert_int_eq(atomic_load(&bad), 0);
    ck_assert_uint_eq(atomic_load(&bar.gen), members > 1 ? ROUNDS : 0);
}
END_TEST

static _Atomic unsigned word;
static _Atomic int sleepers;

static void *bumper(void *arg)
{
    (void)arg;
    nap_us(3 * TEAM_SPIN_NS / 1000); /* the waiter is asleep by now */
    atomic_fetch_add(&word, 1);
    team_wake(&word, &sleepers);
    return NULL;
}

START_TEST(test_wait_change)
{
    pthread_t t;
    atomic_store(&word, 7);
    team_wait_change(&word, 6, &sleepers); /* already moved: returns at once */
    ck_assert_int_eq(pthread_create(&t, NULL, bumper, NULL), 0);
    team_wait_change(&word, 7, &sleepers);
    ck_assert_uint_eq(atomic_load(&word), 8);
    pthread_join(t, NULL);
    ck_assert_int_eq(atomic_load(&sleepers), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("team");
    TCase *tc = tcase_create("barrier");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_barrier_rounds, 0, MAXN);
    tcase_add_test(tc, test_wait_change);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
