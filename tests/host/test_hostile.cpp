// Hostile plugins (plugins/test/hostile) against the real plugin host: each
// case loads one misbehaving plugin beside a well-behaved one (reloadable
// v1), checks that the abuse gets a clear error, counted for that plugin,
// and that the host and the other plugin go on. docs/RELIABILITY.md lists
// what each plugin does.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <tracetunnel/host/dispatcher.hpp>
#include <tracetunnel/host/layers.hpp>
#include <tracetunnel/host/plugin_host.hpp>

#include "../support/host_test_util.hpp"
#include <tracetunnel/state_file.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <dlfcn.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using tt::host::plugin_host;
using tt::host::receive_errc;

namespace {

using tt::test::plugin_file;

fs::path fresh_dir(const std::string& name)
{
    return tt::test::fresh_dir("hostile", name);
}

template <class Pred>
bool wait_until(Pred pred)
{
    return tt::test::wait_until(pred, 20s, 5ms);
}

// Strict UTF-8, as the receiver checks it (an independent copy).
bool valid_utf8(std::string_view s)
{
    std::size_t i = 0;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    while (i < s.size()) {
        const unsigned c = p[i];
        std::size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                                                                   : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (len == 0 || s.size() - i < len)
            return false;
        for (std::size_t k = 1; k < len; ++k)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] > 0x9F) || (c == 0xF0 && p[i + 1] < 0x90) ||
            (c == 0xF4 && p[i + 1] > 0x8F))
            return false;
        i += len;
    }
    return true;
}

// What reaches the pipeline: events by message, spans opened and closed.
class recording_layer final : public tt::host::layer {
public:
    void on_new_span(tt::host::span_context) noexcept override
    {
        std::lock_guard lk(mutex_);
        ++opened_;
    }
    void on_close(tt::host::span_context) noexcept override
    {
        std::lock_guard lk(mutex_);
        ++closed_;
    }
    void on_event(const tt::host::event_view& ev) noexcept override
    {
        std::lock_guard lk(mutex_);
        for (const auto& f : ev.values)
            if (f.name == "message" && f.value.type() == tt::host::value_ref::kind::string)
                messages_.push_back({std::string(ev.plugin), std::string(f.value.text())});
    }
    // Messages of `plugin` ("" = any plugin).
    std::vector<std::string> messages(std::string_view plugin = {}) const
    {
        std::lock_guard lk(mutex_);
        std::vector<std::string> out;
        for (const auto& [p, m] : messages_)
            if (plugin.empty() || p == plugin)
                out.push_back(m);
        return out;
    }
    bool saw(std::string_view message, std::string_view plugin = {}) const
    {
        for (const auto& m : messages(plugin))
            if (m == message)
                return true;
        return false;
    }
    std::size_t opened() const
    {
        std::lock_guard lk(mutex_);
        return opened_;
    }
    std::size_t closed() const
    {
        std::lock_guard lk(mutex_);
        return closed_;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::pair<std::string, std::string>> messages_;
    std::size_t opened_ = 0, closed_ = 0;
};

struct fixture {
    fs::path dir;
    tt::host::dispatcher pipeline;
    std::shared_ptr<recording_layer> rec = std::make_shared<recording_layer>();
    std::ostringstream json_out, console_out;
    tt::host::plugin_host_options opts;
    std::unique_ptr<plugin_host> host;

    explicit fixture(const std::string& name, std::chrono::milliseconds stop_timeout = 3s) : dir(fresh_dir(name))
    {
        fs::create_directories(dir / "plugins");
        pipeline.set_filter(std::get<tt::host::filter>(tt::host::parse_filter("trace")));
        pipeline.add_layer(rec);
        tt::host::json_options jo;
        jo.span_events = true;
        pipeline.add_layer(std::make_shared<tt::host::json_layer>(tt::host::line_writer(json_out), jo));
        tt::host::console_options co;
        co.color = tt::host::color_mode::never;
        pipeline.add_layer(std::make_shared<tt::host::console_layer>(tt::host::line_writer(console_out), co));
        opts.state_dir = dir / "state";
        opts.retire_grace = 20ms;
        opts.stop_timeout = stop_timeout;
        host = std::make_unique<plugin_host>(pipeline, opts);
    }
    ~fixture() { host.reset(); }

    // Copies a test plugin into the plugins folder and loads it.
    void load(const std::string& key)
    {
        const fs::path f = dir / "plugins" / ("lib" + key + ".so");
        fs::copy_file(plugin_file(key), f, fs::copy_options::overwrite_existing);
        auto r = host->load(f);
        REQUIRE_MESSAGE(std::holds_alternative<tt::host::plugin_status>(r),
                        key << ": " << std::get<tt::host::load_error>(r).message());
    }

    // The well-behaved plugin still does its work.
    void good_plugin_works(std::uint64_t key)
    {
        const auto span = host->call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", key);
        REQUIRE(span);
        CHECK(*span != 0);
        host->call_each<void(std::uint64_t)>("reloadable_step", key);
        host->call_each<void(std::uint64_t)>("reloadable_close", key);
        CHECK(rec->saw("working v1", "reloadable"));
        auto st = host->plugin("reloadable");
        REQUIRE(st);
        std::uint64_t errors = 0;
        for (auto e : st->stats.errors)
            errors += e;
        CHECK(errors == 0);
    }

    std::uint64_t answer(std::string_view plugin, std::uint32_t i)
    {
        auto a = host->call<std::uint64_t, std::uint32_t>(plugin, "hostile_answer", i);
        REQUIRE(a);
        return *a;
    }
    std::uint32_t answer_count(std::string_view plugin)
    {
        return host->call<std::uint32_t>(plugin, "hostile_answer_count").value_or(0);
    }
    std::uint64_t errors(std::string_view plugin, receive_errc code)
    {
        auto st = host->plugin(plugin);
        REQUIRE(st);
        return st->stats.errors[static_cast<std::size_t>(code)];
    }
    bool recent_error_mentions(std::string_view plugin, std::string_view text)
    {
        auto st = host->plugin(plugin);
        REQUIRE(st);
        for (const auto& e : st->recent_errors)
            if (e.find(text) != std::string::npos)
                return true;
        return false;
    }
};

bool refused_with(std::uint64_t answer, std::uint32_t code)
{
    return TT_STATUS_IS_ERROR(answer) && TT_STATUS_CODE(answer) == code;
}

std::size_t resident_bytes()
{
    std::ifstream statm("/proc/self/statm");
    std::size_t size = 0, resident = 0;
    statm >> size >> resident;
    return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

TEST_CASE("a plugin whose stop blocks is given up after stop_timeout: reported, failed, kept mapped; the rest go on")
{
    fixture fx("stop-blocks", 200ms);
    fx.load("stop_blocks");
    fx.load("reloadable_v1");
    const fs::path copy = fx.host->plugin("stop_blocks")->loaded_copy;
    REQUIRE(fx.rec->saw("started", "stop_blocks"));

    REQUIRE(fx.host->unload("stop_blocks"));
    CHECK(fx.rec->saw("stopping", "stop_blocks"));
    CHECK(fx.rec->saw("plugin did not stop in time"));
    auto st = fx.host->plugin("stop_blocks");
    REQUIRE(st);  // still listed: failed, not gone
    CHECK(st->phase == tt::host::plugin_phase::failed);
    CHECK(st->stop_timeouts == 1);
    CHECK(st->quarantined == 1);
    fx.good_plugin_works(1);

    // The library is still mapped (its stop is still running in it): its
    // copy's mapping answers, and its stop can be let go.
    void* handle = ::dlopen(copy.c_str(), RTLD_NOW | RTLD_NOLOAD);
    REQUIRE_MESSAGE(handle != nullptr, "the blocked plugin's library was unmapped");
    auto release = reinterpret_cast<void (*)()>(::dlsym(handle, "hostile_release"));
    auto returned = reinterpret_cast<std::uint32_t (*)()>(::dlsym(handle, "hostile_stop_returned"));
    const bool exported = release != nullptr && returned != nullptr;
    REQUIRE(exported);
    CHECK(returned() == 0);
    release();
    REQUIRE(wait_until([&] { return returned() == 1; }));
    // Its emit after returning went nowhere: refused and counted.
    REQUIRE(wait_until([&] { return fx.host->plugin("stop_blocks")->emits_after_stop >= 1; }));
    CHECK_FALSE(fx.rec->saw("stop returned", "stop_blocks"));
    ::dlclose(handle);

    // A failed plugin loads again; a reload whose old stop blocks still
    // brings the new build up, and counts the timeout.
    fx.load("stop_blocks");
    CHECK(fx.host->plugin("stop_blocks")->phase == tt::host::plugin_phase::running);
    auto r = fx.host->reload("stop_blocks");
    CHECK(r.ok());
    st = fx.host->plugin("stop_blocks");
    CHECK(st->phase == tt::host::plugin_phase::running);
    CHECK(st->stop_timeouts == 2);
    CHECK(st->quarantined == 2);
    fx.good_plugin_works(2);
}

TEST_CASE("emits with a null, shifted, foreign or stale ctx are refused and counted, never dereferenced")
{
    fixture fx("bad-context");
    fx.load("bad_context");
    fx.load("reloadable_v1");
    const auto before = tt::host::invalid_context_emits();
    REQUIRE(fx.host->call_each<void()>("hostile_run") == 1);
    REQUIRE(fx.answer_count("bad_context") == 7);
    for (std::uint32_t i = 0; i < 5; ++i) {
        CAPTURE(i);
        CHECK(refused_with(fx.answer("bad_context", i), TT_STATUS_BAD_EVENT));
    }
    CHECK_FALSE(TT_STATUS_IS_ERROR(fx.answer("bad_context", 5)));
    CHECK(fx.answer("bad_context", 6) == TT_STATUS_OK);
    CHECK(fx.rec->saw("still alive", "bad_context"));
    CHECK(tt::host::invalid_context_emits() - before == 5);
    fx.host->commit();  // a commit point reports what was refused since the last one
    CHECK(fx.rec->saw("emits refused: not a live emit context"));
    fx.good_plugin_works(1);
}

TEST_CASE("lengths past the plugin's buffers: beyond the limits refused unread, within them copied as told")
{
    fixture fx("long-lengths");
    fx.load("long_lengths");
    fx.load("reloadable_v1");
    REQUIRE(fx.host->call_each<void()>("hostile_run") == 1);
    REQUIRE(fx.answer_count("long_lengths") == 8);
    for (std::uint32_t i : {0u, 1u, 3u, 4u, 5u}) {
        CAPTURE(i);
        CHECK(refused_with(fx.answer("long_lengths", i), TT_STATUS_QUOTA_EXCEEDED));
    }
    for (std::uint32_t i : {2u, 6u, 7u}) {
        CAPTURE(i);
        CHECK_FALSE(TT_STATUS_IS_ERROR(fx.answer("long_lengths", i)));
    }
    CHECK(fx.errors("long_lengths", receive_errc::quota_exceeded) == 5);
    CHECK(fx.recent_error_mentions("long_lengths", "-byte string"));
    CHECK(fx.recent_error_mentions("long_lengths", "error chain of"));
    CHECK(fx.recent_error_mentions("long_lengths", "fields, at most"));
    // The over-read within the limits: 4000 bytes, as the plugin said.
    bool found = false;
    for (const auto& m : fx.rec->messages("long_lengths"))
        if (m.size() == 4000 && m.rfind("abcxxx", 0) == 0)
            found = true;
    CHECK(found);
    CHECK(fx.rec->saw("still alive", "long_lengths"));
    fx.good_plugin_works(1);
}

TEST_CASE("strings that are not UTF-8 are refused and counted; JSON and console output stay valid UTF-8")
{
    fixture fx("bad-utf8");
    fx.load("bad_utf8");
    fx.load("reloadable_v1");
    REQUIRE(fx.host->call_each<void()>("hostile_run") == 1);
    REQUIRE(fx.answer_count("bad_utf8") == 10);
    for (std::uint32_t i : {0u, 1u, 3u, 4u, 5u, 6u, 7u, 8u}) {
        CAPTURE(i);
        CHECK(refused_with(fx.answer("bad_utf8", i), TT_STATUS_INVALID_UTF8));
    }
    CHECK_FALSE(TT_STATUS_IS_ERROR(fx.answer("bad_utf8", 2)));
    CHECK(fx.answer("bad_utf8", 9) == TT_STATUS_OK);
    CHECK(fx.errors("bad_utf8", receive_errc::invalid_utf8) == 8);
    CHECK(fx.rec->saw("still alive", "bad_utf8"));
    fx.good_plugin_works(1);
    const std::string json = fx.json_out.str(), console = fx.console_out.str();
    CHECK(json.find("still alive") != std::string::npos);
    CHECK(console.find("still alive") != std::string::npos);
    CHECK(valid_utf8(json));
    CHECK(valid_utf8(console));
}

TEST_CASE("a million call sites: refused past the per-plugin quota, counted, memory bounded")
{
    fixture fx("million");
    fx.load("callsite_million");
    fx.load("reloadable_v1");
    const std::size_t rss_before = resident_bytes();
    REQUIRE(fx.host->call_each<void()>("hostile_run") == 1);
    const auto accepted = fx.host->call<std::uint32_t>("callsite_million", "hostile_accepted_count").value_or(0);
    const auto refused = fx.host->call<std::uint32_t>("callsite_million", "hostile_refused_count").value_or(0);
    CHECK(accepted + refused == 1000000);
    CHECK(accepted == fx.opts.limits.max_callsites);
    CHECK(fx.errors("callsite_million", receive_errc::quota_exceeded) == refused);
    auto st = fx.host->plugin("callsite_million");
    CHECK(st->stats.callsites == fx.opts.limits.max_callsites);
    CHECK(st->recent_errors.size() <= fx.opts.limits.error_log_size);
    CHECK(fx.recent_error_mentions("callsite_million", "call-site quota"));
    // Bounded: the accepted call sites and some slack, not a million of them.
    CHECK(st->stats.string_bytes <= fx.opts.limits.max_callsites * 256);
#if defined(__SANITIZE_ADDRESS__)
    (void)rss_before;  // ASan keeps freed memory in quarantine: resident size tells nothing here
#else
    CHECK(resident_bytes() < rss_before + (std::size_t{64} << 20));
#endif
    fx.good_plugin_works(1);
    // The quota holds across a commit and what it writes.
    CHECK(fx.host->commit().empty());
}

TEST_CASE("100,000 nested spans: refused past the depth limit with a clear error; nothing overflows; stacks consistent")
{
    fixture fx("deep");
    fx.load("deep_nesting");
    fx.load("reloadable_v1");
    REQUIRE(fx.host->call_each<void()>("hostile_run") == 1);
    const auto depth = fx.opts.limits.max_span_depth;
    const auto accepted = fx.host->call<std::uint32_t>("deep_nesting", "hostile_accepted_count").value_or(0);
    const auto refused = fx.host->call<std::uint32_t>("deep_nesting", "hostile_refused_count").value_or(0);
    CHECK(accepted == depth);
    CHECK(refused == 100000 - depth);
    CHECK(refused_with(fx.answer("deep_nesting", 0), TT_STATUS_QUOTA_EXCEEDED));
    CHECK(fx.answer("deep_nesting", 1) == TT_STATUS_OK);  // "still alive"
    CHECK(fx.answer("deep_nesting", 2) == 0);             // no exit refused: enters and exits matched
    CHECK(fx.errors("deep_nesting", receive_errc::quota_exceeded) == refused);
    CHECK(fx.recent_error_mentions("deep_nesting", "depth limit"));
    auto st = fx.host->plugin("deep_nesting");
    CHECK(st->stats.live_spans == 0);
    CHECK(fx.rec->opened() >= depth);
    CHECK(fx.rec->closed() >= depth);
    CHECK(fx.pipeline.current_span() == 0);  // this thread's stack is empty again
    CHECK(fx.rec->saw("still alive", "deep_nesting"));
    fx.good_plugin_works(1);
}

TEST_CASE("a span exited on another thread is refused (wrong_thread) and counted; every stack stays consistent")
{
    fixture fx("cross-thread");
    fx.load("cross_thread");
    fx.load("reloadable_v1");
    REQUIRE(fx.host->call_each<void()>("hostile_run") == 1);
    REQUIRE(fx.answer_count("cross_thread") == 8);
    const auto span = fx.answer("cross_thread", 0);
    CHECK_FALSE(TT_STATUS_IS_ERROR(span));
    CHECK(span != 0);
    CHECK(refused_with(fx.answer("cross_thread", 2), TT_STATUS_BAD_EVENT));
    for (std::uint32_t i : {1u, 3u, 4u, 5u, 6u, 7u}) {
        CAPTURE(i);
        CHECK(fx.answer("cross_thread", i) == TT_STATUS_OK);
    }
    CHECK(fx.errors("cross_thread", receive_errc::wrong_thread) == 1);
    CHECK(fx.recent_error_mentions("cross_thread", "wrong_thread"));
    CHECK(fx.host->plugin("cross_thread")->stats.live_spans == 0);
    CHECK(fx.pipeline.current_span() == 0);
    CHECK(fx.rec->saw("still alive", "cross_thread"));
    fx.good_plugin_works(1);
}

TEST_CASE("after a crash, spans newer than the plugin's saved state are closed at restart and reported")
{
    // Disk as a crash leaves it: the plugin state from the last stop, spans
    // from a later commit. An in-process copy of the state folder taken
    // after that commit stands for the folder of the killed process.
    const fs::path crashed = fresh_dir("crash-copy");
    std::uint64_t old_span = 0, new_span = 0, mark = 0;
    {
        fixture fx("crash-rule");
        fx.load("reloadable_v1");
        // A fresh lineage with state hooks is marked at once: its plugin
        // knows no span from next_id 1 on.
        auto fresh = tt::state::load_plugin_state(fx.opts.state_dir, "reloadable");
        REQUIRE(fresh.status == tt::state::load_status::loaded);
        CHECK(fresh.bytes.empty());
        CHECK(fresh.paired_next_id == 1);

        old_span = fx.host->call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 1).value_or(0);
        REQUIRE(old_span != 0);
        REQUIRE(fx.host->unload("reloadable"));  // a stop: plugin state paired with this commit
        auto stopped = tt::state::load_plugin_state(fx.opts.state_dir, "reloadable");
        REQUIRE(stopped.status == tt::state::load_status::loaded);
        mark = stopped.paired_next_id;
        CHECK(mark > old_span);

        fx.load("reloadable_v1");  // continues job 1
        CHECK(fx.host->call<std::uint64_t>("reloadable", "reloadable_open_count").value_or(0) == 1);
        new_span = fx.host->call<std::uint64_t, std::uint64_t>("reloadable", "reloadable_open", 2).value_or(0);
        REQUIRE(new_span >= mark);
        REQUIRE(fx.host->commit().empty());
        for (const auto& e : fs::directory_iterator(fx.opts.state_dir))
            if (e.is_regular_file())
                fs::copy_file(e.path(), crashed / e.path().filename());
    }

    fixture fx("crash-restart");
    fs::create_directories(fx.opts.state_dir);
    for (const auto& e : fs::directory_iterator(crashed))
        fs::copy_file(e.path(), fx.opts.state_dir / e.path().filename());
    CHECK(tt::state::load_plugin_state(fx.opts.state_dir, "reloadable").paired_next_id == mark);
    fx.load("reloadable_v1");
    CHECK(fx.rec->saw("spans closed: newer than the plugin's saved state"));
    auto live = fx.host->live_spans("reloadable");
    REQUIRE(live);
    std::vector<std::uint64_t> ids;
    for (const auto& s : live->spans)
        ids.push_back(s.id);
    CHECK(std::find(ids.begin(), ids.end(), old_span) != ids.end());  // the plugin knows it: kept
    CHECK(std::find(ids.begin(), ids.end(), new_span) == ids.end());  // it cannot: closed
    CHECK(fx.host->call<std::uint64_t>("reloadable", "reloadable_open_count").value_or(0) == 1);
    fx.good_plugin_works(3);
}
