// Checks shared by the C and C++ sender tests (doctest only).
#pragma once

#include <tracetunnel/abi.h>
#include <tracetunnel/model.hpp>

#include <doctest/doctest.h>
#include <elf.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace tt::test {

// tt_callsite_hash (abi.h, at run time) of an owned call site: what a
// sender's id must be for the data it sent.
inline std::uint64_t runtime_hash(const model::callsite& cs)
{
    auto str = [](const std::string& s) { return tt_str{s.data(), s.size()}; };
    std::vector<tt_str> names;
    for (const auto& f : cs.fields)
        names.push_back(str(f));
    tt_callsite abi{};
    abi.struct_size = sizeof abi;
    abi.kind = static_cast<tt_callsite_kind>(cs.kind);
    abi.level = static_cast<tt_level>(cs.level);
    abi.line = cs.line;
    abi.name = str(cs.name);
    abi.target = str(cs.target);
    abi.module_path = str(cs.module_path);
    abi.file = str(cs.file);
    abi.field_names = names.data();
    abi.field_count = static_cast<std::uint32_t>(names.size());
    return tt_callsite_hash(&abi);
}

// A 64-bit ELF file read whole, with its section headers: what the section
// and symbol checks of the sender tests look into.
struct elf_image {
    std::vector<char> file;
    std::vector<Elf64_Shdr> sections;
    std::size_t names_index = 0;  // e_shstrndx

    const char* at(std::uint64_t offset) const { return file.data() + offset; }
};

inline elf_image read_elf(const std::string& path)
{
    elf_image img;
    std::ifstream in(path, std::ios::binary);
    img.file.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    REQUIRE(img.file.size() >= sizeof(Elf64_Ehdr));
    Elf64_Ehdr eh;
    std::memcpy(&eh, img.file.data(), sizeof eh);
    REQUIRE(eh.e_ident[EI_CLASS] == ELFCLASS64);
    REQUIRE(eh.e_shoff + eh.e_shnum * sizeof(Elf64_Shdr) <= img.file.size());
    img.sections.resize(eh.e_shnum);
    std::memcpy(img.sections.data(), img.file.data() + eh.e_shoff, eh.e_shnum * sizeof(Elf64_Shdr));
    img.names_index = eh.e_shstrndx;
    return img;
}

// The size of a 64-bit ELF file's section `name`; 0 when there is none.
inline std::uint64_t section_size(const std::string& path, const std::string& name)
{
    const elf_image img = read_elf(path);
    const Elf64_Shdr& names = img.sections.at(img.names_index);
    for (const auto& sh : img.sections)
        if (name == img.at(names.sh_offset + sh.sh_name))
            return sh.sh_size;
    return 0;
}

}  // namespace tt::test
