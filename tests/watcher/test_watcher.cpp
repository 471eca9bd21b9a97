// The inotify file watcher (host/src/file_watcher.cpp) on real files in a
// fresh folder under TT_TEST_TMPDIR: one report per settled change, every way
// of replacing a file, directory watches with their name filter, a lost
// event queue, wake-ups and errors. The only timing assumptions are the
// generous waits in reports_after(), and pauses shorter than the settle time
// where a case needs them, which such a case checks (and repeats when not met).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/file_watcher.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using tt::host::file_change;
using tt::host::file_watcher;
using steady = std::chrono::steady_clock;
using kind = file_change::kind;

namespace {

constexpr auto settle = 100ms;

// A fresh folder for one test case, gone again when the case ends.
struct temp_dir {
    fs::path path;
    explicit temp_dir(const std::string& name)
    {
        const char* base = std::getenv("TT_TEST_TMPDIR");
        path = fs::path(base != nullptr ? base : "/tmp") / ("watcher-" + name + "-" + std::to_string(::getpid()));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write(const fs::path& p, const std::string& text, std::ios::openmode mode = std::ios::trunc)
{
    std::ofstream(p, std::ios::binary | mode) << text;
}

tt::host::watcher_options options(std::chrono::milliseconds s = settle)
{
    tt::host::watcher_options o;
    o.settle = s;
    return o;
}

void append(std::vector<file_change>& all, const std::vector<file_change>& got)
{
    all.insert(all.end(), got.begin(), got.end());
}

// Polls until `expected` reports arrived (giving up after 5 s), then two
// settle periods more so that an unexpected extra report would show up too.
std::vector<file_change> reports_after(file_watcher& w, std::size_t expected, std::chrono::milliseconds s = settle)
{
    std::vector<file_change> all;
    const auto give_up = steady::now() + 5s;
    while (all.size() < expected && steady::now() < give_up)
        append(all, w.poll(100ms));
    const auto extra_until = steady::now() + 2 * s;
    while (steady::now() < extra_until)
        append(all, w.poll(50ms));
    return all;
}

}  // namespace

TEST_CASE("a file rewritten in place in several steps is reported once, after it settled")
{
    const temp_dir tmp("steps");
    const auto& dir = tmp.path;
    const auto f = dir / "libp.so";
    // A longer settle than elsewhere, so that the pauses between chunks stay
    // well inside it even on a loaded machine.
    const auto slow = 150ms;
    // The premise is that no pause between two chunks reaches the settle time.
    // A loaded machine (or a sanitizer) can stall this thread past it, and then
    // a report after a chunk would be right: such a run proves nothing and is
    // made again, a few times at most.
    for (int attempt = 1;; ++attempt) {
        REQUIRE_MESSAGE(attempt <= 5, "every attempt paused longer than the settle time between chunks");
        write(f, "v0");
        file_watcher w(options(slow));
        REQUIRE(w.watch(f).empty());

        std::vector<file_change> all;
        auto longest = steady::duration::zero();
        auto chunk_started = steady::now();
        for (int i = 0; i < 5; ++i) {
            const auto started = steady::now();
            write(f, "chunk " + std::to_string(i) + "\n", i == 0 ? std::ios::trunc : std::ios::app);
            append(all, w.poll(20ms));  // reads the events now, so each chunk restarts the timer
            // From the start of the previous chunk to the end of this one's poll: the
            // longest the watcher can have gone without an event from this file.
            if (i > 0)
                longest = std::max(longest, steady::now() - chunk_started);
            chunk_started = started;
        }
        if (longest >= slow) {
            MESSAGE("attempt ", attempt, ": a pause of ",
                    std::chrono::duration_cast<std::chrono::milliseconds>(longest).count(),
                    " ms between chunks, not below the settle time; again");
            continue;
        }
        CHECK(all.empty());
        append(all, reports_after(w, 1, slow));
        REQUIRE(all.size() == 1);
        CHECK(all[0].path == f);
        CHECK(all[0].what == kind::changed);
        break;
    }
}

TEST_CASE("an event that changes neither size, mtime nor inode is not reported")
{
    const temp_dir tmp("chmod");
    const auto& dir = tmp.path;
    const auto f = dir / "libp.so";
    write(f, "v0");
    file_watcher w(options());
    REQUIRE(w.watch(f).empty());
    fs::permissions(f, fs::perms::owner_exec, fs::perm_options::add);  // IN_ATTRIB only
    CHECK(reports_after(w, 0).empty());
}

TEST_CASE("replacement by rename is a change")
{
    const temp_dir tmp("rename");
    const auto& dir = tmp.path;
    const auto f = dir / "libp.so";
    write(f, "v1");
    file_watcher w(options());
    REQUIRE(w.watch(f).empty());

    write(dir / "libp.so.tmp", "v2, longer");
    fs::rename(dir / "libp.so.tmp", f);
    const auto got = reports_after(w, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == f);
    CHECK(got[0].what == kind::changed);
}

TEST_CASE("deletion is a removal; deletion and re-creation within the settle time is a change")
{
    const temp_dir tmp("delete");
    const auto& dir = tmp.path;
    const auto f = dir / "libp.so";
    write(f, "v1");
    file_watcher w(options());
    REQUIRE(w.watch(f).empty());

    fs::remove(f);
    auto got = reports_after(w, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == f);
    CHECK(got[0].what == kind::removed);

    write(f, "v2");  // created again after it was reported gone
    got = reports_after(w, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].what == kind::changed);

    // As in the steps case, the premise (back before the removal settled) is
    // checked: a run stalled past the settle time proves nothing and is made again.
    for (int attempt = 1;; ++attempt) {
        REQUIRE_MESSAGE(attempt <= 5, "every attempt paused longer than the settle time");
        const auto removed_at = steady::now();
        fs::remove(f);
        got = w.poll(20ms);  // the watcher sees the file gone...
        write(f, "v3, again");  // ...and back before it settled
        const auto away = steady::now() - removed_at;
        append(got, reports_after(w, 1));
        if (away >= settle) {
            MESSAGE("attempt ", attempt, ": the file was away ",
                    std::chrono::duration_cast<std::chrono::milliseconds>(away).count(),
                    " ms, not below the settle time; again");
            continue;
        }
        REQUIRE(got.size() == 1);
        CHECK(got[0].path == f);
        CHECK(got[0].what == kind::changed);
        break;
    }
}

TEST_CASE("a directory watch reports new accepted files and ignores the others")
{
    const temp_dir tmp("dir");
    const auto& dir = tmp.path;
    write(dir / "libold.so", "there before");
    file_watcher w(options());
    REQUIRE(w.watch(dir).empty());
    CHECK(w.watch(dir).empty());  // twice is harmless

    write(dir / "libnew.so", "elf");
    write(dir / "notes.txt", "not a plugin");
    auto got = reports_after(w, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == dir / "libnew.so");
    CHECK(got[0].what == kind::changed);

    write(dir / "notes.txt", "still not a plugin, longer");
    fs::remove(dir / "notes.txt");
    CHECK(reports_after(w, 0).empty());
}

TEST_CASE("a file watched by name is the only one reported from its directory")
{
    const temp_dir tmp("named");
    const auto& dir = tmp.path;
    // Reported exactly as given, not normalised.
    const auto watched = dir / "." / "libwatched.so";
    write(dir / "libother.so", "x");
    file_watcher w(options());
    REQUIRE(w.watch(watched).empty());  // need not exist yet

    write(dir / "libother.so", "x, rewritten");
    write(dir / "libthird.so", "new");
    write(dir / "libwatched.so", "y");
    fs::remove(dir / "libother.so");
    const auto got = reports_after(w, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == watched);
    CHECK(got[0].what == kind::changed);
}

TEST_CASE("after the event queue overflowed, a changed file is still reported")
{
    long queue_limit = 0;
    std::ifstream("/proc/sys/fs/inotify/max_queued_events") >> queue_limit;
    if (queue_limit <= 0 || queue_limit > (1 << 17)) {
        MESSAGE("skipped: fs.inotify.max_queued_events is ", queue_limit);
        return;
    }
    const temp_dir tmp("overflow");
    const auto& dir = tmp.path;
    const auto f = dir / "libp.so";
    write(f, "v1");
    write(dir / "a", "");
    write(dir / "b", "");
    file_watcher w(options());
    REQUIRE(w.watch(f).empty());

    // Alternate between two names: the kernel merges only identical neighbours.
    const std::string a = (dir / "a").string();
    const std::string b = (dir / "b").string();
    long failed = 0;
    for (long i = 0; i <= queue_limit; ++i) {
        failed += ::chmod(a.c_str(), (i & 1) != 0 ? 0600 : 0644) != 0;
        failed += ::chmod(b.c_str(), (i & 1) != 0 ? 0600 : 0644) != 0;
    }
    REQUIRE(failed == 0);
    write(f, "v2, whose events are lost");
    const auto got = reports_after(w, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == f);
    CHECK(got[0].what == kind::changed);
}

TEST_CASE("wake() makes a blocked or the next poll() return early")
{
    const temp_dir tmp("wake");
    const auto& dir = tmp.path;
    file_watcher w(options());
    REQUIRE(w.watch(dir).empty());

    std::thread waker([&w] {
        std::this_thread::sleep_for(100ms);
        w.wake();
    });
    auto t0 = steady::now();
    CHECK(w.poll(60s).empty());
    waker.join();
    CHECK(steady::now() - t0 < 30s);

    w.wake();
    t0 = steady::now();
    CHECK(w.poll(60s).empty());
    CHECK(steady::now() - t0 < 30s);
}

TEST_CASE("watching something in a missing directory is an error naming it")
{
    const temp_dir tmp("missing");
    const auto& dir = tmp.path;
    file_watcher w(options());

    const auto err = w.watch(dir / "nope" / "libx.so");
    CHECK(!err.empty());
    CHECK(err.find((dir / "nope").string()) != std::string::npos);

    const auto missing_dir = (dir / "gone").string() + "/";
    const auto err2 = w.watch(missing_dir);
    CHECK(!err2.empty());
    CHECK(err2.find(missing_dir) != std::string::npos);
}

TEST_CASE("a custom accept filter replaces the default \"*.so\"")
{
    const temp_dir tmp("accept");
    const auto& dir = tmp.path;
    auto o = options();
    o.accept = [](const fs::path& p) { return p.extension() == ".plugin"; };
    file_watcher w(o);
    REQUIRE(w.watch(dir).empty());
    write(dir / "libx.so", "not wanted here");
    write(dir / "x.plugin", "wanted");
    const auto got = reports_after(w, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == dir / "x.plugin");
}
