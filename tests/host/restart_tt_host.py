#!/usr/bin/env python3
"""A host restart continues the spans of the previous process.

Runs tt-host twice in a subprocess on the orders example plugin, with one
state folder, and reads its JSON lines: every order span is opened once
(in the first or the second process) and closed once, orders opened by the
first process are finished by the second without being opened again, and
the spans still open keep their persisted id and start time.

usage: restart_tt_host.py TT_HOST LIBORDERS_SO WORK_DIR
"""
import json
import os
import subprocess
import sys

tt_host, orders_so, work = sys.argv[1:4]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import tt_harness  # noqa: E402

harness = tt_harness.Harness(work, "restart", plugins={"liborders.so": orders_so})
root, plugins, state, check = harness.root, harness.plugins, harness.state, harness.check


def run(ticks):
    cmd = [tt_host, "--plugins", plugins, "--state-dir", state, "--format", "json", "--span-events",
           "--no-watch", "--ticks", str(ticks), "--interval-ms", "5", "--filter", "info"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"tt-host exited with {p.returncode}: {p.stderr}")
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    check(len(lines) > 0, "tt-host printed JSON lines")
    return lines


def order_spans(lines, message):
    """Order ids of the order spans with a span event `message` (new/close)."""
    return [l["span"]["id"] for l in lines
            if l.get("fields", {}).get("message") == message and l.get("span", {}).get("name") == "order"]


def live_spans():
    # The spans file is binary; tt-state (beside tt-host) prints it as JSON.
    tt_state = os.path.join(os.path.dirname(tt_host), "tt-state")
    dumped = subprocess.run([tt_state, "dump", state, "orders"], capture_output=True, text=True, check=True)
    spans = json.loads(dumped.stdout)["spans"]
    return {s["id"]: s["start_ns"] for s in spans}


first = run(3)
opened1, closed1 = order_spans(first, "new"), order_spans(first, "close")
check(len(opened1) == 3, f"three orders opened in the first run, got {opened1}")
still_open = sorted(set(opened1) - set(closed1))
check(len(still_open) > 0, "orders still open when the first host stops")
check(any(l.get("fields", {}).get("message") == "host stopped" for l in first), "the host said it stopped")
persisted = live_spans()
check(len(persisted) >= len(still_open), f"the state folder keeps the open spans: {persisted}")

second = run(10)
opened2, closed2 = order_spans(second, "new"), order_spans(second, "close")
for oid in still_open:
    check(oid not in opened2, f"order {oid} is continued, not opened again")
    check(oid in closed2, f"order {oid} from the first run is finished by the second")
restored = [l for l in second if l.get("fields", {}).get("message") == "plugin loaded"]
check(len(restored) == 1 and restored[0]["fields"].get("spans_restored") == len(persisted),
      f"the second host restored the persisted spans: {restored}")
everything_opened = opened1 + opened2
everything_closed = closed1 + closed2
for oid in set(everything_opened):
    check(everything_opened.count(oid) == 1, f"order {oid} opened exactly once")
for oid in set(everything_closed):
    check(everything_closed.count(oid) == 1, f"order {oid} closed exactly once")
check(set(opened2).isdisjoint(opened1), "new orders in the second run have new ids")

# Spans open across both runs kept their id and start time.
after = live_spans()
for sid, start in after.items():
    if sid in persisted:
        check(persisted[sid] == start, f"span {sid} kept its start time across the restart")

harness.finish("restart: all checks passed")
