// Per-cell calibration of any signal: cells = (tier, length bucket, score bucket); a budget per
// cell from a Lagrangian trade of budget against misses, monotone in the score within a length
// bucket, small cells backed off to their parent, uncertifiable cells abstaining to dense, the
// level picked on held-out traces with the finite-sample correction (docs/predictors.md).
#include "calibration/cells.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "predictors/cells.hpp"
#include "predictors/feature_fields.hpp"

namespace sparsebudget::detail {

std::string CellSpec::Describe() const {
  auto one = [](const std::string& src, int b) {
    return (src.empty() ? std::string("length-only") : src) + " buckets=" + std::to_string(b);
  };
  if (!by_task) return one(source, buckets);
  return "label-free tier " + one(source, buckets) + ", task tiers " + one(task_source, task_buckets);
}

RequestFeatures StripTask(const RequestFeatures& f) {
  RequestFeatures g = f;
  g.task = kTaskUnknown;
  g.task_probs.clear();
  return g;
}

bool HasTaskLabels(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx) {
  std::set<std::string> tasks;
  for (size_t i : idx)
    if (traces[i].task() != kTaskUnknown) tasks.insert(traces[i].task());
  return tasks.size() >= 2;
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Candidate fractions: 0 (forced blocks only), 2^(k/8) / 256 for k = 0..63, and 1.
std::vector<double> FractionGrid() {
  std::vector<double> g = {0.0};
  for (int k = 0; k < 64; ++k) g.push_back(std::exp2(k / 8.0) / 256.0);
  g.push_back(1.0);
  return g;
}

struct Group {
  CellsCell cell;
  std::vector<size_t> members;  // trace indices
  std::vector<double> cost, miss;
  bool abstain = false;
};

// The loss calibration controls. Without escalation: the miss (budget < monotone oracle), which
// is monotone in the budget and bounds the degraded indicator. With escalation the answer is the
// one decoded where the policy stopped, and the trace says exactly whether it is degraded: that
// is the loss (made non-increasing along the path by the held-out step's envelope).
bool Loss(const SimOutcome& o, const CellSettings& set) { return set.escalation != nullptr ? o.degraded : o.miss; }

// Simulated outcome of trace r started at grid fraction g.
SimOutcome OutcomeAt(const TraceRecord& r, double g, const CellSettings& set) {
  return Simulate(r, TotalBlocks(set.fit.limits, g * static_cast<double>(r.causal_blocks()), r), set.escalation,
                  set.fit.limits);
}

// The start fractions the cells choose from: the fraction grid, or with escalation the ladder's
// rungs (and 0): every start then lies on the escalation path of every smaller one, so a
// request's simulated miss is non-increasing in its start budget and the held-out step stays a
// valid conformal choice.
std::vector<double> StartGrid(const CellSettings& set) {
  if (set.escalation == nullptr) return FractionGrid();
  std::vector<double> grid = {0.0};
  for (double f : set.escalation->ladder()) grid.push_back(f);
  return grid;
}

}  // namespace

namespace {

void FillTables(const std::vector<TraceRecord>& traces, const std::vector<double>& grid, const CellSettings& set,
                std::vector<Group>* groups) {
  const GridOutcomes* cache = set.grid_outcomes;
  if (cache != nullptr && (cache->traces != &traces || cache->grid_size != grid.size())) cache = nullptr;
  for (auto& g : *groups) {
    g.cost.assign(grid.size(), 0.0);
    g.miss.assign(grid.size(), 0.0);
    for (size_t i : g.members)
      for (size_t k = 0; k < grid.size(); ++k) {
        if (cache != nullptr) {
          g.cost[k] += cache->cost[i * grid.size() + k];
          g.miss[k] += cache->loss[i * grid.size() + k] != 0 ? 1.0 : 0.0;
          continue;
        }
        const SimOutcome o = OutcomeAt(traces[i], grid[k], set);
        g.cost[k] += o.step_fraction;
        g.miss[k] += Loss(o, set) ? 1.0 : 0.0;
      }
    if (set.abstain_above > 0 && !g.members.empty()) {
      double least = kInf;
      for (size_t k = 0; k < grid.size(); ++k)
        if (grid[k] <= set.abstain_above) least = std::min(least, g.miss[k]);
      g.abstain = least / static_cast<double>(g.members.size()) > set.alpha;
    }
  }
}

// Lagrangian path: for each lambda, every chain (same tier and length bucket, ascending score
// bucket) minimises sum(cost + lambda * miss) subject to non-decreasing choices along the chain
// and choices >= the previous lambda's (nested family). Ends with every cell dense.
std::vector<std::vector<int>> LagrangianPath(const std::vector<Group>& groups, size_t G,
                                             std::vector<double>* lambdas_out) {
  std::map<std::pair<std::string, int32_t>, std::vector<size_t>> chains;
  std::vector<std::vector<size_t>> singles;
  for (size_t c = 0; c < groups.size(); ++c) {
    if (groups[c].cell.score_bucket < 0)
      singles.push_back({c});
    else
      chains[{groups[c].cell.task, groups[c].cell.length_bucket}].push_back(c);
  }
  std::vector<std::vector<size_t>> all = singles;
  for (auto& kv : chains) {
    std::sort(kv.second.begin(), kv.second.end(),
              [&](size_t a, size_t b) { return groups[a].cell.score_bucket < groups[b].cell.score_bucket; });
    all.push_back(kv.second);
  }
  std::vector<double> lambdas = {0.0};
  for (int k = -100; k <= 80; ++k) lambdas.push_back(std::pow(10.0, k / 20.0));
  lambdas.push_back(1e12);  // least-miss end
  std::vector<int> prev(groups.size(), 0);
  for (size_t c = 0; c < groups.size(); ++c)
    if (groups[c].abstain) prev[c] = static_cast<int>(G - 1);
  std::vector<std::vector<int>> path;
  std::vector<double> F, Fprev, best_prefix;
  for (double lam : lambdas) {
    std::vector<int> ch(prev);
    for (const auto& chain : all) {
      // F_s(k) = v_s(k) + min_{k' <= k} F_{s-1}(k'), k >= lower bound of cell s.
      std::vector<std::vector<double>> table(chain.size(), std::vector<double>(G, kInf));
      for (size_t s = 0; s < chain.size(); ++s) {
        const Group& g = groups[chain[s]];
        double run = kInf;  // min over k' <= k of F_{s-1}
        for (size_t k = 0; k < G; ++k) {
          if (s > 0) run = std::min(run, table[s - 1][k]);
          if (static_cast<int>(k) < prev[chain[s]]) continue;
          const double base = s == 0 ? 0.0 : run;
          if (base == kInf) continue;
          table[s][k] = base + g.cost[k] + lam * g.miss[k];
        }
      }
      // Backtrack: the last cell's argmin, then each earlier cell's argmin at or below it.
      size_t hi = G - 1;
      for (size_t s = chain.size(); s-- > 0;) {
        size_t best = hi;
        double bv = kInf;
        for (size_t k = 0; k <= hi; ++k)
          if (table[s][k] < bv - 1e-12 * (1.0 + std::fabs(bv == kInf ? 0.0 : bv))) {
            bv = table[s][k];
            best = k;
          }
        ch[chain[s]] = static_cast<int>(best);
        hi = best;
      }
    }
    if (path.empty() || ch != path.back()) {
      path.push_back(ch);
      lambdas_out->push_back(lam);
    }
    prev = ch;
  }
  std::vector<int> dense(groups.size(), static_cast<int>(G - 1));
  if (path.empty() || dense != path.back()) {
    path.push_back(dense);
    lambdas_out->push_back(kInf);
  }
  return path;
}

// Quantile edges of `v` for `buckets` buckets (deduplicated, strictly ascending).
std::vector<double> QuantileEdges(std::vector<double> v, int buckets) {
  std::vector<double> e;
  if (v.empty() || buckets < 2) return e;
  std::sort(v.begin(), v.end());
  for (int b = 1; b < buckets; ++b) {
    const double x = v[static_cast<size_t>(static_cast<double>(v.size()) * b / buckets)];
    if (e.empty() || x > e.back()) e.push_back(x);
  }
  // An edge equal to the smallest value leaves bucket 0 empty; drop it.
  if (!e.empty() && e.front() <= v.front()) e.erase(e.begin());
  return e;
}

// Least path level whose held-out misses pass the test (misses are non-increasing along a
// nested path without escalation: binary search; with escalation: per-request envelope).
struct Pick {
  size_t level = 0;
  double mean_fraction = 0.0, miss_share = 0.0;
};

bool Passes(int64_t misses, int64_t n, const CellSettings& set) {
  if (set.delta <= 0) return (static_cast<double>(misses) + 1.0) / (static_cast<double>(n) + 1.0) <= set.alpha;
  return BinomCdf(misses, n, set.alpha) <= set.delta;
}

}  // namespace

Expected<CellsFit> FitCells(const std::vector<TraceRecord>& traces, const std::vector<size_t>& fit_idx,
                            const std::vector<size_t>& hold_idx, const CellSpec& spec, const CellSettings& set) {
  if (fit_idx.empty() || hold_idx.empty())
    return Status(StatusCode::kInvalidArgument, "cells: empty fit or held-out part");
  if (spec.buckets < 1 || spec.buckets > 16)
    return Status(StatusCode::kInvalidArgument,
                  "cells: buckets must be in [1, 16], got " + std::to_string(spec.buckets));
  if (set.min_cell < 1)
    return Status(StatusCode::kInvalidArgument, "cells: min_cell must be >= 1, got " + std::to_string(set.min_cell));
  const bool by_task = spec.by_task && HasTaskLabels(traces, fit_idx);
  if (by_task && (spec.task_buckets < 1 || spec.task_buckets > 16))
    return Status(StatusCode::kInvalidArgument,
                  "cells: task_buckets must be in [1, 16], got " + std::to_string(spec.task_buckets));
  CellsModel model;
  std::vector<TraceRecord> fit_tr, fit_free;
  for (size_t i : fit_idx) {
    fit_tr.push_back(traces[i]);
    fit_free.push_back(traces[i]);
    fit_free.back().features = StripTask(traces[i].features);
  }
  {
    std::vector<const TraceRecord*> ptrs;
    for (const auto& r : fit_tr) ptrs.push_back(&r);
    model.length_edges = LengthEdges(ptrs);
  }
  auto lb_of = [&](size_t i) { return CellsLengthBucket(model.length_edges, traces[i].context_length()); };
  // Direction of a feature: demand (log of the needed fraction) against the feature, pooled
  // within length buckets. A falling demand makes the negated feature the score.
  auto descending = [&](const std::string& name) {
    std::map<int32_t, std::vector<std::pair<double, double>>> by_lb;
    for (size_t i : fit_idx)
      if (Informative(traces[i]))
        if (auto v = traces[i].features.Get(name))
          by_lb[lb_of(i)].push_back(
              {*v, std::log(FitTargetBlocks(traces[i]) / static_cast<double>(traces[i].causal_blocks()))});
    double cov = 0;
    for (const auto& kv : by_lb) {
      double mx = 0, my = 0;
      for (const auto& p : kv.second) mx += p.first, my += p.second;
      mx /= static_cast<double>(kv.second.size());
      my /= static_cast<double>(kv.second.size());
      for (const auto& p : kv.second) cov += (p.first - mx) * (p.second - my);
    }
    return cov < 0;
  };
  // One tier kind's score source. Task tiers whose signal is the label-free tier's feature keep
  // the shared form (no task_score_feature); with no signal of their own ("") they read the
  // label-free tier's source but get no edges (one bucket: length only).
  auto set_source = [&](const std::string& src, bool task_tier) -> Status {
    if (src.empty()) return OkStatus();
    if (src.rfind("feature:", 0) == 0) {
      const std::string name = src.substr(8);
      if (name.empty()) return Status(StatusCode::kInvalidArgument, "cells: empty feature name in '" + src + "'");
      const bool desc = descending(name);
      if (!task_tier) {
        model.score_feature = name;
        model.score_descending = desc;
      } else if (model.score || name != model.score_feature || desc != model.score_descending) {
        model.task_score_feature = name;
        model.task_score_descending = desc;
      }
      return OkStatus();
    }
    if (src.rfind("predictor:", 0) == 0) {
      const std::string type = src.substr(10);
      // The label-free tier never sees a task: a task law without labels is the length law.
      auto p = task_tier ? FitCheckedTraces(type, fit_tr, set.fit)
                         : FitCheckedTraces(type == "task_length_law" ? "length_law" : type, fit_free, set.fit);
      if (!p.ok()) return p.status();
      (task_tier ? model.task_score : model.score) = std::shared_ptr<const Predictor>(std::move(p).value());
      return OkStatus();
    }
    return Status(StatusCode::kInvalidArgument,
                  "cells: score source must be '', 'feature:NAME' or 'predictor:TYPE', got '" + src + "'");
  };
  Status src_st = set_source(spec.source, false);
  if (src_st.ok() && by_task) src_st = set_source(spec.task_source, true);
  if (!src_st.ok()) return src_st;
  // Edges of one tier in each length bucket, from the fit requests it serves.
  auto add_edges = [&](const std::string& tier, bool task_tier, const std::vector<size_t>& members, int buckets) {
    std::map<int32_t, std::vector<double>> scores;
    std::map<int32_t, size_t> counts;
    for (size_t i : members) {
      ++counts[lb_of(i)];
      if (auto s = CellsScore(model, task_tier, traces[i].features)) scores[lb_of(i)].push_back(*s);
    }
    for (auto& kv : scores) {
      const int eff = std::max<int>(1, std::min<int>(buckets, static_cast<int>(kv.second.size()) / set.min_cell));
      auto e = QuantileEdges(kv.second, eff);
      if (!e.empty()) model.score_edges.push_back(CellsEdges{tier, kv.first, e});
    }
  };
  add_edges(kAnyTask, false, fit_idx, spec.buckets);
  const std::vector<double> grid = StartGrid(set);
  const size_t G = grid.size();
  auto key_groups = [&](const std::string& tier, bool task_tier, const std::vector<size_t>& members) {
    CellsIndex idx(model);
    std::map<CellsKey, std::vector<size_t>> by_key;
    for (size_t i : members) {
      const int32_t lb = lb_of(i);
      by_key[CellsKey{tier, lb,
                      CellsScoreBucket(idx.Edges(tier, lb), CellsScore(model, task_tier, traces[i].features))}]
          .push_back(i);
    }
    std::vector<Group> groups;
    for (auto& kv : by_key) {
      Group g;
      std::tie(g.cell.task, g.cell.length_bucket, g.cell.score_bucket) = kv.first;
      g.members = std::move(kv.second);
      groups.push_back(std::move(g));
    }
    return groups;
  };
  std::vector<Group> free_groups = key_groups(kAnyTask, false, fit_idx);
  FillTables(traces, grid, set, &free_groups);
  std::vector<double> free_lambdas;
  const auto free_path = LagrangianPath(free_groups, G, &free_lambdas);

  std::vector<Group> task_groups;
  std::vector<std::vector<int>> task_path;
  std::vector<double> task_lambdas;
  if (by_task) {
    std::map<std::string, std::vector<size_t>> by;
    for (size_t i : fit_idx)
      if (traces[i].task() != kTaskUnknown) by[traces[i].task()].push_back(i);
    for (const auto& kv : by) {
      add_edges(kv.first, true, kv.second, spec.task_source.empty() ? 1 : spec.task_buckets);
      for (auto& g : key_groups(kv.first, true, kv.second))
        if (static_cast<int>(g.members.size()) >= set.min_cell) task_groups.push_back(std::move(g));
    }
    FillTables(traces, grid, set, &task_groups);
    task_path = LagrangianPath(task_groups, G, &task_lambdas);
  }

  auto build = [&](size_t free_level, const std::vector<int>* task_choice) -> Expected<std::unique_ptr<Predictor>> {
    CellsModel m = model;
    for (size_t c = 0; c < free_groups.size(); ++c) {
      CellsCell cell = free_groups[c].cell;
      cell.fraction = grid[static_cast<size_t>(free_path[free_level][c])];
      cell.abstained = free_groups[c].abstain;
      m.cells.push_back(cell);
    }
    if (task_choice != nullptr)
      for (size_t c = 0; c < task_groups.size(); ++c) {
        CellsCell cell = task_groups[c].cell;
        cell.fraction = grid[static_cast<size_t>((*task_choice)[c])];
        cell.abstained = task_groups[c].abstain;
        m.cells.push_back(cell);
      }
    m.default_fraction = 1.0;
    auto p = MakeCells(std::move(m));
    if (!p.ok()) return p.status();
    (*p)->set_limits(set.fit.limits);
    return std::move(p).value();
  };
  // Held-out requests, label-free and as given.
  std::vector<RequestFeatures> hold_free;
  for (size_t i : hold_idx) hold_free.push_back(StripTask(traces[i].features));
  const int64_t nh = static_cast<int64_t>(hold_idx.size());
  // Outcomes of the held-out part for one predictor.
  auto outcomes = [&](const Predictor& p, bool label_free, std::vector<SimOutcome>* out) -> Status {
    out->resize(hold_idx.size());
    for (size_t h = 0; h < hold_idx.size(); ++h) {
      const TraceRecord& r = traces[hold_idx[h]];
      auto pr = p.Predict(label_free ? hold_free[h] : r.features);
      if (!pr.ok()) return pr.status();
      (*out)[h] = Simulate(r, pr->total_blocks, set.escalation, set.fit.limits);
    }
    return OkStatus();
  };
  // Picks the least passing level of a path of `levels` points built by make(level).
  auto pick = [&](size_t levels, auto make, bool label_free) -> Expected<Pick> {
    Pick pk;
    std::vector<SimOutcome> o;
    if (set.escalation == nullptr) {
      auto misses_at = [&](size_t t) -> Expected<int64_t> {
        auto p = make(t);
        if (!p.ok()) return p.status();
        Status st = outcomes(**p, label_free, &o);
        if (!st.ok()) return st;
        int64_t m = 0;
        for (const auto& x : o) m += x.miss ? 1 : 0;
        return m;
      };
      size_t lo = 0, hi = levels - 1;  // the last level (dense) always passes
      while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        auto m = misses_at(mid);
        if (!m.ok()) return m.status();
        if (Passes(*m, nh, set))
          hi = mid;
        else
          lo = mid + 1;
      }
      pk.level = lo;
    } else {
      // The degraded indicator of an escalating request need not fall as its start budget
      // rises; conformal risk control needs a non-increasing loss, so a request's loss at level
      // t is its largest at any level >= t (an upper bound, which keeps the guarantee).
      std::vector<std::vector<char>> miss(levels, std::vector<char>(hold_idx.size(), 0));
      for (size_t t = 0; t < levels; ++t) {
        auto p = make(t);
        if (!p.ok()) return p.status();
        Status st = outcomes(**p, label_free, &o);
        if (!st.ok()) return st;
        for (size_t h = 0; h < o.size(); ++h) miss[t][h] = Loss(o[h], set) ? 1 : 0;
      }
      for (size_t t = levels - 1; t-- > 0;)
        for (size_t h = 0; h < hold_idx.size(); ++h) miss[t][h] = static_cast<char>(miss[t][h] | miss[t + 1][h]);
      pk.level = levels - 1;
      for (size_t t = 0; t < levels; ++t) {
        int64_t m = 0;
        for (char x : miss[t]) m += x;
        if (Passes(m, nh, set)) {
          pk.level = t;
          break;
        }
      }
    }
    auto p = make(pk.level);
    if (!p.ok()) return p.status();
    Status st = outcomes(**p, label_free, &o);
    if (!st.ok()) return st;
    for (const auto& x : o) {
      pk.mean_fraction += x.step_fraction;
      pk.miss_share += Loss(x, set) ? 1.0 : 0.0;
    }
    pk.mean_fraction /= static_cast<double>(nh);
    pk.miss_share /= static_cast<double>(nh);
    return pk;
  };
  auto free_pick = pick(
      free_path.size(), [&](size_t t) { return build(t, nullptr); }, true);
  if (!free_pick.ok()) return free_pick.status();
  CellsFit fit;
  fit.free_lambda = free_lambdas[free_pick->level];
  fit.hold_mean_fraction = free_pick->mean_fraction;
  fit.hold_miss_share = free_pick->miss_share;
  std::unique_ptr<Predictor> result;
  const std::vector<int>* task_choice = nullptr;
  if (by_task && !task_groups.empty()) {
    auto task_pick = pick(
        task_path.size(), [&](size_t t) { return build(free_pick->level, &task_path[t]); }, false);
    if (!task_pick.ok()) return task_pick.status();
    task_choice = &task_path[task_pick->level];
    fit.task_lambda = task_lambdas[task_pick->level];
    fit.hold_mean_fraction = task_pick->mean_fraction;
    fit.hold_miss_share = task_pick->miss_share;
  }
  auto p = build(free_pick->level, task_choice);
  if (!p.ok()) return p.status();
  fit.predictor = std::move(p).value();
  auto describe = [&](const Group& g) {
    std::string s = "tier=" + g.cell.task + " length_bucket=" + std::to_string(g.cell.length_bucket);
    const int32_t lb = g.cell.length_bucket;
    s += " (L in [" + (lb == 0 ? std::string("1") : std::to_string(model.length_edges[static_cast<size_t>(lb - 1)])) +
         ", " +
         (lb == static_cast<int32_t>(model.length_edges.size())
              ? std::string("inf")
              : std::to_string(model.length_edges[static_cast<size_t>(lb)])) +
         "))";
    s += " score_bucket=" + std::to_string(g.cell.score_bucket) + " n=" + std::to_string(g.members.size());
    return s;
  };
  for (const auto& g : free_groups)
    if (g.abstain) fit.abstained.push_back(describe(g));
  if (task_choice != nullptr)
    for (const auto& g : task_groups)
      if (g.abstain) fit.abstained.push_back(describe(g));
  return fit;
}

bool BuildGridOutcomes(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx, const CellSettings& set,
                       GridOutcomes* table) {
  const std::vector<double> grid = StartGrid(set);
  if (traces.size() > (size_t{1} << 24) / grid.size()) return false;
  table->traces = &traces;
  table->grid_size = grid.size();
  table->cost.assign(traces.size() * grid.size(), 0.0);
  table->loss.assign(traces.size() * grid.size(), 0);
  for (size_t i : idx)
    for (size_t k = 0; k < grid.size(); ++k) {
      const SimOutcome o = OutcomeAt(traces[i], grid[k], set);
      table->cost[i * grid.size() + k] = o.step_fraction;
      table->loss[i * grid.size() + k] = Loss(o, set) ? 1 : 0;
    }
  return true;
}

std::vector<std::vector<size_t>> TaskStratifiedFolds(const std::vector<TraceRecord>& traces,
                                                     const std::vector<size_t>& idx, int folds, uint64_t seed) {
  std::map<std::string, std::vector<size_t>> by_task;
  for (size_t i : idx) by_task[traces[i].task()].push_back(i);
  std::vector<std::vector<size_t>> fold(static_cast<size_t>(folds));
  Rng rng(seed ^ 0x5EEDC0DEull);
  for (auto& kv : by_task) {
    auto& v = kv.second;
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.Below(i)]);
    for (size_t i = 0; i < v.size(); ++i) fold[i % static_cast<size_t>(folds)].push_back(v[i]);
  }
  return fold;
}

std::vector<size_t> AllFoldsBut(const std::vector<std::vector<size_t>>& folds, size_t k) {
  std::vector<size_t> out;
  for (size_t j = 0; j < folds.size(); ++j)
    if (j != k) out.insert(out.end(), folds[j].begin(), folds[j].end());
  std::sort(out.begin(), out.end());
  return out;
}

Expected<CellSpec> ChooseCellSpec(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx,
                                  const std::vector<CellSpec>& candidates, const CellSettings& set, int folds,
                                  uint64_t seed, std::string* report) {
  if (candidates.empty()) return Status(StatusCode::kInvalidArgument, "cells: no candidate signal");
  if (candidates.size() == 1) return candidates[0];
  const std::vector<std::vector<size_t>> fold = TaskStratifiedFolds(traces, idx, folds, seed);
  // Every candidate and fold reads the same outcomes.
  GridOutcomes table;
  CellSettings cached = set;
  if (BuildGridOutcomes(traces, idx, set, &table)) cached.grid_outcomes = &table;
  size_t best = 0;
  double best_score = kInf;
  for (size_t c = 0; c < candidates.size(); ++c) {
    double sum = 0;
    bool ok = true;
    for (int k = 0; k < folds && ok; ++k) {
      auto f = FitCells(traces, AllFoldsBut(fold, static_cast<size_t>(k)), fold[static_cast<size_t>(k)], candidates[c],
                        cached);
      if (!f.ok()) {
        ok = false;
        if (report) *report += "  " + candidates[c].Describe() + ": skipped (" + f.status().message() + ")\n";
        break;
      }
      sum += f->hold_mean_fraction;
    }
    if (!ok) continue;
    const double score = sum / folds;
    if (report) {
      char buf[64];
      (void)std::snprintf(buf, sizeof(buf), "%.4f", score);
      *report += "  " + candidates[c].Describe() + ": cv mean budget fraction " + buf + "\n";
    }
    if (score < best_score - 1e-9) {
      best_score = score;
      best = c;
    }
  }
  if (best_score == kInf) return Status(StatusCode::kInvalidArgument, "cells: no candidate signal could be fitted");
  return candidates[best];
}

Expected<CellSpec> ChooseCellSpecs(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx,
                                   const std::vector<CellSpec>& signals, const CellSettings& set, int folds,
                                   uint64_t seed, std::string* report) {
  if (!HasTaskLabels(traces, idx)) return ChooseCellSpec(traces, idx, signals, set, folds, seed, report);
  // The label-free tier serves requests without a label: its signal is chosen on requests
  // without one, so it does not pay for the task tiers' choice.
  std::vector<TraceRecord> unlabelled = traces;
  for (size_t i : idx) unlabelled[i].features = StripTask(traces[i].features);
  if (report) *report += " label-free tier (task labels removed):\n";
  auto free = ChooseCellSpec(unlabelled, idx, signals, set, folds, seed, report);
  if (!free.ok()) return free.status();
  unlabelled.clear();
  // Task tiers: every signal, or none, with the label-free tier fixed.
  std::vector<CellSpec> cands = {*free};
  cands.front().by_task = false;
  for (const auto& s : signals) {
    CellSpec c = *free;
    c.by_task = true;
    c.task_source = s.source;
    c.task_buckets = s.buckets;
    cands.push_back(c);
  }
  if (report) *report += " task tiers (labelled; none = the label-free tier alone):\n";
  return ChooseCellSpec(traces, idx, cands, set, folds, seed, report);
}

std::vector<CellSpec> CellCandidates(const std::string& type, const std::vector<TraceRecord>& traces,
                                     const std::vector<size_t>& idx) {
  std::vector<CellSpec> out;
  auto add = [&](const std::string& src, int b) {
    CellSpec s;
    s.source = src;
    s.buckets = b;
    out.push_back(s);
  };
  auto add_source = [&](const std::string& src) {
    for (int b : {2, 3, 4, 6, 8}) add(src, b);
  };
  auto usable = [&](const std::string& name) {
    size_t known = 0;
    std::set<double> distinct;
    for (size_t i : idx)
      if (auto v = traces[i].features.Get(name)) {
        ++known;
        if (distinct.size() < 3) distinct.insert(*v);
      }
    return known * 2 >= idx.size() && distinct.size() >= 2;
  };
  if (type == "auto") {
    add("", 1);
    std::set<std::string> names;
    for (const auto& k : kOptionalFeatureFields) names.insert(k.name);
    for (size_t i : idx)
      for (const auto& kv : traces[i].features.extra) names.insert(kv.first);
    for (const auto& n : names)
      if (usable(n)) add_source("feature:" + n);
    add_source("predictor:linear");
    if (usable("probe_blocks_90")) add_source("predictor:probe");
  } else if (type == "fixed") {
    add("predictor:fixed", 1);
  } else {
    add("predictor:" + type, 1);
    add_source("predictor:" + type);
  }
  return out;
}

}  // namespace sparsebudget::detail
