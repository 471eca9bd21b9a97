// The child side of isolation.hpp (tt-plugin-child): opens one plugin with
// the checked loader, describes it, then runs the parent's commands on the
// main thread while a reader thread takes the parent's answers to emits.
#include <tracetunnel/host/isolation.hpp>

#include "isolation_protocol.hpp"

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

namespace tt::host {

namespace {

struct child_host {
    int fd = -1;
    std::shared_ptr<plugin_library> lib;
    std::mutex write_mutex;
    std::mutex mutex;
    std::condition_variable cv;
    std::map<std::uint64_t, std::optional<std::uint64_t>> answers;  // asks waiting, by id
    std::uint64_t next_ask = 1;
    std::deque<std::vector<std::uint8_t>> commands;
    bool lost = false;  // the parent is gone

    bool send(wire::frame type, const wire::writer& w)
    {
        std::lock_guard lk(write_mutex);
        return wire::write_frame(fd, type, w);
    }
};

// The spans entered on this thread, innermost last: a contextual parent is
// resolved here, since every thread of the child reaches the host's
// pipeline on one thread of the parent.
thread_local std::vector<std::uint64_t> entered;

std::uint64_t child_emit(void* raw, const tt_event* ev) noexcept
{
    auto* host = static_cast<child_host*>(raw);
    if (host == nullptr || ev == nullptr)
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    try {
        tt_event copy{};
        const bool full = ev->struct_size >= sizeof(tt_event);
        if (full) {
            std::memcpy(&copy, ev, sizeof copy);
            if (copy.kind == TT_EVENT_SPAN_ENTERED) {
                entered.push_back(copy.span_id);
            } else if (copy.kind == TT_EVENT_SPAN_EXITED) {
                auto it = std::find(entered.rbegin(), entered.rend(), copy.span_id);
                if (it != entered.rend())
                    entered.erase(std::next(it).base());
            } else if ((copy.kind == TT_EVENT_NEW_SPAN || copy.kind == TT_EVENT_NEW_EVENT) &&
                       copy.parent == TT_PARENT_CONTEXTUAL) {
                copy.parent = entered.empty() ? TT_PARENT_ROOT : TT_PARENT_EXPLICIT;
                copy.related_span_id = entered.empty() ? 0 : entered.back();
            }
        } else {
            copy.struct_size = ev->struct_size;
        }
        // Only registrations and new spans wait for the parent's answer.
        const bool ask = !full || copy.kind == TT_EVENT_NEW_CALLSITE || copy.kind == TT_EVENT_NEW_SPAN;
        wire::writer w;
        std::uint64_t id = 0;
        if (ask) {
            std::lock_guard lk(host->mutex);
            if (host->lost)
                return TT_STATUS_ERROR_BIT | TT_STATUS_STOPPED;
            id = host->next_ask++;
            host->answers[id];
            w.u64(id);
        }
        std::uint32_t refusal = 0;
        const bool encoded = wire::encode_event(copy, w, refusal);
        if (encoded && host->send(ask ? wire::frame::ask : wire::frame::emit, w) && !ask)
            return TT_STATUS_OK;
        std::unique_lock lk(host->mutex);
        if (encoded && ask)
            host->cv.wait(lk, [&] { return host->lost || host->answers[id].has_value(); });
        std::optional<std::uint64_t> answer;
        if (ask) {
            answer = host->answers[id];
            host->answers.erase(id);
        }
        if (!encoded)
            return TT_STATUS_ERROR_BIT | refusal;
        return answer ? *answer : (TT_STATUS_ERROR_BIT | TT_STATUS_STOPPED);
    } catch (...) {
        return TT_STATUS_ERROR_BIT | TT_STATUS_QUOTA_EXCEEDED;
    }
}

void read_loop(child_host& host)
{
    std::vector<std::uint8_t> payload;
    for (;;) {
        wire::frame type{};
        std::string why;
        if (wire::read_frame(host.fd, type, payload, why) != wire::read_status::ok)
            break;
        if (type == wire::frame::answer) {
            wire::reader r(payload.data(), payload.size());
            const std::uint64_t id = r.u64();
            const std::uint64_t answer = r.u64();
            std::lock_guard lk(host.mutex);
            if (auto it = host.answers.find(id); r.done() && it != host.answers.end())
                it->second = answer;
            host.cv.notify_all();
        } else if (type == wire::frame::command) {
            std::lock_guard lk(host.mutex);
            host.commands.push_back(payload);
            host.cv.notify_all();
        } else {
            break;  // the parent does not speak like this; stop listening to it
        }
    }
    std::lock_guard lk(host.mutex);
    host.lost = true;
    host.cv.notify_all();
}

void reply(child_host& host, std::uint64_t seq, const wire::writer& body)
{
    wire::writer w;
    w.u64(seq);
    w.bytes(body.buf.data(), body.buf.size());
    host.send(wire::frame::reply, w);
}

// Runs one command; false = quit.
bool run_command(child_host& host, const std::vector<std::uint8_t>& payload)
{
    wire::reader r(payload.data(), payload.size());
    const std::uint64_t seq = r.u64();
    const auto cmd = static_cast<wire::command>(r.u8());
    if (!r.ok())
        return false;
    wire::writer out;
    const plugin_library& lib = *host.lib;
    switch (cmd) {
    case wire::command::start: {
        tt_host api{};
        api.struct_size = sizeof api;
        api.abi_version = TT_ABI_VERSION;
        api.emit = &child_emit;
        api.ctx = &host;
        auto started = lib.start(api);
        const auto* err = std::get_if<load_error>(&started);
        out.u8(err == nullptr ? 1 : 0);
        out.str(err == nullptr ? std::string() : err->reason);
        break;
    }
    case wire::command::stop: lib.stop(); break;
    case wire::command::interest_changed: lib.interest_changed(); break;
    case wire::command::save_state: {
        std::vector<std::uint8_t> blob;
        const bool ok = lib.save_state(blob) && blob.size() < wire::max_frame - 64;
        out.u8(ok ? 1 : 0);
        out.u64(ok ? blob.size() : 0);
        if (ok)
            out.bytes(blob.data(), blob.size());
        break;
    }
    case wire::command::restore_state: {
        const std::uint64_t n = r.u64();
        const auto* bytes = r.take(n);
        const bool ok = r.done() && lib.restore_state(std::vector<std::uint8_t>(bytes, bytes + n));
        out.u8(ok ? 1 : 0);
        break;
    }
    case wire::command::call: {
        const auto sig = static_cast<call_signature>(r.u8());
        const std::string symbol = r.str();
        const std::uint64_t number = r.u64();
        const bool has_text = r.u8() == 1;
        const std::string text = r.str();
        // The host application's own exports are found in the child.
        void* fn = r.done() ? lib.find_export<void>(symbol) : nullptr;
        const char* answer = nullptr;
        if (fn != nullptr) {
            switch (sig) {
            case call_signature::void_void: reinterpret_cast<void (*)()>(fn)(); break;
            case call_signature::void_u64: reinterpret_cast<void (*)(std::uint64_t)>(fn)(number); break;
            case call_signature::cstr_cstr:
                answer = reinterpret_cast<const char* (*)(const char*)>(fn)(has_text ? text.c_str() : nullptr);
                break;
            default: fn = nullptr; break;
            }
        }
        out.u8(fn != nullptr ? 0 : 1);
        out.u8(answer != nullptr ? 1 : 0);
        out.str(answer != nullptr ? std::string(answer) : std::string());
        break;
    }
    case wire::command::quit: return false;
    default: return false;
    }
    reply(host, seq, out);
    return true;
}

}  // namespace

int run_plugin_child(int fd, const std::filesystem::path& file)
{
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // not for whatever the plugin starts
    std::signal(SIGPIPE, SIG_IGN);
    auto host = std::make_unique<child_host>();  // never freed: plugin threads may outlive main
    host->fd = fd;

    auto opened = open_plugin(file);
    wire::writer hello;
    if (auto* err = std::get_if<load_error>(&opened)) {
        hello.u8(0);
        hello.u8(static_cast<std::uint8_t>(err->code));
        hello.str(err->plugin);
        hello.str(err->reason);
        host->send(wire::frame::hello, hello);
        return 3;
    }
    host->lib = std::get<std::shared_ptr<plugin_library>>(std::move(opened));
    const auto& d = host->lib->description();
    hello.u8(1);
    hello.str(d.name);
    hello.str(d.version);
    hello.str(d.description);
    hello.u32(d.abi_version);
    hello.u8(host->lib->has_interest_changed() ? 1 : 0);
    hello.u8(host->lib->has_state_hooks() ? 1 : 0);
    hello.u32(static_cast<std::uint32_t>(host->lib->exports().size()));
    for (const auto& e : host->lib->exports())
        hello.str(e);
    if (!host->send(wire::frame::hello, hello))
        return 4;

    std::thread(read_loop, std::ref(*host)).detach();
    for (;;) {
        std::vector<std::uint8_t> next;
        {
            std::unique_lock lk(host->mutex);
            host->cv.wait(lk, [&] { return host->lost || !host->commands.empty(); });
            if (host->commands.empty())
                break;  // the parent is gone
            next = std::move(host->commands.front());
            host->commands.pop_front();
        }
        if (!run_command(*host, next))
            break;
    }
    (void)host.release();
    return 0;
}

}  // namespace tt::host
