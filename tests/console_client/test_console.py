#!/usr/bin/env python3
"""tt-console against a fake tt-host control socket (fake_host.py).

usage: test_console.py TT_CONSOLE WORK_DIR CASE
CASE: exec_json, exec_error, no_host, protocol, tables, tail, tail_sigint, interactive
"""
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_host  # noqa: E402

console, work, case = sys.argv[1:4]
root = os.path.join(work, f"console-{case}-{os.getpid()}")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(root)
sock_path = os.path.join(root, "control.sock")
env = dict(os.environ, HOME=root, XDG_STATE_HOME=os.path.join(root, "state"), TERM="dumb")

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    else:
        print(f"ok: {what}")


def run(*args, timeout=20):
    p = subprocess.run([console, "--socket", sock_path, *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    print(f"$ tt-console {' '.join(args)}\n-- rc {p.returncode}\n-- stdout\n{p.stdout}-- stderr\n{p.stderr}")
    return p


def case_exec_json():
    host = fake_host.FakeHost(sock_path)
    p = run("--json", "--exec", "plugins", "--exec", "callsites orders", "--exec", "filter set info,orders=debug",
            "--exec", "filter", "--exec", "stats", "--exec", "spans", "--exec", "reload orders",
            "--exec", "errors", "--exec", "persist", "--exec", "diff orders", "--exec", "unload orders",
            "--exec", "load /p/liborders.so")
    check(p.returncode == 0, "exit status 0")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    check(len(lines) == 12, f"one JSON line per command ({len(lines)})")
    if len(lines) == 12:
        check(lines[0] == fake_host.PLUGINS, "plugins result")
        check(lines[1] == fake_host.CALLSITES, "callsites result")
        check(lines[2] == {"filter": "info,orders=debug"}, "filter_set result")
        check(lines[3] == {"filter": "info,orders=debug"}, "filter result after set")
        check(lines[4] == fake_host.STATS, "stats result")
        check(lines[5] == fake_host.SPANS, "spans result")
        check(lines[6] == fake_host.REPORT, "reload result")
        check(lines[8] == {"problems": []}, "persist result")
        check(lines[10] == {}, "unload result")
        check(lines[11] == fake_host.PLUGINS[0], "load result")
    reqs = [(r["cmd"], r.get("args", {})) for r in host.requests]
    check(reqs == [("plugins", {}), ("callsites", {"plugin": "orders"}),
                   ("filter_set", {"directives": "info,orders=debug"}), ("filter", {}), ("stats", {}), ("spans", {}),
                   ("reload", {"plugin": "orders"}), ("errors", {}), ("persist", {}), ("diff", {"plugin": "orders"}),
                   ("unload", {"plugin": "orders"}), ("load", {"file": "/p/liborders.so"})],
          f"requests as in docs/CONSOLE.md: {reqs}")
    ids = [r["id"] for r in host.requests]
    check(len(set(ids)) == len(ids), "distinct request ids")
    host.close()


def case_exec_error():
    fake_host.FakeHost(sock_path)
    p = run("--json", "--exec", "reload nope", "--exec", "plugins")
    check(p.returncode == 1, "exit status 1 when a command failed")
    check("unknown_plugin" in p.stderr and "no plugin named 'nope'" in p.stderr, "error code and message on stderr")
    check(len(p.stdout.splitlines()) == 1 and json.loads(p.stdout) == fake_host.PLUGINS,
          "the next command still ran")
    p = run("--exec", "filter set info,x=!")
    check(p.returncode == 1 and "failed" in p.stderr and "bad filter" in p.stderr, "a bad filter fails")
    p = run("--exec", "frobnicate")
    check(p.returncode == 1 and "unknown command 'frobnicate'" in p.stderr, "an unknown command fails")
    p = run("--exec", "reload")
    check(p.returncode == 1 and "usage: reload PLUGIN" in p.stderr, "a missing argument fails with its usage")
    p = run("--exec", "plugins", "--exec", "quit", "--exec", "reload nope")
    check(p.returncode == 0, "quit stops running the commands")


def case_no_host():
    p = run("--exec", "plugins")
    check(p.returncode == 2, "exit status 2 without a socket")
    check(f"no tt-host is running at {sock_path} (no such file)" in p.stderr, "no such file message")
    # A socket file nobody listens on any more (a crashed tt-host).
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock_path)
    s.close()
    p = run("--exec", "plugins")
    check(p.returncode == 2, "exit status 2 with a stale socket")
    check(f"no tt-host is running at {sock_path} (connection refused)" in p.stderr, "connection refused message")


def case_protocol():
    host = fake_host.FakeHost(sock_path, protocol=2)
    p = run("--exec", "plugins")
    check(p.returncode == 3, "exit status 3 on another protocol")
    check(f"tt-host at {sock_path} speaks protocol 2, this tt-console speaks 1" in p.stderr, "mismatch message")
    time.sleep(0.1)
    check(host.requests == [], "nothing sent to a host of another protocol")


def case_tables():
    fake_host.FakeHost(sock_path)
    p = run("--no-color", "--exec", "plugins", "--exec", "callsites", "--exec", "spans", "--exec", "stats",
            "--exec", "errors", "--exec", "reload orders", "--exec", "filter", "--exec", "help")
    check(p.returncode == 0, "exit status 0")
    out = p.stdout
    check("\033[" not in out, "no colours with --no-color (and not on a terminal)")
    check(re.search(r"^NAME\s+VERSION\s+GEN\s+STATE\s+LOADED AT\s+RELOADS\s+ERRORS$", out, re.M) is not None,
          "plugins header")
    check(re.search(r"^orders\s+1\.2\.0\s+2\s+running\s+2026-11-23 17:00:00\s+1\s+0$", out, re.M) is not None,
          "orders row")
    check(re.search(r"^sensor\s+0\.3\.1\s+1\s+failed\s+.*\(1 failed\)\s+1$", out, re.M) is not None, "sensor row")
    check(re.search(r"^PLUGIN\s+ID\s+KIND\s+LEVEL\s+NAME\s+TARGET\s+FILE:LINE\s+INTEREST\s+HITS$", out, re.M)
          is not None, "callsites header")
    check(re.search(r"0x1a2b\s+span\s+INFO\s+order\s+orders\s+plugins/orders/orders.cpp:42\s+always\s+17", out)
          is not None, "callsite row")
    check(re.search(r"^└─ order\s+order_id=7\s+1m01s$", out, re.M) is not None, "root span")
    check(re.search(r"^   └─ charge\s+amount=12\.5\s+1\.2s$", out, re.M) is not None, "child span")
    check(re.search(r"^      └─ bank_call\s+250ms$", out, re.M) is not None, "grandchild span")
    check(re.search(r"^PLUGIN\s+EVENTS\s+EV/S\s+ERRORS\s+FILTERED\s+LIVE SPANS$", out, re.M) is not None,
          "stats header")
    check(re.search(r"^orders\s+1234\s+9\.9\s+0\s+12\s+3$", out, re.M) is not None, "stats row")
    check("malformed event" in out and "start failed" in out, "errors")
    check("orders: reloaded 1.1.0 -> 1.2.0 (generation 1 -> 2) in 14 ms, 3 spans carried" in out, "reload report")
    check("filter: info" in out, "filter")
    for c in ["plugins", "callsites", "spans", "tail", "filter", "reload", "unload", "load", "persist", "stats",
              "errors", "diff", "help", "quit"]:
        check(re.search(rf"^  {c}\b", out, re.M) is not None, f"help lists {c}")


def case_tail():
    host = fake_host.FakeHost(sock_path, tail_mode="close")
    p = run("--json", "--exec", "tail --filter orders=debug")
    check(p.returncode == 0, "tail ends with the connection, exit 0")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    check(lines == fake_host.EVENTS, "every event line printed as JSON")
    check([(r["cmd"], r.get("args", {})) for r in host.requests] == [("subscribe", {"filter": "orders=debug"})],
          "subscribe with the filter")
    p = run("--no-color", "--exec", "tail")
    check("INFO orders orders: order received order_id=8 in order" in p.stdout, "human event line")
    check("12 events dropped" in p.stdout, "dropped line")
    check(" WARN orders orders: card declined order_id=8 in order>charge" in p.stdout, "nested spans")


def case_tail_sigint():
    host = fake_host.FakeHost(sock_path, tail_mode="keep")
    proc = subprocess.Popen([console, "--socket", sock_path, "--json", "--exec", "tail", "--exec", "filter"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got = []
    deadline = time.time() + 10
    while len(got) < len(fake_host.EVENTS) and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        got.append(json.loads(line))
    check(got == fake_host.EVENTS, "events arrive")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    print(out, err)
    check(proc.returncode == 0, f"Ctrl-C ends tail, the next command runs, exit 0 ({proc.returncode})")
    check([r["cmd"] for r in host.requests] == ["subscribe", "unsubscribe", "filter"],
          f"unsubscribe after Ctrl-C: {[r['cmd'] for r in host.requests]}")
    check(json.loads(out.splitlines()[-1]) == {"filter": "info"}, "the next command's result")


class Pty:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.out = b""

    def expect(self, pattern, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[>=]|\x07", b"", self.out)
            if re.search(pattern, text, re.S):
                return True
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.out += data
        return False

    def send(self, s):
        os.write(self.fd, s.encode())

    def mark(self):
        self.out = b""

    def wait(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid != 0:
                return os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.out += os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        return None


def case_interactive():
    host = fake_host.FakeHost(sock_path)
    t = Pty([console, "--socket", sock_path])
    check(t.expect(rb"tt> "), "the tt> prompt")
    t.mark()
    t.send("help\n")
    check(t.expect(rb"quit\s+leave the console[^\n]*\n.*tt> ", timeout=10), "help answered")
    text = t.out.decode(errors="replace")
    for c in ["plugins", "callsites [PLUGIN]", "spans [PLUGIN]", "tail [--filter DIRECTIVES]",
              "filter | filter set DIRECTIVES", "reload PLUGIN", "unload PLUGIN", "load FILE", "persist", "stats",
              "errors [PLUGIN]", "diff PLUGIN", "help [COMMAND]", "quit"]:
        check(re.search(rf"^\s*{re.escape(c)}\s+\S", text, re.M) is not None, f"help lists '{c}'")
    t.mark()
    t.send("rel\t")
    check(t.expect(rb"reload $"), f"rel + TAB completes reload: {t.out!r}")
    t.send("\x15")  # Ctrl-U: clear the line
    time.sleep(0.2)
    t.mark()
    t.send("reload o\t")
    check(t.expect(rb"orders $"), f"reload o + TAB completes orders: {t.out!r}")
    check(any(r["cmd"] == "plugins" for r in host.requests), "plugin names fetched with plugins")
    t.mark()
    t.send("\n")
    check(t.expect(rb"orders: reloaded 1\.1\.0 -> 1\.2\.0.*tt> ", timeout=10), "the completed line runs")
    check(host.requests[-1] == {"id": host.requests[-1]["id"], "cmd": "reload", "args": {"plugin": "orders"}},
          f"reload orders sent: {host.requests[-1]}")
    t.mark()
    t.send("help rel\t")
    check(t.expect(rb"help reload $"), "help + command completion")
    t.send("\n")
    check(t.expect(rb"reload PLUGIN\s+reload a plugin"), "help COMMAND")
    t.mark()
    t.send("bogus\n")
    check(t.expect(rb"unknown command 'bogus'.*tt> "), "an unknown command keeps the console going")
    t.send("plu")
    time.sleep(0.2)
    t.mark()
    t.send("\x03")  # Ctrl-C: drops the line, a new prompt
    check(t.expect(rb"tt> $"), f"Ctrl-C at the prompt gives a new prompt: {t.out!r}")
    t.mark()
    t.send("stats\n")
    check(t.expect(rb"PLUGIN\s+EVENTS.*tt> "), "the line after Ctrl-C starts empty")
    t.send("quit\n")
    rc = t.wait()
    check(rc == 0, f"quit exits 0 ({rc})")
    hist = os.path.join(root, "state", "tracetunnel", "console_history")
    check(os.path.exists(hist) and "reload orders" in open(hist).read(), "history kept in the state folder")
    # History is read back by the next session: Up arrow recalls the last line.
    t = Pty([console, "--socket", sock_path])
    check(t.expect(rb"tt> "), "second session prompt")
    t.mark()
    t.send("\x10")  # Ctrl-P: previous history line
    check(t.expect(rb"quit"), "history recalled in a new session")
    t.send("\n")
    check(t.wait() == 0, "second session quits")


{
    "exec_json": case_exec_json,
    "exec_error": case_exec_error,
    "no_host": case_no_host,
    "protocol": case_protocol,
    "tables": case_tables,
    "tail": case_tail,
    "tail_sigint": case_tail_sigint,
    "interactive": case_interactive,
}[case]()

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("all checks passed")
