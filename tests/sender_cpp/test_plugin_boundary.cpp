// What a C++ plugin shows the host at its boundary: exactly the exports
// TT_PLUGIN defines, a refused start, and an image that really unloads.
#include "sender_test.hpp"
#include "sender_checks.hpp"

#include "scenario.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>

#include <cstring>
#include <fstream>
#include <set>

namespace {

struct dynamic_symbol {
    std::string name;
    unsigned binding;
    unsigned visibility;
};

// The defined symbols of a 64-bit ELF file's dynamic symbol table, as the
// dynamic linker sees them (nm -D --defined-only, without the tool).
std::vector<dynamic_symbol> defined_dynamic_symbols(const std::string& path)
{
    const tt::test::elf_image img = tt::test::read_elf(path);
    std::vector<dynamic_symbol> out;
    for (const auto& sh : img.sections) {
        if (sh.sh_type != SHT_DYNSYM)
            continue;
        const Elf64_Shdr& strtab = img.sections.at(sh.sh_link);
        const std::size_t count = sh.sh_size / sizeof(Elf64_Sym);
        for (std::size_t i = 1; i < count; ++i) {
            Elf64_Sym sym;
            std::memcpy(&sym, img.at(sh.sh_offset + i * sizeof(Elf64_Sym)), sizeof sym);
            if (sym.st_shndx == SHN_UNDEF)
                continue;
            out.push_back({std::string(img.at(strtab.sh_offset + sym.st_name)), ELF64_ST_BIND(sym.st_info),
                           ELF64_ST_VISIBILITY(sym.st_other)});
        }
    }
    return out;
}


std::string demangle(const std::string& name)
{
    int status = 0;
    char* text = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
    if (status != 0 || text == nullptr)
        return name;
    std::string out(text);
    std::free(text);
    return out;
}

// Instantiations of standard library templates made by the plugin's own
// code (here: std::throw_with_nested) are exported because namespace std
// has default visibility; they are not the sender's.
bool is_standard_library(const std::string& demangled)
{
    for (const char* prefix : {"std::", "typeinfo for std::", "typeinfo name for std::", "vtable for std::",
                               "non-virtual thunk to std::", "virtual thunk to std::", "void std::"})
        if (demangled.rfind(prefix, 0) == 0)
            return true;
    return false;
}

}  // namespace

TEST_CASE("a C++ test plugin exports exactly its entry points")
{
    const std::string path = tt::test::plugin_path("cpp_scenario");
    REQUIRE(!path.empty());
    const std::set<std::string> wanted = {
        "tt_plugin_abi_version",   "tt_plugin_describe",   "tt_plugin_start",
        "tt_plugin_stop",          "tt_plugin_interest_changed", "tt_plugin_save_state",
        "tt_plugin_restore_state", "scenario_run",         "scenario_evaluations",
    };
    const std::string asan_odr_prefix = "__odr_asan.";
    // GNU ld puts the bounds of the call-site table it synthesises into
    // .dynsym even when every reference is hidden; they stay STV_HIDDEN, and
    // the dynamic linker never binds another object to a hidden symbol.
    const std::set<std::string> section_bounds = {"__start_tt_cpp_sites", "__stop_tt_cpp_sites"};
    std::set<std::string> seen;
    for (const auto& sym : defined_dynamic_symbols(path)) {
        const std::string readable = demangle(sym.name);
        INFO("symbol " << readable);
        // STB_GNU_UNIQUE would tie plugins together and make dlclose a no-op.
        CHECK(sym.binding != STB_GNU_UNIQUE);
        CHECK(readable.find("tt::") == std::string::npos);
        if (wanted.count(sym.name)) {
            seen.insert(sym.name);
            CHECK(sym.binding == STB_GLOBAL);
        } else if (section_bounds.count(sym.name)) {
            CHECK(sym.visibility == STV_HIDDEN);
        } else if (sym.name.rfind(asan_odr_prefix, 0) == 0) {
            // -fsanitize=address adds an ODR indicator beside each exported global.
            CHECK(wanted.count(sym.name.substr(asan_odr_prefix.size())) == 1);
        } else {
            CHECK(is_standard_library(readable));
        }
    }
    CHECK(seen == wanted);
}

TEST_CASE("a C++ plugin's table of call sites holds one pointer per call site and file, nothing else")
{
    // SCENARIO_SITES call sites, the shared one listed by both files of the
    // plugin: exactly that many pointers, without padding (sanitizers
    // included) or entries for call sites compiled out.
    for (const char* name : {"cpp_scenario", "cpp_scenario_twin", "cpp_scenario_variant"}) {
        CAPTURE(name);
        CHECK(tt::test::section_size(tt::test::plugin_path(name), "tt_cpp_sites") == (SCENARIO_SITES + 1) * sizeof(void*));
    }
    // start_fail.cpp: two call sites in one file.
    CHECK(tt::test::section_size(tt::test::plugin_path("cpp_start_false"), "tt_cpp_sites") == 2 * sizeof(void*));
}

TEST_CASE("a C++ plugin unloads when its last handle goes")
{
    const std::string path = tt::test::plugin_path("cpp_scenario");
    {
        auto plugin = tt::test::open_test_plugin("cpp_scenario");
        tt::test::recording_host host;
        const tt_host api = host.api();
        REQUIRE(std::holds_alternative<std::monostate>(plugin.lib->start(api)));
        plugin.get<void(std::int32_t)>(SCENARIO_SYMBOL_RUN)(SCENARIO_SCRIPTED);
        plugin.lib->stop();
        void* probe = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
        CHECK(probe != nullptr);
        if (probe)
            dlclose(probe);
    }
    // Still mapped here would mean the sender made the image undeletable
    // (STB_GNU_UNIQUE symbols do that) or leaked a reference to it.
    void* after = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    CHECK(after == nullptr);
    if (after)
        dlclose(after);
}

TEST_CASE("a start function that refuses makes tt_plugin_start fail and leaves no host behind")
{
    for (const char* name : {"cpp_start_false", "cpp_start_throws"}) {
        CAPTURE(name);
        auto plugin = tt::test::open_test_plugin(name);
        tt::test::recording_host host;
        const tt_host api = host.api();
        auto result = plugin.lib->start(api);
        const auto* err = std::get_if<tt::host::load_error>(&result);
        REQUIRE(err != nullptr);
        CHECK(err->code == tt::host::load_errc::start_failed);
        CHECK(err->plugin == "cpp_start_fail");
        CHECK(err->reason.find("returned") != std::string::npos);  // an exception never crossed
        // Both call sites registered at start, then the start function's own
        // event got through while it ran...
        const auto during = host.events();
        REQUIRE(during.size() == 3);
        CHECK(std::holds_alternative<tt::model::new_callsite>(during[0]));
        CHECK(std::holds_alternative<tt::model::new_callsite>(during[1]));
        CHECK(std::holds_alternative<tt::model::new_event>(during[2]));
        // ...and after the refusal nothing does.
        plugin.get<void()>(SCENARIO_SYMBOL_EMIT_NOW)();
        CHECK(host.events().size() == during.size());
        CHECK(host.errors().empty());
    }
}
