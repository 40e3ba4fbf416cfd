/* lorad — client/etcd.c: the etcd v3 HTTP/JSON gateway client of
 * lorad-sync (design and invariants in etcd.h).
 *
 * Every call is etcd_call(): a JSON body POSTed to one gateway path on the
 * current endpoint, failing over to the others when no answer arrives,
 * authenticating first when a user is configured, and returning the
 * answer parsed. The gateway speaks protobuf's JSON mapping: bytes are
 * base64, int64 numbers are strings ("revision": "12"), zero values are
 * left out.
 */
#include "etcd.h"

#include "api.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define ETCD_DEFAULT_TIMEOUT_MS 5000L

struct etcd {
    CURL *curl;
    char *ep[ETCD_MAX_ENDPOINTS]; /* base URLs without a trailing '/' */
    size_t n_ep, cur;             /* endpoints, the one in use */
    char *user, *password;        /* NULL: no authentication */
    char *auth;                   /* "Authorization: TOKEN" once authenticated */
    char *cacert, *cert, *key;
    long timeout_ms;
    volatile sig_atomic_t *stop;
    char curl_err[CURL_ERROR_SIZE];
};

/* An answer body as it arrives; for a watch, the parse state too. */
struct etcd_buf {
    char *data;
    size_t len, cap;
    bool too_large;
    bool watch;        /* parse objects as they complete */
    size_t parsed;     /* bytes of data already consumed as objects */
    bool event, ended; /* watch: an event (or cancel) arrived; stop reading */
    char err_msg[256]; /* watch: an "error" object's message */
};

/* ---- base64 and keys ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *etcd_b64_encode(const void *data, size_t len)
{
    const unsigned char *p = data;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        *o++ = b64_chars[(v >> 18) & 63];
        *o++ = b64_chars[(v >> 12) & 63];
        *o++ = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? b64_chars[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64_val(char c)
{
    const char *p = c ? strchr(b64_chars, c) : NULL;
    return p ? (int)(p - b64_chars) : -1;
}

char *etcd_b64_decode(const char *text, size_t *len)
{
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == '=')
        n--;
    if (n % 4 == 1 || strlen(text) - n > 2)
        return NULL;
    char *out = malloc(n / 4 * 3 + 3), *o = out;
    if (!out)
        return NULL;
    unsigned v = 0;
    size_t bits = 0;
    for (size_t i = 0; i < n; i++) {
        int d = b64_val(text[i]);
        if (d < 0) {
            free(out);
            return NULL;
        }
        v = (v << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (char)((v >> bits) & 0xff);
        }
    }
    *o = '\0';
    *len = (size_t)(o - out);
    return out;
}

char *etcd_prefix_end(const char *prefix, size_t *len)
{
    size_t n = strlen(prefix);
    char *end = malloc(n + 1);
    if (!end)
        return NULL;
    memcpy(end, prefix, n + 1);
    while (n > 0 && (unsigned char)end[n - 1] == 0xff)
        n--;
    if (n == 0) { /* the whole key space */
        end[0] = '\0';
        *len = 1;
        return end;
    }
    end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
    end[n] = '\0';
    *len = n;
    return end;
}

/* An int64 member given as a string (or a number); 0 when absent. */
static int64_t j_int64(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsString(v))
        return strtoll(v->valuestring, NULL, 10);
    if (cJSON_IsNumber(v))
        return (int64_t)v->valuedouble;
    return 0;
}

/* A base64 member decoded (malloc'd); "" when absent. NULL when broken. */
static char *j_bytes(const cJSON *o, const char *name, size_t *len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v) {
        *len = 0;
        return calloc(1, 1);
    }
    return cJSON_IsString(v) ? etcd_b64_decode(v->valuestring, len) : NULL;
}

static bool j_add_b64(cJSON *o, const char *name, const void *data, size_t len)
{
    char *b = etcd_b64_encode(data, len);
    bool ok = b && cJSON_AddStringToObject(o, name, b);
    free(b);
    return ok;
}

static bool j_add_int64(cJSON *o, const char *name, int64_t v)
{
    char s[32];
    snprintf(s, sizeof(s), "%lld", (long long)v);
    return cJSON_AddStringToObject(o, name, s) != NULL;
}

/* ---- the client ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int etcd_parse_endpoints(struct etcd *c, const char *list, struct lorad_error *err)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t n = strlen(t);
        while (n > 0 && t[n - 1] == '/')
            t[--n] = '\0';
        bool scheme = !strncmp(t, "http://", 7) || !strncmp(t, "https://", 8);
        const char *host = strstr(t, "://");
        if (!scheme || !host || !host[3] || strpbrk(host + 3, "/ \t\r\n?#")) {
            lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                            "etcd endpoint '%s' is not http(s)://HOST:PORT", t);
            free(copy);
            return err ? err->code : LORAD_E_INVALID_REQUEST;
        }
        if (c->n_ep == ETCD_MAX_ENDPOINTS) {
            free(copy);
            return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "more than %d etcd endpoints",
                                   ETCD_MAX_ENDPOINTS);
        }
        if (!(c->ep[c->n_ep++] = strdup(t))) {
            free(copy);
            return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        }
    }
    free(copy);
    if (c->n_ep == 0)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "no etcd endpoint given");
    return 0;
}

struct etcd *etcd_new(const struct etcd_conf *conf, struct lorad_error *err)
{
    struct etcd *c = calloc(1, sizeof(*c));
    if (!c) {
        lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        return NULL;
    }
    if (!conf || !conf->endpoints) {
        lorad_error_set(err, LORAD_E_INVALID_REQUEST, "no etcd endpoint given");
        goto fail;
    }
    if (etcd_parse_endpoints(c, conf->endpoints, err) < 0)
        goto fail;
    if (conf->user && !conf->password) {
        lorad_error_set(err, LORAD_E_INVALID_REQUEST, "an etcd user needs a password");
        goto fail;
    }
    c->user = dup_or_null(conf->user);
    c->password = dup_or_null(conf->password);
    c->cacert = dup_or_null(conf->cacert);
    c->cert = dup_or_null(conf->cert);
    c->key = dup_or_null(conf->key);
    c->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
    c->stop = conf->stop;
    if ((conf->user && (!c->user || !c->password)) || (conf->cacert && !c->cacert) ||
        (conf->cert && !c->cert) || (conf->key && !c->key) || !(c->curl = curl_easy_init())) {
        lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    return c;
fail:
    etcd_free(&c);
    return NULL;
}

static void wipe_free(char *s)
{
    if (s)
        memset(s, 0, strlen(s));
    free(s);
}

void etcd_free(struct etcd **cp)
{
    struct etcd *c = cp ? *cp : NULL;
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    for (size_t i = 0; i < c->n_ep; i++)
        free(c->ep[i]);
    free(c->user);
    wipe_free(c->password);
    wipe_free(c->auth);
    free(c->cacert);
    free(c->cert);
    free(c->key);
    free(c);
    *cp = NULL;
}

void etcd_set_stop(struct etcd *c, volatile sig_atomic_t *stop)
{
    c->stop = stop;
}

const char *etcd_where(const struct etcd *c)
{
    return c->ep[c->cur];
}

/* ---- one HTTP exchange ---- */

/* Consumes the complete JSON objects at the front of a watch stream. */
static void watch_consume(struct etcd_buf *b)
{
    while (!b->event && b->parsed < b->len) {
        const char *end = NULL;
        const char *start = b->data + b->parsed;
        while (*start == '\n' || *start == '\r' || *start == ' ')
            start++;
        if (!*start) {
            b->parsed = b->len;
            return;
        }
        cJSON *o = cJSON_ParseWithOpts(start, &end, 0);
        if (!o)
            return; /* incomplete: wait for more */
        b->parsed = (size_t)(end - b->data);
        const cJSON *res = cJSON_GetObjectItemCaseSensitive(o, "result");
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(res, "events");
        const cJSON *cancel = cJSON_GetObjectItemCaseSensitive(res, "canceled");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
        if (cJSON_GetArraySize(ev) > 0 || cJSON_IsTrue(cancel))
            b->event = true;
        if (e) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
            snprintf(b->err_msg, sizeof(b->err_msg), "%s",
                     cJSON_IsString(m) ? m->valuestring : "watch error");
            b->event = true;
        }
        cJSON_Delete(o);
    }
}

static size_t etcd_write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct etcd_buf *b = ud;
    size_t n = size * nmemb;
    if (n > ETCD_BODY_MAX - b->len) {
        b->too_large = true;
        return 0;
    }
    if (api_buf_append(&b->data, &b->len, &b->cap, data, n) < 0)
        return 0;
    if (b->watch) {
        watch_consume(b);
        if (b->event)
            return 0; /* done: abort the stream */
    }
    return n;
}

static int etcd_progress_cb(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    const struct etcd *c = ud;
    return c->stop && *c->stop ? 1 : 0;
}

/* What one POST to one endpoint gave. */
enum xfer { XFER_ANSWER, XFER_NO_ANSWER, XFER_TIMEOUT, XFER_STOPPED, XFER_FAILED };

static enum xfer etcd_post(struct etcd *c, const char *url, const char *body, long timeout_ms,
                           struct etcd_buf *buf, long *status)
{
    CURL *h = c->curl;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *t = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
    if (t && c->auth)
        t = curl_slist_append(t, c->auth);
    if (!t) {
        curl_slist_free_all(hdrs);
        return XFER_FAILED;
    }
    curl_easy_reset(h);
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
    bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    bad |= curl_easy_setopt(h, CURLOPT_PROXY, "");
    bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                            c->timeout_ms < timeout_ms ? c->timeout_ms : timeout_ms);
    bad |= curl_easy_setopt(h, CURLOPT_URL, url);
    bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, etcd_write_cb);
    bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, buf);
    bad |= curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    bad |= curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, etcd_progress_cb);
    bad |= curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    if (c->cacert)
        bad |= curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
    if (c->cert)
        bad |= curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert);
    if (c->key)
        bad |= curl_easy_setopt(h, CURLOPT_SSLKEY, c->key);
    if (bad) {
        curl_slist_free_all(hdrs);
        return XFER_FAILED;
    }
    c->curl_err[0] = '\0';
    CURLcode cc = curl_easy_perform(h);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (cc == CURLE_WRITE_ERROR && buf->watch && buf->event)
        return XFER_ANSWER;
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return XFER_STOPPED;
    if (cc == CURLE_OPERATION_TIMEDOUT && buf->watch && *status == 200)
        return XFER_TIMEOUT;
    if (cc != CURLE_OK)
        return buf->too_large ? XFER_FAILED : XFER_NO_ANSWER;
    return XFER_ANSWER;
}

static int etcd_authenticate(struct etcd *c, struct lorad_error *err);

/* POSTs `body` to `path`; *out the parsed answer (caller cJSON_Delete's).
 * For a watch (watch_timeout_ms > 0) *out is NULL and *changed is set. */
static int etcd_exchange(struct etcd *c, const char *path, const cJSON *body, long watch_timeout_ms,
                         cJSON **out, bool *changed, struct lorad_error *err, bool may_auth)
{
    char *text = cJSON_PrintUnformatted(body), url[512];
    int rc = 0;
    struct etcd_buf buf = {0};
    if (out)
        *out = NULL;
    if (!text)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    if (may_auth && c->user && !c->auth && (rc = etcd_authenticate(c, err)) < 0)
        goto done;
    for (size_t tries = 0; tries < c->n_ep; tries++) {
        long status = 0;
        free(buf.data);
        memset(&buf, 0, sizeof(buf));
        buf.watch = watch_timeout_ms > 0;
        snprintf(url, sizeof(url), "%s%s", c->ep[c->cur], path);
        enum xfer x =
            etcd_post(c, url, text, buf.watch ? watch_timeout_ms : c->timeout_ms, &buf, &status);
        if (x == XFER_STOPPED || x == XFER_TIMEOUT) {
            if (changed)
                *changed = false;
            goto done;
        }
        if (x == XFER_FAILED) {
            rc = lorad_error_set(err, LORAD_E_INTERNAL, "%s: %s", url,
                                 buf.too_large ? "answer too large" : "libcurl refused an option");
            goto done;
        }
        if (x == XFER_NO_ANSWER) {
            rc = lorad_error_set(err, LORAD_E_NOT_READY, "etcd %s: %s", c->ep[c->cur],
                                 c->curl_err[0] ? c->curl_err : "no answer");
            c->cur = (c->cur + 1) % c->n_ep;
            continue;
        }
        /* an answer */
        rc = 0;
        if (buf.watch) {
            if (buf.err_msg[0])
                rc = lorad_error_set(err, LORAD_E_NOT_READY, "etcd %s: watch: %s", c->ep[c->cur],
                                     buf.err_msg);
            else if (!buf.event)
                rc = lorad_error_set(err, LORAD_E_NOT_READY, "etcd %s: the watch stream ended",
                                     c->ep[c->cur]);
            else if (changed)
                *changed = true;
            goto done;
        }
        cJSON *j = buf.data ? cJSON_Parse(buf.data) : NULL;
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
        if (!msg)
            msg = cJSON_GetObjectItemCaseSensitive(j, "error");
        const char *m = cJSON_IsString(msg) ? msg->valuestring : (buf.data ? buf.data : "");
        if (status != 200 || !cJSON_IsObject(j) || cJSON_GetObjectItemCaseSensitive(j, "error")) {
            bool auth = strstr(m, "invalid auth token") || strstr(m, "user name is empty") ||
                        strstr(m, "authentication failed") || strstr(m, "permission denied") ||
                        status == 401;
            if (auth && may_auth && c->user && strstr(m, "invalid auth token")) {
                /* the token expired: once more with a new one */
                wipe_free(c->auth);
                c->auth = NULL;
                cJSON_Delete(j);
                free(text);
                free(buf.data);
                rc = etcd_authenticate(c, err);
                return rc < 0 ? rc
                              : etcd_exchange(c, path, body, watch_timeout_ms, out, changed, err,
                                              false);
            }
            rc = lorad_error_set(err,
                                 auth                                     ? LORAD_E_UNAUTHORIZED
                                 : strstr(m, "requested lease not found") ? LORAD_E_NOT_FOUND
                                                                          : LORAD_E_INTERNAL,
                                 "etcd %s%s: HTTP %ld: %.300s", c->ep[c->cur], path, status, m);
            cJSON_Delete(j);
            goto done;
        }
        if (out)
            *out = j;
        else
            cJSON_Delete(j);
        goto done;
    }
done:
    free(text);
    free(buf.data);
    return rc;
}

static int etcd_authenticate(struct etcd *c, struct lorad_error *err)
{
    cJSON *b = cJSON_CreateObject(), *ans = NULL;
    int rc;
    if (!b || !cJSON_AddStringToObject(b, "name", c->user) ||
        !cJSON_AddStringToObject(b, "password", c->password)) {
        cJSON_Delete(b);
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    }
    rc = etcd_exchange(c, "/v3/auth/authenticate", b, 0, &ans, NULL, err, false);
    cJSON_Delete(b);
    if (rc < 0)
        return rc;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(ans, "token");
    if (!cJSON_IsString(tok) || !*tok->valuestring) {
        cJSON_Delete(ans);
        return lorad_error_set(err, LORAD_E_UNAUTHORIZED, "etcd %s: no token in the answer",
                               etcd_where(c));
    }
    if (asprintf(&c->auth, "Authorization: %s", tok->valuestring) < 0)
        c->auth = NULL;
    cJSON_Delete(ans);
    return c->auth ? 0 : lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
}

static int etcd_call(struct etcd *c, const char *path, cJSON *body, cJSON **out,
                     struct lorad_error *err)
{
    int rc;
    if (!body)
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    else
        rc = etcd_exchange(c, path, body, 0, out, NULL, err, true);
    cJSON_Delete(body);
    return rc;
}

/* ---- kv ---- */

void etcd_kv_free(struct etcd_kv *kv)
{
    if (!kv)
        return;
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof(*kv));
}

void etcd_kvs_free(struct etcd_kvs *kvs)
{
    if (!kvs)
        return;
    for (size_t i = 0; i < kvs->n; i++)
        etcd_kv_free(&kvs->kv[i]);
    free(kvs->kv);
    memset(kvs, 0, sizeof(*kvs));
}

static int kv_from_json(const cJSON *o, struct etcd_kv *kv)
{
    size_t klen = 0;
    memset(kv, 0, sizeof(*kv));
    kv->key = j_bytes(o, "key", &klen);
    kv->value = j_bytes(o, "value", &kv->value_len);
    kv->mod_revision = j_int64(o, "mod_revision");
    kv->create_revision = j_int64(o, "create_revision");
    kv->version = j_int64(o, "version");
    if (!kv->key || !kv->value || strlen(kv->key) != klen) {
        etcd_kv_free(kv);
        return -1;
    }
    return 0;
}

static int etcd_range(struct etcd *c, const char *key, const char *end, size_t end_len,
                      struct etcd_kvs *out, struct lorad_error *err)
{
    cJSON *b = cJSON_CreateObject(), *ans = NULL;
    memset(out, 0, sizeof(*out));
    if (b && (!j_add_b64(b, "key", key, strlen(key)) ||
              (end && !j_add_b64(b, "range_end", end, end_len)))) {
        cJSON_Delete(b);
        b = NULL;
    }
    int rc = etcd_call(c, "/v3/kv/range", b, &ans, err);
    if (rc < 0)
        return rc;
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(ans, "kvs");
    out->revision = j_int64(cJSON_GetObjectItemCaseSensitive(ans, "header"), "revision");
    int n = cJSON_GetArraySize(kvs);
    if (n > 0 && !(out->kv = calloc((size_t)n, sizeof(*out->kv)))) {
        cJSON_Delete(ans);
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, kvs)
    {
        if (kv_from_json(it, &out->kv[out->n]) < 0) {
            cJSON_Delete(ans);
            etcd_kvs_free(out);
            return lorad_error_set(err, LORAD_E_INTERNAL, "etcd %s: a key or value is not base64",
                                   etcd_where(c));
        }
        out->n++;
    }
    cJSON_Delete(ans);
    return 0;
}

int etcd_range_prefix(struct etcd *c, const char *prefix, struct etcd_kvs *out,
                      struct lorad_error *err)
{
    size_t elen;
    char *end = etcd_prefix_end(prefix, &elen);
    if (!end)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    int rc = etcd_range(c, prefix, end, elen, out, err);
    free(end);
    return rc;
}

int etcd_get(struct etcd *c, const char *key, struct etcd_kv *kv, bool *found,
             struct lorad_error *err)
{
    struct etcd_kvs kvs;
    memset(kv, 0, sizeof(*kv));
    *found = false;
    int rc = etcd_range(c, key, NULL, 0, &kvs, err);
    if (rc < 0)
        return rc;
    if (kvs.n > 0) {
        *kv = kvs.kv[0];
        memset(&kvs.kv[0], 0, sizeof(kvs.kv[0]));
        *found = true;
    }
    etcd_kvs_free(&kvs);
    return 0;
}

int etcd_put(struct etcd *c, const char *key, const char *value, int64_t lease, int64_t *revision,
             struct lorad_error *err)
{
    cJSON *b = cJSON_CreateObject(), *ans = NULL;
    if (b &&
        (!j_add_b64(b, "key", key, strlen(key)) || !j_add_b64(b, "value", value, strlen(value)) ||
         (lease && !j_add_int64(b, "lease", lease)))) {
        cJSON_Delete(b);
        b = NULL;
    }
    int rc = etcd_call(c, "/v3/kv/put", b, &ans, err);
    if (rc == 0 && revision)
        *revision = j_int64(cJSON_GetObjectItemCaseSensitive(ans, "header"), "revision");
    cJSON_Delete(ans);
    return rc;
}

/* A new object appended to array `a` (NULL when a is NULL or on OOM). */
static cJSON *add_new_object(cJSON *a)
{
    cJSON *o = a ? cJSON_CreateObject() : NULL;
    if (o && !cJSON_AddItemToArray(a, o)) {
        cJSON_Delete(o);
        o = NULL;
    }
    return o;
}

int etcd_cas(struct etcd *c, const char *key, const char *value, int64_t expect_mod, bool *swapped,
             struct lorad_error *err)
{
    /* {"compare": [{"key", "target": "MOD", "result": "EQUAL", "mod_revision"}],
     *  "success": [{"request_put": {"key", "value"}}]} */
    cJSON *b = cJSON_CreateObject(), *ans = NULL;
    cJSON *one = add_new_object(cJSON_AddArrayToObject(b, "compare"));
    cJSON *op = add_new_object(cJSON_AddArrayToObject(b, "success"));
    cJSON *put = cJSON_AddObjectToObject(op, "request_put");
    bool ok = one && put;
    ok = ok && j_add_b64(one, "key", key, strlen(key)) &&
         cJSON_AddStringToObject(one, "target", "MOD") &&
         cJSON_AddStringToObject(one, "result", "EQUAL") &&
         j_add_int64(one, "mod_revision", expect_mod) && j_add_b64(put, "key", key, strlen(key)) &&
         j_add_b64(put, "value", value, strlen(value));
    if (!ok) {
        cJSON_Delete(b);
        b = NULL;
    }
    int rc = etcd_call(c, "/v3/kv/txn", b, &ans, err);
    if (rc == 0)
        *swapped = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ans, "succeeded"));
    cJSON_Delete(ans);
    return rc;
}

/* ---- leases ---- */

int etcd_lease_grant(struct etcd *c, long ttl_s, int64_t *id, long *granted_ttl,
                     struct lorad_error *err)
{
    cJSON *b = cJSON_CreateObject(), *ans = NULL;
    if (b && !j_add_int64(b, "TTL", ttl_s)) {
        cJSON_Delete(b);
        b = NULL;
    }
    int rc = etcd_call(c, "/v3/lease/grant", b, &ans, err);
    if (rc < 0)
        return rc;
    *id = j_int64(ans, "ID");
    if (granted_ttl)
        *granted_ttl = (long)j_int64(ans, "TTL");
    cJSON_Delete(ans);
    if (*id == 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "etcd %s: lease grant without an ID",
                               etcd_where(c));
    return 0;
}

int etcd_lease_keepalive(struct etcd *c, int64_t id, long *ttl, struct lorad_error *err)
{
    /* A streaming call on the gateway: one request, one answer object
     * {"result": {"ID", "TTL"}}; a lease etcd does not know has no TTL. */
    cJSON *b = cJSON_CreateObject(), *ans = NULL;
    if (b && !j_add_int64(b, "ID", id)) {
        cJSON_Delete(b);
        b = NULL;
    }
    int rc = etcd_call(c, "/v3/lease/keepalive", b, &ans, err);
    if (rc < 0)
        return rc;
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(ans, "result");
    *ttl = (long)j_int64(res ? res : ans, "TTL");
    cJSON_Delete(ans);
    if (*ttl <= 0)
        return lorad_error_set(err, LORAD_E_NOT_FOUND, "etcd %s: lease %llx expired", etcd_where(c),
                               (unsigned long long)id);
    return 0;
}

int etcd_lease_revoke(struct etcd *c, int64_t id, struct lorad_error *err)
{
    cJSON *b = cJSON_CreateObject(), *ans = NULL;
    if (b && !j_add_int64(b, "ID", id)) {
        cJSON_Delete(b);
        b = NULL;
    }
    int rc = etcd_call(c, "/v3/lease/revoke", b, &ans, err);
    cJSON_Delete(ans);
    return rc;
}

/* ---- watch ---- */

int etcd_watch(struct etcd *c, const char *prefix, int64_t start_rev, long timeout_ms,
               bool *changed, struct lorad_error *err)
{
    size_t elen;
    char *end = etcd_prefix_end(prefix, &elen);
    cJSON *b = cJSON_CreateObject();
    cJSON *cr = b ? cJSON_AddObjectToObject(b, "create_request") : NULL;
    bool ok = end && cr && j_add_b64(cr, "key", prefix, strlen(prefix)) &&
              j_add_b64(cr, "range_end", end, elen) && j_add_int64(cr, "start_revision", start_rev);
    free(end);
    *changed = false;
    int rc;
    if (!ok)
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    else
        rc = etcd_exchange(c, "/v3/watch", b, timeout_ms > 0 ? timeout_ms : 1, NULL, changed, err,
                           true);
    cJSON_Delete(b);
    return rc;
}
