// orders: the C++ example plugin. Each tick of the demo host processes one
// order: an "order" span with nested step spans (validate, charge, ship),
// events with fields, a failed payment reported as an error with its cause,
// and a retry that follows from the failed attempt.
//
// Copy this file to start a plugin of your own: it needs nothing but
// <tracetunnel/trace.hpp> (and example_app.h, the demo host's own interface).
#define TT_TARGET "orders"
#include <tracetunnel/trace.hpp>

#include "example_app.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>

using namespace tt::literals;

namespace {

struct order {
    std::uint64_t id;
    std::string_view customer;
    unsigned items;
    double total;
};

std::ostream& operator<<(std::ostream& os, const order& o)
{
    return os << "order #" << o.id << " for " << o.customer << ": " << o.items << " items, " << o.total << " EUR";
}

class payment_declined : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

constexpr std::array<std::string_view, 3> customers = {"alice", "bob", "carol"};

// Survives a hot reload through TT_PLUGIN_STATE below.
std::atomic<std::uint64_t> orders_shipped{0};

order make_order(std::uint64_t tick)
{
    const unsigned items = static_cast<unsigned>(tick % 4) + 1;
    return order{tick, customers[tick % customers.size()], items, 9.5 * items};
}

bool validate(const order& o)
{
    auto step = TT_DEBUG_SPAN("validate", "items"_f = o.items);
    auto entered = step.enter();
    const bool ok = o.items > 0 && o.total > 0;
    TT_DEBUG("validated", "ok"_f = ok);
    return ok;
}

// Every third order's first attempt fails, with the gateway's error as cause.
void charge_once(const order& o, unsigned attempt)
{
    if (attempt > 1 || o.id % 3 != 0)
        return;
    try {
        throw std::runtime_error("gateway timeout");
    } catch (...) {
        std::throw_with_nested(payment_declined("card charge failed"));
    }
}

bool charge(const order& o)
{
    tt::span previous;
    for (unsigned attempt = 1; attempt <= 3; ++attempt) {
        auto step = TT_INFO_SPAN("charge", "attempt"_f = attempt, "amount"_f = o.total, "outcome"_f = tt::empty);
        step.follows_from(previous);  // a no-op on the first attempt: previous is disabled
        auto entered = step.enter();
        try {
            charge_once(o, attempt);
            step.record("outcome"_f = "paid");
            TT_INFO("payment accepted", "amount"_f = o.total);
            return true;
        } catch (const std::exception& e) {
            step.record("outcome"_f = "declined");
            TT_ERROR("payment failed", "error"_f = tt::error(e), "attempt"_f = attempt);
        }
        previous = step;
    }
    return false;
}

void ship(const order& o)
{
    auto step = TT_INFO_SPAN("ship", "carrier"_f = "parcelpost");
    auto entered = step.enter();
    TT_DEBUG("label printed", "tracking"_f = "PP" + std::to_string(100000 + o.id));
}

bool on_start()
{
    TT_INFO("orders plugin started", "shipped_so_far"_f = orders_shipped.load());
    return true;
}

void on_stop()
{
    TT_INFO("orders plugin stopping", "shipped"_f = orders_shipped.load());
}

std::string save_state()
{
    return std::to_string(orders_shipped.load());
}

bool restore_state(std::string_view bytes)
{
    std::uint64_t n = 0;
    for (char c : bytes) {
        if (c < '0' || c > '9')
            return false;
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    orders_shipped.store(n);
    return true;
}

}  // namespace

TT_PLUGIN("orders", "0.1.0", "Order workflow example", on_start, on_stop)
TT_PLUGIN_STATE(save_state, restore_state)

extern "C" TT_EXPORT void example_tick(std::uint64_t tick)
{
    const order o = make_order(tick);
    auto span = TT_INFO_SPAN("order", "id"_f = o.id, "items"_f = o.items, "status"_f = tt::empty);
    auto entered = span.enter();
    TT_INFO("order received", "customer"_f = o.customer, "order"_f = tt::debug(o));
    if (!validate(o)) {
        span.record("status"_f = "invalid");
        TT_WARN("order rejected");
        return;
    }
    if (!charge(o)) {
        span.record("status"_f = "unpaid");
        return;
    }
    ship(o);
    span.record("status"_f = "shipped");
    orders_shipped.fetch_add(1);
}
