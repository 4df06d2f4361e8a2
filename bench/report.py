"""Tables and a plot from bench_attention's Google Benchmark JSON (medians of repetitions).

    /usr/bin/python3 bench/report.py docs/bench/bench_attention.json \
        --markdown docs/bench/tables.md --plot docs/bench/decode.png
"""
import argparse
import json
import re


def load(path):
    with open(path) as f:
        d = json.load(f)
    ctx = d.get("context", {})
    runs = {}
    for b in d["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if b.get("error_occurred"):  # a skipped row (e.g. a peer whose output check failed)
            continue
        name = re.sub(r"/real_time(_median)?$", "", b["name"])
        t = b["real_time"]
        unit = b.get("time_unit", "ms")
        ms = t * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
        runs[name] = {"ms": ms, **{k: v for k, v in b.items() if isinstance(v, (int, float))}}
    return ctx, runs


def find(runs, **kv):
    out = []
    kv.setdefault("scope", "per_kv_head")  # rows name the selection scope only when not the default
    for name, r in runs.items():
        parts = dict(p.split(":", 1) for p in name.split("/")[1:] if ":" in p)
        parts["op"] = name.split("/")[0]
        parts.setdefault("scope", "per_kv_head")
        if all(parts.get(k) == str(v) for k, v in kv.items()):
            out.append((name, parts, r))
    return out


def one(runs, **kv):
    m = find(runs, **kv)
    return m[0][2] if m else None


BEGIN = "<!-- ggml-peer:begin (written by bench/report.py from the last `make bench`) -->"
END = "<!-- ggml-peer:end -->"


def peer_section(ctx, runs):
    """Ours vs ggml_flash_attn_ext, same K/V type and layout, plus issue 13's decode targets."""
    bw1, bw2 = float(ctx.get("read_bw_GBs_threads1", 0)), float(ctx.get("read_bw_GBs_threads2", 0))
    o = []
    p = o.append
    p(f"Read probe of this run: {bw1:.1f} GB/s (1 thread), {bw2:.1f} GB/s (2 threads); ISA "
      f"{ctx.get('isa', '?')}; {ctx.get('date', '')}.\n")
    p("#### Dense decode, ours vs ggml_flash_attn_ext (32 q / 8 kv heads, d 128; median ms; ratio = ggml / ours)\n")
    p("| K/V | layout | L | threads | ggml ms | ours ms | ratio |")
    p("|---|---|---:|---:|---:|---:|---:|")
    ratios = {}
    for kv in ["f16", "q8_0"]:
        for lay in ["head_major", "token_major"]:
            for L in ["4096", "16384", "65536"]:
                for th in ["1", "2"]:
                    g = one(runs, op="peer", kv=kv, layout=lay, L=L, threads=th)
                    if lay == "head_major":
                        us = one(runs, op="decode", kv=kv, layout="head_major", L=L, budget="dense", threads=th)
                    else:
                        us = [r for n, pp, r in find(runs, op="decode", kv=kv, L=L, budget="dense", score="mean",
                                                     B="64", threads=th) if "layout" not in pp]
                        us = us[0] if us else None
                    if not g:
                        continue
                    rt = g["ms"] / us["ms"] if us else None
                    ratios[(kv, lay, L, th)] = rt
                    p(f"| {kv} | {lay} | {L} | {th} | {g['ms']:.2f} | " + (f"{us['ms']:.3f}" if us else "-") +
                      " | " + (f"{rt:.1f}x" if rt else "-") + " |")
    if not ratios:
        p("(no peer rows in this run: the ggml tarball was not found at configure time)")
    p("\n#### Targets of issue 13 in this run (64K, 2 threads)\n")
    p("| target | measured | met |")
    p("|---|---|---|")

    def row(what, val, ok):
        p(f"| {what} | {val} | {'yes' if ok else 'no'} |")

    for kv, lay, want in [("f16", "head_major", 3), ("f16", "token_major", 8), ("q8_0", "token_major", 10)]:
        rt = ratios.get((kv, lay, "65536", "2"))
        if rt:
            row(f"ours dense {kv} >= {want}x ggml {kv}, {lay}", f"{rt:.1f}x", rt >= want)
    tm = [r for n, pp, r in find(runs, op="decode", kv="f16", L="65536", budget="dense", score="mean", B="64",
                                 threads="2") if "layout" not in pp]
    if tm:
        r = tm[0]
        row("dense f16 token-major >= 80% of the read probe", f"{r['ms']:.2f} ms, {r['GB/s']:.1f} GB/s = "
            f"{100 * r['bw_frac']:.0f}% of {bw2:.1f}", r["bw_frac"] >= 0.8)
    for scope, what in [
            ("per_kv_head", "5% budget within 1.3x of its roofline time (kept K/V + summaries at the probe)"),
            ("all_kv_heads", "the same, one block list for all kv heads (selection scope all_kv_heads)")]:
        sp = [r for n, pp, r in find(runs, op="decode", kv="f16", L="65536", budget="5%", score="mean", B="64",
                                     threads="2", scope=scope) if "layout" not in pp]
        if sp:
            r = sp[0]
            roof = r["ms"] * r["bw_frac"]  # bytes read / probe bandwidth
            row(what, f"{r['ms']:.3f} ms vs {roof:.3f} ms = {r['ms'] / roof:.2f}x", r["ms"] / roof <= 1.3)
    q8 = [r for n, pp, r in find(runs, op="decode", kv="q8_0", L="65536", budget="dense", score="mean", B="64",
                                 threads="2") if "layout" not in pp]
    if q8 and tm:
        x = tm[0]["ms"] / q8[0]["ms"]
        row("q8_0 dense >= 1.7x faster than f16 dense (token-major)",
            f"{q8[0]['ms']:.2f} vs {tm[0]['ms']:.2f} ms = {x:.2f}x ({100 * q8[0]['bw_frac']:.0f}% of the probe)", x >= 1.7)
    floors = []
    for kv in ["f16", "q8_0"]:
        for th in ["1", "2"]:
            c = one(runs, op="compute", kv=kv, L="65536", budget="dense", threads=th)
            d = [r for n, pp, r in find(runs, op="decode", kv=kv, L="65536", budget="dense", score="mean", B="64",
                                        threads=th) if "layout" not in pp]
            if c and "mem_floor_ms" in c:
                mixf = f"{c['mix_floor_ms']:.2f}" if "mix_floor_ms" in c else "-"
                floors.append(f"| {kv} | {th} | {mixf} | {c['ms']:.2f} | {c['mem_floor_ms']:.2f} | " +
                              (f"{d[0]['ms']:.2f}" if d else "-") + " |")
    sparse = []
    for lay in ["token_major", "head_major"]:
        def pick(rows):
            return [r for n, pp, r in rows if pp.get("layout", "token_major") == lay]
        d = pick(find(runs, op="decode", kv="f16", L="65536", budget="5%", score="mean", B="64", threads="2"))
        reads = {pf: pick(find(runs, op="kept_read", prefetch=pf, kv="f16", L="65536", budget="5%", threads="2"))
                 for pf in ["none", "next_block"]}
        if not d or not all(reads.values()):
            continue
        r = d[0]
        roof = r["ms"] * r["bw_frac"]
        kr = min(reads["none"][0]["ms"], reads["next_block"][0]["ms"])
        # The roofline with the kept blocks at what their access pattern measured, not at the probe.
        floor = roof - reads["none"][0]["probe_ms"] + kr
        comp = one(runs, op="compute", kv="f16", L="65536", budget="5%", threads="2") if lay == "token_major" else None
        sparse.append(f"| {lay} | {r['ms']:.3f} | {roof:.3f} | {reads['none'][0]['ms']:.3f} / "
                      f"{reads['next_block'][0]['ms']:.3f} | {reads['none'][0]['probe_ms']:.3f} | {floor:.3f} | "
                      f"{r['ms'] / floor:.2f}x | " + (f"{comp['ms']:.3f}" if comp else "-") + " |")
    if sparse:
        p("\n#### What bounds the 5% rows in this run (64K, f16, 2 threads)\n")
        p("Kept read: the blocks the call keeps (the same selections), read with no arithmetic by the probe's loop "
          "(rows `kept_read/...`), without / with a software prefetch one block ahead; probe time: those bytes at the "
          "read probe. Pattern floor: the roofline with the kept blocks at the faster kept read instead of the probe. "
          "Compute-only: the 5% call on the L2-resident view of the dense compute rows (selection included).\n")
        p("| layout | ours ms | roofline ms | kept read ms (none / prefetch) | kept bytes at probe ms | "
          "pattern floor ms | ours / floor | compute-only ms |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|")
        o.extend(sparse)
    if floors:
        p("\n#### What bounds dense decode in this run (64K, token-major)\n")
        p("Compute-only: the same call with K/V L2-resident (rows `compute/...`); memory floor: the DRAM "
          "row's bytes at the read probe; mix floor: the call's FLOPs at the rate the fp16 score step's "
          "operand mix reaches in an L1-resident loop (the probe `ScoreMixGFlops`: conversions and loads "
          "beside the FMAs), the practical arithmetic floor of fp32 math on fp16 K/V. The memory floor "
          "cannot be beaten in principle; on a shared machine a single run can cross either.\n")
        p("| K/V | threads | mix floor ms | compute-only ms | memory floor ms | measured ms |")
        p("|---|---:|---:|---:|---:|---:|")
        o.extend(floors)
    return "\n".join(o) + "\n"


def write_section(path, text):
    with open(path) as f:
        doc = f.read()
    block = BEGIN + "\n" + text + END
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n## ggml (llama.cpp) side by side, q8_0, token-major decode\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)
    print(f"wrote the ggml section of {path}")


def roofline_speedup(s, B, e, r):
    return 1.0 / (s + 2.0 * r / (e * B))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--markdown")
    ap.add_argument("--plot")
    ap.add_argument("--performance", help="docs/performance.md: rewrite its ggml ratio section")
    a = ap.parse_args()
    ctx, runs = load(a.json)
    isa = ctx.get("isa", "?")
    out = []
    p = out.append
    bw1, bw2 = float(ctx.get("read_bw_GBs_threads1", 0)), float(ctx.get("read_bw_GBs_threads2", 0))
    f1, f2 = float(ctx.get("fma_peak_GFLOPs_threads1", 0)), float(ctx.get("fma_peak_GFLOPs_threads2", 0))
    m1, m2 = float(ctx.get("score_mix_GFLOPs_threads1", 0)), float(ctx.get("score_mix_GFLOPs_threads2", 0))
    mix = f", with the fp16 score step's operand mix {m1:.0f} / {m2:.0f}" if m1 > 0 else ""
    p(f"Machine limits measured in the same run: DRAM read {bw1:.1f} GB/s (1 thread), {bw2:.1f} GB/s "
      f"(2 threads); fp32 FMA peak {f1:.0f} / {f2:.0f} GFLOP/s{mix}; ISA {isa}; "
      f"{ctx.get('num_cpus', '?')} CPUs, {ctx.get('date', '')}.\n")

    budgets = ["dense", "25%", "10%", "5%", "2%"]
    p("### Decode, 32 q / 8 kv heads, head_dim 128, block 64, mean scoring, token-major cache (median ms)\n")
    p("| K/V | L | threads | " + " | ".join(budgets) + " | dense GB/s | dense % of read BW |")
    p("|---|---:|---:|" + "---:|" * len(budgets) + "---:|---:|")
    for kv in ["f16", "bf16", "f32", "q8_0"]:
        for L in ["4096", "16384", "65536", "131072"]:
            for th in ["1", "2"]:
                row = []
                dense = None
                for bu in budgets:
                    r = one(runs, op="decode", kv=kv, L=L, budget=bu, score="mean", B="64", threads=th)
                    if bu == "dense":
                        dense = r
                    row.append(f"{r['ms']:.3f}" if r else "-")
                if all(x == "-" for x in row):
                    continue
                gbs = f"{dense['GB/s']:.1f}" if dense else "-"
                frac = f"{100 * dense['bw_frac']:.0f}%" if dense else "-"
                p(f"| {kv} | {L} | {th} | " + " | ".join(row) + f" | {gbs} | {frac} |")

    p("\n### Sparse vs dense at 64K, fp16, 2 threads: speedup and share of the roofline\n")
    p("Roofline speedup <= 1/(s + 2r/(e B)) with s the kept fraction, e = 2 bytes, r = 1 (mean) or "
      "2 (bound summaries).\n")
    p("| scoring | B | budget | ms | speedup vs our dense | roofline | % of roofline |")
    p("|---|---:|---:|---:|---:|---:|---:|")
    dense = one(runs, op="decode", kv="f16", L="65536", budget="dense", score="mean", B="64", threads="2")
    for sc, B in [("mean", "64"), ("bound", "64"), ("mean", "32"), ("mean", "128")]:
        for bu in ["25%", "10%", "5%", "2%"]:
            r = one(runs, op="decode", kv="f16", L="65536", budget=bu, score=sc, B=B, threads="2")
            if not r or not dense:
                continue
            s = r.get("kept", float(bu[:-1]) / 100)
            roof = roofline_speedup(s, int(B), 2, 2 if sc == "bound" else 1)
            sp = dense["ms"] / r["ms"]
            p(f"| {sc} | {B} | {bu} | {r['ms']:.3f} | {sp:.1f}x | {roof:.1f}x | {100 * sp / roof:.0f}% |")

    p("\n### Head-major cache (as ggml's flash attention reads it), fp16, 64K, 2 threads\n")
    p("| budget | ms | GB/s | % of read BW |")
    p("|---|---:|---:|---:|")
    for bu in ["dense", "5%"]:
        r = one(runs, op="decode", kv="f16", layout="head_major", L="65536", budget=bu, threads="2")
        if r:
            p(f"| {bu} | {r['ms']:.3f} | {r['GB/s']:.1f} | {100 * r['bw_frac']:.0f}% |")

    p("\n### Against the OpenBLAS baseline (GEMM + softmax + GEMM, fp32 K/V), dense decode\n")
    p("| L | threads | OpenBLAS ms | ours fp32 ms | ours fp16 ms | fp32 speedup | fp16 speedup |")
    p("|---:|---:|---:|---:|---:|---:|---:|")
    for L in ["4096", "16384", "65536", "131072"]:
        for th in ["1", "2"]:
            base = one(runs, op="baseline_openblas", L=L, threads=th)
            o32 = one(runs, op="decode", kv="f32", L=L, budget="dense", score="mean", B="64", threads=th)
            o16 = one(runs, op="decode", kv="f16", L=L, budget="dense", score="mean", B="64", threads=th)
            if base and o32 and o16:
                p(f"| {L} | {th} | {base['ms']:.2f} | {o32['ms']:.2f} | {o16['ms']:.2f} | "
                  f"{base['ms'] / o32['ms']:.1f}x | {base['ms'] / o16['ms']:.1f}x |")

    p("\n### Selection share, short contexts, threads, prefill, batch\n")
    sel = {sc: one(runs, op="select", score=sc, L="65536") for sc in ["mean", "bound"]}
    call1 = one(runs, op="decode", kv="f16", L="65536", budget="5%", score="mean", B="64", threads="1")
    if sel["mean"] and call1:
        p(f"- Selection alone (scoring + top-k, 1 thread) at 64K, 5%: mean {sel['mean']['ms']:.3f} ms, "
          f"bound {sel['bound']['ms']:.3f} ms; the whole sparse call (mean, 1 thread) {call1['ms']:.3f} ms: "
          f"selection is {100 * sel['mean']['ms'] / call1['ms']:.0f}% of the call.")
    tiny = one(runs, op="decode", kv="f16", L="64", budget="dense", threads="1")
    if tiny:
        p(f"- Fixed per-call cost (L = 64, one block, dense, 1 thread): {1000 * tiny['ms']:.1f} us.")
    d4 = one(runs, op="decode", kv="f16", L="4096", budget="dense", score="mean", B="64", threads="1")
    s4 = one(runs, op="decode", kv="f16", L="4096", budget="10%", score="mean", B="64", threads="1")
    if d4 and s4:
        p(f"- L = 4K, 1 thread: dense {d4['ms']:.3f} ms, 10% {s4['ms']:.3f} ms "
          f"({d4['ms'] / s4['ms']:.1f}x).")
    for kv in ["f16"]:
        a1 = one(runs, op="decode", kv=kv, L="65536", budget="dense", score="mean", B="64", threads="1")
        a2 = one(runs, op="decode", kv=kv, L="65536", budget="dense", score="mean", B="64", threads="2")
        if a1 and a2:
            p(f"- Threads, dense {kv} 64K: 1 thread {a1['ms']:.2f} ms, 2 threads {a2['ms']:.2f} ms "
              f"({a1['ms'] / a2['ms']:.2f}x).")
    for name, parts, r in sorted(find(runs, op="prefill")):
        extra = f", {r['GFLOP/s']:.0f} GFLOP/s = {100 * r['fma_frac']:.0f}% of the FMA peak" if "GFLOP/s" in r else ""
        p(f"- {name}: {r['ms']:.1f} ms{extra}.")
    for name, parts, r in sorted(find(runs, op="baseline_openblas")):
        if "prefill" in name:
            p(f"- {name}: {r['ms']:.1f} ms.")
    for name, parts, r in sorted(find(runs, op="batch")):
        p(f"- {name}: {r['ms']:.2f} ms per engine step ({r['GB/s']:.1f} GB/s of K/V).")
    peer = peer_section(ctx, runs)
    out.append("\n" + peer)
    text = "\n".join(out) + "\n"
    print(text)
    if a.performance:
        write_section(a.performance, peer)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        for L in ["4096", "16384", "65536", "131072"]:
            xs, ys = [], []
            for bu in budgets:
                r = one(runs, op="decode", kv="f16", L=L, budget=bu, score="mean", B="64", threads="2")
                if r:
                    xs.append(1.0 if bu == "dense" else float(bu[:-1]) / 100)
                    ys.append(r["ms"])
            if xs:
                ax[0].plot(xs, ys, "o-", label=f"L={L}")
        ax[0].set_xscale("log")
        ax[0].set_yscale("log")
        ax[0].set_xlabel("kept fraction of blocks")
        ax[0].set_ylabel("decode time, ms (2 threads, fp16)")
        ax[0].set_title("block-sparse decode time vs budget")
        ax[0].legend()
        if dense:
            xs, ys, roof = [], [], []
            for bu in ["25%", "10%", "5%", "2%"]:
                r = one(runs, op="decode", kv="f16", L="65536", budget=bu, score="mean", B="64", threads="2")
                if r:
                    s = r.get("kept", float(bu[:-1]) / 100)
                    xs.append(s)
                    ys.append(dense["ms"] / r["ms"])
                    roof.append(roofline_speedup(s, 64, 2, 1))
            ax[1].plot(xs, ys, "o-", label="measured (64K, fp16, mean)")
            ax[1].plot(xs, roof, "k--", label="roofline 1/(s + 2r/(eB))")
            ax[1].set_xscale("log")
            ax[1].set_xlabel("kept fraction of blocks")
            ax[1].set_ylabel("speedup over our dense")
            ax[1].set_title("speedup vs roofline")
            ax[1].legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
