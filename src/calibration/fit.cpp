// Fitting predictors on traces: laws (log-log least squares), linear (ridge / pinball with
// Eigen), probe margin, fixed, and the table's Lagrangian path.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <Eigen/Dense>

#include "calibration/internal.hpp"

namespace sparsebudget {
namespace detail {

Status CheckTraces(const char* fn, const std::vector<TraceRecord>& traces) {
  for (size_t i = 0; i < traces.size(); ++i) {
    const Status st = ValidateTraceRecord(traces[i]);
    if (!st.ok())
      return Status(st.code(), std::string(fn) + ": traces[" + std::to_string(i) + "] (id '" + traces[i].id +
                                   "'): " + st.message());
  }
  return OkStatus();
}

double FitTargetBlocks(const TraceRecord& r) {
  const int64_t o = MonotoneOracleBlocks(r);
  int64_t lower = 0;
  for (const auto& p : r.curve)
    if (p.blocks < o) lower = p.blocks;
  if (lower <= 0) return static_cast<double>(o);
  return std::sqrt(static_cast<double>(lower) * static_cast<double>(o));
}

bool Informative(const TraceRecord& r) { return r.dense_quality > 0.0; }

Expected<std::vector<BaseEstimate>> BaseEstimates(const Predictor& p, const std::vector<TraceRecord>& traces) {
  std::vector<BaseEstimate> out(traces.size());
  for (size_t i = 0; i < traces.size(); ++i) {
    auto pr = p.Predict(traces[i].features);
    if (!pr.ok()) {
      return Status(pr.status().code(), "trace '" + traces[i].id + "' (line " + std::to_string(traces[i].line) +
                                            "): " + pr.status().message());
    }
    out[i] = BaseEstimate{pr->estimate_blocks, pr->fallback};
  }
  return out;
}

void SplitIndices(const std::vector<TraceRecord>& traces, double holdout, uint64_t seed, std::vector<size_t>* fit,
                  std::vector<size_t>* hold) {
  std::map<std::string, std::vector<size_t>> by_task;
  for (size_t i = 0; i < traces.size(); ++i) by_task[traces[i].task()].push_back(i);
  Rng rng(seed);
  for (auto& kv : by_task) {
    auto& v = kv.second;
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.Below(i)]);
    const size_t nh = static_cast<size_t>(std::llround(holdout * static_cast<double>(v.size())));
    for (size_t i = 0; i < v.size(); ++i) (i < nh ? hold : fit)->push_back(v[i]);
  }
  std::sort(fit->begin(), fit->end());
  std::sort(hold->begin(), hold->end());
}

std::vector<int64_t> LengthEdges(const std::vector<const TraceRecord*>& traces) {
  std::set<int> levels;
  for (const auto* r : traces)
    levels.insert(static_cast<int>(std::lround(std::log2(static_cast<double>(r->context_length())))));
  std::vector<int64_t> edges;
  int prev = -1;
  for (int l : levels) {
    if (prev >= 0) edges.push_back(static_cast<int64_t>(std::llround(std::exp2(0.5 * (prev + l)))));
    prev = l;
  }
  return edges;
}

double BinomCdf(int64_t k, int64_t n, double p) {
  if (k >= n) return 1.0;
  if (k < 0) return 0.0;
  if (p <= 0) return 1.0;
  if (p >= 1) return 0.0;
  double sum = 0.0;
  const double lp = std::log(p), lq = std::log1p(-p);
  for (int64_t i = 0; i <= k; ++i) {
    // lgamma_r: std::lgamma writes the global signgam, a data race between concurrent calls.
    int sign = 0;
    const double lc = lgamma_r(static_cast<double>(n) + 1, &sign) - lgamma_r(static_cast<double>(i) + 1, &sign) -
                      lgamma_r(static_cast<double>(n - i) + 1, &sign);
    sum += std::exp(lc + static_cast<double>(i) * lp + static_cast<double>(n - i) * lq);
  }
  return std::min(1.0, sum);
}

int32_t LengthBucket(const TableModel& shape, int64_t length) {
  return static_cast<int32_t>(std::upper_bound(shape.length_edges.begin(), shape.length_edges.end(), length) -
                              shape.length_edges.begin());
}

int32_t FeatureBucket(const TableModel& shape, const RequestFeatures& f) {
  if (shape.bucket_feature.empty()) return -1;
  auto v = f.Get(shape.bucket_feature);
  if (!v) return -1;
  return static_cast<int32_t>(std::upper_bound(shape.feature_edges.begin(), shape.feature_edges.end(), *v) -
                              shape.feature_edges.begin());
}

Expected<std::unique_ptr<Predictor>> TablePath::At(size_t point, const BudgetLimits& limits) const {
  TableModel m = shape;
  m.cells = cells;
  for (size_t c = 0; c < cells.size(); ++c) m.cells[c].fraction = grid[static_cast<size_t>(choice[point][c])];
  m.default_fraction = 1.0;
  auto p = MakeTable(std::move(m));
  if (!p.ok()) return p.status();
  (*p)->set_limits(limits);
  return std::move(p).value();
}

Expected<TablePath> BuildTablePath(const std::vector<const TraceRecord*>& traces, const FitOptions& opt) {
  if (traces.empty()) return Status(StatusCode::kInvalidArgument, "table fit: no traces");
  if (opt.bucket_count < 1 || opt.bucket_count > 16)
    return Status(StatusCode::kInvalidArgument,
                  "table fit: bucket_count must be in [1, 16], got " + std::to_string(opt.bucket_count));
  TablePath path;
  path.shape.length_edges = LengthEdges(traces);
  path.shape.bucket_feature = opt.bucket_feature;
  if (!opt.bucket_feature.empty()) {
    std::vector<double> vals;
    for (const auto* r : traces)
      if (auto v = r->features.Get(opt.bucket_feature)) vals.push_back(*v);
    if (vals.empty())
      return Status(StatusCode::kInvalidArgument,
                    "table fit: bucket feature '" + opt.bucket_feature + "' is unknown in every trace");
    std::sort(vals.begin(), vals.end());
    for (int b = 1; b < opt.bucket_count; ++b) {
      const double e = vals[static_cast<size_t>(static_cast<double>(vals.size() - 1) * b / opt.bucket_count)];
      if (path.shape.feature_edges.empty() || e > path.shape.feature_edges.back())
        path.shape.feature_edges.push_back(e);
    }
  }
  // Candidate fractions: 0 (forced blocks only) and 2^(k/8) / 256 up to 1.
  path.grid.push_back(0.0);
  for (int k = 0; k <= 64; ++k) path.grid.push_back(std::exp2(k / 8.0) / 256.0);
  path.grid.back() = 1.0;
  const size_t G = path.grid.size();
  // Group requests into cells.
  std::map<std::tuple<std::string, int32_t, int32_t>, std::vector<const TraceRecord*>> groups;
  for (const auto* r : traces)
    groups[{r->task(), LengthBucket(path.shape, r->context_length()), FeatureBucket(path.shape, r->features)}]
        .push_back(r);
  std::vector<std::vector<double>> cost, miss;
  for (const auto& g : groups) {
    TableCell c;
    std::tie(c.task, c.length_bucket, c.feature_bucket) = g.first;
    path.cells.push_back(c);
    std::vector<double> cc(G, 0.0), mc(G, 0.0);
    for (const auto* r : g.second) {
      const int64_t nb = r->causal_blocks();
      const int64_t oracle = MonotoneOracleBlocks(*r);
      for (size_t k = 0; k < G; ++k) {
        const int64_t b = TotalBlocks(opt.limits, path.grid[k] * static_cast<double>(nb), *r);
        cc[k] += static_cast<double>(b) / static_cast<double>(nb);
        mc[k] += b < oracle ? 1.0 : 0.0;
      }
    }
    cost.push_back(cc);
    miss.push_back(mc);
  }
  const size_t C = path.cells.size();
  std::vector<double> lambdas = {0.0};
  for (int k = -100; k <= 80; ++k) lambdas.push_back(std::pow(10.0, k / 20.0));
  std::vector<int> prev(C, 0);
  for (double lam : lambdas) {
    std::vector<int> ch(C);
    for (size_t c = 0; c < C; ++c) {
      size_t best = 0;
      double bv = cost[c][0] + lam * miss[c][0];
      for (size_t k = 1; k < G; ++k) {
        const double v = cost[c][k] + lam * miss[c][k];
        if (v < bv - 1e-12) {
          bv = v;
          best = k;
        }
      }
      ch[c] = std::max(prev[c], static_cast<int>(best));
    }
    if (path.choice.empty() || ch != path.choice.back()) {
      path.choice.push_back(ch);
      path.lambdas.push_back(lam);
    }
    prev = ch;
  }
  // Least-miss end (lambda -> inf): the cheapest fraction with the fewest misses, then dense.
  {
    std::vector<int> ch(C);
    for (size_t c = 0; c < C; ++c) {
      size_t best = 0;
      for (size_t k = 1; k < G; ++k)
        if (miss[c][k] < miss[c][best] - 1e-12) best = k;
      ch[c] = std::max(prev[c], static_cast<int>(best));
    }
    if (ch != path.choice.back()) {
      path.choice.push_back(ch);
      path.lambdas.push_back(HUGE_VAL);
    }
    std::vector<int> dense(C, static_cast<int>(G - 1));
    if (dense != path.choice.back()) {
      path.choice.push_back(dense);
      path.lambdas.push_back(HUGE_VAL);
    }
  }
  return path;
}

namespace {

// Ordinary least squares of y on x: returns (intercept, slope).
std::pair<double, double> Ols(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
  }
  const double slope = sxx > 0 ? sxy / sxx : 0.0;
  return {my - slope * mx, slope};
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

std::vector<std::string> DefaultTerms(const std::vector<const TraceRecord*>& tr) {
  std::vector<std::string> terms = {"log_length"};
  std::set<std::string> tasks;
  for (const auto* r : tr) tasks.insert(r->task());
  // One-hot for all tasks but the first (the intercept carries it), with a length slope each.
  bool first = true;
  for (const auto& t : tasks) {
    if (first) {
      first = false;
      continue;
    }
    terms.push_back("task:" + t);
    terms.push_back("log_length*task:" + t);
  }
  for (const char* f : {"entropy", "top1_prob", "log:probe_blocks_50", "log:probe_blocks_90", "log:probe_blocks_99",
                        "probe_entropy", "probe_top5_mass"}) {
    size_t known = 0;
    for (const auto* r : tr)
      if (r->features.Get(f)) ++known;
    if (known * 2 >= tr.size()) terms.push_back(f);
  }
  return terms;
}

Expected<std::unique_ptr<Predictor>> FitLinear(const std::vector<const TraceRecord*>& tr, const FitOptions& opt) {
  LinearModel m;
  m.terms = opt.terms.empty() ? DefaultTerms(tr) : opt.terms;
  m.l2 = opt.l2;
  m.quantile = opt.quantile;
  if (!(opt.l2 >= 0)) return Status(StatusCode::kInvalidArgument, "linear fit: l2 must be >= 0");
  if (!(opt.quantile >= 0 && opt.quantile < 1))
    return Status(StatusCode::kInvalidArgument, "linear fit: quantile must be 0 or in (0, 1)");
  const size_t n = tr.size(), k = m.terms.size();
  // Probe the term syntax with an empty model first (names the bad term).
  {
    LinearModel probe = m;
    probe.weights.assign(k, 0.0);
    probe.impute.assign(k, 0.0);
    auto p = MakeLinear(probe);
    if (!p.ok()) return p.status();
  }
  Eigen::MatrixXd X(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(k));
  std::vector<std::vector<bool>> known(n, std::vector<bool>(k, true));
  m.impute.assign(k, 0.0);
  for (size_t j = 0; j < k; ++j) {
    std::vector<std::string> parts;
    size_t s = 0;
    while (true) {
      const size_t p = m.terms[j].find('*', s);
      parts.push_back(m.terms[j].substr(s, p == std::string::npos ? std::string::npos : p - s));
      if (p == std::string::npos) break;
      s = p + 1;
    }
    double sum = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < n; ++i) {
      double v = 1.0;
      for (const auto& part : parts) {
        auto x = tr[i]->features.Get(part);
        if (!x) {
          known[i][j] = false;
          break;
        }
        v *= *x;
      }
      X(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = known[i][j] ? v : 0.0;
      if (known[i][j]) {
        sum += v;
        ++cnt;
      }
    }
    m.impute[j] = cnt ? sum / static_cast<double>(cnt) : 0.0;
    for (size_t i = 0; i < n; ++i)
      if (!known[i][j]) X(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = m.impute[j];
  }
  Eigen::VectorXd y(static_cast<Eigen::Index>(n));
  for (size_t i = 0; i < n; ++i) y(static_cast<Eigen::Index>(i)) = std::log(FitTargetBlocks(*tr[i]));
  // Standardise columns; constant columns get weight 0.
  Eigen::VectorXd mu = X.colwise().mean();
  Eigen::VectorXd sd(static_cast<Eigen::Index>(k));
  for (Eigen::Index j = 0; j < static_cast<Eigen::Index>(k); ++j) {
    const double v = (X.col(j).array() - mu(j)).square().mean();
    sd(j) = v > 1e-18 ? std::sqrt(v) : 0.0;
  }
  Eigen::MatrixXd Z(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(k) + 1);
  Z.col(0).setOnes();
  for (Eigen::Index j = 0; j < static_cast<Eigen::Index>(k); ++j)
    if (sd(j) > 0)
      Z.col(j + 1) = ((X.col(j).array() - mu(j)) / sd(j)).matrix();
    else
      Z.col(j + 1).setZero();
  Eigen::VectorXd w = Eigen::VectorXd::Ones(static_cast<Eigen::Index>(n));
  Eigen::VectorXd beta;
  const int iters = opt.quantile > 0 ? 60 : 1;
  for (int it = 0; it < iters; ++it) {
    Eigen::MatrixXd A = Z.transpose() * w.asDiagonal() * Z;
    const double scale = static_cast<double>(n);
    for (Eigen::Index j = 1; j < A.rows(); ++j) A(j, j) += opt.l2 * scale;  // no penalty on the intercept
    A(0, 0) += 1e-12;
    beta = A.ldlt().solve(Z.transpose() * w.asDiagonal() * y);
    if (opt.quantile > 0) {  // IRLS for the pinball loss
      Eigen::VectorXd r = y - Z * beta;
      for (Eigen::Index i = 0; i < r.size(); ++i) {
        const double a = std::max(std::fabs(r(i)), 1e-4);
        w(i) = (r(i) >= 0 ? opt.quantile : 1.0 - opt.quantile) / a;
      }
    }
  }
  m.weights.assign(k, 0.0);
  m.intercept = beta(0);
  for (size_t j = 0; j < k; ++j) {
    const auto jj = static_cast<Eigen::Index>(j);
    if (sd(jj) > 0) {
      m.weights[j] = beta(jj + 1) / sd(jj);
      m.intercept -= m.weights[j] * mu(jj);
    }
  }
  auto p = MakeLinear(std::move(m));
  if (!p.ok()) return p.status();
  (*p)->set_limits(opt.limits);
  return std::move(p).value();
}

}  // namespace
}  // namespace detail

Expected<std::unique_ptr<Predictor>> FitPredictor(const std::string& type, const std::vector<TraceRecord>& traces,
                                                  const FitOptions& opt) {
  if (Status st = detail::CheckTraces("fit", traces); !st.ok()) return st;
  return detail::FitCheckedTraces(type, traces, opt);
}

Expected<std::unique_ptr<Predictor>> detail::FitCheckedTraces(const std::string& type,
                                                              const std::vector<TraceRecord>& traces,
                                                              const FitOptions& opt) {
  using namespace detail;
  if (traces.empty()) return Status(StatusCode::kInvalidArgument, "fit: no traces");
  Status st = ValidateLimits(opt.limits);
  if (!st.ok()) return st;
  std::vector<const TraceRecord*> all, inf;
  for (const auto& r : traces) {
    all.push_back(&r);
    if (Informative(r)) inf.push_back(&r);
  }
  if (inf.empty()) inf = all;
  std::unique_ptr<Predictor> out;
  if (type == "fixed") {
    std::vector<double> fr;
    for (const auto* r : inf) fr.push_back(FitTargetBlocks(*r) / static_cast<double>(r->causal_blocks()));
    out = MakeFixedFraction(std::clamp(Quantile(fr, 0.5), 1e-6, 1.0));
  } else if (type == "length_law" || type == "task_length_law") {
    auto fit = [](const std::vector<const TraceRecord*>& v) {
      std::vector<double> x, y;
      for (const auto* r : v) {
        x.push_back(std::log(static_cast<double>(r->context_length())));
        y.push_back(std::log(FitTargetBlocks(*r) * static_cast<double>(r->features.block_size)));
      }
      const auto [b0, b1] = Ols(x, y);
      TaskLaw law;
      law.c = std::exp(b0);
      law.a = b1;
      std::vector<double> fr;
      for (const auto* r : v) fr.push_back(FitTargetBlocks(*r) / static_cast<double>(r->causal_blocks()));
      law.floor_fraction = std::clamp(Quantile(fr, 0.05), 0.0, 1.0);
      return law;
    };
    TaskLaw pooled = fit(inf);
    if (type == "length_law") {
      out = MakeLengthLaw(pooled.c, pooled.a);
    } else {
      std::map<std::string, std::vector<const TraceRecord*>> by;
      for (const auto* r : inf) by[r->task()].push_back(r);
      std::vector<TaskLaw> laws;
      for (const auto& kv : by) {
        std::set<int64_t> lens;
        for (const auto* r : kv.second) lens.insert(r->context_length());
        TaskLaw l = pooled;
        if (lens.size() >= 2 && kv.second.size() >= 3) l = fit(kv.second);
        l.task = kv.first;
        laws.push_back(l);
      }
      pooled.floor_fraction = 0.0;
      for (const auto& l : laws) pooled.floor_fraction = std::max(pooled.floor_fraction, l.floor_fraction);
      out = MakeTaskLengthLaw(std::move(laws), pooled);
    }
  } else if (type == "linear") {
    auto p = FitLinear(inf, opt);
    if (!p.ok()) return p.status();
    return std::move(p).value();
  } else if (type == "probe") {
    if (opt.probe_mass != 50 && opt.probe_mass != 90 && opt.probe_mass != 99)
      return Status(StatusCode::kInvalidArgument,
                    "probe fit: mass must be 50, 90 or 99, got " + std::to_string(opt.probe_mass));
    const std::string feat = "probe_blocks_" + std::to_string(opt.probe_mass);
    std::vector<double> ratio;
    for (const auto* r : inf)
      if (auto v = r->features.Get(feat); v && *v > 0) ratio.push_back(std::max(FitTargetBlocks(*r) - 1.0, 0.0) / *v);
    if (ratio.empty())
      return Status(StatusCode::kInvalidArgument, "probe fit: feature '" + feat + "' is unknown in every trace");
    out = MakeProbe(opt.probe_mass, std::max(Quantile(ratio, 0.5), 1e-3), 1.0, 1.0);
  } else if (type == "table") {
    auto path = BuildTablePath(all, opt);
    if (!path.ok()) return path.status();
    // Without a target: the cheapest path point with <= 5% in-sample misses.
    for (size_t t = 0; t < path->size(); ++t) {
      auto p = path->At(t, opt.limits);
      if (!p.ok()) return p.status();
      size_t misses = 0;
      for (const auto* r : all) {
        auto pr = (*p)->Predict(r->features);
        if (pr.ok() && pr->total_blocks < MonotoneOracleBlocks(*r)) ++misses;
      }
      if (static_cast<double>(misses) <= 0.05 * static_cast<double>(all.size()) || t + 1 == path->size())
        return std::move(p).value();
    }
  } else {
    return Status(StatusCode::kNotFound, "fit: unknown or unfittable predictor type '" + type +
                                             "' (fittable: fixed, length_law, task_length_law, linear, probe, table)");
  }
  out->set_limits(opt.limits);
  return out;
}

}  // namespace sparsebudget
