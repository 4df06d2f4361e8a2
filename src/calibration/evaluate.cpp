// Evaluation against fixed budgets and the oracle: table, JSON, frontier, savings.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "calibration/cells.hpp"
#include "calibration/internal.hpp"
#include "io/json_util.hpp"

namespace sparsebudget {

namespace {
using namespace detail;

struct Acc {
  double frac = 0, blocks = 0, tokens = 0, degraded = 0, quality = 0, miss = 0, clamped = 0, fallback = 0;
  double n = 0;
  // A request served at b blocks throughout.
  void Add(const TraceRecord& r, int64_t b, bool cl, bool fb) {
    Add(r, Simulate(r, b, nullptr, BudgetLimits{}), cl, fb);
  }
  // A simulated request: blocks and tokens read are per decode step, recomputed steps included.
  void Add(const TraceRecord& r, const SimOutcome& o, bool cl, bool fb) {
    const double nb = static_cast<double>(r.causal_blocks());
    const double b = o.step_fraction * nb;
    frac += o.step_fraction;
    blocks += b;
    tokens += std::min(b * static_cast<double>(r.features.block_size), static_cast<double>(r.context_length()));
    degraded += o.degraded ? 1 : 0;
    quality += o.quality;
    miss += o.miss ? 1 : 0;
    clamped += cl ? 1 : 0;
    fallback += fb ? 1 : 0;
    n += 1;
  }
  EvalPoint Point(double scale) const {
    EvalPoint p;
    p.scale = scale;
    p.mean_fraction = frac / n;
    p.mean_quality = quality / n;
    p.degraded_share = degraded / n;
    return p;
  }
};

double Auc(std::vector<EvalPoint> pts, double dense_quality) {
  std::sort(pts.begin(), pts.end(),
            [](const EvalPoint& a, const EvalPoint& b) { return a.mean_fraction < b.mean_fraction; });
  // Quality 0 below the smallest measured budget, dense quality above the largest.
  double area = 0, px = 0, py = 0;
  bool first = true;
  for (const auto& p : pts) {
    const double x = std::min(p.mean_fraction, 1.0);
    if (first) {
      px = x;
      py = p.mean_quality;
      first = false;
      continue;
    }
    area += (x - px) * 0.5 * (py + p.mean_quality);
    px = x;
    py = p.mean_quality;
  }
  if (!first && px < 1.0) area += (1.0 - px) * 0.5 * (py + dense_quality);
  return area;
}

// Smallest mean fraction among fixed points whose degraded share is <= d (+ tiny slack).
const EvalPoint* BestFixed(const std::vector<EvalPoint>& pts, double d) {
  const EvalPoint* best = nullptr;
  for (const auto& p : pts)
    if (p.degraded_share <= d + 1e-12 && (best == nullptr || p.mean_fraction < best->mean_fraction)) best = &p;
  return best;
}

std::string F4(double v) {
  char b[32];
  (void)std::snprintf(b, sizeof(b), "%.4f", v);
  return b;
}
std::string F3(double v) {
  char b[32];
  (void)std::snprintf(b, sizeof(b), "%.3f", v);
  return b;
}
std::string Pct(double v) {
  char b[32];
  (void)std::snprintf(b, sizeof(b), "%.1f%%", 100.0 * v);
  return b;
}

json PointJson(const EvalPoint& p) {
  return {{"scale", p.scale},
          {"mean_budget_fraction", p.mean_fraction},
          {"mean_quality", p.mean_quality},
          {"degraded_share", p.degraded_share}};
}

}  // namespace

Expected<EvalReport> Evaluate(const std::vector<TraceRecord>& traces,
                              const std::vector<std::pair<std::string, const Predictor*>>& predictors,
                              const EvalOptions& opt) {
  if (traces.empty()) return Status(StatusCode::kInvalidArgument, "evaluate: no traces");
  if (Status st = detail::CheckTraces("evaluate", traces); !st.ok()) return st;
  if (opt.sweep_points < 1 || opt.sweep_points > 1000)
    return Status(StatusCode::kInvalidArgument, "evaluate: sweep_points must be in [1, 1000]");
  if (!(opt.kv_bytes_per_token > 0))
    return Status(StatusCode::kInvalidArgument, "evaluate: kv_bytes_per_token must be > 0");
  EvalReport rep;
  rep.num_requests = static_cast<int64_t>(traces.size());
  int64_t max_nb = 1;
  for (const auto& r : traces) {
    rep.dense_mean_quality += r.dense_quality;
    max_nb = std::max(max_nb, r.causal_blocks());
  }
  rep.dense_mean_quality /= static_cast<double>(traces.size());

  auto finish = [&](PredictorEval* e, const Acc& a) {
    e->mean_budget_fraction = a.frac / a.n;
    e->mean_blocks = a.blocks / a.n;
    e->mean_kv_tokens = a.tokens / a.n;
    e->mean_kv_bytes = e->mean_kv_tokens * opt.kv_bytes_per_token;
    e->degraded_share = a.degraded / a.n;
    e->mean_quality = a.quality / a.n;
    e->miss_share = a.miss / a.n;
    e->clamped_share = a.clamped / a.n;
    e->fallback_share = a.fallback / a.n;
  };
  // Oracle (the traces' labels).
  {
    Acc a;
    std::map<std::string, Acc> per;
    for (const auto& r : traces) {
      a.Add(r, r.oracle.blocks, false, false);
      per[r.task()].Add(r, r.oracle.blocks, false, false);
    }
    rep.oracle.name = "oracle";
    finish(&rep.oracle, a);
    rep.oracle.regret_vs_oracle = 1.0;
    for (const auto& kv : per) rep.oracle.per_task.push_back({kv.first, kv.second.Point(1.0)});
  }
  const double oracle_mean = rep.oracle.mean_budget_fraction;
  // Fixed references: fractions on a fine geometric grid, and token budgets (total blocks).
  for (int k = 0; k <= 256; ++k) {
    const double f = k == 256 ? 1.0 : std::exp2(k / 32.0) / 256.0;
    BudgetLimits l;
    Acc a;
    for (const auto& r : traces) a.Add(r, TotalBlocks(l, f * static_cast<double>(r.causal_blocks()), r), false, false);
    rep.fixed_fraction_frontier.push_back(a.Point(f));
  }
  for (int64_t b = 1; b <= max_nb; b = b < 16 ? b + 1 : b + std::max<int64_t>(1, b / 16)) {
    BudgetLimits l;
    Acc a;
    for (const auto& r : traces) a.Add(r, TotalBlocks(l, static_cast<double>(b), r), false, false);
    rep.fixed_blocks_frontier.push_back(a.Point(static_cast<double>(b)));
  }
  rep.fixed_blocks_frontier.push_back([&] {
    Acc a;
    for (const auto& r : traces) a.Add(r, r.causal_blocks(), false, false);
    return a.Point(static_cast<double>(max_nb));
  }());
  // Label-free variants (task labels removed) beside the labelled ones when labels exist.
  std::vector<size_t> all_idx(traces.size());
  for (size_t i = 0; i < traces.size(); ++i) all_idx[i] = i;
  std::vector<TraceRecord> stripped;
  if (HasTaskLabels(traces, all_idx)) {
    stripped = traces;
    for (auto& r : stripped) r.features = StripTask(r.features);
  }
  auto eval_one = [&](const std::string& name, const Predictor& whole, const std::vector<TraceRecord>& tr,
                      const char* variant) -> Status {
    // An escalate predictor: the member gives the start budget, the policy is simulated.
    const EscalationPolicy* pol = EscalationOf(whole);
    const Predictor& p = pol != nullptr ? *EscalationMember(whole) : whole;
    auto est = BaseEstimates(p, tr);
    if (!est.ok()) return Status(est.status().code(), "evaluate: predictor '" + name + "': " + est.status().message());
    PredictorEval e;
    e.name = name;
    e.variant = variant;
    e.escalation_threshold = pol != nullptr ? pol->threshold() : 0.0;
    Acc a;
    std::map<std::string, Acc> per;
    double recomputed = 0, steps = 0;
    for (size_t i = 0; i < tr.size(); ++i) {
      const Prediction pr = ApplyLimits(p.limits(), (*est)[i].blocks, tr[i].causal_blocks());
      const SimOutcome o = Simulate(tr[i], pr.total_blocks, pol, p.limits());
      a.Add(tr[i], o, pr.clamped, (*est)[i].fallback);
      per[traces[i].task()].Add(tr[i], o, pr.clamped, (*est)[i].fallback);
      recomputed += o.recomputed;
      steps += 1;
    }
    finish(&e, a);
    e.recomputed_per_request = steps > 0 ? recomputed / steps : 0.0;
    e.regret_vs_oracle = oracle_mean > 0 ? e.mean_budget_fraction / oracle_mean : 0.0;
    for (const auto& kv : per) e.per_task.push_back({kv.first, kv.second.Point(1.0)});
    // Frontier: sweep the calibration scale 2^-4 .. 2^4.
    for (int k = 0; k < opt.sweep_points; ++k) {
      const double s = opt.sweep_points == 1 ? 1.0 : std::exp2(-4.0 + 8.0 * k / (opt.sweep_points - 1));
      BudgetLimits l = p.limits();
      l.scale *= s;
      Acc sa;
      for (size_t i = 0; i < tr.size(); ++i)
        sa.Add(tr[i], Simulate(tr[i], TotalBlocks(l, (*est)[i].blocks, tr[i]), pol, l), false, false);
      e.frontier.push_back(sa.Point(s));
    }
    e.auc = Auc(e.frontier, rep.dense_mean_quality);
    if (const EvalPoint* bf = BestFixed(rep.fixed_fraction_frontier, e.degraded_share)) {
      e.best_fixed_fraction = bf->scale;
      e.best_fixed_fraction_mean = bf->mean_fraction;
      e.saved_vs_fixed_fraction = 1.0 - e.mean_budget_fraction / bf->mean_fraction;
    }
    if (const EvalPoint* bb = BestFixed(rep.fixed_blocks_frontier, e.degraded_share)) {
      e.best_fixed_blocks = static_cast<int64_t>(bb->scale);
      e.best_fixed_blocks_mean = bb->mean_fraction;
      e.saved_vs_fixed_blocks = 1.0 - e.mean_budget_fraction / bb->mean_fraction;
    }
    rep.entries.push_back(std::move(e));
    return OkStatus();
  };
  for (const auto& np : predictors) {
    if (np.second == nullptr)
      return Status(StatusCode::kInvalidArgument, "evaluate: predictor '" + np.first + "' is null");
    Status st = eval_one(np.first, *np.second, traces, stripped.empty() ? "as_given" : "labelled");
    if (!st.ok()) return st;
  }
  if (!stripped.empty())
    for (const auto& np : predictors) {
      if (np.second->type() == "fixed") continue;  // labels cannot matter
      Status st = eval_one(np.first + " (label-free)", *np.second, stripped, "label_free");
      if (!st.ok()) return st;
    }
  rep.oracle.frontier = {rep.oracle.per_task.empty() ? EvalPoint{}
                                                     : EvalPoint{1.0, rep.oracle.mean_budget_fraction,
                                                                 rep.oracle.mean_quality, rep.oracle.degraded_share}};
  rep.oracle.auc = Auc(rep.oracle.frontier, rep.dense_mean_quality);
  if (const EvalPoint* bf = BestFixed(rep.fixed_fraction_frontier, rep.oracle.degraded_share)) {
    rep.oracle.best_fixed_fraction = bf->scale;
    rep.oracle.best_fixed_fraction_mean = bf->mean_fraction;
    rep.oracle.saved_vs_fixed_fraction = 1.0 - rep.oracle.mean_budget_fraction / bf->mean_fraction;
  }
  if (const EvalPoint* bb = BestFixed(rep.fixed_blocks_frontier, rep.oracle.degraded_share)) {
    rep.oracle.best_fixed_blocks = static_cast<int64_t>(bb->scale);
    rep.oracle.best_fixed_blocks_mean = bb->mean_fraction;
    rep.oracle.saved_vs_fixed_blocks = 1.0 - rep.oracle.mean_budget_fraction / bb->mean_fraction;
  }
  return rep;
}

std::string EvalReportMarkdown(const EvalReport& rep) {
  std::string s;
  s += "| predictor | mean budget | mean blocks | K/V MB read | degraded | mean quality | regret vs oracle | AUC | "
       "saved vs best fixed fraction | saved vs best fixed blocks |\n";
  s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  auto row = [&](const PredictorEval& e) {
    s += "| " + e.name + " | " + F4(e.mean_budget_fraction) + " | " + F3(e.mean_blocks) + " | " +
         F3(e.mean_kv_bytes / 1e6) + " | " + Pct(e.degraded_share) + " | " + F4(e.mean_quality) + " | " +
         F3(e.regret_vs_oracle) + "x | " + F4(e.auc) + " | " + Pct(e.saved_vs_fixed_fraction) + " (vs " +
         F4(e.best_fixed_fraction) + ") | " + Pct(e.saved_vs_fixed_blocks) + " (vs " +
         std::to_string(e.best_fixed_blocks) + " blocks) |\n";
  };
  for (const auto& e : rep.entries) row(e);
  row(rep.oracle);
  s += "\n" + std::to_string(rep.num_requests) + " requests; dense mean quality " + F4(rep.dense_mean_quality) +
       "; oracle mean budget fraction " + F4(rep.oracle.mean_budget_fraction) +
       ". K/V MB = mean tokens read x bytes per token per (layer, kv head).\n";
  return s;
}

std::string EvalReportJson(const EvalReport& rep) {
  auto entry = [&](const PredictorEval& e) {
    json j = {{"name", e.name},
              {"mean_budget_fraction", e.mean_budget_fraction},
              {"mean_blocks", e.mean_blocks},
              {"mean_kv_tokens", e.mean_kv_tokens},
              {"mean_kv_bytes", e.mean_kv_bytes},
              {"degraded_share", e.degraded_share},
              {"mean_quality", e.mean_quality},
              {"miss_share", e.miss_share},
              {"regret_vs_oracle", e.regret_vs_oracle},
              {"clamped_share", e.clamped_share},
              {"fallback_share", e.fallback_share},
              {"auc", e.auc},
              {"saved_vs_best_fixed_fraction", e.saved_vs_fixed_fraction},
              {"best_fixed_fraction", e.best_fixed_fraction},
              {"best_fixed_fraction_mean_budget", e.best_fixed_fraction_mean},
              {"saved_vs_best_fixed_blocks", e.saved_vs_fixed_blocks},
              {"best_fixed_blocks", e.best_fixed_blocks},
              {"best_fixed_blocks_mean_budget", e.best_fixed_blocks_mean},
              {"oracle_mean_budget_fraction", rep.oracle.mean_budget_fraction},
              {"variant", e.variant},
              {"escalation_threshold", e.escalation_threshold},
              {"recomputed_steps_per_request", e.recomputed_per_request}};
    json fr = json::array();
    for (const auto& p : e.frontier) fr.push_back(PointJson(p));
    j["frontier"] = fr;
    json pt = json::object();
    for (const auto& kv : e.per_task) pt[kv.first] = PointJson(kv.second);
    j["per_task"] = pt;
    return j;
  };
  json j = json::object();
  j["schema_version"] = 1;
  j["num_requests"] = rep.num_requests;
  j["dense_mean_quality"] = rep.dense_mean_quality;
  json arr = json::array();
  for (const auto& e : rep.entries) arr.push_back(entry(e));
  j["predictors"] = arr;
  j["oracle"] = entry(rep.oracle);
  json ff = json::array(), fb = json::array();
  for (const auto& p : rep.fixed_fraction_frontier) ff.push_back(PointJson(p));
  for (const auto& p : rep.fixed_blocks_frontier) fb.push_back(PointJson(p));
  j["fixed_fraction_frontier"] = ff;
  j["fixed_blocks_frontier"] = fb;
  return j.dump(1);
}

}  // namespace sparsebudget
