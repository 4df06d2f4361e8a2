/// @file
/// sparsebudget/calibration.hpp - fit predictors on traces, calibrate them to a target, evaluate
/// them against fixed budgets and the oracle, compute oracle labels, make synthetic traces.
///
/// Degraded (per request): quality at the predicted total blocks < dense quality (traces.hpp).
/// Calibration controls the "miss" loss  miss_i(b) = [b < MonotoneOracleBlocks(i)], which is
/// monotone in b and bounds the degraded indicator from above, so a bound on misses is a bound on
/// degraded requests.
///
/// Guarantee of the degraded-share mode (docs/predictors.md): the calibration traces are split
/// (seeded, stratified by task) into a fit part and a held-out part of n requests. The fit part
/// fixes a nested family of budgets (per-cell allocations along the Lagrangian path, or a scale
/// grid for other predictors); on the held-out part the least budget with
///   (misses + 1) / (n + 1) <= alpha                       (conformal risk control)
/// is chosen. If held-out and future requests are exchangeable (i.i.d. from the same traffic),
/// then E[degraded share on new requests] <= E[miss share] <= alpha. With `delta` > 0 the
/// choice is made by fixed-sequence binomial tests instead, giving P(miss rate > alpha) <= delta.
///
/// Threading: free functions on caller-owned data, no shared state; safe to call concurrently.
/// Errors are Status values naming the bad option, never exceptions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparsebudget/attention.hpp"
#include "sparsebudget/escalation.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/status.hpp"
#include "sparsebudget/traces.hpp"

namespace sparsebudget {

// ---- fitting -------------------------------------------------------------------------------
/// Options of FitPredictor, per predictor type. length_law / task_length_law take none: they are
/// least squares of log(target tokens) on log(L) (per task), the target being the geometric
/// midpoint of the oracle's censoring interval on the curve grid (largest curve point below the
/// oracle, oracle], see docs/predictors.md.
struct FitOptions {
  // linear:
  std::vector<std::string> terms;  ///< linear: empty = defaults from the features in the traces
  double l2 = 1e-3;                ///< linear: ridge penalty on standardized terms
  double quantile = 0.0;           ///< linear: 0 = least squares; in (0,1) = pinball loss level
  // probe:
  int probe_mass = 90;  ///< probe: which probe_blocks_X feature it scales: 50, 90 or 99
  // table (Lagrangian allocation):
  std::string bucket_feature;  ///< table: "" = task x length only; e.g. "entropy"
  int bucket_count = 2;        ///< table: quantile buckets, in [1, 16] (+1 for unknown)
  BudgetLimits limits;         ///< limits of the fitted predictor (every type)
};

/// Fits a predictor of `type` (fixed, length_law, task_length_law, linear, probe, table) on the
/// traces. For table, the allocation of the whole Lagrangian path's least-miss end (callers use
/// Calibrate for a target). Error on empty traces or an unknown type (kNotFound); a record that
/// fails ValidateTraceRecord is kInvalidArgument "fit: traces[i] (id '...'): key ...".
Expected<std::unique_ptr<Predictor>> FitPredictor(const std::string& type,
                                                  const std::vector<TraceRecord>& traces,
                                                  const FitOptions& options = {});

// ---- calibration ---------------------------------------------------------------------------
/// Options of Calibrate.
struct CalibrationOptions {
  /// @name Target: set exactly one (a negative value means unset)
  ///@{
  double target_degraded = -1.0;       ///< degraded share on new requests, in (0, 1)
  double target_mean_fraction = -1.0;  ///< mean budget fraction over the traces, in (0, 1]
  ///@}
  double holdout = 0.3;  ///< share of traces held out for the finite-sample correction (0.05..0.95)
  double delta = 0.0;    ///< 0 = guarantee in expectation; in (0,1): high-probability version
  uint64_t seed = 1;     ///< seeds the fit / held-out split (degraded mode, fitted type)
  FitOptions fit;        ///< used when Calibrate fits `type`; unused with a base predictor
  /// @name Cells (degraded mode, every fitted type and "auto"; docs/predictors.md "Cells")
  ///@{
  int min_cell = 20;           ///< a cell with fewer fit requests backs off to its parent, >= 1
  double abstain_above = 0.9;  ///< a cell whose fit misses exceed the target at every budget
                               ///< <= this fraction runs dense (abstains); 0 = never abstain
  int cv_folds = 3;  ///< folds of the cross-validated choice of signal and buckets, [2, 10]
  ///@}
  /// @name Escalation (self-check under sparsity, escalation.hpp)
  ///@{
  bool escalation = false;  ///< calibrate start budgets and the threshold jointly (needs curve
                            ///< points with top1_prob; error otherwise)
  std::vector<double> escalation_ladder = EscalationPolicy::DefaultLadder();  ///< rungs
  ///@}
};

/// What Calibrate chose, and how it does on the calibration traces.
struct CalibrationResult {
  std::unique_ptr<Predictor> predictor;  ///< the calibrated predictor, owned by the result
  std::string method;                    ///< "lagrangian_table+crc", "scale+crc", "scale+mean", ...
  /// table: lambda; others: scale (+inf when no scale met the target and the predictor is the
  /// dense fixed fraction 1)
  double chosen_value = 0.0;
  double fit_mean_fraction = 0.0;       ///< mean budget fraction on all calibration traces
  double holdout_mean_fraction = 0.0;   ///< on the held-out part (degraded mode)
  double holdout_degraded_share = 0.0;  ///< degraded share on the held-out part
  double holdout_miss_share = 0.0;      ///< b < oracle share on the held-out part
  int64_t num_fit = 0;      ///< traces in the fit part (all in mean mode; 0 for a base, degraded)
  int64_t num_holdout = 0;  ///< traces held out (0 in mean mode; all for a base, degraded mode)
  std::string summary;      ///< one line: "chosen ... mean_budget_fraction=... degraded=..."
  /// cells: the chosen signal, e.g. "feature:probe_blocks_90 buckets=4"; with task tiers both
  /// choices, "label-free tier feature:answer_length buckets=4, task tiers feature:X buckets=2"
  std::string signal;
  std::string selection;  ///< cells: the cross-validation figure of every candidate, one per line
  std::vector<std::string> abstained_cells;  ///< cells that run dense, uncertifiable at the target
  double escalation_threshold = 0.0;  ///< with escalation: the calibrated threshold (0 = none)
};

/// Degraded mode, `base` null: every fittable `type` (fixed, length_law, task_length_law, linear,
/// probe, table) and "auto" goes through the cells calibration: the type's fitted estimate (or,
/// for auto, the signal chosen among length, every numeric feature present and fitted
/// predictors) orders requests within length buckets; signal and bucket count are chosen by
/// cross-validation on the fit part, for the label-free tier with the task labels removed, then
/// (labelled traces) for the task tiers or none; a budget per cell by the Lagrangian trade; the
/// level picked on the held-out part (the guarantee above). The result is a "cells" predictor
/// (wrapped in "escalate" with `escalation`). Mean mode: fits `type` on all traces and calibrates its scale
/// (table: the Lagrangian path). Pass `base` to calibrate a copy of an existing predictor's
/// scale (`type` ignored). Needs >= 2 traces, each passing ValidateTraceRecord; errors name the
/// bad option or record. Cost: auto fits a few
/// hundred cell tables (seconds for thousands of traces).
Expected<CalibrationResult> Calibrate(const std::string& type, const Predictor* base,
                                      const std::vector<TraceRecord>& traces,
                                      const CalibrationOptions& options);

// ---- evaluation ----------------------------------------------------------------------------
/// One point of a quality-vs-budget frontier, averaged over the traces.
struct EvalPoint {
  double scale = 1.0;           ///< the sweep parameter (scale, or the fixed fraction / blocks)
  double mean_fraction = 0.0;   ///< mean of total_blocks / causal_blocks
  double mean_quality = 0.0;    ///< mean QualityAt the budget
  double degraded_share = 0.0;  ///< share of requests Degraded at the budget
};

/// How one predictor (or the traces' oracle labels) does on the traces, at its own limits.
struct PredictorEval {
  std::string name;  ///< as given to Evaluate (+ " (label-free)"); "oracle" for the labels
  /// "as_given" (traces without task labels), "labelled", or "label_free" (the same predictor
  /// on the traces with their task labels removed; added when the traces carry labels)
  std::string variant = "as_given";
  double escalation_threshold = 0.0;    ///< escalate predictors: the policy's threshold (0 = none)
  double recomputed_per_request = 0.0;  ///< escalate predictors: mean decode steps recomputed
  /// mean of total_blocks / causal_blocks (escalate predictors: blocks read per decode step,
  /// recomputed steps included, averaged over the answer's steps; docs/predictors.md)
  double mean_budget_fraction = 0.0;
  double mean_blocks = 0.0;       ///< mean total kept blocks
  double mean_kv_tokens = 0.0;    ///< tokens of K/V read per (layer, kv head)
  double mean_kv_bytes = 0.0;     ///< mean_kv_tokens * kv_bytes_per_token
  double degraded_share = 0.0;    ///< share of requests Degraded at their budget
  double mean_quality = 0.0;      ///< mean QualityAt their budget
  double miss_share = 0.0;        ///< b < monotone oracle
  double regret_vs_oracle = 0.0;  ///< mean_budget_fraction / oracle mean fraction
  double clamped_share = 0.0;     ///< share of predictions with Prediction::clamped (0 for oracle)
  double fallback_share = 0.0;    ///< share of estimates that used a fallback (0 for oracle)
  double auc = 0.0;               ///< area under the frontier, quality vs mean fraction on [0, 1]
  /// 1 - mean_budget_fraction / best_fixed_fraction_mean, where the best fixed fraction is the
  /// one of least mean budget whose degraded share is <= this one's (0 if none is)
  double saved_vs_fixed_fraction = 0.0;
  double saved_vs_fixed_blocks = 0.0;     ///< the same against fixed token budgets
  double best_fixed_fraction = 0.0;       ///< that fixed fraction (and its mean fraction below)
  double best_fixed_fraction_mean = 0.0;  ///< that fixed fraction's mean budget fraction
  int64_t best_fixed_blocks = 0;          ///< the same for fixed total-block budgets (0 if none)
  double best_fixed_blocks_mean = 0.0;    ///< that budget's mean budget fraction
  std::vector<EvalPoint> frontier;        ///< sweep of the scale (the oracle: its single point)
  /// (task, point at this predictor's own scale, reported as 1) per task, sorted by task name
  std::vector<std::pair<std::string, EvalPoint>> per_task;
};

/// Options of Evaluate.
struct EvalOptions {
  double kv_bytes_per_token = 512.0;  ///< K+V bytes per token per (layer, kv head): fp16, d=128
  int sweep_points = 33;              ///< scales 2^-4 .. 2^4, log-spaced; in [1, 1000] (1: scale 1)
};

/// Result of Evaluate.
struct EvalReport {
  int64_t num_requests = 0;            ///< traces evaluated
  double dense_mean_quality = 0.0;     ///< mean dense_quality of the traces
  PredictorEval oracle;                ///< the traces' oracle labels
  std::vector<PredictorEval> entries;  ///< one per predictor (fixed ones included)
  /// Fixed fractions 2^(k/32) / 256 for k = 0..255, then 1 (scale = the fraction)
  std::vector<EvalPoint> fixed_fraction_frontier;
  std::vector<EvalPoint> fixed_blocks_frontier;  ///< scale = total blocks
};

/// Evaluates each (name, predictor) on the traces; when they carry task labels, each non-fixed
/// predictor again with the labels removed (variant "label_free"). An "escalate" predictor is
/// simulated from the curve points' top1_prob / min_top1_prob. Each record must pass
/// ValidateTraceRecord (the error names it). O(predictors x sweep x traces).
Expected<EvalReport> Evaluate(
    const std::vector<TraceRecord>& traces,
    const std::vector<std::pair<std::string, const Predictor*>>& predictors,
    const EvalOptions& options = {});
/// A Markdown table (one row per entry, then the oracle) and a one-line summary.
std::string EvalReportMarkdown(const EvalReport& report);
/// The whole report as JSON (schema_version 1), frontiers and per-task points included.
std::string EvalReportJson(const EvalReport& report);

// ---- oracle from attention -----------------------------------------------------------------
/// One budget of OracleFromAttention's sweep.
struct OracleCurvePoint {
  int64_t blocks = 0;      ///< total kept blocks
  double fraction = 0.0;   ///< blocks / causal_blocks
  double rel_error = 0.0;  ///< ||out - dense|| / ||dense|| over all query rows and heads
};
/// Result of OracleFromAttention.
struct AttentionOracle {
  int64_t blocks = 0;  ///< smallest total blocks with rel_error <= epsilon (causal blocks if none)
  double fraction = 0.0;                ///< blocks / causal_blocks
  int64_t causal_blocks = 0;            ///< causal blocks of the last query, ceil(L / block_size)
  std::vector<OracleCurvePoint> curve;  ///< every total from the forced count to causal blocks
};
/// Runs SparseAttention with Budget::Blocks(k) (the params' sink/local/scoring) for k = 0, 1, ...
/// against the dense output and returns the smallest passing budget. q, kv as in attention.hpp;
/// the summaries are built here. O(causal_blocks) attention calls.
Expected<AttentionOracle> OracleFromAttention(const AttentionParams& params, const QueryView& q,
                                              const KVCacheView& kv, double epsilon);

/// Minimal .npy I/O for the oracle: little-endian float32 ('<f4') or float16 ('<f2') arrays in C
/// order, format versions 1-3. Values are widened to float32. Errors name the file and the field.
struct NpyArray {
  std::vector<int64_t> shape;  ///< dimensions, outermost first
  std::vector<float> data;     ///< row-major
};
/// Reads a whole .npy file. Errors: kIoError if it cannot be read, kParseError naming the field.
Expected<NpyArray> ReadNpy(const std::string& path);
/// Writes `data` as '<f4', format version 1.0, C order, replacing the file. Error if the product
/// of `shape` differs from data.size() (kInvalidArgument) or writing fails (kIoError).
Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
                const std::vector<float>& data);

// ---- synthetic traces ----------------------------------------------------------------------
/// Options of SynthesizeTraces.
struct SynthOptions {
  int64_t count = 1000;     ///< records to generate
  uint64_t seed = 1;        ///< same options and seed give the same records
  int32_t block_size = 64;  ///< tokens per block of every record, >= 1
  /// Each request picks one uniformly; empty = log-uniform in [512, 8192]
  std::vector<int64_t> lengths = {512, 1024, 2048, 4096, 8192};
  bool continuous_lengths = false;  ///< log-uniform between min and max of `lengths`
  bool fine_grid =
      false;            ///< curve at every block count up to 512 (else the standard grid), + dense
  double noise = 0.35;  ///< sd of the log-normal noise on the needed budget
  double lucky = 0.1;   ///< below the need, a point keeps the dense answer w.p. lucky * b / need
  int laws = 0;         ///< law set of SynthLaws (0: the documented one, 1: another world)
  bool self_check = true;  ///< curve points carry top1_prob / min_top1_prob (docs/traces.md)
};
/// Deterministic for a seed. The model (docs/traces.md): per task t, needed tokens
/// = c_t * L^a_t * exp(noise * z); entropy and probe features carry part of z; the curve is the
/// dense quality at budgets >= need and usually 0 below.
std::vector<TraceRecord> SynthesizeTraces(const SynthOptions& options);
/// The per-task law used by SynthesizeTraces (for tests): c, a.
struct SynthLaw {
  const char* task;       ///< task class name (static storage)
  double c;               ///< needed tokens = c * L^a before noise
  double a;               ///< exponent of the context length L
  double dense_accuracy;  ///< probability that a record's dense quality is 1 (else 0)
};
/// The four laws of a law set (single_qa, multi_qa, multi_hop, aggregation); each synthetic
/// request picks one uniformly. Set 0 is documented in docs/traces.md; set 1 has other
/// constants and exponents (generalization checks). Other sets: set 0.
std::vector<SynthLaw> SynthLaws(int set = 0);

}  // namespace sparsebudget
