/// @file
/// sparsebudget/op.hpp - the engine API: one AttentionOp per model, one StepPlan per decode step
/// (or prefill chunk) for the whole batch, one RunLayer call per layer.
///
///   AttentionOp op = *AttentionOp::Create(config);     // once per model: captures the kernels
///   StepPlan plan;                                      // once per engine; reused every step
///   for each step:
///     op.Plan(requests, n, &plan);                      // lengths, KV layouts, budgets
///     workspace.resize(plan.workspace_bytes());         // aligned to plan.workspace_alignment()
///     for each layer l:
///       LayerArgs a{layer_inputs[l], budget_scale[l], workspace.data()};
///       op.RunLayer(plan, a, pool);                     // select + attend, every request
///
/// The three stages follow XNNPACK (create / reshape / setup+run) and FlashInfer (plan once per
/// batch step, reused by every layer; optional log-sum-exp output and MergeAttentionStates):
///   - AttentionOp holds the static configuration (heads, head_dim, block size, K/V type,
///     scoring, softmax scale) and the kernel table of the ISA active at Create: every call on
///     the op runs that one ISA, whatever SetMaxIsa does meanwhile.
///   - StepPlan holds what changes per step: each request's context length, query count, K/V
///     layout (strides, page table), query/output strides and budget. Plan validates all of it
///     once (the same checks as MakePlan + ValidateViews for every request) and sizes one
///     workspace for the batch.
///   - LayerArgs holds what changes per layer: each request's pointers (queries, outputs, this
///     layer's K and V, this layer's block summaries, optional LSE) and the layer's budget scale.
///     RunLayer checks only those pointers and the summaries' coverage (O(requests)).
///
/// Per request and layer, RunLayer does exactly what SparseAttention() does with the request's
/// budget scaled by LayerArgs::budget_scale (ScaleBudget), so results are bitwise those of
/// SparseAttention on the same inputs and ISA, for every thread count.
///
/// Cost, allocation, threads. Create: O(1), no allocation. Plan: O(requests + pages), allocates
/// only when the batch is larger than any batch this StepPlan held before (Reserve avoids even
/// that). RunLayer and the phase calls: no allocation, no thread creation, O(selected K/V). A
/// const AttentionOp and a StepPlan being read may be used by any number of threads; a
/// workspace by one layer call (or one set of phase calls) at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparsebudget/attention.hpp"
#include "sparsebudget/budget.hpp"
#include "sparsebudget/isa.hpp"
#include "sparsebudget/status.hpp"

namespace sparsebudget {

class ThreadPool;
namespace kernels {
struct KernelTable;
}

/// The most requests one step may carry (Plan rejects more; Reserve reserves at most this). A
/// bound so that a wrong count is an error, not a multi-gigabyte allocation.
inline constexpr int32_t kMaxStepRequests = 1 << 16;

/// Static configuration of one model's attention (validated by AttentionOp::Create).
struct AttentionOpConfig {
  int32_t num_q_heads = 0;            ///< >= 1
  int32_t num_kv_heads = 0;           ///< >= 1, divides num_q_heads
  int32_t head_dim = 0;               ///< in [1, 4096]
  int32_t block_size = 64;            ///< power of two in [16, 256]
  DType kv_dtype = DType::kF32;       ///< element type of K and V
  Scoring scoring = Scoring::kBound;  ///< block scoring used by selection
  float scale = 0.0f;                 ///< softmax scale; 0 = 1/sqrt(head_dim)
  /// Units that share one block list (attention.hpp, selection rule: Scope).
  SelectionScope selection_scope = SelectionScope::kPerKvHead;
};

/// One request of a step. `kv`, `q` and `out` give LAYOUTS only: their data pointers are ignored
/// (the layer's pointers come in LayerInput); strides, dtype, page table and num_pages (every
/// layer's pool holds that many pages) are validated by Plan and must stay valid (the page
/// table alive and unchanged) until the last RunLayer of the step. Every layer of a request
/// uses the same layout (vLLM/FlashInfer: one page table per request, one cache tensor per
/// layer).
struct StepRequest {
  int64_t context_length = 0;  ///< tokens in the cache, this step's queries included
  int32_t num_queries = 1;     ///< the LAST num_queries positions (1 = decode); 0 = skip
  Budget budget;               ///< this request's budget (layer scales come per layer)
  KVCacheView kv;              ///< K/V layout: dtype, strides, page table (k, v ignored)
  QueryView q;                 ///< query strides (data ignored)
  OutputView out;              ///< output strides (data ignored)
};

/// Counters of one RunLayer call (or of one thread's phase calls; add them up).
struct LayerStats {
  SelectionStats selection;    ///< summed over requests (dense is ANDed, dense_fallback ORed)
  int32_t dense_requests = 0;  ///< requests that ran dense in this layer (dense or fallback)
  int64_t kernel_ns = 0;       ///< time inside select and attend work items, summed over threads
                               ///< (measured only when LayerArgs::measure_kernel_time)
};

/// One request's pointers for one layer.
struct LayerInput {
  const float* q = nullptr;  ///< queries, laid out as StepRequest::q says
  float* out = nullptr;      ///< outputs, laid out as StepRequest::out says
  const void* k = nullptr;   ///< this layer's K (the request's layout / page table applies)
  const void* v = nullptr;   ///< this layer's V
  /// This layer's summaries of the request's K (covering context_length tokens, keeping the op's
  /// scoring). May be null only when the request runs dense in this layer.
  const BlockSummaries* summaries = nullptr;
  /// Optional: lse[i * num_q_heads + h] = ln sum_t exp(scale * q_ih . k_t) over the attended
  /// keys (natural log, in the units of the scaled scores), for MergeAttentionStates. Null = none.
  float* lse = nullptr;
};

/// What changes per layer.
struct LayerArgs {
  const LayerInput* inputs = nullptr;  ///< plan.num_requests() entries, in the plan's order
  /// This layer's multiplier of every request's blocks/fraction budget (ScaleBudget); 1 = as
  /// planned. Finite and > 0.
  double budget_scale = 1.0;
  void* workspace = nullptr;  ///< plan.workspace_bytes(), aligned to plan.workspace_alignment()
  bool measure_kernel_time = false;  ///< fill LayerStats::kernel_ns (two clock reads per item)
};

/// `budget` for one layer: kBlocks scaled to ceil(blocks * scale), kFraction to min(1, fraction *
/// scale); other modes unchanged. The per-layer scale is a call argument (LayerArgs), never part
/// of the Budget value. Errors if scale is not finite and > 0. O(1).
Expected<Budget> ScaleBudget(const Budget& budget, double scale);

/// A step's batch, validated; reused by every layer. Plain storage owned by the engine; filled by
/// AttentionOp::Plan. Not copyable cheaply (holds the per-request plans); movable.
class StepPlan {
 public:
  /// Reserves room for `max_requests` (at most kMaxStepRequests) so that Plan never allocates for
  /// batches up to that size.
  void Reserve(int32_t max_requests);
  int32_t num_requests() const noexcept { return static_cast<int32_t>(num_requests_); }
  /// Bytes of the workspace every LayerArgs of this step needs (may be 0).
  size_t workspace_bytes() const noexcept { return workspace_bytes_; }
  /// Alignment the workspace must have (64).
  size_t workspace_alignment() const noexcept { return 64; }
  /// Request r's single-request plan (its budget unscaled), for inspection and for engines that
  /// mix this API with the per-request calls; null when r is outside [0, num_requests()). Valid
  /// until the next Plan into this StepPlan. O(1).
  const AttentionPlan* request_plan(int32_t r) const noexcept {
    return r >= 0 && static_cast<size_t>(r) < num_requests_ ? &entries_[static_cast<size_t>(r)].plan
                                                            : nullptr;
  }

  /// One request as Plan stored it (its layouts, its plan, its workspace region).
  struct Entry {
    AttentionPlan plan;           ///< the single-request plan (unscaled budget)
    KVCacheView kv;               ///< K/V layout (k, v unset)
    QueryView q;                  ///< query strides (data unset)
    OutputView out;               ///< output strides (data unset)
    size_t workspace_offset = 0;  ///< bytes from the workspace start, a multiple of 64
  };

 private:
  friend class AttentionOp;
  std::vector<Entry> entries_;
  size_t num_requests_ = 0;
  size_t workspace_bytes_ = 0;
  const void* op_ = nullptr;  // the op that filled it (its config is checked per call)
};

/// The attention of one model configuration (see the file comment).
class AttentionOp {
 public:
  /// Validates `config` (the message names the bad field) and captures the kernel table of
  /// ActiveIsa(). O(1), no allocation.
  static Expected<AttentionOp> Create(const AttentionOpConfig& config);

  const AttentionOpConfig& config() const noexcept { return config_; }
  /// The ISA every call on this op runs.
  Isa isa() const noexcept;

  /// Validates the batch (every field of every request: shape, budget, K/V layout and page table
  /// bounds, q/out strides; the message names the request and the value) and fills `plan`.
  /// O(requests + pages). Allocates only when n exceeds every earlier batch of this StepPlan.
  /// n in [0, kMaxStepRequests]. On error `plan` holds no requests.
  Status Plan(const StepRequest* requests, int32_t n, StepPlan* plan) const;

  /// Select + attend of every request for one layer. With `pool`, the three phases below run on
  /// its threads; without, on the calling thread. Allocates nothing, spawns nothing.
  Status RunLayer(const StepPlan& plan, const LayerArgs& args, ThreadPool* pool = nullptr,
                  LayerStats* stats = nullptr) const;

  /// @name The same work on the engine's own threads (ggml's ith/nth)
  /// Call SelectPhase(ith, nth) on nth threads, a barrier, AttendPhase(ith, nth) on nth threads,
  /// a barrier, MergePhase(ith, nth) on nth threads, with the same args. Each thread takes its
  /// slice of every request, so any nth gives bit-identical results. `stats` receives this
  /// thread's counts (add the threads'). Spawns nothing, allocates nothing.
  ///@{
  Status SelectPhase(const StepPlan& plan, const LayerArgs& args, int ith, int nth,
                     LayerStats* stats = nullptr) const;
  Status AttendPhase(const StepPlan& plan, const LayerArgs& args, int ith, int nth,
                     LayerStats* stats = nullptr) const;
  Status MergePhase(const StepPlan& plan, const LayerArgs& args, int ith, int nth,
                    LayerStats* stats = nullptr) const;
  ///@}

  AttentionOp() = default;

 private:
  Status CheckLayer(const StepPlan& plan, const LayerArgs& args) const;
  void RunSelect(const StepPlan& plan, const LayerArgs& args, int ith, int nth,
                 LayerStats* stats) const;
  void RunAttend(const StepPlan& plan, const LayerArgs& args, int ith, int nth,
                 LayerStats* stats) const;
  void RunMerge(const StepPlan& plan, const LayerArgs& args, int ith, int nth) const;

  AttentionOpConfig config_;
  const kernels::KernelTable* kt_ = nullptr;
};

/// Folds one partial attention state into another (FlashInfer's merge_state_in_place): for each
/// of `rows` rows, with weights a = exp(lse - M), b = exp(lse_other - M), M = max of the two,
///   v   <- (a * v + b * v_other) / (a + b)
///   lse <- M + ln(a + b)
/// so attention over disjoint key sets (cascades, split-K across an engine's workers) merges
/// into attention over their union, exact up to fp32 rounding. A state with lse = -inf (no key)
/// leaves the other unchanged. Rows are head_dim floats at v + r * v_stride (v_other likewise);
/// lse entries are contiguous. head_dim in [1, 4096]; with rows > 1 each stride >= head_dim.
/// Errors: kInvalidArgument (null pointers, bad sizes), kOutOfRange (rows x stride overflows the
/// address space). O(rows x head_dim), no allocation, thread-safe for disjoint rows.
Status MergeAttentionStates(int64_t rows, int32_t head_dim, const float* v_other,
                            int64_t v_other_stride, const float* lse_other, float* v,
                            int64_t v_stride, float* lse);

}  // namespace sparsebudget
