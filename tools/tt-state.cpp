// tt-state: look at and check the receiver state a host persisted.
//
//   tt-state show DIR [LINEAGE...]   every lineage's call sites and live span tree
//   tt-state check DIR               validate every file; exit 1 on any problem
//   tt-state dump DIR LINEAGE        the live spans as JSON (the version-1 spans
//                                    file form; the file itself is binary)
//
// Reads only: a bad file is reported, never moved or changed (the host moves
// a bad file aside when it loads it). Format: docs/FORMAT.md, "Persisted state".
#include <tracetunnel/state_file.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace tt;

std::string render(const model::value& v)
{
    return std::visit(
        [](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>)
                return x ? "true" : "false";
            else if constexpr (std::is_same_v<T, model::i128> || std::is_same_v<T, model::u128>)
                return fmt::format("{}", x);
            else if constexpr (std::is_same_v<T, double>)
                return fmt::format("{}", x);
            else if constexpr (std::is_same_v<T, std::string>)
                return fmt::format("{:?}", x);
            else if constexpr (std::is_same_v<T, model::debug_text>)
                return x.text;
            else if constexpr (std::is_same_v<T, model::error_chain>) {
                std::string out;
                for (std::size_t i = 0; i < x.chain.size(); ++i)
                    out += (i ? ": " : "") + x.chain[i];
                return fmt::format("{:?}", out);
            } else
                return fmt::format("{}", x);
        },
        v);
}

std::string time_text(state::clock::time_point t)
{
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    std::int64_t secs = ns / 1000000000;
    std::int64_t frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        --secs;
    }
    std::time_t tt = static_cast<std::time_t>(secs);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return fmt::format("{}.{:09}Z", buf, frac);
}

std::string hex(std::uint64_t id) { return fmt::format("0x{:016x}", id); }

void show_lineage(const fs::path& dir, const std::string& lineage, const state::receiver_state& st)
{
    fmt::print("lineage {:?}\n", lineage);
    std::error_code ec;
    fs::path spans = state::spans_path(dir, lineage);
    if (!fs::exists(spans, ec) && fs::exists(state::spans_json_path(dir, lineage), ec))
        spans = state::spans_json_path(dir, lineage);  // an older build's file, not yet rewritten
    fmt::print("  files: {}, {}\n", state::metadata_path(dir, lineage).string(), spans.string());
    fmt::print("  call sites ({}):\n", st.metadata.size());
    std::map<std::uint64_t, const model::callsite*> sites;
    for (const auto& cs : st.metadata) {
        sites.emplace(cs.id, &cs);
        std::string where = cs.file.empty() ? std::string() : fmt::format("  {}:{}", cs.file, cs.line);
        std::string fields;
        for (std::size_t i = 0; i < cs.fields.size(); ++i)
            fields += (i ? ", " : "") + cs.fields[i];
        fmt::print("    {} {:<5} {:<5} {}::{}  [{}]{}\n", hex(cs.id),
                   cs.kind == model::callsite_kind::span ? "span" : "event", model::to_string(cs.level), cs.target,
                   cs.name, fields, where);
    }
    fmt::print("  live spans ({}), next id {}:\n", st.spans.spans.size(), st.spans.next_id);
    std::set<std::uint64_t> live;
    std::map<std::uint64_t, std::vector<const state::persisted_span*>> children;
    for (const auto& s : st.spans.spans)
        live.insert(s.id);
    std::vector<const state::persisted_span*> roots;
    for (const auto& s : st.spans.spans) {
        if (s.parent_id != 0 && live.count(s.parent_id))
            children[s.parent_id].push_back(&s);
        else
            roots.push_back(&s);
    }
    // Depth first; the loader has checked that parent chains end.
    std::vector<std::pair<const state::persisted_span*, int>> todo;
    for (auto it = roots.rbegin(); it != roots.rend(); ++it)
        todo.emplace_back(*it, 0);
    while (!todo.empty()) {
        auto [s, depth] = todo.back();
        todo.pop_back();
        auto sit = sites.find(s->callsite_id);
        const std::string name = sit == sites.end() ? hex(s->callsite_id) : sit->second->name;
        std::string line = fmt::format("{:{}}{} {}  refs {}  started {}", "", 4 + 2 * depth, s->id, name,
                                       s->ref_count, time_text(s->start));
        if (s->parent_id != 0 && !live.count(s->parent_id))
            line += fmt::format("  (parent {} closed)", s->parent_id);
        if (!s->follows_from.empty()) {
            line += "  follows from";
            for (auto c : s->follows_from)
                line += fmt::format(" {}", c);
        }
        for (const auto& [field, value] : s->values)
            line += fmt::format("  {}={}", field, render(value));
        fmt::print("{}\n", line);
        auto cit = children.find(s->id);
        if (cit != children.end())
            for (auto it = cit->second.rbegin(); it != cit->second.rend(); ++it)
                todo.emplace_back(*it, depth + 1);
    }
}

bool folder_ok(const fs::path& dir)
{
    std::error_code ec;
    if (fs::is_directory(dir, ec))
        return true;
    fmt::print(stderr, "{}: not a folder\n", dir.string());
    return false;
}

int run_show(const fs::path& dir, std::vector<std::string> lineages)
{
    if (!folder_ok(dir))
        return 1;
    std::vector<fs::path> bad_names;
    if (lineages.empty())
        lineages = state::list_lineages(dir, &bad_names);
    int status = 0;
    for (const auto& p : bad_names) {
        fmt::print(stderr, "{}: file name is not an escaped lineage name\n", p.string());
        status = 1;
    }
    if (lineages.empty())
        fmt::print("no lineage state in {}\n", dir.string());
    bool first = true;
    for (const auto& lineage : lineages) {
        auto r = state::load_lineage_state(dir, lineage, state::on_bad_file::keep);
        if (!first)
            fmt::print("\n");
        first = false;
        if (r.status == state::load_status::failed) {
            fmt::print("lineage {:?}: unreadable\n", lineage);
            for (const auto& e : r.errors)
                fmt::print(stderr, "{}\n", state::to_string(e));
            status = 1;
        } else if (r.status == state::load_status::none) {
            fmt::print("lineage {:?}: no state\n", lineage);
        } else {
            show_lineage(dir, lineage, r.state);
        }
    }
    return status;
}

int run_check(const fs::path& dir)
{
    if (!folder_ok(dir))
        return 1;
    std::vector<fs::path> bad_names;
    auto lineages = state::list_lineages(dir, &bad_names);
    std::size_t problems = 0;
    for (const auto& p : bad_names) {
        fmt::print("{}: file name is not an escaped lineage name\n", p.string());
        ++problems;
    }
    for (const auto& lineage : lineages) {
        auto r = state::load_lineage_state(dir, lineage, state::on_bad_file::keep);
        for (const auto& e : r.errors) {
            fmt::print("{}\n", state::to_string(e));
            ++problems;
        }
    }
    if (problems == 0)
        fmt::print("{}: {} lineage(s), no problems\n", dir.string(), lineages.size());
    return problems == 0 ? 0 : 1;
}

// The spans as the version-1 JSON document (one span per line): what a
// person or a script reads, since the file itself is binary. With
// `metadata`, the metadata file's JSON instead.
int run_dump(const fs::path& dir, const std::string& lineage, bool metadata)
{
    if (!folder_ok(dir))
        return 1;
    auto r = state::load_lineage_state(dir, lineage, state::on_bad_file::keep);
    if (r.status == state::load_status::failed) {
        for (const auto& e : r.errors)
            fmt::print(stderr, "{}\n", state::to_string(e));
        return 1;
    }
    // No state yet reads as empty: no call sites, no spans, next id 1.
    fmt::print("{}", metadata ? state::encode_metadata(lineage, r.state.metadata)
                              : state::encode_spans_json(lineage, r.state.spans));
    return 0;
}

}  // namespace

int main(int argc, char** argv)
{
    CLI::App app{"tt-state: show and check the receiver state a tracetunnel host persisted.\n"
                 "A state folder holds two files per plugin lineage, <lineage>.metadata.json (call sites)\n"
                 "and <lineage>.spans.bin (live spans, next span id; binary, `dump` prints it as JSON);\n"
                 "see docs/FORMAT.md.\n"
                 "tt-state only reads: bad files are reported, never moved or changed.",
                 "tt-state"};
    app.set_version_flag("--version", "tt-state " TT_PROJECT_VERSION);
    app.require_subcommand(1);

    fs::path show_dir;
    std::vector<std::string> show_lineages;
    auto* show = app.add_subcommand("show", "Print every lineage's call sites and live span tree (fields, start "
                                            "times, reference counts). Exit status 1 if a file cannot be read.");
    show->add_option("DIR", show_dir, "the state folder")->required();
    show->add_option("LINEAGE", show_lineages, "only these lineages (default: all in DIR)");

    fs::path check_dir;
    auto* check = app.add_subcommand("check", "Validate every state file in DIR: one line per problem, naming the "
                                              "file. Exit status 0 when clean, 1 on any problem.");
    check->add_option("DIR", check_dir, "the state folder")->required();

    fs::path dump_dir;
    std::string dump_lineage;
    bool dump_metadata = false;
    auto* dump = app.add_subcommand("dump", "Print LINEAGE's live spans as JSON (the version-1 spans file form, one "
                                            "span per line; empty if there is no state). Exit status 1 if the state "
                                            "cannot be read.");
    dump->add_option("DIR", dump_dir, "the state folder")->required();
    dump->add_option("LINEAGE", dump_lineage, "the lineage (not escaped)")->required();
    dump->add_flag("--metadata", dump_metadata, "print the call sites (the metadata file) instead");

    CLI11_PARSE(app, argc, argv);
    try {
        if (*show)
            return run_show(show_dir, show_lineages);
        if (*dump)
            return run_dump(dump_dir, dump_lineage, dump_metadata);
        return run_check(check_dir);
    } catch (const std::exception& e) {
        fmt::print(stderr, "tt-state: {}\n", e.what());
        return 2;
    }
}
