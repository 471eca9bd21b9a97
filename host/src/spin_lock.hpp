// A lock for critical sections of a few dozen instructions that are rarely
// contended (a node pool of one thread stripe, one shard of a lineage's
// local spans): a test-and-set flag, so a free lock costs one atomic
// exchange and no call into the C library, where a futex mutex pays a lock
// and an unlock call. A waiter spins briefly, then yields its time slice:
// the holder may have been preempted (more threads than cores).
//
//   tt::host::detail::spin_lock lock;
//   { std::lock_guard held(lock); /* a few instructions */ }
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>

namespace tt::host::detail {

class spin_lock {
public:
    void lock() noexcept
    {
        while (held_.exchange(true, std::memory_order_acquire)) [[unlikely]]
            wait();
    }
    void unlock() noexcept { held_.store(false, std::memory_order_release); }

private:
    [[gnu::noinline]] void wait() const noexcept
    {
        for (unsigned spins = 0; held_.load(std::memory_order_relaxed); ++spins) {
            if (spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            } else {
                std::this_thread::yield();
            }
        }
    }
    std::atomic<bool> held_{false};
};

// Every lock of an array of shards (each with a `mutex` member), taken in
// index order and released in reverse: for the work that spans all of them
// (a commit, a rollback, a restore). One order everywhere, so two of these
// never deadlock.
template <class Shard>
class all_shards_locked {
public:
    all_shards_locked(Shard* shards, std::size_t count) noexcept : shards_(shards), count_(count)
    {
        for (std::size_t i = 0; i < count_; ++i)
            shards_[i].mutex.lock();
    }
    ~all_shards_locked()
    {
        for (std::size_t i = count_; i-- > 0;)
            shards_[i].mutex.unlock();
    }
    all_shards_locked(const all_shards_locked&) = delete;
    all_shards_locked& operator=(const all_shards_locked&) = delete;

private:
    Shard* shards_;
    std::size_t count_;
};

}  // namespace tt::host::detail
