#include <tracetunnel/host/capture.hpp>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <algorithm>
#include <limits>

namespace tt::host {

namespace {

model::value copy_value(const field_ref& f)
{
    return f.value ? f.value.to_value() : model::value(std::string());
}

void merge(model::field_values& into, field_refs values)
{
    for (const auto& f : values) {
        auto it = std::find_if(into.begin(), into.end(), [&](const auto& p) { return p.first == f.name; });
        if (it != into.end())
            it->second = copy_value(f);
        else
            into.emplace_back(std::string(f.name), copy_value(f));
    }
}

std::string value_text(const model::value& v)
{
    if (const auto* s = std::get_if<std::string>(&v))
        return *s;
    if (const auto* d = std::get_if<model::debug_text>(&v))
        return d->text;
    if (const auto* e = std::get_if<model::error_chain>(&v))
        return e->chain.empty() ? std::string() : e->chain.front();
    if (const auto* b = std::get_if<bool>(&v))
        return *b ? "true" : "false";
    if (const auto* i = std::get_if<std::int64_t>(&v))
        return std::to_string(*i);
    if (const auto* u = std::get_if<std::uint64_t>(&v))
        return std::to_string(*u);
    if (const auto* f = std::get_if<double>(&v))
        return std::to_string(*f);
    return "<128-bit integer>";
}

}  // namespace

boost::json::value expect_json_value(const model::value& v)
{
    return std::visit(
        [](const auto& x) -> boost::json::value {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                return boost::json::value(x);
            else if constexpr (std::is_same_v<T, std::int64_t>)
                return boost::json::value(x);
            else if constexpr (std::is_same_v<T, std::uint64_t>)
                return boost::json::value(x);
            else if constexpr (std::is_same_v<T, model::i128>) {
                if (x >= std::numeric_limits<std::int64_t>::min() && x <= std::numeric_limits<std::int64_t>::max())
                    return boost::json::value(static_cast<std::int64_t>(x));
                if (x > 0 && static_cast<model::u128>(x) <= std::numeric_limits<std::uint64_t>::max())
                    return boost::json::value(static_cast<std::uint64_t>(x));
                return boost::json::value(static_cast<double>(x));
            } else if constexpr (std::is_same_v<T, model::u128>) {
                if (x <= std::numeric_limits<std::uint64_t>::max())
                    return boost::json::value(static_cast<std::uint64_t>(x));
                return boost::json::value(static_cast<double>(x));
            } else if constexpr (std::is_same_v<T, double>)
                return boost::json::value(x);
            else if constexpr (std::is_same_v<T, std::string>)
                return boost::json::value(x);
            else if constexpr (std::is_same_v<T, model::debug_text>)
                return boost::json::value(x.text);
            else
                return boost::json::value(x.chain.empty() ? std::string() : x.chain.front());
        },
        v);
}

void capture_layer::set_interest_policy(std::function<interest(const model::callsite&)> p)
{
    std::lock_guard lock(mutex_);
    interest_policy_ = std::move(p);
}

void capture_layer::set_enabled_policy(std::function<bool(const model::callsite&)> p)
{
    std::lock_guard lock(mutex_);
    enabled_policy_ = std::move(p);
}

interest capture_layer::interest_in(const model::callsite& site) noexcept
{
    std::lock_guard lock(mutex_);
    return interest_policy_ ? interest_policy_(site) : interest::always;
}

bool capture_layer::enabled(const model::callsite& site) noexcept
{
    std::lock_guard lock(mutex_);
    return enabled_policy_ ? enabled_policy_(site) : true;
}

captured_span* capture_layer::find(span_handle h)
{
    if (h == 0 || h > spans_.size())
        return nullptr;
    return &spans_[h - 1];
}

void capture_layer::anomaly(std::string what)
{
    anomalies_.push_back(std::move(what));
}

span_handle capture_layer::new_span(const span_attrs& attrs) noexcept
{
    std::lock_guard lock(mutex_);
    captured_span s;
    s.handle = spans_.size() + 1;
    if (attrs.site) {
        s.name = attrs.site->name;
        s.target = attrs.site->target;
        s.level = attrs.site->level;
        s.callsite_id = attrs.site->id;
    } else {
        anomaly("new span without a call site");
    }
    s.plugin = std::string(attrs.plugin);
    s.plugin_span_id = attrs.plugin_span_id;
    s.parent = attrs.parent;
    if (attrs.parent != 0 && find(attrs.parent) == nullptr)
        anomaly("new span with unknown parent " + std::to_string(attrs.parent));
    merge(s.fields, attrs.values);
    s.start = attrs.time;
    spans_.push_back(std::move(s));
    return spans_.back().handle;
}

void capture_layer::record(span_handle span, field_refs values) noexcept
{
    std::lock_guard lock(mutex_);
    captured_span* s = find(span);
    if (!s || s->closed) {
        anomaly("record on " + std::string(s ? "closed" : "unknown") + " span " + std::to_string(span));
        return;
    }
    merge(s->fields, values);
}

void capture_layer::follows_from(span_handle span, span_handle cause) noexcept
{
    std::lock_guard lock(mutex_);
    captured_span* s = find(span);
    if (!s || s->closed || find(cause) == nullptr) {
        anomaly("follows_from " + std::to_string(span) + " <- " + std::to_string(cause) + " on a bad handle");
        return;
    }
    if (std::find(s->follows_from.begin(), s->follows_from.end(), cause) == s->follows_from.end())
        s->follows_from.push_back(cause);
}

void capture_layer::enter(span_handle span) noexcept
{
    std::lock_guard lock(mutex_);
    captured_span* s = find(span);
    if (!s || s->closed) {
        anomaly("enter of bad span " + std::to_string(span));
        return;
    }
    ++s->entered;
    stack_.push(span);
}

void capture_layer::exit(span_handle span) noexcept
{
    std::lock_guard lock(mutex_);
    captured_span* s = find(span);
    if (!s || s->closed) {
        anomaly("exit of bad span " + std::to_string(span));
        return;
    }
    ++s->exited;
    if (!stack_.pop(span))
        anomaly("exit of span " + std::to_string(span) + " not entered on this thread");
}

void capture_layer::force_exit(span_handle span, std::thread::id thread) noexcept
{
    std::lock_guard lock(mutex_);
    captured_span* s = find(span);
    if (!s || s->closed) {
        anomaly("force exit of bad span " + std::to_string(span));
        return;
    }
    ++s->exited;
    ++s->force_exited;
    // On the calling thread the frame is removed; frames on other threads
    // are skipped by current_span once the span is closed.
    if (thread == std::this_thread::get_id())
        stack_.pop(span);
}

void capture_layer::close(span_handle span) noexcept
{
    std::lock_guard lock(mutex_);
    captured_span* s = find(span);
    if (!s) {
        anomaly("close of unknown span " + std::to_string(span));
        return;
    }
    if (s->closed)
        anomaly("second close of span " + std::to_string(span));
    s->closed = true;
    ++s->close_count;
}

void capture_layer::event(const event_record& ev) noexcept
{
    std::lock_guard lock(mutex_);
    captured_event e;
    if (ev.site) {
        e.level = ev.site->level;
        e.name = ev.site->name;
        e.target = ev.site->target;
    }
    e.plugin = std::string(ev.plugin);
    e.span = ev.parent;
    e.time = ev.time.get();
    for (const auto& f : ev.values) {
        if (f.name == "message" && f.value)
            e.message = value_text(f.value.to_value());
    }
    model::field_values fields;
    merge(fields, ev.values);
    std::erase_if(fields, [](const auto& p) { return p.first == "message"; });
    e.fields = std::move(fields);
    events_.push_back(std::move(e));
    if (ev.parent != 0) {
        captured_span* s = find(ev.parent);
        if (!s || s->closed)
            anomaly("event in bad span " + std::to_string(ev.parent));
        else
            s->events.push_back(events_.size() - 1);
    }
}

std::uint64_t capture_layer::plugin_span_id(span_handle span) const noexcept
{
    std::lock_guard lock(mutex_);
    return span != 0 && span <= spans_.size() ? spans_[span - 1].plugin_span_id : 0;
}

span_handle capture_layer::current_span() const noexcept
{
    std::lock_guard lock(mutex_);
    return stack_.current_if([&](span_handle h) { return h != 0 && h <= spans_.size() && !spans_[h - 1].closed; });
}

std::vector<captured_span> capture_layer::spans() const
{
    std::lock_guard lock(mutex_);
    return spans_;
}

std::vector<captured_event> capture_layer::events() const
{
    std::lock_guard lock(mutex_);
    return events_;
}

std::optional<captured_span> capture_layer::span(span_handle h) const
{
    std::lock_guard lock(mutex_);
    if (h == 0 || h > spans_.size())
        return std::nullopt;
    return spans_[h - 1];
}

std::size_t capture_layer::open_spans() const
{
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count_if(spans_.begin(), spans_.end(), [](const auto& s) { return !s.closed; }));
}

std::vector<std::string> capture_layer::anomalies() const
{
    std::lock_guard lock(mutex_);
    return anomalies_;
}

std::vector<span_handle> capture_layer::find_by_name(std::string_view name) const
{
    std::lock_guard lock(mutex_);
    std::vector<span_handle> out;
    for (const auto& s : spans_)
        if (s.name == name)
            out.push_back(s.handle);
    return out;
}

std::vector<span_handle> capture_layer::find_by_level(model::level level) const
{
    std::lock_guard lock(mutex_);
    std::vector<span_handle> out;
    for (const auto& s : spans_)
        if (s.level == level)
            out.push_back(s.handle);
    return out;
}

std::vector<span_handle> capture_layer::find_by_field(std::string_view field, const model::value& v) const
{
    std::lock_guard lock(mutex_);
    std::vector<span_handle> out;
    for (const auto& s : spans_)
        for (const auto& [name, value] : s.fields)
            if (name == field && model::same_value(value, v)) {
                out.push_back(s.handle);
                break;
            }
    return out;
}

std::vector<span_handle> capture_layer::children_of(span_handle h) const
{
    std::lock_guard lock(mutex_);
    std::vector<span_handle> out;
    for (const auto& s : spans_)
        if (s.parent == h && h != 0)
            out.push_back(s.handle);
    return out;
}

std::vector<span_handle> capture_layer::ancestors_of(span_handle h) const
{
    std::lock_guard lock(mutex_);
    std::vector<span_handle> out;
    if (h == 0 || h > spans_.size())
        return out;
    span_handle p = spans_[h - 1].parent;
    // Parents are always created before their children, so this ends.
    while (p != 0 && p <= spans_.size() && p < h && out.size() < spans_.size()) {
        out.push_back(p);
        p = spans_[p - 1].parent;
    }
    return out;
}

std::vector<span_handle> capture_layer::descendants_of(span_handle h) const
{
    std::lock_guard lock(mutex_);
    std::vector<span_handle> out;
    std::vector<span_handle> todo{h};
    while (!todo.empty()) {
        const span_handle cur = todo.back();
        todo.pop_back();
        if (cur != h)
            out.push_back(cur);
        // children in reverse so the first child is visited first
        for (auto it = spans_.rbegin(); it != spans_.rend(); ++it)
            if (it->parent == cur && cur != 0 && it->handle > cur)
                todo.push_back(it->handle);
    }
    return out;
}

std::vector<captured_event> capture_layer::events_in(span_handle h) const
{
    std::lock_guard lock(mutex_);
    std::vector<captured_event> out;
    for (const auto& e : events_)
        if (e.span == h)
            out.push_back(e);
    return out;
}

boost::json::value capture_layer::to_expect_json() const
{
    std::lock_guard lock(mutex_);
    auto id_of = [](span_handle h) -> boost::json::value {
        return h == 0 ? boost::json::value(nullptr) : boost::json::value(static_cast<std::uint64_t>(h));
    };
    auto fields_of = [](const model::field_values& fv) {
        boost::json::object o;
        for (const auto& [name, v] : fv)
            o[name] = expect_json_value(v);
        return o;
    };
    boost::json::array spans;
    for (const auto& s : spans_) {
        boost::json::object o;
        o["id"] = static_cast<std::uint64_t>(s.handle);
        o["name"] = s.name;
        o["target"] = s.target;
        o["level"] = std::string(model::to_string(s.level));
        o["parent"] = id_of(s.parent);
        boost::json::array ff;
        for (span_handle c : s.follows_from)
            ff.push_back(id_of(c));
        o["follows_from"] = std::move(ff);
        o["fields"] = fields_of(s.fields);
        o["closed"] = s.closed;
        o["entered"] = static_cast<std::uint64_t>(s.entered);
        o["exited"] = static_cast<std::uint64_t>(s.exited);
        spans.push_back(std::move(o));
    }
    boost::json::array events;
    for (const auto& e : events_) {
        boost::json::object o;
        o["span"] = id_of(e.span);
        o["level"] = std::string(model::to_string(e.level));
        o["target"] = e.target;
        o["message"] = e.message ? boost::json::value(*e.message) : boost::json::value(nullptr);
        o["fields"] = fields_of(e.fields);
        events.push_back(std::move(o));
    }
    boost::json::object root;
    root["spans"] = std::move(spans);
    root["events"] = std::move(events);
    return root;
}

}  // namespace tt::host
