// The wire between tt-host and tt-plugin-child (isolation.hpp): frames on a
// SOCK_STREAM socketpair, both ends on the same machine, so integers travel
// in native byte order. Private to host/src/isolation*.cpp.
//
// frame   = u32 length (of type + payload) | u8 type | payload
// string  = u8 flag (1: NULL pointer with a length) | u64 length | bytes (flag 0 only)
//
// child -> parent: hello, emit (no answer), ask (u64 id + event; answered),
//                  reply (u64 sequence + result of a command)
// parent -> child: answer (u64 id + u64 emit answer), command (u64 sequence
//                  + u8 command + arguments)
#pragma once

#include <tracetunnel/abi.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace tt::host::wire {

enum class frame : std::uint8_t { hello = 1, emit = 2, ask = 3, reply = 4, answer = 5, command = 6 };
enum class command : std::uint8_t {
    start = 1,
    stop = 2,
    save_state = 3,
    restore_state = 4,
    interest_changed = 5,
    call = 6,
    quit = 7,
};

// A frame larger than this is a protocol violation (a plugin's event beyond
// it is refused in the child, as quota_exceeded).
inline constexpr std::uint32_t max_frame = 64u << 20;
// Per-event bounds checked in the child before reading plugin memory and
// again in the parent before allocating.
inline constexpr std::uint32_t max_values = 1024;
inline constexpr std::uint32_t max_fields = 4096;
inline constexpr std::uint64_t max_error_chain = 1024;

class writer {
public:
    std::vector<std::uint8_t> buf;
    template <class T>
    void put(T v)
    {
        const auto at = buf.size();
        buf.resize(at + sizeof v);
        std::memcpy(buf.data() + at, &v, sizeof v);
    }
    void u8(std::uint8_t v) { put(v); }
    void u32(std::uint32_t v) { put(v); }
    void u64(std::uint64_t v) { put(v); }
    void bytes(const void* p, std::size_t n)
    {
        const auto* b = static_cast<const std::uint8_t*>(p);
        buf.insert(buf.end(), b, b + n);
    }
    void str(std::string_view s)
    {
        u8(0);
        u64(s.size());
        bytes(s.data(), s.size());
    }
    // An ABI string: a NULL pointer with a length travels as such (the
    // receiver refuses it), never dereferenced.
    void abi_str(const tt_str& s)
    {
        if (s.ptr == nullptr && s.len != 0) {
            u8(1);
            u64(s.len);
            return;
        }
        u8(0);
        u64(s.len);
        if (s.len != 0)
            bytes(s.ptr, static_cast<std::size_t>(s.len));
    }
};

// Reads a payload; any overrun clears ok() and yields zeros.
class reader {
public:
    reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
    bool ok() const noexcept { return ok_; }
    bool done() const noexcept { return ok_ && n_ == 0; }
    std::size_t left() const noexcept { return n_; }
    template <class T>
    T get()
    {
        T v{};
        if (!ok_ || n_ < sizeof v) {
            ok_ = false;
            return v;
        }
        std::memcpy(&v, p_, sizeof v);
        p_ += sizeof v;
        n_ -= sizeof v;
        return v;
    }
    std::uint8_t u8() { return get<std::uint8_t>(); }
    std::uint32_t u32() { return get<std::uint32_t>(); }
    std::uint64_t u64() { return get<std::uint64_t>(); }
    const std::uint8_t* take(std::uint64_t n)
    {
        if (!ok_ || n > n_) {
            ok_ = false;
            return nullptr;
        }
        const auto* at = p_;
        p_ += n;
        n_ -= static_cast<std::size_t>(n);
        return at;
    }
    // Points into the payload; valid while it lives.
    tt_str abi_str()
    {
        const std::uint8_t flag = u8();
        const std::uint64_t len = u64();
        if (!ok_ || flag > 1) {
            ok_ = false;
            return {};
        }
        if (flag == 1)
            return tt_str{nullptr, len};
        const auto* at = take(len);
        return tt_str{len == 0 ? "" : reinterpret_cast<const char*>(at), ok_ ? len : 0};
    }
    std::string str()
    {
        const tt_str s = abi_str();
        return s.ptr == nullptr ? std::string() : std::string(s.ptr, static_cast<std::size_t>(s.len));
    }

private:
    const std::uint8_t* p_;
    std::size_t n_;
    bool ok_ = true;
};

// Writes one whole frame (EINTR and short writes handled; no SIGPIPE).
bool write_frame(int fd, frame type, const std::uint8_t* payload, std::size_t len) noexcept;
inline bool write_frame(int fd, frame type, const writer& w) noexcept
{
    return write_frame(fd, type, w.buf.data(), w.buf.size());
}

enum class read_status { ok, eof, error };
// Reads one frame. error: `why` says what (an I/O error or a bad length).
read_status read_frame(int fd, frame& type, std::vector<std::uint8_t>& payload, std::string& why);

// Encodes one event of the plugin, reading only what its kind reads. False
// (with the TT_STATUS_* code) when the event must be refused in the child
// (beyond the wire's bounds).
bool encode_event(const tt_event& ev, writer& w, std::uint32_t& refusal);

// An event decoded from a frame; pointers into the payload and into this
// object (do not copy it).
struct decoded_event {
    tt_event ev{};
    tt_callsite site{};
    std::vector<tt_str> field_names;
    std::vector<tt_field_value> values;
    std::vector<std::vector<tt_str>> chains;
};
// Empty string: decoded; else what was wrong.
std::string decode_event(reader& r, decoded_event& out);

}  // namespace tt::host::wire
