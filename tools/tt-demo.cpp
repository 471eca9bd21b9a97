// tt-demo: the smallest host that runs plugins through the real pipeline.
//
// Loads each plugin with the checked loader, gives it a receiver (one per
// plugin lineage) feeding the dispatcher with a console or JSON lines layer,
// and calls the example application's `example_tick` entry point once per
// tick. tt-host (hot reload, persisted state, control socket) builds on the
// same pieces.
#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/plugin_library.hpp>
#include <tracetunnel/host/receiver.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <thread>

#include "../plugins/include/example_app.h"

namespace {

volatile std::sig_atomic_t stop_requested = 0;

struct running_plugin {
    std::shared_ptr<tt::host::plugin_library> lib;
    std::unique_ptr<tt::host::receiver> receiver;
    example_tick_fn tick = nullptr;
};

// The one function every plugin calls: its context is its receiver.
std::uint64_t emit_to_receiver(void* ctx, const tt_event* ev)
{
    if (ev == nullptr)
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    return static_cast<tt::host::receiver*>(ctx)->receive(*ev);
}

}  // namespace

int main(int argc, char** argv)
{
    CLI::App app{"tt-demo: load tracetunnel plugins, call their example_tick entry point once per tick,\n"
                 "and print the spans and events they emit through the host's pipeline."};
    app.set_version_flag("--version", "tt-demo " TT_PROJECT_VERSION);
    std::vector<std::string> plugins;
    int ticks = 5;
    int interval_ms = 200;
    std::string filter_text = "info";
    std::string format = "compact";
    bool no_colour = false;
    bool span_events = false;
    app.add_option("--plugins,plugins", plugins, "plugin shared objects (.so) to load")->required();
    app.add_option("--ticks", ticks, "how many ticks to run (0 = until Ctrl-C)")->capture_default_str();
    app.add_option("--interval-ms", interval_ms, "milliseconds between ticks")->capture_default_str();
    app.add_option("--filter", filter_text, "filter directives, EnvFilter syntax (e.g. info,orders=debug)")
        ->capture_default_str();
    app.add_option("--format", format, "output format")
        ->check(CLI::IsMember({"compact", "pretty", "json"}))
        ->capture_default_str();
    app.add_flag("--span-events", span_events, "also print a line when a span opens and closes");
    app.add_flag("--no-color", no_colour, "never colour the output (default: colour on a terminal)");
    CLI11_PARSE(app, argc, argv);

    auto parsed = tt::host::parse_filter(filter_text);
    if (auto* err = std::get_if<tt::host::filter_error>(&parsed)) {
        fmt::print(stderr, "tt-demo: bad --filter at byte {}: {}\n", err->position, err->message);
        return 2;
    }
    tt::host::dispatcher pipeline(std::get<tt::host::filter>(parsed));
    pipeline.add_layer(tt::host::make_output_layer(
        {format, no_colour ? tt::host::color_mode::never : tt::host::color_mode::automatic, span_events}));

    std::signal(SIGINT, [](int) { stop_requested = 1; });
    std::signal(SIGTERM, [](int) { stop_requested = 1; });

    std::vector<running_plugin> running;
    int failures = 0;
    for (const auto& path : plugins) {
        auto opened = tt::host::open_plugin(path);
        if (auto* err = std::get_if<tt::host::load_error>(&opened)) {
            fmt::print(stderr, "tt-demo: {}\n", err->message());
            ++failures;
            continue;
        }
        running_plugin rp;
        rp.lib = std::get<std::shared_ptr<tt::host::plugin_library>>(opened);
        const auto& d = rp.lib->description();
        rp.receiver = std::make_unique<tt::host::receiver>(d.name, pipeline);
        fmt::print(stderr, "tt-demo: loaded plugin '{}' {} (ABI {}.{}) from {}\n", d.name, d.version,
                   TT_ABI_MAJOR_OF(d.abi_version), TT_ABI_MINOR_OF(d.abi_version), path);
        tt_host api{};
        api.struct_size = sizeof api;
        api.abi_version = TT_ABI_VERSION;
        api.emit = &emit_to_receiver;
        api.ctx = rp.receiver.get();
        const auto started = rp.lib->start(api);
        if (auto* err = std::get_if<tt::host::load_error>(&started)) {
            fmt::print(stderr, "tt-demo: {}\n", err->message());
            ++failures;
            continue;
        }
        rp.tick = rp.lib->find_export<void(uint64_t)>(EXAMPLE_SYMBOL_TICK);
        running.push_back(std::move(rp));
    }

    for (int t = 0; (ticks == 0 || t < ticks) && !stop_requested; ++t) {
        for (auto& rp : running)
            if (rp.tick)
                rp.tick(static_cast<std::uint64_t>(t));
        std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
    }

    for (auto& rp : running) {
        rp.lib->stop();
        const auto stats = rp.receiver->stats();
        std::uint64_t received = 0, errors = 0;
        for (auto n : stats.events)
            received += n;
        for (auto n : stats.errors)
            errors += n;
        fmt::print(stderr, "tt-demo: stopped '{}': {} events received, {} refused\n", rp.lib->description().name,
                   received, errors);
        // Destroying the receiver without a commit rolls back: spans the plugin
        // left open are closed in the pipeline, never leaked.
        rp.receiver.reset();
    }
    return failures == 0 ? 0 : 1;
}
