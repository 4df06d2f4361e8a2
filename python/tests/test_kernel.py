"""The kernel from Python against explicit float64 references (torch and numpy): dense and given
block selections, GQA, prefill and decode, fp32/fp16/bf16 K/V, paged K/V, in-place outputs,
argument checking."""
import threading

import numpy as np
import pytest
import torch

import sparsebudget as sb
from conftest import assert_close, reference_numpy, reference_torch

# (q_heads, kv_heads, head_dim, block, context_length, num_queries)
SHAPES = [
    (4, 2, 64, 16, 100, 1),    # GQA decode, partial last block
    (4, 2, 64, 16, 100, 37),   # GQA prefill chunk
    (2, 2, 32, 32, 64, 64),    # full prefill
    (8, 1, 80, 16, 257, 1),    # MQA, odd head_dim, split-K
    (6, 3, 128, 64, 700, 5),   # GQA, bigger blocks
    (1, 1, 16, 16, 1, 1),      # a single token
]


def make(shape, seed, kv_dtype=np.float32):
    hq, hkv, d, block, L, nq = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, hq, d), dtype=np.float32)
    k = rng.standard_normal((L, hkv, d), dtype=np.float32)
    v = rng.standard_normal((L, hkv, d), dtype=np.float32)
    return q, k, v


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "hq%d_hkv%d_d%d_B%d_L%d_nq%d" % s)
def test_dense_matches_float64(isa, shape):
    q, k, v = make(shape, 1)
    block = shape[3]
    out = sb.attention(q, k, v, block_size=block)
    assert out.shape == q.shape and out.dtype == np.float32
    assert_close(out, reference_torch(q, k, v, block), shape[2], what=f"torch {isa} {shape}")
    assert_close(out, reference_numpy(q, k, v, block), shape[2], what=f"numpy {isa} {shape}")
    # reruns are bit-identical, threaded or not
    again = sb.attention(q, k, v, block_size=block, num_threads=2)
    assert np.array_equal(out, again)


def random_selection(shape, seed):
    """A valid selection: the own block always, plus random earlier blocks, ascending."""
    hq, hkv, d, block, L, nq = shape
    rng = np.random.default_rng(seed)
    first_qb = (L - nq) // block
    nqb = (L - 1) // block - first_qb + 1
    nb = (L + block - 1) // block
    units = hkv * nqb
    indices = np.full((units, nb), -1, dtype=np.int32)
    counts = np.zeros(units, dtype=np.int32)
    for u in range(units):
        qb = first_qb + u % nqb
        extra = [j for j in range(qb) if rng.random() < 0.4]
        keep = sorted(set(extra + [qb]))
        indices[u, : len(keep)] = keep
        counts[u] = len(keep)
    return indices, counts


@pytest.mark.parametrize("shape", SHAPES[:5], ids=lambda s: "hq%d_hkv%d_d%d_B%d_L%d_nq%d" % s)
def test_given_selection_matches_float64(isa, shape):
    q, k, v = make(shape, 2)
    block = shape[3]
    sel = random_selection(shape, 3)
    out = sb.attention(q, k, v, block_size=block, selection=sel)
    assert_close(out, reference_torch(q, k, v, block, sel), shape[2], what=f"torch sel {isa} {shape}")
    assert_close(out, reference_numpy(q, k, v, block, sel), shape[2], what=f"numpy sel {isa} {shape}")


@pytest.mark.parametrize("scoring", ["bound", "mean"])
@pytest.mark.parametrize("budget", [sb.Budget.of_blocks(2), sb.Budget.of_fraction(0.5), sb.Budget.of_top_p(0.8)],
                         ids=["blocks2", "fraction0.5", "top_p0.8"])
def test_budget_uses_the_selected_blocks(scoring, budget):
    shape = (8, 2, 64, 16, 300, 20)
    q, k, v = make(shape, 4)
    summaries = sb.BlockSummaries(2, 64, block_size=16, max_tokens=300)
    summaries.append(k[:150])
    summaries.append(k)  # incremental
    idx, counts, stats = sb.select_blocks(q, summaries, budget=budget, scoring=scoring)
    assert stats["kept_blocks"] < stats["causal_blocks"]
    out, stats2 = sb.attention(q, k, v, block_size=16, budget=budget, scoring=scoring, summaries=summaries,
                               return_stats=True)
    assert stats2["kept_blocks"] == stats["kept_blocks"]
    assert_close(out, reference_torch(q, k, v, 16, (idx, counts)), 64, what=f"{budget} {scoring}")
    # without summaries the call builds its own: same result
    assert np.array_equal(out, sb.attention(q, k, v, block_size=16, budget=budget, scoring=scoring))
    # a budget keeping everything is dense attention
    dense = sb.attention(q, k, v, block_size=16, budget=sb.Budget.of_fraction(1.0), scoring=scoring)
    assert_close(dense, reference_numpy(q, k, v, 16), 64, what="fraction 1 = dense")


@pytest.mark.parametrize("scoring", ["bound", "mean"])
def test_selection_scope_all_kv_heads_shares_one_list(scoring):
    # Decode, 4 kv heads: one list per query block for every kv head, ranked by the block scores
    # summed over all heads (the float64 ranking below), attended like any selection.
    shape = (16, 4, 64, 16, 640, 1)
    q, k, v = make(shape, 11)
    summaries = sb.BlockSummaries(4, 64, block_size=16, max_tokens=640)
    summaries.append(k)
    budget = sb.Budget.of_blocks(5)
    idx, counts, stats = sb.select_blocks(q, summaries, budget=budget, scoring=scoring,
                                          selection_scope="all_kv_heads")
    assert stats["units"] == 4 and (counts == counts[0]).all()
    for u in range(1, 4):
        np.testing.assert_array_equal(idx[u, :counts[u]], idx[0, :counts[0]])
    nb = 40
    blocks = k.astype(np.float64).reshape(nb, 16, 4, 64)
    q64 = q[0].astype(np.float64).reshape(4, 4, 64)  # [kv head, group, d]
    if scoring == "mean":
        score = np.einsum("hgd,bhd->b", q64, blocks.mean(axis=1))
    else:
        lo, hi = blocks.min(axis=1), blocks.max(axis=1)
        score = np.maximum(np.einsum("hgd,bhd->bhgd", q64, lo), np.einsum("hgd,bhd->bhgd", q64, hi)).sum(axis=(1, 2, 3))
    cand = sorted(range(1, nb - 1), key=lambda j: -score[j])
    assert set(idx[0, :counts[0]]) == {0, nb - 1, *cand[:5]}
    per_head, _, _ = sb.select_blocks(q, summaries, budget=budget, scoring=scoring)
    assert any(not np.array_equal(per_head[u], per_head[0]) for u in range(1, 4))  # the scope matters here
    out = sb.attention(q, k, v, block_size=16, budget=budget, scoring=scoring, summaries=summaries,
                       selection_scope="all_kv_heads")
    np.testing.assert_array_equal(out, sb.attention(q, k, v, block_size=16, selection=(idx, counts)))
    assert_close(out, reference_torch(q, k, v, 16, (idx, counts)), 64, what=f"all_kv_heads {scoring}")
    with pytest.raises(ValueError, match="selection_scope must be 'per_kv_head' or 'all_kv_heads', got 'layer'"):
        sb.select_blocks(q, summaries, budget=budget, selection_scope="layer")


def test_fp16_and_bf16_kv(isa):
    shape = (4, 2, 64, 16, 200, 3)
    q, k, v = make(shape, 5)
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    out = sb.attention(q, k16, v16, block_size=16)
    assert_close(out, reference_torch(q, k16.astype(np.float32), v16.astype(np.float32), 16), 64, loosen=4,
                 what="f16")
    kb = torch.from_numpy(k).to(torch.bfloat16)
    vb = torch.from_numpy(v).to(torch.bfloat16)
    kbits = kb.view(torch.int16).numpy().view(np.uint16)
    vbits = vb.view(torch.int16).numpy().view(np.uint16)
    out = sb.attention(q, kbits, vbits, block_size=16, dtype="bf16")
    assert_close(out, reference_torch(q, kb.float().numpy(), vb.float().numpy(), 16), 64, loosen=4, what="bf16")
    with pytest.raises(TypeError, match="bf16"):
        sb.attention(q, kbits, vbits, block_size=16)  # uint16 needs an explicit dtype


def test_paged_equals_contiguous(isa):
    shape = (4, 2, 64, 16, 333, 4)
    q, k, v = make(shape, 6)
    page = 32
    pages = (333 + page - 1) // page
    rng = np.random.default_rng(7)
    table = rng.permutation(pages + 3)[:pages].astype(np.int32)  # scattered, with unused pages
    kp = np.zeros((pages + 3, page, 2, 64), dtype=np.float32)
    vp = np.zeros_like(kp)
    for t in range(333):
        kp[table[t // page], t % page] = k[t]
        vp[table[t // page], t % page] = v[t]
    dense = sb.attention(q, k, v, block_size=16)
    paged = sb.attention(q, kp, vp, block_size=16, page_table=table, context_length=333)
    assert np.array_equal(dense, paged)
    budget = sb.Budget.of_blocks(3)
    assert np.array_equal(sb.attention(q, k, v, block_size=16, budget=budget),
                          sb.attention(q, kp, vp, block_size=16, budget=budget, page_table=table, context_length=333))
    # pages of 24 tokens would let a block straddle two pages: rejected, naming page_size
    k24 = np.zeros((14, 24, 2, 64), dtype=np.float32)
    with pytest.raises(ValueError, match="page_size"):
        sb.attention(q, k24, k24, block_size=16, page_table=np.arange(14, dtype=np.int32), context_length=333)


def test_out_in_place_and_strided_views():
    shape = (4, 2, 64, 16, 90, 6)
    q, k, v = make(shape, 8)
    ref = sb.attention(q, k, v, block_size=16)
    out = np.full(q.shape, np.nan, dtype=np.float32)
    r = sb.attention(q, k, v, block_size=16, out=out)
    assert r is out and np.array_equal(out, ref)
    # head-major q (a transposed view) and K/V interleaved in one buffer: strides are honoured
    qh = np.ascontiguousarray(q.transpose(1, 0, 2)).transpose(1, 0, 2)
    kv = np.stack([k, v], axis=1)  # [L, 2, hkv, d]
    assert np.array_equal(sb.attention(qh, kv[:, 0], kv[:, 1], block_size=16), ref)


def test_argument_errors():
    q, k, v = make((4, 2, 64, 16, 50, 1), 9)
    with pytest.raises(TypeError, match="q must be float32"):
        sb.attention(q.astype(np.float64), k, v)
    with pytest.raises(TypeError, match="k/v must be float32 or float16"):
        sb.attention(q, k.astype(np.int32), v.astype(np.int32))
    with pytest.raises(ValueError, match="q must have shape"):
        sb.attention(q[0], k, v)
    with pytest.raises(ValueError, match="v must have the shape"):
        sb.attention(q, k, v[:10])
    with pytest.raises(ValueError, match="head_dim"):
        sb.attention(q[:, :, :32], k, v)
    with pytest.raises(ValueError, match="num_kv_heads"):
        sb.attention(q[:, :3], k, v)
    with pytest.raises(ValueError, match="block_size"):
        sb.attention(q, k, v, block_size=24)
    with pytest.raises(ValueError, match="out must have the shape"):
        sb.attention(q, k, v, out=np.zeros((2, 4, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="contiguous in its last axis"):
        sb.attention(q[:, :, ::2], k[:, :, ::2], v[:, :, ::2], block_size=16)
    with pytest.raises(ValueError, match="fraction"):
        sb.Budget("fraction", fraction=1.5)
    with pytest.raises(ValueError, match="selection indices must have shape"):
        sb.attention(q, k, v, block_size=16, selection=(np.zeros((1, 1), np.int32), np.zeros(1, np.int32)))
    with pytest.raises(TypeError, match="int32"):
        sb.attention(q, k, v, block_size=16, selection=(np.zeros((2, 4), np.int64), np.zeros(2, np.int32)))
    bad = (np.array([[1, 0, -1, -1], [0, 0, 0, 0]], np.int32), np.array([2, 1], np.int32))
    with pytest.raises(ValueError, match="ascending"):
        sb.attention(q, k, v, block_size=16, selection=bad)
    with pytest.raises(ValueError, match="unknown ISA"):
        sb.set_max_isa("sse9")


def test_threads_share_the_module():
    """Kernels release the GIL: concurrent calls from Python threads give the serial results."""
    shape = (8, 2, 64, 32, 2048, 16)
    q, k, v = make(shape, 10)
    ref = sb.attention(q, k, v, block_size=32)
    results = [None] * 4

    def work(i):
        results[i] = sb.attention(q, k, v, block_size=32)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, ref) for r in results)


def test_summaries_match_numpy():
    rng = np.random.default_rng(11)
    k = rng.standard_normal((70, 3, 32), dtype=np.float32)
    s = sb.BlockSummaries(3, 32, block_size=16, max_tokens=100)
    s.append(k)
    assert s.num_tokens == 70 and s.num_blocks == 5
    assert list(s.block_counts()) == [16, 16, 16, 16, 6]
    for b in range(5):
        kb = k[b * 16:(b + 1) * 16].transpose(1, 0, 2)  # [heads, tokens, d]
        np.testing.assert_allclose(s.key_sum()[:, b], kb.sum(axis=1), rtol=1e-5, atol=1e-5)
        assert np.array_equal(s.key_min()[:, b], kb.min(axis=1))
        assert np.array_equal(s.key_max()[:, b], kb.max(axis=1))
    with pytest.raises(ValueError, match="max_tokens"):
        s.append(np.zeros((101, 3, 32), np.float32))
    with pytest.raises(ValueError, match="kv heads"):
        s.append(np.zeros((80, 2, 32), np.float32))


def test_isa_and_version():
    assert sb.version() == sb.__version__
    assert sb.isa_detected() in ("scalar", "avx2", "avx512")
    assert sb.isa_supported("scalar")


def test_q8_0_kv_quantize_and_attend(isa):
    # ggml's q8_0 blocks as uint8 [L, kv_heads, head_dim / 32 * 34]; the reference runs on the
    # dequantized values (the kernel dequantizes exactly).
    shape = (4, 2, 64, 16, 200, 3)
    q, k, v = make(shape, 7)
    kq, vq = sb.quantize_q8_0(k), sb.quantize_q8_0(v)
    assert kq.dtype == np.uint8 and kq.shape == (200, 2, 68)
    kd, vd = sb.dequantize_q8_0(kq), sb.dequantize_q8_0(vq)
    assert kd.shape == k.shape
    d = np.abs(k.reshape(-1, 32)).max(axis=1) / 127
    assert np.all(np.abs(kd - k).reshape(-1, 32) <= (0.501 * d + 1e-6)[:, None] + np.abs(k).reshape(-1, 32) / 2048)
    # The fp16 scale is the block's first two bytes, the int8 values follow.
    blk = kq.reshape(-1, 34)
    scale = blk[:, :2].copy().view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(kd.reshape(-1, 32), scale * blk[:, 2:].view(np.int8).astype(np.float32))
    out = sb.attention(q, kq, vq, block_size=16, dtype="q8_0")
    assert_close(out, reference_torch(q, kd, vd, 16), 64, what="q8_0")
    with pytest.raises(TypeError, match="q8_0"):
        sb.attention(q, k, v, block_size=16, dtype="q8_0")  # float32 is not q8_0 bytes
    with pytest.raises(ValueError, match="34 bytes"):
        sb.attention(q, kq[:, :, :60], vq[:, :, :60], block_size=16, dtype="q8_0")
    with pytest.raises(ValueError, match="multiple of 32"):
        sb.quantize_q8_0(k[:, :, :48])
