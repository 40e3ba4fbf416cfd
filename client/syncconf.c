/* lorad — client/syncconf.c: lorad-sync's command line and config file
 * (the rules are in syncconf.h).
 */
#include "syncconf.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "desired.h"
#include "../lib/fileio.h"

#define SYNCCONF_FILE_MAX (1u << 20)
#define SYNCCONF_SECRET_MAX 4096

static void usage(FILE *f)
{
    fprintf(f, "usage: lorad-sync --etcd URL[,URL...] --prefix P --name NAME\n"
               "                  (--url URL | --socket PATH) [--token-file F]\n"
               "                  [--etcd-user U --etcd-password-file F]\n"
               "                  [--etcd-cacert F] [--etcd-cert F --etcd-key F]\n"
               "                  [--lease-ttl S] [--resync-ms MS]\n"
               "                  [--backoff-min-ms MS] [--backoff-max-ms MS] [--config FILE]\n"
               "\n"
               "Converges one lorad instance to the desired state in etcd (P/desired/<slot>)\n"
               "and reports what it serves in P/instances/NAME under a lease.\n"
               "\n"
               "  --etcd LIST            etcd endpoints (http:// or https://), comma separated\n"
               "  --prefix P             key prefix of the fleet (e.g. /lorad/prod/)\n"
               "  --name NAME            this instance's name (its report key)\n"
               "  --url URL              lorad's control-plane base URL\n"
               "  --socket PATH          or lorad's control-plane unix socket\n"
               "  --token-file F         lorad's bearer token file\n"
               "  --etcd-user U          etcd user (with --etcd-password-file)\n"
               "  --etcd-password-file F file holding the etcd password\n"
               "  --etcd-cacert F        CA file for https endpoints\n"
               "  --etcd-cert F, --etcd-key F  client certificate and key\n"
               "  --lease-ttl S          report lease TTL in seconds (default 10)\n"
               "  --resync-ms MS         re-check lorad at least this often (default TTL/3)\n"
               "  --backoff-min-ms MS    first retry delay after a failure (default 1000)\n"
               "  --backoff-max-ms MS    longest retry delay (default 30000)\n"
               "  --config FILE          a JSON object with the same keys (etcd, prefix,\n"
               "                         name, url, socket, token_file, etcd_user,\n"
               "                         etcd_password_file, etcd_cacert, etcd_cert, etcd_key,\n"
               "                         lease_ttl, resync_ms, backoff_min_ms,\n"
               "                         backoff_max_ms); the command line wins\n"
               "  --help, --version\n"
               "\n"
               "It runs until SIGTERM; exit 64 on a usage error.\n");
}

struct sync_key {
    const char *opt;  /* command-line name without "--" */
    const char *json; /* config key */
    size_t str_off;   /* offset of the char * member, or SIZE_MAX */
    size_t long_off;  /* offset of the long member, or SIZE_MAX */
    long lo, hi;
};

#define SK_S(o, j, m)                                                                              \
    {                                                                                              \
        o, j, offsetof(struct sync_conf, m), SIZE_MAX, 0, 0                                        \
    }
#define SK_L(o, j, m, lo, hi)                                                                      \
    {                                                                                              \
        o, j, SIZE_MAX, offsetof(struct sync_conf, m), lo, hi                                      \
    }
static const struct sync_key sync_keys[] = {
    SK_S("etcd", "etcd", etcd),
    SK_S("prefix", "prefix", prefix),
    SK_S("name", "name", name),
    SK_S("url", "url", url),
    SK_S("socket", "socket", socket),
    SK_S("token-file", "token_file", token_file),
    SK_S("etcd-user", "etcd_user", etcd_user),
    SK_S("etcd-password-file", "etcd_password_file", etcd_password_file),
    SK_S("etcd-cacert", "etcd_cacert", etcd_cacert),
    SK_S("etcd-cert", "etcd_cert", etcd_cert),
    SK_S("etcd-key", "etcd_key", etcd_key),
    SK_L("lease-ttl", "lease_ttl", lease_ttl_s, 2, 86400),
    SK_L("resync-ms", "resync_ms", resync_ms, 10, 3600000),
    SK_L("backoff-min-ms", "backoff_min_ms", backoff_min_ms, 10, 3600000),
    SK_L("backoff-max-ms", "backoff_max_ms", backoff_max_ms, 10, 3600000),
};
#define N_KEYS (sizeof(sync_keys) / sizeof(sync_keys[0]))

static int set_key(struct sync_conf *c, const struct sync_key *k, const char *v, bool replace,
                   const char *from)
{
    if (k->str_off != SIZE_MAX) {
        char **p = (char **)((char *)c + k->str_off);
        if (*p && !replace)
            return 0;
        free(*p);
        *p = strdup(v);
        return *p ? 0 : -1;
    }
    long *p = (long *)((char *)c + k->long_off);
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || !*v || *end || n < k->lo || n > k->hi) {
        fprintf(stderr, "lorad-sync: %s %s: expected an integer in [%ld, %ld], got '%s'\n", from,
                k->opt, k->lo, k->hi, v);
        return -1;
    }
    if (*p == 0 || replace)
        *p = n;
    return 0;
}

/* Config-file keys the command line did not give. */
static int read_config(struct sync_conf *c, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = fileio_read_path(path, SYNCCONF_FILE_MAX, &buf, &len);
    if (rc < 0) {
        fprintf(stderr, "lorad-sync: --config %s: %s\n", path, fileio_strerror(rc));
        return -1;
    }
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(j)) {
        fprintf(stderr, "lorad-sync: --config %s: not a JSON object\n", path);
        cJSON_Delete(j);
        return -1;
    }
    const cJSON *m;
    rc = 0;
    cJSON_ArrayForEach(m, j)
    {
        const struct sync_key *k = NULL;
        for (size_t i = 0; i < N_KEYS && !k; i++)
            if (!strcmp(sync_keys[i].json, m->string))
                k = &sync_keys[i];
        char num[32];
        if (!k) {
            fprintf(stderr, "lorad-sync: --config %s: unknown key \"%s\"\n", path, m->string);
            rc = -1;
        } else if (k->str_off != SIZE_MAX && cJSON_IsString(m)) {
            rc = set_key(c, k, m->valuestring, false, path);
        } else if (k->long_off != SIZE_MAX && cJSON_IsNumber(m)) {
            snprintf(num, sizeof(num), "%.0f", m->valuedouble);
            rc = set_key(c, k, num, false, path);
        } else if (!cJSON_IsNull(m)) {
            fprintf(stderr, "lorad-sync: --config %s: \"%s\" has the wrong type\n", path,
                    m->string);
            rc = -1;
        }
        if (rc < 0)
            break;
    }
    cJSON_Delete(j);
    return rc;
}

static int parse_args(int argc, char **argv, struct sync_conf *c)
{
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            printf("lorad-sync %s\n", SYNCCONF_VERSION);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "lorad-sync: %s: %s\n", a,
                    strncmp(a, "--", 2) ? "unexpected argument" : "needs a value");
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(a + 2, "config")) {
            config = v;
            continue;
        }
        const struct sync_key *k = NULL;
        for (size_t n = 0; n < N_KEYS && !k; n++)
            if (!strcmp(sync_keys[n].opt, a + 2))
                k = &sync_keys[n];
        if (!k) {
            fprintf(stderr, "lorad-sync: unknown option %s\n", a);
            return -1;
        }
        if (set_key(c, k, v, true, "option") < 0)
            return -1;
    }
    if (config && read_config(c, config) < 0)
        return -1;
    return 0;
}

static int check_conf(struct sync_conf *c)
{
    const char *missing = !c->etcd     ? "--etcd"
                          : !c->prefix ? "--prefix"
                          : !c->name   ? "--name"
                                       : NULL;
    if (missing) {
        fprintf(stderr, "lorad-sync: %s is required\n", missing);
        return -1;
    }
    if (!c->url == !c->socket) {
        fprintf(stderr, "lorad-sync: give exactly one of --url and --socket\n");
        return -1;
    }
    if (!desired_name_ok(c->name)) {
        fprintf(stderr, "lorad-sync: --name %s: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$\n",
                c->name);
        return -1;
    }
    if (!c->prefix[0] || strchr(c->prefix, ' ')) {
        fprintf(stderr, "lorad-sync: --prefix: an empty prefix or one with spaces\n");
        return -1;
    }
    if (!c->etcd_user != !c->etcd_password_file) {
        fprintf(stderr, "lorad-sync: --etcd-user and --etcd-password-file go together\n");
        return -1;
    }
    if (!c->etcd_cert != !c->etcd_key) {
        fprintf(stderr, "lorad-sync: --etcd-cert and --etcd-key go together\n");
        return -1;
    }
    if (!c->lease_ttl_s)
        c->lease_ttl_s = 10;
    if (!c->backoff_min_ms)
        c->backoff_min_ms = 1000;
    if (!c->backoff_max_ms)
        c->backoff_max_ms = 30000;
    if (c->backoff_max_ms < c->backoff_min_ms) {
        fprintf(stderr, "lorad-sync: --backoff-max-ms is below --backoff-min-ms\n");
        return -1;
    }
    return 0;
}

int syncconf_read_secret(const char *path, char **out)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = fileio_read_path(path, SYNCCONF_SECRET_MAX, &buf, &len);
    if (rc < 0) {
        fprintf(stderr, "lorad-sync: --etcd-password-file %s: %s\n", path, fileio_strerror(rc));
        return -1;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!buf[0]) {
        fprintf(stderr, "lorad-sync: --etcd-password-file %s: empty\n", path);
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

int syncconf_parse(int argc, char **argv, struct sync_conf *c)
{
    int rc = parse_args(argc, argv, c);
    if (rc != 0)
        return rc;
    return check_conf(c);
}

void syncconf_free(struct sync_conf *c)
{
    char **s[] = {&c->etcd,        &c->prefix,     &c->name,      &c->url,
                  &c->socket,      &c->token_file, &c->etcd_user, &c->etcd_password_file,
                  &c->etcd_cacert, &c->etcd_cert,  &c->etcd_key};
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        free(*s[i]);
        *s[i] = NULL;
    }
}
