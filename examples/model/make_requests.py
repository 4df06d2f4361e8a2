"""Held-out demo requests: prompts and reference answers from the trace_test split of a model's
own task generator, the same prompts that model's test traces were made from.

    /usr/bin/python3 examples/model/make_requests.py OUT.jsonl [--suite natural|synthetic]
        [--per-cell N] [--lengths 1024,2048] [--tasks single_qa,lookalike]

--suite natural: the second model (data/model_nl, tools/train/tasks_nl.py, data/traces_nl);
--suite synthetic: the first (data/model, tools/train/tasks.py, data/traces). The suite names
are tools/train/make_traces.py's.
"""
import argparse
import importlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))

# suite -> task module under tools/train (the same map as make_traces.py's SUITES, which this
# script does not import: that would pull in torch and the Python bindings for a prompt list)
SUITES = {"synthetic": "tasks", "natural": "tasks_nl"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--suite", default="natural", choices=sorted(SUITES))
    ap.add_argument("--per-cell", type=int, default=6)
    ap.add_argument("--lengths", default="", help="comma-separated; default: the suite's lengths")
    ap.add_argument("--tasks", default="", help="comma-separated; default: the suite's tasks")
    a = ap.parse_args()
    T = importlib.import_module(SUITES[a.suite])
    lengths = [int(x) for x in a.lengths.split(",")] if a.lengths else list(T.LENGTHS)
    tasks = a.tasks.split(",") if a.tasks else list(T.TASKS)
    for t in tasks:
        if t not in T.TASKS:
            sys.exit(f"make_requests.py: task {t!r} is not in the {a.suite} suite ({', '.join(T.TASKS)})")
    if a.per_cell < 1:
        sys.exit(f"make_requests.py: --per-cell must be >= 1, got {a.per_cell}")
    with open(a.out, "w") as f:
        for L in lengths:
            for task in tasks:
                for i in range(a.per_cell):
                    ex = T.make_split_example("trace_test", task, L, i)
                    f.write(json.dumps({"id": f"trace_test-{task}-{L}-{i}", "task": task,
                                        "prompt": list(map(int, ex["prompt"])),
                                        "answer": list(map(int, ex["answer"]))}) + "\n")


if __name__ == "__main__":
    main()
