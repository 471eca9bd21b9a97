/*
 * callsite_flood: a raw-ABI plugin whose hostile_run registers
 * HOSTILE_FLOOD_SITES distinct, valid event call sites ("flood 0" ..
 * "flood 9999"), far past a host's call-site quota, and counts the answers
 * (test_app.h).
 */
#include "hostile.h"
#include "test_app.h"

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info flood_info = HOSTILE_INFO("callsite_flood", "Test plugin: a flood of call sites");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &flood_info;
}

static tt_emit_fn flood_emit;
static void *flood_ctx;

TT_EXPORT int32_t tt_plugin_start(const tt_host *host)
{
    if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)
        return 1;
    flood_emit = host->emit;
    flood_ctx = host->ctx;
    return 0;
}

TT_EXPORT void tt_plugin_stop(void)
{
    flood_emit = NULL;
    flood_ctx = NULL;
}

static uint32_t refused_count;
static uint32_t accepted_count;

TT_EXPORT uint32_t hostile_refused_count(void)
{
    return refused_count;
}

TT_EXPORT uint32_t hostile_accepted_count(void)
{
    return accepted_count;
}

/* The call sites and their names live as long as the library: the host may
 * read a call site only during the emit, but a real sender's are static too. */
#define FLOOD_NAME_MAX 16
static char name_text[HOSTILE_FLOOD_SITES][FLOOD_NAME_MAX];
static tt_callsite sites[HOSTILE_FLOOD_SITES];
static const tt_str message_field[1] = {HOSTILE_STR("message")};
static int sites_ready;

/* Writes "flood <n>" into buf; returns its length. */
static uint64_t flood_name(char *buf, uint32_t n)
{
    static const char prefix[] = "flood ";
    char digits[10];
    uint64_t len = sizeof prefix - 1;
    uint32_t d = 0;
    memcpy(buf, prefix, len);
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    while (d > 0)
        buf[len++] = digits[--d];
    return len;
}

static void build_sites(void)
{
    static const tt_str target = HOSTILE_STR("callsite_flood");
    static const tt_str file = HOSTILE_STR(__FILE__);
    uint32_t i;
    for (i = 0; i < HOSTILE_FLOOD_SITES; ++i) {
        tt_callsite *cs = &sites[i];
        memset(cs, 0, sizeof *cs);
        cs->struct_size = sizeof(tt_callsite);
        cs->kind = TT_CALLSITE_EVENT;
        cs->level = TT_LEVEL_INFO;
        cs->line = (uint32_t)__LINE__;
        cs->name.ptr = name_text[i];
        cs->name.len = flood_name(name_text[i], i);
        cs->target = target;
        cs->module_path = target;
        cs->file = file;
        cs->field_names = message_field;
        cs->field_count = 1;
        cs->id = tt_callsite_hash(cs);
    }
    sites_ready = 1;
}

TT_EXPORT void hostile_run(void)
{
    uint32_t i;
    if (flood_emit == NULL)
        return;
    if (!sites_ready)
        build_sites();
    for (i = 0; i < HOSTILE_FLOOD_SITES; ++i) {
        tt_event ev = hostile_event(TT_EVENT_NEW_CALLSITE);
        ev.callsite = &sites[i];
        if (TT_STATUS_IS_ERROR(flood_emit(flood_ctx, &ev)))
            ++refused_count;
        else
            ++accepted_count;
    }
}
