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

#include <cstdlib>
#include <new>

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

}  // namespace

TEST_CASE("a typical event inside an entered span allocates nothing once warm")
{
    auto layer = std::make_shared<reading_layer>();
    host::dispatcher d;  // filter "info"
    d.add_layer(layer);
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

TEST_CASE("a long string value is not kept in the per-thread scratch")
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
    // The next short event must not find a 64 KiB buffer to reuse: it
    // allocates nothing either way (SSO), but the big one was let go, which
    // shows as one allocation when a big value comes again.
    const std::vector<tt_field_value> small_values{fv_str(0, "short")};
    ok(r, ev_new_event(site.id(), small_values));
    counted c;
    ok(r, ev_new_event(site.id(), big_values));
    CHECK(c.so_far() >= 1);
    CHECK(layer->events == 3);
}

TEST_CASE("the counter sees allocations (the test above can fail)")
{
    counted c;
    auto* p = new int(3);
    CHECK(c.so_far() == 1);
    delete p;
}
