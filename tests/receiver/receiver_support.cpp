#include "receiver_support.hpp"

#include <doctest/doctest.h>

#include <tracetunnel/abi_convert.hpp>

#include <boost/json/serialize.hpp>

#include <sstream>

namespace tt::test {

tt_str str_of(std::string_view s)
{
    return tt_str{s.data(), s.size()};
}

abi_site::abi_site(tt_callsite_kind kind, tt_level level, std::string name, std::vector<std::string> fields,
                   std::string target)
    : name_(std::move(name)), target_(std::move(target)), module_("test"), file_("test.cpp"), fields_(std::move(fields))
{
    for (const auto& f : fields_)
        field_strs_.push_back(str_of(f));
    cs_.struct_size = sizeof(tt_callsite);
    cs_.kind = kind;
    cs_.level = level;
    cs_.line = 7;
    cs_.name = str_of(name_);
    cs_.target = str_of(target_);
    cs_.module_path = str_of(module_);
    cs_.file = str_of(file_);
    cs_.field_names = field_strs_.empty() ? nullptr : field_strs_.data();
    cs_.field_count = static_cast<std::uint32_t>(field_strs_.size());
    cs_.id = tt_callsite_hash(&cs_);
}

std::uint32_t abi_site::field(const std::string& name) const
{
    for (std::size_t i = 0; i < fields_.size(); ++i)
        if (fields_[i] == name)
            return static_cast<std::uint32_t>(i);
    FAIL("no field " << name);
    return 0;
}

model::callsite abi_site::model() const
{
    auto cs = model::callsite_from_abi(cs_);
    REQUIRE(cs);
    return *cs;
}

tt_field_value fv_bool(std::uint32_t field, bool v)
{
    tt_field_value f{};
    f.field = field;
    f.kind = TT_VALUE_BOOL;
    f.as.boolean = v ? 1 : 0;
    return f;
}
tt_field_value fv_i64(std::uint32_t field, std::int64_t v)
{
    tt_field_value f{};
    f.field = field;
    f.kind = TT_VALUE_I64;
    f.as.i64 = v;
    return f;
}
tt_field_value fv_u64(std::uint32_t field, std::uint64_t v)
{
    tt_field_value f{};
    f.field = field;
    f.kind = TT_VALUE_U64;
    f.as.u64 = v;
    return f;
}
tt_field_value fv_f64(std::uint32_t field, double v)
{
    tt_field_value f{};
    f.field = field;
    f.kind = TT_VALUE_F64;
    f.as.f64 = v;
    return f;
}
tt_field_value fv_str(std::uint32_t field, std::string_view v)
{
    tt_field_value f{};
    f.field = field;
    f.kind = TT_VALUE_STR;
    f.as.str = str_of(v);
    return f;
}
tt_field_value fv_debug(std::uint32_t field, std::string_view v)
{
    tt_field_value f{};
    f.field = field;
    f.kind = TT_VALUE_DEBUG;
    f.as.str = str_of(v);
    return f;
}

tt_field_value fv_error(std::uint32_t field, const std::vector<tt_str>& chain)
{
    tt_field_value f{};
    f.field = field;
    f.kind = TT_VALUE_ERROR;
    f.as.error = tt_error_chain{chain.data(), chain.size()};
    return f;
}

tt_event ev_new_callsite(const tt_callsite& cs)
{
    tt_event e{};
    e.struct_size = sizeof(tt_event);
    e.kind = TT_EVENT_NEW_CALLSITE;
    e.callsite = &cs;
    return e;
}

namespace {
tt_event with_values(tt_event e, const std::vector<tt_field_value>& values)
{
    e.values = values.empty() ? nullptr : values.data();
    e.value_count = static_cast<std::uint32_t>(values.size());
    return e;
}
}  // namespace

tt_event ev_new_span(std::uint64_t callsite_id, const std::vector<tt_field_value>& values, tt_parent_mode parent,
                     std::uint64_t parent_id)
{
    tt_event e{};
    e.struct_size = sizeof(tt_event);
    e.kind = TT_EVENT_NEW_SPAN;
    e.callsite_id = callsite_id;
    e.parent = parent;
    e.related_span_id = parent_id;
    return with_values(e, values);
}

tt_event ev_new_event(std::uint64_t callsite_id, const std::vector<tt_field_value>& values, tt_parent_mode parent,
                      std::uint64_t parent_id)
{
    tt_event e = ev_new_span(callsite_id, values, parent, parent_id);
    e.kind = TT_EVENT_NEW_EVENT;
    return e;
}

tt_event ev_span(tt_event_kind kind, std::uint64_t span_id, std::uint64_t related)
{
    tt_event e{};
    e.struct_size = sizeof(tt_event);
    e.kind = kind;
    e.span_id = span_id;
    e.related_span_id = related;
    return e;
}

tt_event ev_record(std::uint64_t span_id, const std::vector<tt_field_value>& values)
{
    tt_event e = ev_span(TT_EVENT_VALUES_RECORDED, span_id);
    return with_values(e, values);
}

std::uint64_t ok(host::receiver& r, const tt_event& ev)
{
    auto res = r.try_receive(ev);
    REQUIRE_MESSAGE(res.has_value(), "refused: " << res.error().message);
    return res.value();
}

std::uint64_t ok(host::receiver& r, const model::event& ev)
{
    auto res = r.try_receive(ev);
    REQUIRE_MESSAGE(res.has_value(), "refused: " << res.error().message);
    return res.value();
}

bool same_json_ordered(const boost::json::value& a, const boost::json::value& b, std::string* where)
{
    auto fail = [&](const std::string& why) {
        if (where)
            *where = why + ": " + boost::json::serialize(a) + " vs " + boost::json::serialize(b);
        return false;
    };
    if (a.is_object() && b.is_object()) {
        const auto& oa = a.get_object();
        const auto& ob = b.get_object();
        if (oa.size() != ob.size())
            return fail("object sizes differ");
        auto ia = oa.begin();
        auto ib = ob.begin();
        for (; ia != oa.end(); ++ia, ++ib) {
            if (ia->key() != ib->key())
                return fail("keys differ ('" + std::string(ia->key()) + "' vs '" + std::string(ib->key()) + "')");
            if (!same_json_ordered(ia->value(), ib->value(), where))
                return false;
        }
        return true;
    }
    if (a.is_array() && b.is_array()) {
        const auto& aa = a.get_array();
        const auto& ab = b.get_array();
        if (aa.size() != ab.size())
            return fail("array sizes differ");
        for (std::size_t i = 0; i < aa.size(); ++i)
            if (!same_json_ordered(aa[i], ab[i], where))
                return false;
        return true;
    }
    // numbers: int64/uint64 compare by value; doubles by value
    if (a.is_number() && b.is_number()) {
        if (a.is_double() != b.is_double())
            return fail("number kinds differ");
        if (a == b)
            return true;
        return fail("numbers differ");
    }
    if (a == b)
        return true;
    return fail("values differ");
}

host::receiver_state state_of(host::receiver& r)
{
    host::receiver_state s;
    s.metadata = r.persist_metadata();
    s.spans = r.persist();
    return s;
}

std::string describe(const host::persisted_spans& s)
{
    std::ostringstream out;
    out << "next_id=" << s.next_id << " spans:";
    for (const auto& p : s.spans) {
        out << " {" << p.id << " cs=" << p.callsite_id << " parent=" << p.parent_id << " refs=" << p.ref_count
            << " values=" << p.values.size() << " ff=" << p.follows_from.size() << "}";
    }
    return out.str();
}

}  // namespace tt::test
