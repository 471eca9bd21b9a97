/*
 * bad_context: a raw-ABI plugin whose hostile_run calls emit with contexts
 * the host never handed out: NULL, its own ctx shifted by one byte, a
 * pointer to its own static data, its ctx with every bit flipped, and its ctx
 * with another use count in the same slot (what a stale ctx of an earlier
 * instance looks like). Then one valid call site and event ("still alive").
 * The answers are kept for the test (hostile_answers.h).
 */
#include "hostile_answers.h"

#include <stdint.h>

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info info = HOSTILE_INFO("bad_context", "Test plugin: emits with invalid contexts");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

HOSTILE_START_STOP

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static tt_callsite alive_site = HOSTILE_EVENT_SITE("still alive", "bad_context", message_field);
static uint64_t some_static_data[8];

/* bad_context: the invalid contexts hostile_run tries, in order. */
#define BAD_CONTEXT_PROBES 5

TT_EXPORT void hostile_run(void)
{
    tt_event ev;
    tt_field_value value;
    const uintptr_t own = (uintptr_t)plugin_ctx;
    void *bad[BAD_CONTEXT_PROBES];
    uint32_t i;

    if (plugin_emit == NULL)
        return;
    answer_count = 0;
    hostile_seal(&alive_site);
    bad[0] = NULL;
    bad[1] = (void *)(own + 1);
    bad[2] = (void *)some_static_data;
    bad[3] = (void *)~own;
    bad[4] = (void *)(own + ((uintptr_t)1 << 40)); /* same low bits, another use count */
    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    ev.callsite = &alive_site;
    for (i = 0; i < BAD_CONTEXT_PROBES; ++i)
        (void)send_with(bad[i], &ev);

    (void)send_and_keep(&ev);
    value = hostile_str_value(0, "still alive");
    ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = alive_site.id;
    ev.values = &value;
    ev.value_count = 1;
    (void)send_and_keep(&ev);
}
