// Determinism beyond tests/test_attention.cpp:
//  1. Selection is identical across ISAs whenever the float64 score gap at the cut exceeds the
//     documented tolerance  tol = 4 * (rows * head_dim + block_size) * eps_f32 * max_j A_j
//     where A_j is block j's score computed with absolute values (|q| against |k|, the bound's
//     max(|kmin|, |kmax|) or the mean's |mean k|), rows = query rows of the unit. For top-p the
//     cut's cumulative mass must also be clear of top_p by 1e-3 of the total plus the score
//     tolerance's effect on the softmax. Units inside the tolerance are counted as skipped.
//  2. Bit-identical outputs for paged layouts with GQA, prefill, fp16/bf16 and top-p across
//     partitions 1, 2, 3 and 8 (any order of the ith slices), the pooled path, the contiguous
//     layout, and a workspace that starts full of NaN garbage instead of zeros.
// SPARSEBUDGET_TEST_SHAPES (default 1000) scales the number of random cases (cases = value / 4
// for (1), / 25 for (2)) so sanitizer builds can run fewer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernel_testing.hpp"
#include "reliability_util.hpp"

namespace {

using namespace sbtest;

constexpr double kEps = 1.1920928955078125e-07;

std::vector<Isa> Isas() {
  std::vector<Isa> v;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (IsaSupported(isa)) v.push_back(isa);
  return v;
}

struct Shape {
  int32_t B, D, G, Hkv, nq;
  int64_t L;
  DType dtype;
  Scoring scoring;
  Budget budget;
  LayoutChoice lay;
  std::string ToString() const {
    char buf[300];
    std::snprintf(buf, sizeof buf, "B=%d D=%d G=%d Hkv=%d nq=%d L=%lld %s %s %s(k=%lld f=%.3f p=%.3f) page=%lld", B, D,
                  G, Hkv, nq, static_cast<long long>(L), DTypeName(dtype), ScoringName(scoring),
                  BudgetModeName(budget.mode), static_cast<long long>(budget.blocks), budget.fraction, budget.top_p,
                  static_cast<long long>(lay.page_size));
    return buf;
  }
};

Shape RandomShape(std::mt19937_64& rng, bool allow_dense) {
  auto uni = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  Shape s;
  s.B = static_cast<int32_t>(16 << uni(0, 2));
  s.D = std::vector<int32_t>{8, 32, 64, 80, 128}[static_cast<size_t>(uni(0, 4))];
  s.G = static_cast<int32_t>(1 << uni(0, 2));
  s.Hkv = static_cast<int32_t>(uni(1, 2));
  s.L = uni(s.B * 4, s.B * 40);
  s.nq = uni(0, 2) == 0 ? static_cast<int32_t>(uni(2, std::min<int64_t>(s.L, 2 * s.B))) : 1;
  s.dtype = static_cast<DType>(uni(0, 2));
  s.scoring = uni(0, 1) ? Scoring::kBound : Scoring::kMean;
  const int64_t nb = (s.L + s.B - 1) / s.B;
  switch (uni(0, allow_dense ? 3 : 2)) {
    case 0: s.budget = Budget::Blocks(uni(1, nb / 2)); break;
    case 1: s.budget = Budget::Fraction(std::uniform_real_distribution<double>(0.05, 0.7)(rng)); break;
    case 2: s.budget = Budget::TopP(std::uniform_real_distribution<double>(0.3, 0.95)(rng)); break;
    default: s.budget = Budget::Dense(); break;
  }
  s.budget.sink_blocks = static_cast<int32_t>(uni(0, 2));
  s.budget.local_blocks = static_cast<int32_t>(uni(0, 2));
  s.lay.head_major = uni(0, 1) == 1;
  s.lay.pad = static_cast<int32_t>(uni(0, 2));
  s.lay.misalign = static_cast<int32_t>(uni(0, 2));
  return s;
}

// float64 per-block absolute score bound A_j of a unit (see the header comment).
std::vector<double> AbsScores(const KVData& kv, const QData& q, Scoring scoring, int32_t h, int32_t group, int64_t L,
                              int32_t B, int64_t qb) {
  const int64_t first = L - q.nq;
  std::vector<double> a(static_cast<size_t>(qb + 1), 0.0);
  for (int64_t b = 0; b <= qb; ++b) {
    const int64_t t0 = b * B, t1 = std::min<int64_t>(L, (b + 1) * B);
    for (int32_t d = 0; d < kv.dim; ++d) {
      double mx = 0, mean = 0;
      for (int64_t t = t0; t < t1; ++t) {
        mx = std::max(mx, std::abs(kv.K(t, h, d)));
        mean += kv.K(t, h, d);
      }
      const double kd = scoring == Scoring::kBound ? mx : std::abs(mean) / static_cast<double>(t1 - t0) + mx * 1e-3;
      for (int32_t i = 0; i < q.nq; ++i) {
        if ((first + i) / B != qb) continue;
        for (int32_t g = 0; g < group; ++g) a[static_cast<size_t>(b)] += std::abs(q.Q(i, h * group + g, d)) * kd;
      }
    }
  }
  return a;
}

TEST(Determinism, SelectionIdenticalAcrossIsasBeyondScoreTolerance) {
  const std::vector<Isa> isas = Isas();
  if (isas.size() < 2) GTEST_SKIP() << "only the scalar ISA on this CPU";
  // At least 60 cases: with fewer, near-tie skips can outnumber comparisons by chance.
  const long cases = std::max(60L, sbrel::EnvInt("SPARSEBUDGET_TEST_SHAPES", 1000) / 4);
  std::mt19937_64 rng(20240601);
  int64_t compared = 0, skipped = 0;
  for (long n = 0; n < cases; ++n) {
    Shape s = RandomShape(rng, false);
    AttentionParams p;
    p.shape = {s.Hkv * s.G, s.Hkv, s.D, s.B, s.L, s.nq};
    p.kv_dtype = s.dtype;
    p.scoring = s.scoring;
    p.budget = s.budget;
    AttentionPlan plan;
    ASSERT_TRUE(MakePlan(p, &plan).ok()) << s.ToString();
    KVData kv = MakeKV(rng, s.dtype, s.L, s.Hkv, s.D, s.lay);
    QData q = MakeQ(rng, s.nq, s.Hkv * s.G, s.D, s.lay.pad, s.lay.misalign);
    const auto units = static_cast<size_t>(plan.num_units), cap = static_cast<size_t>(plan.num_blocks);
    std::vector<std::vector<int32_t>> idx(isas.size(), std::vector<int32_t>(units * cap, -1)),
        cnt(isas.size(), std::vector<int32_t>(units, -1));
    std::vector<unsigned char> ws(plan.workspace_bytes + 64);
    for (size_t i = 0; i < isas.size(); ++i) {
      SetMaxIsa(isas[i]);
      auto sum = BlockSummaries::Create({s.Hkv, s.D, s.B, s.L, true, true});
      ASSERT_TRUE(sum->Append(kv.view, s.L).ok());
      ASSERT_TRUE(SelectBlocks(plan, q.view, *sum, {idx[i].data(), cnt[i].data(), plan.num_blocks}, ws.data()).ok());
    }
    SetMaxIsa(Isa::kAvx512);
    for (size_t u = 0; u < units; ++u) {
      const auto h = static_cast<int32_t>(static_cast<int64_t>(u) / plan.num_query_blocks);
      const int64_t qb = plan.first_query_block + static_cast<int64_t>(u) % plan.num_query_blocks;
      const int64_t nb = qb + 1;
      const std::vector<double> sc = RefScores(kv, q, s.scoring, h, s.G, s.L, s.B, qb);
      const std::vector<double> abs_sc = AbsScores(kv, q, s.scoring, h, s.G, s.L, s.B, qb);
      int64_t rows = 0;
      for (int32_t i = 0; i < s.nq; ++i)
        if ((s.L - s.nq + i) / s.B == qb) rows += s.G;
      const double tol =
          4.0 * static_cast<double>(rows * s.D + s.B) * kEps * *std::max_element(abs_sc.begin(), abs_sc.end());
      const int64_t sink_end = std::min<int64_t>(s.budget.sink_blocks, nb);
      const int64_t local_begin = std::max<int64_t>(sink_end, nb - std::max(1, s.budget.local_blocks));
      std::vector<int32_t> cand;
      for (int64_t j = sink_end; j < local_begin; ++j) cand.push_back(static_cast<int32_t>(j));
      std::sort(cand.begin(), cand.end(), [&](int32_t a, int32_t b) {
        return sc[static_cast<size_t>(a)] != sc[static_cast<size_t>(b)]
                   ? sc[static_cast<size_t>(a)] > sc[static_cast<size_t>(b)]
                   : a < b;
      });
      bool clear = true;
      if (s.budget.mode == BudgetMode::kTopP) {
        // Every adjacent pair in the ranking apart, and the cut's mass clear of top_p.
        for (size_t j = 1; j < cand.size(); ++j)
          clear = clear && sc[static_cast<size_t>(cand[j - 1])] - sc[static_cast<size_t>(cand[j])] > tol;
        const double scale_rows = plan.scale / static_cast<double>(rows);
        double mx = -INFINITY;
        for (double x : sc) mx = std::max(mx, x * scale_rows);
        double z = 0, forced = 0;
        std::vector<double> wgt(sc.size());
        for (size_t j = 0; j < sc.size(); ++j) {
          wgt[j] = std::exp(sc[j] * scale_rows - mx);
          z += wgt[j];
          if (static_cast<int64_t>(j) < sink_end || static_cast<int64_t>(j) >= local_begin) forced += wgt[j];
        }
        const double margin = 1e-3 * z + z * (std::exp(2 * tol * scale_rows) - 1);
        double mass = forced;
        clear = clear && std::abs(mass - s.budget.top_p * z) > margin;
        for (int32_t c : cand) {
          mass += wgt[static_cast<size_t>(c)];
          clear = clear && std::abs(mass - s.budget.top_p * z) > margin;
        }
      } else {
        const ResolvedBudget rb = ResolveBudget(s.budget, nb);
        const auto k = static_cast<size_t>(rb.scored_blocks);
        if (k > 0 && k < cand.size())
          clear = sc[static_cast<size_t>(cand[k - 1])] - sc[static_cast<size_t>(cand[k])] > tol;
      }
      if (!clear) {
        ++skipped;
        continue;
      }
      ++compared;
      for (size_t i = 1; i < isas.size(); ++i) {
        ASSERT_EQ(cnt[0][u], cnt[i][u]) << IsaName(isas[i]) << " vs scalar, unit " << u << " " << s.ToString();
        ASSERT_TRUE(std::equal(idx[0].begin() + static_cast<long>(u * cap),
                               idx[0].begin() + static_cast<long>(u * cap) + cnt[0][u],
                               idx[i].begin() + static_cast<long>(u * cap)))
            << IsaName(isas[i]) << " vs scalar, unit " << u << " " << s.ToString();
      }
    }
  }
  std::printf("[ select   ] %ld cases: %lld units identical on %zu ISAs, %lld within the tolerance (skipped)\n", cases,
              static_cast<long long>(compared), isas.size(), static_cast<long long>(skipped));
  EXPECT_GT(compared, 2 * skipped) << "tolerance too loose to test anything";
}

// A workspace full of garbage, paged GQA prefill, any partition: the same bits.
TEST(Determinism, PagedPartitionsPoolsAndDirtyWorkspacesAreBitIdentical) {
  const long cases = std::max(4L, sbrel::EnvInt("SPARSEBUDGET_TEST_SHAPES", 1000) / 25);
  std::mt19937_64 rng(777001);
  ThreadPool pool2(2), pool3(3), pool8(8);
  for (Isa isa : Isas()) {
    SetMaxIsa(isa);
    for (long n = 0; n < cases; ++n) {
      Shape s = RandomShape(rng, true);
      const uint64_t seed = rng();
      AttentionParams p;
      p.shape = {s.Hkv * s.G, s.Hkv, s.D, s.B, s.L, s.nq};
      p.kv_dtype = s.dtype;
      p.scoring = s.scoring;
      p.budget = s.budget;
      AttentionPlan plan;
      ASSERT_TRUE(MakePlan(p, &plan).ok());
      // The same values in a contiguous and a paged layout.
      std::mt19937_64 r1(seed), r2(seed);
      LayoutChoice paged = s.lay;
      paged.page_size = s.B * (1 + static_cast<int64_t>(seed % 3));
      KVData kc = MakeKV(r1, s.dtype, s.L, s.Hkv, s.D, s.lay);
      KVData kp = MakeKV(r2, s.dtype, s.L, s.Hkv, s.D, paged);
      ASSERT_EQ(kc.k64, kp.k64);
      QData q = MakeQ(rng, s.nq, s.Hkv * s.G, s.D, s.lay.pad, s.lay.misalign);
      auto sum = BlockSummaries::Create({s.Hkv, s.D, s.B, s.L, true, true});
      ASSERT_TRUE(sum->Append(kp.view, s.L).ok());
      const size_t out_n = static_cast<size_t>(s.nq) * static_cast<size_t>(s.Hkv * s.G * s.D);
      auto run = [&](const KVCacheView& kv, ThreadPool* pool, bool dirty) {
        std::vector<float> ws(plan.workspace_bytes / 4 + 16, dirty ? NAN : 0.0f);
        OutData o = MakeOut(s.nq, s.Hkv * s.G, s.D, s.lay.misalign);
        EXPECT_TRUE(SparseAttention(plan, q.view, kv, &*sum, o.view, ws.data(), pool).ok());
        return std::vector<float>(o.view.data, o.view.data + out_n);
      };
      const std::vector<float> base = run(kc.view, nullptr, false);
      auto same = [&](const std::vector<float>& x) { return std::memcmp(x.data(), base.data(), out_n * 4) == 0; };
      EXPECT_TRUE(same(run(kp.view, nullptr, false))) << "paged " << IsaName(isa) << " " << s.ToString();
      EXPECT_TRUE(same(run(kp.view, nullptr, true))) << "dirty workspace " << IsaName(isa) << " " << s.ToString();
      EXPECT_TRUE(same(run(kp.view, &pool2, true))) << "pool 2 " << IsaName(isa) << " " << s.ToString();
      EXPECT_TRUE(same(run(kc.view, &pool3, false))) << "pool 3 " << IsaName(isa) << " " << s.ToString();
      EXPECT_TRUE(same(run(kp.view, &pool8, true))) << "pool 8 " << IsaName(isa) << " " << s.ToString();
      // Engine-style slices in a shuffled order, on a dirty workspace, with the selection made
      // by the fused call above (re-made here by SelectBlocks).
      std::vector<int32_t> idx(static_cast<size_t>(plan.num_units * plan.num_blocks)),
          cnt(static_cast<size_t>(plan.num_units));
      std::vector<float> ws(plan.workspace_bytes / 4 + 16, NAN);
      ConstBlockSelection sel{};
      if (s.budget.mode != BudgetMode::kDense) {
        ASSERT_TRUE(SelectBlocks(plan, q.view, *sum, {idx.data(), cnt.data(), plan.num_blocks}, ws.data()).ok());
        sel = {idx.data(), cnt.data(), plan.num_blocks};
      }
      for (int nth : {1, 2, 3, 8}) {
        std::vector<int> order(static_cast<size_t>(nth));
        for (int i = 0; i < nth; ++i) order[static_cast<size_t>(i)] = i;
        std::shuffle(order.begin(), order.end(), rng);
        OutData o = MakeOut(s.nq, s.Hkv * s.G, s.D, s.lay.misalign);
        for (int ith : order)
          ASSERT_TRUE(AttendPartition(plan, q.view, kp.view, sel, o.view, ws.data(), ith, nth).ok());
        std::shuffle(order.begin(), order.end(), rng);
        for (int ith : order) ASSERT_TRUE(AttendMerge(plan, sel, o.view, ws.data(), ith, nth).ok());
        EXPECT_TRUE(same(std::vector<float>(o.view.data, o.view.data + out_n)))
            << "slices " << nth << " " << IsaName(isa) << " " << s.ToString();
      }
    }
  }
  SetMaxIsa(Isa::kAvx512);
}

}  // namespace
