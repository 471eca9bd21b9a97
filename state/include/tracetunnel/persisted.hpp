// The receiver's persisted state: what a receiver of a plugin lineage needs
// to continue after a plugin reload or a host restart. Split as in
// tracing-tunnel: metadata (the call sites) and persisted spans (the live
// spans and the id counter). The pipeline's handles (tt::host::local_spans)
// are RAM only and not here.
//
// These are plain values; state_file.hpp writes and reads them on disk, and
// tt::host::receiver takes and gives them (aliased as tt::host::persisted_*).
//
//   tt::state::receiver_state st{recv.persist_metadata(), recv.persist()};
//   tt::host::receiver next("orders", pipeline, std::move(st));
#pragma once

#include <tracetunnel/model.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tt::state {

// The clock of span start times (the host pipeline's clock).
using clock = std::chrono::system_clock;

// One live span as persisted: everything needed to continue it after a reload
// or a restart.
struct persisted_span {
    std::uint64_t id = 0;
    std::uint64_t callsite_id = 0;
    std::uint64_t parent_id = 0;  // the plugin's span id of the parent, 0 = none
    model::field_values values;   // creation values + records, first-recorded order
    std::uint64_t ref_count = 1;
    clock::time_point start;
    std::vector<std::uint64_t> follows_from;  // causes by span id, kept even once closed

    // Values compare with model::same_value (bitwise doubles: NaN == NaN).
    bool operator==(const persisted_span& o) const noexcept;
};

struct persisted_spans {
    std::vector<persisted_span> spans;  // sorted by id
    std::uint64_t next_id = 1;          // the next host-assigned span id

    bool operator==(const persisted_spans& o) const noexcept = default;
};

using persisted_metadata = std::vector<model::callsite>;  // sorted by id

// What a receiver starts from.
struct receiver_state {
    persisted_metadata metadata;
    persisted_spans spans;
};

inline bool persisted_span::operator==(const persisted_span& o) const noexcept
{
    if (id != o.id || callsite_id != o.callsite_id || parent_id != o.parent_id || ref_count != o.ref_count ||
        start != o.start || follows_from != o.follows_from || values.size() != o.values.size())
        return false;
    for (std::size_t i = 0; i < values.size(); ++i)
        if (values[i].first != o.values[i].first || !model::same_value(values[i].second, o.values[i].second))
            return false;
    return true;
}

}  // namespace tt::state
