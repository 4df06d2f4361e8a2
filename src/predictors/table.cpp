// table: one budget fraction per cell (task x length bucket [x feature bucket]).
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "predictors/internal.hpp"

namespace sparsebudget {
namespace detail {
namespace {

using CellKey = std::tuple<std::string, int32_t, int32_t>;

class TablePredictor final : public PredictorBase {
 public:
  explicit TablePredictor(TableModel m) : m_(std::move(m)) {
    for (const auto& c : m_.cells) {
      cells_[CellKey{c.task, c.length_bucket, c.feature_bucket}] = c.fraction;
      auto& tl = task_len_max_[{c.task, c.length_bucket}];
      tl = std::max(tl, c.fraction);
      auto& l = len_max_[c.length_bucket];
      l = std::max(l, c.fraction);
    }
  }
  std::string type() const override { return "table"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<TablePredictor>(*this); }

  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    const int32_t lb = static_cast<int32_t>(
        std::upper_bound(m_.length_edges.begin(), m_.length_edges.end(), f.context_length) - m_.length_edges.begin());
    int32_t fb = -1;
    if (!m_.bucket_feature.empty()) {
      auto v = f.Get(m_.bucket_feature);
      if (v)
        fb = static_cast<int32_t>(std::upper_bound(m_.feature_edges.begin(), m_.feature_edges.end(), *v) -
                                  m_.feature_edges.begin());
    }
    const double nb = static_cast<double>(f.causal_blocks());
    auto it = cells_.find(CellKey{f.task, lb, fb});
    if (it != cells_.end()) return Estimate{it->second * nb, false};
    // Conservative neighbours: the largest fraction of the same task and length, then of the
    // same length over all tasks, then the default.
    auto tl = task_len_max_.find({f.task, lb});
    if (tl != task_len_max_.end()) return Estimate{tl->second * nb, true};
    auto l = len_max_.find(lb);
    if (l != len_max_.end()) return Estimate{l->second * nb, true};
    return Estimate{m_.default_fraction * nb, true};
  }
  void WriteParams(json& j) const override {
    j["length_edges"] = m_.length_edges;
    j["bucket_feature"] = m_.bucket_feature;
    j["feature_edges"] = m_.feature_edges;
    json cells = json::array();
    for (const auto& c : m_.cells)
      cells.push_back({{"task", c.task},
                       {"length_bucket", c.length_bucket},
                       {"feature_bucket", c.feature_bucket},
                       {"fraction", c.fraction}});
    j["cells"] = cells;
    j["default_fraction"] = m_.default_fraction;
  }

 private:
  TableModel m_;
  std::map<CellKey, double> cells_;
  std::map<std::pair<std::string, int32_t>, double> task_len_max_;
  std::map<int32_t, double> len_max_;
};

Status CheckTable(const TableModel& m) {
  auto bad = [](const std::string& k, const std::string& w) {
    return Status(StatusCode::kParseError, "predictor 'table': key '" + k + "' " + w);
  };
  if (!std::is_sorted(m.length_edges.begin(), m.length_edges.end())) return bad("length_edges", "must be ascending");
  if (!std::is_sorted(m.feature_edges.begin(), m.feature_edges.end())) return bad("feature_edges", "must be ascending");
  if (m.bucket_feature.empty() && !m.feature_edges.empty())
    return bad("feature_edges", "must be empty when 'bucket_feature' is empty");
  if (!(m.default_fraction >= 0 && m.default_fraction <= 1)) return bad("default_fraction", "must be in [0, 1]");
  std::map<CellKey, int> seen;
  for (size_t i = 0; i < m.cells.size(); ++i) {
    const auto& c = m.cells[i];
    const std::string k = "cells[" + std::to_string(i) + "]";
    if (c.task.empty()) return bad(k + ".task", "must not be empty");
    if (!(c.fraction >= 0 && c.fraction <= 1))
      return bad(k + ".fraction", "must be in [0, 1], got " + std::to_string(c.fraction));
    if (c.length_bucket < 0 || c.length_bucket > static_cast<int32_t>(m.length_edges.size()))
      return bad(k + ".length_bucket", "must be in [0, " + std::to_string(m.length_edges.size()) + "]");
    if (c.feature_bucket < -1 || c.feature_bucket > static_cast<int32_t>(m.feature_edges.size()))
      return bad(k + ".feature_bucket", "must be in [-1, " + std::to_string(m.feature_edges.size()) + "]");
    if (seen[CellKey{c.task, c.length_bucket, c.feature_bucket}]++ != 0) return bad(k, "duplicates an earlier cell");
  }
  return OkStatus();
}

}  // namespace

Expected<std::unique_ptr<Predictor>> TableFromJson(const json& j) {
  ObjectReader r(j, Context("table"));
  ReadHeader(r, "table");
  TableModel m;
  r.IntegerArray("length_edges", &m.length_edges, true);
  r.String("bucket_feature", &m.bucket_feature, false);
  r.NumberArray("feature_edges", &m.feature_edges, false);
  r.Number("default_fraction", &m.default_fraction, false);
  if (const json* cells = r.Get("cells", true)) {
    if (!cells->is_array()) {
      r.FailKey("cells", "must be an array");
    } else {
      for (size_t i = 0; i < cells->size() && r.ok(); ++i) {
        ObjectReader cr((*cells)[i], r.context() + ": cells[" + std::to_string(i) + "]");
        TableCell c;
        cr.String("task", &c.task, true);
        cr.Int32("length_bucket", &c.length_bucket, true);
        cr.Int32("feature_bucket", &c.feature_bucket, false);
        cr.Number("fraction", &c.fraction, true);
        Status st = cr.Finish();
        if (!st.ok()) r.Fail(st.code(), st.message());
        m.cells.push_back(c);
      }
    }
  }
  BudgetLimits lim;
  ReadLimits(r, &lim);
  Status st = r.Finish();
  if (!st.ok()) return st;
  st = CheckTable(m);
  if (!st.ok()) return st;
  auto p = std::make_unique<TablePredictor>(std::move(m));
  p->set_limits(lim);
  return std::unique_ptr<Predictor>(std::move(p));
}

}  // namespace detail

Expected<std::unique_ptr<Predictor>> MakeTable(TableModel model) {
  Status st = detail::CheckTable(model);
  if (!st.ok()) return st;
  return std::unique_ptr<Predictor>(std::make_unique<detail::TablePredictor>(std::move(model)));
}

}  // namespace sparsebudget
