#include <tracetunnel/host/file_watcher.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <system_error>
#include <utility>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tt::host {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

// So that a constructor failing halfway leaks no descriptor.
class unique_fd {
public:
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd()
    {
        if (fd_ >= 0)
            ::close(fd_);
    }
    int get() const noexcept { return fd_; }

private:
    int fd_;
};

int checked(int fd, const char* what)
{
    if (fd < 0)
        throw std::system_error(errno, std::system_category(), what);
    return fd;
}

// Size and mtime alone miss a replacement that happens to match; the inode does not.
struct stamp {
    bool exists = false;
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::uint64_t inode = 0;
    bool operator==(const stamp&) const = default;
};

stamp stat_file(const fs::path& p)
{
    struct stat st {};
    // A directory or a fifo is nothing anyone could load, so it counts as absent.
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
        return {};
    return {true, static_cast<std::uint64_t>(st.st_size),
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
            static_cast<std::uint64_t>(st.st_ino)};
}

bool ends_in_so(const fs::path& p)
{
    const std::string name = p.filename().string();
    return name.size() > 3 && name.ends_with(".so");
}

// Every way a file in the directory can be created, written or replaced. The
// *_SELF events matter because the directory itself going away loses its files.
constexpr std::uint32_t dir_events = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                     IN_ATTRIB | IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

}  // namespace

struct file_watcher::impl {
    struct directory {
        fs::path path;                          // as first given; reports use it
        bool whole = false;                     // every accepted file counts, not only `named`
        std::map<std::string, fs::path> named;  // file name -> path as given to watch()
    };
    struct settling {
        clock_type::time_point due;
        stamp seen;  // at the last event; must still hold at `due`
    };

    watcher_options opts;
    unique_fd inotify;
    unique_fd wakeup;
    std::map<int, directory> dirs;      // by watch descriptor: the kernel gives one per directory
    std::map<fs::path, stamp> known;    // last reported (or first seen) state of files that exist
    std::map<fs::path, settling> pending;

    explicit impl(watcher_options o)
        : opts(std::move(o)),
          inotify(checked(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify is unavailable (inotify_init1)")),
          wakeup(checked(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "cannot create the file watcher's eventfd"))
    {
        if (!opts.accept)
            opts.accept = ends_in_so;
    }

    stamp last(const fs::path& p) const
    {
        auto it = known.find(p);
        return it == known.end() ? stamp{} : it->second;
    }

    // The path to report for `name` in `d`; empty when we do not watch it.
    fs::path resolve(const directory& d, const std::string& name) const
    {
        if (auto it = d.named.find(name); it != d.named.end())
            return it->second;
        if (d.whole && opts.accept(d.path / name))
            return d.path / name;
        return {};
    }

    void touch(const fs::path& p, clock_type::time_point now) { pending[p] = {now + opts.settle, stat_file(p)}; }

    // Events were lost, or a directory moved away with its files: the disk is
    // the only truth left, so compare everything we know of with it.
    void rescan(clock_type::time_point now)
    {
        std::set<fs::path> candidates;
        for (const auto& entry : known)
            candidates.insert(entry.first);
        for (const auto& entry : dirs) {
            const directory& d = entry.second;
            for (const auto& named : d.named)
                candidates.insert(named.second);
            if (!d.whole)
                continue;
            std::error_code ec;
            for (fs::directory_iterator it(d.path, ec), end; !ec && it != end; it.increment(ec))
                if (auto p = resolve(d, it->path().filename().string()); !p.empty())
                    candidates.insert(std::move(p));
        }
        for (const auto& p : candidates)
            if (stat_file(p) != last(p))
                touch(p, now);
    }

    void read_events()
    {
        char buf[8192];  // room for many events; one needs at most sizeof(inotify_event) + NAME_MAX + 1
        std::set<fs::path> touched;  // a linker's burst of writes costs one stat per file, not one per event
        bool lost = false;
        for (;;) {
            const ssize_t len = ::read(inotify.get(), buf, sizeof buf);
            if (len < 0 && errno == EINTR)
                continue;
            if (len <= 0)
                break;
            const auto end = static_cast<std::size_t>(len);
            for (std::size_t off = 0; off + sizeof(inotify_event) <= end;) {
                inotify_event ev;
                std::memcpy(&ev, buf + off, sizeof ev);  // buf is not aligned for inotify_event
                const char* name = buf + off + sizeof ev;
                off += sizeof ev + ev.len;
                if (off > end)
                    break;
                if ((ev.mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF)) != 0) {
                    lost = true;
                    continue;
                }
                if ((ev.mask & IN_IGNORED) != 0) {
                    dirs.erase(ev.wd);  // the kernel may hand this descriptor to another directory later
                    continue;
                }
                if (ev.len == 0 || (ev.mask & IN_ISDIR) != 0)
                    continue;
                auto d = dirs.find(ev.wd);
                if (d == dirs.end())
                    continue;
                if (auto p = resolve(d->second, std::string(name, ::strnlen(name, ev.len))); !p.empty())
                    touched.insert(std::move(p));
            }
        }
        const auto now = clock_type::now();
        for (const auto& p : touched)
            touch(p, now);
        if (lost)
            rescan(now);
    }

    void collect_settled(std::vector<file_change>& out)
    {
        const auto now = clock_type::now();
        for (auto it = pending.begin(); it != pending.end();) {
            auto& [path, s] = *it;
            if (s.due > now) {
                ++it;
                continue;
            }
            const stamp current = stat_file(path);
            if (current != s.seen) {  // written to without an event we have read yet
                s = {now + opts.settle, current};
                ++it;
                continue;
            }
            if (current != last(path))
                out.push_back({path, current.exists ? file_change::kind::changed : file_change::kind::removed});
            if (current.exists)
                known[path] = current;
            else
                known.erase(path);
            it = pending.erase(it);
        }
    }
};

file_watcher::file_watcher(watcher_options opts) : impl_(std::make_unique<impl>(std::move(opts))) {}

file_watcher::~file_watcher() = default;

std::string file_watcher::watch(const fs::path& target)
{
    impl& m = *impl_;
    std::error_code ec;
    const bool is_dir = fs::is_directory(target, ec);
    const std::string name = is_dir ? std::string() : target.filename().string();
    fs::path dir = is_dir ? target : target.parent_path();
    if (dir.empty())
        dir = ".";
    if (!is_dir && name.empty())  // "plugins/" names a directory, and it is not there
        return "cannot watch " + target.string() + ": no such directory";
    if (!is_dir && !fs::is_directory(dir, ec))
        return "cannot watch " + target.string() + ": directory " + dir.string() +
               (fs::exists(dir, ec) ? " is not a directory" : " does not exist");

    const int wd = ::inotify_add_watch(m.inotify.get(), dir.c_str(), dir_events);
    if (wd < 0) {
        const int err = errno;
        std::string why = "cannot watch " + target.string() + ": " + std::system_category().message(err);
        if (err == ENOSPC)
            why += " (the inotify watch limit fs.inotify.max_user_watches is reached)";
        return why;
    }
    auto [entry, fresh] = m.dirs.try_emplace(wd);
    impl::directory& d = entry->second;
    if (fresh)
        d.path = dir;

    // Remember what is there now, so that only later changes are reported.
    if (is_dir) {
        if (d.whole)
            return {};
        d.whole = true;
        for (fs::directory_iterator it(d.path, ec), end; !ec && it != end; it.increment(ec)) {
            const fs::path p = m.resolve(d, it->path().filename().string());
            if (p.empty() || m.known.contains(p) || m.pending.contains(p))
                continue;
            if (const stamp s = stat_file(p); s.exists)
                m.known[p] = s;
        }
        return {};
    }
    if (!d.named.try_emplace(name, target).second)
        return {};
    // A directory watch may already track this file under its directory's
    // spelling; from now on it goes by the name given here.
    const fs::path seen_as = d.path / name;
    auto rename_key = [&](auto& map) {
        if (auto node = map.extract(seen_as)) {
            node.key() = target;
            map.insert(std::move(node));
        }
    };
    rename_key(m.known);
    rename_key(m.pending);
    if (!m.known.contains(target) && !m.pending.contains(target))
        if (const stamp s = stat_file(target); s.exists)
            m.known[target] = s;
    return {};
}

std::vector<file_change> file_watcher::poll(std::chrono::milliseconds timeout)
{
    impl& m = *impl_;
    const auto deadline = clock_type::now() + timeout;
    std::vector<file_change> out;
    for (;;) {
        // Sleep until an event, a wake-up, the next file due to settle, or the deadline.
        auto until = deadline;
        for (const auto& entry : m.pending)
            until = std::min(until, entry.second.due);
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(until - clock_type::now()).count();
        pollfd fds[] = {{m.inotify.get(), POLLIN, 0}, {m.wakeup.get(), POLLIN, 0}};
        const int n = ::poll(fds, 2, static_cast<int>(std::clamp<std::int64_t>(wait, 0, INT_MAX)));
        if (n < 0 && errno != EINTR)
            return out;  // only possible with broken descriptors; the caller's loop retries
        bool woken = false;
        if (n > 0 && (fds[1].revents & POLLIN) != 0) {
            std::uint64_t count = 0;
            [[maybe_unused]] const auto r = ::read(m.wakeup.get(), &count, sizeof count);
            woken = true;
        }
        if (n > 0 && (fds[0].revents & POLLIN) != 0)
            m.read_events();
        m.collect_settled(out);
        if (!out.empty() || woken || clock_type::now() >= deadline)
            return out;
    }
}

void file_watcher::wake() noexcept
{
    const std::uint64_t one = 1;
    // Only a write(2): safe from another thread and from a signal handler.
    [[maybe_unused]] const auto r = ::write(impl_->wakeup.get(), &one, sizeof one);
}

}  // namespace tt::host
