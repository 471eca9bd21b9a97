#include <tracetunnel/host/otlp_exporter.hpp>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <limits>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

namespace tt::host {

namespace json = boost::json;

namespace {

constexpr std::size_t max_events_per_span = 128;
constexpr std::size_t max_closed_remembered = 4096;  // link targets that already closed

std::uint64_t nanos(clock::time_point t) noexcept
{
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    return ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
}

std::uint64_t splitmix64(std::uint64_t x) noexcept
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// FNV-1a over the identity of a persisted span, seeded per use, then mixed:
// the same (plugin, receiver span id, start) gives the same ids in any process.
std::uint64_t identity_hash(std::uint64_t seed, std::string_view plugin, std::uint64_t plugin_span_id,
                            std::uint64_t start_ns) noexcept
{
    std::uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    auto mix = [&](const void* p, std::size_t n) {
        const auto* b = static_cast<const unsigned char*>(p);
        for (std::size_t i = 0; i < n; ++i) {
            h ^= b[i];
            h *= 0x100000001b3ULL;
        }
    };
    const std::uint64_t len = plugin.size();
    mix(&len, sizeof len);
    mix(plugin.data(), plugin.size());
    mix(&plugin_span_id, sizeof plugin_span_id);
    mix(&start_ns, sizeof start_ns);
    return splitmix64(h);
}

void put_u64(std::uint8_t* out, std::uint64_t v) noexcept
{
    for (int i = 7; i >= 0; --i) {
        out[i] = static_cast<std::uint8_t>(v & 0xff);
        v >>= 8;
    }
}

std::uint64_t random_u64() noexcept
{
    thread_local std::mt19937_64 rng{std::random_device{}() ^ static_cast<std::uint64_t>(
                                                                 clock::now().time_since_epoch().count())};
    std::uint64_t v = 0;
    while (v == 0)
        v = rng();
    return v;
}

// Persisted spans (a receiver span id) get derived ids; the host's own spans,
// which never outlive the process, random ones.
span_id make_span_id(const span_ref& s) noexcept
{
    span_id id{};
    std::uint64_t v = s.plugin_span_id != 0 ? identity_hash(1, s.plugin, s.plugin_span_id, nanos(s.start)) : random_u64();
    put_u64(id.data(), v == 0 ? 1 : v);
    return id;
}

trace_id make_trace_id(const span_ref& root) noexcept
{
    trace_id id{};
    if (root.plugin_span_id != 0) {
        put_u64(id.data(), identity_hash(2, root.plugin, root.plugin_span_id, nanos(root.start)));
        put_u64(id.data() + 8, identity_hash(3, root.plugin, root.plugin_span_id, nanos(root.start)) | 1);
    } else {
        put_u64(id.data(), random_u64());
        put_u64(id.data() + 8, random_u64());
    }
    return id;
}

std::string value_text(const model::value& v)
{
    return std::visit(
        [](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::string>)
                return x;
            else if constexpr (std::is_same_v<T, model::debug_text>)
                return x.text;
            else if constexpr (std::is_same_v<T, model::error_chain>) {
                std::string joined;
                for (std::size_t i = 0; i < x.chain.size(); ++i)
                    joined += (i ? ": " : "") + x.chain[i];
                return joined;
            } else if constexpr (std::is_same_v<T, bool>)
                return x ? "true" : "false";
            else if constexpr (std::is_same_v<T, model::i128> || std::is_same_v<T, model::u128>)
                return model::to_decimal(x);
            else
                return fmt::format("{}", x);
        },
        v);
}

std::string lower(std::string s)
{
    for (auto& c : s)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return s;
}

std::string_view level_name(model::level l) noexcept
{
    switch (l) {
    case model::level::error: return "ERROR";
    case model::level::warn: return "WARN";
    case model::level::info: return "INFO";
    case model::level::debug: return "DEBUG";
    case model::level::trace: return "TRACE";
    }
    return "INFO";
}

json::object any_value(const model::value& v)
{
    json::object o;
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            constexpr auto i64max = std::numeric_limits<std::int64_t>::max();
            constexpr auto i64min = std::numeric_limits<std::int64_t>::min();
            if constexpr (std::is_same_v<T, bool>) {
                o["boolValue"] = x;
            } else if constexpr (std::is_same_v<T, std::int64_t>) {
                o["intValue"] = std::to_string(x);
            } else if constexpr (std::is_same_v<T, std::uint64_t>) {
                // OTLP integers are signed 64-bit; larger ones keep their digits as text.
                if (x <= static_cast<std::uint64_t>(i64max))
                    o["intValue"] = std::to_string(x);
                else
                    o["stringValue"] = std::to_string(x);
            } else if constexpr (std::is_same_v<T, model::i128>) {
                if (x >= i64min && x <= i64max)
                    o["intValue"] = std::to_string(static_cast<std::int64_t>(x));
                else
                    o["stringValue"] = model::to_decimal(x);
            } else if constexpr (std::is_same_v<T, model::u128>) {
                if (x <= static_cast<model::u128>(i64max))
                    o["intValue"] = std::to_string(static_cast<std::int64_t>(x));
                else
                    o["stringValue"] = model::to_decimal(x);
            } else if constexpr (std::is_same_v<T, double>) {
                // proto3 JSON spells the non-finite doubles as strings.
                if (std::isnan(x))
                    o["doubleValue"] = "NaN";
                else if (std::isinf(x))
                    o["doubleValue"] = x < 0 ? "-Infinity" : "Infinity";
                else
                    o["doubleValue"] = x;
            } else {
                o["stringValue"] = value_text(v);
            }
        },
        v);
    return o;
}

json::array attributes_json(const std::vector<otlp_attribute>& attrs)
{
    json::array a;
    a.reserve(attrs.size());
    for (const auto& at : attrs)
        a.push_back(json::object{{"key", at.key}, {"value", any_value(at.value)}});
    return a;
}

json::object span_json(const otlp_span& s)
{
    json::object o;
    o["traceId"] = to_hex(s.trace);
    o["spanId"] = to_hex(s.span);
    if (s.parent)
        o["parentSpanId"] = to_hex(*s.parent);
    o["name"] = s.name;
    o["kind"] = s.kind;
    o["startTimeUnixNano"] = std::to_string(s.start_ns);
    o["endTimeUnixNano"] = std::to_string(s.end_ns);
    o["attributes"] = attributes_json(s.attributes);
    json::array events;
    for (const auto& e : s.events)
        events.push_back(json::object{{"timeUnixNano", std::to_string(e.time_ns)},
                                      {"name", e.name},
                                      {"attributes", attributes_json(e.attributes)}});
    o["events"] = std::move(events);
    if (s.dropped_events)
        o["droppedEventsCount"] = s.dropped_events;
    json::array links;
    for (const auto& l : s.links)
        links.push_back(json::object{{"traceId", to_hex(l.trace)}, {"spanId", to_hex(l.span)}});
    o["links"] = std::move(links);
    json::object status;
    status["code"] = s.status;
    if (!s.status_message.empty())
        status["message"] = s.status_message;
    o["status"] = std::move(status);
    return o;
}

// Special fields as tracing-opentelemetry reads them; they are not attributes.
bool special_field(std::string_view name) noexcept
{
    return name == "otel.name" || name == "otel.kind" || name == "otel.status_code" ||
           name == "otel.status_message" || name == "otel.status_description";
}

int kind_of(std::string_view text) noexcept
{
    const std::string k = lower(std::string(text));
    if (k == "server")
        return 2;
    if (k == "client")
        return 3;
    if (k == "producer")
        return 4;
    if (k == "consumer")
        return 5;
    return 1;  // internal, and what tracing-opentelemetry assumes for anything else
}

void add_code_attributes(std::vector<otlp_attribute>& out, const model::callsite* site)
{
    if (!site)
        return;
    if (!site->file.empty())
        out.push_back({"code.filepath", site->file});
    if (site->line)
        out.push_back({"code.lineno", static_cast<std::int64_t>(site->line)});
    out.push_back({"code.namespace", site->module_path.empty() ? site->target : site->module_path});
}

std::optional<std::string> env(const char* name)
{
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0')
        return std::nullopt;
    return std::string(v);
}

int hex_digit(char c) noexcept
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

std::optional<std::string> percent_decode(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size())
            return std::nullopt;
        const int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
        if (hi < 0 || lo < 0)
            return std::nullopt;
        out += static_cast<char>(hi << 4 | lo);
        i += 2;
    }
    return out;
}

std::string_view trim(std::string_view s) noexcept
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// A positive integer variable; `scale` turns it into the unit wanted.
std::optional<std::string> read_count(const char* name, std::uint64_t& out)
{
    auto v = env(name);
    if (!v)
        return std::nullopt;
    std::uint64_t n = 0;
    const auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc() || p != v->data() + v->size() || n == 0)
        return fmt::format("{}=\"{}\": expected a positive integer", name, *v);
    out = n;
    return std::nullopt;
}

}  // namespace

std::variant<key_values, std::string> parse_key_values(std::string_view text)
{
    key_values out;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const std::size_t comma = text.find(',', pos);
        const std::string_view item = text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
        pos = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
        if (trim(item).empty())
            continue;  // "a=1,,b=2" and a trailing comma are harmless
        const std::size_t eq = item.find('=');
        if (eq == std::string_view::npos)
            return fmt::format("\"{}\": expected key=value", item);
        auto key = percent_decode(trim(item.substr(0, eq)));
        auto value = percent_decode(trim(item.substr(eq + 1)));
        if (!key || key->empty())
            return fmt::format("\"{}\": empty or badly %-encoded key", item);
        if (!value)
            return fmt::format("\"{}\": badly %-encoded value (a % must be followed by two hex digits)", item);
        out.emplace_back(std::move(*key), std::move(*value));
    }
    return out;
}

std::variant<otlp_env, std::string> otlp_options_from_env()
{
    otlp_env r;
    otlp_options& o = r.options;
    if (auto traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        o.endpoint = *traces;
        r.configured = true;
    } else if (auto base = env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        std::string b = *base;
        while (!b.empty() && b.back() == '/')
            b.pop_back();
        o.endpoint = b + "/v1/traces";
        r.configured = true;
    }
    if (r.configured && o.endpoint.rfind("http://", 0) != 0 && o.endpoint.rfind("https://", 0) != 0)
        return fmt::format("OTLP endpoint \"{}\" (from the environment): expected an http:// or https:// URL",
                           o.endpoint);
    for (const char* name : {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"})
        if (auto p = env(name)) {
            if (*p != "http/json")
                return fmt::format("{}=\"{}\": only http/json is supported", name, *p);
            break;
        }
    if (auto attrs = env("OTEL_RESOURCE_ATTRIBUTES")) {
        auto parsed = parse_key_values(*attrs);
        if (auto* err = std::get_if<std::string>(&parsed))
            return fmt::format("OTEL_RESOURCE_ATTRIBUTES: {}", *err);
        for (auto& [k, v] : std::get<key_values>(parsed)) {
            if (k == "service.name")
                o.service_name = v;
            else
                o.resource_attributes.emplace_back(k, v);
        }
    }
    if (auto name = env("OTEL_SERVICE_NAME"))  // wins over service.name in OTEL_RESOURCE_ATTRIBUTES
        o.service_name = *name;
    for (const char* name : {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"})
        if (auto h = env(name)) {
            auto parsed = parse_key_values(*h);
            if (auto* err = std::get_if<std::string>(&parsed))
                return fmt::format("{}: {}", name, *err);
            for (auto& kv : std::get<key_values>(parsed))
                o.headers.push_back(std::move(kv));
        }
    std::uint64_t n = 0;
    for (const char* name : {"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"}) {
        if (auto err = read_count(name, n = 0))
            return *err;
        if (n)
            o.timeout = std::chrono::milliseconds(n);
    }
    if (auto err = read_count("OTEL_BSP_MAX_QUEUE_SIZE", n = 0))
        return *err;
    if (n)
        o.max_queue = n;
    if (auto err = read_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", n = 0))
        return *err;
    if (n)
        o.max_batch = n;
    if (auto err = read_count("OTEL_BSP_SCHEDULE_DELAY", n = 0))
        return *err;
    if (n)
        o.batch_delay = std::chrono::milliseconds(n);
    return r;
}

std::string encode_otlp_json(const std::vector<otlp_span>& spans, const otlp_options& options,
                             const std::function<std::string(std::string_view)>& scope_version)
{
    std::vector<otlp_attribute> resource;
    resource.push_back({"service.name", options.service_name});
    resource.push_back({"telemetry.sdk.name", std::string("tracetunnel")});
    resource.push_back({"telemetry.sdk.language", std::string("cpp")});
    resource.push_back({"telemetry.sdk.version", options.host_version});
    for (const auto& [k, v] : options.resource_attributes)
        resource.push_back({k, v});

    // One scopeSpans per plugin, in order of first appearance.
    std::vector<std::string> order;
    std::unordered_map<std::string, json::array> by_scope;
    for (const auto& s : spans) {
        auto [it, fresh] = by_scope.try_emplace(s.scope);
        if (fresh)
            order.push_back(s.scope);
        it->second.push_back(span_json(s));
    }
    json::array scope_spans;
    for (const auto& name : order) {
        json::object scope{{"name", name}};
        const std::string version = scope_version ? scope_version(name) : std::string();
        if (!version.empty())
            scope["version"] = version;
        scope_spans.push_back(json::object{{"scope", std::move(scope)}, {"spans", std::move(by_scope[name])}});
    }
    json::object request{
        {"resourceSpans",
         json::array{json::object{{"resource", json::object{{"attributes", attributes_json(resource)}}},
                                  {"scopeSpans", std::move(scope_spans)}}}}};
    return json::serialize(request);
}

// ---------------------------------------------------------------------------

struct otlp_exporter::impl {
    struct live_span {
        trace_id trace{};
        span_id span{};
        std::optional<span_id> parent;
        std::vector<otlp_span_event> events;
        std::uint32_t dropped_events = 0;
        std::vector<otlp_link> links;
        bool error = false;
        std::string error_message;
    };

    otlp_options opts;

    mutable std::mutex live_mutex;
    std::unordered_map<span_handle, live_span> live;
    std::unordered_map<span_handle, otlp_link> closed;  // recent closed spans, for late links
    std::deque<span_handle> closed_order;
    thread_span_stack stack;

    mutable std::mutex queue_mutex;
    std::condition_variable cv;       // wakes the export thread
    std::condition_variable idle_cv;  // wakes flush() waiters
    std::deque<otlp_span> queue;
    clock::time_point oldest;  // when the oldest queued span was queued
    std::size_t in_flight = 0;
    std::uint64_t flush_requests = 0;
    bool stopping = false;  // no new spans; flush and stop
    std::chrono::steady_clock::time_point stop_deadline;
    std::thread worker;

    // Where the spans taken in are (queued, exported, dropped_*) changes only
    // under queue_mutex, together with the queue and in_flight, and
    // statistics() reads them under it: `stats` always adds up (spans_queued
    // = exported + dropped_rejected + dropped_shutdown + queue_length).
    std::atomic<std::uint64_t> spans_queued{0}, spans_exported{0}, dropped_queue_full{0}, dropped_rejected{0},
        dropped_shutdown{0}, requests{0}, failures{0}, retries{0}, internal_errors{0};

    // Export thread: the batch in flight is done with, counted in `where`.
    void settle_batch(std::atomic<std::uint64_t>& where, std::size_t n)
    {
        std::lock_guard lock(queue_mutex);
        where.fetch_add(n, std::memory_order_relaxed);
        in_flight = 0;
    }
    mutable std::mutex error_mutex;
    std::string last_error;
    bool failing = false;  // export thread only

    void remember_closed(span_handle h, const live_span& s)
    {
        closed[h] = otlp_link{s.trace, s.span};
        closed_order.push_back(h);
        if (closed_order.size() > max_closed_remembered) {
            closed.erase(closed_order.front());
            closed_order.pop_front();
        }
    }

    std::optional<otlp_link> ids_of(span_handle h) const
    {
        if (auto it = live.find(h); it != live.end())
            return otlp_link{it->second.trace, it->second.span};
        if (auto it = closed.find(h); it != closed.end())
            return it->second;
        return std::nullopt;
    }

    void enqueue(otlp_span&& s)
    {
        std::lock_guard lock(queue_mutex);
        // The bound counts the batch being sent too: what is held stays within max_queue.
        if (stopping || queue.size() + in_flight >= opts.max_queue) {
            (stopping ? dropped_shutdown : dropped_queue_full).fetch_add(1, std::memory_order_relaxed);
            return;
        }
        if (queue.empty())
            oldest = clock::now();
        queue.push_back(std::move(s));
        spans_queued.fetch_add(1, std::memory_order_relaxed);
        // The first span starts the batch_delay clock; a full batch goes at once.
        if (queue.size() == 1 || queue.size() >= opts.max_batch)
            cv.notify_one();
    }

    void set_error(std::string e)
    {
        std::lock_guard lock(error_mutex);
        last_error = std::move(e);
    }

    enum class outcome { ok, retry, rejected };

    outcome post(CURL* curl, const std::string& body, std::chrono::milliseconds timeout)
    {
        std::string response;
        curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
        headers = curl_slist_append(headers, "Expect:");
        for (const auto& [k, v] : opts.headers)
            headers = curl_slist_append(headers, (k + ": " + v).c_str());
        curl_easy_reset(curl);
        curl_easy_setopt(curl, CURLOPT_URL, opts.endpoint.c_str());
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<std::int64_t>(timeout.count(), 1)));
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "tracetunnel-otlp/1");
        curl_easy_setopt(
            curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* user) -> size_t {
                auto* r = static_cast<std::string*>(user);
                if (r->size() < 512)
                    r->append(p, std::min<std::size_t>(size * n, 512 - r->size()));
                return size * n;
            });
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
        requests.fetch_add(1, std::memory_order_relaxed);
        const CURLcode rc = curl_easy_perform(curl);
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(headers);
        if (rc != CURLE_OK) {
            failures.fetch_add(1, std::memory_order_relaxed);
            set_error(fmt::format("POST {}: {}", opts.endpoint, curl_easy_strerror(rc)));
            return outcome::retry;
        }
        if (status >= 200 && status < 300)
            return outcome::ok;
        failures.fetch_add(1, std::memory_order_relaxed);
        set_error(fmt::format("POST {}: HTTP {} {}", opts.endpoint, status, response.substr(0, 200)));
        // The OTLP/HTTP specification's retryable answers; any other refusal is final.
        if (status == 408 || status == 429 || status == 502 || status == 503 || status == 504)
            return outcome::retry;
        return outcome::rejected;
    }

    void state_change(bool now_failing)
    {
        if (failing == now_failing)
            return;
        failing = now_failing;
        if (opts.on_state_change) {
            try {
                opts.on_state_change(now_failing, now_failing ? last_error_copy() : std::string());
            } catch (...) {
            }
        }
    }

    std::string last_error_copy() const
    {
        std::lock_guard lock(error_mutex);
        return last_error;
    }

    // Export thread only. The last version seen is kept: spans closed by a
    // host shutdown are sent after their plugin is gone from the host.
    std::string version_of(std::string_view scope)
    {
        if (scope == "host")
            return opts.host_version;
        std::string v;
        if (opts.plugin_version) {
            try {
                v = opts.plugin_version(scope);
            } catch (...) {
            }
        }
        auto& cached = versions[std::string(scope)];
        if (!v.empty())
            cached = v;
        return cached;
    }
    std::unordered_map<std::string, std::string> versions;

    void run()
    {
        CURL* curl = curl_easy_init();
        std::unique_lock lock(queue_mutex);
        for (;;) {
            if (queue.empty()) {
                if (stopping)
                    break;
                idle_cv.notify_all();
                const auto seen = flush_requests;
                cv.wait(lock, [&] { return stopping || !queue.empty() || flush_requests != seen; });
                continue;
            }
            if (past_deadline_locked()) {
                dropped_shutdown.fetch_add(queue.size(), std::memory_order_relaxed);
                queue.clear();
                continue;
            }
            // A partial batch waits for more spans, up to batch_delay after its oldest span.
            const auto seen = flush_requests;
            cv.wait_until(lock, oldest + opts.batch_delay, [&] {
                return stopping || queue.size() >= opts.max_batch || flush_requests != seen;
            });
            std::vector<otlp_span> batch;
            const std::size_t n = std::min(queue.size(), opts.max_batch);
            batch.reserve(n);
            for (std::size_t i = 0; i < n; ++i) {
                batch.push_back(std::move(queue.front()));
                queue.pop_front();
            }
            oldest = clock::now();
            in_flight = batch.size();
            lock.unlock();
            send(curl, batch);
            lock.lock();
            in_flight = 0;
        }
        in_flight = 0;
        idle_cv.notify_all();
        lock.unlock();
        if (curl)
            curl_easy_cleanup(curl);
    }

    bool past_deadline_locked() const
    {
        return stopping && std::chrono::steady_clock::now() >= stop_deadline;
    }

    void send(CURL* curl, const std::vector<otlp_span>& batch)
    {
        std::string body;
        try {
            body = encode_otlp_json(batch, opts, [this](std::string_view s) { return version_of(s); });
        } catch (...) {
            internal_errors.fetch_add(1, std::memory_order_relaxed);
            settle_batch(dropped_rejected, batch.size());
            return;
        }
        auto backoff = opts.retry_initial;
        for (bool first = true;; first = false) {
            if (!first)
                retries.fetch_add(1, std::memory_order_relaxed);
            auto timeout = opts.timeout;
            {
                std::lock_guard lock(queue_mutex);
                if (stopping) {
                    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        stop_deadline - std::chrono::steady_clock::now());
                    timeout = std::min(timeout, std::max(left, std::chrono::milliseconds(1)));
                }
            }
            const outcome r = curl ? post(curl, body, timeout) : outcome::retry;
            if (r == outcome::ok) {
                settle_batch(spans_exported, batch.size());
                state_change(false);
                return;
            }
            if (r == outcome::rejected) {
                settle_batch(dropped_rejected, batch.size());
                state_change(true);
                return;
            }
            state_change(true);
            std::unique_lock lock(queue_mutex);
            if (past_deadline_locked()) {
                dropped_shutdown.fetch_add(batch.size(), std::memory_order_relaxed);
                in_flight = 0;
                return;
            }
            // Back off; shutdown cuts the wait short but retries until its deadline.
            auto until = std::chrono::steady_clock::now() + backoff;
            if (stopping)
                until = std::min(until, stop_deadline);
            const bool was_stopping = stopping;
            cv.wait_until(lock, until, [&] { return stopping != was_stopping; });
            backoff = std::min(backoff * 2, opts.retry_max);
        }
    }
};

otlp_exporter::otlp_exporter(otlp_options options) : impl_(std::make_unique<impl>())
{
    static std::once_flag curl_once;
    std::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    impl_->opts = std::move(options);
    impl_->opts.max_queue = std::max<std::size_t>(impl_->opts.max_queue, 1);
    impl_->opts.max_batch = std::clamp<std::size_t>(impl_->opts.max_batch, 1, impl_->opts.max_queue);
    impl_->worker = std::thread([this] { impl_->run(); });
}

otlp_exporter::~otlp_exporter()
{
    shutdown();
}

void otlp_exporter::shutdown() noexcept
{
    {
        std::lock_guard lock(impl_->queue_mutex);
        if (!impl_->stopping) {
            impl_->stopping = true;
            impl_->stop_deadline = std::chrono::steady_clock::now() + impl_->opts.shutdown_timeout;
        }
        impl_->cv.notify_all();
    }
    if (impl_->worker.joinable() && impl_->worker.get_id() != std::this_thread::get_id())
        impl_->worker.join();
    std::lock_guard lock(impl_->queue_mutex);
    impl_->dropped_shutdown.fetch_add(impl_->queue.size(), std::memory_order_relaxed);
    impl_->queue.clear();
}

bool otlp_exporter::flush(std::chrono::milliseconds timeout) noexcept
{
    std::unique_lock lock(impl_->queue_mutex);
    ++impl_->flush_requests;
    impl_->cv.notify_all();
    return impl_->idle_cv.wait_for(lock, timeout, [&] { return impl_->queue.empty() && impl_->in_flight == 0; });
}

void otlp_exporter::on_new_span(span_context scope) noexcept
{
    if (scope.empty())
        return;
    try {
        const span_ref& s = scope.back();
        impl::live_span l;
        l.span = make_span_id(s);
        std::lock_guard lock(impl_->live_mutex);
        if (s.parent != 0) {
            if (auto it = impl_->live.find(s.parent); it != impl_->live.end()) {
                l.trace = it->second.trace;
                l.parent = it->second.span;
            } else if (scope.size() >= 2) {
                // A parent this layer never saw created (added later): its ids
                // derive from the scope like its own would have.
                l.trace = make_trace_id(scope.front());
                l.parent = make_span_id(scope[scope.size() - 2]);
            } else {
                l.trace = make_trace_id(s);
            }
        } else {
            // A root: the caller's trace when the application set one on this
            // thread (not for a resumed span, whose caller is long gone), else
            // the process-wide default, else a trace of its own.
            std::optional<trace_parent> remote = s.resumed ? std::nullopt : current_remote_parent();
            if (!remote)
                remote = impl_->opts.default_parent;
            if (remote) {
                l.trace = remote->trace;
                l.parent = remote->span;
            } else {
                l.trace = make_trace_id(s);
            }
        }
        for (span_handle cause : s.follows_from)
            if (auto ids = impl_->ids_of(cause))
                l.links.push_back(*ids);
        impl_->live[s.id] = std::move(l);
    } catch (...) {
        impl_->internal_errors.fetch_add(1, std::memory_order_relaxed);
    }
}

void otlp_exporter::on_record(span_context scope, field_refs values) noexcept
{
    (void)scope;
    (void)values;  // the fields are read from the scope at close
}

void otlp_exporter::on_follows_from(const span_ref& span, span_handle cause) noexcept
{
    try {
        std::lock_guard lock(impl_->live_mutex);
        auto it = impl_->live.find(span.id);
        if (it == impl_->live.end())
            return;
        if (auto ids = impl_->ids_of(cause))
            it->second.links.push_back(*ids);
    } catch (...) {
        impl_->internal_errors.fetch_add(1, std::memory_order_relaxed);
    }
}

void otlp_exporter::on_enter(const span_ref& span) noexcept
{
    impl_->stack.push(span.id);
}

void otlp_exporter::on_exit(const span_ref& span) noexcept
{
    impl_->stack.pop(span.id);
}

void otlp_exporter::on_event(const event_view& ev) noexcept
{
    // Outside any span there is nothing to attach an OTLP event to: not exported.
    if (ev.spans.empty() || !ev.site)
        return;
    try {
        otlp_span_event e;
        e.time_ns = nanos(ev.time.get());
        bool error = ev.site->level == model::level::error;
        std::string message;
        for (const auto& f : ev.values) {
            if (!f.value)
                continue;
            model::value v = f.value.to_value();
            if (f.name == "message") {
                message = value_text(v);
                continue;
            }
            if (std::holds_alternative<model::error_chain>(v)) {
                error = true;
                if (message.empty())
                    message = value_text(v);
            }
            e.attributes.push_back({std::string(f.name), std::move(v)});
        }
        e.name = message.empty() ? ev.site->name : message;
        e.attributes.push_back({"level", std::string(level_name(ev.site->level))});
        e.attributes.push_back({"target", ev.site->target});
        add_code_attributes(e.attributes, ev.site);
        std::string status_message = e.name;
        for (const auto& a : e.attributes)
            if (std::holds_alternative<model::error_chain>(a.value)) {
                status_message = e.name + ": " + value_text(a.value);
                break;
            }
        std::lock_guard lock(impl_->live_mutex);
        auto it = impl_->live.find(ev.spans.back().id);
        if (it == impl_->live.end())
            return;
        auto& l = it->second;
        if (error && !l.error) {
            l.error = true;
            l.error_message = std::move(status_message);
        }
        if (l.events.size() >= max_events_per_span)
            ++l.dropped_events;
        else
            l.events.push_back(std::move(e));
    } catch (...) {
        impl_->internal_errors.fetch_add(1, std::memory_order_relaxed);
    }
}

void otlp_exporter::on_suspend(span_context scope) noexcept
{
    // Not an end: a later process continues the span and exports it then.
    if (scope.empty())
        return;
    std::lock_guard lock(impl_->live_mutex);
    impl_->live.erase(scope.back().id);
}

void otlp_exporter::on_close(span_context scope) noexcept
{
    if (scope.empty())
        return;
    try {
        const span_ref& s = scope.back();
        while (impl_->stack.pop(s.id)) {
        }
        impl::live_span l;
        {
            std::lock_guard lock(impl_->live_mutex);
            auto it = impl_->live.find(s.id);
            if (it == impl_->live.end())
                return;  // created before this layer was added
            l = std::move(it->second);
            impl_->live.erase(it);
            impl_->remember_closed(s.id, l);
        }
        otlp_span out;
        out.scope = std::string(s.plugin);
        out.trace = l.trace;
        out.span = l.span;
        out.parent = l.parent;
        out.name = std::string(s.name());
        out.start_ns = nanos(s.start);
        out.end_ns = std::max(nanos(clock::now()), out.start_ns);
        out.events = std::move(l.events);
        out.dropped_events = l.dropped_events;
        out.links = std::move(l.links);
        std::optional<int> explicit_status;
        std::string explicit_message;
        bool field_error = false;
        std::string field_error_message;
        if (s.fields) {
            for (const auto& [name, v] : *s.fields) {
                if (special_field(name)) {
                    const std::string text = value_text(v);
                    if (name == "otel.name")
                        out.name = text;
                    else if (name == "otel.kind")
                        out.kind = kind_of(text);
                    else if (name == "otel.status_code") {
                        const std::string c = lower(text);
                        explicit_status = c == "ok" ? 1 : c == "error" ? 2 : 0;
                    } else {
                        explicit_message = text;
                    }
                    continue;
                }
                if (std::holds_alternative<model::error_chain>(v) && !field_error) {
                    field_error = true;
                    field_error_message = value_text(v);
                }
                out.attributes.push_back({name, v});
            }
        }
        add_code_attributes(out.attributes, s.site);
        out.attributes.push_back({"thread.id", static_cast<std::int64_t>(thread_number(s.thread))});
        if (explicit_status) {
            out.status = *explicit_status;
            if (out.status == 2)
                out.status_message = explicit_message;
        } else if (l.error || field_error) {
            out.status = 2;
            out.status_message = l.error ? l.error_message : field_error_message;
        }
        impl_->enqueue(std::move(out));
    } catch (...) {
        impl_->internal_errors.fetch_add(1, std::memory_order_relaxed);
    }
}

std::uint64_t otlp_exporter::errors() const noexcept
{
    return impl_->internal_errors.load(std::memory_order_relaxed);
}

std::optional<std::string> otlp_exporter::current_traceparent() const
{
    std::lock_guard lock(impl_->live_mutex);
    const span_handle h = impl_->stack.current_if([&](span_handle x) { return impl_->live.count(x) != 0; });
    if (h != 0) {
        const auto& l = impl_->live.at(h);
        return format_traceparent(trace_parent{l.trace, l.span, 0x01});
    }
    if (auto remote = current_remote_parent())
        return format_traceparent(*remote);
    return std::nullopt;
}

otlp_stats otlp_exporter::statistics() const noexcept
{
    otlp_stats s;
    {
        // One moment for the counters that must add up (see impl).
        std::lock_guard lock(impl_->queue_mutex);
        s.spans_queued = impl_->spans_queued.load(std::memory_order_relaxed);
        s.spans_exported = impl_->spans_exported.load(std::memory_order_relaxed);
        s.dropped_queue_full = impl_->dropped_queue_full.load(std::memory_order_relaxed);
        s.dropped_rejected = impl_->dropped_rejected.load(std::memory_order_relaxed);
        s.dropped_shutdown = impl_->dropped_shutdown.load(std::memory_order_relaxed);
        s.queue_length = impl_->queue.size() + impl_->in_flight;
    }
    s.requests = impl_->requests.load(std::memory_order_relaxed);
    s.failures = impl_->failures.load(std::memory_order_relaxed);
    s.retries = impl_->retries.load(std::memory_order_relaxed);
    s.invalid_traceparents = invalid_traceparents();
    return s;
}

std::vector<std::pair<std::string, std::uint64_t>> otlp_exporter::counters() const
{
    const otlp_stats s = statistics();
    return {{"spans_queued", s.spans_queued},
            {"spans_exported", s.spans_exported},
            {"dropped", s.dropped()},
            {"dropped_queue_full", s.dropped_queue_full},
            {"dropped_rejected", s.dropped_rejected},
            {"dropped_shutdown", s.dropped_shutdown},
            {"requests", s.requests},
            {"failures", s.failures},
            {"retries", s.retries},
            {"queue_length", s.queue_length},
            {"invalid_traceparents", s.invalid_traceparents}};
}

std::string otlp_exporter::last_error() const
{
    return impl_->last_error_copy();
}

}  // namespace tt::host
