#include <tracetunnel/host/trace_context.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>

namespace tt::host {

namespace {

// The innermost scope's parent on this thread; empty outside any scope and
// inside a scope whose text was refused (a new trace starts there, as the
// specification asks for an invalid traceparent).
struct thread_remote {
    std::optional<trace_parent> parent;
};
thread_local thread_remote current_remote;

std::atomic<std::uint64_t> invalid_count{0};

int hex_value(char c) noexcept
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;  // uppercase too: the specification allows lowercase only
}

// Reads `out.size()` bytes of lowercase hex from `text`; false on any other character.
bool read_hex(std::string_view text, std::span<std::uint8_t> out) noexcept
{
    if (text.size() != out.size() * 2)
        return false;
    for (std::size_t i = 0; i < out.size(); ++i) {
        const int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return true;
}

template <std::size_t N>
bool all_zero(const std::array<std::uint8_t, N>& a) noexcept
{
    return std::all_of(a.begin(), a.end(), [](std::uint8_t b) { return b == 0; });
}

}  // namespace

std::variant<trace_parent, traceparent_error> parse_traceparent(std::string_view text)
{
    auto fail = [&](std::string_view why) {
        return traceparent_error{fmt::format("invalid traceparent \"{}\": {}", text.substr(0, 128), why)};
    };
    constexpr std::size_t length_v00 = 55;  // 2 + 1 + 32 + 1 + 16 + 1 + 2
    if (text.size() < length_v00)
        return fail(fmt::format("{} characters, a traceparent has 55 (version-traceid-parentid-flags)", text.size()));
    std::uint8_t version = 0;
    if (!read_hex(text.substr(0, 2), std::span<std::uint8_t>(&version, 1)))
        return fail("the version is not 2 lowercase hex digits");
    if (version == 0xff)
        return fail("version ff is forbidden");
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        return fail("expected '-' after the version, the trace id and the parent id");
    if (version == 0 && text.size() != length_v00)
        return fail("version 00 is exactly 55 characters");
    // A later version may append fields; what follows the flags must start with '-'.
    if (text.size() > length_v00 && text[length_v00] != '-')
        return fail("unexpected characters after the flags");
    trace_parent p;
    if (!read_hex(text.substr(3, 32), p.trace))
        return fail("the trace id is not 32 lowercase hex digits");
    if (!read_hex(text.substr(36, 16), p.span))
        return fail("the parent id is not 16 lowercase hex digits");
    if (!read_hex(text.substr(53, 2), std::span<std::uint8_t>(&p.flags, 1)))
        return fail("the flags are not 2 lowercase hex digits");
    if (all_zero(p.trace))
        return fail("the trace id is all zeros");
    if (all_zero(p.span))
        return fail("the parent id is all zeros");
    return p;
}

std::string to_hex(std::span<const std::uint8_t> bytes)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (std::uint8_t b : bytes) {
        out += digits[b >> 4];
        out += digits[b & 0x0f];
    }
    return out;
}

std::string format_traceparent(const trace_parent& p)
{
    return fmt::format("00-{}-{}-{}", to_hex(p.trace), to_hex(p.span),
                       to_hex(std::span<const std::uint8_t>(&p.flags, 1)));
}

remote_parent_scope::remote_parent_scope(std::string_view traceparent) noexcept
    : previous_(current_remote.parent)
{
    try {
        auto parsed = parse_traceparent(traceparent);
        if (auto* p = std::get_if<trace_parent>(&parsed)) {
            current_remote.parent = *p;
            valid_ = true;
            return;
        }
    } catch (...) {
    }
    current_remote.parent.reset();
    invalid_count.fetch_add(1, std::memory_order_relaxed);
}

remote_parent_scope::remote_parent_scope(const trace_parent& parent) noexcept : previous_(current_remote.parent)
{
    if (all_zero(parent.trace) || all_zero(parent.span)) {
        current_remote.parent.reset();
        invalid_count.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    current_remote.parent = parent;
    valid_ = true;
}

remote_parent_scope::~remote_parent_scope()
{
    current_remote.parent = previous_;
}

std::optional<trace_parent> current_remote_parent() noexcept
{
    return current_remote.parent;
}

std::uint64_t invalid_traceparents() noexcept
{
    return invalid_count.load(std::memory_order_relaxed);
}

}  // namespace tt::host
