// Persisted receiver state on disk (state/src/state_file.cpp): round trips,
// a receiver continued from disk, and every way a file can be bad. Each test
// uses real files in a fresh temporary folder.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/capture.hpp>
#include <tracetunnel/host/receiver.hpp>
#include <tracetunnel/state_file.hpp>

#include <boost/crc.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
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
// Every form of the spans file counts: the binary one and an older build's JSON one.
state::state_error expect_failure(const fs::path& dir, const fs::path& bad, std::string_view lineage = "orders")
{
    const fs::path files[] = {state::metadata_path(dir, lineage), state::spans_path(dir, lineage),
                              state::spans_json_path(dir, lineage)};
    std::map<fs::path, std::string> before;
    for (const auto& f : files)
        if (fs::exists(f))
            before[f] = slurp(f);
    auto r = state::load_lineage_state(dir, lineage);
    REQUIRE(r.status == load_status::failed);
    REQUIRE(!r.errors.empty());
    const auto& e = r.errors[0];
    CHECK(e.file == bad);
    CHECK(state::to_string(e).find(bad.string()) != std::string::npos);
    CHECK(r.state.metadata.empty());
    CHECK(r.state.spans.spans.empty());
    for (const auto& f : files)
        CHECK(!fs::exists(f));
    CHECK(r.moved_aside.size() == before.size());
    for (auto& [from, to] : r.moved_aside) {
        CHECK(to.string().find(from.string() + ".corrupt-") == 0);
        CHECK(slurp(to) == before.at(from));
        if (from == bad)
            CHECK(e.moved_to == to);
    }
    return e;
}

// The sample as an older build left it: version-1 metadata and a JSON spans file.
void save_sample_v1(const fs::path& dir, std::string_view lineage = "orders")
{
    save_sample(dir, lineage);
    fs::remove(state::spans_path(dir, lineage));
    spit(state::spans_json_path(dir, lineage), state::encode_spans_json(lineage, sample_spans()));
    std::string meta = slurp(state::metadata_path(dir, lineage));
    const auto at = meta.find("\"version\":2");
    REQUIRE(at != std::string::npos);
    meta[at + 10] = '1';
    spit(state::metadata_path(dir, lineage), meta);
}

std::uint32_t crc32c(std::string_view body)
{
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
    crc.process_bytes(body.data(), body.size());
    return crc.checksum();
}

void put_le(std::string& s, std::size_t at, std::uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; ++i)
        s[at + static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
}

std::uint64_t get_le(const std::string& s, std::size_t at, int bytes)
{
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i)
        v |= std::uint64_t{static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)])} << (8 * i);
    return v;
}

// The binary spans file around `body`, written here from docs/FORMAT.md (not
// by the encoder): 28-byte header, little-endian.
std::string bin_file(std::string_view body, std::uint32_t version = 2, std::uint32_t kind = 2)
{
    std::string out("\x89TTSTATE", 8);
    out.resize(28);
    put_le(out, 8, version, 4);
    put_le(out, 12, kind, 4);
    put_le(out, 16, body.size(), 8);
    put_le(out, 24, crc32c(body), 4);
    out += body;
    return out;
}

// A body writer for hand-made files.
struct body_writer {
    std::string s;
    body_writer& varint(std::uint64_t v)
    {
        for (; v >= 0x80; v >>= 7)
            s += static_cast<char>((v & 0x7F) | 0x80);
        s += static_cast<char>(v);
        return *this;
    }
    body_writer& str(std::string_view t)
    {
        varint(t.size());
        s += t;
        return *this;
    }
    body_writer& u64(std::uint64_t v)
    {
        for (int i = 0; i < 8; ++i)
            s += static_cast<char>(v >> (8 * i));
        return *this;
    }
    body_writer& byte(unsigned char b)
    {
        s += static_cast<char>(b);
        return *this;
    }
};

}  // namespace

TEST_CASE("span_ids: follows-from causes in one pointer, read like a vector")
{
    static_assert(sizeof(tt::state::span_ids) == sizeof(void*));
    tt::state::span_ids a;
    CHECK(a.empty());
    CHECK(a.begin() == a.end());
    a.push_back(7);
    a.push_back(3);
    CHECK(a.size() == 2);
    CHECK(a == std::vector<std::uint64_t>{7, 3});
    CHECK(a[1] == 3);
    tt::state::span_ids b = a;  // a copy owns its own ids
    b.push_back(9);
    CHECK(a == std::vector<std::uint64_t>{7, 3});
    CHECK(b.to_vector() == std::vector<std::uint64_t>{7, 3, 9});
    CHECK_FALSE(a == b);
    b.resize(1);
    CHECK(b == std::vector<std::uint64_t>{7});
    b.resize(3);
    CHECK(b == std::vector<std::uint64_t>{7, 0, 0});
    const std::vector<std::uint64_t> v{4, 5};
    a = v;
    CHECK(a == tt::state::span_ids{4, 5});
    tt::state::span_ids c = std::move(a);
    CHECK(c == v);
    CHECK(a.empty());  // NOLINT(bugprone-use-after-move): a moved-from list is empty
    c.clear();
    CHECK(c.empty());
    // A long list read id by id (a state file's JSON form), then cut and
    // grown again within its room: the ids kept, the new ones zero.
    tt::state::span_ids many;
    for (std::uint64_t i = 1; i <= 10'000; ++i)
        many.push_back(i);
    REQUIRE(many.size() == 10'000);
    CHECK(many[0] == 1);
    CHECK(many[9'999] == 10'000);
    many.resize(2);
    many.resize(4);
    CHECK(many == std::vector<std::uint64_t>{1, 2, 0, 0});
}

TEST_CASE("round trip: every value kind, bit for bit")
{
    temp_dir d;
    save_sample(d.path);
    CHECK(fs::exists(d.path / "orders.metadata.json"));
    CHECK(fs::exists(d.path / "orders.spans.bin"));
    CHECK(state::spans_path(d.path, "orders") == d.path / "orders.spans.bin");
    CHECK(files_in(d.path) == 2);  // no temporary file left behind
    auto r = state::load_lineage_state(d.path, "orders");
    REQUIRE(r.status == load_status::loaded);
    CHECK(r.errors.empty());
    CHECK(r.state.metadata == sample_metadata());
    CHECK(r.state.spans == sample_spans());
    // Saving what was loaded writes the same bytes.
    const std::string before = slurp(d.path / "orders.spans.bin");
    REQUIRE(!state::save_lineage_state(d.path, "orders", r.state.metadata, r.state.spans));
    CHECK(slurp(d.path / "orders.spans.bin") == before);
    CHECK(files_in(d.path) == 2);
    // The header: magic, version 2, kind 2 (spans), body length, CRC-32C of the body.
    REQUIRE(before.size() > 28);
    CHECK(before.substr(0, 8) == std::string("\x89TTSTATE", 8));
    CHECK(get_le(before, 8, 4) == 2);
    CHECK(get_le(before, 12, 4) == 2);
    CHECK(get_le(before, 16, 8) == before.size() - 28);
    CHECK(get_le(before, 24, 4) == crc32c(std::string_view(before).substr(28)));
    // The in-memory decoder takes either form of the spans.
    const std::string mtext = slurp(d.path / "orders.metadata.json");
    for (const std::string& stext : {before, state::encode_spans_json("orders", sample_spans())}) {
        auto m = state::decode_lineage_state(mtext, stext, "orders");
        REQUIRE(m.status == load_status::loaded);
        CHECK(m.state.spans == sample_spans());
    }
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
    fs::remove(d.path / "orders.spans.bin");
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
    CHECK(!fs::exists(d.path.parent_path() / "escape.spans.bin"));
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
    const std::string jtext = state::encode_spans_json("orders", spans);
    const std::string btext = state::encode_spans("orders", spans);
    // which: 0 = the metadata cut, 1 = an older build's JSON spans file cut, 2 = the binary one.
    for (int which = 0; which < 3; ++which) {
        const std::string& stext = which == 1 ? jtext : btext;
        const std::string sname = which == 1 ? "orders.spans.json" : "orders.spans.bin";
        const std::string& full = which == 0 ? mtext : stext;
        for (std::size_t len = 0; len < full.size(); ++len) {
            CAPTURE(which);
            CAPTURE(len);
            fs::path sub = d.path / ("t" + std::to_string(which) + "-" + std::to_string(len));
            fs::create_directory(sub);
            spit(sub / "orders.metadata.json", which == 0 ? mtext.substr(0, len) : mtext);
            spit(sub / sname, which != 0 ? stext.substr(0, len) : stext);
            if (which != 2 && full.substr(0, len) + "\n" == full) {  // only the final newline is gone: still whole
                CHECK(state::load_lineage_state(sub, "orders").status == load_status::loaded);
                continue;
            }
            auto e = expect_failure(sub, sub / (which == 0 ? "orders.metadata.json" : sname));
            CHECK(e.code == (which == 2 ? state_errc::truncated : state_errc::invalid_json));
        }
    }
}

TEST_CASE("flipped bytes never crash; a refused file is moved aside intact, an accepted one stays")
{
    temp_dir d;
    save_sample(d.path);
    const std::string btext = slurp(d.path / "orders.spans.bin");
    const std::string mtext = slurp(d.path / "orders.metadata.json");
    const std::string jtext = state::encode_spans_json("orders", sample_spans());
    std::size_t refused = 0, accepted = 0, bin_accepted = 0;
    // which: 0 = metadata, 1 = an older build's JSON spans file, 2 = the binary one.
    for (int which = 0; which < 3; ++which) {
        const std::string& stext = which == 1 ? jtext : btext;
        const std::string sname = which == 1 ? "orders.spans.json" : "orders.spans.bin";
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
                spit(sub / sname, which != 0 ? bad : stext);
                // Moving aside costs two renames and folder fsyncs: done for
                // every 16th case; the rest check that nothing is touched.
                const bool move = i % 16 == 0;
                auto r = state::load_lineage_state(sub, "orders",
                                                   move ? state::on_bad_file::move_aside : state::on_bad_file::keep);
                const std::string bad_name = which == 0 ? "orders.metadata.json" : sname;
                if (r.status == load_status::loaded) {
                    ++accepted;
                    bin_accepted += which == 2;
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
                    CHECK(!fs::exists(sub / sname));
                    for (auto& [from, to] : r.moved_aside)
                        CHECK(slurp(to) == (from.filename() == sname ? (which != 0 ? bad : stext)
                                                                     : (which == 0 ? bad : mtext)));
                    if (which == 2 && i >= 28)  // in the body: the checksum catches it
                        CHECK(r.errors[0].code == state_errc::checksum_mismatch);
                }
            }
    }
    CHECK(refused > accepted);
    CHECK(bin_accepted == 0);  // every flipped bit of the binary file is caught
}

TEST_CASE("JSON files (metadata, an older build's spans): wrong magic, wrong kind, newer version, not JSON")
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
        save_sample_v1(d.path);
        const fs::path& bad = r.metadata ? m : s;
        spit(bad, r.edit(slurp(bad)));
        auto e = expect_failure(d.path, bad);
        CHECK(e.code == r.code);
        MESSAGE(state::to_string(e));
    }
}

TEST_CASE("JSON files: missing, unknown and mistyped fields; hand-edited inconsistent tables")
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
        save_sample_v1(d.path);
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
    CHECK(fs::exists(d.path / "orders.spans.bin"));
    expect_failure(d.path, d.path / "orders.spans.bin");
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

namespace {

// A hand-made binary spans body for the sample metadata (docs/FORMAT.md):
// span 3 (request, user="ann", follows 1) and span 5 (query, child of 3,
// sql=-3). Each member can be spoiled on its own.
struct hand {
    std::string lineage = "orders";
    std::uint64_t span_count = 2;
    std::string id0 = "\x03";                      // span 3's id, as varint bytes
    std::uint64_t name_index = 1;                  // its value's name: "user"
    unsigned char tag = 7;                         // str
    std::string payload = std::string("\x03" "ann");  // its value
    std::uint64_t id1 = 5, site1 = 0, parent1 = 3; // span 5: call-site table index 0 = query
    std::string tail;                              // bytes after the last span
};

std::string hand_body(const hand& h)
{
    body_writer w;
    w.str(h.lineage).varint(9);
    w.varint(2).str("sql").str("user");
    w.varint(2).u64(query_site).u64(request_site);
    w.varint(h.span_count);
    w.s += h.id0;
    w.varint(1).varint(0).varint(2).u64(1000).varint(1).varint(h.name_index).byte(h.tag);
    w.s += h.payload;
    w.varint(1).varint(1);
    w.varint(h.id1).varint(h.site1).varint(h.parent1).varint(1).u64(static_cast<std::uint64_t>(-5));
    w.varint(1).varint(0).byte(2).varint(5).varint(0);
    w.s += h.tail;
    return w.s;
}

state::persisted_spans hand_spans()
{
    state::persisted_spans s;
    s.next_id = 9;
    state::persisted_span a;
    a.id = 3;
    a.callsite_id = request_site;
    a.ref_count = 2;
    a.start = state::clock::time_point(std::chrono::duration_cast<state::clock::duration>(std::chrono::nanoseconds(1000)));
    a.values = {{"user", std::string("ann")}};
    a.follows_from = {1};
    state::persisted_span b;
    b.id = 5;
    b.callsite_id = query_site;
    b.parent_id = 3;
    b.start = state::clock::time_point(std::chrono::duration_cast<state::clock::duration>(std::chrono::nanoseconds(-5)));
    b.values = {{"sql", std::int64_t{-3}}};
    s.spans = {a, b};
    return s;
}

}  // namespace

TEST_CASE("binary spans file: a hand-made file loads; every kind of damage gives its typed error, moved aside")
{
    temp_dir d;
    const fs::path s = d.path / "orders.spans.bin";
    save_sample(d.path);
    spit(s, bin_file(hand_body({})));
    auto good = state::load_lineage_state(d.path, "orders");
    REQUIRE(good.status == load_status::loaded);
    CHECK(good.state.spans == hand_spans());
    // The encoder's own file for it (its tables in first-use order) reads back the same.
    const std::string mtext = slurp(d.path / "orders.metadata.json");
    auto enc = state::decode_lineage_state(mtext, state::encode_spans("orders", hand_spans()), "orders");
    REQUIRE(enc.status == load_status::loaded);
    CHECK(enc.state.spans == hand_spans());

    const std::string file = bin_file(hand_body({}));
    auto with = [](auto edit) {
        hand h;
        edit(h);
        return bin_file(hand_body(h));
    };
    struct row {
        const char* name;
        std::string bytes;
        state_errc code;
        const char* where;
    };
    std::string flipped = file;
    flipped[40] = static_cast<char>(flipped[40] ^ 0x10);
    std::string long_body = file;
    put_le(long_body, 16, get_le(file, 16, 8) + 1, 8);
    std::string other_magic = file;
    other_magic[1] = 'X';
    const row rows[] = {
        {"empty file", "", state_errc::truncated, ""},
        {"cut in the magic", file.substr(0, 5), state_errc::truncated, ""},
        {"cut in the header", file.substr(0, 20), state_errc::truncated, ""},
        {"bad magic", other_magic, state_errc::wrong_magic, ""},
        {"JSON where the binary file belongs", state::encode_spans_json("orders", hand_spans()),
         state_errc::wrong_magic, ""},
        {"newer version", bin_file(hand_body({}), 3), state_errc::unsupported_version, "/version"},
        {"huge version", bin_file(hand_body({}), 0xFFFFFFFF), state_errc::unsupported_version, "/version"},
        {"version 1 (that is JSON)", bin_file(hand_body({}), 1), state_errc::invalid_value, "/version"},
        {"a metadata kind", bin_file(hand_body({}), 2, 1), state_errc::wrong_kind, "/kind"},
        {"unknown kind", bin_file(hand_body({}), 2, 9), state_errc::invalid_value, "/kind"},
        {"header gives a longer body", long_body, state_errc::truncated, ""},
        {"a byte after the body", file + "x", state_errc::invalid_value, ""},
        {"flipped byte in the body", flipped, state_errc::checksum_mismatch, ""},
        {"other lineage", with([](hand& h) { h.lineage = "billing"; }), state_errc::inconsistent, "/lineage"},
        {"lineage not UTF-8", with([](hand& h) { h.lineage = "\xc3\x28"; }), state_errc::invalid_value, "/lineage"},
        {"span count beyond the body", with([](hand& h) { h.span_count = 1000; }), state_errc::invalid_value,
         "/spans"},
        {"fewer spans than records", with([](hand& h) { h.span_count = 1; }), state_errc::invalid_value, ""},
        {"bytes after the last span", with([](hand& h) { h.tail = "\x01"; }), state_errc::invalid_value, ""},
        {"id beyond 64 bits", with([](hand& h) { h.id0 = std::string(9, '\xff') + "\x02"; }),
         state_errc::invalid_value, "/spans/0/id"},
        {"id spelled long (0x83 0x00)", with([](hand& h) { h.id0 = std::string("\x83\x00", 2); }),
         state_errc::invalid_value, "/spans/0/id"},
        {"field name not in the table", with([](hand& h) { h.name_index = 2; }), state_errc::invalid_value,
         "/spans/0/values/0"},
        {"call site not in the table", with([](hand& h) { h.site1 = 2; }), state_errc::invalid_value,
         "/spans/1/callsite"},
        {"unknown value type", with([](hand& h) { h.tag = 12; }), state_errc::invalid_value, "/spans/0/values/0"},
        {"bool byte 2", with([](hand& h) { h.tag = 1, h.payload = "\x02"; }), state_errc::invalid_value,
         "/spans/0/values/0"},
        {"string not UTF-8", with([](hand& h) { h.payload = "\x03" "a\xc3\x28"; }), state_errc::invalid_value,
         "/spans/0/values/0"},
        {"string past the end", with([](hand& h) { h.payload = "\x7f" "ann"; }), state_errc::invalid_value,
         "/spans/0/values/0"},
        // Readable, but the tables disagree: the same checks as the JSON form.
        {"duplicate ids", with([](hand& h) { h.id1 = 3, h.parent1 = 0; }), state_errc::inconsistent, "/spans/1/id"},
        {"id 0", with([](hand& h) { h.id0 = std::string(1, '\0'); }), state_errc::inconsistent, "/spans/0/id"},
        {"parent never assigned", with([](hand& h) { h.parent1 = 12; }), state_errc::inconsistent,
         "/spans/1/parent"},
        {"value for a field the call site lacks", with([](hand& h) { h.name_index = 0; }),
         state_errc::inconsistent, "/spans/0/values/0"},
    };
    for (const auto& r : rows) {
        const std::string name = r.name;
        CAPTURE(name);
        fs::remove_all(d.path);
        fs::create_directory(d.path);
        save_sample(d.path);
        spit(s, r.bytes);
        auto e = expect_failure(d.path, s);
        CHECK(e.code == r.code);
        CHECK(e.where == r.where);
        MESSAGE(state::to_string(e));
    }
}

TEST_CASE("a parent cycle in a binary file, and the same in memory, is refused")
{
    auto spans = sample_spans();
    spans.spans[0].parent_id = 5;  // 3 -> 5 -> 3
    const std::string mtext = state::encode_metadata("orders", sample_metadata());
    auto r = state::decode_lineage_state(mtext, state::encode_spans("orders", spans), "orders");
    REQUIRE(r.status == load_status::failed);
    CHECK(r.errors.at(0).code == state_errc::inconsistent);
    CHECK(r.errors.at(0).where == "/spans/0/parent");
    // A long chain that ends is fine, in any file order.
    state::persisted_spans chain;
    for (std::uint64_t id = 1; id <= 2000; ++id)
        chain.spans.push_back({id, query_site, id - 1, {}, 1, {}, {}});
    std::reverse(chain.spans.begin(), chain.spans.end());
    chain.next_id = 2001;
    auto ok = state::decode_lineage_state(mtext, state::encode_spans("orders", chain), "orders");
    REQUIRE(ok.status == load_status::loaded);
    CHECK(ok.state.spans.spans.front().id == 1);  // sorted by id once loaded
    chain.spans.back().parent_id = 2000;           // 1 -> 2000: the chain now closes on itself
    auto cyc = state::decode_lineage_state(mtext, state::encode_spans("orders", chain), "orders");
    REQUIRE(cyc.status == load_status::failed);
    CHECK(cyc.errors.at(0).where == "/spans/0/parent");
}

TEST_CASE("an older build's folder (JSON spans, metadata version 1) loads; the next save moves it to the binary file")
{
    temp_dir d;
    save_sample_v1(d.path);
    CHECK(state::list_lineages(d.path) == std::vector<std::string>{"orders"});
    auto r = state::load_lineage_state(d.path, "orders");
    REQUIRE(r.status == load_status::loaded);
    CHECK(r.state.metadata == sample_metadata());
    CHECK(r.state.spans == sample_spans());
    REQUIRE(!state::save_lineage_state(d.path, "orders", r.state.metadata, r.state.spans));
    CHECK(fs::exists(d.path / "orders.spans.bin"));
    CHECK(!fs::exists(d.path / "orders.spans.json"));
    CHECK(slurp(d.path / "orders.metadata.json").find("\"version\":2") != std::string::npos);
    CHECK(files_in(d.path) == 2);
    auto again = state::load_lineage_state(d.path, "orders");
    REQUIRE(again.status == load_status::loaded);
    CHECK(again.state.spans == sample_spans());
}

TEST_CASE("what a crash during a save can leave behind loads as the newest whole state")
{
    temp_dir d;
    auto older = sample_spans();
    older.spans.pop_back();
    older.next_id = 6;
    // Killed after the metadata, before the spans: new metadata, the older build's spans.
    save_sample_v1(d.path);
    spit(d.path / "orders.spans.json", state::encode_spans_json("orders", older));
    REQUIRE(!state::save_lineage_state(d.path / "tmp", "orders", sample_metadata(), {}));
    fs::copy_file(d.path / "tmp" / "orders.metadata.json", d.path / "orders.metadata.json",
                  fs::copy_options::overwrite_existing);
    fs::remove_all(d.path / "tmp");
    auto a = state::load_lineage_state(d.path, "orders");
    REQUIRE(a.status == load_status::loaded);
    CHECK(a.state.spans == older);
    // Killed after the binary file's rename, before the JSON one's removal: the binary one wins.
    REQUIRE(!state::save_lineage_state(d.path, "orders", sample_metadata(), sample_spans()));
    spit(d.path / "orders.spans.json", state::encode_spans_json("orders", older));
    // ... and a temporary file of a save killed before its rename is ignored.
    spit(d.path / ".orders.spans.bin.tmp-1-1", "half a fi");
    auto b = state::load_lineage_state(d.path, "orders");
    REQUIRE(b.status == load_status::loaded);
    CHECK(b.state.spans == sample_spans());
    CHECK(state::list_lineages(d.path) == std::vector<std::string>{"orders"});
    // The next save removes the stale JSON file.
    REQUIRE(!state::save_lineage_state(d.path, "orders", b.state.metadata, b.state.spans));
    CHECK(!fs::exists(d.path / "orders.spans.json"));
    // A bad binary file beside a stale JSON one: both go aside, or the old spans would come back.
    spit(d.path / "orders.spans.json", state::encode_spans_json("orders", older));
    spit(d.path / "orders.spans.bin", "junk");
    auto e = expect_failure(d.path, d.path / "orders.spans.bin");
    CHECK(e.code == state_errc::wrong_magic);
    CHECK(state::load_lineage_state(d.path, "orders").status == load_status::none);
}

TEST_CASE("a save rewrites a file only when its bytes changed")
{
    temp_dir d;
    const fs::path m = d.path / "orders.metadata.json";
    const fs::path s = d.path / "orders.spans.bin";
    save_sample(d.path);
    // Hard links keep the files' current inodes alive: a rewrite (rename over) shows as a different file.
    fs::create_hard_link(m, d.path / "m-before");
    fs::create_hard_link(s, d.path / "s-before");
    save_sample(d.path);
    CHECK(fs::equivalent(m, d.path / "m-before"));  // same call sites: left as it was
    CHECK(fs::equivalent(s, d.path / "s-before"));  // same spans too
    auto moved = sample_spans();
    moved.spans[0].ref_count = 7;
    REQUIRE(!state::save_lineage_state(d.path, "orders", sample_metadata(), moved));
    CHECK(fs::equivalent(m, d.path / "m-before"));
    CHECK(!fs::equivalent(s, d.path / "s-before"));  // the spans changed: written
    CHECK(state::load_lineage_state(d.path, "orders").state.spans == moved);
    // A file replaced behind the saver's back, even with the same bytes, is written again.
    fs::remove(s);
    fs::copy_file(d.path / "s-before", d.path / "s-copy");
    spit(s, state::encode_spans("orders", moved));
    fs::create_hard_link(s, d.path / "s-foreign");
    REQUIRE(!state::save_lineage_state(d.path, "orders", sample_metadata(), moved));
    CHECK(!fs::equivalent(s, d.path / "s-foreign"));
    auto meta = sample_metadata();
    meta.push_back({0xfeedull << 48, model::callsite_kind::span, model::level::info, "late", "orders", "", "", 0, {}});
    REQUIRE(!state::save_lineage_state(d.path, "orders", meta, sample_spans()));
    CHECK(!fs::equivalent(m, d.path / "m-before"));
    auto r = state::load_lineage_state(d.path, "orders");
    REQUIRE(r.status == load_status::loaded);
    CHECK(r.state.metadata.size() == 4);
    // A metadata file changed behind the saver's back is written again.
    spit(m, "edited");
    REQUIRE(!state::save_lineage_state(d.path, "orders", meta, sample_spans()));
    CHECK(slurp(m) != "edited");
    CHECK(state::load_lineage_state(d.path, "orders").status == load_status::loaded);
    fs::remove(m);
    REQUIRE(!state::save_lineage_state(d.path, "orders", meta, sample_spans()));
    CHECK(state::load_lineage_state(d.path, "orders").state.metadata == r.state.metadata);
}

TEST_CASE("the binary spans file stays small: tables for names and call sites")
{
    state::persisted_spans spans;
    for (std::uint64_t id = 1; id <= 1000; ++id)
        spans.spans.push_back({id,
                               request_site,
                               0,
                               model::field_values{{"user", std::string("hello world")},
                                                   {"n", std::int64_t(id)},
                                                   {"ratio", 0.25 * static_cast<double>(id)}},
                               1,
                               state::clock::now(),
                               {}});
    spans.next_id = 1001;
    const std::string bin = state::encode_spans("orders", spans);
    const std::string json = state::encode_spans_json("orders", spans);
    MESSAGE("bytes per span: binary ", bin.size() / 1000.0, ", JSON ", json.size() / 1000.0);
    CHECK(bin.size() < 60 * 1000);
    CHECK(bin.size() * 4 < json.size());
    auto r = state::decode_lineage_state(state::encode_metadata("orders", sample_metadata()), bin, "orders");
    REQUIRE(r.status == load_status::loaded);
    CHECK(r.state.spans == spans);
}

TEST_CASE("the encoder writes format 2 byte for byte (tables in first-use order)")
{
    body_writer w;
    w.str("orders").varint(9);
    w.varint(2).str("user").str("sql");
    w.varint(2).u64(request_site).u64(query_site);
    w.varint(2);
    w.varint(3).varint(0).varint(0).varint(2).u64(1000).varint(1).varint(0).byte(7).str("ann").varint(1).varint(1);
    w.varint(5).varint(1).varint(3).varint(1).u64(static_cast<std::uint64_t>(-5));
    w.varint(1).varint(1).byte(2).varint(5).varint(0);  // i64 -3, zigzag 5
    CHECK(state::encode_spans("orders", hand_spans()) == bin_file(w.s));
}

TEST_CASE("packed_values: every kind, long strings, inline and heap, copies and moves")
{
    using state::packed_values;
    const std::string long_text(300, 'x');  // a length past the 1-byte form
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const model::field_values all{{"b", true},
                                  {"i", std::int64_t{-7}},
                                  {"u", std::uint64_t{1} << 63},
                                  {"i128", model::i128{-1} << 100},
                                  {"u128", model::u128{3} << 120},
                                  {"nan", nan},
                                  {"neg0", -0.0},
                                  {"s", long_text},
                                  {std::string(260, 'n'), std::string("long name")},
                                  {"d", model::debug_text{"Point { x: 1 }"}},
                                  {"e", model::error_chain{{"outer", "inner", long_text}}}};
    const packed_values p = all;
    CHECK(p.size() == all.size());
    CHECK(p == all);
    CHECK(model::field_values(p.to_fields()).size() == all.size());
    const auto back = p.to_fields();
    for (std::size_t i = 0; i < all.size(); ++i) {
        CHECK(back[i].first == all[i].first);
        CHECK(model::same_value(back[i].second, all[i].second));
    }
    std::size_t n = 0;
    for (const auto& [name, v] : p) {
        CHECK(name == all[n].first);
        CHECK(model::same_value(v, all[n].second));
        ++n;
    }
    CHECK(n == all.size());
    // NaN equals itself bitwise; -0.0 is not 0.0.
    CHECK(packed_values(model::field_values{{"x", nan}}) == packed_values(model::field_values{{"x", nan}}));
    CHECK_FALSE(packed_values(model::field_values{{"x", -0.0}}) == packed_values(model::field_values{{"x", 0.0}}));
    CHECK_FALSE(p == model::field_values(all.begin(), all.end() - 1));

    // Small sets stay inline; copies and moves keep the values either way.
    packed_values small{{"k", std::int64_t{1}}, {"w", 0.5}};
    CHECK(small.bytes().size() <= packed_values::inline_bytes);
    CHECK(p.bytes().size() > packed_values::inline_bytes);
    for (const packed_values* src : std::initializer_list<const packed_values*>{&small, &p}) {
        packed_values copy = *src;
        CHECK(copy == *src);
        packed_values moved = std::move(copy);
        CHECK(moved == *src);
        CHECK(copy.empty());
        copy = moved;
        CHECK(copy == moved);
        moved = std::move(copy);
        CHECK(moved == *src);
    }
    small.emplace_back("s", long_text);
    CHECK(small.size() == 3);
    CHECK(small == model::field_values{{"k", std::int64_t{1}}, {"w", 0.5}, {"s", long_text}});
    small.clear();
    CHECK(small.empty());
    CHECK(small.begin() == small.end());

    // Every kind through the binary spans file and back, and the JSON one.
    state::persisted_spans spans;
    spans.next_id = 2;
    state::persisted_span s;
    s.id = 1;
    s.callsite_id = request_site;
    s.values = p;
    spans.spans.push_back(s);
    model::callsite site = sample_metadata()[0];
    site.id = request_site;
    site.kind = model::callsite_kind::span;
    site.fields.clear();
    for (const auto& f : all)
        site.fields.push_back(f.first);
    const std::string meta = state::encode_metadata("orders", {site});
    for (const std::string& text : {state::encode_spans("orders", spans), state::encode_spans_json("orders", spans)}) {
        auto r = state::decode_lineage_state(meta, text, "orders");
        REQUIRE(r.status == load_status::loaded);
        CHECK(r.state.spans == spans);
    }
}
