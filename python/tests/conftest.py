"""Shared references for the sparsebudget pytest suite: explicit float64 softmax(QK^T)V, once in
torch (Debian's python3-torch 1.13) and once in numpy, with an optional block selection."""
import numpy as np
import pytest
import torch

import sparsebudget as sb

EPS32 = float(np.finfo(np.float32).eps)


def block_mask(nq, L, hq, hkv, block, selection=None):
    """bool [hq, nq, L]: key t is visible to query i (position L - nq + i) of head h."""
    pos = L - nq + np.arange(nq)
    t = np.arange(L)
    causal = t[None, :] <= pos[:, None]  # [nq, L]
    mask = np.broadcast_to(causal, (hq, nq, L)).copy()
    if selection is not None:
        indices, counts = selection
        group = hq // hkv
        first_qb = (L - nq) // block
        nqb = (L - 1) // block - first_qb + 1
        for h in range(hq):
            for i in range(nq):
                u = (h // group) * nqb + (pos[i] // block - first_qb)
                keep = np.zeros(L, dtype=bool)
                for j in indices[u, : counts[u]]:
                    keep[j * block:(j + 1) * block] = True
                mask[h, i] &= keep
    return mask


def reference_torch(q, k, v, block, selection=None, scale=None):
    nq, hq, d = q.shape
    L, hkv, _ = k.shape
    group = hq // hkv
    scale = 1.0 / np.sqrt(d) if not scale else scale
    qt = torch.from_numpy(np.asarray(q, dtype=np.float64))
    kt = torch.from_numpy(np.asarray(k, dtype=np.float64)).repeat_interleave(group, dim=1)
    vt = torch.from_numpy(np.asarray(v, dtype=np.float64)).repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", qt, kt) * scale
    mask = torch.from_numpy(block_mask(nq, L, hq, hkv, block, selection))
    scores = scores.masked_fill(~mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", p, vt).numpy()


def reference_numpy(q, k, v, block, selection=None, scale=None):
    nq, hq, d = q.shape
    L, hkv, _ = k.shape
    group = hq // hkv
    scale = 1.0 / np.sqrt(d) if not scale else scale
    q64, k64, v64 = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    k64 = np.repeat(k64, group, axis=1)
    v64 = np.repeat(v64, group, axis=1)
    s = np.einsum("qhd,khd->hqk", q64, k64) * scale
    s = np.where(block_mask(nq, L, hq, hkv, block, selection), s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    w = np.exp(s)
    w /= w.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", w, v64)


def assert_close(out, ref, d, loosen=1.0, what=""):
    bound = 64 * EPS32 * np.sqrt(d) * max(np.abs(ref).max(), 1e-30) * loosen
    diff = np.abs(out.astype(np.float64) - ref).max()
    assert np.isfinite(out).all(), f"{what}: non-finite output"
    assert diff <= bound, f"{what}: max|diff| {diff:.3g} > bound {bound:.3g}"


def supported_isas():
    return [i for i in ("scalar", "avx2", "avx512") if sb.isa_supported(i)]


@pytest.fixture(params=supported_isas())
def isa(request):
    sb.set_max_isa(request.param)
    assert sb.isa_active() == request.param
    yield request.param
    sb.set_max_isa("avx512")
