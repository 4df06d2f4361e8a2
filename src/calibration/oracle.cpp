// Oracle budget from Q/K/V: the smallest block budget whose attention output stays within a
// relative L2 error of the dense output.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sparsebudget/calibration.hpp"

namespace sparsebudget {

namespace {
// Workspace with 64-byte alignment.
struct Workspace {
  std::vector<unsigned char> buf;
  void* Get(size_t bytes) {
    buf.assign(bytes + 64, 0);
    auto p = reinterpret_cast<uintptr_t>(buf.data());
    return buf.data() + ((64 - (p % 64)) % 64);
  }
};
}  // namespace

Expected<AttentionOracle> OracleFromAttention(const AttentionParams& params_in, const QueryView& q,
                                              const KVCacheView& kv, double epsilon) {
  if (!(epsilon >= 0) || !std::isfinite(epsilon))
    return Status(StatusCode::kInvalidArgument,
                  "oracle: epsilon must be finite and >= 0, got " + std::to_string(epsilon));
  const AttentionShape& sh = params_in.shape;
  if (sh.num_queries < 1 || sh.context_length < 1)
    return Status(StatusCode::kInvalidArgument, "oracle: needs num_queries >= 1 and context_length >= 1");
  AttentionParams dense = params_in;
  dense.budget = Budget::Dense();
  dense.budget.sink_blocks = params_in.budget.sink_blocks;
  dense.budget.local_blocks = params_in.budget.local_blocks;
  AttentionPlan plan;
  Status st = MakePlan(dense, &plan);
  if (!st.ok()) return st;
  const int64_t rows = static_cast<int64_t>(sh.num_queries) * sh.num_q_heads;
  const size_t out_elems = static_cast<size_t>(rows) * static_cast<size_t>(sh.head_dim);
  std::vector<float> ref(out_elems), out(out_elems);
  OutputView ov{ref.data(), static_cast<int64_t>(sh.num_q_heads) * sh.head_dim, sh.head_dim};
  Workspace ws;
  st = SparseAttention(plan, q, kv, nullptr, ov, ws.Get(plan.workspace_bytes));
  if (!st.ok()) return st;
  double ref_norm = 0;
  for (float v : ref) ref_norm += static_cast<double>(v) * static_cast<double>(v);
  ref_norm = std::sqrt(ref_norm);

  BlockSummaries::Config cfg;
  cfg.num_kv_heads = sh.num_kv_heads;
  cfg.head_dim = sh.head_dim;
  cfg.block_size = sh.block_size;
  cfg.max_tokens = sh.context_length;
  cfg.mean = params_in.scoring == Scoring::kMean;
  cfg.bound = params_in.scoring == Scoring::kBound;
  auto sums = BlockSummaries::Create(cfg);
  if (!sums.ok()) return sums.status();
  st = sums->Append(kv, sh.context_length);
  if (!st.ok()) return st;

  AttentionOracle res;
  res.causal_blocks = plan.num_blocks;
  res.blocks = plan.num_blocks;
  res.fraction = 1.0;
  bool found = false;
  for (int64_t k = 0;; ++k) {
    AttentionParams p = params_in;
    p.budget = Budget::Blocks(k);
    p.budget.sink_blocks = params_in.budget.sink_blocks;
    p.budget.local_blocks = params_in.budget.local_blocks;
    const ResolvedBudget rb = ResolveBudget(p.budget, plan.num_blocks);
    AttentionPlan sp;
    st = MakePlan(p, &sp);
    if (!st.ok()) return st;
    OutputView so{out.data(), ov.token_stride, ov.head_stride};
    st = SparseAttention(sp, q, kv, &*sums, so, ws.Get(sp.workspace_bytes));
    if (!st.ok()) return st;
    double err = 0;
    for (size_t i = 0; i < out_elems; ++i) {
      const double d = static_cast<double>(out[i]) - static_cast<double>(ref[i]);
      err += d * d;
    }
    err = ref_norm > 0 ? std::sqrt(err) / ref_norm : std::sqrt(err);
    OracleCurvePoint cp;
    cp.blocks = rb.total_blocks;
    cp.fraction = static_cast<double>(rb.total_blocks) / static_cast<double>(plan.num_blocks);
    cp.rel_error = err;
    res.curve.push_back(cp);
    if (!found && err <= epsilon) {
      found = true;
      res.blocks = cp.blocks;
      res.fraction = cp.fraction;
    }
    if (rb.total_blocks >= plan.num_blocks) break;
  }
  return res;
}

}  // namespace sparsebudget
