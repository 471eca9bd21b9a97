// The control socket (docs/CONSOLE.md, protocol 1). See control_server.hpp.
#include <tracetunnel/host/control_server.hpp>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/plugin_host.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace tt::host {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------
// JSON forms

std::string upper(std::string_view s)
{
    std::string out(s);
    for (auto& c : out)
        if (c >= 'a' && c <= 'z')
            c = static_cast<char>(c - 'a' + 'A');
    return out;
}

json::value to_json(const model::value& v)
{
    struct visitor {
        json::value operator()(bool b) const { return b; }
        json::value operator()(std::int64_t i) const { return i; }
        json::value operator()(std::uint64_t u) const { return u; }
        json::value operator()(model::i128 i) const
        {
            if (i >= std::numeric_limits<std::int64_t>::min() && i <= std::numeric_limits<std::int64_t>::max())
                return static_cast<std::int64_t>(i);
            if (i > 0 && i <= static_cast<model::i128>(std::numeric_limits<std::uint64_t>::max()))
                return static_cast<std::uint64_t>(i);
            return json::string(model::to_decimal(i));
        }
        json::value operator()(model::u128 u) const
        {
            if (u <= std::numeric_limits<std::uint64_t>::max())
                return static_cast<std::uint64_t>(u);
            return json::string(model::to_decimal(u));
        }
        json::value operator()(double d) const
        {
            if (std::isnan(d))
                return "NaN";
            if (std::isinf(d))
                return d > 0 ? "inf" : "-inf";
            return d;
        }
        json::value operator()(const std::string& s) const { return json::string(s); }
        json::value operator()(const model::debug_text& t) const { return json::string(t.text); }
        json::value operator()(const model::error_chain& e) const
        {
            std::string out;
            for (std::size_t i = 0; i < e.chain.size(); ++i) {
                if (i != 0)
                    out += ": ";
                out += e.chain[i];
            }
            return json::string(out);
        }
    };
    return std::visit(visitor{}, v);
}

std::string hex_id(std::uint64_t id) { return fmt::format("0x{:016x}", id); }

double ms_of(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1000.0; }

std::string_view interest_name(interest i) noexcept
{
    switch (i) {
    case interest::never: return "never";
    case interest::sometimes: return "sometimes";
    case interest::always: return "always";
    }
    return "always";
}

constexpr std::string_view event_kind_names[9] = {"new_callsite", "new_span",      "follows_from",
                                                  "span_entered", "span_exited",   "span_cloned",
                                                  "span_dropped", "values_recorded", "new_event"};

json::object plugin_json(const plugin_status& p)
{
    json::object o;
    o["name"] = p.name;
    o["version"] = p.version;
    o["description"] = p.description;
    o["file"] = p.file.string();
    o["loaded_copy"] = p.loaded_copy.string();
    o["generation"] = p.generation;
    o["state"] = p.phase == plugin_phase::running ? "running" : "failed";
    o["loaded_at"] = format_time(p.loaded_at);
    o["reloads"] = p.reloads;
    o["failed_reloads"] = p.failed_reloads;
    o["emits_after_stop"] = p.emits_after_stop;
    o["quarantined"] = p.quarantined;
    o["stop_timeouts"] = p.stop_timeouts;
    o["isolated"] = p.isolated;
    if (p.isolated) {
        o["child_pid"] = p.child_pid;
        o["crashes"] = p.crashes;
        o["last_crash"] = p.last_crash;
    }
    o["live_spans"] = p.stats.live_spans;
    json::array errors;
    for (const auto& e : p.recent_errors)
        errors.emplace_back(json::string(e));
    o["errors"] = std::move(errors);
    return o;
}

json::object report_json(const reload_report& r)
{
    json::object o;
    o["ok"] = r.ok();
    o["plugin"] = r.plugin;
    o["old_version"] = r.old_version;
    o["new_version"] = r.new_version;
    o["old_generation"] = r.old_generation;
    o["new_generation"] = r.new_generation;
    o["took_ms"] = ms_of(r.took);
    o["spans_carried"] = r.spans_carried;
    json::array added, removed, changed;
    for (const auto& s : r.diff.added)
        added.emplace_back(json::string(describe_callsite(s)));
    for (const auto& s : r.diff.removed)
        removed.emplace_back(json::string(describe_callsite(s)));
    for (const auto& [a, b] : r.diff.changed)
        changed.emplace_back(json::object{{"old", describe_callsite(a)}, {"new", describe_callsite(b)}});
    o["added"] = std::move(added);
    o["removed"] = std::move(removed);
    o["changed"] = std::move(changed);
    if (r.error)
        o["error"] = r.error->message();
    else
        o["error"] = nullptr;
    return o;
}

// A command's failure, thrown inside a handler and answered as an error line.
struct command_error {
    std::string code;
    std::string message;
};

// ---------------------------------------------------------------------------
// Output queues, shared between the server thread and the subscription layer.

struct out_queue {
    std::mutex m;
    std::deque<std::string> lines;  // each with its '\n'
    std::uint64_t dropped = 0;      // events dropped and not yet reported
    std::optional<filter> events_filter;
};

struct hub {
    std::mutex m;
    std::vector<std::shared_ptr<out_queue>> subscribers;
    std::atomic<std::size_t> count{0};
    int wake_fd = -1;  // under m
    std::size_t max_queue = 1024;
    std::atomic<std::uint64_t> dropped_total{0};

    void wake_locked() const noexcept
    {
        if (wake_fd >= 0) {
            const std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
        }
    }
};

// Formats events for subscribers. Added to the dispatcher once; outlives the
// server (the dispatcher keeps it), doing nothing once nobody is subscribed.
class subscription_layer final : public layer {
public:
    explicit subscription_layer(std::shared_ptr<hub> h) : hub_(std::move(h)) {}

    void on_event(const event_view& ev) noexcept override
    {
        if (hub_->count.load(std::memory_order_relaxed) == 0 || ev.site == nullptr)
            return;
        try {
            std::lock_guard lk(hub_->m);
            std::string line;
            bool any = false;
            // The event's spans, innermost first, for a subscriber's own
            // filter (span-field directives like orders[order{customer=bob}]).
            std::vector<span_view> scope;
            for (auto it = ev.spans.rbegin(); it != ev.spans.rend(); ++it)
                scope.push_back(span_view{it->site, it->fields});
            for (const auto& q : hub_->subscribers) {
                if (q->events_filter && !q->events_filter->enabled(*ev.site, scope))
                    continue;
                if (line.empty())
                    line = format(ev);
                std::lock_guard ql(q->m);
                if (q->lines.size() < hub_->max_queue) {
                    q->lines.push_back(line);
                    any = true;
                } else {
                    ++q->dropped;
                    hub_->dropped_total.fetch_add(1, std::memory_order_relaxed);
                }
            }
            if (any)
                hub_->wake_locked();
        } catch (...) {
            errors_.fetch_add(1, std::memory_order_relaxed);
        }
    }
    std::uint64_t errors() const noexcept override { return errors_.load(std::memory_order_relaxed); }

private:
    static std::string format(const event_view& ev)
    {
        json::object e;
        e["time"] = format_time(ev.time.get());
        e["level"] = upper(model::to_string(ev.site->level));
        e["plugin"] = ev.plugin;
        e["target"] = ev.site->target;
        json::object fields;
        std::string message;
        for (const auto& f : ev.values) {
            if (!f.value)
                continue;
            if (f.name == "message") {
                if (f.value.type() == value_ref::kind::string || f.value.type() == value_ref::kind::debug_text)
                    message = f.value.text();
                else
                    message = json::serialize(to_json(f.value.to_value()));
                continue;
            }
            fields[f.name] = to_json(f.value.to_value());
        }
        e["message"] = message;
        e["fields"] = std::move(fields);
        json::array spans;
        for (const auto& s : ev.spans)
            spans.emplace_back(json::string(s.name()));
        e["spans"] = std::move(spans);
        json::object line;
        line["event"] = std::move(e);
        std::string out = json::serialize(line);
        out += '\n';
        return out;
    }

    std::shared_ptr<hub> hub_;
    std::atomic<std::uint64_t> errors_{0};
};

struct client {
    int fd = -1;
    std::string in;
    bool skipping = false;  // inside an over-long line: drop up to the next newline
    std::string out;        // being written
    std::size_t out_off = 0;
    std::shared_ptr<out_queue> q = std::make_shared<out_queue>();
    bool subscribed = false;
    bool closing = false;
};

struct request_fault {
    std::string_view code;  // bad_json or bad_request
    std::string message;
};

// Whether `v` holds only finite numbers. Boost.JSON reads 1e400 as an
// infinity and writes it back as `Infinity`, which is not JSON: an id like
// that cannot be echoed in an answer.
bool all_finite(const json::value& v)
{
    switch (v.kind()) {
    case json::kind::double_: return std::isfinite(v.get_double());
    case json::kind::array:
        return std::all_of(v.get_array().begin(), v.get_array().end(),
                           [](const json::value& e) { return all_finite(e); });
    case json::kind::object:
        return std::all_of(v.get_object().begin(), v.get_object().end(),
                           [](const json::key_value_pair& kv) { return all_finite(kv.value()); });
    default: return true;
    }
}

// The envelope of one request line: {"id":..., "cmd":"...", "args":{...}}.
// On success `cmd` and `args` point into `v` (args to `no_args` when absent
// or null); `id` is set as soon as it is known, so a fault can echo it.
std::optional<request_fault> parse_request(std::string_view line, json::value& v, json::value& id,
                                           const json::string*& cmd, const json::object*& args,
                                           const json::object& no_args)
{
    boost::system::error_code ec;
    v = json::parse(line, ec);
    if (ec)
        return request_fault{"bad_json", ec.message()};
    if (!v.is_object())
        return request_fault{"bad_request", "a request must be a JSON object"};
    auto& req = v.as_object();
    if (auto* i = req.if_contains("id")) {
        if (!all_finite(*i))
            return request_fault{"bad_request", "\"id\" holds a number too large for a double"};
        id = *i;
    }
    // Args are echoed to the plugin and into answers too: the same rule.
    if (!all_finite(v))
        return request_fault{"bad_request", "the request holds a number too large for a double"};
    const auto* c = req.if_contains("cmd");
    if (c == nullptr || !c->is_string())
        return request_fault{"bad_request", "missing \"cmd\" (a string)"};
    cmd = &c->get_string();
    args = &no_args;
    if (auto* a = req.if_contains("args"); a != nullptr && !a->is_null()) {
        if (!a->is_object())
            return request_fault{"bad_request", "\"args\" must be an object"};
        args = &a->as_object();
    }
    return std::nullopt;
}

}  // namespace

control_request parse_control_request(std::string_view line) noexcept
{
    control_request r;
    try {
        json::value v, id = nullptr;
        const json::string* cmd = nullptr;
        const json::object* args = nullptr;
        const json::object no_args;
        auto fault = parse_request(line, v, id, cmd, args, no_args);
        r.id_json = json::serialize(id);
        if (fault) {
            r.error_code = fault->code;
            r.error_message = std::move(fault->message);
            return r;
        }
        r.cmd = std::string(*cmd);
        r.args_json = json::serialize(*args);
    } catch (const std::exception& e) {
        r.error_code = "failed";
        r.error_message = e.what();
    } catch (...) {
        r.error_code = "failed";
        r.error_message = "unknown exception";
    }
    return r;
}

// ---------------------------------------------------------------------------

struct control_server::impl {
    plugin_host* host;
    dispatcher* pipeline;
    control_options opts;
    std::shared_ptr<hub> shared = std::make_shared<hub>();
    bool layer_added = false;

    int listen_fd = -1;
    int wake_fd = -1;
    std::atomic<bool> stopping{false};
    std::atomic<bool> is_running{false};
    std::thread thread;
    std::vector<client> clients;  // server thread only
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    // events_per_second: every plugin's events_total, sampled by the server
    // thread about once a second; a rate is taken over the last ~5 s of them.
    struct rate_sample {
        std::chrono::steady_clock::time_point at;
        std::vector<std::pair<std::string, std::uint64_t>> totals;  // by plugin name
    };
    static constexpr auto sample_every = std::chrono::seconds(1);
    static constexpr auto rate_window = std::chrono::milliseconds(5500);  // ~5 s, plus slack for late samples
    std::deque<rate_sample> samples;  // server thread only, oldest first

    static std::uint64_t events_total_of(const plugin_status& p) noexcept
    {
        std::uint64_t total = 0;
        for (std::size_t i = 0; i < 9; ++i)
            total += p.stats.events[i];
        return total;
    }
    void take_sample(std::chrono::steady_clock::time_point now)
    {
        if (!samples.empty() && now - samples.back().at < sample_every)
            return;
        rate_sample s;
        s.at = now;
        for (const auto& p : host->plugins())
            s.totals.emplace_back(p.name, events_total_of(p));
        samples.push_back(std::move(s));
        while (!samples.empty() && now - samples.front().at > rate_window + sample_every)
            samples.pop_front();
    }
    // Events per second over the last ~5 s: from the oldest sample in the
    // window that knows the plugin. Without one at least 200 ms old (just
    // started, or the plugin just loaded), the average since the server started.
    double recent_rate(const std::string& name, std::uint64_t total, std::chrono::steady_clock::time_point now) const
    {
        for (const auto& s : samples) {
            const auto age = now - s.at;
            if (age > rate_window)
                continue;
            if (age < std::chrono::milliseconds(200))
                break;
            const auto it = std::find_if(s.totals.begin(), s.totals.end(),
                                         [&](const auto& t) { return t.first == name; });
            if (it == s.totals.end() || it->second > total)
                continue;  // not there yet, or counted anew since (unloaded and loaded again)
            const double seconds = std::chrono::duration<double>(age).count();
            return static_cast<double>(total - it->second) / seconds;
        }
        const double seconds = std::max(0.001, std::chrono::duration<double>(now - started).count());
        return static_cast<double>(total) / seconds;
    }

    // ---- output ----
    void push(client& c, std::string line)
    {
        line += '\n';
        std::lock_guard lk(c.q->m);
        c.q->lines.push_back(std::move(line));  // answers are never dropped
    }
    void reply(client& c, const json::value& id, json::value result)
    {
        json::object o;
        o["id"] = id;
        o["ok"] = true;
        o["result"] = std::move(result);
        push(c, json::serialize(o));
    }
    void reply_error(client& c, const json::value& id, std::string_view code, std::string_view message)
    {
        json::object o;
        o["id"] = id;
        o["ok"] = false;
        o["error"] = json::object{{"code", code}, {"message", message}};
        push(c, json::serialize(o));
    }

    // Moves queued lines into c.out and writes what the socket takes.
    void flush(client& c)
    {
        for (;;) {
            if (c.out_off >= c.out.size()) {
                c.out.clear();
                c.out_off = 0;
                std::lock_guard lk(c.q->m);
                while (!c.q->lines.empty() && c.out.size() < (std::size_t{256} << 10)) {
                    c.out += c.q->lines.front();
                    c.q->lines.pop_front();
                }
                if (c.q->dropped != 0 && c.q->lines.size() < opts.max_queue) {
                    c.out += fmt::format("{{\"dropped\":{}}}\n", c.q->dropped);
                    c.q->dropped = 0;
                }
                if (c.out.empty())
                    return;
            }
            const ssize_t n =
                ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                c.out_off += static_cast<std::size_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            c.closing = true;
            return;
        }
    }
    bool backlogged(client& c)
    {
        std::lock_guard lk(c.q->m);
        return c.q->lines.size() >= opts.max_queue;
    }
    bool has_output(client& c)
    {
        if (c.out_off < c.out.size())
            return true;
        std::lock_guard lk(c.q->m);
        return !c.q->lines.empty() || c.q->dropped != 0;
    }

    // ---- input ----
    void read_from(client& c)
    {
        char buf[65536];
        for (int rounds = 0; rounds < 64; ++rounds) {
            const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0) {
                c.closing = true;
                return;
            }
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    c.closing = true;
                return;
            }
            std::string_view data(buf, static_cast<std::size_t>(n));
            while (!data.empty()) {
                const auto nl = data.find('\n');
                if (c.skipping) {
                    if (nl == std::string_view::npos)
                        break;
                    c.skipping = false;
                    data.remove_prefix(nl + 1);
                    continue;
                }
                if (nl == std::string_view::npos) {
                    c.in.append(data);
                    if (c.in.size() > opts.max_line) {
                        too_large(c);
                        c.skipping = true;
                    }
                    break;
                }
                c.in.append(data.substr(0, nl));
                data.remove_prefix(nl + 1);
                if (c.in.size() > opts.max_line)
                    too_large(c);
                else if (!c.in.empty() && c.in.find_first_not_of(" \t\r") != std::string::npos)
                    handle_line(c, c.in);
                c.in.clear();
            }
        }
    }
    void too_large(client& c)
    {
        c.in.clear();
        c.in.shrink_to_fit();
        reply_error(c, nullptr, "too_large", fmt::format("request line longer than {} bytes", opts.max_line));
    }

    void handle_line(client& c, std::string_view line) noexcept
    {
        json::value id = nullptr;
        try {
            json::value v;
            const json::string* cmd = nullptr;
            const json::object* args = nullptr;
            const json::object no_args;
            if (auto fault = parse_request(line, v, id, cmd, args, no_args)) {
                reply_error(c, id, fault->code, fault->message);
                return;
            }
            reply(c, id, run(c, std::string(*cmd), *args));
        } catch (const command_error& e) {
            try {
                reply_error(c, id, e.code, e.message);
            } catch (...) {
            }
        } catch (const std::exception& e) {
            try {
                reply_error(c, id, "failed", e.what());
            } catch (...) {
            }
        } catch (...) {
            try {
                reply_error(c, id, "failed", "unknown exception");
            } catch (...) {
            }
        }
    }

    // ---- commands ----
    static std::optional<std::string> opt_string(const json::object& args, std::string_view key)
    {
        const auto* v = args.if_contains(key);
        if (v == nullptr || v->is_null())
            return std::nullopt;
        if (!v->is_string())
            throw command_error{"bad_request", fmt::format("argument \"{}\" must be a string", key)};
        return std::string(v->as_string());
    }
    static std::string need_string(const json::object& args, std::string_view key)
    {
        auto s = opt_string(args, key);
        if (!s)
            throw command_error{"bad_request", fmt::format("missing argument \"{}\" (a string)", key)};
        return *s;
    }
    void need_plugin(const std::string& name) const
    {
        if (!host->plugin(name))
            throw command_error{"unknown_plugin", fmt::format("no plugin named '{}'", name)};
    }
    // The plugin argument, or every lineage when absent.
    std::vector<std::string> plugins_arg(const json::object& args) const
    {
        if (auto p = opt_string(args, "plugin")) {
            need_plugin(*p);
            return {*p};
        }
        return host->lineage_names();
    }

    json::value run(client& c, const std::string& cmd, const json::object& args)
    {
        if (cmd == "plugins") {
            json::array out;
            for (const auto& p : host->plugins())
                out.emplace_back(plugin_json(p));
            return out;
        }
        if (cmd == "callsites") {
            json::array out;
            for (const auto& name : plugins_arg(args))
                for (const auto& info : host->callsite_infos(name)) {
                    const auto& s = info.site;
                    json::array fields;
                    for (const auto& f : s.fields)
                        fields.emplace_back(json::string(f));
                    out.emplace_back(json::object{
                        {"plugin", name},
                        {"id", hex_id(s.id)},
                        {"kind", s.kind == model::callsite_kind::span ? "span" : "event"},
                        {"level", model::to_string(s.level)},
                        {"name", s.name},
                        {"target", s.target},
                        {"file", s.file},
                        {"line", s.line},
                        {"fields", std::move(fields)},
                        {"interest", interest_name(info.cached)},
                        {"hits", info.hits},
                    });
                }
            return out;
        }
        if (cmd == "spans") {
            json::array out;
            const auto now = clock::now();
            for (const auto& name : plugins_arg(args)) {
                auto spans = host->live_spans(name);
                if (!spans)
                    continue;
                const auto sites = host->callsite_infos(name, false);
                std::vector<std::uint64_t> ids;
                ids.reserve(spans->spans.size());
                for (const auto& s : spans->spans)
                    ids.push_back(s.id);
                const auto entered = host->entered_counts(name, ids);
                for (std::size_t i = 0; i < spans->spans.size(); ++i) {
                    const auto& s = spans->spans[i];
                    auto it = std::lower_bound(sites.begin(), sites.end(), s.callsite_id,
                                               [](const callsite_info& i, std::uint64_t v) { return i.site.id < v; });
                    const model::callsite* site = it != sites.end() && it->site.id == s.callsite_id ? &it->site : nullptr;
                    json::object fields;
                    for (const auto& [k, v] : s.values)
                        fields[k] = to_json(v);
                    out.emplace_back(json::object{
                        {"plugin", name},
                        {"id", s.id},
                        {"parent", s.parent_id},
                        {"name", site != nullptr ? site->name : std::string()},
                        {"level", site != nullptr ? std::string(model::to_string(site->level)) : std::string()},
                        {"target", site != nullptr ? site->target : std::string()},
                        {"fields", std::move(fields)},
                        {"start", format_time(s.start)},
                        {"age_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - s.start).count()},
                        {"ref_count", s.ref_count},
                        {"entered", i < entered.size() ? entered[i] : std::uint32_t{0}},
                    });
                }
            }
            return out;
        }
        if (cmd == "stats") {
            const auto stats_now = std::chrono::steady_clock::now();
            const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(stats_now - started);
            json::array plugins;
            for (const auto& p : host->plugins()) {
                json::object events, errors;
                std::uint64_t events_total = 0, errors_total = 0;
                for (std::size_t i = 0; i < 9; ++i) {
                    events[event_kind_names[i]] = p.stats.events[i];
                    events_total += p.stats.events[i];
                }
                for (std::size_t i = 0; i < receive_errc_count; ++i) {
                    errors[to_string(static_cast<receive_errc>(i))] = p.stats.errors[i];
                    errors_total += p.stats.errors[i];
                }
                plugins.emplace_back(json::object{
                    {"name", p.name},
                    {"events", std::move(events)},
                    {"events_total", events_total},
                    {"events_per_second", recent_rate(p.name, events_total, stats_now)},
                    {"errors", std::move(errors)},
                    {"errors_total", errors_total},
                    {"filtered", p.stats.filtered},
                    {"live_spans", p.stats.live_spans},
                    {"callsites", p.stats.callsites},
                    {"quota_violations",
                     p.stats.errors[static_cast<std::size_t>(receive_errc::quota_exceeded)]},
                });
            }
            const auto d = pipeline->statistics();
            json::object answer{
                {"uptime_ms", uptime.count()},
                {"plugins", std::move(plugins)},
                {"pipeline", json::object{{"spans_created", d.spans_created},
                                          {"spans_live", d.spans_live},
                                          {"events", d.events},
                                          {"events_filtered", d.events_filtered},
                                          {"anomalies", d.anomalies},
                                          {"layer_errors", d.layer_errors}}},
                {"console", json::object{{"clients", clients.size()},
                                         {"dropped", shared->dropped_total.load(std::memory_order_relaxed)}}},
            };
            for (const auto& [section, counters] : opts.stats_sections) {
                json::object o;
                if (counters)
                    for (const auto& [key, n] : counters())
                        o[key] = n;
                answer[section] = std::move(o);
            }
            return answer;
        }
        if (cmd == "errors") {
            json::array receive, load;
            std::optional<std::string> only = opt_string(args, "plugin");
            if (only)
                need_plugin(*only);
            for (const auto& p : host->plugins()) {
                if (only && p.name != *only)
                    continue;
                for (const auto& e : p.recent_errors)
                    receive.emplace_back(json::object{{"plugin", p.name}, {"message", e}});
            }
            for (const auto& e : host->load_errors()) {
                if (only && e.plugin != *only)
                    continue;
                load.emplace_back(
                    json::object{{"plugin", e.plugin}, {"file", e.file.string()}, {"message", e.message()}});
            }
            return json::object{{"receive", std::move(receive)}, {"load", std::move(load)}};
        }
        if (cmd == "filter")
            return json::object{{"filter", pipeline->current_filter().to_string()}};
        if (cmd == "filter_set") {
            const auto text = need_string(args, "directives");
            auto parsed = parse_filter(text);
            if (auto* err = std::get_if<filter_error>(&parsed))
                throw command_error{"failed", fmt::format("bad filter \"{}\" at byte {}: {}", text, err->position,
                                                          err->message)};
            host->set_filter(std::get<filter>(std::move(parsed)));
            return json::object{{"filter", pipeline->current_filter().to_string()}};
        }
        if (cmd == "reload") {
            const auto name = need_string(args, "plugin");
            need_plugin(name);
            return report_json(host->reload(name));
        }
        if (cmd == "unload") {
            const auto name = need_string(args, "plugin");
            if (!host->unload(name))
                throw command_error{"unknown_plugin", fmt::format("no plugin named '{}'", name)};
            return json::object{};
        }
        if (cmd == "load") {
            const auto file = need_string(args, "file");
            auto r = host->load(file);
            if (auto* err = std::get_if<load_error>(&r))
                throw command_error{"failed", err->message()};
            return plugin_json(std::get<plugin_status>(r));
        }
        if (cmd == "persist") {
            json::array problems;
            for (const auto& p : host->commit())
                problems.emplace_back(json::string(p));
            return json::object{{"problems", std::move(problems)}};
        }
        if (cmd == "diff") {
            const auto name = need_string(args, "plugin");
            need_plugin(name);
            auto r = host->last_reload(name);
            if (!r)
                throw command_error{"failed", fmt::format("plugin '{}' was never reloaded", name)};
            return report_json(*r);
        }
        if (cmd == "subscribe") {
            std::optional<filter> f;
            if (auto text = opt_string(args, "filter")) {
                auto parsed = parse_filter(*text);
                if (auto* err = std::get_if<filter_error>(&parsed))
                    throw command_error{"failed", fmt::format("bad filter \"{}\" at byte {}: {}", *text,
                                                              err->position, err->message)};
                f = std::get<filter>(std::move(parsed));
            }
            std::lock_guard lk(shared->m);
            {
                std::lock_guard ql(c.q->m);
                c.q->events_filter = std::move(f);
            }
            if (!c.subscribed) {
                shared->subscribers.push_back(c.q);
                shared->count.store(shared->subscribers.size(), std::memory_order_relaxed);
                c.subscribed = true;
            }
            return json::object{};
        }
        if (cmd == "unsubscribe") {
            unsubscribe(c);
            return json::object{};
        }
        throw command_error{"unknown_command", fmt::format("unknown command '{}'", cmd)};
    }

    void unsubscribe(client& c) noexcept
    {
        if (!c.subscribed)
            return;
        std::lock_guard lk(shared->m);
        auto& s = shared->subscribers;
        s.erase(std::remove(s.begin(), s.end(), c.q), s.end());
        shared->count.store(s.size(), std::memory_order_relaxed);
        c.subscribed = false;
    }

    // ---- the loop ----
    void accept_all()
    {
        for (;;) {
            const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR)
                    continue;
                return;  // EAGAIN, or out of descriptors: try again later
            }
            client c;
            c.fd = fd;
            json::object hello{{"hello", "tracetunnel"},
                               {"protocol", 1},
                               {"host_pid", static_cast<std::int64_t>(::getpid())},
                               {"version", opts.version}};
            push(c, json::serialize(hello));
            clients.push_back(std::move(c));
            flush(clients.back());
        }
    }

    void close_client(client& c) noexcept
    {
        unsubscribe(c);
        if (c.fd >= 0)
            ::close(c.fd);
        c.fd = -1;
    }

    void loop() noexcept
    {
        std::vector<pollfd> fds;
        while (!stopping.load()) {
            try {
                take_sample(std::chrono::steady_clock::now());
                fds.clear();
                fds.push_back({listen_fd, POLLIN, 0});
                fds.push_back({wake_fd, POLLIN, 0});
                for (auto& c : clients) {
                    // A client that does not read its answers is not read
                    // from either: its queue stays bounded (events are
                    // dropped at max_queue, answers are never dropped).
                    short ev = backlogged(c) ? 0 : POLLIN;
                    if (has_output(c))
                        ev |= POLLOUT;
                    fds.push_back({c.fd, ev, 0});
                }
                const int n = ::poll(fds.data(), fds.size(), 1000);
                if (n < 0 && errno != EINTR)
                    std::this_thread::sleep_for(std::chrono::milliseconds(10));
                if (stopping.load())
                    break;
                if (fds[1].revents & POLLIN) {
                    std::uint64_t v = 0;
                    [[maybe_unused]] auto r = ::read(wake_fd, &v, sizeof v);
                }
                const std::size_t known = clients.size();
                for (std::size_t i = 0; i < known; ++i) {
                    auto& c = clients[i];
                    const short re = fds[i + 2].revents;
                    if ((re & POLLIN) || ((re & (POLLHUP | POLLERR)) && !backlogged(c)))
                        read_from(c);
                    else if (re & (POLLHUP | POLLERR))
                        c.closing = true;
                    if (!c.closing)
                        flush(c);
                }
                if (fds[0].revents & POLLIN)
                    accept_all();
                for (auto it = clients.begin(); it != clients.end();) {
                    if (it->closing) {
                        close_client(*it);
                        it = clients.erase(it);
                    } else {
                        ++it;
                    }
                }
            } catch (...) {
                // An allocation failure: keep serving.
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        for (auto& c : clients) {
            flush(c);
            close_client(c);
        }
        clients.clear();
    }
};

control_server::control_server(plugin_host& host, dispatcher& pipeline, control_options options)
    : impl_(std::make_unique<impl>())
{
    impl_->host = &host;
    impl_->pipeline = &pipeline;
    impl_->opts = std::move(options);
    impl_->shared->max_queue = impl_->opts.max_queue;
}

control_server::~control_server() { stop(); }

const fs::path& control_server::path() const noexcept { return impl_->opts.path; }
bool control_server::running() const noexcept { return impl_->is_running.load(); }

std::string control_server::start()
{
    auto& m = *impl_;
    if (m.is_running.load())
        return {};
    const std::string path = m.opts.path.string();
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path)
        return fmt::format("control socket path \"{}\" is empty or longer than {} bytes", path,
                           sizeof addr.sun_path - 1);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

    // A socket file already there: another host answering, or a stale one.
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return fmt::format("control socket {}: the file exists and is not a socket", path);
        const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return fmt::format("control socket {}: socket: {}", path, std::strerror(errno));
        const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
        const int err = errno;
        ::close(probe);
        if (rc == 0)
            return fmt::format("control socket {}: another host is answering there (use --control-socket to pick "
                               "another path)",
                               path);
        if (err != ECONNREFUSED && err != ENOENT)
            return fmt::format("control socket {}: cannot tell whether it is in use: {}", path, std::strerror(err));
        ::unlink(path.c_str());  // stale: nobody listens
    }

    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fmt::format("control socket {}: socket: {}", path, std::strerror(errno));
    const mode_t old_mask = ::umask(077);
    const int brc = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    const int berr = errno;
    ::umask(old_mask);
    if (brc != 0) {
        ::close(fd);
        return fmt::format("control socket {}: bind: {}", path, std::strerror(berr));
    }
    if (::chmod(path.c_str(), 0600) != 0 || ::listen(fd, 16) != 0) {
        const int e = errno;
        ::close(fd);
        ::unlink(path.c_str());
        return fmt::format("control socket {}: {}", path, std::strerror(e));
    }
    const int wfd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wfd < 0) {
        const int e = errno;
        ::close(fd);
        ::unlink(path.c_str());
        return fmt::format("control socket {}: eventfd: {}", path, std::strerror(e));
    }
    m.listen_fd = fd;
    m.wake_fd = wfd;
    {
        std::lock_guard lk(m.shared->m);
        m.shared->wake_fd = wfd;
    }
    if (!m.layer_added) {
        m.pipeline->add_layer(std::make_shared<subscription_layer>(m.shared));
        m.layer_added = true;
    }
    m.stopping.store(false);
    try {
        m.thread = std::thread([&m] { m.loop(); });
    } catch (const std::exception& e) {
        {
            std::lock_guard lk(m.shared->m);
            m.shared->wake_fd = -1;
        }
        ::close(wfd);
        ::close(fd);
        ::unlink(path.c_str());
        m.listen_fd = m.wake_fd = -1;
        return fmt::format("control socket {}: cannot start its thread: {}", path, e.what());
    }
    m.is_running.store(true);
    return {};
}

void control_server::stop() noexcept
{
    auto& m = *impl_;
    if (!m.is_running.exchange(false))
        return;
    m.stopping.store(true);
    {
        std::lock_guard lk(m.shared->m);
        m.shared->wake_locked();
    }
    if (m.thread.joinable())
        m.thread.join();
    {
        std::lock_guard lk(m.shared->m);
        m.shared->wake_fd = -1;
        m.shared->subscribers.clear();
        m.shared->count.store(0);
    }
    ::close(m.wake_fd);
    ::close(m.listen_fd);
    m.wake_fd = m.listen_fd = -1;
    ::unlink(m.opts.path.c_str());
}

}  // namespace tt::host
