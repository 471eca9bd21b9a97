#!/usr/bin/env python3
"""tt-host's output to a file: buffered, written out by every commit, never torn.

Off a terminal tt-host keeps its lines in a buffer for at most --flush-ms
(docs/RELIABILITY.md, "Output"). With --flush-ms 60000 only a commit (or a
full buffer, 32 KiB, which takes these runs over 20 s) can write lines out
while the host runs:

- without a state folder (no commits) the output file stays empty while
  tt-host runs;
- with one, lines appear as soon as the first commit is made, and a
  SIGKILL afterwards leaves only whole JSON lines;
- with --flush-ms 0 lines appear while tt-host runs, without commits;
- --flush-ms outside 0..60000 is refused with a message naming it.

usage: output_tt_host.py TT_HOST LIBORDERS_SO WORK_DIR
"""
import json
import os
import signal
import subprocess
import sys
import time

tt_host, orders_so, work = sys.argv[1:4]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import tt_harness  # noqa: E402

harness = tt_harness.Harness(work, "output", plugins={"liborders.so": orders_so})
root, plugins, state, check = harness.root, harness.plugins, harness.state, harness.check
BUFFER_BYTES = 32 * 1024


def start(out_path, *extra):
    cmd = [tt_host, "--plugins", plugins, "--format", "json", "--no-watch", "--ticks", "0",
           "--interval-ms", "1000", "--flush-ms", "60000", "--filter", "info", *extra]
    out = open(out_path, "wb")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE), out


def size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


# 1. No commits: nothing leaves the buffer while the host runs (2 ticks).
out1 = os.path.join(root, "no-state.jsonl")
p, f = start(out1, "--no-state")
time.sleep(1.5)
check(p.poll() is None, "tt-host --no-state is running")
check(size(out1) == 0, f"no commit, no flush: the output stays in the buffer ({size(out1)} bytes written)")
p.send_signal(signal.SIGTERM)
p.wait(timeout=30)
f.close()
lines = open(out1, "rb").read().decode().splitlines()
check(any('"plugin loaded"' in l for l in lines), "a clean stop writes the buffered lines")

# 2. Commits every 100 ms write the lines out first.
out2 = os.path.join(root, "state.jsonl")
p, f = start(out2, "--state-dir", state, "--commit-interval-ms", "100")
deadline = time.monotonic() + 30  # a bound for a loaded machine, not a measured time
while size(out2) == 0 and time.monotonic() < deadline and p.poll() is None:
    time.sleep(0.05)
written = size(out2)
# Half a buffer at most: lines a full buffer pushed out would prove nothing
# (a tick writes about 1.2 KB; the buffer takes over 20 ticks to fill).
check(0 < written < BUFFER_BYTES // 2, f"a commit wrote the buffered lines out ({written} bytes, buffer {BUFFER_BYTES})")
time.sleep(0.3)
p.send_signal(signal.SIGKILL)
p.wait(timeout=30)
f.close()
data = open(out2, "rb").read()
check(data.endswith(b"\n"), "after SIGKILL the output ends with a whole line")
for line in data.decode().splitlines():
    try:
        json.loads(line)
    except ValueError:
        check(False, f"after SIGKILL every line is whole JSON: {line[:80]!r}")
        break

# 3. --flush-ms 0: each line is written as it is made, with no commit at all.
out3 = os.path.join(root, "each-line.jsonl")
cmd = [tt_host, "--plugins", plugins, "--format", "json", "--no-watch", "--ticks", "0", "--interval-ms", "1000",
       "--flush-ms", "0", "--filter", "info", "--no-state"]
with open(out3, "wb") as f3:
    p = subprocess.Popen(cmd, stdout=f3, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while size(out3) == 0 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    running = p.poll() is None
    check(running and size(out3) > 0, "--flush-ms 0 writes lines while tt-host runs, without commits")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)

# 4. A bad value is refused by name.
bad = subprocess.run([tt_host, "--no-state", "--flush-ms", "-1"], capture_output=True, text=True, timeout=30)
check(bad.returncode != 0, "--flush-ms -1 is refused")
check("--flush-ms" in bad.stderr + bad.stdout, f"the refusal names --flush-ms: {bad.stderr!r}")

harness.finish("output: buffered lines, flushed by commits, whole after SIGKILL")
