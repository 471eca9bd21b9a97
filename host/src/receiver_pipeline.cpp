// thread_span_stack (pipeline.hpp): one thread_local vector of frames, tagged
// by the owning stack object, so any number of subscribers share it.
#include <tracetunnel/host/pipeline.hpp>

#include <atomic>

namespace tt::host {

namespace {

std::uint64_t next_owner() noexcept
{
    static std::atomic<std::uint64_t> counter{1};
    return counter.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

thread_span_stack::thread_span_stack() noexcept : owner_(next_owner()) {}

// Frames this object left on other threads stay there, tagged with an owner
// id that is never reused, so no later stack ever reads them.
thread_span_stack::~thread_span_stack()
{
    auto& fr = frames();
    std::erase_if(fr, [&](const frame& f) { return f.owner == owner_; });
}

std::vector<thread_span_stack::frame>& thread_span_stack::frames() noexcept
{
    thread_local std::vector<frame> stack;
    return stack;
}

void thread_span_stack::push(span_handle span) noexcept
{
    frames().push_back(frame{owner_, span});
}

bool thread_span_stack::pop(span_handle span) noexcept
{
    auto& fr = frames();
    for (auto it = fr.rbegin(); it != fr.rend(); ++it)
        if (it->owner == owner_ && it->span == span) {
            fr.erase(std::next(it).base());
            return true;
        }
    return false;
}

span_handle thread_span_stack::current() const noexcept
{
    return current_if([](span_handle) { return true; });
}

std::size_t thread_span_stack::depth() const noexcept
{
    std::size_t n = 0;
    for (const auto& f : frames())
        n += f.owner == owner_ ? 1 : 0;
    return n;
}

}  // namespace tt::host
