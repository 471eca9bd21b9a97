#!/bin/sh
# tt-replay over every tracing-tunnel fixture stream, in every output format,
# and the persist-split pair through --persist-to / --restore-from.
# usage: tt_replay_fixtures.sh TT_REPLAY TT_STATE FIXTURES_DIR
set -u
tt_replay=$1
tt_state=$2
fixtures=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/tt-replay-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$tt_replay" --help | grep -q -- '--restore-from' || fail "--help does not mention --restore-from"
n=0
for f in "$fixtures"/*.jsonl; do
  [ -f "$f" ] || fail "no fixtures in $fixtures"
  for format in compact pretty json; do
    "$tt_replay" "$f" --format "$format" --color never > "$work/out" 2> "$work/err" \
      || { cat "$work/err"; fail "$f --format $format exited $?"; }
  done
  n=$((n + 1))
done
[ "$n" -ge 5 ] || fail "only $n fixture streams found"
echo "replayed $n fixture streams"

# Every line of the fixtures is accepted by the receiver...
for f in basic fib nested persist-split.part1; do
  "$tt_replay" "$fixtures/$f.jsonl" --strict --tracing-tunnel > /dev/null || fail "$f --strict"
done
# ... part 2 only once part 1's state is restored.
"$tt_replay" "$fixtures/persist-split.part2.jsonl" --strict > /dev/null 2>&1 \
  && fail "part 2 without its state should be refused under --strict"
"$tt_replay" "$fixtures/persist-split.part1.jsonl" --persist-to "$work/state" > /dev/null || fail "persist"
"$tt_state" check "$work/state" || fail "persisted state does not check"
"$tt_replay" "$fixtures/persist-split.part2.jsonl" --restore-from "$work/state" --strict > "$work/out" \
  || fail "part 2 after restore"
grep -q 'session ending' "$work/out" || fail "part 2 output misses its last event"

# The host's span tree matches what the real tracing-tunnel produced.
for f in basic nested fib; do
  "$tt_replay" "$fixtures/$f.jsonl" --expect "$fixtures/$f.expect.json" > "$work/out" 2> "$work/err" \
    || { cat "$work/err"; fail "$f span tree differs from $f.expect.json"; }
done
"$tt_replay" "$fixtures/persist-split.part2.jsonl" --restore-from "$work/state" \
  --expect "$fixtures/persist-split.restart.expect.json" > "$work/out" 2> "$work/err" \
  || { cat "$work/err"; fail "restart span tree differs from persist-split.restart.expect.json"; }
# ... and a wrong expectation is caught.
"$tt_replay" "$fixtures/basic.jsonl" --expect "$fixtures/fib.expect.json" > /dev/null 2>&1 \
  && fail "--expect accepted a span tree that differs"

# A corrupt state folder is reported and left alone.
[ -f "$work/state/replay.spans.bin" ] || fail "--persist-to wrote no binary spans file"
head -c 20 "$work/state/replay.spans.bin" > "$work/cut" && mv "$work/cut" "$work/state/replay.spans.bin"
"$tt_replay" "$fixtures/basic.jsonl" --restore-from "$work/state" > /dev/null 2> "$work/err" && fail "corrupt restore exited 0"
grep -q "replay.spans.bin: truncated" "$work/err" || fail "corrupt restore does not name the file and the problem"
[ -f "$work/state/replay.spans.bin" ] || fail "tt-replay moved the user's file"

# Our own JSON lines (header + events) replay too.
printf '%s\n' '{"tracetunnel":"events","format":1}' \
  '{"new_callsite":{"id":"0x1","kind":"event","level":"info","name":"hi","target":"t","module_path":"","file":"","line":0,"fields":["message"]}}' \
  '{"new_event":{"callsite":"0x1","parent":"root","values":[["message",{"debug":"hello there"}]]}}' > "$work/ours.jsonl"
"$tt_replay" "$work/ours.jsonl" --strict --color never | grep -q 'hello there' || fail "our JSON lines"
printf '%s\n' '{"tracetunnel":"events","format":99}' > "$work/newer.jsonl"
"$tt_replay" "$work/newer.jsonl" > /dev/null 2>&1 && fail "a newer stream format was accepted"
echo PASS
