// Persisted receiver state on disk (state/src/state_file.cpp): round trips,
// a receiver continued from disk, and every way a file can be bad. Each test
// uses real files in a fresh temporary folder.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/capture.hpp>
#include <tracetunnel/host/receiver.hpp>
#include <tracetunnel/state_file.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace tt;
using state::load_status;
using state::state_errc;

namespace {

// A fresh folder, removed with everything in it at the end of the test.
struct temp_dir {
    fs::path path;
    temp_dir()
    {
        std::string tmpl = (fs::temp_directory_path() / "tt-state-test-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~temp_dir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
};

std::string slurp(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void spit(const fs::path& p, std::string_view text)
{
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

std::size_t files_in(const fs::path& dir)
{
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir))
        ++n;
    return n;
}

constexpr std::uint64_t request_site = 0x9c6e0b1f5a3d2e47;
constexpr std::uint64_t query_site = 0x1d40c9a3be7f0112;
constexpr std::uint64_t event_site = 0x51f2a8c0d3b94e6a;

double nan_with_payload()
{
    const std::uint64_t bits = 0xfff8000000000abcULL;
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
}

state::persisted_metadata sample_metadata()
{
    model::callsite request{request_site, model::callsite_kind::span, model::level::info, "request", "orders::http",
                            "orders", "src/http.cpp", 42, {"user", "n", "big", "small", "ratio", "err", "dbg", "flag"}};
    model::callsite query{query_site, model::callsite_kind::span, model::level::debug, "query", "orders::db",
                          "", "", 0, {"sql"}};
    model::callsite ev{event_site, model::callsite_kind::event, model::level::warn, "slow", "orders::db",
                       "orders::db", "src/db.cpp", 7, {"message"}};
    return {query, ev, request};  // sorted by id
}

state::persisted_spans sample_spans()
{
    state::persisted_spans s;
    s.next_id = 9;
    state::persisted_span a;
    a.id = 3;
    a.callsite_id = request_site;
    a.values = {{"user", std::string("Grüße \"ann\"\n🚀\t\\")},
                {"n", std::int64_t{std::numeric_limits<std::int64_t>::min()}},
                {"big", model::u128(~model::u128{0})},
                {"small", model::i128(model::u128{1} << 127)},
                {"ratio", nan_with_payload()},
                {"err", model::error_chain{{"cannot load config", "parse error at line 3", "EOF"}}},
                {"dbg", model::debug_text{"[1, 2]"}},
                {"flag", true}};
    a.ref_count = 2;
    a.start = state::clock::time_point(std::chrono::duration_cast<state::clock::duration>(
        std::chrono::nanoseconds(1763906000123456789LL)));
    a.follows_from = {1};
    state::persisted_span b;
    b.id = 5;
    b.callsite_id = query_site;
    b.parent_id = 3;
    b.values = {{"sql", std::string("select \0 1", 10)}};
    b.start = a.start + std::chrono::microseconds(5);
    b.follows_from = {3, 2};
    state::persisted_span c;  // a child of a parent that has closed
    c.id = 8;
    c.callsite_id = query_site;
    c.parent_id = 6;
    c.values = {{"sql", -0.0}};
    s.spans = {a, b, c};
    return s;
}

void save_sample(const fs::path& dir, std::string_view lineage = "orders")
{
    auto err = state::save_lineage_state(dir, lineage, sample_metadata(), sample_spans());
    REQUIRE_MESSAGE(!err, (err ? state::to_string(*err) : ""));
}

// Loads, expects failure naming `bad`, both files moved aside with their
// content intact, and nothing left under the original names.
state::state_error expect_failure(const fs::path& dir, const fs::path& bad, std::string_view lineage = "orders")
{
    const fs::path m = state::metadata_path(dir, lineage);
    const fs::path s = state::spans_path(dir, lineage);
    const bool had_m = fs::exists(m), had_s = fs::exists(s);
    const std::string mtext = had_m ? slurp(m) : "", stext = had_s ? slurp(s) : "";
    auto r = state::load_lineage_state(dir, lineage);
    REQUIRE(r.status == load_status::failed);
    REQUIRE(!r.errors.empty());
    const auto& e = r.errors[0];
    CHECK(e.file == bad);
    CHECK(state::to_string(e).find(bad.string()) != std::string::npos);
    CHECK(r.state.metadata.empty());
    CHECK(r.state.spans.spans.empty());
    CHECK(!fs::exists(m));
    CHECK(!fs::exists(s));
    CHECK(r.moved_aside.size() == std::size_t(had_m) + std::size_t(had_s));
    for (auto& [from, to] : r.moved_aside) {
        CHECK(to.string().find(from.string() + ".corrupt-") == 0);
        CHECK(slurp(to) == (from == m ? mtext : stext));
        if (from == bad)
            CHECK(e.moved_to == to);
    }
    return e;
}

}  // namespace

TEST_CASE("round trip: every value kind, bit for bit")
{
    temp_dir d;
    save_sample(d.path);
    CHECK(fs::exists(d.path / "orders.metadata.json"));
    CHECK(fs::exists(d.path / "orders.spans.json"));
    CHECK(files_in(d.path) == 2);  // no temporary file left behind
    auto r = state::load_lineage_state(d.path, "orders");
    REQUIRE(r.status == load_status::loaded);
    CHECK(r.errors.empty());
    CHECK(r.state.metadata == sample_metadata());
    CHECK(r.state.spans == sample_spans());
    // Saving what was loaded writes the same bytes.
    const std::string before = slurp(d.path / "orders.spans.json");
    REQUIRE(!state::save_lineage_state(d.path, "orders", r.state.metadata, r.state.spans));
    CHECK(slurp(d.path / "orders.spans.json") == before);
    CHECK(files_in(d.path) == 2);
}

TEST_CASE("no state yet; empty state; metadata without spans")
{
    temp_dir d;
    auto r = state::load_lineage_state(d.path, "orders");
    CHECK(r.status == load_status::none);
    CHECK(r.errors.empty());
    auto r2 = state::load_lineage_state(d.path / "missing-folder", "orders");
    CHECK(r2.status == load_status::none);

    REQUIRE(!state::save_lineage_state(d.path, "empty", {}, {}));
    auto r3 = state::load_lineage_state(d.path, "empty");
    CHECK(r3.status == load_status::loaded);
    CHECK(r3.state.spans.next_id == 1);

    save_sample(d.path);
    fs::remove(d.path / "orders.spans.json");
    auto r4 = state::load_lineage_state(d.path, "orders");
    CHECK(r4.status == load_status::loaded);
    CHECK(r4.state.metadata == sample_metadata());
    CHECK(r4.state.spans.spans.empty());
}

TEST_CASE("lineage names become safe file names")
{
    CHECK(state::lineage_file_stem("orders") == "orders");
    CHECK(state::lineage_file_stem("orders.v2_x-y") == "orders.v2_x-y");
    CHECK(state::lineage_file_stem("a/b") == "a%2Fb");
    CHECK(state::lineage_file_stem("..") == "%2E.");
    CHECK(state::lineage_file_stem("../../etc/passwd") == "%2E.%2F..%2Fetc%2Fpasswd");
    CHECK(state::lineage_file_stem(std::string_view("a\0b", 3)) == "a%00b");
    CHECK(state::lineage_file_stem("100%") == "100%25");
    CHECK(state::lineage_file_stem("Grüße") == "Gr%C3%BC%C3%9Fe");
    CHECK(!state::lineage_file_stem(""));
    CHECK(!state::lineage_file_stem("\xff"));  // not UTF-8
    CHECK(!state::lineage_file_stem(std::string(300, 'a')));
    for (const std::string& name : std::vector<std::string>{"orders", "a/b", "..", "100%", "Grüße", std::string("a\0b", 3)})
        CHECK(state::lineage_from_file_stem(*state::lineage_file_stem(name)) == name);
    CHECK(!state::lineage_from_file_stem("a%2"));
    CHECK(!state::lineage_from_file_stem("a%zz"));
    CHECK(!state::lineage_from_file_stem("a%41"));  // not the spelling we write ('A' is plain)
    CHECK(!state::lineage_from_file_stem(".hidden"));

    temp_dir d;
    for (const std::string& name : std::vector<std::string>{"../escape", "a/b/c", std::string("nul\0", 4)}) {
        save_sample(d.path, name);
        auto r = state::load_lineage_state(d.path, name);
        CHECK(r.status == load_status::loaded);
    }
    CHECK(!fs::exists(d.path.parent_path() / "escape.spans.json"));
    CHECK(files_in(d.path) == 6);
    auto names = state::list_lineages(d.path);
    CHECK(names.size() == 3);
    CHECK(std::find(names.begin(), names.end(), "../escape") != names.end());
    auto err = state::save_lineage_state(d.path, "", {}, {});
    REQUIRE(err);
    CHECK(err->code == state_errc::invalid_lineage);
    CHECK(state::load_lineage_state(d.path, "").status == load_status::failed);
}

TEST_CASE("a receiver saved to disk is continued by a new receiver (reload): one span, opened once, closed once")
{
    temp_dir d;
    host::capture_layer cap;
    std::shared_ptr<host::local_spans> local;
    std::uint64_t span_id = 0;
    {
        host::receiver r1("orders", cap);
        REQUIRE(r1.try_receive(model::event{model::new_callsite{sample_metadata()[2]}}));
        auto id = r1.try_receive(model::event{model::new_span{0, request_site, model::parent_mode::root, 0,
                                                              {{"user", std::string("ann")}}}});
        REQUIRE(id);
        span_id = id.value();
        REQUIRE(r1.try_receive(model::event{model::span_entered{span_id}}));
        REQUIRE(r1.try_receive(model::event{model::span_exited{span_id}}));
        auto err = state::save_lineage_state(d.path, r1.lineage(), r1.persist_metadata(), r1.persist());
        REQUIRE(!err);
        local = r1.local();
    }
    auto loaded = state::load_lineage_state(d.path, "orders");
    REQUIRE(loaded.status == load_status::loaded);
    {
        host::receiver r2("orders", cap, std::move(loaded.state), {}, local);
        local.reset();
        REQUIRE(r2.try_receive(model::event{model::values_recorded{span_id, {{"n", std::int64_t{7}}}}}));
        REQUIRE(r2.try_receive(model::event{model::span_entered{span_id}}));
        REQUIRE(r2.try_receive(model::event{model::span_exited{span_id}}));
        REQUIRE(r2.try_receive(model::event{model::span_dropped{span_id}}));
        // The id counter continued: the next span gets a fresh id.
        auto next = r2.try_receive(model::event{model::new_span{0, request_site, model::parent_mode::root, 0, {}}});
        REQUIRE(next);
        CHECK(next.value() > span_id);
        REQUIRE(r2.try_receive(model::event{model::span_dropped{next.value()}}));
        r2.persist();
    }
    auto spans = cap.find_by_name("request");
    REQUIRE(spans.size() == 2);
    auto first = cap.span(spans[0]);
    REQUIRE(first);
    CHECK(first->plugin_span_id == span_id);
    CHECK(first->closed);
    CHECK(first->close_count == 1);
    CHECK(first->entered == 2);
    CHECK(first->exited == 2);
    CHECK(cap.open_spans() == 0);
    CHECK(cap.anomalies().empty());
}

TEST_CASE("a host restart: the new receiver continues persisted spans with their start time")
{
    temp_dir d;
    std::uint64_t span_id = 0;
    state::clock::time_point start;
    {
        host::capture_layer cap1;
        host::receiver r1("orders", cap1);
        REQUIRE(r1.try_receive(model::event{model::new_callsite{sample_metadata()[2]}}));
        auto id = r1.try_receive(model::event{model::new_span{0, request_site, model::parent_mode::root, 0, {}}});
        REQUIRE(id);
        span_id = id.value();
        REQUIRE(!state::save_lineage_state(d.path, "orders", r1.persist_metadata(), r1.persist()));
        start = r1.snapshot().spans.at(0).start;
    }
    host::capture_layer cap2;
    auto loaded = state::load_lineage_state(d.path, "orders");
    REQUIRE(loaded.status == load_status::loaded);
    {
        host::receiver r2("orders", cap2, std::move(loaded.state));
        REQUIRE(r2.try_receive(model::event{model::span_entered{span_id}}));
        REQUIRE(r2.try_receive(model::event{model::span_exited{span_id}}));
        REQUIRE(r2.try_receive(model::event{model::span_dropped{span_id}}));
        r2.persist();
    }
    auto spans = cap2.find_by_name("request");
    REQUIRE(spans.size() == 1);
    auto s = cap2.span(spans[0]);
    CHECK(s->start == start);
    CHECK(s->close_count == 1);
    CHECK(s->entered == 1);
    CHECK(cap2.anomalies().empty());
}

TEST_CASE("truncation at every byte: an error naming the file, the file moved aside intact")
{
    temp_dir d;
    // A small state: one call site, one span.
    state::persisted_spans spans;
    spans.next_id = 2;
    state::persisted_span s;
    s.id = 1;
    s.callsite_id = query_site;
    s.values = {{"sql", std::string("x")}};
    spans.spans = {s};
    const state::persisted_metadata meta{sample_metadata()[0]};
    const std::string mtext = state::encode_metadata("orders", meta);
    const std::string stext = state::encode_spans("orders", spans);
    for (int which = 0; which < 2; ++which) {
        const std::string& full = which == 0 ? mtext : stext;
        for (std::size_t len = 0; len < full.size(); ++len) {
            CAPTURE(which);
            CAPTURE(len);
            fs::path sub = d.path / ("t" + std::to_string(which) + "-" + std::to_string(len));
            fs::create_directory(sub);
            spit(sub / "orders.metadata.json", which == 0 ? mtext.substr(0, len) : mtext);
            spit(sub / "orders.spans.json", which == 1 ? stext.substr(0, len) : stext);
            if (full.substr(0, len) + "\n" == full) {  // only the final newline is gone: still whole
                CHECK(state::load_lineage_state(sub, "orders").status == load_status::loaded);
                continue;
            }
            auto e = expect_failure(sub, sub / (which == 0 ? "orders.metadata.json" : "orders.spans.json"));
            CHECK(e.code == state_errc::invalid_json);
        }
    }
}

TEST_CASE("flipped bytes never crash; a refused file is moved aside intact, an accepted one stays")
{
    temp_dir d;
    save_sample(d.path);
    const std::string stext = slurp(d.path / "orders.spans.json");
    const std::string mtext = slurp(d.path / "orders.metadata.json");
    std::size_t refused = 0, accepted = 0;
    for (int which = 0; which < 2; ++which) {
        const std::string& full = which == 0 ? mtext : stext;
        for (std::size_t i = 0; i < full.size(); ++i)
            for (unsigned char mask : {0x01, 0x20, 0x80}) {
                CAPTURE(which);
                CAPTURE(i);
                std::string bad = full;
                bad[i] = static_cast<char>(bad[i] ^ mask);
                fs::path sub = d.path / "flip";
                if (i % 16 == 0) {
                    fs::remove_all(sub);
                    fs::create_directory(sub);
                }
                spit(sub / "orders.metadata.json", which == 0 ? bad : mtext);
                spit(sub / "orders.spans.json", which == 1 ? bad : stext);
                // Moving aside costs two renames and folder fsyncs: done for
                // every 16th case; the rest check that nothing is touched.
                const bool move = i % 16 == 0;
                auto r = state::load_lineage_state(sub, "orders",
                                                   move ? state::on_bad_file::move_aside : state::on_bad_file::keep);
                const std::string bad_name = which == 0 ? "orders.metadata.json" : "orders.spans.json";
                if (r.status == load_status::loaded) {
                    ++accepted;
                    CHECK(slurp(sub / bad_name) == bad);
                } else {
                    ++refused;
                    REQUIRE(r.status == load_status::failed);
                    REQUIRE(!r.errors.empty());
                    CHECK(r.state.spans.spans.empty());
                    if (!move) {
                        CHECK(r.moved_aside.empty());
                        CHECK(slurp(sub / bad_name) == bad);
                        continue;
                    }
                    CHECK(r.moved_aside.size() == 2);
                    CHECK(!fs::exists(sub / "orders.spans.json"));
                    for (auto& [from, to] : r.moved_aside)
                        CHECK(slurp(to) == (from.filename() == "orders.spans.json" ? (which == 1 ? bad : stext)
                                                                                   : (which == 0 ? bad : mtext)));
                }
            }
    }
    CHECK(refused > accepted);
}

TEST_CASE("wrong magic, wrong kind, newer version, not JSON")
{
    temp_dir d;
    const fs::path s = d.path / "orders.spans.json";
    const fs::path m = d.path / "orders.metadata.json";
    struct row {
        const char* name;
        std::function<std::string(std::string)> edit;
        bool metadata;
        state_errc code;
    };
    auto replace = [](std::string from, std::string to) {
        return [from, to](std::string t) {
            auto p = t.find(from);
            REQUIRE(p != std::string::npos);
            return t.replace(p, from.size(), to);
        };
    };
    const row rows[] = {
        {"wrong magic", replace("tracetunnel-state", "tracetunnel-stat"), false, state_errc::wrong_magic},
        {"no magic", replace("\"magic\"", "\"magik\""), false, state_errc::wrong_magic},
        {"an event stream", [](std::string) { return std::string("{\"tracetunnel\":\"events\",\"format\":1}\n"); },
         false, state_errc::wrong_magic},
        {"an array", [](std::string) { return std::string("[1,2]"); }, true, state_errc::wrong_magic},
        {"metadata given as spans", replace("\"kind\":\"spans\"", "\"kind\":\"metadata\""), false,
         state_errc::wrong_kind},
        {"newer version", replace("\"version\":1", "\"version\":2"), false, state_errc::unsupported_version},
        {"huge version", replace("\"version\":1", "\"version\":18446744073709551615"), true,
         state_errc::unsupported_version},
        {"version 0", replace("\"version\":1", "\"version\":0"), false, state_errc::invalid_value},
        {"version as string", replace("\"version\":1", "\"version\":\"1\""), false, state_errc::wrong_type},
        {"binary junk", [](std::string) { return std::string("\x7f" "ELF\x01\x02", 6); }, false,
         state_errc::invalid_json},
        {"invalid UTF-8", replace("request", "r\xc3\x28quest"), true, state_errc::invalid_json},
        {"trailing bytes", [](std::string t) { return t + "{}"; }, false, state_errc::invalid_json},
        {"other lineage", replace("\"lineage\":\"orders\"", "\"lineage\":\"billing\""), false,
         state_errc::inconsistent},
    };
    for (const auto& r : rows) {
        const std::string name = r.name;
        CAPTURE(name);
        fs::remove_all(d.path);
        fs::create_directory(d.path);
        save_sample(d.path);
        const fs::path& bad = r.metadata ? m : s;
        spit(bad, r.edit(slurp(bad)));
        auto e = expect_failure(d.path, bad);
        CHECK(e.code == r.code);
        MESSAGE(state::to_string(e));
    }
}

TEST_CASE("missing, unknown and mistyped fields; hand-edited inconsistent tables")
{
    temp_dir d;
    const fs::path s = d.path / "orders.spans.json";
    const fs::path m = d.path / "orders.metadata.json";
    using edit_fn = std::function<void(json::object&)>;
    auto span = [](json::object& root, std::size_t i) -> json::object& {
        return root["spans"].as_array()[i].as_object();
    };
    struct row {
        const char* name;
        bool metadata;
        edit_fn edit;
        state_errc code;
        const char* where;
    };
    const row rows[] = {
        {"no next_id", false, [](json::object& o) { o.erase("next_id"); }, state_errc::missing_field, "/next_id"},
        {"no spans", false, [](json::object& o) { o.erase("spans"); }, state_errc::missing_field, "/spans"},
        {"no callsites", true, [](json::object& o) { o.erase("callsites"); }, state_errc::missing_field,
         "/callsites"},
        {"no lineage", false, [](json::object& o) { o.erase("lineage"); }, state_errc::missing_field, "/lineage"},
        {"extra member", false, [](json::object& o) { o["comment"] = "hi"; }, state_errc::unknown_field,
         "/comment"},
        {"span without ref_count", false, [&](json::object& o) { span(o, 1).erase("ref_count"); },
         state_errc::missing_field, "/spans/1/ref_count"},
        {"span with extra member", false, [&](json::object& o) { span(o, 0)["closed"] = false; },
         state_errc::unknown_field, "/spans/0/closed"},
        {"id as number", false, [&](json::object& o) { span(o, 0)["id"] = 3; }, state_errc::wrong_type,
         "/spans/0/id"},
        {"id not decimal", false, [&](json::object& o) { span(o, 0)["id"] = "3a"; }, state_errc::invalid_value,
         "/spans/0/id"},
        {"id beyond 64 bits", false, [&](json::object& o) { span(o, 0)["id"] = "18446744073709551616"; },
         state_errc::invalid_value, "/spans/0/id"},
        {"start not a number", false, [&](json::object& o) { span(o, 0)["start_ns"] = "soon"; },
         state_errc::invalid_value, "/spans/0/start_ns"},
        {"callsite id bad", false, [&](json::object& o) { span(o, 0)["callsite"] = "9c6e"; },
         state_errc::invalid_value, "/spans/0/callsite"},
        {"value of unknown type", false,
         [&](json::object& o) { span(o, 0)["values"].as_array()[0].as_array()[1] = json::object{{"complex", 1}}; },
         state_errc::invalid_value, "/spans/0/values/0/1/complex"},
        {"i128 out of range", false,
         [&](json::object& o) {
             span(o, 0)["values"].as_array()[3].as_array()[1] =
                 json::object{{"i128", "-170141183460469231731687303715884105729"}};
         },
         state_errc::invalid_value, "/spans/0/values/3/1/i128"},
        {"callsite without name", true, [](json::object& o) { o["callsites"].as_array()[0].as_object().erase("name"); },
         state_errc::missing_field, "/callsites/0/name"},
        {"callsite level loud", true,
         [](json::object& o) { o["callsites"].as_array()[1].as_object()["level"] = "loud"; },
         state_errc::invalid_value, "/callsites/1/level"},
        // Inconsistent tables.
        {"duplicate call site", true,
         [](json::object& o) {
             auto& a = o["callsites"].as_array();
             a.push_back(a[0]);
         },
         state_errc::inconsistent, "/callsites/3/id"},
        {"span's call site missing from metadata", true,
         [](json::object& o) { o["callsites"].as_array().erase(o["callsites"].as_array().begin() + 2); },
         state_errc::inconsistent, "/spans/0/callsite"},
        {"span from an event call site", false, [&](json::object& o) { span(o, 1)["callsite"] = "0x51f2a8c0d3b94e6a"; },
         state_errc::inconsistent, "/spans/1/callsite"},
        {"ref_count 0", false, [&](json::object& o) { span(o, 1)["ref_count"] = "0"; }, state_errc::inconsistent,
         "/spans/1/ref_count"},
        {"duplicate ids", false, [&](json::object& o) { span(o, 2)["id"] = "3"; }, state_errc::inconsistent,
         "/spans/2/id"},
        {"id 0", false, [&](json::object& o) { span(o, 0)["id"] = "0"; }, state_errc::inconsistent, "/spans/0/id"},
        {"next_id not above every id", false, [](json::object& o) { o["next_id"] = "8"; }, state_errc::inconsistent,
         "/spans/2/id"},
        {"next_id 0", false, [](json::object& o) { o["next_id"] = "0"; }, state_errc::inconsistent, "/next_id"},
        {"parent never assigned", false, [&](json::object& o) { span(o, 1)["parent"] = "12"; },
         state_errc::inconsistent, "/spans/1/parent"},
        {"own parent", false, [&](json::object& o) { span(o, 1)["parent"] = "5"; }, state_errc::inconsistent,
         "/spans/1/parent"},
        {"parent cycle", false, [&](json::object& o) { span(o, 0)["parent"] = "5"; }, state_errc::inconsistent,
         "/spans/0/parent"},
        {"cause never assigned", false,
         [&](json::object& o) { span(o, 1)["follows_from"].as_array()[0] = "99"; }, state_errc::inconsistent,
         "/spans/1/follows_from/0"},
        {"value for a field the call site lacks", false,
         [&](json::object& o) { span(o, 1)["values"].as_array()[0].as_array()[0] = "nope"; },
         state_errc::inconsistent, "/spans/1/values/0"},
    };
    for (const auto& r : rows) {
        const std::string name = r.name;
        CAPTURE(name);
        fs::remove_all(d.path);
        fs::create_directory(d.path);
        save_sample(d.path);
        const fs::path& target = r.metadata ? m : s;
        json::value root = json::parse(slurp(target));
        r.edit(root.as_object());
        spit(target, json::serialize(root));
        const fs::path bad = std::string_view(r.where).rfind("/spans", 0) == 0 || std::string_view(r.where) == "/next_id"
                                 ? s
                                 : target;
        auto e = expect_failure(d.path, bad);
        CHECK(e.code == r.code);
        CHECK(e.where == r.where);
        MESSAGE(state::to_string(e));
    }
}

TEST_CASE("a start time before 1970 and the largest ids are readable")
{
    temp_dir d;
    auto spans = sample_spans();
    spans.spans[0].start = state::clock::time_point(std::chrono::duration_cast<state::clock::duration>(
        std::chrono::nanoseconds(-5)));
    spans.spans[2].id = (std::uint64_t{1} << 63) - 2;
    spans.next_id = (std::uint64_t{1} << 63) - 1;
    REQUIRE(!state::save_lineage_state(d.path, "orders", sample_metadata(), spans));
    auto r = state::load_lineage_state(d.path, "orders");
    REQUIRE(r.status == load_status::loaded);
    CHECK(r.state.spans == spans);
}

TEST_CASE("a spans file without its metadata is refused; keep policy leaves files in place")
{
    temp_dir d;
    save_sample(d.path);
    fs::remove(d.path / "orders.metadata.json");
    auto r = state::load_lineage_state(d.path, "orders", state::on_bad_file::keep);
    REQUIRE(r.status == load_status::failed);
    CHECK(r.errors.at(0).code == state_errc::inconsistent);
    CHECK(r.errors.at(0).message.find("no metadata file") != std::string::npos);
    CHECK(r.moved_aside.empty());
    CHECK(fs::exists(d.path / "orders.spans.json"));
    expect_failure(d.path, d.path / "orders.spans.json");
}

TEST_CASE("moving aside never replaces an earlier copy")
{
    temp_dir d;
    std::set<std::string> copies;
    for (int i = 0; i < 3; ++i) {
        spit(d.path / "orders.spans.json", "garbage " + std::to_string(i));
        auto e = expect_failure(d.path, d.path / "orders.spans.json");
        copies.insert(e.moved_to.string());
    }
    CHECK(copies.size() == 3);
    CHECK(files_in(d.path) == 3);
}

TEST_CASE("saving into a folder that cannot be written is an error, not an exception")
{
    temp_dir d;
    spit(d.path / "file", "x");
    auto err = state::save_lineage_state(d.path / "file" / "sub", "orders", sample_metadata(), sample_spans());
    REQUIRE(err);
    CHECK(err->code == state_errc::io_error);
}

TEST_CASE("the plugin's own state: round trip, none, torn and edited files refused and moved aside")
{
    temp_dir dir;
    CHECK(state::load_plugin_state(dir.path, "orders").status == state::load_status::none);

    std::vector<std::uint8_t> bytes;
    for (int i = 0; i < 300; ++i)
        bytes.push_back(static_cast<std::uint8_t>(i * 7));  // binary, with NULs and newlines
    REQUIRE_FALSE(state::save_plugin_state(dir.path, "orders", bytes));
    auto back = state::load_plugin_state(dir.path, "orders");
    REQUIRE(back.status == state::load_status::loaded);
    CHECK(back.bytes == bytes);

    const fs::path file = state::plugin_state_path(dir.path, "orders");
    const std::string good = slurp(file);

    // Every truncation is refused, naming the file; the file is moved aside intact.
    for (std::size_t cut : {std::size_t{0}, std::size_t{10}, good.find('\n'), good.size() - 1}) {
        CAPTURE(cut);
        spit(file, good.substr(0, cut));
        auto r = state::load_plugin_state(dir.path, "orders");
        CHECK(r.status == state::load_status::failed);
        REQUIRE(r.error);
        CHECK(r.error->file == file);
        CHECK(r.bytes.empty());
        CHECK_FALSE(fs::exists(file));
        REQUIRE_FALSE(r.error->moved_to.empty());
        CHECK(slurp(r.error->moved_to) == good.substr(0, cut));
    }

    // One changed byte in the content: the checksum says so.
    std::string edited = good;
    edited.back() = static_cast<char>(edited.back() ^ 1);
    spit(file, edited);
    auto r = state::load_plugin_state(dir.path, "orders", state::on_bad_file::keep);
    CHECK(r.status == state::load_status::failed);
    CHECK(r.error->code == state_errc::inconsistent);
    CHECK(fs::exists(file));  // keep policy

    // A newer schema is refused with a reason.
    spit(file, "tracetunnel-plugin-state 99 0 0x0\n");
    r = state::load_plugin_state(dir.path, "orders", state::on_bad_file::keep);
    CHECK(r.error->code == state_errc::unsupported_version);

    REQUIRE_FALSE(state::remove_plugin_state(dir.path, "orders"));
    CHECK_FALSE(fs::exists(file));
    CHECK_FALSE(state::remove_plugin_state(dir.path, "orders"));  // removing nothing is fine
}
