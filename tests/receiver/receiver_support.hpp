// Helpers for the receiver tests: ABI call sites and events built by hand
// (owning the strings they point to), and small comparisons.
#pragma once

#include <tracetunnel/abi.h>
#include <tracetunnel/host/capture.hpp>
#include <tracetunnel/host/receiver.hpp>

#include <boost/json/value.hpp>

#include <deque>
#include <initializer_list>
#include <string>
#include <vector>

namespace tt::test {

// A tt_callsite with storage for its strings. Not movable once built (the
// tt_callsite points into it).
class abi_site {
public:
    abi_site(tt_callsite_kind kind, tt_level level, std::string name, std::vector<std::string> fields,
             std::string target = "test::target");
    abi_site(const abi_site&) = delete;
    abi_site& operator=(const abi_site&) = delete;

    const tt_callsite& get() const { return cs_; }
    tt_callsite& raw() { return cs_; }  // for tests that corrupt it
    std::uint64_t id() const { return cs_.id; }
    std::uint32_t field(const std::string& name) const;
    model::callsite model() const;

private:
    std::string name_, target_, module_, file_;
    std::vector<std::string> fields_;
    std::vector<tt_str> field_strs_;
    tt_callsite cs_{};
};

tt_str str_of(std::string_view s);

tt_field_value fv_bool(std::uint32_t field, bool v);
tt_field_value fv_i64(std::uint32_t field, std::int64_t v);
tt_field_value fv_u64(std::uint32_t field, std::uint64_t v);
tt_field_value fv_f64(std::uint32_t field, double v);
tt_field_value fv_str(std::uint32_t field, std::string_view v);  // v must outlive the event
tt_field_value fv_debug(std::uint32_t field, std::string_view v);
tt_field_value fv_error(std::uint32_t field, const std::vector<tt_str>& chain);  // chain must outlive the event

tt_event ev_new_callsite(const tt_callsite& cs);
tt_event ev_new_span(std::uint64_t callsite_id, const std::vector<tt_field_value>& values = {},
                     tt_parent_mode parent = TT_PARENT_CONTEXTUAL, std::uint64_t parent_id = 0);
tt_event ev_new_event(std::uint64_t callsite_id, const std::vector<tt_field_value>& values = {},
                      tt_parent_mode parent = TT_PARENT_CONTEXTUAL, std::uint64_t parent_id = 0);
tt_event ev_span(tt_event_kind kind, std::uint64_t span_id, std::uint64_t related = 0);
tt_event ev_record(std::uint64_t span_id, const std::vector<tt_field_value>& values);

// Receives and REQUIREs success; returns the answer.
std::uint64_t ok(host::receiver& r, const tt_event& ev);
std::uint64_t ok(host::receiver& r, const model::event& ev);

// Structural equality of JSON values where object key order matters too.
bool same_json_ordered(const boost::json::value& a, const boost::json::value& b, std::string* where = nullptr);

// The receiver state a restore needs.
host::receiver_state state_of(host::receiver& r);  // persist_metadata() + persist()

std::string describe(const host::persisted_spans& s);

}  // namespace tt::test
