#!/bin/sh
# tt-state check / show on a good and on a corrupted state folder.
# usage: tt_state_cli.sh TT_STATE MAKE_STATE
set -u
tt_state=$1
make_state=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/tt-state-cli-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$tt_state" --help | grep -q 'check' || fail "--help does not mention check"
"$tt_state" check --help | grep -q 'DIR' || fail "check --help does not mention DIR"

"$make_state" "$work/good" good || fail "make_state good"
out=$("$tt_state" check "$work/good"); rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "check of a good folder exited $rc"
echo "$out" | grep -q '2 lineage' || fail "check did not count 2 lineages"
out=$("$tt_state" show "$work/good"); rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "show of a good folder exited $rc"
echo "$out" | grep -q 'lineage "billing/eu"' || fail "show misses billing/eu"
echo "$out" | grep -q '      3 query' || fail "show does not nest span 3 under span 1"
echo "$out" | grep -q 'user="ann"' || fail "show misses a field value"

"$make_state" "$work/bad" corrupt || fail "make_state corrupt"
before=$(cat "$work/bad/orders.spans.json")
out=$("$tt_state" check "$work/bad"); rc=$?
echo "$out"
[ "$rc" -eq 1 ] || fail "check of a corrupted folder exited $rc, not 1"
echo "$out" | grep -q "$work/bad/orders.spans.json: invalid_json" || fail "the problem line does not name the file"
[ "$(echo "$out" | wc -l)" -eq 1 ] || fail "expected exactly one problem line"
[ "$(cat "$work/bad/orders.spans.json")" = "$before" ] || fail "check changed the file"
"$tt_state" show "$work/bad" >/dev/null 2>&1 && fail "show of a corrupted folder exited 0"
"$tt_state" check "$work/missing" >/dev/null 2>&1 && fail "check of a missing folder exited 0"
echo PASS
