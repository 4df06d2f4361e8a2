// Block-sparse attention on a generated KV cache at several budgets: error against dense
// attention and time. Decode (one query), 32 query heads sharing 8 kv heads, head_dim 128,
// fp16 K/V, as in a Llama-style 8B model.
//
// The cache is not pure noise: a few "relevant" tokens per head are aligned with the query,
// as in retrieval, so a good selection keeps them and a small budget stays accurate.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "sparsebudget/sparsebudget.hpp"

using namespace sparsebudget;

namespace {

uint16_t ToHalf(float f) {  // round-to-nearest for the demo's data (normal range only)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int e = static_cast<int>((x >> 23) & 0xff) - 112;
  if (e <= 0) return static_cast<uint16_t>(sign);
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  const uint32_t m = (x & 0x7fffffu) + 0x1000u;
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(e) << 10) + (m >> 13)));
}

double Seconds(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t L = argc > 1 ? std::atoll(argv[1]) : 32768;
  const int32_t hq = 32, hkv = 8, D = 128, B = 64;
  std::mt19937_64 rng(42);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(hq) * D);
  for (auto& x : q) x = nd(rng);
  // K/V token-major [t][h][d] in fp16, with 16 planted tokens per kv head that match the group's queries.
  std::vector<uint16_t> k(static_cast<size_t>(L) * hkv * D), v(k.size());
  std::uniform_int_distribution<int64_t> pos(0, L - 1);
  for (int64_t t = 0; t < L; ++t)
    for (int32_t h = 0; h < hkv; ++h)
      for (int32_t d = 0; d < D; ++d) {
        const size_t i = (static_cast<size_t>(t) * hkv + h) * D + d;
        k[i] = ToHalf(nd(rng));
        v[i] = ToHalf(nd(rng));
      }
  for (int32_t h = 0; h < hkv; ++h)
    for (int n = 0; n < 16; ++n) {
      const int64_t t = pos(rng);
      for (int32_t d = 0; d < D; ++d) {
        float s = 0;
        for (int32_t g = 0; g < hq / hkv; ++g) s += q[static_cast<size_t>(h * (hq / hkv) + g) * D + d];
        k[(static_cast<size_t>(t) * hkv + h) * D + d] = ToHalf(0.9f * s);
      }
    }
  KVCacheView kv{k.data(), v.data(), DType::kF16, hkv * D, D};
  QueryView qv{q.data(), hq * D, D};

  BlockSummaries::Config sc{hkv, D, B, L, true, true};
  auto summaries = BlockSummaries::Create(sc);
  if (!summaries.ok()) return std::fprintf(stderr, "%s\n", summaries.status().ToString().c_str()), 1;
  auto t0 = std::chrono::steady_clock::now();
  if (Status st = summaries->Append(kv, L); !st.ok()) return std::fprintf(stderr, "%s\n", st.ToString().c_str()), 1;
  const double t_sum = Seconds(t0);

  ThreadPool pool(2);
  auto run = [&](Budget budget, Scoring scoring, std::vector<float>* out, SelectionStats* stats) -> double {
    AttentionParams p;
    p.shape = {hq, hkv, D, B, L, 1};
    p.kv_dtype = DType::kF16;
    p.scoring = scoring;
    p.budget = budget;
    AttentionPlan plan;
    if (Status st = MakePlan(p, &plan); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      std::exit(1);
    }
    std::vector<unsigned char> ws(plan.workspace_bytes);
    out->assign(q.size(), 0.0f);
    OutputView ov{out->data(), hq * D, D};
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      auto t = std::chrono::steady_clock::now();
      Status st = SparseAttention(plan, qv, kv, &*summaries, ov, ws.data(), &pool, stats);
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.ToString().c_str());
        std::exit(1);
      }
      best = std::min(best, Seconds(t));
    }
    return best;
  };

  std::printf(
      "sparsebudget %s, ISA %s, decode: L=%lld, %d q heads / %d kv heads, head_dim %d, fp16 K/V, block %d, 2 threads\n",
      Version(), IsaName(ActiveIsa()), static_cast<long long>(L), hq, hkv, D, B);
  std::printf("block summaries built in %.2f ms (%.1f MiB)\n\n", t_sum * 1e3,
              static_cast<double>(summaries->bytes()) / (1 << 20));
  std::vector<float> dense, out;
  SelectionStats stats;
  const double t_dense = run(Budget::Dense(), Scoring::kBound, &dense, &stats);
  std::printf("%-8s %-9s %9s %10s %9s %10s\n", "scoring", "budget", "kept", "rel.L2 err", "time ms", "speedup");
  std::printf("%-8s %-9s %8.1f%% %10.2e %9.3f %9.2fx\n", "-", "dense", 100.0, 0.0, t_dense * 1e3, 1.0);
  for (Scoring scoring : {Scoring::kMean, Scoring::kBound}) {
    for (double f : {0.25, 0.10, 0.05, 0.02}) {
      const double t = run(Budget::Fraction(f), scoring, &out, &stats);
      double num = 0, den = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        num += (out[i] - dense[i]) * (out[i] - dense[i]);
        den += dense[i] * dense[i];
      }
      char label[16];
      std::snprintf(label, sizeof label, "%.0f%%", f * 100);
      std::printf("%-8s %-9s %8.1f%% %10.2e %9.3f %9.2fx\n", ScoringName(scoring), label,
                  100.0 * static_cast<double>(stats.kept_blocks) / static_cast<double>(stats.causal_blocks),
                  std::sqrt(num / den), t * 1e3, t_dense / t);
    }
  }
  return 0;
}
