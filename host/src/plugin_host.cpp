#include <tracetunnel/host/plugin_host.hpp>
#include <tracetunnel/state_file.hpp>

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
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unistd.h>

namespace tt::host {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

namespace {

constexpr std::string_view log_target = "tt::host";
constexpr std::size_t error_log_size = 64;

// The context a plugin instance passes back with every emit. It outlives the
// instance's library mapping (or shares its fate in quarantine), so a late
// emit always finds valid memory.
struct emit_context {
    std::atomic<bool> open{true};
    std::atomic<std::int64_t> in_flight{0};
    std::atomic<std::uint64_t> after_stop{0};
    receiver* recv = nullptr;
    std::mutex sites_mutex;
    std::vector<std::uint64_t> sites;  // call-site ids this instance registered

    // Closes the context and waits for every emit already inside to leave.
    // seq_cst on both sides: an emit that incremented before `open` fell is
    // waited for; one that comes after sees it closed.
    void close_and_drain() noexcept
    {
        open.store(false, std::memory_order_seq_cst);
        while (in_flight.load(std::memory_order_seq_cst) != 0)
            std::this_thread::yield();
    }
    std::vector<std::uint64_t> registered()
    {
        std::lock_guard lk(sites_mutex);
        return sites;
    }
};

std::uint64_t emit_entry(void* raw, const tt_event* ev) noexcept
{
    auto* ctx = static_cast<emit_context*>(raw);
    if (ctx == nullptr || ev == nullptr)
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    ctx->in_flight.fetch_add(1, std::memory_order_seq_cst);
    if (!ctx->open.load(std::memory_order_seq_cst)) {
        ctx->in_flight.fetch_sub(1, std::memory_order_seq_cst);
        ctx->after_stop.fetch_add(1, std::memory_order_relaxed);
        return TT_STATUS_ERROR_BIT | TT_STATUS_STOPPED;
    }
    const std::uint64_t answer = ctx->recv->receive(*ev);
    if (ev->kind == TT_EVENT_NEW_CALLSITE && !TT_STATUS_IS_ERROR(answer) && ev->callsite != nullptr) {
        // The receiver validated the call site; remember it for the reload diff.
        try {
            std::lock_guard lk(ctx->sites_mutex);
            if (std::find(ctx->sites.begin(), ctx->sites.end(), ev->callsite->id) == ctx->sites.end())
                ctx->sites.push_back(ev->callsite->id);
        } catch (...) {
        }
    }
    ctx->in_flight.fetch_sub(1, std::memory_order_seq_cst);
    return answer;
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
    // Call-site hits of this lineage's earlier instances (callsite_infos
    // counts since the host started, across reloads). Under impl::table.
    std::unordered_map<std::uint64_t, std::uint64_t> hits_before;
};

struct retired_instance {
    std::string lineage;
    std::uint64_t generation = 0;
    std::shared_ptr<plugin_library> lib;
    std::unique_ptr<emit_context> ctx;
    fs::path shadow;
    steady::time_point since;
};

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
        auto opened = open_plugin(shadow);
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
        inst->recv = std::make_unique<receiver>(l.name, *pipeline, std::move(state), opts.limits, std::move(local));
        inst->ctx->recv = inst->recv.get();
        inst->generation = l.generation + 1;
        inst->loaded_at = std::chrono::system_clock::now();
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
        api.ctx = inst->ctx.get();
        auto started = inst->lib->start(api);
        if (auto* err = std::get_if<load_error>(&started))
            return fail(err->reason);
        return inst;
    }

    // Stops an instance: no application call is inside it afterwards, its
    // stop hook has run, and no emit is in flight. Returns its saved state.
    static std::optional<std::vector<std::uint8_t>> stop_instance(instance& inst)
    {
        std::unique_lock lk(inst.calls);
        inst.running = false;
        inst.lib->stop();  // may still emit: the context is open until it returns
        inst.ctx->close_and_drain();
        if (!inst.lib->has_state_hooks())
            return std::nullopt;
        std::vector<std::uint8_t> blob;
        if (!inst.lib->save_state(blob))
            return std::vector<std::uint8_t>{};
        return blob;
    }

    // Keeps a stopped instance's library mapped for the grace period: a late
    // emit in that time proves one of its threads outlived stop.
    void retire(const std::string& name, instance& inst)
    {
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
    }

    std::chrono::milliseconds opts_grace() const { return retire_grace; }
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
    // A commit of one instance's receiver; written when there is a state dir.
    receiver_state commit_instance(lineage& l, instance& inst, std::vector<std::string>* problems)
    {
        receiver_state st{inst.recv->persist_metadata(), inst.recv->persist()};
        if (!opts.state_dir.empty())
            if (auto err = tt::state::save_lineage_state(opts.state_dir, l.name, st.metadata, st.spans)) {
                const std::string msg = tt::state::to_string(*err);
                pipeline->host_event(model::level::error, log_target, "cannot write state",
                                     {{"plugin", l.name}, {"error", msg}});
                if (problems)
                    problems->push_back(l.name + ": " + msg);
            }
        return st;
    }

    void write_blob(lineage& l, const std::optional<std::vector<std::uint8_t>>& blob)
    {
        if (opts.state_dir.empty())
            return;
        auto err = blob ? tt::state::save_plugin_state(opts.state_dir, l.name, *blob)
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
        for (const auto* c : l.stopped)
            s.emits_after_stop += c->after_stop.load(std::memory_order_relaxed);
        if (l.current) {
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
        state = impl_->commit_instance(*l, *old, nullptr);
        impl_->write_blob(*l, blob);
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
            old->recv.reset();  // committed above: nothing to roll back
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
        old->recv.reset();
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
    if (auto inst = l->current) {
        auto blob = impl::stop_instance(*inst);
        impl_->commit_instance(*l, *inst, nullptr);
        impl_->write_blob(*l, blob);
        if (!options_.state_dir.empty())
            inst->recv->local()->suspend_all();  // committed: continued by a later load, not ended
        inst->recv.reset();
        impl_->retire(l->name, *inst);
    }
    {
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
            impl_->commit_instance(*l, *inst, nullptr);
            impl_->write_blob(*l, blob);
            if (!options_.state_dir.empty())
                inst->recv->local()->suspend_all();  // committed: a restart continues them
            inst->recv.reset();
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
                                         const std::function<void(void*, const std::string&)>& fn)
{
    std::size_t called = 0;
    const std::string sym(symbol);
    for (auto& inst : impl_->running_instances()) {
        std::shared_lock lk(inst->calls);
        if (!inst->running)
            continue;
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

bool plugin_host::with_export(std::string_view plugin, std::string_view symbol, const std::function<void(void*)>& fn)
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

}  // namespace tt::host
