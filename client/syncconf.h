/* lorad — client/syncconf.h: lorad-sync's configuration (SPEC.md 12):
 * the command line, and a config file (--config FILE, a JSON object) that
 * may give the same keys; the command line wins over the file.
 *
 * Keys (option / file key): --etcd etcd, --prefix prefix, --name name,
 * --url url, --socket socket, --token-file token_file, --etcd-user
 * etcd_user, --etcd-password-file etcd_password_file, --etcd-cacert
 * etcd_cacert, --etcd-cert etcd_cert, --etcd-key etcd_key, --lease-ttl
 * lease_ttl (seconds, 2..86400, default 10), --resync-ms resync_ms
 * (default: a third of the TTL), --backoff-min-ms backoff_min_ms (default
 * 1000), --backoff-max-ms backoff_max_ms (default 30000). Required: etcd,
 * prefix, name, and exactly one of url and socket; user and password file
 * go together, as do cert and key; the name follows lorad's name rule. An
 * unknown key, a key of the wrong type or a number out of range is a usage
 * error. Messages go to stderr, "lorad-sync: ..." each.
 *
 * Ownership: the strings of struct sync_conf are malloc'd; free with
 * syncconf_free. Threads: main thread (it prints).
 */
#ifndef LORAD_CLIENT_SYNCCONF_H
#define LORAD_CLIENT_SYNCCONF_H

#define SYNCCONF_VERSION "0.1.0"

struct sync_conf {
    char *etcd, *prefix, *name, *url, *socket, *token_file;
    char *etcd_user, *etcd_password_file, *etcd_cacert, *etcd_cert, *etcd_key;
    long lease_ttl_s;    /* 10 */
    long resync_ms;      /* 0: a third of the lease TTL */
    long backoff_min_ms; /* 1000 */
    long backoff_max_ms; /* 30000 */
};

/* Fills *c (zeroed by the caller) from argv and the config file it names.
 * 0 ready, 1 when --help or --version was printed (exit 0), -1 on a usage
 * error (printed). */
int syncconf_parse(int argc, char **argv, struct sync_conf *c);
/* Frees the strings of *c and NULLs them. */
void syncconf_free(struct sync_conf *c);
/* The etcd password: the first line of the file at path (malloc'd). 0, or
 * -1 with the reason printed (unreadable, empty). */
int syncconf_read_secret(const char *path, char **out);

#endif
