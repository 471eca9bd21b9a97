#include <tracetunnel/host/layers.hpp>

#include "text_layer_flush.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serializer.hpp>
#include <boost/json/value.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tt::host {

namespace {

boost::json::value json_of(const model::value& v, boost::json::storage_ptr sp)
{
    return std::visit(
        [&](const auto& x) -> boost::json::value {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::int64_t> ||
                          std::is_same_v<T, std::uint64_t>) {
                return boost::json::value(x, sp);
            } else if constexpr (std::is_same_v<T, model::i128>) {
                if (x >= std::numeric_limits<std::int64_t>::min() && x <= std::numeric_limits<std::int64_t>::max())
                    return boost::json::value(static_cast<std::int64_t>(x), sp);
                if (x > 0 && static_cast<model::u128>(x) <= std::numeric_limits<std::uint64_t>::max())
                    return boost::json::value(static_cast<std::uint64_t>(x), sp);
                return boost::json::value(model::to_decimal(x), sp);
            } else if constexpr (std::is_same_v<T, model::u128>) {
                if (x <= std::numeric_limits<std::uint64_t>::max())
                    return boost::json::value(static_cast<std::uint64_t>(x), sp);
                return boost::json::value(model::to_decimal(x), sp);
            } else if constexpr (std::is_same_v<T, double>) {
                if (std::isnan(x))
                    return boost::json::value("NaN", sp);
                if (std::isinf(x))
                    return boost::json::value(x < 0 ? "-inf" : "inf", sp);
                return boost::json::value(x, sp);
            } else if constexpr (std::is_same_v<T, std::string>) {
                return boost::json::value(x, sp);
            } else if constexpr (std::is_same_v<T, model::debug_text>) {
                return boost::json::value(x.text, sp);
            } else {
                std::string joined;
                for (std::size_t i = 0; i < x.chain.size(); ++i) {
                    if (i)
                        joined += ": ";
                    joined += x.chain[i];
                }
                return boost::json::value(joined, sp);
            }
        },
        v);
}

std::string_view upper_level(model::level l) noexcept
{
    switch (l) {
    case model::level::error:
        return "ERROR";
    case model::level::warn:
        return "WARN";
    case model::level::info:
        return "INFO";
    case model::level::debug:
        return "DEBUG";
    case model::level::trace:
        return "TRACE";
    }
    return "INFO";
}

boost::json::object span_object(const span_ref& s, boost::json::storage_ptr sp)
{
    boost::json::object o(sp);
    o["name"] = s.name();
    if (s.fields)
        for (const auto& [name, v] : *s.fields)
            o[name] = json_of(v, sp);
    return o;
}

}  // namespace

struct json_layer::impl {
    unsigned char arena[16 * 1024];  // first-choice storage of each line's tree
    std::string line;                 // reused output buffer
    char chunk[4096];
};

json_layer::json_layer(line_writer out, json_options opts)
    : out_(out), opts_(std::move(opts)), impl_(std::make_unique<impl>())
{
    flush_ticket_ = detail::start_flushing(out_, mutex_, errors_);
}

json_layer::~json_layer()
{
    detail::stop_flushing(flush_ticket_, out_, errors_);
}

std::string json_layer::format_event(const event_view& ev)
{
    std::lock_guard lock(mutex_);
    return build_locked(ev);
}

const std::string& json_layer::build_locked(const event_view& ev)
{
    boost::json::monotonic_resource mr(impl_->arena, sizeof impl_->arena);
    boost::json::storage_ptr sp(&mr);
    boost::json::object o(sp);
    o["timestamp"] = opts_.fixed_time ? *opts_.fixed_time : format_time(ev.time);
    o["level"] = upper_level(ev.site ? ev.site->level : model::level::info);
    boost::json::object fields(sp);
    for (const auto& f : ev.values)
        if (f.value)
            fields[f.name] = json_of(*f.value, sp);
    o["fields"] = std::move(fields);
    o["target"] = ev.site ? std::string_view(ev.site->target) : std::string_view();
    if (!ev.plugin.empty())
        o["plugin"] = ev.plugin;
    if (opts_.with_location && ev.site) {
        o["filename"] = ev.site->file;
        o["line_number"] = ev.site->line;
    }
    if (opts_.with_spans && !ev.spans.empty()) {
        o["span"] = span_object(ev.spans.back(), sp);
        boost::json::array spans(sp);
        for (const auto& s : ev.spans)
            spans.push_back(span_object(s, sp));
        o["spans"] = std::move(spans);
    }
    if (opts_.with_thread_ids) {
        char id[32];
        const auto r = fmt::format_to_n(id, sizeof id, "ThreadId({:02})", thread_number(ev.thread));
        o["threadId"] = std::string_view(id, std::min(r.size, sizeof id));
    }

    boost::json::serializer sr;
    boost::json::value root(std::move(o), sp);
    sr.reset(&root);
    impl_->line.clear();
    while (!sr.done())
        impl_->line.append(sr.read(impl_->chunk, sizeof impl_->chunk));
    impl_->line += '\n';
    return impl_->line;
}

void json_layer::write_line(const event_view& ev) noexcept
{
    try {
        std::lock_guard lock(mutex_);
        if (!out_.write(build_locked(ev)))
            errors_.fetch_add(1, std::memory_order_relaxed);
    } catch (...) {
        errors_.fetch_add(1, std::memory_order_relaxed);
    }
}

void json_layer::on_event(const event_view& ev) noexcept
{
    write_line(ev);
}

namespace {

event_view span_event_view(span_context scope, const field_ref& msg)
{
    event_view ev;
    ev.site = scope.back().site;
    ev.plugin = scope.back().plugin;
    ev.values = field_refs(&msg, 1);
    ev.time = clock::now();
    ev.thread = std::this_thread::get_id();
    ev.spans = scope;
    return ev;
}

}  // namespace

void json_layer::on_new_span(span_context scope) noexcept
{
    write_span_event(scope, scope.empty() || !scope.back().resumed ? "new" : "resume");
}

void json_layer::on_suspend(span_context scope) noexcept
{
    write_span_event(scope, "suspend");
}

void json_layer::on_close(span_context scope) noexcept
{
    write_span_event(scope, "close");
}

void json_layer::write_span_event(span_context scope, const char* what) noexcept
{
    if (!opts_.span_events || scope.empty() || !scope.back().site)
        return;
    try {
        const model::value msg{std::string(what)};
        const field_ref ref{"message", &msg};
        write_line(span_event_view(scope, ref));
    } catch (...) {
        errors_.fetch_add(1, std::memory_order_relaxed);
    }
}

}  // namespace tt::host
