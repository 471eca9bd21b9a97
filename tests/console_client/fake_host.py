"""A stand-in for tt-host's control socket (docs/CONSOLE.md, protocol 1).

Only for testing tt-console alone: it sends the greeting, answers each
request line with a canned result and records every request it received.
"""
import json
import os
import socket
import threading
import time

PLUGINS = [
    {"name": "orders", "version": "1.2.0", "description": "example orders", "file": "/p/liborders.so",
     "loaded_copy": "/tmp/x/liborders.so", "generation": 2, "state": "running",
     "loaded_at": "2026-11-23T17:00:00.123Z", "reloads": 1, "failed_reloads": 0, "emits_after_stop": 0,
     "quarantined": False, "live_spans": 3, "errors": []},
    {"name": "sensor", "version": "0.3.1", "description": "example sensor", "file": "/p/libsensor.so",
     "loaded_copy": "/tmp/x/libsensor.so", "generation": 1, "state": "failed",
     "loaded_at": "2026-11-23T17:00:01Z", "reloads": 0, "failed_reloads": 1, "emits_after_stop": 0,
     "quarantined": False, "live_spans": 0, "errors": ["start failed: no device"]},
]

CALLSITES = [
    {"plugin": "orders", "id": "0x1a2b", "kind": "span", "level": "INFO", "name": "order", "target": "orders",
     "file": "plugins/orders/orders.cpp", "line": 42, "fields": ["id"], "interest": "always", "hits": 17},
    {"plugin": "orders", "id": "0x1a2c", "kind": "event", "level": "DEBUG", "name": "event orders.cpp:50",
     "target": "orders::charge", "file": "plugins/orders/orders.cpp", "line": 50, "fields": ["message"],
     "interest": "never", "hits": 0},
]

SPANS = [
    {"plugin": "orders", "id": 1, "parent": 0, "name": "order", "level": "INFO", "target": "orders",
     "fields": {"order_id": 7}, "start": "2026-11-23T17:00:00Z", "age_ms": 61500, "ref_count": 1},
    {"plugin": "orders", "id": 2, "parent": 1, "name": "charge", "level": "INFO", "target": "orders",
     "fields": {"amount": 12.5}, "start": "2026-11-23T17:00:01Z", "age_ms": 1200, "ref_count": 1},
    {"plugin": "orders", "id": 3, "parent": 2, "name": "bank_call", "level": "DEBUG", "target": "orders",
     "fields": {}, "start": "2026-11-23T17:00:02Z", "age_ms": 250, "ref_count": 1},
]

STATS = {
    "uptime_ms": 125000,
    "plugins": [{"name": "orders", "events": {"new_callsite": 2, "new_span": 40}, "events_total": 1234,
                 "events_per_second": 9.87, "errors": {"malformed": 0}, "errors_total": 0, "filtered": 12,
                 "live_spans": 3, "callsites": 2, "quota_violations": 0}],
    "pipeline": {"spans_created": 40, "spans_live": 3, "events": 1234, "events_filtered": 12, "anomalies": 0,
                 "layer_errors": 0},
    "console": {"clients": 1, "dropped": 0},
}

REPORT = {"ok": True, "plugin": "orders", "old_version": "1.1.0", "new_version": "1.2.0", "old_generation": 1,
          "new_generation": 2, "took_ms": 14, "spans_carried": 3, "added": ["0x1a2d"], "removed": [],
          "changed": [], "error": ""}

EVENTS = [
    {"event": {"time": "2026-11-23T17:00:03.001Z", "level": "INFO", "plugin": "orders", "target": "orders",
               "message": "order received", "fields": {"order_id": 8}, "spans": ["order"]}},
    {"dropped": 12},
    {"event": {"time": "2026-11-23T17:00:03.002Z", "level": "WARN", "plugin": "orders", "target": "orders",
               "message": "card declined", "fields": {"order_id": 8}, "spans": ["order", "charge"]}},
]


class FakeHost:
    """Serves `path` in a thread. protocol: the greeting's protocol number.
    tail_mode: 'close' closes the connection after the subscription's events,
    'keep' keeps it open (the client stops it with Ctrl-C)."""

    def __init__(self, path, protocol=1, tail_mode="close"):
        self.path = path
        self.protocol = protocol
        self.tail_mode = tail_mode
        self.requests = []
        self.filter = "info"
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def answer(self, req):
        cmd = req.get("cmd")
        args = req.get("args", {})
        plugin = args.get("plugin")
        names = [p["name"] for p in PLUGINS]
        if plugin is not None and plugin not in names:
            return None, ("unknown_plugin", f"no plugin named '{plugin}'")
        if cmd == "plugins":
            return PLUGINS, None
        if cmd == "callsites":
            return [c for c in CALLSITES if plugin in (None, c["plugin"])], None
        if cmd == "spans":
            return [s for s in SPANS if plugin in (None, s["plugin"])], None
        if cmd == "stats":
            return STATS, None
        if cmd == "errors":
            return {"receive": [{"plugin": "orders", "message": "malformed event"}],
                    "load": [{"plugin": "sensor", "file": "/p/libsensor.so", "message": "start failed"}]}, None
        if cmd == "filter":
            return {"filter": self.filter}, None
        if cmd == "filter_set":
            d = args.get("directives")
            if not isinstance(d, str) or "!" in d:
                return None, ("failed", f"bad filter at byte {d.find('!') if isinstance(d, str) else 0}")
            self.filter = d
            return {"filter": d}, None
        if cmd in ("reload", "diff"):
            if plugin is None:
                return None, ("bad_request", "missing plugin")
            return REPORT, None
        if cmd == "unload":
            return {}, None
        if cmd == "load":
            return PLUGINS[0], None
        if cmd == "persist":
            return {"problems": []}, None
        if cmd in ("subscribe", "unsubscribe"):
            return {}, None
        return None, ("unknown_command", f"no command '{cmd}'")

    def _client(self, conn):
        f = conn.makefile("rwb", buffering=0)
        hello = {"hello": "tracetunnel", "protocol": self.protocol, "host_pid": os.getpid(), "version": "0.1.0"}
        try:
            f.write((json.dumps(hello) + "\n").encode())
            for raw in f:
                try:
                    req = json.loads(raw)
                except ValueError:
                    f.write(b'{"id":null,"ok":false,"error":{"code":"bad_json","message":"bad json"}}\n')
                    continue
                self.requests.append(req)
                result, err = self.answer(req)
                resp = {"id": req.get("id"), "ok": err is None}
                if err is None:
                    resp["result"] = result
                else:
                    resp["error"] = {"code": err[0], "message": err[1]}
                f.write((json.dumps(resp) + "\n").encode())
                if req.get("cmd") == "subscribe":
                    for e in EVENTS:
                        f.write((json.dumps(e) + "\n").encode())
                        time.sleep(0.02)
                    if self.tail_mode == "close":
                        break
                    # 'keep': more events after unsubscribe would be a bug; events
                    # already queued may still arrive before the answer.
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
