#include <tracetunnel/host/plugin_host.hpp>
#include <tracetunnel/state_file.hpp>

#include "thread_stripe.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <system_error>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace tt::host {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

namespace {

constexpr std::string_view log_target = "tt::host";
constexpr std::size_t error_log_size = 64;

struct emit_context;

// A plugin never gets a pointer as its emit ctx: it gets a token naming a
// slot of this process-wide table (slot index in the low bits, the slot's use
// count above). emit_entry checks the token against the slot before it
// touches anything, so a null, stale, shifted or made-up ctx is refused and
// counted, never dereferenced. Slots are static and never freed; a slot's
// in_flight counts the emits inside it, which is what closing drains.
//
// in_flight is striped: every emit writes it twice, and one counter shared
// by all of a plugin's threads would be a cache line that every core takes
// in turn (S9, two threads). A thread keeps to one stripe (detail::my_stripe,
// thread_stripe.hpp); a drain sums them. Each stripe obeys the same
// store/load pairing as a single counter would (see close_and_drain), so the
// sum cannot miss an emit that passed the token check. The table is
// zero-initialised static storage: pages of slots never used are never
// touched.
//
// Only the increment needs a locked instruction: it is the full fence between
// "I am inside" and reading the token and the receiver (a drain does the mirror
// image: receiver/token first, then the counts). The decrement of a stripe that
// this thread owns alone is a plain load and a release store: nobody else
// writes it, so no update is lost, and release orders the emit's work before
// a drain that sees the count fall. A signal handler that emits in between
// leaves the stripe as it found it. The shared stripe keeps fetch_sub.
constexpr unsigned context_slot_bits = 12;
constexpr std::size_t context_slot_count = std::size_t{1} << context_slot_bits;
constexpr std::size_t in_flight_stripes = detail::counter_stripes;
struct alignas(64) in_flight_stripe {
    std::atomic<std::int64_t> count{0};
};
struct context_slot {
    std::atomic<std::uint64_t> token{0};  // 0 = no live context
    std::atomic<emit_context*> ctx{nullptr};
    // The context's receiver while it is open, null once it closes (and in
    // a free slot): one load tells the typical emit both where to go and
    // that it may.
    std::atomic<receiver*> recv{nullptr};
    std::uint64_t uses = 0;  // under context_slots_mutex
    in_flight_stripe in_flight[in_flight_stripes];

    std::int64_t emits_inside() const noexcept
    {
        std::int64_t total = 0;
        for (const auto& s : in_flight)
            total += s.count.load(std::memory_order_seq_cst);
        return total;
    }
};
context_slot context_slots[context_slot_count];

// One emit inside a slot, on this thread's stripe (see in_flight above).
class inside_emit {
public:
    inside_emit(context_slot& slot, unsigned stripe) noexcept
        : stripe_(stripe), count_(slot.in_flight[stripe_].count)
    {
        count_.fetch_add(1, std::memory_order_seq_cst);
    }
    ~inside_emit()
    {
        if (stripe_ != detail::shared_stripe) [[likely]]
            count_.store(count_.load(std::memory_order_relaxed) - 1, std::memory_order_release);
        else
            count_.fetch_sub(1, std::memory_order_seq_cst);
    }
    inside_emit(const inside_emit&) = delete;
    inside_emit& operator=(const inside_emit&) = delete;

private:
    unsigned stripe_;
    std::atomic<std::int64_t>& count_;
};
std::mutex context_slots_mutex;
std::atomic<std::uint64_t> bad_context_emits{0};

// The context a plugin instance's emits reach (through its slot). It
// outlives the instance's library mapping (or shares its fate in
// quarantine), so a late emit always finds valid memory.
struct emit_context {
    std::atomic<std::uint64_t> after_stop{0};
    std::mutex sites_mutex;
    std::vector<std::uint64_t> sites;  // call-site ids this instance registered
    std::uint64_t token = 0;           // what the plugin gets as ctx; 0 = every slot is taken

    emit_context()
    {
        std::lock_guard lk(context_slots_mutex);
        for (std::size_t i = 0; i < context_slot_count; ++i) {
            auto& slot = context_slots[i];
            if (slot.ctx.load() != nullptr)
                continue;
            slot.ctx.store(this);
            token = (++slot.uses << context_slot_bits) | i;
            slot.token.store(token, std::memory_order_seq_cst);
            return;
        }
    }
    emit_context(const emit_context&) = delete;
    emit_context& operator=(const emit_context&) = delete;
    // The token dies first, then the emits that passed it are waited for.
    ~emit_context()
    {
        if (token == 0)
            return;
        auto& slot = context_slots[token & (context_slot_count - 1)];
        slot.token.store(0, std::memory_order_seq_cst);
        slot.recv.store(nullptr, std::memory_order_seq_cst);  // the next owner starts closed
        while (slot.emits_inside() != 0)
            std::this_thread::yield();
        std::lock_guard lk(context_slots_mutex);
        slot.ctx.store(nullptr);
    }

    // Opens the context: emits reach `r` until close_and_drain.
    void open(receiver* r) noexcept
    {
        if (token != 0)
            context_slots[token & (context_slot_count - 1)].recv.store(r, std::memory_order_seq_cst);
    }

    // Closes the context and waits for every emit already inside to leave.
    // seq_cst on both sides: an emit that incremented before the slot's
    // receiver fell to null is waited for; one that comes after sees it closed.
    void close_and_drain() noexcept
    {
        if (token == 0)
            return;
        auto& slot = context_slots[token & (context_slot_count - 1)];
        slot.recv.store(nullptr, std::memory_order_seq_cst);
        while (slot.emits_inside() != 0)
            std::this_thread::yield();
    }
    std::vector<std::uint64_t> registered()
    {
        std::lock_guard lk(sites_mutex);
        return sites;
    }
};

// An emit decided from scratch: the token, then whether the context is
// open, then the event; a call site's id is remembered for the reload diff.
// emit_entry's fast path takes the typical emit itself and leaves the rest,
// having left the slot, to this (out of its frame).
[[gnu::noinline]] std::uint64_t emit_checked(void* raw, const tt_event* ev) noexcept
{
    const auto token = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(raw));
    auto& slot = context_slots[token & (context_slot_count - 1)];
    inside_emit inside(slot, detail::my_stripe());
    if (token == 0 || slot.token.load(std::memory_order_seq_cst) != token) {
        bad_context_emits.fetch_add(1, std::memory_order_relaxed);
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    }
    // The token matched while this emit was counted: the context's
    // destructor waits for it, so the context is valid.
    receiver* const recv = slot.recv.load(std::memory_order_seq_cst);
    emit_context* ctx = slot.ctx.load(std::memory_order_seq_cst);
    if (recv == nullptr) {
        ctx->after_stop.fetch_add(1, std::memory_order_relaxed);
        return TT_STATUS_ERROR_BIT | TT_STATUS_STOPPED;
    }
    if (ev == nullptr)
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    const std::uint64_t answer = recv->receive(*ev);
    if (ev->kind == TT_EVENT_NEW_CALLSITE && !TT_STATUS_IS_ERROR(answer) && ev->callsite != nullptr) {
        // The receiver validated the call site; remember it for the reload diff.
        try {
            std::lock_guard lk(ctx->sites_mutex);
            if (std::find(ctx->sites.begin(), ctx->sites.end(), ev->callsite->id) == ctx->sites.end())
                ctx->sites.push_back(ev->callsite->id);
        } catch (...) {
        }
    }
    return answer;
}

// The typical emit (a known token, an open context, an event that is no
// call site) with the fewest instructions: one load says both where to go
// and that it may. A token 0 matches a free slot 0's token, but a free
// slot's receiver is null. Anything else (and a thread's first emit, which
// claims its stripe) goes to emit_checked, which decides it afresh.
std::uint64_t emit_entry(void* raw, const tt_event* ev) noexcept
{
    const unsigned stripe_plus_one = detail::stripe_impl::cached;  // my_stripe() without its claiming call
    if (stripe_plus_one != 0) [[likely]] {
        const auto token = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(raw));
        auto& slot = context_slots[token & (context_slot_count - 1)];
        inside_emit inside(slot, stripe_plus_one - 1);
        if (slot.token.load(std::memory_order_seq_cst) == token) [[likely]] {
            receiver* const recv = slot.recv.load(std::memory_order_seq_cst);
            if (recv != nullptr && ev != nullptr && ev->kind != TT_EVENT_NEW_CALLSITE) [[likely]]
                return recv->receive(*ev);
        }
    }
    return emit_checked(raw, ev);
}

// Libraries whose code may still run (a plugin thread emitted after stop):
// never unmapped, deliberately kept reachable until the process ends.
struct quarantined {
    std::shared_ptr<plugin_library> lib;
    std::unique_ptr<emit_context> ctx;
};
std::mutex quarantine_mutex;
std::vector<quarantined>* quarantine = new std::vector<quarantined>();

void quarantine_library(std::shared_ptr<plugin_library> lib, std::unique_ptr<emit_context> ctx)
{
    std::lock_guard lk(quarantine_mutex);
    quarantine->push_back({std::move(lib), std::move(ctx)});
}

// Numbers shadow copies for the whole process: several hosts may share one
// shadow folder, and a copy must never overwrite a file another host mapped.
std::atomic<std::uint64_t> shadow_copies{0};

bool process_alive(pid_t pid)
{
    return ::kill(pid, 0) == 0 || errno == EPERM;
}

double millis(std::chrono::microseconds d)
{
    return static_cast<double>(d.count()) / 1000.0;
}

std::string join_sites(const std::vector<model::callsite>& sites)
{
    std::string out;
    for (const auto& s : sites) {
        if (!out.empty())
            out += "; ";
        out += describe_callsite(s);
    }
    return out;
}

}  // namespace

std::uint64_t invalid_context_emits() noexcept
{
    return bad_context_emits.load(std::memory_order_relaxed);
}

std::string describe_callsite(const model::callsite& site)
{
    std::string file = site.file;
    if (auto slash = file.rfind('/'); slash != std::string::npos)
        file = file.substr(slash + 1);
    if (site.kind == model::callsite_kind::span)
        return fmt::format("span {} [{}] {} ({}:{})", site.name, to_string(site.level), site.target, file, site.line);
    return fmt::format("event {}:{} [{}] {}", file, site.line, to_string(site.level), site.target);
}

std::string to_string(const reload_report& r)
{
    if (!r.ok())
        return fmt::format("{} {}: reload failed: {}; {}", r.plugin, r.old_version, r.error->message(),
                           r.old_running ? "the old version runs on" : "the plugin is stopped");
    return fmt::format("{} {} -> {} (generation {}) in {:.1f} ms, {} spans carried: {} added, {} removed, {} changed",
                       r.plugin, r.old_version, r.new_version, r.new_generation, millis(r.took), r.spans_carried,
                       r.diff.added.size(), r.diff.removed.size(), r.diff.changed.size());
}

// --------------------------------------------------------------------------

namespace {

struct instance {
    std::shared_ptr<plugin_library> lib;
    std::unique_ptr<emit_context> ctx;
    std::unique_ptr<receiver> recv;
    fs::path shadow;
    std::uint64_t generation = 0;
    std::chrono::system_clock::time_point loaded_at;
    // Application calls hold it shared; stopping holds it exclusively, so a
    // call never runs into a stopped instance.
    std::shared_mutex calls;
    bool running = true;  // guarded by `calls`
    // How long tt_plugin_stop may take (0 = no limit); set when it took
    // longer: the stop was left running on a thread of its own, the library
    // must never be unmapped and the plugin's state was not saved.
    std::chrono::milliseconds stop_limit{0};
    bool stop_timed_out = false;
};

// One plugin lineage (one plugin name).
struct lineage {
    std::string name;
    fs::path file;
    std::shared_ptr<instance> current;  // null while failed
    std::string version;
    std::string description;
    std::uint64_t generation = 0;
    std::uint64_t reloads = 0;
    std::uint64_t failed_reloads = 0;
    std::optional<reload_report> last_reload;
    // While failed: what the next start continues from.
    receiver_state parked;
    std::shared_ptr<local_spans> parked_local;
    std::vector<std::uint8_t> parked_blob;
    bool parked_has_blob = false;
    // Stopped instances of this lineage still mapped, for emits_after_stop.
    std::vector<const emit_context*> stopped;
    std::size_t quarantined = 0;
    std::uint64_t stop_timeouts = 0;
    // Call-site hits of this lineage's earlier instances (callsite_infos
    // counts since the host started, across reloads). Under impl::table.
    std::unordered_map<std::uint64_t, std::uint64_t> hits_before;
    // Isolation (isolation.hpp), under ops: the last commit and the plugin
    // state the running child started with, what a crash restarts from.
    // `paired_next_id`: the state's next_id; spans from there on were made
    // by the child since its start, which a restarted plugin cannot know.
    bool isolated = false;  // under table and ops
    receiver_state last_commit;
    std::optional<std::vector<std::uint8_t>> last_blob;
    std::uint64_t paired_next_id = 1;
    std::uint64_t crashes = 0;                  // under table
    std::string last_crash;                     // under table
    std::deque<steady::time_point> recent_crashes;
    bool restart_pending = false;
};

struct retired_instance {
    std::string lineage;
    std::uint64_t generation = 0;
    std::shared_ptr<plugin_library> lib;
    std::unique_ptr<emit_context> ctx;
    fs::path shadow;
    steady::time_point since;
};

// Returns the heap pages that retired instances left free to the system.
// glibc keeps freed memory below the heap's top mapped, so a burst of reloads
// (each retired copy holds a receiver and its tables through its grace) would
// otherwise stay in the host's RSS for good. Reloads are rare, so the walk
// malloc_trim does is cheap against them.
void give_back_heap() noexcept
{
#if defined(__GLIBC__)
    ::malloc_trim(0);
#endif
}

struct opened_copy {
    std::shared_ptr<plugin_library> lib;
    fs::path shadow;
};

}  // namespace

struct plugin_host::impl {
    dispatcher* pipeline = nullptr;
    plugin_host_options opts;
    fs::path shadow_dir;

    std::mutex ops;  // one load / reload / unload / commit / shutdown at a time
    mutable std::mutex table;  // lineages, errors, retired
    std::map<std::string, std::shared_ptr<lineage>, std::less<>> lineages;
    std::deque<load_error> errors;
    std::vector<retired_instance> retired;
    bool shut_down = false;

    // Watching.
    std::mutex watch_mutex;
    std::vector<fs::path> pending_watches;
    // watch() returns once the watcher thread has applied its request, so a
    // change right after it returns is never missed.
    std::condition_variable watch_cv;
    std::uint64_t watch_requested = 0;
    std::uint64_t watch_applied = 0;
    std::vector<fs::path> watched_dirs;
    bool watching = false;
    std::unique_ptr<file_watcher> watcher;
    std::thread watch_thread;
    std::atomic<bool> stop_watch{false};

    // ---- logging through the pipeline ----
    void log_error(const load_error& e, bool announce = true)
    {
        {
            std::lock_guard lk(table);
            errors.push_back(e);
            while (errors.size() > error_log_size)
                errors.pop_front();
        }
        if (!announce)
            return;
        pipeline->host_event(model::level::error, log_target, "plugin refused",
                             {{"plugin", e.plugin}, {"file", e.file.string()}, {"error", e.message()}});
    }

    // ---- files ----
    static fs::path normal(const fs::path& p)
    {
        std::error_code ec;
        fs::path abs = fs::absolute(p, ec);
        return (ec ? p : abs).lexically_normal();
    }

    void prepare_shadow_dir()
    {
        fs::path base = opts.shadow_dir;
        if (base.empty())
            base = opts.state_dir.empty() ? fs::temp_directory_path() / "tracetunnel-shadow" : opts.state_dir / "shadow";
        std::error_code ec;
        // Copies left by hosts that are gone (a crash) are of no use to anyone.
        for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
                continue;
            const long pid = std::strtol(name.c_str(), nullptr, 10);
            if (pid > 0 && pid != ::getpid() && !process_alive(static_cast<pid_t>(pid))) {
                std::error_code rm;
                fs::remove_all(it->path(), rm);
            }
        }
        shadow_dir = base / std::to_string(::getpid());
        fs::create_directories(shadow_dir, ec);
        if (ec)
            pipeline->host_event(model::level::error, log_target, "cannot create the shadow folder",
                                 {{"folder", shadow_dir.string()}, {"error", ec.message()}});
    }

    // Copies `file` to a fresh shadow path and opens the copy: a fresh path
    // is a fresh mapping (dlopen shares one per file), and the original may
    // be rewritten again while the copy runs.
    std::variant<opened_copy, load_error> open_copy(const fs::path& file)
    {
        std::error_code ec;
        if (!fs::is_regular_file(file, ec))
            return load_error{load_errc::not_found, file, {}, "no such file"};
        const fs::path shadow =
            shadow_dir / fmt::format("{}.{}{}", file.stem().string(), shadow_copies.fetch_add(1) + 1,
                                     file.extension().string());
        fs::copy_file(file, shadow, fs::copy_options::overwrite_existing, ec);
        if (ec)
            return load_error{load_errc::load_failed, file, {},
                              "cannot copy it to " + shadow.string() + ": " + ec.message()};
        auto opened = open_library(file, shadow);
        if (auto* err = std::get_if<load_error>(&opened)) {
            load_error e = *err;
            e.file = file;  // name the user's file, not our copy
            std::error_code rm;
            fs::remove(shadow, rm);
            return e;
        }
        return opened_copy{std::get<std::shared_ptr<plugin_library>>(std::move(opened)), shadow};
    }

    // ---- instances ----
    // Builds the receiver on `state`, restores the plugin's own state and
    // starts it. On failure everything the attempt created is rolled back
    // and retired.
    std::variant<std::shared_ptr<instance>, load_error> start_instance(lineage& l, opened_copy copy,
                                                                        receiver_state state,
                                                                        std::shared_ptr<local_spans> local,
                                                                        const std::vector<std::uint8_t>* blob,
                                                                        bool blob_refusal_fails)
    {
        auto inst = std::make_shared<instance>();
        inst->lib = std::move(copy.lib);
        inst->shadow = std::move(copy.shadow);
        inst->ctx = std::make_unique<emit_context>();
        remember_start(l, *inst->lib, state, blob);
        inst->recv = std::make_unique<receiver>(l.name, *pipeline, std::move(state), opts.limits, std::move(local));
        inst->ctx->open(inst->recv.get());
        inst->generation = l.generation + 1;
        inst->loaded_at = std::chrono::system_clock::now();
        inst->stop_limit = opts.stop_timeout;
        const auto& d = inst->lib->description();

        auto fail = [&](std::string reason) -> load_error {
            inst->ctx->close_and_drain();
            inst->recv.reset();  // not committed: rolls back what the attempt created
            retire(l.name, *inst);
            return load_error{load_errc::start_failed, l.file, d.name, std::move(reason)};
        };

        if (blob != nullptr) {
            if (!inst->lib->has_state_hooks()) {
                pipeline->host_event(model::level::warn, log_target, "saved plugin state dropped",
                                     {{"plugin", d.name},
                                      {"reason", std::string("this build exports no tt_plugin_restore_state")},
                                      {"bytes", static_cast<std::uint64_t>(blob->size())}});
            } else if (!inst->lib->restore_state(*blob)) {
                const std::string why =
                    fmt::format("tt_plugin_restore_state refused the saved state ({} bytes)", blob->size());
                if (blob_refusal_fails)
                    return fail(why);
                pipeline->host_event(model::level::warn, log_target, "saved plugin state refused",
                                     {{"plugin", d.name}, {"reason", why}});
            }
        }

        tt_host api{};
        api.struct_size = sizeof api;
        api.abi_version = TT_ABI_VERSION;
        api.emit = &emit_entry;
        if (inst->ctx->token == 0)
            return fail(fmt::format("too many plugin instances alive in this process ({})", context_slot_count));
        api.ctx = reinterpret_cast<void*>(static_cast<std::uintptr_t>(inst->ctx->token));
        auto started = inst->lib->start(api);
        if (auto* err = std::get_if<load_error>(&started))
            return fail(err->reason);
        return inst;
    }

    // Stops an instance: no application call is inside it afterwards, its
    // stop hook has run, and no emit is in flight. Returns its saved state.
    // A stop that outlives inst.stop_limit sets inst.stop_timed_out and
    // returns nullopt (no state: save_state must not run beside a stop).
    static std::optional<std::vector<std::uint8_t>> stop_instance(instance& inst)
    {
        std::unique_lock lk(inst.calls);
        inst.running = false;
        // may still emit: the context is open until it returns
        inst.stop_timed_out = !stop_within(inst.lib, inst.stop_limit);
        inst.ctx->close_and_drain();
        if (inst.stop_timed_out || !inst.lib->has_state_hooks())
            return std::nullopt;
        std::vector<std::uint8_t> blob;
        if (!inst.lib->save_state(blob))
            return std::vector<std::uint8_t>{};
        return blob;
    }

    // Runs tt_plugin_stop, on a thread of its own when there is a limit, and
    // waits at most `limit`. False: it is still running; its thread is left
    // to it (detached, holding the library).
    static bool stop_within(const std::shared_ptr<plugin_library>& lib, std::chrono::milliseconds limit)
    {
        if (limit.count() <= 0) {
            lib->stop();
            return true;
        }
        struct waiter {
            std::mutex m;
            std::condition_variable cv;
            bool done = false;
        };
        auto w = std::make_shared<waiter>();
        std::thread t;
        try {
            t = std::thread([lib, w] {
                lib->stop();
                std::lock_guard lk(w->m);
                w->done = true;
                w->cv.notify_all();
            });
        } catch (const std::system_error&) {  // no thread to spare: wait without a limit
            lib->stop();
            return true;
        }
        std::unique_lock lk(w->m);
        if (w->cv.wait_for(lk, limit, [&] { return w->done; })) {
            lk.unlock();
            t.join();
            return true;
        }
        t.detach();
        return false;
    }

    // After stop_instance: reports a stop that timed out and counts it.
    void report_stop(lineage& l, const instance& inst)
    {
        if (!inst.stop_timed_out)
            return;
        {
            std::lock_guard lk(table);
            ++l.stop_timeouts;
        }
        pipeline->host_event(model::level::error, log_target, "plugin did not stop in time",
                             {{"plugin", l.name},
                              {"waited_ms", static_cast<std::uint64_t>(inst.stop_limit.count())},
                              {"consequence", std::string("its stop goes on on a thread of its own; its library "
                                                          "stays mapped until the host exits; its own state was "
                                                          "not saved")}});
    }

    // Keeps a stopped instance's library mapped for the grace period: a late
    // emit in that time proves one of its threads outlived stop.
    void retire(const std::string& name, instance& inst)
    {
        if (inst.stop_timed_out) {  // its code may run at any time: never unmapped
            std::lock_guard lk(table);
            if (auto it = lineages.find(name); it != lineages.end()) {
                ++it->second->quarantined;
                it->second->stopped.push_back(inst.ctx.get());
            }
            quarantine_library(std::move(inst.lib), std::move(inst.ctx));
            return;
        }
        std::lock_guard lk(table);
        retired_instance r;
        r.lineage = name;
        r.generation = inst.generation;
        r.lib = std::move(inst.lib);
        r.ctx = std::move(inst.ctx);
        r.shadow = inst.shadow;
        r.since = steady::now();
        if (auto it = lineages.find(name); it != lineages.end())
            it->second->stopped.push_back(r.ctx.get());
        retired.push_back(std::move(r));
    }

    // Unmaps retired libraries past their grace; quarantines the ones that
    // emitted after stop. `everything`: the host is going away, decide now.
    void reap(bool everything)
    {
        std::vector<retired_instance> done;
        std::vector<std::pair<std::string, std::uint64_t>> caught;
        bool none_left = false;
        {
            std::lock_guard lk(table);
            const auto now = steady::now();
            for (auto it = retired.begin(); it != retired.end();) {
                const bool late_emits = it->ctx->after_stop.load() != 0;
                const bool past_grace = now - it->since >= opts_grace();
                if (!late_emits && !past_grace && !everything) {
                    ++it;
                    continue;
                }
                auto l = lineages.find(it->lineage);
                if (l != lineages.end()) {
                    auto& st = l->second->stopped;
                    if (late_emits || (!past_grace && everything))
                        ++l->second->quarantined;
                    else
                        st.erase(std::remove(st.begin(), st.end(), it->ctx.get()), st.end());
                }
                if (late_emits || !past_grace) {
                    if (late_emits)
                        caught.emplace_back(it->lineage, it->ctx->after_stop.load());
                    quarantine_library(std::move(it->lib), std::move(it->ctx));
                } else {
                    done.push_back(std::move(*it));
                }
                it = retired.erase(it);
            }
            none_left = retired.empty();
            if (none_left)
                retired.shrink_to_fit();
        }
        if (const auto bad = bad_context_emits.load(std::memory_order_relaxed); bad != bad_contexts_reported) {
            pipeline->host_event(model::level::error, log_target, "emits refused: not a live emit context",
                                 {{"emits", bad - bad_contexts_reported},
                                  {"total", bad},
                                  {"consequence", std::string("answered TT_STATUS_BAD_EVENT; a plugin passed a null, "
                                                              "stale or made-up ctx")}});
            bad_contexts_reported = bad;
        }
        for (auto& [name, n] : caught)
            pipeline->host_event(model::level::warn, log_target, "plugin emitted after stop",
                                 {{"plugin", name},
                                  {"emits", n},
                                  {"consequence", std::string("a thread of the plugin outlived its stop; its library "
                                                              "stays mapped until the host exits")}});
        for (auto& r : done) {
            r.lib.reset();  // dlclose
            std::error_code ec;
            fs::remove(r.shadow, ec);
        }
        const bool closed_any = !done.empty();
        done.clear();  // the retired receivers and their tables go here
        if (closed_any && none_left)
            give_back_heap();
    }

    std::chrono::milliseconds opts_grace() const { return retire_grace; }
    std::uint64_t bad_contexts_reported = 0;  // under ops
    std::chrono::milliseconds retire_grace{500};

    // Keeps the hit counts of an instance whose receiver is about to go.
    void bank_hits(lineage& l, const instance& old)
    {
        if (!old.recv)
            return;
        auto infos = old.recv->callsite_infos();
        std::lock_guard lk(table);
        for (const auto& i : infos)
            if (i.hits != 0)
                l.hits_before[i.site.id] += i.hits;
    }

    // ---- persistence ----
    // A restart after a crash: the plugin's own state was saved with the
    // commit whose next_id is `paired`, so the plugin knows no span from
    // there on; such spans (committed by a run that crashed later) can never
    // be reached again and are closed here, reported, instead of living on.
    void close_orphans(const std::string& name, persisted_spans& spans, std::uint64_t paired)
    {
        std::vector<std::uint64_t> ids;
        std::erase_if(spans.spans, [&](const persisted_span& s) {
            if (s.id < paired)
                return false;
            ids.push_back(s.id);
            return true;
        });
        if (ids.empty())
            return;
        std::string listed;
        for (std::size_t i = 0; i < ids.size() && i < 64; ++i)
            fmt::format_to(std::back_inserter(listed), "{}{}", i == 0 ? "" : ",", ids[i]);
        if (ids.size() > 64)
            listed += ",...";
        pipeline->host_event(model::level::warn, log_target, "spans closed: newer than the plugin's saved state",
                             {{"plugin", name},
                              {"spans", static_cast<std::uint64_t>(ids.size())},
                              {"ids", listed},
                              {"plugin_state_next_id", paired},
                              {"reason", std::string("committed after the plugin's last stop by a run that did not "
                                                     "stop cleanly; the plugin cannot know them")}});
    }

    // A commit of one instance's receiver; written when there is a state dir.
    receiver_state commit_instance(lineage& l, instance& inst, std::vector<std::string>* problems)
    {
        receiver_state st{inst.recv->persist_metadata(), inst.recv->persist()};
        if (l.isolated)
            l.last_commit = st;  // a crash of its child restarts from here
        if (!opts.state_dir.empty()) {
            // Write-ahead: the lines of what this commit holds (a close, its
            // event) reach the log before the state does, so a log read after
            // a kill is never older than the state it left.
            pipeline->flush();
            if (auto err = tt::state::save_lineage_state(opts.state_dir, l.name, st.metadata, st.spans)) {
                const std::string msg = tt::state::to_string(*err);
                pipeline->host_event(model::level::error, log_target, "cannot write state",
                                     {{"plugin", l.name}, {"error", msg}});
                if (problems)
                    problems->push_back(l.name + ": " + msg);
            }
        }
        return st;
    }

    // `paired_next_id`: the next_id of the commit made with this stop (the
    // plugin knows no span from there on). After a stop that timed out the
    // file on disk is kept: older than the spans, which a restart handles.
    void write_blob(lineage& l, const std::optional<std::vector<std::uint8_t>>& blob, const instance& inst,
                    std::uint64_t paired_next_id)
    {
        if (opts.state_dir.empty() || inst.stop_timed_out)
            return;
        pipeline->flush();  // as in commit_instance: the log first
        auto err = blob ? tt::state::save_plugin_state(opts.state_dir, l.name, *blob, paired_next_id)
                        : tt::state::remove_plugin_state(opts.state_dir, l.name);
        if (err)
            pipeline->host_event(model::level::error, log_target, "cannot write plugin state",
                                 {{"plugin", l.name}, {"error", tt::state::to_string(*err)}});
    }

    // ---- diff ----
    static callsite_diff diff_of(std::vector<model::callsite> before, std::vector<model::callsite> after)
    {
        auto by_id = [](const model::callsite& a, const model::callsite& b) { return a.id < b.id; };
        std::sort(before.begin(), before.end(), by_id);
        std::sort(after.begin(), after.end(), by_id);
        std::vector<model::callsite> gone, fresh;
        std::set_difference(before.begin(), before.end(), after.begin(), after.end(), std::back_inserter(gone), by_id);
        std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(fresh), by_id);
        callsite_diff d;
        auto key = [](const model::callsite& c) { return std::tie(c.kind, c.target, c.name); };
        std::vector<bool> matched(fresh.size(), false);
        for (auto& old : gone) {
            bool paired = false;
            for (std::size_t i = 0; i < fresh.size(); ++i)
                if (!matched[i] && key(fresh[i]) == key(old)) {
                    matched[i] = true;
                    d.changed.emplace_back(old, fresh[i]);
                    paired = true;
                    break;
                }
            if (!paired)
                d.removed.push_back(old);
        }
        for (std::size_t i = 0; i < fresh.size(); ++i)
            if (!matched[i])
                d.added.push_back(fresh[i]);
        return d;
    }

    static std::vector<model::callsite> sites_of(const std::vector<std::uint64_t>& ids,
                                                 const persisted_metadata& metadata)
    {
        std::vector<model::callsite> out;
        for (auto id : ids) {
            auto it = std::lower_bound(metadata.begin(), metadata.end(), id,
                                       [](const model::callsite& c, std::uint64_t v) { return c.id < v; });
            if (it != metadata.end() && it->id == id)
                out.push_back(*it);
        }
        std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
        return out;
    }

    // ---- lookups ----
    std::shared_ptr<lineage> find(std::string_view name) const
    {
        std::lock_guard lk(table);
        auto it = lineages.find(name);
        return it == lineages.end() ? nullptr : it->second;
    }

    std::shared_ptr<lineage> find_by_file(const fs::path& file) const
    {
        std::lock_guard lk(table);
        for (auto& [name, l] : lineages)
            if (l->file == file)
                return l;
        return nullptr;
    }

    // Drops an instance's receiver (rolling back what was not committed).
    // Readers that hold only the table lock (status_of) find instances through
    // `current`, so the instance leaves the table first.
    void drop_receiver(lineage& l, instance& inst)
    {
        {
            std::lock_guard lk(table);
            if (l.current.get() == &inst)
                l.current.reset();
        }
        inst.recv.reset();
    }

    plugin_status status_of(const lineage& l) const
    {
        plugin_status s;
        s.name = l.name;
        s.version = l.version;
        s.description = l.description;
        s.file = l.file;
        s.generation = l.generation;
        s.reloads = l.reloads;
        s.failed_reloads = l.failed_reloads;
        s.quarantined = l.quarantined;
        s.stop_timeouts = l.stop_timeouts;
        s.isolated = l.isolated;
        s.crashes = l.crashes;
        s.last_crash = l.last_crash;
        if (l.current)
            s.child_pid = isolated_pid(*l.current->lib);
        for (const auto* c : l.stopped)
            s.emits_after_stop += c->after_stop.load(std::memory_order_relaxed);
        if (l.current && l.current->recv) {
            s.phase = plugin_phase::running;
            s.loaded_copy = l.current->shadow;
            s.loaded_at = l.current->loaded_at;
            s.stats = l.current->recv->stats();
            s.recent_errors = l.current->recv->last_errors();
        } else {
            s.phase = plugin_phase::failed;
        }
        return s;
    }

    std::vector<std::shared_ptr<instance>> running_instances() const
    {
        std::vector<std::shared_ptr<instance>> out;
        std::lock_guard lk(table);
        for (auto& [name, l] : lineages)
            if (l->current)
                out.push_back(l->current);
        return out;
    }

    // Runs on the thread that owns the watcher (or before it exists).
    void apply_watches(std::unique_lock<std::mutex>& lk)
    {
        std::vector<fs::path> todo;
        todo.swap(pending_watches);
        const std::uint64_t ticket = watch_requested;
        lk.unlock();
        for (const auto& p : todo)
            if (std::string err = watcher->watch(p); !err.empty())
                pipeline->host_event(model::level::error, log_target, "cannot watch", {{"error", err}});
        lk.lock();
        watch_applied = std::max(watch_applied, ticket);
        watch_cv.notify_all();
    }

    void watch_loop(plugin_host& self);

    // ---- isolation (isolation.hpp; the code is at the end of this file) ----
    struct exit_inbox {
        std::mutex mutex;
        std::condition_variable cv;
        std::deque<std::pair<std::uint64_t, child_exit>> exits;  // (child serial, how it ended)
        std::multimap<steady::time_point, std::string> restarts;  // lineage restarts due
        bool closed = false;
    };
    // Shared with the children's reader threads, which may outlive the host
    // (a quarantined library): they post here, never into the host.
    std::shared_ptr<exit_inbox> inbox = std::make_shared<exit_inbox>();
    std::thread supervisor;  // started with the first isolated plugin (under ops)
    // 1: `file` runs isolated, 0: in this process, -1: known once it is
    // described (isolated by its plugin name only).
    int isolation_of(const fs::path& file) const;
    std::variant<std::shared_ptr<plugin_library>, load_error> open_library(const fs::path& file,
                                                                           const fs::path& shadow);
    void remember_start(lineage& l, const plugin_library& lib, const receiver_state& state,
                        const std::vector<std::uint8_t>* blob);
    void supervise();
    void stop_supervisor() noexcept;
    void child_exited(std::uint64_t serial, const child_exit& how);
    void restart_crashed(const std::string& name);
    bool forward(instance& inst, const std::string& symbol, const std::optional<forwarded_call>& remote,
                 call_outcome* out);
};

// --------------------------------------------------------------------------

plugin_host::plugin_host(dispatcher& pipeline, plugin_host_options options)
    : pipeline_(&pipeline), options_(std::move(options)), impl_(std::make_unique<impl>())
{
    impl_->pipeline = pipeline_;
    impl_->opts = options_;
    impl_->retire_grace = options_.retire_grace;
    impl_->prepare_shadow_dir();
}

plugin_host::~plugin_host()
{
    shutdown();
}

std::variant<plugin_status, load_error> plugin_host::load(const fs::path& file_in)
{
    const fs::path file = impl::normal(file_in);
    std::unique_lock ops(impl_->ops);
    if (impl_->shut_down)
        return load_error{load_errc::load_failed, file, {}, "the host is shutting down"};
    impl_->reap(false);
    auto opened = impl_->open_copy(file);
    if (auto* err = std::get_if<load_error>(&opened)) {
        impl_->log_error(*err);
        return *err;
    }
    auto copy = std::get<opened_copy>(std::move(opened));
    const auto desc = copy.lib->description();

    std::shared_ptr<lineage> l = impl_->find(desc.name);
    if (l && l->current) {
        load_error e{load_errc::load_failed, file, desc.name,
                     "a plugin named '" + desc.name + "' is already loaded from " + l->file.string()};
        copy.lib.reset();
        std::error_code ec;
        fs::remove(copy.shadow, ec);
        impl_->log_error(e);
        return e;
    }
    const bool fresh_lineage = l == nullptr;
    if (fresh_lineage) {
        l = std::make_shared<lineage>();
        l->name = desc.name;
    }
    l->file = file;

    // What to continue from: a failed lineage's parked state, or disk.
    std::uint64_t stamp_from = 0;  // != 0: no plugin state on disk; mark it from this span id on
    receiver_state state;
    std::shared_ptr<local_spans> local;
    std::optional<std::vector<std::uint8_t>> blob;
    if (!fresh_lineage) {
        state = l->parked;
        local = l->parked_local;
        if (l->parked_has_blob)
            blob = l->parked_blob;
    } else if (!options_.state_dir.empty()) {
        auto loaded = tt::state::load_lineage_state(options_.state_dir, desc.name);
        for (const auto& e : loaded.errors)
            pipeline_->host_event(model::level::error, log_target, "plugin state unreadable; starting empty",
                                  {{"plugin", desc.name}, {"error", tt::state::to_string(e)}});
        if (loaded.status == tt::state::load_status::loaded)
            state = std::move(loaded.state);
        auto saved = tt::state::load_plugin_state(options_.state_dir, desc.name);
        if (saved.error)
            pipeline_->host_event(model::level::error, log_target, "plugin's own saved state unreadable",
                                  {{"plugin", desc.name}, {"error", tt::state::to_string(*saved.error)}});
        if (saved.status == tt::state::load_status::loaded)
            blob = std::move(saved.bytes);
        if (saved.status == tt::state::load_status::loaded && saved.paired_next_id != 0) {
            impl_->close_orphans(desc.name, state.spans, saved.paired_next_id);
            if (blob->empty())
                blob.reset();  // the mark written at a start: nothing to restore
        }
        if (saved.status != tt::state::load_status::loaded)
            stamp_from = std::max<std::uint64_t>(state.spans.next_id, 1);
    }
    const std::size_t restored_spans = state.spans.spans.size();

    if (fresh_lineage) {
        std::lock_guard lk(impl_->table);
        impl_->lineages.emplace(desc.name, l);
    }
    auto started = impl_->start_instance(*l, std::move(copy), std::move(state), std::move(local),
                                         blob ? &*blob : nullptr, false);
    if (auto* err = std::get_if<load_error>(&started)) {
        load_error e = *err;
        if (fresh_lineage) {
            std::lock_guard lk(impl_->table);
            impl_->lineages.erase(desc.name);
        }
        impl_->log_error(e);
        return e;
    }
    auto inst = std::get<std::shared_ptr<instance>>(std::move(started));
    {
        std::lock_guard lk(impl_->table);
        l->current = inst;
        l->generation = inst->generation;
        l->version = desc.version;
        l->description = desc.description;
        l->parked = {};
        l->parked_local.reset();
        l->parked_blob.clear();
        l->parked_has_blob = false;
    }
    if (stamp_from != 0 && inst->lib->has_state_hooks())
        // The plugin starts knowing no span from stamp_from on, and until its
        // first stop the disk must say so (a crash before it: close_orphans).
        if (auto err = tt::state::save_plugin_state(options_.state_dir, desc.name, {}, stamp_from))
            pipeline_->host_event(model::level::error, log_target, "cannot write plugin state",
                                  {{"plugin", desc.name}, {"error", tt::state::to_string(*err)}});
    const auto sites = inst->ctx->registered().size();
    pipeline_->host_event(model::level::info, log_target, "plugin loaded",
                          {{"plugin", desc.name},
                           {"version", desc.version},
                           {"file", file.string()},
                           {"generation", inst->generation},
                           {"callsites", static_cast<std::uint64_t>(sites)},
                           {"spans_restored", static_cast<std::uint64_t>(restored_spans)}});
    auto status = impl_->status_of(*l);
    ops.unlock();
    {
        std::lock_guard lk(impl_->watch_mutex);
        if (impl_->watching)
            impl_->pending_watches.push_back(file);
    }
    if (impl_->watcher)
        impl_->watcher->wake();
    return status;
}

reload_report plugin_host::reload(std::string_view name)
{
    reload_report r;
    r.plugin = std::string(name);
    std::unique_lock ops(impl_->ops);
    auto l = impl_->find(name);
    if (!l || impl_->shut_down) {
        r.error = load_error{load_errc::not_found, {}, r.plugin,
                             impl_->shut_down ? "the host is shutting down" : "no such plugin"};
        r.old_running = false;
        return r;
    }
    impl_->reap(false);
    const auto t0 = steady::now();
    r.file = l->file;
    r.old_version = l->version;
    r.old_generation = r.new_generation = l->generation;
    auto old = l->current;
    r.old_running = old != nullptr;

    auto finish = [&](reload_report& rep) {
        rep.took = std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0);
        {
            std::lock_guard lk(impl_->table);
            l->last_reload = rep;
            if (rep.ok())
                ++l->reloads;
            else
                ++l->failed_reloads;
        }
        if (rep.ok()) {
            pipeline_->host_event(model::level::info, log_target, "plugin reloaded",
                                  {{"plugin", rep.plugin},
                                   {"from", rep.old_version},
                                   {"to", rep.new_version},
                                   {"generation", rep.new_generation},
                                   {"took_ms", millis(rep.took)},
                                   {"spans_carried", static_cast<std::uint64_t>(rep.spans_carried)},
                                   {"added", join_sites(rep.diff.added)},
                                   {"removed", join_sites(rep.diff.removed)},
                                   {"changed", static_cast<std::uint64_t>(rep.diff.changed.size())}});
        } else {
            impl_->log_error(*rep.error, false);
            pipeline_->host_event(model::level::error, log_target, "plugin reload failed",
                                  {{"plugin", rep.plugin},
                                   {"error", rep.error->message()},
                                   {"running", rep.old_running ? rep.old_version : std::string("nothing")}});
        }
    };

    // 1. The new file, copied and checked, before anything is stopped.
    auto opened = impl_->open_copy(l->file);
    if (auto* err = std::get_if<load_error>(&opened)) {
        r.error = *err;
        r.error->plugin = r.plugin;
        finish(r);
        ops.unlock();
        if (options_.on_reload)
            options_.on_reload(r);
        return r;
    }
    auto copy = std::get<opened_copy>(std::move(opened));
    r.new_version = copy.lib->description().version;
    if (copy.lib->description().name != l->name) {
        r.error = load_error{load_errc::bad_description, l->file, l->name,
                             "the file now declares plugin '" + copy.lib->description().name +
                                 "'; a reload keeps the plugin's name (load it as a new plugin instead)"};
        copy.lib.reset();
        std::error_code ec;
        fs::remove(copy.shadow, ec);
        finish(r);
        ops.unlock();
        if (options_.on_reload)
            options_.on_reload(r);
        return r;
    }

    // 2. Stop the old instance, drain, save, commit.
    receiver_state state;
    std::shared_ptr<local_spans> local;
    std::optional<std::vector<std::uint8_t>> blob;
    std::vector<model::callsite> old_sites;
    fs::path old_shadow;
    if (old) {
        blob = impl::stop_instance(*old);
        impl_->report_stop(*l, *old);
        state = impl_->commit_instance(*l, *old, nullptr);
        impl_->write_blob(*l, blob, *old, state.spans.next_id);
        local = old->recv->local();
        old_sites = impl::sites_of(old->ctx->registered(), state.metadata);
        old_shadow = old->shadow;
    } else {
        state = l->parked;
        local = l->parked_local;
        if (l->parked_has_blob)
            blob = l->parked_blob;
    }
    r.spans_carried = state.spans.spans.size();

    // 3. Start the new one on the same lineage.
    auto started =
        impl_->start_instance(*l, std::move(copy), state, local, blob ? &*blob : nullptr, /*blob_refusal_fails=*/true);
    if (auto* inst = std::get_if<std::shared_ptr<instance>>(&started)) {
        auto fresh = *inst;
        const auto new_meta = fresh->recv->persist_metadata();
        r.diff = impl::diff_of(old_sites, impl::sites_of(fresh->ctx->registered(), new_meta));
        r.new_generation = fresh->generation;
        {
            std::lock_guard lk(impl_->table);
            l->current = fresh;
            l->generation = fresh->generation;
            l->version = r.new_version;
            l->description = fresh->lib->description().description;
        }
        if (old) {
            impl_->bank_hits(*l, *old);
            impl_->drop_receiver(*l, *old);  // committed above: nothing to roll back
            impl_->retire(l->name, *old);
        }
        finish(r);
        ops.unlock();
        if (options_.on_reload)
            options_.on_reload(r);
        return r;
    }
    r.error = std::get<load_error>(started);

    // 4. Bring the old version back, from a fresh copy of its own file.
    if (old) {
        impl_->bank_hits(*l, *old);
        impl_->drop_receiver(*l, *old);
        impl_->retire(l->name, *old);
        std::string back_error;
        auto again = impl_->open_copy(old_shadow);
        if (auto* c = std::get_if<opened_copy>(&again)) {
            auto back = impl_->start_instance(*l, std::move(*c), state, local, blob ? &*blob : nullptr, false);
            if (auto* inst = std::get_if<std::shared_ptr<instance>>(&back)) {
                std::lock_guard lk(impl_->table);
                l->current = *inst;
                l->generation = (*inst)->generation;
            } else {
                back_error = std::get<load_error>(back).message();
            }
        } else {
            back_error = std::get<load_error>(again).message();
        }
        if (!back_error.empty()) {
            std::lock_guard lk(impl_->table);
            l->current.reset();
            l->parked = state;
            l->parked_local = local;
            l->parked_has_blob = blob.has_value();
            l->parked_blob = blob ? *blob : std::vector<std::uint8_t>{};
            r.old_running = false;
            r.error->reason += "; bringing the old version back failed too: " + back_error;
        }
        r.new_generation = l->generation;
    }
    finish(r);
    ops.unlock();
    if (options_.on_reload)
        options_.on_reload(r);
    return r;
}

bool plugin_host::unload(std::string_view name)
{
    std::unique_lock ops(impl_->ops);
    auto l = impl_->find(name);
    if (!l)
        return false;
    bool hung = false;
    if (auto inst = l->current) {
        auto blob = impl::stop_instance(*inst);
        impl_->report_stop(*l, *inst);
        auto committed = impl_->commit_instance(*l, *inst, nullptr);
        impl_->write_blob(*l, blob, *inst, committed.spans.next_id);
        if (!options_.state_dir.empty())
            inst->recv->local()->suspend_all();  // committed: continued by a later load, not ended
        impl_->drop_receiver(*l, *inst);
        impl_->retire(l->name, *inst);
        hung = inst->stop_timed_out;
        if (hung) {  // stays listed, failed: its stop never returned (a later load starts it afresh)
            std::lock_guard lk(impl_->table);
            l->current.reset();
            l->parked = std::move(committed);
            l->parked_local.reset();
            l->parked_has_blob = false;
        }
    }
    if (!hung) {
        std::lock_guard lk(impl_->table);
        impl_->lineages.erase(l->name);
    }
    pipeline_->host_event(model::level::info, log_target, "plugin unloaded", {{"plugin", l->name}});
    impl_->reap(false);
    return true;
}

void plugin_host::shutdown() noexcept
{
    try {
        impl_->stop_watch.store(true);
        impl_->stop_supervisor();
        if (impl_->watcher)
            impl_->watcher->wake();
        if (impl_->watch_thread.joinable())
            impl_->watch_thread.join();
        std::unique_lock ops(impl_->ops);
        if (impl_->shut_down)
            return;
        impl_->shut_down = true;
        std::vector<std::shared_ptr<lineage>> all;
        {
            std::lock_guard lk(impl_->table);
            for (auto& [n, l] : impl_->lineages)
                all.push_back(l);
        }
        for (auto& l : all) {
            auto inst = l->current;
            if (!inst) {
                if (l->parked_local && !options_.state_dir.empty())
                    l->parked_local->suspend_all();
                continue;
            }
            auto blob = impl::stop_instance(*inst);
            impl_->report_stop(*l, *inst);
            const auto committed = impl_->commit_instance(*l, *inst, nullptr);
            impl_->write_blob(*l, blob, *inst, committed.spans.next_id);
            if (!options_.state_dir.empty())
                inst->recv->local()->suspend_all();  // committed: a restart continues them
            impl_->drop_receiver(*l, *inst);
            impl_->retire(l->name, *inst);
            std::lock_guard lk(impl_->table);
            l->current.reset();
        }
        // Give the instances just stopped their grace period, so that a late
        // emit is still caught and the rest is unmapped cleanly.
        bool any_retired = false;
        {
            std::lock_guard lk(impl_->table);
            any_retired = !impl_->retired.empty();
        }
        if (any_retired)
            std::this_thread::sleep_for(impl_->retire_grace);
        impl_->reap(true);
        std::error_code ec;
        fs::remove(impl_->shadow_dir, ec);  // only when empty: quarantined copies stay
    } catch (...) {
    }
}

std::vector<std::string> plugin_host::commit()
{
    std::vector<std::string> problems;
    std::unique_lock ops(impl_->ops);
    std::vector<std::shared_ptr<lineage>> all;
    {
        std::lock_guard lk(impl_->table);
        for (auto& [n, l] : impl_->lineages)
            all.push_back(l);
    }
    for (auto& l : all)
        if (auto inst = l->current)
            impl_->commit_instance(*l, *inst, &problems);
    impl_->reap(false);
    return problems;
}

void plugin_host::set_filter(filter f)
{
    pipeline_->set_filter(std::move(f));
    for (auto& inst : impl_->running_instances()) {
        std::shared_lock lk(inst->calls);
        if (!inst->running)
            continue;
        inst->recv->refresh_interest();
        inst->lib->interest_changed();
    }
}

std::vector<plugin_status> plugin_host::plugins() const
{
    std::vector<plugin_status> out;
    std::lock_guard lk(impl_->table);
    for (auto& [n, l] : impl_->lineages)
        out.push_back(impl_->status_of(*l));
    return out;
}

std::optional<plugin_status> plugin_host::plugin(std::string_view name) const
{
    std::lock_guard lk(impl_->table);
    auto it = impl_->lineages.find(name);
    if (it == impl_->lineages.end())
        return std::nullopt;
    return impl_->status_of(*it->second);
}

std::optional<reload_report> plugin_host::last_reload(std::string_view name) const
{
    std::lock_guard lk(impl_->table);
    auto it = impl_->lineages.find(name);
    if (it == impl_->lineages.end())
        return std::nullopt;
    return it->second->last_reload;
}

std::vector<model::callsite> plugin_host::callsites(std::string_view name) const
{
    std::shared_ptr<instance> inst;
    {
        std::lock_guard lk(impl_->table);
        auto it = impl_->lineages.find(name);
        if (it == impl_->lineages.end() || !it->second->current)
            return {};
        inst = it->second->current;
    }
    std::shared_lock calls(inst->calls);
    if (!inst->running)
        return {};
    return impl::sites_of(inst->ctx->registered(), inst->recv->persist_metadata());
}

std::vector<callsite_info> plugin_host::callsite_infos(std::string_view name, bool registered_only) const
{
    std::shared_ptr<instance> inst;
    std::unordered_map<std::uint64_t, std::uint64_t> before;
    {
        std::lock_guard lk(impl_->table);
        auto it = impl_->lineages.find(name);
        if (it == impl_->lineages.end() || !it->second->current)
            return {};
        inst = it->second->current;
        before = it->second->hits_before;
    }
    std::vector<callsite_info> out;
    {
        std::shared_lock calls(inst->calls);
        if (!inst->running)
            return {};
        auto ids = inst->ctx->registered();
        std::sort(ids.begin(), ids.end());
        auto all = inst->recv->callsite_infos();
        out.reserve(registered_only ? ids.size() : all.size());
        for (auto& info : all)
            if (!registered_only || std::binary_search(ids.begin(), ids.end(), info.site.id))
                out.push_back(std::move(info));
    }
    for (auto& info : out)
        if (auto b = before.find(info.site.id); b != before.end())
            info.hits += b->second;
    return out;
}

std::optional<persisted_spans> plugin_host::live_spans(std::string_view name) const
{
    std::shared_ptr<instance> inst;
    {
        std::lock_guard lk(impl_->table);
        auto it = impl_->lineages.find(name);
        if (it == impl_->lineages.end() || !it->second->current)
            return std::nullopt;
        inst = it->second->current;
    }
    std::shared_lock calls(inst->calls);
    if (!inst->running)
        return std::nullopt;
    return inst->recv->snapshot();
}

std::vector<std::uint32_t> plugin_host::entered_counts(std::string_view name,
                                                       const std::vector<std::uint64_t>& span_ids) const
{
    std::shared_ptr<instance> inst;
    {
        std::lock_guard lk(impl_->table);
        auto it = impl_->lineages.find(name);
        if (it == impl_->lineages.end() || !it->second->current)
            return {};
        inst = it->second->current;
    }
    std::shared_lock calls(inst->calls);
    if (!inst->running || !inst->recv->local())
        return {};
    std::vector<std::uint32_t> out;
    out.reserve(span_ids.size());
    for (const auto id : span_ids)
        out.push_back(inst->recv->local()->entered_count(id));
    return out;
}

std::vector<std::string> plugin_host::lineage_names() const
{
    std::vector<std::string> out;
    std::lock_guard lk(impl_->table);
    for (const auto& [n, l] : impl_->lineages)
        out.push_back(n);
    return out;
}

std::vector<load_error> plugin_host::load_errors() const
{
    std::lock_guard lk(impl_->table);
    return {impl_->errors.begin(), impl_->errors.end()};
}

std::size_t plugin_host::for_each_export(std::string_view symbol,
                                         const std::function<void(void*, const std::string&)>& fn,
                                         const std::optional<forwarded_call>& remote)
{
    std::size_t called = 0;
    const std::string sym(symbol);
    for (auto& inst : impl_->running_instances()) {
        std::shared_lock lk(inst->calls);
        if (!inst->running)
            continue;
        if (is_isolated(*inst->lib)) {
            if (impl_->forward(*inst, sym, remote, nullptr))
                ++called;
            continue;
        }
        void* address = inst->lib->find_export<void>(sym);
        if (address == nullptr)
            continue;
        const std::string& name = inst->lib->description().name;
        try {
            fn(address, name);
        } catch (const std::exception& e) {
            pipeline_->host_event(model::level::error, log_target, "plugin call threw",
                                  {{"plugin", name}, {"symbol", sym}, {"error", std::string(e.what())}});
        } catch (...) {
            pipeline_->host_event(model::level::error, log_target, "plugin call threw",
                                  {{"plugin", name}, {"symbol", sym}, {"error", std::string("unknown exception")}});
        }
        ++called;
    }
    return called;
}

bool plugin_host::with_export(std::string_view plugin, std::string_view symbol, const std::function<void(void*)>& fn,
                              const std::optional<forwarded_call>& remote,
                              const std::function<void(const call_outcome&)>& on_remote)
{
    std::shared_ptr<instance> inst;
    {
        std::lock_guard lk(impl_->table);
        auto it = impl_->lineages.find(plugin);
        if (it == impl_->lineages.end() || !it->second->current)
            return false;
        inst = it->second->current;
    }
    std::shared_lock lk(inst->calls);
    if (!inst->running)
        return false;
    if (is_isolated(*inst->lib)) {
        call_outcome out;
        if (!impl_->forward(*inst, std::string(symbol), remote, &out))
            return false;
        if (on_remote)
            on_remote(out);
        return true;
    }
    void* address = inst->lib->find_export<void>(std::string(symbol));
    if (address == nullptr)
        return false;
    try {
        fn(address);
    } catch (const std::exception& e) {
        pipeline_->host_event(model::level::error, log_target, "plugin call threw",
                              {{"plugin", std::string(plugin)}, {"symbol", std::string(symbol)},
                               {"error", std::string(e.what())}});
        return false;
    } catch (...) {
        return false;
    }
    return true;
}

// --------------------------------------------------------------------------
// Watching.

std::string plugin_host::watch(const fs::path& file_or_dir)
{
    const fs::path p = impl::normal(file_or_dir);
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st))
        return "cannot watch " + p.string() + ": no such file or folder";
    if (!fs::is_directory(st) && !fs::is_regular_file(st))
        return "cannot watch " + p.string() + ": neither a file nor a folder";
    std::unique_lock lk(impl_->watch_mutex);
    if (fs::is_directory(st))
        impl_->watched_dirs.push_back(p);
    impl_->pending_watches.push_back(p);
    const std::uint64_t ticket = ++impl_->watch_requested;
    if (!impl_->watching || std::this_thread::get_id() == impl_->watch_thread.get_id())
        return {};  // applied by start_watching (or the watcher thread's next turn)
    impl_->watcher->wake();
    impl_->watch_cv.wait_for(lk, std::chrono::seconds(5), [&] { return impl_->watch_applied >= ticket; });
    return {};
}

void plugin_host::start_watching()
{
    std::unique_lock lk(impl_->watch_mutex);
    if (impl_->watching)
        return;
    watcher_options wo;
    wo.settle = options_.settle;
    impl_->watcher = std::make_unique<file_watcher>(wo);  // throws when inotify is unavailable
    impl_->watching = true;
    {
        std::lock_guard t(impl_->table);
        for (auto& [n, l] : impl_->lineages)
            impl_->pending_watches.push_back(l->file);
    }
    // Before the thread exists: watching has begun when this returns.
    impl_->apply_watches(lk);
    impl_->watch_thread = std::thread([this] { impl_->watch_loop(*this); });
}

void plugin_host::impl::watch_loop(plugin_host& self)
{
    while (!stop_watch.load()) {
        std::vector<fs::path> dirs;
        {
            std::unique_lock lk(watch_mutex);
            apply_watches(lk);
            dirs = watched_dirs;
        }
        for (const auto& change : watcher->poll(std::chrono::milliseconds(200))) {
            if (stop_watch.load())
                break;
            const fs::path path = normal(change.path);
            auto l = find_by_file(path);
            if (change.what == file_change::kind::removed) {
                if (l)
                    pipeline->host_event(model::level::warn, log_target,
                                         "plugin file removed; the loaded copy keeps running",
                                         {{"plugin", l->name}, {"file", path.string()}});
                continue;
            }
            if (l) {
                self.reload(l->name);
                continue;
            }
            const bool in_watched_dir = std::any_of(dirs.begin(), dirs.end(),
                                                    [&](const fs::path& d) { return path.parent_path() == d; });
            if (in_watched_dir)
                (void)self.load(path);
        }
        std::lock_guard lk(ops);
        if (!shut_down)
            reap(false);
    }
}


// --------------------------------------------------------------------------
// Isolation (isolation.hpp, docs/ISOLATION.md): plugins in child processes,
// their crashes, and their restarts.

int plugin_host::impl::isolation_of(const fs::path& file) const
{
    if (opts.isolate.empty())
        return 0;
    const std::string stem = file.stem().string();
    const std::string bare = stem.rfind("lib", 0) == 0 ? stem.substr(3) : stem;
    auto listed = [&](const std::string& n) {
        return std::find(opts.isolate.begin(), opts.isolate.end(), n) != opts.isolate.end();
    };
    if (listed(stem) || listed(bare))
        return 1;
    if (auto l = find_by_file(file))
        return listed(l->name) ? 1 : 0;
    return -1;
}

// Opens the shadow copy of `file` in this process or in a child. A plugin
// named in `isolate` only by its plugin name is described in a child first
// (its code never runs here), then kept there or opened here.
std::variant<std::shared_ptr<plugin_library>, load_error> plugin_host::impl::open_library(const fs::path& file,
                                                                                      const fs::path& shadow)
{
    const int isolated = isolation_of(file);
    if (isolated == 0)
        return open_plugin(shadow);
    {
        std::lock_guard lk(inbox->mutex);
        if (!supervisor.joinable() && !inbox->closed)
            supervisor = std::thread([this] { supervise(); });
    }
    std::weak_ptr<exit_inbox> weak = inbox;
    auto on_exit = [weak](std::uint64_t serial, const child_exit& how) {
        if (auto in = weak.lock()) {
            std::lock_guard lk(in->mutex);
            if (in->closed)
                return;
            in->exits.emplace_back(serial, how);
            in->cv.notify_all();
        }
    };
    auto opened = open_isolated(shadow, opts.isolation, on_exit);
    if (isolated == 1)
        return opened;
    auto* lib = std::get_if<std::shared_ptr<plugin_library>>(&opened);
    if (lib == nullptr)
        return opened;
    const std::string& name = (*lib)->description().name;
    if (std::find(opts.isolate.begin(), opts.isolate.end(), name) != opts.isolate.end())
        return opened;
    opened = load_error{};  // not isolated: the child goes, the plugin is opened here
    return open_plugin(shadow);
}

void plugin_host::impl::remember_start(lineage& l, const plugin_library& lib, const receiver_state& state,
                                       const std::vector<std::uint8_t>* blob)
{
    {
        std::lock_guard lk(table);  // status_of reads it
        l.isolated = is_isolated(lib);
    }
    if (!l.isolated) {
        l.last_commit = {};
        l.last_blob.reset();
        return;
    }
    l.last_commit = state;
    l.paired_next_id = state.spans.next_id;
    if (blob != nullptr)
        l.last_blob = *blob;
    else
        l.last_blob.reset();
}

bool plugin_host::impl::forward(instance& inst, const std::string& symbol, const std::optional<forwarded_call>& remote,
                                call_outcome* out)
{
    const auto& exports = inst.lib->exports();
    if (!std::binary_search(exports.begin(), exports.end(), symbol))
        return false;
    const std::string& name = inst.lib->description().name;
    if (!remote) {
        if (first_unforwardable(*inst.lib, symbol))
            pipeline->host_event(model::level::warn, log_target, "plugin call not forwarded",
                                 {{"plugin", name},
                                  {"symbol", symbol},
                                  {"reason", std::string("the plugin runs in a child process and this call's "
                                                         "signature cannot cross (isolation.hpp: call_signature)")}});
        return false;
    }
    call_outcome o = call_isolated(*inst.lib, *remote);
    if (!o.called) {
        if (!o.error.empty())
            pipeline->host_event(model::level::error, log_target, "plugin call failed",
                                 {{"plugin", name}, {"symbol", symbol}, {"error", o.error}});
        return false;
    }
    if (out != nullptr)
        *out = std::move(o);
    return true;
}

void plugin_host::impl::supervise()
{
    std::unique_lock lk(inbox->mutex);
    while (!inbox->closed) {
        if (!inbox->exits.empty()) {
            auto [serial, how] = std::move(inbox->exits.front());
            inbox->exits.pop_front();
            lk.unlock();
            child_exited(serial, how);
            lk.lock();
            continue;
        }
        if (!inbox->restarts.empty() && inbox->restarts.begin()->first <= steady::now()) {
            std::string name = inbox->restarts.begin()->second;
            inbox->restarts.erase(inbox->restarts.begin());
            lk.unlock();
            restart_crashed(name);
            lk.lock();
            continue;
        }
        if (inbox->restarts.empty())
            inbox->cv.wait(lk);
        else
            inbox->cv.wait_until(lk, inbox->restarts.begin()->first);
    }
}

void plugin_host::impl::stop_supervisor() noexcept
{
    {
        std::lock_guard lk(inbox->mutex);
        inbox->closed = true;
        inbox->cv.notify_all();
    }
    if (supervisor.joinable() && supervisor.get_id() != std::this_thread::get_id())
        supervisor.join();
}

// A child died while its instance was the lineage's current one: roll back
// what it did since its last commit, close the committed spans it made (the
// restarted plugin's saved state predates them), report, and schedule the
// restart on the last commit and the plugin state the child started with.
void plugin_host::impl::child_exited(std::uint64_t serial, const child_exit& how)
{
    std::unique_lock ops_lock(ops);
    if (shut_down)
        return;
    std::shared_ptr<lineage> l;
    std::shared_ptr<instance> inst;
    {
        std::lock_guard lk(table);
        for (auto& [n, c] : lineages)
            if (c->current && isolated_serial(*c->current->lib) == serial) {
                l = c;
                inst = c->current;
                break;
            }
    }
    if (!inst)
        return;  // already stopped, replaced or unloaded
    {
        std::unique_lock calls(inst->calls);
        inst->running = false;
    }
    inst->ctx->close_and_drain();
    {
        // Readers of the table (status_of, running_instances) must not find
        // this instance while its receiver is rolled back and dropped below.
        std::lock_guard lk(table);
        if (l->current == inst)
            l->current.reset();
    }

    const persisted_spans live = inst->recv->snapshot();
    receiver_state state{inst->recv->persist_metadata(), l->last_commit.spans};
    state.spans.next_id = std::max(state.spans.next_id, live.next_id);  // ids are never handed out twice
    std::uint64_t closed_committed = 0;
    std::erase_if(state.spans.spans, [&](const persisted_span& s) {
        if (s.id < l->paired_next_id)
            return false;
        auto it = std::find_if(live.spans.begin(), live.spans.end(), [&](const auto& v) { return v.id == s.id; });
        for (std::uint64_t k = 0; it != live.spans.end() && k < it->ref_count; ++k) {
            tt_event ev{};
            ev.struct_size = sizeof ev;
            ev.kind = TT_EVENT_SPAN_DROPPED;
            ev.span_id = s.id;
            (void)inst->recv->receive(ev);
        }
        ++closed_committed;
        return true;
    });
    std::uint64_t rolled_back = 0;
    for (const auto& s : live.spans)
        if (std::none_of(l->last_commit.spans.spans.begin(), l->last_commit.spans.spans.end(),
                         [&](const auto& c) { return c.id == s.id; }))
            ++rolled_back;
    auto local = inst->recv->local();
    bank_hits(*l, *inst);
    inst->recv.reset();  // not committed: rolls back what the child did since the last commit
    retire(l->name, *inst);

    const auto now = steady::now();
    l->recent_crashes.push_back(now);
    while (!l->recent_crashes.empty() && now - l->recent_crashes.front() > std::chrono::minutes(1))
        l->recent_crashes.pop_front();
    const bool give_up = l->recent_crashes.size() > opts.isolation.max_restarts_per_minute;
    auto backoff = opts.isolation.first_backoff;
    for (std::size_t i = 1; i < l->recent_crashes.size() && backoff < opts.isolation.max_backoff; ++i)
        backoff *= 2;
    backoff = std::min(backoff, opts.isolation.max_backoff);
    std::uint64_t crashes = 0;
    {
        std::lock_guard lk(table);
        crashes = ++l->crashes;
        l->last_crash = how.describe();
        l->current.reset();
        l->parked = state;
        l->parked_local = local;
        l->parked_has_blob = l->last_blob.has_value();
        l->parked_blob = l->last_blob.value_or(std::vector<std::uint8_t>{});
        l->restart_pending = !give_up;
    }
    const std::string what = fmt::format("plugin {} crashed: {}", l->name, how.describe());
    pipeline->host_event(model::level::error, log_target, "plugin crashed",
                         {{"plugin", l->name},
                          {"signal", how.signaled ? how.describe() : std::string()},
                          {"exit", how.describe()},
                          {"pid", static_cast<std::int64_t>(how.pid)},
                          {"crashes", crashes},
                          {"spans_rolled_back", rolled_back},
                          {"committed_spans_closed", closed_committed},
                          {"spans_kept", static_cast<std::uint64_t>(state.spans.spans.size())},
                          {"restart_in_ms", give_up ? std::int64_t{-1} : static_cast<std::int64_t>(backoff.count())}});
    log_error(load_error{load_errc::crashed, l->file, l->name, what}, false);
    if (give_up) {
        const std::string why = fmt::format("{} crashes within a minute (at most {} restarts); not restarted: "
                                            "reload or load it to try again",
                                            l->recent_crashes.size(), opts.isolation.max_restarts_per_minute);
        log_error(load_error{load_errc::crashed, l->file, l->name, why}, false);
        pipeline->host_event(model::level::error, log_target, "plugin failed",
                             {{"plugin", l->name}, {"reason", why}});
        return;
    }
    std::lock_guard lk(inbox->mutex);
    inbox->restarts.emplace(now + backoff, l->name);
    inbox->cv.notify_all();
}

void plugin_host::impl::restart_crashed(const std::string& name)
{
    std::unique_lock ops_lock(ops);
    if (shut_down)
        return;
    auto l = find(name);
    if (!l || l->current || !l->restart_pending)
        return;  // unloaded, or a reload or load started it meanwhile
    l->restart_pending = false;
    auto fail = [&](load_error e) {
        e.plugin = name;
        log_error(e, false);
        pipeline->host_event(model::level::error, log_target, "plugin restart failed",
                             {{"plugin", name}, {"error", e.message()}});
    };
    auto opened = open_copy(l->file);
    if (auto* err = std::get_if<load_error>(&opened))
        return fail(*err);
    auto copy = std::get<opened_copy>(std::move(opened));
    if (copy.lib->description().name != name) {
        copy.lib.reset();
        std::error_code ec;
        fs::remove(copy.shadow, ec);
        return fail(load_error{load_errc::bad_description, l->file, name, "the file now declares another plugin"});
    }
    const std::string version = copy.lib->description().version;
    const std::string description = copy.lib->description().description;
    const auto spans = static_cast<std::uint64_t>(l->parked.spans.spans.size());
    std::optional<std::vector<std::uint8_t>> blob;
    if (l->parked_has_blob)
        blob = l->parked_blob;
    auto started = start_instance(*l, std::move(copy), l->parked, l->parked_local, blob ? &*blob : nullptr, false);
    if (auto* err = std::get_if<load_error>(&started))
        return fail(*err);
    auto inst = std::get<std::shared_ptr<instance>>(std::move(started));
    std::uint64_t crashes = 0;
    {
        std::lock_guard lk(table);
        l->current = inst;
        l->generation = inst->generation;
        l->version = version;
        l->description = description;
        l->parked = {};
        l->parked_local.reset();
        l->parked_blob.clear();
        l->parked_has_blob = false;
        crashes = l->crashes;
    }
    pipeline->host_event(model::level::info, log_target, "plugin restarted",
                         {{"plugin", name},
                          {"version", version},
                          {"generation", inst->generation},
                          {"pid", static_cast<std::int64_t>(isolated_pid(*inst->lib))},
                          {"crashes", crashes},
                          {"spans_restored", spans}});
}

}  // namespace tt::host
