"""Train / evaluate the small decoder on the long-context tasks.

Train (GPU):  python3 tools/train/train.py --out OUTDIR --time-budget 480
Smoke (CPU):  python3 tools/train/train.py --smoke --out /tmp/x
Eval:         python3 tools/train/train.py --eval --weights data/model/model.safetensors --n 100

Outputs of training (in --out): model.safetensors (fp16), config.json, ckpt.pt, train.log
"""
import argparse
import collections
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
from model import (Decoder, DEFAULT_CONFIG, NATURAL_CONFIG, export_state,  # noqa: E402
                   save_safetensors_f16, load_model)

SUITES = {"synthetic": "tasks", "natural": "tasks_nl"}


def suite_module(name):
    """Task module of a suite: synthetic (tasks.py, data/model) or natural (tasks_nl.py, data/model_nl)."""
    import importlib
    return importlib.import_module(SUITES[name])

IGNORE = -100


def gen_batch(args):
    """(L, B, batch_idx, split) -> (inp [B, L+Amax-1], tgt same (IGNORE except answer and
    in-context recall targets), task ids [B])."""
    L, B, bidx, split = args
    aux = 4 + L // 512  # in-context recall items (training only), see tasks._assemble
    exs = []
    for i in range(B):
        task = T.TASKS[(bidx + i) % 4]
        exs.append(T.make_split_example(split, task, L, bidx * 4096 + i, aux=aux))
    amax = max(len(e["answer"]) for e in exs)
    W = L + amax - 1
    inp = np.full((B, W), T.PAD, dtype=np.int64)
    tgt = np.full((B, W), IGNORE, dtype=np.int64)
    tids = np.zeros(B, dtype=np.int64)
    for i, e in enumerate(exs):
        seq = e["prompt"] + e["answer"]
        n = len(seq) - 1
        inp[i, :n] = seq[:-1]
        A = len(e["answer"])
        tgt[i, L - 1:L - 1 + A] = e["answer"]
        for pos, tok in e.get("aux_targets", []):
            tgt[i, pos] = tok
        tids[i] = T.TASKS.index(e["task"])
    return inp, tgt, tids


def gen_batch_natural(args):
    """Natural suite: (L, B, batch_idx) -> (inp [B, W], tgt_answer, tgt_lm, task ids). tgt_answer
    holds the answer and in-context recall targets, tgt_lm the next byte at every other prompt
    position (the language-modelling part of the loss); IGNORE elsewhere."""
    import tasks_nl as N
    L, B, bidx, split = args[:4]
    weights = args[4] if len(args) > 4 else None
    aux = 2 + L // 4096
    if weights:  # task mix drawn with these weights (stage 2), else round robin
        w = np.array([weights.get(t, 1.0) for t in N.TASKS])
        tsel = np.random.default_rng([bidx, 7]).choice(len(N.TASKS), size=B, p=w / w.sum())
    else:
        tsel = [(bidx + i) % len(N.TASKS) for i in range(B)]
    exs = [N.make_split_example(split, N.TASKS[int(tsel[i])], L, bidx * 4096 + i, aux=aux) for i in range(B)]
    amax = max(len(e["answer"]) for e in exs)
    W = L + amax - 1
    inp = np.full((B, W), N.PAD, dtype=np.int64)
    ta = np.full((B, W), IGNORE, dtype=np.int64)
    tl = np.full((B, W), IGNORE, dtype=np.int64)
    tids = np.zeros(B, dtype=np.int64)
    for i, e in enumerate(exs):
        seq = e["prompt"] + e["answer"]
        inp[i, :len(seq) - 1] = seq[:-1]
        tl[i, :L - 1] = e["prompt"][1:]
        A = len(e["answer"])
        ta[i, L - 1:L - 1 + A] = e["answer"]
        for pos, tok in e["aux_targets"]:
            ta[i, pos] = tok
            tl[i, pos] = IGNORE
        tids[i] = N.TASKS.index(e["task"])
    return inp, ta, tl, tids


def curriculum(p, kind="default"):
    if kind == "natural":
        if p < 0.12:
            return {1024: 0.6, 2048: 0.4}
        if p < 0.35:
            return {1024: 0.25, 2048: 0.25, 4096: 0.25, 8192: 0.25}
        return {1024: 0.1, 2048: 0.15, 4096: 0.2, 8192: 0.25, 16384: 0.3}
    if kind == "natural_long":
        return {1024: 0.15, 2048: 0.15, 4096: 0.2, 8192: 0.25, 16384: 0.25}
    if kind == "long":  # continuation stage: weight the long contexts up
        return {512: 0.1, 1024: 0.1, 2048: 0.15, 4096: 0.25, 8192: 0.4}
    if p < 0.10:
        return {512: 0.7, 1024: 0.3}
    if p < 0.30:
        return {512: 0.35, 1024: 0.35, 2048: 0.2, 4096: 0.1}
    return {512: 0.15, 1024: 0.15, 2048: 0.2, 4096: 0.25, 8192: 0.25}


def lr_at(step, p, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def train(args):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    dev = torch.device(args.device)
    logf = open(os.path.join(args.out, "train.log"), "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    natural = args.suite == "natural"
    TT = suite_module(args.suite)
    cfg = dict(NATURAL_CONFIG if natural else DEFAULT_CONFIG)
    if args.smoke and natural:  # CPU smoke: the same code path on a narrow GQA model (seconds, not minutes)
        cfg.update(n_layers=2, d_model=128, n_heads=8, n_kv_heads=2, head_dim=16, d_ff=256)
    model = Decoder(cfg).to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            **({"fused": True} if dev.type == "cuda" else {}))
    step0 = 0
    elapsed0 = 0.0
    if args.init:
        from model import import_state, load_safetensors
        import_state(model, load_safetensors(args.init))
        model.to(dev)
        log(f"initialised weights from {args.init}")
    if args.resume:
        ck = torch.load(args.resume, map_location=dev)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step0 = ck["step"]
        elapsed0 = ck["elapsed"]
        log(f"resumed from {args.resume} at step {step0} elapsed {elapsed0:.1f}")
    log(f"config {json.dumps(cfg)}")
    log(f"args {json.dumps(vars(args))} params {nparam} device {dev} "
        f"torch {torch.__version__}")
    use_amp = dev.type == "cuda"
    rng = np.random.default_rng([args.seed, step0])

    pool = None
    if natural:  # load the corpus once, before the workers fork
        import corpus
        corpus.load()
    if args.workers > 0:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(args.workers)
    pending = collections.deque()
    budget = args.time_budget
    t_start = time.time()

    def progress(step):
        el = elapsed0 + time.time() - t_start
        return max(step / args.max_steps, el / budget if budget > 0 else 0.0)

    def submit(bidx, p):
        smoke_L = 1024 if natural else 512
        cur = curriculum(p, args.curriculum) if not args.smoke else {smoke_L: 1.0}
        Ls = sorted(cur)
        L = int(rng.choice(Ls, p=[cur[x] for x in Ls]))
        B = max(1, args.tokens_per_step // L) if not args.smoke else 2
        a = (L, B, args.seed * 1000003 + bidx, "train")
        if natural and args.task_weights:
            a = a + ({k: float(v) for k, v in (x.split("=") for x in args.task_weights.split(","))},)
        fn = gen_batch_natural if natural else gen_batch
        if pool is None:
            pending.append(fn(a))
        else:
            pending.append(pool.apply_async(fn, (a,)))

    nxt = step0
    for _ in range(args.prefetch):
        submit(nxt, progress(step0))
        nxt += 1
    stats = collections.defaultdict(list)
    step = step0
    model.train()
    while True:
        p = progress(step)
        if p >= 1.0 or step >= args.max_steps:
            break
        item = pending.popleft()
        item = item if pool is None else item.get()
        inp, tgt, tids = (item[0], item[1], item[-1])
        submit(nxt, p)
        nxt += 1
        inp = torch.from_numpy(inp).to(dev, non_blocking=True)
        tgt = torch.from_numpy(tgt).to(dev, non_blocking=True)
        lr = lr_at(step, p, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        mask = tgt != IGNORE
        lm_loss = None
        import contextlib
        amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
        with amp:
            hid = model.hidden(inp)
            logits = model.logits(hid[mask]).float()
            if natural:  # language modelling on the haystack bytes, mixed into the loss
                tl = torch.from_numpy(item[2]).to(dev, non_blocking=True)
                lmask = tl != IGNORE
                lm_loss = F.cross_entropy(model.logits(hid[lmask]).float(), tl[lmask])
        y = tgt[mask]
        loss = F.cross_entropy(logits, y)
        if lm_loss is not None:
            loss = loss + args.lm_weight * lm_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0 or args.smoke:
            with torch.no_grad():
                corr = (logits.argmax(-1) == y).float()
                # per-example exact match (teacher forced)
                rows = mask.nonzero()[:, 0]
                B = inp.shape[0]
                wrong = torch.zeros(B, device=dev).index_add_(0, rows, 1 - corr)
                em = (wrong == 0).float().cpu().numpy()
            tnp = tids
            L = inp.shape[1]
            msg = (f"step {step} p {p:.3f} el {elapsed0 + time.time() - t_start:.1f}s lr {lr:.2e} "
                   f"W {L} B {inp.shape[0]} loss {loss.item():.4f} tok_acc {corr.mean().item():.3f} "
                   + (f"lm {lm_loss.item():.4f} " if lm_loss is not None else "")
                   + " ".join(f"{TT.TASKS[t][:8]}_em {em[tnp == t].mean():.2f}"
                              for t in range(len(TT.TASKS)) if (tnp == t).any()))
            log(msg)
        if args.ckpt_every and step % args.ckpt_every == 0:
            save_all(model, opt, step, elapsed0 + time.time() - t_start, args, cfg)
    el = elapsed0 + time.time() - t_start
    log(f"done step {step} elapsed {el:.1f}s")
    save_all(model, opt, step, el, args, cfg)
    if pool is not None:
        pool.terminate()
    logf.close()
    return model


def save_all(model, opt, step, elapsed, args, cfg):
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "elapsed": elapsed}, os.path.join(args.out, "ckpt.pt"))
    save_safetensors_f16(os.path.join(args.out, "model.safetensors"), export_state(model),
                         {"step": step, "train_seconds": round(elapsed, 1)})
    c = dict(cfg)
    c["train_steps"] = step
    c["train_seconds"] = round(elapsed, 1)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=1)


@torch.no_grad()
def evaluate(model, n, lengths, tasks, device, split="eval", batch=50, log=print, TT=T, tokens_per_batch=0):
    """Dense greedy exact match per task x length. Returns {task: {L: acc}}."""
    res = {}
    for task in tasks:
        res[task] = {}
        for L in lengths:
            correct = 0
            bsz = max(1, min(batch, tokens_per_batch // L)) if tokens_per_batch else batch
            for b0 in range(0, n, bsz):
                exs = [TT.make_split_example(split, task, L, i) for i in range(b0, min(n, b0 + bsz))]
                # group by answer length (aggregation varies)
                groups = collections.defaultdict(list)
                for e in exs:
                    groups[len(e["answer"])].append(e)
                for A, g in groups.items():
                    pr = torch.tensor([e["prompt"] for e in g], device=device)
                    out = model.greedy(pr, A).cpu().numpy()
                    for e, o in zip(g, out):
                        correct += int(list(o) == e["answer"])
            res[task][L] = correct / n
            log(f"eval {task} L={L} exact_match={correct}/{n} = {correct / n:.3f}")
    return res


def eval_main(args):
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfgp = args.config if args.config and os.path.exists(args.config) else None
    model = load_model(args.weights, cfgp, dev)
    t0 = time.time()
    TT = suite_module(args.suite)
    lengths = [int(x) for x in (args.lengths or ",".join(map(str, TT.LENGTHS))).split(",")]
    res = evaluate(model, args.n, lengths, TT.TASKS, dev, batch=args.eval_batch, TT=TT,
                   tokens_per_batch=args.eval_tokens)
    el = time.time() - t0
    print("dense exact match (fp32 compute, fp16 weights), n =", args.n, "per cell")
    print("task".ljust(12) + "".join(str(L).rjust(8) for L in lengths))
    for t in TT.TASKS:
        print(t.ljust(12) + "".join(f"{res[t][L]:8.3f}" for L in lengths))
    print(f"eval seconds {el:.1f}")
    if args.eval_out:
        with open(args.eval_out, "w") as f:
            json.dump({"n_per_cell": args.n, "split": "eval", "accuracy": res,
                       "seconds": round(el, 1)}, f, indent=1)
    return res


def parse(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/train")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--tokens-per-step", type=int, default=65536)
    ap.add_argument("--time-budget", type=float, default=480.0)
    ap.add_argument("--max-steps", type=int, default=10 ** 9)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--prefetch", type=int, default=24)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-every", type=int, default=0)
    ap.add_argument("--resume", default="")
    ap.add_argument("--curriculum", default="", choices=["", "default", "long", "natural", "natural_long"],
                    help="default: 'natural' for the natural suite, else 'default'")
    ap.add_argument("--init", default="", help="start from these safetensors weights (fresh optimizer)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--weights", default="data/model/model.safetensors")
    ap.add_argument("--config", default="data/model/config.json")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--lengths", default="", help="default: the suite's lengths")
    ap.add_argument("--suite", default="synthetic", choices=sorted(SUITES))
    ap.add_argument("--task-weights", default="", help="natural suite: e.g. lookalike=3,sentence_qa=3")
    ap.add_argument("--lm-weight", type=float, default=0.5, help="natural suite: weight of the LM loss")
    ap.add_argument("--eval-tokens", type=int, default=0, help="eval batch = min(eval-batch, this // L)")
    ap.add_argument("--eval-batch", type=int, default=50)
    ap.add_argument("--eval-out", default="")
    a = ap.parse_args(argv)
    if not a.curriculum:
        a.curriculum = "natural" if a.suite == "natural" else "default"
    if a.smoke:
        a.device = "cpu"
        a.max_steps = 3
        a.workers = 0
        a.prefetch = 1
        a.time_budget = 0
        a.warmup = 2
    return a


def main(argv=None):
    args = parse(argv)
    if args.eval:
        return eval_main(args)
    model = train(args)
    if args.smoke:
        model.eval()
        TT = suite_module(args.suite)
        evaluate(model, 2, [TT.LENGTHS[0]], TT.TASKS, torch.device("cpu"), batch=2, TT=TT)
    return model


if __name__ == "__main__":
    main()
