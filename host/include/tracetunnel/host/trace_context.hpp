// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent`
// value, and the "remote parent" a host application sets on a thread before
// it calls into a plugin, so that the plugin's root spans join the caller's
// trace (the OTLP exporter, otlp_exporter.hpp, consults it).
//
//   // An incoming request carried "traceparent: 00-4bf9...-00f0...-01":
//   tt::host::remote_parent_scope scope(request.header("traceparent"));
//   host.call<void(const char*)>("orders", "handle", body);  // root spans: trace 4bf9..., parent 00f0...
//   // outgoing call from inside: exporter.current_traceparent() gives "00-4bf9...-<current span>-01"
//
// Parsing is strict, as the specification asks of a receiver: lowercase hex
// only, version "ff" and all-zero ids refused, version 00 exactly 55
// characters; a higher version may carry more after a '-', which is ignored.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace tt::host {

using trace_id = std::array<std::uint8_t, 16>;
using span_id = std::array<std::uint8_t, 8>;

// One parsed traceparent. Only the sampled flag (bit 0) has a meaning today;
// the other bits are kept as received.
struct trace_parent {
    trace_id trace{};
    span_id span{};
    std::uint8_t flags = 0x01;

    bool operator==(const trace_parent&) const = default;
};

// Why a traceparent was refused, for an error message.
struct traceparent_error {
    std::string message;
};

// Parses a traceparent header value.
//   auto p = tt::host::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
std::variant<trace_parent, traceparent_error> parse_traceparent(std::string_view text);

// "00-<32 hex>-<16 hex>-<2 hex>" (always version 00, the one we speak).
std::string format_traceparent(const trace_parent& p);

// Lowercase hex of some bytes (ids in OTLP JSON are hex too).
std::string to_hex(std::span<const std::uint8_t> bytes);

// Sets the remote parent of root spans created on the calling thread for its
// lifetime; scopes nest (the innermost wins) and restore the outer one on
// destruction. An invalid text is ignored (no remote parent in this scope,
// the outer one is hidden too) and counted in invalid_traceparents(), since an
// application should not fail a request over a bad header.
class remote_parent_scope {
public:
    explicit remote_parent_scope(std::string_view traceparent) noexcept;
    explicit remote_parent_scope(const trace_parent& parent) noexcept;
    remote_parent_scope(const remote_parent_scope&) = delete;
    remote_parent_scope& operator=(const remote_parent_scope&) = delete;
    ~remote_parent_scope();

    // False when the text was refused.
    bool valid() const noexcept { return valid_; }

private:
    std::optional<trace_parent> previous_;
    bool valid_ = false;
};

// The remote parent of the innermost scope on this thread, if any.
std::optional<trace_parent> current_remote_parent() noexcept;

// Process-wide count of traceparent texts remote_parent_scope ignored.
std::uint64_t invalid_traceparents() noexcept;

}  // namespace tt::host
