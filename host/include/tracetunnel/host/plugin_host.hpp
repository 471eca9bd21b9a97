// The plugin host: loads plugins (checked with Boost.DLL, from shadow
// copies), gives each one a receiver on its lineage, hot-reloads a plugin
// when its file changes, and persists every lineage so that spans outlive a
// reload and a host restart. tt-host is a thin program around this class;
// any application can embed it the same way.
//
//   tt::host::dispatcher pipeline;                      // filter + layers
//   pipeline.add_layer(std::make_shared<tt::host::console_layer>());
//   tt::host::plugin_host host(pipeline, {.state_dir = "/var/lib/myapp/tracing"});
//   host.load("plugins/liborders.so");                  // or host.watch("plugins/")
//   host.start_watching();                              // reload on change
//   for (std::uint64_t t = 0;; ++t)                      // the application's own calls
//       host.call_each<void(std::uint64_t)>("example_tick", t);
//   // ~plugin_host stops every plugin and commits its state
//
// Every plugin instance gets its own emit context. Stopping an instance
// closes the context and waits for emits already inside it to finish; an
// emit that arrives later (a plugin thread that outlived its stop) is
// answered TT_STATUS_STOPPED and counted, never delivered, never a crash, and
// such a library is never unmapped, since its code may still be running.
//
// The host reports what it does as events of its own (target "tt::host")
// through the dispatcher: loads, reloads with their call-site diff, refusals
// and state problems reach the same console, JSON and exporters as plugin
// events.
//
// Threads: every member may be called from any thread. Loads, reloads,
// unloads and commits are serialized; calls into plugins (call_each,
// call) run concurrently with each other and wait only for a reload of the
// plugin they call.
#pragma once

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/file_watcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/isolation.hpp>
#include <tracetunnel/host/plugin_library.hpp>
#include <tracetunnel/host/receiver.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tt::host {

struct plugin_host_options {
    // Where lineage state lives (state_file.hpp); empty = nothing is written
    // and nothing is restored (spans still survive reloads, in memory).
    std::filesystem::path state_dir;
    // Where loaded copies of plugin files go; empty = <state_dir>/shadow, or
    // a private temporary folder without a state_dir.
    std::filesystem::path shadow_dir;
    quotas limits{};
    // Files changes must be quiet this long before a reload starts.
    std::chrono::milliseconds settle{250};
    // How long a stopped instance's library stays mapped before it is
    // unmapped. An emit in that time proves that a thread of the plugin
    // outlived its stop; that library then stays mapped until the host exits.
    std::chrono::milliseconds retire_grace{500};
    // How long tt_plugin_stop may run (0 = no limit). A stop still running
    // then is reported and left to run on a thread of its own; the plugin
    // is marked failed, its library is never unmapped and its own state is
    // not saved; the host and the other plugins go on.
    std::chrono::milliseconds stop_timeout{3000};
    // Called after every reload attempt, on the thread that reloaded.
    std::function<void(const struct reload_report&)> on_reload;
    // Plugins that run in a child process (isolation.hpp, docs/ISOLATION.md),
    // by lineage name or file stem ("orders" or "liborders"). A crash there
    // is reported, its uncommitted spans rolled back and the child restarted
    // on the last committed state.
    std::vector<std::string> isolate;
    isolation_options isolation{};
};

// What a reload changed in the plugin's call sites. A call site's identity
// is (kind, target, name): the same identity with another id (other level,
// fields, file or line) is a change. Events are named after their file and
// line, so an event that moved is removed + added.
struct callsite_diff {
    std::vector<model::callsite> added;
    std::vector<model::callsite> removed;
    std::vector<std::pair<model::callsite, model::callsite>> changed;  // (old, new)
    bool empty() const noexcept { return added.empty() && removed.empty() && changed.empty(); }
};

struct reload_report {
    std::string plugin;
    std::filesystem::path file;
    std::string old_version;
    std::string new_version;  // empty when the new file could not be read
    std::uint64_t old_generation = 0;
    // The generation running afterwards: old_generation when the new file was
    // refused before anything stopped; a brought-back old version is a new
    // instance and so a new generation.
    std::uint64_t new_generation = 0;
    std::chrono::microseconds took{0};
    std::size_t spans_carried = 0;  // live spans handed from the old instance to the new
    callsite_diff diff;
    // Set when the reload failed: the old version runs on (old_running) or,
    // when it could not be brought back either, the plugin is stopped.
    std::optional<load_error> error;
    bool old_running = true;
    bool ok() const noexcept { return !error; }
};

enum class plugin_phase : std::uint8_t {
    running,
    failed,  // a reload failed and the old version could not be brought back
};

struct plugin_status {
    std::string name;
    std::string version;
    std::string description;
    std::filesystem::path file;         // the file the host watches
    std::filesystem::path loaded_copy;  // the shadow copy actually mapped
    std::uint64_t generation = 0;       // 1 at load, +1 per successful reload
    plugin_phase phase = plugin_phase::running;
    std::chrono::system_clock::time_point loaded_at;
    receiver_stats stats;
    std::vector<std::string> recent_errors;  // receive errors, oldest first
    std::uint64_t emits_after_stop = 0;      // summed over every stopped instance
    std::uint64_t reloads = 0;
    std::uint64_t failed_reloads = 0;
    std::size_t quarantined = 0;  // stopped instances kept mapped (emits after stop, stop timeouts)
    std::uint64_t stop_timeouts = 0;  // stops that outlived plugin_host_options::stop_timeout
    bool isolated = false;     // runs in a child process (plugin_host_options::isolate)
    int child_pid = 0;         // that child, while running
    std::uint64_t crashes = 0;  // child processes of this lineage that died
    std::string last_crash;     // "SIGSEGV", "exit status 3"; empty: none
};

class plugin_host {
public:
    plugin_host(dispatcher& pipeline, plugin_host_options options = {});
    plugin_host(const plugin_host&) = delete;
    plugin_host& operator=(const plugin_host&) = delete;
    // shutdown().
    ~plugin_host();

    // Loads and starts a plugin: shadow copy, checks, the lineage's persisted
    // state (restart), the plugin's own saved state, start. The lineage is the
    // plugin's name; one plugin per name.
    std::variant<plugin_status, load_error> load(const std::filesystem::path& file);
    // Reloads a running plugin from its file (the hot-reload path).
    reload_report reload(std::string_view plugin);
    // Stops the plugin, commits its lineage, unmaps it. False: no such plugin.
    bool unload(std::string_view plugin);
    // Stops every plugin and commits; later calls do nothing. Also stops
    // watching.
    void shutdown() noexcept;

    // A commit point for every running plugin: live spans and call sites are
    // written (when there is a state_dir). Returns the problems, one line each.
    std::vector<std::string> commit();

    // Tells every plugin that interest changed (after dispatcher::set_filter),
    // so their call sites register again under the new filter.
    void set_filter(filter f);

    std::vector<plugin_status> plugins() const;
    std::optional<plugin_status> plugin(std::string_view name) const;
    std::optional<reload_report> last_reload(std::string_view plugin) const;
    // The call sites a running plugin's instance registered, sorted by id.
    std::vector<model::callsite> callsites(std::string_view plugin) const;
    // The same call sites with their cached interest and hit counts (the
    // console's `callsites`), sorted by id; hits add up across reloads.
    // registered_only = false: every call site the lineage's receiver knows
    // (also restored ones this instance has not registered yet). Empty: no
    // such running plugin.
    std::vector<callsite_info> callsite_infos(std::string_view plugin, bool registered_only = true) const;
    // The running instance's live spans (receiver snapshot, not a commit);
    // nullopt: no such running plugin.
    std::optional<persisted_spans> live_spans(std::string_view plugin) const;
    // For each plugin span id, on how many threads it is entered right now
    // (local_spans::entered_count; 0 = not entered or unknown), in the order
    // given. Empty when no such running plugin.
    std::vector<std::uint32_t> entered_counts(std::string_view plugin,
                                              const std::vector<std::uint64_t>& span_ids) const;
    // The names of every lineage (running or failed), sorted.
    std::vector<std::string> lineage_names() const;
    // Recent load and reload failures, oldest first (bounded).
    std::vector<load_error> load_errors() const;

    // --- watching (inotify) ---
    // Watches a plugin file (reload on change) or a folder (reload on change;
    // a new *.so appearing there is loaded). Empty = ok, else why not.
    std::string watch(const std::filesystem::path& file_or_dir);
    // Runs the watcher on a background thread until shutdown().
    void start_watching();

    // --- the application's calls into its plugins ---
    // Calls `symbol` (of type Fn, e.g. void(std::uint64_t)) in every running
    // plugin that exports it; returns how many were called. The plugin's
    // library stays mapped and its instance is not reloaded during the call.
    // An isolated plugin gets the call in its child when Fn is one of
    // isolation.hpp's call_signature; other signatures skip it (reported once).
    template <class Fn, class... A>
    std::size_t call_each(std::string_view symbol, A&&... args)
    {
        return for_each_export(
            symbol, [&](void* fn, const std::string&) { reinterpret_cast<Fn*>(fn)(std::forward<A>(args)...); },
            forward_call<Fn>(symbol, args...));
    }
    // Calls `symbol` in one plugin; nullopt when there is no such running
    // plugin or export. R must be default constructible.
    template <class R, class... P, class... A>
    std::optional<R> call(std::string_view plugin, std::string_view symbol, A&&... args)
    {
        std::optional<R> out;
        with_export(
            plugin, symbol, [&](void* fn) { out = reinterpret_cast<R (*)(P...)>(fn)(std::forward<A>(args)...); },
            forward_call<R(P...)>(symbol, args...),
            [&](const call_outcome& o) { out = forwarded_value<R>(o); });
        return out;
    }

    dispatcher& pipeline() noexcept { return *pipeline_; }
    const plugin_host_options& options() const noexcept { return options_; }

    struct impl;

private:
    std::size_t for_each_export(std::string_view symbol, const std::function<void(void*, const std::string&)>& fn,
                                const std::optional<forwarded_call>& remote = std::nullopt);
    bool with_export(std::string_view plugin, std::string_view symbol, const std::function<void(void*)>& fn,
                     const std::optional<forwarded_call>& remote = std::nullopt,
                     const std::function<void(const call_outcome&)>& on_remote = {});

    dispatcher* pipeline_;
    plugin_host_options options_;
    std::unique_ptr<impl> impl_;
};

// "orders 0.1.0 -> 0.2.0 (generation 2) in 3.1 ms: 1 added, 0 removed, 0 changed"
std::string to_string(const reload_report& r);
// One call site for humans: "event orders.cpp:42 [warn] orders" or "span charge [info] orders".
std::string describe_callsite(const model::callsite& site);
// Emits refused in this process because their ctx was no live emit context
// (null, stale or made up; answered TT_STATUS_BAD_EVENT). Process-wide: such
// a ctx names no plugin. Every host reports increases as a host event.
std::uint64_t invalid_context_emits() noexcept;

}  // namespace tt::host
