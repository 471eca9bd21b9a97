#include <tracetunnel/host/layers.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <ostream>
#include <unistd.h>
#include <unordered_map>

namespace tt::host {

// --- shared helpers ---

std::uint64_t thread_number(std::thread::id id) noexcept
{
    static std::mutex mutex;
    static std::unordered_map<std::thread::id, std::uint64_t> numbers;
    try {
        std::lock_guard lock(mutex);
        auto [it, inserted] = numbers.try_emplace(id, numbers.size() + 1);
        (void)inserted;
        return it->second;
    } catch (...) {
        return 0;
    }
}

std::string format_time(clock::time_point t)
{
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
    std::int64_t secs = us / 1000000;
    std::int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        --secs;
    }
    const std::time_t tt = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

bool line_writer::write(std::string_view text) noexcept
{
    try {
        if (os_) {
            os_->write(text.data(), static_cast<std::streamsize>(text.size()));
            os_->flush();
            if (!*os_) {
                os_->clear();
                return false;
            }
            return true;
        }
        if (!file_)
            return false;
        const std::size_t n = std::fwrite(text.data(), 1, text.size(), file_);
        const bool flushed = std::fflush(file_) == 0;
        return n == text.size() && flushed;
    } catch (...) {
        return false;
    }
}

bool line_writer::is_terminal() const noexcept
{
    if (os_ || !file_)
        return false;
    const int fd = fileno(file_);
    return fd >= 0 && isatty(fd) == 1;
}

namespace {

// --- value text, as tracing's visitors print values ---

// Rust's f64 Debug: always a fractional part or exponent; NaN, inf, -inf.
std::string float_text(double d)
{
    if (std::isnan(d))
        return "NaN";
    if (std::isinf(d))
        return d < 0 ? "-inf" : "inf";
    std::string s = fmt::format("{}", d);
    if (s.find_first_of(".e") == std::string::npos)
        s += ".0";
    return s;
}

// Rust's str Debug: quoted, with \" \\ \n \r \t \0 and \u{..} for controls.
void quote_into(std::string& out, std::string_view s)
{
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\r':
            out += "\\r";
            break;
        case '\t':
            out += "\\t";
            break;
        case '\0':
            out += "\\0";
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                fmt::format_to(std::back_inserter(out), "\\u{{{:x}}}", static_cast<unsigned>(c));
            else
                out += static_cast<char>(c);
        }
    }
    out += '"';
}

// A value as `key=value` shows it (an error's sources are handled by the caller).
void value_into(std::string& out, const model::value& v)
{
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                out += x ? "true" : "false";
            else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint64_t>)
                out += fmt::format("{}", x);
            else if constexpr (std::is_same_v<T, model::i128>)
                model::append_decimal(out, x);
            else if constexpr (std::is_same_v<T, model::u128>)
                model::append_decimal(out, x);
            else if constexpr (std::is_same_v<T, double>)
                out += float_text(x);
            else if constexpr (std::is_same_v<T, std::string>)
                quote_into(out, x);
            else if constexpr (std::is_same_v<T, model::debug_text>)
                out += x.text;
            else
                out += x.chain.empty() ? std::string() : x.chain.front();
        },
        v);
}

// The message as tracing prints it: displayed, not quoted.
void message_into(std::string& out, const model::value& v)
{
    if (const auto* s = std::get_if<std::string>(&v))
        out += *s;
    else
        value_into(out, v);
}

std::string sources_text(const model::error_chain& e)
{
    std::string s = "[";
    for (std::size_t i = 1; i < e.chain.size(); ++i) {
        if (i > 1)
            s += ", ";
        s += e.chain[i];
    }
    s += ']';
    return s;
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
    std::string& out;
    bool on;
    void put(std::string_view style, std::string_view text)
    {
        if (on && !style.empty()) {
            out += style;
            out += text;
            out += reset;
        } else {
            out += text;
        }
    }
    void put2(std::string_view s1, std::string_view s2, std::string_view text)
    {
        if (on) {
            out += s1;
            out += s2;
            out += text;
            out += reset;
        } else {
            out += text;
        }
    }
};

// Span fields as compact shows them inside braces: k=v k2=v2
void span_fields_compact(painter& p, const model::field_values& fields)
{
    bool first = true;
    for (const auto& [name, v] : fields) {
        if (!first)
            p.out += ' ';
        first = false;
        p.put(italic, name);
        p.put(dim, "=");
        value_into(p.out, v);
        if (const auto* e = std::get_if<model::error_chain>(&v); e && e->chain.size() > 1) {
            p.out += ' ';
            p.put(italic, name + ".sources");
            p.put(dim, "=");
            p.out += sources_text(*e);
        }
    }
}

// Fields as pretty shows them: k: v, k2: v2 (styled in `key_style`).
void fields_pretty(painter& p, std::string_view key_style, const model::field_values& fields, bool& first)
{
    for (const auto& [name, v] : fields) {
        if (!first)
            p.out += ", ";
        first = false;
        p.put(key_style, name);
        p.out += ": ";
        value_into(p.out, v);
        if (const auto* e = std::get_if<model::error_chain>(&v); e && e->chain.size() > 1) {
            p.out += ", ";
            p.put(key_style, name + ".sources");
            p.out += ": ";
            p.out += sources_text(*e);
        }
    }
}

}  // namespace

console_layer::console_layer(line_writer out, console_options opts) : out_(out), opts_(std::move(opts))
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
}

std::string console_layer::format_event(const event_view& ev) const
{
    std::string out;
    painter p{out, color_};
    const model::level lvl = ev.site ? ev.site->level : model::level::info;
    const std::string_view target = ev.site ? std::string_view(ev.site->target) : std::string_view();

    const model::value* message = nullptr;
    model::field_values fields;
    fields.reserve(ev.values.size());
    for (const auto& f : ev.values) {
        if (!f.value)
            continue;
        if (f.name == "message" && !message)
            message = f.value;
        else
            fields.emplace_back(std::string(f.name), *f.value);
    }

    const std::string time = opts_.fixed_time ? *opts_.fixed_time : format_time(ev.time);
    const std::string thread =
        opts_.fixed_thread ? *opts_.fixed_thread : fmt::format("ThreadId({:02})", thread_number(ev.thread));

    if (opts_.format == console_options::format_kind::compact) {
        if (opts_.show_time) {
            p.put(dim, time);
            out += ' ';
        }
        p.put(level_color(lvl), level_text(lvl));
        out += ' ';
        if (opts_.show_thread_ids) {
            p.put(dim, thread);
            out += ' ';
        }
        if (opts_.show_plugin && !ev.plugin.empty()) {
            p.put(dim, "[");
            out += ev.plugin;
            p.put(dim, "]");
            out += ' ';
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
            out += ' ';
        }
        if (opts_.show_target && !target.empty()) {
            p.put(dim, target);
            p.put(dim, ":");
            out += ' ';
        }
        bool first = true;
        if (message) {
            message_into(out, *message);
            first = false;
        }
        if (!fields.empty()) {
            if (!first)
                out += ' ';
            span_fields_compact(p, fields);
        }
        // Nothing but separators at the end: drop the trailing space.
        if (!out.empty() && out.back() == ' ')
            out.pop_back();
        out += '\n';
        return out;
    }

    // pretty
    const std::string_view lc = level_color(lvl);
    out += "  ";
    if (opts_.show_time) {
        p.put(dim, time);
        out += ' ';
    }
    p.put(lc, level_text(lvl));
    out += ' ';
    if (opts_.show_plugin && !ev.plugin.empty()) {
        out += '[';
        out += ev.plugin;
        out += "] ";
    }
    if (opts_.show_target && !target.empty()) {
        p.put2(bold, lc, target);
        p.put(lc, ":");
        out += ' ';
    }
    bool first = true;
    if (message) {
        std::string m;
        message_into(m, *message);
        p.put(lc, m);
        first = false;
    }
    {
        // Field names bold in the level's colour, as tracing's Pretty does.
        std::string key_style = std::string(bold) + std::string(lc);
        fields_pretty(p, key_style, fields, first);
    }
    if (!out.empty() && out.back() == ' ')
        out.pop_back();
    out += '\n';
    const bool loc = opts_.show_location && ev.site && !ev.site->file.empty();
    if (loc || opts_.show_thread_ids) {
        out += "    ";
        if (loc) {
            p.put2(dim, italic, "at");
            out += ' ';
            out += ev.site->file;
            out += ':';
            out += std::to_string(ev.site->line);
        }
        if (opts_.show_thread_ids) {
            if (loc)
                out += ' ';
            p.put2(dim, italic, "on");
            out += ' ';
            out += thread;
        }
        out += '\n';
    }
    for (auto it = ev.spans.rbegin(); it != ev.spans.rend(); ++it) {
        out += "    ";
        p.put2(dim, italic, "in");
        out += ' ';
        std::string name;
        if (it->site && !it->site->target.empty()) {
            name = it->site->target;
            name += "::";
        }
        name += it->name();
        p.put(bold, name);
        if (it->fields && !it->fields->empty()) {
            out += ' ';
            p.put2(dim, italic, "with");
            out += ' ';
            bool f1 = true;
            fields_pretty(p, bold, *it->fields, f1);
        }
        out += '\n';
    }
    out += '\n';
    return out;
}

void console_layer::emit(std::string_view text) noexcept
{
    if (!out_.write(text))
        errors_.fetch_add(1, std::memory_order_relaxed);
}

void console_layer::on_event(const event_view& ev) noexcept
{
    try {
        std::string text = format_event(ev);
        std::lock_guard lock(mutex_);
        emit(text);
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
        const field_ref ref{"message", &msg};
        event_view ev;
        ev.site = scope.back().site;
        ev.plugin = scope.back().plugin;
        ev.values = field_refs(&ref, 1);
        ev.time = clock::now();
        ev.thread = std::this_thread::get_id();
        ev.spans = scope;
        std::string text = format_event(ev);
        std::lock_guard lock(mutex_);
        emit(text);
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
    if (o.format == "json") {
        json_options jo;
        jo.span_events = o.span_events;
        return std::make_shared<json_layer>(line_writer(), jo);
    }
    console_options co;
    co.format = o.format == "pretty" ? console_options::format_kind::pretty : console_options::format_kind::compact;
    co.color = o.color;
    co.show_plugin = o.show_plugin;
    co.span_events = o.span_events;
    return std::make_shared<console_layer>(co);
}

}  // namespace tt::host
