// USDT probes: a layer that fires user-space static tracepoints (sys/sdt.h)
// for every span and event the dispatcher sees, so bpftrace, SystemTap or
// perf can watch a running host without restarting it (docs/USDT.md).
//
// Provider `tracetunnel`, five probes, all with the same first arguments:
//
//   span_new    (plugin, name, level, span_id, parent_id, target)
//   span_enter  (plugin, name, level, span_id, parent_id, target)
//   span_exit   (plugin, name, level, span_id, parent_id, target)
//   span_close  (plugin, name, level, span_id, parent_id, target)
//   event       (plugin, name, level, span_id, parent_id, message)
//
// (Six arguments at most: bpftrace reads no more on x86-64.)
// plugin, name, target and message are NUL-terminated strings (name is the
// call site's name, e.g. "checkout" or "event src/x.cpp:42"); level is
// 1 = error ... 5 = trace (abi.h); span_id and parent_id are the
// dispatcher's span handles (0 = none). For `event`, span_id is the span
// the event happened in and parent_id that span's parent; message is the
// "message" field as text, "" when there is none. A span that is only
// suspended (kept in persisted state for a later process) fires no
// span_close.
//
// Each probe has an is-enabled semaphore: the kernel raises it while a
// tracer is attached, and the layer reads it before doing anything else, so
// with no tracer a callback is one load and a branch.
//
//   if (auto usdt = tt::host::make_usdt_layer())
//       dispatcher.add_layer(std::move(usdt));
#pragma once

#include <tracetunnel/host/layers.hpp>

#include <memory>

namespace tt::host {

// Whether this build has the probes (sys/sdt.h was found at build time).
bool usdt_available() noexcept;

// The probe layer, or nullptr when the build has no USDT support.
std::shared_ptr<layer> make_usdt_layer();

}  // namespace tt::host
