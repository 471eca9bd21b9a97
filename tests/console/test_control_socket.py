#!/usr/bin/env python3
"""The control socket of tt-host (docs/CONSOLE.md, protocol 1).

Runs tt-host on the orders example plugin and talks to its control socket:
mode 0600, greeting, plugins / callsites / spans / stats / errors / filter /
filter_set / reload / diff / persist, error codes (bad_json, bad_request,
unknown_command, unknown_plugin, too_large) with the connection surviving,
a second host refused on a live socket, a stale socket file replaced, the
socket removed at exit, and a subscriber that never reads while events flood:
another client is still answered (within the client's 10 s socket timeout,
so a host blocked on the slow one fails; latencies are printed, not
asserted) and the subscriber later sees a "dropped" count.

usage: test_control_socket.py TT_HOST LIBORDERS_SO WORK_DIR
"""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

tt_host, orders_so, work, project_version = sys.argv[1:5]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import tt_harness  # noqa: E402

harness = tt_harness.Harness(work, "control", plugins={"liborders.so": orders_so})
wait_for = tt_harness.wait_for
root, plugins, state, check = harness.root, harness.plugins, harness.state, harness.check


class Client:
    def __init__(self, path, rcvbuf=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1
        self.events = []

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.sock.sendall(data)

    def answer(self, rid):
        while True:
            msg = self.line()
            if "id" in msg and msg["id"] == rid:
                return msg
            self.events.append(msg)

    def request(self, cmd, args=None):
        rid = self.next_id
        self.next_id += 1
        req = {"id": rid, "cmd": cmd}
        if args is not None:
            req["args"] = args
        self.send_raw((json.dumps(req) + "\n").encode())
        return self.answer(rid)

    def ok(self, cmd, args=None):
        r = self.request(cmd, args)
        check(r.get("ok") is True, f"{cmd} {args}: {r}")
        return r.get("result")

    def close(self):
        self.sock.close()


def wait_for_socket(path, proc, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                s.close()
                return True
            except OSError:
                pass
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def start_host(extra, out_name, filter_text="info"):
    out = open(os.path.join(root, out_name), "w")
    cmd = [tt_host, "--plugins", plugins, "--no-watch", "--format", "json", "--filter", filter_text] + extra
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True), out


def stop_host(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


# ---------------------------------------------------------------------------
# 1. The main host: default socket path in the state folder.
sock_path = os.path.join(state, "control.sock")
host, host_out = start_host(["--state-dir", state, "--interval-ms", "5"], "host1.jsonl")
if not wait_for_socket(sock_path, host):
    print(f"tt-host did not open {sock_path}: {host.stderr.read() if host.poll() is not None else ''}",
          file=sys.stderr)
    host.kill()
    sys.exit(1)

mode = stat.S_IMODE(os.stat(sock_path).st_mode)
check(mode == 0o600, f"socket mode is {oct(mode)}, not 0600")
check(stat.S_ISSOCK(os.stat(sock_path).st_mode), "control.sock is a socket")

c = Client(sock_path)
hello = c.line()
check(hello.get("hello") == "tracetunnel" and hello.get("protocol") == 1, f"greeting: {hello}")
check(hello.get("host_pid") == host.pid, f"greeting host_pid {hello.get('host_pid')} != {host.pid}")
# The greeting and --version both come from meson's project version.
check(hello.get("version") == project_version, f"greeting version {hello.get('version')} != {project_version}")
v = subprocess.run([tt_host, "--version"], capture_output=True, text=True)
check(v.returncode == 0 and v.stdout.strip() == f"tt-host {project_version}", f"tt-host --version: {v}")

# plugins
ps = c.ok("plugins")
orders = [p for p in ps or [] if p["name"] == "orders"]
check(len(orders) == 1, f"plugins lists orders: {ps}")
if orders:
    o = orders[0]
    check(o["generation"] == 1 and o["state"] == "running", f"orders generation 1, running: {o}")
    for key in ["version", "description", "file", "loaded_copy", "loaded_at", "reloads", "failed_reloads",
                "emits_after_stop", "quarantined", "live_spans", "errors"]:
        check(key in o, f"plugins: key {key}")

def orders_sites():
    return c.ok("callsites", {"plugin": "orders"}) or []


def hits(sites):
    return sum(s["hits"] for s in sites)


def sites_with_hits_over(n):
    now = orders_sites()
    return now if hits(now) > n else None


def spans_with_orders():
    now = c.ok("spans", {"plugin": "orders"}) or []
    return now if any(s["name"] == "order" for s in now) else None


def info_sites_never():
    now = [s for s in orders_sites() if s["level"] == "info"]
    return now if now and all(s["interest"] == "never" for s in now) else None


# callsites, hits grow. The host ticks in its own time (slowly under a
# sanitizer on a loaded machine): wait for hits, then for more hits.
sites = wait_for(lambda: sites_with_hits_over(0)) or orders_sites()
check(len(sites or []) > 0, "callsites orders lists call sites")
check(all(s["plugin"] == "orders" and s["id"].startswith("0x") and s["kind"] in ("span", "event")
          for s in sites or []), f"callsite shape: {(sites or [])[:2]}")
hits1 = hits(sites or [])
hits2 = hits(wait_for(lambda: sites_with_hits_over(hits1)) or orders_sites())
check(hits2 > hits1 > 0, f"hits grow after ticks: {hits1} -> {hits2}")
all_sites = c.ok("callsites")
check(len(all_sites or []) >= len(sites), "callsites without plugin")

# spans (the first tick opens an order; wait for it rather than for a time)
spans = wait_for(spans_with_orders) or c.ok("spans", {"plugin": "orders"}) or []
order_spans = [s for s in spans if s["name"] == "order"]
check(len(order_spans) > 0, f"spans orders shows open order spans: {spans[:3]}")
if order_spans:
    s = order_spans[0]
    check("id" in s["fields"] and "customer" in s["fields"], f"order span fields: {s}")
    check(s["parent"] == 0 and s["ref_count"] >= 1 and s["age_ms"] >= 0 and s["start"].endswith("Z"),
          f"order span shape: {s}")
# entered: on how many threads a span is entered now. The orders plugin never
# enters an order span (only its stage spans, for the length of a stage, and
# those close before the tick ends), so order spans are not entered.
check(all(isinstance(s.get("entered"), int) and s["entered"] >= 0 for s in spans), f"spans have entered: {spans[:3]}")
check(order_spans and all(s["entered"] == 0 for s in order_spans),
      f"order spans are not entered between ticks: {[s.get('entered') for s in order_spans]}")

# stats, errors, filter, persist
st = c.ok("stats") or {}
check(st.get("uptime_ms", -1) >= 0 and "pipeline" in st and st.get("console", {}).get("clients") == 1,
      f"stats: {st}")
po = [p for p in st.get("plugins", []) if p["name"] == "orders"]
check(po and po[0]["events_total"] > 0 and po[0]["events"]["new_span"] > 0, f"stats orders: {po}")
check(po and po[0]["events_per_second"] > 0, f"stats: a recent events_per_second while ticking: {po}")
er = c.ok("errors") or {}
check(er.get("receive") == [] and isinstance(er.get("load"), list), f"errors: {er}")
check((c.ok("filter") or {}).get("filter") == "info", "filter is info")
pr = c.ok("persist") or {}
check(pr.get("problems") == [], f"persist: {pr}")

# errors: bad JSON, bad request, unknown command, unknown plugin; the connection survives
c.send_raw(b'{"id":1,"cmd":\n')
r = c.line()
check(r.get("ok") is False and r["error"]["code"] == "bad_json", f"bad_json: {r}")
check(isinstance(c.ok("plugins"), list), "answers after bad_json")
c.send_raw(b'[1,2]\n')
r = c.line()
check(r.get("ok") is False and r["error"]["code"] == "bad_request", f"bad_request: {r}")
# a number beyond a double cannot be echoed as JSON, in the id or in args
c.send_raw(b'{"id":"big","cmd":"spans","args":{"limit":14008E55100}}\n')
r = c.line()
check(r.get("ok") is False and r["error"]["code"] == "bad_request" and r.get("id") == "big"
      and "too large" in r["error"]["message"], f"infinite arg: {r}")
r = c.request("frobnicate")
check(r.get("ok") is False and r["error"]["code"] == "unknown_command", f"unknown_command: {r}")
r = c.request("spans", {"plugin": 5})
check(r.get("ok") is False and r["error"]["code"] == "bad_request", f"bad arg type: {r}")
r = c.request("reload", {"plugin": "nope"})
check(r.get("ok") is False and r["error"]["code"] == "unknown_plugin", f"unknown_plugin: {r}")
r = c.request("diff", {"plugin": "orders"})
check(r.get("ok") is False and r["error"]["code"] == "failed", f"diff before a reload: {r}")
r = c.request("filter_set", {"directives": "info,orders=bogus"})
check(r.get("ok") is False and r["error"]["code"] == "failed" and "byte" in r["error"]["message"],
      f"bad filter: {r}")

# a 10 MiB line
c.send_raw(b'{"id":"big","cmd":"plugins","pad":"' + b"x" * (10 << 20) + b'"}\n')
r = c.line()
check(r.get("ok") is False and r["error"]["code"] == "too_large", f"too_large: {r}")
check(isinstance(c.ok("plugins"), list), "answers after too_large")

# filter_set warn: info call sites become never, and no info hits follow
r = c.ok("filter_set", {"directives": "warn"}) or {}
check(r.get("filter") == "warn", f"filter_set warn: {r}")
# Call sites register again under the new filter: wait until every info one has.
info_sites = wait_for(info_sites_never) or [s for s in orders_sites() if s["level"] == "info"]
check(info_sites and all(s["interest"] == "never" for s in info_sites), f"info call sites answered never: {info_sites}")
before = {s["id"]: s["hits"] for s in info_sites}
time.sleep(0.3)  # a window in which hits must NOT grow (a negative check: a wait proves nothing)
after = {s["id"]: s["hits"] for s in c.ok("callsites", {"plugin": "orders"}) or [] if s["level"] == "info"}
check(all(after.get(k, 0) == v for k, v in before.items()), f"no info hits after filter_set warn: {before} {after}")
c.ok("filter_set", {"directives": "info"})
# New orders open spans again: the reload below must carry some.
check(wait_for(spans_with_orders), "order spans open again after filter_set info")

# reload and diff; hits add up across the reload, carried spans keep their names
hits_before_reload = sum(s["hits"] for s in c.ok("callsites", {"plugin": "orders"}) or [])
rep = c.ok("reload", {"plugin": "orders"}) or {}
check(rep.get("ok") is True and rep.get("old_generation") == 1 and rep.get("new_generation") == 2,
      f"reload orders: {rep}")
ps = c.ok("plugins") or []
check(any(p["name"] == "orders" and p["generation"] == 2 for p in ps), f"generation 2 after reload: {ps}")
d = c.ok("diff", {"plugin": "orders"}) or {}
check(d.get("new_generation") == 2, f"diff: {d}")
hits_after_reload = sum(s["hits"] for s in c.ok("callsites", {"plugin": "orders"}) or [])
check(hits_after_reload >= hits_before_reload, f"hits since start: {hits_before_reload} -> {hits_after_reload}")
spans = c.ok("spans", {"plugin": "orders"}) or []
check(spans and all(s["name"] for s in spans), f"carried spans have names after the reload: {spans[:3]}")

# a client that sends requests and never reads the answers: once its queue
# is full the host stops reading from it (its sends block), and serves others
greedy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
greedy.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
greedy.connect(sock_path)
greedy.setblocking(False)
request = b'{"cmd":"stats"}\n'
sent = 0
stalled = False
deadline = time.time() + 10
while time.time() < deadline:
    try:
        sent += greedy.send(request * 64)
    except BlockingIOError:
        time.sleep(0.2)
        try:
            sent += greedy.send(request)
        except BlockingIOError:
            stalled = True
            break
check(stalled, f"the host stops reading a client that never reads its answers ({sent} bytes taken)")
check(sent < 64 * 1024 * 1024, f"bounded: the host took {sent} bytes of requests")
t0 = time.time()
check(isinstance(c.ok("plugins"), list), "another client is still served")
print(f"info: served beside the stalled client in {time.time() - t0:.3f} s")
greedy.close()

# a second host on the same socket is refused
p2 = subprocess.run([tt_host, "--plugins", plugins, "--no-state", "--no-watch", "--ticks", "1",
                     "--control-socket", sock_path], capture_output=True, text=True, timeout=30)
check(p2.returncode != 0 and "another host" in p2.stderr, f"second host refused: {p2.returncode} {p2.stderr}")
check(isinstance(c.ok("plugins"), list), "first host still answers")
c.close()

check(stop_host(host) == 0, "tt-host exits 0")
host_out.close()
check(not os.path.exists(sock_path), "socket removed at exit")
with open(os.path.join(root, "host1.jsonl")) as f:
    lines = [json.loads(l) for l in f if l.startswith("{")]
check(any(l.get("fields", {}).get("message") == "control socket" and l["fields"].get("path") == sock_path
          for l in lines), "host event 'control socket' with the path")

# ---------------------------------------------------------------------------
# 2. A stale socket file is replaced; a flood with a subscriber that never reads.
flood_path = os.path.join(root, "flood.sock")
stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
stale.bind(flood_path)
stale.close()  # leaves the file, nobody listening
host, host_out = start_host(["--no-state", "--interval-ms", "1", "--control-socket", flood_path], "host2.jsonl",
                            filter_text="trace")
if check(wait_for_socket(flood_path, host),
         f"tt-host replaced a stale socket file: {host.stderr.read() if host.poll() is not None else ''}"):
    slow = Client(flood_path, rcvbuf=4096)
    slow.line()
    slow.ok("subscribe", {})
    fast = Client(flood_path)
    fast.line()
    # The flood lasts at least 2.5 s and until the slow client's queue has
    # overflowed: how long that takes depends on how fast the host emits
    # (under ASan on a loaded machine 2.5 s were not enough).
    worst = 0.0
    start = time.time()
    st = {}
    while time.time() < start + 60:
        t = time.time()
        check(isinstance(fast.ok("plugins"), list), "plugins during the flood")
        worst = max(worst, time.time() - t)
        st = fast.ok("stats") or {}
        if time.time() >= start + 2.5 and st.get("console", {}).get("dropped", 0) > 0:
            break
        time.sleep(0.05)
    print(f"info: the slowest request during the flood took {worst:.3f} s")
    dropped = st.get("console", {}).get("dropped", 0)
    check(dropped > 0, f"events were dropped for the slow client: {st.get('console')}")
    # now the slow client reads: event lines, then a dropped count
    saw_event = saw_dropped = False
    end = time.time() + 30
    while time.time() < end and not (saw_event and saw_dropped):
        m = slow.line()
        saw_event = saw_event or ("event" in m and m["event"].get("plugin") in ("orders", "host"))
        saw_dropped = saw_dropped or m.get("dropped", 0) > 0
    check(saw_event, "subscriber sees event lines")
    check(saw_dropped, "subscriber later sees a dropped count")
    r = slow.request("unsubscribe")
    check(r.get("ok") is True, f"unsubscribe: {r}")
    # events with a filter: only warn and above
    sub = Client(flood_path)
    sub.line()
    sub.ok("subscribe", {"filter": "warn"})
    levels = set()
    end = time.time() + 30  # ends at the first event; the bound is for a loaded machine
    while time.time() < end and len(levels) < 1:
        m = sub.line()
        if "event" in m:
            levels.add(m["event"]["level"])
    check(levels and levels <= {"WARN", "ERROR"}, f"subscribe filter warn: levels {levels}")
    # a span-scoped directive is decided per event: only events inside a charge span
    scoped = Client(flood_path)
    scoped.line()
    scoped.ok("subscribe", {"filter": "orders[charge]=trace"})
    inside = []
    end = time.time() + 30
    while time.time() < end and len(inside) < 20:
        m = scoped.line()
        if "event" in m:
            inside.append(m["event"].get("spans", []))
    check(inside and all("charge" in s for s in inside), f"subscribe filter orders[charge]: spans {inside[:5]}")
    for cl in (slow, fast, sub, scoped):
        cl.close()
check(stop_host(host) == 0, "flood tt-host exits 0")
host_out.close()
check(not os.path.exists(flood_path), "flood socket removed at exit")

harness.finish("ok")
