"""Per-request traces of the bundled model (definitions in docs/model.md), recorded with the
library's recorder (sparsebudget.recorder); this file only adapts the model to the recorder's
protocol and lists the requests.

PYTHONPATH=build/python/module python3 tools/train/make_traces.py --weights data/model/model.safetensors \
    --config data/model/config.json --out-dir data/traces --n 100
PYTHONPATH=build/python/module python3 tools/train/make_traces.py --suite natural \
    --weights data/model_nl/model.safetensors --config data/model_nl/config.json --out-dir data/traces_nl --n 100

All computation in fp32 (TF32 disabled) with the shipped fp16 weights.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks as T  # noqa: E402
from model import load_model, rope_cos_sin  # noqa: E402

from sparsebudget import recorder as R  # noqa: E402

BLOCK = 64
GRID = list(R.DEFAULT_GRID)


def make_step(model):
    """The model as the recorder's step(tokens, positions, attend) -> last-position logits: the
    model's own layers (docs/model.md) with attention routed through `attend`."""
    cfg = model.cfg

    def step(tokens, positions, attend):
        N, Tn = tokens.shape
        cos, sin = rope_cos_sin(positions, cfg["head_dim"], cfg["rope_theta"], tokens.device)
        x = model.tok_emb(tokens)
        for li, layer in enumerate(model.layers):
            a = layer.attn
            h = layer.attn_norm(x)
            q = a.wq(h).view(N, Tn, a.H, a.D).transpose(1, 2)
            k = a.wk(h).view(N, Tn, a.Hkv, a.D).transpose(1, 2)
            v = a.wv(h).view(N, Tn, a.Hkv, a.D).transpose(1, 2)
            q = q * cos + torch.cat([-q[..., a.D // 2:], q[..., :a.D // 2]], -1) * sin
            k = k * cos + torch.cat([-k[..., a.D // 2:], k[..., :a.D // 2]], -1) * sin
            o = attend(li, q, k, v)
            x = x + a.wo(o.transpose(1, 2).reshape(N, Tn, a.H * a.D))
            x = x + layer.mlp(layer.mlp_norm(x))
        return model.logits(model.norm(x[:, -1]))

    return step


SUITES = {"synthetic": "tasks", "natural": "tasks_nl"}  # data/model + data/traces, data/model_nl + data/traces_nl


def suite_module(name):
    import importlib
    return importlib.import_module(SUITES[name])


def requests_for(split, task, L, n, first=0, TT=T):
    """The cell's requests: prompt and reference answer of TT.make_split_example (TT: the suite's
    task module), the task, and the answer length as an extra feature."""
    out = []
    for i in range(first, first + n):
        e = TT.make_split_example(split, task, L, i)
        out.append({"id": f"{split}-{task}-{L}-{i}", "task": task, "prompt": e["prompt"], "answer": e["answer"],
                    "features": {"answer_length": len(e["answer"])}})
    return out


def run_cell(step, split, task, L, n, tokens_per_chunk, out_path, device=None, crosscheck=None, progress=False,
             first=0, TT=T, selection_scope="per_kv_head"):
    """Appends the cell's records to out_path (ids already there are skipped); returns the cell's
    records as written. With `crosscheck` (a list), appends the first request's check entry."""
    reqs = requests_for(split, task, L, n, first, TT)
    cross = {}

    def hook(rec, details):
        if crosscheck is not None and rec["id"] == reqs[0]["id"]:
            lg = details["logits"].float().cpu()
            cross.update({"dense_logits_first16": [float(x) for x in lg[:16].numpy()],
                          "dense_argmax": int(lg.argmax().item()), "dense_entropy": rec["features"]["entropy"],
                          "features": rec["features"],
                          "greedy_outputs": {str(b): [int(x) for x in t] for b, t in details["outputs"].items()},
                          "curve": rec["curve"], "dense_quality": rec["dense_quality"], "oracle": rec["oracle"]})

    R.record_traces(step, reqs, out_path, grid=GRID, block_size=BLOCK, tokens_per_batch=tokens_per_chunk,
                    device=device, progress=progress, hook=hook, selection_scope=selection_scope)
    ids = {r["id"] for r in reqs}
    with open(out_path) as f:
        recs = [r for r in (json.loads(line) for line in f if line.strip()) if r["id"] in ids]
    if cross:
        e = reqs[0]
        crosscheck.append({"id": e["id"], "task": task, "context_length": L, "prompt": e["prompt"],
                           "reference_answer": e["answer"], **cross})
    return recs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="data/model/model.safetensors")
    ap.add_argument("--config", default="data/model/config.json")
    ap.add_argument("--out-dir", default="data/traces")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--suite", default="synthetic", choices=sorted(SUITES),
                    help="task suite: synthetic (data/model) or natural (data/model_nl, tasks_nl.py)")
    ap.add_argument("--lengths", default="", help="default: the suite's lengths")
    ap.add_argument("--tasks", default="", help="default: the suite's tasks")
    ap.add_argument("--splits", default="train,test")
    ap.add_argument("--tokens-per-chunk", type=int, default=65536)
    ap.add_argument("--resume", action="store_true", help="append to existing files, skipping recorded ids")
    ap.add_argument("--progress", action="store_true", help="progress bar on stderr")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--selection-scope", choices=["per_kv_head", "all_kv_heads"], default="per_kv_head",
                    help="all_kv_heads: one block list per query block for every kv head (attention.hpp)")
    a = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    cfgp = a.config if os.path.exists(a.config) else None
    model = load_model(a.weights, cfgp, dev)
    step = make_step(model)
    os.makedirs(a.out_dir, exist_ok=True)
    TT = suite_module(a.suite)
    lengths = [int(x) for x in (a.lengths or ",".join(map(str, TT.LENGTHS))).split(",")]
    tasks = (a.tasks or ",".join(TT.TASKS)).split(",")
    summary = {"n_per_cell": a.n, "selection_scope": a.selection_scope, "cells": {}, "seconds": {}}
    t_all = time.time()
    for split in a.splits.split(","):
        t0 = time.time()
        cross = [] if split == "test" else None
        path = os.path.join(a.out_dir, f"{split}.jsonl")
        if not a.resume and os.path.exists(path):
            os.remove(path)
        for task in tasks:
            for L in lengths:
                tc = time.time()
                recs = run_cell(step, "trace_" + split, task, L, a.n, a.tokens_per_chunk, path, dev,
                                crosscheck=cross if L == 1024 else None, progress=a.progress, TT=TT,
                                selection_scope=a.selection_scope)
                dq = np.mean([r["dense_quality"] for r in recs])
                of = np.median([r["oracle"]["fraction"] for r in recs])
                summary["cells"][f"{split}/{task}/{L}"] = {
                    "count": len(recs), "dense_quality": float(dq),
                    "median_oracle_fraction": float(of),
                    "median_oracle_blocks": float(np.median([r["oracle"]["blocks"] for r in recs]))}
                print(f"{split} {task} L={L} n={len(recs)} dense={dq:.3f} "
                      f"median_oracle_frac={of:.4f} ({time.time() - tc:.1f}s)", flush=True)
        summary["seconds"][split] = round(time.time() - t0, 1)
        if cross:
            with open(os.path.join(a.out_dir, "crosscheck.json"), "w") as f:
                json.dump({"note": "fp32 compute with fp16 weights; block-sparse rules in docs/model.md",
                           "requests": cross}, f)
    summary["seconds"]["total"] = round(time.time() - t_all, 1)
    with open(os.path.join(a.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary["seconds"]))


if __name__ == "__main__":
    main()
