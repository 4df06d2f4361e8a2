// C API: plans, views, block summaries, selection and the attention execute calls.
#include <cstring>
#include <memory>
#include <string>

#include <cstddef>

#include "capi/capi_internal.hpp"
#include "sparsebudget/attention.hpp"
#include "sparsebudget/isa.hpp"
#include "sparsebudget/thread_pool.hpp"

namespace sparsebudget::capi {
namespace {

static_assert(static_cast<int>(SB_DTYPE_BF16) == static_cast<int>(DType::kBF16) &&
                  static_cast<int>(SB_DTYPE_Q8_0) == static_cast<int>(DType::kQ8_0) &&
                  static_cast<int>(SB_DTYPE_F16) == static_cast<int>(DType::kF16) &&
                  static_cast<int>(SB_SCORING_BOUND) == static_cast<int>(Scoring::kBound) &&
                  static_cast<int>(SB_SELECTION_ALL_KV_HEADS) == static_cast<int>(SelectionScope::kAllKvHeads),
              "sb_dtype / sb_scoring / sb_selection_scope must mirror DType / Scoring / SelectionScope");

// The first version of sb_attention_params was 112 bytes (it ended with the budget).
static_assert(offsetof(sb_attention_params, selection_scope) == 112,
              "sb_attention_params' first version must stay a prefix");

std::string S(int64_t v) { return std::to_string(v); }

sb_status ToParams(const char* fn, const sb_attention_params* in, AttentionParams* out) {
  sb_attention_params p{};
  // First version: up to the budget (selection_scope came later, zero = per kv head).
  if (sb_status st = ReadIn(fn, "params", in, offsetof(sb_attention_params, selection_scope), &p); st != SB_OK)
    return st;
  AttentionParams r;
  r.shape.num_q_heads = p.num_q_heads;
  r.shape.num_kv_heads = p.num_kv_heads;
  r.shape.head_dim = p.head_dim;
  r.shape.block_size = p.block_size;
  r.shape.context_length = p.context_length;
  r.shape.num_queries = p.num_queries;
  const int dt = EnumBits(p.kv_dtype);
  if (dt < 0 || dt > 3) return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "params->kv_dtype is not an sb_dtype: " + S(dt));
  const int sc = EnumBits(p.scoring);
  if (sc < 0 || sc > 1) return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "params->scoring is not an sb_scoring: " + S(sc));
  const int scope = EnumBits(p.selection_scope);
  if (scope < 0 || scope > 1)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "params->selection_scope is not an sb_selection_scope: " + S(scope));
  if (p.reserved != 0) return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "params->reserved must be 0, got " + S(p.reserved));
  r.kv_dtype = static_cast<DType>(dt);
  r.scoring = static_cast<Scoring>(sc);
  r.selection_scope = static_cast<SelectionScope>(scope);
  r.scale = p.scale;
  if (sb_status st = CheckNested(fn, "params->budget", p.budget.struct_size, offsetof(sb_attention_params, budget),
                                 sizeof(sb_budget), p.struct_size, sizeof(sb_attention_params));
      st != SB_OK)
    return st;
  if (sb_status st = ToBudget(fn, "params->budget", &in->budget, &r.budget); st != SB_OK) return st;
  *out = r;
  return SB_OK;
}

sb_status ToQuery(const char* fn, const sb_query_view* in, QueryView* out) {
  sb_query_view v{};
  if (sb_status st = ReadIn(fn, "q", in, sizeof(sb_query_view), &v); st != SB_OK) return st;
  out->data = v.data;
  out->token_stride = v.token_stride;
  out->head_stride = v.head_stride;
  return SB_OK;
}

sb_status ToOutput(const char* fn, const sb_output_view* in, OutputView* out) {
  sb_output_view v{};
  if (sb_status st = ReadIn(fn, "out", in, sizeof(sb_output_view), &v); st != SB_OK) return st;
  out->data = v.data;
  out->token_stride = v.token_stride;
  out->head_stride = v.head_stride;
  return SB_OK;
}

sb_status ToKv(const char* fn, const char* what, const sb_kv_view* in, KVCacheView* out) {
  sb_kv_view v{};
  if (sb_status st = ReadIn(fn, what, in, sizeof(sb_kv_view), &v); st != SB_OK) return st;
  const int dt = EnumBits(v.dtype);
  if (dt < 0 || dt > 3)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT, std::string(what) + "->dtype is not an sb_dtype: " + S(dt));
  out->k = v.k;
  out->v = v.v;
  out->dtype = static_cast<DType>(dt);
  out->token_stride = v.token_stride;
  out->head_stride = v.head_stride;
  out->page_table = v.page_table;
  out->page_size = v.page_size;
  out->page_stride = v.page_stride;
  out->num_pages = v.num_pages;
  if (v.page_table != nullptr && v.page_stride < 0)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + "->page_stride must be >= 0, got " + S(v.page_stride));
  return SB_OK;
}

// Selection: NULL allowed when `optional` (dense); otherwise both buffers must be set.
sb_status ToSelection(const char* fn, const char* what, const sb_block_selection* in, bool optional,
                      BlockSelection* out) {
  if (in == nullptr) {
    if (optional) {
      *out = BlockSelection{};
      return SB_OK;
    }
    return Null(fn, what);
  }
  sb_block_selection v{};
  if (sb_status st = ReadIn(fn, what, in, sizeof(sb_block_selection), &v); st != SB_OK) return st;
  if (v.indices == nullptr) return Fail(fn, SB_ERROR_INVALID_ARGUMENT, std::string(what) + "->indices is null");
  if (v.counts == nullptr) return Fail(fn, SB_ERROR_INVALID_ARGUMENT, std::string(what) + "->counts is null");
  out->indices = v.indices;
  out->counts = v.counts;
  out->capacity = v.capacity;
  return SB_OK;
}

ConstBlockSelection AsConst(const BlockSelection& s) { return ConstBlockSelection{s.indices, s.counts, s.capacity}; }

void ToStats(const SelectionStats& st, sb_selection_stats* out) {
  if (out == nullptr) return;
  sb_selection_stats r{};
  r.units = st.units;
  r.units_clamped = st.units_clamped;
  r.kept_blocks = st.kept_blocks;
  r.causal_blocks = st.causal_blocks;
  r.dense = st.dense ? 1 : 0;
  WriteOut(out, r);
}

}  // namespace

sb_status ToKvView(const char* fn, const char* what, const sb_kv_view* in, KVCacheView* out) {
  return ToKv(fn, what, in, out);
}

}  // namespace sparsebudget::capi

using namespace sparsebudget;  // NOLINT(google-build-using-namespace): this file is the boundary
using capi::Fail;
using capi::Guard;
using capi::Null;
using capi::Ok;

extern "C" {

void sb_attention_params_init(sb_attention_params* params) {
  if (params == nullptr) return;
  std::memset(static_cast<void*>(params), 0, sizeof(*params));
  params->struct_size = sizeof(sb_attention_params);
  params->block_size = 64;
  params->num_queries = 1;
  params->kv_dtype = SB_DTYPE_F32;
  params->scoring = SB_SCORING_BOUND;
  sb_budget_init(&params->budget);
}

sb_status sb_plan_create(const sb_attention_params* params, sb_plan** plan) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    *plan = nullptr;
    AttentionParams p;
    if (sb_status st = capi::ToParams(fn, params, &p); st != SB_OK) return st;
    auto h = std::make_unique<sb_plan>();
    if (Status st = MakePlan(p, &h->plan); !st.ok()) return Fail(fn, st);
    if (capi::LogEnabled(SB_LOG_DEBUG)) {
      const AttentionPlan& a = h->plan;
      capi::Log(SB_LOG_DEBUG,
                "plan: q_heads=" + capi::S(p.shape.num_q_heads) + " kv_heads=" + capi::S(p.shape.num_kv_heads) +
                    " head_dim=" + capi::S(p.shape.head_dim) + " block=" + capi::S(p.shape.block_size) +
                    " L=" + capi::S(p.shape.context_length) + " queries=" + capi::S(p.shape.num_queries) +
                    " dtype=" + DTypeName(p.kv_dtype) + " budget=" + BudgetModeName(p.budget.mode) +
                    " units=" + capi::S(a.num_units) +
                    " workspace=" + capi::S(static_cast<int64_t>(a.workspace_bytes)) + " isa=" + IsaName(ActiveIsa()));
    }
    *plan = h.release();
    return Ok();
  });
}

void sb_plan_destroy(sb_plan* plan) { delete plan; }

sb_status sb_quantize_q8_0(const float* in, int64_t n, void* out) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status { return capi::FromStatus(fn, QuantizeQ8_0(in, n, out)); });
}

sb_status sb_plan_get_info(const sb_plan* plan, sb_plan_info* info) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    if (sb_status st = capi::CheckOut(fn, "info", info, sizeof(sb_plan_info)); st != SB_OK) return st;
    const AttentionPlan& p = plan->plan;
    sb_plan_info r{};
    r.workspace_bytes = p.workspace_bytes;
    r.num_blocks = p.num_blocks;
    r.num_query_blocks = p.num_query_blocks;
    r.first_query_block = p.first_query_block;
    r.num_units = p.num_units;
    r.group = p.group;
    r.scale = p.scale;
    capi::WriteOut(info, r);
    return Ok();
  });
}

sb_status sb_plan_workspace_bytes(const sb_plan* plan, size_t* bytes) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    if (bytes == nullptr) return Null(fn, "bytes");
    *bytes = plan->plan.workspace_bytes;
    return Ok();
  });
}

sb_status sb_validate_views(const sb_plan* plan, const sb_query_view* q, const sb_kv_view* kv,
                            const sb_output_view* out) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    QueryView qv;
    KVCacheView kvv;
    OutputView ov;
    if (sb_status st = capi::ToQuery(fn, q, &qv); st != SB_OK) return st;
    if (sb_status st = capi::ToKv(fn, "kv", kv, &kvv); st != SB_OK) return st;
    if (out != nullptr)
      if (sb_status st = capi::ToOutput(fn, out, &ov); st != SB_OK) return st;
    return capi::FromStatus(fn, ValidateViews(plan->plan, qv, kvv, out != nullptr ? &ov : nullptr));
  });
}

void sb_summaries_config_init(sb_summaries_config* config) {
  if (config == nullptr) return;
  std::memset(static_cast<void*>(config), 0, sizeof(*config));
  config->struct_size = sizeof(sb_summaries_config);
  config->block_size = 64;
  config->keep_mean = 1;
  config->keep_bound = 1;
}

sb_status sb_summaries_create(const sb_summaries_config* config, sb_summaries** summaries) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (summaries == nullptr) return Null(fn, "summaries");
    *summaries = nullptr;
    sb_summaries_config c{};
    if (sb_status st = capi::ReadIn(fn, "config", config, sizeof(sb_summaries_config), &c); st != SB_OK) return st;
    BlockSummaries::Config cc;
    cc.num_kv_heads = c.num_kv_heads;
    cc.head_dim = c.head_dim;
    cc.block_size = c.block_size;
    cc.max_tokens = c.max_tokens;
    cc.mean = c.keep_mean != 0;
    cc.bound = c.keep_bound != 0;
    Expected<BlockSummaries> s = BlockSummaries::Create(cc);
    if (!s.ok()) return Fail(fn, s.status());
    auto h = std::make_unique<sb_summaries>();
    h->summaries = std::move(s).value();
    *summaries = h.release();
    return Ok();
  });
}

void sb_summaries_destroy(sb_summaries* summaries) { delete summaries; }

sb_status sb_summaries_append(sb_summaries* summaries, const sb_kv_view* kv, int64_t new_num_tokens) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (summaries == nullptr) return Null(fn, "summaries");
    KVCacheView v;
    if (sb_status st = capi::ToKv(fn, "kv", kv, &v); st != SB_OK) return st;
    return capi::FromStatus(fn, summaries->summaries.Append(v, new_num_tokens));
  });
}

sb_status sb_summaries_reset(sb_summaries* summaries) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (summaries == nullptr) return Null(fn, "summaries");
    summaries->summaries.Reset();
    return Ok();
  });
}

sb_status sb_summaries_num_tokens(const sb_summaries* summaries, int64_t* num_tokens) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (summaries == nullptr) return Null(fn, "summaries");
    if (num_tokens == nullptr) return Null(fn, "num_tokens");
    *num_tokens = summaries->summaries.num_tokens();
    return Ok();
  });
}

sb_status sb_summaries_bytes(const sb_summaries* summaries, size_t* bytes) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (summaries == nullptr) return Null(fn, "summaries");
    if (bytes == nullptr) return Null(fn, "bytes");
    *bytes = summaries->summaries.bytes();
    return Ok();
  });
}

sb_status sb_summaries_block(const sb_summaries* summaries, int32_t head, int64_t block, const float** key_sum,
                             const float** key_min, const float** key_max, int64_t* count) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (summaries == nullptr) return Null(fn, "summaries");
    const BlockSummaries& s = summaries->summaries;
    if (head < 0 || head >= s.config().num_kv_heads)
      return Fail(fn, SB_ERROR_OUT_OF_RANGE,
                  "head " + capi::S(head) + " is outside [0, " + capi::S(s.config().num_kv_heads) + ")");
    if (block < 0 || block >= s.num_blocks())
      return Fail(
          fn, SB_ERROR_OUT_OF_RANGE,
          "block " + capi::S(block) + " is outside [0, " + capi::S(s.num_blocks()) + ") (blocks holding tokens)");
    if (key_sum != nullptr) *key_sum = s.key_sum(head, block);
    if (key_min != nullptr) *key_min = s.key_min(head, block);
    if (key_max != nullptr) *key_max = s.key_max(head, block);
    if (count != nullptr) *count = s.block_count(block);
    return Ok();
  });
}

sb_status sb_thread_pool_create(int32_t num_threads, sb_thread_pool** pool) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (pool == nullptr) return Null(fn, "pool");
    *pool = nullptr;
    Expected<std::unique_ptr<ThreadPool>> p = ThreadPool::Create(num_threads);
    if (!p.ok()) return Fail(fn, p.status());
    *pool = new sb_thread_pool{std::move(p).value()};
    return Ok();
  });
}

void sb_thread_pool_destroy(sb_thread_pool* pool) { delete pool; }

sb_status sb_select_blocks(const sb_plan* plan, const sb_query_view* q, const sb_summaries* summaries,
                           const sb_block_selection* selection, void* workspace, sb_selection_stats* stats) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    if (summaries == nullptr) return Null(fn, "summaries");
    if (stats != nullptr)
      if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_selection_stats)); st != SB_OK) return st;
    QueryView qv;
    BlockSelection sel;
    if (sb_status st = capi::ToQuery(fn, q, &qv); st != SB_OK) return st;
    if (sb_status st = capi::ToSelection(fn, "selection", selection, false, &sel); st != SB_OK) return st;
    SelectionStats s;
    if (Status st = SelectBlocks(plan->plan, qv, summaries->summaries, sel, workspace, &s); !st.ok())
      return Fail(fn, st);
    capi::ToStats(s, stats);
    return Ok();
  });
}

sb_status sb_attend(const sb_plan* plan, const sb_query_view* q, const sb_kv_view* kv,
                    const sb_block_selection* selection, const sb_output_view* out, void* workspace,
                    sb_thread_pool* pool) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    QueryView qv;
    KVCacheView kvv;
    OutputView ov;
    BlockSelection sel;
    if (sb_status st = capi::ToQuery(fn, q, &qv); st != SB_OK) return st;
    if (sb_status st = capi::ToKv(fn, "kv", kv, &kvv); st != SB_OK) return st;
    if (sb_status st = capi::ToOutput(fn, out, &ov); st != SB_OK) return st;
    if (sb_status st = capi::ToSelection(fn, "selection", selection, true, &sel); st != SB_OK) return st;
    return capi::FromStatus(fn, Attend(plan->plan, qv, kvv, capi::AsConst(sel), ov, workspace,
                                       pool != nullptr ? pool->pool.get() : nullptr));
  });
}

sb_status sb_attend_partition(const sb_plan* plan, const sb_query_view* q, const sb_kv_view* kv,
                              const sb_block_selection* selection, const sb_output_view* out, void* workspace,
                              int32_t ith, int32_t nth) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    QueryView qv;
    KVCacheView kvv;
    OutputView ov;
    BlockSelection sel;
    if (sb_status st = capi::ToQuery(fn, q, &qv); st != SB_OK) return st;
    if (sb_status st = capi::ToKv(fn, "kv", kv, &kvv); st != SB_OK) return st;
    if (sb_status st = capi::ToOutput(fn, out, &ov); st != SB_OK) return st;
    if (sb_status st = capi::ToSelection(fn, "selection", selection, true, &sel); st != SB_OK) return st;
    return capi::FromStatus(fn, AttendPartition(plan->plan, qv, kvv, capi::AsConst(sel), ov, workspace, ith, nth));
  });
}

sb_status sb_attend_merge(const sb_plan* plan, const sb_block_selection* selection, const sb_output_view* out,
                          void* workspace, int32_t ith, int32_t nth) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    OutputView ov;
    BlockSelection sel;
    if (sb_status st = capi::ToOutput(fn, out, &ov); st != SB_OK) return st;
    if (sb_status st = capi::ToSelection(fn, "selection", selection, true, &sel); st != SB_OK) return st;
    return capi::FromStatus(fn, AttendMerge(plan->plan, capi::AsConst(sel), ov, workspace, ith, nth));
  });
}

sb_status sb_sparse_attention(const sb_plan* plan, const sb_query_view* q, const sb_kv_view* kv,
                              const sb_summaries* summaries, const sb_output_view* out, void* workspace,
                              sb_thread_pool* pool, sb_selection_stats* stats,
                              const sb_block_selection* selection_out) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (plan == nullptr) return Null(fn, "plan");
    if (stats != nullptr)
      if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_selection_stats)); st != SB_OK) return st;
    QueryView qv;
    KVCacheView kvv;
    OutputView ov;
    BlockSelection sel;
    if (sb_status st = capi::ToQuery(fn, q, &qv); st != SB_OK) return st;
    if (sb_status st = capi::ToKv(fn, "kv", kv, &kvv); st != SB_OK) return st;
    if (sb_status st = capi::ToOutput(fn, out, &ov); st != SB_OK) return st;
    if (sb_status st = capi::ToSelection(fn, "selection_out", selection_out, true, &sel); st != SB_OK) return st;
    SelectionStats s;
    if (Status st = SparseAttention(plan->plan, qv, kvv, summaries != nullptr ? &summaries->summaries : nullptr, ov,
                                    workspace, pool != nullptr ? pool->pool.get() : nullptr, &s, sel);
        !st.ok())
      return Fail(fn, st);
    capi::ToStats(s, stats);
    return Ok();
  });
}

}  // extern "C"
