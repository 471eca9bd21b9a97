// The plugin host over real .so files, real files on disk and real inotify:
// hot reload with spans carried across, failed reloads, misbehaving plugins,
// and reloads under concurrent emitting threads.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/plugin_host.hpp>
#include <tracetunnel/state_file.hpp>

#include "../support/host_test_util.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using tt::host::plugin_host;

namespace {

using tt::test::plugin_file;
using tt::test::text_of;
using tt::test::wait_until;

fs::path fresh_dir(const std::string& name)
{
    return tt::test::fresh_dir("host", name);
}

// Replaces `to` the way a build tool does: write beside it, rename over it.
void install_plugin(const fs::path& from, const fs::path& to)
{
    const fs::path tmp = to.parent_path() / (".tmp-" + to.filename().string());
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, to);
}

// Records what reaches the pipeline, for assertions.
class recording_layer final : public tt::host::layer {
public:
    struct span_rec {
        std::string name, plugin;
        tt::host::span_handle parent = 0;
        std::map<std::string, std::string> fields;
        int closes = 0;
        int suspends = 0;
    };
    struct event_rec {
        std::string plugin, target, message;
        tt::model::level level{};
        tt::host::span_handle span = 0;  // innermost
        std::map<std::string, std::string> fields;
    };

    void on_new_span(tt::host::span_context scope) noexcept override
    {
        std::lock_guard lk(mutex_);
        const auto& s = scope.back();
        auto& r = spans_[s.id];
        r.name = std::string(s.name());
        r.plugin = std::string(s.plugin);
        r.parent = s.parent;
        for (const auto& [k, v] : *s.fields)
            r.fields[k] = text_of(v);
        ++created_;
    }
    void on_close(tt::host::span_context scope) noexcept override
    {
        std::lock_guard lk(mutex_);
        ++spans_[scope.back().id].closes;
    }
    void on_suspend(tt::host::span_context scope) noexcept override
    {
        std::lock_guard lk(mutex_);
        ++spans_[scope.back().id].suspends;
    }
    void on_event(const tt::host::event_view& ev) noexcept override
    {
        std::lock_guard lk(mutex_);
        event_rec r;
        r.plugin = std::string(ev.plugin);
        r.target = ev.site->target;
        r.level = ev.site->level;
        r.span = ev.spans.empty() ? 0 : ev.spans.back().id;
        for (const auto& f : ev.values) {
            if (f.name == "message")
                r.message = text_of(f.value.to_value());
            else
                r.fields[std::string(f.name)] = text_of(f.value.to_value());
        }
        events_.push_back(std::move(r));
    }

    std::map<tt::host::span_handle, span_rec> spans() const
    {
        std::lock_guard lk(mutex_);
        return spans_;
    }
    std::vector<event_rec> events() const
    {
        std::lock_guard lk(mutex_);
        return events_;
    }
    std::size_t created() const
    {
        std::lock_guard lk(mutex_);
        return created_;
    }
    std::vector<event_rec> events_with(std::string_view message) const
    {
        std::vector<event_rec> out;
        for (auto& e : events())
            if (e.message == message)
                out.push_back(e);
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::map<tt::host::span_handle, span_rec> spans_;
    std::vector<event_rec> events_;
    std::size_t created_ = 0;
};

struct fixture {
    fs::path dir;
    fs::path plugins;
    fs::path state;
    tt::host::dispatcher pipeline;
    std::shared_ptr<recording_layer> rec = std::make_shared<recording_layer>();

    explicit fixture(const std::string& name)
        : dir(fresh_dir(name)), plugins(dir / "plugins"), state(dir / "state")
    {
        fs::create_directories(plugins);
        auto parsed = tt::host::parse_filter("trace");
        pipeline.set_filter(std::get<tt::host::filter>(parsed));
        pipeline.add_layer(rec);
    }
    tt::host::plugin_host_options options() const
    {
        tt::host::plugin_host_options o;
        o.state_dir = state;
        o.settle = 50ms;
        o.retire_grace = 20ms;
        return o;
    }
};

std::uint64_t gen_of(const plugin_host& host, std::string_view name)
{
    auto s = host.plugin(name);
    return s ? s->generation : 0;
}

// The i-th answer a hostile plugin recorded, and whether it was a refusal.
bool answer_refused(plugin_host& host, std::string_view plugin, std::uint32_t i)
{
    auto answer = host.call<std::uint64_t, std::uint32_t>(plugin, "hostile_answer", i);
    REQUIRE(answer);
    return TT_STATUS_IS_ERROR(*answer);
}

}  // namespace

TEST_CASE("a hot reload carries open spans from v1 to v2 and reports the added call site")
{
    fixture fx("reload");
    const fs::path file = fx.plugins / "libreloadable.so";
    install_plugin(plugin_file("reloadable_v1"), file);
    {
        plugin_host host(fx.pipeline, fx.options());
        auto loaded = host.load(file);
        REQUIRE(std::holds_alternative<tt::host::plugin_status>(loaded));
        CHECK(std::get<tt::host::plugin_status>(loaded).version == "1.0.0");
        REQUIRE(host.watch(fx.plugins).empty());
        host.start_watching();

        for (std::uint64_t k = 1; k <= 3; ++k) {
            CHECK(host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", k).value_or(0) != 0);
            host.call_each<void(std::uint64_t)>("reloadable_step", k);
        }
        CHECK(host.call<std::uint64_t>("reloadable", "reloadable_open_count") == std::optional<std::uint64_t>(3));

        install_plugin(plugin_file("reloadable_v2"), file);
        const bool reloaded = wait_until([&] { return gen_of(host, "reloadable") == 2; });
        auto attempt = host.last_reload("reloadable");
        REQUIRE_MESSAGE(reloaded, "the watcher did not reload the replaced file; last attempt: "
                                      << (attempt ? tt::host::to_string(*attempt) : std::string("none")));
        auto build = host.call<const char*>("reloadable", "reloadable_build");
        REQUIRE(build);
        CHECK(std::string(*build) == "v2");
        // The restored plugin state brought the open spans along.
        CHECK(host.call<std::uint64_t>("reloadable", "reloadable_open_count") == std::optional<std::uint64_t>(3));

        for (std::uint64_t k = 1; k <= 3; ++k) {
            host.call_each<void(std::uint64_t)>("reloadable_step", k);
            host.call_each<void(std::uint64_t)>("reloadable_close", k);
        }

        auto report = host.last_reload("reloadable");
        REQUIRE(report);
        CHECK(report->ok());
        CHECK(report->old_version == "1.0.0");
        CHECK(report->new_version == "2.0.0");
        CHECK(report->old_generation == 1);
        CHECK(report->new_generation == 2);
        CHECK(report->spans_carried == 3);
        REQUIRE(report->diff.added.size() == 1);
        CHECK(report->diff.added[0].level == tt::model::level::warn);
        CHECK(report->diff.added[0].kind == tt::model::callsite_kind::event);
        CHECK(report->diff.removed.empty());
        CHECK(report->diff.changed.empty());  // every unchanged call site kept its id
        CHECK(tt::host::to_string(*report).find("1 added") != std::string::npos);

        // The host said so through its own pipeline, with the diff. The
        // report is published a moment before that event is sent.
        CHECK(wait_until([&] { return !fx.rec->events_with("plugin reloaded").empty(); }));
        auto logged = fx.rec->events_with("plugin reloaded");
        REQUIRE(logged.size() == 1);
        CHECK(logged[0].plugin == "host");
        CHECK(logged[0].fields["from"] == "1.0.0");
        CHECK(logged[0].fields["to"] == "2.0.0");
        CHECK(logged[0].fields["added"].find("warn") != std::string::npos);
    }

    // Each job span was opened once and closed once, with both versions' events inside.
    const auto spans = fx.rec->spans();
    std::vector<tt::host::span_handle> jobs;
    for (const auto& [id, s] : spans)
        if (s.name == "job" && s.plugin == "reloadable")
            jobs.push_back(id);
    REQUIRE(jobs.size() == 3);
    for (auto id : jobs) {
        CHECK(spans.at(id).closes == 1);
        std::set<std::string> messages;
        for (const auto& e : fx.rec->events())
            if (e.span == id)
                messages.insert(e.message);
        CHECK(messages.count("working v1") == 1);
        CHECK(messages.count("working v2") == 1);
        CHECK(messages.count("extra step in v2") == 1);
    }
}

TEST_CASE("a reload to a file missing an export leaves v1 running")
{
    fixture fx("failed-reload");
    const fs::path file = fx.plugins / "libreloadable.so";
    install_plugin(plugin_file("reloadable_v1"), file);
    plugin_host host(fx.pipeline, fx.options());
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(file)));
    host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 7);

    install_plugin(plugin_file("missing_stop"), file);
    auto report = host.reload("reloadable");
    REQUIRE_FALSE(report.ok());
    CHECK(report.old_running);
    CHECK(report.error->message().find("missing export tt_plugin_stop") != std::string::npos);
    CHECK(report.error->message().find(file.string()) != std::string::npos);
    CHECK(gen_of(host, "reloadable") == 1);
    auto build = host.call<const char*>("reloadable", "reloadable_build");
    REQUIRE(build);
    CHECK(std::string(*build) == "v1");
    CHECK(host.call<std::uint64_t>("reloadable", "reloadable_open_count") == std::optional<std::uint64_t>(1));
    CHECK(host.plugin("reloadable")->failed_reloads == 1);
    REQUIRE_FALSE(host.load_errors().empty());
    CHECK(!fx.rec->events_with("plugin reload failed").empty());

    // A v2 that starts but refuses... is not needed: a good v2 afterwards still works.
    install_plugin(plugin_file("reloadable_v2"), file);
    auto again = host.reload("reloadable");
    CHECK(again.ok());
    CHECK(again.spans_carried == 1);
    CHECK(gen_of(host, "reloadable") == 2);
}

TEST_CASE("plugins that break the contract are refused by name and reason; the others go on")
{
    fixture fx("refused");
    plugin_host host(fx.pipeline, fx.options());
    install_plugin(plugin_file("reloadable_v1"), fx.plugins / "libreloadable.so");
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(fx.plugins / "libreloadable.so")));

    struct expectation {
        const char* key;
        const char* reason;
    };
    for (auto [key, reason] : {expectation{"old_abi", "too old"}, expectation{"newer_major", "newer than this host"},
                               expectation{"missing_stop", "missing export tt_plugin_stop"},
                               expectation{"start_fails", "tt_plugin_start returned 7"},
                               expectation{"start_throws", "threw"}, expectation{"no_name", "name"}}) {
        CAPTURE(key);
        const fs::path f = fx.plugins / (std::string("lib") + key + ".so");
        install_plugin(plugin_file(key), f);
        auto r = host.load(f);
        REQUIRE(std::holds_alternative<tt::host::load_error>(r));
        const auto msg = std::get<tt::host::load_error>(r).message();
        CHECK(msg.find(f.string()) != std::string::npos);
        CHECK(msg.find(reason) != std::string::npos);
        // Still serving the good plugin.
        CHECK(host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 1).value_or(0) != 0);
        host.call_each<void(std::uint64_t)>("reloadable_close", 1);
    }
    CHECK(host.plugins().size() == 1);
    CHECK(host.load_errors().size() == 6);

    // Not a shared object at all.
    const fs::path junk = fx.plugins / "libjunk.so";
    std::ofstream(junk) << "this is not an ELF file\n";
    auto r = host.load(junk);
    REQUIRE(std::holds_alternative<tt::host::load_error>(r));
    CHECK(std::get<tt::host::load_error>(r).message().find("not a shared object") != std::string::npos);

    // The same plugin name twice.
    install_plugin(plugin_file("reloadable_v2"), fx.plugins / "libreloadable-copy.so");
    auto twice = host.load(fx.plugins / "libreloadable-copy.so");
    REQUIRE(std::holds_alternative<tt::host::load_error>(twice));
    CHECK(std::get<tt::host::load_error>(twice).message().find("already loaded") != std::string::npos);
}

TEST_CASE("hostile plugins get error answers, counted per plugin, and the host goes on")
{
    fixture fx("hostile");
    plugin_host host(fx.pipeline, fx.options());
    for (const char* key : {"bogus_ids", "too_many_values", "callsite_flood", "reloadable_v1"}) {
        const fs::path f = fx.plugins / (std::string("lib") + key + ".so");
        install_plugin(plugin_file(key), f);
        REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(f)));
    }

    SUBCASE("bogus ids, wrong kinds and bad pointers")
    {
        CHECK(host.call_each<void()>("hostile_run") == 3);
        const auto n = host.call<std::uint32_t>("bogus_ids", "hostile_answer_count").value_or(0);
        REQUIRE(n >= 3);
        // All but the last two (a valid call site and event) are refusals.
        for (std::uint32_t i = 0; i + 2 < n; ++i) {
            CAPTURE(i);
            CHECK(answer_refused(host, "bogus_ids", i));
        }
        CHECK_FALSE(answer_refused(host, "bogus_ids", n - 1));
        CHECK(!fx.rec->events_with("still alive").empty());
        auto st = host.plugin("bogus_ids");
        REQUIRE(st);
        std::uint64_t errors = 0;
        for (auto e : st->stats.errors)
            errors += e;
        CHECK(errors >= n - 2);
        CHECK_FALSE(st->recent_errors.empty());

        auto tmv = host.plugin("too_many_values");
        CHECK(tmv->stats.errors[static_cast<std::size_t>(tt::host::receive_errc::too_many_values)] == 1);
        const auto tmv_n = host.call<std::uint32_t>("too_many_values", "hostile_answer_count").value_or(0);
        REQUIRE(tmv_n > 0);
        CHECK(answer_refused(host, "too_many_values", tmv_n - 1));

        // The flood stops at the call-site quota.
        const auto accepted = host.call<std::uint32_t>("callsite_flood", "hostile_accepted_count").value_or(0);
        const auto refused = host.call<std::uint32_t>("callsite_flood", "hostile_refused_count").value_or(0);
        CHECK(accepted + refused == 10000);
        CHECK(accepted <= fx.options().limits.max_callsites);
        CHECK(refused > 0);
        CHECK(host.plugin("callsite_flood")->stats.errors[static_cast<std::size_t>(tt::host::receive_errc::quota_exceeded)] ==
              refused);

        // The well-behaved plugin was not disturbed.
        CHECK(host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 1).value_or(0) != 0);
        host.call_each<void(std::uint64_t)>("reloadable_step", 1);
        CHECK(!fx.rec->events_with("working v1").empty());
    }
}

TEST_CASE("a plugin thread that emits after stop is refused, counted, and its library stays mapped")
{
    fixture fx("after-stop");
    plugin_host host(fx.pipeline, fx.options());
    const fs::path f = fx.plugins / "libemit_after_stop.so";
    install_plugin(plugin_file("emit_after_stop"), f);
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(f)));
    install_plugin(plugin_file("reloadable_v1"), fx.plugins / "libreloadable.so");
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(fx.plugins / "libreloadable.so")));

    REQUIRE(wait_until([&] { return host.call<std::uint64_t>("emit_after_stop", "hostile_emits_total").value_or(0) > 10; }));
    // A reload stops the instance; its thread keeps emitting into the old context.
    REQUIRE(host.reload("emit_after_stop").ok());
    REQUIRE(wait_until([&] {
        host.commit();  // a commit point also reaps retired instances
        auto st = host.plugin("emit_after_stop");
        return st && st->emits_after_stop > 0 && st->quarantined == 1;
    }));
    CHECK(!fx.rec->events_with("plugin emitted after stop").empty());
    // The host goes on: the new instance and the other plugin still work.
    CHECK(host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 3).value_or(0) != 0);
    CHECK(gen_of(host, "emit_after_stop") == 2);
}

TEST_CASE("four plugin threads emitting through 50 reloads: no span lost or duplicated")
{
    fixture fx("threads");
    const fs::path f = fx.plugins / "libthreads.so";
    install_plugin(plugin_file("threads"), f);
    {
        plugin_host host(fx.pipeline, fx.options());
        REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(f)));
        for (int i = 0; i < 50; ++i) {
            std::this_thread::sleep_for(2ms);
            auto r = host.reload("threads");
            REQUIRE_MESSAGE(r.ok(), tt::host::to_string(r));
            CHECK(r.diff.empty());
        }
        CHECK(gen_of(host, "threads") == 51);
        auto st = host.plugin("threads");
        CHECK(st->emits_after_stop == 0);
        CHECK(st->quarantined == 0);
    }
    const auto spans = fx.rec->spans();
    std::size_t work = 0;
    for (const auto& [id, s] : spans) {
        if (s.name != "work")
            continue;
        ++work;
        CAPTURE(id);
        CHECK(s.closes == 1);
    }
    CHECK(work > 0);
    // Every "tick" event sat inside a live work span.
    for (const auto& e : fx.rec->events_with("tick")) {
        REQUIRE(spans.count(e.span) == 1);
        CHECK(spans.at(e.span).name == "work");
    }
    CHECK(fx.pipeline.statistics().anomalies == 0);
}

TEST_CASE("a restart continues the spans saved at shutdown (in-process)")
{
    fixture fx("restart");
    const fs::path file = fx.plugins / "libreloadable.so";
    install_plugin(plugin_file("reloadable_v1"), file);
    std::uint64_t id = 0;
    {
        plugin_host host(fx.pipeline, fx.options());
        REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(file)));
        id = host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 42).value_or(0);
        REQUIRE(id != 0);
    }
    // Shutdown suspends the committed span in the pipeline; it does not end it.
    for (const auto& [h, s] : fx.rec->spans())
        if (s.name == "job") {
            CHECK(s.closes == 0);
            CHECK(s.suspends == 1);
        }
    CHECK(fs::exists(fx.state / "reloadable.spans.bin"));
    CHECK(fs::exists(fx.state / "reloadable.plugin-state"));
    auto live_ids = [&] {
        std::set<std::uint64_t> ids;
        auto r = tt::state::load_lineage_state(fx.state, "reloadable", tt::state::on_bad_file::keep);
        REQUIRE(r.status == tt::state::load_status::loaded);
        for (const auto& s : r.state.spans.spans)
            ids.insert(s.id);
        return ids;
    };
    CHECK(live_ids().count(id) == 1);
    {
        plugin_host host(fx.pipeline, fx.options());
        auto st = host.load(file);
        REQUIRE(std::holds_alternative<tt::host::plugin_status>(st));
        CHECK(host.call<std::uint64_t>("reloadable", "reloadable_open_count") == std::optional<std::uint64_t>(1));
        auto loaded = fx.rec->events_with("plugin loaded");
        REQUIRE(loaded.size() == 2);
        CHECK(loaded[1].fields["spans_restored"] == "1");
        host.call_each<void(std::uint64_t)>("reloadable_step", 42);
        host.call_each<void(std::uint64_t)>("reloadable_close", 42);
    }
    // The span continued in the second run carries the same persisted id: the
    // spans file no longer lists it once closed.
    CHECK(live_ids().count(id) == 0);
    CHECK(!fx.rec->events_with("working v1").empty());
}

namespace {
std::string read_text(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
}  // namespace

// A buffered log must never be older than the state on disk: a kill after a
// commit would otherwise leave a state that closed a span whose lines no log
// shows. plugin_host flushes the pipeline's layers before writing.
TEST_CASE("a commit writes out the buffered log lines before the state")
{
    const fs::path log = fresh_dir("write-ahead-log") / "log.jsonl";
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(log.c_str(), "w"), &std::fclose);
    REQUIRE(out);
    fixture fx("write-ahead");  // after `out`: its layer flushes into it as it goes
    // An hour: within this test only a commit (or the end) can flush.
    fx.pipeline.add_layer(std::make_shared<tt::host::json_layer>(
        tt::host::line_writer::buffered(out.get(), std::chrono::hours(1)), tt::host::json_options{}));
    const fs::path file = fx.plugins / "libreloadable.so";
    install_plugin(plugin_file("reloadable_v1"), file);
    plugin_host host(fx.pipeline, fx.options());
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(file)));
    const std::string after_load = read_text(log);

    REQUIRE(host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 7).value_or(0) != 0);
    host.call_each<void(std::uint64_t)>("reloadable_step", 7);
    CHECK(read_text(log) == after_load);  // held back: no commit yet
    CHECK(host.commit().empty());
    const std::string after_commit = read_text(log);
    CHECK(after_commit.find("working v1") != std::string::npos);
    CHECK(after_commit.find("plugin loaded") != std::string::npos);
    REQUIRE(!after_commit.empty());
    CHECK(after_commit.back() == '\n');  // whole lines only
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
namespace {
std::size_t resident_bytes()
{
    std::ifstream statm("/proc/self/statm");
    std::size_t pages = 0, resident = 0;
    statm >> pages >> resident;
    return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}
}  // namespace

// Sanitizers keep freed memory in quarantine on purpose, so this one runs in
// the plain build only.
TEST_CASE("memory stays flat over hundreds of reloads while threads emit")
{
    fixture fx("memory");
    tt::host::dispatcher quiet;  // no layer: what grows would be the host's
    const fs::path f = fx.plugins / "libthreads.so";
    install_plugin(plugin_file("threads"), f);
    plugin_host host(quiet, fx.options());
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(f)));
    auto reload_n = [&](int n) {
        for (int i = 0; i < n; ++i) {
            REQUIRE(host.reload("threads").ok());
            std::this_thread::sleep_for(1ms);
        }
        std::this_thread::sleep_for(fx.options().retire_grace * 2);
        host.commit();  // reaps what passed its grace
    };
    reload_n(30);
    const std::size_t after_warmup = resident_bytes();
    reload_n(300);
    const std::size_t after_many = resident_bytes();
    MESSAGE("RSS after 30 reloads: " << after_warmup / 1024 << " KiB, after 330: " << after_many / 1024 << " KiB");
    CHECK(after_many <= after_warmup + std::size_t{4} * 1024 * 1024);
    CHECK(host.plugin("threads")->quarantined == 0);
}
#endif

TEST_CASE("set_filter reaches loaded plugins: disabled call sites stop crossing, enabled ones come back")
{
    fixture fx("filter");
    const fs::path file = fx.plugins / "libreloadable.so";
    install_plugin(plugin_file("reloadable_v1"), file);
    plugin_host host(fx.pipeline, fx.options());
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(file)));
    host.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 1);
    auto crossings = [&] {
        auto st = host.plugin("reloadable");
        return st->stats.events[TT_EVENT_NEW_EVENT - 1];
    };

    host.call_each<void(std::uint64_t)>("reloadable_step", 1);
    const auto before = crossings();
    CHECK(fx.rec->events_with("working v1").size() == 1);

    host.set_filter(std::get<tt::host::filter>(tt::host::parse_filter("warn")));
    // Every info call site is now "never", also those not hit again (the
    // start event), in the host's own table.
    std::size_t info_sites = 0;
    for (const auto& c : host.callsite_infos("reloadable"))
        if (c.site.level == tt::model::level::info) {
            ++info_sites;
            CHECK(c.cached == tt::host::interest::never);
        }
    CHECK(info_sites >= 3);
    host.call_each<void(std::uint64_t)>("reloadable_step", 1);
    CHECK(fx.rec->events_with("working v1").size() == 1);
    CHECK(crossings() == before);  // not filtered by the host: never sent

    host.set_filter(std::get<tt::host::filter>(tt::host::parse_filter("trace")));
    host.call_each<void(std::uint64_t)>("reloadable_step", 1);
    CHECK(fx.rec->events_with("working v1").size() == 2);
    CHECK(crossings() == before + 1);
}

TEST_CASE("two hosts in one process with the default shadow folder keep their copies apart")
{
    fixture fx("two-hosts");
    install_plugin(plugin_file("reloadable_v1"), fx.plugins / "libreloadable.so");
    tt::host::plugin_host_options o = fx.options();
    o.state_dir.clear();  // both use the default shadow folder of this process
    plugin_host first(fx.pipeline, o);
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(first.load(fx.plugins / "libreloadable.so")));
    tt::host::dispatcher other;
    plugin_host second(other, o);
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(second.load(fx.plugins / "libreloadable.so")));
    CHECK(first.plugin("reloadable")->loaded_copy != second.plugin("reloadable")->loaded_copy);
    // The first host's mapped copy was not overwritten: it still answers.
    CHECK(first.call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 5).value_or(0) != 0);
    CHECK(first.call<std::uint64_t>("reloadable", "reloadable_open_count") == std::optional<std::uint64_t>(1));
    CHECK(second.call<std::uint64_t>("reloadable", "reloadable_open_count") == std::optional<std::uint64_t>(0));
}
