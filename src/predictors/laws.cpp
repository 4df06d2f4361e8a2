// Built-ins without a fitted model body: fixed, length_law, task_length_law, probe.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "predictors/internal.hpp"

namespace sparsebudget {
namespace detail {
namespace {

// ---- fixed ----------------------------------------------------------------------------------
class FixedPredictor final : public PredictorBase {
 public:
  FixedPredictor(bool by_blocks, double fraction, int64_t blocks)
      : by_blocks_(by_blocks), fraction_(fraction), blocks_(blocks) {}
  std::string type() const override { return "fixed"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<FixedPredictor>(*this); }
  bool MonotoneInLength() const override { return true; }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    if (by_blocks_) return Estimate{static_cast<double>(blocks_), false};
    return Estimate{fraction_ * static_cast<double>(f.causal_blocks()), false};
  }
  void WriteParams(json& j) const override {
    if (by_blocks_)
      j["blocks"] = blocks_;
    else
      j["fraction"] = fraction_;
  }

 private:
  bool by_blocks_;
  double fraction_;
  int64_t blocks_;
};

// ---- length_law -----------------------------------------------------------------------------
double LawBlocks(double c, double a, const RequestFeatures& f) {
  return c * std::pow(static_cast<double>(f.context_length), a) / static_cast<double>(f.block_size);
}

class LengthLawPredictor final : public PredictorBase {
 public:
  LengthLawPredictor(double c, double a) : c_(c), a_(a) {}
  std::string type() const override { return "length_law"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<LengthLawPredictor>(*this); }
  bool MonotoneInLength() const override { return a_ >= 0.0; }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    return Estimate{LawBlocks(c_, a_, f), false};
  }
  void WriteParams(json& j) const override {
    j["c"] = c_;
    j["a"] = a_;
  }

 private:
  double c_, a_;
};

// ---- task_length_law ------------------------------------------------------------------------
class TaskLengthLawPredictor final : public PredictorBase {
 public:
  TaskLengthLawPredictor(std::vector<TaskLaw> laws, TaskLaw fallback)
      : laws_(std::move(laws)), fallback_(std::move(fallback)) {
    fallback_.task = "*";
  }
  std::string type() const override { return "task_length_law"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<TaskLengthLawPredictor>(*this); }
  bool MonotoneInLength() const override {
    if (fallback_.a < 0) return false;
    for (const auto& l : laws_)
      if (l.a < 0) return false;
    return true;
  }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    std::string task = f.task;
    if (!f.task_probs.empty()) {  // most probable class
      double best = -1.0;
      for (const auto& kv : f.task_probs)
        if (kv.second > best) {
          best = kv.second;
          task = kv.first;
        }
    }
    const TaskLaw* law = &fallback_;
    bool fb = true;
    for (const auto& l : laws_)
      if (l.task == task) {
        law = &l;
        fb = false;
        break;
      }
    const double est =
        std::max(LawBlocks(law->c, law->a, f), law->floor_fraction * static_cast<double>(f.causal_blocks()));
    return Estimate{est, fb};
  }
  void WriteParams(json& j) const override {
    json arr = json::array();
    for (const auto& l : laws_)
      arr.push_back({{"task", l.task}, {"c", l.c}, {"a", l.a}, {"floor_fraction", l.floor_fraction}});
    j["laws"] = arr;
    j["fallback"] = {{"c", fallback_.c}, {"a", fallback_.a}, {"floor_fraction", fallback_.floor_fraction}};
  }

 private:
  std::vector<TaskLaw> laws_;
  TaskLaw fallback_;
};

// ---- probe ----------------------------------------------------------------------------------
class ProbePredictor final : public PredictorBase {
 public:
  ProbePredictor(int mass, double margin, double add, double fallback_fraction)
      : mass_(mass), margin_(margin), add_(add), fallback_fraction_(fallback_fraction) {}
  std::string type() const override { return "probe"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<ProbePredictor>(*this); }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    const std::optional<double> v = mass_ == 50   ? f.probe_blocks_50
                                    : mass_ == 99 ? f.probe_blocks_99
                                                  : f.probe_blocks_90;
    if (!v) return Estimate{fallback_fraction_ * static_cast<double>(f.causal_blocks()), true};
    return Estimate{margin_ * *v + add_, false};
  }
  void WriteParams(json& j) const override {
    j["mass"] = mass_;
    j["margin"] = margin_;
    j["add_blocks"] = add_;
    j["fallback_fraction"] = fallback_fraction_;
  }

 private:
  int mass_;
  double margin_, add_, fallback_fraction_;
};

bool Positive(ObjectReader& r, const std::string& key, double v) {
  if (!(v > 0.0)) {
    r.FailKey(key, "must be > 0, got " + std::to_string(v));
    return false;
  }
  return true;
}

Expected<std::unique_ptr<Predictor>> Finish(ObjectReader& r, std::unique_ptr<Predictor> p, const BudgetLimits& lim) {
  Status st = r.Finish();
  if (!st.ok()) return st;
  p->set_limits(lim);
  return p;
}

}  // namespace

Expected<std::unique_ptr<Predictor>> FixedFromJson(const json& j) {
  ObjectReader r(j, Context("fixed"));
  ReadHeader(r, "fixed");
  double fraction = -1;
  int64_t blocks = -1;
  const bool has_f = r.Number("fraction", &fraction, false);
  const bool has_b = r.Integer("blocks", &blocks, false);
  if (r.ok() && has_f == has_b)
    r.FailKey(has_f ? "blocks" : "fraction", "exactly one of 'fraction' and 'blocks' must be given");
  if (r.ok() && has_f && !(fraction >= 0 && fraction <= 1))
    r.FailKey("fraction", "must be in [0, 1], got " + std::to_string(fraction));
  if (r.ok() && has_b && blocks < 1) r.FailKey("blocks", "must be >= 1, got " + std::to_string(blocks));
  BudgetLimits lim;
  ReadLimits(r, &lim);
  return Finish(r, std::make_unique<FixedPredictor>(has_b, has_f ? fraction : 0.0, has_b ? blocks : 0), lim);
}

Expected<std::unique_ptr<Predictor>> LengthLawFromJson(const json& j) {
  ObjectReader r(j, Context("length_law"));
  ReadHeader(r, "length_law");
  double c = 12.8, a = 0.5;
  if (r.Number("c", &c, false)) Positive(r, "c", c);
  r.Number("a", &a, false);
  BudgetLimits lim;
  ReadLimits(r, &lim);
  return Finish(r, std::make_unique<LengthLawPredictor>(c, a), lim);
}

Expected<std::unique_ptr<Predictor>> TaskLengthLawFromJson(const json& j) {
  ObjectReader r(j, Context("task_length_law"));
  ReadHeader(r, "task_length_law");
  std::vector<TaskLaw> laws;
  auto read_law = [&](const json& o, const std::string& where, bool with_task, TaskLaw* law) {
    ObjectReader lr(o, r.context() + ": " + where);
    if (with_task) lr.String("task", &law->task, true);
    if (lr.Number("c", &law->c, true)) Positive(lr, "c", law->c);
    lr.Number("a", &law->a, true);
    if (lr.Number("floor_fraction", &law->floor_fraction, false) &&
        !(law->floor_fraction >= 0 && law->floor_fraction <= 1))
      lr.FailKey("floor_fraction", "must be in [0, 1]");
    Status st = lr.Finish();
    if (!st.ok()) r.Fail(st.code(), st.message());
  };
  if (const json* arr = r.Get("laws", true)) {
    if (!arr->is_array()) {
      r.FailKey("laws", "must be an array");
    } else {
      for (size_t i = 0; i < arr->size() && r.ok(); ++i) {
        TaskLaw law;
        read_law((*arr)[i], "laws[" + std::to_string(i) + "]", true, &law);
        laws.push_back(law);
      }
    }
  }
  TaskLaw fallback;
  if (const json* fb = r.Get("fallback", true)) read_law(*fb, "fallback", false, &fallback);
  BudgetLimits lim;
  ReadLimits(r, &lim);
  return Finish(r, std::make_unique<TaskLengthLawPredictor>(std::move(laws), fallback), lim);
}

Expected<std::unique_ptr<Predictor>> ProbeFromJson(const json& j) {
  ObjectReader r(j, Context("probe"));
  ReadHeader(r, "probe");
  int32_t mass = 90;
  double margin = 1.25, add = 1.0, fallback = 1.0;
  if (r.Int32("mass", &mass, false) && mass != 50 && mass != 90 && mass != 99)
    r.FailKey("mass", "must be 50, 90 or 99, got " + std::to_string(mass));
  if (r.Number("margin", &margin, false)) Positive(r, "margin", margin);
  if (r.Number("add_blocks", &add, false) && add < 0) r.FailKey("add_blocks", "must be >= 0");
  if (r.Number("fallback_fraction", &fallback, false) && !(fallback > 0 && fallback <= 1))
    r.FailKey("fallback_fraction", "must be in (0, 1]");
  BudgetLimits lim;
  ReadLimits(r, &lim);
  return Finish(r, std::make_unique<ProbePredictor>(mass, margin, add, fallback), lim);
}

}  // namespace detail

std::unique_ptr<Predictor> MakeFixedFraction(double fraction) {
  return std::make_unique<detail::FixedPredictor>(false, std::clamp(fraction, 0.0, 1.0), 0);
}
std::unique_ptr<Predictor> MakeFixedBlocks(int64_t total_blocks) {
  return std::make_unique<detail::FixedPredictor>(true, 0.0, std::max<int64_t>(total_blocks, 1));
}
std::unique_ptr<Predictor> MakeLengthLaw(double c, double a) {
  return std::make_unique<detail::LengthLawPredictor>(c, a);
}
std::unique_ptr<Predictor> MakeTaskLengthLaw(std::vector<TaskLaw> laws, TaskLaw fallback) {
  return std::make_unique<detail::TaskLengthLawPredictor>(std::move(laws), std::move(fallback));
}
std::unique_ptr<Predictor> MakeProbe(int mass, double margin, double add_blocks, double fallback_fraction) {
  return std::make_unique<detail::ProbePredictor>(mass, margin, add_blocks, fallback_fraction);
}

}  // namespace sparsebudget
