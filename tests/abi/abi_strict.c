/* Built with -std=c99 -pedantic -Wall -Wextra -Werror: if abi.h stops being
 * strict C99 this file stops compiling, and the build fails. */
#include <tracetunnel/abi.h>

uint64_t tt_strict_c99_probe(const tt_event *ev);
uint64_t tt_strict_c99_probe(const tt_event *ev)
{
    return ev->callsite ? tt_callsite_hash(ev->callsite) : ev->span_id;
}
