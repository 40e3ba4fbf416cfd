/* lorad — adapter.c: this file contains adapter_stage(), which turns a
 * PEFT LoRA adapter directory into a complete snapshot, and the /adapters
 * listing built on it (see adapter.h for the design).
 *
 * Staging runs as a pipeline of small steps over one `struct stage`, each
 * step a check class of SPEC.md 4 in the order SPEC gives, so the first
 * failing step is the error reported: name (directory and file opening,
 * confined beneath adapter_dir by confine.c), checksum (digest.c and its
 * memo), files and safetensors validity, config (peft_type and field types
 * by peftcfg.c, the compared fields by profile.c), tensor names (the key
 * forms of peftkey.c) and shapes, ranks, dtypes, values (conversion to f32
 * and the finiteness check in one pass, weights.c), then DoRA norms.
 *
 * Confinement is to adapter_dir, not to each adapter's own directory: the
 * directory is opened as "NAME" and its files as "DIR/FILE", where DIR is
 * the path of the directory NAME led to (confine_relpath: no symbolic link
 * in it), all relative to the adapter_dir fd, so a file may be a relative
 * symlink to anywhere
 * inside adapter_dir (a sibling adapter, a Hugging Face cache blob) and
 * nowhere else (SPEC 6). Each file is read only through the fd that
 * confined open returned; the safetensors image is mmap()ed from that very
 * fd and validated with st_parse(), so there is no window between the
 * confinement check and the read. Because the files are opened through
 * DIR and not through NAME, relinking NAME (the `ln -sfn v2 cur` way of
 * publishing a new version) cannot pair one version's config with another's
 * weights. DIR is checked to still be the directory first opened (same
 * device and inode) after both files are open, and everything is opened
 * again if it was renamed meanwhile (up to 3 times, then invalid_adapter).
 * Without /proc DIR is NAME itself, and then only a swap of NAME away and
 * back between the two checks could go unseen.
 */
#include "adapter.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "confine.h"
#include "digest.h"
#include "fileio.h"
#include "peftcfg.h"
#include "peftkey.h"
#include "safetensors.h"
#include "weights.h"

#define MODEL_FILE "adapter_model.safetensors"
#define PICKLE_FILE "adapter_model.bin"
#define CONFIG_MAX_BYTES (4u << 20)

/* ---- names ---- */

static bool name_char_ok(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool adapter_name_valid(const char *name)
{
    size_t i;

    if (!name || !((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') ||
                   (name[0] >= '0' && name[0] <= '9')))
        return false;
    for (i = 1; name[i]; i++)
        if (i > 127 || !name_char_ok(name[i]))
            return false;
    return true;
}

int adapter_open_dir(int adapter_dirfd, const char *name, int *dirfd_out, struct lorad_error *err)
{
    char ebuf[128];
    int fd;

    if (!dirfd_out)
        return lorad_error_set(err, LORAD_E_INTERNAL, "adapter_open_dir: bad arguments");
    *dirfd_out = -1;
    if (!adapter_name_valid(name))
        return lorad_error_set(err, LORAD_E_FORBIDDEN_NAME,
                               "adapter name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
    fd = confine_open(adapter_dirfd, name, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        *dirfd_out = fd;
        return 0;
    }
    if (confine_escaped(-fd))
        return lorad_error_set(err, LORAD_E_FORBIDDEN_NAME,
                               "adapter %s resolves outside adapter_dir", name);
    if (fd == -ENOENT || fd == -ENOTDIR)
        return lorad_error_set(err, LORAD_E_ADAPTER_NOT_FOUND,
                               "adapter %s: no such adapter directory", name);
    return lorad_error_set(err, LORAD_E_INTERNAL, "adapter %s: cannot open: %s", name,
                           strerror_r(-fd, ebuf, sizeof(ebuf)));
}

/* ---- the staging pipeline ---- */

struct plan_layer {
    const struct st_tensor *t[PEFTKEY_KINDS]; /* by kind */
    int rank;
    double alpha;
    double scaling;
    const char *rank_from; /* pattern key or NULL (config r) */
};

struct stage {
    const struct adapter_stage_args *a;
    const struct model *m;
    struct lorad_error *err;
    struct timespec t0;
    int dirfd, cfg_fd, st_fd;
    int cfg_errno, st_errno;
    char dir[PATH_MAX]; /* the directory's path beneath adapter_dir */
    void *map;
    size_t map_len;
    struct st_file *st;
    char sha[65];
    struct peftcfg *cfg;     /* NULL until parsed */
    struct plan_layer *plan; /* [nlayers] */
    bool *lora;              /* [nlayers]: layer has lora_A (stage_ranks) */
    struct profile *prof;    /* working copy, completed here */
    bool prof_partial;
    struct snapshot *snap;
};

static void stage_close_files(struct stage *s)
{
    if (s->cfg_fd >= 0)
        close(s->cfg_fd);
    if (s->st_fd >= 0)
        close(s->st_fd);
    if (s->dirfd >= 0)
        close(s->dirfd);
    s->cfg_fd = s->st_fd = s->dirfd = -1;
}

static void stage_cleanup(struct stage *s)
{
    st_close(&s->st);
    if (s->map && s->map_len)
        munmap(s->map, s->map_len);
    s->map = NULL;
    stage_close_files(s);
    peftcfg_free(&s->cfg);
    free(s->plan);
    s->plan = NULL;
    free(s->lora);
    s->lora = NULL;
    profile_free(&s->prof);
    snapshot_free(&s->snap);
}

/* Opens `file` of the adapter as "NAME/file" beneath adapter_dir
 * (confine.h). Returns an fd or -errno. */
static int open_adapter_file(const struct stage *s, const char *file, int flags)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", s->dir, file);

    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    return confine_open(s->a->adapter_dirfd, path, flags);
}

/* Opens the directory (which classifies the name: forbidden or not found)
 * and both files; a file that cannot be opened is recorded in *_errno.
 * The files are opened through the directory's own path beneath
 * adapter_dir (confine_relpath), not through NAME, so a NAME that is a
 * symbolic link relinked meanwhile cannot pair one version's config with
 * another's weights; without /proc, through NAME (and the check below). */
static int open_adapter_once(struct stage *s)
{
    int rc = adapter_open_dir(s->a->adapter_dirfd, s->a->name, &s->dirfd, s->err);
    int fd;

    if (rc < 0)
        return rc;
    if (confine_relpath(s->a->adapter_dirfd, s->dirfd, s->dir, sizeof(s->dir)) < 0)
        snprintf(s->dir, sizeof(s->dir), "%s", s->a->name);
    fd = open_adapter_file(s, PEFTCFG_FILE, O_RDONLY | O_NONBLOCK);
    s->cfg_fd = fd >= 0 ? fd : -1;
    s->cfg_errno = fd >= 0 ? 0 : -fd;
    fd = open_adapter_file(s, MODEL_FILE, O_RDONLY | O_NONBLOCK);
    s->st_fd = fd >= 0 ? fd : -1;
    s->st_errno = fd >= 0 ? 0 : -fd;
    return 0;
}

/* Whether the path the files were opened through still resolves to the
 * directory s->dirfd was opened on: a rename of that directory (or, without
 * /proc, a symlink swap of NAME) in between could pair one version's config
 * with another's weights. */
static bool adapter_dir_unchanged(const struct stage *s)
{
    struct stat now, then;
    int fd = confine_open(s->a->adapter_dirfd, s->dir, O_RDONLY | O_DIRECTORY);
    bool same;

    if (fd < 0)
        return false;
    same = fstat(fd, &now) == 0 && fstat(s->dirfd, &then) == 0 && now.st_dev == then.st_dev &&
           now.st_ino == then.st_ino;
    close(fd);
    return same;
}

#define STAGE_OPEN_TRIES 3

/* Step 1, name: the directory and both files, confined, all from one
 * version of the directory (opened again when NAME changed meanwhile). */
static int stage_open(struct stage *s)
{
    const char *file;

    for (int i = 0; i < STAGE_OPEN_TRIES; i++) {
        int rc = open_adapter_once(s);
        if (rc < 0)
            return rc;
        if (adapter_dir_unchanged(s))
            break;
        stage_close_files(s);
    }
    if (s->dirfd < 0)
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                               "adapter %s was replaced (renamed or relinked) while its files "
                               "were being opened, %d times in a row; try again",
                               s->a->name, STAGE_OPEN_TRIES);
    file = confine_escaped(s->cfg_errno)  ? PEFTCFG_FILE
           : confine_escaped(s->st_errno) ? MODEL_FILE
                                          : NULL;
    if (file)
        return lorad_error_set(s->err, LORAD_E_FORBIDDEN_NAME,
                               "adapter %s: %s resolves outside adapter_dir (a symbolic link "
                               "leaving it, or an absolute one)",
                               s->a->name, file);
    return 0;
}

/* Step 2, checksum: map the safetensors file (when there is one) and hash
 * it (or take the remembered digest). The snapshot always records it. */
static int stage_checksum(struct stage *s)
{
    struct stat st;
    char ebuf[128];

    if (s->st_fd < 0)
        return 0; /* reported by stage_files */
    if (fstat(s->st_fd, &st) < 0)
        return lorad_error_set(s->err, LORAD_E_INTERNAL, MODEL_FILE ": fstat: %s",
                               strerror_r(errno, ebuf, sizeof(ebuf)));
    if (!S_ISREG(st.st_mode))
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER, MODEL_FILE ": not a regular file");
    if (st.st_size > 0) {
        void *map =
            mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, s->st_fd, 0);
        if (map == MAP_FAILED)
            return lorad_error_set(s->err, LORAD_E_INTERNAL, MODEL_FILE ": mmap: %s",
                                   strerror_r(errno, ebuf, sizeof(ebuf)));
        s->map = map;
        s->map_len = (size_t)st.st_size;
    }
    if (digest_file_sha256(&st, s->map, s->map_len, s->sha) < 0)
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "sha256 failed");
    if (s->a->expected_sha256 && !digest_hex_equal(s->a->expected_sha256, s->sha))
        return lorad_error_set(s->err, LORAD_E_CHECKSUM_MISMATCH,
                               "sha256 of " MODEL_FILE " is %s but %.80s was expected", s->sha,
                               s->a->expected_sha256);
    return 0;
}

static int read_config(struct stage *s, char **text, size_t *len)
{
    int rc = fileio_read_fd(s->cfg_fd, CONFIG_MAX_BYTES, text, len);
    if (rc == -EINVAL || rc == -EFBIG)
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                               PEFTCFG_FILE ": %s (at most %u bytes)", fileio_strerror(rc),
                               CONFIG_MAX_BYTES);
    if (rc < 0)
        return lorad_error_set(s->err, LORAD_E_INTERNAL, PEFTCFG_FILE ": read: %s",
                               fileio_strerror(rc));
    return 0;
}

static int missing_file(struct stage *s, const char *file, int e)
{
    char ebuf[128];

    if (e == ENOENT || e == ENOTDIR)
        return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER, "adapter %s: %s is missing",
                               s->a->name, file);
    return lorad_error_set(s->err, LORAD_E_INTERNAL, "adapter %s: %s: %s", s->a->name, file,
                           strerror_r(e, ebuf, sizeof(ebuf)));
}

/* Step 3, files and safetensors validity, and step 4, config. */
static int stage_files(struct stage *s)
{
    char *text = NULL;
    size_t len = 0;
    int rc, fd;

    if (s->st_fd < 0 && (s->st_errno == ENOENT || s->st_errno == ENOTDIR)) {
        fd = open_adapter_file(s, PICKLE_FILE, O_RDONLY | O_NONBLOCK);
        if (fd >= 0) {
            close(fd);
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "adapter %s: " PICKLE_FILE " (pickle) is not supported; "
                                   "convert it to safetensors (PEFT: save_pretrained(..., "
                                   "safe_serialization=True)) as " MODEL_FILE,
                                   s->a->name);
        }
    }
    if (s->cfg_fd < 0)
        return missing_file(s, PEFTCFG_FILE, s->cfg_errno);
    if (s->st_fd < 0)
        return missing_file(s, MODEL_FILE, s->st_errno);
    rc = st_parse(s->map ? s->map : (const uint8_t *)"", s->map_len, MODEL_FILE, &s->st, s->err);
    if (rc < 0)
        return rc;
    if ((rc = read_config(s, &text, &len)) < 0)
        return rc;
    rc = peftcfg_parse(text, len, &s->cfg, s->err);
    free(text);
    return rc;
}

/* Step 4b: the compared fields against the profile's. */
static int stage_compat(struct stage *s)
{
    return profile_check_fields(s->a->profile, s->cfg, s->err);
}

/* A growing comma-separated list, truncated to fit an error message. */
struct namelist {
    char buf[224];
    size_t len;
    size_t count;
    bool cut; /* names left out; buf ends with ", ..." */
};

static void namelist_add(struct namelist *l, const char *name, size_t len)
{
    const size_t cap = sizeof(l->buf) - 6; /* room kept for ", ..." */
    size_t need = len + (l->len ? 2 : 0);

    /* skip duplicates (a layer named by several tensors) */
    for (const char *p = l->buf; l->len && p && *p;) {
        const char *e = strstr(p, ", ");
        size_t pl = e ? (size_t)(e - p) : strlen(p);
        if (pl == len && memcmp(p, name, len) == 0)
            return;
        p = e ? e + 2 : NULL;
    }
    l->count++;
    if (l->cut)
        return;
    if (l->len + need >= cap) {
        memcpy(l->buf + l->len, l->len ? ", ..." : "...", l->len ? 6 : 4);
        l->cut = true;
        return;
    }
    snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s%.*s", l->len ? ", " : "", (int)len,
             name);
    l->len += need;
}

/* Step 5a: every tensor key is known; every layer named exists and may
 * carry what it carries. Fills s->plan. */
static int stage_names(struct stage *s)
{
    struct namelist unknown_t = {0}, missing = {0}, untargeted = {0};
    const struct profile *p = s->a->profile;
    bool targets_known = profile_has_targets(p);
    char stem[1024];

    for (size_t i = 0; i < st_count(s->st); i++) {
        const struct st_tensor *t = st_get(s->st, i);
        const char *st_name;
        size_t sl;
        enum peftkey_kind k;
        int idx;

        if (!peftkey_parse(t->name, &st_name, &sl, &k)) {
            namelist_add(&unknown_t, t->name, strlen(t->name));
            continue;
        }
        if (sl >= sizeof(stem)) {
            namelist_add(&missing, st_name, sl);
            continue;
        }
        memcpy(stem, st_name, sl);
        stem[sl] = '\0';
        idx = model_find_layer(s->m, stem);
        if (idx < 0) {
            namelist_add(&missing, stem, sl);
            continue;
        }
        if (k <= PEFTKEY_MAG && targets_known && !p->targets[idx])
            namelist_add(&untargeted, stem, sl);
        if (s->plan[idx].t[k])
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "tensors %s and %s are the same tensor of layer %s",
                                   s->plan[idx].t[k]->name, t->name, stem);
        s->plan[idx].t[k] = t;
    }
    if (unknown_t.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_TENSOR,
                               "%zu tensor(s) of no PEFT LoRA form: %s", unknown_t.count,
                               unknown_t.buf);
    if (missing.count && untargeted.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_MODULE,
                               "%zu layer(s) not in the model: %s; %zu layer(s) not in the "
                               "profile's target set: %s",
                               missing.count, missing.buf, untargeted.count, untargeted.buf);
    if (missing.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_MODULE, "%zu layer(s) not in the model: %s",
                               missing.count, missing.buf);
    if (untargeted.count)
        return lorad_error_set(s->err, LORAD_E_UNKNOWN_MODULE,
                               "%zu layer(s) not in the profile's target set: %s", untargeted.count,
                               untargeted.buf);
    return 0;
}

/* Step 5b: lora_A with lora_B, DoRA magnitudes, lora_B.bias. */
static int stage_pairing(struct stage *s)
{
    for (size_t l = 0; l < s->m->nlayers; l++) {
        const struct plan_layer *pl = &s->plan[l];
        const char *name = s->m->layers[l].name;
        bool a = pl->t[PEFTKEY_A], b = pl->t[PEFTKEY_B];

        if (a != b)
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER, "layer %s: %s without %s", name,
                                   a ? "lora_A.weight" : "lora_B.weight",
                                   a ? "lora_B.weight" : "lora_A.weight");
        if (!a && (pl->t[PEFTKEY_B_BIAS] || pl->t[PEFTKEY_MAG]))
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "layer %s: %s without lora_A.weight and lora_B.weight", name,
                                   pl->t[PEFTKEY_MAG] ? "lora_magnitude_vector" : "lora_B.bias");
        if (a && s->cfg->use_dora && !pl->t[PEFTKEY_MAG])
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "layer %s: use_dora is true but lora_magnitude_vector (DoRA "
                                   "magnitude) is missing",
                                   name);
        if (pl->t[PEFTKEY_MAG] && !s->cfg->use_dora)
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "tensor %s: a DoRA magnitude but use_dora is false",
                                   pl->t[PEFTKEY_MAG]->name);
        if (pl->t[PEFTKEY_B_BIAS] && !s->cfg->lora_bias)
            return lorad_error_set(s->err, LORAD_E_INVALID_ADAPTER,
                                   "tensor %s: a lora_B bias but lora_bias is false",
                                   pl->t[PEFTKEY_B_BIAS]->name);
    }
    return 0;
}

static int want_shape(struct stage *s, const struct st_tensor *t, int ndim, uint64_t d0,
                      uint64_t d1, size_t l)
{
    char got[96];

    if (!t)
        return 0;
    if (t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1))
        return 0;
    st_shape_str(t, got, sizeof(got));
    if (ndim == 1)
        return lorad_error_set(s->err, LORAD_E_SHAPE_MISMATCH,
                               "tensor %s has shape %s but layer %s needs [%llu]", t->name, got,
                               s->m->layers[l].name, (unsigned long long)d0);
    return lorad_error_set(s->err, LORAD_E_SHAPE_MISMATCH,
                           "tensor %s has shape %s but layer %s needs [%llu, %llu]", t->name, got,
                           s->m->layers[l].name, (unsigned long long)d0, (unsigned long long)d1);
}

/* Per-layer r, alpha, scaling from the config and its patterns. */
static void layer_rank(struct stage *s, size_t l)
{
    struct plan_layer *pl = &s->plan[l];

    peftcfg_layer(s->cfg, s->m->layers[l].name, &pl->rank, &pl->alpha, &pl->rank_from);
    pl->scaling =
        s->cfg->use_rslora ? pl->alpha / sqrt((double)pl->rank) : pl->alpha / (double)pl->rank;
}

static int rank_mismatch(struct stage *s, const struct st_tensor *t, uint64_t got, size_t l)
{
    const struct plan_layer *pl = &s->plan[l];
    char from[200];

    if (pl->rank_from)
        snprintf(from, sizeof(from), "rank_pattern key \"%.150s\"", pl->rank_from);
    else
        snprintf(from, sizeof(from), "r");
    return lorad_error_set(s->err, LORAD_E_RANK_MISMATCH,
                           "tensor %s has rank %llu but layer %s has r=%d (from %s)", t->name,
                           (unsigned long long)got, s->m->layers[l].name, pl->rank, from);
}

/* Step 5c: shapes against the model, ranks against r. */
static int stage_shapes(struct stage *s)
{
    for (size_t l = 0; l < s->m->nlayers; l++) {
        const struct model_layer *L = &s->m->layers[l];
        struct plan_layer *pl = &s->plan[l];
        uint64_t in = (uint64_t)L->in_features, out = (uint64_t)L->out_features;
        const struct st_tensor *A = pl->t[PEFTKEY_A], *B = pl->t[PEFTKEY_B], *W = pl->t[PEFTKEY_W];
        int rc;

        if (A) {
            layer_rank(s, l);
            if (A->ndim != 2 || A->shape[1] != in)
                return want_shape(s, A, 2, (uint64_t)pl->rank, in, l);
            if (B->ndim != 2 || B->shape[0] != out)
                return want_shape(s, B, 2, out, (uint64_t)pl->rank, l);
            if (A->shape[0] != (uint64_t)pl->rank)
                return rank_mismatch(s, A, A->shape[0], l);
            if (B->shape[1] != (uint64_t)pl->rank)
                return rank_mismatch(s, B, B->shape[1], l);
        }
        if ((rc = want_shape(s, pl->t[PEFTKEY_B_BIAS], 1, out, 0, l)) < 0 ||
            (rc = want_shape(s, pl->t[PEFTKEY_MAG], 1, out, 0, l)) < 0)
            return rc;
        if (W && (rc = L->fan_in_fan_out ? want_shape(s, W, 2, in, out, l)
                                         : want_shape(s, W, 2, out, in, l)) < 0)
            return rc;
        if (pl->t[PEFTKEY_BIAS] && !L->has_bias)
            return lorad_error_set(s->err, LORAD_E_SHAPE_MISMATCH,
                                   "tensor %s: layer %s has no bias", pl->t[PEFTKEY_BIAS]->name,
                                   L->name);
        if ((rc = want_shape(s, pl->t[PEFTKEY_BIAS], 1, out, 0, l)) < 0)
            return rc;
    }
    return 0;
}

/* Step 6: ranks against max_rank; completes the profile's limits. */
static int stage_ranks(struct stage *s)
{
    const struct profile *p = s->a->profile;
    int largest = 0;
    bool any = false;

    for (size_t l = 0; l < s->m->nlayers; l++) {
        if (!s->plan[l].t[PEFTKEY_A])
            continue;
        any = true;
        s->lora[l] = true;
        if (s->plan[l].rank > largest)
            largest = s->plan[l].rank;
        if (profile_has_max_rank(p) && s->plan[l].rank > p->max_rank)
            return lorad_error_set(s->err, LORAD_E_RANK_TOO_LARGE,
                                   "layer %s: rank %d exceeds the limit %d; the config key "
                                   "max_rank raises the limit",
                                   s->m->layers[l].name, s->plan[l].rank, p->max_rank);
    }
    if (s->prof_partial && any)
        profile_complete_limits(s->prof, largest, s->lora);
    if (s->snap)
        s->snap->rank = largest;
    return 0;
}

/* Step 7: every tensor's dtype is one lorad converts. */
static int stage_dtypes(struct stage *s)
{
    for (size_t i = 0; i < st_count(s->st); i++) {
        const struct st_tensor *t = st_get(s->st, i);
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
            return lorad_error_set(s->err, LORAD_E_UNSUPPORTED_DTYPE,
                                   "tensor %s has dtype %s; only F32, F16 and BF16 are supported",
                                   t->name, st_dtype_name(t->dtype));
    }
    return 0;
}

/* Allocates and converts one tensor into *out (bytes accounted). */
static int take(struct stage *s, const struct st_tensor *t, float **out)
{
    *out = NULL;
    if (!t)
        return 0;
    if (t->nelems > SIZE_MAX / sizeof(float) ||
        !(*out = malloc((t->nelems ? t->nelems : 1) * sizeof(float))))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    s->snap->bytes += t->nelems * sizeof(float);
    return weights_to_f32(t, *out, s->err);
}

/* DoRA: layer l's magnitudes in dora_scale become its row scales. */
static int dora_scale(struct stage *s, size_t l)
{
    const struct model_layer *L = &s->m->layers[l];
    const struct snapshot_layer *sl = &s->snap->layers[l];
    const struct weights_dora d = {.A = sl->lora->A,
                                   .B = sl->lora->B,
                                   .W = sl->weight ? sl->weight : L->weight,
                                   .rank = (size_t)sl->lora->rank,
                                   .in = (size_t)L->in_features,
                                   .out = (size_t)L->out_features,
                                   .scaling = s->plan[l].scaling};

    return weights_dora_scale(&d, sl->lora->dora_scale, L->name, s->err);
}

static int stage_layer_values(struct stage *s, size_t l)
{
    const struct model_layer *L = &s->m->layers[l];
    struct plan_layer *pl = &s->plan[l];
    struct snapshot_layer *sl = &s->snap->layers[l];
    float *mag = NULL;
    int rc;

    if ((rc = take(s, pl->t[PEFTKEY_W], &sl->weight)) < 0 ||
        (rc = take(s, pl->t[PEFTKEY_BIAS], &sl->bias)) < 0)
        return rc;
    /* held [in][out] like the model's (model.h) */
    if (sl->weight && !L->fan_in_fan_out &&
        model_weight_transpose(&sl->weight, L->out_features, L->in_features))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    if (!pl->t[PEFTKEY_A])
        return 0;
    if (!(sl->lora = calloc(1, sizeof(*sl->lora))))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    sl->lora->rank = pl->rank;
    sl->lora->alpha = pl->alpha;
    sl->lora->scaling = (float)pl->scaling;
    if ((rc = take(s, pl->t[PEFTKEY_A], &sl->lora->A)) < 0 ||
        (rc = take(s, pl->t[PEFTKEY_B], &sl->lora->B)) < 0 ||
        (rc = take(s, pl->t[PEFTKEY_B_BIAS], &sl->lora->bias_B)) < 0 ||
        (rc = take(s, pl->t[PEFTKEY_MAG], &mag)) < 0) {
        free(mag);
        return rc;
    }
    sl->lora->dora_scale = mag; /* the magnitudes, overwritten in place, row by row */
    return mag ? dora_scale(s, l) : 0;
}

/* Step 8: values, converted and checked, into the snapshot. */
static int stage_values(struct stage *s)
{
    int rc;

    for (size_t l = 0; l < s->m->nlayers; l++)
        if ((rc = stage_layer_values(s, l)) < 0)
            return rc;
    return 0;
}

/* The completed profile's compared fields, from this adapter. */
static int complete_fields(struct stage *s)
{
    return s->prof_partial ? profile_complete_fields(s->prof, s->cfg, s->err) : 0;
}

static double elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The whole pipeline; leaves what it learned in *s (for describe). */
static int stage_run(struct stage *s)
{
    const struct profile *p = s->a->profile;
    int rc;

    s->prof_partial = profile_partial(p);
    if ((rc = stage_open(s)) < 0 || (rc = stage_checksum(s)) < 0 || (rc = stage_files(s)) < 0 ||
        (rc = stage_compat(s)) < 0)
        return rc;
    if (!(s->plan = calloc(s->m->nlayers ? s->m->nlayers : 1, sizeof(*s->plan))) ||
        !(s->lora = calloc(s->m->nlayers ? s->m->nlayers : 1, sizeof(*s->lora))) ||
        !(s->snap = snapshot_new(s->m->nlayers)) || !(s->prof = profile_dup(p)))
        return lorad_error_set(s->err, LORAD_E_INTERNAL, "out of memory");
    if ((rc = stage_names(s)) < 0 || (rc = stage_pairing(s)) < 0 || (rc = stage_shapes(s)) < 0 ||
        (rc = stage_ranks(s)) < 0 || (rc = stage_dtypes(s)) < 0 || (rc = stage_values(s)) < 0 ||
        (rc = complete_fields(s)) < 0)
        return rc;
    snprintf(s->snap->name, sizeof(s->snap->name), "%s", s->a->name);
    s->snap->lora_alpha = s->cfg->lora_alpha;
    memcpy(s->snap->sha256, s->sha, sizeof(s->sha));
    return 0;
}

static void stage_init(struct stage *s, const struct adapter_stage_args *a, struct lorad_error *err)
{
    memset(s, 0, sizeof(*s));
    s->a = a;
    s->m = a->model;
    s->err = err;
    s->dirfd = s->cfg_fd = s->st_fd = -1;
    clock_gettime(CLOCK_MONOTONIC, &s->t0);
}

int adapter_stage(const struct adapter_stage_args *a, struct snapshot **snap_out,
                  struct profile **profile_out, struct lorad_error *err)
{
    struct stage s;
    int rc;

    if (snap_out)
        *snap_out = NULL;
    if (profile_out)
        *profile_out = NULL;
    if (!a || !a->model || !a->profile || !snap_out || !profile_out ||
        a->profile->nlayers != a->model->nlayers)
        return lorad_error_set(err, LORAD_E_INTERNAL, "adapter_stage: bad arguments");
    stage_init(&s, a, err);
    if ((rc = stage_run(&s)) < 0) {
        if (err && err->code == 0)
            lorad_error_set(err, rc, "staging failed");
        stage_cleanup(&s);
        return rc;
    }
    clock_gettime(CLOCK_REALTIME, &s.snap->loaded_at);
    s.snap->stage_ms = elapsed_ms(&s.t0);
    *snap_out = s.snap;
    s.snap = NULL;
    if (s.prof_partial) {
        *profile_out = s.prof;
        s.prof = NULL;
    }
    stage_cleanup(&s);
    return 0;
}

/* ---- GET /adapters ---- */

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Whether directory `name` beneath dirfd holds an adapter_config.json or
 * an adapter_model.* entry (even a broken one): the other directories of
 * adapter_dir (a Hugging Face cache's blobs, refs, models--*) are not
 * adapters and are not listed (SPEC 6). A name that cannot be opened
 * confined is listed, so staging reports why. */
static bool looks_like_adapter(int dirfd, const char *name)
{
    int fd = confine_open(dirfd, name, O_RDONLY | O_DIRECTORY);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    bool found = false;

    if (!d) {
        if (fd >= 0)
            close(fd);
        return true;
    }
    while (!found && (de = readdir(d)))
        found =
            strcmp(de->d_name, PEFTCFG_FILE) == 0 || strncmp(de->d_name, "adapter_model.", 14) == 0;
    closedir(d);
    return found;
}

/* Valid adapter directory names under dirfd, sorted; NULL on OOM. */
static char **list_dirs(int dirfd, size_t *n_out)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;

    *n_out = 0;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return calloc(1, sizeof(char *));
    }
    while ((de = readdir(d))) {
        struct stat st;
        if (!adapter_name_valid(de->d_name) || fstatat(dirfd, de->d_name, &st, 0) < 0 ||
            !S_ISDIR(st.st_mode) || !looks_like_adapter(dirfd, de->d_name))
            continue;
        if (n + 1 >= cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(names, nc * sizeof(*nn));
            if (!nn)
                goto fail;
            names = nn;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name)))
            goto fail;
        n++;
    }
    closedir(d);
    if (!names)
        return calloc(1, sizeof(char *));
    qsort(names, n, sizeof(*names), cmp_str);
    *n_out = n;
    return names;
fail:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return NULL;
}

/* The stem of tensor i of s->st when it is a lora_A tensor, else NULL
 * (*len its length; not NUL-terminated). */
static const char *lora_a_stem(const struct stage *s, size_t i, size_t *len)
{
    const char *stem;
    enum peftkey_kind kind;

    if (!peftkey_parse(st_get(s->st, i)->name, &stem, len, &kind) || kind != PEFTKEY_A)
        return NULL;
    return stem;
}

/* The LoRA layers the adapter names (its lora_A tensors), read from the
 * safetensors header whatever staging found wrong after it: the model's
 * layers in model order, then names the model lacks in file order. An
 * adapter whose file did not parse lists none. */
static int describe_layers(const struct stage *s, cJSON *layers)
{
    const struct model *m = s->m;
    char name[1024];
    size_t len;
    const char *stem;

    if (!s->st)
        return 0;
    for (size_t l = 0; l < m->nlayers; l++)
        for (size_t i = 0; i < st_count(s->st); i++)
            if ((stem = lora_a_stem(s, i, &len)) && strlen(m->layers[l].name) == len &&
                memcmp(m->layers[l].name, stem, len) == 0) {
                if (!cJSON_AddItemToArray(layers, cJSON_CreateString(m->layers[l].name)))
                    return -1;
                break;
            }
    for (size_t i = 0; i < st_count(s->st); i++) {
        if (!(stem = lora_a_stem(s, i, &len)) || len >= sizeof(name))
            continue;
        memcpy(name, stem, len);
        name[len] = '\0';
        if (model_find_layer(m, name) < 0 &&
            !cJSON_AddItemToArray(layers, cJSON_CreateString(name)))
            return -1;
    }
    return 0;
}

static cJSON *describe_one(int adapter_dirfd, const char *name, const struct model *m,
                           const struct profile *profile)
{
    struct adapter_stage_args a = {adapter_dirfd, name, NULL, m, profile};
    struct lorad_error err = {0, ""};
    struct stage s;
    cJSON *o = cJSON_CreateObject(), *layers, *e;
    int rc;

    if (!o)
        return NULL;
    stage_init(&s, &a, &err);
    rc = stage_run(&s);
    if (!cJSON_AddStringToObject(o, "name", name))
        goto fail;
    if (s.cfg) {
        if (!cJSON_AddNumberToObject(o, "r", s.cfg->r) ||
            !cJSON_AddNumberToObject(o, "lora_alpha", s.cfg->lora_alpha))
            goto fail;
    } else if (!cJSON_AddNullToObject(o, "r") || !cJSON_AddNullToObject(o, "lora_alpha")) {
        goto fail;
    }
    if (!(layers = cJSON_AddArrayToObject(o, "layers")))
        goto fail;
    if (describe_layers(&s, layers) < 0)
        goto fail;
    if (!cJSON_AddBoolToObject(o, "compatible", rc == 0))
        goto fail;
    if (rc == 0) {
        if (!cJSON_AddNullToObject(o, "error"))
            goto fail;
    } else {
        if (!(e = cJSON_AddObjectToObject(o, "error")) ||
            !cJSON_AddStringToObject(e, "code", lorad_err_name(rc)) ||
            !cJSON_AddStringToObject(e, "message", err.msg))
            goto fail;
    }
    stage_cleanup(&s);
    return o;
fail:
    stage_cleanup(&s);
    cJSON_Delete(o);
    return NULL;
}

cJSON *adapter_describe_all(int adapter_dirfd, const struct model *m, const struct profile *profile)
{
    struct profile *empty = NULL;
    cJSON *arr = NULL;
    char **names;
    size_t n = 0;

    if (!m)
        return NULL;
    if (!profile) {
        if (profile_from_config(m, 0, NULL, 0, &empty, NULL) < 0)
            return NULL;
        profile = empty;
    }
    if (!(names = list_dirs(adapter_dirfd, &n)))
        goto done;
    if (!(arr = cJSON_CreateArray()))
        goto done;
    for (size_t i = 0; i < n; i++) {
        cJSON *o = describe_one(adapter_dirfd, names[i], m, profile);
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            arr = NULL;
            goto done;
        }
    }
done:
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    profile_free(&empty);
    return arr;
}
