// The owned, host-side form of everything that crosses the C ABI.
//
// tt_event and friends (abi.h) borrow plugin memory for the length of one
// emit call; these types own their data, so they can be recorded, written
// as JSON lines (event_json.hpp), replayed and compared in tests.
//
// Values are keyed by field *name*, not by index, so a recorded stream is
// self-describing and reads the same after the call site changed shape.
//
//   tt::model::event ev = tt::model::span_entered{42};
//   if (auto* e = std::get_if<tt::model::span_entered>(&ev)) use(e->id);
#pragma once

#include <tracetunnel/abi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace tt::model {

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

enum class level : std::uint32_t {
    error = TT_LEVEL_ERROR,
    warn = TT_LEVEL_WARN,
    info = TT_LEVEL_INFO,
    debug = TT_LEVEL_DEBUG,
    trace = TT_LEVEL_TRACE,
};

enum class callsite_kind : std::uint32_t { span = TT_CALLSITE_SPAN, event = TT_CALLSITE_EVENT };

enum class parent_mode : std::uint32_t {
    contextual = TT_PARENT_CONTEXTUAL,
    root = TT_PARENT_ROOT,
    explicit_span = TT_PARENT_EXPLICIT,
};

struct callsite {
    std::uint64_t id = 0;
    callsite_kind kind = callsite_kind::event;
    tt::model::level level = level::info;
    std::string name;
    std::string target;
    std::string module_path;
    std::string file;
    std::uint32_t line = 0;
    std::vector<std::string> fields;

    bool operator==(const callsite&) const = default;
};

// Text of a debug- or display-formatted object.
struct debug_text {
    std::string text;
    bool operator==(const debug_text&) const = default;
};

// An error: chain[0] is its message, chain[i + 1] the source of chain[i].
struct error_chain {
    std::vector<std::string> chain;
    bool operator==(const error_chain&) const = default;
};

// Equality on doubles is bitwise (NaN == NaN, -0.0 != 0.0): what a round trip
// must preserve.
using value = std::variant<bool, std::int64_t, std::uint64_t, i128, u128, double, std::string, debug_text,
                           error_chain>;

bool same_value(const value& a, const value& b) noexcept;

// Decimal text of 128-bit integers (no standard to_chars for them): one
// implementation for the JSON form, the layers and the filters.
void append_decimal(std::string& out, u128 v);
void append_decimal(std::string& out, i128 v);
std::string to_decimal(u128 v);
std::string to_decimal(i128 v);

using field_values = std::vector<std::pair<std::string, value>>;

struct new_callsite {
    callsite site;
};
struct new_span {
    std::uint64_t id = 0;  // host-assigned (or the sender's own id in a tracing-tunnel stream)
    std::uint64_t callsite_id = 0;
    parent_mode parent = parent_mode::contextual;
    std::uint64_t parent_id = 0;  // only with parent_mode::explicit_span
    field_values values;
};
struct follows_from {
    std::uint64_t id = 0;
    std::uint64_t cause = 0;
};
struct span_entered {
    std::uint64_t id = 0;
};
struct span_exited {
    std::uint64_t id = 0;
};
struct span_cloned {
    std::uint64_t id = 0;
};
struct span_dropped {
    std::uint64_t id = 0;
};
struct values_recorded {
    std::uint64_t id = 0;
    field_values values;
};
struct new_event {
    std::uint64_t callsite_id = 0;
    parent_mode parent = parent_mode::contextual;
    std::uint64_t parent_id = 0;
    field_values values;
};

// Alternatives are in tt_event_kind order: index() + 1 == kind.
using event = std::variant<new_callsite, new_span, follows_from, span_entered, span_exited, span_cloned,
                           span_dropped, values_recorded, new_event>;

bool same_event(const event& a, const event& b) noexcept;

std::string_view to_string(level l) noexcept;

}  // namespace tt::model
