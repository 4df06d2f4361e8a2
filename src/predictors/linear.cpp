// linear: log(total blocks) = intercept + w . terms(features).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "predictors/internal.hpp"

namespace sparsebudget {
namespace detail {
namespace {

std::vector<std::string> SplitTerm(const std::string& term) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t p = term.find('*', start);
    parts.push_back(term.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return parts;
}

class LinearPredictor final : public PredictorBase {
 public:
  explicit LinearPredictor(LinearModel m) : m_(std::move(m)) {
    for (const auto& t : m_.terms) factors_.push_back(SplitTerm(t));
  }
  std::string type() const override { return "linear"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<LinearPredictor>(*this); }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    double z = m_.intercept;
    bool fb = false;
    for (size_t k = 0; k < factors_.size(); ++k) {
      double v = 1.0;
      bool known = true;
      for (const auto& name : factors_[k]) {
        auto x = f.Get(name);
        if (!x) {
          known = false;
          break;
        }
        v *= *x;
      }
      if (!known) {
        v = m_.impute[k];
        fb = true;
      }
      // Features are finite (Predict validated them), but a product of large ones, or a large
      // weight, can overflow: an infinite term would make the sum inf - inf = NaN.
      const double term = m_.weights[k] * v;
      if (!std::isfinite(term)) {
        char what[96];
        (void)std::snprintf(what, sizeof what, "' = weight %.6g x value %.6g is not finite", m_.weights[k], v);
        return Status(StatusCode::kOutOfRange,
                      "predictor 'linear': term '" + m_.terms[k] + what + " for this request's features");
      }
      z += term;
    }
    z = std::min(z, 60.0);
    return Estimate{std::exp(z), fb};
  }
  void WriteParams(json& j) const override {
    j["terms"] = m_.terms;
    j["weights"] = m_.weights;
    j["impute"] = m_.impute;
    j["intercept"] = m_.intercept;
    j["l2"] = m_.l2;
    j["quantile"] = m_.quantile;
  }

 private:
  LinearModel m_;
  std::vector<std::vector<std::string>> factors_;
};

Status CheckModel(const LinearModel& m) {
  auto bad = [](const std::string& k, const std::string& w) {
    return Status(StatusCode::kParseError, "predictor 'linear': key '" + k + "' " + w);
  };
  if (m.weights.size() != m.terms.size())
    return bad("weights", "must have one entry per term (" + std::to_string(m.terms.size()) + "), got " +
                              std::to_string(m.weights.size()));
  if (m.impute.size() != m.terms.size())
    return bad("impute", "must have one entry per term (" + std::to_string(m.terms.size()) + "), got " +
                             std::to_string(m.impute.size()));
  for (size_t i = 0; i < m.terms.size(); ++i) {
    if (m.terms[i].empty()) return bad("terms[" + std::to_string(i) + "]", "must not be empty");
    for (const auto& part : SplitTerm(m.terms[i]))
      if (part.empty()) return bad("terms[" + std::to_string(i) + "]", "has an empty factor: '" + m.terms[i] + "'");
  }
  if (!std::isfinite(m.intercept)) return bad("intercept", "must be finite");
  for (size_t i = 0; i < m.weights.size(); ++i)
    if (!std::isfinite(m.weights[i])) return bad("weights[" + std::to_string(i) + "]", "must be finite");
  for (size_t i = 0; i < m.impute.size(); ++i)
    if (!std::isfinite(m.impute[i])) return bad("impute[" + std::to_string(i) + "]", "must be finite");
  if (!(m.l2 >= 0)) return bad("l2", "must be >= 0");
  if (!(m.quantile >= 0 && m.quantile < 1)) return bad("quantile", "must be 0 (none) or in (0, 1)");
  return OkStatus();
}

}  // namespace

Expected<std::unique_ptr<Predictor>> LinearFromJson(const json& j) {
  ObjectReader r(j, Context("linear"));
  ReadHeader(r, "linear");
  LinearModel m;
  r.StringArray("terms", &m.terms, true);
  r.NumberArray("weights", &m.weights, true);
  r.NumberArray("impute", &m.impute, true);
  r.Number("intercept", &m.intercept, true);
  r.Number("l2", &m.l2, false);
  r.Number("quantile", &m.quantile, false);
  BudgetLimits lim;
  ReadLimits(r, &lim);
  Status st = r.Finish();
  if (!st.ok()) return st;
  st = CheckModel(m);
  if (!st.ok()) return st;
  auto p = std::make_unique<LinearPredictor>(std::move(m));
  p->set_limits(lim);
  return std::unique_ptr<Predictor>(std::move(p));
}

}  // namespace detail

Expected<std::unique_ptr<Predictor>> MakeLinear(LinearModel model) {
  Status st = detail::CheckModel(model);
  if (!st.ok()) return st;
  return std::unique_ptr<Predictor>(std::make_unique<detail::LinearPredictor>(std::move(model)));
}

}  // namespace sparsebudget
