/// @file
/// sparsebudget/probe.hpp - attention probe statistics: how concentrated the last query's
/// estimated attention mass over key blocks is (self-estimated sparsity).
///
/// Mass definition (the same as the kernel's top-p estimate, attention.hpp): for block scores s_j
/// (one kv head, summed over `rows` query rows),
///   p_j = softmax_j(scale * s_j / rows)
/// over all causal blocks. From p:
///   blocks_X   = fewest blocks whose cumulative mass reaches X/100 (blocks taken by descending
///                mass, equal masses to the lower index), X in {50, 90, 99}
///   entropy    = -sum_j p_j ln p_j   (nats)
///   top5_mass  = mass of the ceil(0.05 * n) heaviest blocks
/// Non-finite scores are treated as -inf (mass 0); if no score is finite the mass is uniform.
/// The softmax is formed from score differences, so finite scores whose product with the scale
/// overflows a double (1e308 x 10) still get their exact masses.
///
/// Cost: O(n log n) for n blocks, one allocation of n doubles/ints per call. Thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "sparsebudget/attention.hpp"
#include "sparsebudget/features.hpp"
#include "sparsebudget/status.hpp"

namespace sparsebudget {

/// Concentration of the estimated block mass (definitions above).
struct ProbeStats {
  double blocks_50 = 0.0;  ///< fewest blocks reaching 50% of the mass, in [1, num_blocks]
  double blocks_90 = 0.0;  ///< the same for 90%
  double blocks_99 = 0.0;  ///< the same for 99%
  double entropy = 0.0;    ///< of the block mass, nats, in [0, ln num_blocks]
  double top5_mass = 0.0;  ///< mass of the ceil(5%) heaviest blocks, in (0, 1]
  int64_t num_blocks = 0;  ///< causal blocks scored
};

/// From the block scores of one head. `scale_over_rows` = scale / rows. Error on an empty list or
/// a non-finite / non-positive scale_over_rows.
Expected<ProbeStats> ProbeStatsFromScores(const std::vector<double>& scores,
                                          double scale_over_rows);

/// From the kernel's block summaries and the LAST query's rows, averaged over kv heads (each
/// statistic is the mean of the per-head values, so blocks_X may be fractional). Mean scoring:
///   s_j(h) = (sum over the group's query heads g of q_g) . key_sum(h, j) / block_count(j)
/// and rows = group = num_q_heads / num_kv_heads. Query head qh of the last query lives at
/// q + qh * q_head_stride (head_dim floats). scale = 0 means 1/sqrt(head_dim). Summaries must keep
/// mean sums and hold >= 1 token. O(heads x blocks x head_dim).
Expected<ProbeStats> ProbeStatsFromSummaries(const BlockSummaries& summaries, const float* q,
                                             int64_t q_head_stride, int32_t num_q_heads,
                                             float scale = 0.0f);

/// The probe features of the traces (docs/traces.md, docs/model.md, tools/train/make_traces.py):
/// ProbeStatsFromSummaries of every layer, each statistic averaged over the layers, which (every
/// layer having the same kv heads) is the mean over layers x kv heads. summaries[l] and
/// last_q[l] are layer l's summaries and last-query rows (q head qh at last_q[l] + qh *
/// q_head_stride). Every layer must hold the same number of tokens. The one definition used by
/// the model runner, the trace cross-check and engines (the PyTorch recorder mirrors it).
/// Errors: num_layers < 1, a null entry, layers of different lengths, or any error of
/// ProbeStatsFromSummaries (prefixed with the layer). O(layers x heads x blocks x head_dim);
/// allocates O(blocks) per layer. Thread-safe.
Expected<ProbeStats> ProbeStatsFromLayers(const BlockSummaries* const* summaries,
                                          const float* const* last_q, int32_t num_layers,
                                          int64_t q_head_stride, int32_t num_q_heads,
                                          float scale = 0.0f);

/// Copies the statistics into the probe_* fields of `features`.
void SetProbeFeatures(const ProbeStats& stats, RequestFeatures* features);

}  // namespace sparsebudget
