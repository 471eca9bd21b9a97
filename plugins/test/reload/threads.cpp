// threads: four plugin threads open, enter and close "work" spans as fast as
// they can, for the host's reload-under-load tests. on_stop joins them, so
// once stop returns nothing of the plugin runs or emits.
#define TT_TARGET "threads"
#include <tracetunnel/trace.hpp>

#include "test_app.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

using namespace tt::literals;
using namespace std::chrono_literals;

namespace {

std::atomic<bool> stopping{false};
std::atomic<std::uint64_t> spans_opened{0};
std::vector<std::thread> workers;  // touched by start and stop only

void work(std::uint64_t index)
{
    for (std::uint64_t n = 0; !stopping.load(std::memory_order_acquire); ++n) {
        {
            const tt::span s = TT_INFO_SPAN("work", "thread"_f = index, "n"_f = n);
            if (!s.is_disabled())
                spans_opened.fetch_add(1, std::memory_order_relaxed);
            auto entered = s.enter();
            TT_INFO("tick", "n"_f = n);
        }  // exited, then dropped (closed)
        std::this_thread::sleep_for(50us);
    }
}

void join_all() noexcept
{
    stopping.store(true, std::memory_order_release);
    for (auto& t : workers)
        if (t.joinable())
            t.join();
    workers.clear();
}

bool on_start()
{
    join_all();  // nothing left from an earlier start of this image
    stopping.store(false, std::memory_order_release);
    try {
        for (std::uint64_t i = 0; i < THREADS_WORKERS; ++i)
            workers.emplace_back([i] { work(i); });  // a lambda: no exported std::thread instantiation
    } catch (...) {
        join_all();
        return false;
    }
    return true;
}

void on_stop()
{
    join_all();
}

}  // namespace

TT_PLUGIN("threads", "1.0.0", "Test plugin: four threads emitting spans", on_start, on_stop)

extern "C" TT_EXPORT std::uint64_t threads_spans_opened(void)
{
    return spans_opened.load(std::memory_order_relaxed);
}
