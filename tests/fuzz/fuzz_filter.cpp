// Fuzz target: the EnvFilter-style directive parser (host/filter.hpp).
// Invariants: parse_filter never crashes or throws; an error's position lies
// within the text; a parsed filter's normalised text parses again to the
// same text (filter.hpp promises it); using the filter on call sites built
// from the input does not crash.
#include "fuzz_check.hpp"

#include <tracetunnel/host/filter.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = tt::host::parse_filter(text);
    if (auto* err = std::get_if<tt::host::filter_error>(&parsed)) {
        FUZZ_CHECK(err->position <= size, "error position past the end");
        FUZZ_CHECK(!err->message.empty(), "error without a message");
        return 0;
    }
    const auto& f = std::get<tt::host::filter>(parsed);
    const std::string norm = f.to_string();
    auto again = tt::host::parse_filter(norm);
    FUZZ_CHECK(std::holds_alternative<tt::host::filter>(again), "the normalised text does not parse");
    FUZZ_CHECK(std::get<tt::host::filter>(again).to_string() == norm, "normalising is not stable");

    // A span call site and an event call site named from the input's pieces.
    tt::model::callsite span;
    span.id = 1;
    span.kind = tt::model::callsite_kind::span;
    span.level = static_cast<tt::model::level>(1 + size % 5);
    const auto cut = text.find_first_of(",=[{");
    span.target = std::string(text.substr(0, cut == std::string_view::npos ? text.size() : cut));
    span.name = span.target.empty() ? "span" : span.target;
    span.fields = {"user", "n"};
    tt::model::field_values values{{"user", std::string("alice")}, {"n", std::int64_t{3}}};
    tt::model::callsite ev = span;
    ev.id = 2;
    ev.kind = tt::model::callsite_kind::event;
    ev.fields = {"message"};
    const tt::host::span_view scope[] = {{&span, &values}};
    for (const auto* site : {&span, &ev}) {
        const auto i = f.interest(*site);
        FUZZ_CHECK(i == TT_INTEREST_NEVER || i == TT_INTEREST_SOMETIMES || i == TT_INTEREST_ALWAYS,
                   "interest is not one of the three");
        const bool on = f.enabled(*site, scope, &values);
        (void)on;
        (void)f.span_level(*site, &values);
        if (i == TT_INTEREST_ALWAYS)
            FUZZ_CHECK(f.enabled(*site), "ALWAYS interest but not enabled outside any span");
    }
    return 0;
}
