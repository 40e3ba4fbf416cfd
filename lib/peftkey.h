/* lorad — peftkey.h: the tensor key forms of a PEFT adapter_model.safetensors
 * (SPEC.md 2.2).
 *
 * A key names a layer of the base model (its "stem", the module path as
 * PyTorch names it) and what the tensor is for that layer, optionally
 * behind the prefix "base_model.model.":
 *   <layer>.lora_A.weight                 [r, in]
 *   <layer>.lora_B.weight                 [out, r]
 *   <layer>.lora_B.bias                   [out] (lora_bias)
 *   <layer>.lora_magnitude_vector[.weight] [out] (DoRA)
 *   <layer>.weight, <layer>.bias          a modules_to_save replacement
 * Any other "lora_" tensor (lora_embedding_A, ...) is of no known form,
 * and so is a key that ends in neither ".weight" nor ".bias". Whether the
 * stem is a layer of the model is the caller's question.
 *
 * Ownership: nothing is allocated; the stem points into the caller's key.
 *
 * Thread-safety: pure functions.
 */
#ifndef LORAD_PEFTKEY_H
#define LORAD_PEFTKEY_H

#include <stdbool.h>
#include <stddef.h>

/* What a tensor is for its layer. The LoRA kinds come first, up to
 * PEFTKEY_MAG. */
enum peftkey_kind {
    PEFTKEY_A,      /* lora_A.weight */
    PEFTKEY_B,      /* lora_B.weight */
    PEFTKEY_B_BIAS, /* lora_B.bias */
    PEFTKEY_MAG,    /* lora_magnitude_vector (DoRA) */
    PEFTKEY_W,      /* modules_to_save weight */
    PEFTKEY_BIAS,   /* modules_to_save bias */
    PEFTKEY_KINDS
};

/* Splits `key` into its layer stem (*stem, *stem_len bytes: not
 * NUL-terminated) and its kind. Returns false for a key of no known form
 * (then the outputs are unspecified). */
bool peftkey_parse(const char *key, const char **stem, size_t *stem_len, enum peftkey_kind *kind);

#endif
