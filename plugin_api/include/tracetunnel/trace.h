/*
 * tracetunnel C sender: spans and events for plugins written in C99.
 *
 * Header-only, over abi.h and the C standard library; needs GCC or Clang
 * (atomic builtins). Nothing on the emit path allocates; every macro is
 * thread-safe and a no-op while the plugin is not started.
 *
 *   #define TT_TARGET "sensor"            // optional, before the include
 *   #include <tracetunnel/trace.h>
 *
 *   static int start(void) { return 0; }
 *   static void stop(void) {}
 *   TT_C_PLUGIN("sensor", "1.0.0", "Periodic readings", start, stop);
 *
 *   void sample(uint64_t id, double t)
 *   {
 *       tt_span s = TT_SPAN_INFO("sampling", TT_V_U64("sensor", id), TT_V_EMPTY("max"));
 *       tt_span_enter(&s);
 *       TT_INFO("reading taken", TT_V_F64("celsius", t), TT_V_STR("unit", "C"));
 *       TT_SPAN_RECORD(&s, TT_V_F64("max", t));
 *       tt_span_exit(&s);
 *       tt_span_drop(&s);
 *   }
 *
 * Naming: events are TT_ERROR / TT_WARN / TT_INFO / TT_DEBUG / TT_TRACE
 * (TT_LOG* for an explicit level or parent), spans TT_SPAN_<LEVEL> (TT_SPAN*
 * likewise), and every field value is a TT_V_<KIND>("name", ...) macro, so a
 * value kind never collides with a level (TT_V_DEBUG is a debug-formatted
 * value, TT_DEBUG an event). Field names are string literals, at most
 * TT_MAX_FIELDS per macro, distinct within one macro; an event's message
 * travels as field 0, "message", so no field of an event may be called that.
 *
 * Several .c files can make one plugin: exactly one of them says
 * TT_C_PLUGIN(...); the per-plugin state it defines is hidden, so two
 * plugins in one process never share it. The TT_* macros must not be used
 * inside a non-static `inline` function (C99 forbids its static objects).
 * Identifiers beginning tt_m_ are the macros' own; do not use them.
 *
 * Call sites register with the host when the plugin starts: every macro
 * expansion leaves a pointer to its call site in the section tt_c_sites,
 * and tt_plugin_start registers them all (of every .c file of the plugin)
 * before the user's start runs, so the host knows each one before its first
 * hit. After the host's interest changes, a site registers again on its
 * next hit.
 *
 * This header also compiles as C++ (for tooling); C++ plugins use trace.hpp,
 * whose macros have the same names, so a file includes one or the other.
 */
#ifndef TRACETUNNEL_TRACE_H
#define TRACETUNNEL_TRACE_H

#include <tracetunnel/abi.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__GNUC__)
#error "tracetunnel/trace.h needs GCC or Clang: it relies on __atomic builtins"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The filter target of every call site in the file (and its module_path);
 * define it before the include to name your plugin's module. */
#ifndef TT_TARGET
#define TT_TARGET "plugin"
#endif

/* Compile-time level floor: call sites less severe than this compile to
 * nothing at all (e.g. -DTT_MAX_LEVEL=TT_LEVEL_INFO drops debug and trace). */
#ifndef TT_MAX_LEVEL
#define TT_MAX_LEVEL TT_LEVEL_TRACE
#endif

/* Fields per macro; an error chain converted by TT_V_ERROR_CHAIN is cut
 * after TT_ERROR_CHAIN_MAX messages (it lives on the stack). */
#define TT_MAX_FIELDS 32
#define TT_ERROR_CHAIN_MAX 16

#define TT_C_HIDDEN_ __attribute__((visibility("hidden")))

/* ------------------------------------------------------------------ */
/* Types                                                              */
/* ------------------------------------------------------------------ */

/* One macro expansion's call site: the ABI record (static data; its id is
 * filled in at first registration, as C cannot hash at compile time) plus
 * the host's interest cached in `state`. */
typedef struct tt_site {
    tt_callsite meta;
    int state;            /* TT_SITE_*_; read with one relaxed load per hit */
    int listed;           /* 1 once on the plugin's list of sites */
    struct tt_site *next; /* that list: push-only, so walking it needs no lock */
} tt_site;

#define TT_SITE_UNREGISTERED_ 0
#define TT_SITE_NEVER_ 1
#define TT_SITE_SOMETIMES_ 2
#define TT_SITE_ALWAYS_ 3

/* A handle to one span. id 0 means disabled (filtered out, or created while
 * the plugin was stopped): every operation on it is a no-op. `site` lets
 * TT_SPAN_RECORD find a field's index by name. Copying the struct does not
 * make a new handle for the host: use tt_span_clone for that, and give each
 * handle back with tt_span_drop. */
typedef struct tt_span {
    tt_span_id id;
    const tt_site *site;
} tt_span;

/* A disabled handle, for declarations: `tt_span s = TT_SPAN_NONE;`. */
#define TT_SPAN_NONE {0, NULL}

/* emit and ctx are published together as one pointer, so a thread never
 * pairs one host's emit with another's ctx across a stop and a restart. */
typedef struct tt_c_host_ {
    tt_emit_fn emit;
    void *ctx;
} tt_c_host_;

typedef struct tt_c_plugin_state_ {
    const tt_c_host_ *current; /* NULL while stopped */
    tt_c_host_ slots[2];       /* start fills the one not current */
    uint32_t next_slot;
    uint32_t generation; /* bumped whenever cached interest is dropped */
    tt_site *sites;      /* every site that ever registered */
} tt_c_plugin_state_;

/* Defined by TT_C_PLUGIN in exactly one file of the plugin. An undefined
 * reference to it at link time means no file of the plugin says TT_C_PLUGIN. */
extern TT_C_HIDDEN_ tt_c_plugin_state_ tt_c_plugin_;

/* Every call site compiled into the plugin has a pointer to it in this ELF
 * section (see TT_M_SITE_ENTRY_); the name is a C identifier, so the linker
 * defines __start_tt_c_sites and __stop_tt_c_sites around it. Weak: a plugin
 * without call sites has no such section and both are NULL. Hidden: each
 * plugin walks its own section. */
#define TT_C_SITES_SECTION_ "tt_c_sites"
extern TT_C_HIDDEN_ tt_site *__start_tt_c_sites[] __attribute__((weak));
extern TT_C_HIDDEN_ tt_site *__stop_tt_c_sites[] __attribute__((weak));

/* ------------------------------------------------------------------ */
/* Strings                                                            */
/* ------------------------------------------------------------------ */

/* A tt_str of a NUL-terminated string; NULL gives the empty string. */
static inline tt_str tt_cstr(const char *s)
{
    tt_str out;
    out.ptr = s;
    out.len = s == NULL ? 0u : (uint64_t)strlen(s);
    return out;
}

/* A tt_str of a pointer and a length (need not be NUL-terminated). */
static inline tt_str tt_strn(const char *s, uint64_t len)
{
    tt_str out;
    out.ptr = s;
    out.len = s == NULL ? 0u : len;
    return out;
}

/* A tt_str initializer for a string literal, usable in static data. */
#define TT_STR_LIT(lit) {"" lit, sizeof("" lit) - 1u}

/* ------------------------------------------------------------------ */
/* Internals: values                                                  */
/* ------------------------------------------------------------------ */

#define TT_NO_FIELD_ 0xFFFFFFFFu

static inline tt_field_value tt_v_init_(uint32_t field, tt_value_kind kind)
{
    tt_field_value v;
    /* Zero the whole union so no stack garbage crosses to the host. */
    memset(&v, 0, sizeof v);
    v.field = field;
    v.kind = kind;
    return v;
}

static inline tt_field_value tt_v_bool_(uint32_t field, int b)
{
    tt_field_value v = tt_v_init_(field, TT_VALUE_BOOL);
    v.as.boolean = (uint8_t)(b != 0);
    return v;
}

static inline tt_field_value tt_v_i64_(uint32_t field, int64_t x)
{
    tt_field_value v = tt_v_init_(field, TT_VALUE_I64);
    v.as.i64 = x;
    return v;
}

static inline tt_field_value tt_v_u64_(uint32_t field, uint64_t x)
{
    tt_field_value v = tt_v_init_(field, TT_VALUE_U64);
    v.as.u64 = x;
    return v;
}

static inline tt_field_value tt_v_128_(uint32_t field, tt_value_kind kind, uint64_t hi, uint64_t lo)
{
    tt_field_value v = tt_v_init_(field, kind);
    v.as.u128.hi = hi;
    v.as.u128.lo = lo;
    return v;
}

static inline tt_field_value tt_v_f64_(uint32_t field, double x)
{
    tt_field_value v = tt_v_init_(field, TT_VALUE_F64);
    v.as.f64 = x;
    return v;
}

static inline tt_field_value tt_v_str_(uint32_t field, tt_value_kind kind, tt_str s)
{
    tt_field_value v = tt_v_init_(field, kind);
    v.as.str = s;
    return v;
}

static inline tt_field_value tt_v_error_(uint32_t field, const tt_str *chain, uint64_t len)
{
    tt_field_value v = tt_v_init_(field, TT_VALUE_ERROR);
    v.as.error.chain = chain;
    v.as.error.len = len;
    return v;
}

/* Converts C strings into `buffer` (TT_ERROR_CHAIN_MAX long, on the caller's
 * stack) so that no allocation is needed. */
static inline tt_field_value tt_v_error_cstrs_(uint32_t field, tt_str *buffer, const char *const *msgs, uint64_t n)
{
    uint64_t i;
    if (n > TT_ERROR_CHAIN_MAX)
        n = TT_ERROR_CHAIN_MAX;
    for (i = 0; i < n; ++i)
        buffer[i] = tt_cstr(msgs[i]);
    return tt_v_error_(field, buffer, n);
}

/* The last element of every macro's value array: C99 has no empty
 * initializer lists, and this one is never sent. */
static inline tt_field_value tt_v_end_(void)
{
    return tt_v_init_(TT_NO_FIELD_, 0u);
}

/* ------------------------------------------------------------------ */
/* Internals: the host binding and call-site registration            */
/* ------------------------------------------------------------------ */

static inline const tt_c_host_ *tt_c_host_now_(void)
{
    return __atomic_load_n(&tt_c_plugin_.current, __ATOMIC_ACQUIRE);
}

static inline void tt_c_event_init_(tt_event *ev, tt_event_kind kind)
{
    memset(ev, 0, sizeof *ev);
    ev->struct_size = (uint32_t)sizeof *ev;
    ev->kind = kind;
    ev->parent = TT_PARENT_CONTEXTUAL;
}

/* The id is a pure function of the static data, so threads racing here
 * compute the same value; the CAS makes the one write happen before any
 * read by the host. */
static inline uint64_t tt_site_id_(tt_site *site)
{
    uint64_t id = __atomic_load_n(&site->meta.id, __ATOMIC_ACQUIRE);
    if (id == 0) {
        uint64_t expected = 0;
        id = tt_callsite_hash(&site->meta);
        if (!__atomic_compare_exchange_n(&site->meta.id, &expected, id, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            id = expected;
    }
    return id;
}

static inline void tt_site_list_(tt_site *site)
{
    int unlisted = 0;
    tt_site *head;
    if (!__atomic_compare_exchange_n(&site->listed, &unlisted, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return;
    head = __atomic_load_n(&tt_c_plugin_.sites, __ATOMIC_RELAXED);
    do {
        site->next = head; /* not yet published: nobody else reads it */
    } while (!__atomic_compare_exchange_n(&tt_c_plugin_.sites, &head, site, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/* Drops every cached interest, so each site registers again on its next hit
 * (with the current host, after a restart). */
static inline void tt_c_reset_sites_(void)
{
    tt_site *s;
    __atomic_add_fetch(&tt_c_plugin_.generation, 1u, __ATOMIC_SEQ_CST);
    for (s = __atomic_load_n(&tt_c_plugin_.sites, __ATOMIC_ACQUIRE); s != NULL; s = s->next)
        __atomic_store_n(&s->state, TT_SITE_UNREGISTERED_, __ATOMIC_SEQ_CST);
}

/* Registers a site with the current host: for every listed site at start
 * (tt_c_register_all_sites_), else on the hit of an unregistered site (after
 * interest was dropped, or a site the start did not list). Two threads may
 * both register one site: registration is idempotent on the host, and
 * waiting for each other could deadlock with a host that holds a lock.
 * Returns the state to act on for this hit. */
static inline int tt_site_register_(tt_site *site)
{
    const tt_c_host_ *host = tt_c_host_now_();
    tt_event ev;
    uint64_t answer;
    uint32_t generation;
    int state;
    if (host == NULL)
        return TT_SITE_UNREGISTERED_; /* not started: stay unregistered, emit nothing */
    tt_site_id_(site);
    tt_site_list_(site);
    generation = __atomic_load_n(&tt_c_plugin_.generation, __ATOMIC_SEQ_CST);
    tt_c_event_init_(&ev, TT_EVENT_NEW_CALLSITE);
    ev.callsite = &site->meta;
    answer = host->emit(host->ctx, &ev);
    if (TT_STATUS_IS_ERROR(answer) || answer == TT_INTEREST_NEVER)
        state = TT_SITE_NEVER_; /* a refused site is silent until interest changes */
    else if (answer == TT_INTEREST_ALWAYS)
        state = TT_SITE_ALWAYS_;
    else
        state = TT_SITE_SOMETIMES_;
    __atomic_store_n(&site->state, state, __ATOMIC_SEQ_CST);
    /* Interest dropped while the host answered: the answer may be stale. */
    if (__atomic_load_n(&tt_c_plugin_.generation, __ATOMIC_SEQ_CST) != generation)
        __atomic_store_n(&site->state, TT_SITE_UNREGISTERED_, __ATOMIC_SEQ_CST);
    return state;
}

/* Registers every call site of the plugin's table with the current host,
 * from tt_plugin_start before the user's start: the host learns the whole
 * list at once, hit counts 0. Each answer is cached exactly as a first hit
 * would cache it (a refusal leaves the site silent until interest changes);
 * a site already registered, or listed twice, is not asked again. Sites the
 * table does not hold, and every site after interest changed, still
 * register on their next hit. */
static inline void tt_c_register_all_sites_(void)
{
    tt_site *const *entry = __start_tt_c_sites;
    tt_site *const *end = __stop_tt_c_sites;
    if (entry == NULL || end == NULL)
        return;
    for (; entry < end; ++entry)
        if (*entry != NULL && __atomic_load_n(&(*entry)->state, __ATOMIC_RELAXED) == TT_SITE_UNREGISTERED_)
            tt_site_register_(*entry);
}

/* Explicit parent that is disabled or missing: the span or event becomes a
 * root, as tracing does with `parent: None`. */
static inline void tt_c_set_parent_(tt_event *ev, tt_parent_mode mode, const tt_span *parent)
{
    if (mode == TT_PARENT_EXPLICIT) {
        if (parent != NULL && parent->id != 0)
            ev->related_span_id = parent->id;
        else
            mode = TT_PARENT_ROOT;
    }
    ev->parent = mode;
}

static inline void tt_site_event_(tt_site *site, tt_parent_mode mode, const tt_span *parent,
                                  const tt_field_value *values, uint32_t count)
{
    const tt_c_host_ *host = tt_c_host_now_();
    tt_event ev;
    if (host == NULL)
        return;
    tt_c_event_init_(&ev, TT_EVENT_NEW_EVENT);
    ev.callsite_id = tt_site_id_(site);
    ev.values = values;
    ev.value_count = count;
    tt_c_set_parent_(&ev, mode, parent);
    host->emit(host->ctx, &ev);
}

static inline tt_span tt_site_span_(tt_site *site, tt_parent_mode mode, const tt_span *parent,
                                    const tt_field_value *values, uint32_t count)
{
    const tt_c_host_ *host = tt_c_host_now_();
    tt_span span;
    tt_event ev;
    uint64_t answer;
    span.id = 0;
    span.site = site;
    if (host == NULL)
        return span;
    tt_c_event_init_(&ev, TT_EVENT_NEW_SPAN);
    ev.callsite_id = tt_site_id_(site);
    ev.values = values;
    ev.value_count = count;
    tt_c_set_parent_(&ev, mode, parent);
    answer = host->emit(host->ctx, &ev);
    if (!TT_STATUS_IS_ERROR(answer))
        span.id = answer; /* 0: filtered out, the handle stays disabled */
    return span;
}

/* Emits a span operation; returns 1 when the host took it. */
static inline int tt_span_op_(const tt_span *span, tt_event_kind kind, tt_span_id related)
{
    const tt_c_host_ *host;
    tt_event ev;
    if (span == NULL || span->id == 0)
        return 0;
    host = tt_c_host_now_();
    if (host == NULL)
        return 0;
    tt_c_event_init_(&ev, kind);
    ev.span_id = span->id;
    ev.related_span_id = related;
    return !TT_STATUS_IS_ERROR(host->emit(host->ctx, &ev));
}

/* A field's index in the span's call site, by name; TT_NO_FIELD_ when the
 * site has no such field (the value is then left out). */
static inline uint32_t tt_span_field_index_(const tt_span *span, const char *name, uint64_t len)
{
    uint32_t i;
    const tt_callsite *cs;
    if (span->site == NULL)
        return TT_NO_FIELD_;
    cs = &span->site->meta;
    for (i = 0; i < cs->field_count; ++i)
        if (cs->field_names[i].len == len && memcmp(cs->field_names[i].ptr, name, (size_t)len) == 0)
            return i;
    return TT_NO_FIELD_;
}

static inline void tt_span_record_(const tt_span *span, tt_field_value *values, uint32_t count)
{
    const tt_c_host_ *host;
    tt_event ev;
    uint32_t i, kept = 0;
    for (i = 0; i < count; ++i)
        if (values[i].field != TT_NO_FIELD_)
            values[kept++] = values[i];
    if (kept == 0 || span->id == 0)
        return;
    host = tt_c_host_now_();
    if (host == NULL)
        return;
    tt_c_event_init_(&ev, TT_EVENT_VALUES_RECORDED);
    ev.span_id = span->id;
    ev.values = values;
    ev.value_count = kept;
    host->emit(host->ctx, &ev);
}

/* ------------------------------------------------------------------ */
/* Spans                                                              */
/* ------------------------------------------------------------------ */

/* Enters the span on this thread: events and spans created on this thread
 * with a contextual parent hang under it until tt_span_exit. */
static inline void tt_span_enter(const tt_span *span)
{
    tt_span_op_(span, TT_EVENT_SPAN_ENTERED, 0);
}

/* Exits the span on this thread (pair with tt_span_enter, same thread). */
static inline void tt_span_exit(const tt_span *span)
{
    tt_span_op_(span, TT_EVENT_SPAN_EXITED, 0);
}

/* A second handle to the same span, e.g. for another thread; the span lives
 * until every handle is dropped. Disabled when the host did not take it. */
static inline tt_span tt_span_clone(const tt_span *span)
{
    tt_span out;
    out.id = 0;
    out.site = span == NULL ? NULL : span->site;
    if (tt_span_op_(span, TT_EVENT_SPAN_CLONED, 0))
        out.id = span->id;
    return out;
}

/* Gives the handle back and disables it (dropping it twice is harmless). */
static inline void tt_span_drop(tt_span *span)
{
    if (span == NULL)
        return;
    tt_span_op_(span, TT_EVENT_SPAN_DROPPED, 0);
    span->id = 0;
}

/* Records that `span` was caused by `cause` (a link, not a parent). */
static inline void tt_span_follows_from(const tt_span *span, const tt_span *cause)
{
    if (cause != NULL && cause->id != 0)
        tt_span_op_(span, TT_EVENT_FOLLOWS_FROM, cause->id);
}

/* 1 when the handle refers to a live span the host took. */
static inline int tt_span_is_enabled(const tt_span *span)
{
    return span != NULL && span->id != 0;
}

/* A handle to a span id kept across a reload (see TT_C_PLUGIN_STATE). It
 * knows no call site, so TT_SPAN_RECORD on it records nothing. */
static inline tt_span tt_span_from_id(tt_span_id id)
{
    tt_span out;
    out.id = id;
    out.site = NULL;
    return out;
}

/* ------------------------------------------------------------------ */
/* Field values                                                       */
/* ------------------------------------------------------------------ */

/*
 * Each expands to a tuple (name, builder, a, b) that the span and event
 * macros split: names into the call site's static field list, values into
 * an array on the stack. The builder is a function-like macro named without
 * parentheses, so it survives rescanning even where the user has defined
 * macros such as DEBUG or BOOL.
 *
 *   TT_V_BOOL(name, x)        any scalar; nonzero is true
 *   TT_V_I64 / TT_V_U64 / TT_V_F64(name, x)
 *   TT_V_I128(name, hi, lo)   two's complement halves (hi signed or not)
 *   TT_V_U128(name, hi, lo)
 *   TT_V_STR(name, s)         NUL-terminated (NULL is "")
 *   TT_V_STRN(name, p, n)     pointer and length
 *   TT_V_DEBUG(name, s)       text of a debug-formatted object
 *   TT_V_ERROR(name, chain, n)        tt_str chain[n]: message, then sources
 *   TT_V_ERROR_CHAIN(name, msgs, n)   const char *msgs[n], same order
 *   TT_V_ERROR_MSG(name, s)   an error without sources
 *   TT_V_EMPTY(name)          declares a span field recorded later
 */
#define TT_V_BOOL(name, x) (name, TT_M_V_BOOL_, x, ~)
#define TT_V_I64(name, x) (name, TT_M_V_I64_, x, ~)
#define TT_V_U64(name, x) (name, TT_M_V_U64_, x, ~)
#define TT_V_I128(name, hi, lo) (name, TT_M_V_I128_, hi, lo)
#define TT_V_U128(name, hi, lo) (name, TT_M_V_U128_, hi, lo)
#define TT_V_F64(name, x) (name, TT_M_V_F64_, x, ~)
#define TT_V_STR(name, s) (name, TT_M_V_STR_, s, ~)
#define TT_V_STRN(name, p, n) (name, TT_M_V_STRN_, p, n)
#define TT_V_DEBUG(name, s) (name, TT_M_V_DEBUG_, s, ~)
#define TT_V_ERROR(name, chain, n) (name, TT_M_V_ERROR_, chain, n)
#define TT_V_ERROR_CHAIN(name, msgs, n) (name, TT_M_V_ERROR_CHAIN_, msgs, n)
#define TT_V_ERROR_MSG(name, s) (name, TT_M_V_ERROR_MSG_, s, ~)
#define TT_V_EMPTY(name) (name, TT_M_V_EMPTY_, ~, ~)

/* Builders: one array element each (or none), with its trailing comma. */
#define TT_M_V_BOOL_(i, a, b) tt_v_bool_((uint32_t)(i), (a) ? 1 : 0),
#define TT_M_V_I64_(i, a, b) tt_v_i64_((uint32_t)(i), (a)),
#define TT_M_V_U64_(i, a, b) tt_v_u64_((uint32_t)(i), (a)),
#define TT_M_V_I128_(i, a, b) tt_v_128_((uint32_t)(i), TT_VALUE_I128, (uint64_t)(a), (b)),
#define TT_M_V_U128_(i, a, b) tt_v_128_((uint32_t)(i), TT_VALUE_U128, (a), (b)),
#define TT_M_V_F64_(i, a, b) tt_v_f64_((uint32_t)(i), (a)),
#define TT_M_V_STR_(i, a, b) tt_v_str_((uint32_t)(i), TT_VALUE_STR, tt_cstr(a)),
#define TT_M_V_STRN_(i, a, b) tt_v_str_((uint32_t)(i), TT_VALUE_STR, tt_strn((a), (b))),
#define TT_M_V_DEBUG_(i, a, b) tt_v_str_((uint32_t)(i), TT_VALUE_DEBUG, tt_cstr(a)),
#define TT_M_V_ERROR_(i, a, b) tt_v_error_((uint32_t)(i), (a), (b)),
/* Compound literals live until the end of the enclosing block, which is
 * where the emit call is. */
#define TT_M_V_ERROR_CHAIN_(i, a, b) \
    tt_v_error_cstrs_((uint32_t)(i), (tt_str[TT_ERROR_CHAIN_MAX]){{NULL, 0u}}, (a), (b)),
#define TT_M_V_ERROR_MSG_(i, a, b) tt_v_error_((uint32_t)(i), (const tt_str[1]){tt_cstr(a)}, 1u),
#define TT_M_V_EMPTY_(i, a, b)

/* ------------------------------------------------------------------ */
/* Internals: preprocessor machinery                                  */
/* ------------------------------------------------------------------ */

#define TT_M_CAT_(a, b) TT_M_CAT_I_(a, b)
#define TT_M_CAT_I_(a, b) a##b
#define TT_M_STR_(x) TT_M_STR_I_(x)
#define TT_M_STR_I_(x) #x
#define TT_M_FIRST_(...) TT_M_FIRST_I_(__VA_ARGS__, ~)
#define TT_M_FIRST_I_(first, ...) first
#define TT_M_UNPACK_(...) __VA_ARGS__
/* "" lit "" refuses anything but a string literal, at compile time. */
#define TT_M_LIT_(lit) {"" lit "", sizeof("" lit "") - 1u}

/* TT_M_FES_(M, o, first, f1, f2, ...) expands M(o, f1) M(o + 1, f2) ...:
 * the first argument (message, span name or span) is skipped. */
#define TT_M_FES_(M, o, ...) TT_M_CAT_(TT_M_FES_, TT_M_NARG_(__VA_ARGS__))(M, o, __VA_ARGS__)

#define TT_M_NARG_(...) \
    TT_M_NARG_I_(__VA_ARGS__, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, \
                 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
/* Counts 1 to 33 arguments: a message or name plus TT_MAX_FIELDS fields. */
#define TT_M_NARG_I_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, \
                     a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, n, ...)              \
    n
#define TT_M_FE_1(M, o, a) M(o, a)
#define TT_M_FE_2(M, o, a, ...) M(o, a) TT_M_FE_1(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_3(M, o, a, ...) M(o, a) TT_M_FE_2(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_4(M, o, a, ...) M(o, a) TT_M_FE_3(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_5(M, o, a, ...) M(o, a) TT_M_FE_4(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_6(M, o, a, ...) M(o, a) TT_M_FE_5(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_7(M, o, a, ...) M(o, a) TT_M_FE_6(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_8(M, o, a, ...) M(o, a) TT_M_FE_7(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_9(M, o, a, ...) M(o, a) TT_M_FE_8(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_10(M, o, a, ...) M(o, a) TT_M_FE_9(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_11(M, o, a, ...) M(o, a) TT_M_FE_10(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_12(M, o, a, ...) M(o, a) TT_M_FE_11(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_13(M, o, a, ...) M(o, a) TT_M_FE_12(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_14(M, o, a, ...) M(o, a) TT_M_FE_13(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_15(M, o, a, ...) M(o, a) TT_M_FE_14(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_16(M, o, a, ...) M(o, a) TT_M_FE_15(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_17(M, o, a, ...) M(o, a) TT_M_FE_16(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_18(M, o, a, ...) M(o, a) TT_M_FE_17(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_19(M, o, a, ...) M(o, a) TT_M_FE_18(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_20(M, o, a, ...) M(o, a) TT_M_FE_19(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_21(M, o, a, ...) M(o, a) TT_M_FE_20(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_22(M, o, a, ...) M(o, a) TT_M_FE_21(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_23(M, o, a, ...) M(o, a) TT_M_FE_22(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_24(M, o, a, ...) M(o, a) TT_M_FE_23(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_25(M, o, a, ...) M(o, a) TT_M_FE_24(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_26(M, o, a, ...) M(o, a) TT_M_FE_25(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_27(M, o, a, ...) M(o, a) TT_M_FE_26(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_28(M, o, a, ...) M(o, a) TT_M_FE_27(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_29(M, o, a, ...) M(o, a) TT_M_FE_28(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_30(M, o, a, ...) M(o, a) TT_M_FE_29(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_31(M, o, a, ...) M(o, a) TT_M_FE_30(M, (o) + 1, __VA_ARGS__)
#define TT_M_FE_32(M, o, a, ...) M(o, a) TT_M_FE_31(M, (o) + 1, __VA_ARGS__)
#define TT_M_FES_1(M, o, first)
#define TT_M_FES_2(M, o, first, ...) TT_M_FE_1(M, o, __VA_ARGS__)
#define TT_M_FES_3(M, o, first, ...) TT_M_FE_2(M, o, __VA_ARGS__)
#define TT_M_FES_4(M, o, first, ...) TT_M_FE_3(M, o, __VA_ARGS__)
#define TT_M_FES_5(M, o, first, ...) TT_M_FE_4(M, o, __VA_ARGS__)
#define TT_M_FES_6(M, o, first, ...) TT_M_FE_5(M, o, __VA_ARGS__)
#define TT_M_FES_7(M, o, first, ...) TT_M_FE_6(M, o, __VA_ARGS__)
#define TT_M_FES_8(M, o, first, ...) TT_M_FE_7(M, o, __VA_ARGS__)
#define TT_M_FES_9(M, o, first, ...) TT_M_FE_8(M, o, __VA_ARGS__)
#define TT_M_FES_10(M, o, first, ...) TT_M_FE_9(M, o, __VA_ARGS__)
#define TT_M_FES_11(M, o, first, ...) TT_M_FE_10(M, o, __VA_ARGS__)
#define TT_M_FES_12(M, o, first, ...) TT_M_FE_11(M, o, __VA_ARGS__)
#define TT_M_FES_13(M, o, first, ...) TT_M_FE_12(M, o, __VA_ARGS__)
#define TT_M_FES_14(M, o, first, ...) TT_M_FE_13(M, o, __VA_ARGS__)
#define TT_M_FES_15(M, o, first, ...) TT_M_FE_14(M, o, __VA_ARGS__)
#define TT_M_FES_16(M, o, first, ...) TT_M_FE_15(M, o, __VA_ARGS__)
#define TT_M_FES_17(M, o, first, ...) TT_M_FE_16(M, o, __VA_ARGS__)
#define TT_M_FES_18(M, o, first, ...) TT_M_FE_17(M, o, __VA_ARGS__)
#define TT_M_FES_19(M, o, first, ...) TT_M_FE_18(M, o, __VA_ARGS__)
#define TT_M_FES_20(M, o, first, ...) TT_M_FE_19(M, o, __VA_ARGS__)
#define TT_M_FES_21(M, o, first, ...) TT_M_FE_20(M, o, __VA_ARGS__)
#define TT_M_FES_22(M, o, first, ...) TT_M_FE_21(M, o, __VA_ARGS__)
#define TT_M_FES_23(M, o, first, ...) TT_M_FE_22(M, o, __VA_ARGS__)
#define TT_M_FES_24(M, o, first, ...) TT_M_FE_23(M, o, __VA_ARGS__)
#define TT_M_FES_25(M, o, first, ...) TT_M_FE_24(M, o, __VA_ARGS__)
#define TT_M_FES_26(M, o, first, ...) TT_M_FE_25(M, o, __VA_ARGS__)
#define TT_M_FES_27(M, o, first, ...) TT_M_FE_26(M, o, __VA_ARGS__)
#define TT_M_FES_28(M, o, first, ...) TT_M_FE_27(M, o, __VA_ARGS__)
#define TT_M_FES_29(M, o, first, ...) TT_M_FE_28(M, o, __VA_ARGS__)
#define TT_M_FES_30(M, o, first, ...) TT_M_FE_29(M, o, __VA_ARGS__)
#define TT_M_FES_31(M, o, first, ...) TT_M_FE_30(M, o, __VA_ARGS__)
#define TT_M_FES_32(M, o, first, ...) TT_M_FE_31(M, o, __VA_ARGS__)
#define TT_M_FES_33(M, o, first, ...) TT_M_FE_32(M, o, __VA_ARGS__)

/* Per-field expansions: a name for the static list, a value for the stack
 * array (index known at compile time), a value for TT_SPAN_RECORD (index
 * looked up by name in the span's site at run time). */
#define TT_M_NAME_(i, t) TT_M_NAME_I_(TT_M_UNPACK_ t)
#define TT_M_NAME_I_(...) TT_M_NAME_II_(__VA_ARGS__)
#define TT_M_NAME_II_(name, kind, a, b) TT_M_LIT_(name),
#define TT_M_VALUE_(i, t) TT_M_VALUE_I_(i, TT_M_UNPACK_ t)
#define TT_M_VALUE_I_(...) TT_M_VALUE_II_(__VA_ARGS__)
#define TT_M_VALUE_II_(i, name, kind, a, b) kind(i, a, b)
#define TT_M_RVALUE_(i, t) TT_M_RVALUE_I_(TT_M_UNPACK_ t)
#define TT_M_RVALUE_I_(...) TT_M_RVALUE_II_(__VA_ARGS__)
#define TT_M_RVALUE_II_(name, kind, a, b) \
    kind(tt_span_field_index_(tt_m_span_, "" name "", sizeof("" name "") - 1u), a, b)

#define TT_M_COUNT_(array) ((uint32_t)(sizeof(array) / sizeof((array)[0])) - 1u)

#define TT_M_SITE_INIT_(kind, lvl, name, names)                                                              \
    {                                                                                                        \
        {(uint32_t)sizeof(tt_callsite), (kind), 0u, (lvl), (uint32_t)__LINE__, TT_M_LIT_(name),              \
         TT_M_LIT_(TT_TARGET), TT_M_LIT_(TT_TARGET), TT_M_LIT_(__FILE__), (names), TT_M_COUNT_(names), 0u}, \
            TT_SITE_UNREGISTERED_, 0, NULL                                                                   \
    }

/* Each call site's entry in the plugin's table of call sites: a pointer to
 * it in the section tt_c_sites, which tt_plugin_start walks to register
 * every call site before its first hit. A site above TT_MAX_LEVEL gets a
 * NULL entry (skipped; the site itself is then optimised away). All entries
 * are non-const tt_site pointers, so the section has one type. Read by a C++
 * compiler, trace.h leaves the entry out: a static in an inline function
 * lives in a COMDAT group, and Clang refuses to mix it with plain statics in
 * one section; such call sites register on their first hit. */
#ifdef __cplusplus
#define TT_M_SITE_ENTRY_(lvl, site)
#else
#define TT_M_SITE_ENTRY_(lvl, site) \
    static tt_site *tt_m_entry_ __attribute__((used, section(TT_C_SITES_SECTION_))) = \
        (lvl) <= TT_MAX_LEVEL ? &(site) : (tt_site *)NULL;
#endif

/* The gate of every call site: with the site off this is one relaxed load
 * and one compare, and no argument has been evaluated. */
#define TT_M_GATE_(lvl, site, st)                                                                     \
    if ((lvl) <= TT_MAX_LEVEL &&                                                                      \
        __builtin_expect(((st) = __atomic_load_n(&(site).state, __ATOMIC_RELAXED)) != TT_SITE_NEVER_, 0) && \
        ((st) != TT_SITE_UNREGISTERED_ || ((st) = tt_site_register_(&(site))) != TT_SITE_UNREGISTERED_) && \
        (st) != TT_SITE_NEVER_)

/* ------------------------------------------------------------------ */
/* Events                                                             */
/* ------------------------------------------------------------------ */

/*
 * TT_<LEVEL>(message, fields...): an event whose parent is the span entered
 * on this thread. `message` is a NUL-terminated const char * (any
 * expression); it is evaluated, like the fields, only when the site is on.
 *
 *   TT_WARN("above threshold", TT_V_F64("celsius", t));
 *
 * TT_LOG(level, message, fields...)                    contextual parent
 * TT_LOG_IN(level, const tt_span *parent, message, ...) explicit parent
 * TT_LOG_ROOT(level, message, fields...)               no parent
 * `level` is a TT_LEVEL_* constant.
 */
#define TT_ERROR(...) TT_LOG(TT_LEVEL_ERROR, __VA_ARGS__)
#define TT_WARN(...) TT_LOG(TT_LEVEL_WARN, __VA_ARGS__)
#define TT_INFO(...) TT_LOG(TT_LEVEL_INFO, __VA_ARGS__)
#define TT_DEBUG(...) TT_LOG(TT_LEVEL_DEBUG, __VA_ARGS__)
#define TT_TRACE(...) TT_LOG(TT_LEVEL_TRACE, __VA_ARGS__)
#define TT_LOG(level, ...) TT_M_EVENT_(level, TT_PARENT_CONTEXTUAL, (const tt_span *)NULL, __VA_ARGS__)
#define TT_LOG_IN(level, parent, ...) TT_M_EVENT_(level, TT_PARENT_EXPLICIT, (parent), __VA_ARGS__)
#define TT_LOG_ROOT(level, ...) TT_M_EVENT_(level, TT_PARENT_ROOT, (const tt_span *)NULL, __VA_ARGS__)

#define TT_M_EVENT_(lvl, mode, parent, ...)                                                                  \
    do {                                                                                                     \
        static const tt_str tt_m_names_[] = {TT_M_LIT_("message"),                                           \
                                             TT_M_FES_(TT_M_NAME_, 1, __VA_ARGS__) TT_M_LIT_("")};           \
        static tt_site tt_m_site_ =                                                                          \
            TT_M_SITE_INIT_(TT_CALLSITE_EVENT, lvl, "event " __FILE__ ":" TT_M_STR_(__LINE__), tt_m_names_); \
        TT_M_SITE_ENTRY_(lvl, tt_m_site_)                                                                    \
        int tt_m_state_;                                                                                     \
        TT_M_GATE_(lvl, tt_m_site_, tt_m_state_)                                                             \
        {                                                                                                    \
            tt_field_value tt_m_values_[] = {                                                                \
                tt_v_str_(0u, TT_VALUE_STR, tt_cstr(TT_M_FIRST_(__VA_ARGS__))),                              \
                TT_M_FES_(TT_M_VALUE_, 1, __VA_ARGS__) tt_v_end_()};                                         \
            tt_site_event_(&tt_m_site_, (mode), (parent), tt_m_values_, TT_M_COUNT_(tt_m_values_));          \
        }                                                                                                    \
    } while (0)

/* ------------------------------------------------------------------ */
/* Spans                                                              */
/* ------------------------------------------------------------------ */

/*
 * TT_SPAN_<LEVEL>("name", fields...) is an expression of type tt_span: a new
 * span whose parent is the span entered on this thread. The name is a
 * string literal; declare with TT_V_EMPTY the fields you record later.
 *
 *   tt_span s = TT_SPAN_DEBUG("parse", TT_V_U64("bytes", n), TT_V_EMPTY("items"));
 *
 * TT_SPAN(level, "name", fields...)                      contextual parent
 * TT_SPAN_IN(level, const tt_span *parent, "name", ...)  explicit parent
 *                                      (a disabled or NULL parent: a root)
 * TT_SPAN_ROOT(level, "name", fields...)                 no parent
 *
 * These use a GNU statement expression (marked __extension__, so it is
 * quiet under -pedantic): C99 has no other way to give an expression its
 * own static call site.
 */
#define TT_SPAN_ERROR(...) TT_SPAN(TT_LEVEL_ERROR, __VA_ARGS__)
#define TT_SPAN_WARN(...) TT_SPAN(TT_LEVEL_WARN, __VA_ARGS__)
#define TT_SPAN_INFO(...) TT_SPAN(TT_LEVEL_INFO, __VA_ARGS__)
#define TT_SPAN_DEBUG(...) TT_SPAN(TT_LEVEL_DEBUG, __VA_ARGS__)
#define TT_SPAN_TRACE(...) TT_SPAN(TT_LEVEL_TRACE, __VA_ARGS__)
#define TT_SPAN(level, ...) TT_M_SPAN_(level, TT_PARENT_CONTEXTUAL, (const tt_span *)NULL, __VA_ARGS__)
#define TT_SPAN_IN(level, parent, ...) TT_M_SPAN_(level, TT_PARENT_EXPLICIT, (parent), __VA_ARGS__)
#define TT_SPAN_ROOT(level, ...) TT_M_SPAN_(level, TT_PARENT_ROOT, (const tt_span *)NULL, __VA_ARGS__)

#define TT_M_SPAN_(lvl, mode, parent, ...)                                                                \
    __extension__({                                                                                       \
        static const tt_str tt_m_names_[] = {TT_M_FES_(TT_M_NAME_, 0, __VA_ARGS__) TT_M_LIT_("")};        \
        static tt_site tt_m_site_ =                                                                       \
            TT_M_SITE_INIT_(TT_CALLSITE_SPAN, lvl, TT_M_FIRST_(__VA_ARGS__), tt_m_names_);                \
        TT_M_SITE_ENTRY_(lvl, tt_m_site_)                                                                 \
        tt_span tt_m_span_ = {0u, &tt_m_site_};                                                           \
        int tt_m_state_;                                                                                  \
        TT_M_GATE_(lvl, tt_m_site_, tt_m_state_)                                                          \
        {                                                                                                 \
            tt_field_value tt_m_values_[] = {TT_M_FES_(TT_M_VALUE_, 0, __VA_ARGS__) tt_v_end_()};         \
            tt_m_span_ = tt_site_span_(&tt_m_site_, (mode), (parent), tt_m_values_, TT_M_COUNT_(tt_m_values_)); \
        }                                                                                                 \
        tt_m_span_;                                                                                       \
    })

/*
 * TT_SPAN_RECORD(const tt_span *span, fields...): sets fields of a live span,
 * by name; a name its call site did not declare is left out. The values are
 * evaluated only when the span is enabled and the plugin started.
 *
 *   TT_SPAN_RECORD(&s, TT_V_U64("items", count));
 */
#define TT_SPAN_RECORD(...)                                                                           \
    do {                                                                                              \
        const tt_span *tt_m_span_ = (TT_M_FIRST_(__VA_ARGS__));                                       \
        if (tt_m_span_ != NULL && tt_m_span_->id != 0 && tt_c_host_now_() != NULL) {                  \
            tt_field_value tt_m_values_[] = {TT_M_FES_(TT_M_RVALUE_, 0, __VA_ARGS__) tt_v_end_()};    \
            tt_span_record_(tt_m_span_, tt_m_values_, TT_M_COUNT_(tt_m_values_));                     \
        }                                                                                             \
    } while (0)

/* ------------------------------------------------------------------ */
/* Defining the plugin                                                */
/* ------------------------------------------------------------------ */

static inline int32_t tt_c_plugin_start_(const tt_host *host, int (*user_start)(void))
{
    tt_c_host_ *slot;
    int rc;
    if (host == NULL || host->struct_size < sizeof(tt_host) || host->emit == NULL)
        return -1;
    slot = &tt_c_plugin_.slots[tt_c_plugin_.next_slot++ & 1u];
    slot->emit = host->emit;
    slot->ctx = host->ctx;
    /* A (re)started plugin may face a host that never saw its sites. */
    tt_c_reset_sites_();
    __atomic_store_n(&tt_c_plugin_.current, slot, __ATOMIC_SEQ_CST);
    /* The host learns every call site now, before start and before any hit. */
    tt_c_register_all_sites_();
    rc = user_start == NULL ? 0 : user_start();
    if (rc != 0) {
        __atomic_store_n(&tt_c_plugin_.current, (const tt_c_host_ *)NULL, __ATOMIC_SEQ_CST);
        tt_c_reset_sites_();
        return rc;
    }
    return 0;
}

/* The user's stop runs first, so it can still close its spans and must join
 * the plugin's threads; then every macro becomes a no-op. An emit that a
 * thread began before this is drained by the host, not here: waiting in the
 * plugin could deadlock with a host holding its own lock around stop. */
static inline void tt_c_plugin_stop_(void (*user_stop)(void))
{
    if (user_stop != NULL)
        user_stop();
    __atomic_store_n(&tt_c_plugin_.current, (const tt_c_host_ *)NULL, __ATOMIC_SEQ_CST);
    tt_c_reset_sites_();
}

/*
 * TT_C_PLUGIN(name, version, description, start, stop);
 *
 * Defines the plugin's exports and its hidden per-plugin state, in exactly
 * one .c file of the plugin. name, version and description are string
 * literals; `int start(void)` returns 0 when the plugin started (non-zero
 * refuses the start), `void stop(void)` ends the plugin's work; either may
 * be NULL. Macros may be used from start and stop.
 */
#define TT_C_PLUGIN(name, version, description, start, stop)                                                  \
    TT_C_HIDDEN_ tt_c_plugin_state_ tt_c_plugin_ = {NULL, {{NULL, NULL}, {NULL, NULL}}, 0u, 0u, NULL};        \
    TT_EXPORT extern const uint32_t tt_plugin_abi_version;                                                   \
    TT_EXPORT const uint32_t tt_plugin_abi_version = TT_ABI_VERSION;                                         \
    TT_EXPORT const tt_plugin_info *tt_plugin_describe(void);                                                 \
    TT_EXPORT const tt_plugin_info *tt_plugin_describe(void)                                                  \
    {                                                                                                        \
        static const tt_plugin_info info = {(uint32_t)sizeof(tt_plugin_info), 0u, TT_M_LIT_(name),           \
                                            TT_M_LIT_(version), TT_M_LIT_(description)};                     \
        return &info;                                                                                        \
    }                                                                                                        \
    TT_EXPORT int32_t tt_plugin_start(const tt_host *host);                                                  \
    TT_EXPORT int32_t tt_plugin_start(const tt_host *host)                                                   \
    {                                                                                                        \
        int (*tt_m_start_)(void) = (start);                                                                  \
        return tt_c_plugin_start_(host, tt_m_start_);                                                        \
    }                                                                                                        \
    TT_EXPORT void tt_plugin_stop(void);                                                                     \
    TT_EXPORT void tt_plugin_stop(void)                                                                      \
    {                                                                                                        \
        void (*tt_m_stop_)(void) = (stop);                                                                   \
        tt_c_plugin_stop_(tt_m_stop_);                                                                       \
    }                                                                                                        \
    TT_EXPORT void tt_plugin_interest_changed(void);                                                         \
    TT_EXPORT void tt_plugin_interest_changed(void)                                                          \
    {                                                                                                        \
        tt_c_reset_sites_();                                                                                 \
    }                                                                                                        \
    TT_EXPORT extern const uint32_t tt_plugin_abi_version

/*
 * TT_C_PLUGIN_STATE(save, restore);   (optional, beside TT_C_PLUGIN)
 *
 * Exports the plugin's own state across a hot reload, with the abi.h
 * signatures: `int32_t save(tt_write_fn write, void *write_ctx)` is called
 * after stop and writes the state through `write`; `int32_t restore(const
 * void *data, uint64_t len)` is called before start in the new instance.
 * Both return 0 on success. Span ids saved here stay valid in the new
 * instance (tt_span_from_id).
 */
#define TT_C_PLUGIN_STATE(save, restore)                                        \
    TT_EXPORT int32_t tt_plugin_save_state(tt_write_fn write, void *write_ctx); \
    TT_EXPORT int32_t tt_plugin_save_state(tt_write_fn write, void *write_ctx)  \
    {                                                                           \
        return (save)(write, write_ctx);                                        \
    }                                                                           \
    TT_EXPORT int32_t tt_plugin_restore_state(const void *data, uint64_t len);  \
    TT_EXPORT int32_t tt_plugin_restore_state(const void *data, uint64_t len)   \
    {                                                                           \
        return (restore)(data, len);                                            \
    }                                                                           \
    TT_EXPORT extern const uint32_t tt_plugin_abi_version

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TRACETUNNEL_TRACE_H */
