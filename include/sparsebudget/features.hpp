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

/// @name Built-in task class names
/// The set is open: any non-empty name is accepted. kTaskUnknown is the default task.
///@{
inline constexpr const char* kTaskSingleQa = "single_qa";       ///< retrieve one fact
inline constexpr const char* kTaskMultiQa = "multi_qa";         ///< retrieve several facts at once
inline constexpr const char* kTaskMultiHop = "multi_hop";       ///< a chain of dependent lookups
inline constexpr const char* kTaskAggregation = "aggregation";  ///< collect all values of a key
inline constexpr const char* kTaskUnknown = "unknown";          ///< not known (the default)
///@}

/// What a predictor sees about one request; an unknown value is std::nullopt. Ranges are checked
/// by ValidateFeatures (Predictor::Predict calls it).
struct RequestFeatures {
  int64_t context_length = 0;                    ///< tokens in the context, >= 1
  int32_t block_size = 64;                       ///< kernel block size in tokens, >= 1
  std::optional<double> expected_output_length;  ///< tokens, >= 0
  std::string task = kTaskUnknown;               ///< task class name
  /// Optional probabilities over task classes (each in [0, 1]); empty = only `task` is known.
  std::map<std::string, double> task_probs;
  /// Uncertainty of the model's next-token distribution at the end of prefill.
  std::optional<double> entropy;    ///< nats, >= 0
  std::optional<double> top1_prob;  ///< in [0, 1]
  /// @name Attention probe statistics (probe.hpp)
  ///@{
  std::optional<double> probe_blocks_50;  ///< blocks for 50% of the mass, >= 0 (may be fractional)
  std::optional<double> probe_blocks_90;  ///< blocks for 90% of the mass, >= 0
  std::optional<double> probe_blocks_99;  ///< blocks for 99% of the mass, >= 0
  std::optional<double> probe_entropy;    ///< entropy of the block mass, nats
  std::optional<double> probe_top5_mass;  ///< mass of the heaviest 5% of blocks, in [0, 1]
  ///@}
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

/// Uncertainty of a next-token distribution p = softmax(logits): the `entropy` and `top1_prob`
/// features (docs/model.md: measured at the last prompt token, i.e. on the distribution of the
/// first answer token).
struct LogitStats {
  double entropy = 0.0;    ///< -sum_i p_i ln p_i, nats, in [0, ln n]
  double top1_prob = 0.0;  ///< max_i p_i, in [1/n, 1]
};

/// The one definition of the logit features, used by the model runner, the trace cross-check and
/// engines. Numerics: m = max_i x_i, Z = sum_i e^(x_i - m) and S = sum_i e^(x_i - m) (x_i - m)
/// accumulated in float64, then entropy = ln Z - S / Z and top1 = 1 / Z (no p_i ln p_i term can
/// underflow into NaN; matches a float64 softmax within ~1e-12 relative). -inf logits have mass 0.
/// Errors (kInvalidArgument naming the index / value): logits null with n > 0, n < 1, a NaN or
/// +inf logit, or no finite logit. O(n) (one float64 exp per element), allocates nothing,
/// thread-safe.
Expected<LogitStats> LogitStatsFromLogits(const float* logits, int64_t n);

/// Copies the statistics into features->entropy and features->top1_prob.
void SetLogitFeatures(const LogitStats& stats, RequestFeatures* features);

/// Checks ranges (names the bad field). O(features).
Status ValidateFeatures(const RequestFeatures& f);

/// JSON object <-> features. Keys: context_length (required), block_size, task, task_probs,
/// expected_output_length, entropy, top1_prob, probe_blocks_50/90/99, probe_entropy,
/// probe_top5_mass (numbers or null), and "extra": {name: number}. Unknown keys are rejected,
/// naming the key. Round trip is exact.
Expected<RequestFeatures> FeaturesFromJson(const std::string& json_text);
/// One compact JSON object: every key above, unknown values as null; task_probs and extra only
/// when not empty.
std::string FeaturesToJson(const RequestFeatures& f);

}  // namespace sparsebudget
