// The bad-input matrix, C API half: every sb_ function with NULL for each pointer that must not
// be NULL, struct_size too small or too large with extra fields set, and the shape, view,
// selection, feature and file errors of the C++ half as the C caller sees them. The message is
// read from sb_last_error() and must name the argument or value; a failing call writes nothing
// through its output pointers except what the header states (*plan = NULL and the like).
// The rows are a table, one row per line; clang-format would break each row over several lines
// around its lambda, so it leaves this file alone.
// clang-format off
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capi_enum_callers.h"
#include "reliability_util.hpp"
#include "sparsebudget/sparsebudget.h"

namespace {

using sbrel::Guarded;

struct Row {
  std::string what;
  std::function<sb_status()> call;
  std::vector<sb_status> want;
  std::string needle;
};

// A valid world for the C calls: decode plan 8 q heads, 2 kv heads, head_dim 64, block 64,
// L 1000, blocks budget 2; guarded buffers.
struct CWorld {
  sb_attention_params params;
  sb_plan* plan = nullptr;
  sb_summaries* sum = nullptr;
  sb_predictor* pred = nullptr;
  sb_thread_pool* pool = nullptr;
  Guarded<float> k{1000 * 2 * 64, 0.5f}, v{1000 * 2 * 64, 0.25f}, q{8 * 64, 0.1f}, out{8 * 64, 0.0f};
  Guarded<unsigned char> ws{1};
  Guarded<int32_t> idx{2 * 16}, cnt{2};
  sb_kv_view kv{};
  sb_query_view qv{};
  sb_output_view ov{};
  sb_block_selection sel{};
  sb_request_features feat{};

  CWorld() {
    sb_attention_params_init(&params);
    params.num_q_heads = 8;
    params.num_kv_heads = 2;
    params.head_dim = 64;
    params.context_length = 1000;
    params.budget.mode = SB_BUDGET_BLOCKS;
    params.budget.blocks = 2;
    EXPECT_EQ(sb_plan_create(&params, &plan), SB_OK) << sb_last_error();
    size_t bytes = 0;
    EXPECT_EQ(sb_plan_workspace_bytes(plan, &bytes), SB_OK);
    ws = Guarded<unsigned char>(bytes + 64);
    kv = {sizeof(sb_kv_view), k.data(), v.data(), SB_DTYPE_F32, 128, 64, nullptr, 0, 0, 0};
    qv = {sizeof(sb_query_view), q.data(), 512, 64};
    ov = {sizeof(sb_output_view), out.data(), 512, 64};
    sel = {sizeof(sb_block_selection), idx.data(), cnt.data(), 16};
    sb_summaries_config c;
    sb_summaries_config_init(&c);
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.max_tokens = 1000;
    EXPECT_EQ(sb_summaries_create(&c, &sum), SB_OK) << sb_last_error();
    EXPECT_EQ(sb_summaries_append(sum, &kv, 1000), SB_OK) << sb_last_error();
    EXPECT_EQ(sb_predictor_load_json(R"({"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5})", &pred), SB_OK)
        << sb_last_error();
    EXPECT_EQ(sb_thread_pool_create(2, &pool), SB_OK);
    sb_request_features_init(&feat);
    feat.context_length = 1000;
  }
  ~CWorld() {
    sb_plan_destroy(plan);
    sb_summaries_destroy(sum);
    sb_predictor_destroy(pred);
    sb_thread_pool_destroy(pool);
  }
  bool Intact() const {
    return k.intact() && v.intact() && q.intact() && out.intact() && ws.intact() && idx.intact() && cnt.intact();
  }
};

void RunRows(CWorld& w, const std::vector<Row>& rows) {
  for (const Row& row : rows) {
    SCOPED_TRACE(row.what);
    const auto before = w.out.snapshot();
    const sb_status st = row.call();
    const std::string msg = sb_last_error();
    bool ok = false;
    std::string want;
    for (sb_status s : row.want) {
      ok = ok || s == st;
      want += std::string(want.empty() ? "" : "|") + sb_status_string(s);
    }
    EXPECT_TRUE(ok) << row.what << ": got " << sb_status_string(st) << " '" << msg << "', want " << want;
    if (st != SB_OK) {
      EXPECT_FALSE(msg.empty()) << row.what << ": no sb_last_error()";
      if (!row.needle.empty()) {
        EXPECT_NE(msg.find(row.needle), std::string::npos) << row.what << ": '" << msg << "' does not name '" << row.needle << "'";
      }
      EXPECT_EQ(before, w.out.snapshot()) << row.what << ": failing call wrote the output";
    } else {
      EXPECT_STREQ(sb_last_error(), "") << row.what << ": success must clear the message";
    }
    EXPECT_TRUE(w.Intact()) << row.what << ": wrote outside a buffer";
  }
}

constexpr sb_status kInv = SB_ERROR_INVALID_ARGUMENT, kRange = SB_ERROR_OUT_OF_RANGE, kNF = SB_ERROR_NOT_FOUND,
                    kParse = SB_ERROR_PARSE, kIo = SB_ERROR_IO, kUnsup = SB_ERROR_UNSUPPORTED;

TEST(BadInputCapi, NullPointersAndStructSizes) {
  CWorld w;
  std::vector<Row> rows;
  auto add = [&](const std::string& what, std::function<sb_status()> f, std::vector<sb_status> want, const std::string& needle) {
    rows.push_back({what, std::move(f), std::move(want), needle});
  };
  sb_plan* P = w.plan;
  // Core.
  add("sb_isa_parse name NULL", [] { sb_isa i; return sb_isa_parse(nullptr, &i); }, {kInv}, "name");
  add("sb_isa_parse isa NULL", [] { return sb_isa_parse("avx2", nullptr); }, {kInv}, "isa");
  add("sb_isa_parse 'neon'", [] { sb_isa i = SB_ISA_SCALAR; return sb_isa_parse("neon", &i); }, {kInv}, "neon");
  add("sb_budget_validate NULL", [] { return sb_budget_validate(nullptr); }, {kInv}, "budget");
  add("sb_budget_validate struct_size 0", [] { sb_budget b; sb_budget_init(&b); b.struct_size = 0; return sb_budget_validate(&b); }, {kInv}, "struct_size");
  add("sb_budget_validate fraction NaN", [] { sb_budget b; sb_budget_init(&b); b.mode = SB_BUDGET_FRACTION; b.fraction = NAN; return sb_budget_validate(&b); }, {kInv}, "fraction");
  add("sb_budget_resolve resolved NULL", [] { sb_budget b; sb_budget_init(&b); return sb_budget_resolve(&b, 10, nullptr); }, {kInv}, "resolved");
  add("sb_budget_resolve causal_blocks 0", [] { sb_budget b; sb_budget_init(&b); sb_resolved_budget r{}; r.struct_size = sizeof r; return sb_budget_resolve(&b, 0, &r); }, {kInv, kRange}, "causal_blocks");
  add("sb_budget_resolve causal_blocks -3", [] { sb_budget b; sb_budget_init(&b); sb_resolved_budget r{}; r.struct_size = sizeof r; return sb_budget_resolve(&b, -3, &r); }, {kInv, kRange}, "-3");
  add("sb_budget_resolve resolved->struct_size 0", [] { sb_budget b; sb_budget_init(&b); sb_resolved_budget r{}; return sb_budget_resolve(&b, 10, &r); }, {kInv}, "struct_size");
  add("sb_budget_for_total budget NULL", [] { return sb_budget_for_total(3, 10, 1, 1, nullptr); }, {kInv}, "budget");
  add("sb_budget_for_total budget->struct_size 0", [] { sb_budget b{}; return sb_budget_for_total(3, 10, 1, 1, &b); }, {kInv}, "struct_size");
  add("sb_budget_for_total causal_blocks 0", [] { sb_budget b; sb_budget_init(&b); return sb_budget_for_total(0, 0, 1, 1, &b); }, {kInv}, "causal_blocks");
  add("sb_budget_for_total total_blocks -2", [] { sb_budget b; sb_budget_init(&b); return sb_budget_for_total(-2, 10, 1, 1, &b); }, {kInv}, "-2");
  add("sb_budget_for_total local_blocks -1", [] { sb_budget b; sb_budget_init(&b); return sb_budget_for_total(3, 10, 1, -1, &b); }, {kInv}, "local_blocks");
  // Plans.
  add("sb_plan_create params NULL", [] { sb_plan* p = reinterpret_cast<sb_plan*>(1); sb_status s = sb_plan_create(nullptr, &p); EXPECT_EQ(p, nullptr); return s; }, {kInv}, "params");
  add("sb_plan_create plan NULL", [&] { return sb_plan_create(&w.params, nullptr); }, {kInv}, "plan");
  add("sb_plan_create struct_size 0", [&] { sb_attention_params p = w.params; p.struct_size = 0; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "struct_size");
  add("sb_plan_create budget.struct_size 0", [&] { sb_attention_params p = w.params; p.budget.struct_size = 0; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "budget");
  // The embedded budget claims more bytes than the params object has room for: the library must
  // bound it by params->struct_size instead of reading past the caller's object.
  add("sb_plan_create budget.struct_size runs past the params object", [&] {
    std::vector<unsigned char> heap(sizeof(sb_attention_params));
    auto* p = reinterpret_cast<sb_attention_params*>(heap.data());
    *p = w.params;
    p->budget.struct_size = sizeof(sb_budget) + 64;
    sb_plan* out = nullptr;
    const sb_status s = sb_plan_create(p, &out);
    sb_plan_destroy(out);
    return s;
  }, {kInv}, "budget");
  add("sb_plan_create head_dim 0 (*plan set NULL)", [&] {
    sb_attention_params p = w.params;
    p.head_dim = 0;
    sb_plan* out = reinterpret_cast<sb_plan*>(1);
    sb_status s = sb_plan_create(&p, &out);
    EXPECT_EQ(out, nullptr);
    return s;
  }, {kInv}, "head_dim");
  add("sb_plan_create kv heads 3 of 8", [&] { sb_attention_params p = w.params; p.num_kv_heads = 3; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "3");
  add("sb_plan_create block_size 100", [&] { sb_attention_params p = w.params; p.block_size = 100; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "100");
  add("sb_plan_create context_length < num_queries", [&] { sb_attention_params p = w.params; p.context_length = 3; p.num_queries = 4; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "3");
  add("sb_plan_create budget blocks -1", [&] { sb_attention_params p = w.params; p.budget.blocks = -1; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "blocks");
  add("sb_plan_create top_p 2", [&] { sb_attention_params p = w.params; p.budget.mode = SB_BUDGET_TOP_P; p.budget.top_p = 2; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "top_p");
  add("sb_plan_create message names the function", [&] { sb_attention_params p = w.params; p.head_dim = -7; sb_plan* out = nullptr; return sb_plan_create(&p, &out); }, {kInv}, "sb_plan_create");
  add("sb_plan_get_info plan NULL", [] { sb_plan_info i{}; i.struct_size = sizeof i; return sb_plan_get_info(nullptr, &i); }, {kInv}, "plan");
  add("sb_plan_get_info info NULL", [P] { return sb_plan_get_info(P, nullptr); }, {kInv}, "info");
  add("sb_plan_get_info info->struct_size 0", [P] { sb_plan_info i{}; return sb_plan_get_info(P, &i); }, {kInv}, "struct_size");
  add("sb_plan_workspace_bytes bytes NULL", [P] { return sb_plan_workspace_bytes(P, nullptr); }, {kInv}, "bytes");
  add("sb_plan_workspace_bytes plan NULL", [] { size_t b = 7; sb_status s = sb_plan_workspace_bytes(nullptr, &b); EXPECT_EQ(b, 7u); return s; }, {kInv}, "plan");
  // Views.
  add("sb_validate_views plan NULL", [&] { return sb_validate_views(nullptr, &w.qv, &w.kv, &w.ov); }, {kInv}, "plan");
  add("sb_validate_views q NULL", [&] { return sb_validate_views(P, nullptr, &w.kv, &w.ov); }, {kInv}, "q");
  add("sb_validate_views kv NULL", [&] { return sb_validate_views(P, &w.qv, nullptr, &w.ov); }, {kInv}, "kv");
  add("sb_validate_views out NULL (allowed)", [&] { return sb_validate_views(P, &w.qv, &w.kv, nullptr); }, {SB_OK}, "");
  add("sb_validate_views q->struct_size 0", [&] { sb_query_view q = w.qv; q.struct_size = 0; return sb_validate_views(P, &q, &w.kv, &w.ov); }, {kInv}, "struct_size");
  add("sb_validate_views kv bigger struct with extra bytes set", [&] {
    struct Bigger { sb_kv_view v; int64_t extra; } b{w.kv, 42};
    b.v.struct_size = sizeof b;
    return sb_validate_views(P, &w.qv, &b.v, &w.ov);
  }, {kUnsup, kInv}, "");
  add("sb_validate_views kv bigger struct with zero extra bytes (accepted)", [&] {
    struct Bigger { sb_kv_view v; int64_t extra; } b{w.kv, 0};
    b.v.struct_size = sizeof b;
    return sb_validate_views(P, &w.qv, &b.v, &w.ov);
  }, {SB_OK}, "");
  add("sb_validate_views kv page_stride -1", [&] {
    sb_kv_view kv = w.kv;
    static int32_t t[16] = {};
    kv.page_table = t; kv.page_size = 64; kv.page_stride = -1;
    return sb_validate_views(P, &w.qv, &kv, &w.ov);
  }, {kInv}, "page_stride");
  add("sb_validate_views kv page_table entry past num_pages", [&] {
    sb_kv_view kv = w.kv;
    static int32_t t[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    kv.page_table = t; kv.page_size = 64; kv.page_stride = 64 * 128; kv.num_pages = 15;
    return sb_validate_views(P, &w.qv, &kv, &w.ov);
  }, {kInv}, "page_table[15] = 15 is outside");
  add("sb_attend kv paged without num_pages", [&] {
    sb_kv_view kv = w.kv;
    static int32_t t[16] = {};
    kv.page_table = t; kv.page_size = 64; kv.page_stride = 64 * 128; kv.num_pages = 0;
    return sb_attend(P, &w.qv, &kv, nullptr, &w.ov, w.ws.data(), nullptr);
  }, {kInv}, "num_pages");
  add("sb_validate_views kv token_stride 2^62", [&] { sb_kv_view kv = w.kv; kv.token_stride = int64_t{1} << 62; return sb_validate_views(P, &w.qv, &kv, &w.ov); }, {kRange}, "kv");
  add("sb_validate_views q heads overlap", [&] { sb_query_view q = w.qv; q.head_stride = 10; return sb_validate_views(P, &q, &w.kv, &w.ov); }, {kInv}, "overlap");
  // Summaries.
  add("sb_summaries_create config NULL", [] { sb_summaries* s = nullptr; return sb_summaries_create(nullptr, &s); }, {kInv}, "config");
  add("sb_summaries_create out NULL", [] { sb_summaries_config c; sb_summaries_config_init(&c); c.num_kv_heads = 1; c.head_dim = 8; c.max_tokens = 10; return sb_summaries_create(&c, nullptr); }, {kInv}, "summaries");
  add("sb_summaries_create head_dim 0 (*summaries NULL)", [] {
    sb_summaries_config c;
    sb_summaries_config_init(&c);
    c.num_kv_heads = 1;
    c.max_tokens = 10;
    sb_summaries* s = reinterpret_cast<sb_summaries*>(1);
    sb_status st = sb_summaries_create(&c, &s);
    EXPECT_EQ(s, nullptr);
    return st;
  }, {kInv}, "head_dim");
  add("sb_summaries_create keeps nothing", [] { sb_summaries_config c; sb_summaries_config_init(&c); c.num_kv_heads = 1; c.head_dim = 8; c.max_tokens = 10; c.keep_mean = 0; c.keep_bound = 0; sb_summaries* s = nullptr; return sb_summaries_create(&c, &s); }, {kInv}, "");
  add("sb_summaries_create max_tokens 2^62", [] { sb_summaries_config c; sb_summaries_config_init(&c); c.num_kv_heads = 8; c.head_dim = 128; c.max_tokens = int64_t{1} << 62; sb_summaries* s = nullptr; return sb_summaries_create(&c, &s); }, {kRange}, "max_tokens");
  add("sb_summaries_append summaries NULL", [&] { return sb_summaries_append(nullptr, &w.kv, 10); }, {kInv}, "summaries");
  add("sb_summaries_append kv NULL", [&] { return sb_summaries_append(w.sum, nullptr, 1000); }, {kInv}, "kv");
  add("sb_summaries_append below num_tokens", [&] { return sb_summaries_append(w.sum, &w.kv, 10); }, {kRange}, "10");
  add("sb_summaries_append past max_tokens", [&] { return sb_summaries_append(w.sum, &w.kv, 1001); }, {kRange}, "1001");
  add("sb_summaries_reset NULL", [] { return sb_summaries_reset(nullptr); }, {kInv}, "summaries");
  add("sb_summaries_num_tokens out NULL", [&] { return sb_summaries_num_tokens(w.sum, nullptr); }, {kInv}, "num_tokens");
  add("sb_summaries_bytes summaries NULL", [] { size_t b; return sb_summaries_bytes(nullptr, &b); }, {kInv}, "summaries");
  add("sb_summaries_block head -1", [&] { const float* s = nullptr; return sb_summaries_block(w.sum, -1, 0, &s, nullptr, nullptr, nullptr); }, {kRange}, "head -1");
  add("sb_summaries_block head 2 of 2", [&] { const float* s = nullptr; return sb_summaries_block(w.sum, 2, 0, &s, nullptr, nullptr, nullptr); }, {kRange}, "head 2");
  add("sb_summaries_block block 16 of 16", [&] { const float* s = nullptr; return sb_summaries_block(w.sum, 0, 16, &s, nullptr, nullptr, nullptr); }, {kRange}, "block 16");
  add("sb_summaries_block block INT64_MIN", [&] { int64_t c = 0; return sb_summaries_block(w.sum, 0, INT64_MIN, nullptr, nullptr, nullptr, &c); }, {kRange}, "block");
  add("sb_thread_pool_create 0 threads", [] { sb_thread_pool* p = nullptr; sb_status s = sb_thread_pool_create(0, &p); sb_thread_pool_destroy(p); return s; }, {kInv, kRange}, "0");
  add("sb_thread_pool_create pool NULL", [] { return sb_thread_pool_create(2, nullptr); }, {kInv}, "pool");
  // Execute.
  add("sb_select_blocks selection NULL", [&] { return sb_select_blocks(P, &w.qv, w.sum, nullptr, w.ws.data(), nullptr); }, {kInv}, "selection");
  add("sb_select_blocks summaries NULL", [&] { return sb_select_blocks(P, &w.qv, nullptr, &w.sel, w.ws.data(), nullptr); }, {kInv}, "summaries");
  add("sb_select_blocks q NULL", [&] { return sb_select_blocks(P, nullptr, w.sum, &w.sel, w.ws.data(), nullptr); }, {kInv}, "q");
  add("sb_select_blocks stats->struct_size 0", [&] { sb_selection_stats st{}; return sb_select_blocks(P, &w.qv, w.sum, &w.sel, w.ws.data(), &st); }, {kInv}, "stats");
  add("sb_select_blocks selection->indices NULL", [&] { sb_block_selection s = w.sel; s.indices = nullptr; return sb_select_blocks(P, &w.qv, w.sum, &s, w.ws.data(), nullptr); }, {kInv}, "indices");
  add("sb_select_blocks workspace NULL", [&] { return sb_select_blocks(P, &w.qv, w.sum, &w.sel, nullptr, nullptr); }, {kInv}, "workspace");
  add("sb_select_blocks q rows overlap", [&] { sb_query_view q = w.qv; q.head_stride = 1; return sb_select_blocks(P, &q, w.sum, &w.sel, w.ws.data(), nullptr); }, {kInv}, "overlap");
  add("sb_attend out NULL", [&] { return sb_attend(P, &w.qv, &w.kv, nullptr, nullptr, w.ws.data(), nullptr); }, {kInv}, "out");
  add("sb_attend kv NULL", [&] { return sb_attend(P, &w.qv, nullptr, nullptr, &w.ov, w.ws.data(), nullptr); }, {kInv}, "kv");
  add("sb_attend plan NULL", [&] { return sb_attend(nullptr, &w.qv, &w.kv, nullptr, &w.ov, w.ws.data(), nullptr); }, {kInv}, "plan");
  add("sb_attend out->data NULL", [&] { sb_output_view o = w.ov; o.data = nullptr; return sb_attend(P, &w.qv, &w.kv, nullptr, &o, w.ws.data(), w.pool); }, {kInv}, "out");
  add("sb_attend selection counts[0] 99", [&] {
    for (int i = 0; i < 32; ++i) w.idx[static_cast<size_t>(i)] = i % 16;
    w.cnt[0] = 99;
    w.cnt[1] = 1;
    return sb_attend(P, &w.qv, &w.kv, &w.sel, &w.ov, w.ws.data(), nullptr);
  }, {kRange}, "99");
  add("sb_attend_partition nth 0", [&] { return sb_attend_partition(P, &w.qv, &w.kv, nullptr, &w.ov, w.ws.data(), 0, 0); }, {kInv}, "nth");
  add("sb_attend_partition ith 3 of 3", [&] { return sb_attend_partition(P, &w.qv, &w.kv, nullptr, &w.ov, w.ws.data(), 3, 3); }, {kInv}, "ith 3");
  add("sb_attend_partition selection index 16", [&] {
    w.idx[0] = 0; w.idx[1] = 16; w.cnt[0] = 2; w.idx[16] = 15; w.cnt[1] = 1;
    return sb_attend_partition(P, &w.qv, &w.kv, &w.sel, &w.ov, w.ws.data(), 0, 2);
  }, {kRange}, "16");
  add("sb_attend_partition selection capacity 8", [&] { sb_block_selection s = w.sel; s.capacity = 8; return sb_attend_partition(P, &w.qv, &w.kv, &s, &w.ov, w.ws.data(), 0, 1); }, {kInv}, "capacity");
  add("sb_attend_partition kv page_stride -5", [&] {
    sb_kv_view kv = w.kv;
    static int32_t t[16] = {};
    kv.page_table = t; kv.page_size = 64; kv.page_stride = -5;
    return sb_attend_partition(P, &w.qv, &kv, nullptr, &w.ov, w.ws.data(), 0, 1);
  }, {kInv}, "page_stride");
  add("sb_attend_merge out NULL", [&] { return sb_attend_merge(P, nullptr, nullptr, w.ws.data(), 0, 1); }, {kInv}, "out");
  add("sb_attend_merge ith -1", [&] { return sb_attend_merge(P, nullptr, &w.ov, w.ws.data(), -1, 1); }, {kInv}, "-1");
  add("sb_sparse_attention summaries NULL (sparse budget)", [&] { return sb_sparse_attention(P, &w.qv, &w.kv, nullptr, &w.ov, w.ws.data(), nullptr, nullptr, nullptr); }, {kInv}, "summaries");
  add("sb_sparse_attention stats->struct_size 0", [&] { sb_selection_stats st{}; return sb_sparse_attention(P, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data(), nullptr, &st, nullptr); }, {kInv}, "stats");
  add("sb_sparse_attention selection_out capacity 2", [&] { sb_block_selection s = w.sel; s.capacity = 2; return sb_sparse_attention(P, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data(), nullptr, nullptr, &s); }, {kInv}, "capacity");
  add("sb_sparse_attention valid (accepted)", [&] { return sb_sparse_attention(P, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data(), w.pool, nullptr, nullptr); }, {SB_OK}, "");
  // Predictors and features.
  add("sb_predictor_load_file path NULL", [] { sb_predictor* p = nullptr; return sb_predictor_load_file(nullptr, &p); }, {kInv}, "path");
  add("sb_predictor_load_file out NULL", [] { return sb_predictor_load_file("/x.json", nullptr); }, {kInv}, "predictor");
  add("sb_predictor_load_file missing file (*predictor NULL)", [] {
    sb_predictor* p = reinterpret_cast<sb_predictor*>(1);
    sb_status s = sb_predictor_load_file("/nonexistent/sb_predictor.json", &p);
    EXPECT_EQ(p, nullptr);
    return s;
  }, {kNF}, "/nonexistent/sb_predictor.json");
  add("sb_predictor_load_json text NULL", [] { sb_predictor* p = nullptr; return sb_predictor_load_json(nullptr, &p); }, {kInv}, "json_text");
  add("sb_predictor_load_json truncated", [] { sb_predictor* p = nullptr; return sb_predictor_load_json("{\"schema_version\": 1, \"type\":", &p); }, {kParse}, "");
  add("sb_predictor_load_json unknown type", [] { sb_predictor* p = nullptr; return sb_predictor_load_json(R"({"schema_version": 1, "type": "oracle9"})", &p); }, {kNF}, "oracle9");
  add("sb_predictor_load_json unknown key", [] { sb_predictor* p = nullptr; return sb_predictor_load_json(R"({"schema_version": 1, "type": "length_law", "zzz": 1})", &p); }, {kParse}, "zzz");
  add("sb_predictor_to_json length NULL", [&] { char b[8]; return sb_predictor_to_json(w.pred, b, sizeof b, nullptr); }, {kInv}, "length");
  add("sb_predictor_to_json buffer NULL with capacity", [&] { size_t n = 0; return sb_predictor_to_json(w.pred, nullptr, 10, &n); }, {kInv}, "buffer");
  add("sb_predictor_to_json capacity 4 (length still set)", [&] {
    Guarded<char> b(4, 'x');
    size_t n = 0;
    sb_status s = sb_predictor_to_json(w.pred, b.data(), 4, &n);
    EXPECT_GT(n, 4u);
    EXPECT_TRUE(b.intact());
    return s;
  }, {kRange}, "capacity 4");
  add("sb_predictor_to_json NULL buffer, capacity 0 (size query)", [&] { size_t n = 0; sb_status s = sb_predictor_to_json(w.pred, nullptr, 0, &n); EXPECT_GT(n, 10u); return s; }, {kRange, SB_OK}, "");
  add("sb_predictor_predict features NULL", [&] { sb_prediction r{}; r.struct_size = sizeof r; return sb_predictor_predict(w.pred, nullptr, &r); }, {kInv}, "features");
  add("sb_predictor_predict prediction NULL", [&] { return sb_predictor_predict(w.pred, &w.feat, nullptr); }, {kInv}, "prediction");
  add("sb_predictor_predict predictor NULL", [&] { sb_prediction r{}; r.struct_size = sizeof r; return sb_predictor_predict(nullptr, &w.feat, &r); }, {kInv}, "predictor");
  auto predict = [&](const std::string& what, std::function<void(sb_request_features&)> mut, std::vector<sb_status> want, const std::string& needle) {
    add("sb_predictor_predict " + what, [&w, mut] {
      sb_request_features f = w.feat;
      mut(f);
      sb_prediction r{};
      r.struct_size = sizeof r;
      r.total_blocks = -77;
      sb_status s = sb_predictor_predict(w.pred, &f, &r);
      if (s != SB_OK) {
        EXPECT_EQ(r.total_blocks, -77) << "prediction written on failure";
      }
      return s;
    }, want, needle);
  };
  predict("features->struct_size 0", [](sb_request_features& f) { f.struct_size = 0; }, {kInv}, "struct_size");
  predict("context_length 0", [](sb_request_features& f) { f.context_length = 0; }, {kInv}, "context_length");
  predict("entropy -inf", [](sb_request_features& f) { f.entropy = -INFINITY; }, {kInv}, "entropy");
  predict("top1_prob 7", [](sb_request_features& f) { f.top1_prob = 7; }, {kInv}, "top1_prob");
  predict("num_extra -1", [](sb_request_features& f) { f.num_extra = -1; }, {kInv}, "num_extra");
  predict("num_extra 2 with names NULL", [](sb_request_features& f) { static double v[2] = {1, 2}; f.num_extra = 2; f.extra_values = v; }, {kInv}, "extra_names");
  predict("extra_names[1] NULL", [](sb_request_features& f) {
    static const char* n[2] = {"a", nullptr};
    static double v[2] = {1, 2};
    f.num_extra = 2; f.extra_names = n; f.extra_values = v;
  }, {kInv}, "extra_names[1]");
  predict("task_prob value NaN", [](sb_request_features& f) {
    static const char* n[1] = {"multi_hop"};
    static double v[1] = {NAN};
    f.num_task_probs = 1; f.task_prob_names = n; f.task_prob_values = v;
  }, {kInv}, "multi_hop");
  predict("task empty string", [](sb_request_features& f) { f.task = ""; }, {kInv}, "task");
  predict("unknown task name (accepted)", [](sb_request_features& f) { f.task = "not_a_task"; }, {SB_OK}, "");
  add("sb_probe_from_scores scores NULL, n 3", [] { sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_from_scores(nullptr, 3, 1.0, &s); }, {kInv}, "scores");
  add("sb_probe_from_scores n -1", [] { double x[1] = {1}; sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_from_scores(x, -1, 1.0, &s); }, {kInv}, "-1");
  add("sb_probe_from_scores n 0", [] { double x[1] = {1}; sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_from_scores(x, 0, 1.0, &s); }, {kInv}, "");
  add("sb_probe_from_scores scale inf", [] { double x[2] = {1, 2}; sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_from_scores(x, 2, INFINITY, &s); }, {kInv}, "scale");
  add("sb_probe_from_scores stats NULL", [] { double x[2] = {1, 2}; return sb_probe_from_scores(x, 2, 1.0, nullptr); }, {kInv}, "stats");
  add("sb_probe_from_summaries q NULL", [&] { sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_from_summaries(w.sum, nullptr, 64, 8, 0.0f, &s); }, {kInv}, "q");
  add("sb_probe_from_summaries summaries NULL", [&] { sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_from_summaries(nullptr, w.q.data(), 64, 8, 0.0f, &s); }, {kInv}, "summaries");
  add("sb_probe_from_summaries 5 q heads of 2 kv heads", [&] { sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_from_summaries(w.sum, w.q.data(), 64, 5, 0.0f, &s); }, {kInv}, "5");
  add("sb_probe_set_features stats NULL", [&] { return sb_probe_set_features(nullptr, &w.feat); }, {kInv}, "stats");
  add("sb_probe_set_features features NULL", [] { sb_probe_stats s{}; s.struct_size = sizeof s; return sb_probe_set_features(&s, nullptr); }, {kInv}, "features");

  RunRows(w, rows);
  // Functions without a status return handle bad input by value.
  EXPECT_STREQ(sb_status_string(static_cast<sb_status>(7)), "internal");
  EXPECT_EQ(sb_predictor_type(nullptr), nullptr);
  sb_plan_destroy(nullptr);
  sb_summaries_destroy(nullptr);
  sb_predictor_destroy(nullptr);
  sb_thread_pool_destroy(nullptr);
}

// Enum fields hold any int when the caller is C (capi_enum_callers.c makes these calls from C).
// The C++ side must read them without undefined behaviour (UBSan's -fsanitize=enum reports a load
// of an out-of-range value of an unscoped enum without a fixed type) and return
// SB_ERROR_INVALID_ARGUMENT naming the field.
TEST(BadInputCapi, OutOfRangeEnumsFromC) {
  CWorld w;
  std::vector<Row> rows;
  rows.push_back({"sb_plan_create kv_dtype 9", [&] { return rel_plan_with_enum(&w.params, 0, 9); }, {kInv}, "kv_dtype"});
  rows.push_back({"sb_plan_create scoring -1", [&] { return rel_plan_with_enum(&w.params, 1, -1); }, {kInv}, "scoring"});
  rows.push_back({"sb_plan_create budget.mode 12", [&] { return rel_plan_with_enum(&w.params, 2, 12); }, {kInv}, "mode"});
  rows.push_back({"sb_validate_views kv dtype 100", [&] { return rel_views_with_dtype(w.plan, &w.qv, &w.kv, &w.ov, 100); }, {kInv}, "dtype"});
  rows.push_back({"sb_budget_validate mode 5", [] { return rel_budget_with_mode(5); }, {kInv}, "mode"});
  rows.push_back({"sb_isa_set_max 40", [] { return rel_isa_set_max(40); }, {kInv}, "40"});
  rows.push_back({"sb_set_log_callback level 9", [] { return rel_set_log_level(9); }, {kInv}, "9"});
  RunRows(w, rows);
  EXPECT_STREQ(rel_isa_name(77), "unknown");
  EXPECT_EQ(rel_isa_supported(-1), 0);
  EXPECT_STREQ(rel_status_string(77), "unknown");
}


// ---- issue 12: defects an independent bad-input suite found (C API rows) -------------------
TEST(BadInputCapi, Issue12Rows) {
  CWorld w;
  std::vector<Row> rows;
  auto add = [&](const std::string& what, std::function<sb_status()> f, std::vector<sb_status> want, const std::string& needle) {
    rows.push_back({what, std::move(f), std::move(want), needle});
  };
  sb_plan* P = w.plan;
  // Defect 1: capacity INT64_MAX or 2^62: select returned OK writing unit 1 at a wrapped address;
  // the fused call wrote out of bounds, then reported "not ascending".
  for (int64_t cap : {INT64_MAX, int64_t{1} << 62}) {
    const std::string c = std::to_string(cap);
    add("sb_select_blocks selection capacity " + c, [&w, P, cap] {
      sb_block_selection s = w.sel;
      s.capacity = cap;
      return sb_select_blocks(P, &w.qv, w.sum, &s, w.ws.data(), nullptr);
    }, {kRange}, "capacity " + c);
    add("sb_sparse_attention selection_out capacity " + c, [&w, P, cap] {
      sb_block_selection s = w.sel;
      s.capacity = cap;
      return sb_sparse_attention(P, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data(), nullptr, nullptr, &s);
    }, {kRange}, "capacity " + c);
    add("sb_attend selection capacity " + c, [&w, P, cap] {
      sb_block_selection s = w.sel;
      s.capacity = cap;
      return sb_attend(P, &w.qv, &w.kv, &s, &w.ov, w.ws.data(), nullptr);
    }, {kRange}, "capacity " + c);
    add("sb_attend_partition selection capacity " + c, [&w, P, cap] {
      sb_block_selection s = w.sel;
      s.capacity = cap;
      return sb_attend_partition(P, &w.qv, &w.kv, &s, &w.ov, w.ws.data(), 0, 1);
    }, {kRange}, "capacity " + c);
  }
  // Defect 2: 100,000 nested clamps crashed (stack overflow).
  add("sb_predictor_load_json 100,000 nested clamps", [] {
    std::string s;
    for (int i = 0; i < 100000; ++i) s += R"({"schema_version": 1, "type": "clamp", "member": )";
    s += R"({"schema_version": 1, "type": "length_law"})";
    s.append(100000, '}');
    sb_predictor* p = reinterpret_cast<sb_predictor*>(1);
    const sb_status st = sb_predictor_load_json(s.c_str(), &p);
    EXPECT_EQ(p, nullptr);
    return st;
  }, {kParse}, "deeper");
  // Defect 4: the limit is the documented one, checked before any thread starts.
  add("sb_thread_pool_create 4097 threads", [] { sb_thread_pool* p = nullptr; sb_status s = sb_thread_pool_create(4097, &p); sb_thread_pool_destroy(p); return s; }, {kInv}, "4097");
  add("sb_thread_pool_create INT32_MAX threads", [] { sb_thread_pool* p = nullptr; sb_status s = sb_thread_pool_create(INT32_MAX, &p); sb_thread_pool_destroy(p); return s; }, {kInv}, "2147483647");
  // Defect 5: append accepted what sb_validate_views rejects; the probe wrapped its offsets.
  add("sb_summaries_append token_stride INT64_MAX", [&w] {
    sb_summaries_config c;
    sb_summaries_config_init(&c);
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.max_tokens = 1000;
    sb_summaries* s = nullptr;
    EXPECT_EQ(sb_summaries_create(&c, &s), SB_OK);
    sb_kv_view kv = w.kv;
    kv.token_stride = INT64_MAX;
    const sb_status st = sb_summaries_append(s, &kv, 100);
    sb_summaries_destroy(s);  // void: keeps this thread's message
    return st;
  }, {kRange}, "token_stride 9223372036854775807");
  add("sb_summaries_append negative token_stride names the value", [&w] {
    sb_summaries_config c;
    sb_summaries_config_init(&c);
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.max_tokens = 1000;
    sb_summaries* s = nullptr;
    EXPECT_EQ(sb_summaries_create(&c, &s), SB_OK);
    sb_kv_view kv = w.kv;
    kv.token_stride = -7;
    const sb_status st = sb_summaries_append(s, &kv, 100);
    sb_summaries_destroy(s);
    return st;
  }, {kInv}, "-7");
  add("sb_probe_from_summaries q_head_stride INT64_MAX, 4 heads", [&w] {
    sb_probe_stats s{};
    s.struct_size = sizeof s;
    return sb_probe_from_summaries(w.sum, w.q.data(), INT64_MAX, 4, 0.0f, &s);
  }, {kRange}, "q_head_stride");
  // Defect 11: 1e308 x 10 overflowed to inf, and every score was then treated as non-finite.
  add("sb_probe_from_scores {1e308, 1e308, -1e308} x 10", [] {
    const double x[3] = {1e308, 1e308, -1e308};
    sb_probe_stats s{};
    s.struct_size = sizeof s;
    const sb_status st = sb_probe_from_scores(x, 3, 10.0, &s);
    EXPECT_EQ(s.blocks_50, 1.0);
    EXPECT_NEAR(s.entropy, std::log(2.0), 1e-12);
    return st;
  }, {SB_OK}, "");
  // Defect 7.
  add("sb_attend workspace misaligned", [&w, P] { return sb_attend(P, &w.qv, &w.kv, nullptr, &w.ov, w.ws.data() + 1, nullptr); }, {kInv}, "aligned");
  add("sb_select_blocks workspace misaligned", [&w, P] { return sb_select_blocks(P, &w.qv, w.sum, &w.sel, w.ws.data() + 2, nullptr); }, {kInv}, "aligned");
  add("sb_sparse_attention workspace misaligned", [&w, P] { return sb_sparse_attention(P, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data() + 3, nullptr, nullptr, nullptr); }, {kInv}, "aligned");
  add("sb_attend_partition workspace misaligned", [&w, P] { return sb_attend_partition(P, &w.qv, &w.kv, nullptr, &w.ov, w.ws.data() + 1, 0, 1); }, {kInv}, "aligned");
  add("sb_plan_create params->struct_size 1 MiB (cap)", [&w] {
    sb_attention_params p = w.params;
    p.struct_size = size_t{1} << 20;  // the bytes past sizeof(p) are not the caller's
    sb_plan* out = nullptr;
    return sb_plan_create(&p, &out);
  }, {kInv}, "SB_MAX_STRUCT_SIZE");
  add("sb_budget_validate struct_size SIZE_MAX", [] { sb_budget b; sb_budget_init(&b); b.struct_size = SIZE_MAX; return sb_budget_validate(&b); }, {kInv}, "struct_size");
  add("sb_validate_views q->struct_size 4096", [&w, P] { sb_query_view q = w.qv; q.struct_size = 4096; return sb_validate_views(P, &q, &w.kv, nullptr); }, {kInv}, "SB_MAX_STRUCT_SIZE");
  add("sb_plan_get_info info->struct_size 1 MiB", [P] { sb_plan_info i{}; i.struct_size = size_t{1} << 20; return sb_plan_get_info(P, &i); }, {kInv}, "SB_MAX_STRUCT_SIZE");
  auto fill_sel = [&w](int32_t count0, int32_t count1) {
    for (size_t i = 0; i < 32; ++i) w.idx[i] = static_cast<int32_t>(i % 16);
    w.cnt[0] = count0;
    w.cnt[1] = count1;
  };
  add("sb_attend_merge counts[0] = -4", [&w, P, fill_sel] { fill_sel(-4, 16); return sb_attend_merge(P, &w.sel, &w.ov, w.ws.data(), 0, 1); }, {kRange}, "-4");
  add("sb_attend_merge counts[1] = 0", [&w, P, fill_sel] { fill_sel(16, 0); return sb_attend_merge(P, &w.sel, &w.ov, w.ws.data(), 0, 1); }, {kRange}, "counts[1] = 0");
  add("sb_attend counts[0] = 0 (a row without keys)", [&w, P, fill_sel] { fill_sel(0, 16); return sb_attend(P, &w.qv, &w.kv, &w.sel, &w.ov, w.ws.data(), nullptr); }, {kRange}, "counts[0] = 0");
  add("sb_attend_partition counts[1] = 0", [&w, P, fill_sel] { fill_sel(16, 0); return sb_attend_partition(P, &w.qv, &w.kv, &w.sel, &w.ov, w.ws.data(), 0, 1); }, {kRange}, "counts[1] = 0");
  add("sb_predictor_to_json capacity 4 leaves the buffer untouched", [&w] {
    char b[4] = {'x', 'x', 'x', 'x'};
    size_t n = 0;
    const sb_status s = sb_predictor_to_json(w.pred, b, sizeof b, &n);
    EXPECT_EQ(std::string(b, 4), "xxxx") << "buffer written on failure";
    return s;
  }, {kRange}, "capacity 4");
  add("sb_kv_view strides in the message (sb_validate_views, token_stride -3)", [&w, P] {
    sb_kv_view kv = w.kv;
    kv.token_stride = -3;
    return sb_validate_views(P, &w.qv, &kv, nullptr);
  }, {kInv}, "-3");
  // Defect 8: a directory is an I/O error.
  add("sb_predictor_load_file a directory", [] { sb_predictor* p = nullptr; return sb_predictor_load_file("/tmp", &p); }, {kIo}, "directory");
  // Defect 9: duplicate keys.
  add("sb_predictor_load_json duplicate key 'a'", [] {
    sb_predictor* p = nullptr;
    return sb_predictor_load_json(R"({"schema_version": 1, "type": "length_law", "a": 0.5, "a": 0.7})", &p);
  }, {kParse}, "duplicate key 'a'");
  // Defect 6: the prediction's counts for context_length INT64_MAX are consistent.
  add("sb_predictor_predict context_length INT64_MAX", [&w] {
    sb_request_features f = w.feat;
    f.context_length = INT64_MAX;
    sb_prediction r{};
    r.struct_size = sizeof r;
    const sb_status s = sb_predictor_predict(w.pred, &f, &r);
    EXPECT_EQ(r.causal_blocks, INT64_MAX / 64 + 1);
    EXPECT_GE(r.total_blocks, 1);
    EXPECT_LE(r.total_blocks, r.causal_blocks);
    return s;
  }, {SB_OK}, "");
  add("sb_budget_resolve blocks 5 at causal_blocks INT64_MAX", [] {
    sb_budget b;
    sb_budget_init(&b);
    b.mode = SB_BUDGET_BLOCKS;
    b.blocks = 5;
    sb_resolved_budget r{};
    r.struct_size = sizeof r;
    const sb_status s = sb_budget_resolve(&b, INT64_MAX, &r);
    EXPECT_EQ(r.total_blocks, 7);
    EXPECT_EQ(r.clamped, 0);
    return s;
  }, {SB_OK}, "");
  RunRows(w, rows);
}


// Defect 4: when the OS cannot start every thread, the pool's constructor never returned (or
// std::terminate ran on the joinable threads it held). Here a child process lowers its address-
// space limit so that only a few 8 MB thread stacks fit, then asks for 64 threads: the call must
// fail with SB_ERROR_INTERNAL naming how many started, and return. An alarm turns a hang into a
// failure. Never more than 64 threads are asked for (the machine is shared).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SB_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SB_TEST_SANITIZED 1
#endif
#endif

TEST(BadInputCapi, Issue12ThreadPoolThatCannotStartItsThreadsFailsIntoAStatus) {
#ifdef SB_TEST_SANITIZED
  GTEST_SKIP() << "an address-space limit and sanitizer shadow memory do not mix (make test runs this)";
#else
  std::fflush(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(60);
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    if (pages <= 0) _exit(10);
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + (rlim_t{40} << 20);
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(11);
    sb_thread_pool* p = reinterpret_cast<sb_thread_pool*>(1);
    const sb_status st = sb_thread_pool_create(64, &p);
    if (st == SB_OK) _exit(3);  // every thread started: the limit did not bite
    if (p != nullptr) _exit(4);
    if (st != SB_ERROR_INTERNAL) _exit(5);
    if (std::strstr(sb_last_error(), "could not start worker") == nullptr) _exit(6);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_FALSE(WIFSIGNALED(status)) << "the child died by signal " << WTERMSIG(status)
                                    << (WTERMSIG(status) == SIGALRM ? " (SIGALRM: the pool hung)" : "")
                                    << (WTERMSIG(status) == SIGABRT ? " (SIGABRT: std::terminate)" : "");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: all threads started (limit too loose); 4: *pool not NULL; 5: wrong "
                                       "status; 6: message does not say how many started";
#endif
}


// Hostile-input pass of 2026-12-03 (docs/reliability.md), C half: each row failed before its fix.
TEST(BadInputCapi, HostilePass20261203Rows) {
  CWorld w;
  std::vector<Row> rows;
  auto add = [&](const std::string& what, std::function<sb_status()> f, std::vector<sb_status> want, const std::string& needle) {
    rows.push_back({what, std::move(f), std::move(want), needle});
  };
  sb_op_config oc;
  sb_op_config_init(&oc);
  oc.num_q_heads = 8;
  oc.num_kv_heads = 2;
  oc.head_dim = 64;
  sb_op* op = nullptr;
  ASSERT_EQ(sb_op_create(&oc, &op), SB_OK) << sb_last_error();
  sb_step_plan* sp = nullptr;
  ASSERT_EQ(sb_step_plan_create(2, &sp), SB_OK) << sb_last_error();
  sb_step_request good;
  sb_step_request_init(&good);
  good.context_length = 1000;
  good.kv = w.kv;
  good.q_token_stride = good.out_token_stride = 512;
  good.q_head_stride = good.out_head_stride = 64;
  ASSERT_EQ(sb_op_plan(op, &good, 1, sp), SB_OK) << sb_last_error();

  // Finding 1: the nested kv / budget struct_size was not bounded by the enclosing request: read
  // past a heap object (ASan), or swallowed the sibling fields after it as "extra" bytes.
  add("sb_op_plan requests[0].kv.struct_size + 32 (swallows the strides after it)", [&] {
    sb_step_request r = good;
    r.kv.struct_size = sizeof(sb_kv_view) + 32;
    return sb_op_plan(op, &r, 1, sp);
  }, {kInv}, "requests[0].kv.struct_size");
  add("sb_op_plan requests[1].budget.struct_size + 8", [&] {
    sb_step_request r[2] = {good, good};
    r[1].budget.struct_size = sizeof(sb_budget) + 8;
    return sb_op_plan(op, r, 2, sp);
  }, {kInv}, "requests[1].budget.struct_size");
  add("sb_op_plan kv.struct_size SB_MAX_STRUCT_SIZE in a request that ends its heap block", [&] {
    std::vector<sb_step_request> one(1, good);  // nothing after it for the read to land on
    one[0].kv.struct_size = SB_MAX_STRUCT_SIZE;
    return sb_op_plan(op, one.data(), 1, sp);
  }, {kInv}, "requests[0].kv.struct_size");
  add("sb_op_plan budget.struct_size SB_MAX_STRUCT_SIZE in a request that ends its heap block", [&] {
    std::vector<sb_step_request> one(1, good);
    one[0].budget.struct_size = SB_MAX_STRUCT_SIZE;
    return sb_op_plan(op, one.data(), 1, sp);
  }, {kInv}, "requests[0].budget.struct_size");
  add("sb_op_plan requests[0].struct_size + 8 in an array that ends its heap block", [&] {
    std::vector<sb_step_request> one(1, good);  // the array steps by sizeof: no newer element size
    one[0].struct_size = sizeof(sb_step_request) + 8;
    return sb_op_plan(op, one.data(), 1, sp);
  }, {kInv}, "requests[0]->struct_size");
  add("sb_op_plan requests[0].struct_size + 8 with a valid request after it", [&] {
    sb_step_request r[2] = {good, good};
    r[0].struct_size = sizeof(sb_step_request) + 8;
    return sb_op_plan(op, r, 2, sp);
  }, {kInv}, "requests is an array");
  add("sb_op_plan requests[0].kv.dtype 9 names the request", [&] {
    sb_step_request r = good;
    int bad = 9;
    std::memcpy(&r.kv.dtype, &bad, sizeof bad);
    return sb_op_plan(op, &r, 1, sp);
  }, {kInv}, "requests[0].kv->dtype");

  // Finding 2: unchecked r * stride in sb_merge_states.
  Guarded<float> mv{3 * 4, 0.5f}, mo{3 * 4, 0.25f}, ml{3, 0.0f}, mlo{3, 0.0f};
  for (int64_t stride : {INT64_MAX, int64_t{1} << 62, int64_t{1} << 61}) {
    const std::string c = std::to_string(stride);
    add("sb_merge_states 3 rows v_stride " + c, [&, stride] {
      return sb_merge_states(3, 4, mo.data(), 4, mlo.data(), mv.data(), stride, ml.data());
    }, {kRange}, "x v_stride " + c);
    add("sb_merge_states 3 rows v_other_stride " + c, [&, stride] {
      return sb_merge_states(3, 4, mo.data(), stride, mlo.data(), mv.data(), 4, ml.data());
    }, {kRange}, "v_other_stride " + c);
  }

  // Finding 8: duplicate names in the C feature lists silently kept the last value.
  auto predict = [&w](sb_request_features f) {
    sb_prediction pr;
    pr.struct_size = sizeof pr;
    return sb_predictor_predict(w.pred, &f, &pr);
  };
  add("sb_predictor_predict extra_names repeated", [&] {
    sb_request_features f = w.feat;
    const char* names[2] = {"x", "x"};
    const double values[2] = {1.0, 2.0};
    f.num_extra = 2;
    f.extra_names = names;
    f.extra_values = values;
    return predict(f);
  }, {kInv}, "extra_names[1] 'x'");
  add("sb_predictor_predict task_prob_names repeated", [&] {
    sb_request_features f = w.feat;
    const char* names[3] = {"qa", "sum", "qa"};
    const double values[3] = {0.5, 0.25, 0.25};
    f.num_task_probs = 3;
    f.task_prob_names = names;
    f.task_prob_values = values;
    return predict(f);
  }, {kInv}, "task_prob_names[2] 'qa'");
  RunRows(w, rows);
  sb_step_plan_destroy(sp);
  sb_op_destroy(op);

  // Finding 3: escalations = INT32_MAX overflowed on the next escalation; it saturates now.
  const double ladder[3] = {0.25, 0.5, 1.0};
  sb_escalation_policy* policy = nullptr;
  ASSERT_EQ(sb_escalation_policy_create(0.9, ladder, 3, SB_ESCALATE_RECOMPUTE_STEP, &policy), SB_OK) << sb_last_error();
  sb_escalation_state st{sizeof(sb_escalation_state), 2, 100, INT32_MAX};
  sb_escalation_action action = SB_ESCALATION_CONTINUE;
  int64_t total = 0;
  EXPECT_EQ(sb_escalation_step(policy, &st, 0.1, 0, 1, 1, &action, &total), SB_OK) << sb_last_error();
  EXPECT_EQ(action, SB_ESCALATION_RECOMPUTE);
  EXPECT_EQ(st.escalations, INT32_MAX);
  EXPECT_GT(total, 2);
  sb_escalation_policy_destroy(policy);
}

}  // namespace
// clang-format on
