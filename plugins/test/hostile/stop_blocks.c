/*
 * stop_blocks: a raw-ABI plugin whose tt_plugin_stop emits "stopping" and
 * then blocks until the test calls hostile_release (or a minute passes);
 * when it finally returns it emits "stop returned", which the host must
 * refuse (the instance was given up). hostile_stop_returned counts the stops
 * that returned.
 */
#define _POSIX_C_SOURCE 200809L

#include "hostile_answers.h"

#include <time.h>

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info info = HOSTILE_INFO("stop_blocks", "Test plugin: a stop that does not return");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static tt_callsite site = HOSTILE_EVENT_SITE("stop_blocks", "stop_blocks", message_field);
static int released;
static uint32_t stop_returned;

TT_EXPORT void hostile_release(void)
{
    __atomic_store_n(&released, 1, __ATOMIC_SEQ_CST);
}

TT_EXPORT uint32_t hostile_stop_returned(void)
{
    return __atomic_load_n(&stop_returned, __ATOMIC_SEQ_CST);
}

static void say(const char *text)
{
    tt_field_value value = hostile_str_value(0, text);
    tt_event ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = site.id;
    ev.values = &value;
    ev.value_count = 1;
    (void)send_and_keep(&ev);
}

TT_EXPORT int32_t tt_plugin_start(const tt_host *host)
{
    tt_event ev;
    if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)
        return 1;
    plugin_emit = host->emit;
    plugin_ctx = host->ctx;
    hostile_seal(&site);
    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    ev.callsite = &site;
    (void)send_and_keep(&ev);
    say("started");
    return 0;
}

TT_EXPORT void tt_plugin_stop(void)
{
    const struct timespec pause = {0, 1000000};
    int waited_ms = 0;
    say("stopping");
    while (!__atomic_load_n(&released, __ATOMIC_SEQ_CST) && waited_ms < 60000) {
        nanosleep(&pause, NULL);
        ++waited_ms;
    }
    say("stop returned");
    __atomic_add_fetch(&stop_returned, 1u, __ATOMIC_SEQ_CST);
}
