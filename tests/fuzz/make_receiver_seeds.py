#!/usr/bin/env python3
"""Writes the hand-made seeds of the receiver fuzz target into
corpus/receiver/: byte programs in the encoding fuzz_receiver.cpp reads
(one op byte, then that op's bytes). Run it again after changing the
encoding; libFuzzer mutates from these."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "receiver")


def s(text, max_len):
    b = text.encode() if isinstance(text, str) else text
    assert len(b) <= max_len
    return bytes([len(b)]) + b


def site(shape, name, target, fields):
    b = bytes([0]) + bytes([shape]) + s(name, 12) + s(target, 12) + s("m", 4) + s("f.c", 4) + bytes([len(fields)])
    if shape & 0x40:
        b += b"".join(s(f, 8) for f in fields)
    b += bytes([7])  # line
    return b + bytes([0xFF]) + SEND  # pick the newest site; send with the normal struct_size


SEND = bytes([0])  # `how`: normal struct_size
FIRST = 0  # span_ids[0] (a pick byte below 200 indexes the spans created so far)
NONE = 216  # a pick byte of 200..239 is the id (byte % 24): 216 is id 0, "none"


def values(vals):
    b = bytes([len(vals)])
    for field, kind, payload in vals:
        b += bytes([field, kind]) + payload
    return b


def i64(v):
    return struct.pack("<q", v)


def new_span(site_pick, parent_mode, related, span, vals, op=1):
    return bytes([op, site_pick, parent_mode, related, span]) + values(vals) + SEND


def simple(op, span):
    return bytes([op, span]) + SEND


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


os.makedirs(OUT, exist_ok=True)
span_site = site(0x00, "order", "orders", ["a", "b"])             # kind span, level error
event_site = site(0x41, "event x.c:1", "orders::x", ["message", "n"])  # kind event, named fields
life = (span_site + event_site
        + new_span(0, 0, NONE, NONE, [(0, 2, i64(42)), (1, 7, s("ann", 16) + b"\x00")])
        + simple(5, FIRST)                                          # enter
        + new_span(1, 0, NONE, NONE, [(0, 7, s("hi", 16) + b"\x00"), (1, 3, i64(7))], op=2)  # event inside
        + simple(6, FIRST)                                          # exit
        + simple(7, FIRST)                                          # clone
        + simple(8, FIRST) + simple(8, FIRST))                      # drop twice: closed
write("life-of-a-span", life)
nested = (span_site + event_site
          + new_span(0, 1, NONE, NONE, [])                            # root
          + new_span(0, 2, FIRST, NONE, [(1, 6, struct.pack("<d", 1.5))])  # explicit child of the first
          + simple(5, 1) + bytes([4, 1, 0]) + SEND                  # enter second; second follows from first
          + bytes([3, 0, 0, NONE, 1]) + values([(0, 9, bytes([2]) + s("outer", 8) + s("root", 8))]) + SEND  # record
          + bytes([10])                                             # commit
          + new_span(0, 0, NONE, NONE, [])                            # uncommitted, contextual child
          + bytes([11])                                             # reload on the commit
          + simple(6, 1)                                            # exit the second in the new receiver
          + bytes([12])                                             # restart
          + simple(5, FIRST)                                        # enter a restored span
          + bytes([13]))                                            # crash
write("reload-restart-crash", nested)
bad = (span_site
       + bytes([9]) + struct.pack("<I", 77) + bytes([NONE, NONE, NONE]) + SEND  # unknown kind
       + new_span(0, 0, NONE, NONE, [(5, 2, i64(1))])                 # unknown field
       + new_span(0, 0, NONE, NONE, [(0, 10, i64(1))])                # unknown value kind
       + new_span(0, 0, NONE, NONE, [(0, 7, bytes([2]) + b"\xff\xfe" + b"\x00")])  # invalid UTF-8
       + bytes([1, 0, 0, NONE, NONE]) + values([(0, 2, i64(1))] * 35) + SEND  # too many values
       + simple(5, 250) + b"\x00" * 8                               # enter span id 0 (raw)
       + bytes([0x70]) + bytes([0]) + SEND)                         # NEW_CALLSITE with a NULL call site
write("refusals", bad)
print(f"wrote 3 seeds to {OUT}")
