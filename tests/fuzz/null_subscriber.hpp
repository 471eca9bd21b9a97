// A subscriber for the fuzz targets that checks the pipeline contract
// (pipeline.hpp) instead of printing: handles are fresh and non-zero, every
// handle is closed or suspended exactly once, nothing but a follows-from
// cause refers to a closed handle, and enter/exit pair up per handle.
#pragma once

#include "fuzz_check.hpp"

#include <tracetunnel/host/pipeline.hpp>

#include <cstdint>
#include <mutex>
#include <unordered_map>

class checking_subscriber final : public tt::host::subscriber {
public:
    struct span_state {
        bool open = true;
        std::int64_t entered = 0;
        std::uint64_t plugin_span_id = 0;
    };

    tt::host::span_handle new_span(const tt::host::span_attrs& attrs) noexcept override
    {
        FUZZ_CHECK(attrs.site != nullptr, "new_span without a call site");
        FUZZ_CHECK(attrs.parent == 0 || spans_.count(attrs.parent), "new_span with a parent never handed out");
        const auto h = ++last_;
        spans_[h] = {};
        spans_[h].plugin_span_id = attrs.plugin_span_id;
        ++opened_;
        return h;
    }
    void record(tt::host::span_handle span, tt::host::field_refs values) noexcept override
    {
        (void)values;
        live(span, "record");
    }
    void follows_from(tt::host::span_handle span, tt::host::span_handle cause) noexcept override
    {
        live(span, "follows_from");
        FUZZ_CHECK(spans_.count(cause), "follows_from a cause never handed out");
    }
    void enter(tt::host::span_handle span) noexcept override
    {
        ++live(span, "enter").entered;
        stack_.push(span);
    }
    void exit(tt::host::span_handle span) noexcept override
    {
        auto& s = live(span, "exit");
        FUZZ_CHECK(s.entered > 0, "exit of a span that is not entered");
        --s.entered;
        stack_.pop(span);
    }
    void force_exit(tt::host::span_handle span, std::thread::id) noexcept override
    {
        auto& s = live(span, "force_exit");
        FUZZ_CHECK(s.entered > 0, "force_exit of a span that is not entered");
        --s.entered;
        stack_.pop(span);
    }
    void close(tt::host::span_handle span) noexcept override { end(span); }
    void suspend(tt::host::span_handle span) noexcept override { end(span); }
    void event(const tt::host::event_record& ev) noexcept override
    {
        FUZZ_CHECK(ev.site != nullptr, "event without a call site");
        if (ev.parent != 0)
            live(ev.parent, "event parent");
        ++events_;
    }
    tt::host::span_handle current_span() const noexcept override { return stack_.current(); }
    std::uint64_t plugin_span_id(tt::host::span_handle span) const noexcept override
    {
        const auto it = spans_.find(span);
        return it == spans_.end() ? 0 : it->second.plugin_span_id;
    }

    // How many handles are open now.
    std::size_t open_count() const
    {
        std::size_t n = 0;
        for (const auto& [h, s] : spans_)
            n += s.open;
        return n;
    }
    std::size_t opened() const { return opened_; }
    std::size_t events() const { return events_; }

private:
    span_state& live(tt::host::span_handle h, const char* what)
    {
        auto it = spans_.find(h);
        FUZZ_CHECK(it != spans_.end(), what);
        FUZZ_CHECK(it->second.open, what);
        return it->second;
    }
    void end(tt::host::span_handle h)
    {
        auto& s = live(h, "close/suspend of a closed or unknown handle");
        FUZZ_CHECK(s.entered == 0, "closed or suspended while still entered");
        s.open = false;
    }

    std::unordered_map<tt::host::span_handle, span_state> spans_;
    tt::host::span_handle last_ = 0;
    std::size_t opened_ = 0;
    std::size_t events_ = 0;
    tt::host::thread_span_stack stack_;
};
