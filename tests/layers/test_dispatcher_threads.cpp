// The dispatcher under threads: spans created, entered, recorded and closed
// on several threads at once, parents closed while their children live on,
// spans closed by another thread than the one inside them, and a filter
// changed meanwhile. The layer reads every span of every context it is handed
// (names, every field value, its text), so a node or value snapshot recycled
// too early shows up as a wrong value here, and as a race or use-after-free
// under TSan and ASan (this test is in the concurrency suite).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>

#include <algorithm>
#include <atomic>
#include <latch>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace th = tt::host;
namespace model = tt::model;

namespace {

// Same names, same values, same order.
bool same(const model::field_values& a, const model::field_values& b)
{
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].first != b[i].first || !model::same_value(a[i].second, b[i].second))
            return false;
    return true;
}

th::filter must_parse(std::string_view text)
{
    auto parsed = th::parse_filter(text);
    REQUIRE(std::holds_alternative<th::filter>(parsed));
    return std::get<th::filter>(parsed);
}

model::callsite site(std::uint64_t id, model::callsite_kind kind, std::string name, std::vector<std::string> fields,
                     model::level lvl = model::level::info)
{
    model::callsite cs;
    cs.id = id;
    cs.kind = kind;
    cs.level = lvl;
    cs.name = std::move(name);
    cs.target = "worker";
    cs.module_path = "worker";
    cs.file = "worker.cpp";
    cs.fields = std::move(fields);
    return cs;
}

// Checks what it is handed instead of trusting it: every span in a context
// has a name and a "tag" field whose text is "<name>-<n>"; events name their
// innermost span in their own "in" field (except the call site "racy", whose
// place depends on which thread wins).
class checking_layer final : public th::layer {
public:
    void on_new_span(th::span_context scope) noexcept override
    {
        check(scope);
        spans.fetch_add(1);
    }
    void on_record(th::span_context scope, th::field_refs) noexcept override { check(scope); }
    void on_close(th::span_context scope) noexcept override
    {
        check(scope);
        closes.fetch_add(1);
    }
    void on_event(const th::event_view& ev) noexcept override
    {
        check(ev.spans);
        events.fetch_add(1);
        std::string_view in;
        for (const auto& f : ev.values)
            if (f.name == "in" && f.value)
                in = f.value.text();
        const std::string_view leaf = ev.spans.empty() ? std::string_view("none") : ev.spans.back().name();
        if (ev.site->name != "racy" && in != leaf)
            wrong.fetch_add(1);
    }

    std::atomic<std::uint64_t> spans{0}, closes{0}, events{0}, wrong{0};

private:
    void check(th::span_context scope) noexcept
    {
        for (const auto& s : scope) {
            const std::string name(s.name());
            bool ok = !name.empty() && s.fields != nullptr;
            bool tagged = false;
            if (ok)
                for (const auto& [k, v] : *s.fields)
                    if (k == "tag") {
                        const auto* text = std::get_if<std::string>(&v);
                        tagged = text != nullptr && text->starts_with(name + "-");
                    }
            if (!ok || !tagged)
                wrong.fetch_add(1);
        }
    }
};

struct sites {
    model::callsite outer = site(0x1001, model::callsite_kind::span, "outer", {"tag"});
    model::callsite inner = site(0x1002, model::callsite_kind::span, "inner", {"tag", "n"});
    model::callsite shared = site(0x1003, model::callsite_kind::span, "shared", {"tag"});
    model::callsite event = site(0x1004, model::callsite_kind::event, "event", {"message", "in"});
    model::callsite racy = site(0x1006, model::callsite_kind::event, "racy", {"message", "in"});
};

th::span_handle make_span(th::dispatcher& d, const model::callsite& cs, std::string tag, th::span_handle parent,
                          std::int64_t n = 0)
{
    const model::value t{std::move(tag)};
    const model::value nv{n};
    const th::field_ref values[] = {{"tag", t}, {"n", nv}};
    th::span_attrs a;
    a.site = &cs;
    a.plugin = "worker";
    a.parent = parent;
    a.values = th::field_refs(values, cs.fields.size());
    return d.new_span(a);
}

void emit(th::dispatcher& d, const model::callsite& cs, std::string in)
{
    const model::value msg{std::string("work")};
    const model::value v{std::move(in)};
    const th::field_ref values[] = {{"message", msg}, {"in", v}};
    th::event_record ev;
    ev.site = &cs;
    ev.plugin = "worker";
    ev.contextual = true;
    ev.values = values;
    d.event(ev);
}

}  // namespace

TEST_CASE("spans made, entered, recorded and closed on several threads at once stay consistent")
{
    constexpr int threads = 4;
    constexpr int rounds = 1500;
    th::dispatcher d(must_parse("trace"));
    auto layer = std::make_shared<checking_layer>();
    d.add_layer(layer);
    sites s;

    // One span that every thread enters and emits in while one thread keeps
    // recording new values on it.
    const th::span_handle shared = make_span(d, s.shared, "shared-0", 0);
    std::atomic<int> running{threads};
    std::atomic<th::span_handle> handoff{0};  // a span made by one thread, closed by another
    std::atomic<std::uint64_t> emitted{0};

    auto worker = [&](int t) {
        for (int i = 0; i < rounds; ++i) {
            const auto tag = std::to_string(t * rounds + i);
            const th::span_handle outer = make_span(d, s.outer, "outer-" + tag, 0);
            d.enter(outer);
            const th::span_handle inner = make_span(d, s.inner, "inner-" + tag, d.current_span(), i);
            d.enter(inner);
            emit(d, s.event, "inner");
            d.exit(inner);
            // The parent closes while its child lives on: the child's context
            // still shows it.
            d.exit(outer);
            d.close(outer);
            d.enter(inner);
            emit(d, s.event, "inner");
            d.exit(inner);
            d.enter(shared);
            emit(d, s.event, "shared");
            d.exit(shared);
            emitted.fetch_add(3);
            // Hand the inner span over: whoever finds one closes it, the
            // other's included.
            const th::span_handle other = handoff.exchange(inner);
            if (other != 0)
                d.close(other);
            if (t == 0 && i % 3 == 0) {
                const model::value v{std::string("shared-") + tag};
                const th::field_ref r{"tag", v};
                d.record(shared, th::field_refs(&r, 1));
            }
        }
        running.fetch_sub(1);
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back(worker, t);
    for (auto& th : pool)
        th.join();
    CHECK(running.load() == 0);
    if (const th::span_handle last = handoff.exchange(0))
        d.close(last);
    d.close(shared);

    CHECK(layer->wrong.load() == 0);
    CHECK(layer->events.load() == emitted.load());
    CHECK(layer->spans.load() == 1 + 2 * threads * rounds);
    CHECK(layer->closes.load() == layer->spans.load());
    const auto st = d.statistics();
    CHECK(st.spans_live == 0);
    CHECK(st.anomalies == 0);
    CHECK(d.current_span() == 0);
}

TEST_CASE("a span closed by another thread while it is entered: later events skip it, nothing is read after recycling")
{
    th::dispatcher d(must_parse("trace"));
    auto layer = std::make_shared<checking_layer>();
    d.add_layer(layer);
    sites s;
    constexpr int rounds = 500;
    std::atomic<th::span_handle> mailbox{0};
    std::atomic<int> closed{0};
    std::atomic<bool> done{false};

    std::thread closer([&] {
        while (!done.load()) {
            const th::span_handle h = mailbox.exchange(0);
            if (h != 0) {
                d.close(h);
                closed.fetch_add(1);
            } else {
                std::this_thread::yield();
            }
        }
    });
    for (int i = 0; i < rounds; ++i) {
        const th::span_handle h = make_span(d, s.outer, "outer-" + std::to_string(i), 0);
        d.enter(h);
        mailbox.store(h);
        // Closed meanwhile or not: inside "outer" or outside any span, never
        // in a recycled node (the layer checks every span's name and tag).
        emit(d, s.racy, "outer");
        while (closed.load() != i + 1)
            std::this_thread::yield();
        // Closed now: the frame left on this thread is skipped.
        emit(d, s.event, "none");
        d.exit(h);  // a closed span: counted as an anomaly, nothing reaches the layers
    }
    done.store(true);
    closer.join();
    CHECK(layer->wrong.load() == 0);
    CHECK(layer->events.load() == 2 * rounds);
    CHECK(layer->closes.load() == rounds);
    CHECK(d.statistics().anomalies == rounds);
    CHECK(d.statistics().spans_live == 0);
    CHECK(d.current_span() == 0);
}

TEST_CASE("set_filter while threads emit: every event is either delivered or counted as filtered")
{
    th::dispatcher d(must_parse("info"));
    auto layer = std::make_shared<checking_layer>();
    d.add_layer(layer);
    sites s;
    const model::callsite debug_event = site(0x1005, model::callsite_kind::event, "debug event", {"message", "in"},
                                             model::level::debug);
    constexpr int threads = 3;
    constexpr int rounds = 4000;
    std::atomic<int> running{threads};
    auto worker = [&](int t) {
        for (int i = 0; i < rounds; ++i) {
            const th::span_handle h = make_span(d, s.outer, "outer-" + std::to_string(t * rounds + i), 0);
            d.enter(h);
            emit(d, debug_event, "outer");
            d.exit(h);
            d.close(h);
        }
        running.fetch_sub(1);
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back(worker, t);
    const th::filter debug = must_parse("debug"), info = must_parse("info");
    for (int flips = 0; running.load() != 0 && flips < 20000; ++flips) {
        d.set_filter(flips % 2 == 0 ? debug : info);
        std::this_thread::yield();
    }
    for (auto& th : pool)
        th.join();
    const auto st = d.statistics();
    CHECK(layer->wrong.load() == 0);
    CHECK(st.events + st.events_filtered == static_cast<std::uint64_t>(threads) * rounds);
    CHECK(st.events == layer->events.load());
    CHECK(st.spans_live == 0);
    CHECK(st.anomalies == 0);
}

TEST_CASE("counts stay exact with more threads than counter stripes, and across thread churn")
{
    // Per-thread counter stripes (host/src/thread_stripe.hpp): 12 threads at
    // once outnumber the exclusive stripes, so some share one; a second wave
    // of new threads takes over the stripes the first gave back at exit.
    th::dispatcher d(must_parse("trace"));
    auto layer = std::make_shared<checking_layer>();
    d.add_layer(layer);
    const sites s;
    constexpr int threads = 12;
    constexpr int per_thread = 3000;
    for (int wave = 0; wave < 2; ++wave) {
        std::latch all_started(threads);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&] {
                all_started.arrive_and_wait();  // all alive at once
                for (int i = 0; i < per_thread; ++i) {
                    const th::span_handle h = make_span(d, s.outer, "outer-" + std::to_string(i), 0);
                    d.enter(h);
                    emit(d, s.event, "outer");
                    d.exit(h);
                    d.close(h);
                }
            });
        for (auto& th : pool)
            th.join();
        const auto st = d.statistics();
        const auto expected = static_cast<std::uint64_t>(threads) * per_thread * (wave + 1);
        CHECK(st.events == expected);
        CHECK(st.spans_created == expected);
        CHECK(st.spans_live == 0);
        CHECK(st.events == layer->events.load());
    }
    CHECK(layer->wrong.load() == 0);
    CHECK(d.statistics().anomalies == 0);
}

TEST_CASE("more open spans than table slots, on several threads: every handle is found until it is closed")
{
    // 3 x 12,000 open at once against a 16,384-slot table: slots hold chains
    // that several threads push onto and unlink from at once.
    th::dispatcher d(must_parse("trace"));
    auto layer = std::make_shared<checking_layer>();
    d.add_layer(layer);
    const sites s;
    constexpr int threads = 3;
    constexpr int per_thread = 12000;
    auto worker = [&](int t) {
        std::vector<th::span_handle> open;
        open.reserve(per_thread);
        for (int i = 0; i < per_thread; ++i)
            open.push_back(make_span(d, s.outer, "outer-" + std::to_string(t * per_thread + i), 0));
        // Every one is still found: a child names it as parent, and it is entered.
        for (int i = 0; i < per_thread; i += 97) {
            const th::span_handle child = make_span(d, s.inner, "inner-" + std::to_string(i), open[i], i);
            d.enter(child);
            emit(d, s.event, "inner");
            d.exit(child);
            d.close(child);
        }
        // Closed in an order unlike the order of creation (odd ones first).
        for (int i = 1; i < per_thread; i += 2)
            d.close(open[i]);
        for (int i = 0; i < per_thread; i += 2)
            d.close(open[i]);
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back(worker, t);
    for (auto& th : pool)
        th.join();
    const auto st = d.statistics();
    CHECK(layer->wrong.load() == 0);
    CHECK(layer->closes.load() == layer->spans.load());
    CHECK(st.spans_live == 0);
    CHECK(st.anomalies == 0);
    CHECK(st.events == static_cast<std::uint64_t>(threads) * ((per_thread + 96) / 97));
}

TEST_CASE("span handles from threads' own blocks: each given once, in sequence on one thread, and counted")
{
    // A thread takes handles in blocks of its own, so that two threads
    // making spans do not share the counter's line or the table's lines.
    th::dispatcher d(must_parse("trace"));
    const sites s;
    std::vector<th::span_handle> first;
    for (int i = 0; i < 600; ++i)  // more than a block (512)
        first.push_back(make_span(d, s.outer, "outer-main", 0));
    for (std::size_t i = 1; i < first.size(); ++i)
        CHECK(first[i] == first[i - 1] + 1);  // one thread alone: in sequence, past a block's end too
    CHECK(first.front() != 0);

    constexpr int threads = 3;
    constexpr int per_thread = 1000;
    std::vector<std::vector<th::span_handle>> made(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                const th::span_handle h = make_span(d, s.outer, "outer-" + std::to_string(t), 0);
                made[static_cast<std::size_t>(t)].push_back(h);
                if (i % 2 == 0)
                    d.close(h);
            }
        });
    for (auto& th : pool)
        th.join();
    std::vector<th::span_handle> all = first;
    for (const auto& m : made)
        all.insert(all.end(), m.begin(), m.end());
    std::sort(all.begin(), all.end());
    CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
    CHECK(std::find(all.begin(), all.end(), th::span_handle{0}) == all.end());
    const auto st = d.statistics();
    CHECK(st.spans_created == all.size());
    CHECK(st.spans_live == first.size() + threads * per_thread / 2);
    // Every open one is still found (a child names it as its parent).
    const auto layer = std::make_shared<checking_layer>();
    d.add_layer(layer);
    for (const auto& m : made)
        for (std::size_t i = 1; i < m.size(); i += 2) {
            const th::span_handle child = make_span(d, s.inner, "inner-child", m[i]);
            d.close(child);
        }
    CHECK(layer->spans.load() == threads * per_thread / 2);
    CHECK(layer->wrong.load() == 0);
    CHECK(d.statistics().anomalies == 0);
    // A handle past every block given is not a span's: a follows-from cause
    // naming it is refused.
    const th::span_handle live = first.back();
    d.follows_from(live, all.back() + 10'000);
    CHECK(d.statistics().anomalies == 1);
}

TEST_CASE("a chain of spans deeper than the per-thread view cache: every span of every context is right")
{
    th::dispatcher d(must_parse("trace"));
    auto layer = std::make_shared<checking_layer>();
    d.add_layer(layer);
    const sites s;
    std::vector<th::span_handle> chain;
    th::span_handle parent = 0;
    for (int i = 0; i < 300; ++i) {
        parent = make_span(d, s.inner, "inner-" + std::to_string(i), parent, i);
        chain.push_back(parent);
        d.enter(parent);
    }
    emit(d, s.event, "inner");
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        d.exit(*it);
        d.close(*it);
    }
    CHECK(layer->events.load() == 1);
    CHECK(layer->spans.load() == 300);
    CHECK(layer->closes.load() == 300);
    CHECK(layer->wrong.load() == 0);
    CHECK(d.statistics().anomalies == 0);
}

namespace {

class counting_layer final : public th::layer {
public:
    void on_event(const th::event_view&) noexcept override { events.fetch_add(1); }
    std::atomic<std::uint64_t> events{0};
};

}  // namespace

// A plugin's call site is the receiver's object: once a plugin is unloaded,
// another call site may be made at the same address, with an id of the new
// plugin's choosing. The dispatcher's per-thread memo of filter answers must
// not hand the old call site's answer to the new one.
TEST_CASE("a call site at a reused address does not get the cached filter answer of the one before")
{
    th::dispatcher d(must_parse("warn,orders=trace"));
    auto layer = std::make_shared<counting_layer>();
    d.add_layer(layer);
    alignas(model::callsite) unsigned char storage[sizeof(model::callsite)];
    auto make = [&](std::string target) {
        auto* cs = new (storage) model::callsite(site(0x4242, model::callsite_kind::event, "ev", {"message"},
                                                      model::level::trace));
        cs->target = std::move(target);
        return cs;
    };
    const model::value msg{std::string("hello")};
    const th::field_ref values[] = {{"message", msg}};
    th::event_record ev;
    ev.values = values;

    model::callsite* orders = make("orders");
    CHECK(d.interest_in(*orders) == th::interest::always);  // its registration
    ev.site = orders;
    ev.plugin = "orders";
    d.event(ev);
    d.event(ev);
    CHECK(layer->events.load() == 2);  // a trace event of target "orders" passes
    orders->~callsite();

    SUBCASE("another plugin fakes the id at the same address, before its registration is seen")
    {
        model::callsite* evil = make("evil");
        ev.site = evil;
        ev.plugin = "evil";
        d.event(ev);
        CHECK(layer->events.load() == 2);
        CHECK(d.statistics().events_filtered == 1);
        evil->~callsite();
    }
    SUBCASE("the same plugin registers another call site under that id at the same address")
    {
        model::callsite* quiet = make("quiet");
        CHECK(d.interest_in(*quiet) == th::interest::never);
        ev.site = quiet;
        d.event(ev);
        CHECK(layer->events.load() == 2);
        CHECK(d.statistics().events_filtered == 1);
        quiet->~callsite();
    }
}

// A receiver hands the dispatcher a word per call site (event_record::
// site_word), where the dispatcher keeps its filter's answer for the next
// event. The word is the sender's, not the dispatcher's: an answer written
// under an earlier filter, by another dispatcher, or made up must not be
// taken.
TEST_CASE("a sender's site word gives the filter's answer only to the dispatcher and filter that wrote it")
{
    th::dispatcher a(must_parse("info"));
    th::dispatcher b(must_parse("warn"));  // the same filter generation as a's
    auto seen_a = std::make_shared<counting_layer>();
    auto seen_b = std::make_shared<counting_layer>();
    a.add_layer(seen_a);
    b.add_layer(seen_b);
    const model::callsite cs = site(0x5151, model::callsite_kind::event, "ev", {"message"}, model::level::info);
    CHECK(a.interest_in(cs) == th::interest::always);
    CHECK(b.interest_in(cs) == th::interest::never);
    const model::value msg{std::string("hello")};
    const th::field_ref values[] = {{"message", msg}};
    std::atomic<std::uint64_t> word{0};
    th::event_record ev;
    ev.site = &cs;
    ev.plugin = "orders";
    ev.values = values;
    ev.site_word = &word;

    a.event(ev);
    CHECK(seen_a->events.load() == 1);
    CHECK(word.load() != 0);  // stamped for the next event
    a.event(ev);
    CHECK(seen_a->events.load() == 2);

    b.event(ev);  // a's stamp: not b's answer
    CHECK(seen_b->events.load() == 0);
    CHECK(b.statistics().events_filtered == 1);
    a.event(ev);  // b stamped it last: not a's answer either
    CHECK(seen_a->events.load() == 3);

    a.set_filter(must_parse("warn"));
    a.event(ev);
    CHECK(seen_a->events.load() == 3);
    CHECK(a.statistics().events_filtered == 1);
    a.set_filter(must_parse("info"));
    a.event(ev);
    CHECK(seen_a->events.load() == 4);

    // A word no config of this process stamped, saying "never".
    word.store(std::uint64_t{0x3fff'ffff} << 2);
    a.event(ev);
    CHECK(seen_a->events.load() == 5);
    CHECK(a.statistics().events_filtered == 1);
}

// The per-thread memo of filter answers holds 32 call sites, two to a set.
// More hot call sites than that, events and spans interleaved and sent by
// two plugins (with and without a plugin key), make memos give way to each
// other all the time: every answer and every span's plugin must still be its
// own.
TEST_CASE("more hot call sites than the filter memo holds: each keeps its own answer and plugin")
{
    th::dispatcher d(must_parse("quiet=warn,loud=trace"));
    struct span_plugins final : th::layer {
        void on_new_span(th::span_context scope) noexcept override
        {
            seen.emplace_back(scope.back().site->name, std::string(scope.back().plugin));
        }
        void on_event(const th::event_view& ev) noexcept override { events.emplace_back(ev.site->name); }
        std::vector<std::pair<std::string, std::string>> seen;
        std::vector<std::string> events;
    };
    auto layer = std::make_shared<span_plugins>();
    d.add_layer(layer);
    constexpr int n = 40;
    std::vector<model::callsite> events, spans;
    for (int i = 0; i < n; ++i) {
        events.push_back(site(1000 + i, model::callsite_kind::event, "ev-" + std::to_string(i), {"message"}));
        events.back().target = i % 2 == 0 ? "loud" : "quiet";
        spans.push_back(site(2000 + i, model::callsite_kind::span, "sp-" + std::to_string(i), {}));
        spans.back().target = "loud";
    }
    for (int i = 0; i < n; ++i) {
        CHECK(d.interest_in(events[i]) == (i % 2 == 0 ? th::interest::always : th::interest::never));
        CHECK(d.interest_in(spans[i]) == th::interest::always);
    }
    const model::value msg{std::string("hello")};
    const th::field_ref values[] = {{"message", msg}};
    std::size_t filtered = 0;
    for (int round = 0; round < 4; ++round) {
        layer->seen.clear();
        layer->events.clear();
        const bool keyed = round % 2 == 1;
        for (int i = 0; i < n; ++i) {
            // Each site from one plugin and at once from the other: the
            // second finds the first's memo still there.
            for (const bool first : {(i + round) % 2 == 0, (i + round) % 2 != 0}) {
                th::event_record ev;
                ev.site = &events[i];
                ev.plugin = first ? "p1" : "p2";
                ev.plugin_key = keyed ? (first ? 101 : 102) : 0;
                ev.values = values;
                d.event(ev);
                filtered += i % 2;
                th::span_attrs a;
                a.site = &spans[i];
                a.plugin = first ? "p1" : "p2";
                a.plugin_key = keyed ? (first ? 101 : 102) : 0;
                d.close(d.new_span(a));
            }
        }
        CAPTURE(round);
        REQUIRE(layer->seen.size() == 2 * n);
        REQUIRE(layer->events.size() == n);
        for (int i = 0; i < n; ++i) {
            CAPTURE(i);
            const bool p1_first = (i + round) % 2 == 0;
            CHECK(layer->seen[2 * i].first == "sp-" + std::to_string(i));
            CHECK(layer->seen[2 * i].second == (p1_first ? "p1" : "p2"));
            CHECK(layer->seen[2 * i + 1].first == "sp-" + std::to_string(i));
            CHECK(layer->seen[2 * i + 1].second == (p1_first ? "p2" : "p1"));
        }
        for (int k = 0; k < n / 2; ++k) {
            CHECK(layer->events[2 * k] == "ev-" + std::to_string(2 * k));
            CHECK(layer->events[2 * k + 1] == "ev-" + std::to_string(2 * k));
        }
    }
    CHECK(d.statistics().events_filtered == filtered);
}

namespace {

// Keeps a copy of every new span's values, as the layers see them.
class copying_layer final : public th::layer {
public:
    void on_new_span(th::span_context scope) noexcept override
    {
        seen.push_back(*scope.back().fields);
        plugins.emplace_back(scope.back().plugin);
    }
    void on_event(const th::event_view&) noexcept override {}
    std::vector<model::field_values> seen;
    std::vector<std::string> plugins;
};

}  // namespace

// The dispatcher keeps a span's values packed in its node (a small span fits
// inline, a larger one in a buffer the node keeps when it is recycled).
// Every kind of value, names beyond the call site's first fifteen or not in
// it at all, texts whose length takes one, two and three bytes, a missing
// value and a repeated name: each comes back as the plugin sent it, in fresh
// nodes and in recycled ones that held something bigger or smaller before.
TEST_CASE("span values of every kind and size come back as sent, in fresh and recycled nodes")
{
    th::dispatcher d(must_parse("trace"));
    auto layer = std::make_shared<copying_layer>();
    d.add_layer(layer);

    std::vector<std::string> names;
    for (int i = 0; i < 20; ++i)
        names.push_back("f" + std::to_string(i));
    const model::callsite wide = site(0x2001, model::callsite_kind::span, "wide", names);
    const model::callsite small = site(0x2002, model::callsite_kind::span, "small", {"k"});

    std::vector<model::value> values = {
        model::value(true),
        model::value(std::int64_t{-5}),
        model::value(std::uint64_t{1} << 63),
        model::value(static_cast<model::i128>(-1) << 100),
        model::value(static_cast<model::u128>(1) << 127),
        model::value(-0.0),
        model::value(std::string()),
        model::value(std::string(127, 'a')),
        model::value(std::string(128, 'b')),
        model::value(model::debug_text{std::string(300, 'c')}),
        model::value(model::error_chain{{"outer", std::string(70000, 'd'), ""}}),
        model::value(std::string("x")),
        model::value(std::uint64_t{7}),
        model::value(false),
        model::value(std::string("fifteenth")),
        model::value(std::string("beyond the nibble")),
        model::value(std::int64_t{16}),
        model::value(1.5),
    };
    std::vector<th::field_ref> refs;
    for (std::size_t i = 0; i < values.size(); ++i)
        refs.push_back({names[i], values[i]});
    const model::value extra{std::string("not declared")};
    const model::value first{std::int64_t{1}};
    const model::value again{std::int64_t{2}};
    refs.push_back({"undeclared", extra});
    refs.push_back({"f19", {}});  // no value: an empty text
    refs.push_back({"f18", first});
    refs.push_back({"f18", again});  // a later duplicate replaces the earlier

    model::field_values expected;
    for (std::size_t i = 0; i < values.size(); ++i)
        expected.emplace_back(names[i], values[i]);
    expected.emplace_back("undeclared", extra);
    expected.emplace_back("f19", model::value(std::string()));
    expected.emplace_back("f18", again);

    const model::value k{std::int64_t{42}};
    const th::field_ref small_refs[] = {{"k", k}};
    const model::field_values small_expected = {{"k", k}};

    auto open = [&](const model::callsite* cs, th::field_refs v) {
        th::span_attrs a;
        a.site = cs;
        a.plugin = "worker";
        a.values = v;
        return d.new_span(a);
    };

    // Enough spans that later rounds reuse the nodes of earlier ones, big
    // after small and small after big.
    constexpr int per_round = 600;
    for (int round = 0; round < 4; ++round) {
        const bool big = round % 2 == 0;
        layer->seen.clear();
        std::vector<th::span_handle> open_spans;
        for (int i = 0; i < per_round; ++i)
            open_spans.push_back(big ? open(&wide, refs) : open(&small, small_refs));
        REQUIRE(layer->seen.size() == per_round);
        int wrong = 0;
        for (const auto& f : layer->seen)
            if (!same(f, big ? expected : small_expected))
                ++wrong;
        CHECK(wrong == 0);
        for (auto h : open_spans)
            d.close(h);
    }
    CHECK(layer->plugins.back() == "worker");

    // A span without a call site still gets a handle (and is counted as an
    // anomaly); nothing is handed to layers.
    const std::size_t before = layer->seen.size();
    const auto h = open(nullptr, small_refs);
    CHECK(h != 0);
    CHECK(layer->seen.size() == before);
    d.close(h);
    CHECK(d.statistics().anomalies == 1);
    CHECK(d.statistics().spans_created == 4 * per_round + 1);
}

// A name given twice keeps its first place and its last value, whether the
// call site declares it once (the value's place is found by its index),
// twice (two indexes share the name), or not at all; values in another
// order than the call site's and spans of differing shapes one after the
// other (so each reuses what the one before left) change nothing.
TEST_CASE("span values: a repeated name keeps its first place and its last value")
{
    th::dispatcher d(must_parse("trace"));
    auto layer = std::make_shared<copying_layer>();
    d.add_layer(layer);

    const model::callsite declared = site(0x2101, model::callsite_kind::span, "declared", {"a", "b", "c"});
    const model::callsite twice = site(0x2102, model::callsite_kind::span, "twice", {"a", "b", "a"});
    const model::value v1{std::int64_t{1}}, v2{std::string("two")}, v3{3.5}, v4{std::string("four, longer than inline")},
        v5{std::uint64_t{5}};

    struct shape {
        const model::callsite* site;
        std::vector<th::field_ref> refs;
        model::field_values expected;
    };
    const std::vector<shape> shapes = {
        {&declared, {{"a", v1}, {"b", v2}, {"a", v3}, {"c", v4}, {"b", v5}}, {{"a", v3}, {"b", v5}, {"c", v4}}},
        {&declared, {{"c", v1}, {"a", v2}, {"c", v3}}, {{"c", v3}, {"a", v2}}},
        {&declared, {{"x", v1}, {"a", v2}, {"x", v3}, {"a", v4}}, {{"x", v3}, {"a", v4}}},
        {&twice, {{"a", v1}, {"b", v2}, {"a", v3}}, {{"a", v3}, {"b", v2}}},
        {&twice, {{"b", v5}, {"a", v4}, {"a", v1}, {"b", v2}}, {{"b", v2}, {"a", v1}}},
        {&declared, {{"a", v1}, {"b", v2}, {"c", v3}}, {{"a", v1}, {"b", v2}, {"c", v3}}},
    };
    for (int round = 0; round < 3; ++round)
        for (std::size_t i = 0; i < shapes.size(); ++i) {
            CAPTURE(round);
            CAPTURE(i);
            th::span_attrs a;
            a.site = shapes[i].site;
            a.plugin = "worker";
            a.values = shapes[i].refs;
            layer->seen.clear();
            const auto h = d.new_span(a);
            REQUIRE(layer->seen.size() == 1);
            CHECK(same(layer->seen.front(), shapes[i].expected));
            d.close(h);
        }
}
