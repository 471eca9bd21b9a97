// The capture layer on its own (queries, the canonical comparison form), and
// the tracing-tunnel fixtures replayed through the receiver into it and
// compared with their *.expect.json.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "receiver_support.hpp"

#include <tracetunnel/event_json.hpp>
#include <tracetunnel/host/capture.hpp>
#include <tracetunnel/host/receiver.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace tt;
using namespace tt::test;

namespace {

model::callsite site(std::uint64_t id, model::callsite_kind kind, std::string name, std::vector<std::string> fields,
                     model::level level = model::level::info)
{
    model::callsite cs;
    cs.id = id;
    cs.kind = kind;
    cs.level = level;
    cs.name = std::move(name);
    cs.target = "cap::test";
    cs.fields = std::move(fields);
    return cs;
}

}  // namespace

TEST_CASE("capture: spans, events and queries")
{
    host::capture_layer cap;
    const auto root_site = site(1, model::callsite_kind::span, "root", {"user"});
    const auto child_site = site(2, model::callsite_kind::span, "child", {"n"}, model::level::debug);
    const auto ev_site = site(3, model::callsite_kind::event, "ev", {"message", "k"}, model::level::warn);
    const model::value alice(std::string("alice"));
    const host::field_ref rv[] = {{"user", alice}};
    host::span_attrs a;
    a.site = &root_site;
    a.plugin = "p";
    a.values = rv;
    const auto root = cap.new_span(a);
    const model::value one(std::int64_t{1}), two(std::int64_t{2});
    const host::field_ref cv1[] = {{"n", one}};
    host::span_attrs c;
    c.site = &child_site;
    c.parent = root;
    c.values = cv1;
    const auto child1 = cap.new_span(c);
    const host::field_ref cv2[] = {{"n", two}};
    c.values = cv2;
    c.parent = child1;
    const auto grandchild = cap.new_span(c);
    cap.enter(root);
    CHECK(cap.current_span() == root);
    cap.enter(child1);
    CHECK(cap.current_span() == child1);
    const model::value msg(model::debug_text{"hi"});
    const model::value k(true);
    const host::field_ref ev_values[] = {{"message", msg}, {"k", k}};
    host::event_record e;
    e.site = &ev_site;
    e.parent = cap.current_span();
    e.values = ev_values;
    cap.event(e);
    cap.exit(child1);
    cap.exit(root);
    CHECK(cap.current_span() == 0);
    cap.follows_from(grandchild, root);
    cap.record(root, rv);
    cap.close(grandchild);

    CHECK(cap.find_by_name("child") == std::vector<host::span_handle>{child1, grandchild});
    CHECK(cap.find_by_level(model::level::debug) == std::vector<host::span_handle>{child1, grandchild});
    CHECK(cap.find_by_field("n", two) == std::vector<host::span_handle>{grandchild});
    CHECK(cap.children_of(root) == std::vector<host::span_handle>{child1});
    CHECK(cap.ancestors_of(grandchild) == std::vector<host::span_handle>{child1, root});
    CHECK(cap.descendants_of(root) == std::vector<host::span_handle>{child1, grandchild});
    const auto in_child = cap.events_in(child1);
    REQUIRE(in_child.size() == 1);
    CHECK(in_child[0].message == std::optional<std::string>("hi"));
    CHECK(in_child[0].level == model::level::warn);
    CHECK(cap.span(child1)->events == std::vector<std::size_t>{0});
    CHECK(cap.open_spans() == 2);
    CHECK(cap.anomalies().empty());

    // misuse is recorded, not fatal
    cap.close(grandchild);
    cap.record(999, rv);
    CHECK(cap.anomalies().size() == 2);
    CHECK(cap.span(grandchild)->close_count == 2);

    const auto form = cap.to_expect_json();
    const auto expected = boost::json::parse(R"({"spans":[
      {"id":1,"name":"root","target":"cap::test","level":"info","parent":null,"follows_from":[],
       "fields":{"user":"alice"},"closed":false,"entered":1,"exited":1},
      {"id":2,"name":"child","target":"cap::test","level":"debug","parent":1,"follows_from":[],
       "fields":{"n":1},"closed":false,"entered":1,"exited":1},
      {"id":3,"name":"child","target":"cap::test","level":"debug","parent":2,"follows_from":[1],
       "fields":{"n":2},"closed":true,"entered":0,"exited":0}],
     "events":[{"span":2,"level":"warn","target":"cap::test","message":"hi","fields":{"k":true}}]})");
    std::string where;
    CHECK_MESSAGE(same_json_ordered(form, expected, &where), where);
}

TEST_CASE("capture: canonical values")
{
    using model::i128;
    using model::u128;
    CHECK(host::expect_json_value(model::value(std::int64_t{-5})) == boost::json::value(-5));
    CHECK(host::expect_json_value(model::value(~std::uint64_t{0})).as_uint64() == ~std::uint64_t{0});
    CHECK(host::expect_json_value(model::value(static_cast<i128>(-7))).as_int64() == -7);
    CHECK(host::expect_json_value(model::value(~static_cast<u128>(0))).is_double());
    CHECK(host::expect_json_value(model::value(model::debug_text{"dbg"})).as_string() == "dbg");
    CHECK(host::expect_json_value(model::value(model::error_chain{{"top", "cause"}})).as_string() == "top");
    CHECK(host::expect_json_value(model::value(-0.0)).is_double());
}

// ---------------------------------------------------------------------------
// tracing-tunnel fixtures

namespace {

std::filesystem::path fixtures_dir()
{
    const char* dir = std::getenv("TT_FIXTURES_DIR");
    REQUIRE_MESSAGE(dir != nullptr, "TT_FIXTURES_DIR is not set (meson sets it)");
    const std::filesystem::path p(dir);
    REQUIRE_MESSAGE(std::filesystem::is_directory(p), "fixture folder missing: " << p);
    return p;
}

std::string read_file(const std::filesystem::path& p)
{
    std::ifstream in(p, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot read " << p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void replay(host::receiver& r, const std::filesystem::path& jsonl)
{
    std::istringstream lines(read_file(jsonl));
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
        ++n;
        if (line.empty())
            continue;
        auto ev = model::event_from_tracing_tunnel_json(line);
        REQUIRE_MESSAGE(ev.ok(), jsonl.filename() << ":" << n << ": " << model::to_string(ev.error()));
        auto res = r.try_receive(ev.value());
        REQUIRE_MESSAGE(res.has_value(), jsonl.filename() << ":" << n << ": " << res.error().message);
    }
}

void compare(const host::capture_layer& cap, const std::filesystem::path& expect)
{
    const auto expected = boost::json::parse(read_file(expect));
    const auto got = cap.to_expect_json();
    std::string where;
    CHECK_MESSAGE(same_json_ordered(got, expected, &where),
                  expect.filename() << ": " << where << "\n got: " << boost::json::serialize(got));
    CHECK(cap.anomalies().empty());
}

// A tracing-tunnel tagged value ({"int": 42}, {"string": "x"}, ...).
model::value tt_value(const boost::json::value& v)
{
    const auto& o = v.as_object();
    REQUIRE(o.size() == 1);
    const auto& [tag, x] = *o.begin();
    if (tag == "bool")
        return model::value(x.as_bool());
    if (tag == "int")
        return model::value(x.to_number<std::int64_t>());
    if (tag == "u_int")
        return model::value(x.to_number<std::uint64_t>());
    if (tag == "float")
        return model::value(x.to_number<double>());
    if (tag == "string")
        return model::value(std::string(x.as_string()));
    if (tag == "object")
        return model::value(model::debug_text{std::string(x.as_string())});
    FAIL("value tag not handled by this test: " << std::string(tag));
    return model::value(false);
}

// PersistedMetadata + PersistedSpans (serde_json) as a receiver_state.
host::receiver_state tt_persisted(const std::filesystem::path& metadata, const std::filesystem::path& spans)
{
    host::receiver_state st;
    const auto meta_doc = boost::json::parse(read_file(metadata));
    for (const auto& [key, v] : meta_doc.as_object()) {
        const auto& o = v.as_object();
        model::callsite cs;
        cs.id = std::stoull(std::string(key));
        cs.kind = o.at("kind").as_string() == "span" ? model::callsite_kind::span : model::callsite_kind::event;
        const std::string level(o.at("level").as_string());
        for (auto l : {model::level::error, model::level::warn, model::level::info, model::level::debug,
                       model::level::trace})
            if (model::to_string(l) == level)
                cs.level = l;
        cs.name = o.at("name").as_string();
        cs.target = o.at("target").as_string();
        if (o.contains("module_path"))
            cs.module_path = o.at("module_path").as_string();
        if (o.contains("file"))
            cs.file = o.at("file").as_string();
        if (o.contains("line"))
            cs.line = static_cast<std::uint32_t>(o.at("line").to_number<std::uint64_t>());
        for (const auto& f : o.at("fields").as_array())
            cs.fields.emplace_back(f.as_string());
        st.metadata.push_back(std::move(cs));
    }
    std::uint64_t max_id = 0;
    const auto spans_doc = boost::json::parse(read_file(spans));
    for (const auto& [key, v] : spans_doc.as_object()) {
        const auto& o = v.as_object();
        host::persisted_span ps;
        ps.id = std::stoull(std::string(key));
        ps.callsite_id = o.at("metadata_id").to_number<std::uint64_t>();
        if (o.contains("parent_id"))
            ps.parent_id = o.at("parent_id").to_number<std::uint64_t>();
        ps.ref_count = o.at("ref_count").to_number<std::uint64_t>();
        for (const auto& [name, val] : o.at("values").as_object())
            ps.values.emplace_back(std::string(name), tt_value(val));
        max_id = std::max(max_id, ps.id);
        st.spans.spans.push_back(std::move(ps));
    }
    std::sort(st.spans.spans.begin(), st.spans.spans.end(), [](auto& a, auto& b) { return a.id < b.id; });
    st.spans.next_id = max_id + 1;  // tracing-tunnel keeps no counter: the sender's ids continue
    return st;
}

}  // namespace

TEST_CASE("fixtures: single streams match their expectations")
{
    const auto dir = fixtures_dir();
    int n = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        const auto p = entry.path();
        if (p.extension() != ".jsonl" || p.filename().string().rfind("persist-split", 0) == 0)
            continue;
        CAPTURE(p.filename().string());
        auto expect = p;
        expect.replace_extension(".expect.json");
        host::capture_layer cap;
        {
            host::receiver r(p.stem().string(), cap);
            replay(r, p);
            r.persist();
        }
        compare(cap, expect);
        ++n;
    }
    CHECK(n >= 3);  // basic, nested, fib
}

TEST_CASE("fixtures: persist-split (reload with local spans, and restart)")
{
    const auto dir = fixtures_dir();
    host::capture_layer cap;
    host::receiver_state mine;
    std::shared_ptr<host::local_spans> local;
    {
        host::receiver r("persist-split", cap);
        replay(r, dir / "persist-split.part1.jsonl");
        mine.metadata = r.persist_metadata();
        mine.spans = r.persist();
        local = r.local();
    }
    compare(cap, dir / "persist-split.part1.expect.json");

    // what we persisted is what tracing-tunnel persisted (start times aside)
    const auto theirs = tt_persisted(dir / "persist-split.persisted-metadata.json",
                                     dir / "persist-split.persisted-spans.json");
    CHECK(mine.metadata == [&] {
        auto m = theirs.metadata;
        std::sort(m.begin(), m.end(), [](auto& a, auto& b) { return a.id < b.id; });
        return m;
    }());
    REQUIRE(mine.spans.spans.size() == theirs.spans.spans.size());
    for (std::size_t i = 0; i < mine.spans.spans.size(); ++i) {
        auto a = mine.spans.spans[i];
        a.start = {};
        CHECK(a == theirs.spans.spans[i]);
    }

    SUBCASE("reload: our own persisted state, local spans handed over")
    {
        {
            host::receiver r("persist-split", cap, mine, {}, local);
            local.reset();
            replay(r, dir / "persist-split.part2.jsonl");
            r.persist();
        }
        compare(cap, dir / "persist-split.expect.json");
    }
    SUBCASE("reload: tracing-tunnel's persisted files, local spans handed over")
    {
        {
            host::receiver r("persist-split", cap, theirs, {}, local);
            local.reset();
            replay(r, dir / "persist-split.part2.jsonl");
            r.persist();
        }
        compare(cap, dir / "persist-split.expect.json");
    }
    SUBCASE("restart: tracing-tunnel's persisted files, a fresh host")
    {
        local.reset();
        host::capture_layer fresh;
        {
            host::receiver r("persist-split", fresh, theirs);
            replay(r, dir / "persist-split.part2.jsonl");
            r.persist();
        }
        compare(fresh, dir / "persist-split.restart.expect.json");
    }
}
