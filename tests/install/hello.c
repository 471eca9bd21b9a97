/* The same first plugin, in C99. */
#define TT_TARGET "hello"
#include <tracetunnel/trace.h>

static int start(void)
{
    tt_span s = TT_SPAN_INFO("greeting", TT_V_STR("audience", "world"));
    tt_span_enter(&s);
    TT_INFO("hello from an out-of-tree C plugin", TT_V_I64("answer", 42));
    tt_span_exit(&s);
    tt_span_drop(&s);
    return 0;
}

static void stop(void) {}

TT_C_PLUGIN("hello_c", "1.0.0", "out-of-tree C plugin", start, stop);
