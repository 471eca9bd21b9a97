/*
 * deep_nesting: a raw-ABI plugin whose hostile_run opens DEEP_NESTING_SPANS
 * spans, each the contextual child of the one before and entered at once,
 * so that each nests one deeper than the last; then enters the outermost
 * span DEEP_NESTING_SPANS times more on top; then exits everything in
 * reverse and drops the spans outermost first (the order that leaves the
 * longest chain to release last). Finally a valid "still alive" event.
 * Counts: hostile_accepted_count (spans the host opened),
 * hostile_refused_count (NEW_SPAN refusals), hostile_answer(0) the first
 * refusal, hostile_answer(1) the "still alive" answer, hostile_answer(2) the
 * number of exits that were refused.
 */
#include "hostile_answers.h"

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info info = HOSTILE_INFO("deep_nesting", "Test plugin: 100,000 nested spans");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

HOSTILE_START_STOP

#define DEEP_NESTING_SPANS 100000u

static uint32_t refused_count;
static uint32_t accepted_count;
static uint64_t ids[DEEP_NESTING_SPANS];

TT_EXPORT uint32_t hostile_refused_count(void)
{
    return refused_count;
}

TT_EXPORT uint32_t hostile_accepted_count(void)
{
    return accepted_count;
}

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static tt_callsite span_site = {sizeof(tt_callsite), TT_CALLSITE_SPAN, 0, TT_LEVEL_INFO, __LINE__,
                                HOSTILE_STR("nested"), HOSTILE_STR("deep_nesting"), HOSTILE_STR("deep_nesting"),
                                HOSTILE_STR(__FILE__), message_field, 0, 0};
static tt_callsite alive_site = HOSTILE_EVENT_SITE("still alive", "deep_nesting", message_field);

static uint64_t simple(tt_event_kind kind, uint64_t span)
{
    tt_event ev = hostile_event(kind);
    ev.span_id = span;
    return plugin_emit(plugin_ctx, &ev);
}

TT_EXPORT void hostile_run(void)
{
    tt_event ev;
    tt_field_value value;
    uint64_t first_refusal = 0, exits_refused = 0;
    uint32_t i, opened = 0;

    if (plugin_emit == NULL)
        return;
    answer_count = 0;
    refused_count = accepted_count = 0;
    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    hostile_seal(&span_site);
    ev.callsite = &span_site;
    (void)plugin_emit(plugin_ctx, &ev);
    hostile_seal(&alive_site);
    ev.callsite = &alive_site;
    (void)plugin_emit(plugin_ctx, &ev);

    for (i = 0; i < DEEP_NESTING_SPANS; ++i) {
        uint64_t answer;
        ev = hostile_event(TT_EVENT_NEW_SPAN);
        ev.callsite_id = span_site.id;
        ev.parent = TT_PARENT_CONTEXTUAL;
        answer = plugin_emit(plugin_ctx, &ev);
        if (TT_STATUS_IS_ERROR(answer) || answer == 0) {
            if (first_refusal == 0)
                first_refusal = answer;
            ++refused_count;
            continue;
        }
        ids[opened++] = answer;
        ++accepted_count;
        (void)simple(TT_EVENT_SPAN_ENTERED, answer);
    }
    if (opened > 0)
        for (i = 0; i < DEEP_NESTING_SPANS; ++i)
            (void)simple(TT_EVENT_SPAN_ENTERED, ids[0]);
    if (opened > 0)
        for (i = 0; i < DEEP_NESTING_SPANS; ++i)
            if (TT_STATUS_IS_ERROR(simple(TT_EVENT_SPAN_EXITED, ids[0])))
                ++exits_refused;
    for (i = opened; i > 0; --i)
        if (TT_STATUS_IS_ERROR(simple(TT_EVENT_SPAN_EXITED, ids[i - 1])))
            ++exits_refused;
    for (i = 0; i < opened; ++i)
        (void)simple(TT_EVENT_SPAN_DROPPED, ids[i]);

    answers[0] = first_refusal;
    value = hostile_str_value(0, "still alive");
    ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = alive_site.id;
    ev.values = &value;
    ev.value_count = 1;
    answers[1] = plugin_emit(plugin_ctx, &ev);
    answers[2] = exits_refused;
    answer_count = 3;
}
