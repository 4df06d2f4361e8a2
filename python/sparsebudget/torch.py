"""sparsebudget.torch: the library's block selection and block-sparse attention for torch tensors.

CPU and CUDA, any float dtype in (computed in float32, as the C++ kernel does). Importing this
module imports torch; `import sparsebudget` alone does not.

Layout (PyTorch's scaled_dot_product_attention layout, with a batch axis):
  q    [batch, q_heads, num_queries, head_dim]
  k, v [batch, kv_heads, context_length, head_dim]
The queries are the LAST num_queries positions of the context (1 = decode; more = a causal prefill
chunk), kv_heads divides q_heads (GQA), exactly as in the C++ kernel (docs/kernel.md).

The selection rule is the kernel's (docs/kernel.md "The selection rule", budget.hpp):
  * a unit is one (kv head, query block); blocks are `block_size` keys by absolute position and
    query block qb sees causal blocks 0..qb;
  * forced blocks: [0, sink_blocks) and the max(local_blocks, 1) most recent blocks (always the
    own block qb);
  * block scores summed over the group's query heads and the unit's query rows:
    mean  = (sum_rows q) . key_sum(j) / count(j);  bound = sum_rows sum_d max(q_d kmin_jd, q_d kmax_jd);
  * the k best non-forced blocks are kept: higher score first, equal scores to the lower block
    index, NaN below every number;
  * k from the budget: blocks / fraction / dense through the library's own counting rule
    (`sparsebudget.Budget.resolve`, the C++ ResolveBudget), top-p from the estimated mass
    softmax_j(scale * score_j / rows) with forced blocks counted first, then the clamp to
    [min_blocks, max_blocks].
What differs from the C++ kernel is only float summation order, so a selection can differ where
two scores are within rounding of each other (tests compare tie-free cases). `attention` always
attends exactly the selected blocks; the C++ `SparseAttention` additionally falls back to dense
attention when a count budget keeps >= 90% of the blocks (kernel.md step 5), which changes which
keys are read, not the selection.

Costs: `select_blocks` is O(batch x q_heads x rows x blocks x head_dim) (bound) and sorts the
blocks of every unit; `attention` materialises the [batch, q_heads, num_queries, context] score
matrix (this is a reference/measurement path, not a fast kernel). Nothing here keeps global state;
functions are thread-safe for distinct tensors.

"""
import math

import torch

from . import _core

__all__ = [
    "BlockSummaries",
    "select_blocks",
    "attention",
    "dense_attention",
    "keep_to_selection",
    "probe_stats",
    "resolve_budgets",
]


# ------------------------------------------------------------------------------------ summaries
class BlockSummaries:
    """Per-block key summaries of a batch of K caches (the C++ BlockSummaries, batched).

    key_sum, key_min, key_max: float32 [batch, kv_heads, num_blocks, head_dim] over the tokens
    appended so far (the last block may be partial); `counts` int64 [num_blocks] tokens per block.
    `append` folds new tokens in (O(new tokens x heads x head_dim)); storage is allocated once for
    `max_tokens` tokens. min/max are exact; sums are float32 (summation order differs from C++).
    """

    def __init__(self, batch, num_kv_heads, head_dim, *, block_size=64, max_tokens, mean=True, bound=True,
                 device=None):
        _check_block_size(block_size)
        for name, val in (("batch", batch), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim),
                          ("max_tokens", max_tokens)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if not (mean or bound):
            raise ValueError("summaries must keep mean sums, bound min/max, or both")
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_tokens = max_tokens
        self.num_tokens = 0
        cap = -(-max_tokens // block_size)
        shape = (batch, num_kv_heads, cap, head_dim)
        self._sum = torch.zeros(shape, dtype=torch.float32, device=device) if mean else None
        self._min = torch.full(shape, math.inf, dtype=torch.float32, device=device) if bound else None
        self._max = torch.full(shape, -math.inf, dtype=torch.float32, device=device) if bound else None

    @classmethod
    def from_keys(cls, k, *, block_size=64, max_tokens=None, mean=True, bound=True):
        """Summaries of every token of k [batch, kv_heads, L, head_dim]; room for max_tokens (>= L)."""
        _check_4d(k, "k")
        B, H, L, D = k.shape
        s = cls(B, H, D, block_size=block_size, max_tokens=max(L, max_tokens or L, 1), mean=mean, bound=bound,
                device=k.device)
        if L:
            s.append(k)
        return s

    @property
    def batch(self):
        t = self._sum if self._sum is not None else self._min
        return t.shape[0]

    @property
    def device(self):
        t = self._sum if self._sum is not None else self._min
        return t.device

    @property
    def num_blocks(self):
        return -(-self.num_tokens // self.block_size)

    @property
    def has_mean(self):
        return self._sum is not None

    @property
    def has_bound(self):
        return self._min is not None

    @property
    def key_sum(self):
        if self._sum is None:
            raise ValueError("these summaries keep no mean sums (mean=False)")
        return self._sum[:, :, : self.num_blocks]

    @property
    def key_min(self):
        if self._min is None:
            raise ValueError("these summaries keep no min/max (bound=False)")
        return self._min[:, :, : self.num_blocks]

    @property
    def key_max(self):
        if self._max is None:
            raise ValueError("these summaries keep no min/max (bound=False)")
        return self._max[:, :, : self.num_blocks]

    @property
    def counts(self):
        nb, B = self.num_blocks, self.block_size
        c = torch.full((nb,), B, dtype=torch.int64, device=self.device)
        if nb:
            c[-1] = self.num_tokens - (nb - 1) * B
        return c

    def append(self, k_new):
        """Folds k_new [batch, kv_heads, T, head_dim] (the next T tokens) into the summaries."""
        _check_4d(k_new, "k_new")
        Bt, H, T, D = k_new.shape
        if (Bt, H, D) != (self.batch, self.num_kv_heads, self.head_dim):
            raise ValueError(f"k_new has batch x kv_heads x head_dim {Bt} x {H} x {D}, the summaries "
                             f"{self.batch} x {self.num_kv_heads} x {self.head_dim}")
        if self.num_tokens + T > self.max_tokens:
            raise ValueError(f"appending {T} tokens to {self.num_tokens} exceeds max_tokens {self.max_tokens}")
        if T == 0:
            return
        k_new = k_new.to(device=self.device, dtype=torch.float32)
        B = self.block_size
        n0 = self.num_tokens
        head = min(T, (-n0) % B)  # tokens that complete the current partial block
        if head:
            self._fold(n0 // B, k_new[:, :, :head], blocks=1)
        rest = T - head
        if rest:
            j0 = (n0 + head) // B
            nfull = -(-rest // B)
            pad = nfull * B - rest
            seg = k_new[:, :, head:]
            if pad:
                # Padding that leaves each statistic unchanged: 0 for sums, +-inf for min / max.
                self._fold_padded(j0, seg, nfull, pad)
            else:
                self._fold(j0, seg, blocks=nfull)
        self.num_tokens = n0 + T

    def _fold(self, j0, seg, blocks):
        Bt, H, T, D = seg.shape
        x = seg.reshape(Bt, H, blocks, T // blocks, D)
        sl = slice(j0, j0 + blocks)
        if self._sum is not None:
            self._sum[:, :, sl] += x.sum(3)
        if self._min is not None:
            self._min[:, :, sl] = torch.minimum(self._min[:, :, sl], x.amin(3))
            self._max[:, :, sl] = torch.maximum(self._max[:, :, sl], x.amax(3))

    def _fold_padded(self, j0, seg, blocks, pad):
        Bt, H, T, D = seg.shape
        sl = slice(j0, j0 + blocks)
        shape = (Bt, H, blocks, self.block_size, D)
        if self._sum is not None:
            self._sum[:, :, sl] += torch.nn.functional.pad(seg, (0, 0, 0, pad)).reshape(shape).sum(3)
        if self._min is not None:
            lo = torch.nn.functional.pad(seg, (0, 0, 0, pad), value=math.inf).reshape(shape).amin(3)
            hi = torch.nn.functional.pad(seg, (0, 0, 0, pad), value=-math.inf).reshape(shape).amax(3)
            self._min[:, :, sl] = torch.minimum(self._min[:, :, sl], lo)
            self._max[:, :, sl] = torch.maximum(self._max[:, :, sl], hi)

    def index_select(self, rows):
        """New summaries holding batch rows `rows` (a LongTensor; repeats allowed), same capacity."""
        out = BlockSummaries.__new__(BlockSummaries)
        out.__dict__.update(self.__dict__)
        rows = rows.to(self.device)
        out._sum = self._sum.index_select(0, rows) if self._sum is not None else None
        out._min = self._min.index_select(0, rows) if self._min is not None else None
        out._max = self._max.index_select(0, rows) if self._max is not None else None
        return out


# ---------------------------------------------------------------------------------- budgets
def _as_budget(b):
    if b is None or (isinstance(b, str) and b == "dense"):
        return _core.Budget.dense()
    if isinstance(b, _core.Budget):
        b.validate()
        return b
    raise TypeError(f"a budget must be None, 'dense' or a sparsebudget.Budget, got {type(b).__name__}")


def _budget_list(budget, batch):
    if isinstance(budget, (list, tuple)):
        if len(budget) != batch:
            raise ValueError(f"{len(budget)} budgets for a batch of {batch}")
        return [_as_budget(b) for b in budget]
    b = _as_budget(budget)
    return [b] * batch


def resolve_budgets(budgets, causal_blocks):
    """Per budget, what it keeps of `causal_blocks` blocks: (sink_end, local_begin, forced, scored)
    lists. Count modes use the library's ResolveBudget (Budget.resolve); for top-p `scored` is the
    clamp bound on the forced count (the mass decides the rest, in select_blocks)."""
    sink_end, local_begin, forced, scored = [], [], [], []
    cache = {}
    for b in budgets:
        key = (b.mode, b.blocks, b.fraction, b.top_p, b.min_blocks, b.max_blocks, b.sink_blocks, b.local_blocks)
        r = cache.get(key)
        if r is None:
            res = b.resolve(causal_blocks)
            se = min(b.sink_blocks, causal_blocks)
            lb = max(se, causal_blocks - max(1, b.local_blocks))
            r = cache[key] = (se, lb, res["forced_blocks"], res["scored_blocks"])
        sink_end.append(r[0])
        local_begin.append(r[1])
        forced.append(r[2])
        scored.append(r[3])
    return sink_end, local_begin, forced, scored


# -------------------------------------------------------------------------------- selection
def _rank(scores, cand):
    """Rank (0 = best) of every block among the candidates, by the kernel's order: higher score
    first, NaN last, equal scores to the lower index. Non-candidates rank after every candidate.
    Three stable sorts compose: the last one is the primary key."""
    s = scores.masked_fill(torch.isnan(scores), -math.inf)
    o1 = torch.sort(s, dim=-1, descending=True, stable=True).indices
    cls = torch.where(cand, torch.isnan(scores).to(torch.int8), torch.full_like(scores, 2, dtype=torch.int8))
    o2 = torch.sort(cls.gather(-1, o1), dim=-1, stable=True).indices
    order = o1.gather(-1, o2)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order).contiguous())
    return rank, order


def _unit_scores(qrows, summaries, nb, scoring, group):
    """Scores [batch, kv_heads, nb] of one query block; qrows [batch, q_heads, rows, head_dim]."""
    Bt, Hq, R, D = qrows.shape
    H = Hq // group
    q = qrows.float().reshape(Bt, H, group, R, D)
    if scoring == "mean":
        qsum = q.sum(dim=(2, 3))  # sum over the group's heads and the unit's rows
        ks = summaries.key_sum[:, :, :nb]
        return torch.einsum("bhd,bhjd->bhj", qsum, ks) / summaries.counts[:nb].to(torch.float32)
    kmin = summaries.key_min[:, :, :nb]
    kmax = summaries.key_max[:, :, :nb]
    # Quest's bound, summed over d, then over the group's heads and rows (row by row for memory).
    total = None
    for r in range(R):
        qg = q[:, :, :, r, None, :]  # [B, H, g, 1, D]
        s = torch.maximum(qg * kmin[:, :, None], qg * kmax[:, :, None]).sum(-1).sum(2)
        total = s if total is None else total + s
    return total


def select_blocks(q, summaries, budget=None, *, scoring="bound", scale=None, context_length=None,
                  selection_scope="per_kv_head"):
    """The kernel's block selection for every unit.

    q [batch, q_heads, num_queries, head_dim]; summaries: a BlockSummaries of the batch's K;
    budget: None/'dense', a sparsebudget.Budget, or a list of them (one per batch row).
    context_length defaults to summaries.num_tokens. selection_scope 'all_kv_heads': one list per
    query block for every kv head, ranked by the scores summed over the kv heads (attention.hpp's
    selection rule, Scope). Returns keep, bool
    [batch, kv_heads, num_query_blocks, num_blocks]: keep[b, h, u, j] = block j is attended by
    query block first_query_block + u of kv head h (False past the causal blocks).
    """
    _check_4d(q, "q")
    if not isinstance(summaries, BlockSummaries):
        raise TypeError("summaries must be a sparsebudget.torch.BlockSummaries")
    if scoring not in ("mean", "bound"):
        raise ValueError(f"scoring must be 'mean' or 'bound', got {scoring!r}")
    if selection_scope not in ("per_kv_head", "all_kv_heads"):
        raise ValueError(f"selection_scope must be 'per_kv_head' or 'all_kv_heads', got {selection_scope!r}")
    all_heads = selection_scope == "all_kv_heads"
    Bt, Hq, nq, D = q.shape
    H = summaries.num_kv_heads
    if Bt != summaries.batch or D != summaries.head_dim:
        raise ValueError(f"q batch x head_dim {Bt} x {D} differs from the summaries' "
                         f"{summaries.batch} x {summaries.head_dim}")
    if Hq % H:
        raise ValueError(f"kv heads {H} must divide q heads {Hq}")
    if scoring == "mean" and not summaries.has_mean or scoring == "bound" and not summaries.has_bound:
        raise ValueError(f"summaries do not keep what scoring '{scoring}' needs")
    L = summaries.num_tokens if context_length is None else int(context_length)
    if L > summaries.num_tokens:
        raise ValueError(f"summaries cover {summaries.num_tokens} tokens, fewer than context_length {L}")
    if nq > L or L < 1:
        raise ValueError(f"num_queries {nq} must be in [1, context_length {L}]")
    group = Hq // H
    Bs = summaries.block_size
    sc = 1.0 / math.sqrt(D) if not scale else float(scale)
    budgets = _budget_list(budget, Bt)
    first_qb = (L - nq) // Bs
    nb_all = -(-L // Bs)
    nqb = nb_all - first_qb
    dev = q.device
    keep = torch.zeros(Bt, H, nqb, nb_all, dtype=torch.bool, device=dev)
    for u in range(nqb):
        qb = first_qb + u
        nb = qb + 1
        r0 = max(qb * Bs, L - nq) - (L - nq)
        r1 = min((qb + 1) * Bs, L) - (L - nq)
        rows = (r1 - r0) * group
        sink_end, local_begin, forced_n, scored = resolve_budgets(budgets, nb)
        j = torch.arange(nb, device=dev)
        se = torch.tensor(sink_end, device=dev)[:, None]
        lb = torch.tensor(local_begin, device=dev)[:, None]
        forced = ((j[None] < se) | (j[None] >= lb))[:, None, :].expand(Bt, H, nb)  # [B, H, nb]
        topp = [b.mode == "top_p" for b in budgets]
        kcount = torch.tensor(scored, device=dev)
        needs_rank = any(topp) or any(0 < s < lb_ - se_ for s, lb_, se_ in zip(scored, local_begin, sink_end))
        if not needs_rank:
            # Nothing to rank: forced blocks only, or every block.
            keep[:, :, u, :nb] = forced | (kcount > 0)[:, None, None]
            continue
        s = _unit_scores(q[:, :, r0:r1], summaries, nb, scoring, group)  # [B, H, nb]
        if all_heads:  # every kv head ranks the sum over kv heads; the rows are all heads' rows
            s = s.sum(1, keepdim=True).expand(Bt, H, nb)
            rows = (r1 - r0) * Hq
        cand = ~forced
        rank, order = _rank(s, cand)
        if any(topp):
            kp = _top_p_counts(s, forced, cand, order, budgets, forced_n, sc / rows)
            tp = torch.tensor(topp, device=dev)[:, None]
            k = torch.where(tp, kp, kcount[:, None].expand(Bt, H))
        else:
            k = kcount[:, None].expand(Bt, H)
        keep[:, :, u, :nb] = forced | (cand & (rank < k[:, :, None]))
    return keep


def _top_p_counts(s, forced, cand, order, budgets, forced_n, inv):
    """Scored blocks per (row, kv head) for top-p: the fewest candidates, taken in rank order, that
    bring the estimated mass (forced blocks first) to top_p, then the [min, max] clamp."""
    Bt, H, nb = s.shape
    dev = s.device
    x = s * inv  # float32, as the kernel
    smax = x.masked_fill(torch.isnan(x), -math.inf).amax(-1, keepdim=True)
    xr = x - smax
    w = torch.where(torch.isnan(xr), torch.zeros_like(xr, dtype=torch.float64), xr.double().exp())
    z = w.sum(-1)
    fmass = (w * forced).sum(-1)
    wc = (w * cand).gather(-1, order)  # candidate weights in rank order (non-candidates: 0, last)
    ncand = cand.sum(-1)
    before = fmass[..., None] + torch.cumsum(wc, -1) - wc  # mass before taking the i-th candidate
    p = torch.tensor([b.top_p for b in budgets], dtype=torch.float64, device=dev)[:, None, None]
    take = ((before < p * z[..., None]) | (z[..., None] <= 0)) & (torch.arange(nb, device=dev) < ncand[..., None])
    k = take.sum(-1)
    fn = torch.tensor(forced_n, device=dev)[:, None]
    total = fn + k
    lo = torch.tensor([b.min_blocks for b in budgets], device=dev)[:, None]
    hi = torch.tensor([b.max_blocks for b in budgets], device=dev)[:, None]
    total = torch.where((lo > 0) & (total < lo), lo, total)
    total = torch.where((hi > 0) & (total > hi), hi, total)
    total = torch.clamp(torch.maximum(total, fn), max=nb)
    return torch.minimum(total - fn, ncand)


def keep_to_selection(keep, row=0):
    """The C++ selection format of one batch row: (indices int32 [units, num_blocks] padded with -1,
    counts int32 [units]) with unit = kv_head * num_query_blocks + query block offset, as numpy
    arrays for sparsebudget.attention(selection=...) / select_blocks."""
    import numpy as np

    k = keep[row].cpu()
    H, nqb, nb = k.shape
    idx = np.full((H * nqb, nb), -1, dtype=np.int32)
    cnt = np.zeros(H * nqb, dtype=np.int32)
    for h in range(H):
        for u in range(nqb):
            js = torch.nonzero(k[h, u]).flatten().numpy().astype(np.int32)
            idx[h * nqb + u, : len(js)] = js
            cnt[h * nqb + u] = len(js)
    return idx, cnt


# -------------------------------------------------------------------------------- attention
def attention(q, k, v, *, block_size=64, budget=None, scoring="bound", scale=None, summaries=None, keep=None,
              return_keep=False, selection_scope="per_kv_head"):
    """Block-sparse attention of the last num_queries positions over k/v (layout above).

    budget None/'dense' and keep None: dense causal attention. Otherwise the blocks of `keep`
    (from select_blocks) or, if not given, those select_blocks picks for `budget` (and
    `selection_scope`) from `summaries` (built from k when None). Exact softmax(scale q.k) v over the kept tokens at or
    before each query's position, in float32; returns q's dtype (and keep if return_keep).
    """
    _check_4d(q, "q")
    _check_4d(k, "k")
    _check_4d(v, "v")
    _check_block_size(block_size)
    Bt, Hq, nq, D = q.shape
    if k.shape != v.shape or k.shape[0] != Bt or k.shape[3] != D:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must be [batch {Bt}, kv_heads, L, {D}]")
    H, L = k.shape[1], k.shape[2]
    if Hq % H:
        raise ValueError(f"kv heads {H} must divide q heads {Hq}")
    if nq > L:
        raise ValueError(f"num_queries {nq} exceeds context_length {L}")
    sc = 1.0 / math.sqrt(D) if not scale else float(scale)
    sparse = keep is not None or not _is_dense(budget, Bt)
    if sparse and keep is None:
        if summaries is None:
            summaries = BlockSummaries.from_keys(k, block_size=block_size, mean=scoring == "mean",
                                                 bound=scoring == "bound")
        keep = select_blocks(q, summaries, budget, scoring=scoring, scale=scale, context_length=L,
                             selection_scope=selection_scope)
    mask = _token_mask(keep if sparse else None, Bt, H, nq, L, block_size, q.device)
    out = _masked_attention(q, k, v, mask, sc)
    if return_keep and not sparse:
        keep = _all_causal(Bt, H, nq, L, block_size, q.device)
    return (out, keep) if return_keep else out


def _all_causal(Bt, H, nq, L, Bs, dev):
    """keep of a dense budget: every causal block of every query block."""
    first_qb = (L - nq) // Bs
    nb = -(-L // Bs)
    qb = torch.arange(first_qb, nb, device=dev)
    return (torch.arange(nb, device=dev)[None, :] <= qb[:, None])[None, None].expand(Bt, H, -1, -1).clone()


def _is_dense(budget, batch):
    bl = _budget_list(budget, batch)
    return all(b.mode == "dense" for b in bl)


def _token_mask(keep, Bt, H, nq, L, Bs, dev):
    """bool [batch or 1, kv_heads or 1, nq, L]: key t visible to query row i (causal & kept block)."""
    pos = torch.arange(L - nq, L, device=dev)
    t = torch.arange(L, device=dev)
    causal = t[None, :] <= pos[:, None]  # [nq, L]
    if keep is None:
        return causal[None, None]
    first_qb = (L - nq) // Bs
    qb = pos // Bs - first_qb  # [nq]
    blk = keep.index_select(2, qb)  # [B, H, nq, nb]
    tok = blk.repeat_interleave(Bs, dim=-1)[..., :L]
    return tok & causal[None, None]


def _masked_attention(q, k, v, mask, scale):
    Bt, Hq, nq, D = q.shape
    H = k.shape[1]
    g = Hq // H
    qh = q.float().reshape(Bt, H, g, nq, D)
    s = torch.einsum("bhgqd,bhtd->bhgqt", qh, k.float()) * scale
    s = s.masked_fill(~mask[:, :, None], -math.inf)
    p = torch.softmax(s, dim=-1)
    o = torch.einsum("bhgqt,bhtd->bhgqd", p, v.float())
    return o.reshape(Bt, Hq, nq, D).to(q.dtype)


def dense_attention(q, k, v, *, scale=None):
    """Dense causal attention (queries = last positions), through scaled_dot_product_attention on
    CUDA when torch has it, else an explicit float32 softmax (query rows in chunks to bound memory)."""
    _check_4d(q, "q")
    Bt, Hq, nq, D = q.shape
    H, L = k.shape[1], k.shape[2]
    sc = 1.0 / math.sqrt(D) if not scale else float(scale)
    if Hq != H:
        k = k.repeat_interleave(Hq // H, dim=1)
        v = v.repeat_interleave(Hq // H, dim=1)
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if sdpa is not None and q.is_cuda and (nq == L or nq == 1):
        return sdpa(q, k, v, is_causal=nq > 1, scale=sc)
    out = torch.empty(Bt, Hq, nq, D, dtype=q.dtype, device=q.device)
    step = max(1, (1 << 26) // max(1, Bt * Hq * L))  # ~256 MiB of float32 scores per chunk
    for a in range(0, nq, step):
        b = min(nq, a + step)
        s = torch.matmul(q[:, :, a:b].float(), k.float().transpose(-1, -2)) * sc
        if nq > 1:
            i = torch.arange(a, b, device=q.device)[:, None] + (L - nq)
            j = torch.arange(L, device=q.device)[None, :]
            s = s.masked_fill(j > i, -math.inf)
        out[:, :, a:b] = torch.matmul(torch.softmax(s, dim=-1), v.float()).to(q.dtype)
    return out


# ---------------------------------------------------------------------------------- probe
_PROBE_KEYS = ("blocks_50", "blocks_90", "blocks_99", "entropy", "top5_mass")


def probe_stats(q_last, summaries, *, scale=None):
    """Probe statistics of the last query (probe.hpp's ProbeStatsFromSummaries, batched): mean-scored
    block mass p_j = softmax_j(scale * s_j / group), s_j = (sum of the group's q) . key_sum_j / count_j,
    in float64; blocks_50/90/99 (fewest blocks, by descending mass with ties to the lower index,
    whose cumulative mass reaches X/100), entropy (nats), top5_mass (ceil(5%) heaviest blocks), each
    averaged over kv heads. q_last [batch, q_heads, head_dim]. Returns a dict of float64 [batch]
    tensors plus num_blocks (int)."""
    if q_last.dim() != 3:
        raise ValueError(f"q_last must be [batch, q_heads, head_dim], got {tuple(q_last.shape)}")
    if not summaries.has_mean:
        raise ValueError("probe: summaries must keep mean sums (mean=True)")
    Bt, Hq, D = q_last.shape
    H = summaries.num_kv_heads
    if Hq % H or Bt != summaries.batch or D != summaries.head_dim:
        raise ValueError(f"q_last {tuple(q_last.shape)} does not fit summaries of batch {summaries.batch}, "
                         f"{H} kv heads, head_dim {summaries.head_dim}")
    nb = summaries.num_blocks
    if nb < 1:
        raise ValueError("probe: summaries hold no tokens")
    g = Hq // H
    sc = 1.0 / math.sqrt(D) if not scale else float(scale)
    qsum = q_last.float().double().reshape(Bt, H, g, D).sum(2)
    dot = torch.einsum("bhd,bhjd->bhj", qsum, summaries.key_sum.double())
    z = dot / summaries.counts.double() * (sc / g)
    z = z.masked_fill(~torch.isfinite(z), -math.inf)
    mx = z.amax(-1, keepdim=True)
    e = torch.where(torch.isfinite(z), torch.exp(z - mx), torch.zeros_like(z))
    p = e / e.sum(-1, keepdim=True)
    p = torch.where(torch.isfinite(mx), p, torch.full_like(p, 1.0 / nb))  # no finite score: uniform
    ps = torch.sort(p, dim=-1, descending=True, stable=True).values
    cum = torch.cumsum(ps, -1)
    out = {}
    for X in (50, 90, 99):
        need = (cum < X / 100.0 - 1e-12).sum(-1) + 1
        out[f"blocks_{X}"] = need.clamp(max=nb).double().mean(-1)
    out["entropy"] = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p)).sum(-1).mean(-1)
    ntop = math.ceil(0.05 * nb)
    out["top5_mass"] = ps[..., :ntop].sum(-1).mean(-1)
    out["num_blocks"] = nb
    return out


# ---------------------------------------------------------------------------------- checks
def _check_4d(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must have 4 dims [batch, heads, tokens, head_dim], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")


def _check_block_size(b):
    if not isinstance(b, int) or b < 1 or b & (b - 1):
        raise ValueError(f"block_size must be a power of two, got {b!r}")
