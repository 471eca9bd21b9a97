// line_writer (layers.hpp): how a text layer's lines reach their file, and
// the process-wide thread that flushes buffered writers.
#include <tracetunnel/host/layers.hpp>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <ostream>
#include <stdio_ext.h>
#include <unistd.h>
#include <vector>

namespace tt::host {

namespace {

// A buffered writer's buffer. Lines are a few hundred bytes: one write(2)
// carries a hundred or more of them, and a line as long as the buffer goes
// out on its own.
constexpr std::size_t buffer_bytes = 32 * 1024;
constexpr std::chrono::milliseconds automatic_flush_every{50};

}  // namespace

line_writer::line_writer(std::FILE* f) noexcept : file_(f)
{
    // A file or pipe buffers; a terminal (a person) sees each line at once.
    // A FILE* without a descriptor (fmemopen) writes through stdio as before.
    if (f != nullptr)
        if (const int fd = fileno(f); fd >= 0 && isatty(fd) != 1)
            flush_every_ = automatic_flush_every;
}

line_writer line_writer::buffered(std::FILE* f, std::chrono::milliseconds flush_every) noexcept
{
    return line_writer(f, std::max(flush_every, std::chrono::milliseconds(1)));
}

line_writer line_writer::each_line(std::FILE* f) noexcept
{
    return line_writer(f, std::chrono::milliseconds(0));
}

line_writer::line_writer(const line_writer& other) noexcept
    : file_(other.file_), os_(other.os_), flush_every_(other.flush_every_)
{
}

line_writer& line_writer::operator=(const line_writer& other) noexcept
{
    if (this != &other) {
        drain();
        file_ = other.file_;
        os_ = other.os_;
        flush_every_ = other.flush_every_;
    }
    return *this;
}

line_writer::line_writer(line_writer&& other) noexcept
    : file_(other.file_), os_(other.os_), flush_every_(other.flush_every_), buffer_(std::move(other.buffer_))
{
    other.buffer_.clear();  // a moved-from string is only "valid": its lines are ours now
}

line_writer& line_writer::operator=(line_writer&& other) noexcept
{
    if (this != &other) {
        drain();
        file_ = other.file_;
        os_ = other.os_;
        flush_every_ = other.flush_every_;
        buffer_ = std::move(other.buffer_);
        other.buffer_.clear();
    }
    return *this;
}

line_writer::~line_writer()
{
    drain();
}

bool line_writer::flush() noexcept
{
    try {
        if (os_) {
            os_->flush();
            const bool ok = static_cast<bool>(*os_);
            os_->clear();
            return ok;
        }
        if (file_ == nullptr)
            return false;
        const bool ok = drain();
        // Without a descriptor the lines sit in stdio's buffer.
        return fileno(file_) < 0 ? std::fflush(file_) == 0 && ok : ok;
    } catch (...) {
        return false;
    }
}

// One whole buffer in as few write(2) calls as the kernel allows. On a
// failure the buffer is dropped (counted by the caller as the layer's error),
// so that a full disk cannot make it grow without bound.
bool line_writer::drain() noexcept
{
    if (buffer_.empty() || file_ == nullptr)
        return true;
    flockfile(file_);
    const bool ok = write_fd(fileno(file_), buffer_);
    funlockfile(file_);
    buffer_.clear();
    return ok;
}

namespace {

// One thread for every buffered layer of the process. Callbacks run with the
// registry locked, so that cancelling waits for a running one; a callback
// takes only its layer's own lock, which no layer holds while cancelling.
// Leaked on purpose: layers with static storage may cancel during exit.
class periodic_flusher {
public:
    static periodic_flusher& get()
    {
        static auto* f = new periodic_flusher();
        return *f;
    }
    std::uint64_t add(std::chrono::milliseconds every, std::function<void()> fn)
    {
        std::lock_guard lock(mutex_);
        const std::uint64_t ticket = ++last_ticket_;
        entries_.push_back(entry{ticket, every, std::chrono::steady_clock::now() + every, std::move(fn)});
        if (!started_) {
            std::thread([this] { run(); }).detach();
            started_ = true;
        }
        wake_.notify_all();
        return ticket;
    }
    void cancel(std::uint64_t ticket) noexcept
    {
        std::lock_guard lock(mutex_);
        std::erase_if(entries_, [&](const entry& e) { return e.ticket == ticket; });
    }

private:
    struct entry {
        std::uint64_t ticket;
        std::chrono::milliseconds every;
        std::chrono::steady_clock::time_point next;
        std::function<void()> fn;
    };
    void run()
    {
        std::unique_lock lock(mutex_);
        for (;;) {
            auto next = std::chrono::steady_clock::now() + std::chrono::seconds(1);
            for (const auto& e : entries_)
                next = std::min(next, e.next);
            wake_.wait_until(lock, next);
            const auto now = std::chrono::steady_clock::now();
            for (auto& e : entries_) {
                if (e.next > now)
                    continue;
                e.next = now + e.every;
                try {
                    e.fn();
                } catch (...) {
                }
            }
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<entry> entries_;
    std::uint64_t last_ticket_ = 0;
    bool started_ = false;
};

}  // namespace

std::uint64_t add_periodic_flush(std::chrono::milliseconds every, std::function<void()> flush)
{
    return periodic_flusher::get().add(every, std::move(flush));
}

void cancel_periodic_flush(std::uint64_t ticket) noexcept
{
    if (ticket != 0)
        periodic_flusher::get().cancel(ticket);
}

bool line_writer::write(std::string_view text) noexcept
{
    try {
        if (os_) {
            os_->write(text.data(), static_cast<std::streamsize>(text.size()));
            os_->flush();
            if (!*os_) {
                os_->clear();
                return false;
            }
            return true;
        }
        if (!file_)
            return false;
        const int fd = fileno(file_);
        if (fd < 0) {
            const std::size_t n = std::fwrite(text.data(), 1, text.size(), file_);
            return n == text.size() && (is_buffered() || std::fflush(file_) == 0);
        }
        bool ok = true;
        if (is_buffered()) {
            if (buffer_.size() + text.size() > buffer_bytes)
                ok = drain();
            if (text.size() < buffer_bytes) {
                if (buffer_.capacity() < buffer_bytes)
                    buffer_.reserve(buffer_bytes);  // once: appends below never allocate
                buffer_.append(text);
                return ok;
            }
            // As long as the buffer: on its own, after what was buffered.
        }
        flockfile(file_);
        ok = write_fd(fd, text) && ok;
        funlockfile(file_);
        return ok;
    } catch (...) {
        return false;
    }
}

// Under the FILE*'s lock: after whatever stdio holds for it, so that lines
// keep their order with other output through the same FILE*, then straight
// to the descriptor (a copy through stdio's buffer would gain nothing).
bool line_writer::write_fd(int fd, std::string_view text) noexcept
{
    bool ok = true;
    if (__freading(file_) != 0 || __fpending(file_) != 0)
        ok = fflush_unlocked(file_) == 0;
    const char* p = text.data();
    std::size_t left = text.size();
    while (ok && left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ok = false;
            break;
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    return ok;
}

bool line_writer::is_terminal() const noexcept
{
    if (os_ || !file_)
        return false;
    const int fd = fileno(file_);
    return fd >= 0 && isatty(fd) == 1;
}

}  // namespace tt::host
