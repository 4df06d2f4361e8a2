// Synthetic traces with a known budget law (documented in docs/traces.md).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "calibration/internal.hpp"

namespace sparsebudget {

std::vector<SynthLaw> SynthLaws(int set) {
  if (set == 1)  // another world: other constants and exponents, for generalization checks
    return {{"single_qa", 9.0, 0.4, 0.95},
            {"multi_qa", 6.0, 0.6, 0.8},
            {"multi_hop", 2.0, 0.8, 0.7},
            {"aggregation", 20.0, 0.45, 0.85}};
  return {{"single_qa", 4.0, 0.5, 0.9},
          {"multi_qa", 12.8, 0.5, 0.85},
          {"multi_hop", 4.0, 0.7, 0.75},
          {"aggregation", 3.0, 0.75, 0.8}};
}

std::vector<TraceRecord> SynthesizeTraces(const SynthOptions& o) {
  static const int64_t kGrid[] = {2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128};
  const auto laws = SynthLaws(o.laws);
  detail::Rng rng(o.seed);
  std::vector<TraceRecord> out;
  const int64_t lmin = o.lengths.empty() ? 512 : *std::min_element(o.lengths.begin(), o.lengths.end());
  const int64_t lmax = o.lengths.empty() ? 8192 : *std::max_element(o.lengths.begin(), o.lengths.end());
  for (int64_t i = 0; i < o.count; ++i) {
    const SynthLaw& law = laws[rng.Below(laws.size())];
    int64_t L;
    if (o.continuous_lengths || o.lengths.empty()) {
      L = static_cast<int64_t>(
          std::llround(std::exp(std::log(static_cast<double>(lmin)) +
                                rng.Uniform() * std::log(static_cast<double>(lmax) / static_cast<double>(lmin)))));
    } else {
      L = o.lengths[rng.Below(o.lengths.size())];
    }
    const int32_t B = o.block_size;
    TraceRecord r;
    r.id = "synth-" + std::to_string(o.seed) + "-" + std::to_string(i);
    r.features.task = law.task;
    r.features.context_length = L;
    r.features.block_size = B;
    const int64_t nb = r.causal_blocks();
    // z = 0.6 u + 0.8 w: u is visible through the uncertainty features, w through the probe.
    const double u = rng.Normal(), w = rng.Normal(), v = rng.Normal();
    const double z = 0.6 * u + 0.8 * w;
    const double need_tokens = law.c * std::pow(static_cast<double>(L), law.a) * std::exp(o.noise * z);
    const double need_blocks = std::clamp(need_tokens / B, 1.0, static_cast<double>(nb));
    const int64_t need = std::min<int64_t>(nb, static_cast<int64_t>(std::ceil(need_blocks - 1e-9)));
    auto round6 = [](double x) { return std::round(x * 1e6) / 1e6; };
    r.features.entropy = round6(std::exp(0.2 + 0.6 * u + 0.2 * rng.Normal()));
    r.features.top1_prob = round6(1.0 / (1.0 + std::exp(0.9 * u - 0.5 + 0.3 * rng.Normal())));
    const double p90 =
        std::clamp(need_blocks * 0.8 * std::exp(0.25 * v - 0.35 * o.noise * 0.6 * u), 1.0, static_cast<double>(nb));
    r.features.probe_blocks_90 = round6(p90);
    r.features.probe_blocks_50 = round6(std::max(1.0, 0.35 * p90));
    r.features.probe_blocks_99 = round6(std::min(static_cast<double>(nb), 2.2 * p90));
    r.features.probe_entropy = round6(std::log(1.0 + 1.6 * p90));
    r.features.probe_top5_mass = round6(std::min(1.0, std::max(0.05, 1.0 - 0.9 * p90 / static_cast<double>(nb))));
    r.features.extra["answer_length"] = static_cast<double>(1 + rng.Below(4));
    r.dense_quality = rng.Uniform() < law.dense_accuracy ? 1.0 : 0.0;
    std::vector<int64_t> grid;
    if (o.fine_grid) {
      for (int64_t b = 1; b <= std::min<int64_t>(nb - 1, 512); ++b) grid.push_back(b);
      grid.push_back(nb);
    } else {
      for (int64_t g : kGrid)
        if (g < nb) grid.push_back(g);
      grid.push_back(nb);
    }
    // Self-check under sparsity from its own stream (the other fields do not depend on it):
    // a budget that keeps the dense answer is usually confident; one below the need is less so,
    // more the further below; later answer tokens can only lower the minimum.
    detail::Rng sc(o.seed * 0x2545F4914F6CDD1Dull + static_cast<uint64_t>(i));
    const double steps = r.features.extra["answer_length"];
    for (int64_t b : grid) {
      CurvePoint p;
      p.blocks = b;
      p.fraction = round6(static_cast<double>(b) / static_cast<double>(nb));
      // At or above the need: the dense answer. Below: usually wrong, sometimes lucky.
      const bool ok = b >= need || rng.Uniform() < o.lucky * static_cast<double>(b) / static_cast<double>(need);
      p.quality = ok ? r.dense_quality : 0.0;
      if (o.self_check) {
        const double below = std::log(std::max(1.0, need_blocks) / static_cast<double>(b));
        const double logit = b >= need ? 3.0 + 1.2 * sc.Normal() : 1.6 - 1.5 * std::max(0.0, below) + 1.4 * sc.Normal();
        const double t1 = 1.0 / (1.0 + std::exp(-logit));
        double mn = t1;
        for (int k = 1; k < static_cast<int>(steps); ++k)
          mn = std::min(mn, 1.0 / (1.0 + std::exp(-(logit + 0.8 + 1.0 * sc.Normal()))));
        p.top1_prob = round6(t1);
        p.min_top1_prob = std::min(*p.top1_prob, round6(mn));
      }
      r.curve.push_back(p);
    }
    r.oracle.blocks = MonotoneOracleBlocks(r);
    r.oracle.fraction = round6(static_cast<double>(r.oracle.blocks) / static_cast<double>(nb));
    r.oracle.criterion = "exact_match";
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace sparsebudget
