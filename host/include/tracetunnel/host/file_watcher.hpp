// Watches plugin files with inotify and reports a change only once the file
// has settled: a linker or a copy writes a shared object in many steps, and
// loading a half-written file would only produce a confusing refusal.
//
// Files are watched through their folder, so every way of replacing one is
// seen: rewritten in place, renamed over, deleted and created again.
//
//   tt::host::file_watcher w({.settle = std::chrono::milliseconds(250)});
//   w.watch("plugins");                       // every *.so in it
//   w.watch("/opt/app/libextra.so");          // or one file
//   for (;;)
//       for (const auto& c : w.poll(std::chrono::seconds(1)))
//           reload_or_unload(c.path, c.what);
//
// Threads: one thread owns the watcher (watch, poll); wake() may be called
// from any thread and only writes to an eventfd.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tt::host {

struct file_change {
    enum class kind { changed, removed };
    // As given to watch() for a file; folder / name for a file in a watched folder.
    std::filesystem::path path;
    kind what = kind::changed;
};

struct watcher_options {
    // A file must be quiet this long (no event, same size, mtime and inode) before it is reported.
    std::chrono::milliseconds settle{250};
    // Which names count in a watched folder; default: names ending in ".so".
    std::function<bool(const std::filesystem::path&)> accept;
};

class file_watcher {
public:
    // Throws std::system_error when inotify is unavailable.
    explicit file_watcher(watcher_options opts = {});
    file_watcher(const file_watcher&) = delete;
    file_watcher& operator=(const file_watcher&) = delete;
    ~file_watcher();

    // A file (watched through its folder) or a folder (not recursive).
    // Empty on success, else why not.
    std::string watch(const std::filesystem::path& file_or_dir);

    // Waits at most `timeout`; returns the changes that settled, each path at
    // most once. A file removed and created again before it settled is
    // reported as changed.
    std::vector<file_change> poll(std::chrono::milliseconds timeout);

    // Makes a blocked poll() return early.
    void wake() noexcept;

private:
    struct file_id {
        bool exists = false;
        std::uintmax_t size = 0;
        std::int64_t mtime_ns = 0;
        std::uint64_t inode = 0;
        bool operator==(const file_id&) const = default;
    };
    struct pending {
        std::chrono::steady_clock::time_point quiet_since;
        file_id seen;
    };
    struct folder {
        std::filesystem::path path;
        bool whole = false;                          // every accepted name counts
        std::map<std::string, std::filesystem::path> files;  // name -> path as given
    };

    static file_id identify(const std::filesystem::path& p);
    bool wanted(const folder& f, const std::string& name) const;
    void touch(const std::filesystem::path& p);
    void rescan();

    watcher_options opts_;
    int inotify_ = -1;
    int wake_ = -1;
    std::map<int, folder> folders_;  // by watch descriptor
    std::map<std::filesystem::path, pending> pending_;
    std::map<std::filesystem::path, file_id> known_;  // last reported or first seen state
};

}  // namespace tt::host
