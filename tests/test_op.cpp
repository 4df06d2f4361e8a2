// The engine API (op.hpp): a batch through AttentionOp / StepPlan / RunLayer equals, bitwise,
// SparseAttention per request (every ISA, every thread partition, per-layer budget scales);
// LSE against float64 and MergeAttentionStates over a split context; the op keeps its ISA;
// bad input names the request and the value.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernel_testing.hpp"

namespace {

using namespace sparsebudget;
using sbtest::KVData;
using sbtest::LayoutChoice;
using sbtest::OutData;
using sbtest::QData;

std::vector<Isa> Isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (IsaSupported(i)) v.push_back(i);
  return v;
}

struct IsaCap {
  explicit IsaCap(Isa i) { SetMaxIsa(i); }
  ~IsaCap() { SetMaxIsa(Isa::kAvx512); }
};

struct AlignedWs {
  std::vector<unsigned char> buf;
  void* p = nullptr;
  void Size(size_t n) {
    buf.assign(n + 64, 0);
    p = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
  }
};

// A request of the batch with its data for one layer.
struct Req {
  KVData kv;
  QData q;
  OutData out, ref;
  std::unique_ptr<BlockSummaries> sums;
  std::vector<float> lse;
  StepRequest step;
};

constexpr int32_t kHq = 8, kHkv = 2, kDim = 64, kB = 16;

std::vector<Req> MakeBatch(std::mt19937_64& rng, DType dtype, Scoring scoring) {
  const int64_t lengths[] = {1, 15, 16, 17, 100, 333, 1024, 2049};
  const int32_t nqs[] = {1, 1, 3, 1, 17, 1, 1, 5};
  const Budget budgets[] = {Budget::Dense(),   Budget::Blocks(2),       Budget::Fraction(0.3),
                            Budget::TopP(0.8), Budget::Blocks(1000),    Budget::Fraction(0.95),
                            Budget::Blocks(5), Budget::TopP(0.5, 3, 20)};
  std::vector<Req> reqs(8);
  for (size_t r = 0; r < reqs.size(); ++r) {
    Req& q = reqs[r];
    LayoutChoice lay;
    lay.head_major = r % 3 == 1;
    lay.pad = static_cast<int32_t>(r % 2) * 3;
    lay.page_size = r % 2 == 0 ? 32 : 0;
    q.kv = sbtest::MakeKV(rng, dtype, lengths[r], kHkv, kDim, lay);
    q.q = sbtest::MakeQ(rng, nqs[r], kHq, kDim, static_cast<int32_t>(r % 2), static_cast<int32_t>(r % 3));
    q.out = sbtest::MakeOut(nqs[r], kHq, kDim, 1);
    q.ref = sbtest::MakeOut(nqs[r], kHq, kDim, 0);
    q.lse.assign(static_cast<size_t>(nqs[r] * kHq), NAN);
    BlockSummaries::Config c{kHkv, kDim, kB, lengths[r], true, true};
    q.sums = std::make_unique<BlockSummaries>(*BlockSummaries::Create(c));
    EXPECT_TRUE(q.sums->Append(q.kv.view, lengths[r]).ok());
    q.step.context_length = lengths[r];
    q.step.num_queries = nqs[r];
    q.step.budget = budgets[r];
    q.step.kv = q.kv.view;
    q.step.kv.k = q.step.kv.v = nullptr;  // layouts only
    q.step.q = {nullptr, q.q.view.token_stride, q.q.view.head_stride};
    q.step.out = {nullptr, q.out.view.token_stride, q.out.view.head_stride};
  }
  (void)scoring;
  return reqs;
}

AttentionOpConfig Config(DType dtype, Scoring scoring) {
  AttentionOpConfig c;
  c.num_q_heads = kHq;
  c.num_kv_heads = kHkv;
  c.head_dim = kDim;
  c.block_size = kB;
  c.kv_dtype = dtype;
  c.scoring = scoring;
  return c;
}

std::vector<LayerInput> Inputs(std::vector<Req>& reqs, bool lse) {
  std::vector<LayerInput> in(reqs.size());
  for (size_t r = 0; r < reqs.size(); ++r) {
    in[r].q = reqs[r].q.view.data;
    in[r].out = reqs[r].out.view.data;
    in[r].k = reqs[r].kv.view.k;
    in[r].v = reqs[r].kv.view.v;
    in[r].summaries = reqs[r].sums.get();
    in[r].lse = lse ? reqs[r].lse.data() : nullptr;
  }
  return in;
}

// SparseAttention per request with the scaled budget: the reference the op must equal bitwise.
void Reference(std::vector<Req>& reqs, const AttentionOpConfig& c, double scale) {
  for (Req& q : reqs) {
    AttentionParams p;
    p.shape = {c.num_q_heads, c.num_kv_heads, c.head_dim, c.block_size, q.step.context_length, q.step.num_queries};
    p.kv_dtype = c.kv_dtype;
    p.scoring = c.scoring;
    p.budget = *ScaleBudget(q.step.budget, scale);
    AttentionPlan plan;
    ASSERT_TRUE(MakePlan(p, &plan).ok());
    AlignedWs ws;
    ws.Size(plan.workspace_bytes);
    ASSERT_TRUE(SparseAttention(plan, q.q.view, q.kv.view, q.sums.get(), q.ref.view, ws.p).ok());
  }
}

void ExpectSame(const std::vector<Req>& reqs, const char* what) {
  for (size_t r = 0; r < reqs.size(); ++r) {
    const Req& q = reqs[r];
    for (int32_t i = 0; i < q.step.num_queries; ++i)
      for (int32_t h = 0; h < kHq; ++h)
        ASSERT_EQ(0, std::memcmp(&q.out.view.data[i * q.out.view.token_stride + h * q.out.view.head_stride],
                                 &q.ref.view.data[i * q.ref.view.token_stride + h * q.ref.view.head_stride],
                                 kDim * sizeof(float)))
            << what << ": request " << r << " query " << i << " head " << h;
  }
}

TEST(AttentionOp, BatchEqualsSparseAttentionBitwiseOnEveryIsaAndPartition) {
  int cases = 0;
  for (Isa isa : Isas()) {
    IsaCap cap(isa);
    for (DType dt : {DType::kF32, DType::kF16}) {
      for (Scoring sc : {Scoring::kBound, Scoring::kMean}) {
        std::mt19937_64 rng(static_cast<uint64_t>(isa) * 100 + static_cast<uint64_t>(dt) * 10 +
                            static_cast<uint64_t>(sc));
        std::vector<Req> reqs = MakeBatch(rng, dt, sc);
        const AttentionOpConfig cfg = Config(dt, sc);
        auto op = AttentionOp::Create(cfg);
        ASSERT_TRUE(op.ok()) << op.status().ToString();
        EXPECT_EQ(op->isa(), isa);
        std::vector<StepRequest> steps;
        for (Req& q : reqs) steps.push_back(q.step);
        StepPlan plan;
        ASSERT_TRUE(op->Plan(steps.data(), static_cast<int32_t>(steps.size()), &plan).ok());
        AlignedWs ws;
        ws.Size(plan.workspace_bytes());
        for (double scale : {1.0, 0.5, 3.0}) {
          Reference(reqs, cfg, scale);
          std::vector<LayerInput> in = Inputs(reqs, true);
          LayerArgs args{in.data(), scale, ws.p};
          LayerStats st;
          ASSERT_TRUE(op->RunLayer(plan, args, nullptr, &st).ok());
          ExpectSame(reqs, "RunLayer");
          EXPECT_GT(st.selection.units, 0);
          // On pools (select and attend in slices taken from a counter): the same bits and counts.
          for (int threads : {2, 3, 8}) {
            for (auto& q : reqs) std::fill(q.out.buf.begin(), q.out.buf.end(), NAN);
            ThreadPool pool(threads);
            LayerStats pst;
            ASSERT_TRUE(op->RunLayer(plan, args, &pool, &pst).ok());
            ExpectSame(reqs, ("RunLayer(pool " + std::to_string(threads) + ")").c_str());
            EXPECT_EQ(pst.selection.units, st.selection.units);
            EXPECT_EQ(pst.selection.kept_blocks, st.selection.kept_blocks);
            EXPECT_EQ(pst.selection.causal_blocks, st.selection.causal_blocks);
            EXPECT_EQ(pst.dense_requests, st.dense_requests);
          }
          for (int nth : {2, 5}) {
            for (auto& q : reqs) std::fill(q.out.buf.begin(), q.out.buf.end(), NAN);
            for (int ith = 0; ith < nth; ++ith) ASSERT_TRUE(op->SelectPhase(plan, args, ith, nth).ok());
            for (int ith = nth - 1; ith >= 0; --ith) ASSERT_TRUE(op->AttendPhase(plan, args, ith, nth).ok());
            for (int ith = 0; ith < nth; ++ith) ASSERT_TRUE(op->MergePhase(plan, args, ith, nth).ok());
            ExpectSame(reqs, "phases");
          }
          ++cases;
        }
      }
    }
  }
  std::printf("AttentionOp: %d batches of 8 requests (ISAs:", cases);
  for (Isa i : Isas()) std::printf(" %s", IsaName(i));
  std::printf(")\n");
}

// LSE against float64, and a context split in two merged with MergeAttentionStates equals the
// whole (the cascade / split-K use).
TEST(AttentionOp, LseMatchesFloat64AndSplitContextMerges) {
  for (Isa isa : Isas()) {
    IsaCap cap(isa);
    std::mt19937_64 rng(42 + static_cast<uint64_t>(isa));
    for (int64_t L : {int64_t{37}, int64_t{700}, int64_t{3001}}) {
      const int64_t L1 = L / 3 + 1;
      LayoutChoice lay;  // token-major contiguous
      KVData kv = sbtest::MakeKV(rng, DType::kF32, L, kHkv, kDim, lay);
      QData q = sbtest::MakeQ(rng, 1, kHq, kDim, 0, 0);
      auto op = AttentionOp::Create(Config(DType::kF32, Scoring::kBound));
      ASSERT_TRUE(op.ok());
      // Three requests sharing one query: all of K, the first L1 tokens, the rest (a view
      // starting at token L1). Dense budgets: nothing to select, no summaries needed.
      StepRequest s[3];
      for (auto& x : s) {
        x.budget = Budget::Dense();
        x.kv = kv.view;
        x.q = {nullptr, q.view.token_stride, q.view.head_stride};
        x.out = {nullptr, kHq * kDim, kDim};
      }
      s[0].context_length = L;
      s[1].context_length = L1;
      s[2].context_length = L - L1;
      StepPlan plan;
      ASSERT_TRUE(op->Plan(s, 3, &plan).ok());
      AlignedWs ws;
      ws.Size(plan.workspace_bytes());
      std::vector<float> out(3 * kHq * kDim), lse(3 * kHq);
      LayerInput in[3];
      for (int r = 0; r < 3; ++r) {
        in[r].q = q.view.data;
        in[r].out = out.data() + r * kHq * kDim;
        in[r].k = static_cast<const float*>(kv.view.k) + (r == 2 ? L1 * kv.view.token_stride : 0);
        in[r].v = static_cast<const float*>(kv.view.v) + (r == 2 ? L1 * kv.view.token_stride : 0);
        in[r].lse = lse.data() + r * kHq;
      }
      LayerArgs args{in, 1.0, ws.p};
      ASSERT_TRUE(op->RunLayer(plan, args).ok());
      const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));
      for (int32_t h = 0; h < kHq; ++h) {
        // float64 log-sum-exp over all L keys.
        double mx = -INFINITY;
        std::vector<double> sc(static_cast<size_t>(L));
        for (int64_t t = 0; t < L; ++t) {
          double d = 0;
          for (int32_t i = 0; i < kDim; ++i) d += q.Q(0, h, i) * kv.K(t, h / (kHq / kHkv), i);
          sc[static_cast<size_t>(t)] = d * scale;
          mx = std::max(mx, sc[static_cast<size_t>(t)]);
        }
        double z = 0;
        for (double v : sc) z += std::exp(v - mx);
        EXPECT_NEAR(lse[static_cast<size_t>(h)], mx + std::log(z), 1e-4 * std::max(1.0, std::abs(mx)))
            << "L " << L << " head " << h << " isa " << IsaName(isa);
      }
      // Merge part 2 into part 1: equals the whole.
      ASSERT_TRUE(MergeAttentionStates(kHq, kDim, out.data() + 2 * kHq * kDim, kDim, lse.data() + 2 * kHq,
                                       out.data() + kHq * kDim, kDim, lse.data() + kHq)
                      .ok());
      double worst = 0, vmax = 0;
      for (int32_t j = 0; j < kHq * kDim; ++j) {
        worst = std::max(worst, std::abs(static_cast<double>(out[static_cast<size_t>(kHq * kDim + j)]) -
                                         out[static_cast<size_t>(j)]));
        vmax = std::max(vmax, std::abs(static_cast<double>(out[static_cast<size_t>(j)])));
      }
      EXPECT_LE(worst, 64 * 1.2e-7 * std::sqrt(double(kDim)) * std::max(vmax, 1.0)) << "L " << L;
      for (int32_t h = 0; h < kHq; ++h)
        EXPECT_NEAR(lse[static_cast<size_t>(kHq + h)], lse[static_cast<size_t>(h)], 1e-4);
    }
  }
}

TEST(AttentionOp, MergeStatesEdgeCasesAndBadInput) {
  float v[4] = {1, 2, 3, 4}, lse[2] = {0.0f, -INFINITY};
  const float vo[4] = {5, 6, 7, 8}, lo[2] = {-INFINITY, 1.0f};
  ASSERT_TRUE(MergeAttentionStates(2, 2, vo, 2, lo, v, 2, lse).ok());
  EXPECT_EQ(v[0], 1);  // other had no key: unchanged
  EXPECT_EQ(lse[0], 0.0f);
  EXPECT_EQ(v[2], 7);  // this had no key: takes the other
  EXPECT_EQ(lse[1], 1.0f);
  float a[1] = {2}, la[1] = {0.0f};
  const float b[1] = {4}, lb[1] = {0.0f};
  ASSERT_TRUE(MergeAttentionStates(1, 1, b, 1, lb, a, 1, la).ok());
  EXPECT_FLOAT_EQ(a[0], 3.0f);
  EXPECT_FLOAT_EQ(la[0], std::log(2.0f));
  EXPECT_FALSE(MergeAttentionStates(1, 1, nullptr, 1, lb, a, 1, la).ok());
  EXPECT_FALSE(MergeAttentionStates(-1, 1, b, 1, lb, a, 1, la).ok());
  EXPECT_FALSE(MergeAttentionStates(2, 4, vo, 2, lo, v, 2, lse).ok());  // stride < head_dim
}

TEST(AttentionOp, KeepsItsIsaWhenTheCapChanges) {
  if (!IsaSupported(Isa::kAvx2)) GTEST_SKIP() << "needs AVX2 to change ISA";
  std::mt19937_64 rng(9);
  std::vector<Req> reqs = MakeBatch(rng, DType::kF16, Scoring::kBound);
  const AttentionOpConfig cfg = Config(DType::kF16, Scoring::kBound);
  Expected<AttentionOp> op = Status(StatusCode::kInternal, "unset");
  {
    IsaCap cap(Isa::kScalar);
    op = AttentionOp::Create(cfg);
    Reference(reqs, cfg, 1.0);  // scalar reference
  }
  ASSERT_TRUE(op.ok());
  EXPECT_EQ(op->isa(), Isa::kScalar);
  std::vector<StepRequest> steps;
  for (Req& q : reqs) steps.push_back(q.step);
  StepPlan plan;
  ASSERT_TRUE(op->Plan(steps.data(), 8, &plan).ok());
  AlignedWs ws;
  ws.Size(plan.workspace_bytes());
  std::vector<LayerInput> in = Inputs(reqs, false);
  ASSERT_EQ(ActiveIsa(), DetectedIsa());
  ASSERT_TRUE(op->RunLayer(plan, LayerArgs{in.data(), 1.0, ws.p}).ok());
  ExpectSame(reqs, "scalar op under a raised cap");
}

TEST(AttentionOp, BadInputNamesRequestAndValue) {
  AttentionOpConfig c = Config(DType::kF32, Scoring::kBound);
  c.block_size = 48;
  auto bad = AttentionOp::Create(c);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("block_size"), std::string::npos);
  c = Config(DType::kF32, Scoring::kBound);
  c.num_kv_heads = 3;
  EXPECT_FALSE(AttentionOp::Create(c).ok());

  std::mt19937_64 rng(3);
  std::vector<Req> reqs = MakeBatch(rng, DType::kF32, Scoring::kBound);
  auto op = AttentionOp::Create(Config(DType::kF32, Scoring::kBound));
  std::vector<StepRequest> steps;
  for (Req& q : reqs) steps.push_back(q.step);
  StepPlan plan;
  steps[3].budget.fraction = 2.0;
  steps[3].budget.mode = BudgetMode::kFraction;
  Status st = op->Plan(steps.data(), 8, &plan);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("request 3"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("fraction"), std::string::npos) << st.message();
  EXPECT_EQ(plan.num_requests(), 0);
  steps[3] = reqs[3].step;
  steps[5].kv.dtype = DType::kF16;
  st = op->Plan(steps.data(), 8, &plan);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("request 5"), std::string::npos) << st.message();
  steps[5] = reqs[5].step;
  steps[6].kv.token_stride = 1;  // rows overlap
  EXPECT_FALSE(op->Plan(steps.data(), 8, &plan).ok());
  steps[6] = reqs[6].step;
  ASSERT_TRUE(op->Plan(steps.data(), 8, &plan).ok());
  AlignedWs ws;
  ws.Size(plan.workspace_bytes());
  std::vector<LayerInput> in = Inputs(reqs, false);
  LayerArgs args{in.data(), 1.0, ws.p};
  args.budget_scale = NAN;
  st = op->RunLayer(plan, args);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("budget_scale"), std::string::npos);
  args.budget_scale = 1.0;
  in[1].summaries = nullptr;  // request 1 selects (Blocks(2)): summaries needed
  st = op->RunLayer(plan, args);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("request 1"), std::string::npos) << st.message();
  in[1].summaries = reqs[1].sums.get();
  in[0].summaries = nullptr;  // request 0 is dense: summaries not needed
  EXPECT_TRUE(op->RunLayer(plan, args).ok());
  in[2].out = nullptr;
  EXPECT_FALSE(op->RunLayer(plan, args).ok());
  in[2].out = reqs[2].out.view.data;
  args.workspace = static_cast<char*>(ws.p) + 4;
  EXPECT_FALSE(op->RunLayer(plan, args).ok());
  args.workspace = nullptr;
  EXPECT_FALSE(op->RunLayer(plan, args).ok());
  args.workspace = ws.p;
  EXPECT_FALSE(op->SelectPhase(plan, args, 2, 2).ok());
  // A plan made by an op of another configuration is refused.
  auto other = AttentionOp::Create(Config(DType::kF16, Scoring::kBound));
  EXPECT_FALSE(other->RunLayer(plan, args).ok());
  StepPlan fresh;
  EXPECT_FALSE(op->RunLayer(fresh, args).ok());
  EXPECT_FALSE(op->Plan(steps.data(), -1, &plan).ok());
  EXPECT_FALSE(op->Plan(nullptr, 2, &plan).ok());
  // A count beyond the cap is an error naming it, before any allocation (fuzz_op found the
  // C layer sizing its translation buffer from n first: a 240 GB allocation for n = 2^31-1).
  st = op->Plan(steps.data(), kMaxStepRequests + 1, &plan);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(std::to_string(kMaxStepRequests + 1)), std::string::npos) << st.message();
  EXPECT_FALSE(op->Plan(steps.data(), INT32_MAX, &plan).ok());
  AttentionOp unmade;
  EXPECT_FALSE(unmade.Plan(steps.data(), 1, &plan).ok());
}

}  // namespace
