#include "isolation_protocol.hpp"

#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <unistd.h>

namespace tt::host::wire {

namespace {

bool send_all(int fd, const std::uint8_t* p, std::size_t n) noexcept
{
    while (n > 0) {
        const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

// 1: all read, 0: end of stream before the first byte, -1: error or a
// stream that ended inside the block.
int read_all(int fd, std::uint8_t* p, std::size_t n) noexcept
{
    std::size_t got = 0;
    while (got < n) {
        const ssize_t r = ::read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return got == 0 ? 0 : -1;
        got += static_cast<std::size_t>(r);
    }
    return 1;
}

bool reads_values(std::uint32_t kind)
{
    return kind == TT_EVENT_NEW_SPAN || kind == TT_EVENT_NEW_EVENT || kind == TT_EVENT_VALUES_RECORDED;
}

}  // namespace

bool write_frame(int fd, frame type, const std::uint8_t* payload, std::size_t len) noexcept
{
    if (len + 1 > max_frame)
        return false;
    std::uint8_t head[5];
    const auto n = static_cast<std::uint32_t>(len + 1);
    std::memcpy(head, &n, 4);
    head[4] = static_cast<std::uint8_t>(type);
    // One buffer, one send: frames from several threads never interleave
    // as long as the caller holds its write lock.
    std::vector<std::uint8_t> all;
    try {
        all.reserve(len + 5);
        all.insert(all.end(), head, head + 5);
        all.insert(all.end(), payload, payload + len);
    } catch (...) {
        return false;
    }
    return send_all(fd, all.data(), all.size());
}

read_status read_frame(int fd, frame& type, std::vector<std::uint8_t>& payload, std::string& why)
{
    std::uint8_t head[5];
    const int h = read_all(fd, head, 5);
    if (h == 0)
        return read_status::eof;
    if (h < 0) {
        why = errno != 0 ? std::string("read failed: ") + std::strerror(errno) : "the stream ended inside a frame";
        return read_status::error;
    }
    std::uint32_t n = 0;
    std::memcpy(&n, head, 4);
    if (n == 0 || n > max_frame) {
        why = "frame length " + std::to_string(n) + " out of range";
        return read_status::error;
    }
    type = static_cast<frame>(head[4]);
    payload.resize(n - 1);
    if (n > 1 && read_all(fd, payload.data(), n - 1) != 1) {
        why = "the stream ended inside a frame";
        return read_status::error;
    }
    return read_status::ok;
}

bool encode_event(const tt_event& ev, writer& w, std::uint32_t& refusal)
{
    w.u32(ev.struct_size);
    if (ev.struct_size < sizeof(tt_event))
        return true;  // the receiver refuses it; nothing more is read
    w.u32(ev.kind);
    w.u64(ev.span_id);
    w.u64(ev.related_span_id);
    w.u64(ev.callsite_id);
    w.u32(ev.parent);
    w.u32(ev.value_count);
    if (ev.kind == TT_EVENT_NEW_CALLSITE) {
        if (ev.callsite == nullptr) {
            w.u8(0);
            return true;
        }
        w.u8(1);
        const tt_callsite& cs = *ev.callsite;
        w.u32(cs.struct_size);
        if (cs.struct_size < sizeof(tt_callsite))
            return true;
        if (cs.field_count > max_fields) {
            refusal = TT_STATUS_QUOTA_EXCEEDED;
            return false;
        }
        w.u32(cs.kind);
        w.u64(cs.id);
        w.u32(cs.level);
        w.u32(cs.line);
        w.abi_str(cs.name);
        w.abi_str(cs.target);
        w.abi_str(cs.module_path);
        w.abi_str(cs.file);
        w.u32(cs.field_count);
        w.u32(cs.reserved0);
        const bool null_names = cs.field_names == nullptr && cs.field_count > 0;
        w.u8(null_names ? 1 : 0);
        if (!null_names)
            for (std::uint32_t i = 0; i < cs.field_count; ++i)
                w.abi_str(cs.field_names[i]);
    } else if (reads_values(ev.kind)) {
        const bool null_values = ev.values == nullptr && ev.value_count > 0;
        if (!null_values && ev.value_count > max_values) {
            refusal = TT_STATUS_TOO_MANY_VALUES;
            return false;
        }
        w.u8(null_values ? 1 : 0);
        if (!null_values)
            for (std::uint32_t i = 0; i < ev.value_count; ++i) {
                const tt_field_value& v = ev.values[i];
                w.u32(v.field);
                w.u32(v.kind);
                switch (v.kind) {
                case TT_VALUE_BOOL: w.u8(v.as.boolean); break;
                case TT_VALUE_I64:
                case TT_VALUE_U64: w.u64(v.as.u64); break;
                case TT_VALUE_I128:
                case TT_VALUE_U128:
                    w.u64(v.as.u128.lo);
                    w.u64(v.as.u128.hi);
                    break;
                case TT_VALUE_F64: w.put(v.as.f64); break;
                case TT_VALUE_STR:
                case TT_VALUE_DEBUG: w.abi_str(v.as.str); break;
                case TT_VALUE_ERROR: {
                    const tt_error_chain& c = v.as.error;
                    if (c.len > max_error_chain) {
                        refusal = TT_STATUS_TOO_MANY_VALUES;
                        return false;
                    }
                    const bool null_chain = c.chain == nullptr && c.len > 0;
                    w.u8(null_chain ? 1 : 0);
                    w.u64(c.len);
                    if (!null_chain)
                        for (std::uint64_t k = 0; k < c.len; ++k)
                            w.abi_str(c.chain[k]);
                    break;
                }
                default: break;  // unknown kind: no payload, the receiver refuses it
                }
                if (w.buf.size() > max_frame - 64) {
                    refusal = TT_STATUS_QUOTA_EXCEEDED;
                    return false;
                }
            }
    }
    if (w.buf.size() > max_frame - 64) {
        refusal = TT_STATUS_QUOTA_EXCEEDED;
        return false;
    }
    return true;
}

std::string decode_event(reader& r, decoded_event& out)
{
    tt_event& ev = out.ev;
    ev = tt_event{};
    ev.struct_size = r.u32();
    if (!r.ok())
        return "truncated event";
    if (ev.struct_size < sizeof(tt_event))
        return r.done() ? std::string() : "bytes after a short event";
    // The child sends the ABI 1.0 members; the receiver must not look for
    // more than this process's tt_event holds.
    ev.struct_size = sizeof(tt_event);
    ev.kind = r.u32();
    ev.span_id = r.u64();
    ev.related_span_id = r.u64();
    ev.callsite_id = r.u64();
    ev.parent = r.u32();
    ev.value_count = r.u32();
    if (!r.ok())
        return "truncated event";
    if (ev.kind == TT_EVENT_NEW_CALLSITE) {
        const std::uint8_t has = r.u8();
        if (has > 1)
            return "bad call-site flag";
        if (has == 1) {
            tt_callsite& cs = out.site;
            cs = tt_callsite{};
            cs.struct_size = r.u32();
            ev.callsite = &cs;
            if (cs.struct_size >= sizeof(tt_callsite)) {
                cs.struct_size = sizeof(tt_callsite);
                cs.kind = r.u32();
                cs.id = r.u64();
                cs.level = r.u32();
                cs.line = r.u32();
                cs.name = r.abi_str();
                cs.target = r.abi_str();
                cs.module_path = r.abi_str();
                cs.file = r.abi_str();
                cs.field_count = r.u32();
                cs.reserved0 = r.u32();
                const std::uint8_t null_names = r.u8();
                if (!r.ok() || null_names > 1 || cs.field_count > max_fields)
                    return "bad call site";
                if (null_names == 0) {
                    out.field_names.resize(cs.field_count);
                    for (auto& n : out.field_names)
                        n = r.abi_str();
                    cs.field_names = out.field_names.data();
                }
            }
        }
    } else if (reads_values(ev.kind)) {
        const std::uint8_t null_values = r.u8();
        if (!r.ok() || null_values > 1)
            return "bad values flag";
        if (null_values == 0) {
            if (ev.value_count > max_values)
                return "too many values on the wire";
            out.values.assign(ev.value_count, tt_field_value{});
            out.chains.clear();
            out.chains.reserve(ev.value_count);
            for (auto& v : out.values) {
                v.field = r.u32();
                v.kind = r.u32();
                switch (v.kind) {
                case TT_VALUE_BOOL: v.as.boolean = r.u8(); break;
                case TT_VALUE_I64:
                case TT_VALUE_U64: v.as.u64 = r.u64(); break;
                case TT_VALUE_I128:
                case TT_VALUE_U128:
                    v.as.u128.lo = r.u64();
                    v.as.u128.hi = r.u64();
                    break;
                case TT_VALUE_F64: v.as.f64 = r.get<double>(); break;
                case TT_VALUE_STR:
                case TT_VALUE_DEBUG: v.as.str = r.abi_str(); break;
                case TT_VALUE_ERROR: {
                    const std::uint8_t null_chain = r.u8();
                    const std::uint64_t len = r.u64();
                    if (!r.ok() || null_chain > 1 || len > max_error_chain)
                        return "bad error chain";
                    v.as.error.len = len;
                    if (null_chain == 0) {
                        auto& chain = out.chains.emplace_back(static_cast<std::size_t>(len));
                        for (auto& s : chain)
                            s = r.abi_str();
                        v.as.error.chain = chain.data();
                    }
                    break;
                }
                default: break;
                }
                if (!r.ok())
                    return "truncated value";
            }
            ev.values = out.values.data();
        }
    }
    if (!r.ok())
        return "truncated event";
    if (!r.done())
        return "bytes after the event";
    return {};
}

}  // namespace tt::host::wire
