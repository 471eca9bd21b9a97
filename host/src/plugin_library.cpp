#include <tracetunnel/host/plugin_library.hpp>

#include <boost/dll/library_info.hpp>
#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <exception>
#include <fstream>

namespace tt::host {

namespace {

constexpr const char* required_exports[] = {TT_SYMBOL_ABI_VERSION, TT_SYMBOL_DESCRIBE, TT_SYMBOL_START,
                                            TT_SYMBOL_STOP};

load_error make_error(load_errc code, const std::filesystem::path& file, std::string reason,
                      std::string plugin = {})
{
    return load_error{code, file, std::move(plugin), std::move(reason)};
}

bool starts_with_elf_magic(const std::filesystem::path& file)
{
    std::ifstream in(file, std::ios::binary);
    char magic[4] = {};
    in.read(magic, 4);
    return in.gcount() == 4 && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F';
}

std::string copy_str(const tt_str& s)
{
    return (s.ptr == nullptr || s.len == 0) ? std::string() : std::string(s.ptr, s.len);
}

}  // namespace

std::string load_error::message() const
{
    // Appended piece by piece: GCC 12 at -O3 warns (-Wrestrict, a false
    // positive) about `"'" + plugin + "' "`.
    std::string out = "plugin ";
    if (!plugin.empty())
        out.append("'").append(plugin).append("' ");
    out.append("(").append(file.string()).append("): ").append(reason);
    return out;
}

std::string abi_incompatibility(std::uint32_t v)
{
    const std::uint32_t major = TT_ABI_MAJOR_OF(v);
    const std::uint32_t minor = TT_ABI_MINOR_OF(v);
    const std::string have = std::to_string(major) + "." + std::to_string(minor);
    const std::string host = std::to_string(TT_ABI_VERSION_MAJOR) + "." + std::to_string(TT_ABI_VERSION_MINOR);
    if (major < TT_ABI_OLDEST_MAJOR)
        return "ABI version " + have + " is too old: this host accepts " + std::to_string(TT_ABI_OLDEST_MAJOR) +
               ".0 up to " + host + "; rebuild the plugin against the current tracetunnel headers";
    if (major > TT_ABI_VERSION_MAJOR || (major == TT_ABI_VERSION_MAJOR && minor > TT_ABI_VERSION_MINOR))
        return "ABI version " + have + " is newer than this host's " + host + "; upgrade the host";
    return {};
}

plugin_library::~plugin_library() = default;

std::variant<std::shared_ptr<plugin_library>, load_error> open_plugin(const std::filesystem::path& file)
{
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec))
        return make_error(load_errc::not_found, file, "no such file");
    if (!starts_with_elf_magic(file))
        return make_error(load_errc::not_a_shared_object, file, "not a shared object (no ELF header)");

    std::vector<std::string> exports;
    try {
        boost::dll::library_info info(file);
        exports = info.symbols();
    } catch (const std::exception& e) {
        return make_error(load_errc::not_a_shared_object, file,
                          std::string("not a readable shared object: ") + e.what());
    }
    std::sort(exports.begin(), exports.end());
    for (const char* name : required_exports)
        if (!std::binary_search(exports.begin(), exports.end(), std::string(name)))
            return make_error(load_errc::missing_export, file,
                              std::string("missing export ") + name +
                                  " (define the plugin with TT_PLUGIN / TT_C_PLUGIN from tracetunnel headers)");

    std::shared_ptr<plugin_library> lib(new plugin_library());
    lib->file_ = file;
    lib->exports_ = std::move(exports);
    lib->lib_ = std::make_unique<boost::dll::shared_library>();
    boost::dll::fs::error_code load_ec;
    lib->lib_->load(file, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, load_ec);
    if (load_ec)
        return make_error(load_errc::load_failed, file, "dlopen failed: " + load_ec.message());

    const auto has = [&](const char* name) {
        return std::binary_search(lib->exports_.begin(), lib->exports_.end(), std::string(name));
    };
    const std::uint32_t abi = lib->lib_->get<const std::uint32_t>(TT_SYMBOL_ABI_VERSION);
    lib->description_.abi_version = abi;
    if (std::string why = abi_incompatibility(abi); !why.empty())
        return make_error(load_errc::incompatible_abi, file, why);

    auto describe = lib->lib_->get<const tt_plugin_info*()>(TT_SYMBOL_DESCRIBE);
    const tt_plugin_info* info = describe();
    if (info == nullptr || info->struct_size < sizeof(tt_plugin_info) || info->name.len == 0 ||
        info->name.ptr == nullptr)
        return make_error(load_errc::bad_description, file,
                          "tt_plugin_describe returned no usable description (a name is required)");
    lib->description_.name = copy_str(info->name);
    lib->description_.version = copy_str(info->version);
    lib->description_.description = copy_str(info->description);

    lib->start_ = lib->lib_->get<int32_t(const tt_host*)>(TT_SYMBOL_START);
    lib->stop_ = lib->lib_->get<void()>(TT_SYMBOL_STOP);
    if (has(TT_SYMBOL_INTEREST_CHANGED))
        lib->interest_changed_ = lib->lib_->get<void()>(TT_SYMBOL_INTEREST_CHANGED);
    if (has(TT_SYMBOL_SAVE_STATE))
        lib->save_state_ = lib->lib_->get<int32_t(tt_write_fn, void*)>(TT_SYMBOL_SAVE_STATE);
    if (has(TT_SYMBOL_RESTORE_STATE))
        lib->restore_state_ = lib->lib_->get<int32_t(const void*, uint64_t)>(TT_SYMBOL_RESTORE_STATE);
    return lib;
}

std::shared_ptr<plugin_library> plugin_library::remote(std::filesystem::path file, plugin_description description,
                                                       std::vector<std::string> exports, bool has_interest_changed,
                                                       bool has_state_hooks, std::shared_ptr<plugin_backend> backend)
{
    std::shared_ptr<plugin_library> lib(new plugin_library());
    lib->file_ = std::move(file);
    lib->description_ = std::move(description);
    lib->exports_ = std::move(exports);
    std::sort(lib->exports_.begin(), lib->exports_.end());
    lib->remote_interest_changed_ = has_interest_changed;
    lib->remote_state_hooks_ = has_state_hooks;
    lib->backend_ = std::move(backend);
    return lib;
}

std::variant<std::monostate, load_error> plugin_library::start(const tt_host& host) const
{
    if (backend_)
        return backend_->start(host);
    int32_t rc = -1;
    try {
        rc = start_(&host);
    } catch (...) {
        return make_error(load_errc::start_failed, file_, "tt_plugin_start threw an exception",
                          description_.name);
    }
    if (rc != 0)
        return make_error(load_errc::start_failed, file_, "tt_plugin_start returned " + std::to_string(rc),
                          description_.name);
    return std::monostate{};
}

void* plugin_library::find_export_address(const std::string& name) const noexcept
{
    if (backend_ || !std::binary_search(exports_.begin(), exports_.end(), name))
        return nullptr;
    try {
        return reinterpret_cast<void*>(&lib_->get<char>(name));
    } catch (...) {
        return nullptr;
    }
}

void plugin_library::stop() const noexcept
{
    if (backend_)
        return backend_->stop();
    try {
        stop_();
    } catch (...) {
        // A throwing stop is the plugin's bug; the host still unloads it.
    }
}

void plugin_library::interest_changed() const noexcept
{
    if (backend_ && remote_interest_changed_)
        return backend_->interest_changed();
    if (interest_changed_ == nullptr)
        return;
    try {
        interest_changed_();
    } catch (...) {
    }
}

bool plugin_library::save_state(std::vector<std::uint8_t>& out) const
{
    if (backend_ && remote_state_hooks_)
        return backend_->save_state(out);
    if (save_state_ == nullptr)
        return false;
    out.clear();
    const tt_write_fn append = [](void* ctx, const void* data, uint64_t len) -> int32_t {
        auto* buf = static_cast<std::vector<std::uint8_t>*>(ctx);
        const auto* bytes = static_cast<const std::uint8_t*>(data);
        try {
            buf->insert(buf->end(), bytes, bytes + len);
        } catch (...) {
            return -1;
        }
        return 0;
    };
    try {
        return save_state_(append, &out) == 0;
    } catch (...) {
        return false;
    }
}

bool plugin_library::restore_state(const std::vector<std::uint8_t>& data) const
{
    if (backend_ && remote_state_hooks_)
        return backend_->restore_state(data);
    if (restore_state_ == nullptr)
        return false;
    try {
        return restore_state_(data.data(), data.size()) == 0;
    } catch (...) {
        return false;
    }
}

}  // namespace tt::host
