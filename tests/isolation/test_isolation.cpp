// Isolation (host/include/tracetunnel/host/isolation.hpp) over real
// processes: the crashy test plugin dies in its child by SIGSEGV, SIGABRT
// and exit(3); the host reports it with the signal, rolls back what the
// child did since its last commit, restarts it on the committed spans
// (same span ids) and its saved state, gives up after too many crashes,
// refuses a child that breaks the wire, kills one that does not answer, and
// reloads an isolated plugin when its file changes. An in-process plugin
// goes on beside it.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/plugin_host.hpp>

#include "../support/host_test_util.hpp"

#include "example_app.h"
#include "test_app.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using tt::host::plugin_host;

namespace {

using tt::test::env_path;
using tt::test::text_of;
using tt::test::wait_until;

fs::path fresh_dir(const std::string& name)
{
    return tt::test::fresh_dir("isolation", name);
}

// What reaches the pipeline: spans with their plugin span ids and how often
// they were closed, events with their fields.
class recording_layer final : public tt::host::layer {
public:
    struct span_rec {
        std::string name, plugin;
        std::uint64_t plugin_id = 0;
        int closes = 0;
    };
    struct event_rec {
        std::string plugin, message;
        std::uint64_t span_plugin_id = 0;  // the innermost span's plugin span id
        std::map<std::string, std::string> fields;
    };
    void on_new_span(tt::host::span_context scope) noexcept override
    {
        std::lock_guard lk(mutex_);
        auto& r = spans_[scope.back().id];
        r.name = std::string(scope.back().name());
        r.plugin = std::string(scope.back().plugin);
        r.plugin_id = scope.back().plugin_span_id;
    }
    void on_close(tt::host::span_context scope) noexcept override
    {
        std::lock_guard lk(mutex_);
        ++spans_[scope.back().id].closes;
    }
    void on_event(const tt::host::event_view& ev) noexcept override
    {
        std::lock_guard lk(mutex_);
        event_rec r;
        r.plugin = std::string(ev.plugin);
        r.span_plugin_id = ev.spans.empty() ? 0 : ev.spans.back().plugin_span_id;
        for (const auto& f : ev.values)
            (f.name == "message" ? r.message : r.fields[std::string(f.name)]) = text_of(f.value.to_value());
        events_.push_back(std::move(r));
    }
    std::vector<event_rec> events_with(std::string_view message) const
    {
        std::lock_guard lk(mutex_);
        std::vector<event_rec> out;
        for (const auto& e : events_)
            if (e.message == message)
                out.push_back(e);
        return out;
    }
    // The spans of `plugin` named `name` with this plugin span id.
    std::vector<span_rec> spans_with(std::string_view plugin, std::string_view name, std::uint64_t id) const
    {
        std::lock_guard lk(mutex_);
        std::vector<span_rec> out;
        for (const auto& [h, s] : spans_)
            if (s.plugin == plugin && s.name == name && s.plugin_id == id)
                out.push_back(s);
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::map<tt::host::span_handle, span_rec> spans_;
    std::vector<event_rec> events_;
};

struct fixture {
    fs::path dir;
    tt::host::dispatcher pipeline;
    std::shared_ptr<recording_layer> rec = std::make_shared<recording_layer>();

    explicit fixture(const std::string& name) : dir(fresh_dir(name))
    {
        pipeline.set_filter(std::get<tt::host::filter>(tt::host::parse_filter("trace")));
        pipeline.add_layer(rec);
    }
    tt::host::plugin_host_options options() const
    {
        tt::host::plugin_host_options o;
        o.state_dir = dir / "state";
        o.retire_grace = 20ms;
        o.isolate = {"crashy"};
        o.isolation.child_program = env_path("TT_PLUGIN_CHILD");
        o.isolation.first_backoff = 20ms;
        o.isolation.call_timeout = 10s;
        return o;
    }
};

// "session <id> ticks <n>" -> id
std::uint64_t session_of(plugin_host& host)
{
    auto answer = host.call<const char*, const char*>("crashy", EXAMPLE_SYMBOL_HANDLE, "status");
    REQUIRE(answer.has_value());
    REQUIRE(*answer != nullptr);
    std::uint64_t id = 0, ticks = 0;
    REQUIRE(std::sscanf(*answer, "session %lu ticks %lu", &id, &ticks) == 2);
    return id;
}

void wait_restarted(plugin_host& host, std::uint64_t crashes)
{
    REQUIRE(wait_until([&] {
        auto s = host.plugin("crashy");
        return s && s->crashes == crashes && s->phase == tt::host::plugin_phase::running;
    }));
}

}  // namespace

TEST_CASE("a segfault in an isolated plugin: reported, rolled back, restarted on the committed spans")
{
    fixture f("segv");
    plugin_host host(f.pipeline, f.options());
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(env_path("TT_PLUGIN_crashy"))));
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(env_path("TT_PLUGIN_reloadable_v1"))));
    auto status = host.plugin("crashy");
    REQUIRE(status);
    CHECK(status->isolated);
    CHECK(status->child_pid > 0);
    CHECK(status->child_pid != ::getpid());
    CHECK_FALSE(host.plugin("reloadable")->isolated);

    // A reload saves the plugin's state (its session span) with a commit:
    // what a restart continues from.
    const std::uint64_t session = session_of(host);
    REQUIRE(session != 0);
    REQUIRE(host.reload("crashy").ok());
    CHECK(session_of(host) == session);
    CHECK(host.call_each<void(std::uint64_t)>(EXAMPLE_SYMBOL_TICK, 1) == 1);  // crashy only
    CHECK(f.rec->events_with("tick").size() == 1);
    CHECK(f.rec->events_with("tick").at(0).span_plugin_id == session);

    // A span opened after the last commit, then the crash.
    auto work = host.call<const char*, const char*>("crashy", EXAMPLE_SYMBOL_HANDLE, "work");
    REQUIRE(work);
    const std::uint64_t work_id = std::strtoull(*work, nullptr, 10);
    REQUIRE(work_id > session);
    const auto pid_before = host.plugin("crashy")->child_pid;
    CHECK_FALSE(host.call<const char*, const char*>("crashy", EXAMPLE_SYMBOL_HANDLE, "segv").has_value());

    // The in-process plugin is not touched, even while crashy restarts.
    auto open = host.call<std::uint64_t, std::uint64_t>("reloadable", RELOADABLE_SYMBOL_OPEN, 7);
    REQUIRE(open);
    CHECK(*open != 0);

    wait_restarted(host, 1);
    auto crashed = f.rec->events_with("plugin crashed");
    REQUIRE(crashed.size() == 1);
    CHECK(crashed[0].fields["plugin"] == "crashy");
    CHECK(crashed[0].fields["signal"] == "SIGSEGV");
    CHECK(crashed[0].fields["spans_rolled_back"] == "1");
    // The host announces the restart just after the plugin shows as running.
    CHECK(wait_until([&] { return !f.rec->events_with("plugin restarted").empty(); }));
    CHECK(f.rec->events_with("plugin restarted").size() == 1);
    status = host.plugin("crashy");
    CHECK(status->last_crash == "SIGSEGV");
    CHECK(status->child_pid != pid_before);

    // The uncommitted work span is closed; the session goes on under its id.
    REQUIRE(f.rec->spans_with("crashy", "work", work_id).size() == 1);
    CHECK(f.rec->spans_with("crashy", "work", work_id)[0].closes == 1);
    REQUIRE(f.rec->spans_with("crashy", "session", session).size() == 1);
    CHECK(f.rec->spans_with("crashy", "session", session)[0].closes == 0);
    CHECK(session_of(host) == session);
    auto started = f.rec->events_with("crashy started");
    REQUIRE(started.size() == 3);  // load, reload, restart
    CHECK(started.back().fields["resumed"] == "true");
    CHECK(started.back().fields["session"] == std::to_string(session));
    host.call_each<void(std::uint64_t)>(EXAMPLE_SYMBOL_TICK, 2);
    CHECK(f.rec->events_with("tick").back().span_plugin_id == session);
    auto live = host.live_spans("crashy");
    REQUIRE(live);
    CHECK(std::any_of(live->spans.begin(), live->spans.end(), [&](auto& s) { return s.id == session; }));
    CHECK(std::none_of(live->spans.begin(), live->spans.end(), [&](auto& s) { return s.id == work_id; }));
    CHECK(live->next_id > work_id);  // ids are never handed out twice

    // The crash is a load error for the console's `errors`.
    auto errors = host.load_errors();
    CHECK(std::any_of(errors.begin(), errors.end(), [](const tt::host::load_error& e) {
        return e.code == tt::host::load_errc::crashed && e.message().find("SIGSEGV") != std::string::npos;
    }));

    // The in-process plugin still works.
    host.call_each<void(std::uint64_t)>(RELOADABLE_SYMBOL_STEP, 7);
    CHECK(f.rec->events_with("working v1").size() == 1);
}

TEST_CASE("abort and exit in an isolated plugin; too many crashes leave it failed until a reload")
{
    fixture f("abort");
    auto opts = f.options();
    opts.isolation.max_restarts_per_minute = 1;
    plugin_host host(f.pipeline, opts);
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(env_path("TT_PLUGIN_crashy"))));
    const std::uint64_t session = session_of(host);

    CHECK_FALSE(host.call<const char*, const char*>("crashy", EXAMPLE_SYMBOL_HANDLE, "abort").has_value());
    wait_restarted(host, 1);
    CHECK(host.plugin("crashy")->last_crash == "SIGABRT");
    // Never saved (no stop since the load): the restart starts it afresh, and
    // the session of the crashed child, made after its start, is closed.
    REQUIRE(f.rec->spans_with("crashy", "session", session).size() == 1);
    CHECK(f.rec->spans_with("crashy", "session", session)[0].closes == 1);
    const std::uint64_t second = session_of(host);
    CHECK(second > session);

    CHECK_FALSE(host.call<const char*, const char*>("crashy", EXAMPLE_SYMBOL_HANDLE, "exit").has_value());
    REQUIRE(wait_until([&] { return host.plugin("crashy")->crashes == 2; }));
    REQUIRE(wait_until([&] { return !f.rec->events_with("plugin failed").empty(); }));
    auto s = host.plugin("crashy");
    CHECK(s->phase == tt::host::plugin_phase::failed);
    CHECK(s->last_crash == "exit status 3");
    CHECK(f.rec->events_with("plugin crashed").back().fields["exit"] == "exit status 3");
    std::this_thread::sleep_for(100ms);  // past the backoff: still not restarted
    CHECK(host.plugin("crashy")->phase == tt::host::plugin_phase::failed);
    CHECK(host.call_each<void(std::uint64_t)>(EXAMPLE_SYMBOL_TICK, 1) == 0);

    // An operator's reload starts it again.
    CHECK(host.reload("crashy").ok());
    CHECK(host.plugin("crashy")->phase == tt::host::plugin_phase::running);
    CHECK(session_of(host) != 0);
}

TEST_CASE("a child that breaks the wire is killed and its plugin refused")
{
    fixture f("wire");
    auto opts = f.options();
    opts.isolate = {"libcrashy"};  // by file stem
    opts.isolation.child_program = env_path("TT_FAKE_CHILD");
    opts.isolation.call_timeout = 3s;
    plugin_host host(f.pipeline, opts);

    ::setenv("FAKE_CHILD_MODE", "garbage", 1);
    auto r = host.load(env_path("TT_PLUGIN_crashy"));
    REQUIRE(std::holds_alternative<tt::host::load_error>(r));
    CHECK(std::get<tt::host::load_error>(r).message().find("before describing the plugin") != std::string::npos);

    for (const char* mode : {"bad-event", "huge-frame"}) {
        CAPTURE(mode);
        ::setenv("FAKE_CHILD_MODE", mode, 1);
        const auto t0 = std::chrono::steady_clock::now();
        r = host.load(env_path("TT_PLUGIN_crashy"));
        REQUIRE(std::holds_alternative<tt::host::load_error>(r));
        const auto& e = std::get<tt::host::load_error>(r);
        CHECK(e.code == tt::host::load_errc::start_failed);
        CHECK(e.message().find("protocol violation") != std::string::npos);
        CHECK(std::chrono::steady_clock::now() - t0 < 3s);  // killed, not waited for
    }
    ::unsetenv("FAKE_CHILD_MODE");
    CHECK(host.plugins().empty());

    opts.isolation.child_program = f.dir / "no-such-program";
    plugin_host other(f.pipeline, opts);
    r = other.load(env_path("TT_PLUGIN_crashy"));
    REQUIRE(std::holds_alternative<tt::host::load_error>(r));
    CHECK(std::get<tt::host::load_error>(r).message().find("cannot run the child program") != std::string::npos);
}

TEST_CASE("an isolated plugin that does not answer a call is killed and restarted")
{
    fixture f("hang");
    auto opts = f.options();
    // The timeout covers the child's start and its restart too, so it must
    // leave room for a sanitizer-built child on a loaded machine.
    opts.isolation.call_timeout = 1500ms;
    plugin_host host(f.pipeline, opts);
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(env_path("TT_PLUGIN_crashy"))));
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(host.call<const char*, const char*>("crashy", EXAMPLE_SYMBOL_HANDLE, "hang").has_value());
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    wait_restarted(host, 1);
    CHECK(host.plugin("crashy")->last_crash == "SIGKILL (no answer within 1500 ms)");
    auto failed = f.rec->events_with("plugin call failed");
    REQUIRE(failed.size() == 1);
    CHECK(failed[0].fields["error"].find("no answer within 1500 ms") != std::string::npos);
    CHECK(session_of(host) != 0);
}

TEST_CASE("an isolated plugin reloads when its file changes: a new child on the same spans")
{
    fixture f("watch");
    auto opts = f.options();
    opts.settle = 50ms;
    const fs::path dir = f.dir / "plugins";
    fs::create_directories(dir);
    const fs::path file = dir / "libcrashy.so";
    fs::copy_file(env_path("TT_PLUGIN_crashy"), file);
    plugin_host host(f.pipeline, opts);
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(file)));
    const std::uint64_t session = session_of(host);
    const int pid = host.plugin("crashy")->child_pid;
    host.start_watching();

    const fs::path tmp = dir / ".tmp-libcrashy.so";  // as a build tool replaces it
    fs::copy_file(env_path("TT_PLUGIN_crashy"), tmp);
    fs::rename(tmp, file);
    // The new generation shows in the table before the reload's report is
    // published: wait for both.
    REQUIRE(wait_until([&] { return host.plugin("crashy")->generation == 2 && host.last_reload("crashy"); }));
    auto report = host.last_reload("crashy");
    REQUIRE(report);
    CHECK(report->ok());
    CHECK(report->spans_carried == 1);
    auto s = host.plugin("crashy");
    CHECK(s->isolated);
    CHECK(s->child_pid != pid);
    CHECK(s->crashes == 0);
    CHECK(session_of(host) == session);
    CHECK(f.rec->events_with("crashy started").back().fields["resumed"] == "true");
}

TEST_CASE("isolated by plugin name only; a call signature that cannot cross is refused and reported once")
{
    fixture f("byname");
    auto opts = f.options();
    opts.isolate = {"reloadable"};  // the file is libreloadable_v1.so
    plugin_host host(f.pipeline, opts);
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(env_path("TT_PLUGIN_reloadable_v1"))));
    REQUIRE(std::holds_alternative<tt::host::plugin_status>(host.load(env_path("TT_PLUGIN_crashy"))));
    CHECK(host.plugin("reloadable")->isolated);
    CHECK(host.plugin("reloadable")->child_pid > 0);
    CHECK_FALSE(host.plugin("crashy")->isolated);  // not named: in this process
    CHECK(host.plugin("crashy")->child_pid == 0);

    for (int i = 0; i < 2; ++i)
        CHECK_FALSE(host.call<std::uint64_t, std::uint64_t>("reloadable", RELOADABLE_SYMBOL_OPEN, 1).has_value());
    auto refused = f.rec->events_with("plugin call not forwarded");
    REQUIRE(refused.size() == 1);
    CHECK(refused[0].fields["symbol"] == RELOADABLE_SYMBOL_OPEN);
    // What can cross does: reloadable has no example_tick, crashy (here) has.
    CHECK(host.call_each<void(std::uint64_t)>(EXAMPLE_SYMBOL_TICK, 1) == 1);
    CHECK(host.call<const char*>("reloadable", RELOADABLE_SYMBOL_BUILD) == std::nullopt);  // const char*() cannot
}
