/*
 * Test entry points of the plugins built for the plugin host's integration
 * tests (tests/host): plugins/test/reload (reloadable, threads) and
 * plugins/test/hostile (bogus_ids, too_many_values, emit_after_stop,
 * callsite_flood). A test finds them with dlsym (or
 * plugin_library::find_export) under the *_SYMBOL_* names below. Not part of
 * tracetunnel's ABI. C99 and C++.
 */
#ifndef TRACETUNNEL_TEST_APP_H
#define TRACETUNNEL_TEST_APP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- reloadable (reloadable.cpp; keys reloadable_v1 / reloadable_v2) ---- */

/* The span fields of the "job" call site, in order (for tt::span::adopt). */
#define RELOADABLE_JOB_FIELDS "key", "stage"

#define RELOADABLE_SYMBOL_OPEN "reloadable_open"
#define RELOADABLE_SYMBOL_STEP "reloadable_step"
#define RELOADABLE_SYMBOL_CLOSE "reloadable_close"
#define RELOADABLE_SYMBOL_OPEN_COUNT "reloadable_open_count"
#define RELOADABLE_SYMBOL_BUILD "reloadable_build"

/* Opens span "job" {key, stage} kept under `key` (replacing and closing an older one) with "job opened" in it; returns its span id, 0 if disabled. */
uint64_t reloadable_open(uint64_t key);
/* Inside job `key`: INFO "working v1"/"working v2", in v2 also WARN "extra step in v2"; records stage = build. Unknown key: nothing. */
void reloadable_step(uint64_t key);
/* Drops (closes) job `key`; unknown key: nothing. */
void reloadable_close(uint64_t key);
/* How many jobs are open (including those carried over by the plugin state). */
uint64_t reloadable_open_count(void);
/* "v1" or "v2": which build this library is. */
const char *reloadable_build(void);

typedef uint64_t (*reloadable_open_fn)(uint64_t key);
typedef void (*reloadable_step_fn)(uint64_t key);
typedef void (*reloadable_close_fn)(uint64_t key);
typedef uint64_t (*reloadable_open_count_fn)(void);
typedef const char *(*reloadable_build_fn)(void);

/* ---- threads (threads.cpp; key threads) ---- */

#define THREADS_WORKERS 4
#define THREADS_SYMBOL_SPANS_OPENED "threads_spans_opened"

/* "work" spans the worker threads opened (host answered a span id) since this library was loaded. */
uint64_t threads_spans_opened(void);

typedef uint64_t (*threads_spans_opened_fn)(void);

/* ---- hostile plugins (plugins/test/hostile; raw abi.h) ---- */

#define HOSTILE_SYMBOL_RUN "hostile_run"
#define HOSTILE_SYMBOL_ANSWER "hostile_answer"
#define HOSTILE_SYMBOL_ANSWER_COUNT "hostile_answer_count"
#define HOSTILE_SYMBOL_EMITS_TOTAL "hostile_emits_total"
#define HOSTILE_SYMBOL_EMITS_REFUSED "hostile_emits_refused"
#define HOSTILE_SYMBOL_REFUSED_COUNT "hostile_refused_count"
#define HOSTILE_SYMBOL_ACCEPTED_COUNT "hostile_accepted_count"

/* What hostile_answer returns for an index past hostile_answer_count (has the error bit). */
#define HOSTILE_ANSWER_OUT_OF_RANGE UINT64_MAX
/* bogus_ids: hostile probes answered, then the 2 valid closing emits (NEW_CALLSITE, NEW_EVENT "still alive"). */
#define HOSTILE_BOGUS_PROBES 6
/* callsite_flood: how many distinct event call sites hostile_run registers. */
#define HOSTILE_FLOOD_SITES 10000
/* too_many_values: fields of its call site and values of its one event. */
#define HOSTILE_TOO_MANY_VALUES 100

/* bogus_ids, too_many_values, callsite_flood: sends the plugin's misbehaviour once (forgets the previous run's answers); nothing when stopped. */
void hostile_run(void);
/* bogus_ids, too_many_values: the host's answer to emit number i of the last run (bogus_ids: the 6 probes, then the 2 valid emits; too_many_values: NEW_CALLSITE, NEW_EVENT). */
uint64_t hostile_answer(uint32_t i);
/* bogus_ids, too_many_values: how many answers the last run stored. */
uint32_t hostile_answer_count(void);
/* emit_after_stop: events its stray threads sent so far (also after stop). */
uint64_t hostile_emits_total(void);
/* emit_after_stop: of those, answers that were errors with TT_STATUS_STOPPED. */
uint64_t hostile_emits_refused(void);
/* callsite_flood: NEW_CALLSITE answers that were errors (all runs). */
uint32_t hostile_refused_count(void);
/* callsite_flood: NEW_CALLSITE answers that were not errors (all runs). */
uint32_t hostile_accepted_count(void);

typedef void (*hostile_run_fn)(void);
typedef uint64_t (*hostile_answer_fn)(uint32_t i);
typedef uint32_t (*hostile_answer_count_fn)(void);
typedef uint64_t (*hostile_emits_total_fn)(void);
typedef uint64_t (*hostile_emits_refused_fn)(void);
typedef uint32_t (*hostile_refused_count_fn)(void);
typedef uint32_t (*hostile_accepted_count_fn)(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TRACETUNNEL_TEST_APP_H */
