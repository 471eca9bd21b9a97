// Isolation: a plugin that runs in a child process (tt-plugin-child), so
// that a segfault or abort in it takes only the child down.
//
// open_isolated() starts the child on a plugin file; the child opens it with
// the same checked loader (plugin_library.hpp) and describes it. The result
// is a plugin_library like any other, whose start, stop, state hooks and
// interest_changed are forwarded to the child; the plugin's emits come back
// over a socketpair as frames that the parent validates and hands to the
// tt_host given to start(), so the host's receiver, pipeline, state and
// reload work on them unchanged. plugin_host does all this itself for the
// plugins named in plugin_host_options::isolate:
//
//   tt::host::plugin_host_options opts;
//   opts.isolate = {"orders"};                          // lineage name or file stem
//   tt::host::plugin_host host(pipeline, opts);
//   host.load("plugins/liborders.so");                  // runs in a child
//   host.call_each<void(std::uint64_t)>("example_tick", 1);  // forwarded
//
// Limits (docs/ISOLATION.md): application calls are forwarded only for the
// signatures of call_signature; emits that need no answer are sent without
// waiting (the plugin sees TT_STATUS_OK even when the host refuses them);
// a child's threads all reach the pipeline on one host thread.
#pragma once

#include <tracetunnel/host/plugin_library.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

namespace tt::host {

struct isolation_options {
    // The child program; empty = tt-plugin-child beside this executable.
    std::filesystem::path child_program;
    // How long a forwarded call, start, stop or state transfer may take; a
    // child that does not answer in time is killed (and then restarted).
    std::chrono::milliseconds call_timeout{5000};
    // Restarts after a crash wait first_backoff, doubled for each further
    // crash within a minute, at most max_backoff.
    std::chrono::milliseconds first_backoff{100};
    std::chrono::milliseconds max_backoff{5000};
    // More crashes than this within a minute: the plugin is marked failed
    // and not restarted (reload or load it to try again).
    std::size_t max_restarts_per_minute = 5;
};

// How a child process ended.
struct child_exit {
    int pid = 0;
    bool signaled = false;
    int signal = 0;  // when signaled
    int status = 0;  // exit status otherwise
    // Why the host ended it, when it did: "protocol violation: ...",
    // "no answer within 5000 ms". Empty when the child ended on its own.
    std::string reason;
    // "SIGSEGV", "exit status 3"
    std::string describe() const;
};

// Application calls that can cross to a child: the plugin's export is
// called there with one of these signatures.
enum class call_signature : std::uint8_t {
    void_void = 1,  // void f()
    void_u64 = 2,   // void f(uint64_t)
    cstr_cstr = 3,  // const char *f(const char *)
};

struct forwarded_call {
    call_signature signature = call_signature::void_void;
    std::string symbol;
    std::uint64_t number = 0;         // void_u64
    std::optional<std::string> text;  // cstr_cstr; nullopt = NULL
};

struct call_outcome {
    bool called = false;               // false: no such export, or the call failed (error)
    std::optional<std::string> text;   // cstr_cstr: the answer (nullopt = NULL)
    std::string error;                 // why not called, when the child failed
};

// The forwarded form of a call of type Fn, or nullopt when Fn is not one of
// the signatures above.
template <class Fn, class... A>
std::optional<forwarded_call> forward_call(std::string_view symbol, const A&... args)
{
    if constexpr (std::is_same_v<Fn, void()> && sizeof...(A) == 0) {
        return forwarded_call{call_signature::void_void, std::string(symbol), 0, std::nullopt};
    } else if constexpr (std::is_same_v<Fn, void(std::uint64_t)> && sizeof...(A) == 1) {
        return forwarded_call{call_signature::void_u64, std::string(symbol), static_cast<std::uint64_t>(args)...,
                              std::nullopt};
    } else if constexpr (std::is_same_v<Fn, const char*(const char*)> && sizeof...(A) == 1) {
        const char* s = [](const char* p) { return p; }(args...);
        return forwarded_call{call_signature::cstr_cstr, std::string(symbol), 0,
                              s == nullptr ? std::nullopt : std::optional<std::string>(s)};
    } else {
        return std::nullopt;
    }
}

// A forwarded answer as the caller's R: for const char*, a pointer valid
// until the next forwarded call on this thread (as example_app.h promises).
const char* keep_forwarded_text(const std::optional<std::string>& text);
template <class R>
R forwarded_value(const call_outcome& outcome)
{
    if constexpr (std::is_same_v<R, const char*>)
        return keep_forwarded_text(outcome.text);
    else
        return R{};
}

// Starts tt-plugin-child on `file` and opens the plugin there. `on_exit`
// runs on a thread of the library when the child ends other than through
// the library itself (a crash, an exit, a protocol violation or a timeout);
// it must return quickly. The library ends its child when destroyed.
std::variant<std::shared_ptr<plugin_library>, load_error>
open_isolated(const std::filesystem::path& file, const isolation_options& options,
              std::function<void(std::uint64_t serial, const child_exit&)> on_exit);

// Whether `lib` runs in a child (open_isolated), and that child's serial
// (the first argument of on_exit; 0 for an in-process library) and pid.
bool is_isolated(const plugin_library& lib) noexcept;
std::uint64_t isolated_serial(const plugin_library& lib) noexcept;
int isolated_pid(const plugin_library& lib) noexcept;
// Calls an export in the child and waits (options.call_timeout).
call_outcome call_isolated(const plugin_library& lib, const forwarded_call& call);
// True once per symbol and library: the first time an application call
// with a signature that cannot be forwarded meets this isolated plugin.
bool first_unforwardable(const plugin_library& lib, std::string_view symbol);

// The child side: serves the plugin `file` over the socket `fd`; returns the
// process exit status. tools/tt-plugin-child.cpp is main() around it.
int run_plugin_child(int fd, const std::filesystem::path& file);

}  // namespace tt::host
