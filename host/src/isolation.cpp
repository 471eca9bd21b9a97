// The parent side of isolation.hpp: a plugin_backend that drives one
// tt-plugin-child process over a socketpair.
#include <tracetunnel/host/isolation.hpp>

#include "isolation_protocol.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace tt::host {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

std::string child_exit::describe() const
{
    if (signaled) {
        const char* abbrev = ::sigabbrev_np(signal);
        std::string out = abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", signal);
        return reason.empty() ? out : fmt::format("{} ({})", out, reason);
    }
    std::string out = fmt::format("exit status {}", status);
    return reason.empty() ? out : fmt::format("{} ({})", out, reason);
}

const char* keep_forwarded_text(const std::optional<std::string>& text)
{
    thread_local std::string kept;
    if (!text)
        return nullptr;
    kept = *text;
    return kept.c_str();
}

namespace {

std::atomic<std::uint64_t> next_serial{0};

// Waits for `pid` to end (killing it after `grace`) and reaps it.
child_exit reap_child(int pid, std::chrono::milliseconds grace)
{
    child_exit out;
    out.pid = pid;
    const auto deadline = clock_type::now() + grace;
    int status = 0;
    pid_t r = 0;
    while ((r = ::waitpid(pid, &status, WNOHANG)) == 0 && clock_type::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (r == 0) {
        ::kill(pid, SIGKILL);
        out.reason = "did not end after its socket closed";
        while ((r = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
        }
    }
    if (r == pid) {
        out.signaled = WIFSIGNALED(status);
        out.signal = out.signaled ? WTERMSIG(status) : 0;
        out.status = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    } else {
        out.status = -1;
        out.reason = "its exit status is unknown (reaped elsewhere)";
    }
    return out;
}

class child_plugin final : public plugin_backend {
public:
    child_plugin(int pid, int fd, isolation_options options,
                 std::function<void(std::uint64_t, const child_exit&)> on_exit)
        : pid_(pid), fd_(fd), serial_(++next_serial), options_(std::move(options)), on_exit_(std::move(on_exit))
    {
    }
    ~child_plugin() override
    {
        closing_.store(true);
        bool lost = false;
        {
            std::lock_guard lk(mutex_);
            lost = lost_;
        }
        if (!lost) {
            wire::writer w;
            w.u64(0);
            w.u8(static_cast<std::uint8_t>(wire::command::quit));
            std::lock_guard wl(write_mutex_);
            (void)wire::write_frame(fd_, wire::frame::command, w);
        }
        {
            std::unique_lock lk(mutex_);
            if (!cv_.wait_for(lk, std::chrono::seconds(2), [&] { return reaped_; })) {
                lk.unlock();
                kill_child("did not quit");
            }
        }
        ::shutdown(fd_, SHUT_RDWR);
        if (reader_.joinable())
            reader_.join();
        ::close(fd_);
    }

    void start_reader()
    {
        reader_ = std::thread([this] { read_loop(); });
    }

    std::uint64_t serial() const noexcept { return serial_; }
    int pid() const noexcept { return pid_; }

    std::variant<std::monostate, load_error> start(const tt_host& host) override
    {
        emit_ctx_.store(host.ctx);
        emit_.store(host.emit);
        std::string why;
        auto reply = command(wire::command::start, {}, why);
        if (!reply)
            return load_error{load_errc::start_failed, {}, {}, "tt_plugin_start in the child: " + why};
        wire::reader r(reply->data(), reply->size());
        const bool ok = r.u8() == 1;
        std::string reason = r.str();
        if (!r.ok())
            return load_error{load_errc::start_failed, {}, {}, "bad answer from the child to start"};
        if (!ok)
            return load_error{load_errc::start_failed, {}, {}, reason};
        return std::monostate{};
    }

    void stop() noexcept override
    {
        try {
            std::string why;
            (void)command(wire::command::stop, {}, why);
        } catch (...) {
        }
    }

    void interest_changed() noexcept override
    {
        try {
            std::string why;
            (void)command(wire::command::interest_changed, {}, why);
        } catch (...) {
        }
    }

    bool save_state(std::vector<std::uint8_t>& out) override
    {
        std::string why;
        auto reply = command(wire::command::save_state, {}, why);
        if (!reply)
            return false;
        wire::reader r(reply->data(), reply->size());
        const bool ok = r.u8() == 1;
        const std::uint64_t n = r.u64();
        const auto* bytes = r.take(n);
        if (!ok || !r.done())
            return false;
        out.assign(bytes, bytes + n);
        return true;
    }

    bool restore_state(const std::vector<std::uint8_t>& data) override
    {
        wire::writer w;
        w.u64(data.size());
        w.bytes(data.data(), data.size());
        std::string why;
        auto reply = command(wire::command::restore_state, w.buf, why);
        if (!reply)
            return false;
        wire::reader r(reply->data(), reply->size());
        return r.u8() == 1 && r.done();
    }

    call_outcome call(const forwarded_call& c)
    {
        call_outcome out;
        wire::writer w;
        w.u8(static_cast<std::uint8_t>(c.signature));
        w.str(c.symbol);
        w.u64(c.number);
        w.u8(c.text ? 1 : 0);
        w.str(c.text ? *c.text : std::string());
        auto reply = command(wire::command::call, w.buf, out.error);
        if (!reply)
            return out;
        wire::reader r(reply->data(), reply->size());
        const std::uint8_t status = r.u8();
        const bool has_text = r.u8() == 1;
        std::string text = r.str();
        if (!r.done() || status > 1) {
            out.error = "bad answer from the child to a call";
            return out;
        }
        out.called = status == 0;
        if (has_text)
            out.text = std::move(text);
        return out;
    }

    bool first_unforwardable(std::string_view symbol)
    {
        std::lock_guard lk(mutex_);
        return warned_.emplace(symbol).second;
    }

    // Kills the child (once it is reaped, never: its pid may be reused).
    void kill_child(std::string reason)
    {
        std::lock_guard lk(mutex_);
        if (reaped_)
            return;
        if (kill_reason_.empty())
            kill_reason_ = std::move(reason);
        ::kill(pid_, SIGKILL);
    }

private:
    std::optional<std::vector<std::uint8_t>> command(wire::command c, const std::vector<std::uint8_t>& args,
                                                     std::string& why)
    {
        std::uint64_t seq = 0;
        {
            std::lock_guard lk(mutex_);
            if (lost_) {
                why = "the plugin's process has ended";
                return std::nullopt;
            }
            seq = next_seq_++;
            replies_[seq];
        }
        wire::writer w;
        w.u64(seq);
        w.u8(static_cast<std::uint8_t>(c));
        w.bytes(args.data(), args.size());
        bool sent = false;
        {
            std::lock_guard wl(write_mutex_);
            sent = wire::write_frame(fd_, wire::frame::command, w);
        }
        std::unique_lock lk(mutex_);
        const bool answered = sent && cv_.wait_for(lk, options_.call_timeout, [&] {
            return lost_ || replies_[seq].has_value();
        });
        auto it = replies_.find(seq);
        std::optional<std::vector<std::uint8_t>> reply = std::move(it->second);
        replies_.erase(it);
        if (reply)
            return reply;
        if (!sent || lost_) {
            why = kill_reason_.empty() ? "the plugin's process ended"
                                       : "the plugin's process was ended: " + kill_reason_;
            return std::nullopt;
        }
        (void)answered;
        why = fmt::format("no answer within {} ms; the plugin's process is killed", options_.call_timeout.count());
        lk.unlock();
        kill_child(fmt::format("no answer within {} ms", options_.call_timeout.count()));
        return std::nullopt;
    }

    void read_loop()
    {
        std::vector<std::uint8_t> payload;
        wire::decoded_event decoded;
        for (;;) {
            wire::frame type{};
            std::string why;
            const auto st = wire::read_frame(fd_, type, payload, why);
            if (st == wire::read_status::eof)
                break;
            if (st == wire::read_status::error) {
                kill_child("protocol violation: " + why);
                break;
            }
            if (type == wire::frame::emit || type == wire::frame::ask) {
                wire::reader r(payload.data(), payload.size());
                const std::uint64_t id = type == wire::frame::ask ? r.u64() : 0;
                if (std::string bad = wire::decode_event(r, decoded); !bad.empty()) {
                    kill_child("protocol violation: " + bad);
                    break;
                }
                const tt_emit_fn emit = emit_.load();
                const std::uint64_t answer = emit != nullptr ? emit(emit_ctx_.load(), &decoded.ev)
                                                             : (TT_STATUS_ERROR_BIT | TT_STATUS_STOPPED);
                if (type == wire::frame::ask) {
                    wire::writer w;
                    w.u64(id);
                    w.u64(answer);
                    std::lock_guard wl(write_mutex_);
                    (void)wire::write_frame(fd_, wire::frame::answer, w);
                }
                continue;
            }
            if (type == wire::frame::reply) {
                wire::reader r(payload.data(), payload.size());
                const std::uint64_t seq = r.u64();
                std::lock_guard lk(mutex_);
                auto it = replies_.find(seq);
                if (!r.ok() || it == replies_.end() || it->second) {
                    // A late answer after a timeout finds its waiter gone; the
                    // child is being killed then anyway.
                    if (kill_reason_.empty())
                        kill_reason_ = "protocol violation: an answer nobody asked for";
                    ::kill(pid_, SIGKILL);
                    break;
                }
                it->second.emplace(payload.begin() + 8, payload.end());
                cv_.notify_all();
                continue;
            }
            kill_child(fmt::format("protocol violation: unexpected frame type {}", static_cast<int>(type)));
            break;
        }
        {
            std::lock_guard lk(mutex_);
            lost_ = true;
            cv_.notify_all();
        }
        child_exit how = reap_child(pid_, std::chrono::milliseconds(2000));
        {
            std::lock_guard lk(mutex_);
            reaped_ = true;
            if (!kill_reason_.empty())
                how.reason = kill_reason_;
            cv_.notify_all();
        }
        if (!closing_.load() && on_exit_) {
            try {
                on_exit_(serial_, how);
            } catch (...) {
            }
        }
    }

    const int pid_;
    const int fd_;
    const std::uint64_t serial_;
    const isolation_options options_;
    const std::function<void(std::uint64_t, const child_exit&)> on_exit_;
    std::atomic<tt_emit_fn> emit_{nullptr};
    std::atomic<void*> emit_ctx_{nullptr};
    std::atomic<bool> closing_{false};
    std::mutex write_mutex_;  // one frame at a time on the socket
    std::mutex mutex_;        // the rest
    std::condition_variable cv_;
    std::map<std::uint64_t, std::optional<std::vector<std::uint8_t>>> replies_;
    std::uint64_t next_seq_ = 1;
    bool lost_ = false;    // the stream ended: no answer will come
    bool reaped_ = false;  // the child is gone for good
    std::string kill_reason_;
    std::set<std::string, std::less<>> warned_;
    std::thread reader_;
};

child_plugin* child_of(const plugin_library& lib) noexcept
{
    return dynamic_cast<child_plugin*>(lib.backend());
}

fs::path default_child_program()
{
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec)
        return "tt-plugin-child";
    return self.parent_path() / "tt-plugin-child";
}

}  // namespace

bool is_isolated(const plugin_library& lib) noexcept
{
    return child_of(lib) != nullptr;
}

std::uint64_t isolated_serial(const plugin_library& lib) noexcept
{
    auto* c = child_of(lib);
    return c != nullptr ? c->serial() : 0;
}

int isolated_pid(const plugin_library& lib) noexcept
{
    auto* c = child_of(lib);
    return c != nullptr ? c->pid() : 0;
}

call_outcome call_isolated(const plugin_library& lib, const forwarded_call& call)
{
    auto* c = child_of(lib);
    if (c == nullptr)
        return call_outcome{false, std::nullopt, "not an isolated plugin"};
    return c->call(call);
}

bool first_unforwardable(const plugin_library& lib, std::string_view symbol)
{
    auto* c = child_of(lib);
    return c != nullptr && c->first_unforwardable(symbol);
}

std::variant<std::shared_ptr<plugin_library>, load_error>
open_isolated(const fs::path& file, const isolation_options& options,
              std::function<void(std::uint64_t, const child_exit&)> on_exit)
{
    auto fail = [&](load_errc code, std::string reason, std::string plugin = {}) {
        return load_error{code, file, std::move(plugin), std::move(reason)};
    };
    const fs::path program = options.child_program.empty() ? default_child_program() : options.child_program;
    if (::access(program.c_str(), X_OK) != 0)
        return fail(load_errc::load_failed, fmt::format("isolation: cannot run the child program {}: {}",
                                                        program.string(), std::strerror(errno)));
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return fail(load_errc::load_failed, std::string("isolation: socketpair failed: ") + std::strerror(errno));
    // The child's end becomes its fd 3; dup2 onto another number clears
    // close-on-exec for the child only, so no other child inherits it.
    const int child_end = ::fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    ::close(sv[1]);
    if (child_end < 0) {
        ::close(sv[0]);
        return fail(load_errc::load_failed, std::string("isolation: fcntl failed: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, child_end, 3);
    std::string prog = program.string(), fd_arg = "3", path = file.string();
    std::string opt_fd = "--fd";
    char* argv[] = {prog.data(), opt_fd.data(), fd_arg.data(), path.data(), nullptr};
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, prog.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(child_end);
    if (rc != 0) {
        ::close(sv[0]);
        return fail(load_errc::load_failed,
                    fmt::format("isolation: cannot start {}: {}", program.string(), std::strerror(rc)));
    }
    const int fd = sv[0];

    // The description, within the call timeout.
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(options.call_timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((options.call_timeout.count() % 1000) * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    wire::frame type{};
    std::vector<std::uint8_t> payload;
    std::string why;
    const auto st = wire::read_frame(fd, type, payload, why);
    auto end_child = [&](std::string reason, bool kill_it) {
        if (kill_it)
            ::kill(pid, SIGKILL);
        ::close(fd);
        child_exit how = reap_child(pid, std::chrono::milliseconds(2000));
        if (how.reason.empty())
            how.reason = std::move(reason);
        return how;
    };
    if (st != wire::read_status::ok || type != wire::frame::hello) {
        const bool ended = st == wire::read_status::eof;
        auto how = end_child(ended ? "" : (why.empty() ? "no description" : why), !ended);
        return fail(load_errc::load_failed,
                    fmt::format("the plugin's child process ended before describing the plugin: {}", how.describe()));
    }
    wire::reader r(payload.data(), payload.size());
    if (r.u8() != 1) {
        const auto code = static_cast<load_errc>(r.u8());
        std::string plugin = r.str();
        std::string reason = r.str();
        end_child({}, false);
        if (!r.ok() || static_cast<int>(code) > static_cast<int>(load_errc::crashed))
            return fail(load_errc::load_failed, "the plugin's child process sent a bad description");
        return fail(code, std::move(reason), std::move(plugin));
    }
    plugin_description desc;
    desc.name = r.str();
    desc.version = r.str();
    desc.description = r.str();
    desc.abi_version = r.u32();
    const bool interest = r.u8() == 1;
    const bool state_hooks = r.u8() == 1;
    const std::uint32_t n = r.u32();
    std::vector<std::string> exports;
    for (std::uint32_t i = 0; i < n && r.ok() && i < 1000000; ++i)
        exports.push_back(r.str());
    if (!r.done() || desc.name.empty()) {
        end_child("bad description", true);
        return fail(load_errc::load_failed, "the plugin's child process sent a bad description");
    }
    tv = timeval{};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    auto backend = std::make_shared<child_plugin>(pid, fd, options, std::move(on_exit));
    backend->start_reader();
    return plugin_library::remote(file, std::move(desc), std::move(exports), interest, state_hooks,
                                  std::move(backend));
}

}  // namespace tt::host
