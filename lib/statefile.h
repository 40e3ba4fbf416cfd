/* lorad — statefile.h: the persistent serving state (SPEC.md 8).
 *
 * What lorad served survives restarts in one small JSON file: for every
 * slot its stable, canary with its share, history (adapter name, version,
 * sha256 each) and profile; generation and a version floor. The file is rewritten after every
 * commit, atomically: write a temp file in the same directory, fsync it,
 * rename it over the old one, fsync the directory. A crash at any instant
 * leaves the old or the new file, never a broken one.
 *
 * Version numbers are never issued twice: the file records
 * `next_version` = the in-memory next version + 1 (one reservation ahead).
 * The daemon writes the file once at start before serving and lets at most
 * one version-issuing commit be in flight until its write finished, so any
 * version a client could have seen is below the recorded floor.
 *
 * Rendering (statefile_render) is pure and cheap (writer thread); reading,
 * writing and restoring do file I/O and run off the loop thread or at
 * start-up.
 */
#ifndef LORAD_STATEFILE_H
#define LORAD_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapter.h"
#include "errors.h"
#include "model.h"
#include "serving.h"

/* The serving state of every slot as JSON text, malloc'd (caller frees),
 * or NULL on out-of-memory: the persisted accessors (serving.h), so a
 * change held pending (serving_hold) is included. A slot without a
 * profile of its own is written with `profile` (may be NULL: none yet).
 * Writer thread. */
char *statefile_render(const struct serving *s, const struct profile *profile,
                       const struct model *m);

/* Atomically replaces `path` with `text`, mode 0600 (fileio_write_atomic:
 * write "<path>.tmp", fsync, rename, fsync of the directory).
 * LORAD_E_INTERNAL on failure, the message naming the path, the failed step
 * and the errno text (the old file is left intact). Any thread, but writes
 * to one path must be serialised by the caller (they share the temp
 * name). */
int statefile_write(const char *path, const char *text, size_t len, struct lorad_error *err);

/* The two phases of statefile_write, for durable before visible (SPEC 8):
 * statefile_stage writes and fsyncs "<path>.tmp" (fileio_stage);
 * LORAD_E_NOT_DURABLE on failure ("state file <path>.tmp: <step>:
 * <strerror>"), `path` untouched. statefile_publish renames it over path
 * and fsyncs the directory (fileio_publish): 0; LORAD_E_NOT_DURABLE when
 * the rename failed (the temp file is removed, path still the old file);
 * 1 when only the directory fsync failed (path is the new file, err says
 * why: the change stands but its rename may not survive a crash). Same
 * threads and serialisation as statefile_write. */
int statefile_stage(const char *path, const char *text, size_t len, struct lorad_error *err);
int statefile_publish(const char *path, struct lorad_error *err);

/* Result of a restore attempt. */
enum statefile_restored {
    STATEFILE_NONE = -1,    /* no state file: /status "restored": null */
    STATEFILE_FAILED = 0,   /* unreadable, or an adapter changed/missing */
    STATEFILE_RESTORED = 1, /* everything re-staged and verified */
};

/* Start-up: reads `path`; if present, re-stages every recorded snapshot
 * from adapter_dirfd with its recorded sha256 as expected checksum and
 * installs stable, canary, history, generation and next version into `s`
 * (serving_restore). *profile is replaced by the recorded profile when the
 * file has one. On any failure nothing is installed, the reason goes into
 * err, and STATEFILE_FAILED is returned; the caller then starts from
 * initial_adapter. Even on failure the recorded version floor is applied
 * (serving_restore with empty state) when the file was readable, so
 * versions are never reissued. */
enum statefile_restored statefile_restore(const char *path, int adapter_dirfd,
                                          const struct model *m, struct serving *s,
                                          struct profile **profile, struct lorad_error *err);

/* How statefile_restore_slots runs and reports. */
struct statefile_restore_opts {
    /* Runs task(arg, i) for every i < n, possibly in parallel, and returns
     * when all are done (NULL: one after the other on this thread). */
    void (*run)(void *run_arg, size_t n, void (*task)(void *arg, size_t i), void *arg);
    /* Told of every slot that did not restore as recorded (NULL: nobody);
     * the slot name and why. */
    void (*on_slot_failed)(void *run_arg, const char *slot, const struct lorad_error *why);
    void *run_arg;
    /* out: slot default restored as recorded (false also without a file) */
    bool default_restored;
};

/* statefile_restore with slots (SPEC 8): every slot of the file restores
 * on its own, one task per slot. Slot default as statefile_restore says
 * (all or nothing; *profile takes its recorded profile); any other slot
 * whose files changed comes back on the base model with the history
 * entries that still match, and its profile. STATEFILE_FAILED (err: the
 * first failure) when any slot failed, the others restored all the same.
 * statefile_restore is this with opts all NULL. */
enum statefile_restored statefile_restore_slots(const char *path, int adapter_dirfd,
                                                const struct model *m, struct serving *s,
                                                struct profile **profile,
                                                struct statefile_restore_opts *opts,
                                                struct lorad_error *err);

#endif
