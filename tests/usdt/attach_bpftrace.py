#!/usr/bin/env python3
"""A tracer attached to tt-host sees the probes fire (docs/USDT.md).

usage: attach_bpftrace.py TT_HOST ORDERS_PLUGIN WORK_DIR

bpftrace attaches to every tracetunnel probe of the tt-host binary; then
tt-host runs the orders example plugin twice, once with --no-usdt (no probe
may fire for that process) and once without (each of the five probes must
fire, with the plugin name, call-site names, levels and a parent that is a
span seen before). Attaching needs root, bpftrace and a kernel that allows
uprobes: where any is missing the test reports SKIP (exit code 77) with the
reason; once attached, every check is a real pass or fail.

No fixed sleeps: "Attaching N probes..." is printed before the uprobes are
in place, so a canary tt-host runs until the tracer reports every probe from
it; and bpftrace prints what it reads from per-CPU buffers some time after
the probes fired (and not in firing order across CPUs), so after the two
runs a sentinel tt-host runs and the test waits for its hits, and the hits
are put in firing order by their timestamp (nsecs) before they are checked.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from tt_harness import wait_for  # noqa: E402

SKIP = 77
PROBES = ("span_new", "span_enter", "span_exit", "span_close", "event")


def skip(reason):
    print(f"SKIPPED: {reason}")
    sys.exit(SKIP)


def fail(reason, log=""):
    print(f"FAIL: {reason}")
    if log:
        print(log)
    sys.exit(1)


def hits_in(path):
    """(pid, probe, plugin, name, level, span, parent, last argument) per hit, in firing order."""
    hits = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if line.endswith("\n") and len(parts) == 9 and parts[0].isdigit() and parts[1].isdigit():
                ns, pid, probe, plugin_name, name, level, span, parent, last = parts
                hits.append((int(ns), int(pid), probe.rsplit(":", 1)[-1], plugin_name, name, int(level), int(span),
                             int(parent), last))
    hits.sort()
    return [h[1:] for h in hits]


def every_probe_fired(path, pid):
    fired = {h[1] for h in hits_in(path) if h[0] == pid and h[2] == "orders"}
    return fired >= set(PROBES)


def run_host(host, plugins, extra):
    """Runs tt-host on the plugins for a few ticks; returns its pid."""
    proc = subprocess.Popen(
        [host, "--plugins", plugins, "--no-state", "--no-control", "--no-watch", "--ticks", "6",
         "--interval-ms", "20", "--filter", "info", "--format", "json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _, stderr = proc.communicate(timeout=60)
    if proc.returncode != 0:
        fail(f"tt-host {' '.join(extra)} exited {proc.returncode}", stderr)
    return proc.pid


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    host, plugin, work = (os.path.abspath(a) for a in sys.argv[1:])
    bpftrace = shutil.which("bpftrace")
    if bpftrace is None:
        skip("bpftrace is not installed (apt-get install bpftrace)")
    if os.geteuid() != 0:
        skip("attaching USDT probes needs root; running as uid %d" % os.geteuid())
    if subprocess.run([host, "--help"], capture_output=True, text=True).stdout.find("this build has no USDT") >= 0:
        skip("this tt-host was built without sys/sdt.h (systemtap-sdt-dev)")

    # One line per hit: pid, probe, plugin, name, level, span, parent, last argument.
    # nsecs first: the lines come from per-CPU buffers, not in firing order.
    fmt = '"%lu|%d|%s|%s|%s|%d|%d|%d|%s\\n", nsecs, pid, probe, str(arg0), str(arg1), arg2, arg3, arg4, str(arg5)'
    script = f"usdt:{host}:tracetunnel:* {{ printf({fmt}); }}"
    out = tempfile.NamedTemporaryFile("w+", dir=work, prefix="usdt-bpftrace.", suffix=".log", delete=False)
    tracer = subprocess.Popen([bpftrace, "-e", script], stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            text = open(out.name).read()
            if "Attaching" in text:
                break
            if tracer.poll() is not None:
                skip(f"bpftrace cannot attach here (exit {tracer.returncode}): {text.strip()[-400:]}")
            if time.monotonic() > deadline:
                skip("bpftrace did not attach within 60 s: " + text.strip()[-400:])
            time.sleep(0.1)

        with tempfile.TemporaryDirectory(dir=work, prefix="usdt-plugins.") as plugins:
            shutil.copy(plugin, plugins)
            # "Attaching N probes..." comes before the last uprobe is in place:
            # canary runs until the tracer has reported every probe from one.
            deadline = time.monotonic() + 60
            while True:
                canary_pid = run_host(host, plugins, [])
                if wait_for(lambda: every_probe_fired(out.name, canary_pid), 5):
                    break
                if time.monotonic() > deadline or tracer.poll() is not None:
                    fail("bpftrace attached, but no canary tt-host run fired every probe within 60 s",
                         open(out.name).read()[-3000:])
            quiet_pid = run_host(host, plugins, ["--no-usdt"])
            loud_pid = run_host(host, plugins, [])
            # Its hits come after the two runs': once they are printed, so are theirs.
            sentinel_pid = run_host(host, plugins, [])
            if not wait_for(lambda: every_probe_fired(out.name, sentinel_pid), 60):
                fail("the sentinel tt-host run's probes were not all reported within 60 s",
                     open(out.name).read()[-3000:])
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
        out.close()

    hits = hits_in(out.name)
    log = open(out.name).read()[-3000:]
    # (Other tests may run tt-host meanwhile: their hits are ignored.)
    quiet = [h for h in hits if h[0] == quiet_pid]
    if quiet:
        fail(f"{len(quiet)} probes fired in the tt-host --no-usdt run", log)
    mine = [h for h in hits if h[0] == loud_pid]
    for probe in PROBES:
        if not any(h[1] == probe and h[2] == "orders" for h in mine):
            fail(f"probe {probe} never fired for plugin orders ({len(mine)} hits in all)", log)
    seen_spans = set()
    for pid, probe, plugin_name, name, level, span, parent, last in mine:
        if not 1 <= level <= 5:
            fail(f"{probe} of {name}: level {level} is not 1..5", log)
        if probe == "span_new":
            if span == 0 or span in seen_spans:
                fail(f"span_new of {name}: span id {span} is zero or reused", log)
            if parent != 0 and parent not in seen_spans:
                fail(f"span_new of {name}: parent {parent} was never created", log)
            seen_spans.add(span)
        elif probe in ("span_enter", "span_exit", "span_close") and span not in seen_spans:
            fail(f"{probe} of {name}: span {span} was never created", log)
    names = {h[3] for h in mine if h[1] == "span_new" and h[2] == "orders"}
    if "order" not in names:
        fail(f"no span_new for the orders plugin's 'order' span (saw {sorted(names)})", log)
    messages = {h[7] for h in mine if h[1] == "event" and h[2] == "orders"}
    if "order received" not in messages:
        fail(f"no event with message 'order received' (saw {sorted(messages)[:10]})", log)
    counts = {p: sum(1 for h in mine if h[1] == p) for p in PROBES}
    print(f"ok: {len(mine)} probe hits from tt-host (pid {loud_pid}): {counts}; none from the --no-usdt run")
    os.unlink(out.name)


if __name__ == "__main__":
    main()
