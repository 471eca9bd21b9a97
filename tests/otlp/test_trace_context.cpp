// W3C traceparent parse/format and the thread's remote parent scope.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/trace_context.hpp>

#include <string>
#include <thread>

using namespace tt::host;

namespace {

const std::string trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string span_hex = "00f067aa0ba902b7";
const std::string good = "00-" + trace_hex + "-" + span_hex + "-01";

std::string refusal(std::string_view text)
{
    auto r = parse_traceparent(text);
    auto* err = std::get_if<traceparent_error>(&r);
    return err ? err->message : std::string();
}

}  // namespace

TEST_CASE("a valid traceparent parses into its ids and flags and formats back")
{
    auto r = parse_traceparent(good);
    REQUIRE(std::holds_alternative<trace_parent>(r));
    const auto& p = std::get<trace_parent>(r);
    CHECK(to_hex(p.trace) == trace_hex);
    CHECK(to_hex(p.span) == span_hex);
    CHECK(p.flags == 0x01);
    CHECK(format_traceparent(p) == good);

    auto unsampled = parse_traceparent("00-" + trace_hex + "-" + span_hex + "-00");
    REQUIRE(std::holds_alternative<trace_parent>(unsampled));
    CHECK(std::get<trace_parent>(unsampled).flags == 0x00);
}

TEST_CASE("a later version may carry more fields after a dash; we answer in version 00")
{
    auto r = parse_traceparent("cc-" + trace_hex + "-" + span_hex + "-01-what-the-future-holds");
    REQUIRE(std::holds_alternative<trace_parent>(r));
    CHECK(format_traceparent(std::get<trace_parent>(r)) == good);
    CHECK(refusal("cc-" + trace_hex + "-" + span_hex + "-01x") != "");
}

TEST_CASE("invalid traceparents are refused with the reason")
{
    CHECK(refusal("ff-" + trace_hex + "-" + span_hex + "-01").find("version ff") != std::string::npos);
    CHECK(refusal("00-" + std::string(32, '0') + "-" + span_hex + "-01").find("trace id is all zeros") !=
          std::string::npos);
    CHECK(refusal("00-" + trace_hex + "-" + std::string(16, '0') + "-01").find("parent id is all zeros") !=
          std::string::npos);
    CHECK(refusal("00-4BF92F3577B34DA6A3CE929D0E0E4736-" + span_hex + "-01").find("trace id") != std::string::npos);
    CHECK(refusal("00-" + trace_hex + "-00F067AA0BA902B7-01").find("parent id") != std::string::npos);
    CHECK(refusal("00-" + trace_hex + "-" + span_hex + "-0g").find("flags") != std::string::npos);
    CHECK(refusal("0x-" + trace_hex + "-" + span_hex + "-01").find("version") != std::string::npos);
    CHECK(refusal(good + "-00").find("exactly 55") != std::string::npos);  // version 00 has nothing more
    CHECK(refusal(good.substr(0, 54)).find("54 characters") != std::string::npos);
    CHECK(refusal("").find("0 characters") != std::string::npos);
    CHECK(refusal("00_" + trace_hex + "-" + span_hex + "-01").find("'-'") != std::string::npos);
    CHECK(refusal(" " + good.substr(1)) != "");
}

TEST_CASE("remote_parent_scope nests per thread; a refused text hides the outer parent and is counted")
{
    CHECK_FALSE(current_remote_parent().has_value());
    {
        remote_parent_scope outer(good);
        CHECK(outer.valid());
        REQUIRE(current_remote_parent().has_value());
        CHECK(format_traceparent(*current_remote_parent()) == good);
        const std::string other = "00-" + std::string(31, '0') + "1-" + std::string(15, '0') + "2-01";
        {
            remote_parent_scope inner(other);
            CHECK(inner.valid());
            CHECK(format_traceparent(*current_remote_parent()) == other);
            // Another thread has no remote parent of its own.
            bool seen_elsewhere = true;
            std::thread([&] { seen_elsewhere = current_remote_parent().has_value(); }).join();
            CHECK_FALSE(seen_elsewhere);
        }
        CHECK(format_traceparent(*current_remote_parent()) == good);
        const auto before = invalid_traceparents();
        {
            remote_parent_scope bad("ff-" + trace_hex + "-" + span_hex + "-01");
            CHECK_FALSE(bad.valid());
            CHECK_FALSE(current_remote_parent().has_value());  // a new trace starts here
            remote_parent_scope zero(trace_parent{});
            CHECK_FALSE(zero.valid());
        }
        CHECK(invalid_traceparents() == before + 2);
        CHECK(format_traceparent(*current_remote_parent()) == good);
    }
    CHECK_FALSE(current_remote_parent().has_value());
}
