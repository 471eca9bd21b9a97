// Copies borrowed ABI events (abi.h) into owned model events (model.hpp).
//
// An ABI value names its field by index into its call site; the owned form
// names it by string. abi_decoder remembers the call sites it has seen and the
// call site of each span, which is what that translation needs.
//
//   tt::model::abi_decoder dec;
//   std::string why;
//   auto ev = dec.decode(abi_event, assigned_id, &why);  // nullopt + why on bad input
#pragma once

#include <tracetunnel/model.hpp>

#include <optional>
#include <string>
#include <unordered_map>

namespace tt::model {

// The owned copy of one ABI call site. Returns nullopt (and why) for a call
// site that cannot be read: bad struct_size, unknown kind or level, NULL
// strings with a length.
std::optional<callsite> callsite_from_abi(const tt_callsite& cs, std::string* why = nullptr);

class abi_decoder {
public:
    // `new_span_id` is the id the host assigned when ev is TT_EVENT_NEW_SPAN.
    std::optional<event> decode(const tt_event& ev, std::uint64_t new_span_id, std::string* why = nullptr);

    const callsite* find_callsite(std::uint64_t id) const;

private:
    std::optional<field_values> decode_values(const tt_field_value* values, std::uint32_t count,
                                              const callsite& cs, std::string* why) const;

    std::unordered_map<std::uint64_t, callsite> callsites_;
    std::unordered_map<std::uint64_t, std::uint64_t> span_callsite_;
};

// The owned copy of one ABI value; nullopt for an unknown kind.
std::optional<value> value_from_abi(const tt_field_value& v);

}  // namespace tt::model
