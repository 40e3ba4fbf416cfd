/* lorad — tests/test_api.c: unit tests of client/api.c, the HTTP client
 * of the operator tools: lorad's listen addresses as a client reaches
 * them, the config reader (comments, defaults, control_listen, every
 * refusal), the token file rules (the daemon's own), and requests against
 * a one-shot HTTP server in this process (what is sent: method, path,
 * token header, body; what is returned: status, body, JSON only when the
 * whole body is one JSON value; no proxy from the environment; an
 * unreachable address is LORAD_E_NOT_READY). */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../client/api.h"
#include "testutil.h"

/* ---- addresses ---- */

static void expect_addr(const char *addr, const char *url, const char *sock)
{
    struct lorad_error err = {0};
    char *u = NULL, *s = NULL;
    ck_assert_msg(api_address_parse("listen", addr, &u, &s, &err) == 0, "%s: %s", addr, err.msg);
    if (url)
        ck_assert_msg(u && strcmp(u, url) == 0, "%s: url %s, want %s", addr, u ? u : "(null)", url);
    else
        ck_assert_ptr_null(u);
    if (sock)
        ck_assert_msg(s && strcmp(s, sock) == 0, "%s: socket %s", addr, s ? s : "(null)");
    else
        ck_assert_ptr_null(s);
    free(u);
    free(s);
}

static void expect_bad_addr(const char *addr)
{
    struct lorad_error err = {0};
    char *u = (char *)1, *s = (char *)1;
    ck_assert_int_eq(api_address_parse("control_listen", addr, &u, &s, &err),
                     LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_null(u);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, "control_listen") != NULL, "%s: %s", addr, err.msg);
}

START_TEST(test_addresses)
{
    char longpath[200];
    expect_addr("127.0.0.1:8080", "http://127.0.0.1:8080", NULL);
    expect_addr("localhost:1", "http://localhost:1", NULL);
    expect_addr("0.0.0.0:8080", "http://127.0.0.1:8080", NULL);
    expect_addr(":9000", "http://127.0.0.1:9000", NULL);
    expect_addr("[::1]:8080", "http://[::1]:8080", NULL);
    expect_addr("[::]:8080", "http://[::1]:8080", NULL);
    expect_addr("[fe80::1]:65535", "http://[fe80::1]:65535", NULL);
    expect_addr("unix:/run/lorad.sock", NULL, "/run/lorad.sock");
    expect_bad_addr("127.0.0.1");
    expect_bad_addr("127.0.0.1:");
    expect_bad_addr("127.0.0.1:0");
    expect_bad_addr("127.0.0.1:65536");
    expect_bad_addr("127.0.0.1:80x");
    expect_bad_addr("::1:8080");
    expect_bad_addr("user@host:80");
    expect_bad_addr("host/x:80");
    expect_bad_addr("unix:");
    memset(longpath, 'a', sizeof(longpath));
    memcpy(longpath, "unix:/", 6);
    longpath[sizeof(longpath) - 1] = '\0';
    expect_bad_addr(longpath);
}
END_TEST

/* ---- the config file ---- */

static char *write_config(const char *dir, const char *text)
{
    char *p = tu_path(dir, "lorad.json");
    tu_write_text(p, "%s", text);
    return p;
}

static void expect_config(const char *text, const char *curl, const char *csock, const char *durl,
                          const char *dsock, const char *token)
{
    char *dir = tu_mkdtemp(), *p = write_config(dir, text);
    struct api_target t;
    struct lorad_error err = {0};
    ck_assert_msg(api_config_read(p, &t, &err) == 0, "%s: %s", text, err.msg);
#define EQ(got, want)                                                                              \
    ck_assert_msg((want) ? (got) && strcmp((got), (want)) == 0 : (got) == NULL,                    \
                  "%s: " #got " is %s, want %s", text, (got) ? (got) : "(null)",                   \
                  (want) ? (want) : "(null)")
    EQ(t.control_url, curl);
    EQ(t.control_socket, csock);
    EQ(t.data_url, durl);
    EQ(t.data_socket, dsock);
    EQ(t.token_file, token);
#undef EQ
    api_target_free(&t);
    tu_rmrf(dir);
    free(p);
    free(dir);
}

static void expect_config_error(const char *text, const char *needle)
{
    char *dir = tu_mkdtemp(), *p = write_config(dir, text);
    struct api_target t;
    struct lorad_error err = {0};
    ck_assert_int_eq(api_config_read(p, &t, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", text, err.msg,
                  needle);
    ck_assert_msg(strstr(err.msg, p) != NULL, "%s: message '%s' does not name the file", text,
                  err.msg);
    ck_assert_ptr_null(t.control_url);
    ck_assert_ptr_null(t.data_url);
    tu_rmrf(dir);
    free(p);
    free(dir);
}

START_TEST(test_config)
{
    /* lorad's default listen; every other key is left to lorad */
    expect_config("{\"model_dir\": \"/m\", \"workers\": 3}", "http://127.0.0.1:8080", NULL,
                  "http://127.0.0.1:8080", NULL, NULL);
    /* comments of both kinds, as conf/lorad.json has them */
    expect_config("// lorad\n{\n  /* data */ \"listen\": \"0.0.0.0:9001\", // all\n"
                  "  \"control_listen\": null,\n  \"auth_token_file\": \"/etc/lorad/token\"\n}\n",
                  "http://127.0.0.1:9001", NULL, "http://127.0.0.1:9001", NULL, "/etc/lorad/token");
    expect_config("{\"listen\": \"127.0.0.1:1\", \"control_listen\": \"unix:/run/c.sock\", "
                  "\"auth_token_file\": null}",
                  NULL, "/run/c.sock", "http://127.0.0.1:1", NULL, NULL);
    expect_config("{\"listen\": \"unix:/run/d.sock\", \"control_listen\": \"[::1]:7\"}",
                  "http://[::1]:7", NULL, NULL, "/run/d.sock", NULL);
    expect_config_error("{\"listen\": 8080}", "config key listen: expected a non-empty string");
    expect_config_error("{\"listen\": null}", "config key listen");
    expect_config_error("{\"listen\": \"\"}", "config key listen");
    expect_config_error("{\"control_listen\": [1]}", "config key control_listen");
    expect_config_error("{\"auth_token_file\": true}", "config key auth_token_file");
    expect_config_error("{\"listen\": \"a:1\", \"listen\": \"b:2\"}",
                        "config key listen: given twice");
    expect_config_error("{\"control_listen\": \"nowhere\"}", "control_listen");
    expect_config_error("{\"listen\": \"x:1\"", "malformed JSON");
    expect_config_error("{} {}", "malformed JSON");
    expect_config_error("[\"listen\"]", "expected a JSON object");
    expect_config_error("", "malformed JSON");
}
END_TEST

START_TEST(test_config_unreadable)
{
    struct api_target t;
    struct lorad_error err = {0};
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "none.json");
    ck_assert_int_eq(api_config_read(p, &t, &err), LORAD_E_INVALID_CONFIG);
    ck_assert(strstr(err.msg, p) != NULL);
    ck_assert_int_eq(api_config_read(dir, &t, &err), LORAD_E_INVALID_CONFIG); /* a directory */
    tu_write_file(p, "{\"listen\":\"a:1\"}\0{}", 19);
    ck_assert_int_eq(api_config_read(p, &t, &err), LORAD_E_INVALID_CONFIG);
    ck_assert(strstr(err.msg, "NUL") != NULL);
    tu_rmrf(dir);
    free(p);
    free(dir);
}
END_TEST

/* ---- the token file ---- */

static int read_token(const char *content, size_t len, mode_t mode, char **tok, char *msg)
{
    struct lorad_error err = {0};
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "token");
    int rc;
    tu_write_file(p, content, len);
    ck_assert_int_eq(chmod(p, mode), 0);
    rc = api_token_read(p, tok, &err);
    snprintf(msg, LORAD_ERROR_MSG_MAX, "%s", err.msg);
    tu_rmrf(dir);
    free(p);
    free(dir);
    return rc;
}

START_TEST(test_token)
{
    char *tok = NULL, msg[LORAD_ERROR_MSG_MAX];
    ck_assert_int_eq(read_token("s3cret\n", 7, 0600, &tok, msg), 0);
    ck_assert_str_eq(tok, "s3cret");
    free(tok);
    ck_assert_int_eq(read_token("s3cret\r\n", 8, 0640, &tok, msg), 0);
    ck_assert_str_eq(tok, "s3cret");
    free(tok);
    ck_assert_int_eq(read_token("s3cret", 6, 0400, &tok, msg), 0);
    ck_assert_str_eq(tok, "s3cret");
    free(tok);
    /* only one trailing newline is ignored, as lorad does */
    ck_assert_int_eq(read_token("s3cret\n\n", 8, 0600, &tok, msg), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_null(tok);
    ck_assert(strstr(msg, "printable ASCII") != NULL);
    ck_assert_int_eq(read_token("s3c ret\n", 8, 0600, &tok, msg), LORAD_E_INVALID_CONFIG);
    ck_assert_int_eq(read_token("s3\x01cret", 7, 0600, &tok, msg), LORAD_E_INVALID_CONFIG);
    ck_assert_int_eq(read_token("\n", 1, 0600, &tok, msg), LORAD_E_INVALID_CONFIG);
    ck_assert(strstr(msg, "empty") != NULL);
    ck_assert_int_eq(read_token("", 0, 0600, &tok, msg), LORAD_E_INVALID_CONFIG);
    ck_assert(strstr(msg, "empty") != NULL);
    ck_assert_int_eq(read_token("s3cret\n", 7, 0604, &tok, msg), LORAD_E_INVALID_CONFIG);
    ck_assert(strstr(msg, "world-readable") != NULL);
    ck_assert_ptr_null(tok);
    {
        struct lorad_error err = {0};
        ck_assert_int_eq(api_token_read("/nonexistent/token", &tok, &err), LORAD_E_INVALID_CONFIG);
        ck_assert(strstr(err.msg, "/nonexistent/token") != NULL);
    }
}
END_TEST

/* ---- requests ---- */

/* A one-shot HTTP server: accepts one connection, reads one request
 * (headers and a Content-Length body), answers `answer` and closes. */
struct fake {
    int lfd, port;
    const char *answer;
    char request[8192];
    pthread_t thread;
};

static void *fake_serve(void *arg)
{
    struct fake *f = arg;
    size_t n = 0;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    for (;;) {
        ssize_t r = read(fd, f->request + n, sizeof(f->request) - 1 - n);
        char *end;
        if (r <= 0)
            break;
        n += (size_t)r;
        f->request[n] = '\0';
        end = strstr(f->request, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(f->request, "\r\nContent-Length:");
            size_t want = (size_t)(end + 4 - f->request) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
            if (n >= want)
                break;
        }
    }
    if (write(fd, f->answer, strlen(f->answer)) < 0)
        perror("fake write");
    close(fd);
    return NULL;
}

static void fake_start(struct fake *f, const char *answer)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    memset(f, 0, sizeof(*f));
    f->answer = answer;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(f->lfd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(f->lfd, 1), 0);
    ck_assert_int_eq(getsockname(f->lfd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_serve, f), 0);
}

static void fake_join(struct fake *f)
{
    pthread_join(f->thread, NULL);
    close(f->lfd);
}

static struct api_client *client_for(int port, const char *token)
{
    char url[64];
    struct lorad_error err = {0};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    struct api_conf conf = {.url = url, .token = token, .timeout_ms = 20000};
    struct api_client *c = api_client_new(&conf, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    return c;
}

START_TEST(test_post_json)
{
    struct fake f;
    struct api_resp r;
    struct lorad_error err = {0};
    cJSON *body = cJSON_Parse("{\"adapter\":\"demo-b\"}");
    /* a proxy named by the environment is not used */
    setenv("http_proxy", "http://127.0.0.1:1", 1);
    setenv("HTTP_PROXY", "http://127.0.0.1:1", 1);
    setenv("ALL_PROXY", "http://127.0.0.1:1", 1);
    fake_start(&f, "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
                   "Connection: close\r\nContent-Length: 60\r\n\r\n"
                   "{\"error\":{\"code\":\"canary_active\",\"message\":\"promote first\"}}");
    struct api_client *c = client_for(f.port, "tok-1");
    ck_assert_int_eq(api_post_json(c, "/swap", body, &r, &err), 0);
    fake_join(&f);
    ck_assert_int_eq(r.status, 409);
    ck_assert_str_eq(api_resp_error_code(&r), "canary_active");
    ck_assert_str_eq(api_resp_error_message(&r), "promote first");
    ck_assert_msg(strncmp(f.request, "POST /swap HTTP/1.1\r\n", 21) == 0, "%s", f.request);
    ck_assert_msg(strstr(f.request, "\r\nAuthorization: Bearer tok-1\r\n") != NULL, "%s",
                  f.request);
    ck_assert(strstr(f.request, "\r\nContent-Type: application/json\r\n") != NULL);
    ck_assert(strstr(f.request, "\r\n\r\n{\"adapter\":\"demo-b\"}") != NULL);
    ck_assert(strcasestr(f.request, "Expect:") == NULL);
    ck_assert_msg(strncmp(api_client_where(c), "http://127.0.0.1:", 17) == 0, "%s",
                  api_client_where(c));
    api_resp_free(&r);
    ck_assert_ptr_null(r.body);
    api_client_free(&c);
    ck_assert_ptr_null(c);
    cJSON_Delete(body);
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("ALL_PROXY");
}
END_TEST

static void get_answer(const char *answer, long status, const char *body, bool json)
{
    struct fake f;
    struct api_resp r;
    struct lorad_error err = {0};
    fake_start(&f, answer);
    struct api_client *c = client_for(f.port, NULL);
    ck_assert_int_eq(api_get(c, "/status", &r, &err), 0);
    fake_join(&f);
    ck_assert_msg(strncmp(f.request, "GET /status HTTP/1.1\r\n", 22) == 0, "%s", f.request);
    ck_assert(strstr(f.request, "Authorization") == NULL);
    ck_assert_int_eq(r.status, status);
    ck_assert_str_eq(r.body, body);
    ck_assert_uint_eq(r.len, strlen(body));
    ck_assert_msg((r.json != NULL) == json, "body '%s': json %p", body, (void *)r.json);
    ck_assert_ptr_null(api_resp_error_code(&r));
    api_resp_free(&r);
    api_client_free(&c);
}

START_TEST(test_get_bodies)
{
    get_answer("HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
               "{\"state\":\"x\"}",
               200, "{\"state\":\"x\"}", true);
    /* a proxy's HTML page, trailing garbage, an empty body: no JSON */
    get_answer("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
               "<html></html",
               502, "<html></html", false);
    get_answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{} {}", 200,
               "{} {}", false);
    get_answer("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", 204, "", false);
}
END_TEST

/* A loopback port nothing listens on (bound, never listened, closed). */
static int closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

START_TEST(test_unreachable)
{
    struct api_resp r;
    struct lorad_error err = {0};
    int port = closed_port();
    struct api_client *c = client_for(port, NULL);
    ck_assert_int_eq(api_get(c, "/status", &r, &err), LORAD_E_NOT_READY);
    ck_assert_msg(strstr(err.msg, "127.0.0.1") != NULL, "%s", err.msg);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_null(r.body);
    ck_assert_int_eq(api_get(c, "status", &r, &err), LORAD_E_INVALID_REQUEST);
    ck_assert_int_eq(api_request(c, "GET X", "/", NULL, 0, NULL, &r, &err),
                     LORAD_E_INVALID_REQUEST);
    api_client_free(&c);
    {
        struct api_conf conf = {.socket = "/nonexistent/lorad.sock"};
        c = api_client_new(&conf, &err);
        ck_assert_ptr_nonnull(c);
        ck_assert_str_eq(api_client_where(c), "unix:/nonexistent/lorad.sock");
        ck_assert_int_eq(api_get(c, "/status", &r, &err), LORAD_E_NOT_READY);
        api_client_free(&c);
    }
}
END_TEST

START_TEST(test_client_conf)
{
    struct lorad_error err = {0};
    char longp[200];
    struct api_conf none = {0}, badtok = {.url = "http://x:1", .token = "a b"};
    struct api_conf sock = {.socket = longp};
    ck_assert_ptr_null(api_client_new(&none, &err));
    ck_assert_int_eq(err.code, LORAD_E_INVALID_REQUEST);
    ck_assert_ptr_null(api_client_new(&badtok, &err));
    ck_assert(strstr(err.msg, "printable") != NULL);
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    ck_assert_ptr_null(api_client_new(&sock, &err));
    ck_assert(strstr(err.msg, "107") != NULL);
    api_client_free(NULL);
}
END_TEST

int main(void)
{
    struct lorad_error err = {0};
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    SRunner *sr;
    int failed;
    if (api_global_init(&err) < 0) {
        fprintf(stderr, "test_api: %s\n", err.msg);
        return EXIT_FAILURE;
    }
    tcase_add_test(tc, test_addresses);
    tcase_add_test(tc, test_config);
    tcase_add_test(tc, test_config_unreadable);
    tcase_add_test(tc, test_token);
    tcase_add_test(tc, test_post_json);
    tcase_add_test(tc, test_get_bodies);
    tcase_add_test(tc, test_unreachable);
    tcase_add_test(tc, test_client_conf);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    api_global_cleanup();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
