/* The C sender with no host: a plugin that was never started (or was
 * stopped) must treat every macro as a no-op, evaluate no argument, hand
 * out disabled span handles and never crash. Exit status 0 = pass. */
#include <tracetunnel/trace.h>

#include <stdio.h>

static int evaluated;

static int touch(int x)
{
    ++evaluated;
    return x;
}

static int calls_start;

static int no_host_start(void)
{
    ++calls_start;
    return 0;
}

TT_C_PLUGIN("no_host", "0", "never started", no_host_start, NULL);

static int fail(const char *what)
{
    fprintf(stderr, "no_host: %s\n", what);
    return 1;
}

int main(void)
{
    int i;
    tt_span s = TT_SPAN_INFO("s", TT_V_I64("x", touch(1)), TT_V_EMPTY("y"));
    tt_span r = TT_SPAN_ROOT(TT_LEVEL_ERROR, "r", TT_V_I64("x", touch(2)));
    tt_span c = TT_SPAN_IN(TT_LEVEL_INFO, &s, "c");
    tt_span k = tt_span_clone(&s);
    tt_host bad;

    for (i = 0; i < 3; ++i) {
        tt_span_enter(&s);
        TT_INFO("hello", TT_V_I64("x", touch(3)));
        TT_ERROR((touch(4), "message"));
        TT_LOG_IN(TT_LEVEL_WARN, &c, "in", TT_V_I64("x", touch(5)));
        TT_SPAN_RECORD(&s, TT_V_I64("y", touch(6)));
        tt_span_follows_from(&c, &s);
        tt_span_exit(&s);
    }
    if (tt_span_is_enabled(&s) || tt_span_is_enabled(&r) || tt_span_is_enabled(&c) || tt_span_is_enabled(&k))
        return fail("a span handle is enabled without a host");
    tt_span_drop(&k);
    tt_span_drop(&c);
    tt_span_drop(&r);
    tt_span_drop(&s);
    if (evaluated != 0)
        return fail("an argument was evaluated without a host");

    /* A malformed host record is refused without calling the user's start. */
    bad.struct_size = (uint32_t)sizeof bad;
    bad.abi_version = TT_ABI_VERSION;
    bad.emit = NULL;
    bad.ctx = NULL;
    if (tt_plugin_start(NULL) == 0 || tt_plugin_start(&bad) == 0 || calls_start != 0)
        return fail("a start without a usable host was accepted");
    if (tt_plugin_abi_version != TT_ABI_VERSION || tt_plugin_describe()->name.len != 7u)
        return fail("bad exports");
    tt_plugin_interest_changed();
    tt_plugin_stop();
    TT_INFO("after stop", TT_V_I64("x", touch(7)));
    if (evaluated != 0)
        return fail("an argument was evaluated after stop");
    return 0;
}
