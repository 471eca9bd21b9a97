// Fuzz target: the persisted-state decoder (state/state_file.hpp,
// decode_lineage_state: what load_lineage_state runs on the two files).
// Input: one flag byte (bit 0: a metadata file exists, bit 1: a spans file
// exists), then the metadata text, a NUL byte, the spans text (binary when it
// starts with the binary magic, else version-1 JSON: both decoders are fed;
// corpus seeds bin-* come from the real encoder).
// Invariants: no crash or exception; a refusal says why; a state that loads
// re-encodes to files, binary and JSON, that load to the same state; and a receiver accepts
// it, continues it and rolls back cleanly (the loader's checks are what the
// receiver relies on).
#include "fuzz_check.hpp"
#include "null_subscriber.hpp"

#include <tracetunnel/host/receiver.hpp>
#include <tracetunnel/state_file.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

using namespace tt;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    const unsigned flags = data[0];
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    const auto nul = rest.find('\0');
    const std::string_view mtext = rest.substr(0, nul);
    const std::string_view stext = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
    const std::string_view lineage = "orders";

    auto r = state::decode_lineage_state((flags & 1) ? std::optional(mtext) : std::nullopt,
                                         (flags & 2) ? std::optional(stext) : std::nullopt, lineage);
    if (r.status == state::load_status::failed) {
        FUZZ_CHECK(!r.errors.empty(), "a failed load without a reason");
        for (const auto& e : r.errors)
            FUZZ_CHECK(!state::to_string(e).empty(), "an error without a description");
        return 0;
    }
    if (r.status == state::load_status::none) {
        FUZZ_CHECK((flags & 3) == 0, "files given but nothing loaded");
        return 0;
    }

    const std::string m2 = state::encode_metadata(lineage, r.state.metadata);
    const std::string s2 = state::encode_spans(lineage, r.state.spans);
    auto again = state::decode_lineage_state(m2, s2, lineage);
    FUZZ_CHECK(again.status == state::load_status::loaded, "a loaded state re-encodes to files that do not load");
    FUZZ_CHECK(again.state.metadata == r.state.metadata, "metadata changed in a round trip");
    FUZZ_CHECK(again.state.spans == r.state.spans, "spans changed in a round trip");
    auto as_json = state::decode_lineage_state(m2, state::encode_spans_json(lineage, r.state.spans), lineage);
    FUZZ_CHECK(as_json.status == state::load_status::loaded, "a loaded state does not load from its JSON form");
    FUZZ_CHECK(as_json.state.spans == r.state.spans, "spans changed in a round trip through JSON");

    // The receiver takes the state as a host restart does, is driven a
    // little (enter, exit, drop every span once) and rolled back.
    checking_subscriber pipeline;
    {
        host::receiver recv(std::string(lineage), pipeline, r.state);
        const auto snap = recv.snapshot();
        FUZZ_CHECK(snap.spans.size() == r.state.spans.spans.size(), "the receiver lost restored spans");
        for (const auto& s : r.state.spans.spans) {
            tt_event ev{};
            ev.struct_size = sizeof ev;
            ev.span_id = s.id;
            ev.kind = TT_EVENT_SPAN_ENTERED;
            FUZZ_CHECK(recv.try_receive(ev).has_value(), "a restored span cannot be entered");
            ev.kind = TT_EVENT_SPAN_EXITED;
            FUZZ_CHECK(recv.try_receive(ev).has_value(), "a restored span cannot be exited");
            ev.kind = TT_EVENT_SPAN_DROPPED;
            FUZZ_CHECK(recv.try_receive(ev).has_value(), "a restored span cannot be dropped");
        }
    }
    FUZZ_CHECK(pipeline.open_count() == 0, "a pipeline span outlived the receiver's rollback");
    return 0;
}
