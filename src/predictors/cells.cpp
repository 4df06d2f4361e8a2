// cells: one budget fraction per (tier, length bucket, score bucket); what calibration builds.
#include "predictors/cells.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "predictors/internal.hpp"

namespace sparsebudget {
namespace detail {

int32_t CellsLengthBucket(const std::vector<int64_t>& length_edges, int64_t context_length) {
  return static_cast<int32_t>(std::upper_bound(length_edges.begin(), length_edges.end(), context_length) -
                              length_edges.begin());
}

namespace {

std::optional<double> PredictorScore(const Predictor& p, const RequestFeatures& f) {
  auto pr = p.Predict(f);
  if (!pr.ok() || pr->fallback || pr->causal_blocks <= 0) return std::nullopt;
  return pr->estimate_blocks / static_cast<double>(pr->causal_blocks);
}

std::optional<double> FeatureScore(const std::string& name, bool descending, const RequestFeatures& f) {
  auto v = f.Get(name);
  if (v && descending) return -*v;
  return v;
}

}  // namespace

std::optional<double> CellsScore(const CellsModel& m, bool task_tier, const RequestFeatures& f) {
  if (task_tier) {
    if (m.task_score) return PredictorScore(*m.task_score, f);
    if (!m.task_score_feature.empty()) return FeatureScore(m.task_score_feature, m.task_score_descending, f);
  }
  if (m.score) return PredictorScore(*m.score, f);
  if (!m.score_feature.empty()) return FeatureScore(m.score_feature, m.score_descending, f);
  return std::nullopt;
}

int32_t CellsScoreBucket(const std::vector<double>* edges, const std::optional<double>& score) {
  if (edges == nullptr) return 0;
  if (!score) return -1;
  return static_cast<int32_t>(std::upper_bound(edges->begin(), edges->end(), *score) - edges->begin());
}

CellsIndex::CellsIndex(const CellsModel& m) {
  for (size_t i = 0; i < m.cells.size(); ++i) {
    const auto& c = m.cells[i];
    cell_[CellsKey{c.task, c.length_bucket, c.score_bucket}] = static_cast<int32_t>(i);
    auto& tl = tier_len_max_[{c.task, c.length_bucket}];
    tl = std::max(tl, c.fraction);
    auto& l = len_max_[c.length_bucket];
    l = std::max(l, c.fraction);
  }
  for (const auto& e : m.score_edges) edges_[{e.task, e.length_bucket}] = e.edges;
}

const std::vector<double>* CellsIndex::Edges(const std::string& tier, int32_t lb) const {
  auto it = edges_.find({tier, lb});
  return it == edges_.end() ? nullptr : &it->second;
}

int32_t CellsIndex::Find(const CellsModel& m, const RequestFeatures& f) const {
  const int32_t lb = CellsLengthBucket(m.length_edges, f.context_length);
  // The score is read only where the tier has edges (a score predictor costs a Predict).
  auto bucket = [&](const std::string& tier, bool task_tier) {
    const std::vector<double>* e = Edges(tier, lb);
    return e == nullptr ? 0 : CellsScoreBucket(e, CellsScore(m, task_tier, f));
  };
  if (f.task != kAnyTask && tier_len_max_.count({f.task, lb}) != 0) {
    auto it = cell_.find(CellsKey{f.task, lb, bucket(f.task, true)});
    if (it != cell_.end()) return it->second;
  }
  if (tier_len_max_.count({kAnyTask, lb}) == 0) return -1;
  auto it = cell_.find(CellsKey{kAnyTask, lb, bucket(kAnyTask, false)});
  return it == cell_.end() ? -1 : it->second;
}

double CellsIndex::FallbackFraction(const CellsModel& m, const RequestFeatures& f) const {
  const int32_t lb = CellsLengthBucket(m.length_edges, f.context_length);
  auto tl = tier_len_max_.find({kAnyTask, lb});
  if (tl != tier_len_max_.end()) return tl->second;
  auto l = len_max_.find(lb);
  if (l != len_max_.end()) return l->second;
  return m.default_fraction;
}

namespace {

json MemberJson(const Predictor& p) {
  json j = json::parse(p.ToJson(), nullptr, false);
  return j.is_discarded() ? json::object() : j;
}

class CellsPredictor final : public PredictorBase {
 public:
  explicit CellsPredictor(CellsModel m) : m_(std::move(m)), index_(m_) {}
  std::string type() const override { return "cells"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<CellsPredictor>(*this); }
  const CellsModel& model() const { return m_; }

  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    const double nb = static_cast<double>(f.causal_blocks());
    const int32_t c = index_.Find(m_, f);
    if (c >= 0) {
      const auto& cell = m_.cells[static_cast<size_t>(c)];
      return Estimate{(cell.abstained ? 1.0 : cell.fraction) * nb, false};
    }
    return Estimate{index_.FallbackFraction(m_, f) * nb, true};
  }
  void WriteParams(json& j) const override {
    if (m_.score) j["score"] = MemberJson(*m_.score);
    if (m_.task_score) j["task_score"] = MemberJson(*m_.task_score);
    j["score_feature"] = m_.score_feature;
    j["score_descending"] = m_.score_descending;
    // Written only when set, so a file whose tiers share one source reads as before.
    if (!m_.task_score_feature.empty()) {
      j["task_score_feature"] = m_.task_score_feature;
      j["task_score_descending"] = m_.task_score_descending;
    }
    j["length_edges"] = m_.length_edges;
    json edges = json::array();
    for (const auto& e : m_.score_edges)
      edges.push_back({{"task", e.task}, {"length_bucket", e.length_bucket}, {"edges", e.edges}});
    j["score_edges"] = edges;
    json cells = json::array();
    for (const auto& c : m_.cells)
      cells.push_back({{"task", c.task},
                       {"length_bucket", c.length_bucket},
                       {"score_bucket", c.score_bucket},
                       {"fraction", c.fraction},
                       {"abstained", c.abstained}});
    j["cells"] = cells;
    j["default_fraction"] = m_.default_fraction;
  }

 private:
  CellsModel m_;
  CellsIndex index_;
};

Status CheckCells(const CellsModel& m) {
  auto bad = [](const std::string& k, const std::string& w) {
    return Status(StatusCode::kParseError, "predictor 'cells': key '" + k + "' " + w);
  };
  if (!std::is_sorted(m.length_edges.begin(), m.length_edges.end())) return bad("length_edges", "must be ascending");
  if (m.score && !m.score_feature.empty()) return bad("score_feature", "must be empty when 'score' is given");
  if (m.score_descending && m.score_feature.empty()) return bad("score_descending", "needs 'score_feature'");
  if (m.task_score && !m.task_score_feature.empty())
    return bad("task_score_feature", "must be empty when 'task_score' is given");
  if (m.task_score_descending && m.task_score_feature.empty())
    return bad("task_score_descending", "needs 'task_score_feature'");
  if (!(m.default_fraction >= 0 && m.default_fraction <= 1)) return bad("default_fraction", "must be in [0, 1]");
  const auto nl = static_cast<int32_t>(m.length_edges.size());
  std::map<std::pair<std::string, int32_t>, size_t> edge_count;
  for (size_t i = 0; i < m.score_edges.size(); ++i) {
    const auto& e = m.score_edges[i];
    const std::string k = "score_edges[" + std::to_string(i) + "]";
    if (e.task.empty()) return bad(k + ".task", "must not be empty");
    if (e.length_bucket < 0 || e.length_bucket > nl)
      return bad(k + ".length_bucket",
                 "must be in [0, " + std::to_string(nl) + "], got " + std::to_string(e.length_bucket));
    if (e.edges.empty()) return bad(k + ".edges", "must not be empty");
    for (double v : e.edges)
      if (!std::isfinite(v)) return bad(k + ".edges", "must be finite");
    if (!std::is_sorted(e.edges.begin(), e.edges.end())) return bad(k + ".edges", "must be ascending");
    if (!edge_count.emplace(std::make_pair(e.task, e.length_bucket), e.edges.size()).second)
      return bad(k, "duplicates an earlier (task, length_bucket)");
  }
  std::set<CellsKey> seen;
  for (size_t i = 0; i < m.cells.size(); ++i) {
    const auto& c = m.cells[i];
    const std::string k = "cells[" + std::to_string(i) + "]";
    if (c.task.empty()) return bad(k + ".task", "must not be empty");
    if (!(c.fraction >= 0 && c.fraction <= 1))
      return bad(k + ".fraction", "must be in [0, 1], got " + std::to_string(c.fraction));
    if (c.length_bucket < 0 || c.length_bucket > nl)
      return bad(k + ".length_bucket",
                 "must be in [0, " + std::to_string(nl) + "], got " + std::to_string(c.length_bucket));
    auto ec = edge_count.find({c.task, c.length_bucket});
    const int32_t max_sb = ec == edge_count.end() ? 0 : static_cast<int32_t>(ec->second);
    const int32_t min_sb = ec == edge_count.end() ? 0 : -1;
    if (c.score_bucket < min_sb || c.score_bucket > max_sb)
      return bad(k + ".score_bucket", "must be in [" + std::to_string(min_sb) + ", " + std::to_string(max_sb) +
                                          "], got " + std::to_string(c.score_bucket));
    if (!seen.insert(CellsKey{c.task, c.length_bucket, c.score_bucket}).second)
      return bad(k, "duplicates an earlier cell");
  }
  return OkStatus();
}

}  // namespace

Expected<std::unique_ptr<Predictor>> CellsFromJson(const json& j) {
  ObjectReader r(j, Context("cells"));
  ReadHeader(r, "cells");
  CellsModel m;
  for (const char* key : {"score", "task_score"}) {
    if (const json* s = r.Get(key, false)) {
      auto p = MemberFromJson(*s, r.context() + ": " + key);
      if (!p.ok()) {
        r.Fail(p.status().code(), p.status().message());
        break;
      }
      (std::string(key) == "score" ? m.score : m.task_score) = std::shared_ptr<const Predictor>(std::move(p).value());
    }
  }
  r.String("score_feature", &m.score_feature, false);
  r.Bool("score_descending", &m.score_descending, false);
  r.String("task_score_feature", &m.task_score_feature, false);
  r.Bool("task_score_descending", &m.task_score_descending, false);
  r.IntegerArray("length_edges", &m.length_edges, true);
  r.Number("default_fraction", &m.default_fraction, false);
  if (const json* edges = r.Get("score_edges", false)) {
    if (!edges->is_array()) {
      r.FailKey("score_edges", "must be an array");
    } else {
      for (size_t i = 0; i < edges->size() && r.ok(); ++i) {
        ObjectReader er((*edges)[i], r.context() + ": score_edges[" + std::to_string(i) + "]");
        CellsEdges e;
        er.String("task", &e.task, true);
        er.Int32("length_bucket", &e.length_bucket, true);
        er.NumberArray("edges", &e.edges, true);
        Status st = er.Finish();
        if (!st.ok()) r.Fail(st.code(), st.message());
        m.score_edges.push_back(std::move(e));
      }
    }
  }
  if (const json* cells = r.Get("cells", true)) {
    if (!cells->is_array()) {
      r.FailKey("cells", "must be an array");
    } else {
      for (size_t i = 0; i < cells->size() && r.ok(); ++i) {
        ObjectReader cr((*cells)[i], r.context() + ": cells[" + std::to_string(i) + "]");
        CellsCell c;
        cr.String("task", &c.task, true);
        cr.Int32("length_bucket", &c.length_bucket, true);
        cr.Int32("score_bucket", &c.score_bucket, true);
        cr.Number("fraction", &c.fraction, true);
        cr.Bool("abstained", &c.abstained, false);
        Status st = cr.Finish();
        if (!st.ok()) r.Fail(st.code(), st.message());
        m.cells.push_back(std::move(c));
      }
    }
  }
  BudgetLimits lim;
  ReadLimits(r, &lim);
  Status st = r.Finish();
  if (!st.ok()) return st;
  st = CheckCells(m);
  if (!st.ok()) return st;
  auto p = std::make_unique<CellsPredictor>(std::move(m));
  p->set_limits(lim);
  return std::unique_ptr<Predictor>(std::move(p));
}

const CellsModel* CellsModelOfImpl(const Predictor& p) {
  const auto* c = dynamic_cast<const CellsPredictor*>(&p);
  return c == nullptr ? nullptr : &c->model();
}

}  // namespace detail

Expected<std::unique_ptr<Predictor>> MakeCells(CellsModel model) {
  Status st = detail::CheckCells(model);
  if (!st.ok()) return st;
  return std::unique_ptr<Predictor>(std::make_unique<detail::CellsPredictor>(std::move(model)));
}

const CellsModel* CellsModelOf(const Predictor& p) { return detail::CellsModelOfImpl(p); }

}  // namespace sparsebudget
