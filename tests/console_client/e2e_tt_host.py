#!/usr/bin/env python3
"""tt-console against a real tt-host (--control-socket) running the orders example plugin.

Every command goes through the real client (tt-console --socket S --exec ... --json)
and the answers are checked on content: plugins, callsites (hits grow),
spans, filter set / filter, stats, errors, persist, reload / diff, unload,
load, tail (stopped by SIGINT), and an unknown plugin's error.

usage: e2e_tt_host.py TT_HOST TT_CONSOLE LIBORDERS_SO WORK_DIR
"""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

tt_host, console, orders_so, work = sys.argv[1:5]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from tt_harness import wait_for  # noqa: E402  (the host ticks in its own time)
root = os.path.join(work, f"e2e-{os.getpid()}")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(os.path.join(root, "plugins"))
os.makedirs(os.path.join(root, "elsewhere"))
shutil.copy(orders_so, os.path.join(root, "plugins", "liborders.so"))
other_copy = os.path.join(root, "elsewhere", "liborders.so")
shutil.copy(orders_so, other_copy)
sock = os.path.join(root, "control.sock")
env = dict(os.environ, HOME=root, XDG_STATE_HOME=os.path.join(root, "xdg"))
failures = []
started = time.time()


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, file=sys.stdout if cond else sys.stderr)
    if not cond:
        failures.append(what)
    return cond


def run(*args):
    p = subprocess.run([console, "--socket", sock, *args], capture_output=True, text=True, env=env, timeout=30)
    out = p.stdout if len(p.stdout) < 2000 else p.stdout[:2000] + "...\n"
    print(f"$ tt-console {' '.join(args)}\n-- rc {p.returncode}\n{out}{p.stderr}")
    return p


def cmd(command):
    """One command through tt-console --exec ... --json: (exit code, the parsed result or None)."""
    p = run("--json", "--exec", command)
    lines = p.stdout.splitlines()
    result = None
    if lines:
        try:
            result = json.loads(lines[0])
        except ValueError:
            check(False, f"{command}: the output is JSON: {lines[0][:200]}")
    check(p.returncode == 0, f"{command}: exit 0 (got {p.returncode}: {p.stderr.strip()})")
    return result


def order_span_hits(sites):
    return sum(s["hits"] for s in sites or [] if s.get("kind") == "span" and s.get("name") == "order")


def sites_with_order_hits_over(n):
    sites = cmd("callsites orders") or []
    return sites if order_span_hits(sites) > n else None


def info_sites_never():
    info = [s for s in cmd("callsites orders") or [] if s.get("level") == "info"]
    return info if len(info) >= 2 and all(s.get("interest") == "never" for s in info) else None


host = subprocess.Popen([tt_host, "--plugins", os.path.join(root, "plugins"), "--state-dir",
                         os.path.join(root, "state"), "--control-socket", sock, "--no-watch", "--interval-ms", "20",
                         "--filter", "info", "--format", "json"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
try:
    deadline = time.time() + 30
    while not os.path.exists(sock) and time.time() < deadline and host.poll() is None:
        time.sleep(0.05)
    if not check(os.path.exists(sock), "tt-host made its control socket"):
        raise SystemExit(1)

    # plugins: orders, generation 1, running
    plugins = cmd("plugins") or []
    check([x.get("name") for x in plugins] == ["orders"], "plugins lists orders")
    check(plugins and plugins[0].get("generation") == 1 and plugins[0].get("state") == "running",
          "orders is running, generation 1")

    # callsites twice: the hits of the "order" span call site grow (wait for
    # a first tick, then for another, rather than for a time)
    sites1 = wait_for(lambda: sites_with_order_hits_over(0)) or cmd("callsites orders") or []
    check(any(s.get("kind") == "span" and s.get("name") == "order" for s in sites1),
          "callsites orders has the order span call site")
    check(all(s.get("plugin") == "orders" and str(s.get("id", "")).startswith("0x") for s in sites1),
          "callsite shape")
    h1 = order_span_hits(sites1)
    sites2 = wait_for(lambda: sites_with_order_hits_over(h1)) or cmd("callsites orders") or []
    h2 = order_span_hits(sites2)
    check(h2 > h1 > 0, f"order span hits grow: {h1} -> {h2}")

    # spans: open order spans with id and customer
    spans = cmd("spans orders") or []
    order_spans = [s for s in spans if s.get("name") == "order"]
    check(len(order_spans) > 0, f"spans orders shows open order spans ({len(spans)} spans)")
    check(all("id" in s.get("fields", {}) and "customer" in s.get("fields", {}) for s in order_spans),
          "order spans have fields id and customer")
    check(order_spans and all(s.get("entered") == 0 for s in order_spans), "order spans are not entered")

    # stats while ticking
    st = cmd("stats") or {}
    po = [p for p in st.get("plugins", []) if p.get("name") == "orders"]
    check(len(po) == 1 and po[0].get("events_total", 0) > 0, "stats has orders, with events")
    check(len(po) == 1 and po[0].get("events_per_second", 0) > 0, "stats: events_per_second > 0 while ticking")

    # filter set warn: info call sites never, and their hits stop
    r = cmd("filter set warn") or {}
    check(r.get("filter") == "warn", f"filter set warn answers the new filter: {r}")
    # Call sites register again under the new filter: wait until every info
    # one has (hit again or not: the host refreshes its table).
    info = wait_for(info_sites_never) or [s for s in cmd("callsites orders") or [] if s.get("level") == "info"]
    check(len(info) >= 2 and all(s.get("interest") == "never" for s in info),
          f"info call sites have interest never: {[(s['name'], s['interest']) for s in info if s.get('interest') != 'never']}")
    before = {s["id"]: s["hits"] for s in info}
    time.sleep(0.3)  # a window in which hits must NOT grow (a negative check)
    after = {s["id"]: s["hits"] for s in cmd("callsites orders") or [] if s["id"] in before}
    check(before and all(after.get(k) == v for k, v in before.items()),
          f"info hits no longer grow: {before} -> {after}")
    check((cmd("filter") or {}).get("filter") == "warn", "filter shows warn")
    cmd("filter set info")

    # errors, persist
    er = cmd("errors orders") or {}
    check(isinstance(er.get("receive"), list) and isinstance(er.get("load"), list), f"errors orders: {er}")
    pr = cmd("persist") or {}
    check(pr.get("problems") == [], f"persist has no problems: {pr}")

    # reload, plugins (generation 2), diff
    rep = cmd("reload orders") or {}
    check(rep.get("ok") is True and rep.get("new_generation") == 2, f"reload orders: {rep}")
    plugins = cmd("plugins") or []
    check(any(p.get("name") == "orders" and p.get("generation") == 2 for p in plugins), "generation 2 after reload")
    d = cmd("diff orders") or {}
    check(d.get("plugin") == "orders" and d.get("old_generation") == 1 and d.get("new_generation") == 2
          and all(k in d for k in ("added", "removed", "changed")), f"diff orders is the reload report: {d}")

    # unload, then plugins is empty; load a copy from elsewhere
    check(cmd("unload orders") == {}, "unload orders answers {}")
    check(cmd("plugins") == [], "plugins is empty after unload")
    loaded = cmd(f"load {other_copy}") or {}
    check(loaded.get("name") == "orders" and loaded.get("generation") == 1, f"load brings orders back: {loaded}")
    plugins = cmd("plugins") or []
    check([p.get("name") for p in plugins] == ["orders"] and plugins[0].get("generation") == 1,
          "plugins lists orders again, generation 1")

    # an unknown plugin: exit 1 and the error code
    p = run("--json", "--exec", "reload nope")
    check(p.returncode == 1 and "unknown_plugin" in p.stderr, "an unknown plugin: exit 1, the error code")

    # tail until it has printed an event of orders (not for a fixed time: the
    # client may not even have subscribed yet), then stop it by SIGINT
    proc = subprocess.Popen([console, "--socket", sock, "--json", "--exec", "tail"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = b""
    deadline = time.monotonic() + 30
    while b'"plugin":"orders"' not in seen.replace(b" ", b"") and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    out, err = (seen + out).decode(), err.decode()
    check(proc.returncode == 0, f"tail stopped by SIGINT: exit {proc.returncode} {err}")
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    check(any("event" in e and e["event"].get("plugin") == "orders" for e in events),
          f"tail printed event lines of orders ({len(events)} lines)")
finally:
    host.send_signal(signal.SIGTERM)
    try:
        host.wait(timeout=30)
    except subprocess.TimeoutExpired:
        host.kill()

print(f"took {time.time() - started:.1f} s")
if failures:
    sys.exit(1)
shutil.rmtree(root, ignore_errors=True)
print("all checks passed")
