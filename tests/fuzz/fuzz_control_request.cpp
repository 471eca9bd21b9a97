// Fuzz target: the control-socket request parser (host/control_server.hpp,
// parse_control_request: what the server runs on each request line).
// Invariants: no crash or exception; every line gets either a command or
// one of the protocol's error codes with a message; what is echoed back
// (id, args) is itself valid JSON of the right shape.
#include "fuzz_check.hpp"

#include <tracetunnel/host/control_server.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string_view line(reinterpret_cast<const char*>(data), size);
    const auto r = tt::host::parse_control_request(line);
    boost::system::error_code ec;
    const auto id = boost::json::parse(r.id_json, ec);
    FUZZ_CHECK(!ec, "the echoed id is not JSON");
    if (!r.error_code.empty()) {
        FUZZ_CHECK(r.error_code == "bad_json" || r.error_code == "bad_request", "an unexpected error code");
        FUZZ_CHECK(!r.error_message.empty(), "an error without a message");
        FUZZ_CHECK(r.cmd.empty(), "an error with a command");
        return 0;
    }
    const auto args = boost::json::parse(r.args_json, ec);
    FUZZ_CHECK(!ec && args.is_object(), "parsed args are not a JSON object");
    // A request that parsed is a JSON object whose cmd is a string: parsing
    // the line again must agree.
    const auto v = boost::json::parse(line, ec);
    FUZZ_CHECK(!ec && v.is_object(), "accepted a line that is not a JSON object");
    const auto* cmd = v.as_object().if_contains("cmd");
    FUZZ_CHECK(cmd && cmd->is_string() && std::string_view(cmd->as_string()) == r.cmd, "cmd differs");
    (void)id;
    return 0;
}
