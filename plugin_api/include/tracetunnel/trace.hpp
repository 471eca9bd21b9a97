// tracetunnel C++ sender: spans and events from a plugin, header-only.
//
// Needs nothing but this header, abi.h and the standard library. A plugin
// defines itself once with TT_PLUGIN and then traces anywhere:
//
//   #define TT_TARGET "orders"            // optional, before the include
//   #include <tracetunnel/trace.hpp>
//   using namespace tt::literals;
//
//   static bool start() { return true; }
//   static void stop() {}
//   TT_PLUGIN("orders", "1.2.0", "Order workflow example", start, stop);
//
//   void charge(const std::string& user, double amount) {
//       auto span = TT_INFO_SPAN("charge", "user"_f = user, "status"_f = tt::empty);
//       auto guard = span.enter();
//       TT_INFO("charged", "amount"_f = amount);
//       span.record("status"_f = "ok");
//   }
//
// Cost model. Every macro expansion owns one static call site, and
// tt_plugin_start registers all of them with the host before on_start runs
// (the host answers whether it is interested; the answer is cached in the
// site). While the host is not interested in it (or the plugin is stopped),
// a hit is one relaxed atomic load and a compare; the field values are not
// evaluated. After the host's interest changes a site registers again on its
// next hit. Call sites whose level is above TT_STATIC_MAX_LEVEL compile to
// nothing and are not registered.
//
// Configuration macros (define before including):
//   TT_TARGET            filter target and module path of the following call
//                        sites; "plugin" by default. May be redefined
//                        between call sites.
//   TT_STATIC_MAX_LEVEL  most verbose level compiled in; TT_LEVEL_TRACE by
//                        default. Must be the same in every file of a plugin.
//
// Nothing here throws into the caller: formatting failures and allocation
// failures inside the sender are swallowed (the value is replaced or the
// event dropped). Exceptions thrown by the caller's own argument expressions
// propagate as usual.
#pragma once

#include <tracetunnel/abi.h>

// The sender relies on GNU attributes (sections for the call-site list,
// noinline/always_inline to keep the disabled path one compare): say so
// plainly rather than fail somewhere deep in a template.
#if !defined(__GNUC__)
#error "tracetunnel/trace.hpp needs GCC or Clang (GNU attributes)"
#endif

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef TT_TARGET
#define TT_TARGET "plugin"
#endif

#ifndef TT_STATIC_MAX_LEVEL
#define TT_STATIC_MAX_LEVEL TT_LEVEL_TRACE
#endif

#define TT_DETAIL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TT_DETAIL_STR2(x) #x
#define TT_DETAIL_STR(x) TT_DETAIL_STR2(x)
// The ELF section holding one pointer per compiled-in call site of a plugin
// (see site::registration); a valid C identifier, so that the linker defines
// __start_tt_cpp_sites and __stop_tt_cpp_sites around it in each .so.
#define TT_DETAIL_SITES_SECTION "tt_cpp_sites"
#if __SIZEOF_POINTER__ == 8
#define TT_DETAIL_ASM_PTR ".quad"
#else
#define TT_DETAIL_ASM_PTR ".long"
#endif

// Everything below is hidden: two plugins loaded into one host must not share
// the emit pointer or call-site registry through STB_GNU_UNIQUE or
// default-visibility symbols, and dlclose must be able to unload each of them,
// even when a plugin is compiled without -fvisibility=hidden.
#pragma GCC visibility push(hidden)

namespace tt {

class span;

namespace detail {

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

template <class>
inline constexpr bool always_false = false;

// --------------------------------------------------------------------------
// Compile-time strings: field names are template arguments so that the
// call site (and its id) can be built before any value is evaluated.

template <std::size_t N>
struct fixed_string {
    char data[N]{};
    constexpr fixed_string(const char (&s)[N]) noexcept
    {
        for (std::size_t i = 0; i < N; ++i)
            data[i] = s[i];
    }
    constexpr std::string_view view() const noexcept { return {data, N - 1}; }
};

// --------------------------------------------------------------------------
// The constexpr twin of abi.h's tt_callsite_hash (same bytes, same order).

constexpr std::uint64_t hash_uint(std::uint64_t h, std::uint64_t v, unsigned bytes) noexcept
{
    for (unsigned i = 0; i < bytes; ++i) {
        h ^= (v >> (8u * i)) & 0xFFu;
        h *= TT_FNV_PRIME;
    }
    return h;
}

constexpr std::uint64_t hash_str(std::uint64_t h, const tt_str& s) noexcept
{
    h = hash_uint(h, s.len, 8);
    for (std::uint64_t i = 0; i < s.len; ++i) {
        h ^= static_cast<std::uint64_t>(static_cast<unsigned char>(s.ptr[i]));
        h *= TT_FNV_PRIME;
    }
    return h;
}

constexpr std::uint64_t callsite_hash(const tt_callsite& cs) noexcept
{
    std::uint64_t h = TT_FNV_OFFSET;
    h = hash_uint(h, cs.kind, 4);
    h = hash_uint(h, cs.level, 4);
    h = hash_uint(h, cs.line, 4);
    h = hash_str(h, cs.name);
    h = hash_str(h, cs.target);
    h = hash_str(h, cs.module_path);
    h = hash_str(h, cs.file);
    for (std::uint32_t i = 0; i < cs.field_count; ++i)
        h = hash_str(h, cs.field_names[i]);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h == 0 ? 1 : h;
}

constexpr tt_str to_tt_str(std::string_view s) noexcept
{
    return tt_str{s.data(), static_cast<std::uint64_t>(s.size())};
}

// --------------------------------------------------------------------------
// Arguments of the macros.

struct empty_t {
    explicit constexpr empty_t() = default;
};
struct root_t {
    explicit constexpr root_t() = default;
};
struct parent_t {
    std::uint64_t id;
};

template <fixed_string S, class V>
struct field_arg {
    const V& value;
};

template <fixed_string S>
struct field_name {
    // Const so that it works on the prvalue a literal yields.
    template <class V>
    constexpr field_arg<S, V> operator=(const V& v) const noexcept
    {
        return field_arg<S, V>{v};
    }
};

template <class T>
struct field_traits {
    static constexpr bool is_field = false;
};
template <fixed_string S, class V>
struct field_traits<field_arg<S, V>> {
    static constexpr bool is_field = true;
    static constexpr std::size_t size = sizeof(S.data) - 1;
    static constexpr fixed_string<sizeof(S.data)> name = S;
};
template <fixed_string S>
struct field_traits<field_name<S>> {
    static constexpr bool is_field = true;
    static constexpr std::size_t size = sizeof(S.data) - 1;
    static constexpr fixed_string<sizeof(S.data)> name = S;
};

template <class T>
inline constexpr bool is_parent_v = std::is_same_v<T, parent_t> || std::is_same_v<T, root_t>;

// What an event message may be: any string-like expression.
template <class T>
inline constexpr bool is_message_v =
    std::is_convertible_v<const T&, std::string_view> ||
    (std::is_array_v<T> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>);

template <class... A>
struct type_list {};

// Only ever named inside decltype: the macros learn the argument types
// without evaluating the arguments.
template <class... A>
type_list<std::remove_cvref_t<A>...> collect(A&&...) noexcept;

// --------------------------------------------------------------------------
// Call sites.

inline constexpr std::uint8_t state_unregistered = 0;
inline constexpr std::uint8_t state_never = 1;
inline constexpr std::uint8_t state_sometimes = 2;
inline constexpr std::uint8_t state_always = 3;

// The field names of a span's call site: what span::record needs to turn a
// name into the index the host expects.
struct field_table {
    const tt_str* names;
    std::uint32_t count;
};

struct site_storage {
    constexpr site_storage(const tt_callsite& c) noexcept : cs(c) {}
    const tt_callsite cs;
    std::atomic<std::uint8_t> state{state_unregistered};
    std::atomic<bool> linked{false};
    site_storage* next = nullptr;  // written once, before it is published
};

struct site_info {
    tt_callsite_kind kind;
    tt_level level;
    std::uint32_t line;
    std::string_view name;
    std::string_view target;
    std::string_view module_path;
    std::string_view file;
};

constexpr bool level_on(tt_level level, tt_level max_level) noexcept
{
    return level <= max_level;
}

// Per-plugin sender state. Hidden, so each loaded plugin has its own.
struct sender_globals {
    std::atomic<tt_emit_fn> emit{nullptr};
    std::atomic<void*> ctx{nullptr};
    std::atomic<site_storage*> sites{nullptr};
    std::atomic<std::uint64_t> interest_epoch{0};
};
inline constinit sender_globals globals{};

inline std::uint64_t send(const tt_event& ev) noexcept
{
    const tt_emit_fn fn = globals.emit.load(std::memory_order_acquire);
    if (fn == nullptr)
        return TT_STATUS_ERROR_BIT | TT_STATUS_STOPPED;
    try {
        return fn(globals.ctx.load(std::memory_order_relaxed), &ev);
    } catch (...) {
        // A host must not throw through the C ABI; if one does, the plugin survives.
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    }
}

// Two adjacent 32-bit members (lo first in memory) written with one 64-bit
// store. A host may copy an event in 8-byte words (S2's does); a word read
// back from two 4-byte stores cannot be forwarded from the store buffer and
// waits for both to reach the cache, which made that copy most of S2's time
// (docs/PERFORMANCE.md, round 11).
inline void store_pair(void* at, std::uint32_t lo, std::uint32_t hi) noexcept
{
    const std::uint64_t w = std::endian::native == std::endian::little ? (std::uint64_t{hi} << 32 | lo)
                                                                        : (std::uint64_t{lo} << 32 | hi);
    std::memcpy(at, &w, sizeof w);
}
static_assert(offsetof(tt_event, parent) == offsetof(tt_event, value_count) + 4 && sizeof(tt_parent_mode) == 4);
static_assert(offsetof(tt_field_value, kind) == offsetof(tt_field_value, field) + 4 && sizeof(tt_value_kind) == 4);

inline void set_values_and_parent(tt_event& ev, const tt_field_value* values, std::uint32_t count,
                                  tt_parent_mode parent) noexcept
{
    ev.values = values;
    store_pair(reinterpret_cast<unsigned char*>(&ev) + offsetof(tt_event, value_count), count,
               static_cast<std::uint32_t>(parent));
}

inline tt_event make_event(tt_event_kind kind) noexcept
{
    tt_event ev{};
    ev.struct_size = sizeof(tt_event);
    ev.kind = kind;
    return ev;
}

inline void send_simple(tt_event_kind kind, std::uint64_t span_id, std::uint64_t related = 0) noexcept
{
    tt_event ev = make_event(kind);
    ev.span_id = span_id;
    ev.related_span_id = related;
    (void)send(ev);
}

inline void reset_sites() noexcept
{
    for (site_storage* s = globals.sites.load(std::memory_order_acquire); s != nullptr; s = s->next)
        s->state.store(state_unregistered, std::memory_order_seq_cst);
}

inline void forget_interest() noexcept
{
    globals.interest_epoch.fetch_add(1, std::memory_order_seq_cst);
    reset_sites();
}

// Registers a call site: tell the host about it and cache its answer. Called
// for every listed call site by tt_plugin_start (register_all_sites), and on
// a hit of an unregistered site (after interest changed, or a site the start
// did not list). Racing threads may both register; the host treats a
// repeated registration as a no-op.
__attribute__((noinline)) inline std::uint8_t register_site(site_storage& s) noexcept
{
    if (!s.linked.exchange(true, std::memory_order_acq_rel)) {
        site_storage* head = globals.sites.load(std::memory_order_relaxed);
        do {
            s.next = head;
        } while (!globals.sites.compare_exchange_weak(head, &s, std::memory_order_release,
                                                      std::memory_order_relaxed));
    }
    const std::uint64_t epoch = globals.interest_epoch.load(std::memory_order_seq_cst);
    tt_event ev = make_event(TT_EVENT_NEW_CALLSITE);
    ev.callsite = &s.cs;
    const std::uint64_t answer = send(ev);
    std::uint8_t state;
    if (TT_STATUS_IS_ERROR(answer)) {
        // Stopped: stay unregistered so a later start registers again.
        // Any other refusal is final for this instance: do not retry on every hit.
        if (TT_STATUS_CODE(answer) == TT_STATUS_STOPPED)
            return state_unregistered;
        state = state_never;
    } else if (answer == TT_INTEREST_NEVER) {
        state = state_never;
    } else if (answer == TT_INTEREST_ALWAYS) {
        state = state_always;
    } else {
        state = state_sometimes;  // SOMETIMES, or an answer from a newer host
    }
    s.state.store(state, std::memory_order_seq_cst);
    // Interest changed while we asked: the answer may be stale, ask again next hit.
    if (globals.interest_epoch.load(std::memory_order_seq_cst) != epoch)
        s.state.store(state_unregistered, std::memory_order_seq_cst);
    return state;
}

// The bounds of this image's tt_cpp_sites section, defined by the linker.
// Weak: a plugin without any call site has no such section, and both are
// then null. Hidden: each .so walks its own section, never another image's.
extern "C" {
extern site_storage* __start_tt_cpp_sites[] __attribute__((weak, visibility("hidden")));
extern site_storage* __stop_tt_cpp_sites[] __attribute__((weak, visibility("hidden")));
}

// Eager registration, from tt_plugin_start before the user's start: every
// call site compiled into the plugin is announced to the host (hit count 0)
// and the answer cached exactly as a first hit would. A refused registration
// leaves the site silent, as a refused lazy one does; a site the walk does
// not reach, or one whose interest is forgotten later, registers lazily on
// its next hit. Registering one site twice is harmless: the host treats a
// repeated registration as a no-op.
inline void register_all_sites() noexcept
{
    site_storage* const* const begin = __start_tt_cpp_sites;
    site_storage* const* const end = __stop_tt_cpp_sites;
    if (begin == nullptr || end == nullptr)
        return;
    for (site_storage* const* p = begin; p < end; ++p)
        if (*p != nullptr && (*p)->state.load(std::memory_order_relaxed) == state_unregistered)
            (void)register_site(**p);
}

// The slow half of the enabled check, after the fast path saw "not never".
inline bool enabled(site_storage& s) noexcept
{
    std::uint8_t st = s.state.load(std::memory_order_relaxed);
    if (st == state_unregistered)
        st = register_site(s);
    return st >= state_sometimes;
}

inline void on_refused(site_storage& s, std::uint64_t answer) noexcept
{
    // The host does not know the call site (e.g. its tables were reset):
    // register again on the next hit.
    if (TT_STATUS_IS_ERROR(answer) && TT_STATUS_CODE(answer) == TT_STATUS_UNKNOWN_CALLSITE)
        s.state.store(state_unregistered, std::memory_order_relaxed);
}

// Static data of one call site, built entirely at compile time.
template <std::size_t N>
struct name_block {
    std::array<std::string_view, N + 1> names{};
    std::size_t count = 0;
};

template <bool IsEvent, class... A>
constexpr auto declared_names() noexcept
{
    constexpr std::size_t n = ((is_parent_v<A> ? 0u : 1u) + ... + 0u);
    name_block<n> out;
    bool message_pending = IsEvent;
    [[maybe_unused]] auto add = [&]<class T>(std::type_identity<T>) {
        if constexpr (!is_parent_v<T>) {
            if (message_pending) {
                out.names[out.count++] = "message";
                message_pending = false;
            } else if constexpr (field_traits<T>::is_field) {
                out.names[out.count++] = field_traits<T>::name.view();
            }
        }
    };
    (add(std::type_identity<A>{}), ...);
    return out;
}

template <std::size_t Total, std::size_t N>
struct packed_names {
    std::array<char, Total + 1> chars{};
    std::array<std::size_t, N + 1> offsets{};
    std::array<std::size_t, N + 1> sizes{};
};

template <class Key, class List>
struct site;

template <class Key, class... A>
struct site<Key, type_list<A...>> {
    static constexpr site_info info = Key::info();
    static constexpr bool is_event = info.kind == TT_CALLSITE_EVENT;
    static_assert(info.level >= TT_LEVEL_ERROR && info.level <= TT_LEVEL_TRACE,
                  "tracetunnel: the level must be one of TT_LEVEL_ERROR .. TT_LEVEL_TRACE");
    static_assert(((is_parent_v<A> ? 1 : 0) + ... + 0) <= 1,
                  "tracetunnel: give at most one parent override (tt::parent(span) or tt::root) per call");

    static constexpr auto declared = declared_names<is_event, A...>();
    static constexpr std::size_t field_count = declared.count;

    static constexpr bool check_args() noexcept
    {
        bool first = is_event;
        bool ok = true;
        [[maybe_unused]] auto one = [&]<class T>(std::type_identity<T>) {
            if constexpr (!is_parent_v<T>) {
                if (first)
                    first = false;
                else if (!field_traits<T>::is_field)
                    ok = false;
            }
        };
        (one(std::type_identity<A>{}), ...);
        return ok;
    }
    static_assert(check_args(),
                  "tracetunnel: after the message (events) or the name (spans) every argument must be a field, "
                  "written \"name\"_f = value (with using namespace tt::literals), tt::parent(span) or tt::root");

    // The message is the first argument that is not a parent override.
    static constexpr bool message_ok() noexcept
    {
        if constexpr (!is_event) {
            return true;
        } else {
            bool found = false;
            bool ok = false;
            [[maybe_unused]] auto one = [&]<class T>(std::type_identity<T>) {
                if constexpr (!is_parent_v<T>) {
                    if (!found) {
                        found = true;
                        ok = is_message_v<T>;
                    }
                }
            };
            (one(std::type_identity<A>{}), ...);
            return ok;
        }
    }
    static_assert(message_ok(), "tracetunnel: an event's first argument is its message, a string "
                                "(TT_INFO(\"charged\", \"amount\"_f = 12.5)); other values go in fields");

    static constexpr bool distinct() noexcept
    {
        for (std::size_t i = 0; i < field_count; ++i)
            for (std::size_t j = i + 1; j < field_count; ++j)
                if (declared.names[i] == declared.names[j])
                    return false;
        return true;
    }
    static_assert(distinct(), "tracetunnel: field names of one call site must be distinct (events already use "
                              "\"message\" for their message)");

    // The names are copied into this call site's own storage so that nothing
    // at run time refers to template parameter objects (which have vague
    // linkage across the whole process).
    static constexpr std::size_t total_chars = [] {
        std::size_t t = 0;
        for (std::size_t i = 0; i < field_count; ++i)
            t += declared.names[i].size();
        return t;
    }();
    static constexpr auto packed = [] {
        packed_names<total_chars, field_count> p;
        std::size_t at = 0;
        for (std::size_t i = 0; i < field_count; ++i) {
            p.offsets[i] = at;
            p.sizes[i] = declared.names[i].size();
            for (char c : declared.names[i])
                p.chars[at++] = c;
        }
        return p;
    }();
    static constexpr auto names = [] {
        std::array<tt_str, field_count + 1> out{};
        for (std::size_t i = 0; i < field_count; ++i)
            out[i] = tt_str{packed.chars.data() + packed.offsets[i], packed.sizes[i]};
        return out;
    }();

    static constexpr tt_callsite proto(std::uint64_t id) noexcept
    {
        tt_callsite cs{};
        cs.struct_size = sizeof(tt_callsite);
        cs.kind = info.kind;
        cs.id = id;
        cs.level = info.level;
        cs.line = info.line;
        cs.name = to_tt_str(info.name);
        cs.target = to_tt_str(info.target);
        cs.module_path = to_tt_str(info.module_path);
        cs.file = to_tt_str(info.file);
        cs.field_names = names.data();
        cs.field_count = static_cast<std::uint32_t>(field_count);
        cs.reserved0 = 0;
        return cs;
    }

    static constexpr std::uint64_t id = callsite_hash(proto(0));
    static constexpr field_table fields{names.data(), static_cast<std::uint32_t>(field_count)};
    static constinit inline site_storage storage{proto(id)};

    // Whether this call site belongs in the plugin's table of call sites: it
    // comes from a TT_EVENT / TT_SPAN expansion (whose key also tells the
    // file's TT_STATIC_MAX_LEVEL) and its level is compiled in. Not the field
    // tables of tt::fields<...>, not call sites above TT_STATIC_MAX_LEVEL.
    static constexpr bool listed = [] {
        if constexpr (requires { Key::max_level(); })
            return level_on(info.level, Key::max_level());
        else
            return false;
    }();

    // This call site's entry in the plugin's table of call sites, which
    // tt_plugin_start walks to register every call site before its first hit
    // (register_all_sites). The entry is one site_storage* that this
    // function's body places in the section tt_cpp_sites; the function itself
    // is never called. [[gnu::used]] instantiates and emits it with the class,
    // that is for every call site compiled in: a call site in a template never
    // instantiated has no entry. Compilers instantiate the classes named in a
    // discarded `if constexpr` branch of an ordinary function too, hence the
    // check of `listed` here, inside the template, where a discarded branch
    // is really dropped.
    //
    // Why not a [[gnu::used, gnu::section]] pointer member: GCC (12 at least)
    // silently ignores the section attribute of templated variables (GCC PR
    // 70435 / 88061) and the entry would land in .data. .pushsection works
    // inside templates with both GCC and Clang. Every entry is a pointer to
    // (non-const) site_storage, pointer-aligned, in a writable section named
    // like a C identifier: the linker defines __start_tt_cpp_sites and
    // __stop_tt_cpp_sites around it, and AddressSanitizer adds no redzones
    // between entries (it never sees them). An inline function used in several
    // files may leave one entry per file; the walk skips sites already registered.
    [[gnu::used]] static void registration() noexcept
    {
        if constexpr (listed) {
            __asm__(".pushsection " TT_DETAIL_SITES_SECTION ",\"aw\"\n\t"
                    ".balign %c1\n\t" TT_DETAIL_ASM_PTR " %c0\n\t"
                    ".popsection"
                    :
                    : "i"(&storage), "i"(alignof(site_storage*)));
        }
    }
};

// For span::adopt: a field table without a call site.
template <fixed_string... S>
struct static_fields {
    struct key {
        static constexpr site_info info() noexcept { return {TT_CALLSITE_SPAN, TT_LEVEL_INFO, 0, {}, {}, {}, {}}; }
    };
    using as_site = site<key, type_list<field_name<S>...>>;
};

// --------------------------------------------------------------------------
// Values. Each argument gets a slot that turns it into a tt_field_value; only
// debug- and error-formatted values own heap memory.

// The text of a char array: up to its first NUL, never past its end. Most
// are string literals (the message, "b"_f = "text"), measured on every hit:
// eight bytes a step where a byte loop would take a compare and a branch per
// character.
template <std::size_t N>
std::size_t array_text_length(const char (&v)[N]) noexcept
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if constexpr (N >= 8) {
        // The lowest flagged byte of w is w's first zero byte (a borrow only
        // runs upward from a zero byte).
        auto first_zero = [](const char* p) noexcept {
            std::uint64_t w;
            __builtin_memcpy(&w, p, 8);
            return (w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull;
        };
        std::size_t i = 0;
        for (; i + 8 <= N; i += 8)
            if (const std::uint64_t z = first_zero(v + i))
                return i + static_cast<std::size_t>(__builtin_ctzll(z)) / 8;
        if (i < N)  // the last 8 bytes; those before i are known not to be zero
            if (const std::uint64_t z = first_zero(v + N - 8))
                return N - 8 + static_cast<std::size_t>(__builtin_ctzll(z)) / 8;
        return N;
    }
#endif
    std::size_t n = 0;
    while (n < N && v[n] != '\0')
        ++n;
    return n;
}

template <class T>
bool encode(const T& v, tt_field_value& out) noexcept
{
    using U = std::remove_cvref_t<T>;
    if constexpr (std::is_same_v<U, bool>) {
        out.kind = TT_VALUE_BOOL;
        out.as.boolean = v ? 1 : 0;
    } else if constexpr (std::is_same_v<U, i128>) {
        out.kind = TT_VALUE_I128;
        const u128 bits = static_cast<u128>(v);
        out.as.u128 = tt_u128{static_cast<std::uint64_t>(bits), static_cast<std::uint64_t>(bits >> 64)};
    } else if constexpr (std::is_same_v<U, u128>) {
        out.kind = TT_VALUE_U128;
        out.as.u128 = tt_u128{static_cast<std::uint64_t>(v), static_cast<std::uint64_t>(v >> 64)};
    } else if constexpr (std::is_integral_v<U> && std::is_signed_v<U>) {
        out.kind = TT_VALUE_I64;
        out.as.i64 = static_cast<std::int64_t>(v);
    } else if constexpr (std::is_integral_v<U>) {
        out.kind = TT_VALUE_U64;
        out.as.u64 = static_cast<std::uint64_t>(v);
    } else if constexpr (std::is_floating_point_v<U>) {
        out.kind = TT_VALUE_F64;
        out.as.f64 = static_cast<double>(v);
    } else if constexpr (std::is_same_v<U, const char*> || std::is_same_v<U, char*>) {
        if (v == nullptr)
            return false;  // a null C string is "no value", like an empty field
        out.kind = TT_VALUE_STR;
        out.as.str = to_tt_str(std::string_view(v));
    } else if constexpr (std::is_array_v<U> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<U>>, char>) {
        // A char array: up to its first NUL, never past its end.
        out.kind = TT_VALUE_STR;
        out.as.str = tt_str{v, array_text_length(v)};
    } else if constexpr (std::is_convertible_v<const U&, std::string_view>) {
        try {
            out.kind = TT_VALUE_STR;
            out.as.str = to_tt_str(std::string_view(v));
        } catch (...) {
            return false;
        }
    } else {
        static_assert(always_false<U>,
                      "tracetunnel: no value kind for this type; wrap it in tt::debug(x) (uses operator<<), "
                      "tt::display(x), tt::error(e), or convert it to a number or a string");
    }
    return true;
}

template <class T>
struct slot {
    explicit slot(const T& v) noexcept : value(v) {}
    bool fill(tt_field_value& out) const noexcept { return encode(value, out); }
    const T& value;
};

template <fixed_string S, class V>
struct slot<field_arg<S, V>> {
    explicit slot(const field_arg<S, V>& f) noexcept : inner(f.value) {}
    bool fill(tt_field_value& out) const noexcept { return inner.fill(out); }
    slot<V> inner;
};

template <fixed_string S>
struct slot<field_name<S>> {
    explicit slot(const field_name<S>&) noexcept {}
    bool fill(tt_field_value&) const noexcept { return false; }
};

template <>
struct slot<empty_t> {
    explicit slot(const empty_t&) noexcept {}
    bool fill(tt_field_value&) const noexcept { return false; }
};

template <>
struct slot<root_t> {
    explicit slot(const root_t&) noexcept {}
    bool fill(tt_field_value&) const noexcept { return false; }
};

template <>
struct slot<parent_t> {
    explicit slot(const parent_t&) noexcept {}
    bool fill(tt_field_value&) const noexcept { return false; }
};

inline constexpr std::string_view unformattable = "<unformattable>";

template <class T>
struct debug_value {
    const T& value;
};

template <class T>
struct slot<debug_value<T>> {
    explicit slot(const debug_value<T>& d) noexcept
    {
        try {
            std::ostringstream os;
            os << d.value;
            text = std::move(os).str();
            ok = true;
        } catch (...) {
            ok = false;
        }
    }
    bool fill(tt_field_value& out) const noexcept
    {
        out.kind = TT_VALUE_DEBUG;
        out.as.str = to_tt_str(ok ? std::string_view(text) : unformattable);
        return true;
    }
    std::string text;
    bool ok = false;
};

template <class T>
struct display_value {
    const T& value;
};

template <class T>
struct slot<display_value<T>> : slot<debug_value<T>> {
    explicit slot(const display_value<T>& d) noexcept : slot<debug_value<T>>(debug_value<T>{d.value}) {}
};

}  // namespace detail

// --------------------------------------------------------------------------
// Public value wrappers.

// A field declared now and recorded later with span::record:
//   auto s = TT_INFO_SPAN("load", "bytes"_f = tt::empty);
inline constexpr detail::empty_t empty{};

// Explicitly no parent: TT_INFO("boot", tt::root).
inline constexpr detail::root_t root{};

// Any type with operator<<, sent as its formatted text (TT_VALUE_DEBUG).
//   TT_DEBUG("state", "order"_f = tt::debug(order));
template <class T>
detail::debug_value<T> debug(const T& value) noexcept
{
    return detail::debug_value<T>{value};
}

// Like debug(): text formatted with operator<< (the host shows it as text).
template <class T>
detail::display_value<T> display(const T& value) noexcept
{
    return detail::display_value<T>{value};
}

// An error value with its chain of causes (TT_VALUE_ERROR): the message
// first, then each source. From an exception, the chain follows
// std::nested_exception (std::throw_with_nested):
//   catch (const std::exception& e) { TT_ERROR("charge failed", "error"_f = tt::error(e)); }
//   TT_WARN("retry", "error"_f = tt::error({"timeout", "connection reset"}));
// Like every field value it is meant to be built inside the macro call.
class error {
public:
    error(const std::exception& e) noexcept : exception_(&e) {}
    error(std::exception_ptr p) noexcept : pointer_(std::move(p)) {}
    error(std::initializer_list<std::string_view> chain) noexcept : list_(chain) {}

private:
    template <class>
    friend struct detail::slot;
    const std::exception* exception_ = nullptr;
    std::exception_ptr pointer_;
    std::initializer_list<std::string_view> list_;
};

namespace detail {

inline constexpr std::size_t max_error_chain = 16;
inline constexpr std::string_view unknown_exception = "unknown exception";
inline constexpr std::string_view chain_unavailable = "<error chain unavailable>";

// Fixed capacity on purpose: no container instantiations of our own that a
// plugin would export (namespace std has default visibility).
struct chain_buffer {
    std::array<std::string, max_error_chain> text;
    std::size_t size = 0;
    void add(std::string_view s)
    {
        if (size < max_error_chain)
            text[size++].assign(s.data(), s.size());
    }
};

inline void collect_chain(const std::exception& e, chain_buffer& out)
{
    out.add(e.what());
    if (out.size >= max_error_chain)
        return;
    try {
        std::rethrow_if_nested(e);
    } catch (const std::exception& inner) {
        collect_chain(inner, out);
    } catch (...) {
        out.add(unknown_exception);
    }
}

template <>
struct slot<tt::error> {
    explicit slot(const tt::error& e) noexcept
    {
        try {
            if (e.exception_ != nullptr) {
                collect_chain(*e.exception_, owned);
            } else if (e.pointer_) {
                try {
                    std::rethrow_exception(e.pointer_);
                } catch (const std::exception& ex) {
                    collect_chain(ex, owned);
                } catch (...) {
                    owned.add(unknown_exception);
                }
            }
            if (owned.size > 0) {
                for (std::size_t i = 0; i < owned.size; ++i)
                    chain[count++] = to_tt_str(owned.text[i]);
            } else {
                for (std::string_view s : e.list_)
                    if (count < max_error_chain)
                        chain[count++] = to_tt_str(s);
            }
        } catch (...) {
            count = 0;
        }
    }
    bool fill(tt_field_value& out) const noexcept
    {
        out.kind = TT_VALUE_ERROR;
        if (count == 0)
            out.as.error = tt_error_chain{&fallback, 1};
        else
            out.as.error = tt_error_chain{chain.data(), count};
        return true;
    }
    chain_buffer owned;
    std::array<tt_str, max_error_chain> chain{};
    std::size_t count = 0;
    tt_str fallback = to_tt_str(chain_unavailable);
};

struct parent_choice {
    tt_parent_mode mode = TT_PARENT_CONTEXTUAL;
    std::uint64_t id = 0;
};

template <class T>
void note_parent(const T& arg, parent_choice& p) noexcept
{
    if constexpr (std::is_same_v<T, root_t>) {
        p.mode = TT_PARENT_ROOT;
    } else if constexpr (std::is_same_v<T, parent_t>) {
        // A disabled parent means "no parent", as in Rust's tracing.
        p.mode = arg.id == 0 ? TT_PARENT_ROOT : TT_PARENT_EXPLICIT;
        p.id = arg.id;
    }
}

// One value of field #field into v, its field and kind in one store
// (store_pair); false when the slot has nothing to send.
template <class T>
__attribute__((always_inline)) inline bool fill_value(tt_field_value& v, std::uint32_t field,
                                                      const slot<T>& s) noexcept
{
    v = tt_field_value{};
    v.field = field;
    if (!s.fill(v))
        return false;
    store_pair(reinterpret_cast<unsigned char*>(&v) + offsetof(tt_field_value, field), v.field,
               static_cast<std::uint32_t>(v.kind));
    return true;
}

// Fills values[] from args in call-site order; returns how many were written.
// Inlined into its one caller per call site (send_event, new_span): a call
// here would cost more than most of the values it fills.
template <class... A, std::size_t... I>
__attribute__((always_inline)) inline std::uint32_t fill_values(tt_field_value* values, parent_choice& parent, const std::tuple<slot<A>...>& slots,
                          const A&... args, std::index_sequence<I...>) noexcept
{
    std::uint32_t count = 0;
    std::uint32_t field = 0;
    [[maybe_unused]] auto one = [&]<class T>(const T& arg, const slot<T>& s) {
        if constexpr (is_parent_v<T>) {
            note_parent(arg, parent);
        } else {
            if (fill_value(values[count], field++, s))
                ++count;
        }
    };
    (one(args, std::get<I>(slots)), ...);
    return count;
}

template <class Site, class... A>
__attribute__((noinline)) void send_event(const A&... args) noexcept
{
    try {
        const std::tuple<slot<A>...> slots(args...);
        tt_field_value values[sizeof...(A) + 1];
        parent_choice parent;
        tt_event ev = make_event(TT_EVENT_NEW_EVENT);
        const std::uint32_t count = fill_values<A...>(values, parent, slots, args..., std::index_sequence_for<A...>{});
        set_values_and_parent(ev, values, count, parent.mode);
        ev.callsite_id = Site::id;
        ev.related_span_id = parent.mode == TT_PARENT_EXPLICIT ? parent.id : 0;
        on_refused(Site::storage, send(ev));
    } catch (...) {
        // Nothing the sender does may throw into the plugin's frame.
    }
}

template <class Site, class... A>
span new_span(const A&... args) noexcept;

template <class... F>
void send_record(std::uint64_t span_id, const field_table& table, const F&... fields) noexcept;

}  // namespace detail

// --------------------------------------------------------------------------
// Spans.

class entered_span;

// A handle to a span the host keeps. id() == 0 means disabled: every
// operation on it does nothing. Copying emits SPAN_CLONED (one more handle to
// the same span), destruction emits SPAN_DROPPED; the host closes the span
// when its last handle is dropped.
class span {
public:
    // A disabled span.
    constexpr span() noexcept = default;

    span(const span& other) noexcept : id_(other.id_), fields_(other.fields_)
    {
        if (id_ != 0)
            detail::send_simple(TT_EVENT_SPAN_CLONED, id_);
    }
    span(span&& other) noexcept : id_(std::exchange(other.id_, 0)), fields_(other.fields_) {}
    span& operator=(const span& other) noexcept
    {
        if (this != &other) {
            span copy(other);
            swap(copy);
        }
        return *this;
    }
    span& operator=(span&& other) noexcept
    {
        if (this != &other) {
            span old(std::move(*this));
            swap(other);
        }
        return *this;
    }
    ~span()
    {
        if (id_ != 0)
            detail::send_simple(TT_EVENT_SPAN_DROPPED, id_);
    }

    void swap(span& other) noexcept
    {
        std::swap(id_, other.id_);
        std::swap(fields_, other.fields_);
    }

    // The host's id for this span; 0 when disabled.
    std::uint64_t id() const noexcept { return id_; }
    bool is_disabled() const noexcept { return id_ == 0; }

    // Makes this span the current one on this thread until the guard dies:
    //   auto guard = span.enter();
    [[nodiscard]] entered_span enter() const noexcept;

    // Records values for fields the span's call site declared (usually with
    // tt::empty). Names are matched at run time; a name the call site does not
    // declare is skipped, as is everything on a span adopted without fields.
    //   span.record("status"_f = "paid", "items"_f = 3);
    template <class... F>
    void record(const F&... values) const noexcept
    {
        static_assert((detail::field_traits<F>::is_field && ...),
                      "tracetunnel: span::record takes fields, written \"name\"_f = value");
        if (id_ != 0 && fields_ != nullptr && sizeof...(F) > 0)
            detail::send_record(id_, *fields_, values...);
    }

    // Marks this span as caused by `cause` (e.g. a retry by the failed attempt).
    void follows_from(const span& cause) const noexcept
    {
        if (id_ != 0 && cause.id_ != 0)
            detail::send_simple(TT_EVENT_FOLLOWS_FROM, id_, cause.id_);
    }

    // Gives up this handle without dropping it and returns its id, e.g. to
    // keep the span open across a hot reload in the plugin's saved state.
    // The handle becomes disabled.
    [[nodiscard]] std::uint64_t release() noexcept
    {
        fields_ = nullptr;
        return std::exchange(id_, 0);
    }

    // Takes over a released id without emitting anything. With the field
    // list of the span's call site, in the same order, record() works too:
    //   auto order = tt::span::adopt(saved_id, tt::fields<"order_id", "status">);
    static span adopt(std::uint64_t id) noexcept { return span(id, nullptr); }
    static span adopt(std::uint64_t id, const detail::field_table& table) noexcept { return span(id, &table); }

private:
    constexpr span(std::uint64_t id, const detail::field_table* fields) noexcept : id_(id), fields_(fields) {}

    std::uint64_t id_ = 0;
    const detail::field_table* fields_ = nullptr;
};

// The guard returned by span::enter(): SPAN_EXITED when it dies.
class [[nodiscard]] entered_span {
public:
    entered_span(entered_span&& other) noexcept : id_(std::exchange(other.id_, 0)) {}
    entered_span(const entered_span&) = delete;
    entered_span& operator=(const entered_span&) = delete;
    entered_span& operator=(entered_span&&) = delete;
    ~entered_span()
    {
        if (id_ != 0)
            detail::send_simple(TT_EVENT_SPAN_EXITED, id_);
    }

private:
    friend class span;
    explicit entered_span(std::uint64_t id) noexcept : id_(id)
    {
        if (id_ != 0)
            detail::send_simple(TT_EVENT_SPAN_ENTERED, id_);
    }
    std::uint64_t id_;
};

inline entered_span span::enter() const noexcept
{
    return entered_span(id_);
}

// An explicit parent for a new span or event: TT_INFO_SPAN("step", tt::parent(order)).
// A disabled parent makes the new span a root.
inline detail::parent_t parent(const span& s) noexcept
{
    return detail::parent_t{s.id()};
}

// The field list of a span call site, for span::adopt.
template <detail::fixed_string... S>
inline constexpr const detail::field_table& fields = detail::static_fields<S...>::as_site::fields;

namespace literals {
// "amount"_f = 12.5 is a field named "amount"; the name is part of the type.
template <detail::fixed_string S>
constexpr detail::field_name<S> operator""_f() noexcept
{
    return {};
}
}  // namespace literals

// The same without a literal: tt::field<"amount"> = 12.5
template <detail::fixed_string S>
inline constexpr detail::field_name<S> field{};

namespace detail {

template <class Site, class... A>
__attribute__((noinline)) span new_span(const A&... args) noexcept
{
    try {
        const std::tuple<slot<A>...> slots(args...);
        tt_field_value values[sizeof...(A) + 1];
        parent_choice parent;
        tt_event ev = make_event(TT_EVENT_NEW_SPAN);
        const std::uint32_t count = fill_values<A...>(values, parent, slots, args..., std::index_sequence_for<A...>{});
        set_values_and_parent(ev, values, count, parent.mode);
        ev.callsite_id = Site::id;
        ev.related_span_id = parent.mode == TT_PARENT_EXPLICIT ? parent.id : 0;
        const std::uint64_t answer = send(ev);
        if (answer == 0 || TT_STATUS_IS_ERROR(answer)) {
            on_refused(Site::storage, answer);
            return span();
        }
        return span::adopt(answer, Site::fields);
    } catch (...) {
        return span();
    }
}

template <class... F>
__attribute__((noinline)) void send_record(std::uint64_t span_id, const field_table& table,
                                           const F&... fields) noexcept
{
    try {
        const std::tuple<slot<F>...> slots(fields...);
        tt_field_value values[sizeof...(F) + 1];
        std::uint32_t count = 0;
        [[maybe_unused]] auto one = [&]<class T>(const slot<T>& s) {
            const std::string_view name = field_traits<T>::name.view();
            for (std::uint32_t i = 0; i < table.count; ++i) {
                if (std::string_view(table.names[i].ptr, table.names[i].len) != name)
                    continue;
                if (fill_value(values[count], i, s))
                    ++count;
                return;
            }
        };
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            (one(std::get<I>(slots)), ...);
        }(std::index_sequence_for<F...>{});
        if (count == 0)
            return;
        tt_event ev = make_event(TT_EVENT_VALUES_RECORDED);
        ev.span_id = span_id;
        set_values_and_parent(ev, values, count, TT_PARENT_CONTEXTUAL);  // parent unread: 0, as before
        (void)send(ev);
    } catch (...) {
    }
}

// ------------------------------------------------------------------------
// Plugin entry points (used by TT_PLUGIN / TT_PLUGIN_STATE).

constexpr tt_plugin_info make_info(std::string_view name, std::string_view version,
                                   std::string_view description) noexcept
{
    tt_plugin_info info{};
    info.struct_size = sizeof(tt_plugin_info);
    info.reserved0 = 0;
    info.name = to_tt_str(name);
    info.version = to_tt_str(version);
    info.description = to_tt_str(description);
    return info;
}

template <class F>
bool run_hook(F&& f)
{
    if constexpr (std::is_null_pointer_v<std::remove_cvref_t<F>>) {
        return true;
    } else {
        static_assert(std::is_invocable_v<F&>,
                      "TT_PLUGIN: the start and stop functions take no arguments (pass a function name or nullptr)");
        using R = std::invoke_result_t<F&>;
        static_assert(std::is_void_v<R> || std::is_convertible_v<R, bool>,
                      "TT_PLUGIN: the start function returns bool (false refuses the start) or void");
        if constexpr (std::is_void_v<R>) {
            f();
            return true;
        } else {
            return static_cast<bool>(f());
        }
    }
}

inline void clear_host() noexcept
{
    globals.emit.store(nullptr, std::memory_order_release);
    globals.ctx.store(nullptr, std::memory_order_relaxed);
    reset_sites();
}

template <class F>
std::int32_t plugin_start(const tt_host* host, F&& on_start) noexcept
{
    if (host == nullptr || host->struct_size < sizeof(tt_host) || host->emit == nullptr)
        return 1;
    globals.ctx.store(host->ctx, std::memory_order_relaxed);
    globals.emit.store(host->emit, std::memory_order_release);
    // A restart in the same image talks to a host that has not seen our call sites.
    reset_sites();
    // The host learns every call site now, before on_start and before any hit.
    register_all_sites();
    try {
        if (run_hook(on_start))
            return 0;
    } catch (...) {
        clear_host();
        return 3;
    }
    clear_host();
    return 2;
}

template <class F>
void plugin_stop(F&& on_stop) noexcept
{
    try {
        (void)run_hook(on_stop);  // may still emit: the host is live until we return
    } catch (...) {
    }
    clear_host();
}

template <class F>
std::int32_t save_state(tt_write_fn write, void* write_ctx, F&& save) noexcept
{
    if (write == nullptr)
        return 1;
    try {
        const auto bytes = save();
        using B = std::remove_cvref_t<decltype(bytes)>;
        if constexpr (std::is_convertible_v<const B&, std::string_view>) {
            const std::string_view view(bytes);
            return write(write_ctx, view.data(), view.size()) == 0 ? 0 : 2;
        } else {
            static_assert(sizeof(*std::data(bytes)) == 1,
                          "TT_PLUGIN_STATE: the save function returns std::string (or another byte container)");
            return write(write_ctx, std::data(bytes), std::size(bytes)) == 0 ? 0 : 2;
        }
    } catch (...) {
        return 3;
    }
}

template <class F>
std::int32_t restore_state(const void* data, std::uint64_t len, F&& restore) noexcept
{
    try {
        const std::string_view bytes(len == 0 ? "" : static_cast<const char*>(data), static_cast<std::size_t>(len));
        using R = std::invoke_result_t<F&, std::string_view>;
        if constexpr (std::is_void_v<R>) {
            restore(bytes);
            return 0;
        } else {
            static_assert(std::is_convertible_v<R, bool>,
                          "TT_PLUGIN_STATE: the restore function takes std::string_view and returns bool or void");
            return static_cast<bool>(restore(bytes)) ? 0 : 2;
        }
    } catch (...) {
        return 3;
    }
}

}  // namespace detail
}  // namespace tt

#pragma GCC visibility pop

// ------------------------------------------------------------------------
// Events: TT_INFO("charged", "amount"_f = 12.5, "user"_f = name);
// The first argument is the message (any string), sent as field "message";
// the rest are fields, plus optionally tt::parent(span) or tt::root anywhere.
// Field values are evaluated only when the host is interested.
// The level must be a constant expression.

#define TT_EVENT(level, ...)                                                                                  \
    do {                                                                                                      \
        if constexpr (::tt::detail::level_on((level), (TT_STATIC_MAX_LEVEL))) {                               \
            struct tt_detail_key_ {                                                                           \
                static constexpr ::tt::detail::site_info info() noexcept                                      \
                {                                                                                             \
                    return {TT_CALLSITE_EVENT, (level), __LINE__, "event " __FILE__ ":" TT_DETAIL_STR(__LINE__), \
                            TT_TARGET, TT_TARGET, __FILE__};                                                  \
                }                                                                                             \
                static constexpr ::tt_level max_level() noexcept { return (TT_STATIC_MAX_LEVEL); }             \
            };                                                                                                \
            using tt_detail_site_ =                                                                           \
                ::tt::detail::site<tt_detail_key_, decltype(::tt::detail::collect(__VA_ARGS__))>;              \
            static_cast<void>(&tt_detail_site_::registration); /* its entry in the table of call sites */     \
            if (TT_DETAIL_UNLIKELY(tt_detail_site_::storage.state.load(::std::memory_order_relaxed) !=        \
                                   ::tt::detail::state_never) &&                                              \
                ::tt::detail::enabled(tt_detail_site_::storage))                                              \
                ::tt::detail::send_event<tt_detail_site_>(__VA_ARGS__);                                       \
        }                                                                                                     \
    } while (0)

#define TT_TRACE(...) TT_EVENT(TT_LEVEL_TRACE, __VA_ARGS__)
#define TT_DEBUG(...) TT_EVENT(TT_LEVEL_DEBUG, __VA_ARGS__)
#define TT_INFO(...) TT_EVENT(TT_LEVEL_INFO, __VA_ARGS__)
#define TT_WARN(...) TT_EVENT(TT_LEVEL_WARN, __VA_ARGS__)
#define TT_ERROR(...) TT_EVENT(TT_LEVEL_ERROR, __VA_ARGS__)

// ------------------------------------------------------------------------
// Spans: auto s = TT_INFO_SPAN("order", "id"_f = 7, "status"_f = tt::empty);
// The name must be a constant string; the result is a tt::span (disabled
// when the host is not interested). Usable inside functions only.

#define TT_SPAN(level, name, ...)                                                                              \
    ([&]() -> ::tt::span {                                                                                     \
        if constexpr (::tt::detail::level_on((level), (TT_STATIC_MAX_LEVEL))) {                                \
            struct tt_detail_key_ {                                                                            \
                static constexpr ::tt::detail::site_info info() noexcept                                       \
                {                                                                                              \
                    return {TT_CALLSITE_SPAN, (level), __LINE__, (name), TT_TARGET, TT_TARGET, __FILE__};      \
                }                                                                                              \
                static constexpr ::tt_level max_level() noexcept { return (TT_STATIC_MAX_LEVEL); }              \
            };                                                                                                 \
            using tt_detail_site_ =                                                                            \
                ::tt::detail::site<tt_detail_key_, decltype(::tt::detail::collect(__VA_ARGS__))>;               \
            static_cast<void>(&tt_detail_site_::registration); /* its entry in the table of call sites */      \
            if (TT_DETAIL_UNLIKELY(tt_detail_site_::storage.state.load(::std::memory_order_relaxed) !=         \
                                   ::tt::detail::state_never) &&                                               \
                ::tt::detail::enabled(tt_detail_site_::storage))                                               \
                return ::tt::detail::new_span<tt_detail_site_>(__VA_ARGS__);                                   \
        }                                                                                                      \
        return ::tt::span();                                                                                   \
    }())

#define TT_TRACE_SPAN(...) TT_SPAN(TT_LEVEL_TRACE, __VA_ARGS__)
#define TT_DEBUG_SPAN(...) TT_SPAN(TT_LEVEL_DEBUG, __VA_ARGS__)
#define TT_INFO_SPAN(...) TT_SPAN(TT_LEVEL_INFO, __VA_ARGS__)
#define TT_WARN_SPAN(...) TT_SPAN(TT_LEVEL_WARN, __VA_ARGS__)
#define TT_ERROR_SPAN(...) TT_SPAN(TT_LEVEL_ERROR, __VA_ARGS__)

// ------------------------------------------------------------------------
// TT_PLUGIN(name, version, description, on_start, on_stop): defines the
// plugin's required exports, once per plugin, at namespace scope.
// on_start: bool() or void() (false or an exception refuses the start), or
// nullptr; on_stop: void(), or nullptr. on_stop may still emit. A trailing
// semicolon is optional.

#define TT_PLUGIN(name, version, description, on_start, on_stop)                                             \
    extern "C" TT_EXPORT const ::std::uint32_t tt_plugin_abi_version = TT_ABI_VERSION;                       \
    extern "C" TT_EXPORT const ::tt_plugin_info* tt_plugin_describe(void)                                    \
    {                                                                                                        \
        static constexpr ::tt_plugin_info tt_detail_info_ = ::tt::detail::make_info(name, version, description); \
        return &tt_detail_info_;                                                                             \
    }                                                                                                        \
    extern "C" TT_EXPORT ::std::int32_t tt_plugin_start(const ::tt_host* host)                               \
    {                                                                                                        \
        return ::tt::detail::plugin_start(host, on_start);                                                   \
    }                                                                                                        \
    extern "C" TT_EXPORT void tt_plugin_stop(void)                                                           \
    {                                                                                                        \
        ::tt::detail::plugin_stop(on_stop);                                                                  \
    }                                                                                                        \
    extern "C" TT_EXPORT void tt_plugin_interest_changed(void)                                               \
    {                                                                                                        \
        ::tt::detail::forget_interest();                                                                     \
    }

// TT_PLUGIN_STATE(save, restore): optional, keeps the plugin's own state
// across a hot reload. save: std::string() (any byte container); restore:
// bool(std::string_view) or void(std::string_view).

#define TT_PLUGIN_STATE(save_fn, restore_fn)                                                                 \
    extern "C" TT_EXPORT ::std::int32_t tt_plugin_save_state(::tt_write_fn write, void* write_ctx)           \
    {                                                                                                        \
        return ::tt::detail::save_state(write, write_ctx, save_fn);                                          \
    }                                                                                                        \
    extern "C" TT_EXPORT ::std::int32_t tt_plugin_restore_state(const void* data, ::std::uint64_t len)       \
    {                                                                                                        \
        return ::tt::detail::restore_state(data, len, restore_fn);                                           \
    }
