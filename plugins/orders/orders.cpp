// orders: the C++ example plugin, an order workflow whose spans outlive a
// tick and survive a hot reload. Copy it to start a plugin of your own: it
// needs nothing but <tracetunnel/trace.hpp> (and example_app.h, the example
// host's interface).
//
// Every tick (example_tick) a new order arrives and each open order moves on
// one stage: validate -> charge -> pack -> ship -> delivered. An order is an
// "order" span, open from arrival to delivery, with a span per stage under
// it. Every third order's first payment is declined; the retry a tick later
// follows from that attempt. A reload carries the open orders over, spans
// included (TT_PLUGIN_STATE): rebuild with -DORDERS_VERSION='"0.2.0"'
// -DORDERS_GREETING='"order received (v2)"' while tt-host runs it.
#define TT_TARGET "orders"
#include <tracetunnel/trace.hpp>

#include "example_app.h"

#include <array>
#include <charconv>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#ifndef ORDERS_GREETING
#define ORDERS_GREETING "order received"
#endif
#ifndef ORDERS_VERSION
#define ORDERS_VERSION "0.1.0"
#endif

using namespace tt::literals;

namespace {

// What an order's next tick does; `done` orders leave the table.
enum class stage { validate, charge, pack, ship, deliver, done };
constexpr std::array<const char*, 5> stage_names = {"validate", "charge", "pack", "ship", "deliver"};

struct order {
    std::uint64_t id = 0;
    std::string customer;
    std::uint64_t items = 0;
    std::uint64_t total_cents = 0;  // integer cents: exact in the saved text
    stage next = stage::validate;
    std::uint64_t declined = 0;  // payment attempts declined so far
    tt::span span;               // "order", open until delivery
    tt::span declined_charge;    // the declined attempt, kept until its retry links to it

    double total() const { return static_cast<double>(total_cents) / 100.0; }
};

// Globals stay put between the host's calls; a reload carries them over
// through save_state/restore_state below.
struct {
    // The host calls one entry point at a time per instance; the lock costs
    // next to nothing and makes that an assumption nobody has to remember.
    std::mutex mutex;
    std::vector<order> open;  // oldest first
    std::uint64_t next_id = 1;
    std::uint64_t shipped = 0;
} shop;

// The "order" call site's field names, in its order: a span adopted with
// them after a reload still accepts record("status"_f = ...).
constexpr const auto& order_fields = tt::fields<"id", "customer", "items", "status">;

constexpr std::array<const char*, 4> customers = {"alice", "bob", "carol", "dave"};

void receive(std::uint64_t tick)
{
    order o;
    o.id = shop.next_id++;
    o.customer = customers[tick % customers.size()];
    o.items = tick % 3 + 1;
    o.total_cents = o.items * 1250;
    // tt::root: an order outlives the call that created it, so it is nobody's child.
    o.span = TT_INFO_SPAN("order", tt::root, "id"_f = o.id, "customer"_f = o.customer, "items"_f = o.items,
                          "status"_f = tt::empty);
    TT_INFO(ORDERS_GREETING, tt::parent(o.span), "total"_f = o.total(), "currency"_f = "EUR");
    shop.open.push_back(std::move(o));
}

// A stage's span names its order as parent explicitly: between ticks no
// span is current on this thread. It is entered while the stage works, so
// the stage's events land in it without saying so.
void validate(order& o)
{
    auto step = TT_INFO_SPAN("validate", tt::parent(o.span), "items"_f = o.items);
    auto entered = step.enter();
    o.span.record("status"_f = "validated");
    TT_DEBUG("address and stock checked", "in_stock"_f = true);
    o.next = stage::charge;
}

// The payment gateway declines the first attempt of every third order,
// giving its own failure as the cause.
void call_gateway(const order& o)
{
    if (o.id % 3 != 0 || o.declined > 0)
        return;
    try {
        throw std::runtime_error("gateway timeout");
    } catch (...) {
        std::throw_with_nested(std::runtime_error("card charge failed"));
    }
}

void charge(order& o)
{
    const std::uint64_t attempt = o.declined + 1;
    auto step = TT_INFO_SPAN("charge", tt::parent(o.span), "attempt"_f = attempt, "amount"_f = o.total(),
                             "outcome"_f = tt::empty);
    // A retry is caused by the declined attempt. A link needs both spans
    // open, hence the declined one was kept until now; then it may close.
    step.follows_from(o.declined_charge);  // no-op on a first attempt: that handle is empty
    o.declined_charge = tt::span();
    auto entered = step.enter();
    try {
        call_gateway(o);
    } catch (const std::exception& e) {
        step.record("outcome"_f = "declined");
        o.span.record("status"_f = "payment declined");
        TT_ERROR("payment failed, retrying next tick", "error"_f = tt::error(e), "attempt"_f = attempt);
        ++o.declined;
        o.declined_charge = std::move(step);
        return;
    }
    step.record("outcome"_f = "paid");
    o.span.record("status"_f = "paid");
    TT_INFO("payment accepted", "amount"_f = o.total(), "currency"_f = "EUR");
    o.next = stage::pack;
}

void pack(order& o)
{
    auto step = TT_INFO_SPAN("pack", tt::parent(o.span), "boxes"_f = (o.items + 1) / 2);
    auto entered = step.enter();
    o.span.record("status"_f = "packed");
    TT_DEBUG("packed", "items"_f = o.items, "weight_g"_f = 400 * o.items);
    o.next = stage::ship;
}

void ship(order& o)
{
    char tracking[32];
    std::snprintf(tracking, sizeof tracking, "PP%06" PRIu64, o.id);
    auto step = TT_INFO_SPAN("ship", tt::parent(o.span), "carrier"_f = "parcelpost");
    auto entered = step.enter();
    o.span.record("status"_f = "shipped");
    TT_INFO("handed to carrier", "tracking"_f = tracking);
    ++shop.shipped;
    o.next = stage::deliver;
}

void deliver(order& o)
{
    o.span.record("status"_f = "delivered");
    TT_INFO("order delivered", tt::parent(o.span));
    o.span = tt::span();  // its last handle: the host closes the order span now
    o.next = stage::done;
}

void advance(order& o)
{
    switch (o.next) {
    case stage::validate: validate(o); break;
    case stage::charge: charge(o); break;
    case stage::pack: pack(o); break;
    case stage::ship: ship(o); break;
    case stage::deliver: deliver(o); break;
    case stage::done: break;
    }
}

bool on_start()
{
    std::lock_guard lock(shop.mutex);
    TT_INFO("orders plugin started", "version"_f = ORDERS_VERSION, "restored_orders"_f = shop.open.size(),
            "shipped"_f = shop.shipped);
    return true;
}

// Open orders stay open: on a reload save_state hands their spans on to the
// next build (a host that unloads for good closes what a plugin left open).
void on_stop()
{
    std::lock_guard lock(shop.mutex);
    TT_INFO("orders plugin stopping", "open_orders"_f = shop.open.size(), "shipped"_f = shop.shipped);
}

// ---------------------------------------------------------------------------
// The state across a reload, as text (readable with cat). Every line ends in
// '\n', its tokens are separated by one space:
//   orders-state 1
//   shipped <count>
//   next <next order id>
//   order <id> <customer> <items> <total cents> <stage> <declined> <order span> <declined charge span or 0>
//   end
// The host calls save after stop, restore before start.

// Formats one line. Not std::to_string: libstdc++'s inline version has a
// static table that becomes an STB_GNU_UNIQUE symbol, and one such symbol
// makes a library impossible to unload, so no new build could replace it.
[[gnu::format(printf, 1, 2)]] std::string line(const char* format, ...)
{
    char buf[256];
    std::va_list args;
    va_start(args, format);
    const int n = std::vsnprintf(buf, sizeof buf, format, args);
    va_end(args);
    if (n < 0 || static_cast<std::size_t>(n) >= sizeof buf)
        throw std::length_error("state line too long");
    return std::string(buf, static_cast<std::size_t>(n));
}

std::string save_state()
{
    std::lock_guard lock(shop.mutex);
    std::string out = line("orders-state 1\nshipped %" PRIu64 "\nnext %" PRIu64 "\n", shop.shipped, shop.next_id);
    for (const order& o : shop.open)
        out += line("order %" PRIu64 " %s %" PRIu64 " %" PRIu64 " %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", o.id,
                    o.customer.c_str(), o.items, o.total_cents, stage_names.at(static_cast<std::size_t>(o.next)),
                    o.declined, o.span.id(), o.declined_charge.id());
    out += "end\n";
    // Now that nothing can fail: give up the handles without closing the
    // spans, which the host keeps open for the ids just written.
    for (order& o : shop.open) {
        (void)o.span.release();
        (void)o.declined_charge.release();
    }
    shop.open.clear();
    return out;
}

// Reads the saved text strictly: exact keywords, one space between tokens,
// '\n' after each line, plain decimal numbers. Like a stream, it stays
// failed after the first deviation, which refuses the whole state.
struct reader {
    std::string_view rest;
    bool ok = true;

    // The next token, which `end` (' ' or '\n') must follow.
    std::string_view token(char end)
    {
        const std::size_t at = rest.find(end);
        const std::string_view t = rest.substr(0, at);
        ok = ok && at != 0 && at != std::string_view::npos && t.find_first_of(" \n") == std::string_view::npos;
        rest.remove_prefix(ok ? at + 1 : rest.size());
        return ok ? t : std::string_view();
    }
    void word(std::string_view expected, char end)
    {
        if (token(end) != expected)
            ok = false;
    }
    std::uint64_t number(char end)
    {
        const std::string_view t = token(end);
        std::uint64_t n = 0;
        const auto [at, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
        ok = ok && ec == std::errc() && at == t.data() + t.size();
        return n;
    }
};

// Spans are adopted only once the whole text is known good, so a refused
// state never touches the host's spans.
struct saved_order {
    order data;
    std::uint64_t span_id = 0;
    std::uint64_t declined_charge_id = 0;
};

stage stage_named(std::string_view name)
{
    std::size_t i = 0;
    while (i < stage_names.size() && name != stage_names[i])
        ++i;
    return static_cast<stage>(i);  // `done` when unknown: never valid in a saved state
}

// Refuses what no save_state writes rather than guessing what was meant.
bool sane(const saved_order& s, std::uint64_t next_id, const std::vector<saved_order>& before)
{
    const order& o = s.data;
    if (o.id == 0 || o.id >= next_id || o.items == 0 || o.next == stage::done || o.customer.size() > 32 ||
        o.customer.find_first_not_of("abcdefghijklmnopqrstuvwxyz") != std::string::npos)
        return false;
    // Only an order waiting to retry its payment holds a declined attempt.
    if (s.declined_charge_id != 0 && o.next != stage::charge)
        return false;
    for (const saved_order& b : before)
        if (b.data.id == o.id)
            return false;
    return true;
}

bool restore_state(std::string_view text)
{
    std::lock_guard lock(shop.mutex);
    // Refused or not, nothing of an earlier state stays: a refused state
    // leaves the plugin as freshly loaded.
    shop.open.clear();
    shop.next_id = 1;
    shop.shipped = 0;
    reader in{text};
    in.word("orders-state", ' ');
    in.word("1", '\n');
    in.word("shipped", ' ');
    const std::uint64_t shipped = in.number('\n');
    in.word("next", ' ');
    const std::uint64_t next_id = in.number('\n');
    std::vector<saved_order> saved;
    while (in.ok && in.rest != "end\n") {
        saved_order s;
        in.word("order", ' ');
        s.data.id = in.number(' ');
        s.data.customer = in.token(' ');
        s.data.items = in.number(' ');
        s.data.total_cents = in.number(' ');
        s.data.next = stage_named(in.token(' '));
        s.data.declined = in.number(' ');
        s.span_id = in.number(' ');
        s.declined_charge_id = in.number('\n');
        in.ok = in.ok && sane(s, next_id, saved);
        saved.push_back(std::move(s));
    }
    if (!in.ok)
        return false;  // also when the text ends without "end": it was cut short
    shop.open.reserve(saved.size());
    for (saved_order& s : saved) {
        s.data.span = tt::span::adopt(s.span_id, order_fields);
        s.data.declined_charge = tt::span::adopt(s.declined_charge_id);  // only linked to, never recorded on
        shop.open.push_back(std::move(s.data));
    }
    shop.shipped = shipped;
    shop.next_id = next_id;
    return true;
}

}  // namespace

TT_PLUGIN("orders", ORDERS_VERSION, "Order workflow example", on_start, on_stop)
TT_PLUGIN_STATE(save_state, restore_state)

// The example application's entry points (example_app.h). Nothing may throw
// through a C function: a failure is traced instead.
extern "C" TT_EXPORT void example_tick(std::uint64_t tick)
{
    std::lock_guard lock(shop.mutex);
    try {
        // Open orders move on first: a new one waits for the next tick.
        for (order& o : shop.open)
            advance(o);
        std::erase_if(shop.open, [](const order& o) { return o.next == stage::done; });
        receive(tick);
    } catch (const std::exception& e) {
        TT_ERROR("tick failed", "tick"_f = tick, "error"_f = tt::error(e));
    }
}

extern "C" TT_EXPORT const char* example_handle(const char* request)
{
    // Valid until this thread's next request. A plain char array: a
    // thread_local with a destructor would pin the library in memory.
    thread_local char answer[96];
    if (request == nullptr || std::string_view(request) != "status")
        return "unknown request (try \"status\")";
    std::lock_guard lock(shop.mutex);
    std::snprintf(answer, sizeof answer, "%zu open order%s, %" PRIu64 " shipped", shop.open.size(),
                  shop.open.size() == 1 ? "" : "s", shop.shipped);
    return answer;
}
