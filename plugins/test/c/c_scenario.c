/*
 * c_scenario: the C sender (trace.h) driven through scripted scenarios, so
 * that tests/sender_c can check the exact events a real .so emits. Two .c
 * files make the plugin; this one defines it with TT_C_PLUGIN.
 */
#define TT_TARGET "c_scenario"
#include <tracetunnel/trace.h>

#include "c_scenario.h"

static uint64_t evaluations;
static tt_span kept = TT_SPAN_NONE;

static uint64_t counted(uint64_t x)
{
    __atomic_add_fetch(&evaluations, 1u, __ATOMIC_RELAXED);
    return x;
}

static void scenario_stop(void)
{
    TT_INFO("c_scenario stopping");
}

TT_C_PLUGIN("c_scenario", "0.1.0", "Test plugin for the C sender", NULL, scenario_stop);

static void script(void)
{
    static const char *const causes[] = {"request failed", "connection reset", "peer closed"};
    const tt_str two[2] = {TT_STR_LIT("outer error"), TT_STR_LIT("inner cause")};
    tt_span outer = TT_SPAN_INFO("outer", TT_V_U64("order", 7u), TT_V_EMPTY("status"));
    tt_span copy, other, child, root;

    tt_span_enter(&outer);
    TT_INFO("inside outer", TT_V_BOOL("ok", 1));
    /* "undeclared" is not a field of the span's call site: left out. */
    TT_SPAN_RECORD(&outer, TT_V_STR("status", "paid"), TT_V_U64("undeclared", 1u));
    tt_span_exit(&outer);

    copy = tt_span_clone(&outer);
    tt_span_drop(&copy);

    other = TT_SPAN_DEBUG("other");
    tt_span_follows_from(&other, &outer);
    child = TT_SPAN_IN(TT_LEVEL_INFO, &outer, "child", TT_V_I64("depth", -1));
    root = TT_SPAN_ROOT(TT_LEVEL_WARN, "detached");
    TT_LOG_IN(TT_LEVEL_INFO, &child, "in child");
    TT_LOG_ROOT(TT_LEVEL_INFO, "at root");

    TT_INFO("all values", TT_V_BOOL("flag", 0), TT_V_I64("i64_min", INT64_MIN), TT_V_U64("u64_max", UINT64_MAX),
            TT_V_I128("i128_min", INT64_MIN, 0u), TT_V_I128("i128_max", INT64_MAX, UINT64_MAX),
            TT_V_I128("i128_minus_one", -1, UINT64_MAX), TT_V_U128("u128_max", UINT64_MAX, UINT64_MAX),
            TT_V_F64("f64", 2.5), TT_V_F64("f64_negative_zero", -0.0), TT_V_STR("str", "gr\xc3\xbc\xc3\x9f" "e"),
            TT_V_STRN("slice", "abcdef", 3u), TT_V_STR("null_str", NULL), TT_V_DEBUG("debug", "Point { x: 1, y: 2 }"),
            TT_V_ERROR_MSG("error_msg", "just this"), TT_V_ERROR("error_chain", two, 2u), TT_V_EMPTY("absent"));
    TT_INFO("wide", TT_V_U64("f0", 0u), TT_V_U64("f1", 1u), TT_V_U64("f2", 2u), TT_V_U64("f3", 3u),
            TT_V_U64("f4", 4u), TT_V_U64("f5", 5u), TT_V_U64("f6", 6u), TT_V_U64("f7", 7u), TT_V_U64("f8", 8u),
            TT_V_U64("f9", 9u), TT_V_U64("f10", 10u), TT_V_U64("f11", 11u), TT_V_U64("f12", 12u),
            TT_V_U64("f13", 13u), TT_V_U64("f14", 14u), TT_V_U64("f15", 15u), TT_V_U64("f16", 16u),
            TT_V_U64("f17", 17u), TT_V_U64("f18", 18u), TT_V_U64("f19", 19u), TT_V_U64("f20", 20u),
            TT_V_U64("f21", 21u), TT_V_U64("f22", 22u), TT_V_U64("f23", 23u), TT_V_U64("f24", 24u),
            TT_V_U64("f25", 25u), TT_V_U64("f26", 26u), TT_V_U64("f27", 27u), TT_V_U64("f28", 28u),
            TT_V_U64("f29", 29u), TT_V_U64("f30", 30u), TT_V_U64("f31", 31u));
    TT_ERROR("failed", TT_V_ERROR_CHAIN("error", causes, 3u));

    tt_span_drop(&root);
    tt_span_drop(&child);
    tt_span_drop(&other);
    tt_span_drop(&outer);
}

static void use_kept(void)
{
    tt_span copy;
    tt_span_enter(&kept);
    TT_INFO("with kept", TT_V_U64("evaluated", counted(1u)));
    TT_SPAN_RECORD(&kept, TT_V_U64("n", counted(2u)));
    tt_span_exit(&kept);
    copy = tt_span_clone(&kept);
    tt_span_follows_from(&copy, &kept);
    tt_span_drop(&copy);
    tt_span_drop(&kept);
}

TT_EXPORT void c_scenario_run(int scenario);
TT_EXPORT void c_scenario_hits(uint64_t hits);
TT_EXPORT uint64_t c_scenario_evaluations(void);
TT_EXPORT void c_scenario_burst(uint64_t worker, uint64_t count);

TT_EXPORT void c_scenario_run(int scenario)
{
    switch (scenario) {
    case C_SCENARIO_SCRIPT: script(); break;
    case C_SCENARIO_KEEP_SPAN: kept = TT_SPAN_INFO("kept", TT_V_EMPTY("n")); break;
    case C_SCENARIO_USE_KEPT: use_kept(); break;
    case C_SCENARIO_OTHER_FILE: c_scenario_other_file(); break;
    default: break;
    }
}

TT_EXPORT void c_scenario_hits(uint64_t hits)
{
    uint64_t i;
    for (i = 0; i < hits; ++i) {
        TT_DEBUG("quiet", TT_V_U64("quiet", counted(i)));
        TT_DEBUG("maybe", TT_V_U64("maybe", i));
    }
}

TT_EXPORT uint64_t c_scenario_evaluations(void)
{
    return __atomic_load_n(&evaluations, __ATOMIC_RELAXED);
}

TT_EXPORT void c_scenario_burst(uint64_t worker, uint64_t count)
{
    uint64_t i;
    tt_span span = TT_SPAN_INFO("worker", TT_V_U64("worker", worker));
    tt_span_enter(&span);
    for (i = 0; i < count; ++i)
        TT_INFO("tick", TT_V_U64("worker", worker), TT_V_U64("seq", i));
    tt_span_exit(&span);
    tt_span_drop(&span);
}
