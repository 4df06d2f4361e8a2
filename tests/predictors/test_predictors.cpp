// Predictor properties, JSON round trips and rejections, features, probe statistics.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sparsebudget/predictor.hpp"
#include "sparsebudget/probe.hpp"

namespace sb = sparsebudget;

namespace {

std::vector<std::unique_ptr<sb::Predictor>> AllBuiltins() {
  std::vector<std::unique_ptr<sb::Predictor>> v;
  v.push_back(sb::MakeFixedFraction(0.2));
  v.push_back(sb::MakeFixedBlocks(7));
  v.push_back(sb::MakeLengthLaw());
  v.push_back(sb::MakeLengthLaw(3.0, 0.8));
  v.push_back(
      sb::MakeTaskLengthLaw({{"single_qa", 4.0, 0.5, 0.02}, {"multi_hop", 4.0, 0.7, 0.1}}, {"*", 12.8, 0.5, 0.05}));
  sb::LinearModel lm;
  lm.terms = {"log_length", "task:multi_hop", "log_length*task:multi_hop", "entropy", "log:probe_blocks_90"};
  lm.weights = {0.5, 0.3, 0.01, 0.1, 0.2};
  lm.impute = {7.0, 0.2, 1.5, 1.0, 2.0};
  lm.intercept = -1.7;
  lm.quantile = 0.9;
  v.push_back(std::move(sb::MakeLinear(lm)).value());
  v.push_back(sb::MakeProbe(90, 1.5, 1.0, 0.5));
  sb::TableModel tm;
  tm.length_edges = {1448, 2896, 5793};
  tm.bucket_feature = "entropy";
  tm.feature_edges = {1.0};
  tm.cells = {
      {"single_qa", 0, 0, 0.25}, {"single_qa", 0, 1, 0.5}, {"single_qa", 3, -1, 0.05}, {"multi_qa", 2, 0, 0.125}};
  tm.default_fraction = 0.75;
  v.push_back(std::move(sb::MakeTable(tm)).value());
  std::vector<std::unique_ptr<sb::Predictor>> members;
  members.push_back(sb::MakeLengthLaw());
  members.push_back(sb::MakeFixedFraction(0.05));
  v.push_back(sb::MakeMax(std::move(members)));
  sb::BudgetLimits lim;
  lim.min_blocks = 4;
  lim.max_fraction = 0.5;
  v.push_back(sb::MakeClamp(sb::MakeLengthLaw(20.0, 0.6), lim));
  // Limits on a plain predictor too.
  auto law = sb::MakeLengthLaw(12.8, 0.5);
  sb::BudgetLimits l2;
  l2.scale = 1.7;
  l2.min_fraction = 0.03;
  l2.max_blocks = 64;
  l2.sink_blocks = 2;
  l2.local_blocks = 3;
  law->set_limits(l2);
  v.push_back(std::move(law));
  return v;
}

std::vector<sb::RequestFeatures> RandomFeatures(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const char* tasks[] = {"single_qa", "multi_qa", "multi_hop", "aggregation", "unknown", "novel_task"};
  std::vector<sb::RequestFeatures> v;
  for (int i = 0; i < n; ++i) {
    sb::RequestFeatures f;
    f.context_length = 1 + static_cast<int64_t>(std::exp(u(rng) * std::log(200000.0)));
    f.block_size = (i % 3 == 0) ? 16 : 64;
    f.task = tasks[rng() % 6];
    if (u(rng) < 0.7) f.entropy = 3 * u(rng);
    if (u(rng) < 0.7) f.top1_prob = u(rng);
    if (u(rng) < 0.7) f.probe_blocks_90 = 1 + 40 * u(rng);
    if (u(rng) < 0.5) f.probe_blocks_50 = 1 + 10 * u(rng);
    v.push_back(f);
  }
  return v;
}

}  // namespace

TEST(Predictors, FiniteAndWithinClamps) {
  const auto feats = RandomFeatures(400, 1);
  for (const auto& p : AllBuiltins()) {
    for (const auto& f : feats) {
      auto pr = p->Predict(f);
      ASSERT_TRUE(pr.ok()) << p->type() << ": " << pr.status().ToString();
      const int64_t nb = f.causal_blocks();
      SCOPED_TRACE(p->ToJson() + " L=" + std::to_string(f.context_length));
      EXPECT_TRUE(std::isfinite(pr->fraction));
      EXPECT_EQ(pr->budget.mode, sb::BudgetMode::kFraction);
      EXPECT_GE(pr->total_blocks, std::min<int64_t>(nb, 1));
      EXPECT_LE(pr->total_blocks, nb);
      EXPECT_EQ(pr->total_blocks, sb::ResolveBudget(pr->budget, nb).total_blocks);
      EXPECT_TRUE(sb::ValidateBudget(pr->budget).ok());
      const auto& l = p->limits();
      EXPECT_GE(pr->budget.fraction, l.min_fraction);
      EXPECT_LE(pr->budget.fraction, l.max_fraction);
      if (l.max_blocks > 0) {
        EXPECT_LE(pr->total_blocks, std::max<int64_t>(l.max_blocks, sb::ForcedBlocks(pr->budget, nb)));
      }
      if (l.min_blocks > 0) {
        EXPECT_GE(pr->total_blocks, std::min<int64_t>(l.min_blocks, nb));
      }
    }
  }
}

TEST(Predictors, MonotoneInLengthWhereDeclared) {
  int declared = 0;
  for (const auto& p : AllBuiltins()) {
    if (!p->MonotoneInLength()) continue;
    ++declared;
    for (const char* task : {"single_qa", "multi_hop", "other"}) {
      sb::RequestFeatures f;
      f.task = task;
      f.block_size = 64;
      double prev = -1;
      for (int64_t L = 64; L <= 1 << 18; L = L * 5 / 4 + 1) {
        f.context_length = L;
        auto pr = p->Predict(f);
        ASSERT_TRUE(pr.ok());
        const double blocks = pr->estimate_blocks * p->limits().scale;
        EXPECT_GE(blocks, prev - 1e-9) << p->ToJson() << " L=" << L;
        prev = blocks;
      }
    }
  }
  EXPECT_GE(declared, 5);
}

TEST(Predictors, ClampIsReported) {
  auto p = sb::MakeFixedFraction(0.9);
  sb::BudgetLimits l;
  l.max_fraction = 0.5;
  p->set_limits(l);
  sb::RequestFeatures f;
  f.context_length = 64 * 100;
  auto pr = p->Predict(f);
  ASSERT_TRUE(pr.ok());
  EXPECT_TRUE(pr->clamped);
  EXPECT_EQ(pr->total_blocks, 50);
  auto q = sb::MakeFixedFraction(0.3);
  auto pq = q->Predict(f);
  EXPECT_FALSE(pq->clamped);
  EXPECT_EQ(pq->total_blocks, 30);
}

TEST(Predictors, LengthLawDefaultPrior) {
  // 12.8 * sqrt(L) tokens: L = 65536 -> 3276.8 tokens -> 51.2 blocks -> 52 blocks kept.
  auto p = sb::MakeLengthLaw();
  sb::RequestFeatures f;
  f.context_length = 65536;
  auto pr = p->Predict(f);
  ASSERT_TRUE(pr.ok());
  EXPECT_NEAR(pr->estimate_blocks, 51.2, 1e-9);
  EXPECT_EQ(pr->total_blocks, 52);
}

TEST(Predictors, UnknownFeatureIsExplicitFallback) {
  auto p = sb::MakeProbe(90, 1.0, 0.0, 0.5);
  sb::RequestFeatures f;
  f.context_length = 6400;
  auto pr = p->Predict(f);
  ASSERT_TRUE(pr.ok());
  EXPECT_TRUE(pr->fallback);
  EXPECT_EQ(pr->total_blocks, 50);
  f.probe_blocks_90 = 7.2;
  pr = p->Predict(f);
  EXPECT_FALSE(pr->fallback);
  EXPECT_EQ(pr->total_blocks, 8);
}

TEST(Predictors, JsonRoundTripExact) {
  const auto feats = RandomFeatures(100, 2);
  for (const auto& p : AllBuiltins()) {
    const std::string j1 = p->ToJson();
    auto q = sb::PredictorFromJson(j1);
    ASSERT_TRUE(q.ok()) << j1 << "\n" << q.status().ToString();
    EXPECT_EQ((*q)->ToJson(), j1);
    EXPECT_EQ((*q)->type(), p->type());
    for (const auto& f : feats) {
      auto a = p->Predict(f);
      auto b = (*q)->Predict(f);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(a->total_blocks, b->total_blocks);
      EXPECT_EQ(a->budget.fraction, b->budget.fraction);  // bit-exact
    }
    auto c = p->Clone();
    EXPECT_EQ(c->ToJson(), j1);
  }
}

TEST(Predictors, BadJsonNamesTheKey) {
  struct Case {
    const char* json;
    const char* needle;
  };
  const Case cases[] = {
      {R"({"schema_version":1,"type":"fixed","fraction":0.2,"fractoin":0.3})", "fractoin"},
      {R"({"schema_version":1,"type":"fixed","fraction":"0.2"})", "fraction"},
      {R"({"schema_version":1,"type":"fixed"})", "fraction"},
      {R"({"schema_version":2,"type":"fixed","fraction":0.2})", "schema_version"},
      {R"({"type":"fixed","fraction":0.2})", "schema_version"},
      {R"({"schema_version":1,"type":"nosuch"})", "nosuch"},
      {R"({"schema_version":1,"fraction":0.2})", "type"},
      {R"({"schema_version":1,"type":"length_law","c":-1})", "'c'"},
      {R"({"schema_version":1,"type":"length_law","a":null})", "'a'"},
      {R"({"schema_version":1,"type":"length_law","max_fraction":2})", "max_fraction"},
      {R"({"schema_version":1,"type":"length_law","sink_blocks":1.5})", "sink_blocks"},
      {R"({"schema_version":1,"type":"linear","terms":["a"],"weights":[1,2],"impute":[0],"intercept":0})", "weights"},
      {R"({"schema_version":1,"type":"linear","terms":["a"],"weights":[1],"impute":[0]})", "intercept"},
      {R"({"schema_version":1,"type":"probe","mass":80})", "mass"},
      {R"({"schema_version":1,"type":"table","length_edges":[2,1],"cells":[]})", "length_edges"},
      {R"({"schema_version":1,"type":"table","length_edges":[],"cells":[{"task":"x","length_bucket":0,"fraction":0.1,"extra":1}]})",
       "extra"},
      {R"({"schema_version":1,"type":"max","members":[{"schema_version":1,"type":"fixed","blocks":0}]})", "blocks"},
      {R"({"schema_version":1,"type":"clamp","member":{"schema_version":1,"type":"length_law","zz":1}})", "zz"},
      {R"({"schema_version":1,"type":"task_length_law","laws":[{"task":"a","c":1}],"fallback":{"c":1,"a":0.5}})",
       "'a'"},
      {R"([1,2])", "object"},
      {R"({"schema_version":1,"type":"fixed",)", "JSON"},
  };
  for (const auto& c : cases) {
    auto p = sb::PredictorFromJson(c.json);
    ASSERT_FALSE(p.ok()) << c.json;
    EXPECT_NE(p.status().message().find(c.needle), std::string::npos) << c.json << " -> " << p.status().message();
  }
}

TEST(Predictors, RegistryAcceptsCustomTypes) {
  class Half : public sb::Predictor {
   public:
    std::string type() const override { return "half_test"; }
    std::string ToJson() const override { return R"({"schema_version":1,"type":"half_test"})"; }
    std::unique_ptr<sb::Predictor> Clone() const override { return std::make_unique<Half>(*this); }
    sb::Expected<Estimate> EstimateBlocks(const sb::RequestFeatures& f) const override {
      return Estimate{0.5 * static_cast<double>(f.causal_blocks()), false};
    }
  };
  ASSERT_TRUE(
      sb::RegisterPredictor("half_test", [](const std::string&) -> sb::Expected<std::unique_ptr<sb::Predictor>> {
        return std::unique_ptr<sb::Predictor>(std::make_unique<Half>());
      }).ok());
  EXPECT_FALSE(sb::RegisterPredictor("fixed", [](const std::string&) -> sb::Expected<std::unique_ptr<sb::Predictor>> {
                 return sb::Status(sb::StatusCode::kInternal, "x");
               }).ok());
  auto p = sb::PredictorFromJson(R"({"schema_version":1,"type":"half_test"})");
  ASSERT_TRUE(p.ok());
  sb::RequestFeatures f;
  f.context_length = 6400;
  EXPECT_EQ((*p)->Predict(f)->total_blocks, 50);
  // A custom predictor can be a member of a combinator.
  auto m = sb::PredictorFromJson(
      R"({"schema_version":1,"type":"max","members":[{"schema_version":1,"type":"half_test"},{"schema_version":1,"type":"fixed","fraction":0.1}]})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->Predict(f)->total_blocks, 50);
}

TEST(Predictors, ConcurrentPredictIsConsistent) {
  const auto preds = AllBuiltins();
  const auto feats = RandomFeatures(200, 3);
  std::vector<int64_t> ref;
  for (const auto& p : preds)
    for (const auto& f : feats) ref.push_back(p->Predict(f)->total_blocks);
  std::vector<std::thread> th;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    th.emplace_back([&, t] {
      size_t k = 0;
      for (const auto& p : preds)
        for (const auto& f : feats) bad[static_cast<size_t>(t)] += p->Predict(f)->total_blocks != ref[k++];
    });
  for (auto& x : th) x.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

TEST(Predictors, InvalidFeaturesRejected) {
  auto p = sb::MakeLengthLaw();
  sb::RequestFeatures f;
  f.context_length = 0;
  auto pr = p->Predict(f);
  ASSERT_FALSE(pr.ok());
  EXPECT_NE(pr.status().message().find("context_length"), std::string::npos);
  f.context_length = 100;
  f.top1_prob = 1.5;
  pr = p->Predict(f);
  ASSERT_FALSE(pr.ok());
  EXPECT_NE(pr.status().message().find("top1_prob"), std::string::npos);
}

TEST(Features, JsonRoundTripAndUnknownKeys) {
  for (const auto& f : RandomFeatures(50, 4)) {
    const std::string j = sb::FeaturesToJson(f);
    auto g = sb::FeaturesFromJson(j);
    ASSERT_TRUE(g.ok()) << j << g.status().ToString();
    EXPECT_EQ(sb::FeaturesToJson(*g), j);
  }
  auto bad = sb::FeaturesFromJson(R"({"context_length": 100, "entropyy": 1})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("entropyy"), std::string::npos);
  auto nul = sb::FeaturesFromJson(R"({"context_length": 100, "entropy": null})");
  ASSERT_TRUE(nul.ok());
  EXPECT_FALSE(nul->entropy.has_value());
  EXPECT_FALSE(nul->Get("entropy").has_value());
  EXPECT_NEAR(*nul->Get("log_length"), std::log(100.0), 1e-12);
  EXPECT_EQ(*nul->Get("task:unknown"), 1.0);
}

TEST(Probe, UniformAndPeakedScores) {
  auto u = sb::ProbeStatsFromScores(std::vector<double>(10, 0.0), 1.0);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->blocks_50, 5);
  EXPECT_EQ(u->blocks_90, 9);
  EXPECT_EQ(u->blocks_99, 10);
  EXPECT_NEAR(u->entropy, std::log(10.0), 1e-12);
  EXPECT_NEAR(u->top5_mass, 0.1, 1e-12);  // ceil(0.05 * 10) = 1 block
  // One dominant block: mass ~1 in block 3.
  std::vector<double> s(40, 0.0);
  s[3] = 100.0;
  auto p = sb::ProbeStatsFromScores(s, 1.0);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->blocks_50, 1);
  EXPECT_EQ(p->blocks_99, 1);
  EXPECT_NEAR(p->top5_mass, 1.0, 1e-9);  // 2 blocks
  EXPECT_LT(p->entropy, 1e-6);
  // Scale divides by rows: scores 2x with scale/2 give the same statistics.
  std::vector<double> a = {1, 2, 3, 4, 5}, b = {2, 4, 6, 8, 10};
  auto sa = sb::ProbeStatsFromScores(a, 1.0), sb2 = sb::ProbeStatsFromScores(b, 0.5);
  EXPECT_NEAR(sa->entropy, sb2->entropy, 1e-12);
  EXPECT_EQ(sa->blocks_90, sb2->blocks_90);
  EXPECT_FALSE(sb::ProbeStatsFromScores({}, 1.0).ok());
  EXPECT_FALSE(sb::ProbeStatsFromScores(a, 0.0).ok());
}

TEST(Probe, FromSummariesMatchesScores) {
  const int32_t hkv = 2, group = 3, d = 32, B = 16;
  const int64_t L = 16 * 9 + 5;  // partial last block
  std::mt19937 rng(7);
  std::normal_distribution<float> n01(0, 1);
  std::vector<float> k(static_cast<size_t>(L * hkv * d)), v(k.size()), q(static_cast<size_t>(hkv * group * d));
  for (auto& x : k) x = n01(rng);
  for (auto& x : v) x = n01(rng);
  for (auto& x : q) x = 2.0f * n01(rng);
  sb::BlockSummaries::Config cfg;
  cfg.num_kv_heads = hkv;
  cfg.head_dim = d;
  cfg.block_size = B;
  cfg.max_tokens = L;
  auto s = sb::BlockSummaries::Create(cfg);
  ASSERT_TRUE(s.ok());
  sb::KVCacheView kv;
  kv.k = k.data();
  kv.v = v.data();
  kv.token_stride = hkv * d;
  kv.head_stride = d;
  ASSERT_TRUE(s->Append(kv, L).ok());
  auto st = sb::ProbeStatsFromSummaries(*s, q.data(), d, hkv * group);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  const int64_t nb = (L + B - 1) / B;
  EXPECT_EQ(st->num_blocks, nb);
  // Reference from raw keys.
  double e = 0, b90 = 0;
  for (int32_t h = 0; h < hkv; ++h) {
    std::vector<double> scores(static_cast<size_t>(nb), 0.0);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t t0 = j * B, t1 = std::min<int64_t>(L, t0 + B);
      for (int32_t g = 0; g < group; ++g)
        for (int64_t t = t0; t < t1; ++t)
          for (int32_t i = 0; i < d; ++i)
            scores[static_cast<size_t>(j)] += static_cast<double>(q[static_cast<size_t>((h * group + g) * d + i)]) *
                                              k[static_cast<size_t>((t * hkv + h) * d + i)] /
                                              static_cast<double>(t1 - t0);
    }
    auto r = sb::ProbeStatsFromScores(scores, 1.0 / std::sqrt(double(d)) / group);
    e += r->entropy / hkv;
    b90 += r->blocks_90 / hkv;
  }
  EXPECT_NEAR(st->entropy, e, 1e-4);
  EXPECT_NEAR(st->blocks_90, b90, 1e-9);
  sb::RequestFeatures f;
  sb::SetProbeFeatures(*st, &f);
  EXPECT_EQ(*f.probe_blocks_90, st->blocks_90);
}

// Float64 reference of the logit features: p_i = exp(x_i) / sum exp(x_j), computed naively in
// long double (fine for the moderate ranges used here).
namespace {
void LogitReference(const std::vector<float>& x, double* entropy, double* top1) {
  long double mx = -INFINITY;
  for (float v : x) mx = std::max<long double>(mx, v);
  long double z = 0;
  for (float v : x) z += std::exp(static_cast<long double>(v) - mx);
  long double e = 0, best = 0;
  for (float v : x) {
    const long double p = std::exp(static_cast<long double>(v) - mx) / z;
    if (p > 0) e -= p * std::log(p);
    best = std::max(best, p);
  }
  *entropy = static_cast<double>(e);
  *top1 = static_cast<double>(best);
}
}  // namespace

TEST(LogitStats, MatchesFloat64ReferenceOnRandomRows) {
  std::mt19937 rng(11);
  int cases = 0;
  for (int64_t n : {1, 2, 3, 7, 16, 17, 100, 1000, 4097, 32000}) {
    for (double spread : {0.01, 1.0, 5.0, 30.0}) {
      std::normal_distribution<float> nd(3.0f, static_cast<float>(spread));
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = nd(rng);
      auto st = sb::LogitStatsFromLogits(x.data(), n);
      ASSERT_TRUE(st.ok()) << st.status().ToString();
      double e = 0, t = 0;
      LogitReference(x, &e, &t);
      EXPECT_NEAR(st->entropy, e, 1e-10 * std::max(1.0, e)) << "n " << n << " spread " << spread;
      EXPECT_NEAR(st->top1_prob, t, 1e-12) << "n " << n << " spread " << spread;
      EXPECT_GE(st->entropy, 0.0);
      EXPECT_LE(st->entropy, std::log(static_cast<double>(n)) + 1e-12);
      ++cases;
    }
  }
  std::printf("LogitStats: %d random rows vs long-double reference\n", cases);
}

TEST(LogitStats, ExtremesAndBadInput) {
  // Huge logits do not overflow (shifted by the max); one-hot gives entropy 0, top1 1.
  std::vector<float> big = {3e38f, -3e38f, 0.0f};
  auto b = sb::LogitStatsFromLogits(big.data(), 3);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->top1_prob, 1.0);
  EXPECT_EQ(b->entropy, 0.0);
  // -inf logits carry no mass.
  std::vector<float> m = {1.0f, -INFINITY, 1.0f};
  auto mi = sb::LogitStatsFromLogits(m.data(), 3);
  ASSERT_TRUE(mi.ok());
  EXPECT_NEAR(mi->entropy, std::log(2.0), 1e-15);
  EXPECT_NEAR(mi->top1_prob, 0.5, 1e-15);
  // Uniform: entropy ln n.
  std::vector<float> u(50000, -7.25f);
  auto un = sb::LogitStatsFromLogits(u.data(), 50000);
  EXPECT_NEAR(un->entropy, std::log(50000.0), 1e-9);
  std::vector<float> nan = {0.0f, NAN};
  auto bn = sb::LogitStatsFromLogits(nan.data(), 2);
  ASSERT_FALSE(bn.ok());
  EXPECT_NE(bn.status().message().find("logits[1]"), std::string::npos);
  std::vector<float> inf = {INFINITY};
  EXPECT_FALSE(sb::LogitStatsFromLogits(inf.data(), 1).ok());
  std::vector<float> ninf = {-INFINITY, -INFINITY};
  EXPECT_FALSE(sb::LogitStatsFromLogits(ninf.data(), 2).ok());
  EXPECT_FALSE(sb::LogitStatsFromLogits(nullptr, 3).ok());
  EXPECT_FALSE(sb::LogitStatsFromLogits(u.data(), 0).ok());
  sb::RequestFeatures f;
  sb::SetLogitFeatures(*mi, &f);
  EXPECT_EQ(*f.entropy, mi->entropy);
  EXPECT_EQ(*f.top1_prob, mi->top1_prob);
}

TEST(Probe, FromLayersIsTheMeanOverLayersAndHeads) {
  const int32_t hkv = 2, group = 2, d = 16, B = 16, layers = 3;
  const int64_t L = 16 * 5 + 3;
  std::mt19937 rng(5);
  std::normal_distribution<float> n01(0, 1);
  std::vector<sb::BlockSummaries> sums;
  std::vector<std::vector<float>> qs;
  std::vector<float> k(static_cast<size_t>(L * hkv * d));
  for (int l = 0; l < layers; ++l) {
    for (auto& x : k) x = n01(rng);
    sb::BlockSummaries::Config cfg;
    cfg.num_kv_heads = hkv;
    cfg.head_dim = d;
    cfg.block_size = B;
    cfg.max_tokens = L;
    sums.push_back(std::move(*sb::BlockSummaries::Create(cfg)));
    sb::KVCacheView kv;
    kv.k = kv.v = k.data();
    kv.token_stride = hkv * d;
    kv.head_stride = d;
    ASSERT_TRUE(sums.back().Append(kv, L).ok());
    qs.emplace_back(static_cast<size_t>(hkv * group * d));
    for (auto& x : qs.back()) x = 3.0f * n01(rng);
  }
  std::vector<const sb::BlockSummaries*> sp;
  std::vector<const float*> qp;
  double b50 = 0, b90 = 0, b99 = 0, ent = 0, top5 = 0;
  for (int l = 0; l < layers; ++l) {
    sp.push_back(&sums[static_cast<size_t>(l)]);
    qp.push_back(qs[static_cast<size_t>(l)].data());
    auto one = sb::ProbeStatsFromSummaries(sums[static_cast<size_t>(l)], qp.back(), d, hkv * group);
    ASSERT_TRUE(one.ok());
    b50 += one->blocks_50 / layers, b90 += one->blocks_90 / layers, b99 += one->blocks_99 / layers;
    ent += one->entropy / layers, top5 += one->top5_mass / layers;
  }
  auto all = sb::ProbeStatsFromLayers(sp.data(), qp.data(), layers, d, hkv * group);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_NEAR(all->blocks_50, b50, 1e-12);
  EXPECT_NEAR(all->blocks_90, b90, 1e-12);
  EXPECT_NEAR(all->blocks_99, b99, 1e-12);
  EXPECT_NEAR(all->entropy, ent, 1e-12);
  EXPECT_NEAR(all->top5_mass, top5, 1e-12);
  EXPECT_EQ(all->num_blocks, (L + B - 1) / B);
  EXPECT_FALSE(sb::ProbeStatsFromLayers(sp.data(), qp.data(), 0, d, hkv * group).ok());
  sp[1] = nullptr;
  auto bad = sb::ProbeStatsFromLayers(sp.data(), qp.data(), layers, d, hkv * group);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("layer 1"), std::string::npos);
}
