#!/usr/bin/env bash
# `make demo`: the main job on the bundled data of one of the two bundled models.
#  0. regress the traces' oracle budget on each signal (which signal carries it?);
#  1. calibrate each predictor on the model's train traces (target: at most 5% of requests
#     degraded vs dense), and the best fixed budget at the same target;
#  2. evaluate them on the test traces: table, JSON and the frontier plot;
#  3. run held-out requests (the model's own task generator, trace_test split) through the C++
#     model runner, each at its predicted budget, with real block-sparse attention: accuracy,
#     mean budget, attention time, degraded share.
#
# Model: `make demo` runs model B (data/model_nl: GQA, natural text, 1K-16K; docs/model_nl.md);
# `make demo DEMO_MODEL=a` the first model (data/model: 4 synthetic tasks, 512-8K; docs/model.md).
# The Makefile passes DEMO_MODEL on as SPARSEBUDGET_DEMO_MODEL, which this script reads.
# Other knobs (environment): SPARSEBUDGET_DEMO_ALPHA (0.05), SPARSEBUDGET_DEMO_PER_CELL and
# SPARSEBUDGET_DEMO_LENGTHS (the held-out requests of stage 3; defaults below, chosen so that the
# whole demo takes a few minutes on 2 cores: docs/guide/quick-start.md has the measured times).
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODEL=${SPARSEBUDGET_DEMO_MODEL:-b}
case "$MODEL" in
  b | B)
    MODEL=b MODEL_DIR=data/model_nl TRACES=data/traces_nl SUITE=natural
    # Stage 3 on 2 cores shared with other jobs: 4-7 s per 1K request and 7-10 s per 2K one
    # (dense prefill, then the answer at each of 9 budgets); 3 per cell (42 requests) took 253-327
    # s of a 276-357 s demo, 2 per cell (28) 219 s of 253 s. Longer cells would not fit.
    PER_CELL=${SPARSEBUDGET_DEMO_PER_CELL:-2}
    LENGTHS=${SPARSEBUDGET_DEMO_LENGTHS:-1024,2048} ;;
  a | A)
    MODEL=a MODEL_DIR=data/model TRACES=data/traces SUITE=synthetic
    PER_CELL=${SPARSEBUDGET_DEMO_PER_CELL:-4}
    LENGTHS=${SPARSEBUDGET_DEMO_LENGTHS:-1024,2048,4096,8192} ;;
  *)
    echo "demo.sh: unknown model '$MODEL' (DEMO_MODEL / SPARSEBUDGET_DEMO_MODEL: a = data/model, b = data/model_nl)" >&2
    exit 2 ;;
esac
OUT=$BUILD/demo
mkdir -p "$OUT"
SB=$BUILD/tools/cli/sparsebudget
TRAIN=$TRACES/train.jsonl
TEST=$TRACES/test.jsonl
ALPHA=${SPARSEBUDGET_DEMO_ALPHA:-0.05}
stage_start=$SECONDS
took() { echo "   ($(( SECONDS - stage_start )) s)"; stage_start=$SECONDS; }

echo "== model $MODEL: $MODEL_DIR, traces $TRACES (make demo DEMO_MODEL=a|b picks the model)"
echo "== traces"
"$SB" validate "$TRAIN"
"$SB" validate "$TEST"

echo "== which signal carries the oracle budget? (regressions on the traces)"
/usr/bin/python3 tools/analyze_signals.py "$TRAIN" "$TEST" --json "$OUT/signals.json"
took

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
# The self-check under sparsity, when the traces recorded it (curve points with top1_prob; both
# bundled trace sets do).
if /usr/bin/python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); sys.exit(0 if any(p.get("top1_prob") is not None for p in r["curve"]) else 1)' "$TRAIN"; then
  cal auto_escalation -p auto --escalation
  NAMES+=(auto_escalation)
fi
took
echo "== evaluate on $TEST"
args=()
for n in "${NAMES[@]}"; do args+=(-p "$OUT/$n.json" --name "$n"); done
"$SB" evaluate --traces "$TEST" "${args[@]}" --json "$OUT/evaluate.json"
/usr/bin/python3 tools/plot_frontier.py "$OUT/evaluate.json" -o "$OUT/frontier.png"
echo "frontier plot: $OUT/frontier.png"
took

echo "== held-out requests through model $MODEL (C++ runner, sparse attention at the predicted budget)"
/usr/bin/python3 examples/model/make_requests.py "$OUT/requests.jsonl" --suite "$SUITE" \
  --per-cell "$PER_CELL" --lengths "$LENGTHS"
echo "requests: $(wc -l < "$OUT/requests.jsonl") = $PER_CELL per task x length, lengths $LENGTHS," \
  "trace_test split of the $SUITE task generator (SPARSEBUDGET_DEMO_PER_CELL / SPARSEBUDGET_DEMO_LENGTHS)"
pargs=()
for n in "${NAMES[@]}"; do pargs+=(--predictor "$n=$OUT/$n.json"); done
# The same auto predictor without the task label (engines rarely know it): its label-free tier,
# calibrated on the traces with the labels removed, serves every request.
cp "$OUT/auto.json" "$OUT/auto_label_free.json"
pargs+=(--predictor "auto_label_free=$OUT/auto_label_free.json" --label-free auto_label_free)
"$BUILD/examples/model/budget_demo" --model "$MODEL_DIR" --requests "$OUT/requests.jsonl" "${pargs[@]}" \
  --json "$OUT/model_demo.json"
took
echo "demo done in ${SECONDS} s (model $MODEL; results in $OUT/)"
