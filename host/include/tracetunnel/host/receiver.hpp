// The receiver: one per plugin lineage. Validates every event a plugin emits,
// keeps the lineage's call sites and live spans, and relays into the host's
// subscriber (pipeline.hpp). The model is tracing-tunnel's
// TracingEventReceiver, with typed errors that change nothing, quotas, owned
// strings and a persisted next-id counter.
//
//   tt::host::capture_layer pipeline;
//   tt::host::receiver recv("orders", pipeline);
//   std::uint64_t answer = recv.receive(abi_event);  // never throws, never fails
//   auto r = recv.try_receive(abi_event);            // or: typed error, nothing changed
//   if (!r) log(r.error().message);
//
// Persistence splits state as tracing-tunnel does: call sites
// (persist_metadata), live spans (persist, a commit) and the pipeline's
// handles for them (local_spans, RAM only, handed from one receiver to the
// next on a plugin reload).
#pragma once

#include <tracetunnel/host/pipeline.hpp>
#include <tracetunnel/model.hpp>
#include <tracetunnel/persisted.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tt::host {

// Why an event was refused. Each maps to one TT_STATUS_* code (status_of).
enum class receive_errc : std::uint32_t {
    malformed = 0,        // struct_size too small, NULL pointer with a length, bad enum value
    unknown_event_kind,   // tt_event.kind not known
    unknown_callsite,     // call-site id never registered
    wrong_callsite_kind,  // a span from an event call site, or the reverse
    unknown_span,         // span id unknown or already closed
    callsite_conflict,    // call-site id registered again with different data
    too_many_values,      // more values than quotas::max_values_per_event
    unknown_field,        // a value for a field the call site does not declare
    invalid_utf8,         // any string: names, values, call-site data
    quota_exceeded,       // call sites, live spans, string bytes, lengths, nesting depth
    wrong_thread,         // a span exited on a thread where it is not entered (it is on another)
};
inline constexpr std::size_t receive_errc_count = 11;

std::string_view to_string(receive_errc e) noexcept;
// The TT_STATUS_* code (without the error bit) reported for an error.
std::uint32_t status_of(receive_errc e) noexcept;

struct receive_error {
    receive_errc code = receive_errc::malformed;
    std::string message;
};

// The outcome of try_receive: the ABI answer, or a typed error.
class receive_result {
public:
    receive_result(std::uint64_t answer) noexcept : answer_(answer) {}  // NOLINT: implicit on purpose
    receive_result(receive_error error) : error_(std::move(error)) {}   // NOLINT

    bool has_value() const noexcept { return !error_; }
    explicit operator bool() const noexcept { return has_value(); }
    // The answer per abi.h: interest for NEW_CALLSITE, the span id for
    // NEW_SPAN (0 when filtered out), a TT_STATUS_* otherwise.
    std::uint64_t value() const noexcept { return answer_; }
    const receive_error& error() const noexcept { return *error_; }

private:
    std::uint64_t answer_ = 0;
    std::optional<receive_error> error_;
};

// Per-lineage limits. A violation is a typed error (and counted by receive()).
struct quotas {
    std::size_t max_callsites = 4096;
    // A receiver takes at most 2^23 live spans and 2^39 string bytes (512
    // GiB), whatever these say: it counts both in one 64-bit word.
    std::size_t max_live_spans = 65536;
    std::size_t max_values_per_event = 32;  // tracing-tunnel's MAX_VALUES; violation: too_many_values
    std::size_t max_string_bytes = std::size_t{16} << 20;  // call-site strings + live span values
    // Checked before a byte is read, so a length that runs past the plugin's
    // buffer is refused instead of followed (violation: quota_exceeded).
    std::size_t max_string_length = std::size_t{1} << 20;  // one string (any name, value, error entry)
    std::size_t max_fields_per_callsite = 1024;
    std::size_t max_error_chain = 64;  // entries of one error value
    // Parent chain length of a span (1 = a root); deeper is refused, so that
    // nothing downstream walks an unbounded chain. A span entry keeps its
    // depth in 16 bits, so more than 65534 is refused whatever this says.
    std::size_t max_span_depth = 512;
    std::size_t error_log_size = 16;  // receive() keeps the last N error messages
};

// The persisted state lives in state/ (tracetunnel/persisted.hpp); these
// names keep the receiver's spelling.
using persisted_span = tt::state::persisted_span;
using persisted_spans = tt::state::persisted_spans;
using persisted_metadata = tt::state::persisted_metadata;

// The pipeline's handles for a lineage's live spans, and how often each is
// entered on each thread: RAM only. Shared between consecutive receivers of a
// lineage (a plugin reload); a host restart starts without it, and persisted
// spans then get pipeline spans lazily. Whatever is left when the last owner
// lets go is force-exited and closed in the pipeline, so no span leaks.
namespace detail {
// A receiver gives span ids to a thread in blocks of this many, and all of a
// block's spans sit in one shard (receiver and local_spans alike). Large,
// so that a shard seldom changes owner thread: each change moves its lines
// between cores (docs/PERFORMANCE.md, round 12).
inline constexpr std::uint64_t span_id_block = 512;
}  // namespace detail

class local_spans {
public:
    explicit local_spans(subscriber& pipeline);
    local_spans(const local_spans&) = delete;
    local_spans& operator=(const local_spans&) = delete;
    ~local_spans();

    std::size_t size() const;
    // Lets the pipeline go of every span without closing it (they are
    // committed and continue in a later process): force-exits what is
    // entered and suspends the rest. Call after the lineage's last commit.
    void suspend_all() noexcept;
    // The pipeline handle of a plugin span id, 0 if it has none.
    span_handle handle_of(std::uint64_t span_id) const;
    // On how many threads a plugin span id is entered right now (threads
    // whose enter count is above zero); 0 when not entered or unknown.
    std::uint32_t entered_count(std::uint64_t span_id) const;

private:
    friend class receiver;
    // Plugin span id -> handle and entered threads, and handle -> span id:
    // flat tables without a heap node per span (receiver.cpp).
    struct table;
    void release_all(bool suspend) noexcept;
    subscriber* pipeline_;
    // The table in shards by plugin span id, each with its own lock and its
    // own cache lines: plugin threads working on different spans neither wait
    // for each other nor write each other's lines (S9). A shard's lock is never
    // held while calling the pipeline; it is taken inside the receiver's table
    // mutex, never the other way round; and one thread holds at most one
    // shard's lock, except all_locked, which takes all in index order.
    // Each shard also remembers the handles of its last closed spans
    // (closed_memory in all), so a follows-from to a closed cause still
    // reaches the pipeline.
    static constexpr std::size_t shard_count = 8;
    static constexpr std::size_t closed_memory = 1024;
    struct shard;
    struct all_locked;
    shard& shard_of(std::uint64_t span_id) const noexcept;
    std::unique_ptr<shard[]> shards_;
};

// Counters, readable any time (relaxed atomics).
struct receiver_stats {
    std::array<std::uint64_t, 10> events{};  // by tt_event_kind - 1 (index 9 unused)
    std::array<std::uint64_t, receive_errc_count> errors{};
    std::uint64_t filtered = 0;  // SOMETIMES hits not taken
    std::size_t callsites = 0;
    std::size_t live_spans = 0;
    std::size_t string_bytes = 0;
};

// One call site as diagnostics see it (receiver::callsite_infos): the call
// site, the interest cached for it, and how many spans or events were
// accepted from it (NEW_SPAN / NEW_EVENT that passed validation and the
// filter) since this receiver's lineage started in this process.
struct callsite_info {
    model::callsite site;
    interest cached = interest::always;
    std::uint64_t hits = 0;
};

// What a receiver starts from.
using receiver_state = tt::state::receiver_state;

class receiver {
public:
    // `local` carries the pipeline handles from the previous receiver of the
    // lineage (reload); nullptr = none (first start or host restart). The
    // subscriber must outlive the receiver and its local_spans.
    //
    // Restored spans get pipeline spans lazily (when no local handle exists):
    // on enter, follows-from, or as the explicit parent of a new span or
    // event. Records on such a span are kept and show up at its creation.
    // Materializing a span never materializes its persisted parent: a parent
    // without a pipeline span leaves it a root, as in tracing-tunnel.
    receiver(std::string lineage, subscriber& pipeline, receiver_state restored = {}, quotas limits = {},
             std::shared_ptr<local_spans> local = nullptr);
    receiver(const receiver&) = delete;
    receiver& operator=(const receiver&) = delete;
    // Rolls back when not committed after the last change (see persist):
    // every span still entered is force-exited (all threads), and the spans
    // created since the last commit are closed. Changes are anything that
    // alters the span table, plus enter/exit.
    ~receiver();

    // Validates and applies one event; on error nothing changed.
    receive_result try_receive(const tt_event& ev);
    // Replay of an owned event. NEW_SPAN's id is the sender's own id when it
    // is non-zero, has the top bit clear and is not in use (tracing-tunnel
    // streams); otherwise the receiver assigns one.
    receive_result try_receive(const model::event& ev);

    // Like try_receive, but an error is counted and logged and answered as
    // TT_STATUS_ERROR_BIT | status code.
    std::uint64_t receive(const tt_event& ev) noexcept;
    std::uint64_t receive(const model::event& ev) noexcept;

    // The call sites seen so far (restored + registered), sorted by id.
    persisted_metadata persist_metadata() const;
    // The live spans and the id counter; commits (destruction no longer rolls back).
    persisted_spans persist();
    // The same snapshot without committing.
    persisted_spans snapshot() const;
    // Every call site with its cached interest and hit count, sorted by id.
    std::vector<callsite_info> callsite_infos() const;
    // Asks the pipeline again for the interest of every known call site
    // (after its filter changed): call sites the plugin does not hit again
    // would otherwise keep the interest of the old filter, here and in
    // diagnostics.
    void refresh_interest() noexcept;

    const std::string& lineage() const noexcept { return lineage_; }
    const std::shared_ptr<local_spans>& local() const noexcept { return local_; }
    receiver_stats stats() const;
    std::vector<std::string> last_errors() const;
    bool committed() const;

private:
    // Counters every event bumps are kept per thread stripe (a thread owns
    // its stripe and adds without a locked instruction; readers sum).
    static constexpr std::size_t count_stripes = 8;
    struct callsite_entry {
        model::callsite site;  // never changed once inserted; entries are never erased
        std::size_t bytes = 0;
        std::atomic<std::uint32_t> cached = static_cast<std::uint32_t>(interest::always);
        std::uint32_t number = 0;  // what a span entry keeps of its call site (site_list)
        // event_record::site_word for this site's events: the pipeline's own.
        std::atomic<std::uint64_t> pipeline_word{0};
        // Accepted NEW_SPAN / NEW_EVENT (relaxed), by thread stripe. Two
        // stripes' counters are 64 bytes apart, and the first is 64 bytes
        // past the fields above, so they never share a cache line with each
        // other or with what every event reads: two plugin threads hitting
        // the same call sites otherwise wrote one line on every event (S9).
        // Spaced out rather than alignas(64), which made each entry an
        // over-aligned allocation that glibc's heap did not give back whole
        // across reloads (test_reload_heap).
        static constexpr std::size_t hit_spacing = 64 / sizeof(std::atomic<std::uint64_t>);
        std::array<std::atomic<std::uint64_t>, (count_stripes + 1) * hit_spacing> hit_lines{};
        std::atomic<std::uint64_t>& hits(unsigned stripe) noexcept { return hit_lines[(stripe + 1) * hit_spacing]; }
        const std::atomic<std::uint64_t>& hits(unsigned stripe) const noexcept
        {
            return hit_lines[(stripe + 1) * hit_spacing];
        }
        // NEW_EVENTs the fast path took (receive_event_fast), beside hits
        // on the same line: one count is both the hit and the received
        // event, which stats() adds to the count of received events.
        std::atomic<std::uint64_t>& fast_events(unsigned stripe) noexcept
        {
            return hit_lines[(stripe + 1) * hit_spacing + 1];
        }
        const std::atomic<std::uint64_t>& fast_events(unsigned stripe) const noexcept
        {
            return hit_lines[(stripe + 1) * hit_spacing + 1];
        }
        std::uint64_t fast_event_total() const noexcept
        {
            std::uint64_t total = 0;
            for (unsigned i = 0; i < count_stripes; ++i)
                total += fast_events(i).load(std::memory_order_relaxed);
            return total;
        }
        std::uint64_t hit_total() const noexcept
        {
            std::uint64_t total = fast_event_total();
            for (unsigned i = 0; i < count_stripes; ++i)
                total += hits(i).load(std::memory_order_relaxed);
            return total;
        }
    };
    // The live spans in shards by span id (receiver.cpp), like local_spans:
    // a new span and a drop take their own span's shard only, so plugin
    // threads seldom wait for each other (S9). Each shard: a lock and a flat
    // table of packed entries.
    static constexpr std::size_t span_shard_count = 8;
    struct stripe_slot;
    std::uint64_t next_span_id() noexcept;
    bool take_quota(std::uint64_t need, std::uint64_t& before) noexcept;
    bool take_quota_exact(std::uint64_t need, std::uint64_t& before) noexcept;
    void give_quota(std::uint64_t amount) noexcept;
    bool return_credits() noexcept;
    bool quota_fits(std::uint64_t before, std::uint64_t need) const noexcept;
    std::uint64_t usage_in_use() const noexcept;
    struct span_table;
    struct span_shard;
    struct all_span_shards;  // every shard's lock, in index order
    static std::size_t span_shard_index(std::uint64_t span_id) noexcept;
    span_shard& span_shard_of(std::uint64_t span_id) const noexcept;
    // What a span entry keeps of its call site is a number (4 bytes where a
    // pointer took 8); this maps it back. Grows under mutex_ and never moves,
    // so a reader under any one shard's lock needs nothing more.
    struct site_list;
    // A new span's quota (live spans, string bytes) taken before its id and
    // shard; given back if the span is not made.
    struct span_quota;
    struct op;  // a validated, normalized event (receiver.cpp)
    // Call-site id -> entry without the mutex, for the event hot path: an
    // open-addressing table that only grows; every table ever published
    // stays allocated until the receiver dies, so a reader never needs a lock.
    struct callsite_index;

    receive_result apply(op& o);
    // NEW_EVENT from a plugin, the common case: no lock, no allocation once
    // warm. False hands the event to the general path (nothing changed).
    bool receive_event_fast(const tt_event& ev, std::uint64_t& answer);
    // receive() of a NEW_EVENT (receive_event_fast inline) and of any other
    // kind: each with its own frame, so that receive() itself has none.
    std::uint64_t receive_event(const tt_event& ev) noexcept;
    std::uint64_t receive_other(const tt_event& ev) noexcept;
    // NEW_EVENT, SPAN_ENTERED / SPAN_EXITED of a span with a pipeline span,
    // and SPAN_DROPPED of a live span, without the general path's decoding;
    // false (nothing changed): the general path decides and words errors.
    bool receive_fast(const tt_event& ev, std::uint64_t& answer);
    // receive_fast's kinds other than NEW_EVENT, apart: receive_other calls
    // it without the event's path.
    bool receive_span_op_fast(const tt_event& ev, std::uint64_t& answer);
    // Whether the span is live, under its shard's lock alone.
    bool span_is_live(std::uint64_t span_id) const noexcept;
    // One reference dropped; the last closes the span. False: not live.
    bool drop_span(std::uint64_t span_id);
    // NEW_SPAN from a plugin with a contextual or root parent: the values go
    // from the plugin's tt_field_values into the span entry and the pipeline
    // without an owned model::field_values. nullopt: the general path.
    std::optional<receive_result> receive_span_fast(const tt_event& ev);
    // For both new-span paths, under no lock: the quotas (live spans, string
    // bytes, nesting depth, in that order) taken into `quota`, then the
    // span's id: `proposed` when it is free (a replayed stream's own id;
    // 0 = none), else the next free one. Returns with the id's shard locked
    // in `shard`. A refusal changes nothing.
    std::optional<receive_result> reserve_span(span_quota& quota, std::size_t quota_bytes, std::size_t span_bytes,
                                               std::uint64_t plugin_parent, std::uint64_t proposed,
                                               std::uint64_t& id, std::uint32_t& depth, span_shard*& shard);
    callsite_entry* find_callsite_fast(std::uint64_t id) const noexcept;
    void index_callsite_locked(callsite_entry& entry);
    receive_result fail(receive_errc code, std::string message);
    void count_error(const receive_error& e) noexcept;
    std::uint64_t answer_of(receive_result&& r) noexcept;
    // try_receive's general path once no fast path took the event: decoding
    // into an op, then apply().
    receive_result receive_decoded(const tt_event& ev);
    // A NEW_SPAN, counted: its fast path, else receive_decoded. Shared by
    // try_receive and receive(), which reaches it without try_receive's frame.
    receive_result receive_new_span(const tt_event& ev);
    // receive() when no fast path decides: try_receive, its error counted.
    std::uint64_t receive_general(const tt_event& ev) noexcept;
    span_handle materialize(std::uint64_t span_id);
    span_handle resolve_parent(std::uint32_t mode, std::uint64_t explicit_id, std::uint64_t* plugin_parent);
    void rollback() noexcept;
    void fill_snapshot(persisted_spans& out) const;

    std::string lineage_;
    subscriber* pipeline_;
    quotas limits_;
    // pipeline_->resolves_current_span(), asked once (a virtual call less per event).
    bool pipeline_resolves_ = false;
    // Names lineage_ for the pipeline's memos (event_record::plugin_key): this receiver's own.
    std::uint64_t plugin_key_ = 0;
    std::shared_ptr<local_spans> local_;

    // Read by every event (the lock-free call-site lookup), so kept off the
    // cache lines that span operations write: with plugin threads on two
    // cores, sharing one would cost each event a miss.
    std::atomic<callsite_index*> index_{nullptr};

    // The call sites, under mutex_. Never held while calling the pipeline.
    // Own cache lines (see index_). Lock order: mutex_, then span shards in
    // index order, then local_spans shards; a span operation takes its one
    // span shard, then at most its local shard.
    alignas(64) mutable std::mutex mutex_;
    std::unordered_map<std::uint64_t, callsite_entry> callsites_;
    std::vector<std::unique_ptr<callsite_index>> index_tables_;  // under mutex_
    std::unique_ptr<site_list> sites_;
    std::unique_ptr<span_shard[]> span_shards_;
    // The counts a new span and a close change, on a line of their own.
    // usage_ holds the live spans above bit 40 and the string bytes below,
    // so that a span takes and gives back both with one atomic add; the
    // quotas are capped to fit (quotas). A thread takes quota in chunks
    // (credit_chunk_) into its stripe's credit and spends it there, so two
    // threads making spans do not both write usage_ at every span: usage_
    // is what is in use plus every stripe's credit (take_quota).
    static constexpr unsigned usage_bytes_bits = 40;
    static constexpr std::uint64_t usage_one_span = std::uint64_t{1} << usage_bytes_bits;
    static constexpr std::uint64_t usage_bytes_mask = usage_one_span - 1;
    alignas(64) std::atomic<std::uint64_t> next_id_{1};  // the next block's first id
    std::atomic<std::uint64_t> usage_{0};
    std::uint64_t credit_chunk_ = 0;  // 0: every span takes from usage_ itself (small quotas)
    std::atomic<std::uint64_t> id_floor_{0};  // past the highest replayed id: blocks below it are given up
    std::uint64_t restored_next_id_ = 1;
    std::unique_ptr<stripe_slot[]> stripe_slots_;  // by thread stripe (thread_stripe.hpp)
    std::size_t live_of_usage() const noexcept
    {
        return static_cast<std::size_t>(usage_in_use() >> usage_bytes_bits);
    }
    std::size_t bytes_of_usage() const noexcept
    {
        return static_cast<std::size_t>(usage_in_use() & usage_bytes_mask);
    }
    // Set under a span shard's lock, or under one local_spans shard's lock
    // alone by enter and exit; cleared by a commit, which holds every
    // shard's lock. Set only when clear (mark_dirty): enter and exit on two threads
    // would otherwise write its line each time.
    alignas(64) std::atomic<bool> dirty_{false};
    void mark_dirty() noexcept
    {
        if (!dirty_.load(std::memory_order_relaxed))
            dirty_.store(true, std::memory_order_relaxed);
    }
    // Serializes lazy pipeline-span creation for persisted spans (host restart).
    alignas(64) std::mutex materialize_mutex_;

    struct alignas(64) count_stripe {
        std::array<std::atomic<std::uint64_t>, 10> events{};  // by tt_event_kind - 1
    };
    std::array<count_stripe, count_stripes> event_counts_{};
    std::array<std::atomic<std::uint64_t>, receive_errc_count> error_counts_{};
    std::atomic<std::uint64_t> filtered_{0};
    mutable std::mutex log_mutex_;
    std::deque<std::string> error_log_;
};

}  // namespace tt::host
