// Fuzz target: the event JSON decoders (state/event_json.hpp), our lines and
// tracing-tunnel's serde lines. Invariants: never a crash or an exception;
// an event that decodes encodes to a line that decodes to the same event.
#include "fuzz_check.hpp"

#include <tracetunnel/event_json.hpp>

#include <cstdint>
#include <string_view>

using namespace tt::model;

namespace {

void check_round_trip(const decode_result& r)
{
    if (!r)
        return;
    const std::string line = to_json_line(r.value());
    const auto again = event_from_json_line(line);
    FUZZ_CHECK(again.ok(), "a decoded event re-encodes to a line that does not decode");
    FUZZ_CHECK(same_event(r.value(), again.value()), "encode/decode changed the event");
    FUZZ_CHECK(to_json_line(again.value()) == line, "encoding is not stable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string_view line(reinterpret_cast<const char*>(data), size);
    const auto ours = event_from_json_line(line);
    if (!ours) {
        FUZZ_CHECK(!to_string(ours.error()).empty(), "an error without a description");
        FUZZ_CHECK(ours.error().offset <= size, "an error offset past the end of the line");
    }
    check_round_trip(ours);
    check_round_trip(event_from_tracing_tunnel_json(line));
    const bool header = is_stream_header(line);
    const auto checked = check_stream_header(line);
    FUZZ_CHECK(header || checked.has_value(), "a readable header that is_stream_header does not see");
    return 0;
}
