// A third party's first plugin, built outside the project with nothing but
// the installed headers and pkg-config (see out_of_tree.sh).
#define TT_TARGET "hello"
#include <tracetunnel/trace.hpp>

using namespace tt::literals;

static bool start()
{
    auto span = TT_INFO_SPAN("greeting", "audience"_f = "world");
    auto guard = span.enter();
    TT_INFO("hello from an out-of-tree C++ plugin", "answer"_f = 42);
    return true;
}

static void stop() {}

TT_PLUGIN("hello_cpp", "1.0.0", "out-of-tree C++ plugin", start, stop);
