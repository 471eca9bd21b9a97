// Internal: the periodic flush of a text layer on a buffered line_writer
// (console_layer, json_layer). The layer's own mutex serializes the flush
// with its writes; a failed flush counts as one of the layer's errors.
#pragma once

#include <tracetunnel/host/layers.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>

namespace tt::host::detail {

// The layer's flush(): now, in order with its writes.
inline void flush_now(line_writer& out, std::mutex& mutex, std::atomic<std::uint64_t>& errors) noexcept
{
    std::lock_guard lock(mutex);
    if (!out.flush())
        errors.fetch_add(1, std::memory_order_relaxed);
}

// Returns the ticket for stop_flushing; 0 when `out` flushes every line itself.
inline std::uint64_t start_flushing(line_writer& out, std::mutex& mutex, std::atomic<std::uint64_t>& errors)
{
    if (!out.is_buffered())
        return 0;
    return add_periodic_flush(out.flush_every(), [&out, &mutex, &errors] { flush_now(out, mutex, errors); });
}

// From the layer's destructor: no periodic flush runs after this returns, and
// what the buffer holds is written.
inline void stop_flushing(std::uint64_t ticket, line_writer& out, std::atomic<std::uint64_t>& errors) noexcept
{
    cancel_periodic_flush(ticket);
    if (out.is_buffered() && !out.flush())
        errors.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace tt::host::detail
