// The receiver's span tables (private to host/src): entries live in chunks
// that never move, a dropped span's slot is reused by the next span, and a
// key finds its slot through an open-addressing index of 4-byte slots. No
// heap node per span, so a new span allocates nothing once the tables are
// warm, and a live span costs its entry plus 4.6 to 9 bytes of index.
//
// Span values are kept packed (value_blob): a field is its index in the call
// site (the name is the call site's), a scalar its 8 or 16 bytes, a string
// its length and bytes; small sets of values fit inside the entry.
#pragma once

#include <tracetunnel/host/pipeline.hpp>
#include <tracetunnel/model.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace tt::host::detail {

inline std::uint64_t mix64(std::uint64_t x) noexcept
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

inline constexpr std::uint32_t no_slot = 0xFFFFFFFFu;

// Entries of type T (which has `std::uint64_t key`, 0 = free) in chunks of
// 256 that never move; freed slots are reused first. (Chunks of 64 cost 0.6
// more bytes a live span in malloc headers and the chunk list: S11.)
template <class T>
class slab {
public:
    static constexpr std::uint32_t chunk_bits = 8;
    static constexpr std::uint32_t chunk_size = 1u << chunk_bits;

    slab() = default;
    slab(const slab&) = delete;
    slab& operator=(const slab&) = delete;
    slab(slab&& o) noexcept : chunks_(std::move(o.chunks_)), free_(std::move(o.free_)), used_(std::exchange(o.used_, 0)) {}
    slab& operator=(slab&& o) noexcept
    {
        chunks_ = std::move(o.chunks_);
        free_ = std::move(o.free_);
        used_ = std::exchange(o.used_, 0);
        o.chunks_.clear();
        o.free_.clear();
        return *this;
    }

    T& operator[](std::uint32_t i) noexcept { return chunks_[i >> chunk_bits][i & (chunk_size - 1)]; }
    const T& operator[](std::uint32_t i) const noexcept { return chunks_[i >> chunk_bits][i & (chunk_size - 1)]; }
    // Slots handed out so far (free or not): iterate [0, extent) and skip key 0.
    std::uint32_t extent() const noexcept { return used_; }

    std::uint32_t acquire()
    {
        if (!free_.empty()) {
            const std::uint32_t i = free_.back();
            free_.pop_back();
            return i;
        }
        if (used_ == chunks_.size() * chunk_size) {
            if (used_ >= no_slot - chunk_size)
                throw std::bad_alloc();
            chunks_.push_back(std::make_unique<T[]>(chunk_size));
        }
        return used_++;
    }
    void reserve(std::size_t n) { chunks_.reserve((n + chunk_size - 1) / chunk_size); }
    // The entry must already be reset (key 0).
    void release(std::uint32_t i) { free_.push_back(i); }
    void clear() noexcept
    {
        chunks_.clear();
        free_.clear();
        used_ = 0;
    }

private:
    std::vector<std::unique_ptr<T[]>> chunks_;
    std::vector<std::uint32_t> free_;
    std::uint32_t used_ = 0;
};

// Key -> slab slot. The key itself lives in the slab entry: `key_of(slot)`
// gives it back. A slot of the index is 4 bytes: with a capacity of 2^b,
// its low b bits hold the slab slot + 1 (0 = empty) and the rest a tag of
// the hash, which spares most of the key look-ups (15 bits at 2^17). The
// index grows until a slab slot fits its low bits, so it is never more than
// twice the slab's extent. Keys are never 0. Linear probing, deletion by
// backward shift.
class key_index {
public:
    key_index() = default;
    key_index(const key_index&) = delete;
    key_index& operator=(const key_index&) = delete;
    key_index(key_index&& o) noexcept
        : slots_(std::move(o.slots_)), mask_(std::exchange(o.mask_, 0)), size_(std::exchange(o.size_, 0))
    {
    }
    key_index& operator=(key_index&& o) noexcept
    {
        slots_ = std::move(o.slots_);
        mask_ = std::exchange(o.mask_, 0);
        size_ = std::exchange(o.size_, 0);
        return *this;
    }
    template <class KeyOf>
    std::uint32_t find(std::uint64_t key, const KeyOf& key_of) const noexcept
    {
        if (size_ == 0)
            return no_slot;
        const std::uint64_t h = mix64(key);
        const auto tag = static_cast<std::uint32_t>(h >> 32);
        const std::uint32_t* const slots = slots_.get();
        const std::size_t mask = mask_;
        const auto hi = ~static_cast<std::uint32_t>(mask);
        for (std::size_t i = h & mask;; i = (i + 1) & mask) {
            const std::uint32_t s = slots[i];
            if (s == 0)
                return no_slot;
            if (((s ^ tag) & hi) == 0 && key_of((s & ~hi) - 1) == key)
                return (s & ~hi) - 1;
        }
    }
    // Maps key to `at`, replacing an existing mapping of the key.
    template <class KeyOf>
    void put(std::uint64_t key, std::uint32_t at, const KeyOf& key_of)
    {
        (void)insert(key, at, key_of, true);
    }
    // Maps key to `at` unless the key is there already (false: unchanged);
    // one probe where find + put take two.
    template <class KeyOf>
    bool put_new(std::uint64_t key, std::uint32_t at, const KeyOf& key_of)
    {
        return insert(key, at, key_of, false);
    }
    // Removes the key if it maps to `at` (or to anything when at is no_slot):
    // the slot it mapped to, or no_slot when nothing was removed.
    template <class KeyOf>
    std::uint32_t erase(std::uint64_t key, std::uint32_t at, const KeyOf& key_of) noexcept
    {
        if (size_ == 0)
            return no_slot;
        const std::uint64_t h = mix64(key);
        const std::uint32_t tag = tag_of(h);
        std::size_t i = h & mask_;
        for (;; i = (i + 1) & mask_) {
            const std::uint32_t s = slots_[i];
            if (s == 0)
                return no_slot;
            if ((s & ~mask32()) == tag && key_of(ref_of(s)) == key) {
                if (at != no_slot && ref_of(s) != at)
                    return no_slot;
                break;
            }
        }
        const std::uint32_t removed = ref_of(slots_[i]);
        // Backward shift: pull later entries of the run into the hole when
        // their home is not between the hole and themselves.
        for (std::size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
            const std::uint32_t s = slots_[j];
            if (s == 0)
                break;
            const std::size_t home = mix64(key_of(ref_of(s))) & mask_;
            if (((j - home) & mask_) >= ((j - i) & mask_)) {
                slots_[i] = s;
                i = j;
            }
        }
        slots_[i] = 0;
        --size_;
        return removed;
    }
    std::size_t size() const noexcept { return size_; }
    // Room for n keys without a grow (a restore of n spans).
    template <class KeyOf>
    void reserve(std::size_t n, const KeyOf& key_of)
    {
        while (n * 8 > capacity() * max_load_eighths)
            grow(key_of);
    }
    void clear() noexcept
    {
        slots_.reset();
        mask_ = 0;
        size_ = 0;
    }

private:
    // True when the key was new; an existing key's slot is repointed only
    // with `replace`.
    template <class KeyOf>
    bool insert(std::uint64_t key, std::uint32_t at, const KeyOf& key_of, bool replace)
    {
        while ((size_ + 1) * 8 > capacity() * max_load_eighths || std::size_t{at} + 1 > mask_)
            grow(key_of);
        const std::uint64_t h = mix64(key);
        const std::uint32_t tag = tag_of(h);
        for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
            std::uint32_t& s = slots_[i];
            if (s == 0) {
                s = tag | (at + 1);
                ++size_;
                return true;
            }
            if ((s & ~mask32()) == tag && key_of(ref_of(s)) == key) {
                if (replace)
                    s = tag | (at + 1);
                return false;
            }
        }
    }
    // Filled up to 7/8 before doubling: 100k live spans fit 2^17 slots, not
    // 2^18. Runs get longer near the top, but a probe compares the tag in
    // the slot and reads an entry's key only on a tag match.
    static constexpr std::size_t max_load_eighths = 7;
    std::size_t capacity() const noexcept { return slots_ ? mask_ + 1 : 0; }
    std::uint32_t mask32() const noexcept { return static_cast<std::uint32_t>(mask_); }
    std::uint32_t ref_of(std::uint32_t s) const noexcept { return (s & mask32()) - 1; }
    std::uint32_t tag_of(std::uint64_t h) const noexcept { return static_cast<std::uint32_t>(h >> 32) & ~mask32(); }
    // Rare, and out of line so that the callers' inlining stays as it was.
    template <class KeyOf>
    [[gnu::noinline]] void grow(const KeyOf& key_of)
    {
        const std::size_t cap = capacity() == 0 ? 16 : capacity() * 2;
        if (cap > (std::size_t{1} << 32))  // a slot's bits would not hold the slab slot
            throw std::bad_alloc();
        auto next = std::make_unique<std::uint32_t[]>(cap);
        const std::size_t mask = cap - 1;
        const auto mask32 = static_cast<std::uint32_t>(mask);
        for (std::size_t k = 0; k < capacity(); ++k) {
            const std::uint32_t s = slots_[k];
            if (s == 0)
                continue;
            const std::uint32_t ref = ref_of(s);
            const std::uint64_t h = mix64(key_of(ref));
            std::size_t i = h & mask;
            while (next[i] != 0)
                i = (i + 1) & mask;
            next[i] = (static_cast<std::uint32_t>(h >> 32) & ~mask32) | (ref + 1);
        }
        slots_ = std::move(next);
        mask_ = mask;
    }
    std::unique_ptr<std::uint32_t[]> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

// One span's values, packed. Per value: a head byte (the variant's index,
// 0x10 when the field is given by name), the field's index in the call site
// or its name, then the payload. Lengths and indices are 1 byte below 255,
// else 255 and 8 bytes.
class value_blob {
public:
    // The bench's spans (3 small fields) take 32 bytes packed. The heap
    // pointer of a bigger set is kept in the same bytes (memcpy), so the
    // blob is 36 bytes aligned to 4 and packs with span_rec's counters.
    static constexpr std::size_t inline_bytes = 32;

    value_blob() noexcept = default;
    value_blob(const value_blob&) = delete;
    value_blob& operator=(const value_blob&) = delete;
    value_blob(value_blob&& o) noexcept { take(o); }
    value_blob& operator=(value_blob&& o) noexcept
    {
        if (this != &o) {
            reset();
            take(o);
        }
        return *this;
    }
    ~value_blob() { reset(); }

    std::string_view bytes() const noexcept { return {data(), size_}; }
    bool empty() const noexcept { return size_ == 0; }
    void reset() noexcept
    {
        if (size_ > inline_bytes)
            delete[] heap();
        size_ = 0;
    }
    // Room for `n` bytes, which the caller then writes in full (no copy
    // through a scratch buffer); on an allocation failure the old bytes stay.
    char* prepare(std::size_t n)
    {
        if (n > 0xFFFFFFFFu)
            throw std::length_error("span values too large");
        char* dst = n > inline_bytes ? new char[n] : nullptr;
        reset();
        if (dst != nullptr)
            std::memcpy(buf_, &dst, sizeof dst);
        size_ = static_cast<std::uint32_t>(n);
        return data();
    }
    // A copy of `b`; on an allocation failure the old bytes stay.
    void assign(std::string_view b)
    {
        if (b.size() > 0xFFFFFFFFu)
            throw std::length_error("span values too large");
        char* dst = b.size() > inline_bytes ? new char[b.size()] : nullptr;
        reset();
        if (dst != nullptr)
            std::memcpy(buf_, &dst, sizeof dst);
        size_ = static_cast<std::uint32_t>(b.size());
        if (!b.empty())
            std::memcpy(data(), b.data(), b.size());
    }

private:
    void take(value_blob& o) noexcept
    {
        size_ = o.size_;
        if (size_ != 0)
            std::memcpy(buf_, o.buf_, size_ > inline_bytes ? sizeof(char*) : size_);
        o.size_ = 0;
    }
    char* heap() const noexcept
    {
        char* p;
        std::memcpy(&p, buf_, sizeof p);
        return p;
    }
    char* data() noexcept { return size_ > inline_bytes ? heap() : buf_; }
    const char* data() const noexcept { return size_ > inline_bytes ? heap() : buf_; }
    alignas(4) char buf_[inline_bytes];
    std::uint32_t size_ = 0;
};
static_assert(sizeof(value_blob) == value_blob::inline_bytes + 4);

// Builds a packed value set in a buffer that keeps its capacity.
class blob_writer {
public:
    void clear() noexcept { out_.clear(); }
    std::string_view bytes() const noexcept { return out_; }

    // A value of field #index of the call site.
    void add(std::uint32_t index, const model::value& v)
    {
        head(static_cast<unsigned char>(v.index()));
        len(index);
        payload(v);
    }
    // A value under a name (no call site, or a name it does not declare).
    void add(std::string_view name, const model::value& v)
    {
        head(static_cast<unsigned char>(v.index() | 0x10));
        str(name);
        payload(v);
    }

private:
    void head(unsigned char h) { out_.push_back(static_cast<char>(h)); }
    void len(std::uint64_t n)
    {
        if (n < 255) {
            out_.push_back(static_cast<char>(n));
            return;
        }
        out_.push_back(static_cast<char>(255));
        raw(&n, 8);
    }
    void raw(const void* p, std::size_t n) { out_.append(static_cast<const char*>(p), n); }
    void str(std::string_view s)
    {
        len(s.size());
        out_.append(s);
    }
    void payload(const model::value& v)
    {
        switch (v.index()) {
        case 0: out_.push_back(std::get<bool>(v) ? 1 : 0); break;
        case 1: raw(&std::get<std::int64_t>(v), 8); break;
        case 2: raw(&std::get<std::uint64_t>(v), 8); break;
        case 3: raw(&std::get<model::i128>(v), 16); break;
        case 4: raw(&std::get<model::u128>(v), 16); break;
        case 5: raw(&std::get<double>(v), 8); break;
        case 6: str(std::get<std::string>(v)); break;
        case 7: str(std::get<model::debug_text>(v).text); break;
        case 8: {
            const auto& chain = std::get<model::error_chain>(v).chain;
            len(chain.size());
            for (const auto& c : chain)
                str(c);
            break;
        }
        default: break;
        }
    }
    std::string out_;
};

// The same format written straight from a checked view of a plugin's value
// (value_ref::from_abi): what blob_writer::add(index, v.to_value()) writes,
// without building the model::value. size_of first, then put into a buffer
// of the summed sizes.
namespace blob {
inline std::size_t len_size(std::uint64_t n) noexcept
{
    return n < 255 ? 1 : 9;
}
inline char* put_len(char* out, std::uint64_t n) noexcept
{
    if (n < 255) {
        *out++ = static_cast<char>(n);
        return out;
    }
    *out++ = static_cast<char>(255);
    std::memcpy(out, &n, 8);
    return out + 8;
}
inline char* put_str(char* out, std::string_view s) noexcept
{
    out = put_len(out, s.size());
    if (!s.empty())
        std::memcpy(out, s.data(), s.size());
    return out + s.size();
}
// Head, index and payload of field #index's value `v` (not kind::none).
inline std::size_t size_of(std::uint32_t index, const value_ref& v) noexcept
{
    const std::size_t fixed = 1 + len_size(index);
    return fixed + v.visit([](const auto& x) -> std::size_t {
               using T = std::decay_t<decltype(x)>;
               if constexpr (std::is_same_v<T, bool>)
                   return 1;
               else if constexpr (std::is_same_v<T, std::string_view>)
                   return len_size(x.size()) + x.size();
               else if constexpr (std::is_same_v<T, value_ref::debug>)
                   return len_size(x.text.size()) + x.text.size();
               else if constexpr (std::is_same_v<T, value_ref::error_view>) {
                   std::size_t n = len_size(x.size());
                   for (std::size_t i = 0; i < x.size(); ++i)
                       n += len_size(x[i].size()) + x[i].size();
                   return n;
               } else
                   return sizeof(T);
           });
}
inline char* put(char* out, std::uint32_t index, const value_ref& v) noexcept
{
    *out++ = static_cast<char>(static_cast<unsigned char>(v.type()) - 1);  // kind - 1: the variant's index
    out = put_len(out, index);
    return v.visit([out](const auto& x) mutable -> char* {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
            *out = x ? 1 : 0;
            return out + 1;
        } else if constexpr (std::is_same_v<T, std::string_view>)
            return put_str(out, x);
        else if constexpr (std::is_same_v<T, value_ref::debug>)
            return put_str(out, x.text);
        else if constexpr (std::is_same_v<T, value_ref::error_view>) {
            out = put_len(out, x.size());
            for (std::size_t i = 0; i < x.size(); ++i)
                out = put_str(out, x[i]);
            return out;
        } else {
            std::memcpy(out, &x, sizeof(T));
            return out + sizeof(T);
        }
    });
}
}  // namespace blob

// Reads a packed value set back: `fn(name, value)` per value, in order.
// `fields` names indexed fields (the call site's); an index beyond it (a
// call site that is gone) reads as an empty name.
template <class Fn>
void read_blob(std::string_view b, const std::vector<std::string>* fields, Fn&& fn)
{
    const char* p = b.data();
    const char* end = p + b.size();
    auto len = [&]() -> std::uint64_t {
        const auto c = static_cast<unsigned char>(*p++);
        if (c < 255)
            return c;
        std::uint64_t n;
        std::memcpy(&n, p, 8);
        p += 8;
        return n;
    };
    auto str = [&]() {
        const std::uint64_t n = len();
        std::string_view s(p, n);
        p += n;
        return s;
    };
    auto raw = [&](void* out, std::size_t n) {
        std::memcpy(out, p, n);
        p += n;
    };
    static const std::string no_name;
    while (p < end) {
        const auto h = static_cast<unsigned char>(*p++);
        std::string_view name;
        if ((h & 0x10) != 0) {
            name = str();
        } else {
            const std::uint64_t i = len();
            name = fields != nullptr && i < fields->size() ? std::string_view((*fields)[i]) : no_name;
        }
        model::value v;
        switch (h & 0x0F) {
        case 0: v = *p++ != 0; break;
        case 1: { std::int64_t x; raw(&x, 8); v = x; break; }
        case 2: { std::uint64_t x; raw(&x, 8); v = x; break; }
        case 3: { model::i128 x; raw(&x, 16); v = x; break; }
        case 4: { model::u128 x; raw(&x, 16); v = x; break; }
        case 5: { double x; raw(&x, 8); v = x; break; }
        case 6: v = std::string(str()); break;
        case 7: v = model::debug_text{std::string(str())}; break;
        case 8: {
            model::error_chain e;
            const std::uint64_t n = len();
            e.chain.reserve(n);
            for (std::uint64_t k = 0; k < n; ++k)
                e.chain.emplace_back(str());
            v = std::move(e);
            break;
        }
        default: return;
        }
        fn(name, std::move(v));
    }
}

// A 64-bit number aligned to 4, so that a table entry of two of them and a
// 32-bit field takes 20 bytes, not 24 (local_rec).
class u64_align4 {
public:
    u64_align4() noexcept = default;
    u64_align4(std::uint64_t v) noexcept { std::memcpy(w_, &v, sizeof v); }
    operator std::uint64_t() const noexcept
    {
        std::uint64_t v;
        std::memcpy(&v, w_, sizeof v);
        return v;
    }

private:
    std::uint32_t w_[2] = {0, 0};
};
static_assert(sizeof(u64_align4) == 8 && alignof(u64_align4) == 4);

// A span as the receiver keeps it: 72 bytes, aligned to 4 (S11: a live
// span's memory). Its call site is a 4-byte number into span_table::sites
// (0: not known; a restored span's id is then in span_table's side map).
// Its string bytes are kept here below `big_bytes`, else in a side map
// (span_table::bytes_of): few spans carry 32 KiB of names and strings.
struct span_rec {
    u64_align4 key;  // the span id; 0 = a free slot
    u64_align4 parent_id;
    u64_align4 start_ns;  // clock::time_point's count (start(), set_start())
    std::uint32_t site = 0;  // span_table::sites index; 0 = no call site known
    std::uint32_t ref_count = 1;  // a clone beyond max_ref_count handles is refused
    // Deeper than this is refused whatever the quota says (16 bits; 0xFFFF
    // marks a span on the chain being walked when a receiver restores).
    static constexpr std::uint32_t max_depth = 0xFFFEu;
    static constexpr std::uint32_t big_bytes = 0x7FFFu;
    std::uint32_t depth : 16 = 1;  // 1 + the parent's, within this lineage
    // Created since the last commit: a rollback closes it. A bit here
    // instead of a list of ids in the receiver (8 to 16 bytes a span).
    std::uint32_t uncommitted : 1 = 0;
    std::uint32_t bytes : 15 = 0;  // names + string values (string quota); big_bytes: aside
    value_blob values;             // creation values + records, first-recorded order

    clock::time_point start() const noexcept
    {
        return clock::time_point(clock::duration(static_cast<clock::rep>(std::uint64_t{start_ns})));
    }
    void set_start(clock::time_point t) noexcept { start_ns = static_cast<std::uint64_t>(t.time_since_epoch().count()); }
};
static_assert(sizeof(span_rec) == 72 && alignof(span_rec) == 4);

// On which threads a span is entered, how often, in 16 bytes: one thread
// inline (the common case), or, once a second thread enters, all of them in
// a vector aside (`n_ == many`).
class entered_set {
public:
    entered_set() noexcept { set_one(std::thread::id{}); }
    entered_set(const entered_set&) = delete;
    entered_set& operator=(const entered_set&) = delete;
    entered_set(entered_set&& o) noexcept { take(o); }
    entered_set& operator=(entered_set&& o) noexcept
    {
        if (this != &o) {
            clear();
            take(o);
        }
        return *this;
    }
    ~entered_set() { clear(); }

    bool empty() const noexcept { return n_ == 0; }  // a vector is never left empty
    std::uint32_t threads() const noexcept
    {
        return n_ == many ? static_cast<std::uint32_t>(list_of()->size()) : (n_ != 0 ? 1u : 0u);
    }
    void add(std::thread::id t)
    {
        if (n_ == 0) {
            set_one(t);
            n_ = 1;
            return;
        }
        if (n_ != many) {
            if (one() == t) {
                n_ += n_ + 1 != many ? 1 : 0;  // saturates below the marker (2^32 - 2 enters)
                return;
            }
            auto v = std::make_unique<list>();
            v->reserve(2);
            v->emplace_back(one(), n_);
            v->emplace_back(t, 1);
            set_list(v.release());
            n_ = many;
            return;
        }
        for (auto& [th, k] : *list_of())
            if (th == t) {
                k += k + 1 != many ? 1 : 0;
                return;
            }
        list_of()->emplace_back(t, 1);
    }
    bool has(std::thread::id t) const noexcept
    {
        if (n_ != many)
            return n_ != 0 && one() == t;
        for (const auto& [th, k] : *list_of())
            if (th == t)
                return true;
        return false;
    }
    // One exit on thread t; the caller checked has(t).
    void remove(std::thread::id t) noexcept
    {
        if (n_ != many) {
            if (n_ != 0 && one() == t && --n_ == 0)
                set_one(std::thread::id{});
            return;
        }
        list* v = list_of();
        for (auto it = v->begin(); it != v->end(); ++it)
            if (it->first == t) {
                if (--it->second == 0)
                    v->erase(it);
                break;
            }
        if (v->size() <= 1) {  // back inline
            const std::pair<std::thread::id, std::uint32_t> last =
                v->empty() ? std::pair<std::thread::id, std::uint32_t>{} : v->front();
            delete v;
            set_one(last.first);
            n_ = last.second;
        }
    }
    template <class Fn>
    void for_each(Fn&& fn) const
    {
        if (n_ != many) {
            if (n_ != 0)
                fn(one(), n_);
            return;
        }
        for (const auto& [th, k] : *list_of())
            fn(th, k);
    }
    void clear() noexcept
    {
        if (n_ == many)
            delete list_of();
        set_one(std::thread::id{});
        n_ = 0;
    }

private:
    using list = std::vector<std::pair<std::thread::id, std::uint32_t>>;
    static constexpr std::uint32_t many = 0xFFFFFFFFu;
    static_assert(sizeof(std::thread::id) <= 8 && std::is_trivially_copyable_v<std::thread::id>);
    // The 8 bytes hold the one thread's id or, when n_ == many, the list's
    // pointer (memcpy in and out: no union member's lifetime to track).
    std::thread::id one() const noexcept
    {
        std::thread::id t;
        std::memcpy(&t, raw_, sizeof t);
        return t;
    }
    void set_one(std::thread::id t) noexcept { std::memcpy(raw_, &t, sizeof t); }
    list* list_of() const noexcept
    {
        list* v;
        std::memcpy(&v, raw_, sizeof v);
        return v;
    }
    void set_list(list* v) noexcept { std::memcpy(raw_, &v, sizeof v); }
    void take(entered_set& o) noexcept
    {
        std::memcpy(raw_, o.raw_, sizeof raw_);
        n_ = o.n_;
        o.set_one(std::thread::id{});
        o.n_ = 0;
    }
    alignas(8) unsigned char raw_[8];
    std::uint32_t n_ = 0;
};


// A plugin span id's pipeline handle (local_spans). Its entered threads
// are kept aside (local_spans::table::entered), for the few spans entered at
// a time: 20 bytes here where an inline set made it 32.
struct local_rec {
    u64_align4 key;  // plugin span id; 0 = a free slot
    u64_align4 handle;
    std::uint32_t entered_at = 0;  // slot + 1 of its entered_set aside; 0 = entered nowhere
};
static_assert(sizeof(local_rec) == 20);

// An entered_set in a slab (local_spans::table::entered).
struct entered_rec {
    std::uint64_t key = 0;  // unused by the slab; kept for its interface
    entered_set set;
};

// A slab plus an index by key, which remembers the entry it found or added
// last: a span's events come in a row (new span, enter, exit, drop), and
// each of them would otherwise hash its id and walk the index again (about
// 60 instructions, a chain of dependent loads). An entry stays where it is
// until erased (the slab's chunks never move), so the remembered pointer is
// good until its key is erased or the table cleared; a move hands it over
// with the slab.
template <class T>
class keyed_table {
public:
    keyed_table() = default;
    keyed_table(const keyed_table&) = delete;
    keyed_table& operator=(const keyed_table&) = delete;
    keyed_table(keyed_table&& o) noexcept
        : slab_(std::move(o.slab_)), index_(std::move(o.index_)), last_key_(o.last_key_), last_(o.last_)
    {
        o.forget();
    }
    keyed_table& operator=(keyed_table&& o) noexcept
    {
        slab_ = std::move(o.slab_);
        index_ = std::move(o.index_);
        last_key_ = o.last_key_;
        last_ = o.last_;
        o.forget();
        return *this;
    }

    T* find(std::uint64_t key) noexcept
    {
        if (key == last_key_)  // keys are never 0; a forgotten entry is key 0 and null
            return last_;
        const std::uint32_t i = index_.find(key, key_of());
        if (i == no_slot)
            return nullptr;
        remember(key, &slab_[i]);
        return &slab_[i];
    }
    const T* find(std::uint64_t key) const noexcept
    {
        if (key == last_key_)
            return last_;
        const std::uint32_t i = index_.find(key, key_of());
        return i == no_slot ? nullptr : &slab_[i];
    }
    std::uint32_t slot_of(std::uint64_t key) const noexcept { return index_.find(key, key_of()); }
    T& at(std::uint32_t slot) noexcept { return slab_[slot]; }
    const T& at(std::uint32_t slot) const noexcept { return slab_[slot]; }
    // A fresh entry for a key that is not there.
    std::pair<T*, std::uint32_t> add(std::uint64_t key)
    {
        const std::uint32_t i = slab_.acquire();
        try {
            slab_[i].key = key;
            index_.put(key, i, key_of());
        } catch (...) {
            slab_[i] = T{};
            slab_.release(i);
            throw;
        }
        remember(key, &slab_[i]);  // put() replaces a mapping of the key: this is its entry now
        return {&slab_[i], i};
    }
    // A fresh entry for a key, or null when the key is there already.
    T* add_new(std::uint64_t key)
    {
        const std::uint32_t i = slab_.acquire();
        bool added = false;
        try {
            slab_[i].key = key;
            added = index_.put_new(key, i, key_of());
        } catch (...) {
            slab_[i] = T{};
            slab_.release(i);
            throw;
        }
        if (added) {
            remember(key, &slab_[i]);
            return &slab_[i];
        }
        slab_[i] = T{};
        slab_.release(i);
        return nullptr;
    }
    void erase(std::uint64_t key) noexcept
    {
        if (key == last_key_)
            forget();
        const std::uint32_t i = index_.erase(key, no_slot, key_of());  // one probe
        if (i == no_slot)
            return;
        slab_[i] = T{};
        try {
            slab_.release(i);
        } catch (...) {
            // the slot is lost to reuse; the entry itself is already reset
        }
    }
    std::size_t size() const noexcept { return index_.size(); }
    // Room for n keys in the index, and for the slab's chunk list.
    void reserve(std::size_t n)
    {
        index_.reserve(n, key_of());
        slab_.reserve(n);
    }
    template <class Fn>
    void for_each(Fn&& fn)
    {
        for (std::uint32_t i = 0; i < slab_.extent(); ++i)
            if (slab_[i].key != 0)
                fn(slab_[i], i);
    }
    template <class Fn>
    void for_each(Fn&& fn) const
    {
        for (std::uint32_t i = 0; i < slab_.extent(); ++i)
            if (slab_[i].key != 0)
                fn(slab_[i]);
    }
    void clear() noexcept
    {
        forget();
        index_.clear();
        slab_.clear();
    }

private:
    auto key_of() const noexcept
    {
        return [this](std::uint32_t i) -> std::uint64_t { return slab_[i].key; };
    }
    void remember(std::uint64_t key, T* entry) noexcept
    {
        last_key_ = key;
        last_ = entry;
    }
    void forget() noexcept { remember(0, nullptr); }

    slab<T> slab_;
    key_index index_;
    std::uint64_t last_key_ = 0;
    T* last_ = nullptr;
};

}  // namespace tt::host::detail
