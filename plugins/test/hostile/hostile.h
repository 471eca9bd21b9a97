/*
 * Shared bits of the hostile test plugins: raw abi.h senders that break the
 * contract on purpose, each in its own way (see test_app.h for what the
 * tests call). C99.
 */
#ifndef TRACETUNNEL_TEST_HOSTILE_H
#define TRACETUNNEL_TEST_HOSTILE_H

#include <tracetunnel/abi.h>

#include <stddef.h>
#include <string.h>

/* A tt_str initializer for a string literal. */
#define HOSTILE_STR(lit) {(lit), sizeof(lit) - 1}

/* Every hostile plugin's tt_plugin_info: its name is its test_plugins key. */
#define HOSTILE_INFO(name, description) \
    {sizeof(tt_plugin_info), 0, HOSTILE_STR(name), HOSTILE_STR("0.1"), HOSTILE_STR(description)}

/* A zeroed event of `kind` with the sender's struct_size. */
static inline tt_event hostile_event(tt_event_kind kind)
{
    tt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.struct_size = sizeof(tt_event);
    ev.kind = kind;
    return ev;
}

/* A string value for field `field`. */
static inline tt_field_value hostile_str_value(uint32_t field, const char *text)
{
    tt_field_value v;
    memset(&v, 0, sizeof v);
    v.field = field;
    v.kind = TT_VALUE_STR;
    v.as.str.ptr = text;
    v.as.str.len = strlen(text);
    return v;
}

/* An event call site at INFO with the one field "message"; id left to hostile_seal(). */
#define HOSTILE_EVENT_SITE(name, target, fields) \
    {sizeof(tt_callsite), TT_CALLSITE_EVENT, 0, TT_LEVEL_INFO, __LINE__, HOSTILE_STR(name), HOSTILE_STR(target), \
     HOSTILE_STR(target), HOSTILE_STR(__FILE__), (fields), 1, 0}

/* Computes a call site's id from its data (once). */
static inline void hostile_seal(tt_callsite *cs)
{
    if (cs->id == 0)
        cs->id = tt_callsite_hash(cs);
}

#endif /* TRACETUNNEL_TEST_HOSTILE_H */
