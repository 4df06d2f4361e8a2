// Internal: how a cells predictor places a request in a cell. One definition, used by the
// predictor (cells.cpp) and by calibration (calibration/cells.cpp), so they cannot drift apart.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "sparsebudget/predictor.hpp"

namespace sparsebudget::detail {

// The label-free tier's task name.
inline constexpr const char* kAnyTask = "*";

using CellsKey = std::tuple<std::string, int32_t, int32_t>;  // (tier, length bucket, score bucket)

// Length bucket: number of edges <= context_length.
int32_t CellsLengthBucket(const std::vector<int64_t>& length_edges, int64_t context_length);

// The score a tier orders requests by: the tier's score predictor's estimated fraction (unknown
// when that predictor used a fallback), else its score feature, else none (nullopt). Task tiers
// without a source of their own (task_score, task_score_feature) read the label-free tier's.
std::optional<double> CellsScore(const CellsModel& m, bool task_tier, const RequestFeatures& f);

// Score bucket in (tier, length bucket): 0 when the tier has no edges there (one bucket),
// else the number of edges <= score, or -1 when the score is unknown.
int32_t CellsScoreBucket(const std::vector<double>* edges, const std::optional<double>& score);

// Indexed view of a CellsModel for lookups.
class CellsIndex {
 public:
  explicit CellsIndex(const CellsModel& m);
  // The cell that serves `f`: its index in m.cells, or -1 when none does (the caller falls
  // back). Tries the request's task tier first (when it has cells in the length bucket), then
  // the label-free tier.
  int32_t Find(const CellsModel& m, const RequestFeatures& f) const;
  // Conservative fallback when Find gives -1: the largest fraction of the label-free tier in
  // the length bucket, then of any tier in it, then the default.
  double FallbackFraction(const CellsModel& m, const RequestFeatures& f) const;
  const std::vector<double>* Edges(const std::string& tier, int32_t length_bucket) const;

 private:
  std::map<CellsKey, int32_t> cell_;
  std::map<std::pair<std::string, int32_t>, std::vector<double>> edges_;
  std::map<std::pair<std::string, int32_t>, double> tier_len_max_;
  std::map<int32_t, double> len_max_;
};

}  // namespace sparsebudget::detail
