// The dispatcher (dispatcher.hpp). Its hot paths take no lock and write no
// cache line that another emitting thread writes too:
//
// - Span nodes live in slabs owned by the dispatcher and are recycled through
//   a free list. A node is small (96 bytes): the number of the interned
//   (call site, plugin name) pair, and the values packed into bytes in the
//   node (packed_values; larger ones in a buffer the node keeps), so a span
//   allocates nothing once warm.
// - Layers see a span as a span_ref over a model::field_values. Those are
//   built when a layer is handed the span, into a per-thread cache of views
//   keyed by handle (a span's values never change under its handle: record()
//   publishes an immutable version with views of its own), and stay valid
//   for the outermost read section that took them.
// - Readers (event, enter, exit, the filter scope) run inside an epoch
//   section: a per-thread slot that says "I may be reading nodes". A closed
//   node, or a replaced field snapshot, is only recycled once every section
//   that was open when it was retired has ended (epoch-based reclamation,
//   as in RCU). Open spans are found through a table indexed by handle whose
//   slots hold short chains of nodes; a node is confirmed by its tag (the
//   handle while open), and handles are never reused.
// - Counters are striped per thread, padded to a cache line each.
// - Call sites are interned in a table that only grows and is read without a
//   lock; static filter verdicts (and the interned copy) are cached per
//   thread per call site, keyed so that a plugin cannot take over another
//   call site's entry (site_memo), and a span's own filter level per span.
//   An event that brings its sender's word for the call site
//   (event_record::site_word, a receiver's) finds the verdict there instead,
//   stamped with the filter it was computed under.
#include <tracetunnel/host/dispatcher.hpp>

#include "spin_lock.hpp"
#include "thread_stripe.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace tt::host {

namespace {

constexpr std::string_view host_plugin = "host";

// ---------------------------------------------------------------------------
// Epoch-based reclamation, process-wide. A reader publishes the global epoch
// in its own slot (0 = not reading) for the length of a section; whoever
// retires an object notes the epoch, and frees it once no slot shows an epoch
// at or below that note. Slots are never freed: a thread that ends gives its
// slot to a later thread.

struct alignas(64) reader_slot {
    std::atomic<std::uint64_t> epoch{0};
    std::atomic<bool> used{false};
    reader_slot* next = nullptr;  // immutable once published
};

struct alignas(64) epoch_domain {
    std::atomic<std::uint64_t> epoch{1};
    std::atomic<reader_slot*> slots{nullptr};
};

constinit epoch_domain domain;

reader_slot* claim_slot()
{
    for (reader_slot* s = domain.slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
        bool free = false;
        if (!s->used.load(std::memory_order_relaxed) &&
            s->used.compare_exchange_strong(free, true, std::memory_order_acq_rel))
            return s;
    }
    auto* s = new reader_slot;  // once per concurrent thread; kept for later threads
    s->used.store(true, std::memory_order_relaxed);
    reader_slot* head = domain.slots.load(std::memory_order_relaxed);
    do {
        s->next = head;
    } while (!domain.slots.compare_exchange_weak(head, s, std::memory_order_release, std::memory_order_relaxed));
    return s;
}

// Nodes and snapshots reached inside a section stay valid until it ends, and
// so do the span views it hands out (view_of). Sections nest. The slot is
// written with seq_cst (and the loads of what it protects are seq_cst) so
// that a reclaimer either sees the slot or the reader sees the object already
// unlinked.
class read_section {
public:
    read_section() noexcept;
    ~read_section();
    read_section(const read_section&) = delete;
    read_section& operator=(const read_section&) = delete;
};

// The oldest epoch a section still reads under, max() when none.
std::uint64_t oldest_reader() noexcept
{
    std::uint64_t oldest = std::numeric_limits<std::uint64_t>::max();
    for (reader_slot* s = domain.slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
        const std::uint64_t e = s->epoch.load(std::memory_order_seq_cst);
        if (e != 0 && e < oldest)
            oldest = e;
    }
    return oldest;
}

// The node pools' lock (spin_lock.hpp): held for a reclaim batch at most,
// and each thread stripe has its own pool, so it is rarely contended.
using detail::spin_lock;

// A site word (event_record::site_word) holds stamp << 2 | interest.
std::uint64_t next_config_stamp() noexcept
{
    static std::atomic<std::uint64_t> counter{1};
    return counter.fetch_add(1, std::memory_order_relaxed) & (~std::uint64_t{0} >> 2);
}

std::uint64_t next_owner_id() noexcept
{
    static std::atomic<std::uint64_t> counter{1};
    return counter.fetch_add(1, std::memory_order_relaxed);
}

// An interned plugin name: a list that only grows, read without a lock.
struct interned_name {
    std::string name;
    const interned_name* next = nullptr;  // immutable once published
};

// Where spans come from: a call site as one plugin sent it (a span node keeps
// one pointer for both). `known` is false for the placeholder of a plugin
// that sent a span without a call site.
struct interned_site {
    model::callsite site;
    const std::string* plugin = nullptr;  // interned
    bool known = true;
    // No two of the site's first name_inline fields share a name, so a field
    // index names one value (unpack's duplicate check goes by index).
    bool distinct_fields = true;
    std::uint32_t number = 0;             // site_numbers::at(number) is this one
    const interned_site* next = nullptr;  // same bucket; immutable once published
};

// ---------------------------------------------------------------------------
// Thread ids as 14-bit numbers, so that a span node keeps 2 bytes (with its
// two flags) for its thread instead of 8. Interned for the life of the process: the library
// reuses a thread's id for later threads, so there are few distinct ones.
// Number 0 is the default id (and what an id gets past the last number or
// when interning it fails to allocate: the span then shows no thread).

class thread_numbers {
public:
    static std::uint32_t number_of(std::thread::id id) noexcept
    {
        // Nearly always the calling thread's id, or the one asked last here.
        thread_local std::thread::id last_id;
        thread_local std::uint32_t last = 0;
        if (last != 0 && id == last_id)
            return last;
        if (id == std::thread::id{})
            return 0;
        const std::uint32_t n = intern(id);
        if (n != 0) {
            last_id = id;
            last = n;
        }
        return n;
    }
    static std::thread::id id_of(std::uint32_t n) noexcept
    {
        if (n == 0)
            return {};
        const std::thread::id* chunk = chunks()[n / chunk_size].load(std::memory_order_acquire);
        return chunk[n % chunk_size];
    }

private:
    static constexpr std::uint32_t chunk_size = 1024;
    static constexpr std::uint32_t chunk_count = 16;  // 16K distinct ids: span_node::thread's 14 bits

    static std::atomic<std::thread::id*>* chunks() noexcept
    {
        static std::atomic<std::thread::id*> c[chunk_count] = {};
        return c;
    }
    [[gnu::noinline]] static std::uint32_t intern(std::thread::id id) noexcept
    {
        static std::mutex mutex;
        static std::unordered_map<std::thread::id, std::uint32_t> numbers;
        try {
            std::lock_guard lock(mutex);
            if (const auto it = numbers.find(id); it != numbers.end())
                return it->second;
            const auto n = static_cast<std::uint32_t>(numbers.size() + 1);
            if (n >= chunk_size * chunk_count)
                return 0;
            std::atomic<std::thread::id*>& slot = chunks()[n / chunk_size];
            std::thread::id* chunk = slot.load(std::memory_order_relaxed);
            if (chunk == nullptr) {
                chunk = new std::thread::id[chunk_size];  // never freed: numbers stay valid
                slot.store(chunk, std::memory_order_release);
            }
            numbers.emplace(id, n);
            // Published with the node that carries n (or by the mutex).
            chunk[n % chunk_size] = id;
            return n;
        } catch (...) {
            return 0;
        }
    }
};

// ---------------------------------------------------------------------------
// Interned call sites by 4-byte number, so that a span node keeps 4 bytes for
// its origin instead of a pointer (S11). The directory is process-wide, so a
// node reads it without its dispatcher; each dispatcher claims chunks of
// numbers for the sites it interns (stored in the chunk it hands over) and
// gives them back when it dies, when no node of it is left.

class site_numbers {
public:
    static constexpr std::uint32_t chunk_bits = 8;
    static constexpr std::uint32_t chunk_size = std::uint32_t{1} << chunk_bits;
    static constexpr std::uint32_t chunk_count = 16384;  // 4M sites in the live dispatchers

    static const interned_site& at(std::uint32_t n) noexcept
    {
        return chunks()[n >> chunk_bits].load(std::memory_order_acquire)[n & (chunk_size - 1)];
    }
    // Publishes `sites` (chunk_size of them) under a free chunk: the number of
    // its first. std::bad_alloc when every chunk is taken.
    static std::uint32_t claim(interned_site* sites)
    {
        std::lock_guard lock(state().mutex);
        auto& st = state();
        std::uint32_t c;
        if (!st.free.empty()) {
            c = st.free.back();
            st.free.pop_back();
        } else {
            if (st.next == chunk_count)
                throw std::bad_alloc();
            c = st.next++;
        }
        chunks()[c].store(sites, std::memory_order_release);
        return c << chunk_bits;
    }
    static void release(std::uint32_t first) noexcept
    {
        std::lock_guard lock(state().mutex);
        const std::uint32_t c = first >> chunk_bits;
        chunks()[c].store(nullptr, std::memory_order_relaxed);
        try {
            state().free.push_back(c);
        } catch (...) {
            // the chunk number is lost to reuse
        }
    }

private:
    struct shared {
        std::mutex mutex;
        std::vector<std::uint32_t> free;
        std::uint32_t next = 0;
    };
    // Never destroyed: a dispatcher that is itself a static object may give
    // its chunks back after the function-local statics are gone.
    static shared& state() noexcept
    {
        static shared* const s = new shared;
        return *s;
    }
    static std::atomic<interned_site*>* chunks() noexcept
    {
        static std::atomic<interned_site*> c[chunk_count] = {};
        return c;
    }
};

// ---------------------------------------------------------------------------
// Span nodes

struct span_version;

// A span's values as the plugin gave them at creation, packed into bytes
// (the common span fits in the node itself): per field one header byte (the
// model::value alternative << 4 | the field's index in the call site, or
// name_inline and the name itself) and the value (fixed-width scalars,
// varint-length-prefixed text). Layers get a model::field_values only when
// they are handed the span, unpacked into a per-thread cache (view_cache).
// Byte-aligned so that it fills the end of span_node.
class packed_values {
public:
    // Sized so that span_node is 96 bytes: a span of three small fields
    // (an integer, a short text and a double) fits.
    static constexpr std::size_t inline_bytes = 29;

    packed_values() noexcept = default;
    packed_values(const packed_values&) = delete;
    packed_values& operator=(const packed_values&) = delete;
    ~packed_values()
    {
        if (len_ == on_heap)
            delete[] heap().data;
    }

    // Keeps a heap buffer once grown (and then uses it for every size), so a
    // recycled node packs without allocating.
    void assign(field_refs values, const model::callsite* site);
    // Sets `into` to the values (a later duplicate name replaces an earlier
    // one), assigning over what is there so its strings keep their capacity.
    void unpack(const interned_site& origin, model::field_values& into) const;

private:
    // The heap buffer, kept in the inline bytes while len_ == on_heap.
    struct heap_ref {
        std::byte* data;
        std::uint32_t size;
        std::uint32_t cap;
    };
    static_assert(sizeof(heap_ref) <= inline_bytes);
    static constexpr std::uint8_t on_heap = 0xff;
    static_assert(inline_bytes < on_heap);

    heap_ref heap() const noexcept
    {
        heap_ref h;
        std::memcpy(&h, bytes_, sizeof h);
        return h;
    }
    void set_heap(const heap_ref& h) noexcept { std::memcpy(bytes_, &h, sizeof h); }

    std::uint8_t len_ = 0;  // bytes used inline, or on_heap
    std::byte bytes_[inline_bytes];
};

struct span_node {
    // The handle while the span is open; with closed_bit set once closed
    // (and while free). Handles are never reused, so `tag == h` identifies
    // open span h, and the handle stays readable after the close.
    std::atomic<std::uint64_t> tag{0};
    // 1 while open, plus 1 per child whose parent_node this is.
    std::atomic<std::uint32_t> refs{0};
    // Set before the node is published, constant while it is in use (so are
    // the fields from `parent_node` on).
    std::uint32_t origin = 0;  // site_numbers: call site and plugin name
    // The span's filter level, cached: filter generation << 32 | values
    // version << 8 | level_valid | level. record() bumps the version (and
    // clears level_valid); span_level() stores a level only by a CAS from the
    // word it read before it read the values, so a level computed from
    // values that a record() replaced meanwhile is never kept.
    std::atomic<std::uint64_t> level_cache{0};
    static constexpr std::uint64_t level_valid = 0x80;
    static constexpr std::uint64_t version_bits = 0xffffff00ULL;
    // What layers see after a record() or follows_from(); null until then
    // (the view is then built from the node). Replaced versions are retired.
    std::atomic<const span_version*> version_ptr{nullptr};
    // The next node in the same handle-table slot while linked (readers may
    // walk it inside a read section); the next free node while free.
    std::atomic<span_node*> chain{nullptr};

    span_node* parent_node = nullptr;  // nearest enabled ancestor, referenced (refs)
    clock::time_point start;
    std::uint64_t plugin_span_id = 0;
    std::uint16_t thread : 14 = 0;  // thread_numbers
    std::uint16_t resumed : 1 = 0;
    std::uint16_t enabled : 1 = 0;
    packed_values initial;

    // Handles count from 1 and never get near 2^63.
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
    // Readable while the node is reachable (a read section), open or closed.
    span_handle handle() const noexcept { return tag.load(std::memory_order_relaxed) & ~closed_bit; }
    bool is(span_handle h) const noexcept { return tag.load() == h; }
    const interned_site& interned() const noexcept { return site_numbers::at(origin); }
    const model::callsite* site() const noexcept
    {
        const interned_site& o = interned();
        return o.known ? &o.site : nullptr;
    }
};
// The dispatcher's memory per live span (S11): keep it from growing unnoticed.
static_assert(sizeof(span_node) == 96);

// A span's view after a record() or follows_from(): immutable once published.
struct span_version {
    span_ref view;
    model::field_values fields;
    std::vector<span_handle> follows;
};

// Everything of a span's view but its fields and follows-from links.
span_ref base_view(const span_node& n) noexcept
{
    span_ref v;
    v.id = n.handle();
    const interned_site& origin = n.interned();
    v.site = origin.known ? &origin.site : nullptr;
    v.plugin = *origin.plugin;
    v.parent = n.parent_node != nullptr ? n.parent_node->handle() : 0;
    v.start = n.start;
    v.thread = thread_numbers::id_of(n.thread);
    v.resumed = n.resumed != 0;
    v.plugin_span_id = n.plugin_span_id;
    return v;
}

// a == b for short texts (plugin and field names) without a call to memcmp.
[[gnu::always_inline]] inline bool same_text(std::string_view a, std::string_view b) noexcept
{
    const std::size_t n = a.size();
    if (n != b.size())
        return false;
    const char* x = a.data();
    const char* y = b.data();
    if (n >= 8) {
        std::uint64_t p, q, r, s;
        std::memcpy(&p, x, 8);
        std::memcpy(&q, y, 8);
        std::memcpy(&r, x + n - 8, 8);
        std::memcpy(&s, y + n - 8, 8);
        return p == q && r == s && (n <= 16 || std::memcmp(x + 8, y + 8, n - 16) == 0);
    }
    if (n >= 4) {
        std::uint32_t p, q, r, s;
        std::memcpy(&p, x, 4);
        std::memcpy(&q, y, 4);
        std::memcpy(&r, x + n - 4, 4);
        std::memcpy(&s, y + n - 4, 4);
        return p == q && r == s;
    }
    for (std::size_t i = 0; i < n; ++i)
        if (x[i] != y[i])
            return false;
    return true;
}

// The low nibble of a field's header byte: its index among the call site's
// fields, or name_inline (the name follows, as text).
constexpr std::uint8_t name_inline = 0x0f;

template <class T>
void put(std::byte*& out, const T& v) noexcept
{
    std::memcpy(out, &v, sizeof(T));
    out += sizeof(T);
}

template <class T>
T get(const std::byte*& in) noexcept
{
    T v;
    std::memcpy(&v, in, sizeof(T));
    in += sizeof(T);
    return v;
}

// Lengths are LEB128 varints: short texts (the common case) take one byte.
constexpr std::size_t varint_size(std::size_t n) noexcept
{
    std::size_t k = 1;
    while (n >= 0x80) {
        n >>= 7;
        ++k;
    }
    return k;
}

void put_varint(std::byte*& out, std::size_t n) noexcept
{
    while (n >= 0x80) {
        *out++ = static_cast<std::byte>((n & 0x7f) | 0x80);
        n >>= 7;
    }
    *out++ = static_cast<std::byte>(n);
}

std::size_t get_varint(const std::byte*& in) noexcept
{
    std::size_t n = 0;
    for (unsigned shift = 0;; shift += 7) {
        const auto b = static_cast<std::uint8_t>(*in++);
        n |= std::size_t{b & 0x7fu} << shift;
        if (b < 0x80)
            return n;
    }
}

constexpr std::size_t text_size(std::size_t n) noexcept
{
    return varint_size(n) + n;
}

void put_text(std::byte*& out, std::string_view s) noexcept
{
    put_varint(out, s.size());
    if (!s.empty())
        std::memcpy(out, s.data(), s.size());
    out += s.size();
}

std::string_view get_text(const std::byte*& in) noexcept
{
    const std::size_t n = get_varint(in);
    const std::string_view s(reinterpret_cast<const char*>(in), n);
    in += n;
    return s;
}

// Whether no two of the first name_inline names are the same.
bool distinct_names(const std::vector<std::string>& names) noexcept
{
    const std::size_t n = std::min<std::size_t>(names.size(), name_inline);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j)
            if (same_text(names[i], names[j]))
                return false;
    return true;
}

// The index of `name` among the call site's first fields, or name_inline.
[[gnu::noinline]] std::uint8_t name_search(const std::vector<std::string>& names, std::string_view name) noexcept
{
    const std::size_t n = std::min<std::size_t>(names.size(), name_inline);
    for (std::size_t i = 0; i < n; ++i)
        if (same_text(names[i], name))
            return static_cast<std::uint8_t>(i);
    return name_inline;
}

// The index of `name` among the call site's fields, or name_inline. Values
// come in the call site's order, so `guess` is tried first, inline; only a
// miss pays for a call and the search.
[[gnu::always_inline]] inline std::uint8_t name_index(const model::callsite* site, std::string_view name,
                                                      std::size_t guess) noexcept
{
    if (site == nullptr)
        return name_inline;
    const auto& names = site->fields;
    if (guess < name_inline && guess < names.size() && same_text(names[guess], name))
        return static_cast<std::uint8_t>(guess);
    return name_search(names, name);
}

std::size_t packed_size(const value_ref& v) noexcept
{
    return v.visit(
        [](const auto& x) -> std::size_t {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                return 1;
            else if constexpr (std::is_same_v<T, std::string_view>)
                return text_size(x.size());
            else if constexpr (std::is_same_v<T, value_ref::debug>)
                return text_size(x.text.size());
            else if constexpr (std::is_same_v<T, value_ref::error_view>) {
                std::size_t n = varint_size(x.size());
                for (std::size_t i = 0; i < x.size(); ++i)
                    n += text_size(x[i].size());
                return n;
            } else
                return sizeof(T);
        });
}

void pack_value(std::byte*& out, const value_ref& v) noexcept
{
    v.visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                put(out, static_cast<std::uint8_t>(x ? 1 : 0));
            else if constexpr (std::is_same_v<T, std::string_view>)
                put_text(out, x);
            else if constexpr (std::is_same_v<T, value_ref::debug>)
                put_text(out, x.text);
            else if constexpr (std::is_same_v<T, value_ref::error_view>) {
                put_varint(out, x.size());
                for (std::size_t i = 0; i < x.size(); ++i)
                    put_text(out, x[i]);
            } else
                put(out, x);
        });
}

static_assert(std::variant_size_v<model::value> <= 16, "a value's alternative must fit a nibble");
static_assert(std::is_same_v<std::variant_alternative_t<static_cast<std::size_t>(value_ref::kind::string) - 1, model::value>,
                             std::string>,
              "value_ref::kind - 1 is the model::value alternative");

void packed_values::assign(field_refs values, const model::callsite* site)
{
    // The name indexes of the first fields, found once.
    constexpr std::size_t known = 16;
    std::array<std::uint8_t, known> names{};
    std::size_t need = 0;
    std::size_t i = 0;
    for (const auto& f : values) {
        need += 1 + packed_size(f.value);  // an empty ref packs as the empty string
        const std::uint8_t name = name_index(site, f.name, i);
        if (i < known)
            names[i] = name;
        if (name == name_inline)
            need += text_size(f.name.size());
        ++i;
    }
    if (need > std::numeric_limits<std::uint32_t>::max())
        throw std::length_error("span values too large");
    std::byte* out = bytes_;
    if (len_ == on_heap || need > inline_bytes) {
        heap_ref h = len_ == on_heap ? heap() : heap_ref{nullptr, 0, 0};
        if (need > h.cap) {
            const std::size_t cap = std::max<std::size_t>(need, std::size_t{h.cap} * 2);
            auto* fresh = new std::byte[cap];
            delete[] h.data;
            h.data = fresh;
            h.cap = static_cast<std::uint32_t>(std::min<std::size_t>(cap, std::numeric_limits<std::uint32_t>::max()));
        }
        h.size = static_cast<std::uint32_t>(need);
        set_heap(h);
        len_ = on_heap;
        out = h.data;
    } else {
        len_ = static_cast<std::uint8_t>(need);
    }
    i = 0;
    for (const auto& f : values) {
        const value_ref& v = f.value;
        // The value's alternative in model::value; an empty ref is the empty string's.
        const std::size_t type = static_cast<std::size_t>(v ? v.type() : value_ref::kind::string) - 1;
        const std::uint8_t name = i < known ? names[i] : name_index(site, f.name, i);
        ++i;
        put(out, static_cast<std::uint8_t>(type << 4 | name));
        if (name == name_inline)
            put_text(out, f.name);
        pack_value(out, v);
    }
}

// Sets `t` to `s` in the capacity it has: clear then append is a shorter
// path through libstdc++ than assign (no check for `s` inside `t`, which it
// never is here: `s` is packed bytes or an interned name).
inline void set_text(std::string& t, std::string_view s)
{
    t.clear();
    t.append(s);
}

// Sets `slot` to the packed value at `in`, reusing its string's capacity.
void unpack_value(const std::byte*& in, std::uint8_t type, model::value& slot)
{
    switch (type) {
    case 0:
        slot = get<std::uint8_t>(in) != 0;
        break;
    case 1:
        slot = get<std::int64_t>(in);
        break;
    case 2:
        slot = get<std::uint64_t>(in);
        break;
    case 3:
        slot = get<model::i128>(in);
        break;
    case 4:
        slot = get<model::u128>(in);
        break;
    case 5:
        slot = get<double>(in);
        break;
    case 6: {
        const std::string_view s = get_text(in);
        if (auto* t = std::get_if<std::string>(&slot))
            set_text(*t, s);
        else
            slot.emplace<std::string>(s);
        break;
    }
    case 7: {
        const std::string_view s = get_text(in);
        if (auto* t = std::get_if<model::debug_text>(&slot))
            set_text(t->text, s);
        else
            slot.emplace<model::debug_text>(model::debug_text{std::string(s)});
        break;
    }
    default: {
        auto* chain = std::get_if<model::error_chain>(&slot);
        if (chain == nullptr)
            chain = &slot.emplace<model::error_chain>();
        chain->chain.resize(get_varint(in));
        for (auto& s : chain->chain)
            set_text(s, get_text(in));
        break;
    }
    }
}

// The slot for a value named `name` that is not in into[0, n): into[n],
// renamed if it held another name, or a new last one.
[[gnu::noinline]] model::value& add_slot(model::field_values& into, std::size_t n, std::string_view name)
{
    if (n < into.size()) {
        auto& p = into[n];
        if (!same_text(p.first, name))
            set_text(p.first, name);
        return p.second;
    }
    return into.emplace_back(std::string(name), model::value()).second;
}

// The place of the value named `name` in into[0, n), or n.
[[gnu::noinline]] std::size_t find_slot(const model::field_values& into, std::size_t n, std::string_view name) noexcept
{
    std::size_t i = 0;
    while (i < n && !same_text(into[i].first, name))
        ++i;
    return i;
}

void packed_values::unpack(const interned_site& origin, model::field_values& into) const
{
    const std::byte* in = bytes_;
    std::size_t size = len_;
    if (len_ == on_heap) {
        const heap_ref h = heap();
        in = h.data;
        size = h.size;
    }
    const std::byte* const end = in + size;
    const std::string* const site_names = origin.site.fields.data();
    // Fields named by index: where each index's value went (bit i of `seen`
    // set once index i has a slot). An inline name never equals an indexed
    // one (name_index looked it up), and with distinct_fields two indexes
    // never share a name, so only the other cases compare names.
    const bool by_index = origin.distinct_fields;
    std::uint32_t seen = 0;
    std::array<std::uint32_t, name_inline> slot_of;
    std::size_t n = 0;
    std::size_t have = into.size();  // kept here: into.size() divides
    while (in < end) {
        const auto header = get<std::uint8_t>(in);
        const auto type = static_cast<std::uint8_t>(header >> 4);
        const auto index = static_cast<std::uint8_t>(header & 0x0f);
        model::value* slot;
        if (index != name_inline && by_index) [[likely]] {
            if ((seen >> index & 1u) != 0) [[unlikely]] {
                slot = &into[slot_of[index]].second;
            } else {
                seen |= 1u << index;
                slot_of[index] = static_cast<std::uint32_t>(n);
                // Usually the cache already holds this name in this place.
                const std::string& name = site_names[index];
                if (n < have && same_text(into[n].first, name)) [[likely]] {
                    slot = &into[n].second;
                } else {
                    slot = &add_slot(into, n, name);
                    have = into.size();
                }
                ++n;
            }
        } else {
            const std::string_view name = index == name_inline ? get_text(in) : std::string_view(site_names[index]);
            const std::size_t at = find_slot(into, n, name);
            if (at == n) {
                slot = &add_slot(into, n++, name);
                have = into.size();
            } else {
                slot = &into[at].second;
            }
        }
        unpack_value(in, type, *slot);
    }
    if (n != have) [[unlikely]]
        into.erase(into.begin() + static_cast<std::ptrdiff_t>(n), into.end());
}

void merge(model::field_values& into, field_refs values)
{
    for (const auto& f : values) {
        model::value v = f.value ? f.value.to_value() : model::value(std::string());
        auto it = std::find_if(into.begin(), into.end(), [&](const auto& p) { return p.first == f.name; });
        if (it != into.end())
            it->second = std::move(v);
        else
            into.emplace_back(std::string(f.name), std::move(v));
    }
}

// The values a new version of `n` starts from (under record_mutex).
void current_fields(const span_node& n, const span_version* old, model::field_values& into)
{
    if (old != nullptr)
        into = old->fields;
    else
        n.initial.unpack(n.interned(), into);
}

bool try_ref(span_node* n) noexcept
{
    std::uint32_t r = n->refs.load(std::memory_order_relaxed);
    while (r != 0)
        if (n->refs.compare_exchange_weak(r, r + 1, std::memory_order_acq_rel, std::memory_order_relaxed))
            return true;
    return false;
}

// ---------------------------------------------------------------------------
// Per-thread state, in one trivially destructible thread-local (direct
// access, no initialisation guard). What needs freeing is freed by one
// cleanup object at thread exit, after which `gone` says so: a static
// dispatcher may still be used (spans suspended) during static destruction.

// One entered span of the calling thread, for any dispatcher (owner: its id,
// never reused). The node is only followed after its tag confirms it still is
// that span.
struct frame {
    std::uint64_t owner;
    span_handle span;
    span_node* node;
};

// The answer of the last enabled() call, so that the event() that follows it
// on the same thread does not evaluate the scope again.
struct enabled_cache {
    std::uint64_t owner = 0;
    const model::callsite* site = nullptr;
    std::uint64_t generation = 0;
    bool answer = false;
};

// What the dispatcher learnt about a recently seen call site: the filter's
// static interest and, for spans, its interned copy. A call site is a
// receiver's object, whose address may be reused (a plugin unloaded, another
// loaded) and whose id a plugin chooses. So the key is not only address and
// id: also the sending plugin's name (compared by content with an interned
// copy: one plugin cannot take another's answer at a reused address), the
// dispatcher's count of call-site registrations (interest_in: a new call
// site at a reused address is registered before it is used) and the filter
// generation (set_filter).
struct site_memo {
    std::uint64_t owner = 0;
    const model::callsite* site = nullptr;
    std::uint64_t id = 0;
    std::uint64_t generation = 0;
    std::uint64_t registrations = 0;
    const std::string* plugin = nullptr;        // interned; null: not checked (enabled())
    const interned_site* interned = nullptr;  // with `plugin`; null until a span needs it
    // The sender's event_record::plugin_key for `plugin` (0: none): equal
    // keys mean equal names, so the text compare is skipped.
    std::uint64_t plugin_key = 0;
    std::uint32_t answer = 0;
};
// 16 sets of 2 (the top 4 bits of a 64-bit hash pick the set): a plugin's
// few hot call sites must not evict each other. With one memo per set, the
// bench plugin's group span and typical event shared a set, and each group
// paid two misses.
constexpr std::size_t site_memo_sets = 16;
constexpr std::size_t site_memo_size = site_memo_sets * 2;
static_assert(sizeof(std::uintptr_t) == 8);

// Views of spans without a version (view_of): the span_ref and its unpacked
// values, per thread, by (dispatcher, handle). A view stays valid for the
// outermost read section it was taken in: an entry used in the current
// section is not overwritten (a second span that wants its place goes to
// `spill`). A span's values never change under its handle (record() makes a
// version instead), so an entry is never stale.
//
// When no layer reads span fields (layer_reads), an entry may be bare: its
// view's fields are the cache's empty list, and its own `fields` keep
// whatever they held (and their capacity). A bare entry serves only those
// who do not want fields; the filter always does. Bare or not is the low bit
// of the key, so that telling costs the hit test no branch.
struct view_entry {
    std::uint64_t key = 0;  // owner << 1 | bare; 0: not a valid entry
    span_handle handle = 0;
    std::uint64_t session = 0;  // the last session that handed it out
    span_ref view;
    model::field_values fields;
};
constexpr unsigned view_cache_bits = 6;
struct view_cache {
    std::array<view_entry, std::size_t{1} << view_cache_bits> entries;
    std::vector<std::unique_ptr<view_entry>> spill;
    std::size_t spill_used = 0;      // in read section `spill_session`
    std::uint64_t spill_session = 0;
    const model::field_values empty;  // what a bare view's fields point to
};

struct thread_state {
    reader_slot* slot = nullptr;
    unsigned depth = 0;          // nested read sections
    bool gone = false;           // cleanup ran: no more per-thread vectors
    bool views_busy = false;
    std::uint64_t session = 0;     // counts outermost read sections: views handed out in one stay
    std::vector<frame>* frames = nullptr;
    std::vector<span_ref>* views = nullptr;
    view_cache* cache = nullptr;
    enabled_cache last_enabled;
    std::array<site_memo, site_memo_size> memos;
};
constinit thread_local thread_state tls;

struct thread_cleanup {
    ~thread_cleanup()
    {
        if (tls.slot != nullptr && tls.depth == 0) {
            tls.slot->epoch.store(0, std::memory_order_release);
            tls.slot->used.store(false, std::memory_order_release);
            tls.slot = nullptr;
        }
        delete tls.frames;
        tls.frames = nullptr;
        delete tls.views;
        tls.views = nullptr;
        if (tls.depth == 0) {
            delete tls.cache;
            tls.cache = nullptr;
        }
        tls.gone = true;
    }
};
thread_local thread_cleanup cleanup;

// Called before the thread first takes something the cleanup gives back.
void arm_cleanup() noexcept
{
    [[maybe_unused]] thread_cleanup* c = &cleanup;
}

// A thread's first section: its slot.
[[gnu::noinline]] reader_slot* first_slot()
{
    if (!tls.gone)
        arm_cleanup();
    tls.slot = claim_slot();
    return tls.slot;
}

// Inlined: every event, enter and exit opens a section, and out of line the
// call and its frame cost about as much as the section itself.
[[gnu::always_inline]] inline read_section::read_section() noexcept
{
    if (tls.depth++ == 0) {
        reader_slot* s = tls.slot;
        if (s == nullptr) [[unlikely]]
            s = first_slot();
        s->epoch.exchange(domain.epoch.load(std::memory_order_relaxed), std::memory_order_seq_cst);
        ++tls.session;
    }
}

[[gnu::always_inline]] inline read_section::~read_section()
{
    if (--tls.depth == 0)
        tls.slot->epoch.store(0, std::memory_order_release);
}

// This thread's entered spans; null when it has none yet and `create` is
// false, or after the thread's cleanup.
inline std::vector<frame>* thread_frames() noexcept
{
    return tls.frames;
}

std::vector<frame>* thread_frames_create() noexcept
{
    if (tls.frames == nullptr && !tls.gone) {
        arm_cleanup();
        tls.frames = new (std::nothrow) std::vector<frame>;
    }
    return tls.frames;
}

// Throws bad_alloc (the caller counts an anomaly and skips the layers). A
// thread whose cleanup already ran (a static dispatcher suspending its spans
// at exit) gets one that is never freed.
view_cache* make_view_cache()
{
    if (tls.cache == nullptr) {
        if (!tls.gone)
            arm_cleanup();
        tls.cache = new view_cache;
    }
    return tls.cache;
}

const span_ref& fill_view(const view_cache& c, view_entry& e, std::uint64_t owner, const span_node& n, bool fields)
{
    e.key = 0;  // not a valid entry until filled
    if (fields)
        n.initial.unpack(n.interned(), e.fields);
    e.view = base_view(n);
    e.view.fields = fields ? &e.fields : &c.empty;
    e.key = owner << 1 | (fields ? 0 : 1);
    e.handle = n.handle();
    e.session = tls.session;
    return e.view;
}

// By a node's tag: the doubled multiplier drops the closed bit, so an open
// and a closed span hash alike without masking it.
inline std::size_t view_slot(std::uint64_t tag) noexcept
{
    return (tag * (0x9E3779B97F4A7C15ULL << 1)) >> (64 - view_cache_bits);
}

// The view of a span without a version, unpacked into this thread's cache.
// An entry handed out in this read section is not overwritten: a second span
// that wants its place gets a spare. `fields`: unpack the values (else the
// view may have none: see view_entry).
[[gnu::noinline]] const span_ref& view_miss(std::uint64_t owner, const span_node& n, bool fields)
{
    view_cache* c = make_view_cache();
    view_entry* into = &c->entries[view_slot(n.tag.load(std::memory_order_relaxed))];
    if (into->session == tls.session && into->key != 0) {
        if (c->spill_session != tls.session) {
            c->spill_session = tls.session;
            c->spill_used = 0;
        }
        if (c->spill_used == c->spill.size())
            c->spill.push_back(std::make_unique<view_entry>());
        into = c->spill[c->spill_used++].get();
    }
    return fill_view(*c, *into, owner, n, fields);
}

// The current view of `n`: valid inside the (outermost) read section that
// found `n`. Without `Fields` its fields may be empty (layer_reads).
template <bool Fields = true>
[[gnu::always_inline]] inline const span_ref& view_of(std::uint64_t owner, const span_node& n)
{
    if (const span_version* v = n.version_ptr.load()) [[unlikely]]
        return v->view;
    if (view_cache* c = tls.cache) [[likely]] {
        const std::uint64_t tag = n.tag.load(std::memory_order_relaxed);
        view_entry& e = c->entries[view_slot(tag)];
        // Without fields, a bare entry or a full one will do.
        constexpr std::uint64_t any = Fields ? 0 : 1;
        if ((e.key | any) == (owner << 1 | any) && e.handle == (tag & ~span_node::closed_bit)) [[likely]] {
            e.session = tls.session;
            return e.view;
        }
    }
    return view_miss(owner, n, Fields);
}

// view_of as layer_reads::span_fields asks: a test here keeps the hit test of
// each variant as short as when there was one.
[[gnu::always_inline]] inline const span_ref& view_of(std::uint64_t owner, const span_node& n, bool fields)
{
    return fields ? view_of<true>(owner, n) : view_of<false>(owner, n);
}

// A per-thread vector of span views that keeps its capacity; a nested use
// (not expected: layers must not call back) gets a vector of its own.
class view_scratch {
public:
    view_scratch() noexcept
    {
        if (!tls.views_busy && !tls.gone) {
            if (tls.views == nullptr) {
                arm_cleanup();
                tls.views = new (std::nothrow) std::vector<span_ref>;
            }
            if (tls.views != nullptr) {
                v_ = tls.views;
                took_ = true;
                tls.views_busy = true;
            }
        }
        if (!took_)
            v_ = &own_.emplace();
        v_->clear();
    }
    ~view_scratch()
    {
        if (took_)
            tls.views_busy = false;
    }
    view_scratch(const view_scratch&) = delete;
    view_scratch& operator=(const view_scratch&) = delete;

    // `leaf` and its enabled ancestors, root first.
    std::vector<span_ref>& chain(std::uint64_t owner, const span_node* leaf, bool fields)
    {
        for (const span_node* n = leaf; n != nullptr; n = n->parent_node)
            v_->push_back(view_of(owner, *n, fields));
        std::reverse(v_->begin(), v_->end());
        return *v_;
    }

private:
    bool took_ = false;
    std::optional<std::vector<span_ref>> own_;
    std::vector<span_ref>* v_ = nullptr;
};

// `leaf` and its enabled ancestors, root first, as `reads` asks (only the
// leaf when no layer reads the context). A span without any is handed as its
// own view, uncopied; a chain is copied into `scratch`.
[[gnu::always_inline]] inline span_context context_of(std::uint64_t owner, const span_node* leaf,
                                                     std::optional<view_scratch>& scratch, layer_reads reads)
{
    if (leaf == nullptr)
        return {};
    if (leaf->parent_node == nullptr || !reads.span_context)
        return span_context(&view_of(owner, *leaf, reads.span_fields), 1);
    return scratch.emplace().chain(owner, leaf, reads.span_fields);
}

std::uint64_t fnv(std::uint64_t h, std::string_view s) noexcept
{
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    h ^= 0xff;  // separator
    h *= 0x100000001b3ULL;
    return h;
}

}  // namespace

struct dispatcher::impl {
    struct config {
        filter f;
        std::uint64_t generation = 0;
        // Names this config among all dispatchers' configs in the process,
        // never 0: what a sender's site word (event_record::site_word) is
        // stamped with, so one written under another config or by another
        // dispatcher is never taken for this one's.
        std::uint64_t stamp = next_config_stamp();
    };
    struct layer_list : std::vector<std::shared_ptr<layer>> {
        // What at least one of them reads (layer::reads): what is built.
        layer_reads reads{.span_fields = false, .span_context = false};
    };

    impl() = default;
    impl(const impl&) = delete;
    impl& operator=(const impl&) = delete;
    ~impl();

    const std::uint64_t owner = next_owner_id();

    // The filter and the layer list are read on every event and changed
    // rarely (set_filter, add_layer): readers load a plain pointer, and every
    // version ever published stays allocated until the dispatcher dies, so no
    // reader needs a reference count or a lock.
    mutable std::mutex config_mutex;  // writers only
    std::vector<std::unique_ptr<const config>> configs;
    std::vector<std::unique_ptr<const layer_list>> layer_lists;
    std::atomic<const config*> cfg{nullptr};
    std::atomic<const layer_list*> layers{nullptr};

    // Call sites registered (interest_in): keys the per-thread memos.
    std::atomic<std::uint64_t> registrations{1};

    // Open spans by handle: slot h % table_size holds a chain of nodes
    // (span_node::chain), newest first; usually one. Readers walk it inside a
    // read section without a lock; a node is pushed with a CAS and unlinked
    // under the slot's stripe of `unlink_mutexes` (an unlinked node keeps its
    // link, so a reader standing on it goes on; it is recycled only once no
    // reader can stand on it).
    static constexpr unsigned table_bits = 14;
    static constexpr std::size_t table_size = std::size_t{1} << table_bits;
    // The handles of an aligned block (take_handle) fill all 8 slots of
    // handles_per_block / 8 cache lines, which no other block of the same
    // turn of the table uses: two threads' spans do not share the lines they
    // insert into and unlink from.
    static std::size_t slot_of(span_handle h) noexcept
    {
        const std::size_t i = h % table_size;
        return (i >> 3) | ((i & 7) << (table_bits - 3));
    }
    std::unique_ptr<std::atomic<span_node*>[]> table = std::make_unique<std::atomic<span_node*>[]>(table_size);
    static constexpr std::size_t unlink_stripes = 64;
    std::array<std::mutex, unlink_stripes> unlink_mutexes;

    // Node slabs, the free list and the retired list.
    struct retired {
        std::uint64_t epoch = 0;
        span_node* node = nullptr;
        const span_version* version = nullptr;
    };
    static constexpr std::size_t slab_nodes = 256;
    static constexpr std::size_t reclaim_batch = 64;
    // One pool per thread stripe, so that two threads creating and closing
    // spans do not share a mutex. A node may be recycled into another pool
    // than the one that made it (the free lists are intrusive).
    struct alignas(64) node_pool {
        spin_lock mutex;
        std::vector<std::unique_ptr<span_node[]>> slabs;
        span_node* free_list = nullptr;
        std::vector<retired> limbo;
        std::size_t reclaim_at = reclaim_batch;  // limbo size that triggers the next reclaim
    };
    static constexpr std::size_t pool_count = 4;
    std::array<node_pool, pool_count> pools;
    node_pool& my_pool() noexcept { return pools[detail::my_stripe() % pool_count]; }

    std::mutex record_mutex;  // writers of a node's snapshots (record, follows_from)

    // Interned call sites: buckets of lists that only grow, read without a lock.
    static constexpr std::size_t bucket_count = 4096;
    std::mutex intern_mutex;
    // Interned sites, in chunks numbered by site_numbers (given back by ~impl);
    // the last chunk is filled up to site_fill.
    struct site_chunk {
        std::unique_ptr<interned_site[]> sites;
        std::uint32_t first = 0;
    };
    std::vector<site_chunk> site_chunks;
    std::uint32_t site_fill = site_numbers::chunk_size;
    std::unique_ptr<std::atomic<const interned_site*>[]> buckets =
        std::make_unique<std::atomic<const interned_site*>[]>(bucket_count);
    // Interned plugin names (few): one list, read without a lock.
    std::vector<std::unique_ptr<const interned_name>> names;
    std::atomic<const interned_name*> names_head{nullptr};

    // Past every handle given: a thread takes a block of handles_per_block
    // from it at a time (take_handle), so that two threads making spans do
    // not write its line at every span. 512, not 64: the fewer times a
    // table line changes owner thread (once a turn of the table at most), the
    // better S9's slow mode (docs/PERFORMANCE.md, round 12).
    std::atomic<span_handle> next_handle{1};
    static constexpr span_handle handles_per_block = 512;

    struct alignas(64) stripe {
        std::atomic<std::uint64_t> spans_created{0}, spans_disabled{0}, spans_opened{0}, spans_ended{0}, events{0},
            events_filtered{0}, anomalies{0};
        detail::number_block handles;  // the owner thread's (take_handle)
    };
    // Indexed by detail::my_stripe(): a thread's own stripe takes a plain add
    // (count()), not a locked one, on every event.
    static constexpr std::size_t stripe_count = detail::counter_stripes;
    mutable std::array<stripe, stripe_count> stripes;

    // Always inlined: out of line, the member pointer stays a run-time
    // argument and the call costs more than the add (about 24 Ir an event).
    template <class Member>
    [[gnu::always_inline]] void count(Member m) const noexcept
    {
        const unsigned i = detail::my_stripe();
        detail::bump(stripes[i].*m, i);
    }
    template <class Member>
    std::uint64_t sum(Member m) const noexcept
    {
        std::uint64_t s = 0;
        for (const auto& st : stripes)
            s += (st.*m).load(std::memory_order_relaxed);
        return s;
    }
    void anomaly() const noexcept { count(&stripe::anomalies); }

    // A new span's handle, from this thread's block. The blocks of two
    // threads fill different cache lines of the handle table (slot_of), and
    // a thread alone still gets its handles in sequence (its next block
    // starts where the last ended). Threads past the exclusive stripes take
    // them one by one.
    span_handle take_handle() noexcept
    {
        const unsigned i = detail::my_stripe();
        detail::bump(stripes[i].spans_created, i);
        if (i == detail::shared_stripe) [[unlikely]]
            return next_handle.fetch_add(1, std::memory_order_relaxed);
        return stripes[i].handles.take(next_handle, handles_per_block);
    }

    const config* load_config() const noexcept { return cfg.load(std::memory_order_acquire); }
    const layer_list* load_layers() const noexcept { return layers.load(std::memory_order_acquire); }
    // Under config_mutex.
    void publish(std::unique_ptr<const config> c)
    {
        configs.push_back(std::move(c));
        cfg.store(configs.back().get(), std::memory_order_release);
    }
    void publish(std::unique_ptr<const layer_list> l)
    {
        layer_lists.push_back(std::move(l));
        layers.store(layer_lists.back().get(), std::memory_order_release);
    }

    // A copy of `s` as sent by `plugin` (interned) that lives as long as the
    // dispatcher (spans outlive the receiver whose call site they came
    // from). Known pairs: no lock. A null `s`: the plugin's placeholder for
    // spans without a call site.
    const interned_site* intern(const model::callsite* s, const std::string* plugin)
    {
        static const model::callsite none{};
        const model::callsite& site = s != nullptr ? *s : none;
        const bool known = s != nullptr;
        auto same = [&](const interned_site* p) {
            return p->plugin == plugin && p->known == known && (&p->site == &site || p->site == site);
        };
        auto& bucket = buckets[site.id % bucket_count];
        for (const interned_site* p = bucket.load(std::memory_order_acquire); p != nullptr; p = p->next)
            if (same(p))
                return p;
        std::lock_guard lock(intern_mutex);
        for (const interned_site* p = bucket.load(std::memory_order_acquire); p != nullptr; p = p->next)
            if (same(p))
                return p;
        if (site_fill == site_numbers::chunk_size) {
            site_chunks.reserve(site_chunks.size() + 1);
            auto sites = std::make_unique<interned_site[]>(site_numbers::chunk_size);
            const std::uint32_t first = site_numbers::claim(sites.get());
            site_chunks.push_back(site_chunk{std::move(sites), first});
            site_fill = 0;
        }
        interned_site& fresh = site_chunks.back().sites[site_fill];
        fresh.site = site;
        fresh.plugin = plugin;
        fresh.known = known;
        fresh.distinct_fields = distinct_names(site.fields);
        fresh.number = site_chunks.back().first + site_fill;
        fresh.next = bucket.load(std::memory_order_relaxed);
        ++site_fill;
        bucket.store(&fresh, std::memory_order_release);
        return &fresh;
    }

    // The dispatcher's copy of a plugin name. Known names: no lock.
    const std::string* intern_name(std::string_view name)
    {
        for (const interned_name* p = names_head.load(std::memory_order_acquire); p != nullptr; p = p->next)
            if (p->name == name)
                return &p->name;
        std::lock_guard lock(intern_mutex);
        for (const interned_name* p = names_head.load(std::memory_order_acquire); p != nullptr; p = p->next)
            if (p->name == name)
                return &p->name;
        names.reserve(names.size() + 1);
        auto fresh = std::make_unique<interned_name>();
        fresh->name = std::string(name);
        fresh->next = names_head.load(std::memory_order_relaxed);
        const interned_name* p = fresh.get();
        names.push_back(std::move(fresh));
        names_head.store(p, std::memory_order_release);
        return &p->name;
    }

    // --- the handle table (lookups inside a read section) ---

    span_node* lookup(span_handle h) const noexcept
    {
        if (h == 0)
            return nullptr;
        for (span_node* n = table[slot_of(h)].load(); n != nullptr; n = n->chain.load())
            if (n->is(h))
                return n;
        return nullptr;
    }

    // `n` is not yet published: nobody else reads its link.
    void insert(span_handle h, span_node* n) noexcept
    {
        auto& head = table[slot_of(h)];
        span_node* first = head.load();
        do {
            n->chain.store(first, std::memory_order_relaxed);
        } while (!head.compare_exchange_weak(first, n));
    }

    // Only the closer of `n` unlinks it. Pushes may race (they only change the
    // head); other unlinks in the slot wait for the stripe's mutex.
    void unlink(span_handle h, span_node* n) noexcept
    {
        const std::size_t slot = slot_of(h);
        auto& head = table[slot];
        span_node* expected = n;
        // Alone in the slot: no successor that another unlink could change.
        if (n->chain.load() == nullptr && head.compare_exchange_strong(expected, nullptr))
            return;
        std::lock_guard lock(unlink_mutexes[slot % unlink_stripes]);
        for (;;) {
            expected = n;
            if (head.compare_exchange_strong(expected, n->chain.load()))
                return;
            // Not the head (any more): a push came first, or n is further down.
            span_node* prev = head.load();
            while (prev != nullptr && prev->chain.load() != n)
                prev = prev->chain.load();
            if (prev != nullptr) {
                prev->chain.store(n->chain.load());
                return;
            }
            // n became the head again between the CAS and the walk? It
            // cannot (only pushes race); a node not in the chain is a bug.
            if (head.load() != n)
                return;
        }
    }

    // --- nodes ---

    span_node* alloc_node()
    {
        node_pool& pool = my_pool();
        std::lock_guard lock(pool.mutex);
        if (pool.free_list == nullptr && !pool.limbo.empty())
            reclaim_locked(pool);
        if (pool.free_list == nullptr) {
            pool.slabs.reserve(pool.slabs.size() + 1);
            pool.slabs.push_back(std::make_unique<span_node[]>(slab_nodes));
            for (std::size_t i = slab_nodes; i-- > 0;) {
                span_node* n = &pool.slabs.back()[i];
                n->chain.store(pool.free_list, std::memory_order_relaxed);
                pool.free_list = n;
            }
        }
        span_node* n = pool.free_list;
        pool.free_list = n->chain.load(std::memory_order_relaxed);
        n->chain.store(nullptr, std::memory_order_relaxed);
        return n;
    }

    // Hands a node or a version to reclamation once no reader can see it any
    // more. Two pointers, not a `retired`: a struct built in the caller's
    // frame and passed in memory was stored in 8-byte parts and read back
    // in one 16-byte load, which stalls until the stores reach the cache.
    void retire(span_node* node, const span_version* version) noexcept
    {
        node_pool& pool = my_pool();
        try {
            std::lock_guard lock(pool.mutex);
            pool.limbo.push_back(retired{domain.epoch.load(), node, version});
            if (pool.limbo.size() >= pool.reclaim_at)
                reclaim_locked(pool);
        } catch (...) {
            anomaly();  // not recycled: freed when the dispatcher dies
        }
    }

    // Under record_mutex: `next` becomes what layers see of `n`.
    static void publish_version(span_node& n, std::unique_ptr<span_version> next) noexcept
    {
        next->view = base_view(n);
        next->view.fields = &next->fields;
        next->view.follows_from = std::span<const span_handle>(next->follows);
        n.version_ptr.store(next.release());
    }

    // Drops one reference; the last one retires the node.
    void unref(span_node* n) noexcept
    {
        if (n->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            retire(n, nullptr);
    }

    // Under pool.mutex. Never throws: a recycled node's parent, when that was
    // its last reference, takes the freed place in the list.
    static void reclaim_locked(node_pool& pool) noexcept
    {
        domain.epoch.fetch_add(1);
        const std::uint64_t oldest = oldest_reader();
        const std::uint64_t now = domain.epoch.load();
        auto& limbo = pool.limbo;
        std::size_t keep = 0;
        for (std::size_t i = 0; i < limbo.size(); ++i) {
            const retired r = limbo[i];
            if (r.epoch >= oldest) {
                limbo[keep++] = r;
                continue;
            }
            delete r.version;
            if (span_node* n = r.node) {
                delete n->version_ptr.exchange(nullptr);
                span_node* p = std::exchange(n->parent_node, nullptr);
                n->chain.store(pool.free_list, std::memory_order_relaxed);
                pool.free_list = n;
                if (p != nullptr && p->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
                    limbo[keep++] = retired{now, p, nullptr};
            }
        }
        limbo.resize(keep);
        // What a section still holds waits for the next batch, not the next retire.
        pool.reclaim_at = keep + reclaim_batch;
    }

    // --- this thread's spans (inside a read section) ---

    span_node* pop_frame(span_handle span) noexcept
    {
        auto* frp = thread_frames();
        if (frp == nullptr)
            return nullptr;
        auto& fr = *frp;
        for (auto it = fr.rbegin(); it != fr.rend(); ++it)
            if (it->owner == owner && it->span == span) {
                span_node* n = it->node;
                fr.erase(std::next(it).base());
                return n;
            }
        return nullptr;
    }

    // The innermost enabled span entered on this thread that is still open:
    // what a contextual parent resolves to.
    const span_node* current_node() const noexcept
    {
        const auto* frp = thread_frames();
        if (frp == nullptr)
            return nullptr;
        const auto& fr = *frp;
        for (auto it = fr.rbegin(); it != fr.rend(); ++it)
            if (it->owner == owner && it->node->is(it->span) && it->node->enabled)
                return it->node;
        return nullptr;
    }

    // The filter level a span opens for what is inside it, cached per span
    // for (filter generation, values version).
    level_filter span_level(span_node& n, const config& c) const
    {
        const std::uint64_t gen = (c.generation & 0xffffffffULL) << 32;
        // Acquire: the values read below are at least as new as this version.
        std::uint64_t cached = n.level_cache.load(std::memory_order_acquire);
        if ((cached & ~(span_node::version_bits | 0x7f)) == (gen | span_node::level_valid))
            return static_cast<level_filter>(cached & 0x7f);
        const level_filter l = c.f.span_level(*n.site(), view_of(owner, n).fields);
        // Fails when a record() bumped the version meanwhile (or another
        // thread cached first): the level is still right for this call.
        (void)n.level_cache.compare_exchange_strong(
            cached, gen | (cached & span_node::version_bits) | span_node::level_valid | static_cast<std::uint64_t>(l),
            std::memory_order_relaxed);
        return l;
    }

    // The most verbose level the enabled open spans entered on this thread
    // open (what filter::enabled_at takes as the scope).
    level_filter scope_level(const config& c) const
    {
        level_filter best = level_filter::off;
        const auto* fr = thread_frames();
        if (fr == nullptr)
            return best;
        for (const frame& f : *fr)
            if (f.owner == owner && f.node->is(f.span) && f.node->enabled && f.node->interned().known)
                best = std::max(best, span_level(*f.node, c));
        return best;
    }

    // The memo of `site` as sent by `plugin` (null: by whom is not known,
    // enabled()), filled on a miss.
    // `key`: the sender's event_record::plugin_key for `plugin`, 0 if none.
    // `plugin` points into the caller's record, not at a copy: the receiver
    // stores a name's pointer and length apart, and one 16-byte load of both
    // (what a copy compiles to) waits for those stores to reach the cache.
    [[gnu::always_inline]] site_memo& memo(const config& c, const model::callsite& site,
                                           const std::string_view* plugin, std::uint64_t key = 0)
    {
        const auto addr = reinterpret_cast<std::uintptr_t>(&site);
        site_memo* const set = &tls.memos[((addr * 0x9E3779B97F4A7C15ULL) >> 60) * 2];
        // The place that may hold this site, then the full check on it alone.
        site_memo& m = set[set[0].site == &site ? 0 : 1];
        if (m.owner == owner && m.site == &site && m.id == site.id && m.generation == c.generation &&
            m.registrations == registrations.load(std::memory_order_acquire) &&
            (plugin == nullptr ||
             (m.plugin != nullptr && ((key != 0 && m.plugin_key == key) || same_text(*m.plugin, *plugin))))) [[likely]]
            return m;
        return memo_miss(set, c, site, plugin, key);
    }

    // A site has one place in its set, so memo() checks one: a stale memo
    // of the site in the first place is replaced there; otherwise the first
    // moves to the second place (the older memo there gives way) and the new
    // one takes the first.
    [[gnu::noinline]] site_memo& memo_miss(site_memo* set, const config& c, const model::callsite& site,
                                           const std::string_view* plugin, std::uint64_t key)
    {
        const std::uint64_t reg = registrations.load(std::memory_order_acquire);
        const std::string* name = plugin != nullptr ? intern_name(*plugin) : nullptr;
        site_memo fresh{owner, &site, site.id, c.generation, reg, name, nullptr, name != nullptr ? key : 0,
                        c.f.interest(site)};
        if (set[0].site != &site)
            set[1] = set[0];
        set[0] = fresh;
        return set[0];
    }

    // The static interest of `site`, cached per thread; never throws (a
    // memo that cannot be made is not made).
    [[gnu::always_inline]] std::uint32_t static_interest(const config& c, const model::callsite& site,
                                                         const std::string_view* plugin,
                                                         std::uint64_t key = 0) noexcept
    {
        try {
            return memo(c, site, plugin, key).answer;
        } catch (...) {
            return c.f.interest(site);
        }
    }

    // enter/exit: hands span `span` (found inside the caller's section) to every layer.
    template <class Call>
    void to_layers_one(const span_node* node, Call call)
    {
        if (!node->enabled)
            return;
        const auto* list = load_layers();
        if (list->empty())
            return;
        const span_ref& view = view_of(owner, *node, list->reads.span_fields);
        for (const auto& l : *list)
            call(*l, view);
    }
};

dispatcher::impl::~impl()
{
    for (const node_pool& pool : pools) {
        for (const auto& slab : pool.slabs)
            for (std::size_t i = 0; i < slab_nodes; ++i)
                delete slab[i].version_ptr.load();
        for (const retired& r : pool.limbo)
            delete r.version;
    }
    if (auto* fr = thread_frames())
        std::erase_if(*fr, [&](const frame& f) { return f.owner == owner; });
    for (const site_chunk& c : site_chunks)
        site_numbers::release(c.first);
}

dispatcher::dispatcher() : dispatcher(std::get<filter>(parse_filter("info"))) {}

dispatcher::dispatcher(filter f) : impl_(std::make_unique<impl>())
{
    impl_->publish(std::make_unique<const impl::config>(impl::config{std::move(f), 1}));
    impl_->publish(std::make_unique<const impl::layer_list>());
}

dispatcher::~dispatcher() = default;

void dispatcher::set_filter(filter f) noexcept
{
    try {
        std::lock_guard lock(impl_->config_mutex);
        const std::uint64_t generation = impl_->load_config()->generation + 1;
        impl_->publish(std::make_unique<const impl::config>(impl::config{std::move(f), generation}));
    } catch (...) {
        impl_->anomaly();
    }
}

filter dispatcher::current_filter() const noexcept
{
    return impl_->load_config()->f;
}

std::uint64_t dispatcher::filter_generation() const noexcept
{
    return impl_->load_config()->generation;
}

void dispatcher::add_layer(std::shared_ptr<layer> l)
{
    if (!l)
        return;
    std::lock_guard lock(impl_->config_mutex);
    auto next = std::make_unique<impl::layer_list>(*impl_->load_layers());
    const layer_reads r = l->reads();
    next->reads.span_fields = next->reads.span_fields || r.span_fields;
    next->reads.span_context = next->reads.span_context || r.span_context;
    next->push_back(std::move(l));
    impl_->publish(std::unique_ptr<const impl::layer_list>(std::move(next)));
}

void dispatcher::flush() noexcept
{
    // Lists are kept for the dispatcher's life: no read section needed.
    for (const auto& l : *impl_->load_layers())
        l->flush();
}

interest dispatcher::interest_in(const model::callsite& site) noexcept
{
    // A registration: what the memos know of a call site at this address may
    // be about an earlier one.
    impl_->registrations.fetch_add(1, std::memory_order_acq_rel);
    return static_cast<interest>(impl_->load_config()->f.interest(site));
}

bool dispatcher::enabled(const model::callsite& site) noexcept
{
    const auto cfg = impl_->load_config();
    const std::uint32_t i = impl_->static_interest(*cfg, site, nullptr);
    if (i == TT_INTEREST_NEVER)
        return false;
    // A span may enable itself by its own values: new_span decides.
    if (i == TT_INTEREST_ALWAYS || site.kind == model::callsite_kind::span)
        return true;
    bool answer = false;
    try {
        read_section rs;
        answer = cfg->f.enabled_at(site, impl_->scope_level(*cfg));
    } catch (...) {
        impl_->anomaly();
        return false;
    }
    tls.last_enabled = enabled_cache{impl_->owner, &site, cfg->generation, answer};
    return answer;
}

span_handle dispatcher::new_span(const span_attrs& attrs) noexcept
{
    const span_handle h = impl_->take_handle();
    span_node* node = nullptr;
    bool published = false;
    try {
        const auto* cfg = impl_->load_config();
        const auto* layers = impl_->load_layers();
        const interned_site* origin = nullptr;
        std::uint32_t interest = TT_INTEREST_NEVER;
        if (attrs.site != nullptr) {
            site_memo& m = impl_->memo(*cfg, *attrs.site, &attrs.plugin, attrs.plugin_key);
            if (m.interned == nullptr)
                m.interned = impl_->intern(attrs.site, m.plugin);
            origin = m.interned;
            interest = m.answer;
        } else {
            impl_->anomaly();
            origin = impl_->intern(nullptr, impl_->intern_name(attrs.plugin));
        }
        const model::callsite* site = origin->known ? &origin->site : nullptr;
        node = impl_->alloc_node();
        // The node is ours alone until it is published (tag open, then the
        // table); its handle is readable (closed tag) for the view below.
        node->tag.store(h | span_node::closed_bit, std::memory_order_relaxed);
        node->origin = origin->number;
        node->parent_node = nullptr;
        node->start = attrs.time;
        node->thread = thread_numbers::number_of(attrs.thread);
        node->plugin_span_id = attrs.plugin_span_id;
        node->resumed = attrs.resumed ? 1 : 0;
        node->enabled = 0;
        node->initial.assign(attrs.values, site);
        node->version_ptr.store(nullptr, std::memory_order_relaxed);
        node->level_cache.store(0, std::memory_order_relaxed);
        node->refs.store(1, std::memory_order_relaxed);

        read_section rs;
        if (attrs.parent != 0) {
            span_node* p = impl_->lookup(attrs.parent);
            span_node* visible = p == nullptr ? nullptr : p->enabled ? p : p->parent_node;
            if (p == nullptr || (visible != nullptr && !try_ref(visible)))
                impl_->anomaly();  // a parent we do not know (or closed meanwhile): the span becomes a root
            else
                node->parent_node = visible;
        }
        if (site != nullptr) {
            if (interest == TT_INTEREST_ALWAYS)
                node->enabled = 1;
            else if (interest == TT_INTEREST_SOMETIMES)
                node->enabled = cfg->f.enabled_at(*site, impl_->scope_level(*cfg),
                                                  view_of(impl_->owner, *node).fields);
        }
        node->tag.store(h);
        impl_->insert(h, node);
        published = true;
        impl_->count(&impl::stripe::spans_opened);
        if (!node->enabled) {
            impl_->count(&impl::stripe::spans_disabled);
            return h;
        }
        if (!layers->empty()) {
            std::optional<view_scratch> views;
            const span_context chain = context_of(impl_->owner, node, views, layers->reads);
            for (const auto& l : *layers)
                l->on_new_span(chain);
        }
    } catch (...) {
        impl_->anomaly();
        if (node != nullptr && !published) {
            node->tag.store(h | span_node::closed_bit);
            impl_->retire(node, nullptr);  // back to the free list, its parent let go
        }
    }
    return h;
}

void dispatcher::record(span_handle span, field_refs values) noexcept
{
    try {
        const auto layers = impl_->load_layers();
        read_section rs;
        span_node* node = impl_->lookup(span);
        if (node == nullptr) {
            impl_->anomaly();
            return;
        }
        const span_version* old = nullptr;
        {
            std::lock_guard lock(impl_->record_mutex);
            old = node->version_ptr.load();
            auto next = std::make_unique<span_version>();
            current_fields(*node, old, next->fields);
            merge(next->fields, values);
            if (old != nullptr)
                next->follows = old->follows;
            impl_->publish_version(*node, std::move(next));
            // A new version of the values: the cached level no longer holds.
            std::uint64_t c = node->level_cache.load();
            while (!node->level_cache.compare_exchange_weak(
                c, (c + 0x100) & span_node::version_bits))
                ;
        }
        if (old != nullptr)
            impl_->retire(nullptr, old);
        if (!node->enabled || layers->empty())
            return;
        std::optional<view_scratch> views;
        const span_context chain = context_of(impl_->owner, node, views, layers->reads);
        for (const auto& l : *layers)
            l->on_record(chain, values);
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::follows_from(span_handle span, span_handle cause) noexcept
{
    try {
        const auto layers = impl_->load_layers();
        read_section rs;
        span_node* node = impl_->lookup(span);
        if (node == nullptr || cause == 0 || cause >= impl_->next_handle.load()) {
            impl_->anomaly();
            return;
        }
        const span_version* old = nullptr;
        {
            std::lock_guard lock(impl_->record_mutex);
            old = node->version_ptr.load();
            if (old != nullptr && std::find(old->follows.begin(), old->follows.end(), cause) != old->follows.end())
                return;
            auto next = std::make_unique<span_version>();
            current_fields(*node, old, next->fields);
            if (old != nullptr)
                next->follows = old->follows;
            next->follows.push_back(cause);
            impl_->publish_version(*node, std::move(next));
        }
        if (old != nullptr)
            impl_->retire(nullptr, old);
        if (!node->enabled || layers->empty())
            return;
        const span_ref& view = view_of(impl_->owner, *node, layers->reads.span_fields);
        for (const auto& l : *layers)
            l->on_follows_from(view, cause);
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::enter(span_handle span) noexcept
{
    try {
        read_section rs;
        span_node* node = impl_->lookup(span);
        if (node == nullptr) {
            impl_->anomaly();
            return;
        }
        if (auto* fr = thread_frames_create())
            fr->push_back(frame{impl_->owner, span, node});
        impl_->to_layers_one(node, [](layer& l, const span_ref& view) { l.on_enter(view); });
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::exit(span_handle span) noexcept
{
    // The stack is this thread's own: no lock needed to pop it.
    read_section rs;
    const span_node* node = impl_->pop_frame(span);
    if (node == nullptr || !node->is(span)) [[unlikely]] {
        if (node == nullptr)
            impl_->anomaly();  // not entered on this thread
        exit_to_layers(span);  // closed meanwhile: counted there
        return;
    }
    // The frame's node, confirmed by its tag: no second look-up.
    try {
        impl_->to_layers_one(node, [](layer& l, const span_ref& view) { l.on_exit(view); });
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::force_exit(span_handle span, std::thread::id thread) noexcept
{
    if (thread == std::this_thread::get_id()) {
        exit(span);
        return;
    }
    // Another thread's stack cannot be touched from here: its frame stays and
    // is skipped once the span is closed (a rollback closes what it exits).
    exit_to_layers(span);
}

void dispatcher::exit_to_layers(span_handle span) noexcept
{
    try {
        read_section rs;
        const span_node* node = impl_->lookup(span);
        if (node == nullptr) {
            impl_->anomaly();
            return;
        }
        impl_->to_layers_one(node, [](layer& l, const span_ref& view) { l.on_exit(view); });
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::close(span_handle span) noexcept
{
    end_span(span, false);
}

void dispatcher::suspend(span_handle span) noexcept
{
    end_span(span, true);
}

void dispatcher::end_span(span_handle span, bool suspended) noexcept
{
    span_node* node = nullptr;
    {
        read_section rs;
        node = impl_->lookup(span);
        std::uint64_t expected = span;
        if (node == nullptr || !node->tag.compare_exchange_strong(expected, span | span_node::closed_bit)) {
            impl_->anomaly();  // unknown, or closed already: close once
            return;
        }
        impl_->unlink(span, node);
        impl_->count(&impl::stripe::spans_ended);
        // This thread's frame, if the span is still entered here.
        while (impl_->pop_frame(span) != nullptr) {
        }
        try {
            const auto layers = impl_->load_layers();
            if (node->enabled && !layers->empty()) {
                std::optional<view_scratch> views;
                const span_context chain = context_of(impl_->owner, node, views, layers->reads);
                for (const auto& l : *layers)
                    if (suspended)
                        l->on_suspend(chain);
                    else
                        l->on_close(chain);
            }
        } catch (...) {
            impl_->anomaly();
        }
    }
    // Outside the section: what this drop retires is not held back by this
    // thread's own section, so the next reclaim frees it instead of keeping
    // it for one more batch. The span's own reference keeps the node until
    // here.
    impl_->unref(node);
}

namespace {

// What a layer sees of an event but its spans.
inline event_view view_without_spans(const event_record& ev) noexcept
{
    event_view v;
    v.site = ev.site;
    v.plugin = ev.plugin;
    v.values = ev.values;
    v.time = ev.time;
    v.thread = ev.thread;
    return v;
}

}  // namespace

// The hot path: no lock, no allocation once warm, no reference counts. The
// span chain is read in place inside a read section.
// Layers must not call back into the dispatcher (layers.hpp says so).
void dispatcher::event(const event_record& ev) noexcept
{
    if (!ev.site) [[unlikely]] {
        impl_->anomaly();
        return;
    }
    try {
        const auto* cfg = impl_->load_config();
        const auto* layers = impl_->load_layers();
        const layer_reads reads = layers->reads;
        std::uint32_t i;
        // The sender's word for this site, stamped by this config: the
        // interest without a look-up. Else the per-thread memo, and the word
        // is stamped for the next event.
        if (ev.site_word != nullptr) [[likely]] {
            const std::uint64_t w = ev.site_word->load(std::memory_order_relaxed);
            if ((w >> 2) == cfg->stamp) [[likely]] {
                i = static_cast<std::uint32_t>(w & 3);
            } else {
                i = cfg->f.interest(*ev.site);
                ev.site_word->store(cfg->stamp << 2 | i, std::memory_order_relaxed);
            }
        } else {
            i = impl_->static_interest(*cfg, *ev.site, &ev.plugin, ev.plugin_key);
        }
        // What enabled() just answered counts for the one event that follows it.
        const model::callsite* asked = std::exchange(tls.last_enabled.site, nullptr);
        // Only the filter's scope (SOMETIMES), the event's parent and span
        // views read span nodes: an event that needs none of them (a root
        // event, or one whose spans no layer reads) opens no read section.
        if (i == TT_INTEREST_ALWAYS && (ev.contextual ? !reads.span_context : ev.parent == 0)) [[likely]] {
            impl_->count(&impl::stripe::events);
            const event_view v = view_without_spans(ev);
            for (const auto& l : *layers)
                l->on_event(v);
            return;
        }
        read_section rs;
        bool pass = i == TT_INTEREST_ALWAYS;
        if (i == TT_INTEREST_SOMETIMES) [[unlikely]] {
            const enabled_cache& c = tls.last_enabled;
            if (asked == ev.site && c.owner == impl_->owner && c.generation == cfg->generation)
                pass = c.answer;
            else
                pass = cfg->f.enabled_at(*ev.site, impl_->scope_level(*cfg));
        }
        if (!pass) {
            impl_->count(&impl::stripe::events_filtered);
            return;
        }
        const span_node* leaf = nullptr;
        if (ev.contextual) {
            // Nobody reads the spans: the current one need not be found.
            if (reads.span_context)
                leaf = impl_->current_node();
        } else if (ev.parent != 0) {
            const span_node* p = impl_->lookup(ev.parent);
            if (p == nullptr)
                impl_->anomaly();
            else
                leaf = p->enabled ? p : p->parent_node;
        }
        impl_->count(&impl::stripe::events);
        if (layers->empty())
            return;
        event_view v = view_without_spans(ev);
        if (leaf == nullptr || leaf->parent_node == nullptr || !reads.span_context) [[likely]] {
            if (leaf != nullptr && reads.span_context)
                v.spans = span_context(&view_of(impl_->owner, *leaf, reads.span_fields), 1);
            for (const auto& l : *layers)
                l->on_event(v);
            return;
        }
        view_scratch views;
        v.spans = views.chain(impl_->owner, leaf, reads.span_fields);
        for (const auto& l : *layers)
            l->on_event(v);
    } catch (...) {
        impl_->anomaly();
    }
}

span_handle dispatcher::current_span() const noexcept
{
    read_section rs;
    const span_node* n = impl_->current_node();
    return n != nullptr ? n->handle() : 0;
}

std::uint64_t dispatcher::plugin_span_id(span_handle span) const noexcept
{
    read_section rs;
    const span_node* n = impl_->lookup(span);
    return n != nullptr ? n->plugin_span_id : 0;
}

const model::callsite* dispatcher::host_callsite(model::callsite_kind kind, model::level lvl, std::string_view name,
                                                 std::string_view target, std::string_view file, std::uint32_t line,
                                                 std::span<const std::string_view> fields) noexcept
{
    try {
        model::callsite cs;
        cs.kind = kind;
        cs.level = lvl;
        cs.name = std::string(name);
        cs.target = std::string(target);
        cs.module_path = std::string(target);
        cs.file = std::string(file);
        cs.line = line;
        for (auto f : fields)
            cs.fields.emplace_back(f);
        std::uint64_t h = 0xcbf29ce484222325ULL;
        h = fnv(h, kind == model::callsite_kind::span ? "span" : "event");
        h = fnv(h, model::to_string(lvl));
        h = fnv(h, cs.name);
        h = fnv(h, cs.target);
        h = fnv(h, cs.file);
        h = fnv(h, std::to_string(line));
        for (const auto& f : cs.fields)
            h = fnv(h, f);
        cs.id = h == 0 ? 1 : h;
        return &impl_->intern(&cs, impl_->intern_name(host_plugin))->site;
    } catch (...) {
        impl_->anomaly();
        return nullptr;
    }
}

namespace {

std::string_view base_name(std::string_view file) noexcept
{
    return file;
}

}  // namespace

void dispatcher::host_event(model::level lvl, std::string_view target, std::string_view message,
                            std::initializer_list<host_field> fields, std::source_location loc) noexcept
{
    try {
        std::vector<std::string_view> names;
        names.reserve(fields.size() + 1);
        names.push_back("message");
        for (const auto& f : fields)
            names.push_back(f.name);
        const std::string name = "event " + std::string(base_name(loc.file_name())) + ":" + std::to_string(loc.line());
        const model::callsite* site = host_callsite(model::callsite_kind::event, lvl, name, target, loc.file_name(),
                                                    loc.line(), names);
        if (!site)
            return;
        if (impl_->load_config()->f.interest(*site) == TT_INTEREST_NEVER)
            return;
        const model::value msg{std::string(message)};
        std::vector<field_ref> refs;
        refs.reserve(fields.size() + 1);
        refs.push_back(field_ref{"message", msg});
        for (const auto& f : fields)
            refs.push_back(field_ref{f.name, f.value});
        event_record rec;
        rec.site = site;
        rec.plugin = host_plugin;
        rec.parent = current_span();
        rec.values = refs;
        rec.thread = std::this_thread::get_id();
        event(rec);
    } catch (...) {
        impl_->anomaly();
    }
}

host_span_guard dispatcher::enter_host_span(model::level lvl, std::string_view target, std::string_view name,
                                            std::initializer_list<host_field> fields, std::source_location loc) noexcept
{
    try {
        std::vector<std::string_view> names;
        names.reserve(fields.size());
        for (const auto& f : fields)
            names.push_back(f.name);
        const model::callsite* site =
            host_callsite(model::callsite_kind::span, lvl, name, target, loc.file_name(), loc.line(), names);
        if (!site || impl_->load_config()->f.interest(*site) == TT_INTEREST_NEVER)
            return {};
        std::vector<field_ref> refs;
        refs.reserve(fields.size());
        for (const auto& f : fields)
            refs.push_back(field_ref{f.name, f.value});
        span_attrs attrs;
        attrs.site = site;
        attrs.plugin = host_plugin;
        attrs.parent = current_span();
        attrs.values = refs;
        attrs.time = clock::now();
        attrs.thread = std::this_thread::get_id();
        const span_handle h = new_span(attrs);
        enter(h);
        return host_span_guard(this, h);
    } catch (...) {
        impl_->anomaly();
        return {};
    }
}

dispatcher::stats dispatcher::statistics() const noexcept
{
    using st = impl::stripe;
    stats s;
    s.spans_created = impl_->sum(&st::spans_created);
    s.spans_disabled = impl_->sum(&st::spans_disabled);
    s.events = impl_->sum(&st::events);
    s.events_filtered = impl_->sum(&st::events_filtered);
    s.anomalies = impl_->sum(&st::anomalies);
    const std::uint64_t ended = impl_->sum(&st::spans_ended);
    const std::uint64_t opened = impl_->sum(&st::spans_opened);
    s.spans_live = opened > ended ? opened - ended : 0;
    for (const auto& l : *impl_->load_layers())
        s.layer_errors += l->errors();
    return s;
}

// --- host_span_guard ---

host_span_guard::host_span_guard(host_span_guard&& o) noexcept
    : d_(std::exchange(o.d_, nullptr)), handle_(std::exchange(o.handle_, 0))
{
}

host_span_guard& host_span_guard::operator=(host_span_guard&& o) noexcept
{
    if (this != &o) {
        release();
        d_ = std::exchange(o.d_, nullptr);
        handle_ = std::exchange(o.handle_, 0);
    }
    return *this;
}

host_span_guard::~host_span_guard()
{
    release();
}

void host_span_guard::release() noexcept
{
    if (d_ && handle_ != 0) {
        d_->exit(handle_);
        d_->close(handle_);
    }
    d_ = nullptr;
    handle_ = 0;
}

void host_span_guard::record(std::string_view name, const model::value& v) noexcept
{
    if (!d_ || handle_ == 0)
        return;
    const field_ref ref{name, v};
    d_->record(handle_, field_refs(&ref, 1));
}

}  // namespace tt::host
