// bench_plugin: the plugin side of the benchmark suite (tests/bench). Every
// loop that runs the sender's macros lives here, in a real .so built like any
// plugin, so the macros cost what they cost in a plugin. The benchmark
// executable calls these exports with a batch size and times the call.
//
// The typical event and the group are those of ../shared/BENCH_SCENARIOS.md:
//   TT_INFO("event message", "a"_f = i (i64), "b"_f = "hello world", "c"_f = i * 0.5)
//   group: span "group" (info, g = group index), entered, 10 typical events,
//   exited, dropped.
//
// Held spans (S10, S11): "held" spans with 3 fields, kept open in a table and
// carried across a hot reload through the plugin state (ids released on save,
// adopted on restore), as plugins/orders does.
#define TT_TARGET "bench"
#include <tracetunnel/trace.hpp>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

using namespace tt::literals;

namespace {

std::mutex held_mutex;
std::vector<tt::span> held;

// The state is the held span ids as raw 8-byte words: this plugin reads
// back only what it wrote itself, on the same machine, so no text form is
// needed (and std::to_string's digit table, an STB_GNU_UNIQUE symbol, would
// keep the library mapped forever: S11 counts that).
std::string save()
{
    std::lock_guard lk(held_mutex);
    std::string out(held.size() * sizeof(std::uint64_t), '\0');
    char* at = out.data();
    for (auto& s : held) {
        const std::uint64_t id = s.release();
        std::memcpy(at, &id, sizeof id);
        at += sizeof id;
    }
    held.clear();
    return out;
}

bool restore(std::string_view bytes)
{
    if (bytes.size() % sizeof(std::uint64_t) != 0)
        return false;
    std::vector<tt::span> adopted;
    adopted.reserve(bytes.size() / sizeof(std::uint64_t));
    for (std::size_t at = 0; at < bytes.size(); at += sizeof(std::uint64_t)) {
        std::uint64_t id = 0;
        std::memcpy(&id, bytes.data() + at, sizeof id);
        adopted.push_back(tt::span::adopt(id));
    }
    std::lock_guard lk(held_mutex);
    held.swap(adopted);
    return true;
}

}  // namespace

TT_PLUGIN("bench", "1.0.0", "Benchmark plugin (tests/bench)", nullptr, nullptr)
TT_PLUGIN_STATE(save, restore)

extern "C" {

// S1: a trace-level event with one field, n times. Under an info filter the
// call site's registration answer is NEVER: each call is one relaxed load.
TT_EXPORT std::uint64_t bench_disabled(std::uint64_t n)
{
    for (std::uint64_t i = 0; i < n; ++i)
        TT_TRACE("disabled event", "a"_f = static_cast<std::int64_t>(i));
    return n;
}

// S2: n typical events inside one entered span (one span per call; the
// caller makes n large, so the span's 4 events are noise).
TT_EXPORT std::uint64_t bench_typical_in_span(std::uint64_t first, std::uint64_t n)
{
    auto s = TT_INFO_SPAN("group", "g"_f = static_cast<std::int64_t>(first));
    auto entered = s.enter();
    for (std::uint64_t i = first; i < first + n; ++i)
        TT_INFO("event message", "a"_f = static_cast<std::int64_t>(i), "b"_f = "hello world",
                "c"_f = static_cast<double>(i) * 0.5);
    return n;
}

// S4, S7, S8, S9: n groups of 14 events each; returns the events sent.
TT_EXPORT std::uint64_t bench_groups(std::uint64_t first_group, std::uint64_t n)
{
    for (std::uint64_t g = first_group; g < first_group + n; ++g) {
        auto s = TT_INFO_SPAN("group", "g"_f = static_cast<std::int64_t>(g));
        auto entered = s.enter();
        for (std::uint64_t k = 0; k < 10; ++k) {
            const std::uint64_t i = g * 10 + k;
            TT_INFO("event message", "a"_f = static_cast<std::int64_t>(i), "b"_f = "hello world",
                    "c"_f = static_cast<double>(i) * 0.5);
        }
    }
    return n * 14;
}

// S10, S11: opens n more "held" spans (3 fields each), kept until closed.
TT_EXPORT std::uint64_t bench_open_spans(std::uint64_t n)
{
    std::lock_guard lk(held_mutex);
    held.reserve(held.size() + n);
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto k = static_cast<std::int64_t>(held.size());
        held.push_back(TT_INFO_SPAN("held", tt::root, "k"_f = k, "name"_f = "held span", "w"_f = k * 0.25));
    }
    return held.size();
}

TT_EXPORT std::uint64_t bench_held_count(void)
{
    std::lock_guard lk(held_mutex);
    return held.size();
}

// The plugin's own heap for held spans (the vector), for S11's host-only figure.
TT_EXPORT std::uint64_t bench_held_bytes(void)
{
    std::lock_guard lk(held_mutex);
    return held.capacity() * sizeof(tt::span);
}

TT_EXPORT void bench_close_spans(void)
{
    std::vector<tt::span> gone;
    {
        std::lock_guard lk(held_mutex);
        gone.swap(held);
    }
}

}  // extern "C"
