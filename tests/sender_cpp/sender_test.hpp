// Shared helpers of the C++ sender tests: load a test plugin named by the
// environment, call its extra exports, and print model events readably when
// a comparison fails.
#pragma once

#include "recording_host.hpp"
#include "sender_checks.hpp"

#include <tracetunnel/host/plugin_library.hpp>

#include <boost/dll/shared_library.hpp>
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <unistd.h>

namespace tt::test {

// The path of a plugin built by meson, from TT_PLUGIN_<name>; empty when unset.
inline std::string plugin_path(const std::string& name)
{
    const char* p = std::getenv(("TT_PLUGIN_" + name).c_str());
    return p ? std::string(p) : std::string();
}

// A plugin opened with the host's loader, plus a second handle on the same
// image for the test-only exports the loader does not know about.
struct loaded_plugin {
    std::shared_ptr<host::plugin_library> lib;
    boost::dll::shared_library raw;
    std::string path;  // the file mapped

    template <class Signature>
    Signature& get(const char* symbol)
    {
        return raw.get<Signature>(symbol);
    }
};

inline loaded_plugin open_test_plugin(const std::string& name)
{
    const std::string path = plugin_path(name);
    REQUIRE_MESSAGE(!path.empty(), "TT_PLUGIN_" << name << " is not set (run through meson test)");
    auto opened = host::open_plugin(path);
    if (auto* err = std::get_if<host::load_error>(&opened))
        FAIL(err->message());
    loaded_plugin out;
    out.lib = std::get<std::shared_ptr<host::plugin_library>>(opened);
    out.raw.load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    out.path = path;
    return out;
}

// The same from a private copy of the file: a fresh image with fresh
// globals, whatever became of earlier loads (dlclose need not unmap: a
// sanitizer runtime or a unique symbol can keep an image), as a host's
// shadow copies are.
inline loaded_plugin open_fresh_plugin(const std::string& name)
{
    static int copies = 0;
    const std::string path = plugin_path(name);
    REQUIRE_MESSAGE(!path.empty(), "TT_PLUGIN_" << name << " is not set (run through meson test)");
    const auto copy = std::filesystem::temp_directory_path() /
                      ("tt-test-" + std::to_string(::getpid()) + "-" + std::to_string(++copies) + "-" +
                       std::filesystem::path(path).filename().string());
    std::filesystem::copy_file(path, copy, std::filesystem::copy_options::overwrite_existing);
    auto opened = host::open_plugin(copy);
    if (auto* err = std::get_if<host::load_error>(&opened))
        FAIL(err->message());
    loaded_plugin out;
    out.lib = std::get<std::shared_ptr<host::plugin_library>>(opened);
    out.raw.load(copy, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    out.path = copy.string();
    return out;
}

std::string describe(const model::value& v);
std::string describe(const model::event& e);
std::string describe(const std::vector<model::event>& events);


}  // namespace tt::test
