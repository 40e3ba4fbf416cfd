/* lorad — errors.c: names and formatting of lorad errors (see errors.h). */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const err_names[] = {
    [0] = "ok",
    [-LORAD_E_INVALID_REQUEST] = "invalid_request",
    [-LORAD_E_UNAUTHORIZED] = "unauthorized",
    [-LORAD_E_FORBIDDEN_NAME] = "forbidden_name",
    [-LORAD_E_NOT_FOUND] = "not_found",
    [-LORAD_E_ADAPTER_NOT_FOUND] = "adapter_not_found",
    [-LORAD_E_VERSION_NOT_FOUND] = "version_not_found",
    [-LORAD_E_METHOD_NOT_ALLOWED] = "method_not_allowed",
    [-LORAD_E_INCOMPATIBLE_CONFIG] = "incompatible_config",
    [-LORAD_E_UNKNOWN_MODULE] = "unknown_module",
    [-LORAD_E_RANK_TOO_LARGE] = "rank_too_large",
    [-LORAD_E_SHAPE_MISMATCH] = "shape_mismatch",
    [-LORAD_E_CHECKSUM_MISMATCH] = "checksum_mismatch",
    [-LORAD_E_SWAP_IN_PROGRESS] = "swap_in_progress",
    [-LORAD_E_NO_HISTORY] = "no_history",
    [-LORAD_E_NO_CANARY] = "no_canary",
    [-LORAD_E_CANARY_ACTIVE] = "canary_active",
    [-LORAD_E_BODY_TOO_LARGE] = "body_too_large",
    [-LORAD_E_INVALID_ADAPTER] = "invalid_adapter",
    [-LORAD_E_UNSUPPORTED_PEFT_TYPE] = "unsupported_peft_type",
    [-LORAD_E_UNSUPPORTED_DTYPE] = "unsupported_dtype",
    [-LORAD_E_NON_FINITE_WEIGHTS] = "non_finite_weights",
    [-LORAD_E_RANK_MISMATCH] = "rank_mismatch",
    [-LORAD_E_UNKNOWN_TENSOR] = "unknown_tensor",
    [-LORAD_E_NOT_READY] = "not_ready",
    [-LORAD_E_DRAINING] = "draining",
    [-LORAD_E_OVERLOADED] = "overloaded",
    [-LORAD_E_INTERNAL] = "internal",
    [-LORAD_E_INVALID_MODEL] = "invalid_model",
    [-LORAD_E_INVALID_CONFIG] = "invalid_config",
    [-LORAD_E_NOT_DURABLE] = "not_durable",
    [-LORAD_E_URI_TOO_LONG] = "uri_too_long",
    [-LORAD_E_HEADERS_TOO_LARGE] = "headers_too_large",
    [-LORAD_E_SLOT_NOT_FOUND] = "slot_not_found",
    [-LORAD_E_TOO_MANY_SLOTS] = "too_many_slots",
    [-LORAD_E_MEMORY_LIMIT] = "memory_limit",
    [-LORAD_E_DEFAULT_SLOT] = "default_slot",
};

const char *lorad_err_name(int code)
{
    size_t i = (size_t)(code <= 0 ? -code : 0);
    if (code > 0 || i >= sizeof(err_names) / sizeof(err_names[0]) || !err_names[i])
        return "internal";
    return err_names[i];
}

int lorad_error_set(struct lorad_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

void lorad_error_prefix(struct lorad_error *err, const char *prefix)
{
    char tmp[LORAD_ERROR_MSG_MAX];
    size_t plen;
    if (!err || !prefix)
        return;
    memcpy(tmp, err->msg, sizeof(tmp));
    plen = strnlen(prefix, sizeof(err->msg) - 3);
    memcpy(err->msg, prefix, plen);
    memcpy(err->msg + plen, ": ", 2);
    memcpy(err->msg + plen + 2, tmp, sizeof(err->msg) - plen - 3);
    err->msg[sizeof(err->msg) - 1] = '\0';
}
