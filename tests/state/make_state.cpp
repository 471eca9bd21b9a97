// make_state DIR good|corrupt|v1: writes a small state folder for the tt-state
// command-line test (two lineages). "corrupt" cuts orders' spans file in
// half; "v1" leaves orders' spans as an older build wrote them (JSON).
#include <tracetunnel/state_file.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

int main(int argc, char** argv)
{
    if (argc != 3)
        return 2;
    using namespace tt;
    const std::filesystem::path dir = argv[1];
    const std::string mode = argv[2];
    state::persisted_metadata meta{
        {0x1d40c9a3be7f0112, model::callsite_kind::span, model::level::debug, "query", "orders::db", "", "", 0, {"sql"}},
        {0x9c6e0b1f5a3d2e47, model::callsite_kind::span, model::level::info, "request", "orders::http", "orders",
         "src/http.cpp", 42, {"user"}},
    };
    state::persisted_spans spans;
    spans.next_id = 4;
    spans.spans.push_back({1, 0x9c6e0b1f5a3d2e47, 0, {{"user", std::string("ann")}}, 2, {}, {}});
    spans.spans.push_back({3, 0x1d40c9a3be7f0112, 1, {{"sql", std::string("select 1")}}, 1, {}, {}});
    for (const char* lineage : {"orders", "billing/eu"})
        if (auto err = state::save_lineage_state(dir, lineage, meta, spans)) {
            std::fprintf(stderr, "%s\n", state::to_string(*err).c_str());
            return 1;
        }
    if (mode == "corrupt") {
        const auto p = state::spans_path(dir, "orders");
        std::string text = state::encode_spans("orders", spans);
        std::ofstream(p, std::ios::binary | std::ios::trunc) << text.substr(0, text.size() / 2);
    } else if (mode == "v1") {
        std::filesystem::remove(state::spans_path(dir, "orders"));
        std::ofstream(state::spans_json_path(dir, "orders"), std::ios::binary) << state::encode_spans_json("orders", spans);
    }
    return 0;
}
