/*
 * long_lengths: a raw-ABI plugin whose hostile_run passes lengths its
 * buffers do not have. Past the host's limits (a 2^40-byte call-site name, a
 * 2^31-field call site, a 2^40-byte value, a 2^40-entry error chain, a value
 * one byte over the 1 MiB string limit) nothing may be read: a host that
 * followed them would crash. Within the limits, a 3-byte string with a
 * length of LONG_LENGTHS_OVERREAD runs on into the rest of a readable static
 * buffer: the host copies what it is told. Answers, in order:
 *   0 huge name, 1 huge field_count, 2 the valid call site, 3 huge value,
 *   4 huge error chain, 5 one over the limit, 6 the over-read (accepted),
 *   7 the valid "still alive" event.
 */
#include "hostile_answers.h"

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info info = HOSTILE_INFO("long_lengths", "Test plugin: lengths past its buffers");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

HOSTILE_START_STOP

#define LONG_LENGTHS_OVERREAD 4000
#define HUGE_LENGTH ((uint64_t)1 << 40)

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static tt_callsite site = HOSTILE_EVENT_SITE("long lengths", "long_lengths", message_field);
static char pool[8192];

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
    tt_callsite bad;
    tt_field_value value;
    tt_str chain[1];

    if (plugin_emit == NULL)
        return;
    answer_count = 0;
    memset(pool, 'x', sizeof pool);
    memcpy(pool, "abc", 3);

    bad = site;
    bad.name.ptr = "x";
    bad.name.len = HUGE_LENGTH;
    bad.id = 1; /* never hashed: the host must refuse before reading the name */
    (void)register_site(&bad);
    bad = site;
    bad.field_count = 0x7fffffffu;
    bad.id = 2;
    (void)register_site(&bad);
    (void)register_site(&site);

    value = hostile_str_value(0, "abc");
    value.as.str.len = HUGE_LENGTH;
    (void)send_value(&value);

    memset(&value, 0, sizeof value);
    value.kind = TT_VALUE_ERROR;
    chain[0].ptr = "boom";
    chain[0].len = 4;
    value.as.error.chain = chain;
    value.as.error.len = HUGE_LENGTH;
    (void)send_value(&value);

    value = hostile_str_value(0, "abc");
    value.as.str.ptr = pool;
    value.as.str.len = ((uint64_t)1 << 20) + 1;
    (void)send_value(&value);

    value.as.str.len = LONG_LENGTHS_OVERREAD;
    (void)send_value(&value);

    value = hostile_str_value(0, "still alive");
    (void)send_value(&value);
}
