// A host for tests: hands a plugin a real tt_host whose emit records every
// event (as owned model events), assigns span ids, and answers call-site
// registrations through a policy the test sets.
#pragma once

#include <tracetunnel/abi_convert.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace tt::test {

class recording_host {
public:
    // Interest answered for each new call site; ALWAYS unless a test says otherwise.
    using interest_policy = std::function<std::uint32_t(const model::callsite&)>;

    recording_host();
    explicit recording_host(interest_policy policy);

    // The record handed to tt_plugin_start.
    tt_host api();

    std::vector<model::event> events() const;
    std::vector<std::string> errors() const;
    // How many times emit was called with this call site's id (any kind).
    std::size_t hits(std::uint64_t callsite_id) const;
    const model::callsite* find_callsite_by_name(const std::string& name) const;
    void clear();

private:
    static std::uint64_t emit(void* ctx, const tt_event* event);
    std::uint64_t on_event(const tt_event& event);

    interest_policy policy_;
    mutable std::mutex mutex_;
    model::abi_decoder decoder_;
    std::uint64_t next_span_id_ = 1;
    std::vector<model::event> events_;
    std::vector<std::string> errors_;
    std::unordered_map<std::uint64_t, std::size_t> hits_;
    std::vector<model::callsite> callsites_;
};

}  // namespace tt::test
