// Fuzz target: the receiver (host/receiver.hpp) fed arbitrary sequences of
// ABI events, as a hostile or broken plugin could send them: any kinds, ids,
// counts, parent modes, struct sizes, value kinds and bytes in every string,
// call sites built from the input, plus commits, reloads (a new receiver on
// the committed state and the same local spans) and restarts (a new
// receiver on the committed state alone).
//
// Invariants: no crash; a refused event changes nothing (snapshot equal);
// the counters agree with the tables; the pipeline contract holds
// (checking_subscriber); after the last receiver is gone (rolled back) no
// pipeline span is left open.
#include "fuzz_check.hpp"
#include "null_subscriber.hpp"

#include <tracetunnel/host/receiver.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace tt;

namespace {

// Reads the input front to back; past the end everything is zero.
class reader {
public:
    reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
    bool done() const { return i_ >= n_; }
    std::uint8_t byte() { return i_ < n_ ? p_[i_++] : 0; }
    template <class T>
    T raw()
    {
        T v{};
        unsigned char b[sizeof(T)] = {};
        for (auto& c : b)
            c = byte();
        std::memcpy(&v, b, sizeof v);
        return v;
    }
    // A string of 0..max bytes, any bytes (invalid UTF-8 included).
    std::string bytes(std::size_t max)
    {
        const std::size_t len = std::min<std::size_t>(byte() % (max + 1), n_ - std::min(i_, n_));
        std::string s(reinterpret_cast<const char*>(p_ + std::min(i_, n_)), len);
        i_ += len;
        return s;
    }

private:
    const std::uint8_t* p_;
    std::size_t n_;
    std::size_t i_ = 0;
};

// A call site built from input bytes; owns the strings its tt_callsite points to.
struct site_store {
    std::string name, target, module_path, file;
    std::vector<std::string> fields;
    std::vector<tt_str> field_strs;
    tt_callsite cs{};
};

tt_str str_of(const std::string& s) { return tt_str{s.data(), s.size()}; }

std::unique_ptr<site_store> make_site(reader& in)
{
    auto s = std::make_unique<site_store>();
    const std::uint8_t shape = in.byte();
    s->name = in.bytes(12);
    s->target = in.bytes(12);
    s->module_path = in.bytes(4);
    s->file = in.bytes(4);
    const std::size_t nfields = in.byte() % 5;
    for (std::size_t i = 0; i < nfields; ++i)
        s->fields.push_back((shape & 0x40) ? in.bytes(8) : std::string(1, static_cast<char>('a' + i)));
    for (const auto& f : s->fields)
        s->field_strs.push_back(str_of(f));
    auto& cs = s->cs;
    cs.struct_size = (shape & 0x80) ? in.byte() : sizeof(tt_callsite);
    cs.kind = (shape & 0x20) ? in.raw<std::uint32_t>() : 1 + (shape & 1);
    cs.level = (shape & 0x10) ? in.raw<std::uint32_t>() : 1 + (shape >> 1) % 5;
    cs.line = in.byte();
    cs.name = str_of(s->name);
    cs.target = str_of(s->target);
    cs.module_path = str_of(s->module_path);
    cs.file = str_of(s->file);
    cs.field_names = s->field_strs.empty() ? nullptr : s->field_strs.data();
    cs.field_count = static_cast<std::uint32_t>(s->field_strs.size());
    cs.id = (shape & 0x04) ? in.raw<std::uint64_t>() : tt_callsite_hash(&cs);
    if ((shape & 0x08) && cs.field_count == 0)
        cs.field_count = 1 + in.byte() % 3;  // NULL names with a count: malformed (after the hash, which reads them)
    return s;
}

// Values (and the strings they point to) for one event.
struct value_store {
    std::vector<tt_field_value> values;
    std::deque<std::string> strings;
    std::deque<std::vector<tt_str>> chains;
};

void make_values(reader& in, value_store& out)
{
    const std::size_t n = in.byte() % 36;  // above the quota of 32 now and then
    for (std::size_t i = 0; i < n; ++i) {
        tt_field_value v{};
        v.field = in.byte() % 6;
        v.kind = in.byte() % 11;  // 0 and 10 are not kinds
        switch (v.kind) {
        case TT_VALUE_BOOL: v.as.boolean = in.byte(); break;
        case TT_VALUE_I64:
        case TT_VALUE_U64: v.as.u64 = in.raw<std::uint64_t>(); break;
        case TT_VALUE_I128:
        case TT_VALUE_U128:
            v.as.u128.lo = in.raw<std::uint64_t>();
            v.as.u128.hi = in.raw<std::uint64_t>();
            break;
        case TT_VALUE_F64: v.as.f64 = in.raw<double>(); break;
        case TT_VALUE_STR:
        case TT_VALUE_DEBUG: {
            const auto& s = out.strings.emplace_back(in.bytes(16));
            v.as.str = str_of(s);
            if (in.byte() == 0xff)
                v.as.str = tt_str{nullptr, s.size() + 1};  // NULL with a length: malformed
            break;
        }
        case TT_VALUE_ERROR: {
            auto& chain = out.chains.emplace_back();
            const std::size_t len = in.byte() % 4;  // 0 is malformed
            for (std::size_t j = 0; j < len; ++j)
                chain.push_back(str_of(out.strings.emplace_back(in.bytes(8))));
            v.as.error = tt_error_chain{chain.empty() ? nullptr : chain.data(), chain.size()};
            break;
        }
        default: v.as.u64 = in.raw<std::uint64_t>(); break;
        }
        out.values.push_back(v);
    }
}

struct harness {
    checking_subscriber pipeline;
    host::quotas limits;
    std::optional<host::receiver> recv;
    std::vector<std::unique_ptr<site_store>> sites;
    std::vector<std::uint64_t> span_ids;
    host::persisted_metadata committed_metadata;
    host::persisted_spans committed_spans;
    // TT_FUZZ_TRACE=1: print each event and its answer (to check what a seed does).
    const bool trace = std::getenv("TT_FUZZ_TRACE") != nullptr;

    harness()
    {
        limits.max_callsites = 8;
        limits.max_live_spans = 16;
        limits.max_string_bytes = 2048;
        recv.emplace("fuzz", pipeline, host::receiver_state{}, limits);
    }

    std::uint64_t pick_span(reader& in)
    {
        const std::uint8_t b = in.byte();
        if (b < 200 && !span_ids.empty())
            return span_ids[b % span_ids.size()];
        if (b < 240)
            return b % 24;
        return in.raw<std::uint64_t>();
    }
    std::uint64_t pick_callsite(reader& in)
    {
        const std::uint8_t b = in.byte();
        if (b < 230 && !sites.empty())
            return sites[b % sites.size()]->cs.id;
        return in.raw<std::uint64_t>();
    }

    void send(tt_event& ev, reader& in)
    {
        const std::uint8_t how = in.byte();
        ev.struct_size = (how & 0x80) ? in.byte() : sizeof(tt_event);
        const auto before = recv->snapshot();
        const auto stats_before = recv->stats();
        const auto r = recv->try_receive(ev);
        if (trace)
            std::fprintf(stderr, "kind %u span %llu -> %s %llu\n", ev.kind, static_cast<unsigned long long>(ev.span_id),
                         r ? "ok" : r.error().message.c_str(), r ? static_cast<unsigned long long>(r.value()) : 0ULL);
        if (!r) {
            FUZZ_CHECK(!r.error().message.empty(), "a refusal without a message");
            FUZZ_CHECK(recv->snapshot() == before, "a refused event changed the span table");
            FUZZ_CHECK(recv->stats().callsites == stats_before.callsites, "a refused event added a call site");
        } else if (ev.kind == TT_EVENT_NEW_SPAN && r.value() != 0) {
            FUZZ_CHECK((r.value() >> 63) == 0, "a span id with the top bit set");
            FUZZ_CHECK(std::none_of(before.spans.begin(), before.spans.end(),
                                    [&](const auto& s) { return s.id == r.value(); }),
                       "a new span got the id of a live span");
            span_ids.push_back(r.value());
        }
        const auto st = recv->stats();
        const auto snap = recv->snapshot();
        FUZZ_CHECK(st.live_spans == snap.spans.size(), "stats.live_spans disagrees with the span table");
        FUZZ_CHECK(st.callsites == recv->persist_metadata().size(), "stats.callsites disagrees with the call sites");
        FUZZ_CHECK(st.callsites <= limits.max_callsites, "the call-site quota was exceeded");
        FUZZ_CHECK(snap.spans.size() <= limits.max_live_spans, "the live-span quota was exceeded");
        for (const auto& s : snap.spans)
            FUZZ_CHECK(s.id != 0 && s.id < snap.next_id && s.ref_count > 0, "a live span breaks the id rules");
    }

    void step(reader& in)
    {
        const std::uint8_t op = in.byte();
        tt_event ev{};
        value_store vals;
        static constexpr const char* lifecycle[] = {"commit", "reload", "restart", "crash"};
        if (trace && op % 14 >= 10)
            std::fprintf(stderr, "%s\n", lifecycle[op % 14 - 10]);
        switch (op % 14) {
        case 0: {  // a new call site, or one already registered again
            if (sites.size() < 12 && (op & 0x10) == 0)
                sites.push_back(make_site(in));
            if (sites.empty())
                return;
            ev.kind = TT_EVENT_NEW_CALLSITE;
            ev.callsite = (op & 0x20) ? nullptr : &sites[in.byte() % sites.size()]->cs;
            break;
        }
        case 1:
        case 2:
        case 3: {  // new span / new event / record
            ev.kind = op % 14 == 1 ? TT_EVENT_NEW_SPAN : op % 14 == 2 ? TT_EVENT_NEW_EVENT : TT_EVENT_VALUES_RECORDED;
            ev.callsite_id = pick_callsite(in);
            ev.parent = (op & 0x80) ? in.raw<std::uint32_t>() : in.byte() % 3;
            ev.related_span_id = pick_span(in);
            ev.span_id = pick_span(in);
            make_values(in, vals);
            ev.values = vals.values.empty() ? nullptr : vals.values.data();
            ev.value_count = static_cast<std::uint32_t>(vals.values.size());
            if ((op & 0x40) && ev.value_count == 0)
                ev.value_count = 1 + in.byte() % 3;  // NULL with a count: malformed
            if (ev.values != nullptr && ev.value_count > vals.values.size())
                ev.value_count = static_cast<std::uint32_t>(vals.values.size());
            break;
        }
        case 4: ev.kind = TT_EVENT_FOLLOWS_FROM; ev.span_id = pick_span(in); ev.related_span_id = pick_span(in); break;
        case 5: ev.kind = TT_EVENT_SPAN_ENTERED; ev.span_id = pick_span(in); break;
        case 6: ev.kind = TT_EVENT_SPAN_EXITED; ev.span_id = pick_span(in); break;
        case 7: ev.kind = TT_EVENT_SPAN_CLONED; ev.span_id = pick_span(in); break;
        case 8: ev.kind = TT_EVENT_SPAN_DROPPED; ev.span_id = pick_span(in); break;
        case 9:  // any kind at all
            ev.kind = in.raw<std::uint32_t>();
            ev.span_id = pick_span(in);
            ev.related_span_id = pick_span(in);
            ev.callsite_id = pick_callsite(in);
            break;
        case 10:  // commit
            committed_metadata = recv->persist_metadata();
            committed_spans = recv->persist();
            return;
        case 11: {  // reload: the next receiver of the lineage, on the committed state and the same local spans
            auto local = recv->local();
            committed_metadata = recv->persist_metadata();
            committed_spans = recv->persist();
            recv.reset();
            recv.emplace("fuzz", pipeline, host::receiver_state{committed_metadata, committed_spans}, limits,
                         std::move(local));
            return;
        }
        case 12: {  // restart after a clean shutdown: commit, let go of the pipeline spans, start anew
            committed_metadata = recv->persist_metadata();
            committed_spans = recv->persist();
            auto local = recv->local();
            recv.reset();
            local->suspend_all();
            local.reset();
            recv.emplace("fuzz", pipeline, host::receiver_state{committed_metadata, committed_spans}, limits);
            return;
        }
        case 13: {  // a crash: what was committed last is what a new process starts from
            auto local = recv->local();
            recv.reset();  // (rolls back what was not committed)
            local.reset();
            recv.emplace("fuzz", pipeline, host::receiver_state{committed_metadata, committed_spans}, limits);
            return;
        }
        }
        send(ev, in);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    reader in(data, size);
    {
        harness h;
        for (int steps = 0; steps < 512 && !in.done(); ++steps)
            h.step(in);
        h.recv.reset();
        // h.pipeline outlives the receivers; the last local_spans went with the receiver.
        FUZZ_CHECK(h.pipeline.open_count() == 0, "a pipeline span outlived the last receiver");
    }
    return 0;
}
