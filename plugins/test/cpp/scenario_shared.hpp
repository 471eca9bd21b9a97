// A call site in an inline function that both files of the cpp_scenario
// plugin use (scenario.cpp and scenario_other.cpp): each file's object leaves
// an entry for it in the plugin's table of call sites, and tt_plugin_start
// must still register it once. Include after <tracetunnel/trace.hpp>, with
// the same TT_TARGET and TT_STATIC_MAX_LEVEL in both files.
#pragma once

inline void scenario_shared_site()
{
    using namespace tt::literals;
    TT_INFO("shared", "shared"_f = 1);
}

// scenario_other.cpp: hits the shared call site from the other file.
void scenario_other_file();
