/* lorad — tests/test_serving.c: the serving state (lib/serving.c): swap,
 * rollback, canary, promote and history semantics of SPEC.md 6, canary
 * routing shares, and RCU publication under concurrent readers (run it
 * under ASan: a reader touching a freed snapshot is a use-after-free). */
#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../lib/serving.h"
#include "../lib/snapshot.h"
#include "testutil.h"

#define MARK_N 32

/* A fake snapshot named `name` whose layer 0 weight holds MARK_N copies of
 * `mark` (the concurrency test puts the version it will get there). */
static struct snapshot *mk_mark(const char *name, uint64_t mark)
{
    struct snapshot *s = snapshot_new(1);
    ck_assert_ptr_nonnull(s);
    snprintf(s->name, sizeof(s->name), "%s", name);
    memset(s->sha256, 'a', 64);
    s->sha256[64] = '\0';
    s->layers[0].weight = malloc(MARK_N * sizeof(float));
    ck_assert_ptr_nonnull(s->layers[0].weight);
    for (int i = 0; i < MARK_N; i++)
        s->layers[0].weight[i] = (float)mark;
    return s;
}

static struct snapshot *mk(const char *name)
{
    return mk_mark(name, 0);
}

static uint64_t ver(const struct snapshot *s)
{
    return s ? s->version : 0;
}

/* Swaps `name` in as stable; returns its version. */
static uint64_t swap_stable(struct serving *s, const char *name)
{
    struct serving_commit c;
    struct lorad_error e = {0};
    ck_assert_int_eq(serving_swap(s, mk(name), -1, &c, &e), 0);
    ck_assert_str_eq(c.now->name, name);
    ck_assert_int_eq(c.variant, SERVING_STABLE);
    return c.now->version;
}

/* "v1 v2 ..." of the history, newest first. */
static void hist_str(const struct serving *s, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < serving_history_len(s); i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%" PRIu64, i ? " " : "",
                                ver(serving_history_at(s, i)));
}

#define ck_hist(s, want)                                                                           \
    do {                                                                                           \
        char hb_[256];                                                                             \
        hist_str((s), hb_, sizeof(hb_));                                                           \
        ck_assert_str_eq(hb_, (want));                                                             \
    } while (0)

START_TEST(test_new_is_base)
{
    struct serving *s = serving_new(4);
    const struct serving_view *v = serving_current(s);
    ck_assert_ptr_null(v->stable);
    ck_assert_ptr_null(v->canary);
    ck_assert_uint_eq(v->generation, 0);
    ck_assert_uint_eq(serving_next_version(s), 1);
    ck_assert_uint_eq(serving_history_len(s), 0);
    ck_assert_uint_eq(serving_history_max(s), 4);
    serving_free(&s);
    ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_swap_versions_and_history)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};

    ck_assert_int_eq(serving_swap(s, mk("a"), -1, &c, &e), 0);
    ck_assert_uint_eq(c.now->version, 1);
    ck_assert_uint_eq(c.generation, 1);
    ck_assert(c.has_previous);
    ck_assert_str_eq(c.previous_adapter, ""); /* base */
    ck_assert_uint_eq(c.previous_version, 0);
    ck_assert(c.commit_us >= 0.0);
    ck_hist(s, "0"); /* the base model is a history entry */

    ck_assert_int_eq(serving_swap(s, mk("b"), -1, &c, &e), 0);
    ck_assert_uint_eq(c.now->version, 2);
    ck_assert_str_eq(c.previous_adapter, "a");
    ck_assert_uint_eq(c.previous_version, 1);
    ck_assert_uint_eq(swap_stable(s, "c"), 3);
    ck_hist(s, "2 1 0");
    ck_assert_str_eq(serving_current(s)->stable->name, "c");
    ck_assert_uint_eq(serving_current(s)->generation, 3);
    ck_assert_uint_eq(serving_next_version(s), 4);
    serving_free(&s);
}
END_TEST

START_TEST(test_rollback_walks_back)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};

    swap_stable(s, "a");
    swap_stable(s, "b");
    swap_stable(s, "c");
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), 0);
    ck_assert_str_eq(c.now->name, "b");
    ck_assert_uint_eq(c.now->version, 2); /* keeps its version */
    ck_assert_int_eq(c.variant, SERVING_STABLE);
    ck_assert_str_eq(c.previous_adapter, "c");
    ck_assert_uint_eq(c.previous_version, 3);
    ck_assert_uint_eq(c.generation, 4);
    ck_hist(s, "1 0"); /* c was dropped, not pushed */

    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), 0);
    ck_assert_str_eq(c.now->name, "a");
    ck_hist(s, "0");
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), 0);
    ck_assert_ptr_null(c.now); /* base: adapter null, version 0 */
    ck_assert_ptr_null(serving_current(s)->stable);
    ck_assert_str_eq(c.previous_adapter, "a");
    ck_hist(s, "");
    ck_assert_uint_eq(serving_current(s)->generation, 6);

    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), LORAD_E_NO_HISTORY);
    ck_assert_int_eq(e.code, LORAD_E_NO_HISTORY);
    ck_assert_uint_eq(serving_current(s)->generation, 6); /* nothing changed */
    /* Versions are never reissued after a rollback. */
    ck_assert_uint_eq(swap_stable(s, "d"), 4);
    serving_free(&s);
}
END_TEST

START_TEST(test_rollback_to_version)
{
    struct serving *s = serving_new(8);
    struct serving_commit c;
    struct lorad_error e = {0};
    uint64_t v;

    for (int i = 0; i < 5; i++) {
        char n[16];
        snprintf(n, sizeof(n), "a%d", i + 1);
        swap_stable(s, n);
    }
    ck_hist(s, "4 3 2 1 0");
    v = 2;
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), 0);
    ck_assert_str_eq(c.now->name, "a2");
    ck_assert_uint_eq(c.now->version, 2);
    ck_assert_str_eq(c.previous_adapter, "a5");
    ck_assert_uint_eq(c.previous_version, 5);
    ck_hist(s, "1 0"); /* 5 (stable), 4 and 3 dropped */

    /* The current stable's version is not "in history". */
    v = 2;
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), LORAD_E_VERSION_NOT_FOUND);
    v = 4; /* dropped */
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), LORAD_E_VERSION_NOT_FOUND);
    v = 99;
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), LORAD_E_VERSION_NOT_FOUND);
    ck_assert_int_eq(e.code, LORAD_E_VERSION_NOT_FOUND);
    ck_assert_uint_eq(serving_current(s)->generation, 6);

    v = 0; /* base model by version */
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), 0);
    ck_assert_ptr_null(c.now);
    ck_assert_ptr_null(serving_current(s)->stable);
    ck_hist(s, "");
    /* An empty history: {} has nothing to go back to (409), but a named
     * version is simply not in history (404), the current stable's too. */
    v = 0;
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), LORAD_E_VERSION_NOT_FOUND);
    ck_assert_int_eq(e.code, LORAD_E_VERSION_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(e.msg, "current stable"));
    ck_assert_ptr_nonnull(strstr(e.msg, "history is empty"));
    v = 7;
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), LORAD_E_VERSION_NOT_FOUND);
    ck_assert_ptr_null(strstr(e.msg, "current stable"));
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), LORAD_E_NO_HISTORY);
    ck_assert_uint_eq(serving_current(s)->generation, 7); /* nothing changed */
    ck_assert_uint_eq(swap_stable(s, "b"), 6);
    ck_hist(s, "0");
    serving_free(&s);
}
END_TEST

START_TEST(test_history_bound)
{
    struct serving *s = serving_new(2);
    swap_stable(s, "a"); /* hist 0 */
    swap_stable(s, "b"); /* hist 1 0 */
    swap_stable(s, "c"); /* hist 2 1 (base dropped) */
    ck_hist(s, "2 1");
    swap_stable(s, "d");
    ck_hist(s, "3 2");
    serving_barrier(s); /* the dropped ones are freed (ASan: no leak) */
    serving_free(&s);

    s = serving_new(0); /* no history at all */
    swap_stable(s, "a");
    ck_hist(s, "");
    {
        struct serving_commit c;
        struct lorad_error e = {0};
        ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), LORAD_E_NO_HISTORY);
        uint64_t v = 1; /* the current stable, with no history kept */
        ck_assert_int_eq(serving_rollback(s, &v, &c, &e), LORAD_E_VERSION_NOT_FOUND);
    }
    serving_free(&s);
}
END_TEST

START_TEST(test_canary_swap_promote)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};
    const struct serving_view *v;

    swap_stable(s, "a");
    ck_assert_int_eq(serving_swap(s, mk("b"), 2500, &c, &e), 0);
    ck_assert_int_eq(c.variant, SERVING_CANARY);
    ck_assert_uint_eq(c.now->version, 2);
    ck_assert_str_eq(c.previous_adapter, "a"); /* the stable it shares with */
    v = serving_current(s);
    ck_assert_str_eq(v->stable->name, "a");
    ck_assert_str_eq(v->canary->name, "b");
    ck_assert_int_eq(v->canary_bp, 2500);
    ck_assert_uint_eq(v->generation, 2);
    ck_hist(s, "0"); /* a canary swap leaves history alone */

    /* Any swap while a canary is live: canary_active, snapshot freed. */
    ck_assert_int_eq(serving_swap(s, mk("c"), -1, &c, &e), LORAD_E_CANARY_ACTIVE);
    ck_assert_int_eq(serving_swap(s, mk("c"), 100, &c, &e), LORAD_E_CANARY_ACTIVE);
    ck_assert_uint_eq(serving_next_version(s), 3); /* no version issued */
    ck_assert_uint_eq(serving_current(s)->generation, 2);

    ck_assert_int_eq(serving_set_canary(s, 5000, &c, &e), 0);
    ck_assert_int_eq(c.variant, SERVING_CANARY);
    ck_assert_str_eq(c.now->name, "b");
    ck_assert(!c.has_previous);
    ck_assert_int_eq(serving_current(s)->canary_bp, 5000);
    ck_assert_uint_eq(c.generation, 3);
    ck_assert_int_eq(serving_set_canary(s, 10001, &c, &e), LORAD_E_INVALID_REQUEST);
    ck_assert_int_eq(serving_set_canary(s, -1, &c, &e), LORAD_E_INVALID_REQUEST);

    ck_assert_int_eq(serving_promote(s, &c, &e), 0);
    ck_assert_int_eq(c.variant, SERVING_STABLE);
    ck_assert_str_eq(c.now->name, "b");
    ck_assert_uint_eq(c.now->version, 2); /* keeps its version */
    ck_assert_str_eq(c.previous_adapter, "a");
    ck_assert_uint_eq(c.generation, 4);
    v = serving_current(s);
    ck_assert_str_eq(v->stable->name, "b");
    ck_assert_ptr_null(v->canary);
    ck_assert_int_eq(v->canary_bp, 0);
    ck_hist(s, "1 0");

    ck_assert_int_eq(serving_promote(s, &c, &e), LORAD_E_NO_CANARY);
    ck_assert_int_eq(serving_set_canary(s, 10, &c, &e), LORAD_E_NO_CANARY);
    ck_assert_int_eq(e.code, LORAD_E_NO_CANARY);
    ck_assert_int_eq(serving_swap(s, mk("x"), 10001, &c, &e), LORAD_E_INVALID_REQUEST);
    ck_assert_uint_eq(serving_current(s)->generation, 4);
    serving_free(&s);
}
END_TEST

START_TEST(test_canary_abort)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};
    uint64_t v;

    /* From base: a canary, aborted by rollback. */
    ck_assert_int_eq(serving_swap(s, mk("a"), 1000, &c, &e), 0);
    ck_hist(s, "");
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), 0);
    ck_assert_ptr_null(c.now); /* the stable serving now: base */
    ck_assert_int_eq(c.variant, SERVING_STABLE);
    ck_assert(c.has_previous);
    ck_assert_str_eq(c.previous_adapter, "a"); /* names the aborted canary */
    ck_assert_uint_eq(c.previous_version, 1);
    ck_assert_ptr_null(serving_current(s)->canary);
    ck_assert_uint_eq(serving_current(s)->generation, 2);
    ck_hist(s, "");
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), LORAD_E_NO_HISTORY);

    /* With history: the abort does not touch history; the next rollback
     * walks back. */
    swap_stable(s, "b");                                         /* 2, hist 0 */
    swap_stable(s, "c");                                         /* 3, hist 2 0 */
    ck_assert_int_eq(serving_swap(s, mk("d"), 5000, &c, &e), 0); /* 4 */
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), 0);
    ck_assert_str_eq(c.now->name, "c");
    ck_assert_str_eq(c.previous_adapter, "d");
    ck_hist(s, "2 0");
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), 0);
    ck_assert_str_eq(c.now->name, "b");

    /* Rollback to a version with a canary live drops the canary too. */
    swap_stable(s, "e");                                         /* 5, hist 2 0 */
    ck_assert_int_eq(serving_swap(s, mk("f"), 5000, &c, &e), 0); /* 6 */
    v = 0;
    ck_assert_int_eq(serving_rollback(s, &v, &c, &e), 0);
    ck_assert_ptr_null(serving_current(s)->stable);
    ck_assert_ptr_null(serving_current(s)->canary);
    ck_assert_str_eq(c.previous_adapter, "e");
    ck_hist(s, "");
    ck_assert_uint_eq(swap_stable(s, "g"), 7);
    serving_free(&s);
}
END_TEST

START_TEST(test_generation_every_change)
{
    struct serving *s = serving_new(3);
    struct serving_commit c;
    struct lorad_error e = {0};
    uint64_t g = 0;
#define STEP(expr)                                                                                 \
    do {                                                                                           \
        ck_assert_int_eq((expr), 0);                                                               \
        ck_assert_uint_eq(c.generation, ++g);                                                      \
        ck_assert_uint_eq(serving_current(s)->generation, g);                                      \
    } while (0)
    STEP(serving_swap(s, mk("a"), -1, &c, &e));
    STEP(serving_swap(s, mk("b"), 100, &c, &e));
    STEP(serving_set_canary(s, 200, &c, &e));
    STEP(serving_set_canary(s, 200, &c, &e));
    STEP(serving_promote(s, &c, &e));
    STEP(serving_swap(s, mk("c"), 0, &c, &e));
    STEP(serving_rollback(s, NULL, &c, &e));
    STEP(serving_rollback(s, NULL, &c, &e));
    STEP(serving_swap(s, mk("d"), 10000, &c, &e));
    STEP(serving_promote(s, &c, &e));
#undef STEP
    serving_free(&s);
}
END_TEST

START_TEST(test_restore)
{
    struct serving *s = serving_new(2);
    struct snapshot *st = mk("st"), *ca = mk("ca"), *h[3];
    const struct serving_view *v;
    struct serving_commit c;
    struct lorad_error e = {0};

    swap_stable(s, "old"); /* replaced by the restore */
    st->version = 7;
    ca->version = 9;
    h[0] = mk("h0");
    h[0]->version = 5;
    h[1] = NULL;     /* base */
    h[2] = mk("h2"); /* beyond history_max: freed */
    h[2]->version = 2;
    serving_restore(s, st, ca, 1234, h, 3, 42, 11);
    v = serving_current(s);
    ck_assert_ptr_eq(v->stable, st);
    ck_assert_ptr_eq(v->canary, ca);
    ck_assert_int_eq(v->canary_bp, 1234);
    ck_assert_uint_eq(v->generation, 42);
    ck_assert_uint_eq(serving_next_version(s), 11);
    ck_hist(s, "5 0");
    ck_assert_int_eq(serving_promote(s, &c, &e), 0);
    ck_assert_uint_eq(c.now->version, 9);
    ck_assert_uint_eq(c.generation, 43);
    ck_hist(s, "7 5");
    ck_assert_uint_eq(swap_stable(s, "n"), 11);

    /* The version floor never goes down. */
    serving_restore(s, NULL, NULL, 0, NULL, 0, 1, 3);
    ck_assert_uint_eq(serving_next_version(s), 12);
    ck_assert_ptr_null(serving_current(s)->stable);
    ck_hist(s, "");
    serving_free(&s);
}
END_TEST

/* ---- routing ---- */

static struct serving *with_canary(int bp)
{
    struct serving *s = serving_new(2);
    struct serving_commit c;
    struct lorad_error e = {0};
    swap_stable(s, "stable");
    ck_assert_int_eq(serving_swap(s, mk("canary"), bp, &c, &e), 0);
    return s;
}

/* ---- two-phase commits (durable before visible) ---- */

static void persisted_hist(const struct serving *s, char *buf, size_t len)
{
    struct serving_state st;
    size_t off = 0;
    serving_persisted(s, &st);
    buf[0] = '\0';
    for (size_t i = 0; i < st.nhistory; i++)
        off +=
            (size_t)snprintf(buf + off, len - off, "%s%" PRIu64, i ? " " : "", ver(st.history[i]));
}

START_TEST(test_held_swap_abort)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};
    char hb[256];
    swap_stable(s, "a"); /* v1, history 0 */
    serving_hold(s);
    ck_assert_int_eq(serving_swap(s, mk("b"), -1, &c, &e), 0);
    ck_assert(serving_pending(s));
    ck_assert_uint_eq(c.now->version, 2);
    /* invisible: the view, history and next version are the old ones */
    ck_assert_str_eq(serving_current(s)->stable->name, "a");
    ck_assert_uint_eq(serving_current(s)->generation, 1);
    ck_hist(s, "0");
    ck_assert_uint_eq(serving_next_version(s), 2);
    /* what the state file records is the new state */
    struct serving_state st;
    serving_persisted(s, &st);
    ck_assert_str_eq(st.stable->name, "b");
    ck_assert_uint_eq(st.generation, 2);
    ck_assert_uint_eq(st.next_version, 3);
    persisted_hist(s, hb, sizeof(hb));
    ck_assert_str_eq(hb, "1 0");
    /* another change is refused while one is pending */
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), LORAD_E_SWAP_IN_PROGRESS);
    serving_pending_abort(s);
    ck_assert(!serving_pending(s));
    ck_assert_str_eq(serving_current(s)->stable->name, "a");
    ck_assert_uint_eq(serving_next_version(s), 2); /* version 2 was not issued */
    serving_persisted(s, &st);
    ck_assert_str_eq(st.stable->name, "a");
    ck_assert_uint_eq(st.generation, 1);
    ck_assert_uint_eq(swap_stable(s, "c"), 2); /* not held: at once */
    ck_hist(s, "1 0");
    serving_free(&s);
}
END_TEST

START_TEST(test_held_publish_undo_finish)
{
    struct serving *s = serving_new(2);
    struct serving_commit c;
    struct lorad_error e = {0};
    swap_stable(s, "a");
    swap_stable(s, "b"); /* stable b v2, history 1 0 */
    /* a rollback published, then undone: b v2 serves again with its history */
    serving_hold(s);
    ck_assert_int_eq(serving_rollback(s, NULL, &c, &e), 0);
    ck_assert_str_eq(serving_current(s)->stable->name, "b");
    ck_assert(serving_pending_publish(s) >= 0.0);
    ck_assert_str_eq(serving_current(s)->stable->name, "a");
    ck_hist(s, "0");
    serving_pending_undo(s);
    ck_assert(!serving_pending(s));
    ck_assert_str_eq(serving_current(s)->stable->name, "b");
    ck_assert_uint_eq(serving_current(s)->generation, 2);
    ck_hist(s, "1 0");
    /* an undone swap's version was visible: it is not issued again */
    serving_hold(s);
    ck_assert_int_eq(serving_swap(s, mk("x"), -1, &c, &e), 0);
    ck_assert_uint_eq(c.now->version, 3);
    serving_pending_publish(s);
    serving_pending_undo(s);
    ck_assert_str_eq(serving_current(s)->stable->name, "b");
    ck_hist(s, "1 0");
    ck_assert_uint_eq(serving_next_version(s), 4);
    /* a swap past the history bound, published and finished: the oldest
     * entry leaves (freed after a grace period: ASan sees a leak or a
     * double free otherwise) */
    serving_hold(s);
    ck_assert_int_eq(serving_swap(s, mk("c"), -1, &c, &e), 0);
    serving_pending_publish(s);
    serving_pending_finish(s);
    ck_assert_str_eq(serving_current(s)->stable->name, "c");
    ck_assert_uint_eq(serving_current(s)->stable->version, 4);
    ck_hist(s, "2 1");
    /* a held change that fails is no change, and the hold is cleared */
    serving_hold(s);
    ck_assert_int_eq(serving_promote(s, &c, &e), LORAD_E_NO_CANARY);
    serving_pending_abort(s);
    ck_assert_uint_eq(swap_stable(s, "d"), 5);
    ck_assert(!serving_pending(s));
    serving_barrier(s);
    serving_free(&s);
}
END_TEST

START_TEST(test_route_no_canary)
{
    struct serving *s = serving_new(2);
    const struct serving_view *v;
    swap_stable(s, "a");
    v = serving_current(s);
    for (int i = 0; i < 1000; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "k%d", i);
        ck_assert_int_eq(serving_route(s, v, NULL, 0), SERVING_STABLE);
        ck_assert_int_eq(serving_route(s, v, k, (size_t)n), SERVING_STABLE);
    }
    serving_free(&s);
}
END_TEST

static const int shares[] = {0, 1, 7, 50, 333, 1000, 2500, 5000, 6667, 9999, 10000};

START_TEST(test_route_unkeyed_share)
{
    for (size_t k = 0; k < sizeof(shares) / sizeof(shares[0]); k++) {
        int bp = shares[k];
        struct serving *s = with_canary(bp);
        const struct serving_view *v = serving_current(s);
        long canary = 0, prefix = 0;
        for (int i = 1; i <= 10000; i++) {
            canary += serving_route(s, v, NULL, 0) == SERVING_CANARY;
            /* Every prefix run stays within one request of the share. */
            double want = (double)i * bp / 10000.0;
            ck_assert_msg(canary - want <= 1.0 && want - canary <= 1.0, "bp %d: %ld canary of %d",
                          bp, canary, i);
            prefix = canary;
        }
        ck_assert_int_eq(prefix, bp); /* exactly bp of 10000 */
        /* A run that starts mid-way, of odd length. */
        canary = 0;
        for (int i = 0; i < 3333; i++)
            canary += serving_route(s, v, NULL, 0) == SERVING_CANARY;
        ck_assert_msg(labs(canary * 10000 - 3333L * bp) <= 10000, "bp %d: %ld of 3333", bp, canary);
        serving_free(&s);
    }
}
END_TEST

START_TEST(test_route_keyed)
{
    enum { NK = 10000 };
    static const int ladder[] = {0, 100, 1000, 2000, 3333, 5000, 7500, 9999, 10000};
    const size_t nl = sizeof(ladder) / sizeof(ladder[0]);
    unsigned char *prev = calloc(NK, 1), *cur = calloc(NK, 1);
    struct serving *s = with_canary(0);
    struct serving_commit c;
    struct lorad_error e = {0};

    for (size_t l = 0; l < nl; l++) {
        int bp = ladder[l];
        const struct serving_view *v;
        long n = 0;
        ck_assert_int_eq(serving_set_canary(s, bp, &c, &e), 0);
        v = serving_current(s);
        for (int i = 0; i < NK; i++) {
            char k[32];
            int kl = snprintf(k, sizeof(k), "user-%d", i);
            enum serving_variant a = serving_route(s, v, k, (size_t)kl);
            ck_assert_int_eq(serving_route(s, v, k, (size_t)kl), a); /* sticky */
            cur[i] = a == SERVING_CANARY;
            n += cur[i];
            /* Monotone: on the canary at a smaller share stays on it. */
            if (prev[i])
                ck_assert_msg(cur[i], "key %s left the canary at %d bp", k, bp);
        }
        /* A good hash: within 5 standard deviations of the share. */
        {
            double p = bp / 10000.0, want = NK * p, sd = sqrt(NK * p * (1 - p));
            ck_assert_msg(fabs((double)n - want) <= 5 * sd + 1, "bp %d: %ld of %d keys", bp, n, NK);
        }
        if (bp == 0)
            ck_assert_int_eq(n, 0);
        if (bp == 10000)
            ck_assert_int_eq(n, NK);
        memcpy(prev, cur, NK);
    }
    /* The key is bytes: length matters, not NUL. */
    {
        const struct serving_view *v;
        int same = 0;
        ck_assert_int_eq(serving_set_canary(s, 5000, &c, &e), 0);
        v = serving_current(s);
        for (int i = 0; i < 64; i++) {
            char k[8] = {'k', (char)i, 0, 'x'};
            same += serving_route(s, v, k, 2) == serving_route(s, v, k, 4);
        }
        ck_assert_int_lt(same, 64);
    }
    free(prev);
    free(cur);
    serving_free(&s);
}
END_TEST

/* ---- concurrency ---- */

struct conc {
    struct serving *s;
    atomic_int stop;
    atomic_long reads;
    atomic_int bad; /* a reader saw something wrong */
    char why[256];  /* what, written by the first to set bad */
};

/* Check's assertions report every pass through a pipe: far too slow for a
 * reader's hot loop, and not meant for threads. Readers record the first
 * problem here; the main thread asserts. */
static void reader_fail(struct conc *cc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reader_fail(struct conc *cc, const char *fmt, ...)
{
    va_list ap;
    if (atomic_exchange(&cc->bad, 1))
        return;
    va_start(ap, fmt);
    vsnprintf(cc->why, sizeof(cc->why), fmt, ap);
    va_end(ap);
}

static void check_snap(struct conc *cc, const struct snapshot *sn)
{
    if (!sn)
        return;
    /* The marker was written before publication with the version the
     * snapshot was about to get; a freed snapshot fails this under ASan
     * (use-after-free) and very likely without it. */
    if (sn->version < 1 || !sn->layers) {
        reader_fail(cc, "snapshot %s: version %" PRIu64 ", layers %p", sn->name, sn->version,
                    (void *)sn->layers);
        return;
    }
    for (int i = 0; i < MARK_N; i++)
        if (sn->layers[0].weight[i] != (float)sn->version)
            reader_fail(cc, "snapshot %s: marker %g != version %" PRIu64, sn->name,
                        (double)sn->layers[0].weight[i], sn->version);
}

static void check_view(struct conc *cc, const struct serving_view *v)
{
    check_snap(cc, v->stable);
    check_snap(cc, v->canary);
    if (v->canary) {
        uint64_t sv = v->stable ? v->stable->version : 0;
        if (v->canary->version <= sv)
            reader_fail(cc, "canary version %" PRIu64 " <= stable version %" PRIu64,
                        v->canary->version, sv);
        if (v->canary_bp < 0 || v->canary_bp > SERVING_BP_MAX)
            reader_fail(cc, "canary share %d", v->canary_bp);
    } else if (v->canary_bp != 0) {
        reader_fail(cc, "canary share %d without canary", v->canary_bp);
    }
}

static void *reader_main(void *arg)
{
    struct conc *cc = arg;
    long n = 0;
    serving_reader_register();
    serving_reader_online();
    while (!atomic_load(&cc->stop)) {
        for (int b = 0; b < 64; b++) {
            const struct serving_view *v = serving_read(cc->s);
            check_view(cc, v);
            (void)serving_route(cc->s, v, NULL, 0);
            (void)serving_route(cc->s, v, "key", 3);
            n++;
        }
        atomic_fetch_add(&cc->reads, 64);
        serving_reader_quiescent();
        if ((n & 1023) == 0) { /* idle for a moment, as workers do */
            serving_reader_offline();
            serving_reader_online();
        }
    }
    serving_reader_offline();
    serving_reader_unregister();
    return NULL;
}

START_TEST(test_concurrent_readers)
{
    /* At least NOPS changes and MIN_READS reads, overlapping. */
    enum { NREADERS = 4, NOPS = 20000, MIN_READS = 2000000, MAX_OPS = 2000000 };
    struct conc cc = {.s = serving_new(4)};
    pthread_t th[NREADERS];
    uint64_t rng = 12345;
    long ok = 0;

    atomic_init(&cc.stop, 0);
    atomic_init(&cc.reads, 0);
    atomic_init(&cc.bad, 0);
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, reader_main, &cc), 0);
    for (int op = 0; op < MAX_OPS && (op < NOPS || atomic_load(&cc.reads) < MIN_READS); op++) {
        struct serving_commit c;
        struct lorad_error e = {0};
        char name[32];
        int r = (int)(tu_rand(&rng) % 8), rc;
        snprintf(name, sizeof(name), "ad%d", op);
        switch (r) {
        case 0:
        case 1:
        case 2:
            rc = serving_swap(cc.s, mk_mark(name, serving_next_version(cc.s)), -1, &c, &e);
            break;
        case 3:
            rc = serving_swap(cc.s, mk_mark(name, serving_next_version(cc.s)),
                              (int)(tu_rand(&rng) % 10001), &c, &e);
            break;
        case 4:
            rc = serving_set_canary(cc.s, (int)(tu_rand(&rng) % 10001), &c, &e);
            break;
        case 5:
            rc = serving_promote(cc.s, &c, &e);
            break;
        case 6:
            rc = serving_rollback(cc.s, NULL, &c, &e);
            break;
        default: {
            size_t n = serving_history_len(cc.s);
            uint64_t v = n ? ver(serving_history_at(cc.s, tu_rand(&rng) % n)) : 1;
            rc = serving_rollback(cc.s, &v, &c, &e);
            break;
        }
        }
        ck_assert_msg(rc == 0 || rc == LORAD_E_CANARY_ACTIVE || rc == LORAD_E_NO_CANARY ||
                          rc == LORAD_E_NO_HISTORY || rc == LORAD_E_VERSION_NOT_FOUND,
                      "op %d: %s: %s", r, lorad_err_name(rc), e.msg);
        ok += rc == 0;
        if (rc == 0)
            ck_assert_uint_eq(c.generation, serving_current(cc.s)->generation);
        if (op % 64 == 0)
            sched_yield(); /* let readers run on small machines */
    }
    atomic_store(&cc.stop, 1);
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_msg(!atomic_load(&cc.bad), "reader: %s", cc.why);
    ck_assert_uint_eq(serving_current(cc.s)->generation, (uint64_t)ok);
    ck_assert_int_gt(atomic_load(&cc.reads), 0);
    fprintf(stderr, "concurrency: %ld commits, %ld reads by %d readers\n", ok,
            atomic_load(&cc.reads), NREADERS);
    serving_barrier(cc.s);
    serving_free(&cc.s);
}
END_TEST

/* ---- slots ---- */

static const struct serving_slot *slot_of(const struct serving *s, const char *name)
{
    const struct serving_slot *sl = serving_slot_get(s, name);
    ck_assert_msg(sl != NULL, "no slot %s", name);
    return sl;
}

START_TEST(test_slots_create_and_unload)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};
    const struct serving_view *v = serving_current(s);
    uint64_t g;

    ck_assert_uint_eq(serving_slot_count(s), 1);
    ck_assert_uint_eq(v->nslots, 1);
    ck_assert_str_eq(v->dflt->name, "default");
    ck_assert_ptr_eq(serving_view_slot(v, NULL, 0), v->dflt);
    ck_assert_ptr_eq(serving_view_slot(v, "default", 7), v->dflt);
    ck_assert_ptr_null(serving_view_slot(v, "team-a", 6));

    ck_assert_uint_eq(swap_stable(s, "a"), 1); /* default */
    /* a swap naming a new slot creates it, from the base model (history [0]) */
    ck_assert_int_eq(serving_slot_swap(s, "team-a", mk("b"), -1, &c, &e), 0);
    ck_assert_uint_eq(c.now->version, 2); /* one counter for all slots */
    ck_assert(c.has_previous && c.previous_adapter[0] == '\0' && c.previous_version == 0);
    ck_assert_uint_eq(c.generation, 2);
    ck_assert_int_eq(serving_slot_swap(s, "team", mk("c"), 5000, &c, &e), 0);
    ck_assert_uint_eq(c.now->version, 3);
    ck_assert_int_eq(c.variant, SERVING_CANARY);
    v = serving_current(s);
    ck_assert_uint_eq(v->nslots, 3);
    ck_assert_str_eq(v->slots[0].name, "default"); /* sorted by name */
    ck_assert_str_eq(v->slots[1].name, "team");
    ck_assert_str_eq(v->slots[2].name, "team-a");
    ck_assert_uint_eq(v->generation, 3);
    ck_assert_str_eq(v->stable->name, "a"); /* top level: default */
    ck_assert_ptr_null(v->canary);
    ck_assert_str_eq(serving_view_slot(v, "team-a", 6)->stable->name, "b");
    ck_assert_ptr_null(serving_view_slot(v, "team", 4)->stable);
    ck_assert_str_eq(serving_view_slot(v, "team", 4)->canary->name, "c");
    ck_assert_int_eq(serving_view_slot(v, "team", 4)->canary_bp, 5000);
    ck_assert_str_eq(serving_view_slot(v, "team-a-long", 6)->name, "team-a"); /* by length */
    ck_assert_ptr_null(serving_view_slot(v, "tea", 3));
    ck_assert_ptr_null(serving_view_slot(v, "team-b", 6));
    ck_assert_uint_eq(serving_slot_history_len(slot_of(s, "team-a")), 1);
    ck_assert_ptr_null(serving_slot_history_at(slot_of(s, "team-a"), 0));
    ck_hist(s, "0"); /* default's own history */

    /* each slot has its own canary rule and rollback */
    ck_assert_int_eq(serving_slot_swap(s, "team", mk("d"), -1, &c, &e), LORAD_E_CANARY_ACTIVE);
    ck_assert_int_eq(serving_slot_swap(s, "team-a", mk("d"), -1, &c, &e), 0); /* v4 */
    ck_assert_int_eq(serving_slot_rollback(s, "team-a", NULL, &c, &e), 0);
    ck_assert_str_eq(c.now->name, "b");
    ck_assert_uint_eq(c.now->version, 2);
    ck_assert_int_eq(serving_slot_promote(s, "team", &c, &e), 0);
    ck_assert_str_eq(c.now->name, "c");
    ck_assert_int_eq(serving_slot_set_canary(s, "team", 10, &c, &e), LORAD_E_NO_CANARY);
    ck_assert_str_eq(serving_current(s)->stable->name, "a");

    /* unknown slots, bad names, the default slot */
    g = serving_current(s)->generation;
    ck_assert_int_eq(serving_slot_rollback(s, "nope", NULL, &c, &e), LORAD_E_SLOT_NOT_FOUND);
    ck_assert(strstr(e.msg, "nope"));
    ck_assert_int_eq(serving_slot_set_canary(s, "nope", 10, &c, &e), LORAD_E_SLOT_NOT_FOUND);
    ck_assert_int_eq(serving_slot_promote(s, "nope", &c, &e), LORAD_E_SLOT_NOT_FOUND);
    ck_assert_int_eq(serving_slot_unload(s, "nope", &c, &e), LORAD_E_SLOT_NOT_FOUND);
    ck_assert_int_eq(serving_slot_unload(s, "default", &c, &e), LORAD_E_DEFAULT_SLOT);
    ck_assert_int_eq(serving_slot_unload(s, NULL, &c, &e), LORAD_E_DEFAULT_SLOT);
    ck_assert_int_eq(serving_slot_swap(s, "bad name", mk("x"), -1, &c, &e),
                     LORAD_E_INVALID_REQUEST);
    ck_assert_int_eq(serving_slot_swap(s, ".dot", mk("x"), -1, &c, &e), LORAD_E_INVALID_REQUEST);
    ck_assert_uint_eq(serving_current(s)->generation, g);
    ck_assert_uint_eq(serving_slot_count(s), 3);

    /* max_slots counts default */
    serving_set_limits(s, 3, 0);
    ck_assert_int_eq(serving_slot_swap(s, "team-c", mk("x"), -1, &c, &e), LORAD_E_TOO_MANY_SLOTS);
    ck_assert(strstr(e.msg, "max_slots"));
    ck_assert_int_eq(serving_slot_swap(s, "team", mk("x"), -1, &c, &e), 0); /* existing: fine */

    /* unload: gone from the next view; a new swap starts it afresh */
    ck_assert_int_eq(serving_slot_unload(s, "team-a", &c, &e), 0);
    ck_assert_str_eq(c.previous_adapter, "b");
    ck_assert_uint_eq(c.previous_version, 2);
    ck_assert_uint_eq(c.generation, g + 2);
    v = serving_current(s);
    ck_assert_uint_eq(v->nslots, 2);
    ck_assert_ptr_null(serving_view_slot(v, "team-a", 6));
    ck_assert_ptr_null(serving_slot_get(s, "team-a"));
    ck_assert_int_eq(serving_slot_swap(s, "team-a", mk("b"), -1, &c, &e), 0);
    ck_assert_uint_gt(c.now->version, 4); /* versions are never reissued */
    ck_assert_uint_eq(serving_slot_history_len(slot_of(s, "team-a")), 1);
    ck_assert_str_eq(serving_current(s)->stable->name, "a");
    serving_free(&s);
}
END_TEST

static struct snapshot *mk_bytes(const char *name, size_t bytes)
{
    struct snapshot *sn = mk(name);
    sn->bytes = bytes;
    return sn;
}

START_TEST(test_memory_bound)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};
    uint64_t g;

    serving_set_limits(s, 16, 100);
    ck_assert_uint_eq(serving_memory_limit(s), 100);
    ck_assert_int_eq(serving_slot_swap(s, NULL, mk_bytes("a", 30), -1, &c, &e), 0);
    ck_assert_int_eq(serving_slot_swap(s, NULL, mk_bytes("b", 30), -1, &c, &e), 0);
    ck_assert_uint_eq(serving_resident_bytes(s), 60); /* a in default's history */
    ck_assert_int_eq(serving_slot_swap(s, "x", mk_bytes("c", 30), -1, &c, &e), 0);
    ck_assert_uint_eq(serving_resident_bytes(s), 90);
    /* 120 > 100: the oldest history entry of any slot (a) goes */
    ck_assert_int_eq(serving_slot_swap(s, "y", mk_bytes("d", 30), -1, &c, &e), 0);
    ck_assert_uint_eq(serving_resident_bytes(s), 90);
    ck_hist(s, "0"); /* a dropped, the base model (no bytes) kept */
    /* x's old stable c goes to history, then out again: 90 */
    ck_assert_int_eq(serving_slot_swap(s, "x", mk_bytes("e", 30), -1, &c, &e), 0);
    ck_assert_uint_eq(serving_resident_bytes(s), 90);
    ck_assert_uint_eq(serving_slot_history_len(slot_of(s, "x")), 1); /* only the base model */
    /* stables and canaries alone would pass it: memory_limit, nothing changes */
    g = serving_current(s)->generation;
    ck_assert_int_eq(serving_slot_swap(s, NULL, mk_bytes("f", 30), 1000, &c, &e),
                     LORAD_E_MEMORY_LIMIT);
    ck_assert(strstr(e.msg, "max_adapter_memory_mb"));
    ck_assert_int_eq(serving_slot_swap(s, "z", mk_bytes("f", 11), -1, &c, &e),
                     LORAD_E_MEMORY_LIMIT);
    ck_assert_uint_eq(serving_current(s)->generation, g);
    ck_assert_uint_eq(serving_resident_bytes(s), 90);
    ck_assert_ptr_null(serving_slot_get(s, "z"));
    /* a swap replacing a stable of the same size fits (the old one can go) */
    ck_assert_int_eq(serving_slot_swap(s, "y", mk_bytes("g", 30), -1, &c, &e), 0);
    ck_assert_uint_eq(serving_resident_bytes(s), 90);
    /* unload and rollback give bytes back */
    ck_assert_int_eq(serving_slot_unload(s, "y", &c, &e), 0);
    ck_assert_uint_eq(serving_resident_bytes(s), 60);
    ck_assert_int_eq(serving_slot_rollback(s, "x", NULL, &c, &e), 0); /* to the base model */
    ck_assert_uint_eq(serving_resident_bytes(s), 30);
    /* no bound: history keeps everything */
    serving_set_limits(s, 16, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(serving_slot_swap(s, NULL, mk_bytes("h", 1000), -1, &c, &e), 0);
    ck_assert_uint_eq(serving_resident_bytes(s), 3030);
    serving_free(&s);
}
END_TEST

/* Readers over every slot while the writer creates, changes and unloads
 * slots (ASan: a freed snapshot or slot read is a use-after-free). */
static void *slot_reader_main(void *arg)
{
    struct conc *cc = arg;
    static const char *const names[] = {"s0", "s1", "s2", "s3", "s4", "s5", "none"};
    long n = 0;
    serving_reader_register();
    serving_reader_online();
    while (!atomic_load(&cc->stop)) {
        for (int b = 0; b < 16; b++) {
            const struct serving_view *v = serving_read(cc->s);
            for (size_t i = 0; i < v->nslots; i++) {
                const struct serving_slot_view *sv = &v->slots[i];
                check_snap(cc, sv->stable);
                check_snap(cc, sv->canary);
                if (i > 0 && strcmp(v->slots[i - 1].name, sv->name) >= 0)
                    reader_fail(cc, "slots out of order: %s, %s", v->slots[i - 1].name, sv->name);
                (void)serving_route_slot(sv, NULL, 0);
            }
            const char *nm = names[n % 7];
            const struct serving_slot_view *sv = serving_view_slot(v, nm, strlen(nm));
            if (sv && strcmp(sv->name, nm) != 0)
                reader_fail(cc, "lookup %s found %s", nm, sv->name);
            if (!v->dflt || strcmp(v->dflt->name, "default") != 0)
                reader_fail(cc, "no default slot");
            n++;
        }
        atomic_fetch_add(&cc->reads, 16);
        serving_reader_quiescent();
    }
    serving_reader_offline();
    serving_reader_unregister();
    return NULL;
}

START_TEST(test_slots_concurrent)
{
    enum { NREADERS = 3, NOPS = 20000 };
    struct conc cc = {.s = serving_new(2)};
    pthread_t th[NREADERS];
    uint64_t rng = 777;
    long ok = 0;

    serving_set_limits(cc.s, 6, 0);
    atomic_init(&cc.stop, 0);
    atomic_init(&cc.reads, 0);
    atomic_init(&cc.bad, 0);
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, slot_reader_main, &cc), 0);
    for (int op = 0; op < NOPS; op++) {
        struct serving_commit c;
        struct lorad_error e = {0};
        char slot[8];
        int r = (int)(tu_rand(&rng) % 6), rc;
        snprintf(slot, sizeof(slot), "s%d", (int)(tu_rand(&rng) % 6));
        bool held = op % 2 == 1; /* as durable-before-visible commits run */
        if (held)
            serving_hold(cc.s);
        switch (r) {
        case 0:
        case 1:
            rc = serving_slot_swap(cc.s, slot, mk_mark("ad", serving_next_version(cc.s)),
                                   r == 1 ? 3000 : -1, &c, &e);
            break;
        case 2:
            rc = serving_slot_rollback(cc.s, slot, NULL, &c, &e);
            break;
        case 3:
            rc = serving_slot_promote(cc.s, slot, &c, &e);
            break;
        case 4:
            rc = serving_slot_unload(cc.s, slot, &c, &e);
            break;
        default:
            rc =
                serving_slot_swap(cc.s, NULL, mk_mark("d", serving_next_version(cc.s)), -1, &c, &e);
            break;
        }
        ck_assert_msg(rc == 0 || rc == LORAD_E_CANARY_ACTIVE || rc == LORAD_E_NO_CANARY ||
                          rc == LORAD_E_NO_HISTORY || rc == LORAD_E_SLOT_NOT_FOUND ||
                          rc == LORAD_E_TOO_MANY_SLOTS,
                      "op %d: %s: %s", r, lorad_err_name(rc), e.msg);
        if (held && rc == 0 && op % 8 == 7) { /* published, then undone */
            serving_pending_publish(cc.s);
            serving_pending_undo(cc.s);
            rc = 1;
        } else if (held && rc == 0) {
            serving_pending_publish(cc.s);
            serving_pending_finish(cc.s);
        } else if (held) {
            serving_pending_abort(cc.s);
        }
        ok += rc == 0;
        if (op % 64 == 0)
            sched_yield();
    }
    atomic_store(&cc.stop, 1);
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_msg(!atomic_load(&cc.bad), "reader: %s", cc.why);
    ck_assert_uint_eq(serving_current(cc.s)->generation, (uint64_t)ok);
    fprintf(stderr, "slots concurrency: %ld commits, %ld reads\n", ok, atomic_load(&cc.reads));
    serving_barrier(cc.s);
    serving_free(&cc.s);
}
END_TEST

/* ---- two-phase commits in slots (durable before visible) ---- */

START_TEST(test_held_slots)
{
    struct serving *s = serving_new(4);
    struct serving_commit c;
    struct lorad_error e = {0};
    const struct serving_slot *const *ps;
    uint64_t g, nv;

    serving_set_limits(s, 8, 100);
    ck_assert_int_eq(serving_slot_swap(s, NULL, mk_bytes("a", 30), -1, &c, &e), 0);
    ck_assert_int_eq(serving_slot_swap(s, NULL, mk_bytes("b", 30), -1, &c, &e), 0);
    ck_assert_int_eq(serving_slot_swap(s, "x", mk_bytes("c", 30), -1, &c, &e), 0); /* 90 */

    /* a held swap creating slot y (and dropping a from default's history):
     * invisible until published; abort puts everything back */
    serving_hold(s);
    ck_assert_int_eq(serving_slot_swap(s, "y", mk_bytes("d", 30), -1, &c, &e), 0);
    ck_assert(serving_pending(s));
    ck_assert_uint_eq(c.now->version, 4);
    ck_assert_uint_eq(serving_slot_count(s), 2);
    ck_assert_ptr_null(serving_slot_get(s, "y"));
    ck_assert_uint_eq(serving_current(s)->nslots, 2);
    ck_hist(s, "1 0");
    ck_assert_uint_eq(serving_resident_bytes(s), 90);
    ck_assert_uint_eq(serving_next_version(s), 4);
    ck_assert_uint_eq(serving_persisted_slots(s, &ps), 3); /* the state file's view */
    ck_assert_str_eq(serving_slot_name(ps[2]), "y");
    serving_persisted_counters(s, &g, &nv);
    ck_assert_uint_eq(nv, 5);
    ck_assert_int_eq(serving_slot_unload(s, "x", &c, &e), LORAD_E_SWAP_IN_PROGRESS);
    serving_pending_abort(s);
    ck_assert(!serving_pending(s));
    ck_assert_uint_eq(serving_slot_count(s), 2);
    ck_assert_uint_eq(serving_persisted_slots(s, &ps), 2);
    ck_hist(s, "1 0"); /* a is back */
    ck_assert_uint_eq(serving_resident_bytes(s), 90);
    ck_assert_uint_eq(serving_next_version(s), 4);

    /* the same, published and undone: y goes again after a grace period */
    serving_hold(s);
    ck_assert_int_eq(serving_slot_swap(s, "y", mk_bytes("d", 30), -1, &c, &e), 0);
    serving_pending_publish(s);
    ck_assert_uint_eq(serving_current(s)->nslots, 3);
    ck_assert_uint_eq(serving_slot_count(s), 3);
    ck_hist(s, "0");
    serving_pending_undo(s);
    ck_assert_uint_eq(serving_current(s)->nslots, 2);
    ck_assert_ptr_null(serving_view_slot(serving_current(s), "y", 1));
    ck_hist(s, "1 0");
    ck_assert_uint_eq(serving_resident_bytes(s), 90);

    /* a held unload, published and undone: x serves again as it was */
    g = serving_current(s)->generation;
    serving_hold(s);
    ck_assert_int_eq(serving_slot_unload(s, "x", &c, &e), 0);
    ck_assert_ptr_nonnull(serving_slot_get(s, "x"));
    serving_pending_publish(s);
    ck_assert_ptr_null(serving_slot_get(s, "x"));
    ck_assert_uint_eq(serving_resident_bytes(s), 60);
    serving_pending_undo(s);
    ck_assert_str_eq(serving_slot_stable(serving_slot_get(s, "x"))->name, "c");
    ck_assert_uint_eq(serving_slot_history_len(serving_slot_get(s, "x")), 1);
    ck_assert_uint_eq(serving_current(s)->generation, g);
    ck_assert_uint_eq(serving_resident_bytes(s), 90);

    /* a held unload that stands */
    serving_hold(s);
    ck_assert_int_eq(serving_slot_unload(s, "x", &c, &e), 0);
    serving_pending_publish(s);
    serving_pending_finish(s);
    ck_assert_ptr_null(serving_slot_get(s, "x"));
    ck_assert_uint_eq(serving_resident_bytes(s), 60);
    /* a held change that fails is no change, and the hold is cleared */
    serving_hold(s);
    ck_assert_int_eq(serving_slot_promote(s, "nope", &c, &e), LORAD_E_SLOT_NOT_FOUND);
    serving_pending_abort(s);
    ck_assert_int_eq(serving_slot_swap(s, "z", mk_bytes("e", 10), -1, &c, &e), 0);
    ck_assert_uint_eq(c.now->version, 5); /* 4 was seen (published, undone): not again */
    ck_assert(!serving_pending(s));
    serving_barrier(s);
    serving_free(&s);
}
END_TEST

/* Threads of this process named `name` (other than the caller's own). */
static int threads_named(const char *name, bool *self_named)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    long self = (long)syscall(SYS_gettid);
    int n = 0;
    ck_assert(d != NULL);
    *self_named = false;
    while ((e = readdir(d)) != NULL) {
        char path[64], comm[32] = "";
        long tid = strtol(e->d_name, NULL, 10);
        FILE *f;
        if (tid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%ld/comm", tid);
        if (!(f = fopen(path, "r")))
            continue;
        if (fgets(comm, sizeof(comm), f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        if (strcmp(comm, name) != 0)
            continue;
        if (tid == self)
            *self_named = true;
        else
            n++;
    }
    closedir(d);
    return n;
}

START_TEST(test_name_reclaimer)
{
    struct serving *s = serving_new(2);
    bool self_named;
    ck_assert_int_eq(serving_name_reclaimer(NULL), LORAD_E_INVALID_REQUEST);
    ck_assert_int_eq(serving_name_reclaimer("0123456789abcdef"), LORAD_E_INVALID_REQUEST);
    ck_assert_int_eq(threads_named("srv-reclaim-t", &self_named), 0);
    ck_assert_int_eq(serving_name_reclaimer("srv-reclaim-t"), 0);
    serving_barrier(s); /* the callback has run */
    ck_assert_int_eq(threads_named("srv-reclaim-t", &self_named), 1);
    ck_assert_msg(!self_named, "the writer thread was renamed, not call_rcu's");
    /* the longest name that fits (15 bytes) renames the same thread */
    ck_assert_int_eq(serving_name_reclaimer("0123456789abcde"), 0);
    serving_barrier(s);
    ck_assert_int_eq(threads_named("0123456789abcde", &self_named), 1);
    ck_assert_int_eq(threads_named("srv-reclaim-t", &self_named), 0);
    serving_free(&s);
}
END_TEST

static Suite *serving_suite(void)
{
    Suite *s = suite_create("serving");
    TCase *tc = tcase_create("semantics");
    TCase *tr = tcase_create("routing");
    TCase *tt = tcase_create("concurrency");

    tcase_add_test(tc, test_new_is_base);
    tcase_add_test(tc, test_swap_versions_and_history);
    tcase_add_test(tc, test_rollback_walks_back);
    tcase_add_test(tc, test_rollback_to_version);
    tcase_add_test(tc, test_history_bound);
    tcase_add_test(tc, test_canary_swap_promote);
    tcase_add_test(tc, test_canary_abort);
    tcase_add_test(tc, test_generation_every_change);
    tcase_add_test(tc, test_restore);
    tcase_add_test(tc, test_held_swap_abort);
    tcase_add_test(tc, test_held_publish_undo_finish);
    tcase_add_test(tc, test_slots_create_and_unload);
    tcase_add_test(tc, test_memory_bound);
    tcase_add_test(tc, test_held_slots);
    tcase_add_test(tc, test_name_reclaimer);
    suite_add_tcase(s, tc);

    tcase_add_test(tr, test_route_no_canary);
    tcase_add_test(tr, test_route_unkeyed_share);
    tcase_add_test(tr, test_route_keyed);
    tcase_set_timeout(tr, 60);
    suite_add_tcase(s, tr);

    tcase_add_test(tt, test_concurrent_readers);
    tcase_add_test(tt, test_slots_concurrent);
    tcase_set_timeout(tt, 300);
    suite_add_tcase(s, tt);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(serving_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
