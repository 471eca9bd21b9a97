// The inotify watcher on real files: one report per settled change, every
// way of replacing a file, folder watches with a name filter, wake-up.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/file_watcher.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using tt::host::file_change;
using tt::host::file_watcher;

namespace {

fs::path fresh_dir(const std::string& name)
{
    const char* base = std::getenv("TT_TEST_TMPDIR");
    fs::path dir = fs::path(base ? base : "/tmp") / ("watch-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

void write(const fs::path& p, const std::string& text, std::ios::openmode mode = std::ios::trunc)
{
    std::ofstream(p, std::ios::binary | mode) << text;
}

// Everything reported within `limit` (polls until a quiet period after the first report).
std::vector<file_change> collect(file_watcher& w, std::chrono::milliseconds limit = 3s)
{
    std::vector<file_change> all;
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        auto got = w.poll(200ms);
        all.insert(all.end(), got.begin(), got.end());
        if (!all.empty() && got.empty())
            break;
    }
    return all;
}

tt::host::watcher_options fast()
{
    tt::host::watcher_options o;
    o.settle = 100ms;
    return o;
}

}  // namespace

TEST_CASE("a file written in several steps is reported once, after it settled")
{
    const auto dir = fresh_dir("steps");
    const auto f = dir / "libp.so";
    write(f, "v0");
    file_watcher w(fast());
    REQUIRE(w.watch(f).empty());
    for (int i = 0; i < 5; ++i) {
        write(f, "chunk" + std::to_string(i), i == 0 ? std::ios::trunc : std::ios::app);
        std::this_thread::sleep_for(30ms);  // shorter than settle: still one change
    }
    auto got = collect(w);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == f);
    CHECK(got[0].what == file_change::kind::changed);
    CHECK(collect(w, 400ms).empty());  // nothing more
}

TEST_CASE("replacement by rename, deletion, and delete + create")
{
    const auto dir = fresh_dir("replace");
    const auto f = dir / "libp.so";
    write(f, "v1");
    file_watcher w(fast());
    REQUIRE(w.watch(f).empty());

    write(dir / ".tmp", "v2 longer");
    fs::rename(dir / ".tmp", f);
    auto got = collect(w);
    REQUIRE(got.size() == 1);
    CHECK(got[0].what == file_change::kind::changed);

    fs::remove(f);
    got = collect(w);
    REQUIRE(got.size() == 1);
    CHECK(got[0].what == file_change::kind::removed);

    write(f, "v3");
    got = collect(w);
    REQUIRE(got.size() == 1);
    CHECK(got[0].what == file_change::kind::changed);

    fs::remove(f);
    write(f, "v4 again");  // within the settle window: a change, not a removal
    got = collect(w);
    REQUIRE(got.size() == 1);
    CHECK(got[0].what == file_change::kind::changed);
}

TEST_CASE("a folder watch reports accepted names only; a file watch only its file")
{
    const auto dir = fresh_dir("folder");
    file_watcher w(fast());
    REQUIRE(w.watch(dir).empty());
    write(dir / "libnew.so", "elf");
    write(dir / "notes.txt", "ignored");
    auto got = collect(w);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == dir / "libnew.so");

    const auto other = fresh_dir("single");
    file_watcher single(fast());
    REQUIRE(single.watch(other / "libwatched.so").empty());
    write(other / "libother.so", "x");
    write(other / "libwatched.so", "y");
    got = collect(single);
    REQUIRE(got.size() == 1);
    CHECK(got[0].path == other / "libwatched.so");
}

TEST_CASE("wake() ends a poll early; a missing folder is an error naming it")
{
    const auto dir = fresh_dir("wake");
    file_watcher w(fast());
    REQUIRE(w.watch(dir).empty());
    std::thread t([&] {
        std::this_thread::sleep_for(50ms);
        w.wake();
    });
    const auto t0 = std::chrono::steady_clock::now();
    auto got = w.poll(20s);
    t.join();
    CHECK(got.empty());
    CHECK(std::chrono::steady_clock::now() - t0 < 15s);  // returned on the wake-up, not the 20 s deadline

    const auto err = w.watch(dir / "nope" / "libx.so");
    CHECK(err.find((dir / "nope").string()) != std::string::npos);
}
