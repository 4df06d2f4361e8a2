// Extreme values in every integer and float field of every C struct (issue 12). A generator
// writes each of 0, 1, -1, INT32_MIN/MAX, 2^31, 2^62, INT64_MIN/MAX (integers, as the field's
// type holds them), and 0, -0, 1, -1, NaN, +-Inf, +-denormal min, +-max, 2^31, 2^62 (floats) into
// one field of an otherwise valid struct and makes every call that reads the struct. Each call
// must return a defined sb_status (with a message when it fails), write nothing outside the
// buffers it was given, and - when it succeeds - give results within their documented ranges.
// Under ASan+UBSan (tools/reliability.sh) the same cases prove the absence of out-of-bounds
// access and undefined arithmetic. Output structs get the values in their output fields before
// the call: the library must not read them (results equal those from a zeroed struct).
//
// Fields are written through memcpy at their offsets (enum fields as raw ints), so the test
// itself never loads an out-of-range enum. Structs live at the start of a zeroed buffer of
// SB_MAX_STRUCT_SIZE bytes, so a struct_size up to the cap describes memory the caller owns.
//
// A view or selection that the arithmetic accepts but that describes more memory than the
// test's buffers hold (a stride of 2^31 elements) is the caller's contract (reliability.md):
// such cases run the validation calls only; the test counts them.
// The rows are a table, one row per line; clang-format would break each row over several lines
// around its lambda, so it leaves this file alone.
// clang-format off
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "reliability_util.hpp"
#include "sparsebudget/sparsebudget.h"

namespace {

using sbrel::Guarded;

enum class Kind { kI32, kI64, kSize, kF32, kF64, kEnum };

struct Field {
  std::string name;
  size_t offset;
  Kind kind;
};
#define SB_FIELD(S, m, k) Field{#m, offsetof(S, m), Kind::k}

struct Value {
  std::string name;
  unsigned char bytes[8];
  size_t size;
};

template <typename T>
Value V(const std::string& name, T v) {
  Value r{name, {}, sizeof(T)};
  std::memcpy(r.bytes, &v, sizeof(T));
  return r;
}

std::vector<Value> Values(Kind k) {
  const double two31 = 2147483648.0, two62 = 4611686018427387904.0;
  switch (k) {
    case Kind::kI32:
    case Kind::kEnum:
      return {V("0", int32_t{0}), V("1", int32_t{1}), V("-1", int32_t{-1}), V("INT32_MIN", INT32_MIN),
              V("INT32_MAX", INT32_MAX), V("2", int32_t{2}), V("3", int32_t{3})};
    case Kind::kI64:
      return {V("0", int64_t{0}), V("1", int64_t{1}), V("-1", int64_t{-1}), V("INT32_MIN", int64_t{INT32_MIN}),
              V("INT32_MAX", int64_t{INT32_MAX}), V("2^31", int64_t{1} << 31), V("2^62", int64_t{1} << 62),
              V("INT64_MIN", INT64_MIN), V("INT64_MAX", INT64_MAX)};
    case Kind::kSize:
      return {V("0", size_t{0}), V("1", size_t{1}), V("SIZE_MAX (-1)", SIZE_MAX), V("INT32_MAX", size_t{INT32_MAX}),
              V("2^31", size_t{1} << 31), V("2^62", size_t{1} << 62), V("INT64_MAX", size_t{INT64_MAX}),
              V("2^63 (INT64_MIN)", size_t{1} << 63), V("SB_MAX_STRUCT_SIZE", size_t{SB_MAX_STRUCT_SIZE}),
              V("SB_MAX_STRUCT_SIZE+1", size_t{SB_MAX_STRUCT_SIZE + 1})};
    case Kind::kF32:
      return {V("0", 0.0f), V("-0", -0.0f), V("1", 1.0f), V("-1", -1.0f), V("NaN", NAN), V("+Inf", INFINITY),
              V("-Inf", -INFINITY), V("denorm_min", std::numeric_limits<float>::denorm_min()),
              V("-denorm_min", -std::numeric_limits<float>::denorm_min()), V("FLT_MAX", FLT_MAX),
              V("-FLT_MAX", -FLT_MAX), V("2^31", static_cast<float>(two31)), V("2^62", static_cast<float>(two62))};
    case Kind::kF64:
      return {V("0", 0.0), V("-0", -0.0), V("1", 1.0), V("-1", -1.0), V("NaN", static_cast<double>(NAN)),
              V("+Inf", static_cast<double>(INFINITY)), V("-Inf", -static_cast<double>(INFINITY)),
              V("denorm_min", std::numeric_limits<double>::denorm_min()),
              V("-denorm_min", -std::numeric_limits<double>::denorm_min()), V("DBL_MAX", DBL_MAX),
              V("-DBL_MAX", -DBL_MAX), V("2^31", two31), V("2^62", two62)};
  }
  return {};
}

// A struct at the start of a zeroed, 64-byte aligned buffer of SB_MAX_STRUCT_SIZE bytes.
struct Bytes {
  alignas(64) unsigned char b[SB_MAX_STRUCT_SIZE + 64];
  template <typename S>
  explicit Bytes(const S& s) {
    static_assert(sizeof(S) <= SB_MAX_STRUCT_SIZE, "struct larger than the cap");
    std::memset(b, 0, sizeof b);
    std::memcpy(b, &s, sizeof s);
  }
  void Set(const Field& f, const Value& v) { std::memcpy(b + f.offset, v.bytes, v.size); }
  template <typename S>
  S* As() {
    return reinterpret_cast<S*>(b);
  }
};

// Counters of a run, printed at the end (docs/reliability.md quotes them).
struct Counts {
  long cases = 0, calls = 0, errors = 0, contract_skips = 0;
};

// Everything a valid call needs: decode plan 8 q heads / 2 kv heads / head_dim 64 / block 64 /
// L 1000 / Blocks(2), a prefill plan of 4 queries, guarded buffers for all of them.
struct World {
  static constexpr int64_t kL = 1000, kTokens = kL * 2 * 64, kQ = 4 * 8 * 64;
  sb_attention_params params{};
  sb_plan *plan = nullptr, *prefill = nullptr;
  sb_summaries* sum = nullptr;
  sb_predictor *law = nullptr, *probe = nullptr, *linear = nullptr;
  Guarded<float> k{kTokens, 0.5f}, v{kTokens, 0.25f}, q{kQ, 0.1f}, out{kQ, 0.0f};
  Guarded<unsigned char> ws{1};
  Guarded<int32_t> idx{2 * 16 * 4}, cnt{2 * 4};
  Guarded<int32_t> table{16};
  sb_kv_view kv{};
  sb_query_view qv{};
  sb_output_view ov{};
  sb_block_selection sel{};
  sb_request_features feat{};
  Counts n;

  World() {
    sb_attention_params_init(&params);
    params.num_q_heads = 8;
    params.num_kv_heads = 2;
    params.head_dim = 64;
    params.context_length = kL;
    params.budget.mode = SB_BUDGET_BLOCKS;
    params.budget.blocks = 2;
    EXPECT_EQ(sb_plan_create(&params, &plan), SB_OK) << sb_last_error();
    sb_attention_params pp = params;
    pp.num_queries = 4;
    EXPECT_EQ(sb_plan_create(&pp, &prefill), SB_OK) << sb_last_error();
    size_t b1 = 0, b2 = 0;
    sb_plan_workspace_bytes(plan, &b1);
    sb_plan_workspace_bytes(prefill, &b2);
    ws = Guarded<unsigned char>((b1 > b2 ? b1 : b2) + 64);
    for (int i = 0; i < 16; ++i) table[static_cast<size_t>(i)] = i;
    kv = {sizeof(sb_kv_view), k.data(), v.data(), SB_DTYPE_F32, 128, 64, nullptr, 0, 0, 0};
    qv = {sizeof(sb_query_view), q.data(), 512, 64};
    ov = {sizeof(sb_output_view), out.data(), 512, 64};
    sel = {sizeof(sb_block_selection), idx.data(), cnt.data(), 16};
    sb_summaries_config c;
    sb_summaries_config_init(&c);
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.max_tokens = kL;
    EXPECT_EQ(sb_summaries_create(&c, &sum), SB_OK) << sb_last_error();
    EXPECT_EQ(sb_summaries_append(sum, &kv, kL), SB_OK) << sb_last_error();
    EXPECT_EQ(sb_predictor_load_json(R"({"schema_version": 1, "type": "length_law"})", &law), SB_OK);
    EXPECT_EQ(sb_predictor_load_json(R"({"schema_version": 1, "type": "probe", "mass": 90})", &probe), SB_OK);
    EXPECT_EQ(sb_predictor_load_json(R"({"schema_version": 1, "type": "linear", "terms": ["log_length", "entropy",)"
                                     R"( "top1_prob", "probe_entropy", "expected_output_length"],)"
                                     R"( "weights": [0.5, 0.1, -0.2, 0.3, 0.01], "impute": [0, 0, 0, 0, 0],)"
                                     R"( "intercept": 0.1})",
                                     &linear),
              SB_OK)
        << sb_last_error();
    sb_request_features_init(&feat);
    feat.context_length = kL;
  }
  ~World() {
    sb_plan_destroy(plan);
    sb_plan_destroy(prefill);
    sb_summaries_destroy(sum);
    sb_predictor_destroy(law);
    sb_predictor_destroy(probe);
    sb_predictor_destroy(linear);
  }
  bool Intact() const {
    return k.intact() && v.intact() && q.intact() && out.intact() && ws.intact() && idx.intact() && cnt.intact() &&
           table.intact();
  }
  // One call: a defined status, a message on failure, nothing written outside the buffers.
  sb_status Call(const std::string& what, const std::function<sb_status()>& f) {
    ++n.calls;
    const sb_status st = f();
    EXPECT_TRUE(st >= SB_OK && st <= SB_ERROR_INTERNAL) << what << ": status " << static_cast<int>(st);
    if (st != SB_OK) {
      ++n.errors;
      EXPECT_STRNE(sb_last_error(), "") << what << ": failed without a message";
      EXPECT_NE(st, SB_ERROR_INTERNAL) << what << ": internal error for bad input: " << sb_last_error();
    }
    EXPECT_TRUE(Intact()) << what << ": wrote outside a buffer";
    return st;
  }
};

// Elements a (tokens x heads x dim) view spans, in int128 so nothing overflows here; -1 when a
// stride is negative (the library must reject those anyway).
__int128 Span(int64_t ntok, int64_t nhead, int64_t dim, int64_t ts, int64_t hs) {
  if (ts < 0 || hs < 0) return -1;
  return static_cast<__int128>(ntok - 1) * ts + static_cast<__int128>(nhead - 1) * hs + dim;
}

void ForEach(World& w, const std::string& sname, const std::vector<Field>& fields, const std::function<void(Bytes&, const std::string&)>& run,
             const std::function<Bytes()>& base) {
  for (const Field& f : fields) {
    for (const Value& v : Values(f.kind)) {
      Bytes b = base();
      b.Set(f, v);
      ++w.n.cases;
      const std::string what = sname + "." + f.name + " = " + v.name;
      SCOPED_TRACE(what);
      run(b, what);
    }
  }
}

void CheckPrediction(const sb_prediction& p, const std::string& what) {
  if (p.causal_blocks < 1) return;
  EXPECT_GE(p.total_blocks, 1) << what;
  EXPECT_LE(p.total_blocks, p.causal_blocks) << what;
  EXPECT_GE(p.fraction, 0.0) << what;
  EXPECT_LE(p.fraction, 1.0) << what;
  EXPECT_EQ(sb_budget_validate(&p.budget), SB_OK) << what << ": predicted budget invalid: " << sb_last_error();
}

TEST(ExtremeFields, EveryIntegerAndFloatFieldOfEveryCStruct) {
  World w;
  const sb_plan* P = w.plan;

  // ---- sb_budget: validate, resolve at 1 / 16 / INT64_MAX blocks, and as a plan's budget -----
  const std::vector<Field> budget_fields = {
      SB_FIELD(sb_budget, struct_size, kSize), SB_FIELD(sb_budget, mode, kEnum), SB_FIELD(sb_budget, sink_blocks, kI32),
      SB_FIELD(sb_budget, local_blocks, kI32), SB_FIELD(sb_budget, blocks, kI64), SB_FIELD(sb_budget, fraction, kF64),
      SB_FIELD(sb_budget, top_p, kF64), SB_FIELD(sb_budget, min_blocks, kI64), SB_FIELD(sb_budget, max_blocks, kI64)};
  for (int mode = 0; mode < 4; ++mode) {
    ForEach(w, "sb_budget(mode " + std::to_string(mode) + ")", budget_fields, [&](Bytes& b, const std::string& what) {
      const sb_budget* bud = b.As<sb_budget>();
      const sb_status valid = w.Call(what + " validate", [&] { return sb_budget_validate(bud); });
      for (int64_t nb : {int64_t{1}, int64_t{16}, INT64_MAX}) {
        sb_resolved_budget r{};
        r.struct_size = sizeof r;
        const sb_status st = w.Call(what + " resolve", [&] { return sb_budget_resolve(bud, nb, &r); });
        EXPECT_EQ(st == SB_OK, valid == SB_OK) << what << ": resolve and validate disagree";
        if (st == SB_OK) {
          EXPECT_GE(r.total_blocks, 1) << what;
          EXPECT_LE(r.total_blocks, nb) << what;
          EXPECT_GE(r.forced_blocks, 1) << what;
          EXPECT_EQ(r.total_blocks, r.forced_blocks + r.scored_blocks) << what;
        }
      }
    }, [&] {
      sb_budget base;
      sb_budget_init(&base);
      base.mode = static_cast<sb_budget_mode>(mode);
      base.blocks = 2;
      base.fraction = 0.5;
      return Bytes(base);
    });
  }

  // ---- sb_attention_params (and its budget): create, info; execute when the shape is the world's
  std::vector<Field> params_fields = {
      SB_FIELD(sb_attention_params, struct_size, kSize), SB_FIELD(sb_attention_params, num_q_heads, kI32),
      SB_FIELD(sb_attention_params, num_kv_heads, kI32), SB_FIELD(sb_attention_params, head_dim, kI32),
      SB_FIELD(sb_attention_params, block_size, kI32), SB_FIELD(sb_attention_params, context_length, kI64),
      SB_FIELD(sb_attention_params, num_queries, kI32), SB_FIELD(sb_attention_params, kv_dtype, kEnum),
      SB_FIELD(sb_attention_params, scoring, kEnum), SB_FIELD(sb_attention_params, scale, kF32)};
  for (const Field& f : budget_fields)
    params_fields.push_back({"budget." + f.name, offsetof(sb_attention_params, budget) + f.offset, f.kind});
  ForEach(w, "sb_attention_params", params_fields, [&](Bytes& b, const std::string& what) {
    const sb_attention_params* p = b.As<sb_attention_params>();
    sb_plan* plan = nullptr;
    if (w.Call(what + " create", [&] { return sb_plan_create(p, &plan); }) != SB_OK) {
      EXPECT_EQ(plan, nullptr) << what;
      return;
    }
    sb_plan_info info{};
    info.struct_size = sizeof info;
    EXPECT_EQ(w.Call(what + " info", [&] { return sb_plan_get_info(plan, &info); }), SB_OK);
    const bool same_shape = p->num_q_heads == 8 && p->num_kv_heads == 2 && p->head_dim == 64 && p->block_size == 64 &&
                            p->context_length == World::kL && p->num_queries == 1;
    if (same_shape && info.workspace_bytes + 64 <= w.ws.size()) {
      sb_selection_stats st{};
      st.struct_size = sizeof st;
      const sb_status s = w.Call(what + " sparse_attention", [&] {
        return sb_sparse_attention(plan, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data(), nullptr, &st, &w.sel);
      });
      if (s == SB_OK) {
        EXPECT_GE(st.kept_blocks, st.units) << what;
        EXPECT_LE(st.kept_blocks, st.causal_blocks) << what;
      }
      w.Call(what + " attend (dense)", [&] { return sb_attend(plan, &w.qv, &w.kv, nullptr, &w.ov, w.ws.data(), nullptr); });
    } else {
      ++w.n.contract_skips;  // a shape the world's buffers do not hold
    }
    sb_plan_destroy(plan);
  }, [&] { return Bytes(w.params); });

  // ---- views: validate, then every call that reads them when the view fits the buffers ------
  auto run_views = [&](const sb_plan* plan, int64_t nq, const sb_query_view* q, const sb_kv_view* kv,
                       const sb_output_view* o, const std::string& what) {
    const sb_status valid = w.Call(what + " validate", [&] { return sb_validate_views(plan, q, kv, o); });
    bool fits = true;
    if (valid == SB_OK) {
      // A paged view spans pages x page_stride; the table maps page i to page i.
      const bool paged = kv->page_table != nullptr;
      const __int128 kspan = paged ? static_cast<__int128>(15) * kv->page_stride +
                                         Span(kv->page_size, 2, 64, kv->token_stride, kv->head_stride)
                                   : Span(World::kL, 2, 64, kv->token_stride, kv->head_stride);
      fits = kspan >= 0 && kspan <= World::kTokens &&
             Span(nq, 8, 64, q->token_stride, q->head_stride) <= World::kQ &&
             Span(nq, 8, 64, o->token_stride, o->head_stride) <= World::kQ && kv->dtype == SB_DTYPE_F32;
    }
    if (!fits) {
      ++w.n.contract_skips;
      return;
    }
    auto agree = [&](const std::string& call, sb_status s) {
      if (valid != SB_OK) {
        EXPECT_NE(s, SB_OK) << what << ": " << call << " accepted views sb_validate_views rejects";
      }
    };
    agree("attend", w.Call(what + " attend", [&] { return sb_attend(plan, q, kv, nullptr, o, w.ws.data(), nullptr); }));
    agree("sparse_attention", w.Call(what + " sparse_attention", [&] {
      return sb_sparse_attention(plan, q, kv, w.sum, o, w.ws.data(), nullptr, nullptr, nullptr);
    }));
    w.Call(what + " select_blocks", [&] { return sb_select_blocks(plan, q, w.sum, &w.sel, w.ws.data(), nullptr); });
    w.Call(what + " attend_partition", [&] { return sb_attend_partition(plan, q, kv, nullptr, o, w.ws.data(), 0, 2); });
    sb_summaries_config c;
    sb_summaries_config_init(&c);
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.max_tokens = World::kL;
    sb_summaries* s = nullptr;
    ASSERT_EQ(sb_summaries_create(&c, &s), SB_OK);
    w.Call(what + " summaries_append", [&] { return sb_summaries_append(s, kv, World::kL); });
    sb_summaries_destroy(s);
  };
  const std::vector<Field> kv_fields = {
      SB_FIELD(sb_kv_view, struct_size, kSize), SB_FIELD(sb_kv_view, dtype, kEnum),
      SB_FIELD(sb_kv_view, token_stride, kI64), SB_FIELD(sb_kv_view, head_stride, kI64),
      SB_FIELD(sb_kv_view, page_size, kI64), SB_FIELD(sb_kv_view, page_stride, kI64),
      SB_FIELD(sb_kv_view, num_pages, kI64)};
  for (int paged = 0; paged < 2; ++paged) {
    ForEach(w, paged ? "sb_kv_view(paged)" : "sb_kv_view", kv_fields, [&](Bytes& b, const std::string& what) {
      run_views(P, 1, &w.qv, b.As<sb_kv_view>(), &w.ov, what);
    }, [&] {
      sb_kv_view kv = w.kv;
      if (paged) {
        kv.page_table = w.table.data();
        kv.page_size = 64;
        kv.page_stride = 64 * 128;
        kv.num_pages = 16;
      }
      return Bytes(kv);
    });
  }
  const std::vector<Field> q_fields = {SB_FIELD(sb_query_view, struct_size, kSize),
                                       SB_FIELD(sb_query_view, token_stride, kI64),
                                       SB_FIELD(sb_query_view, head_stride, kI64)};
  ForEach(w, "sb_query_view", q_fields, [&](Bytes& b, const std::string& what) {
    run_views(w.prefill, 4, b.As<sb_query_view>(), &w.kv, &w.ov, what);
  }, [&] { return Bytes(w.qv); });
  const std::vector<Field> o_fields = {SB_FIELD(sb_output_view, struct_size, kSize),
                                       SB_FIELD(sb_output_view, token_stride, kI64),
                                       SB_FIELD(sb_output_view, head_stride, kI64)};
  ForEach(w, "sb_output_view", o_fields, [&](Bytes& b, const std::string& what) {
    run_views(w.prefill, 4, &w.qv, &w.kv, b.As<sb_output_view>(), what);
  }, [&] { return Bytes(w.ov); });

  // ---- sb_block_selection: every call that reads or writes one -------------------------------
  const std::vector<Field> sel_fields = {SB_FIELD(sb_block_selection, struct_size, kSize),
                                         SB_FIELD(sb_block_selection, capacity, kI64)};
  ForEach(w, "sb_block_selection", sel_fields, [&](Bytes& b, const std::string& what) {
    const sb_block_selection* s = b.As<sb_block_selection>();
    // 2 units; the buffers hold 2 x 64 entries. Capacities in [16, 64] fit; below 16 and those
    // whose 2 x capacity x 4 bytes overflow must be rejected; the rest describe more than exists.
    const __int128 bytes = static_cast<__int128>(2) * s->capacity * 4;
    const bool rejected = s->capacity < 16 || bytes > PTRDIFF_MAX;
    if (!rejected && s->capacity > 64) {
      ++w.n.contract_skips;
      return;
    }
    // A valid selection to read: filled by select at the world's capacity, then re-laid out.
    auto expect_fail = [&](const std::string& call, sb_status st) {
      if (rejected) {
        EXPECT_NE(st, SB_OK) << what << ": " << call << " accepted capacity " << static_cast<long long>(s->capacity);
      }
    };
    expect_fail("select", w.Call(what + " select", [&] { return sb_select_blocks(P, &w.qv, w.sum, s, w.ws.data(), nullptr); }));
    expect_fail("attend", w.Call(what + " attend", [&] { return sb_attend(P, &w.qv, &w.kv, s, &w.ov, w.ws.data(), nullptr); }));
    expect_fail("partition", w.Call(what + " partition", [&] { return sb_attend_partition(P, &w.qv, &w.kv, s, &w.ov, w.ws.data(), 0, 1); }));
    expect_fail("merge", w.Call(what + " merge", [&] { return sb_attend_merge(P, s, &w.ov, w.ws.data(), 0, 1); }));
    expect_fail("sparse", w.Call(what + " sparse_attention", [&] {
      return sb_sparse_attention(P, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data(), nullptr, nullptr, s);
    }));
  }, [&] { return Bytes(w.sel); });

  // ---- sb_summaries_config: create (when it would not allocate more than 256 MiB), append ------
  const std::vector<Field> cfg_fields = {
      SB_FIELD(sb_summaries_config, struct_size, kSize), SB_FIELD(sb_summaries_config, num_kv_heads, kI32),
      SB_FIELD(sb_summaries_config, head_dim, kI32), SB_FIELD(sb_summaries_config, block_size, kI32),
      SB_FIELD(sb_summaries_config, max_tokens, kI64), SB_FIELD(sb_summaries_config, keep_mean, kI32),
      SB_FIELD(sb_summaries_config, keep_bound, kI32)};
  ForEach(w, "sb_summaries_config", cfg_fields, [&](Bytes& b, const std::string& what) {
    const sb_summaries_config* c = b.As<sb_summaries_config>();
    const bool shape_ok = c->num_kv_heads >= 1 && c->head_dim >= 1 && c->head_dim <= 4096 && c->block_size >= 16 &&
                          c->block_size <= 256 && (c->block_size & (c->block_size - 1)) == 0 && c->max_tokens >= 0;
    if (shape_ok) {
      const __int128 blocks = (static_cast<__int128>(c->max_tokens) + c->block_size - 1) / c->block_size;
      const __int128 floats = blocks * c->num_kv_heads * c->head_dim * 3;
      // The library caps storage at 2^40 floats per kind; below that a request is the caller's
      // memory to spend. Cases between 256 MiB and the cap are not run here (shared machine).
      if (floats * 4 > (__int128{256} << 20) && blocks * c->num_kv_heads * c->head_dim <= (__int128{1} << 40)) {
        ++w.n.contract_skips;
        return;
      }
    }
    sb_summaries* s = nullptr;
    if (w.Call(what + " create", [&] { return sb_summaries_create(c, &s); }) != SB_OK) {
      EXPECT_EQ(s, nullptr) << what;
      return;
    }
    if (c->num_kv_heads == 2 && c->head_dim == 64)
      w.Call(what + " append", [&] { return sb_summaries_append(s, &w.kv, c->max_tokens < World::kL ? c->max_tokens : World::kL); });
    size_t bytes = 0;
    EXPECT_EQ(sb_summaries_bytes(s, &bytes), SB_OK);
    sb_summaries_destroy(s);
  }, [&] {
    sb_summaries_config c;
    sb_summaries_config_init(&c);
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.max_tokens = World::kL;
    return Bytes(c);
  });

  // ---- sb_request_features: three predictors that read different fields --------------------
  const std::vector<Field> feat_fields = {
      SB_FIELD(sb_request_features, struct_size, kSize), SB_FIELD(sb_request_features, context_length, kI64),
      SB_FIELD(sb_request_features, block_size, kI32), SB_FIELD(sb_request_features, expected_output_length, kF64),
      SB_FIELD(sb_request_features, entropy, kF64), SB_FIELD(sb_request_features, top1_prob, kF64),
      SB_FIELD(sb_request_features, probe_blocks_50, kF64), SB_FIELD(sb_request_features, probe_blocks_90, kF64),
      SB_FIELD(sb_request_features, probe_blocks_99, kF64), SB_FIELD(sb_request_features, probe_entropy, kF64),
      SB_FIELD(sb_request_features, probe_top5_mass, kF64), SB_FIELD(sb_request_features, num_task_probs, kI32),
      SB_FIELD(sb_request_features, num_extra, kI32)};
  ForEach(w, "sb_request_features", feat_fields, [&](Bytes& b, const std::string& what) {
    const sb_request_features* f = b.As<sb_request_features>();
    for (const sb_predictor* pred : {w.law, w.probe, w.linear}) {
      sb_prediction r{};
      r.struct_size = sizeof r;
      if (w.Call(what + " predict " + sb_predictor_type(pred), [&] { return sb_predictor_predict(pred, f, &r); }) == SB_OK)
        CheckPrediction(r, what + " " + sb_predictor_type(pred));
    }
  }, [&] {
    sb_request_features f = w.feat;
    f.entropy = 1.0;
    f.top1_prob = 0.5;
    f.probe_blocks_90 = 4.0;
    f.probe_entropy = 1.0;
    f.expected_output_length = 100.0;
    return Bytes(f);
  });

  // ---- sb_probe_stats as an input (sb_probe_set_features), then a prediction from it ---------
  const std::vector<Field> probe_fields = {
      SB_FIELD(sb_probe_stats, struct_size, kSize), SB_FIELD(sb_probe_stats, blocks_50, kF64),
      SB_FIELD(sb_probe_stats, blocks_90, kF64), SB_FIELD(sb_probe_stats, blocks_99, kF64),
      SB_FIELD(sb_probe_stats, entropy, kF64), SB_FIELD(sb_probe_stats, top5_mass, kF64),
      SB_FIELD(sb_probe_stats, num_blocks, kI64)};
  ForEach(w, "sb_probe_stats(in)", probe_fields, [&](Bytes& b, const std::string& what) {
    sb_request_features f = w.feat;
    if (w.Call(what + " set_features", [&] { return sb_probe_set_features(b.As<sb_probe_stats>(), &f); }) != SB_OK) return;
    sb_prediction r{};
    r.struct_size = sizeof r;
    if (w.Call(what + " predict probe", [&] { return sb_predictor_predict(w.probe, &f, &r); }) == SB_OK) CheckPrediction(r, what);
  }, [&] {
    sb_probe_stats s{};
    s.struct_size = sizeof s;
    s.blocks_50 = 2;
    s.blocks_90 = 4;
    s.blocks_99 = 8;
    s.entropy = 1;
    s.top5_mass = 0.5;
    s.num_blocks = 16;
    return Bytes(s);
  });

  // ---- output structs: garbage in the output fields is never read; struct_size is honoured ---
  struct Out {
    std::string name;
    std::vector<Field> fields;
    size_t size;
    std::function<sb_status(void*)> call;
  };
  const double kScores[4] = {0.5, 2.0, -1.0, 0.25};
  const std::vector<Out> outs = {
      {"sb_resolved_budget",
       {SB_FIELD(sb_resolved_budget, struct_size, kSize), SB_FIELD(sb_resolved_budget, forced_blocks, kI64),
        SB_FIELD(sb_resolved_budget, total_blocks, kI64), SB_FIELD(sb_resolved_budget, scored_blocks, kI64),
        SB_FIELD(sb_resolved_budget, clamped, kI32)},
       sizeof(sb_resolved_budget),
       [&](void* o) { return sb_budget_resolve(&w.params.budget, 16, static_cast<sb_resolved_budget*>(o)); }},
      {"sb_plan_info",
       {SB_FIELD(sb_plan_info, struct_size, kSize), SB_FIELD(sb_plan_info, workspace_bytes, kSize),
        SB_FIELD(sb_plan_info, num_blocks, kI64), SB_FIELD(sb_plan_info, num_query_blocks, kI64),
        SB_FIELD(sb_plan_info, first_query_block, kI64), SB_FIELD(sb_plan_info, num_units, kI64),
        SB_FIELD(sb_plan_info, group, kI32), SB_FIELD(sb_plan_info, scale, kF32)},
       sizeof(sb_plan_info), [&](void* o) { return sb_plan_get_info(P, static_cast<sb_plan_info*>(o)); }},
      {"sb_selection_stats",
       {SB_FIELD(sb_selection_stats, struct_size, kSize), SB_FIELD(sb_selection_stats, units, kI64),
        SB_FIELD(sb_selection_stats, units_clamped, kI64), SB_FIELD(sb_selection_stats, kept_blocks, kI64),
        SB_FIELD(sb_selection_stats, causal_blocks, kI64), SB_FIELD(sb_selection_stats, dense, kI32)},
       sizeof(sb_selection_stats),
       [&](void* o) {
         return sb_sparse_attention(P, &w.qv, &w.kv, w.sum, &w.ov, w.ws.data(), nullptr, static_cast<sb_selection_stats*>(o),
                                    nullptr);
       }},
      {"sb_prediction",
       {SB_FIELD(sb_prediction, struct_size, kSize), SB_FIELD(sb_prediction, estimate_blocks, kF64),
        SB_FIELD(sb_prediction, causal_blocks, kI64), SB_FIELD(sb_prediction, total_blocks, kI64),
        SB_FIELD(sb_prediction, fraction, kF64), SB_FIELD(sb_prediction, clamped, kI32),
        SB_FIELD(sb_prediction, fallback, kI32), Field{"budget.blocks", offsetof(sb_prediction, budget) + offsetof(sb_budget, blocks), Kind::kI64},
        Field{"budget.struct_size", offsetof(sb_prediction, budget) + offsetof(sb_budget, struct_size), Kind::kSize},
        Field{"budget.fraction", offsetof(sb_prediction, budget) + offsetof(sb_budget, fraction), Kind::kF64}},
       sizeof(sb_prediction), [&](void* o) { return sb_predictor_predict(w.law, &w.feat, static_cast<sb_prediction*>(o)); }},
      {"sb_probe_stats(out)",
       {SB_FIELD(sb_probe_stats, struct_size, kSize), SB_FIELD(sb_probe_stats, blocks_50, kF64),
        SB_FIELD(sb_probe_stats, blocks_90, kF64), SB_FIELD(sb_probe_stats, blocks_99, kF64),
        SB_FIELD(sb_probe_stats, entropy, kF64), SB_FIELD(sb_probe_stats, top5_mass, kF64),
        SB_FIELD(sb_probe_stats, num_blocks, kI64)},
       sizeof(sb_probe_stats), [&](void* o) { return sb_probe_from_scores(kScores, 4, 1.0, static_cast<sb_probe_stats*>(o)); }},
  };
  for (const Out& o : outs) {
    // The reference: a zeroed struct with struct_size set.
    alignas(64) unsigned char ref[SB_MAX_STRUCT_SIZE + 64] = {};
    const size_t sz = o.size;
    std::memcpy(ref, &sz, sizeof sz);
    ASSERT_EQ(o.call(ref), SB_OK) << o.name << ": " << sb_last_error();
    for (const Field& f : o.fields) {
      for (const Value& v : Values(f.kind)) {
        alignas(64) unsigned char buf[SB_MAX_STRUCT_SIZE + 64];
        std::memset(buf, 0x5A, sizeof buf);  // canary past the struct
        std::memset(buf, 0, sz);
        std::memcpy(buf, &sz, sizeof sz);
        std::memcpy(buf + f.offset, v.bytes, v.size);
        size_t declared;
        std::memcpy(&declared, buf, sizeof declared);
        ++w.n.cases;
        const std::string what = o.name + "." + f.name + " = " + v.name;
        const sb_status st = w.Call(what, [&] { return o.call(buf); });
        if (f.offset == 0) {
          // struct_size itself: below the first version or above the cap is an error.
          if (declared < sz || declared > SB_MAX_STRUCT_SIZE) {
            EXPECT_NE(st, SB_OK) << what;
          } else {
            EXPECT_EQ(st, SB_OK) << what;
          }
          for (size_t i = sz; i < sizeof buf; ++i)
            if (buf[i] != 0x5A) {
              ADD_FAILURE() << what << ": wrote byte " << i << " past sizeof the struct";
              break;
            }
          continue;
        }
        EXPECT_EQ(st, SB_OK) << what << ": " << sb_last_error();
        // Field by field (padding bytes are whatever the library's local copy held).
        for (const Field& g : o.fields) {
          if (g.offset == 0) continue;
          const size_t n = g.kind == Kind::kI32 || g.kind == Kind::kF32 || g.kind == Kind::kEnum ? 4 : 8;
          EXPECT_EQ(std::memcmp(buf + g.offset, ref + g.offset, n), 0)
              << what << ": output field " << g.name << " differs (the library read a garbage output field)";
        }
      }
    }
  }

  std::printf("extreme-value generator: %ld cases (struct field x value), %ld calls, %ld errors returned, "
              "%ld cases beyond the test's buffers (validation only)\n",
              w.n.cases, w.n.calls, w.n.errors, w.n.contract_skips);
  EXPECT_GT(w.n.cases, 500);
}

}  // namespace
// clang-format on
