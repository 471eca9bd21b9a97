/*
 * The example application's own plugin interface: how the demo host hands
 * work to the example plugins. Not part of tracetunnel's ABI; a real host
 * application defines its own entry points the same way.
 *
 *   void example_tick(uint64_t tick);   called periodically by the demo host
 *   const char *example_handle(const char *request);
 *                                       optional: answers a request (e.g.
 *                                       "status"); the answer stays valid
 *                                       until the plugin's next call on the
 *                                       same thread, copy it to keep it
 */
#ifndef TRACETUNNEL_EXAMPLE_APP_H
#define TRACETUNNEL_EXAMPLE_APP_H

#include <stdint.h>

#define EXAMPLE_SYMBOL_TICK "example_tick"
typedef void (*example_tick_fn)(uint64_t tick);

#define EXAMPLE_SYMBOL_HANDLE "example_handle"
typedef const char *(*example_handle_fn)(const char *request);

#endif
