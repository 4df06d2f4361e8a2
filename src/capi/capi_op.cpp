// C API of the engine API (op.hpp): sb_op, sb_step_plan, the layer calls and sb_merge_states.
// The C layer only translates: every check is the C++ call's, apart from struct sizes and raw
// enum values. The per-layer input array is passed through without a copy (its layout equals
// LayerInput's, checked below), so no layer call allocates.
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "capi/capi_internal.hpp"
#include "sparsebudget/op.hpp"

struct sb_op {
  sparsebudget::AttentionOp op;
};
struct sb_step_plan {
  sparsebudget::StepPlan plan;
  std::vector<sparsebudget::StepRequest> requests;  // translation buffer, reserved at create
};

namespace sparsebudget::capi {
namespace {

// sb_layer_input is read in place as LayerInput; sb_summaries* becomes BlockSummaries*, which
// is its first member of a standard-layout struct (pointer-interconvertible).
static_assert(SB_MAX_STEP_REQUESTS == kMaxStepRequests, "the C and C++ batch caps must agree");
// The first version of sb_op_config was 40 bytes (36 of fields, then padding): callers built
// against it pass struct_size 40, and ReadIn reads no further.
static_assert(offsetof(sb_op_config, padding0) == 36 && offsetof(sb_op_config, selection_scope) == 40,
              "sb_op_config's first version must stay a prefix");
static_assert(std::is_standard_layout_v<sb_summaries> && offsetof(sb_summaries, summaries) == 0,
              "sb_summaries must start with its BlockSummaries");
// (std::alignment_of_v: clang-tidy 14 takes alignof(X) == alignof(Y) for a redundant expression.)
static_assert(sizeof(sb_layer_input) == sizeof(LayerInput) &&
                  std::alignment_of_v<sb_layer_input> == std::alignment_of_v<LayerInput> &&
                  offsetof(sb_layer_input, q) == offsetof(LayerInput, q) &&
                  offsetof(sb_layer_input, out) == offsetof(LayerInput, out) &&
                  offsetof(sb_layer_input, k) == offsetof(LayerInput, k) &&
                  offsetof(sb_layer_input, v) == offsetof(LayerInput, v) &&
                  offsetof(sb_layer_input, summaries) == offsetof(LayerInput, summaries) &&
                  offsetof(sb_layer_input, lse) == offsetof(LayerInput, lse),
              "sb_layer_input must mirror LayerInput");

sb_status ToArgs(const char* fn, const sb_layer_args* in, LayerArgs* out) {
  sb_layer_args a{};
  if (sb_status st = ReadIn(fn, "args", in, sizeof(sb_layer_args), &a); st != SB_OK) return st;
  out->inputs = reinterpret_cast<const LayerInput*>(a.inputs);
  out->budget_scale = a.budget_scale;
  out->workspace = a.workspace;
  out->measure_kernel_time = a.measure_kernel_time != 0;
  return SB_OK;
}

void ToStats(const LayerStats& s, sb_layer_stats* out) {
  if (out == nullptr) return;
  sb_layer_stats r{};
  r.units = s.selection.units;
  r.units_clamped = s.selection.units_clamped;
  r.kept_blocks = s.selection.kept_blocks;
  r.causal_blocks = s.selection.causal_blocks;
  r.dense_requests = s.dense_requests;
  r.kernel_ns = s.kernel_ns;
  WriteOut(out, r);
}

sb_status ToRequest(const char* fn, const sb_step_request* in, int32_t r, StepRequest* out) {
  // Names for messages without a heap allocation (this runs every step).
  char what[48], budget[48], kv[48];
  (void)std::snprintf(what, sizeof what, "requests[%d]", static_cast<int>(r));
  (void)std::snprintf(budget, sizeof budget, "requests[%d].budget", static_cast<int>(r));
  (void)std::snprintf(kv, sizeof kv, "requests[%d].kv", static_cast<int>(r));
  // An array element: sb_op_plan steps by this library's sizeof, so a larger struct_size cannot
  // be a newer header's request (and ReadIn would scan past the caller's array for its tail).
  if (in->struct_size > sizeof(sb_step_request))
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + "->struct_size " + std::to_string(in->struct_size) + " is not this library's " +
                    std::to_string(sizeof(sb_step_request)) + " (requests is an array: set it to sizeof the struct)");
  sb_step_request v{};
  if (sb_status st = ReadIn(fn, what, in, sizeof(sb_step_request), &v); st != SB_OK) return st;
  if (sb_status st = CheckNested(fn, budget, v.budget.struct_size, offsetof(sb_step_request, budget), sizeof(sb_budget),
                                 v.struct_size, sizeof(sb_step_request));
      st != SB_OK)
    return st;
  if (sb_status st = CheckNested(fn, kv, v.kv.struct_size, offsetof(sb_step_request, kv), sizeof(sb_kv_view),
                                 v.struct_size, sizeof(sb_step_request));
      st != SB_OK)
    return st;
  out->context_length = v.context_length;
  out->num_queries = v.num_queries;
  if (sb_status st = ToBudget(fn, budget, &in->budget, &out->budget); st != SB_OK) return st;
  if (sb_status st = ToKvView(fn, kv, &in->kv, &out->kv); st != SB_OK) return st;
  out->q = QueryView{nullptr, v.q_token_stride, v.q_head_stride};
  out->out = OutputView{nullptr, v.out_token_stride, v.out_head_stride};
  return SB_OK;
}

}  // namespace
}  // namespace sparsebudget::capi

using namespace sparsebudget;
namespace {
template <typename Phase>
sb_status RunPhase(const char* fn, const sb_op* op, const sb_step_plan* plan, const sb_layer_args* args,
                   sb_layer_stats* stats, Phase phase) {
  return capi::Guard(fn, [&]() -> sb_status {
    if (op == nullptr) return capi::Null(fn, "op");
    if (plan == nullptr) return capi::Null(fn, "plan");
    if (stats != nullptr)
      if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_layer_stats)); st != SB_OK) return st;
    LayerArgs a;
    if (sb_status st = capi::ToArgs(fn, args, &a); st != SB_OK) return st;
    LayerStats s;
    if (Status st = phase(a, &s); !st.ok()) return capi::Fail(fn, st);
    capi::ToStats(s, stats);
    return capi::Ok();
  });
}
}  // namespace

using capi::Fail;
using capi::Guard;
using capi::Null;
using capi::Ok;

extern "C" {

void sb_op_config_init(sb_op_config* config) {
  if (config == nullptr) return;
  *config = sb_op_config{};
  config->struct_size = sizeof(sb_op_config);
  config->block_size = 64;
  config->kv_dtype = SB_DTYPE_F32;
  config->scoring = SB_SCORING_BOUND;
}

sb_status sb_op_create(const sb_op_config* config, sb_op** op) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (op == nullptr) return Null(fn, "op");
    *op = nullptr;
    sb_op_config c{};
    // First version: up to scale and its tail padding (padding0, ignored); selection_scope came
    // later (zero = per kv head).
    if (sb_status st = capi::ReadIn(fn, "config", config, offsetof(sb_op_config, selection_scope), &c); st != SB_OK)
      return st;
    if (c.reserved != 0)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "config->reserved must be 0, got " + std::to_string(c.reserved));
    const int dt = capi::EnumBits(c.kv_dtype), sc = capi::EnumBits(c.scoring);
    AttentionOpConfig oc;
    oc.num_q_heads = c.num_q_heads;
    oc.num_kv_heads = c.num_kv_heads;
    oc.head_dim = c.head_dim;
    oc.block_size = c.block_size;
    // Raw values go through as ints; AttentionOp::Create rejects the ones outside the enums.
    oc.kv_dtype = static_cast<DType>(dt);
    oc.scoring = static_cast<Scoring>(sc);
    oc.selection_scope = static_cast<SelectionScope>(capi::EnumBits(c.selection_scope));
    oc.scale = c.scale;
    Expected<AttentionOp> made = AttentionOp::Create(oc);
    if (!made.ok()) return Fail(fn, made.status());
    *op = new sb_op{*made};
    return Ok();
  });
}

void sb_op_destroy(sb_op* op) { delete op; }

sb_status sb_op_isa(const sb_op* op, sb_isa* isa) {
  const char* fn = __func__;
  if (op == nullptr) return Null(fn, "op");
  if (isa == nullptr) return Null(fn, "isa");
  *isa = static_cast<sb_isa>(op->op.isa());
  return Ok();
}

void sb_step_request_init(sb_step_request* request) {
  if (request == nullptr) return;
  *request = sb_step_request{};
  request->struct_size = sizeof(sb_step_request);
  request->num_queries = 1;
  sb_budget_init(&request->budget);
  request->kv.struct_size = sizeof(sb_kv_view);
  request->kv.dtype = SB_DTYPE_F32;
}

sb_status sb_step_plan_create(int32_t max_requests, sb_step_plan** plan) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    *plan = nullptr;
    if (max_requests < 0 || max_requests > SB_MAX_STEP_REQUESTS)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  "max_requests must be in [0, " + std::to_string(SB_MAX_STEP_REQUESTS) + "], got " +
                      std::to_string(max_requests));
    auto p = std::make_unique<sb_step_plan>();
    p->plan.Reserve(max_requests);
    p->requests.reserve(static_cast<size_t>(max_requests));
    *plan = p.release();
    return Ok();
  });
}

void sb_step_plan_destroy(sb_step_plan* plan) { delete plan; }

sb_status sb_op_plan(const sb_op* op, const sb_step_request* requests, int32_t n, sb_step_plan* plan) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (op == nullptr) return Null(fn, "op");
    if (plan == nullptr) return Null(fn, "plan");
    if (n < 0 || n > SB_MAX_STEP_REQUESTS)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  "n must be in [0, " + std::to_string(SB_MAX_STEP_REQUESTS) + "], got " + std::to_string(n));
    if (n > 0 && requests == nullptr) return Null(fn, "requests");
    plan->requests.resize(static_cast<size_t>(n));  // no allocation within the reserved size
    for (int32_t r = 0; r < n; ++r)
      if (sb_status st = capi::ToRequest(fn, &requests[r], r, &plan->requests[static_cast<size_t>(r)]); st != SB_OK) {
        (void)op->op.Plan(nullptr, -1, &plan->plan);  // fails and leaves the plan empty, as any error does
        return st;
      }
    return capi::FromStatus(fn, op->op.Plan(plan->requests.data(), n, &plan->plan));
  });
}

sb_status sb_step_plan_workspace(const sb_step_plan* plan, size_t* bytes, size_t* alignment) {
  const char* fn = __func__;
  if (plan == nullptr) return Null(fn, "plan");
  if (bytes != nullptr) *bytes = plan->plan.workspace_bytes();
  if (alignment != nullptr) *alignment = plan->plan.workspace_alignment();
  return Ok();
}

void sb_layer_args_init(sb_layer_args* args) {
  if (args == nullptr) return;
  *args = sb_layer_args{};
  args->struct_size = sizeof(sb_layer_args);
  args->budget_scale = 1.0;
}

sb_status sb_op_run_layer(const sb_op* op, const sb_step_plan* plan, const sb_layer_args* args, sb_thread_pool* pool,
                          sb_layer_stats* stats) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (op == nullptr) return Null(fn, "op");
    if (plan == nullptr) return Null(fn, "plan");
    if (stats != nullptr)
      if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_layer_stats)); st != SB_OK) return st;
    LayerArgs a;
    if (sb_status st = capi::ToArgs(fn, args, &a); st != SB_OK) return st;
    LayerStats s;
    if (Status st = op->op.RunLayer(plan->plan, a, pool != nullptr ? pool->pool.get() : nullptr, &s); !st.ok())
      return Fail(fn, st);
    capi::ToStats(s, stats);
    return Ok();
  });
}

sb_status sb_op_select_phase(const sb_op* op, const sb_step_plan* plan, const sb_layer_args* args, int32_t ith,
                             int32_t nth, sb_layer_stats* stats) {
  return RunPhase(__func__, op, plan, args, stats,
                  [&](const LayerArgs& a, LayerStats* s) { return op->op.SelectPhase(plan->plan, a, ith, nth, s); });
}

sb_status sb_op_attend_phase(const sb_op* op, const sb_step_plan* plan, const sb_layer_args* args, int32_t ith,
                             int32_t nth, sb_layer_stats* stats) {
  return RunPhase(__func__, op, plan, args, stats,
                  [&](const LayerArgs& a, LayerStats* s) { return op->op.AttendPhase(plan->plan, a, ith, nth, s); });
}

sb_status sb_op_merge_phase(const sb_op* op, const sb_step_plan* plan, const sb_layer_args* args, int32_t ith,
                            int32_t nth) {
  return RunPhase(__func__, op, plan, args, nullptr,
                  [&](const LayerArgs& a, LayerStats* s) { return op->op.MergePhase(plan->plan, a, ith, nth, s); });
}

sb_status sb_merge_states(int64_t rows, int32_t head_dim, const float* v_other, int64_t v_other_stride,
                          const float* lse_other, float* v, int64_t v_stride, float* lse) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    return capi::FromStatus(fn,
                            MergeAttentionStates(rows, head_dim, v_other, v_other_stride, lse_other, v, v_stride, lse));
  });
}

}  // extern "C"
