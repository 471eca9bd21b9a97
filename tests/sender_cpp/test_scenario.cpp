// The C++ sender seen from a host: a real .so built from
// plugins/test/cpp/scenario.cpp, loaded with tt::host::open_plugin and
// started with a recording host. Each test asserts the exact events.
//
// Every call site registers when the plugin starts (NEW_CALLSITE before any
// hit); after tt_plugin_interest_changed a site registers again on its next
// hit, in the stream, as before its first hit in a lazy sender.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "sender_test.hpp"

#include "scenario.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <set>
#include <thread>

using namespace tt::model;
using tt::test::describe;

namespace {

// The call sites a host learnt, by id.
using registry = std::map<std::uint64_t, callsite>;

// Checks a registered call site's data against what the test expects.
void check_site(const callsite& cs, callsite_kind kind, tt::model::level lvl, const std::string& span_name,
                const std::vector<std::string>& fields)
{
    CHECK(cs.kind == kind);
    CHECK(cs.level == lvl);
    CHECK(cs.fields == fields);
    CHECK(cs.target == "cpp_scenario");
    CHECK(cs.module_path == "cpp_scenario");
    CHECK(cs.file.ends_with("scenario.cpp"));
    CHECK(cs.line > 0);
    if (kind == callsite_kind::event)
        CHECK(cs.name == "event " + cs.file + ":" + std::to_string(cs.line));
    else
        CHECK(cs.name == span_name);
    CHECK(cs.id == tt::test::runtime_hash(cs));
}

// Walks a recorded stream event by event. Eager: the call sites were
// registered at start (`known`) and none may appear in the stream. Lazy
// (after interest changed): each call site registers in the stream right
// before its first use.
class stream_reader {
public:
    explicit stream_reader(std::vector<event> events, const registry* known = nullptr)
        : events_(std::move(events)), known_(known)
    {
    }

    const event& next()
    {
        REQUIRE_MESSAGE(at_ < events_.size(), "stream ended early:\n" << describe(events_));
        return events_[at_++];
    }

    // The call site of the next span or event has this shape; returns its id.
    std::uint64_t callsite(callsite_kind kind, tt::model::level lvl, const std::string& span_name,
                           const std::vector<std::string>& fields)
    {
        if (known_ == nullptr) {
            const event& e = next();
            const auto* nc = std::get_if<new_callsite>(&e);
            REQUIRE_MESSAGE(nc != nullptr, "expected a new call site, got " << describe(e));
            check_site(nc->site, kind, lvl, span_name, fields);
            return nc->site.id;
        }
        REQUIRE_MESSAGE(at_ < events_.size(), "stream ended early:\n" << describe(events_));
        const event& e = events_[at_];
        std::uint64_t id = 0;
        if (const auto* s = std::get_if<new_span>(&e))
            id = s->callsite_id;
        else if (const auto* ev = std::get_if<new_event>(&e))
            id = ev->callsite_id;
        REQUIRE_MESSAGE(id != 0, "expected a new span or event, got " << describe(e));
        const auto it = known_->find(id);
        REQUIRE_MESSAGE(it != known_->end(), "call site " << id << " was not registered at start");
        check_site(it->second, kind, lvl, span_name, fields);
        return id;
    }

    void expect(const event& want)
    {
        const event& got = next();
        CHECK_MESSAGE(same_event(got, want), "event #" << at_ - 1 << "\n  got:  " << describe(got)
                                                       << "\n  want: " << describe(want));
    }

    void expect_end() { CHECK_MESSAGE(at_ == events_.size(), "unexpected events:\n" << describe(events_)); }

private:
    std::vector<event> events_;
    const registry* known_;
    std::size_t at_ = 0;
};

// The events after the first `skip`.
std::vector<event> after(const std::vector<event>& events, std::size_t skip)
{
    REQUIRE(events.size() >= skip);
    return {events.begin() + static_cast<std::ptrdiff_t>(skip), events.end()};
}

struct started {
    explicit started(const std::string& name, tt::test::recording_host::interest_policy policy = nullptr)
        : host(policy ? tt::test::recording_host(std::move(policy)) : tt::test::recording_host()),
          plugin(tt::test::open_test_plugin(name))
    {
        const tt_host api = host.api();
        auto result = plugin.lib->start(api);
        if (auto* err = std::get_if<tt::host::load_error>(&result))
            FAIL(err->message());
        run = &plugin.get<void(std::int32_t)>(SCENARIO_SYMBOL_RUN);
        // What start told the host: every call site, and nothing else.
        at_start = host.events();
        for (const auto& e : at_start) {
            const auto* nc = std::get_if<new_callsite>(&e);
            REQUIRE_MESSAGE(nc != nullptr, "start emitted " << describe(e));
            CHECK_MESSAGE(sites.emplace(nc->site.id, nc->site).second, "registered twice: " << describe(e));
        }
    }
    ~started() { plugin.lib->stop(); }

    tt::test::recording_host host;
    tt::test::loaded_plugin plugin;
    void (*run)(std::int32_t) = nullptr;
    std::vector<event> at_start;
    registry sites;  // the call sites registered by start, by id
};

std::vector<callsite> site_list(const tt::test::recording_host& h)
{
    std::vector<callsite> out;
    for (const auto& e : h.events())
        if (const auto* nc = std::get_if<new_callsite>(&e))
            out.push_back(nc->site);
    return out;
}

const callsite* find_site_with_field(const std::vector<event>& events, const std::string& field)
{
    for (const auto& e : events)
        if (const auto* nc = std::get_if<new_callsite>(&e))
            if (std::find(nc->site.fields.begin(), nc->site.fields.end(), field) != nc->site.fields.end())
                return &nc->site;
    return nullptr;
}

}  // namespace

// SCENARIO_SCRIPTED as the host sees it, span ids counted from `base` + 1.
void check_scripted(stream_reader& r, std::uint64_t base)
{
    using P = parent_mode;
    const std::uint64_t s1 = base + 1, s2 = base + 2, s3 = base + 3, s4 = base + 4;
    const auto order = r.callsite(callsite_kind::span, level::info, "order", {"order_id", "customer"});
    r.expect(new_span{s1, order, P::contextual, 0, {{"order_id", std::int64_t{42}}}});
    r.expect(span_entered{s1});
    const auto inside = r.callsite(callsite_kind::event, level::info, "", {"message", "step"});
    r.expect(new_event{inside, P::contextual, 0, {{"message", std::string("inside order")}, {"step", std::uint64_t{1}}}});
    r.expect(values_recorded{s1, {{"customer", std::string("ada")}}});
    r.expect(span_exited{s1});
    r.expect(span_cloned{s1});
    r.expect(span_dropped{s1});
    const auto retry = r.callsite(callsite_kind::span, level::debug, "retry", {"attempt"});
    r.expect(new_span{s2, retry, P::contextual, 0, {{"attempt", std::int64_t{2}}}});
    r.expect(follows_from{s2, s1});
    const auto child = r.callsite(callsite_kind::span, level::warn, "child", {});
    r.expect(new_span{s3, child, P::explicit_span, s1, {}});
    const auto lonely = r.callsite(callsite_kind::span, level::error, "lonely", {});
    r.expect(new_span{s4, lonely, P::root, 0, {}});
    const auto explicit_parent = r.callsite(callsite_kind::event, level::warn, "", {"message", "code"});
    r.expect(new_event{explicit_parent, P::explicit_span, s3,
                       {{"message", std::string("explicit parent")}, {"code", std::int64_t{-7}}}});
    const auto rooted = r.callsite(callsite_kind::event, level::error, "", {"message"});
    r.expect(new_event{rooted, P::root, 0, {{"message", std::string("rooted")}}});

    const auto values = r.callsite(callsite_kind::event, level::info, "",
                                   {"message", "b", "i", "u", "i128min", "i128max", "u128max", "f", "s", "sv", "cstr",
                                    "nullstr", "dbg", "disp", "broken", "err", "current", "errlist", "later", "small", "byte", "fl",
                                    "plain"});
    const i128 i128_min = static_cast<i128>(static_cast<u128>(1) << 127);
    const i128 i128_max = static_cast<i128>((static_cast<u128>(1) << 127) - 1);
    r.expect(new_event{values,
                       P::contextual,
                       0,
                       {
                           {"message", std::string("values")},
                           {"b", true},
                           {"i", std::numeric_limits<std::int64_t>::min()},
                           {"u", std::numeric_limits<std::uint64_t>::max()},
                           {"i128min", i128_min},
                           {"i128max", i128_max},
                           {"u128max", ~static_cast<u128>(0)},
                           {"f", 2.5},
                           {"s", std::string("text")},
                           {"sv", std::string("view")},
                           {"cstr", std::string("literal")},
                           // "nullstr" (a null C string) and "later" (tt::empty) carry no value.
                           {"dbg", debug_text{"point(1, 2)"}},
                           {"disp", debug_text{"shown"}},
                           {"broken", debug_text{"<unformattable>"}},
                           {"err", error_chain{{"cannot save order", "disk full"}}},
                           {"current", error_chain{{"cannot save order", "disk full"}}},
                           {"errlist", error_chain{{"timeout", "connection reset"}}},
                           {"small", std::int64_t{-3}},
                           {"byte", std::uint64_t{200}},
                           {"fl", 0.5},
                           {"plain", std::int64_t{7}},
                       }});
    // release() and adopt() emit nothing; the adopted handle records by name.
    r.expect(values_recorded{s2, {{"attempt", std::int64_t{3}}}});
    r.expect(span_dropped{s2});
    r.expect(span_dropped{s4});
    r.expect(span_dropped{s3});
    r.expect(span_dropped{s1});
    r.expect_end();
}


TEST_CASE("start registers every call site before any hit, and nothing above the static max level")
{
    started p("cpp_scenario");
    CHECK(p.host.errors().empty());
    // One NEW_CALLSITE per call site compiled into the plugin, with its own id.
    CHECK(p.at_start.size() == SCENARIO_SITES);
    CHECK(p.sites.size() == SCENARIO_SITES);
    for (const auto& [id, cs] : p.sites) {
        CAPTURE(cs.name);
        CHECK(id == tt::test::runtime_hash(cs));
        CHECK(cs.target == "cpp_scenario");
        CHECK((cs.file.ends_with("/scenario.cpp") || cs.file.ends_with("/scenario_shared.hpp")));
        CHECK(p.host.hits(id) == 1);  // the registration, no hit yet
        // Compiled out (TRACE above TT_STATIC_MAX_LEVEL DEBUG), never
        // instantiated, or a field table of tt::fields<...>: not call sites.
        CHECK(cs.level != level::trace);
        for (const char* absent : {"compiled_out", "never_instantiated"})
            CHECK(std::find(cs.fields.begin(), cs.fields.end(), absent) == cs.fields.end());
        CHECK_FALSE((cs.kind == callsite_kind::span && cs.fields == std::vector<std::string>{"attempt"} &&
                     cs.name.empty()));
    }

    // The call site of an inline function both files of the plugin use: one
    // table entry per file, one registration.
    const callsite* shared = find_site_with_field(p.at_start, "shared");
    REQUIRE(shared != nullptr);
    CHECK(shared->file.ends_with("/scenario_shared.hpp"));

    // Hitting every call site registers nothing more: the ids the spans and
    // events carry are the ones registered at start.
    for (std::int32_t which :
         {SCENARIO_SCRIPTED, SCENARIO_NOISY, SCENARIO_WORKER, SCENARIO_IDS, SCENARIO_COMPILED_OUT, SCENARIO_SHARED})
        p.run(which);
    CHECK(p.host.hits(shared->id) == 1 + 2);  // its registration, then one event from each file
    std::set<std::uint64_t> used;
    for (const auto& e : after(p.host.events(), p.at_start.size())) {
        CHECK_MESSAGE(!std::holds_alternative<new_callsite>(e), "registered on a hit: " << describe(e));
        if (const auto* s = std::get_if<new_span>(&e))
            used.insert(s->callsite_id);
        else if (const auto* ev = std::get_if<new_event>(&e))
            used.insert(ev->callsite_id);
    }
    std::set<std::uint64_t> registered;
    for (const auto& [id, cs] : p.sites)
        registered.insert(id);
    CHECK(used == registered);
    auto& evaluations = p.plugin.get<std::int32_t()>(SCENARIO_SYMBOL_EVALUATIONS);
    CHECK(evaluations() == 100);  // the noisy event's values; nothing of the compiled-out sites
    CHECK(p.host.errors().empty());
}

TEST_CASE("the scripted scenario produces exactly the expected events")
{
    started p("cpp_scenario");
    p.run(SCENARIO_SCRIPTED);
    CHECK(p.host.errors().empty());

    stream_reader r(after(p.host.events(), p.at_start.size()), &p.sites);
    check_scripted(r, 0);

    SUBCASE("after interest changed, each call site registers again on its next hit")
    {
        const std::size_t before = p.host.events().size();
        p.plugin.lib->interest_changed();
        CHECK(p.host.events().size() == before);  // nothing registers until hit
        p.run(SCENARIO_SCRIPTED);
        CHECK(p.host.errors().empty());
        stream_reader lazy(after(p.host.events(), before));
        check_scripted(lazy, 4);
        // Only the sites that were hit registered again, once each.
        std::size_t again = 0;
        for (const auto& e : after(p.host.events(), before))
            if (const auto* nc = std::get_if<new_callsite>(&e)) {
                ++again;
                CHECK(p.sites.count(nc->site.id) == 1);
                CHECK(p.host.hits(nc->site.id) >= 2);
            }
        CHECK(again == 8);  // scripted() has 7 call sites, values_event() 1
    }
}

TEST_CASE("a call site the host is not interested in registers once and evaluates nothing")
{
    std::atomic<bool> wanted{false};
    started p("cpp_scenario", [&](const callsite& cs) -> std::uint32_t {
        const bool noisy = std::find(cs.fields.begin(), cs.fields.end(), "noisy") != cs.fields.end();
        return noisy && !wanted.load() ? TT_INTEREST_NEVER : TT_INTEREST_ALWAYS;
    });
    auto& evaluations_fn = p.plugin.get<std::int32_t()>(SCENARIO_SYMBOL_EVALUATIONS);
    const std::int32_t before = evaluations_fn();
    auto evaluations = [&] { return evaluations_fn() - before; };

    // Registered (and refused) at start, before its first hit.
    const callsite* site = find_site_with_field(p.at_start, "noisy");
    REQUIRE(site != nullptr);
    const std::uint64_t id = site->id;
    CHECK(p.host.hits(id) == 1);

    p.run(SCENARIO_NOISY);
    p.run(SCENARIO_NOISY);
    const auto events = p.host.events();
    REQUIRE(events.size() == SCENARIO_SITES);  // the registrations at start, nothing since
    CHECK(p.host.hits(id) == 1);
    CHECK(evaluations() == 0);

    SUBCASE("interest changed: it registers again on its next hit, still disabled")
    {
        p.plugin.lib->interest_changed();
        CHECK(p.host.hits(id) == 1);
        p.run(SCENARIO_NOISY);
        CHECK(p.host.hits(id) == 2);
        CHECK(evaluations() == 0);
        // Only the call site that was hit registered again.
        const auto now = p.host.events();
        REQUIRE(now.size() == SCENARIO_SITES + 1);
        const auto* again = std::get_if<new_callsite>(&now.back());
        REQUIRE(again != nullptr);
        CHECK(again->site == *site);
    }
    SUBCASE("interest changed to wanted: every hit is emitted and evaluated")
    {
        wanted = true;
        p.plugin.lib->interest_changed();
        p.run(SCENARIO_NOISY);
        CHECK(p.host.hits(id) == 2 + 100);
        CHECK(evaluations() == 100);
        const auto after = p.host.events();
        REQUIRE(after.size() == SCENARIO_SITES + 1 + 100);
        const auto* last = std::get_if<new_event>(&after.back());
        REQUIRE(last != nullptr);
        CHECK(same_event(after.back(), new_event{id, parent_mode::contextual, 0,
                                                 {{"message", std::string("noisy")}, {"noisy", std::int64_t{99}}}}));
    }
    CHECK(p.host.errors().empty());
}

TEST_CASE("call-site ids are stable across builds of one source and change with the call site")
{
    // All three loaded at once: they also must not share any sender state.
    started original("cpp_scenario");
    started twin("cpp_scenario_twin");
    started variant("cpp_scenario_variant");
    // Registered at start: the same list from the same source...
    const auto all_a = site_list(original.host);
    const auto all_b = site_list(twin.host);
    const auto all_c = site_list(variant.host);
    REQUIRE(all_a.size() == SCENARIO_SITES);
    REQUIRE(all_b.size() == SCENARIO_SITES);
    REQUIRE(all_c.size() == SCENARIO_SITES);
    CHECK(original.sites == twin.sites);
    // ...and from the variant, one call site differs.
    std::size_t differing = 0;
    for (const auto& [id, cs] : variant.sites)
        differing += original.sites.count(id) == 0;
    CHECK(differing == 1);

    original.run(SCENARIO_IDS);
    twin.run(SCENARIO_IDS);
    variant.run(SCENARIO_IDS);

    // The call sites SCENARIO_IDS hit, in order: the ids its span and events carry.
    auto hit_sites = [](const started& p) {
        std::vector<callsite> out;
        for (const auto& e : after(p.host.events(), p.at_start.size())) {
            std::uint64_t id = 0;
            if (const auto* s = std::get_if<new_span>(&e))
                id = s->callsite_id;
            else if (const auto* ev = std::get_if<new_event>(&e))
                id = ev->callsite_id;
            else
                CHECK_MESSAGE(!std::holds_alternative<new_callsite>(e), "registered on a hit: " << describe(e));
            if (id == 0)
                continue;
            const auto it = p.sites.find(id);
            REQUIRE_MESSAGE(it != p.sites.end(), "call site " << id << " was not registered at start");
            out.push_back(it->second);
        }
        return out;
    };
    const auto a = hit_sites(original);
    const auto b = hit_sites(twin);
    const auto c = hit_sites(variant);
    REQUIRE(a.size() == 3);
    REQUIRE(b.size() == 3);
    REQUIRE(c.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(a[i] == b[i]);
        CHECK(a[i].id == tt::test::runtime_hash(a[i]));
        CHECK(c[i].id == tt::test::runtime_hash(c[i]));
    }
    // The stable span and stable event are identical; the variant event differs in level only.
    CHECK(a[0].id == c[0].id);
    CHECK(a[1].id == c[1].id);
    CHECK(a[2].id != c[2].id);
    CHECK(a[2].level == level::info);
    CHECK(c[2].level == level::warn);
    CHECK(a[2].line == c[2].line);
    CHECK(a[2].fields == c[2].fields);
    // Each host saw exactly its own plugin's events: span ids 1.. in each.
    for (const auto* p : {&original, &twin, &variant}) {
        CHECK(p->host.errors().empty());
        const auto events = p->host.events();
        REQUIRE(events.size() == SCENARIO_SITES + 4);  // the call sites, new_span, 2 events, dropped
        CHECK(same_event(events[SCENARIO_SITES], new_span{1, a[0].id, parent_mode::contextual, 0, {{"k", std::int64_t{1}}}}));
    }
}

TEST_CASE("four threads emit concurrently and the host sees every event")
{
    started p("cpp_scenario");
    constexpr int threads = 4;
    constexpr int iterations = 250;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            for (int i = 0; i < iterations; ++i)
                p.run(SCENARIO_WORKER);
        });
    for (auto& t : pool)
        t.join();

    CHECK(p.host.errors().empty());
    const auto events = p.host.events();
    std::map<std::uint64_t, callsite> sites;
    std::map<std::uint64_t, std::vector<std::size_t>> per_span;  // event kind indices in order
    std::size_t others = 0;
    for (const auto& e : events) {
        if (const auto* nc = std::get_if<new_callsite>(&e)) {
            auto [it, fresh] = sites.emplace(nc->site.id, nc->site);
            if (!fresh)
                CHECK(it->second == nc->site);  // re-registrations under races carry the same data
            continue;
        }
        ++others;
        std::uint64_t span = 0;
        if (const auto* s = std::get_if<new_span>(&e))
            span = s->id;
        else if (const auto* en = std::get_if<span_entered>(&e))
            span = en->id;
        else if (const auto* ex = std::get_if<span_exited>(&e))
            span = ex->id;
        else if (const auto* d = std::get_if<span_dropped>(&e))
            span = d->id;
        if (span != 0)
            per_span[span].push_back(e.index());
    }
    // Every call site registered once, at start; none again under the race.
    CHECK(sites.size() == SCENARIO_SITES);
    CHECK(sites == p.sites);
    CHECK(events.size() == SCENARIO_SITES + others);
    CHECK(others == threads * iterations * 5);
    CHECK(per_span.size() == threads * iterations);
    const std::vector<std::size_t> lifecycle = {1, 3, 4, 6};  // new_span, entered, exited, dropped
    for (const auto& [id, kinds] : per_span)
        CHECK_MESSAGE(kinds == lifecycle, "span " << id);
}

TEST_CASE("after tt_plugin_stop nothing is emitted; a new start registers again")
{
    started p("cpp_scenario");
    p.run(SCENARIO_SCRIPTED);
    CHECK(!p.host.events().empty());
    p.plugin.lib->stop();
    p.host.clear();
    p.run(SCENARIO_SCRIPTED);
    p.run(SCENARIO_NOISY);
    p.run(SCENARIO_WORKER);
    CHECK(p.host.events().empty());
    CHECK(p.host.errors().empty());

    tt::test::recording_host second;
    const tt_host api = second.api();
    auto result = p.plugin.lib->start(api);
    REQUIRE(std::holds_alternative<std::monostate>(result));
    // The new host learnt every call site at start, before the first hit.
    auto events = second.events();
    REQUIRE(events.size() == SCENARIO_SITES);
    std::map<std::uint64_t, callsite> relearnt;
    for (const auto& e : events) {
        const auto* nc = std::get_if<new_callsite>(&e);
        REQUIRE(nc != nullptr);
        relearnt.emplace(nc->site.id, nc->site);
    }
    CHECK(relearnt == p.sites);
    p.run(SCENARIO_WORKER);
    events = second.events();
    CHECK(second.errors().empty());
    REQUIRE(events.size() == SCENARIO_SITES + 5);  // and nothing registers on the hits
    for (std::size_t i = SCENARIO_SITES; i < events.size(); ++i)
        CHECK_FALSE(std::holds_alternative<new_callsite>(events[i]));
    CHECK(p.host.events().empty());
}

TEST_CASE("save and restore state go through TT_PLUGIN_STATE")
{
    started p("cpp_scenario");
    REQUIRE(p.plugin.lib->has_state_hooks());
    std::vector<std::uint8_t> bytes;
    REQUIRE(p.plugin.lib->save_state(bytes));
    CHECK(std::string(bytes.begin(), bytes.end()) == SCENARIO_STATE);
    CHECK(p.plugin.lib->restore_state(bytes));
    const std::string junk = "junk";
    CHECK_FALSE(p.plugin.lib->restore_state(std::vector<std::uint8_t>(junk.begin(), junk.end())));
}

TEST_CASE("the plugin describes itself through TT_PLUGIN")
{
    auto plugin = tt::test::open_test_plugin("cpp_scenario");
    const auto& d = plugin.lib->description();
    CHECK(d.name == "cpp_scenario");
    CHECK(d.version == "1.0.0");
    CHECK(d.description == "scripted C++ sender scenarios");
    CHECK(d.abi_version == TT_ABI_VERSION);
    CHECK(plugin.lib->has_interest_changed());
}
