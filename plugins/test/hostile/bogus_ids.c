/*
 * bogus_ids: a raw-ABI plugin whose hostile_run sends the host one malformed
 * or inconsistent event after the other (unknown span and call-site ids, a
 * span from an event call site, an unknown event kind, a NULL values array
 * with a count, a span id 0), then one valid call site and event to show it
 * still gets through. Every answer is kept for the test (test_app.h).
 */
#include "hostile.h"
#include "test_app.h"

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info bogus_info = HOSTILE_INFO("bogus_ids", "Test plugin: bogus ids and malformed events");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &bogus_info;
}

static tt_emit_fn bogus_emit;
static void *bogus_ctx;

TT_EXPORT int32_t tt_plugin_start(const tt_host *host)
{
    if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)
        return 1;
    bogus_emit = host->emit;
    bogus_ctx = host->ctx;
    return 0;
}

TT_EXPORT void tt_plugin_stop(void)
{
    bogus_emit = NULL;
    bogus_ctx = NULL;
}

/* ---- the answers of the last run ---- */

#define BOGUS_MAX_ANSWERS 16
static uint64_t answers[BOGUS_MAX_ANSWERS];
static uint32_t answer_count;

static void send_and_keep(const tt_event *ev)
{
    const uint64_t answer = bogus_emit(bogus_ctx, ev);
    if (answer_count < BOGUS_MAX_ANSWERS)
        answers[answer_count++] = answer;
}

TT_EXPORT uint64_t hostile_answer(uint32_t i)
{
    return i < answer_count ? answers[i] : HOSTILE_ANSWER_OUT_OF_RANGE;
}

TT_EXPORT uint32_t hostile_answer_count(void)
{
    return answer_count;
}

/* ---- the run ---- */

#define BOGUS_UNKNOWN_SPAN 12345u
#define BOGUS_UNKNOWN_CALLSITE 0x5eed5eed5eed5eedull

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static tt_callsite event_site = HOSTILE_EVENT_SITE("bogus event", "bogus_ids", message_field);
static tt_callsite alive_site = HOSTILE_EVENT_SITE("still alive", "bogus_ids", message_field);

TT_EXPORT void hostile_run(void)
{
    tt_event ev;
    tt_field_value value;

    if (bogus_emit == NULL)
        return;
    answer_count = 0;
    hostile_seal(&event_site);
    hostile_seal(&alive_site);

    /* 0: enter a span the host never handed out. */
    ev = hostile_event(TT_EVENT_SPAN_ENTERED);
    ev.span_id = BOGUS_UNKNOWN_SPAN;
    send_and_keep(&ev);

    /* 1: a span from a call site never registered. */
    ev = hostile_event(TT_EVENT_NEW_SPAN);
    ev.callsite_id = BOGUS_UNKNOWN_CALLSITE;
    send_and_keep(&ev);

    /* Setup, not kept (a valid registration): an event call site... */
    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    ev.callsite = &event_site;
    (void)bogus_emit(bogus_ctx, &ev);

    /* 2: ...used to open a span (wrong kind). */
    ev = hostile_event(TT_EVENT_NEW_SPAN);
    ev.callsite_id = event_site.id;
    ev.parent = TT_PARENT_ROOT;
    send_and_keep(&ev);

    /* 3: an event kind that does not exist. */
    ev = hostile_event(99u);
    ev.callsite_id = event_site.id;
    send_and_keep(&ev);

    /* 4: three values promised, no array. */
    ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = event_site.id;
    ev.values = NULL;
    ev.value_count = 3;
    send_and_keep(&ev);

    /* 5: drop span id 0 (never a span). */
    ev = hostile_event(TT_EVENT_SPAN_DROPPED);
    ev.span_id = 0;
    send_and_keep(&ev);

    /* 6, 7: one valid call site and event: the plugin still gets through. */
    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    ev.callsite = &alive_site;
    send_and_keep(&ev);

    value = hostile_str_value(0, "still alive");
    ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = alive_site.id;
    ev.values = &value;
    ev.value_count = 1;
    send_and_keep(&ev);
}
