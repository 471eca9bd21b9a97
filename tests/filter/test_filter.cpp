// EnvFilter-style directives: parsing, errors with positions, per-call-site
// interest, dynamic evaluation inside spans, and the normalised text form.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/filter.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

using tt::host::filter;
using tt::host::filter_error;
using tt::host::level_filter;
using tt::host::parse_filter;
using tt::host::span_view;
namespace model = tt::model;

namespace {

model::callsite event(std::string target, model::level level, std::vector<std::string> fields = {})
{
    model::callsite cs;
    cs.kind = model::callsite_kind::event;
    cs.level = level;
    cs.name = "event src/x.cpp:1";
    cs.target = std::move(target);
    cs.fields = std::move(fields);
    return cs;
}

model::callsite span(std::string name, std::string target, model::level level, std::vector<std::string> fields = {})
{
    model::callsite cs;
    cs.kind = model::callsite_kind::span;
    cs.level = level;
    cs.name = std::move(name);
    cs.target = std::move(target);
    cs.fields = std::move(fields);
    return cs;
}

filter must_parse(std::string_view text)
{
    auto parsed = parse_filter(text);
    if (auto* err = std::get_if<filter_error>(&parsed))
        FAIL("'" << text << "' did not parse: " << err->message << " at " << err->position);
    return std::get<filter>(parsed);
}

const char* interest_name(std::uint32_t i)
{
    return i == TT_INTEREST_ALWAYS ? "always" : i == TT_INTEREST_SOMETIMES ? "sometimes" : "never";
}

constexpr auto E = model::level::error;
constexpr auto W = model::level::warn;
constexpr auto I = model::level::info;
constexpr auto D = model::level::debug;
constexpr auto T = model::level::trace;

}  // namespace

TEST_SUITE("unit")
{
    TEST_CASE("interest per call site: a table")
    {
        struct row {
            const char* directives;
            model::callsite site;
            std::uint32_t expected;
        };
        const std::vector<row> rows = {
            {"info", event("app", I), TT_INTEREST_ALWAYS},
            {"info", event("app", W), TT_INTEREST_ALWAYS},
            {"info", event("app", D), TT_INTEREST_NEVER},
            {"INFO", event("app", I), TT_INTEREST_ALWAYS},
            {"Debug", event("app", D), TT_INTEREST_ALWAYS},
            {"3", event("app", I), TT_INTEREST_ALWAYS},
            {"3", event("app", D), TT_INTEREST_NEVER},
            {"5", event("app", T), TT_INTEREST_ALWAYS},
            {"0", event("app", E), TT_INTEREST_NEVER},
            {"off", event("app", E), TT_INTEREST_NEVER},
            {"orders", event("orders", T), TT_INTEREST_ALWAYS},           // bare target: every level
            {"orders", event("app", E), TT_INTEREST_NEVER},               // nothing matches: off
            {"orders=", event("orders", T), TT_INTEREST_ALWAYS},          // empty level: trace
            {"orders=warn", event("orders::x", W), TT_INTEREST_ALWAYS},
            {"orders=warn", event("orders::x", I), TT_INTEREST_NEVER},
            {"info,orders=off", event("orders", E), TT_INTEREST_NEVER},
            {"info,orders=off", event("app", E), TT_INTEREST_ALWAYS},
            {"info=debug", event("info::x", D), TT_INTEREST_ALWAYS},      // "info" as a target
            {"[{user}]=trace", event("app", T, {"user"}), TT_INTEREST_ALWAYS},  // field names are static
            // ... and dynamic: inside a span with a field `user` anything may be on
            {"[{user}]=trace", event("app", T, {"other"}), TT_INTEREST_SOMETIMES},
            {"error,[{user}]=warn", event("app", I, {"user"}), TT_INTEREST_NEVER},
            {"[checkout]=debug", event("app", D), TT_INTEREST_SOMETIMES},
            {"[checkout]=debug", event("app", T), TT_INTEREST_NEVER},
            {"[checkout]=debug", span("checkout", "app", D), TT_INTEREST_SOMETIMES},
            {"info,[checkout]=debug", event("app", I), TT_INTEREST_ALWAYS},
            {"[checkout{user=alice}]=trace", event("app", T), TT_INTEREST_SOMETIMES},
            {"[checkout]=off", event("app", E), TT_INTEREST_NEVER},
            {"", event("app", E), TT_INTEREST_ALWAYS},  // no directives: error
            {"", event("app", W), TT_INTEREST_NEVER},
            {" , ,", event("app", E), TT_INTEREST_ALWAYS},
            {"info,,orders=debug,", event("orders", D), TT_INTEREST_ALWAYS},
            {" info , orders=debug ", event("orders", D), TT_INTEREST_ALWAYS},
        };
        for (const auto& r : rows) {
            CAPTURE(r.directives);
            CAPTURE(r.site.target);
            CAPTURE(model::to_string(r.site.level));
            const filter f = must_parse(r.directives);
            CHECK(std::string(interest_name(f.interest(r.site))) == interest_name(r.expected));
        }
    }

    TEST_CASE("the example: info,orders=debug,orders[checkout{user=alice}]=trace")
    {
        const filter f = must_parse("info,orders=debug,orders[checkout{user=alice}]=trace");
        CHECK(f.max_level() == level_filter::trace);
        CHECK(f.has_dynamic());

        // info enables info, not debug, for "app"
        CHECK(f.interest(event("app", I)) == TT_INTEREST_ALWAYS);
        CHECK(f.interest(event("app", D)) == TT_INTEREST_SOMETIMES);  // could sit inside a matching checkout
        CHECK_FALSE(f.enabled(event("app", D)));

        // orders::x: debug always, trace only inside checkout{user=alice}
        const auto dbg = event("orders::x", D);
        const auto trc = event("orders::x", T);
        CHECK(f.interest(dbg) == TT_INTEREST_ALWAYS);
        CHECK(f.interest(trc) == TT_INTEREST_SOMETIMES);

        const auto checkout = span("checkout", "orders::api", I, {"user", "items"});
        const model::field_values alice = {{"user", std::string("alice")}, {"items", std::uint64_t{3}}};
        const model::field_values bob = {{"user", std::string("bob")}, {"items", std::uint64_t{3}}};
        const auto request = span("request", "app", I, {"path"});
        const model::field_values req_values = {{"path", std::string("/buy")}};

        const span_view in_alice[] = {{&checkout, &alice}};
        const span_view in_bob[] = {{&checkout, &bob}};
        const span_view nested[] = {{&request, &req_values}, {&checkout, &alice}};  // innermost first
        const span_view only_request[] = {{&request, &req_values}};

        CHECK(f.enabled(trc, in_alice));
        CHECK(f.enabled(trc, nested));  // an ancestor counts
        CHECK_FALSE(f.enabled(trc));
        CHECK_FALSE(f.enabled(trc, in_bob));
        CHECK_FALSE(f.enabled(trc, only_request));
        // inside the matching span the event's own target does not matter
        CHECK(f.enabled(event("app", T), in_alice));

        // the span itself: enabled by its own values at creation
        const auto trace_checkout = span("checkout", "orders", T, {"user"});
        const model::field_values alice_only = {{"user", std::string("alice")}};
        const model::field_values bob_only = {{"user", std::string("bob")}};
        CHECK(f.interest(trace_checkout) == TT_INTEREST_SOMETIMES);
        CHECK(f.enabled(trace_checkout, {}, &alice_only));
        CHECK_FALSE(f.enabled(trace_checkout, {}, &bob_only));
        CHECK_FALSE(f.enabled(trace_checkout));
        // a checkout outside the "orders" target does not match the directive
        const auto other_checkout = span("checkout", "billing", T, {"user"});
        CHECK_FALSE(f.enabled(other_checkout, {}, &alice_only));
        const span_view in_other[] = {{&other_checkout, &alice_only}};
        CHECK_FALSE(f.enabled(trc, in_other));

        // span_level, the per-span building block
        CHECK(f.span_level(checkout, &alice) == level_filter::trace);
        CHECK(f.span_level(checkout, &bob) == level_filter::off);
        CHECK(f.span_level(request, &req_values) == level_filter::off);

        // a value recorded later overrides the earlier one
        const model::field_values recorded = {{"user", std::string("bob")}, {"user", std::string("alice")}};
        const span_view in_recorded[] = {{&checkout, &recorded}};
        CHECK(f.enabled(trc, in_recorded));
    }

    TEST_CASE("targets match by plain string prefix, as EnvFilter's starts_with")
    {
        const filter f = must_parse("orders=debug");
        CHECK(f.interest(event("orders", D)) == TT_INTEREST_ALWAYS);
        CHECK(f.interest(event("orders::checkout", D)) == TT_INTEREST_ALWAYS);
        CHECK(f.interest(event("ordersx", D)) == TT_INTEREST_ALWAYS);  // EnvFilter parity
        CHECK(f.interest(event("order", D)) == TT_INTEREST_NEVER);
        CHECK(f.interest(event("app::orders", D)) == TT_INTEREST_NEVER);

        const filter children = must_parse("orders::=debug");
        CHECK(children.interest(event("orders::checkout", D)) == TT_INTEREST_ALWAYS);
        CHECK(children.interest(event("orders", D)) == TT_INTEREST_NEVER);
        CHECK(children.interest(event("ordersx", D)) == TT_INTEREST_NEVER);
    }

    TEST_CASE("the most specific directive wins")
    {
        // longer target beats shorter, whatever the order written
        for (const char* text : {"orders=warn,orders::checkout=trace", "orders::checkout=trace,orders=warn"}) {
            CAPTURE(text);
            const filter f = must_parse(text);
            CHECK(f.interest(event("orders::checkout::pay", T)) == TT_INTEREST_ALWAYS);
            CHECK(f.interest(event("orders::other", I)) == TT_INTEREST_NEVER);
            CHECK(f.interest(event("orders::other", W)) == TT_INTEREST_ALWAYS);
        }
        // a more specific directive may also be quieter
        const filter quiet = must_parse("trace,orders::checkout=error");
        CHECK(quiet.interest(event("orders::checkout", W)) == TT_INTEREST_NEVER);
        CHECK(quiet.interest(event("orders::other", T)) == TT_INTEREST_ALWAYS);

        // with the same target, more field names is more specific
        const filter fields = must_parse("app=info,app[{a}]=trace,app[{a,b}]=error");
        CHECK(fields.interest(event("app", T, {"a"})) == TT_INTEREST_ALWAYS);
        CHECK(fields.interest(event("app", W, {"a", "b"})) != TT_INTEREST_ALWAYS);
        CHECK(fields.interest(event("app", D)) != TT_INTEREST_ALWAYS);

        // the same directive twice: the later replaces the earlier
        const filter twice = must_parse("orders=debug,orders=warn");
        CHECK(twice.interest(event("orders", I)) == TT_INTEREST_NEVER);
        CHECK(twice.to_string() == "orders=warn");

        // per span, the most specific matching dynamic directive gives the level
        const filter dyn = must_parse("[checkout]=trace,[checkout{user=alice}]=warn");
        const auto checkout = span("checkout", "orders", I, {"user"});
        const model::field_values alice = {{"user", std::string("alice")}};
        const model::field_values bob = {{"user", std::string("bob")}};
        CHECK(dyn.span_level(checkout, &alice) == level_filter::warn);
        CHECK(dyn.span_level(checkout, &bob) == level_filter::trace);
    }

    TEST_CASE("off")
    {
        const filter f = must_parse("off");
        CHECK(f.max_level() == level_filter::off);
        CHECK(f.interest(event("app", E)) == TT_INTEREST_NEVER);
        CHECK_FALSE(f.has_dynamic());

        const filter partial = must_parse("debug,noisy=off,noisy::important=warn");
        CHECK(partial.interest(event("noisy::x", E)) == TT_INTEREST_NEVER);
        CHECK(partial.interest(event("noisy::important", W)) == TT_INTEREST_ALWAYS);
        CHECK(partial.interest(event("app", D)) == TT_INTEREST_ALWAYS);

        const filter empty;  // default constructed: nothing enabled
        CHECK(empty.interest(event("app", E)) == TT_INTEREST_NEVER);
        CHECK(empty.max_level() == level_filter::off);
    }

    TEST_CASE("max_level")
    {
        CHECK(must_parse("warn").max_level() == level_filter::warn);
        CHECK(must_parse("warn,orders=debug").max_level() == level_filter::debug);
        CHECK(must_parse("error,[checkout]=trace").max_level() == level_filter::trace);
        CHECK(must_parse("").max_level() == level_filter::error);
    }

    TEST_CASE("field values: typed literals")
    {
        const auto s = span("job", "app", I, {"v"});
        struct row {
            const char* directive;
            model::value value;
            bool matches;
        };
        const std::vector<row> rows = {
            {"[job{v=true}]", true, true},
            {"[job{v=true}]", false, false},
            {"[job{v=true}]", std::string("true"), false},
            {"[job{v=\"true\"}]", std::string("true"), true},
            {"[job{v=42}]", std::int64_t{42}, true},
            {"[job{v=42}]", std::uint64_t{42}, true},
            {"[job{v=42}]", model::i128{42}, true},
            {"[job{v=42}]", model::u128{42}, true},
            {"[job{v=42}]", std::int64_t{-42}, false},
            {"[job{v=42}]", 42.0, false},  // integers match integers only, as in EnvFilter
            {"[job{v=42}]", std::string("42"), false},
            {"[job{v=\"42\"}]", std::string("42"), true},
            {"[job{v=-7}]", std::int64_t{-7}, true},
            {"[job{v=-7}]", model::i128{-7}, true},
            {"[job{v=-9223372036854775808}]", std::numeric_limits<std::int64_t>::min(), true},
            {"[job{v=340282366920938463463374607431768211455}]", ~model::u128{0}, true},
            {"[job{v=18446744073709551615}]", std::numeric_limits<std::uint64_t>::max(), true},
            {"[job{v=1.5}]", 1.5, true},
            {"[job{v=1.5}]", 2.5, false},
            {"[job{v=1e3}]", 1000.0, true},
            {"[job{v=nan}]", std::nan(""), true},
            {"[job{v=inf}]", std::numeric_limits<double>::infinity(), true},
            {"[job{v=alice}]", std::string("alice"), true},
            {"[job{v=alice}]", std::string("Alice"), false},
            {"[job{v=alice}]", std::string("alice2"), false},
            {"[job{v=alice}]", model::debug_text{"alice"}, true},
            {"[job{v=timeout}]", model::error_chain{{"timeout", "io"}}, true},
            {"[job{v=\"a, b}\"}]", std::string("a, b}"), true},
            {"[job{v=\"say \\\"hi\\\" \\\\o/\"}]", std::string("say \"hi\" \\o/"), true},
            {"[job{v}]", std::string("anything"), true},  // a name alone: any value
        };
        const auto ev = event("elsewhere", T);
        for (const auto& r : rows) {
            CAPTURE(r.directive);
            const filter f = must_parse(r.directive);
            const model::field_values values = {{"v", r.value}};
            const span_view scope[] = {{&s, &values}};
            CHECK(f.enabled(ev, scope) == r.matches);
        }
        // no value recorded for the field: no match
        const filter f = must_parse("[job{v=1}]");
        const model::field_values none;
        const span_view scope[] = {{&s, &none}};
        CHECK_FALSE(f.enabled(ev, scope));
        const span_view no_values[] = {{&s, nullptr}};
        CHECK_FALSE(f.enabled(ev, no_values));
        // the span lacks the field: the directive does not apply
        const auto bare = span("job", "app", I);
        const model::field_values v1 = {{"v", std::int64_t{1}}};
        const span_view other[] = {{&bare, &v1}};
        CHECK_FALSE(f.enabled(ev, other));
        // several fields must all match
        const filter two = must_parse("[job{a=1, b=x}]=debug");
        const auto ab = span("job", "app", I, {"a", "b"});
        const model::field_values both = {{"a", std::int64_t{1}}, {"b", std::string("x")}};
        const model::field_values one = {{"a", std::int64_t{1}}, {"b", std::string("y")}};
        const span_view in_both[] = {{&ab, &both}};
        const span_view in_one[] = {{&ab, &one}};
        CHECK(two.enabled(event("z", D), in_both));
        CHECK_FALSE(two.enabled(event("z", T), in_both));  // up to the directive's level only
        CHECK_FALSE(two.enabled(event("z", D), in_one));
    }

    TEST_CASE("malformed directives give a filter_error with the position")
    {
        struct row {
            const char* text;
            std::size_t position;
            const char* directive;
        };
        const std::vector<row> rows = {
            {"orders=loud", 7, "orders=loud"},
            {"info,orders=loud", 12, "orders=loud"},
            {"[unclosed", 0, "[unclosed"},
            {"info, [unclosed", 6, "[unclosed"},
            {"a{b=}", 1, "a{b=}"},
            {"[s{b=}]", 5, "[s{b=}]"},
            {"[s{b=1]", 6, "[s{b=1]"},
            {"[s{}]", 2, "[s{}]"},
            {"[s{a,}]", 5, "[s{a,}]"},
            {"[s{a=1,a=2}]", 7, "[s{a=1,a=2}]"},
            {"[s{=1}]", 3, "[s{=1}]"},
            {"[]", 0, "[]"},
            {"[]=info", 0, "[]=info"},
            {"=debug", 0, "=debug"},
            {"info debug", 5, "info debug"},
            {"orders[x]y", 9, "orders[x]y"},
            {"[x]]", 3, "[x]]"},
            {"[s{v=\"open}]", 5, "[s{v=\"open}]"},
            {"[s{v=\"a\\n\"}]", 7, "[s{v=\"a\\n\"}]"},
            {"orders=6", 7, "orders=6"},
            {"orders=debug=x", 7, "orders=debug=x"},
            {"warn,!x", 5, "!x"},
        };
        for (const auto& r : rows) {
            CAPTURE(r.text);
            auto parsed = parse_filter(r.text);
            REQUIRE(std::holds_alternative<filter_error>(parsed));
            const auto& err = std::get<filter_error>(parsed);
            CAPTURE(err.message);
            CHECK(err.position == r.position);
            CHECK(err.directive == r.directive);
            CHECK_FALSE(err.message.empty());
        }
        auto loud = std::get<filter_error>(parse_filter("orders=loud"));
        CHECK(loud.message.find("loud") != std::string::npos);
    }

    TEST_CASE("to_string normalises and round-trips")
    {
        struct row {
            const char* in;
            const char* out;
        };
        const std::vector<row> rows = {
            {"info,orders=debug,orders[checkout{user=alice}]=trace",
             "info,orders=debug,orders[checkout{user=alice}]=trace"},
            {"orders[checkout{user=alice}]=trace,orders=debug,info",
             "info,orders=debug,orders[checkout{user=alice}]=trace"},
            {"", "error"},
            {"INFO", "info"},
            {"4", "debug"},
            {"orders", "orders=trace"},
            {"orders=", "orders=trace"},
            {"[checkout]", "[checkout]=trace"},
            {"[{b, a=2}]=warn", "[{a=2,b}]=warn"},
            {" warn , , app=OFF ", "warn,app=off"},
            {"[s{v=\"42\"}]=info", "[s{v=\"42\"}]=info"},
            {"[s{v=\"a b\"}]=info", "[s{v=\"a b\"}]=info"},
            {"[s{v=\"plain\"}]=info", "[s{v=plain}]=info"},
            {"[s{v=2.0}]=info", "[s{v=2.0}]=info"},
            {"[s{v=-1.25e10,w=true,x=-3}]=info", "[s{v=-1.25e+10,w=true,x=-3}]=info"},
            {"[event src/x.cpp:1]=debug", "[event src/x.cpp:1]=debug"},
        };
        for (const auto& r : rows) {
            CAPTURE(r.in);
            const filter f = must_parse(r.in);
            CHECK(f.to_string() == r.out);
            const filter again = must_parse(f.to_string());
            CHECK(again.to_string() == f.to_string());
        }

        // the re-parsed filter decides the same
        const filter f = must_parse("warn,orders::x=debug,[checkout{user=\"a,b\",n=3}]=trace,[{id}]=info");
        const filter g = must_parse(f.to_string());
        const auto checkout = span("checkout", "orders", I, {"user", "n"});
        const model::field_values vals = {{"user", std::string("a,b")}, {"n", std::uint64_t{3}}};
        const span_view scope[] = {{&checkout, &vals}};
        for (const auto& cs : {event("orders::x", D), event("orders::x", T), event("app", I, {"id"}),
                               event("app", I), event("app", W), checkout}) {
            CAPTURE(cs.target);
            CHECK(f.interest(cs) == g.interest(cs));
            CHECK(f.enabled(cs) == g.enabled(cs));
            CHECK(f.enabled(cs, scope) == g.enabled(cs, scope));
            CHECK(f.enabled(cs, {}, &vals) == g.enabled(cs, {}, &vals));
        }
        CHECK(f.enabled(event("app", T), scope));
    }

    TEST_CASE("level names")
    {
        CHECK(tt::host::to_string(level_filter::off) == "off");
        CHECK(tt::host::to_string(level_filter::trace) == "trace");
        CHECK(static_cast<std::uint32_t>(level_filter::info) == TT_LEVEL_INFO);
    }
}
