/*
 * bad_utf8: a raw-ABI plugin whose hostile_run sends strings that are not
 * UTF-8 where the ABI wants UTF-8: a call-site name, a field name, and
 * values (a stray continuation byte, an overlong '/', a surrogate, a
 * truncated sequence, a debug value and an error-chain entry). Answers, in
 * order: 0 bad call-site name, 1 bad field name, 2 the valid call site,
 * 3..8 the six bad values, 9 the valid "still alive" event.
 */
#include "hostile_answers.h"

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info info = HOSTILE_INFO("bad_utf8", "Test plugin: strings that are not UTF-8");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

HOSTILE_START_STOP

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static const tt_str bad_field[1] = {HOSTILE_STR("mess\xff")};
static tt_callsite site = HOSTILE_EVENT_SITE("bad utf8", "bad_utf8", message_field);
static tt_callsite bad_name = HOSTILE_EVENT_SITE("bad \xc3\x28 name", "bad_utf8", message_field);
static tt_callsite bad_field_site = HOSTILE_EVENT_SITE("bad field", "bad_utf8", bad_field);

static uint64_t send_value(const tt_field_value *value)
{
    tt_event ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = site.id;
    ev.values = value;
    ev.value_count = 1;
    return send_and_keep(&ev);
}

TT_EXPORT void hostile_run(void)
{
    static const char *const bad_text[] = {"stray \x80 byte", "overlong \xc0\xaf", "surrogate \xed\xa0\x80",
                                           "truncated \xe2\x82"};
    tt_field_value value;
    tt_str chain[2] = {HOSTILE_STR("fine"), HOSTILE_STR("cause \xfe")};
    uint32_t i;

    if (plugin_emit == NULL)
        return;
    answer_count = 0;
    (void)register_site(&bad_name);
    (void)register_site(&bad_field_site);
    (void)register_site(&site);
    for (i = 0; i < 4; ++i) {
        value = hostile_str_value(0, bad_text[i]);
        (void)send_value(&value);
    }
    value = hostile_str_value(0, "debug \xff");
    value.kind = TT_VALUE_DEBUG;
    (void)send_value(&value);
    memset(&value, 0, sizeof value);
    value.kind = TT_VALUE_ERROR;
    value.as.error.chain = chain;
    value.as.error.len = 2;
    (void)send_value(&value);

    value = hostile_str_value(0, "still alive");
    (void)send_value(&value);
}
