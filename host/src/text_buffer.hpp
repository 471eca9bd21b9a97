// Internal: the output buffer and number formatting shared by the text layers
// (console_layer.cpp, json_layer.cpp).
//
// A line is a few dozen small appends. std::string::append is an out-of-line
// call with its own capacity check per piece; here a piece is one inline
// compare and a memcpy, and the buffer keeps its capacity, so a warm layer
// formats a line without allocating.
#pragma once

#include <tracetunnel/host/pipeline.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tt::host::detail {

class text_buffer {
public:
    void clear() noexcept { size_ = 0; }
    std::string_view view() const noexcept { return {data_.get(), size_}; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    char back() const noexcept { return data_[size_ - 1]; }
    void pop_back() noexcept { --size_; }

    // Room for `n` more characters; write them at the pointer, then commit(n).
    [[gnu::always_inline]] char* reserve(std::size_t n)
    {
        if (cap_ - size_ < n)
            grow(n);
        return data_.get() + size_;
    }
    void commit(std::size_t n) noexcept { size_ += n; }

    [[gnu::always_inline]] void put(std::string_view s)
    {
        char* p = reserve(s.size());
        copy(p, s.data(), s.size());
        size_ += s.size();
    }
    [[gnu::always_inline]] void put(char c)
    {
        *reserve(1) = c;
        ++size_;
    }
    // `open`, `s`, `close` with one capacity check: a quoted string.
    [[gnu::always_inline]] void put_between(char open, std::string_view s, char close)
    {
        char* p = reserve(s.size() + 2);
        p[0] = open;
        copy(p + 1, s.data(), s.size());
        p[s.size() + 1] = close;
        size_ += s.size() + 2;
    }
    template <class Int>
    void put_int(Int v)
    {
        const fmt::format_int d(v);
        put(std::string_view(d.data(), d.size()));
    }

    // Most pieces are a few bytes: two overlapping fixed-size copies stay
    // inline where a call to memcpy would cost more than the copy.
    [[gnu::always_inline]] static void copy(char* to, const char* from, std::size_t n) noexcept
    {
        if (n >= 8 && n <= 16) {
            std::memcpy(to, from, 8);
            std::memcpy(to + n - 8, from + n - 8, 8);
        } else if (n >= 4 && n < 8) {
            std::memcpy(to, from, 4);
            std::memcpy(to + n - 4, from + n - 4, 4);
        } else if (n > 16) {
            std::memcpy(to, from, n);
        } else {
            for (std::size_t i = 0; i < n; ++i)
                to[i] = from[i];
        }
    }

private:
    [[gnu::noinline]] void grow(std::size_t n)
    {
        const std::size_t cap = std::max<std::size_t>({cap_ * 2, size_ + n, 512});
        auto bigger = std::make_unique<char[]>(cap);
        if (size_ != 0)
            std::memcpy(bigger.get(), data_.get(), size_);
        data_ = std::move(bigger);
        cap_ = cap;
    }

    std::unique_ptr<char[]> data_;
    std::size_t size_ = 0;
    std::size_t cap_ = 0;
};

// True when one of the 8 bytes of `w` is below 0x20 or equals `a`, `b` or
// `c` (exact as a yes/no; which byte is left to a byte loop). Lets the string
// escapers pass over plain text a word at a time.
constexpr bool word_has_special(std::uint64_t w, unsigned char a, unsigned char b, unsigned char c) noexcept
{
    constexpr std::uint64_t ones = 0x0101010101010101ull;
    constexpr std::uint64_t high = 0x8080808080808080ull;
    const std::uint64_t wa = w ^ (ones * a);
    const std::uint64_t wb = w ^ (ones * b);
    const std::uint64_t wc = w ^ (ones * c);
    return (((w - ones * 0x20) & ~w) | ((wa - ones) & ~wa) | ((wb - ones) & ~wb) | ((wc - ones) & ~wc)) & high;
}

// Whether `s` has a byte below 0x20 or equal to `a`, `b` or `c`: most
// strings (keys, names, messages) have none and are copied whole. Short
// strings take one check of a word built from overlapping loads.
inline bool has_special(std::string_view s, unsigned char a, unsigned char b, unsigned char c) noexcept
{
    const char* p = s.data();
    const std::size_t n = s.size();
    auto load8 = [](const char* q) {
        std::uint64_t w;
        std::memcpy(&w, q, 8);
        return w;
    };
    auto load4 = [](const char* q) {
        std::uint32_t w;
        std::memcpy(&w, q, 4);
        return std::uint64_t{w};
    };
#if defined(__SSE2__)
    // Sixteen bytes a test (x86-64 always has SSE2): a short string is one
    // test of a register built from two overlapping loads, never read past
    // its end.
    auto test = [&](__m128i x) {
        const __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
        const __m128i hit =
            _mm_or_si128(_mm_or_si128(control, _mm_cmpeq_epi8(x, _mm_set1_epi8(static_cast<char>(a)))),
                         _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(static_cast<char>(b))),
                                      _mm_cmpeq_epi8(x, _mm_set1_epi8(static_cast<char>(c)))));
        return _mm_movemask_epi8(hit) != 0;
    };
    if (n >= 16) {
        for (std::size_t i = 0; i + 16 <= n; i += 16)
            if (test(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i))))
                return true;
        return n % 16 != 0 && test(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + n - 16)));
    }
    constexpr std::uint64_t plain = 0x7878787878787878ull;  // 'x' in the unused bytes
    if (n >= 8)
        return test(_mm_set_epi64x(static_cast<long long>(load8(p + n - 8)), static_cast<long long>(load8(p))));
    if (n >= 4)
        return test(_mm_set_epi64x(static_cast<long long>(plain),
                                   static_cast<long long>(load4(p) | load4(p + n - 4) << 32)));
    if (n == 0)
        return false;
    const std::uint64_t w = 0x7878787878000000ull | std::uint64_t{static_cast<unsigned char>(p[0])} |
                            std::uint64_t{static_cast<unsigned char>(p[n / 2])} << 8 |
                            std::uint64_t{static_cast<unsigned char>(p[n - 1])} << 16;
    return test(_mm_set_epi64x(static_cast<long long>(plain), static_cast<long long>(w)));
#else
    if (n >= 8) {
        for (std::size_t i = 0; i + 8 <= n; i += 8)
            if (word_has_special(load8(p + i), a, b, c))
                return true;
        return n % 8 != 0 && word_has_special(load8(p + n - 8), a, b, c);
    }
    if (n >= 4)
        return word_has_special(load4(p) | load4(p + n - 4) << 32, a, b, c);
    if (n == 0)
        return false;
    // Three bytes cover a string of one to three; the rest is 'x', plain.
    const std::uint64_t w = 0x7878787878000000ull | std::uint64_t{static_cast<unsigned char>(p[0])} |
                            std::uint64_t{static_cast<unsigned char>(p[n / 2])} << 8 |
                            std::uint64_t{static_cast<unsigned char>(p[n - 1])} << 16;
    return word_has_special(w, a, b, c);
#endif
}

// "2026-11-23T12:00:00.123456Z" (console_layer.cpp; the date part cached per
// thread and second).
void append_time(text_buffer& out, clock::time_point t);

// The shortest decimal that reads back as the same double (finite `d`):
// digits d1 d2 ... dn with the decimal point after d1, times 10^exp10.
struct shortest_decimal {
    bool negative = false;
    char digits[20] = {};
    int count = 0;
    int exp10 = 0;
};

inline shortest_decimal shortest(double d) noexcept
{
    // fmt's Dragonbox (what fmt's own "{}" runs, exported by libfmt): the
    // shortest digits that round-trip, the nearest of those to `d`, ties to
    // even, as Ryu (Boost.JSON) also picks them. std::to_chars gives the same
    // digits at about three times the cost.
    const auto dec = fmt::detail::dragonbox::to_decimal(std::fabs(d));
    shortest_decimal s;
    s.negative = std::signbit(d);
    const fmt::format_int digits(dec.significand);
    s.count = static_cast<int>(digits.size());
    std::memcpy(s.digits, digits.data(), digits.size());
    s.exp10 = dec.exponent + s.count - 1;
    return s;
}

}  // namespace tt::host::detail
