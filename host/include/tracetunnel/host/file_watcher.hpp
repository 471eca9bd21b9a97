// An inotify watcher for plugin hot reload. A change is reported only once
// the file has settled, because linkers and copies write a shared object in
// many steps and loading a half-written one fails in confusing ways.
//
// A file is watched through its directory: that is the only way to keep
// seeing it after it is replaced by rename or deleted and created again.
//
//   tt::host::file_watcher w;                 // settle 250 ms, "*.so" in directories
//   w.watch("plugins");                       // every *.so in it, now and later
//   w.watch("/opt/app/libextra.so");          // or exactly one file
//   while (running)
//       for (const auto& c : w.poll(std::chrono::seconds(1)))
//           c.what == tt::host::file_change::kind::removed ? forget(c.path) : reload(c.path);
//
// Threads: one thread owns the watcher and is the only one to call watch()
// and poll(). wake() may be called from any thread, and from a signal
// handler: it only writes to an eventfd.
//
// Only the constructor throws (running out of memory aside); everything else
// reports problems as values.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tt::host {

struct file_change {
    // changed: created, rewritten or replaced, and now stable.
    enum class kind { changed, removed };
    // As given to watch() for a file; directory / name for a file seen in a watched directory.
    std::filesystem::path path;
    kind what = kind::changed;
};

struct watcher_options {
    // How long a file must be quiet (no event, same size, mtime and inode) before it is reported.
    std::chrono::milliseconds settle{250};
    // For watched directories: which files count, called with directory / name.
    // Empty means names ending in ".so". Files watched by name always count.
    std::function<bool(const std::filesystem::path&)> accept;
};

class file_watcher {
public:
    // Throws std::system_error when inotify (or an eventfd) is unavailable.
    explicit file_watcher(watcher_options opts = {});
    ~file_watcher();
    // Not movable either: other threads may hold a reference to call wake().
    file_watcher(const file_watcher&) = delete;
    file_watcher& operator=(const file_watcher&) = delete;

    // A file (it need not exist yet, its directory must) or a directory (not
    // recursive). Returns why it cannot be watched, empty on success.
    // Watching the same thing twice is harmless.
    std::string watch(const std::filesystem::path& file_or_dir);

    // Waits at most `timeout` and returns the changes that settled meanwhile
    // (often none), each path at most once. It returns as soon as something
    // settled or wake() was called. An event that leaves size, mtime and inode
    // as they were (a chmod, an open for writing without a write) is no change;
    // a file removed and created again before it settled is `changed`.
    std::vector<file_change> poll(std::chrono::milliseconds timeout);

    // Makes a blocked (or the next) poll() return early.
    void wake() noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace tt::host
