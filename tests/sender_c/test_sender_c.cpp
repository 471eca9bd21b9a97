// The C sender (trace.h) as a real .so: the c_scenario test plugin and the
// sensor example, loaded with tt::host::open_plugin and started against a
// recording host. Every check is on the model events the host decoded.
//
// tt_plugin_start registers every call site before any hit; after
// tt_plugin_interest_changed a site registers again on its next hit.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "recording_host.hpp"
#include "sender_checks.hpp"

#include <tracetunnel/host/plugin_library.hpp>

#include <elf.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace model = tt::model;
using tt::test::recording_host;

// Mirrors plugins/test/c/c_scenario.h (a C header with C names).
constexpr int scenario_script = 1;
constexpr int scenario_keep_span = 2;
constexpr int scenario_use_kept = 3;
constexpr int scenario_other_file = 4;

// The call sites c_scenario.c and c_scenario_other.c compile in: 17 + 2
// (c_scenario_other.c's TT_TRACE is below its TT_MAX_LEVEL).
constexpr std::size_t c_scenario_sites = 19;
// The sensor example's.
constexpr std::size_t sensor_sites = 5;

std::string env_path(const char* var)
{
    const char* p = std::getenv(var);
    REQUIRE_MESSAGE(p != nullptr, "environment variable " << var << " is not set by meson");
    return p;
}

std::shared_ptr<tt::host::plugin_library> open(const char* var)
{
    auto opened = tt::host::open_plugin(env_path(var));
    if (auto* err = std::get_if<tt::host::load_error>(&opened))
        FAIL(err->message());
    return std::get<std::shared_ptr<tt::host::plugin_library>>(opened);
}

void start(const tt::host::plugin_library& lib, recording_host& host)
{
    auto started = lib.start(host.api());
    if (auto* err = std::get_if<tt::host::load_error>(&started))
        FAIL(err->message());
}

template <class Fn>
Fn* export_of(const tt::host::plugin_library& lib, const char* name)
{
    Fn* fn = lib.find_export<Fn>(name);
    const bool found = fn != nullptr;
    REQUIRE_MESSAGE(found, "the plugin does not export " << name);
    return fn;
}

struct c_scenario {
    std::shared_ptr<tt::host::plugin_library> lib = open("TT_PLUGIN_c_scenario");
    void (*run)(int) = export_of<void(int)>(*lib, "c_scenario_run");
    void (*hits)(std::uint64_t) = export_of<void(std::uint64_t)>(*lib, "c_scenario_hits");
    std::uint64_t (*evaluations)() = export_of<std::uint64_t()>(*lib, "c_scenario_evaluations");
    void (*burst)(std::uint64_t, std::uint64_t) =
        export_of<void(std::uint64_t, std::uint64_t)>(*lib, "c_scenario_burst");
};


bool ends_with(const std::string& s, const std::string& tail)
{
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

model::u128 u128_of(std::uint64_t hi, std::uint64_t lo)
{
    return (static_cast<model::u128>(hi) << 64) | lo;
}

std::string describe(const model::event& ev)
{
    static const char* const kinds[] = {"new_callsite", "new_span",   "follows_from",    "span_entered", "span_exited",
                                        "span_cloned",  "span_dropped", "values_recorded", "new_event"};
    std::string out = kinds[ev.index()];
    if (auto* cs = std::get_if<model::new_callsite>(&ev))
        out += " '" + cs->site.name + "'";
    return out;
}

// The call sites a host learnt, by id.
using registry = std::map<std::uint64_t, model::callsite>;

// What a plugin's start sent: only call-site registrations, each once;
// returns them by id.
registry registered_at_start(const std::vector<model::event>& events)
{
    registry out;
    for (const auto& ev : events) {
        const auto* cs = std::get_if<model::new_callsite>(&ev);
        REQUIRE_MESSAGE(cs != nullptr, "start emitted " << describe(ev) << ", not a call site");
        CHECK_MESSAGE(out.emplace(cs->site.id, cs->site).second, "call site '" << cs->site.name << "' registered twice");
        CHECK(cs->site.id != 0);
        CHECK_MESSAGE(cs->site.id == tt::test::runtime_hash(cs->site), "call site " << cs->site.name << " sent an id that is not its hash");
    }
    return out;
}

std::vector<model::event> after(const std::vector<model::event>& events, std::size_t skip)
{
    REQUIRE(events.size() >= skip);
    return {events.begin() + static_cast<std::ptrdiff_t>(skip), events.end()};
}

// Walks a recorded stream in order: call sites are checked field by field,
// everything else must equal the expected event. Eager (`known` given): the
// call sites were registered at start and none may appear in the stream; a
// call site is the one the next span or event names. Lazy (after interest
// changed, or known == nullptr): each registers in the stream before its use.
class stream_checker {
public:
    explicit stream_checker(std::vector<model::event> events, const registry* known = nullptr)
        : events_(std::move(events)), known_(known)
    {
    }

    // A call site of this shape; returns its id.
    std::uint64_t callsite(model::callsite_kind kind, model::level level, const std::string& name,
                           const std::vector<std::string>& fields, const std::string& target = "c_scenario",
                           const std::string& file_tail = "c_scenario.c")
    {
        const model::callsite* found = nullptr;
        if (known_ == nullptr) {
            const model::event& ev = next();
            const auto* cs = std::get_if<model::new_callsite>(&ev);
            REQUIRE_MESSAGE(cs != nullptr, "event #" << pos_ - 1 << " is " << describe(ev) << ", expected call site "
                                                     << name);
            found = &cs->site;
        } else {
            REQUIRE_MESSAGE(pos_ < events_.size(), "the stream ended before call site " << name);
            const model::event& ev = events_[pos_];
            std::uint64_t id = 0;
            if (const auto* sp = std::get_if<model::new_span>(&ev))
                id = sp->callsite_id;
            else if (const auto* e = std::get_if<model::new_event>(&ev))
                id = e->callsite_id;
            REQUIRE_MESSAGE(id != 0, "event #" << pos_ << " is " << describe(ev) << ", expected a span or event of "
                                               << name);
            const auto it = known_->find(id);
            REQUIRE_MESSAGE(it != known_->end(), "call site " << name << " was not registered at start");
            found = &it->second;
        }
        const model::callsite& site = *found;
        if (kind == model::callsite_kind::span)
            CHECK(site.name == name);
        else
            CHECK(site.name.rfind("event ", 0) == 0);
        CHECK(site.kind == kind);
        CHECK(site.level == level);
        CHECK(site.fields == fields);
        CHECK(site.target == target);
        CHECK(site.module_path == target);
        CHECK(ends_with(site.file, file_tail));
        CHECK(site.line > 0);
        CHECK(site.id != 0);
        CHECK_MESSAGE(site.id == tt::test::runtime_hash(site), "call site " << name << " sent an id that is not its hash");
        if (kind == model::callsite_kind::event)
            CHECK(site.name == "event " + site.file + ":" + std::to_string(site.line));
        return site.id;
    }

    void expect(const model::event& want)
    {
        const model::event& got = next();
        CHECK_MESSAGE(model::same_event(got, want),
                      "event #" << pos_ - 1 << " is " << describe(got) << ", expected " << describe(want));
    }

    void expect_end() { CHECK_MESSAGE(pos_ == events_.size(), (events_.size() - pos_) << " events left over"); }

private:
    const model::event& next()
    {
        REQUIRE_MESSAGE(pos_ < events_.size(), "the stream ended after " << events_.size() << " events");
        const model::event& ev = events_[pos_++];
        if (known_ != nullptr)
            CHECK_MESSAGE(!std::holds_alternative<model::new_callsite>(ev),
                          "event #" << pos_ - 1 << " registers a call site on a hit: " << describe(ev));
        return ev;
    }

    std::vector<model::event> events_;
    const registry* known_;
    std::size_t pos_ = 0;
};

using model::callsite_kind;
using model::level;
using model::parent_mode;

// The whole of C_SCENARIO_SCRIPT, the host's events from `from` on, span ids
// counted from `base` + 1. With `known`, the call sites were registered before.
void check_script(const recording_host& host, std::size_t from, const registry* known, std::uint64_t base = 0)
{
    REQUIRE(host.errors().empty());
    stream_checker s(after(host.events(), from), known);
    const std::uint64_t s1 = base + 1, s2 = base + 2, s3 = base + 3, s4 = base + 4;
    const auto outer = s.callsite(callsite_kind::span, level::info, "outer", {"order", "status"});
    s.expect(model::new_span{s1, outer, parent_mode::contextual, 0, {{"order", std::uint64_t{7}}}});
    s.expect(model::span_entered{s1});
    const auto inside = s.callsite(callsite_kind::event, level::info, "inside outer", {"message", "ok"});
    s.expect(model::new_event{inside, parent_mode::contextual, 0, {{"message", std::string("inside outer")}, {"ok", true}}});
    s.expect(model::values_recorded{s1, {{"status", std::string("paid")}}});
    s.expect(model::span_exited{s1});
    s.expect(model::span_cloned{s1});
    s.expect(model::span_dropped{s1});
    const auto other = s.callsite(callsite_kind::span, level::debug, "other", {});
    s.expect(model::new_span{s2, other, parent_mode::contextual, 0, {}});
    s.expect(model::follows_from{s2, s1});
    const auto child = s.callsite(callsite_kind::span, level::info, "child", {"depth"});
    s.expect(model::new_span{s3, child, parent_mode::explicit_span, s1, {{"depth", std::int64_t{-1}}}});
    const auto detached = s.callsite(callsite_kind::span, level::warn, "detached", {});
    s.expect(model::new_span{s4, detached, parent_mode::root, 0, {}});
    const auto in_child = s.callsite(callsite_kind::event, level::info, "in child", {"message"});
    s.expect(model::new_event{in_child, parent_mode::explicit_span, s3, {{"message", std::string("in child")}}});
    const auto at_root = s.callsite(callsite_kind::event, level::info, "at root", {"message"});
    s.expect(model::new_event{at_root, parent_mode::root, 0, {{"message", std::string("at root")}}});

    const auto all = s.callsite(callsite_kind::event, level::info, "all values",
                                {"message", "flag", "i64_min", "u64_max", "i128_min", "i128_max", "i128_minus_one",
                                 "u128_max", "f64", "f64_negative_zero", "str", "slice", "null_str", "debug",
                                 "error_msg", "error_chain", "absent"});
    const model::u128 ones = u128_of(UINT64_MAX, UINT64_MAX);
    s.expect(model::new_event{all,
                              parent_mode::contextual,
                              0,
                              {
                                  {"message", std::string("all values")},
                                  {"flag", false},
                                  {"i64_min", std::int64_t{INT64_MIN}},
                                  {"u64_max", std::uint64_t{UINT64_MAX}},
                                  {"i128_min", static_cast<model::i128>(u128_of(0x8000000000000000ull, 0))},
                                  {"i128_max", static_cast<model::i128>(ones >> 1)},
                                  {"i128_minus_one", model::i128{-1}},
                                  {"u128_max", ones},
                                  {"f64", 2.5},
                                  {"f64_negative_zero", -0.0},
                                  {"str", std::string("gr\xc3\xbc\xc3\x9f" "e")},
                                  {"slice", std::string("abc")},
                                  {"null_str", std::string()},
                                  {"debug", model::debug_text{"Point { x: 1, y: 2 }"}},
                                  {"error_msg", model::error_chain{{"just this"}}},
                                  {"error_chain", model::error_chain{{"outer error", "inner cause"}}},
                              }});

    std::vector<std::string> wide_fields{"message"};
    model::field_values wide_values{{"message", std::string("wide")}};
    for (std::uint64_t i = 0; i < 32; ++i) {
        wide_fields.push_back("f" + std::to_string(i));
        wide_values.emplace_back(wide_fields.back(), i);
    }
    const auto wide = s.callsite(callsite_kind::event, level::info, "wide", wide_fields);
    s.expect(model::new_event{wide, parent_mode::contextual, 0, wide_values});

    const auto failed = s.callsite(callsite_kind::event, level::error, "failed", {"message", "error"});
    s.expect(model::new_event{
        failed,
        parent_mode::contextual,
        0,
        {{"message", std::string("failed")},
         {"error", model::error_chain{{"request failed", "connection reset", "peer closed"}}}}});
    s.expect(model::span_dropped{s4});
    s.expect(model::span_dropped{s3});
    s.expect(model::span_dropped{s2});
    s.expect(model::span_dropped{s1});
    s.expect_end();
}

// Interest answered per call site, chosen by a field name the site declares.
std::uint32_t by_field(const model::callsite& cs)
{
    const auto has = [&](const char* f) { return std::find(cs.fields.begin(), cs.fields.end(), f) != cs.fields.end(); };
    if (has("quiet"))
        return TT_INTEREST_NEVER;
    if (has("maybe"))
        return TT_INTEREST_SOMETIMES;
    return TT_INTEREST_ALWAYS;
}

std::uint64_t site_id_with_field(const recording_host& host, const char* field)
{
    for (const auto& ev : host.events())
        if (auto* cs = std::get_if<model::new_callsite>(&ev))
            if (std::find(cs->site.fields.begin(), cs->site.fields.end(), field) != cs->site.fields.end())
                return cs->site.id;
    FAIL("no call site with field " << field);
    return 0;
}

std::size_t count_events_of(const recording_host& host, std::uint64_t callsite_id)
{
    std::size_t n = 0;
    for (const auto& ev : host.events())
        if (auto* e = std::get_if<model::new_event>(&ev))
            n += e->callsite_id == callsite_id;
    return n;
}

}  // namespace

TEST_CASE("the C test plugin loads and exports its entry points and nothing of the sender")
{
    c_scenario p;
    CHECK(p.lib->description().name == "c_scenario");
    CHECK(p.lib->description().version == "0.1.0");
    CHECK(p.lib->description().abi_version == TT_ABI_VERSION);
    CHECK(p.lib->has_interest_changed());
    CHECK_FALSE(p.lib->has_state_hooks());
    for (const auto& sym : p.lib->exports())
        CHECK_MESSAGE((sym.rfind("tt_plugin_", 0) == 0 || sym.rfind("c_scenario_", 0) == 0 || sym.rfind("_", 0) == 0),
                      "unexpected export " << sym);
}

TEST_CASE("start registers every call site before any hit, and none below the level floor")
{
    c_scenario p;
    recording_host host;
    start(*p.lib, host);
    REQUIRE(host.errors().empty());
    const auto at_start = host.events();
    const registry sites = registered_at_start(at_start);
    CHECK(at_start.size() == c_scenario_sites);
    CHECK(sites.size() == c_scenario_sites);
    std::set<std::string> files;
    for (const auto& [id, cs] : sites) {
        CAPTURE(cs.name);
        CHECK(host.hits(id) == 1);  // the registration; nothing was hit yet
        CHECK(cs.level != level::trace);
        CHECK(std::find(cs.fields.begin(), cs.fields.end(), "never") == cs.fields.end());
        files.insert(cs.file.substr(cs.file.rfind('/') + 1));
    }
    // Both .c files of the plugin, through the one section.
    CHECK(files == std::set<std::string>{"c_scenario.c", "c_scenario_other.c"});

    // Every call site hit afterwards is one of those, and none registers again.
    p.run(scenario_keep_span);
    p.run(scenario_script);
    p.run(scenario_use_kept);
    p.run(scenario_other_file);
    p.hits(3);
    p.burst(0, 2);
    p.lib->stop();  // stop's own event
    std::set<std::uint64_t> used;
    for (const auto& ev : after(host.events(), at_start.size())) {
        CHECK_MESSAGE(!std::holds_alternative<model::new_callsite>(ev), "registered on a hit: " << describe(ev));
        if (const auto* sp = std::get_if<model::new_span>(&ev))
            used.insert(sp->callsite_id);
        else if (const auto* e = std::get_if<model::new_event>(&ev))
            used.insert(e->callsite_id);
    }
    std::set<std::uint64_t> all;
    for (const auto& [id, cs] : sites)
        all.insert(id);
    CHECK(used == all);
    CHECK(host.errors().empty());
}

TEST_CASE("the C plugin's table of call sites: one pointer per call site, nothing else")
{
    // Both files' call sites, plus a NULL entry for c_scenario_other.c's
    // TT_TRACE below its TT_MAX_LEVEL; no padding, sanitizers included.
    CHECK(tt::test::section_size(env_path("TT_PLUGIN_c_scenario"), "tt_c_sites") == (c_scenario_sites + 1) * sizeof(void*));
    if (std::getenv("TT_PLUGIN_sensor") != nullptr)
        CHECK(tt::test::section_size(env_path("TT_PLUGIN_sensor"), "tt_c_sites") == sensor_sites * sizeof(void*));
}

TEST_CASE("a scripted scenario produces exactly the expected events")
{
    c_scenario p;
    recording_host host;
    start(*p.lib, host);
    const std::size_t registrations = host.events().size();
    const registry sites = registered_at_start(host.events());
    CHECK(registrations == c_scenario_sites);
    p.run(scenario_script);
    check_script(host, registrations, &sites);

    SUBCASE("call sites register once: a second run sends no new call site")
    {
        host.clear();
        p.run(scenario_script);
        for (const auto& ev : host.events())
            CHECK_FALSE(std::holds_alternative<model::new_callsite>(ev));
        CHECK(host.errors().empty());
    }
    SUBCASE("after interest changed, each call site registers again on its next hit")
    {
        const std::size_t before = host.events().size();
        p.lib->interest_changed();
        CHECK(host.events().size() == before);  // nothing registers until hit
        p.run(scenario_script);
        check_script(host, before, nullptr, 4);  // the lazy stream: each site right before its first use
        for (const auto& ev : after(host.events(), before))
            if (const auto* cs = std::get_if<model::new_callsite>(&ev)) {
                CHECK(sites.count(cs->site.id) == 1);
                CHECK(host.hits(cs->site.id) >= 2);
            }
    }
    p.lib->stop();
}

TEST_CASE("a second .c file shares the plugin's host binding; its level floor compiles TRACE away")
{
    c_scenario p;
    recording_host host;
    start(*p.lib, host);
    const std::size_t registrations = host.events().size();
    const registry sites = registered_at_start(host.events());
    p.run(scenario_other_file);
    REQUIRE(host.errors().empty());
    stream_checker s(after(host.events(), registrations), &sites);
    const auto span = s.callsite(callsite_kind::span, level::debug, "other_file_span", {}, "c_scenario::other",
                                 "c_scenario_other.c");
    s.expect(model::new_span{1, span, parent_mode::contextual, 0, {}});
    s.expect(model::span_entered{1});
    const auto ev = s.callsite(callsite_kind::event, level::debug, "from the other file", {"message", "file"},
                               "c_scenario::other", "c_scenario_other.c");
    s.expect(model::new_event{ev, parent_mode::contextual, 0,
                              {{"message", std::string("from the other file")}, {"file", std::string("c_scenario_other.c")}}});
    s.expect(model::span_exited{1});
    s.expect(model::span_dropped{1});
    s.expect_end();
    // The TT_TRACE below the file's TT_MAX_LEVEL: neither registered nor sent.
    std::size_t from_other_file = 0;
    for (const auto& [id, cs] : sites)
        from_other_file += ends_with(cs.file, "c_scenario_other.c");
    CHECK(from_other_file == 2);
    p.lib->stop();
}

TEST_CASE("a call site answered NEVER registers once, is silent, and registers again after interest changes")
{
    c_scenario p;
    recording_host host(by_field);
    start(*p.lib, host);
    const std::uint64_t evaluated_before = p.evaluations();
    const std::uint64_t quiet = site_id_with_field(host, "quiet");
    const std::uint64_t maybe = site_id_with_field(host, "maybe");
    CHECK(host.hits(quiet) == 1);  // registered at start, before the first hit
    CHECK(host.hits(maybe) == 1);

    p.hits(100);
    REQUIRE(host.errors().empty());
    CHECK(host.hits(quiet) == 1);                      // the registration, nothing else
    CHECK(p.evaluations() == evaluated_before);        // its arguments were never evaluated
    CHECK(host.hits(maybe) == 101);                    // SOMETIMES: the plugin sends, the host decides
    CHECK(count_events_of(host, maybe) == 100);

    p.lib->interest_changed();
    CHECK(host.hits(quiet) == 1);  // nothing registers until hit
    p.hits(100);
    CHECK(host.hits(quiet) == 2);  // registered again, still NEVER
    CHECK(host.hits(maybe) == 202);
    CHECK(p.evaluations() == evaluated_before);
    CHECK(host.errors().empty());
    p.lib->stop();
}

TEST_CASE("after tt_plugin_stop nothing is emitted; a restart registers every call site again")
{
    c_scenario p;
    recording_host first;
    start(*p.lib, first);
    const registry sites = registered_at_start(first.events());
    p.run(scenario_keep_span);
    p.run(scenario_script);  // caches ALWAYS in every call site of the script
    const std::size_t before_stop = first.events().size();

    p.lib->stop();
    auto events = first.events();
    REQUIRE(events.size() == before_stop + 1);  // stop's own event; its call site registered at start
    const auto* last = std::get_if<model::new_event>(&events.back());
    REQUIRE(last != nullptr);
    CHECK(last->values == model::field_values{{"message", std::string("c_scenario stopping")}});
    CHECK(sites.count(last->callsite_id) == 1);

    const std::uint64_t evaluated = p.evaluations();
    p.run(scenario_script);
    p.run(scenario_use_kept);  // enter, record, exit, clone, follows_from, drop on a live handle
    p.run(scenario_other_file);
    p.hits(10);
    p.burst(0, 10);
    CHECK(first.events().size() == before_stop + 1);
    CHECK(p.evaluations() == evaluated);  // and no argument was evaluated
    CHECK(first.errors().empty());

    recording_host second;
    start(*p.lib, second);
    const std::size_t registrations = second.events().size();
    const registry again = registered_at_start(second.events());
    CHECK(again == sites);  // the new host learnt every call site from scratch, at start
    p.run(scenario_script);
    check_script(second, registrations, &again);
    p.lib->stop();
}

TEST_CASE("4 threads emitting at once: every event arrives, no error")
{
    c_scenario p;
    recording_host host;
    start(*p.lib, host);
    constexpr std::uint64_t workers = 4;
    constexpr std::uint64_t per_worker = 2000;
    std::vector<std::thread> threads;
    for (std::uint64_t w = 0; w < workers; ++w)
        threads.emplace_back([&, w] { p.burst(w, per_worker); });
    for (auto& t : threads)
        t.join();
    p.lib->stop();

    CHECK(host.errors().empty());
    std::map<std::uint64_t, std::set<std::uint64_t>> seen;
    std::size_t spans = 0, entered = 0, exited = 0, dropped = 0, ticks = 0;
    for (const auto& ev : host.events()) {
        if (auto* e = std::get_if<model::new_event>(&ev)) {
            if (e->values.size() != 3)
                continue;  // stop's own event
            REQUIRE(e->values[1].first == "worker");
            REQUIRE(e->values[2].first == "seq");
            const auto worker = std::get<std::uint64_t>(e->values[1].second);
            const auto seq = std::get<std::uint64_t>(e->values[2].second);
            CHECK(seen[worker].insert(seq).second);
            ++ticks;
        }
        spans += std::holds_alternative<model::new_span>(ev);
        entered += std::holds_alternative<model::span_entered>(ev);
        exited += std::holds_alternative<model::span_exited>(ev);
        dropped += std::holds_alternative<model::span_dropped>(ev);
    }
    CHECK(ticks == workers * per_worker);
    CHECK(seen.size() == workers);
    for (const auto& [worker, seqs] : seen) {
        CHECK(seqs.size() == per_worker);
        CHECK(*seqs.rbegin() == per_worker - 1);
    }
    CHECK(spans == workers);
    CHECK(entered == workers);
    CHECK(exited == workers);
    CHECK(dropped == workers);
}

TEST_CASE("the sensor example: one tick is a sampling span with its readings and warnings")
{
    if (std::getenv("TT_PLUGIN_sensor") == nullptr) {
        MESSAGE("examples are disabled: sensor not built");
        return;
    }
    auto lib = open("TT_PLUGIN_sensor");
    CHECK(lib->description().name == "sensor");
    CHECK(lib->has_state_hooks());
    auto tick = export_of<void(std::uint64_t)>(*lib, "example_tick");

    recording_host host;
    start(*lib, host);
    tick(5);  // readings 27.5, 31.0 and 34.5 against a threshold of 30.0
    lib->stop();
    REQUIRE(host.errors().empty());

    // Every call site registered in tt_plugin_start, before the sensor's own
    // start function emitted "sensor started".
    const auto all = host.events();
    std::size_t registrations = 0;
    while (registrations < all.size() && std::holds_alternative<model::new_callsite>(all[registrations]))
        ++registrations;
    CHECK(registrations == sensor_sites);
    const registry sites = registered_at_start({all.begin(), all.begin() + static_cast<std::ptrdiff_t>(registrations)});
    stream_checker s(after(all, registrations), &sites);
    const auto started = s.callsite(callsite_kind::event, level::info, "sensor started",
                                    {"message", "sensors", "threshold", "ticks_seen"}, "sensor", "sensor.c");
    s.expect(model::new_event{started,
                              parent_mode::contextual,
                              0,
                              {{"message", std::string("sensor started")},
                               {"sensors", std::uint64_t{3}},
                               {"threshold", 30.0},
                               {"ticks_seen", std::uint64_t{0}}}});
    const auto sampling =
        s.callsite(callsite_kind::span, level::info, "sampling", {"tick", "max_celsius"}, "sensor", "sensor.c");
    s.expect(model::new_span{1, sampling, parent_mode::contextual, 0, {{"tick", std::uint64_t{5}}}});
    s.expect(model::span_entered{1});
    const double readings[] = {27.5, 31.0, 34.5};
    std::uint64_t reading_site = 0, warn_site = 0;
    for (std::uint64_t i = 0; i < 3; ++i) {
        if (i == 0)
            reading_site = s.callsite(callsite_kind::event, level::info, "reading taken",
                                      {"message", "sensor", "celsius", "unit"}, "sensor", "sensor.c");
        s.expect(model::new_event{reading_site,
                                  parent_mode::contextual,
                                  0,
                                  {{"message", std::string("reading taken")},
                                   {"sensor", i},
                                   {"celsius", readings[i]},
                                   {"unit", std::string("C")}}});
        if (readings[i] > 30.0) {
            if (warn_site == 0)
                warn_site = s.callsite(callsite_kind::event, level::warn, "reading above threshold",
                                       {"message", "sensor", "celsius", "threshold"}, "sensor", "sensor.c");
            s.expect(model::new_event{warn_site,
                                      parent_mode::contextual,
                                      0,
                                      {{"message", std::string("reading above threshold")},
                                       {"sensor", i},
                                       {"celsius", readings[i]},
                                       {"threshold", 30.0}}});
        }
    }
    s.expect(model::values_recorded{1, {{"max_celsius", 34.5}}});
    s.expect(model::span_exited{1});
    s.expect(model::span_dropped{1});
    const auto stopping =
        s.callsite(callsite_kind::event, level::info, "sensor stopping", {"message", "ticks_seen"}, "sensor", "sensor.c");
    s.expect(model::new_event{stopping, parent_mode::contextual, 0,
                              {{"message", std::string("sensor stopping")}, {"ticks_seen", std::uint64_t{1}}}});
    s.expect_end();

    // Its own state (the tick counter) survives a reload through save/restore.
    std::vector<std::uint8_t> saved;
    REQUIRE(lib->save_state(saved));
    CHECK(saved == std::vector<std::uint8_t>{1, 0, 0, 0, 0, 0, 0, 0});
    CHECK(lib->restore_state({9, 0, 0, 0, 0, 0, 0, 0}));
    CHECK_FALSE(lib->restore_state({1, 2, 3}));
    recording_host again;
    start(*lib, again);
    lib->stop();
    const auto evs = again.events();
    REQUIRE(evs.size() >= sensor_sites + 2);
    const auto* first = std::get_if<model::new_event>(&evs[sensor_sites]);
    REQUIRE(first != nullptr);
    CHECK(model::same_value(first->values.back().second, std::uint64_t{9}));
}
