/*
 * tracetunnel C ABI: the whole contract between a host and a plugin.
 *
 * A plugin is a shared object that exports a handful of `tt_plugin_*`
 * symbols (see "Plugin exports" below). The host hands it exactly one thing,
 * a `tt_host`, holding one function pointer (`emit`) and an opaque context;
 * every span, event and call site the plugin has travels through that one
 * function as a `tt_event`.
 *
 * Rules that keep this header stable for plugins we will never see:
 *  - C99 and C++; fixed-width integers; every public name starts with tt_/TT_.
 *  - Extensible records (tt_event, tt_callsite, tt_host, tt_plugin_info) begin
 *    with `uint32_t struct_size`. Fields are only ever appended after the
 *    "end of ABI x.y" marker, never reordered or removed, so a reader checks
 *    struct_size before touching a field added in a later minor version.
 *  - Leaf records (tt_str, tt_u128, tt_field_value) have frozen layouts; new
 *    value kinds are new enumerators, never a new size. tests/abi_layout pins
 *    every size and offset.
 *  - Enums cross as uint32_t; their enumerators are plain #defines.
 *  - Strings are pointer + length, UTF-8, not NUL-terminated.
 *  - Every pointer inside an event is borrowed for the duration of the emit
 *    call only; the host copies what it keeps. No allocation, C++ type or
 *    exception crosses.
 *
 * Versioning: TT_ABI_VERSION packs major << 16 | minor. A host accepts a
 * plugin whose major lies in [TT_ABI_OLDEST_MAJOR, TT_ABI_VERSION_MAJOR] and,
 * for the current major, whose minor is not newer than the host's.
 *
 * ABI changelog:
 *   1.0  first release.
 */
#ifndef TRACETUNNEL_ABI_H
#define TRACETUNNEL_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TT_ABI_VERSION_MAJOR 1u
#define TT_ABI_VERSION_MINOR 0u
/* The oldest plugin major version this header's host still accepts. */
#define TT_ABI_OLDEST_MAJOR 1u
#define TT_ABI_MAKE_VERSION(major, minor) ((uint32_t)(((uint32_t)(major) << 16) | ((uint32_t)(minor) & 0xFFFFu)))
#define TT_ABI_VERSION TT_ABI_MAKE_VERSION(TT_ABI_VERSION_MAJOR, TT_ABI_VERSION_MINOR)
#define TT_ABI_MAJOR_OF(version) ((uint32_t)(version) >> 16)
#define TT_ABI_MINOR_OF(version) ((uint32_t)(version) & 0xFFFFu)

/* Symbol export for the plugin entry points; everything else stays hidden. */
#if defined(_WIN32)
#define TT_EXPORT __declspec(dllexport)
#else
#define TT_EXPORT __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------ */
/* Basic records (frozen layouts)                                     */
/* ------------------------------------------------------------------ */

/* A UTF-8 string slice. `ptr` may be NULL only when `len` is 0. */
typedef struct tt_str {
    const char *ptr;
    uint64_t len;
} tt_str;

/* A 128-bit integer as two 64-bit halves. For a signed value `hi` holds the
 * upper half in two's complement. */
typedef struct tt_u128 {
    uint64_t lo;
    uint64_t hi;
} tt_u128;

/* Verbosity, most severe first. A filter at level L enables every call site
 * whose level is <= L. */
typedef uint32_t tt_level;
#define TT_LEVEL_ERROR 1u
#define TT_LEVEL_WARN 2u
#define TT_LEVEL_INFO 3u
#define TT_LEVEL_DEBUG 4u
#define TT_LEVEL_TRACE 5u

/* ------------------------------------------------------------------ */
/* Call sites                                                         */
/* ------------------------------------------------------------------ */

/* What a call site produces. */
typedef uint32_t tt_callsite_kind;
#define TT_CALLSITE_SPAN 1u
#define TT_CALLSITE_EVENT 2u

/*
 * The static description of one span or event macro expansion. Lives in the
 * plugin's read-only data; sent once, in a TT_EVENT_NEW_CALLSITE event.
 *
 * `id` is tt_callsite_hash() of the other fields (see below): stable across
 * builds and reloads while the call site is unchanged, so persisted state can
 * refer to it. Values in events name their field by index into field_names.
 */
typedef struct tt_callsite {
    uint32_t struct_size;      /* sizeof(tt_callsite) of the sender */
    tt_callsite_kind kind;     /* TT_CALLSITE_SPAN or TT_CALLSITE_EVENT */
    uint64_t id;               /* tt_callsite_hash() of the data below; never 0 */
    tt_level level;
    uint32_t line;             /* 0 when unknown */
    tt_str name;               /* span name, or "event file:line" for events */
    tt_str target;             /* filter target, e.g. "orders::checkout" */
    tt_str module_path;        /* may be empty */
    tt_str file;               /* may be empty */
    const tt_str *field_names; /* field_count names, distinct */
    uint32_t field_count;
    uint32_t reserved0;        /* 0 */
    /* end of ABI 1.0 */
} tt_callsite;

/* ------------------------------------------------------------------ */
/* Values                                                             */
/* ------------------------------------------------------------------ */

typedef uint32_t tt_value_kind;
#define TT_VALUE_BOOL 1u
#define TT_VALUE_I64 2u
#define TT_VALUE_U64 3u
#define TT_VALUE_I128 4u
#define TT_VALUE_U128 5u
#define TT_VALUE_F64 6u
#define TT_VALUE_STR 7u   /* a string value */
#define TT_VALUE_DEBUG 8u /* text of a debug- or display-formatted object */
#define TT_VALUE_ERROR 9u /* an error message followed by its sources */

/* An error with its chain of causes: chain[0] is the error's own message,
 * chain[i + 1] the source of chain[i]. */
typedef struct tt_error_chain {
    const tt_str *chain;
    uint64_t len; /* >= 1 */
} tt_error_chain;

/*
 * One value for one field of the event's (or span's) call site.
 * `field` indexes the call site's field_names; the payload member read is
 * chosen by `kind`: boolean (0 or 1), i64, u64, u128 (for both 128-bit
 * kinds), f64, str (for STR and DEBUG) or error.
 */
typedef struct tt_field_value {
    uint32_t field;
    tt_value_kind kind;
    union {
        uint8_t boolean;
        int64_t i64;
        uint64_t u64;
        tt_u128 u128;
        double f64;
        tt_str str;
        tt_error_chain error;
    } as;
} tt_field_value;

/* ------------------------------------------------------------------ */
/* Events                                                             */
/* ------------------------------------------------------------------ */

typedef uint32_t tt_event_kind;
#define TT_EVENT_NEW_CALLSITE 1u   /* callsite                                    */
#define TT_EVENT_NEW_SPAN 2u       /* callsite_id, parent, parent_id, values      */
#define TT_EVENT_FOLLOWS_FROM 3u   /* span_id follows from related_span_id        */
#define TT_EVENT_SPAN_ENTERED 4u   /* span_id                                     */
#define TT_EVENT_SPAN_EXITED 5u    /* span_id                                     */
#define TT_EVENT_SPAN_CLONED 6u    /* span_id: one more handle                    */
#define TT_EVENT_SPAN_DROPPED 7u   /* span_id: one handle less                    */
#define TT_EVENT_VALUES_RECORDED 8u /* span_id, values                            */
#define TT_EVENT_NEW_EVENT 9u      /* callsite_id, parent, parent_id, values      */

/* Where a new span or event hangs in the tree. */
typedef uint32_t tt_parent_mode;
#define TT_PARENT_CONTEXTUAL 0u /* the span currently entered on this thread */
#define TT_PARENT_ROOT 1u       /* explicitly no parent */
#define TT_PARENT_EXPLICIT 2u   /* related_span_id */

/* Span ids are assigned by the host (the answer to TT_EVENT_NEW_SPAN), are
 * never 0 and never have the top bit set. */
typedef uint64_t tt_span_id;

/*
 * One event crossing from plugin to host. Only the members named for its
 * kind in the table above are read; the rest should be zero.
 */
typedef struct tt_event {
    uint32_t struct_size; /* sizeof(tt_event) of the sender */
    tt_event_kind kind;
    tt_span_id span_id;         /* the span acted on */
    tt_span_id related_span_id; /* the cause (follows-from) or explicit parent */
    uint64_t callsite_id;       /* tt_callsite.id of a new span or event */
    const tt_callsite *callsite; /* TT_EVENT_NEW_CALLSITE only */
    const tt_field_value *values;
    uint32_t value_count;
    tt_parent_mode parent;
    /* end of ABI 1.0 */
} tt_event;

/* ------------------------------------------------------------------ */
/* The answer to emit                                                 */
/* ------------------------------------------------------------------ */

/*
 * emit returns 64 bits:
 *  - TT_EVENT_NEW_CALLSITE: a TT_INTEREST_* value;
 *  - TT_EVENT_NEW_SPAN: the new span's id, or 0 when the host filtered the
 *    span out or refused it (the handle is then disabled);
 *  - otherwise TT_STATUS_OK.
 * Any answer with TT_STATUS_ERROR_BIT set is a refusal carrying a
 * TT_STATUS_* code in its low bits; nothing the host keeps was changed.
 */
#define TT_INTEREST_NEVER 0u     /* never emit this call site again */
#define TT_INTEREST_SOMETIMES 1u /* emit; the host decides each time */
#define TT_INTEREST_ALWAYS 2u    /* emit; the host takes every hit */

#define TT_STATUS_OK 0u
#define TT_STATUS_ERROR_BIT ((uint64_t)1 << 63)
#define TT_STATUS_IS_ERROR(answer) (((uint64_t)(answer) & TT_STATUS_ERROR_BIT) != 0)
#define TT_STATUS_CODE(answer) ((uint32_t)((uint64_t)(answer) & 0xFFFFFFFFu))
#define TT_STATUS_BAD_EVENT 1u          /* malformed struct or unknown kind */
#define TT_STATUS_UNKNOWN_CALLSITE 2u
#define TT_STATUS_UNKNOWN_SPAN 3u
#define TT_STATUS_CALLSITE_CONFLICT 4u  /* same id, different data */
#define TT_STATUS_TOO_MANY_VALUES 5u
#define TT_STATUS_UNKNOWN_FIELD 6u
#define TT_STATUS_INVALID_UTF8 7u
#define TT_STATUS_QUOTA_EXCEEDED 8u
#define TT_STATUS_STOPPED 9u            /* this plugin instance was stopped */
#define TT_STATUS_FILTERED 10u          /* a SOMETIMES call site was not taken */

/* The one function a plugin calls. Thread-safe; may be called from any
 * thread while the plugin is started. */
typedef uint64_t (*tt_emit_fn)(void *ctx, const tt_event *event);

/* What the host hands to tt_plugin_start. The plugin copies emit and ctx;
 * the record itself is only valid during the call. */
typedef struct tt_host {
    uint32_t struct_size;
    uint32_t abi_version; /* the host's TT_ABI_VERSION */
    tt_emit_fn emit;
    void *ctx;
    /* end of ABI 1.0 */
} tt_host;

/* ------------------------------------------------------------------ */
/* Plugin exports                                                     */
/* ------------------------------------------------------------------ */

/* Name, version and description of a plugin; static storage. */
typedef struct tt_plugin_info {
    uint32_t struct_size;
    uint32_t reserved0; /* 0 */
    tt_str name;        /* short, stable: the lineage key for persisted state */
    tt_str version;     /* free-form, e.g. "1.4.2" */
    tt_str description;
    /* end of ABI 1.0 */
} tt_plugin_info;

/* A byte sink the host passes to tt_plugin_save_state; returns 0 on success. */
typedef int32_t (*tt_write_fn)(void *ctx, const void *data, uint64_t len);

/*
 * Required exports (the loader refuses a plugin that lacks one):
 *
 *   const uint32_t tt_plugin_abi_version;               = TT_ABI_VERSION
 *   const tt_plugin_info *tt_plugin_describe(void);
 *   int32_t tt_plugin_start(const tt_host *host);      0 = started
 *   void tt_plugin_stop(void);                          no emit after return
 *
 * Optional exports:
 *
 *   void tt_plugin_interest_changed(void);   forget cached interest
 *   int32_t tt_plugin_save_state(tt_write_fn write, void *write_ctx);
 *   int32_t tt_plugin_restore_state(const void *data, uint64_t len);
 *
 * Order on a hot reload: old stop, old save_state; new restore_state
 * (when saved state exists), new start. The old library is unmapped only
 * once the new one has started; if the new one fails, the old build is
 * mapped again from a fresh copy and gets restore_state + start. On a host
 * restart, restore_state gets what save_state wrote at the last stop.
 */
#define TT_SYMBOL_ABI_VERSION "tt_plugin_abi_version"
#define TT_SYMBOL_DESCRIBE "tt_plugin_describe"
#define TT_SYMBOL_START "tt_plugin_start"
#define TT_SYMBOL_STOP "tt_plugin_stop"
#define TT_SYMBOL_INTEREST_CHANGED "tt_plugin_interest_changed"
#define TT_SYMBOL_SAVE_STATE "tt_plugin_save_state"
#define TT_SYMBOL_RESTORE_STATE "tt_plugin_restore_state"

typedef const tt_plugin_info *(*tt_plugin_describe_fn)(void);
typedef int32_t (*tt_plugin_start_fn)(const tt_host *host);
typedef void (*tt_plugin_stop_fn)(void);
typedef void (*tt_plugin_interest_changed_fn)(void);
typedef int32_t (*tt_plugin_save_state_fn)(tt_write_fn write, void *write_ctx);
typedef int32_t (*tt_plugin_restore_state_fn)(const void *data, uint64_t len);

/* ------------------------------------------------------------------ */
/* Call-site identity                                                 */
/* ------------------------------------------------------------------ */

/*
 * The call-site id: 64-bit FNV-1a over, in order, kind, level and line as
 * 4 little-endian bytes each, then name, target, module_path, file and each
 * field name, every string as its length in 8 little-endian bytes followed by
 * its bytes; then the splitmix64 finaliser; 0 maps to 1. The C++ sender
 * computes the same function at compile time; the C sender once per call site.
 */
#define TT_FNV_OFFSET 0xcbf29ce484222325ull
#define TT_FNV_PRIME 0x100000001b3ull

static inline uint64_t tt_hash_bytes_(uint64_t h, const char *p, uint64_t n)
{
    uint64_t i;
    for (i = 0; i < n; ++i) {
        h ^= (uint64_t)(unsigned char)p[i];
        h *= TT_FNV_PRIME;
    }
    return h;
}

static inline uint64_t tt_hash_uint_(uint64_t h, uint64_t v, unsigned bytes)
{
    unsigned i;
    for (i = 0; i < bytes; ++i) {
        h ^= (v >> (8u * i)) & 0xFFu;
        h *= TT_FNV_PRIME;
    }
    return h;
}

static inline uint64_t tt_hash_str_(uint64_t h, tt_str s)
{
    return tt_hash_bytes_(tt_hash_uint_(h, s.len, 8), s.ptr, s.len);
}

/* Computes tt_callsite.id from the other fields of `cs`. */
static inline uint64_t tt_callsite_hash(const tt_callsite *cs)
{
    uint64_t h = TT_FNV_OFFSET;
    uint32_t i;
    h = tt_hash_uint_(h, cs->kind, 4);
    h = tt_hash_uint_(h, cs->level, 4);
    h = tt_hash_uint_(h, cs->line, 4);
    h = tt_hash_str_(h, cs->name);
    h = tt_hash_str_(h, cs->target);
    h = tt_hash_str_(h, cs->module_path);
    h = tt_hash_str_(h, cs->file);
    for (i = 0; i < cs->field_count; ++i)
        h = tt_hash_str_(h, cs->field_names[i]);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h == 0 ? 1 : h;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TRACETUNNEL_ABI_H */
