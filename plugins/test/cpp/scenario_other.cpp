// The second file of the cpp_scenario plugins: it uses the inline function
// of scenario_shared.hpp too, so the shared call site is listed twice.
#define TT_TARGET "cpp_scenario"
#define TT_STATIC_MAX_LEVEL TT_LEVEL_DEBUG
#include <tracetunnel/trace.hpp>

#include "scenario_shared.hpp"

void scenario_other_file()
{
    scenario_shared_site();
}
