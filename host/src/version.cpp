#include <tracetunnel/host/version.hpp>

// Set by host/meson.build from meson.project_version(): one place to bump.
#ifndef TT_PROJECT_VERSION
#error "TT_PROJECT_VERSION must be defined by the build"
#endif

namespace tt::host {

std::string_view library_version() noexcept
{
    return TT_PROJECT_VERSION;
}

}  // namespace tt::host
