// The receiver's private tables (host/src/receiver_tables.hpp): the key index
// against a reference map, through growth, backward-shift erases and slab
// slots far above the number of keys (an index whose slots must still hold
// them, as the local spans' handle index does).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "receiver_tables.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace detail = tt::host::detail;

namespace {

// Slab slot -> key, as a slab's entries would hold them (0 = free).
struct fake_slab {
    std::vector<std::uint64_t> keys;
    auto key_of() const
    {
        return [this](std::uint32_t i) { return keys.at(i); };
    }
};

void check_same(const detail::key_index& idx, const fake_slab& slab,
                const std::unordered_map<std::uint64_t, std::uint32_t>& ref, std::mt19937_64& rng)
{
    REQUIRE(idx.size() == ref.size());
    for (const auto& [k, at] : ref)
        REQUIRE(idx.find(k, slab.key_of()) == at);
    for (int n = 0; n < 50; ++n)
        CHECK(idx.find(rng() | 1u << 20 | std::uint64_t{1} << 62, slab.key_of()) == detail::no_slot);
}

}  // namespace

TEST_CASE("key_index finds what was put, through growth and erases, for any slab slot")
{
    for (const std::uint32_t spread : {1u, 7u, 1000u}) {
        CAPTURE(spread);
        std::mt19937_64 rng(spread);
        detail::key_index idx;
        fake_slab slab;
        std::unordered_map<std::uint64_t, std::uint32_t> ref;
        std::vector<std::uint32_t> free_slots;
        std::uint32_t next_slot = 0;
        for (int step = 0; step < 20000; ++step) {
            const bool add = ref.empty() || rng() % 100 < 60;
            if (add) {
                // Keys from a small range (collisions of home slots) or anywhere.
                const std::uint64_t key = step % 2 == 0 ? 1 + rng() % 5000 : rng() | 1;
                std::uint32_t at;
                if (!free_slots.empty() && rng() % 2 == 0) {
                    at = free_slots.back();
                    free_slots.pop_back();
                } else {
                    at = next_slot;
                    next_slot += spread;  // slots far above the key count when spread > 1
                }
                if (slab.keys.size() <= at)
                    slab.keys.resize(at + 1, 0);
                if (ref.count(key) != 0) {
                    CHECK_FALSE(idx.put_new(key, at, slab.key_of()));  // left as it was
                    free_slots.push_back(at);
                    continue;
                }
                slab.keys[at] = key;
                CHECK(idx.put_new(key, at, slab.key_of()));
                ref[key] = at;
            } else {
                auto it = ref.begin();
                std::advance(it, static_cast<long>(rng() % ref.size()));
                const auto [key, at] = *it;
                if (rng() % 4 == 0)
                    CHECK(idx.erase(key, at + 1, slab.key_of()) == detail::no_slot);  // another slot: nothing happens
                else {
                    CHECK(idx.erase(key, rng() % 2 == 0 ? at : detail::no_slot, slab.key_of()) == at);
                    slab.keys[at] = 0;
                    free_slots.push_back(at);
                    ref.erase(it);
                }
            }
            if (step % 997 == 0)
                check_same(idx, slab, ref, rng);
        }
        check_same(idx, slab, ref, rng);
        // put repoints an existing key
        if (!ref.empty()) {
            const auto [key, at] = *ref.begin();
            const std::uint32_t moved = next_slot;
            slab.keys.resize(moved + 1, 0);
            slab.keys[moved] = key;
            idx.put(key, moved, slab.key_of());  // found through its old slot, which still holds the key
            slab.keys[at] = 0;
            CHECK(idx.find(key, slab.key_of()) == moved);
            CHECK(idx.size() == ref.size());
        }
    }
}

TEST_CASE("keyed_table of local entries (4-byte aligned 64-bit fields) keeps full 64-bit keys and handles")
{
    detail::keyed_table<detail::local_rec> t;
    std::mt19937_64 rng(7);
    std::unordered_map<std::uint64_t, std::uint64_t> ref;  // key -> handle
    for (int n = 0; n < 3000; ++n) {
        // Keys and handles that differ only above bit 31 too.
        const std::uint64_t key = n % 3 == 0 ? (rng() | 1) : (std::uint64_t(n % 7 + 1) << 32 | std::uint64_t(n));
        const std::uint64_t handle = rng() | std::uint64_t{1} << 63;
        if (ref.count(key) != 0)
            continue;
        auto [e, slot] = t.add(key);
        e->handle = handle;
        e->entered_at = static_cast<std::uint32_t>(n);
        CHECK(&t.at(slot) == e);
        ref.emplace(key, handle);
        if (n % 5 == 0) {
            t.erase(key);
            ref.erase(key);
        }
    }
    REQUIRE(t.size() == ref.size());
    for (const auto& [k, h] : ref) {
        const auto* e = t.find(k);
        REQUIRE(e != nullptr);
        CHECK(static_cast<std::uint64_t>(e->key) == k);
        CHECK(static_cast<std::uint64_t>(e->handle) == h);
    }
    CHECK(t.find(std::uint64_t{9} << 32 | 1) == nullptr);
    std::size_t seen = 0;
    t.for_each([&](detail::local_rec& e, std::uint32_t) {
        ++seen;
        CHECK(ref.at(e.key) == static_cast<std::uint64_t>(e.handle));
    });
    CHECK(seen == ref.size());
}

// keyed_table remembers the entry it found or added last (a span's events
// come in a row). That entry must never outlive its key: not an erase, a
// clear, a slot reused by another key, nor a move or swap of the table.
TEST_CASE("keyed_table's remembered entry never answers for an erased key, another table, or a reused slot")
{
    detail::keyed_table<detail::local_rec> t;
    auto* a = t.add(11).first;
    a->handle = 111;
    CHECK(t.find(11) == a);
    CHECK(t.find(11) == a);  // the remembered one
    t.erase(11);
    CHECK(t.find(11) == nullptr);
    CHECK(std::as_const(t).find(11) == nullptr);

    // The slot comes back for another key; the old key still finds nothing.
    auto* b = t.add(22).first;
    b->handle = 222;
    CHECK(t.find(11) == nullptr);
    CHECK(t.find(22) == b);
    auto* c = t.add(33).first;
    c->handle = 333;
    CHECK(t.find(22) == b);  // not the last added, found through the index
    CHECK(static_cast<std::uint64_t>(t.find(33)->handle) == 333);
    CHECK(t.find(0) == nullptr);  // 0 is no key, whatever is remembered

    // Re-added under the same key: the new entry, not the erased one.
    t.erase(22);
    t.find(33);
    auto* b2 = t.add(22).first;
    b2->handle = 2222;
    CHECK(static_cast<std::uint64_t>(t.find(22)->handle) == 2222);

    // Moved and swapped: each table answers for its own entries only.
    detail::keyed_table<detail::local_rec> u;
    u.add(44).first->handle = 444;
    CHECK(u.find(44) != nullptr);
    std::swap(t, u);
    CHECK(t.find(44) != nullptr);
    CHECK(t.find(22) == nullptr);
    CHECK(t.find(33) == nullptr);
    CHECK(u.find(44) == nullptr);
    CHECK(static_cast<std::uint64_t>(u.find(22)->handle) == 2222);
    detail::keyed_table<detail::local_rec> moved(std::move(u));
    CHECK(u.find(22) == nullptr);
    CHECK(static_cast<std::uint64_t>(moved.find(22)->handle) == 2222);

    moved.find(33);
    moved.clear();
    CHECK(moved.find(33) == nullptr);
    CHECK(moved.find(22) == nullptr);
}

TEST_CASE("keyed_table of span entries (72 bytes, aligned to 4) keeps ids, starts, counters and values apart")
{
    static_assert(sizeof(detail::span_rec) == 72 && alignof(detail::span_rec) == 4);
    detail::keyed_table<detail::span_rec> t;
    std::mt19937_64 rng(11);
    struct want {
        std::uint64_t parent;
        tt::host::clock::time_point start;
        std::uint32_t depth, site, refs;
        std::string values;
    };
    std::unordered_map<std::uint64_t, want> ref;
    for (int n = 0; n < 2000; ++n) {  // 8 chunks: entries stay where they were
        const std::uint64_t key = (rng() | 1) ^ std::uint64_t(n) << 40;
        if (ref.count(key) != 0)
            continue;
        want w{rng(), tt::host::clock::time_point(tt::host::clock::duration(static_cast<std::int64_t>(rng()))),
               static_cast<std::uint32_t>(n % detail::span_rec::max_depth) + 1, static_cast<std::uint32_t>(n),
               static_cast<std::uint32_t>(rng()), std::string(static_cast<std::size_t>(n % 50), char('a' + n % 26))};
        auto [e, slot] = t.add(key);
        e->parent_id = w.parent;
        e->set_start(w.start);
        e->depth = w.depth;
        e->site = w.site;
        e->ref_count = w.refs;
        e->bytes = detail::span_rec::big_bytes;
        e->uncommitted = 1;
        e->values.assign(w.values);
        CHECK(&t.at(slot) == e);
        ref.emplace(key, std::move(w));
        if (n % 7 == 0) {
            t.erase(key);
            ref.erase(key);
        }
    }
    REQUIRE(t.size() == ref.size());
    for (const auto& [k, w] : ref) {
        const auto* e = t.find(k);
        REQUIRE(e != nullptr);
        CHECK(std::uint64_t{e->key} == k);
        CHECK(std::uint64_t{e->parent_id} == w.parent);
        CHECK(e->start() == w.start);
        CHECK(e->depth == w.depth);
        CHECK(e->site == w.site);
        CHECK(e->ref_count == w.refs);
        CHECK(e->bytes == detail::span_rec::big_bytes);
        CHECK(e->uncommitted == 1);
        CHECK(e->values.bytes() == w.values);
    }
}
