#include "recording_host.hpp"

namespace tt::test {

recording_host::recording_host() : recording_host([](const model::callsite&) { return TT_INTEREST_ALWAYS; }) {}

recording_host::recording_host(interest_policy policy) : policy_(std::move(policy)) {}

tt_host recording_host::api()
{
    tt_host h{};
    h.struct_size = sizeof h;
    h.abi_version = TT_ABI_VERSION;
    h.emit = &recording_host::emit;
    h.ctx = this;
    return h;
}

std::uint64_t recording_host::emit(void* ctx, const tt_event* event)
{
    if (ctx == nullptr || event == nullptr)
        return TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT;
    return static_cast<recording_host*>(ctx)->on_event(*event);
}

std::uint64_t recording_host::on_event(const tt_event& event)
{
    std::lock_guard lock(mutex_);
    const std::uint64_t site_id =
        event.kind == TT_EVENT_NEW_CALLSITE && event.callsite ? event.callsite->id : event.callsite_id;
    if (site_id != 0)
        ++hits_[site_id];
    const std::uint64_t new_id = event.kind == TT_EVENT_NEW_SPAN ? next_span_id_ : 0;
    std::string why;
    auto decoded = decoder_.decode(event, new_id, &why);
    if (!decoded) {
        errors_.push_back(why);
        return event.kind == TT_EVENT_NEW_CALLSITE ? TT_INTEREST_NEVER : (TT_STATUS_ERROR_BIT | TT_STATUS_BAD_EVENT);
    }
    events_.push_back(*decoded);
    if (auto* cs = std::get_if<model::new_callsite>(&*decoded)) {
        callsites_.push_back(cs->site);
        return policy_(cs->site);
    }
    if (event.kind == TT_EVENT_NEW_SPAN)
        return next_span_id_++;
    return TT_STATUS_OK;
}

std::vector<model::event> recording_host::events() const
{
    std::lock_guard lock(mutex_);
    return events_;
}

std::vector<std::string> recording_host::errors() const
{
    std::lock_guard lock(mutex_);
    return errors_;
}

std::size_t recording_host::hits(std::uint64_t callsite_id) const
{
    std::lock_guard lock(mutex_);
    auto it = hits_.find(callsite_id);
    return it == hits_.end() ? 0 : it->second;
}

const model::callsite* recording_host::find_callsite_by_name(const std::string& name) const
{
    std::lock_guard lock(mutex_);
    for (const auto& cs : callsites_)
        if (cs.name == name)
            return &cs;
    return nullptr;
}

void recording_host::clear()
{
    std::lock_guard lock(mutex_);
    events_.clear();
    errors_.clear();
    hits_.clear();
}

}  // namespace tt::test
