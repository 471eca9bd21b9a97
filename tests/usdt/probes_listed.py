#!/usr/bin/env python3
"""USDT probes are in tt-host: `readelf -n` lists each tracetunnel probe with
its is-enabled semaphore and its arguments (docs/USDT.md).

usage: probes_listed.py READELF TT_HOST with|without

`with`: the build has sys/sdt.h, so all five probes must be there, each with
a non-zero semaphore address and six arguments, each a register, a constant
or register-relative memory (what bpftrace and SystemTap can read). `without`: no probe may be
there, and `tt-host --help` must say that the build has none.
"""
import re
import subprocess
import sys

PROBES = {"span_new", "span_enter", "span_exit", "span_close", "event"}
# What every tracer reads: SIZE@%reg, SIZE@$const, SIZE@OFFSET(%reg). A
# symbol-relative operand (a thread_local's "x@dtpoff(%rax)") is not.
SIMPLE_ARG = re.compile(r"-?\d+@(%\w+|\$-?\d+|-?\d*\(%\w+\))")


def notes(readelf, binary):
    out = subprocess.run([readelf, "-n", binary], check=True, capture_output=True, text=True).stdout
    found = {}
    current = None
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"Provider: (\S+)", line)
        if m:
            current = {"provider": m.group(1)}
            continue
        if current is None:
            continue
        m = re.match(r"Name: (\S+)", line)
        if m:
            current["name"] = m.group(1)
            continue
        m = re.search(r"Semaphore: (0x[0-9a-fA-F]+)", line)
        if m:
            current["semaphore"] = int(m.group(1), 16)
            continue
        m = re.match(r"Arguments:(.*)", line)
        if m:
            current["args"] = m.group(1).split()
            if current["provider"] == "tracetunnel":
                if current["name"] in found:
                    raise SystemExit(f"FAIL: probe {current['name']} is listed twice")
                found[current["name"]] = current
            current = None
    return found


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("with", "without"):
        raise SystemExit(__doc__)
    readelf, host, mode = sys.argv[1:]
    found = notes(readelf, host)
    help_text = subprocess.run([host, "--help"], check=True, capture_output=True, text=True).stdout
    if mode == "without":
        if found:
            raise SystemExit(f"FAIL: a build without USDT has probes: {sorted(found)}")
        if "this build has no USDT probes" not in help_text:
            raise SystemExit("FAIL: tt-host --help does not say that this build has no USDT probes")
        print("ok: no probes, and --help says so")
        return
    if set(found) != PROBES:
        raise SystemExit(f"FAIL: probes {sorted(found)}, expected {sorted(PROBES)}")
    for name, p in sorted(found.items()):
        if not p.get("semaphore"):
            raise SystemExit(f"FAIL: probe {name} has no is-enabled semaphore")
        if len(p.get("args", [])) != 6:
            raise SystemExit(f"FAIL: probe {name} has {len(p.get('args', []))} arguments, expected 6")
        for arg in p["args"]:
            if not SIMPLE_ARG.fullmatch(arg):
                raise SystemExit(f"FAIL: probe {name} argument {arg!r} is not a register, a constant or "
                                 "register-relative memory: tracers such as bpftrace refuse the probe")
        print(f"ok: tracetunnel:{name} semaphore 0x{p['semaphore']:x} args {' '.join(p['args'])}")
    if len({p["semaphore"] for p in found.values()}) != len(found):
        raise SystemExit("FAIL: two probes share a semaphore")
    if "--no-usdt" not in help_text or "this build has no USDT probes" in help_text:
        raise SystemExit("FAIL: tt-host --help does not offer --no-usdt for a build with probes")


if __name__ == "__main__":
    main()
