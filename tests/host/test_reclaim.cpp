// The dispatcher's read sections against its reclamation of span nodes and
// value snapshots, with real threads: a span closed while another thread is
// still inside a read section that reached it keeps its recorded values
// until that section ends, however many spans are retired and recycled
// meanwhile. (A reclaimer that ignored the reader's section fails both
// checks: the reader then sees a later span's values and handle.)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/filter.hpp>
#include <tracetunnel/host/layers.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace th = tt::host;
namespace model = tt::model;

namespace {

model::callsite site(std::uint64_t id, model::callsite_kind kind, std::string name, std::vector<std::string> fields)
{
    model::callsite cs;
    cs.id = id;
    cs.kind = kind;
    cs.level = model::level::info;
    cs.name = std::move(name);
    cs.target = "reclaim";
    cs.module_path = "reclaim";
    cs.file = "reclaim.cpp";
    cs.fields = std::move(fields);
    return cs;
}

const model::callsite span_site = site(0x2001, model::callsite_kind::span, "held", {"tag"});
const model::callsite event_site = site(0x2002, model::callsite_kind::event, "look", {"message"});

// Long enough to live on the heap, not in the string; all the same length,
// so that a freed snapshot's memory is what the next ones take.
std::string tag_text(std::string_view what, int n)
{
    std::string t = std::string(what) + "-" + std::to_string(n);
    t.resize(48, '.');
    return t;
}

th::span_handle recorded_span(th::dispatcher& d, const std::string& opened_as, const std::string& recorded_as)
{
    const model::value t{opened_as};
    const th::field_ref values[] = {{"tag", t}};
    th::span_attrs a;
    a.site = &span_site;
    a.plugin = "reclaim";
    a.values = th::field_refs(values, 1);
    const th::span_handle h = d.new_span(a);
    // A recorded span's view lives in a snapshot that reclamation deletes.
    const model::value r{recorded_as};
    const th::field_ref rec[] = {{"tag", r}};
    d.record(h, th::field_refs(rec, 1));
    return h;
}

std::string tag_of(const th::span_ref& s)
{
    if (s.fields == nullptr)
        return "<no fields>";
    for (const auto& [k, v] : *s.fields)
        if (k == "tag")
            if (const auto* text = std::get_if<std::string>(&v))
                return *text;
    return "<no tag>";
}

// Inside the event's read section: takes the event's span, tells the closer,
// waits until it has closed that span and churned through many others, then
// reads the span again.
class holding_layer final : public th::layer {
public:
    void on_event(const th::event_view& ev) noexcept override
    {
        if (ev.spans.empty()) {
            seen_before = "<no span>";
            inside.store(true);
            inside.notify_all();
            return;
        }
        const th::span_ref& held = ev.spans.back();
        seen_before = tag_of(held);
        inside.store(true);
        inside.notify_all();
        churned.wait(false);
        seen_after = tag_of(held);
        id_after = held.id;
    }

    std::atomic<bool> inside{false}, churned{false};
    std::string seen_before, seen_after;
    th::span_handle id_after = 0;
};

}  // namespace

TEST_CASE("a span closed while another thread reads it keeps its values until that read section ends")
{
    th::dispatcher d(std::get<th::filter>(th::parse_filter("info")));
    auto layer = std::make_shared<holding_layer>();
    d.add_layer(layer);

    const std::string recorded = tag_text("held-recorded", 0);
    const th::span_handle held = recorded_span(d, tag_text("held-opened", 0), recorded);

    std::thread reader([&] {
        const model::value msg{std::string("look")};
        const th::field_ref values[] = {{"message", msg}};
        th::event_record ev;
        ev.site = &event_site;
        ev.plugin = "reclaim";
        ev.parent = held;
        ev.values = values;
        d.event(ev);
    });
    layer->inside.wait(false);
    REQUIRE(layer->seen_before == recorded);

    // Closed here, while the reader is still inside; then enough spans made,
    // recorded and closed on this thread for many reclaims to run and to
    // recycle every node and snapshot they may.
    d.close(held);
    for (int i = 0; i < 20000; ++i)
        d.close(recorded_span(d, tag_text("churn-opened", i), tag_text("churn-recorded", i)));

    layer->churned.store(true);
    layer->churned.notify_all();
    reader.join();
    CHECK(layer->seen_after == recorded);
    CHECK(layer->id_after == held);
    CHECK(d.statistics().anomalies == 0);
}
