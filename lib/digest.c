/* lorad — digest.c: this file contains the sha256 hex helpers of digest.h,
 * built on nettle, and the memo of file digests.
 *
 * The memo is a fixed table of DIGEST_MEMO_SIZE entries under one mutex,
 * held only to look up or store an entry, never while hashing. An entry
 * is valid once stored and only replaced: by a newer digest of the same
 * device and inode (a rewritten file), else by the first free slot, else
 * by the least recently used entry. */
#include "digest.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <nettle/sha2.h>

#include "errors.h"

static const char hex_digits[] = "0123456789abcdef";

int digest_sha256_hex(const void *data, size_t len, char out[65])
{
    struct sha256_ctx ctx;
    uint8_t md[SHA256_DIGEST_SIZE];

    if (!out || (!data && len > 0))
        return LORAD_E_INTERNAL;
    sha256_init(&ctx);
    if (len > 0)
        sha256_update(&ctx, len, data);
    sha256_digest(&ctx, sizeof(md), md);
    for (size_t i = 0; i < sizeof(md); i++) {
        out[2 * i] = hex_digits[md[i] >> 4];
        out[2 * i + 1] = hex_digits[md[i] & 0xf];
    }
    out[DIGEST_SHA256_HEX_LEN] = '\0';
    return 0;
}

/* Value of one hex digit, or -1. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool digest_hex_valid(const char *s)
{
    if (!s)
        return false;
    for (size_t i = 0; i < DIGEST_SHA256_HEX_LEN; i++)
        if (hex_value(s[i]) < 0) /* also stops at an early NUL */
            return false;
    return s[DIGEST_SHA256_HEX_LEN] == '\0';
}

bool digest_hex_equal(const char *a, const char *b)
{
    unsigned diff = 0;

    if (!digest_hex_valid(a) || !digest_hex_valid(b))
        return false;
    for (size_t i = 0; i < DIGEST_SHA256_HEX_LEN; i++)
        diff |= (unsigned)(hex_value(a[i]) ^ hex_value(b[i]));
    return diff == 0;
}

/* ---- the file digest memo ---- */

struct memo_entry {
    bool valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
    uint64_t used; /* memo_clock at the last hit or store */
    char sha[DIGEST_SHA256_HEX_LEN + 1];
};

static struct memo_entry memo[DIGEST_MEMO_SIZE];
static uint64_t memo_clock;
static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;

static bool ts_eq(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool memo_entry_is(const struct memo_entry *e, const struct stat *st)
{
    return e->valid && e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           ts_eq(&e->mtim, &st->st_mtim) && ts_eq(&e->ctim, &st->st_ctim);
}

static bool memo_get(const struct stat *st, char out[65])
{
    bool hit = false;

    pthread_mutex_lock(&memo_lock);
    for (size_t i = 0; i < DIGEST_MEMO_SIZE && !hit; i++)
        if (memo_entry_is(&memo[i], st)) {
            memcpy(out, memo[i].sha, sizeof(memo[i].sha));
            memo[i].used = ++memo_clock;
            hit = true;
        }
    pthread_mutex_unlock(&memo_lock);
    return hit;
}

/* Remembers sha for st when the file had settled before `started`. */
static void memo_put(const struct stat *st, const struct timespec *started, const char sha[65])
{
    size_t victim = 0;

    if (st->st_mtim.tv_sec + DIGEST_MEMO_SETTLE_S > started->tv_sec ||
        st->st_ctim.tv_sec + DIGEST_MEMO_SETTLE_S > started->tv_sec)
        return;
    pthread_mutex_lock(&memo_lock);
    for (size_t i = 0; i < DIGEST_MEMO_SIZE; i++) {
        if (!memo[i].valid || (memo[i].dev == st->st_dev && memo[i].ino == st->st_ino)) {
            victim = i;
            break;
        }
        if (memo[i].used < memo[victim].used)
            victim = i;
    }
    memo[victim] = (struct memo_entry){true,        st->st_dev,  st->st_ino,   st->st_size,
                                       st->st_mtim, st->st_ctim, ++memo_clock, ""};
    memcpy(memo[victim].sha, sha, sizeof(memo[victim].sha));
    pthread_mutex_unlock(&memo_lock);
}

int digest_file_sha256(const struct stat *st, const void *data, size_t len, char out[65])
{
    struct timespec started;
    int rc;

    if (!st || !out || (!data && len > 0) || st->st_size < 0 || (uint64_t)st->st_size != len)
        return LORAD_E_INTERNAL;
    if (memo_get(st, out))
        return 0;
    clock_gettime(CLOCK_REALTIME, &started);
    if ((rc = digest_sha256_hex(data, len, out)) < 0)
        return rc;
    memo_put(st, &started, out);
    return 0;
}
