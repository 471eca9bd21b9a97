// dispatcher: the host's tracing pipeline behind the receiver. A `subscriber`
// (pipeline.hpp) that owns the span registry, the per-thread current-span
// stack and the current filter (filter.hpp), and fans out to N layers
// (layers.hpp).
//
//   auto parsed = tt::host::parse_filter("info,orders=debug");
//   auto d = std::make_shared<tt::host::dispatcher>(std::get<tt::host::filter>(parsed));
//   d->add_layer(std::make_shared<tt::host::console_layer>());
//   tt::host::receiver recv("orders", *d);
//   ...
//   d->host_event(tt::model::level::info, "tt::host", "plugin loaded", {{"plugin", std::string("orders")}});
//   {
//       auto g = d->enter_host_span(tt::model::level::info, "tt::host", "reload", {{"plugin", std::string("orders")}});
//       ...  // events here are inside `reload`
//   }
//
// Handles: monotonic u64 from 1, never reused.
//
// Filtering:
// - interest_in(site) answers from the current filter (always / sometimes /
//   never). set_filter() swaps the filter at run time from any thread; the
//   host then asks plugins to drop their cached interest so call sites
//   register again (filter_generation() tells it the filter changed).
// - enabled(site) evaluates a SOMETIMES call site against the spans entered
//   on the calling thread (innermost first, enabled spans only, their values
//   as recorded so far).
// - Spans: pipeline.hpp's enabled(site) cannot see a new span's own values,
//   yet EnvFilter lets a span enable itself by its values
//   (`[checkout{user=alice}]=trace` enables a trace-level checkout span for
//   alice). So enabled() answers true for a SOMETIMES *span* call site and
//   new_span() decides with the values: a span that does not pass becomes a
//   *disabled* span. It still gets a handle (the receiver always gets a
//   consistent, non-zero answer and may record/enter/exit/close it), but it is
//   invisible: no layer hears of it, it is not in any filter scope,
//   current_span() skips it (as entering a disabled span in tracing changes
//   nothing), and a span or event whose parent is disabled is attributed to
//   the nearest enabled ancestor. (If pipeline.hpp's enabled() gets the own
//   values one day, disabled spans become rare; the shape stays.)
// - new_span() and event() re-check against the *current* filter, so a stale
//   cached interest in a plugin cannot leak a hit past a filter change.
//
// Threads: every subscriber method may be called from any thread at once.
// Layers are called without the dispatcher's locks held, in the order added;
// each layer serialises itself. event, enter, exit and current_span take no
// lock and allocate nothing once warm; new_span and close take a per-thread
// pool's lock only. A closed span's memory is recycled once no thread can
// still be reading it (epoch-based reclamation), so what a layer is handed
// stays valid for the call.
//
// Memory: every call site a span was created from, and every plugin name,
// stays interned (one copy each) until the dispatcher dies, so that spans
// outlive the receiver that sent them; span nodes (112 bytes, values packed
// inside) are recycled, not freed. Each thread that hands spans to layers
// keeps a small cache of unpacked views (64 spans).
//
// Call sites are the receivers' objects: filter answers cached per thread are
// keyed by the call site's address and id, the sending plugin's name and a
// count of registrations (interest_in), so a call site made later at a reused
// address never inherits another's answer.
#pragma once

#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/pipeline.hpp>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <source_location>
#include <string_view>

namespace tt::host {

// A field of a host-side event or span.
struct host_field {
    std::string_view name;
    model::value value;
};

class dispatcher;

// RAII guard for a host-side span: created and entered by
// dispatcher::enter_host_span, exited and closed when it goes out of scope
// (on the thread that entered it). A filtered-out span gives an inert guard
// whose handle() is still valid (a disabled span) or 0 when nothing was made.
class host_span_guard {
public:
    host_span_guard() noexcept = default;
    host_span_guard(host_span_guard&& o) noexcept;
    host_span_guard& operator=(host_span_guard&& o) noexcept;
    ~host_span_guard();

    // Records a value on the span (the field must be one declared at creation).
    void record(std::string_view name, const model::value& v) noexcept;
    span_handle handle() const noexcept { return handle_; }
    explicit operator bool() const noexcept { return handle_ != 0; }

private:
    friend class dispatcher;
    host_span_guard(dispatcher* d, span_handle h) noexcept : d_(d), handle_(h) {}
    void release() noexcept;
    dispatcher* d_ = nullptr;
    span_handle handle_ = 0;
};

class dispatcher final : public subscriber {
public:
    // Default filter: parse_filter("info").
    dispatcher();
    explicit dispatcher(filter f);
    ~dispatcher() override;

    // Thread-safe at any time.
    void set_filter(filter f) noexcept;
    filter current_filter() const noexcept;
    // Bumped by every set_filter.
    std::uint64_t filter_generation() const noexcept;

    // Thread-safe at any time; a layer added later sees only what comes after
    // (no on_close for spans it never saw created).
    void add_layer(std::shared_ptr<layer> l);
    // Every layer writes out what it holds back (layer::flush), e.g. the lines
    // of a buffered line_writer. plugin_host calls it before each commit.
    void flush() noexcept;

    // --- subscriber ---
    interest interest_in(const model::callsite& site) noexcept override;
    bool enabled(const model::callsite& site) noexcept override;
    span_handle new_span(const span_attrs& attrs) noexcept override;
    void record(span_handle span, field_refs values) noexcept override;
    void follows_from(span_handle span, span_handle cause) noexcept override;
    void enter(span_handle span) noexcept override;
    void exit(span_handle span) noexcept override;
    void force_exit(span_handle span, std::thread::id thread) noexcept override;
    void close(span_handle span) noexcept override;
    void suspend(span_handle span) noexcept override;
    void event(const event_record& ev) noexcept override;
    // Topmost span entered on this thread that is live and enabled.
    span_handle current_span() const noexcept override;
    // While the span is open (the node keeps it).
    std::uint64_t plugin_span_id(span_handle span) const noexcept override;
    bool resolves_current_span() const noexcept override { return true; }

    // --- the host's own instrumentation ---
    // Call sites are registered once per (kind, level, name, target, file,
    // line, fields) as model::callsite with a stable 64-bit hash id; their
    // plugin name is "host". Events are named "event file:line" and have the
    // field "message" first, as tracing's macros make them.
    void host_event(model::level lvl, std::string_view target, std::string_view message,
                    std::initializer_list<host_field> fields = {},
                    std::source_location loc = std::source_location::current()) noexcept;
    // A span under the current span of this thread, entered at once.
    [[nodiscard]] host_span_guard enter_host_span(model::level lvl, std::string_view target, std::string_view name,
                                                  std::initializer_list<host_field> fields = {},
                                                  std::source_location loc = std::source_location::current()) noexcept;
    // The registered host call site (stable address while the dispatcher lives).
    const model::callsite* host_callsite(model::callsite_kind kind, model::level lvl, std::string_view name,
                                         std::string_view target, std::string_view file, std::uint32_t line,
                                         std::span<const std::string_view> fields) noexcept;

    // --- diagnostics ---
    struct stats {
        std::uint64_t spans_created = 0;   // handles given out
        std::uint64_t spans_disabled = 0;  // of those, filtered at creation
        std::uint64_t spans_live = 0;
        std::uint64_t events = 0;           // fanned out
        std::uint64_t events_filtered = 0;  // dropped by the re-check in event()
        std::uint64_t anomalies = 0;        // calls on unknown/closed handles, double closes
        std::uint64_t layer_errors = 0;     // sum of layer->errors()
    };
    stats statistics() const noexcept;

    struct impl;

private:
    void end_span(span_handle span, bool suspended) noexcept;
    void exit_to_layers(span_handle span) noexcept;
    std::unique_ptr<impl> impl_;
};

}  // namespace tt::host
