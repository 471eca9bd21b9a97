// tt-replay: replay a recorded event stream through a receiver and the host's
// dispatcher and layers, as if a plugin were emitting it now.
//
//   tt-replay run.jsonl                                   compact console output
//   tt-replay run.jsonl --format json --filter orders=debug
//   tt-replay part1.jsonl --persist-to state/             then, later:
//   tt-replay part2.jsonl --restore-from state/           spans continue
//
// Reads our JSON lines (docs/FORMAT.md, "Event lines"; the header line is
// optional) and the Rust crate tracing-tunnel's serde lines, detected per
// line or forced with --tracing-tunnel.
#include <tracetunnel/event_json.hpp>
#include <tracetunnel/host/capture.hpp>
#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/receiver.hpp>
#include <tracetunnel/state_file.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <fstream>
#include <sstream>
#include <iostream>
#include <map>
#include <string>
#include <variant>

namespace {

using namespace tt;

struct options {
    std::string file;
    std::string filter = "trace";
    std::string format = "compact";
    std::string color = "auto";
    std::string lineage = "replay";
    std::string persist_to;
    std::string restore_from;
    bool tracing_tunnel = false;
    bool strict = false;
    std::string expect;  // compare the host's span tree with this *.expect.json
};

int run(const options& o)
{
    auto parsed = host::parse_filter(o.filter);
    if (auto* err = std::get_if<host::filter_error>(&parsed)) {
        fmt::print(stderr, "tt-replay: bad --filter {:?}: {}\n", o.filter, err->message);
        return 2;
    }
    host::dispatcher dispatch(std::get<host::filter>(parsed));
    dispatch.add_layer(host::make_output_layer({o.format,
                                                o.color == "always"  ? host::color_mode::always
                                                : o.color == "never" ? host::color_mode::never
                                                                     : host::color_mode::automatic,
                                                false, false}));

    host::receiver_state restored;
    if (!o.restore_from.empty()) {
        // A tool leaves the user's files alone: a bad file is reported, not moved.
        auto r = state::load_lineage_state(o.restore_from, o.lineage, state::on_bad_file::keep);
        if (r.status == state::load_status::failed) {
            for (const auto& e : r.errors)
                fmt::print(stderr, "tt-replay: {}\n", state::to_string(e));
            return 1;
        }
        if (r.status == state::load_status::none)
            fmt::print(stderr, "tt-replay: no state for lineage {:?} in {}; starting empty\n", o.lineage,
                       o.restore_from);
        restored = std::move(r.state);
    }

    std::ifstream file;
    std::istream* in = &std::cin;
    if (o.file != "-") {
        file.open(o.file, std::ios::binary);
        if (!file) {
            fmt::print(stderr, "tt-replay: cannot open {}\n", o.file);
            return 1;
        }
        in = &file;
    }

    // --expect replays into the capture layer instead of the printing
    // pipeline: it records the span tree in the fixtures' canonical form.
    host::capture_layer capture;
    host::subscriber& sink = o.expect.empty() ? static_cast<host::subscriber&>(dispatch) : capture;

    std::size_t unreadable = 0, refused = 0, replayed = 0;
    int status = 0;
    {
        host::receiver recv(o.lineage, sink, std::move(restored));
        std::string line;
        std::size_t number = 0;
        bool first = true;
        while (std::getline(*in, line)) {
            ++number;
            if (line.find_first_not_of(" \t\r") == std::string::npos)
                continue;
            if (first) {
                first = false;
                if (model::is_stream_header(line)) {
                    if (auto err = model::check_stream_header(line)) {
                        fmt::print(stderr, "{}:{}: {}\n", o.file, number, model::to_string(*err));
                        return 1;
                    }
                    continue;
                }
            }
            std::optional<model::event> ev;
            std::string why;
            if (o.tracing_tunnel) {
                auto r = model::event_from_tracing_tunnel_json(line);
                if (r)
                    ev = std::move(r).value();
                else
                    why = model::to_string(r.error());
            } else {
                auto r = model::event_from_json_line(line);
                if (r) {
                    ev = std::move(r).value();
                } else {
                    auto t = model::event_from_tracing_tunnel_json(line);
                    if (t)
                        ev = std::move(t).value();
                    else
                        why = model::to_string(r.error()) + " (nor a tracing-tunnel line: " +
                              model::to_string(t.error()) + ")";
                }
            }
            if (!ev) {
                ++unreadable;
                fmt::print(stderr, "{}:{}: unreadable: {}\n", o.file, number, why);
                continue;
            }
            auto r = recv.try_receive(*ev);
            if (!r) {
                ++refused;
                fmt::print(stderr, "{}:{}: refused ({}): {}\n", o.file, number, host::to_string(r.error().code),
                           r.error().message);
                continue;
            }
            ++replayed;
        }
        if (!o.persist_to.empty()) {
            if (auto err = state::save_lineage_state(o.persist_to, o.lineage, recv.persist_metadata(), recv.persist())) {
                fmt::print(stderr, "tt-replay: {}\n", state::to_string(*err));
                status = 1;
            }
        }
        // Without --persist-to the receiver rolls back here: spans still open
        // are exited and closed, so the output ends balanced.
    }
    if (!o.expect.empty()) {
        std::ifstream want_file(o.expect, std::ios::binary);
        std::stringstream want_text;
        want_text << want_file.rdbuf();
        boost::system::error_code ec;
        const auto want = boost::json::parse(want_text.str(), ec);
        if (!want_file || ec) {
            fmt::print(stderr, "tt-replay: cannot read expectation {}: {}\n", o.expect,
                       ec ? ec.message() : "cannot open");
            return 1;
        }
        const auto got = capture.to_expect_json();
        if (got != want) {
            fmt::print(stderr, "tt-replay: span tree differs from {}\n  got:  {}\n  want: {}\n", o.expect,
                       boost::json::serialize(got), boost::json::serialize(want));
            status = 1;
        } else {
            fmt::print("tt-replay: span tree matches {}\n", o.expect);
        }
    }
    if (unreadable || refused)
        fmt::print(stderr, "tt-replay: {} events replayed, {} lines unreadable, {} refused by the receiver\n", replayed,
                   unreadable, refused);
    if (unreadable || (o.strict && refused))
        status = 1;
    return status;
}

}  // namespace

int main(int argc, char** argv)
{
    options o;
    CLI::App app{"tt-replay: replay a recorded tracetunnel event stream (JSON lines, docs/FORMAT.md) or a\n"
                 "tracing-tunnel serde stream through a receiver, the filter and the console or JSON layer.\n"
                 "Exit status: 0 when every line was read (receiver refusals are reported on stderr and\n"
                 "count only with --strict), 1 otherwise, 2 on bad arguments.",
                 "tt-replay"};
    app.set_version_flag("--version", "tt-replay " TT_PROJECT_VERSION);
    app.add_option("FILE", o.file, "the event stream; - for standard input")->required();
    app.add_option("--filter", o.filter, "filter directives, e.g. info,orders=debug")->capture_default_str();
    app.add_option("--format", o.format, "output: compact, pretty or json")
        ->check(CLI::IsMember({"compact", "pretty", "json"}))
        ->capture_default_str();
    app.add_option("--color", o.color, "console colours: auto, always or never")
        ->check(CLI::IsMember({"auto", "always", "never"}))
        ->capture_default_str();
    app.add_option("--lineage", o.lineage, "the receiver's lineage name (state file names)")->capture_default_str();
    app.add_option("--persist-to", o.persist_to, "at the end, persist the receiver's state to this folder");
    app.add_option("--restore-from", o.restore_from, "start the receiver from the state in this folder");
    app.add_flag("--tracing-tunnel", o.tracing_tunnel, "read every line as tracing-tunnel's serde form");
    app.add_option("--expect", o.expect,
                   "replay into the capture layer and compare the span tree with this expectation file\n"
                   "(the *.expect.json form of the tracing-tunnel fixtures); exit 1 when it differs");
    app.add_flag("--strict", o.strict, "exit 1 when the receiver refuses an event");
    CLI11_PARSE(app, argc, argv);
    try {
        return run(o);
    } catch (const std::exception& e) {
        fmt::print(stderr, "tt-replay: {}\n", e.what());
        return 1;
    }
}
