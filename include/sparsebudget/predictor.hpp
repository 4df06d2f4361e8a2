/// @file
/// sparsebudget/predictor.hpp - predictors: request features in, a Budget out.
///
/// Every predictor estimates a total number of kept blocks (sink + local + scored, budget.hpp's
/// counting rule) for the request, then the shared BudgetLimits turn that estimate into a
/// BudgetMode::kFraction budget:
///   total  = scale * estimate                          (scale is the calibration knob)
///   frac   = clamp(total / causal_blocks, min_fraction, max_fraction)
///   budget = Budget::Fraction(frac) with min_blocks / max_blocks / sink / local from the limits
/// and the kernel keeps ResolveBudget(budget, causal_blocks).total_blocks blocks. A prediction is
/// `clamped` when a limit (or ResolveBudget) changed the estimate.
///
/// Built-in types (JSON "type"; docs/predictors.md has every parameter):
///   fixed, length_law, task_length_law, linear, probe, table, max, clamp.
/// JSON files: {"schema_version": 1, "type": ..., parameters..., limits...}. Unknown, missing or
/// mistyped keys are rejected with a message naming the key. ToJson() round-trips exactly.
///
/// Threading: Predict and ToJson are const and thread-safe for every built-in (no mutable state);
/// custom predictors must keep that promise. The registry is thread-safe.
/// Cost: Predict is O(parameters) and allocates only for error messages (table/linear: O(cells)
/// or O(terms) lookups). Never throws.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparsebudget/budget.hpp"
#include "sparsebudget/features.hpp"
#include "sparsebudget/status.hpp"

namespace sparsebudget {

inline constexpr int kPredictorSchemaVersion = 1;

/// Applied by every predictor after its own estimate. JSON keys of the same names (all optional).
struct BudgetLimits {
  double scale = 1.0;         ///< > 0, multiplies the estimated total blocks
  double min_fraction = 0.0;  ///< in [0, 1]
  double max_fraction = 1.0;  ///< in [min_fraction, 1]
  int64_t min_blocks = 0;     ///< clamp on total blocks, 0 = none
  int64_t max_blocks = 0;     ///< clamp on total blocks, 0 = none, >= min_blocks
  int32_t sink_blocks = 1;
  int32_t local_blocks = 1;
};
Status ValidateLimits(const BudgetLimits& limits);

struct Prediction {
  Budget budget;                ///< mode kFraction (the kernel's input)
  double estimate_blocks = 0;   ///< the predictor's own estimate of total blocks, before limits
  int64_t causal_blocks = 0;    ///< of this request
  int64_t total_blocks = 0;     ///< ResolveBudget(budget, causal_blocks).total_blocks
  double fraction = 0;          ///< total_blocks / causal_blocks
  bool clamped = false;         ///< a limit or ResolveBudget changed the estimate
  bool fallback = false;        ///< a needed feature was unknown; the predictor's fallback was used
};

class Predictor {
 public:
  virtual ~Predictor() = default;

  /// Validates the features, estimates, applies the limits. Thread-safe.
  Expected<Prediction> Predict(const RequestFeatures& features) const;

  virtual std::string type() const = 0;
  /// Full JSON document (schema_version, type, parameters, limits).
  virtual std::string ToJson() const = 0;
  virtual std::unique_ptr<Predictor> Clone() const = 0;
  /// True if, features otherwise equal, the budget fraction's estimate in blocks never decreases
  /// with context length (tested as a property).
  virtual bool MonotoneInLength() const { return false; }

  const BudgetLimits& limits() const noexcept { return limits_; }
  void set_limits(const BudgetLimits& limits) { limits_ = limits; }

  /// The estimate of total blocks (> 0, finite) before limits; `fallback` set when the
  /// predictor used its fallback for an unknown feature. Called with validated features.
  struct Estimate {
    double blocks = 0;
    bool fallback = false;
  };
  virtual Expected<Estimate> EstimateBlocks(const RequestFeatures& features) const = 0;

 protected:
  BudgetLimits limits_;
};

/// Applies `limits` to an estimate for a request with `causal_blocks` blocks. O(1).
Prediction ApplyLimits(const BudgetLimits& limits, double estimate_blocks, int64_t causal_blocks);

/// ---- registry and JSON ---------------------------------------------------------------------
/// A factory receives the whole JSON document text of one predictor.
using PredictorFactory = std::function<Expected<std::unique_ptr<Predictor>>(const std::string& json)>;

/// Registers a type name (built-ins are registered already). Error if the name is taken or empty.
Status RegisterPredictor(const std::string& type, PredictorFactory factory);
/// Type names known to the registry, sorted.
std::vector<std::string> PredictorTypes();

/// Parses a predictor document (errors name the key, and "schema_version" must be 1).
Expected<std::unique_ptr<Predictor>> PredictorFromJson(const std::string& json_text);
/// Reads a file and parses it; errors name the file.
Expected<std::unique_ptr<Predictor>> LoadPredictor(const std::string& path);
Status SavePredictor(const Predictor& predictor, const std::string& path);

/// ---- built-ins, for programmatic use -------------------------------------------------------
/// fixed: estimate = fraction * causal_blocks, or `blocks` total blocks (exactly one of them).
std::unique_ptr<Predictor> MakeFixedFraction(double fraction);
std::unique_ptr<Predictor> MakeFixedBlocks(int64_t total_blocks);
/// length_law: estimate = c * L^a / block_size blocks (defaults: c = 12.8, a = 0.5).
std::unique_ptr<Predictor> MakeLengthLaw(double c = 12.8, double a = 0.5);

struct TaskLaw {
  std::string task;
  double c = 12.8;
  double a = 0.5;
  double floor_fraction = 0.0;  ///< per-task floor on the estimate, as a fraction of causal blocks
};
/// task_length_law: the law of the request's task, or `fallback` (task "*") for other tasks.
std::unique_ptr<Predictor> MakeTaskLengthLaw(std::vector<TaskLaw> laws, TaskLaw fallback);

/// linear: log(estimate) = intercept + sum_k weight_k * term_k(features). A term is a feature name
/// (RequestFeatures::Get) or a product "a*b". Unknown values take `impute` (the training mean).
/// `quantile` (0 = none) records the pinball level it was fitted at.
struct LinearModel {
  std::vector<std::string> terms;
  std::vector<double> weights;
  std::vector<double> impute;
  double intercept = 0.0;
  double l2 = 1e-3;
  double quantile = 0.0;
};
Expected<std::unique_ptr<Predictor>> MakeLinear(LinearModel model);

/// probe: estimate = margin * probe_blocks_X + add_blocks (X = mass 50|90|99); unknown probe
/// value -> fallback_fraction * causal_blocks.
std::unique_ptr<Predictor> MakeProbe(int mass = 90, double margin = 1.25, double add_blocks = 1.0,
                                     double fallback_fraction = 1.0);

/// table: one fraction per cell (task x length bucket [x feature bucket]); see docs.
struct TableCell {
  std::string task;
  int32_t length_bucket = 0;
  int32_t feature_bucket = -1;  ///< -1: no feature buckets, or the feature was unknown
  double fraction = 1.0;
};
struct TableModel {
  std::vector<int64_t> length_edges;  ///< ascending; bucket = number of edges <= context_length
  std::string bucket_feature;         ///< "" = none
  std::vector<double> feature_edges;  ///< ascending; bucket = number of edges <= value
  std::vector<TableCell> cells;
  double default_fraction = 1.0;      ///< for a cell with no entry and no neighbour
};
Expected<std::unique_ptr<Predictor>> MakeTable(TableModel model);

/// max: the largest total blocks of its members. clamp: its member, with this predictor's limits.
std::unique_ptr<Predictor> MakeMax(std::vector<std::unique_ptr<Predictor>> members);
std::unique_ptr<Predictor> MakeClamp(std::unique_ptr<Predictor> member, const BudgetLimits& limits);

}  ///< namespace sparsebudget
