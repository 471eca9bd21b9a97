// The receiver's persisted state: what a receiver of a plugin lineage needs
// to continue after a plugin reload or a host restart. Split as in
// tracing-tunnel: metadata (the call sites) and persisted spans (the live
// spans and the id counter). The pipeline's handles (tt::host::local_spans)
// are RAM only and not here.
//
// These are plain values; state_file.hpp writes and reads them on disk, and
// tt::host::receiver takes and gives them (aliased as tt::host::persisted_*).
//
//   tt::state::receiver_state st{recv.persist_metadata(), recv.persist()};
//   tt::host::receiver next("orders", pipeline, std::move(st));
#pragma once

#include <tracetunnel/model.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tt::state {

// The clock of span start times (the host pipeline's clock).
using clock = std::chrono::system_clock;

// The byte form of packed_values, for code that converts without building
// model::value (the receiver, the spans-file codec). Per value: a head byte
// (the model::value variant index, | by_name when a name follows, else a
// field index), the name (a length and bytes) or the index (a length), then
// the payload: bool 1 byte; i64, u64, f64 8 bytes; i128, u128 16 bytes (host
// byte order); string and debug text a length and bytes; an error chain a
// count and that many strings. A length is 1 byte below 255, else 255 and 8
// bytes. The receiver keeps span values in the same form with field indices.
namespace packed {

inline constexpr unsigned char by_name = 0x10;
inline constexpr unsigned char type_mask = 0x0F;

// One value as read: `head & type_mask` is its variant index.
struct item {
    unsigned char head = 0;
    std::string_view name;      // when head & by_name
    std::uint64_t index = 0;    // otherwise
    std::string_view payload;   // the payload bytes as described above
};

// Reads a length at `p` (inline: every converted value reads a few).
inline bool read_len(const char*& p, const char* end, std::uint64_t& n) noexcept
{
    if (p == end)
        return false;
    const auto c = static_cast<unsigned char>(*p++);
    if (c < 255) {
        n = c;
        return true;
    }
    if (end - p < 8)
        return false;
    std::memcpy(&n, p, 8);
    p += 8;
    return true;
}

// Reads a length inside a payload that `next` has already checked, so
// without bounds: only for the payload bytes of an item it returned.
inline std::uint64_t take_len(const char*& p) noexcept
{
    const auto c = static_cast<unsigned char>(*p++);
    std::uint64_t n = c;
    if (c == 255) {
        std::memcpy(&n, p, 8);
        p += 8;
    }
    return n;
}

inline bool skip_str(const char*& p, const char* end, std::string_view& s) noexcept
{
    std::uint64_t n = 0;
    if (!read_len(p, end, n) || n > static_cast<std::uint64_t>(end - p))
        return false;
    s = std::string_view(p, static_cast<std::size_t>(n));
    p += n;
    return true;
}

// Reads the value at `at` and moves `at` past it; false (at unchanged) when
// the bytes end early or the type is unknown.
inline bool next(const char*& at, const char* end, item& out) noexcept
{
    const char* p = at;
    if (p == end)
        return false;
    out.head = static_cast<unsigned char>(*p++);
    if ((out.head & by_name) != 0) {
        if (!skip_str(p, end, out.name))
            return false;
    } else if (!read_len(p, end, out.index)) {
        return false;
    }
    const char* start = p;
    std::size_t fixed = 0;
    std::string_view s;
    switch (out.head & type_mask) {
    case 0: fixed = 1; break;
    case 1:
    case 2:
    case 5: fixed = 8; break;
    case 3:
    case 4: fixed = 16; break;
    case 6:
    case 7:
        if (!skip_str(p, end, s))
            return false;
        break;
    case 8: {
        std::uint64_t n = 0;
        if (!read_len(p, end, n))
            return false;
        for (std::uint64_t k = 0; k < n; ++k)
            if (!skip_str(p, end, s))
                return false;
        break;
    }
    default: return false;
    }
    if (fixed != 0) {
        if (static_cast<std::size_t>(end - p) < fixed)
            return false;
        p += fixed;
    }
    out.payload = std::string_view(start, static_cast<std::size_t>(p - start));
    at = p;
    return true;
}

// Writes a length at `p` (room for 9 bytes) and returns the end.
inline char* put_len(char* p, std::uint64_t n) noexcept
{
    if (n < 255) {
        *p++ = static_cast<char>(n);
        return p;
    }
    *p++ = static_cast<char>(255);
    std::memcpy(p, &n, 8);
    return p + 8;
}

inline void put_len(std::string& out, std::uint64_t n)
{
    char b[9];
    out.append(b, static_cast<std::size_t>(put_len(b, n) - b));
}
// Appends one value under `name`.
void put(std::string& out, std::string_view name, const model::value& v);
// The value of a payload (as `next` gives it) of variant index `type`.
model::value value_of(unsigned char type, std::string_view payload);

}  // namespace packed

// A span's values in one buffer (inline up to 40 bytes: no allocation for a
// few small fields), names included: 100k restored spans are 100k entries,
// not 100k vectors of strings and variants. Assign a model::field_values,
// iterate to read (the pairs are built on the fly), to_fields() for a copy.
//
//   ps.values = model::field_values{{"user", std::string("ann")}};
//   for (const auto& [name, v] : ps.values) ...
class packed_values {
public:
    static constexpr std::size_t inline_bytes = 40;

    packed_values() noexcept {}
    packed_values(const model::field_values& fv) { assign(fv); }  // NOLINT: a drop-in for field_values
    packed_values(std::initializer_list<model::field_values::value_type> fv) { assign(fv); }
    packed_values(const packed_values& o) { assign_packed(o.bytes(), o.count_); }
    packed_values(packed_values&& o) noexcept { take(o); }
    packed_values& operator=(const packed_values& o)
    {
        if (this != &o)
            assign_packed(o.bytes(), o.count_);
        return *this;
    }
    packed_values& operator=(packed_values&& o) noexcept
    {
        if (this != &o) {
            release();
            take(o);
        }
        return *this;
    }
    ~packed_values() { release(); }

    std::size_t size() const noexcept { return count_; }
    bool empty() const noexcept { return count_ == 0; }
    void clear() noexcept
    {
        release();
        size_ = count_ = 0;
    }
    void assign(std::span<const std::pair<std::string, model::value>> fv);
    void emplace_back(std::string_view name, const model::value& v);
    model::field_values to_fields() const;

    // The packed bytes (see namespace packed), and their replacement by
    // bytes already in that form with `count` values, all by name (not
    // checked: the caller produced them).
    std::string_view bytes() const noexcept { return {data(), size_}; }
    void assign_packed(std::string_view b, std::size_t count);

    // Reads the values in order as (name, value) pairs.
    class iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = std::pair<std::string_view, model::value>;
        using difference_type = std::ptrdiff_t;
        using pointer = void;
        using reference = value_type;
        iterator() = default;
        iterator(const char* p, const char* end) noexcept : p_(p), end_(end) {}
        value_type operator*() const;
        iterator& operator++() noexcept;
        void operator++(int) noexcept { ++*this; }
        bool operator==(const iterator& o) const noexcept { return p_ == o.p_; }

    private:
        const char* p_ = nullptr;
        const char* end_ = nullptr;
    };
    iterator begin() const noexcept { return {data(), data() + size_}; }
    iterator end() const noexcept { return {data() + size_, data() + size_}; }

    // Bitwise doubles (NaN == NaN), as model::same_value.
    bool operator==(const packed_values& o) const noexcept { return count_ == o.count_ && bytes() == o.bytes(); }
    bool operator==(const model::field_values& fv) const;

private:
    char* data() noexcept { return size_ > inline_bytes ? heap_ : inline_; }
    const char* data() const noexcept { return size_ > inline_bytes ? heap_ : inline_; }
    void release() noexcept
    {
        if (size_ > inline_bytes)
            delete[] heap_;
    }
    void take(packed_values& o) noexcept;
    union {
        char inline_[inline_bytes];
        char* heap_;
    };
    std::uint32_t size_ = 0;
    std::uint32_t count_ = 0;
};

// A short list of span ids in 8 bytes (one pointer; empty = no allocation),
// for persisted_span::follows_from: nearly always empty, and a std::vector's
// 24 bytes there made every persisted span 16 bytes bigger (100k spans are
// two file-sized vectors in a restore). Reads like a vector of ids.
//
//   ps.follows_from = {4, 9};
//   for (std::uint64_t cause : ps.follows_from) ...
class span_ids {
public:
    span_ids() noexcept = default;
    span_ids(std::initializer_list<std::uint64_t> ids) { assign(std::span(ids.begin(), ids.size())); }
    span_ids(const span_ids& o) { assign(o.view()); }
    span_ids(span_ids&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    span_ids& operator=(const span_ids& o)
    {
        if (this != &o)
            assign(o.view());
        return *this;
    }
    span_ids& operator=(span_ids&& o) noexcept
    {
        if (this != &o) {
            delete[] p_;
            p_ = std::exchange(o.p_, nullptr);
        }
        return *this;
    }
    span_ids& operator=(std::span<const std::uint64_t> ids)
    {
        assign(ids);
        return *this;
    }
    ~span_ids() { delete[] p_; }

    std::size_t size() const noexcept { return p_ == nullptr ? 0 : static_cast<std::size_t>(p_[0]); }
    bool empty() const noexcept { return size() == 0; }
    const std::uint64_t* begin() const noexcept { return p_ == nullptr ? nullptr : p_ + header; }
    const std::uint64_t* end() const noexcept { return begin() + size(); }
    std::uint64_t* data() noexcept { return p_ == nullptr ? nullptr : p_ + header; }
    std::uint64_t operator[](std::size_t i) const noexcept { return p_[i + header]; }
    std::span<const std::uint64_t> view() const noexcept { return {begin(), size()}; }
    std::vector<std::uint64_t> to_vector() const { return {begin(), end()}; }

    void clear() noexcept
    {
        delete[] p_;
        p_ = nullptr;
    }
    // `n` ids, zero unless kept from before; data() then writes them.
    void resize(std::size_t n)
    {
        if (n <= capacity()) {
            if (p_ != nullptr) {
                std::fill(data() + std::min(n, size()), data() + n, std::uint64_t{0});
                p_[0] = n;
            }
            return;
        }
        grow(n, n);
    }
    // Doubles its room when full, so a long list read id by id (a state
    // file's JSON form) stays linear.
    void push_back(std::uint64_t id)
    {
        const std::size_t n = size();
        if (n == capacity())
            grow(n, n < 2 ? 2 : 2 * n);
        p_[header + n] = id;
        p_[0] = n + 1;
    }
    void assign(std::span<const std::uint64_t> ids)
    {
        span_ids next;
        next.resize(ids.size());
        std::copy(ids.begin(), ids.end(), next.data());
        *this = std::move(next);
    }

    friend bool operator==(const span_ids& a, const span_ids& b) noexcept
    {
        return std::ranges::equal(a.view(), b.view());
    }
    friend bool operator==(const span_ids& a, std::span<const std::uint64_t> b) noexcept
    {
        return std::ranges::equal(a.view(), b);
    }

private:
    static constexpr std::size_t header = 2;  // count, capacity
    std::size_t capacity() const noexcept { return p_ == nullptr ? 0 : static_cast<std::size_t>(p_[1]); }
    // Moves to a block of `room` ids holding the first min(n, size()) ids,
    // zeros after them up to n.
    void grow(std::size_t n, std::size_t room)
    {
        auto* next = new std::uint64_t[header + room]();
        next[0] = n;
        next[1] = room;
        std::copy_n(begin(), std::min(n, size()), next + header);
        delete[] p_;
        p_ = next;
    }
    std::uint64_t* p_ = nullptr;  // [count, capacity, id...], or null when never grown
};

// One live span as persisted: everything needed to continue it after a reload
// or a restart.
struct persisted_span {
    std::uint64_t id = 0;
    std::uint64_t callsite_id = 0;
    std::uint64_t parent_id = 0;  // the plugin's span id of the parent, 0 = none
    packed_values values;         // creation values + records, first-recorded order
    std::uint64_t ref_count = 1;
    clock::time_point start;
    span_ids follows_from;        // causes by span id, kept even once closed

    // Values compare bitwise (doubles too: NaN == NaN), as model::same_value.
    bool operator==(const persisted_span& o) const noexcept = default;
};

struct persisted_spans {
    std::vector<persisted_span> spans;  // sorted by id
    std::uint64_t next_id = 1;          // the next host-assigned span id

    bool operator==(const persisted_spans& o) const noexcept = default;
};

using persisted_metadata = std::vector<model::callsite>;  // sorted by id

// What a receiver starts from.
struct receiver_state {
    persisted_metadata metadata;
    persisted_spans spans;
};

}  // namespace tt::state
