// The host's tracing pipeline, as the receiver sees it: one `subscriber`.
//
// Shaped like Rust tracing's Subscriber / Layer and like spdlog sinks: a small
// interface of synchronous calls, nothing thrown out of it. The receiver
// validates what a plugin sends, keeps the span tables, and relays into one
// subscriber; a dispatcher (filters, fan-out to console, JSON lines, OTLP,
// USDT, the diagnostics console) is itself a subscriber.
//
// Records borrow everything: call site, plugin name and values stay valid for
// the call only. A layer that keeps something copies it.
//
//   class counter final : public tt::host::subscriber {
//       tt::host::span_handle new_span(const tt::host::span_attrs& a) noexcept override
//       {
//           ids.push_back(a.plugin_span_id);
//           return ids.size();
//       }
//       std::uint64_t plugin_span_id(tt::host::span_handle h) const noexcept override
//       {
//           return h != 0 && h <= ids.size() ? ids[h - 1] : 0;
//       }
//       ...
//   };
#pragma once

#include <tracetunnel/model.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <variant>
#include <vector>

namespace tt::host {

// The pipeline's handle for one span; never 0 for a real span, 0 = "none".
// Chosen by the subscriber, which must not reuse a handle while any receiver
// may still refer to it (a closed handle may still arrive as a follows-from
// cause, and, from a misbehaving plugin, in a late record/exit).
using span_handle = std::uint64_t;

using clock = std::chrono::system_clock;

enum class interest : std::uint32_t {
    never = TT_INTEREST_NEVER,
    sometimes = TT_INTEREST_SOMETIMES,
    always = TT_INTEREST_ALWAYS,
};

// An event's instant, read from the clock only when something asks for it.
//
// Reading the clock costs more than the rest of an event's trip into a layer
// that only counts (system_clock::now is ~24 ns on a VM), so, as in Rust
// tracing, an event carries no timestamp until a reader wants one. The first
// get() reads the clock and keeps the answer, so every layer of the same
// event (console, JSON, OTLP, capture, ...) sees the same instant. A time set
// explicitly (a replay, a capture, a test) is kept as given.
//
// Not thread-safe: a record is borrowed by one call on one thread, and a
// layer that keeps the time copies get()'s answer.
//
//   tt::host::event_record rec;           // no clock read yet
//   rec.time = fixed;                     // or: an explicit instant, kept
//   auto t = view.time.get();             // first reader reads the clock
class event_time {
public:
    event_time() noexcept = default;  // unset: the first get() reads the clock
    event_time(clock::time_point t) noexcept : t_(t), set_(true) {}

    clock::time_point get() const noexcept
    {
        if (!set_) {
            t_ = clock::now();
            set_ = true;
        }
        return t_;
    }
    // True once an instant is fixed (given, or read by get()).
    bool is_set() const noexcept { return set_; }

private:
    mutable clock::time_point t_{};
    mutable bool set_ = false;
};

// One field value, borrowed for the length of a call: a view either over a
// plugin's tt_field_value (the receiver hands those through unconverted, so
// an event costs no copy) or over an owned model::value (replay, capture,
// restored spans, the host's own events). Text is valid UTF-8 either way: the
// receiver checks it before a view is made.
//
// visit() calls its visitor with one of bool, std::int64_t, std::uint64_t,
// model::i128, model::u128, double, std::string_view (a string value),
// value_ref::debug (debug text) or value_ref::error_view (an error chain); an
// empty ref (kind::none) reads as the empty string. to_value() makes an
// owned copy for a layer that keeps it.
//
//   void show(tt::host::value_ref v) {
//       if (v.type() == tt::host::value_ref::kind::string) fmt::print("{}", v.text());
//       else v.visit([](const auto& x) { /* one overload or if constexpr per type */ });
//   }
class value_ref {
public:
    // The TT_VALUE_* numbers; kind() - 1 is the model::value alternative's index.
    enum class kind : std::uint8_t {
        none = 0,
        boolean = TT_VALUE_BOOL,
        i64 = TT_VALUE_I64,
        u64 = TT_VALUE_U64,
        i128 = TT_VALUE_I128,
        u128 = TT_VALUE_U128,
        f64 = TT_VALUE_F64,
        string = TT_VALUE_STR,
        debug_text = TT_VALUE_DEBUG,
        error = TT_VALUE_ERROR,
    };
    struct debug {
        std::string_view text;
    };
    // An error's message (at 0) and its sources, borrowed.
    class error_view {
    public:
        std::size_t size() const noexcept { return n_; }
        bool empty() const noexcept { return n_ == 0; }
        std::string_view operator[](std::size_t i) const noexcept
        {
            if (abi_) {
                const tt_str& s = static_cast<const tt_str*>(p_)[i];
                return s.len == 0 ? std::string_view() : std::string_view(s.ptr, s.len);
            }
            return static_cast<const std::string*>(p_)[i];
        }
        std::string_view front() const noexcept { return (*this)[0]; }

    private:
        friend class value_ref;
        error_view(const void* p, std::size_t n, bool abi) noexcept : p_(p), n_(n), abi_(abi) {}
        const void* p_;
        std::size_t n_;
        bool abi_;
    };

    value_ref() noexcept = default;  // kind::none
    // Borrows an owned value (which must outlive the ref).
    value_ref(const model::value& v) noexcept;  // NOLINT: implicit, as a view is
    // Borrows a plugin's value as it is. The caller has checked it: a known
    // kind, readable pointers, valid UTF-8 (the receiver does).
    static value_ref from_abi(const tt_field_value& v) noexcept;

    kind type() const noexcept { return static_cast<kind>(meta_ & kind_mask); }
    explicit operator bool() const noexcept { return type() != kind::none; }
    // A string's or debug value's text, an error's message; empty otherwise.
    std::string_view text() const noexcept;
    // An error's message and sources; empty for any other kind.
    error_view chain() const noexcept
    {
        return type() == kind::error ? error_view(s_.ptr, s_.len, (meta_ & abi_chain_bit) != 0)
                                     : error_view(nullptr, 0, false);
    }
    template <class F>
    decltype(auto) visit(F&& f) const;
    model::value to_value() const;

private:
    friend class field_refs;  // makes views of values the receiver checked, without from_abi's kind check
    static value_ref from_checked_abi(const tt_field_value& v) noexcept
    {
        return value_ref(static_cast<kind>(v.kind), v);
    }
    // from_abi's and from_checked_abi's: the ABI payload copied whole,
    // whatever the kind (no branch per kind), each member stored once (no
    // default first).
    value_ref(kind k, const tt_field_value& v) noexcept
        : s_(payload_of(v)), meta_(static_cast<std::uint64_t>(k) | abi_chain_bit)
    {
    }
    static tt_str payload_of(const tt_field_value& v) noexcept
    {
        // Each member of the ABI's union sits where the same member of ours does.
        static_assert(sizeof(v.as) == sizeof(tt_str) && sizeof(tt_error_chain) == sizeof(tt_str));
        tt_str payload;
        std::memcpy(&payload, &v.as, sizeof(tt_str));
        return payload;
    }

    static constexpr std::uint64_t kind_mask = 0xff;
    static constexpr std::uint64_t abi_chain_bit = 0x100;  // an error's chain is the ABI's tt_str array

    // The payload first and the kind in a whole word after it: a ref made
    // just before it is copied (a layer's view of a plugin's value) is
    // written as one 16-byte and one 8-byte store, and the copy's loads are
    // the same two, which the CPU forwards from the stores. A kind byte at
    // the front made the copy's first 16-byte load span two stores, which
    // cannot be forwarded and waits for both to reach the cache.
    // The ABI's payload layout, so that from_abi copies it as it is.
    union {
        std::uint8_t b_;  // 0 = false, anything else true (as the ABI's boolean)
        std::int64_t i_;
        std::uint64_t u_;
        tt_u128 w_;
        double d_;
        tt_str s_{};  // string, debug text; an error: chain pointer and length
    };
    std::uint64_t meta_ = 0;  // kind (low byte) | abi_chain_bit
};
static_assert(sizeof(value_ref) == 24);

// One value of one field, borrowed from the receiver for the length of a call.
struct field_ref {
    std::string_view name;
    value_ref value;
};

// The values of one event, span or record: a range of field_ref, borrowed
// for the length of a call. Either views made already (the host's own
// values, replay, restored spans) or a plugin's values as it sent them with
// the call site's field names, each field_ref made when it is read: an
// event that no layer reads the values of costs no views. The receiver has
// checked a plugin's values before they get here.
//
//   for (const tt::host::field_ref& f : ev.values)  // a field_ref made per step
//       fmt::print("{}={} ", f.name, f.value.text());
//   tt::host::field_ref r{"answer", v};
//   sub.record(span, tt::host::field_refs(&r, 1));
class field_refs {
public:
    class iterator {
    public:
        using value_type = field_ref;
        using difference_type = std::ptrdiff_t;
        using reference = field_ref;
        using iterator_category = std::input_iterator_tag;
        using iterator_concept = std::forward_iterator_tag;

        iterator() noexcept = default;
        field_ref operator*() const noexcept { return at(p_, names_, i_); }
        iterator& operator++() noexcept
        {
            ++i_;
            return *this;
        }
        iterator operator++(int) noexcept
        {
            iterator old = *this;
            ++i_;
            return old;
        }
        bool operator==(const iterator& o) const noexcept { return i_ == o.i_; }

    private:
        friend class field_refs;
        iterator(const void* p, const std::string* names, std::size_t i) noexcept : p_(p), names_(names), i_(i) {}
        const void* p_ = nullptr;
        const std::string* names_ = nullptr;
        std::size_t i_ = 0;
    };

    field_refs() noexcept = default;
    // Views made already, which must outlive the call.
    field_refs(const field_ref* refs, std::size_t n) noexcept : p_(refs), n_(n) {}
    template <class R>
        requires std::ranges::contiguous_range<const R> && std::ranges::sized_range<const R> &&
                 std::same_as<std::ranges::range_value_t<const R>, field_ref>
    field_refs(const R& refs) noexcept  // NOLINT: implicit, as std::span's
        : p_(std::ranges::data(refs)), n_(std::ranges::size(refs))
    {
    }
    // A plugin's checked values; `names` are its call site's field names, by
    // tt_field_value::field.
    static field_refs from_abi(const tt_field_value* values, std::size_t n, const std::string* names) noexcept
    {
        field_refs r;
        r.p_ = values;
        r.names_ = names;
        r.n_ = n;
        return r;
    }

    std::size_t size() const noexcept { return n_; }
    bool empty() const noexcept { return n_ == 0; }
    field_ref operator[](std::size_t i) const noexcept { return at(p_, names_, i); }
    field_ref front() const noexcept { return at(p_, names_, 0); }
    iterator begin() const noexcept { return iterator(p_, names_, 0); }
    iterator end() const noexcept { return iterator(p_, names_, n_); }

private:
    static field_ref at(const void* p, const std::string* names, std::size_t i) noexcept
    {
        if (names == nullptr)
            return static_cast<const field_ref*>(p)[i];
        const tt_field_value& v = static_cast<const tt_field_value*>(p)[i];
        return field_ref{names[v.field], value_ref::from_checked_abi(v)};
    }

    const void* p_ = nullptr;
    const std::string* names_ = nullptr;  // null: p_ is field_ref[n_]
    std::size_t n_ = 0;
};

// A new span. `parent` is already resolved by the receiver: the explicit
// parent's handle, the current span on this thread for a contextual parent,
// or 0 for a root.
struct span_attrs {
    const model::callsite* site = nullptr;  // valid for the call only
    std::string_view plugin;                // plugin lineage name
    span_handle parent = 0;
    field_refs values;
    clock::time_point time;  // start; for a restored span the persisted start time
    std::thread::id thread;
    std::uint64_t plugin_span_id = 0;  // the receiver's id for the span (diagnostics)
    // A persisted span that an earlier process (or pipeline) began, continued
    // here: layers say "resume", not "new", and an exporter keeps its identity.
    bool resumed = false;
    // As event_record::plugin_key: a number standing for `plugin`'s text, 0
    // to compare the text.
    std::uint64_t plugin_key = 0;
};

// One event. `parent` is the span the event is attributed to (resolved like a
// span's parent), 0 for none.
struct event_record {
    const model::callsite* site = nullptr;
    std::string_view plugin;
    // Non-zero: a number that stands for `plugin`'s text, so that a
    // subscriber may compare it instead of the text. Whoever sets it sends
    // that same text with it every time and never hands it to another text
    // (a receiver takes a fresh one from new_plugin_key()). 0: compare the text.
    std::uint64_t plugin_key = 0;
    span_handle parent = 0;
    // Instead of `parent`: "the calling thread's current span", left for the
    // subscriber to resolve. Only set for a subscriber whose
    // resolves_current_span() is true; it saves a second look-up of what the
    // subscriber itself keeps.
    bool contextual = false;
    field_refs values;
    // When it happened: read on first use (see event_time). A subscriber
    // that passes the record on hands on this same object, or a copy taken
    // after reading it, so that all its readers see one instant.
    event_time time;
    std::thread::id thread;
    // Non-null: a word the sender keeps for this call site on behalf of its
    // one subscriber, zero at first, which the subscriber may use to
    // remember what it decided about the site (the dispatcher keeps its
    // filter's interest there, so an event needs no look-up of its own). A
    // sender sets it only if every record it sends with this word carries
    // the same call site and plugin (a receiver: one word per call site it
    // registered). Null: the subscriber finds its own way.
    //
    //   std::atomic<std::uint64_t> word{0};  // one per call site, as long-lived as it
    //   rec.site = &site;  rec.plugin = name_;  rec.site_word = &word;
    std::atomic<std::uint64_t>* site_word = nullptr;
};

// A fresh event_record::plugin_key, never handed out before in this process.
//
//   rec.plugin = name_;  rec.plugin_key = key_;  // key_ = new_plugin_key(), once
std::uint64_t new_plugin_key() noexcept;

// The subscriber interface. Every method is noexcept: a layer reports its own
// failures to its own error handler, never into a plugin's emit.
//
// Threads: any method may be called from any plugin thread at once. enter and
// exit are called on the thread that enters/exits, except the force-exit of a
// rollback (see force_exit). The receiver holds no lock while calling here, so
// a subscriber may call back into the receiver (stats, snapshots).
class subscriber {
public:
    subscriber() = default;
    subscriber(const subscriber&) = delete;
    subscriber& operator=(const subscriber&) = delete;
    virtual ~subscriber() = default;

    // Asked when a plugin registers a call site (every time: registration is
    // idempotent and is repeated after filters change).
    virtual interest interest_in(const model::callsite& site) noexcept
    {
        (void)site;
        return interest::always;
    }
    // Asked for each hit of a call site that got interest::sometimes.
    virtual bool enabled(const model::callsite& site) noexcept
    {
        (void)site;
        return true;
    }

    // A new span; returns its handle (non-zero).
    virtual span_handle new_span(const span_attrs& attrs) noexcept = 0;
    // Values recorded on a live span after its creation.
    virtual void record(span_handle span, field_refs values) noexcept = 0;
    // `span` follows from `cause`. The cause may already be closed.
    virtual void follows_from(span_handle span, span_handle cause) noexcept = 0;
    virtual void enter(span_handle span) noexcept = 0;
    virtual void exit(span_handle span) noexcept = 0;
    // A rollback exits a span on behalf of `thread` (which entered it), from
    // whatever thread destroys the receiver. Default: exit(span).
    virtual void force_exit(span_handle span, std::thread::id thread) noexcept
    {
        (void)thread;
        exit(span);
    }
    // The last reference is gone: called exactly once per span handle.
    virtual void close(span_handle span) noexcept = 0;
    // The span lives on in persisted state, but this pipeline lets go of its
    // handle (host shutdown, plugin unload): it is not closed, and a later
    // process may continue it. Exactly once per handle, instead of close.
    virtual void suspend(span_handle span) noexcept { close(span); }
    virtual void event(const event_record& ev) noexcept = 0;

    // The span entered last on the calling thread (0 = none): what a
    // contextual parent resolves to.
    virtual span_handle current_span() const noexcept = 0;
    // The span_attrs::plugin_span_id that `span` was opened with; 0 for a
    // handle this subscriber does not know. The receiver asks it for a
    // contextual parent's id (it keeps no index by handle of its own), and
    // checks the answer against its own spans, so a closed or another
    // plugin's span may be answered too.
    //
    //   std::uint64_t plugin_span_id(span_handle h) const noexcept override
    //   {
    //       auto it = ids_.find(h);  // an unknown handle answers 0, never throws
    //       return it == ids_.end() ? 0 : it->second;
    //   }
    virtual std::uint64_t plugin_span_id(span_handle span) const noexcept = 0;
    // True when event() resolves event_record::contextual itself. A
    // receiver asks once, when it is made: the answer must not change.
    virtual bool resolves_current_span() const noexcept { return false; }
};

// A thread-local current-span stack, for subscribers to use: each thread has
// its own stack per thread_span_stack object. push on enter, pop on exit.
//
//   tt::host::thread_span_stack stack_;
//   void enter(span_handle h) noexcept override { stack_.push(h); }
//   void exit(span_handle h) noexcept override { stack_.pop(h); }
//   span_handle current_span() const noexcept override { return stack_.current(); }
class thread_span_stack {
public:
    thread_span_stack() noexcept;
    thread_span_stack(const thread_span_stack&) = delete;
    thread_span_stack& operator=(const thread_span_stack&) = delete;
    ~thread_span_stack();

    void push(span_handle span) noexcept;
    // Removes the topmost occurrence of `span` on this thread (exits may come
    // out of order, as in tracing's registry); false if it is not there.
    bool pop(span_handle span) noexcept;
    // Top of this thread's stack, 0 when empty.
    span_handle current() const noexcept;
    // The topmost span on this thread for which `keep(span)` is true.
    template <class Pred>
    span_handle current_if(Pred keep) const noexcept
    {
        const auto& fr = frames();
        for (auto it = fr.rbegin(); it != fr.rend(); ++it)
            if (it->owner == owner_ && keep(it->span))
                return it->span;
        return 0;
    }
    // Depth of this thread's stack.
    std::size_t depth() const noexcept;

private:
    struct frame {
        std::uint64_t owner;
        span_handle span;
    };
    static std::vector<frame>& frames() noexcept;
    std::uint64_t owner_;
};

inline value_ref::value_ref(const model::value& v) noexcept : u_(0), meta_(v.index() + 1)
{
    std::visit(
        [this](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                b_ = x ? 1 : 0;
            else if constexpr (std::is_same_v<T, std::int64_t>)
                i_ = x;
            else if constexpr (std::is_same_v<T, std::uint64_t>)
                u_ = x;
            else if constexpr (std::is_same_v<T, model::i128> || std::is_same_v<T, model::u128>)
                w_ = tt_u128{static_cast<std::uint64_t>(x),
                             static_cast<std::uint64_t>(static_cast<model::u128>(x) >> 64)};
            else if constexpr (std::is_same_v<T, double>)
                d_ = x;
            else if constexpr (std::is_same_v<T, std::string>)
                s_ = tt_str{x.data(), x.size()};
            else if constexpr (std::is_same_v<T, model::debug_text>)
                s_ = tt_str{x.text.data(), x.text.size()};
            else
                s_ = tt_str{reinterpret_cast<const char*>(x.chain.data()), x.chain.size()};
        },
        v);
}

inline value_ref value_ref::from_abi(const tt_field_value& v) noexcept
{
    return value_ref(v.kind <= TT_VALUE_ERROR ? static_cast<kind>(v.kind) : kind::none, v);
}

inline std::string_view value_ref::text() const noexcept
{
    switch (type()) {
    case kind::string:
    case kind::debug_text: return s_.len == 0 ? std::string_view() : std::string_view(s_.ptr, s_.len);
    case kind::error: return s_.len == 0 ? std::string_view() : chain().front();
    default: return {};
    }
}

template <class F>
decltype(auto) value_ref::visit(F&& f) const
{
    switch (type()) {
    case kind::boolean: return f(b_ != 0);
    case kind::i64: return f(i_);
    case kind::u64: return f(u_);
    case kind::i128: return f(static_cast<model::i128>(static_cast<model::u128>(w_.hi) << 64 | w_.lo));
    case kind::u128: return f(static_cast<model::u128>(w_.hi) << 64 | w_.lo);
    case kind::f64: return f(d_);
    case kind::debug_text: return f(debug{text()});
    case kind::error: return f(chain());
    case kind::string:
    case kind::none: break;
    }
    return f(text());
}

inline model::value value_ref::to_value() const
{
    return visit([](const auto& x) -> model::value {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string_view>)
            return model::value(std::string(x));
        else if constexpr (std::is_same_v<T, debug>)
            return model::value(model::debug_text{std::string(x.text)});
        else if constexpr (std::is_same_v<T, error_view>) {
            model::error_chain e;
            e.chain.reserve(x.size());
            for (std::size_t i = 0; i < x.size(); ++i)
                e.chain.emplace_back(x[i]);
            return model::value(std::move(e));
        } else
            return model::value(x);
    });
}

}  // namespace tt::host
