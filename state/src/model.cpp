#include <tracetunnel/abi_convert.hpp>
#include <tracetunnel/model.hpp>

#include <charconv>
#include <cstring>
#include <limits>

namespace tt::model {

namespace {

bool same_double(double a, double b) noexcept
{
    return std::memcmp(&a, &b, sizeof a) == 0;
}

bool same_fields(const field_values& a, const field_values& b) noexcept
{
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].first != b[i].first || !same_value(a[i].second, b[i].second))
            return false;
    return true;
}

std::string as_string(const tt_str& s)
{
    return s.len == 0 ? std::string() : std::string(s.ptr, s.len);
}

bool readable(const tt_str& s)
{
    return s.len == 0 || s.ptr != nullptr;
}

void set_why(std::string* why, std::string text)
{
    if (why)
        *why = std::move(text);
}

}  // namespace

void append_decimal(std::string& out, u128 v)
{
    char buf[24];
    if (v <= std::numeric_limits<std::uint64_t>::max()) {
        const auto r = std::to_chars(buf, buf + sizeof buf, static_cast<std::uint64_t>(v));
        out.append(buf, r.ptr);
        return;
    }
    // Two divisions by 10^19 instead of 39 by 10: 128-bit division is a call.
    constexpr std::uint64_t chunk = 10'000'000'000'000'000'000ull;
    append_decimal(out, v / chunk);
    const auto r = std::to_chars(buf, buf + sizeof buf, static_cast<std::uint64_t>(v % chunk));
    out.append(19 - static_cast<std::size_t>(r.ptr - buf), '0');
    out.append(buf, r.ptr);
}

void append_decimal(std::string& out, i128 v)
{
    if (v < 0) {
        out += '-';
        append_decimal(out, u128(0) - static_cast<u128>(v));
    } else {
        append_decimal(out, static_cast<u128>(v));
    }
}

std::string to_decimal(u128 v)
{
    std::string out;
    append_decimal(out, v);
    return out;
}

std::string to_decimal(i128 v)
{
    std::string out;
    append_decimal(out, v);
    return out;
}

bool same_value(const value& a, const value& b) noexcept
{
    if (a.index() != b.index())
        return false;
    if (const double* da = std::get_if<double>(&a))
        return same_double(*da, std::get<double>(b));
    return a == b;
}

bool same_event(const event& a, const event& b) noexcept
{
    if (a.index() != b.index())
        return false;
    return std::visit(
        [&](const auto& x) -> bool {
            using T = std::decay_t<decltype(x)>;
            const T& y = std::get<T>(b);
            if constexpr (std::is_same_v<T, new_callsite>)
                return x.site == y.site;
            else if constexpr (std::is_same_v<T, new_span>)
                return x.id == y.id && x.callsite_id == y.callsite_id && x.parent == y.parent &&
                       x.parent_id == y.parent_id && same_fields(x.values, y.values);
            else if constexpr (std::is_same_v<T, follows_from>)
                return x.id == y.id && x.cause == y.cause;
            else if constexpr (std::is_same_v<T, values_recorded>)
                return x.id == y.id && same_fields(x.values, y.values);
            else if constexpr (std::is_same_v<T, new_event>)
                return x.callsite_id == y.callsite_id && x.parent == y.parent && x.parent_id == y.parent_id &&
                       same_fields(x.values, y.values);
            else
                return x.id == y.id;
        },
        a);
}

std::string_view to_string(level l) noexcept
{
    switch (l) {
    case level::error: return "error";
    case level::warn: return "warn";
    case level::info: return "info";
    case level::debug: return "debug";
    case level::trace: return "trace";
    }
    return "unknown";
}

std::optional<callsite> callsite_from_abi(const tt_callsite& cs, std::string* why)
{
    if (cs.struct_size < sizeof(tt_callsite)) {
        set_why(why, "call site struct_size too small");
        return std::nullopt;
    }
    if (cs.kind != TT_CALLSITE_SPAN && cs.kind != TT_CALLSITE_EVENT) {
        set_why(why, "unknown call-site kind " + std::to_string(cs.kind));
        return std::nullopt;
    }
    if (cs.level < TT_LEVEL_ERROR || cs.level > TT_LEVEL_TRACE) {
        set_why(why, "unknown level " + std::to_string(cs.level));
        return std::nullopt;
    }
    if (!readable(cs.name) || !readable(cs.target) || !readable(cs.module_path) || !readable(cs.file) ||
        (cs.field_count > 0 && cs.field_names == nullptr)) {
        set_why(why, "call site has a NULL string with a length");
        return std::nullopt;
    }
    callsite out;
    out.id = cs.id;
    out.kind = static_cast<callsite_kind>(cs.kind);
    out.level = static_cast<level>(cs.level);
    out.name = as_string(cs.name);
    out.target = as_string(cs.target);
    out.module_path = as_string(cs.module_path);
    out.file = as_string(cs.file);
    out.line = cs.line;
    out.fields.reserve(cs.field_count);
    for (std::uint32_t i = 0; i < cs.field_count; ++i) {
        if (!readable(cs.field_names[i])) {
            set_why(why, "call site has a NULL field name");
            return std::nullopt;
        }
        out.fields.push_back(as_string(cs.field_names[i]));
    }
    return out;
}

std::optional<value> value_from_abi(const tt_field_value& v)
{
    switch (v.kind) {
    case TT_VALUE_BOOL: return value(v.as.boolean != 0);
    case TT_VALUE_I64: return value(v.as.i64);
    case TT_VALUE_U64: return value(v.as.u64);
    case TT_VALUE_I128: return value(static_cast<i128>((static_cast<u128>(v.as.u128.hi) << 64) | v.as.u128.lo));
    case TT_VALUE_U128: return value((static_cast<u128>(v.as.u128.hi) << 64) | v.as.u128.lo);
    case TT_VALUE_F64: return value(v.as.f64);
    case TT_VALUE_STR:
        if (!readable(v.as.str))
            return std::nullopt;
        return value(as_string(v.as.str));
    case TT_VALUE_DEBUG:
        if (!readable(v.as.str))
            return std::nullopt;
        return value(debug_text{as_string(v.as.str)});
    case TT_VALUE_ERROR: {
        if (v.as.error.len == 0 || v.as.error.chain == nullptr)
            return std::nullopt;
        error_chain e;
        for (std::uint64_t i = 0; i < v.as.error.len; ++i) {
            if (!readable(v.as.error.chain[i]))
                return std::nullopt;
            e.chain.push_back(as_string(v.as.error.chain[i]));
        }
        return value(std::move(e));
    }
    default: return std::nullopt;
    }
}

const callsite* abi_decoder::find_callsite(std::uint64_t id) const
{
    auto it = callsites_.find(id);
    return it == callsites_.end() ? nullptr : &it->second;
}

std::optional<field_values> abi_decoder::decode_values(const tt_field_value* values, std::uint32_t count,
                                                       const callsite& cs, std::string* why) const
{
    if (count > 0 && values == nullptr) {
        set_why(why, "values pointer is NULL");
        return std::nullopt;
    }
    field_values out;
    out.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        if (values[i].field >= cs.fields.size()) {
            set_why(why, "value for field #" + std::to_string(values[i].field) + " of call site '" + cs.name +
                             "', which has " + std::to_string(cs.fields.size()) + " fields");
            return std::nullopt;
        }
        auto v = value_from_abi(values[i]);
        if (!v) {
            set_why(why, "unreadable value of kind " + std::to_string(values[i].kind));
            return std::nullopt;
        }
        out.emplace_back(cs.fields[values[i].field], std::move(*v));
    }
    return out;
}

std::optional<event> abi_decoder::decode(const tt_event& ev, std::uint64_t new_span_id, std::string* why)
{
    if (ev.struct_size < sizeof(tt_event)) {
        set_why(why, "event struct_size too small");
        return std::nullopt;
    }
    auto span_site = [&](std::uint64_t span) -> const callsite* {
        auto it = span_callsite_.find(span);
        if (it == span_callsite_.end()) {
            set_why(why, "unknown span " + std::to_string(span));
            return nullptr;
        }
        return find_callsite(it->second);
    };
    auto parent_of = [](const tt_event& e) {
        return e.parent == TT_PARENT_ROOT       ? parent_mode::root
               : e.parent == TT_PARENT_EXPLICIT ? parent_mode::explicit_span
                                                : parent_mode::contextual;
    };
    switch (ev.kind) {
    case TT_EVENT_NEW_CALLSITE: {
        if (ev.callsite == nullptr) {
            set_why(why, "new call site without a call site");
            return std::nullopt;
        }
        auto cs = callsite_from_abi(*ev.callsite, why);
        if (!cs)
            return std::nullopt;
        callsites_.insert_or_assign(cs->id, *cs);
        return event(new_callsite{std::move(*cs)});
    }
    case TT_EVENT_NEW_SPAN:
    case TT_EVENT_NEW_EVENT: {
        const callsite* cs = find_callsite(ev.callsite_id);
        if (!cs) {
            set_why(why, "unknown call site " + std::to_string(ev.callsite_id));
            return std::nullopt;
        }
        auto values = decode_values(ev.values, ev.value_count, *cs, why);
        if (!values)
            return std::nullopt;
        const std::uint64_t parent_id = ev.parent == TT_PARENT_EXPLICIT ? ev.related_span_id : 0;
        if (ev.kind == TT_EVENT_NEW_EVENT)
            return event(new_event{ev.callsite_id, parent_of(ev), parent_id, std::move(*values)});
        span_callsite_[new_span_id] = ev.callsite_id;
        return event(new_span{new_span_id, ev.callsite_id, parent_of(ev), parent_id, std::move(*values)});
    }
    case TT_EVENT_VALUES_RECORDED: {
        const callsite* cs = span_site(ev.span_id);
        if (!cs)
            return std::nullopt;
        auto values = decode_values(ev.values, ev.value_count, *cs, why);
        if (!values)
            return std::nullopt;
        return event(values_recorded{ev.span_id, std::move(*values)});
    }
    case TT_EVENT_FOLLOWS_FROM: return event(follows_from{ev.span_id, ev.related_span_id});
    case TT_EVENT_SPAN_ENTERED: return event(span_entered{ev.span_id});
    case TT_EVENT_SPAN_EXITED: return event(span_exited{ev.span_id});
    case TT_EVENT_SPAN_CLONED: return event(span_cloned{ev.span_id});
    case TT_EVENT_SPAN_DROPPED: return event(span_dropped{ev.span_id});
    default: set_why(why, "unknown event kind " + std::to_string(ev.kind)); return std::nullopt;
    }
}

}  // namespace tt::model
