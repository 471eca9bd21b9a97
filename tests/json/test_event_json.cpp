// The JSON lines form of the event model: round trips, exact spelling,
// refused lines with their error codes and positions, the stream header, and
// the tracing-tunnel reader over the crate's real output.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/event_json.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace m = tt::model;
using namespace std::string_literals;

namespace {

const m::i128 i128_min = static_cast<m::i128>(m::u128(1) << 127);
const m::i128 i128_max = static_cast<m::i128>((m::u128(1) << 127) - 1);
const m::u128 u128_max = ~m::u128(0);

double from_bits(std::uint64_t bits)
{
    return std::bit_cast<double>(bits);
}

std::uint64_t bits_of(double d)
{
    return std::bit_cast<std::uint64_t>(d);
}

// Writes ev, reads it back, and checks nothing changed, not even a NaN
// payload; writing the result again must give the same line.
m::event round_trip(const m::event& ev)
{
    const std::string line = m::to_json_line(ev);
    INFO("line: ", line);
    CHECK(line.find('\n') == std::string::npos);
    auto r = m::event_from_json_line(line);
    if (!r)
        FAIL("refused: ", m::to_string(r.error()));
    CHECK(m::same_event(r.value(), ev));
    CHECK(m::to_json_line(r.value()) == line);
    return std::move(r).value();
}

const m::field_values& values_of(const m::event& ev)
{
    if (auto* s = std::get_if<m::new_span>(&ev))
        return s->values;
    if (auto* e = std::get_if<m::new_event>(&ev))
        return e->values;
    return std::get<m::values_recorded>(ev).values;
}

m::callsite sample_callsite()
{
    m::callsite cs;
    cs.id = 0xfedcba9876543210ull;
    cs.kind = m::callsite_kind::span;
    cs.level = m::level::debug;
    cs.name = "checkout";
    cs.target = "orders::checkout";
    cs.module_path = "orders";
    cs.file = "src/orders.cpp";
    cs.line = 4294967295u;
    cs.fields = {"amount", "user", "http.status", "", "名前"};
    return cs;
}

m::field_values every_value()
{
    return {
        {"t", true},
        {"f", false},
        {"i64_min", std::numeric_limits<std::int64_t>::min()},
        {"i64_max", std::numeric_limits<std::int64_t>::max()},
        {"u64_zero", std::uint64_t{0}},
        {"u64_max", std::numeric_limits<std::uint64_t>::max()},
        {"i128_min", i128_min},
        {"i128_max", i128_max},
        {"i128_zero", m::i128{0}},
        {"u128_max", u128_max},
        {"tenth", 0.1},
        {"zero", 0.0},
        {"neg_zero", -0.0},
        {"denorm_min", 5e-324},
        {"max", std::numeric_limits<double>::max()},
        {"norm_min", std::numeric_limits<double>::min()},
        {"whole", 5.0},
        {"big", 1e300},
        {"inf", std::numeric_limits<double>::infinity()},
        {"neg_inf", -std::numeric_limits<double>::infinity()},
        {"nan", std::numeric_limits<double>::quiet_NaN()},
        {"neg_nan", from_bits(0xfff8000000000000ull)},
        {"signalling_nan", from_bits(0x7ff0000000000001ull)},
        {"payload_nan", from_bits(0x7ff8dead0000beefull)},
        {"empty", ""s},
        {"text", "Grüße, мир — \"quoted\"\nsecond line\ttab \\ backslash 🚀 \x01 \x1f"s},
        {"nul", "a\0b"s},
        {"debug", m::debug_text{"[1, 2] {\"k\": \"v\"}"}},
        {"empty_debug", m::debug_text{}},
        {"error", m::error_chain{{"cannot load config.toml", "parse error at line 3", "unexpected end of file"}}},
        {"single_error", m::error_chain{{"boom"}}},
        {"", "an empty field name"s},
    };
}

}  // namespace

TEST_CASE("every event kind round trips")
{
    round_trip(m::new_callsite{sample_callsite()});
    m::callsite minimal;  // empty strings, no fields, line 0
    minimal.id = 1;
    round_trip(m::new_callsite{minimal});

    round_trip(m::new_span{.id = 42, .callsite_id = 0x1234abcd, .parent = m::parent_mode::contextual, .parent_id = 0,
                           .values = every_value()});
    round_trip(m::new_span{.id = std::numeric_limits<std::uint64_t>::max(),
                           .callsite_id = std::numeric_limits<std::uint64_t>::max(),
                           .parent = m::parent_mode::explicit_span,
                           .parent_id = (1ull << 63) - 1,
                           .values = {}});
    round_trip(m::new_span{.id = 1, .callsite_id = 1, .parent = m::parent_mode::root, .parent_id = 0, .values = {}});
    round_trip(m::follows_from{9007199254740993ull, 18446744073709551615ull});
    round_trip(m::span_entered{1});
    round_trip(m::span_exited{2});
    round_trip(m::span_cloned{3});
    round_trip(m::span_dropped{0});
    round_trip(m::values_recorded{7, every_value()});
    round_trip(m::new_event{.callsite_id = 0xcbf29ce484222325ull, .parent = m::parent_mode::explicit_span,
                            .parent_id = 5, .values = every_value()});
    round_trip(m::new_event{.callsite_id = 2, .parent = m::parent_mode::root, .parent_id = 0, .values = {}});
}

TEST_CASE("values keep their exact bits, order and duplicates")
{
    const m::event back = round_trip(m::values_recorded{7, every_value()});
    const m::field_values& vals = values_of(back);
    const m::field_values expected = every_value();
    REQUIRE(vals.size() == expected.size());
    for (std::size_t i = 0; i < vals.size(); ++i) {
        CHECK(vals[i].first == expected[i].first);
        CHECK(vals[i].second.index() == expected[i].second.index());
        if (const double* d = std::get_if<double>(&vals[i].second))
            CHECK(bits_of(*d) == bits_of(std::get<double>(expected[i].second)));
    }
    CHECK(std::get<std::string>(vals[26].second) == "a\0b"s);

    // The model allows a name twice (two recordings); the line keeps both, in order.
    const m::field_values dup{{"b", 1.5}, {"a", "x"s}, {"b", 2.5}};
    CHECK(values_of(round_trip(m::values_recorded{1, dup})).size() == 3);

    // An empty error chain is outside the ABI contract but still a total round trip.
    round_trip(m::values_recorded{1, {{"e", m::error_chain{}}}});
}

TEST_CASE("lines are spelled as docs/FORMAT.md says")
{
    CHECK(m::to_json_line(m::span_entered{7}) == R"({"span_entered":{"id":"7"}})");
    CHECK(m::to_json_line(m::follows_from{5, 3}) == R"({"follows_from":{"id":"5","cause":"3"}})");
    CHECK(m::to_json_line(m::new_callsite{sample_callsite()}) ==
          R"({"new_callsite":{"id":"0xfedcba9876543210","kind":"span","level":"debug","name":"checkout",)"
          R"("target":"orders::checkout","module_path":"orders","file":"src/orders.cpp","line":4294967295,)"
          R"("fields":["amount","user","http.status","","名前"]}})");
    CHECK(m::to_json_line(m::new_span{.id = 12, .callsite_id = 0x1234abcd, .parent = m::parent_mode::explicit_span,
                                      .parent_id = 3, .values = {{"n", std::uint64_t{5}}, {"ok", true}}}) ==
          R"({"new_span":{"id":"12","callsite":"0x000000001234abcd","parent":{"span":"3"},)"
          R"("values":[["n",{"u64":"5"}],["ok",{"bool":true}]]}})");
    CHECK(m::to_json_line(m::new_event{.callsite_id = 1, .parent = m::parent_mode::contextual, .parent_id = 0,
                                       .values = {}}) ==
          R"({"new_event":{"callsite":"0x0000000000000001","parent":"contextual","values":[]}})");

    auto value_line = [](m::value v) {
        const std::string line = m::to_json_line(m::values_recorded{1, {{"v", std::move(v)}}});
        const std::string head = R"({"values_recorded":{"id":"1","values":[["v",)";
        REQUIRE(line.starts_with(head));
        return line.substr(head.size(), line.size() - head.size() - 4);
    };
    CHECK(value_line(std::int64_t{-5}) == R"({"i64":"-5"})");
    CHECK(value_line(i128_min) == R"({"i128":"-170141183460469231731687303715884105728"})");
    CHECK(value_line(i128_max) == R"({"i128":"170141183460469231731687303715884105727"})");
    CHECK(value_line(u128_max) == R"({"u128":"340282366920938463463374607431768211455"})");
    CHECK(value_line(m::u128(1) << 64) == R"({"u128":"18446744073709551616"})");
    CHECK(value_line(5.0) == R"({"f64":5.0})");
    CHECK(value_line(-0.0) == R"({"f64":-0.0})");
    CHECK(value_line(0.1) == R"({"f64":0.1})");
    CHECK(value_line(5e-324) == R"({"f64":5e-324})");
    CHECK(value_line(std::numeric_limits<double>::quiet_NaN()) == R"({"f64":"NaN"})");
    CHECK(value_line(from_bits(0xfff8000000000000ull)) == R"({"f64":"NaN:0xfff8000000000000"})");
    CHECK(value_line(-std::numeric_limits<double>::infinity()) == R"({"f64":"-inf"})");
    CHECK(value_line("q\"\\\n\x01"s) == R"({"str":"q\"\\\n\u0001"})");
    CHECK(value_line(m::debug_text{"[1]"}) == R"({"debug":"[1]"})");
    CHECK(value_line(m::error_chain{{"a", "b"}}) == R"({"error":["a","b"]})");
}

TEST_CASE("the buffer overload appends")
{
    std::string buf = "previous\n";
    m::to_json_line(m::span_exited{4}, buf);
    m::to_json_line(m::span_dropped{4}, buf);
    CHECK(buf == "previous\n{\"span_exited\":{\"id\":\"4\"}}{\"span_dropped\":{\"id\":\"4\"}}");
}

TEST_CASE("invalid UTF-8 in the model is written as U+FFFD, so the line stays readable")
{
    const m::event ev = m::values_recorded{1, {{"s\xff", "a\xc3(b\xed\xa0\x80"s}}};
    const std::string line = m::to_json_line(ev);
    auto r = m::event_from_json_line(line);
    REQUIRE(r.ok());
    const auto& vals = values_of(r.value());
    CHECK(vals[0].first == "s\xEF\xBF\xBD");
    CHECK(std::get<std::string>(vals[0].second) == "a\xEF\xBF\xBD(b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("whitespace around and inside a line is accepted")
{
    auto r = m::event_from_json_line(" \t{ \"span_entered\" : { \"id\" : \"3\" } }\r\n");
    REQUIRE(r.ok());
    CHECK(m::same_event(r.value(), m::span_entered{3}));
}

namespace {

struct bad_line {
    std::string what;
    std::string line;
    m::json_error_code code;
    std::string path;
    std::size_t offset;
};

// Offset of the first occurrence of `needle` in `line`: keeps the table honest
// without counting bytes by hand.
std::size_t at(const std::string& line, const std::string& needle)
{
    const auto p = line.find(needle);
    REQUIRE(p != std::string::npos);
    return p;
}

}  // namespace

TEST_CASE("malformed lines are refused with their code and position")
{
    using c = m::json_error_code;
    const std::string truncated = R"({"new_span":{"id":"1","callsite":"0x12)";
    const std::string bad_utf8 = "{\"new_event\":{\"callsite\":\"0x1\",\"parent\":\"root\",\"values\":[[\"s\",{\"str\":\"ab\xff\"}]]}}";
    const std::string bad_utf8_key = "{\"values_recorded\":{\"id\":\"1\",\"values\":[[\"\xc3(\",{\"bool\":true}]]}}";
    const std::string wide = R"({"values_recorded":{"id":"1","values":[["x",{"i128":"170141183460469231731687303715884105728"}]]}})";
    const std::string wide_u = R"({"values_recorded":{"id":"1","values":[["x",{"u128":"340282366920938463463374607431768211456"}]]}})";
    const std::string neg_u = R"({"values_recorded":{"id":"1","values":[["x",{"u64":"-1"}]]}})";
    const std::string unknown_type = R"({"values_recorded":{"id":"1","values":[["x",{"i32":"5"}]]}})";
    const std::string nan_bits = R"({"values_recorded":{"id":"1","values":[["x",{"f64":"NaN:0x7ff0000000000000"}]]}})";
    const std::string bad_float = R"({"values_recorded":{"id":"1","values":[["x",{"f64":"Infinity"}]]}})";
    const std::string huge_float = R"({"values_recorded":{"id":"1","values":[["x",{"f64":1e999}]]}})";
    const std::string triple = R"({"values_recorded":{"id":"1","values":[["x",{"bool":true},3]]}})";
    const std::string two_types = R"({"values_recorded":{"id":"1","values":[["x",{"bool":true,"str":"y"}]]}})";
    const std::string bad_level =
        R"({"new_callsite":{"id":"0x1","kind":"span","level":"loud","name":"n","target":"t","module_path":"","file":"","line":1,"fields":[]}})";
    const std::string neg_line =
        R"({"new_callsite":{"id":"0x1","kind":"span","level":"info","name":"n","target":"t","module_path":"","file":"","line":-1,"fields":[]}})";
    const std::string no_fields =
        R"({"new_callsite":{"id":"0x1","kind":"span","level":"info","name":"n","target":"t","module_path":"","file":"","line":1}})";
    const std::string bad_parent = R"({"new_event":{"callsite":"0x1","parent":"sideways","values":[]}})";
    const std::string hex_long = R"({"new_event":{"callsite":"0x10000000000000000","parent":"root","values":[]}})";
    const std::string hex_bad = R"({"new_event":{"callsite":"1234","parent":"root","values":[]}})";
    const std::string escaped_key = R"({"span_entered":{"i\u0064":"1","x\/y":"2"}})";

    const std::vector<bad_line> table = {
        {"not JSON at all", "hello", c::invalid_json, "", 0},
        {"invalid JSON", R"({"span_entered" {"id":"1"}})", c::invalid_json, "/span_entered", 16},
        {"trailing comma", R"({"span_entered":{"id":"1",}})", c::invalid_json, "/span_entered", 26},
        {"empty line", "", c::invalid_json, "", 0},
        {"truncated line", truncated, c::invalid_json, "/new_span/callsite", truncated.size()},
        {"bytes after the object", R"({"span_entered":{"id":"1"}} {})", c::invalid_json, "", 28},
        {"not an object", "[1,2]", c::not_an_object, "", 0},
        {"a string", R"("span_entered")", c::not_an_object, "", 0},
        {"empty object", "{}", c::missing_field, "", 0},
        {"two event kinds", R"({"span_entered":{"id":"1"},"span_exited":{"id":"1"}})", c::unknown_field,
         "/span_exited", 41},
        {"unknown kind", R"({"span_teleported":{"id":"1"}})", c::unknown_kind, "/span_teleported", 19},
        {"header given as event", R"({"tracetunnel":"events","format":1})", c::unknown_kind, "", 0},
        {"body not an object", R"({"span_entered":"1"})", c::wrong_type, "/span_entered", 16},
        {"missing field", R"({"span_entered":{}})", c::missing_field, "/span_entered/id", 16},
        {"missing values", no_fields, c::missing_field, "/new_callsite/fields", 16},
        {"unknown field", R"({"span_entered":{"id":"1","idd":"2"}})", c::unknown_field, "/span_entered/idd", 32},
        {"duplicate field", R"({"span_entered":{"id":"1","id":"2"}})", c::duplicate_field, "/span_entered/id", 22},
        {"escaped keys are matched unescaped", escaped_key, c::unknown_field, "/span_entered/x~1y",
         at(escaped_key, R"("2")")},
        {"id as a number", R"({"span_entered":{"id":7}})", c::wrong_type, "/span_entered/id", 22},
        {"negative id", R"({"span_entered":{"id":"-7"}})", c::out_of_range, "/span_entered/id", 22},
        {"id out of range", R"({"span_entered":{"id":"18446744073709551616"}})", c::out_of_range,
         "/span_entered/id", 22},
        {"id not decimal", R"({"span_entered":{"id":"12a"}})", c::invalid_value, "/span_entered/id", 22},
        {"id with a plus", R"({"span_entered":{"id":"+1"}})", c::invalid_value, "/span_entered/id", 22},
        {"cause missing", R"({"follows_from":{"id":"1"}})", c::missing_field, "/follows_from/cause", 16},
        {"i128 out of range", wide, c::out_of_range, "/values_recorded/values/0/1/i128", at(wide, R"("1701)")},
        {"u128 out of range", wide_u, c::out_of_range, "/values_recorded/values/0/1/u128", at(wide_u, R"("3402)")},
        {"negative u64", neg_u, c::out_of_range, "/values_recorded/values/0/1/u64", at(neg_u, R"("-1")")},
        {"unknown value type", unknown_type, c::unknown_kind, "/values_recorded/values/0/1/i32",
         at(unknown_type, R"("5")")},
        {"NaN spelling with non-NaN bits", nan_bits, c::invalid_value, "/values_recorded/values/0/1/f64",
         at(nan_bits, R"("NaN:)")},
        {"unknown float spelling", bad_float, c::invalid_value, "/values_recorded/values/0/1/f64",
         at(bad_float, R"("Inf)")},
        {"float beyond double", huge_float, c::out_of_range, "/values_recorded/values/0/1/f64",
         at(huge_float, "1e999")},
        {"pair of three", triple, c::invalid_value, "/values_recorded/values/0", at(triple, R"(["x")")},
        {"value with two types", two_types, c::unknown_field, "/values_recorded/values/0/1/str",
         at(two_types, R"("y")")},
        {"values not an array", R"({"values_recorded":{"id":"1","values":{}}})", c::wrong_type,
         "/values_recorded/values", 38},
        {"invalid UTF-8 in a string", bad_utf8, c::invalid_utf8, "/new_event/values/0/1/str", at(bad_utf8, "\xff")},
        {"invalid UTF-8 in a field name", bad_utf8_key, c::invalid_utf8, "/values_recorded/values/0/0",
         at(bad_utf8_key, "\xc3")},
        {"unknown level", bad_level, c::invalid_value, "/new_callsite/level", at(bad_level, R"("loud")")},
        {"negative line", neg_line, c::out_of_range, "/new_callsite/line", at(neg_line, "-1")},
        {"unknown parent", bad_parent, c::invalid_value, "/new_event/parent", at(bad_parent, R"("sideways")")},
        {"call-site id beyond 64 bits", hex_long, c::out_of_range, "/new_event/callsite", at(hex_long, R"("0x1)")},
        {"call-site id without 0x", hex_bad, c::invalid_value, "/new_event/callsite", at(hex_bad, R"("1234")")},
    };

    for (const bad_line& b : table) {
        INFO(b.what, ": ", b.line);
        const auto r = m::event_from_json_line(b.line);
        REQUIRE_FALSE(r.ok());
        const m::json_error& e = r.error();
        INFO("got: ", m::to_string(e));
        CHECK(m::to_string(e.code) == m::to_string(b.code));
        CHECK(e.path == b.path);
        CHECK(e.offset == b.offset);
        CHECK(e.offset <= b.line.size());
        CHECK_FALSE(e.message.empty());
        CHECK(m::to_string(e).find("at byte " + std::to_string(e.offset)) != std::string::npos);
    }
}

TEST_CASE("the stream header")
{
    const std::string header = m::stream_header();
    CHECK(header == R"({"tracetunnel":"events","format":1})");
    CHECK(m::is_stream_header(header));
    CHECK_FALSE(m::check_stream_header(header).has_value());
    CHECK_FALSE(m::check_stream_header(R"( {"format":1,"tracetunnel":"events","writer":"tt-host 0.1"} )").has_value());

    const std::string newer = R"({"tracetunnel":"events","format":2})";
    CHECK(m::is_stream_header(newer));
    const auto err = m::check_stream_header(newer);
    REQUIRE(err.has_value());
    CHECK(err->code == m::json_error_code::unsupported_version);
    CHECK(err->path == "/format");
    CHECK(err->offset == newer.find('2'));
    CHECK(err->message.find("newer") != std::string::npos);

    const auto far_future = m::check_stream_header(R"({"tracetunnel":"events","format":100000000000000000000000000000000000000000})");
    REQUIRE(far_future.has_value());
    CHECK(far_future->code == m::json_error_code::unsupported_version);

    struct {
        std::string line;
        m::json_error_code code;
    } const refused[] = {
        {R"({"span_entered":{"id":"1"}})", m::json_error_code::not_a_header},
        {R"({"tracetunnel":"state","format":1})", m::json_error_code::not_a_header},
        {"[]", m::json_error_code::not_a_header},
        {"{", m::json_error_code::invalid_json},
        {R"({"tracetunnel":"events"})", m::json_error_code::missing_field},
        {R"({"tracetunnel":"events","format":"1"})", m::json_error_code::wrong_type},
        {R"({"tracetunnel":"events","format":1.5})", m::json_error_code::wrong_type},
        {R"({"tracetunnel":"events","format":0})", m::json_error_code::out_of_range},
    };
    for (const auto& r : refused) {
        INFO(r.line);
        CHECK_FALSE(m::is_stream_header(r.line));
        const auto e = m::check_stream_header(r.line);
        REQUIRE(e.has_value());
        CHECK(m::to_string(e->code) == m::to_string(r.code));
    }
}

TEST_CASE("no input makes a reader throw")
{
    // Every prefix of valid lines, and lines with bytes flipped by a fixed
    // pseudo-random sequence: each must give an event or an error, in range.
    std::vector<std::string> lines = {
        m::stream_header(),
        m::to_json_line(m::new_callsite{sample_callsite()}),
        m::to_json_line(m::new_event{.callsite_id = 3, .parent = m::parent_mode::explicit_span, .parent_id = 9,
                                     .values = every_value()}),
        R"({"new_span":{"id":3,"parent_id":2,"metadata_id":4,"values":{"e":{"error":{"message":"m","source":null}},"n":{"int":-170141183460469231731687303715884105728}}}})",
    };
    std::uint64_t state = 0x9E3779B97F4A7C15ull;
    auto next = [&] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        return state;
    };
    auto probe = [](const std::string& s) {
        for (auto* read : {&m::event_from_json_line, &m::event_from_tracing_tunnel_json}) {
            const auto r = read(s);
            if (!r)
                CHECK(r.error().offset <= s.size());
        }
        (void)m::check_stream_header(s);
        (void)m::is_stream_header(s);
    };
    for (const std::string& line : lines) {
        for (std::size_t n = 0; n < line.size(); ++n) {
            probe(line.substr(0, n));
            CHECK_FALSE(m::event_from_json_line(line.substr(0, n)).ok());
        }
        for (int i = 0; i < 2000; ++i) {
            std::string s = line;
            const int flips = 1 + static_cast<int>(next() % 3);
            for (int f = 0; f < flips; ++f)
                s[next() % s.size()] = static_cast<char>(next() & 0xFF);
            probe(s);
        }
    }
    // Deep nesting is refused as invalid JSON, not by running out of stack.
    probe(std::string(100000, '[') + std::string(100000, ']'));
    CHECK(m::event_from_json_line(std::string(100000, '[')).error().code == m::json_error_code::invalid_json);
}

// ----------------------------------------------------------------------------
// tracing-tunnel lines

namespace {

m::event tt_line(const std::string& line)
{
    INFO("line: ", line);
    auto r = m::event_from_tracing_tunnel_json(line);
    if (!r)
        FAIL("refused: ", m::to_string(r.error()));
    return std::move(r).value();
}

}  // namespace

TEST_CASE("tracing-tunnel lines map onto the model")
{
    const m::event cs = tt_line(
        R"({"new_call_site":{"id":94670210826152,"kind":"span","name":"test","target":"demo_plugin::scenarios","level":"info","module_path":"demo_plugin::scenarios","file":"src/scenarios.rs","line":72,"fields":["num"]}})");
    m::callsite want;
    want.id = 94670210826152ull;
    want.kind = m::callsite_kind::span;
    want.level = m::level::info;
    want.name = "test";
    want.target = "demo_plugin::scenarios";
    want.module_path = "demo_plugin::scenarios";
    want.file = "src/scenarios.rs";
    want.line = 72;
    want.fields = {"num"};
    CHECK(m::same_event(cs, m::new_callsite{want}));

    // Optional keys omitted (or null) read as empty / 0; unknown keys are ignored as serde does.
    const m::event bare = tt_line(
        R"({"new_call_site":{"id":18446744073709551615,"kind":"event","name":"e","target":"t","level":"trace","file":null,"fields":[],"extra":1}})");
    m::callsite bare_want;
    bare_want.id = 18446744073709551615ull;
    bare_want.kind = m::callsite_kind::event;
    bare_want.level = m::level::trace;
    bare_want.name = "e";
    bare_want.target = "t";
    CHECK(m::same_event(bare, m::new_callsite{bare_want}));

    CHECK(m::same_event(tt_line(R"({"new_span":{"id":1,"metadata_id":5,"values":{"num":{"int":42}}}})"),
                        m::new_span{.id = 1, .callsite_id = 5, .parent = m::parent_mode::contextual, .parent_id = 0,
                                    .values = {{"num", std::int64_t{42}}}}));
    CHECK(m::same_event(tt_line(R"({"new_span":{"id":3,"parent_id":2,"metadata_id":5,"values":{}}})"),
                        m::new_span{.id = 3, .callsite_id = 5, .parent = m::parent_mode::explicit_span,
                                    .parent_id = 2, .values = {}}));
    CHECK(m::same_event(
        tt_line(R"({"new_event":{"metadata_id":7,"parent":3,"values":{"message":{"object":"on the clone"}}}})"),
        m::new_event{.callsite_id = 7, .parent = m::parent_mode::explicit_span, .parent_id = 3,
                     .values = {{"message", m::debug_text{"on the clone"}}}}));
    CHECK(m::same_event(tt_line(R"({"new_event":{"metadata_id":7,"values":{}}})"),
                        m::new_event{.callsite_id = 7, .parent = m::parent_mode::contextual, .parent_id = 0,
                                     .values = {}}));
    CHECK(m::same_event(tt_line(R"({"follows_from":{"id":5,"follows_from":3}})"), m::follows_from{5, 3}));
    CHECK(m::same_event(tt_line(R"({"span_entered":{"id":1}})"), m::span_entered{1}));
    CHECK(m::same_event(tt_line(R"({"span_exited":{"id":1}})"), m::span_exited{1}));
    CHECK(m::same_event(tt_line(R"({"span_cloned":{"id":1}})"), m::span_cloned{1}));
    CHECK(m::same_event(tt_line(R"({"span_dropped":{"id":1}})"), m::span_dropped{1}));

    // Integers narrow to 64 bits when they fit; the rest stay 128-bit, exactly.
    const m::event vals = tt_line(
        R"({"values_recorded":{"id":2,"values":{"flag":{"bool":true},"neg":{"int":-9007199254740993},)"
        R"("i64min":{"int":-9223372036854775808},"below":{"int":-9223372036854775809},)"
        R"("big":{"u_int":18446744073709551615},"wider":{"u_int":18446744073709551616},)"
        R"("wide_neg":{"int":-170141183460469231731687303715884105728},)"
        R"("wide_pos":{"int":170141183460469231731687303715884105727},)"
        R"("wide":{"u_int":340282366920938463463374607431768211455},)"
        R"("tiny":{"float":5e-324},"huge":{"float":1.7976931348623157e308},"neg_zero":{"float":-0.0},)"
        R"("whole":{"float":5},"text":{"string":"Grüße 🚀\n"},"obj":{"object":"[1, 2]"},)"
        R"("err":{"error":{"message":"a","source":{"message":"b","source":{"message":"c","source":null}}}},)"
        R"("short_err":{"error":{"message":"only"}}}}})");
    const m::field_values want_vals = {
        {"flag", true},
        {"neg", std::int64_t{-9007199254740993}},
        {"i64min", std::numeric_limits<std::int64_t>::min()},
        {"below", static_cast<m::i128>(std::numeric_limits<std::int64_t>::min()) - 1},
        {"big", std::numeric_limits<std::uint64_t>::max()},
        {"wider", m::u128(1) << 64},
        {"wide_neg", i128_min},
        {"wide_pos", i128_max},
        {"wide", u128_max},
        {"tiny", 5e-324},
        {"huge", std::numeric_limits<double>::max()},
        {"neg_zero", -0.0},
        {"whole", 5.0},
        {"text", "Grüße 🚀\n"s},
        {"obj", m::debug_text{"[1, 2]"}},
        {"err", m::error_chain{{"a", "b", "c"}}},
        {"short_err", m::error_chain{{"only"}}},
    };
    CHECK(m::same_event(vals, m::values_recorded{2, want_vals}));
}

TEST_CASE("tracing-tunnel lines that cannot be read")
{
    using c = m::json_error_code;
    const std::string null_float = R"({"values_recorded":{"id":1,"values":{"x":{"float":null}}}})";
    const std::string big_int = R"({"values_recorded":{"id":1,"values":{"x":{"int":170141183460469231731687303715884105728}}}})";
    const std::string neg_uint = R"({"values_recorded":{"id":1,"values":{"x":{"u_int":-1}}}})";
    const std::string huge_uint = R"({"values_recorded":{"id":1,"values":{"x":{"u_int":340282366920938463463374607431768211456}}}})";
    const std::string frac_int = R"({"values_recorded":{"id":1,"values":{"x":{"int":1.5}}}})";
    const std::string bad_source = R"({"values_recorded":{"id":1,"values":{"x":{"error":{"message":"a","source":{"source":null}}}}}})";
    const std::string neg_id = R"({"span_entered":{"id":-1}})";
    const std::string str_id = R"({"span_entered":{"id":"1"}})";
    const std::string big_id = R"({"span_entered":{"id":18446744073709551616}})";
    const std::string no_meta = R"({"new_span":{"id":1,"values":{}}})";
    const std::string ours = R"({"new_callsite":{"id":"0x1"}})";

    const std::vector<bad_line> table = {
        {"float written as null", null_float, c::wrong_type, "/values_recorded/values/x/float", at(null_float, "null")},
        {"int beyond i128", big_int, c::out_of_range, "/values_recorded/values/x/int", at(big_int, "1701")},
        {"negative u_int", neg_uint, c::out_of_range, "/values_recorded/values/x/u_int", at(neg_uint, "-1")},
        {"u_int beyond u128", huge_uint, c::out_of_range, "/values_recorded/values/x/u_int", at(huge_uint, "3402")},
        {"int with a fraction", frac_int, c::wrong_type, "/values_recorded/values/x/int", at(frac_int, "1.5")},
        {"error source without message", bad_source, c::missing_field,
         "/values_recorded/values/x/error/source/message", at(bad_source, R"({"source":null)")},
        {"negative id", neg_id, c::out_of_range, "/span_entered/id", at(neg_id, "-1")},
        {"id as a string", str_id, c::wrong_type, "/span_entered/id", at(str_id, R"("1")")},
        {"id beyond 64 bits", big_id, c::out_of_range, "/span_entered/id", at(big_id, "1844")},
        {"missing metadata_id", no_meta, c::missing_field, "/new_span/metadata_id", at(no_meta, R"({"id")")},
        {"our own kind name", ours, c::unknown_kind, "/new_callsite", at(ours, R"({"id")")},
        {"not JSON", "{\"span_entered\":{\"id\":1}", c::invalid_json, "", 24},
    };
    for (const bad_line& b : table) {
        INFO(b.what, ": ", b.line);
        const auto r = m::event_from_tracing_tunnel_json(b.line);
        REQUIRE_FALSE(r.ok());
        const m::json_error& e = r.error();
        INFO("got: ", m::to_string(e));
        CHECK(m::to_string(e.code) == m::to_string(b.code));
        CHECK(e.path == b.path);
        CHECK(e.offset == b.offset);
        CHECK_FALSE(e.message.empty());
    }
}

TEST_CASE("every line of the tracing-tunnel fixtures decodes")
{
    std::filesystem::path dir;
    if (const char* env = std::getenv("TT_TRACING_TUNNEL_FIXTURES"); env != nullptr && *env != '\0')
        dir = env;
    else
        dir = TT_TRACING_TUNNEL_FIXTURES;
    INFO("fixture folder: ", dir.string());
    if (!std::filesystem::is_directory(dir))
        FAIL("the tracing-tunnel fixture folder is missing: ", dir.string(),
             " (expected ../shared/fixtures/tracing-tunnel beside the project, or set TT_TRACING_TUNNEL_FIXTURES)");

    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
        if (entry.path().extension() == ".jsonl")
            files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    REQUIRE(files.size() >= 5);  // basic, fib, nested, persist-split part 1 and 2

    std::size_t lines = 0;
    std::size_t kinds_seen[std::variant_size_v<m::event>] = {};
    for (const auto& file : files) {
        std::ifstream in(file, std::ios::binary);
        REQUIRE(in.good());
        std::string line;
        std::size_t number = 0;
        while (std::getline(in, line)) {
            ++number;
            if (line.empty())
                continue;
            INFO(file.filename().string(), ":", number, ": ", line);
            auto r = m::event_from_tracing_tunnel_json(line);
            if (!r) {
                CHECK_MESSAGE(false, m::to_string(r.error()));
                continue;
            }
            ++lines;
            ++kinds_seen[r.value().index()];
            // And every one of them survives our own format unchanged.
            auto back = m::event_from_json_line(m::to_json_line(r.value()));
            REQUIRE(back.ok());
            CHECK(m::same_event(back.value(), r.value()));
        }
    }
    CHECK(lines > 150);
    for (std::size_t k = 0; k < std::variant_size_v<m::event>; ++k) {
        INFO("event kind index ", k);
        CHECK(kinds_seen[k] > 0);
    }

    // Spot checks against what the crate wrote.
    std::ifstream nested(dir / "nested.jsonl", std::ios::binary);
    std::string line;
    std::vector<std::string> all;
    while (std::getline(nested, line))
        all.push_back(line);
    REQUIRE(all.size() >= 12);
    const m::event middle = tt_line(all[6]);
    const auto& v = std::get<m::new_span>(middle).values;
    REQUIRE(v.size() == 7);
    CHECK(m::same_value(v[0].second, i128_min));
    CHECK(m::same_value(v[1].second, u128_max));
    CHECK(m::same_value(v[5].second, -0.0));
    const m::event inner = tt_line(all[11]);
    CHECK(m::same_value(std::get<m::new_span>(inner).values[3].second,
                        m::error_chain{{"cannot load config.toml", "parse error at line 3", "unexpected end of file"}}));
}
