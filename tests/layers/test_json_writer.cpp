// The text layers write their lines by hand (no Boost.JSON tree, no fmt per
// value). These tests hold the hand-written encoders to the libraries that
// defined the output before: every JSON line must be byte for byte what a
// Boost.JSON tree of the same event serialized to (and parse back to the
// same values), and every console float what fmt's "{}" printed.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/layers.hpp>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace th = tt::host;
namespace model = tt::model;

namespace {

// The reference: the JSON layer's former encoder, a Boost.JSON tree per line.
boost::json::value reference_value(const model::value& v)
{
    return std::visit(
        [&](const auto& x) -> boost::json::value {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::int64_t> ||
                          std::is_same_v<T, std::uint64_t>) {
                return boost::json::value(x);
            } else if constexpr (std::is_same_v<T, model::i128>) {
                if (x >= std::numeric_limits<std::int64_t>::min() && x <= std::numeric_limits<std::int64_t>::max())
                    return boost::json::value(static_cast<std::int64_t>(x));
                if (x > 0 && static_cast<model::u128>(x) <= std::numeric_limits<std::uint64_t>::max())
                    return boost::json::value(static_cast<std::uint64_t>(x));
                return boost::json::value(model::to_decimal(x));
            } else if constexpr (std::is_same_v<T, model::u128>) {
                if (x <= std::numeric_limits<std::uint64_t>::max())
                    return boost::json::value(static_cast<std::uint64_t>(x));
                return boost::json::value(model::to_decimal(x));
            } else if constexpr (std::is_same_v<T, double>) {
                if (std::isnan(x))
                    return boost::json::value("NaN");
                if (std::isinf(x))
                    return boost::json::value(x < 0 ? "-inf" : "inf");
                return boost::json::value(x);
            } else if constexpr (std::is_same_v<T, std::string>) {
                return boost::json::value(x);
            } else if constexpr (std::is_same_v<T, model::debug_text>) {
                return boost::json::value(x.text);
            } else {
                std::string joined;
                for (std::size_t i = 0; i < x.chain.size(); ++i)
                    joined += (i ? ": " : "") + x.chain[i];
                return boost::json::value(joined);
            }
        },
        v);
}

boost::json::object reference_span(const th::span_ref& s)
{
    boost::json::object o;
    o["name"] = s.name();
    for (const auto& [name, v] : *s.fields)
        o[name] = reference_value(v);
    return o;
}

std::string reference_line(const th::event_view& ev, const th::json_options& opts)
{
    boost::json::object o;
    o["timestamp"] = *opts.fixed_time;
    o["level"] = "INFO";
    boost::json::object fields;
    for (const auto& f : ev.values)
        if (f.value)
            fields[f.name] = reference_value(f.value.to_value());
    o["fields"] = std::move(fields);
    o["target"] = ev.site->target;
    if (!ev.plugin.empty())
        o["plugin"] = ev.plugin;
    if (opts.with_location) {
        o["filename"] = ev.site->file;
        o["line_number"] = ev.site->line;
    }
    if (opts.with_spans && !ev.spans.empty()) {
        o["span"] = reference_span(ev.spans.back());
        boost::json::array spans;
        for (const auto& s : ev.spans)
            spans.push_back(reference_span(s));
        o["spans"] = std::move(spans);
    }
    return boost::json::serialize(o) + "\n";
}

model::callsite site(std::string target = "orders::billing")
{
    model::callsite cs;
    cs.id = 1;
    cs.kind = model::callsite_kind::event;
    cs.level = model::level::info;
    cs.name = "event";
    cs.target = std::move(target);
    cs.file = "src/billing.cpp";
    cs.line = 42;
    return cs;
}

struct event_fixture {
    model::callsite event_site = site();
    std::vector<std::pair<std::string, model::value>> values;
    std::vector<th::field_ref> refs;

    th::event_view view()
    {
        refs.clear();
        for (const auto& [n, v] : values)
            refs.push_back(th::field_ref{n, v});
        th::event_view ev;
        ev.site = &event_site;
        ev.plugin = "orders";
        ev.values = refs;
        ev.time = th::clock::now();
        ev.thread = std::this_thread::get_id();
        return ev;
    }
};

th::json_options fixed_options()
{
    th::json_options o;
    o.fixed_time = "2026-11-23T12:00:00.000000Z";
    o.with_thread_ids = false;
    o.with_location = true;
    return o;
}

std::string every_byte_below_0x80()
{
    std::string s;
    for (int c = 0; c < 0x80; ++c)
        s += static_cast<char>(c);
    return s;
}

// Deterministic double bit patterns: every exponent, random mantissas.
std::vector<double> many_doubles(std::size_t n)
{
    std::vector<double> out;
    std::uint64_t x = 0x9E3779B97F4A7C15ull;
    while (out.size() < n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const double d = std::bit_cast<double>(x);
        if (std::isfinite(d))
            out.push_back(d);
    }
    // Values people log: small integers, halves, decimals, powers of ten.
    for (int i = -2000; i <= 2000; ++i) {
        out.push_back(i * 0.5);
        out.push_back(i * 0.1);
        out.push_back(i / 3.0);
    }
    for (int e = -320; e <= 308; ++e) {
        out.push_back(std::pow(10.0, e));
        out.push_back(-1.5 * std::pow(10.0, e));
    }
    return out;
}

// A console line with only level, message and fields: what the value
// encodings are checked against.
th::console_options bare_console()
{
    th::console_options co;
    co.color = th::color_mode::never;
    co.show_time = false;
    co.show_thread_ids = false;
    co.show_target = false;
    return co;
}

}  // namespace

TEST_CASE("JSON lines are byte for byte what Boost.JSON serialized, and parse back")
{
    event_fixture fx;
    fx.values = {
        {"message", std::string("charged \"twice\"")},
        {"controls", every_byte_below_0x80()},
        {"del", std::string("a\x7f" "b")},
        {"utf8", std::string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad")},
        {"empty", std::string()},
        {"slashes", std::string("\\\\ / \\\" \\n")},
        {"i64_min", std::numeric_limits<std::int64_t>::min()},
        {"i64_max", std::numeric_limits<std::int64_t>::max()},
        {"u64_max", std::numeric_limits<std::uint64_t>::max()},
        {"zero", std::int64_t{0}},
        {"neg", std::int64_t{-42}},
        {"i128_small", model::i128(-7)},
        {"i128_u64", model::i128(std::numeric_limits<std::uint64_t>::max())},
        {"i128_big", -(model::i128(1) << 100)},
        {"u128_small", model::u128(9)},
        {"u128_big", model::u128(1) << 127},
        {"neg_zero", -0.0},
        {"pos_zero", 0.0},
        {"huge", 1e300},
        {"tiny", 5e-324},
        {"max", std::numeric_limits<double>::max()},
        {"ratio", 1.0},
        {"half", 61.5},
        {"third", 1.0 / 3.0},
        {"nan", std::nan("")},
        {"inf", std::numeric_limits<double>::infinity()},
        {"ninf", -std::numeric_limits<double>::infinity()},
        {"yes", true},
        {"no", false},
        {"dbg", model::debug_text{"Point { x: \"1\" }\n"}},
        {"err", model::error_chain{{"outer \"quoted\"", "inner\tcause", "root"}}},
        {"err_empty", model::error_chain{}},
        {"", std::string("an empty key")},
        {"k\"ey\n", std::string("an escaped key")},
    };
    const auto opts = fixed_options();
    th::json_layer layer(th::line_writer(stdout), opts);
    const auto ev = fx.view();
    const std::string line = layer.format_event(ev);
    CHECK(line == reference_line(ev, opts));

    // And the library reads back what was sent.
    const auto parsed = boost::json::parse(line).as_object();
    const auto& f = parsed.at("fields").as_object();
    CHECK(f.at("message") == "charged \"twice\"");
    CHECK(f.at("controls").as_string() == every_byte_below_0x80());
    CHECK(f.at("utf8") == "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad");
    CHECK(f.at("empty") == "");
    CHECK(f.at("i64_min") == std::numeric_limits<std::int64_t>::min());
    CHECK(f.at("u64_max") == std::numeric_limits<std::uint64_t>::max());
    CHECK(f.at("i128_big") == "-1267650600228229401496703205376");
    CHECK(f.at("neg_zero").as_double() == 0.0);
    CHECK(std::signbit(f.at("neg_zero").as_double()));
    CHECK(f.at("huge").as_double() == 1e300);
    CHECK(f.at("tiny").as_double() == 5e-324);
    CHECK(f.at("nan") == "NaN");
    CHECK(f.at("ninf") == "-inf");
    CHECK(f.at("err") == "outer \"quoted\": inner\tcause: root");
    CHECK(f.at("") == "an empty key");
    CHECK(f.at("k\"ey\n") == "an escaped key");
    CHECK(parsed.at("line_number") == 42);
}

TEST_CASE("JSON: a repeated key keeps its first place and its last value, as the tree did")
{
    event_fixture fx;
    fx.values = {{"a", std::int64_t{1}}, {"b", std::string("x")}, {"a", std::int64_t{2}}, {"c", 1.5},
                 {"b", std::string("y")}};
    model::callsite span_site = site();
    span_site.name = "order";
    const model::field_values span_fields{{"id", std::int64_t{7}}, {"name", std::string("renamed")},
                                          {"id", std::int64_t{8}}};
    const model::field_values plain_fields{{"n", 0.25}};
    model::callsite inner_site = site();
    inner_site.name = "charge";
    std::vector<th::span_ref> spans(2);
    spans[0].id = 1;
    spans[0].site = &span_site;
    spans[0].fields = &span_fields;
    spans[1].id = 2;
    spans[1].site = &inner_site;
    spans[1].fields = &plain_fields;
    auto ev = fx.view();
    ev.spans = spans;

    const auto opts = fixed_options();
    th::json_layer layer(th::line_writer(stdout), opts);
    const std::string line = layer.format_event(ev);
    CHECK(line == reference_line(ev, opts));
    CHECK(line.find(R"("fields":{"a":2,"b":"y","c":1.5E0})") != std::string::npos);
    CHECK(line.find(R"({"name":"renamed","id":8})") != std::string::npos);
}

TEST_CASE("JSON doubles: Boost.JSON's bytes for every exponent and many mantissas")
{
    const auto doubles = many_doubles(60000);
    const auto opts = fixed_options();
    th::json_layer layer(th::line_writer(stdout), opts);
    std::size_t checked = 0;
    std::size_t mismatches = 0;
    for (std::size_t at = 0; at < doubles.size(); at += 500) {
        event_fixture fx;
        for (std::size_t i = at; i < std::min(doubles.size(), at + 500); ++i)
            fx.values.emplace_back(fmt::format("d{}", i - at), doubles[i]);
        const auto ev = fx.view();
        const std::string line = layer.format_event(ev);
        const std::string expected = reference_line(ev, opts);
        if (line != expected && ++mismatches <= 3)
            CHECK(line == expected);
        checked += fx.values.size();
    }
    CHECK(mismatches == 0);
    CHECK(checked == doubles.size());
}

TEST_CASE("Console floats are fmt's shortest form, with .0 when that has no point or exponent")
{
    th::console_layer layer(th::line_writer(stdout), bare_console());
    auto doubles = many_doubles(60000);
    doubles.insert(doubles.end(), {0.0, -0.0, 1e16, 1e15, 123456789012345678.0, 1e-4, 1e-5, 0.00012, 5e-324,
                                   std::numeric_limits<double>::max(), std::nan(""),
                                   std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()});
    std::size_t mismatches = 0;
    for (const double d : doubles) {
        std::string expected;
        if (std::isnan(d)) {
            expected = "NaN";
        } else if (std::isinf(d)) {
            expected = d < 0 ? "-inf" : "inf";
        } else {
            expected = fmt::format("{}", d);
            if (expected.find_first_of(".e") == std::string::npos)
                expected += ".0";
        }
        event_fixture fx;
        fx.values = {{"message", std::string("m")}, {"v", d}};
        const std::string line = layer.format_event(fx.view());
        if (line != " INFO m v=" + expected + "\n" && ++mismatches <= 3)
            CHECK(line == " INFO m v=" + expected + "\n");
    }
    CHECK(mismatches == 0);
}

TEST_CASE("Console strings escape as Rust's Debug: every control character")
{
    th::console_layer layer(th::line_writer(stdout), bare_console());
    event_fixture fx;
    fx.values = {{"message", std::string("m")}, {"s", std::string("\x01\x1b\x1f\x7f\t\n\r\0 \"\\ \xc3\xa9", 14)}};
    CHECK(layer.format_event(fx.view()) == " INFO m s=\"\\u{1}\\u{1b}\\u{1f}\\u{7f}\\t\\n\\r\\0 \\\"\\\\ \xc3\xa9\"\n");
}

TEST_CASE("Escapes are found at every place of strings of every length up to 25 (the escapers test words)")
{
    const std::string specials("\0\x01\x1f\"\\\x7f\n\xc3", 8);
    event_fixture fx;
    std::vector<std::string> texts;
    for (std::size_t len = 1; len <= 25; ++len)
        for (std::size_t pos = 0; pos < len; ++pos)
            for (const char c : specials) {
                std::string t(len, 'x');
                t[pos] = c;
                if (c == '\xc3' && pos + 1 < t.size())
                    t[pos + 1] = '\xa9';  // a whole UTF-8 sequence
                texts.push_back(t);
                fx.values.emplace_back(fmt::format("s{}", texts.size()), t);
            }
    const auto opts = fixed_options();
    th::json_layer json(th::line_writer(stdout), opts);
    const auto ev = fx.view();
    CHECK(json.format_event(ev) == reference_line(ev, opts));

    th::console_layer console(th::line_writer(stdout), bare_console());
    for (const auto& t : texts) {
        std::string expected = " INFO m v=\"";
        for (const char ch : t) {
            // Rust's str Debug of each special.
            const std::string_view escaped = ch == '\0'     ? "\\0"
                                             : ch == '\n'   ? "\\n"
                                             : ch == '"'    ? "\\\""
                                             : ch == '\\'   ? "\\\\"
                                             : ch == '\x01' ? "\\u{1}"
                                             : ch == '\x1f' ? "\\u{1f}"
                                             : ch == '\x7f' ? "\\u{7f}"
                                                            : std::string_view();
            if (escaped.empty())
                expected += ch;
            else
                expected += escaped;
        }
        expected += "\"\n";
        event_fixture one;
        one.values = {{"message", std::string("m")}, {"v", t}};
        CHECK(console.format_event(one.view()) == expected);
    }
}
