"""Budget traces for your own PyTorch decoder: a minimal Llama-style model written here (not the
bundled one), recorded with sparsebudget.recorder, then validated, calibrated and evaluated with
the `sparsebudget` CLI (docs/guide/your-model.md walks through the same steps).

    PYTHONPATH=build/python/module /usr/bin/python3 examples/python/own_decoder.py \
        --cli build/tools/cli/sparsebudget --out-dir out/own_decoder

The model (random weights, seed 0): token embedding, 2 pre-norm blocks of GQA attention (4 query
heads sharing 2 kv heads, head_dim 16, interleaved-pair RoPE as in Meta's Llama) and a SwiGLU MLP,
a final RMSNorm and an untied LM head. Prompts are filler with a few content tokens; quality of a
budget = share of the dense greedy answer's tokens it reproduces (a quality function; the
reference answer is the model's own dense greedy continuation, produced by its own KV-cache
generate(), which never touches the recorder).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsebudget import recorder


# ------------------------------------------------------------------------------------ the model
class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, positions, theta=10000.0):
    """Interleaved pairs (x[2i], x[2i+1]) rotated by positions * theta^(-2i/d); x [B, H, T, d]."""
    d = x.shape[-1]
    freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    ang = positions.float()[:, None] * freq[None]  # [T, d/2]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class SelfAttention(nn.Module):
    def __init__(self, d, n_heads, n_kv_heads):
        super().__init__()
        self.h, self.hkv, self.hd = n_heads, n_kv_heads, d // n_heads
        self.q_proj = nn.Linear(d, n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(d, n_kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(d, n_kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(n_heads * self.hd, d, bias=False)

    def forward(self, x, positions, layer, attend=None, cache=None):
        B, T, _ = x.shape
        q = rope(self.q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2), positions)
        k = rope(self.k_proj(x).view(B, T, self.hkv, self.hd).transpose(1, 2), positions)
        v = self.v_proj(x).view(B, T, self.hkv, self.hd).transpose(1, 2)
        if attend is not None:
            o = attend(layer, q, k, v)  # the recorder's attention (it keeps the cache)
        else:
            o = self._own_attention(q, k, v, cache)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.h * self.hd))

    def _own_attention(self, q, k, v, cache):
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], 2)
                v = torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        rep = self.h // self.hkv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        T, S = q.shape[2], k.shape[2]
        s = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        s = s.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(S - T + 1), float("-inf"))
        return torch.softmax(s, -1) @ v


class TinyLlama(nn.Module):
    def __init__(self, vocab=512, d=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=176):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            blk = nn.Module()
            blk.attn_norm, blk.attn = RMSNorm(d), SelfAttention(d, n_heads, n_kv_heads)
            blk.mlp_norm = RMSNorm(d)
            blk.gate, blk.up, blk.down = nn.Linear(d, d_ff, bias=False), nn.Linear(d, d_ff, bias=False), \
                nn.Linear(d_ff, d, bias=False)
            self.layers.append(blk)
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens, positions, attend=None, caches=None):
        x = self.embed(tokens)
        for i, blk in enumerate(self.layers):
            x = x + blk.attn(blk.attn_norm(x), positions, i, attend, None if caches is None else caches[i])
            h = blk.mlp_norm(x)
            x = x + blk.down(F.silu(blk.gate(h)) * blk.up(h))
        return self.lm_head(self.norm(x))

    @torch.no_grad()
    def generate(self, prompt, n):
        """Dense greedy continuation with the model's own KV cache (independent of the recorder)."""
        caches = [dict() for _ in self.layers]
        t = torch.tensor([prompt])
        logits = self(t, torch.arange(len(prompt)), caches=caches)[:, -1]
        out = []
        for i in range(n):
            nxt = int(logits.argmax(-1))
            out.append(nxt)
            pos = torch.tensor([len(prompt) + i])
            logits = self(torch.tensor([[nxt]]), pos, caches=caches)[:, -1]
        return out


def make_model(seed=0):
    """Random weights with some structure, so that budgets matter and differ between requests:
    tokens 256..511 are filler sharing one embedding, tokens 0..255 carry content; a strong LM head
    makes the greedy answer decisive."""
    torch.manual_seed(seed)
    m = TinyLlama().eval()
    with torch.no_grad():
        for blk in m.layers:
            blk.attn.q_proj.weight.normal_(0, 0.15)
            blk.attn.k_proj.weight.normal_(0, 0.15)
        m.lm_head.weight.normal_(0, 1.0)
        m.embed.weight[256:] = m.embed.weight[256]
    return m


# ------------------------------------------------------------- what the recorder needs of it
def make_step(device="cpu"):
    """The protocol's step(tokens, positions, attend) -> logits for this model (the --model file's
    entry point for `python3 -m sparsebudget.recorder`)."""
    model = make_model().to(device)

    def step(tokens, positions, attend):
        return model(tokens, positions, attend)

    return step


def token_agreement(request, tokens):
    """Quality in [0, 1]: share of the reference answer's tokens reproduced at their position."""
    ref = request["answer"]
    return sum(int(a == b) for a, b in zip(tokens, ref)) / len(ref)


# ---------------------------------------------------------------------------- the walkthrough
def write_requests(path, model, n, lengths, answer_len, seed):
    """Filler prompts with 1-6 content tokens at random places (and one at the end); the reference
    answer is the model's own dense greedy continuation."""
    g = torch.Generator().manual_seed(seed)
    reqs = []
    for i in range(n):
        L = lengths[i % len(lengths)]
        prompt = torch.randint(256, 512, (L,), generator=g)
        k = int(torch.randint(1, 7, (1,), generator=g))
        prompt[torch.randperm(L - 1, generator=g)[:k]] = torch.randint(0, 256, (k,), generator=g)
        prompt[-1] = int(torch.randint(0, 256, (1,), generator=g))
        prompt = prompt.tolist()
        reqs.append({"id": f"own-{seed}-{i}", "task": "sparse_lookup", "prompt": prompt,
                     "answer": model.generate(prompt, answer_len)})
    reqs.sort(key=lambda r: len(r["prompt"]))  # equal lengths next to each other batch together
    with open(path, "w") as f:
        for r in reqs:
            f.write(json.dumps(r) + "\n")


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"command failed with exit code {r.returncode}: {' '.join(cmd)}")
    return r.stdout


def main(argv=None):
    t_start = time.time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cli", required=True, help="path of the sparsebudget CLI")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--n", type=int, default=30, help="requests per split")
    a = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    os.makedirs(a.out_dir, exist_ok=True)
    model = make_model()
    traces = {}
    for split, seed in (("train", 1), ("test", 2)):
        req = os.path.join(a.out_dir, f"requests_{split}.jsonl")
        write_requests(req, model, a.n, [96, 128, 160], 4, seed)
        out = traces[split] = os.path.join(a.out_dir, f"{split}.jsonl")
        if os.path.exists(out):
            os.remove(out)
        # 1. record (the same as: python3 -m sparsebudget.recorder --model examples/python/own_decoder.py ...)
        cmd = ["--model", os.path.abspath(__file__), "--requests", req, "--out", out, "--block-size", "16",
               "--quality", "token_agreement", "--device", "cpu", "--progress", "off"]
        print("$ python3 -m sparsebudget.recorder " + " ".join(cmd), flush=True)
        recorder.main(cmd)
        with open(out) as f:
            recs = [json.loads(line) for line in f]
        # The dense point reproduces the model's own dense greedy answer (its own KV-cache path).
        bad = [r["id"] for r in recs if r["dense_quality"] != 1.0]
        if len(recs) != a.n or bad:
            raise SystemExit(f"{out}: {len(recs)} records; dense differs from the model's own decoding: {bad[:5]}")
    # 2. validate, 3. calibrate, 4. evaluate
    run([a.cli, "validate", traces["train"], traces["test"]])
    pred = os.path.join(a.out_dir, "probe.json")
    run([a.cli, "calibrate", "--traces", traces["train"], "-p", "probe", "--target-degraded", "0.25", "-o", pred])
    run([a.cli, "evaluate", "--traces", traces["test"], "-p", pred, "--fixed", "0.5"])
    print(f"total {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
