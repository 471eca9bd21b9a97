#include <tracetunnel/host/file_watcher.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

namespace tt::host {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

file_watcher::file_watcher(watcher_options opts) : opts_(std::move(opts))
{
    if (!opts_.accept)
        opts_.accept = [](const fs::path& p) { return p.extension() == ".so"; };
    inotify_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_ < 0)
        throw std::system_error(errno, std::generic_category(), "inotify is unavailable");
    wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_ < 0) {
        const int e = errno;
        ::close(inotify_);
        throw std::system_error(e, std::generic_category(), "cannot create an eventfd for the watcher");
    }
}

file_watcher::~file_watcher()
{
    ::close(inotify_);
    ::close(wake_);
}

file_watcher::file_id file_watcher::identify(const fs::path& p)
{
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0)
        return {};
    return {true, static_cast<std::uintmax_t>(st.st_size),
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
            static_cast<std::uint64_t>(st.st_ino)};
}

std::string file_watcher::watch(const fs::path& target)
{
    std::error_code ec;
    const bool is_dir = fs::is_directory(target, ec);
    const fs::path dir = is_dir ? target : (target.has_parent_path() ? target.parent_path() : fs::path("."));
    if (!fs::is_directory(dir, ec))
        return "cannot watch " + target.string() + ": folder " + dir.string() + " does not exist";
    constexpr std::uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB |
                                   IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF;
    const int wd = ::inotify_add_watch(inotify_, dir.c_str(), mask);
    if (wd < 0)
        return "cannot watch " + dir.string() + ": " + std::strerror(errno);
    folder& f = folders_[wd];  // the kernel gives one descriptor per folder
    f.path = dir;
    if (is_dir) {
        f.whole = true;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
            if (wanted(f, it->path().filename().string()))
                known_.emplace(it->path(), identify(it->path()));
    } else {
        f.files[target.filename().string()] = target;
        known_.emplace(target, identify(target));
    }
    return {};
}

bool file_watcher::wanted(const folder& f, const std::string& name) const
{
    if (name.empty() || name[0] == '.')  // temporary files of editors and build tools
        return f.files.count(name) != 0;
    return f.files.count(name) != 0 || (f.whole && opts_.accept(f.path / name));
}

void file_watcher::touch(const fs::path& p)
{
    pending_[p] = pending{steady::now(), identify(p)};
}

// After an overflow the events are lost: compare every known file with disk.
void file_watcher::rescan()
{
    for (auto& [wd, f] : folders_) {
        for (auto& [name, path] : f.files)
            if (identify(path) != known_[path])
                touch(path);
        if (!f.whole)
            continue;
        std::error_code ec;
        for (fs::directory_iterator it(f.path, ec), end; !ec && it != end; it.increment(ec))
            if (wanted(f, it->path().filename().string()) && identify(it->path()) != known_[it->path()])
                touch(it->path());
    }
    for (auto& [path, id] : known_)
        if (id.exists && !identify(path).exists)
            touch(path);
}

std::vector<file_change> file_watcher::poll(std::chrono::milliseconds timeout)
{
    const auto deadline = steady::now() + timeout;
    std::vector<file_change> out;
    for (;;) {
        // Sleep until an event, a wake-up, the next file due to settle, or the deadline.
        auto until = deadline;
        for (const auto& [p, pend] : pending_)
            until = std::min(until, pend.quiet_since + opts_.settle);
        const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now()).count();
        pollfd fds[2] = {{inotify_, POLLIN, 0}, {wake_, POLLIN, 0}};
        const int n = ::poll(fds, 2, static_cast<int>(std::max<long long>(0, wait)));
        bool woken = false;
        if (n > 0 && (fds[1].revents & POLLIN) != 0) {
            std::uint64_t v = 0;
            [[maybe_unused]] auto r = ::read(wake_, &v, sizeof v);
            woken = true;
        }
        if (n > 0 && (fds[0].revents & POLLIN) != 0) {
            alignas(inotify_event) char buf[16384];
            for (;;) {
                const ssize_t len = ::read(inotify_, buf, sizeof buf);
                if (len <= 0)
                    break;
                for (ssize_t off = 0; off < len;) {
                    const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
                    off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
                    if ((ev->mask & IN_Q_OVERFLOW) != 0) {
                        rescan();
                        continue;
                    }
                    auto f = folders_.find(ev->wd);
                    if (f == folders_.end() || ev->len == 0)
                        continue;
                    const std::string name(ev->name);
                    if (!wanted(f->second, name))
                        continue;
                    auto given = f->second.files.find(name);
                    touch(given != f->second.files.end() ? given->second : f->second.path / name);
                }
            }
        }
        // Report what has been quiet long enough and still looks the same.
        const auto now = steady::now();
        for (auto it = pending_.begin(); it != pending_.end();) {
            if (now - it->second.quiet_since < opts_.settle) {
                ++it;
                continue;
            }
            const file_id id = identify(it->first);
            if (id != it->second.seen) {
                it->second = pending{now, id};  // still being written
                ++it;
                continue;
            }
            const file_id before = known_.count(it->first) ? known_[it->first] : file_id{};
            if (id.exists && id == before)
                ;  // an event without a change (a chmod, a close without writing)
            else if (id.exists)
                out.push_back({it->first, file_change::kind::changed});
            else if (before.exists)
                out.push_back({it->first, file_change::kind::removed});
            known_[it->first] = id;
            it = pending_.erase(it);
        }
        if (!out.empty() || woken || steady::now() >= deadline)
            return out;
    }
}

void file_watcher::wake() noexcept
{
    const std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(wake_, &one, sizeof one);
}

}  // namespace tt::host
