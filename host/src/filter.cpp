// EnvFilter-style directives: a hand-written parser (positions for every
// error, no regex engine on operator input) and the matching rules described
// in filter.hpp.
#include <tracetunnel/host/filter.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <new>
#include <optional>
#include <vector>

namespace tt::host {

namespace {

using model::i128;
using model::u128;

// ------------------------------------------------------------------
// Literals in field filters
// ------------------------------------------------------------------

struct literal {
    enum class kind { boolean, integer, floating, string };
    kind k = kind::string;
    bool b = false;
    bool negative = false;  // integer: sign and magnitude, so all of i128 and u128 fit
    u128 magnitude = 0;
    double f = 0;
    std::string s;
};

// Rust's bool::from_str: exactly these two spellings.
std::optional<bool> parse_bool(std::string_view t)
{
    if (t == "true")
        return true;
    if (t == "false")
        return false;
    return std::nullopt;
}

// -?[0-9]+ within i128 (negative) or u128 (positive).
bool parse_integer(std::string_view t, literal& out)
{
    bool neg = false;
    std::size_t i = 0;
    if (!t.empty() && t[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i == t.size())
        return false;
    u128 mag = 0;
    const u128 max = ~u128(0);
    for (; i < t.size(); ++i) {
        const char c = t[i];
        if (c < '0' || c > '9')
            return false;
        const unsigned d = static_cast<unsigned>(c - '0');
        if (mag > (max - d) / 10)
            return false;
        mag = mag * 10 + d;
    }
    if (neg && mag > (u128(1) << 127))
        return false;
    if (neg && mag == 0)
        neg = false;  // -0 is 0
    out.k = literal::kind::integer;
    out.negative = neg;
    out.magnitude = mag;
    return true;
}

bool parse_float(std::string_view t, literal& out)
{
    if (t.empty())
        return false;
    double v = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size())
        return false;
    out.k = literal::kind::floating;
    out.f = v;
    return true;
}

// A bare value: bool, then integer, then float, else the text itself (the
// order EnvFilter tries them in).
literal bare_literal(std::string_view t)
{
    literal lit;
    if (auto b = parse_bool(t)) {
        lit.k = literal::kind::boolean;
        lit.b = *b;
        return lit;
    }
    if (parse_integer(t, lit) || parse_float(t, lit))
        return lit;
    lit.k = literal::kind::string;
    lit.s = std::string(t);
    return lit;
}

bool bare_char(unsigned char c)
{
    return c > 0x20 && c != 0x7f && !std::strchr(",{}[]=\"", c);
}

std::string literal_text(const literal& lit)
{
    switch (lit.k) {
    case literal::kind::boolean:
        return lit.b ? "true" : "false";
    case literal::kind::integer:
        return (lit.negative ? "-" : "") + model::to_decimal(lit.magnitude);
    case literal::kind::floating: {
        char buf[64];
        const auto r = std::to_chars(buf, buf + sizeof buf, lit.f);
        std::string t(buf, r.ptr);
        // Keep it a float when read back: "5" would be an integer.
        if (t.find_first_of(".eEn") == std::string::npos)
            t += ".0";
        return t;
    }
    case literal::kind::string:
        break;
    }
    // Bare when it reads back as the same string, quoted otherwise.
    bool bare = !lit.s.empty() &&
                std::all_of(lit.s.begin(), lit.s.end(), [](char c) { return bare_char(static_cast<unsigned char>(c)); });
    if (bare)
        bare = bare_literal(lit.s).k == literal::kind::string;
    if (bare)
        return lit.s;
    std::string q = "\"";
    for (char c : lit.s) {
        if (c == '"' || c == '\\')
            q += '\\';
        q += c;
    }
    q += '"';
    return q;
}

// Signed magnitude of an integer value; false for other kinds.
bool integer_of(const model::value& v, bool& neg, u128& mag)
{
    if (const auto* x = std::get_if<std::int64_t>(&v)) {
        neg = *x < 0;
        mag = neg ? u128(0) - static_cast<u128>(static_cast<i128>(*x)) : static_cast<u128>(*x);
        return true;
    }
    if (const auto* x = std::get_if<std::uint64_t>(&v)) {
        neg = false;
        mag = *x;
        return true;
    }
    if (const auto* x = std::get_if<i128>(&v)) {
        neg = *x < 0;
        mag = neg ? u128(0) - static_cast<u128>(*x) : static_cast<u128>(*x);
        return true;
    }
    if (const auto* x = std::get_if<u128>(&v)) {
        neg = false;
        mag = *x;
        return true;
    }
    return false;
}

bool literal_matches(const literal& lit, const model::value& v) noexcept
{
    switch (lit.k) {
    case literal::kind::boolean:
        if (const auto* b = std::get_if<bool>(&v))
            return *b == lit.b;
        return false;
    case literal::kind::integer: {
        bool neg = false;
        u128 mag = 0;
        return integer_of(v, neg, mag) && neg == lit.negative && mag == lit.magnitude;
    }
    case literal::kind::floating:
        if (const auto* d = std::get_if<double>(&v))
            return *d == lit.f || (std::isnan(*d) && std::isnan(lit.f));
        return false;
    case literal::kind::string:
        if (const auto* s = std::get_if<std::string>(&v))
            return *s == lit.s;
        if (const auto* d = std::get_if<model::debug_text>(&v))
            return d->text == lit.s;
        if (const auto* e = std::get_if<model::error_chain>(&v))
            return !e->chain.empty() && e->chain.front() == lit.s;
        return false;
    }
    return false;
}

// ------------------------------------------------------------------
// Directives
// ------------------------------------------------------------------

struct field_match {
    std::string name;
    std::optional<literal> value;
};

struct directive {
    std::optional<std::string> target;
    std::optional<std::string> span;
    std::vector<field_match> fields;  // sorted by name, names distinct
    level_filter level = level_filter::trace;

    bool has_values() const
    {
        return std::any_of(fields.begin(), fields.end(), [](const field_match& f) { return f.value.has_value(); });
    }
    // Decidable from the call site alone (EnvFilter's "static").
    bool is_static() const { return !span && !has_values(); }
    // Needs the span scope (EnvFilter's "dynamic"); [{x}] is both.
    bool is_dynamic() const { return span || !fields.empty(); }
};

std::string fields_text(const directive& d)
{
    std::string t;
    for (const auto& f : d.fields) {
        if (!t.empty())
            t += ',';
        t += f.name;
        if (f.value) {
            t += '=';
            t += literal_text(*f.value);
        }
    }
    return t;
}

std::string directive_text(const directive& d)
{
    std::string t = d.target.value_or("");
    if (d.span || !d.fields.empty()) {
        t += '[';
        t += d.span.value_or("");
        if (!d.fields.empty())
            t += '{' + fields_text(d) + '}';
        t += ']';
    }
    if (!t.empty())
        t += '=';
    t += to_string(d.level);
    return t;
}

// Most specific first: longer target, then a span name, then more fields;
// the rest only makes the order total.
bool more_specific(const directive& a, const directive& b)
{
    const std::size_t ta = a.target ? a.target->size() + 1 : 0;
    const std::size_t tb = b.target ? b.target->size() + 1 : 0;
    if (ta != tb)
        return ta > tb;
    if (a.span.has_value() != b.span.has_value())
        return a.span.has_value();
    if (a.fields.size() != b.fields.size())
        return a.fields.size() > b.fields.size();
    if (a.target != b.target)
        return a.target < b.target;
    if (a.span != b.span)
        return a.span < b.span;
    return fields_text(a) < fields_text(b);
}

bool same_key(const directive& a, const directive& b)
{
    return a.target == b.target && a.span == b.span && fields_text(a) == fields_text(b);
}

bool cares_about(const directive& d, const model::callsite& cs) noexcept
{
    if (d.target && !std::string_view(cs.target).starts_with(*d.target))
        return false;
    if (d.span && *d.span != cs.name)
        return false;
    for (const auto& f : d.fields)
        if (std::find(cs.fields.begin(), cs.fields.end(), f.name) == cs.fields.end())
            return false;
    return true;
}

const model::value* value_of(const model::field_values* values, const std::string& name) noexcept
{
    if (!values)
        return nullptr;
    for (auto it = values->rbegin(); it != values->rend(); ++it)
        if (it->first == name)
            return &it->second;
    return nullptr;
}

bool values_match(const directive& d, const model::field_values* values) noexcept
{
    for (const auto& f : d.fields) {
        if (!f.value)
            continue;
        const model::value* v = value_of(values, f.name);
        if (!v || !literal_matches(*f.value, *v))
            return false;
    }
    return true;
}

bool passes(model::level l, level_filter f) noexcept
{
    return static_cast<std::uint32_t>(l) <= static_cast<std::uint32_t>(f);
}

std::optional<level_filter> parse_level(std::string_view t)
{
    static constexpr std::pair<std::string_view, level_filter> names[] = {
        {"off", level_filter::off},     {"error", level_filter::error}, {"warn", level_filter::warn},
        {"info", level_filter::info},   {"debug", level_filter::debug}, {"trace", level_filter::trace},
    };
    if (t.size() == 1 && t[0] >= '0' && t[0] <= '5')
        return static_cast<level_filter>(t[0] - '0');
    for (const auto& [name, level] : names) {
        if (name.size() != t.size())
            continue;
        bool same = true;
        for (std::size_t i = 0; i < t.size() && same; ++i) {
            char c = t[i];
            if (c >= 'A' && c <= 'Z')
                c = static_cast<char>(c - 'A' + 'a');
            same = c == name[i];
        }
        if (same)
            return level;
    }
    return std::nullopt;
}

// ------------------------------------------------------------------
// Parser
// ------------------------------------------------------------------

bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool target_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ':' ||
           c == '-' || c == '.' || c == '/' || c >= 0x80;
}

bool span_name_char(unsigned char c)
{
    return c >= 0x20 && c != 0x7f && !std::strchr("[]{},=\"", c);
}

bool field_start_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

bool field_char(unsigned char c)
{
    return field_start_char(c) || c == '.';
}

std::string describe(char c)
{
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        return "control character";
    return std::string("'") + c + "'";
}

class parser {
public:
    explicit parser(std::string_view in) : in_(in) {}

    std::variant<std::vector<directive>, filter_error> run()
    {
        std::vector<directive> out;
        while (true) {
            skip_space();
            if (at_end())
                break;
            if (peek() == ',') {  // an empty piece, as EnvFilter skips them
                ++i_;
                continue;
            }
            const std::size_t start = i_;
            directive d;
            if (!parse_directive(d) || !expect_separator()) {
                err_.directive = piece_at(start);
                return std::move(err_);
            }
            out.push_back(std::move(d));
        }
        return out;
    }

private:
    std::string_view in_;
    std::size_t i_ = 0;
    filter_error err_;

    bool at_end() const { return i_ >= in_.size(); }
    char peek() const { return in_[i_]; }
    void skip_space()
    {
        while (!at_end() && is_space(peek()))
            ++i_;
    }

    bool fail(std::size_t at, std::string message)
    {
        err_.position = at;
        err_.message = std::move(message);
        return false;
    }

    // The directive starting at `start`, up to the next ',' outside brackets
    // and quotes: what the error names.
    std::string piece_at(std::size_t start) const
    {
        int depth = 0;
        bool quoted = false;
        std::size_t j = start;
        for (; j < in_.size(); ++j) {
            const char c = in_[j];
            if (quoted) {
                if (c == '\\')
                    ++j;
                else if (c == '"')
                    quoted = false;
            } else if (c == '"') {
                quoted = true;
            } else if (c == '[' || c == '{') {
                ++depth;
            } else if ((c == ']' || c == '}') && depth > 0) {
                --depth;
            } else if (c == ',' && depth == 0) {
                break;
            }
        }
        std::size_t end = std::min(j, in_.size());
        while (end > start && is_space(in_[end - 1]))
            --end;
        return std::string(in_.substr(start, end - start));
    }

    bool expect_separator()
    {
        skip_space();
        if (at_end())
            return true;
        if (peek() == ',') {
            ++i_;
            return true;
        }
        return fail(i_, "unexpected " + describe(peek()) + " after a directive (directives are separated by ',')");
    }

    bool parse_directive(directive& d)
    {
        const std::size_t start = i_;
        while (!at_end() && target_char(static_cast<unsigned char>(peek())))
            ++i_;
        if (i_ > start)
            d.target = std::string(in_.substr(start, i_ - start));
        if (!at_end() && peek() == '[') {
            if (!parse_span(d))
                return false;
        } else if (!d.target) {
            return fail(i_, "expected a target, '[' or a level, found " + describe(peek()));
        } else if (!at_end() && (peek() == '{' || peek() == ']' || peek() == '}' || peek() == '"')) {
            return fail(i_, "unexpected " + describe(peek()) + " after target '" + *d.target +
                                "' (span and field filters go inside [...])");
        }
        if (!at_end() && peek() == '=') {
            ++i_;
            const std::size_t ls = i_;
            while (!at_end() && peek() != ',' && !is_space(peek()))
                ++i_;
            const std::string_view token = in_.substr(ls, i_ - ls);
            if (token.empty()) {
                d.level = level_filter::trace;  // "target=" enables every level, as in EnvFilter
            } else if (auto l = parse_level(token)) {
                d.level = *l;
            } else {
                return fail(ls, "unknown level '" + std::string(token) + "' (expected trace, debug, info, warn, "
                                                                          "error, off or 0-5)");
            }
            return true;
        }
        if (d.target && !d.span && d.fields.empty()) {
            // A lone word: a level when it reads as one, else a target at trace.
            if (auto l = parse_level(*d.target)) {
                d.level = *l;
                d.target.reset();
            }
        }
        return true;
    }

    bool parse_span(directive& d)
    {
        const std::size_t open = i_++;
        const std::size_t ns = i_;
        while (!at_end() && span_name_char(static_cast<unsigned char>(peek())))
            ++i_;
        if (i_ > ns)
            d.span = std::string(in_.substr(ns, i_ - ns));
        if (!at_end() && peek() == '{' && !parse_fields(d))
            return false;
        if (at_end())
            return fail(open, "'[' is never closed");
        if (peek() != ']')
            return fail(i_, "unexpected " + describe(peek()) + " in a span filter");
        ++i_;
        if (!d.span && d.fields.empty())
            return fail(open, "empty span filter '[]'");
        return true;
    }

    bool parse_fields(directive& d)
    {
        const std::size_t open = i_++;
        std::vector<std::size_t> name_at;
        while (true) {
            skip_space();
            if (at_end())
                return fail(open, "'{' is never closed");
            if (peek() == '}') {
                if (d.fields.empty())
                    return fail(open, "empty field list '{}'");
                return fail(i_, "expected a field name after ','");
            }
            const std::size_t ns = i_;
            if (!field_start_char(static_cast<unsigned char>(peek())))
                return fail(i_, "expected a field name, found " + describe(peek()));
            while (!at_end() && field_char(static_cast<unsigned char>(peek())))
                ++i_;
            field_match f;
            f.name = std::string(in_.substr(ns, i_ - ns));
            for (std::size_t k = 0; k < d.fields.size(); ++k)
                if (d.fields[k].name == f.name)
                    return fail(ns, "field '" + f.name + "' appears twice");
            skip_space();
            if (!at_end() && peek() == '=') {
                ++i_;
                skip_space();
                if (!parse_value(f))
                    return false;
            }
            d.fields.push_back(std::move(f));
            name_at.push_back(ns);
            skip_space();
            if (at_end())
                return fail(open, "'{' is never closed");
            if (peek() == ',') {
                ++i_;
                continue;
            }
            if (peek() == '}') {
                ++i_;
                break;
            }
            return fail(i_, "unexpected " + describe(peek()) + " in a field list");
        }
        std::sort(d.fields.begin(), d.fields.end(),
                  [](const field_match& a, const field_match& b) { return a.name < b.name; });
        return true;
    }

    bool parse_value(field_match& f)
    {
        if (at_end())
            return fail(i_, "missing value for field '" + f.name + "'");
        if (peek() == '"') {
            const std::size_t quote = i_++;
            literal lit;
            lit.k = literal::kind::string;
            while (true) {
                if (at_end())
                    return fail(quote, "unterminated string");
                const char c = in_[i_++];
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (at_end())
                        return fail(quote, "unterminated string");
                    const char e = in_[i_];
                    if (e != '"' && e != '\\')
                        return fail(i_ - 1, "unknown escape '\\" + std::string(1, e) + "' (only \\\" and \\\\)");
                    lit.s += e;
                    ++i_;
                } else {
                    lit.s += c;
                }
            }
            f.value = std::move(lit);
            return true;
        }
        const std::size_t vs = i_;
        while (!at_end() && bare_char(static_cast<unsigned char>(peek())))
            ++i_;
        if (i_ == vs)
            return fail(i_, "missing value for field '" + f.name + "'");
        f.value = bare_literal(in_.substr(vs, i_ - vs));
        return true;
    }
};

}  // namespace

// ------------------------------------------------------------------
// filter
// ------------------------------------------------------------------

struct filter::impl {
    std::vector<directive> statics;   // most specific first
    std::vector<directive> dynamics;  // most specific first
    std::vector<directive> all;       // most specific first, each once
    level_filter static_max = level_filter::off;
    level_filter dynamic_max = level_filter::off;

    bool static_enabled(const model::callsite& cs) const noexcept
    {
        for (const auto& d : statics)
            if (cares_about(d, cs))
                return passes(cs.level, d.level);
        return false;
    }
};

std::string_view to_string(level_filter l) noexcept
{
    switch (l) {
    case level_filter::off:
        return "off";
    case level_filter::error:
        return "error";
    case level_filter::warn:
        return "warn";
    case level_filter::info:
        return "info";
    case level_filter::debug:
        return "debug";
    case level_filter::trace:
        return "trace";
    }
    return "off";
}

filter::filter() : impl_(std::make_shared<const impl>()) {}

std::uint32_t filter::interest(const model::callsite& site) const noexcept
{
    if (impl_->static_enabled(site))
        return TT_INTEREST_ALWAYS;
    // Inside a matching span any target is enabled up to the directive's
    // level, so every call site at or below the most verbose dynamic level
    // might be taken.
    if (passes(site.level, impl_->dynamic_max))
        return TT_INTEREST_SOMETIMES;
    return TT_INTEREST_NEVER;
}

level_filter filter::max_level() const noexcept
{
    return std::max(impl_->static_max, impl_->dynamic_max);
}

bool filter::has_dynamic() const noexcept
{
    return !impl_->dynamics.empty();
}

level_filter filter::span_level(const model::callsite& span_site, const model::field_values* values) const noexcept
{
    for (const auto& d : impl_->dynamics)
        if (cares_about(d, span_site) && values_match(d, values))
            return d.level;
    return level_filter::off;
}

namespace {

// What the hit's own call site decides: static directives, the ceiling of
// every dynamic one, and a new span's own fields. Empty when the spans in
// scope must decide; enabled() and enabled_at() reduce the scope differently.
std::optional<bool> decided_by_site(const filter& f, const filter::impl& i, const model::callsite& site,
                                    const model::field_values* own_values) noexcept
{
    if (i.static_enabled(site))
        return true;
    if (!passes(site.level, i.dynamic_max))
        return false;
    if (site.kind == model::callsite_kind::span && passes(site.level, f.span_level(site, own_values)))
        return true;
    return std::nullopt;
}

}  // namespace

bool filter::enabled(const model::callsite& site, span_scope scope,
                     const model::field_values* own_values) const noexcept
{
    if (const auto d = decided_by_site(*this, *impl_, site, own_values))
        return *d;
    for (const span_view& s : scope)
        if (s.site && passes(site.level, span_level(*s.site, s.values)))
            return true;
    return false;
}

bool filter::enabled_at(const model::callsite& site, level_filter scope_level,
                        const model::field_values* own_values) const noexcept
{
    if (const auto d = decided_by_site(*this, *impl_, site, own_values))
        return *d;
    // A span in scope enables the hit when its level does: the most verbose decides.
    return passes(site.level, scope_level);
}

std::string filter::to_string() const
{
    std::string out;
    for (auto it = impl_->all.rbegin(); it != impl_->all.rend(); ++it) {
        if (!out.empty())
            out += ',';
        out += directive_text(*it);
    }
    return out;
}

parse_result parse_filter(std::string_view directives) noexcept
{
    try {
        auto parsed = parser(directives).run();
        if (auto* err = std::get_if<filter_error>(&parsed))
            return std::move(*err);
        auto& list = std::get<std::vector<directive>>(parsed);
        if (list.empty()) {
            directive d;  // EnvFilter::new("") and an unset RUST_LOG show errors
            d.level = level_filter::error;
            list.push_back(std::move(d));
        }

        auto p = std::make_shared<filter::impl>();
        // The later of two directives with the same target, span and fields
        // replaces the earlier one.
        for (auto& d : list) {
            auto same = std::find_if(p->all.begin(), p->all.end(), [&](const directive& o) { return same_key(o, d); });
            if (same != p->all.end())
                *same = std::move(d);
            else
                p->all.push_back(std::move(d));
        }
        std::stable_sort(p->all.begin(), p->all.end(), more_specific);
        for (const auto& d : p->all) {
            if (d.is_static()) {
                p->statics.push_back(d);
                p->static_max = std::max(p->static_max, d.level);
            }
            if (d.is_dynamic()) {
                p->dynamics.push_back(d);
                p->dynamic_max = std::max(p->dynamic_max, d.level);
            }
        }
        return filter(std::shared_ptr<const filter::impl>(std::move(p)));
    } catch (const std::bad_alloc&) {
        return filter_error{"out of memory", 0, {}};
    } catch (...) {
        return filter_error{"internal error", 0, {}};
    }
}

}  // namespace tt::host
