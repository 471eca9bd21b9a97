// capture_layer: a subscriber that keeps everything it is told, in memory,
// for tests and for comparisons against the tracing-tunnel fixtures.
//
//   tt::host::capture_layer cap;
//   tt::host::receiver recv("demo", cap);
//   ... recv.receive(ev) ...
//   auto h = cap.find_by_name("request").at(0);
//   CHECK(cap.span(h)->closed);
//   boost::json::value form = cap.to_expect_json();  // compare with *.expect.json
#pragma once

#include <tracetunnel/host/pipeline.hpp>

#include <boost/json/value.hpp>

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tt::host {

struct captured_span {
    span_handle handle = 0;  // 1-based creation order
    std::string name;
    std::string target;
    model::level level = model::level::info;
    std::string plugin;
    std::uint64_t callsite_id = 0;
    std::uint64_t plugin_span_id = 0;
    span_handle parent = 0;
    std::vector<span_handle> follows_from;
    model::field_values fields;  // final values, first-recorded order
    clock::time_point start;
    bool closed = false;
    std::size_t close_count = 0;  // must end as 0 or 1
    std::size_t entered = 0;
    std::size_t exited = 0;
    std::size_t force_exited = 0;  // exits that came from a rollback (also counted in exited)
    std::vector<std::size_t> events;  // indices into capture_layer::events()
};

struct captured_event {
    span_handle span = 0;  // the span the event was attributed to, 0 = none
    model::level level = model::level::info;
    std::string name;
    std::string target;
    std::string plugin;
    std::optional<std::string> message;  // the "message" field, taken out of fields
    model::field_values fields;
    clock::time_point time;
};

class capture_layer final : public subscriber {
public:
    capture_layer() = default;

    // Optional policies for filter tests; default: always / enabled.
    void set_interest_policy(std::function<interest(const model::callsite&)> p);
    void set_enabled_policy(std::function<bool(const model::callsite&)> p);

    interest interest_in(const model::callsite& site) noexcept override;
    bool enabled(const model::callsite& site) noexcept override;
    span_handle new_span(const span_attrs& attrs) noexcept override;
    void record(span_handle span, field_refs values) noexcept override;
    void follows_from(span_handle span, span_handle cause) noexcept override;
    void enter(span_handle span) noexcept override;
    void exit(span_handle span) noexcept override;
    void force_exit(span_handle span, std::thread::id thread) noexcept override;
    void close(span_handle span) noexcept override;
    void event(const event_record& ev) noexcept override;
    // The topmost span on this thread's stack that is not closed.
    span_handle current_span() const noexcept override;
    std::uint64_t plugin_span_id(span_handle span) const noexcept override;

    // Snapshots (copies, taken under the lock).
    std::vector<captured_span> spans() const;
    std::vector<captured_event> events() const;
    std::optional<captured_span> span(span_handle h) const;
    std::size_t open_spans() const;
    // Calls on unknown or closed handles, double closes: should stay empty.
    std::vector<std::string> anomalies() const;

    // Queries; results in creation order.
    std::vector<span_handle> find_by_name(std::string_view name) const;
    std::vector<span_handle> find_by_level(model::level level) const;
    std::vector<span_handle> find_by_field(std::string_view field, const model::value& v) const;
    std::vector<span_handle> children_of(span_handle h) const;
    std::vector<span_handle> ancestors_of(span_handle h) const;    // nearest first
    std::vector<span_handle> descendants_of(span_handle h) const;  // depth first, pre-order
    std::vector<captured_event> events_in(span_handle h) const;

    // The canonical comparison form of the tracing-tunnel fixtures
    // ("Expectation files" in shared/fixtures/tracing-tunnel/README.md).
    boost::json::value to_expect_json() const;

private:
    captured_span* find(span_handle h);  // lock held
    void anomaly(std::string what);      // lock held

    mutable std::mutex mutex_;
    std::vector<captured_span> spans_;
    std::vector<captured_event> events_;
    std::vector<std::string> anomalies_;
    std::function<interest(const model::callsite&)> interest_policy_;
    std::function<bool(const model::callsite&)> enabled_policy_;
    thread_span_stack stack_;
};

// One value in the canonical form: integers as JSON integers (128-bit ones
// beyond 64 bits as the nearest double, which is what a JSON reader makes of
// the fixture's bare integers), objects as their text, errors as their message.
boost::json::value expect_json_value(const model::value& v);

}  // namespace tt::host
