// Misuses of the C++ sender that must not compile, one per MISUSE value;
// each fails on a static_assert that names the fix. MISUSE 0 is the control
// that must compile.
#include <tracetunnel/trace.hpp>
using namespace tt::literals;
void f() {
#if MISUSE == 1
    TT_INFO(42);
#elif MISUSE == 2
    TT_INFO("m", 5);
#elif MISUSE == 3
    TT_INFO("m", "message"_f = 1);
#elif MISUSE == 4
    enum class e { a };
    TT_INFO("m", "x"_f = e::a);
#elif MISUSE == 5
    TT_INFO("m", tt::root, tt::root);
#elif MISUSE == 6
    auto s = TT_INFO_SPAN("s"); s.record(3);
#elif MISUSE == 7
    TT_EVENT(9, "m");
#else
    TT_INFO("ok", "x"_f = 1);
#endif
}
