// tt-host: the plugin host. Loads every plugin of a folder (or the files
// named), relays their tracing into the console or JSON lines, reloads a
// plugin when its file changes, and keeps its spans across reloads and
// restarts (the state folder).
//
// The framework is tt::host::plugin_host; what is specific to this program
// is the example application at the bottom of the file: the entry points it
// calls in its plugins (plugins/include/example_app.h).
#include <tracetunnel/host/control_server.hpp>
#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/plugin_host.hpp>
#include <tracetunnel/host/trace_context.hpp>
#ifdef TT_HAVE_OTLP
#include <tracetunnel/host/otlp_exporter.hpp>
#endif
#include <tracetunnel/host/usdt_layer.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>
#include <variant>
#include <thread>

#include <unistd.h>

#include "../plugins/include/example_app.h"

namespace fs = std::filesystem;

namespace {

std::atomic<int> stop_signal{0};

extern "C" void on_stop_signal(int sig)
{
    stop_signal.store(sig);
}

// $XDG_STATE_HOME/tracetunnel, or ~/.local/state/tracetunnel.
fs::path default_state_dir()
{
    if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && *xdg == '/')
        return fs::path(xdg) / "tracetunnel";
    if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0')
        return fs::path(home) / ".local" / "state" / "tracetunnel";
    return fs::temp_directory_path() / "tracetunnel-state";
}

// Where the control socket goes without --control-socket: <state dir>/control.sock,
// or with --no-state $XDG_RUNTIME_DIR/tracetunnel-<pid>.sock
// (/tmp/tracetunnel-<uid>-<pid>.sock without XDG_RUNTIME_DIR).
fs::path default_control_socket(bool no_state, const fs::path& state_dir)
{
    if (!no_state)
        return state_dir / "control.sock";
    if (const char* run = std::getenv("XDG_RUNTIME_DIR"); run != nullptr && *run == '/')
        return fs::path(run) / fmt::format("tracetunnel-{}.sock", ::getpid());
    return fs::path("/tmp") / fmt::format("tracetunnel-{}-{}.sock", ::getuid(), ::getpid());
}

// OTLP export as the flags ask (docs/OTLP.md); the OTEL_* variables fill in
// what no flag says.
struct otlp_flags {
    bool off = false;
    std::string endpoint, service_name, resource_attributes, traceparent;
    std::size_t queue_size = 0, batch_size = 0;
    int batch_delay_ms = 0;
    bool any() const
    {
        return !endpoint.empty() || !service_name.empty() || !resource_attributes.empty() || queue_size != 0 ||
               batch_size != 0 || batch_delay_ms != 0;
    }
};

// The traceparent of --traceparent, else $TRACEPARENT; a bad one is an error naming where it came from.
std::variant<std::optional<tt::host::trace_parent>, std::string> traceparent_setting(const otlp_flags& f)
{
    std::string text = f.traceparent, from = "--traceparent";
    if (text.empty())
        if (const char* e = std::getenv("TRACEPARENT"); e != nullptr && *e != '\0')
            text = e, from = "TRACEPARENT";
    if (text.empty())
        return std::optional<tt::host::trace_parent>();
    auto parsed = tt::host::parse_traceparent(text);
    if (auto* err = std::get_if<tt::host::traceparent_error>(&parsed))
        return fmt::format("{}: {}", from, err->message);
    return std::optional<tt::host::trace_parent>(std::get<tt::host::trace_parent>(parsed));
}

#ifdef TT_HAVE_OTLP
// Options when export is on (a flag or an OTEL endpoint variable), nullopt when off, or an error.
std::variant<std::optional<tt::host::otlp_options>, std::string> otlp_settings(const otlp_flags& f)
{
    if (f.off)
        return std::optional<tt::host::otlp_options>();
    auto env = tt::host::otlp_options_from_env();
    if (auto* err = std::get_if<std::string>(&env))
        return *err;
    auto [o, on] = std::get<tt::host::otlp_env>(std::move(env));
    if (!f.endpoint.empty()) {
        if (f.endpoint.rfind("http://", 0) != 0 && f.endpoint.rfind("https://", 0) != 0)
            return fmt::format("--otlp-endpoint \"{}\": expected an http:// or https:// URL", f.endpoint);
        o.endpoint = f.endpoint;
    }
    on = on || f.any();
    if (!f.resource_attributes.empty()) {
        auto kv = tt::host::parse_key_values(f.resource_attributes);
        if (auto* err = std::get_if<std::string>(&kv))
            return fmt::format("--otlp-resource-attributes: {}", *err);
        for (auto& [k, v] : std::get<tt::host::key_values>(kv)) {
            if (k == "service.name") {
                o.service_name = v;
                continue;
            }
            std::erase_if(o.resource_attributes, [&](const auto& e) { return e.first == k; });
            o.resource_attributes.emplace_back(k, v);
        }
    }
    if (!f.service_name.empty())
        o.service_name = f.service_name;
    if (f.queue_size)
        o.max_queue = f.queue_size;
    if (f.batch_size)
        o.max_batch = f.batch_size;
    if (f.batch_delay_ms)
        o.batch_delay = std::chrono::milliseconds(f.batch_delay_ms);
    if (!on)
        return std::optional<tt::host::otlp_options>();
    return std::optional<tt::host::otlp_options>(std::move(o));
}
#endif

// The example application: what this host asks of its plugins. A real
// application defines its own entry points the same way (example_app.h).
struct example_application {
    tt::host::plugin_host& host;
    std::uint64_t tick = 0;

    void run_tick()
    {
        host.call_each<void(std::uint64_t)>(EXAMPLE_SYMBOL_TICK, tick);
        ++tick;
    }
    // Asks every plugin that answers requests for its status, as an operator
    // request would; the answers become host events.
    void status_requests()
    {
        for (const auto& p : host.plugins()) {
            auto answer = host.call<const char*, const char*>(p.name, EXAMPLE_SYMBOL_HANDLE, "status");
            if (answer && *answer != nullptr)
                host.pipeline().host_event(tt::model::level::info, "tt::host::app", "plugin status",
                                           {{"plugin", p.name}, {"answer", std::string(*answer)}});
        }
    }
};

}  // namespace

int main(int argc, char** argv)
{
    const fs::path state_default = default_state_dir();
    CLI::App app{"tt-host: run tracetunnel plugins. Loads the plugins, calls their example_tick entry point\n"
                 "periodically, prints the spans and events they emit, reloads a plugin when its file changes\n"
                 "(spans stay open across the reload) and keeps live spans in the state folder, so a restart\n"
                 "continues them. Ctrl-C (SIGINT) or SIGTERM stops it cleanly and saves the state."};
    app.set_version_flag("--version", "tt-host " TT_PROJECT_VERSION);
    std::vector<std::string> plugin_args{"plugins"};
    std::string state_dir = state_default.string();
    std::string filter_text = "info";
    std::string format = "compact";
    bool watch = true;
    bool no_state = false;
    bool no_colour = false;
    bool span_events = false;
    long long ticks = 0;
    int interval_ms = 500;
    int settle_ms = 250;
    int commit_interval_ms = 5000;
    int flush_ms = 50;
    int stop_timeout_ms = 3000;
    int status_every = 10;
    std::string control_socket;
    bool no_control = false;
    app.add_option("--plugins,plugins", plugin_args,
                   "plugin folders (every *.so in them) or plugin files; a watched folder also picks up new "
                   "plugins")
        ->capture_default_str();
    app.add_option("--state-dir", state_dir, "where live spans and plugin state are kept between runs")
        ->capture_default_str();
    app.add_flag("--no-state", no_state, "keep nothing on disk (spans still survive reloads, in memory)");
    app.add_option("--filter", filter_text, "which spans and events to show, EnvFilter syntax (e.g. info,orders=debug)")
        ->capture_default_str();
    app.add_option("--format", format, "output format")
        ->check(CLI::IsMember({"compact", "pretty", "json"}))
        ->capture_default_str();
    auto* watch_on = app.add_flag_function(
        "--watch", [&](std::int64_t) { watch = true; },
        "reload plugins when their files change, load new ones in watched folders (inotify; the default)");
    app.add_flag_function("--no-watch", [&](std::int64_t) { watch = false; }, "load the plugins once, never reload")
        ->excludes(watch_on);
    app.add_option("--flush-ms", flush_ms,
                   "when the output is not a terminal, lines wait at most this long before they are written "
                   "(0: each line at once); a commit writes them first, so the output is never older than the state")
        ->check(CLI::Range(0, 60000))
        ->capture_default_str();
    app.add_option("--ticks", ticks, "stop after this many ticks (0 = run until Ctrl-C)")
        ->check(CLI::Range(0LL, 1LL << 62))
        ->capture_default_str();
    app.add_option("--interval-ms", interval_ms, "milliseconds between ticks")
        ->check(CLI::Range(1, 3600000))
        ->capture_default_str();
    app.add_option("--settle-ms", settle_ms, "a changed plugin file must be quiet this long before it is reloaded")
        ->check(CLI::Range(0, 60000))
        ->capture_default_str();
    app.add_option("--commit-interval-ms", commit_interval_ms, "how often live spans are written to the state folder")
        ->check(CLI::Range(1, 3600000))
        ->capture_default_str();
    app.add_option("--stop-timeout-ms", stop_timeout_ms,
                   "how long a plugin's stop may take before it is given up (left running, marked failed; 0 = wait)")
        ->check(CLI::Range(0, 3600000))
        ->capture_default_str();
    app.add_option("--status-every", status_every, "ask plugins for their status every N ticks (0 = never)")
        ->check(CLI::Range(0, 1000000))
        ->capture_default_str();
    app.add_option("--control-socket", control_socket,
                   "where the diagnostics console listens (docs/CONSOLE.md; tt-console connects there); "
                   "default <state dir>/control.sock, with --no-state $XDG_RUNTIME_DIR/tracetunnel-<pid>.sock "
                   "or /tmp/tracetunnel-<uid>-<pid>.sock");
    app.add_flag("--no-control", no_control, "no control socket");
    std::vector<std::string> isolate;
    std::string plugin_child;
    int call_timeout_ms = 5000;
    app.add_option("--isolate", isolate,
                   "run this plugin (its name or file stem; repeatable) in a child process: a crash there is "
                   "reported, rolled back and the child restarted on the committed state (docs/ISOLATION.md)")
        ->allow_extra_args(false);  // one name per --isolate: a plugin folder after it stays a folder
    app.add_option("--plugin-child", plugin_child, "the child program for --isolate (default: tt-plugin-child "
                                                   "beside tt-host)");
    app.add_option("--call-timeout-ms", call_timeout_ms,
                   "how long an isolated plugin may take to answer a call before its child is killed")
        ->check(CLI::Range(10, 3600000))
        ->capture_default_str();
    otlp_flags otlp_args;
    app.add_option("--otlp-endpoint", otlp_args.endpoint,
                   "export spans over OTLP/HTTP (JSON) to this URL, e.g. http://localhost:4318/v1/traces "
                   "(default from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; docs/OTLP.md)");
    app.add_option("--otlp-service-name", otlp_args.service_name,
                   "the service.name of the exported resource (default OTEL_SERVICE_NAME, else tt-host)");
    app.add_option("--otlp-resource-attributes", otlp_args.resource_attributes,
                   "more resource attributes, k=v,k2=v2 with %XX escapes (added to OTEL_RESOURCE_ATTRIBUTES)");
    app.add_option("--otlp-queue-size", otlp_args.queue_size, "closed spans waiting for export; more are dropped")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24));
    app.add_option("--otlp-batch-size", otlp_args.batch_size, "spans per OTLP request at most")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20));
    app.add_option("--otlp-batch-delay-ms", otlp_args.batch_delay_ms, "a partial batch waits at most this long")
        ->check(CLI::Range(1, 3600000));
    app.add_flag("--no-otlp", otlp_args.off, "no OTLP export, whatever the OTEL_* variables say");
    app.add_option("--traceparent", otlp_args.traceparent,
                   "W3C traceparent the plugins' root spans join (default $TRACEPARENT), "
                   "e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    bool no_usdt = false;
    app.add_flag("--no-usdt", no_usdt,
                 tt::host::usdt_available()
                     ? "no USDT probes (docs/USDT.md; while no tracer is attached they cost one load per callback)"
                     : "no effect: this build has no USDT probes (built without sys/sdt.h, docs/USDT.md)");
    app.add_flag("--span-events", span_events, "also print a line when a span opens and closes");
    app.add_flag("--no-color", no_colour, "never colour the output (default: colour on a terminal)");
    CLI11_PARSE(app, argc, argv);

    auto parsed = tt::host::parse_filter(filter_text);
    if (auto* err = std::get_if<tt::host::filter_error>(&parsed)) {
        fmt::print(stderr, "tt-host: bad --filter \"{}\" at byte {}: {}\n", filter_text, err->position, err->message);
        return 2;
    }

    auto remote_parent = traceparent_setting(otlp_args);
    if (auto* err = std::get_if<std::string>(&remote_parent)) {
        fmt::print(stderr, "tt-host: {}\n", *err);
        return 2;
    }
#ifdef TT_HAVE_OTLP
    auto otlp_setting = otlp_settings(otlp_args);
    if (auto* err = std::get_if<std::string>(&otlp_setting)) {
        fmt::print(stderr, "tt-host: {}\n", *err);
        return 2;
    }
    std::optional<tt::host::otlp_options> otlp = std::get<0>(std::move(otlp_setting));
    if (otlp)
        otlp->default_parent = std::get<0>(remote_parent);
#else
    if (otlp_args.any()) {
        fmt::print(stderr, "tt-host: this build has no OTLP exporter (built without libcurl, docs/OTLP.md)\n");
        return 2;
    }
#endif

    // Every argument must exist before anything starts: a typo is an error, not an empty host.
    std::vector<fs::path> folders, files;
    for (const auto& arg : plugin_args) {
        std::error_code ec;
        const auto st = fs::status(arg, ec);
        if (fs::is_directory(st)) {
            folders.emplace_back(arg);
        } else if (fs::is_regular_file(st)) {
            files.emplace_back(arg);
        } else {
            fmt::print(stderr, "tt-host: --plugins {}: no such file or folder\n", arg);
            return 2;
        }
    }
    for (const auto& dir : folders) {
        std::vector<fs::path> found;
        std::error_code ec;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
            if (it->path().extension() == ".so" && it->is_regular_file())
                found.push_back(it->path());
        if (ec) {
            fmt::print(stderr, "tt-host: cannot read {}: {}\n", dir.string(), ec.message());
            return 2;
        }
        std::sort(found.begin(), found.end());
        files.insert(files.end(), found.begin(), found.end());
    }

    tt::host::dispatcher pipeline(std::get<tt::host::filter>(parsed));
    if (!no_usdt)
        if (auto usdt = tt::host::make_usdt_layer())
            pipeline.add_layer(std::move(usdt));
    pipeline.add_layer(tt::host::make_output_layer({format,
                                                    no_colour ? tt::host::color_mode::never
                                                              : tt::host::color_mode::automatic,
                                                    span_events, true, std::chrono::milliseconds(flush_ms)}));

    tt::host::plugin_host_options options;
    if (!no_state)
        options.state_dir = state_dir;
    options.settle = std::chrono::milliseconds(settle_ms);
    options.stop_timeout = std::chrono::milliseconds(stop_timeout_ms);
    options.isolate = isolate;
    options.isolation.child_program = plugin_child;
    options.isolation.call_timeout = std::chrono::milliseconds(call_timeout_ms);
    tt::host::plugin_host host(pipeline, options);
#ifdef TT_HAVE_OTLP
    // After the host (its versions name the scopes), before the plugins load;
    // shut down after host.shutdown(), which closes or suspends what is open.
    std::shared_ptr<tt::host::otlp_exporter> exporter;
    if (otlp) {
        otlp->plugin_version = [&host](std::string_view name) {
            for (const auto& p : host.plugins())
                if (p.name == name)
                    return p.version;
            return std::string();
        };
        otlp->on_state_change = [&pipeline](bool failing, std::string_view detail) {
            if (failing)
                pipeline.host_event(tt::model::level::warn, "tt::host::otlp", "OTLP export failing, retrying",
                                    {{"error", std::string(detail)}});
            else
                pipeline.host_event(tt::model::level::info, "tt::host::otlp", "OTLP export recovered");
        };
        exporter = std::make_shared<tt::host::otlp_exporter>(*otlp);
        pipeline.add_layer(exporter);
        pipeline.host_event(tt::model::level::info, "tt::host", "OTLP export",
                            {{"endpoint", otlp->endpoint}, {"service_name", otlp->service_name}});
    }
#endif

    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);

    pipeline.host_event(tt::model::level::info, "tt::host", "host starting",
                        {{"state_dir", no_state ? std::string("(none)") : state_dir},
                         {"plugins", static_cast<std::uint64_t>(files.size())},
                         {"watch", watch}});
    std::size_t loaded = 0;
    for (const auto& f : files)
        if (std::holds_alternative<tt::host::plugin_status>(host.load(f)))
            ++loaded;
    if (watch) {
        for (const auto& dir : folders)
            if (auto err = host.watch(dir); !err.empty())
                fmt::print(stderr, "tt-host: {}\n", err);
        try {
            host.start_watching();
        } catch (const std::exception& e) {
            fmt::print(stderr, "tt-host: cannot watch plugin files, reloading is off: {}\n", e.what());
        }
    }
    if (loaded == 0 && folders.empty()) {
        fmt::print(stderr, "tt-host: no plugin could be loaded\n");
        return 1;
    }

    // The diagnostics console (docs/CONSOLE.md).
    std::optional<tt::host::control_server> control;
    if (!no_control) {
        const fs::path socket_path =
            control_socket.empty() ? default_control_socket(no_state, state_dir) : fs::path(control_socket);
        std::error_code ec;
        if (socket_path.has_parent_path())
            fs::create_directories(socket_path.parent_path(), ec);
        tt::host::control_options control_opts{.path = socket_path};
#ifdef TT_HAVE_OTLP
        if (exporter)
            control_opts.stats_sections.emplace_back("otlp", [exporter] { return exporter->counters(); });
#endif
        control.emplace(host, pipeline, std::move(control_opts));
        if (auto err = control->start(); !err.empty()) {
            fmt::print(stderr, "tt-host: {}\n", err);
            control.reset();
            host.shutdown();
            return 1;
        }
        pipeline.host_event(tt::model::level::info, "tt::host", "control socket",
                            {{"path", socket_path.string()}});
    }

    example_application application{host};
    auto next_commit = std::chrono::steady_clock::now() + std::chrono::milliseconds(commit_interval_ms);
    while (stop_signal.load() == 0 && (ticks == 0 || static_cast<long long>(application.tick) < ticks)) {
        application.run_tick();
        if (status_every > 0 && application.tick % static_cast<std::uint64_t>(status_every) == 0)
            application.status_requests();
        if (std::chrono::steady_clock::now() >= next_commit) {
            for (const auto& problem : host.commit())
                fmt::print(stderr, "tt-host: commit: {}\n", problem);
            next_commit = std::chrono::steady_clock::now() + std::chrono::milliseconds(commit_interval_ms);
        }
        // Sleep in short steps so that a signal is answered promptly.
        const auto wake = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms);
        while (stop_signal.load() == 0 && std::chrono::steady_clock::now() < wake)
            std::this_thread::sleep_for(std::min(std::chrono::milliseconds(20),
                                                 std::chrono::duration_cast<std::chrono::milliseconds>(
                                                     wake - std::chrono::steady_clock::now())));
    }

    const int sig = stop_signal.load();
    pipeline.host_event(tt::model::level::info, "tt::host", "host stopping",
                        {{"reason", sig != 0 ? std::string(sig == SIGINT ? "SIGINT" : "SIGTERM")
                                             : std::string("tick limit reached")},
                         {"ticks", application.tick}});
    std::uint64_t received = 0, refused = 0;
    for (const auto& p : host.plugins()) {
        for (auto n : p.stats.events)
            received += n;
        for (auto n : p.stats.errors)
            refused += n;
    }
    if (control)
        control->stop();
    host.shutdown();
#ifdef TT_HAVE_OTLP
    if (exporter) {
        exporter->shutdown();
        const auto st = exporter->statistics();
        pipeline.host_event(tt::model::level::info, "tt::host", "OTLP exporter stopped",
                            {{"exported", st.spans_exported}, {"dropped", st.dropped()}});
    }
#endif
    pipeline.host_event(tt::model::level::info, "tt::host", "host stopped",
                        {{"events", received}, {"refused", refused},
                         {"state_saved", !no_state}});
    return 0;
}
