"""Smoke of `make demo`'s model stage (seconds): held-out requests from make_requests.py through
budget_demo at a calibrated budget, on one of the bundled models.

    /usr/bin/python3 examples/model/demo_smoke.py BUDGET_DEMO SPARSEBUDGET_CLI WORKDIR
        [--suite natural|synthetic] [--tasks single_qa,lookalike] [--length 1024]

Checks: budget_demo runs every request at dense and at the calibrated `fixed` budget (labelled and
label-free); per task, dense exact match equals the dense quality the model's test traces recorded
for the same request (index 0 of the trace_test split; at L = 1024 these are the requests whose
greedy tokens model_crosscheck compares at every grid budget), and the sparse rows read fewer
blocks than dense.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = {"natural": ("data/model_nl", "data/traces_nl"), "synthetic": ("data/model", "data/traces")}


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("budget_demo")
    ap.add_argument("cli")
    ap.add_argument("workdir")
    ap.add_argument("--suite", default="natural", choices=sorted(MODELS))
    ap.add_argument("--tasks", default="single_qa,lookalike,sentence_qa")
    ap.add_argument("--length", type=int, default=1024)
    a = ap.parse_args()
    model_dir, traces = MODELS[a.suite]
    os.makedirs(a.workdir, exist_ok=True)
    req = os.path.join(a.workdir, "requests.jsonl")
    pred = os.path.join(a.workdir, "fixed.json")
    out = os.path.join(a.workdir, "model_demo.json")
    run([sys.executable, os.path.join(HERE, "make_requests.py"), req, "--suite", a.suite, "--per-cell", "1",
         "--lengths", str(a.length), "--tasks", a.tasks])
    run([a.cli, "calibrate", "--traces", f"{traces}/train.jsonl", "--target-degraded", "0.05", "-p", "fixed",
         "-o", pred])
    run([a.budget_demo, "--model", model_dir, "--requests", req, "--predictor", f"fixed={pred}",
         "--predictor", f"fixed_label_free={pred}", "--label-free", "fixed_label_free", "--json", out])

    ids = {json.loads(line)["id"]: json.loads(line)["task"] for line in open(req)}
    dense_quality = {}
    with open(os.path.join(ROOT, traces, "test.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["id"] in ids:
                dense_quality[r["task"]] = r["dense_quality"]
    tasks = a.tasks.split(",")
    if sorted(dense_quality) != sorted(tasks):
        sys.exit(f"FAIL: test traces lack some requests: have {sorted(dense_quality)}, want {sorted(tasks)}")
    rows = {r["name"]: r for r in json.load(open(out))}
    fails = []
    if sorted(rows) != ["dense", "fixed", "fixed_label_free"]:
        fails.append(f"rows {sorted(rows)}")
    for t in tasks:
        got = rows["dense"]["accuracy_by_task"].get(t)
        print(f"{t}: dense exact match {got} (traces: {dense_quality[t]})")
        if got != dense_quality[t]:
            fails.append(f"{t}: dense exact match {got}, traces recorded {dense_quality[t]}")
    for name in ("fixed", "fixed_label_free"):
        frac = rows[name]["mean_budget_fraction"]
        print(f"{name}: mean budget fraction {frac:.3f}, accuracy {rows[name]['accuracy']:.3f}")
        if not 0 < frac < 1:
            fails.append(f"{name}: mean budget fraction {frac} not in (0, 1)")
    if rows["fixed_label_free"]["label_free"] is not True or rows["fixed"]["label_free"] is not False:
        fails.append("label_free flags wrong")
    if fails:
        sys.exit("FAIL: " + "; ".join(fails))
    print("ok")


if __name__ == "__main__":
    main()
