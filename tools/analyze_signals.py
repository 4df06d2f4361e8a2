"""Which signal predicts the optimal budget? Regressions of the oracle budget on each signal.

Fits ordinary least squares of log(oracle blocks) on feature sets using TRAIN traces and
reports R^2 on TEST traces, plus per-length-bucket Spearman correlations of single features
with the oracle (so the length effect does not masquerade as a signal). numpy only.

    /usr/bin/python3 tools/analyze_signals.py data/traces/train.jsonl data/traces/test.jsonl [--json OUT]
"""
import argparse
import json
import math

import numpy as np

# Task classes, in order of first appearance in the train then test traces (set in main): the
# first model has 4 tasks, the second 7; a fixed list would lump unlisted tasks with the first.
TASKS = []


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def columns(rows):
    L = np.array([r["context_length"] for r in rows], float)
    f = lambda k: np.array([r["features"].get(k) if r["features"].get(k) is not None else np.nan for r in rows], float)
    task = np.array([TASKS.index(r["task"]) if r["task"] in TASKS else -1 for r in rows])
    y = np.log(np.array([r["oracle"]["blocks"] for r in rows], float))
    ok = np.array([r["dense_quality"] > 0 for r in rows])
    return dict(logL=np.log(L), L=L, task=task, entropy=f("entropy"), top1=f("top1_prob"),
                pb50=f("probe_blocks_50"), pb90=f("probe_blocks_90"), pb99=f("probe_blocks_99"),
                pent=f("probe_entropy"), ptop5=f("probe_top5_mass"), y=y, ok=ok)


def design(c, terms):
    cols = [np.ones_like(c["logL"])]
    for t in terms:
        if t == "logL":
            cols.append(c["logL"])
        elif t == "task":
            for k in range(1, len(TASKS)):
                cols.append((c["task"] == k).astype(float))
        elif t == "task*logL":
            for k in range(1, len(TASKS)):
                cols.append((c["task"] == k) * c["logL"])
        elif t.startswith("log:"):
            cols.append(np.log(np.maximum(c[t[4:]], 1e-6)))
        else:
            cols.append(c[t])
    return np.stack(cols, 1)


def r2(y, yhat):
    return 1.0 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2)


def spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


SETS = [
    ("length", ["logL"]),
    ("task", ["task"]),
    ("length + task", ["logL", "task", "task*logL"]),
    ("length + uncertainty", ["logL", "log:entropy", "top1"]),
    ("length + task + uncertainty", ["logL", "task", "task*logL", "log:entropy", "top1"]),
    ("length + probe", ["logL", "log:pb90", "log:pb99", "pent", "ptop5"]),
    ("length + task + probe", ["logL", "task", "task*logL", "log:pb90", "log:pb99", "pent", "ptop5"]),
    ("all", ["logL", "task", "task*logL", "log:entropy", "top1", "log:pb90", "log:pb99", "pent", "ptop5"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows_tr, rows_te = load(a.train), load(a.test)
    TASKS[:] = list(dict.fromkeys(r["task"] for r in rows_tr + rows_te))
    tr, te = columns(rows_tr), columns(rows_te)
    out = {"r2": {}, "spearman_within_length": {}}
    print("R^2 of log(oracle blocks) on test traces, OLS fitted on train traces "
          f"({int(tr['ok'].sum())} / {int(te['ok'].sum())} requests with dense quality > 0):\n")
    print("| signals | R^2 (test) |\n|---|---:|")
    for name, terms in SETS:
        X, Xt = design(tr, terms), design(te, terms)
        m, mt = tr["ok"] & np.all(np.isfinite(X), 1), te["ok"] & np.all(np.isfinite(Xt), 1)
        beta, *_ = np.linalg.lstsq(X[m], tr["y"][m], rcond=None)
        v = r2(te["y"][mt], Xt[mt] @ beta)
        out["r2"][name] = v
        print(f"| {name} | {v:.3f} |")
    print("\nSpearman correlation with the oracle fraction inside each length (test traces):\n")
    feats = [("entropy", "entropy"), ("top1_prob", "top1"), ("probe_blocks_90", "pb90"),
             ("probe_entropy", "pent"), ("probe_top5_mass", "ptop5")]
    lengths = sorted(set(te["L"].astype(int)))
    print("| feature | " + " | ".join(str(L) for L in lengths) + " |")
    print("|---|" + "---:|" * len(lengths))
    frac = np.exp(te["y"]) / np.ceil(te["L"] / 64.0)
    for label, key in feats:
        vals = []
        for L in lengths:
            m = (te["L"].astype(int) == L) & te["ok"] & np.isfinite(te[key])
            vals.append(spearman(te[key][m], frac[m]) if m.sum() > 3 else float("nan"))
        out["spearman_within_length"][label] = dict(zip(map(str, lengths), vals))
        print(f"| {label} | " + " | ".join(f"{v:+.2f}" for v in vals) + " |")
    print("\nMedian oracle fraction by task and length (test traces):\n")
    print("| task | " + " | ".join(str(L) for L in lengths) + " |")
    print("|---|" + "---:|" * len(lengths))
    out["median_oracle_fraction"] = {}
    for k, t in enumerate(TASKS):
        vals = [float(np.median(frac[(te["task"] == k) & (te["L"].astype(int) == L)])) for L in lengths]
        out["median_oracle_fraction"][t] = dict(zip(map(str, lengths), vals))
        print(f"| {t} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    # Length law fitted on all train requests: budget_tokens = c * L^a.
    X = np.stack([np.ones_like(tr["logL"]), tr["logL"]], 1)
    m = tr["ok"]
    beta, *_ = np.linalg.lstsq(X[m], tr["y"][m] + math.log(64.0), rcond=None)
    out["length_law_tokens"] = {"c": float(math.exp(beta[0])), "a": float(beta[1])}
    print(f"\nOLS length law on train (oracle tokens = c * L^a): c = {math.exp(beta[0]):.2f}, a = {beta[1]:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
