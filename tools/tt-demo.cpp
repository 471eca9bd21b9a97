// tt-demo: the smallest host that runs plugins and prints what they emit.
//
// Loads each plugin with the checked loader, hands it a host whose emit
// prints every call site, span and event as it crosses, and calls the example
// application's `example_tick` entry point a few times. It is the visible end
// of the foundation; tt-host (receiver, layers, hot reload) replaces it.
#include <tracetunnel/abi_convert.hpp>
#include <tracetunnel/host/plugin_library.hpp>

#include <CLI/CLI.hpp>
#include <fmt/color.h>
#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <unistd.h>

#include "../plugins/include/example_app.h"

namespace {

volatile std::sig_atomic_t stop_requested = 0;

std::string render(const tt::model::value& v)
{
    return std::visit(
        [](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                return x ? "true" : "false";
            else if constexpr (std::is_same_v<T, tt::model::i128> || std::is_same_v<T, tt::model::u128>) {
                // fmt prints 128-bit integers natively.
                return fmt::format("{}", x);
            } else if constexpr (std::is_same_v<T, std::string>)
                return fmt::format("{:?}", x);
            else if constexpr (std::is_same_v<T, tt::model::debug_text>)
                return x.text;
            else if constexpr (std::is_same_v<T, tt::model::error_chain>) {
                std::string out;
                for (std::size_t i = 0; i < x.chain.size(); ++i)
                    out += (i ? ": " : "") + x.chain[i];
                return out;
            } else
                return fmt::format("{}", x);
        },
        v);
}

// One printing host per plugin: the emit context says which plugin spoke.
class printing_host {
public:
    printing_host(std::string plugin, bool colour) : plugin_(std::move(plugin)), colour_(colour) {}

    tt_host api()
    {
        tt_host h{};
        h.struct_size = sizeof h;
        h.abi_version = TT_ABI_VERSION;
        h.emit = &printing_host::emit;
        h.ctx = this;
        return h;
    }

    std::size_t events_seen() const { return events_; }

private:
    static std::uint64_t emit(void* ctx, const tt_event* ev)
    {
        return static_cast<printing_host*>(ctx)->on(*ev);
    }

    std::uint64_t on(const tt_event& raw)
    {
        std::lock_guard lock(mutex_);
        const std::uint64_t new_id = raw.kind == TT_EVENT_NEW_SPAN ? next_span_++ : 0;
        std::string why;
        auto ev = decoder_.decode(raw, new_id, &why);
        if (!ev) {
            print_line(tt::model::level::error, fmt::format("refused event from {}: {}", plugin_, why));
            return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
        }
        ++events_;
        return std::visit([&](const auto& e) { return handle(e); }, *ev);
    }

    std::string fields(const tt::model::field_values& values, bool skip_message = false) const
    {
        std::string out;
        for (const auto& [name, value] : values) {
            if (skip_message && name == "message")
                continue;
            out += fmt::format(" {}={}", name, render(value));
        }
        return out;
    }

    std::string context() const
    {
        std::string out;
        for (auto id : stack_) {
            auto it = spans_.find(id);
            if (it == spans_.end())
                continue;
            if (!out.empty())
                out += ':';
            out += it->second;
        }
        return out;
    }

    void print_line(tt::model::level lvl, const std::string& text) const
    {
        static const fmt::color colours[] = {fmt::color::red, fmt::color::red, fmt::color::gold,
                                             fmt::color::green, fmt::color::cornflower_blue, fmt::color::gray};
        const auto idx = static_cast<std::size_t>(lvl) < 6 ? static_cast<std::size_t>(lvl) : 0;
        const auto lvl_text = fmt::format("{:>5}", tt::model::to_string(lvl));
        if (colour_)
            fmt::print("{} {} {}\n", fmt::styled(lvl_text, fmt::fg(colours[idx]) | fmt::emphasis::bold),
                       fmt::styled(plugin_, fmt::emphasis::italic), text);
        else
            fmt::print("{} {} {}\n", lvl_text, plugin_, text);
        std::fflush(stdout);
    }

    std::uint64_t handle(const tt::model::new_callsite& e)
    {
        print_line(tt::model::level::trace,
                   fmt::format("registered {} call site '{}' ({}:{}) id {:#018x}",
                               e.site.kind == tt::model::callsite_kind::span ? "span" : "event", e.site.name,
                               e.site.file, e.site.line, e.site.id));
        return TT_INTEREST_ALWAYS;
    }
    std::uint64_t handle(const tt::model::new_span& e)
    {
        const auto* cs = decoder_.find_callsite(e.callsite_id);
        spans_[e.id] = fmt::format("{}{{{}}}", cs->name, fields(e.values).substr(e.values.empty() ? 0 : 1));
        print_line(cs->level, fmt::format("new span #{} {}", e.id, spans_[e.id]));
        return e.id;
    }
    std::uint64_t handle(const tt::model::span_entered& e)
    {
        stack_.push_back(e.id);
        return TT_STATUS_OK;
    }
    std::uint64_t handle(const tt::model::span_exited& e)
    {
        if (!stack_.empty() && stack_.back() == e.id)
            stack_.pop_back();
        return TT_STATUS_OK;
    }
    std::uint64_t handle(const tt::model::span_dropped& e)
    {
        if (--refs_[e.id] < 0) {
            print_line(tt::model::level::debug, fmt::format("close span #{} {}", e.id, spans_[e.id]));
            spans_.erase(e.id);
            refs_.erase(e.id);
        }
        return TT_STATUS_OK;
    }
    std::uint64_t handle(const tt::model::span_cloned& e)
    {
        ++refs_[e.id];
        return TT_STATUS_OK;
    }
    std::uint64_t handle(const tt::model::values_recorded& e)
    {
        print_line(tt::model::level::debug, fmt::format("record span #{}{}", e.id, fields(e.values)));
        return TT_STATUS_OK;
    }
    std::uint64_t handle(const tt::model::follows_from& e)
    {
        print_line(tt::model::level::debug, fmt::format("span #{} follows from #{}", e.id, e.cause));
        return TT_STATUS_OK;
    }
    std::uint64_t handle(const tt::model::new_event& e)
    {
        const auto* cs = decoder_.find_callsite(e.callsite_id);
        std::string message;
        for (const auto& [name, value] : e.values)
            if (name == "message")
                message = std::holds_alternative<std::string>(value) ? std::get<std::string>(value) : render(value);
        const auto ctx = context();
        print_line(cs->level, fmt::format("{}{}{}: {}{}", ctx, ctx.empty() ? "" : " ", cs->target, message,
                                          fields(e.values, true)));
        return TT_STATUS_OK;
    }

    std::string plugin_;
    bool colour_;
    std::mutex mutex_;
    tt::model::abi_decoder decoder_;
    std::uint64_t next_span_ = 1;
    std::size_t events_ = 0;
    std::map<std::uint64_t, std::string> spans_;
    std::map<std::uint64_t, int> refs_;
    std::vector<std::uint64_t> stack_;
};

struct running_plugin {
    std::shared_ptr<tt::host::plugin_library> lib;
    std::unique_ptr<printing_host> host;
    example_tick_fn tick = nullptr;
};

}  // namespace

int main(int argc, char** argv)
{
    CLI::App app{"tt-demo: load tracetunnel plugins and print every span and event they emit.\n"
                 "Calls each plugin's example_tick entry point once per tick."};
    std::vector<std::string> plugins;
    int ticks = 5;
    int interval_ms = 200;
    bool no_colour = false;
    app.add_option("--plugins,plugins", plugins, "plugin shared objects (.so) to load")->required();
    app.add_option("--ticks", ticks, "how many ticks to run (0 = until Ctrl-C)")->capture_default_str();
    app.add_option("--interval-ms", interval_ms, "milliseconds between ticks")->capture_default_str();
    app.add_flag("--no-color", no_colour, "never colour the output (default: colour on a terminal)");
    CLI11_PARSE(app, argc, argv);

    std::signal(SIGINT, [](int) { stop_requested = 1; });
    std::signal(SIGTERM, [](int) { stop_requested = 1; });
    const bool colour = !no_colour && isatty(STDOUT_FILENO);

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
        rp.host = std::make_unique<printing_host>(d.name, colour);
        fmt::print("tt-demo: loaded plugin '{}' {} (ABI {}.{}) from {}\n", d.name, d.version,
                   TT_ABI_MAJOR_OF(d.abi_version), TT_ABI_MINOR_OF(d.abi_version), path);
        const tt_host api = rp.host->api();
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
        fmt::print("tt-demo: stopped '{}' after {} events\n", rp.lib->description().name, rp.host->events_seen());
    }
    return failures == 0 ? 0 : 1;
}
