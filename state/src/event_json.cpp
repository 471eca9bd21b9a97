// JSON lines for the event model; the format is specified in docs/FORMAT.md.
//
// Writing is hand-rolled rather than going through boost::json::value: the
// writer must control number spelling exactly (shortest round-trip doubles,
// ids as strings) and append into a caller's buffer without building a tree.
//
// Reading goes through boost::json::basic_parser with our own handler that
// builds a small tree keeping every number as the text it was written as:
// Boost.JSON would otherwise turn integers beyond 64 bits into doubles
// (tracing-tunnel writes u128::MAX as a bare number) and its double
// conversion is not guaranteed to be correctly rounded in 1.81. Numbers are
// then converted with from_chars / our 128-bit decimal parser.
//
// Decoding reports the first fault by throwing an internal decode_failure,
// caught at the API boundary: it keeps the many small readers free of
// error plumbing, and only refused lines pay for it.
#include <tracetunnel/event_json.hpp>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>

#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <deque>
#include <limits>
#include <new>
#include <vector>

namespace tt::model {

namespace {

// The four events that carry nothing but a span id, by their kind name
// (the same names in our format and in tracing-tunnel's).
event span_id_event(std::string_view kind, std::uint64_t id)
{
    if (kind == "span_entered")
        return span_entered{id};
    if (kind == "span_exited")
        return span_exited{id};
    if (kind == "span_cloned")
        return span_cloned{id};
    return span_dropped{id};
}

using code = json_error_code;

constexpr std::uint64_t canonical_nan_bits = 0x7ff8000000000000ull;
constexpr std::size_t max_depth = 512;  // error chains nest one object per source in tracing-tunnel lines

// ------------------------------------------------------------------------
// UTF-8

// Length of the well-formed UTF-8 sequence starting at s[i], 0 if ill-formed
// (Unicode 15, table 3-7: no overlongs, no surrogates, nothing past U+10FFFF).
std::size_t utf8_sequence(std::string_view s, std::size_t i) noexcept
{
    auto byte = [&](std::size_t k) -> unsigned {
        return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0x100u;
    };
    auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) {
        const unsigned b = byte(k);
        return b >= lo && b <= hi;
    };
    const unsigned c = byte(0);
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return cont(1) ? 2 : 0;
    if (c == 0xE0)
        return cont(1, 0xA0, 0xBF) && cont(2) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xED)
        return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    if (c == 0xF0)
        return cont(1, 0x90, 0xBF) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3)
        return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4)
        return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    return 0;
}

std::size_t first_invalid_utf8(std::string_view s) noexcept
{
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence(s, i);
        if (n == 0)
            return i;
        i += n;
    }
    return std::string_view::npos;
}

// ------------------------------------------------------------------------
// Writing

void append_hex16(std::string& out, std::uint64_t v)
{
    static constexpr char digits[] = "0123456789abcdef";
    char buf[16];
    for (int i = 15; i >= 0; --i) {
        buf[i] = digits[v & 0xF];
        v >>= 4;
    }
    out.append(buf, sizeof buf);
}

template <class Int>
void append_int(std::string& out, Int v)
{
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

// A JSON string literal. Runs of plain bytes are appended in one go.
void append_string(std::string& out, std::string_view s)
{
    out += '"';
    std::size_t run = 0;  // start of the pending run of bytes copied as they are
    std::size_t i = 0;
    auto flush = [&](std::size_t end) { out.append(s.data() + run, end - run); };
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            const std::size_t n = utf8_sequence(s, i);
            if (n != 0) {
                i += n;
                continue;
            }
            flush(i);
            out += "\xEF\xBF\xBD";  // U+FFFD
            run = ++i;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            ++i;
            continue;
        }
        flush(i);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default: {
            static constexpr char hex[] = "0123456789abcdef";
            const char esc[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            out.append(esc, sizeof esc);
        }
        }
        run = ++i;
    }
    flush(i);
    out += '"';
}

void append_f64(std::string& out, double d)
{
    if (std::isnan(d)) {
        const auto bits = std::bit_cast<std::uint64_t>(d);
        if (bits == canonical_nan_bits) {
            out += "\"NaN\"";
        } else {
            out += "\"NaN:0x";
            append_hex16(out, bits);
            out += '"';
        }
        return;
    }
    if (std::isinf(d)) {
        out += d > 0 ? "\"inf\"" : "\"-inf\"";
        return;
    }
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest text that reads back to d
    const std::string_view text(buf, static_cast<std::size_t>(r.ptr - buf));
    out += text;
    if (text.find_first_of(".e") == std::string_view::npos)
        out += ".0";  // so generic readers still see a float
}

void append_span_id(std::string& out, std::uint64_t id)
{
    out += '"';
    append_int(out, id);
    out += '"';
}

void append_callsite_id(std::string& out, std::uint64_t id)
{
    out += "\"0x";
    append_hex16(out, id);
    out += '"';
}

std::string_view kind_word(callsite_kind k) noexcept
{
    switch (k) {
    case callsite_kind::span: return "span";
    case callsite_kind::event: return "event";
    }
    return "unknown";
}

void append_value(std::string& out, const value& v)
{
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                out += x ? "{\"bool\":true}" : "{\"bool\":false}";
            } else if constexpr (std::is_same_v<T, std::int64_t>) {
                out += "{\"i64\":\"";
                append_int(out, x);
                out += "\"}";
            } else if constexpr (std::is_same_v<T, std::uint64_t>) {
                out += "{\"u64\":\"";
                append_int(out, x);
                out += "\"}";
            } else if constexpr (std::is_same_v<T, i128>) {
                out += "{\"i128\":\"";
                append_decimal(out, x);
                out += "\"}";
            } else if constexpr (std::is_same_v<T, u128>) {
                out += "{\"u128\":\"";
                append_decimal(out, x);
                out += "\"}";
            } else if constexpr (std::is_same_v<T, double>) {
                out += "{\"f64\":";
                append_f64(out, x);
                out += '}';
            } else if constexpr (std::is_same_v<T, std::string>) {
                out += "{\"str\":";
                append_string(out, x);
                out += '}';
            } else if constexpr (std::is_same_v<T, debug_text>) {
                out += "{\"debug\":";
                append_string(out, x.text);
                out += '}';
            } else {
                static_assert(std::is_same_v<T, error_chain>);
                out += "{\"error\":[";
                for (std::size_t i = 0; i < x.chain.size(); ++i) {
                    if (i)
                        out += ',';
                    append_string(out, x.chain[i]);
                }
                out += "]}";
            }
        },
        v);
}

void append_values(std::string& out, const field_values& values)
{
    out += "\"values\":[";
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i)
            out += ',';
        out += '[';
        append_string(out, values[i].first);
        out += ',';
        append_value(out, values[i].second);
        out += ']';
    }
    out += ']';
}

void append_parent(std::string& out, parent_mode mode, std::uint64_t parent_id)
{
    out += "\"parent\":";
    switch (mode) {
    case parent_mode::contextual: out += "\"contextual\""; return;
    case parent_mode::root: out += "\"root\""; return;
    case parent_mode::explicit_span:
        out += "{\"span\":";
        append_span_id(out, parent_id);
        out += '}';
        return;
    }
    out += "\"unknown\"";
}

// {"<kind>":{"id":"<id>"}} for the events that carry only a span id.
void append_id_only(std::string& out, std::string_view kind, std::uint64_t id)
{
    out += "{\"";
    out += kind;
    out += "\":{\"id\":";
    append_span_id(out, id);
    out += "}}";
}

void append_event(std::string& out, const event& ev)
{
    std::visit(
        [&](const auto& e) {
            using T = std::decay_t<decltype(e)>;
            if constexpr (std::is_same_v<T, new_callsite>) {
                const callsite& cs = e.site;
                out += "{\"new_callsite\":{\"id\":";
                append_callsite_id(out, cs.id);
                out += ",\"kind\":\"";
                out += kind_word(cs.kind);
                out += "\",\"level\":\"";
                out += to_string(cs.level);
                out += "\",\"name\":";
                append_string(out, cs.name);
                out += ",\"target\":";
                append_string(out, cs.target);
                out += ",\"module_path\":";
                append_string(out, cs.module_path);
                out += ",\"file\":";
                append_string(out, cs.file);
                out += ",\"line\":";
                append_int(out, cs.line);
                out += ",\"fields\":[";
                for (std::size_t i = 0; i < cs.fields.size(); ++i) {
                    if (i)
                        out += ',';
                    append_string(out, cs.fields[i]);
                }
                out += "]}}";
            } else if constexpr (std::is_same_v<T, new_span>) {
                out += "{\"new_span\":{\"id\":";
                append_span_id(out, e.id);
                out += ",\"callsite\":";
                append_callsite_id(out, e.callsite_id);
                out += ',';
                append_parent(out, e.parent, e.parent_id);
                out += ',';
                append_values(out, e.values);
                out += "}}";
            } else if constexpr (std::is_same_v<T, follows_from>) {
                out += "{\"follows_from\":{\"id\":";
                append_span_id(out, e.id);
                out += ",\"cause\":";
                append_span_id(out, e.cause);
                out += "}}";
            } else if constexpr (std::is_same_v<T, span_entered>) {
                append_id_only(out, "span_entered", e.id);
            } else if constexpr (std::is_same_v<T, span_exited>) {
                append_id_only(out, "span_exited", e.id);
            } else if constexpr (std::is_same_v<T, span_cloned>) {
                append_id_only(out, "span_cloned", e.id);
            } else if constexpr (std::is_same_v<T, span_dropped>) {
                append_id_only(out, "span_dropped", e.id);
            } else if constexpr (std::is_same_v<T, values_recorded>) {
                out += "{\"values_recorded\":{\"id\":";
                append_span_id(out, e.id);
                out += ',';
                append_values(out, e.values);
                out += "}}";
            } else {
                static_assert(std::is_same_v<T, new_event>);
                out += "{\"new_event\":{\"callsite\":";
                append_callsite_id(out, e.callsite_id);
                out += ',';
                append_parent(out, e.parent, e.parent_id);
                out += ',';
                append_values(out, e.values);
                out += "}}";
            }
        },
        ev);
}

// ------------------------------------------------------------------------
// Parsing into a tree that keeps numbers as text

struct jnode {
    enum class kind : std::uint8_t { null, boolean, number, string, array, object };
    kind k = kind::null;
    bool b = false;
    std::string text;               // a string's contents, or a number as written
    std::vector<jnode> items;       // array elements, or object member values
    std::vector<std::string> keys;  // object member names, parallel to items
};

class tree_builder {
public:
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

    using error_code = boost::json::error_code;
    using string_view = boost::json::string_view;

    bool on_document_begin(error_code&) { return true; }
    bool on_document_end(error_code&) { return true; }
    bool on_object_begin(error_code&) { return open(jnode::kind::object); }
    bool on_object_end(std::size_t, error_code&) { return close(); }
    bool on_array_begin(error_code&) { return open(jnode::kind::array); }
    bool on_array_end(std::size_t, error_code&) { return close(); }
    bool on_key_part(string_view s, std::size_t, error_code&) { return part(s); }
    bool on_key(string_view s, std::size_t, error_code&)
    {
        part(s);
        stack_.back().keys.push_back(take());
        return true;
    }
    bool on_string_part(string_view s, std::size_t, error_code&) { return part(s); }
    bool on_string(string_view s, std::size_t, error_code&) { return leaf(jnode::kind::string, s); }
    bool on_number_part(string_view s, error_code&) { return part(s); }
    bool on_int64(std::int64_t, string_view s, error_code&) { return leaf(jnode::kind::number, s); }
    bool on_uint64(std::uint64_t, string_view s, error_code&) { return leaf(jnode::kind::number, s); }
    bool on_double(double, string_view s, error_code&) { return leaf(jnode::kind::number, s); }
    bool on_bool(bool b, error_code&)
    {
        jnode n;
        n.k = jnode::kind::boolean;
        n.b = b;
        return add(std::move(n));
    }
    bool on_null(error_code&) { return add(jnode{}); }
    bool on_comment_part(string_view, error_code&) { return true; }
    bool on_comment(string_view, error_code&) { return true; }

    jnode root;

    // JSON Pointer of where parsing stopped: the value being read when the
    // input ended or went wrong.
    std::string path() const;

private:
    bool part(string_view s)
    {
        buf_.append(s.data(), s.size());
        return true;
    }
    std::string take()
    {
        std::string s = std::move(buf_);
        buf_.clear();
        return s;
    }
    bool leaf(jnode::kind k, string_view s)
    {
        part(s);
        jnode n;
        n.k = k;
        n.text = take();
        return add(std::move(n));
    }
    bool open(jnode::kind k)
    {
        stack_.emplace_back().k = k;
        return true;
    }
    bool close()
    {
        jnode n = std::move(stack_.back());
        stack_.pop_back();
        return add(std::move(n));
    }
    bool add(jnode&& n)
    {
        if (stack_.empty())
            root = std::move(n);
        else
            stack_.back().items.push_back(std::move(n));
        return true;
    }

    std::vector<jnode> stack_;
    std::string buf_;
};

void append_pointer_token(std::string& path, std::string_view key)
{
    path += '/';
    for (char c : key) {
        if (c == '~')
            path += "~0";
        else if (c == '/')
            path += "~1";
        else
            path += c;
    }
}

std::string tree_builder::path() const
{
    std::string p;
    for (const jnode& n : stack_) {
        if (n.k == jnode::kind::array)
            append_pointer_token(p, std::to_string(n.items.size()));
        else if (n.keys.size() > n.items.size())
            append_pointer_token(p, n.keys.back());
    }
    return p;
}

// A short, quoted excerpt for messages; never cuts a UTF-8 sequence.
std::string quoted(std::string_view s, std::size_t limit = 40)
{
    bool cut = false;
    if (s.size() > limit) {
        std::size_t n = limit;
        while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
            --n;
        s = s.substr(0, n);
        cut = true;
    }
    std::string out;
    append_string(out, s);
    if (cut)
        out.insert(out.size() - 1, "...");
    return out;
}

std::size_t skip_ws(std::string_view t, std::size_t i) noexcept;

// Parses `line` into `root`, or says why it is not JSON.
std::optional<json_error> parse_tree(std::string_view line, jnode& root)
{
    boost::json::parse_options opt;
    opt.max_depth = max_depth;
    boost::json::basic_parser<tree_builder> parser(opt);
    boost::json::error_code ec;
    const std::size_t n = parser.write_some(false, line.data(), line.size(), ec);
    if (ec) {
        json_error e;
        // Boost.JSON stops at the first byte that is not UTF-8 with a plain
        // syntax error; tell the two apart so the message says what to fix.
        const std::size_t bad = first_invalid_utf8(line);
        if (bad <= n) {
            e.code = code::invalid_utf8;
            e.offset = bad;
            e.message = "invalid UTF-8 sequence starting with byte 0x";
            static constexpr char hex[] = "0123456789abcdef";
            const auto b = static_cast<unsigned char>(line[bad]);
            e.message += hex[b >> 4];
            e.message += hex[b & 0xF];
        } else {
            e.code = code::invalid_json;
            e.offset = n;
            e.message = ec.message();
            if (n < line.size())
                e.message += " at " + quoted(line.substr(n), 16);
            else if (skip_ws(line, 0) == line.size())
                e.message = "empty line: expected a JSON object";
            else
                e.message += ": the line ends inside a JSON value";
        }
        e.path = parser.handler().path();
        return e;
    }
    if (n < line.size()) {
        json_error e;
        e.code = code::invalid_json;
        e.offset = n;
        e.message = "unexpected " + quoted(line.substr(n), 16) + " after the JSON value";
        return e;
    }
    root = std::move(parser.handler().root);
    return std::nullopt;
}

// ------------------------------------------------------------------------
// Locating a value in the line, for error offsets. Runs on the error path
// only, over text that already parsed, so it can be a plain scanner.

bool is_ws(char c) noexcept
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::size_t skip_ws(std::string_view t, std::size_t i) noexcept
{
    while (i < t.size() && is_ws(t[i]))
        ++i;
    return i;
}

std::size_t skip_string(std::string_view t, std::size_t i) noexcept
{
    for (++i; i < t.size(); ++i) {
        if (t[i] == '\\')
            ++i;
        else if (t[i] == '"')
            return i + 1;
    }
    return t.size();
}

std::size_t skip_value(std::string_view t, std::size_t i) noexcept
{
    if (i >= t.size())
        return i;
    if (t[i] == '"')
        return skip_string(t, i);
    if (t[i] == '{' || t[i] == '[') {
        std::size_t depth = 0;
        while (i < t.size()) {
            const char c = t[i];
            if (c == '"') {
                i = skip_string(t, i);
                continue;
            }
            if (c == '{' || c == '[')
                ++depth;
            else if ((c == '}' || c == ']') && --depth == 0)
                return i + 1;
            ++i;
        }
        return i;
    }
    while (i < t.size() && t[i] != ',' && t[i] != ']' && t[i] != '}' && !is_ws(t[i]))
        ++i;
    return i;
}

bool key_matches(std::string_view token, std::string_view key)
{
    const std::string_view inner = token.substr(1, token.size() >= 2 ? token.size() - 2 : 0);
    if (inner.find('\\') == std::string_view::npos)
        return inner == key;
    boost::json::error_code ec;
    const boost::json::value v = boost::json::parse(boost::json::string_view(token.data(), token.size()), ec);
    return !ec && v.is_string() && std::string_view(v.get_string().data(), v.get_string().size()) == key;
}

// One step of a path: an object member or an array element.
struct step {
    std::string_view key;
    std::size_t index = 0;
    bool is_key = false;
};

// Byte offset of the value at `path`; where a step is missing, the offset
// of the container that should have held it.
std::size_t locate(std::string_view t, const std::vector<step>& path)
{
    std::size_t i = skip_ws(t, 0);
    for (const step& s : path) {
        const std::size_t container = i;
        if (i >= t.size() || t[i] != (s.is_key ? '{' : '['))
            return container;
        i = skip_ws(t, i + 1);
        if (s.is_key) {
            bool found = false;
            while (i < t.size() && t[i] == '"') {
                const std::size_t key_end = skip_string(t, i);
                const bool match = key_matches(t.substr(i, key_end - i), s.key);
                i = skip_ws(t, skip_ws(t, key_end) + 1);  // past ':'
                if (match) {
                    found = true;
                    break;
                }
                i = skip_ws(t, skip_value(t, i));
                if (i >= t.size() || t[i] != ',')
                    break;
                i = skip_ws(t, i + 1);
            }
            if (!found)
                return container;
        } else {
            for (std::size_t k = 0; k < s.index; ++k) {
                i = skip_ws(t, skip_value(t, i));
                if (i >= t.size() || t[i] != ',')
                    return container;
                i = skip_ws(t, i + 1);
            }
        }
    }
    return i;
}

// ------------------------------------------------------------------------
// Reading the tree

struct decode_failure {
    json_error error;
};

// Where a value sits: a chain of steps up to the line, on the C++ stack.
struct where {
    const where* up = nullptr;
    step at;

    where child(std::string_view key) const { return where{this, step{key, 0, true}}; }
    where child(std::size_t index) const { return where{this, step{{}, index, false}}; }
};

class reader {
public:
    explicit reader(std::string_view line) : line_(line) {}

    [[noreturn]] void fail(const where& w, code c, std::string message) const
    {
        std::vector<step> steps;
        for (const where* p = &w; p != nullptr; p = p->up)
            if (p->up != nullptr)  // the outermost `where` is the line itself
                steps.push_back(p->at);
        std::vector<step> path(steps.rbegin(), steps.rend());
        json_error e;
        e.code = c;
        e.message = std::move(message);
        e.offset = locate(line_, path);
        for (const step& s : path)
            append_pointer_token(e.path, s.is_key ? std::string(s.key) : std::to_string(s.index));
        throw decode_failure{std::move(e)};
    }

    // ---- shapes

    const jnode& expect(const jnode& n, jnode::kind k, const where& w, std::string_view what) const
    {
        if (n.k != k)
            fail(w, code::wrong_type, "expected " + std::string(what) + ", found " + std::string(type_name(n)));
        return n;
    }

    // The members of object `obj` named in `names`, in that order, nullptr
    // for absent ones (a JSON null counts as absent when `null_is_absent`,
    // as serde reads it for an Option). With `strict`, any other member is
    // an error; otherwise it is ignored, as serde does.
    template <std::size_t N>
    std::array<const jnode*, N> members(const jnode& obj, const where& w, const std::array<std::string_view, N>& names,
                                        bool strict, bool null_is_absent = false) const
    {
        std::array<const jnode*, N> found{};
        for (std::size_t i = 0; i < obj.keys.size(); ++i) {
            std::size_t k = 0;
            while (k < N && names[k] != obj.keys[i])
                ++k;
            if (k == N) {
                if (strict)
                    fail(w.child(obj.keys[i]), code::unknown_field,
                         "unknown member " + quoted(obj.keys[i]) + "; expected " + list(names));
                continue;
            }
            if (found[k] != nullptr)
                fail(w.child(obj.keys[i]), code::duplicate_field, "member " + quoted(obj.keys[i]) + " appears twice");
            found[k] = &obj.items[i];
        }
        if (null_is_absent)
            for (auto& f : found)
                if (f != nullptr && f->k == jnode::kind::null)
                    f = nullptr;
        return found;
    }

    const jnode& required(const jnode* n, const where& obj, std::string_view key) const
    {
        if (n == nullptr)
            fail(obj.child(key), code::missing_field, "missing member " + quoted(key));
        return *n;
    }

    // An object with exactly one member, whose name is a tag: the shape of
    // both an event line and a typed value, in both formats.
    std::pair<std::string_view, const jnode*> tagged(const jnode& n, const where& w, std::string_view what) const
    {
        expect(n, jnode::kind::object, w, "an object");
        if (n.items.empty())
            fail(w, code::missing_field, "empty object: expected one member naming the " + std::string(what));
        if (n.items.size() > 1)
            fail(w.child(n.keys[1]), code::unknown_field,
                 "a second member " + quoted(n.keys[1]) + ": expected only the one naming the " + std::string(what));
        return {n.keys[0], &n.items[0]};
    }

    // ---- scalars

    std::string string_of(const jnode& n, const where& w) const
    {
        return expect(n, jnode::kind::string, w, "a string").text;
    }

    bool bool_of(const jnode& n, const where& w) const { return expect(n, jnode::kind::boolean, w, "true or false").b; }

    // A JSON number without fraction or exponent, as sign and magnitude.
    struct decimal {
        bool negative = false;
        u128 magnitude = 0;
        bool overflow = false;  // beyond 2^128 - 1
        bool valid = false;
    };

    static decimal parse_decimal(std::string_view s) noexcept
    {
        decimal d;
        std::size_t i = 0;
        if (i < s.size() && s[i] == '-') {
            d.negative = true;
            ++i;
        }
        if (i == s.size())
            return d;
        constexpr u128 max = ~u128(0);
        for (; i < s.size(); ++i) {
            if (s[i] < '0' || s[i] > '9')
                return d;
            const auto digit = static_cast<unsigned>(s[i] - '0');
            if (d.magnitude > (max - digit) / 10)
                d.overflow = true;
            else
                d.magnitude = d.magnitude * 10 + digit;
        }
        d.valid = true;
        return d;
    }

    // Integer text from a string (tracetunnel lines) or a JSON number
    // (tracing-tunnel lines).
    decimal integer_text(const jnode& n, const where& w, bool from_string) const
    {
        if (from_string) {
            expect(n, jnode::kind::string, w, "a decimal string such as \"42\"");
            const decimal d = parse_decimal(n.text);
            if (!d.valid)
                fail(w, code::invalid_value, quoted(n.text) + " is not a decimal integer");
            return d;
        }
        expect(n, jnode::kind::number, w, "an integer");
        const decimal d = parse_decimal(n.text);
        if (!d.valid)
            fail(w, code::wrong_type, "expected an integer, found " + n.text);
        return d;
    }

    std::uint64_t u64_of(const jnode& n, const where& w, bool from_string) const
    {
        const decimal d = integer_text(n, w, from_string);
        if (d.negative && d.magnitude != 0)
            fail(w, code::out_of_range, "negative, expected an unsigned 64-bit integer");
        if (d.overflow || d.magnitude > std::numeric_limits<std::uint64_t>::max())
            fail(w, code::out_of_range, "does not fit in 64 bits");
        return static_cast<std::uint64_t>(d.magnitude);
    }

    std::int64_t i64_of(const jnode& n, const where& w) const
    {
        const decimal d = integer_text(n, w, true);
        const u128 limit = d.negative ? u128(1) << 63 : (u128(1) << 63) - 1;
        if (d.overflow || d.magnitude > limit)
            fail(w, code::out_of_range, "does not fit in a signed 64-bit integer");
        const auto m = static_cast<std::uint64_t>(d.magnitude);
        return static_cast<std::int64_t>(d.negative ? std::uint64_t(0) - m : m);
    }

    static bool fits_i128(const decimal& d) noexcept
    {
        const u128 limit = d.negative ? u128(1) << 127 : (u128(1) << 127) - 1;
        return !d.overflow && d.magnitude <= limit;
    }

    static i128 to_i128(const decimal& d) noexcept
    {
        return static_cast<i128>(d.negative ? u128(0) - d.magnitude : d.magnitude);
    }

    i128 i128_of(const jnode& n, const where& w) const
    {
        const decimal d = integer_text(n, w, true);
        if (!fits_i128(d))
            fail(w, code::out_of_range, "does not fit in a signed 128-bit integer");
        return to_i128(d);
    }

    u128 u128_of(const jnode& n, const where& w) const
    {
        const decimal d = integer_text(n, w, true);
        if (d.negative && d.magnitude != 0)
            fail(w, code::out_of_range, "negative, expected an unsigned 128-bit integer");
        if (d.overflow)
            fail(w, code::out_of_range, "does not fit in an unsigned 128-bit integer");
        return d.magnitude;
    }

    std::uint32_t u32_number_of(const jnode& n, const where& w) const
    {
        const decimal d = integer_text(n, w, false);
        if (d.negative && d.magnitude != 0)
            fail(w, code::out_of_range, "negative, expected an unsigned 32-bit integer");
        if (d.overflow || d.magnitude > std::numeric_limits<std::uint32_t>::max())
            fail(w, code::out_of_range, "does not fit in 32 bits");
        return static_cast<std::uint32_t>(d.magnitude);
    }

    // A JSON number as the nearest double (from_chars rounds correctly).
    double number_as_double(const jnode& n, const where& w) const
    {
        const std::string& s = n.text;
        double d = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), d);
        if (r.ec == std::errc::result_out_of_range)
            fail(w, code::out_of_range, s + " is beyond the range of a double");
        if (r.ec != std::errc() || r.ptr != s.data() + s.size())
            fail(w, code::invalid_value, quoted(s) + " is not a number");  // unreachable for parsed JSON
        return d;
    }

    std::uint64_t callsite_id_of(const jnode& n, const where& w) const
    {
        expect(n, jnode::kind::string, w, "a call-site id such as \"0x00000000000004d2\"");
        const std::string& s = n.text;
        if (s.size() < 3 || s[0] != '0' || s[1] != 'x')
            fail(w, code::invalid_value, quoted(s) + " is not a call-site id: expected \"0x\" and hex digits");
        std::uint64_t v = 0;
        bool overflow = false;
        for (std::size_t i = 2; i < s.size(); ++i) {
            const char c = s[i];
            unsigned digit = 0;
            if (c >= '0' && c <= '9')
                digit = static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f')
                digit = static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                digit = static_cast<unsigned>(c - 'A' + 10);
            else
                fail(w, code::invalid_value, quoted(s) + " is not a call-site id: expected \"0x\" and hex digits");
            if (v >> 60 != 0)
                overflow = true;
            v = (v << 4) | digit;
        }
        if (overflow)
            fail(w, code::out_of_range, quoted(s) + " does not fit in 64 bits");
        return v;
    }

    level level_of(const jnode& n, const where& w) const
    {
        const std::string& s = string_of(n, w);
        for (level l : {level::error, level::warn, level::info, level::debug, level::trace})
            if (s == to_string(l))
                return l;
        fail(w, code::invalid_value, quoted(s) + " is not a level: expected error, warn, info, debug or trace");
    }

    callsite_kind callsite_kind_of(const jnode& n, const where& w) const
    {
        const std::string& s = string_of(n, w);
        if (s == "span")
            return callsite_kind::span;
        if (s == "event")
            return callsite_kind::event;
        fail(w, code::invalid_value, quoted(s) + " is not a call-site kind: expected span or event");
    }

    std::vector<std::string> strings_of(const jnode& n, const where& w) const
    {
        expect(n, jnode::kind::array, w, "an array of strings");
        std::vector<std::string> out;
        out.reserve(n.items.size());
        for (std::size_t i = 0; i < n.items.size(); ++i)
            out.push_back(string_of(n.items[i], w.child(i)));
        return out;
    }

    static std::string_view type_name(const jnode& n) noexcept
    {
        switch (n.k) {
        case jnode::kind::null: return "null";
        case jnode::kind::boolean: return "a boolean";
        case jnode::kind::number: return "a number";
        case jnode::kind::string: return "a string";
        case jnode::kind::array: return "an array";
        case jnode::kind::object: return "an object";
        }
        return "?";
    }

    template <std::size_t N>
    static std::string list(const std::array<std::string_view, N>& names)
    {
        std::string out;
        for (std::size_t i = 0; i < N; ++i) {
            if (i)
                out += ", ";
            out += names[i];
        }
        return out;
    }

private:
    std::string_view line_;
};

// Shared by both readers: parse, decode, and turn every failure into a
// json_error so nothing escapes.
template <class Decode>
decode_result decode_line(std::string_view line, Decode&& decode)
{
    try {
        jnode root;
        if (auto err = parse_tree(line, root))
            return std::move(*err);
        const reader r(line);
        return decode(r, root, where{});
    } catch (decode_failure& f) {
        return std::move(f.error);
    } catch (const std::bad_alloc&) {
        json_error e;
        e.code = code::internal_error;
        e.message = "out of memory";
        return e;
    } catch (...) {
        json_error e;
        e.code = code::internal_error;
        e.message = "unexpected failure";
        return e;
    }
}

// ------------------------------------------------------------------------
// The tracetunnel format

using namespace std::string_view_literals;

value read_value(const reader& r, const jnode& n, const where& w)
{
    const auto [tag, body] = r.tagged(n, w, "value type");
    const where at = w.child(tag);
    if (tag == "bool")
        return r.bool_of(*body, at);
    if (tag == "i64")
        return r.i64_of(*body, at);
    if (tag == "u64")
        return r.u64_of(*body, at, true);
    if (tag == "i128")
        return r.i128_of(*body, at);
    if (tag == "u128")
        return r.u128_of(*body, at);
    if (tag == "f64") {
        if (body->k == jnode::kind::number)
            return r.number_as_double(*body, at);
        if (body->k != jnode::kind::string)
            r.fail(at, code::wrong_type, "expected a number or \"NaN\", \"inf\", \"-inf\"");
        const std::string& s = body->text;
        if (s == "NaN")
            return std::bit_cast<double>(canonical_nan_bits);
        if (s == "inf")
            return std::numeric_limits<double>::infinity();
        if (s == "-inf")
            return -std::numeric_limits<double>::infinity();
        if (s.size() == 22 && s.starts_with("NaN:0x")) {
            std::uint64_t bits = 0;
            const auto res = std::from_chars(s.data() + 6, s.data() + s.size(), bits, 16);
            const double d = std::bit_cast<double>(bits);
            if (res.ec == std::errc() && res.ptr == s.data() + s.size() && std::isnan(d))
                return d;
        }
        r.fail(at, code::invalid_value,
               quoted(s) + " is not a float: expected a number, \"NaN\", \"NaN:0x<16 hex digits>\", \"inf\" or \"-inf\"");
    }
    if (tag == "str")
        return r.string_of(*body, at);
    if (tag == "debug")
        return debug_text{r.string_of(*body, at)};
    if (tag == "error")
        return error_chain{r.strings_of(*body, at)};
    r.fail(at, code::unknown_kind,
           "unknown value type " + quoted(tag) + ": expected bool, i64, u64, i128, u128, f64, str, debug or error");
}

field_values read_values(const reader& r, const jnode& n, const where& w)
{
    r.expect(n, jnode::kind::array, w, "an array of [name, value] pairs");
    field_values out;
    out.reserve(n.items.size());
    for (std::size_t i = 0; i < n.items.size(); ++i) {
        const where at = w.child(i);
        const jnode& pair = r.expect(n.items[i], jnode::kind::array, at, "a [name, value] pair");
        if (pair.items.size() != 2)
            r.fail(at, code::invalid_value,
                   "a pair has 2 elements, [name, value]; this one has " + std::to_string(pair.items.size()));
        std::string name = r.string_of(pair.items[0], at.child(std::size_t{0}));
        out.emplace_back(std::move(name), read_value(r, pair.items[1], at.child(std::size_t{1})));
    }
    return out;
}

std::pair<parent_mode, std::uint64_t> read_parent(const reader& r, const jnode& n, const where& w)
{
    if (n.k == jnode::kind::string) {
        if (n.text == "contextual")
            return {parent_mode::contextual, 0};
        if (n.text == "root")
            return {parent_mode::root, 0};
        r.fail(w, code::invalid_value,
               quoted(n.text) + " is not a parent: expected \"contextual\", \"root\" or {\"span\":\"<id>\"}");
    }
    if (n.k != jnode::kind::object)
        r.fail(w, code::wrong_type, "expected \"contextual\", \"root\" or {\"span\":\"<id>\"}");
    const auto [span] = r.members(n, w, std::array{"span"sv}, true);
    return {parent_mode::explicit_span, r.u64_of(r.required(span, w, "span"), w.child("span"), true)};
}

event read_event(const reader& r, const jnode& root, const where& line)
{
    if (root.k != jnode::kind::object)
        r.fail(line, code::not_an_object, "an event line is a JSON object, found " + std::string(reader::type_name(root)));
    if (!root.keys.empty() && root.keys[0] == "tracetunnel")
        r.fail(line, code::unknown_kind, "this is a stream header, not an event (see check_stream_header)");
    const auto [kind, body_ptr] = r.tagged(root, line, "event kind");
    const jnode& body = *body_ptr;
    const where w = line.child(kind);
    auto object = [&](auto... names) {
        r.expect(body, jnode::kind::object, w, "an object");
        return r.members(body, w, std::array{std::string_view(names)...}, true);
    };
    auto span_id = [&](const jnode* n, std::string_view key) {
        return r.u64_of(r.required(n, w, key), w.child(key), true);
    };
    auto callsite_id = [&](const jnode* n) { return r.callsite_id_of(r.required(n, w, "callsite"), w.child("callsite")); };
    auto parent = [&](const jnode* n) { return read_parent(r, r.required(n, w, "parent"), w.child("parent")); };
    auto values = [&](const jnode* n) { return read_values(r, r.required(n, w, "values"), w.child("values")); };

    if (kind == "new_callsite") {
        const auto [id, k, lvl, name, target, module_path, file, line_no, fields] =
            object("id", "kind", "level", "name", "target", "module_path", "file", "line", "fields");
        callsite cs;
        cs.id = r.callsite_id_of(r.required(id, w, "id"), w.child("id"));
        cs.kind = r.callsite_kind_of(r.required(k, w, "kind"), w.child("kind"));
        cs.level = r.level_of(r.required(lvl, w, "level"), w.child("level"));
        cs.name = r.string_of(r.required(name, w, "name"), w.child("name"));
        cs.target = r.string_of(r.required(target, w, "target"), w.child("target"));
        cs.module_path = r.string_of(r.required(module_path, w, "module_path"), w.child("module_path"));
        cs.file = r.string_of(r.required(file, w, "file"), w.child("file"));
        cs.line = r.u32_number_of(r.required(line_no, w, "line"), w.child("line"));
        cs.fields = r.strings_of(r.required(fields, w, "fields"), w.child("fields"));
        return new_callsite{std::move(cs)};
    }
    if (kind == "new_span") {
        const auto [id, cs, par, vals] = object("id", "callsite", "parent", "values");
        new_span e;
        e.id = span_id(id, "id");
        e.callsite_id = callsite_id(cs);
        std::tie(e.parent, e.parent_id) = parent(par);
        e.values = values(vals);
        return e;
    }
    if (kind == "follows_from") {
        const auto [id, cause] = object("id", "cause");
        return follows_from{span_id(id, "id"), span_id(cause, "cause")};
    }
    if (kind == "span_entered" || kind == "span_exited" || kind == "span_cloned" || kind == "span_dropped") {
        const auto [id] = object("id");
        return span_id_event(kind, span_id(id, "id"));
    }
    if (kind == "values_recorded") {
        const auto [id, vals] = object("id", "values");
        values_recorded e;
        e.id = span_id(id, "id");
        e.values = values(vals);
        return e;
    }
    if (kind == "new_event") {
        const auto [cs, par, vals] = object("callsite", "parent", "values");
        new_event e;
        e.callsite_id = callsite_id(cs);
        std::tie(e.parent, e.parent_id) = parent(par);
        e.values = values(vals);
        return e;
    }
    r.fail(w, code::unknown_kind,
           "unknown event kind " + quoted(kind) +
               ": expected new_callsite, new_span, follows_from, span_entered, span_exited, span_cloned, "
               "span_dropped, values_recorded or new_event");
}

// ------------------------------------------------------------------------
// tracing-tunnel's serde_json form

value read_tt_value(const reader& r, const jnode& n, const where& w)
{
    const auto [tag, body] = r.tagged(n, w, "value type");
    const where at = w.child(tag);
    if (tag == "bool")
        return r.bool_of(*body, at);
    if (tag == "int") {
        const auto d = r.integer_text(*body, at, false);
        if (!reader::fits_i128(d))
            r.fail(at, code::out_of_range, "does not fit in a signed 128-bit integer");
        const i128 v = reader::to_i128(d);
        if (v >= std::numeric_limits<std::int64_t>::min() && v <= std::numeric_limits<std::int64_t>::max())
            return static_cast<std::int64_t>(v);
        return v;
    }
    if (tag == "u_int") {
        const auto d = r.integer_text(*body, at, false);
        if (d.negative && d.magnitude != 0)
            r.fail(at, code::out_of_range, "negative, expected an unsigned integer");
        if (d.overflow)
            r.fail(at, code::out_of_range, "does not fit in an unsigned 128-bit integer");
        if (d.magnitude <= std::numeric_limits<std::uint64_t>::max())
            return static_cast<std::uint64_t>(d.magnitude);
        return d.magnitude;
    }
    if (tag == "float") {
        if (body->k == jnode::kind::null)
            r.fail(at, code::wrong_type, "float is null: serde_json writes NaN and infinities as null, the value is lost");
        return r.number_as_double(r.expect(*body, jnode::kind::number, at, "a number"), at);
    }
    if (tag == "string")
        return r.string_of(*body, at);
    if (tag == "object")
        return debug_text{r.string_of(*body, at)};
    if (tag == "error") {
        // {"message": ..., "source": <error> | null}, nested once per source.
        error_chain chain;
        const jnode* cur = body;
        where cur_at = at;
        std::deque<where> hops;  // keeps each step's `where` at a stable address for the paths below it
        while (cur != nullptr) {
            r.expect(*cur, jnode::kind::object, cur_at, "an error object {\"message\", \"source\"}");
            const auto [message, source] = r.members(*cur, cur_at, std::array{"message"sv, "source"sv}, false, true);
            chain.chain.push_back(r.string_of(r.required(message, cur_at, "message"), cur_at.child("message")));
            hops.push_back(cur_at);
            cur_at = hops.back().child("source");
            cur = source;
        }
        return chain;
    }
    r.fail(at, code::unknown_kind,
           "unknown value type " + quoted(tag) + ": expected bool, int, u_int, float, string, object or error");
}

field_values read_tt_values(const reader& r, const jnode& n, const where& w)
{
    r.expect(n, jnode::kind::object, w, "an object of name: value");
    field_values out;
    out.reserve(n.items.size());
    for (std::size_t i = 0; i < n.items.size(); ++i)
        out.emplace_back(n.keys[i], read_tt_value(r, n.items[i], w.child(n.keys[i])));
    return out;
}

event read_tt_event(const reader& r, const jnode& root, const where& line)
{
    if (root.k != jnode::kind::object)
        r.fail(line, code::not_an_object, "an event line is a JSON object, found " + std::string(reader::type_name(root)));
    const auto [kind, body_ptr] = r.tagged(root, line, "event kind");
    const jnode& body = *body_ptr;
    const where w = line.child(kind);
    auto object = [&](auto... names) {
        r.expect(body, jnode::kind::object, w, "an object");
        return r.members(body, w, std::array{std::string_view(names)...}, false, true);
    };
    auto id_of = [&](const jnode* n, std::string_view key) {
        return r.u64_of(r.required(n, w, key), w.child(key), false);
    };
    auto values = [&](const jnode* n) { return read_tt_values(r, r.required(n, w, "values"), w.child("values")); };

    if (kind == "new_call_site") {
        const auto [id, k, name, target, lvl, module_path, file, line_no, fields] =
            object("id", "kind", "name", "target", "level", "module_path", "file", "line", "fields");
        callsite cs;
        cs.id = id_of(id, "id");
        cs.kind = r.callsite_kind_of(r.required(k, w, "kind"), w.child("kind"));
        cs.name = r.string_of(r.required(name, w, "name"), w.child("name"));
        cs.target = r.string_of(r.required(target, w, "target"), w.child("target"));
        cs.level = r.level_of(r.required(lvl, w, "level"), w.child("level"));
        if (module_path)
            cs.module_path = r.string_of(*module_path, w.child("module_path"));
        if (file)
            cs.file = r.string_of(*file, w.child("file"));
        if (line_no)
            cs.line = r.u32_number_of(*line_no, w.child("line"));
        cs.fields = r.strings_of(r.required(fields, w, "fields"), w.child("fields"));
        return new_callsite{std::move(cs)};
    }
    if (kind == "new_span") {
        const auto [id, parent_id, metadata_id, vals] = object("id", "parent_id", "metadata_id", "values");
        new_span e;
        e.id = id_of(id, "id");
        e.callsite_id = id_of(metadata_id, "metadata_id");
        if (parent_id) {
            e.parent = parent_mode::explicit_span;
            e.parent_id = id_of(parent_id, "parent_id");
        }
        e.values = values(vals);
        return e;
    }
    if (kind == "follows_from") {
        const auto [id, cause] = object("id", "follows_from");
        return follows_from{id_of(id, "id"), id_of(cause, "follows_from")};
    }
    if (kind == "span_entered" || kind == "span_exited" || kind == "span_cloned" || kind == "span_dropped") {
        const auto [id] = object("id");
        return span_id_event(kind, id_of(id, "id"));
    }
    if (kind == "values_recorded") {
        const auto [id, vals] = object("id", "values");
        values_recorded e;
        e.id = id_of(id, "id");
        e.values = values(vals);
        return e;
    }
    if (kind == "new_event") {
        const auto [metadata_id, parent, vals] = object("metadata_id", "parent", "values");
        new_event e;
        e.callsite_id = id_of(metadata_id, "metadata_id");
        if (parent) {
            e.parent = parent_mode::explicit_span;
            e.parent_id = id_of(parent, "parent");
        }
        e.values = values(vals);
        return e;
    }
    r.fail(w, code::unknown_kind,
           "unknown event kind " + quoted(kind) +
               ": expected new_call_site, new_span, follows_from, span_entered, span_exited, span_cloned, "
               "span_dropped, values_recorded or new_event");
}

// ------------------------------------------------------------------------
// The stream header

// nullopt for a readable header; the error otherwise.
std::optional<json_error> header_error(std::string_view line)
{
    const decode_result res = decode_line(line, [](const reader& r, const jnode& root, const where& w) -> event {
        if (root.k != jnode::kind::object)
            r.fail(w, code::not_a_header, "a stream header is a JSON object, found " + std::string(reader::type_name(root)));
        // Other members are allowed: room for descriptive extras without a format change.
        const auto [kind, format] = r.members(root, w, std::array{"tracetunnel"sv, "format"sv}, false);
        if (kind == nullptr || kind->k != jnode::kind::string || kind->text != "events")
            r.fail(w.child("tracetunnel"), code::not_a_header,
                   "not a tracetunnel event stream header: expected {\"tracetunnel\":\"events\",\"format\":N}");
        const where fw = w.child("format");
        const jnode& f = r.expect(r.required(format, w, "format"), jnode::kind::number, fw, "an integer");
        const auto d = reader::parse_decimal(f.text);
        if (!d.valid)
            r.fail(fw, code::wrong_type, "expected an integer, found " + f.text);
        if (d.negative || d.magnitude == 0)
            r.fail(fw, code::out_of_range, "format versions start at 1");
        if (d.overflow || d.magnitude > static_cast<u128>(event_format_version))
            r.fail(fw, code::unsupported_version,
                   "format " + f.text + " is newer than this reader, which reads format " +
                       std::to_string(event_format_version) + " and older; upgrade tracetunnel");
        return span_entered{};  // a placeholder: only success matters
    });
    if (res)
        return std::nullopt;
    json_error e = res.error();
    if (e.code == code::invalid_json || e.code == code::invalid_utf8)
        e.message = "not a stream header: " + e.message;
    return e;
}

}  // namespace

// ------------------------------------------------------------------------
// Public API

std::string_view to_string(json_error_code c) noexcept
{
    switch (c) {
    case code::invalid_json: return "invalid_json";
    case code::invalid_utf8: return "invalid_utf8";
    case code::not_an_object: return "not_an_object";
    case code::unknown_kind: return "unknown_kind";
    case code::missing_field: return "missing_field";
    case code::unknown_field: return "unknown_field";
    case code::duplicate_field: return "duplicate_field";
    case code::wrong_type: return "wrong_type";
    case code::out_of_range: return "out_of_range";
    case code::invalid_value: return "invalid_value";
    case code::unsupported_version: return "unsupported_version";
    case code::not_a_header: return "not_a_header";
    case code::internal_error: return "internal_error";
    }
    return "unknown";
}

std::string to_string(const json_error& e)
{
    std::string out(to_string(e.code));
    out += " at byte ";
    out += std::to_string(e.offset);
    if (!e.path.empty()) {
        out += " (";
        out += e.path;
        out += ')';
    }
    out += ": ";
    out += e.message;
    return out;
}

std::string to_json_line(const event& ev)
{
    std::string out;
    append_event(out, ev);
    return out;
}

void to_json_line(const event& ev, std::string& out)
{
    append_event(out, ev);
}

decode_result event_from_json_line(std::string_view line)
{
    return decode_line(line, read_event);
}

decode_result event_from_tracing_tunnel_json(std::string_view line)
{
    return decode_line(line, read_tt_event);
}

std::string stream_header()
{
    return "{\"tracetunnel\":\"events\",\"format\":" + std::to_string(event_format_version) + "}";
}

bool is_stream_header(std::string_view line) noexcept
{
    try {
        const auto err = header_error(line);
        return !err || err->code == code::unsupported_version;
    } catch (...) {
        return false;
    }
}

std::optional<json_error> check_stream_header(std::string_view line)
{
    return header_error(line);
}

}  // namespace tt::model
