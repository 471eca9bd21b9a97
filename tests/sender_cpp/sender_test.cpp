#include "sender_test.hpp"

#include <sstream>

namespace tt::test {

namespace {

std::string u128_text(model::u128 v)
{
    if (v == 0)
        return "0";
    std::string out;
    while (v != 0) {
        out.insert(out.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
        v /= 10;
    }
    return out;
}

std::string fields_text(const model::field_values& values)
{
    std::string out = "{";
    for (const auto& [name, value] : values)
        out += (out.size() > 1 ? ", " : "") + name + "=" + describe(value);
    return out + "}";
}

std::string parent_text(model::parent_mode mode, std::uint64_t id)
{
    switch (mode) {
    case model::parent_mode::contextual: return "contextual";
    case model::parent_mode::root: return "root";
    case model::parent_mode::explicit_span: return "parent=" + std::to_string(id);
    }
    return "?";
}

}  // namespace

std::string describe(const model::value& v)
{
    return std::visit(
        [](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                return x ? "true" : "false";
            else if constexpr (std::is_same_v<T, model::i128>)
                return x < 0 ? "-" + u128_text(static_cast<model::u128>(0) - static_cast<model::u128>(x)) + "i128"
                             : u128_text(static_cast<model::u128>(x)) + "i128";
            else if constexpr (std::is_same_v<T, model::u128>)
                return u128_text(x) + "u128";
            else if constexpr (std::is_same_v<T, std::int64_t>)
                return std::to_string(x) + "i64";
            else if constexpr (std::is_same_v<T, std::uint64_t>)
                return std::to_string(x) + "u64";
            else if constexpr (std::is_same_v<T, double>) {
                std::ostringstream os;
                os << x << "f64";
                return os.str();
            } else if constexpr (std::is_same_v<T, std::string>)
                return "\"" + x + "\"";
            else if constexpr (std::is_same_v<T, model::debug_text>)
                return "debug(" + x.text + ")";
            else {
                std::string out = "error[";
                for (std::size_t i = 0; i < x.chain.size(); ++i)
                    out += (i ? " <- " : "") + x.chain[i];
                return out + "]";
            }
        },
        v);
}

std::string describe(const model::event& e)
{
    return std::visit(
        [](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, model::new_callsite>) {
                std::string out = "new_callsite " + x.site.name + " id=" + std::to_string(x.site.id) + " fields=[";
                for (std::size_t i = 0; i < x.site.fields.size(); ++i)
                    out += (i ? "," : "") + x.site.fields[i];
                return out + "]";
            } else if constexpr (std::is_same_v<T, model::new_span>)
                return "new_span " + std::to_string(x.id) + " site=" + std::to_string(x.callsite_id) + " " +
                       parent_text(x.parent, x.parent_id) + " " + fields_text(x.values);
            else if constexpr (std::is_same_v<T, model::new_event>)
                return "new_event site=" + std::to_string(x.callsite_id) + " " + parent_text(x.parent, x.parent_id) +
                       " " + fields_text(x.values);
            else if constexpr (std::is_same_v<T, model::values_recorded>)
                return "values_recorded " + std::to_string(x.id) + " " + fields_text(x.values);
            else if constexpr (std::is_same_v<T, model::follows_from>)
                return "follows_from " + std::to_string(x.id) + " <- " + std::to_string(x.cause);
            else if constexpr (std::is_same_v<T, model::span_entered>)
                return "span_entered " + std::to_string(x.id);
            else if constexpr (std::is_same_v<T, model::span_exited>)
                return "span_exited " + std::to_string(x.id);
            else if constexpr (std::is_same_v<T, model::span_cloned>)
                return "span_cloned " + std::to_string(x.id);
            else
                return "span_dropped " + std::to_string(x.id);
        },
        e);
}

std::string describe(const std::vector<model::event>& events)
{
    std::string out;
    for (const auto& e : events)
        out += "  " + describe(e) + "\n";
    return out;
}


}  // namespace tt::test
