#!/usr/bin/env python3
"""Calibrate budget predictors on the bundled traces, evaluate them against fixed budgets, and
plot the frontier -- with the `sparsebudget` Python module only (no CLI).

    PYTHONPATH=build/python/module /usr/bin/python3 examples/python/calibrate_and_plot.py \
        --out-dir build/examples/python

1. `sb.calibrate(type, train, target_degraded=alpha)` fits each predictor type on the train traces
   and calibrates it to at most `alpha` degraded requests (conformal risk control on a held-out
   part, docs/predictors.md); one more table is calibrated to a mean-budget target instead.
2. Every calibrated predictor predicts a budget for every test request (`Predictor.predict` on
   the record's features). The module does not expose `Evaluate`, so the scoring is done here, in
   Python, with the rule of docs/traces.md: quality at b total blocks = dense quality if
   b >= causal blocks, else the quality of the largest curve point with blocks <= b (0 below the
   first point); degraded = quality < dense quality. The mean budget, degraded, mean quality and
   "saved vs best fixed fraction" figures equal `sparsebudget evaluate`'s on the same files.
3. The frontier: each predictor's calibration scale swept over 2^-4 .. 2^4, and fixed fractions
   (the `fixed` predictor) over a grid; x = mean budget fraction, y = degraded share and mean
   quality. Written as PNG (matplotlib, Agg) and JSON.

Exit code 0 on success; 1 if a calibrated predictor's test degraded share exceeds alpha by more
than --tolerance (a sanity check of the guarantee on exchangeable traffic).
"""
import argparse
import bisect
import json
import math
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sparsebudget as sb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Keys of a trace's "features" object that are RequestFeatures fields; any other key is "extra".
FIELDS = {"expected_output_length", "entropy", "top1_prob", "probe_blocks_50", "probe_blocks_90",
          "probe_blocks_99", "probe_entropy", "probe_top5_mass"}


def read_traces(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def features_json(rec):
    """The request's features in the JSON form the predictors take (features.hpp)."""
    f = {"context_length": rec["context_length"], "block_size": rec["block_size"], "task": rec["task"]}
    extra = {}
    for k, v in rec.get("features", {}).items():
        if k in FIELDS:
            f[k] = v
        elif v is not None:
            extra[k] = v
    if extra:
        f["extra"] = extra
    return json.dumps(f)


def causal_blocks(rec):
    return -(-rec["context_length"] // rec["block_size"])


def quality_at(rec, blocks):
    """docs/traces.md: conservative step interpolation of the quality-vs-budget curve."""
    if blocks >= causal_blocks(rec):
        return rec["dense_quality"]
    xs = rec["_blocks"]
    i = bisect.bisect_right(xs, blocks) - 1
    return 0.0 if i < 0 else rec["curve"][i]["quality"]


def score(recs, totals):
    """Mean budget fraction, degraded share, mean quality of one budget per request."""
    n = len(recs)
    frac = deg = qual = 0.0
    for rec, b in zip(recs, totals):
        cb = causal_blocks(rec)
        q = quality_at(rec, b)
        frac += min(b, cb) / cb
        qual += q
        deg += q < rec["dense_quality"]
    return {"mean_fraction": frac / n, "degraded_share": deg / n, "mean_quality": qual / n}


def predict_totals(pred, feats):
    return [pred.predict(f)["total_blocks"] for f in feats]


def scaled(pred, factor):
    doc = json.loads(pred.to_json())
    doc["scale"] = doc.get("scale", 1.0) * factor
    return sb.predictor_from_json(json.dumps(doc))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default=os.path.join(ROOT, "data/traces/train.jsonl"))
    ap.add_argument("--test", default=os.path.join(ROOT, "data/traces/test.jsonl"))
    ap.add_argument("--out-dir", default="calibrate_and_plot_out")
    ap.add_argument("--alpha", type=float, default=0.05, help="target degraded share")
    ap.add_argument("--mean-budget", type=float, default=0.15, help="mean-budget target of the extra table")
    ap.add_argument("--sweep", type=int, default=33, help="points of the scale sweep (2^-4 .. 2^4)")
    ap.add_argument("--dpi", type=int, default=110, help="resolution of the PNG")
    ap.add_argument("--tolerance", type=float, default=0.03, help="allowed excess of test degraded over alpha")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()

    test = read_traces(args.test)
    for rec in test:
        rec["_blocks"] = [p["blocks"] for p in rec["curve"]]
    feats = [features_json(r) for r in test]
    print(f"sparsebudget {sb.version()} (kernels {sb.isa_active()}); train {args.train}; "
          f"test {args.test} ({len(test)} requests)")

    # 1. Calibrate.
    runs = [("fixed", "fixed", {}), ("length_law", "length_law", {}),
            ("task_length_law", "task_length_law", {}), ("linear", "linear", {}), ("probe", "probe", {}),
            ("table", "table", {}),
            (f"table@mean{args.mean_budget:g}", "table", {"target_mean_fraction": args.mean_budget})]
    calibrated = []
    print(f"\n== calibrate on train (target: degraded <= {args.alpha:g}, or mean budget)")
    for name, typ, target in runs:
        kw = target or {"target_degraded": args.alpha}
        res = sb.calibrate(typ, args.train, **kw)
        pred = res["predictor"]
        pred.save(os.path.join(args.out_dir, name.replace("@", "_") + ".json"))
        print(f"{name:20s} {res['summary']}")
        calibrated.append((name, pred, res))

    # 2. Evaluate on test.
    rows = []
    for name, pred, res in calibrated:
        m = score(test, predict_totals(pred, feats))
        m.update(name=name, method=res["method"], holdout_degraded=res["holdout_degraded_share"])
        rows.append(m)
    oracle = score(test, [r["oracle"]["blocks"] for r in test])
    dense_q = sum(r["dense_quality"] for r in test) / len(test)

    # 3. Frontiers: the scale sweep of each predictor, fixed fractions.
    scales = [2.0 ** (-4 + 8 * k / (args.sweep - 1)) for k in range(args.sweep)]
    frontiers = {}
    for name, pred, _ in calibrated:
        if name.startswith("table@"):
            continue
        frontiers[name] = [dict(scale=s, **score(test, predict_totals(scaled(pred, s), feats))) for s in scales]
    fixed_grid = [2.0 ** (k / 32) / 256 for k in range(0, 257)]  # Evaluate's grid
    frontiers["fixed fraction grid"] = [
        dict(scale=f, **score(test, predict_totals(
            sb.predictor_from_json(json.dumps({"schema_version": 1, "type": "fixed", "fraction": f})), feats)))
        for f in fixed_grid]
    # Cheapest fixed fraction meeting the same degraded share as each predictor (savings column).
    for row in rows:
        ok = [p for p in frontiers["fixed fraction grid"] if p["degraded_share"] <= row["degraded_share"]]
        best = min(ok, key=lambda p: p["mean_fraction"]) if ok else None
        row["best_fixed_mean"] = best["mean_fraction"] if best else 1.0
        row["saved_vs_fixed"] = 1 - row["mean_fraction"] / row["best_fixed_mean"]

    print(f"\n== evaluate on test ({len(test)} requests, dense mean quality {dense_q:.3f})")
    print("| predictor | method | mean budget | degraded | mean quality | held-out degraded (train) "
          "| mean budget of the cheapest fixed fraction at <= degraded | saved vs it |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["mean_fraction"]):
        held = "n/a" if r["method"].endswith("+mean") else f"{100 * r['holdout_degraded']:.1f}%"
        print(f"| {r['name']} | {r['method']} | {r['mean_fraction']:.3f} | {100 * r['degraded_share']:.1f}% | "
              f"{r['mean_quality']:.3f} | {held} | {r['best_fixed_mean']:.3f} | "
              f"{100 * r['saved_vs_fixed']:.1f}% |")
    print(f"| oracle | labels | {oracle['mean_fraction']:.3f} | {100 * oracle['degraded_share']:.1f}% | "
          f"{oracle['mean_quality']:.3f} | | | |")

    # Plot.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, pts in frontiers.items():
        style = dict(color="black", linestyle="--", linewidth=1.5) if name.startswith("fixed fraction") else {}
        xs = [p["mean_fraction"] for p in pts]
        line, = ax1.plot(xs, [p["degraded_share"] for p in pts], label=name, **style)
        ax2.plot(xs, [p["mean_quality"] for p in pts], color=line.get_color(), label=name,
                 **{k: v for k, v in style.items() if k != "color"})
    for r in rows:
        ax1.plot(r["mean_fraction"], r["degraded_share"], "o", color="tab:red", markersize=5)
        ax1.annotate(r["name"], (r["mean_fraction"], r["degraded_share"]), fontsize=7,
                     xytext=(4, 4), textcoords="offset points")
        ax2.plot(r["mean_fraction"], r["mean_quality"], "o", color="tab:red", markersize=5)
    ax1.plot(oracle["mean_fraction"], oracle["degraded_share"], "*", color="gold", markersize=14,
             markeredgecolor="black", label="oracle")
    ax2.plot(oracle["mean_fraction"], oracle["mean_quality"], "*", color="gold", markersize=14,
             markeredgecolor="black", label="oracle")
    ax1.axhline(args.alpha, color="gray", linewidth=0.8, linestyle=":")
    ax1.set(xscale="log", xlabel="mean budget fraction (test)", ylabel="degraded share (test)",
            title=f"degraded vs budget; dots: calibrated to alpha={args.alpha:g}", ylim=(0, 0.6))
    ax2.axhline(dense_q, color="gray", linewidth=0.8, linestyle=":")
    ax2.set(xscale="log", xlabel="mean budget fraction (test)", ylabel="mean quality (test)",
            title="quality vs budget (scale sweep 2^-4..2^4)")
    ax1.grid(True, which="both", alpha=0.3)
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png = os.path.join(args.out_dir, "frontier.png")
    fig.savefig(png, dpi=args.dpi)
    with open(os.path.join(args.out_dir, "evaluation.json"), "w") as f:
        json.dump({"num_requests": len(test), "dense_mean_quality": dense_q, "alpha": args.alpha,
                   "predictors": rows, "oracle": oracle, "frontiers": frontiers}, f, indent=1)
    print(f"\nwrote {png}, {os.path.join(args.out_dir, 'evaluation.json')} and the predictor JSONs "
          f"({time.time() - t0:.1f} s)")

    bad = [r["name"] for r in rows if not r["name"].startswith("table@")
           and r["degraded_share"] > args.alpha + args.tolerance]
    if bad:
        print(f"FAILED: test degraded share above alpha + {args.tolerance:g}: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
