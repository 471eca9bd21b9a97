// A C++ plugin whose start refuses: START_MODE 1 returns false, 2 throws.
// Either way TT_PLUGIN's tt_plugin_start must return non-zero and leave no
// host behind.
#include <tracetunnel/trace.hpp>

#include "scenario.h"

#include <stdexcept>

using namespace tt::literals;

namespace {

bool refuse()
{
    TT_INFO("starting", "mode"_f = START_MODE);
#if START_MODE == 1
    return false;
#else
    throw std::runtime_error("refusing to start");
#endif
}

}  // namespace

TT_PLUGIN("cpp_start_fail", "1.0.0", "a start that refuses", refuse, nullptr)

extern "C" TT_EXPORT void start_fail_emit()
{
    TT_INFO("after a refused start");
}
