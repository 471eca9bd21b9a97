// The JSON lines form of the event model (docs/FORMAT.md is the reference).
//
// A recorded stream is one header line followed by one event per line. It is
// what tt-replay reads, what the JSON layer writes and what tests compare, so
// it must carry every event bit-exactly: ids and wide integers travel as
// strings (many JSON readers turn numbers into doubles), and floats that JSON
// cannot spell (NaN, infinities) travel as strings too.
//
// Reading never throws, whatever the bytes: a line comes from a file or a
// socket, and a bad one must become a report naming the byte and the JSON
// path at fault, not a crash of the tool reading it.
//
//   std::string out = tt::model::stream_header() + '\n';
//   tt::model::to_json_line(tt::model::span_entered{7}, out);   // appends {"span_entered":{"id":"7"}}
//
//   auto r = tt::model::event_from_json_line(line);
//   if (!r)
//       std::cerr << to_string(r.error()) << '\n';   // wrong_type at byte 18 (/span_entered/id): ...
//   else
//       replay(r.value());
#pragma once

#include <tracetunnel/model.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tt::model {

// The format written by this build. Readers refuse a stream whose header
// names a newer one rather than guess at fields they do not know.
inline constexpr int event_format_version = 1;

enum class json_error_code : std::uint8_t {
    invalid_json,         // not JSON: syntax error, truncated line, trailing bytes, nesting too deep
    invalid_utf8,         // bytes that are not UTF-8 (JSON text must be UTF-8)
    not_an_object,        // the line is JSON but not an object
    unknown_kind,         // an event kind or value type this reader does not know
    missing_field,        // a required member is absent
    unknown_field,        // a member the format does not have (strict tracetunnel lines only)
    duplicate_field,      // the same member twice in one object
    wrong_type,           // a member of the wrong JSON type (a number where a string belongs, ...)
    out_of_range,         // a number that does not fit its type: negative id, 2^64 as u64, ...
    invalid_value,        // the right JSON type with unreadable content: level "loud", id "12a"
    unsupported_version,  // a stream header naming a newer format
    not_a_header,         // a line given as stream header that is not one
    internal_error,       // not the input's fault (out of memory)
};

struct json_error {
    json_error_code code = json_error_code::invalid_json;
    std::string message;  // for humans; not stable, do not match on it
    // Where the fault is: the byte offset in the line (for a missing member,
    // the start of the object that lacks it) and the JSON Pointer (RFC 6901)
    // of the offending value; "" is the whole line.
    std::size_t offset = 0;
    std::string path;
};

std::string_view to_string(json_error_code code) noexcept;

// "wrong_type at byte 18 (/span_entered/id): expected ...": one line, for logs.
std::string to_string(const json_error& error);

// Either the event a line holds or why it was refused; shaped like
// std::expected (C++23) so it can be swapped for it later.
class decode_result {
public:
    decode_result(tt::model::event ev) : v_(std::move(ev)) {}
    decode_result(json_error err) : v_(std::move(err)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    // Precondition: ok().
    const tt::model::event& value() const& { return std::get<0>(v_); }
    tt::model::event& value() & { return std::get<0>(v_); }
    tt::model::event&& value() && { return std::get<0>(std::move(v_)); }

    // Precondition: !ok().
    const json_error& error() const { return std::get<1>(v_); }

private:
    std::variant<tt::model::event, json_error> v_;
};

// One compact JSON object, no newline. Strings that are not valid UTF-8 have
// each bad byte replaced by U+FFFD, so every line written is valid JSON.
// Throws only std::bad_alloc.
std::string to_json_line(const event& ev);

// The same, appended to `out` (not cleared): a writer reuses one buffer for
// a whole stream instead of allocating a string per event.
void to_json_line(const event& ev, std::string& out);

// Reads one line written by to_json_line (surrounding JSON whitespace is
// allowed). Never throws.
decode_result event_from_json_line(std::string_view line);

// The first line of a stream: {"tracetunnel":"events","format":1}.
std::string stream_header();

// Whether `line` is a stream header of any format version: lets a reader
// tell a headerless stream from one it cannot read.
bool is_stream_header(std::string_view line) noexcept;

// nullopt when `line` is a header this reader can read; otherwise why not
// (unsupported_version for a newer format, not_a_header for anything else).
std::optional<json_error> check_stream_header(std::string_view line);

// Reads one line of the Rust crate tracing-tunnel's serde_json form, e.g.
// {"new_span":{"id":1,"metadata_id":94670210826152,"values":{"num":{"int":42}}}}.
// Its integers widen to 128 bits on the wire; they are narrowed back to
// i64 / u64 when they fit. Never throws.
decode_result event_from_tracing_tunnel_json(std::string_view line);

}  // namespace tt::model
