#!/usr/bin/env python3
"""tt-console against a real tt-host (--control-socket) running the orders example plugin.

usage: e2e_tt_host.py TT_HOST TT_CONSOLE LIBORDERS_SO WORK_DIR
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

tt_host, console, orders_so, work = sys.argv[1:5]
root = os.path.join(work, f"e2e-{os.getpid()}")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(os.path.join(root, "plugins"))
shutil.copy(orders_so, os.path.join(root, "plugins", "liborders.so"))
sock = os.path.join(root, "control.sock")
env = dict(os.environ, HOME=root, XDG_STATE_HOME=os.path.join(root, "xdg"))
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, file=sys.stdout if cond else sys.stderr)
    if not cond:
        failures.append(what)


def run(*args):
    p = subprocess.run([console, "--socket", sock, *args], capture_output=True, text=True, env=env, timeout=30)
    print(f"$ tt-console {' '.join(args)}\n-- rc {p.returncode}\n{p.stdout}{p.stderr}")
    return p


host = subprocess.Popen([tt_host, "--plugins", os.path.join(root, "plugins"), "--state-dir",
                         os.path.join(root, "state"), "--control-socket", sock, "--no-watch", "--interval-ms", "20",
                         "--format", "json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
try:
    deadline = time.time() + 30
    while not os.path.exists(sock) and time.time() < deadline and host.poll() is None:
        time.sleep(0.05)
    check(os.path.exists(sock), "tt-host made its control socket")

    p = run("--json", "--exec", "plugins")
    check(p.returncode == 0, "plugins: exit 0")
    plugins = json.loads(p.stdout.splitlines()[0]) if p.stdout else []
    check([x.get("name") for x in plugins] == ["orders"], "plugins lists orders")
    check(plugins and plugins[0].get("state") == "running", "orders is running")

    p = run("--json", "--exec", "filter set info,orders=debug", "--exec", "filter", "--exec", "stats")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    check(p.returncode == 0 and len(lines) == 3, "filter set, filter, stats: exit 0, three lines")
    if len(lines) == 3:
        check(lines[1].get("filter") == "info,orders=debug", "the filter was changed")
        check(any(x.get("name") == "orders" for x in lines[2].get("plugins", [])), "stats has orders")

    p = run("--json", "--exec", "reload nope")
    check(p.returncode == 1 and "unknown_plugin" in p.stderr, "an unknown plugin: exit 1, the error code")

    # tail with --exec until Ctrl-C; the host keeps serving afterwards.
    proc = subprocess.Popen([console, "--socket", sock, "--json", "--exec", "tail", "--exec", "plugins"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()
    check('"event"' in first or '"dropped"' in first, f"tail prints event lines: {first[:200]}")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    check(proc.returncode == 0, f"tail stopped by Ctrl-C, then plugins ran: exit {proc.returncode} {err}")
    last = out.splitlines()[-1] if out else "null"
    check(isinstance(json.loads(last), list), "the plugins result follows the tail")
finally:
    host.send_signal(signal.SIGTERM)
    try:
        host.wait(timeout=30)
    except subprocess.TimeoutExpired:
        host.kill()

if failures:
    sys.exit(1)
print("all checks passed")
