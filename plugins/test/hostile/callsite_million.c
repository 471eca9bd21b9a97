/*
 * callsite_million: a raw-ABI plugin whose hostile_run registers
 * CALLSITE_MILLION distinct, valid event call sites ("million 0" ..
 * "million 999999"), built one after the other in one buffer (the host reads
 * a call site only during its emit), and counts the answers
 * (hostile_accepted_count / hostile_refused_count, as callsite_flood).
 */
#include "hostile_answers.h"

#include <stdio.h>

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info info = HOSTILE_INFO("callsite_million", "Test plugin: a million call sites");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

HOSTILE_START_STOP

#define CALLSITE_MILLION 1000000u

static uint32_t refused_count;
static uint32_t accepted_count;

TT_EXPORT uint32_t hostile_refused_count(void)
{
    return refused_count;
}

TT_EXPORT uint32_t hostile_accepted_count(void)
{
    return accepted_count;
}

TT_EXPORT void hostile_run(void)
{
    static const tt_str message_field[1] = {HOSTILE_STR("message")};
    static tt_callsite cs = HOSTILE_EVENT_SITE("million", "callsite_million", message_field);
    char name[32];
    uint32_t i;

    if (plugin_emit == NULL)
        return;
    for (i = 0; i < CALLSITE_MILLION; ++i) {
        tt_event ev = hostile_event(TT_EVENT_NEW_CALLSITE);
        cs.name.ptr = name;
        cs.name.len = (uint64_t)snprintf(name, sizeof name, "million %u", (unsigned)i);
        cs.id = 0;
        hostile_seal(&cs);
        ev.callsite = &cs;
        if (TT_STATUS_IS_ERROR(plugin_emit(plugin_ctx, &ev)))
            ++refused_count;
        else
            ++accepted_count;
    }
}
