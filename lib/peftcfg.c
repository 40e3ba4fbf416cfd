/* lorad — peftcfg.c: this file contains the adapter_config.json parser
 * and the budget that keeps hostile rank_pattern / alpha_pattern keys away
 * from glibc's regcomp (see peftcfg.h).
 *
 * Parsing goes JSON text check (\u0000), cJSON, peft_type, then each used
 * field in a fixed order (r, lora_alpha, use_rslora, use_dora, lora_bias,
 * lora_dropout, rank_pattern, alpha_pattern), so the first wrong field is
 * the one reported. Each pattern entry is complete (key copied and
 * compiled) before it is counted, so peftcfg_free() frees exactly the
 * entries counted, also after a failure half-way.
 */
#include "peftcfg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jsontext.h"

#define PEFT_DEFAULT_R 8
#define PEFT_DEFAULT_ALPHA 8.0

/* ---- the pattern budget ---- */

/* glibc's regcomp copies a subexpression once per count of a bounded
 * repetition, so "(a{999}){999}" asks for a million parse-tree nodes and
 * gigabytes of memory; its epsilon-closure pass takes time exponential in
 * the copies of a repeated repetition ("((a*)*){25}": 45 s; "j**{20}":
 * 1.3 s); its matcher recurses without limit on some back-references. All
 * found by fuzz_adapter_config. So before regcomp a key is refused when it
 * holds a back-reference (\1 to \9), when a conservative count of the
 * nodes it expands to passes PATTERN_NODE_LIMIT (an atom is one node, an
 * interval multiplies its operand by its upper bound, the lower bound + 1
 * when open, '*', '+' and '?' by two, a group counts its branches' sum), or
 * when its expanded form holds more than PATTERN_NESTED_LIMIT repetitions
 * of an operand that itself holds a repetition ("j**{10}" holds 11). Real
 * PEFT keys ("layers\.3\.q_proj", "model.*attn", "(\w+\.)*proj") count
 * tens of nodes and at most one such repetition. */
#define PATTERN_NODE_LIMIT 1024
#define PATTERN_NESTED_LIMIT 8
#define PATTERN_MAX_DEPTH 64
#define PATTERN_STR_(x) #x
#define PATTERN_STR(x) PATTERN_STR_(x)

/* What peftcfg_pattern_refusal counts, for a sequence of operands (a group's
 * branches so far) and for its last operand. */
struct pattern_count {
    size_t nodes, last_nodes;   /* expanded parse-tree nodes */
    size_t nested, last_nested; /* expanded repetitions of repeated operands */
    bool reps, last_reps;       /* holds a repetition at all */
};

/* Appends an operand to c. */
static void pattern_add(struct pattern_count *c, size_t nodes, size_t nested, bool reps)
{
    c->nodes += nodes;
    c->last_nodes = nodes;
    c->nested += nested;
    c->last_nested = nested;
    c->reps = c->reps || reps;
    c->last_reps = reps;
}

/* Applies a repetition of upper bound `factor` to c's last operand:
 * `factor` copies of it, plus the repetition node. */
static void pattern_repeat(struct pattern_count *c, size_t factor)
{
    size_t nodes, nested;

    /* the counts are <= their limits here, so this cannot overflow */
    if (factor > PATTERN_NODE_LIMIT)
        factor = PATTERN_NODE_LIMIT + 1;
    nodes = c->last_nodes * factor + 1;
    nested = c->last_nested * factor + (c->last_reps ? 1 : 0);
    c->nodes += nodes - c->last_nodes;
    c->nested += nested - c->last_nested;
    c->last_nodes = nodes;
    c->last_nested = nested;
    c->reps = c->last_reps = true;
}

/* The decimal count at *s (saturated past PATTERN_NODE_LIMIT); advances *s. */
static size_t pattern_decimal(const char **s, bool *any)
{
    size_t v = 0;

    *any = false;
    for (; **s >= '0' && **s <= '9'; (*s)++) {
        *any = true;
        if (v <= PATTERN_NODE_LIMIT)
            v = v * 10 + (size_t)(**s - '0');
    }
    return v;
}

/* When *p is at the '{' of an interval "{m}", "{m,}", "{m,n}" or "{,n}":
 * true, *bound its upper bound (at least 1) and *p moved past it. Else
 * false and *p unmoved. */
static bool pattern_interval(const char **p, size_t *bound)
{
    const char *s = *p + 1;
    bool any_m, any_n = false, comma = false;
    size_t m = pattern_decimal(&s, &any_m), n = m;

    if (*s == ',') {
        comma = true;
        s++;
        n = pattern_decimal(&s, &any_n);
    }
    if (*s != '}' || (!any_m && !any_n))
        return false;
    *p = s + 1;
    if (comma && !any_n)
        n = m + 1;
    *bound = n > m ? n : m > 0 ? m : 1;
    return true;
}

/* *p at '['; moves *p past the bracket expression's closing ']'. */
static void pattern_skip_bracket(const char **p)
{
    const char *s = *p + 1;

    if (*s == '^')
        s++;
    if (*s == ']')
        s++;
    while (*s && *s != ']') {
        if (s[0] == '[' && (s[1] == ':' || s[1] == '.' || s[1] == '=')) {
            char close = s[1];

            for (s += 2; *s && !(s[0] == close && s[1] == ']'); s++)
                ;
            if (*s)
                s += 2;
        } else {
            s++;
        }
    }
    *p = *s ? s + 1 : s;
}

/* Why the key is refused before regcomp, or NULL when it may be compiled. */
const char *peftcfg_pattern_refusal(const char *key)
{
    struct pattern_count frame[PATTERN_MAX_DEPTH + 1] = {{0}};
    size_t depth = 0, factor;
    const char *s = key;

    while (*s) {
        struct pattern_count *c = &frame[depth];

        switch (*s) {
        case '(':
            if (depth == PATTERN_MAX_DEPTH)
                return "nests groups more than " PATTERN_STR(PATTERN_MAX_DEPTH) " deep";
            frame[++depth] = (struct pattern_count){0};
            s++;
            continue;
        case '|':
            c->last_nodes = c->last_nested = 0;
            c->last_reps = false;
            s++;
            continue;
        case ')':
            /* unmatched, it would close the group lorad wraps the key in */
            if (depth == 0)
                return "has an unmatched ')'";
            s++;
            depth--;
            pattern_add(&frame[depth], c->nodes + 1, c->nested, c->reps);
            c = &frame[depth];
            break;
        case '*':
        case '?':
        case '+':
            s++;
            pattern_repeat(c, 2);
            break;
        case '{':
            if (pattern_interval(&s, &factor)) {
                pattern_repeat(c, factor);
                break;
            }
            s++; /* not an interval: a literal '{' */
            pattern_add(c, 1, 0, false);
            break;
        case '[':
            pattern_skip_bracket(&s);
            pattern_add(c, 1, 0, false);
            break;
        case '\\':
            if (s[1] >= '1' && s[1] <= '9')
                return "holds a back-reference, which lorad does not support";
            if (s[1] == '\0')
                return "ends with a lone backslash";
            s += 2;
            pattern_add(c, 1, 0, false);
            break;
        default:
            s++;
            pattern_add(c, 1, 0, false);
            break;
        }
        if (c->nodes > PATTERN_NODE_LIMIT || c->last_nodes > PATTERN_NODE_LIMIT)
            return "expands to more than " PATTERN_STR(
                PATTERN_NODE_LIMIT) " regular-expression nodes (its repetitions multiply)";
        if (c->nested > PATTERN_NESTED_LIMIT)
            return "repeats a repeated operand more than " PATTERN_STR(
                PATTERN_NESTED_LIMIT) " times once expanded (as in \"(a*)*{9}\")";
    }
    return NULL;
}

/* ---- fields ---- */

static int cfg_bad(struct lorad_error *err, const char *field, const char *want)
{
    return lorad_error_set(err, LORAD_E_INVALID_ADAPTER, PEFTCFG_FILE ": %s must be %s", field,
                           want);
}

/* A bool field; missing or null = PEFT's default false. */
static int cfg_bool(const cJSON *root, const char *field, bool *out, struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);

    *out = false;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return cfg_bad(err, field, "true or false");
    *out = cJSON_IsTrue(v);
    return 0;
}

static int cfg_number(const cJSON *root, const char *field, double dflt, double *out,
                      struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);

    *out = dflt;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return cfg_bad(err, field, "a finite number");
    *out = v->valuedouble;
    return 0;
}

static bool is_rank_value(double v)
{
    return isfinite(v) && v >= 1 && v <= PEFTCFG_RANK_LIMIT && v == floor(v);
}

static void patterns_free(struct peftcfg_pattern *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        regfree(&p[i].re);
        free(p[i].key);
    }
    free(p);
}

/* Fills *q from the member `it` of `field`: its value checked, its key
 * held to the budget, copied and compiled as ^(.*\.)?(KEY)$. On failure
 * *q holds nothing allocated. */
static int pattern_entry(const char *field, const cJSON *it, bool ranks, struct peftcfg_pattern *q,
                         struct lorad_error *err)
{
    size_t len = strlen(it->string) + 16;
    char ebuf[128], *re;
    const char *why;
    int rc;

    if (!cJSON_IsNumber(it) ||
        (ranks ? !is_rank_value(it->valuedouble) : !isfinite(it->valuedouble)))
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER, PEFTCFG_FILE ": %s[\"%s\"] must be %s",
                               field, it->string, ranks ? "a positive integer" : "a finite number");
    if ((why = peftcfg_pattern_refusal(it->string)))
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER, PEFTCFG_FILE ": %s key \"%s\" %s",
                               field, it->string, why);
    if (!(re = malloc(len)))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    snprintf(re, len, "^(.*\\.)?(%s)$", it->string);
    rc = regcomp(&q->re, re, REG_EXTENDED | REG_NOSUB);
    free(re);
    if (rc != 0) {
        regerror(rc, NULL, ebuf, sizeof(ebuf));
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                               PEFTCFG_FILE ": %s key \"%s\" is not a valid regular "
                                            "expression: %s",
                               field, it->string, ebuf);
    }
    if (!(q->key = strdup(it->string))) {
        regfree(&q->re);
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    }
    q->value = it->valuedouble;
    return 0;
}

/* rank_pattern / alpha_pattern: object key -> number, in file order. */
static int cfg_patterns(const cJSON *root, const char *field, bool ranks,
                        struct peftcfg_pattern **out, size_t *nout, struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field), *it;
    size_t n = 0;
    int rc;

    *out = NULL;
    *nout = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsObject(v))
        return cfg_bad(err, field, "an object");
    cJSON_ArrayForEach(it, v) n++;
    if (n == 0)
        return 0;
    if (!(*out = calloc(n, sizeof(**out))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    cJSON_ArrayForEach(it, v)
    {
        if ((rc = pattern_entry(field, it, ranks, &(*out)[*nout], err)) < 0)
            return rc;
        (*nout)++;
    }
    return 0;
}

static int config_fields(const cJSON *root, struct peftcfg *c, struct lorad_error *err)
{
    double r;
    int rc;

    if ((rc = cfg_number(root, "r", PEFT_DEFAULT_R, &r, err)) < 0)
        return rc;
    if (!is_rank_value(r))
        return cfg_bad(err, "r", "a positive integer");
    c->r = (int)r;
    if ((rc = cfg_number(root, "lora_alpha", PEFT_DEFAULT_ALPHA, &c->lora_alpha, err)) < 0 ||
        (rc = cfg_bool(root, "use_rslora", &c->use_rslora, err)) < 0 ||
        (rc = cfg_bool(root, "use_dora", &c->use_dora, err)) < 0 ||
        (rc = cfg_bool(root, "lora_bias", &c->lora_bias, err)) < 0 ||
        (rc = cfg_number(root, "lora_dropout", 0.0, &c->lora_dropout, err)) < 0 ||
        (rc = cfg_patterns(root, "rank_pattern", true, &c->rank_pattern, &c->n_rank, err)) < 0 ||
        (rc = cfg_patterns(root, "alpha_pattern", false, &c->alpha_pattern, &c->n_alpha, err)) < 0)
        return rc;
    if (c->lora_bias && c->use_dora)
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                               PEFTCFG_FILE ": lora_bias with use_dora: PEFT does not support "
                                            "lora_bias with DoRA");
    return 0;
}

/* peft_type, then the fields. */
static int config_root(const cJSON *root, struct peftcfg *c, struct lorad_error *err)
{
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "peft_type");

    if (!pt)
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER, PEFTCFG_FILE ": peft_type is missing");
    if (!cJSON_IsString(pt))
        return cfg_bad(err, "peft_type", "a string");
    if (strcmp(pt->valuestring, "LORA") != 0)
        return lorad_error_set(err, LORAD_E_UNSUPPORTED_PEFT_TYPE,
                               "peft_type \"%.64s\" is not supported (only LORA)", pt->valuestring);
    return config_fields(root, c, err);
}

int peftcfg_parse(const char *text, size_t len, struct peftcfg **out, struct lorad_error *err)
{
    struct peftcfg *c = NULL;
    cJSON *root = NULL;
    int rc;

    if (!out || (!text && len))
        return lorad_error_set(err, LORAD_E_INTERNAL, "peftcfg_parse: bad arguments");
    *out = NULL;
    if (json_has_nul_escape(text, len))
        return lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                               PEFTCFG_FILE ": a string contains a NUL character (\\u0000)");
    root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        rc = lorad_error_set(err, LORAD_E_INVALID_ADAPTER,
                             PEFTCFG_FILE " is not a valid JSON object");
        goto fail;
    }
    if (!(c = calloc(1, sizeof(*c)))) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    if ((rc = config_root(root, c, err)) < 0)
        goto fail;
    cJSON_Delete(root);
    *out = c;
    return 0;
fail:
    peftcfg_free(&c);
    cJSON_Delete(root);
    return rc;
}

void peftcfg_free(struct peftcfg **cp)
{
    struct peftcfg *c;

    if (!cp || !*cp)
        return;
    c = *cp;
    patterns_free(c->rank_pattern, c->n_rank);
    patterns_free(c->alpha_pattern, c->n_alpha);
    free(c);
    *cp = NULL;
}

/* The first key of p[0..n) matching name, in file order, or NULL. */
static const struct peftcfg_pattern *pattern_match(const struct peftcfg_pattern *p, size_t n,
                                                   const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (regexec(&p[i].re, name, 0, NULL, 0) == 0)
            return &p[i];
    return NULL;
}

void peftcfg_layer(const struct peftcfg *c, const char *name, int *rank, double *alpha,
                   const char **rank_from)
{
    const struct peftcfg_pattern *rp = pattern_match(c->rank_pattern, c->n_rank, name);
    const struct peftcfg_pattern *ap = pattern_match(c->alpha_pattern, c->n_alpha, name);

    *rank = rp ? (int)rp->value : c->r;
    *rank_from = rp ? rp->key : NULL;
    *alpha = ap ? ap->value : c->lora_alpha;
}
