/*
 * crash_jobs: the plugin the kill test (kill_tt_host.py) runs. Raw abi.h, so
 * that every span id the host answers is known: each example_tick opens one
 * "job" span and tells its id in a "job opened" event, records a value on
 * every open job, and ends the jobs whose time is up, saying whether the
 * host accepted the drop in a "job closed" event (after the drop, in the
 * same tick, so before any commit). Open jobs survive a stop through
 * save_state / restore_state ("<n> <span id>" lines); after a crash the
 * restored list may name spans the host no longer has, whose drops are then
 * refused (accepted: false).
 */
#define _POSIX_C_SOURCE 200809L

#include <tracetunnel/abi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

#define STR(lit) {(lit), sizeof(lit) - 1}

static const tt_plugin_info info = {sizeof(tt_plugin_info), 0, STR("crash_jobs"), STR("1.0"),
                                    STR("Test plugin: jobs whose span ids the kill test follows")};

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &info;
}

static const tt_str job_fields[2] = {STR("n"), STR("ticks")};
static const tt_str log_fields[3] = {STR("message"), STR("span"), STR("accepted")};
static tt_callsite job_site = {sizeof(tt_callsite), TT_CALLSITE_SPAN, 0, TT_LEVEL_INFO, __LINE__, STR("job"),
                               STR("crash_jobs"), STR("crash_jobs"), STR(__FILE__), job_fields, 2, 0};
static tt_callsite log_site = {sizeof(tt_callsite), TT_CALLSITE_EVENT, 0, TT_LEVEL_INFO, __LINE__, STR("job log"),
                               STR("crash_jobs"), STR("crash_jobs"), STR(__FILE__), log_fields, 3, 0};

#define MAX_JOBS 64
struct job {
    uint64_t n, span, ticks;
};
static struct job jobs[MAX_JOBS];
static uint32_t job_count;
static uint64_t next_n = 1;
static tt_emit_fn emit;
static void *ctx;

static uint64_t send(tt_event ev)
{
    ev.struct_size = sizeof ev;
    return emit(ctx, &ev);
}

static void say(const char *what, uint64_t span, int accepted)
{
    tt_field_value v[3];
    tt_event ev;
    memset(v, 0, sizeof v);
    memset(&ev, 0, sizeof ev);
    v[0].field = 0;
    v[0].kind = TT_VALUE_STR;
    v[0].as.str.ptr = what;
    v[0].as.str.len = strlen(what);
    v[1].field = 1;
    v[1].kind = TT_VALUE_U64;
    v[1].as.u64 = span;
    v[2].field = 2;
    v[2].kind = TT_VALUE_BOOL;
    v[2].as.boolean = accepted ? 1 : 0;
    ev.kind = TT_EVENT_NEW_EVENT;
    ev.callsite_id = log_site.id;
    ev.parent = TT_PARENT_ROOT;
    ev.values = v;
    ev.value_count = 3;
    (void)send(ev);
}

TT_EXPORT int32_t tt_plugin_start(const tt_host *host)
{
    tt_event ev;
    if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)
        return 1;
    emit = host->emit;
    ctx = host->ctx;
    if (job_site.id == 0)
        job_site.id = tt_callsite_hash(&job_site);
    if (log_site.id == 0)
        log_site.id = tt_callsite_hash(&log_site);
    memset(&ev, 0, sizeof ev);
    ev.kind = TT_EVENT_NEW_CALLSITE;
    ev.callsite = &job_site;
    (void)send(ev);
    ev.callsite = &log_site;
    (void)send(ev);
    return 0;
}

TT_EXPORT void tt_plugin_stop(void)
{
    emit = NULL;
}

TT_EXPORT int32_t tt_plugin_save_state(tt_write_fn write, void *write_ctx)
{
    char line[64];
    uint32_t i;
    int len = snprintf(line, sizeof line, "next %llu\n", (unsigned long long)next_n);
    if (write(write_ctx, line, (uint64_t)len) != 0)
        return 1;
    for (i = 0; i < job_count; ++i) {
        len = snprintf(line, sizeof line, "%llu %llu %llu\n", (unsigned long long)jobs[i].n,
                       (unsigned long long)jobs[i].span, (unsigned long long)jobs[i].ticks);
        if (write(write_ctx, line, (uint64_t)len) != 0)
            return 1;
    }
    return 0;
}

TT_EXPORT int32_t tt_plugin_restore_state(const void *data, uint64_t len)
{
    char *text = (char *)malloc(len + 1);
    char *line, *save = NULL;
    unsigned long long a, b, c;
    if (text == NULL)
        return 1;
    memcpy(text, data, len);
    text[len] = '\0';
    job_count = 0;
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (sscanf(line, "next %llu", &a) == 1) {
            next_n = a;
        } else if (sscanf(line, "%llu %llu %llu", &a, &b, &c) == 3 && job_count < MAX_JOBS) {
            jobs[job_count].n = a;
            jobs[job_count].span = b;
            jobs[job_count].ticks = c;
            ++job_count;
        } else {
            free(text);
            return 2;
        }
    }
    free(text);
    return 0;
}

TT_EXPORT void example_tick(uint64_t tick)
{
    tt_field_value v[2];
    tt_event ev;
    uint32_t i;
    (void)tick;
    if (emit == NULL)
        return;
    memset(v, 0, sizeof v);
    /* A new job, living 1 to 9 ticks. */
    if (job_count < MAX_JOBS) {
        uint64_t span;
        v[0].field = 0;
        v[0].kind = TT_VALUE_U64;
        v[0].as.u64 = next_n;
        memset(&ev, 0, sizeof ev);
        ev.kind = TT_EVENT_NEW_SPAN;
        ev.callsite_id = job_site.id;
        ev.parent = TT_PARENT_ROOT;
        ev.values = v;
        ev.value_count = 1;
        span = send(ev);
        if (!TT_STATUS_IS_ERROR(span) && span != 0) {
            jobs[job_count].n = next_n;
            jobs[job_count].span = span;
            jobs[job_count].ticks = 0;
            ++job_count;
            say("job opened", span, 1);
        }
        ++next_n;
    }
    for (i = 0; i < job_count;) {
        struct job *j = &jobs[i];
        ++j->ticks;
        if (j->ticks > 1 + j->n % 9) {
            const uint64_t span = j->span;
            memset(&ev, 0, sizeof ev);
            ev.kind = TT_EVENT_SPAN_DROPPED;
            ev.span_id = span;
            jobs[i] = jobs[--job_count];
            say("job closed", span, !TT_STATUS_IS_ERROR(send(ev)));
            continue;
        }
        v[1].field = 1;
        v[1].kind = TT_VALUE_U64;
        v[1].as.u64 = j->ticks;
        memset(&ev, 0, sizeof ev);
        ev.kind = TT_EVENT_VALUES_RECORDED;
        ev.span_id = j->span;
        ev.values = &v[1];
        ev.value_count = 1;
        (void)send(ev);
        ++i;
    }
}
