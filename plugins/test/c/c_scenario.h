/* What the c_scenario test plugin exports besides the tt_plugin_* entry
 * points; the test looks these up by name (tests/sender_c). */
#ifndef TT_TEST_C_SCENARIO_H
#define TT_TEST_C_SCENARIO_H

#include <stdint.h>

/* Arguments of c_scenario_run. */
#define C_SCENARIO_SCRIPT 1     /* every span operation, parent and value kind */
#define C_SCENARIO_KEEP_SPAN 2  /* creates a span and keeps its handle */
#define C_SCENARIO_USE_KEPT 3   /* every operation on the kept handle, then drops it */
#define C_SCENARIO_OTHER_FILE 4 /* emits from the plugin's second .c file */

typedef void (*c_scenario_run_fn)(int scenario);
/* Hits the "quiet" and the "maybe" event call sites `hits` times each. */
typedef void (*c_scenario_hits_fn)(uint64_t hits);
/* How many times an argument of the "quiet" call site was evaluated. */
typedef uint64_t (*c_scenario_evaluations_fn)(void);
/* A "worker" span holding `count` events numbered 0..count-1. */
typedef void (*c_scenario_burst_fn)(uint64_t worker, uint64_t count);

void c_scenario_other_file(void);

#endif
