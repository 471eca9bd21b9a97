// Filter directives in the syntax and with the semantics of tracing-subscriber's
// EnvFilter, evaluated into per-call-site interest (TT_INTEREST_*).
//
// Operators already know RUST_LOG-style directives, so the host speaks the
// same language instead of inventing one:
//
//   auto parsed = tt::host::parse_filter("info,orders=debug,orders[checkout{user=alice}]=trace");
//   if (auto* err = std::get_if<tt::host::filter_error>(&parsed))
//       std::cerr << err->message << " at byte " << err->position << '\n';
//   const tt::host::filter& f = std::get<tt::host::filter>(parsed);
//   switch (f.interest(site)) {                     // once per call site
//   case TT_INTEREST_SOMETIMES: take = f.enabled(site, scope); break;  // per hit
//   ...
//   }
//
// Syntax: directives separated by ',', each `target[span{field=value,...}]=level`
// with every part optional:
//   info                      every target up to info
//   orders                    target prefix "orders", every level (trace)
//   orders=debug              target prefix with a level; `orders=` means trace
//   [checkout]=debug          inside spans named checkout (dynamic)
//   [{user}]=trace            call sites that have a field `user` (static), and
//                             inside spans that have one (dynamic)
//   [checkout{user=alice,n=3}]=trace   inside checkout spans with those values
// Levels are trace|debug|info|warn|error|off in any case, or 0-5 (0 = off,
// 1 = error ... 5 = trace), as EnvFilter's LevelFilter accepts. Empty pieces
// (",,", a trailing ',') and whitespace around directives are ignored.
//
// Semantics (EnvFilter's, with the deviations marked *):
// - A target matches by plain string prefix, as EnvFilter's starts_with:
//   "orders" matches "orders", "orders::checkout" and also "ordersx". Write
//   "orders::" to match only the children.
// - Among the directives that apply to a call site (target prefix, span name,
//   field names present), the most specific decides: longer target first,
//   then one with a span name, then more fields. Of two directives with the
//   same target, span and fields, the later one replaces the earlier.
// - Nothing matches: off. No directives at all (an empty string): `error`,
//   as EnvFilter::new and an unset RUST_LOG do.
// - Static directives (no span name, no field values) decide per call site:
//   ALWAYS or not. Dynamic directives (span name or fields) are evaluated per
//   hit against the spans the hit is inside: a span that matches a dynamic
//   directive at level L enables everything inside it up to L, whatever its
//   target; a new span matching one is itself enabled up to L. Statics and
//   dynamics add up: a hit is enabled when either enables it.
// - Field values: true/false match bools; integers (to 128 bits) match any
//   integer value numerically; floats (1.5, 1e3, inf, nan) match floats;
//   anything else, bare or "quoted" (with \" and \\), matches a string,
//   debug-formatted or error value whose text is exactly equal.
//   * No regular expressions: a string is compared literally (EnvFilter's
//     with_regex(false) mode), which is also what untrusted input wants.
//   * Field values are checked on spans only, like EnvFilter: an event's own
//     values do not select it.
//   * Per span, the most specific matching dynamic directive gives its level
//     (EnvFilter prefers any value match over a value-less one).
//   * Field lists may hold several fields ({a=1,b=x}); EnvFilter's builder
//     splits on every ',' and cannot parse them.
//   * Malformed input is an error with its byte offset; nothing is silently
//     dropped.
#pragma once

#include <tracetunnel/abi.h>
#include <tracetunnel/model.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tt::host {

// A maximum verbosity: a call site at level l passes when l <= the filter.
enum class level_filter : std::uint32_t {
    off = 0,
    error = TT_LEVEL_ERROR,
    warn = TT_LEVEL_WARN,
    info = TT_LEVEL_INFO,
    debug = TT_LEVEL_DEBUG,
    trace = TT_LEVEL_TRACE,
};

std::string_view to_string(level_filter l) noexcept;

// One span that a hit is inside: its call site and the values recorded on it
// so far (later pairs for the same field override earlier ones).
struct span_view {
    const model::callsite* site = nullptr;
    const model::field_values* values = nullptr;  // null: nothing recorded
};

// The spans a hit is inside, innermost first. A view, so the dispatcher can
// hand over its thread-local stack without copying.
using span_scope = std::span<const span_view>;

class filter;

struct filter_error {
    std::string message;
    std::size_t position = 0;  // byte offset into the whole directive string
    std::string directive;     // the offending directive, trimmed
};

using parse_result = std::variant<filter, filter_error>;

// Never throws (an allocation failure is reported as a filter_error).
parse_result parse_filter(std::string_view directives) noexcept;

// An immutable, parsed set of directives. Copies share the parsed form, so
// a new filter can be swapped in while other threads still use the old one.
class filter {
public:
    // No directives: every call site is off.
    filter();

    // TT_INTEREST_ALWAYS when a static directive enables the call site;
    // TT_INTEREST_SOMETIMES when only a dynamic one could (then ask
    // enabled() per hit); TT_INTEREST_NEVER otherwise.
    std::uint32_t interest(const model::callsite& site) const noexcept;

    // The most verbose level any directive enables: a hit above it is off
    // without looking further.
    level_filter max_level() const noexcept;

    // The per-hit decision. `scope` is where the hit is (innermost span
    // first). For a new span, `own_values` are its values at creation: a span
    // that matches a dynamic directive enables itself.
    bool enabled(const model::callsite& site, span_scope scope = {},
                 const model::field_values* own_values = nullptr) const noexcept;

    // enabled() with the scope already reduced to the most verbose
    // span_level() of its spans (off for none): the same answer, for a caller
    // that caches span_level per span.
    //
    //   f.enabled_at(site, std::max(f.span_level(*a.site, a.values), f.span_level(*b.site, b.values)))
    bool enabled_at(const model::callsite& site, level_filter scope_level,
                    const model::field_values* own_values = nullptr) const noexcept;

    // The level a span (call site + values) opens for everything inside it,
    // off when no dynamic directive matches it. enabled() uses this for each
    // span in scope; a dispatcher may cache it per span instead.
    level_filter span_level(const model::callsite& span_site, const model::field_values* values) const noexcept;

    // True when some directive needs the span scope (SOMETIMES is possible).
    bool has_dynamic() const noexcept;

    // Normalised directive text, least specific first; parse_filter() of it
    // gives an equivalent filter, and to_string() of that the same text.
    std::string to_string() const;

    struct impl;

private:
    explicit filter(std::shared_ptr<const impl> p) noexcept : impl_(std::move(p)) {}
    std::shared_ptr<const impl> impl_;
    friend parse_result parse_filter(std::string_view) noexcept;
};

}  // namespace tt::host
