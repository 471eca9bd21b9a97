// Loads one plugin the way a host does and checks that it starts and that
// its span and event arrive: the end of the out-of-tree build test.
#include "recording_host.hpp"

#include <tracetunnel/host/plugin_library.hpp>

#include <cstdio>

int main(int argc, char** argv)
{
    if (argc != 3) {
        std::fprintf(stderr, "usage: load_check PLUGIN.so EXPECTED_NAME\n");
        return 2;
    }
    auto opened = tt::host::open_plugin(argv[1]);
    if (auto* err = std::get_if<tt::host::load_error>(&opened)) {
        std::fprintf(stderr, "load_check: %s\n", err->message().c_str());
        return 1;
    }
    auto lib = std::get<std::shared_ptr<tt::host::plugin_library>>(opened);
    if (lib->description().name != argv[2]) {
        std::fprintf(stderr, "load_check: plugin says it is '%s', expected '%s'\n",
                     lib->description().name.c_str(), argv[2]);
        return 1;
    }
    tt::test::recording_host host;
    const tt_host api = host.api();
    const auto started = lib->start(api);
    if (auto* err = std::get_if<tt::host::load_error>(&started)) {
        std::fprintf(stderr, "load_check: %s\n", err->message().c_str());
        return 1;
    }
    lib->stop();
    std::size_t spans = 0, events = 0;
    for (const auto& ev : host.events()) {
        spans += std::holds_alternative<tt::model::new_span>(ev);
        events += std::holds_alternative<tt::model::new_event>(ev);
    }
    if (!host.errors().empty() || spans != 1 || events != 1) {
        std::fprintf(stderr, "load_check: expected 1 span and 1 event, saw %zu and %zu (%zu errors)\n", spans,
                     events, host.errors().size());
        return 1;
    }
    std::printf("load_check: %s started, emitted 1 span and 1 event\n", argv[2]);
    return 0;
}
