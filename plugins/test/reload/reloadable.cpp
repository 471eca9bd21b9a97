// reloadable: the plugin the host's hot-reload tests swap under itself.
// Built twice from this one source: reloadable_v1 and reloadable_v2
// (-DRELOADABLE_V2). Both are plugin "reloadable"; every call site they share
// sits on the same line of this same file, so it keeps its id across the
// reload. v2 changes one message (a value, not part of the id) and adds one
// WARN event call site: the reload diff is exactly "1 added" (the sender
// registers every compiled-in call site at start).
//
// Open "job" spans live in a map; across a reload they travel in the plugin
// state (released here, adopted back by the next build), so the host keeps
// them open and the next build goes on using them.
#define TT_TARGET "reloadable"
#include <tracetunnel/trace.hpp>

#include "test_app.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifdef RELOADABLE_V2
#define RELOADABLE_VERSION "2.0.0"
#define RELOADABLE_BUILD "v2"
#define RELOADABLE_WORKING "working v2"
#else
#define RELOADABLE_VERSION "1.0.0"
#define RELOADABLE_BUILD "v1"
#define RELOADABLE_WORKING "working v1"
#endif

using namespace tt::literals;

namespace {

struct job {
    tt::span span;
    std::uint64_t id = 0;  // kept after the handle is released by save()
};

std::mutex jobs_mutex;
std::map<std::uint64_t, job> jobs;

bool on_start()
{
    TT_INFO("reloadable started", "build"_f = RELOADABLE_BUILD);
    return true;
}

// Emits nothing and keeps the jobs: they survive the reload through the state hooks.
void on_stop() {}

// Decimal text of v, without std::to_string: its digit table is an
// STB_GNU_UNIQUE symbol, which would keep the library from ever unloading.
void append_u64(std::string& out, std::uint64_t v)
{
    char buf[20];
    std::size_t n = 0;
    do {
        buf[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        out += buf[--n];
}

// One "key id\n" line per open job; each handle is released so that the
// host keeps the span open for the next build.
std::string save()
{
    std::lock_guard lk(jobs_mutex);
    std::string out;
    for (auto& [key, j] : jobs) {
        if (!j.span.is_disabled())
            (void)j.span.release();
        append_u64(out, key);
        out += ' ';
        append_u64(out, j.id);
        out += '\n';
    }
    return out;
}

// Decimal digits only, all of `text`, no overflow.
bool parse_u64(std::string_view text, std::uint64_t& out)
{
    if (text.empty() || text.size() > 20)
        return false;
    std::uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9')
            return false;
        const auto d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    out = v;
    return true;
}

bool restore(std::string_view bytes)
{
    // Validate everything before adopting anything: a refused state must not
    // leave handles behind whose destruction would drop the host's spans.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> lines;
    while (!bytes.empty()) {
        const std::size_t nl = bytes.find('\n');
        if (nl == std::string_view::npos)
            return false;
        const std::string_view line = bytes.substr(0, nl);
        bytes.remove_prefix(nl + 1);
        const std::size_t sp = line.find(' ');
        std::uint64_t key = 0, id = 0;
        if (sp == std::string_view::npos || !parse_u64(line.substr(0, sp), key) ||
            !parse_u64(line.substr(sp + 1), id) || (id & TT_STATUS_ERROR_BIT) != 0)
            return false;
        for (const auto& seen : lines)
            if (seen.first == key)
                return false;
        lines.emplace_back(key, id);
    }
    std::map<std::uint64_t, job> restored;
    for (const auto& [key, id] : lines)
        restored.emplace(key, job{tt::span::adopt(id, tt::fields<RELOADABLE_JOB_FIELDS>), id});
    std::lock_guard lk(jobs_mutex);
    jobs.swap(restored);
    return true;
}

}  // namespace

TT_PLUGIN("reloadable", RELOADABLE_VERSION, "Test plugin: open spans carried across a hot reload", on_start, on_stop)
TT_PLUGIN_STATE(save, restore)

extern "C" {

TT_EXPORT std::uint64_t reloadable_open(std::uint64_t key)
{
    tt::span s = TT_INFO_SPAN("job", "key"_f = key, "stage"_f = tt::empty);
    const std::uint64_t id = s.id();
    TT_INFO("job opened", tt::parent(s), "key"_f = key);
    std::lock_guard lk(jobs_mutex);
    jobs[key] = job{std::move(s), id};  // an older job under this key is dropped
    return id;
}

TT_EXPORT void reloadable_step(std::uint64_t key)
{
    std::lock_guard lk(jobs_mutex);
    const auto it = jobs.find(key);
    if (it == jobs.end())
        return;
    const tt::span& s = it->second.span;
    auto entered = s.enter();
    TT_INFO(RELOADABLE_WORKING, "key"_f = key);
#ifdef RELOADABLE_V2
    TT_WARN("extra step in v2", "key"_f = key);
#endif
    s.record("stage"_f = RELOADABLE_BUILD);
}

TT_EXPORT void reloadable_close(std::uint64_t key)
{
    job gone;
    {
        std::lock_guard lk(jobs_mutex);
        const auto it = jobs.find(key);
        if (it == jobs.end())
            return;
        gone = std::move(it->second);
        jobs.erase(it);
    }
    // `gone` drops its span here: the host closes it.
}

TT_EXPORT std::uint64_t reloadable_open_count(void)
{
    std::lock_guard lk(jobs_mutex);
    return jobs.size();
}

TT_EXPORT const char* reloadable_build(void)
{
    return RELOADABLE_BUILD;
}

}  // extern "C"
