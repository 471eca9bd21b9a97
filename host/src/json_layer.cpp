#include <tracetunnel/host/layers.hpp>

#include "text_buffer.hpp"
#include "text_layer_flush.hpp"

#include <fmt/format.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

// Each line is written straight into a reused buffer: no Boost.JSON tree (an
// allocation per node and a serializer pass per line). The bytes are those
// Boost.JSON's serializer wrote for the same tree (escapes, number forms, and
// a repeated key keeping its first place with its last value);
// tests/layers/test_json_writer.cpp checks them against it.

namespace tt::host {

namespace {

using detail::text_buffer;

// What needs escaping in a JSON string: controls, '"' and '\\'. Bytes from
// 0x80 up (UTF-8, already validated upstream) and DEL pass through.
constexpr bool plain_char(unsigned char c) noexcept { return c >= 0x20 && c != '"' && c != '\\'; }

void json_chars(text_buffer& out, std::string_view s)
{
    static constexpr char hex[] = "0123456789abcdef";
    if (!detail::has_special(s, '"', '\\', '"')) {
        out.put(s);
        return;
    }
    std::size_t run = 0;  // start of the current run of plain characters
    for (std::size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (plain_char(c))
            continue;
        out.put(s.substr(run, i - run));
        run = i + 1;
        char* p = out.reserve(6);
        p[0] = '\\';
        switch (c) {
        case '"':
        case '\\':
            p[1] = static_cast<char>(c);
            out.commit(2);
            break;
        case '\b':
            p[1] = 'b';
            out.commit(2);
            break;
        case '\f':
            p[1] = 'f';
            out.commit(2);
            break;
        case '\n':
            p[1] = 'n';
            out.commit(2);
            break;
        case '\r':
            p[1] = 'r';
            out.commit(2);
            break;
        case '\t':
            p[1] = 't';
            out.commit(2);
            break;
        default:
            p[1] = 'u';
            p[2] = '0';
            p[3] = '0';
            p[4] = hex[c >> 4];
            p[5] = hex[c & 0xf];
            out.commit(6);
        }
    }
    out.put(s.substr(run));
}

void json_string(text_buffer& out, std::string_view s)
{
    // Most strings (keys, names, short values) need no escape: one reserve
    // for the quotes and the text.
    if (!detail::has_special(s, '"', '\\', '"')) {
        out.put_between('"', s, '"');
        return;
    }
    out.put('"');
    json_chars(out, s);
    out.put('"');
}

// `"name":`, or `,"name":` after a first member.
void json_key(text_buffer& out, std::string_view name, bool comma)
{
    if (!detail::has_special(name, '"', '\\', '"')) {
        char* p = out.reserve(name.size() + 4);
        *p = ',';
        p += comma ? 1 : 0;
        *p = '"';
        text_buffer::copy(p + 1, name.data(), name.size());
        p[name.size() + 1] = '"';
        p[name.size() + 2] = ':';
        out.commit(name.size() + 3 + (comma ? 1 : 0));
        return;
    }
    if (comma)
        out.put(',');
    json_string(out, name);
    out.put(':');
}

// Ryu's d2s form, as Boost.JSON prints a double: 1.25E1, 5E-324, -0E0.
void json_double(text_buffer& out, double d)
{
    const detail::shortest_decimal s = detail::shortest(d);
    char* p = out.reserve(32);
    char* at = p;
    if (s.negative)
        *at++ = '-';
    *at++ = s.digits[0];
    if (s.count > 1) {
        *at++ = '.';
        std::memcpy(at, s.digits + 1, static_cast<std::size_t>(s.count - 1));
        at += s.count - 1;
    }
    *at++ = 'E';
    if (s.exp10 < 0)
        *at++ = '-';
    const fmt::format_int e(s.exp10 < 0 ? -s.exp10 : s.exp10);
    std::memcpy(at, e.data(), e.size());
    at += e.size();
    out.commit(static_cast<std::size_t>(at - p));
}

void json_value(text_buffer& out, const value_ref& v, std::string& scratch)
{
    v.visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                out.put(x ? std::string_view("true") : std::string_view("false"));
            } else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint64_t>) {
                out.put_int(x);
            } else if constexpr (std::is_same_v<T, model::i128> || std::is_same_v<T, model::u128>) {
                // Numbers while they fit in 64 bits, else decimal strings.
                if constexpr (std::is_same_v<T, model::i128>) {
                    if (x >= std::numeric_limits<std::int64_t>::min() && x <= std::numeric_limits<std::int64_t>::max()) {
                        out.put_int(static_cast<std::int64_t>(x));
                        return;
                    }
                }
                if (x > 0 && static_cast<model::u128>(x) <= std::numeric_limits<std::uint64_t>::max()) {
                    out.put_int(static_cast<std::uint64_t>(x));
                    return;
                }
                scratch.clear();
                model::append_decimal(scratch, x);
                json_string(out, scratch);
            } else if constexpr (std::is_same_v<T, double>) {
                if (std::isnan(x))
                    out.put("\"NaN\"");
                else if (std::isinf(x))
                    out.put(x < 0 ? std::string_view("\"-inf\"") : std::string_view("\"inf\""));
                else
                    json_double(out, x);
            } else if constexpr (std::is_same_v<T, std::string_view>) {
                json_string(out, x);
            } else if constexpr (std::is_same_v<T, value_ref::debug>) {
                json_string(out, x.text);
            } else {
                out.put('"');
                for (std::size_t i = 0; i < x.size(); ++i) {
                    if (i)
                        out.put(": ");
                    json_chars(out, x[i]);
                }
                out.put('"');
            }
        });
}

// Fields come either owned (a span's) or borrowed (an event's).
std::string_view name_of(const std::pair<std::string, model::value>& f) noexcept { return f.first; }
value_ref value_of(const std::pair<std::string, model::value>& f) noexcept { return f.second; }
std::string_view name_of(const field_ref& f) noexcept { return f.name; }
value_ref value_of(const field_ref& f) noexcept { return f.value; }

// Field names are short and mostly of one length ("a", "b"): the first byte
// settles most comparisons without a call to memcmp.
bool same_name(std::string_view x, std::string_view y) noexcept
{
    return x.size() == y.size() && (x.empty() || (x[0] == y[0] && std::memcmp(x.data(), y.data(), x.size()) == 0));
}

// The value a key ends up with: the last present one of that name after
// `from`, else `v`.
template <class Fields>
value_ref last_value(const Fields& fields, std::size_t from, std::string_view name, value_ref v = {}) noexcept
{
    for (std::size_t i = from; i < fields.size(); ++i)
        if (value_of(fields[i]) && same_name(name_of(fields[i]), name))
            v = value_of(fields[i]);
    return v;
}

// Members `,"k":v` for each present field, a repeated name written once, at
// its first place, with its last value. Names equal to `taken` (already
// written by the caller) are left out.
template <class Fields>
void members(text_buffer& out, const Fields& fields, bool first, const std::string_view* taken, std::string& scratch)
{
    for (std::size_t i = 0; i < fields.size(); ++i) {
        const std::string_view name = name_of(fields[i]);
        if (!value_of(fields[i]) || (taken && same_name(name, *taken)))
            continue;
        bool seen = false;
        for (std::size_t j = 0; j < i && !seen; ++j)
            seen = value_of(fields[j]) && same_name(name_of(fields[j]), name);
        if (seen)
            continue;
        json_key(out, name, !first);
        first = false;
        json_value(out, last_value(fields, i + 1, name, value_of(fields[i])), scratch);
    }
}

void span_object(text_buffer& out, const span_ref& s, std::string& scratch)
{
    out.put("{\"name\":");
    const value_ref renamed = s.fields ? last_value(*s.fields, 0, "name") : value_ref();
    if (renamed)
        json_value(out, renamed, scratch);
    else
        json_string(out, s.name());
    static constexpr std::string_view name_key = "name";
    if (s.fields)
        members(out, *s.fields, false, &name_key, scratch);
    out.put('}');
}

// A span's object ({"name":"group","g":12}) is the same in every line inside
// the span until a record changes it, and lines come many per span: it is
// kept per span and copied. Fixed slots, one per handle's hash: bounded, no
// allocation, an evicted span is formatted again. A slot is dropped on the
// span's record, close and suspend, and used only while the span's field list
// is the one it was made from.
struct span_texts {
    static constexpr std::size_t slot_bits = 5;
    static constexpr std::size_t room = 224;  // a longer object is not kept
    struct slot {
        span_handle id = 0;  // 0: empty
        const model::callsite* site = nullptr;
        const model::field_values* fields = nullptr;
        std::size_t count = 0;
        std::size_t size = 0;
        char text[room];
    };
    std::array<slot, std::size_t{1} << slot_bits> slots{};

    slot& of(span_handle h) noexcept { return slots[(h * 0x9E3779B97F4A7C15ull) >> (64 - slot_bits)]; }
    void forget(span_handle h) noexcept
    {
        slot& s = of(h);
        if (s.id == h)
            s.id = 0;
    }
};

// The span's object, from `cache` when it holds it (nullptr: no cache).
void span_json(text_buffer& out, const span_ref& s, std::string& scratch, span_texts* cache)
{
    if (cache == nullptr || s.id == 0) {
        span_object(out, s, scratch);
        return;
    }
    span_texts::slot& k = cache->of(s.id);
    const std::size_t count = s.fields ? s.fields->size() : 0;
    if (k.id == s.id && k.fields == s.fields && k.count == count && k.site == s.site) {
        out.put(std::string_view(k.text, k.size));
        return;
    }
    const std::size_t at = out.size();
    span_object(out, s, scratch);
    const std::size_t n = out.size() - at;
    if (n > span_texts::room) {
        k.id = 0;
        return;
    }
    std::memcpy(k.text, out.view().data() + at, n);
    k.size = n;
    k.id = s.id;
    k.site = s.site;
    k.fields = s.fields;
    k.count = count;
}

// `","level":"INFO","fields":{`: what follows the time, by level.
std::string_view level_part(model::level l) noexcept
{
    switch (l) {
    case model::level::error:
        return "\",\"level\":\"ERROR\",\"fields\":{";
    case model::level::warn:
        return "\",\"level\":\"WARN\",\"fields\":{";
    case model::level::info:
        return "\",\"level\":\"INFO\",\"fields\":{";
    case model::level::debug:
        return "\",\"level\":\"DEBUG\",\"fields\":{";
    case model::level::trace:
        return "\",\"level\":\"TRACE\",\"fields\":{";
    }
    return "\",\"level\":\"INFO\",\"fields\":{";
}

// Equal short strings, without a call to memcmp for the usual one-to-eight
// byte field names.
bool same_text(const char* a, const char* b, std::size_t n) noexcept
{
    auto eq = [&]<class W>(W, std::size_t at) {
        W x, y;
        std::memcpy(&x, a + at, sizeof x);
        std::memcpy(&y, b + at, sizeof y);
        return x == y;
    };
    if (n > 16)
        return std::memcmp(a, b, n) == 0;
    if (n >= 8)
        return eq(std::uint64_t{}, 0) && eq(std::uint64_t{}, n - 8);
    if (n >= 4)
        return eq(std::uint32_t{}, 0) && eq(std::uint32_t{}, n - 4);
    for (std::size_t i = 0; i < n; ++i)
        if (a[i] != b[i])
            return false;
    return true;
}

// The parts of a line fixed by its call site: each field's key (`,"a":`,
// escaped once) and `},"target":"..."`. Kept per call site in a few fixed
// slots (by the site's address), and used only when the event's field names
// and the site's target are, byte for byte, those the slot was made from: a
// call site freed and another made at its address is caught here. Sites whose
// field names repeat (a key written once, with its last value) are not kept.
struct site_texts {
    static constexpr std::size_t slot_bits = 4;
    static constexpr std::size_t max_fields = 16;
    struct slot {
        const model::callsite* site = nullptr;  // nullptr: empty
        std::size_t count = 0;
        std::array<std::uint16_t, max_fields + 1> name_at{};  // offsets into names
        std::array<std::uint16_t, max_fields + 1> key_at{};   // offsets into keys
        std::string names;   // the field names, one after another
        std::string keys;    // `,"name":` for each
        std::string target;  // the site's target
        std::string target_text;  // `},"target":"..."`
    };
    std::array<slot, std::size_t{1} << slot_bits> slots{};

    slot& of(const model::callsite* site) noexcept
    {
        const auto h = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(site));
        return slots[(h * 0x9E3779B97F4A7C15ull) >> (64 - slot_bits)];
    }

    // The slot for this event's site and names, made if need be; nullptr when
    // the site is not kept.
    const slot* find(const event_view& ev)
    {
        if (ev.site == nullptr || ev.values.size() > max_fields)
            return nullptr;
        slot& k = of(ev.site);
        if (k.site == ev.site && matches(k, ev))
            return &k;
        k.site = nullptr;
        return fill(k, ev) ? &k : nullptr;
    }

private:
    static bool matches(const slot& k, const event_view& ev) noexcept
    {
        if (k.count != ev.values.size() || k.target.size() != ev.site->target.size() ||
            !same_text(k.target.data(), ev.site->target.data(), k.target.size()))
            return false;
        for (std::size_t i = 0; i < k.count; ++i) {
            const std::string_view n = ev.values[i].name;
            if (n.size() != std::size_t{k.name_at[i + 1]} - k.name_at[i] ||
                !same_text(n.data(), k.names.data() + k.name_at[i], n.size()))
                return false;
        }
        return true;
    }

    static bool fill(slot& k, const event_view& ev)
    {
        const field_refs v = ev.values;
        for (std::size_t i = 0; i < v.size(); ++i)
            for (std::size_t j = 0; j < i; ++j)
                if (same_name(v[i].name, v[j].name))
                    return false;
        text_buffer key;
        k.names.clear();
        k.keys.clear();
        k.name_at[0] = 0;
        k.key_at[0] = 0;
        for (std::size_t i = 0; i < v.size(); ++i) {
            k.names.append(v[i].name);
            key.clear();
            json_key(key, v[i].name, true);
            k.keys.append(key.view());
            if (k.names.size() > 0xffff || k.keys.size() > 0xffff)
                return false;
            k.name_at[i + 1] = static_cast<std::uint16_t>(k.names.size());
            k.key_at[i + 1] = static_cast<std::uint16_t>(k.keys.size());
        }
        k.target.assign(ev.site->target);
        key.clear();
        key.put("},\"target\":");
        json_string(key, k.target);
        k.target_text.assign(key.view());
        k.count = v.size();
        k.site = ev.site;
        return true;
    }
};

// The event's fields from a site slot: its names are distinct, so each
// present field is written where it stands.
void site_members(text_buffer& out, const site_texts::slot& k, field_refs values, std::string& scratch)
{
    bool first = true;
    for (std::size_t i = 0; i < values.size(); ++i) {
        const value_ref v = values[i].value;  // made once: a plugin's values are viewed as they are read
        if (!v)
            continue;
        const std::size_t from = k.key_at[i] + (first ? 1 : 0);  // the first member has no comma
        out.put(std::string_view(k.keys.data() + from, k.key_at[i + 1] - from));
        first = false;
        json_value(out, v, scratch);
    }
}

// `,"plugin":"..."` of the plugin last written.
struct plugin_text {
    std::string name;
    std::string text;
    std::string_view of(std::string_view plugin)
    {
        if (plugin.size() != name.size() || !same_text(plugin.data(), name.data(), name.size()) || text.empty()) {
            name.assign(plugin);
            text_buffer t;
            t.put(",\"plugin\":");
            json_string(t, plugin);
            text.assign(t.view());
        }
        return text;
    }
};

}  // namespace

struct json_layer::impl {
    text_buffer line;     // reused output buffer
    std::string scratch;  // 128-bit decimals
    // Kept parts of lines, for lines the layer writes (not format_event).
    span_texts spans;
    site_texts sites;
    plugin_text plugin;
};

json_layer::json_layer(line_writer out, json_options opts)
    : out_(std::move(out)), opts_(std::move(opts)), impl_(std::make_unique<impl>())
{
    flush_ticket_ = detail::start_flushing(out_, mutex_, errors_);
}

json_layer::~json_layer()
{
    detail::stop_flushing(flush_ticket_, out_, errors_);
}

void json_layer::flush() noexcept
{
    detail::flush_now(out_, mutex_, errors_);
}

std::string json_layer::format_event(const event_view& ev)
{
    // Views made by hand may reuse a handle for another span: no cache here.
    std::lock_guard lock(mutex_);
    return std::string(build_locked(ev, false));
}

std::string_view json_layer::build_locked(const event_view& ev, bool cached)
{
    text_buffer& out = impl_->line;
    std::string& scratch = impl_->scratch;
    span_texts* cache = cached ? &impl_->spans : nullptr;
    out.clear();
    if (opts_.fixed_time) {
        out.put("{\"timestamp\":");
        json_string(out, *opts_.fixed_time);
        out.pop_back();  // the closing quote: level_part has it
    } else {
        out.put("{\"timestamp\":\"");
        detail::append_time(out, ev.time.get());
    }
    out.put(level_part(ev.site ? ev.site->level : model::level::info));
    if (const site_texts::slot* k = cached ? impl_->sites.find(ev) : nullptr) {
        site_members(out, *k, ev.values, scratch);
        out.put(k->target_text);
    } else {
        members(out, ev.values, true, nullptr, scratch);
        out.put("},\"target\":");
        json_string(out, ev.site ? std::string_view(ev.site->target) : std::string_view());
    }
    if (!ev.plugin.empty()) {
        if (cached) {
            out.put(impl_->plugin.of(ev.plugin));
        } else {
            out.put(",\"plugin\":");
            json_string(out, ev.plugin);
        }
    }
    if (opts_.with_location && ev.site) {
        out.put(",\"filename\":");
        json_string(out, ev.site->file);
        out.put(",\"line_number\":");
        out.put_int(ev.site->line);
    }
    if (opts_.with_spans && !ev.spans.empty()) {
        out.put(",\"span\":");
        const std::size_t leaf_at = out.size();
        span_json(out, ev.spans.back(), scratch, cache);
        const std::size_t leaf_size = out.size() - leaf_at;
        out.put(",\"spans\":[");
        for (std::size_t i = 0; i + 1 < ev.spans.size(); ++i) {
            span_json(out, ev.spans[i], scratch, cache);
            out.put(',');
        }
        // The leaf again: the same bytes as "span" (reserve first: growing
        // moves the buffer the bytes are copied from).
        char* to = out.reserve(leaf_size);
        std::memcpy(to, out.view().data() + leaf_at, leaf_size);
        out.commit(leaf_size);
        out.put(']');
    }
    if (opts_.with_thread_ids) {
        out.put(",\"threadId\":\"ThreadId(");
        const std::uint64_t n = thread_number(ev.thread);
        if (n < 10)
            out.put('0');
        out.put_int(n);
        out.put(")\"");
    }
    out.put("}\n");
    return out.view();
}

void json_layer::write_line(const event_view& ev) noexcept
{
    try {
        std::lock_guard lock(mutex_);
        if (!out_.write(build_locked(ev, true)))
            errors_.fetch_add(1, std::memory_order_relaxed);
    } catch (...) {
        errors_.fetch_add(1, std::memory_order_relaxed);
    }
}

void json_layer::on_event(const event_view& ev) noexcept
{
    write_line(ev);
}

namespace {

event_view span_event_view(span_context scope, const field_ref& msg)
{
    event_view ev;
    ev.site = scope.back().site;
    ev.plugin = scope.back().plugin;
    ev.values = field_refs(&msg, 1);
    ev.thread = std::this_thread::get_id();
    ev.spans = scope;
    return ev;
}

}  // namespace

void json_layer::on_new_span(span_context scope) noexcept
{
    write_span_event(scope, scope.empty() || !scope.back().resumed ? "new" : "resume");
}

void json_layer::on_record(span_context scope, field_refs values) noexcept
{
    (void)values;
    forget_span(scope);
}

void json_layer::on_suspend(span_context scope) noexcept
{
    write_span_event(scope, "suspend");
    forget_span(scope);
}

void json_layer::on_close(span_context scope) noexcept
{
    write_span_event(scope, "close");
    forget_span(scope);
}

void json_layer::forget_span(span_context scope) noexcept
{
    if (scope.empty() || !opts_.with_spans)
        return;
    std::lock_guard lock(mutex_);
    impl_->spans.forget(scope.back().id);
}

void json_layer::write_span_event(span_context scope, const char* what) noexcept
{
    if (!opts_.span_events || scope.empty() || !scope.back().site)
        return;
    try {
        const model::value msg{std::string(what)};
        const field_ref ref{"message", msg};
        write_line(span_event_view(scope, ref));
    } catch (...) {
        errors_.fetch_add(1, std::memory_order_relaxed);
    }
}

}  // namespace tt::host
