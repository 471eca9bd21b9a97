// One plugin shared object, checked and loaded with Boost.DLL.
//
// open_plugin() reads the file's export table before loading it, refuses a
// file that is no shared object, lacks a required tt_plugin_* export or
// declares an ABI this host does not speak, and reports why as a value that
// names the file. Nothing here throws.
//
//   auto opened = tt::host::open_plugin("plugins/libsensor.so");
//   if (auto* err = std::get_if<tt::host::load_error>(&opened))
//       std::cerr << err->message() << '\n';
//   else
//       auto lib = std::get<std::shared_ptr<tt::host::plugin_library>>(opened);
#pragma once

#include <tracetunnel/abi.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace boost::dll {
class shared_library;
}

namespace tt::host {

enum class load_errc {
    not_found,
    not_a_shared_object,
    missing_export,
    incompatible_abi,
    bad_description,
    load_failed,
    start_failed,
    crashed,  // an isolated plugin's child process died (isolation.hpp)
};

struct load_error {
    load_errc code;
    std::filesystem::path file;
    std::string plugin;  // empty until the plugin described itself
    std::string reason;

    // "plugin 'orders' (/x/liborders.so): missing export tt_plugin_stop"
    std::string message() const;
};

// The plugin's own description, copied out of its tt_plugin_info.
struct plugin_description {
    std::string name;
    std::string version;
    std::string description;
    std::uint32_t abi_version = 0;
};

// Why a plugin's ABI version is refused, or an empty string when accepted.
std::string abi_incompatibility(std::uint32_t plugin_abi_version);

// A plugin whose code runs elsewhere (isolation.hpp: in a child process).
// A library made with plugin_library::remote forwards these calls to it.
class plugin_backend {
public:
    virtual ~plugin_backend() = default;
    virtual std::variant<std::monostate, load_error> start(const tt_host& host) = 0;
    virtual void stop() noexcept = 0;
    virtual void interest_changed() noexcept = 0;
    virtual bool save_state(std::vector<std::uint8_t>& out) = 0;
    virtual bool restore_state(const std::vector<std::uint8_t>& data) = 0;
};

// A loaded, checked plugin library. The library stays mapped while any
// shared_ptr to it lives: hold one wherever code of the plugin may still run.
class plugin_library {
public:
    ~plugin_library();
    plugin_library(const plugin_library&) = delete;
    plugin_library& operator=(const plugin_library&) = delete;

    const std::filesystem::path& file() const noexcept { return file_; }
    const plugin_description& description() const noexcept { return description_; }

    // Calls tt_plugin_start; a non-zero return is reported as start_failed.
    // A plugin that throws through the C boundary is a broken plugin: the
    // call is guarded anyway so that the host survives it.
    std::variant<std::monostate, load_error> start(const tt_host& host) const;
    void stop() const noexcept;

    bool has_interest_changed() const noexcept { return interest_changed_ != nullptr || remote_interest_changed_; }
    void interest_changed() const noexcept;
    bool has_state_hooks() const noexcept
    {
        return (save_state_ != nullptr && restore_state_ != nullptr) || remote_state_hooks_;
    }
    // Empty optional-like: returns false when the plugin refused or lacks the hooks.
    bool save_state(std::vector<std::uint8_t>& out) const;
    bool restore_state(const std::vector<std::uint8_t>& data) const;

    // An application-specific export (e.g. a request handler the host app
    // defines for its plugins), or nullptr when the plugin lacks it.
    template <class Fn>
    Fn* find_export(const std::string& name) const noexcept
    {
        return reinterpret_cast<Fn*>(find_export_address(name));
    }

    // The exported symbols the file has, as read before loading.
    const std::vector<std::string>& exports() const noexcept { return exports_; }

    // A library whose plugin runs behind `backend` (described and checked
    // there); find_export finds nothing in it. Null for a mapped library.
    static std::shared_ptr<plugin_library> remote(std::filesystem::path file, plugin_description description,
                                                  std::vector<std::string> exports, bool has_interest_changed,
                                                  bool has_state_hooks, std::shared_ptr<plugin_backend> backend);
    plugin_backend* backend() const noexcept { return backend_.get(); }

private:
    friend std::variant<std::shared_ptr<plugin_library>, load_error> open_plugin(const std::filesystem::path&);
    plugin_library() = default;
    void* find_export_address(const std::string& name) const noexcept;

    std::filesystem::path file_;
    plugin_description description_;
    std::vector<std::string> exports_;
    std::unique_ptr<boost::dll::shared_library> lib_;
    tt_plugin_start_fn start_ = nullptr;
    tt_plugin_stop_fn stop_ = nullptr;
    tt_plugin_interest_changed_fn interest_changed_ = nullptr;
    tt_plugin_save_state_fn save_state_ = nullptr;
    tt_plugin_restore_state_fn restore_state_ = nullptr;
    std::shared_ptr<plugin_backend> backend_;
    bool remote_interest_changed_ = false;
    bool remote_state_hooks_ = false;
};

std::variant<std::shared_ptr<plugin_library>, load_error> open_plugin(const std::filesystem::path& file);

}  // namespace tt::host
