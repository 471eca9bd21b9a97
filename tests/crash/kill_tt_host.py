#!/usr/bin/env python3
"""tt-host killed with SIGKILL at random moments keeps a sound state folder.

Runs tt-host again and again on one state folder with two plugins that keep
spans open across ticks and save their own state at stop: crash_jobs (this
folder; it tells every span id it opens and closes in its events) and the
orders example. Commits come every 2 ms. Each run ends at a random moment:
mostly SIGKILL (one in five anywhere from the start, even before the
plugins are loaded; the others 0-120 ms after both are loaded), sometimes
SIGTERM (a clean stop). After every run:

- the state always loads: `tt-state check` passes, and the next host never
  reports an unreadable file;
- crash_jobs: a span committed before the kill is still there afterwards,
  unless this run closed it (a "job closed" event the host accepted) or the
  host closed it at start because it is newer than the plugin's saved state
  (docs/RELIABILITY.md, "Crash safety"; the test works out which spans those
  are from the plugin-state header and checks the host's report);
- both plugins: a span kept keeps its start time and call site; no span
  appears twice: a span new in the state has an id at or above the previous
  next_id and was never committed before (crash_jobs: and was opened, once,
  in this run); next_id never goes back;
- a run killed before the host loaded a plugin changed nothing of it;
- after a clean stop the files agree: each plugin's state is paired with its
  last commit and names every live span, so no orphans pile up.

usage: kill_tt_host.py TT_HOST TT_STATE CRASH_JOBS_SO LIBORDERS_SO WORK_DIR [ROUNDS]
TT_KILL_SEED=<n> repeats a run (the seed is printed).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

tt_host, tt_state, jobs_so, orders_so, work = sys.argv[1:6]
# SIGKILLs wanted (the issue asks for at least 200); the clean stops that
# are mixed in come on top.
kills_wanted = int(sys.argv[6]) if len(sys.argv) > 6 else 200
seed = int(os.environ.get("TT_KILL_SEED", str(time.time_ns() % 1_000_000_007)))
rng = random.Random(seed)
print(f"kill test: {kills_wanted} kills, TT_KILL_SEED={seed}", flush=True)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import tt_harness  # noqa: E402

harness = tt_harness.Harness(work, "kill", plugins={"libcrash_jobs.so": jobs_so, "liborders.so": orders_so},
                             folders=["logs"])
root, plugins, state, check, failures = (harness.root, harness.plugins, harness.state,
                                          harness.check, harness.failures)
logs = os.path.join(root, "logs")
LINEAGES = ["crash_jobs", "orders"]


class committed:
    """What the state folder holds for one lineage."""

    def __init__(self, lineage):
        self.spans = {}  # span id -> (start_ns, call site)
        self.next_id = 1
        self.paired = None  # the plugin state's paired next_id
        self.blob = None  # the plugin state's bytes, as text
        # The spans file is binary; `tt-state dump` prints it as JSON (empty when there is none).
        dumped = None
        if os.path.isdir(state):
            dumped = subprocess.run([tt_state, "dump", state, lineage], capture_output=True, text=True)
            check(dumped.returncode == 0, f"{lineage}: tt-state dump reads the state: {dumped.stderr.strip()}")
        if dumped and dumped.returncode == 0:
            doc = json.loads(dumped.stdout)
            self.next_id = int(doc["next_id"])
            for s in doc["spans"]:
                sid = int(s["id"])
                check(sid not in self.spans, f"{lineage}: span {sid} is in the spans file once")
                self.spans[sid] = (s["start_ns"], s["callsite"])
        blob_file = os.path.join(state, f"{lineage}.plugin-state")
        if os.path.exists(blob_file):
            with open(blob_file, "rb") as f:
                head, _, body = f.read().partition(b"\n")
            parts = head.decode().split(" ")
            self.paired = int(parts[4]) if len(parts) == 5 else None
            self.blob = body.decode()

    def named_spans(self, lineage):
        """The span ids the plugin's own state names (each plugin's format)."""
        out = set()
        for line in (self.blob or "").splitlines():
            words = line.split(" ")
            if lineage == "crash_jobs" and len(words) == 3:
                out.add(int(words[1]))
            if lineage == "orders" and words[0] == "order":
                out.update(int(w) for w in words[-2:])
        return out

    def same(self, other):
        return self.spans == other.spans and self.next_id == other.next_id


def lines_of(path):
    out = []
    with open(path) as f:
        for text in f:
            try:
                out.append(json.loads(text))
            except ValueError:
                check(not text.endswith("\n"), f"{path}: a whole line that is not JSON: {text!r}")
    return out


def fields(line):
    return line.get("fields", {})


def wait_for(path, text, count, proc, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        with open(path) as f:
            if f.read().count(text) >= count:
                return True
        time.sleep(0.002)
    return False


cmd = [tt_host, "--plugins", plugins, "--state-dir", state, "--format", "json", "--no-watch", "--no-control",
       "--interval-ms", "1", "--commit-interval-ms", "2", "--filter", "info"]
ever = {l: {} for l in LINEAGES}  # every span id ever committed -> (start_ns, call site)
stats = {"kills": 0, "cleans": 0, "loads": 0, "closed": 0, "orphans": 0, "kept": 0}
started = time.monotonic()
k = -1
after = None  # what the last run left: nothing touches the state folder between runs
while stats["kills"] < kills_wanted:
    k += 1
    # Read once per run, not twice: each read starts tt-state, and under ASan
    # those starts were a good part of a run that has to fit meson's timeout.
    before = after if after is not None else {l: committed(l) for l in LINEAGES}
    after = {}
    for l in LINEAGES:
        for sid, v in before[l].spans.items():
            ever[l].setdefault(sid, v)
    out_path = os.path.join(logs, f"run-{k}.jsonl")
    clean = rng.random() < 0.12
    with open(out_path, "w") as out, open(os.path.join(logs, f"run-{k}.err"), "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        if clean:
            check(wait_for(out_path, '"plugin loaded"', 2, proc), f"run {k}: both plugins were loaded")
            time.sleep(rng.uniform(0.0, 0.06))
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
            check(rc == 0, f"run {k}: a clean stop exits 0, got {rc}")
            stats["cleans"] += 1
        else:
            # One kill in five anywhere from the start (loading, restoring),
            # the others while both plugins run (at any speed of the build).
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0.0, 0.05))
            else:
                wait_for(out_path, '"plugin loaded"', 2, proc)
                time.sleep(rng.uniform(0.0, 0.12))
            proc.kill()
            proc.wait(timeout=60)
            stats["kills"] += 1
    lines = lines_of(out_path)
    label = f"run {k} ({'SIGTERM' if clean else 'SIGKILL'})"

    if os.path.isdir(state):  # (a kill before the host created it leaves none)
        sound = subprocess.run([tt_state, "check", state], capture_output=True, text=True)
        if not check(sound.returncode == 0, f"{label}: tt-state check passes: {sound.stdout}{sound.stderr}"):
            break
    for line in lines:
        msg = fields(line).get("message", "")
        check("unreadable" not in msg and "cannot write" not in msg, f"{label}: the host reported {line}")

    for lineage in LINEAGES:
        prev, cur = before[lineage], committed(lineage)
        after[lineage] = cur
        loaded = [l for l in lines if fields(l).get("message") == "plugin loaded"
                  and fields(l).get("plugin") == lineage]
        if not loaded:
            check(cur.same(prev), f"{label}: {lineage} was not loaded, its state did not change")
            continue
        stats["loads"] += 1
        # Newer than the plugin's saved state: closed by the host at this start.
        orphans = {s for s in prev.spans if prev.paired is not None and s >= prev.paired}
        stats["orphans"] += len(orphans)
        reported = [l for l in lines if fields(l).get("message") == "spans closed: newer than the plugin's saved state"
                    and fields(l).get("plugin") == lineage]
        if orphans:
            check(len(reported) == 1 and reported[0]["fields"].get("spans") == len(orphans),
                  f"{label}: {lineage}: the host reported closing the {len(orphans)} spans newer than the plugin "
                  f"state: {reported}")
        else:
            check(not reported, f"{label}: {lineage}: no spans closed at start: {reported}")
        if orphans & set(cur.spans):  # closed at start, so only there while nothing was committed since
            check(cur.same(prev), f"{label}: {lineage}: spans newer than the plugin state outlived a commit: "
                                  f"{sorted(orphans & set(cur.spans))}")
        restored = fields(loaded[0]).get("spans_restored")
        check(restored == len(prev.spans) - len(orphans),
              f"{label}: {lineage}: restored {restored} spans, expected {len(prev.spans)} - {len(orphans)} orphans")

        for sid in set(cur.spans) & set(prev.spans):
            stats["kept"] += 1
            check(cur.spans[sid] == prev.spans[sid],
                  f"{label}: {lineage}: span {sid} kept its start and call site ({prev.spans[sid]} -> {cur.spans[sid]})")
        for sid in set(cur.spans) - set(prev.spans):
            check(sid >= prev.next_id, f"{label}: {lineage}: new span {sid} is at or above next_id {prev.next_id}")
            check(sid not in ever[lineage], f"{label}: {lineage}: span {sid} was committed before (appears twice)")
        check(cur.next_id >= prev.next_id, f"{label}: {lineage}: next_id went back ({prev.next_id} -> {cur.next_id})")

        if lineage == "crash_jobs":
            events = [fields(l) for l in lines if l.get("plugin") == "crash_jobs"]
            opened = [e["span"] for e in events if e.get("message") == "job opened"]
            closed = {e["span"] for e in events if e.get("message") == "job closed" and e.get("accepted") is True}
            stats["closed"] += len(closed)
            for sid in set(prev.spans) - set(cur.spans):
                check(sid in closed or sid in orphans,
                      f"{label}: crash_jobs: committed span {sid} vanished although this run never closed it")
            for sid in set(cur.spans) - set(prev.spans):
                check(opened.count(sid) == 1, f"{label}: crash_jobs: span {sid} is new in the state, opened once "
                                              f"in this run ({opened.count(sid)} times)")

        if clean:
            check(cur.paired == cur.next_id, f"{label}: {lineage}: the plugin state is paired with the last commit "
                                             f"({cur.paired} vs next_id {cur.next_id})")
            orphaned = set(cur.spans) - cur.named_spans(lineage)
            check(not orphaned, f"{label}: {lineage}: live spans the plugin's state does not name: {sorted(orphaned)}")
    if len(failures) > 20:
        break

took = time.monotonic() - started
print(f"kill test: {stats['kills']} kills, {stats['cleans']} clean stops, {stats['loads']} plugin loads, "
      f"{stats['kept']} spans kept across a run, {stats['closed']} closed by crash_jobs, "
      f"{stats['orphans']} closed at start as orphans, {took:.1f} s")
check(stats["kills"] >= kills_wanted or failures, f"{kills_wanted} kills ran")
check(stats["loads"] > kills_wanted, f"most runs got as far as loading the plugins ({stats['loads']} loads)")
check(stats["cleans"] > 0 and stats["kills"] > 0, "both kinds of ending happened")
check(stats["kept"] > 0 and stats["closed"] > 0, "spans were kept across kills and closed by the plugin")

harness.finish("kill test: all checks passed", keep_on_failure=True)
