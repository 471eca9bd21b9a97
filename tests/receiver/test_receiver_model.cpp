// Model-based randomized test: seeded random event sequences go to the
// receiver and to a small reference model written here; after every step the
// receiver's span table must equal the model's. Invalid events are mixed in:
// each must be refused with the error the model predicts, changing nothing.
// Persist/restore (reload and restart) and crashes (no persist: rollback)
// happen at random points.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "receiver_support.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>

using namespace tt;
using namespace tt::test;
using host::receive_errc;

namespace {

struct ref_span {
    std::uint64_t callsite = 0;
    std::uint64_t parent = 0;
    model::field_values values;
    std::uint64_t refs = 1;
    std::vector<std::uint64_t> follows_from;
    host::clock::time_point start;
};

// What the receiver should hold. Copyable: a copy is a commit.
struct ref_model {
    std::map<std::uint64_t, ref_span> spans;
    std::set<std::uint64_t> sites;  // registered call-site ids
    std::uint64_t next_id = 1;
    // pipeline side (this thread): entered counts and the entered stack
    std::map<std::uint64_t, std::uint32_t> entered;
    std::vector<std::uint64_t> stack;
    std::set<std::uint64_t> closed;  // ids that lived and died

    std::uint64_t current() const { return stack.empty() ? 0 : stack.back(); }
    void pop_top(std::uint64_t id)
    {
        for (auto it = stack.rbegin(); it != stack.rend(); ++it)
            if (*it == id) {
                stack.erase(std::next(it).base());
                return;
            }
    }
    void forget_pipeline()
    {
        entered.clear();
        stack.clear();
    }
};

void merge(model::field_values& into, const model::field_values& add)
{
    for (const auto& [name, v] : add) {
        auto it = std::find_if(into.begin(), into.end(), [&](const auto& p) { return p.first == name; });
        if (it != into.end())
            it->second = v;
        else
            into.emplace_back(name, v);
    }
}

void require_same(const host::persisted_spans& got, const ref_model& m)
{
    REQUIRE_MESSAGE(got.next_id == m.next_id, describe(got));
    REQUIRE_MESSAGE(got.spans.size() == m.spans.size(), describe(got));
    auto it = m.spans.begin();
    for (const auto& s : got.spans) {
        REQUIRE(s.id == it->first);
        const auto& r = it->second;
        CHECK(s.callsite_id == r.callsite);
        CHECK(s.parent_id == r.parent);
        CHECK(s.ref_count == r.refs);
        CHECK(s.follows_from == r.follows_from);
        const model::field_values values = s.values.to_fields();
        REQUIRE(values.size() == r.values.size());
        for (std::size_t i = 0; i < values.size(); ++i) {
            CHECK(values[i].first == r.values[i].first);
            CHECK(model::same_value(values[i].second, r.values[i].second));
        }
        ++it;
    }
}

struct world {
    std::mt19937_64 rng;
    std::deque<abi_site> sites;  // stable addresses
    std::vector<std::string> strings;

    explicit world(std::uint64_t seed) : rng(seed)
    {
        sites.emplace_back(TT_CALLSITE_SPAN, TT_LEVEL_INFO, "alpha", std::vector<std::string>{"a", "b", "c"});
        sites.emplace_back(TT_CALLSITE_SPAN, TT_LEVEL_DEBUG, "beta", std::vector<std::string>{"x"});
        sites.emplace_back(TT_CALLSITE_SPAN, TT_LEVEL_TRACE, "gamma", std::vector<std::string>{});
        sites.emplace_back(TT_CALLSITE_SPAN, TT_LEVEL_WARN, "delta", std::vector<std::string>{"http.status", "msg"});
        sites.emplace_back(TT_CALLSITE_EVENT, TT_LEVEL_INFO, "ev1", std::vector<std::string>{"message", "n"});
        sites.emplace_back(TT_CALLSITE_EVENT, TT_LEVEL_ERROR, "ev2", std::vector<std::string>{"message"});
        strings = {"", "plain", "ünïcødé ✓", "line\nbreak", "\"quoted\"", std::string(40, 'z')};
    }
    std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : rng() % n; }
    bool chance(int percent) { return below(100) < static_cast<std::uint64_t>(percent); }

    // Random values for `site`; `values` gets the ABI form, `owned` the model form.
    void values_for(const abi_site& site, std::vector<tt_field_value>& values, model::field_values& owned)
    {
        const auto n = site.get().field_count;
        if (n == 0)
            return;
        const auto count = below(4);
        for (std::uint64_t k = 0; k < count; ++k) {
            const auto field = static_cast<std::uint32_t>(below(n));
            const std::string name(site.get().field_names[field].ptr, site.get().field_names[field].len);
            switch (below(5)) {
            case 0: {
                const bool b = chance(50);
                values.push_back(fv_bool(field, b));
                owned.emplace_back(name, model::value(b));
                break;
            }
            case 1: {
                const auto v = static_cast<std::int64_t>(rng());
                values.push_back(fv_i64(field, v));
                owned.emplace_back(name, model::value(v));
                break;
            }
            case 2: {
                const auto v = rng();
                values.push_back(fv_u64(field, v));
                owned.emplace_back(name, model::value(v));
                break;
            }
            case 3: {
                const double v = static_cast<double>(below(1000)) / 7.0;
                values.push_back(fv_f64(field, v));
                owned.emplace_back(name, model::value(v));
                break;
            }
            default: {
                const std::string& s = strings[below(strings.size())];
                values.push_back(fv_str(field, s));
                owned.emplace_back(name, model::value(s));
                break;
            }
            }
        }
    }
};

struct runner {
    world w;
    ref_model m;
    ref_model committed;
    host::receiver_state committed_state;
    std::unique_ptr<host::capture_layer> cap = std::make_unique<host::capture_layer>();
    std::shared_ptr<host::local_spans> local;
    std::unique_ptr<host::receiver> recv = std::make_unique<host::receiver>("model", *cap);
    std::uint64_t valid = 0, invalid = 0, restores = 0;

    explicit runner(std::uint64_t seed) : w(seed) { committed_state.spans.next_id = 1; }

    std::vector<std::uint64_t> live() const
    {
        std::vector<std::uint64_t> out;
        for (const auto& [id, s] : m.spans)
            out.push_back(id);
        return out;
    }
    std::uint64_t pick_live()
    {
        auto l = live();
        return l.empty() ? 0 : l[w.below(l.size())];
    }
    const abi_site* pick_site(tt_callsite_kind kind)
    {
        std::vector<const abi_site*> c;
        for (const auto& s : w.sites)
            if (s.get().kind == kind && m.sites.count(s.id()))
                c.push_back(&s);
        return c.empty() ? nullptr : c[w.below(c.size())];
    }

    void valid_step()
    {
        switch (w.below(11)) {
        case 0: {  // register a call site
            const auto& s = w.sites[w.below(w.sites.size())];
            CHECK(ok(*recv, ev_new_callsite(s.get())) == TT_INTEREST_ALWAYS);
            m.sites.insert(s.id());
            break;
        }
        case 1:
        case 2: {  // new span
            const abi_site* s = pick_site(TT_CALLSITE_SPAN);
            if (!s)
                return;
            std::vector<tt_field_value> values;
            model::field_values owned;
            w.values_for(*s, values, owned);
            tt_parent_mode mode = static_cast<tt_parent_mode>(w.below(3));
            std::uint64_t parent = 0;
            if (mode == TT_PARENT_EXPLICIT) {
                parent = pick_live();
                if (parent == 0)
                    mode = TT_PARENT_CONTEXTUAL;
            }
            const auto id = ok(*recv, ev_new_span(s->id(), values, mode, parent));
            REQUIRE(id == m.next_id);
            m.next_id = id + 1;
            ref_span r;
            r.callsite = s->id();
            r.parent = mode == TT_PARENT_EXPLICIT ? parent : mode == TT_PARENT_ROOT ? 0 : m.current();
            merge(r.values, owned);
            m.spans[id] = r;
            break;
        }
        case 3: {  // enter
            const auto id = pick_live();
            if (!id)
                return;
            ok(*recv, ev_span(TT_EVENT_SPAN_ENTERED, id));
            ++m.entered[id];
            m.stack.push_back(id);
            break;
        }
        case 4: {  // exit (a no-op when not entered here)
            std::uint64_t id = 0;
            if (!m.stack.empty() && w.chance(80))
                id = m.stack.back();
            else
                id = pick_live();
            if (!id)
                return;
            ok(*recv, ev_span(TT_EVENT_SPAN_EXITED, id));
            if (m.entered[id] > 0) {
                --m.entered[id];
                m.pop_top(id);
            }
            break;
        }
        case 5: {  // clone
            const auto id = pick_live();
            if (!id)
                return;
            ok(*recv, ev_span(TT_EVENT_SPAN_CLONED, id));
            ++m.spans[id].refs;
            break;
        }
        case 6:
        case 7: {  // drop
            const auto id = pick_live();
            if (!id)
                return;
            ok(*recv, ev_span(TT_EVENT_SPAN_DROPPED, id));
            if (--m.spans[id].refs == 0) {
                m.spans.erase(id);
                m.closed.insert(id);
                for (std::uint32_t k = m.entered[id]; k > 0; --k)
                    m.pop_top(id);
                m.entered.erase(id);
            }
            break;
        }
        case 8: {  // record
            const auto id = pick_live();
            if (!id)
                return;
            const abi_site* s = nullptr;
            for (const auto& site : w.sites)
                if (site.id() == m.spans[id].callsite)
                    s = &site;
            REQUIRE(s != nullptr);
            std::vector<tt_field_value> values;
            model::field_values owned;
            w.values_for(*s, values, owned);
            ok(*recv, ev_record(id, values));
            merge(m.spans[id].values, owned);
            break;
        }
        case 9: {  // follows from: a live, a closed, or an unheard-of cause
            const auto id = pick_live();
            if (!id)
                return;
            std::uint64_t cause = 0;
            const auto roll = w.below(3);
            if (roll == 0 || m.closed.empty())
                cause = pick_live();
            else if (roll == 1)
                cause = *std::next(m.closed.begin(), static_cast<std::ptrdiff_t>(w.below(m.closed.size())));
            else
                cause = 1'000'000 + w.below(100);
            ok(*recv, ev_span(TT_EVENT_FOLLOWS_FROM, id, cause));
            auto& ff = m.spans[id].follows_from;
            if (std::find(ff.begin(), ff.end(), cause) == ff.end())
                ff.push_back(cause);
            break;
        }
        default: {  // event
            const abi_site* s = pick_site(TT_CALLSITE_EVENT);
            if (!s)
                return;
            std::vector<tt_field_value> values;
            model::field_values owned;
            w.values_for(*s, values, owned);
            tt_parent_mode mode = static_cast<tt_parent_mode>(w.below(3));
            std::uint64_t parent = mode == TT_PARENT_EXPLICIT ? pick_live() : 0;
            if (mode == TT_PARENT_EXPLICIT && parent == 0)
                mode = TT_PARENT_ROOT;
            CHECK(ok(*recv, ev_new_event(s->id(), values, mode, parent)) == TT_STATUS_OK);
            break;
        }
        }
        ++valid;
    }

    // A random invalid event and the error the model predicts.
    void invalid_step()
    {
        std::uint64_t dead = 0;
        do {
            dead = w.below(3) == 0 && !m.closed.empty()
                       ? *std::next(m.closed.begin(), static_cast<std::ptrdiff_t>(w.below(m.closed.size())))
                       : 500'000 + w.below(1000);
        } while (m.spans.count(dead));
        const abi_site* span_site = pick_site(TT_CALLSITE_SPAN);
        const abi_site* event_site = pick_site(TT_CALLSITE_EVENT);
        const auto live_id = pick_live();
        std::vector<tt_field_value> values;
        tt_event ev{};
        receive_errc want = receive_errc::malformed;
        static const std::string bad = "x\xff";
        tt_callsite conflict{};
        std::string conflict_name = "changed";
        switch (w.below(10)) {
        case 0: {
            const tt_event_kind kinds[] = {TT_EVENT_SPAN_ENTERED, TT_EVENT_SPAN_EXITED, TT_EVENT_SPAN_CLONED,
                                           TT_EVENT_SPAN_DROPPED, TT_EVENT_FOLLOWS_FROM};
            ev = ev_span(kinds[w.below(5)], dead, live_id ? live_id : 1);
            want = receive_errc::unknown_span;
            break;
        }
        case 1:
            ev = ev_new_span(span_site ? span_site->id() : 1, {}, TT_PARENT_EXPLICIT, dead);
            want = span_site ? receive_errc::unknown_span : receive_errc::unknown_callsite;
            break;
        case 2:
            ev = w.chance(50) ? ev_new_span(77) : ev_new_event(77);
            want = receive_errc::unknown_callsite;
            break;
        case 3:
            if (!span_site || !event_site)
                return;
            ev = w.chance(50) ? ev_new_span(event_site->id()) : ev_new_event(span_site->id());
            want = receive_errc::wrong_callsite_kind;
            break;
        case 4:
            if (!span_site)
                return;
            values.push_back(fv_i64(span_site->get().field_count + static_cast<std::uint32_t>(w.below(3)), 1));
            ev = ev_new_span(span_site->id(), values);
            want = receive_errc::unknown_field;
            break;
        case 5:
            if (!live_id)
                return;
            for (int i = 0; i < 33; ++i)
                values.push_back(fv_i64(0, i));
            ev = ev_record(live_id, values);
            want = receive_errc::too_many_values;
            break;
        case 6:
            if (!event_site)
                return;
            values.push_back(fv_str(0, bad));
            ev = ev_new_event(event_site->id(), values);
            want = receive_errc::invalid_utf8;
            break;
        case 7:
            ev = ev_span(TT_EVENT_SPAN_ENTERED, live_id);
            ev.struct_size = static_cast<std::uint32_t>(w.below(sizeof(tt_event)));
            want = receive_errc::malformed;
            break;
        case 8:
            ev = ev_span(static_cast<tt_event_kind>(10 + w.below(100)), live_id);
            want = receive_errc::unknown_event_kind;
            break;
        default: {
            if (m.sites.empty())
                return;
            for (const auto& s : w.sites)
                if (m.sites.count(s.id()))
                    conflict = s.get();
            conflict.name = str_of(conflict_name);
            ev = ev_new_callsite(conflict);
            want = receive_errc::callsite_conflict;
            break;
        }
        }
        const auto before = recv->snapshot();
        auto res = recv->try_receive(ev);
        REQUIRE_FALSE(res.has_value());
        CHECK(res.error().code == want);
        CHECK(recv->snapshot() == before);
        ++invalid;
    }

    void restore_step()
    {
        ++restores;
        const auto action = w.below(4);
        const bool crash = action >= 2;
        const bool restart = action % 2 == 1;
        if (!crash) {
            committed_state = state_of(*recv);
            committed = m;
            for (auto& s : committed_state.spans.spans)
                committed.spans[s.id].start = s.start;
        }
        local = recv->local();
        const bool rolls_back = !recv->committed();
        recv.reset();  // a crash rolls back here, unless nothing changed since the commit
        if (crash) {
            const auto stack = m.stack;
            const auto entered = m.entered;
            m = committed;
            m.stack = stack;
            m.entered = entered;
            if (rolls_back)
                m.forget_pipeline();  // everything entered was force-exited
        }
        if (restart) {
            local.reset();  // the old host is gone
            cap = std::make_unique<host::capture_layer>();
            m.forget_pipeline();
        }
        recv = std::make_unique<host::receiver>("model", *cap, committed_state, host::quotas{}, local);
        local.reset();
        REQUIRE(recv->snapshot() == committed_state.spans);
        for (const auto& cs : recv->persist_metadata())
            CHECK(m.sites.count(cs.id) == 1);
    }

    void run(int steps)
    {
        for (int i = 0; i < steps; ++i) {
            const auto roll = w.below(100);
            if (roll < 3)
                restore_step();
            else if (roll < 20)
                invalid_step();
            else
                valid_step();
            require_same(recv->snapshot(), m);
        }
        recv.reset();
        local.reset();
        CHECK(cap->anomalies().empty());
        CHECK(cap->open_spans() == 0);
    }
};

}  // namespace

TEST_CASE("random sequences agree with the reference model")
{
    std::uint64_t valid = 0, invalid = 0, restores = 0;
    for (std::uint64_t seed = 1; seed <= 2000; ++seed) {
        CAPTURE(seed);
        runner r(seed);
        r.run(70);
        valid += r.valid;
        invalid += r.invalid;
        restores += r.restores;
    }
    MESSAGE("valid steps " << valid << ", invalid " << invalid << ", restores " << restores);
    CHECK(valid > 50'000);
    CHECK(invalid > 10'000);
    CHECK(restores > 2'000);
}
