// Calibration to a target: degraded share (conformal risk control on a held-out split) or mean
// budget (quantile threshold on the calibration traffic).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "calibration/cells.hpp"
#include "calibration/internal.hpp"

namespace sparsebudget {

namespace {
using namespace detail;

// Scale family of the non-table predictors: 2^(t/8) for t = -64..64, then dense.
std::vector<double> ScaleFamily() {
  std::vector<double> s;
  for (int t = -64; t <= 64; ++t) s.push_back(std::exp2(t / 8.0));
  return s;
}

struct Stats {
  double mean_fraction = 0, degraded = 0, miss = 0;
};

Stats StatsOf(const Predictor& p, const std::vector<TraceRecord>& tr, const std::vector<size_t>& idx) {
  Stats s;
  for (size_t i : idx) {
    auto pr = p.Predict(tr[i].features);
    if (!pr.ok()) continue;  // features were validated when the traces were read
    s.mean_fraction += pr->fraction;
    s.degraded += Degraded(tr[i], pr->total_blocks) ? 1.0 : 0.0;
    s.miss += pr->total_blocks < MonotoneOracleBlocks(tr[i]) ? 1.0 : 0.0;
  }
  const double n = std::max<double>(1.0, static_cast<double>(idx.size()));
  s.mean_fraction /= n;
  s.degraded /= n;
  s.miss /= n;
  return s;
}

// Picks the least index t of a nested family (misses[t] nonincreasing, last entry 0) meeting the
// target: conformal risk control (delta = 0) or fixed-sequence binomial tests (delta > 0).
size_t PickLevel(const std::vector<int64_t>& misses, int64_t n, double alpha, double delta) {
  const size_t T = misses.size();
  if (delta <= 0) {
    for (size_t t = 0; t < T; ++t)
      if ((static_cast<double>(misses[t]) + 1.0) / (static_cast<double>(n) + 1.0) <= alpha) return t;
    return T - 1;
  }
  size_t chosen = T - 1;
  for (size_t t = T; t-- > 0;) {
    if (BinomCdf(misses[t], n, alpha) <= delta)
      chosen = t;
    else
      break;
  }
  return chosen;
}

std::string Fmt(const char* f, double v) {
  char buf[64];
  (void)std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

// Mean fraction of `p` with its limits' scale multiplied by s, over all traces.
double MeanAtScale(const Predictor& p, const std::vector<BaseEstimate>& est, const std::vector<TraceRecord>& tr,
                   double s) {
  BudgetLimits l = p.limits();
  l.scale *= s;
  double sum = 0;
  for (size_t i = 0; i < tr.size(); ++i)
    sum += static_cast<double>(TotalBlocks(l, est[i].blocks, tr[i])) / static_cast<double>(tr[i].causal_blocks());
  return sum / static_cast<double>(tr.size());
}

// Scale multiplier s with mean fraction == target (bisection on log s; the mean is monotone).
double SolveScale(const Predictor& p, const std::vector<BaseEstimate>& est, const std::vector<TraceRecord>& tr,
                  double target) {
  double lo = -40, hi = 40;  // log2 s
  for (int it = 0; it < 80; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (MeanAtScale(p, est, tr, std::exp2(mid)) < target)
      lo = mid;
    else
      hi = mid;
  }
  // Of the two brackets, take the one whose mean is closer to the target.
  const double mlo = MeanAtScale(p, est, tr, std::exp2(lo)), mhi = MeanAtScale(p, est, tr, std::exp2(hi));
  return std::fabs(mlo - target) < std::fabs(mhi - target) ? std::exp2(lo) : std::exp2(hi);
}

std::unique_ptr<Predictor> WithScale(const Predictor& p, double s) {
  auto q = p.Clone();
  BudgetLimits l = q->limits();
  l.scale *= s;
  q->set_limits(l);
  return q;
}

bool HasSelfCheck(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx) {
  for (size_t i : idx)
    for (const auto& p : traces[i].curve)
      if (p.top1_prob) return true;
  return false;
}

// Candidate thresholds: 0 (no escalation) and quantiles of the probabilities the fit part
// recorded below dense, first-token and answer minimum alike (the policy compares every token).
std::vector<double> ThresholdCandidates(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx) {
  std::vector<double> first, least;
  for (size_t i : idx)
    for (const auto& p : traces[i].curve) {
      if (p.blocks >= traces[i].causal_blocks()) continue;
      if (p.top1_prob) first.push_back(*p.top1_prob);
      if (p.min_top1_prob) least.push_back(*p.min_top1_prob);
    }
  std::vector<double> out;
  for (auto* v : {&first, &least}) {
    std::sort(v->begin(), v->end());
    if (v->empty()) continue;
    // Low quantiles too: a self-check that separates well pays most at a threshold that few
    // intact decodes fall below.
    for (double q : {0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5}) {
      // Escalate below t: nudge past ties so the quantile's own value counts as unsure.
      const double t = std::nextafter((*v)[static_cast<size_t>(q * static_cast<double>(v->size() - 1))], 2.0);
      if (t > 0.0 && t <= 1.0) out.push_back(t);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end(), [](double a, double b) { return std::fabs(a - b) < 1e-9; }), out.end());
  out.insert(out.begin(), 0.0);
  return out;
}

Expected<CalibrationResult> CalibrateCells(const std::string& type, const std::vector<TraceRecord>& traces,
                                           const std::vector<size_t>& fit_idx, const std::vector<size_t>& hold_idx,
                                           const CalibrationOptions& opt) {
  static const char* const kTypes[] = {"auto", "fixed", "length_law", "task_length_law", "linear", "probe", "table"};
  if (std::find_if(std::begin(kTypes), std::end(kTypes), [&](const char* t) { return type == t; }) == std::end(kTypes))
    return Status(StatusCode::kNotFound,
                  "calibrate: unknown or unfittable predictor type '" + type +
                      "' (fittable: auto, fixed, length_law, task_length_law, linear, probe, table)");
  if (opt.min_cell < 1)
    return Status(StatusCode::kInvalidArgument,
                  "calibrate: min_cell must be >= 1, got " + std::to_string(opt.min_cell));
  if (!(opt.abstain_above >= 0 && opt.abstain_above <= 1))
    return Status(StatusCode::kInvalidArgument,
                  "calibrate: abstain_above must be in [0, 1], got " + std::to_string(opt.abstain_above));
  if (opt.cv_folds < 2 || opt.cv_folds > 10)
    return Status(StatusCode::kInvalidArgument,
                  "calibrate: cv_folds must be in [2, 10], got " + std::to_string(opt.cv_folds));
  Status st = ValidateLimits(opt.fit.limits);
  if (!st.ok()) return st;
  CellSettings set;
  set.alpha = opt.target_degraded;
  set.delta = opt.delta;
  set.abstain_above = opt.abstain_above;
  set.min_cell = opt.min_cell;
  set.fit = opt.fit;
  const bool labelled = HasTaskLabels(traces, fit_idx);
  CalibrationResult res;
  Expected<CellSpec> spec = CellSpec{};
  if (type == "table") {
    if (opt.fit.bucket_count < 1 || opt.fit.bucket_count > 16)
      return Status(StatusCode::kInvalidArgument,
                    "calibrate: bucket_count must be in [1, 16], got " + std::to_string(opt.fit.bucket_count));
    // The table's shape is given: the same feature buckets in every tier, task tiers with labels.
    const std::string src = opt.fit.bucket_feature.empty() ? "" : "feature:" + opt.fit.bucket_feature;
    const int b = opt.fit.bucket_feature.empty() ? 1 : opt.fit.bucket_count;
    spec = CellSpec{src, b, labelled, src, b};
  } else {
    spec = ChooseCellSpecs(traces, fit_idx, CellCandidates(type, traces, fit_idx), set, opt.cv_folds, opt.seed,
                           &res.selection);
  }
  if (!spec.ok()) return spec.status();
  res.signal = spec->Describe();
  std::unique_ptr<EscalationPolicy> policy;
  if (opt.escalation) {
    if (!HasSelfCheck(traces, fit_idx))
      return Status(
          StatusCode::kInvalidArgument,
          "calibrate: --escalation needs curve points with 'top1_prob' (and 'min_top1_prob'); these traces have none");
    auto ladder_ok = EscalationPolicy::Create(0.0, opt.escalation_ladder);
    if (!ladder_ok.ok()) return ladder_ok.status();
    // Threshold and mode by cross-validation on the fit part (the held-out part stays for the
    // guarantee), with the folds of the signal choice: the candidate of least mean step budget
    // over the held-out folds, each at the level it picks there. Threshold 0 (no policy, the
    // first candidate) is the baseline: the best policy is kept only if its paired gain over it
    // (per fold, no policy minus policy) exceeds twice its standard error, so that the best of
    // some 40 candidates is not adopted on fold noise alone.
    std::vector<std::vector<size_t>> folds = TaskStratifiedFolds(traces, fit_idx, opt.cv_folds, opt.seed + 7);
    // A small fit part leaves folds empty (each task's requests are dealt from fold 0): drop them;
    // with fewer than two left nothing can be cross-validated, and no policy is kept.
    folds.erase(std::remove_if(folds.begin(), folds.end(), [](const std::vector<size_t>& f) { return f.empty(); }),
                folds.end());
    std::vector<double> plain_folds, best_folds;
    double best = HUGE_VAL, best_thr = 0.0;
    EscalationMode best_mode = EscalationMode::kRecomputeStep;
    if (folds.size() < 2)
      res.selection += "  escalation: the fit part (" + std::to_string(fit_idx.size()) +
                       " requests) is too small to cross-validate a policy; none kept\n";
    for (const EscalationMode mode :
         {EscalationMode::kRecomputeStep, EscalationMode::kRestartAnswer, EscalationMode::kFirstToken})
      for (double thr : folds.size() < 2 ? std::vector<double>{} : ThresholdCandidates(traces, fit_idx)) {
        if (thr == 0.0 && mode != EscalationMode::kRecomputeStep) continue;  // the same as no policy
        auto pol = EscalationPolicy::Create(thr, opt.escalation_ladder, mode);
        if (!pol.ok()) return pol.status();
        CellSettings s2 = set;
        s2.escalation = thr > 0 ? &*pol : nullptr;  // threshold 0: no policy, the plain calibration
        GridOutcomes table;                         // shared by the folds
        if (BuildGridOutcomes(traces, fit_idx, s2, &table)) s2.grid_outcomes = &table;
        double cv = 0.0;
        std::vector<double> per_fold;
        for (size_t k = 0; k < folds.size(); ++k) {
          auto f = FitCells(traces, AllFoldsBut(folds, k), folds[k], *spec, s2);
          if (!f.ok()) return f.status();
          cv += f->hold_mean_fraction / static_cast<double>(folds.size());
          per_fold.push_back(f->hold_mean_fraction);
        }
        if (thr == 0.0) plain_folds = per_fold;
        char buf[96];
        (void)std::snprintf(buf, sizeof(buf), "  escalation %s threshold %.4f: cv mean step budget %.4f\n",
                            EscalationModeName(mode), thr, cv);
        res.selection += buf;
        if (cv < best - 1e-9) {
          best = cv;
          best_thr = thr;
          best_mode = mode;
          best_folds = per_fold;
        }
      }
    if (best_thr > 0) {
      const double k = static_cast<double>(folds.size());
      double mean = 0, var = 0;
      for (size_t i = 0; i < folds.size(); ++i) mean += (plain_folds[i] - best_folds[i]) / k;
      for (size_t i = 0; i < folds.size(); ++i) var += std::pow(plain_folds[i] - best_folds[i] - mean, 2) / (k - 1);
      const double se = std::sqrt(var / k);
      res.selection += "  best policy's paired gain over no policy: " + Fmt("%.4f", mean) + " (standard error " +
                       Fmt("%.4f", se) + ")" + (mean > 2 * se ? ": kept\n" : ": within the folds' noise, not kept\n");
      if (!(mean > 2 * se)) best_thr = 0.0, best_mode = EscalationMode::kRecomputeStep;
    }
    auto pol = EscalationPolicy::Create(best_thr, opt.escalation_ladder, best_mode);
    if (!pol.ok()) return pol.status();
    policy = std::make_unique<EscalationPolicy>(std::move(pol).value());
    set.escalation = best_thr > 0 ? policy.get() : nullptr;
    res.escalation_threshold = best_thr;
    if (best_thr <= 0)
      res.selection += "  escalation did not pay on these traces: the start budgets are the plain calibration's\n";
  }
  auto fit = FitCells(traces, fit_idx, hold_idx, *spec, set);
  if (!fit.ok()) return fit.status();
  res.abstained_cells = fit->abstained;
  res.chosen_value = fit->free_lambda;
  res.method = std::string(opt.delta > 0 ? "cells+binomial" : "cells+crc") + (policy ? "+escalation" : "");
  res.predictor = policy ? MakeEscalate(std::move(fit->predictor), *policy) : std::move(fit->predictor);
  res.num_fit = static_cast<int64_t>(fit_idx.size());
  res.num_holdout = static_cast<int64_t>(hold_idx.size());
  // Figures on the calibration traces, as evaluation counts them (escalation simulated).
  double all_frac = 0, h_frac = 0, h_deg = 0, h_miss = 0;
  std::vector<bool> is_hold(traces.size(), false);
  for (size_t i : hold_idx) is_hold[i] = true;
  const Predictor& start = policy ? *EscalationMember(*res.predictor) : *res.predictor;
  for (size_t i = 0; i < traces.size(); ++i) {
    auto pr = start.Predict(traces[i].features);
    if (!pr.ok()) return pr.status();
    const SimOutcome o = Simulate(traces[i], pr->total_blocks, policy.get(), start.limits());
    all_frac += o.step_fraction;
    if (is_hold[i]) {
      h_frac += o.step_fraction;
      h_deg += o.degraded ? 1 : 0;
      h_miss += o.miss ? 1 : 0;
    }
  }
  const double nh = static_cast<double>(hold_idx.size());
  res.fit_mean_fraction = all_frac / static_cast<double>(traces.size());
  res.holdout_mean_fraction = h_frac / nh;
  res.holdout_degraded_share = h_deg / nh;
  res.holdout_miss_share = h_miss / nh;
  res.summary = "calibrated " + res.predictor->type() + " (" + res.method + ", signal " + res.signal +
                (policy ? ", escalation threshold " + Fmt("%.4g", res.escalation_threshold) : std::string()) +
                "): mean_budget_fraction=" + Fmt("%.4f", res.fit_mean_fraction) +
                " holdout_degraded=" + Fmt("%.4f", res.holdout_degraded_share) +
                " holdout_miss=" + Fmt("%.4f", res.holdout_miss_share) +
                " target_degraded=" + Fmt("%.4g", opt.target_degraded) + " n_fit=" + std::to_string(res.num_fit) +
                " n_holdout=" + std::to_string(res.num_holdout) +
                " abstained_cells=" + std::to_string(res.abstained_cells.size());
  return res;
}

}  // namespace

Expected<CalibrationResult> Calibrate(const std::string& type, const Predictor* base,
                                      const std::vector<TraceRecord>& traces, const CalibrationOptions& opt) {
  const bool by_degraded = opt.target_degraded >= 0;
  const bool by_mean = opt.target_mean_fraction >= 0;
  if (by_degraded == by_mean)
    return Status(StatusCode::kInvalidArgument,
                  "calibrate: give exactly one of target_degraded and target_mean_fraction");
  if (by_degraded && !(opt.target_degraded > 0 && opt.target_degraded < 1))
    return Status(StatusCode::kInvalidArgument,
                  "calibrate: target_degraded must be in (0, 1), got " + std::to_string(opt.target_degraded));
  if (by_mean && !(opt.target_mean_fraction > 0 && opt.target_mean_fraction <= 1))
    return Status(StatusCode::kInvalidArgument,
                  "calibrate: target_mean_fraction must be in (0, 1], got " + std::to_string(opt.target_mean_fraction));
  if (!(opt.holdout >= 0.05 && opt.holdout <= 0.95))
    return Status(StatusCode::kInvalidArgument,
                  "calibrate: holdout must be in [0.05, 0.95], got " + std::to_string(opt.holdout));
  if (!(opt.delta >= 0 && opt.delta < 1))
    return Status(StatusCode::kInvalidArgument, "calibrate: delta must be in [0, 1), got " + std::to_string(opt.delta));
  if (traces.size() < 2) return Status(StatusCode::kInvalidArgument, "calibrate: need at least 2 traces");
  if (Status st = detail::CheckTraces("calibrate", traces); !st.ok()) return st;

  CalibrationResult res;
  std::vector<size_t> fit_idx, hold_idx, all_idx(traces.size());
  for (size_t i = 0; i < traces.size(); ++i) all_idx[i] = i;
  if (by_degraded && base != nullptr) {
    hold_idx = all_idx;  // nothing is fitted: every trace can serve the finite-sample correction
  } else if (by_degraded) {
    SplitIndices(traces, opt.holdout, opt.seed, &fit_idx, &hold_idx);
    if (hold_idx.empty() || fit_idx.empty())
      return Status(StatusCode::kInvalidArgument, "calibrate: the split left an empty part; use more traces");
  } else {
    fit_idx = all_idx;
  }
  if (by_degraded && base == nullptr) return CalibrateCells(type, traces, fit_idx, hold_idx, opt);
  if (type == "auto") return Status(StatusCode::kInvalidArgument, "calibrate: 'auto' needs target_degraded");
  if (opt.escalation)
    return Status(StatusCode::kInvalidArgument, "calibrate: escalation needs target_degraded and a fitted type");
  std::vector<TraceRecord> fit_tr;
  for (size_t i : fit_idx) fit_tr.push_back(traces[i]);
  const bool table = base == nullptr && type == "table";
  const int64_t nh = static_cast<int64_t>(hold_idx.size());

  if (table) {
    std::vector<const TraceRecord*> ptrs;
    for (const auto& r : fit_tr) ptrs.push_back(&r);
    auto path = BuildTablePath(ptrs, opt.fit);
    if (!path.ok()) return path.status();
    size_t chosen = 0;
    if (by_degraded) {
      std::vector<int64_t> misses(path->size());
      for (size_t t = 0; t < path->size(); ++t) {
        auto p = path->At(t, opt.fit.limits);
        if (!p.ok()) return p.status();
        misses[t] = static_cast<int64_t>(std::llround(StatsOf(**p, traces, hold_idx).miss * static_cast<double>(nh)));
      }
      chosen = PickLevel(misses, nh, opt.target_degraded, opt.delta);
      res.method = opt.delta > 0 ? "lagrangian_table+binomial" : "lagrangian_table+crc";
      auto p = path->At(chosen, opt.fit.limits);
      if (!p.ok()) return p.status();
      res.predictor = std::move(p).value();
    } else {
      // Largest lambda whose mean budget is <= the target, then a scale to meet it exactly.
      for (size_t t = 0; t < path->size(); ++t) {
        auto p = path->At(t, opt.fit.limits);
        if (!p.ok()) return p.status();
        if (StatsOf(**p, traces, all_idx).mean_fraction <= opt.target_mean_fraction) chosen = t;
      }
      auto p = path->At(chosen, opt.fit.limits);
      if (!p.ok()) return p.status();
      auto est = BaseEstimates(**p, traces);
      if (!est.ok()) return est.status();
      res.predictor = WithScale(**p, SolveScale(**p, *est, traces, opt.target_mean_fraction));
      res.method = "lagrangian_table+mean";
    }
    res.chosen_value = path->lambdas[chosen];
  } else {
    std::unique_ptr<Predictor> fitted;
    if (base != nullptr) {
      fitted = base->Clone();
    } else {
      auto f = FitCheckedTraces(type, fit_tr, opt.fit);
      if (!f.ok()) return f.status();
      fitted = std::move(f).value();
    }
    auto est = BaseEstimates(*fitted, traces);
    if (!est.ok()) return est.status();
    double s = 1.0;
    if (by_degraded) {
      const auto fam = ScaleFamily();
      std::vector<int64_t> misses(fam.size() + 1, 0);
      for (size_t t = 0; t < fam.size(); ++t) {
        BudgetLimits l = fitted->limits();
        l.scale *= fam[t];
        for (size_t i : hold_idx)
          misses[t] += TotalBlocks(l, (*est)[i].blocks, traces[i]) < MonotoneOracleBlocks(traces[i]) ? 1 : 0;
      }
      const size_t t = PickLevel(misses, nh, opt.target_degraded, opt.delta);
      if (t == fam.size()) {  // even the largest scale misses too often: dense
        auto dense = MakeFixedFraction(1.0);
        res.predictor = std::move(dense);
        s = HUGE_VAL;
      } else {
        s = fam[t];
        res.predictor = WithScale(*fitted, s);
      }
      res.method = opt.delta > 0 ? "scale+binomial" : "scale+crc";
    } else {
      s = SolveScale(*fitted, *est, traces, opt.target_mean_fraction);
      res.predictor = WithScale(*fitted, s);
      res.method = "scale+mean";
    }
    res.chosen_value = s;
  }

  res.num_fit = static_cast<int64_t>(fit_idx.size());
  res.num_holdout = nh;
  const Stats all = StatsOf(*res.predictor, traces, all_idx);
  res.fit_mean_fraction = all.mean_fraction;
  std::string line = "calibrated " + res.predictor->type() + " (" + res.method +
                     "): " + (table ? "lambda=" : "scale=") + Fmt("%.6g", res.chosen_value) +
                     " mean_budget_fraction=" + Fmt("%.4f", all.mean_fraction);
  if (by_degraded) {
    const Stats h = StatsOf(*res.predictor, traces, hold_idx);
    res.holdout_mean_fraction = h.mean_fraction;
    res.holdout_degraded_share = h.degraded;
    res.holdout_miss_share = h.miss;
    line += " holdout_degraded=" + Fmt("%.4f", h.degraded) + " holdout_miss=" + Fmt("%.4f", h.miss) +
            " target_degraded=" + Fmt("%.4g", opt.target_degraded) + " n_fit=" + std::to_string(res.num_fit) +
            " n_holdout=" + std::to_string(nh);
  } else {
    line += " target_mean_budget=" + Fmt("%.4g", opt.target_mean_fraction) + " n=" + std::to_string(res.num_fit);
  }
  res.summary = line;
  return res;
}

}  // namespace sparsebudget
