// Persisted receiver state on disk: JSON codec, validation, crash-safe files.
//
// Values and call sites are written and read through the event-line codec
// (event_json.hpp), so they follow exactly its conventions (ids as strings,
// 128-bit integers, NaN payloads, error chains): a call site is the body of a
// new_callsite line, a span's values the values of a values_recorded line.
#include <tracetunnel/event_json.hpp>
#include <tracetunnel/state_file.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
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
#include <new>
#include <set>
#include <sys/stat.h>
#include <type_traits>
#include <unistd.h>

namespace tt::state {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr std::uint64_t top_bit = std::uint64_t{1} << 63;
constexpr std::string_view metadata_suffix = ".metadata.json";
constexpr std::string_view spans_suffix = ".spans.json";
constexpr std::string_view plugin_state_suffix = ".plugin-state";
constexpr std::string_view plugin_state_magic = "tracetunnel-plugin-state";

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

std::string header(std::string_view kind, std::string_view lineage)
{
    std::string out = "{\n\"magic\":";
    out += json::serialize(json::string(state_magic));
    out += ",\n\"kind\":";
    out += json::serialize(json::string(kind));
    out += ",\n\"version\":" + std::to_string(state_format_version) + ",\n\"lineage\":";
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
std::optional<fault> read_header(std::string_view text, std::string_view kind, std::string_view lineage,
                                 json::value& root)
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
    if (ver->is_uint64() || ver->get_int64() > state_format_version)
        return fault{state_errc::unsupported_version, "/version",
                     "schema version " + json::serialize(*ver) + " is newer than this build reads (" +
                         std::to_string(state_format_version) + ")"};
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
    if (auto f = read_header(text, "metadata", lineage, root))
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

std::optional<fault> decode_spans(std::string_view text, std::string_view lineage, persisted_spans& out)
{
    json::value root;
    if (auto f = read_header(text, "spans", lineage, root))
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
        if (auto f = read_values(so.at("values"), where + "/values", s.values))
            return f;
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

// The cross-table rules (docs/FORMAT.md). `spans` in file order; `metadata`
// may be null when there is no metadata file.
std::optional<fault> check_consistency(const persisted_metadata* metadata, const persisted_spans& spans)
{
    if (spans.next_id == 0 || (spans.next_id & top_bit) != 0)
        return fault{state_errc::inconsistent, "/next_id",
                     "next_id " + dec(spans.next_id) + " is not between 1 and 2^63"};
    std::map<std::uint64_t, const model::callsite*> sites;
    if (metadata)
        for (const auto& cs : *metadata)
            sites.emplace(cs.id, &cs);
    std::map<std::uint64_t, std::size_t> index;
    for (std::size_t i = 0; i < spans.spans.size(); ++i) {
        const auto& s = spans.spans[i];
        const std::string where = "/spans/" + std::to_string(i);
        if (s.id == 0 || (s.id & top_bit) != 0)
            return fault{state_errc::inconsistent, where + "/id", "span id " + dec(s.id) + " is not between 1 and 2^63"};
        auto [it, fresh] = index.emplace(s.id, i);
        if (!fresh)
            return fault{state_errc::inconsistent, where + "/id",
                         "span id " + dec(s.id) + " appears twice (also /spans/" + std::to_string(it->second) + ")"};
        if (s.id >= spans.next_id)
            return fault{state_errc::inconsistent, where + "/id",
                         "span id " + dec(s.id) + " is not below next_id " + dec(spans.next_id)};
        if (s.ref_count == 0)
            return fault{state_errc::inconsistent, where + "/ref_count",
                         "span " + dec(s.id) + " has ref_count 0 (a live span has at least one handle)"};
        auto sit = sites.find(s.callsite_id);
        if (sit == sites.end())
            return fault{state_errc::inconsistent, where + "/callsite",
                         "span " + dec(s.id) + ": call site " + hex_id(s.callsite_id) + " is not in the metadata" +
                             (metadata ? "" : " (no metadata file)")};
        const model::callsite& site = *sit->second;
        if (site.kind != model::callsite_kind::span)
            return fault{state_errc::inconsistent, where + "/callsite",
                         "span " + dec(s.id) + ": call site " + hex_id(s.callsite_id) + " is an event call site"};
        for (std::size_t j = 0; j < s.values.size(); ++j)
            if (std::find(site.fields.begin(), site.fields.end(), s.values[j].first) == site.fields.end())
                return fault{state_errc::inconsistent, where + "/values/" + std::to_string(j),
                             "span " + dec(s.id) + ": field \"" + s.values[j].first + "\" is not a field of call site " +
                                 hex_id(s.callsite_id)};
        if (s.parent_id == s.id)
            return fault{state_errc::inconsistent, where + "/parent", "span " + dec(s.id) + " is its own parent"};
        if (s.parent_id >= spans.next_id)
            return fault{state_errc::inconsistent, where + "/parent",
                         "span " + dec(s.id) + ": parent " + dec(s.parent_id) + " was never assigned (next_id is " +
                             dec(spans.next_id) + ")"};
        for (std::size_t j = 0; j < s.follows_from.size(); ++j)
            if (s.follows_from[j] == 0 || s.follows_from[j] >= spans.next_id)
                return fault{state_errc::inconsistent, where + "/follows_from/" + std::to_string(j),
                             "span " + dec(s.id) + ": cause " + dec(s.follows_from[j]) +
                                 " was never assigned (next_id is " + dec(spans.next_id) + ")"};
    }
    // Parent chains among live spans must end (no cycle).
    for (std::size_t i = 0; i < spans.spans.size(); ++i) {
        std::uint64_t p = spans.spans[i].parent_id;
        std::size_t steps = 0;
        while (p != 0) {
            auto it = index.find(p);
            if (it == index.end())
                break;  // a closed parent: the chain ends here
            if (++steps > spans.spans.size())
                return fault{state_errc::inconsistent, "/spans/" + std::to_string(i) + "/parent",
                             "span " + dec(spans.spans[i].id) + ": its parent chain is a cycle"};
            p = spans.spans[it->second].parent_id;
        }
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
    if (::fsync(fd) != 0) {
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
load_result decode_pair(std::optional<std::string_view> mtext, std::optional<std::string_view> stext,
                        std::string_view lineage, const fs::path& mpath, const fs::path& spath)
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
        if (auto f = decode_spans(*stext, lineage, st.spans))
            bad.push_back({f->code, spath, f->where, f->message, {}});
        else if (metadata_ok)  // (spans cannot be checked against unreadable metadata)
            if (auto g = check_consistency(mtext ? &st.metadata : nullptr, st.spans))
                bad.push_back({g->code, spath, g->where, g->message, {}});
    }
    if (bad.empty()) {
        std::sort(st.spans.spans.begin(), st.spans.spans.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
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
    const fs::path spath = dir / (*stem + std::string(spans_suffix));

    std::string mtext, stext, err;
    const int mread = read_file(mpath, mtext, err);
    if (mread < 0)
        r.errors.push_back({state_errc::io_error, mpath, "", err, {}});
    const int sread = read_file(spath, stext, err);
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
                                      mpath, spath);
    if (decoded.status == load_status::loaded)
        return decoded;
    std::vector<state_error> bad = std::move(decoded.errors);
    r.status = load_status::failed;
    std::vector<state_error> move_errors;
    if (policy == on_bad_file::move_aside) {
        for (const fs::path* p : {&mpath, &spath}) {
            if ((p == &mpath ? mread : sread) != 0)
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

std::string encode_metadata(std::string_view lineage, const persisted_metadata& metadata)
{
    std::string out = header("metadata", lineage);
    out += "\"callsites\":[";
    for (std::size_t i = 0; i < metadata.size(); ++i) {
        out += i ? ",\n" : "\n";
        out += json::serialize(callsite_json(metadata[i]));
    }
    out += metadata.empty() ? "]\n}\n" : "\n]\n}\n";
    return out;
}

std::string encode_spans(std::string_view lineage, const persisted_spans& spans)
{
    std::string out = header("spans", lineage);
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
        o["values"] = values_json(s.values);
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
        // Metadata first: call sites only grow, so old spans + new metadata is consistent.
        if (auto e = write_atomically(dir / (*stem + std::string(metadata_suffix)), mtext))
            return e;
        return write_atomically(dir / (*stem + std::string(spans_suffix)), stext);
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
        return decode_pair(metadata_text, spans_text, lineage, fs::path(), fs::path());
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
            for (auto suffix : {metadata_suffix, spans_suffix})
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
        std::string text = std::string(plugin_state_magic) + " " + std::to_string(state_format_version) + " " +
                           std::to_string(bytes.size()) + " " + hex_id(fnv1a64(bytes.data(), bytes.size()));
        if (paired_next_id != 0)
            text += " " + std::to_string(paired_next_id);  // optional fifth field
        text += "\n";
        text.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        return write_atomically(path, text);
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
        if (version > static_cast<std::uint64_t>(state_format_version))
            return fail(state_errc::unsupported_version,
                        "schema version " + parts[1] + " is newer than this build's " +
                            std::to_string(state_format_version));
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
