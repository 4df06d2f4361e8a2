#!/bin/sh
# End to end: calibrate and evaluate on the bundled synthetic traces; exit codes 0/1/2.
# usage: cli_e2e.sh SPARSEBUDGET_BINARY SOURCE_DIR WORK_DIR
set -u
SB="$1"; SRC="$2"; W="$3"
TRAIN="$SRC/data/synthetic/train.jsonl"; TEST="$SRC/data/synthetic/test.jsonl"
rm -rf "$W"; mkdir -p "$W"
fail() { echo "FAIL: $*"; exit 1; }
expect_rc() { want="$1"; shift; "$@" > "$W/out.txt" 2> "$W/err.txt"; rc=$?;
  [ "$rc" = "$want" ] || { cat "$W/out.txt" "$W/err.txt"; fail "expected exit $want, got $rc: $*"; }; }

expect_rc 0 "$SB" info
grep -q "active ISA" "$W/out.txt" || fail "info prints no ISA"
expect_rc 0 "$SB" validate "$TRAIN" "$TEST"
expect_rc 0 "$SB" calibrate --traces "$TRAIN" --predictor table --target-degraded 0.05 -o "$W/table.json"
grep -q "mean_budget_fraction=" "$W/out.txt" || fail "calibrate prints no chosen value"
expect_rc 0 "$SB" calibrate --traces "$TRAIN" --predictor length_law --target-mean-budget 0.4 -o "$W/law.json"
expect_rc 0 "$SB" calibrate --traces "$TRAIN" --predictor "$W/law.json" --target-degraded 0.1 -o "$W/law2.json"
expect_rc 0 "$SB" evaluate --traces "$TEST" --predictor "$W/table.json" --predictor "$W/law.json" --fixed 0.25 --json "$W/eval.json"
grep -q "| table |" "$W/out.txt" || fail "evaluate table lacks the predictor row"
grep -q "| oracle |" "$W/out.txt" || fail "evaluate table lacks the oracle row"
for k in '"name"' '"mean_budget_fraction"' '"degraded_share"' '"mean_quality"' '"oracle_mean_budget_fraction"' '"frontier"'; do
  grep -q "$k" "$W/eval.json" || fail "eval JSON lacks $k"
done
expect_rc 0 "$SB" predict --predictor "$W/table.json" --length 4096 --task multi_qa
grep -q '"total_blocks"' "$W/out.txt" || fail "predict prints no budget"
expect_rc 0 "$SB" predict --predictor length_law --features '{"context_length": 8192, "task": "single_qa"}'
expect_rc 0 "$SB" synth -o "$W/s.jsonl" -n 20 --seed 3
# Bad input -> 1 with the line named.
head -n 3 "$TEST" > "$W/bad.jsonl"; echo '{"id": "x", "task": "t"}' >> "$W/bad.jsonl"
expect_rc 1 "$SB" validate "$W/bad.jsonl"
grep -q "line 4" "$W/err.txt" || fail "bad trace error does not name line 4"
echo '{"schema_version": 1, "type": "fixed", "fraction": 0.2, "bogus": 1}' > "$W/badp.json"
expect_rc 1 "$SB" evaluate --traces "$TEST" --predictor "$W/badp.json"
grep -q "bogus" "$W/err.txt" || fail "bad predictor error does not name the key"
expect_rc 1 "$SB" calibrate --traces "$W/missing.jsonl" --predictor table --target-degraded 0.05 -o "$W/x.json"
# Usage -> 2.
expect_rc 2 "$SB" calibrate --traces "$TRAIN" --predictor table -o "$W/x.json"
expect_rc 2 "$SB" evaluate --nonsense
expect_rc 2 "$SB"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 "$SRC/tools/plot_frontier.py" "$W/eval.json" -o "$W/frontier.png" > /dev/null || fail "plot script failed"
  [ -s "$W/frontier.png" ] || fail "no PNG written"
fi
echo "cli e2e ok"
