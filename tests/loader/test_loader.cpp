// The loader against real .so files that each break one rule: every refusal
// names the file and the cause, and a refusal never stops the next load.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "recording_host.hpp"

#include <tracetunnel/host/plugin_library.hpp>

#include <cstdlib>
#include <fstream>
#include <string>

namespace {

std::string plugin_path(const char* name)
{
    const std::string var = std::string("TT_PLUGIN_") + name;
    const char* p = std::getenv(var.c_str());
    REQUIRE_MESSAGE(p != nullptr, "environment variable " << var << " is not set by meson");
    return p;
}

tt::host::load_error expect_refused(const std::string& path)
{
    auto opened = tt::host::open_plugin(path);
    REQUIRE_MESSAGE(std::holds_alternative<tt::host::load_error>(opened), path << " was accepted");
    return std::get<tt::host::load_error>(opened);
}

std::shared_ptr<tt::host::plugin_library> expect_loaded(const std::string& path)
{
    auto opened = tt::host::open_plugin(path);
    if (auto* err = std::get_if<tt::host::load_error>(&opened))
        FAIL("refused: " << err->message());
    return std::get<std::shared_ptr<tt::host::plugin_library>>(opened);
}

}  // namespace

TEST_CASE("a well-formed raw plugin loads, describes itself and starts")
{
    auto lib = expect_loaded(plugin_path("raw_ok"));
    CHECK(lib->description().name == "raw");
    CHECK(lib->description().version == "0.1");
    CHECK(lib->description().abi_version == TT_ABI_VERSION);
    CHECK_FALSE(lib->has_state_hooks());
    tt::test::recording_host host;
    tt_host api = host.api();
    CHECK(std::holds_alternative<std::monostate>(lib->start(api)));
    lib->stop();
}

TEST_CASE("a missing file is refused as not found")
{
    auto err = expect_refused("/nonexistent/libnothing.so");
    CHECK(err.code == tt::host::load_errc::not_found);
    CHECK(err.message().find("/nonexistent/libnothing.so") != std::string::npos);
}

TEST_CASE("a file that is not a shared object is refused")
{
    const std::string path = std::string(std::getenv("TT_TEST_TMPDIR") ? std::getenv("TT_TEST_TMPDIR") : ".") +
                             "/not_a_plugin.so";
    {
        std::ofstream out(path);
        out << "this is text, not ELF\n";
    }
    auto err = expect_refused(path);
    CHECK(err.code == tt::host::load_errc::not_a_shared_object);
    CHECK(err.message().find("not_a_plugin.so") != std::string::npos);
    CHECK(err.reason.find("ELF") != std::string::npos);

    // A truncated ELF header passes the magic check but not the reader.
    {
        std::ofstream out(path, std::ios::binary);
        out << "\x7f" "ELF" "\x02\x01";
    }
    err = expect_refused(path);
    CHECK(err.code == tt::host::load_errc::not_a_shared_object);
}

TEST_CASE("a missing required export is refused before the library is loaded")
{
    auto err = expect_refused(plugin_path("missing_stop"));
    CHECK(err.code == tt::host::load_errc::missing_export);
    CHECK(err.reason.find("tt_plugin_stop") != std::string::npos);
    CHECK(err.message().find("libbroken_missing_stop.so") != std::string::npos);
}

TEST_CASE("an older plugin ABI is refused with the versions and the fix")
{
    auto err = expect_refused(plugin_path("old_abi"));
    CHECK(err.code == tt::host::load_errc::incompatible_abi);
    CHECK(err.reason.find("0.9 is too old") != std::string::npos);
    CHECK(err.reason.find("rebuild the plugin") != std::string::npos);
}

TEST_CASE("a newer plugin ABI is refused: newer minor and newer major")
{
    auto minor = expect_refused(plugin_path("newer_minor"));
    CHECK(minor.code == tt::host::load_errc::incompatible_abi);
    CHECK(minor.reason.find("1.99 is newer") != std::string::npos);
    auto major = expect_refused(plugin_path("newer_major"));
    CHECK(major.code == tt::host::load_errc::incompatible_abi);
    CHECK(major.reason.find("2.0 is newer") != std::string::npos);
}

TEST_CASE("abi_incompatibility accepts exactly the supported range")
{
    CHECK(tt::host::abi_incompatibility(TT_ABI_VERSION).empty());
    CHECK(tt::host::abi_incompatibility(TT_ABI_MAKE_VERSION(TT_ABI_OLDEST_MAJOR, 0)).empty());
    CHECK_FALSE(tt::host::abi_incompatibility(TT_ABI_MAKE_VERSION(TT_ABI_VERSION_MAJOR + 1, 0)).empty());
    CHECK_FALSE(tt::host::abi_incompatibility(TT_ABI_MAKE_VERSION(TT_ABI_OLDEST_MAJOR - 1, 0xFFFF)).empty());
}

TEST_CASE("a description without a name is refused")
{
    auto err = expect_refused(plugin_path("no_name"));
    CHECK(err.code == tt::host::load_errc::bad_description);
    CHECK(err.reason.find("name") != std::string::npos);
}

TEST_CASE("a start that fails or throws is reported with the plugin name, and the next plugin still loads")
{
    tt::test::recording_host host;
    tt_host api = host.api();

    auto fails = expect_loaded(plugin_path("start_fails"));
    auto r1 = fails->start(api);
    REQUIRE(std::holds_alternative<tt::host::load_error>(r1));
    CHECK(std::get<tt::host::load_error>(r1).code == tt::host::load_errc::start_failed);
    CHECK(std::get<tt::host::load_error>(r1).reason.find("returned 7") != std::string::npos);
    CHECK(std::get<tt::host::load_error>(r1).message().find("'raw'") != std::string::npos);

    auto throws = expect_loaded(plugin_path("start_throws"));
    auto r2 = throws->start(api);
    REQUIRE(std::holds_alternative<tt::host::load_error>(r2));
    CHECK(std::get<tt::host::load_error>(r2).reason.find("threw") != std::string::npos);
    CHECK(std::get<tt::host::load_error>(r2).message().find("'thrower'") != std::string::npos);

    auto ok = expect_loaded(plugin_path("raw_ok"));
    CHECK(std::holds_alternative<std::monostate>(ok->start(api)));
    ok->stop();
}
