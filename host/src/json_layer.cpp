#include <tracetunnel/host/layers.hpp>

#include "text_buffer.hpp"
#include "text_layer_flush.hpp"

#include <fmt/format.h>

#include <cmath>
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
    out.put('"');
    json_chars(out, s);
    out.put('"');
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

void json_value(text_buffer& out, const model::value& v, std::string& scratch)
{
    std::visit(
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
            } else if constexpr (std::is_same_v<T, std::string>) {
                json_string(out, x);
            } else if constexpr (std::is_same_v<T, model::debug_text>) {
                json_string(out, x.text);
            } else {
                out.put('"');
                for (std::size_t i = 0; i < x.chain.size(); ++i) {
                    if (i)
                        out.put(": ");
                    json_chars(out, x.chain[i]);
                }
                out.put('"');
            }
        },
        v);
}

std::string_view upper_level(model::level l) noexcept
{
    switch (l) {
    case model::level::error:
        return "ERROR";
    case model::level::warn:
        return "WARN";
    case model::level::info:
        return "INFO";
    case model::level::debug:
        return "DEBUG";
    case model::level::trace:
        return "TRACE";
    }
    return "INFO";
}

// Fields come either owned (a span's) or borrowed (an event's).
std::string_view name_of(const std::pair<std::string, model::value>& f) noexcept { return f.first; }
const model::value* value_of(const std::pair<std::string, model::value>& f) noexcept { return &f.second; }
std::string_view name_of(const field_ref& f) noexcept { return f.name; }
const model::value* value_of(const field_ref& f) noexcept { return f.value; }

// Field names are short and mostly of one length ("a", "b"): the first byte
// settles most comparisons without a call to memcmp.
bool same_name(std::string_view x, std::string_view y) noexcept
{
    return x.size() == y.size() && (x.empty() || (x[0] == y[0] && std::memcmp(x.data(), y.data(), x.size()) == 0));
}

// The value a key ends up with: the last present one of that name after
// `from`, else `v`.
template <class Fields>
const model::value* last_value(const Fields& fields, std::size_t from, std::string_view name,
                               const model::value* v = nullptr) noexcept
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
        if (!first)
            out.put(',');
        first = false;
        json_string(out, name);
        out.put(':');
        json_value(out, *last_value(fields, i + 1, name, value_of(fields[i])), scratch);
    }
}

void span_object(text_buffer& out, const span_ref& s, std::string& scratch)
{
    out.put("{\"name\":");
    const model::value* renamed = s.fields ? last_value(*s.fields, 0, "name") : nullptr;
    if (renamed)
        json_value(out, *renamed, scratch);
    else
        json_string(out, s.name());
    static constexpr std::string_view name_key = "name";
    if (s.fields)
        members(out, *s.fields, false, &name_key, scratch);
    out.put('}');
}

}  // namespace

struct json_layer::impl {
    text_buffer line;     // reused output buffer
    std::string scratch;  // 128-bit decimals
};

json_layer::json_layer(line_writer out, json_options opts)
    : out_(out), opts_(std::move(opts)), impl_(std::make_unique<impl>())
{
    flush_ticket_ = detail::start_flushing(out_, mutex_, errors_);
}

json_layer::~json_layer()
{
    detail::stop_flushing(flush_ticket_, out_, errors_);
}

std::string json_layer::format_event(const event_view& ev)
{
    std::lock_guard lock(mutex_);
    return std::string(build_locked(ev));
}

std::string_view json_layer::build_locked(const event_view& ev)
{
    text_buffer& out = impl_->line;
    std::string& scratch = impl_->scratch;
    out.clear();
    out.put("{\"timestamp\":");
    if (opts_.fixed_time) {
        json_string(out, *opts_.fixed_time);
    } else {
        out.put('"');
        detail::append_time(out, ev.time);
        out.put('"');
    }
    out.put(",\"level\":\"");
    out.put(upper_level(ev.site ? ev.site->level : model::level::info));
    out.put("\",\"fields\":{");
    members(out, ev.values, true, nullptr, scratch);
    out.put("},\"target\":");
    json_string(out, ev.site ? std::string_view(ev.site->target) : std::string_view());
    if (!ev.plugin.empty()) {
        out.put(",\"plugin\":");
        json_string(out, ev.plugin);
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
        span_object(out, ev.spans.back(), scratch);
        const std::size_t leaf_size = out.size() - leaf_at;
        out.put(",\"spans\":[");
        for (std::size_t i = 0; i + 1 < ev.spans.size(); ++i) {
            span_object(out, ev.spans[i], scratch);
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
        if (!out_.write(build_locked(ev)))
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
    ev.time = clock::now();
    ev.thread = std::this_thread::get_id();
    ev.spans = scope;
    return ev;
}

}  // namespace

void json_layer::on_new_span(span_context scope) noexcept
{
    write_span_event(scope, scope.empty() || !scope.back().resumed ? "new" : "resume");
}

void json_layer::on_suspend(span_context scope) noexcept
{
    write_span_event(scope, "suspend");
}

void json_layer::on_close(span_context scope) noexcept
{
    write_span_event(scope, "close");
}

void json_layer::write_span_event(span_context scope, const char* what) noexcept
{
    if (!opts_.span_events || scope.empty() || !scope.back().site)
        return;
    try {
        const model::value msg{std::string(what)};
        const field_ref ref{"message", &msg};
        write_line(span_event_view(scope, ref));
    } catch (...) {
        errors_.fetch_add(1, std::memory_order_relaxed);
    }
}

}  // namespace tt::host
