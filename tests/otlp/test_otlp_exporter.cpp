// The OTLP exporter as one class: configuration from the environment, the
// JSON encoding, and spans driven through a real dispatcher and POSTed over a
// real loopback socket to a minimal HTTP server inside this test (the
// protocol-level checks against the official definitions are in
// otlp_tt_host.py).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/otlp_exporter.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace tt::host;
namespace json = boost::json;

namespace {

// A TCP socket bound to a free loopback port (its number into `port`).
int bind_loopback(int& port)
{
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    return fd;
}

std::string traces_endpoint(int port)
{
    return "http://127.0.0.1:" + std::to_string(port) + "/v1/traces";
}

// Answers every POST with `status` and keeps the bodies. One connection at a
// time (the exporter has one thread), keep-alive honoured.
class http_sink {
public:
    explicit http_sink(int status = 200) : status_(status)
    {
        fd_ = bind_loopback(port_);
        REQUIRE(::listen(fd_, 4) == 0);
        thread_ = std::thread([this] { serve(); });
    }
    ~http_sink()
    {
        stop_ = true;
        ::shutdown(fd_, SHUT_RDWR);
        ::close(fd_);
        thread_.join();
    }
    std::string endpoint() const { return traces_endpoint(port_); }
    std::vector<std::string> bodies()
    {
        std::lock_guard lock(mutex_);
        return bodies_;
    }
    std::vector<std::string> heads()
    {
        std::lock_guard lock(mutex_);
        return heads_;
    }

private:
    void serve()
    {
        while (!stop_) {
            const int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0)
                return;
            std::string buf;
            char chunk[4096];
            for (;;) {
                const auto head_end = buf.find("\r\n\r\n");
                if (head_end != std::string::npos) {
                    const std::string head = buf.substr(0, head_end);
                    std::size_t length = 0;
                    for (auto p = head.find("\r\n"); p != std::string::npos; p = head.find("\r\n", p + 2)) {
                        std::string line = head.substr(p + 2, head.find("\r\n", p + 2) - p - 2);
                        for (auto& ch : line)
                            ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                        if (line.rfind("content-length:", 0) == 0)
                            length = std::stoul(line.substr(15));
                    }
                    if (buf.size() >= head_end + 4 + length) {
                        {
                            std::lock_guard lock(mutex_);
                            heads_.push_back(head);
                            bodies_.push_back(buf.substr(head_end + 4, length));
                        }
                        buf.erase(0, head_end + 4 + length);
                        const std::string answer = "HTTP/1.1 " + std::to_string(status_) +
                                                   " X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        (void)!::write(c, answer.data(), answer.size());
                        continue;
                    }
                }
                const auto n = ::read(c, chunk, sizeof chunk);
                if (n <= 0)
                    break;
                buf.append(chunk, static_cast<std::size_t>(n));
            }
            ::close(c);
        }
    }

    int status_;
    int fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::vector<std::string> bodies_, heads_;
    std::thread thread_;
};

// A loopback port that refuses connections: bound, never listening, and held
// for the test's length, so no other process (a test run in parallel) can
// take it. Closing a listener and reusing its port, by contrast, races with them.
class refusing_port {
public:
    refusing_port()
    {
        fd_ = bind_loopback(port_);
    }
    refusing_port(const refusing_port&) = delete;
    refusing_port& operator=(const refusing_port&) = delete;
    ~refusing_port() { ::close(fd_); }
    std::string endpoint() const { return traces_endpoint(port_); }

private:
    int fd_ = -1;
    int port_ = 0;
};

// pred() once it holds, or false after a deadline that bounds a loaded or
// sanitized run (it measures nothing: a passing run returns at once).
template <class Pred>
bool wait_until(Pred pred)
{
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

// Every span of every request, flattened.
std::vector<json::object> spans_of(const std::vector<std::string>& bodies)
{
    std::vector<json::object> out;
    for (const auto& b : bodies) {
        const json::value request = json::parse(b);
        for (const auto& rs : request.at("resourceSpans").as_array())
            for (const auto& ss : rs.at("scopeSpans").as_array())
                for (const auto& s : ss.at("spans").as_array())
                    out.push_back(s.as_object());
    }
    return out;
}

const json::object* find_span(const std::vector<json::object>& spans, std::string_view name)
{
    for (const auto& s : spans)
        if (s.at("name").as_string() == name)
            return &s;
    return nullptr;
}

std::map<std::string, json::value> attributes(const json::object& s)
{
    std::map<std::string, json::value> out;
    for (const auto& kv : s.at("attributes").as_array())
        out[std::string(kv.at("key").as_string())] = kv.at("value");
    return out;
}

otlp_options fast(const std::string& endpoint)
{
    otlp_options o;
    o.endpoint = endpoint;
    o.batch_delay = std::chrono::milliseconds(20);
    o.retry_initial = std::chrono::milliseconds(10);
    o.shutdown_timeout = std::chrono::milliseconds(2000);
    return o;
}

struct env_guard {
    std::vector<std::string> names;
    void set(const char* n, const char* v)
    {
        ::setenv(n, v, 1);
        names.emplace_back(n);
    }
    ~env_guard()
    {
        for (const auto& n : names)
            ::unsetenv(n.c_str());
    }
};

}  // namespace

TEST_CASE("key=value lists are %-decoded, and a bad entry is named")
{
    auto r = parse_key_values("a=1, deployment.environment = test%20lab ,team=a%2Cb,,");
    REQUIRE(std::holds_alternative<key_values>(r));
    const auto& kv = std::get<key_values>(r);
    REQUIRE(kv.size() == 3);
    CHECK(kv[1] == std::pair<std::string, std::string>("deployment.environment", "test lab"));
    CHECK(kv[2].second == "a,b");
    CHECK(std::get<std::string>(parse_key_values("a=1,b")).find("\"b\"") != std::string::npos);
    CHECK(std::get<std::string>(parse_key_values("a=%zz")).find("%-encoded") != std::string::npos);
    CHECK(std::get<std::string>(parse_key_values("=x")).find("empty") != std::string::npos);
}

TEST_CASE("the OTEL_* variables configure the exporter")
{
    for (const char* n : {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
                          "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_BSP_MAX_QUEUE_SIZE"})
        ::unsetenv(n);
    {
        auto r = otlp_options_from_env();
        REQUIRE(std::holds_alternative<otlp_env>(r));
        CHECK_FALSE(std::get<otlp_env>(r).configured);
    }
    env_guard env;
    env.set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
    env.set("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,region=eu%2Dwest");
    env.set("OTEL_BSP_MAX_QUEUE_SIZE", "77");
    {
        auto r = std::get<otlp_env>(otlp_options_from_env());
        CHECK(r.configured);
        CHECK(r.options.endpoint == "http://collector:4318/v1/traces");
        CHECK(r.options.service_name == "from-attrs");
        CHECK(r.options.max_queue == 77);
        REQUIRE(r.options.resource_attributes.size() == 1);
        CHECK(r.options.resource_attributes[0].second == "eu-west");
    }
    env.set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9999/custom");
    env.set("OTEL_SERVICE_NAME", "from-name");
    {
        auto r = std::get<otlp_env>(otlp_options_from_env());
        CHECK(r.options.endpoint == "http://other:9999/custom");  // used as is, and it wins
        CHECK(r.options.service_name == "from-name");             // wins over service.name in the attributes
    }
    env.set("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    CHECK(std::get<std::string>(otlp_options_from_env()).find("only http/json") != std::string::npos);
    env.set("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    env.set("OTEL_BSP_MAX_QUEUE_SIZE", "lots");
    CHECK(std::get<std::string>(otlp_options_from_env()).find("OTEL_BSP_MAX_QUEUE_SIZE") != std::string::npos);
    env.set("OTEL_BSP_MAX_QUEUE_SIZE", "10");
    env.set("OTEL_RESOURCE_ATTRIBUTES", "novalue");
    CHECK(std::get<std::string>(otlp_options_from_env()).find("OTEL_RESOURCE_ATTRIBUTES") != std::string::npos);
}

TEST_CASE("the JSON encoding: hex ids, lowerCamelCase, 64-bit integers as strings, one scope per plugin")
{
    otlp_span s;
    s.scope = "orders";
    s.trace = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    s.span = {0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1};
    s.name = "order";
    s.start_ns = 1795459899030863658ULL;
    s.end_ns = s.start_ns + 5;
    s.attributes = {{"big", std::uint64_t{18446744073709551615ULL}},
                    {"n", std::int64_t{-3}},
                    {"nan", std::numeric_limits<double>::quiet_NaN()},
                    {"ok", true}};
    otlp_span host = s;
    host.scope = "host";
    host.parent = span_id{1, 1, 1, 1, 1, 1, 1, 1};
    otlp_options o;
    o.service_name = "shop";
    const auto text = encode_otlp_json({s, host, s}, o, [](std::string_view p) {
        return p == "orders" ? std::string("0.1.0") : std::string("9");
    });
    const auto root = json::parse(text).as_object();
    const auto& rs = root.at("resourceSpans").as_array().at(0).as_object();
    const auto& scopes = rs.at("scopeSpans").as_array();
    REQUIRE(scopes.size() == 2);
    CHECK(scopes[0].at("scope").at("name").as_string() == "orders");
    CHECK(scopes[0].at("scope").at("version").as_string() == "0.1.0");
    CHECK(scopes[0].at("spans").as_array().size() == 2);
    const auto& span = scopes[0].at("spans").as_array().at(0).as_object();
    CHECK(span.at("traceId").as_string() == "0102030405060708090a0b0c0d0e0f10");
    CHECK(span.at("spanId").as_string() == "deadbeef00000001");
    CHECK_FALSE(span.contains("parentSpanId"));
    CHECK(scopes[1].at("spans").as_array().at(0).at("parentSpanId").as_string() == "0101010101010101");
    CHECK(span.at("startTimeUnixNano").as_string() == "1795459899030863658");
    auto a = attributes(span);
    CHECK(a["big"].at("stringValue").as_string() == "18446744073709551615");  // above int64: its digits
    CHECK(a["n"].at("intValue").as_string() == "-3");
    CHECK(a["nan"].at("doubleValue").as_string() == "NaN");
    CHECK(a["ok"].at("boolValue").as_bool());
    bool service = false;
    for (const auto& kv : rs.at("resource").at("attributes").as_array())
        service |= kv.at("key").as_string() == "service.name" && kv.at("value").at("stringValue").as_string() == "shop";
    CHECK(service);
}

TEST_CASE("spans through a dispatcher: otel.* fields, error status, remote parent, current traceparent")
{
    http_sink sink;
    dispatcher d;
    auto exporter = std::make_shared<otlp_exporter>(fast(sink.endpoint()));
    d.add_layer(exporter);
    const std::string trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    std::string inside_traceparent;
    {
        remote_parent_scope remote("00-" + trace_hex + "-00f067aa0ba902b7-01");
        auto req = d.enter_host_span(tt::model::level::info, "app", "request",
                                     {{"otel.name", std::string("GET /orders")},
                                      {"otel.kind", std::string("Server")},
                                      {"otel.status_code", std::string("ERROR")},
                                      {"otel.status_message", std::string("upstream said no")},
                                      {"route", std::string("/orders")}});
        inside_traceparent = exporter->current_traceparent().value_or("");
        {
            auto child = d.enter_host_span(tt::model::level::info, "app", "lookup", {});
            d.host_event(tt::model::level::error, "app", "lookup failed", {{"code", std::int64_t{7}}});
        }
        auto plain = d.enter_host_span(tt::model::level::info, "app", "render", {});
    }
    CHECK(exporter->current_traceparent() == std::nullopt);
    {
        remote_parent_scope bad("00-" + std::string(32, '0') + "-00f067aa0ba902b7-01");
        CHECK_FALSE(bad.valid());
        auto own = d.enter_host_span(tt::model::level::info, "app", "own trace", {});
    }
    REQUIRE(exporter->flush(std::chrono::seconds(10)));
    const auto spans = spans_of(sink.bodies());
    REQUIRE(spans.size() == 4);

    const auto* req = find_span(spans, "GET /orders");
    REQUIRE(req != nullptr);
    CHECK(req->at("kind").as_int64() == 2);
    CHECK(req->at("status").at("code").as_int64() == 2);
    CHECK(req->at("status").at("message").as_string() == "upstream said no");
    CHECK(req->at("traceId").as_string() == trace_hex);
    CHECK(req->at("parentSpanId").as_string() == "00f067aa0ba902b7");
    auto a = attributes(*req);
    CHECK(a.count("otel.name") == 0);
    CHECK(a.count("otel.kind") == 0);
    CHECK(a["route"].at("stringValue").as_string() == "/orders");
    CHECK(inside_traceparent ==
          "00-" + trace_hex + "-" + std::string(req->at("spanId").as_string()) + "-01");

    const auto* lookup = find_span(spans, "lookup");
    REQUIRE(lookup != nullptr);
    CHECK(lookup->at("traceId").as_string() == trace_hex);
    CHECK(lookup->at("parentSpanId") == req->at("spanId"));
    CHECK(lookup->at("status").at("code").as_int64() == 2);  // an error-level event inside
    CHECK(lookup->at("status").at("message").as_string() == "lookup failed");
    const auto& events = lookup->at("events").as_array();
    REQUIRE(events.size() == 1);
    CHECK(events[0].at("name").as_string() == "lookup failed");

    const auto* render = find_span(spans, "render");
    REQUIRE(render != nullptr);
    CHECK(render->at("status").at("code").as_int64() == 0);
    const auto* own = find_span(spans, "own trace");
    REQUIRE(own != nullptr);
    CHECK(own->at("traceId").as_string() != trace_hex);  // the refused traceparent started a new trace
    CHECK_FALSE(own->contains("parentSpanId"));
    CHECK(exporter->statistics().invalid_traceparents >= 1);
    CHECK(sink.heads().at(0).find("application/json") != std::string::npos);

    exporter->shutdown();
    const auto st = exporter->statistics();
    CHECK(st.spans_exported == 4);
    CHECK(st.dropped() == 0);
}

TEST_CASE("a span continued from persisted state keeps its ids; a suspended span is not exported")
{
    http_sink sink;
    dispatcher d;
    auto exporter = std::make_shared<otlp_exporter>(fast(sink.endpoint()));
    d.add_layer(exporter);
    tt::model::callsite site;
    site.kind = tt::model::callsite_kind::span;
    site.name = "order";
    site.target = "orders";
    site.id = 42;
    const auto start = clock::now() - std::chrono::seconds(3);
    span_attrs attrs;
    attrs.site = &site;
    attrs.plugin = "orders";
    attrs.time = start;
    attrs.thread = std::this_thread::get_id();
    attrs.plugin_span_id = 7;
    // The first process: created, then suspended at shutdown (not an end).
    const auto h1 = d.new_span(attrs);
    d.suspend(h1);
    // The next process continues it and closes it.
    attrs.resumed = true;
    const auto h2 = d.new_span(attrs);
    d.close(h2);
    // Another span that only differs in its receiver id.
    attrs.plugin_span_id = 8;
    attrs.resumed = false;
    d.close(d.new_span(attrs));
    REQUIRE(exporter->flush(std::chrono::seconds(10)));
    const auto spans = spans_of(sink.bodies());
    REQUIRE(spans.size() == 2);
    CHECK(spans[0].at("startTimeUnixNano").as_string() ==
          std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count()));
    CHECK(spans[0].at("spanId") != spans[1].at("spanId"));
    CHECK(spans[0].at("traceId") != spans[1].at("traceId"));

    // A second exporter (a restarted process) derives the same ids for span 7.
    http_sink sink2;
    dispatcher d2;
    auto again = std::make_shared<otlp_exporter>(fast(sink2.endpoint()));
    d2.add_layer(again);
    attrs.plugin_span_id = 7;
    attrs.resumed = true;
    d2.close(d2.new_span(attrs));
    REQUIRE(again->flush(std::chrono::seconds(10)));
    const auto spans2 = spans_of(sink2.bodies());
    REQUIRE(spans2.size() == 1);
    CHECK(spans2[0].at("spanId") == spans[0].at("spanId"));
    CHECK(spans2[0].at("traceId") == spans[0].at("traceId"));
}

TEST_CASE("a full queue drops and counts; shutdown counts what it could not send; retries on 503")
{
    SUBCASE("collector down")
    {
        const refusing_port down;
        auto o = fast(down.endpoint());
        o.max_queue = 2;
        o.batch_delay = std::chrono::seconds(30);
        o.max_batch = 100;
        o.shutdown_timeout = std::chrono::milliseconds(300);
        dispatcher d;
        auto exporter = std::make_shared<otlp_exporter>(o);
        d.add_layer(exporter);
        for (int i = 0; i < 5; ++i)
            auto g = d.enter_host_span(tt::model::level::info, "app", "work", {});
        CHECK(exporter->statistics().dropped_queue_full == 3);
        CHECK(exporter->statistics().queue_length == 2);
        exporter->shutdown();
        const auto st = exporter->statistics();
        CHECK(st.dropped_shutdown == 2);
        CHECK(st.failures >= 1);
        CHECK(st.spans_exported == 0);
        CHECK(exporter->last_error().find("POST") != std::string::npos);
    }
    SUBCASE("a 400 is final, not retried")
    {
        http_sink refusing(400);
        dispatcher d;
        auto exporter = std::make_shared<otlp_exporter>(fast(refusing.endpoint()));
        d.add_layer(exporter);
        { auto g = d.enter_host_span(tt::model::level::info, "app", "work", {}); }
        exporter->flush(std::chrono::seconds(10));
        exporter->shutdown();
        CHECK(exporter->statistics().dropped_rejected == 1);
        CHECK(exporter->statistics().retries == 0);
        CHECK(refusing.bodies().size() == 1);
    }
    SUBCASE("a 503 is retried with backoff until shutdown gives up")
    {
        http_sink busy(503);
        auto o = fast(busy.endpoint());
        o.shutdown_timeout = std::chrono::milliseconds(400);
        dispatcher d;
        auto exporter = std::make_shared<otlp_exporter>(o);
        d.add_layer(exporter);
        { auto g = d.enter_host_span(tt::model::level::info, "app", "work", {}); }
        // Retried before the shutdown: wait for three attempts to reach the
        // collector rather than for a time the export thread may not get.
        REQUIRE(wait_until([&] { return busy.bodies().size() >= 3; }));
        exporter->shutdown();
        CHECK(exporter->statistics().retries >= 2);
        CHECK(exporter->statistics().dropped_shutdown == 1);
        CHECK(busy.bodies().size() >= 3);
    }
}

TEST_CASE("the counters an operator reads add up at every moment while batches are sent")
{
    // Every span taken into the queue is at any moment in exactly one place:
    // queued or in flight (queue_length), exported, refused or dropped at
    // shutdown. A batch counted as exported while still in flight, or in
    // neither for a moment, shows `stats` readers spans that vanished or
    // doubled. Another thread reads the counters all along.
    http_sink sink;
    auto o = fast(sink.endpoint());
    o.max_batch = 1;  // a batch per span: many moments to catch
    o.batch_delay = std::chrono::milliseconds(0);
    o.max_queue = 100000;
    dispatcher d;
    auto exporter = std::make_shared<otlp_exporter>(o);
    d.add_layer(exporter);
    constexpr int spans = 300;
    std::atomic<bool> done{false};
    std::uint64_t reads = 0, off = 0;
    otlp_stats first_off{};
    std::thread reader([&] {
        while (!done.load()) {
            const auto s = exporter->statistics();
            ++reads;
            if (s.spans_queued != s.spans_exported + s.dropped_rejected + s.dropped_shutdown + s.queue_length &&
                off++ == 0)
                first_off = s;
        }
    });
    for (int i = 0; i < spans; ++i)
        auto g = d.enter_host_span(tt::model::level::info, "app", "work", {});
    const bool all_sent = wait_until([&] { return exporter->statistics().spans_exported == spans; });
    done = true;
    reader.join();
    REQUIRE(all_sent);
    CHECK_MESSAGE(off == 0, off, " of ", reads, " reads did not add up, the first: queued ", first_off.spans_queued,
                  " exported ", first_off.spans_exported, " queue_length ", first_off.queue_length);
}
