// packed_values and its byte form (tracetunnel/persisted.hpp).
#include <tracetunnel/persisted.hpp>

#include <cstring>
#include <new>
#include <stdexcept>

namespace tt::state {

namespace packed {

namespace {

void put_str(std::string& out, std::string_view s)
{
    put_len(out, s.size());
    out.append(s);
}

}  // namespace

void put(std::string& out, std::string_view name, const model::value& v)
{
    out.push_back(static_cast<char>(v.index() | by_name));
    put_str(out, name);
    auto raw = [&](const void* x, std::size_t n) { out.append(static_cast<const char*>(x), n); };
    switch (v.index()) {
    case 0: out.push_back(std::get<bool>(v) ? 1 : 0); break;
    case 1: raw(&std::get<std::int64_t>(v), 8); break;
    case 2: raw(&std::get<std::uint64_t>(v), 8); break;
    case 3: raw(&std::get<model::i128>(v), 16); break;
    case 4: raw(&std::get<model::u128>(v), 16); break;
    case 5: raw(&std::get<double>(v), 8); break;
    case 6: put_str(out, std::get<std::string>(v)); break;
    case 7: put_str(out, std::get<model::debug_text>(v).text); break;
    case 8: {
        const auto& chain = std::get<model::error_chain>(v).chain;
        put_len(out, chain.size());
        for (const auto& c : chain)
            put_str(out, c);
        break;
    }
    default: break;
    }
}

model::value value_of(unsigned char type, std::string_view payload)
{
    const char* p = payload.data();
    const char* end = p + payload.size();
    auto fixed = [&](auto x) {
        std::memcpy(&x, p, sizeof x);
        return model::value(x);
    };
    std::string_view s;
    switch (type & type_mask) {
    case 0: return model::value(*p != 0);
    case 1: return fixed(std::int64_t{});
    case 2: return fixed(std::uint64_t{});
    case 3: return fixed(model::i128{});
    case 4: return fixed(model::u128{});
    case 5: return fixed(double{});
    case 6: skip_str(p, end, s); return model::value(std::in_place_index<6>, s);
    case 7: skip_str(p, end, s); return model::debug_text{std::string(s)};
    case 8: {
        std::uint64_t n = 0;
        read_len(p, end, n);
        model::error_chain e;
        e.chain.reserve(static_cast<std::size_t>(n));
        for (std::uint64_t k = 0; k < n && skip_str(p, end, s); ++k)
            e.chain.emplace_back(s);
        return e;
    }
    default: return model::value();
    }
}

}  // namespace packed

void packed_values::assign(std::span<const std::pair<std::string, model::value>> fv)
{
    std::string b;
    for (const auto& [name, v] : fv)
        packed::put(b, name, v);
    assign_packed(b, fv.size());
}

void packed_values::emplace_back(std::string_view name, const model::value& v)
{
    std::string b(bytes());
    packed::put(b, name, v);
    assign_packed(b, count_ + std::size_t{1});
}

void packed_values::assign_packed(std::string_view b, std::size_t count)
{
    if (b.size() > 0xFFFFFFFFu || count > 0xFFFFFFFFu)
        throw std::length_error("span values too large");
    // The new buffer first: on an allocation failure the old values stay.
    char* dst = b.size() > inline_bytes ? new char[b.size()] : nullptr;
    release();
    if (dst != nullptr)
        heap_ = dst;
    size_ = static_cast<std::uint32_t>(b.size());
    count_ = static_cast<std::uint32_t>(count);
    if (!b.empty())
        std::memmove(data(), b.data(), b.size());
}

void packed_values::take(packed_values& o) noexcept
{
    size_ = o.size_;
    count_ = o.count_;
    if (size_ > inline_bytes)
        heap_ = o.heap_;
    else if (size_ != 0)
        std::memcpy(inline_, o.inline_, size_);
    o.size_ = o.count_ = 0;
}

model::field_values packed_values::to_fields() const
{
    model::field_values out;
    out.reserve(count_);
    for (auto&& [name, v] : *this)
        out.emplace_back(std::string(name), std::move(v));
    return out;
}

bool packed_values::operator==(const model::field_values& fv) const
{
    if (fv.size() != count_)
        return false;
    std::size_t i = 0;
    for (const auto& [name, v] : *this) {
        if (name != fv[i].first || !model::same_value(v, fv[i].second))
            return false;
        ++i;
    }
    return true;
}

packed_values::iterator::value_type packed_values::iterator::operator*() const
{
    const char* p = p_;
    packed::item it;
    packed::next(p, end_, it);
    return {it.name, packed::value_of(it.head, it.payload)};
}

packed_values::iterator& packed_values::iterator::operator++() noexcept
{
    packed::item it;
    if (!packed::next(p_, end_, it))
        p_ = end_;
    return *this;
}

}  // namespace tt::state
