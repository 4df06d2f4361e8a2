"""The engine API from Python (op.hpp mirrored): sb.AttentionOp, sb.StepRequest, sb.StepPlan,
op.run_layer, sb.merge_states. A mixed batch through run_layer equals sb.attention per request bit
for bit on every ISA and thread count; budget_scale equals the scaled budget; LSE + merge_states
over a split context equals attention over the whole against float64; bad input raises the
documented exception naming the request and the value."""
import threading

import numpy as np
import pytest

import sparsebudget as sb
from conftest import assert_close, block_mask

HQ, HKV, D, B = 8, 2, 48, 16  # GQA (group 4), head_dim not a multiple of 16
NP_DTYPE = {"f32": np.float32, "f16": np.float16}

# (context_length, num_queries, budget, paged): dense / fraction / blocks / top_p, decode and a
# prefill chunk, a zero-query request, a single token, a paged request.
BATCH = [
    (300, 1, None, False),
    (1000, 1, sb.Budget.of_fraction(0.2), False),
    (777, 1, sb.Budget.of_blocks(5), False),
    (257, 7, sb.Budget.of_top_p(0.9), False),
    (50, 0, sb.Budget.of_blocks(2), False),
    (600, 1, sb.Budget.of_fraction(0.3), True),
    (1, 1, sb.Budget.of_blocks(2), False),
    (900, 3, sb.Budget("blocks", blocks=3, sink_blocks=2, local_blocks=2), True),
]
PAGE = 32


class Request:
    """One request's per-layer arrays (K/V contiguous or paged) and per-layer summaries."""

    def __init__(self, rng, L, nq, budget, paged, layers, kv_dtype, scoring):
        self.L, self.nq, self.budget, self.paged = L, nq, budget, paged
        dt = NP_DTYPE[kv_dtype]
        self.q = [rng.standard_normal((nq, HQ, D), dtype=np.float32) for _ in range(layers)]
        if paged:
            npages = (L + PAGE - 1) // PAGE
            pool = npages + 3
            self.page_table = rng.permutation(pool)[:npages].astype(np.int32)
            self.k = [rng.standard_normal((pool, PAGE, HKV, D), dtype=np.float32).astype(dt) for _ in range(layers)]
            self.v = [rng.standard_normal((pool, PAGE, HKV, D), dtype=np.float32).astype(dt) for _ in range(layers)]
        else:
            self.page_table = None
            self.k = [rng.standard_normal((L, HKV, D), dtype=np.float32).astype(dt) for _ in range(layers)]
            self.v = [rng.standard_normal((L, HKV, D), dtype=np.float32).astype(dt) for _ in range(layers)]
        self.summaries = []
        for l in range(layers):
            s = sb.BlockSummaries(HKV, D, block_size=B, max_tokens=L,
                                  mean=scoring == "mean", bound=scoring == "bound")
            s.append(self.k[l], num_tokens=L, page_table=self.page_table)
            self.summaries.append(s)

    def step_request(self):
        return sb.StepRequest(self.q[0], self.k[0], budget=self.budget, context_length=self.L,
                              page_table=self.page_table)

    def attention(self, l, budget=None, scoring="bound"):
        return sb.attention(self.q[l], self.k[l], self.v[l], block_size=B,
                            budget=self.budget if budget is None else budget, scoring=scoring,
                            summaries=self.summaries[l], page_table=self.page_table, context_length=self.L)


def make_batch(kv_dtype, scoring, layers=2, seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    return [Request(rng, *spec, layers, kv_dtype, scoring) for spec in batch]


def layer_args(reqs, l):
    return ([r.q[l] for r in reqs], [r.k[l] for r in reqs], [r.v[l] for r in reqs],
            [r.summaries[l] for r in reqs])


@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
@pytest.mark.parametrize("scoring", ["bound", "mean"])
def test_mixed_batch_equals_attention_bitwise(isa, kv_dtype, scoring):
    op = sb.AttentionOp(HQ, HKV, D, block_size=B, kv_dtype=kv_dtype, scoring=scoring)
    assert op.isa == isa and op.kv_dtype == kv_dtype and op.scoring == scoring
    reqs = make_batch(kv_dtype, scoring)
    plan = op.plan([r.step_request() for r in reqs])
    assert plan.num_requests == len(reqs) and plan.workspace_bytes > 0
    assert plan.runs_dense(0) and not plan.runs_dense(1)
    sparse_seen = 0
    for l in range(2):
        want = [r.attention(l, scoring=scoring) for r in reqs]
        for threads in (None, 2, 3):
            outs, stats = op.run_layer(plan, *layer_args(reqs, l), num_threads=threads, return_stats=True)
            assert len(outs) == len(reqs)
            for i, (got, ref) in enumerate(zip(outs, want)):
                assert got.shape == ref.shape and got.dtype == np.float32
                assert np.array_equal(got, ref), f"request {i} layer {l} threads {threads} {isa} {kv_dtype}"
            sparse_seen += stats["kept_blocks"] < stats["causal_blocks"]
    assert sparse_seen, "no layer ran sparse: the batch tests nothing beyond dense"


@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_all_kv_heads_scope_equals_attention_bitwise(kv_dtype):
    # One list per query block for every kv head: the op's layer call equals sb.attention with the
    # same scope, and every kv head's rows attend over kv head 0's blocks.
    op = sb.AttentionOp(HQ, HKV, D, block_size=B, kv_dtype=kv_dtype, selection_scope="all_kv_heads")
    assert op.selection_scope == "all_kv_heads"
    assert sb.AttentionOp(HQ, HKV, D).selection_scope == "per_kv_head"
    reqs = make_batch(kv_dtype, "bound")
    plan = op.plan([r.step_request() for r in reqs])
    for l in range(2):
        for threads in (None, 2):
            outs = op.run_layer(plan, *layer_args(reqs, l), num_threads=threads)
            for i, (got, r) in enumerate(zip(outs, reqs)):
                want = sb.attention(r.q[l], r.k[l], r.v[l], block_size=B, budget=r.budget, summaries=r.summaries[l],
                                    page_table=r.page_table, context_length=r.L, selection_scope="all_kv_heads")
                assert np.array_equal(got, want), f"request {i} layer {l} threads {threads} {kv_dtype}"


def test_out_written_in_place_and_plan_reused_across_steps():
    """One StepPlan refilled every step as the contexts grow (summaries appended), outputs in
    caller arrays; the plan keeps its own copy of the page tables."""
    op = sb.AttentionOp(HQ, HKV, D, block_size=B)
    rng = np.random.default_rng(7)
    full = 700
    ks = rng.standard_normal((full, HKV, D), dtype=np.float32)
    vs = rng.standard_normal((full, HKV, D), dtype=np.float32)
    pool_k = rng.standard_normal((30, PAGE, HKV, D), dtype=np.float32)
    pool_v = rng.standard_normal((30, PAGE, HKV, D), dtype=np.float32)
    table = rng.permutation(30)[:23].astype(np.int32)  # 23 pages = 736 tokens of room
    s_contig = sb.BlockSummaries(HKV, D, block_size=B, max_tokens=full)
    s_paged = sb.BlockSummaries(HKV, D, block_size=B, max_tokens=full)
    plan = sb.StepPlan()
    plan.reserve(4)
    out = [np.full((1, HQ, D), np.nan, np.float32) for _ in range(2)]
    budget = sb.Budget.of_fraction(0.25)
    for L in (400, 401, 402, 650):
        q = rng.standard_normal((1, HQ, D), dtype=np.float32)
        k, v = ks[:L], vs[:L]
        s_contig.append(k)
        s_paged.append(pool_k, num_tokens=L, page_table=table)
        mine = table.copy()
        reqs = [sb.StepRequest(q, k, budget=budget), sb.StepRequest(q, pool_k, budget=budget, context_length=L, page_table=mine)]
        assert op.plan(reqs, plan) is plan
        mine[:] = 10**6  # the plan holds a copy: the kernels never see this
        got = op.run_layer(plan, [q, q], [k, pool_k], [v, pool_v], [s_contig, s_paged], out=out)
        assert got[0] is out[0] and got[1] is out[1]
        assert np.array_equal(out[0], sb.attention(q, k, v, block_size=B, budget=budget, summaries=s_contig))
        assert np.array_equal(out[1], sb.attention(q, pool_k, pool_v, block_size=B, budget=budget, summaries=s_paged,
                                                   page_table=table, context_length=L))


def test_budget_scale_equals_the_scaled_budget():
    assert sb.Budget.of_blocks(5).scaled(1.5).blocks == 8  # ceil(7.5)
    assert sb.Budget.of_fraction(0.3).scaled(4.0).fraction == 1.0  # capped at 1
    assert sb.Budget.of_fraction(0.2).scaled(0.5).fraction == pytest.approx(0.1)
    assert sb.Budget.of_top_p(0.9).scaled(0.5).top_p == pytest.approx(0.9)  # other modes unchanged
    assert sb.Budget.dense().scaled(3.0).mode == "dense"
    op = sb.AttentionOp(HQ, HKV, D, block_size=B)
    reqs = make_batch("f32", "bound", layers=1, seed=3)
    plan = op.plan([r.step_request() for r in reqs])
    base = op.run_layer(plan, *layer_args(reqs, 0), return_stats=True)
    for scale in (0.5, 2.0, 3.7):
        outs, stats = op.run_layer(plan, *layer_args(reqs, 0), budget_scale=scale, return_stats=True)
        assert stats["kept_blocks"] != base[1]["kept_blocks"], f"scale {scale} changed nothing"
        for i, r in enumerate(reqs):
            want = r.attention(0, budget=r.budget.scaled(scale) if r.budget is not None else None)
            assert np.array_equal(outs[i], want), f"request {i} scale {scale}"


def lse_reference(q, k, mask, scale):
    """float64 ln sum_t exp(scale q.k_t) over the visible keys: [nq, hq]."""
    group = q.shape[1] // k.shape[1]
    k64 = np.repeat(k.astype(np.float64), group, axis=1)
    s = np.einsum("qhd,khd->hqk", q.astype(np.float64), k64) * scale
    s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    return (m[..., 0] + np.log(np.exp(s - m).sum(axis=-1))).T


def reference64(q, k, v, mask, scale):
    group = q.shape[1] // k.shape[1]
    k64 = np.repeat(k.astype(np.float64), group, axis=1)
    v64 = np.repeat(v.astype(np.float64), group, axis=1)
    s = np.where(mask, np.einsum("qhd,khd->hqk", q.astype(np.float64), k64) * scale, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", w, v64)


@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_lse_and_merge_over_a_split_context_equal_the_whole(isa, kv_dtype):
    """A decode query over keys [0, L1) and [L1, L) as two requests of one batch (a shared prefix
    and a suffix, as a cascade would split it), merged with merge_states, equals attention over
    [0, L); each part's LSE equals float64."""
    rng = np.random.default_rng(11)
    d, L, L1 = 64, 1000, 613
    op = sb.AttentionOp(HQ, HKV, d, block_size=B, kv_dtype=kv_dtype)
    q = rng.standard_normal((1, HQ, d), dtype=np.float32)
    k = rng.standard_normal((L, HKV, d), dtype=np.float32).astype(NP_DTYPE[kv_dtype])
    v = rng.standard_normal((L, HKV, d), dtype=np.float32).astype(NP_DTYPE[kv_dtype])
    parts = [(k[:L1], v[:L1]), (k[L1:], v[L1:])]
    plan = op.plan([sb.StepRequest(q, pk) for pk, _ in parts])
    outs, lses = op.run_layer(plan, [q, q], [pk for pk, _ in parts], [pv for _, pv in parts], [None, None], lse=True)
    scale = 1.0 / np.sqrt(d)
    for (pk, _), lse in zip(parts, lses):
        assert lse.shape == (1, HQ) and lse.dtype == np.float32
        want = lse_reference(q, pk, np.ones((HQ, 1, len(pk)), bool), scale)
        assert np.abs(lse - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    v_m, lse_m = sb.merge_states(outs[0], lses[0], outs[1], lses[1])
    assert v_m is outs[0] and lse_m is lses[0]  # in place
    ref = reference64(q, k, v, np.ones((HQ, 1, L), bool), scale)
    err = np.abs(v_m - ref).max()
    assert err <= 1e-5, f"merged vs float64: {err:.3g}"
    assert_close(v_m, ref, d, what=f"merged {isa} {kv_dtype}")
    assert np.abs(lse_m - lse_reference(q, k, np.ones((HQ, 1, L), bool), scale)).max() <= 1e-5 * np.log(L) * 2


def test_lse_of_a_sparse_request_is_over_the_selected_blocks():
    rng = np.random.default_rng(5)
    L, nq = 1500, 3
    op = sb.AttentionOp(HQ, HKV, D, block_size=B)
    q = rng.standard_normal((nq, HQ, D), dtype=np.float32)
    k = rng.standard_normal((L, HKV, D), dtype=np.float32)
    v = rng.standard_normal((L, HKV, D), dtype=np.float32)
    s = sb.BlockSummaries(HKV, D, block_size=B, max_tokens=L)
    s.append(k)
    budget = sb.Budget.of_fraction(0.2)
    plan = op.plan([sb.StepRequest(q, k, budget=budget)])
    assert not plan.runs_dense(0)
    (out,), (lse,) = op.run_layer(plan, [q], [k], [v], [s], lse=True)
    idx, cnt, _ = sb.select_blocks(q, s, budget=budget)
    mask = block_mask(nq, L, HQ, HKV, B, (idx, cnt))
    scale = 1.0 / np.sqrt(D)
    ref = reference64(q, k, v, mask, scale)
    assert_close(out, ref, D, what="sparse out")
    assert np.abs(lse - lse_reference(q, k, mask, scale)).max() <= 1e-5 * np.log(L) * 2


def test_merge_states_rows_and_empty_state():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((5, 3, 16), dtype=np.float32)
    vo = rng.standard_normal((5, 3, 16), dtype=np.float32)
    lse = rng.standard_normal((5, 3), dtype=np.float32)
    lo = rng.standard_normal((5, 3), dtype=np.float32)
    lo[0, 0] = -np.inf  # the other state saw no key: row unchanged
    v0, l0 = v.copy(), lse.copy()
    sb.merge_states(v, lse, vo, lo)
    a = np.exp(l0.astype(np.float64) - np.maximum(l0, lo))
    b = np.exp(lo.astype(np.float64) - np.maximum(l0, lo))
    want = (a[..., None] * v0 + b[..., None] * vo) / (a + b)[..., None]
    assert np.abs(v - want).max() <= 1e-6 and np.array_equal(v[0, 0], v0[0, 0])
    assert np.abs(lse - (np.maximum(l0, lo) + np.log(a + b))).max() <= 1e-6
    # a strided v (every other row of a larger array) is one row stride: accepted
    big = np.zeros((10, 16), np.float32)
    sb.merge_states(big[::2], np.full(5, -np.inf, np.float32), vo[:, 0], np.zeros(5, np.float32))
    assert np.array_equal(big[::2], vo[:, 0]) and not big[1::2].any()


def test_concurrent_run_layer_on_one_plan_takes_turns():
    op = sb.AttentionOp(HQ, HKV, D, block_size=B)
    reqs = make_batch("f32", "bound", layers=1, seed=9)
    plan = op.plan([r.step_request() for r in reqs])
    want = [r.attention(0) for r in reqs]
    errors = []

    def work():
        try:
            for _ in range(3):
                outs = op.run_layer(plan, *layer_args(reqs, 0))
                if not all(np.array_equal(o, w) for o, w in zip(outs, want)):
                    errors.append("mismatch")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---- bad input: every row raises the documented type, naming the request and the value --------

def small():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 4, 16), dtype=np.float32)
    k = rng.standard_normal((100, 2, 16), dtype=np.float32)
    s = sb.BlockSummaries(2, 16, block_size=16, max_tokens=100)
    s.append(k)
    return sb.AttentionOp(4, 2, 16, block_size=16), q, k, s


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_kv_heads=3), ValueError, "3"),
    (dict(block_size=24), ValueError, "block_size.*24"),
    (dict(head_dim=0), ValueError, "head_dim.*0"),
    (dict(kv_dtype="f64"), ValueError, "'f64'"),
    (dict(scoring="max"), ValueError, "'max'"),
    (dict(selection_scope="per_head"), ValueError, "'per_head'"),
])
def test_bad_op_config(kwargs, exc, match):
    args = dict(num_q_heads=4, num_kv_heads=2, head_dim=16)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        sb.AttentionOp(args.pop("num_q_heads"), args.pop("num_kv_heads"), args.pop("head_dim"), **args)


def bad_plan_rows():
    """(name, make requests from (q, k), exception, message regex)."""
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((4, 32, 2, 16), dtype=np.float32)
    return [
        ("q float64", lambda q, k: [sb.StepRequest(q, k), sb.StepRequest(q.astype(np.float64), k)],
         TypeError, "request 1: q must be float32, got float64"),
        ("q heads", lambda q, k: [sb.StepRequest(np.zeros((1, 3, 16), np.float32), k)],
         ValueError, r"request 0: q has shape \(1, 3, 16\)"),
        ("q 2-D", lambda q, k: [sb.StepRequest(q[0], k)], ValueError, r"request 0: q must have shape.*\(4, 16\)"),
        ("q not an array", lambda q, k: [sb.StepRequest([1.0], k)], TypeError, "request 0: q must be a numpy array, got list"),
        ("k f16 in an f32 op", lambda q, k: [sb.StepRequest(q, k.astype(np.float16))], TypeError, "request 0: k/v dtype float16"),
        ("k head_dim", lambda q, k: [sb.StepRequest(q, k[:, :, :8])], ValueError, "request 0: k has 2 kv heads x head_dim 8"),
        ("k last axis strided", lambda q, k: [sb.StepRequest(q, np.zeros((100, 2, 32), np.float32)[:, :, ::2])],
         ValueError, "request 0: k must be contiguous in its last axis"),
        ("context too long", lambda q, k: [sb.StepRequest(q, k, context_length=500)],
         ValueError, "request 0: context_length 500 exceeds the 100 tokens"),
        ("queries beyond context", lambda q, k: [sb.StepRequest(np.zeros((5, 4, 16), np.float32), k, context_length=3)],
         ValueError, "request 0: .*3"),
        ("page id", lambda q, k: [sb.StepRequest(q, pool, page_table=np.array([0, 1, 9], np.int32))],
         ValueError, r"request 0: page_table\[2\] = 9"),
        ("page table int64", lambda q, k: [sb.StepRequest(q, pool, page_table=np.array([0, 1], np.int64))],
         TypeError, "request 0: page_table must be int32, got int64"),
        ("page size", lambda q, k: [sb.StepRequest(q, pool[:, :24], page_table=np.array([0], np.int32))],
         ValueError, "request 0: .*page_size.*24"),
        ("bad budget", lambda q, k: [sb.StepRequest(q, k), sb.StepRequest(q, k, budget=sb.Budget.of_fraction(1.5))],
         ValueError, "request 1: .*fraction.*1.5"),
        ("budget type", lambda q, k: [sb.StepRequest(q, k, budget=3)], TypeError, "request 0: budget must be"),
        ("out shape", lambda q, k: [sb.StepRequest(q, k, out=np.zeros((2, 4, 16), np.float32))],
         ValueError, r"request 0: out must have the shape of q \(1, 4, 16\), got \(2, 4, 16\)"),
        ("not a request", lambda q, k: [sb.StepRequest(q, k), (q, k)], TypeError, r"requests\[1\] must be a sparsebudget.StepRequest, got tuple"),
        ("too many", lambda q, k: [sb.StepRequest(q, k)] * (sb.MAX_STEP_REQUESTS + 1), ValueError, "65536.*65537"),
    ]


@pytest.mark.parametrize("name, make, exc, match", bad_plan_rows(), ids=[r[0] for r in bad_plan_rows()])
def test_bad_plan_input(name, make, exc, match):
    op, q, k, s = small()
    plan = op.plan([sb.StepRequest(q, k, budget=sb.Budget.of_blocks(2))])
    with pytest.raises(exc, match=match):
        op.plan(make(q, k), plan)
    # a failed plan holds no batch: its layers are refused, not run on the old batch
    assert plan.num_requests == 0
    with pytest.raises(ValueError, match="holds no valid batch"):
        op.run_layer(plan, [], [], [], [])


def bad_layer_rows():
    """(name, args transform, exception, message regex); the plan has two requests over (q, k)."""
    z = np.zeros((200, 2, 16), np.float32)
    return [
        ("threads 65", lambda a: dict(a, num_threads=65), ValueError, r"num_threads must be in \[1, 64\].*got 65"),
        ("threads 0", lambda a: dict(a, num_threads=0), ValueError, "got 0"),
        ("threads 100000", lambda a: dict(a, num_threads=100000), ValueError, "got 100000"),
        ("q float64", lambda a: dict(a, q=[a["q"][0], a["q"][1].astype(np.float64)]), TypeError,
         "request 1: q dtype float64 differs from the plan's float32"),
        ("q shape", lambda a: dict(a, q=[np.zeros((2, 4, 16), np.float32), a["q"][1]]), ValueError,
         r"request 0: q has shape \(2, 4, 16\).*plan's layout is shape \(1, 4, 16\)"),
        ("q not array", lambda a: dict(a, q=[a["q"][0], None]), TypeError, "request 1: q must be a numpy array, got NoneType"),
        ("k strides", lambda a: dict(a, k=[z[::2], a["k"][1]]), ValueError,
         r"request 0: k has shape \(100, 2, 16\) strides \(256, 64, 4\).*strides \(128, 64, 4\)"),
        ("k tokens", lambda a: dict(a, k=[z, a["k"][1]]), ValueError, r"request 0: k has shape \(200, 2, 16\)"),
        ("v dtype", lambda a: dict(a, v=[a["v"][0], a["v"][1].astype(np.float16)]), TypeError,
         r"request 1: v \(the layout of k\) dtype float16"),
        ("v byte order", lambda a: dict(a, v=[a["v"][0].astype(">f4"), a["v"][1]]), TypeError, "request 0: v"),
        ("out shape", lambda a: dict(a, out=[None, np.zeros((1, 4, 8), np.float32)]), ValueError,
         r"request 1: out has shape \(1, 4, 8\)"),
        ("out read-only", lambda a: dict(a, out=[readonly_of(np.zeros((1, 4, 16), np.float32)), None]), ValueError,
         "request 0: out must be writeable"),
        ("count", lambda a: dict(a, q=a["q"][:1]), ValueError, "q has 1 entries, the plan 2 requests"),
        ("out count", lambda a: dict(a, out=[None]), ValueError, "out has 1 entries, the plan 2 requests"),
        ("summaries type", lambda a: dict(a, summaries=[a["summaries"][0], "s"]), TypeError,
         "request 1: summaries must be a sparsebudget.BlockSummaries or None, got str"),
        ("summaries missing", lambda a: dict(a, summaries=[None, a["summaries"][1]]), ValueError,
         "request 0: summaries are null but the budget is not dense"),
        ("summaries short", lambda a: dict(a, summaries=[a["summaries"][0], short_summaries()]), ValueError,
         "request 1: summaries cover 40 tokens, fewer than context_length 100"),
        ("budget_scale 0", lambda a: dict(a, budget_scale=0.0), ValueError, "budget_scale must be finite and > 0, got 0"),
        ("budget_scale nan", lambda a: dict(a, budget_scale=float("nan")), ValueError, "budget_scale .*nan"),
        ("budget_scale inf", lambda a: dict(a, budget_scale=float("inf")), ValueError, "budget_scale .*inf"),
    ]


def short_summaries():
    s = sb.BlockSummaries(2, 16, block_size=16, max_tokens=100)
    s.append(np.zeros((40, 2, 16), np.float32))
    return s


ROWS = bad_layer_rows()


@pytest.mark.parametrize("name, change, exc, match", ROWS, ids=[r[0] for r in ROWS])
def test_bad_layer_input(name, change, exc, match):
    op, q, k, s = small()
    plan = op.plan([sb.StepRequest(q, k, budget=sb.Budget.of_blocks(2))] * 2)
    args = dict(q=[q, q.copy()], k=[k, k.copy()], v=[k, k.copy()], summaries=[s, s])
    bad = change(args)
    with pytest.raises(exc, match=match):
        op.run_layer(plan, bad.pop("q"), bad.pop("k"), bad.pop("v"), bad.pop("summaries"), **bad)
    # the plan is still good
    outs = op.run_layer(plan, args["q"], args["k"], args["v"], args["summaries"])
    assert np.array_equal(outs[0], sb.attention(q, k, k, block_size=16, budget=sb.Budget.of_blocks(2), summaries=s))


def test_plan_from_another_op_config_is_rejected():
    op, q, k, s = small()
    other = sb.AttentionOp(4, 2, 16, block_size=32)
    plan = other.plan([sb.StepRequest(q, k)])
    with pytest.raises(ValueError, match=r"another configuration \(its block_size differs"):
        op.run_layer(plan, [q], [k], [k], [s])
    # Another softmax scale only (hostile-input pass of 2026-12-03: it ran with this op's scale).
    scaled = sb.AttentionOp(4, 2, 16, block_size=16, scale=0.5)
    plan = scaled.plan([sb.StepRequest(q, k)])
    with pytest.raises(ValueError, match=r"another configuration \(its scale differs"):
        op.run_layer(plan, [q], [k], [k], [s])
    # Another selection scope only.
    shared = sb.AttentionOp(4, 2, 16, block_size=16, selection_scope="all_kv_heads")
    plan = shared.plan([sb.StepRequest(q, k)])
    with pytest.raises(ValueError, match=r"another configuration \(its selection_scope differs"):
        op.run_layer(plan, [q], [k], [k], [s])
    with pytest.raises(ValueError, match="holds no valid batch"):
        op.run_layer(sb.StepPlan(), [], [], [], [])
    with pytest.raises(TypeError, match="plan must be a sparsebudget.StepPlan, got dict"):
        op.plan([sb.StepRequest(q, k)], {})


def test_out_layout_not_c_contiguous_needs_out_arrays():
    op, q, k, s = small()
    wide = np.zeros((1, 4, 32), np.float32)[:, :, :16]  # head stride 32 floats
    plan = op.plan([sb.StepRequest(q, k, out=wide)])
    with pytest.raises(ValueError, match="request 0: the plan's out layout is not C-contiguous"):
        op.run_layer(plan, [q], [k], [k], [None])
    (got,) = op.run_layer(plan, [q], [k], [k], [None], out=[wide])
    assert got is wide and np.array_equal(wide, sb.attention(q, k, k, block_size=16))


@pytest.mark.parametrize("args, exc, match", [
    (lambda v, l: (v, l, v[:2], l), ValueError, r"need v_other of v's shape \(3, 4, 16\)"),
    (lambda v, l: (v, l[:, :2], v, l), ValueError, r"\(3, 2\)"),
    (lambda v, l: (v.astype(np.float64), l, v, l), TypeError, "v must be float32, got float64"),
    (lambda v, l: (v, l.astype(np.float16), v, l), TypeError, "lse must be float32, got float16"),
    (lambda v, l: (v, np.zeros((4, 3), np.float32).T, v, l), ValueError, "C-contiguous"),
    (lambda v, l: (np.zeros((3, 4, 32), np.float32)[:, :, ::2], l, v, l), ValueError, "contiguous in its last axis"),
    (lambda v, l: (np.zeros((3, 5, 16), np.float32)[:, :4], l, v, l), ValueError, "rows of one stride"),
    (lambda v, l: (readonly_of(v), l, v, l), ValueError, "writeable"),
])
def test_bad_merge_states_input(args, exc, match):
    v = np.zeros((3, 4, 16), np.float32)
    lse = np.zeros((3, 4), np.float32)
    with pytest.raises(exc, match=match):
        sb.merge_states(*args(v, lse))


def readonly_of(a):
    b = a.copy()
    b.setflags(write=False)
    return b


@pytest.mark.parametrize("kv_dtype", ["bf16", "q8_0"])
def test_bf16_and_q8_0_kv_equal_attention_bitwise(kv_dtype):
    """K/V types without a numpy dtype: bf16 as uint16 bits, q8_0 as uint8 ggml blocks."""
    d = 64
    rng = np.random.default_rng(4)
    op = sb.AttentionOp(HQ, HKV, d, block_size=B, kv_dtype=kv_dtype)

    def encode(x):
        if kv_dtype == "bf16":
            return (x.view(np.uint32) >> 16).astype(np.uint16)
        return sb.quantize_q8_0(x)

    specs = [(500, 1, sb.Budget.of_fraction(0.25)), (130, 4, sb.Budget.of_blocks(3)), (64, 1, None)]
    qs, ks, vs, ss = [], [], [], []
    for L, nq, _ in specs:
        qs.append(rng.standard_normal((nq, HQ, d), dtype=np.float32))
        ks.append(encode(rng.standard_normal((L, HKV, d), dtype=np.float32)))
        vs.append(encode(rng.standard_normal((L, HKV, d), dtype=np.float32)))
        s = sb.BlockSummaries(HKV, d, block_size=B, max_tokens=L)
        s.append(ks[-1], dtype=kv_dtype)
        ss.append(s)
    plan = op.plan([sb.StepRequest(q, k, budget=b) for q, k, (_, _, b) in zip(qs, ks, specs)])
    outs = op.run_layer(plan, qs, ks, vs, ss, num_threads=2)
    for i, (L, nq, b) in enumerate(specs):
        want = sb.attention(qs[i], ks[i], vs[i], block_size=B, budget=b, summaries=ss[i], dtype=kv_dtype)
        assert np.array_equal(outs[i], want), f"request {i} {kv_dtype}"


def test_engine_loop_as_documented():
    """docs/python.md's per-step, per-layer loop, verbatim, and its figures."""
    rng = np.random.default_rng(0)
    layers, steps, page = 4, 2, 128
    lengths = [1500, 3000, 700]
    K = [rng.standard_normal((64, page, 8, 128), dtype=np.float32).astype(np.float16) for _ in range(layers)]
    V = [rng.standard_normal((64, page, 8, 128), dtype=np.float32).astype(np.float16) for _ in range(layers)]
    tables = [np.arange(0, 13, dtype=np.int32), np.arange(13, 38, dtype=np.int32), np.arange(38, 45, dtype=np.int32)]
    budgets = [sb.Budget.of_fraction(0.1), sb.Budget.of_blocks(8), None]
    layer_scale = [1.0, 0.5, 0.5, 2.0]
    max_tokens = [len(t) * page for t in tables]
    op = sb.AttentionOp(32, 8, 128, block_size=64, kv_dtype="f16", scoring="bound")   # once per model
    plan = sb.StepPlan()                                                             # once per engine
    
    # At admission: one BlockSummaries per request and layer, filled with the prompt's keys.
    summ = [[sb.BlockSummaries(8, 128, block_size=64, max_tokens=m) for _ in range(layers)] for m in max_tokens]
    for i, L in enumerate(lengths):
        for l in range(layers):
            summ[i][l].append(K[l], num_tokens=L, page_table=tables[i])
    
    q = [np.zeros((1, 32, 128), np.float32) for _ in lengths]       # this step's query rows
    for step in range(steps):
        # Every step: the new token's K/V are in the pages; fold it into the summaries, then plan.
        lengths = [L + 1 for L in lengths]
        for i, L in enumerate(lengths):
            for l in range(layers):
                summ[i][l].append(K[l], num_tokens=L, page_table=tables[i])
        reqs = [sb.StepRequest(q[i], K[0], budget=budgets[i], context_length=L, page_table=tables[i])
                for i, L in enumerate(lengths)]
        op.plan(reqs, plan)                                # validates every request once; reuses `plan`
        for l in range(layers):
            for x in q:
                x[:] = rng.standard_normal(x.shape)       # the model's q projection for layer l
            outs = op.run_layer(plan, q, [K[l]] * 3, [V[l]] * 3, [s[l] for s in summ],
                                budget_scale=layer_scale[l], num_threads=2)
    assert plan.workspace_bytes == 170304
    assert [plan.runs_dense(i) for i in range(3)] == [False, False, True]
    for i, L in enumerate(lengths):
        want = sb.attention(q[i], K[3], V[3], block_size=64, budget=budgets[i].scaled(2.0) if budgets[i] else None,
                            summaries=summ[i][3], page_table=tables[i], context_length=L)
        assert np.array_equal(outs[i], want), f"request {i}"
