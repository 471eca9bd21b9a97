#include <tracetunnel/host/receiver.hpp>

#include "receiver_tables.hpp"
#include "spin_lock.hpp"
#include "thread_stripe.hpp"

#include <tracetunnel/abi_convert.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>
#include <string_view>

namespace tt::host {

namespace {

// The per-event counters, on the calling thread's stripe (thread_stripe.hpp):
// a plain add, no locked instruction, for a thread that owns its stripe.
// Always inlined: GCC's inliner dropped it out of line once the callers grew.
template <class Stripes>
[[gnu::always_inline]] inline void count_event(Stripes& stripes, std::size_t kind_index) noexcept
{
    const unsigned i = detail::my_stripe();
    detail::bump(stripes[i].events[kind_index], i);
}
template <class Entry>
inline void count_hit(Entry& entry) noexcept
{
    const unsigned i = detail::my_stripe();
    detail::bump(entry.hits(i), i);
}
constexpr std::uint64_t top_bit = std::uint64_t{1} << 63;

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool valid_utf8(std::string_view s) noexcept
{
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    // Most text is ASCII: eight bytes at a time until a byte has its top bit.
    while (n - i >= 8) {
        std::uint64_t word;
        std::memcpy(&word, p + i, 8);
        if ((word & 0x8080808080808080ULL) != 0)
            break;
        i += 8;
    }
    if (i == n)
        return true;
    if (n >= 8 && n - i < 8) {  // an ASCII tail: the last eight bytes at once (overlapping)
        std::uint64_t word;
        std::memcpy(&word, p + n - 8, 8);
        if ((word & 0x8080808080808080ULL) == 0)
            return true;
    }
    while (i < n) {
        const unsigned c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c == 0xE0)
            len = 3, lo = 0xA0;
        else if (c == 0xED)
            len = 3, hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF)
            len = 3;
        else if (c == 0xF0)
            len = 4, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            len = 4;
        else if (c == 0xF4)
            len = 4, hi = 0x8F;
        else
            return false;
        if (n - i < len)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (std::size_t k = 2; k < len; ++k)
            if (p[i + k] < 0x80 || p[i + k] > 0xBF)
                return false;
        i += len;
    }
    return true;
}

bool readable(const tt_str& s) noexcept
{
    return s.len == 0 || s.ptr != nullptr;
}

std::string_view view(const tt_str& s) noexcept
{
    return s.len == 0 ? std::string_view() : std::string_view(s.ptr, s.len);
}

std::size_t callsite_bytes(const model::callsite& cs) noexcept
{
    std::size_t n = cs.name.size() + cs.target.size() + cs.module_path.size() + cs.file.size();
    for (const auto& f : cs.fields)
        n += f.size();
    return n;
}

std::size_t value_bytes(const model::value& v) noexcept
{
    if (const auto* s = std::get_if<std::string>(&v))
        return s->size();
    if (const auto* d = std::get_if<model::debug_text>(&v))
        return d->text.size();
    if (const auto* e = std::get_if<model::error_chain>(&v)) {
        std::size_t n = 0;
        for (const auto& c : e->chain)
            n += c.size();
        return n;
    }
    return 0;
}

std::size_t fields_bytes(const model::field_values& fv) noexcept
{
    std::size_t n = 0;
    for (const auto& [name, v] : fv)
        n += name.size() + value_bytes(v);
    return n;
}

bool value_utf8(const model::value& v) noexcept
{
    if (const auto* s = std::get_if<std::string>(&v))
        return valid_utf8(*s);
    if (const auto* d = std::get_if<model::debug_text>(&v))
        return valid_utf8(d->text);
    if (const auto* e = std::get_if<model::error_chain>(&v)) {
        for (const auto& c : e->chain)
            if (!valid_utf8(c))
                return false;
    }
    return true;
}

bool callsite_utf8(const model::callsite& cs) noexcept
{
    if (!valid_utf8(cs.name) || !valid_utf8(cs.target) || !valid_utf8(cs.module_path) || !valid_utf8(cs.file))
        return false;
    for (const auto& f : cs.fields)
        if (!valid_utf8(f))
            return false;
    return true;
}

// Merges `add` into `into`: a name already there is replaced in place, a new
// one appended. Returns the byte delta.
std::ptrdiff_t merge_values(model::field_values& into, const model::field_values& add)
{
    std::ptrdiff_t delta = 0;
    for (const auto& [name, v] : add) {
        auto it = std::find_if(into.begin(), into.end(), [&](const auto& p) { return p.first == name; });
        if (it != into.end()) {
            delta += static_cast<std::ptrdiff_t>(value_bytes(v)) - static_cast<std::ptrdiff_t>(value_bytes(it->second));
            it->second = v;
        } else {
            delta += static_cast<std::ptrdiff_t>(name.size() + value_bytes(v));
            into.emplace_back(name, v);
        }
    }
    return delta;
}

// Byte delta merge_values would produce, without changing anything.
std::ptrdiff_t merge_delta(const model::field_values& into, const model::field_values& add)
{
    std::ptrdiff_t delta = 0;
    std::vector<std::string_view> added;
    for (const auto& [name, v] : add) {
        auto it = std::find_if(into.begin(), into.end(), [&](const auto& p) { return p.first == name; });
        if (it != into.end()) {
            delta += static_cast<std::ptrdiff_t>(value_bytes(v)) - static_cast<std::ptrdiff_t>(value_bytes(it->second));
        } else if (std::find(added.begin(), added.end(), name) == added.end()) {
            added.push_back(name);
            delta += static_cast<std::ptrdiff_t>(name.size() + value_bytes(v));
        } else {
            delta += static_cast<std::ptrdiff_t>(value_bytes(v));  // upper bound; fine for a quota check
        }
    }
    return delta;
}

std::vector<field_ref> refs_of(const model::field_values& fv)
{
    std::vector<field_ref> out;
    out.reserve(fv.size());
    for (const auto& [name, v] : fv)
        out.push_back(field_ref{name, value_ref(v)});
    return out;
}

// A string or debug value's length and pointer: over the length quota (checked
// before a byte is read) or a NULL pointer with a length both go to the
// general path, which words the error.
inline bool plausible(const tt_str& s, std::size_t max_len) noexcept
{
    return s.len <= max_len && (s.len == 0 || s.ptr != nullptr);
}

// True when the n bytes at p (8 <= n <= 16) are all ASCII: two overlapping
// loads, without a call.
[[gnu::always_inline]] inline bool ascii_8_to_16(const char* p, std::size_t n) noexcept
{
    std::uint64_t a, b;
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + n - 8, 8);
    return ((a | b) & 0x8080808080808080ULL) == 0;
}

// True for a string of fewer than 8 bytes, all ASCII, checked the same way
// (8 to 16 bytes: checked_text's own branch). False says "not known", and
// valid_utf8 decides.
[[gnu::always_inline]] inline bool short_ascii(const tt_str& s) noexcept
{
    const std::size_t n = s.len;
    if (n < 4 || n >= 8)
        return n == 0;
    std::uint32_t a, b;
    std::memcpy(&a, s.ptr, 4);
    std::memcpy(&b, s.ptr + n - 4, 4);
    return ((a | b) & 0x80808080U) == 0;
}

// A plugin's text as the general path accepts it: plausible, valid UTF-8.
[[gnu::always_inline]] inline bool checked_text(const tt_str& s, std::size_t max_len) noexcept
{
    const std::size_t n = s.len;
    if (n - 8 <= 8) [[likely]] {  // 8 to 16 bytes, the commonest: not empty, so the pointer must be set
        if (n > max_len || s.ptr == nullptr)
            return false;
        return ascii_8_to_16(s.ptr, n) || valid_utf8(view(s));
    }
    return plausible(s, max_len) && (short_ascii(s) || valid_utf8(view(s)));
}

// The most values the fast paths take (a new span's views are made on the
// stack); more (a raised quota) take the general path.
constexpr std::uint32_t fast_event_values = 32;

// Room for a new span's field_refs on the stack, left uninitialised: each is
// constructed as it is filled.
union span_refs {
    span_refs() noexcept {}
    field_ref refs[fast_event_values];
};

// Checks a plugin's values for `site` as the general path does (field
// index, the string length and error chain quotas, pointers, UTF-8) and, if
// MakeViews, makes their views into `out`. False for anything unusual (an
// unknown kind, a bad index, length, pointer or UTF-8): the general path
// then decides and words the error. Nothing is copied: the views borrow the
// plugin's values, which live for the emit call. An event's values are only
// checked here: its field_refs make each view when a layer reads it.
// Inlined into both fast paths: the typical event's path must not pay a call.
template <bool MakeViews>
[[gnu::always_inline]] inline bool view_values(field_ref* out, const model::callsite& site, const tt_event& ev,
                                               const quotas& q) noexcept
{
    const std::size_t max_len = q.max_string_length;
    const std::uint32_t n = ev.value_count;
    const std::string* const names = site.fields.data();
    const std::size_t field_count = site.fields.size();
    const tt_field_value* const in = ev.values;
    for (std::uint32_t i = 0; i < n; ++i) {
        const tt_field_value& v = in[i];
        const std::uint32_t f = v.field;
        if (f >= field_count)
            return false;
        const std::uint32_t k = v.kind;
        if (k - TT_VALUE_STR <= TT_VALUE_DEBUG - TT_VALUE_STR) {  // a string or debug text
            if (!checked_text(v.as.str, max_len))
                return false;
        } else if (k - TT_VALUE_BOOL > TT_VALUE_F64 - TT_VALUE_BOOL) {  // not a scalar either
            if (k != TT_VALUE_ERROR)
                return false;  // an unknown kind
            const tt_error_chain& e = v.as.error;
            if (e.len == 0 || e.len > q.max_error_chain || e.chain == nullptr)
                return false;
            for (std::uint64_t j = 0; j < e.len; ++j)
                if (!checked_text(e.chain[j], max_len))
                    return false;
        }
        if constexpr (MakeViews)
            ::new (static_cast<void*>(out + i)) field_ref{names[f], value_ref::from_abi(v)};
    }
    return true;
}

// Packs a span's values: declared names by their index in the call site,
// others (no call site, an undeclared name) by name.
std::string_view pack(detail::blob_writer& w, const model::callsite* site, const model::field_values& values)
{
    w.clear();
    std::size_t at = 0;  // values usually come in the call site's field order: try there first
    for (const auto& [name, v] : values) {
        std::size_t i = 0;
        if (site != nullptr) {
            if (at < site->fields.size() && site->fields[at] == name)
                i = at;
            else
                while (i < site->fields.size() && site->fields[i] != name)
                    ++i;
        }
        at = i + 1;
        if (site != nullptr && i < site->fields.size())
            w.add(static_cast<std::uint32_t>(i), v);
        else
            w.add(name, v);
    }
    return w.bytes();
}

thread_local detail::blob_writer blob_scratch;

model::field_values unpack(const detail::span_rec& e, const model::callsite* site)
{
    model::field_values out;
    // Every value takes at least 3 bytes packed; most sets are a call site's few fields.
    out.reserve(site != nullptr ? std::min(site->fields.size(), std::size_t{e.values.bytes().size() / 3})
                                : e.values.bytes().size() / 3);
    detail::read_blob(e.values.bytes(), site != nullptr ? &site->fields : nullptr,
                      [&](std::string_view name, model::value&& v) { out.emplace_back(std::string(name), std::move(v)); });
    return out;
}

// The persisted form of a span's values: the entry's bytes with each field
// index replaced by its name (an index beyond the call site: an empty name,
// as unpack). No model::value is built.
void to_persisted(const detail::span_rec& e, const model::callsite* site, std::string& scratch,
                  state::packed_values& out)
{
    namespace pk = state::packed;
    scratch.clear();
    std::size_t n = 0;
    const std::string_view b = e.values.bytes();
    const std::vector<std::string>* fields = site != nullptr ? &site->fields : nullptr;
    pk::item it;
    std::size_t at = 0;  // written into scratch, which only grows (no per-byte bookkeeping)
    for (const char* p = b.data(); pk::next(p, b.data() + b.size(), it); ++n) {
        std::string_view name = it.name;
        if ((it.head & pk::by_name) == 0)
            name = fields != nullptr && it.index < fields->size() ? std::string_view((*fields)[it.index]) : "";
        const std::size_t need = at + 10 + name.size() + it.payload.size();
        if (scratch.size() < need)
            scratch.resize(need * 2);
        char* w = scratch.data() + at;
        *w++ = static_cast<char>((it.head & pk::type_mask) | pk::by_name);
        w = pk::put_len(w, name.size());
        std::memcpy(w, name.data(), name.size());
        w += name.size();
        std::memcpy(w, it.payload.data(), it.payload.size());
        at = static_cast<std::size_t>(w - scratch.data()) + it.payload.size();
    }
    out.assign_packed(std::string_view(scratch.data(), at), n);
}

// The other way (a restored span): declared names become their index in the
// call site, others stay names. `bytes` gets the span-quota size (names +
// string bytes, as fields_bytes).
std::string_view from_persisted(std::string& scratch, const model::callsite* site, const state::packed_values& values,
                                std::size_t& bytes)
{
    namespace pk = state::packed;
    bytes = 0;
    std::size_t at = 0;  // values usually come in the call site's field order: try there first
    std::size_t len = 0;  // written into scratch, which only grows
    const std::string_view b = values.bytes();
    pk::item it;
    for (const char* p = b.data(); pk::next(p, b.data() + b.size(), it);) {
        std::size_t i = 0;
        if (site != nullptr) {
            if (at < site->fields.size() && site->fields[at] == it.name)
                i = at;
            else
                while (i < site->fields.size() && site->fields[i] != it.name)
                    ++i;
        }
        at = i + 1;
        const unsigned char type = it.head & pk::type_mask;
        const std::size_t need = len + 10 + it.name.size() + it.payload.size();
        if (scratch.size() < need)
            scratch.resize(need * 2);
        char* w = scratch.data() + len;
        if (site != nullptr && i < site->fields.size()) {
            *w++ = static_cast<char>(type);
            w = pk::put_len(w, i);
        } else {
            *w++ = static_cast<char>(type | pk::by_name);
            w = pk::put_len(w, it.name.size());
            std::memcpy(w, it.name.data(), it.name.size());
            w += it.name.size();
        }
        std::memcpy(w, it.payload.data(), it.payload.size());
        len = static_cast<std::size_t>(w - scratch.data()) + it.payload.size();
        bytes += it.name.size();
        if (type >= 6) {  // strings, debug text, error chains: their bytes without the lengths
            const char* q = it.payload.data();
            const char* end = q + it.payload.size();
            const std::uint64_t count = type == 8 ? pk::take_len(q) : 1;
            for (std::uint64_t k = 0; k < count && q < end; ++k) {
                const std::uint64_t m = pk::take_len(q);
                bytes += m;
                q += m;
            }
        }
    }
    return std::string_view(scratch.data(), len);
}

thread_local std::string persist_scratch;

// A span's string bytes are kept in 32 bits (span_rec::bytes or span_table::big).
constexpr std::size_t max_span_bytes = 0xFFFFFFFFu;
// So is its handle count (span_rec::ref_count).
constexpr std::uint32_t max_ref_count = 0xFFFFFFFFu;

std::string id_text(std::uint64_t id)
{
    return std::to_string(id);
}

// The first length in a value that the host must not follow, or "".
std::string value_over_limit(const tt_field_value& v, const quotas& q)
{
    auto too_long = [&](const tt_str& str) {
        return str.len > q.max_string_length ? std::to_string(str.len) + "-byte string in value #" +
                                                   std::to_string(v.field) + " (at most " +
                                                   std::to_string(q.max_string_length) + ")"
                                             : std::string();
    };
    if (v.kind == TT_VALUE_STR || v.kind == TT_VALUE_DEBUG)
        return too_long(v.as.str);
    if (v.kind == TT_VALUE_ERROR) {
        if (v.as.error.len > q.max_error_chain)
            return "error chain of " + std::to_string(v.as.error.len) + " entries (at most " +
                   std::to_string(q.max_error_chain) + ")";
        if (v.as.error.chain != nullptr)
            for (std::uint64_t i = 0; i < v.as.error.len; ++i)
                if (auto why = too_long(v.as.error.chain[i]); !why.empty())
                    return why;
    }
    return {};
}

}  // namespace

// ---------------------------------------------------------------------------
// errors

std::string_view to_string(receive_errc e) noexcept
{
    switch (e) {
    case receive_errc::malformed: return "malformed";
    case receive_errc::unknown_event_kind: return "unknown_event_kind";
    case receive_errc::unknown_callsite: return "unknown_callsite";
    case receive_errc::wrong_callsite_kind: return "wrong_callsite_kind";
    case receive_errc::unknown_span: return "unknown_span";
    case receive_errc::callsite_conflict: return "callsite_conflict";
    case receive_errc::too_many_values: return "too_many_values";
    case receive_errc::unknown_field: return "unknown_field";
    case receive_errc::invalid_utf8: return "invalid_utf8";
    case receive_errc::quota_exceeded: return "quota_exceeded";
    case receive_errc::wrong_thread: return "wrong_thread";
    }
    return "unknown";
}

std::uint32_t status_of(receive_errc e) noexcept
{
    switch (e) {
    case receive_errc::malformed:
    case receive_errc::unknown_event_kind:
    case receive_errc::wrong_callsite_kind: return TT_STATUS_BAD_EVENT;
    case receive_errc::unknown_callsite: return TT_STATUS_UNKNOWN_CALLSITE;
    case receive_errc::unknown_span: return TT_STATUS_UNKNOWN_SPAN;
    case receive_errc::callsite_conflict: return TT_STATUS_CALLSITE_CONFLICT;
    case receive_errc::too_many_values: return TT_STATUS_TOO_MANY_VALUES;
    case receive_errc::unknown_field: return TT_STATUS_UNKNOWN_FIELD;
    case receive_errc::invalid_utf8: return TT_STATUS_INVALID_UTF8;
    case receive_errc::quota_exceeded: return TT_STATUS_QUOTA_EXCEEDED;
    case receive_errc::wrong_thread: return TT_STATUS_BAD_EVENT;
    }
    return TT_STATUS_BAD_EVENT;
}

// persisted_span::operator== lives with the type in state/ (tracetunnel/persisted.hpp).

// ---------------------------------------------------------------------------
// local spans

struct local_spans::table {
    // No index by handle: a contextual parent's id comes from the pipeline
    // (subscriber::plugin_span_id), checked here by has_handle.
    detail::keyed_table<detail::local_rec> spans;
    // The entered threads of the entries entered somewhere (local_rec::entered_at).
    detail::slab<detail::entered_rec> entered;

    // The entry's entered threads, null when entered nowhere.
    detail::entered_set* entered_of(detail::local_rec& e) noexcept
    {
        return e.entered_at == 0 ? nullptr : &entered[e.entered_at - 1].set;
    }
    const detail::entered_set* entered_of(const detail::local_rec& e) const noexcept
    {
        return e.entered_at == 0 ? nullptr : &entered[e.entered_at - 1].set;
    }
    // One enter of `e` on thread t.
    void add_enter(detail::local_rec& e, std::thread::id t)
    {
        if (e.entered_at == 0)
            first_enter(e, t);
        else
            entered[e.entered_at - 1].set.add(t);
    }
    // Out of line, like drop_entered: the enter and exit fast paths stay small.
    [[gnu::noinline]] void first_enter(detail::local_rec& e, std::thread::id t)
    {
        const std::uint32_t i = entered.acquire();
        entered[i].set.add(t);  // an empty set adds one thread without allocating
        e.entered_at = i + 1;
    }
    // One exit of `e` on thread t (the caller checked it is entered there).
    void remove_enter(detail::local_rec& e, std::thread::id t) noexcept
    {
        detail::entered_set& set = entered[e.entered_at - 1].set;
        set.remove(t);
        if (set.empty())
            drop_entered(e);
    }
    // Takes `e`'s entered threads out (empty when none).
    detail::entered_set take_entered(detail::local_rec& e) noexcept
    {
        if (e.entered_at == 0)
            return {};
        detail::entered_set out = std::move(entered[e.entered_at - 1].set);
        drop_entered(e);
        return out;
    }
    [[gnu::noinline]] void drop_entered(detail::local_rec& e) noexcept
    {
        if (e.entered_at == 0)
            return;
        entered[e.entered_at - 1].set.clear();
        try {
            entered.release(e.entered_at - 1);
        } catch (...) {
            // the slot is lost to reuse; the set itself is already empty
        }
        e.entered_at = 0;
    }

    // The entry of a plugin span id, added (without a handle) when missing.
    detail::local_rec& get(std::uint64_t id)
    {
        if (auto* e = spans.find(id))
            return *e;
        return *spans.add(id).first;
    }
    void set_handle(std::uint64_t id, span_handle h) { get(id).handle = h; }
    // `id` (what the pipeline says handle h was opened with) if it is one
    // of ours and has handle h now; else 0 (another plugin's span, or one
    // dropped meanwhile: handles are never reused).
    std::uint64_t id_if_handle(std::uint64_t id, span_handle h) const noexcept
    {
        if (id == 0 || h == 0)
            return 0;
        const auto* e = spans.find(id);
        return e != nullptr && e->handle == h ? id : 0;
    }
    void erase(std::uint64_t id) noexcept
    {
        const std::uint32_t slot = spans.slot_of(id);
        if (slot == detail::no_slot)
            return;
        drop_entered(spans.at(slot));
        spans.erase(id);
    }
};

struct alignas(64) local_spans::shard {
    static constexpr std::size_t closed_ring = closed_memory / shard_count;
    detail::spin_lock mutex;  // spin_lock.hpp: held for a few instructions of table work
    table t;
    // The shard's last closed spans: a ring of closed_ring entries, allocated
    // whole at the shard's first close, so a drop never allocates after that.
    std::vector<std::pair<std::uint64_t, span_handle>> closed;
    std::size_t closed_next = 0;

    void remember_closed(std::uint64_t span_id, span_handle h)
    {
        if (closed.size() < closed_ring) {
            if (closed.capacity() < closed_ring)
                closed.reserve(closed_ring);
            closed.emplace_back(span_id, h);
            return;
        }
        closed[closed_next] = {span_id, h};
        closed_next = (closed_next + 1) % closed_ring;
    }
    span_handle closed_handle(std::uint64_t span_id) const noexcept
    {
        // Newest first: the ring's newest entry is just before closed_next.
        const std::size_t n = closed.size();
        for (std::size_t k = 0; k < n; ++k) {
            const auto& [id, h] = closed[(closed_next + n - 1 - k) % n];
            if (id == span_id)
                return h;
        }
        return 0;
    }
};

// Every shard's lock, taken in index order: for the work that spans the
// whole table (a commit, a rollback, a restore).
struct local_spans::all_locked : detail::all_shards_locked<shard> {
    const local_spans& l;
    explicit all_locked(const local_spans& spans) noexcept
        : all_shards_locked(spans.shards_.get(), shard_count), l(spans)
    {
    }
    template <typename F>
    void for_each_table(F&& f) const
    {
        for (std::size_t i = 0; i < shard_count; ++i)
            f(l.shards_[i].t);
    }
};

local_spans::shard& local_spans::shard_of(std::uint64_t span_id) const noexcept
{
    // By block of ids, as the receiver's span shards: a thread's spans
    // stay in a shard while its block lasts (receiver::next_span_id).
    return shards_[(span_id / detail::span_id_block) % shard_count];
}

local_spans::local_spans(subscriber& pipeline) : pipeline_(&pipeline), shards_(std::make_unique<shard[]>(shard_count)) {}

local_spans::~local_spans()
{
    // Nobody continues these spans: they end here.
    release_all(false);
}

void local_spans::suspend_all() noexcept
{
    release_all(true);
}

// Exits what is entered, then closes or suspends every span; each shard is
// emptied first so that the pipeline is called without its lock.
void local_spans::release_all(bool suspend) noexcept
{
    for (std::size_t i = 0; i < shard_count; ++i) {
        shard& sh = shards_[i];
        table all;
        {
            std::lock_guard lock(sh.mutex);
            std::swap(all, sh.t);
            sh.closed.clear();
            sh.closed_next = 0;
        }
        all.spans.for_each([&](detail::local_rec& e, std::uint32_t) {
            if (const auto* entered = all.entered_of(e))
                entered->for_each([&](std::thread::id thread, std::uint32_t n) {
                    for (std::uint32_t k = 0; k < n; ++k)
                        pipeline_->force_exit(e.handle, thread);
                });
            if (e.handle == 0)
                return;
            if (suspend)
                pipeline_->suspend(e.handle);
            else
                pipeline_->close(e.handle);
        });
    }
}

std::size_t local_spans::size() const
{
    std::size_t n = 0;
    for (std::size_t i = 0; i < shard_count; ++i) {
        std::lock_guard lock(shards_[i].mutex);
        n += shards_[i].t.spans.size();
    }
    return n;
}

span_handle local_spans::handle_of(std::uint64_t span_id) const
{
    shard& sh = shard_of(span_id);
    std::lock_guard lock(sh.mutex);
    const auto* e = sh.t.spans.find(span_id);
    return e == nullptr ? 0 : static_cast<span_handle>(e->handle);
}

std::uint32_t local_spans::entered_count(std::uint64_t span_id) const
{
    shard& sh = shard_of(span_id);
    std::lock_guard lock(sh.mutex);
    const auto* e = sh.t.spans.find(span_id);
    const auto* entered = e == nullptr ? nullptr : sh.t.entered_of(*e);
    return entered == nullptr ? 0 : entered->threads();
}

// ---------------------------------------------------------------------------
// the receiver

// A normalized event: the ABI and the model path both end up here.
struct receiver::op {
    std::uint32_t kind = 0;
    std::uint64_t span_id = 0;  // acted-on span; for NEW_SPAN the proposed id (replay)
    std::uint64_t related = 0;  // cause (FOLLOWS_FROM) or explicit parent
    std::uint64_t callsite_id = 0;
    std::uint32_t parent = TT_PARENT_CONTEXTUAL;
    const model::callsite* new_site = nullptr;  // NEW_CALLSITE
    model::field_values values;
    bool propose_id = false;  // NEW_SPAN: span_id is the sender's own id
};

struct receiver::callsite_index {
    struct slot {
        std::atomic<std::uint64_t> id{0};  // 0 = empty; call-site ids are never 0
        std::atomic<callsite_entry*> entry{nullptr};
    };
    explicit callsite_index(std::size_t capacity) : mask(capacity - 1), slots(new slot[capacity]) {}

    // Ids are already hashes, but a plugin picks them: mix so that chosen
    // ids do not all land in one run of slots.
    static std::size_t home(std::uint64_t id) noexcept
    {
        id ^= id >> 33;
        id *= 0xff51afd7ed558ccdULL;
        id ^= id >> 33;
        return static_cast<std::size_t>(id);
    }
    // Under the receiver's mutex; the entry is published before its id.
    void put(callsite_entry* e) noexcept
    {
        for (std::size_t i = home(e->site.id) & mask;; i = (i + 1) & mask) {
            if (slots[i].id.load(std::memory_order_relaxed) == 0) {
                slots[i].entry.store(e, std::memory_order_relaxed);
                slots[i].id.store(e->site.id, std::memory_order_release);
                ++size;
                return;
            }
        }
    }
    callsite_entry* get(std::uint64_t id) const noexcept
    {
        for (std::size_t i = home(id) & mask;; i = (i + 1) & mask) {
            const std::uint64_t k = slots[i].id.load(std::memory_order_acquire);
            // Empty first: so an id of 0 finds nothing, not a slot being filled.
            if (k == 0)
                return nullptr;
            if (k == id)
                return slots[i].entry.load(std::memory_order_relaxed);
        }
    }

    std::size_t mask;
    std::size_t size = 0;
    std::unique_ptr<slot[]> slots;
};

void receiver::index_callsite_locked(callsite_entry& entry)
{
    callsite_index* cur = index_.load(std::memory_order_relaxed);
    if (cur != nullptr && (cur->size + 1) * 2 <= cur->mask + 1) {
        cur->put(&entry);
        return;
    }
    // Grow: a new table with every entry (the new one is already in
    // callsites_), published whole; the old one stays for readers in flight.
    std::size_t capacity = 64;
    while (capacity < (callsites_.size() + 1) * 2)
        capacity *= 2;
    auto next = std::make_unique<callsite_index>(capacity);
    for (auto& [id, e] : callsites_) {
        (void)id;
        next->put(&e);
    }
    index_.store(next.get(), std::memory_order_release);
    index_tables_.push_back(std::move(next));
}

// Call sites by number (callsite_entry::number; 0 is none), in chunks that
// never move: chunk k holds 64 << k entries. A number is given under mutex_
// before the call site is published (index_, callsites_), and a span entry
// gets it only after that, so whoever reads a span's number sees its chunk.
struct receiver::site_list {
    static constexpr unsigned first_bits = 6;
    static constexpr std::size_t max_chunks = 40;
    std::array<std::unique_ptr<const model::callsite*[]>, max_chunks> chunks;
    std::uint32_t size = 1;  // number 0 is taken: no call site

    static std::pair<unsigned, std::size_t> place(std::uint32_t n) noexcept
    {
        const std::uint64_t i = std::uint64_t{n} + (std::uint64_t{1} << first_bits);
        const unsigned k = static_cast<unsigned>(std::bit_width(i)) - 1 - first_bits;
        return {k, static_cast<std::size_t>(i - (std::uint64_t{1} << (first_bits + k)))};
    }
    const model::callsite* operator[](std::uint32_t n) const noexcept
    {
        const auto [k, at] = place(n);
        return chunks[k][at];
    }
    // Room for one more number, so that number() cannot throw after the
    // entry exists.
    void make_number_room()
    {
        const unsigned k = place(size).first;
        if (!chunks[k])
            chunks[k] = std::make_unique<const model::callsite*[]>(std::size_t{1} << (first_bits + k));
    }
    // Gives `entry` its number, once; the caller made room (make_number_room).
    void number(callsite_entry& entry) noexcept
    {
        if (entry.number != 0)
            return;
        const auto [k, at] = place(size);
        chunks[k][at] = &entry.site;
        entry.number = size++;
    }
};

struct receiver::span_table {
    detail::keyed_table<detail::span_rec> spans;
    // Follows-from causes by span id: few spans have any.
    std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> follows;
    // Call-site ids of restored spans whose call site is not known (their
    // site is null): rare, so not a member of every entry.
    std::unordered_map<std::uint64_t, std::uint64_t> unknown_sites;
    // String bytes of the spans whose count does not fit span_rec::bytes.
    std::unordered_map<std::uint64_t, std::uint32_t> big;

    detail::span_rec* find(std::uint64_t id) noexcept { return spans.find(id); }
    bool has(std::uint64_t id) const noexcept { return spans.find(id) != nullptr; }
    std::size_t size() const noexcept { return spans.size(); }
    std::uint64_t callsite_of(const site_list& sites, const detail::span_rec& e) const noexcept
    {
        if (const model::callsite* s = sites[e.site])
            return s->id;
        const auto it = unknown_sites.find(e.key);
        return it == unknown_sites.end() ? 0 : it->second;
    }
    std::uint32_t bytes_of(const detail::span_rec& e) const noexcept
    {
        if (e.bytes != detail::span_rec::big_bytes) [[likely]]
            return e.bytes;
        const auto it = big.find(e.key);
        return it == big.end() ? 0 : it->second;
    }
    // Two steps, so that a failure leaves the count as it was: make_room()
    // may throw, set_bytes() then does not.
    void make_room(std::uint64_t id, std::size_t bytes)
    {
        if (bytes >= detail::span_rec::big_bytes)
            big.try_emplace(id, 0);
    }
    void set_bytes(detail::span_rec& e, std::size_t bytes) noexcept
    {
        if (bytes < detail::span_rec::big_bytes) {
            if (e.bytes == detail::span_rec::big_bytes)
                big.erase(e.key);
            e.bytes = static_cast<std::uint32_t>(bytes);
            return;
        }
        big.find(e.key)->second = static_cast<std::uint32_t>(bytes);  // make_room() put it there
        e.bytes = detail::span_rec::big_bytes;
    }
    // A new entry for id, created since the last commit (counted in
    // `uncommitted`), with its depth and bytes.
    [[gnu::always_inline]] detail::span_rec& add(std::size_t& uncommitted, std::uint64_t id, std::uint32_t depth,
                                                 std::size_t bytes)
    {
        if (bytes >= detail::span_rec::big_bytes) [[unlikely]]
            return add_big(uncommitted, id, depth, bytes);
        detail::span_rec& e = *spans.add(id).first;
        e.depth = depth;
        e.uncommitted = 1;
        e.bytes = static_cast<std::uint32_t>(bytes);
        ++uncommitted;
        return e;
    }
    [[gnu::noinline]] detail::span_rec& add_big(std::size_t& uncommitted, std::uint64_t id, std::uint32_t depth,
                                                std::size_t bytes)
    {
        make_room(id, bytes);
        try {
            detail::span_rec& e = add(uncommitted, id, depth, 0);
            set_bytes(e, bytes);
            return e;
        } catch (...) {
            big.erase(id);
            throw;
        }
    }
    void erase(std::uint64_t id) noexcept
    {
        spans.erase(id);
        if (!follows.empty())
            follows.erase(id);
        if (!unknown_sites.empty())
            unknown_sites.erase(id);
        if (!big.empty())
            big.erase(id);
    }
};

struct alignas(64) receiver::span_shard {
    detail::spin_lock mutex;  // held for a few instructions of table work
    std::size_t uncommitted = 0;  // live spans created since the last commit (span_rec::uncommitted)
    std::uint64_t max_given = 0;  // the highest id given in this shard (persisted next id)
    span_table t;
};

// What a thread stripe has of its own: a block of span ids and quota credit
// in usage_'s units (take_quota). Only the stripe's owner takes ids and
// spends credit; anyone may take the credit back (return_credits), hence
// the atomic.
struct alignas(64) receiver::stripe_slot {
    detail::number_block ids;
    std::atomic<std::uint64_t> credit{0};
};

struct receiver::all_span_shards : detail::all_shards_locked<span_shard> {
    explicit all_span_shards(const receiver& r) noexcept
        : all_shards_locked(r.span_shards_.get(), span_shard_count)
    {
    }
};

std::size_t receiver::span_shard_index(std::uint64_t span_id) noexcept
{
    // A block of ids is one thread's (next_span_id): its spans stay in one
    // shard while the block lasts, and two threads' in different ones.
    return (span_id / detail::span_id_block) % span_shard_count;
}

receiver::span_shard& receiver::span_shard_of(std::uint64_t span_id) const noexcept
{
    return span_shards_[span_shard_index(span_id)];
}

// The live-span count and the string bytes a new span takes, held until the
// span is in its shard (keep()) and given back otherwise.
struct receiver::span_quota {
    receiver& r;
    std::uint64_t taken = 0;  // in usage_'s units
    explicit span_quota(receiver& owner) noexcept : r(owner) {}
    span_quota(const span_quota&) = delete;
    span_quota& operator=(const span_quota&) = delete;
    ~span_quota()
    {
        if (taken != 0)
            r.usage_.fetch_sub(taken, std::memory_order_relaxed);
    }
    void keep() noexcept { taken = 0; }
};

receiver::callsite_entry* receiver::find_callsite_fast(std::uint64_t id) const noexcept
{
    const callsite_index* t = index_.load(std::memory_order_acquire);
    return t == nullptr || id == 0 ? nullptr : t->get(id);
}

receiver::receiver(std::string lineage, subscriber& pipeline, receiver_state restored, quotas limits,
                   std::shared_ptr<local_spans> local)
    : lineage_(std::move(lineage)),
      pipeline_(&pipeline),
      limits_(limits),
      pipeline_resolves_(pipeline.resolves_current_span()),
      plugin_key_(new_plugin_key()),
      local_(std::move(local))
{
    if (!local_)
        local_ = std::make_shared<local_spans>(pipeline);
    // Half of each of usage_'s fields at most, so that threads adding past a
    // refusal at the same moment cannot carry out of one.
    limits_.max_live_spans = std::min<std::size_t>(limits_.max_live_spans, std::size_t{1} << 23);
    limits_.max_string_bytes = std::min<std::size_t>(limits_.max_string_bytes, std::size_t{1} << 39);
    static_assert(64 - usage_bytes_bits == 24);
    sites_ = std::make_unique<site_list>();
    sites_->make_number_room();  // number 0 (no call site) is read like any other
    span_shards_ = std::make_unique<span_shard[]>(span_shard_count);
    // No other thread knows this receiver yet: no locks below.
    std::size_t string_bytes = 0;
    for (auto& cs : restored.metadata) {
        sites_->make_number_room();
        auto [it, inserted] = callsites_.try_emplace(cs.id);
        if (!inserted)
            continue;
        sites_->number(it->second);
        it->second.site = std::move(cs);
        it->second.bytes = callsite_bytes(it->second.site);
        string_bytes += it->second.bytes;
        if (it->second.site.id != 0)
            index_callsite_locked(it->second);
    }
    std::uint64_t next_id = std::max<std::uint64_t>(restored.spans.next_id, 1);
    {
        std::array<std::size_t, span_shard_count> per_shard{};
        for (const auto& ps : restored.spans.spans)
            ++per_shard[span_shard_index(ps.id)];
        for (std::size_t i = 0; i < span_shard_count; ++i)
            span_shards_[i].t.spans.reserve(per_shard[i]);
    }
    const callsite_entry* site_entry = nullptr;  // the last span's: spans of one call site often come together
    std::size_t live = 0;
    for (auto& ps : restored.spans.spans) {
        if (ps.id == 0 || (ps.id & top_bit) != 0)
            continue;
        span_table& st = span_shard_of(ps.id).t;
        detail::span_rec* const e = st.spans.add_new(ps.id);
        if (e == nullptr)  // the first of an id wins
            continue;
        ++live;
        if (site_entry == nullptr || site_entry->site.id != ps.callsite_id) {
            auto cit = callsites_.find(ps.callsite_id);
            site_entry = cit == callsites_.end() ? nullptr : &cit->second;
        }
        const model::callsite* const site = site_entry != nullptr ? &site_entry->site : nullptr;
        std::size_t bytes = 0;
        e->values.assign(from_persisted(persist_scratch, site, ps.values, bytes));
        if (site == nullptr)
            st.unknown_sites[ps.id] = ps.callsite_id;
        e->parent_id = ps.parent_id;
        // Kept in 32 bits: a file's bigger count (2^32 handles) is not a real one.
        e->ref_count = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(ps.ref_count, 1, max_ref_count));
        e->set_start(ps.start);
        bytes = std::min(bytes, max_span_bytes);
        st.make_room(ps.id, bytes);
        st.set_bytes(*e, bytes);
        e->site = site_entry != nullptr ? site_entry->number : 0;
        e->depth = 0;  // not known yet (below)
        if (!ps.follows_from.empty())
            st.follows[ps.id] = ps.follows_from.to_vector();
        string_bytes += bytes;
        next_id = std::max(next_id, ps.id + 1);
    }
    next_id_.store(next_id & ~top_bit, std::memory_order_relaxed);
    restored_next_id_ = std::max<std::uint64_t>(next_id & ~top_bit, 1);
    stripe_slots_ = std::make_unique<stripe_slot[]>(detail::counter_stripes);
    // Chunks of quota a thread takes at once: small against the quotas, so
    // that what threads hold unspent is little, and none for quotas so small
    // that a chunk would be most of them.
    {
        const std::uint64_t spans = std::min<std::uint64_t>(32, limits_.max_live_spans / 256);
        const std::uint64_t bytes = std::min<std::uint64_t>(16384, limits_.max_string_bytes / 256);
        credit_chunk_ = spans != 0 && bytes != 0 ? spans * usage_one_span + bytes : 0;
    }
    // A file's counts beyond the caps (quotas) are not real ones.
    usage_.store((std::min<std::uint64_t>(live, ~std::uint64_t{0} >> (usage_bytes_bits + 1)) << usage_bytes_bits) |
                     std::min<std::uint64_t>(string_bytes, usage_bytes_mask >> 1),
                 std::memory_order_relaxed);
    // Nesting depths of the restored spans, walking up iteratively (a chain
    // may be long; a parent that is gone ends it). Depth 0 = not known yet,
    // on_chain = on the chain being walked (met again: a cycle, which ends it).
    {
        constexpr std::uint32_t on_chain = detail::span_rec::max_depth + 1;
        std::vector<detail::span_rec*> chain;
        const std::size_t total = live;
        for (std::size_t i = 0; i < span_shard_count; ++i) {
            span_shards_[i].t.spans.for_each([&](detail::span_rec& first, std::uint32_t) {
                if (first.depth != 0)
                    return;
                chain.clear();
                detail::span_rec* it = &first;
                std::uint32_t base = 0;
                while (chain.size() <= total) {
                    if (it->depth != 0) {
                        base = it->depth == on_chain ? 1 : it->depth;
                        break;
                    }
                    chain.push_back(it);
                    it->depth = on_chain;
                    if (it->parent_id == 0 || (it = span_shard_of(it->parent_id).t.find(it->parent_id)) == nullptr)
                        break;
                }
                // A chain deeper than a receiver makes (an older file's) stops
                // counting at the limit: its spans get no deeper children.
                for (auto c = chain.rbegin(); c != chain.rend(); ++c)
                    (*c)->depth = base = std::min(base + 1, detail::span_rec::max_depth);
            });
        }
    }
    // Local handles of spans the restored state does not have (an older
    // commit than the handles): nobody will continue them.
    std::vector<std::pair<span_handle, detail::entered_set>> stale;
    {
        const local_spans::all_locked locked(*local_);
        locked.for_each_table([&](local_spans::table& lt) {
            std::vector<std::uint64_t> gone;
            lt.spans.for_each([&](detail::local_rec& e, std::uint32_t) {
                if (!span_shard_of(e.key).t.has(e.key)) {
                    gone.push_back(e.key);
                    stale.emplace_back(e.handle, lt.take_entered(e));
                }
            });
            for (std::uint64_t id : gone)
                lt.erase(id);
        });
    }
    for (auto& [h, entered] : stale) {
        entered.for_each([&](std::thread::id thread, std::uint32_t n) {
            for (std::uint32_t k = 0; k < n; ++k)
                pipeline_->force_exit(h, thread);
        });
        pipeline_->close(h);
    }
    // The pipeline learns the restored call sites as a registration would.
    for (auto& [id, e] : callsites_) {
        (void)id;
        e.cached.store(static_cast<std::uint32_t>(pipeline_->interest_in(e.site)), std::memory_order_relaxed);
    }
}

receiver::~receiver()
{
    rollback();
}

void receiver::rollback() noexcept
{
    struct exit_todo {
        span_handle handle;
        std::thread::id thread;
    };
    std::vector<exit_todo> exits;
    std::vector<span_handle> closes;
    {
        std::lock_guard lock(mutex_);
        if (!dirty_.load(std::memory_order_relaxed))
            return;
        const all_span_shards spans_locked(*this);
        const local_spans::all_locked locked(*local_);
        locked.for_each_table([&](local_spans::table& lt) {
            lt.spans.for_each([&](detail::local_rec& e, std::uint32_t) {
                const auto* entered = lt.entered_of(e);
                if (entered == nullptr)
                    return;
                entered->for_each([&](std::thread::id thread, std::uint32_t n) {
                    for (std::uint32_t k = 0; k < n; ++k)
                        exits.push_back({e.handle, thread});
                });
                lt.drop_entered(e);
            });
        });
        std::vector<std::uint64_t> ids;
        for (std::size_t i = 0; i < span_shard_count; ++i) {
            span_shard& sh = span_shards_[i];
            if (sh.uncommitted == 0)
                continue;
            ids.reserve(ids.size() + sh.uncommitted);
            sh.t.spans.for_each([&](detail::span_rec& e, std::uint32_t) {
                if (e.uncommitted)
                    ids.push_back(e.key);
            });
            sh.uncommitted = 0;
        }
        // Closed in id order, which is creation order but for replayed ids.
        std::sort(ids.begin(), ids.end());
        for (std::uint64_t id : ids) {
            span_table& st = span_shard_of(id).t;
            usage_.fetch_sub(usage_one_span + st.bytes_of(*st.find(id)), std::memory_order_relaxed);
            st.erase(id);
            auto& lt = local_->shard_of(id).t;
            const auto* e = lt.spans.find(id);
            if (e == nullptr)
                continue;
            closes.push_back(e->handle);
            lt.erase(id);
        }
        dirty_.store(false, std::memory_order_relaxed);
    }
    for (const auto& x : exits)
        pipeline_->force_exit(x.handle, x.thread);
    for (span_handle h : closes)
        pipeline_->close(h);
}

receive_result receiver::fail(receive_errc code, std::string message)
{
    return receive_error{code, lineage_ + ": " + std::move(message)};
}

void receiver::count_error(const receive_error& e) noexcept
{
    error_counts_[static_cast<std::size_t>(e.code)].fetch_add(1, std::memory_order_relaxed);
    if (limits_.error_log_size == 0)
        return;
    try {
        std::lock_guard lock(log_mutex_);
        error_log_.push_back(std::string(to_string(e.code)) + ": " + e.message);
        while (error_log_.size() > limits_.error_log_size)
            error_log_.pop_front();
    } catch (...) {
        // out of memory while logging: the count above still tells
    }
}

std::uint64_t new_plugin_key() noexcept
{
    static constinit std::atomic<std::uint64_t> last{0};
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

std::uint64_t receiver::answer_of(receive_result&& r) noexcept
{
    if (r)
        return r.value();
    count_error(r.error());
    return TT_STATUS_ERROR_BIT | status_of(r.error().code);
}

// The fast paths inline with the smallest frame; the general path's result
// object and its handling in a function of its own.
std::uint64_t receiver::receive(const tt_event& ev) noexcept
{
    // Two tail calls, the commonest kind first.
    if (ev.struct_size >= sizeof(tt_event) && ev.kind == TT_EVENT_NEW_EVENT) [[likely]]
        return receive_event(ev);
    return receive_other(ev);
}

// Not a NEW_EVENT (or a sender's tt_event too small to read): receive_fast's
// other kinds, else the general path.
[[gnu::noinline]] std::uint64_t receiver::receive_other(const tt_event& ev) noexcept
{
    try {
        if (ev.struct_size >= sizeof(tt_event)) [[likely]] {
            if (ev.kind == TT_EVENT_NEW_SPAN)
                return answer_of(receive_new_span(ev));
            if (std::uint64_t answer = 0; receive_span_op_fast(ev, answer)) [[likely]]
                return answer;
        }
    } catch (...) {
        error_counts_[static_cast<std::size_t>(receive_errc::malformed)].fetch_add(1, std::memory_order_relaxed);
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    }
    return receive_general(ev);
}

[[gnu::noinline]] std::uint64_t receiver::receive_general(const tt_event& ev) noexcept
{
    try {
        return answer_of(try_receive(ev));
    } catch (...) {
        error_counts_[static_cast<std::size_t>(receive_errc::malformed)].fetch_add(1, std::memory_order_relaxed);
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    }
}

std::uint64_t receiver::receive(const model::event& ev) noexcept
{
    try {
        return answer_of(try_receive(ev));
    } catch (...) {
        error_counts_[static_cast<std::size_t>(receive_errc::malformed)].fetch_add(1, std::memory_order_relaxed);
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    }
}

// ---------------------------------------------------------------------------
// decoding

receive_result receiver::try_receive(const tt_event& ev)
{
    if (ev.struct_size < sizeof(tt_event))
        return fail(receive_errc::malformed, "tt_event.struct_size " + std::to_string(ev.struct_size) +
                                                 " is smaller than " + std::to_string(sizeof(tt_event)));
    if (ev.kind < TT_EVENT_NEW_CALLSITE || ev.kind > TT_EVENT_NEW_EVENT)
        return fail(receive_errc::unknown_event_kind, "unknown event kind " + std::to_string(ev.kind));
    // receive_fast takes no NEW_SPAN: a span goes straight to its own fast path.
    if (ev.kind == TT_EVENT_NEW_SPAN)
        return receive_new_span(ev);
    if (std::uint64_t answer = 0; receive_fast(ev, answer))
        return answer;
    count_event(event_counts_, ev.kind - 1);
    return receive_decoded(ev);
}

// Inline: receive_other's span path must not gain a call.
[[gnu::always_inline]] inline receive_result receiver::receive_new_span(const tt_event& ev)
{
    count_event(event_counts_, TT_EVENT_NEW_SPAN - 1);
    if (auto r = receive_span_fast(ev)) [[likely]]
        return std::move(*r);
    return receive_decoded(ev);
}

// Cold: in steady state a plugin's events take the fast paths, and this
// code (the decoding of every kind, with its messages) kept in their way
// made the code of one group of events outgrow the instruction cache.
[[gnu::noinline, gnu::cold]] receive_result receiver::receive_decoded(const tt_event& ev)
{
    op o;
    o.kind = ev.kind;
    o.span_id = ev.span_id;
    o.related = ev.related_span_id;
    o.callsite_id = ev.callsite_id;
    o.parent = ev.parent;

    if (ev.kind == TT_EVENT_NEW_CALLSITE) {
        model::callsite site;
        if (ev.callsite == nullptr)
            return fail(receive_errc::malformed, "new call site without a call site");
        const tt_callsite& cs = *ev.callsite;
        if (cs.struct_size < sizeof(tt_callsite))
            return fail(receive_errc::malformed, "tt_callsite.struct_size " + std::to_string(cs.struct_size) +
                                                     " is smaller than " + std::to_string(sizeof(tt_callsite)));
        // Lengths are checked before anything is read: a plugin's length is
        // followed only up to the limits.
        if (cs.field_count > limits_.max_fields_per_callsite)
            return fail(receive_errc::quota_exceeded, "call site " + id_text(cs.id) + " declares " +
                                                          std::to_string(cs.field_count) + " fields, at most " +
                                                          std::to_string(limits_.max_fields_per_callsite));
        for (const tt_str* str : {&cs.name, &cs.target, &cs.module_path, &cs.file})
            if (str->len > limits_.max_string_length)
                return fail(receive_errc::quota_exceeded, "call site " + id_text(cs.id) + " has a " +
                                                              std::to_string(str->len) + "-byte string, at most " +
                                                              std::to_string(limits_.max_string_length));
        if (cs.field_names != nullptr)
            for (std::uint32_t i = 0; i < cs.field_count; ++i)
                if (cs.field_names[i].len > limits_.max_string_length)
                    return fail(receive_errc::quota_exceeded,
                                "call site " + id_text(cs.id) + " has a field name of " +
                                    std::to_string(cs.field_names[i].len) + " bytes, at most " +
                                    std::to_string(limits_.max_string_length));
        if (!readable(cs.name) || !readable(cs.target) || !readable(cs.module_path) || !readable(cs.file) ||
            (cs.field_count > 0 && cs.field_names == nullptr))
            return fail(receive_errc::malformed, "call site has a NULL pointer with a length");
        for (std::uint32_t i = 0; i < cs.field_count; ++i)
            if (!readable(cs.field_names[i]))
                return fail(receive_errc::malformed, "call site has a NULL field name with a length");
        if (!valid_utf8(view(cs.name)) || !valid_utf8(view(cs.target)) || !valid_utf8(view(cs.module_path)) ||
            !valid_utf8(view(cs.file)))
            return fail(receive_errc::invalid_utf8, "call site " + id_text(cs.id) + " has a string that is not UTF-8");
        for (std::uint32_t i = 0; i < cs.field_count; ++i)
            if (!valid_utf8(view(cs.field_names[i])))
                return fail(receive_errc::invalid_utf8,
                            "call site " + id_text(cs.id) + " has a field name that is not UTF-8");
        std::string why;
        auto owned = model::callsite_from_abi(cs, &why);
        if (!owned)
            return fail(receive_errc::malformed, "call site " + id_text(cs.id) + ": " + why);
        site = std::move(*owned);
        o.new_site = &site;
        return apply(o);
    }

    if (ev.kind == TT_EVENT_NEW_SPAN || ev.kind == TT_EVENT_NEW_EVENT || ev.kind == TT_EVENT_VALUES_RECORDED) {
        if (ev.value_count > 0 && ev.values == nullptr)
            return fail(receive_errc::malformed, "values is NULL with value_count " + std::to_string(ev.value_count));
        if (ev.value_count > limits_.max_values_per_event)
            return fail(receive_errc::too_many_values, std::to_string(ev.value_count) + " values, at most " +
                                                           std::to_string(limits_.max_values_per_event) +
                                                           " per event");
        // The call site that names the values. Entries are never erased and
        // never changed, so the pointer stays good after the lock.
        const model::callsite* cs = nullptr;
        if (ev.kind == TT_EVENT_VALUES_RECORDED) {
            span_shard& sh = span_shard_of(ev.span_id);
            std::lock_guard lock(sh.mutex);
            const auto* it = sh.t.find(ev.span_id);
            if (it == nullptr)
                return fail(receive_errc::unknown_span, "values recorded on unknown span " + id_text(ev.span_id));
            cs = (*sites_)[it->site];
            if (cs == nullptr)
                return fail(receive_errc::unknown_callsite, "span " + id_text(ev.span_id) + " has call site " +
                                                                id_text(sh.t.callsite_of(*sites_, *it)) +
                                                                ", which is not known");
        } else {
            std::lock_guard lock(mutex_);
            auto it = callsites_.find(ev.callsite_id);
            if (it == callsites_.end())
                return fail(receive_errc::unknown_callsite, "unknown call site " + id_text(ev.callsite_id));
            cs = &it->second.site;
        }
        for (std::uint32_t i = 0; i < ev.value_count; ++i)
            if (std::string why = value_over_limit(ev.values[i], limits_); !why.empty())
                return fail(receive_errc::quota_exceeded, why);
        o.values.reserve(ev.value_count);
        for (std::uint32_t i = 0; i < ev.value_count; ++i) {
            const tt_field_value& v = ev.values[i];
            if (v.field >= cs->fields.size())
                return fail(receive_errc::unknown_field, "value for field #" + std::to_string(v.field) +
                                                             " of call site '" + cs->name + "', which has " +
                                                             std::to_string(cs->fields.size()) + " fields");
            auto value = model::value_from_abi(v);
            if (!value)
                return fail(receive_errc::malformed, "value #" + std::to_string(i) + " of kind " +
                                                         std::to_string(v.kind) + " cannot be read");
            if (!value_utf8(*value))
                return fail(receive_errc::invalid_utf8,
                            "value of field '" + cs->fields[v.field] + "' is not UTF-8");
            o.values.emplace_back(cs->fields[v.field], std::move(*value));
        }
    }
    return apply(o);
}

// Everything the general path checks, in the same order, but with the
// call site from the lock-free index and the plugin's values handed on as
// checked views (value_ref), not converted. Anything unusual (an explicit parent, which needs the
// span table; a bad value, whose error message the general path words; a
// re-entered call) goes to the general path, which decides it afresh.
// False: not decided, nothing changed; true: `answer` is the answer.
// Inlined into receive_event, whose frame it shares (answer in a register).
[[gnu::always_inline]] inline bool receiver::receive_event_fast(const tt_event& ev, std::uint64_t& answer)
{
    if (ev.parent >= TT_PARENT_EXPLICIT)  // explicit (needs the span table) or unknown
        return false;
    if (ev.value_count > limits_.max_values_per_event || (ev.value_count > 0 && ev.values == nullptr))
        return false;
    const callsite_index* index = index_.load(std::memory_order_acquire);  // find_callsite_fast, inline
    callsite_entry* entry = index == nullptr ? nullptr : index->get(ev.callsite_id);  // an id of 0: null
    if (entry == nullptr || entry->site.kind != model::callsite_kind::event)
        return false;
    if (ev.value_count > fast_event_values)
        return false;
    const model::callsite& site = entry->site;
    if (!view_values<false>(nullptr, site, ev, limits_))
        return false;
    const auto cached = static_cast<interest>(entry->cached.load(std::memory_order_relaxed));
    if (cached != interest::always && (cached == interest::never || !pipeline_->enabled(site))) [[unlikely]] {
        count_event(event_counts_, TT_EVENT_NEW_EVENT - 1);
        filtered_.fetch_add(1, std::memory_order_relaxed);
        answer = TT_STATUS_FILTERED;
        return true;
    }
    // One count for the received event and the call site's hit (stats()).
    const unsigned stripe = detail::my_stripe();
    detail::bump(entry->fast_events(stripe), stripe);
    // The parent and thread first, the record in one go: each member is
    // stored once, not zeroed and then set across the calls.
    span_handle parent = 0;
    const bool contextual = ev.parent != TT_PARENT_ROOT && pipeline_resolves_;
    if (ev.parent != TT_PARENT_ROOT && !contextual)
        parent = pipeline_->current_span();
    const std::thread::id thread = std::this_thread::get_id();
    const event_record rec{.site = &site,
                           .plugin = lineage_,
                           .plugin_key = plugin_key_,
                           .parent = parent,
                           .contextual = contextual,
                           .values = field_refs::from_abi(ev.values, ev.value_count, site.fields.data()),
                           .time = {},
                           .thread = thread,
                           .site_word = &entry->pipeline_word};
    pipeline_->event(rec);
    answer = TT_STATUS_OK;
    return true;
}

// A group's common events without the general path's decoding (no op, no
// owned call site, no receive_result): a typical event; enter and exit of a
// span that has its pipeline span (the local table alone answers, under its
// own lock, not the receiver's); the drop of a live span. Anything else, or
// anything unusual, returns false having changed nothing, and the general
// path decides and words any error.
bool receiver::receive_fast(const tt_event& ev, std::uint64_t& answer)
{
    if (ev.struct_size < sizeof(tt_event)) [[unlikely]]
        return false;
    // The commonest kind first. Both are tail calls.
    if (ev.kind == TT_EVENT_NEW_EVENT) [[likely]]
        return receive_event_fast(ev, answer);
    return receive_span_op_fast(ev, answer);
}

std::uint64_t receiver::receive_event(const tt_event& ev) noexcept
{
    try {
        if (std::uint64_t answer = 0; receive_event_fast(ev, answer)) [[likely]]
            return answer;
    } catch (...) {
        error_counts_[static_cast<std::size_t>(receive_errc::malformed)].fetch_add(1, std::memory_order_relaxed);
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    }
    return receive_general(ev);
}

[[gnu::noinline]] bool receiver::receive_span_op_fast(const tt_event& ev, std::uint64_t& answer)
{
    switch (ev.kind) {
    case TT_EVENT_SPAN_ENTERED: {
        const auto me = std::this_thread::get_id();
        span_handle h = 0;
        {
            auto& sh = local_->shard_of(ev.span_id);
            std::lock_guard llock(sh.mutex);
            auto* e = sh.t.spans.find(ev.span_id);
            if (e == nullptr || e->handle == 0)
                return false;
            sh.t.add_enter(*e, me);
            mark_dirty();  // a rollback must exit it
            h = e->handle;
        }
        count_event(event_counts_, TT_EVENT_SPAN_ENTERED - 1);
        pipeline_->enter(h);
        answer = TT_STATUS_OK;
        return true;
    }
    case TT_EVENT_SPAN_EXITED: {
        const auto me = std::this_thread::get_id();
        span_handle h = 0;
        {
            auto& sh = local_->shard_of(ev.span_id);
            std::lock_guard llock(sh.mutex);
            auto* e = sh.t.spans.find(ev.span_id);
            // Not entered on this thread (another thread's, or none): the
            // general path decides.
            const auto* entered = e == nullptr ? nullptr : sh.t.entered_of(*e);
            if (entered == nullptr || !entered->has(me))
                return false;
            h = e->handle;
            mark_dirty();
            sh.t.remove_enter(*e, me);
        }
        count_event(event_counts_, TT_EVENT_SPAN_EXITED - 1);
        if (h != 0)
            pipeline_->exit(h);
        answer = TT_STATUS_OK;
        return true;
    }
    case TT_EVENT_SPAN_DROPPED:
        if (!drop_span(ev.span_id))
            return false;
        count_event(event_counts_, TT_EVENT_SPAN_DROPPED - 1);
        answer = TT_STATUS_OK;
        return true;
    default: return false;
    }
}

// The general path's NEW_SPAN for the common case, with its checks and
// error messages, in one pass under the locks. Only for call sites the
// pipeline always wants: a filtered span's order of checks (quotas before
// the filter) stays the general path's.
std::optional<receive_result> receiver::reserve_span(span_quota& quota, std::size_t quota_bytes,
                                                     std::size_t span_bytes, std::uint64_t plugin_parent,
                                                     std::uint64_t proposed, std::uint64_t& id, std::uint32_t& depth,
                                                     span_shard*& shard)
{
    // Both quotas taken first, together (take_quota: this thread's credit or
    // one add to usage_), and given back on refusal (span_quota), so that
    // two threads cannot both pass a check and then both take the last of
    // it. The caps in the constructor keep the bytes from carrying into the
    // count.
    std::uint64_t before = 0;
    if (!take_quota(usage_one_span + quota_bytes, before)) {
        if ((before >> usage_bytes_bits) >= limits_.max_live_spans)
            return fail(receive_errc::quota_exceeded,
                        "live-span quota of " + std::to_string(limits_.max_live_spans) + " reached");
        return fail(receive_errc::quota_exceeded,
                    "string quota of " + std::to_string(limits_.max_string_bytes) + " bytes reached");
    }
    quota.taken = usage_one_span + quota_bytes;
    if (span_bytes > max_span_bytes)
        return fail(receive_errc::quota_exceeded,
                    "string quota of " + std::to_string(limits_.max_string_bytes) + " bytes reached");
    // Checked with the values as sent, kept as merged (no larger).
    if (span_bytes < quota_bytes) {
        usage_.fetch_sub(quota_bytes - span_bytes, std::memory_order_relaxed);
        quota.taken = usage_one_span + span_bytes;
    }
    depth = 1;
    if (plugin_parent != 0) {
        span_shard& ps = span_shard_of(plugin_parent);
        std::lock_guard lock(ps.mutex);
        if (const auto* p = ps.t.find(plugin_parent))
            depth = static_cast<std::uint32_t>(p->depth) + 1;
    }
    const std::size_t max_depth = std::min<std::size_t>(limits_.max_span_depth, detail::span_rec::max_depth);
    if (depth > max_depth)
        return fail(receive_errc::quota_exceeded, "span nesting depth limit of " +
                                                      std::to_string(max_depth) + " reached (parent " +
                                                      id_text(plugin_parent) + ")");
    if (proposed != 0 && (proposed & top_bit) == 0) {
        span_shard& s = span_shard_of(proposed);
        s.mutex.lock();
        if (!s.t.has(proposed)) {
            id = proposed;
            shard = &s;
            s.max_given = std::max(s.max_given, proposed);
            // Later ids go past a replayed one, as they did past the ones
            // before it: blocks below it are given up (next_span_id).
            for (std::atomic<std::uint64_t>* a : {&next_id_, &id_floor_}) {
                std::uint64_t cur = a->load(std::memory_order_relaxed);
                while (cur <= proposed && !a->compare_exchange_weak(cur, proposed + 1, std::memory_order_relaxed)) {
                }
            }
            return std::nullopt;
        }
        s.mutex.unlock();
    }
    // The next id no live span has (a replayed or restored one may).
    for (;;) {
        const std::uint64_t n = next_span_id();
        if (n == 0)
            continue;
        span_shard& s = span_shard_of(n);
        s.mutex.lock();
        if (!s.t.has(n)) {
            id = n;
            shard = &s;
            s.max_given = std::max(s.max_given, n);
            return std::nullopt;
        }
        s.mutex.unlock();
    }
}

// A thread takes ids from a block of its own (by thread stripe), so that
// its spans share shards with no other thread's while the block lasts; one
// thread alone still gets them in sequence (its next block starts where the
// last ended). Threads past the exclusive stripes take them one by one.
std::uint64_t receiver::next_span_id() noexcept
{
    const unsigned stripe = detail::my_stripe();
    if (stripe == detail::shared_stripe) [[unlikely]]
        return next_id_.fetch_add(1, std::memory_order_relaxed) & ~top_bit;
    detail::number_block& ids = stripe_slots_[stripe].ids;
    if (ids.next < id_floor_.load(std::memory_order_relaxed)) [[unlikely]]
        ids.give_up();  // below a replayed id
    return ids.take(next_id_, detail::span_id_block) & ~top_bit;
}

// Whether `need` (usage_'s units) may be added to a usage of `before`.
bool receiver::quota_fits(std::uint64_t before, std::uint64_t need) const noexcept
{
    const std::uint64_t spans = need >> usage_bytes_bits;
    if (spans != 0 && (before >> usage_bytes_bits) + spans > limits_.max_live_spans)
        return false;
    return (before & usage_bytes_mask) + (need & usage_bytes_mask) <= limits_.max_string_bytes;
}

// Takes `need` of the quotas: from this thread's credit when it covers it,
// else from usage_ with a chunk of credit more when that still fits, else
// exactly. False: refused, nothing taken, `before` the usage it was refused
// at. A quota still holds exactly: credit is counted in usage_ when taken,
// and a refusal first takes every thread's unspent credit back.
bool receiver::take_quota(std::uint64_t need, std::uint64_t& before) noexcept
{
    const unsigned stripe = detail::my_stripe();
    if (credit_chunk_ != 0 && stripe != detail::shared_stripe) [[likely]] {
        std::atomic<std::uint64_t>& credit = stripe_slots_[stripe].credit;
        std::uint64_t have = credit.load(std::memory_order_relaxed);
        while ((have >> usage_bytes_bits) >= (need >> usage_bytes_bits) &&
               (have & usage_bytes_mask) >= (need & usage_bytes_mask))
            if (credit.compare_exchange_weak(have, have - need, std::memory_order_relaxed))
                return true;
        const std::uint64_t grab = need + credit_chunk_;
        before = usage_.fetch_add(grab, std::memory_order_relaxed);
        if (quota_fits(before, grab)) {
            credit.fetch_add(credit_chunk_, std::memory_order_relaxed);
            return true;
        }
        usage_.fetch_sub(grab, std::memory_order_relaxed);
    }
    return take_quota_exact(need, before);
}

bool receiver::take_quota_exact(std::uint64_t need, std::uint64_t& before) noexcept
{
    // A second try only if a refusal took unspent credit back.
    for (bool retried = false;; retried = true) {
        before = usage_.fetch_add(need, std::memory_order_relaxed);
        if (quota_fits(before, need))
            return true;
        usage_.fetch_sub(need, std::memory_order_relaxed);
        if (retried || !return_credits())
            return false;
    }
}

// Gives back what a span took (a close): to this thread's credit, which
// goes back to usage_ once it holds more than two chunks.
void receiver::give_quota(std::uint64_t amount) noexcept
{
    const unsigned stripe = detail::my_stripe();
    if (credit_chunk_ != 0 && stripe != detail::shared_stripe) [[likely]] {
        std::atomic<std::uint64_t>& credit = stripe_slots_[stripe].credit;
        const std::uint64_t now = credit.fetch_add(amount, std::memory_order_relaxed) + amount;
        const std::uint64_t most = 2 * credit_chunk_;
        if ((now >> usage_bytes_bits) > (most >> usage_bytes_bits) ||
            (now & usage_bytes_mask) > (most & usage_bytes_mask)) [[unlikely]]
            usage_.fetch_sub(credit.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        return;
    }
    usage_.fetch_sub(amount, std::memory_order_relaxed);
}

// Every stripe's unspent credit back into usage_. True if there was any.
bool receiver::return_credits() noexcept
{
    if (credit_chunk_ == 0)
        return false;
    bool any = false;
    for (unsigned i = 0; i < detail::counter_stripes; ++i)
        if (const std::uint64_t c = stripe_slots_[i].credit.exchange(0, std::memory_order_relaxed); c != 0) {
            usage_.fetch_sub(c, std::memory_order_relaxed);
            any = true;
        }
    return any;
}

// usage_ without the credit threads hold: the spans and bytes in use. Each
// field on its own, and never below 0 (a credit being returned meanwhile).
std::uint64_t receiver::usage_in_use() const noexcept
{
    std::uint64_t held_spans = 0, held_bytes = 0;
    if (credit_chunk_ != 0)
        for (unsigned i = 0; i < detail::counter_stripes; ++i) {
            const std::uint64_t c = stripe_slots_[i].credit.load(std::memory_order_relaxed);
            held_spans += c >> usage_bytes_bits;
            held_bytes += c & usage_bytes_mask;
        }
    const std::uint64_t u = usage_.load(std::memory_order_relaxed);
    const std::uint64_t spans = u >> usage_bytes_bits, bytes = u & usage_bytes_mask;
    return (spans > held_spans ? spans - held_spans : 0) << usage_bytes_bits |
           (bytes > held_bytes ? bytes - held_bytes : 0);
}

std::optional<receive_result> receiver::receive_span_fast(const tt_event& ev)
{
    if (ev.parent >= TT_PARENT_EXPLICIT)
        return std::nullopt;
    if (ev.value_count > limits_.max_values_per_event || (ev.value_count > 0 && ev.values == nullptr))
        return std::nullopt;
    callsite_entry* entry = find_callsite_fast(ev.callsite_id);
    if (entry == nullptr || entry->site.kind != model::callsite_kind::span ||
        static_cast<interest>(entry->cached.load(std::memory_order_relaxed)) != interest::always)
        return std::nullopt;
    if (ev.value_count > fast_event_values)
        return std::nullopt;
    const model::callsite& site = entry->site;
    // Checked views of the plugin's values (the event path's checks), packed
    // from those straight into the span's blob: no model::value between.
    span_refs refs;
    if (!view_values<true>(refs.refs, site, ev, limits_))
        return std::nullopt;
    // A field given twice: the general path merges them.
    for (std::uint32_t i = 1; i < ev.value_count; ++i)
        for (std::uint32_t k = 0; k < i; ++k)
            if (ev.values[i].field == ev.values[k].field)
                return std::nullopt;
    std::size_t bytes = 0;  // the span quota's size: names + string bytes (fields_bytes)
    std::size_t packed = 0;
    for (std::uint32_t i = 0; i < ev.value_count; ++i) {
        const value_ref& v = refs.refs[i].value;  // a copy would stall (see value_ref)
        bytes += refs.refs[i].name.size();
        if (v.type() == value_ref::kind::error) {
            const value_ref::error_view chain = v.chain();
            for (std::size_t k = 0; k < chain.size(); ++k)
                bytes += chain[k].size();
        } else {
            bytes += v.text().size();  // empty for a scalar
        }
        packed += detail::blob::size_of(ev.values[i].field, v);
    }
    detail::value_blob values;
    char* out = values.prepare(packed);
    for (std::uint32_t i = 0; i < ev.value_count; ++i)
        out = detail::blob::put(out, ev.values[i].field, refs.refs[i].value);

    const auto now = clock::now();
    const span_handle parent = ev.parent == TT_PARENT_ROOT ? 0 : pipeline_->current_span();
    const std::uint64_t parent_said = parent != 0 ? pipeline_->plugin_span_id(parent) : 0;
    std::uint64_t plugin_parent = 0;
    if (parent_said != 0) {
        auto& sh = local_->shard_of(parent_said);
        std::lock_guard llock(sh.mutex);
        plugin_parent = sh.t.id_if_handle(parent_said, parent);
    }
    span_quota quota(*this);
    std::uint64_t id = 0;
    std::uint32_t depth = 1;
    span_shard* shard = nullptr;
    if (auto refused = reserve_span(quota, bytes, bytes, plugin_parent, 0, id, depth, shard))
        return refused;
    {
        std::lock_guard lock(shard->mutex, std::adopt_lock);
        detail::span_rec* const e = &shard->t.add(shard->uncommitted, id, depth, bytes);
        e->parent_id = plugin_parent;
        e->site = entry->number;
        e->set_start(now);
        e->ref_count = 1;
        e->values = std::move(values);
        mark_dirty();
    }
    quota.keep();
    count_hit(*entry);
    span_attrs attrs;
    attrs.site = &site;
    attrs.plugin = lineage_;
    attrs.plugin_key = plugin_key_;
    attrs.parent = parent;
    attrs.values = field_refs(refs.refs, ev.value_count);
    attrs.time = now;
    attrs.thread = std::this_thread::get_id();
    attrs.plugin_span_id = id;
    const span_handle h = pipeline_->new_span(attrs);
    {
        auto& sh = local_->shard_of(id);
        std::lock_guard llock(sh.mutex);
        sh.t.set_handle(id, h);
    }
    return receive_result(id);
}

receive_result receiver::try_receive(const model::event& ev)
{
    const auto kind = static_cast<std::uint32_t>(ev.index() + 1);
    count_event(event_counts_, kind - 1);
    op o;
    o.kind = kind;
    std::visit(
        [&](const auto& e) {
            using T = std::decay_t<decltype(e)>;
            if constexpr (std::is_same_v<T, model::new_callsite>) {
                o.new_site = &e.site;
            } else if constexpr (std::is_same_v<T, model::new_span>) {
                o.span_id = e.id;
                o.propose_id = true;
                o.callsite_id = e.callsite_id;
                o.parent = static_cast<std::uint32_t>(e.parent);
                o.related = e.parent_id;
                o.values = e.values;
            } else if constexpr (std::is_same_v<T, model::new_event>) {
                o.callsite_id = e.callsite_id;
                o.parent = static_cast<std::uint32_t>(e.parent);
                o.related = e.parent_id;
                o.values = e.values;
            } else if constexpr (std::is_same_v<T, model::follows_from>) {
                o.span_id = e.id;
                o.related = e.cause;
            } else if constexpr (std::is_same_v<T, model::values_recorded>) {
                o.span_id = e.id;
                o.values = e.values;
            } else {
                o.span_id = e.id;
            }
        },
        ev);
    if (o.new_site != nullptr) {
        const model::callsite& cs = *o.new_site;
        if ((cs.kind != model::callsite_kind::span && cs.kind != model::callsite_kind::event) ||
            static_cast<std::uint32_t>(cs.level) < TT_LEVEL_ERROR || static_cast<std::uint32_t>(cs.level) > TT_LEVEL_TRACE)
            return fail(receive_errc::malformed, "call site " + id_text(cs.id) + " has an unknown kind or level");
        if (!callsite_utf8(cs))
            return fail(receive_errc::invalid_utf8, "call site " + id_text(cs.id) + " has a string that is not UTF-8");
    }
    if (o.values.size() > limits_.max_values_per_event)
        return fail(receive_errc::too_many_values, std::to_string(o.values.size()) + " values, at most " +
                                                       std::to_string(limits_.max_values_per_event) + " per event");
    for (const auto& [name, v] : o.values)
        if (!valid_utf8(name) || !value_utf8(v))
            return fail(receive_errc::invalid_utf8, "a value or field name is not UTF-8");
    return apply(o);
}

// ---------------------------------------------------------------------------
// applying

namespace {

// Every value names a field of `cs`.
const std::string* undeclared_field(const model::callsite& cs, const model::field_values& values)
{
    for (const auto& [name, v] : values) {
        (void)v;
        if (std::find(cs.fields.begin(), cs.fields.end(), name) == cs.fields.end())
            return &name;
    }
    return nullptr;
}

}  // namespace

span_handle receiver::materialize(std::uint64_t span_id)
{
    if (const span_handle known = local_->handle_of(span_id); known != 0)
        return known;
    // A persisted span without a pipeline span (host restart): it gets one
    // now. Its persisted parent is not materialized for it: a parent without
    // a pipeline span leaves it a root, as tracing-tunnel does (fixture
    // persist-split.restart).
    std::lock_guard mlock(materialize_mutex_);
    model::field_values values;
    span_attrs attrs;
    if (const span_handle known = local_->handle_of(span_id); known != 0)
        return known;  // made meanwhile on another thread
    std::uint64_t parent_id = 0;
    {
        span_shard& sh = span_shard_of(span_id);
        std::lock_guard lock(sh.mutex);
        const auto* it = sh.t.find(span_id);
        const model::callsite* const site = it == nullptr ? nullptr : (*sites_)[it->site];
        if (site == nullptr)
            return 0;
        values = unpack(*it, site);
        attrs.site = site;
        attrs.time = it->start();
        parent_id = it->parent_id;
    }
    if (parent_id != 0)
        attrs.parent = local_->handle_of(parent_id);
    const auto refs = refs_of(values);
    attrs.plugin = lineage_;
    attrs.plugin_key = plugin_key_;
    attrs.values = refs;
    attrs.thread = std::this_thread::get_id();
    attrs.plugin_span_id = span_id;
    attrs.resumed = true;
    const span_handle h = pipeline_->new_span(attrs);
    bool gone = false;
    {
        span_shard& sh = span_shard_of(span_id);
        std::lock_guard lock(sh.mutex);
        if (!sh.t.has(span_id)) {
            gone = true;  // dropped meanwhile on another thread
        } else {
            auto& lsh = local_->shard_of(span_id);
            std::lock_guard llock(lsh.mutex);
            lsh.t.set_handle(span_id, h);
        }
    }
    if (gone) {
        pipeline_->close(h);
        return 0;
    }
    return h;
}

span_handle receiver::resolve_parent(std::uint32_t mode, std::uint64_t explicit_id, std::uint64_t* plugin_parent)
{
    *plugin_parent = 0;
    if (mode == TT_PARENT_ROOT)
        return 0;
    if (mode == TT_PARENT_EXPLICIT) {
        *plugin_parent = explicit_id;
        return materialize(explicit_id);
    }
    const span_handle current = pipeline_->current_span();
    if (const std::uint64_t said = current != 0 ? pipeline_->plugin_span_id(current) : 0; said != 0) {
        auto& sh = local_->shard_of(said);
        std::lock_guard lock(sh.mutex);
        *plugin_parent = sh.t.id_if_handle(said, current);
    }
    return current;
}

// One reference of a live span dropped; the last closes it (force-exiting
// it where it is still entered). False, with nothing changed, for a span that
// is not live.
bool receiver::drop_span(std::uint64_t span_id)
{
    span_handle h = 0;
    detail::entered_set still_entered;
    std::size_t bytes = 0;
    {
        span_shard& ssh = span_shard_of(span_id);
        std::lock_guard lock(ssh.mutex);
        auto* it = ssh.t.find(span_id);
        if (it == nullptr)
            return false;
        mark_dirty();
        if (--it->ref_count > 0)
            return true;
        bytes = ssh.t.bytes_of(*it);
        ssh.uncommitted -= it->uncommitted;
        ssh.t.erase(span_id);
        auto& sh = local_->shard_of(span_id);
        std::lock_guard llock(sh.mutex);
        auto& lt = sh.t;
        if (auto* e = lt.spans.find(span_id)) {
            h = e->handle;
            still_entered = lt.take_entered(*e);  // leaves it entered nowhere
            lt.spans.erase(span_id);               // so no second look-up (table::erase)
            sh.remember_closed(span_id, h);
        }
    }
    give_quota(usage_one_span + bytes);
    if (h != 0) {
        still_entered.for_each([&](std::thread::id thread, std::uint32_t n) {
            for (std::uint32_t k = 0; k < n; ++k)
                pipeline_->force_exit(h, thread);
        });
        pipeline_->close(h);
    }
    return true;
}

receive_result receiver::apply(op& o)
{
    switch (o.kind) {
    case TT_EVENT_NEW_CALLSITE: {
        const model::callsite& cs = *o.new_site;
        if (cs.id == 0)
            return fail(receive_errc::malformed, "call-site id 0");
        callsite_entry* entry = nullptr;
        {
            std::lock_guard lock(mutex_);
            auto it = callsites_.find(cs.id);
            if (it != callsites_.end()) {
                if (!(it->second.site == cs))
                    return fail(receive_errc::callsite_conflict,
                                "call site " + id_text(cs.id) + " ('" + cs.name +
                                    "') registered again with different data (first: '" + it->second.site.name + "')");
                entry = &it->second;
            } else {
                if (callsites_.size() >= limits_.max_callsites)
                    return fail(receive_errc::quota_exceeded,
                                "call-site quota of " + std::to_string(limits_.max_callsites) + " reached");
                const std::size_t bytes = callsite_bytes(cs);
                if (std::uint64_t before = 0; !take_quota_exact(bytes, before)) {
                    return fail(receive_errc::quota_exceeded,
                                "string quota of " + std::to_string(limits_.max_string_bytes) + " bytes reached");
                }
                // Nothing of it stays if any step throws (memory).
                try {
                    sites_->make_number_room();
                } catch (...) {
                    usage_.fetch_sub(bytes, std::memory_order_relaxed);
                    throw;
                }
                auto nit = callsites_.end();
                try {
                    nit = callsites_.try_emplace(cs.id).first;
                    nit->second.site = cs;
                    nit->second.bytes = bytes;
                    // Numbered before it is published: the fast paths read the number.
                    sites_->number(nit->second);
                    index_callsite_locked(nit->second);
                } catch (...) {
                    // A number given here stays unused: no span can have it.
                    if (nit != callsites_.end())
                        callsites_.erase(nit);
                    usage_.fetch_sub(bytes, std::memory_order_relaxed);
                    throw;
                }
                entry = &nit->second;
            }
        }
        const interest i = pipeline_->interest_in(entry->site);
        entry->cached.store(static_cast<std::uint32_t>(i), std::memory_order_relaxed);
        return static_cast<std::uint64_t>(i);
    }

    case TT_EVENT_NEW_SPAN:
    case TT_EVENT_NEW_EVENT: {
        const bool is_span = o.kind == TT_EVENT_NEW_SPAN;
        if (o.parent > TT_PARENT_EXPLICIT)
            return fail(receive_errc::malformed, "unknown parent mode " + std::to_string(o.parent));
        callsite_entry* entry = nullptr;
        {
            std::lock_guard lock(mutex_);
            auto it = callsites_.find(o.callsite_id);
            if (it == callsites_.end())
                return fail(receive_errc::unknown_callsite, "unknown call site " + id_text(o.callsite_id));
            entry = &it->second;
            const auto want = is_span ? model::callsite_kind::span : model::callsite_kind::event;
            if (entry->site.kind != want)
                return fail(receive_errc::wrong_callsite_kind,
                            std::string(is_span ? "new span" : "new event") + " from call site '" + entry->site.name +
                                "', which is " + (is_span ? "an event" : "a span") + " call site");
            if (const std::string* bad = undeclared_field(entry->site, o.values))
                return fail(receive_errc::unknown_field,
                            "value for field '" + *bad + "', which call site '" + entry->site.name + "' does not declare");
        }
        if (o.parent == TT_PARENT_EXPLICIT && !span_is_live(o.related))
            return fail(receive_errc::unknown_span, "explicit parent " + id_text(o.related) + " is not a live span");
        // Checked before the filter, as they always were; taken for real below.
        if (is_span) {
            if (live_of_usage() >= limits_.max_live_spans)
                return fail(receive_errc::quota_exceeded,
                            "live-span quota of " + std::to_string(limits_.max_live_spans) + " reached");
            if (bytes_of_usage() + fields_bytes(o.values) > limits_.max_string_bytes)
                return fail(receive_errc::quota_exceeded,
                            "string quota of " + std::to_string(limits_.max_string_bytes) + " bytes reached");
        }
        const model::callsite* site = &entry->site;
        const auto cached = static_cast<interest>(entry->cached.load(std::memory_order_relaxed));
        if (cached == interest::never || (cached == interest::sometimes && !pipeline_->enabled(*site))) {
            filtered_.fetch_add(1, std::memory_order_relaxed);
            return is_span ? std::uint64_t{0} : std::uint64_t{TT_STATUS_FILTERED};
        }
        count_hit(*entry);
        std::uint64_t plugin_parent = 0;
        const span_handle parent = resolve_parent(o.parent, o.related, &plugin_parent);

        if (!is_span) {
            const auto refs = refs_of(o.values);
            event_record rec;
            rec.site = site;
            rec.plugin = lineage_;
            rec.plugin_key = plugin_key_;
            rec.parent = parent;
            rec.values = refs;
            rec.thread = std::this_thread::get_id();
            rec.site_word = &entry->pipeline_word;
            pipeline_->event(rec);
            return std::uint64_t{TT_STATUS_OK};
        }

        // Insert the span, then tell the pipeline. No other thread can use
        // the id before we answer it, so the handle may follow a moment later.
        const auto now = clock::now();  // a span's start is persisted: always taken
        std::uint64_t id = 0;
        {
            // Re-check what another thread may have changed meanwhile.
            if (o.parent == TT_PARENT_EXPLICIT && !span_is_live(o.related))
                return fail(receive_errc::unknown_span, "explicit parent " + id_text(o.related) + " is not a live span");
            model::field_values merged;
            merged.reserve(o.values.size());
            merge_values(merged, o.values);
            const std::size_t bytes = fields_bytes(merged);
            detail::value_blob values;
            values.assign(pack(blob_scratch, site, merged));
            span_quota quota(*this);
            std::uint32_t depth = 1;
            span_shard* shard = nullptr;
            if (auto refused = reserve_span(quota, fields_bytes(o.values), bytes, plugin_parent,
                                            o.propose_id ? o.span_id : 0, id, depth, shard))
                return *refused;
            std::lock_guard lock(shard->mutex, std::adopt_lock);
            detail::span_rec* const e = &shard->t.add(shard->uncommitted, id, depth, bytes);
            e->parent_id = plugin_parent;
            e->values = std::move(values);
            e->ref_count = 1;
            e->set_start(now);
            e->site = entry->number;
            mark_dirty();
            quota.keep();
        }
        const auto refs = refs_of(o.values);
        span_attrs attrs;
        attrs.site = site;
        attrs.plugin = lineage_;
        attrs.plugin_key = plugin_key_;
        attrs.parent = parent;
        attrs.values = refs;
        attrs.time = now;
        attrs.thread = std::this_thread::get_id();
        attrs.plugin_span_id = id;
        const span_handle h = pipeline_->new_span(attrs);
        {
            auto& sh = local_->shard_of(id);
            std::lock_guard llock(sh.mutex);
            sh.t.set_handle(id, h);
        }
        return id;
    }

    case TT_EVENT_FOLLOWS_FROM: {
        span_handle cause_handle = 0;
        bool cause_live = false;
        {
            span_shard& sh = span_shard_of(o.span_id);
            std::lock_guard lock(sh.mutex);
            if (!sh.t.has(o.span_id))
                return fail(receive_errc::unknown_span, "follows-from on unknown span " + id_text(o.span_id));
            if (o.related == 0 || (o.related & top_bit) != 0)
                return fail(receive_errc::unknown_span, "follows-from cause " + id_text(o.related) + " is not a span id");
            auto& ff = sh.t.follows[o.span_id];
            if (std::find(ff.begin(), ff.end(), o.related) == ff.end()) {
                ff.push_back(o.related);
                mark_dirty();
            }
        }
        // The cause's shard apart: one span shard's lock at a time.
        {
            span_shard& sh = span_shard_of(o.related);
            std::lock_guard lock(sh.mutex);
            cause_live = sh.t.has(o.related);
            if (!cause_live) {
                auto& sh = local_->shard_of(o.related);
                std::lock_guard llock(sh.mutex);
                cause_handle = sh.closed_handle(o.related);
            }
        }
        const span_handle h = materialize(o.span_id);
        if (cause_live)
            cause_handle = materialize(o.related);
        if (h != 0 && cause_handle != 0)
            pipeline_->follows_from(h, cause_handle);
        return std::uint64_t{TT_STATUS_OK};
    }

    case TT_EVENT_SPAN_ENTERED: {
        const auto me = std::this_thread::get_id();
        // The common case, a span that has its pipeline span: the local
        // table alone answers (a local entry exists only for a live span).
        span_handle known = 0;
        {
            auto& sh = local_->shard_of(o.span_id);
            std::lock_guard llock(sh.mutex);
            auto* e = sh.t.spans.find(o.span_id);
            if (e != nullptr && e->handle != 0) {
                sh.t.add_enter(*e, me);
                mark_dirty();  // a rollback must exit it
                known = e->handle;
            }
        }
        if (known != 0) {
            pipeline_->enter(known);
            return std::uint64_t{TT_STATUS_OK};
        }
        if (!span_is_live(o.span_id))
            return fail(receive_errc::unknown_span, "enter of unknown span " + id_text(o.span_id));
        const span_handle h = materialize(o.span_id);
        if (h == 0)
            return fail(receive_errc::unknown_callsite, "span " + id_text(o.span_id) + " has no known call site");
        {
            span_shard& ssh = span_shard_of(o.span_id);
            std::lock_guard lock(ssh.mutex);
            if (!ssh.t.has(o.span_id))
                return fail(receive_errc::unknown_span, "enter of unknown span " + id_text(o.span_id));
            auto& sh = local_->shard_of(o.span_id);
            std::lock_guard llock(sh.mutex);
            sh.t.add_enter(sh.t.get(o.span_id), me);
            mark_dirty();
        }
        pipeline_->enter(h);
        return std::uint64_t{TT_STATUS_OK};
    }

    case TT_EVENT_SPAN_EXITED: {
        span_handle h = 0;
        bool local = false;
        {
            auto& sh = local_->shard_of(o.span_id);
            std::lock_guard llock(sh.mutex);
            if (auto* e = sh.t.spans.find(o.span_id)) {
                local = true;
                const auto me = std::this_thread::get_id();
                const auto* entered = sh.t.entered_of(*e);
                // Entered on other threads only: the plugin exits on the
                // wrong thread. Refused; every thread's stack stays as it is.
                if (entered != nullptr && !entered->has(me))
                    return fail(receive_errc::wrong_thread,
                                "exit of span " + id_text(o.span_id) +
                                    " on a thread where it is not entered (it is on " +
                                    std::to_string(entered->threads()) + " other thread(s))");
                // Not entered anywhere (e.g. entered before a host restart):
                // the pipeline never saw the enter, so it sees no exit.
                if (entered != nullptr) {
                    h = e->handle;
                    mark_dirty();
                    sh.t.remove_enter(*e, me);
                }
            }
        }
        if (!local && !span_is_live(o.span_id))
            return fail(receive_errc::unknown_span, "exit of unknown span " + id_text(o.span_id));
        if (h != 0)
            pipeline_->exit(h);
        return std::uint64_t{TT_STATUS_OK};
    }

    case TT_EVENT_SPAN_CLONED: {
        span_shard& sh = span_shard_of(o.span_id);
        std::lock_guard lock(sh.mutex);
        auto* it = sh.t.find(o.span_id);
        if (it == nullptr)
            return fail(receive_errc::unknown_span, "clone of unknown span " + id_text(o.span_id));
        if (it->ref_count == max_ref_count)
            return fail(receive_errc::quota_exceeded, "span " + id_text(o.span_id) + " already has " +
                                                          std::to_string(max_ref_count) + " handles");
        ++it->ref_count;
        mark_dirty();
        return std::uint64_t{TT_STATUS_OK};
    }

    case TT_EVENT_SPAN_DROPPED:
        if (!drop_span(o.span_id))
            return fail(receive_errc::unknown_span, "drop of unknown or closed span " + id_text(o.span_id));
        return std::uint64_t{TT_STATUS_OK};

    case TT_EVENT_VALUES_RECORDED: {
        span_handle h = 0;
        {
            span_shard& sh = span_shard_of(o.span_id);
            std::lock_guard lock(sh.mutex);
            auto* it = sh.t.find(o.span_id);
            if (it == nullptr)
                return fail(receive_errc::unknown_span, "values recorded on unknown span " + id_text(o.span_id));
            const model::callsite* const site = (*sites_)[it->site];
            if (site == nullptr)
                return fail(receive_errc::unknown_callsite, "span " + id_text(o.span_id) + " has call site " +
                                                                id_text(sh.t.callsite_of(*sites_, *it)) +
                                                                ", which is not known");
            if (const std::string* bad = undeclared_field(*site, o.values))
                return fail(receive_errc::unknown_field, "value for field '" + *bad + "', which call site '" +
                                                             site->name + "' does not declare");
            model::field_values current = unpack(*it, site);
            const std::ptrdiff_t delta = merge_delta(current, o.values);
            if (delta > 0 &&
                bytes_of_usage() + static_cast<std::size_t>(delta) > limits_.max_string_bytes)
                return fail(receive_errc::quota_exceeded,
                            "string quota of " + std::to_string(limits_.max_string_bytes) + " bytes reached");
            const std::ptrdiff_t real = merge_values(current, o.values);
            const auto bytes = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(sh.t.bytes_of(*it)) + real);
            if (bytes > max_span_bytes)
                return fail(receive_errc::quota_exceeded,
                            "string quota of " + std::to_string(limits_.max_string_bytes) + " bytes reached");
            sh.t.make_room(o.span_id, bytes);
            it->values.assign(pack(blob_scratch, site, current));
            sh.t.set_bytes(*it, bytes);
            // A signed change: fetch_add of its two's complement when it shrinks.
            usage_.fetch_add(static_cast<std::uint64_t>(real), std::memory_order_relaxed);
            mark_dirty();
            // A span without a pipeline span yet (host restart) gets its
            // values when it is created.
            h = local_->handle_of(o.span_id);
        }
        if (h != 0) {
            const auto refs = refs_of(o.values);
            pipeline_->record(h, refs);
        }
        return std::uint64_t{TT_STATUS_OK};
    }
    default: return fail(receive_errc::unknown_event_kind, "unknown event kind " + std::to_string(o.kind));
    }
}

// ---------------------------------------------------------------------------
// persistence and stats

persisted_metadata receiver::persist_metadata() const
{
    persisted_metadata out;
    {
        std::lock_guard lock(mutex_);
        out.reserve(callsites_.size());
        for (const auto& [id, e] : callsites_) {
            (void)id;
            out.push_back(e.site);
        }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
}

// Under every span shard's lock. The spans go out in id order: each shard's
// in its slot order when that is already id order (ids ascend, freed slots
// are reused), else sorted, and the shards merged.
void receiver::fill_snapshot(persisted_spans& out) const
{
    // Past every id given, not past every block taken: a restored receiver
    // goes on where this one's spans ended.
    std::uint64_t given = restored_next_id_ - 1;
    for (std::size_t i = 0; i < span_shard_count; ++i)
        given = std::max(given, span_shards_[i].max_given);
    out.next_id = (given + 1) & ~top_bit;
    if (out.next_id == 0)
        out.next_id = 1;
    std::size_t total = 0;
    for (std::size_t i = 0; i < span_shard_count; ++i)
        total += span_shards_[i].t.size();
    out.spans.reserve(out.spans.size() + total);
    auto put = [&](const span_table& st, const detail::span_rec& e) {
        auto& ps = out.spans.emplace_back();
        ps.id = e.key;
        ps.callsite_id = st.callsite_of(*sites_, e);
        ps.parent_id = e.parent_id;
        to_persisted(e, (*sites_)[e.site], persist_scratch, ps.values);
        ps.ref_count = e.ref_count;
        ps.start = e.start();
        if (!st.follows.empty())
            if (auto ff = st.follows.find(e.key); ff != st.follows.end())
                ps.follows_from = ff->second;
    };
    // (id, slot) of each shard, in id order.
    std::array<std::vector<std::pair<std::uint64_t, std::uint32_t>>, span_shard_count> order;
    for (std::size_t i = 0; i < span_shard_count; ++i) {
        auto& o = order[i];
        o.reserve(span_shards_[i].t.size());
        bool sorted = true;
        span_shards_[i].t.spans.for_each([&](const detail::span_rec& e, std::uint32_t slot) {
            sorted = sorted && (o.empty() || e.key > o.back().first);
            o.emplace_back(e.key, slot);
        });
        if (!sorted)
            std::sort(o.begin(), o.end());
    }
    std::array<std::size_t, span_shard_count> next{};
    for (std::size_t n = 0; n < total; ++n) {
        std::size_t best = span_shard_count;
        for (std::size_t i = 0; i < span_shard_count; ++i)
            if (next[i] < order[i].size() &&
                (best == span_shard_count || order[i][next[i]].first < order[best][next[best]].first))
                best = i;
        const span_table& st = span_shards_[best].t;
        put(st, std::as_const(st.spans).at(order[best][next[best]++].second));
    }
}

persisted_spans receiver::persist()
{
    persisted_spans out;
    std::lock_guard lock(mutex_);
    const all_span_shards spans_locked(*this);
    fill_snapshot(out);
    // Only once the snapshot is taken (it may throw): then nothing is committed.
    for (std::size_t i = 0; i < span_shard_count; ++i) {
        span_shard& sh = span_shards_[i];
        if (sh.uncommitted != 0) {
            sh.t.spans.for_each([](detail::span_rec& e, std::uint32_t) { e.uncommitted = 0; });
            sh.uncommitted = 0;
        }
    }
    const local_spans::all_locked locked(*local_);  // enter and exit set dirty_ under a local shard's lock alone
    dirty_.store(false, std::memory_order_relaxed);
    return out;
}

persisted_spans receiver::snapshot() const
{
    persisted_spans out;
    std::lock_guard lock(mutex_);
    const all_span_shards spans_locked(*this);
    fill_snapshot(out);
    return out;
}

bool receiver::span_is_live(std::uint64_t span_id) const noexcept
{
    span_shard& sh = span_shard_of(span_id);
    std::lock_guard lock(sh.mutex);
    return sh.t.has(span_id);
}

void receiver::refresh_interest() noexcept
{
    // Entries are never erased and their call sites never change, so the
    // pointers stay valid once the lock is gone: the pipeline is never
    // called under the table lock.
    std::vector<callsite_entry*> entries;
    try {
        std::lock_guard lock(mutex_);
        entries.reserve(callsites_.size());
        for (auto& [id, e] : callsites_) {
            (void)id;
            entries.push_back(&e);
        }
    } catch (...) {
        return;
    }
    for (auto* e : entries)
        e->cached.store(static_cast<std::uint32_t>(pipeline_->interest_in(e->site)), std::memory_order_relaxed);
}

std::vector<callsite_info> receiver::callsite_infos() const
{
    std::vector<callsite_info> out;
    {
        std::lock_guard lock(mutex_);
        out.reserve(callsites_.size());
        for (const auto& [id, e] : callsites_) {
            (void)id;
            out.push_back(callsite_info{e.site, static_cast<interest>(e.cached.load(std::memory_order_relaxed)),
                                        e.hit_total()});
        }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.site.id < b.site.id; });
    return out;
}

bool receiver::committed() const
{
    std::lock_guard lock(mutex_);
    return !dirty_.load(std::memory_order_relaxed);
}

receiver_stats receiver::stats() const
{
    receiver_stats s;
    static_assert(count_stripes == detail::counter_stripes);
    for (const auto& stripe : event_counts_)
        for (std::size_t i = 0; i < s.events.size(); ++i)
            s.events[i] += stripe.events[i].load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < s.errors.size(); ++i)
        s.errors[i] = error_counts_[i].load(std::memory_order_relaxed);
    s.filtered = filtered_.load(std::memory_order_relaxed);
    s.live_spans = live_of_usage();
    s.string_bytes = bytes_of_usage();
    std::lock_guard lock(mutex_);
    s.callsites = callsites_.size();
    // The fast path counts a received event only in its call site's entry.
    for (const auto& [id, entry] : callsites_)
        s.events[TT_EVENT_NEW_EVENT - 1] += entry.fast_event_total();
    return s;
}

std::vector<std::string> receiver::last_errors() const
{
    std::lock_guard lock(log_mutex_);
    return {error_log_.begin(), error_log_.end()};
}

}  // namespace tt::host
