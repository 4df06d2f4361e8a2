// Block-sparse attention against an independent float64 reference, on every ISA this CPU has.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <string>

#include "kernel_testing.hpp"

namespace {

using namespace sbtest;

constexpr double kEps = 1.1920928955078125e-07;

std::vector<Isa> IsasToRun() {
  std::vector<Isa> v;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (IsaSupported(isa)) v.push_back(isa);
  return v;
}

std::string IsaList() {
  std::string s;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    s += std::string(IsaName(isa)) + (IsaSupported(isa) ? "=run " : "=SKIPPED(not on this CPU) ");
  return s;
}

struct IsaScope {
  explicit IsaScope(Isa isa) { SetMaxIsa(isa); }
  ~IsaScope() { SetMaxIsa(Isa::kAvx512); }
};

struct Case {
  uint64_t seed;
  int32_t B, D, G, Hkv, nq;
  int64_t L;
  DType dtype;
  Scoring scoring;
  Budget budget;
  LayoutChoice lay;
  SelectionScope scope = SelectionScope::kPerKvHead;
  std::string ToString() const {
    char buf[440];
    std::snprintf(buf, sizeof buf,
                  "seed=%llu B=%d D=%d G=%d Hkv=%d nq=%d L=%lld dtype=%s scoring=%s budget=%s(k=%lld f=%.3f p=%.3f) "
                  "head_major=%d pad=%d misalign=%d page=%lld scope=%s",
                  static_cast<unsigned long long>(seed), B, D, G, Hkv, nq, static_cast<long long>(L), DTypeName(dtype),
                  ScoringName(scoring), BudgetModeName(budget.mode), static_cast<long long>(budget.blocks),
                  budget.fraction, budget.top_p, lay.head_major, lay.pad, lay.misalign,
                  static_cast<long long>(lay.page_size), SelectionScopeName(scope));
    return buf;
  }
};

Case RandomCase(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](auto const& v) { return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)]; };
  auto uni = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  Case c;
  c.seed = seed;
  c.B = pick(std::vector<int32_t>{16, 32, 64, 128, 256});
  c.D = pick(std::vector<int32_t>{1, 7, 32, 64, 80, 96, 128, 256});
  c.G = pick(std::vector<int32_t>{1, 2, 4, 8});
  c.Hkv = static_cast<int32_t>(uni(1, 2));
  const int64_t k = uni(2, 8);
  const std::vector<int64_t> lens = {1, c.B - 1, c.B, c.B + 1, k * c.B - 1, k * c.B + 1, uni(1, 3000), uni(4096, 9000)};
  c.L = std::max<int64_t>(1, pick(lens));
  c.nq = uni(0, 1) ? 1 : static_cast<int32_t>(uni(1, std::min<int64_t>(c.L, 2 * c.B + 5)));
  // Keep the float64 reference affordable: long contexts get a single query and one kv head.
  if (c.L > 3000) {
    c.nq = std::min(c.nq, 2);
    c.Hkv = 1;
    c.G = std::min(c.G, 4);
    c.D = std::min(c.D, 128);
  }
  c.dtype = pick(std::vector<DType>{DType::kF32, DType::kF16, DType::kBF16});
  c.scoring = uni(0, 1) ? Scoring::kBound : Scoring::kMean;
  const int64_t nb = (c.L + c.B - 1) / c.B;
  switch (uni(0, 7)) {
    case 0: c.budget = Budget::Blocks(0); break;
    case 1: c.budget = Budget::Blocks(1); break;
    case 2: c.budget = Budget::Blocks(nb / 2); break;
    case 3: c.budget = Budget::Blocks(nb); break;
    case 4: c.budget = Budget::Blocks(nb + 5); break;
    case 5: c.budget = Budget::Fraction(std::uniform_real_distribution<double>(0.0, 1.0)(rng)); break;
    case 6: c.budget = Budget::TopP(std::uniform_real_distribution<double>(0.3, 0.99)(rng)); break;
    default: c.budget = Budget::Dense(); break;
  }
  c.budget.sink_blocks = static_cast<int32_t>(uni(0, 2));
  c.budget.local_blocks = static_cast<int32_t>(uni(0, 2));
  c.lay.head_major = uni(0, 1) == 1;
  c.lay.pad = static_cast<int32_t>(uni(0, 3));
  c.lay.misalign = static_cast<int32_t>(uni(0, 3));
  if (uni(0, 3) == 0) c.lay.page_size = c.B * pick(std::vector<int64_t>{1, 2, 4});
  if (uni(0, 3) == 0) c.scope = SelectionScope::kAllKvHeads;  // drawn last: earlier draws unchanged
  return c;
}

// Bitwise equality of two float buffers (NaN padding compares equal to itself).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct CaseRun {
  AttentionPlan plan;
  KVData kv;
  QData q;
  OutData out;
  std::vector<int32_t> idx, counts;
  SelectionStats stats;
};

void Execute(const Case& c, CaseRun* r, ThreadPool* pool = nullptr) {
  std::mt19937_64 rng(c.seed * 7919 + 1);
  AttentionParams p;
  p.shape = {c.G * c.Hkv, c.Hkv, c.D, c.B, c.L, c.nq};
  p.kv_dtype = c.dtype;
  p.scoring = c.scoring;
  p.budget = c.budget;
  p.selection_scope = c.scope;
  ASSERT_TRUE(MakePlan(p, &r->plan).ok()) << c.ToString();
  r->kv = MakeKV(rng, c.dtype, c.L, c.Hkv, c.D, c.lay);
  r->q = MakeQ(rng, c.nq, c.G * c.Hkv, c.D, c.lay.pad, c.lay.misalign);
  r->out = MakeOut(c.nq, c.G * c.Hkv, c.D, c.lay.misalign);
  BlockSummaries::Config sc;
  sc.num_kv_heads = c.Hkv;
  sc.head_dim = c.D;
  sc.block_size = c.B;
  sc.max_tokens = c.L;
  auto sum = BlockSummaries::Create(sc);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  ASSERT_TRUE(sum->Append(r->kv.view, c.L).ok());
  std::vector<float> ws(r->plan.workspace_bytes / 4 + 1);
  r->idx.assign(static_cast<size_t>(r->plan.num_units * r->plan.num_blocks), -1);
  r->counts.assign(static_cast<size_t>(r->plan.num_units), -1);
  BlockSelection sel{r->idx.data(), r->counts.data(), r->plan.num_blocks};
  Status st = SparseAttention(r->plan, r->q.view, r->kv.view, &*sum, r->out.view, ws.data(), pool, &r->stats,
                              c.budget.mode == BudgetMode::kDense ? BlockSelection{} : sel);
  ASSERT_TRUE(st.ok()) << st.ToString() << " " << c.ToString();
}

struct Worst {
  double ratio = 0;  // max|diff| / bound
  double abs = 0;
  std::string where;
};

// q8_0 needs head_dim a multiple of 32: the case's D rounded up (1, 7 -> 32; 80 -> 96).
Case AsQ8(Case c) {
  c.dtype = DType::kQ8_0;
  c.D = std::max(32, (c.D + 31) / 32 * 32);
  return c;
}

void RandomShapesOnIsa(Isa isa, bool q8 = false) {
  std::printf("[ ISAs     ] %s\n", IsaList().c_str());
  if (!IsaSupported(isa)) GTEST_SKIP() << IsaName(isa) << " is not available on this CPU";
  // SPARSEBUDGET_TEST_SHAPES lowers the count for sanitizer builds (tools/reliability.sh).
  const char* env = std::getenv("SPARSEBUDGET_TEST_SHAPES");
  const int kCases = env ? std::max(1, std::atoi(env)) : 1000;
  {
    IsaScope scope(isa);
    ASSERT_EQ(ActiveIsa(), isa);
    std::map<DType, Worst> worst;
    std::map<DType, int> ran;
    int sel_compared = 0, sel_skipped_near_tie = 0;
    for (int n = 0; n < kCases; ++n) {
      const Case c = q8 ? AsQ8(RandomCase(2000003ull * static_cast<uint64_t>(n) + 29))
                        : RandomCase(1000003ull * static_cast<uint64_t>(n) + 17);
      CaseRun r;
      Execute(c, &r);
      if (::testing::Test::HasFatalFailure()) return;
      ++ran[c.dtype];
      const AttentionPlan& p = r.plan;
      // Scale of the bound: the output is a convex combination of V rows, so its error scales
      // with the largest |v| combined (max|out| alone can be tiny through cancellation).
      double maxref = 0, maxdiff = 0, maxv = 0;
      for (int64_t u = 0; u < p.num_units; ++u) {
        const int32_t h = static_cast<int32_t>(u / p.num_query_blocks);
        const int64_t qb = p.first_query_block + u % p.num_query_blocks;
        const int64_t nb = qb + 1;
        std::vector<int32_t> blocks;
        if (c.budget.mode != BudgetMode::kDense) {
          const int32_t cnt = r.counts[static_cast<size_t>(u)];
          ASSERT_GE(cnt, 1) << c.ToString();
          blocks.assign(r.idx.begin() + u * p.num_blocks, r.idx.begin() + u * p.num_blocks + cnt);
          // Forced blocks present, ascending, causal.
          std::set<int32_t> bs(blocks.begin(), blocks.end());
          ASSERT_EQ(bs.size(), blocks.size()) << c.ToString();
          ASSERT_TRUE(std::is_sorted(blocks.begin(), blocks.end())) << c.ToString();
          ASSERT_TRUE(bs.count(static_cast<int32_t>(qb))) << "own block missing " << c.ToString();
          for (int32_t j = 0; j < std::min<int64_t>(c.budget.sink_blocks, nb); ++j)
            ASSERT_TRUE(bs.count(j)) << "sink block missing " << c.ToString();
          ASSERT_LT(*bs.rbegin(), nb) << c.ToString();
          if (c.scope == SelectionScope::kAllKvHeads) {
            // Every kv head holds kv head 0's list for this query block.
            const int64_t u0 = u % p.num_query_blocks;
            ASSERT_EQ(cnt, r.counts[static_cast<size_t>(u0)]) << c.ToString();
            ASSERT_TRUE(std::equal(blocks.begin(), blocks.end(), r.idx.begin() + u0 * p.num_blocks))
                << "kv head " << h << "'s list differs from kv head 0's " << c.ToString();
          }
          if (r.stats.dense_fallback) {
            // The budget kept >= 90% of the last query block's causal blocks: dense ran.
            const ResolvedBudget rl = ResolveBudget(c.budget, p.num_blocks);
            ASSERT_GE(rl.total_blocks * 10, p.num_blocks * 9) << c.ToString();
            ASSERT_EQ(cnt, nb) << c.ToString();
          } else if (c.budget.mode != BudgetMode::kTopP) {
            const ResolvedBudget rb = ResolveBudget(c.budget, nb);
            ASSERT_EQ(cnt, rb.total_blocks) << c.ToString();
            // Selection exactness where the reference's k-th and (k+1)-th scores are apart. All
            // kv heads in scope: the scores summed over every kv head.
            std::vector<double> sc = RefScores(r.kv, r.q, c.scoring, h, c.G, c.L, c.B, qb);
            if (c.scope == SelectionScope::kAllKvHeads)
              for (int32_t h2 = 0; h2 < c.Hkv; ++h2) {
                if (h2 == h) continue;
                const std::vector<double> other = RefScores(r.kv, r.q, c.scoring, h2, c.G, c.L, c.B, qb);
                for (size_t j = 0; j < sc.size(); ++j) sc[j] += other[j];
              }
            std::vector<int32_t> cand;
            const int64_t sink_end = std::min<int64_t>(c.budget.sink_blocks, nb);
            const int64_t local_begin = std::max<int64_t>(sink_end, nb - std::max(1, c.budget.local_blocks));
            for (int64_t j = sink_end; j < local_begin; ++j) cand.push_back(static_cast<int32_t>(j));
            std::sort(cand.begin(), cand.end(), [&](int32_t a, int32_t b) {
              return sc[static_cast<size_t>(a)] != sc[static_cast<size_t>(b)]
                         ? sc[static_cast<size_t>(a)] > sc[static_cast<size_t>(b)]
                         : a < b;
            });
            const auto k = static_cast<size_t>(rb.scored_blocks);
            if (k > 0 && k < cand.size()) {
              double scale = 1e-30;
              for (double x : sc) scale = std::max(scale, std::abs(x));
              const double gap = sc[static_cast<size_t>(cand[k - 1])] - sc[static_cast<size_t>(cand[k])];
              if (gap > 1e-4 * scale) {
                std::set<int32_t> want;
                for (int64_t j = 0; j < sink_end; ++j) want.insert(static_cast<int32_t>(j));
                for (int64_t j = local_begin; j < nb; ++j) want.insert(static_cast<int32_t>(j));
                for (size_t j = 0; j < k; ++j) want.insert(cand[j]);
                ASSERT_EQ(want, bs) << "selection differs from the float64 ranking " << c.ToString();
                ++sel_compared;
              } else {
                ++sel_skipped_near_tie;
              }
            }
          }
        }
        for (int32_t i = 0; i < c.nq; ++i) {
          if ((p.first_query_pos + i) / c.B != qb) continue;
          for (int32_t g = 0; g < c.G; ++g) {
            const int32_t hq = h * c.G + g;
            std::vector<double> ref;
            RefAttend(r.kv, r.q, i, hq, c.G, c.L, c.B, r.plan.scale, blocks, &ref, &maxv);
            for (int32_t d = 0; d < c.D; ++d) {
              maxref = std::max(maxref, std::abs(ref[static_cast<size_t>(d)]));
              const double diff = std::abs(ref[static_cast<size_t>(d)] - r.out.At(i, hq, d));
              maxdiff = std::max(maxdiff, std::isnan(diff) ? INFINITY : diff);
            }
          }
        }
      }
      const double bound = 64 * kEps * std::sqrt(static_cast<double>(c.D)) * std::max({maxref, maxv, 1e-30});
      ASSERT_LE(maxdiff, bound) << IsaName(isa) << " " << c.ToString();
      Worst& w = worst[c.dtype];
      if (maxdiff / bound > w.ratio) w = {maxdiff / bound, maxdiff, c.ToString()};
    }
    std::printf("[ %-8s ] %d shapes; selection compared on %d units (%d near-ties skipped)\n", IsaName(isa), kCases,
                sel_compared, sel_skipped_near_tie);
    for (auto& [dt, w] : worst)
      std::printf("[ %-8s ]   %-4s %4d shapes, worst max|diff| %.3g = %.4f of the bound (%s)\n", IsaName(isa),
                  DTypeName(dt), ran[dt], w.abs, w.ratio, w.where.c_str());
    EXPECT_GT(sel_compared, kCases / 10);
  }
}

// One test per ISA so ctest runs them in parallel; an ISA the CPU lacks is a visible skip.
TEST(Attention, RandomShapesMatchFloat64Reference_scalar) { RandomShapesOnIsa(Isa::kScalar); }
TEST(Attention, RandomShapesMatchFloat64Reference_avx2) { RandomShapesOnIsa(Isa::kAvx2); }
TEST(Attention, RandomShapesMatchFloat64Reference_avx512) { RandomShapesOnIsa(Isa::kAvx512); }
// q8_0 K/V (ggml's blocks): the reference runs on the dequantized values, same bound as fp32.
TEST(Attention, Q8_0RandomShapesMatchFloat64Reference_scalar) { RandomShapesOnIsa(Isa::kScalar, true); }
TEST(Attention, Q8_0RandomShapesMatchFloat64Reference_avx2) { RandomShapesOnIsa(Isa::kAvx2, true); }
TEST(Attention, Q8_0RandomShapesMatchFloat64Reference_avx512) { RandomShapesOnIsa(Isa::kAvx512, true); }

// Deterministic shapes with a clear score structure: selection must equal the reference's.
TEST(Selection, TieFreeMatchesReferenceBothScorings) {
  for (Isa isa : IsasToRun()) {
    IsaScope scope(isa);
    for (Scoring scoring : {Scoring::kMean, Scoring::kBound}) {
      for (int trial = 0; trial < 20; ++trial) {
        Case c = RandomCase(777 + static_cast<uint64_t>(trial));
        c.scoring = scoring;
        // Odd trials: one list for 3 kv heads, ranked by the scores summed over them.
        c.scope = trial % 2 ? SelectionScope::kAllKvHeads : SelectionScope::kPerKvHead;
        if (trial % 2) c.Hkv = 3;
        c.L = 40 * 64 + 17;
        c.B = 64;
        c.nq = 1;
        c.D = 64;
        c.dtype = DType::kF32;
        c.budget = Budget::Blocks(7);
        c.lay.page_size = 0;
        CaseRun r;
        Execute(c, &r);
        if (HasFatalFailure()) return;
        for (int64_t u = 0; u < r.plan.num_units; ++u) {
          const int64_t nb = r.plan.num_blocks;
          std::vector<double> sc(static_cast<size_t>(nb), 0.0);
          for (int32_t h = 0; h < c.Hkv; ++h) {
            if (c.scope == SelectionScope::kPerKvHead && h != u) continue;
            const auto part = RefScores(r.kv, r.q, scoring, h, c.G, c.L, c.B, nb - 1);
            for (size_t j = 0; j < sc.size(); ++j) sc[j] += part[j];
          }
          std::vector<int32_t> cand;
          for (int32_t j = 1; j < nb - 1; ++j) cand.push_back(j);
          std::sort(cand.begin(), cand.end(),
                    [&](int32_t a, int32_t b) { return sc[static_cast<size_t>(a)] > sc[static_cast<size_t>(b)]; });
          std::set<int32_t> want = {0, static_cast<int32_t>(nb - 1)};
          want.insert(cand.begin(), cand.begin() + 7);
          std::set<int32_t> got(r.idx.begin() + u * nb, r.idx.begin() + u * nb + r.counts[static_cast<size_t>(u)]);
          EXPECT_EQ(want, got) << IsaName(isa) << " " << c.ToString();
        }
      }
    }
  }
}

TEST(Selection, TiesGoToLowerBlockIndex) {
  // Every key identical: all block scores tie, so the lowest candidate indices must win.
  AttentionParams p;
  p.shape = {2, 1, 16, 16, 16 * 10, 1};
  p.budget = Budget::Blocks(3);
  AttentionPlan plan;
  ASSERT_TRUE(MakePlan(p, &plan).ok());
  std::vector<float> k(16 * 10 * 16, 0.5f), v(k.size(), 1.0f), q(2 * 16, 1.0f), o(2 * 16);
  KVCacheView kv{k.data(), v.data(), DType::kF32, 16, 0};
  BlockSummaries::Config sc{1, 16, 16, 160, true, true};
  auto sum = BlockSummaries::Create(sc);
  ASSERT_TRUE(sum->Append(kv, 160).ok());
  for (Isa isa : IsasToRun()) {
    IsaScope scope(isa);
    for (Scoring s : {Scoring::kMean, Scoring::kBound}) {
      p.scoring = s;
      ASSERT_TRUE(MakePlan(p, &plan).ok());
      std::vector<float> ws(plan.workspace_bytes / 4 + 1);
      std::vector<int32_t> idx(10), cnt(1);
      ASSERT_TRUE(SelectBlocks(plan, QueryView{q.data(), 32, 16}, *sum, {idx.data(), cnt.data(), 10}, ws.data()).ok());
      ASSERT_EQ(cnt[0], 5);
      EXPECT_EQ(std::vector<int32_t>(idx.begin(), idx.begin() + 5), (std::vector<int32_t>{0, 1, 2, 3, 9}));
    }
  }
}

TEST(Selection, TopPKeepsFewestBlocksReachingP) {
  for (Isa isa : IsasToRun()) {
    IsaScope scope(isa);
    for (int trial = 0; trial < 30; ++trial) {
      Case c = RandomCase(4242 + static_cast<uint64_t>(trial));
      c.scope = SelectionScope::kPerKvHead;  // the reference below ranks per kv head
      c.B = 32;
      c.L = 32 * 30 + 5;
      c.nq = 1;
      c.D = 32;
      c.dtype = DType::kF32;
      c.scoring = trial % 2 ? Scoring::kMean : Scoring::kBound;
      c.budget = Budget::TopP(0.5 + 0.015 * trial);
      c.lay.page_size = 0;
      CaseRun r;
      Execute(c, &r);
      if (HasFatalFailure()) return;
      const int64_t nb = r.plan.num_blocks;
      const int32_t rows = c.G;
      for (int64_t u = 0; u < r.plan.num_units; ++u) {
        const auto sc = RefScores(r.kv, r.q, c.scoring, static_cast<int32_t>(u), c.G, c.L, c.B, nb - 1);
        double mx = -INFINITY;
        for (double x : sc) mx = std::max(mx, x * r.plan.scale / rows);
        std::vector<double> w(sc.size());
        double z = 0;
        for (size_t j = 0; j < sc.size(); ++j) z += (w[j] = std::exp(sc[j] * r.plan.scale / rows - mx));
        std::set<int32_t> got(r.idx.begin() + u * nb, r.idx.begin() + u * nb + r.counts[static_cast<size_t>(u)]);
        std::set<int32_t> forced;
        for (int32_t j = 0; j < std::min<int64_t>(c.budget.sink_blocks, nb); ++j) forced.insert(j);
        for (int64_t j = std::max<int64_t>(0, nb - std::max(1, c.budget.local_blocks)); j < nb; ++j)
          forced.insert(static_cast<int32_t>(j));
        double mass = 0, least = INFINITY;
        for (int32_t j : got) {
          mass += w[static_cast<size_t>(j)] / z;
          if (!forced.count(j)) least = std::min(least, w[static_cast<size_t>(j)] / z);
        }
        const double p = c.budget.top_p;
        EXPECT_GE(mass, p - 1e-4) << c.ToString();
        if (least < INFINITY) {
          EXPECT_LT(mass - least, p + 1e-4) << "not the fewest " << c.ToString();
        }
      }
    }
  }
}

TEST(Summaries, IncrementalEqualsRebuiltAndReference) {
  for (Isa isa : IsasToRun()) {
    IsaScope scope(isa);
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
      std::mt19937_64 rng(99 + static_cast<uint64_t>(dt));
      const int64_t L = 5 * 32 + 11;
      const int32_t D = dt == DType::kQ8_0 ? 64 : 37;
      KVData kv = MakeKV(rng, dt, L, 2, D, LayoutChoice{false, 1, 1, 0});
      BlockSummaries::Config sc{2, D, 32, L, true, true};
      auto inc = BlockSummaries::Create(sc);
      auto full = BlockSummaries::Create(sc);
      ASSERT_TRUE(full->Append(kv.view, L).ok());
      for (int64_t t = 1; t <= L; ++t) {
        ASSERT_TRUE(inc->Append(kv.view, t).ok());
        auto fresh = BlockSummaries::Create(sc);
        ASSERT_TRUE(fresh->Append(kv.view, t).ok());
        for (int32_t h = 0; h < 2; ++h)
          for (int64_t b = 0; b < inc->num_blocks(); ++b) {
            ASSERT_EQ(0, std::memcmp(inc->key_sum(h, b), fresh->key_sum(h, b), static_cast<size_t>(D) * 4))
                << "t=" << t;
            ASSERT_EQ(0, std::memcmp(inc->key_min(h, b), fresh->key_min(h, b), static_cast<size_t>(D) * 4))
                << "t=" << t;
            ASSERT_EQ(0, std::memcmp(inc->key_max(h, b), fresh->key_max(h, b), static_cast<size_t>(D) * 4))
                << "t=" << t;
          }
      }
      for (int32_t h = 0; h < 2; ++h)
        for (int64_t b = 0; b < full->num_blocks(); ++b)
          for (int32_t d = 0; d < D; ++d) {
            double s = 0, mn = INFINITY, mx = -INFINITY;
            for (int64_t t = b * 32; t < std::min<int64_t>(L, (b + 1) * 32); ++t) {
              s += kv.K(t, h, d);
              mn = std::min(mn, kv.K(t, h, d));
              mx = std::max(mx, kv.K(t, h, d));
            }
            EXPECT_NEAR(full->key_sum(h, b)[d], s, 1e-5 * (1 + std::abs(s)));
            EXPECT_EQ(full->key_min(h, b)[d], mn);
            EXPECT_EQ(full->key_max(h, b)[d], mx);
          }
    }
  }
}

// Bitwise: reruns, thread partitions, paged vs contiguous, budget=all vs dense.
TEST(Determinism, BitIdenticalAcrossRerunsPartitionsLayoutsAndDenseEquivalents) {
  // Sanitizer builds (tools/reliability.sh sets SPARSEBUDGET_TEST_SHAPES) walk 30 blocks instead
  // of 70: the same layouts, partitions and pools (8 slices still get several blocks each) at
  // under half the cost; with 70 this one test took 577 s of the TSan stage on 2 cores.
  const int64_t blocks = std::getenv("SPARSEBUDGET_TEST_SHAPES") != nullptr ? 30 : 70;
  for (Isa isa : IsasToRun()) {
    IsaScope scope(isa);
    // Trials 12.. use several kv heads (the dense decode walks all heads of a block together),
    // the even ones with q8_0 K/V.
    for (int trial = 0; trial < 20; ++trial) {
      Case c = RandomCase(31337 + static_cast<uint64_t>(trial));
      if (trial >= 12 && trial % 2 == 0) c = AsQ8(c);
      c.L = 64 * blocks + 9;
      c.B = 64;
      c.nq = trial % 3 == 0 ? 70 : 1;
      c.Hkv = trial >= 12 ? 2 + trial % 3 : 1;
      c.lay.page_size = 0;
      c.budget = trial % 2 ? Budget::Fraction(0.3) : Budget::Dense();
      // Trials 13 and 17: one list for all kv heads (decode walks it for all heads at once).
      c.scope = trial == 13 || trial == 17 ? SelectionScope::kAllKvHeads : SelectionScope::kPerKvHead;
      CaseRun base;
      Execute(c, &base);
      if (HasFatalFailure()) return;
      // Rerun.
      CaseRun again;
      Execute(c, &again);
      EXPECT_TRUE(SameBits(base.out.buf, again.out.buf)) << "rerun " << c.ToString();
      // Paged layout of the same values.
      Case paged = c;
      paged.lay.page_size = 128;
      CaseRun pr;
      Execute(paged, &pr);
      EXPECT_EQ(0, std::memcmp(base.out.view.data, pr.out.view.data, static_cast<size_t>(c.nq) * c.G * c.Hkv * c.D * 4))
          << "paged " << c.ToString();
      // Thread pool and explicit partitions.
      for (int nth : {2, 3, 8}) {
        ThreadPool pool(nth);
        CaseRun t;
        Execute(c, &t, &pool);
        EXPECT_TRUE(SameBits(base.out.buf, t.out.buf)) << "pool " << nth << " " << c.ToString();
        // Engine-style ith/nth slices run in reverse order on one thread.
        std::vector<float> ws(base.plan.workspace_bytes / 4 + 1);
        if (c.budget.mode != BudgetMode::kDense) {
          auto sum = BlockSummaries::Create({c.Hkv, c.D, c.B, c.L, true, true});
          ASSERT_TRUE(sum->Append(base.kv.view, c.L).ok());
          std::vector<int32_t> idx(base.idx.size(), -1), cnt(base.counts.size(), -1);
          for (int ith = nth - 1; ith >= 0; --ith)
            ASSERT_TRUE(SelectBlocksPartition(base.plan, base.q.view, *sum,
                                              {idx.data(), cnt.data(), base.plan.num_blocks}, ws.data(), ith, nth)
                            .ok());
          EXPECT_EQ(cnt, base.counts) << "select ith/nth " << nth;
          for (size_t u = 0; u < cnt.size(); ++u)
            for (int32_t j = 0; j < cnt[u]; ++j)
              EXPECT_EQ(idx[u * static_cast<size_t>(base.plan.num_blocks) + static_cast<size_t>(j)],
                        base.idx[u * static_cast<size_t>(base.plan.num_blocks) + static_cast<size_t>(j)]);
        }
        OutData o = MakeOut(c.nq, c.G * c.Hkv, c.D, c.lay.misalign);
        ConstBlockSelection sel{};
        if (c.budget.mode != BudgetMode::kDense) sel = {base.idx.data(), base.counts.data(), base.plan.num_blocks};
        for (int ith = nth - 1; ith >= 0; --ith)
          ASSERT_TRUE(AttendPartition(base.plan, base.q.view, base.kv.view, sel, o.view, ws.data(), ith, nth).ok());
        for (int ith = 0; ith < nth; ++ith) ASSERT_TRUE(AttendMerge(base.plan, sel, o.view, ws.data(), ith, nth).ok());
        EXPECT_TRUE(SameBits(base.out.buf, o.buf)) << "ith/nth " << nth << " " << c.ToString();
      }
      // Budget larger than everything equals the dense path.
      if (c.budget.mode == BudgetMode::kDense) {
        Case all = c;
        all.budget = Budget::Blocks(1000);
        all.budget.sink_blocks = c.budget.sink_blocks;
        all.budget.local_blocks = c.budget.local_blocks;
        CaseRun ar;
        Execute(all, &ar);
        EXPECT_TRUE(SameBits(base.out.buf, ar.out.buf)) << "budget=all " << c.ToString();
        EXPECT_EQ(ar.stats.units_clamped, ar.stats.units);
        EXPECT_TRUE(ar.stats.dense);
      }
    }
  }
}

// Decode with one block list for every kv head walks each block for all heads at once (the dense
// walk over a list); the results must be those of the per-unit walk bit for bit. Kv heads 0 and 1
// keep list A in both runs; kv head 2 gets A or A minus one block, which turns the shared walk off.
TEST(Attention, SharedListDecodeEqualsPerUnitWalkBitForBit) {
  constexpr int32_t kHkv = 3, kD = 64, kB = 32;
  constexpr int64_t kL = kB * 40 + 7;
  const int64_t nb = (kL + kB - 1) / kB;
  int shapes = 0;
  for (Isa isa : IsasToRun()) {
    IsaScope scope(isa);
    for (DType dt : {DType::kF32, DType::kF16, DType::kQ8_0})
      for (bool head_major : {false, true})
        for (int32_t G : {4, 16}) {  // 16 > 8 rows: the token-major walk goes block by block
          std::mt19937_64 rng(static_cast<uint64_t>(dt) * 100 + (head_major ? 10 : 0) + static_cast<uint64_t>(G));
          AttentionParams p;
          p.shape = {G * kHkv, kHkv, kD, kB, kL, 1};
          p.kv_dtype = dt;
          AttentionPlan plan;
          ASSERT_TRUE(MakePlan(p, &plan).ok());
          LayoutChoice lay;
          lay.head_major = head_major;
          const KVData kv = MakeKV(rng, dt, kL, kHkv, kD, lay);
          const QData q = MakeQ(rng, 1, G * kHkv, kD, 0, 0);
          // A: the own block, block 0 and every third block: 15 blocks, two split-K chunks.
          std::vector<int32_t> a;
          for (int32_t j = 0; j < nb; ++j)
            if (j % 3 == 0 || j == nb - 1) a.push_back(j);
          std::vector<int32_t> shorter(a.begin() + 1, a.end());
          std::vector<float> ws(plan.workspace_bytes / 4 + 1);
          auto run = [&](const std::vector<int32_t>& last, ThreadPool* pool) {
            std::vector<int32_t> idx(static_cast<size_t>(kHkv * nb), -1), cnt(kHkv);
            for (int32_t h = 0; h < kHkv; ++h) {
              const std::vector<int32_t>& l = h == kHkv - 1 ? last : a;
              std::copy(l.begin(), l.end(), idx.begin() + h * nb);
              cnt[static_cast<size_t>(h)] = static_cast<int32_t>(l.size());
            }
            OutData o = MakeOut(1, G * kHkv, kD, 0);
            EXPECT_TRUE(Attend(plan, q.view, kv.view, {idx.data(), cnt.data(), nb}, o.view, ws.data(), pool).ok());
            return o;
          };
          const OutData shared = run(a, nullptr);
          const OutData mixed = run(shorter, nullptr);
          ThreadPool pool(2), pool3(3);
          const OutData shared2 = run(a, &pool);
          const std::string what = std::string(IsaName(isa)) + " " + DTypeName(dt) +
                                   (head_major ? " head-major" : " token-major") + " G=" + std::to_string(G);
          const size_t kept = static_cast<size_t>(2 * G * kD);  // q heads of kv heads 0 and 1
          EXPECT_EQ(0, std::memcmp(shared.view.data, mixed.view.data, kept * sizeof(float))) << what;
          EXPECT_TRUE(SameBits(shared.buf, shared2.buf)) << "2 threads " << what;
          // Kv head 2 lost a block in the mixed run: its rows must differ (the runs really differ).
          EXPECT_NE(0, std::memcmp(shared.view.data + kept, mixed.view.data + kept,
                                   static_cast<size_t>(G * kD) * sizeof(float)))
              << what;
          for (size_t i = 0; i < static_cast<size_t>(3 * G * kD); ++i)
            ASSERT_TRUE(std::isfinite(shared.view.data[i])) << what;
          // 3 threads over 2 split-K chunks, and over a short list's single chunk: the kv heads
          // are split across items too, with the same results.
          EXPECT_TRUE(SameBits(shared.buf, run(a, &pool3).buf)) << "3 threads " << what;
          a = {0, static_cast<int32_t>(nb / 2), static_cast<int32_t>(nb - 1)};
          const OutData short_shared = run(a, &pool3);
          const OutData short_mixed = run({0, static_cast<int32_t>(nb - 1)}, nullptr);
          EXPECT_EQ(0, std::memcmp(short_shared.view.data, short_mixed.view.data, kept * sizeof(float)))
              << "short list " << what;
          ++shapes;
        }
  }
  std::printf("[ shared   ] %d ISA x dtype x layout x group combinations (%s)\n", shapes, IsaList().c_str());
}

TEST(Attention, NearlyDenseBudgetFallsBackToDenseAndSaysSo) {
  Case c = RandomCase(2024);
  c.L = 64 * 40;
  c.B = 64;
  c.nq = 1;
  c.lay.page_size = 0;
  c.budget = Budget::Fraction(0.95);
  CaseRun r;
  Execute(c, &r);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(r.stats.dense_fallback);
  EXPECT_TRUE(r.stats.dense);
  EXPECT_EQ(r.counts[0], 40);
  c.budget = Budget::Fraction(0.5);
  CaseRun s;
  Execute(c, &s);
  EXPECT_FALSE(s.stats.dense_fallback);
  EXPECT_EQ(s.counts[0], 20);
}

TEST(Attention, NaNStaysInAffectedRows) {
  AttentionParams p;
  p.shape = {4, 2, 32, 16, 100, 1};
  AttentionPlan plan;
  ASSERT_TRUE(MakePlan(p, &plan).ok());
  std::mt19937_64 rng(5);
  KVData kv = MakeKV(rng, DType::kF32, 100, 2, 32, LayoutChoice{});
  QData q = MakeQ(rng, 1, 4, 32, 0, 0);
  q.buf[3] = NAN;  // query head 0 only
  for (Isa isa : IsasToRun()) {
    IsaScope scope(isa);
    OutData o = MakeOut(1, 4, 32, 0);
    std::vector<float> ws(plan.workspace_bytes / 4 + 1);
    ASSERT_TRUE(Attend(plan, q.view, kv.view, {}, o.view, ws.data()).ok());
    EXPECT_TRUE(std::isnan(o.At(0, 0, 0)));
    for (int h = 1; h < 4; ++h)
      for (int d = 0; d < 32; ++d) EXPECT_TRUE(std::isfinite(o.At(0, h, d))) << IsaName(isa) << " head " << h;
  }
}

TEST(Errors, EveryBadShapeHasAStatusNamingTheValue) {
  auto plan_err = [](AttentionParams p) {
    AttentionPlan plan;
    return MakePlan(p, &plan);
  };
  AttentionParams good;
  good.shape = {8, 2, 64, 64, 1000, 1};
  ASSERT_TRUE(plan_err(good).ok());
  struct Bad {
    const char* what;
    AttentionParams p;
    const char* needle;
  };
  std::vector<Bad> bads;
  auto add = [&](const char* what, auto mutate, const char* needle) {
    AttentionParams p = good;
    mutate(p);
    bads.push_back({what, p, needle});
  };
  add(
      "head_dim 0", [](AttentionParams& p) { p.shape.head_dim = 0; }, "head_dim");
  add(
      "block 48", [](AttentionParams& p) { p.shape.block_size = 48; }, "48");
  add(
      "block 8", [](AttentionParams& p) { p.shape.block_size = 8; }, "block_size");
  add(
      "kv 3 of 8", [](AttentionParams& p) { p.shape.num_kv_heads = 3; }, "num_kv_heads (3)");
  add(
      "q heads 0", [](AttentionParams& p) { p.shape.num_q_heads = 0; }, "num_q_heads");
  add(
      "L < nq",
      [](AttentionParams& p) {
        p.shape.num_queries = 5;
        p.shape.context_length = 4;
      },
      "context_length (4)");
  add(
      "nq < 0", [](AttentionParams& p) { p.shape.num_queries = -1; }, "num_queries");
  add(
      "L < 0",
      [](AttentionParams& p) {
        p.shape.context_length = -5;
        p.shape.num_queries = 0;
      },
      "-5");
  add(
      "huge L", [](AttentionParams& p) { p.shape.context_length = int64_t{1} << 50; }, "context_length");
  add(
      "dtype 9", [](AttentionParams& p) { p.kv_dtype = static_cast<DType>(9); }, "kv_dtype");
  add(
      "scoring 5", [](AttentionParams& p) { p.scoring = static_cast<Scoring>(5); }, "scoring");
  add(
      "scale nan", [](AttentionParams& p) { p.scale = NAN; }, "scale");
  add(
      "blocks -1", [](AttentionParams& p) { p.budget = Budget::Blocks(-1); }, "budget.blocks");
  add(
      "fraction 1.5", [](AttentionParams& p) { p.budget = Budget::Fraction(1.5); }, "budget.fraction");
  add(
      "top_p 0", [](AttentionParams& p) { p.budget = Budget::TopP(0.0); }, "budget.top_p");
  add(
      "max < min", [](AttentionParams& p) { p.budget = Budget::TopP(0.9, 5, 2); }, "max_blocks");
  for (const Bad& b : bads) {
    Status st = plan_err(b.p);
    EXPECT_FALSE(st.ok()) << b.what;
    EXPECT_NE(st.message().find(b.needle), std::string::npos) << b.what << ": " << st.ToString();
  }
  // Zero queries and L = 0: no-op success.
  AttentionParams empty = good;
  empty.shape.num_queries = 0;
  empty.shape.context_length = 0;
  AttentionPlan plan;
  ASSERT_TRUE(MakePlan(empty, &plan).ok());
  EXPECT_TRUE(plan.empty);
  EXPECT_TRUE(Attend(plan, {}, {}, {}, {}, nullptr).ok());

  // View errors.
  ASSERT_TRUE(MakePlan(good, &plan).ok());
  std::vector<float> k(1000 * 2 * 64), q(8 * 64), o(8 * 64), ws(plan.workspace_bytes / 4 + 1);
  KVCacheView kv{k.data(), k.data(), DType::kF32, 128, 64};
  QueryView qv{q.data(), 512, 64};
  OutputView ov{o.data(), 512, 64};
  EXPECT_TRUE(Attend(plan, qv, kv, {}, ov, ws.data()).ok());
  EXPECT_EQ(Attend(plan, QueryView{}, kv, {}, ov, ws.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Attend(plan, qv, kv, {}, OutputView{}, ws.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Attend(plan, qv, KVCacheView{}, {}, ov, ws.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Attend(plan, qv, kv, {}, ov, nullptr).code(), StatusCode::kInvalidArgument);
  KVCacheView overlap = kv;
  overlap.token_stride = 64;  // two heads of 64 in a 64-element token row
  Status st = Attend(plan, qv, overlap, {}, ov, ws.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("overlap"), std::string::npos) << st.ToString();
  KVCacheView huge = kv;
  huge.token_stride = int64_t{1} << 60;
  EXPECT_EQ(Attend(plan, qv, huge, {}, ov, ws.data()).code(), StatusCode::kOutOfRange);
  KVCacheView wrong_type = kv;
  wrong_type.dtype = DType::kF16;
  EXPECT_NE(Attend(plan, qv, wrong_type, {}, ov, ws.data()).message().find("f16"), std::string::npos);
  KVCacheView paged = kv;
  std::vector<int32_t> table(16, 0);
  paged.page_table = table.data();
  paged.page_size = 96;
  EXPECT_NE(Attend(plan, qv, paged, {}, ov, ws.data()).message().find("page_size"), std::string::npos);
  paged.page_size = 64;
  paged.page_stride = 64 * 128;
  paged.num_pages = 16;
  table[3] = -2;
  EXPECT_NE(Attend(plan, qv, paged, {}, ov, ws.data()).message().find("page_table[3]"), std::string::npos);
  // Bad selection from a caller.
  std::vector<int32_t> idx(16, 0), cnt(2, 3);
  idx[0] = 0;
  idx[1] = 5;
  idx[2] = 5;
  st = Attend(plan, qv, kv, {idx.data(), cnt.data(), 16}, ov, ws.data());
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.ToString();
  EXPECT_EQ(AttendPartition(plan, qv, kv, {}, ov, ws.data(), 2, 2).code(), StatusCode::kInvalidArgument);
  // Summaries errors.
  EXPECT_FALSE(BlockSummaries::Create({0, 64, 64, 10, true, true}).ok());
  EXPECT_FALSE(BlockSummaries::Create({1, 64, 24, 10, true, true}).ok());
  auto sum = BlockSummaries::Create({2, 64, 64, 100, true, false});
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(sum->Append(kv, 101).code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(sum->Append(kv, 100).ok());
  good.scoring = Scoring::kBound;
  good.budget = Budget::Blocks(2);
  ASSERT_TRUE(MakePlan(good, &plan).ok());
  std::vector<int32_t> sidx(32), scnt(2);
  st = SelectBlocks(plan, qv, *sum, {sidx.data(), scnt.data(), 16}, ws.data());
  EXPECT_FALSE(st.ok());  // summaries cover 100 < 1000 tokens
  // Unknown ISA name.
  EXPECT_FALSE(ParseIsa("sse9").ok());
  EXPECT_NE(ParseIsa("sse9").status().message().find("sse9"), std::string::npos);
}

}  // namespace

namespace {

// QuantizeQ8_0 against ggml's reference rule, written out here: per 32 values d = max|x| / 127
// (fp32), stored as fp16 (round to nearest even), q = roundf(x * (1/d)), q = 0 for d = 0.
TEST(Q8_0, QuantizeRoundTripAndBlockFormat) {
  std::mt19937_64 rng(8080);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<double> mag(-12.0, 6.0);  // block scales from ~1e-12 to ~1e6
  int blocks_checked = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 32 * (1 + trial % 9);
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t b = 0; b < n / 32; ++b) {
      const float m = static_cast<float>(std::pow(10.0, mag(rng)));
      const bool zero = (trial + b) % 17 == 0;
      for (int j = 0; j < 32; ++j) x[static_cast<size_t>(b * 32 + j)] = zero ? 0.0f : nd(rng) * m;
    }
    std::vector<unsigned char> q(static_cast<size_t>(DTypeBytes(DType::kQ8_0, n)) + 1, 0xAB);
    unsigned char* dst = q.data() + 1;  // any alignment
    ASSERT_TRUE(QuantizeQ8_0(x.data(), n, dst).ok());
    std::vector<float> back(static_cast<size_t>(n));
    for (Isa isa : IsasToRun()) {
      IsaScope scope(isa);
      ToFloat32(dst, DType::kQ8_0, n, back.data());
      for (int64_t b = 0; b < n / 32; ++b) {
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::abs(x[static_cast<size_t>(b * 32 + j)]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h;
        std::memcpy(&h, dst + b * 34, 2);
        ASSERT_EQ(h, FloatToHalf(d)) << "block " << b << " trial " << trial;
        for (int j = 0; j < 32; ++j) {
          const size_t i = static_cast<size_t>(b * 32 + j);
          const auto qi = static_cast<int8_t>(dst[b * 34 + 2 + j]);
          ASSERT_EQ(qi, static_cast<int8_t>(std::round(x[i] * id))) << "value " << i << " trial " << trial;
          // Exact dequantization, and the documented round-trip bound (plus fp16 subnormal steps).
          ASSERT_EQ(static_cast<double>(back[i]), Q8ToDouble(dst, b * 32 + j)) << IsaName(isa);
          const double err = std::abs(static_cast<double>(back[i]) - x[i]);
          ASSERT_LE(err, 0.5 * d * (1 + 1e-5) + std::abs(x[i]) * std::ldexp(1.0, -11) + 127 * std::ldexp(1.0, -25))
              << "value " << i << " x " << x[i] << " d " << d;
        }
        ++blocks_checked;
      }
    }
  }
  EXPECT_GT(blocks_checked, 500);
}

TEST(Q8_0, BadInputHasAStatusNamingTheValue) {
  std::vector<float> x(64, 1.0f);
  std::vector<unsigned char> q(68);
  EXPECT_NE(QuantizeQ8_0(x.data(), 48, q.data()).message().find("48"), std::string::npos);
  EXPECT_NE(QuantizeQ8_0(x.data(), 0, q.data()).message().find("multiple of 32"), std::string::npos);
  EXPECT_EQ(QuantizeQ8_0(nullptr, 32, q.data()).code(), StatusCode::kInvalidArgument);
  x[37] = NAN;
  EXPECT_NE(QuantizeQ8_0(x.data(), 64, q.data()).message().find("in[37]"), std::string::npos);
  x[37] = 1e30f;  // the scale would overflow fp16
  EXPECT_NE(QuantizeQ8_0(x.data(), 64, q.data()).message().find("in[37]"), std::string::npos);
  x[37] = 8.33e6f;  // just above 65520 * 127: the fp16 scale would round to infinity
  EXPECT_NE(QuantizeQ8_0(x.data(), 64, q.data()).message().find("in[37]"), std::string::npos);
  x[37] = 8.31e6f;  // just below: a finite scale near fp16's largest
  ASSERT_TRUE(QuantizeQ8_0(x.data(), 64, q.data()).ok());
  // Tiny blocks: fp32-subnormal d (1/d = inf; UB if converted to int8) gives codes 0 and scale 0;
  // d below half fp16's smallest subnormal (max|x| < 127 * 2^-25) also dequantizes to zeros.
  for (float tiny : {1e-38f, 1e-40f, 3.0e-6f}) {
    std::vector<float> t(32, -tiny);
    t[5] = tiny;
    ASSERT_TRUE(QuantizeQ8_0(t.data(), 32, q.data()).ok()) << tiny;
    std::vector<float> back(32, 1.0f);
    ToFloat32(q.data(), DType::kQ8_0, 32, back.data());
    for (int j = 0; j < 32; ++j) {
      EXPECT_EQ(back[static_cast<size_t>(j)], 0.0f) << tiny << " value " << j;
      if (tiny < 1e-30f) {
        EXPECT_EQ(q[static_cast<size_t>(2 + j)], 0) << tiny << " code " << j;
      }
    }
  }
  // A trailing incomplete block has no values: NaN, never stale memory.
  x[37] = 1.0f;
  ASSERT_TRUE(QuantizeQ8_0(x.data(), 32, q.data()).ok());
  std::vector<float> out(40, 0.0f);
  ToFloat32(q.data(), DType::kQ8_0, 40, out.data());
  EXPECT_NEAR(out[31], 1.0f, 1e-3);
  EXPECT_TRUE(std::isnan(out[32]) && std::isnan(out[39]));
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 128), 136);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 100), -1);
  EXPECT_EQ(DTypeBytes(DType::kF16, 100), 200);
  EXPECT_EQ(DTypeBytes(DType::kF32, int64_t{1} << 62), -1);
  EXPECT_STREQ(DTypeName(DType::kQ8_0), "q8_0");

  // Shapes and views: head_dim and strides must be multiples of 32 values.
  AttentionParams p;
  p.shape = {8, 2, 48, 64, 1000, 1};
  p.kv_dtype = DType::kQ8_0;
  AttentionPlan plan;
  Status st = MakePlan(p, &plan);
  EXPECT_NE(st.message().find("head_dim must be a multiple of 32"), std::string::npos) << st.ToString();
  p.shape.head_dim = 64;
  ASSERT_TRUE(MakePlan(p, &plan).ok());
  std::vector<unsigned char> k(static_cast<size_t>(DTypeBytes(DType::kQ8_0, 1000 * 2 * 64)));
  std::vector<float> qv(8 * 64), o(8 * 64), ws(plan.workspace_bytes / 4 + 1);
  KVCacheView kv{k.data(), k.data(), DType::kQ8_0, 128, 64};
  EXPECT_TRUE(Attend(plan, {qv.data(), 512, 64}, kv, {}, {o.data(), 512, 64}, ws.data()).ok());
  KVCacheView odd = kv;
  odd.token_stride = 136;
  st = Attend(plan, {qv.data(), 512, 64}, odd, {}, {o.data(), 512, 64}, ws.data());
  EXPECT_NE(st.message().find("multiples of 32"), std::string::npos) << st.ToString();
  auto sum = BlockSummaries::Create({2, 64, 64, 1000, true, true});
  ASSERT_TRUE(sum.ok());
  st = sum->Append(odd, 10);
  EXPECT_NE(st.message().find("token_stride 136"), std::string::npos) << st.ToString();
  EXPECT_TRUE(sum->Append(kv, 1000).ok());
  KVCacheView paged = kv;
  std::vector<int32_t> table(16, 0);
  paged.page_table = table.data();
  paged.page_size = 64;
  paged.page_stride = 64 * 128 + 16;
  paged.num_pages = 16;
  st = Attend(plan, {qv.data(), 512, 64}, paged, {}, {o.data(), 512, 64}, ws.data());
  EXPECT_NE(st.message().find("page_stride"), std::string::npos) << st.ToString();
}

}  // namespace
