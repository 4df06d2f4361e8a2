"""Held-out demo requests: prompts and reference answers from the trace_test split of the task
generator (tools/train/tasks.py), the same prompts the test traces were made from.

    /usr/bin/python3 examples/model/make_requests.py OUT.jsonl [--per-cell N] [--lengths 1024,2048]
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import tasks as T  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--per-cell", type=int, default=6)
    ap.add_argument("--lengths", default="1024,2048,4096,8192")
    a = ap.parse_args()
    with open(a.out, "w") as f:
        for L in map(int, a.lengths.split(",")):
            for task in T.TASKS:
                for i in range(a.per_cell):
                    ex = T.make_split_example("trace_test", task, L, i)
                    f.write(json.dumps({"id": f"trace_test-{task}-{L}-{i}", "task": task,
                                        "prompt": list(map(int, ex["prompt"])),
                                        "answer": list(map(int, ex["answer"]))}) + "\n")


if __name__ == "__main__":
    main()
