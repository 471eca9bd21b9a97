// tt-plugin-child: runs one plugin for an isolating host (isolation.hpp).
// Started by tt-host (--isolate) with the plugin file and the socket on an
// inherited descriptor; not meant to be run by hand.
//
//   tt-plugin-child --fd 3 /path/to/libplugin.so
#include <tracetunnel/host/isolation.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fcntl.h>

// A plugin that faults must end this process by its signal, so the host
// can name it: the sanitizers' own SEGV handlers would turn it into an exit.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
extern "C" __attribute__((visibility("default"), used)) const char* __asan_default_options()
{
    return "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0";
}
extern "C" __attribute__((visibility("default"), used)) const char* __tsan_default_options()
{
    return "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0";
}
#endif

int main(int argc, char** argv)
{
    if (argc != 4 || std::strcmp(argv[1], "--fd") != 0) {
        std::fprintf(stderr, "usage: tt-plugin-child --fd N PLUGIN.so (started by tt-host --isolate)\n");
        return 2;
    }
    char* end = nullptr;
    const long fd = std::strtol(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || fd < 0 || fd > 1 << 20 || ::fcntl(static_cast<int>(fd), F_GETFD) < 0) {
        std::fprintf(stderr, "tt-plugin-child: --fd %s is not an open descriptor\n", argv[2]);
        return 2;
    }
    const int rc = tt::host::run_plugin_child(static_cast<int>(fd), argv[3]);
    std::fflush(nullptr);
    // Plugin threads may still run (the parent went away): no static
    // destructors under their feet.
    std::_Exit(rc);
}
