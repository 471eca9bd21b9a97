/*
 * too_many_values: a raw-ABI plugin whose hostile_run registers an event call
 * site with HOSTILE_TOO_MANY_VALUES fields and sends one event with a value
 * for each, more than a host takes per event. Both answers are kept for the
 * test (test_app.h).
 */
#include "hostile.h"
#include "test_app.h"

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info tmv_info =
    HOSTILE_INFO("too_many_values", "Test plugin: an event with too many values");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &tmv_info;
}

static tt_emit_fn tmv_emit;
static void *tmv_ctx;

TT_EXPORT int32_t tt_plugin_start(const tt_host *host)
{
    if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)
        return 1;
    tmv_emit = host->emit;
    tmv_ctx = host->ctx;
    return 0;
}

TT_EXPORT void tt_plugin_stop(void)
{
    tmv_emit = NULL;
    tmv_ctx = NULL;
}

/* ---- the answers of the last run ---- */

static uint64_t answers[2];
static uint32_t answer_count;

static void send_and_keep(const tt_event *ev)
{
    const uint64_t answer = tmv_emit(tmv_ctx, ev);
    if (answer_count < 2)
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

/* "f00" .. "f99": distinct field names in static storage. */
static char name_text[HOSTILE_TOO_MANY_VALUES][4];
static tt_str names[HOSTILE_TOO_MANY_VALUES];
static tt_callsite site = {sizeof(tt_callsite), TT_CALLSITE_EVENT, 0, TT_LEVEL_INFO, __LINE__,
                           HOSTILE_STR("too many values"), HOSTILE_STR("too_many_values"),
                           HOSTILE_STR("too_many_values"), HOSTILE_STR(__FILE__), names,
                           HOSTILE_TOO_MANY_VALUES, 0};

TT_EXPORT void hostile_run(void)
{
    tt_field_value values[HOSTILE_TOO_MANY_VALUES];
    tt_event ev;
    uint32_t i;

    if (tmv_emit == NULL)
        return;
    answer_count = 0;
    if (site.id == 0) {
        for (i = 0; i < HOSTILE_TOO_MANY_VALUES; ++i) {
            name_text[i][0] = 'f';
            name_text[i][1] = (char)('0' + i / 10);
            name_text[i][2] = (char)('0' + i % 10);
            names[i].ptr = name_text[i];
            names[i].len = 3;
        }
        hostile_seal(&site);
    }

    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    ev.callsite = &site;
    send_and_keep(&ev);

    memset(values, 0, sizeof values);
    for (i = 0; i < HOSTILE_TOO_MANY_VALUES; ++i) {
        values[i].field = i;
        values[i].kind = TT_VALUE_U64;
        values[i].as.u64 = i;
    }
    ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = site.id;
    ev.values = values;
    ev.value_count = HOSTILE_TOO_MANY_VALUES;
    send_and_keep(&ev);
}
