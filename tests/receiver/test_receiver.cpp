// The receiver against hand-built ABI events: typed errors that change
// nothing, reference counting, follows-from, persistence, rollback, quotas,
// threads, and replay of the tracing-tunnel fixtures.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "receiver_support.hpp"

#include <tracetunnel/abi_convert.hpp>
#include <tracetunnel/host/capture.hpp>
#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/receiver.hpp>

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <future>
#include <optional>
#include <sstream>
#include <thread>

using namespace tt;
using namespace tt::test;
using host::receive_errc;

namespace {

// A receiver with a span and an event call site registered.
struct fixture {
    host::capture_layer cap;
    abi_site span_site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {"a", "b"}};
    abi_site event_site{TT_CALLSITE_EVENT, TT_LEVEL_WARN, "event test.cpp:7", {"message", "n"}};
    host::receiver recv{"demo", cap};

    fixture()
    {
        CHECK(ok(recv, ev_new_callsite(span_site.get())) == TT_INTEREST_ALWAYS);
        CHECK(ok(recv, ev_new_callsite(event_site.get())) == TT_INTEREST_ALWAYS);
    }
    std::uint64_t span(const std::vector<tt_field_value>& values = {}, tt_parent_mode parent = TT_PARENT_CONTEXTUAL,
                       std::uint64_t parent_id = 0)
    {
        const std::uint64_t id = ok(recv, ev_new_span(span_site.id(), values, parent, parent_id));
        REQUIRE(id != 0);
        return id;
    }
};

}  // namespace

TEST_CASE("a span with an event inside reaches the pipeline")
{
    fixture f;
    const std::vector<tt_field_value> values{fv_i64(0, 42)};
    const auto id = f.span(values);
    ok(f.recv, ev_span(TT_EVENT_SPAN_ENTERED, id));
    const std::vector<tt_field_value> ev_values{fv_debug(0, "hello"), fv_u64(1, 3)};
    CHECK(ok(f.recv, ev_new_event(f.event_site.id(), ev_values)) == TT_STATUS_OK);
    ok(f.recv, ev_span(TT_EVENT_SPAN_EXITED, id));
    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, id));

    const auto spans = f.cap.spans();
    REQUIRE(spans.size() == 1);
    CHECK(spans[0].name == "work");
    CHECK(spans[0].plugin == "demo");
    CHECK(spans[0].closed);
    CHECK(spans[0].entered == 1);
    CHECK(spans[0].exited == 1);
    REQUIRE(spans[0].fields.size() == 1);
    CHECK(spans[0].fields[0].first == "a");
    const auto evs = f.cap.events();
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].span == spans[0].handle);
    CHECK(evs[0].message == std::optional<std::string>("hello"));
    REQUIRE(evs[0].fields.size() == 1);
    CHECK(evs[0].fields[0].first == "n");
    CHECK(f.cap.anomalies().empty());
    const auto st = f.recv.stats();
    CHECK(st.events[TT_EVENT_NEW_CALLSITE - 1] == 2);
    CHECK(st.events[TT_EVENT_NEW_SPAN - 1] == 1);
    CHECK(st.events[TT_EVENT_NEW_EVENT - 1] == 1);
    CHECK(st.live_spans == 0);
}

namespace {

// Reads an event's values twice, by range-for and by index, as "name=value".
struct values_layer final : host::layer {
    std::vector<std::string> by_step, by_index;
    void on_event(const host::event_view& ev) noexcept override
    {
        for (const host::field_ref& f : ev.values)
            by_step.push_back(std::string(f.name) + "=" + text_of(f.value));
        for (std::size_t i = 0; i < ev.values.size(); ++i)
            by_index.push_back(std::string(ev.values[i].name) + "=" + text_of(ev.values[i].value));
    }
    static std::string text_of(const host::value_ref& v)
    {
        return v.visit([](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            std::ostringstream out;
            if constexpr (std::is_same_v<T, bool>)
                out << (x ? "true" : "false");
            else if constexpr (std::is_same_v<T, std::string_view>)
                out << '"' << x << '"';
            else if constexpr (std::is_same_v<T, host::value_ref::debug>)
                out << "?" << x.text;
            else if constexpr (std::is_same_v<T, host::value_ref::error_view>)
                for (std::size_t i = 0; i < x.size(); ++i)
                    out << (i == 0 ? "" : " <- ") << x[i];
            else if constexpr (std::is_same_v<T, model::i128> || std::is_same_v<T, model::u128>)
                out << "wide";
            else
                out << x;
            return out.str();
        });
    }
};

}  // namespace

TEST_CASE("an event's values reach a layer by field index, each kind, made as they are read")
{
    auto layer = std::make_shared<values_layer>();
    host::dispatcher d;
    d.add_layer(layer);
    abi_site site{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event kinds.cpp:1", {"message", "b", "i", "u", "f", "d", "e"}};
    host::receiver recv("kinds", d);
    ok(recv, ev_new_callsite(site.get()));
    const std::vector<tt_str> chain{str_of("outer"), str_of("inner")};
    // Out of the call site's order: a view names its value by its field index.
    const std::vector<tt_field_value> values{fv_f64(4, 1.5), fv_str(0, "hello there"), fv_bool(1, true),
                                             fv_i64(2, -7), fv_u64(3, 9), fv_debug(5, "Point { x: 1 }"),
                                             fv_error(6, chain)};
    CHECK(ok(recv, ev_new_event(site.id(), values)) == TT_STATUS_OK);
    const std::vector<std::string> expected{"f=1.5",   "message=\"hello there\"", "b=true",
                                            "i=-7",    "u=9",                       "d=?Point { x: 1 }",
                                            "e=outer <- inner"};
    CHECK(layer->by_step == expected);
    CHECK(layer->by_index == expected);
}

TEST_CASE("field_refs: views made already, from a vector or a pointer and a count")
{
    const std::vector<host::field_ref> refs{{"a", host::value_ref(model::value(std::int64_t{1}))},
                                            {"b", host::value_ref()}};
    const host::field_refs from_vector = refs;
    const host::field_refs from_pointer(refs.data(), 1);
    REQUIRE(from_vector.size() == 2);
    CHECK(from_vector.front().name == "a");
    CHECK(!from_vector[1].value);
    CHECK(from_pointer.size() == 1);
    std::size_t steps = 0;
    for (const host::field_ref& f : from_pointer) {
        CHECK(f.name == "a");
        ++steps;
    }
    CHECK(steps == 1);
    CHECK(host::field_refs().empty());
}

TEST_CASE("received events and call-site hits are counted once, whichever path took them and on any thread")
{
    // The typical event's path counts the received event and its call
    // site's hit with one add; the general path (here: an explicit parent)
    // and a filtered event count their own way. stats() and callsite_infos()
    // must agree with what was sent.
    host::dispatcher pipeline(std::get<host::filter>(host::parse_filter("info")));
    host::receiver r("counts", pipeline);
    abi_site info_site{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "hot", {"message", "n"}};
    abi_site debug_site{TT_CALLSITE_EVENT, TT_LEVEL_DEBUG, "cold", {"message"}};
    abi_site span_site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {}};
    ok(r, ev_new_callsite(info_site.get()));
    ok(r, ev_new_callsite(debug_site.get()));  // the filter says never
    ok(r, ev_new_callsite(span_site.get()));
    const std::uint64_t span = ok(r, ev_new_span(span_site.id(), {}, TT_PARENT_ROOT));
    constexpr int per_thread = 500;
    auto work = [&] {
        for (int i = 0; i < per_thread; ++i) {
            const std::vector<tt_field_value> v{fv_str(0, "hello"), fv_i64(1, i)};
            ok(r, ev_new_event(info_site.id(), v, TT_PARENT_ROOT));           // the fast path
            ok(r, ev_new_event(info_site.id(), v, TT_PARENT_EXPLICIT, span));  // the general path
            CHECK(r.receive(ev_new_event(debug_site.id(), {fv_str(0, "x")})) == TT_STATUS_FILTERED);
        }
    };
    std::thread other(work);
    work();
    other.join();
    const auto st = r.stats();
    CHECK(st.events[TT_EVENT_NEW_EVENT - 1] == 3 * 2 * per_thread);
    CHECK(st.filtered == 2 * per_thread);
    CHECK(st.events[TT_EVENT_NEW_SPAN - 1] == 1);
    std::uint64_t hot_hits = 0, cold_hits = 0;
    for (const auto& info : r.callsite_infos()) {
        if (info.site.id == info_site.id())
            hot_hits = info.hits;
        if (info.site.id == debug_site.id())
            cold_hits = info.hits;
    }
    CHECK(hot_hits == 2 * 2 * per_thread);
    CHECK(cold_hits == 0);
    CHECK(pipeline.statistics().events == 2 * 2 * per_thread);
}

TEST_CASE("parents: contextual, explicit root, explicit span")
{
    fixture f;
    const auto outer = f.span();
    ok(f.recv, ev_span(TT_EVENT_SPAN_ENTERED, outer));
    const auto ctx = f.span();
    const auto root = f.span({}, TT_PARENT_ROOT);
    ok(f.recv, ev_span(TT_EVENT_SPAN_EXITED, outer));
    const auto expl = f.span({}, TT_PARENT_EXPLICIT, ctx);
    const auto none = f.span();  // nothing entered now
    ok(f.recv, ev_new_event(f.event_site.id(), {}, TT_PARENT_EXPLICIT, expl));
    ok(f.recv, ev_new_event(f.event_site.id(), {}, TT_PARENT_ROOT));

    const auto h = [&](std::uint64_t id) { return f.recv.local()->handle_of(id); };
    CHECK(f.cap.span(h(ctx))->parent == h(outer));
    CHECK(f.cap.span(h(root))->parent == 0);
    CHECK(f.cap.span(h(expl))->parent == h(ctx));
    CHECK(f.cap.span(h(none))->parent == 0);
    CHECK(f.cap.ancestors_of(h(expl)) == std::vector<host::span_handle>{h(ctx), h(outer)});
    CHECK(f.cap.descendants_of(h(outer)) == std::vector<host::span_handle>{h(ctx), h(expl)});
    const auto evs = f.cap.events();
    REQUIRE(evs.size() == 2);
    CHECK(evs[0].span == h(expl));
    CHECK(evs[1].span == 0);

    const auto snap = f.recv.snapshot();
    auto parent_of = [&](std::uint64_t id) {
        for (const auto& s : snap.spans)
            if (s.id == id)
                return s.parent_id;
        FAIL("no span " << id);
        return std::uint64_t{0};
    };
    CHECK(parent_of(ctx) == outer);
    CHECK(parent_of(root) == 0);
    CHECK(parent_of(expl) == ctx);
}

TEST_CASE("a contextual parent is a plugin's own span only, on the fast and the general path")
{
    // Two plugins on one pipeline: the pipeline's current span may be the
    // other plugin's, whose id may also be one of ours (ids count from 1 in
    // each receiver). The persisted parent is ours or none.
    host::capture_layer cap;
    cap.set_interest_policy([](const model::callsite& cs) {
        return cs.name == "general" ? host::interest::sometimes : host::interest::always;
    });
    abi_site site_a{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {"a"}};
    abi_site site_b{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {"a"}};
    abi_site general_b{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "general", {"a"}};
    host::receiver a{"a", cap};
    host::receiver b{"b", cap};
    ok(a, ev_new_callsite(site_a.get()));
    ok(b, ev_new_callsite(site_b.get()));
    CHECK(ok(b, ev_new_callsite(general_b.get())) == TT_INTEREST_SOMETIMES);

    const auto b0 = ok(b, ev_new_span(site_b.id(), {}));  // b's span with the id a's span gets
    const auto a1 = ok(a, ev_new_span(site_a.id(), {}));
    REQUIRE(a1 == b0);
    ok(a, ev_span(TT_EVENT_SPAN_ENTERED, a1));
    const auto b_fast = ok(b, ev_new_span(site_b.id(), {}));
    const auto b_general = ok(b, ev_new_span(general_b.id(), {}));
    const auto a2 = ok(a, ev_new_span(site_a.id(), {}));
    ok(b, ev_span(TT_EVENT_SPAN_ENTERED, b0));
    const auto b_inner = ok(b, ev_new_span(general_b.id(), {}));
    const auto b_inner_fast = ok(b, ev_new_span(site_b.id(), {}));
    ok(b, ev_span(TT_EVENT_SPAN_EXITED, b0));
    ok(a, ev_span(TT_EVENT_SPAN_EXITED, a1));

    auto parent_of = [](const host::receiver& r, std::uint64_t id) {
        for (const auto& s : r.snapshot().spans)
            if (s.id == id)
                return s.parent_id;
        FAIL("no span " << id);
        return std::uint64_t{0};
    };
    // The pipeline parents them all under what was current...
    CHECK(cap.span(b.local()->handle_of(b_fast))->parent == a.local()->handle_of(a1));
    CHECK(cap.span(b.local()->handle_of(b_general))->parent == a.local()->handle_of(a1));
    // ...but a plugin's persisted parent is only ever its own span.
    CHECK(parent_of(b, b_fast) == 0);
    CHECK(parent_of(b, b_general) == 0);
    CHECK(parent_of(a, a2) == a1);
    CHECK(parent_of(b, b_inner) == b0);
    CHECK(parent_of(b, b_inner_fast) == b0);
    CHECK(cap.anomalies().empty());
}

// ---------------------------------------------------------------------------
// typed errors

TEST_CASE("every typed error changes nothing")
{
    fixture f;
    const auto live = f.span({fv_i64(0, 1)});
    ok(f.recv, ev_span(TT_EVENT_SPAN_ENTERED, live));
    const auto closed = f.span();
    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, closed));
    f.recv.persist();

    abi_site wide{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "wide",
                  {"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15",
                   "f16", "f17", "f18", "f19", "f20", "f21", "f22", "f23", "f24", "f25", "f26", "f27", "f28", "f29",
                   "f30", "f31", "f32", "f33"}};
    ok(f.recv, ev_new_callsite(wide.get()));

    // call sites that are wrong in one way each
    tt_callsite conflict = f.span_site.get();
    const std::string other_name = "other";
    conflict.name = str_of(other_name);  // same id, different data
    tt_callsite small = f.span_site.get();
    small.struct_size = 8;
    tt_callsite null_name = f.span_site.get();
    null_name.name = tt_str{nullptr, 4};
    null_name.id = 12345;
    tt_callsite null_fields = f.span_site.get();
    null_fields.field_names = nullptr;
    null_fields.id = 12346;
    tt_callsite bad_kind = f.span_site.get();
    bad_kind.kind = 9;
    bad_kind.id = 12347;
    tt_callsite zero_id = f.span_site.get();
    zero_id.id = 0;
    const std::string bad_utf8 = "bad\xff";
    const std::string overlong = "\xc0\x80";
    const std::string surrogate = "\xed\xa0\x80";
    const std::string truncated = "ab\xe2\x82";
    tt_callsite utf8_name = f.span_site.get();
    utf8_name.name = str_of(bad_utf8);
    utf8_name.id = 12348;
    const tt_str bad_field_names[] = {str_of("a"), str_of(overlong)};
    tt_callsite utf8_field = f.span_site.get();
    utf8_field.field_names = bad_field_names;
    utf8_field.id = 12349;
    tt_callsite utf8_target = f.span_site.get();
    utf8_target.target = str_of(truncated);
    utf8_target.id = 12350;

    std::vector<tt_field_value> too_many;
    for (std::uint32_t i = 0; i < 33; ++i)
        too_many.push_back(fv_i64(i, i));
    tt_field_value bad_kind_value = fv_i64(0, 1);
    bad_kind_value.kind = 99;
    tt_field_value null_str = fv_str(0, "x");
    null_str.as.str = tt_str{nullptr, 3};
    tt_field_value empty_chain{};
    empty_chain.kind = TT_VALUE_ERROR;
    const tt_str bad_chain_items[] = {str_of("top"), str_of(surrogate)};
    tt_field_value bad_chain{};
    bad_chain.kind = TT_VALUE_ERROR;
    bad_chain.as.error = tt_error_chain{bad_chain_items, 2};

    struct row {
        const char* what;
        std::function<tt_event()> make;
        receive_errc code;
    };
    const auto S = f.span_site.id();
    const auto E = f.event_site.id();
    std::vector<std::vector<tt_field_value>> keep;  // storage for value arrays
    auto vals = [&](std::vector<tt_field_value> v) -> const std::vector<tt_field_value>& {
        keep.push_back(std::move(v));
        return keep.back();
    };
    keep.reserve(64);
    const std::vector<row> rows{
        {"struct_size too small", [&] { auto e = ev_span(TT_EVENT_SPAN_ENTERED, live); e.struct_size = 4; return e; },
         receive_errc::malformed},
        {"values NULL with a count", [&] { auto e = ev_new_span(S); e.value_count = 2; return e; },
         receive_errc::malformed},
        {"new call site without call site", [&] { auto e = ev_new_callsite(f.span_site.get()); e.callsite = nullptr; return e; },
         receive_errc::malformed},
        {"call site struct_size too small", [&] { return ev_new_callsite(small); }, receive_errc::malformed},
        {"call site NULL name with length", [&] { return ev_new_callsite(null_name); }, receive_errc::malformed},
        {"call site NULL field names", [&] { return ev_new_callsite(null_fields); }, receive_errc::malformed},
        {"call site unknown kind", [&] { return ev_new_callsite(bad_kind); }, receive_errc::malformed},
        {"call site id 0", [&] { return ev_new_callsite(zero_id); }, receive_errc::malformed},
        {"value of unknown kind", [&] { return ev_new_span(S, vals({bad_kind_value})); }, receive_errc::malformed},
        {"string value NULL with length", [&] { return ev_new_span(S, vals({null_str})); }, receive_errc::malformed},
        {"error value with empty chain", [&] { return ev_new_event(E, vals({empty_chain})); }, receive_errc::malformed},
        {"unknown parent mode", [&] { return ev_new_span(S, {}, 7); }, receive_errc::malformed},
        {"event kind 0", [&] { return ev_span(0, live); }, receive_errc::unknown_event_kind},
        {"event kind 42", [&] { return ev_span(42, live); }, receive_errc::unknown_event_kind},
        {"new span, unknown call site", [&] { return ev_new_span(777); }, receive_errc::unknown_callsite},
        {"new event, unknown call site", [&] { return ev_new_event(777); }, receive_errc::unknown_callsite},
        {"span from an event call site", [&] { return ev_new_span(E); }, receive_errc::wrong_callsite_kind},
        {"event from a span call site", [&] { return ev_new_event(S); }, receive_errc::wrong_callsite_kind},
        {"enter unknown", [&] { return ev_span(TT_EVENT_SPAN_ENTERED, 999); }, receive_errc::unknown_span},
        {"exit unknown", [&] { return ev_span(TT_EVENT_SPAN_EXITED, 999); }, receive_errc::unknown_span},
        {"clone unknown", [&] { return ev_span(TT_EVENT_SPAN_CLONED, 999); }, receive_errc::unknown_span},
        {"drop unknown", [&] { return ev_span(TT_EVENT_SPAN_DROPPED, 999); }, receive_errc::unknown_span},
        {"record unknown", [&] { return ev_record(999, vals({fv_i64(0, 1)})); }, receive_errc::unknown_span},
        {"follows-from on unknown", [&] { return ev_span(TT_EVENT_FOLLOWS_FROM, 999, live); }, receive_errc::unknown_span},
        {"follows-from cause 0", [&] { return ev_span(TT_EVENT_FOLLOWS_FROM, live, 0); }, receive_errc::unknown_span},
        {"enter closed", [&] { return ev_span(TT_EVENT_SPAN_ENTERED, closed); }, receive_errc::unknown_span},
        {"drop closed", [&] { return ev_span(TT_EVENT_SPAN_DROPPED, closed); }, receive_errc::unknown_span},
        {"clone closed", [&] { return ev_span(TT_EVENT_SPAN_CLONED, closed); }, receive_errc::unknown_span},
        {"record closed", [&] { return ev_record(closed, vals({fv_i64(0, 1)})); }, receive_errc::unknown_span},
        {"explicit parent unknown", [&] { return ev_new_span(S, {}, TT_PARENT_EXPLICIT, 999); }, receive_errc::unknown_span},
        {"explicit parent closed", [&] { return ev_new_event(E, {}, TT_PARENT_EXPLICIT, closed); },
         receive_errc::unknown_span},
        {"call site conflict", [&] { return ev_new_callsite(conflict); }, receive_errc::callsite_conflict},
        {"33 values", [&] { return ev_new_span(wide.id(), too_many); }, receive_errc::too_many_values},
        {"33 values recorded", [&] { return ev_record(live, too_many); }, receive_errc::too_many_values},
        {"field index out of range", [&] { return ev_new_span(S, vals({fv_i64(2, 1)})); }, receive_errc::unknown_field},
        {"recorded field out of range", [&] { return ev_record(live, vals({fv_i64(5, 1)})); }, receive_errc::unknown_field},
        {"event field out of range", [&] { return ev_new_event(E, vals({fv_i64(9, 1)})); }, receive_errc::unknown_field},
        {"string value not UTF-8", [&] { return ev_new_span(S, vals({fv_str(0, bad_utf8)})); }, receive_errc::invalid_utf8},
        {"debug value overlong", [&] { return ev_new_event(E, vals({fv_debug(0, overlong)})); },
         receive_errc::invalid_utf8},
        {"recorded value truncated", [&] { return ev_record(live, vals({fv_str(1, truncated)})); },
         receive_errc::invalid_utf8},
        {"error chain surrogate", [&] { return ev_new_event(E, vals({bad_chain})); }, receive_errc::invalid_utf8},
        {"call-site name not UTF-8", [&] { return ev_new_callsite(utf8_name); }, receive_errc::invalid_utf8},
        {"call-site field name overlong", [&] { return ev_new_callsite(utf8_field); }, receive_errc::invalid_utf8},
        {"call-site target truncated", [&] { return ev_new_callsite(utf8_target); }, receive_errc::invalid_utf8},
    };

    for (const auto& r : rows) {
        CAPTURE(r.what);
        const auto before = f.recv.snapshot();
        const auto meta_before = f.recv.persist_metadata();
        const auto cap_before = f.cap.to_expect_json();
        const auto local_before = f.recv.local()->size();
        const tt_event ev = r.make();
        auto res = f.recv.try_receive(ev);
        REQUIRE_FALSE(res.has_value());
        CHECK(res.error().code == r.code);
        CHECK(res.error().message.find("demo") != std::string::npos);
        CHECK(f.recv.snapshot() == before);
        CHECK(f.recv.persist_metadata() == meta_before);
        CHECK(f.cap.to_expect_json() == cap_before);
        CHECK(f.recv.local()->size() == local_before);
        CHECK(f.recv.committed());
        // receive(): the same refusal as an answer, counted and logged
        const auto errors_before = f.recv.stats().errors[static_cast<std::size_t>(r.code)];
        const std::uint64_t answer = f.recv.receive(ev);
        CHECK(TT_STATUS_IS_ERROR(answer));
        CHECK(TT_STATUS_CODE(answer) == host::status_of(r.code));
        CHECK(f.recv.stats().errors[static_cast<std::size_t>(r.code)] == errors_before + 1);
        CHECK(f.recv.snapshot() == before);
    }
    const auto log = f.recv.last_errors();
    CHECK(log.size() == 16);  // quotas::error_log_size
    CHECK(log.back().find("call site") != std::string::npos);
    CHECK(f.cap.anomalies().empty());
}

TEST_CASE("typed errors on the replay path")
{
    fixture f;
    const auto cs = f.span_site.model();
    model::new_span bad_field{0, cs.id, model::parent_mode::contextual, 0, {{"nope", model::value(std::int64_t{1})}}};
    auto r = f.recv.try_receive(model::event(bad_field));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == receive_errc::unknown_field);

    model::new_span bad_utf8{0, cs.id, model::parent_mode::contextual, 0, {{"a", model::value(std::string("\xff"))}}};
    r = f.recv.try_receive(model::event(bad_utf8));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == receive_errc::invalid_utf8);

    model::callsite weird = cs;
    weird.id = 99;
    weird.level = static_cast<model::level>(17);
    r = f.recv.try_receive(model::event(model::new_callsite{weird}));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == receive_errc::malformed);

    model::callsite changed = cs;
    changed.line = 99;
    r = f.recv.try_receive(model::event(model::new_callsite{changed}));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == receive_errc::callsite_conflict);
    // the same data again is fine (idempotent)
    CHECK(ok(f.recv, model::event(model::new_callsite{cs})) == TT_INTEREST_ALWAYS);
    CHECK(f.recv.snapshot().spans.empty());
}

TEST_CASE("replay keeps the sender's span ids when free")
{
    fixture f;
    const auto cs = f.span_site.model();
    CHECK(ok(f.recv, model::event(model::new_span{5, cs.id, model::parent_mode::contextual, 0, {}})) == 5);
    // in use: the receiver picks another
    const auto other = ok(f.recv, model::event(model::new_span{5, cs.id, model::parent_mode::contextual, 0, {}}));
    CHECK(other != 5);
    CHECK(other > 5);
    // an ABI span gets a fresh id after both
    const auto abi = f.span();
    CHECK(abi > other);
}

// ---------------------------------------------------------------------------
// reference counting and follows-from

TEST_CASE("clone and drop: the pipeline closes once, at zero")
{
    fixture f;
    const auto id = f.span();
    const auto h = f.recv.local()->handle_of(id);
    ok(f.recv, ev_span(TT_EVENT_SPAN_CLONED, id));
    ok(f.recv, ev_span(TT_EVENT_SPAN_CLONED, id));
    CHECK(f.recv.snapshot().spans.at(0).ref_count == 3);
    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, id));
    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, id));
    CHECK_FALSE(f.cap.span(h)->closed);
    CHECK(f.recv.snapshot().spans.at(0).ref_count == 1);
    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, id));
    CHECK(f.cap.span(h)->closed);
    CHECK(f.cap.span(h)->close_count == 1);
    auto r = f.recv.try_receive(ev_span(TT_EVENT_SPAN_DROPPED, id));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == receive_errc::unknown_span);
    CHECK(f.cap.span(h)->close_count == 1);
    CHECK(f.recv.snapshot().spans.empty());
    CHECK(f.recv.local()->size() == 0);
    CHECK(f.cap.anomalies().empty());
}

TEST_CASE("follows-from to a closed span is kept")
{
    fixture f;
    const auto cause = f.span();
    const auto effect = f.span();
    const auto hc = f.recv.local()->handle_of(cause);
    const auto he = f.recv.local()->handle_of(effect);
    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, cause));
    REQUIRE(f.cap.span(hc)->closed);
    ok(f.recv, ev_span(TT_EVENT_FOLLOWS_FROM, effect, cause));
    // a cause the pipeline never saw: kept in the table, not relayed
    ok(f.recv, ev_span(TT_EVENT_FOLLOWS_FROM, effect, 424242));
    CHECK(f.cap.span(he)->follows_from == std::vector<host::span_handle>{hc});
    const auto snap = f.recv.snapshot();
    REQUIRE(snap.spans.size() == 1);
    CHECK(snap.spans[0].follows_from == std::vector<std::uint64_t>{cause, 424242});
    CHECK(f.cap.anomalies().empty());
}

TEST_CASE("values recorded later replace in place")
{
    fixture f;
    const auto id = f.span({fv_i64(0, 1)});
    ok(f.recv, ev_record(id, {fv_str(1, "late")}));
    ok(f.recv, ev_record(id, {fv_i64(0, 2)}));
    const auto s = f.cap.span(f.recv.local()->handle_of(id));
    REQUIRE(s->fields.size() == 2);
    CHECK(s->fields[0].first == "a");
    CHECK(model::same_value(s->fields[0].second, model::value(std::int64_t{2})));
    CHECK(s->fields[1].first == "b");
    const auto snap = f.recv.snapshot();
    CHECK(snap.spans[0].values == s->fields);
    CHECK(f.cap.find_by_field("b", model::value(std::string("late"))) == std::vector<host::span_handle>{s->handle});
}

// ---------------------------------------------------------------------------
// persistence

namespace {

// One scripted stream, cut anywhere: sites, then spans whose ids come from
// the answers (so a restored receiver must continue the counter).
struct scripted {
    abi_site outer{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "outer", {"user", "status"}};
    abi_site inner{TT_CALLSITE_SPAN, TT_LEVEL_DEBUG, "inner", {"n"}};
    abi_site msg{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event x", {"message"}};
    std::vector<std::uint64_t> ids;  // answers to NEW_SPAN, in order

    static constexpr int steps = 16;
    // Applies step i to r.
    void step(host::receiver& r, int i)
    {
        auto id = [&](std::size_t k) { return ids.at(k); };
        switch (i) {
        case 0: ok(r, ev_new_callsite(outer.get())); ok(r, ev_new_callsite(inner.get())); ok(r, ev_new_callsite(msg.get())); break;
        case 1: ids.push_back(ok(r, ev_new_span(outer.id(), {fv_str(0, "alice")}))); break;
        case 2: ok(r, ev_span(TT_EVENT_SPAN_ENTERED, id(0))); break;
        case 3: ok(r, ev_new_event(msg.id(), {fv_debug(0, "started")})); break;
        case 4: ids.push_back(ok(r, ev_new_span(inner.id(), {fv_i64(0, 1)}))); break;
        case 5: ok(r, ev_span(TT_EVENT_SPAN_EXITED, id(0))); break;
        case 6: ok(r, ev_span(TT_EVENT_SPAN_CLONED, id(1))); break;
        case 7: ok(r, ev_span(TT_EVENT_SPAN_ENTERED, id(1))); break;
        case 8: ok(r, ev_new_event(msg.id(), {fv_debug(0, "inside")})); break;
        case 9: ok(r, ev_span(TT_EVENT_SPAN_EXITED, id(1))); break;
        case 10: ok(r, ev_record(id(0), {fv_u64(1, 200)})); break;
        case 11: ids.push_back(ok(r, ev_new_span(inner.id(), {fv_i64(0, 2)}, TT_PARENT_ROOT))); break;
        case 12: ok(r, ev_span(TT_EVENT_FOLLOWS_FROM, id(2), id(1))); break;
        case 13: ok(r, ev_span(TT_EVENT_SPAN_DROPPED, id(1))); ok(r, ev_span(TT_EVENT_SPAN_DROPPED, id(1))); break;
        case 14: ok(r, ev_span(TT_EVENT_SPAN_DROPPED, id(2))); break;
        case 15: ok(r, ev_span(TT_EVENT_SPAN_DROPPED, id(0))); break;
        default: FAIL("no step " << i);
        }
    }
};

}  // namespace

TEST_CASE("persist and restore with local spans continues exactly (a reload)")
{
    host::capture_layer whole_cap;
    {
        scripted s;
        host::receiver whole("demo", whole_cap);
        for (int i = 0; i < scripted::steps; ++i)
            s.step(whole, i);
    }
    const auto whole_json = whole_cap.to_expect_json();

    for (int cut = 1; cut < scripted::steps; ++cut) {
        CAPTURE(cut);
        host::capture_layer cap;
        scripted s;
        host::receiver_state state;
        std::shared_ptr<host::local_spans> local;
        {
            host::receiver first("demo", cap);
            for (int i = 0; i < cut; ++i)
                s.step(first, i);
            state = state_of(first);
            local = first.local();
        }
        host::receiver second("demo", cap, state, {}, local);
        CHECK(second.snapshot() == state.spans);
        CHECK(second.persist_metadata() == state.metadata);
        for (int i = cut; i < scripted::steps; ++i)
            s.step(second, i);
        std::string where;
        CHECK_MESSAGE(same_json_ordered(cap.to_expect_json(), whole_json, &where), where);
        for (const auto& sp : cap.spans())
            CHECK(sp.close_count == 1);
        CHECK(cap.anomalies().empty());
    }
}

TEST_CASE("a restored span whose call site is not in the metadata keeps its call-site id")
{
    host::receiver_state state;
    state.spans.next_id = 10;
    state.spans.spans.resize(2);
    state.spans.spans[0].id = 3;
    state.spans.spans[0].callsite_id = 0xABCDEF;  // not in state.metadata (empty)
    state.spans.spans[0].ref_count = 2;
    state.spans.spans[1].id = 4;
    state.spans.spans[1].callsite_id = 0x123456;
    state.spans.spans[1].parent_id = 3;
    host::capture_layer cap;
    host::receiver r("demo", cap, state);
    CHECK(r.snapshot() == state.spans);
    const auto rec = r.try_receive(model::event{model::values_recorded{3, {{"x", std::int64_t{1}}}}});
    REQUIRE_FALSE(rec);
    CHECK(rec.error().code == receive_errc::unknown_callsite);
    CHECK(rec.error().message.find(std::to_string(0xABCDEF)) != std::string::npos);
    // Dropped (both handles): its id goes from the side table too.
    CHECK(ok(r, ev_span(TT_EVENT_SPAN_DROPPED, 3)) == TT_STATUS_OK);
    CHECK(ok(r, ev_span(TT_EVENT_SPAN_DROPPED, 3)) == TT_STATUS_OK);
    const auto after = r.snapshot();
    REQUIRE(after.spans.size() == 1);
    CHECK(after.spans[0].id == 4);
    CHECK(after.spans[0].callsite_id == 0x123456);
}

TEST_CASE("persist and restore without local spans (a restart): spans continue lazily")
{
    for (int cut = 2; cut < scripted::steps; ++cut) {
        CAPTURE(cut);
        scripted s;
        host::receiver_state state;
        host::capture_layer first_cap;
        {
            host::receiver first("demo", first_cap);
            for (int i = 0; i < cut; ++i)
                s.step(first, i);
            state = state_of(first);
        }
        // the first host is gone: its local spans closed everything
        CHECK(first_cap.open_spans() == 0);

        host::capture_layer cap;
        {
            host::receiver second("demo", cap, state);
            CHECK(second.snapshot() == state.spans);
            for (int i = cut; i < scripted::steps; ++i)
                s.step(second, i);
            CHECK(second.snapshot().spans.empty());
        }
        // each span of the second host opened once and closed once
        for (const auto& sp : cap.spans())
            CHECK(sp.close_count == 1);
        // no span id was reused across the boundary
        std::vector<std::uint64_t> sorted = s.ids;
        std::sort(sorted.begin(), sorted.end());
        CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
        CHECK(cap.anomalies().empty());
        // "outer" keeps its creation values and the record, wherever it was cut
        const auto outer = cap.find_by_name("outer");
        if (cut <= 10) {
            // outer was persisted before its record: it appears when entered
            // again or never (it is only entered in step 2).
            for (auto h : outer)
                CHECK(cap.span(h)->fields.at(0).first == "user");
        }
        CHECK(outer.size() <= 1);
    }
}

TEST_CASE("restart: a persisted span gets a pipeline span on first use, with its start time")
{
    fixture f;
    const auto a = f.span({fv_i64(0, 7)});
    ok(f.recv, ev_record(a, {fv_str(1, "x")}));
    const auto b = f.span({}, TT_PARENT_EXPLICIT, a);
    auto state = state_of(f.recv);
    const auto start_b = state.spans.spans.at(1).start;

    host::capture_layer cap;
    host::receiver second("demo", cap, state);
    CHECK(cap.spans().empty());
    ok(second, ev_record(b, {fv_i64(0, 1)}));  // no pipeline span yet: kept, not relayed
    CHECK(cap.spans().empty());
    ok(second, ev_span(TT_EVENT_SPAN_ENTERED, b));
    auto spans = cap.spans();
    REQUIRE(spans.size() == 1);
    CHECK(spans[0].plugin_span_id == b);
    CHECK(spans[0].parent == 0);  // its parent had no pipeline span yet (as tracing-tunnel)
    CHECK(spans[0].start == start_b);
    REQUIRE(spans[0].fields.size() == 1);
    ok(second, ev_span(TT_EVENT_SPAN_EXITED, b));
    // an explicit reference materializes a
    ok(second, ev_new_event(f.event_site.id(), {}, TT_PARENT_EXPLICIT, a));
    spans = cap.spans();
    REQUIRE(spans.size() == 2);
    CHECK(spans[1].plugin_span_id == a);
    CHECK(spans[1].fields.size() == 2);
    CHECK(cap.events().at(0).span == spans[1].handle);
    // exiting a span entered before the restart: the pipeline never saw that enter
    ok(second, ev_span(TT_EVENT_SPAN_EXITED, a));
    CHECK(cap.span(spans[1].handle)->exited == 0);
    CHECK(cap.anomalies().empty());
}

TEST_CASE("restart: a persisted child gets its parent when the parent has its pipeline span first")
{
    // Parent and child ids are neighbours, so their local entries sit in
    // different shards: the child's materialization reads the parent's.
    fixture f;
    const auto a = f.span({fv_i64(0, 7)});
    const auto b = f.span({}, TT_PARENT_EXPLICIT, a);
    REQUIRE(b == a + 1);
    auto state = state_of(f.recv);

    host::capture_layer cap;
    host::receiver second("demo", cap, state);
    ok(second, ev_new_event(f.event_site.id(), {}, TT_PARENT_EXPLICIT, a));  // materializes a
    ok(second, ev_span(TT_EVENT_SPAN_ENTERED, b));
    const auto spans = cap.spans();
    REQUIRE(spans.size() == 2);
    CHECK(spans[0].plugin_span_id == a);
    CHECK(spans[1].plugin_span_id == b);
    CHECK(spans[1].parent == spans[0].handle);
    CHECK(second.local()->handle_of(a) == spans[0].handle);
    CHECK(second.local()->handle_of(b) == spans[1].handle);
    CHECK(second.local()->entered_count(b) == 1);
    ok(second, ev_span(TT_EVENT_SPAN_EXITED, b));
    CHECK(second.local()->entered_count(b) == 0);
    CHECK(cap.anomalies().empty());
}

// ---------------------------------------------------------------------------
// rollback

TEST_CASE("a receiver destroyed without persisting rolls back")
{
    host::capture_layer cap;
    fixture f0;  // only for its call sites
    std::uint64_t committed_id = 0;
    std::shared_ptr<host::local_spans> local;
    host::receiver_state state;
    {
        host::receiver r("demo", cap);
        ok(r, ev_new_callsite(f0.span_site.get()));
        committed_id = ok(r, ev_new_span(f0.span_site.id()));
        state = state_of(r);
        local = r.local();
        const auto entered = ok(r, ev_new_span(f0.span_site.id()));
        ok(r, ev_span(TT_EVENT_SPAN_ENTERED, entered));
        ok(r, ev_span(TT_EVENT_SPAN_ENTERED, entered));
        ok(r, ev_new_span(f0.span_site.id()));
        ok(r, ev_span(TT_EVENT_SPAN_ENTERED, committed_id));
        CHECK_FALSE(r.committed());
    }
    auto spans = cap.spans();
    REQUIRE(spans.size() == 3);
    // committed span: force-exited, still open (the host keeps its local spans)
    CHECK_FALSE(spans[0].closed);
    CHECK(spans[0].entered == 1);
    CHECK(spans[0].force_exited == 1);
    // the entered span: force-exited twice, closed once
    CHECK(spans[1].closed);
    CHECK(spans[1].close_count == 1);
    CHECK(spans[1].entered == 2);
    CHECK(spans[1].exited == 2);
    CHECK(spans[1].force_exited == 2);
    // the never-entered span: closed
    CHECK(spans[2].closed);
    CHECK(cap.current_span() == 0);

    // the next receiver continues from the commit with the same local spans
    {
        host::receiver r("demo", cap, state, {}, local);
        ok(r, ev_span(TT_EVENT_SPAN_DROPPED, committed_id));
        r.persist();
    }
    CHECK(cap.span(spans[0].handle)->closed);
    CHECK(cap.open_spans() == 0);
    CHECK(cap.anomalies().empty());
}

TEST_CASE("a rollback closes exactly the spans created since the last commit, whatever slots they reuse")
{
    host::capture_layer cap;
    fixture f0;
    std::shared_ptr<host::local_spans> local;  // held, as the host does: committed spans stay open
    {
        host::receiver r("demo", cap);
        local = r.local();
        ok(r, ev_new_callsite(f0.span_site.get()));
        const auto a = ok(r, ev_new_span(f0.span_site.id()));
        r.persist();
        const auto b = ok(r, ev_new_span(f0.span_site.id()));
        ok(r, ev_span(TT_EVENT_SPAN_DROPPED, b));  // uncommitted and gone: its slot is free
        ok(r, ev_new_span(f0.span_site.id()));  // c: takes that slot
        r.persist();
        ok(r, ev_new_span(f0.span_site.id()));  // d: a new slot
        ok(r, ev_span(TT_EVENT_SPAN_DROPPED, a));  // a committed span's slot, free again
        const auto e = ok(r, ev_new_span(f0.span_site.id()));  // takes a's slot
        ok(r, ev_span(TT_EVENT_SPAN_ENTERED, e));
        CHECK(r.stats().live_spans == 3);
    }
    auto spans = cap.spans();
    REQUIRE(spans.size() == 5);
    CHECK(spans[0].closed);  // a: dropped
    CHECK(spans[1].closed);  // b: dropped
    CHECK_FALSE(spans[2].closed);  // c: committed, left to the local spans
    CHECK(spans[3].closed);  // d: rolled back
    CHECK(spans[4].closed);  // e: rolled back, force-exited first
    CHECK(spans[4].force_exited == 1);
    for (const auto& s : spans)
        CHECK(s.close_count <= 1);
    CHECK(cap.anomalies().empty());
}

TEST_CASE("a committed receiver changes nothing when destroyed; dropping local spans closes them")
{
    host::capture_layer cap;
    fixture f0;
    std::shared_ptr<host::local_spans> local;
    {
        host::receiver r("demo", cap);
        ok(r, ev_new_callsite(f0.span_site.get()));
        const auto id = ok(r, ev_new_span(f0.span_site.id()));
        ok(r, ev_span(TT_EVENT_SPAN_ENTERED, id));
        r.persist();
        CHECK(r.committed());
        local = r.local();
    }
    CHECK(cap.open_spans() == 1);
    CHECK(cap.spans()[0].exited == 0);
    local.reset();
    CHECK(cap.open_spans() == 0);
    CHECK(cap.spans()[0].exited == 1);
    CHECK(cap.spans()[0].force_exited == 1);
    CHECK(cap.anomalies().empty());
}

// ---------------------------------------------------------------------------
// quotas and filters

TEST_CASE("quotas: each one refuses, counts, and the receiver goes on")
{
    host::capture_layer cap;
    host::quotas q;
    q.max_callsites = 3;
    q.max_live_spans = 2;
    q.max_values_per_event = 2;
    q.max_string_bytes = 200;
    host::receiver r("demo", cap, {}, q);
    abi_site a{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "a", {"x", "y", "z"}};
    abi_site b{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "b", {"message"}};
    abi_site c{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "c", {}};
    abi_site d{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "d", {}};
    abi_site big{TT_CALLSITE_SPAN, TT_LEVEL_INFO, std::string(300, 'n'), {}};
    auto code = [&](const tt_event& e) { return TT_STATUS_CODE(r.receive(e)); };
    auto errors = [&](receive_errc e) { return r.stats().errors[static_cast<std::size_t>(e)]; };

    SUBCASE("call sites")
    {
        ok(r, ev_new_callsite(a.get()));
        ok(r, ev_new_callsite(b.get()));
        ok(r, ev_new_callsite(c.get()));
        CHECK(code(ev_new_callsite(d.get())) == TT_STATUS_QUOTA_EXCEEDED);
        CHECK(errors(receive_errc::quota_exceeded) == 1);
        CHECK(ok(r, ev_new_callsite(a.get())) == TT_INTEREST_ALWAYS);  // known ones still register
        CHECK(ok(r, ev_new_span(c.id())) != 0);
    }
    SUBCASE("live spans")
    {
        ok(r, ev_new_callsite(c.get()));
        const auto s1 = ok(r, ev_new_span(c.id()));
        ok(r, ev_new_span(c.id()));
        CHECK(code(ev_new_span(c.id())) == TT_STATUS_QUOTA_EXCEEDED);
        CHECK(errors(receive_errc::quota_exceeded) == 1);
        ok(r, ev_span(TT_EVENT_SPAN_DROPPED, s1));
        CHECK(ok(r, ev_new_span(c.id())) != 0);
        CHECK(r.stats().live_spans == 2);
    }
    SUBCASE("values per event")
    {
        ok(r, ev_new_callsite(a.get()));
        CHECK(code(ev_new_span(a.id(), {fv_i64(0, 1), fv_i64(1, 1), fv_i64(2, 1)})) == TT_STATUS_TOO_MANY_VALUES);
        CHECK(errors(receive_errc::too_many_values) == 1);
        CHECK(ok(r, ev_new_span(a.id(), {fv_i64(0, 1), fv_i64(1, 1)})) != 0);
    }
    SUBCASE("string bytes")
    {
        CHECK(code(ev_new_callsite(big.get())) == TT_STATUS_QUOTA_EXCEEDED);
        ok(r, ev_new_callsite(a.get()));
        const std::string long_value(180, 'v');
        CHECK(code(ev_new_span(a.id(), {fv_str(0, long_value)})) == TT_STATUS_QUOTA_EXCEEDED);
        const auto s = ok(r, ev_new_span(a.id(), {fv_str(0, "short")}));
        CHECK(code(ev_record(s, {fv_str(1, long_value)})) == TT_STATUS_QUOTA_EXCEEDED);
        CHECK(errors(receive_errc::quota_exceeded) == 3);
        const auto bytes = r.stats().string_bytes;
        ok(r, ev_span(TT_EVENT_SPAN_DROPPED, s));
        CHECK(r.stats().string_bytes < bytes);  // freed with the span
        CHECK(ok(r, ev_new_span(a.id(), {fv_str(0, std::string(100, 'w'))})) != 0);
    }
    CHECK(cap.anomalies().empty());
}

TEST_CASE("interest: never and sometimes filter spans and events")
{
    host::capture_layer cap;
    cap.set_interest_policy([](const model::callsite& cs) {
        return cs.name == "never" ? host::interest::never
               : cs.name.rfind("some", 0) == 0 ? host::interest::sometimes
                                               : host::interest::always;
    });
    cap.set_enabled_policy([](const model::callsite& cs) { return cs.name == "some-on"; });
    host::receiver r("demo", cap);
    abi_site never{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "never", {}};
    abi_site off{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "some-off", {}};
    abi_site on{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "some-on", {}};
    abi_site ev{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "some-event", {}};
    CHECK(ok(r, ev_new_callsite(never.get())) == TT_INTEREST_NEVER);
    CHECK(ok(r, ev_new_callsite(off.get())) == TT_INTEREST_SOMETIMES);
    CHECK(ok(r, ev_new_callsite(on.get())) == TT_INTEREST_SOMETIMES);
    CHECK(ok(r, ev_new_callsite(ev.get())) == TT_INTEREST_SOMETIMES);
    CHECK(ok(r, ev_new_span(never.id())) == 0);
    CHECK(ok(r, ev_new_span(off.id())) == 0);
    CHECK(ok(r, ev_new_span(on.id())) != 0);
    CHECK(ok(r, ev_new_event(ev.id())) == TT_STATUS_FILTERED);
    CHECK(cap.spans().size() == 1);
    CHECK(cap.events().empty());
    CHECK(r.stats().filtered == 3);
    CHECK(r.snapshot().spans.size() == 1);
}

// ---------------------------------------------------------------------------
// lifetime and threads

TEST_CASE("1000 cycles of create, receive, persist, restore, destroy")
{
    host::capture_layer cap;
    abi_site site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "cycle", {"text"}};
    abi_site ev{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "cycle event", {"message"}};
    host::receiver_state state;
    std::shared_ptr<host::local_spans> local;
    std::uint64_t carried = 0;
    for (int i = 0; i < 1000; ++i) {
        const bool restart = i % 7 == 3;
        host::receiver r("cycle", cap, state, {}, restart ? nullptr : local);
        ok(r, ev_new_callsite(site.get()));
        ok(r, ev_new_callsite(ev.get()));
        const std::string text = "iteration " + std::to_string(i) + std::string(64, 'x');
        const auto id = ok(r, ev_new_span(site.id(), {fv_str(0, text)}));
        ok(r, ev_span(TT_EVENT_SPAN_ENTERED, id));
        ok(r, ev_new_event(ev.id(), {fv_debug(0, text)}));
        ok(r, ev_span(TT_EVENT_SPAN_EXITED, id));
        if (carried != 0) {
            ok(r, ev_record(carried, {fv_str(0, text)}));
            ok(r, ev_span(TT_EVENT_SPAN_DROPPED, carried));
        }
        carried = id;  // kept open across the boundary
        if (i % 5 == 4) {
            // destroyed without a commit: rolled back, continue from the last state
            const auto id2 = ok(r, ev_new_span(site.id()));
            (void)id2;
            carried = 0;
            for (const auto& s : state.spans.spans)
                carried = s.id;
            local = r.local();
            continue;
        }
        state = state_of(r);
        local = r.local();
    }
    local.reset();
    CHECK(cap.anomalies().empty());
    for (const auto& s : cap.spans())
        CHECK(s.close_count <= 1);
}

TEST_CASE("four threads emit into one receiver")
{
    host::capture_layer cap;
    host::receiver r("threads", cap);
    abi_site site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {"thread", "i", "done"}};
    abi_site ev{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event", {"message", "thread"}};
    ok(r, ev_new_callsite(site.get()));
    ok(r, ev_new_callsite(ev.get()));
    constexpr int per_thread = 2000;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            auto check = [&](std::uint64_t answer) {
                if (TT_STATUS_IS_ERROR(answer))
                    ++failures;
                return answer;
            };
            for (int i = 0; i < per_thread; ++i) {
                const std::vector<tt_field_value> v{fv_i64(0, t), fv_i64(1, i)};
                const std::uint64_t id = check(r.receive(ev_new_span(site.id(), v)));
                if (id == 0) {
                    ++failures;
                    continue;
                }
                check(r.receive(ev_span(TT_EVENT_SPAN_ENTERED, id)));
                const std::vector<tt_field_value> ev_v{fv_debug(0, "tick"), fv_i64(1, t)};
                check(r.receive(ev_new_event(ev.id(), ev_v)));
                check(r.receive(ev_span(TT_EVENT_SPAN_CLONED, id)));
                const std::vector<tt_field_value> rec{fv_bool(2, true)};
                check(r.receive(ev_record(id, rec)));
                check(r.receive(ev_span(TT_EVENT_SPAN_EXITED, id)));
                check(r.receive(ev_span(TT_EVENT_SPAN_DROPPED, id)));
                check(r.receive(ev_span(TT_EVENT_SPAN_DROPPED, id)));
            }
        });
    for (auto& t : threads)
        t.join();
    CHECK(failures.load() == 0);
    CHECK(r.stats().live_spans == 0);
    const auto spans = cap.spans();
    CHECK(spans.size() == 4 * per_thread);
    for (const auto& s : spans) {
        CHECK(s.close_count == 1);
        CHECK(s.entered == 1);
        CHECK(s.exited == 1);
        CHECK(s.parent == 0);
        CHECK(s.fields.size() == 3);
    }
    // every event lands in a span of its own thread (contextual parent per thread)
    const auto events = cap.events();
    CHECK(events.size() == 4 * per_thread);
    for (const auto& e : events) {
        REQUIRE(e.span != 0);
        const auto& s = spans.at(e.span - 1);
        CHECK(model::same_value(s.fields.at(0).second, e.fields.at(0).second));
    }
    CHECK(cap.anomalies().empty());
}

TEST_CASE("threads racing for the last live spans: the quota holds exactly, every id is given once")
{
    // The span table is in shards with no common lock: the quotas are taken
    // by atomic adds, which this checks under contention.
    host::capture_layer cap;
    host::quotas q;
    q.max_live_spans = 1000;
    host::receiver r("race", cap, {}, q);
    abi_site site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {"name"}};
    ok(r, ev_new_callsite(site.get()));
    const std::size_t callsite_bytes = r.stats().string_bytes;
    constexpr int threads = 4;
    constexpr int tries = 400;  // 1600 tries for 1000 places
    std::vector<std::vector<std::uint64_t>> got(threads);
    std::atomic<int> refused{0};
    std::atomic<int> other{0};
    {
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t)
            ts.emplace_back([&, t] {
                for (int i = 0; i < tries; ++i) {
                    const std::vector<tt_field_value> v{fv_str(0, "abcd")};
                    const std::uint64_t a = r.receive(ev_new_span(site.id(), v, TT_PARENT_ROOT));
                    if (!TT_STATUS_IS_ERROR(a))
                        got[static_cast<std::size_t>(t)].push_back(a);
                    else if (TT_STATUS_CODE(a) == TT_STATUS_QUOTA_EXCEEDED)
                        ++refused;
                    else
                        ++other;
                }
            });
        for (auto& t : ts)
            t.join();
    }
    std::vector<std::uint64_t> all;
    for (const auto& g : got)
        all.insert(all.end(), g.begin(), g.end());
    CHECK(other.load() == 0);
    CHECK(all.size() == 1000);
    CHECK(refused.load() == threads * tries - 1000);
    std::sort(all.begin(), all.end());
    CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
    CHECK(r.stats().live_spans == 1000);
    // name (4) + "abcd" (4) per span, and no refused span left bytes behind.
    CHECK(r.stats().string_bytes == callsite_bytes + 1000 * 8);
    // Dropped from other threads than made them: everything given back.
    {
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t)
            ts.emplace_back([&, t] {
                for (std::uint64_t id : got[static_cast<std::size_t>((t + 1) % threads)])
                    ok(r, ev_span(TT_EVENT_SPAN_DROPPED, id));
            });
        for (auto& t : ts)
            t.join();
    }
    CHECK(r.stats().live_spans == 0);
    CHECK(r.stats().string_bytes == callsite_bytes);
    CHECK(cap.spans().size() == 1000);
    CHECK(cap.anomalies().empty());
}

TEST_CASE("quota another thread holds unspent goes to the span that needs it, and is not counted as used")
{
    // A thread takes quota in chunks and keeps what it has not spent (so
    // that two threads do not both write the receiver's count at every
    // span). A span refused only because of what another thread holds
    // unspent must get it, and the counts must not show it as used.
    host::capture_layer cap;
    host::quotas q;
    q.max_live_spans = 512;  // chunks of 2 spans
    host::receiver r("credit", cap, {}, q);
    abi_site site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {"name"}};
    ok(r, ev_new_callsite(site.get()));
    const std::size_t callsite_bytes = r.stats().string_bytes;
    const std::vector<tt_field_value> v{fv_str(0, "abcd")};

    // Another thread makes and drops spans, then stays alive, holding what
    // it took and did not spend.
    std::promise<void> made, finish;
    std::thread other([&] {
        for (int i = 0; i < 3; ++i)
            ok(r, ev_span(TT_EVENT_SPAN_DROPPED, ok(r, ev_new_span(site.id(), v, TT_PARENT_ROOT))));
        made.set_value();
        finish.get_future().wait();
    });
    made.get_future().wait();
    CHECK(r.stats().live_spans == 0);
    CHECK(r.stats().string_bytes == callsite_bytes);

    // Every place of the quota, on this thread.
    int refused = 0;
    for (int i = 0; i < 512; ++i)
        refused += TT_STATUS_IS_ERROR(r.receive(ev_new_span(site.id(), v, TT_PARENT_ROOT))) ? 1 : 0;
    CHECK(refused == 0);
    CHECK(r.stats().live_spans == 512);
    CHECK(r.stats().string_bytes == callsite_bytes + 512 * 8);
    const std::uint64_t over = r.receive(ev_new_span(site.id(), v, TT_PARENT_ROOT));
    CHECK(TT_STATUS_IS_ERROR(over));
    CHECK(TT_STATUS_CODE(over) == TT_STATUS_QUOTA_EXCEEDED);
    CHECK(r.stats().live_spans == 512);
    finish.set_value();
    other.join();
}

TEST_CASE("persist while threads make and drop spans: every snapshot is whole, in id order, and restores")
{
    host::capture_layer cap;
    host::receiver r("snap", cap);
    abi_site site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {"i"}};
    ok(r, ev_new_callsite(site.get()));
    // Spans that stay live through the whole test: each snapshot must have them.
    std::vector<std::uint64_t> kept;
    for (int i = 0; i < 50; ++i)
        kept.push_back(ok(r, ev_new_span(site.id(), {fv_i64(0, i)}, TT_PARENT_ROOT)));
    std::atomic<bool> stop{false};
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 2; ++t)
        ts.emplace_back([&] {
            std::vector<std::uint64_t> mine;
            for (int i = 0; !stop.load(); ++i) {
                const std::uint64_t a = r.receive(ev_new_span(site.id(), {fv_i64(0, i)}, TT_PARENT_ROOT));
                if (TT_STATUS_IS_ERROR(a)) {
                    ++failures;
                    continue;
                }
                mine.push_back(a);
                if (mine.size() > 20) {
                    if (TT_STATUS_IS_ERROR(r.receive(ev_span(TT_EVENT_SPAN_DROPPED, mine.front()))))
                        ++failures;
                    mine.erase(mine.begin());
                }
            }
        });
    for (int round = 0; round < 200; ++round) {
        const host::persisted_spans snap = round % 2 == 0 ? r.persist() : r.snapshot();
        REQUIRE(!snap.spans.empty());
        bool ascending = true;
        for (std::size_t k = 1; k < snap.spans.size(); ++k)
            ascending = ascending && snap.spans[k - 1].id < snap.spans[k].id;
        CHECK(ascending);
        CHECK(snap.next_id > snap.spans.back().id);
        for (std::uint64_t id : kept)
            CHECK(std::binary_search(snap.spans.begin(), snap.spans.end(), id,
                                     [](const auto& a, const auto& b) {
                                         if constexpr (std::is_integral_v<std::decay_t<decltype(a)>>)
                                             return a < b.id;
                                         else
                                             return a.id < b;
                                     }));
        if (round % 50 == 0) {
            host::capture_layer other;
            host::receiver restored("snap", other, host::receiver_state{r.persist_metadata(), snap});
            CHECK(restored.stats().live_spans == snap.spans.size());
            CHECK(restored.snapshot().spans.size() == snap.spans.size());
        }
    }
    stop = true;
    for (auto& t : ts)
        t.join();
    CHECK(failures.load() == 0);
    CHECK(r.snapshot().spans.size() == r.stats().live_spans);
}

TEST_CASE("span ids: in sequence on each thread, and a restore goes on after the last id given")
{
    // Ids go to a thread in blocks (each block to one shard): one thread's
    // come in sequence, another thread's from a block of its own, and the
    // persisted next id is past the last id given, not past the blocks.
    host::capture_layer cap;
    host::receiver r("ids", cap);
    abi_site site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {}};
    ok(r, ev_new_callsite(site.get()));
    std::vector<std::uint64_t> mine;
    for (int i = 0; i < 5; ++i)
        mine.push_back(ok(r, ev_new_span(site.id(), {}, TT_PARENT_ROOT)));
    CHECK(mine == std::vector<std::uint64_t>{1, 2, 3, 4, 5});
    std::vector<std::uint64_t> theirs;
    std::thread([&] {
        for (int i = 0; i < 3; ++i)
            theirs.push_back(ok(r, ev_new_span(site.id(), {}, TT_PARENT_ROOT)));
    }).join();
    REQUIRE(theirs.size() == 3);
    CHECK(theirs[1] == theirs[0] + 1);
    CHECK(theirs[2] == theirs[1] + 1);
    CHECK(theirs[0] > 5);
    CHECK(ok(r, ev_new_span(site.id(), {}, TT_PARENT_ROOT)) == 6);
    const auto state = state_of(r);
    CHECK(state.spans.next_id == theirs[2] + 1);
    host::capture_layer other;
    host::receiver again("ids", other, state);
    CHECK(ok(again, ev_new_span(site.id(), {}, TT_PARENT_ROOT)) == theirs[2] + 1);
}

TEST_CASE("replayed ids in any order go out in id order, and later ids go past them")
{
    host::capture_layer cap;
    host::receiver r("replay", cap);
    abi_site site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {}};
    ok(r, model::event{model::new_callsite{site.model()}});
    // Descending, and spread over the shards: no shard's slots are in id order.
    for (int k = 13; k >= 0; --k) {
        const auto id = static_cast<std::uint64_t>(1 + 3 * k);  // 40, 37, ... 1
        CHECK(ok(r, model::event{model::new_span{id, site.id(), model::parent_mode::root, 0, {}}}) == id);
    }
    const std::uint64_t fresh = ok(r, ev_new_span(site.id(), {}, TT_PARENT_ROOT));
    CHECK(fresh == 41);
    const auto snap = r.snapshot();
    std::vector<std::uint64_t> ids;
    for (const auto& s : snap.spans)
        ids.push_back(s.id);
    std::vector<std::uint64_t> want;
    for (std::uint64_t id = 1; id <= 40; id += 3)
        want.push_back(id);
    want.push_back(41);
    CHECK(ids == want);
    CHECK(snap.next_id == 42);
}

TEST_CASE("entered threads of several spans stay apart as spans are entered, exited and dropped in any order")
{
    fixture f;
    const auto a = f.span({fv_i64(0, 1)});
    const auto b = f.span({fv_i64(0, 2)});
    const auto c = f.span({fv_i64(0, 3)});
    auto count = [&](std::uint64_t id) { return f.recv.local()->entered_count(id); };
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_ENTERED, a)) == TT_STATUS_OK);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_ENTERED, b)) == TT_STATUS_OK);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_EXITED, a)) == TT_STATUS_OK);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_ENTERED, c)) == TT_STATUS_OK);  // may take what a had
    std::thread([&] { CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_ENTERED, c)) == TT_STATUS_OK); }).join();
    CHECK(count(a) == 0);
    CHECK(count(b) == 1);
    CHECK(count(c) == 2);
    // a is entered nowhere: its exit is accepted and changes nothing else
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_EXITED, a)) == TT_STATUS_OK);
    CHECK(count(b) == 1);
    CHECK(count(c) == 2);
    // dropping b while entered force-exits it in the pipeline, and c keeps its threads
    const auto hb = f.recv.local()->handle_of(b);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_DROPPED, b)) == TT_STATUS_OK);
    CHECK(f.cap.span(hb)->force_exited == 1);
    CHECK(f.cap.span(hb)->closed);
    CHECK(count(c) == 2);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_ENTERED, a)) == TT_STATUS_OK);
    CHECK(count(a) == 1);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_EXITED, c)) == TT_STATUS_OK);
    CHECK(count(c) == 1);  // the other thread's enter is left
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_EXITED, a)) == TT_STATUS_OK);
    CHECK(count(a) == 0);
    CHECK(f.cap.anomalies().empty());
}

TEST_CASE("the fast paths (typical event, enter, exit, drop) answer and count like the general path")
{
    fixture f;
    const auto id = f.span({fv_i64(0, 1)});
    const auto h = f.recv.local()->handle_of(id);
    // receive() takes the fast paths; try_receive() the same ones.
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_ENTERED, id)) == TT_STATUS_OK);
    CHECK(ok(f.recv, ev_span(TT_EVENT_SPAN_ENTERED, id)) == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 1);
    const std::vector<tt_field_value> values{fv_str(0, "hello"), fv_u64(1, 3)};
    CHECK(f.recv.receive(ev_new_event(f.event_site.id(), values)) == TT_STATUS_OK);

    // Exited on another thread, where it is not entered: refused, worded as before.
    host::receive_result other = std::uint64_t{0};
    std::thread([&] { other = f.recv.try_receive(ev_span(TT_EVENT_SPAN_EXITED, id)); }).join();
    REQUIRE_FALSE(other);
    CHECK(other.error().code == receive_errc::wrong_thread);
    CHECK(other.error().message.find("on a thread where it is not entered") != std::string::npos);
    CHECK(f.recv.local()->entered_count(id) == 1);

    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_EXITED, id)) == TT_STATUS_OK);
    CHECK(ok(f.recv, ev_span(TT_EVENT_SPAN_EXITED, id)) == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 0);
    // Not entered anywhere: accepted, and the pipeline sees no exit.
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_EXITED, id)) == TT_STATUS_OK);
    CHECK(f.cap.span(h)->entered == 2);
    CHECK(f.cap.span(h)->exited == 2);

    ok(f.recv, ev_span(TT_EVENT_SPAN_CLONED, id));
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_DROPPED, id)) == TT_STATUS_OK);
    CHECK_FALSE(f.cap.span(h)->closed);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_DROPPED, id)) == TT_STATUS_OK);
    CHECK(f.cap.span(h)->close_count == 1);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_DROPPED, id)) ==
          (TT_STATUS_ERROR_BIT | host::status_of(receive_errc::unknown_span)));
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_ENTERED, id)) ==
          (TT_STATUS_ERROR_BIT | host::status_of(receive_errc::unknown_span)));
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_EXITED, id)) ==
          (TT_STATUS_ERROR_BIT | host::status_of(receive_errc::unknown_span)));

    const auto st = f.recv.stats();
    CHECK(st.events[TT_EVENT_SPAN_ENTERED - 1] == 3);
    CHECK(st.events[TT_EVENT_SPAN_EXITED - 1] == 5);
    CHECK(st.events[TT_EVENT_SPAN_DROPPED - 1] == 3);
    CHECK(st.events[TT_EVENT_NEW_EVENT - 1] == 1);
    CHECK(st.errors[static_cast<std::size_t>(receive_errc::wrong_thread)] == 0);  // try_receive does not count
    CHECK(st.errors[static_cast<std::size_t>(receive_errc::unknown_span)] == 3);
    CHECK(st.live_spans == 0);
    CHECK(f.cap.anomalies().empty());
}

TEST_CASE("a span entered on several threads: counted per thread, and a drop exits it on each")
{
    fixture f;
    const auto id = f.span({fv_i64(0, 1)});
    const auto h = f.recv.local()->handle_of(id);
    auto ev = [&](std::uint32_t kind) { return f.recv.receive(ev_span(kind, id)); };
    CHECK(ev(TT_EVENT_SPAN_ENTERED) == TT_STATUS_OK);
    CHECK(ev(TT_EVENT_SPAN_ENTERED) == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 1);
    // Thread b stays alive while c runs, so the three thread ids differ.
    std::promise<void> b_entered, b_may_exit;
    std::uint64_t b_enter = 0, b_exit = 0;
    std::thread b([&] {
        b_enter = ev(TT_EVENT_SPAN_ENTERED);
        b_entered.set_value();
        b_may_exit.get_future().wait();
        b_exit = ev(TT_EVENT_SPAN_EXITED);
    });
    b_entered.get_future().wait();
    CHECK(b_enter == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 2);
    std::uint64_t c_enter = 0;
    std::thread([&] { c_enter = ev(TT_EVENT_SPAN_ENTERED); }).join();  // and stays entered there
    CHECK(c_enter == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 3);
    // This thread's two enters are one entry: the first exit leaves it.
    CHECK(ev(TT_EVENT_SPAN_EXITED) == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 3);
    CHECK(ev(TT_EVENT_SPAN_EXITED) == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 2);
    b_may_exit.set_value();
    b.join();
    CHECK(b_exit == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 1);  // c's alone
    CHECK(ev(TT_EVENT_SPAN_ENTERED) == TT_STATUS_OK);
    CHECK(f.recv.local()->entered_count(id) == 2);
    // The last handle goes: one forced exit for c, one for this thread.
    CHECK(ev(TT_EVENT_SPAN_DROPPED) == TT_STATUS_OK);
    REQUIRE(f.cap.span(h).has_value());
    CHECK(f.cap.span(h)->closed);
    CHECK(f.cap.span(h)->entered == 5);
    CHECK(f.cap.span(h)->force_exited == 2);
    CHECK(f.cap.span(h)->exited == 5);
}

TEST_CASE("clones and drops balance the span's handle count (kept in 32 bits)")
{
    fixture f;
    const auto id = f.span({fv_i64(0, 1)});
    const auto h = f.recv.local()->handle_of(id);
    for (int i = 0; i < 1000; ++i)
        CHECK(ok(f.recv, ev_span(TT_EVENT_SPAN_CLONED, id)) == TT_STATUS_OK);
    const auto snap = f.recv.snapshot();
    REQUIRE(snap.spans.size() == 1);
    CHECK(snap.spans[0].ref_count == 1001);
    for (int i = 0; i < 1000; ++i)
        CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_DROPPED, id)) == TT_STATUS_OK);
    CHECK_FALSE(f.cap.span(h)->closed);
    CHECK(f.recv.receive(ev_span(TT_EVENT_SPAN_DROPPED, id)) == TT_STATUS_OK);
    CHECK(f.cap.span(h)->closed);
}

TEST_CASE("string values: the per-thread scratch never keeps text it did not check")
{
    fixture f;
    const std::string good = "hello world";
    const std::string bad = "hello w\xffrld";  // same length, not UTF-8
    const std::string longer = "hello, wide world";
    auto send = [&](const std::string& text) {
        const std::vector<tt_field_value> values{fv_str(1, text)};
        return f.recv.try_receive(ev_new_event(f.event_site.id(), values));
    };
    for (int round = 0; round < 2; ++round) {
        CHECK(send(good));
        auto r = send(bad);  // the same length as the text the scratch holds
        REQUIRE_FALSE(r);
        CHECK(r.error().code == receive_errc::invalid_utf8);
        CHECK_FALSE(send(bad));  // still refused: not taken as "the same text again"
        CHECK(send(longer));
        CHECK(send(good));
    }
    const auto evs = f.cap.events();
    REQUIRE(evs.size() == 6);
    const std::string expected[] = {good, longer, good};
    for (std::size_t i = 0; i < evs.size(); ++i) {
        REQUIRE(evs[i].fields.size() == 1);
        CHECK(std::get<std::string>(evs[i].fields[0].second) == expected[i % 3]);
    }
}

namespace {

// Every value kind, built as a plugin sends it (strings in `texts`).
struct all_kinds {
    abi_site site{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event kinds.cpp:1",
                  {"message", "b", "i", "u", "f", "s", "d", "wi", "wu", "e"}};
    std::string message = "all the kinds";
    std::string s = "quote \" tab \t and \xc3\xbc";
    std::string d = "Point { x: 1, y: -2 }";
    std::vector<std::string> chain_text{"outer failed", "inner cause"};
    std::vector<tt_str> chain;
    std::vector<tt_field_value> values;

    all_kinds()
    {
        for (const auto& c : chain_text)
            chain.push_back(str_of(c));
        tt_field_value wi{};
        wi.field = 7;
        wi.kind = TT_VALUE_I128;
        wi.as.u128 = tt_u128{5, ~std::uint64_t{0} - 40};  // -(41 << 64) + 5
        tt_field_value wu{};
        wu.field = 8;
        wu.kind = TT_VALUE_U128;
        wu.as.u128 = tt_u128{7, std::uint64_t{1} << 63};
        values = {fv_str(0, message), fv_bool(1, true), fv_i64(2, -42), fv_u64(3, ~std::uint64_t{0}),
                  fv_f64(4, 0.1), fv_str(5, s), fv_debug(6, d), wi, wu, fv_error(9, chain)};
    }
};

// A dispatcher with the compact and pretty console and a JSON layer, each
// into its own stream, with fixed times and thread names.
struct text_pipeline {
    std::ostringstream compact, pretty, json;
    host::dispatcher d;
    text_pipeline()
    {
        host::console_options c;
        c.color = host::color_mode::never;
        c.fixed_time = "2026-11-23T12:00:00.000000Z";
        c.fixed_thread = "ThreadId(01)";
        c.format = host::console_options::format_kind::compact;
        d.add_layer(std::make_shared<host::console_layer>(host::line_writer(compact), c));
        c.format = host::console_options::format_kind::pretty;
        d.add_layer(std::make_shared<host::console_layer>(host::line_writer(pretty), c));
        host::json_options j;
        j.fixed_time = "2026-11-23T12:00:00.000000Z";
        d.add_layer(std::make_shared<host::json_layer>(host::line_writer(json), j));
    }
};

}  // namespace

// The lines the layers wrote for all_kinds before events were handed through
// as views (the model::value scratch): byte for byte.
const std::string kinds_compact = std::string(R"x(2026-11-23T12:00:00.000000Z  INFO ThreadId(01) test::target: all the kinds b=true i=-42 u=18446744073709551615 f=0.1 s="quote \" tab \t and ü" d=Point { x: 1, y: -2 } wi=-756316507022091616251 wu=170141183460469231731687303715884105735 e=outer failed e.sources=[inner cause])x") + "\n";
const std::string kinds_pretty = std::string(R"x(  2026-11-23T12:00:00.000000Z  INFO test::target: all the kinds, b: true, i: -42, u: 18446744073709551615, f: 0.1, s: "quote \" tab \t and ü", d: Point { x: 1, y: -2 }, wi: -756316507022091616251, wu: 170141183460469231731687303715884105735, e: outer failed, e.sources: [inner cause])x") + "\n" + R"x(    at test.cpp:7 on ThreadId(01))x" + "\n\n";
const std::string kinds_json = std::string(R"x({"timestamp":"2026-11-23T12:00:00.000000Z","level":"INFO","fields":{"message":"all the kinds","b":true,"i":-42,"u":18446744073709551615,"f":1E-1,"s":"quote \" tab \t and ü","d":"Point { x: 1, y: -2 }","wi":"-756316507022091616251","wu":"170141183460469231731687303715884105735","e":"outer failed: inner cause"},"target":"test::target","plugin":"demo","threadId":"ThreadId(01)"})x") + "\n";

TEST_CASE("every value kind through the fast path reaches the layers as before, borrowed, not copied")
{
    all_kinds k;
    text_pipeline fast;
    host::receiver r("demo", fast.d);
    ok(r, ev_new_callsite(k.site.get()));
    // A layer that sees the plugin's own text: the receiver handed it through.
    struct borrow_check final : host::layer {
        const all_kinds* k = nullptr;
        int events = 0, borrowed = 0;
        void on_event(const host::event_view& ev) noexcept override
        {
            ++events;
            for (const auto& f : ev.values)
                if (f.name == "s" && f.value.text().data() == k->s.data())
                    ++borrowed;
        }
    };
    auto check = std::make_shared<borrow_check>();
    check->k = &k;
    fast.d.add_layer(check);
    CHECK(r.receive(ev_new_event(k.site.id(), k.values)) == TT_STATUS_OK);
    CHECK(check->events == 1);
    CHECK(check->borrowed == 1);
    CHECK(fast.compact.str() == kinds_compact);
    CHECK(fast.pretty.str() == kinds_pretty);
    CHECK(fast.json.str() == kinds_json);

    // The same values owned (model::value, the general path of a replay): the same lines.
    text_pipeline owned;
    host::receiver r2("demo", owned.d);
    ok(r2, model::event(model::new_callsite{k.site.model()}));
    model::new_event ev;
    ev.callsite_id = k.site.id();
    const auto names = k.site.model().fields;
    for (const auto& v : k.values)
        ev.values.emplace_back(names[v.field], *model::value_from_abi(v));
    ok(r2, model::event(ev));
    CHECK(owned.compact.str() == kinds_compact);
    CHECK(owned.pretty.str() == kinds_pretty);
    CHECK(owned.json.str() == kinds_json);

    // value_ref over an owned value and over the ABI value agree, kind and copy.
    for (std::size_t i = 0; i < k.values.size(); ++i) {
        const model::value v = *model::value_from_abi(k.values[i]);
        const host::value_ref a(v);
        const host::value_ref b = host::value_ref::from_abi(k.values[i]);
        CHECK(static_cast<std::uint32_t>(a.type()) == k.values[i].kind);
        CHECK(a.type() == b.type());
        CHECK(a.text() == b.text());
        CHECK(model::same_value(a.to_value(), v));
        CHECK(model::same_value(b.to_value(), v));
    }
    CHECK_FALSE(host::value_ref());
    CHECK(model::same_value(host::value_ref().to_value(), model::value(std::string())));
}

TEST_CASE("every value kind of a span through the fast path reaches the layers and the state as on the general path")
{
    // all_kinds as a span's values, and a string of 255 bytes (over the
    // blob's inline bytes, and the first length that packs in 9 bytes).
    all_kinds k;
    abi_site span_site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "kinds", {"message", "b", "i", "u", "f", "s", "d", "wi", "wu", "e", "long"}};
    std::string long_text(255, 'l');
    long_text[254] = 'z';
    std::vector<tt_field_value> values = k.values;
    values.push_back(fv_str(10, long_text));
    const std::vector<tt_field_value> inside{fv_str(0, "inside")};

    // The fast path: a plugin's tt_event, packed from the ABI values.
    text_pipeline fast;
    host::receiver r("demo", fast.d);
    ok(r, ev_new_callsite(k.site.get()));
    CHECK(ok(r, ev_new_callsite(span_site.get())) == TT_INTEREST_ALWAYS);
    const auto id = ok(r, ev_new_span(span_site.id(), values, TT_PARENT_ROOT));
    ok(r, ev_span(TT_EVENT_SPAN_ENTERED, id));
    ok(r, ev_new_event(k.site.id(), inside));
    ok(r, ev_span(TT_EVENT_SPAN_EXITED, id));

    // The general path: the same values owned (model::value).
    text_pipeline owned;
    host::receiver r2("demo", owned.d);
    ok(r2, ev_new_callsite(k.site.get()));
    ok(r2, ev_new_callsite(span_site.get()));
    model::new_span ns;
    ns.callsite_id = span_site.id();
    ns.parent = model::parent_mode::root;
    const auto names = span_site.model().fields;
    for (const auto& v : values)
        ns.values.emplace_back(names[v.field], *model::value_from_abi(v));
    const auto id2 = ok(r2, model::event(ns));
    ok(r2, ev_span(TT_EVENT_SPAN_ENTERED, id2));
    ok(r2, ev_new_event(k.site.id(), inside));
    ok(r2, ev_span(TT_EVENT_SPAN_EXITED, id2));

    CHECK(fast.compact.str() == owned.compact.str());
    CHECK(fast.pretty.str() == owned.pretty.str());
    CHECK(fast.json.str() == owned.json.str());
    CHECK(fast.json.str().find(R"("wi":"-756316507022091616251")") != std::string::npos);
    CHECK(fast.json.str().find(R"("e":"outer failed: inner cause")") != std::string::npos);
    CHECK(fast.json.str().find(long_text) != std::string::npos);
    CHECK(fast.compact.str().find("s=\"quote") != std::string::npos);

    // The persisted values: byte for byte the general path's, and the string quota alike.
    const auto st = state_of(r);
    const auto st2 = state_of(r2);
    REQUIRE(st.spans.spans.size() == 1);
    REQUIRE(st2.spans.spans.size() == 1);
    CHECK(st.spans.spans[0].values.size() == values.size());
    CHECK(st.spans.spans[0].values == st2.spans.spans[0].values);
    CHECK(r.stats().string_bytes == r2.stats().string_bytes);
    CHECK(r.stats().string_bytes > long_text.size());
}

TEST_CASE("a span's bad text on the fast path gets the general path's error, and nothing is kept")
{
    all_kinds k;
    abi_site span_site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "kinds", {"message", "b", "i", "u", "f", "s", "d", "wi", "wu", "e"}};
    host::capture_layer cap;
    // The string quota counts the call site's strings too: 64 bytes beyond them.
    std::size_t site_bytes = 0;
    {
        host::capture_layer probe_cap;
        host::receiver probe("demo", probe_cap);
        ok(probe, ev_new_callsite(span_site.get()));
        site_bytes = probe.stats().string_bytes;
    }
    host::quotas q;
    q.max_string_length = 20;
    q.max_error_chain = 2;
    q.max_string_bytes = site_bytes + 64;
    host::receiver r("demo", cap, {}, q);
    CHECK(ok(r, ev_new_callsite(span_site.get())) == TT_INTEREST_ALWAYS);
    REQUIRE(r.stats().string_bytes == site_bytes);
    const std::string bad = "not \xff UTF-8";
    const std::string long_text(21, 'x');
    const std::string fits(20, 'y');
    const std::vector<tt_str> bad_chain{str_of("fine"), str_of(bad)};
    struct refused {
        std::vector<tt_field_value> values;
        receive_errc code;
        std::string words;
    };
    const refused cases[] = {
        {{fv_str(5, bad)}, receive_errc::invalid_utf8, "value of field 's' is not UTF-8"},
        {{fv_debug(6, bad)}, receive_errc::invalid_utf8, "value of field 'd' is not UTF-8"},
        {{fv_error(9, bad_chain)}, receive_errc::invalid_utf8, "value of field 'e' is not UTF-8"},
        {{fv_str(5, long_text)}, receive_errc::quota_exceeded, "21-byte string in value #5 (at most 20)"},
        // 3 x (1 + 20) bytes fit the 64 bytes; with a fourth value (and "message") they do not.
        {{fv_str(5, fits), fv_str(6, fits), fv_str(0, fits), fv_str(1, fits)},
         receive_errc::quota_exceeded,
         "string quota of " + std::to_string(site_bytes + 64) + " bytes reached"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.words);
        auto res = r.try_receive(ev_new_span(span_site.id(), c.values, TT_PARENT_ROOT));
        REQUIRE_FALSE(res);
        CHECK(res.error().code == c.code);
        CHECK(res.error().message.find(c.words) != std::string::npos);
        CHECK(TT_STATUS_CODE(r.receive(ev_new_span(span_site.id(), c.values, TT_PARENT_ROOT))) ==
              host::status_of(c.code));
    }
    CHECK(r.stats().live_spans == 0);
    CHECK(r.stats().string_bytes == site_bytes);
    CHECK(cap.spans().empty());
    // Three fields of 20 bytes fit: 63 bytes with their one-letter names.
    const auto id = ok(r, ev_new_span(span_site.id(), {fv_str(5, fits), fv_str(6, fits), fv_str(1, fits)}, TT_PARENT_ROOT));
    CHECK(id != 0);
    CHECK(r.stats().string_bytes == site_bytes + 63);
}

TEST_CASE("the fast path still refuses bad text with its error, and the layers see nothing")
{
    all_kinds k;
    text_pipeline p;
    host::quotas q;
    q.max_string_length = 20;
    q.max_error_chain = 2;
    host::receiver r("demo", p.d, {}, q);
    ok(r, ev_new_callsite(k.site.get()));
    const std::string bad = "not \xff UTF-8";
    const std::string long_text(21, 'x');
    const std::vector<tt_str> bad_chain{str_of("fine"), str_of(bad)};
    const std::vector<tt_str> long_chain{str_of("a"), str_of("b"), str_of("c")};
    tt_field_value null_text = fv_str(5, "");
    null_text.as.str = tt_str{nullptr, 3};
    tt_field_value unknown_kind = fv_i64(2, 1);
    unknown_kind.kind = 77;
    struct refused {
        tt_field_value value;
        receive_errc code;
        std::string words;
    };
    const refused cases[] = {
        {fv_str(5, bad), receive_errc::invalid_utf8, "value of field 's' is not UTF-8"},
        {fv_debug(6, bad), receive_errc::invalid_utf8, "value of field 'd' is not UTF-8"},
        {fv_error(9, bad_chain), receive_errc::invalid_utf8, "value of field 'e' is not UTF-8"},
        {fv_str(5, long_text), receive_errc::quota_exceeded, "21-byte string in value #5 (at most 20)"},
        {fv_debug(6, long_text), receive_errc::quota_exceeded, "21-byte string in value #6 (at most 20)"},
        {fv_error(9, long_chain), receive_errc::quota_exceeded, "error chain of 3 entries (at most 2)"},
        {null_text, receive_errc::malformed, "value #1 of kind 7 cannot be read"},
        {unknown_kind, receive_errc::malformed, "value #1 of kind 77 cannot be read"},
        {fv_str(10, "x"), receive_errc::unknown_field, "value for field #10 of call site"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.words);
        const std::vector<tt_field_value> values{fv_str(0, "m"), c.value};
        auto res = r.try_receive(ev_new_event(k.site.id(), values));
        REQUIRE_FALSE(res);
        CHECK(res.error().code == c.code);
        CHECK(res.error().message.find(c.words) != std::string::npos);
        CHECK(TT_STATUS_CODE(r.receive(ev_new_event(k.site.id(), values))) == host::status_of(c.code));
    }
    CHECK(p.compact.str().empty());
    CHECK(p.json.str().empty());
    // And good values still pass after all that.
    const std::vector<tt_field_value> good{fv_str(0, "m"), fv_str(5, "\xc3\xbc ok")};
    CHECK(r.receive(ev_new_event(k.site.id(), good)) == TT_STATUS_OK);
    CHECK(p.json.str().find(R"("s":"ü ok")") != std::string::npos);
}

TEST_CASE("texts of 8 to 16 bytes (the fast path's own check) keep every check and every error")
{
    // Every text of the call site within the quota (its registration is checked too).
    abi_site site{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "short", {"message", "b", "i", "u", "f", "s", "d"}};
    text_pipeline p;
    host::quotas q;
    q.max_string_length = 12;  // inside the 8-to-16 range: the quota decides there too
    host::receiver r("demo", p.d, {}, q);
    ok(r, ev_new_callsite(site.get()));
    tt_field_value null_text = fv_str(5, "");
    null_text.as.str = tt_str{nullptr, 10};
    struct refused {
        tt_field_value value;
        receive_errc code;
        std::string words;
    };
    const std::string bad_first = "\xff" "2345678";            // 8 bytes, bad in the first word
    const std::string bad_last = "12345678901\xff";            // 12 bytes, bad in the last word only
    const std::string cut = "12345678901\xc3";                 // 12 bytes, a sequence cut short
    const refused cases[] = {
        {fv_str(5, "1234567890123"), receive_errc::quota_exceeded, "13-byte string in value #5 (at most 12)"},
        {fv_debug(6, "1234567890123456"), receive_errc::quota_exceeded, "16-byte string in value #6 (at most 12)"},
        {null_text, receive_errc::malformed, "value #1 of kind 7 cannot be read"},
        {fv_str(5, bad_first), receive_errc::invalid_utf8, "value of field 's' is not UTF-8"},
        {fv_debug(6, bad_last), receive_errc::invalid_utf8, "value of field 'd' is not UTF-8"},
        {fv_str(5, cut), receive_errc::invalid_utf8, "value of field 's' is not UTF-8"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.words);
        const std::vector<tt_field_value> values{fv_str(0, "m"), c.value};
        CHECK(TT_STATUS_CODE(r.receive(ev_new_event(site.id(), values))) == host::status_of(c.code));
        auto res = r.try_receive(ev_new_event(site.id(), values));
        REQUIRE_FALSE(res);
        CHECK(res.error().code == c.code);
        CHECK(res.error().message.find(c.words) != std::string::npos);
    }
    CHECK(p.json.str().empty());
    // At the edges of the range, and non-ASCII but valid, they pass as they are.
    const std::vector<tt_field_value> good{fv_str(0, "12345678"), fv_str(5, "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"),
                                           fv_debug(6, "123456789012")};
    CHECK(r.receive(ev_new_event(site.id(), good)) == TT_STATUS_OK);
    CHECK(p.json.str().find(R"("message":"12345678")") != std::string::npos);
    CHECK(p.json.str().find(R"("s":"üüüüüü")") != std::string::npos);
    CHECK(p.json.str().find(R"("d":"123456789012")") != std::string::npos);
}

TEST_CASE("an event with call-site id 0 is refused as an unknown call site, on every path")
{
    all_kinds k;
    host::capture_layer cap;
    host::receiver r("demo", cap);
    ok(r, ev_new_callsite(k.site.get()));
    const std::vector<tt_field_value> values{fv_str(0, "m")};
    CHECK(TT_STATUS_CODE(r.receive(ev_new_event(0, values))) == host::status_of(receive_errc::unknown_callsite));
    auto res = r.try_receive(ev_new_event(0, values));
    REQUIRE_FALSE(res);
    CHECK(res.error().code == receive_errc::unknown_callsite);
    CHECK(cap.events().empty());
    CHECK(r.receive(ev_new_event(k.site.id(), values)) == TT_STATUS_OK);
    CHECK(cap.events().size() == 1);
}

// ---------------------------------------------------------------------------
// the span entry's packed fields (receiver_tables.hpp: span_rec)

TEST_CASE("a span's call-site number finds its call site after a restart and a reload, sites in another order")
{
    host::capture_layer cap;
    abi_site a{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "site-a", {"a1", "a2"}};
    abi_site b{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "site-b", {"b1", "b2", "b3"}};
    abi_site c{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "site-c", {"c1"}};
    host::receiver_state state;
    std::shared_ptr<host::local_spans> local;
    std::uint64_t sa = 0, sb = 0;
    {
        host::receiver first("demo", cap);
        ok(first, ev_new_callsite(a.get()));
        ok(first, ev_new_callsite(b.get()));
        sa = ok(first, ev_new_span(a.id(), {fv_i64(1, 5)}));
        sb = ok(first, ev_new_span(b.id(), {fv_str(2, "three")}));
        state = state_of(first);
        local = first.local();
    }
    // Another call site first: every restored number differs from the first receiver's.
    state.metadata.insert(state.metadata.begin(), c.model());
    std::reverse(state.metadata.begin(), state.metadata.end());
    auto check = [&](host::receiver& r) {
        CHECK(r.snapshot() == state.spans);
        const auto wrong = r.try_receive(model::event{model::values_recorded{sa, {{"b1", std::int64_t{1}}}}});
        REQUIRE_FALSE(wrong);
        CHECK(wrong.error().code == receive_errc::unknown_field);
        CHECK(wrong.error().message.find("'site-a'") != std::string::npos);
        ok(r, model::event{model::values_recorded{sb, {{"b1", std::int64_t{1}}}}});
        ok(r, model::event{model::values_recorded{sa, {{"a2", std::int64_t{6}}}}});
        const auto snap = r.snapshot();
        REQUIRE(snap.spans.size() == 2);
        CHECK(snap.spans[0].callsite_id == (sa < sb ? a.id() : b.id()));
        CHECK(snap.spans[1].callsite_id == (sa < sb ? b.id() : a.id()));
        // A span made after the restore gets its own site's number.
        const auto sc = ok(r, ev_new_span(c.id(), {fv_i64(0, 9)}));
        ok(r, model::event{model::values_recorded{sc, {{"c1", std::int64_t{10}}}}});
        CHECK_FALSE(r.try_receive(model::event{model::values_recorded{sc, {{"a1", std::int64_t{1}}}}}));
    };
    SUBCASE("restart (no local spans)")
    {
        host::capture_layer cap2;
        host::receiver second("demo", cap2, state);
        check(second);
        ok(second, ev_span(TT_EVENT_SPAN_ENTERED, sb));
        REQUIRE(cap2.spans().size() == 2);  // site-c's, then sb materialized
        CHECK(cap2.spans()[1].name == "site-b");
    }
    SUBCASE("reload (local spans kept)")
    {
        host::receiver second("demo", cap, state, {}, local);
        check(second);
    }
}

TEST_CASE("span nesting stops at the entry's 16-bit depth, whatever the quota says")
{
    host::capture_layer cap;
    host::quotas q;
    q.max_span_depth = 100'000;
    q.max_live_spans = 100'000;
    abi_site a{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "deep", {}};
    constexpr std::uint64_t limit = 0xFFFE;
    SUBCASE("made one by one")
    {
        host::receiver r("demo", cap, {}, q);
        ok(r, ev_new_callsite(a.get()));
        std::uint64_t parent = 0;
        for (std::uint64_t d = 1; d <= limit; ++d) {
            parent = ok(r, ev_new_span(a.id(), {}, parent != 0 ? TT_PARENT_EXPLICIT : TT_PARENT_ROOT, parent));
        }
        const auto res = r.try_receive(ev_new_span(a.id(), {}, TT_PARENT_EXPLICIT, parent));
        REQUIRE_FALSE(res);
        CHECK(res.error().code == receive_errc::quota_exceeded);
        CHECK(res.error().message.find("limit of 65534 reached") != std::string::npos);
        CHECK(ok(r, ev_new_span(a.id(), {}, TT_PARENT_ROOT)) != 0);
    }
    SUBCASE("restored from a chain longer than that")
    {
        host::receiver_state state;
        state.metadata.push_back(a.model());
        constexpr std::uint64_t chain = 70'000;
        for (std::uint64_t id = 1; id <= chain; ++id) {
            auto& ps = state.spans.spans.emplace_back();
            ps.id = id;
            ps.callsite_id = a.id();
            ps.parent_id = id - 1;
        }
        state.spans.next_id = chain + 1;
        host::receiver r("demo", cap, state, q);
        CHECK(r.snapshot() == state.spans);
        CHECK(TT_STATUS_CODE(r.receive(ev_new_span(a.id(), {}, TT_PARENT_EXPLICIT, chain))) ==
              TT_STATUS_QUOTA_EXCEEDED);
        CHECK(TT_STATUS_CODE(r.receive(ev_new_span(a.id(), {}, TT_PARENT_EXPLICIT, limit))) ==
              TT_STATUS_QUOTA_EXCEEDED);
        CHECK(ok(r, ev_new_span(a.id(), {}, TT_PARENT_EXPLICIT, limit - 1)) != 0);
    }
}

TEST_CASE("a span's string bytes too many for its entry are counted aside and given back")
{
    fixture f;
    const auto base = f.recv.stats().string_bytes;
    const std::string big(40'000, 'v');
    const std::string bigger(50'000, 'w');
    const auto s = f.span({fv_str(0, big)});
    const auto small = f.span({fv_str(0, "x")});
    CHECK(f.recv.stats().string_bytes == base + 1 + big.size() + 1 + 1);  // names "a", values
    ok(f.recv, ev_record(s, {fv_str(0, "y")}));  // below what the entry holds again
    CHECK(f.recv.stats().string_bytes == base + 2 + 2);
    ok(f.recv, ev_record(s, {fv_str(1, bigger)}));  // and above
    CHECK(f.recv.stats().string_bytes == base + 2 + 1 + bigger.size() + 2);
    const auto state = state_of(f.recv);

    host::capture_layer cap;
    host::receiver second("demo", cap, state);
    CHECK(second.stats().string_bytes == f.recv.stats().string_bytes);
    ok(second, ev_span(TT_EVENT_SPAN_DROPPED, s));
    CHECK(second.stats().string_bytes == base + 2);
    ok(second, ev_span(TT_EVENT_SPAN_DROPPED, small));
    CHECK(second.stats().string_bytes == base);

    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, small));
    ok(f.recv, ev_span(TT_EVENT_SPAN_DROPPED, s));
    CHECK(f.recv.stats().string_bytes == base);
    // The quota sees the same count: a span of (almost) all of it fits again.
    host::quotas q;
    q.max_string_bytes = base + 60'000;
    host::receiver tight("demo", cap, {}, q);
    ok(tight, ev_new_callsite(f.span_site.get()));
    for (int i = 0; i < 3; ++i) {
        const auto id = ok(tight, ev_new_span(f.span_site.id(), {fv_str(0, bigger)}));
        CHECK(TT_STATUS_CODE(tight.receive(ev_new_span(f.span_site.id(), {fv_str(0, big)}))) ==
              TT_STATUS_QUOTA_EXCEEDED);
        ok(tight, ev_span(TT_EVENT_SPAN_DROPPED, id));
    }
}

namespace {

// Passes everything on to a dispatcher and notes each event's plugin name
// and key, and how often it is asked whether it resolves contextual parents.
class key_spy final : public host::subscriber {
public:
    host::dispatcher d;
    std::vector<std::pair<std::string, std::uint64_t>> seen;
    mutable int asked_resolves = 0;

    host::interest interest_in(const model::callsite& s) noexcept override { return d.interest_in(s); }
    bool enabled(const model::callsite& s) noexcept override { return d.enabled(s); }
    host::span_handle new_span(const host::span_attrs& a) noexcept override { return d.new_span(a); }
    void record(host::span_handle s, host::field_refs v) noexcept override { d.record(s, v); }
    void follows_from(host::span_handle s, host::span_handle c) noexcept override { d.follows_from(s, c); }
    void enter(host::span_handle s) noexcept override { d.enter(s); }
    void exit(host::span_handle s) noexcept override { d.exit(s); }
    void force_exit(host::span_handle s, std::thread::id t) noexcept override { d.force_exit(s, t); }
    void close(host::span_handle s) noexcept override { d.close(s); }
    void suspend(host::span_handle s) noexcept override { d.suspend(s); }
    void event(const host::event_record& ev) noexcept override
    {
        seen.emplace_back(std::string(ev.plugin), ev.plugin_key);
        d.event(ev);
    }
    host::span_handle current_span() const noexcept override { return d.current_span(); }
    std::uint64_t plugin_span_id(host::span_handle s) const noexcept override { return d.plugin_span_id(s); }
    bool resolves_current_span() const noexcept override
    {
        ++asked_resolves;
        return d.resolves_current_span();
    }
};

// Counts events and notes the plugin of each new span.
class plugin_notes final : public host::layer {
public:
    std::size_t events = 0;
    std::vector<std::string> span_plugins;
    void on_new_span(host::span_context scope) noexcept override { span_plugins.emplace_back(scope.back().plugin); }
    void on_event(const host::event_view&) noexcept override { ++events; }
};

}  // namespace

TEST_CASE("plugin keys: one per receiver, for its whole life, never shared, even by equal names")
{
    key_spy spy;
    auto notes = std::make_shared<plugin_notes>();
    spy.d.add_layer(notes);
    abi_site site{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event keys.cpp:1", {"message"}};
    abi_site span_site{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {}};
    const std::vector<tt_field_value> values{fv_str(0, "hi")};

    std::optional<host::receiver> first(std::in_place, "same", spy);
    host::receiver second("same", spy);
    CHECK(spy.asked_resolves == 2);  // once per receiver, not per event
    for (host::receiver* r : {&*first, &second}) {
        ok(*r, ev_new_callsite(site.get()));
        ok(*r, ev_new_callsite(span_site.get()));
    }
    CHECK(first->receive(ev_new_event(site.id(), values)) == TT_STATUS_OK);                    // fast path
    CHECK(second.receive(ev_new_event(site.id(), values, TT_PARENT_ROOT)) == TT_STATUS_OK);   // fast path
    const auto id = ok(*first, ev_new_span(span_site.id()));
    CHECK(first->receive(ev_new_event(site.id(), values, TT_PARENT_EXPLICIT, id)) == TT_STATUS_OK);  // general path
    CHECK(first->receive(ev_new_event(site.id(), values)) == TT_STATUS_OK);
    CHECK(spy.asked_resolves == 2);
    REQUIRE(spy.seen.size() == 4);
    const std::uint64_t k1 = spy.seen[0].second;
    const std::uint64_t k2 = spy.seen[1].second;
    CHECK(k1 != 0);
    CHECK(k2 != 0);
    CHECK(k1 != k2);
    CHECK(spy.seen[2].second == k1);
    CHECK(spy.seen[3].second == k1);
    for (const auto& [name, key] : spy.seen)
        CHECK(name == "same");

    // The same storage, another name: a new key, and its spans carry its name.
    ok(*first, ev_span(TT_EVENT_SPAN_DROPPED, id));
    first.emplace("renamed", spy);
    ok(*first, ev_new_callsite(site.get()));
    ok(*first, ev_new_callsite(span_site.get()));
    CHECK(first->receive(ev_new_event(site.id(), values)) == TT_STATUS_OK);
    ok(*first, ev_new_span(span_site.id()));
    REQUIRE(spy.seen.size() == 5);
    CHECK(spy.seen[4].first == "renamed");
    CHECK(spy.seen[4].second != 0);
    CHECK(spy.seen[4].second != k1);
    CHECK(spy.seen[4].second != k2);
    CHECK(notes->events == 5);
    CHECK(notes->span_plugins == std::vector<std::string>{"same", "renamed"});
}

TEST_CASE("the dispatcher's call-site memo: a plugin key skips the name compare, never a filter or plugin check")
{
    host::dispatcher d;  // "info"
    auto notes = std::make_shared<plugin_notes>();
    d.add_layer(notes);
    abi_site span_abi{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "work", {}};
    const model::callsite site = span_abi.model();
    REQUIRE(d.interest_in(site) == host::interest::always);
    const std::uint64_t key = host::new_plugin_key();
    CHECK(host::new_plugin_key() != key);
    auto emit = [&](std::string_view plugin, std::uint64_t k) {
        host::event_record r;
        r.site = &site;
        r.plugin = plugin;
        r.plugin_key = k;
        d.event(r);
    };
    auto span_from = [&](std::string_view plugin) {
        host::span_attrs a;
        a.site = &site;
        a.plugin = plugin;
        d.close(d.new_span(a));
    };
    // The memo filled by a keyed event of "alpha" answers neither "beta" nor
    // an unkeyed "alpha" by the key; an unkeyed event leaves no key behind.
    emit("alpha", key);
    span_from("beta");
    emit("gamma", 0);
    span_from("alpha");
    emit("alpha", key);
    emit("alpha", key);
    span_from("alpha");
    CHECK(notes->span_plugins == std::vector<std::string>{"beta", "alpha", "alpha"});
    CHECK(notes->events == 4);

    // A new filter: the same key does not keep the old answer.
    d.set_filter(std::get<host::filter>(host::parse_filter("warn")));
    emit("alpha", key);
    CHECK(notes->events == 4);
    CHECK(d.statistics().events_filtered == 1);
    d.set_filter(std::get<host::filter>(host::parse_filter("info")));
    emit("alpha", key);
    CHECK(notes->events == 5);
    CHECK(d.statistics().anomalies == 0);
}
