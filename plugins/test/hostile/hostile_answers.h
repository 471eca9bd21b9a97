/*
 * The plumbing the newer hostile plugins share: the emit and ctx captured at
 * start, and the answers of the last hostile_run kept for the test
 * (hostile_answer / hostile_answer_count, as in test_app.h). Include once,
 * from one .c file per plugin. C99.
 */
#ifndef TRACETUNNEL_TEST_HOSTILE_ANSWERS_H
#define TRACETUNNEL_TEST_HOSTILE_ANSWERS_H

#include "hostile.h"
#include "test_app.h"

static tt_emit_fn plugin_emit;
static void *plugin_ctx;

#define HOSTILE_MAX_ANSWERS 64
static uint64_t answers[HOSTILE_MAX_ANSWERS];
static uint32_t answer_count;

/* Emits with the plugin's own ctx (or `ctx`) and keeps the answer. */
static inline uint64_t send_with(void *ctx, const tt_event *ev)
{
    const uint64_t answer = plugin_emit(ctx, ev);
    if (answer_count < HOSTILE_MAX_ANSWERS)
        answers[answer_count++] = answer;
    return answer;
}

static inline uint64_t send_and_keep(const tt_event *ev)
{
    return send_with(plugin_ctx, ev);
}

TT_EXPORT uint64_t hostile_answer(uint32_t i)
{
    return i < answer_count ? answers[i] : HOSTILE_ANSWER_OUT_OF_RANGE;
}

TT_EXPORT uint32_t hostile_answer_count(void)
{
    return answer_count;
}

/* Registers `cs` (sealed first) and keeps the answer. */
static inline uint64_t register_site(tt_callsite *cs)
{
    tt_event ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    hostile_seal(cs);
    ev.callsite = cs;
    return send_and_keep(&ev);
}

#define HOSTILE_START_STOP                                                                     \
    TT_EXPORT int32_t tt_plugin_start(const tt_host *host)                                     \
    {                                                                                          \
        if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)         \
            return 1;                                                                          \
        plugin_emit = host->emit;                                                              \
        plugin_ctx = host->ctx;                                                                \
        return 0;                                                                              \
    }                                                                                          \
    TT_EXPORT void tt_plugin_stop(void)                                                        \
    {                                                                                          \
        plugin_emit = NULL;                                                                    \
        plugin_ctx = NULL;                                                                     \
    }

#endif /* TRACETUNNEL_TEST_HOSTILE_ANSWERS_H */
