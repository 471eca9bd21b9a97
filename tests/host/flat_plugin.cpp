// flat: the plugin test_reload_heap reloads a thousand times. It keeps one
// open span across every reload (released by save, adopted back by restore)
// and emits at each start, so each reload carries a span and registers call
// sites. Nothing of static storage duration has a destructor: glibc keeps a
// registered destructor's exit-handler slot after dlclose when the next
// build registered above it (one slot, 32.5 bytes, per reload), and this
// plugin must let the test see the host's own heap only.
#define TT_TARGET "flat"
#include <tracetunnel/trace.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

using namespace tt::literals;

namespace {

// The open span's id while saved or adopted (0: none). Trivially destructible.
std::atomic<std::uint64_t> held{0};

bool on_start()
{
    TT_INFO("flat started", "spans"_f = static_cast<std::int64_t>(held.load() != 0 ? 1 : 0));
    return true;
}

std::string save()
{
    const std::uint64_t id = held.load();
    std::string out(sizeof id, '\0');
    std::memcpy(out.data(), &id, sizeof id);
    return out;
}

bool restore(std::string_view bytes)
{
    std::uint64_t id = 0;
    if (bytes.size() != sizeof id)
        return false;
    std::memcpy(&id, bytes.data(), sizeof id);
    held.store(id);
    return true;
}

}  // namespace

TT_PLUGIN("flat", "1.0.0", "Reloaded by test_reload_heap: no static destructors", on_start, nullptr)
TT_PLUGIN_STATE(save, restore)

// Opens the one held span (once); answers how many the plugin holds.
extern "C" TT_EXPORT std::uint64_t flat_open_span(void)
{
    if (held.load() == 0) {
        auto s = TT_INFO_SPAN("held", tt::root, "k"_f = static_cast<std::int64_t>(1));
        held.store(s.release());
    }
    return held.load() != 0 ? 1 : 0;
}
