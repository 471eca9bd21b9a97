// The orders example plugin (plugins/orders) driven like the example hosts
// do: orders whose spans stay open across ticks and across a hot reload.
#include "sender_test.hpp"

#include <example_app.h>

#include <dlfcn.h>

#include <map>
#include <type_traits>

using namespace tt::model;

namespace {

constexpr std::size_t npos = static_cast<std::size_t>(-1);

// The workflow's clock. Order k arrives in the k-th tick (one a tick, from
// 1); every third order's first payment is declined, which costs it a tick.
bool declined_once(std::uint64_t k)
{
    return k % 3 == 0;
}
std::uint64_t shipped_in(std::uint64_t k)
{
    return k + (declined_once(k) ? 5 : 4);
}
std::uint64_t delivered_in(std::uint64_t k)
{
    return k + (declined_once(k) ? 6 : 5);
}

const value* field(const field_values& values, const std::string& name)
{
    for (const auto& [n, v] : values)
        if (n == name)
            return &v;
    return nullptr;
}

std::string text_of(const value* v)
{
    const auto* s = v ? std::get_if<std::string>(v) : nullptr;
    return s ? *s : std::string("<not a string>");
}

// One span as the host saw it; indexes are positions in the event stream.
struct span_trace {
    std::string name;  // its call site's name: "order", "charge", ...
    std::uint64_t id = 0;
    parent_mode parent = parent_mode::contextual;
    std::uint64_t parent_id = 0;
    field_values created_with;
    std::vector<std::string> statuses;  // "status" values recorded, in order
    std::vector<std::pair<std::uint64_t, std::size_t>> follows;  // (cause, index)
    std::size_t opened = npos;
    std::size_t closed = npos;  // its last handle dropped
    int handles = 0;
};

struct event_trace {
    level lvl = level::info;
    std::string message;
    std::uint64_t in = 0;  // the explicit parent, else the span entered at the time
    field_values values;
    std::size_t at = 0;
};

// An index over a recorded stream: spans by id (a span restored after a
// reload is the same entry as before it), events with the span they are in.
struct workflow_view {
    std::map<std::uint64_t, span_trace> spans;
    std::vector<event_trace> events;

    explicit workflow_view(const std::vector<event>& stream)
    {
        std::map<std::uint64_t, callsite> sites;
        std::vector<std::uint64_t> entered;
        for (std::size_t i = 0; i < stream.size(); ++i) {
            const event& e = stream[i];
            if (const auto* c = std::get_if<new_callsite>(&e)) {
                sites[c->site.id] = c->site;
            } else if (const auto* s = std::get_if<new_span>(&e)) {
                span_trace& t = spans[s->id];
                t = span_trace{sites.at(s->callsite_id).name, s->id, s->parent, s->parent_id, s->values, {}, {}, i};
                t.handles = 1;
            } else if (const auto* r = std::get_if<values_recorded>(&e)) {
                if (const value* v = field(r->values, "status"))
                    spans[r->id].statuses.push_back(text_of(v));
            } else if (const auto* f = std::get_if<follows_from>(&e)) {
                spans[f->id].follows.emplace_back(f->cause, i);
            } else if (const auto* en = std::get_if<span_entered>(&e)) {
                entered.push_back(en->id);
            } else if (std::holds_alternative<span_exited>(e)) {
                REQUIRE(!entered.empty());
                entered.pop_back();
            } else if (const auto* c = std::get_if<span_cloned>(&e)) {
                ++spans[c->id].handles;
            } else if (const auto* d = std::get_if<span_dropped>(&e)) {
                if (--spans[d->id].handles == 0)
                    spans[d->id].closed = i;
            } else if (const auto* ev = std::get_if<new_event>(&e)) {
                event_trace t;
                t.lvl = sites.at(ev->callsite_id).level;
                t.message = text_of(field(ev->values, "message"));
                t.in = ev->parent == parent_mode::explicit_span ? ev->parent_id
                       : ev->parent == parent_mode::root || entered.empty() ? 0
                                                                            : entered.back();
                t.values = ev->values;
                t.at = i;
                events.push_back(std::move(t));
            }
        }
    }

    std::vector<const span_trace*> named(const std::string& name) const
    {
        std::vector<const span_trace*> out;
        for (const auto& [id, s] : spans)
            if (s.name == name)
                out.push_back(&s);
        return out;
    }
    // The order span whose "id" field is k.
    const span_trace* order(std::uint64_t k) const
    {
        for (const span_trace* s : named("order"))
            if (const value* v = field(s->created_with, "id"); v && same_value(*v, value(k)))
                return s;
        return nullptr;
    }
    // The stage spans under an order, oldest first (ids grow).
    std::vector<const span_trace*> steps_of(std::uint64_t order_span) const
    {
        std::vector<const span_trace*> out;
        for (const auto& [id, s] : spans)
            if (s.parent == parent_mode::explicit_span && s.parent_id == order_span)
                out.push_back(&s);
        return out;
    }
    const event_trace* event_named(const std::string& message, std::uint64_t in) const
    {
        for (const auto& e : events)
            if (e.message == message && e.in == in)
                return &e;
        return nullptr;
    }
};

// Ticks the plugin and remembers where each tick's events start and end, so
// that a stream index can be turned back into the tick it happened in.
struct tick_clock {
    struct window {
        std::uint64_t tick;
        std::size_t begin, end;
    };
    std::vector<window> windows;

    void run(tt::test::loaded_plugin& p, const tt::test::recording_host& host, std::uint64_t from, std::uint64_t to)
    {
        auto& tick = p.get<std::remove_pointer_t<example_tick_fn>>(EXAMPLE_SYMBOL_TICK);
        for (std::uint64_t t = from; t <= to; ++t) {
            const std::size_t begin = host.events().size();
            tick(t);
            windows.push_back({t, begin, host.events().size()});
        }
    }
    // 0 for an index outside every tick (start, stop, a reload).
    std::uint64_t tick_of(std::size_t index) const
    {
        for (const auto& w : windows)
            if (index >= w.begin && index < w.end)
                return w.tick;
        return 0;
    }
    std::size_t end_of(std::uint64_t tick) const
    {
        for (const auto& w : windows)
            if (w.tick == tick)
                return w.end;
        FAIL("no tick " << tick);
        return 0;
    }
};

std::string status(tt::test::loaded_plugin& p)
{
    const char* answer = p.get<std::remove_pointer_t<example_handle_fn>>(EXAMPLE_SYMBOL_HANDLE)("status");
    return answer ? answer : "<null>";
}

std::string text(const std::vector<std::uint8_t>& bytes)
{
    return std::string(bytes.begin(), bytes.end());
}

bool restore(tt::test::loaded_plugin& p, const std::string& state)
{
    return p.lib->restore_state(std::vector<std::uint8_t>(state.begin(), state.end()));
}

// Order k's whole life, when it lies within the clock: opened in tick k,
// one stage span a tick under it, closed in the tick after shipping.
void check_order_life(const workflow_view& w, const tick_clock& clock, std::uint64_t k)
{
    CAPTURE(k);
    const span_trace* o = w.order(k);
    REQUIRE(o != nullptr);
    CHECK(o->parent == parent_mode::root);
    CHECK(clock.tick_of(o->opened) == k);
    CHECK(w.event_named("order delivered", o->id) != nullptr);
    CHECK(clock.tick_of(o->closed) == delivered_in(k));
    if (declined_once(k))
        CHECK(o->statuses ==
              std::vector<std::string>{"validated", "payment declined", "paid", "packed", "shipped", "delivered"});
    else
        CHECK(o->statuses == std::vector<std::string>{"validated", "paid", "packed", "shipped", "delivered"});

    std::vector<std::string> names;
    std::uint64_t expected_tick = k + 1;
    for (const span_trace* s : w.steps_of(o->id)) {
        names.push_back(s->name);
        CHECK(clock.tick_of(s->opened) == expected_tick++);
        CHECK(s->closed != npos);
        CHECK(s->closed < o->closed);
    }
    if (declined_once(k))
        CHECK(names == std::vector<std::string>{"validate", "charge", "charge", "pack", "ship"});
    else
        CHECK(names == std::vector<std::string>{"validate", "charge", "pack", "ship"});
}

// A declined payment: an ERROR inside the declined attempt carrying the
// cause chain, the attempt kept open until the retry (a tick later) links
// to it, then closed.
void check_declined_charge(const workflow_view& w, const tick_clock& clock, std::uint64_t k)
{
    CAPTURE(k);
    const span_trace* o = w.order(k);
    REQUIRE(o != nullptr);
    const auto steps = w.steps_of(o->id);
    REQUIRE(steps.size() >= 3);
    const span_trace& declined = *steps[1];
    const span_trace& retry = *steps[2];
    REQUIRE(declined.name == "charge");
    REQUIRE(retry.name == "charge");
    CHECK(same_value(*field(declined.created_with, "attempt"), value(std::uint64_t{1})));
    CHECK(same_value(*field(retry.created_with, "attempt"), value(std::uint64_t{2})));

    const event_trace* failed = w.event_named("payment failed, retrying next tick", declined.id);
    REQUIRE(failed != nullptr);
    CHECK(failed->lvl == level::error);
    const value* err = field(failed->values, "error");
    REQUIRE(err != nullptr);
    CHECK(same_value(*err, value(error_chain{{"card charge failed", "gateway timeout"}})));

    REQUIRE(retry.follows.size() == 1);
    CHECK(retry.follows[0].first == declined.id);
    CHECK(clock.tick_of(retry.opened) == clock.tick_of(declined.opened) + 1);
    CHECK(declined.closed > retry.follows[0].second);  // still open when linked to
    CHECK(clock.tick_of(declined.closed) == clock.tick_of(retry.opened));
}

}  // namespace

TEST_CASE("orders: every tick opens an order that moves one stage a tick and closes when delivered")
{
    if (tt::test::plugin_path("orders").empty()) {
        MESSAGE("examples are disabled: skipped");
        return;
    }
    auto plugin = tt::test::open_fresh_plugin("orders");
    CHECK(plugin.lib->description().name == "orders");
    CHECK(plugin.lib->description().version == "0.1.0");
    tt::test::recording_host host;
    const tt_host api = host.api();
    REQUIRE(std::holds_alternative<std::monostate>(plugin.lib->start(api)));
    REQUIRE(status(plugin) == "0 open orders, 0 shipped");  // a fresh image

    constexpr std::uint64_t ticks = 10;
    tick_clock clock;
    clock.run(plugin, host, 1, ticks);
    plugin.lib->stop();
    CHECK(host.errors().empty());
    const workflow_view w(host.events());

    // One order a tick, a root span each, open until its delivery.
    REQUIRE(w.named("order").size() == ticks);
    std::uint64_t shipped = 0;
    for (std::uint64_t k = 1; k <= ticks; ++k) {
        if (shipped_in(k) <= ticks)
            ++shipped;
        if (delivered_in(k) <= ticks) {
            check_order_life(w, clock, k);
        } else {
            const span_trace* o = w.order(k);
            REQUIRE(o != nullptr);
            CHECK(o->closed == npos);  // stop does not close open orders
        }
    }
    CHECK(status(plugin) == "5 open orders, " + std::to_string(shipped) + " shipped");

    // After each tick, as many orders are open as the workflow implies.
    for (std::uint64_t t = 1; t <= ticks; ++t) {
        CAPTURE(t);
        std::size_t expected = 0;
        for (std::uint64_t k = 1; k <= t; ++k)
            expected += delivered_in(k) > t ? 1 : 0;
        const std::size_t end = clock.end_of(t);
        std::size_t open = 0;
        for (const span_trace* o : w.named("order"))
            open += o->opened < end && (o->closed == npos || o->closed >= end) ? 1 : 0;
        CHECK(open == expected);
    }

    // Every stage span hangs under its order.
    for (const char* name : {"validate", "charge", "pack", "ship"})
        for (const span_trace* s : w.named(name)) {
            CAPTURE(name);
            CHECK(s->parent == parent_mode::explicit_span);
            CHECK(w.spans.at(s->parent_id).name == "order");
        }

    // Orders 3 and 6 had their payment declined once (9 has not paid yet).
    std::size_t errors = 0;
    for (const auto& e : w.events)
        errors += e.lvl == level::error ? 1 : 0;
    CHECK(errors == 2);
    check_declined_charge(w, clock, 3);
    check_declined_charge(w, clock, 6);
}

TEST_CASE("orders: a reload into a rebuilt plugin continues the open orders in their original spans")
{
    if (tt::test::plugin_path("orders").empty()) {
        MESSAGE("examples are disabled: skipped");
        return;
    }
    tt::test::recording_host host;  // one host across the reload, like one lineage
    const tt_host api = host.api();
    tick_clock clock;
    std::vector<std::uint8_t> saved;
    std::string old_path;
    {
        auto before = tt::test::open_fresh_plugin("orders");
        old_path = before.path;
        REQUIRE(std::holds_alternative<std::monostate>(before.lib->start(api)));
        REQUIRE(status(before) == "0 open orders, 0 shipped");
        // Tick 8 declines order 6's payment: its retry comes after the reload.
        clock.run(before, host, 1, 8);
        CHECK(status(before) == "6 open orders, 4 shipped");
        // What a host does on a reload: stop, save, unload.
        before.lib->stop();
        REQUIRE(before.lib->save_state(saved));
        const std::string state = text(saved);
        CHECK(state.rfind("orders-state 1\nshipped 4\nnext 9\norder 3 ", 0) == 0);
        CHECK(state.find("\norder 6 carol 1 1250 charge 1 ") != std::string::npos);
        CHECK(state.size() >= 4);
        CHECK(state.substr(state.size() - 4) == "end\n");
    }
    // Nothing of the old build pins it in memory (a thread_local with a
    // destructor, or a unique symbol, would): the old image really goes.
    // ASan's runtime keeps dlclose'd images mapped, so only without it.
#if !defined(__SANITIZE_ADDRESS__)
    void* still_there = dlopen(old_path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    CHECK(still_there == nullptr);
    if (still_there)
        dlclose(still_there);
#endif

    const std::size_t reload_at = host.events().size();
    auto after = tt::test::open_fresh_plugin("orders_v2");
    CHECK(after.lib->description().version == "0.2.0");
    REQUIRE(after.lib->restore_state(saved));
    REQUIRE(std::holds_alternative<std::monostate>(after.lib->start(api)));
    CHECK(status(after) == "6 open orders, 4 shipped");
    clock.run(after, host, 9, 13);
    CHECK(status(after) == "5 open orders, 8 shipped");
    after.lib->stop();
    std::vector<std::uint8_t> saved_again;
    REQUIRE(after.lib->save_state(saved_again));
    CHECK(text(saved_again).rfind("orders-state 1\nshipped 8\nnext 14\n", 0) == 0);

    CHECK(host.errors().empty());
    const workflow_view w(host.events());
    const event_trace* started = nullptr;
    for (const auto& e : w.events)
        if (e.message == "orders plugin started" && e.at > reload_at)
            started = &e;
    REQUIRE(started != nullptr);
    CHECK(same_value(*field(started->values, "restored_orders"), value(std::uint64_t{6})));
    CHECK(same_value(*field(started->values, "version"), value(std::string("0.2.0"))));

    // Every order has exactly one span: none was opened anew for an order
    // that existed before the reload...
    REQUIRE(w.named("order").size() == 13);
    for (std::uint64_t k = 1; k <= 13; ++k) {
        CAPTURE(k);
        const span_trace* o = w.order(k);
        REQUIRE(o != nullptr);
        CHECK((o->opened < reload_at) == (k <= 8));
        const event_trace* greeting = nullptr;
        for (const auto& e : w.events)
            if (e.in == o->id && e.message.rfind("order received", 0) == 0)
                greeting = &e;
        REQUIRE(greeting != nullptr);
        CHECK(greeting->message == (k <= 8 ? "order received" : "order received (v2)"));
    }
    // ...and the orders open across it went on in their original spans, in
    // the new build, until their delivery closed them.
    for (std::uint64_t k = 3; k <= 8; ++k) {
        check_order_life(w, clock, k);
        CHECK(w.order(k)->closed > reload_at);
        for (const span_trace* s : w.steps_of(w.order(k)->id))
            CHECK((s->opened > reload_at) == (clock.tick_of(s->opened) > 8));
    }
    // Order 6's payment, declined before the reload, is retried after it: the
    // declined attempt's span crossed the reload too.
    check_declined_charge(w, clock, 6);
}

TEST_CASE("orders: save hands the open spans over without closing them")
{
    if (tt::test::plugin_path("orders").empty()) {
        MESSAGE("examples are disabled: skipped");
        return;
    }
    auto plugin = tt::test::open_fresh_plugin("orders");
    tt::test::recording_host host;
    const tt_host api = host.api();
    REQUIRE(std::holds_alternative<std::monostate>(plugin.lib->start(api)));
    tick_clock clock;
    clock.run(plugin, host, 1, 5);  // order 3's declined attempt is open too
    // Saved while still started (a host saves after stop, when nothing could
    // be sent anyway): the handles are given up, not dropped.
    const std::size_t before = host.events().size();
    std::vector<std::uint8_t> saved;
    REQUIRE(plugin.lib->save_state(saved));
    CHECK(host.events().size() == before);
    CHECK(status(plugin) == "0 open orders, 1 shipped");  // the orders went into the state
    plugin.lib->stop();
    const workflow_view w(host.events());
    for (std::uint64_t k = 1; k <= 5; ++k)
        CHECK(w.order(k)->closed == npos);
    CHECK(w.steps_of(w.order(3)->id)[1]->closed == npos);
    CHECK(text(saved).find(" charge 1 ") != std::string::npos);
}

TEST_CASE("orders: restore refuses malformed state and leaves no open orders")
{
    if (tt::test::plugin_path("orders").empty()) {
        MESSAGE("examples are disabled: skipped");
        return;
    }
    auto plugin = tt::test::open_fresh_plugin("orders");
    const std::string head = "orders-state 1\nshipped 5\nnext 8\n";
    const std::string good =
        head + "order 6 bob 2 2500 charge 1 41 42\norder 7 carol 1 1250 validate 0 43 0\nend\n";
    REQUIRE(restore(plugin, good));
    CHECK(status(plugin) == "2 open orders, 5 shipped");
    REQUIRE(restore(plugin, head + "end\n"));
    CHECK(status(plugin) == "0 open orders, 5 shipped");

    const std::vector<std::string> bad = {
        "",
        "garbage",
        "orders-state 2\nshipped 5\nnext 8\nend\n",
        head,                                                     // no end: cut short
        head + "end",                                             // unterminated line
        head + "end\nend\n",                                      // something after the end
        head + "order 6 bob 2 2500 charge 1 41 42\n",             // cut short after an order
        head + "order 6 bob 2 2500 teleport 1 41 42\nend\n",      // unknown stage
        head + "order 6 bob 2 2500 done 0 41 0\nend\n",           // never saved
        head + "order 6 Bob 2 2500 charge 1 41 42\nend\n",        // not a customer name
        head + "order 6 bob 2 2500 charge 1 41\nend\n",           // a token short
        head + "order 6 bob 2 2500 charge 1 41 42 7\nend\n",      // a token too many
        head + "order 6 bob  2 2500 charge 1 41 42\nend\n",       // two spaces
        head + "order 6 bob 2 2500 charge 1 41 42 \nend\n",       // trailing space
        head + "order 6 bob -2 2500 charge 1 41 42\nend\n",       // negative
        head + "order 6 bob 0 0 charge 1 41 42\nend\n",           // no items
        head + "order 6 bob 2 25x0 charge 1 41 42\nend\n",        // not a number
        head + "order 6 bob 2 99999999999999999999999 charge 1 41 42\nend\n",  // overflow
        head + "order 8 bob 2 2500 charge 1 41 42\nend\n",        // not below next
        head + "order 0 bob 2 2500 charge 1 41 42\nend\n",        // no order 0
        head + "order 6 bob 2 2500 charge 1 41 42\norder 6 bob 2 2500 pack 1 44 0\nend\n",  // twice
        head + "order 7 carol 1 1250 pack 0 43 44\nend\n",        // a declined attempt outside charge
        "orders-state 1\r\nshipped 5\r\nnext 8\r\nend\r\n",       // CRLF
        "orders-state 1\nnext 8\nshipped 5\nend\n",               // out of order
    };
    for (const auto& state : bad) {
        CAPTURE(state);
        REQUIRE(restore(plugin, good));
        CHECK_FALSE(restore(plugin, state));
        CHECK(status(plugin) == "0 open orders, 0 shipped");
    }

    // A refused state leaves the plugin as freshly loaded: it starts with no
    // orders and numbers new ones from 1.
    tt::test::recording_host host;
    const tt_host api = host.api();
    REQUIRE(std::holds_alternative<std::monostate>(plugin.lib->start(api)));
    tick_clock clock;
    clock.run(plugin, host, 1, 1);
    plugin.lib->stop();
    const workflow_view w(host.events());
    REQUIRE(w.named("order").size() == 1);
    CHECK(w.order(1) != nullptr);
    CHECK(w.spans.count(41) == 0);
}

TEST_CASE("orders: example_handle answers status requests and nothing else")
{
    if (tt::test::plugin_path("orders").empty()) {
        MESSAGE("examples are disabled: skipped");
        return;
    }
    auto plugin = tt::test::open_fresh_plugin("orders");
    auto& handle = plugin.get<std::remove_pointer_t<example_handle_fn>>(EXAMPLE_SYMBOL_HANDLE);
    REQUIRE(restore(plugin, "orders-state 1\nshipped 12\nnext 8\norder 7 carol 1 1250 pack 0 43 0\nend\n"));
    CHECK(std::string(handle("status")) == "1 open order, 12 shipped");
    const std::string unknown = handle("reboot");
    CHECK(unknown.find("status") != std::string::npos);
    CHECK(std::string(handle(nullptr)) == unknown);
}
