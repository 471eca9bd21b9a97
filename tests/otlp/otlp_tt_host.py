#!/usr/bin/env python3
"""tt-host exports to a real OTLP/HTTP receiver (tests/otlp/peer, built on the
official OpenTelemetry definitions from npm) and the spans arrive right.

Scenarios, each with its own peer on a free loopback port:
  mapping    resource, scopes, span tree, attributes, events, links, status,
             the OTEL_* variables (flags win), a collector that refuses the
             first requests (retry), each span exactly once
  identity   a reload (tt-console) and a restart (a second tt-host on the same
             state folder): spans that cross both arrive once, with their
             original start time, in the trace their children were sent in
  down       the collector is down: tt-host runs on, drops are counted in
             `stats`, spans arrive once it is back
  traceparent --traceparent / TRACEPARENT: root spans join the given trace;
             a bad one is a clear error

The node packages must be installed (tools/dev setup runs `npm ci` in
tests/otlp/peer): without them this test FAILS, it never skips.

usage: otlp_tt_host.py TT_HOST TT_CONSOLE LIBORDERS_SO WORK_DIR
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

tt_host, tt_console, orders_so, work = sys.argv[1:5]
here = os.path.dirname(os.path.abspath(__file__))
peer_js = os.path.join(here, "peer", "otlp_peer.js")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import tt_harness  # noqa: E402

harness = tt_harness.Harness(work, "otlp")
root, check = harness.root, harness.check
wait_for = tt_harness.wait_for
children = []


def fatal(what):
    print(f"FAIL: {what}", file=sys.stderr)
    cleanup()
    sys.exit(1)


def cleanup():
    for p in children:
        if p.poll() is None:
            p.kill()
            p.wait()


class Peer:
    def __init__(self, name, listen_on=None, fail_first=0):
        """listen_on: a bound TCP socket (see reserved_port) the peer listens on."""
        self.out = os.path.join(root, f"{name}.received.jsonl")
        port_file = os.path.join(root, f"{name}.port")
        if os.path.exists(port_file):
            os.remove(port_file)
        node = shutil.which("node")
        if node is None:
            fatal("node is not installed (tools/dev setup installs nodejs and npm)")
        where = ["--listen-fd", str(listen_on.fileno())] if listen_on else ["--port", "0"]
        self.proc = subprocess.Popen([node, peer_js, "--out", self.out, *where,
                                      "--port-file", port_file, "--fail-first", str(fail_first)],
                                     stderr=subprocess.PIPE, text=True,
                                     pass_fds=[listen_on.fileno()] if listen_on else [])
        children.append(self.proc)
        if not wait_for(lambda: os.path.exists(port_file) or self.proc.poll() is not None, 30):
            fatal("the OTLP peer did not start")
        if self.proc.poll() is not None:
            fatal(f"the OTLP peer failed (npm packages missing? run tools/dev setup): {self.proc.stderr.read()}")
        with open(port_file) as f:
            self.port = int(f.read())
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)

    def records(self):
        """Whole lines only: polled while the peer appends, the last line may
        be part-written (each record ends with a newline once complete)."""
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]

    def spans(self):
        """Every span received: (resource attrs, scope, span)."""
        out = []
        for r in self.records():
            check("error" not in r, f"the peer refused a request: {r.get('error')}")
            for rs in r.get("request", {}).get("resourceSpans", []):
                res = attrs(rs["resource"]["attributes"])
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        out.append((res, ss["scope"], s))
        return out


def attrs(kvs):
    out = {}
    for kv in kvs:
        v = kv["value"]
        for k in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if k in v:
                out[kv["key"]] = v[k]
    return out


def host_cmd(plugins, *extra, state=None):
    cmd = [tt_host, "--plugins", plugins, "--no-watch", "--format", "json", "--filter", "info"]
    cmd += ["--state-dir", state] if state else ["--no-state", "--no-control"]
    return cmd + list(extra)


def plugins_dir(name):
    d = os.path.join(root, name, "plugins")
    os.makedirs(d)
    shutil.copy(orders_so, os.path.join(d, "liborders.so"))
    return d


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "TRACEPARENT"}
    env.update(extra)
    return env


def run_host(cmd, env, timeout=60):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    check(p.returncode == 0, f"tt-host exited with {p.returncode}: {p.stderr}")
    return p


def by_id(spans):
    ids = {}
    for _, _, s in spans:
        key = (s["traceId"], s["spanId"])
        check(key not in ids, f"span {s['name']} {key} arrived once, not twice")
        ids[key] = s
    return ids


def console(sock, *commands):
    cmd = [tt_console, "--socket", sock, "--json"]
    for c in commands:
        cmd += ["--exec", c]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, f"tt-console {commands}: {p.returncode} {p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------------------
def scenario_mapping():
    peer = Peer("mapping", fail_first=2)
    plugins = plugins_dir("mapping")
    base = f"http://127.0.0.1:{peer.port}"
    # The base endpoint variable gets /v1/traces appended; flags win over variables.
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=base + "/",
                    OTEL_SERVICE_NAME="from-env",
                    OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test%20lab,team=a%2Cb,host.role=env")
    run_host(host_cmd(plugins, "--ticks", "12", "--interval-ms", "5", "--otlp-batch-delay-ms", "50",
                      "--otlp-service-name", "shop", "--otlp-resource-attributes", "host.role=flag"), env)
    peer.stop()
    spans = peer.spans()
    check(len(peer.records()) >= 1, "requests reached the peer after two refusals (retried)")
    ids = by_id(spans)
    check(len(spans) > 20, f"spans arrived: {len(spans)}")
    for res, scope, s in spans:
        check(res.get("service.name") == "shop", f"service.name from the flag: {res}")
        check(res.get("deployment.environment") == "test lab" and res.get("team") == "a,b",
              f"OTEL_RESOURCE_ATTRIBUTES, %-decoded: {res}")
        check(res.get("host.role") == "flag", f"a flag attribute wins over the variable: {res}")
        check(res.get("telemetry.sdk.name") == "tracetunnel", f"telemetry.sdk.name: {res}")
        if scope["name"] == "orders":
            check(scope.get("version") == "0.1.0", f"scope version is the plugin's: {scope}")
    orders = [s for _, sc, s in spans if s["name"] == "order" and sc["name"] == "orders"]
    check(len(orders) >= 7, f"delivered orders exported at close: {len(orders)}")
    order_ids = {(s["traceId"], s["spanId"]) for s in orders}
    check(len({s["traceId"] for s in orders}) == len(orders), "each order is its own trace")
    for s in orders:
        a = attrs(s["attributes"])
        check(s["parentSpanId"] == "", f"an order span is a root: {s['parentSpanId']}")
        check("otel.name" not in a and a.get("customer") in ("alice", "bob", "carol", "dave"), f"order fields: {a}")
        check(a.get("code.filepath") == "plugins/orders/orders.cpp", f"code.filepath: {a}")
        check(s["kind"] == 1, f"kind internal: {s['kind']}")
        check(int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 1_600_000_000 * 10**9,
              "times in unix nanoseconds")
        names = [e["name"] for e in s["events"]]
        check("order received" in names, f"the order's event is a span event: {names}")
        if a.get("status") == "delivered":
            check("order delivered" in names, f"delivered event: {names}")
    stages = [s for _, _, s in spans if s["name"] in ("validate", "charge", "pack", "ship")]
    check(len(stages) >= 20, f"stage spans: {len(stages)}")
    for s in stages:
        parent = (s["traceId"], s["parentSpanId"])
        # An order still open at shutdown closes then too (--no-state), so every parent arrived.
        check(parent in order_ids, f"{s['name']} is a child of an order span in its trace")
    charges = [s for s in stages if s["name"] == "charge"]
    declined = [s for s in charges if attrs(s["attributes"]).get("outcome") == "declined"]
    check(len(declined) >= 2, f"declined charges: {len(declined)}")
    for s in declined:
        check(s["status"]["code"] == 2, f"an error event sets status error: {s['status']}")
        check("card charge failed" in s["status"]["message"], f"status message: {s['status']}")
        ev = [e for e in s["events"] if e["name"] == "payment failed, retrying next tick"]
        check(len(ev) == 1 and attrs(ev[0]["attributes"]).get("level") == "ERROR", f"error event: {s['events']}")
        check(ev and attrs(ev[0]["attributes"]).get("error") == "card charge failed: gateway timeout",
              f"error value with its sources: {ev}")
    retries = [s for s in charges if attrs(s["attributes"]).get("attempt") == "2"]
    check(len(retries) >= 1, "retried charges exported")
    for s in retries:
        check(s["status"]["code"] == 0, f"a paid retry is not an error: {s['status']}")
        links = [(l["traceId"], l["spanId"]) for l in s["links"]]
        check(len(links) == 1 and links[0] in ids and ids[links[0]]["name"] == "charge" and
              attrs(ids[links[0]]["attributes"]).get("outcome") == "declined",
              f"follows-from is a link to the declined attempt: {links}")
    for s in stages:
        if s not in declined:
            check(s["status"]["code"] == 0, f"{s['name']} status unset: {s['status']}")


# ---------------------------------------------------------------------------
def persisted_starts(state):
    # The spans file is binary; tt-state (beside tt-host) prints it as JSON.
    tt_state = os.path.join(os.path.dirname(tt_host), "tt-state")
    dumped = subprocess.run([tt_state, "dump", state, "orders"], capture_output=True, text=True, check=True)
    return {s["id"]: int(s["start_ns"]) for s in json.loads(dumped.stdout)["spans"]}


def orders_opened(sock):
    """Order spans the host has opened so far: the hits of the order span's call site."""
    answers = console(sock, "callsites orders")
    sites = answers[0] if answers else []
    if isinstance(sites, dict):
        sites = sites.get("result", [])
    return sum(s.get("hits", 0) for s in sites if s.get("kind") == "span" and s.get("name") == "order")


def scenario_identity():
    peer = Peer("identity")
    plugins = plugins_dir("identity")
    state = os.path.join(root, "identity", "state")
    sock = os.path.join(root, "identity", "control.sock")
    env = clean_env()
    otlp = ["--otlp-endpoint", peer.endpoint, "--otlp-batch-delay-ms", "50"]
    first = subprocess.Popen(host_cmd(plugins, "--interval-ms", "40", "--control-socket", sock, *otlp, state=state),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    children.append(first)
    if not wait_for(lambda: os.path.exists(sock), 30):
        fatal("the first tt-host did not open its control socket")
    # Orders are opened one a tick, at the host's own pace (slow under a
    # sanitizer on a loaded machine): count them rather than sleep.
    # At least 3 before the reload (`crossed` below) ...
    opened = wait_for(lambda: (lambda n: n if n >= 3 else 0)(orders_opened(sock)), 30)
    check(opened >= 3, f"three orders opened before the reload: {orders_opened(sock)}")
    reload_ns = time.time_ns()
    answers = console(sock, "reload orders")
    check(answers and answers[0].get("result", answers[0]).get("ok", True), f"reload answered: {answers}")
    # ... and 3 more after it: the two older of those have stages exported by
    # this process and are still open at the stop (`with_children` below).
    at_reload = orders_opened(sock)
    check(wait_for(lambda: orders_opened(sock) >= at_reload + 3, 30),
          f"three orders opened after the reload: {at_reload} -> {orders_opened(sock)}")
    first.send_signal(signal.SIGINT)
    check(first.wait(30) == 0, f"first tt-host stopped cleanly: {first.stderr.read()}")
    persisted = persisted_starts(state)
    check(len(persisted) >= 2, f"spans open at the restart: {persisted}")
    check(wait_for(lambda: len(peer.spans()) > 0, 30), "spans of the first process arrived")
    before = peer.spans()

    run_host(host_cmd(plugins, "--ticks", "10", "--interval-ms", "5", "--no-control", *otlp, state=state), env)
    peer.stop()
    spans = peer.spans()
    ids = by_id(spans)
    after = [s for _, _, s in spans[len(before):]]
    # Every span open at the restart arrives once, from the second process, with its persisted start.
    with_children = 0
    for sid, start in persisted.items():
        same = [s for _, _, s in spans if int(s["startTimeUnixNano"]) == start]
        check(len(same) == 1, f"persisted span {sid} (start {start}) arrived exactly once: {len(same)}")
        check(all(s in after for s in same), f"persisted span {sid} was exported by the second process")
        for s in same:
            if s["name"] != "order":
                continue
            kids = [k for _, _, k in before if k["parentSpanId"] == s["spanId"]]
            with_children += 1 if kids else 0
            check(all(k["traceId"] == s["traceId"] for k in kids), "children sent before share the order's trace id")
    # The newest order may have none yet; the others had stages before the restart.
    check(with_children >= 2, f"orders continued after the restart have children sent before it: {with_children}")
    crossed = [s for _, _, s in spans if s["name"] == "order" and int(s["startTimeUnixNano"]) < reload_ns]
    check(len(crossed) >= 3, f"orders opened before the reload arrived (once each): {len(crossed)}")
    check(len(ids) == len(spans), "no span arrived twice")


# ---------------------------------------------------------------------------
def reserved_port():
    """A loopback TCP socket bound and not listening: connections to its port
    are refused (the collector is down) and, while it stays open, no other
    process can take the port (a test run in parallel, or tt-host's own
    outgoing connection, which could otherwise be given it as its local port
    and connect to itself). The peer later listens on this very socket."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def scenario_down():
    reserved = reserved_port()
    port = reserved.getsockname()[1]
    plugins = plugins_dir("down")
    state = os.path.join(root, "down", "state")
    sock = os.path.join(root, "down", "control.sock")
    host = subprocess.Popen(host_cmd(plugins, "--interval-ms", "5", "--control-socket", sock,
                                     "--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces",
                                     "--otlp-queue-size", "40", "--otlp-batch-delay-ms", "50", state=state),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env())
    children.append(host)
    if not wait_for(lambda: os.path.exists(sock), 30):
        fatal("tt-host (collector down) did not open its control socket")

    def otlp_stats():
        answers = console(sock, "stats")
        if not answers:
            return {}
        a = answers[0]
        return a.get("result", a).get("otlp", {})

    # The queue can fill before the first request has failed: wait for both to show.
    st = wait_for(lambda: (lambda s: s if s.get("dropped_queue_full", 0) > 0 and s.get("failures", 0) > 0
                           else None)(otlp_stats()), 60)
    check(st is not None and st.get("failures", 0) > 0, f"failed requests counted while down: {st}")
    check(st is not None and st.get("dropped", 0) > 0 and st.get("queue_length", 99) <= 40,
          f"drops counted in stats, the queue stays bounded: {st}")
    check(host.poll() is None, "tt-host keeps running while the collector is down")
    peer = Peer("down", listen_on=reserved)
    reserved.close()  # the peer holds it now
    check(wait_for(lambda: len(peer.spans()) >= 40, 60), "queued spans arrive once the collector is back")
    # The peer writes what it received before it answers, so the exporter counts the batch a
    # moment after the spans are visible here; wait for the count instead of reading it once.
    st = wait_for(lambda: (lambda s: s if s.get("spans_exported", 0) >= 40 else None)(otlp_stats()), 30)
    check(st is not None, f"exported counted: {otlp_stats()}")
    host.send_signal(signal.SIGINT)
    check(host.wait(30) == 0, f"tt-host stopped cleanly: {host.stderr.read()}")
    peer.stop()
    by_id(peer.spans())


# ---------------------------------------------------------------------------
def scenario_traceparent():
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    peer = Peer("traceparent")
    plugins = plugins_dir("traceparent")
    run_host(host_cmd(plugins, "--ticks", "6", "--interval-ms", "5", "--otlp-endpoint", peer.endpoint,
                      "--otlp-batch-delay-ms", "50"),
             clean_env(TRACEPARENT=f"00-{trace}-{parent}-01"))
    peer.stop()
    spans = [s for _, _, s in peer.spans()]
    check(len(spans) > 5, f"spans arrived: {len(spans)}")
    for s in spans:
        check(s["traceId"] == trace, f"{s['name']} joined the given trace: {s['traceId']}")
        if s["name"] == "order":
            check(s["parentSpanId"] == parent, f"a root's parent is the given span: {s['parentSpanId']}")
        else:
            check(s["parentSpanId"] != parent, "a child's parent is its own span")
    for bad, why in [("00-" + "0" * 32 + f"-{parent}-01", "all zeros"),
                     (f"ff-{trace}-{parent}-01", "version ff"),
                     (f"00-{trace.upper()}-{parent}-01", "lowercase hex")]:
        p = subprocess.run(host_cmd(plugins, "--ticks", "1", "--otlp-endpoint", peer.endpoint, "--traceparent", bad),
                           capture_output=True, text=True, timeout=30, env=clean_env())
        check(p.returncode == 2 and "invalid traceparent" in p.stderr,
              f"--traceparent {bad} ({why}) is a clear error: {p.returncode} {p.stderr}")


try:
    for scenario in (scenario_mapping, scenario_identity, scenario_down, scenario_traceparent):
        t = time.monotonic()
        scenario()
        print(f"{scenario.__name__}: {time.monotonic() - t:.1f} s", file=sys.stderr)
finally:
    cleanup()

harness.finish("otlp: all checks passed")
