/* The plugin's second .c file: it reaches the host through the hidden state
 * that c_scenario.c defines, with call sites of its own; its level floor
 * compiles TT_TRACE away. */
#define TT_TARGET "c_scenario::other"
#define TT_MAX_LEVEL TT_LEVEL_DEBUG
#include <tracetunnel/trace.h>

#include "c_scenario.h"

void c_scenario_other_file(void)
{
    tt_span span = TT_SPAN_DEBUG("other_file_span");
    tt_span_enter(&span);
    TT_TRACE("compiled away", TT_V_U64("never", 1u));
    TT_DEBUG("from the other file", TT_V_STR("file", "c_scenario_other.c"));
    tt_span_exit(&span);
    tt_span_drop(&span);
}
