/* Test plugins written against abi.h alone, without a sender, so each can
 * break exactly one rule of the contract. RAW_ABI_VERSION, RAW_NAME and the
 * RAW_OMIT_* switches pick the breakage. */
#include <tracetunnel/abi.h>

#include <stddef.h>

#ifndef RAW_ABI_VERSION
#define RAW_ABI_VERSION TT_ABI_VERSION
#endif
#ifndef RAW_NAME
#define RAW_NAME "raw"
#endif
#ifndef RAW_START_RESULT
#define RAW_START_RESULT 0
#endif

TT_EXPORT const uint32_t tt_plugin_abi_version = RAW_ABI_VERSION;

static const tt_plugin_info raw_info = {
    sizeof(tt_plugin_info), 0, {RAW_NAME, sizeof(RAW_NAME) - 1}, {"0.1", 3}, {"test plugin", 11}};

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &raw_info;
}

static tt_emit_fn raw_emit;
static void *raw_ctx;

TT_EXPORT int32_t tt_plugin_start(const tt_host *host)
{
    raw_emit = host->emit;
    raw_ctx = host->ctx;
    return RAW_START_RESULT;
}

#ifndef RAW_OMIT_STOP
TT_EXPORT void tt_plugin_stop(void)
{
    raw_emit = NULL;
    raw_ctx = NULL;
}
#endif
