// Shared by the fuzz targets: an invariant check that stops the run with a
// message (libFuzzer then saves the input as a crash file), in the libFuzzer
// build and in the corpus replay (replay_main.cpp) alike.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                                          \
    do {                                                                                                \
        if (!(cond)) {                                                                                  \
            std::fprintf(stderr, "%s:%d: invariant broken: %s (%s)\n", __FILE__, __LINE__, what, #cond); \
            std::abort();                                                                               \
        }                                                                                               \
    } while (0)
