// A C++ plugin whose start lets an exception escape through the C boundary:
// the one thing the sender's plugin macro prevents, written by hand to prove
// the host survives it anyway.
#include <tracetunnel/abi.h>

#include <stdexcept>

extern "C" {
TT_EXPORT extern const uint32_t tt_plugin_abi_version;
const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

TT_EXPORT const tt_plugin_info* tt_plugin_describe()
{
    static const tt_plugin_info info = {sizeof(tt_plugin_info), 0, {"thrower", 7}, {"0.1", 3}, {"", 0}};
    return &info;
}

TT_EXPORT int32_t tt_plugin_start(const tt_host*)
{
    throw std::runtime_error("start exploded");
}

TT_EXPORT void tt_plugin_stop() {}
}
