/* Built with -std=c99 -pedantic -Wall -Wextra -Werror: if trace.h (or the
 * abi.h it includes) stops being strict C99 with GNU builtins, this file
 * stops compiling and the build fails. It touches every public macro and
 * function, including a 32-field call site and the plugin macros. */
#include <tracetunnel/abi.h>
#include <tracetunnel/trace.h>

static int strict_start(void)
{
    return 0;
}

static void strict_stop(void) {}

static int32_t strict_save(tt_write_fn write, void *ctx)
{
    return write(ctx, "", 0u);
}

static int32_t strict_restore(const void *data, uint64_t len)
{
    return data == NULL && len != 0u ? -1 : 0;
}

TT_C_PLUGIN("strict", "0", "strict C99 probe", strict_start, strict_stop);
TT_C_PLUGIN_STATE(strict_save, strict_restore);

void tt_strict_c99_trace_probe(int x);
void tt_strict_c99_trace_probe(int x)
{
    const char *const msgs[] = {"a", "b"};
    const tt_str chain[] = {TT_STR_LIT("a"), TT_STR_LIT("b")};
    tt_span none = TT_SPAN_NONE;
    tt_span s = TT_SPAN_TRACE("probe", TT_V_I64("x", x), TT_V_EMPTY("y"));
    tt_span a = TT_SPAN_ERROR("a");
    tt_span b = TT_SPAN_WARN("b");
    tt_span c = TT_SPAN_DEBUG("c");
    tt_span d = TT_SPAN_IN(TT_LEVEL_INFO, &s, "d", TT_V_BOOL("bool", x > 0));
    tt_span e = TT_SPAN_ROOT(TT_LEVEL_INFO, "e");
    tt_span f = tt_span_from_id(42u);
    tt_span g = tt_span_clone(&s);
    tt_span_enter(&s);
    TT_ERROR("error");
    TT_WARN("warn", TT_V_U64("u", 1u));
    TT_INFO("info", TT_V_F64("f", 0.5));
    TT_DEBUG("debug", TT_V_STR("s", "x"), TT_V_STRN("n", "xy", 1u), TT_V_DEBUG("d", "{}"));
    TT_TRACE("trace", TT_V_I128("i", -1, 1u), TT_V_U128("u", 1u, 2u));
    TT_LOG(TT_LEVEL_INFO, "log", TT_V_ERROR("e", chain, 2u), TT_V_ERROR_CHAIN("c", msgs, 2u),
           TT_V_ERROR_MSG("m", "boom"));
    TT_LOG_IN(TT_LEVEL_INFO, &d, "in");
    TT_LOG_ROOT(TT_LEVEL_INFO, "root");
    TT_INFO("32 fields", TT_V_U64("f0", 0u), TT_V_U64("f1", 1u), TT_V_U64("f2", 2u), TT_V_U64("f3", 3u),
            TT_V_U64("f4", 4u), TT_V_U64("f5", 5u), TT_V_U64("f6", 6u), TT_V_U64("f7", 7u), TT_V_U64("f8", 8u),
            TT_V_U64("f9", 9u), TT_V_U64("f10", 10u), TT_V_U64("f11", 11u), TT_V_U64("f12", 12u),
            TT_V_U64("f13", 13u), TT_V_U64("f14", 14u), TT_V_U64("f15", 15u), TT_V_U64("f16", 16u),
            TT_V_U64("f17", 17u), TT_V_U64("f18", 18u), TT_V_U64("f19", 19u), TT_V_U64("f20", 20u),
            TT_V_U64("f21", 21u), TT_V_U64("f22", 22u), TT_V_U64("f23", 23u), TT_V_U64("f24", 24u),
            TT_V_U64("f25", 25u), TT_V_U64("f26", 26u), TT_V_U64("f27", 27u), TT_V_U64("f28", 28u),
            TT_V_U64("f29", 29u), TT_V_U64("f30", 30u), TT_V_U64("f31", 31u));
    TT_SPAN_RECORD(&s, TT_V_U64("y", 2u));
    tt_span_follows_from(&e, &s);
    tt_span_exit(&s);
    if (tt_span_is_enabled(&none) || tt_cstr("x").len != 1u || tt_strn("xy", 1u).len != 1u)
        return;
    tt_span_drop(&g);
    tt_span_drop(&f);
    tt_span_drop(&e);
    tt_span_drop(&d);
    tt_span_drop(&c);
    tt_span_drop(&b);
    tt_span_drop(&a);
    tt_span_drop(&s);
}
