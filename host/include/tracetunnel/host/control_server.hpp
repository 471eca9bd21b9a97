// The control socket of a plugin host: the diagnostics console protocol,
// version 1 (docs/CONSOLE.md). Newline-delimited JSON over a Unix domain
// socket (mode 0600): plugins, call sites with hit counts, live spans,
// statistics, errors, the filter, reload / unload / load / persist, and a
// subscription to the event stream.
//
//   tt::host::control_server control(host, pipeline, {.path = state_dir / "control.sock"});
//   if (auto err = control.start(); !err.empty())
//       fmt::print(stderr, "{}\n", err);
//   ...
//   control.stop();      // before host.shutdown()
//
// One thread serves every client with poll(2); sockets are non-blocking.
// Each client has an input limit (1 MiB a line, `too_large` beyond) and a
// bounded output queue: subscription events that do not fit are dropped for
// that client only and counted, so a slow or dead client never blocks the
// host or its plugins. Commands that change things run on the server thread
// (plugin_host serializes them).
//
// Subscriptions are served by a layer added to the dispatcher once, at the
// first start(); it formats an event only while somebody is subscribed, and
// never blocks (a try-push into each subscriber's queue, then a wake-up).
#pragma once

#include <tracetunnel/host/version.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tt::host {

class plugin_host;
class dispatcher;

struct control_options {
    std::filesystem::path path;            // the socket file
    std::size_t max_line = std::size_t{1} << 20;  // request line limit (bytes)
    std::size_t max_queue = 1024;          // output lines queued per client
    std::string version = std::string(library_version());  // the greeting's "version"
    // Extra objects of counters in the `stats` answer, asked on the server
    // thread: {"otlp", [&] { return exporter->counters(); }} gives "otlp": {...}.
    using counters_fn = std::function<std::vector<std::pair<std::string, std::uint64_t>>()>;
    std::vector<std::pair<std::string, counters_fn>> stats_sections{};
};

// One request line parsed as the server parses it, before any command runs
// (exposed for the fuzz target, tests/fuzz). Never throws.
//
//   auto r = tt::host::parse_control_request(R"({"id":1,"cmd":"stats"})");
//   // r.error_code.empty(), r.cmd == "stats", r.id_json == "1", r.args_json == "{}"
struct control_request {
    std::string id_json = "null";  // the request's "id", serialized ("null" when absent)
    std::string cmd;
    std::string args_json = "{}";  // the "args" object, serialized
    std::string error_code;        // empty = parsed; else bad_json, bad_request (or failed: out of memory)
    std::string error_message;
};
control_request parse_control_request(std::string_view line) noexcept;

class control_server {
public:
    control_server(plugin_host& host, dispatcher& pipeline, control_options options);
    control_server(const control_server&) = delete;
    control_server& operator=(const control_server&) = delete;
    // stop().
    ~control_server();

    // Creates the socket (a stale socket file is replaced; a socket another
    // process answers on is not) and starts the server thread. Empty = ok,
    // else why not (nothing was started).
    std::string start();
    // Stops the thread, disconnects every client, removes the socket file.
    // Idempotent.
    void stop() noexcept;

    const std::filesystem::path& path() const noexcept;
    bool running() const noexcept;

    struct impl;

private:
    std::unique_ptr<impl> impl_;
};

}  // namespace tt::host
