/*
 * emit_after_stop: a raw-ABI plugin whose start launches a thread that emits
 * an event every ~100 us forever, through the emit and context captured at
 * that start. stop returns without stopping it: the misbehaviour a host must
 * survive (answer TT_STATUS_STOPPED, keep the library mapped). Counts are
 * exported for the test (test_app.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "hostile.h"
#include "test_app.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;

static const tt_plugin_info stray_info =
    HOSTILE_INFO("emit_after_stop", "Test plugin: a thread that outlives stop");

TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)
{
    return &stray_info;
}

static uint64_t emits_total;
static uint64_t emits_refused;

TT_EXPORT uint64_t hostile_emits_total(void)
{
    return __atomic_load_n(&emits_total, __ATOMIC_RELAXED);
}

TT_EXPORT uint64_t hostile_emits_refused(void)
{
    return __atomic_load_n(&emits_refused, __ATOMIC_RELAXED);
}

static const tt_str message_field[1] = {HOSTILE_STR("message")};
static tt_callsite stray_site = HOSTILE_EVENT_SITE("stray tick", "emit_after_stop", message_field);

/* What one stray thread owns: the host it was started with, never re-read. */
struct stray {
    tt_emit_fn emit;
    void *ctx;
    uint64_t callsite_id;
};

static void *stray_loop(void *arg)
{
    const struct stray self = *(const struct stray *)arg;
    const struct timespec pause = {0, 100000};
    tt_field_value value;
    tt_event ev;

    free(arg);
    value = hostile_str_value(0, "stray tick");
    ev = hostile_event(TT_EVENT_NEW_EVENT);
    ev.callsite_id = self.callsite_id;
    ev.values = &value;
    ev.value_count = 1;
    for (;;) {
        const uint64_t answer = self.emit(self.ctx, &ev);
        __atomic_add_fetch(&emits_total, 1u, __ATOMIC_RELAXED);
        if (TT_STATUS_IS_ERROR(answer) && TT_STATUS_CODE(answer) == TT_STATUS_STOPPED)
            __atomic_add_fetch(&emits_refused, 1u, __ATOMIC_RELAXED);
        nanosleep(&pause, NULL);
    }
    return NULL;
}

TT_EXPORT int32_t tt_plugin_start(const tt_host *host)
{
    struct stray *self;
    pthread_attr_t attr;
    pthread_t thread;
    tt_event ev;
    int failed;

    if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)
        return 1;
    hostile_seal(&stray_site);
    ev = hostile_event(TT_EVENT_NEW_CALLSITE);
    ev.callsite = &stray_site;
    (void)host->emit(host->ctx, &ev);

    self = (struct stray *)malloc(sizeof *self);
    if (self == NULL)
        return 2;
    self->emit = host->emit;
    self->ctx = host->ctx;
    self->callsite_id = stray_site.id;
    if (pthread_attr_init(&attr) != 0) {
        free(self);
        return 3;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    failed = pthread_create(&thread, &attr, stray_loop, self);
    pthread_attr_destroy(&attr);
    if (failed) {
        free(self);
        return 4;
    }
    return 0;
}

/* The misbehaviour: the thread started above goes on emitting. */
TT_EXPORT void tt_plugin_stop(void) {}
