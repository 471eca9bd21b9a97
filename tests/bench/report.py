#!/usr/bin/env python3
"""Prints the summary table of a tt_bench run (Google Benchmark JSON).

    tests/bench/report.py build-bench/bench-results.json [--markdown]

Per scenario: the figure (median of the repetitions), the target of the
issue and whether it is met. Reads only; the benchmarks measure, this file
compares, and nothing fails on a missed target.
"""
import json
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") != "median":
                continue
        elif name in rows:
            continue  # single runs: keep the first
        rows[name] = b
    return data.get("context", {}), rows


def find(rows, prefix):
    for name, b in rows.items():
        if name.startswith(prefix):
            return b
    return None


def ns(b, counter):
    return b[counter] * 1e9 if b and counter in b else None


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    md = "--markdown" in sys.argv
    ctx, rows = load(sys.argv[1])
    out = []  # (id, what, figure text, target text, met or None)

    def row(sid, what, value, fmt, target_text=None, ok=None):
        txt = "n/a (not run)" if value is None else fmt.format(value)
        out.append((sid, what, txt, target_text or "-", None if value is None else ok))

    base = find(rows, "BM_baseline_no_tracing")
    row("ref", "same loop, no tracing (ns / typical event)", ns(base, "ns_per_typical"), "{:.2f}")
    sp = find(rows, "BM_spdlog_typical_null_sink")
    row("ref", "spdlog, typical event, null sink (ns / event)", ns(sp, "ns_per_typical"), "{:.1f}")
    spd = find(rows, "BM_spdlog_disabled")
    row("ref", "spdlog, disabled trace call (ns / call)", ns(spd, "ns_per_call"), "{:.2f}")

    v = ns(find(rows, "BM_S1_"), "ns_per_call")
    row("S1", "disabled call site (ns / call)", v, "{:.3f}", "<= 1 ns", v is not None and v <= 1)
    v = ns(find(rows, "BM_S2_"), "ns_per_typical")
    row("S2", "sender only (ns / typical event)", v, "{:.1f}", "<= 15 ns", v is not None and v <= 15)
    b = find(rows, "BM_S3_receiver_only")
    v = ns(b, "ns_per_event")
    row("S3", "receiver only (ns / event)", v, "{:.1f}", "<= 25 ns", v is not None and v <= 25)
    row("S3", "receiver only (ns / typical event)", ns(b, "ns_per_typical"), "{:.1f}")
    row("S3r", "S3's loop reading the recording alone, no receiver (ns / event)",
        ns(find(rows, "BM_S3r_recording_read"), "ns_per_event"), "{:.1f}")
    b = find(rows, "BM_S4_")
    v = ns(b, "ns_per_event")
    row("S4", "full pipeline (ns / event)", v, "{:.1f}", "<= 40 ns", v is not None and v <= 40)
    row("S4", "full pipeline (ns / typical event)", ns(b, "ns_per_typical"), "{:.1f}")
    b = find(rows, "BM_S5_")
    if b:
        for step in ("persist", "encode", "decode", "construct"):
            row("S5", f"100k spans: {step} (ms)", b.get(step + "_ms"), "{:.1f}")
        v = b.get("total_ms")
        row("S5", "100k spans: persist + restore in all (ms)", v, "{:.1f}", "<= 40 ms", v is not None and v <= 40)
        v = b.get("spans_file_bytes_per_span", b.get("spans_json_bytes_per_span"))  # (older results: JSON)
        row("S5", "bytes per span (spans file)", v, "{:.1f}", "<= 100 B", v is not None and v <= 100)
        row("S5", "metadata JSON (bytes, whole file)", b.get("metadata_json_bytes"), "{:.0f}")
    else:
        row("S5", "persist + restore", None, "")
    b = find(rows, "BM_S6_")
    for k, what in (("bytes_typical_event", "typical event"), ("bytes_new_span", "new span"),
                    ("bytes_enter", "enter"), ("bytes_exit", "exit"), ("bytes_drop", "drop")):
        row("S6", f"JSON line bytes: {what}", b.get(k) if b else None, "{:.0f}")
    row("S6", "encode the typical event to JSON (ns)", ns(b, "ns_encode_typical"), "{:.1f}")
    v = ns(find(rows, "BM_S7_console_layer"), "ns_per_typical")
    row("S7", "console layer to /dev/null, default writer: buffered (ns / typical event)", v, "{:.0f}", "<= 300 ns",
        v is not None and v <= 300)
    v = ns(find(rows, "BM_S8_json_layer"), "ns_per_typical")
    row("S8", "JSON layer to /dev/null, default writer: buffered (ns / typical event)", v, "{:.0f}", "<= 300 ns",
        v is not None and v <= 300)
    v = ns(find(rows, "BM_S7w_console_layer_each_line"), "ns_per_typical")
    row("S7w", "S7, each line written through (ns / typical event)", v, "{:.0f}")
    v = ns(find(rows, "BM_S8w_json_layer_each_line"), "ns_per_typical")
    row("S8w", "S8, each line written through (ns / typical event)", v, "{:.0f}")
    v = ns(find(rows, "BM_S9p_line_transfer"), "ns_per_transfer")
    row("S9p", "one cache line from thread to thread, just before S9 (ns)", v, "{:.0f}")
    t1 = find(rows, "BM_S9_threads/real_time/threads:1")
    t2 = find(rows, "BM_S9_threads/real_time/threads:2")
    e1 = t1.get("events_per_s") if t1 else None
    e2 = t2.get("events_per_s") if t2 else None
    row("S9", "one thread (M events / s)", e1 / 1e6 if e1 else None, "{:.2f}")
    row("S9", "two threads (M events / s, total)", e2 / 1e6 if e2 else None, "{:.2f}")
    r = e2 / e1 if e1 and e2 else None
    row("S9", "two threads / one thread", r, "{:.2f}x", ">= 1.6x", r is not None and r >= 1.6)
    b = find(rows, "BM_S10_reload_state_dir/")
    v = b["real_time"] if b else None  # manual time, in ms
    row("S10", "reload, 10k live spans, with state folder (ms)", v, "{:.1f}", "<= 20 ms", v is not None and v <= 20)
    b = find(rows, "BM_S10_reload_state_dir_changed")
    v = b["real_time"] if b else None
    row("S10", "the same, spans changed before each reload (ms)", v, "{:.1f}", "<= 20 ms", v is not None and v <= 20)
    b = find(rows, "BM_S10_reload_memory_only")
    v = b["real_time"] if b else None
    row("S10", "reload, 10k live spans, memory only (ms)", v, "{:.1f}", "<= 20 ms", v is not None and v <= 20)
    b = find(rows, "BM_S11_")
    v = b.get("host_heap_bytes_per_live_span") if b else None
    row("S11", "host heap per live span (bytes)", v, "{:.0f}", "<= 200 B", v is not None and v <= 200)
    if b:
        row("S11", "RSS after 10 reloads (MiB)", b.get("rss_after_10_reloads_MiB"), "{:.1f}")
        row("S11", "RSS after 1,000 reloads (MiB)", b.get("rss_after_1000_reloads_MiB"), "{:.1f}")
        g = b.get("rss_growth_pct")
        row("S11", "RSS growth 10 -> 1,000 reloads (%)", g, "{:+.2f}", "within 5 %", g is not None and abs(g) <= 5)

    def met(m):
        return "" if m is None and False else ("met" if m else ("MISSED" if m is False else "-"))

    header = ("id", "measure", "median", "target", "met?")
    table = [header] + [(s, w, f, t, "-" if t == "-" else met(m)) for s, w, f, t, m in out]
    if md:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r_ in table[1:]:
            print("| " + " | ".join(r_) + " |")
    else:
        widths = [max(len(r_[i]) for r_ in table) for i in range(len(header))]
        for i, r_ in enumerate(table):
            print("  ".join(c.ljust(w) for c, w in zip(r_, widths)).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))
    lib_build = ctx.get("library_build_type")
    print(f"\n(host: {ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} CPUs, "
          f"build: {ctx.get('build', '?')}, compiler: {ctx.get('compiler', '?')}, "
          f"benchmark library: {lib_build}, load average at start: {ctx.get('load_avg', '?')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
