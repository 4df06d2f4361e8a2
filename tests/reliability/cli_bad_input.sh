#!/bin/sh
# The CLI's half of the bad-input matrix (issue 12): hostile arguments and files get exit 1 with
# a message naming the bad value (or 2 for usage), never a crash, a silently dropped value or a
# file the CLI's own `validate` rejects.
# usage: cli_bad_input.sh SPARSEBUDGET_BINARY WORK_DIR
set -u
SB="$1"; W="$2"
rm -rf "$W"; mkdir -p "$W"
fail() { echo "FAIL: $*"; exit 1; }
expect_rc() { want="$1"; shift; "$@" > "$W/out.txt" 2> "$W/err.txt"; rc=$?;
  [ "$rc" = "$want" ] || { cat "$W/out.txt" "$W/err.txt"; fail "expected exit $want, got $rc: $*"; }; }
names() { grep -q -- "$1" "$W/err.txt" || { cat "$W/err.txt"; fail "message does not name '$1' ($2)"; }; }

# Defect 2: 100,000 nested clamps crashed `predict -p file` (exit 139).
/usr/bin/python3 -c "
import sys
n = 100000
sys.stdout.write('{\"schema_version\": 1, \"type\": \"clamp\", \"member\": ' * n)
sys.stdout.write('{\"schema_version\": 1, \"type\": \"length_law\"}' + '}' * n)" > "$W/deep.json"
expect_rc 1 "$SB" predict -p "$W/deep.json" -L 4096
names "deeper" "nested predictor"

# Defect 6: -L INT64_MAX printed causal_blocks -144115188075855871 with exit 0.
expect_rc 0 "$SB" predict -L 9223372036854775807
grep -q '"causal_blocks":144115188075855872' "$W/out.txt" || { cat "$W/out.txt"; fail "predict -L INT64_MAX: wrong causal_blocks"; }
# synth with an extreme length writes only records its own validate accepts (or fails).
"$SB" synth -o "$W/big.jsonl" -n 5 --lengths 9223372036854775807 > "$W/out.txt" 2> "$W/err.txt"; rc=$?
if [ "$rc" = 0 ]; then
  expect_rc 0 "$SB" validate "$W/big.jsonl"
else
  [ "$rc" = 1 ] || fail "synth --lengths INT64_MAX: exit $rc"
fi

# Defect 8: a directory where a file is expected is an I/O error, not a parse error.
mkdir -p "$W/dir.json"
expect_rc 1 "$SB" predict -p "$W/dir.json" -L 4096
names "directory" "predictor path is a directory"
expect_rc 1 "$SB" predict --features "$W/dir.json"
names "directory" "features path is a directory"
expect_rc 1 "$SB" oracle --q "$W/dir.json" --k "$W/dir.json" --v "$W/dir.json"
names "directory" "oracle .npy path is a directory"

# Defect 9: negative feature values were dropped silently (-1 meant "not given" inside).
expect_rc 1 "$SB" predict -L 4096 --entropy -1
names "entropy" "negative --entropy"
expect_rc 1 "$SB" predict -L 4096 --top1-prob -0.5
names "top1_prob" "negative --top1-prob"
expect_rc 1 "$SB" predict -L 4096 --probe-blocks-90 -3
names "probe_blocks_90" "negative --probe-blocks-90"
expect_rc 0 "$SB" predict -L 4096 --entropy 0   # zero is a value, not "unknown"
# -L 0 / -5 said "give --length" although it was given.
expect_rc 1 "$SB" predict -L 0
names "context_length must be >= 1, got 0" "-L 0"
expect_rc 1 "$SB" predict -L -5
names "got -5" "-L -5"
expect_rc 2 "$SB" predict
# synth --block-size 0 exited 0 with records validate rejects.
expect_rc 1 "$SB" synth -o "$W/b0.jsonl" -n 3 --block-size 0
names "block_size" "synth --block-size 0"
expect_rc 1 "$SB" synth -o "$W/bneg.jsonl" -n 3 --block-size -64
names "block_size" "synth --block-size -64"
# evaluate accepted a surplus --name.
"$SB" synth -o "$W/t.jsonl" -n 5 > /dev/null 2>&1 || fail "synth failed"
expect_rc 2 "$SB" evaluate --traces "$W/t.jsonl" --predictor length_law --name a --name b
names "2 --name values for 1 --predictor" "surplus --name"
expect_rc 0 "$SB" evaluate --traces "$W/t.jsonl" --predictor length_law --name a
# Duplicate JSON keys were accepted (the last one won).
expect_rc 1 "$SB" predict -p '{"schema_version": 1, "type": "length_law", "a": 0.5, "a": 0.9}' -L 4096
names "duplicate key 'a'" "duplicate key in a predictor"
expect_rc 1 "$SB" predict --features '{"context_length": 100, "context_length": 200}'
names "duplicate key 'context_length'" "duplicate key in features"
echo "cli bad input ok"
