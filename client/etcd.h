/* lorad — client/etcd.h: a small client of etcd's v3 HTTP/JSON gateway
 * (etcd 3.4: POST /v3/kv/range, /v3/kv/put, /v3/kv/txn, /v3/lease/grant,
 * /v3/lease/keepalive, /v3/lease/revoke, streaming /v3/watch,
 * /v3/auth/authenticate), used by the fleet agent lorad-sync (SPEC.md 12).
 *
 * This file contains one libcurl connection to an etcd cluster given as a
 * list of endpoints, and the handful of calls the agent makes. Keys and
 * values are plain byte strings here; the base64 of the gateway and its
 * int64-as-string numbers stay inside etcd.c.
 *
 * Design and invariants:
 * - Endpoint failover: a call that gets no answer from the current
 *   endpoint tries each other endpoint once, in order, and stays on the
 *   first that answers. Every call is bounded by the configured timeout
 *   (a watch by its own timeout).
 * - An etcd that cannot be reached (no endpoint answered) is
 *   LORAD_E_NOT_READY; an answer etcd gives as an error (HTTP status not
 *   200, or an "error" member) is LORAD_E_INTERNAL with etcd's message,
 *   except authentication failures (LORAD_E_UNAUTHORIZED) and a lease etcd
 *   does not know (LORAD_E_NOT_FOUND). The human detail is in the caller's
 *   struct lorad_error.
 * - With a user, the client authenticates on first use and again once
 *   when etcd says the token is invalid (tokens expire); the password is
 *   kept in memory only for that and wiped on free.
 * - No proxy from the environment; only http:// and https://; TLS with an
 *   optional CA file and client certificate.
 * - A watch is a long poll: etcd_watch returns as soon as one event under
 *   the prefix at or after the start revision arrives, or when the
 *   timeout passes, or when the caller's `stop` flag becomes true.
 *
 * Ownership: struct etcd is created by etcd_new and freed by etcd_free;
 * struct etcd_kvs by etcd_kvs_free. Every string passed in is copied or
 * only borrowed for the call.
 * Threads: one thread at a time per struct etcd (libcurl's rule);
 * curl_global_init is the caller's (api_global_init).
 */
#ifndef LORAD_CLIENT_ETCD_H
#define LORAD_CLIENT_ETCD_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/errors.h"

/* Largest answer accepted from etcd (bytes). */
#define ETCD_BODY_MAX (16u << 20)
/* Largest number of endpoints. */
#define ETCD_MAX_ENDPOINTS 16

struct etcd_conf {
    const char *endpoints;       /* "http://h:p[,https://h:p...]" (required) */
    const char *user;            /* NULL: no authentication */
    const char *password;        /* with user */
    const char *cacert;          /* CA file for https, or NULL */
    const char *cert, *key;      /* client certificate and key, or NULL */
    long timeout_ms;             /* per call (0: 5000) */
    volatile sig_atomic_t *stop; /* a call returns early when *stop; NULL: never */
};

/* One key-value pair of a range. */
struct etcd_kv {
    char *key;   /* NUL-terminated (malloc'd) */
    char *value; /* NUL-terminated (malloc'd) */
    size_t value_len;
    int64_t mod_revision, create_revision, version;
};

struct etcd_kvs {
    struct etcd_kv *kv; /* [n] (malloc'd) */
    size_t n;
    int64_t revision; /* the store's revision the range was read at */
};

struct etcd;

/* A client for conf. NULL on error: LORAD_E_INVALID_REQUEST for a bad
 * endpoint list (empty, too many, not http(s)://host:port) or a user
 * without a password, LORAD_E_INTERNAL on out of memory; err says which.
 * Connects lazily. Free with etcd_free. */
struct etcd *etcd_new(const struct etcd_conf *conf, struct lorad_error *err);
/* Frees c (wiping the password and token); sets *c to NULL. NULL is fine. */
void etcd_free(struct etcd **c);
/* Replaces the stop flag (NULL: calls are never cut short), e.g. to send
 * a last request after the flag was raised. */
void etcd_set_stop(struct etcd *c, volatile sig_atomic_t *stop);
/* The endpoint in use ("http://127.0.0.1:2379"; owned by c). */
const char *etcd_where(const struct etcd *c);

/* Every key starting with `prefix`, in key order, into *out (zeroed first;
 * free with etcd_kvs_free). 0 or a negative lorad_err (see above). */
int etcd_range_prefix(struct etcd *c, const char *prefix, struct etcd_kvs *out,
                      struct lorad_error *err);
/* One key: *found false when absent (then *kv is zeroed). */
int etcd_get(struct etcd *c, const char *key, struct etcd_kv *kv, bool *found,
             struct lorad_error *err);
void etcd_kvs_free(struct etcd_kvs *kvs);
void etcd_kv_free(struct etcd_kv *kv);

/* Puts key=value, attached to `lease` (0: none). *revision (NULL: not
 * wanted) gets the revision of the write. */
int etcd_put(struct etcd *c, const char *key, const char *value, int64_t lease, int64_t *revision,
             struct lorad_error *err);
/* Compare-and-swap through a txn: puts key=value only when the key's
 * mod_revision is `expect_mod` (0: only when the key does not exist).
 * *swapped false when the comparison failed (nothing written; the key
 * changed since it was read). */
int etcd_cas(struct etcd *c, const char *key, const char *value, int64_t expect_mod, bool *swapped,
             struct lorad_error *err);

/* A lease of `ttl_s` seconds: *id, *granted_ttl (NULL: not wanted). */
int etcd_lease_grant(struct etcd *c, long ttl_s, int64_t *id, long *granted_ttl,
                     struct lorad_error *err);
/* One keep-alive of lease id; *ttl its new TTL. LORAD_E_NOT_FOUND when
 * etcd no longer knows the lease (it expired: grant a new one). */
int etcd_lease_keepalive(struct etcd *c, int64_t id, long *ttl, struct lorad_error *err);
/* Revokes lease id (its keys disappear at once). */
int etcd_lease_revoke(struct etcd *c, int64_t id, struct lorad_error *err);

/* Waits for a change under `prefix` at revision >= start_rev, at most
 * timeout_ms. *changed: an event arrived, or etcd cancelled the watch
 * (compacted: the caller re-reads anyway); false when the time passed (or
 * *stop became true). LORAD_E_NOT_READY when etcd went away. */
int etcd_watch(struct etcd *c, const char *prefix, int64_t start_rev, long timeout_ms,
               bool *changed, struct lorad_error *err);

/* ---- helpers (exposed for the unit test) ---- */

/* Standard base64 (with padding) of len bytes; malloc'd, NULL on OOM. */
char *etcd_b64_encode(const void *data, size_t len);
/* Decodes standard base64 (padding optional, no whitespace); malloc'd
 * and NUL-terminated, *len the byte count. NULL when malformed or OOM. */
char *etcd_b64_decode(const char *text, size_t *len);
/* The end of the key range of `prefix` (the prefix with its last byte
 * incremented, bytes 0xff dropped; "\0" for everything): malloc'd,
 * *len its byte count (it may hold no NUL-free text). */
char *etcd_prefix_end(const char *prefix, size_t *len);

#endif
