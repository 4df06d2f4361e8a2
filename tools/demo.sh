#!/usr/bin/env bash
# `make demo`: the main job on the bundled data.
#  0. regress the traces' oracle budget on each signal (which signal carries it?);
#  1. calibrate each predictor on the bundled train traces of the small model (target: at most
#     5% of requests degraded vs dense), and the best fixed budget at the same target;
#  2. evaluate them on the test traces: table, JSON and the frontier plot;
#  3. run held-out requests through the C++ model runner, each at its predicted budget, with
#     real block-sparse attention: accuracy, mean budget, attention time, degraded share.
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$BUILD/demo
mkdir -p "$OUT"
SB=$BUILD/tools/cli/sparsebudget
TRAIN=data/traces/train.jsonl
TEST=data/traces/test.jsonl
ALPHA=${SPARSEBUDGET_DEMO_ALPHA:-0.05}

echo "== traces"
"$SB" validate "$TRAIN"
"$SB" validate "$TEST"

echo "== which signal carries the oracle budget? (regressions on the traces)"
/usr/bin/python3 tools/analyze_signals.py "$TRAIN" "$TEST" --json "$OUT/signals.json"

echo "== calibrate on $TRAIN (target: degraded share <= $ALPHA)"
cal() { local name=$1; shift; "$SB" calibrate --traces "$TRAIN" --target-degraded "$ALPHA" -o "$OUT/$name.json" "$@"; }
# Every type goes through the cells calibration; auto chooses the signal itself and prints why.
cal fixed -p fixed
cal length -p length_law
cal length_task -p task_length_law
cal probe -p probe
cal linear_all -p linear
cal auto -p auto
NAMES=(fixed length length_task probe linear_all auto)
# The self-check under sparsity, when the traces recorded it (curve points with top1_prob).
if /usr/bin/python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); sys.exit(0 if any(p.get("top1_prob") is not None for p in r["curve"]) else 1)' "$TRAIN"; then
  cal auto_escalation -p auto --escalation
  NAMES+=(auto_escalation)
fi
echo "== evaluate on $TEST"
args=()
for n in "${NAMES[@]}"; do args+=(-p "$OUT/$n.json" --name "$n"); done
"$SB" evaluate --traces "$TEST" "${args[@]}" --json "$OUT/evaluate.json"
/usr/bin/python3 tools/plot_frontier.py "$OUT/evaluate.json" -o "$OUT/frontier.png"
echo "frontier plot: $OUT/frontier.png"

echo "== held-out requests through the model (C++ runner, sparse attention at the predicted budget)"
/usr/bin/python3 examples/model/make_requests.py "$OUT/requests.jsonl" --per-cell "${SPARSEBUDGET_DEMO_PER_CELL:-4}"
pargs=()
for n in "${NAMES[@]}"; do pargs+=(--predictor "$n=$OUT/$n.json"); done
# The same auto predictor without the task label (engines rarely know it).
cp "$OUT/auto.json" "$OUT/auto_label_free.json"
pargs+=(--predictor "auto_label_free=$OUT/auto_label_free.json" --label-free auto_label_free)
"$BUILD/examples/model/budget_demo" --model data/model --requests "$OUT/requests.jsonl" "${pargs[@]}" \
  --json "$OUT/model_demo.json"
