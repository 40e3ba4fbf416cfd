/* lorad — client/api.c: the libcurl client for lorad's HTTP API and the
 * readers of lorad's config and token files (see api.h for the contract).
 *
 * One CURL easy handle per client, kept between requests so that a tool
 * sending several requests reuses one keep-alive connection. Every request
 * resets the per-request options (method, body, headers) and collects the
 * body through a capped buffer; the answer is parsed as JSON when it is
 * one JSON value (lorad's answers always are, a proxy's HTML error page is
 * not).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>

#include "api.h"
#include "../lib/fileio.h"

#define API_CONFIG_MAX (1u << 20) /* lorad's own limit for its config file */
#define API_TOKEN_MAX 4096
#define API_CONNECT_TIMEOUT_MS 10000L

struct api_client {
    CURL *curl;
    char *base;   /* base URL without a trailing '/' */
    char *socket; /* unix socket path or NULL */
    char *auth;   /* "Authorization: Bearer ..." or NULL */
    char *where;  /* for messages */
    long timeout_ms;
    char curl_err[CURL_ERROR_SIZE];
};

/* The answer body while it arrives. */
struct api_buf {
    char *data;
    size_t len, cap;
    bool too_large;
};

int api_global_init(struct lorad_error *err)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return lorad_error_set(err, LORAD_E_INTERNAL, "libcurl failed to initialise");
    return 0;
}

void api_global_cleanup(void)
{
    curl_global_cleanup();
}

/* ---- the client ---- */

static char *api_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* A token goes into a header line: printable ASCII, no blanks. */
static bool api_token_chars_ok(const char *t, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return false;
    return true;
}

static int api_client_fill(struct api_client *c, const struct api_conf *conf,
                           struct lorad_error *err)
{
    const char *url = conf->url ? conf->url : API_SOCKET_URL;
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    c->base = strndup(url, n);
    c->socket = api_strdup(conf->socket);
    c->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : API_DEFAULT_TIMEOUT_MS;
    if (conf->token && asprintf(&c->auth, "Authorization: Bearer %s", conf->token) < 0)
        c->auth = NULL;
    if (c->socket) {
        if (asprintf(&c->where, "unix:%s", c->socket) < 0)
            c->where = NULL;
    } else {
        c->where = api_strdup(c->base);
    }
    if (!c->base || (conf->socket && !c->socket) || (conf->token && !c->auth) || !c->where)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    return 0;
}

static int api_client_setup(struct api_client *c, struct lorad_error *err)
{
    CURL *h = c->curl;
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
    bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    bad |= curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never a proxy from the environment */
    bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                            c->timeout_ms < API_CONNECT_TIMEOUT_MS ? c->timeout_ms
                                                                   : API_CONNECT_TIMEOUT_MS);
    if (c->socket)
        bad |= curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket);
    if (bad)
        return lorad_error_set(err, LORAD_E_INTERNAL, "libcurl refused an option");
    return 0;
}

struct api_client *api_client_new(const struct api_conf *conf, struct lorad_error *err)
{
    struct api_client *c = NULL;
    if (!conf || (!conf->url && !conf->socket)) {
        lorad_error_set(err, LORAD_E_INVALID_REQUEST, "no URL and no unix socket to talk to");
        goto fail;
    }
    if (conf->socket &&
        (!conf->socket[0] || strlen(conf->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))) {
        lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                        "unix socket path empty or longer than 107 bytes: %s", conf->socket);
        goto fail;
    }
    if (conf->token && !api_token_chars_ok(conf->token, strlen(conf->token))) {
        lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                        "the token must be printable ASCII without spaces");
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    if (api_client_fill(c, conf, err) < 0)
        goto fail;
    c->curl = curl_easy_init();
    if (!c->curl) {
        lorad_error_set(err, LORAD_E_INTERNAL, "libcurl: cannot create a handle");
        goto fail;
    }
    if (api_client_setup(c, err) < 0)
        goto fail;
    return c;
fail:
    api_client_free(&c);
    return NULL;
}

void api_client_free(struct api_client **cp)
{
    struct api_client *c = cp ? *cp : NULL;
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    free(c->base);
    free(c->socket);
    if (c->auth) /* the token does not outlive its use in freed memory */
        memset(c->auth, 0, strlen(c->auth));
    free(c->auth);
    free(c->where);
    free(c);
    *cp = NULL;
}

const char *api_client_where(const struct api_client *c)
{
    return c->where;
}

/* ---- one request ---- */

int api_buf_append(char **data, size_t *len, size_t *cap, const char *src, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *p = realloc(*data, ncap);
        if (!p)
            return -1;
        *data = p;
        *cap = ncap;
    }
    memcpy(*data + *len, src, n);
    *len += n;
    (*data)[*len] = '\0';
    return 0;
}

static size_t api_write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct api_buf *b = ud;
    size_t n = size * nmemb;
    if (n > API_BODY_MAX - b->len) {
        b->too_large = true;
        return 0; /* libcurl aborts the transfer */
    }
    if (api_buf_append(&b->data, &b->len, &b->cap, data, n) < 0)
        return 0;
    return n;
}

/* Header list for one request (NULL on out of memory). */
static struct curl_slist *api_headers(const struct api_client *c, const char *ctype)
{
    struct curl_slist *h = curl_slist_append(NULL, "Expect:"), *t;
    char line[256];
    if (h && ctype) {
        snprintf(line, sizeof(line), "Content-Type: %s", ctype);
        t = curl_slist_append(h, line);
        h = t ? t : (curl_slist_free_all(h), NULL);
    }
    if (h && c->auth) {
        t = curl_slist_append(h, c->auth);
        h = t ? t : (curl_slist_free_all(h), NULL);
    }
    return h;
}

static int api_setup_request(struct api_client *c, const char *method, const char *url,
                             const void *body, size_t len, struct curl_slist *hdrs,
                             struct api_buf *buf)
{
    CURL *h = c->curl;
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_URL, url);
    bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_write_cb);
    bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, buf);
    if (strcmp(method, "GET") == 0) {
        bad |= curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        bad |= curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
    } else {
        bad |= curl_easy_setopt(h, CURLOPT_POST, 1L);
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
        bad |=
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
    }
    return bad;
}

int api_request(struct api_client *c, const char *method, const char *path, const void *body,
                size_t len, const char *ctype, struct api_resp *out, struct lorad_error *err)
{
    struct api_buf buf = {0};
    struct curl_slist *hdrs = NULL;
    char *url = NULL;
    CURLcode cc;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!method || !*method || strpbrk(method, " \r\n") || !path || path[0] != '/' ||
        strpbrk(path, " \r\n")) {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST, "bad request line: %s %s",
                             method ? method : "(null)", path ? path : "(null)");
        goto fail;
    }
    hdrs = api_headers(c, ctype);
    if (!hdrs || asprintf(&url, "%s%s", c->base, path) < 0) {
        url = NULL;
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    if (api_setup_request(c, method, url, body, len, hdrs, &buf)) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "libcurl refused a request option");
        goto fail;
    }
    c->curl_err[0] = '\0';
    cc = curl_easy_perform(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    if (cc != CURLE_OK) {
        if (buf.too_large)
            rc = lorad_error_set(err, LORAD_E_BODY_TOO_LARGE, "%s %s: answer larger than %u bytes",
                                 method, path, API_BODY_MAX);
        else
            rc = lorad_error_set(err, LORAD_E_NOT_READY, "%s: %s", c->where,
                                 c->curl_err[0] ? c->curl_err : curl_easy_strerror(cc));
        goto fail;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &out->status);
    if (!buf.data && !(buf.data = calloc(1, 1))) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    out->body = buf.data;
    out->len = buf.len;
    /* one JSON value and nothing after it (the NUL ends the buffer) */
    if (strlen(buf.data) == buf.len)
        out->json = cJSON_ParseWithLengthOpts(buf.data, buf.len + 1, NULL, 1);
    buf.data = NULL;
    rc = 0;
fail:
    curl_slist_free_all(hdrs);
    free(url);
    free(buf.data);
    return rc;
}

int api_get(struct api_client *c, const char *path, struct api_resp *out, struct lorad_error *err)
{
    return api_request(c, "GET", path, NULL, 0, NULL, out, err);
}

int api_post_json(struct api_client *c, const char *path, const cJSON *json, struct api_resp *out,
                  struct lorad_error *err)
{
    char *text = cJSON_PrintUnformatted(json);
    int rc;
    if (!text) {
        memset(out, 0, sizeof(*out));
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    }
    rc = api_request(c, "POST", path, text, strlen(text), "application/json", out, err);
    free(text);
    return rc;
}

void api_resp_free(struct api_resp *r)
{
    if (!r)
        return;
    cJSON_Delete(r->json);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static const char *api_error_member(const struct api_resp *r, const char *name)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *api_resp_error_code(const struct api_resp *r)
{
    return api_error_member(r, "code");
}

const char *api_resp_error_message(const struct api_resp *r)
{
    return api_error_member(r, "message");
}

/* ---- addresses ---- */

/* The host a client connects to for a listen host (wildcards -> loopback). */
static const char *api_connect_host(const char *host, size_t len, bool v6)
{
    if (len == 0 || (!v6 && len == 7 && memcmp(host, "0.0.0.0", 7) == 0))
        return "127.0.0.1";
    if (v6 && len == 2 && memcmp(host, "::", 2) == 0)
        return "[::1]";
    return NULL;
}

static int api_tcp_url(const char *key, const char *addr, char **url, struct lorad_error *err)
{
    const char *colon = strrchr(addr, ':'), *host = addr, *fix;
    size_t hlen;
    bool v6 = false;
    char *end;
    long port;
    int n;

    if (!colon || !colon[1])
        goto bad;
    port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        goto bad;
    hlen = (size_t)(colon - addr);
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        v6 = true;
        host++;
        hlen -= 2;
    } else if (memchr(addr, ':', hlen)) {
        goto bad; /* an IPv6 address needs its brackets */
    }
    if (memchr(host, '/', hlen) || memchr(host, '@', hlen))
        goto bad;
    fix = api_connect_host(host, hlen, v6);
    if (fix)
        n = asprintf(url, "http://%s:%ld", fix, port);
    else if (v6)
        n = asprintf(url, "http://[%.*s]:%ld", (int)hlen, host, port);
    else
        n = asprintf(url, "http://%.*s:%ld", (int)hlen, host, port);
    if (n < 0) {
        *url = NULL;
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    }
    return 0;
bad:
    return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                           "config key %s: \"%s\" is not HOST:PORT, [V6]:PORT or unix:/path", key,
                           addr);
}

int api_address_parse(const char *key, const char *addr, char **url, char **socket,
                      struct lorad_error *err)
{
    *url = NULL;
    *socket = NULL;
    if (strncmp(addr, "unix:", 5) != 0)
        return api_tcp_url(key, addr, url, err);
    if (!addr[5] || strlen(addr + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key %s: \"unix:\" needs a socket path shorter than 108 "
                               "bytes",
                               key);
    *socket = strdup(addr + 5);
    if (!*socket)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    return 0;
}

/* ---- the config file ---- */

/* The string (or null) value of `key`; *v NULL when absent or null.
 * Refuses a wrong type and a key given twice. */
static int api_config_string(const cJSON *root, const char *key, bool nullable, const char **v,
                             struct lorad_error *err)
{
    const cJSON *found = NULL;
    *v = NULL;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!it->string || strcmp(it->string, key) != 0)
            continue;
        if (found)
            return lorad_error_set(err, LORAD_E_INVALID_CONFIG, "config key %s: given twice", key);
        found = it;
    }
    if (!found || (nullable && cJSON_IsNull(found)))
        return 0;
    if (!cJSON_IsString(found) || !found->valuestring[0])
        return lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                               "config key %s: expected a non-empty string%s", key,
                               nullable ? " or null" : "");
    *v = found->valuestring;
    return 0;
}

static int api_config_fill(const cJSON *root, struct api_target *t, struct lorad_error *err)
{
    const char *listen, *control, *token;
    int rc;
    if ((rc = api_config_string(root, "listen", false, &listen, err)) < 0 ||
        (rc = api_config_string(root, "control_listen", true, &control, err)) < 0 ||
        (rc = api_config_string(root, "auth_token_file", true, &token, err)) < 0)
        return rc;
    if (!listen)
        listen = "127.0.0.1:8080"; /* lorad's default (SPEC.md 5) */
    if ((rc = api_address_parse("listen", listen, &t->data_url, &t->data_socket, err)) < 0)
        return rc;
    if ((rc = api_address_parse(control ? "control_listen" : "listen", control ? control : listen,
                                &t->control_url, &t->control_socket, err)) < 0)
        return rc;
    if (token && !(t->token_file = strdup(token)))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    return 0;
}

int api_config_read(const char *path, struct api_target *t, struct lorad_error *err)
{
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    int rc = fileio_read_path(path, API_CONFIG_MAX, &text, &len);

    memset(t, 0, sizeof(*t));
    if (rc < 0) {
        rc = lorad_error_set(err, rc == -ENOMEM ? LORAD_E_INTERNAL : LORAD_E_INVALID_CONFIG,
                             "%s: %s", path, fileio_strerror(rc));
        goto fail;
    }
    if (strlen(text) != len) {
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG, "%s: contains a NUL byte", path);
        goto fail;
    }
    cJSON_Minify(text); /* drops the comments, as lorad does */
    root = cJSON_ParseWithOpts(text, NULL, 1);
    if (!root || !cJSON_IsObject(root)) {
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG, "%s: %s", path,
                             root ? "expected a JSON object" : "malformed JSON");
        goto fail;
    }
    if ((rc = api_config_fill(root, t, err)) < 0) {
        lorad_error_prefix(err, path);
        goto fail;
    }
    rc = 0;
fail:
    if (rc < 0)
        api_target_free(t);
    cJSON_Delete(root);
    free(text);
    return rc;
}

void api_target_free(struct api_target *t)
{
    if (!t)
        return;
    free(t->control_url);
    free(t->control_socket);
    free(t->data_url);
    free(t->data_socket);
    free(t->token_file);
    memset(t, 0, sizeof(*t));
}

/* ---- the token file ---- */

int api_token_read(const char *path, char **token, struct lorad_error *err)
{
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);

    *token = NULL;
    if (fd < 0) {
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG, "token file %s: %s", path,
                             strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & S_IROTH)) {
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                             "token file %s: world-readable; chmod o-r it", path);
        goto fail;
    }
    if ((rc = fileio_read_fd(fd, API_TOKEN_MAX, &text, &len)) < 0) {
        rc = lorad_error_set(err, rc == -ENOMEM ? LORAD_E_INTERNAL : LORAD_E_INVALID_CONFIG,
                             "token file %s: %s", path, fileio_strerror(rc));
        goto fail;
    }
    if (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    if (len > 0 && text[len - 1] == '\r')
        text[--len] = '\0';
    if (!api_token_chars_ok(text, len)) {
        rc = lorad_error_set(err, LORAD_E_INVALID_CONFIG,
                             len ? "token file %s: the token must be printable ASCII without "
                                   "spaces (only one trailing newline is ignored)"
                                 : "token file %s: empty",
                             path);
        goto fail;
    }
    *token = text;
    text = NULL;
    rc = 0;
fail:
    if (text)
        memset(text, 0, len);
    free(text);
    if (fd >= 0)
        close(fd);
    return rc;
}
