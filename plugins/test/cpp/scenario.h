/*
 * Test entry points of the C++ sender test plugins (scenario.cpp), called by
 * tests/sender_cpp. Not part of tracetunnel's ABI.
 */
#ifndef TRACETUNNEL_TEST_CPP_SCENARIO_H
#define TRACETUNNEL_TEST_CPP_SCENARIO_H

#include <stdint.h>

/* What scenario_run does. */
#define SCENARIO_SCRIPTED 0 /* the scripted span/event sequence the test expects exactly */
#define SCENARIO_NOISY 1    /* 100 hits of one debug event (field "noisy") */
#define SCENARIO_WORKER 2   /* one span entered around one event: for threads */
#define SCENARIO_IDS 3      /* two stable call sites and one that differs in the variant build */
#define SCENARIO_COMPILED_OUT 4 /* hits call sites above TT_STATIC_MAX_LEVEL (field "compiled_out") */
#define SCENARIO_SHARED 5       /* the call site of an inline function, from both files (field "shared") */

/* How many call sites the plugin registers at start. */
#define SCENARIO_SITES 15

#define SCENARIO_SYMBOL_RUN "scenario_run"
#define SCENARIO_SYMBOL_EVALUATIONS "scenario_evaluations"
#define SCENARIO_SYMBOL_EMIT_NOW "start_fail_emit"

typedef void (*scenario_run_fn)(int32_t which);
/* How many times a field value of SCENARIO_NOISY was evaluated. */
typedef int32_t (*scenario_evaluations_fn)(void);
/* start_fail.cpp: emits one event, to show that a refused start left no host behind. */
typedef void (*start_fail_emit_fn)(void);

/* The state scenario.cpp saves and accepts back. */
#define SCENARIO_STATE "cpp-scenario-state"

#endif
