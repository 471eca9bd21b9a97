#include <tracetunnel/host/usdt_layer.hpp>

#if defined(TT_HAVE_USDT)

// The semaphores are defined here (as `dtrace -G` would generate them), so
// every probe's note names its semaphore and tracers switch it on.
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

#include <string>
#include <variant>

extern "C" {
// Section .probes is where tracers expect semaphores; `used` keeps them in
// the binary even where no probe site survives optimisation.
#define TT_USDT_SEMAPHORE(name) \
    __extension__ unsigned short tracetunnel_##name##_semaphore __attribute__((used, section(".probes")))
TT_USDT_SEMAPHORE(span_new);
TT_USDT_SEMAPHORE(span_enter);
TT_USDT_SEMAPHORE(span_exit);
TT_USDT_SEMAPHORE(span_close);
TT_USDT_SEMAPHORE(event);
#undef TT_USDT_SEMAPHORE
}

namespace tt::host {

namespace {

// The kernel writes the semaphore behind the compiler's back: read it as volatile.
inline bool armed(const unsigned short& semaphore) noexcept
{
    return __builtin_expect(*static_cast<const volatile unsigned short*>(&semaphore) != 0, 0);
}

// The string arguments must be NUL-terminated; views are not. Copies are made
// only while a tracer is attached.
struct probe_args {
    std::string plugin;
    const char* name = "";
    const char* target = "";
    unsigned level = 0;
    unsigned long long span = 0;
    unsigned long long parent = 0;
};

probe_args args_of(const span_ref& s)
{
    probe_args a;
    a.plugin.assign(s.plugin.data(), s.plugin.size());
    if (s.site) {
        a.name = s.site->name.c_str();
        a.target = s.site->target.c_str();
        a.level = static_cast<unsigned>(s.site->level);
    }
    a.span = s.id;
    a.parent = s.parent;
    return a;
}

class usdt_layer final : public layer {
public:
    void on_new_span(span_context scope) noexcept override
    {
        if (!armed(tracetunnel_span_new_semaphore) || scope.empty())
            return;
        fire([&] {
            const auto a = args_of(scope.back());
            STAP_PROBE6(tracetunnel, span_new, a.plugin.c_str(), a.name, a.level, a.span, a.parent, a.target);
        });
    }
    void on_enter(const span_ref& span) noexcept override
    {
        if (!armed(tracetunnel_span_enter_semaphore))
            return;
        fire([&] {
            const auto a = args_of(span);
            STAP_PROBE6(tracetunnel, span_enter, a.plugin.c_str(), a.name, a.level, a.span, a.parent, a.target);
        });
    }
    void on_exit(const span_ref& span) noexcept override
    {
        if (!armed(tracetunnel_span_exit_semaphore))
            return;
        fire([&] {
            const auto a = args_of(span);
            STAP_PROBE6(tracetunnel, span_exit, a.plugin.c_str(), a.name, a.level, a.span, a.parent, a.target);
        });
    }
    void on_close(span_context scope) noexcept override
    {
        if (!armed(tracetunnel_span_close_semaphore) || scope.empty())
            return;
        fire([&] {
            const auto a = args_of(scope.back());
            STAP_PROBE6(tracetunnel, span_close, a.plugin.c_str(), a.name, a.level, a.span, a.parent, a.target);
        });
    }
    void on_event(const event_view& ev) noexcept override
    {
        if (!armed(tracetunnel_event_semaphore))
            return;
        fire([&] {
            probe_args a;
            a.plugin.assign(ev.plugin.data(), ev.plugin.size());
            if (ev.site) {
                a.name = ev.site->name.c_str();
                a.level = static_cast<unsigned>(ev.site->level);
            }
            if (!ev.spans.empty()) {
                a.span = ev.spans.back().id;
                a.parent = ev.spans.back().parent;
            }
            // A borrowed value is not NUL-terminated: the probe gets a copy.
            // A local, not a thread_local: a probe argument must be a
            // register or stack operand (a TLS operand, "x@dtpoff(%rax)",
            // is one bpftrace cannot read, and it refuses the probe).
            std::string message;
            for (const auto& f : ev.values) {
                if (f.name != "message" || !f.value)
                    continue;
                if (f.value.type() == value_ref::kind::string || f.value.type() == value_ref::kind::debug_text)
                    message.assign(f.value.text());
                break;
            }
            STAP_PROBE6(tracetunnel, event, a.plugin.c_str(), a.name, a.level, a.span, a.parent, message.c_str());
        });
    }
    std::uint64_t errors() const noexcept override { return errors_.load(std::memory_order_relaxed); }

private:
    // Copying a plugin name can throw (bad_alloc); a layer must not.
    template <class F>
    void fire(F&& f) noexcept
    {
        try {
            f();
        } catch (...) {
            errors_.fetch_add(1, std::memory_order_relaxed);
        }
    }

    std::atomic<std::uint64_t> errors_{0};
};

}  // namespace

bool usdt_available() noexcept
{
    return true;
}

std::shared_ptr<layer> make_usdt_layer()
{
    return std::make_shared<usdt_layer>();
}

}  // namespace tt::host

#else  // no sys/sdt.h at build time

namespace tt::host {

bool usdt_available() noexcept
{
    return false;
}

std::shared_ptr<layer> make_usdt_layer()
{
    return nullptr;
}

}  // namespace tt::host

#endif
