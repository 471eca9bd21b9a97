// Small helpers the plugin-host tests share (tests/host, tests/isolation):
// paths handed over by meson, a fresh folder per case, polling with a bound,
// and a value as text for assertions. Header-only; needs doctest.
#pragma once

#include <doctest/doctest.h>

#include <tracetunnel/model.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>

namespace tt::test {

// A path the test's meson.build sets in the environment.
inline std::filesystem::path env_path(const std::string& key)
{
    const char* p = std::getenv(key.c_str());
    REQUIRE_MESSAGE(p != nullptr, key << " is not set by the test's meson.build");
    return p;
}

// A test plugin built by meson: TT_PLUGIN_<key>.
inline std::filesystem::path plugin_file(const std::string& key)
{
    return env_path("TT_PLUGIN_" + key);
}

// An empty folder per test case, under TT_TEST_TMPDIR (the build folder) or /tmp.
inline std::filesystem::path fresh_dir(std::string_view prefix, const std::string& name)
{
    const char* base = std::getenv("TT_TEST_TMPDIR");
    const std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                                      (std::string(prefix) + "-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

// Polls `pred` until it holds or `limit` passes (a bound, not a timing).
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10),
                std::chrono::milliseconds step = std::chrono::milliseconds(10))
{
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (pred())
            return true;
        std::this_thread::sleep_for(step);
    }
    return pred();
}

// A field value as the assertions compare it.
inline std::string text_of(const model::value& v)
{
    if (auto* s = std::get_if<std::string>(&v))
        return *s;
    if (auto* u = std::get_if<std::uint64_t>(&v))
        return std::to_string(*u);
    if (auto* i = std::get_if<std::int64_t>(&v))
        return std::to_string(*i);
    if (auto* b = std::get_if<bool>(&v))
        return *b ? "true" : "false";
    if (auto* d = std::get_if<model::debug_text>(&v))
        return d->text;
    return "?";
}

}  // namespace tt::test
