// Persisted receiver state on disk: codecs, validation, crash-safe files.
//
// The metadata file and the version-1 spans file are JSON, written and read
// through the event-line codec (event_json.hpp), so they follow exactly its
// conventions (ids as strings, 128-bit integers, NaN payloads, error chains):
// a call site is the body of a new_callsite line, a span's values the values
// of a values_recorded line. The version-2 spans file is binary (see "binary
// spans file" below and docs/FORMAT.md): 100k spans are 21 MB of JSON read
// through a DOM, or 4 MB of varints and tables.
#include <tracetunnel/event_json.hpp>
#include <tracetunnel/state_file.hpp>

#include <boost/crc.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cctype>
#include <ctime>
#include <exception>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <sys/stat.h>
#include <type_traits>
#include <unordered_map>
#include <unistd.h>
#include <variant>

namespace tt::state {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr std::uint64_t top_bit = std::uint64_t{1} << 63;
constexpr std::string_view metadata_suffix = ".metadata.json";
constexpr std::string_view spans_suffix = ".spans.bin";
constexpr std::string_view spans_json_suffix = ".spans.json";
constexpr std::string_view plugin_state_suffix = ".plugin-state";
constexpr std::string_view plugin_state_magic = "tracetunnel-plugin-state";
// The plugin-state file's own header version (its format did not change with
// the binary spans file).
constexpr int plugin_state_version = 1;
// The newest version of each JSON file this build reads. The metadata schema
// is unchanged in version 2, but it is written as 2 so that an older build
// refuses a folder whose spans it cannot see (it knows no .spans.bin)
// instead of starting those lineages empty.
constexpr int metadata_json_version = 2;
constexpr int spans_json_version = 1;

std::uint64_t fnv1a64(const std::uint8_t* p, std::size_t n) noexcept
{
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (std::size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
constexpr std::size_t max_stem = 200;

// A decode failure inside one file; the caller adds the file name.
struct fault {
    state_errc code;
    std::string where;
    std::string message;
};

std::string hex_id(std::uint64_t v)
{
    char buf[19] = "0x";
    for (int i = 0; i < 16; ++i)
        buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xF];
    return std::string(buf, 18);
}

std::string dec(std::uint64_t v) { return std::to_string(v); }

std::string fmt_crc(std::uint32_t v)
{
    char buf[11] = "0x";
    for (int i = 0; i < 8; ++i)
        buf[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 0xF];
    return std::string(buf, 10);
}

bool valid_utf8(std::string_view s) noexcept
{
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t n = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= s.size())
            return false;
        for (std::size_t k = 1; k <= n; ++k) {
            const auto d = static_cast<unsigned char>(s[i + k]);
            if ((d & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

// --- writing ---------------------------------------------------------------

json::value callsite_json(const model::callsite& site)
{
    std::string line = model::to_json_line(model::new_callsite{site});
    return json::parse(line).as_object().at("new_callsite");
}

json::value values_json(const model::field_values& values)
{
    std::string line = model::to_json_line(model::values_recorded{1, values});
    return json::parse(line).as_object().at("values_recorded").as_object().at("values");
}

std::string header(std::string_view kind, int version, std::string_view lineage)
{
    std::string out = "{\n\"magic\":";
    out += json::serialize(json::string(state_magic));
    out += ",\n\"kind\":";
    out += json::serialize(json::string(kind));
    out += ",\n\"version\":" + std::to_string(version) + ",\n\"lineage\":";
    // The lineage may be any bytes; JSON needs UTF-8. Stored escaped when not.
    out += json::serialize(json::string(lineage));
    out += ",\n";
    return out;
}

// --- reading helpers ---------------------------------------------------------

std::string ptr_escape(std::string_view s)
{
    std::string out;
    for (char c : s) {
        if (c == '~')
            out += "~0";
        else if (c == '/')
            out += "~1";
        else
            out += c;
    }
    return out;
}

const char* type_name(const json::value& v)
{
    switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
    }
    return "?";
}

// Checks that `obj` has exactly the members `names`.
std::optional<fault> exact_members(const json::object& obj, std::initializer_list<std::string_view> names,
                                   const std::string& where)
{
    for (auto name : names)
        if (!obj.contains(name))
            return fault{state_errc::missing_field, where + "/" + ptr_escape(name),
                         "missing member \"" + std::string(name) + "\""};
    for (const auto& kv : obj)
        if (std::find(names.begin(), names.end(), std::string_view(kv.key())) == names.end())
            return fault{state_errc::unknown_field, where + "/" + ptr_escape(kv.key()),
                         "unknown member \"" + std::string(kv.key()) + "\""};
    return std::nullopt;
}

// A 64-bit integer written as a decimal string (JSON numbers lose precision
// past 2^53); a leading '-' only for signed targets.
template <class T>
std::optional<fault> read_decimal(const json::value& v, const std::string& where, T& out)
{
    if (!v.is_string())
        return fault{state_errc::wrong_type, where, std::string("expected a decimal string, found ") + type_name(v)};
    const auto& s = v.get_string();
    const char* b = s.data();
    const char* e = b + s.size();
    const char* digits = (std::is_signed_v<T> && b != e && *b == '-') ? b + 1 : b;
    if (digits == e || *digits < '0' || *digits > '9')
        return fault{state_errc::invalid_value, where, "\"" + std::string(s) + "\" is not a decimal number"};
    auto [p, ec] = std::from_chars(b, e, out);
    if (ec == std::errc::result_out_of_range)
        return fault{state_errc::invalid_value, where, "\"" + std::string(s) + "\" does not fit in 64 bits"};
    if (ec != std::errc{} || p != e)
        return fault{state_errc::invalid_value, where, "\"" + std::string(s) + "\" is not a decimal number"};
    return std::nullopt;
}

std::optional<fault> read_u64(const json::value& v, const std::string& where, std::uint64_t& out)
{
    return read_decimal(v, where, out);
}

std::optional<fault> read_i64(const json::value& v, const std::string& where, std::int64_t& out)
{
    return read_decimal(v, where, out);
}

std::optional<fault> read_callsite_id(const json::value& v, const std::string& where, std::uint64_t& out)
{
    if (!v.is_string())
        return fault{state_errc::wrong_type, where, std::string("expected \"0x...\", found ") + type_name(v)};
    const auto& s = v.get_string();
    if (s.size() < 3 || s.size() > 18 || s[0] != '0' || s[1] != 'x')
        return fault{state_errc::invalid_value, where, "\"" + std::string(s) + "\" is not a call-site id (0x + 1-16 hex digits)"};
    auto [p, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), out, 16);
    if (ec != std::errc{} || p != s.data() + s.size())
        return fault{state_errc::invalid_value, where, "\"" + std::string(s) + "\" is not a call-site id (0x + 1-16 hex digits)"};
    return std::nullopt;
}

state_errc code_of(model::json_error_code c)
{
    using J = model::json_error_code;
    switch (c) {
    case J::missing_field: return state_errc::missing_field;
    case J::unknown_field:
    case J::duplicate_field: return state_errc::unknown_field;
    case J::wrong_type: return state_errc::wrong_type;
    case J::internal_error: return state_errc::internal_error;
    default: return state_errc::invalid_value;
    }
}

// Re-roots an event-line error path: "/new_callsite/x" under `where`.
fault from_json_error(const model::json_error& e, std::string_view prefix, const std::string& where)
{
    std::string path = e.path;
    if (path.compare(0, prefix.size(), prefix) == 0)
        path = where + path.substr(prefix.size());
    else
        path = where;
    std::string msg = e.message;
    return fault{code_of(e.code), path, msg};
}

std::optional<fault> read_values(const json::value& v, const std::string& where, model::field_values& out)
{
    if (!v.is_array())
        return fault{state_errc::wrong_type, where, std::string("expected an array, found ") + type_name(v)};
    json::object wrap;
    json::object inner;
    inner["id"] = "1";
    inner["values"] = v;
    wrap["values_recorded"] = std::move(inner);
    auto r = model::event_from_json_line(json::serialize(wrap));
    if (!r)
        return from_json_error(r.error(), "/values_recorded/values", where);
    out = std::move(std::get<model::values_recorded>(r.value()).values);
    return std::nullopt;
}

std::optional<fault> read_callsite(const json::value& v, const std::string& where, model::callsite& out)
{
    if (!v.is_object())
        return fault{state_errc::wrong_type, where, std::string("expected an object, found ") + type_name(v)};
    json::object wrap;
    wrap["new_callsite"] = v;
    auto r = model::event_from_json_line(json::serialize(wrap));
    if (!r)
        return from_json_error(r.error(), "/new_callsite", where);
    out = std::move(std::get<model::new_callsite>(r.value()).site);
    return std::nullopt;
}

// Parses the text and checks magic, kind, version, lineage. On success `obj`
// is the top-level object.
std::optional<fault> read_header(std::string_view text, std::string_view kind, int max_version,
                                 std::string_view lineage, json::value& root)
{
    json::stream_parser p;
    boost::system::error_code ec;
    std::size_t n = p.write(text.data(), text.size(), ec);
    if (!ec)
        p.finish(ec);
    if (ec)
        return fault{state_errc::invalid_json, "",
                     "not valid JSON at byte " + std::to_string(std::min(n, text.size())) + " of " +
                         std::to_string(text.size()) + ": " + ec.message()};
    root = p.release();
    if (!root.is_object())
        return fault{state_errc::wrong_magic, "", "not a tracetunnel state file (not a JSON object)"};
    const auto& obj = root.get_object();
    const auto* magic = obj.if_contains("magic");
    if (!magic || !magic->is_string() || magic->get_string() != state_magic)
        return fault{state_errc::wrong_magic, "/magic",
                     "not a tracetunnel state file (\"magic\" is not \"" + std::string(state_magic) + "\")"};
    const auto* k = obj.if_contains("kind");
    if (!k)
        return fault{state_errc::missing_field, "/kind", "missing member \"kind\""};
    if (!k->is_string())
        return fault{state_errc::wrong_type, "/kind", std::string("expected a string, found ") + type_name(*k)};
    if (k->get_string() != kind)
        return fault{state_errc::wrong_kind, "/kind",
                     "a \"" + std::string(k->get_string()) + "\" file where \"" + std::string(kind) + "\" belongs"};
    const auto* ver = obj.if_contains("version");
    if (!ver)
        return fault{state_errc::missing_field, "/version", "missing member \"version\""};
    if (!ver->is_int64() && !ver->is_uint64())
        return fault{state_errc::wrong_type, "/version", std::string("expected an integer, found ") + type_name(*ver)};
    if (ver->is_uint64() || ver->get_int64() > max_version)
        return fault{state_errc::unsupported_version, "/version",
                     "schema version " + json::serialize(*ver) + " is newer than this build reads in a JSON " +
                         std::string(kind) + " file (" + std::to_string(max_version) + ")"};
    if (ver->get_int64() < 1)
        return fault{state_errc::invalid_value, "/version", "schema version " + json::serialize(*ver) + " is not positive"};
    const auto* lin = obj.if_contains("lineage");
    if (!lin)
        return fault{state_errc::missing_field, "/lineage", "missing member \"lineage\""};
    if (!lin->is_string())
        return fault{state_errc::wrong_type, "/lineage", std::string("expected a string, found ") + type_name(*lin)};
    if (lin->get_string() != lineage)
        return fault{state_errc::inconsistent, "/lineage",
                     "the file belongs to lineage \"" + std::string(lin->get_string()) + "\", not \"" +
                         std::string(lineage) + "\""};
    return std::nullopt;
}

std::optional<fault> decode_metadata(std::string_view text, std::string_view lineage, persisted_metadata& out)
{
    json::value root;
    if (auto f = read_header(text, "metadata", metadata_json_version, lineage, root))
        return f;
    const auto& obj = root.get_object();
    if (auto f = exact_members(obj, {"magic", "kind", "version", "lineage", "callsites"}, ""))
        return f;
    const auto& cs = obj.at("callsites");
    if (!cs.is_array())
        return fault{state_errc::wrong_type, "/callsites", std::string("expected an array, found ") + type_name(cs)};
    out.clear();
    std::map<std::uint64_t, std::size_t> seen;
    for (std::size_t i = 0; i < cs.get_array().size(); ++i) {
        const std::string where = "/callsites/" + std::to_string(i);
        model::callsite site;
        if (auto f = read_callsite(cs.get_array()[i], where, site))
            return f;
        auto [it, fresh] = seen.emplace(site.id, i);
        if (!fresh)
            return fault{state_errc::inconsistent, where + "/id",
                         "call site " + hex_id(site.id) + " appears twice (also /callsites/" +
                             std::to_string(it->second) + ")"};
        out.push_back(std::move(site));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return std::nullopt;
}

std::optional<fault> decode_spans_json(std::string_view text, std::string_view lineage, persisted_spans& out)
{
    json::value root;
    if (auto f = read_header(text, "spans", spans_json_version, lineage, root))
        return f;
    const auto& obj = root.get_object();
    if (auto f = exact_members(obj, {"magic", "kind", "version", "lineage", "next_id", "spans"}, ""))
        return f;
    if (auto f = read_u64(obj.at("next_id"), "/next_id", out.next_id))
        return f;
    const auto& arr = obj.at("spans");
    if (!arr.is_array())
        return fault{state_errc::wrong_type, "/spans", std::string("expected an array, found ") + type_name(arr)};
    out.spans.clear();
    for (std::size_t i = 0; i < arr.get_array().size(); ++i) {
        const std::string where = "/spans/" + std::to_string(i);
        const auto& v = arr.get_array()[i];
        if (!v.is_object())
            return fault{state_errc::wrong_type, where, std::string("expected an object, found ") + type_name(v)};
        const auto& so = v.get_object();
        if (auto f = exact_members(so, {"id", "callsite", "parent", "ref_count", "start_ns", "values", "follows_from"},
                                   where))
            return f;
        persisted_span s;
        if (auto f = read_u64(so.at("id"), where + "/id", s.id))
            return f;
        if (auto f = read_callsite_id(so.at("callsite"), where + "/callsite", s.callsite_id))
            return f;
        if (auto f = read_u64(so.at("parent"), where + "/parent", s.parent_id))
            return f;
        if (auto f = read_u64(so.at("ref_count"), where + "/ref_count", s.ref_count))
            return f;
        std::int64_t ns = 0;
        if (auto f = read_i64(so.at("start_ns"), where + "/start_ns", ns))
            return f;
        s.start = clock::time_point(std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds(ns)));
        model::field_values values;
        if (auto f = read_values(so.at("values"), where + "/values", values))
            return f;
        s.values = values;
        const auto& ff = so.at("follows_from");
        if (!ff.is_array())
            return fault{state_errc::wrong_type, where + "/follows_from",
                         std::string("expected an array, found ") + type_name(ff)};
        for (std::size_t j = 0; j < ff.get_array().size(); ++j) {
            std::uint64_t cause = 0;
            if (auto f = read_u64(ff.get_array()[j], where + "/follows_from/" + std::to_string(j), cause))
                return f;
            s.follows_from.push_back(cause);
        }
        out.spans.push_back(std::move(s));
    }
    return std::nullopt;
}

// --- binary spans file (format version 2) ----------------------------------
//
// Header, 28 bytes, little-endian: magic (8 bytes, bin_magic), u32 version,
// u32 kind (2 = spans), u64 body length, u32 CRC-32C of the body. Body:
// lineage (string), next_id (varint), the field-name table (varint count,
// strings), the call-site table (varint count, u64 each), then the spans
// (varint count, records). Strings are a varint byte length and UTF-8 bytes.
// A span record: id, call-site table index, parent, ref_count (varints),
// start_ns (i64), values (varint count; each a name-table index, a tag byte,
// the payload), follows_from (varint count, varints). The tables are why a
// span costs ~45 bytes instead of ~210: names and call-site ids repeat.

constexpr unsigned char bin_magic[8] = {0x89, 'T', 'T', 'S', 'T', 'A', 'T', 'E'};
constexpr std::size_t bin_header_size = 28;
constexpr std::uint32_t bin_kind_metadata = 1;  // reserved: the metadata file stays JSON
constexpr std::uint32_t bin_kind_spans = 2;
// The least bytes a span record can take (7 single-byte varints + start_ns),
// so a count read from the file never reserves more than the file can hold.
constexpr std::size_t min_span_record = 14;

enum class vtag : unsigned char { boolean = 1, i64, u64, i128, u128, f64, str, debug, error };

bool is_bin_spans(std::string_view text) noexcept
{
    return text.size() >= sizeof bin_magic && std::memcmp(text.data(), bin_magic, sizeof bin_magic) == 0;
}

std::uint32_t crc32c_soft(const unsigned char* p, std::size_t n) noexcept
{
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
    crc.process_bytes(p, n);
    return crc.checksum();
}

#if defined(__x86_64__)
// SSE4.2 has CRC-32C in hardware: ~10x the table-driven loop, which would
// otherwise be a tenth of S5's budget.
__attribute__((target("sse4.2"))) std::uint32_t crc32c_hw(const unsigned char* p, std::size_t n) noexcept
{
    std::uint64_t c = 0xFFFFFFFFu;
    for (; n >= 8; p += 8, n -= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
    }
    auto c32 = static_cast<std::uint32_t>(c);
    for (; n > 0; ++p, --n)
        c32 = __builtin_ia32_crc32qi(c32, *p);
    return c32 ^ 0xFFFFFFFFu;
}
#endif

std::uint32_t crc32c(const unsigned char* p, std::size_t n) noexcept
{
#if defined(__x86_64__)
    static const bool hw = __builtin_cpu_supports("sse4.2");
    if (hw)
        return crc32c_hw(p, n);
#endif
    return crc32c_soft(p, n);
}

void put_le(char* at, std::uint64_t v, int bytes) noexcept
{
    if (std::endian::native == std::endian::little && bytes == 8) {  // start times, doubles: one move
        std::memcpy(at, &v, 8);
        return;
    }
    for (int i = 0; i < bytes; ++i)
        at[i] = static_cast<char>(v >> (8 * i));
}

std::uint64_t get_le(const unsigned char* at, int bytes) noexcept
{
    std::uint64_t v = 0;
    if (std::endian::native == std::endian::little && bytes == 8) {
        std::memcpy(&v, at, 8);
        return v;
    }
    for (int i = 0; i < bytes; ++i)
        v |= std::uint64_t{at[i]} << (8 * i);
    return v;
}

struct bin_out {
    std::string& s;
    void varint(std::uint64_t v)
    {
        char buf[10];
        std::size_t n = 0;
        for (; v >= 0x80; v >>= 7)
            buf[n++] = static_cast<char>((v & 0x7F) | 0x80);
        buf[n++] = static_cast<char>(v);
        s.append(buf, n);
    }
    void fixed(std::uint64_t v, int bytes = 8)
    {
        char buf[8];
        put_le(buf, v, bytes);
        s.append(buf, static_cast<std::size_t>(bytes));
    }
    void str(std::string_view t)
    {
        varint(t.size());
        s.append(t);
    }
    // A value in the packed form (tracetunnel/persisted.hpp), as value() writes it.
    void packed_value(const packed::item& it)
    {
        const char* p = it.payload.data();
        auto u64 = [&] {
            std::uint64_t x;
            std::memcpy(&x, p, 8);
            return x;
        };
        const unsigned char type = it.head & packed::type_mask;
        s += static_cast<char>(type + 1);  // the file's tags are the variant indices + 1
        switch (type) {
        case 0: s += static_cast<char>(*p != 0 ? 1 : 0); break;
        case 1: {
            const std::uint64_t u = u64();
            varint((u << 1) ^ ((u >> 63) != 0 ? ~std::uint64_t{0} : 0));
            break;
        }
        case 2: varint(u64()); break;
        case 3:
        case 4: {
            model::u128 x;
            std::memcpy(&x, p, 16);
            fixed(static_cast<std::uint64_t>(x));
            fixed(static_cast<std::uint64_t>(x >> 64));
            break;
        }
        case 5: fixed(u64()); break;
        default: {
            // Strings and error chains: lengths become varints, bytes stay.
            const char* end = p + it.payload.size();
            auto one = [&] {
                const std::uint64_t n = packed::take_len(p);
                str(std::string_view(p, static_cast<std::size_t>(n)));
                p += n;
            };
            if (type == 8) {
                const std::uint64_t n = packed::take_len(p);
                varint(n);
                for (std::uint64_t k = 0; k < n && p < end; ++k)
                    one();
            } else {
                one();
            }
            break;
        }
        }
    }
};

// Table indexes for repeated keys (field names, call-site ids): a linear scan
// while the table is small (the usual case: a few call sites), a hash map
// beyond that.
template <class Key>
class interner {
public:
    std::uint64_t index(const Key& k)
    {
        if (last_ < list_.size() && list_[last_] == k)
            return last_;
        // Field names come in the call site's order, over and over: the one
        // after the last, or the first again.
        if (const std::size_t next = last_ + 1 < list_.size() ? last_ + 1 : 0; next < list_.size() && list_[next] == k)
            return last_ = next;
        if (map_.empty()) {
            for (std::size_t i = 0; i < list_.size(); ++i)
                if (list_[i] == k)
                    return last_ = i;
            if (list_.size() < 16) {
                list_.push_back(k);
                return last_ = list_.size() - 1;
            }
            for (std::size_t i = 0; i < list_.size(); ++i)
                map_.emplace(list_[i], i);
        }
        auto [it, fresh] = map_.emplace(k, list_.size());
        if (fresh)
            list_.push_back(k);
        return last_ = it->second;
    }
    const std::vector<Key>& keys() const noexcept { return list_; }

private:
    std::vector<Key> list_;
    std::unordered_map<Key, std::size_t> map_;
    std::size_t last_ = 0;
};

// Reads the body; every read is bounds-checked and says whether it worked.
struct bin_in {
    const unsigned char* p;
    const unsigned char* end;
    std::size_t left() const noexcept { return static_cast<std::size_t>(end - p); }
    // Minimal LEB128 of at most 64 bits (one spelling per number).
    [[gnu::always_inline]] bool varint(std::uint64_t& v) noexcept
    {
        if (p != end && *p < 0x80) {  // most numbers in a file: one byte
            v = *p++;
            return true;
        }
        return varint_long(v);
    }
    bool varint_long(std::uint64_t& v) noexcept
    {
        std::uint64_t r = 0;
        for (unsigned shift = 0; p != end; shift += 7) {
            const unsigned char b = *p++;
            if (shift == 63 && b > 1)
                return false;
            r |= std::uint64_t{b & 0x7Fu} << shift;
            if ((b & 0x80) == 0) {
                if (b == 0 && shift != 0)
                    return false;
                v = r;
                return true;
            }
        }
        return false;
    }
    bool fixed(std::uint64_t& v) noexcept
    {
        if (left() < 8)
            return false;
        v = get_le(p, 8);
        p += 8;
        return true;
    }
    // A string: length, bytes, UTF-8. `what` says which check failed.
    bool str(std::string_view& s, const char*& what) noexcept
    {
        std::uint64_t n = 0;
        if (!varint(n)) {
            what = "unreadable string length";
            return false;
        }
        if (n > left()) {
            what = "a string runs past the end of the body";
            return false;
        }
        s = std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
        p += n;
        if (!valid_utf8(s)) {
            what = "a string is not valid UTF-8";
            return false;
        }
        return true;
    }
};

std::string span_where(std::size_t i) { return "/spans/" + std::to_string(i); }

// One span's values in the packed form, built in a buffer that keeps its
// size: each write asks for room once, then writes through a pointer (a
// string's append per piece was most of the decoder's cost per value).
struct packed_out {
    std::string buf;
    std::size_t len = 0;
    char* room(std::size_t n)
    {
        if (buf.size() - len < n)
            buf.resize(std::max(buf.size() * 2, len + n));
        return buf.data() + len;
    }
    void done(const char* w) noexcept { len = static_cast<std::size_t>(w - buf.data()); }
    std::string_view bytes() const noexcept { return {buf.data(), len}; }
};

// One value's tag and payload, appended to `out` in the packed form (head
// byte, name, payload; tracetunnel/persisted.hpp); false with `why` set when
// it cannot be read (the caller names where: a path is built only for a bad
// file).
bool read_bin_value(bin_in& in, std::string_view name, packed_out& out, std::string& why)
{
    const char* what = "the value runs past the end of the body or is unreadable";
    if (in.left() == 0) {
        why = what;
        return false;
    }
    const unsigned char tag = *in.p++;
    // The model::value variant index of a file tag (1-9) is tag - 1. Room
    // for the head and `payload` more bytes; returns where the payload goes.
    auto head = [&](std::size_t payload) {
        char* w = out.room(1 + 9 + name.size() + payload);
        *w++ = static_cast<char>((tag - 1) | packed::by_name);
        w = packed::put_len(w, name.size());
        std::memcpy(w, name.data(), name.size());
        return w + name.size();
    };
    auto raw = [&](std::uint64_t x) {
        char* w = head(8);
        std::memcpy(w, &x, 8);
        out.done(w + 8);
    };
    std::uint64_t a = 0, b = 0;
    std::string_view s;
    switch (static_cast<vtag>(tag)) {
    case vtag::boolean: {
        if (in.left() == 0)
            break;
        if (*in.p > 1) {
            why = "a bool byte is " + std::to_string(*in.p) + ", not 0 or 1";
            return false;
        }
        char* w = head(1);
        *w++ = static_cast<char>(*in.p++);
        out.done(w);
        return true;
    }
    case vtag::i64:
        if (!in.varint(a))
            break;
        raw((a >> 1) ^ (~(a & 1) + 1));
        return true;
    case vtag::u64:
        if (!in.varint(a))
            break;
        raw(a);
        return true;
    case vtag::i128:
    case vtag::u128: {
        if (!in.fixed(a) || !in.fixed(b))
            break;
        const model::u128 u = (model::u128{b} << 64) | a;
        char* w = head(16);
        std::memcpy(w, &u, 16);
        out.done(w + 16);
        return true;
    }
    case vtag::f64:
        if (!in.fixed(a))
            break;
        raw(a);
        return true;
    case vtag::str:
    case vtag::debug: {
        if (!in.str(s, what))
            break;
        char* w = packed::put_len(head(9 + s.size()), s.size());
        std::memcpy(w, s.data(), s.size());
        out.done(w + s.size());
        return true;
    }
    case vtag::error: {
        if (!in.varint(a) || a > in.left()) {
            what = "unreadable error-chain length";
            break;
        }
        out.done(packed::put_len(head(9), a));
        for (std::uint64_t k = 0; k < a; ++k) {
            if (!in.str(s, what)) {
                why = what;
                return false;
            }
            char* w = packed::put_len(out.room(9 + s.size()), s.size());
            std::memcpy(w, s.data(), s.size());
            out.done(w + s.size());
        }
        return true;
    }
    default:
        why = "unknown value type " + std::to_string(tag) +
              " (1-9: bool, i64, u64, i128, u128, f64, str, debug, error)";
        return false;
    }
    why = what;
    return false;
}

std::optional<fault> decode_spans_bin(std::string_view text, std::string_view lineage, persisted_spans& out)
{
    const auto* b = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    if (n > 0 && std::memcmp(b, bin_magic, std::min(n, sizeof bin_magic)) != 0)
        return fault{state_errc::wrong_magic, "", "not a tracetunnel binary spans file (no magic)"};
    if (n < bin_header_size)
        return fault{state_errc::truncated, "",
                     "only " + std::to_string(n) + " bytes, shorter than the " + std::to_string(bin_header_size) +
                         "-byte header"};
    const auto version = get_le(b + 8, 4);
    if (version > static_cast<std::uint64_t>(state_format_version))
        return fault{state_errc::unsupported_version, "/version",
                     "schema version " + std::to_string(version) + " is newer than this build reads (" +
                         std::to_string(state_format_version) + ")"};
    if (version < 2)
        return fault{state_errc::invalid_value, "/version",
                     "binary schema version " + std::to_string(version) + ": the binary form begins at 2"};
    const auto kind = get_le(b + 12, 4);
    if (kind == bin_kind_metadata)
        return fault{state_errc::wrong_kind, "/kind", "a \"metadata\" file where \"spans\" belongs"};
    if (kind != bin_kind_spans)
        return fault{state_errc::invalid_value, "/kind", "unknown file kind " + std::to_string(kind)};
    const std::uint64_t body = get_le(b + 16, 8);
    if (body > n - bin_header_size)
        return fault{state_errc::truncated, "",
                     "the header gives a body of " + std::to_string(body) + " bytes, the file holds " +
                         std::to_string(n - bin_header_size)};
    if (body < n - bin_header_size)
        return fault{state_errc::invalid_value, "",
                     std::to_string(n - bin_header_size - body) + " bytes after the body of " + std::to_string(body) +
                         " bytes the header gives"};
    const auto want = static_cast<std::uint32_t>(get_le(b + 24, 4));
    if (const auto got = crc32c(b + bin_header_size, body); got != want)
        return fault{state_errc::checksum_mismatch, "",
                     fmt_crc(got) + " is the body's CRC-32C, the header says " + fmt_crc(want) +
                         ": the file was changed or torn"};

    bin_in in{b + bin_header_size, b + n};
    const char* what = nullptr;
    std::string_view s;
    if (!in.str(s, what))
        return fault{state_errc::invalid_value, "/lineage", what};
    if (s != lineage)
        return fault{state_errc::inconsistent, "/lineage",
                     "the file belongs to lineage \"" + std::string(s) + "\", not \"" + std::string(lineage) + "\""};
    if (!in.varint(out.next_id))
        return fault{state_errc::invalid_value, "/next_id", "unreadable number"};
    std::uint64_t count = 0;
    if (!in.varint(count) || count > in.left())
        return fault{state_errc::invalid_value, "/names", "unreadable name-table length"};
    std::vector<std::string_view> names;  // into `text`
    names.reserve(static_cast<std::size_t>(count));
    for (std::uint64_t i = 0; i < count; ++i) {
        if (!in.str(s, what))
            return fault{state_errc::invalid_value, "/names/" + std::to_string(i), what};
        names.push_back(s);
    }
    if (!in.varint(count) || count > in.left() / 8)
        return fault{state_errc::invalid_value, "/callsites", "unreadable call-site table length"};
    std::vector<std::uint64_t> sites(static_cast<std::size_t>(count));
    for (auto& id : sites)
        in.fixed(id);  // (the length check above covers every entry)
    if (!in.varint(count) || count > in.left() / min_span_record)
        return fault{state_errc::invalid_value, "/spans", "unreadable span count"};
    out.spans.clear();
    out.spans.reserve(static_cast<std::size_t>(count));
    std::string why;
    packed_out packed_bytes;  // one span's values, reused
    for (std::size_t i = 0; i < count; ++i) {
        persisted_span& sp = out.spans.emplace_back();
        std::uint64_t k = 0, start = 0;
        if (!in.varint(sp.id))
            return fault{state_errc::invalid_value, span_where(i) + "/id", "unreadable number"};
        if (!in.varint(k))
            return fault{state_errc::invalid_value, span_where(i) + "/callsite", "unreadable number"};
        if (k >= sites.size())
            return fault{state_errc::invalid_value, span_where(i) + "/callsite",
                         "call-site index " + std::to_string(k) + " is not in the table of " +
                             std::to_string(sites.size())};
        sp.callsite_id = sites[static_cast<std::size_t>(k)];
        if (!in.varint(sp.parent_id))
            return fault{state_errc::invalid_value, span_where(i) + "/parent", "unreadable number"};
        if (!in.varint(sp.ref_count))
            return fault{state_errc::invalid_value, span_where(i) + "/ref_count", "unreadable number"};
        if (!in.fixed(start))
            return fault{state_errc::invalid_value, span_where(i) + "/start_ns", "runs past the end of the body"};
        sp.start = clock::time_point(std::chrono::duration_cast<clock::duration>(
            std::chrono::nanoseconds(static_cast<std::int64_t>(start))));
        if (!in.varint(k) || k > in.left() / 3)
            return fault{state_errc::invalid_value, span_where(i) + "/values", "unreadable value count"};
        packed_bytes.len = 0;
        for (std::size_t j = 0; j < k; ++j) {
            std::uint64_t name = 0;
            if (!in.varint(name) || name >= names.size())
                return fault{state_errc::invalid_value, span_where(i) + "/values/" + std::to_string(j),
                             "field-name index " + std::to_string(name) + " is not in the table of " +
                                 std::to_string(names.size())};
            if (!read_bin_value(in, names[static_cast<std::size_t>(name)], packed_bytes, why))
                return fault{state_errc::invalid_value, span_where(i) + "/values/" + std::to_string(j), why};
        }
        sp.values.assign_packed(packed_bytes.bytes(), static_cast<std::size_t>(k));
        if (!in.varint(k) || k > in.left())
            return fault{state_errc::invalid_value, span_where(i) + "/follows_from", "unreadable count"};
        if (k != 0)
            sp.follows_from.resize(static_cast<std::size_t>(k));
        for (std::size_t j = 0; j < k; ++j)
            if (!in.varint(sp.follows_from.data()[j]))
                return fault{state_errc::invalid_value, span_where(i) + "/follows_from/" + std::to_string(j),
                             "unreadable number"};
    }
    if (in.left() != 0)
        return fault{state_errc::invalid_value, "",
                     std::to_string(in.left()) + " bytes after the last span (the span count is " +
                         std::to_string(count) + ")"};
    return std::nullopt;
}

// The cross-table rules (docs/FORMAT.md). `spans` in file order; `metadata`
// (sorted by id, as decode_metadata leaves it) may be null when there is no
// metadata file. Linear or n log n throughout: a file is not trusted to have
// short parent chains or few spans.
std::optional<fault> check_consistency(const persisted_metadata* metadata, const persisted_spans& spans)
{
    if (spans.next_id == 0 || (spans.next_id & top_bit) != 0)
        return fault{state_errc::inconsistent, "/next_id",
                     "next_id " + dec(spans.next_id) + " is not between 1 and 2^63"};
    const auto& v = spans.spans;
    const std::size_t n = v.size();
    // Span id -> the first index holding it. Files are written sorted by id,
    // so a binary search of the spans themselves usually does; otherwise an
    // index sorted by (id, position).
    bool sorted = true;
    for (std::size_t i = 1; i < n && sorted; ++i)
        sorted = v[i - 1].id <= v[i].id;
    std::vector<std::pair<std::uint64_t, std::size_t>> by_id;
    if (!sorted) {
        by_id.reserve(n);
        for (std::size_t i = 0; i < n; ++i)
            by_id.emplace_back(v[i].id, i);
        std::sort(by_id.begin(), by_id.end());
    }
    constexpr std::size_t none = ~std::size_t{0};
    auto first_with = [&](std::uint64_t id) -> std::size_t {
        if (sorted) {
            auto it = std::lower_bound(v.begin(), v.end(), id, [](const persisted_span& s, std::uint64_t x) {
                return s.id < x;
            });
            return it != v.end() && it->id == id ? static_cast<std::size_t>(it - v.begin()) : none;
        }
        auto it = std::lower_bound(by_id.begin(), by_id.end(), std::pair<std::uint64_t, std::size_t>(id, 0));
        return it != by_id.end() && it->first == id ? it->second : none;
    };
    const model::callsite* site = nullptr;
    for (std::size_t i = 0; i < n; ++i) {
        const auto& s = v[i];
        if (s.id == 0 || (s.id & top_bit) != 0)
            return fault{state_errc::inconsistent, span_where(i) + "/id",
                         "span id " + dec(s.id) + " is not between 1 and 2^63"};
        const bool twice = sorted ? i > 0 && v[i - 1].id == s.id : first_with(s.id) != i;
        if (twice)
            return fault{state_errc::inconsistent, span_where(i) + "/id",
                         "span id " + dec(s.id) + " appears twice (also /spans/" + std::to_string(first_with(s.id)) +
                             ")"};
        if (s.id >= spans.next_id)
            return fault{state_errc::inconsistent, span_where(i) + "/id",
                         "span id " + dec(s.id) + " is not below next_id " + dec(spans.next_id)};
        if (s.ref_count == 0)
            return fault{state_errc::inconsistent, span_where(i) + "/ref_count",
                         "span " + dec(s.id) + " has ref_count 0 (a live span has at least one handle)"};
        if (site == nullptr || site->id != s.callsite_id) {
            site = nullptr;
            if (metadata) {
                auto it = std::lower_bound(metadata->begin(), metadata->end(), s.callsite_id,
                                           [](const model::callsite& c, std::uint64_t x) { return c.id < x; });
                if (it != metadata->end() && it->id == s.callsite_id)
                    site = &*it;
            }
        }
        if (site == nullptr)
            return fault{state_errc::inconsistent, span_where(i) + "/callsite",
                         "span " + dec(s.id) + ": call site " + hex_id(s.callsite_id) + " is not in the metadata" +
                             (metadata ? "" : " (no metadata file)")};
        if (site->kind != model::callsite_kind::span)
            return fault{state_errc::inconsistent, span_where(i) + "/callsite",
                         "span " + dec(s.id) + ": call site " + hex_id(s.callsite_id) + " is an event call site"};
        std::size_t j = 0;
        const std::string_view vb = s.values.bytes();
        packed::item item;
        const auto& fields = site->fields;
        for (const char* p = vb.data(); packed::next(p, vb.data() + vb.size(), item); ++j)
            // Values usually come in the call site's field order: that one first.
            if ((j >= fields.size() || fields[j] != item.name) &&
                std::find(fields.begin(), fields.end(), item.name) == fields.end())
                return fault{state_errc::inconsistent, span_where(i) + "/values/" + std::to_string(j),
                             "span " + dec(s.id) + ": field \"" + std::string(item.name) +
                                 "\" is not a field of call site " +
                                 hex_id(s.callsite_id)};
        if (s.parent_id == s.id)
            return fault{state_errc::inconsistent, span_where(i) + "/parent", "span " + dec(s.id) + " is its own parent"};
        if (s.parent_id >= spans.next_id)
            return fault{state_errc::inconsistent, span_where(i) + "/parent",
                         "span " + dec(s.id) + ": parent " + dec(s.parent_id) + " was never assigned (next_id is " +
                             dec(spans.next_id) + ")"};
        for (std::size_t j = 0; j < s.follows_from.size(); ++j)
            if (s.follows_from[j] == 0 || s.follows_from[j] >= spans.next_id)
                return fault{state_errc::inconsistent, span_where(i) + "/follows_from/" + std::to_string(j),
                             "span " + dec(s.id) + ": cause " + dec(s.follows_from[j]) +
                                 " was never assigned (next_id is " + dec(spans.next_id) + ")"};
    }
    // Parent chains among live spans must end (no cycle). Each span is walked
    // once: 1 = on the chain being walked, 2 = its chain ends.
    std::vector<unsigned char> mark(n, 0);
    std::vector<std::size_t> path;
    for (std::size_t i = 0; i < n; ++i) {
        path.clear();
        std::size_t k = i;
        while (k != none && mark[k] != 2) {
            if (mark[k] == 1)
                return fault{state_errc::inconsistent, span_where(i) + "/parent",
                             "span " + dec(v[i].id) + ": its parent chain is a cycle"};
            mark[k] = 1;
            path.push_back(k);
            k = v[k].parent_id == 0 ? none : first_with(v[k].parent_id);  // not live: the chain ends
        }
        for (auto p : path)
            mark[p] = 2;
    }
    return std::nullopt;
}

// --- files -----------------------------------------------------------------

std::string errno_text(int e) { return std::strerror(e); }

// 0 = read, 1 = missing, -1 = error (message in `err`).
int read_file(const fs::path& p, std::string& out, std::string& err)
{
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        err = "cannot open: " + errno_text(errno);
        return -1;
    }
    out.clear();
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_size > 0)
        out.reserve(static_cast<std::size_t>(st.st_size) + 1);
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = "cannot read: " + errno_text(errno);
            ::close(fd);
            return -1;
        }
        if (n == 0)
            break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return 0;
}

bool fsync_dir(const fs::path& dir, std::string& err)
{
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        err = "cannot open folder " + dir.string() + ": " + errno_text(errno);
        return false;
    }
    if (::fsync(fd) != 0 && errno != EINVAL) {
        err = "cannot fsync folder " + dir.string() + ": " + errno_text(errno);
        ::close(fd);
        return false;
    }
    ::close(fd);
    return true;
}

std::optional<state_error> write_atomically(const fs::path& target, std::string_view data)
{
    static std::atomic<unsigned> counter{0};
    const fs::path dir = target.parent_path();
    const fs::path tmp = dir / ("." + target.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                                std::to_string(counter.fetch_add(1)));
    auto fail = [&](std::string msg) {
        ::unlink(tmp.c_str());
        return state_error{state_errc::io_error, target, "", std::move(msg), {}};
    };
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return state_error{state_errc::io_error, target, "",
                           "cannot create " + tmp.string() + ": " + errno_text(errno), {}};
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            ::close(fd);
            return fail("cannot write " + tmp.string() + ": " + errno_text(e));
        }
        done += static_cast<std::size_t>(n);
    }
    // The data and size; the name comes with the folder fsync after the rename.
    if (::fdatasync(fd) != 0) {
        int e = errno;
        ::close(fd);
        return fail("cannot fsync " + tmp.string() + ": " + errno_text(e));
    }
    if (::close(fd) != 0)
        return fail("cannot close " + tmp.string() + ": " + errno_text(errno));
    if (::rename(tmp.c_str(), target.c_str()) != 0)
        return fail("cannot rename " + tmp.string() + " over it: " + errno_text(errno));
    std::string err;
    if (!fsync_dir(dir, err))
        return state_error{state_errc::io_error, target, "", err, {}};
    return std::nullopt;
}

// Files this process made durable (written to a temporary file, fdatasync'd,
// renamed in, the folder fsync'd): path -> the file's identity then. A later
// save of the same bytes to a file that is still that one is a no-op and is
// skipped (see save_lineage_state for why that keeps the ordering).
struct file_identity {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    struct timespec mtime {};
};
struct durable_files {
    std::mutex m;
    std::unordered_map<std::string, file_identity> files;
};
durable_files& durable()
{
    static durable_files d;
    return d;
}

bool identity_of(const fs::path& p, file_identity& id)
{
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0)
        return false;
    id = {st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    return true;
}

bool same_identity(const file_identity& a, const file_identity& b) noexcept
{
    return a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime.tv_sec == b.mtime.tv_sec &&
           a.mtime.tv_nsec == b.mtime.tv_nsec;
}

void remember_durable(const fs::path& p)
{
    file_identity id;
    auto& d = durable();
    std::lock_guard lk(d.m);
    if (identity_of(p, id))
        d.files[p.string()] = id;
    else
        d.files.erase(p.string());
}

// True when `p` is still the file this process made durable and holds `text`.
bool durable_and_same(const fs::path& p, std::string_view text)
{
    file_identity now;
    if (!identity_of(p, now) || static_cast<std::size_t>(now.size) != text.size())
        return false;
    {
        auto& d = durable();
        std::lock_guard lk(d.m);
        auto it = d.files.find(p.string());
        if (it == d.files.end() || !same_identity(it->second, now))
            return false;
    }
    std::string bytes, err;
    return read_file(p, bytes, err) == 0 && bytes == text;
}

// write_atomically unless `p` already is, durably, exactly `text`.
std::optional<state_error> write_if_changed(const fs::path& p, std::string_view text)
{
    if (durable_and_same(p, text))
        return std::nullopt;
    if (auto e = write_atomically(p, text))
        return e;
    remember_durable(p);
    return std::nullopt;
}

std::string utc_stamp()
{
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

// Renames `p` to <p>.corrupt-<stamp>[-N], never replacing a file. Empty on failure.
fs::path move_aside(const fs::path& p, std::string& err)
{
    const std::string base = p.string() + ".corrupt-" + utc_stamp();
    for (int n = 0; n < 1000; ++n) {
        fs::path to = n == 0 ? fs::path(base) : fs::path(base + "-" + std::to_string(n));
        if (::renameat2(AT_FDCWD, p.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
            fsync_dir(p.parent_path(), err);
            err.clear();
            return to;
        }
        if (errno == EEXIST)
            continue;
        if (errno == EINVAL || errno == ENOSYS) {  // a file system without RENAME_NOREPLACE
            struct stat st;
            if (::lstat(to.c_str(), &st) == 0)
                continue;
            if (::rename(p.c_str(), to.c_str()) == 0) {
                fsync_dir(p.parent_path(), err);
                err.clear();
                return to;
            }
        }
        err = "cannot move it aside: " + errno_text(errno);
        return {};
    }
    err = "cannot move it aside: too many earlier copies";
    return {};
}

// Both texts are decoded even when one is bad, so a check reports each.
// nullopt = no such file. Errors name `mpath` / `spath`.
enum class spans_form : std::uint8_t { sniff, binary, json };

load_result decode_pair(std::optional<std::string_view> mtext, std::optional<std::string_view> stext,
                        std::string_view lineage, const fs::path& mpath, const fs::path& spath, spans_form form)
{
    load_result r;
    if (!mtext && !stext)
        return r;  // none
    receiver_state st;
    std::vector<state_error> bad;
    bool metadata_ok = true;
    if (mtext)
        if (auto f = decode_metadata(*mtext, lineage, st.metadata)) {
            bad.push_back({f->code, mpath, f->where, f->message, {}});
            metadata_ok = false;
        }
    if (stext) {
        const bool binary = form == spans_form::binary || (form == spans_form::sniff && is_bin_spans(*stext));
        if (auto f = binary ? decode_spans_bin(*stext, lineage, st.spans) : decode_spans_json(*stext, lineage, st.spans))
            bad.push_back({f->code, spath, f->where, f->message, {}});
        else if (metadata_ok)  // (spans cannot be checked against unreadable metadata)
            if (auto g = check_consistency(mtext ? &st.metadata : nullptr, st.spans))
                bad.push_back({g->code, spath, g->where, g->message, {}});
    }
    if (bad.empty()) {
        auto by_id = [](const auto& a, const auto& b) { return a.id < b.id; };
        if (!std::is_sorted(st.spans.spans.begin(), st.spans.spans.end(), by_id))
            std::sort(st.spans.spans.begin(), st.spans.spans.end(), by_id);
        r.status = load_status::loaded;
        r.state = std::move(st);
        return r;
    }
    r.status = load_status::failed;
    r.errors = std::move(bad);
    return r;
}

load_result load_impl(const fs::path& dir, std::string_view lineage, on_bad_file policy)
{
    load_result r;
    const auto stem = lineage_file_stem(lineage);
    if (!stem) {
        r.status = load_status::failed;
        r.errors.push_back({state_errc::invalid_lineage, dir, "", "invalid lineage name \"" + std::string(lineage) + "\"", {}});
        return r;
    }
    const fs::path mpath = dir / (*stem + std::string(metadata_suffix));
    const fs::path bpath = dir / (*stem + std::string(spans_suffix));
    const fs::path jpath = dir / (*stem + std::string(spans_json_suffix));

    // The binary spans file when there is one; else an older build's JSON
    // one. Both can exist only after a crash between a save's rename of the
    // .bin and its removal of the .json: the .bin is then the newer.
    std::string mtext, stext, err;
    const int mread = read_file(mpath, mtext, err);
    if (mread < 0)
        r.errors.push_back({state_errc::io_error, mpath, "", err, {}});
    fs::path spath = bpath;
    spans_form form = spans_form::binary;
    int sread = read_file(bpath, stext, err);
    if (sread == 1) {
        spath = jpath;
        form = spans_form::json;
        sread = read_file(jpath, stext, err);
    }
    if (sread < 0)
        r.errors.push_back({state_errc::io_error, spath, "", err, {}});
    if (!r.errors.empty()) {
        // Unreadable (permissions, I/O): report, but moving it would not help.
        r.status = load_status::failed;
        return r;
    }
    if (mread == 1 && sread == 1)
        return r;  // none

    load_result decoded = decode_pair(mread == 0 ? std::optional<std::string_view>(mtext) : std::nullopt,
                                      sread == 0 ? std::optional<std::string_view>(stext) : std::nullopt, lineage,
                                      mpath, spath, form);
    if (decoded.status == load_status::loaded)
        return decoded;
    std::vector<state_error> bad = std::move(decoded.errors);
    r.status = load_status::failed;
    std::vector<state_error> move_errors;
    if (policy == on_bad_file::move_aside) {
        // Every form of the lineage's files goes, the stale .json beside a
        // bad .bin too: left alone it would be read next time, old spans
        // coming back.
        for (const fs::path* p : {&mpath, &bpath, &jpath}) {
            struct stat st;
            if (::lstat(p->c_str(), &st) != 0)
                continue;
            std::string merr;
            fs::path to = move_aside(*p, merr);
            if (to.empty()) {
                move_errors.push_back({state_errc::io_error, *p, "", merr, {}});
                continue;
            }
            r.moved_aside.emplace_back(*p, to);
            for (auto& b : bad)
                if (b.file == *p)
                    b.moved_to = to;
        }
    }
    r.errors = std::move(bad);
    r.errors.insert(r.errors.end(), move_errors.begin(), move_errors.end());
    return r;
}

}  // namespace

std::string_view to_string(state_errc code) noexcept
{
    switch (code) {
    case state_errc::io_error: return "io_error";
    case state_errc::invalid_lineage: return "invalid_lineage";
    case state_errc::invalid_json: return "invalid_json";
    case state_errc::wrong_magic: return "wrong_magic";
    case state_errc::wrong_kind: return "wrong_kind";
    case state_errc::unsupported_version: return "unsupported_version";
    case state_errc::missing_field: return "missing_field";
    case state_errc::unknown_field: return "unknown_field";
    case state_errc::wrong_type: return "wrong_type";
    case state_errc::invalid_value: return "invalid_value";
    case state_errc::inconsistent: return "inconsistent";
    case state_errc::internal_error: return "internal_error";
    case state_errc::truncated: return "truncated";
    case state_errc::checksum_mismatch: return "checksum_mismatch";
    }
    return "unknown";
}

std::string to_string(const state_error& e)
{
    std::string out = e.file.string() + ": " + std::string(to_string(e.code));
    if (!e.where.empty())
        out += " at " + e.where;
    out += ": " + e.message;
    if (!e.moved_to.empty())
        out += "; moved aside to " + e.moved_to.string();
    return out;
}

std::optional<std::string> lineage_file_stem(std::string_view lineage)
{
    if (lineage.empty() || !valid_utf8(lineage))
        return std::nullopt;
    std::string out;
    for (std::size_t i = 0; i < lineage.size(); ++i) {
        const auto c = static_cast<unsigned char>(lineage[i]);
        const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                           c == '-' || (c == '.' && i != 0);
        if (plain) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += "0123456789ABCDEF"[c >> 4];
            out += "0123456789ABCDEF"[c & 0xF];
        }
        if (out.size() > max_stem)
            return std::nullopt;
    }
    return out;
}

std::optional<std::string> lineage_from_file_stem(std::string_view stem)
{
    std::string out;
    for (std::size_t i = 0; i < stem.size(); ++i) {
        if (stem[i] != '%') {
            out += stem[i];
            continue;
        }
        if (i + 2 >= stem.size())
            return std::nullopt;
        unsigned v = 0;
        auto [p, ec] = std::from_chars(stem.data() + i + 1, stem.data() + i + 3, v, 16);
        if (ec != std::errc{} || p != stem.data() + i + 3)
            return std::nullopt;
        out += static_cast<char>(v);
        i += 2;
    }
    // Only stems that lineage_file_stem writes (one spelling per lineage).
    auto again = lineage_file_stem(out);
    if (!again || *again != stem)
        return std::nullopt;
    return out;
}

fs::path metadata_path(const fs::path& dir, std::string_view lineage)
{
    auto stem = lineage_file_stem(lineage);
    return stem ? dir / (*stem + std::string(metadata_suffix)) : fs::path();
}

fs::path spans_path(const fs::path& dir, std::string_view lineage)
{
    auto stem = lineage_file_stem(lineage);
    return stem ? dir / (*stem + std::string(spans_suffix)) : fs::path();
}

fs::path spans_json_path(const fs::path& dir, std::string_view lineage)
{
    auto stem = lineage_file_stem(lineage);
    return stem ? dir / (*stem + std::string(spans_json_suffix)) : fs::path();
}

std::string encode_metadata(std::string_view lineage, const persisted_metadata& metadata)
{
    std::string out = header("metadata", metadata_json_version, lineage);
    out += "\"callsites\":[";
    for (std::size_t i = 0; i < metadata.size(); ++i) {
        out += i ? ",\n" : "\n";
        out += json::serialize(callsite_json(metadata[i]));
    }
    out += metadata.empty() ? "]\n}\n" : "\n]\n}\n";
    return out;
}

std::string encode_spans_json(std::string_view lineage, const persisted_spans& spans)
{
    std::string out = header("spans", spans_json_version, lineage);
    out += "\"next_id\":\"" + dec(spans.next_id) + "\",\n\"spans\":[";
    for (std::size_t i = 0; i < spans.spans.size(); ++i) {
        const auto& s = spans.spans[i];
        json::object o;
        o["id"] = dec(s.id);
        o["callsite"] = hex_id(s.callsite_id);
        o["parent"] = dec(s.parent_id);
        o["ref_count"] = dec(s.ref_count);
        o["start_ns"] =
            std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(s.start.time_since_epoch()).count());
        o["values"] = values_json(s.values.to_fields());
        json::array ff;
        for (auto c : s.follows_from)
            ff.emplace_back(dec(c));
        o["follows_from"] = std::move(ff);
        out += i ? ",\n" : "\n";
        out += json::serialize(o);
    }
    out += spans.spans.empty() ? "]\n}\n" : "\n]\n}\n";
    return out;
}

std::string encode_spans(std::string_view lineage, const persisted_spans& spans)
{
    // The records go into the output buffer right after the header; the
    // tables they fill are then inserted before them (one move within the
    // buffer: a second buffer of records was as big as the file, copied once
    // more, and its pages faulted in on every persist).
    std::string out;
    out.reserve(bin_header_size + 1024 + lineage.size() + spans.spans.size() * 48);
    out.append(bin_header_size, '\0');
    bin_out r{out};
    interner<std::string_view> names;
    interner<std::uint64_t> sites;
    r.varint(spans.spans.size());
    packed::item item;
    for (const auto& s : spans.spans) {
        r.varint(s.id);
        r.varint(sites.index(s.callsite_id));
        r.varint(s.parent_id);
        r.varint(s.ref_count);
        r.fixed(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(s.start.time_since_epoch()).count()));
        r.varint(s.values.size());
        const std::string_view vb = s.values.bytes();
        for (const char* p = vb.data(); packed::next(p, vb.data() + vb.size(), item);) {
            r.varint(names.index(item.name));
            r.packed_value(item);
        }
        r.varint(s.follows_from.size());
        for (auto c : s.follows_from)
            r.varint(c);
    }
    std::size_t table_bytes = 32 + lineage.size() + 8 * sites.keys().size();
    for (auto n : names.keys())
        table_bytes += n.size() + 10;
    std::string tables;
    tables.reserve(table_bytes);
    bin_out o{tables};
    o.str(lineage);
    o.varint(spans.next_id);
    o.varint(names.keys().size());
    for (auto n : names.keys())
        o.str(n);
    o.varint(sites.keys().size());
    for (auto id : sites.keys())
        o.fixed(id);
    out.insert(bin_header_size, tables);
    const std::size_t body = out.size() - bin_header_size;
    std::memcpy(out.data(), bin_magic, sizeof bin_magic);
    put_le(out.data() + 8, static_cast<std::uint64_t>(state_format_version), 4);
    put_le(out.data() + 12, bin_kind_spans, 4);
    put_le(out.data() + 16, body, 8);
    put_le(out.data() + 24, crc32c(reinterpret_cast<const unsigned char*>(out.data()) + bin_header_size, body), 4);
    return out;
}

namespace {

// What every save checks first: a usable lineage name and an existing folder.
std::optional<state_error> prepare_folder(const fs::path& dir, std::string_view lineage, bool valid_name)
{
    if (!valid_name)
        return state_error{state_errc::invalid_lineage, dir, "",
                           "invalid lineage name \"" + std::string(lineage) + "\"", {}};
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
        return state_error{state_errc::io_error, dir, "", "cannot create the folder: " + ec.message(), {}};
    return std::nullopt;
}

}  // namespace

std::optional<state_error> save_lineage_state(const fs::path& dir, std::string_view lineage,
                                              const persisted_metadata& metadata,
                                              const persisted_spans& spans) noexcept
{
    try {
        const auto stem = lineage_file_stem(lineage);
        if (auto err = prepare_folder(dir, lineage, stem.has_value()))
            return err;
        const std::string mtext = encode_metadata(lineage, metadata);
        const std::string stext = encode_spans(lineage, spans);
        // Ordering (what a crash or power loss at any point leaves). Each
        // write is: temporary file, fdatasync, rename over, folder fsync; so
        // each step is durable before the next begins.
        // 1. Metadata first: call sites only grow, so old spans + new
        //    metadata is consistent.
        // 2. The binary spans file.
        // 3. An older build's <stem>.spans.json goes last, once the .bin is
        //    durable; if its removal is lost, the .bin still wins at load.
        // Steps 1 and 2 are skipped when the file is still the one this
        // process made durable and holds exactly these bytes (usually the
        // metadata: no call site added since; the spans of an idle plugin,
        // or across a reload): writing it again would change nothing on
        // disk. A first save in a process always writes, so a file another
        // process renamed in (perhaps never fsync'd into the folder) is not
        // trusted to be durable before what depends on it.
        if (auto e = write_if_changed(dir / (*stem + std::string(metadata_suffix)), mtext))
            return e;
        if (auto e = write_if_changed(dir / (*stem + std::string(spans_suffix)), stext))
            return e;
        const fs::path jpath = dir / (*stem + std::string(spans_json_suffix));
        if (::unlink(jpath.c_str()) != 0 && errno != ENOENT)
            return state_error{state_errc::io_error, jpath, "",
                               "cannot remove the older JSON spans file: " + errno_text(errno), {}};
        return std::nullopt;
    } catch (const std::exception& e) {
        return state_error{state_errc::internal_error, dir, "", e.what(), {}};
    } catch (...) {
        return state_error{state_errc::internal_error, dir, "", "unknown exception", {}};
    }
}

load_result load_lineage_state(const fs::path& dir, std::string_view lineage, on_bad_file policy) noexcept
{
    try {
        return load_impl(dir, lineage, policy);
    } catch (const std::exception& e) {
        load_result r;
        r.status = load_status::failed;
        r.errors.push_back({state_errc::internal_error, dir, "", e.what(), {}});
        return r;
    } catch (...) {
        load_result r;
        r.status = load_status::failed;
        return r;
    }
}

load_result decode_lineage_state(std::optional<std::string_view> metadata_text,
                                 std::optional<std::string_view> spans_text, std::string_view lineage) noexcept
{
    try {
        return decode_pair(metadata_text, spans_text, lineage, fs::path(), fs::path(), spans_form::sniff);
    } catch (const std::exception& e) {
        load_result r;
        r.status = load_status::failed;
        r.errors.push_back({state_errc::internal_error, {}, "", e.what(), {}});
        return r;
    } catch (...) {
        load_result r;
        r.status = load_status::failed;
        return r;
    }
}

std::vector<std::string> list_lineages(const fs::path& dir, std::vector<fs::path>* bad_names) noexcept
{
    try {
        std::set<std::string> names;
        std::error_code ec;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            std::string_view stem;
            for (auto suffix : {metadata_suffix, spans_suffix, spans_json_suffix})
                if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
                    stem = std::string_view(name).substr(0, name.size() - suffix.size());
            if (stem.empty() || name[0] == '.')
                continue;
            if (auto lineage = lineage_from_file_stem(stem))
                names.insert(*lineage);
            else if (bad_names)
                bad_names->push_back(it->path());
        }
        return {names.begin(), names.end()};
    } catch (...) {
        return {};
    }
}

fs::path plugin_state_path(const fs::path& dir, std::string_view lineage)
{
    auto stem = lineage_file_stem(lineage);
    return stem ? dir / (*stem + std::string(plugin_state_suffix)) : fs::path();
}

std::optional<state_error> save_plugin_state(const fs::path& dir, std::string_view lineage,
                                             const std::vector<std::uint8_t>& bytes,
                                             std::uint64_t paired_next_id) noexcept
{
    try {
        const fs::path path = plugin_state_path(dir, lineage);
        if (auto err = prepare_folder(dir, lineage, !path.empty()))
            return err;
        std::string text = std::string(plugin_state_magic) + " " + std::to_string(plugin_state_version) + " " +
                           std::to_string(bytes.size()) + " " + hex_id(fnv1a64(bytes.data(), bytes.size()));
        if (paired_next_id != 0)
            text += " " + std::to_string(paired_next_id);  // optional fifth field
        text += "\n";
        text.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        // Skipped like the spans when nothing would change (same bytes, same
        // paired next_id): the spans it pairs with are then durable already.
        return write_if_changed(path, text);
    } catch (const std::exception& e) {
        return state_error{state_errc::internal_error, dir, "", e.what(), {}};
    }
}

std::optional<state_error> remove_plugin_state(const fs::path& dir, std::string_view lineage) noexcept
{
    const fs::path path = plugin_state_path(dir, lineage);
    if (path.empty())
        return state_error{state_errc::invalid_lineage, dir, "", "invalid lineage name", {}};
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return state_error{state_errc::io_error, path, "", "cannot remove: " + errno_text(errno), {}};
    return std::nullopt;
}

blob_result load_plugin_state(const fs::path& dir, std::string_view lineage, on_bad_file policy) noexcept
{
    blob_result r;
    try {
        const fs::path path = plugin_state_path(dir, lineage);
        auto fail = [&](state_errc code, std::string msg) {
            r.status = load_status::failed;
            r.bytes.clear();
            r.paired_next_id = 0;
            state_error e{code, path, "", std::move(msg), {}};
            if (policy == on_bad_file::move_aside && code != state_errc::io_error) {
                std::string err;
                e.moved_to = move_aside(path, err);
                if (e.moved_to.empty())
                    e.message += "; " + err;
            }
            r.error = std::move(e);
            return r;
        };
        if (path.empty())
            return fail(state_errc::invalid_lineage, "invalid lineage name \"" + std::string(lineage) + "\"");
        std::string text, err;
        const int rc = read_file(path, text, err);
        if (rc == 1)
            return r;
        if (rc < 0)
            return fail(state_errc::io_error, err);
        const auto eol = text.find('\n');
        if (eol == std::string::npos)
            return fail(state_errc::invalid_value, "no header line (truncated?)");
        // "<magic> <version> <length> <checksum> [<paired next_id>]"
        std::vector<std::string> parts;
        std::string_view head(text.data(), eol);
        while (!head.empty()) {
            const auto sp = head.find(' ');
            parts.emplace_back(head.substr(0, sp));
            head = sp == std::string_view::npos ? std::string_view() : head.substr(sp + 1);
        }
        if ((parts.size() != 4 && parts.size() != 5) || parts[0] != plugin_state_magic)
            return fail(state_errc::wrong_magic, "not a tracetunnel plugin state file");
        auto number = [](const std::string& s, int base, std::uint64_t& out) {
            if (s.empty() || s.size() > 20)
                return false;
            char* end = nullptr;
            errno = 0;
            out = std::strtoull(s.c_str(), &end, base);
            return errno == 0 && end == s.c_str() + s.size() && std::isalnum(static_cast<unsigned char>(s[0]));
        };
        std::uint64_t version = 0, length = 0, sum = 0;
        if (!number(parts[1], 10, version))
            return fail(state_errc::invalid_value, "unreadable schema version \"" + parts[1] + "\"");
        if (version > static_cast<std::uint64_t>(plugin_state_version))
            return fail(state_errc::unsupported_version,
                        "schema version " + parts[1] + " is newer than this build's " +
                            std::to_string(plugin_state_version));
        const std::string sum_text = parts[3].rfind("0x", 0) == 0 ? parts[3].substr(2) : parts[3];
        if (!number(parts[2], 10, length) || !number(sum_text, 16, sum))
            return fail(state_errc::invalid_value, "unreadable length or checksum in the header");
        if (parts.size() == 5 && (!number(parts[4], 10, r.paired_next_id) || r.paired_next_id == 0))
            return fail(state_errc::invalid_value, "unreadable paired next_id \"" + parts[4] + "\" in the header");
        if (text.size() - eol - 1 != length)
            return fail(state_errc::invalid_value, "the header says " + parts[2] + " bytes, the file holds " +
                                                       std::to_string(text.size() - eol - 1));
        r.bytes.assign(text.begin() + static_cast<std::ptrdiff_t>(eol) + 1, text.end());
        if (fnv1a64(r.bytes.data(), r.bytes.size()) != sum)
            return fail(state_errc::inconsistent, "checksum mismatch: the content was changed or torn");
        r.status = load_status::loaded;
        return r;
    } catch (const std::exception& e) {
        r.status = load_status::failed;
        r.bytes.clear();
        r.error = state_error{state_errc::internal_error, dir, "", e.what(), {}};
        return r;
    }
}

}  // namespace tt::state
