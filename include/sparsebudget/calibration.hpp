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
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/status.hpp"
#include "sparsebudget/traces.hpp"

namespace sparsebudget {

/// ---- fitting -------------------------------------------------------------------------------
struct FitOptions {
  /// length_law / task_length_law: least squares of log(target tokens) on log(L) (per task).
  /// The target is the geometric midpoint of the oracle's censoring interval on the curve grid
  /// (largest curve point below the oracle, oracle], see docs/predictors.md.
  /// linear:
  std::vector<std::string> terms;  ///< empty = defaults from the features present in the traces
  double l2 = 1e-3;                ///< ridge penalty on standardized terms
  double quantile = 0.0;           ///< 0 = least squares; in (0,1) = pinball loss at this level
  /// probe:
  int probe_mass = 90;
  /// table (Lagrangian allocation):
  std::string bucket_feature;  ///< "" = task x length only; e.g. "entropy"
  int bucket_count = 2;        ///< quantile buckets of bucket_feature (+1 bucket for unknown)
  BudgetLimits limits;         ///< limits of the fitted predictor
};

/// Fits a predictor of `type` (fixed, length_law, task_length_law, linear, probe, table) on the
/// traces. For table, the allocation of the whole Lagrangian path's least-miss end (callers use
/// Calibrate for a target). Error on empty traces or an unknown type (kNotFound).
Expected<std::unique_ptr<Predictor>> FitPredictor(const std::string& type,
                                                  const std::vector<TraceRecord>& traces,
                                                  const FitOptions& options = {});

/// ---- calibration ---------------------------------------------------------------------------
struct CalibrationOptions {
  /// Exactly one target: target_degraded in (0, 1) or target_mean_fraction in (0, 1].
  double target_degraded = -1.0;
  double target_mean_fraction = -1.0;
  double holdout = 0.3;  ///< share of traces held out for the finite-sample correction (0.05..0.95)
  double delta = 0.0;    ///< 0 = guarantee in expectation; in (0,1): high-probability version
  uint64_t seed = 1;
  FitOptions fit;
};

struct CalibrationResult {
  std::unique_ptr<Predictor> predictor;
  std::string method;          ///< "lagrangian_table+crc", "scale+crc", "scale+mean", ...
  double chosen_value = 0.0;   ///< table: lambda; others: scale
  double fit_mean_fraction = 0.0;       ///< mean budget fraction on all calibration traces
  double holdout_mean_fraction = 0.0;   ///< on the held-out part (degraded mode)
  double holdout_degraded_share = 0.0;  ///< degraded share on the held-out part
  double holdout_miss_share = 0.0;      ///< b < oracle share on the held-out part
  int64_t num_fit = 0;
  int64_t num_holdout = 0;
  std::string summary;  ///< one line: "chosen ... mean_budget_fraction=... degraded=..."
};

/// If `type_or_base` names a fittable type, fits it (on the fit part) and calibrates; table is
/// calibrated by the per-cell Lagrangian allocation. Pass `base` instead to calibrate an existing
/// predictor's scale (type_or_base ignored).
Expected<CalibrationResult> Calibrate(const std::string& type, const Predictor* base,
                                      const std::vector<TraceRecord>& traces,
                                      const CalibrationOptions& options);

/// ---- evaluation ----------------------------------------------------------------------------
struct EvalPoint {
  double scale = 1.0;  ///< the sweep parameter (scale, or the fixed fraction / blocks)
  double mean_fraction = 0.0;
  double mean_quality = 0.0;
  double degraded_share = 0.0;
};

struct PredictorEval {
  std::string name;
  double mean_budget_fraction = 0.0;
  double mean_blocks = 0.0;
  double mean_kv_tokens = 0.0;  ///< tokens of K/V read per (layer, kv head)
  double mean_kv_bytes = 0.0;   ///< mean_kv_tokens * kv_bytes_per_token
  double degraded_share = 0.0;
  double mean_quality = 0.0;
  double miss_share = 0.0;        ///< b < monotone oracle
  double regret_vs_oracle = 0.0;  ///< mean_budget_fraction / oracle mean fraction
  double clamped_share = 0.0;
  double fallback_share = 0.0;
  double auc = 0.0;               ///< area under the frontier, quality vs mean fraction on [0, 1]
  double saved_vs_fixed_fraction = 0.0;  ///< 1 - mean / (best fixed fraction at <= degraded)
  double saved_vs_fixed_blocks = 0.0;    ///< the same against fixed token budgets
  double best_fixed_fraction = 0.0;      ///< that fixed fraction (and its mean fraction below)
  double best_fixed_fraction_mean = 0.0;
  int64_t best_fixed_blocks = 0;
  double best_fixed_blocks_mean = 0.0;
  std::vector<EvalPoint> frontier;  ///< sweep of the scale
  std::vector<std::pair<std::string, EvalPoint>> per_task;
};

struct EvalOptions {
  double kv_bytes_per_token = 512.0;  ///< K+V bytes per token per (layer, kv head): fp16, d=128
  int sweep_points = 33;              ///< scales 2^-4 .. 2^4
};

struct EvalReport {
  int64_t num_requests = 0;
  double dense_mean_quality = 0.0;
  PredictorEval oracle;             ///< the traces' oracle labels
  std::vector<PredictorEval> entries;  ///< one per predictor (fixed ones included)
  std::vector<EvalPoint> fixed_fraction_frontier;
  std::vector<EvalPoint> fixed_blocks_frontier;  ///< scale = total blocks
};

/// Evaluates each (name, predictor) on the traces. O(predictors x sweep x traces).
Expected<EvalReport> Evaluate(const std::vector<TraceRecord>& traces,
                              const std::vector<std::pair<std::string, const Predictor*>>& predictors,
                              const EvalOptions& options = {});
std::string EvalReportMarkdown(const EvalReport& report);
std::string EvalReportJson(const EvalReport& report);

/// ---- oracle from attention -----------------------------------------------------------------
struct OracleCurvePoint {
  int64_t blocks = 0;  ///< total kept blocks
  double fraction = 0.0;
  double rel_error = 0.0;  ///< ||out - dense|| / ||dense|| over all query rows and heads
};
struct AttentionOracle {
  int64_t blocks = 0;  ///< smallest total blocks with rel_error <= epsilon (causal blocks if none)
  double fraction = 0.0;
  int64_t causal_blocks = 0;
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
  std::vector<int64_t> shape;
  std::vector<float> data;  ///< row-major
};
Expected<NpyArray> ReadNpy(const std::string& path);
Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data);

/// ---- synthetic traces ----------------------------------------------------------------------
struct SynthOptions {
  int64_t count = 1000;
  uint64_t seed = 1;
  int32_t block_size = 64;
  std::vector<int64_t> lengths = {512, 1024, 2048, 4096, 8192};  ///< each request picks one
  bool continuous_lengths = false;  ///< log-uniform between min and max of `lengths`
  bool fine_grid = false;  ///< curve at every block count up to 512 (else the standard grid), + dense
  double noise = 0.35;     ///< sd of the log-normal noise on the needed budget
  double lucky = 0.1;      ///< below the need, a point keeps the dense answer w.p. lucky * b / need
};
/// Deterministic for a seed. The model (docs/traces.md): per task t, needed tokens
/// = c_t * L^a_t * exp(noise * z); entropy and probe features carry part of z; the curve is the
/// dense quality at budgets >= need and usually 0 below.
std::vector<TraceRecord> SynthesizeTraces(const SynthOptions& options);
/// The per-task law used by SynthesizeTraces (for tests): c, a.
struct SynthLaw {
  const char* task;
  double c;
  double a;
  double dense_accuracy;
};
std::vector<SynthLaw> SynthLaws();

}  ///< namespace sparsebudget
