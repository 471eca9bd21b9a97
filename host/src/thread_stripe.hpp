// A stripe index that a thread holds alone while it lives, for counters that
// every event bumps.
//
// A locked read-modify-write (fetch_add) costs several ns even uncontended,
// and the event path used to pay several of them. A counter that only one
// thread ever writes needs none: a relaxed load and store are enough, and a
// reader summing the stripes with relaxed loads sees every completed add.
// Threads claim one of the exclusive stripes on first use and give it back at
// thread exit (the counts stay in the stripe; the next owner adds to them).
// Threads beyond that share the last stripe and add with fetch_add.
//
//   std::atomic<std::uint64_t> events[tt::host::detail::counter_stripes];
//   tt::host::detail::bump(events[tt::host::detail::my_stripe()]);   // writer
//   for (auto& e : events) total += e.load(std::memory_order_relaxed); // reader
#pragma once

#include <atomic>
#include <cstdint>

namespace tt::host::detail {

inline constexpr unsigned counter_stripes = 8;
inline constexpr unsigned shared_stripe = counter_stripes - 1;

namespace stripe_impl {

inline std::atomic<std::uint32_t> claimed{0};  // bit i: exclusive stripe i has an owner
// index + 1; 0 = not asked yet. Trivially destructible, so reading it costs
// no TLS wrapper call.
inline constinit thread_local unsigned cached = 0;

struct release_at_exit {
    unsigned index = shared_stripe;
    ~release_at_exit()
    {
        // Anything this thread still counts from later destructors goes to
        // the shared stripe: the exclusive one may have a new owner by then.
        cached = shared_stripe + 1;
        if (index != shared_stripe)
            claimed.fetch_and(~(std::uint32_t{1} << index), std::memory_order_release);
    }
};

[[gnu::noinline]] inline unsigned claim() noexcept
{
    static thread_local release_at_exit holder;
    unsigned got = shared_stripe;
    std::uint32_t bits = claimed.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < shared_stripe; ++i) {
        const std::uint32_t bit = std::uint32_t{1} << i;
        if ((bits & bit) != 0)
            continue;
        if (claimed.compare_exchange_strong(bits, bits | bit, std::memory_order_acquire, std::memory_order_relaxed)) {
            got = i;
            break;
        }
        i = static_cast<unsigned>(-1);  // `bits` was reloaded: look again from the start
    }
    holder.index = got;
    cached = got + 1;
    return got;
}

}  // namespace stripe_impl

// The calling thread's stripe, in [0, counter_stripes).
inline unsigned my_stripe() noexcept
{
    const unsigned c = stripe_impl::cached;
    return c != 0 ? c - 1 : stripe_impl::claim();
}

// Adds n to the calling thread's counter `c` (which must be the one of its
// own stripe, my_stripe()). Forced inline: GCC kept it out of line in the
// receiver, a call for each of the event path's counts.
[[gnu::always_inline]] inline void bump(std::atomic<std::uint64_t>& c, unsigned stripe, std::uint64_t n = 1) noexcept
{
    if (stripe != shared_stripe) [[likely]]
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    else
        c.fetch_add(n, std::memory_order_relaxed);
}

// One thread's numbers (span ids, span handles) from a shared counter, a
// block at a time: [next, end). A new block runs from the counter's value up
// to the next multiple of `block`: a whole block when the counter is
// aligned, the rest of one when numbers were taken one by one meanwhile (the
// shared stripe) or the counter was set from outside (a restore). Aligned
// blocks are what keep two threads' numbers apart in the tables indexed by
// them: a block straddling a boundary shared cache lines (and shards) with
// the next thread's block. Only its owner thread uses a number_block.
struct number_block {
    std::uint64_t next = 0;
    std::uint64_t end = 0;

    std::uint64_t take(std::atomic<std::uint64_t>& counter, std::uint64_t block) noexcept
    {
        if (next == end) [[unlikely]] {
            std::uint64_t cur = counter.load(std::memory_order_relaxed);
            do {
                end = (cur / block + 1) * block;
            } while (!counter.compare_exchange_weak(cur, end, std::memory_order_relaxed));
            next = cur;
        }
        return next++;
    }
    // The rest of this block is not to be used: the next take starts a new one.
    void give_up() noexcept { end = next; }
};

}  // namespace tt::host::detail
