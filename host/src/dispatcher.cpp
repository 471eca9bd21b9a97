// The dispatcher (dispatcher.hpp). Its hot paths take no lock and write no
// cache line that another emitting thread writes too:
//
// - Span nodes live in slabs owned by the dispatcher and are recycled through
//   a free list; a recycled node keeps its strings' capacity, so a span
//   allocates nothing once warm.
// - Readers (event, enter, exit, the filter scope) run inside an epoch
//   section: a per-thread slot that says "I may be reading nodes". A closed
//   node, or a replaced field snapshot, is only recycled once every section
//   that was open when it was retired has ended (epoch-based reclamation,
//   as in RCU). Open spans are found through a table indexed by handle; a
//   node is confirmed by its `live` handle, which is never reused.
// - Counters are striped per thread, padded to a cache line each.
// - Call sites are interned in a table that only grows and is read without a
//   lock; static filter verdicts are cached per thread per call site, and a
//   span's own filter level per span, both keyed by the filter generation.
#include <tracetunnel/host/dispatcher.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tt::host {

namespace {

constexpr std::string_view host_plugin = "host";

// ---------------------------------------------------------------------------
// Epoch-based reclamation, process-wide. A reader publishes the global epoch
// in its own slot (0 = not reading) for the length of a section; whoever
// retires an object notes the epoch, and frees it once no slot shows an epoch
// at or below that note. Slots are never freed: a thread that ends gives its
// slot to a later thread.

struct alignas(64) reader_slot {
    std::atomic<std::uint64_t> epoch{0};
    std::atomic<bool> used{false};
    reader_slot* next = nullptr;  // immutable once published
};

struct alignas(64) epoch_domain {
    std::atomic<std::uint64_t> epoch{1};
    std::atomic<reader_slot*> slots{nullptr};
};

constinit epoch_domain domain;

reader_slot* claim_slot()
{
    for (reader_slot* s = domain.slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
        bool free = false;
        if (!s->used.load(std::memory_order_relaxed) &&
            s->used.compare_exchange_strong(free, true, std::memory_order_acq_rel))
            return s;
    }
    auto* s = new reader_slot;  // once per concurrent thread; kept for later threads
    s->used.store(true, std::memory_order_relaxed);
    reader_slot* head = domain.slots.load(std::memory_order_relaxed);
    do {
        s->next = head;
    } while (!domain.slots.compare_exchange_weak(head, s, std::memory_order_release, std::memory_order_relaxed));
    return s;
}

// Nodes and snapshots reached inside a section stay valid until it ends.
// Sections nest. The slot is written with seq_cst (and the loads of what it
// protects are seq_cst) so that a reclaimer either sees the slot or the
// reader sees the object already unlinked.
class read_section {
public:
    read_section() noexcept;
    ~read_section();
    read_section(const read_section&) = delete;
    read_section& operator=(const read_section&) = delete;
};

// The oldest epoch a section still reads under, max() when none.
std::uint64_t oldest_reader() noexcept
{
    std::uint64_t oldest = std::numeric_limits<std::uint64_t>::max();
    for (reader_slot* s = domain.slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
        const std::uint64_t e = s->epoch.load(std::memory_order_seq_cst);
        if (e != 0 && e < oldest)
            oldest = e;
    }
    return oldest;
}

std::uint64_t next_owner_id() noexcept
{
    static std::atomic<std::uint64_t> counter{1};
    return counter.fetch_add(1, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------
// Span nodes

struct span_version;

struct span_node {
    // The handle while the span is open; 0 once closed (or while free).
    // Handles are never reused, so `live == h` identifies span h.
    std::atomic<span_handle> live{0};
    // 1 while open, plus 1 per child whose parent_node this is.
    std::atomic<std::uint32_t> refs{0};
    // Bumped by record(): keys the cached filter level.
    std::atomic<std::uint32_t> version{0};
    // (filter generation << 32 | version << 8 | span level), 0 = none.
    std::atomic<std::uint64_t> level_cache{0};
    // What layers see: `first` (over `initial`) until a record() or
    // follows_from() publishes a new version; replaced versions are retired.
    std::atomic<const span_version*> version_ptr{nullptr};

    // Set before the node is published, constant while it is in use.
    span_handle handle = 0;
    const model::callsite* site = nullptr;  // interned
    std::string plugin;
    span_handle parent = 0;               // nearest enabled ancestor
    span_node* parent_node = nullptr;     // the same, referenced (refs)
    clock::time_point start;
    std::thread::id thread;
    std::uint64_t plugin_span_id = 0;
    bool resumed = false;
    bool enabled = false;
    model::field_values initial;  // reused, strings and all, when the node is
    span_ref first;               // the view over `initial`
    span_node* next_free = nullptr;  // in a pool's free list
};

// A span's view after a record() or follows_from(): immutable once published.
struct span_version {
    span_ref view;
    model::field_values fields;
    std::vector<span_handle> follows;
};

// The current view of `n`: valid inside the read section that found `n`.
const span_ref& view_of(const span_node& n) noexcept
{
    const span_version* v = n.version_ptr.load();
    return v != nullptr ? v->view : n.first;
}

const model::field_values* fields_of(const span_node& n) noexcept
{
    return view_of(n).fields;
}

// Sets `into` to `values` (a later duplicate name replaces an earlier one),
// assigning over the pairs already there so their strings keep their capacity.
void assign_values(model::field_values& into, field_refs values)
{
    std::size_t n = 0;
    for (const auto& f : values) {
        const auto end = into.begin() + static_cast<std::ptrdiff_t>(n);
        auto it = std::find_if(into.begin(), end, [&](const auto& p) { return p.first == f.name; });
        if (it == end) {
            if (n < into.size()) {
                it = end;
                it->first.assign(f.name);
            } else {
                into.emplace_back(std::string(f.name), model::value());
                it = into.end() - 1;
            }
            ++n;
        }
        if (f.value)
            it->second = *f.value;
        else
            it->second = std::string();
    }
    into.erase(into.begin() + static_cast<std::ptrdiff_t>(n), into.end());
}

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

bool try_ref(span_node* n) noexcept
{
    std::uint32_t r = n->refs.load(std::memory_order_relaxed);
    while (r != 0)
        if (n->refs.compare_exchange_weak(r, r + 1, std::memory_order_acq_rel, std::memory_order_relaxed))
            return true;
    return false;
}

// ---------------------------------------------------------------------------
// Per-thread state, in one trivially destructible thread-local (direct
// access, no initialisation guard). What needs freeing is freed by one
// cleanup object at thread exit, after which `gone` says so: a static
// dispatcher may still be used (spans suspended) during static destruction.

// One entered span of the calling thread, for any dispatcher (owner: its id,
// never reused). The node is only followed after `live` confirms it still is
// that span.
struct frame {
    std::uint64_t owner;
    span_handle span;
    span_node* node;
};

// The answer of the last enabled() call, so that the event() that follows it
// on the same thread does not evaluate the scope again.
struct enabled_cache {
    std::uint64_t owner = 0;
    const model::callsite* site = nullptr;
    std::uint64_t generation = 0;
    bool answer = false;
};

// The filter's static interest in a recently seen call site. Keyed by
// call-site address and id (the id is the hash of the call site's data, and a
// receiver refuses a second, different call site under one id) and the
// filter generation, so set_filter invalidates it.
struct interest_memo {
    std::uint64_t owner = 0;
    const model::callsite* site = nullptr;
    std::uint64_t id = 0;
    std::uint64_t generation = 0;
    std::uint32_t answer = 0;
};
constexpr std::size_t interest_memo_size = 16;  // the top 4 bits of a 64-bit hash pick one
static_assert(sizeof(std::uintptr_t) == 8);

struct thread_state {
    reader_slot* slot = nullptr;
    unsigned depth = 0;   // nested read sections
    unsigned stripe = 0;  // counter stripe + 1, 0 = not yet chosen
    bool gone = false;    // cleanup ran: no more per-thread vectors
    bool views_busy = false;
    std::vector<frame>* frames = nullptr;
    std::vector<span_ref>* views = nullptr;
    enabled_cache last_enabled;
    std::array<interest_memo, interest_memo_size> memos;
};
constinit thread_local thread_state tls;

struct thread_cleanup {
    ~thread_cleanup()
    {
        if (tls.slot != nullptr && tls.depth == 0) {
            tls.slot->epoch.store(0, std::memory_order_release);
            tls.slot->used.store(false, std::memory_order_release);
            tls.slot = nullptr;
        }
        delete tls.frames;
        tls.frames = nullptr;
        delete tls.views;
        tls.views = nullptr;
        tls.gone = true;
    }
};
thread_local thread_cleanup cleanup;

// Called before the thread first takes something the cleanup gives back.
void arm_cleanup() noexcept
{
    [[maybe_unused]] thread_cleanup* c = &cleanup;
}

read_section::read_section() noexcept
{
    if (tls.depth++ == 0) {
        if (tls.slot == nullptr) {
            if (!tls.gone)
                arm_cleanup();
            tls.slot = claim_slot();
        }
        tls.slot->epoch.exchange(domain.epoch.load(std::memory_order_relaxed), std::memory_order_seq_cst);
    }
}

read_section::~read_section()
{
    if (--tls.depth == 0)
        tls.slot->epoch.store(0, std::memory_order_release);
}

unsigned thread_stripe() noexcept
{
    if (tls.stripe == 0) {
        static std::atomic<unsigned> counter{0};
        tls.stripe = counter.fetch_add(1, std::memory_order_relaxed) % 1024 + 1;
    }
    return tls.stripe - 1;
}

// This thread's entered spans; null when it has none yet and `create` is
// false, or after the thread's cleanup.
std::vector<frame>* thread_frames(bool create = false) noexcept
{
    if (tls.frames == nullptr && create && !tls.gone) {
        arm_cleanup();
        tls.frames = new (std::nothrow) std::vector<frame>;
    }
    return tls.frames;
}

// A per-thread vector of span views that keeps its capacity; a nested use
// (not expected: layers must not call back) gets a vector of its own.
class view_scratch {
public:
    view_scratch() noexcept
    {
        if (!tls.views_busy && !tls.gone) {
            if (tls.views == nullptr) {
                arm_cleanup();
                tls.views = new (std::nothrow) std::vector<span_ref>;
            }
            if (tls.views != nullptr) {
                v_ = tls.views;
                took_ = true;
                tls.views_busy = true;
            }
        }
        if (!took_)
            v_ = &own_.emplace();
        v_->clear();
    }
    ~view_scratch()
    {
        if (took_)
            tls.views_busy = false;
    }
    view_scratch(const view_scratch&) = delete;
    view_scratch& operator=(const view_scratch&) = delete;

    // `leaf` and its enabled ancestors, root first.
    std::vector<span_ref>& chain(const span_node* leaf)
    {
        for (const span_node* n = leaf; n != nullptr; n = n->parent_node)
            v_->push_back(view_of(*n));
        std::reverse(v_->begin(), v_->end());
        return *v_;
    }

private:
    bool took_ = false;
    std::optional<std::vector<span_ref>> own_;
    std::vector<span_ref>* v_ = nullptr;
};

// `leaf` and its enabled ancestors, root first. A span without any is handed
// as its own view, uncopied; a chain is copied into `scratch`.
span_context context_of(const span_node* leaf, std::optional<view_scratch>& scratch)
{
    if (leaf == nullptr)
        return {};
    if (leaf->parent_node == nullptr)
        return span_context(&view_of(*leaf), 1);
    return scratch.emplace().chain(leaf);
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

struct interned_site {
    model::callsite site;
    const interned_site* next = nullptr;  // same bucket; immutable once published
};

}  // namespace

struct dispatcher::impl {
    struct config {
        filter f;
        std::uint64_t generation = 0;
    };
    using layer_list = std::vector<std::shared_ptr<layer>>;

    impl() = default;
    impl(const impl&) = delete;
    impl& operator=(const impl&) = delete;
    ~impl();

    const std::uint64_t owner = next_owner_id();

    // The filter and the layer list are read on every event and changed
    // rarely (set_filter, add_layer): readers load a plain pointer, and every
    // version ever published stays allocated until the dispatcher dies, so no
    // reader needs a reference count or a lock.
    mutable std::mutex config_mutex;  // writers only
    std::vector<std::unique_ptr<const config>> configs;
    std::vector<std::unique_ptr<const layer_list>> layer_lists;
    std::atomic<const config*> cfg{nullptr};
    std::atomic<const layer_list*> layers{nullptr};

    // Open spans by handle: slot h % table_size, or the overflow map when
    // that slot is taken by a span still open (one that outlived the
    // table_size spans created after it).
    static constexpr unsigned table_bits = 14;
    static constexpr std::size_t table_size = std::size_t{1} << table_bits;
    // Consecutive handles (likely made by different threads) go to different
    // cache lines of the table.
    static std::size_t slot_of(span_handle h) noexcept
    {
        const std::size_t i = h % table_size;
        return (i >> 3) | ((i & 7) << (table_bits - 3));
    }
    std::unique_ptr<std::atomic<span_node*>[]> table = std::make_unique<std::atomic<span_node*>[]>(table_size);
    mutable std::mutex overflow_mutex;
    std::unordered_map<span_handle, span_node*> overflow;
    std::atomic<std::size_t> overflow_size{0};

    // Node slabs, the free list and the retired list.
    struct retired {
        std::uint64_t epoch = 0;
        span_node* node = nullptr;
        const span_version* version = nullptr;
    };
    static constexpr std::size_t slab_nodes = 256;
    static constexpr std::size_t reclaim_batch = 64;
    // One pool per thread stripe, so that two threads creating and closing
    // spans do not share a mutex. A node may be recycled into another pool
    // than the one that made it (the free lists are intrusive).
    struct alignas(64) node_pool {
        std::mutex mutex;
        std::vector<std::unique_ptr<span_node[]>> slabs;
        span_node* free_list = nullptr;
        std::vector<retired> limbo;
        std::size_t reclaim_at = reclaim_batch;  // limbo size that triggers the next reclaim
    };
    static constexpr std::size_t pool_count = 4;
    std::array<node_pool, pool_count> pools;
    node_pool& my_pool() noexcept { return pools[thread_stripe() % pool_count]; }

    std::mutex record_mutex;  // writers of a node's snapshots (record, follows_from)

    // Interned call sites: buckets of lists that only grow, read without a lock.
    static constexpr std::size_t bucket_count = 4096;
    std::mutex intern_mutex;
    std::vector<std::unique_ptr<const interned_site>> interned;
    std::unique_ptr<std::atomic<const interned_site*>[]> buckets =
        std::make_unique<std::atomic<const interned_site*>[]>(bucket_count);

    std::atomic<span_handle> next_handle{1};

    struct alignas(64) stripe {
        std::atomic<std::uint64_t> spans_created{0}, spans_disabled{0}, spans_opened{0}, spans_ended{0}, events{0},
            events_filtered{0}, anomalies{0};
    };
    static constexpr std::size_t stripe_count = 8;
    mutable std::array<stripe, stripe_count> stripes;

    stripe& mine() const noexcept { return stripes[thread_stripe() % stripe_count]; }
    template <class Member>
    std::uint64_t sum(Member m) const noexcept
    {
        std::uint64_t s = 0;
        for (const auto& st : stripes)
            s += (st.*m).load(std::memory_order_relaxed);
        return s;
    }
    void anomaly() const noexcept { mine().anomalies.fetch_add(1, std::memory_order_relaxed); }

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

    // A copy of `s` that lives as long as the dispatcher (spans outlive the
    // receiver whose call site they came from). Known call sites: no lock.
    const model::callsite* intern(const model::callsite& s)
    {
        auto& bucket = buckets[s.id % bucket_count];
        for (const interned_site* p = bucket.load(std::memory_order_acquire); p != nullptr; p = p->next)
            if (&p->site == &s || p->site == s)
                return &p->site;
        std::lock_guard lock(intern_mutex);
        for (const interned_site* p = bucket.load(std::memory_order_acquire); p != nullptr; p = p->next)
            if (p->site == s)
                return &p->site;
        interned.reserve(interned.size() + 1);
        auto fresh = std::make_unique<interned_site>();
        fresh->site = s;
        fresh->next = bucket.load(std::memory_order_relaxed);
        const interned_site* p = fresh.get();
        interned.push_back(std::move(fresh));
        bucket.store(p, std::memory_order_release);
        return &p->site;
    }

    // --- the handle table (lookups inside a read section) ---

    span_node* lookup(span_handle h) const noexcept
    {
        if (h == 0)
            return nullptr;
        span_node* n = table[slot_of(h)].load();
        if (n != nullptr && n->live.load() == h)
            return n;
        if (overflow_size.load() == 0)
            return nullptr;
        std::lock_guard lock(overflow_mutex);
        auto it = overflow.find(h);
        if (it == overflow.end() || it->second->live.load() != h)
            return nullptr;
        return it->second;
    }

    void insert(span_handle h, span_node* n)
    {
        span_node* empty = nullptr;
        if (table[slot_of(h)].compare_exchange_strong(empty, n))
            return;
        std::lock_guard lock(overflow_mutex);
        overflow.emplace(h, n);
        overflow_size.fetch_add(1);
    }

    void unlink(span_handle h, span_node* n) noexcept
    {
        span_node* expected = n;
        if (table[slot_of(h)].compare_exchange_strong(expected, nullptr))
            return;
        std::lock_guard lock(overflow_mutex);
        if (overflow.erase(h) != 0)
            overflow_size.fetch_sub(1);
    }

    // --- nodes ---

    span_node* alloc_node()
    {
        node_pool& pool = my_pool();
        std::lock_guard lock(pool.mutex);
        if (pool.free_list == nullptr && !pool.limbo.empty())
            reclaim_locked(pool);
        if (pool.free_list == nullptr) {
            pool.slabs.reserve(pool.slabs.size() + 1);
            pool.slabs.push_back(std::make_unique<span_node[]>(slab_nodes));
            for (std::size_t i = slab_nodes; i-- > 0;) {
                span_node* n = &pool.slabs.back()[i];
                n->next_free = pool.free_list;
                pool.free_list = n;
            }
        }
        span_node* n = pool.free_list;
        pool.free_list = n->next_free;
        n->next_free = nullptr;
        return n;
    }

    // Hands `r` to reclamation once no reader can see it any more.
    void retire(retired r) noexcept
    {
        node_pool& pool = my_pool();
        try {
            std::lock_guard lock(pool.mutex);
            r.epoch = domain.epoch.load();
            pool.limbo.push_back(r);
            if (pool.limbo.size() >= pool.reclaim_at)
                reclaim_locked(pool);
        } catch (...) {
            anomaly();  // not recycled: freed when the dispatcher dies
        }
    }

    // Under record_mutex: `next` becomes what layers see of `n`.
    static void publish_version(span_node& n, std::unique_ptr<span_version> next) noexcept
    {
        next->view = n.first;
        next->view.fields = &next->fields;
        next->view.follows_from = std::span<const span_handle>(next->follows);
        n.version_ptr.store(next.release());
    }

    // Drops one reference; the last one retires the node.
    void unref(span_node* n) noexcept
    {
        if (n->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            retire(retired{0, n, nullptr});
    }

    // Under pool.mutex. Never throws: a recycled node's parent, when that was
    // its last reference, takes the freed place in the list.
    static void reclaim_locked(node_pool& pool) noexcept
    {
        domain.epoch.fetch_add(1);
        const std::uint64_t oldest = oldest_reader();
        const std::uint64_t now = domain.epoch.load();
        auto& limbo = pool.limbo;
        std::size_t keep = 0;
        for (std::size_t i = 0; i < limbo.size(); ++i) {
            const retired r = limbo[i];
            if (r.epoch >= oldest) {
                limbo[keep++] = r;
                continue;
            }
            delete r.version;
            if (span_node* n = r.node) {
                delete n->version_ptr.exchange(nullptr);
                span_node* p = std::exchange(n->parent_node, nullptr);
                n->next_free = pool.free_list;
                pool.free_list = n;
                if (p != nullptr && p->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
                    limbo[keep++] = retired{now, p, nullptr};
            }
        }
        limbo.resize(keep);
        // What a section still holds waits for the next batch, not the next retire.
        pool.reclaim_at = keep + reclaim_batch;
    }

    // --- this thread's spans (inside a read section) ---

    span_node* pop_frame(span_handle span) noexcept
    {
        auto* frp = thread_frames();
        if (frp == nullptr)
            return nullptr;
        auto& fr = *frp;
        for (auto it = fr.rbegin(); it != fr.rend(); ++it)
            if (it->owner == owner && it->span == span) {
                span_node* n = it->node;
                fr.erase(std::next(it).base());
                return n;
            }
        return nullptr;
    }

    // The innermost enabled span entered on this thread that is still open:
    // what a contextual parent resolves to.
    const span_node* current_node() const noexcept
    {
        const auto* frp = thread_frames();
        if (frp == nullptr)
            return nullptr;
        const auto& fr = *frp;
        for (auto it = fr.rbegin(); it != fr.rend(); ++it)
            if (it->owner == owner && it->node->live.load() == it->span && it->node->enabled)
                return it->node;
        return nullptr;
    }

    // The filter level a span opens for what is inside it, cached per span
    // for (filter generation, values version).
    static level_filter span_level(span_node& n, const config& c) noexcept
    {
        const std::uint64_t key = ((c.generation & 0xffffffffULL) << 32) |
                                  ((static_cast<std::uint64_t>(n.version.load()) & 0xffffffULL) << 8);
        const std::uint64_t cached = n.level_cache.load(std::memory_order_relaxed);
        if (cached != 0 && (cached & ~std::uint64_t{0xff}) == key)
            return static_cast<level_filter>(cached & 0xff);
        const level_filter l = c.f.span_level(*n.site, fields_of(n));
        n.level_cache.store(key | static_cast<std::uint64_t>(l), std::memory_order_relaxed);
        return l;
    }

    // The most verbose level the enabled open spans entered on this thread
    // open (what filter::enabled_at takes as the scope).
    level_filter scope_level(const config& c) const noexcept
    {
        level_filter best = level_filter::off;
        const auto* fr = thread_frames();
        if (fr == nullptr)
            return best;
        for (const frame& f : *fr)
            if (f.owner == owner && f.node->live.load() == f.span && f.node->enabled && f.node->site != nullptr)
                best = std::max(best, span_level(*f.node, c));
        return best;
    }

    // The static interest of `site`, cached per thread.
    std::uint32_t static_interest(const config& c, const model::callsite& site) const noexcept
    {
        const auto addr = reinterpret_cast<std::uintptr_t>(&site);
        interest_memo& m = tls.memos[(addr * 0x9E3779B97F4A7C15ULL) >> 60];
        if (m.owner == owner && m.site == &site && m.id == site.id && m.generation == c.generation)
            return m.answer;
        const std::uint32_t i = c.f.interest(site);
        m = interest_memo{owner, &site, site.id, c.generation, i};
        return i;
    }

    // enter/exit: hands span `span` (found inside the caller's section) to every layer.
    template <class Call>
    void to_layers_one(const span_node* node, Call call) noexcept
    {
        if (!node->enabled)
            return;
        const auto* list = load_layers();
        if (list->empty())
            return;
        const span_ref& view = view_of(*node);
        for (const auto& l : *list)
            call(*l, view);
    }
};

dispatcher::impl::~impl()
{
    for (const node_pool& pool : pools) {
        for (const auto& slab : pool.slabs)
            for (std::size_t i = 0; i < slab_nodes; ++i)
                delete slab[i].version_ptr.load();
        for (const retired& r : pool.limbo)
            delete r.version;
    }
    if (auto* fr = thread_frames())
        std::erase_if(*fr, [&](const frame& f) { return f.owner == owner; });
}

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
    const std::uint32_t i = impl_->static_interest(*cfg, site);
    if (i == TT_INTEREST_NEVER)
        return false;
    // A span may enable itself by its own values: new_span decides.
    if (i == TT_INTEREST_ALWAYS || site.kind == model::callsite_kind::span)
        return true;
    bool answer = false;
    {
        read_section rs;
        answer = cfg->f.enabled_at(site, impl_->scope_level(*cfg));
    }
    tls.last_enabled = enabled_cache{impl_->owner, &site, cfg->generation, answer};
    return answer;
}

span_handle dispatcher::new_span(const span_attrs& attrs) noexcept
{
    const span_handle h = impl_->next_handle.fetch_add(1, std::memory_order_relaxed);
    auto& st = impl_->mine();
    st.spans_created.fetch_add(1, std::memory_order_relaxed);
    span_node* node = nullptr;
    bool published = false;
    try {
        const model::callsite* site = attrs.site ? impl_->intern(*attrs.site) : nullptr;
        if (site == nullptr)
            impl_->anomaly();
        node = impl_->alloc_node();
        // The node is ours alone until it is published (live, then the table).
        node->handle = h;
        node->site = site;
        node->plugin.assign(attrs.plugin);
        node->parent = 0;
        node->parent_node = nullptr;
        node->start = attrs.time;
        node->thread = attrs.thread;
        node->plugin_span_id = attrs.plugin_span_id;
        node->resumed = attrs.resumed;
        node->enabled = false;
        assign_values(node->initial, attrs.values);
        node->version_ptr.store(nullptr, std::memory_order_relaxed);
        node->version.store(0, std::memory_order_relaxed);
        node->level_cache.store(0, std::memory_order_relaxed);
        node->refs.store(1, std::memory_order_relaxed);

        const auto cfg = impl_->load_config();
        const auto layers = impl_->load_layers();
        read_section rs;
        if (attrs.parent != 0) {
            span_node* p = impl_->lookup(attrs.parent);
            span_node* visible = p == nullptr ? nullptr : p->enabled ? p : p->parent_node;
            if (p == nullptr || (visible != nullptr && !try_ref(visible))) {
                impl_->anomaly();  // a parent we do not know (or closed meanwhile): the span becomes a root
            } else if (visible != nullptr) {
                node->parent_node = visible;
                node->parent = visible->handle;
            }
        }
        if (site != nullptr) {
            if (impl_->static_interest(*cfg, *site) == TT_INTEREST_ALWAYS)
                node->enabled = true;
            else
                node->enabled = cfg->f.enabled_at(*site, impl_->scope_level(*cfg), &node->initial);
        }
        span_ref& first = node->first;
        first = span_ref{};
        first.id = h;
        first.site = site;
        first.plugin = node->plugin;
        first.parent = node->parent;
        first.fields = &node->initial;
        first.start = node->start;
        first.thread = node->thread;
        first.resumed = node->resumed;
        first.plugin_span_id = node->plugin_span_id;
        node->live.store(h);
        impl_->insert(h, node);
        published = true;
        st.spans_opened.fetch_add(1, std::memory_order_relaxed);
        if (!node->enabled) {
            st.spans_disabled.fetch_add(1, std::memory_order_relaxed);
            return h;
        }
        if (!layers->empty()) {
            std::optional<view_scratch> views;
            const span_context chain = context_of(node, views);
            for (const auto& l : *layers)
                l->on_new_span(chain);
        }
    } catch (...) {
        impl_->anomaly();
        if (node != nullptr && !published) {
            node->live.store(0);
            impl_->retire(impl::retired{0, node, nullptr});  // back to the free list, its parent let go
        }
    }
    return h;
}

void dispatcher::record(span_handle span, field_refs values) noexcept
{
    try {
        const auto layers = impl_->load_layers();
        read_section rs;
        span_node* node = impl_->lookup(span);
        if (node == nullptr) {
            impl_->anomaly();
            return;
        }
        const span_version* old = nullptr;
        {
            std::lock_guard lock(impl_->record_mutex);
            old = node->version_ptr.load();
            auto next = std::make_unique<span_version>();
            next->fields = *fields_of(*node);
            merge(next->fields, values);
            if (old != nullptr)
                next->follows = old->follows;
            impl_->publish_version(*node, std::move(next));
            node->version.fetch_add(1);
        }
        if (old != nullptr)
            impl_->retire(impl::retired{0, nullptr, old});
        if (!node->enabled || layers->empty())
            return;
        std::optional<view_scratch> views;
        const span_context chain = context_of(node, views);
        for (const auto& l : *layers)
            l->on_record(chain, values);
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::follows_from(span_handle span, span_handle cause) noexcept
{
    try {
        const auto layers = impl_->load_layers();
        read_section rs;
        span_node* node = impl_->lookup(span);
        if (node == nullptr || cause == 0 || cause >= impl_->next_handle.load()) {
            impl_->anomaly();
            return;
        }
        const span_version* old = nullptr;
        {
            std::lock_guard lock(impl_->record_mutex);
            old = node->version_ptr.load();
            const auto& links = view_of(*node).follows_from;
            if (std::find(links.begin(), links.end(), cause) != links.end())
                return;
            auto next = std::make_unique<span_version>();
            next->fields = *fields_of(*node);
            next->follows.assign(links.begin(), links.end());
            next->follows.push_back(cause);
            impl_->publish_version(*node, std::move(next));
        }
        if (old != nullptr)
            impl_->retire(impl::retired{0, nullptr, old});
        if (!node->enabled || layers->empty())
            return;
        const span_ref& view = view_of(*node);
        for (const auto& l : *layers)
            l->on_follows_from(view, cause);
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::enter(span_handle span) noexcept
{
    try {
        read_section rs;
        span_node* node = impl_->lookup(span);
        if (node == nullptr) {
            impl_->anomaly();
            return;
        }
        if (auto* fr = thread_frames(true))
            fr->push_back(frame{impl_->owner, span, node});
        impl_->to_layers_one(node, [](layer& l, const span_ref& view) { l.on_enter(view); });
    } catch (...) {
        impl_->anomaly();
    }
}

void dispatcher::exit(span_handle span) noexcept
{
    // The stack is this thread's own: no lock needed to pop it.
    read_section rs;
    if (impl_->pop_frame(span) == nullptr)
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
    read_section rs;
    const span_node* node = impl_->lookup(span);
    if (node == nullptr) {
        impl_->anomaly();
        return;
    }
    impl_->to_layers_one(node, [](layer& l, const span_ref& view) { l.on_exit(view); });
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
    read_section rs;
    span_node* node = impl_->lookup(span);
    span_handle expected = span;
    if (node == nullptr || !node->live.compare_exchange_strong(expected, 0)) {
        impl_->anomaly();  // unknown, or closed already: close once
        return;
    }
    impl_->unlink(span, node);
    impl_->mine().spans_ended.fetch_add(1, std::memory_order_relaxed);
    // This thread's frame, if the span is still entered here.
    while (impl_->pop_frame(span) != nullptr) {
    }
    try {
        const auto layers = impl_->load_layers();
        if (node->enabled && !layers->empty()) {
            std::optional<view_scratch> views;
            const span_context chain = context_of(node, views);
            for (const auto& l : *layers)
                if (suspended)
                    l->on_suspend(chain);
                else
                    l->on_close(chain);
        }
    } catch (...) {
        impl_->anomaly();
    }
    impl_->unref(node);
}

// The hot path: no lock, no allocation once warm, no reference counts. The
// span chain is read in place inside a read section.
// Layers must not call back into the dispatcher (layers.hpp says so).
void dispatcher::event(const event_record& ev) noexcept
{
    if (!ev.site) {
        impl_->anomaly();
        return;
    }
    try {
        const auto* cfg = impl_->load_config();
        const auto* layers = impl_->load_layers();
        read_section rs;
        bool pass = false;
        const enabled_cache c = tls.last_enabled;
        tls.last_enabled.site = nullptr;
        if (c.owner == impl_->owner && c.site == ev.site && c.generation == cfg->generation) {
            pass = c.answer;
        } else {
            const std::uint32_t i = impl_->static_interest(*cfg, *ev.site);
            if (i == TT_INTEREST_ALWAYS)
                pass = true;
            else if (i == TT_INTEREST_SOMETIMES)
                pass = cfg->f.enabled_at(*ev.site, impl_->scope_level(*cfg));
        }
        if (!pass) {
            impl_->mine().events_filtered.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        const span_node* leaf = nullptr;
        if (ev.contextual) {
            leaf = impl_->current_node();
        } else if (ev.parent != 0) {
            const span_node* p = impl_->lookup(ev.parent);
            if (p == nullptr)
                impl_->anomaly();
            else
                leaf = p->enabled ? p : p->parent_node;
        }
        impl_->mine().events.fetch_add(1, std::memory_order_relaxed);
        if (layers->empty())
            return;
        event_view v;
        v.site = ev.site;
        v.plugin = ev.plugin;
        v.values = ev.values;
        v.time = ev.time;
        v.thread = ev.thread;
        std::optional<view_scratch> views;
        v.spans = context_of(leaf, views);
        for (const auto& l : *layers)
            l->on_event(v);
    } catch (...) {
        impl_->anomaly();
    }
}

span_handle dispatcher::current_span() const noexcept
{
    read_section rs;
    const span_node* n = impl_->current_node();
    return n != nullptr ? n->handle : 0;
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
        return impl_->intern(cs);
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
    using st = impl::stripe;
    stats s;
    s.spans_created = impl_->sum(&st::spans_created);
    s.spans_disabled = impl_->sum(&st::spans_disabled);
    s.events = impl_->sum(&st::events);
    s.events_filtered = impl_->sum(&st::events_filtered);
    s.anomalies = impl_->sum(&st::anomalies);
    const std::uint64_t ended = impl_->sum(&st::spans_ended);
    const std::uint64_t opened = impl_->sum(&st::spans_opened);
    s.spans_live = opened > ended ? opened - ended : 0;
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
