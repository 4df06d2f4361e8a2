// The C++ side of test_capi.c: the same computations through the C++ API, exposed with C
// linkage, so the C program can check that the C API gives bit-identical results.
#include <cmath>
#include <memory>
#include <vector>

#include "capi_reference.h"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/probe.hpp"
#include "sparsebudget/sparsebudget.hpp"

namespace sb = sparsebudget;

namespace {
sb::AttentionParams ToParams(const sb_attention_params* p) {
  sb::AttentionParams r;
  r.shape.num_q_heads = p->num_q_heads;
  r.shape.num_kv_heads = p->num_kv_heads;
  r.shape.head_dim = p->head_dim;
  r.shape.block_size = p->block_size;
  r.shape.context_length = p->context_length;
  r.shape.num_queries = p->num_queries;
  r.kv_dtype = static_cast<sb::DType>(p->kv_dtype);
  r.scoring = static_cast<sb::Scoring>(p->scoring);
  r.selection_scope = static_cast<sb::SelectionScope>(p->selection_scope);
  r.scale = p->scale;
  r.budget.mode = static_cast<sb::BudgetMode>(p->budget.mode);
  r.budget.blocks = p->budget.blocks;
  r.budget.fraction = p->budget.fraction;
  r.budget.top_p = p->budget.top_p;
  r.budget.min_blocks = p->budget.min_blocks;
  r.budget.max_blocks = p->budget.max_blocks;
  r.budget.sink_blocks = p->budget.sink_blocks;
  r.budget.local_blocks = p->budget.local_blocks;
  return r;
}

struct Views {
  sb::QueryView q;
  sb::KVCacheView kv;
  sb::OutputView out;
};
Views MakeViews(const sb_attention_params* p, const float* q, const void* k, const void* v, float* out) {
  Views w;
  const int64_t d = p->head_dim;
  w.q = {q, p->num_q_heads * d, d};
  w.out = {out, p->num_q_heads * d, d};
  w.kv.k = k;
  w.kv.v = v;
  w.kv.dtype = static_cast<sb::DType>(p->kv_dtype);
  w.kv.token_stride = p->num_kv_heads * d;
  w.kv.head_stride = d;
  return w;
}
}  // namespace

extern "C" {

int ref_cpp_attend(const sb_attention_params* params, const float* q, const void* k, const void* v,
                   const int32_t* sel_indices, const int32_t* sel_counts, int64_t sel_capacity, float* out) {
  sb::AttentionPlan plan;
  if (!sb::MakePlan(ToParams(params), &plan).ok()) return 1;
  const Views w = MakeViews(params, q, k, v, out);
  std::vector<unsigned char> ws(plan.workspace_bytes + 1);
  const sb::ConstBlockSelection sel{sel_indices, sel_counts, sel_capacity};
  return sb::Attend(plan, w.q, w.kv, sel, w.out, ws.data()).ok() ? 0 : 2;
}

int ref_cpp_select(const sb_attention_params* params, const float* q, const void* k, int32_t* indices, int32_t* counts,
                   int64_t capacity) {
  sb::AttentionPlan plan;
  if (!sb::MakePlan(ToParams(params), &plan).ok()) return 1;
  const Views w = MakeViews(params, q, k, k, nullptr);
  sb::BlockSummaries::Config c;
  c.num_kv_heads = params->num_kv_heads;
  c.head_dim = params->head_dim;
  c.block_size = params->block_size;
  c.max_tokens = params->context_length;
  auto s = sb::BlockSummaries::Create(c);
  if (!s.ok() || !s->Append(w.kv, params->context_length).ok()) return 2;
  std::vector<unsigned char> ws(plan.workspace_bytes + 1);
  return sb::SelectBlocks(plan, w.q, *s, sb::BlockSelection{indices, counts, capacity}, ws.data()).ok() ? 0 : 3;
}

int ref_cpp_probe_scores(const double* scores, int64_t n, double scale_over_rows, double* blocks_90, double* entropy) {
  auto r = sb::ProbeStatsFromScores(std::vector<double>(scores, scores + n), scale_over_rows);
  if (!r.ok()) return 1;
  *blocks_90 = r->blocks_90;
  *entropy = r->entropy;
  return 0;
}

int ref_cpp_predict_fraction(const char* json, int64_t context_length, int32_t block_size, double* fraction,
                             int64_t* total_blocks) {
  auto p = sb::PredictorFromJson(json);
  if (!p.ok()) return 1;
  sb::RequestFeatures f;
  f.context_length = context_length;
  f.block_size = block_size;
  auto r = (*p)->Predict(f);
  if (!r.ok()) return 2;
  *fraction = r->budget.fraction;
  *total_blocks = r->total_blocks;
  return 0;
}

}  // extern "C"
