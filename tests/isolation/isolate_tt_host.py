#!/usr/bin/env python3
"""tt-host --isolate end to end (docs/ISOLATION.md).

1. orders under --isolate gives the same span tree as in-process: the same
   spans (name, fields, parent, plugin span id), the same events in the
   same spans, in the same order (JSON lines, --span-events).
2. crashy under --isolate, beside orders in-process, crashes by SIGSEGV at
   a tick (its trigger file): tt-host keeps running, prints the crash with
   its signal, restarts the child, which continues its session span under
   the same id; orders goes on emitting after the crash.

usage: isolate_tt_host.py TT_HOST LIBORDERS_SO LIBCRASHY_SO WORK_DIR
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

tt_host, orders_so, crashy_so, work = sys.argv[1:5]
root = os.path.join(work, f"isolate-{os.getpid()}")
shutil.rmtree(root, ignore_errors=True)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


def folder(name, *plugins):
    d = os.path.join(root, name)
    os.makedirs(d)
    for p in plugins:
        shutil.copy(p, d)
    return d


def run(plugins, state, extra, ticks, env=None):
    cmd = [tt_host, "--plugins", plugins, "--state-dir", state, "--format", "json", "--span-events",
           "--no-watch", "--no-control", "--ticks", str(ticks), "--interval-ms", "20", "--filter", "info"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    check(p.returncode == 0, f"tt-host {' '.join(extra)} exited with {p.returncode}: {p.stderr[-2000:]}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def run_until(plugins, state, extra, env, done, name):
    """tt-host without a tick limit, until done(lines so far) or 120 s, then
    SIGTERM: what happens after a crash (backoff, a new child) takes its own
    time, which a fixed number of ticks may not cover on a loaded machine."""
    out_path, err_path = os.path.join(root, f"{name}.jsonl"), os.path.join(root, f"{name}.err")
    cmd = [tt_host, "--plugins", plugins, "--state-dir", state, "--format", "json", "--span-events",
           "--no-watch", "--no-control", "--ticks", "0", "--interval-ms", "20", "--flush-ms", "0",
           "--filter", "info"] + extra

    def lines():
        with open(out_path) as f:
            return [json.loads(l) for l in f if l.endswith("\n") and l.strip()]

    with open(out_path, "w") as out, open(err_path, "w") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline and not done(lines()):
            time.sleep(0.05)
        check(p.poll() is None, f"tt-host {' '.join(extra)} still runs: exited with {p.poll()}")
        reached = done(lines())
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
    with open(err_path) as f:
        check(rc == 0, f"tt-host {' '.join(extra)} stopped by SIGTERM exits 0, not {rc}: {f.read()[-2000:]}")
    check(reached, f"tt-host {' '.join(extra)} reached the state the test waits for (see the checks below)")
    return lines()


def plugin_lines(lines, plugin):
    return [l for l in lines if l.get("plugin") == plugin]


def tree(lines):
    """What must not depend on where the plugin runs: per line its kind of
    record, message, fields, and its span chain by name and plugin span id."""
    out = []
    for l in lines:
        fields = dict(l.get("fields", {}))
        span = l.get("span", {})
        chain = [(s.get("name"), s.get("id")) for s in l.get("spans", [])]
        out.append((l.get("level"), fields.get("message"), json.dumps(fields, sort_keys=True),
                    span.get("name"), span.get("id"), json.dumps(chain)))
    return out


# 1. The same tree, isolated or not.
ticks = 12
inproc = run(folder("p1", orders_so), os.path.join(root, "s1"), [], ticks)
isolated = run(folder("p2", orders_so), os.path.join(root, "s2"), ["--isolate", "orders"], ticks)
a, b = tree(plugin_lines(inproc, "orders")), tree(plugin_lines(isolated, "orders"))
check(len(a) > 50, f"orders emitted a real workload in-process ({len(a)} lines)")
check(a == b, "orders under --isolate gives the same lines, spans and ids as in-process")
if a != b:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            print(f"first difference at line {i}:\n  in-process {x}\n  isolated   {y}", file=sys.stderr)
            break
    print(f"lengths {len(a)} vs {len(b)}", file=sys.stderr)
loaded = [l for l in isolated if l.get("fields", {}).get("message") == "plugin loaded"]
check(len(loaded) == 1, "the isolated orders was loaded once")

# 2. A crash under tt-host.
plugins = folder("p3", orders_so, crashy_so)
state = os.path.join(root, "s3")
trigger = os.path.join(root, "crash-now")
env = dict(os.environ, CRASHY_TRIGGER=trigger)
# First run: crashy saves its session at the clean stop.
first = run(plugins, state, ["--isolate", "crashy"], 3, env)
sessions = [l["fields"]["session"] for l in first if l.get("fields", {}).get("message") == "crashy started"]
check(len(sessions) == 1, f"crashy started once in the first run: {sessions}")
with open(trigger, "w") as f:
    f.write("segv\n")


def crashed_and_back(lines):
    """After the crash: the child restarted and ticked, and orders emitted."""
    msgs = [l.get("fields", {}).get("message") for l in lines]
    if "plugin crashed" not in msgs or "plugin restarted" not in msgs:
        return False
    after_crash = lines[msgs.index("plugin crashed"):]
    after_restart = lines[msgs.index("plugin restarted"):]
    return (len([l for l in after_crash if l.get("plugin") == "orders"]) > 5 and
            any(l.get("fields", {}).get("message") == "tick" for l in after_restart))


second = run_until(plugins, state, ["--isolate", "crashy"], env, crashed_and_back, "second")
msgs = [l.get("fields", {}).get("message") for l in second]
crash = [l for l in second if l.get("fields", {}).get("message") == "plugin crashed"]
check(len(crash) == 1, f"one crash reported: {crash}")
if crash:
    check(crash[0]["fields"].get("plugin") == "crashy" and crash[0]["fields"].get("signal") == "SIGSEGV",
          f"the crash names the plugin and SIGSEGV: {crash[0]}")
    check(crash[0]["fields"].get("spans_rolled_back") == 1, f"the work span was rolled back: {crash[0]}")
check("plugin restarted" in msgs, "the child was restarted")
started = [l["fields"] for l in second if l.get("fields", {}).get("message") == "crashy started"]
check(len(started) == 2 and all(s["session"] == sessions[0] for s in started) and all(s["resumed"] for s in started),
      f"both children of the second run continue the first run's session: {started}")
about = [l for l in second if l.get("fields", {}).get("message") == "about to crash"]
check(len(about) == 1, "crashy said it is about to crash")
work = [l for l in second if l.get("span", {}).get("name") == "work"]
check([l["fields"]["message"] for l in work] == ["new", "close"],
      f"the work span opened before the crash was closed by the rollback: {work}")
i_crash = msgs.index("plugin crashed") if "plugin crashed" in msgs else len(msgs)
orders_after = [l for l in second[i_crash:] if l.get("plugin") == "orders"]
check(len(orders_after) > 5, "orders kept emitting after crashy crashed")
ticks_after = [l for l in second[i_crash:] if l.get("fields", {}).get("message") == "tick"]
check(len(ticks_after) > 0 and all(l["fields"]["session"] == sessions[0] for l in ticks_after),
      "the restarted crashy ticks inside the same session span")
check(any(m == "host stopped" for m in msgs), "the host ran to its end")

shutil.rmtree(root, ignore_errors=True)
if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("isolate: all checks passed")
