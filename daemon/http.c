/* lorad — daemon/http.c: libmicrohttpd on the libuv loop: listeners,
 * request bodies, routing, authentication, answers and the drain.
 *
 * Design: one MHD daemon per listener (data, and control when
 * control_listen is set), each in external-epoll mode (MHD_USE_EPOLL, no
 * internal thread). MHD's epoll fd is watched by a uv_poll_t; MHD's timeout
 * by a uv_timer_t re-armed after every MHD_run. We create the listening
 * sockets ourselves (or take systemd's) and hand them over with
 * MHD_OPTION_LISTEN_SOCKET.
 *
 * A request is a struct http_request plus private state, allocated at its
 * first header and freed in MHD's completion callback. On the final access
 * callback the request is routed through the table http_start() was given
 * (main.c owns it, so this file calls no handler by name); a handler answers with http_respond*()
 * either at once or later from the loop thread. In the latter case the
 * connection is suspended and http_respond resumes it; MHD then calls the
 * access handler again and only there is the stored response queued
 * (responses are queued only from inside the access handler).
 *
 * Drain: http_stop_accepting() closes the listening sockets; requests
 * that arrive later on open connections are answered 503 draining. From
 * then on every request received in full is tallied when its connection
 * ends it (on_completed): answered, refused (its answer was a 503
 * draining) or closed (no complete answer written). http_close() logs the
 * tally, so the shutdown log says what clients actually got.
 *
 * The listeners' limits (address, connections, timeout, body size) are
 * the config's, taken as they are: config.c resolved their defaults.
 *
 * Threads: everything here runs on the loop thread except
 * http_status_of(), which is pure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>
#include <nettle/memops.h>
#include <nettle/sha2.h>

#include "http.h"

#include <uv.h>

#include "clock.h"
#include "log.h"
#include "lorad.h"
#include "systemd.h"

/* MHD's pool per connection (request line, headers, I/O buffers) is
 * larger than the bounds lorad enforces itself, so that a request past
 * lorad's bounds still fits and gets SPEC's JSON 414 / 431; only one past
 * the pool gets MHD's own HTML answer (README, "Errors"). */
#define HTTP_MEMORY_LIMIT (64 * 1024)
#define HTTP_URI_LIMIT (8 * 1024)     /* path + query */
#define HTTP_HEADER_LIMIT (16 * 1024) /* every header's name and value */

struct http_listener {
    struct http *h;
    enum http_plane plane;
    int fd;          /* listening socket (-1 once handed back) */
    char *unix_path; /* unlinked at close when we created it */
    struct MHD_Daemon *d;
    uv_poll_t poll;
    uv_timer_t timer;
    bool handles_init;
    bool in_run; /* inside MHD_run: no recursion */
};

struct http {
    struct lorad_server *srv;
    const struct http_route *routes; /* main.c's table */
    size_t nroutes;
    struct http_listener l[2];
    int nl;
    size_t inflight;
    bool draining;
    struct http_drain_tally tally; /* since http_stop_accepting */
    int closing_handles;           /* handles whose close callback is pending */
    bool close_requested;
};

struct http_internal {
    struct MHD_Connection *conn;
    struct http_listener *l;
    size_t body_cap;
    bool too_large;
    bool routed;
    bool answered;
    bool suspended;
    bool queued;          /* the response is queued with MHD */
    bool counted;         /* counted in h->inflight (received in full, not
                           * answered): a client that stalls mid-body does
                           * not hold up the drain */
    bool reject_draining; /* arrived after http_stop_accepting */
    bool refusal;         /* the answer is 503 draining */
    struct MHD_Response *resp;
    int status;
};

struct http_req_alloc {
    struct http_request pub;
    struct http_internal in;
};

/* ---- status table (SPEC 6) ---- */

int http_status_of(int code)
{
    switch (code) {
    case LORAD_OK:
        return 200;
    case LORAD_E_INVALID_REQUEST:
        return 400;
    case LORAD_E_UNAUTHORIZED:
        return 401;
    case LORAD_E_FORBIDDEN_NAME:
        return 403;
    case LORAD_E_NOT_FOUND:
    case LORAD_E_ADAPTER_NOT_FOUND:
    case LORAD_E_VERSION_NOT_FOUND:
    case LORAD_E_SLOT_NOT_FOUND:
        return 404;
    case LORAD_E_METHOD_NOT_ALLOWED:
        return 405;
    case LORAD_E_INCOMPATIBLE_CONFIG:
    case LORAD_E_UNKNOWN_MODULE:
    case LORAD_E_RANK_TOO_LARGE:
    case LORAD_E_SHAPE_MISMATCH:
    case LORAD_E_CHECKSUM_MISMATCH:
    case LORAD_E_SWAP_IN_PROGRESS:
    case LORAD_E_NO_HISTORY:
    case LORAD_E_NO_CANARY:
    case LORAD_E_CANARY_ACTIVE:
    case LORAD_E_TOO_MANY_SLOTS:
    case LORAD_E_MEMORY_LIMIT:
    case LORAD_E_DEFAULT_SLOT:
        return 409;
    case LORAD_E_BODY_TOO_LARGE:
        return 413;
    case LORAD_E_INVALID_ADAPTER:
    case LORAD_E_UNSUPPORTED_PEFT_TYPE:
    case LORAD_E_UNSUPPORTED_DTYPE:
    case LORAD_E_NON_FINITE_WEIGHTS:
    case LORAD_E_RANK_MISMATCH:
    case LORAD_E_UNKNOWN_TENSOR:
        return 422;
    case LORAD_E_NOT_READY:
    case LORAD_E_DRAINING:
    case LORAD_E_OVERLOADED:
        return 503;
    case LORAD_E_NOT_DURABLE:
        return 507;
    case LORAD_E_URI_TOO_LONG:
        return 414;
    case LORAD_E_HEADERS_TOO_LARGE:
        return 431;
    default:
        return 500;
    }
}

/* {"error": {"code": name, "message": msg}} as a malloc'd string, or NULL
 * on out-of-memory. */
static char *error_body(int code, const char *msg, size_t *len)
{
    cJSON *o = cJSON_CreateObject(), *e;
    char *s = NULL;
    if (!o)
        return NULL;
    e = cJSON_AddObjectToObject(o, "error");
    if (e && cJSON_AddStringToObject(e, "code", lorad_err_name(code)) &&
        cJSON_AddStringToObject(e, "message", msg ? msg : ""))
        s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s && len)
        *len = strlen(s);
    return s;
}

/* ---- answers ---- */

const char *http_header(struct http_request *r, const char *name)
{
    if (!r || !r->in || !r->in->conn)
        return NULL;
    return MHD_lookup_connection_value(r->in->conn, MHD_HEADER_KIND, name);
}

static void http_kick(struct http_listener *l);

void http_respond(struct http_request *r, int status, const char *content_type, char *body,
                  size_t len, const char *const *headers)
{
    struct http_internal *in = r->in;
    struct http *h = r->srv->http;
    struct MHD_Response *resp;
    size_t i;

    if (in->answered) {
        LOG_E("event=http_double_answer url=%s status=%d", r->url, status);
        free(body);
        return;
    }
    if (!body)
        len = 0;
    resp = MHD_create_response_from_buffer(len, body ? body : (void *)"",
                                           body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        LOG_E("event=http_response_failed url=%s reason=out_of_memory", r->url);
    } else {
        if (content_type)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        for (i = 0; headers && headers[i] && headers[i + 1]; i += 2)
            MHD_add_response_header(resp, headers[i], headers[i + 1]);
        if (status == 401)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        if (h && h->draining)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    in->resp = resp;
    in->status = status;
    in->answered = true;
    /* Stays counted in h->inflight until MHD reports the answer sent
     * (on_completed): the drain must not close a connection whose answer
     * is queued but not yet written. */
    if (in->suspended) {
        in->suspended = false;
        MHD_resume_connection(in->conn);
        http_kick(in->l);
    }
}

static void respond_error_hdrs(struct http_request *r, int code, const char *msg,
                               const char *const *hdrs);

void http_respond_json(struct http_request *r, int status, cJSON *obj, const char *const *headers)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) {
        http_respond_error(r, LORAD_E_INTERNAL, "out of memory formatting the answer");
        return;
    }
    http_respond(r, status, "application/json", s, strlen(s), headers);
}

void http_respond_error(struct http_request *r, int code, const char *fmt, ...)
{
    char msg[LORAD_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond_error_hdrs(r, code, msg, NULL);
}

static void respond_error_hdrs(struct http_request *r, int code, const char *msg,
                               const char *const *hdrs)
{
    size_t len = 0;
    char *body = error_body(code, msg, &len);
    if (code == LORAD_E_DRAINING && !r->in->answered)
        r->in->refusal = true;
    if (!body) {
        static const char oom[] =
            "{\"error\": {\"code\": \"internal\", \"message\": \"out of memory\"}}";
        body = strdup(oom);
        len = body ? strlen(body) : 0;
    }
    http_respond(r, http_status_of(code), "application/json", body, len, hdrs);
}

/* ---- routing ---- */

/* Constant-time comparison of the bearer token (hashes first, so neither
 * the length nor the content of the token leaks through timing). */
static bool token_ok(const char *want, const char *got, size_t got_len)
{
    struct sha256_ctx c;
    uint8_t a[SHA256_DIGEST_SIZE], b[SHA256_DIGEST_SIZE];
    sha256_init(&c);
    sha256_update(&c, strlen(want), (const uint8_t *)want);
    sha256_digest(&c, sizeof(a), a);
    sha256_init(&c);
    sha256_update(&c, got_len, (const uint8_t *)got);
    sha256_digest(&c, sizeof(b), b);
    return memeql_sec(a, b, sizeof(a)) != 0;
}

static bool authorized(struct http_request *r)
{
    const char *want = r->srv->auth_token;
    const char *hv;
    if (!want)
        return true;
    hv = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!hv || strncasecmp(hv, "Bearer ", 7) != 0)
        return false;
    hv += 7;
    while (*hv == ' ')
        hv++;
    return token_ok(want, hv, strlen(hv));
}

static const struct http_route *find_route(const struct http *h, const char *url)
{
    size_t i;
    for (i = 0; i < h->nroutes; i++)
        if (strcmp(h->routes[i].path, url) == 0)
            return &h->routes[i];
    return NULL;
}

static void route_request(struct http_request *r)
{
    const struct http_route *rt = find_route(r->in->l->h, r->url);
    bool get_ok;

    if (!rt || !(rt->planes & r->plane)) {
        http_respond_error(r, LORAD_E_NOT_FOUND, "no such path: %s", r->url);
        return;
    }
    get_ok = strcmp(rt->method, "GET") == 0 && strcmp(r->method, "HEAD") == 0;
    if (strcmp(rt->method, r->method) != 0 && !get_ok) {
        static const char *const allow_post[] = {"Allow", "POST", NULL};
        static const char *const allow_get[] = {"Allow", "GET, HEAD", NULL};
        char msg[256];
        snprintf(msg, sizeof(msg), "%s accepts %s, not %s", rt->path,
                 get_ok || strcmp(rt->method, "GET") == 0 ? "GET or HEAD" : "POST", r->method);
        respond_error_hdrs(r, LORAD_E_METHOD_NOT_ALLOWED, msg,
                           strcmp(rt->method, "GET") == 0 ? allow_get : allow_post);
        return;
    }
    if (r->in->reject_draining) {
        http_respond_error(r, LORAD_E_DRAINING, "lorad is shutting down");
        return;
    }
    if (r->in->too_large) {
        http_respond_error(r, LORAD_E_BODY_TOO_LARGE, "request body exceeds max_body_bytes (%zu)",
                           r->srv->cfg.max_body_bytes);
        return;
    }
    if (rt->auth && !authorized(r)) {
        http_respond_error(r, LORAD_E_UNAUTHORIZED,
                           "this control request needs Authorization: Bearer <token>");
        return;
    }
    rt->fn(r);
}

/* ---- MHD callbacks ---- */

static struct http_request *request_new(struct http_listener *l, struct MHD_Connection *conn,
                                        const char *url, const char *method)
{
    struct http_req_alloc *a = calloc(1, sizeof(*a));
    struct http_request *r;
    if (!a)
        return NULL;
    r = &a->pub;
    r->srv = l->h->srv;
    r->plane = l->plane;
    r->method = method;
    r->url = url;
    r->t_start_ns = clock_now_ns();
    r->in = &a->in;
    r->in->conn = conn;
    r->in->l = l;
    r->in->reject_draining = l->h->draining;
    return r;
}

/* An answer given before the body is read: the body is discarded
 * (too_large), and the answer is queued now so MHD closes the connection
 * without reading it; if MHD refuses, it is queued at the end. */
static void answer_early(struct http_request *r)
{
    r->in->too_large = true;
    if (r->in->resp &&
        MHD_queue_response(r->in->conn, (unsigned)r->in->status, r->in->resp) == MHD_YES) {
        MHD_destroy_response(r->in->resp);
        r->in->resp = NULL;
        r->in->queued = true;
    }
}

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind, const char *key,
                                            const char *value)
{
    (void)kind;
    (void)value;
    if (key && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        (*(int *)cls)++;
    return MHD_YES;
}

/* Two Content-Length headers, or one beside Transfer-Encoding, frame the
 * body ambiguously: a proxy in front may read it differently (request
 * smuggling), so such a request is refused rather than guessed at. */
static bool framing_ambiguous(struct http_request *r)
{
    int n = 0;
    MHD_get_connection_values(r->in->conn, MHD_HEADER_KIND, count_content_length, &n);
    return n > 1 || (n == 1 && http_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING));
}

static enum MHD_Result add_value_len(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    *(size_t *)cls += (key ? strlen(key) : 0) + (value ? strlen(value) : 0) + 4; /* ": " CRLF */
    return MHD_YES;
}

/* The request line and headers against lorad's bounds (414 / 431). */
static bool request_too_big(struct http_request *r)
{
    size_t ulen = strlen(r->url), hlen = 0;
    MHD_get_connection_values(r->in->conn, MHD_GET_ARGUMENT_KIND, add_value_len, &ulen);
    if (ulen > HTTP_URI_LIMIT) {
        http_respond_error(r, LORAD_E_URI_TOO_LONG,
                           "the request URI (about %zu bytes) is longer than %d bytes", ulen,
                           HTTP_URI_LIMIT);
        return true;
    }
    MHD_get_connection_values(r->in->conn, MHD_HEADER_KIND, add_value_len, &hlen);
    if (hlen > HTTP_HEADER_LIMIT) {
        http_respond_error(r, LORAD_E_HEADERS_TOO_LARGE,
                           "the request headers (%zu bytes) are larger than %d bytes", hlen,
                           HTTP_HEADER_LIMIT);
        return true;
    }
    return false;
}

/* First call: size, framing and Content-Length checks (414, 431, 400 and
 * 413 early) and body preallocation. */
static enum MHD_Result first_call(struct http_request *r)
{
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    size_t limit = r->srv->cfg.max_body_bytes;
    if (request_too_big(r)) {
        answer_early(r);
        return MHD_YES;
    }
    if (framing_ambiguous(r)) {
        http_respond_error(r, LORAD_E_INVALID_REQUEST,
                           "ambiguous body framing: several Content-Length headers, or "
                           "Content-Length with Transfer-Encoding");
        answer_early(r);
        return MHD_YES;
    }
    if (cl) {
        char *end;
        unsigned long long v;
        errno = 0;
        v = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && *end == '\0' && v > limit) {
            http_respond_error(r, LORAD_E_BODY_TOO_LARGE,
                               "request body of %llu bytes exceeds max_body_bytes (%zu)", v, limit);
            answer_early(r);
        } else if (errno == 0 && end != cl && v > 0) {
            r->body = malloc((size_t)v + 1);
            if (r->body)
                r->in->body_cap = (size_t)v + 1;
        }
    }
    return MHD_YES;
}

static void append_body(struct http_request *r, const char *data, size_t n)
{
    struct http_internal *in = r->in;
    size_t limit = r->srv->cfg.max_body_bytes;
    if (in->too_large)
        return;
    if (r->body_len + n > limit) {
        in->too_large = true;
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
        in->body_cap = 0;
        return;
    }
    if (r->body_len + n + 1 > in->body_cap) {
        size_t ncap = in->body_cap ? in->body_cap * 2 : 4096;
        char *nb;
        while (ncap < r->body_len + n + 1)
            ncap *= 2;
        if (ncap > limit + 1)
            ncap = limit + 1;
        nb = realloc(r->body, ncap);
        if (!nb) {
            in->too_large = true; /* answered as 413: we cannot hold it */
            return;
        }
        r->body = nb;
        in->body_cap = ncap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
}

static enum MHD_Result queue_stored(struct http_request *r)
{
    struct http_internal *in = r->in;
    enum MHD_Result ret;
    if (in->queued)
        return MHD_YES;
    if (!in->resp)
        return MHD_NO; /* out of memory earlier: close the connection */
    ret = MHD_queue_response(in->conn, (unsigned)in->status, in->resp);
    MHD_destroy_response(in->resp);
    in->resp = NULL;
    in->queued = ret == MHD_YES;
    return ret;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct http_listener *l = cls;
    struct http_request *r = *con_cls;
    (void)version;

    if (!r) {
        r = request_new(l, conn, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        return first_call(r);
    }
    if (*upload_data_size) {
        append_body(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->in->answered)
        return queue_stored(r);
    if (!r->in->routed) {
        r->in->routed = true;
        r->in->counted = true; /* received in full: in flight until answered */
        l->h->inflight++;
        if (!r->body) {
            r->body = malloc(1);
            if (!r->body)
                return MHD_NO;
        }
        r->body[r->body_len] = '\0';
        route_request(r);
        if (r->in->answered)
            return queue_stored(r);
    }
    if (!r->in->suspended) {
        r->in->suspended = true;
        MHD_suspend_connection(conn);
    }
    return MHD_YES;
}

/* A request received in full ended while draining: what did it get? */
static void tally_ended(struct http_drain_tally *t, const struct http_internal *in,
                        enum MHD_RequestTerminationCode toe)
{
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK || !in->answered)
        t->closed++;
    else if (in->refusal)
        t->refused++;
    else
        t->answered++;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_listener *l = cls;
    struct http_request *r = *con_cls;
    (void)conn;
    if (!r)
        return;
    if (r->in->counted) {
        l->h->inflight--;
        r->in->counted = false;
        if (l->h->draining)
            tally_ended(&l->h->tally, r->in, toe);
    }
    if (r->in->resp)
        MHD_destroy_response(r->in->resp);
    free(r->body);
    free(r); /* r is the first member of struct http_req_alloc */
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    size_t n;
    (void)cls;
    vsnprintf(buf, sizeof(buf), fmt, ap);
    n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    LOG_W("event=mhd message=\"%s\"", buf);
}

/* ---- the loop side ---- */

static void on_timer(uv_timer_t *t);

static void run_mhd(struct http_listener *l)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (!l->d || l->in_run)
        return;
    l->in_run = true;
    MHD_run(l->d);
    l->in_run = false;
    if (uv_is_closing((uv_handle_t *)&l->timer))
        return;
    if (MHD_get_timeout(l->d, &ms) == MHD_YES)
        uv_timer_start(&l->timer, on_timer, ms > 3600000 ? 3600000 : ms, 0);
    else
        uv_timer_stop(&l->timer);
}

static void on_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    run_mhd(p->data);
}

/* After a resume: let MHD run on the next loop iteration (never recursively
 * from inside an access handler). */
static void http_kick(struct http_listener *l)
{
    if (l && l->handles_init && !uv_is_closing((uv_handle_t *)&l->timer))
        uv_timer_start(&l->timer, on_timer, 0, 0);
}

/* ---- listening sockets ---- */

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int listen_unix(const char *path, struct lorad_error *err)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd = -1;

    if (strlen(path) >= sizeof(sa.sun_path))
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "listen: unix path too long: %s", path);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                                   "listen: %s exists and is not a socket", path);
        unlink(path); /* stale socket of an earlier run */
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto fail;
    if (chmod(path, 0660) < 0)
        goto fail;
    if (listen(fd, 1024) < 0)
        goto fail;
    return fd;
fail:
    lorad_error_set(err, LORAD_E_INVALID_CONFIG, "listen on unix:%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return err ? err->code : LORAD_E_INVALID_CONFIG;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). */
static int listen_tcp(const char *addr, struct lorad_error *err)
{
    char host[256];
    const char *colon = strrchr(addr, ':'), *h = addr;
    size_t hlen;
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, rc, one = 1, saved = 0;

    if (!colon || !colon[1])
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "listen: \"%s\" is not HOST:PORT or unix:/path", addr);
    hlen = (size_t)(colon - addr);
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        h = addr + 1;
        hlen -= 2;
    }
    if (hlen >= sizeof(host))
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "listen: host too long");
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(hlen ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "listen: %s: %s", addr,
                               gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "listen on %s: %s", addr,
                               strerror(saved));
    return fd;
}

static int open_listener(const char *addr, char **unix_path, struct lorad_error *err)
{
    *unix_path = NULL;
    if (strncmp(addr, "unix:", 5) == 0) {
        int fd = listen_unix(addr + 5, err);
        if (fd >= 0) {
            *unix_path = strdup(addr + 5);
            if (!*unix_path) {
                close(fd);
                unlink(addr + 5);
                return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
            }
        }
        return fd;
    }
    return listen_tcp(addr, err);
}

/* ---- start / stop ---- */

static int start_mhd(struct http *h, struct http_listener *l, struct lorad_error *err)
{
    const struct lorad_config *c = &h->srv->cfg;
    const union MHD_DaemonInfo *info;
    unsigned int conns = (unsigned)c->max_connections;
    unsigned int tmo = (unsigned)c->connection_timeout_s;
    int efd;

    l->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL,
                            NULL, on_access, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)l->fd,
                            MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_CONNECTION_TIMEOUT, tmo,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MEMORY_LIMIT,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, l, MHD_OPTION_END);
    if (!l->d)
        return lorad_error_set(err, LORAD_E_INTERNAL, "libmicrohttpd failed to start");
    info = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    efd = info ? info->epoll_fd : -1;
    if (efd < 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "libmicrohttpd has no epoll fd");
    if (uv_poll_init(h->srv->loop, &l->poll, efd) != 0 ||
        uv_timer_init(h->srv->loop, &l->timer) != 0)
        return lorad_error_set(err, LORAD_E_INTERNAL, "uv_poll_init on the epoll fd failed");
    l->poll.data = l;
    l->timer.data = l;
    l->handles_init = true;
    uv_poll_start(&l->poll, UV_READABLE, on_poll);
    run_mhd(l);
    return 0;
}

static int take_listeners(struct http *h, struct lorad_error *err)
{
    const struct lorad_config *c = &h->srv->cfg;
    int nfds = systemd_listen_fds();
    int rc;

    h->nl = c->control_listen ? 2 : 1;
    h->l[0].plane = c->control_listen ? HTTP_PLANE_DATA : HTTP_PLANE_BOTH;
    h->l[1].plane = HTTP_PLANE_CONTROL;
    h->l[0].fd = h->l[1].fd = -1;
    if (nfds >= 1) {
        h->l[0].fd = 3;
        set_flags(3);
        LOG_I("event=listen source=systemd fd=3 plane=%s", h->nl == 2 ? "data" : "both");
    } else {
        rc = open_listener(c->listen, &h->l[0].unix_path, err);
        if (rc < 0)
            return rc;
        h->l[0].fd = rc;
        LOG_I("event=listen address=%s plane=%s", c->listen, h->nl == 2 ? "data" : "both");
    }
    if (h->nl == 2) {
        if (nfds >= 2) {
            h->l[1].fd = 4;
            set_flags(4);
            LOG_I("event=listen source=systemd fd=4 plane=control");
        } else {
            rc = open_listener(c->control_listen, &h->l[1].unix_path, err);
            if (rc < 0)
                return rc;
            h->l[1].fd = rc;
            LOG_I("event=listen address=%s plane=control", c->control_listen);
        }
    }
    return 0;
}

int http_start(struct lorad_server *srv, const struct http_route *routes, size_t nroutes,
               struct lorad_error *err)
{
    struct http *h;
    int i, rc;

    if (srv->http)
        return lorad_error_set(err, LORAD_E_INTERNAL, "http already started");
    h = calloc(1, sizeof(*h));
    if (!h)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    h->srv = srv;
    h->routes = routes;
    h->nroutes = nroutes;
    h->l[0].h = h->l[1].h = h;
    srv->http = h;
    rc = take_listeners(h, err);
    if (rc < 0)
        goto fail;
    for (i = 0; i < h->nl; i++) {
        rc = start_mhd(h, &h->l[i], err);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    http_close(srv);
    return rc;
}

void http_stop_accepting(struct lorad_server *srv)
{
    struct http *h = srv->http;
    int i;
    if (!h || h->draining)
        return;
    h->draining = true;
    for (i = 0; i < h->nl; i++) {
        struct http_listener *l = &h->l[i];
        if (l->d) {
            MHD_socket fd = MHD_quiesce_daemon(l->d);
            if (fd != MHD_INVALID_SOCKET && fd == l->fd) {
                close(l->fd);
                l->fd = -1;
            }
        }
    }
    LOG_I("event=http_stop_accepting inflight=%zu", h->inflight);
}

void http_get_drain_tally(const struct lorad_server *srv, struct http_drain_tally *t)
{
    static const struct http_drain_tally none = {0, 0, 0};
    *t = srv->http ? srv->http->tally : none;
}

size_t http_inflight(const struct lorad_server *srv)
{
    return srv->http ? srv->http->inflight : 0;
}

static void on_handle_closed(uv_handle_t *hd)
{
    struct http_listener *l = hd->data;
    struct http *h = l->h;
    if (--h->closing_handles == 0 && h->close_requested)
        free(h);
}

void http_close(struct lorad_server *srv)
{
    struct http *h = srv->http;
    int i;
    if (!h)
        return;
    srv->http = NULL;
    for (i = 0; i < 2; i++) {
        struct http_listener *l = &h->l[i];
        if (l->handles_init) {
            uv_poll_stop(&l->poll);
            uv_timer_stop(&l->timer);
        }
        if (l->d) {
            MHD_stop_daemon(l->d); /* frees every request (completion callbacks) */
            l->d = NULL;
        }
        if (l->fd >= 0) {
            close(l->fd);
            l->fd = -1;
        }
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
            l->unix_path = NULL;
        }
        if (l->handles_init) {
            h->closing_handles += 2;
            uv_close((uv_handle_t *)&l->poll, on_handle_closed);
            uv_close((uv_handle_t *)&l->timer, on_handle_closed);
        }
    }
    if (h->draining) /* the daemons are stopped: every request has ended */
        LOG_I("event=drain_end answered=%zu refused=%zu closed=%zu", h->tally.answered,
              h->tally.refused, h->tally.closed);
    h->close_requested = true;
    if (h->closing_handles == 0)
        free(h);
}
