/* lorad — peftcfg.h: the parser of a PEFT adapter_config.json (SPEC.md
 * 2.2 and 3).
 *
 * A PEFT LoraConfig as saved carries dozens of fields; lorad reads
 * peft_type (only "LORA"), r, lora_alpha, use_rslora, use_dora,
 * lora_dropout, lora_bias, rank_pattern and alpha_pattern, and ignores the
 * rest. A field PEFT always writes defaults as PEFT does when it is absent
 * or null (r 8, lora_alpha 8, the booleans false, lora_dropout 0, the
 * patterns empty).
 *
 * rank_pattern and alpha_pattern map keys to numbers; each key is a POSIX
 * extended regular expression compiled as ^(.*\.)?(KEY)$ and matched
 * against layer names, the first matching key in file order winning.
 * glibc's regcomp and regexec blow up on some keys (memory, time, stack),
 * so a key is first held to peftcfg_pattern_refusal()'s budget.
 *
 * Errors: LORAD_E_INVALID_ADAPTER naming the file, the field and what it
 * must be; LORAD_E_UNSUPPORTED_PEFT_TYPE for another peft_type;
 * LORAD_E_INTERNAL for out of memory.
 *
 * Ownership: peftcfg_parse() allocates the struct peftcfg and everything
 * it points to; peftcfg_free() frees it all. Nothing is kept of `text`.
 *
 * Thread-safety: a parsed peftcfg is immutable (regexec on its compiled
 * keys is reentrant), so any number of threads may read it; every function
 * is reentrant.
 */
#ifndef LORAD_PEFTCFG_H
#define LORAD_PEFTCFG_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include "errors.h"

/* The file name, which prefixes every message. */
#define PEFTCFG_FILE "adapter_config.json"
/* Largest r (and rank_pattern value, and profile max_rank) accepted. */
#define PEFTCFG_RANK_LIMIT 65536

struct peftcfg_pattern {
    char *key;    /* the regular expression as written in the file */
    double value; /* rank (integral, 1..PEFTCFG_RANK_LIMIT) or alpha (finite) */
    regex_t re;   /* ^(.*\.)?(KEY)$ */
};

struct peftcfg {
    int r;
    double lora_alpha;
    bool use_rslora, use_dora, lora_bias;
    double lora_dropout;
    size_t n_rank, n_alpha;
    struct peftcfg_pattern *rank_pattern;  /* [n_rank], file order */
    struct peftcfg_pattern *alpha_pattern; /* [n_alpha], file order */
};

/* Parses text[0..len) (no NUL needed): JSON (refused when a string holds
 * \u0000), then peft_type, then every used field, then the rule that
 * lora_bias excludes use_dora. Returns 0 and sets *out (the caller frees
 * it with peftcfg_free), or a negative lorad_err with *out NULL. */
int peftcfg_parse(const char *text, size_t len, struct peftcfg **out, struct lorad_error *err);

/* Frees *c and everything it owns; sets *c to NULL. Safe on NULL. */
void peftcfg_free(struct peftcfg **c);

/* The r and alpha of layer `name`: the values of the first rank_pattern /
 * alpha_pattern key matching it, else r / lora_alpha. *rank_from is the
 * rank_pattern key that gave r, or NULL when r came from the config's r. */
void peftcfg_layer(const struct peftcfg *c, const char *name, int *rank, double *alpha,
                   const char **rank_from);

/* Why pattern key `key` is refused before regcomp (a static phrase such as
 * "holds a back-reference, which lorad does not support"), or NULL when it
 * may be compiled. Refused: back-references; a lone trailing backslash;
 * an unmatched ')' (it would close the group the key is wrapped in);
 * groups nested more than 64 deep; more than 1024 regular-expression
 * nodes once repetitions are expanded (an interval multiplies its operand
 * by its upper bound); more than 8 expanded repetitions of an operand
 * that itself repeats ("(a*)*{9}"). Real PEFT keys count tens of nodes. */
const char *peftcfg_pattern_refusal(const char *key);

#endif
