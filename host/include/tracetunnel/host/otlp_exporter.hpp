// OpenTelemetry export: a layer that sends plugin and host spans to a
// collector over OTLP/HTTP (POST <endpoint>, JSON encoding). docs/OTLP.md has
// the configuration, the mapping and the limits.
//
//   auto opts = tt::host::otlp_options_from_env();          // OTEL_* variables
//   if (auto* o = std::get_if<tt::host::otlp_options>(&opts)) {
//       auto exporter = std::make_shared<tt::host::otlp_exporter>(*o);
//       pipeline.add_layer(exporter);
//       ...                                                   // plugins run
//       host.shutdown();                                      // closes or suspends spans
//       exporter->shutdown();                                 // flushes what is queued
//   }
//
// A span is exported once, when it closes: never when it is suspended (a
// reload or restart continues it). Its ids derive from its persisted identity
// (plugin lineage, the receiver's span id, start time), so a span continued by
// a later process keeps its trace id, span id and start time.
//
// Threads: the layer calls are cheap and never block on the network: a closed
// span is copied into a bounded queue, and one background thread batches,
// encodes and sends, retrying with backoff. A full queue drops spans (counted).
#pragma once

#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/trace_context.hpp>
#include <tracetunnel/host/version.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tt::host {

using key_values = std::vector<std::pair<std::string, std::string>>;

struct otlp_options {
    // The full URL spans are POSTed to, e.g. "http://localhost:4318/v1/traces".
    std::string endpoint = "http://localhost:4318/v1/traces";
    std::string service_name = "tt-host";
    key_values resource_attributes;  // besides service.name and telemetry.sdk.*
    key_values headers;              // extra HTTP headers (OTEL_EXPORTER_OTLP_HEADERS)
    std::size_t max_queue = 2048;    // closed spans waiting; more are dropped
    std::size_t max_batch = 512;     // spans per request
    std::chrono::milliseconds batch_delay{1000};      // a partial batch waits at most this long
    std::chrono::milliseconds timeout{10000};         // one request
    std::chrono::milliseconds retry_initial{100};     // first backoff, doubled per failure
    std::chrono::milliseconds retry_max{5000};        // backoff cap
    std::chrono::milliseconds shutdown_timeout{5000};  // shutdown() flushes at most this long
    // Parent of every root span that no remote_parent_scope covers (tt-host --traceparent).
    std::optional<trace_parent> default_parent;
    // The instrumentation scope version of a plugin (its describe version),
    // asked from the export thread; "host" spans get `host_version`.
    std::function<std::string(std::string_view plugin)> plugin_version;
    std::string host_version = std::string(library_version());
    // Told when exporting starts failing and when it recovers (from the export thread).
    std::function<void(bool failing, std::string_view detail)> on_state_change;
};

// Options from the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// (as is), else OTEL_EXPORTER_OTLP_ENDPOINT (+ "/v1/traces"), OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP[_TRACES]_HEADERS,
// OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT, OTEL_BSP_MAX_QUEUE_SIZE,
// OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_SCHEDULE_DELAY. A malformed value
// is an error naming the variable. `configured` tells whether an endpoint
// variable was set at all (without one, an application may leave export off).
struct otlp_env {
    otlp_options options;
    bool configured = false;
};
std::variant<otlp_env, std::string> otlp_options_from_env();

// "k=v,k2=v2" with %XX-decoding of keys and values (OTEL_RESOURCE_ATTRIBUTES);
// an error names the bad entry.
std::variant<key_values, std::string> parse_key_values(std::string_view text);

struct otlp_stats {
    std::uint64_t spans_queued = 0;      // accepted into the queue
    std::uint64_t spans_exported = 0;    // acknowledged by the collector
    std::uint64_t dropped_queue_full = 0;
    std::uint64_t dropped_rejected = 0;  // the collector refused them (4xx other than 408/429)
    std::uint64_t dropped_shutdown = 0;  // still unsent when shutdown() gave up
    std::uint64_t requests = 0;          // POSTs made
    std::uint64_t failures = 0;          // POSTs that failed (network, timeout, non-2xx)
    std::uint64_t retries = 0;           // batches sent again after a failure
    std::uint64_t queue_length = 0;
    std::uint64_t invalid_traceparents = 0;  // remote_parent_scope texts ignored (process-wide)
    std::uint64_t dropped() const noexcept { return dropped_queue_full + dropped_rejected + dropped_shutdown; }
};

class otlp_exporter final : public layer {
public:
    // Starts the export thread.
    explicit otlp_exporter(otlp_options options);
    // shutdown().
    ~otlp_exporter() override;

    void on_new_span(span_context scope) noexcept override;
    void on_record(span_context scope, field_refs values) noexcept override;
    void on_follows_from(const span_ref& span, span_handle cause) noexcept override;
    void on_enter(const span_ref& span) noexcept override;
    void on_exit(const span_ref& span) noexcept override;
    void on_close(span_context scope) noexcept override;
    void on_suspend(span_context scope) noexcept override;
    void on_event(const event_view& ev) noexcept override;
    std::uint64_t errors() const noexcept override;

    // Sends everything queued now; true when the queue emptied within `timeout`.
    bool flush(std::chrono::milliseconds timeout) noexcept;
    // Stops taking spans, flushes for at most shutdown_timeout, stops the
    // thread; what is left is counted in dropped_shutdown. Idempotent.
    void shutdown() noexcept;

    // The traceparent of the innermost exported span entered on the calling
    // thread, else of the thread's remote parent, else none: for the
    // application's outgoing calls.
    std::optional<std::string> current_traceparent() const;

    // One moment's counters: spans_queued == spans_exported + dropped_rejected
    // + dropped_shutdown + queue_length at every read.
    otlp_stats statistics() const noexcept;
    // The counters as (name, value) pairs, for the control socket's `stats`.
    std::vector<std::pair<std::string, std::uint64_t>> counters() const;
    // The last export failure, empty when none.
    std::string last_error() const;

    struct impl;

private:
    std::unique_ptr<impl> impl_;
};

// One finished span, as the exporter queues it (public for the encoder's unit tests).
struct otlp_attribute {
    std::string key;
    model::value value;
};
struct otlp_span_event {
    std::string name;
    std::uint64_t time_ns = 0;
    std::vector<otlp_attribute> attributes;
};
struct otlp_link {
    trace_id trace{};
    span_id span{};
};
struct otlp_span {
    std::string scope;  // plugin lineage name, "host" for the host's own spans
    trace_id trace{};
    span_id span{};
    std::optional<span_id> parent;
    std::string name;
    int kind = 1;  // OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    std::uint64_t start_ns = 0, end_ns = 0;
    std::vector<otlp_attribute> attributes;
    std::vector<otlp_span_event> events;
    std::uint32_t dropped_events = 0;
    std::vector<otlp_link> links;
    int status = 0;  // 0 unset, 1 ok, 2 error
    std::string status_message;
};

// The ExportTraceServiceRequest JSON of some spans (OTLP JSON encoding: hex
// ids, lowerCamelCase keys, 64-bit integers as decimal strings).
std::string encode_otlp_json(const std::vector<otlp_span>& spans, const otlp_options& options,
                             const std::function<std::string(std::string_view)>& scope_version);

}  // namespace tt::host
