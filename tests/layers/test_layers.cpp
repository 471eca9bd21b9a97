// The dispatcher (filters, span registry, per-thread stack, fan-out) and its
// layers: console (compact, pretty; golden files), JSON lines, colours.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <algorithm>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/receiver.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace th = tt::host;
namespace model = tt::model;

namespace {

th::filter must_parse(std::string_view text)
{
    auto parsed = th::parse_filter(text);
    if (auto* err = std::get_if<th::filter_error>(&parsed))
        FAIL("'" << text << "' did not parse: " << err->message);
    return std::get<th::filter>(parsed);
}

model::callsite make_site(model::callsite_kind kind, model::level lvl, std::string name, std::string target,
                          std::uint32_t line, std::vector<std::string> fields)
{
    static std::uint64_t next_id = 1000;
    model::callsite cs;
    cs.id = ++next_id;
    cs.kind = kind;
    cs.level = lvl;
    cs.name = std::move(name);
    cs.target = target;
    cs.module_path = std::move(target);
    cs.file = "src/orders.cpp";
    cs.line = line;
    cs.fields = std::move(fields);
    return cs;
}

// A fixed instant: 2026-11-23T12:00:00.123456Z.
th::clock::time_point fixed_instant()
{
    return th::clock::time_point(std::chrono::seconds(1795435200) + std::chrono::microseconds(123456));
}

// Drives a dispatcher the way the receiver does: interest at registration,
// enabled() per hit for SOMETIMES, then the call.
struct driver {
    th::dispatcher& d;
    std::string plugin = "orders";

    th::span_handle span(const model::callsite& site, std::vector<std::pair<std::string, model::value>> values,
                         th::span_handle parent = 0)
    {
        const auto i = d.interest_in(site);
        if (i == th::interest::never || (i == th::interest::sometimes && !d.enabled(site)))
            return 0;
        std::vector<th::field_ref> refs;
        for (const auto& [n, v] : values)
            refs.push_back(th::field_ref{n, v});
        th::span_attrs a;
        a.site = &site;
        a.plugin = plugin;
        a.parent = parent != 0 ? parent : d.current_span();
        a.values = refs;
        a.time = fixed_instant();
        a.thread = std::this_thread::get_id();
        return d.new_span(a);
    }

    bool event(const model::callsite& site, std::vector<std::pair<std::string, model::value>> values)
    {
        const auto i = d.interest_in(site);
        if (i == th::interest::never || (i == th::interest::sometimes && !d.enabled(site)))
            return false;
        std::vector<th::field_ref> refs;
        for (const auto& [n, v] : values)
            refs.push_back(th::field_ref{n, v});
        th::event_record r;
        r.site = &site;
        r.plugin = plugin;
        r.parent = d.current_span();
        r.values = refs;
        r.time = fixed_instant();
        r.thread = std::this_thread::get_id();
        d.event(r);
        return true;
    }

    void record(th::span_handle h, std::vector<std::pair<std::string, model::value>> values)
    {
        std::vector<th::field_ref> refs;
        for (const auto& [n, v] : values)
            refs.push_back(th::field_ref{n, v});
        d.record(h, refs);
    }
};

using K = model::callsite_kind;
using L = model::level;

// The golden scenario's call sites.
struct scenario_sites {
    model::callsite order = make_site(K::span, L::info, "order", "orders", 10, {"id"});
    model::callsite charge = make_site(K::span, L::info, "charge", "orders::billing", 20, {"amount", "currency"});
    model::callsite starting = make_site(K::event, L::info, "event src/orders.cpp:5", "orders", 5, {"message", "count"});
    model::callsite charged =
        make_site(K::event, L::info, "event src/orders.cpp:30", "orders::billing", 30, {"message", "amount", "currency"});
    model::callsite quoted = make_site(K::event, L::warn, "event src/orders.cpp:31", "orders::billing", 31, {"message", "note"});
    model::callsite failed = make_site(K::event, L::error, "event src/orders.cpp:32", "orders", 32, {"message", "error"});
    model::callsite retry =
        make_site(K::event, L::debug, "event src/orders.cpp:33", "orders", 33, {"message", "attempt", "ratio"});
    model::callsite detail = make_site(K::event, L::trace, "event src/orders.cpp:34", "orders", 34, {"flag"});
};

// Spans two deep with fields (one recorded after creation, one replaced in
// place), events at every level, a quoted string, floats, an error chain.
void run_scenario(th::dispatcher& d, const scenario_sites& s)
{
    driver dr{d};
    dr.event(s.starting, {{"message", std::string("starting")}, {"count", std::int64_t{3}}});
    const auto order = dr.span(s.order, {{"id", std::uint64_t{41}}});
    dr.record(order, {{"id", std::uint64_t{42}}});  // replaced in place
    d.enter(order);
    const auto charge = dr.span(s.charge, {{"amount", 12.5}});
    dr.record(charge, {{"currency", std::string("EUR")}});  // recorded after creation
    d.enter(charge);
    dr.event(s.charged, {{"message", std::string("charged")}, {"amount", 12.5}, {"currency", std::string("EUR")}});
    dr.event(s.quoted, {{"message", std::string("odd note")}, {"note", std::string("say \"hi\"\\now")}});
    dr.event(s.retry, {{"message", std::string("retrying")}, {"attempt", std::uint64_t{2}}, {"ratio", 1.0}});
    d.exit(charge);
    d.close(charge);
    dr.event(s.failed, {{"message", std::string("payment failed")},
                        {"error", model::error_chain{{"payment failed", "card declined", "network down"}}}});
    dr.event(s.detail, {{"flag", true}});
    d.exit(order);
    d.close(order);
}

std::string golden_path(const std::string& name)
{
    const char* dir = std::getenv("TT_LAYERS_GOLDEN_DIR");
    REQUIRE_MESSAGE(dir != nullptr, "TT_LAYERS_GOLDEN_DIR is not set (run through meson test)");
    return std::string(dir) + "/" + name;
}

void check_golden(const std::string& name, const std::string& actual)
{
    const std::string path = golden_path(name);
    if (const char* up = std::getenv("TT_UPDATE_GOLDEN"); up && *up == '1') {
        std::ofstream(path, std::ios::binary) << actual;
        MESSAGE("rewrote " << path);
        return;
    }
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "missing golden file " << path);
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK(ss.str() == actual);
}

th::console_options normalised(th::console_options::format_kind k)
{
    th::console_options o;
    o.format = k;
    o.color = th::color_mode::never;
    o.fixed_time = "2026-11-23T12:00:00.000000Z";
    o.fixed_thread = "ThreadId(01)";
    return o;
}

// A layer that keeps what it is told, as text.
struct recording_layer final : th::layer {
    std::mutex m;
    std::vector<std::string> lines;
    std::atomic<int> closes{0}, news{0}, enters{0}, exits{0}, records{0};

    static std::string context(th::span_context spans)
    {
        std::string s;
        for (const auto& sp : spans) {
            if (!s.empty())
                s += ':';
            s += sp.name();
        }
        return s;
    }
    void on_new_span(th::span_context scope) noexcept override { ++news; (void)scope; }
    void on_record(th::span_context, th::field_refs) noexcept override { ++records; }
    void on_enter(const th::span_ref&) noexcept override { ++enters; }
    void on_exit(const th::span_ref&) noexcept override { ++exits; }
    void on_close(th::span_context) noexcept override { ++closes; }
    void on_event(const th::event_view& ev) noexcept override
    {
        std::string msg = ev.site->name;
        for (const auto& f : ev.values)
            if (f.name == "message")
                if (f.value.type() == th::value_ref::kind::string)
                    msg = f.value.text();
        std::lock_guard lock(m);
        lines.push_back(context(ev.spans) + "|" + msg);
    }
    std::vector<std::string> snapshot()
    {
        std::lock_guard lock(m);
        return lines;
    }
};

}  // namespace

TEST_CASE("compact output matches the golden file")
{
    std::ostringstream out;
    th::dispatcher d(must_parse("trace"));
    d.add_layer(std::make_shared<th::console_layer>(th::line_writer(out), normalised(th::console_options::format_kind::compact)));
    scenario_sites s;
    run_scenario(d, s);
    check_golden("compact.txt", out.str());
    CHECK(out.str().find("\x1b[") == std::string::npos);
    CHECK(d.statistics().anomalies == 0);
    CHECK(d.statistics().spans_live == 0);
}

TEST_CASE("pretty output matches the golden file")
{
    std::ostringstream out;
    th::dispatcher d(must_parse("trace"));
    d.add_layer(std::make_shared<th::console_layer>(th::line_writer(out), normalised(th::console_options::format_kind::pretty)));
    scenario_sites s;
    run_scenario(d, s);
    check_golden("pretty.txt", out.str());
}

TEST_CASE("span open/close lines are optional")
{
    std::ostringstream out;
    th::dispatcher d(must_parse("trace"));
    auto opts = normalised(th::console_options::format_kind::compact);
    opts.span_events = true;
    d.add_layer(std::make_shared<th::console_layer>(th::line_writer(out), opts));
    scenario_sites s;
    run_scenario(d, s);
    check_golden("compact_span_events.txt", out.str());

    std::ostringstream plain;
    th::dispatcher d2(must_parse("trace"));
    d2.add_layer(std::make_shared<th::console_layer>(th::line_writer(plain), normalised(th::console_options::format_kind::compact)));
    run_scenario(d2, s);
    CHECK(plain.str().find(": new") == std::string::npos);
    CHECK(out.str().find("order{id=41}: orders: new\n") != std::string::npos);
    CHECK(out.str().find("order{id=42}:charge{amount=12.5 currency=\"EUR\"}: orders::billing: close\n") != std::string::npos);
}

TEST_CASE("the real clock and thread numbers have the documented shape")
{
    CHECK(th::format_time(fixed_instant()) == "2026-11-23T12:00:00.123456Z");
    std::ostringstream out;
    th::dispatcher d(must_parse("info"));
    th::console_options o;
    o.color = th::color_mode::never;
    d.add_layer(std::make_shared<th::console_layer>(th::line_writer(out), o));
    d.host_event(L::info, "tt::host", "hello", {{"n", std::int64_t{1}}});
    const std::string line = out.str();
    REQUIRE(line.size() > 40);
    CHECK(line[4] == '-');
    CHECK(line[10] == 'T');
    CHECK(line.substr(26, 8) == "Z  INFO ");
    CHECK(line.find(" ThreadId(") == 33);
    CHECK(line.find("tt::host: hello n=1\n") != std::string::npos);
}

TEST_CASE("colours: absent when not a terminal, present when forced")
{
    scenario_sites s;
    {
        std::ostringstream out;  // an ostream is never a terminal
        th::console_options o = normalised(th::console_options::format_kind::compact);
        o.color = th::color_mode::automatic;
        auto layer = std::make_shared<th::console_layer>(th::line_writer(out), o);
        CHECK_FALSE(layer->colored());
        th::dispatcher d(must_parse("trace"));
        d.add_layer(layer);
        run_scenario(d, s);
        CHECK(out.str().find('\x1b') == std::string::npos);
    }
    {
        std::FILE* f = std::tmpfile();  // a FILE* that is not a tty
        REQUIRE(f != nullptr);
        th::console_options o;
        o.color = th::color_mode::automatic;
        auto layer = std::make_shared<th::console_layer>(th::line_writer(f), o);
        CHECK_FALSE(layer->colored());
        std::fclose(f);
    }
    for (auto fmtk : {th::console_options::format_kind::compact, th::console_options::format_kind::pretty}) {
        std::ostringstream out;
        th::console_options o = normalised(fmtk);
        o.color = th::color_mode::always;
        auto layer = std::make_shared<th::console_layer>(th::line_writer(out), o);
        CHECK(layer->colored());
        th::dispatcher d(must_parse("trace"));
        d.add_layer(layer);
        run_scenario(d, s);
        const std::string text = out.str();
        CHECK(text.find("\x1b[32m INFO\x1b[0m") != std::string::npos);  // level colour
        CHECK(text.find("\x1b[31mERROR\x1b[0m") != std::string::npos);
        CHECK(text.find("\x1b[1m") != std::string::npos);  // bold span names
        CHECK(text.find("\x1b[0m") != std::string::npos);
    }
}

TEST_CASE("JSON lines parse back with the expected keys and values")
{
    std::ostringstream out;
    th::dispatcher d(must_parse("trace"));
    th::json_options jo;
    jo.fixed_time = "2026-11-23T12:00:00.000000Z";
    jo.with_location = true;
    d.add_layer(std::make_shared<th::json_layer>(th::line_writer(out), jo));
    scenario_sites s;
    run_scenario(d, s);

    // Plus the value edge cases.
    const auto odd = make_site(K::event, L::info, "event src/orders.cpp:40", "orders", 40,
                               {"big", "small", "neg", "nan", "inf", "ninf", "dbg"});
    driver dr{d};
    dr.event(odd, {{"big", model::u128(1) << 100},
                   {"small", model::u128(7)},
                   {"neg", -(model::i128(1) << 70)},
                   {"nan", std::nan("")},
                   {"inf", std::numeric_limits<double>::infinity()},
                   {"ninf", -std::numeric_limits<double>::infinity()},
                   {"dbg", model::debug_text{"Point { x: 1 }"}}});

    std::vector<boost::json::object> lines;
    std::istringstream in(out.str());
    for (std::string line; std::getline(in, line);) {
        boost::system::error_code ec;
        auto v = boost::json::parse(line, ec);
        REQUIRE_MESSAGE(!ec, "not JSON: " << line);
        REQUIRE(v.is_object());
        lines.push_back(v.as_object());
    }
    REQUIRE(lines.size() == 7);  // six scenario events + the odd one

    const auto& first = lines[0];
    CHECK(first.at("timestamp") == "2026-11-23T12:00:00.000000Z");
    CHECK(first.at("level") == "INFO");
    CHECK(first.at("target") == "orders");
    CHECK(first.at("plugin") == "orders");
    CHECK(first.at("fields").at("message") == "starting");
    CHECK(first.at("fields").at("count") == 3);
    CHECK(first.at("filename") == "src/orders.cpp");
    CHECK(first.at("line_number") == 5);
    CHECK(first.at("threadId").as_string().starts_with("ThreadId("));
    CHECK_FALSE(first.contains("span"));
    CHECK_FALSE(first.contains("spans"));

    const auto& charged = lines[1];
    CHECK(charged.at("fields").at("amount") == 12.5);
    CHECK(charged.at("fields").at("currency") == "EUR");
    CHECK(charged.at("span").at("name") == "charge");
    CHECK(charged.at("span").at("amount") == 12.5);
    CHECK(charged.at("span").at("currency") == "EUR");
    const auto& spans = charged.at("spans").as_array();
    REQUIRE(spans.size() == 2);
    CHECK(spans[0].at("name") == "order");
    CHECK(spans[0].at("id") == 42);
    CHECK(spans[1].at("name") == "charge");

    CHECK(lines[2].at("level") == "WARN");
    CHECK(lines[2].at("fields").at("note") == "say \"hi\"\\now");
    CHECK(lines[3].at("level") == "DEBUG");
    CHECK(lines[3].at("fields").at("ratio") == 1.0);

    const auto& failed = lines[4];
    CHECK(failed.at("level") == "ERROR");
    CHECK(failed.at("fields").at("error") == "payment failed: card declined: network down");
    CHECK(failed.at("spans").as_array().size() == 1);
    CHECK(lines[5].at("level") == "TRACE");
    CHECK(lines[5].at("fields").at("flag") == true);

    const auto& f = lines[6].at("fields");
    CHECK(f.at("big") == "1267650600228229401496703205376");
    CHECK(f.at("small") == 7);
    CHECK(f.at("neg") == "-1180591620717411303424");
    CHECK(f.at("nan") == "NaN");
    CHECK(f.at("inf") == "inf");
    CHECK(f.at("ninf") == "-inf");
    CHECK(f.at("dbg") == "Point { x: 1 }");
}

TEST_CASE("JSON span events carry the span as \"span\"")
{
    std::ostringstream out;
    th::dispatcher d(must_parse("trace"));
    th::json_options jo;
    jo.span_events = true;
    jo.with_thread_ids = false;
    d.add_layer(std::make_shared<th::json_layer>(th::line_writer(out), jo));
    scenario_sites s;
    driver dr{d};
    const auto h = dr.span(s.order, {{"id", std::uint64_t{7}}});
    d.close(h);
    std::istringstream in(out.str());
    std::string l1, l2;
    REQUIRE(std::getline(in, l1));
    REQUIRE(std::getline(in, l2));
    auto a = boost::json::parse(l1).as_object();
    auto b = boost::json::parse(l2).as_object();
    CHECK(a.at("fields").at("message") == "new");
    CHECK(b.at("fields").at("message") == "close");
    CHECK(a.at("span").at("id") == 7);
    CHECK_FALSE(a.contains("threadId"));
}

TEST_CASE("filter: info,orders=debug,orders[checkout{user=alice}]=trace")
{
    th::dispatcher d(must_parse("info,orders=debug,orders[checkout{user=alice}]=trace"));
    auto rec = std::make_shared<recording_layer>();
    d.add_layer(rec);

    const auto checkout = make_site(K::span, L::info, "checkout", "orders", 50, {"user"});
    const auto trace_ev = make_site(K::event, L::trace, "event a", "orders::cart", 51, {"message"});
    const auto debug_ev = make_site(K::event, L::debug, "event b", "orders", 52, {"message"});
    const auto info_other = make_site(K::event, L::info, "event c", "payments", 53, {"message"});
    const auto debug_other = make_site(K::event, L::debug, "event d", "payments", 54, {"message"});
    const auto trace_span = make_site(K::span, L::trace, "checkout", "orders", 55, {"user"});

    CHECK(d.interest_in(checkout) == th::interest::always);
    CHECK(d.interest_in(debug_ev) == th::interest::always);
    CHECK(d.interest_in(info_other) == th::interest::always);
    CHECK(d.interest_in(trace_ev) == th::interest::sometimes);
    CHECK(d.interest_in(debug_other) == th::interest::sometimes);  // inside alice's checkout any target
    CHECK(d.interest_in(trace_span) == th::interest::sometimes);

    driver dr{d};
    CHECK_FALSE(dr.event(trace_ev, {{"message", std::string("outside")}}));
    {
        const auto bob = dr.span(checkout, {{"user", std::string("bob")}});
        d.enter(bob);
        CHECK_FALSE(dr.event(trace_ev, {{"message", std::string("bob trace")}}));
        CHECK(dr.event(debug_ev, {{"message", std::string("bob debug")}}));
        d.exit(bob);
        d.close(bob);
    }
    {
        const auto alice = dr.span(checkout, {{"user", std::string("alice")}});
        d.enter(alice);
        CHECK(dr.event(trace_ev, {{"message", std::string("alice trace")}}));
        CHECK(dr.event(debug_other, {{"message", std::string("alice other debug")}}));
        // A trace-level span for alice enables itself by its own values.
        const auto inner = dr.span(trace_span, {{"user", std::string("alice")}});
        d.enter(inner);
        CHECK(d.current_span() == inner);
        d.exit(inner);
        d.close(inner);
        d.exit(alice);
        d.close(alice);
    }
    CHECK_FALSE(dr.event(trace_ev, {{"message", std::string("after")}}));

    // event() re-checks: a direct call outside the span is dropped too.
    th::event_record r;
    const model::value msg{std::string("direct")};
    const th::field_ref ref{"message", msg};
    r.site = &trace_ev;
    r.plugin = "orders";
    r.values = th::field_refs(&ref, 1);
    d.event(r);

    const auto lines = rec->snapshot();
    const std::vector<std::string> want = {"checkout|bob debug", "checkout|alice trace", "checkout|alice other debug"};
    CHECK(lines == want);
    CHECK(d.statistics().events_filtered >= 1);
    CHECK(d.statistics().anomalies == 0);
}

TEST_CASE("a span that does not pass is disabled: a handle, but invisible")
{
    th::dispatcher d(must_parse("info,orders[checkout{user=alice}]=trace"));
    auto rec = std::make_shared<recording_layer>();
    d.add_layer(rec);
    const auto outer = make_site(K::span, L::info, "outer", "orders", 60, {});
    const auto checkout = make_site(K::span, L::trace, "checkout", "orders", 61, {"user"});
    const auto info_ev = make_site(K::event, L::info, "event e", "orders", 62, {"message"});
    driver dr{d};
    const auto o = dr.span(outer, {});
    d.enter(o);
    const auto bob = dr.span(checkout, {{"user", std::string("bob")}});
    CHECK(bob != 0);  // the receiver gets a consistent answer
    d.enter(bob);
    CHECK(d.current_span() == o);  // entering a disabled span changes nothing
    dr.event(info_ev, {{"message", std::string("in bob")}});
    const auto child = dr.span(outer, {}, bob);  // explicit parent: the disabled span
    d.record(bob, {});
    d.exit(bob);
    d.close(bob);
    d.close(child);
    d.exit(o);
    d.close(o);
    CHECK(rec->snapshot() == std::vector<std::string>{"outer|in bob"});
    CHECK(rec->news == 2);    // outer and child, not bob
    CHECK(rec->closes == 2);
    CHECK(d.statistics().spans_disabled == 1);
    CHECK(d.statistics().spans_live == 0);
    CHECK(d.statistics().anomalies == 0);
}

TEST_CASE("a record() that changes a span's values changes the level it opens, each time")
{
    // The span's level is cached per span; a record() must invalidate it
    // (the cache is read by every event inside the span).
    th::dispatcher d(must_parse("info,orders[checkout{user=alice}]=trace"));
    auto rec = std::make_shared<recording_layer>();
    d.add_layer(rec);
    const auto checkout = make_site(K::span, L::info, "checkout", "orders", 63, {"user"});
    const auto trace_ev = make_site(K::event, L::trace, "event t", "orders", 64, {"message"});
    driver dr{d};
    const auto s = dr.span(checkout, {{"user", std::string("bob")}});
    d.enter(s);
    CHECK_FALSE(dr.event(trace_ev, {{"message", std::string("bob 1")}}));
    CHECK_FALSE(dr.event(trace_ev, {{"message", std::string("bob 2")}}));  // from the cache
    dr.record(s, {{"user", std::string("alice")}});
    CHECK(dr.event(trace_ev, {{"message", std::string("alice 1")}}));
    CHECK(dr.event(trace_ev, {{"message", std::string("alice 2")}}));
    dr.record(s, {{"user", std::string("bob")}});
    CHECK_FALSE(dr.event(trace_ev, {{"message", std::string("bob 3")}}));
    dr.record(s, {{"user", std::string("alice")}});
    CHECK(dr.event(trace_ev, {{"message", std::string("alice 3")}}));
    // A filter change keys the cache too.
    d.set_filter(must_parse("info"));
    CHECK_FALSE(dr.event(trace_ev, {{"message", std::string("alice, no trace")}}));
    d.set_filter(must_parse("info,orders[checkout{user=alice}]=trace"));
    CHECK(dr.event(trace_ev, {{"message", std::string("alice 4")}}));
    d.exit(s);
    d.close(s);
    const std::vector<std::string> want = {"checkout|alice 1", "checkout|alice 2", "checkout|alice 3", "checkout|alice 4"};
    CHECK(rec->snapshot() == want);
    CHECK(d.statistics().anomalies == 0);
}

TEST_CASE("a span's thread reaches the layers as given, whichever thread opens it")
{
    struct thread_layer final : th::layer {
        std::vector<std::thread::id> seen;
        void on_enter(const th::span_ref& span) noexcept override { seen.push_back(span.thread); }
        void on_event(const th::event_view&) noexcept override {}
    };
    th::dispatcher d(must_parse("trace"));
    auto rec = std::make_shared<thread_layer>();
    d.add_layer(rec);
    const auto site = make_site(K::span, L::info, "work", "orders", 65, {});
    std::thread::id other_a, other_b;
    std::thread([&] { other_a = std::this_thread::get_id(); }).join();
    std::thread([&] { other_b = std::this_thread::get_id(); }).join();
    const std::vector<std::thread::id> given = {std::this_thread::get_id(), other_a, std::thread::id{}, other_b,
                                                other_a, std::this_thread::get_id()};
    std::vector<th::span_handle> handles;
    for (const auto& t : given) {
        th::span_attrs a;
        a.site = &site;
        a.plugin = "orders";
        a.time = fixed_instant();
        a.thread = t;
        handles.push_back(d.new_span(a));
    }
    // And one opened on another thread for this one.
    th::span_handle from_other = 0;
    std::thread([&] {
        th::span_attrs a;
        a.site = &site;
        a.plugin = "orders";
        a.time = fixed_instant();
        a.thread = given[0];
        from_other = d.new_span(a);
    }).join();
    handles.push_back(from_other);
    for (const auto h : handles) {
        d.enter(h);
        d.exit(h);
        d.close(h);
    }
    std::vector<std::thread::id> want = given;
    want.push_back(given[0]);
    CHECK(rec->seen == want);
}

TEST_CASE("plugin_span_id: the id a span was opened with, while it is open")
{
    th::dispatcher d(must_parse("info,orders=off"));
    const auto site = make_site(K::span, L::info, "work", "other", 66, {});
    const auto off = make_site(K::span, L::info, "work", "orders", 67, {});
    th::span_attrs a;
    a.site = &site;
    a.plugin = "p";
    a.plugin_span_id = 77;
    const auto h = d.new_span(a);
    a.plugin_span_id = std::uint64_t{1} << 40 | 5;
    a.site = &off;  // disabled by the filter: still known by its handle
    const auto g = d.new_span(a);
    CHECK(d.plugin_span_id(h) == 77);
    CHECK(d.plugin_span_id(g) == (std::uint64_t{1} << 40 | 5));
    CHECK(d.plugin_span_id(g + 1000) == 0);
    CHECK(d.plugin_span_id(0) == 0);
    d.close(h);
    d.close(g);
    CHECK(d.plugin_span_id(h) == 0);
    CHECK(d.plugin_span_id(g) == 0);
}

TEST_CASE("set_filter at run time changes interest_in")
{
    th::dispatcher d(must_parse("info"));
    const auto dbg = make_site(K::event, L::debug, "event", "orders", 70, {"message"});
    const auto g0 = d.filter_generation();
    CHECK(d.interest_in(dbg) == th::interest::never);
    d.set_filter(must_parse("orders=debug"));
    CHECK(d.filter_generation() > g0);
    CHECK(d.interest_in(dbg) == th::interest::always);
    CHECK(d.current_filter().to_string() == "orders=debug");

    // Swapping while other threads ask.
    std::atomic<bool> stop{false};
    std::atomic<int> answers{0};
    std::thread reader([&] {
        while (!stop.load()) {
            const auto i = d.interest_in(dbg);
            CHECK((i == th::interest::never || i == th::interest::always));
            ++answers;
        }
    });
    for (int i = 0; i < 200; ++i)
        d.set_filter(must_parse(i % 2 ? "warn" : "orders=debug"));
    stop = true;
    reader.join();
    CHECK(d.interest_in(dbg) == th::interest::never);
}

TEST_CASE("current_span is per thread")
{
    th::dispatcher d(must_parse("trace"));
    const auto site = make_site(K::span, L::info, "work", "orders", 80, {"n"});
    driver dr{d};
    const auto a = dr.span(site, {{"n", std::int64_t{1}}});
    d.enter(a);
    CHECK(d.current_span() == a);
    th::span_handle seen_before = 99, seen_inside = 0, seen_after = 99;
    th::span_handle b = 0;
    std::thread t([&] {
        seen_before = d.current_span();
        b = dr.span(site, {{"n", std::int64_t{2}}});
        d.enter(b);
        seen_inside = d.current_span();
        d.exit(b);
        seen_after = d.current_span();
        d.close(b);
    });
    t.join();
    CHECK(seen_before == 0);
    CHECK(seen_inside == b);
    CHECK(seen_after == 0);
    CHECK(b != a);
    CHECK(d.current_span() == a);
    d.exit(a);
    CHECK(d.current_span() == 0);
    d.close(a);
    CHECK(d.statistics().anomalies == 0);
}

TEST_CASE("close once; handles are never reused")
{
    th::dispatcher d(must_parse("trace"));
    auto rec = std::make_shared<recording_layer>();
    d.add_layer(rec);
    const auto site = make_site(K::span, L::info, "s", "orders", 90, {});
    driver dr{d};
    const auto a = dr.span(site, {});
    d.close(a);
    d.close(a);  // second close: counted, not forwarded
    CHECK(rec->closes == 1);
    CHECK(d.statistics().anomalies == 1);
    const auto b = dr.span(site, {});
    CHECK(b > a);
    d.record(a, {});  // late record on a closed handle: counted
    CHECK(d.statistics().anomalies == 2);
    d.follows_from(b, a);  // a closed cause is fine
    CHECK(d.statistics().anomalies == 2);
    d.close(b);
}

TEST_CASE("fan-out to two layers")
{
    std::ostringstream text, json;
    th::dispatcher d(must_parse("trace"));
    auto r1 = std::make_shared<recording_layer>();
    auto r2 = std::make_shared<recording_layer>();
    d.add_layer(r1);
    d.add_layer(r2);
    scenario_sites s;
    run_scenario(d, s);
    CHECK(r1->snapshot() == r2->snapshot());
    CHECK(r1->snapshot().size() == 6);
    CHECK(r1->snapshot()[1] == "order:charge|charged");
    CHECK(r1->news == 2);
    CHECK(r2->closes == 2);
    CHECK(r1->enters == 2);
    CHECK(r2->exits == 2);
    CHECK(r1->records == 2);
}

// Records the instant each event_view carries, read (or not) by this layer.
struct time_reading_layer final : th::layer {
    bool read = true;
    std::vector<th::clock::time_point> seen;
    std::vector<bool> set_before;
    void on_event(const th::event_view& ev) noexcept override
    {
        set_before.push_back(ev.time.is_set());
        if (read)
            seen.push_back(ev.time.get());
    }
};

TEST_CASE("an event's time: read on first use, the same for every layer; an explicit time is kept")
{
    th::dispatcher d(must_parse("trace"));
    auto silent = std::make_shared<time_reading_layer>();
    silent->read = false;
    auto first = std::make_shared<time_reading_layer>();
    auto second = std::make_shared<time_reading_layer>();
    d.add_layer(silent);
    d.add_layer(first);
    d.add_layer(second);
    const auto site = make_site(K::event, L::info, "event src/orders.cpp:7", "orders", 7, {"message"});
    REQUIRE(d.interest_in(site) == th::interest::always);
    const model::value msg{std::string("hello")};
    const th::field_ref ref{"message", msg};

    th::event_record untimed;
    untimed.site = &site;
    untimed.plugin = "orders";
    untimed.values = th::field_refs(&ref, 1);
    CHECK_FALSE(untimed.time.is_set());
    const auto before = th::clock::now();
    d.event(untimed);
    const auto after = th::clock::now();
    REQUIRE(first->seen.size() == 1);
    REQUIRE(second->seen.size() == 1);
    CHECK(silent->set_before == std::vector<bool>{false});  // nobody had read it yet
    CHECK(first->set_before == std::vector<bool>{false});
    CHECK(second->set_before == std::vector<bool>{true});  // the first reader's instant
    CHECK(first->seen[0] == second->seen[0]);
    CHECK(first->seen[0] >= before);
    CHECK(first->seen[0] <= after);

    th::event_record timed = untimed;
    timed.time = fixed_instant();
    d.event(timed);
    REQUIRE(first->seen.size() == 2);
    CHECK(first->seen[1] == fixed_instant());
    CHECK(second->seen[1] == fixed_instant());
    CHECK(silent->set_before[1]);
}

TEST_CASE("host instrumentation: host events and span guards")
{
    std::ostringstream out;
    th::dispatcher d(must_parse("info"));
    auto rec = std::make_shared<recording_layer>();
    d.add_layer(rec);
    d.add_layer(std::make_shared<th::console_layer>(th::line_writer(out), normalised(th::console_options::format_kind::compact)));
    {
        auto g = d.enter_host_span(L::info, "tt::host::reload", "reload", {{"plugin", std::string("orders")}, {"ok", false}});
        REQUIRE(g);
        CHECK(d.current_span() == g.handle());
        g.record("ok", true);
        d.host_event(L::info, "tt::host::reload", "swapped", {{"version", std::uint64_t{3}}});
        d.host_event(L::debug, "tt::host::reload", "not shown");
    }
    CHECK(d.current_span() == 0);
    CHECK(rec->snapshot() == std::vector<std::string>{"reload|swapped"});
    CHECK(out.str() ==
          "2026-11-23T12:00:00.000000Z  INFO ThreadId(01) reload{plugin=\"orders\" ok=true}: tt::host::reload: swapped version=3\n");
    CHECK(d.statistics().spans_live == 0);
    // Host call sites are registered once, with stable ids.
    const std::string_view fields[] = {"message"};
    const auto* a = d.host_callsite(K::event, L::info, "event x", "tt::host", "x.cpp", 1, fields);
    const auto* b = d.host_callsite(K::event, L::info, "event x", "tt::host", "x.cpp", 1, fields);
    REQUIRE(a != nullptr);
    CHECK(a == b);
    CHECK(a->id != 0);
}

TEST_CASE("write failures are counted, never thrown")
{
    std::FILE* f = std::fopen("/dev/null", "r");  // writes fail
    REQUIRE(f != nullptr);
    th::dispatcher d(must_parse("trace"));
    d.add_layer(std::make_shared<th::console_layer>(th::line_writer::each_line(f), th::console_options{}));
    d.add_layer(std::make_shared<th::json_layer>(th::line_writer::each_line(f), th::json_options{}));
    scenario_sites s;
    run_scenario(d, s);
    CHECK(d.statistics().layer_errors == 12);

    // Buffered (the default off a terminal): counted when the lines go out.
    th::dispatcher b(must_parse("trace"));
    b.add_layer(std::make_shared<th::console_layer>(th::line_writer(f), th::console_options{}));
    b.add_layer(std::make_shared<th::json_layer>(th::line_writer(f), th::json_options{}));
    scenario_sites s2;
    run_scenario(b, s2);
    CHECK(b.statistics().layer_errors == 0);
    b.flush();
    CHECK(b.statistics().layer_errors == 2);
    b.flush();  // nothing left to fail
    CHECK(b.statistics().layer_errors == 2);
    std::fclose(f);
}

TEST_CASE("end to end: a receiver relays into the dispatcher")
{
    th::dispatcher d(must_parse("info,orders[checkout{user=alice}]=trace"));
    auto rec = std::make_shared<recording_layer>();
    d.add_layer(rec);
    auto checkout = make_site(K::span, L::info, "checkout", "orders", 100, {"user"});
    auto detail = make_site(K::event, L::trace, "event src/orders.cpp:101", "orders::cart", 101, {"message"});
    {
        th::receiver recv("orders", d);
        CHECK(recv.receive(model::new_callsite{checkout}) == TT_INTEREST_ALWAYS);
        CHECK(recv.receive(model::new_callsite{detail}) == TT_INTEREST_SOMETIMES);
        for (const char* user : {"bob", "alice"}) {
            model::new_span ns;
            ns.callsite_id = checkout.id;
            ns.values = {{"user", std::string(user)}};
            const std::uint64_t id = recv.receive(model::event(ns));
            REQUIRE(id != 0);
            recv.receive(model::span_entered{id});
            model::new_event ne;
            ne.callsite_id = detail.id;
            ne.values = {{"message", std::string("cart of ") + user}};
            recv.receive(model::event(ne));
            recv.receive(model::span_exited{id});
            recv.receive(model::span_dropped{id});
        }
    }
    CHECK(rec->snapshot() == std::vector<std::string>{"checkout|cart of alice"});
    CHECK(rec->news == 2);
    CHECK(rec->closes == 2);
    CHECK(d.statistics().spans_live == 0);
    CHECK(d.statistics().anomalies == 0);
}

namespace {

std::string file_text(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A real file to write lines to, removed at the end. Declared before the
// layers that write to it, so that it outlives their last flush.
struct temp_log {
    std::string path = "/tmp/tt-lines-XXXXXX";
    std::FILE* f = nullptr;
    temp_log()
    {
        const int fd = mkstemp(path.data());
        REQUIRE(fd >= 0);
        f = fdopen(fd, "w");
        REQUIRE(f != nullptr);
    }
    temp_log(const temp_log&) = delete;
    temp_log& operator=(const temp_log&) = delete;
    ~temp_log()
    {
        std::fclose(f);
        std::remove(path.c_str());
    }
    std::string text() const { return file_text(path); }
};

}  // namespace

TEST_CASE("a buffered writer holds lines until its layer flushes or dies")
{
    temp_log log;
    std::FILE* f = log.f;
    {
        th::dispatcher d(must_parse("trace"));
        // An hour: only the layer's end can flush within this test.
        d.add_layer(std::make_shared<th::json_layer>(th::line_writer::buffered(f, std::chrono::hours(1)),
                                                     th::json_options{}));
        scenario_sites s;
        run_scenario(d, s);
        CHECK(d.statistics().layer_errors == 0);
        CHECK(log.text().empty());  // still in the writer's buffer
    }
    const std::string text = log.text();
    CHECK(std::count(text.begin(), text.end(), '\n') == 6);  // every line, once the layer is gone
}

TEST_CASE("a buffered writer is flushed periodically while its layer lives")
{
    temp_log log;
    std::FILE* f = log.f;
    {
        th::dispatcher d(must_parse("trace"));
        th::console_options o;
        o.color = th::color_mode::never;
        d.add_layer(
            std::make_shared<th::console_layer>(th::line_writer::buffered(f, std::chrono::milliseconds(10)), o));
        scenario_sites s;
        run_scenario(d, s);
        // Waits for the flusher thread (a bound, not a measured time).
        std::string text;
        for (int i = 0; i < 500 && std::count(text.begin(), text.end(), '\n') < 6; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            text = log.text();
        }
        CHECK(std::count(text.begin(), text.end(), '\n') == 6);
    }
}

// The JSON layer keeps each span's object and each call site's keys and
// target between lines: what it writes must follow every change of them.
TEST_CASE("JSON lines follow records, closes, and a call site's names and target changing")
{
    std::ostringstream out;
    th::dispatcher d(must_parse("trace"));
    th::json_options jo;
    jo.fixed_time = "2026-11-23T12:00:00.000000Z";
    jo.with_thread_ids = false;
    d.add_layer(std::make_shared<th::json_layer>(th::line_writer(out), jo));
    scenario_sites s;
    auto site = make_site(K::event, L::info, "event src/orders.cpp:7", "orders", 7, {"message", "a", "b"});
    driver dr{d};
    const std::string head = R"({"timestamp":"2026-11-23T12:00:00.000000Z","level":"INFO","fields":{)";
    auto next_line = [&] {
        std::string all = out.str();
        out.str("");
        REQUIRE(!all.empty());
        CHECK(all.back() == '\n');
        all.pop_back();
        CHECK(all.find('\n') == std::string::npos);  // one line
        return all;
    };

    const auto order = dr.span(s.order, {{"id", std::int64_t{1}}});
    d.enter(order);
    dr.event(site, {{"message", std::string("one")}, {"a", std::int64_t{1}}});
    CHECK(next_line() == head + R"("message":"one","a":1},"target":"orders","plugin":"orders",)" +
                             R"("span":{"name":"order","id":1},"spans":[{"name":"order","id":1}]})");
    dr.event(site, {{"message", std::string("two")}, {"a", std::int64_t{2}}});
    CHECK(next_line() == head + R"("message":"two","a":2},"target":"orders","plugin":"orders",)" +
                             R"("span":{"name":"order","id":1},"spans":[{"name":"order","id":1}]})");

    // A record changes the span's object in the next line.
    dr.record(order, {{"id", std::int64_t{2}}});
    dr.event(site, {{"message", std::string("three")}});
    CHECK(next_line() == head + R"("message":"three"},"target":"orders","plugin":"orders",)" +
                             R"("span":{"name":"order","id":2},"spans":[{"name":"order","id":2}]})");

    // The same call site object with other names, a repeated name, an
    // absent value, another target and another plugin.
    dr.event(site, {{"message", std::string("four")}, {"b\"", std::int64_t{4}}});
    CHECK(next_line().find(R"({"message":"four","b\"":4},)") != std::string::npos);
    dr.event(site, {{"a", std::int64_t{5}}, {"b", true}, {"a", std::int64_t{6}}});
    CHECK(next_line().find(R"({"a":6,"b":true},)") != std::string::npos);
    {
        const model::value v{std::int64_t{7}};
        const std::vector<th::field_ref> refs{{"message", {}}, {"a", v}, {"b", {}}};
        th::event_record r;
        r.site = &site;
        r.plugin = "orders";
        r.parent = d.current_span();
        r.values = refs;
        r.time = fixed_instant();
        r.thread = std::this_thread::get_id();
        d.event(r);
        CHECK(next_line().find(R"({"a":7},"target":"orders",)") != std::string::npos);
    }
    site.target = "orders::other";
    dr.plugin = "payments";
    dr.event(site, {{"message", std::string("five")}, {"a", std::int64_t{8}}});
    CHECK(next_line().find(R"({"message":"five","a":8},"target":"orders::other","plugin":"payments",)") !=
          std::string::npos);

    // A new span after the first closed: its own object.
    d.exit(order);
    d.close(order);
    const auto charge = dr.span(s.charge, {{"amount", 1.5}, {"currency", std::string("EUR")}});
    d.enter(charge);
    dr.event(site, {{"message", std::string("six")}});
    CHECK(next_line().find(R"("span":{"name":"charge","amount":1.5E0,"currency":"EUR"},)"
                           R"("spans":[{"name":"charge","amount":1.5E0,"currency":"EUR"}]})") != std::string::npos);
    d.exit(charge);
    d.close(charge);
}

TEST_CASE("an unbuffered line writer keeps order with other output to its FILE*, and reports failures")
{
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    auto w = th::line_writer::each_line(f);
    std::fputs("before\n", f);  // still in stdio's buffer
    CHECK(w.write("line\n"));
    std::fputs("after\n", f);
    CHECK(w.write("last\n"));
    std::rewind(f);
    char buf[64] = {};
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    CHECK(std::string(buf, n) == "before\nline\nafter\nlast\n");
    std::fclose(f);

    // Not writable: the write fails and says so.
    std::FILE* ro = std::fopen("/dev/null", "r");
    REQUIRE(ro != nullptr);
    CHECK_FALSE(th::line_writer::each_line(ro).write("x\n"));
    std::fclose(ro);

    // A FILE* with no descriptor (fmemopen) still gets its lines.
    char mem[32] = {};
    std::FILE* m = fmemopen(mem, sizeof mem, "w");
    REQUIRE(m != nullptr);
    CHECK(th::line_writer(m).write("in memory\n"));
    CHECK(std::string(mem) == "in memory\n");
    std::fclose(m);
}

TEST_CASE("a line writer buffers off a terminal and writes each line to one")
{
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    CHECK(th::line_writer(f).is_buffered());
    CHECK(th::line_writer(f).flush_every() == std::chrono::milliseconds(50));
    CHECK_FALSE(th::line_writer::each_line(f).is_buffered());
    CHECK(th::line_writer::buffered(f, std::chrono::milliseconds(5)).flush_every() == std::chrono::milliseconds(5));
    std::fclose(f);

    // A pseudo-terminal stands in for the operator's screen.
    const int master = posix_openpt(O_RDWR | O_NOCTTY);
    REQUIRE(master >= 0);
    REQUIRE(grantpt(master) == 0);
    REQUIRE(unlockpt(master) == 0);
    std::FILE* tty = std::fopen(ptsname(master), "w");
    REQUIRE(tty != nullptr);
    th::line_writer on_tty(tty);
    CHECK(on_tty.is_terminal());
    CHECK_FALSE(on_tty.is_buffered());
    std::fclose(tty);
    close(master);
}

TEST_CASE("a buffered line writer writes whole lines, in order, and each once")
{
    temp_log log;
    std::FILE* f = log.f;
    std::string expected;
    {
        auto w = th::line_writer::buffered(f, std::chrono::hours(1));
        // 3,000 lines of 10 to 99 bytes: several buffers' worth. Whatever
        // has reached the file at any moment ends with a whole line.
        for (int i = 0; i < 3000; ++i) {
            std::string line = std::to_string(i) + ":" + std::string(static_cast<std::size_t>(i % 90), 'x') + "\n";
            expected += line;
            REQUIRE(w.write(line));
            if (i % 250 == 0) {
                const std::string now = log.text();
                CHECK((now.empty() || now.back() == '\n'));
                CHECK(expected.compare(0, now.size(), now) == 0);
                CHECK(now.size() + w.pending() == expected.size());
            }
        }
        // A line longer than the buffer goes out on its own, after the rest.
        const std::string big = std::string(100 * 1024, 'y') + "\n";
        expected += big;
        REQUIRE(w.write(big));
        CHECK(w.pending() == 0);
        CHECK(log.text() == expected);
        REQUIRE(w.write("after the big one\n"));
        expected += "after the big one\n";
        // A copy starts empty: the pending line is written once, by `w`.
        th::line_writer copy = w;
        CHECK(copy.pending() == 0);
        CHECK(copy.is_buffered());
        CHECK(w.pending() > 0);
    }  // the writers' end writes what they hold
    CHECK(log.text() == expected);
}

TEST_CASE("a moved buffered line writer writes its pending lines once")
{
    temp_log log;
    {
        auto a = th::line_writer::buffered(log.f, std::chrono::hours(1));
        REQUIRE(a.write("one\n"));
        th::line_writer b(std::move(a));  // b holds "one"; a holds nothing
        CHECK(b.pending() == 4);
        CHECK(a.pending() == 0);
        auto c = th::line_writer::buffered(log.f, std::chrono::hours(1));
        REQUIRE(c.write("two\n"));
        c = std::move(b);  // c writes its "two" first, then holds "one"
        CHECK(log.text() == "two\n");
        CHECK(c.pending() == 4);
    }
    CHECK(log.text() == "two\none\n");
}

TEST_CASE("the dispatcher's flush writes out every layer's buffered lines")
{
    temp_log log;
    std::FILE* f = log.f;
    {
        th::dispatcher d(must_parse("trace"));
        th::console_options o;
        o.color = th::color_mode::never;
        d.add_layer(std::make_shared<th::console_layer>(th::line_writer(f), o));  // a file: buffered
        d.add_layer(std::make_shared<th::json_layer>(th::line_writer(f), th::json_options{}));
        scenario_sites s;
        run_scenario(d, s);
        d.flush();
        const std::string text = log.text();
        CHECK(std::count(text.begin(), text.end(), '\n') == 12);  // 6 lines from each layer
        CHECK(d.statistics().layer_errors == 0);
    }
}

TEST_CASE("spans of many call sites and plugins keep theirs, over dispatchers that come and go")
{
    // A span node keeps its (call site, plugin) pair as a 4-byte number into
    // chunks of 256 that each dispatcher claims and gives back: more sites
    // than a chunk, two dispatchers at once, and one made after another died.
    struct site_layer final : th::layer {
        struct seen_span {
            std::string name, plugin;
            bool resumed = false, has_site = false;
        };
        std::vector<seen_span> seen;
        void on_enter(const th::span_ref& span) noexcept override
        {
            seen.push_back({span.site != nullptr ? span.site->name : "", std::string(span.plugin), span.resumed,
                            span.site != nullptr});
        }
        void on_event(const th::event_view&) noexcept override {}
    };
    constexpr int site_count = 600;
    std::vector<model::callsite> sites;
    for (int i = 0; i < site_count; ++i)
        sites.push_back(make_site(K::span, L::info, "site-" + std::to_string(i), "orders", 70, {}));
    auto open_all = [&](th::dispatcher& d, int round) {
        std::vector<th::span_handle> handles;
        for (int i = 0; i < site_count; ++i) {
            th::span_attrs a;
            a.site = (i + round) % 97 == 0 ? nullptr : &sites[static_cast<std::size_t>(i)];
            a.plugin = (i + round) % 2 == 0 ? "even" : "odd";
            a.resumed = (i + round) % 3 == 0;
            a.time = fixed_instant();
            handles.push_back(d.new_span(a));
        }
        return handles;
    };
    auto check_all = [&](th::dispatcher& d, const std::shared_ptr<site_layer>& l,
                         const std::vector<th::span_handle>& handles, int round) {
        l->seen.clear();
        for (const auto h : handles) {
            d.enter(h);
            d.exit(h);
        }
        // Spans without a call site are never enabled: they take numbers, and are not seen.
        std::size_t k = 0;
        for (int i = 0; i < site_count; ++i) {
            if ((i + round) % 97 == 0)
                continue;
            CAPTURE(i);
            CAPTURE(round);
            REQUIRE(k < l->seen.size());
            const auto& s = l->seen[k++];
            CHECK(s.has_site);
            CHECK(s.name == "site-" + std::to_string(i));
            CHECK(s.plugin == ((i + round) % 2 == 0 ? "even" : "odd"));
            CHECK(s.resumed == ((i + round) % 3 == 0));
        }
        CHECK(k == l->seen.size());
    };
    auto first = std::make_unique<th::dispatcher>(must_parse("trace"));
    auto first_layer = std::make_shared<site_layer>();
    first->add_layer(first_layer);
    const auto first_spans = open_all(*first, 0);
    for (int round = 1; round <= 3; ++round) {
        th::dispatcher d(must_parse("trace"));
        auto l = std::make_shared<site_layer>();
        d.add_layer(l);
        const auto spans = open_all(d, round);
        check_all(d, l, spans, round);
        if (first)
            check_all(*first, first_layer, first_spans, 0);  // its numbers are still its own
        for (const auto h : spans)
            d.close(h);
        if (round == 2)
            first.reset();  // its chunks go back, for the next dispatcher to take
    }
}

namespace {

// Keeps what each callback was handed of spans, for a chosen layer_reads.
struct span_seeing_layer final : th::layer {
    explicit span_seeing_layer(th::layer_reads r) : r_(r) {}
    th::layer_reads reads() const noexcept override { return r_; }

    // One callback: its kind, then per span of its scope "name#id^parent{fields}".
    std::vector<std::string> seen;

    static std::string describe(const th::span_ref& s)
    {
        std::string t = std::string(s.name()) + "#" + std::to_string(s.id) + "^" + std::to_string(s.parent) + "{";
        if (s.fields == nullptr)
            return t + "NULL}";
        for (const auto& [name, v] : *s.fields)
            t += name + ",";
        return t + "}";
    }
    void note(std::string what, th::span_context scope)
    {
        for (const auto& s : scope)
            what += " " + describe(s);
        seen.push_back(std::move(what));
    }
    void on_new_span(th::span_context scope) noexcept override { note("new", scope); }
    void on_record(th::span_context scope, th::field_refs) noexcept override { note("record", scope); }
    void on_enter(const th::span_ref& s) noexcept override { note("enter", th::span_context(&s, 1)); }
    void on_exit(const th::span_ref& s) noexcept override { note("exit", th::span_context(&s, 1)); }
    void on_close(th::span_context scope) noexcept override { note("close", scope); }
    void on_event(const th::event_view& ev) noexcept override { note("event " + ev.site->name, ev.spans); }

private:
    th::layer_reads r_;
};

// Two spans, the second under the first, an event in each, closed in order.
// Returns the handles.
std::pair<th::span_handle, th::span_handle> run_two_spans(th::dispatcher& d, const scenario_sites& s)
{
    driver dr{d};
    const auto order = dr.span(s.order, {{"id", std::uint64_t{42}}});
    d.enter(order);
    const auto charge = dr.span(s.charge, {{"amount", 12.5}, {"currency", std::string("EUR")}});
    d.enter(charge);
    dr.event(s.charged, {{"message", std::string("charged")}});
    d.exit(charge);
    d.close(charge);
    dr.event(s.starting, {{"message", std::string("starting")}});
    d.exit(order);
    d.close(order);
    return {order, charge};
}

}  // namespace

TEST_CASE("a layer that reads nothing of spans gets every callback, with the span itself")
{
    th::dispatcher d(must_parse("trace"));
    auto bare = std::make_shared<span_seeing_layer>(th::layer_reads{.span_fields = false, .span_context = false});
    d.add_layer(bare);
    scenario_sites s;
    const auto [o, c] = run_two_spans(d, s);
    const std::string order = "order#" + std::to_string(o) + "^0{}";
    const std::string charge = "charge#" + std::to_string(c) + "^" + std::to_string(o) + "{}";
    // Nobody reads fields or context: empty (never null) fields, the span
    // alone in its scope, no spans with an event; ids and parents complete.
    CHECK(bare->seen == std::vector<std::string>{"new " + order, "enter " + order, "new " + charge,
                                                 "enter " + charge, "event " + s.charged.name, "exit " + charge,
                                                 "close " + charge, "event " + s.starting.name, "exit " + order,
                                                 "close " + order});
    CHECK(d.statistics().anomalies == 0);
    CHECK(d.statistics().spans_live == 0);
}

TEST_CASE("a layer that reads span fields but no context gets the fields of the span alone")
{
    th::dispatcher d(must_parse("trace"));
    auto fields_only = std::make_shared<span_seeing_layer>(th::layer_reads{.span_fields = true, .span_context = false});
    d.add_layer(fields_only);
    scenario_sites s;
    const auto [o, c] = run_two_spans(d, s);
    const std::string charge = "charge#" + std::to_string(c) + "^" + std::to_string(o) + "{amount,currency,}";
    REQUIRE(fields_only->seen.size() == 10);
    CHECK(fields_only->seen[0] == "new order#" + std::to_string(o) + "^0{id,}");
    CHECK(fields_only->seen[2] == "new " + charge);
    CHECK(fields_only->seen[4] == "event " + s.charged.name);
    CHECK(fields_only->seen[6] == "close " + charge);
}

TEST_CASE("a layer that reads everything beside one that reads nothing still gets everything")
{
    th::dispatcher d(must_parse("trace"));
    auto bare = std::make_shared<span_seeing_layer>(th::layer_reads{.span_fields = false, .span_context = false});
    auto full = std::make_shared<span_seeing_layer>(th::layer_reads{});
    d.add_layer(bare);  // first: the combination, not the first layer, decides
    d.add_layer(full);
    scenario_sites s;
    const auto [o, c] = run_two_spans(d, s);
    const std::string order = "order#" + std::to_string(o) + "^0{id,}";
    const std::string charge = "charge#" + std::to_string(c) + "^" + std::to_string(o) + "{amount,currency,}";
    CHECK(full->seen == std::vector<std::string>{"new " + order, "enter " + order, "new " + order + " " + charge,
                                                 "enter " + charge, "event " + s.charged.name + " " + order + " " + charge,
                                                 "exit " + charge, "close " + order + " " + charge,
                                                 "event " + s.starting.name + " " + order, "exit " + order,
                                                 "close " + order});
    // A layer may get more than it reads: here what the other one reads.
    CHECK(bare->seen == full->seen);
}

TEST_CASE("adding a layer that reads spans makes the dispatcher build them from then on")
{
    th::dispatcher d(must_parse("trace"));
    auto bare = std::make_shared<span_seeing_layer>(th::layer_reads{.span_fields = false, .span_context = false});
    d.add_layer(bare);
    scenario_sites s;
    driver dr{d};
    const auto order = dr.span(s.order, {{"id", std::uint64_t{42}}});
    d.enter(order);  // its view, without fields, is cached on this thread
    dr.event(s.starting, {{"message", std::string("before")}});
    auto full = std::make_shared<span_seeing_layer>(th::layer_reads{});
    d.add_layer(full);
    dr.event(s.starting, {{"message", std::string("after")}});
    d.exit(order);
    d.close(order);
    const std::string with_fields = "order#" + std::to_string(order) + "^0{id,}";
    CHECK(bare->seen[2] == "event " + s.starting.name);
    CHECK(full->seen == std::vector<std::string>{"event " + s.starting.name + " " + with_fields,
                                                 "exit " + with_fields, "close " + with_fields});
}
