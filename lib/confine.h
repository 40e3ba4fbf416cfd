/* lorad — confine.h: opening a path confined beneath a directory.
 *
 * Every adapter file is opened relative to the adapter_dir fd, as "NAME"
 * or "NAME/FILE", with confine_open(). A symbolic link may point anywhere
 * beneath that directory (a sibling adapter's file, a Hugging Face cache
 * blob "../../blobs/<sha>") but never out of it, not even in passing
 * through "..", and never through an absolute target: openat2(2) with
 * RESOLVE_BENEATH cannot confine an absolute link, so it refuses one even
 * when it points inside. Magic links (/proc/self/fd/N) are refused too.
 *
 * Without openat2 (a kernel before 5.6, or a seccomp policy that answers
 * ENOSYS or EPERM) confine_open walks the path one component at a time
 * with O_NOFOLLOW: then every symbolic link, every "." or ".." component,
 * an empty component and an absolute path are refused (stricter than
 * openat2, never looser).
 *
 * The fd returned is what the caller reads: checking a path and then
 * opening it again would leave a window for a swap in between.
 *
 * Ownership: the caller closes the fd returned. Nothing is allocated.
 *
 * Thread-safety: reentrant; any thread may call these functions.
 */
#ifndef LORAD_CONFINE_H
#define LORAD_CONFINE_H

#include <stdbool.h>
#include <stddef.h>

/* Opens `path` (relative) beneath directory fd `dirfd` with open(2)
 * `flags` (O_CLOEXEC and O_NOCTTY are always added). Returns an fd, or a
 * negative errno: -EXDEV or -ELOOP when the path resolves outside dirfd
 * (see confine_escaped), -ENOENT, -ENOTDIR, -EACCES, ... as open(2). */
int confine_open(int dirfd, const char *path, int flags);

/* The path of the directory open on `fd` relative to the directory open
 * on `basefd`, as the kernel names it now (/proc/self/fd: no symbolic
 * link in it), into out[0..n). A caller that opened "NAME" (perhaps a
 * symbolic link) can then open "<that path>/FILE" and get the files of
 * the very directory it holds, whatever NAME points to meanwhile. Returns
 * 0, -EXDEV when fd is not beneath basefd (or is basefd), -ENAMETOOLONG,
 * or readlink(2)'s error (-ENOENT without /proc). */
int confine_relpath(int basefd, int fd, char *out, size_t n);

/* Whether errno value `e` (positive, as -confine_open()) means that the
 * path resolves outside the directory: a symbolic link leaving it, an
 * absolute one, or ".." above it. */
bool confine_escaped(int e);

#endif
