"""sparsebudget.recorder: budget-curve traces (docs/traces.md) for any PyTorch decoder.

The protocol (docs/guide/your-model.md): the user's model is wrapped in one callable

    step(tokens, positions, attend) -> logits

  tokens     LongTensor [batch, T]: the next T tokens of every row (T = prompt length at prefill,
             1 at decode);
  positions  LongTensor [T]: their absolute positions (the same for every row);
  attend     callable attend(layer, q, k, v) -> o, to be called exactly once per attention layer
             per step, with a distinct `layer` index 0..n_layers-1, in place of the model's own
             attention:  q [batch, q_heads, T, head_dim], k and v [batch, kv_heads, T, head_dim]
             for the T new tokens only, position encoding (RoPE, ...) already applied;
             o [batch, q_heads, T, head_dim] is the attention output (before the output
             projection). The recorder owns the KV cache: the model keeps none between calls.
  logits     [batch, vocab] of the last position, or [batch, T, vocab] (the last one is used).

Rows of a batch must not interact (no batch statistics). Attention must be plain causal softmax
attention with scale `scale` (default 1/sqrt(head_dim)); softcapping, ALiBi or sliding windows
are outside the protocol.

For each request the recorder runs one dense prefill over the whole prompt (features: entropy and
top-1 probability of the next-token distribution, probe statistics of the last prompt token), then
decodes greedily at every grid budget at once (one batch row per request x budget): the cache of
prompt[:-1] is copied to every row and the last prompt token is the first decode step, so every
answer token, the first included, is produced under the row's block-sparse attention in every layer.
"""
import json
import math
import os
import sys
import time

import torch

from . import _core
from .torch import BlockSummaries, _masked_attention, _token_mask, dense_attention, probe_stats, select_blocks

__all__ = ["record_traces", "grid_for", "monotone_oracle", "DEFAULT_GRID"]

#: The grid of the bundled traces (total blocks); points at or above the causal count are dropped.
DEFAULT_GRID = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def grid_for(context_length, grid, *, block_size=64, sink_blocks=1, local_blocks=1):
    """Curve budgets of one request: (list of total blocks, causal_blocks). Total-block grid points
    (ints) or fractions of the causal blocks (floats in (0, 1], rounded up) are kept when they are
    at least the forced count (sink + local, the counting rule) and below the causal count; the
    dense point (causal_blocks) is always last."""
    nb = -(-context_length // block_size)
    forced = _core.Budget("blocks", blocks=0, sink_blocks=sink_blocks, local_blocks=local_blocks).resolve(nb)[
        "forced_blocks"]
    pts = set()
    for g in grid:
        if isinstance(g, bool) or not isinstance(g, (int, float)):
            raise TypeError(f"grid points must be ints (total blocks) or floats (fractions), got {g!r}")
        if isinstance(g, float):
            if not (0.0 < g <= 1.0):
                raise ValueError(f"a fraction grid point must be in (0, 1], got {g}")
            b = math.ceil(g * nb - 1e-9)
        else:
            if g < 1:
                raise ValueError(f"a block grid point must be >= 1, got {g}")
            b = g
        if forced <= b < nb:
            pts.add(b)
    return sorted(pts) + [nb], nb


def monotone_oracle(blocks, quality, dense_quality):
    """The smallest curve budget from which every larger point keeps the dense quality (the
    library's MonotoneOracleBlocks, docs/traces.md); `blocks` ascending, the dense point last."""
    oracle = blocks[-1]
    for i in range(len(blocks) - 1, -1, -1):
        if all(q >= dense_quality for q in quality[i:]):
            oracle = blocks[i]
        else:
            break
    return oracle


# ------------------------------------------------------------------------- attend objects
class _Calls:
    def __init__(self):
        self.seen = []

    def check(self, what):
        if not self.seen:
            raise RuntimeError(f"{what}: the step callable never called attend(layer, q, k, v); the recorder "
                               "needs every attention layer routed through it (see sparsebudget.recorder)")
        if sorted(self.seen) != list(range(len(self.seen))):
            raise RuntimeError(f"{what}: attend was called with layers {self.seen}; expected each of 0..n-1 once")
        n = len(self.seen)
        self.seen = []
        return n


def _check_qkv(layer, q, k, v, T):
    if not (q.dim() == k.dim() == v.dim() == 4):
        raise ValueError(f"attend(layer {layer}): q, k, v must be 4-D [batch, heads, tokens, head_dim], got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[2] != k.shape[2]:
        raise ValueError(f"attend(layer {layer}): q {tuple(q.shape)} and k/v {tuple(k.shape)} do not match "
                         "([batch, q_heads, T, d] and [batch, kv_heads, T, d])")
    if q.shape[2] != T:
        raise ValueError(f"attend(layer {layer}): q holds {q.shape[2]} tokens, the step {T}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"attend(layer {layer}): kv heads {k.shape[1]} must divide q heads {q.shape[1]}")


class _PrefillAttend:
    """Dense causal attention over the prompt; keeps every layer's K/V and last query."""

    def __init__(self, T, scale):
        self.T, self.scale = T, scale
        self.k, self.v, self.q_last = {}, {}, {}
        self.calls = _Calls()

    def __call__(self, layer, q, k, v):
        _check_qkv(layer, q, k, v, self.T)
        if layer in self.k:
            raise RuntimeError(f"attend: layer {layer} called twice in one step")
        self.calls.seen.append(layer)
        self.k[layer], self.v[layer], self.q_last[layer] = k, v, q[:, :, -1]
        return dense_attention(q, k, v, scale=self.scale)


class _Layer:
    def __init__(self, k, v, rows, t0, tmax, block_size, scoring):
        S = rows.numel()
        B_, H, _, D = k.shape
        self.K = torch.empty(S, H, tmax, D, dtype=k.dtype, device=k.device)
        self.V = torch.empty(S, H, tmax, D, dtype=v.dtype, device=v.device)
        self.K[:, :, :t0] = k[:, :, :t0].index_select(0, rows)
        self.V[:, :, :t0] = v[:, :, :t0].index_select(0, rows)
        base = BlockSummaries.from_keys(k[:, :, :t0], block_size=block_size, max_tokens=tmax,
                                        mean=scoring == "mean", bound=scoring == "bound")
        self.summ = base.index_select(rows)


class _DecodeAttend:
    """Block-sparse attention per row budget over the recorder's own cache (one token a step)."""

    def __init__(self, layers, budgets, block_size, scoring, scale, selection_scope="per_kv_head"):
        self.layers, self.budgets = layers, budgets
        self.block_size, self.scoring, self.scale = block_size, scoring, scale
        self.selection_scope = selection_scope
        self.dense = all(b.mode == "dense" for b in budgets)
        self.t = 0
        self.calls = _Calls()

    def __call__(self, layer, q, k, v):
        _check_qkv(layer, q, k, v, 1)
        if layer not in self.layers:
            raise RuntimeError(f"attend: layer {layer} was not seen at prefill")
        if layer in self.calls.seen:
            raise RuntimeError(f"attend: layer {layer} called twice in one step")
        self.calls.seen.append(layer)
        c = self.layers[layer]
        t = self.t
        c.K[:, :, t] = k[:, :, 0]
        c.V[:, :, t] = v[:, :, 0]
        c.summ.append(k)
        L = t + 1
        K, V = c.K[:, :, :L], c.V[:, :, :L]
        Bt, H = q.shape[0], K.shape[1]
        if self.dense:
            mask = _token_mask(None, Bt, H, 1, L, self.block_size, q.device)
        else:
            keep = select_blocks(q, c.summ, self.budgets, scoring=self.scoring, scale=self.scale, context_length=L,
                                 selection_scope=self.selection_scope)
            mask = _token_mask(keep, Bt, H, 1, L, self.block_size, q.device)
        sc = 1.0 / math.sqrt(q.shape[-1]) if not self.scale else float(self.scale)
        return _masked_attention(q, K, V, mask, sc)


# ---------------------------------------------------------------------------------- helpers
def _last_logits(logits, what):
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (2, 3):
        raise ValueError(f"{what}: step must return logits [batch, vocab] or [batch, T, vocab], got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    return logits[:, -1] if logits.dim() == 3 else logits


def _r6(x):
    return None if x is None else round(float(x), 6)


class _Progress:
    """A one-line progress bar on stderr (requests done, rate, ETA)."""

    def __init__(self, total, enabled):
        self.total, self.enabled, self.done, self.t0 = total, enabled, 0, time.time()

    def update(self, n):
        self.done += n
        if not self.enabled:
            return
        el = time.time() - self.t0
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        w = 30
        fill = int(w * self.done / max(1, self.total))
        sys.stderr.write(f"\rrecord [{'#' * fill}{'.' * (w - fill)}] {self.done}/{self.total} requests "
                         f"{el:.1f}s, {rate:.2f}/s, ETA {eta:.0f}s ")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _existing_ids(path):
    """Ids already in `path`; a torn last line (no newline: an interrupted write) is cut off."""
    ids = set()
    if not os.path.exists(path):
        return ids
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: line {n}: not a trace record ({e}); cannot resume") from None
    return ids


def _normalise(req, i):
    if not isinstance(req, dict):
        raise TypeError(f"request {i} must be a dict, got {type(req).__name__}")
    if "id" not in req or not isinstance(req["id"], str) or not req["id"]:
        raise ValueError(f"request {i}: 'id' must be a non-empty string")
    rid = req["id"]
    prompt = req.get("prompt")
    if prompt is None:
        raise ValueError(f"request {rid}: 'prompt' (token ids) is required")
    prompt = [int(x) for x in (prompt.tolist() if isinstance(prompt, torch.Tensor) else prompt)]
    if len(prompt) < 2:
        raise ValueError(f"request {rid}: the prompt needs >= 2 tokens, got {len(prompt)}")
    answer = req.get("answer")
    if answer is not None:
        answer = [int(x) for x in (answer.tolist() if isinstance(answer, torch.Tensor) else answer)]
        if not answer:
            raise ValueError(f"request {rid}: 'answer' must not be empty")
    n_new = req.get("max_new_tokens", len(answer) if answer is not None else None)
    if not isinstance(n_new, int) or n_new < 1:
        raise ValueError(f"request {rid}: give 'answer' token ids or 'max_new_tokens' >= 1, got {n_new!r}")
    extra = req.get("features") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"request {rid}: 'features' must be a dict of numbers")
    return {"id": rid, "prompt": prompt, "answer": answer, "n": n_new, "task": req.get("task"), "extra": extra,
            "raw": req}


# ----------------------------------------------------------------------------------- record
@torch.no_grad()
def record_traces(step, requests, out_path, *, grid=DEFAULT_GRID, quality=None, criterion=None, block_size=64,
                  scoring="bound", sink_blocks=1, local_blocks=1, scale=None, tokens_per_batch=65536,
                  device=None, progress=None, hook=None, selection_scope="per_kv_head"):
    """Runs `step` (protocol above) on every request and appends one trace record per request to
    `out_path` (JSONL, docs/traces.md); ids already in the file are skipped (resume).

    requests: iterable of dicts {"id": str, "prompt": token ids, "answer": token ids (quality =
      exact match of the greedy answer) or "max_new_tokens": int with `quality`, optional "task"
      (str) and "features" (extra numeric features, e.g. {"answer_length": 3})}.
    quality: optional quality(request, tokens) -> float in [0, 1] over the greedy tokens.
    grid: total blocks (ints) or fractions (floats); see grid_for. Each point b below the causal
      count decodes with Budget.of_blocks(b - forced) (sink_blocks, local_blocks): b blocks at the
      last prompt token, the counting rule of budget.hpp); the dense point keeps every block.
    Consecutive requests of equal prompt length are batched, max(1, tokens_per_batch // length)
    prompts (x grid points rows at decode) at a time; prompts go to `device` (default: torch's).
    hook: optional hook(record, details) called before each record is written, details =
    {"outputs": {blocks: greedy token ids}, "logits": dense last-prompt-token logits (tensor)}.
    progress: a bar on stderr (default: when stderr is a terminal).
    selection_scope: 'per_kv_head' (default) or 'all_kv_heads' (one block list per query block
      for every kv head, sparsebudget.torch.select_blocks); the records do not name it.
    Returns {"written", "skipped", "seconds", "model_calls"} (model_calls: step() calls made, one
    prefill plus one per decode step for every batch).
    """
    if scoring not in ("mean", "bound"):
        raise ValueError(f"scoring must be 'mean' or 'bound', got {scoring!r}")
    if selection_scope not in ("per_kv_head", "all_kv_heads"):
        raise ValueError(f"selection_scope must be 'per_kv_head' or 'all_kv_heads', got {selection_scope!r}")
    reqs = [_normalise(r, i) for i, r in enumerate(requests)]
    seen = set()
    for r in reqs:
        if r["id"] in seen:
            raise ValueError(f"duplicate request id {r['id']!r}")
        seen.add(r["id"])
        if r["answer"] is None and quality is None:
            raise ValueError(f"request {r['id']}: no 'answer' and no quality function")
    crit = criterion or ("exact_match" if quality is None else getattr(quality, "__name__", "quality"))
    done = _existing_ids(out_path)
    todo = [r for r in reqs if r["id"] not in done]
    dev = torch.device(device) if device is not None else None
    prog = _Progress(len(todo), sys.stderr.isatty() if progress is None else progress)
    t0 = time.time()
    calls = 0
    written = 0
    with open(out_path, "a") as f:
        i = 0
        while i < len(todo):
            L = len(todo[i]["prompt"])
            per = max(1, tokens_per_batch // L)
            j = i
            while j < len(todo) and j - i < per and len(todo[j]["prompt"]) == L:
                j += 1
            batch = todo[i:j]
            recs, ncalls = _record_batch(step, batch, grid, quality, crit, block_size, scoring, sink_blocks,
                                         local_blocks, scale, dev, hook, selection_scope)
            calls += ncalls
            for rec in recs:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            written += len(recs)
            prog.update(len(batch))
            i = j
    prog.close()
    return {"written": written, "skipped": len(reqs) - len(todo), "seconds": round(time.time() - t0, 3),
            "model_calls": calls}


def _record_batch(step, batch, grid, quality, crit, Bs, scoring, sink, local, scale, dev, hook, scope):
    P = len(batch)
    L = len(batch[0]["prompt"])
    prompts = torch.tensor([r["prompt"] for r in batch], dtype=torch.long, device=dev)
    dev = prompts.device
    # 1. dense prefill of the whole prompt: features and the caches
    pre = _PrefillAttend(L, scale)
    logits = _last_logits(step(prompts, torch.arange(L, device=dev), pre), "prefill")
    nlayers = pre.calls.check("prefill")
    lp = torch.log_softmax(logits.double(), -1)
    pr = lp.exp()
    entropy = (-(pr * lp).nan_to_num(0.0)).sum(-1).cpu().tolist()
    top1 = pr.max(-1).values.cpu().tolist()
    acc = {}
    for layer in range(nlayers):
        summ = BlockSummaries.from_keys(pre.k[layer], block_size=Bs, mean=True, bound=False)
        st = probe_stats(pre.q_last[layer], summ, scale=scale)
        for key in ("blocks_50", "blocks_90", "blocks_99", "entropy", "top5_mass"):
            acc.setdefault(key, []).append(st[key])
    probe = {k: torch.stack(v, 0).mean(0).cpu().tolist() for k, v in acc.items()}

    # 2. decode at every budget: row p*G + gi = request p at grid point gi
    blocks, nb0 = grid_for(L, grid, block_size=Bs, sink_blocks=sink, local_blocks=local)
    G = len(blocks)
    forced0 = _core.Budget("blocks", blocks=0, sink_blocks=sink, local_blocks=local).resolve(nb0)["forced_blocks"]
    row_budgets = [_core.Budget("blocks", blocks=b - forced0, sink_blocks=sink, local_blocks=local)
                   for b in blocks[:-1]] + [_core.Budget.dense()]
    budgets = row_budgets * P
    n = max(r["n"] for r in batch)
    rows = torch.arange(P, device=dev).repeat_interleave(G)
    layers = {li: _Layer(pre.k[li], pre.v[li], rows, L - 1, L - 1 + n, Bs, scoring) for li in range(nlayers)}
    del pre
    att = _DecodeAttend(layers, budgets, Bs, scoring, scale, scope)
    tok = prompts[:, -1].repeat_interleave(G)
    toks, probs = [], []
    for s in range(n):
        att.t = L - 1 + s
        lg = _last_logits(step(tok[:, None], torch.tensor([att.t], device=dev), att), f"decode step {s}")
        if att.calls.check(f"decode step {s}") != nlayers:
            raise RuntimeError(f"decode step {s}: attend was called for fewer layers than at prefill")
        probs.append(torch.softmax(lg.double(), -1).max(-1).values)
        tok = lg.argmax(-1)
        toks.append(tok)
    toks = torch.stack(toks, 1).view(P, G, n).cpu().tolist()
    probs = torch.stack(probs, 1).view(P, G, n).cpu().tolist()
    del layers, att

    # 3. records
    recs = []
    for i, r in enumerate(batch):
        A = r["n"]
        qual = []
        for gi in range(G):
            out = toks[i][gi][:A]
            if quality is None:
                qv = float(out == r["answer"])
            else:
                qv = float(quality(r["raw"], out))
                if not (0.0 <= qv <= 1.0):
                    raise ValueError(f"request {r['id']}: quality returned {qv}, not in [0, 1]")
            qual.append(qv)
        curve = [{"blocks": b, "fraction": round(b / nb0, 6), "quality": qv, "top1_prob": _r6(probs[i][gi][0]),
                  "min_top1_prob": _r6(min(probs[i][gi][:A]))} for gi, (b, qv) in enumerate(zip(blocks, qual))]
        dq = qual[-1]
        ob = monotone_oracle(blocks, qual, dq)
        rec = {"id": r["id"]}
        if r["task"] is not None:
            rec["task"] = r["task"]
        feats = {"entropy": _r6(entropy[i]), "top1_prob": _r6(top1[i])}
        for key in ("blocks_50", "blocks_90", "blocks_99", "entropy", "top5_mass"):
            feats["probe_" + key] = _r6(probe[key][i])
        feats.update(r["extra"])
        rec.update({"context_length": L, "block_size": Bs, "features": feats, "curve": curve, "dense_quality": dq,
                    "oracle": {"blocks": ob, "fraction": round(ob / nb0, 6), "criterion": crit}})
        if hook is not None:
            hook(rec, {"outputs": {b: toks[i][gi][:A] for gi, b in enumerate(blocks)}, "logits": logits[i]})
        recs.append(rec)
    return recs, 1 + n


# -------------------------------------------------------------------------------------- CLI
def _load_module(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sparsebudget_user_model", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"record: cannot load model file {path!r}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parse_grid(text):
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        try:
            out.append(float(tok) if "." in tok else int(tok))
        except ValueError:
            raise SystemExit(f"record: --grid entry {tok!r} is neither an int (blocks) nor a fraction") from None
    return out


def main(argv=None):
    """python3 -m sparsebudget.recorder --model FILE.py --requests REQ.jsonl --out TRACES.jsonl

    FILE.py defines make_step(device) -> step (the protocol above) and, for --quality NAME, a
    function NAME(request, tokens) -> [0, 1]. REQ.jsonl holds one request object per line."""
    import argparse

    ap = argparse.ArgumentParser(prog="python3 -m sparsebudget.recorder",
                                 description="Record budget-curve traces of a PyTorch decoder (docs/guide/your-model.md).")
    ap.add_argument("--model", required=True, help="Python file defining make_step(device) -> step")
    ap.add_argument("--requests", required=True, help="JSONL: {id, prompt, answer | max_new_tokens, task?, features?}")
    ap.add_argument("--out", required=True, help="trace JSONL to append to (ids already there are skipped)")
    ap.add_argument("--grid", default=",".join(str(b) for b in DEFAULT_GRID),
                    help="total blocks (ints) or fractions (with a '.'); the dense point is always added")
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--scoring", choices=["mean", "bound"], default="bound")
    ap.add_argument("--selection-scope", choices=["per_kv_head", "all_kv_heads"], default="per_kv_head",
                    help="all_kv_heads: one block list per query block for every kv head")
    ap.add_argument("--sink-blocks", type=int, default=1)
    ap.add_argument("--local-blocks", type=int, default=1)
    ap.add_argument("--scale", type=float, default=None, help="attention scale (default 1/sqrt(head_dim))")
    ap.add_argument("--tokens-per-batch", type=int, default=65536)
    ap.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    ap.add_argument("--quality", default=None, help="name of a quality(request, tokens) function in --model")
    ap.add_argument("--criterion", default=None, help="oracle criterion label (default exact_match / the function name)")
    ap.add_argument("--progress", choices=["auto", "on", "off"], default="auto")
    a = ap.parse_args(argv)
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    mod = _load_module(a.model)
    if not hasattr(mod, "make_step"):
        raise SystemExit(f"record: {a.model} defines no make_step(device)")
    step = mod.make_step(dev)
    quality = None
    if a.quality:
        quality = getattr(mod, a.quality, None)
        if not callable(quality):
            raise SystemExit(f"record: {a.model} defines no function {a.quality!r}")
    reqs = []
    with open(a.requests) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    reqs.append(json.loads(line))
                except ValueError as e:
                    raise SystemExit(f"record: {a.requests}: line {n}: {e}") from None
    st = record_traces(step, reqs, a.out, grid=_parse_grid(a.grid), quality=quality, criterion=a.criterion,
                       block_size=a.block_size, scoring=a.scoring, selection_scope=a.selection_scope,
                       sink_blocks=a.sink_blocks,
                       local_blocks=a.local_blocks, scale=a.scale, tokens_per_batch=a.tokens_per_batch, device=dev,
                       progress=None if a.progress == "auto" else a.progress == "on")
    n = max(1, st["written"])
    print(f"recorded {st['written']} requests ({st['skipped']} already in {a.out}) in {st['seconds']:.2f} s "
          f"({st['seconds'] / n:.3f} s/request), {st['model_calls']} model calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
