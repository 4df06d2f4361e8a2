// The bad-input matrix: one table over every public entry point (C++ and C API). Each row makes
// one thing wrong against an otherwise valid call and states the documented status and a word
// the message must contain (the bad value or the key). Every row also checks that nothing was
// written outside the outputs (canaries around every buffer the calls see) and, for the C API,
// that a failing call left its outputs untouched. Under ASan/UBSan the same rows prove that no
// bad input reads or writes out of bounds or executes undefined arithmetic.
//
// Rows already covered by tests/test_attention.cpp (Errors.EveryBadShapeHasAStatusNamingTheValue)
// are not repeated here: head_dim 0, block 48/8, kv 3 of 8, q heads 0, L < nq, nq < 0, L < 0,
// L = 2^50, dtype 9, scoring 5, scale NaN, blocks -1, fraction 1.5, top_p 0, max < min, the
// null views, kv overlap, token_stride 2^60, dtype mismatch, page_size 96, page_table[3] = -2,
// a duplicated selection index, ith = nth, summaries with 0 heads / block 24 / append past
// max_tokens, summaries shorter than L, ParseIsa("sse9").
// The rows are a table, one row per line; clang-format would break each row over several lines
// around its lambda, so it leaves this file alone.
// clang-format off
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "reliability_util.hpp"
#include "sparsebudget/calibration.hpp"
#include "sparsebudget/escalation.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/probe.hpp"
#include "sparsebudget/sparsebudget.hpp"
#include "sparsebudget/traces.hpp"

namespace {

using namespace sparsebudget;
using sbrel::Guarded;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Codes as ints so C and C++ rows share one table.
constexpr int kOk = 0, kInv = 1, kRange = 2, kNotFound = 3, kParse = 4, kIo = 5, kUnsup = 6;

struct Result {
  int code;
  std::string message;
};
Result R(const Status& s) { return {static_cast<int>(s.code()), s.message()}; }
template <typename T>
Result R(const Expected<T>& e) {
  return e.ok() ? Result{kOk, ""} : R(e.status());
}

struct Row {
  std::string entry;  // the entry point
  std::string what;   // what is wrong
  std::function<Result()> call;
  std::vector<int> want;  // acceptable codes (the documented one first)
  std::string needle;     // must appear in the message ("" = no check)
};

// A temporary directory with a few files for the file-reading rows.
struct Files {
  std::string dir;
  Files() {
    char tmpl[] = "/tmp/sb_badinput_XXXXXX";
    dir = mkdtemp(tmpl);
  }
  ~Files() {
    for (const std::string& f : made) std::remove(f.c_str());
    rmdir((dir + "/subdir").c_str());
    rmdir(dir.c_str());
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string p = dir + "/" + name;
    std::ofstream(p, std::ios::binary) << bytes;
    made.push_back(p);
    return p;
  }
  std::string Subdir() {
    const std::string p = dir + "/subdir";
    mkdir(p.c_str(), 0700);
    return p;
  }
  std::string Missing() const { return dir + "/does_not_exist.json"; }
  std::vector<std::string> made;
};

std::string NpyBytes(const std::string& header_dict, const std::string& payload, int version = 1) {
  std::string h = header_dict;
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  out += static_cast<char>(h.size() & 0xff);
  out += static_cast<char>((h.size() >> 8) & 0xff);
  return out + h + payload;
}

const char* kTrace =
    R"({"id":"a","task":"single_qa","context_length":1024,"block_size":64,"features":{"entropy":1.0},)"
    R"("curve":[{"blocks":2,"fraction":0.125,"quality":0.0},{"blocks":16,"fraction":1.0,"quality":1.0}],)"
    R"("dense_quality":1.0,"oracle":{"blocks":16,"fraction":1.0,"criterion":"exact_match"}})";

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  const size_t p = s.find(from);
  if (p != std::string::npos) s.replace(p, from.size(), to);
  return s;
}

// Everything a valid call needs, with guarded buffers.
struct World {
  // Decode plan: 8 q heads, 2 kv heads, head_dim 64, block 64, L 1000, one query, Blocks(2).
  AttentionParams params;
  AttentionPlan plan, prefill;  // prefill: 4 queries
  Guarded<float> k{1000 * 2 * 64, 0.5f}, v{1000 * 2 * 64, 0.25f}, q{4 * 8 * 64, 0.1f}, out{4 * 8 * 64, 0.0f};
  Guarded<unsigned char> ws;
  Guarded<int32_t> idx{2 * 16}, cnt{2};
  KVCacheView kv;
  QueryView qv;
  OutputView ov;
  BlockSummaries sum;
  std::unique_ptr<Predictor> pred;
  RequestFeatures feat;

  World() : ws(1) {
    params.shape = {8, 2, 64, 64, 1000, 1};
    params.budget = Budget::Blocks(2);
    EXPECT_TRUE(MakePlan(params, &plan).ok());
    AttentionParams pp = params;
    pp.shape.num_queries = 4;
    EXPECT_TRUE(MakePlan(pp, &prefill).ok());
    ws = Guarded<unsigned char>(std::max(plan.workspace_bytes, prefill.workspace_bytes) + 64);
    kv = {k.data(), v.data(), DType::kF32, 128, 64};
    qv = {q.data(), 512, 64};
    ov = {out.data(), 512, 64};
    auto s = BlockSummaries::Create({2, 64, 64, 1000, true, true});
    EXPECT_TRUE(s.ok());
    sum = std::move(*s);
    EXPECT_TRUE(sum.Append(kv, 1000).ok());
    pred = MakeLengthLaw();
    feat.context_length = 1000;
  }
  BlockSelection Sel() { return {idx.data(), cnt.data(), 16}; }
  bool Intact() const {
    return k.intact() && v.intact() && q.intact() && out.intact() && ws.intact() && idx.intact() && cnt.intact();
  }
};

void RunRows(World& w, const std::vector<Row>& rows, int* failures) {
  for (const Row& row : rows) {
    SCOPED_TRACE(row.entry + ": " + row.what);
    const auto before = w.out.snapshot();
    const Result r = row.call();
    bool code_ok = false;
    for (int c : row.want) code_ok = code_ok || c == r.code;
    std::string want;
    for (int c : row.want) want += std::string(want.empty() ? "" : "|") + StatusCodeName(static_cast<StatusCode>(c));
    EXPECT_TRUE(code_ok) << row.entry << " [" << row.what << "]: got "
                         << StatusCodeName(static_cast<StatusCode>(r.code)) << " '" << r.message << "', want " << want;
    if (r.code != kOk) {
      EXPECT_FALSE(r.message.empty()) << row.entry << " [" << row.what << "]: error without a message";
      if (!row.needle.empty()) {
        EXPECT_NE(r.message.find(row.needle), std::string::npos)
            << row.entry << " [" << row.what << "]: message '" << r.message << "' does not name '" << row.needle << "'";
      }
      EXPECT_EQ(before, w.out.snapshot()) << row.entry << " [" << row.what << "]: failing call wrote the output";
    }
    EXPECT_TRUE(w.Intact()) << row.entry << " [" << row.what << "]: wrote outside a buffer";
    if (!code_ok) ++*failures;
  }
}

// ---- C++: attention -------------------------------------------------------------------------

TEST(BadInput, AttentionPlanAndBudget) {
  World w;
  std::vector<Row> rows;
  auto plan_row = [&](const std::string& what, std::function<void(AttentionParams&)> mut, std::vector<int> want,
                      const std::string& needle) {
    rows.push_back({"MakePlan", what, [&w, mut] {
                      AttentionParams p = w.params;
                      mut(p);
                      AttentionPlan plan;
                      return R(MakePlan(p, &plan));
                    },
                    want, needle});
  };
  rows.push_back({"MakePlan", "null plan", [&] { return R(MakePlan(w.params, nullptr)); }, {kInv}, "plan"});
  plan_row("head_dim -1", [](AttentionParams& p) { p.shape.head_dim = -1; }, {kInv}, "-1");
  plan_row("head_dim 4097", [](AttentionParams& p) { p.shape.head_dim = 4097; }, {kInv}, "4097");
  plan_row("block_size 0", [](AttentionParams& p) { p.shape.block_size = 0; }, {kInv}, "block_size");
  plan_row("block_size 512", [](AttentionParams& p) { p.shape.block_size = 512; }, {kInv}, "512");
  plan_row("block_size -64", [](AttentionParams& p) { p.shape.block_size = -64; }, {kInv}, "-64");
  plan_row("num_kv_heads 0", [](AttentionParams& p) { p.shape.num_kv_heads = 0; }, {kInv}, "num_kv_heads");
  plan_row("num_kv_heads -2", [](AttentionParams& p) { p.shape.num_kv_heads = -2; }, {kInv}, "-2");
  plan_row("num_kv_heads > num_q_heads", [](AttentionParams& p) { p.shape.num_kv_heads = 16; }, {kInv}, "16");
  plan_row("num_q_heads -1", [](AttentionParams& p) { p.shape.num_q_heads = -1; }, {kInv}, "num_q_heads");
  plan_row("context_length INT64_MAX", [](AttentionParams& p) { p.shape.context_length = INT64_MAX; }, {kRange, kInv},
           "context_length");
  plan_row("num_queries INT32_MAX", [](AttentionParams& p) { p.shape.num_queries = INT32_MAX; }, {kInv}, "num_queries");
  plan_row("scale +inf", [](AttentionParams& p) { p.scale = INFINITY; }, {kInv}, "scale");
  plan_row("scale -inf", [](AttentionParams& p) { p.scale = -INFINITY; }, {kInv}, "scale");
  plan_row("budget mode 9", [](AttentionParams& p) { p.budget.mode = static_cast<BudgetMode>(9); }, {kInv}, "mode");
  plan_row("budget mode -1", [](AttentionParams& p) { p.budget.mode = static_cast<BudgetMode>(-1); }, {kInv}, "mode");
  plan_row("sink_blocks -1", [](AttentionParams& p) { p.budget.sink_blocks = -1; }, {kInv}, "sink_blocks");
  plan_row("local_blocks -1", [](AttentionParams& p) { p.budget.local_blocks = -1; }, {kInv}, "local_blocks");
  plan_row("fraction NaN", [](AttentionParams& p) { p.budget = Budget::Fraction(kNaN); }, {kInv}, "fraction");
  plan_row("fraction -0.1", [](AttentionParams& p) { p.budget = Budget::Fraction(-0.1); }, {kInv}, "fraction");
  plan_row("top_p 1.5", [](AttentionParams& p) { p.budget = Budget::TopP(1.5); }, {kInv}, "top_p");
  plan_row("top_p NaN", [](AttentionParams& p) { p.budget = Budget::TopP(kNaN); }, {kInv}, "top_p");
  plan_row("top_p -inf", [](AttentionParams& p) { p.budget = Budget::TopP(-kInf); }, {kInv}, "top_p");
  plan_row("min_blocks -1", [](AttentionParams& p) { p.budget.min_blocks = -1; }, {kInv}, "min_blocks");
  plan_row("max_blocks -1", [](AttentionParams& p) { p.budget.max_blocks = -1; }, {kInv}, "max_blocks");
  // Well-formed edge values are accepted.
  plan_row("blocks INT64_MAX (more than exists)", [](AttentionParams& p) { p.budget = Budget::Blocks(INT64_MAX); },
           {kOk}, "");
  plan_row("fraction 0 (forced blocks only)", [](AttentionParams& p) { p.budget = Budget::Fraction(0.0); }, {kOk}, "");
  plan_row("sink/local INT32_MAX", [](AttentionParams& p) {
    p.budget.sink_blocks = INT32_MAX;
    p.budget.local_blocks = INT32_MAX;
  }, {kOk}, "");
  // 2^26 query heads per kv head: max_rows = 64 * 2^26 = 2^32 does not fit the plan's int32 (and the
  // attend loop's int32 row count); the plan must refuse it rather than size a wrong workspace.
  plan_row("num_q_heads 2^26 with 64 queries (rows overflow int32)", [](AttentionParams& p) {
    p.shape = {1 << 26, 1, 16, 64, 4096, 64};
  }, {kRange, kInv}, "num_q_heads");

  // Budgets directly.
  rows.push_back({"ValidateBudget", "mode 4", [] { Budget b; b.mode = static_cast<BudgetMode>(4); return R(ValidateBudget(b)); }, {kInv}, "mode"});
  rows.push_back({"ValidateBudget", "max 2 < min 3", [] { Budget b = Budget::Blocks(1); b.min_blocks = 3; b.max_blocks = 2; return R(ValidateBudget(b)); }, {kInv}, "max_blocks"});
  rows.push_back({"ScaleBudget", "scale inf", [] { return R(ScaleBudget(Budget::Blocks(3), kInf)); }, {kInv}, "budget_scale"});
  rows.push_back({"ScaleBudget", "scale NaN", [] { return R(ScaleBudget(Budget::Fraction(0.1), kNaN)); }, {kInv}, "budget_scale"});
  rows.push_back({"ScaleBudget", "scale -1", [] { return R(ScaleBudget(Budget::Blocks(3), -1.0)); }, {kInv}, "budget_scale"});
  rows.push_back({"ParseIsa", "null", [] { return R(ParseIsa(nullptr)); }, {kInv}, "null"});
  rows.push_back({"ParseIsa", "empty", [] { return R(ParseIsa("")); }, {kInv}, "''"});
  rows.push_back({"ParseIsa", "wrong case AVX2", [] { return R(ParseIsa("AVX2")); }, {kInv}, "AVX2"});

  int failures = 0;
  RunRows(w, rows, &failures);
  // ResolveBudget is noexcept and total on validated budgets: the extremes stay in range.
  for (int64_t nb : {int64_t{1}, int64_t{2}, int64_t{1} << 40}) {
    for (Budget b : {Budget::Blocks(INT64_MAX), Budget::Fraction(1.0), Budget::Fraction(0.0), Budget::Dense(),
                     Budget::TopP(1.0, INT64_MAX, INT64_MAX)}) {
      b.sink_blocks = INT32_MAX;
      b.local_blocks = INT32_MAX;
      const ResolvedBudget r = ResolveBudget(b, nb);
      EXPECT_GE(r.total_blocks, 1);
      EXPECT_LE(r.total_blocks, nb);
      EXPECT_EQ(r.total_blocks, r.forced_blocks + r.scored_blocks);
    }
  }
}

TEST(BadInput, AttentionViews) {
  World w;
  std::vector<Row> rows;
  auto views = [&](const std::string& what, const AttentionPlan* plan, std::function<void(QueryView&, KVCacheView&, OutputView&)> mut,
                   std::vector<int> want, const std::string& needle) {
    rows.push_back({"ValidateViews", what, [&w, plan, mut] {
                      QueryView q = w.qv;
                      KVCacheView kv = w.kv;
                      OutputView o = w.ov;
                      mut(q, kv, o);
                      return R(ValidateViews(*plan, q, kv, &o));
                    },
                    want, needle});
  };
  const AttentionPlan* dec = &w.plan;
  const AttentionPlan* pre = &w.prefill;
  views("q heads overlap (head_stride 32 < head_dim 64)", dec, [](QueryView& q, KVCacheView&, OutputView&) { q.head_stride = 32; }, {kInv}, "overlap");
  views("q negative token_stride", pre, [](QueryView& q, KVCacheView&, OutputView&) { q.token_stride = -512; }, {kInv}, "-512");
  views("q negative head_stride", dec, [](QueryView& q, KVCacheView&, OutputView&) { q.head_stride = -64; }, {kInv}, "-64");
  views("out heads overlap (head_stride 0)", dec, [](QueryView&, KVCacheView&, OutputView& o) { o.head_stride = 0; }, {kInv}, "out");
  views("out tokens overlap in prefill (token_stride 64)", pre, [](QueryView&, KVCacheView&, OutputView& o) { o.token_stride = 64; }, {kInv}, "out");
  views("kv negative head_stride", dec, [](QueryView&, KVCacheView& kv, OutputView&) { kv.head_stride = -64; }, {kInv}, "-64");
  views("kv.v null", dec, [](QueryView&, KVCacheView& kv, OutputView&) { kv.v = nullptr; }, {kInv}, "kv.v");
  views("kv.dtype 7 (not a DType)", dec, [](QueryView&, KVCacheView& kv, OutputView&) { kv.dtype = static_cast<DType>(7); }, {kInv}, "dtype");
  views("head-major kv layout (accepted)", dec, [](QueryView&, KVCacheView& kv, OutputView&) { kv.token_stride = 64; kv.head_stride = 64 * 1000; }, {kOk}, "");
  views("q head_stride 2^61 with 8 heads in prefill (overlap check multiplies)", pre,
        [](QueryView& q, KVCacheView&, OutputView&) { q.head_stride = int64_t{1} << 61; q.token_stride = 64; }, {kRange, kInv}, "q");
  views("kv head_stride 2^62 (byte extent overflows)", dec, [](QueryView&, KVCacheView& kv, OutputView&) { kv.head_stride = int64_t{1} << 62; }, {kRange}, "kv");
  views("out token_stride INT64_MAX in prefill", pre, [](QueryView&, KVCacheView&, OutputView& o) { o.token_stride = INT64_MAX; }, {kRange}, "out");

  // Paged layouts (table of 16 pages of 64 tokens; page_stride = one page of 64 x 128 floats).
  static int32_t table[17];
  for (int i = 0; i < 17; ++i) table[i] = i;
  auto paged = [](KVCacheView& kv) {
    kv.page_table = table;
    kv.page_size = 64;
    kv.page_stride = 64 * 128;
    kv.num_pages = 16;
  };
  // The pool's size is the only thing that can stop an entry past the caller's memory.
  views("page_table entry 16 past a pool of 16 pages", dec, [&](QueryView&, KVCacheView& kv, OutputView&) {
    paged(kv);
    static int32_t t5[16] = {0, 1, 2, 16};
    kv.page_table = t5;
  }, {kInv}, "page_table[3] = 16 is outside");
  views("page_table entry -1", dec, [&](QueryView&, KVCacheView& kv, OutputView&) {
    paged(kv);
    static int32_t t6[16] = {0, -1};
    kv.page_table = t6;
  }, {kInv}, "page_table[1] = -1");
  views("num_pages 0 (pool size not given)", dec, [&](QueryView&, KVCacheView& kv, OutputView&) { paged(kv); kv.num_pages = 0; }, {kInv}, "num_pages");
  views("num_pages -3", dec, [&](QueryView&, KVCacheView& kv, OutputView&) { paged(kv); kv.num_pages = -3; }, {kInv}, "-3");
  views("num_pages INT64_MAX (pool extent overflows)", dec, [&](QueryView&, KVCacheView& kv, OutputView&) { paged(kv); kv.num_pages = INT64_MAX; }, {kInv, kRange}, "num_pages");
  views("page_size 0", dec, [&](QueryView&, KVCacheView& kv, OutputView&) { paged(kv); kv.page_size = 0; }, {kInv}, "page_size");
  views("page_size -64", dec, [&](QueryView&, KVCacheView& kv, OutputView&) { paged(kv); kv.page_size = -64; }, {kInv}, "-64");
  views("page_stride below one page's extent", dec, [&](QueryView&, KVCacheView& kv, OutputView&) { paged(kv); kv.page_stride = 100; }, {kInv}, "page_stride");
  views("page_stride negative", dec, [&](QueryView&, KVCacheView& kv, OutputView&) { paged(kv); kv.page_stride = -64 * 128; }, {kInv}, "page_stride");
  views("page_table entry INT32_MAX x page_stride 2^40 overflows", dec, [&](QueryView&, KVCacheView& kv, OutputView&) {
    paged(kv);
    kv.page_stride = int64_t{1} << 40;
    static int32_t t2[16];
    for (auto& x : t2) x = INT32_MAX;
    kv.page_table = t2;
  }, {kInv, kRange}, "page_table[0]");
  views("page_stride near INT64_MAX (page offset + extent overflows)", dec, [&](QueryView&, KVCacheView& kv, OutputView&) {
    paged(kv);
    kv.page_stride = INT64_MAX - 100;
    static int32_t t3[16] = {1};
    kv.page_table = t3;
  }, {kInv, kRange}, "num_pages");
  views("page_size 2^63-64 (one page; page count must not overflow)", dec, [&](QueryView&, KVCacheView& kv, OutputView&) {
    paged(kv);
    kv.page_size = INT64_MAX - 63;
  }, {kOk, kInv, kRange}, "");
  // One page (the whole context) with a negative page_stride: page 1 starts before the buffer.
  // The C API rejects page_stride < 0; the C++ check must not let the kernel read there.
  {
    AttentionParams p1 = w.params;
    p1.shape.context_length = 64;
    static AttentionPlan one;
    EXPECT_TRUE(MakePlan(p1, &one).ok());
    views("single page, page_table[0] = 1, page_stride -8192 (page before the buffer)", &one,
          [](QueryView&, KVCacheView& kv, OutputView&) {
            static int32_t t4[1] = {1};
            kv.page_table = t4;
            kv.page_size = 64;
            kv.page_stride = -64 * 128;
            kv.num_pages = 2;
          },
          {kInv}, "page_stride");
  }
  // One token: the extent (0 * token_stride + dim) fits, but the kernels form token_stride in
  // bytes for their prefetch and block addresses, so the stride alone must fit (fuzz_op found it).
  {
    AttentionParams p1 = w.params;
    p1.shape.context_length = 1;
    static AttentionPlan single;
    EXPECT_TRUE(MakePlan(p1, &single).ok());
    views("one token, kv token_stride 2^62 (stride in bytes overflows)", &single,
          [](QueryView&, KVCacheView& kv, OutputView&) { kv.token_stride = int64_t{1} << 62; }, {kRange}, "token_stride");
    views("one token, kv token_stride 2^61 - 1 (fits in bytes; accepted)", &single,
          [](QueryView&, KVCacheView& kv, OutputView&) { kv.token_stride = (int64_t{1} << 61) - 1; }, {kOk}, "");
  }

  int failures = 0;
  RunRows(w, rows, &failures);
  // q8_0 bytes are 34 per 32 values: a multiple of 32 near INT64_MAX overflows and must say so.
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, INT64_MAX - 31), -1);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, (INT64_MAX / 34) / 32 * 32), (INT64_MAX / 34) / 32 * 34);
  EXPECT_EQ(DTypeBytes(DType::kF16, INT64_MAX / 2 + 1), -1);
}

TEST(BadInput, SummariesSelectAttend) {
  World w;
  std::vector<Row> rows;
  using Cfg = BlockSummaries::Config;
  auto create = [&](const std::string& what, Cfg c, std::vector<int> want, const std::string& needle) {
    rows.push_back({"BlockSummaries::Create", what, [c] { return R(BlockSummaries::Create(c)); }, want, needle});
  };
  create("head_dim 0", {2, 0, 64, 100, true, true}, {kInv}, "head_dim");
  create("head_dim 5000", {2, 5000, 64, 100, true, true}, {kInv}, "5000");
  create("num_kv_heads -1", {-1, 64, 64, 100, true, true}, {kInv}, "-1");
  create("block_size 512", {2, 64, 512, 100, true, true}, {kInv}, "512");
  create("max_tokens -1", {2, 64, 64, -1, true, true}, {kInv}, "max_tokens");
  create("neither mean nor bound", {2, 64, 64, 100, false, false}, {kInv}, "mean");
  create("max_tokens 2^62 (storage too large)", {8, 128, 16, int64_t{1} << 62, true, true}, {kRange}, "max_tokens");
  create("max_tokens INT64_MAX", {1, 1, 16, INT64_MAX, true, true}, {kRange}, "max_tokens");
  create("max_tokens 0 (accepted, empty)", {2, 64, 64, 0, true, true}, {kOk}, "");

  auto append = [&](const std::string& what, std::function<void(KVCacheView&)> mut, int64_t n, std::vector<int> want,
                    const std::string& needle) {
    rows.push_back({"BlockSummaries::Append", what, [&w, mut, n] {
                      auto s = BlockSummaries::Create({2, 64, 64, 1000, true, true});
                      if (!s.ok()) return R(s.status());
                      EXPECT_TRUE(s->Append(w.kv, 100).ok());
                      KVCacheView kv = w.kv;
                      mut(kv);
                      return R(s->Append(kv, n));
                    },
                    want, needle});
  };
  append("new_num_tokens below num_tokens", [](KVCacheView&) {}, 50, {kRange}, "50");
  append("new_num_tokens -1", [](KVCacheView&) {}, -1, {kRange}, "-1");
  append("kv.k null", [](KVCacheView& kv) { kv.k = nullptr; }, 200, {kInv}, "kv.k");
  append("kv.dtype 7", [](KVCacheView& kv) { kv.dtype = static_cast<DType>(7); }, 200, {kInv}, "dtype");
  append("negative token_stride", [](KVCacheView& kv) { kv.token_stride = -128; }, 200, {kInv}, "stride");
  append("page_size 48", [](KVCacheView& kv) { static int32_t t[16] = {}; kv.page_table = t; kv.page_size = 48; kv.page_stride = 64 * 128; kv.num_pages = 16; }, 200, {kInv}, "page_size");
  append("same count again (no-op)", [](KVCacheView&) {}, 100, {kOk}, "");
  // A negative page-table entry: tokens 100..199 live on page 1, mapped to -1. The view sits in
  // the middle of a large buffer so the (unchecked) read stays inside memory we own and the
  // test fails by its status, not by a crash.
  rows.push_back({"BlockSummaries::Append", "page_table[1] = -1 (page before the buffer)", [] {
                    static std::vector<float> big(64 * 128 * 8, 1.0f);
                    static int32_t t[16] = {4, -1, 5, 6};
                    KVCacheView kv{big.data() + 64 * 128 * 3, big.data() + 64 * 128 * 3, DType::kF32, 128, 64, t, 64, 64 * 128, 8};
                    auto s = BlockSummaries::Create({2, 64, 64, 1000, true, true});
                    return R(s->Append(kv, 200));
                  },
                  {kInv, kRange}, "page_table[1]"});

  auto select = [&](const std::string& what, std::function<Status()> f, std::vector<int> want, const std::string& needle) {
    rows.push_back({"SelectBlocks", what, [f] { return R(f()); }, want, needle});
  };
  select("q.data null", [&] { return SelectBlocks(w.plan, QueryView{}, w.sum, w.Sel(), w.ws.data()); }, {kInv}, "q.data");
  select("indices null", [&] { return SelectBlocks(w.plan, w.qv, w.sum, {nullptr, w.cnt.data(), 16}, w.ws.data()); }, {kInv}, "selection");
  select("counts null", [&] { return SelectBlocks(w.plan, w.qv, w.sum, {w.idx.data(), nullptr, 16}, w.ws.data()); }, {kInv}, "selection");
  select("capacity 15 < num_blocks 16", [&] { return SelectBlocks(w.plan, w.qv, w.sum, {w.idx.data(), w.cnt.data(), 15}, w.ws.data()); }, {kInv}, "15");
  select("workspace null", [&] { return SelectBlocks(w.plan, w.qv, w.sum, w.Sel(), nullptr); }, {kInv}, "workspace");
  select("summaries head_dim 32", [&] {
    auto s = BlockSummaries::Create({2, 32, 64, 1000, true, true});
    return SelectBlocks(w.plan, w.qv, *s, w.Sel(), w.ws.data());
  }, {kInv}, "32");
  select("summaries keep mean only, plan scores by bound", [&] {
    auto s = BlockSummaries::Create({2, 64, 64, 1000, true, false});
    EXPECT_TRUE(s->Append(w.kv, 1000).ok());
    return SelectBlocks(w.plan, w.qv, *s, w.Sel(), w.ws.data());
  }, {kInv}, "bound");
  select("NaN in every query (accepted; NaN scores rank last)", [&] {
    std::vector<float> qn(8 * 64, NAN);
    Status st = SelectBlocks(w.plan, QueryView{qn.data(), 512, 64}, w.sum, w.Sel(), w.ws.data());
    if (st.ok()) {
      for (int u = 0; u < 2; ++u) EXPECT_EQ(w.cnt[static_cast<size_t>(u)], 4);  // sink + 2 scored + own
    }
    return st;
  }, {kOk}, "");

  auto attend = [&](const std::string& what, std::function<Status()> f, std::vector<int> want, const std::string& needle) {
    rows.push_back({"Attend", what, [f] { return R(f()); }, want, needle});
  };
  auto sel_with = [&](std::vector<int32_t> unit0, int32_t count0) {
    for (size_t i = 0; i < 32; ++i) w.idx[i] = 0;
    for (size_t i = 0; i < unit0.size(); ++i) w.idx[i] = unit0[i];
    w.cnt[0] = count0;
    w.idx[16] = 15;
    w.cnt[1] = 1;
    return ConstBlockSelection{w.idx.data(), w.cnt.data(), 16};
  };
  attend("selection.counts null", [&] { return Attend(w.plan, w.qv, w.kv, {w.idx.data(), nullptr, 16}, w.ov, w.ws.data()); }, {kInv}, "counts");
  attend("selection capacity 3", [&] { return Attend(w.plan, w.qv, w.kv, {w.idx.data(), w.cnt.data(), 3}, w.ov, w.ws.data()); }, {kInv}, "capacity 3");
  attend("counts[0] = -1", [&] { return Attend(w.plan, w.qv, w.kv, sel_with({}, -1), w.ov, w.ws.data()); }, {kRange}, "counts[0] = -1");
  attend("counts[0] = 17 > 16 causal blocks", [&] { return Attend(w.plan, w.qv, w.kv, sel_with({}, 17), w.ov, w.ws.data()); }, {kRange}, "17");
  attend("index 16 (not causal)", [&] { return Attend(w.plan, w.qv, w.kv, sel_with({0, 16}, 2), w.ov, w.ws.data()); }, {kRange}, "16");
  attend("index -1", [&] { return Attend(w.plan, w.qv, w.kv, sel_with({-1, 3}, 2), w.ov, w.ws.data()); }, {kRange}, "-1");
  attend("indices descending", [&] { return Attend(w.plan, w.qv, w.kv, sel_with({5, 2}, 2), w.ov, w.ws.data()); }, {kRange}, "2");
  // Issue 12, defect 7: a unit with no block leaves its rows without a key (0/0 = NaN rows).
  attend("empty selection for a unit (count 0)", [&] { return Attend(w.plan, w.qv, w.kv, sel_with({}, 0), w.ov, w.ws.data()); }, {kRange}, "counts[0] = 0");

  auto part = [&](const std::string& what, std::function<Status()> f, std::vector<int> want, const std::string& needle) {
    rows.push_back({"AttendPartition/AttendMerge", what, [f] { return R(f()); }, want, needle});
  };
  part("partition nth 0", [&] { return AttendPartition(w.plan, w.qv, w.kv, {}, w.ov, w.ws.data(), 0, 0); }, {kInv}, "nth 0");
  part("partition ith -1", [&] { return AttendPartition(w.plan, w.qv, w.kv, {}, w.ov, w.ws.data(), -1, 4); }, {kInv}, "ith -1");
  part("partition nth -3", [&] { return AttendPartition(w.plan, w.qv, w.kv, {}, w.ov, w.ws.data(), 0, -3); }, {kInv}, "-3");
  part("partition q null", [&] { return AttendPartition(w.plan, QueryView{}, w.kv, {}, w.ov, w.ws.data(), 0, 1); }, {kInv}, "q.data");
  part("partition kv.v null", [&] { KVCacheView kv = w.kv; kv.v = nullptr; return AttendPartition(w.plan, w.qv, kv, {}, w.ov, w.ws.data(), 0, 1); }, {kInv}, "kv");
  part("partition workspace null", [&] { return AttendPartition(w.plan, w.qv, w.kv, {}, w.ov, nullptr, 0, 1); }, {kInv}, "workspace");
  part("merge out null", [&] { return AttendMerge(w.plan, {}, OutputView{}, w.ws.data(), 0, 1); }, {kInv}, "out");
  part("merge ith 5 of 2", [&] { return AttendMerge(w.plan, {}, w.ov, w.ws.data(), 5, 2); }, {kInv}, "ith 5");
  part("merge workspace null", [&] { return AttendMerge(w.plan, {}, w.ov, nullptr, 0, 1); }, {kInv}, "workspace");

  auto fused = [&](const std::string& what, std::function<Status()> f, std::vector<int> want, const std::string& needle) {
    rows.push_back({"SparseAttention", what, [f] { return R(f()); }, want, needle});
  };
  fused("summaries null with a sparse budget", [&] { return SparseAttention(w.plan, w.qv, w.kv, nullptr, w.ov, w.ws.data()); }, {kInv}, "summaries");
  fused("workspace null", [&] { return SparseAttention(w.plan, w.qv, w.kv, &w.sum, w.ov, nullptr); }, {kInv}, "workspace");
  fused("selection_out capacity 4", [&] { return SparseAttention(w.plan, w.qv, w.kv, &w.sum, w.ov, w.ws.data(), nullptr, nullptr, {w.idx.data(), w.cnt.data(), 4}); }, {kInv}, "4");
  fused("out rows overlap", [&] { OutputView o = w.ov; o.head_stride = 1; return SparseAttention(w.plan, w.qv, w.kv, &w.sum, o, w.ws.data()); }, {kInv}, "overlap");
  fused("kv.k null", [&] { KVCacheView kv = w.kv; kv.k = nullptr; return SparseAttention(w.plan, w.qv, kv, &w.sum, w.ov, w.ws.data()); }, {kInv}, "kv.k");

  int failures = 0;
  RunRows(w, rows, &failures);
}

// NaN/Inf in K and V: the status is OK and only rows that attend to the bad token change.
TEST(BadInput, NonFiniteKeysAndValuesStayInTheirRows) {
  // Prefill of 4 queries at positions 996..999; token 998's key is NaN and token 999's value is
  // +inf, so queries 0 and 1 (positions 996, 997) never see them and stay finite.
  World w;
  w.k[static_cast<size_t>(998 * 128 + 0 * 64 + 3)] = NAN;       // kv head 0
  w.v[static_cast<size_t>(999 * 128 + 1 * 64 + 5)] = INFINITY;  // kv head 1
  AttentionParams p = w.params;
  p.shape.num_queries = 4;
  for (Budget b : {Budget::Dense(), Budget::Blocks(2), Budget::TopP(0.5)}) {
    p.budget = b;
    AttentionPlan plan;
    ASSERT_TRUE(MakePlan(p, &plan).ok());
    auto sum = BlockSummaries::Create({2, 64, 64, 1000, true, true});
    ASSERT_TRUE(sum->Append(w.kv, 1000).ok());
    ASSERT_TRUE(SparseAttention(plan, w.qv, w.kv, &*sum, w.ov, w.ws.data()).ok()) << BudgetModeName(b.mode);
    for (int i = 0; i < 2; ++i)
      for (int h = 0; h < 8; ++h)
        for (int d = 0; d < 64; ++d)
          ASSERT_TRUE(std::isfinite(w.out[static_cast<size_t>(i * 512 + h * 64 + d)]))
              << BudgetModeName(b.mode) << " query " << i << " head " << h;
    // Heads of kv head 0 at query 2 see the NaN key: NaN there is allowed, nothing else checked.
    EXPECT_TRUE(w.Intact());
  }
}

// ---- C++: predictors, features, traces, files --------------------------------------------

TEST(BadInput, PredictorsFeaturesTracesFiles) {
  World w;
  Files files;
  std::vector<Row> rows;
  auto feat = [&](const std::string& what, std::function<void(RequestFeatures&)> mut, const std::string& needle) {
    rows.push_back({"ValidateFeatures", what, [mut] {
                      RequestFeatures f;
                      f.context_length = 1000;
                      mut(f);
                      return R(ValidateFeatures(f));
                    },
                    {kInv}, needle});
    rows.push_back({"Predictor::Predict", what, [&w, mut] {
                      RequestFeatures f;
                      f.context_length = 1000;
                      mut(f);
                      return R(w.pred->Predict(f));
                    },
                    {kInv}, needle});
  };
  feat("context_length 0", [](RequestFeatures& f) { f.context_length = 0; }, "context_length");
  feat("context_length -5", [](RequestFeatures& f) { f.context_length = -5; }, "-5");
  feat("block_size 0", [](RequestFeatures& f) { f.block_size = 0; }, "block_size");
  feat("task empty", [](RequestFeatures& f) { f.task = ""; }, "task");
  feat("entropy NaN", [](RequestFeatures& f) { f.entropy = kNaN; }, "entropy");
  feat("entropy -1", [](RequestFeatures& f) { f.entropy = -1.0; }, "entropy");
  feat("top1_prob 1.5", [](RequestFeatures& f) { f.top1_prob = 1.5; }, "top1_prob");
  feat("probe_blocks_90 -1", [](RequestFeatures& f) { f.probe_blocks_90 = -1.0; }, "probe_blocks_90");
  feat("probe_top5_mass inf", [](RequestFeatures& f) { f.probe_top5_mass = kInf; }, "probe_top5_mass");
  feat("expected_output_length -1", [](RequestFeatures& f) { f.expected_output_length = -1.0; }, "expected_output_length");
  feat("task_probs value 1.5", [](RequestFeatures& f) { f.task_probs["multi_hop"] = 1.5; }, "multi_hop");
  feat("task_probs value NaN", [](RequestFeatures& f) { f.task_probs["multi_hop"] = kNaN; }, "multi_hop");
  feat("extra value inf", [](RequestFeatures& f) { f.extra["answer_length"] = kInf; }, "answer_length");
  feat("extra value NaN", [](RequestFeatures& f) { f.extra["answer_length"] = kNaN; }, "answer_length");
  // An unknown task name is a valid (open) class: accepted, and task_length_law uses its fallback.
  rows.push_back({"Predictor::Predict", "unknown task name (open set; fallback law)", [] {
                    auto p = MakeTaskLengthLaw({{"single_qa", 40.0, 0.5, 0.0}}, {"*", 12.8, 0.5, 0.0});
                    RequestFeatures f;
                    f.context_length = 4096;
                    f.task = "no_such_task";
                    auto a = p->Predict(f);
                    f.task = "unknown";
                    auto b = p->Predict(f);
                    if (a.ok() && b.ok()) {
                      EXPECT_EQ(a->total_blocks, b->total_blocks);
                    }
                    return R(a);
                  },
                  {kOk}, ""});

  auto fjson = [&](const std::string& what, const std::string& text, std::vector<int> want, const std::string& needle) {
    rows.push_back({"FeaturesFromJson", what, [text] { return R(FeaturesFromJson(text)); }, want, needle});
  };
  fjson("empty text", "", {kParse}, "");
  fjson("truncated", R"({"context_length": 10)", {kParse}, "");
  fjson("array", "[]", {kParse}, "object");
  fjson("missing context_length", "{}", {kParse, kInv}, "context_length");
  fjson("context_length as string", R"({"context_length": "10"})", {kParse, kInv}, "context_length");
  fjson("context_length 10.5", R"({"context_length": 10.5})", {kParse, kInv}, "context_length");
  fjson("context_length 1e400", R"({"context_length": 1e400})", {kParse, kInv}, "");
  fjson("unknown key", R"({"context_length": 10, "colour": 1})", {kParse, kInv}, "colour");
  fjson("entropy -1", R"({"context_length": 10, "entropy": -1})", {kParse, kInv}, "entropy");
  fjson("task_probs not an object", R"({"context_length": 10, "task_probs": [1]})", {kParse, kInv}, "task_probs");
  fjson("trailing garbage", R"({"context_length": 10} x)", {kParse}, "");
  fjson("NaN literal", R"({"context_length": 10, "entropy": NaN})", {kParse}, "");
  fjson("nesting 20000 deep", std::string(20000, '[') + std::string(20000, ']'), {kParse}, "");

  auto pjson = [&](const std::string& what, const std::string& text, std::vector<int> want, const std::string& needle) {
    rows.push_back({"PredictorFromJson", what, [text] { return R(PredictorFromJson(text)); }, want, needle});
  };
  const std::string law = R"({"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5})";
  pjson("empty text", "", {kParse}, "");
  pjson("null", "null", {kParse}, "");
  pjson("array", "[1]", {kParse}, "");
  pjson("truncated document", law.substr(0, law.size() / 2), {kParse}, "");
  pjson("missing type", R"({"schema_version": 1, "c": 12.8})", {kParse}, "type");
  pjson("type not a string", R"({"schema_version": 1, "type": 5})", {kParse}, "type");
  pjson("unknown type", R"({"schema_version": 1, "type": "crystal_ball"})", {kNotFound}, "crystal_ball");
  pjson("schema_version 2", Replace(law, "\"schema_version\": 1", "\"schema_version\": 2"), {kParse, kInv, kUnsup}, "schema_version");
  pjson("schema_version \"1\"", Replace(law, "\"schema_version\": 1", "\"schema_version\": \"1\""), {kParse}, "schema_version");
  pjson("missing schema_version", R"({"type": "length_law", "c": 12.8, "a": 0.5})", {kParse}, "schema_version");
  pjson("unknown key", Replace(law, "\"c\": 12.8", "\"colour\": 1, \"c\": 12.8"), {kParse}, "colour");
  pjson("mistyped key", Replace(law, "\"c\": 12.8", "\"c\": \"big\""), {kParse}, "'c'");
  pjson("limits scale 0", Replace(law, "\"c\": 12.8", "\"scale\": 0, \"c\": 12.8"), {kParse, kInv}, "scale");
  pjson("limits max_fraction 2", Replace(law, "\"c\": 12.8", "\"max_fraction\": 2, \"c\": 12.8"), {kParse, kInv}, "max_fraction");
  pjson("max with no members", R"({"schema_version": 1, "type": "max", "members": []})", {kParse, kInv}, "members");
  pjson("max member unknown type", R"({"schema_version": 1, "type": "max", "members": [{"type": "nope"}]})", {kNotFound, kParse}, "nope");
  pjson("trailing garbage", law + " }", {kParse}, "");
  pjson("nesting 20000 deep", std::string(20000, '{'), {kParse}, "");
  const std::string missing = files.Missing();
  const std::string subdir = files.Subdir();
  const std::string empty = files.Write("empty.txt", "");
  rows.push_back({"LoadPredictor", "file does not exist", [missing] { return R(LoadPredictor(missing)); }, {kNotFound}, missing});
  rows.push_back({"LoadPredictor", "path is a directory", [subdir] { return R(LoadPredictor(subdir)); }, {kIo}, subdir});
  rows.push_back({"LoadPredictor", "empty file", [empty] { return R(LoadPredictor(empty)); }, {kParse}, empty});
  rows.push_back({"SavePredictor", "directory does not exist", [&w, missing] { return R(SavePredictor(*w.pred, missing + "/x/p.json")); }, {kIo, kNotFound}, missing});

  auto trace = [&](const std::string& what, const std::string& line, const std::string& needle) {
    rows.push_back({"ParseTraceRecord", what, [line] { return R(ParseTraceRecord(line, 7)); }, {kParse}, needle});
  };
  trace("empty line", "", "line 7");
  trace("truncated record", std::string(kTrace).substr(0, 60), "line 7");
  trace("array", "[]", "line 7");
  trace("missing id", Replace(kTrace, R"("id":"a",)", ""), "'id'");
  trace("empty id", Replace(kTrace, R"("id":"a")", R"("id":"")"), "'id'");
  trace("context_length 0", Replace(kTrace, R"("context_length":1024)", R"("context_length":0)"), "context_length");
  trace("block_size as string", Replace(kTrace, R"("block_size":64)", R"("block_size":"64")"), "block_size");
  trace("curve empty", Replace(kTrace, R"("curve":[{"blocks":2,"fraction":0.125,"quality":0.0},{"blocks":16,"fraction":1.0,"quality":1.0}])", R"("curve":[])"), "curve");
  trace("curve not ascending", Replace(kTrace, R"({"blocks":16,"fraction":1.0,"quality":1.0})", R"({"blocks":1,"fraction":0.0625,"quality":1.0})"), "curve[1]");
  trace("quality 1.5", Replace(kTrace, R"("quality":1.0})", R"("quality":1.5})"), "quality");
  trace("feature not a number", Replace(kTrace, R"("entropy":1.0)", R"("entropy":"high")"), "features.entropy");
  trace("dense_quality -1", Replace(kTrace, R"("dense_quality":1.0)", R"("dense_quality":-1)"), "dense_quality");
  trace("oracle missing", Replace(kTrace, R"(,"oracle":{"blocks":16,"fraction":1.0,"criterion":"exact_match"})", ""), "oracle");

  const std::string good = files.Write("good.jsonl", std::string(kTrace) + "\n");
  const std::string blank_inside = files.Write("blank.jsonl", std::string(kTrace) + "\n\n" + Replace(kTrace, R"("id":"a")", R"("id":"b")") + "\n");
  const std::string dup = files.Write("dup.jsonl", std::string(kTrace) + "\n" + kTrace + "\n");
  const std::string trunc = files.Write("trunc.jsonl", std::string(kTrace) + "\n" + std::string(kTrace).substr(0, 80));
  rows.push_back({"ReadTraces", "valid file (accepted)", [good] { return R(ReadTraces(good)); }, {kOk}, ""});
  rows.push_back({"ReadTraces", "file does not exist", [missing] { return R(ReadTraces(missing)); }, {kNotFound}, missing});
  rows.push_back({"ReadTraces", "path is a directory", [subdir] { return R(ReadTraces(subdir)); }, {kIo}, subdir});
  rows.push_back({"ReadTraces", "empty file", [empty] { return R(ReadTraces(empty)); }, {kParse}, "no records"});
  rows.push_back({"ReadTraces", "blank line inside", [blank_inside] { return R(ReadTraces(blank_inside)); }, {kParse}, "line 2"});
  rows.push_back({"ReadTraces", "duplicate id", [dup] { return R(ReadTraces(dup)); }, {kParse}, "line 2"});
  rows.push_back({"ReadTraces", "truncated last line", [trunc] { return R(ReadTraces(trunc)); }, {kParse}, "line 2"});
  rows.push_back({"WriteTraces", "directory does not exist", [missing] { return R(WriteTraces(missing + "/x.jsonl", {})); }, {kIo, kNotFound}, missing});

  auto npy = [&](const std::string& what, const std::string& bytes, const std::string& needle) {
    const std::string path = files.Write("f" + std::to_string(files.made.size()) + ".npy", bytes);
    rows.push_back({"ReadNpy", what, [path] { return R(ReadNpy(path)); }, {kParse}, needle});
  };
  const std::string f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string six(24, '\0');
  rows.push_back({"ReadNpy", "valid (accepted)", [&files, f4, six] { return R(ReadNpy(files.Write("ok.npy", NpyBytes(f4, six)))); }, {kOk}, ""});
  npy("empty file", "", "magic");
  npy("bad magic", "\x93NUMPX\x01\x00", "magic");
  npy("version 9", NpyBytes(f4, six, 9), "9");
  npy("truncated header", NpyBytes(f4, six).substr(0, 30), "truncated");
  npy("descr <f8", NpyBytes(Replace(f4, "<f4", "<f8"), six + six), "<f8");
  npy("fortran_order True", NpyBytes(Replace(f4, "False", "True"), six), "fortran_order");
  npy("shape malformed", NpyBytes(Replace(f4, "(2, 3)", "(2, x)"), six), "shape");
  npy("shape negative", NpyBytes(Replace(f4, "(2, 3)", "(2, -3)"), six), "shape");
  npy("no shape", NpyBytes("{'descr': '<f4', 'fortran_order': False, }", six), "shape");
  npy("data truncated", NpyBytes(f4, six.substr(0, 10)), "truncated");
  // (A shape of 2^33 elements in a 100-byte file is not run here: today it would allocate the
  // declared size before reading. fuzz_npy covers it under libFuzzer's malloc limit.)
  rows.push_back({"ReadNpy", "file does not exist", [missing] { return R(ReadNpy(missing)); }, {kNotFound}, missing});
  rows.push_back({"ReadNpy", "path is a directory", [subdir] { return R(ReadNpy(subdir)); }, {kIo}, subdir});
  rows.push_back({"WriteNpy", "shape holds 6, data 5", [&files] { return R(WriteNpy(files.dir + "/w.npy", {2, 3}, std::vector<float>(5))); }, {kInv}, "6"});
  rows.push_back({"WriteNpy", "negative dimension with a zero one", [&files] { return R(WriteNpy(files.dir + "/w2.npy", {0, -1}, {})); }, {kInv}, "-1"});
  rows.push_back({"WriteNpy", "directory does not exist", [missing] { return R(WriteNpy(missing + "/w.npy", {1}, {1.0f})); }, {kIo, kNotFound}, missing});

  // Limits, probes, fitting, calibration, evaluation, oracle.
  auto lim = [&](const std::string& what, std::function<void(BudgetLimits&)> mut, const std::string& needle) {
    rows.push_back({"ValidateLimits", what, [mut] { BudgetLimits l; mut(l); return R(ValidateLimits(l)); }, {kInv}, needle});
  };
  lim("scale 0", [](BudgetLimits& l) { l.scale = 0; }, "scale");
  lim("scale NaN", [](BudgetLimits& l) { l.scale = kNaN; }, "scale");
  lim("min_fraction -0.1", [](BudgetLimits& l) { l.min_fraction = -0.1; }, "min_fraction");
  lim("max_fraction < min_fraction", [](BudgetLimits& l) { l.min_fraction = 0.5; l.max_fraction = 0.2; }, "max_fraction");
  lim("min_blocks -1", [](BudgetLimits& l) { l.min_blocks = -1; }, "min_blocks");
  lim("max_blocks < min_blocks", [](BudgetLimits& l) { l.min_blocks = 5; l.max_blocks = 3; }, "max_blocks");
  lim("sink_blocks -1", [](BudgetLimits& l) { l.sink_blocks = -1; }, "sink_blocks");
  auto probe = [&](const std::string& what, std::vector<double> s, double sc, std::vector<int> want, const std::string& needle) {
    rows.push_back({"ProbeStatsFromScores", what, [s, sc] { return R(ProbeStatsFromScores(s, sc)); }, want, needle});
  };
  probe("no scores", {}, 1.0, {kInv}, "");
  probe("scale NaN", {1, 2}, kNaN, {kInv}, "");
  probe("scale 0", {1, 2}, 0.0, {kInv}, "");
  probe("scale -1", {1, 2}, -1.0, {kInv}, "");
  probe("all scores NaN (accepted: uniform mass)", {kNaN, kNaN, kNaN}, 1.0, {kOk}, "");
  rows.push_back({"ProbeStatsFromSummaries", "q null", [&w] { return R(ProbeStatsFromSummaries(w.sum, nullptr, 64, 8)); }, {kInv}, "q"});
  rows.push_back({"ProbeStatsFromSummaries", "num_q_heads 3 of 2 kv heads", [&w] { return R(ProbeStatsFromSummaries(w.sum, w.q.data(), 64, 3)); }, {kInv}, "3"});
  rows.push_back({"ProbeStatsFromSummaries", "num_q_heads 0", [&w] { return R(ProbeStatsFromSummaries(w.sum, w.q.data(), 64, 0)); }, {kInv}, "0"});
  rows.push_back({"ProbeStatsFromSummaries", "scale NaN", [&w] { return R(ProbeStatsFromSummaries(w.sum, w.q.data(), 64, 8, NAN)); }, {kInv}, "scale"});
  rows.push_back({"ProbeStatsFromSummaries", "summaries without mean sums", [&w] {
                    auto s = BlockSummaries::Create({2, 64, 64, 1000, false, true});
                    EXPECT_TRUE(s->Append(w.kv, 1000).ok());
                    return R(ProbeStatsFromSummaries(*s, w.q.data(), 64, 8));
                  }, {kInv}, "mean"});
  rows.push_back({"ProbeStatsFromSummaries", "summaries hold no token", [&w] {
                    auto s = BlockSummaries::Create({2, 64, 64, 1000, true, true});
                    return R(ProbeStatsFromSummaries(*s, w.q.data(), 64, 8));
                  }, {kInv, kRange}, ""});
  rows.push_back({"FitPredictor", "no traces", [] { return R(FitPredictor("length_law", {})); }, {kInv}, ""});
  rows.push_back({"FitPredictor", "unknown type", [good] {
                    auto t = ReadTraces(good);
                    return R(FitPredictor("crystal_ball", *t));
                  }, {kNotFound}, "crystal_ball"});
  auto cal = [&](const std::string& what, std::function<void(CalibrationOptions&)> mut, std::vector<int> want, const std::string& needle) {
    rows.push_back({"Calibrate", what, [good, mut] {
                      auto t = ReadTraces(good);
                      CalibrationOptions o;
                      o.target_degraded = 0.1;
                      mut(o);
                      return R(Calibrate("length_law", nullptr, *t, o));
                    }, want, needle});
  };
  cal("both targets", [](CalibrationOptions& o) { o.target_mean_fraction = 0.5; }, {kInv}, "target");
  cal("no target", [](CalibrationOptions& o) { o.target_degraded = -1; }, {kInv}, "target");
  cal("target_degraded NaN", [](CalibrationOptions& o) { o.target_degraded = kNaN; }, {kInv}, "target");
  cal("holdout 0.01", [](CalibrationOptions& o) { o.holdout = 0.01; }, {kInv}, "holdout");
  cal("delta 1.5", [](CalibrationOptions& o) { o.delta = 1.5; }, {kInv}, "delta");
  rows.push_back({"Calibrate", "no traces", [] { CalibrationOptions o; o.target_degraded = 0.1; return R(Calibrate("length_law", nullptr, {}, o)); }, {kInv}, ""});
  rows.push_back({"Evaluate", "no traces", [&w] { return R(Evaluate({}, {{"law", w.pred.get()}})); }, {kInv}, ""});
  rows.push_back({"Evaluate", "null predictor in the list", [good] {
                    auto t = ReadTraces(good);
                    return R(Evaluate(*t, {{"none", nullptr}}));
                  }, {kInv}, "none"});
  rows.push_back({"Evaluate", "sweep_points 0", [&w, good] {
                    auto t = ReadTraces(good);
                    EvalOptions o;
                    o.sweep_points = 0;
                    return R(Evaluate(*t, {{"law", w.pred.get()}}, o));
                  }, {kInv, kOk}, "sweep_points"});
  rows.push_back({"OracleFromAttention", "epsilon NaN", [&w] { AttentionParams p = w.params; return R(OracleFromAttention(p, w.qv, w.kv, kNaN)); }, {kInv}, "epsilon"});
  rows.push_back({"OracleFromAttention", "epsilon -1", [&w] { return R(OracleFromAttention(w.params, w.qv, w.kv, -1.0)); }, {kInv}, "epsilon"});
  rows.push_back({"OracleFromAttention", "head_dim 0", [&w] { AttentionParams p = w.params; p.shape.head_dim = 0; return R(OracleFromAttention(p, w.qv, w.kv, 0.05)); }, {kInv}, "head_dim"});
  rows.push_back({"OracleFromAttention", "q null", [&w] { return R(OracleFromAttention(w.params, QueryView{}, w.kv, 0.05)); }, {kInv}, "q"});
  rows.push_back({"MakeLinear", "weights shorter than terms", [] {
                    LinearModel m;
                    m.terms = {"log_length", "entropy"};
                    m.weights = {1.0};
                    m.impute = {0.0, 0.0};
                    return R(MakeLinear(m));
                  }, {kInv, kParse}, "weights"});
  rows.push_back({"MakeLinear", "NaN weight", [] {
                    LinearModel m;
                    m.terms = {"log_length"};
                    m.weights = {kNaN};
                    m.impute = {0.0};
                    return R(MakeLinear(m));
                  }, {kInv, kParse}, "weight"});
  rows.push_back({"MakeTable", "edges not ascending", [] {
                    TableModel m;
                    m.length_edges = {4096, 1024};
                    return R(MakeTable(m));
                  }, {kInv, kParse}, "length_edges"});
  rows.push_back({"MakeTable", "cell fraction 1.5", [] {
                    TableModel m;
                    m.length_edges = {1024};
                    m.cells = {{"single_qa", 0, -1, 1.5}};
                    return R(MakeTable(m));
                  }, {kInv, kParse}, "fraction"});
  rows.push_back({"RegisterPredictor", "empty name", [] { return R(RegisterPredictor("", [](const std::string&) -> Expected<std::unique_ptr<Predictor>> { return Status(StatusCode::kInternal, "x"); })); }, {kInv}, "empty"});
  rows.push_back({"RegisterPredictor", "built-in name taken", [] { return R(RegisterPredictor("length_law", [](const std::string&) -> Expected<std::unique_ptr<Predictor>> { return Status(StatusCode::kInternal, "x"); })); }, {kInv}, "length_law"});
  rows.push_back({"RegisterPredictor", "empty factory", [] { return R(RegisterPredictor("rel_empty_factory", PredictorFactory{})); }, {kInv}, "rel_empty_factory"});

  int failures = 0;
  RunRows(w, rows, &failures);
  ThreadPool zero(0), negative(-5);  // clamp to the calling thread only
  EXPECT_EQ(zero.size(), 1);
  EXPECT_EQ(negative.size(), 1);
}

// max/clamp members nest predictors; the loader recurses once per level and re-serialises every
// member, so a document nested n deep costs O(n^2) time and O(n) stack: 5000 levels (400 KB)
// take 35 s in a release build, 2000 levels overflow the stack under ASan. A depth limit must
// reject such documents; one nested 600 deep (no real predictor needs that) must fail with a
// status.
TEST(BadInput, DeeplyNestedPredictorJsonIsRejected) {
  std::string deep = R"({"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5})";
  for (int i = 0; i < 600; ++i) deep = R"({"schema_version": 1, "type": "clamp", "member": )" + deep + "}";
  auto p = PredictorFromJson(deep);
  EXPECT_FALSE(p.ok()) << "a predictor nested 600 deep was accepted; the loader needs a depth limit";
  if (!p.ok()) {
    EXPECT_EQ(p.status().code(), StatusCode::kParseError) << p.status().ToString();
  }
}


// ---- issue 12: defects an independent bad-input suite found -------------------------------
// One row (at least) per defect of issue 12, each failing before its fix. The C API rows are in
// test_bad_input_capi.cpp (BadInputCapi.Issue12Rows); values that need more than a status
// (probe masses, resolved budgets, a pool that cannot start its threads) have their own tests
// below.

// Nested `clamp` predictors, `levels` deep (about 50 bytes a level).
std::string NestedClamps(int levels) {
  const std::string open = R"({"schema_version": 1, "type": "clamp", "member": )";
  const std::string leaf = R"({"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5})";
  std::string s;
  s.reserve(static_cast<size_t>(levels) * (open.size() + 1) + leaf.size());
  for (int i = 0; i < levels; ++i) s += open;
  s += leaf;
  s.append(static_cast<size_t>(levels), '}');
  return s;
}

TEST(BadInput, Issue12Rows) {
  World w;
  Files files;
  std::vector<Row> rows;
  auto row = [&](const std::string& entry, const std::string& what, std::function<Result()> f, std::vector<int> want,
                 const std::string& needle) { rows.push_back({entry, what, std::move(f), std::move(want), needle}); };

  // Defect 1: capacity x units is never checked; unit 1's row starts at a wrapped address.
  for (int64_t cap : {INT64_MAX, int64_t{1} << 62, int64_t{1} << 61}) {
    const std::string c = std::to_string(cap);
    row("SelectBlocks", "selection capacity " + c + " (x 2 units overflows)", [&w, cap] {
      return R(SelectBlocks(w.plan, w.qv, w.sum, {w.idx.data(), w.cnt.data(), cap}, w.ws.data()));
    }, {kRange}, "capacity " + c);
    row("SparseAttention", "selection_out capacity " + c, [&w, cap] {
      return R(SparseAttention(w.plan, w.qv, w.kv, &w.sum, w.ov, w.ws.data(), nullptr, nullptr,
                               {w.idx.data(), w.cnt.data(), cap}));
    }, {kRange}, "capacity " + c);
    row("Attend", "selection capacity " + c, [&w, cap] {
      return R(Attend(w.plan, w.qv, w.kv, {w.idx.data(), w.cnt.data(), cap}, w.ov, w.ws.data()));
    }, {kRange}, "capacity " + c);
  }
  row("SparseAttention", "dense budget, selection_out capacity 2^62 (the dense path writes it too)", [&w] {
    AttentionParams p = w.params;
    p.budget = Budget::Dense();
    AttentionPlan plan;
    EXPECT_TRUE(MakePlan(p, &plan).ok());
    return R(SparseAttention(plan, w.qv, w.kv, &w.sum, w.ov, w.ws.data(), nullptr, nullptr,
                             {w.idx.data(), w.cnt.data(), int64_t{1} << 62}));
  }, {kRange}, "capacity");

  // Defect 2: 100,000 nested clamps (about 5 MB) overflowed the stack before the depth check.
  row("PredictorFromJson", "100,000 nested clamps", [] { return R(PredictorFromJson(NestedClamps(100000))); }, {kParse}, "deeper");
  row("LoadPredictor", "file of 100,000 nested clamps", [&files] {
    return R(LoadPredictor(files.Write("deep.json", NestedClamps(100000))));
  }, {kParse}, "deep.json");
  row("PredictorFromJson", "100,000 nested arrays in a known key", [] {
    std::string s = R"({"schema_version": 1, "type": "length_law", "c": )";
    s.append(100000, '[');
    s.append(100000, ']');
    return R(PredictorFromJson(s + "}"));
  }, {kParse}, "deeper");
  row("FeaturesFromJson", "extra nested 100,000 deep", [] {
    std::string s = R"({"context_length": 100, "extra": )";
    for (int i = 0; i < 100000; ++i) s += R"({"a": )";
    s += "1";
    s.append(100000, '}');
    return R(FeaturesFromJson(s + "}"));
  }, {kParse}, "deeper");
  row("PredictorFromJson", "33 nested clamps (over the 32-level predictor limit)", [] {
    return R(PredictorFromJson(NestedClamps(33)));
  }, {kParse}, "32");
  row("PredictorFromJson", "31 nested clamps (accepted)", [] { return R(PredictorFromJson(NestedClamps(31))); }, {kOk}, "");

  // Defect 5: Append accepted strides ValidateViews rejects, then read at wrapped offsets.
  auto append = [&](const std::string& what, std::function<void(KVCacheView&)> mut, std::vector<int> want,
                    const std::string& needle) {
    row("BlockSummaries::Append", what, [&w, mut] {
      auto s = BlockSummaries::Create({2, 64, 64, 1000, true, true});
      if (!s.ok()) return R(s.status());
      KVCacheView kv = w.kv;
      mut(kv);
      return R(s->Append(kv, 200));
    }, want, needle);
  };
  append("token_stride INT64_MAX", [](KVCacheView& kv) { kv.token_stride = INT64_MAX; }, {kRange}, "token_stride 9223372036854775807");
  append("head_stride INT64_MAX", [](KVCacheView& kv) { kv.head_stride = INT64_MAX; }, {kRange, kInv}, "9223372036854775807");
  append("token_stride 2^61 (x 200 tokens x 4 bytes overflows)", [](KVCacheView& kv) { kv.token_stride = int64_t{1} << 61; }, {kRange}, "token_stride");
  append("rows overlap (head_stride 1)", [](KVCacheView& kv) { kv.head_stride = 1; }, {kInv}, "overlap");
  append("negative token_stride names the value", [](KVCacheView& kv) { kv.token_stride = -5; }, {kInv}, "-5");
  append("paged, page_stride INT64_MAX", [](KVCacheView& kv) {
    static int32_t t[16] = {0, 1, 2, 3};
    kv.page_table = t;
    kv.page_size = 64;
    kv.page_stride = INT64_MAX;
    kv.num_pages = 4;
  }, {kInv, kRange}, "num_pages");
  row("ProbeStatsFromSummaries", "q_head_stride INT64_MAX with 4 heads", [&w] {
    return R(ProbeStatsFromSummaries(w.sum, w.q.data(), INT64_MAX, 4));
  }, {kRange}, "q_head_stride");
  row("ProbeStatsFromSummaries", "q_head_stride 2^62 with 2 heads", [&w] {
    return R(ProbeStatsFromSummaries(w.sum, w.q.data(), int64_t{1} << 62, 2));
  }, {kRange}, "q_head_stride");

  // Defect 7: misaligned workspace (UBSan: misaligned store); count 0 gives NaN rows.
  unsigned char* odd = w.ws.data() + 1;
  row("Attend", "workspace misaligned by 1 byte", [&w, odd] { return R(Attend(w.plan, w.qv, w.kv, {}, w.ov, odd)); }, {kInv}, "aligned");
  row("SelectBlocks", "workspace misaligned by 1 byte", [&w, odd] { return R(SelectBlocks(w.plan, w.qv, w.sum, w.Sel(), odd)); }, {kInv}, "aligned");
  row("SparseAttention", "workspace misaligned by 2 bytes", [&w] {
    return R(SparseAttention(w.plan, w.qv, w.kv, &w.sum, w.ov, w.ws.data() + 2));
  }, {kInv}, "aligned");
  row("AttendPartition", "workspace misaligned by 3 bytes", [&w] {
    return R(AttendPartition(w.plan, w.qv, w.kv, {}, w.ov, w.ws.data() + 3, 0, 1));
  }, {kInv}, "aligned");
  row("Attend", "selection indices misaligned", [&w] {
    auto* bad = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(w.idx.data()) + 1);
    return R(Attend(w.plan, w.qv, w.kv, {bad, w.cnt.data(), 16}, w.ov, w.ws.data()));
  }, {kInv}, "aligned");

  // Defect 8: a directory where a file is expected is an I/O error, not a parse error.
  const std::string dir = files.Subdir();
  row("LoadPredictor", "a directory", [dir] { return R(LoadPredictor(dir)); }, {kIo}, "directory");
  row("ReadNpy", "a directory", [dir] { return R(ReadNpy(dir)); }, {kIo}, "directory");
  row("ReadTraces", "a directory", [dir] { return R(ReadTraces(dir)); }, {kIo}, "subdir");

  // Defect 9: duplicate keys were accepted (the last one won).
  row("PredictorFromJson", "duplicate key 'c'", [] {
    return R(PredictorFromJson(R"({"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5, "c": 99})"));
  }, {kParse}, "duplicate key 'c'");
  row("PredictorFromJson", "duplicate key 'type' (second names another type)", [] {
    return R(PredictorFromJson(R"({"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5, "type": "fixed"})"));
  }, {kParse}, "duplicate key 'type'");
  row("FeaturesFromJson", "duplicate key 'context_length'", [] {
    return R(FeaturesFromJson(R"({"context_length": 100, "context_length": 200})"));
  }, {kParse}, "duplicate key 'context_length'");
  row("FeaturesFromJson", "duplicate key inside extra", [] {
    return R(FeaturesFromJson(R"({"context_length": 100, "extra": {"a": 1, "a": 2}})"));
  }, {kParse}, "duplicate key 'a'");
  row("ParseTraceRecord", "duplicate key 'id'", [] { return R(ParseTraceRecord(Replace(kTrace, "{\"id\":\"a\",", "{\"id\":\"a\",\"id\":\"b\","), 1)); }, {kParse}, "duplicate key 'id'");
  row("PredictorFromJson", "same key in two different objects (accepted)", [] {
    return R(PredictorFromJson(R"({"schema_version": 1, "type": "max", "members": [)"
                               R"({"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5},)"
                               R"({"schema_version": 1, "type": "length_law", "c": 6.4, "a": 0.5}]})"));
  }, {kOk}, "");

  int failures = 0;
  RunRows(w, rows, &failures);
  EXPECT_EQ(failures, 0);
}

// Defect 6: context_length = INT64_MAX overflowed ceil(L / block) (negative causal_blocks, and a
// prediction reported OK); ResolveBudget overflowed at causal_blocks = INT64_MAX.
TEST(BadInput, Issue12ExtremeLengthsGiveConsistentCounts) {
  RequestFeatures f;
  f.block_size = 64;
  for (int64_t L : {INT64_MAX, INT64_MAX - 1, INT64_MAX - 63, int64_t{1} << 62}) {
    f.context_length = L;
    const int64_t want = L / 64 + (L % 64 != 0 ? 1 : 0);
    EXPECT_EQ(f.causal_blocks(), want) << "L " << L;
    auto p = MakeLengthLaw()->Predict(f);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_EQ(p->causal_blocks, want) << "L " << L;
    EXPECT_GE(p->total_blocks, 1) << "L " << L;
    EXPECT_LE(p->total_blocks, p->causal_blocks) << "L " << L;
    EXPECT_GE(p->fraction, 0.0);
    EXPECT_LE(p->fraction, 1.0);
  }
  f.block_size = 1;
  f.context_length = INT64_MAX;
  EXPECT_EQ(f.causal_blocks(), INT64_MAX);
  for (int64_t nb : {INT64_MAX, INT64_MAX - 1}) {
    for (Budget b : {Budget::Blocks(5), Budget::Blocks(INT64_MAX), Budget::Blocks(INT64_MAX - 1), Budget::Fraction(1.0),
                     Budget::Fraction(0.5), Budget::Dense(), Budget::TopP(0.9, 0, 0)}) {
      for (int32_t sl : {1, INT32_MAX}) {
        b.sink_blocks = sl;
        b.local_blocks = sl;
        SCOPED_TRACE(std::string(BudgetModeName(b.mode)) + " blocks " + std::to_string(b.blocks) + " sink/local " +
                     std::to_string(sl) + " nb " + std::to_string(nb));
        const ResolvedBudget r = ResolveBudget(b, nb);
        EXPECT_GE(r.total_blocks, r.forced_blocks);
        EXPECT_LE(r.total_blocks, nb);
        EXPECT_EQ(r.total_blocks, r.forced_blocks + r.scored_blocks);
        if (b.mode == BudgetMode::kBlocks) {
          const bool more = b.blocks > nb - r.forced_blocks;
          EXPECT_EQ(r.total_blocks, more ? nb : r.forced_blocks + b.blocks);
          EXPECT_EQ(r.clamped, more);
        }
        if (b.mode == BudgetMode::kDense || (b.mode == BudgetMode::kFraction && b.fraction == 1.0)) {
          EXPECT_EQ(r.total_blocks, nb);
          EXPECT_FALSE(r.clamped);
        }
      }
    }
  }
  // The per-layer scale (a call argument now, ScaleBudget) saturates (the double 2^64 has no int64).
  EXPECT_EQ(ScaleBudget(Budget::Blocks(INT64_MAX), 2.0)->blocks, INT64_MAX);
}

// Defect 11: scores whose product with the scale overflows (1e308 x 10 = inf) were all treated
// as non-finite, giving the uniform mass. Masses come from score differences now.
TEST(BadInput, Issue12ProbeStatsSurviveScoresNearDoubleMax) {
  auto st = ProbeStatsFromScores({1e308, 1e308, -1e308}, 10.0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->blocks_50, 1.0);
  EXPECT_EQ(st->blocks_90, 2.0);
  EXPECT_NEAR(st->entropy, std::log(2.0), 1e-12);
  EXPECT_NEAR(st->top5_mass, 0.5, 1e-12);
  // A score gap that overflows only after scaling: all the mass on the larger one.
  auto one = ProbeStatsFromScores({1e307, -1e307, 0.0}, 1e10);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->blocks_99, 1.0);
  EXPECT_EQ(one->entropy, 0.0);
  // Documented: non-finite scores have no mass; none finite gives the uniform mass.
  auto inf = ProbeStatsFromScores({kInf, 1.0, 1.0, kNaN}, 1.0);
  ASSERT_TRUE(inf.ok());
  EXPECT_NEAR(inf->entropy, std::log(2.0), 1e-12);
  auto none = ProbeStatsFromScores({kNaN, kInf, -kInf}, 1.0);
  ASSERT_TRUE(none.ok());
  EXPECT_NEAR(none->entropy, std::log(3.0), 1e-12);
  // Ordinary scores are unchanged by the rewrite (reference: the plain softmax).
  const std::vector<double> s = {0.3, -1.2, 2.5, 0.0, 1.1};
  auto o = ProbeStatsFromScores(s, 0.7);
  ASSERT_TRUE(o.ok());
  double z = 0.0, ent = 0.0;
  for (double x : s) z += std::exp(0.7 * x);
  for (double x : s) {
    const double p = std::exp(0.7 * x) / z;
    ent -= p * std::log(p);
  }
  EXPECT_NEAR(o->entropy, ent, 1e-12);
}


// Hostile-input pass of 2026-12-03 (docs/reliability.md), C++ half: each row failed before its fix.
TEST(BadInput, HostilePass20261203Rows) {
  World w;
  Files files;
  std::vector<Row> rows;
  auto row = [&](const std::string& entry, const std::string& what, std::function<Result()> f, std::vector<int> want,
                 const std::string& needle) { rows.push_back({entry, what, std::move(f), std::move(want), needle}); };

  // Finding 2: MergeAttentionStates formed r * stride unchecked (signed overflow, then a wrapped row address).
  Guarded<float> mv{3 * 4, 0.5f}, mo{3 * 4, 0.25f}, ml{3, 0.0f}, mlo{3, 0.0f};
  for (int64_t stride : {INT64_MAX, int64_t{1} << 62, int64_t{1} << 61}) {
    const std::string c = std::to_string(stride);
    row("MergeAttentionStates", "3 rows, v_stride " + c, [&, stride] {
      return R(MergeAttentionStates(3, 4, mo.data(), 4, mlo.data(), mv.data(), stride, ml.data()));
    }, {kRange}, "x v_stride " + c);
    row("MergeAttentionStates", "3 rows, v_other_stride " + c, [&, stride] {
      return R(MergeAttentionStates(3, 4, mo.data(), stride, mlo.data(), mv.data(), 4, ml.data()));
    }, {kRange}, "v_other_stride " + c);
  }
  row("MergeAttentionStates", "head_dim 4097", [&] {
    return R(MergeAttentionStates(1, 4097, mo.data(), 4097, mlo.data(), mv.data(), 4097, ml.data()));
  }, {kInv}, "4097");

  // Finding 4: a StepPlan from an op of another softmax scale ran with this op's scale.
  row("AttentionOp::RunLayer", "StepPlan made by an op with scale 0.5 (this op: 0 = 1/sqrt(d))", [&w] {
    AttentionOpConfig c;
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    AttentionOpConfig other = c;
    other.scale = 0.5f;
    auto op = AttentionOp::Create(c);
    auto maker = AttentionOp::Create(other);
    EXPECT_TRUE(op.ok() && maker.ok());
    StepRequest s;
    s.context_length = 1000;
    s.budget = Budget::Blocks(2);
    s.kv = w.kv;
    s.kv.k = s.kv.v = nullptr;
    s.q = {nullptr, 512, 64};
    s.out = {nullptr, 512, 64};
    StepPlan plan;
    EXPECT_TRUE(maker->Plan(&s, 1, &plan).ok());
    std::vector<unsigned char> buf(plan.workspace_bytes() + 64);
    unsigned char* ws = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
    const LayerInput in{w.q.data(), w.out.data(), w.k.data(), w.v.data(), &w.sum, nullptr};
    LayerArgs a;
    a.inputs = &in;
    a.workspace = ws;
    return R(op->RunLayer(plan, a));
  }, {kInv}, "another configuration (its scale differs");

  // Finding 5: weights [1e300, -1] on entropy and entropy*entropy at entropy 1e200 summed
  // inf + -inf: kInternal "NaN estimate".
  row("Predictor::Predict", "linear term overflows (1e300 x 1e200)", [] {
    auto p = PredictorFromJson(R"({"schema_version": 1, "type": "linear", "terms": ["entropy", "entropy*entropy"],)"
                               R"( "weights": [1e300, -1], "impute": [0, 0], "intercept": 0})");
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    RequestFeatures f;
    f.context_length = 1000;
    f.entropy = 1e200;
    return R((*p)->Predict(f));
  }, {kRange}, "entropy");

  // Finding 6: the element count wrapped: (2^34, 2^30) is 0 mod 2^64 and "read" a file with no data.
  row("ReadNpy", "shape (17179869184, 1073741824), no data", [&files] {
    return R(ReadNpy(files.Write("wrap.npy", NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (17179869184, 1073741824), }", ""))));
  }, {kParse}, "too large");
  row("WriteNpy", "shape (2^40, 2^40, 2^40) with no data (2^120 wraps to 0)", [&files] {
    const int64_t e = int64_t{1} << 40;
    return R(WriteNpy(files.dir + "/wrap_out.npy", {e, e, e}, {}));
  }, {kInv}, "shape");

  // Finding 8: a key above INT64_MAX was reported as its wrapped value ("got -1").
  row("PredictorFromJson", "min_blocks 18446744073709551615", [] {
    return R(PredictorFromJson(R"({"schema_version": 1, "type": "length_law", "min_blocks": 18446744073709551615})"));
  }, {kParse}, "18446744073709551615");

  row("PredictorFromJson", "table length_edges [1024, 18446744073709551615]", [] {
    return R(PredictorFromJson(R"({"schema_version": 1, "type": "table", "length_edges": [1024, 18446744073709551615],)"
                               R"( "cells": [{"task": "qa", "length_bucket": 0, "fraction": 0.5}]})"));
  }, {kParse}, "length_edges[1]' is out of range (above 2^63 - 1): 18446744073709551615");
  row("MergeAttentionStates", "0 rows, head_dim 10^6 (sizes checked before the empty return)", [&] {
    return R(MergeAttentionStates(0, 1000000, mo.data(), 4, mlo.data(), mv.data(), 4, ml.data()));
  }, {kInv}, "1000000");

  // Finding 9: records built in memory skipped the reader's value rules (now ValidateTraceRecord,
  // applied by the reader and by FitPredictor, Calibrate and Evaluate).
  auto good = ParseTraceRecord(kTrace, 1);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  TraceRecord other = *good;
  other.id = "b";
  row("Calibrate", "in-memory record with curve[1].quality 2", [&] {
    TraceRecord bad = other;
    bad.curve[1].quality = 2.0;
    CalibrationOptions o;
    o.target_degraded = 0.1;
    return R(Calibrate("fixed", nullptr, {*good, bad}, o));
  }, {kInv}, "traces[1] (id 'b'): key 'curve[1].quality' must be in [0, 1], got 2");
  row("FitPredictor", "in-memory record with oracle.blocks 0", [&] {
    TraceRecord bad = other;
    bad.oracle.blocks = 0;
    return R(FitPredictor("length_law", {*good, bad}));
  }, {kInv}, "traces[1] (id 'b'): key 'oracle.blocks'");
  row("Evaluate", "in-memory record with a descending curve", [&] {
    TraceRecord bad = other;
    std::swap(bad.curve[0], bad.curve[1]);
    return R(Evaluate({bad}, {}));
  }, {kInv}, "traces[0] (id 'b'): key 'curve[1].blocks' must be strictly ascending");
  row("Evaluate", "in-memory record with a NaN dense_quality", [&] {
    TraceRecord bad = other;
    bad.dense_quality = kNaN;
    return R(Evaluate({*good, bad}, {}));
  }, {kInv}, "key 'dense_quality'");
  row("ValidateTraceRecord", "the parsed record", [&] { return R(ValidateTraceRecord(*good)); }, {kOk}, "");

  int failures = 0;
  RunRows(w, rows, &failures);
  EXPECT_EQ(failures, 0);

  // Finding 3 (value check): the escalation count saturates instead of overflowing.
  auto policy = EscalationPolicy::Create(0.9, EscalationPolicy::DefaultLadder());
  ASSERT_TRUE(policy.ok());
  EscalationState st{2, 100, INT32_MAX};
  const EscalationDecision d = policy->Step(&st, 0.1);
  EXPECT_TRUE(d.recompute);
  EXPECT_GT(st.total_blocks, 2);
  EXPECT_EQ(st.escalations, INT32_MAX);

  // Finding 7: request_plan out of range read past the plan's entries (SEGV); null now.
  AttentionOpConfig c;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  auto op = AttentionOp::Create(c);
  ASSERT_TRUE(op.ok());
  StepPlan plan;
  StepRequest s;
  s.context_length = 1000;
  s.kv = w.kv;
  s.q = {nullptr, 512, 64};
  s.out = {nullptr, 512, 64};
  ASSERT_TRUE(op->Plan(&s, 1, &plan).ok());
  EXPECT_NE(plan.request_plan(0), nullptr);
  EXPECT_EQ(plan.request_plan(1), nullptr);
  EXPECT_EQ(plan.request_plan(-1), nullptr);
  EXPECT_EQ(plan.request_plan(INT32_MAX), nullptr);
  EXPECT_EQ(StepPlan().request_plan(0), nullptr);
}

}  // namespace
// clang-format on
