/*
 * sensor: the example plugin in pure C. Each tick of the demo host samples
 * a few (simulated) temperature sensors inside a "sampling" span, emits one
 * event per reading and a warning when a reading crosses the threshold.
 * How many ticks it has seen survives a hot reload (TT_C_PLUGIN_STATE).
 */
#define TT_TARGET "sensor"
#include <tracetunnel/trace.h>

#include "example_app.h"

#include <string.h>

#define SENSOR_COUNT 3u
#define SENSOR_THRESHOLD_CELSIUS 30.0

/* Only the demo host's tick thread touches this; atomics keep it honest if
 * a host ever ticks from more than one. */
static uint64_t ticks_seen;

/* A deterministic saw-tooth per sensor, so that runs are reproducible and
 * some ticks cross the threshold: 20.0 .. 34.5 degrees. */
static double sensor_read(uint64_t tick, uint32_t sensor)
{
    return 20.0 + (double)((tick * 3u + sensor * 7u) % 30u) * 0.5;
}

static int sensor_start(void)
{
    TT_INFO("sensor started", TT_V_U64("sensors", SENSOR_COUNT), TT_V_F64("threshold", SENSOR_THRESHOLD_CELSIUS),
            TT_V_U64("ticks_seen", __atomic_load_n(&ticks_seen, __ATOMIC_RELAXED)));
    return 0;
}

static void sensor_stop(void)
{
    TT_INFO("sensor stopping", TT_V_U64("ticks_seen", __atomic_load_n(&ticks_seen, __ATOMIC_RELAXED)));
}

TT_C_PLUGIN("sensor", "1.0.0", "Periodic temperature readings (example plugin in C)", sensor_start, sensor_stop);

/* The state across a reload is the tick counter, 8 bytes, little-endian. */
static int32_t sensor_save(tt_write_fn write, void *write_ctx)
{
    unsigned char bytes[8];
    uint64_t n = __atomic_load_n(&ticks_seen, __ATOMIC_RELAXED);
    unsigned i;
    for (i = 0; i < 8u; ++i)
        bytes[i] = (unsigned char)(n >> (8u * i));
    return write(write_ctx, bytes, sizeof bytes);
}

static int32_t sensor_restore(const void *data, uint64_t len)
{
    const unsigned char *bytes = (const unsigned char *)data;
    uint64_t n = 0;
    unsigned i;
    if (len != 8u)
        return -1; /* not ours: start from zero rather than guess */
    for (i = 0; i < 8u; ++i)
        n |= (uint64_t)bytes[i] << (8u * i);
    __atomic_store_n(&ticks_seen, n, __ATOMIC_RELAXED);
    return 0;
}

TT_C_PLUGIN_STATE(sensor_save, sensor_restore);

TT_EXPORT void example_tick(uint64_t tick);

TT_EXPORT void example_tick(uint64_t tick)
{
    uint32_t i;
    double max = 0.0;
    tt_span sampling = TT_SPAN_INFO("sampling", TT_V_U64("tick", tick), TT_V_EMPTY("max_celsius"));

    __atomic_add_fetch(&ticks_seen, 1u, __ATOMIC_RELAXED);
    tt_span_enter(&sampling);
    for (i = 0; i < SENSOR_COUNT; ++i) {
        const double celsius = sensor_read(tick, i);
        if (celsius > max)
            max = celsius;
        TT_INFO("reading taken", TT_V_U64("sensor", i), TT_V_F64("celsius", celsius), TT_V_STR("unit", "C"));
        if (celsius > SENSOR_THRESHOLD_CELSIUS)
            TT_WARN("reading above threshold", TT_V_U64("sensor", i), TT_V_F64("celsius", celsius),
                    TT_V_F64("threshold", SENSOR_THRESHOLD_CELSIUS));
    }
    TT_SPAN_RECORD(&sampling, TT_V_F64("max_celsius", max));
    tt_span_exit(&sampling);
    tt_span_drop(&sampling);
}
