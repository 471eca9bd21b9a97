#include <tracetunnel/host/layers.hpp>

#include "text_buffer.hpp"
#include "text_layer_flush.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <stdio_ext.h>
#include <ostream>
#include <unistd.h>
#include <unordered_map>

namespace tt::host {

// --- shared helpers ---

std::uint64_t thread_number(std::thread::id id) noexcept
{
    // Nearly always asked about the calling thread: its number is cached here
    // rather than looked up under the process-wide lock per line.
    thread_local std::uint64_t mine = 0;
    const bool self = id == std::this_thread::get_id();
    if (self && mine != 0)
        return mine;
    static std::mutex mutex;
    static std::unordered_map<std::thread::id, std::uint64_t> numbers;
    try {
        std::lock_guard lock(mutex);
        auto [it, inserted] = numbers.try_emplace(id, numbers.size() + 1);
        (void)inserted;
        if (self)
            mine = it->second;
        return it->second;
    } catch (...) {
        return 0;
    }
}

namespace detail {

// "2026-11-23T12:00:00" of the second last formatted on this thread: lines
// come many per second, and gmtime_r plus six fields is most of the cost.
void append_time(text_buffer& out, clock::time_point t)
{
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
    std::int64_t secs = us / 1000000;
    std::int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        --secs;
    }
    thread_local std::int64_t cached_secs = -1;
    thread_local char prefix[32];
    thread_local std::size_t prefix_len = 0;
    if (secs != cached_secs || prefix_len == 0) {
        const std::time_t tt = static_cast<std::time_t>(secs);
        std::tm tm{};
        gmtime_r(&tt, &tm);
        const auto r = fmt::format_to_n(prefix, sizeof prefix, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900,
                                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        prefix_len = std::min(r.size, sizeof prefix);
        cached_secs = secs;
    }
    // The whole prefix array, a fixed-size copy; the fraction goes over what
    // follows the prefix's length.
    char* p = out.reserve(sizeof prefix + 8);
    std::memcpy(p, prefix, sizeof prefix);
    p += prefix_len;
    // Six digits as three pairs: two divisions by constants instead of six.
    static constexpr char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                    "8081828384858687888990919293949596979899";
    const auto f = static_cast<std::uint32_t>(frac);
    const std::uint32_t hi = f / 10000, mid = f / 100 % 100, lo = f % 100;
    p[0] = '.';
    std::memcpy(p + 1, pairs + 2 * hi, 2);
    std::memcpy(p + 3, pairs + 2 * mid, 2);
    std::memcpy(p + 5, pairs + 2 * lo, 2);
    p[7] = 'Z';
    out.commit(prefix_len + 8);
}

}  // namespace detail

std::string format_time(clock::time_point t)
{
    detail::text_buffer out;
    detail::append_time(out, t);
    return std::string(out.view());
}

namespace {

// --- value text, as tracing's visitors print values ---

using detail::text_buffer;

// Rust's f64 Debug, as fmt's "{}" lays out the shortest digits plus ".0"
// when that has neither point nor exponent: 1.0, 0.001, 1e+16, 5e-324, NaN, inf.
void float_into(text_buffer& out, double d)
{
    if (std::isnan(d)) {
        out.put("NaN");
        return;
    }
    if (std::isinf(d)) {
        out.put(d < 0 ? std::string_view("-inf") : std::string_view("inf"));
        return;
    }
    const detail::shortest_decimal s = detail::shortest(d);
    const int n = s.count;
    const int e = s.exp10;  // of the first digit
    // fmt's shortest form switches to an exponent below 1e-4 and from 1e16;
    // in between at most 16 integer digits or 4 zeros lead, so 48 is room.
    char* p = out.reserve(48);
    char* at = p;
    if (s.negative)
        *at++ = '-';
    auto digits = [&](int from, int to) {
        std::memcpy(at, s.digits + from, static_cast<std::size_t>(to - from));
        at += to - from;
    };
    if (e < -4 || e >= 16) {
        digits(0, 1);
        if (n > 1) {
            *at++ = '.';
            digits(1, n);
        }
        *at++ = 'e';
        *at++ = e < 0 ? '-' : '+';
        const int a = e < 0 ? -e : e;
        if (a >= 100)
            *at++ = static_cast<char>('0' + a / 100);
        *at++ = static_cast<char>('0' + a / 10 % 10);
        *at++ = static_cast<char>('0' + a % 10);
    } else if (e >= n - 1) {
        digits(0, n);
        for (int i = n - 1; i < e; ++i)
            *at++ = '0';
        *at++ = '.';
        *at++ = '0';
    } else if (e >= 0) {
        digits(0, e + 1);
        *at++ = '.';
        digits(e + 1, n);
    } else {
        *at++ = '0';
        *at++ = '.';
        for (int i = -1; i > e; --i)
            *at++ = '0';
        digits(0, n);
    }
    out.commit(static_cast<std::size_t>(at - p));
}

// Rust's str Debug: quoted, with \" \\ \n \r \t \0 and \u{..} for controls.
void quote_into(text_buffer& out, std::string_view s)
{
    static constexpr char hex[] = "0123456789abcdef";
    out.put('"');
    if (!detail::has_special(s, '"', '\\', 0x7f)) {
        out.put(s);
        out.put('"');
        return;
    }
    std::size_t plain = 0;  // start of the current run of characters needing no escape
    for (std::size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        out.put(s.substr(plain, i - plain));
        plain = i + 1;
        switch (c) {
        case '"':
            out.put("\\\"");
            break;
        case '\\':
            out.put("\\\\");
            break;
        case '\n':
            out.put("\\n");
            break;
        case '\r':
            out.put("\\r");
            break;
        case '\t':
            out.put("\\t");
            break;
        case '\0':
            out.put("\\0");
            break;
        default:
            out.put("\\u{");
            if (c >= 0x10)
                out.put(hex[c >> 4]);
            out.put(hex[c & 0xf]);
            out.put('}');
        }
    }
    out.put(s.substr(plain));
    out.put('"');
}

// A value as `key=value` shows it (an error's sources are handled by the caller).
void value_into(text_buffer& out, const value_ref& v)
{
    v.visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                out.put(x ? std::string_view("true") : std::string_view("false"));
            } else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint64_t>) {
                out.put_int(x);
            } else if constexpr (std::is_same_v<T, model::i128> || std::is_same_v<T, model::u128>) {
                thread_local std::string digits;
                digits.clear();
                model::append_decimal(digits, x);
                out.put(digits);
            } else if constexpr (std::is_same_v<T, double>) {
                float_into(out, x);
            } else if constexpr (std::is_same_v<T, std::string_view>) {
                quote_into(out, x);
            } else if constexpr (std::is_same_v<T, value_ref::debug>) {
                out.put(x.text);
            } else {
                if (!x.empty())
                    out.put(x.front());
            }
        });
}

// The message as tracing prints it: displayed, not quoted.
void message_into(text_buffer& out, const value_ref& v)
{
    if (v.type() == value_ref::kind::string)
        out.put(v.text());
    else
        value_into(out, v);
}

void sources_into(text_buffer& out, const value_ref& v)
{
    const value_ref::error_view e = v.chain();
    out.put('[');
    for (std::size_t i = 1; i < e.size(); ++i) {
        if (i > 1)
            out.put(", ");
        out.put(e[i]);
    }
    out.put(']');
}

constexpr std::string_view reset = "\x1b[0m";
constexpr std::string_view bold = "\x1b[1m";
constexpr std::string_view dim = "\x1b[2m";
constexpr std::string_view italic = "\x1b[3m";

std::string_view level_color(model::level l) noexcept
{
    switch (l) {
    case model::level::trace:
        return "\x1b[35m";
    case model::level::debug:
        return "\x1b[34m";
    case model::level::info:
        return "\x1b[32m";
    case model::level::warn:
        return "\x1b[33m";
    case model::level::error:
        return "\x1b[31m";
    }
    return "";
}

std::string_view level_text(model::level l) noexcept
{
    switch (l) {
    case model::level::trace:
        return "TRACE";
    case model::level::debug:
        return "DEBUG";
    case model::level::info:
        return " INFO";
    case model::level::warn:
        return " WARN";
    case model::level::error:
        return "ERROR";
    }
    return "?????";
}

// Appends styled text; plain when colour is off.
struct painter {
    text_buffer& out;
    bool on;
    [[gnu::always_inline]] void put(std::string_view style, std::string_view text)
    {
        if (on && !style.empty()) {
            out.put(style);
            out.put(text);
            out.put(reset);
        } else {
            out.put(text);
        }
    }
    [[gnu::always_inline]] void put2(std::string_view s1, std::string_view s2, std::string_view text)
    {
        if (on) {
            out.put(s1);
            out.put(s2);
            out.put(text);
            out.put(reset);
        } else {
            out.put(text);
        }
    }
    // `name.sources` in the key style (s1 then s2).
    void put_sources_key(std::string_view s1, std::string_view s2, std::string_view name)
    {
        if (on) {
            out.put(s1);
            out.put(s2);
        }
        out.put(name);
        out.put(".sources");
        if (on)
            out.put(reset);
    }
};

// Fields come either owned (a span's) or borrowed (an event's).
std::string_view name_of(const std::pair<std::string, model::value>& f) noexcept { return f.first; }
value_ref value_of(const std::pair<std::string, model::value>& f) noexcept { return f.second; }
std::string_view name_of(const field_ref& f) noexcept { return f.name; }
value_ref value_of(const field_ref& f) noexcept { return f.value; }

// Some of an event's fields, by their positions in its values: each is
// viewed where it is read, not copied into a list (a plugin's values are
// viewed as they are read, and a field_ref copied just after it is made
// waits for its stores to reach the cache).
struct picked_fields {
    class iterator {
    public:
        iterator(const picked_fields& p, std::size_t i) noexcept : p_(&p), i_(i) {}
        field_ref operator*() const noexcept { return p_->all[(*p_->at)[i_]]; }
        iterator& operator++() noexcept
        {
            ++i_;
            return *this;
        }
        bool operator!=(const iterator& o) const noexcept { return i_ != o.i_; }

    private:
        const picked_fields* p_;
        std::size_t i_;
    };
    field_refs all;
    const std::vector<std::uint32_t>* at;
    bool empty() const noexcept { return at->empty(); }
    iterator begin() const noexcept { return iterator(*this, 0); }
    iterator end() const noexcept { return iterator(*this, at->size()); }
};

// Span fields as compact shows them inside braces: k=v k2=v2
template <class Fields>
void span_fields_compact(painter& p, const Fields& fields)
{
    bool first = true;
    for (const auto& f : fields) {
        const std::string_view name = name_of(f);
        const value_ref v = value_of(f);
        if (!first)
            p.out.put(' ');
        first = false;
        p.put(italic, name);
        p.put(dim, "=");
        value_into(p.out, v);
        if (v.chain().size() > 1) {
            p.out.put(' ');
            p.put_sources_key(italic, {}, name);
            p.put(dim, "=");
            sources_into(p.out, v);
        }
    }
}

// Fields as pretty shows them: k: v, k2: v2 (keys styled in s1 then s2).
template <class Fields>
void fields_pretty(painter& p, std::string_view s1, std::string_view s2, const Fields& fields, bool& first)
{
    for (const auto& f : fields) {
        const std::string_view name = name_of(f);
        const value_ref v = value_of(f);
        if (!first)
            p.out.put(", ");
        first = false;
        p.put2(s1, s2, name);
        p.out.put(": ");
        value_into(p.out, v);
        if (v.chain().size() > 1) {
            p.out.put(", ");
            p.put_sources_key(s1, s2, name);
            p.out.put(": ");
            sources_into(p.out, v);
        }
    }
}

// ThreadId(07), as Rust prints a thread id.
void append_thread(text_buffer& out, std::uint64_t n)
{
    out.put("ThreadId(");
    if (n < 10)
        out.put('0');
    out.put_int(n);
    out.put(')');
}

void format_into(text_buffer& out, const event_view& ev, const console_options& opts, bool color);

}  // namespace

console_layer::console_layer(line_writer out, console_options opts) : out_(std::move(out)), opts_(std::move(opts))
{
    switch (opts_.color) {
    case color_mode::always:
        color_ = true;
        break;
    case color_mode::never:
        color_ = false;
        break;
    case color_mode::automatic: {
        const char* no_color = std::getenv("NO_COLOR");
        color_ = out_.is_terminal() && !(no_color && *no_color);
        break;
    }
    }
    flush_ticket_ = detail::start_flushing(out_, mutex_, errors_);
}

console_layer::~console_layer()
{
    detail::stop_flushing(flush_ticket_, out_, errors_);
}

void console_layer::flush() noexcept
{
    detail::flush_now(out_, mutex_, errors_);
}

std::string console_layer::format_event(const event_view& ev) const
{
    text_buffer out;
    format_into(out, ev, opts_, color_);
    return std::string(out.view());
}

namespace {

void format_into(text_buffer& out, const event_view& ev, const console_options& opts_, bool color_)
{
    painter p{out, color_};
    const model::level lvl = ev.site ? ev.site->level : model::level::info;
    const std::string_view target = ev.site ? std::string_view(ev.site->target) : std::string_view();

    value_ref message;
    // The other fields' positions, in a per-thread list that keeps its
    // capacity between lines.
    thread_local std::vector<std::uint32_t> others;
    others.clear();
    for (std::size_t i = 0; i < ev.values.size(); ++i) {
        const field_ref f = ev.values[i];
        if (!f.value)
            continue;
        if (f.name == "message" && !message)
            message = f.value;
        else
            others.push_back(static_cast<std::uint32_t>(i));
    }
    const picked_fields fields{ev.values, &others};

    auto put_time = [&] {
        if (color_)
            out.put(dim);
        if (opts_.fixed_time)
            out.put(*opts_.fixed_time);
        else
            detail::append_time(out, ev.time.get());
        if (color_)
            out.put(reset);
    };
    auto thread_text = [&](text_buffer& into) {
        if (opts_.fixed_thread)
            into.put(*opts_.fixed_thread);
        else
            append_thread(into, thread_number(ev.thread));
    };

    if (opts_.format == console_options::format_kind::compact) {
        if (opts_.show_time) {
            put_time();
            out.put(' ');
        }
        p.put(level_color(lvl), level_text(lvl));
        out.put(' ');
        if (opts_.show_thread_ids) {
            if (color_)
                out.put(dim);
            thread_text(out);
            if (color_)
                out.put(reset);
            out.put(' ');
        }
        if (opts_.show_plugin && !ev.plugin.empty()) {
            p.put(dim, "[");
            out.put(ev.plugin);
            p.put(dim, "]");
            out.put(' ');
        }
        if (!ev.spans.empty()) {
            for (const auto& s : ev.spans) {
                p.put(bold, s.name());
                if (s.fields && !s.fields->empty()) {
                    p.put(bold, "{");
                    span_fields_compact(p, *s.fields);
                    p.put(bold, "}");
                }
                p.put(dim, ":");
            }
            out.put(' ');
        }
        if (opts_.show_target && !target.empty()) {
            p.put(dim, target);
            p.put(dim, ":");
            out.put(' ');
        }
        bool first = true;
        if (message) {
            message_into(out, message);
            first = false;
        }
        if (!fields.empty()) {
            if (!first)
                out.put(' ');
            span_fields_compact(p, fields);
        }
        // Nothing but separators at the end: drop the trailing space.
        if (!out.empty() && out.back() == ' ')
            out.pop_back();
        out.put('\n');
        return;
    }

    // pretty
    const std::string_view lc = level_color(lvl);
    out.put("  ");
    if (opts_.show_time) {
        put_time();
        out.put(' ');
    }
    p.put(lc, level_text(lvl));
    out.put(' ');
    if (opts_.show_plugin && !ev.plugin.empty()) {
        out.put('[');
        out.put(ev.plugin);
        out.put("] ");
    }
    if (opts_.show_target && !target.empty()) {
        p.put2(bold, lc, target);
        p.put(lc, ":");
        out.put(' ');
    }
    bool first = true;
    if (message) {
        const bool styled = color_ && !lc.empty();
        if (styled)
            out.put(lc);
        message_into(out, message);
        if (styled)
            out.put(reset);
        first = false;
    }
    // Field names bold in the level's colour, as tracing's Pretty does.
    fields_pretty(p, bold, lc, fields, first);
    if (!out.empty() && out.back() == ' ')
        out.pop_back();
    out.put('\n');
    const bool loc = opts_.show_location && ev.site && !ev.site->file.empty();
    if (loc || opts_.show_thread_ids) {
        out.put("    ");
        if (loc) {
            p.put2(dim, italic, "at");
            out.put(' ');
            out.put(ev.site->file);
            out.put(':');
            out.put_int(ev.site->line);
        }
        if (opts_.show_thread_ids) {
            if (loc)
                out.put(' ');
            p.put2(dim, italic, "on");
            out.put(' ');
            thread_text(out);
        }
        out.put('\n');
    }
    for (auto it = ev.spans.rbegin(); it != ev.spans.rend(); ++it) {
        out.put("    ");
        p.put2(dim, italic, "in");
        out.put(' ');
        if (color_)
            out.put(bold);
        if (it->site && !it->site->target.empty()) {
            out.put(it->site->target);
            out.put("::");
        }
        out.put(it->name());
        if (color_)
            out.put(reset);
        if (it->fields && !it->fields->empty()) {
            out.put(' ');
            p.put2(dim, italic, "with");
            out.put(' ');
            bool f1 = true;
            fields_pretty(p, bold, {}, *it->fields, f1);
        }
        out.put('\n');
    }
    out.put('\n');
}

}  // namespace

void console_layer::emit(std::string_view text) noexcept
{
    if (!out_.write(text))
        errors_.fetch_add(1, std::memory_order_relaxed);
}

void console_layer::on_event(const event_view& ev) noexcept
{
    try {
        // Formatted outside the lock into a per-thread buffer that keeps its
        // capacity: a line costs no allocation once warm.
        thread_local text_buffer text;
        text.clear();
        format_into(text, ev, opts_, color_);
        std::lock_guard lock(mutex_);
        emit(text.view());
    } catch (...) {
        errors_.fetch_add(1, std::memory_order_relaxed);
    }
}

void console_layer::write_span_line(span_context scope, std::string_view what) noexcept
{
    if (scope.empty() || !scope.back().site)
        return;
    try {
        const model::value msg{std::string(what)};
        const field_ref ref{"message", msg};
        event_view ev;
        ev.site = scope.back().site;
        ev.plugin = scope.back().plugin;
        ev.values = field_refs(&ref, 1);
        ev.thread = std::this_thread::get_id();
        ev.spans = scope;
        thread_local text_buffer text;
        text.clear();
        format_into(text, ev, opts_, color_);
        std::lock_guard lock(mutex_);
        emit(text.view());
    } catch (...) {
        errors_.fetch_add(1, std::memory_order_relaxed);
    }
}

void console_layer::on_new_span(span_context scope) noexcept
{
    if (opts_.span_events)
        write_span_line(scope, scope.back().resumed ? "resume" : "new");
}

void console_layer::on_suspend(span_context scope) noexcept
{
    if (opts_.span_events)
        write_span_line(scope, "suspend");
}

void console_layer::on_close(span_context scope) noexcept
{
    if (opts_.span_events)
        write_span_line(scope, "close");
}

std::shared_ptr<layer> make_output_layer(const output_options& o)
{
    const line_writer probe(stdout);
    line_writer out = probe.is_buffered() && o.flush_every.count() > 0 ? line_writer::buffered(stdout, o.flush_every)
                                                                       : line_writer::each_line(stdout);
    if (o.format == "json") {
        json_options jo;
        jo.span_events = o.span_events;
        return std::make_shared<json_layer>(std::move(out), jo);
    }
    console_options co;
    co.format = o.format == "pretty" ? console_options::format_kind::pretty : console_options::format_kind::compact;
    co.color = o.color;
    co.show_plugin = o.show_plugin;
    co.span_events = o.span_events;
    return std::make_shared<console_layer>(std::move(out), co);
}

}  // namespace tt::host
