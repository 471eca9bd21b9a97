// The emit path of a typical event allocates nothing once warm: receiver
// (lock-free call-site index, per-thread value scratch) and dispatcher
// (per-thread span views, no reference counts) together. Counted with a
// replaced global operator new, per thread, so that nothing else in the
// process (doctest, other threads) disturbs the count.
//
// Not built under sanitizers: they replace operator new themselves.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "receiver_support.hpp"

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/layers.hpp>

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string_view>
#include <vector>

// The replacements below pair malloc with free on purpose; GCC sees the pairs
// through inlining and warns about the standard ones it replaces.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {

thread_local std::uint64_t allocations = 0;

}  // namespace

void* operator new(std::size_t n)
{
    ++allocations;
    if (void* p = std::malloc(n == 0 ? 1 : n))
        return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n)
{
    return operator new(n);
}
void operator delete(void* p) noexcept
{
    std::free(p);
}
void operator delete[](void* p) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept
{
    std::free(p);
}

namespace {

using namespace tt;
using namespace tt::test;

// Looks at everything an event carries, as a real layer would.
class reading_layer final : public host::layer {
public:
    void on_event(const host::event_view& ev) noexcept override
    {
        ++events;
        fields += ev.values.size();
        spans += ev.spans.size();
    }
    std::uint64_t events = 0, fields = 0, spans = 0;
};

struct counted {
    std::uint64_t before = allocations;
    std::uint64_t so_far() const { return allocations - before; }
};

// A receiver over a dispatcher (filter "info") whose one layer reads every
// event, with the bench's "group" span and typical event registered.
struct group_pipeline {
    std::shared_ptr<reading_layer> layer = std::make_shared<reading_layer>();
    host::dispatcher d;
    host::receiver r{"plugin", d};
    abi_site group{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "group", {"g"}};
    abi_site typical{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event", {"message", "a", "b", "c"}};
    std::vector<tt_field_value> values{fv_str(0, "event message"), fv_i64(1, 0), fv_str(2, "hello world"),
                                       fv_f64(3, 0.0)};

    group_pipeline()
    {
        d.add_layer(layer);
        ok(r, ev_new_callsite(group.get()));
        ok(r, ev_new_callsite(typical.get()));
    }
};

}  // namespace

TEST_CASE_FIXTURE(group_pipeline, "a typical event inside an entered span allocates nothing once warm")
{
    const std::vector<tt_field_value> span_values{fv_i64(0, 7)};
    const std::uint64_t span = ok(r, ev_new_span(group.id(), span_values));
    ok(r, ev_span(TT_EVENT_SPAN_ENTERED, span));

    const tt_event ev = ev_new_event(typical.id(), values);
    ok(r, ev);  // warm: per-thread buffers get their capacity here

    counted c;
    for (int i = 1; i <= 1000; ++i) {
        values[1] = fv_i64(1, i);
        values[3] = fv_f64(3, i * 0.5);
        CHECK(r.receive(ev) == TT_STATUS_OK);
    }
    CHECK(c.so_far() == 0);
    CHECK(layer->events == 1001);
    CHECK(layer->fields == 4 * 1001);
    CHECK(layer->spans == 1001);  // each event saw its span

    ok(r, ev_span(TT_EVENT_SPAN_EXITED, span));
    ok(r, ev_span(TT_EVENT_SPAN_DROPPED, span));
}

TEST_CASE_FIXTURE(group_pipeline, "a whole group (new span, enter, events, exit, drop) allocates nothing once warm")
{
    std::vector<tt_field_value> span_values{fv_i64(0, 0)};
    const tt_event ev = ev_new_event(typical.id(), values);
    std::uint64_t answers_ok = 0;
    auto run_group = [&](int g) {
        span_values[0] = fv_i64(0, g);
        const std::uint64_t span = r.receive(ev_new_span(group.id(), span_values));
        answers_ok += span != 0 && !TT_STATUS_IS_ERROR(span) ? 1 : 0;
        answers_ok += r.receive(ev_span(TT_EVENT_SPAN_ENTERED, span)) == TT_STATUS_OK ? 1 : 0;
        for (int k = 0; k < 10; ++k) {
            values[1] = fv_i64(1, g * 10 + k);
            values[3] = fv_f64(3, (g * 10 + k) * 0.5);
            answers_ok += r.receive(ev) == TT_STATUS_OK ? 1 : 0;
        }
        answers_ok += r.receive(ev_span(TT_EVENT_SPAN_EXITED, span)) == TT_STATUS_OK ? 1 : 0;
        answers_ok += r.receive(ev_span(TT_EVENT_SPAN_DROPPED, span)) == TT_STATUS_OK ? 1 : 0;
    };
    // Warm: tables, the closed-span rings, the dispatcher's nodes, in every
    // shard: ids come in blocks of 512 to a shard, so the eighth shard is
    // first used at id 3584.
    constexpr int warm = 4200;
    for (int g = 0; g < warm; ++g)
        run_group(g);

    counted c;
    for (int g = warm; g < warm + 1000; ++g)
        run_group(g);
    CHECK(c.so_far() == 0);
    CHECK(answers_ok == (warm + 1000) * 14);
    CHECK(layer->events == (warm + 1000) * 10);
    CHECK(r.stats().live_spans == 0);
}

TEST_CASE("a typical event through the console and JSON layers to a file allocates nothing once warm")
{
    std::FILE* file = std::tmpfile();
    REQUIRE(file != nullptr);
    {
        host::console_options co;
        co.color = host::color_mode::never;
        auto console = std::make_shared<host::console_layer>(host::line_writer(file), co);
        // Buffered with a flush far away: the periodic flusher's thread never
        // runs during the count (its allocations would not count here anyway).
        auto json = std::make_shared<host::json_layer>(
            host::line_writer::buffered(file, std::chrono::hours(1)), host::json_options{});
        host::dispatcher d;
        d.add_layer(console);
        d.add_layer(json);
        host::receiver r("plugin", d);

        abi_site group(TT_CALLSITE_SPAN, TT_LEVEL_INFO, "group", {"g"});
        abi_site typical(TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event", {"message", "a", "b", "c"});
        ok(r, ev_new_callsite(group.get()));
        ok(r, ev_new_callsite(typical.get()));
        const std::vector<tt_field_value> span_values{fv_i64(0, 7)};
        const std::uint64_t span = ok(r, ev_new_span(group.id(), span_values));
        ok(r, ev_span(TT_EVENT_SPAN_ENTERED, span));

        std::vector<tt_field_value> values{fv_str(0, "event message"), fv_i64(1, 0), fv_str(2, "hello world"),
                                           fv_f64(3, 0.0)};
        const tt_event ev = ev_new_event(typical.id(), values);
        ok(r, ev);  // warm: line buffers, stdio's buffer, the thread's number

        counted c;
        for (int i = 1; i <= 1000; ++i) {
            values[1] = fv_i64(1, -i * 1000003);
            values[3] = fv_f64(3, i * 0.37);
            CHECK(r.receive(ev) == TT_STATUS_OK);
        }
        CHECK(c.so_far() == 0);
        // The lines were written (a failed write would count here).
        CHECK(console->errors() == 0);
        CHECK(json->errors() == 0);

        ok(r, ev_span(TT_EVENT_SPAN_EXITED, span));
        ok(r, ev_span(TT_EVENT_SPAN_DROPPED, span));
    }
    // Every line reached the file (the JSON layer's when it was destroyed).
    std::rewind(file);
    int console_lines = 0, json_lines = 0;
    char line[1024];
    while (std::fgets(line, sizeof line, file)) {
        const std::string_view l(line);
        if (l.starts_with("{\"timestamp\":") && l.find(R"("fields":{"message":"event message","a":)") != l.npos)
            ++json_lines;
        else if (l.find(" INFO ThreadId(") != l.npos && l.find("group{g=7}: ") != l.npos &&
                 l.find("event message a=") != l.npos)
            ++console_lines;
    }
    std::fclose(file);
    CHECK(console_lines == 1001);
    CHECK(json_lines == 1001);
}

TEST_CASE("a long string value is neither copied nor kept: the layers borrow the plugin's text")
{
    auto layer = std::make_shared<reading_layer>();
    host::dispatcher d;
    d.add_layer(layer);
    host::receiver r("plugin", d);
    abi_site site(TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event", {"message"});
    ok(r, ev_new_callsite(site.get()));

    const std::string big(64 * 1024, 'x');
    const std::vector<tt_field_value> big_values{fv_str(0, big)};
    ok(r, ev_new_event(site.id(), big_values));
    // Events reach the layers as views of the plugin's values (value_ref):
    // no per-thread copy exists that could keep 64 KiB alive, so neither a
    // short nor another big value allocates, even right after the big one.
    const std::vector<tt_field_value> small_values{fv_str(0, "short")};
    counted c;
    ok(r, ev_new_event(site.id(), small_values));
    ok(r, ev_new_event(site.id(), big_values));
    CHECK(c.so_far() == 0);
    CHECK(layer->events == 3);
}

namespace {

// The receiver alone, for the span path: handles from a counter, the current
// span from a thread_span_stack (whose per-thread vector keeps its capacity).
// Nothing here allocates once warm, so what the counter sees is the receiver's.
class plain_subscriber final : public host::subscriber {
public:
    host::span_handle new_span(const host::span_attrs& a) noexcept override
    {
        fields += a.values.size();
        ++last;
        ids[last % ids.size()] = a.plugin_span_id;
        return last;
    }
    void record(host::span_handle, host::field_refs) noexcept override {}
    void follows_from(host::span_handle, host::span_handle) noexcept override {}
    void enter(host::span_handle s) noexcept override { stack.push(s); }
    void exit(host::span_handle s) noexcept override { stack.pop(s); }
    void close(host::span_handle) noexcept override { ++closed; }
    void event(const host::event_record& ev) noexcept override
    {
        ++events;
        parented += ev.parent != 0 ? 1 : 0;
    }
    host::span_handle current_span() const noexcept override { return stack.current(); }
    // The last handles' ids: the groups' spans live one at a time.
    std::uint64_t plugin_span_id(host::span_handle h) const noexcept override
    {
        return h != 0 && h + ids.size() > last ? ids[h % ids.size()] : 0;
    }

    std::array<std::uint64_t, 64> ids{};
    host::thread_span_stack stack;
    host::span_handle last = 0;
    std::uint64_t fields = 0, closed = 0, events = 0, parented = 0;
};

struct group_env {
    plain_subscriber sub;
    host::receiver r{"plugin", sub};
    abi_site group{TT_CALLSITE_SPAN, TT_LEVEL_INFO, "group", {"g", "name"}};
    abi_site typical{TT_CALLSITE_EVENT, TT_LEVEL_INFO, "event", {"message", "a", "b", "c"}};
    std::vector<tt_field_value> span_values{fv_i64(0, 7), fv_str(1, "a group")};
    std::vector<tt_field_value> values{fv_str(0, "event message"), fv_i64(1, 0), fv_str(2, "hello world"),
                                       fv_f64(3, 0.0)};
    group_env()
    {
        ok(r, ev_new_callsite(group.get()));
        ok(r, ev_new_callsite(typical.get()));
    }
    // New span, enter, 10 events, exit, drop (the benchmarks' group).
    void run(int g, tt_parent_mode mode = TT_PARENT_CONTEXTUAL, std::uint64_t parent = 0)
    {
        span_values[0] = fv_i64(0, g);
        const std::uint64_t span = r.receive(ev_new_span(group.id(), span_values, mode, parent));
        REQUIRE(span != 0);
        REQUIRE(!TT_STATUS_IS_ERROR(span));
        CHECK(r.receive(ev_span(TT_EVENT_SPAN_ENTERED, span)) == TT_STATUS_OK);
        for (int k = 0; k < 10; ++k) {
            values[1] = fv_i64(1, g * 10 + k);
            values[3] = fv_f64(3, k * 0.5);
            CHECK(r.receive(ev_new_event(typical.id(), values)) == TT_STATUS_OK);
        }
        CHECK(r.receive(ev_span(TT_EVENT_SPAN_EXITED, span)) == TT_STATUS_OK);
        CHECK(r.receive(ev_span(TT_EVENT_SPAN_DROPPED, span)) == TT_STATUS_OK);
    }
};

}  // namespace

TEST_CASE("a whole group (new span, enter, events, exit, drop) allocates nothing in the receiver once warm")
{
    group_env env;
    // Warm: the span tables' first chunks and indexes, the per-thread
    // buffers and the rings of closed spans' handles get their capacity
    // here, in every shard: a thread's ids come in blocks of 512
    // (detail::span_id_block), a block to a shard, so 4,200 spans pass
    // through all eight.
    constexpr int warm = 4200;
    for (int g = 0; g < warm; ++g)
        env.run(-g);

    counted c;
    for (int g = 1; g <= 1000; ++g)
        env.run(g);
    CHECK(c.so_far() == 0);
    CHECK(env.sub.last == warm + 1000);    // every span reached the pipeline
    CHECK(env.sub.closed == warm + 1000);  // and was closed there
    CHECK(env.sub.fields == 2 * (warm + 1000));
    CHECK(env.sub.events == 10 * (warm + 1000));
    CHECK(env.sub.parented == 10 * (warm + 1000));  // each event saw its span as parent
    CHECK(env.r.stats().live_spans == 0);
    CHECK(env.sub.stack.depth() == 0);
}

TEST_CASE("a group under an explicit parent takes the general path, which allocates (the test above can fail)")
{
    group_env env;
    const std::uint64_t outer = ok(env.r, ev_new_span(env.group.id(), env.span_values, TT_PARENT_ROOT));
    env.run(0, TT_PARENT_EXPLICIT, outer);
    counted c;
    env.run(1, TT_PARENT_EXPLICIT, outer);
    CHECK(c.so_far() > 0);
    ok(env.r, ev_span(TT_EVENT_SPAN_DROPPED, outer));
}

// The dispatcher's side of a span's life, called directly (no receiver): a
// new span with values (one string past the small-string size), enter, events
// in it, exit, close. Closed nodes are recycled with their strings' capacity.
TEST_CASE("a span's whole life in the dispatcher allocates nothing once warm")
{
    auto layer = std::make_shared<reading_layer>();
    host::dispatcher d;  // filter "info"
    d.add_layer(layer);
    model::callsite group;
    group.id = 0x5151;
    group.kind = model::callsite_kind::span;
    group.name = "group";
    group.target = "plugin";
    group.fields = {"g", "name"};
    model::callsite typical;
    typical.id = 0x7171;
    typical.name = "event";
    typical.target = "plugin";
    typical.fields = {"message", "a"};
    const model::value name{std::string("a group whose name is past the small-string size")};
    model::value g{std::int64_t{0}};
    const model::value message{std::string("event message")};
    model::value a{std::int64_t{0}};
    const host::field_ref span_values[] = {{"g", g}, {"name", name}};
    const host::field_ref event_values[] = {{"message", message}, {"a", a}};
    host::span_attrs attrs;
    attrs.site = &group;
    attrs.plugin = "plugin";
    attrs.values = span_values;
    host::event_record ev;
    ev.site = &typical;
    ev.plugin = "plugin";
    ev.contextual = true;
    ev.values = event_values;
    auto run = [&](int i) {
        g = model::value{std::int64_t{i}};
        const host::span_handle h = d.new_span(attrs);
        d.enter(h);
        for (int k = 0; k < 10; ++k) {
            a = model::value{std::int64_t{k}};
            d.event(ev);
        }
        d.exit(h);
        d.close(h);
    };
    for (int i = 0; i < 1000; ++i)  // warm: node slabs, the free list, per-thread vectors
        run(-i);
    counted c;
    for (int i = 1; i <= 1000; ++i)
        run(i);
    CHECK(c.so_far() == 0);
    CHECK(layer->events == 10 * 2000);
    CHECK(layer->spans == 10 * 2000);  // each event saw its span
    CHECK(d.statistics().spans_live == 0);
    CHECK(d.statistics().anomalies == 0);
}

TEST_CASE("the counter sees allocations (the test above can fail)")
{
    counted c;
    auto* p = new int(3);
    CHECK(c.so_far() == 1);
    delete p;
}
