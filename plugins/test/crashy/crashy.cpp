// crashy: a plugin that dies on demand, for the isolation tests
// (tests/isolation, docs/ISOLATION.md). Run it isolated: in-process it takes
// the host down with it.
//
// It keeps one "session" span open for its whole life, carried across
// reloads and restarts by its saved state. Every example_tick emits "tick"
// inside the session; when the file named by $CRASHY_TRIGGER exists, the
// tick reads the word in it ("segv", "abort" or "exit"), removes the file
// (so that the restarted child does not die again), opens a "work" span,
// emits "about to crash" in it and dies that way. example_handle answers
// "status" ("session <id> ticks <n>"), opens a "work" span on "work"
// (answering its id), dies at once on "segv", "abort" or "exit" and never
// answers "hang".
#define TT_TARGET "crashy"
#include <tracetunnel/trace.hpp>

#include "example_app.h"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace tt::literals;

namespace {

std::mutex mutex;
tt::span session;
std::vector<tt::span> work;  // kept open until the process dies
std::uint64_t ticks = 0;
char answer[128];

[[noreturn]] void die(std::string_view how)
{
    std::fflush(nullptr);
    if (how == "abort")
        std::abort();
    if (how == "exit")
        std::_Exit(3);
    // A real invalid write (not raise()): the low page is never mapped.
    volatile std::uintptr_t address = 16;
    *reinterpret_cast<volatile int*>(address) = 1;
    std::abort();  // not reached
}

std::uint64_t open_work(std::string_view why)
{
    auto in_session = session.enter();
    tt::span w = TT_INFO_SPAN("work", "why"_f = why);
    const std::uint64_t id = w.id();
    work.push_back(std::move(w));
    return id;
}

bool on_start()
{
    std::lock_guard lock(mutex);
    const bool resumed = session.id() != 0;
    if (!resumed)
        session = TT_INFO_SPAN("session", "purpose"_f = "isolation test");
    auto in_session = session.enter();
    TT_INFO("crashy started", "resumed"_f = resumed, "session"_f = session.id(), "ticks"_f = ticks);
    return true;
}

void on_stop()
{
    std::lock_guard lock(mutex);
    TT_INFO("crashy stopping", "ticks"_f = ticks);
    work.clear();  // closed: only the session lives on
}

// "crashy-state 1 <session span id> <ticks>\n"
std::string save_state()
{
    std::lock_guard lock(mutex);
    char buf[96];
    std::snprintf(buf, sizeof buf, "crashy-state 1 %" PRIu64 " %" PRIu64 "\n", session.id(), ticks);
    (void)session.release();  // the host keeps the span open for the id just written
    return buf;
}

bool restore_state(std::string_view text)
{
    std::lock_guard lock(mutex);
    const std::string copy(text);
    std::uint64_t id = 0, n = 0;
    int used = 0;
    if (std::sscanf(copy.c_str(), "crashy-state 1 %" SCNu64 " %" SCNu64 "\n%n", &id, &n, &used) != 2 ||
        static_cast<std::size_t>(used) != copy.size())
        return false;
    session = tt::span::adopt(id);
    ticks = n;
    return true;
}

}  // namespace

extern "C" TT_EXPORT void example_tick(uint64_t tick)
{
    std::string how;
    {
        std::lock_guard lock(mutex);
        ++ticks;
        auto in_session = session.enter();
        TT_INFO("tick", "tick"_f = tick, "ticks"_f = ticks, "session"_f = session.id());
        const char* trigger = std::getenv("CRASHY_TRIGGER");
        if (trigger == nullptr || *trigger == '\0')
            return;
        std::FILE* f = std::fopen(trigger, "r");
        if (f == nullptr)
            return;
        char word[16] = {};
        const bool read = std::fscanf(f, "%15s", word) == 1;
        std::fclose(f);
        std::remove(trigger);
        how = read ? word : "segv";
    }
    const std::uint64_t id = open_work("crash trigger");
    {
        auto in_session = session.enter();
        TT_WARN("about to crash", "how"_f = how, "work"_f = id);
    }
    die(how);
}

extern "C" TT_EXPORT const char* example_handle(const char* request)
{
    const std::string_view r = request != nullptr ? request : "";
    if (r == "segv" || r == "abort" || r == "exit")
        die(r);
    while (r == "hang")
        std::this_thread::sleep_for(std::chrono::seconds(1));
    std::lock_guard lock(mutex);
    if (r == "work") {
        std::snprintf(answer, sizeof answer, "%" PRIu64, open_work("request"));
        return answer;
    }
    if (r == "status") {
        std::snprintf(answer, sizeof answer, "session %" PRIu64 " ticks %" PRIu64, session.id(), ticks);
        return answer;
    }
    return nullptr;
}

TT_PLUGIN("crashy", "1.0.0", "dies on demand (isolation tests)", on_start, on_stop)
TT_PLUGIN_STATE(save_state, restore_state)
