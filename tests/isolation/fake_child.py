#!/usr/bin/env python3
"""A hostile stand-in for tt-plugin-child (tests/isolation): speaks the
wire of host/src/isolation_protocol.hpp badly on purpose.

usage (as the host starts it): fake_child.py --fd 3 PLUGIN.so
FAKE_CHILD_MODE: garbage    - a first frame that is no description
                 bad-event  - describes a plugin, then answers start with
                              a truncated event frame
                 huge-frame - describes a plugin, then announces a frame
                              beyond the limit
"""
import os
import struct
import sys
import time

fd = int(sys.argv[2])
mode = os.environ.get("FAKE_CHILD_MODE", "garbage")


def frame(kind, payload):
    os.write(fd, struct.pack("<IB", len(payload) + 1, kind) + payload)


def s(text):
    b = text.encode()
    return struct.pack("<BQ", 0, len(b)) + b


if mode == "garbage":
    os.write(fd, b"\x05\x00\x00\x00\x63hello")
    time.sleep(5)
    sys.exit(0)

hello = (struct.pack("<B", 1) + s("fake") + s("0.0.1") + s("a hostile child") + struct.pack("<I", 1 << 16) +
         struct.pack("<BBI", 0, 0, 0))
frame(1, hello)
# Wait for the start command, then misbehave.
os.read(fd, 4096)
if mode == "bad-event":
    # An emit frame whose event stops after its struct_size and kind.
    frame(2, struct.pack("<II", 64, 9))
elif mode == "huge-frame":
    os.write(fd, struct.pack("<IB", 0x7FFFFFFF, 2))
time.sleep(5)  # the host must kill us, not wait for this
