#!/bin/sh
# tt-state check / show / dump on a good, an older-build (v1) and a corrupted state folder.
# usage: tt_state_cli.sh TT_STATE MAKE_STATE PROJECT_VERSION
set -u
tt_state=$1
make_state=$2
project_version=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/tt-state-cli-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

[ "$("$tt_state" --version)" = "tt-state $project_version" ] || fail "--version is not 'tt-state $project_version'"

"$tt_state" --help | grep -q 'check' || fail "--help does not mention check"
"$tt_state" check --help | grep -q 'DIR' || fail "check --help does not mention DIR"
"$tt_state" --help | grep -q 'dump' || fail "--help does not mention dump"

"$make_state" "$work/good" good || fail "make_state good"
[ -f "$work/good/orders.spans.bin" ] || fail "no binary spans file written"
[ -f "$work/good/billing%2Feu.spans.bin" ] || fail "no binary spans file for billing/eu"
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
echo "$out" | grep -q 'orders.spans.bin' || fail "show does not name the binary spans file"

# dump: the binary spans as JSON, one span per line.
out=$("$tt_state" dump "$work/good" billing/eu); rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "dump exited $rc"
echo "$out" | grep -q '"next_id":"4"' || fail "dump misses next_id"
echo "$out" | grep -q '{"id":"3","callsite":"0x1d40c9a3be7f0112","parent":"1","ref_count":"1"' || fail "dump misses span 3"
echo "$out" | grep -q '\["user",{"str":"ann"}\]' || fail "dump misses a value"
"$tt_state" dump --metadata "$work/good" orders | grep -q '"name":"request"' || fail "dump --metadata misses a call site"
out=$("$tt_state" dump "$work/good" nobody); rc=$?
[ "$rc" -eq 0 ] || fail "dump of a lineage without state exited $rc"
echo "$out" | grep -q '"spans":\[\]' || fail "dump of a lineage without state is not empty"

# An older build's JSON spans file is read as it is, and named.
"$make_state" "$work/v1" v1 || fail "make_state v1"
"$tt_state" check "$work/v1" | grep -q '2 lineage(s), no problems' || fail "check of a v1 folder"
"$tt_state" show "$work/v1" orders | grep -q 'orders.spans.json' || fail "show does not name the JSON spans file"
[ "$("$tt_state" dump "$work/v1" orders)" = "$("$tt_state" dump "$work/good" orders)" ] || fail "v1 and v2 dumps differ"

"$make_state" "$work/bad" corrupt || fail "make_state corrupt"
before=$(od -c "$work/bad/orders.spans.bin")
out=$("$tt_state" check "$work/bad"); rc=$?
echo "$out"
[ "$rc" -eq 1 ] || fail "check of a corrupted folder exited $rc, not 1"
echo "$out" | grep -q "$work/bad/orders.spans.bin: truncated" || fail "the problem line does not name the file"
[ "$(echo "$out" | wc -l)" -eq 1 ] || fail "expected exactly one problem line"
[ "$(od -c "$work/bad/orders.spans.bin")" = "$before" ] || fail "check changed the file"
"$tt_state" show "$work/bad" >/dev/null 2>&1 && fail "show of a corrupted folder exited 0"
"$tt_state" dump "$work/bad" orders >/dev/null 2>&1 && fail "dump of a corrupted lineage exited 0"
"$tt_state" check "$work/missing" >/dev/null 2>&1 && fail "check of a missing folder exited 0"
echo PASS
