#!/usr/bin/python3
"""Plot the quality-vs-budget frontier from `sparsebudget evaluate --json OUT.json`.

usage: /usr/bin/python3 tools/plot_frontier.py OUT.json [-o frontier.png]

Draws, on mean budget fraction (x) against mean quality (y): each predictor's calibration sweep
(a line) with its calibrated point (a marker), the fixed-fraction and fixed-token-budget
references, the oracle point and the dense quality. A second panel shows degraded share.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("-o", "--output", default="frontier.png")
    a = ap.parse_args(argv)
    with open(a.report) as f:
        rep = json.load(f)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    for key, style, label in (("fixed_fraction_frontier", "k--", "fixed fraction"),
                              ("fixed_blocks_frontier", "k:", "fixed token budget")):
        pts = sorted(rep.get(key, []), key=lambda p: p["mean_budget_fraction"])
        xs = [p["mean_budget_fraction"] for p in pts]
        ax.plot(xs, [p["mean_quality"] for p in pts], style, lw=1, label=label)
        ax2.plot(xs, [p["degraded_share"] for p in pts], style, lw=1, label=label)
    for e in rep["predictors"]:
        pts = sorted(e.get("frontier", []), key=lambda p: p["mean_budget_fraction"])
        xs = [p["mean_budget_fraction"] for p in pts]
        line, = ax.plot(xs, [p["mean_quality"] for p in pts], lw=1.5,
                        label=f'{e["name"]} (AUC {e["auc"]:.3f})')
        ax2.plot(xs, [p["degraded_share"] for p in pts], lw=1.5, color=line.get_color(), label=e["name"])
        ax.plot([e["mean_budget_fraction"]], [e["mean_quality"]], "o", color=line.get_color())
        ax2.plot([e["mean_budget_fraction"]], [e["degraded_share"]], "o", color=line.get_color())
    o = rep["oracle"]
    ax.plot([o["mean_budget_fraction"]], [o["mean_quality"]], "r*", ms=14, label="oracle")
    ax2.plot([o["mean_budget_fraction"]], [o["degraded_share"]], "r*", ms=14, label="oracle")
    ax.axhline(rep["dense_mean_quality"], color="gray", lw=0.8, label="dense")
    ax.set_xlabel("mean budget (fraction of causal blocks)")
    ax.set_ylabel("mean quality")
    ax.set_xlim(0, 1)
    ax.set_title(f'quality vs budget ({rep["num_requests"]} requests)')
    ax.legend(fontsize=7)
    ax2.set_xlabel("mean budget (fraction of causal blocks)")
    ax2.set_ylabel("share of degraded requests")
    ax2.set_xlim(0, 1)
    ax2.set_ylim(0, None)
    ax2.set_title("degraded share vs budget")
    fig.tight_layout()
    fig.savefig(a.output, dpi=120)
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
