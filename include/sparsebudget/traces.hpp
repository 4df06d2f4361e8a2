/// @file
/// sparsebudget/traces.hpp - request traces: features + quality-vs-budget curve + oracle label.
///
/// Format: JSONL, one record per line (docs/traces.md, docs/traces.schema.json):
///   {"id": str, "task": str, "context_length": int, "block_size": int,
///    "features": {name: number|null, ...},
///    "curve": [{"blocks": int, "fraction": num, "quality": num,
///               "top1_prob": num|null, "min_top1_prob": num|null}, ...],   (last two optional)
///    "dense_quality": num, "oracle": {"blocks": int, "fraction": num, "criterion": str}}
/// `blocks` counts all kept blocks (sink and local included), `fraction` = blocks / causal_blocks
/// with causal_blocks = ceil(context_length / block_size), quality in [0, 1]. Other top-level keys
/// are allowed and ignored. The reader validates every record and fails on the first bad one,
/// naming the file, the line and the key; nothing is skipped silently.
///
/// Quality at a budget between curve points (QualityAt): the quality of the largest curve point
/// whose blocks <= the budget's total blocks (conservative); a budget >= causal_blocks has the
/// dense quality; a budget below the smallest curve point has quality 0.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sparsebudget/features.hpp"
#include "sparsebudget/status.hpp"

namespace sparsebudget {

/// One measured budget of a record's quality-vs-budget curve.
struct CurvePoint {
  int64_t blocks = 0;     ///< total kept blocks, in [1, causal_blocks]
  double fraction = 0.0;  ///< blocks / causal_blocks (to 1e-4: ValidateTraceRecord)
  double quality = 0.0;   ///< task quality at this budget, in [0, 1]
  /// Self-check under sparsity (optional, in [0, 1]): top-1 probability of the first answer
  /// token decoded at this budget, and the minimum over the answer's tokens at this budget.
  /// Escalation (escalation.hpp) is simulated from them.
  std::optional<double> top1_prob;
  std::optional<double> min_top1_prob;
};

/// The record's oracle budget, as labelled by whoever produced the trace.
struct OracleLabel {
  int64_t blocks = 0;     ///< total kept blocks, in [1, causal_blocks]
  double fraction = 0.0;  ///< blocks / causal_blocks (to 1e-4: ValidateTraceRecord)
  std::string criterion;  ///< e.g. "exact_match", "rel_l2<=0.05"
};

/// One request of a trace file (one JSONL line).
struct TraceRecord {
  std::string id;                 ///< non-empty, unique within a file
  RequestFeatures features;       ///< context_length, block_size and task copied from the record
  std::vector<CurvePoint> curve;  ///< strictly ascending blocks
  double dense_quality = 0.0;     ///< quality with every block kept, in [0, 1]
  OracleLabel oracle;             ///< the record's oracle label
  int64_t line = 0;               ///< 1-based line in the file it came from (0 if built in memory)

  /// @name Shortcuts into features
  ///@{

  /// The same-named value of `features`.
  const std::string& task() const noexcept { return features.task; }
  int64_t context_length() const noexcept { return features.context_length; }
  int64_t causal_blocks() const noexcept { return features.causal_blocks(); }
  ///@}
};

/// The value rules of a record, the one place they live (ParseTraceRecord applies them to every
/// line; FitPredictor, Calibrate and Evaluate to records built in memory): id and task non-empty,
/// context_length and block_size >= 1, curve non-empty with blocks strictly ascending in [1,
/// causal_blocks] and each fraction = blocks / causal_blocks (to 1e-4), qualities and top-1
/// probabilities in [0, 1], min_top1_prob <= top1_prob, dense_quality in [0, 1], the oracle's
/// blocks in [1, causal_blocks] with its fraction, the features (ValidateFeatures). Error
/// (kInvalidArgument) names the key: "key 'curve[3].quality' must be in [0, 1], got 2". O(curve).
Status ValidateTraceRecord(const TraceRecord& record);
/// Parses and validates one JSONL line. Errors: "line N: key 'curve[3].quality' ...".
Expected<TraceRecord> ParseTraceRecord(const std::string& line, int64_t line_number);
/// Reads a whole file (duplicate ids are errors). Errors name the file and line.
Expected<std::vector<TraceRecord>> ReadTraces(const std::string& path);
/// One compact JSON line (no newline), round-trips through ParseTraceRecord except for
/// features.task_probs, which the format does not carry, and `line`.
std::string TraceRecordToJson(const TraceRecord& record);
/// Writes one TraceRecordToJson line per record, replacing the file. Records are not validated.
/// Error (kIoError) names the file.
Status WriteTraces(const std::string& path, const std::vector<TraceRecord>& records);

/// The interpolation rule above. O(log curve points).
double QualityAt(const TraceRecord& record, int64_t total_blocks) noexcept;
/// True if the quality at `total_blocks` is below the dense quality.
bool Degraded(const TraceRecord& record, int64_t total_blocks) noexcept;
/// Smallest curve budget from which every larger curve point (and dense) keeps the dense quality:
/// the monotone oracle. Every budget >= it is not degraded. O(curve points).
int64_t MonotoneOracleBlocks(const TraceRecord& record) noexcept;

}  // namespace sparsebudget
