// trace.h declares nothing C++ cannot read (tools and mixed projects include
// it); its macros are for C, trace.hpp is the C++ sender.
#include <tracetunnel/trace.h>

int tt_trace_h_from_cpp()
{
    tt_span s = TT_SPAN_NONE;
    tt_span_enter(&s);
    tt_span_drop(&s);
    return tt_span_is_enabled(&s) + static_cast<int>(tt_cstr("ab").len);
}
