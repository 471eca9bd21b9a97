/*
 * cross_thread: a raw-ABI plugin whose hostile_run enters a span on the
 * calling thread and exits it on another thread, which is refused (the span
 * is not entered there). Answers, in order: 0 NEW_SPAN (the span id),
 * 1 enter here, 2 exit on the other thread (refused), 3 enter there, 4 exit
 * there, 5 exit here, 6 drop, 7 the valid "still alive" event.
 */
#define _POSIX_C_SOURCE 200809L

#include "hostile_answers.h"

#include <pthread.h>

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info info = HOSTILE_INFO("cross_thread", "Test plugin: a span exited on another thread");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

HOSTILE_START_STOP

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static tt_callsite span_site = {sizeof(tt_callsite), TT_CALLSITE_SPAN, 0, TT_LEVEL_INFO, __LINE__,
                                HOSTILE_STR("handed over"), HOSTILE_STR("cross_thread"), HOSTILE_STR("cross_thread"),
                                HOSTILE_STR(__FILE__), message_field, 0, 0};
static tt_callsite alive_site = HOSTILE_EVENT_SITE("still alive", "cross_thread", message_field);
static uint64_t span;

static void simple(tt_event_kind kind)
{
    tt_event ev = hostile_event(kind);
    ev.span_id = span;
    (void)send_and_keep(&ev);
}

static void *other_thread(void *arg)
{
    (void)arg;
    simple(TT_EVENT_SPAN_EXITED);  /* refused: not entered on this thread */
    simple(TT_EVENT_SPAN_ENTERED); /* fine: entered here too now */
    simple(TT_EVENT_SPAN_EXITED);  /* fine */
    return NULL;
}

TT_EXPORT void hostile_run(void)
{
    tt_event ev;
    tt_field_value value;
    pthread_t thread;

    if (plugin_emit == NULL)
        return;
    answer_count = 0;
    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    hostile_seal(&span_site);
    ev.callsite = &span_site;
    (void)plugin_emit(plugin_ctx, &ev);
    hostile_seal(&alive_site);
    ev.callsite = &alive_site;
    (void)plugin_emit(plugin_ctx, &ev);

    ev = hostile_event(TT_EVENT_NEW_SPAN);
    ev.callsite_id = span_site.id;
    ev.parent = TT_PARENT_ROOT;
    span = send_and_keep(&ev);
    simple(TT_EVENT_SPAN_ENTERED);
    if (pthread_create(&thread, NULL, other_thread, NULL) == 0)
        pthread_join(thread, NULL);
    simple(TT_EVENT_SPAN_EXITED);
    simple(TT_EVENT_SPAN_DROPPED);

    value = hostile_str_value(0, "still alive");
    ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = alive_site.id;
    ev.values = &value;
    ev.value_count = 1;
    (void)send_and_keep(&ev);
}
