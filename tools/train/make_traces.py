"""Per-request traces with a block-sparse attention simulation (definitions in docs/model.md).

python3 tools/train/make_traces.py --weights data/model/model.safetensors \
    --config data/model/config.json --out-dir data/traces --n 100

All computation in fp32 (TF32 disabled) with the shipped fp16 weights.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks as T  # noqa: E402
from model import load_model, rope_cos_sin, attention  # noqa: E402

BLOCK = 64
GRID = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
DENSE_K = 1 << 30


def grid_for(L):
    nb0 = (L - 1) // BLOCK + 1
    return [b for b in GRID if b < nb0] + [nb0], nb0


def _qkv(layer, x, pos, cfg):
    a = layer.attn
    B, Tn, _ = x.shape
    h = layer.attn_norm(x)
    q = a.wq(h).view(B, Tn, a.H, a.D).transpose(1, 2)
    k = a.wk(h).view(B, Tn, a.Hkv, a.D).transpose(1, 2)
    v = a.wv(h).view(B, Tn, a.Hkv, a.D).transpose(1, 2)
    cos, sin = rope_cos_sin(pos, cfg["head_dim"], cfg["rope_theta"], x.device)
    q = q * cos + torch.cat([-q[..., a.D // 2:], q[..., :a.D // 2]], -1) * sin
    k = k * cos + torch.cat([-k[..., a.D // 2:], k[..., :a.D // 2]], -1) * sin
    return q, k, v


@torch.no_grad()
def dense_forward(model, prompts):
    """prompts [P, L]. Returns last-position logits [P,V], keys/values per layer [P,Hkv,L,D]
    (post-RoPE), last-position queries per layer [P,H,D]."""
    cfg = model.cfg
    P, L = prompts.shape
    pos = torch.arange(L, device=prompts.device)
    x = model.tok_emb(prompts)
    Ks, Vs, Qs = [], [], []
    for layer in model.layers:
        q, k, v = _qkv(layer, x, pos, cfg)
        o = attention(q, k, v, causal=True)
        x = x + layer.attn.wo(o.transpose(1, 2).reshape(P, L, -1))
        x = x + layer.mlp(layer.mlp_norm(x))
        Ks.append(k)
        Vs.append(v)
        Qs.append(q[:, :, -1])
    h = model.norm(x[:, -1])
    return model.logits(h), Ks, Vs, Qs


@torch.no_grad()
def probe_stats(Ks, Qs, L, cfg):
    """MEAN-scoring block masses at the last prompt token, averaged over layers and kv heads."""
    H, Hkv, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    g = H // Hkv
    nb = (L - 1) // BLOCK + 1
    acc = {k: [] for k in ["probe_blocks_50", "probe_blocks_90", "probe_blocks_99", "probe_entropy",
                           "probe_top5_mass"]}
    ntop = math.ceil(0.05 * nb)
    for K, Q in zip(Ks, Qs):
        P = K.shape[0]
        Kp = F.pad(K, (0, 0, 0, nb * BLOCK - L))  # [P,Hkv,nb*64,D]
        cnt = torch.full((nb,), float(BLOCK), device=K.device)
        cnt[-1] = L - (nb - 1) * BLOCK
        mean = Kp.view(P, Hkv, nb, BLOCK, D).sum(3) / cnt[None, None, :, None]
        qs = Q.view(P, Hkv, g, D).sum(2)  # sum over the group's query heads
        s = torch.einsum("phd,phjd->phj", qs, mean) * (1.0 / math.sqrt(D)) / g
        p = torch.softmax(s, dim=-1)  # [P,Hkv,nb]
        order = torch.sort(p, dim=-1, descending=True, stable=True)
        cs = order.values.cumsum(-1)
        for X in (50, 90, 99):
            need = (cs < X / 100.0).sum(-1) + 1  # fewest blocks with cumulative mass >= X/100
            acc[f"probe_blocks_{X}"].append(need.clamp(max=nb).float())
        acc["probe_entropy"].append(-(p * torch.log(p.clamp_min(1e-38))).sum(-1))
        acc["probe_top5_mass"].append(order.values[..., :ntop].sum(-1))
    return {k: torch.stack(v, 0).mean(dim=(0, 2)).cpu().numpy() for k, v in acc.items()}


@torch.no_grad()
def sparse_decode(model, Ks, Vs, last_tok, kvec, n_steps, L):
    """Block-sparse greedy decoding.
    Ks/Vs: per layer [P,Hkv,L-1,D] dense-prefill caches of prompt[:-1].
    last_tok [P]; kvec: list of k (number of selected non-sink non-local blocks) per grid point.
    Returns tokens [P, G, n_steps]."""
    cfg = model.cfg
    dev = last_tok.device
    H, Hkv, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    g = H // Hkv
    P = last_tok.shape[0]
    G = len(kvec)
    S = P * G
    Tmax = L - 1 + n_steps
    kst = torch.tensor(kvec, device=dev).repeat(P)  # stream s = p*G + gi
    Kb, Vb = [], []
    for K, V in zip(Ks, Vs):
        kb = torch.empty(S, Hkv, Tmax, D, device=dev)
        vb = torch.empty(S, Hkv, Tmax, D, device=dev)
        kb[:, :, :L - 1] = K.repeat_interleave(G, 0)
        vb[:, :, :L - 1] = V.repeat_interleave(G, 0)
        Kb.append(kb)
        Vb.append(vb)
    tok = last_tok.repeat_interleave(G, 0)
    outs = []
    scale = 1.0 / math.sqrt(D)
    for step in range(n_steps):
        t = L - 1 + step
        x = model.tok_emb(tok)[:, None]  # [S,1,d]
        pos = torch.tensor([t], device=dev)
        nb = t // BLOCK + 1
        for li, layer in enumerate(model.layers):
            q, k, v = _qkv(layer, x, pos, cfg)  # q [S,H,1,D]
            Kb[li][:, :, t] = k[:, :, 0]
            Vb[li][:, :, t] = v[:, :, 0]
            K = Kb[li][:, :, :t + 1]
            V = Vb[li][:, :, :t + 1]
            keep = torch.zeros(S, Hkv, nb, dtype=torch.bool, device=dev)
            keep[..., 0] = True
            keep[..., nb - 1] = True
            if nb > 2:
                Kc = K[:, :, BLOCK:BLOCK * (nb - 1)].unflatten(2, (nb - 2, BLOCK))
                kmin = Kc.amin(3)
                kmax = Kc.amax(3)  # [S,Hkv,nb-2,D]
                qg = q[:, :, 0].view(S, Hkv, g, 1, D)
                sc = torch.maximum(qg * kmin[:, :, None], qg * kmax[:, :, None]).sum(-1).sum(2)
                order = torch.sort(sc, dim=-1, descending=True, stable=True).indices
                rank = torch.empty_like(order)
                rank.scatter_(-1, order, torch.arange(nb - 2, device=dev).expand_as(order))
                keep[..., 1:nb - 1] = rank < kst[:, None, None]
            tmask = keep.repeat_interleave(BLOCK, -1)[..., :t + 1]  # [S,Hkv,t+1]
            qh = q[:, :, 0].view(S, Hkv, g, D)
            s = torch.einsum("shgd,shtd->shgt", qh, K) * scale
            s = s.masked_fill(~tmask[:, :, None], float("-inf"))
            p = torch.softmax(s, dim=-1)
            o = torch.einsum("shgt,shtd->shgd", p, V).reshape(S, 1, H * D)
            x = x + layer.attn.wo(o)
            x = x + layer.mlp(layer.mlp_norm(x))
        logits = model.logits(model.norm(x[:, 0]))
        tok = logits.argmax(-1)
        outs.append(tok)
    return torch.stack(outs, 1).view(P, G, n_steps)


def run_cell(model, split, task, L, n, chunk, dev, crosscheck=None):
    grid, nb0 = grid_for(L)
    kvec = [b - 2 for b in grid[:-1]] + [DENSE_K]
    exs = [T.make_split_example(split, task, L, i) for i in range(n)]
    recs = []
    for c0 in range(0, n, chunk):
        part = exs[c0:c0 + chunk]
        pr = torch.tensor([e["prompt"] for e in part], device=dev)
        logits, Ks, Vs, Qs = dense_forward(model, pr)
        probe = probe_stats(Ks, Qs, L, model.cfg)
        lp = torch.log_softmax(logits.float(), -1)
        ent = (-(lp.exp() * lp).sum(-1)).cpu().numpy()
        top1 = lp.exp().max(-1).values.cpu().numpy()
        nmax = max(len(e["answer"]) for e in part)
        toks = sparse_decode(model, [k[:, :, :L - 1] for k in Ks], [v[:, :, :L - 1] for v in Vs],
                             pr[:, -1], kvec, nmax, L).cpu().numpy()
        del Ks, Vs
        for i, e in enumerate(part):
            A = len(e["answer"])
            qual = [float(list(toks[i, gi, :A]) == e["answer"]) for gi in range(len(grid))]
            curve = [{"blocks": b, "fraction": round(b / nb0, 6), "quality": qv}
                     for b, qv in zip(grid, qual)]
            dq = qual[-1]
            oracle_b = grid[-1]
            for gi in range(len(grid) - 1, -1, -1):
                if all(qv >= dq for qv in qual[gi:]):
                    oracle_b = grid[gi]
                else:
                    break
            idx = c0 + i
            rec = {"id": f"{split}-{task}-{L}-{idx}", "task": task, "context_length": len(e["prompt"]),
                   "block_size": BLOCK,
                   "features": {"entropy": round(float(ent[i]), 6), "top1_prob": round(float(top1[i]), 6),
                                **{k: round(float(v[i]), 6) for k, v in probe.items()},
                                "answer_length": A},
                   "curve": curve, "dense_quality": dq,
                   "oracle": {"blocks": oracle_b, "fraction": round(oracle_b / nb0, 6),
                              "criterion": "exact_match"}}
            recs.append(rec)
            if crosscheck is not None and idx == 0:
                crosscheck.append({
                    "id": rec["id"], "task": task, "context_length": L, "prompt": e["prompt"],
                    "reference_answer": e["answer"],
                    "dense_logits_first16": [float(x) for x in logits[i, :16].cpu().numpy()],
                    "dense_argmax": int(logits[i].argmax().item()),
                    "dense_entropy": rec["features"]["entropy"],
                    "features": rec["features"],
                    "greedy_outputs": {str(b): [int(x) for x in toks[i, gi, :A]]
                                       for gi, b in enumerate(grid)},
                    "curve": curve, "dense_quality": dq, "oracle": rec["oracle"]})
    return recs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="data/model/model.safetensors")
    ap.add_argument("--config", default="data/model/config.json")
    ap.add_argument("--out-dir", default="data/traces")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--lengths", default="512,1024,2048,4096,8192")
    ap.add_argument("--tasks", default=",".join(T.TASKS))
    ap.add_argument("--splits", default="train,test")
    ap.add_argument("--tokens-per-chunk", type=int, default=65536)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    cfgp = a.config if os.path.exists(a.config) else None
    model = load_model(a.weights, cfgp, dev)
    os.makedirs(a.out_dir, exist_ok=True)
    lengths = [int(x) for x in a.lengths.split(",")]
    tasks = a.tasks.split(",")
    summary = {"n_per_cell": a.n, "cells": {}, "seconds": {}}
    t_all = time.time()
    for split in a.splits.split(","):
        t0 = time.time()
        cross = [] if split == "test" else None
        path = os.path.join(a.out_dir, f"{split}.jsonl")
        with open(path, "w") as f:
            for task in tasks:
                for L in lengths:
                    tc = time.time()
                    chunk = max(1, a.tokens_per_chunk // L)
                    recs = run_cell(model, "trace_" + split, task, L, a.n, chunk, dev,
                                    crosscheck=cross if L == 1024 else None)
                    for r in recs:
                        f.write(json.dumps(r, separators=(",", ":")) + "\n")
                    dq = np.mean([r["dense_quality"] for r in recs])
                    of = np.median([r["oracle"]["fraction"] for r in recs])
                    summary["cells"][f"{split}/{task}/{L}"] = {
                        "count": len(recs), "dense_quality": float(dq),
                        "median_oracle_fraction": float(of),
                        "median_oracle_blocks": float(np.median([r["oracle"]["blocks"] for r in recs]))}
                    print(f"{split} {task} L={L} n={len(recs)} dense={dq:.3f} "
                          f"median_oracle_frac={of:.4f} ({time.time() - tc:.1f}s)", flush=True)
        summary["seconds"][split] = round(time.time() - t0, 1)
        if cross is not None:
            with open(os.path.join(a.out_dir, "crosscheck.json"), "w") as f:
                json.dump({"note": "fp32 compute with fp16 weights; block-sparse rules in docs/model.md",
                           "requests": cross}, f)
    summary["seconds"]["total"] = round(time.time() - t_all, 1)
    with open(os.path.join(a.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary["seconds"]))


if __name__ == "__main__":
    main()
