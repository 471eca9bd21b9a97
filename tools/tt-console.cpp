// tt-console: the operator's client of tt-host's control socket
// (docs/CONSOLE.md, protocol 1). Runs commands given with --exec, or an
// interactive prompt with history and tab completion.
#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr int protocol_version = 1;

// Exit statuses.
constexpr int exit_failed = 1;     // a command failed
constexpr int exit_no_host = 2;    // nothing to connect to
constexpr int exit_protocol = 3;   // a tt-host speaking another protocol

volatile std::sig_atomic_t interrupted = 0;

extern "C" void on_sigint(int)
{
    interrupted = 1;
}

// $XDG_STATE_HOME/tracetunnel, or ~/.local/state/tracetunnel (as tt-host).
fs::path default_state_dir()
{
    if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && *xdg == '/')
        return fs::path(xdg) / "tracetunnel";
    if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0')
        return fs::path(home) / ".local" / "state" / "tracetunnel";
    return fs::temp_directory_path() / "tracetunnel-state";
}

// ---------------------------------------------------------------- connection

class connection {
public:
    enum class status { line, closed, interrupted, timeout };

    connection() = default;
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection()
    {
        if (fd_ >= 0)
            ::close(fd_);
    }

    // Empty on success, else why not (errno kept in error_number()).
    std::string open(const std::string& path)
    {
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        if (path.size() >= sizeof(addr.sun_path)) {
            errno_ = ENAMETOOLONG;
            return "socket path too long";
        }
        std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            errno_ = errno;
            return std::strerror(errno_);
        }
        if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
            errno_ = errno;
            ::close(fd_);
            fd_ = -1;
            return std::strerror(errno_);
        }
        return {};
    }
    int error_number() const { return errno_; }
    bool closed() const { return closed_; }

    bool write_line(const std::string& line)
    {
        std::string data = line + "\n";
        std::size_t done = 0;
        while (done < data.size() && !closed_) {
            const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                closed_ = true;
                return false;
            }
            done += static_cast<std::size_t>(n);
        }
        return !closed_;
    }

    // One line (without its newline). timeout_ms < 0 waits for ever; with
    // watch_sigint a Ctrl-C returns status::interrupted.
    status read_line(std::string& out, int timeout_ms, bool watch_sigint)
    {
        int waited = 0;
        for (;;) {
            if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
                out.assign(buffer_, 0, nl);
                buffer_.erase(0, nl + 1);
                return status::line;
            }
            if (closed_)
                return status::closed;
            if (watch_sigint && interrupted)
                return status::interrupted;
            if (timeout_ms >= 0 && waited >= timeout_ms)
                return status::timeout;
            pollfd p{fd_, POLLIN, 0};
            const int step = 100;
            const int r = ::poll(&p, 1, step);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                closed_ = true;
                continue;
            }
            if (r == 0) {
                waited += step;
                continue;
            }
            char chunk[65536];
            const ssize_t n = ::read(fd_, chunk, sizeof(chunk));
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                closed_ = true;
            } else if (n == 0) {
                closed_ = true;
            } else {
                buffer_.append(chunk, static_cast<std::size_t>(n));
            }
        }
    }

private:
    int fd_ = -1;
    int errno_ = 0;
    bool closed_ = false;
    std::string buffer_;
};

struct response {
    bool ok = false;
    json::value result;
    std::string code;
    std::string message;
};

class client {
public:
    explicit client(connection& conn) : conn_(conn) {}

    std::uint64_t send(std::string_view cmd, const json::object& args)
    {
        const std::uint64_t id = next_id_++;
        json::object req;
        req["id"] = id;
        req["cmd"] = cmd;
        if (!args.empty())
            req["args"] = args;
        conn_.write_line(json::serialize(req));
        return id;
    }

    // Waits for the answer to `id`; lines of a subscription are skipped.
    response wait(std::uint64_t id)
    {
        std::string line;
        for (;;) {
            const auto st = conn_.read_line(line, -1, false);
            if (st != connection::status::line)
                return {false, nullptr, "disconnected", "tt-host closed the connection"};
            std::error_code ec;
            json::value v = json::parse(line, ec);
            if (ec || !v.is_object())
                continue;
            const auto& o = v.get_object();
            const auto* rid = o.if_contains("id");
            if (rid == nullptr || !rid->is_number())
                continue;
            std::error_code ec2;
            if (rid->to_number<std::uint64_t>(ec2) != id || ec2)
                continue;
            response r;
            const auto* ok = o.if_contains("ok");
            r.ok = ok != nullptr && ok->is_bool() && ok->get_bool();
            if (const auto* res = o.if_contains("result"))
                r.result = *res;
            if (!r.ok) {
                r.code = "failed";
                if (const auto* err = o.if_contains("error"); err != nullptr && err->is_object()) {
                    if (const auto* c = err->get_object().if_contains("code"); c != nullptr && c->is_string())
                        r.code = std::string(c->get_string());
                    if (const auto* m = err->get_object().if_contains("message"); m != nullptr && m->is_string())
                        r.message = std::string(m->get_string());
                }
            }
            return r;
        }
    }

    response request(std::string_view cmd, const json::object& args = {})
    {
        return wait(send(cmd, args));
    }

    connection& conn() { return conn_; }

private:
    connection& conn_;
    std::uint64_t next_id_ = 1;
};

// ---------------------------------------------------------------- output helpers

struct style {
    bool colour = false;
    std::string paint(std::string_view text, std::string_view code) const
    {
        if (!colour || code.empty())
            return std::string(text);
        return fmt::format("\033[{}m{}\033[0m", code, text);
    }
};

constexpr std::string_view bold = "1";
constexpr std::string_view red = "31";
constexpr std::string_view green = "32";
constexpr std::string_view yellow = "33";
constexpr std::string_view blue = "34";
constexpr std::string_view magenta = "35";
constexpr std::string_view dim = "2";

const json::value* field(const json::value& v, std::string_view key)
{
    if (!v.is_object())
        return nullptr;
    return v.get_object().if_contains(key);
}

std::string text(const json::value* v, std::string_view missing = "-")
{
    if (v == nullptr || v->is_null())
        return std::string(missing);
    if (v->is_string())
        return std::string(v->get_string());
    if (v->is_bool())
        return v->get_bool() ? "yes" : "no";
    if (v->is_int64())
        return std::to_string(v->get_int64());
    if (v->is_uint64())
        return std::to_string(v->get_uint64());
    if (v->is_double())
        return fmt::format("{:.1f}", v->get_double());
    return json::serialize(*v);
}

std::string text(const json::value& obj, std::string_view key, std::string_view missing = "-")
{
    return text(field(obj, key), missing);
}

double number(const json::value* v)
{
    if (v == nullptr)
        return 0;
    if (v->is_int64())
        return static_cast<double>(v->get_int64());
    if (v->is_uint64())
        return static_cast<double>(v->get_uint64());
    if (v->is_double())
        return v->get_double();
    return 0;
}

std::size_t count(const json::value* v)
{
    if (v == nullptr)
        return 0;
    if (v->is_array())
        return v->get_array().size();
    if (v->is_object())
        return v->get_object().size();
    return static_cast<std::size_t>(number(v));
}

// "2026-11-23T17:10:17.123Z" -> "2026-11-23 17:10:17"
std::string short_time(std::string t)
{
    if (t.size() >= 19 && t[10] == 'T') {
        t[10] = ' ';
        t.resize(19);
    }
    return t;
}

std::string age(double ms)
{
    if (ms < 1000)
        return fmt::format("{}ms", static_cast<long long>(ms));
    const auto s = static_cast<long long>(ms / 1000);
    if (s < 60)
        return fmt::format("{:.1f}s", ms / 1000);
    if (s < 3600)
        return fmt::format("{}m{:02}s", s / 60, s % 60);
    if (s < 86400)
        return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
    return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

std::string fields_text(const json::value* fields, bool skip_message = false)
{
    std::string out;
    if (fields == nullptr || !fields->is_object())
        return fields == nullptr ? std::string() : text(fields);
    for (const auto& kv : fields->get_object()) {
        if (skip_message && kv.key() == "message")
            continue;
        if (!out.empty())
            out += ' ';
        out += fmt::format("{}={}", std::string_view(kv.key()), text(&kv.value()));
    }
    return out;
}

std::size_t display_width(std::string_view s)
{
    std::size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80)
            ++n;
    return n;
}

struct cell {
    std::string text;
    std::string_view colour = {};
};

class table {
public:
    explicit table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
    void add(std::vector<cell> row) { rows_.push_back(std::move(row)); }
    bool empty() const { return rows_.empty(); }

    void print(const style& st) const
    {
        std::vector<std::size_t> width(headers_.size());
        for (std::size_t i = 0; i < headers_.size(); ++i)
            width[i] = display_width(headers_[i]);
        for (const auto& row : rows_)
            for (std::size_t i = 0; i < row.size() && i < width.size(); ++i)
                width[i] = std::max(width[i], display_width(row[i].text));
        std::string line;
        for (std::size_t i = 0; i < headers_.size(); ++i)
            line += pad(st.paint(headers_[i], bold), display_width(headers_[i]), width[i], i + 1 == headers_.size());
        fmt::print("{}\n", line);
        for (const auto& row : rows_) {
            line.clear();
            for (std::size_t i = 0; i < row.size() && i < width.size(); ++i)
                line += pad(st.paint(row[i].text, row[i].colour), display_width(row[i].text), width[i],
                            i + 1 == row.size());
            fmt::print("{}\n", line);
        }
    }

private:
    static std::string pad(std::string s, std::size_t shown, std::size_t width, bool last)
    {
        if (last)
            return s;
        s.append(width - shown + 2, ' ');
        return s;
    }
    std::vector<std::string> headers_;
    std::vector<std::vector<cell>> rows_;
};

std::string_view level_colour(std::string level)
{
    std::transform(level.begin(), level.end(), level.begin(), [](unsigned char c) { return std::toupper(c); });
    if (level == "ERROR")
        return red;
    if (level == "WARN")
        return yellow;
    if (level == "INFO")
        return green;
    if (level == "DEBUG")
        return blue;
    if (level == "TRACE")
        return magenta;
    return {};
}

// ---------------------------------------------------------------- renderers

void print_plugins(const json::value& result, const style& st)
{
    table t({"NAME", "VERSION", "GEN", "STATE", "LOADED AT", "RELOADS", "ERRORS"});
    std::vector<std::string> notes;
    auto add = [&](const json::value& p) {
        const std::string state = text(p, "state");
        const std::size_t errors = count(field(p, "errors"));
        std::string reloads = text(p, "reloads", "0");
        if (const auto failed = count(field(p, "failed_reloads")); failed > 0)
            reloads += fmt::format(" ({} failed)", failed);
        t.add({{text(p, "name")},
               {text(p, "version")},
               {text(p, "generation")},
               {state, state == "running" ? green : state == "failed" ? red : std::string_view{}},
               {short_time(text(p, "loaded_at"))},
               {reloads},
               {std::to_string(errors), errors > 0 ? red : std::string_view{}}});
        if (const auto* errs = field(p, "errors"); errs != nullptr && errs->is_array())
            for (const auto& e : errs->get_array())
                notes.push_back(fmt::format("{}: {}", text(p, "name"), text(&e)));
    };
    if (result.is_array()) {
        for (const auto& p : result.get_array())
            add(p);
    } else if (result.is_object()) {
        add(result);
    }
    if (t.empty()) {
        fmt::print("no plugins loaded\n");
        return;
    }
    t.print(st);
    for (const auto& n : notes)
        fmt::print("{}\n", st.paint(n, red));
}

void print_callsites(const json::value& result, const style& st, bool show_plugin)
{
    std::vector<std::string> headers{"ID", "KIND", "LEVEL", "NAME", "TARGET", "FILE:LINE", "INTEREST", "HITS"};
    if (show_plugin)
        headers.insert(headers.begin(), "PLUGIN");
    table t(headers);
    if (result.is_array()) {
        for (const auto& c : result.get_array()) {
            const std::string level = text(c, "level");
            const std::string interest = text(c, "interest");
            std::vector<cell> row{{text(c, "id")},
                                  {text(c, "kind")},
                                  {level, level_colour(level)},
                                  {text(c, "name")},
                                  {text(c, "target")},
                                  {fmt::format("{}:{}", text(c, "file"), text(c, "line"))},
                                  {interest, interest == "never" ? dim : std::string_view{}},
                                  {text(c, "hits", "0")}};
            if (show_plugin)
                row.insert(row.begin(), cell{text(c, "plugin")});
            t.add(std::move(row));
        }
    }
    if (t.empty()) {
        fmt::print("no callsites\n");
        return;
    }
    t.print(st);
}

std::string id_key(const json::value* v)
{
    if (v == nullptr || v->is_null())
        return "0";
    std::string s = text(v);
    if (s == "0x0" || s == "0x" || s.empty())
        return "0";
    return s;
}

void print_spans(const json::value& result, const style& st)
{
    if (!result.is_array() || result.get_array().empty()) {
        fmt::print("no live spans\n");
        return;
    }
    // plugin -> spans, each plugin its own forest.
    std::map<std::string, std::vector<const json::value*>> by_plugin;
    for (const auto& s : result.get_array())
        by_plugin[text(s, "plugin")].push_back(&s);
    table t({"SPAN", "FIELDS", "AGE"});
    for (const auto& [plugin, spans] : by_plugin) {
        std::set<std::string> ids;
        for (const auto* s : spans)
            ids.insert(id_key(field(*s, "id")));
        std::map<std::string, std::vector<const json::value*>> children;
        std::vector<const json::value*> roots;
        for (const auto* s : spans) {
            const std::string parent = id_key(field(*s, "parent"));
            if (parent == "0" || ids.count(parent) == 0)
                roots.push_back(s);
            else
                children[parent].push_back(s);
        }
        t.add({{plugin, bold}, {}, {}});
        std::set<std::string> seen;
        auto walk = [&](auto&& self, const json::value* s, const std::string& prefix, bool last) -> void {
            const std::string id = id_key(field(*s, "id"));
            if (!seen.insert(id).second)
                return;  // a cycle: shown once
            // "entered": on how many threads the span is entered right now.
            const auto entered = static_cast<std::uint64_t>(number(field(*s, "entered")));
            std::string mark;
            if (entered == 1)
                mark = " *entered";
            else if (entered > 1)
                mark = fmt::format(" *entered on {} threads", entered);
            t.add({{fmt::format("{}{}{}{}", prefix, last ? "└─ " : "├─ ", text(*s, "name"), mark)},
                   {fields_text(field(*s, "fields"))},
                   {age(number(field(*s, "age_ms")))}});
            const auto it = children.find(id);
            if (it == children.end())
                return;
            for (std::size_t i = 0; i < it->second.size(); ++i)
                self(self, it->second[i], prefix + (last ? "   " : "│  "), i + 1 == it->second.size());
        };
        for (std::size_t i = 0; i < roots.size(); ++i)
            walk(walk, roots[i], "", i + 1 == roots.size());
    }
    t.print(st);
}

void print_stats(const json::value& result, const style& st)
{
    table t({"PLUGIN", "EVENTS", "EV/S", "ERRORS", "FILTERED", "LIVE SPANS"});
    if (const auto* plugins = field(result, "plugins"); plugins != nullptr && plugins->is_array()) {
        for (const auto& p : plugins->get_array()) {
            const double errors = number(field(p, "errors_total"));
            t.add({{text(p, "name")},
                   {text(p, "events_total", "0")},
                   {fmt::format("{:.1f}", number(field(p, "events_per_second")))},
                   {text(p, "errors_total", "0"), errors > 0 ? red : std::string_view{}},
                   {text(p, "filtered", "0")},
                   {text(p, "live_spans", "0")}});
        }
    }
    if (t.empty())
        fmt::print("no plugins loaded\n");
    else
        t.print(st);
    fmt::print("uptime {}", age(number(field(result, "uptime_ms"))));
    if (const auto* pipe = field(result, "pipeline"); pipe != nullptr && pipe->is_object()) {
        fmt::print("; pipeline: spans created {}, live {}, events {}, filtered {}, anomalies {}, layer errors {}",
                   text(*pipe, "spans_created", "0"), text(*pipe, "spans_live", "0"), text(*pipe, "events", "0"),
                   text(*pipe, "events_filtered", "0"), text(*pipe, "anomalies", "0"),
                   text(*pipe, "layer_errors", "0"));
    }
    if (const auto* con = field(result, "console"); con != nullptr && con->is_object())
        fmt::print("; console clients {}, dropped {}", text(*con, "clients", "0"), text(*con, "dropped", "0"));
    fmt::print("\n");
}

void print_errors(const json::value& result, const style& st)
{
    bool any = false;
    if (const auto* recv = field(result, "receive"); recv != nullptr && recv->is_array() && !recv->get_array().empty()) {
        any = true;
        fmt::print("{}\n", st.paint("receive errors:", bold));
        for (const auto& e : recv->get_array())
            fmt::print("  {}: {}\n", text(e, "plugin"), st.paint(text(e, "message"), red));
    }
    if (const auto* load = field(result, "load"); load != nullptr && load->is_array() && !load->get_array().empty()) {
        any = true;
        fmt::print("{}\n", st.paint("load errors:", bold));
        for (const auto& e : load->get_array())
            fmt::print("  {} ({}): {}\n", text(e, "plugin"), text(e, "file"), st.paint(text(e, "message"), red));
    }
    if (!any)
        fmt::print("no errors\n");
}

std::string list_text(const json::value* v)
{
    if (v == nullptr || v->is_null())
        return "none";
    if (!v->is_array())
        return text(v);
    if (v->get_array().empty())
        return "none";
    std::string out;
    for (const auto& e : v->get_array()) {
        if (!out.empty())
            out += ", ";
        if (e.is_object() && e.get_object().contains("name"))
            out += text(e, "name");
        else
            out += text(&e);
    }
    return out;
}

// A reload report: true when it says the reload worked.
bool print_reload_report(const json::value& r, const style& st)
{
    const auto* okv = field(r, "ok");
    const bool ok = okv == nullptr || !okv->is_bool() || okv->get_bool();
    const std::string plugin = text(r, "plugin");
    if (ok) {
        fmt::print("{}: {} {} -> {} (generation {} -> {}) in {} ms, {} spans carried\n", plugin,
                   st.paint("reloaded", green), text(r, "old_version"), text(r, "new_version"),
                   text(r, "old_generation"), text(r, "new_generation"), text(r, "took_ms"),
                   text(r, "spans_carried", "0"));
    } else {
        fmt::print("{}: {}: {}\n", plugin, st.paint("reload failed", red), text(r, "error"));
    }
    fmt::print("  callsites added: {}\n", list_text(field(r, "added")));
    fmt::print("  callsites removed: {}\n", list_text(field(r, "removed")));
    fmt::print("  callsites changed: {}\n", list_text(field(r, "changed")));
    return ok;
}

void print_event_line(const json::value& line, const style& st)
{
    if (const auto* d = field(line, "dropped")) {
        fmt::print("{}\n", st.paint(fmt::format("... {} events dropped (the console was too slow)", text(d)), yellow));
        return;
    }
    const auto* ev = field(line, "event");
    if (ev == nullptr) {
        fmt::print("{}\n", json::serialize(line));
        return;
    }
    std::string time = text(*ev, "time", "");
    if (auto t = time.find('T'); t != std::string::npos)
        time = time.substr(t + 1, 12);
    const std::string level = text(*ev, "level", "");
    std::string message = text(*ev, "message", "");
    const auto* fields = field(*ev, "fields");
    if (message.empty())
        message = text(field(fields ? *fields : json::value(), "message"), "");
    std::string out = fmt::format("{} {} {} {}: {}", st.paint(time, dim), st.paint(fmt::format("{:>5}", level),
                                  level_colour(level)), text(*ev, "plugin"), text(*ev, "target", ""), message);
    if (const std::string f = fields_text(fields, true); !f.empty())
        out += " " + st.paint(f, dim);
    if (const auto* spans = field(*ev, "spans"); spans != nullptr && spans->is_array() && !spans->get_array().empty()) {
        std::string path;
        for (const auto& s : spans->get_array())
            path += (path.empty() ? "" : ">") + text(&s);
        out += " " + st.paint("in " + path, dim);
    }
    fmt::print("{}\n", out);
}

// ---------------------------------------------------------------- commands

enum class arg_kind { none, plugin_optional, plugin_required, file, filter, text };

struct command_info {
    std::string_view name;
    std::string_view usage;
    std::string_view summary;
    arg_kind arg;
};

constexpr command_info commands[] = {
    {"plugins", "plugins", "list the loaded plugins: version, generation, state, reloads, errors", arg_kind::none},
    {"callsites", "callsites [PLUGIN]", "list the callsites (spans and events) the plugins registered",
     arg_kind::plugin_optional},
    {"spans", "spans [PLUGIN]", "show the live spans as a tree, with their fields and age", arg_kind::plugin_optional},
    {"tail", "tail [--filter DIRECTIVES]", "print events as they happen until Ctrl-C", arg_kind::filter},
    {"filter", "filter | filter set DIRECTIVES", "show or change the host's filter (EnvFilter syntax)",
     arg_kind::text},
    {"reload", "reload PLUGIN", "reload a plugin from its file now", arg_kind::plugin_required},
    {"unload", "unload PLUGIN", "stop and unload a plugin", arg_kind::plugin_required},
    {"load", "load FILE", "load a plugin from a .so file", arg_kind::file},
    {"persist", "persist", "write the live spans and plugin state to the state folder now", arg_kind::none},
    {"stats", "stats", "per plugin counters: events, events per second, errors, filtered, live spans",
     arg_kind::none},
    {"errors", "errors [PLUGIN]", "the receive and load errors", arg_kind::plugin_optional},
    {"diff", "diff PLUGIN", "the last reload report of a plugin: callsites added, removed, changed",
     arg_kind::plugin_required},
    {"help", "help [COMMAND]", "list the commands, or describe one", arg_kind::text},
    {"quit", "quit", "leave the console (Ctrl-D does the same)", arg_kind::none},
};

const command_info* find_command(std::string_view name)
{
    for (const auto& c : commands)
        if (c.name == name)
            return &c;
    return nullptr;
}

// Splits a command line into words; '...' and "..." quote, \ escapes.
std::vector<std::string> split_words(std::string_view line)
{
    std::vector<std::string> words;
    std::string cur;
    bool in_word = false;
    char quote = 0;
    for (std::size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (quote != 0) {
            if (c == quote)
                quote = 0;
            else if (c == '\\' && quote == '"' && i + 1 < line.size())
                cur += line[++i];
            else
                cur += c;
        } else if (c == '\'' || c == '"') {
            quote = c;
            in_word = true;
        } else if (c == '\\' && i + 1 < line.size()) {
            cur += line[++i];
            in_word = true;
        } else if (c == ' ' || c == '\t') {
            if (in_word)
                words.push_back(std::move(cur));
            cur.clear();
            in_word = false;
        } else {
            cur += c;
            in_word = true;
        }
    }
    if (in_word)
        words.push_back(std::move(cur));
    return words;
}

std::string join(const std::vector<std::string>& words, std::size_t from)
{
    std::string out;
    for (std::size_t i = from; i < words.size(); ++i) {
        if (i > from)
            out += ' ';
        out += words[i];
    }
    return out;
}

enum class outcome { ok, failed, quit, disconnected };

struct console {
    client& cl;
    style st;
    bool json_output = false;
    bool interactive = false;

    void print_help(std::string_view which) const
    {
        if (!which.empty()) {
            const auto* c = find_command(which);
            if (c == nullptr) {
                fmt::print(stderr, "tt-console: no command named '{}'; help lists them\n", which);
                return;
            }
            fmt::print("{}\n  {}\n", c->usage, c->summary);
            return;
        }
        std::size_t w = 0;
        for (const auto& c : commands)
            w = std::max(w, c.usage.size());
        fmt::print("commands:\n");
        for (const auto& c : commands)
            fmt::print("  {:<{}}  {}\n", c.usage, w, c.summary);
    }

    outcome usage_error(const command_info& c) const
    {
        fmt::print(stderr, "tt-console: usage: {}\n", c.usage);
        return outcome::failed;
    }

    outcome fail(std::string_view cmd, const response& r) const
    {
        fmt::print(stderr, "tt-console: {}: {}: {}\n", cmd, r.code, r.message);
        return r.code == "disconnected" ? outcome::disconnected : outcome::failed;
    }

    outcome run(std::string_view line)
    {
        const auto words = split_words(line);
        if (words.empty())
            return outcome::ok;
        const auto* c = find_command(words[0]);
        if (c == nullptr) {
            fmt::print(stderr, "tt-console: unknown command '{}' (help lists the commands)\n", words[0]);
            return outcome::failed;
        }
        const std::string_view name = c->name;
        json::object args;
        std::string cmd(name);

        if (name == "quit")
            return outcome::quit;
        if (name == "help") {
            if (words.size() > 2)
                return usage_error(*c);
            print_help(words.size() == 2 ? std::string_view(words[1]) : std::string_view{});
            return words.size() == 2 && find_command(words[1]) == nullptr ? outcome::failed : outcome::ok;
        }
        switch (c->arg) {
        case arg_kind::none:
            if (words.size() != 1)
                return usage_error(*c);
            break;
        case arg_kind::plugin_optional:
            if (words.size() > 2)
                return usage_error(*c);
            if (words.size() == 2)
                args["plugin"] = words[1];
            break;
        case arg_kind::plugin_required:
            if (words.size() != 2)
                return usage_error(*c);
            args["plugin"] = words[1];
            break;
        case arg_kind::file:
            if (words.size() != 2)
                return usage_error(*c);
            args["file"] = words[1];
            break;
        case arg_kind::filter:
            return tail(words);
        case arg_kind::text:  // filter
            if (words.size() == 1)
                break;
            if (words[1] != "set" || words.size() < 3)
                return usage_error(*c);
            cmd = "filter_set";
            args["directives"] = join(words, 2);
            break;
        }

        const response r = cl.request(cmd, args);
        if (!r.ok)
            return fail(cmd, r);
        if (json_output) {
            fmt::print("{}\n", json::serialize(r.result));
            std::fflush(stdout);
            if (name == "reload") {
                const auto* ok = field(r.result, "ok");
                if (ok != nullptr && ok->is_bool() && !ok->get_bool()) {
                    fmt::print(stderr, "tt-console: reload: failed: {}\n", text(r.result, "error"));
                    return outcome::failed;
                }
            }
            return outcome::ok;
        }
        outcome result = outcome::ok;
        if (name == "plugins" || name == "load")
            print_plugins(r.result, st);
        else if (name == "callsites")
            print_callsites(r.result, st, !args.contains("plugin"));
        else if (name == "spans")
            print_spans(r.result, st);
        else if (name == "stats")
            print_stats(r.result, st);
        else if (name == "errors")
            print_errors(r.result, st);
        else if (name == "filter")
            fmt::print("filter: {}\n", text(r.result, "filter"));
        else if (name == "reload" || name == "diff") {
            if (!print_reload_report(r.result, st) && name == "reload")
                result = outcome::failed;
        } else if (name == "unload")
            fmt::print("unloaded {}\n", words[1]);
        else if (name == "persist") {
            const auto* problems = field(r.result, "problems");
            if (problems == nullptr || !problems->is_array() || problems->get_array().empty()) {
                fmt::print("state saved\n");
            } else {
                fmt::print("state saved, with problems:\n");
                for (const auto& p : problems->get_array())
                    fmt::print("  {}\n", st.paint(text(&p), red));
            }
        } else
            fmt::print("{}\n", json::serialize(r.result));
        std::fflush(stdout);
        return result;
    }

    outcome tail(const std::vector<std::string>& words)
    {
        json::object args;
        if (words.size() > 1) {
            if (words[1] == "--filter" && words.size() >= 3)
                args["filter"] = join(words, 2);
            else if (words[1].rfind("--filter=", 0) == 0)
                args["filter"] = words[1].substr(9) + (words.size() > 2 ? " " + join(words, 2) : "");
            else
                return usage_error(*find_command("tail"));
        }
        const response r = cl.request("subscribe", args);
        if (!r.ok)
            return fail("subscribe", r);
        if (interactive)
            fmt::print(stderr, "{}\n", st.paint("tailing events, Ctrl-C stops", dim));

        struct sigaction sa {};
        struct sigaction old {};
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        interrupted = 0;
        sigaction(SIGINT, &sa, &old);

        std::string line;
        bool closed = false;
        for (;;) {
            const auto s = cl.conn().read_line(line, -1, true);
            if (s == connection::status::closed) {
                closed = true;
                break;
            }
            if (s != connection::status::line)
                break;  // Ctrl-C
            std::error_code ec;
            json::value v = json::parse(line, ec);
            if (ec || !v.is_object() || v.get_object().contains("id"))
                continue;
            if (json_output)
                fmt::print("{}\n", json::serialize(v));
            else
                print_event_line(v, st);
            std::fflush(stdout);
        }
        sigaction(SIGINT, &old, nullptr);
        interrupted = 0;
        if (closed) {
            fmt::print(stderr, "tt-console: tt-host closed the connection\n");
            return interactive ? outcome::disconnected : outcome::ok;
        }
        const response u = cl.request("unsubscribe");
        if (!u.ok)
            return fail("unsubscribe", u);
        return outcome::ok;
    }
};

// ---------------------------------------------------------------- interactive

console* active_console = nullptr;
std::vector<std::string> completion_words;

extern "C" char* completion_generator(const char* text, int state)
{
    static std::size_t index = 0;
    if (state == 0)
        index = 0;
    const std::string_view prefix(text);
    while (index < completion_words.size()) {
        const std::string& w = completion_words[index++];
        if (w.compare(0, prefix.size(), prefix) == 0)
            return ::strdup(w.c_str());
    }
    return nullptr;
}

std::vector<std::string> plugin_names()
{
    std::vector<std::string> names;
    if (active_console == nullptr)
        return names;
    const response r = active_console->cl.request("plugins");
    if (r.ok && r.result.is_array())
        for (const auto& p : r.result.get_array())
            if (const auto* n = field(p, "name"); n != nullptr && n->is_string())
                names.emplace_back(n->get_string());
    return names;
}

extern "C" char** complete_line(const char* text, int start, int /*end*/)
{
    const auto before = split_words(std::string_view(rl_line_buffer, static_cast<std::size_t>(start)));
    completion_words.clear();
    rl_attempted_completion_over = 1;  // no file names unless asked for
    if (before.empty()) {
        for (const auto& c : commands)
            completion_words.emplace_back(c.name);
    } else if (const auto* c = find_command(before[0]); c != nullptr) {
        if (before.size() == 1) {
            switch (c->arg) {
            case arg_kind::plugin_optional:
            case arg_kind::plugin_required:
                completion_words = plugin_names();
                break;
            case arg_kind::file:
                rl_attempted_completion_over = 0;  // readline's file name completion
                return nullptr;
            case arg_kind::filter:
                completion_words = {"--filter"};
                break;
            case arg_kind::text:
                if (c->name == "help")
                    for (const auto& h : commands)
                        completion_words.emplace_back(h.name);
                else
                    completion_words = {"set"};
                break;
            case arg_kind::none:
                break;
            }
        }
    }
    return rl_completion_matches(text, completion_generator);
}

extern "C" int on_signal_event()
{
    if (interrupted) {
        interrupted = 0;
        rl_replace_line("", 0);
        rl_crlf();
        rl_on_new_line();
        rl_redisplay();
    }
    return 0;
}

int interactive_loop(console& con)
{
    active_console = &con;
    rl_readline_name = "tt-console";
    rl_attempted_completion_function = complete_line;
    rl_catch_signals = 0;
    rl_signal_event_hook = on_signal_event;
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, nullptr);

    using_history();
    stifle_history(1000);
    const fs::path history_file = default_state_dir() / "console_history";
    bool keep_history = false;
    {
        std::error_code ec;
        fs::create_directories(history_file.parent_path(), ec);
        if (::access(history_file.c_str(), F_OK) == 0)
            keep_history = ::access(history_file.c_str(), W_OK) == 0;
        else
            keep_history = ::access(history_file.parent_path().c_str(), W_OK) == 0;
        if (keep_history)
            read_history(history_file.c_str());
    }

    int status = 0;
    for (;;) {
        interrupted = 0;
        char* raw = readline("tt> ");
        if (raw == nullptr) {  // Ctrl-D
            fmt::print("\n");
            break;
        }
        std::string line(raw);
        std::free(raw);
        if (line.find_first_not_of(" \t") == std::string::npos)
            continue;
        if (history_length == 0 || history_get(history_base + history_length - 1) == nullptr ||
            line != history_get(history_base + history_length - 1)->line)
            add_history(line.c_str());
        if (keep_history)
            write_history(history_file.c_str());
        const outcome o = con.run(line);
        if (o == outcome::quit)
            break;
        if (o == outcome::disconnected || con.cl.conn().closed()) {
            fmt::print(stderr, "tt-console: tt-host closed the connection\n");
            status = exit_failed;
            break;
        }
    }
    if (keep_history)
        write_history(history_file.c_str());
    active_console = nullptr;
    return status;
}

}  // namespace

int main(int argc, char** argv)
{
    const std::string socket_default = (default_state_dir() / "control.sock").string();
    CLI::App app{"tt-console: the operator's console of a running tt-host, through its control socket\n"
                 "(docs/CONSOLE.md). Without --exec: an interactive prompt with history and tab completion;\n"
                 "'help' lists the commands. Exit status: 0 ok, 1 a command failed, 2 no tt-host at the socket,\n"
                 "3 the tt-host speaks another protocol."};
    app.set_version_flag("--version", "tt-console " TT_PROJECT_VERSION);
    std::string socket_path = socket_default;
    std::vector<std::string> exec;
    bool json_output = false;
    bool no_colour = false;
    app.add_option("--socket", socket_path,
                   "tt-host's control socket (default: $XDG_STATE_HOME/tracetunnel/control.sock, else "
                   "~/.local/state/tracetunnel/control.sock)")
        ->capture_default_str();
    app.add_option("--exec,-e", exec, "run this command (e.g. \"reload orders\"), then exit; repeatable, run in order")
        ->take_all();
    app.add_flag("--json", json_output, "print each result as one JSON line instead of tables");
    app.add_flag("--no-color", no_colour, "never colour the output (default: colour on a terminal)");
    CLI11_PARSE(app, argc, argv);

    std::signal(SIGPIPE, SIG_IGN);

    connection conn;
    if (const std::string err = conn.open(socket_path); !err.empty()) {
        const int e = conn.error_number();
        if (e == ECONNREFUSED || e == ENOENT)
            fmt::print(stderr, "tt-console: no tt-host is running at {} ({})\n", socket_path,
                       e == ECONNREFUSED ? "connection refused" : "no such file");
        else
            fmt::print(stderr, "tt-console: cannot connect to {}: {}\n", socket_path, err);
        return exit_no_host;
    }

    std::string greeting_line;
    const auto gs = conn.read_line(greeting_line, 5000, false);
    if (gs != connection::status::line) {
        fmt::print(stderr, "tt-console: {} at {} sent no greeting\n",
                   gs == connection::status::closed ? "the server closed the connection:" : "the server",
                   socket_path);
        return exit_no_host;
    }
    std::error_code ec;
    const json::value greeting = json::parse(greeting_line, ec);
    if (ec || text(greeting, "hello", "") != "tracetunnel") {
        fmt::print(stderr, "tt-console: {} is not a tt-host control socket (unexpected greeting)\n", socket_path);
        return exit_no_host;
    }
    const auto* proto = field(greeting, "protocol");
    if (proto == nullptr || !proto->is_number() || number(proto) != protocol_version) {
        fmt::print(stderr, "tt-console: tt-host at {} speaks protocol {}, this tt-console speaks {}\n", socket_path,
                   text(proto, "?"), protocol_version);
        return exit_protocol;
    }

    client cl(conn);
    console con{cl, style{!no_colour && ::isatty(STDOUT_FILENO) != 0}, json_output, exec.empty()};

    if (!exec.empty()) {
        int status = 0;
        for (const auto& line : exec) {
            const outcome o = con.run(line);
            if (o == outcome::quit)
                break;
            if (o == outcome::failed || o == outcome::disconnected)
                status = exit_failed;
        }
        return status;
    }

    if (::isatty(STDOUT_FILENO) != 0)
        fmt::print("connected to tt-host {} (pid {}) at {}; 'help' lists the commands\n", text(greeting, "version"),
                   text(greeting, "host_pid"), socket_path);
    return interactive_loop(con);
}
