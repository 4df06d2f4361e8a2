"""Per-cell oracle budgets of two trace sets of the same requests (paired by id), e.g. the same
model recorded with two selection scopes:

    /usr/bin/python3 tools/train/compare_oracles.py A/test.jsonl B/test.jsonl [--markdown]

Prints, per (task, context length): requests in both, median and mean oracle fraction in A / B,
and how many requests need more / fewer / the same blocks in B than in A; then the totals.
"""
import argparse
import collections
import json
import statistics


def load(path):
    with open(path) as f:
        return {r["id"]: r for r in (json.loads(line) for line in f if line.strip())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args(argv)
    a, b = load(args.a), load(args.b)
    cells = collections.defaultdict(list)
    for rid, r in a.items():
        if rid in b:
            cells[(r["task"], r["context_length"])].append((r["oracle"]["fraction"], b[rid]["oracle"]["fraction"]))
    print("| task | L | n | median oracle fraction A / B | mean A / B | B larger / smaller / equal |")
    print("|---|---:|---:|---:|---:|---:|")
    fa, fb = [], []
    more = fewer = same = 0
    for task, L in sorted(cells):
        pairs = cells[(task, L)]
        x = [p[0] for p in pairs]
        y = [p[1] for p in pairs]
        fa += x
        fb += y
        m = sum(q > p for p, q in pairs)
        f = sum(q < p for p, q in pairs)
        more, fewer, same = more + m, fewer + f, same + len(pairs) - m - f
        print(f"| {task} | {L} | {len(pairs)} | {statistics.median(x):.3f} / {statistics.median(y):.3f} | "
              f"{statistics.mean(x):.3f} / {statistics.mean(y):.3f} | {m} / {f} / {len(pairs) - m - f} |")
    if not fa:
        raise SystemExit("no request id is in both files")
    print(f"\n{len(fa)} requests: mean oracle fraction {statistics.mean(fa):.4f} (A) / {statistics.mean(fb):.4f} (B) "
          f"= {statistics.mean(fb) / statistics.mean(fa):.3f}x; B needs more blocks for {more}, fewer for {fewer}, "
          f"the same for {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
