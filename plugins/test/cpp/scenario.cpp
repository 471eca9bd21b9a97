// The C++ sender's scripted test plugin. Built three times from this one
// source (cpp_scenario, cpp_scenario_twin, cpp_scenario_variant) so the test
// can compare call-site ids across builds; the variant changes one level.
//
// Its call sites, all registered when the plugin starts (SCENARIO_SITES):
// values_event 1, scripted 7, noisy 1, worker 2, ids 3, and the shared one
// of scenario_shared.hpp (listed by both files of the plugin, registered
// once). Not registered: the TRACE call sites of compiled_out (above
// TT_STATIC_MAX_LEVEL), the one in never_instantiated, and the field table
// of tt::fields<"attempt">.
#define TT_TARGET "cpp_scenario"
#define TT_STATIC_MAX_LEVEL TT_LEVEL_DEBUG
#include <tracetunnel/trace.hpp>

#include "scenario.h"
#include "scenario_shared.hpp"

#include <atomic>
#include <cstdint>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#ifndef SCENARIO_VARIANT_LEVEL
#define SCENARIO_VARIANT_LEVEL TT_LEVEL_INFO
#endif

using namespace tt::literals;

namespace {

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

struct point {
    int x;
    int y;
};

std::ostream& operator<<(std::ostream& os, const point& p)
{
    return os << "point(" << p.x << ", " << p.y << ")";
}

// Formatting this throws: the sender must replace the value, not propagate.
struct unprintable {};

std::ostream& operator<<(std::ostream&, const unprintable&)
{
    throw std::runtime_error("cannot print");
}

std::atomic<int> evaluations{0};

int counted(int v)
{
    evaluations.fetch_add(1, std::memory_order_relaxed);
    return v;
}

bool on_start()
{
    return true;
}

void on_stop() {}

std::string save()
{
    return SCENARIO_STATE;
}

bool restore(std::string_view bytes)
{
    return bytes == SCENARIO_STATE;
}

void values_event()
{
    const i128 i128_min = static_cast<i128>(static_cast<u128>(1) << 127);
    const i128 i128_max = static_cast<i128>((static_cast<u128>(1) << 127) - 1);
    const u128 u128_max = ~static_cast<u128>(0);
    const std::string owned = "text";
    try {
        try {
            throw std::runtime_error("disk full");
        } catch (...) {
            std::throw_with_nested(std::runtime_error("cannot save order"));
        }
    } catch (const std::exception& e) {
        TT_INFO("values", "b"_f = true, "i"_f = std::numeric_limits<std::int64_t>::min(),
                "u"_f = std::numeric_limits<std::uint64_t>::max(), "i128min"_f = i128_min, "i128max"_f = i128_max,
                "u128max"_f = u128_max, "f"_f = 2.5, "s"_f = owned, "sv"_f = std::string_view("view"),
                "cstr"_f = "literal", "nullstr"_f = static_cast<const char*>(nullptr), "dbg"_f = tt::debug(point{1, 2}),
                "disp"_f = tt::display(std::string("shown")), "broken"_f = tt::debug(unprintable{}),
                "err"_f = tt::error(e), "current"_f = tt::error(std::current_exception()), "errlist"_f = tt::error({"timeout", "connection reset"}), "later"_f = tt::empty,
                "small"_f = static_cast<short>(-3), "byte"_f = static_cast<std::uint8_t>(200), "fl"_f = 0.5f,
                tt::field<"plain"> = 7);
    }
}

void scripted()
{
    tt::span order = TT_INFO_SPAN("order", "order_id"_f = 42, "customer"_f = tt::empty);
    {
        auto entered = order.enter();
        TT_INFO("inside order", "step"_f = 1u);
        order.record("customer"_f = std::string("ada"), "not_declared"_f = 1);
    }
    {
        tt::span copy = order;
        tt::span moved = std::move(copy);
    }
    tt::span retry = TT_DEBUG_SPAN("retry", "attempt"_f = 2);
    retry.follows_from(order);
    tt::span child = TT_WARN_SPAN("child", tt::parent(order));
    tt::span lonely = TT_ERROR_SPAN("lonely", tt::root);
    TT_WARN("explicit parent", tt::parent(child), "code"_f = -7);
    TT_ERROR(std::string("rooted"), tt::root);
    values_event();
    const std::uint64_t saved = retry.release();
    tt::span adopted = tt::span::adopt(saved, tt::fields<"attempt">);
    adopted.record("attempt"_f = 3);
}

void noisy()
{
    for (int i = 0; i < 100; ++i)
        TT_DEBUG("noisy", "noisy"_f = counted(i));
}

void worker()
{
    tt::span work = TT_INFO_SPAN("work", "thread_local_n"_f = 1);
    auto entered = work.enter();
    TT_INFO("working");
}

void ids()
{
    tt::span stable = TT_INFO_SPAN("stable span", "k"_f = 1);
    TT_INFO("stable event", "k"_f = 1);
    TT_EVENT(SCENARIO_VARIANT_LEVEL, "variant event", "k"_f = 1);
}

// Above TT_STATIC_MAX_LEVEL: compiled to nothing, never registered, never evaluated.
void compiled_out()
{
    tt::span gone = TT_TRACE_SPAN("compiled out span", "compiled_out"_f = counted(1));
    TT_TRACE("compiled out event", "compiled_out"_f = counted(2));
}

}  // namespace

// A call site in a template nobody instantiates is no call site of the plugin.
template <class T>
void never_instantiated(const T& v)
{
    TT_INFO("never instantiated", "never_instantiated"_f = v);
}

TT_PLUGIN("cpp_scenario", "1.0.0", "scripted C++ sender scenarios", on_start, on_stop);
TT_PLUGIN_STATE(save, restore);

extern "C" TT_EXPORT void scenario_run(std::int32_t which)
{
    switch (which) {
    case SCENARIO_SCRIPTED: scripted(); break;
    case SCENARIO_NOISY: noisy(); break;
    case SCENARIO_WORKER: worker(); break;
    case SCENARIO_IDS: ids(); break;
    case SCENARIO_COMPILED_OUT: compiled_out(); break;
    case SCENARIO_SHARED:
        scenario_shared_site();
        scenario_other_file();
        break;
    default: break;
    }
}

extern "C" TT_EXPORT std::int32_t scenario_evaluations()
{
    return evaluations.load(std::memory_order_relaxed);
}
