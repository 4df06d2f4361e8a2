// The engine API: AttentionOp (static configuration + one kernel table), StepPlan (the batch of
// one step, validated once), RunLayer / phases (per layer, no validation beyond pointers).
// Built on the per-request execute bodies of select.cpp and attend.cpp, so a request's result
// is bitwise the one SparseAttention gives.
#include "sparsebudget/op.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "attention/internal.hpp"
#include "core/checked.hpp"
#include "kernels/kernels.hpp"
#include "sparsebudget/thread_pool.hpp"

namespace sparsebudget {

namespace {

Status Bad(const std::string& m) { return Status(StatusCode::kInvalidArgument, m); }
Status OutOfRange(const std::string& m) { return Status(StatusCode::kOutOfRange, m); }
// The error `st` of request r, prefixed with the request (built only on the error path).
Status At(size_t r, const Status& st) {
  return Status(st.code(), "request " + std::to_string(r) + ": " + st.message());
}

AttentionParams ParamsOf(const AttentionOpConfig& c, int64_t context_length, int32_t num_queries,
                         const Budget& budget) {
  AttentionParams p;
  p.shape.num_q_heads = c.num_q_heads;
  p.shape.num_kv_heads = c.num_kv_heads;
  p.shape.head_dim = c.head_dim;
  p.shape.block_size = c.block_size;
  p.shape.context_length = context_length;
  p.shape.num_queries = num_queries;
  p.kv_dtype = c.kv_dtype;
  p.scoring = c.scoring;
  p.scale = c.scale;
  p.budget = budget;
  p.selection_scope = c.selection_scope;
  return p;
}

// Scaled budget without validation of the scale (callers checked it).
Budget Scaled(const Budget& b, double scale) noexcept {
  if (scale == 1.0) return b;
  Budget r = b;
  if (b.mode == BudgetMode::kBlocks) {
    // Saturate: a double at or beyond 2^63 does not convert to int64 (undefined).
    const double x = std::ceil(static_cast<double>(b.blocks) * scale);
    r.blocks = x >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(x);
  } else if (b.mode == BudgetMode::kFraction) {
    r.fraction = std::min(1.0, b.fraction * scale);
  }
  return r;
}

Status CheckScale(double scale) {
  if (!(scale > 0.0) || !std::isfinite(scale))
    return Bad("budget_scale must be finite and > 0, got " + std::to_string(scale));
  return OkStatus();
}

// Request r's plan for this layer: the step's plan with the layer's budget.
AttentionPlan LayerPlan(const AttentionPlan& step_plan, double scale) noexcept {
  AttentionPlan p = step_plan;
  p.params.budget = Scaled(step_plan.params.budget, scale);
  return p;
}

}  // namespace

Expected<Budget> ScaleBudget(const Budget& budget, double scale) {
  if (Status st = CheckScale(scale); !st.ok()) return st;
  return Scaled(budget, scale);
}

void StepPlan::Reserve(int32_t max_requests) {
  const int32_t n = std::min(max_requests, kMaxStepRequests);
  if (n > 0 && static_cast<size_t>(n) > entries_.size()) entries_.resize(static_cast<size_t>(n));
}

Expected<AttentionOp> AttentionOp::Create(const AttentionOpConfig& config) {
  // MakePlan's checks of the static fields (an empty shape validates nothing else).
  AttentionPlan probe;
  if (Status st = MakePlan(ParamsOf(config, 0, 0, Budget::Dense()), &probe); !st.ok()) return st;
  AttentionOp op;
  op.config_ = config;
  op.kt_ = &kernels::Kernels();
  return op;
}

Isa AttentionOp::isa() const noexcept { return kt_ ? kt_->isa : Isa::kScalar; }

Status AttentionOp::Plan(const StepRequest* requests, int32_t n, StepPlan* plan) const {
  if (plan == nullptr) return Bad("plan is null");
  plan->num_requests_ = 0;
  plan->workspace_bytes_ = 0;
  plan->op_ = nullptr;
  if (kt_ == nullptr) return Bad("the AttentionOp was not made by AttentionOp::Create");
  if (n < 0 || n > kMaxStepRequests)
    return Bad("number of requests must be in [0, " + std::to_string(kMaxStepRequests) + "], got " + std::to_string(n));
  if (n > 0 && requests == nullptr) return Bad("requests is null");
  plan->Reserve(n);
  size_t offset = 0;
  for (int32_t r = 0; r < n; ++r) {
    const StepRequest& req = requests[r];
    StepPlan::Entry& e = plan->entries_[static_cast<size_t>(r)];
    if (Status st = MakePlan(ParamsOf(config_, req.context_length, req.num_queries, req.budget), &e.plan); !st.ok())
      return At(static_cast<size_t>(r), st);
    if (Status st = detail::ValidateLayouts(e.plan, req.q, req.kv, &req.out); !st.ok())
      return At(static_cast<size_t>(r), st);
    e.kv = req.kv;
    e.q = req.q;
    e.out = req.out;
    e.workspace_offset = offset;
    if (__builtin_add_overflow(offset, e.plan.workspace_bytes, &offset))
      return At(static_cast<size_t>(r), Status(StatusCode::kOutOfRange, "the batch's workspace size overflows"));
  }
  plan->num_requests_ = static_cast<size_t>(n);
  plan->workspace_bytes_ = offset;
  plan->op_ = this;
  return OkStatus();
}

namespace {

// Everything a phase needs for request r in this layer.
struct RequestWork {
  AttentionPlan plan;
  detail::DenseRule rule;
  QueryView q;
  KVCacheView kv;
  OutputView out;
  void* ws;
  BlockSelection sel;  // the request's selection, inside its workspace region
};

RequestWork Work(const StepPlan::Entry& e, const LayerInput& in, double scale, void* workspace) {
  RequestWork w;
  w.plan = LayerPlan(e.plan, scale);
  w.rule = detail::DenseDecision(w.plan);
  w.q = e.q;
  w.q.data = in.q;
  w.kv = e.kv;
  w.kv.k = in.k;
  w.kv.v = in.v;
  w.out = e.out;
  w.out.data = in.out;
  w.ws = static_cast<char*>(workspace) + e.workspace_offset;
  detail::WorkspaceLayout layout;
  detail::ComputeLayout(w.plan, &layout);
  w.sel.indices = detail::At<int32_t>(w.ws, layout.sel_indices);
  w.sel.counts = detail::At<int32_t>(w.ws, layout.sel_counts);
  w.sel.capacity = w.plan.num_blocks;
  return w;
}

void AddStats(const SelectionStats& s, LayerStats* t) {
  t->selection.units += s.units;
  t->selection.units_clamped += s.units_clamped;
  t->selection.kept_blocks += s.kept_blocks;
  t->selection.causal_blocks += s.causal_blocks;
  t->selection.dense = t->selection.dense && s.dense;
  t->selection.dense_fallback = t->selection.dense_fallback || s.dense_fallback;
}

}  // namespace

// Per-call checks: O(requests), pointers and summaries only (Plan validated the rest).
Status AttentionOp::CheckLayer(const StepPlan& plan, const LayerArgs& args) const {
  if (kt_ == nullptr) return Bad("the AttentionOp was not made by AttentionOp::Create");
  if (plan.op_ == nullptr) return Bad("the StepPlan holds no valid batch (Plan failed or was not called)");
  if (plan.num_requests_ > 0 && args.inputs == nullptr) return Bad("args.inputs is null");
  if (plan.workspace_bytes_ > 0 && args.workspace == nullptr) return Bad("args.workspace is null");
  if (reinterpret_cast<uintptr_t>(args.workspace) % 64 != 0) return Bad("args.workspace is not 64-byte aligned");
  if (Status st = CheckScale(args.budget_scale); !st.ok()) return st;
  for (size_t r = 0; r < plan.num_requests_; ++r) {
    const StepPlan::Entry& e = plan.entries_[r];
    const AttentionParams& p = e.plan.params;
    // The first field that differs, named in the message (built only on the error path).
    const char* differs = p.shape.num_q_heads != config_.num_q_heads     ? "num_q_heads"
                          : p.shape.num_kv_heads != config_.num_kv_heads ? "num_kv_heads"
                          : p.shape.head_dim != config_.head_dim         ? "head_dim"
                          : p.shape.block_size != config_.block_size     ? "block_size"
                          : p.kv_dtype != config_.kv_dtype               ? "kv_dtype"
                          : p.scoring != config_.scoring                 ? "scoring"
                          : !(p.scale == config_.scale)                  ? "scale"
                          : p.selection_scope != config_.selection_scope ? "selection_scope"
                                                                         : nullptr;
    if (differs != nullptr)
      return Bad(std::string("the StepPlan was made by an AttentionOp of another configuration (its ") + differs +
                 " differs from this op's)");
    if (e.plan.empty) continue;
    const LayerInput& in = args.inputs[r];
    if (in.q == nullptr) return At(r, Bad("q is null"));
    if (in.out == nullptr) return At(r, Bad("out is null"));
    if (in.k == nullptr || in.v == nullptr) return At(r, Bad("k or v is null"));
    if (detail::DenseDecision(LayerPlan(e.plan, args.budget_scale)) == detail::DenseRule::kSelect) {
      if (in.summaries == nullptr) return At(r, Bad("summaries are null but the budget is not dense"));
      if (Status st = detail::CheckSummaries(e.plan, *in.summaries); !st.ok()) return At(r, st);
    }
  }
  return OkStatus();
}

void AttentionOp::RunSelect(const StepPlan& plan, const LayerArgs& args, int ith, int nth, LayerStats* stats) const {
  int64_t* kns = args.measure_kernel_time ? &stats->kernel_ns : nullptr;
  for (size_t r = 0; r < plan.num_requests_; ++r) {
    const StepPlan::Entry& e = plan.entries_[r];
    if (e.plan.empty) continue;
    const RequestWork w = Work(e, args.inputs[r], args.budget_scale, args.workspace);
    if (w.rule != detail::DenseRule::kSelect) {
      if (ith == 0) {
        SelectionStats s;
        detail::DenseStats(w.plan, w.rule == detail::DenseRule::kFallback, &s);
        AddStats(s, stats);
        stats->dense_requests += 1;
      }
      continue;
    }
    SelectionStats s;
    s.dense = true;
    detail::SelectRun(w.plan, *kt_, w.q, *args.inputs[r].summaries, w.sel, w.ws, ith, nth, &s, kns);
    AddStats(s, stats);
  }
}

void AttentionOp::RunAttend(const StepPlan& plan, const LayerArgs& args, int ith, int nth, LayerStats* stats) const {
  int64_t* kns = args.measure_kernel_time ? &stats->kernel_ns : nullptr;
  for (size_t r = 0; r < plan.num_requests_; ++r) {
    const StepPlan::Entry& e = plan.entries_[r];
    if (e.plan.empty) continue;
    const RequestWork w = Work(e, args.inputs[r], args.budget_scale, args.workspace);
    const ConstBlockSelection sel = w.rule == detail::DenseRule::kSelect
                                        ? ConstBlockSelection{w.sel.indices, w.sel.counts, w.sel.capacity}
                                        : ConstBlockSelection{};
    detail::AttendRun(w.plan, *kt_, w.q, w.kv, sel, w.out, args.inputs[r].lse, w.ws, ith, nth, kns);
  }
}

void AttentionOp::RunMerge(const StepPlan& plan, const LayerArgs& args, int ith, int nth) const {
  for (size_t r = 0; r < plan.num_requests_; ++r) {
    const StepPlan::Entry& e = plan.entries_[r];
    if (e.plan.empty || e.plan.max_chunks <= 1) continue;
    const RequestWork w = Work(e, args.inputs[r], args.budget_scale, args.workspace);
    const ConstBlockSelection sel = w.rule == detail::DenseRule::kSelect
                                        ? ConstBlockSelection{w.sel.indices, w.sel.counts, w.sel.capacity}
                                        : ConstBlockSelection{};
    detail::MergeRunAll(w.plan, *kt_, sel, w.out, args.inputs[r].lse, w.ws, ith, nth);
  }
}

namespace {
Status CheckPartition(int ith, int nth) {
  if (nth < 1 || ith < 0 || ith >= nth)
    return Bad("partition ith " + std::to_string(ith) + " of nth " + std::to_string(nth) + " is out of range");
  return OkStatus();
}
LayerStats FreshStats() {
  LayerStats s;
  s.selection.dense = true;
  return s;
}
}  // namespace

Status AttentionOp::SelectPhase(const StepPlan& plan, const LayerArgs& args, int ith, int nth,
                                LayerStats* stats) const {
  if (Status st = CheckPartition(ith, nth); !st.ok()) return st;
  if (Status st = CheckLayer(plan, args); !st.ok()) return st;
  LayerStats s = FreshStats();
  RunSelect(plan, args, ith, nth, &s);
  if (stats) *stats = s;
  return OkStatus();
}

Status AttentionOp::AttendPhase(const StepPlan& plan, const LayerArgs& args, int ith, int nth,
                                LayerStats* stats) const {
  if (Status st = CheckPartition(ith, nth); !st.ok()) return st;
  if (Status st = CheckLayer(plan, args); !st.ok()) return st;
  LayerStats s = FreshStats();
  RunAttend(plan, args, ith, nth, &s);
  if (stats) *stats = s;
  return OkStatus();
}

Status AttentionOp::MergePhase(const StepPlan& plan, const LayerArgs& args, int ith, int nth, LayerStats* stats) const {
  if (Status st = CheckPartition(ith, nth); !st.ok()) return st;
  if (Status st = CheckLayer(plan, args); !st.ok()) return st;
  RunMerge(plan, args, ith, nth);
  if (stats) *stats = FreshStats();
  return OkStatus();
}

Status AttentionOp::RunLayer(const StepPlan& plan, const LayerArgs& args, ThreadPool* pool, LayerStats* stats) const {
  if (Status st = CheckLayer(plan, args); !st.ok()) return st;
  LayerStats total = FreshStats();
  if (pool == nullptr || pool->size() == 1) {
    RunSelect(plan, args, 0, 1, &total);
    RunAttend(plan, args, 0, 1, &total);
    RunMerge(plan, args, 0, 1);
  } else {
    // Per-thread counters on the stack (no allocation); summed in thread order afterwards.
    constexpr int kMaxThreads = 256;
    LayerStats part[kMaxThreads];
    const int nth = pool->size() < kMaxThreads ? pool->size() : kMaxThreads;
    for (int i = 0; i < nth; ++i) part[i] = FreshStats();
    pool->Run([&](int ith, int n) {
      if (ith < nth) RunSelect(plan, args, ith, n < nth ? n : nth, &part[ith]);
    });
    pool->Run([&](int ith, int n) {
      if (ith < nth) RunAttend(plan, args, ith, n < nth ? n : nth, &part[ith]);
    });
    pool->Run([&](int ith, int n) {
      if (ith < nth) RunMerge(plan, args, ith, n < nth ? n : nth);
    });
    for (int i = 0; i < nth; ++i) {
      AddStats(part[i].selection, &total);
      total.dense_requests += part[i].dense_requests;
      total.kernel_ns += part[i].kernel_ns;
    }
  }
  if (stats) *stats = total;
  return OkStatus();
}

Status MergeAttentionStates(int64_t rows, int32_t head_dim, const float* v_other, int64_t v_other_stride,
                            const float* lse_other, float* v, int64_t v_stride, float* lse) {
  if (rows < 0) return Bad("rows must be >= 0, got " + std::to_string(rows));
  if (head_dim < 1) return Bad("head_dim must be >= 1, got " + std::to_string(head_dim));
  if (head_dim > kernels::kMaxHeadDim)
    return Bad("head_dim must be <= " + std::to_string(kernels::kMaxHeadDim) + ", got " + std::to_string(head_dim));
  if (rows == 0) return OkStatus();
  if (v_other == nullptr || lse_other == nullptr || v == nullptr || lse == nullptr)
    return Bad("MergeAttentionStates: a pointer is null");
  if ((rows > 1 && (v_stride < head_dim || v_other_stride < head_dim)))
    return Bad("MergeAttentionStates: strides must be >= head_dim (" + std::to_string(head_dim) + "), got " +
               std::to_string(v_stride) + " and " + std::to_string(v_other_stride));
  // Every row's address must be defined pointer arithmetic: (rows - 1) * stride + head_dim floats
  // (and rows floats of lse).
  int64_t extent = 0, bytes = 0;
  for (const auto& [stride, name] : {std::pair{v_stride, "v_stride"}, std::pair{v_other_stride, "v_other_stride"}})
    if (!(detail::CheckedExtent(rows, stride, head_dim, &extent) &&
          detail::CheckedBytes(extent, sizeof(float), &bytes)))
      return OutOfRange("MergeAttentionStates: rows " + std::to_string(rows) + " x " + name + " " +
                        std::to_string(stride) + " overflows the address space");
  if (!detail::CheckedBytes(rows, sizeof(float), &bytes))
    return OutOfRange("MergeAttentionStates: rows " + std::to_string(rows) + " overflows the address space");
  for (int64_t r = 0; r < rows; ++r) {
    const float la = lse[r], lb = lse_other[r];
    float* va = v + r * v_stride;
    const float* vb = v_other + r * v_other_stride;
    if (!(lb > -INFINITY) && !std::isnan(lb)) continue;  // the other state saw no key
    if (!(la > -INFINITY) && !std::isnan(la)) {          // this one saw none: take the other
      for (int32_t d = 0; d < head_dim; ++d) va[d] = vb[d];
      lse[r] = lb;
      continue;
    }
    const float m = std::max(la, lb);
    const float wa = std::exp(la - m), wb = std::exp(lb - m);
    const float inv = 1.0f / (wa + wb);
    for (int32_t d = 0; d < head_dim; ++d) va[d] = (wa * va[d] + wb * vb[d]) * inv;
    lse[r] = m + std::log(wa + wb);
  }
  return OkStatus();
}

}  // namespace sparsebudget
