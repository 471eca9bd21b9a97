/* The C ABI's layout, pinned: a size or offset that moves breaks every
 * plugin already built, so this test fails first. Values are for LP64. Also
 * pins the call-site hash: ids are persisted, so the function must never
 * change. Compiled as strict C99; the C++ twin is abi_layout_cpp.cpp. */
#include <tracetunnel/abi.h>

#include <stddef.h>
#include <stdio.h>

static int failures;

static void expect(const char *what, unsigned long long got, unsigned long long want)
{
    if (got != want) {
        printf("FAIL %s: got %llu, want %llu\n", what, got, want);
        ++failures;
    }
}

#define SIZE(type, want) expect("sizeof(" #type ")", sizeof(type), want)
#define OFFSET(type, member, want) expect("offsetof(" #type ", " #member ")", offsetof(type, member), want)

int main(void)
{
    static const tt_str fields[2] = {{"a", 1}, {"b", 1}};
    tt_callsite cs;

    if (sizeof(void *) != 8) {
        printf("SKIP: layout table is for 64-bit targets\n");
        return 77;
    }
    SIZE(tt_str, 16);
    SIZE(tt_u128, 16);
    SIZE(tt_error_chain, 16);
    SIZE(tt_field_value, 24);
    OFFSET(tt_field_value, kind, 4);
    OFFSET(tt_field_value, as, 8);
    SIZE(tt_callsite, 104);
    OFFSET(tt_callsite, id, 8);
    OFFSET(tt_callsite, level, 16);
    OFFSET(tt_callsite, line, 20);
    OFFSET(tt_callsite, name, 24);
    OFFSET(tt_callsite, target, 40);
    OFFSET(tt_callsite, module_path, 56);
    OFFSET(tt_callsite, file, 72);
    OFFSET(tt_callsite, field_names, 88);
    OFFSET(tt_callsite, field_count, 96);
    SIZE(tt_event, 56);
    OFFSET(tt_event, kind, 4);
    OFFSET(tt_event, span_id, 8);
    OFFSET(tt_event, related_span_id, 16);
    OFFSET(tt_event, callsite_id, 24);
    OFFSET(tt_event, callsite, 32);
    OFFSET(tt_event, values, 40);
    OFFSET(tt_event, value_count, 48);
    OFFSET(tt_event, parent, 52);
    SIZE(tt_host, 24);
    OFFSET(tt_host, emit, 8);
    OFFSET(tt_host, ctx, 16);
    SIZE(tt_plugin_info, 56);
    OFFSET(tt_plugin_info, name, 8);
    OFFSET(tt_plugin_info, version, 24);
    OFFSET(tt_plugin_info, description, 40);

    expect("TT_ABI_VERSION", TT_ABI_VERSION, 0x10000u);
    expect("TT_STATUS_ERROR_BIT", TT_STATUS_ERROR_BIT, 0x8000000000000000ull);

    cs.struct_size = sizeof cs;
    cs.kind = TT_CALLSITE_EVENT;
    cs.id = 0;
    cs.level = TT_LEVEL_INFO;
    cs.line = 42;
    cs.name.ptr = "event demo.c:42";
    cs.name.len = 15;
    cs.target.ptr = "demo";
    cs.target.len = 4;
    cs.module_path.ptr = "demo";
    cs.module_path.len = 4;
    cs.file.ptr = "demo.c";
    cs.file.len = 6;
    cs.field_names = fields;
    cs.field_count = 2;
    cs.reserved0 = 0;
    /* The pinned value was computed once, when the hash was defined. */
    expect("tt_callsite_hash(demo)", tt_callsite_hash(&cs), 0xadc188d999c3a65dull);

    if (failures == 0)
        printf("abi layout: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
