// Attend: online-softmax attention over selected blocks, split into work items that any thread
// partition executes with identical results; and the fused select + attend call.
#include <cmath>
#include <string>

#include "attention/internal.hpp"
#include "core/checked.hpp"
#include "kernels/kernels.hpp"
#include "sparsebudget/thread_pool.hpp"

namespace sparsebudget {
namespace detail {
namespace {

Status Bad(const std::string& m) { return Status(StatusCode::kInvalidArgument, m); }

// Blocks of unit u to walk: the selection's count, or every causal block when dense.
int64_t UnitBlockCount(const AttentionPlan& p, const ConstBlockSelection& sel, int64_t u) {
  if (sel.indices == nullptr) return UnitOf(p, u).query_block + 1;
  return sel.counts[u];
}

// Split-K chunks of a unit: a function of the plan and the unit's block count only.
int64_t UnitChunks(const AttentionPlan& p, int64_t count) {
  if (p.max_chunks <= 1 || count <= kMinChunkBlocks) return 1;
  const int64_t c = (count + kMinChunkBlocks - 1) / kMinChunkBlocks;
  return c < p.max_chunks ? c : p.max_chunks;
}

struct Ctx {
  const AttentionPlan* plan;
  const kernels::KernelTable* kt;  // one table for the whole call: one ISA
  const QueryView* q;
  const KVCacheView* kv;
  ConstBlockSelection sel;
  OutputView out;
  void* ws;
  WorkspaceLayout w;
  float* lse = nullptr;          // optional [num_queries][num_q_heads]: m + ln l per row
  int64_t* kernel_ns = nullptr;  // optional: time spent in work items is added here
};

// Log-sum-exp of a finished row (m = max scaled score, l = sum exp(score - m)).
void PutLse(const Ctx& c, int32_t i, int32_t head, float m, float l) {
  if (c.lse) c.lse[static_cast<int64_t>(i) * c.plan->params.shape.num_q_heads + head] = m + std::log(l);
}

float* OutRow(const Ctx& c, int32_t i, int32_t head) {
  return c.out.data + i * c.out.token_stride + head * c.out.head_stride;
}

void RunItem(const Ctx& c, int64_t u, int64_t chunk, int64_t nchunks, int64_t count) {
  const AttentionPlan& p = *c.plan;
  const kernels::KernelTable& kt = *c.kt;
  const Unit unit = UnitOf(p, u);
  const int32_t dim = p.params.shape.head_dim;
  const int64_t cs = (count + nchunks - 1) / nchunks;
  const int64_t b0 = chunk * cs;
  const int64_t b1 = b0 + cs < count ? b0 + cs : count;

  kernels::AttendArgs args;
  args.kv = c.kv;
  args.head = unit.kv_head;
  args.blocks = c.sel.indices ? c.sel.indices + u * c.sel.capacity + b0 : nullptr;
  args.block_begin = b0;
  args.num_blocks = b1 - b0;
  // The unit's next chunk starts after this one (usually on this thread: items are partitioned
  // in order); prefetching its first block saves that chunk a cold start.
  if (b1 < count) args.prefetch_after = c.sel.indices ? c.sel.indices[u * c.sel.capacity + b1] : b1;
  args.block_size = p.params.shape.block_size;
  args.head_dim = dim;
  args.context_length = p.params.shape.context_length;
  args.scale = p.scale;

  // Partial state of this item: [m: max_rows][l: max_rows][acc: max_rows x dim].
  float* part = nullptr;
  if (nchunks > 1)
    part = At<float>(c.ws, c.w.partials) + static_cast<size_t>(u * p.max_chunks + chunk) * c.w.partial_stride;

  const int32_t h0 = unit.kv_head * p.group;
  const int32_t nrows = (unit.q_end - unit.q_begin) * p.group;
  // Rows in groups of up to kRowGroup: each group makes one pass over the chunk's K/V.
  constexpr int32_t kRowGroup = 256;
  const float* qs[kRowGroup];
  int64_t pos[kRowGroup];
  float* acc[kRowGroup];
  float ms[kRowGroup], ls[kRowGroup];
  for (int32_t r0 = 0; r0 < nrows; r0 += kRowGroup) {
    kernels::RowSet rs;
    rs.rows = nrows - r0 < kRowGroup ? nrows - r0 : kRowGroup;
    for (int r = 0; r < rs.rows; ++r) {
      const int32_t row = r0 + r;
      const int32_t i = unit.q_begin + row / p.group;
      const int32_t head = h0 + row % p.group;
      qs[r] = c.q->data + i * c.q->token_stride + head * c.q->head_stride;
      pos[r] = p.first_query_pos + i;
      acc[r] = part ? part + 2 * p.max_rows + static_cast<size_t>(row) * static_cast<size_t>(dim) : OutRow(c, i, head);
      for (int32_t d = 0; d < dim; ++d) acc[r][d] = 0.0f;
      ms[r] = -INFINITY;
      ls[r] = 0.0f;
    }
    rs.q = qs;
    rs.pos = pos;
    rs.acc = acc;
    rs.m = ms;
    rs.l = ls;
    kt.attend_blocks(&rs, args);
    for (int r = 0; r < rs.rows; ++r) {
      if (part) {
        part[r0 + r] = ms[r];
        part[p.max_rows + r0 + r] = ls[r];
      } else {
        // l = 0 only if no key was visible (impossible: the query sees itself) or NaN inputs.
        const float inv = 1.0f / ls[r];
        for (int32_t d = 0; d < dim; ++d) acc[r][d] *= inv;
        const int32_t row = r0 + r;
        PutLse(c, unit.q_begin + row / p.group, h0 + row % p.group, ms[r], ls[r]);
      }
    }
  }
}

// Decode where every kv head walks the same blocks: dense, or a selection whose units all hold
// one list (SelectionScope::kAllKvHeads, or a caller's own). One item then takes a chunk of the
// blocks for all heads, block by block. In token-major caches the heads of a token are adjacent,
// so this streams each block instead of striding through it once per head (measured 2x on 64K
// tokens dense). Each head's blocks, chunks and sequence of floating-point operations are those
// of the per-unit items, so results equal that order bit for bit.
constexpr int32_t kMaxDenseRows = 256;

bool DecodeSharesBlocks(const Ctx& c) {
  const AttentionPlan& p = *c.plan;
  if (p.num_query_blocks != 1 || p.params.shape.num_queries != 1 || p.params.shape.num_q_heads > kMaxDenseRows)
    return false;
  if (c.sel.indices == nullptr) return true;
  // Decode: unit u = kv head u. O(units x kept blocks), against O(units x kept blocks x B x
  // head_dim) of attention.
  const int32_t n = c.sel.counts[0];
  for (int64_t u = 1; u < p.num_units; ++u) {
    if (c.sel.counts[u] != n) return false;
    const int32_t* a = c.sel.indices;
    const int32_t* b = c.sel.indices + u * c.sel.capacity;
    for (int32_t j = 0; j < n; ++j)
      if (a[j] != b[j]) return false;
  }
  return true;
}

// Chunk `chunk` of nchunks of the `count` blocks every head walks (the selection's shared list,
// or blocks 0..count-1 when dense), for kv heads [h_begin, h_end).
void RunSharedDecodeItem(const Ctx& c, int64_t chunk, int64_t nchunks, int64_t count, int32_t h_begin, int32_t h_end) {
  const AttentionPlan& p = *c.plan;
  const kernels::KernelTable& kt = *c.kt;
  const int32_t dim = p.params.shape.head_dim;
  const int32_t H = p.params.shape.num_kv_heads, G = p.group;
  const int64_t cs = (count + nchunks - 1) / nchunks;
  const int64_t b0 = chunk * cs;
  const int64_t b1 = b0 + cs < count ? b0 + cs : count;
  const float* qs[kMaxDenseRows];
  int64_t pos[kMaxDenseRows];
  float* acc[kMaxDenseRows];
  float ms[kMaxDenseRows], ls[kMaxDenseRows];
  kernels::RowSet rs[kMaxDenseRows];
  float* parts[kMaxDenseRows];
  for (int32_t h = h_begin; h < h_end; ++h) {
    // Decode: unit index = kv head (one query block).
    float* part =
        nchunks > 1 ? At<float>(c.ws, c.w.partials) + static_cast<size_t>(h * p.max_chunks + chunk) * c.w.partial_stride
                    : nullptr;
    parts[h] = part;
    for (int32_t g = 0; g < G; ++g) {
      const int32_t r = h * G + g;
      qs[r] = c.q->data + r * c.q->head_stride;
      pos[r] = p.first_query_pos;
      acc[r] = part ? part + 2 * p.max_rows + static_cast<size_t>(g) * static_cast<size_t>(dim) : OutRow(c, 0, r);
      for (int32_t d = 0; d < dim; ++d) acc[r][d] = 0.0f;
      ms[r] = -INFINITY;
      ls[r] = 0.0f;
    }
    rs[h].rows = G;
    rs[h].q = qs + h * G;
    rs[h].pos = pos + h * G;
    rs[h].acc = acc + h * G;
    rs[h].m = ms + h * G;
    rs[h].l = ls + h * G;
  }
  // Block b of the walk: list[b], or b itself when dense.
  const int32_t* list = c.sel.indices;
  kernels::AttendArgs args;
  args.kv = c.kv;
  args.blocks = nullptr;
  args.num_blocks = 1;
  args.block_size = p.params.shape.block_size;
  args.head_dim = dim;
  args.context_length = p.params.shape.context_length;
  args.scale = p.scale;
  // Token-major caches (a token's kv heads adjacent, as engines store them): one kernel call
  // walks the chunk's blocks for all heads in token order. Measured on a 2-core Xeon slot (64K,
  // fp16, 32/8 heads, 2 threads): 24.6 ms against 29.5 ms for the per-head walk. Other layouts
  // (head-major: a head's tokens contiguous) stream each head's whole chunk in turn, one
  // contiguous range per head; groups above 8 rows on a token-major cache walk block by block,
  // every head of a block in turn. Every order is bit-identical (each head's blocks in order).
  // Divided, not multiplied: a validated q8_0 view's strides in values may not fit the product.
  const bool token_major = c.kv->head_stride <= c.kv->token_stride / H;
  // The next chunk's first block (usually this thread's next item: chunks are partitioned in
  // order): prefetched while this chunk's last block runs, so it does not start cold.
  const int64_t next_chunk_block = b1 < count ? (list ? list[b1] : b1) : -1;
  if (G <= 8 && token_major) {
    args.head = h_begin;
    args.blocks = list ? list + b0 : nullptr;
    args.block_begin = b0;
    args.num_blocks = b1 - b0;
    args.prefetch_after = next_chunk_block;
    kt.attend_heads(rs + h_begin, h_end - h_begin, args);
  } else if (!token_major) {
    args.blocks = list ? list + b0 : nullptr;
    args.block_begin = b0;
    args.num_blocks = b1 - b0;
    args.prefetch_after = next_chunk_block;
    for (int32_t h = h_begin; h < h_end; ++h) {
      args.head = h;
      kt.attend_blocks(&rs[h], args);
    }
  } else {
    for (int64_t b = b0; b < b1; ++b) {
      args.blocks = list ? list + b : nullptr;
      args.block_begin = b;
      args.prefetch_after = b + 1 < b1 ? (list ? list[b + 1] : b + 1) : -1;
      for (int32_t h = h_begin; h < h_end; ++h) {
        args.head = h;
        kt.attend_blocks(&rs[h], args);
      }
    }
  }
  for (int32_t h = h_begin; h < h_end; ++h)
    for (int32_t g = 0; g < G; ++g) {
      const int32_t r = h * G + g;
      if (parts[h]) {
        parts[h][g] = ms[r];
        parts[h][p.max_rows + g] = ls[r];
      } else {
        const float inv = 1.0f / ls[r];
        for (int32_t d = 0; d < dim; ++d) acc[r][d] *= inv;
        PutLse(c, 0, r, ms[r], ls[r]);
      }
    }
}

// Merges the partial states of unit u (chunks in order) into the output. Log-sum-exp:
// M = max_c m_c, l = sum_c l_c e^(m_c - M), out = sum_c acc_c e^(m_c - M) / l.
void MergeUnit(const Ctx& c, int64_t u, int64_t nchunks) {
  const AttentionPlan& p = *c.plan;
  const Unit unit = UnitOf(p, u);
  const int32_t dim = p.params.shape.head_dim;
  const int32_t nrows = (unit.q_end - unit.q_begin) * p.group;
  const float* base = At<float>(c.ws, c.w.partials) + static_cast<size_t>(u * p.max_chunks) * c.w.partial_stride;
  for (int32_t row = 0; row < nrows; ++row) {
    const int32_t i = unit.q_begin + row / p.group;
    const int32_t head = unit.kv_head * p.group + row % p.group;
    float* o = OutRow(c, i, head);
    float mx = -INFINITY;
    for (int64_t ch = 0; ch < nchunks; ++ch) {
      const float m = base[static_cast<size_t>(ch) * c.w.partial_stride + static_cast<size_t>(row)];
      if (m > mx) mx = m;
    }
    for (int32_t d = 0; d < dim; ++d) o[d] = 0.0f;
    float l = 0.0f;
    for (int64_t ch = 0; ch < nchunks; ++ch) {
      const float* part = base + static_cast<size_t>(ch) * c.w.partial_stride;
      const float m = part[row];
      if (!(m > -INFINITY)) {
        if (std::isnan(m)) l = NAN;
        continue;
      }
      const float wgt = std::exp(m - mx);
      l += part[p.max_rows + row] * wgt;
      const float* acc = part + 2 * p.max_rows + static_cast<size_t>(row) * static_cast<size_t>(dim);
      for (int32_t d = 0; d < dim; ++d) o[d] += acc[d] * wgt;
    }
    const float inv = 1.0f / l;
    for (int32_t d = 0; d < dim; ++d) o[d] *= inv;
    PutLse(c, i, head, mx, l);
  }
}

int64_t CountItems(const Ctx& c) {
  int64_t n = 0;
  for (int64_t u = 0; u < c.plan->num_units; ++u) n += UnitChunks(*c.plan, UnitBlockCount(*c.plan, c.sel, u));
  return n;
}

void PartitionRun(const Ctx& c, int ith, int nth) {
  if (DecodeSharesBlocks(c)) {
    const int64_t t0 = c.kernel_ns ? NowNs() : 0;
    const int64_t count = UnitBlockCount(*c.plan, c.sel, 0);
    const int64_t nch = UnitChunks(*c.plan, count);
    // Items: chunks x groups of kv heads. Chunks alone may be fewer than the threads (a few kept
    // blocks, or 16+ kv heads, where the plan keeps one chunk per unit); then the heads are split
    // too. Each head's blocks and chunks are the same for every split, so results do not depend
    // on it (nor on nth).
    const int32_t H = c.plan->params.shape.num_kv_heads;
    int64_t groups = 1;
    if (nch < nth) groups = (nth + nch - 1) / nch < H ? (nth + nch - 1) / nch : H;
    const int64_t total = nch * groups;
    for (int64_t it = total * ith / nth; it < total * (ith + 1) / nth; ++it) {
      const int64_t ch = it / groups, g = it % groups;
      RunSharedDecodeItem(c, ch, nch, count, static_cast<int32_t>(H * g / groups),
                          static_cast<int32_t>(H * (g + 1) / groups));
    }
    if (c.kernel_ns) *c.kernel_ns += NowNs() - t0;
    return;
  }
  const int64_t total = CountItems(c);
  const int64_t lo = total * ith / nth, hi = total * (ith + 1) / nth;
  int64_t item = 0;
  for (int64_t u = 0; u < c.plan->num_units && item < hi; ++u) {
    const int64_t count = UnitBlockCount(*c.plan, c.sel, u);
    const int64_t nch = UnitChunks(*c.plan, count);
    for (int64_t ch = 0; ch < nch; ++ch, ++item)
      if (item >= lo && item < hi) {
        const int64_t t1 = c.kernel_ns ? NowNs() : 0;
        RunItem(c, u, ch, nch, count);
        if (c.kernel_ns) *c.kernel_ns += NowNs() - t1;
      }
  }
}

void MergeRun(const Ctx& c, int ith, int nth) {
  if (c.plan->max_chunks <= 1) return;
  const int64_t U = c.plan->num_units;
  for (int64_t u = U * ith / nth; u < U * (ith + 1) / nth; ++u) {
    const int64_t nch = UnitChunks(*c.plan, UnitBlockCount(*c.plan, c.sel, u));
    if (nch > 1) MergeUnit(c, u, nch);
  }
}

Status CheckExec(const AttentionPlan& p, const QueryView& q, const ConstBlockSelection& sel, const OutputView& out,
                 void* ws, int ith, int nth) {
  if (nth < 1 || ith < 0 || ith >= nth)
    return Bad("partition ith " + std::to_string(ith) + " of nth " + std::to_string(nth) + " is out of range");
  if (q.data == nullptr) return Bad("q.data is null");
  if (out.data == nullptr) return Bad("out.data is null");
  if (Status st = CheckWorkspace(p, ws); !st.ok()) return st;
  if (sel.indices != nullptr) return CheckSelectionBuffers(p, sel.indices, sel.counts, sel.capacity);
  return OkStatus();
}

}  // namespace

Status CheckWorkspace(const AttentionPlan& p, const void* ws) {
  if (ws == nullptr && p.workspace_bytes > 0) return Bad("workspace is null");
  if (reinterpret_cast<uintptr_t>(ws) % alignof(float) != 0)
    return Bad("workspace address " + std::to_string(reinterpret_cast<uintptr_t>(ws)) + " is not 4-byte aligned");
  return OkStatus();
}

Status CheckSelectionBuffers(const AttentionPlan& p, const int32_t* indices, const int32_t* counts, int64_t capacity) {
  if (indices == nullptr) return Bad("selection.indices is null");
  if (counts == nullptr) return Bad("selection.counts is null");
  if (reinterpret_cast<uintptr_t>(indices) % alignof(int32_t) != 0 ||
      reinterpret_cast<uintptr_t>(counts) % alignof(int32_t) != 0)
    return Bad("selection buffers must be 4-byte aligned");
  if (capacity < p.num_blocks)
    return Bad("selection capacity " + std::to_string(capacity) + " is below num_blocks " +
               std::to_string(p.num_blocks));
  int64_t entries, bytes;
  if (!CheckedMul(p.num_units, capacity, &entries) || !CheckedBytes(entries, sizeof(int32_t), &bytes))
    return Status(StatusCode::kOutOfRange, "selection capacity " + std::to_string(capacity) + " x " +
                                               std::to_string(p.num_units) + " units overflows");
  return OkStatus();
}

Status CheckSelection(const AttentionPlan& p, const ConstBlockSelection& sel) {
  if (sel.indices == nullptr) return OkStatus();
  if (Status st = CheckSelectionBuffers(p, sel.indices, sel.counts, sel.capacity); !st.ok()) return st;
  for (int64_t u = 0; u < p.num_units; ++u) {
    const int64_t nb = UnitOf(p, u).query_block + 1;
    const int32_t n = sel.counts[u];
    if (n < 1 || n > nb)
      return Status(StatusCode::kOutOfRange, "selection.counts[" + std::to_string(u) + "] = " + std::to_string(n) +
                                                 " is outside [1, " + std::to_string(nb) + "]");
    const int32_t* idx = sel.indices + u * sel.capacity;
    for (int32_t j = 0; j < n; ++j) {
      if (idx[j] < 0 || idx[j] >= nb || (j > 0 && idx[j] <= idx[j - 1]))
        return Status(StatusCode::kOutOfRange, "selection.indices of unit " + std::to_string(u) + " at " +
                                                   std::to_string(j) + " = " + std::to_string(idx[j]) +
                                                   " is not ascending within [0, " + std::to_string(nb) + ")");
    }
  }
  return OkStatus();
}

namespace {

Ctx MakeCtx(const AttentionPlan& p, const kernels::KernelTable& kt, const QueryView& q, const KVCacheView& kv,
            ConstBlockSelection sel, OutputView out, void* ws) {
  Ctx c{&p, &kt, &q, &kv, sel, out, ws, {}};
  ComputeLayout(p, &c.w);
  return c;
}

}  // namespace

void AttendRun(const AttentionPlan& plan, const kernels::KernelTable& kt, const QueryView& q, const KVCacheView& kv,
               ConstBlockSelection sel, OutputView out, float* lse, void* ws, int ith, int nth, int64_t* kernel_ns) {
  Ctx c = MakeCtx(plan, kt, q, kv, sel, out, ws);
  c.lse = lse;
  c.kernel_ns = kernel_ns;
  PartitionRun(c, ith, nth);
}

void MergeRunAll(const AttentionPlan& plan, const kernels::KernelTable& kt, ConstBlockSelection sel, OutputView out,
                 float* lse, void* ws, int ith, int nth) {
  const QueryView none;
  const KVCacheView kv;
  Ctx c = MakeCtx(plan, kt, none, kv, sel, out, ws);
  c.lse = lse;
  MergeRun(c, ith, nth);
}

DenseRule DenseDecision(const AttentionPlan& plan) noexcept {
  const Budget& budget = plan.params.budget;
  if (budget.mode == BudgetMode::kDense) return DenseRule::kDense;
  // A budget that keeps everything goes through selection (cheap: nothing is scored) so the
  // clamp is reported; one that keeps >= 90% but not all falls back to dense.
  if (PlanRunsDense(plan) && ResolveBudget(budget, plan.num_blocks).total_blocks < plan.num_blocks)
    return DenseRule::kFallback;
  return DenseRule::kSelect;
}

void DenseStats(const AttentionPlan& plan, bool fallback, SelectionStats* stats) noexcept {
  stats->dense_fallback = fallback;
  stats->units = plan.num_units;
  stats->dense = true;
  for (int64_t u = 0; u < plan.num_units; ++u) {
    const int64_t nb = UnitOf(plan, u).query_block + 1;
    stats->kept_blocks += nb;
    stats->causal_blocks += nb;
  }
}

}  // namespace detail

Status AttendPartition(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
                       ConstBlockSelection selection, OutputView out, void* workspace, int ith, int nth) {
  if (plan.empty) return OkStatus();
  if (Status st = detail::CheckExec(plan, q, selection, out, workspace, ith, nth); !st.ok()) return st;
  // The same checks as Attend (O(pages + kept blocks) per call): the op (op.hpp) is the path that
  // validates once per step.
  if (Status st = ValidateViews(plan, q, kv, &out); !st.ok()) return st;
  if (Status st = detail::CheckSelection(plan, selection); !st.ok()) return st;
  detail::AttendRun(plan, kernels::Kernels(), q, kv, selection, out, nullptr, workspace, ith, nth, nullptr);
  return OkStatus();
}

Status AttendMerge(const AttentionPlan& plan, ConstBlockSelection selection, OutputView out, void* workspace, int ith,
                   int nth) {
  if (plan.empty) return OkStatus();
  QueryView none;
  none.data = reinterpret_cast<const float*>(1);  // not read by the merge; passes the null check
  if (Status st = detail::CheckExec(plan, none, selection, out, workspace, ith, nth); !st.ok()) return st;
  // The merge reads the selection's counts: the same check as Attend.
  if (Status st = detail::CheckSelection(plan, selection); !st.ok()) return st;
  detail::MergeRunAll(plan, kernels::Kernels(), selection, out, nullptr, workspace, ith, nth);
  return OkStatus();
}

Status detail::AttendOn(const kernels::KernelTable& kt, const AttentionPlan& plan, const QueryView& q,
                        const KVCacheView& kv, ConstBlockSelection selection, OutputView out, void* workspace,
                        ThreadPool* pool) {
  if (plan.empty) return OkStatus();
  if (Status st = ValidateViews(plan, q, kv, &out); !st.ok()) return st;
  if (Status st = detail::CheckExec(plan, q, selection, out, workspace, 0, 1); !st.ok()) return st;
  if (Status st = detail::CheckSelection(plan, selection); !st.ok()) return st;
  if (pool == nullptr || pool->size() == 1) {
    detail::AttendRun(plan, kt, q, kv, selection, out, nullptr, workspace, 0, 1, nullptr);
    detail::MergeRunAll(plan, kt, selection, out, nullptr, workspace, 0, 1);
  } else {
    pool->Run([&](int ith, int nth) {
      detail::AttendRun(plan, kt, q, kv, selection, out, nullptr, workspace, ith, nth, nullptr);
    });
    pool->Run([&](int ith, int nth) { detail::MergeRunAll(plan, kt, selection, out, nullptr, workspace, ith, nth); });
  }
  return OkStatus();
}

Status Attend(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv, ConstBlockSelection selection,
              OutputView out, void* workspace, ThreadPool* pool) {
  return detail::AttendOn(kernels::Kernels(), plan, q, kv, selection, out, workspace, pool);  // one ISA for the call
}

bool PlanRunsDense(const AttentionPlan& plan) noexcept {
  const Budget& budget = plan.params.budget;
  if (budget.mode == BudgetMode::kDense) return true;
  if (budget.mode != BudgetMode::kBlocks && budget.mode != BudgetMode::kFraction) return false;
  const ResolvedBudget r = ResolveBudget(budget, plan.num_blocks);
  return r.total_blocks * 10 >= plan.num_blocks * 9;
}

Status SparseAttention(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
                       const BlockSummaries* summaries, OutputView out, void* workspace, ThreadPool* pool,
                       SelectionStats* stats, BlockSelection selection_out) {
  if (stats) *stats = SelectionStats{};
  if (plan.empty) return OkStatus();
  // Everything is checked before selection reads q (Attend would check the views only after).
  if (Status st = ValidateViews(plan, q, kv, &out); !st.ok()) return st;
  if (selection_out.indices != nullptr)
    if (Status st =
            detail::CheckSelectionBuffers(plan, selection_out.indices, selection_out.counts, selection_out.capacity);
        !st.ok())
      return st;
  const kernels::KernelTable& kt = kernels::Kernels();  // one ISA for selection and attention
  const detail::DenseRule rule = detail::DenseDecision(plan);
  if (rule != detail::DenseRule::kSelect) {
    if (selection_out.indices != nullptr) {
      for (int64_t u = 0; u < plan.num_units; ++u) {
        const int64_t nb = detail::UnitOf(plan, u).query_block + 1;
        for (int64_t j = 0; j < nb; ++j)
          selection_out.indices[u * selection_out.capacity + j] = static_cast<int32_t>(j);
        selection_out.counts[u] = static_cast<int32_t>(nb);
      }
    }
    if (stats) detail::DenseStats(plan, rule == detail::DenseRule::kFallback, stats);
    return detail::AttendOn(kt, plan, q, kv, ConstBlockSelection{}, out, workspace, pool);
  }
  if (summaries == nullptr) return detail::Bad("summaries are null but the budget is not dense");
  if (Status st = detail::CheckWorkspace(plan, workspace); !st.ok()) return st;
  if (workspace == nullptr) return detail::Bad("workspace is null");
  BlockSelection sel = selection_out;
  if (sel.indices == nullptr) {
    detail::WorkspaceLayout w;
    detail::ComputeLayout(plan, &w);
    sel.indices = detail::At<int32_t>(workspace, w.sel_indices);
    sel.counts = detail::At<int32_t>(workspace, w.sel_counts);
    sel.capacity = plan.num_blocks;
  }
  if (Status st = detail::SelectBlocksOn(kt, plan, q, *summaries, sel, workspace, stats, pool); !st.ok()) return st;
  return detail::AttendOn(kt, plan, q, kv, ConstBlockSelection{sel.indices, sel.counts, sel.capacity}, out, workspace,
                          pool);
}

}  // namespace sparsebudget
