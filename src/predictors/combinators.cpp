// max / clamp combinators.
#include <algorithm>
#include <string>
#include <vector>

#include "predictors/internal.hpp"

namespace sparsebudget {
namespace detail {
namespace {

json MemberJson(const Predictor& p) {
  json j = json::parse(p.ToJson(), nullptr, false);
  return j.is_discarded() ? json::object() : j;
}

class MaxPredictor final : public PredictorBase {
 public:
  explicit MaxPredictor(std::vector<std::unique_ptr<Predictor>> m) : members_(std::move(m)) {}
  MaxPredictor(const MaxPredictor& o) : PredictorBase(o) {
    for (const auto& m : o.members_) members_.push_back(m->Clone());
  }
  std::string type() const override { return "max"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<MaxPredictor>(*this); }
  bool MonotoneInLength() const override {
    for (const auto& m : members_)
      if (!m->MonotoneInLength()) return false;
    return !members_.empty();
  }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    Estimate e;
    for (const auto& m : members_) {
      auto p = m->Predict(f);
      if (!p.ok()) return p.status();
      e.blocks = std::max(e.blocks, static_cast<double>(p->total_blocks));
      e.fallback = e.fallback || p->fallback;
    }
    return e;
  }
  void WriteParams(json& j) const override {
    json arr = json::array();
    for (const auto& m : members_) arr.push_back(MemberJson(*m));
    j["members"] = arr;
  }

 private:
  std::vector<std::unique_ptr<Predictor>> members_;
};

class ClampPredictor final : public PredictorBase {
 public:
  explicit ClampPredictor(std::unique_ptr<Predictor> m) : member_(std::move(m)) {}
  ClampPredictor(const ClampPredictor& o) : PredictorBase(o), member_(o.member_->Clone()) {}
  std::string type() const override { return "clamp"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<ClampPredictor>(*this); }
  bool MonotoneInLength() const override { return member_->MonotoneInLength(); }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    auto p = member_->Predict(f);
    if (!p.ok()) return p.status();
    return Estimate{static_cast<double>(p->total_blocks), p->fallback};
  }
  void WriteParams(json& j) const override { j["member"] = MemberJson(*member_); }

 private:
  std::unique_ptr<Predictor> member_;
};

}  // namespace

Expected<std::unique_ptr<Predictor>> MaxFromJson(const json& j) {
  ObjectReader r(j, Context("max"));
  ReadHeader(r, "max");
  std::vector<std::unique_ptr<Predictor>> members;
  if (const json* arr = r.Get("members", true)) {
    if (!arr->is_array() || arr->empty()) {
      r.FailKey("members", "must be a non-empty array of predictors");
    } else {
      for (size_t i = 0; i < arr->size() && r.ok(); ++i) {
        auto m = MemberFromJson((*arr)[i], r.context() + ": members[" + std::to_string(i) + "]");
        if (!m.ok()) {
          r.Fail(m.status().code(), m.status().message());
          break;
        }
        members.push_back(std::move(m).value());
      }
    }
  }
  BudgetLimits lim;
  ReadLimits(r, &lim);
  Status st = r.Finish();
  if (!st.ok()) return st;
  auto p = std::make_unique<MaxPredictor>(std::move(members));
  p->set_limits(lim);
  return std::unique_ptr<Predictor>(std::move(p));
}

Expected<std::unique_ptr<Predictor>> ClampFromJson(const json& j) {
  ObjectReader r(j, Context("clamp"));
  ReadHeader(r, "clamp");
  std::unique_ptr<Predictor> member;
  if (const json* m = r.Get("member", true)) {
    auto p = MemberFromJson(*m, r.context() + ": member");
    if (!p.ok())
      r.Fail(p.status().code(), p.status().message());
    else
      member = std::move(p).value();
  }
  BudgetLimits lim;
  ReadLimits(r, &lim);
  Status st = r.Finish();
  if (!st.ok()) return st;
  auto p = std::make_unique<ClampPredictor>(std::move(member));
  p->set_limits(lim);
  return std::unique_ptr<Predictor>(std::move(p));
}

}  // namespace detail

std::unique_ptr<Predictor> MakeMax(std::vector<std::unique_ptr<Predictor>> members) {
  return std::make_unique<detail::MaxPredictor>(std::move(members));
}
std::unique_ptr<Predictor> MakeClamp(std::unique_ptr<Predictor> member, const BudgetLimits& limits) {
  auto p = std::make_unique<detail::ClampPredictor>(std::move(member));
  p->set_limits(limits);
  return p;
}

}  // namespace sparsebudget
