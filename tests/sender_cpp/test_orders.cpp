// The orders example plugin (plugins/orders) driven like the demo host does.
#include "sender_test.hpp"

#include <example_app.h>

#include <algorithm>

using namespace tt::model;

TEST_CASE("orders: a few ticks trace orders, steps, a failed payment and its retry")
{
    if (tt::test::plugin_path("orders").empty()) {
        MESSAGE("examples are disabled: skipped");
        return;
    }
    auto plugin = tt::test::open_test_plugin("orders");
    CHECK(plugin.lib->description().name == "orders");
    tt::test::recording_host host;
    const tt_host api = host.api();
    REQUIRE(std::holds_alternative<std::monostate>(plugin.lib->start(api)));
    auto& tick = plugin.get<void(std::uint64_t)>(EXAMPLE_SYMBOL_TICK);
    for (std::uint64_t t = 1; t <= 6; ++t)
        tick(t);
    plugin.lib->stop();

    CHECK(host.errors().empty());
    const auto events = host.events();
    std::size_t orders = 0, follows = 0, shipped = 0, failures = 0, dropped = 0, created = 0;
    for (const auto& e : events) {
        if (const auto* s = std::get_if<new_span>(&e)) {
            ++created;
            const auto* cs = host.find_callsite_by_name("order");
            if (cs && s->callsite_id == cs->id)
                ++orders;
        } else if (std::holds_alternative<follows_from>(e)) {
            ++follows;
        } else if (std::holds_alternative<span_dropped>(e)) {
            ++dropped;
        } else if (const auto* r = std::get_if<values_recorded>(&e)) {
            for (const auto& [name, v] : r->values)
                if (name == "status" && same_value(v, value(std::string("shipped"))))
                    ++shipped;
        } else if (const auto* ev = std::get_if<new_event>(&e)) {
            for (const auto& [name, v] : ev->values)
                if (name == "error") {
                    ++failures;
                    CHECK(same_value(v, value(error_chain{{"card charge failed", "gateway timeout"}})));
                }
        }
    }
    CHECK(orders == 6);
    CHECK(shipped == 6);
    CHECK(failures == 2);  // orders 3 and 6 fail their first attempt
    CHECK(follows == 2);   // ...and their retry follows from it
    // Every handle was dropped: the cloned "previous" attempt included.
    std::size_t cloned = static_cast<std::size_t>(
        std::count_if(events.begin(), events.end(), [](const event& e) { return std::holds_alternative<span_cloned>(e); }));
    CHECK(dropped == created + cloned);

    std::vector<std::uint8_t> state;
    REQUIRE(plugin.lib->save_state(state));
    CHECK(std::string(state.begin(), state.end()) == "6");
}
