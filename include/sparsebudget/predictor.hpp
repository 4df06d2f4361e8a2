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
///   fixed, length_law, task_length_law, linear, probe, table, cells, max, clamp.
/// `cells` is what calibration (calibration.hpp) builds for every signal.
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

/// The "schema_version" every predictor JSON document must carry.
inline constexpr int kPredictorSchemaVersion = 1;

/// Applied by every predictor after its own estimate. JSON keys of the same names (all optional).
struct BudgetLimits {
  double scale = 1.0;         ///< > 0, multiplies the estimated total blocks
  double min_fraction = 0.0;  ///< in [0, 1]
  double max_fraction = 1.0;  ///< in [min_fraction, 1]
  int64_t min_blocks = 0;     ///< clamp on total blocks, 0 = none
  int64_t max_blocks = 0;     ///< clamp on total blocks, 0 = none, >= min_blocks
  int32_t sink_blocks = 1;    ///< >= 0, copied into the budget
  int32_t local_blocks = 1;   ///< >= 0, copied into the budget (the own block is always kept)
};
/// Checks every range above (kInvalidArgument naming the key). O(1).
Status ValidateLimits(const BudgetLimits& limits);

/// A predictor's output for one request.
struct Prediction {
  Budget budget;               ///< mode kFraction (the kernel's input)
  double estimate_blocks = 0;  ///< the predictor's own estimate of total blocks, before limits
  int64_t causal_blocks = 0;   ///< of this request
  int64_t total_blocks = 0;    ///< ResolveBudget(budget, causal_blocks).total_blocks
  double fraction = 0;         ///< total_blocks / causal_blocks
  bool clamped = false;        ///< a limit or ResolveBudget changed the estimate
  bool fallback = false;       ///< a needed feature was unknown; the predictor's fallback was used
};

/// Base of every predictor. A subclass implements EstimateBlocks, type, ToJson and Clone; Predict
/// validates the features and applies limits() to the estimate.
class Predictor {
 public:
  virtual ~Predictor() = default;

  /// Validates the features, estimates, applies the limits. Thread-safe.
  Expected<Prediction> Predict(const RequestFeatures& features) const;

  /// The JSON "type" name ("length_law", ...).
  virtual std::string type() const = 0;
  /// Full JSON document (schema_version, type, parameters, limits).
  virtual std::string ToJson() const = 0;
  /// A deep copy, limits included.
  virtual std::unique_ptr<Predictor> Clone() const = 0;
  /// True if, features otherwise equal, the budget fraction's estimate in blocks never decreases
  /// with context length (tested as a property).
  virtual bool MonotoneInLength() const { return false; }

  /// The limits Predict applies to the estimate.
  const BudgetLimits& limits() const noexcept { return limits_; }
  /// Replaces the limits without validating them (see ValidateLimits). Not safe while another
  /// thread calls Predict on this predictor.
  void set_limits(const BudgetLimits& limits) { limits_ = limits; }

  /// A predictor's own estimate, before limits.
  struct Estimate {
    double blocks = 0;      ///< total blocks (> 0, finite); +inf is clamped, NaN is an error
    bool fallback = false;  ///< the predictor used its fallback for an unknown feature
  };
  /// The estimate for `features`, which Predict has validated. Must be thread-safe (const, no
  /// mutable state). A negative estimate counts as 0; NaN makes Predict fail with kInternal.
  virtual Expected<Estimate> EstimateBlocks(const RequestFeatures& features) const = 0;

 protected:
  BudgetLimits limits_;  ///< what limits() returns
};

/// Applies `limits` to an estimate for a request with `causal_blocks` blocks. O(1).
Prediction ApplyLimits(const BudgetLimits& limits, double estimate_blocks, int64_t causal_blocks);

// ---- registry and JSON ---------------------------------------------------------------------
/// A factory receives the whole JSON document text of one predictor.
using PredictorFactory =
    std::function<Expected<std::unique_ptr<Predictor>>(const std::string& json)>;

/// Registers a type name (built-ins are registered already). Error if the name is taken or empty.
Status RegisterPredictor(const std::string& type, PredictorFactory factory);
/// Type names known to the registry, sorted.
std::vector<std::string> PredictorTypes();

/// Parses a predictor document (errors name the key, and "schema_version" must be 1).
Expected<std::unique_ptr<Predictor>> PredictorFromJson(const std::string& json_text);
/// Reads a file and parses it; errors name the file.
Expected<std::unique_ptr<Predictor>> LoadPredictor(const std::string& path);
/// Writes ToJson(), indented, to `path` (replacing it). Errors (kIoError) name the file.
Status SavePredictor(const Predictor& predictor, const std::string& path);

// ---- built-ins, for programmatic use -------------------------------------------------------
/// fixed: estimate = fraction * causal_blocks (fraction clamped to [0, 1]).
std::unique_ptr<Predictor> MakeFixedFraction(double fraction);
/// fixed: estimate = `total_blocks` total blocks (raised to at least 1).
std::unique_ptr<Predictor> MakeFixedBlocks(int64_t total_blocks);
/// length_law: estimate = c * L^a / block_size blocks (defaults: c = 12.8, a = 0.5).
std::unique_ptr<Predictor> MakeLengthLaw(double c = 12.8, double a = 0.5);

/// One task's law: estimate = max(c * L^a / block_size, floor_fraction * causal_blocks).
struct TaskLaw {
  std::string task;  ///< the task it applies to (ignored for the fallback law, which is "*")
  double c = 12.8;   ///< tokens at L = 1, > 0 (checked when read from JSON, not here)
  double a = 0.5;    ///< exponent of the context length L
  double floor_fraction = 0.0;  ///< per-task floor on the estimate, as a fraction of causal blocks
};
/// task_length_law: the law of the request's task (the most probable class of task_probs when
/// given), or `fallback` (task "*") for other tasks, reported as Prediction::fallback.
std::unique_ptr<Predictor> MakeTaskLengthLaw(std::vector<TaskLaw> laws, TaskLaw fallback);

/// linear: log(estimate) = intercept + sum_k weight_k * term_k(features). A term is a feature name
/// (RequestFeatures::Get) or a product "a*b". Unknown values take `impute` (the training mean).
/// `quantile` (0 = none) records the pinball level it was fitted at.
/// log(estimate) is capped at 60.
struct LinearModel {
  std::vector<std::string> terms;  ///< feature names or products "a*b"; no empty factor
  std::vector<double> weights;     ///< one per term
  std::vector<double> impute;      ///< one per term: its value when a factor is unknown (fallback)
  double intercept = 0.0;          ///< finite
  double l2 = 1e-3;                ///< ridge penalty of the fit, >= 0 (recorded only)
  double quantile = 0.0;           ///< pinball level, 0 or in (0, 1) (recorded only)
};
/// Checks the model (sizes and ranges above; kParseError naming the key) and builds it.
Expected<std::unique_ptr<Predictor>> MakeLinear(LinearModel model);

/// probe: estimate = margin * probe_blocks_X + add_blocks (X = mass 50|90|99); unknown probe
/// value -> fallback_fraction * causal_blocks.
std::unique_ptr<Predictor> MakeProbe(int mass = 90, double margin = 1.25, double add_blocks = 1.0,
                                     double fallback_fraction = 1.0);

/// table: one fraction per cell (task x length bucket [x feature bucket]); see docs.
struct TableCell {
  std::string task;             ///< non-empty; matched against RequestFeatures::task only
  int32_t length_bucket = 0;    ///< in [0, length_edges.size()]
  int32_t feature_bucket = -1;  ///< -1: no feature buckets, or the feature was unknown
  double fraction = 1.0;        ///< estimate = fraction * causal_blocks, in [0, 1]
};
/// A request with no cell falls back (Prediction::fallback) to the largest fraction of its task
/// and length bucket, then of its length bucket over all tasks, then default_fraction.
struct TableModel {
  std::vector<int64_t> length_edges;  ///< ascending; bucket = number of edges <= context_length
  std::string bucket_feature;         ///< "" = none
  std::vector<double> feature_edges;  ///< ascending; bucket = number of edges <= value
  std::vector<TableCell> cells;       ///< at most one per (task, length, feature bucket)
  double default_fraction = 1.0;      ///< for a cell with no entry and no neighbour
};
/// Checks the model (ascending edges, feature_edges empty without bucket_feature, fractions in
/// [0, 1], buckets in range, no duplicate cell; kParseError naming the key) and builds it.
Expected<std::unique_ptr<Predictor>> MakeTable(TableModel model);

/// cells: one budget fraction per cell of (tier, length bucket, score bucket), the form every
/// calibrated predictor takes (calibration.hpp, docs/predictors.md "Cells").
/// Tiers: "*" is label-free (any request); a task tier serves requests of that task class.
/// A request is served by its task tier when that tier has cells in its length bucket, else by
/// the label-free tier. Each kind of tier has its own score source: the label-free tier's is
/// `score` (a predictor's estimated fraction, estimate_blocks / causal_blocks; unknown when it
/// used its fallback), else the feature `score_feature`, else none; the task tiers' is
/// `task_score`, else the feature `task_score_feature`, else the label-free tier's. The score
/// bucket is the number of the tier's edges for that length bucket <= the score (0 when the tier
/// has no edges there, -1 when the score is unknown). No matching cell: the largest fraction of
/// the label-free tier's cells in the length bucket, then of any tier's, then default_fraction
/// (fallback).
struct CellsCell {
  std::string task = "*";     ///< tier: "*" (label-free) or a task class name
  int32_t length_bucket = 0;  ///< in [0, length_edges.size()]
  int32_t score_bucket = 0;   ///< -1 (score unknown) or in [0, edges of (task, length bucket)]
  double fraction = 1.0;      ///< estimate = fraction * causal_blocks, in [0, 1]
  bool abstained = false;     ///< calibration could not certify the target here: dense (1)
};
/// Score-bucket edges of one (tier, length bucket), ascending.
struct CellsEdges {
  std::string task = "*";     ///< tier
  int32_t length_bucket = 0;  ///< in [0, length_edges.size()]
  std::vector<double> edges;  ///< ascending, non-empty
};
/// The parts of a cells predictor. Score predictors are shared, immutable and thread-safe.
struct CellsModel {
  std::shared_ptr<const Predictor> score;       ///< label-free tier's score predictor, or null
  std::shared_ptr<const Predictor> task_score;  ///< task tiers' score predictor, or null
  /// Label-free tier's feature, when `score` is null; "" = none (length only).
  std::string score_feature;
  bool score_descending = false;  ///< the feature's negation is the score (demand falls with it)
  /// Task tiers' feature, when `task_score` is null; "" = the label-free tier's score source.
  std::string task_score_feature;
  bool task_score_descending = false;   ///< as score_descending, for task_score_feature
  std::vector<int64_t> length_edges;    ///< ascending; bucket = number of edges <= context_length
  std::vector<CellsEdges> score_edges;  ///< at most one per (tier, length bucket)
  std::vector<CellsCell> cells;         ///< at most one per (tier, length bucket, score bucket)
  double default_fraction = 1.0;        ///< when no cell of the length bucket exists, in [0, 1]
};
/// Checks the model (ascending edges, ranges, no duplicates, score_feature only without score,
/// task_score_feature only without task_score, a *_descending flag only with its feature;
/// kParseError naming the key) and builds it.
Expected<std::unique_ptr<Predictor>> MakeCells(CellsModel model);
/// The model of a cells predictor, or null if `p` is not one.
const CellsModel* CellsModelOf(const Predictor& p);

/// max: the largest total blocks of its members (each after its own limits); fallback if any
/// member's was. A member's error is returned.
std::unique_ptr<Predictor> MakeMax(std::vector<std::unique_ptr<Predictor>> members);
/// clamp: estimate = the member's total blocks (after its own limits), then `limits` on top.
/// `member` must not be null.
std::unique_ptr<Predictor> MakeClamp(std::unique_ptr<Predictor> member, const BudgetLimits& limits);

}  // namespace sparsebudget
