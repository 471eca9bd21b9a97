// tt_bench: the benchmark suite, scenarios S1 to S11 of
// ../shared/BENCH_SCENARIOS.md, plus the comparison rows (the same loop
// without tracing, spdlog through a null sink). Google Benchmark; run with
// --benchmark_repetitions=5 --benchmark_min_time=1 and read the medians
// (tools/dev bench does; tests/bench/report.py prints the summary table).
//
// Every macro runs in a real plugin (.so, tests/bench/bench_plugin.cpp),
// found through $TT_BENCH_PLUGIN or beside this executable. Per-operation
// figures are Google Benchmark counters:
//   ns_per_event / ns_per_typical  counters with kInvert: seconds per item
//   (the report prints them in ns), computed from the timed work only.
//
// Benchmarks measure; nothing here asserts a time.
#include <tracetunnel/event_json.hpp>
#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/plugin_host.hpp>
#include <tracetunnel/host/plugin_library.hpp>
#include <tracetunnel/host/receiver.hpp>
#include <tracetunnel/state_file.hpp>

#include <benchmark/benchmark.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------------------
// Helpers

[[noreturn]] void die(const std::string& what)
{
    std::fprintf(stderr, "tt_bench: %s\n", what.c_str());
    std::exit(2);
}

fs::path plugin_path()
{
    if (const char* p = std::getenv("TT_BENCH_PLUGIN"))
        return p;
    return fs::read_symlink("/proc/self/exe").parent_path() / "libtt_bench_plugin.so";
}

fs::path make_temp_dir(const char* what)
{
    std::string tmpl = (fs::temp_directory_path() / (std::string("tt-bench-") + what + ".XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr)
        die("mkdtemp failed");
    return tmpl;
}

// Resident set size in bytes (/proc/self/statm).
std::uint64_t rss_bytes()
{
    std::ifstream in("/proc/self/statm");
    std::uint64_t size = 0, resident = 0;
    in >> size >> resident;
    return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

// Bytes malloc has handed out and not got back: chunks inside the arenas
// plus big chunks malloc maps on their own (hblkhd). Leaving out the mapped
// ones made S11 depend on what ran before it (glibc raises its mmap
// threshold after freeing a big mapped chunk, so the same tables moved
// between the two counts).
std::uint64_t heap_in_use()
{
    const auto mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

// Google Benchmark sums each counter over a run's threads and then also
// multiplies it by the iterations of all threads: a counter of "items per
// iteration" set by each of two threads came out twice the true rate (every
// S9 two-thread figure before session 14). kAvgThreads takes the sum back to
// one thread's value; with one thread it changes nothing.
const auto items_rate = benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kAvgThreads;

// Seconds per item (of all threads together), as Google Benchmark computes
// a rate and inverts it.
benchmark::Counter per_item(double items_per_iteration)
{
    return benchmark::Counter(items_per_iteration, items_rate | benchmark::Counter::kInvert);
}

// The only layer of S3, S4, S9: counts events and spans (per thread, so the
// count itself is not a shared cache line in S9). Span ids are handed out by
// the dispatcher. It reads nothing of the spans and says so (layer::reads),
// as any counting or filtering layer may.
class counting_layer final : public tt::host::layer {
public:
    tt::host::layer_reads reads() const noexcept override { return {.span_fields = false, .span_context = false}; }
    void on_new_span(tt::host::span_context) noexcept override { ++spans_; }
    void on_event(const tt::host::event_view&) noexcept override { ++events_; }
    static std::uint64_t events() noexcept { return events_; }

private:
    static inline thread_local std::uint64_t events_ = 0;
    static inline thread_local std::uint64_t spans_ = 0;
};

tt::host::quotas big_quotas()
{
    tt::host::quotas q;
    q.max_live_spans = std::size_t{1} << 20;
    q.max_string_bytes = std::size_t{256} << 20;
    return q;
}

std::shared_ptr<tt::host::dispatcher> make_dispatcher(std::shared_ptr<tt::host::layer> l)
{
    auto parsed = tt::host::parse_filter("info");
    auto d = std::make_shared<tt::host::dispatcher>(std::get<tt::host::filter>(parsed));
    d->add_layer(std::move(l));
    return d;
}

// A plugin_host with the bench plugin loaded (shadow copy), in front of a
// dispatcher with one layer.
struct hosted {
    std::shared_ptr<tt::host::dispatcher> pipeline;
    fs::path shadow_root;
    std::unique_ptr<tt::host::plugin_host> host;

    hosted(std::shared_ptr<tt::host::layer> l, tt::host::plugin_host_options opts = {})
        : pipeline(make_dispatcher(std::move(l)))
    {
        opts.limits = big_quotas();
        // Each host its own shadow folder: without one, two plugin_hosts of
        // one process both use <tmp>/tracetunnel-shadow/<pid>/ and number
        // their copies from 1, so the second overwrites the first's mapped
        // copy (a crash in dlsym). See docs/PERFORMANCE.md.
        if (opts.shadow_dir.empty())
            opts.shadow_dir = shadow_root = make_temp_dir("shadow");
        host = std::make_unique<tt::host::plugin_host>(*pipeline, std::move(opts));
        auto r = host->load(plugin_path());
        if (auto* e = std::get_if<tt::host::load_error>(&r))
            die(e->message());
    }
    ~hosted()
    {
        host.reset();
        std::error_code ec;
        if (!shadow_root.empty())
            fs::remove_all(shadow_root, ec);
    }
    hosted(const hosted&) = delete;
    hosted& operator=(const hosted&) = delete;
    std::uint64_t groups(std::uint64_t first, std::uint64_t n)
    {
        return host->call<std::uint64_t, std::uint64_t, std::uint64_t>("bench", "bench_groups", first, n).value();
    }
};

// ---------------------------------------------------------------------------
// The plugin mapped directly (open_plugin), started with hosts of our own:
// a recorder (S3's stream), a receiver (S5's spans), a copier (S2).

// Records every event with its values (strings stay pointers into the
// plugin's read-only data, which stays mapped).
struct recorder {
    std::vector<tt_event> events;
    std::vector<tt_field_value> values;
    std::vector<std::size_t> value_at;  // per event: index into values
    std::uint64_t next_span = 1;

    static std::uint64_t emit(void* ctx, const tt_event* ev)
    {
        auto* r = static_cast<recorder*>(ctx);
        r->events.push_back(*ev);
        r->value_at.push_back(r->values.size());
        r->values.insert(r->values.end(), ev->values, ev->values + ev->value_count);
        if (ev->kind == TT_EVENT_NEW_CALLSITE)
            return TT_INTEREST_ALWAYS;
        if (ev->kind == TT_EVENT_NEW_SPAN)
            return r->next_span++;
        return TT_STATUS_OK;
    }
    void fix_pointers()
    {
        for (std::size_t i = 0; i < events.size(); ++i)
            events[i].values = events[i].value_count ? values.data() + value_at[i] : nullptr;
        value_at.clear();
        value_at.shrink_to_fit();
    }
};

// S2's host: emit copies the event and its values into a pre-reserved buffer.
struct copier {
    static void copy_words(unsigned char* to, const void* from, std::size_t bytes) noexcept
    {
        const auto* src = static_cast<const unsigned char*>(from);
        for (std::size_t k = 0; k < bytes; k += 8) {
            std::uint64_t w;
            std::memcpy(&w, src + k, 8);
            asm("" : "+r"(w));  // keeps the compiler from merging words into 16-byte moves again
            std::memcpy(to + k, &w, 8);
        }
    }

    std::vector<unsigned char> buf = std::vector<unsigned char>(std::size_t{1} << 20);
    std::size_t pos = 0;
    std::uint64_t next_span = 1;

    static std::uint64_t emit(void* ctx, const tt_event* ev)
    {
        auto* c = static_cast<copier*>(ctx);
        const std::uint32_t n = ev->value_count;
        if (c->pos + sizeof(tt_event) + std::size_t{n} * sizeof(tt_field_value) > c->buf.size())
            c->pos = 0;
        // Word by word: a plugin builds the event with stores of 4 and 8
        // bytes, and a 16-byte load across two of them (what memcpy does)
        // waits for both stores to retire instead of being forwarded.
        static_assert(sizeof(tt_event) % 8 == 0 && sizeof(tt_field_value) % 8 == 0);
        unsigned char* at = c->buf.data() + c->pos;
        copy_words(at, ev, sizeof(tt_event));
        at += sizeof(tt_event);
        const tt_field_value* const values = ev->values;
        for (std::uint32_t i = 0; i < n; ++i, at += sizeof(tt_field_value))
            copy_words(at, values + i, sizeof(tt_field_value));
        c->pos = static_cast<std::size_t>(at - c->buf.data());
        if (ev->kind == TT_EVENT_NEW_CALLSITE)
            return TT_INTEREST_ALWAYS;
        if (ev->kind == TT_EVENT_NEW_SPAN)
            return c->next_span++;
        return TT_STATUS_OK;
    }
};

std::uint64_t to_receiver(void* ctx, const tt_event* ev)
{
    return static_cast<tt::host::receiver*>(ctx)->receive(*ev);
}

constexpr std::uint64_t s3_groups = 100'000;  // 1,000,000 typical events, 1.4 M events
constexpr std::uint64_t s5_spans = 100'000;

struct direct_env {
    std::shared_ptr<tt::host::plugin_library> lib;
    recorder stream;  // S3: 100k groups as the plugin sent them
    std::vector<const tt_event*> registrations;
    const tt_callsite* event_site = nullptr;  // the typical event's call site
    const tt_callsite* group_site = nullptr;
    // S5: a receiver holding 100k live spans
    std::shared_ptr<tt::host::dispatcher> s5_pipeline = make_dispatcher(std::make_shared<counting_layer>());
    std::unique_ptr<tt::host::receiver> s5_receiver;
    // S2
    copier copy;
    std::uint64_t (*typical_in_span)(std::uint64_t, std::uint64_t) = nullptr;

    tt_host host_for(tt_emit_fn fn, void* ctx) const
    {
        tt_host h{};
        h.struct_size = sizeof(tt_host);
        h.abi_version = TT_ABI_VERSION;
        h.emit = fn;
        h.ctx = ctx;
        return h;
    }
    direct_env()
    {
        auto opened = tt::host::open_plugin(plugin_path());
        if (auto* e = std::get_if<tt::host::load_error>(&opened))
            die(e->message());
        lib = std::get<std::shared_ptr<tt::host::plugin_library>>(opened);
        auto groups = lib->find_export<std::uint64_t(std::uint64_t, std::uint64_t)>("bench_groups");
        auto open_spans = lib->find_export<std::uint64_t(std::uint64_t)>("bench_open_spans");
        auto close_spans = lib->find_export<void()>("bench_close_spans");
        typical_in_span = lib->find_export<std::uint64_t(std::uint64_t, std::uint64_t)>("bench_typical_in_span");
        if (!groups || !open_spans || !close_spans || !typical_in_span)
            die("bench plugin lacks an export");

        // 1. Record S3's stream.
        stream.events.reserve(s3_groups * 14 + 64);
        stream.values.reserve(s3_groups * 31 + 256);
        start_or_die(&recorder::emit, &stream);
        groups(0, s3_groups);
        lib->stop();
        stream.fix_pointers();
        for (const auto& ev : stream.events)
            if (ev.kind == TT_EVENT_NEW_CALLSITE) {
                const std::string_view name(ev.callsite->name.ptr, ev.callsite->name.len);
                if (ev.callsite->kind == TT_CALLSITE_SPAN && name == "group")
                    group_site = ev.callsite;
                // The plugin's only info event with 4 fields (message, a, b, c).
                else if (ev.callsite->kind == TT_CALLSITE_EVENT && ev.callsite->level == TT_LEVEL_INFO &&
                         ev.callsite->field_count == 4)
                    event_site = ev.callsite;
            }

        // 2. S5's receiver and its 100k spans, sent by the plugin.
        s5_receiver = std::make_unique<tt::host::receiver>("bench", *s5_pipeline, tt::host::receiver_state{},
                                                           big_quotas());
        start_or_die(&to_receiver, s5_receiver.get());
        if (open_spans(s5_spans) != s5_spans)
            die("S5: spans not opened");
        lib->stop();        // the handles stay open on the host's side
        close_spans();      // no host now: nothing is sent, the spans stay live in s5_receiver
        if (s5_receiver->stats().live_spans != s5_spans)
            die("S5: receiver has " + std::to_string(s5_receiver->stats().live_spans) + " live spans");

        // 3. S2: started with the copier from here on.
        start_or_die(&copier::emit, &copy);
    }
    void start_or_die(tt_emit_fn fn, void* ctx)
    {
        auto r = lib->start(host_for(fn, ctx));
        if (auto* e = std::get_if<tt::host::load_error>(&r))
            die(e->message());
    }
};

direct_env& direct()
{
    static direct_env env;
    return env;
}

// ---------------------------------------------------------------------------
// Comparison rows

// The same loop as the typical event, without tracing: the values are made
// and handed to the optimizer's black box.
void BM_baseline_no_tracing(benchmark::State& state)
{
    std::uint64_t i = 0;
    const char* b = "hello world";
    for (auto _ : state) {
        auto a = static_cast<std::int64_t>(i);
        double c = static_cast<double>(i) * 0.5;
        benchmark::DoNotOptimize(a);
        benchmark::DoNotOptimize(b);
        benchmark::DoNotOptimize(c);
        ++i;
    }
    state.counters["ns_per_typical"] = per_item(1);
}
BENCHMARK(BM_baseline_no_tracing);

std::shared_ptr<spdlog::logger> null_logger()
{
    static auto logger = [] {
        auto l = std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
        l->set_level(spdlog::level::info);
        return l;
    }();
    return logger;
}

// spdlog: the typical event (message + a, b, c) at info, through a null sink.
void BM_spdlog_typical_null_sink(benchmark::State& state)
{
    auto logger = null_logger();
    std::uint64_t i = 0;
    for (auto _ : state) {
        logger->info("event message a={} b={} c={}", static_cast<std::int64_t>(i), "hello world",
                     static_cast<double>(i) * 0.5);
        ++i;
    }
    state.counters["ns_per_typical"] = per_item(1);
}
BENCHMARK(BM_spdlog_typical_null_sink);

// spdlog's disabled call (trace while the level is info): compare with S1.
void BM_spdlog_disabled(benchmark::State& state)
{
    auto logger = null_logger();
    std::uint64_t i = 0;
    for (auto _ : state) {
        logger->trace("disabled event a={}", static_cast<std::int64_t>(i));
        ++i;
    }
    state.counters["ns_per_call"] = per_item(1);
}
BENCHMARK(BM_spdlog_disabled);

// ---------------------------------------------------------------------------
// S1: a trace-level event with one field under the host's info filter. The
// registration answer is NEVER; the loop runs in the plugin.

hosted& counting_host()
{
    static hosted h(std::make_shared<counting_layer>());
    return h;
}

void BM_S1_disabled_callsite(benchmark::State& state)
{
    auto& h = counting_host();
    constexpr std::uint64_t batch = 1'000'000;
    for (auto _ : state)
        benchmark::DoNotOptimize(h.host->call<std::uint64_t, std::uint64_t>("bench", "bench_disabled", batch));
    state.counters["ns_per_call"] = per_item(batch);
}
BENCHMARK(BM_S1_disabled_callsite);

// ---------------------------------------------------------------------------
// S2: the sender only. The typical event in one entered span, into a host
// whose emit copies the event into a pre-reserved buffer.

void BM_S2_sender_only(benchmark::State& state)
{
    auto& env = direct();
    constexpr std::uint64_t batch = 100'000;
    std::uint64_t first = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(env.typical_in_span(first, batch));
        first += batch;
    }
    state.counters["ns_per_typical"] = per_item(batch);
}
BENCHMARK(BM_S2_sender_only);

// ---------------------------------------------------------------------------
// S3: the receiver only. The recorded stream (100k groups: 1M typical events,
// 1.4M events) replayed from memory through a receiver into a dispatcher
// whose only layer counts. The NEW_SPAN answers are mapped onto the later
// events of the group (the stream was recorded with other ids).

void BM_S3_receiver_only(benchmark::State& state)
{
    auto& env = direct();
    auto pipeline = make_dispatcher(std::make_shared<counting_layer>());
    tt::host::receiver recv("bench", *pipeline, {}, big_quotas());
    std::size_t first = 0;
    while (first < env.stream.events.size() && env.stream.events[first].kind == TT_EVENT_NEW_CALLSITE)
        (void)recv.receive(env.stream.events[first++]);
    const std::size_t total = env.stream.events.size() - first;
    std::uint64_t errors = 0;
    for (auto _ : state) {
        std::uint64_t live = 0;  // the receiver's id for the group being replayed
        for (std::size_t k = first; k < env.stream.events.size(); ++k) {
            tt_event ev = env.stream.events[k];
            if (ev.kind == TT_EVENT_NEW_SPAN) {
                live = recv.receive(ev);
                errors += (live == 0 || TT_STATUS_IS_ERROR(live)) ? 1 : 0;
                continue;
            }
            if (ev.span_id != 0)
                ev.span_id = live;
            errors += TT_STATUS_IS_ERROR(recv.receive(ev)) ? 1 : 0;
        }
    }
    if (errors != 0)
        state.SkipWithError("receiver refused events");
    state.counters["events"] = static_cast<double>(total);
    state.counters["ns_per_event"] = per_item(static_cast<double>(total));
    state.counters["ns_per_typical"] = per_item(static_cast<double>(s3_groups * 10));
}
BENCHMARK(BM_S3_receiver_only)->Unit(benchmark::kMillisecond);

// S3r, for reference: S3's loop reading the recording (1.4 M tt_event and
// 4.1 M tt_field_value, about 177 MB) without a receiver. S3 pays this
// stream on top of the receiver's work; a plugin's emit (S4) does not.
void BM_S3r_recording_read(benchmark::State& state)
{
    auto& env = direct();
    for (auto _ : state) {
        std::uint64_t sum = 0;
        for (const auto& ev : env.stream.events) {
            sum += ev.span_id + ev.kind;
            for (std::uint32_t i = 0; i < ev.value_count; ++i)
                sum += ev.values[i].as.u64;
        }
        benchmark::DoNotOptimize(sum);
    }
    state.counters["ns_per_event"] = per_item(static_cast<double>(env.stream.events.size()));
    state.counters["MB_per_pass"] = static_cast<double>(env.stream.events.size() * sizeof(tt_event) +
                                                         env.stream.values.size() * sizeof(tt_field_value)) /
                                    1e6;
}
BENCHMARK(BM_S3r_recording_read)->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// S4, S7, S8: the plugin emits groups through plugin_host (emit context,
// receiver, dispatcher) into one layer. S9: the same from two threads.

constexpr std::uint64_t group_batch = 10'000;  // 140,000 events per iteration

void run_groups(benchmark::State& state, hosted& h)
{
    std::uint64_t first = static_cast<std::uint64_t>(state.thread_index()) << 40;
    for (auto _ : state) {
        benchmark::DoNotOptimize(h.groups(first, group_batch));
        first += group_batch;
    }
    state.counters["ns_per_event"] = per_item(group_batch * 14);
    state.counters["ns_per_typical"] = per_item(group_batch * 10);
    state.counters["events_per_s"] =
        benchmark::Counter(group_batch * 14, items_rate);
}

void BM_S4_full_pipeline(benchmark::State& state) { run_groups(state, counting_host()); }
BENCHMARK(BM_S4_full_pipeline)->Unit(benchmark::kMillisecond);

std::FILE* dev_null()
{
    static std::FILE* f = std::fopen("/dev/null", "w");
    if (f == nullptr)
        die("cannot open /dev/null");
    return f;
}

// S7 / S8 as a host gets them by default: line_writer(FILE*) on /dev/null,
// not a terminal, so buffered (whole lines, one write(2) per 32 KiB, a
// flush at least every 50 ms and before each commit).
void BM_S7_console_layer(benchmark::State& state)
{
    static hosted h([] {
        tt::host::console_options o;
        o.color = tt::host::color_mode::never;
        return std::make_shared<tt::host::console_layer>(tt::host::line_writer(dev_null()), o);
    }());
    run_groups(state, h);
}
BENCHMARK(BM_S7_console_layer)->Unit(benchmark::kMillisecond);

void BM_S8_json_layer(benchmark::State& state)
{
    static hosted h(std::make_shared<tt::host::json_layer>(tt::host::line_writer(dev_null()), tt::host::json_options{}));
    run_groups(state, h);
}
BENCHMARK(BM_S8_json_layer)->Unit(benchmark::kMillisecond);

// The same two writing each line through as it is made (line_writer::
// each_line: one write(2) per line, what a terminal gets), for reference.
std::FILE* dev_null_each_line()
{
    static std::FILE* f = std::fopen("/dev/null", "w");
    if (f == nullptr)
        die("cannot open /dev/null");
    return f;
}

void BM_S7w_console_layer_each_line(benchmark::State& state)
{
    static hosted h([] {
        tt::host::console_options o;
        o.color = tt::host::color_mode::never;
        return std::make_shared<tt::host::console_layer>(tt::host::line_writer::each_line(dev_null_each_line()), o);
    }());
    run_groups(state, h);
}
BENCHMARK(BM_S7w_console_layer_each_line)->Unit(benchmark::kMillisecond);

void BM_S8w_json_layer_each_line(benchmark::State& state)
{
    static hosted h(std::make_shared<tt::host::json_layer>(tt::host::line_writer::each_line(dev_null_each_line()),
                                                          tt::host::json_options{}));
    run_groups(state, h);
}
BENCHMARK(BM_S8w_json_layer_each_line)->Unit(benchmark::kMillisecond);

// S9p, for reference, run just before S9: how long one cache line takes to
// go from one thread to the other and back (ns per one-way transfer). On
// this VM the two vCPUs sit on nearby cores for minutes (25 to 40 ns) and
// far apart for minutes (165 to 300 ns), and S9's two-thread figure follows
// (docs/PERFORMANCE.md, round 12): this row tells which mode a run had.
void BM_S9p_line_transfer(benchmark::State& state)
{
    constexpr std::uint32_t trips = 20'000;
    for (auto _ : state) {
        alignas(64) std::atomic<std::uint32_t> ball{0};
        // The helper answers each odd value with the next even one; the
        // first answer says it is running, so its start is not timed.
        std::thread helper([&ball] {
            for (std::uint32_t i = 0; i <= trips; ++i) {
                while (ball.load(std::memory_order_acquire) != 2 * i + 1) {
                }
                ball.store(2 * i + 2, std::memory_order_release);
            }
        });
        ball.store(1, std::memory_order_release);
        while (ball.load(std::memory_order_acquire) != 2) {
        }
        const auto t0 = steady::now();
        for (std::uint32_t i = 1; i <= trips; ++i) {
            ball.store(2 * i + 1, std::memory_order_release);
            while (ball.load(std::memory_order_acquire) != 2 * i + 2) {
            }
        }
        const auto t1 = steady::now();
        helper.join();
        state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    }
    state.counters["ns_per_transfer"] = per_item(2.0 * trips);
}
BENCHMARK(BM_S9p_line_transfer)->UseManualTime()->Unit(benchmark::kMillisecond);

// Real time: the figure is the total events per second of all threads.
void BM_S9_threads(benchmark::State& state) { run_groups(state, counting_host()); }
BENCHMARK(BM_S9_threads)->Unit(benchmark::kMillisecond)->UseRealTime()->Threads(1)->Threads(2);

// ---------------------------------------------------------------------------
// S5: persist and restore 100k live spans (3 fields each): persist metadata
// and spans, encode (metadata JSON, spans binary), decode, construct a new receiver. Each step
// is a counter in ms; the iteration time is their sum (manual time). Decode
// reads the two files (written untimed, page cache) with load_lineage_state,
// the only public decoder.

void BM_S5_persist_restore(benchmark::State& state)
{
    auto& env = direct();
    auto& recv = *env.s5_receiver;
    const fs::path dir = make_temp_dir("s5");
    double t_persist = 0, t_encode = 0, t_decode = 0, t_construct = 0;
    std::size_t meta_bytes = 0, span_bytes = 0;
    for (auto _ : state) {
        const auto t0 = steady::now();
        auto metadata = recv.persist_metadata();
        auto spans = recv.persist();
        const auto t1 = steady::now();
        std::string meta_text = tt::state::encode_metadata("bench", metadata);
        std::string span_text = tt::state::encode_spans("bench", spans);
        const auto t2 = steady::now();
        {
            std::ofstream(tt::state::metadata_path(dir, "bench"), std::ios::binary) << meta_text;
            std::ofstream(tt::state::spans_path(dir, "bench"), std::ios::binary) << span_text;
        }
        const auto t3 = steady::now();
        auto loaded = tt::state::load_lineage_state(dir, "bench", tt::state::on_bad_file::keep);
        const auto t4 = steady::now();
        if (loaded.status != tt::state::load_status::loaded || loaded.state.spans.spans.size() != s5_spans) {
            state.SkipWithError("S5: state did not load back");
            break;
        }
        auto next = std::make_unique<tt::host::receiver>("bench", *env.s5_pipeline, std::move(loaded.state),
                                                         big_quotas());
        const auto t5 = steady::now();
        benchmark::DoNotOptimize(next.get());
        next.reset();  // untimed
        auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
        t_persist += ms(t0, t1);
        t_encode += ms(t1, t2);
        t_decode += ms(t3, t4);
        t_construct += ms(t4, t5);
        meta_bytes = meta_text.size();
        span_bytes = span_text.size();
        state.SetIterationTime(std::chrono::duration<double>((t2 - t0) + (t5 - t3)).count());
    }
    const auto avg = benchmark::Counter::kAvgIterations;
    state.counters["persist_ms"] = benchmark::Counter(t_persist, avg);
    state.counters["encode_ms"] = benchmark::Counter(t_encode, avg);
    state.counters["decode_ms"] = benchmark::Counter(t_decode, avg);
    state.counters["construct_ms"] = benchmark::Counter(t_construct, avg);
    state.counters["total_ms"] = benchmark::Counter(t_persist + t_encode + t_decode + t_construct, avg);
    state.counters["spans_file_bytes_per_span"] = static_cast<double>(span_bytes) / s5_spans;
    state.counters["metadata_json_bytes"] = static_cast<double>(meta_bytes);
    std::error_code ec;
    fs::remove_all(dir, ec);
}
BENCHMARK(BM_S5_persist_restore)->Unit(benchmark::kMillisecond)->UseManualTime();

// ---------------------------------------------------------------------------
// S6: wire size of the JSON form (docs/FORMAT.md) of the typical event, a new
// span, enter, exit, drop; plus the time to encode the typical event.

void BM_S6_wire_size(benchmark::State& state)
{
    auto& env = direct();
    if (env.event_site == nullptr || env.group_site == nullptr) {
        state.SkipWithError("S6: call sites not found");
        return;
    }
    const std::uint64_t i = 123'456;
    tt::model::new_event typical;
    typical.callsite_id = env.event_site->id;
    typical.values = {{"message", std::string("event message")},
                      {"a", static_cast<std::int64_t>(i)},
                      {"b", std::string("hello world")},
                      {"c", static_cast<double>(i) * 0.5}};
    tt::model::new_span span;
    span.id = 12'346;
    span.callsite_id = env.group_site->id;
    span.values = {{"g", static_cast<std::int64_t>(12'345)}};
    const tt::model::event ev_typical = typical, ev_span = span;
    const tt::model::event ev_enter = tt::model::span_entered{12'346}, ev_exit = tt::model::span_exited{12'346},
                           ev_drop = tt::model::span_dropped{12'346};
    std::string out;
    for (auto _ : state) {
        out.clear();
        tt::model::to_json_line(ev_typical, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.counters["bytes_typical_event"] = static_cast<double>(tt::model::to_json_line(ev_typical).size());
    state.counters["bytes_new_span"] = static_cast<double>(tt::model::to_json_line(ev_span).size());
    state.counters["bytes_enter"] = static_cast<double>(tt::model::to_json_line(ev_enter).size());
    state.counters["bytes_exit"] = static_cast<double>(tt::model::to_json_line(ev_exit).size());
    state.counters["bytes_drop"] = static_cast<double>(tt::model::to_json_line(ev_drop).size());
    state.counters["ns_encode_typical"] = per_item(1);
}
BENCHMARK(BM_S6_wire_size);

// ---------------------------------------------------------------------------
// S10: hot reload with 10,000 live spans, timed around plugin_host::reload
// (what the watcher calls once it has seen the file change settle) until the
// new instance runs. With a state folder (as tt-host runs: the commit writes
// and fsyncs the lineage files) and without one (memory only). A commit
// skips files whose bytes did not change, so back-to-back reloads of an idle
// plugin write nothing after the first; the "changed" variant opens one more
// span before each reload (untimed), so that every reload must write the
// spans and the plugin state, as after real work.

constexpr std::uint64_t s10_spans = 10'000;

void run_reloads(benchmark::State& state, bool with_state_dir, bool change_spans = false)
{
    tt::host::plugin_host_options opts;
    fs::path dir;
    if (with_state_dir) {
        dir = make_temp_dir("s10");
        opts.state_dir = dir;
    }
    {
        hosted h(std::make_shared<counting_layer>(), opts);
        if (h.host->call<std::uint64_t, std::uint64_t>("bench", "bench_open_spans", s10_spans).value_or(0) !=
            s10_spans)
            die("S10: spans not opened");
        std::uint64_t failed = 0;
        std::uint64_t opened = 0;
        double plugin_reported_us = 0;
        for (auto _ : state) {
            if (change_spans && h.host->call<std::uint64_t, std::uint64_t>("bench", "bench_open_spans", 1))
                ++opened;  // (the export answers the plugin's count of held spans)
            const auto t0 = steady::now();
            auto report = h.host->reload("bench");
            const auto t1 = steady::now();
            state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
            failed += report.ok() ? 0 : 1;
            plugin_reported_us += static_cast<double>(report.took.count());
        }
        const auto live = h.host->plugin("bench")->stats.live_spans;
        if (failed != 0 || live != s10_spans + opened)
            state.SkipWithError("S10: a reload failed or spans were lost");
        state.counters["live_spans"] = static_cast<double>(live);
        state.counters["host_reported_ms"] =
            benchmark::Counter(plugin_reported_us / 1000.0, benchmark::Counter::kAvgIterations);
        h.host->call<std::uint64_t>("bench", "bench_close_spans");
    }
    if (with_state_dir) {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
}

void BM_S10_reload_state_dir(benchmark::State& state) { run_reloads(state, true); }
BENCHMARK(BM_S10_reload_state_dir)->Unit(benchmark::kMillisecond)->UseManualTime();
void BM_S10_reload_memory_only(benchmark::State& state) { run_reloads(state, false); }
BENCHMARK(BM_S10_reload_memory_only)->Unit(benchmark::kMillisecond)->UseManualTime();
void BM_S10_reload_state_dir_changed(benchmark::State& state) { run_reloads(state, true, true); }
BENCHMARK(BM_S10_reload_state_dir_changed)->Unit(benchmark::kMillisecond)->UseManualTime();

// ---------------------------------------------------------------------------
// S11: memory. (a) Host heap per live span: malloc'd bytes in use before and
// after the plugin opens 100k spans (receiver table, local spans, dispatcher
// registry), less the plugin's own vector of handles. (b) RSS after 1,000
// reloads with 10k live spans against RSS after 10 (each measured once the
// retired libraries' grace has passed and a commit reaped them).
// One run: these are sizes, not times.

void BM_S11_memory(benchmark::State& state)
{
    constexpr std::uint64_t spans = 100'000;
    double per_span = 0, rss_per_span = 0, rss10 = 0, rss1000 = 0, heap10 = 0, heap1000 = 0;
    for (auto _ : state) {
        {
            hosted h(std::make_shared<counting_layer>());
            h.host->call<std::uint64_t, std::uint64_t>("bench", "bench_open_spans", 1);  // warm the tables
            h.host->call<std::uint64_t>("bench", "bench_close_spans");
            const auto plugin0 = h.host->call<std::uint64_t>("bench", "bench_held_bytes").value_or(0);
            const auto heap0 = heap_in_use();
            const auto rss0 = rss_bytes();
            h.host->call<std::uint64_t, std::uint64_t>("bench", "bench_open_spans", spans);
            const auto heap1 = heap_in_use();
            const auto rss1 = rss_bytes();
            const auto plugin1 = h.host->call<std::uint64_t>("bench", "bench_held_bytes").value_or(0);
            per_span = (static_cast<double>(heap1 - heap0) - static_cast<double>(plugin1 - plugin0)) / spans;
            rss_per_span = static_cast<double>(rss1 - rss0) / spans;
            h.host->call<std::uint64_t>("bench", "bench_close_spans");
        }
        const fs::path dir = make_temp_dir("s11");
        {
            tt::host::plugin_host_options opts;
            opts.state_dir = dir;
            hosted h(std::make_shared<counting_layer>(), opts);
            h.host->call<std::uint64_t, std::uint64_t>("bench", "bench_open_spans", s10_spans);
            const auto grace = h.host->options().retire_grace;
            for (int n = 1; n <= 1000; ++n) {
                if (!h.host->reload("bench").ok())
                    die("S11: reload failed");
                if (n == 10 || n == 1000) {
                    std::this_thread::sleep_for(grace + 100ms);
                    (void)h.host->commit();  // reaps retired instances (and trims the heap)
                    (n == 10 ? rss10 : rss1000) = static_cast<double>(rss_bytes());
                    (n == 10 ? heap10 : heap1000) = static_cast<double>(heap_in_use());
                }
            }
            h.host->call<std::uint64_t>("bench", "bench_close_spans");
        }
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    state.counters["host_heap_bytes_per_live_span"] = per_span;
    state.counters["rss_bytes_per_live_span"] = rss_per_span;
    state.counters["rss_after_10_reloads_MiB"] = rss10 / 1048576.0;
    state.counters["rss_after_1000_reloads_MiB"] = rss1000 / 1048576.0;
    state.counters["rss_growth_pct"] = rss10 > 0 ? (rss1000 - rss10) / rss10 * 100.0 : 0;
    // The heap in use between the same two points: what RSS growth is made of
    // (a leak per reload shows here; allocator slack and page cache do not).
    state.counters["heap_growth_bytes_per_reload"] = (heap1000 - heap10) / 990.0;
}
BENCHMARK(BM_S11_memory)->Iterations(1)->Repetitions(1)->Unit(benchmark::kSecond);

}  // namespace

int main(int argc, char** argv)
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::AddCustomContext("plugin", plugin_path().string());
    benchmark::AddCustomContext("build", TT_BENCH_BUILDTYPE);
    benchmark::AddCustomContext("compiler", TT_BENCH_COMPILER);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
