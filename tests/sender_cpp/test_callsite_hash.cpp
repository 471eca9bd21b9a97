// trace.hpp inside the test executable itself: the compile-time call-site id
// against abi.h's tt_callsite_hash, call-site data built from macro
// arguments, and the macros' behaviour without a started plugin.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/trace.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

using namespace tt::literals;

namespace {

struct event_key {
    static constexpr tt::detail::site_info info() noexcept
    {
        return {TT_CALLSITE_EVENT, TT_LEVEL_WARN, 12, "event a.cpp:12", "orders::checkout", "orders", "a.cpp"};
    }
};
using event_site = tt::detail::site<event_key, decltype(tt::detail::collect("msg", "amount"_f = 1.5, tt::root,
                                                                            "user"_f = tt::empty))>;

struct span_key {
    static constexpr tt::detail::site_info info() noexcept
    {
        return {TT_CALLSITE_SPAN, TT_LEVEL_TRACE, 0, "bare", "", "", ""};
    }
};
using bare_span_site = tt::detail::site<span_key, decltype(tt::detail::collect())>;

struct utf8_key {
    static constexpr tt::detail::site_info info() noexcept
    {
        return {TT_CALLSITE_SPAN, TT_LEVEL_ERROR, 4000000000u, "zählen \xe2\x9c\x93", "t", "m", "/abs/path/x.cpp"};
    }
};
using utf8_site = tt::detail::site<utf8_key, decltype(tt::detail::collect("größe"_f = 1, "x"_f = 2))>;

template <class Site>
void check_site(const Site&)
{
    const tt_callsite& cs = Site::storage.cs;
    CHECK(cs.struct_size == sizeof(tt_callsite));
    CHECK(cs.id == Site::id);
    CHECK(tt_callsite_hash(&cs) == Site::id);
    CHECK(tt::detail::callsite_hash(cs) == Site::id);
}

std::string_view name_at(const tt_callsite& cs, std::uint32_t i)
{
    return {cs.field_names[i].ptr, cs.field_names[i].len};
}

int evaluated = 0;
int nobody_listens_line = 0;
int count_evaluation(int v)
{
    ++evaluated;
    return v;
}

// Keys as the macros make them (with the file's TT_STATIC_MAX_LEVEL).
struct listed_key {
    static constexpr tt::detail::site_info info() noexcept
    {
        return {TT_CALLSITE_EVENT, TT_LEVEL_DEBUG, 7, "event k.cpp:7", "t", "t", "k.cpp"};
    }
    static constexpr tt_level max_level() noexcept { return TT_LEVEL_DEBUG; }
};
struct above_max_key {
    static constexpr tt::detail::site_info info() noexcept
    {
        return {TT_CALLSITE_EVENT, TT_LEVEL_TRACE, 8, "event k.cpp:8", "t", "t", "k.cpp"};
    }
    static constexpr tt_level max_level() noexcept { return TT_LEVEL_DEBUG; }
};

// Every call site of this executable's table of call sites (the section
// tt_plugin_start walks): the name of each, in table order.
std::vector<std::string> table_names()
{
    std::vector<std::string> out;
    for (tt::detail::site_storage* const* p = tt::detail::__start_tt_cpp_sites; p < tt::detail::__stop_tt_cpp_sites;
         ++p) {
        REQUIRE(*p != nullptr);
        out.emplace_back((*p)->cs.name.ptr, (*p)->cs.name.len);
    }
    return out;
}

}  // namespace

// A debug event and span in a file whose static max level is INFO: compiled out.
#undef TT_STATIC_MAX_LEVEL
#define TT_STATIC_MAX_LEVEL TT_LEVEL_INFO
static void compiled_out()
{
    TT_DEBUG("compiled out", "v"_f = count_evaluation(10));
    auto span = TT_DEBUG_SPAN("compiled out span", "v"_f = count_evaluation(11));
    CHECK(span.is_disabled());
}
#undef TT_STATIC_MAX_LEVEL
#define TT_STATIC_MAX_LEVEL TT_LEVEL_TRACE

// Only TT_EVENT / TT_SPAN expansions whose level is compiled in are listed.
static_assert(tt::detail::site<listed_key, decltype(tt::detail::collect("m"))>::listed);
static_assert(!tt::detail::site<above_max_key, decltype(tt::detail::collect("m"))>::listed);
static_assert(!event_site::listed);
static_assert(!tt::detail::static_fields<"a", "b">::as_site::listed);

// The id is a compile-time constant.
static_assert(event_site::id != 0);
static_assert(event_site::id != bare_span_site::id);
static_assert(event_site::field_count == 3);

TEST_CASE("the compile-time call-site id equals tt_callsite_hash at run time")
{
    check_site(event_site{});
    check_site(bare_span_site{});
    check_site(utf8_site{});
}

TEST_CASE("the constexpr hash twin agrees with abi.h on arbitrary call sites")
{
    const tt_str names[] = {{"a", 1}, {"", 0}, {"longer field name", 17}};
    for (std::uint32_t kind : {TT_CALLSITE_SPAN, TT_CALLSITE_EVENT})
        for (std::uint32_t level = TT_LEVEL_ERROR; level <= TT_LEVEL_TRACE; ++level)
            for (std::uint32_t count = 0; count <= 3; ++count) {
                tt_callsite cs{};
                cs.struct_size = sizeof cs;
                cs.kind = kind;
                cs.level = level;
                cs.line = level * 1000 + count;
                cs.name = {"name", 4};
                cs.target = {"target", 6};
                cs.module_path = {nullptr, 0};
                cs.file = {"f.cpp", 5};
                cs.field_names = names;
                cs.field_count = count;
                CHECK(tt::detail::callsite_hash(cs) == tt_callsite_hash(&cs));
            }
}

TEST_CASE("call-site data comes from the macro arguments")
{
    const tt_callsite& cs = event_site::storage.cs;
    CHECK(cs.kind == TT_CALLSITE_EVENT);
    CHECK(cs.level == TT_LEVEL_WARN);
    CHECK(cs.line == 12);
    REQUIRE(cs.field_count == 3);
    CHECK(name_at(cs, 0) == "message");
    CHECK(name_at(cs, 1) == "amount");
    CHECK(name_at(cs, 2) == "user");
    CHECK(bare_span_site::storage.cs.field_count == 0);
    CHECK(name_at(utf8_site::storage.cs, 0) == "größe");
}

TEST_CASE("without a started plugin every macro is a no-op that evaluates nothing")
{
    evaluated = 0;
    // clang-format off
    TT_INFO("nobody listens", "v"_f = count_evaluation(1)); nobody_listens_line = __LINE__;
    // clang-format on
    auto span = TT_INFO_SPAN("quiet", "v"_f = count_evaluation(2));
    CHECK(span.is_disabled());
    CHECK(span.id() == 0);
    {
        auto entered = span.enter();
        span.record("v"_f = count_evaluation(3));  // record evaluates its own arguments: they are plain calls
    }
    tt::span copy = span;
    CHECK(copy.is_disabled());
    CHECK(evaluated == 1);
}

TEST_CASE("call sites above TT_STATIC_MAX_LEVEL cost nothing")
{
    static_assert(tt::detail::level_on(TT_LEVEL_ERROR, TT_LEVEL_WARN));
    static_assert(!tt::detail::level_on(TT_LEVEL_INFO, TT_LEVEL_WARN));
    evaluated = 0;
    compiled_out();
    CHECK(evaluated == 0);
}

TEST_CASE("the table of call sites holds exactly the macro call sites compiled in")
{
    // This executable's own section: the event and the span of the no-op
    // test above and the site of listed_key (instantiated by a static_assert
    // above), once each, with no padding between them (also under ASan). Not
    // the compiled-out ones, not the other hand-made sites, not the
    // tt::fields<...> tables.
    std::vector<std::string> names = table_names();
    std::sort(names.begin(), names.end());
    REQUIRE(names.size() == 3);
    CHECK(names[0] == "event k.cpp:7");
    CHECK(names[1].rfind("event ", 0) == 0);
    CHECK(names[1].ends_with("test_callsite_hash.cpp:" + std::to_string(nobody_listens_line)));
    CHECK(names[2] == "quiet");
    const auto bytes = reinterpret_cast<const char*>(tt::detail::__stop_tt_cpp_sites) -
                       reinterpret_cast<const char*>(tt::detail::__start_tt_cpp_sites);
    CHECK(bytes == static_cast<std::ptrdiff_t>(3 * sizeof(void*)));
}
