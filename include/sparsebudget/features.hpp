/// @file
/// sparsebudget/features.hpp - what a predictor sees about one request.
///
/// Every value a caller may not know is a std::optional: unknown is explicit, never a silent zero.
/// Predictors say what they do with an unknown value they need (see docs/predictors.md): most fall
/// back to a conservative budget and report it in Prediction::fallback.
///
/// Cost and threading: plain values; copying costs a few small allocations (task name, maps).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "sparsebudget/status.hpp"

namespace sparsebudget {

/// Built-in task classes. The set is open: any non-empty name is accepted.
inline constexpr const char* kTaskSingleQa = "single_qa";
inline constexpr const char* kTaskMultiQa = "multi_qa";
inline constexpr const char* kTaskMultiHop = "multi_hop";
inline constexpr const char* kTaskAggregation = "aggregation";
inline constexpr const char* kTaskUnknown = "unknown";

struct RequestFeatures {
  int64_t context_length = 0;  ///< tokens in the context, >= 1
  int32_t block_size = 64;     ///< kernel block size in tokens, >= 1
  std::optional<double> expected_output_length;  ///< tokens, >= 0
  std::string task = kTaskUnknown;               ///< task class name
  /// Optional probabilities over task classes (each in [0, 1]); empty = only `task` is known.
  std::map<std::string, double> task_probs;
  /// Uncertainty of the model's next-token distribution at the end of prefill.
  std::optional<double> entropy;    ///< nats, >= 0
  std::optional<double> top1_prob;  ///< in [0, 1]
  /// Attention probe statistics (probe.hpp): blocks needed for 50/90/99% of the estimated block
  /// mass (fractional when averaged over heads), entropy of the block mass, top-5%-block mass.
  std::optional<double> probe_blocks_50;
  std::optional<double> probe_blocks_90;
  std::optional<double> probe_blocks_99;
  std::optional<double> probe_entropy;
  std::optional<double> probe_top5_mass;
  /// Any other numeric feature by name (e.g. "answer_length" from traces).
  std::map<std::string, double> extra;

  /// ceil(context_length / block_size): the causal blocks of the last query (0 if invalid).
  int64_t causal_blocks() const noexcept;

  /// A numeric feature by name, or nullopt when unknown / not a feature name. Names:
  ///   context_length, log_length (natural log of context_length), causal_blocks,
  ///   expected_output_length, entropy, top1_prob, probe_blocks_50, probe_blocks_90,
  ///   probe_blocks_99, probe_entropy, probe_top5_mass, any key of `extra`,
  ///   "task:NAME" (1 if task == NAME, or task_probs[NAME] when task_probs is not empty),
  ///   "log:NAME" (natural log of NAME, floored at 1e-6).
  std::optional<double> Get(std::string_view name) const;
};

/// Checks ranges (names the bad field). O(features).
Status ValidateFeatures(const RequestFeatures& f);

/// JSON object <-> features. Keys: context_length (required), block_size, task, task_probs,
/// expected_output_length, entropy, top1_prob, probe_blocks_50/90/99, probe_entropy,
/// probe_top5_mass (numbers or null), and "extra": {name: number}. Unknown keys are rejected,
/// naming the key. Round trip is exact.
Expected<RequestFeatures> FeaturesFromJson(const std::string& json_text);
std::string FeaturesToJson(const RequestFeatures& f);

}  ///< namespace sparsebudget
