// The version of the tracetunnel host library this program was built with
// (meson's project version). The control socket's greeting, the OTLP
// resource and every tool's --version report it, so an operator can tell
// which build answers.
//
//   fmt::print("tt-host {}\n", tt::host::library_version());
#pragma once

#include <string_view>

namespace tt::host {

std::string_view library_version() noexcept;

}  // namespace tt::host
