// Block selection: score every causal block of a unit, keep forced + top-k (or top-p) blocks.
#include <algorithm>
#include <cmath>
#include <string>

#include "attention/internal.hpp"
#include "kernels/kernels.hpp"
#include "sparsebudget/thread_pool.hpp"

namespace sparsebudget {
namespace detail {

namespace {

// Rank order: higher score first, NaN last, then the lower block index.
struct Better {
  const float* s;
  bool operator()(int32_t a, int32_t b) const {
    const float sa = s[a], sb = s[b];
    const bool na = std::isnan(sa), nb = std::isnan(sb);
    if (na != nb) return nb;
    if (!na && sa != sb) return sa > sb;
    return a < b;
  }
};

}  // namespace

// Selects the blocks of unit u into indices (ascending); returns the count. `clamped` reports a
// clamp or a request larger than what exists.
int64_t SelectUnit(const AttentionPlan& p, const kernels::KernelTable& kt, const QueryView& q,
                   const BlockSummaries& sum, int64_t u, void* ws, const WorkspaceLayout& w, int32_t* indices,
                   bool* clamped) {
  const Unit unit = UnitOf(p, u);
  const int64_t nb = unit.query_block + 1;
  const Budget& budget = p.params.budget;
  const int32_t dim = p.params.shape.head_dim;
  *clamped = false;

  ResolvedBudget r = ResolveBudget(budget, nb);
  // Forced blocks: [0, sink_end) and [local_begin, nb) (budget.hpp's counting rule).
  const ForcedRanges ranges = ForcedBlockRanges(budget, nb);
  const int64_t sink_end = ranges.sink_end;
  const int64_t local_begin = ranges.local_begin;
  if (budget.mode != BudgetMode::kTopP && (r.scored_blocks == 0 || r.scored_blocks >= local_begin - sink_end)) {
    // Nothing to rank: forced blocks only, or everything.
    int64_t n = 0;
    for (int64_t j = 0; j < nb; ++j)
      if (r.scored_blocks > 0 || j < sink_end || j >= local_begin) indices[n++] = static_cast<int32_t>(j);
    *clamped = r.clamped;
    return n;
  }

  float* scores = At<float>(ws, w.scores) + u * p.num_blocks;
  int32_t* order = At<int32_t>(ws, w.order) + u * p.num_blocks;
  std::fill(scores, scores + nb, 0.0f);
  // The kv heads whose scores are summed: the unit's own, or all of them (kAllKvHeads).
  const bool all_heads = p.params.selection_scope == SelectionScope::kAllKvHeads;
  const int32_t head_begin = all_heads ? 0 : unit.kv_head;
  const int32_t head_end = all_heads ? p.params.shape.num_kv_heads : unit.kv_head + 1;
  int64_t rows = 0;
  for (int32_t kvh = head_begin; kvh < head_end; ++kvh) {
    const int32_t h0 = kvh * p.group;
    if (p.params.scoring == Scoring::kMean) {
      // sum_rows q . mean(K_j) = (sum_rows q) . sum(K_j) / count_j (divided once, after the heads)
      float* qsum = At<float>(ws, w.qsum) + u * dim;
      std::fill(qsum, qsum + dim, 0.0f);
      for (int32_t i = unit.q_begin; i < unit.q_end; ++i)
        for (int32_t g = 0; g < p.group; ++g, ++rows) {
          const float* qr = q.data + i * q.token_stride + (h0 + g) * q.head_stride;
          for (int32_t d = 0; d < dim; ++d) qsum[d] += qr[d];
        }
      kt.dot_rows(qsum, sum.key_sum(kvh, 0), dim, nb, dim, scores);
    } else {
      for (int32_t i = unit.q_begin; i < unit.q_end; ++i)
        for (int32_t g = 0; g < p.group; ++g, ++rows) {
          const float* qr = q.data + i * q.token_stride + (h0 + g) * q.head_stride;
          kt.bound_rows(qr, sum.key_min(kvh, 0), sum.key_max(kvh, 0), dim, nb, dim, scores);
        }
    }
  }
  if (p.params.scoring == Scoring::kMean)
    for (int64_t j = 0; j < nb; ++j) scores[j] /= static_cast<float>(sum.block_count(j));

  int64_t ncand = 0;
  for (int64_t j = sink_end; j < local_begin; ++j) order[ncand++] = static_cast<int32_t>(j);

  int64_t k = r.scored_blocks;
  if (budget.mode == BudgetMode::kTopP) {
    // Mass estimate: softmax of the scale * mean score per row, over all causal blocks.
    const float inv = p.scale / static_cast<float>(rows);
    float smax = -INFINITY;
    for (int64_t j = 0; j < nb; ++j)
      if (scores[j] * inv > smax) smax = scores[j] * inv;
    double z = 0.0, forced = 0.0;
    auto weight = [&](int64_t j) {
      const float x = scores[j] * inv - smax;
      return std::isnan(x) ? 0.0 : std::exp(static_cast<double>(x));
    };
    for (int64_t j = 0; j < nb; ++j) {
      const double wj = weight(j);
      z += wj;
      if (j < sink_end || j >= local_begin) forced += wj;
    }
    std::sort(order, order + ncand, Better{scores});
    k = 0;
    double mass = forced;
    while (k < ncand && !(z > 0.0 && mass >= budget.top_p * z)) mass += weight(order[k++]);
    const ResolvedBudget c = ClampTotal(budget, r.forced_blocks + k, nb);
    *clamped = c.clamped;
    k = c.scored_blocks;
  } else {
    *clamped = r.clamped;
    if (k < ncand) {
      std::nth_element(order, order + k, order + ncand, Better{scores});
    }
  }
  if (k > ncand) k = ncand;

  // Forced + the first k candidates, ascending.
  int64_t n = 0;
  for (int64_t j = 0; j < sink_end; ++j) indices[n++] = static_cast<int32_t>(j);
  for (int64_t j = 0; j < k; ++j) indices[n++] = order[j];
  for (int64_t j = local_begin; j < nb; ++j) indices[n++] = static_cast<int32_t>(j);
  std::sort(indices + sink_end, indices + sink_end + k);
  return n;
}

// Units [U*ith/nth, U*(ith+1)/nth); adds to *st (units, clamped, kept, causal; dense is ANDed).
// With kAllKvHeads the slices are of query blocks: kv head 0's unit is selected and its list
// copied to the other kv heads' units (unit u = kv_head * num_query_blocks + query block), each
// counted as a unit. With kernel_ns, adds the time spent per selection.
void SelectRun(const AttentionPlan& plan, const kernels::KernelTable& kt, const QueryView& q,
               const BlockSummaries& summaries, const BlockSelection& out, void* workspace, int ith, int nth,
               SelectionStats* st, int64_t* kernel_ns) {
  WorkspaceLayout w;
  ComputeLayout(plan, &w);
  const int64_t Q = plan.num_query_blocks;
  const int64_t U = SelectionCount(plan);
  const int64_t copies =
      plan.params.selection_scope == SelectionScope::kAllKvHeads ? plan.params.shape.num_kv_heads : 1;
  for (int64_t u = U * ith / nth; u < U * (ith + 1) / nth; ++u) {
    bool clamped = false;
    int32_t* idx = out.indices + u * out.capacity;
    const int64_t t0 = kernel_ns ? NowNs() : 0;
    const int64_t n = SelectUnit(plan, kt, q, summaries, u, workspace, w, idx, &clamped);
    for (int64_t h = 1; h < copies; ++h) std::copy(idx, idx + n, out.indices + (h * Q + u) * out.capacity);
    if (kernel_ns) *kernel_ns += NowNs() - t0;
    const int64_t nb = UnitOf(plan, u).query_block + 1;
    for (int64_t h = 0; h < copies; ++h) {
      out.counts[h * Q + u] = static_cast<int32_t>(n);
      st->units += 1;
      st->units_clamped += clamped ? 1 : 0;
      st->kept_blocks += n;
      st->causal_blocks += nb;
    }
    st->dense = st->dense && n == nb;
  }
}

Status CheckSummaries(const AttentionPlan& plan, const BlockSummaries& summaries) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  const BlockSummaries::Config& c = summaries.config();
  const AttentionShape& s = plan.params.shape;
  if (c.num_kv_heads != s.num_kv_heads || c.head_dim != s.head_dim || c.block_size != s.block_size)
    return bad("summaries (kv heads " + std::to_string(c.num_kv_heads) + ", head_dim " + std::to_string(c.head_dim) +
               ", block " + std::to_string(c.block_size) + ") do not match the plan");
  if (summaries.num_tokens() < s.context_length)
    return bad("summaries cover " + std::to_string(summaries.num_tokens()) + " tokens, fewer than context_length " +
               std::to_string(s.context_length));
  if (!summaries.has(plan.params.scoring))
    return bad(std::string("summaries do not keep what scoring '") + ScoringName(plan.params.scoring) + "' needs");
  return OkStatus();
}

}  // namespace detail

namespace {

Status CheckSelect(const AttentionPlan& plan, const QueryView& q, const BlockSummaries& summaries,
                   const BlockSelection& out, void* workspace) {
  if (Status st = detail::ValidateQuery(plan, q); !st.ok()) return st;
  if (Status st = detail::CheckSelectionBuffers(plan, out.indices, out.counts, out.capacity); !st.ok()) return st;
  if (Status st = detail::CheckWorkspace(plan, workspace); !st.ok()) return st;
  return detail::CheckSummaries(plan, summaries);
}

}  // namespace

Status SelectBlocksPartition(const AttentionPlan& plan, const QueryView& q, const BlockSummaries& summaries,
                             BlockSelection out, void* workspace, int ith, int nth, SelectionStats* stats) {
  if (stats) *stats = SelectionStats{};
  if (nth < 1 || ith < 0 || ith >= nth)
    return Status(StatusCode::kInvalidArgument,
                  "partition ith " + std::to_string(ith) + " of nth " + std::to_string(nth) + " is out of range");
  if (plan.empty) return OkStatus();
  if (Status st = CheckSelect(plan, q, summaries, out, workspace); !st.ok()) return st;
  SelectionStats st;
  st.dense = true;
  detail::SelectRun(plan, kernels::Kernels(), q, summaries, out, workspace, ith, nth, &st, nullptr);
  if (stats) *stats = st;
  return OkStatus();
}

Status detail::SelectBlocksOn(const kernels::KernelTable& kt, const AttentionPlan& plan, const QueryView& q,
                              const BlockSummaries& summaries, BlockSelection out, void* workspace,
                              SelectionStats* stats, ThreadPool* pool) {
  if (stats) *stats = SelectionStats{};
  if (plan.empty) return OkStatus();
  if (Status st = CheckSelect(plan, q, summaries, out, workspace); !st.ok()) return st;
  SelectionStats total;
  total.dense = true;
  if (pool == nullptr || pool->size() == 1 || detail::SelectionCount(plan) == 1) {
    detail::SelectRun(plan, kt, q, summaries, out, workspace, 0, 1, &total, nullptr);
  } else {
    // Units are independent (own workspace rows, own output rows); the totals are summed after.
    constexpr int kMaxThreads = 256;
    SelectionStats part[kMaxThreads];
    const int nth = pool->size() < kMaxThreads ? pool->size() : kMaxThreads;
    pool->Run([&](int ith, int n) {
      if (ith >= nth) return;
      part[ith].dense = true;
      detail::SelectRun(plan, kt, q, summaries, out, workspace, ith, n < nth ? n : nth, &part[ith], nullptr);
    });
    for (int i = 0; i < nth; ++i) {
      total.units += part[i].units;
      total.units_clamped += part[i].units_clamped;
      total.kept_blocks += part[i].kept_blocks;
      total.causal_blocks += part[i].causal_blocks;
      total.dense = total.dense && part[i].dense;
    }
  }
  if (stats) *stats = total;
  return OkStatus();
}

Status SelectBlocks(const AttentionPlan& plan, const QueryView& q, const BlockSummaries& summaries, BlockSelection out,
                    void* workspace, SelectionStats* stats, ThreadPool* pool) {
  return detail::SelectBlocksOn(kernels::Kernels(), plan, q, summaries, out, workspace, stats, pool);  // one ISA
}

}  // namespace sparsebudget
