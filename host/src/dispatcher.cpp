#include <tracetunnel/host/dispatcher.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tt::host {

namespace {

constexpr std::string_view host_plugin = "host";

struct span_node {
    span_handle handle = 0;
    std::shared_ptr<const model::callsite> site;
    std::string plugin;
    span_handle parent = 0;                  // nearest enabled ancestor
    std::shared_ptr<span_node> parent_node;  // the same, kept alive for the chain
    clock::time_point start;
    std::thread::id thread;
    std::uint64_t plugin_span_id = 0;
    bool resumed = false;
    bool enabled = false;
    // Copy-on-write, swapped under the registry lock.
    std::shared_ptr<const model::field_values> fields;
    std::shared_ptr<const std::vector<span_handle>> follows;
};

// One span of a context, held alive while layers look at it.
struct held {
    std::shared_ptr<span_node> node;
    std::shared_ptr<const model::field_values> fields;
    std::shared_ptr<const std::vector<span_handle>> follows;
};

void merge(model::field_values& into, field_refs values)
{
    for (const auto& f : values) {
        model::value v = f.value ? *f.value : model::value(std::string());
        auto it = std::find_if(into.begin(), into.end(), [&](const auto& p) { return p.first == f.name; });
        if (it != into.end())
            it->second = std::move(v);
        else
            into.emplace_back(std::string(f.name), std::move(v));
    }
}

std::uint64_t fnv(std::uint64_t h, std::string_view s) noexcept
{
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    h ^= 0xff;  // separator
    h *= 0x100000001b3ULL;
    return h;
}

// Per thread: the answer of the last enabled() call, so that the event()
// that follows it on the same thread does not evaluate the scope again.
struct enabled_cache {
    const void* owner = nullptr;
    const model::callsite* site = nullptr;
    std::uint64_t generation = 0;
    bool answer = false;
};
thread_local enabled_cache last_enabled;

}  // namespace

struct dispatcher::impl {
    struct config {
        filter f;
        std::uint64_t generation = 0;
    };
    using layer_list = std::vector<std::shared_ptr<layer>>;

    // The filter and the layer list are read on every event and changed
    // rarely (set_filter, add_layer): readers load a plain pointer, and every
    // version ever published stays allocated until the dispatcher dies, so no
    // reader needs a reference count or a lock.
    mutable std::mutex config_mutex;  // writers only
    std::vector<std::unique_ptr<const config>> configs;
    std::vector<std::unique_ptr<const layer_list>> layer_lists;
    std::atomic<const config*> cfg{nullptr};
    std::atomic<const layer_list*> layers{nullptr};

    mutable std::shared_mutex registry_mutex;
    std::unordered_map<span_handle, std::shared_ptr<span_node>> spans;
    thread_span_stack stack;

    std::mutex intern_mutex;
    std::unordered_map<std::uint64_t, std::vector<std::weak_ptr<const model::callsite>>> interned;
    std::vector<std::shared_ptr<const model::callsite>> host_sites;  // strong: host call sites live as long as we do

    std::atomic<span_handle> next_handle{1};
    std::atomic<std::uint64_t> spans_created{0}, spans_disabled{0}, events{0}, events_filtered{0}, anomalies{0};

    const config* load_config() const noexcept { return cfg.load(std::memory_order_acquire); }
    const layer_list* load_layers() const noexcept { return layers.load(std::memory_order_acquire); }
    // Under config_mutex.
    void publish(std::unique_ptr<const config> c)
    {
        configs.push_back(std::move(c));
        cfg.store(configs.back().get(), std::memory_order_release);
    }
    void publish(std::unique_ptr<const layer_list> l)
    {
        layer_lists.push_back(std::move(l));
        layers.store(layer_lists.back().get(), std::memory_order_release);
    }
    void anomaly() noexcept { anomalies.fetch_add(1, std::memory_order_relaxed); }

    std::shared_ptr<const model::callsite> intern(const model::callsite& s)
    {
        std::lock_guard lock(intern_mutex);
        auto& list = interned[s.id];
        std::shared_ptr<const model::callsite> found;
        std::erase_if(list, [&](const std::weak_ptr<const model::callsite>& w) {
            auto p = w.lock();
            if (!p)
                return true;
            if (!found && (p.get() == &s || *p == s))
                found = std::move(p);
            return false;
        });
        if (found)
            return found;
        auto p = std::make_shared<const model::callsite>(s);
        list.push_back(p);
        return p;
    }

    span_node* find_locked(span_handle h) const noexcept
    {
        auto it = spans.find(h);
        return it == spans.end() ? nullptr : it->second.get();
    }

    // The innermost enabled span entered on this thread, 0 for none
    // (registry lock held): what a contextual parent resolves to.
    span_handle current_locked() const noexcept
    {
        return stack.current_if([&](span_handle h) {
            const span_node* n = find_locked(h);
            return n != nullptr && n->enabled;
        });
    }

    // The enabled spans entered on this thread, innermost first (registry lock held).
    void scope_locked(std::vector<span_view>& out) const noexcept
    {
        stack.current_if([&](span_handle h) {
            auto it = spans.find(h);
            if (it != spans.end() && it->second->enabled) {
                try {
                    out.push_back(span_view{it->second->site.get(), it->second->fields.get()});
                } catch (...) {
                }
            }
            return false;
        });
    }

    // `leaf` and its enabled ancestors, root first (registry lock held).
    static void chain_locked(const std::shared_ptr<span_node>& leaf, std::vector<held>& out)
    {
        for (auto n = leaf; n; n = n->parent_node)
            out.push_back(held{n, n->fields, n->follows});
        std::reverse(out.begin(), out.end());
    }

    // A span as layers see it; valid while `n` and its snapshots are held.
    static span_ref view_of(const span_node& n) noexcept
    {
        span_ref r;
        r.id = n.handle;
        r.site = n.site.get();
        r.plugin = n.plugin;
        r.parent = n.parent;
        r.fields = n.fields.get();
        r.start = n.start;
        r.thread = n.thread;
        r.resumed = n.resumed;
        r.plugin_span_id = n.plugin_span_id;
        if (n.follows)
            r.follows_from = std::span<const span_handle>(*n.follows);
        return r;
    }

    static void views_of(const std::vector<held>& chain, std::vector<span_ref>& out)
    {
        out.reserve(chain.size());
        for (const auto& h : chain) {
            span_ref r = view_of(*h.node);
            r.fields = h.fields.get();
            r.follows_from = h.follows ? std::span<const span_handle>(*h.follows) : std::span<const span_handle>();
            out.push_back(r);
        }
    }

    // enter/exit: finds `span`, runs `known` (still under the lock) when it
    // exists, and hands the enabled span to every layer. Share-locked through
    // the fan-out, as in event(): the node is read in place.
    template <class Known, class Call>
    void to_layers_one(span_handle span, Known known, Call call) noexcept
    {
        try {
            const auto* list = load_layers();
            std::shared_lock lock(registry_mutex);
            const span_node* node = find_locked(span);
            if (node == nullptr) {
                anomaly();
                return;
            }
            known();
            if (!node->enabled)
                return;
            const span_ref view = view_of(*node);
            for (const auto& l : *list)
                call(*l, view);
        } catch (...) {
            anomaly();
        }
    }

    // The enabled node an event or child with this parent handle belongs to.
    std::shared_ptr<span_node> visible_locked(span_handle parent) const noexcept
    {
        if (parent == 0)
            return nullptr;
        auto it = spans.find(parent);
        if (it == spans.end())
            return nullptr;
        return it->second->enabled ? it->second : it->second->parent_node;
    }
};

dispatcher::dispatcher() : dispatcher(std::get<filter>(parse_filter("info"))) {}

dispatcher::dispatcher(filter f) : impl_(std::make_unique<impl>())
{
    impl_->publish(std::make_unique<const impl::config>(impl::config{std::move(f), 1}));
    impl_->publish(std::make_unique<const impl::layer_list>());
}

dispatcher::~dispatcher() = default;

void dispatcher::set_filter(filter f) noexcept
{
    try {
        std::lock_guard lock(impl_->config_mutex);
        const std::uint64_t generation = impl_->load_config()->generation + 1;
        impl_->publish(std::make_unique<const impl::config>(impl::config{std::move(f), generation}));
    } catch (...) {
        impl_->anomaly();
    }
}

filter dispatcher::current_filter() const noexcept
{
    return impl_->load_config()->f;
}

std::uint64_t dispatcher::filter_generation() const noexcept
{
    return impl_->load_config()->generation;
}

void dispatcher::add_layer(std::shared_ptr<layer> l)
{
    if (!l)
        return;
    std::lock_guard lock(impl_->config_mutex);
    auto next = std::make_unique<impl::layer_list>(*impl_->load_layers());
    next->push_back(std::move(l));
    impl_->publish(std::unique_ptr<const impl::layer_list>(std::move(next)));
}

interest dispatcher::interest_in(const model::callsite& site) noexcept
{
    return static_cast<interest>(impl_->load_config()->f.interest(site));
}

bool dispatcher::enabled(const model::callsite& site) noexcept
{
    const auto cfg = impl_->load_config();
    const std::uint32_t i = cfg->f.interest(site);
    if (i == TT_INTEREST_NEVER)
        return false;
    // A span may enable itself by its own values: new_span decides.
    if (i == TT_INTEREST_ALWAYS || site.kind == model::callsite_kind::span)
        return true;
    bool answer = false;
    try {
        std::vector<span_view> scope;
        std::shared_lock lock(impl_->registry_mutex);
        impl_->scope_locked(scope);
        answer = cfg->f.enabled(site, scope);
    } catch (...) {
        impl_->anomaly();
    }
    last_enabled = enabled_cache{impl_.get(), &site, cfg->generation, answer};
    return answer;
}

span_handle dispatcher::new_span(const span_attrs& attrs) noexcept
{
    const span_handle h = impl_->next_handle.fetch_add(1, std::memory_order_relaxed);
    impl_->spans_created.fetch_add(1, std::memory_order_relaxed);
    try {
        auto node = std::make_shared<span_node>();
        node->handle = h;
        node->plugin = std::string(attrs.plugin);
        node->start = attrs.time;
        node->thread = attrs.thread;
        node->plugin_span_id = attrs.plugin_span_id;
        node->resumed = attrs.resumed;
        auto values = std::make_shared<model::field_values>();
        values->reserve(attrs.values.size());
        merge(*values, attrs.values);
        node->fields = values;
        // Most spans never get a follows-from link: they share one empty list
        // (copy-on-write, like the fields) instead of allocating their own.
        static const auto no_links = std::make_shared<const std::vector<span_handle>>();
        node->follows = no_links;
        if (attrs.site)
            node->site = impl_->intern(*attrs.site);
        else
            impl_->anomaly();

        const auto cfg = impl_->load_config();
        const auto layers = impl_->load_layers();
        std::vector<held> chain;
        {
            std::unique_lock lock(impl_->registry_mutex);
            if (attrs.parent != 0) {
                if (impl_->find_locked(attrs.parent) == nullptr)
                    impl_->anomaly();  // a parent we do not know: the span becomes a root
                node->parent_node = impl_->visible_locked(attrs.parent);
                node->parent = node->parent_node ? node->parent_node->handle : 0;
            }
            if (node->site) {
                if (cfg->f.interest(*node->site) == TT_INTEREST_ALWAYS) {
                    node->enabled = true;
                } else {
                    std::vector<span_view> scope;
                    impl_->scope_locked(scope);
                    node->enabled = cfg->f.enabled(*node->site, scope, values.get());
                }
            }
            impl_->spans.emplace(h, node);
            if (node->enabled && !layers->empty())
                impl::chain_locked(node, chain);
        }
        if (!node->enabled) {
            impl_->spans_disabled.fetch_add(1, std::memory_order_relaxed);
            return h;
        }
        if (!chain.empty()) {
            std::vector<span_ref> views;
            impl::views_of(chain, views);
            for (const auto& l : *layers)
                l->on_new_span(views);
        }
    } catch (...) {
        impl_->anomaly();
    }
    return h;
}

void dispatcher::record(span_handle span, field_refs values) noexcept
{
    try {
        const auto layers = impl_->load_layers();
        std::vector<held> chain;
        {
            std::unique_lock lock(impl_->registry_mutex);
            auto it = impl_->spans.find(span);
            if (it == impl_->spans.end()) {
                impl_->anomaly();
                return;
            }
            auto& node = it->second;
            auto next = std::make_shared<model::field_values>(*node->fields);
            merge(*next, values);
            node->fields = std::move(next);
            if (!node->enabled || layers->empty())
                return;
            impl::chain_locked(node, chain);
        }
        std::vector<span_ref> views;
        impl::views_of(chain, views);
        for (const auto& l : *layers)
            l->on_record(views, values);
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::follows_from(span_handle span, span_handle cause) noexcept
{
    try {
        const auto layers = impl_->load_layers();
        std::vector<held> chain;
        {
            std::unique_lock lock(impl_->registry_mutex);
            auto it = impl_->spans.find(span);
            if (it == impl_->spans.end() || cause == 0 || cause >= impl_->next_handle.load()) {
                impl_->anomaly();
                return;
            }
            auto& node = it->second;
            if (std::find(node->follows->begin(), node->follows->end(), cause) != node->follows->end())
                return;
            auto next = std::make_shared<std::vector<span_handle>>(*node->follows);
            next->push_back(cause);
            node->follows = std::move(next);
            if (!node->enabled || layers->empty())
                return;
            chain.push_back(held{node, node->fields, node->follows});
        }
        std::vector<span_ref> views;
        impl::views_of(chain, views);
        for (const auto& l : *layers)
            l->on_follows_from(views.front(), cause);
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::enter(span_handle span) noexcept
{
    impl_->to_layers_one(span, [&] { impl_->stack.push(span); },
                         [](layer& l, const span_ref& view) { l.on_enter(view); });
}

void dispatcher::exit(span_handle span) noexcept
{
    // The stack is this thread's own: no lock needed to pop it.
    if (!impl_->stack.pop(span))
        impl_->anomaly();  // not entered on this thread
    exit_to_layers(span);
}

void dispatcher::force_exit(span_handle span, std::thread::id thread) noexcept
{
    if (thread == std::this_thread::get_id()) {
        exit(span);
        return;
    }
    // Another thread's stack cannot be touched from here: its frame stays and
    // is skipped once the span is closed (a rollback closes what it exits).
    exit_to_layers(span);
}

void dispatcher::exit_to_layers(span_handle span) noexcept
{
    impl_->to_layers_one(span, [] {}, [](layer& l, const span_ref& view) { l.on_exit(view); });
}

void dispatcher::close(span_handle span) noexcept
{
    end_span(span, false);
}

void dispatcher::suspend(span_handle span) noexcept
{
    end_span(span, true);
}

void dispatcher::end_span(span_handle span, bool suspended) noexcept
{
    try {
        const auto layers = impl_->load_layers();
        std::vector<held> chain;
        {
            std::unique_lock lock(impl_->registry_mutex);
            auto it = impl_->spans.find(span);
            if (it == impl_->spans.end()) {
                impl_->anomaly();  // unknown, or closed already: close once
                return;
            }
            auto node = std::move(it->second);
            impl_->spans.erase(it);
            // This thread's frame, if the span is still entered here.
            while (impl_->stack.pop(span)) {
            }
            if (!node->enabled || layers->empty())
                return;
            impl::chain_locked(node, chain);
        }
        std::vector<span_ref> views;
        impl::views_of(chain, views);
        for (const auto& l : *layers)
            if (suspended)
                l->on_suspend(views);
            else
                l->on_close(views);
    } catch (...) {
        impl_->anomaly();
    }
}

// The hot path. The registry stays share-locked while the layers look at the
// event, so the span chain is read in place (no reference counts, no copies):
// span nodes and their field snapshots only change under the exclusive lock.
// Layers must not call back into the dispatcher (layers.hpp says so).
void dispatcher::event(const event_record& ev) noexcept
{
    if (!ev.site) {
        impl_->anomaly();
        return;
    }
    // Views of the chain, kept per thread so that an event allocates nothing
    // once warm; a nested call (not expected) gets its own vector.
    thread_local std::vector<span_ref> reused;
    thread_local bool reused_busy = false;
    std::vector<span_ref> own;
    std::vector<span_ref>& views = reused_busy ? own : reused;
    const bool took = !reused_busy;
    reused_busy = true;
    struct unbusy {
        bool took;
        ~unbusy()
        {
            if (took)
                reused_busy = false;
        }
    } guard{took};
    views.clear();
    try {
        const auto* cfg = impl_->load_config();
        const auto* layers = impl_->load_layers();
        std::shared_lock lock(impl_->registry_mutex);
        bool pass = false;
        const enabled_cache c = last_enabled;
        last_enabled = enabled_cache{};
        if (c.owner == impl_.get() && c.site == ev.site && c.generation == cfg->generation) {
            pass = c.answer;
        } else {
            const std::uint32_t i = cfg->f.interest(*ev.site);
            if (i == TT_INTEREST_ALWAYS) {
                pass = true;
            } else if (i == TT_INTEREST_SOMETIMES) {
                std::vector<span_view> scope;
                impl_->scope_locked(scope);
                pass = cfg->f.enabled(*ev.site, scope);
            }
        }
        if (!pass) {
            impl_->events_filtered.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        const span_node* leaf = nullptr;
        span_handle parent = ev.parent;
        if (ev.contextual)
            parent = impl_->current_locked();
        if (parent != 0) {
            const span_node* p = impl_->find_locked(parent);
            if (p == nullptr)
                impl_->anomaly();
            else
                leaf = p->enabled ? p : p->parent_node.get();
        }
        for (const span_node* n = leaf; n != nullptr; n = n->parent_node.get())
            views.push_back(impl::view_of(*n));
        std::reverse(views.begin(), views.end());
        impl_->events.fetch_add(1, std::memory_order_relaxed);
        event_view v;
        v.site = ev.site;
        v.plugin = ev.plugin;
        v.values = ev.values;
        v.time = ev.time;
        v.thread = ev.thread;
        v.spans = views;
        for (const auto& l : *layers)
            l->on_event(v);
    } catch (...) {
        impl_->anomaly();
    }
}

span_handle dispatcher::current_span() const noexcept
{
    std::shared_lock lock(impl_->registry_mutex);
    return impl_->current_locked();
}

const model::callsite* dispatcher::host_callsite(model::callsite_kind kind, model::level lvl, std::string_view name,
                                                 std::string_view target, std::string_view file, std::uint32_t line,
                                                 std::span<const std::string_view> fields) noexcept
{
    try {
        model::callsite cs;
        cs.kind = kind;
        cs.level = lvl;
        cs.name = std::string(name);
        cs.target = std::string(target);
        cs.module_path = std::string(target);
        cs.file = std::string(file);
        cs.line = line;
        for (auto f : fields)
            cs.fields.emplace_back(f);
        std::uint64_t h = 0xcbf29ce484222325ULL;
        h = fnv(h, kind == model::callsite_kind::span ? "span" : "event");
        h = fnv(h, model::to_string(lvl));
        h = fnv(h, cs.name);
        h = fnv(h, cs.target);
        h = fnv(h, cs.file);
        h = fnv(h, std::to_string(line));
        for (const auto& f : cs.fields)
            h = fnv(h, f);
        cs.id = h == 0 ? 1 : h;
        auto p = impl_->intern(cs);
        {
            std::lock_guard lock(impl_->intern_mutex);
            if (std::find(impl_->host_sites.begin(), impl_->host_sites.end(), p) == impl_->host_sites.end())
                impl_->host_sites.push_back(p);
        }
        return p.get();
    } catch (...) {
        impl_->anomaly();
        return nullptr;
    }
}

namespace {

std::string_view base_name(std::string_view file) noexcept
{
    return file;
}

}  // namespace

void dispatcher::host_event(model::level lvl, std::string_view target, std::string_view message,
                            std::initializer_list<host_field> fields, std::source_location loc) noexcept
{
    try {
        std::vector<std::string_view> names;
        names.reserve(fields.size() + 1);
        names.push_back("message");
        for (const auto& f : fields)
            names.push_back(f.name);
        const std::string name = "event " + std::string(base_name(loc.file_name())) + ":" + std::to_string(loc.line());
        const model::callsite* site = host_callsite(model::callsite_kind::event, lvl, name, target, loc.file_name(),
                                                    loc.line(), names);
        if (!site)
            return;
        if (interest_in(*site) == interest::never)
            return;
        const model::value msg{std::string(message)};
        std::vector<field_ref> refs;
        refs.reserve(fields.size() + 1);
        refs.push_back(field_ref{"message", &msg});
        for (const auto& f : fields)
            refs.push_back(field_ref{f.name, &f.value});
        event_record rec;
        rec.site = site;
        rec.plugin = host_plugin;
        rec.parent = current_span();
        rec.values = refs;
        rec.time = clock::now();
        rec.thread = std::this_thread::get_id();
        event(rec);
    } catch (...) {
        impl_->anomaly();
    }
}

host_span_guard dispatcher::enter_host_span(model::level lvl, std::string_view target, std::string_view name,
                                            std::initializer_list<host_field> fields, std::source_location loc) noexcept
{
    try {
        std::vector<std::string_view> names;
        names.reserve(fields.size());
        for (const auto& f : fields)
            names.push_back(f.name);
        const model::callsite* site =
            host_callsite(model::callsite_kind::span, lvl, name, target, loc.file_name(), loc.line(), names);
        if (!site || interest_in(*site) == interest::never)
            return {};
        std::vector<field_ref> refs;
        refs.reserve(fields.size());
        for (const auto& f : fields)
            refs.push_back(field_ref{f.name, &f.value});
        span_attrs attrs;
        attrs.site = site;
        attrs.plugin = host_plugin;
        attrs.parent = current_span();
        attrs.values = refs;
        attrs.time = clock::now();
        attrs.thread = std::this_thread::get_id();
        const span_handle h = new_span(attrs);
        enter(h);
        return host_span_guard(this, h);
    } catch (...) {
        impl_->anomaly();
        return {};
    }
}

dispatcher::stats dispatcher::statistics() const noexcept
{
    stats s;
    s.spans_created = impl_->spans_created.load(std::memory_order_relaxed);
    s.spans_disabled = impl_->spans_disabled.load(std::memory_order_relaxed);
    s.events = impl_->events.load(std::memory_order_relaxed);
    s.events_filtered = impl_->events_filtered.load(std::memory_order_relaxed);
    s.anomalies = impl_->anomalies.load(std::memory_order_relaxed);
    {
        std::shared_lock lock(impl_->registry_mutex);
        s.spans_live = impl_->spans.size();
    }
    for (const auto& l : *impl_->load_layers())
        s.layer_errors += l->errors();
    return s;
}

// --- host_span_guard ---

host_span_guard::host_span_guard(host_span_guard&& o) noexcept
    : d_(std::exchange(o.d_, nullptr)), handle_(std::exchange(o.handle_, 0))
{
}

host_span_guard& host_span_guard::operator=(host_span_guard&& o) noexcept
{
    if (this != &o) {
        release();
        d_ = std::exchange(o.d_, nullptr);
        handle_ = std::exchange(o.handle_, 0);
    }
    return *this;
}

host_span_guard::~host_span_guard()
{
    release();
}

void host_span_guard::release() noexcept
{
    if (d_ && handle_ != 0) {
        d_->exit(handle_);
        d_->close(handle_);
    }
    d_ = nullptr;
    handle_ = 0;
}

void host_span_guard::record(std::string_view name, const model::value& v) noexcept
{
    if (!d_ || handle_ == 0)
        return;
    const field_ref ref{name, &v};
    d_->record(handle_, field_refs(&ref, 1));
}

}  // namespace tt::host
