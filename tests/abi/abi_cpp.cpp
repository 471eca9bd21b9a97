// abi.h from C++: the same layout as C sees (static_asserts), usable in
// constant expressions, and the hash identical to the C build's.
#include <tracetunnel/abi.h>

#include <cstddef>
#include <cstdio>
#include <type_traits>

static_assert(std::is_standard_layout_v<tt_event> && std::is_trivially_copyable_v<tt_event>);
static_assert(std::is_standard_layout_v<tt_callsite> && std::is_trivially_copyable_v<tt_callsite>);
static_assert(sizeof(void*) != 8 || sizeof(tt_event) == 56);
static_assert(sizeof(void*) != 8 || sizeof(tt_callsite) == 104);
static_assert(sizeof(void*) != 8 || sizeof(tt_field_value) == 24);
static_assert(sizeof(void*) != 8 || sizeof(tt_host) == 24);
static_assert(sizeof(void*) != 8 || sizeof(tt_plugin_info) == 56);
static_assert(offsetof(tt_event, struct_size) == 0 && offsetof(tt_callsite, struct_size) == 0 &&
              offsetof(tt_host, struct_size) == 0 && offsetof(tt_plugin_info, struct_size) == 0,
              "every extensible record begins with its size");

int main()
{
    static const tt_str fields[2] = {{"a", 1}, {"b", 1}};
    tt_callsite cs{};
    cs.struct_size = sizeof cs;
    cs.kind = TT_CALLSITE_EVENT;
    cs.level = TT_LEVEL_INFO;
    cs.line = 42;
    cs.name = {"event demo.c:42", 15};
    cs.target = {"demo", 4};
    cs.module_path = {"demo", 4};
    cs.file = {"demo.c", 6};
    cs.field_names = fields;
    cs.field_count = 2;
    const uint64_t h = tt_callsite_hash(&cs);
    if (h != 0xadc188d999c3a65dull) {
        std::printf("FAIL: hash from C++ is %#llx\n", static_cast<unsigned long long>(h));
        return 1;
    }
    cs.line = 43;
    if (tt_callsite_hash(&cs) == h) {
        std::printf("FAIL: changing the line did not change the id\n");
        return 1;
    }
    std::printf("abi from C++: all checks passed\n");
    return 0;
}
