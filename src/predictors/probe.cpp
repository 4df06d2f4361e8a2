// Probe statistics: concentration of the estimated block mass of the last query.
#include "sparsebudget/probe.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "core/checked.hpp"

namespace sparsebudget {

Expected<ProbeStats> ProbeStatsFromScores(const std::vector<double>& scores, double scale_over_rows) {
  if (scores.empty()) return Status(StatusCode::kInvalidArgument, "probe: scores must not be empty");
  if (!(scale_over_rows > 0.0) || !std::isfinite(scale_over_rows))
    return Status(StatusCode::kInvalidArgument,
                  "probe: scale_over_rows must be finite and > 0, got " + std::to_string(scale_over_rows));
  const size_t n = scores.size();
  // Softmax of scores * scale_over_rows, formed as exp((s_j - s_max) * scale) so that scores whose
  // product with the scale overflows (1e308 x 10) keep their order: the difference of two finite
  // scores is finite or -inf (mass 0), never NaN, and the scale is > 0. Non-finite scores have no
  // mass (probe.hpp); if no score is finite the mass is uniform.
  std::vector<double> p(n, 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  for (double v : scores)
    if (std::isfinite(v) && v > mx) mx = v;
  if (!std::isfinite(mx)) {
    std::fill(p.begin(), p.end(), 1.0 / static_cast<double>(n));
  } else {
    double sum = 0.0;
    for (size_t j = 0; j < n; ++j) {
      p[j] = std::isfinite(scores[j]) ? std::exp((scores[j] - mx) * scale_over_rows) : 0.0;
      sum += p[j];
    }
    for (double& v : p) v /= sum;
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
  ProbeStats st;
  st.num_blocks = static_cast<int64_t>(n);
  const double targets[3] = {0.5, 0.9, 0.99};
  double* outs[3] = {&st.blocks_50, &st.blocks_90, &st.blocks_99};
  for (int t = 0; t < 3; ++t) {
    double cum = 0.0;
    size_t need = n;
    for (size_t i = 0; i < n; ++i) {
      cum += p[order[i]];
      // A relative slack of 1e-12 keeps "exactly reaches" stable under rounding.
      if (cum >= targets[t] - 1e-12) {
        need = i + 1;
        break;
      }
    }
    *outs[t] = static_cast<double>(need);
  }
  double ent = 0.0;
  for (double v : p)
    if (v > 0.0) ent -= v * std::log(v);
  st.entropy = ent;
  const size_t ntop = static_cast<size_t>(std::ceil(0.05 * static_cast<double>(n)));
  double top = 0.0;
  for (size_t i = 0; i < ntop && i < n; ++i) top += p[order[i]];
  st.top5_mass = top;
  return st;
}

Expected<ProbeStats> ProbeStatsFromSummaries(const BlockSummaries& s, const float* q, int64_t q_head_stride,
                                             int32_t num_q_heads, float scale) {
  const auto& c = s.config();
  if (!c.mean) return Status(StatusCode::kInvalidArgument, "probe: summaries must keep mean sums (config.mean)");
  if (q == nullptr) return Status(StatusCode::kInvalidArgument, "probe: q is null");
  if (num_q_heads < 1 || c.num_kv_heads < 1 || num_q_heads % c.num_kv_heads != 0)
    return Status(StatusCode::kInvalidArgument, "probe: num_q_heads " + std::to_string(num_q_heads) +
                                                    " must be a positive multiple of num_kv_heads " +
                                                    std::to_string(c.num_kv_heads));
  if (q_head_stride < c.head_dim && num_q_heads > 1)
    return Status(StatusCode::kInvalidArgument, "probe: q_head_stride " + std::to_string(q_head_stride) +
                                                    " must be >= head_dim " + std::to_string(c.head_dim));
  int64_t q_extent;
  if (!detail::CheckedExtent(num_q_heads, q_head_stride, c.head_dim, &q_extent) ||
      !detail::CheckedBytes(q_extent, sizeof(float), &q_extent))
    return Status(StatusCode::kOutOfRange, "probe: q_head_stride " + std::to_string(q_head_stride) + " x " +
                                               std::to_string(num_q_heads) + " heads overflows");
  const int64_t nb = s.num_blocks();
  if (nb < 1) return Status(StatusCode::kInvalidArgument, "probe: summaries hold no tokens");
  if (!(scale >= 0.0f) || !std::isfinite(scale))
    return Status(StatusCode::kInvalidArgument, "probe: scale must be finite and >= 0");
  const int32_t group = num_q_heads / c.num_kv_heads;
  const int32_t d = c.head_dim;
  const double sc = scale == 0.0f ? 1.0 / std::sqrt(static_cast<double>(d)) : static_cast<double>(scale);
  std::vector<double> qsum(static_cast<size_t>(d));
  std::vector<double> scores(static_cast<size_t>(nb));
  ProbeStats avg;
  avg.num_blocks = nb;
  for (int32_t h = 0; h < c.num_kv_heads; ++h) {
    std::fill(qsum.begin(), qsum.end(), 0.0);
    for (int32_t g = 0; g < group; ++g) {
      const float* row = q + static_cast<int64_t>(h * group + g) * q_head_stride;
      for (int32_t i = 0; i < d; ++i) qsum[static_cast<size_t>(i)] += static_cast<double>(row[i]);
    }
    for (int64_t j = 0; j < nb; ++j) {
      const float* ks = s.key_sum(h, j);
      double dot = 0.0;
      for (int32_t i = 0; i < d; ++i) dot += qsum[static_cast<size_t>(i)] * static_cast<double>(ks[i]);
      scores[static_cast<size_t>(j)] = dot / static_cast<double>(s.block_count(j));
    }
    auto st = ProbeStatsFromScores(scores, sc / static_cast<double>(group));
    if (!st.ok()) return st.status();
    avg.blocks_50 += st->blocks_50;
    avg.blocks_90 += st->blocks_90;
    avg.blocks_99 += st->blocks_99;
    avg.entropy += st->entropy;
    avg.top5_mass += st->top5_mass;
  }
  const double nh = static_cast<double>(c.num_kv_heads);
  avg.blocks_50 /= nh;
  avg.blocks_90 /= nh;
  avg.blocks_99 /= nh;
  avg.entropy /= nh;
  avg.top5_mass /= nh;
  return avg;
}

Expected<ProbeStats> ProbeStatsFromLayers(const BlockSummaries* const* summaries, const float* const* last_q,
                                          int32_t num_layers, int64_t q_head_stride, int32_t num_q_heads, float scale) {
  if (num_layers < 1)
    return Status(StatusCode::kInvalidArgument, "probe: num_layers must be >= 1, got " + std::to_string(num_layers));
  if (summaries == nullptr || last_q == nullptr)
    return Status(StatusCode::kInvalidArgument, "probe: summaries or last_q array is null");
  ProbeStats avg;
  for (int32_t l = 0; l < num_layers; ++l) {
    const std::string where = "probe: layer " + std::to_string(l) + ": ";
    if (summaries[l] == nullptr) return Status(StatusCode::kInvalidArgument, where + "summaries are null");
    if (summaries[l]->num_tokens() != summaries[0]->num_tokens())
      return Status(StatusCode::kInvalidArgument, where + "holds " + std::to_string(summaries[l]->num_tokens()) +
                                                      " tokens, layer 0 " + std::to_string(summaries[0]->num_tokens()));
    auto st = ProbeStatsFromSummaries(*summaries[l], last_q[l], q_head_stride, num_q_heads, scale);
    if (!st.ok()) return Status(st.status().code(), where + st.status().message());
    // Summed in layer order then divided once: the mean the trace generator takes.
    avg.blocks_50 += st->blocks_50;
    avg.blocks_90 += st->blocks_90;
    avg.blocks_99 += st->blocks_99;
    avg.entropy += st->entropy;
    avg.top5_mass += st->top5_mass;
    avg.num_blocks = st->num_blocks;
  }
  const double nl = static_cast<double>(num_layers);
  avg.blocks_50 /= nl;
  avg.blocks_90 /= nl;
  avg.blocks_99 /= nl;
  avg.entropy /= nl;
  avg.top5_mass /= nl;
  return avg;
}

void SetProbeFeatures(const ProbeStats& st, RequestFeatures* f) {
  f->probe_blocks_50 = st.blocks_50;
  f->probe_blocks_90 = st.blocks_90;
  f->probe_blocks_99 = st.blocks_99;
  f->probe_entropy = st.entropy;
  f->probe_top5_mass = st.top5_mass;
}

}  // namespace sparsebudget
