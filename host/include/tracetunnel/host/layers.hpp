// Layers of the host's tracing pipeline: what the dispatcher fans out to.
//
// A layer is shaped like an spdlog sink: a small interface of noexcept calls,
// each layer locks its own mutex and counts its own failures (errors()); the
// fan-out is the dispatcher itself (dispatcher.hpp). Nothing a layer does can
// throw into the receiver or a plugin's frame.
//
//   auto d = std::make_shared<tt::host::dispatcher>();
//   d->add_layer(std::make_shared<tt::host::console_layer>());            // compact, stdout
//   d->add_layer(std::make_shared<tt::host::json_layer>(json_file));      // JSON lines
//
// Views: everything a layer is handed is borrowed for the call only. Span
// context is root -> leaf, so a console line can print
// `order{id=42}:charge{amount=12.5}` by walking it in order.
//
// Layers must not call back into the dispatcher from inside a callback
// (that would re-enter their own mutex); they may read their arguments only.
#pragma once

#include <tracetunnel/host/pipeline.hpp>
#include <tracetunnel/model.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>

namespace tt::host {

// One live (or just closed) span as a layer sees it.
struct span_ref {
    span_handle id = 0;
    const model::callsite* site = nullptr;      // never null in a view the dispatcher hands out
    std::string_view plugin;                    // "host" for the host's own spans
    span_handle parent = 0;                     // nearest enabled ancestor, 0 = root
    const model::field_values* fields = nullptr;  // first-recorded order, never null
    clock::time_point start;
    std::thread::id thread;  // the thread that created it
    std::span<const span_handle> follows_from;
    bool resumed = false;  // continued from persisted state (span_attrs::resumed)
    // The receiver's id for the span (span_attrs::plugin_span_id), persisted with it:
    // with plugin and start, what identifies the span across reloads and restarts.
    std::uint64_t plugin_span_id = 0;

    std::string_view name() const noexcept { return site ? std::string_view(site->name) : std::string_view(); }
};

// Spans, root first, leaf last.
using span_context = std::span<const span_ref>;

// One event as a layer sees it. `spans` is the event's span and its
// ancestors, root -> leaf (empty for an event outside any span).
struct event_view {
    const model::callsite* site = nullptr;  // never null
    std::string_view plugin;
    field_refs values;  // as sent, including "message" if the call site has one
    // Read on first get(); every layer of one event sees the same instant
    // (pipeline.hpp, event_time): a layer that never asks costs no clock read.
    event_time time;
    std::thread::id thread;
    span_context spans;
};

// What a layer reads of the spans it is handed (layer::reads). A dispatcher
// builds what at least one of its layers reads and may leave out the rest,
// so a layer that counts or filters events costs no span views:
//
//   struct counter final : tt::host::layer {
//       tt::host::layer_reads reads() const noexcept override { return {.span_fields = false, .span_context = false}; }
//       void on_event(const tt::host::event_view&) noexcept override { ++events; }
//       std::uint64_t events = 0;
//   };
//
// Every callback is still made, and a span_ref handed over is complete but
// for what is declared unread.
struct layer_reads {
    // span_ref::fields. Unread: `fields` may point to an empty list (never null).
    bool span_fields = true;
    // The spans around the one a callback is about. Unread: a `scope` may be
    // the span alone (still last) and event_view::spans may be empty.
    bool span_context = true;
};

// The layer interface. Defaults do nothing; on_event is the one to write.
// `scope` arguments are root -> leaf with the span itself last.
class layer {
public:
    layer() = default;
    layer(const layer&) = delete;
    layer& operator=(const layer&) = delete;
    virtual ~layer() = default;

    virtual void on_new_span(span_context scope) noexcept { (void)scope; }
    // `values` are the newly recorded ones; scope.back().fields already holds them.
    virtual void on_record(span_context scope, field_refs values) noexcept
    {
        (void)scope;
        (void)values;
    }
    virtual void on_follows_from(const span_ref& span, span_handle cause) noexcept
    {
        (void)span;
        (void)cause;
    }
    virtual void on_enter(const span_ref& span) noexcept { (void)span; }
    virtual void on_exit(const span_ref& span) noexcept { (void)span; }
    // Called exactly once per span the layer saw created.
    virtual void on_close(span_context scope) noexcept { (void)scope; }
    // Instead of on_close for a span that is persisted and may be continued
    // by a later process (pipeline.hpp, subscriber::suspend): not an end.
    virtual void on_suspend(span_context scope) noexcept { (void)scope; }
    virtual void on_event(const event_view& ev) noexcept = 0;

    // What this layer reads of spans; asked once, when it is added to a
    // dispatcher, so the answer must not change. Default: everything.
    virtual layer_reads reads() const noexcept { return {}; }

    // Failures of this layer (a short write, an allocation failure), counted.
    virtual std::uint64_t errors() const noexcept { return 0; }
    // Writes out whatever the layer holds back (a buffered line_writer's
    // lines). dispatcher::flush calls it; plugin_host does before each commit.
    virtual void flush() noexcept {}
};

// A small stable number per thread, in order of first sight (1, 2, ...): what
// `ThreadId(01)` prints. Process-wide.
std::uint64_t thread_number(std::thread::id id) noexcept;

// RFC 3339 UTC with microseconds: 2026-11-23T12:00:00.123456Z
std::string format_time(clock::time_point t);

// Where a text layer writes, and when its lines reach the file: a FILE*
// (stdout by default) or an ostream. The caller keeps the FILE*/ostream alive
// for the layer's life.
//
// Three ways to write, chosen when the writer is made:
// - each line: every line is one write(2) as it is made, so a line is in the
//   file even if the process is killed the next instant. What a terminal gets
//   (a person is watching), and what each_line() asks for.
// - buffered: lines gather in the writer's own buffer and go out, whole lines
//   only, when it fills, at least every `flush_every` (a process-wide flusher
//   thread), at every flush() and when the layer is destroyed. That saves a
//   system call per line, most of the cost of a line to a file or a pipe.
//   plugin_host flushes every layer before it writes a commit, so the log is
//   always at least as new as the state on disk; a crash (SIGKILL) loses at
//   most the last `flush_every` of lines, never a torn one.
// - automatic (the constructors): each line on a terminal, else buffered
//   with flush_every = 50 ms: as C's stdout, with a bound on the delay.
// An ostream writer flushes the ostream after each line.
//
//   auto json = std::make_shared<tt::host::json_layer>(tt::host::line_writer(log_file), opts);
//   auto live = std::make_shared<tt::host::console_layer>(tt::host::line_writer::each_line(stderr), co);
class line_writer {
public:
    line_writer() noexcept : line_writer(stdout) {}
    explicit line_writer(std::FILE* f) noexcept;
    explicit line_writer(std::ostream& os) noexcept : os_(&os) {}
    static line_writer buffered(std::FILE* f,
                                std::chrono::milliseconds flush_every = std::chrono::milliseconds(50)) noexcept;
    static line_writer each_line(std::FILE* f) noexcept;

    // A copy writes to the same place the same way, and starts with an empty
    // buffer (lines are never written twice).
    line_writer(const line_writer& other) noexcept;
    line_writer& operator=(const line_writer& other) noexcept;
    // A moved-to writer writes what it held first; the moved-from one holds
    // nothing after.
    line_writer(line_writer&& other) noexcept;
    line_writer& operator=(line_writer&& other) noexcept;
    // Lines still buffered are written (a layer's destructor flushes first
    // and counts a failure).
    ~line_writer();

    // Takes one whole line (or several) of `text`; false on a failed or
    // short write (for a buffered writer: of what the buffer had to make
    // room for).
    bool write(std::string_view text) noexcept;
    // Writes what a buffered writer holds; false on a failed write.
    bool flush() noexcept;
    // True when the destination is a terminal (isatty on the FILE*'s fd).
    bool is_terminal() const noexcept;
    bool is_buffered() const noexcept { return flush_every_.count() > 0; }
    std::chrono::milliseconds flush_every() const noexcept { return flush_every_; }
    // Bytes waiting in a buffered writer's buffer.
    std::size_t pending() const noexcept { return buffer_.size(); }

private:
    // A chosen way to write, without asking whether `f` is a terminal.
    line_writer(std::FILE* f, std::chrono::milliseconds flush_every) noexcept : file_(f), flush_every_(flush_every) {}
    bool write_fd(int fd, std::string_view text) noexcept;  // under the FILE*'s lock
    bool drain() noexcept;                                  // buffer_ -> file; true when it is empty

    std::FILE* file_ = nullptr;
    std::ostream* os_ = nullptr;
    std::chrono::milliseconds flush_every_{0};  // 0: each line
    std::string buffer_;                        // buffered FILE* writer: whole lines not yet written
};

// Calls `flush` every `every` from one process-wide thread until the returned
// ticket is cancelled; cancel_periodic_flush waits for a call in progress.
// What buffered text layers use; a layer of your own may too.
std::uint64_t add_periodic_flush(std::chrono::milliseconds every, std::function<void()> flush);
void cancel_periodic_flush(std::uint64_t ticket) noexcept;

enum class color_mode { automatic, always, never };

// ---------------------------------------------------------------------------
// console_layer: tracing-subscriber's fmt look.
//
// compact (the default), one line per event:
//   2026-11-23T12:00:00.123456Z  INFO ThreadId(02) order{id=42}:charge{amount=12.5}: orders::billing: charged amount=12.5 currency="EUR"
// i.e. time, level (right-aligned to 5), thread, span context root->leaf
// with each span's fields inline (tracing's Full layout; tracing's own
// Compact appends span fields at the end instead), target, message, fields.
//
// pretty, a block per event and a blank line after it:
//     2026-11-23T12:00:00.123456Z  INFO orders::billing: charged, amount: 12.5, currency: "EUR"
//       at src/billing.cpp:42 on ThreadId(02)
//       in orders::charge with amount: 12.5
//       in orders::order with id: 42
//
// Values: strings quoted and escaped as Rust's Debug does ("say \"hi\""),
// debug-formatted objects raw, floats with a fractional part (1.0, NaN, inf),
// errors as `err=outer err.sources=[inner, root]` (pretty: `err: outer,
// err.sources: [inner, root]`), as tracing's visitors print them.
//
// Colours (ANSI): level colours (TRACE magenta, DEBUG blue, INFO green, WARN
// yellow, ERROR red), dim time / thread / punctuation, bold span names,
// italic field names. color_mode::automatic colours only when the FILE* is a
// terminal and NO_COLOR is unset; an ostream is never a terminal.
struct console_options {
    enum class format_kind { compact, pretty };
    format_kind format = format_kind::compact;
    color_mode color = color_mode::automatic;
    bool show_time = true;
    // Printed instead of the real time (golden tests): e.g. "2026-11-23T12:00:00.000000Z".
    std::optional<std::string> fixed_time;
    bool show_thread_ids = true;
    // Printed instead of ThreadId(NN) (golden tests).
    std::optional<std::string> fixed_thread;
    bool show_target = true;
    bool show_plugin = false;    // `[plugin]` after the level
    bool show_location = true;   // pretty: the `at file:line` line
    bool span_events = false;    // a "new" line on span creation, "close" on close
};

class console_layer final : public layer {
public:
    console_layer() : console_layer(line_writer(), console_options()) {}
    explicit console_layer(console_options opts) : console_layer(line_writer(), std::move(opts)) {}
    console_layer(line_writer out, console_options opts);
    ~console_layer() override;

    void on_new_span(span_context scope) noexcept override;
    void on_close(span_context scope) noexcept override;
    void on_suspend(span_context scope) noexcept override;
    void on_event(const event_view& ev) noexcept override;
    std::uint64_t errors() const noexcept override { return errors_.load(std::memory_order_relaxed); }
    void flush() noexcept override;

    bool colored() const noexcept { return color_; }

    // The text that on_event would write, without writing it (tests, tools).
    std::string format_event(const event_view& ev) const;

private:
    void write_span_line(span_context scope, std::string_view what) noexcept;
    void emit(std::string_view text) noexcept;

    line_writer out_;
    console_options opts_;
    bool color_ = false;
    std::mutex mutex_;  // one write at a time: blocks never interleave
    std::atomic<std::uint64_t> errors_{0};
    std::uint64_t flush_ticket_ = 0;  // buffered writer: the periodic flush
};

// ---------------------------------------------------------------------------
// json_layer: one JSON object per line, keys as tracing-subscriber's Json
// format names them, plus "plugin":
//
//   {"timestamp":"2026-11-23T12:00:00.123456Z","level":"INFO",
//    "fields":{"message":"charged","amount":1.25E1,"currency":"EUR"},
//    "target":"orders::billing","plugin":"orders",
//    "filename":"src/billing.cpp","line_number":42,       (with_location only)
//    "span":{"name":"charge","amount":1.25E1},            (leaf span; absent outside spans)
//    "spans":[{"name":"order","id":42},{"name":"charge","amount":1.25E1}],  (root -> leaf)
//    "threadId":"ThreadId(02)"}                           (with_thread_ids only)
//
// Values: bool, integers as JSON numbers (128-bit ones as numbers when they
// fit in 64 bits, else as decimal strings), finite floats as numbers in the
// exponent form Boost.JSON gave them (the shortest digits that read back the
// same: 12.5 is 1.25E1, 1.0 is 1E0), NaN and infinities as the strings
// "NaN", "inf", "-inf", strings and debug text as strings, errors as their
// message chain joined by ": ". With span_events, a
// span's creation and close are lines whose fields.message is "new" / "close"
// (and whose "span" is that span), as tracing's FmtSpan does.
struct json_options {
    std::optional<std::string> fixed_time;  // golden tests
    bool with_thread_ids = true;
    bool with_location = false;
    bool with_spans = true;   // "span" and "spans"
    bool span_events = false;
};

class json_layer final : public layer {
public:
    json_layer() : json_layer(line_writer(), json_options()) {}
    json_layer(line_writer out, json_options opts);
    ~json_layer() override;

    void on_new_span(span_context scope) noexcept override;
    void on_record(span_context scope, field_refs values) noexcept override;
    void on_close(span_context scope) noexcept override;
    void on_suspend(span_context scope) noexcept override;
    void on_event(const event_view& ev) noexcept override;
    std::uint64_t errors() const noexcept override { return errors_.load(std::memory_order_relaxed); }
    void flush() noexcept override;

    // The line on_event would write (with its '\n'), without writing it.
    std::string format_event(const event_view& ev);

private:
    struct impl;
    void write_line(const event_view& ev) noexcept;
    void write_span_event(span_context scope, const char* what) noexcept;
    void forget_span(span_context scope) noexcept;  // its cached text (impl_)
    // Into impl_->line; `cached`: with the kept span and call-site texts of impl_.
    std::string_view build_locked(const event_view& ev, bool cached);

    line_writer out_;
    json_options opts_;
    std::mutex mutex_;
    std::unique_ptr<impl> impl_;  // reused buffers, under mutex_
    std::atomic<std::uint64_t> errors_{0};
    std::uint64_t flush_ticket_ = 0;  // buffered writer: the periodic flush
};

// The output of the command-line tools: "compact" or "pretty" (console_layer)
// or "json" (json_layer), to stdout.
//
//   d.add_layer(tt::host::make_output_layer({.format = "pretty", .span_events = true}));
struct output_options {
    std::string_view format = "compact";
    color_mode color = color_mode::automatic;
    bool span_events = false;
    bool show_plugin = true;  // console formats: name the plugin of each line
    // Off a terminal, how long a line may wait in the buffer (line_writer);
    // 0 = each line written at once. A terminal always gets each line.
    std::chrono::milliseconds flush_every{50};
};
std::shared_ptr<layer> make_output_layer(const output_options& o);

}  // namespace tt::host
