// The escalation policy (self-check under sparsity) and its "escalate" predictor wrapper.
#include "sparsebudget/escalation.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "predictors/internal.hpp"

namespace sparsebudget {

const char* EscalationModeName(EscalationMode mode) noexcept {
  switch (mode) {
    case EscalationMode::kRecomputeStep: return "recompute_step";
    case EscalationMode::kRestartAnswer: return "restart_answer";
    case EscalationMode::kFirstToken: return "first_token";
  }
  return "unknown";
}

bool ParseEscalationMode(const std::string& name, EscalationMode* mode) noexcept {
  for (EscalationMode m : {EscalationMode::kRecomputeStep, EscalationMode::kRestartAnswer, EscalationMode::kFirstToken})
    if (name == EscalationModeName(m)) {
      if (mode != nullptr) *mode = m;
      return true;
    }
  return false;
}

Expected<EscalationPolicy> EscalationPolicy::Create(double threshold, std::vector<double> ladder, EscalationMode mode) {
  if (std::string(EscalationModeName(mode)) == "unknown")
    return Status(StatusCode::kInvalidArgument, "escalation: unknown mode " + std::to_string(static_cast<int>(mode)));
  if (!(threshold >= 0 && threshold <= 1))
    return Status(StatusCode::kInvalidArgument,
                  "escalation: threshold must be in [0, 1], got " + std::to_string(threshold));
  if (ladder.empty() || ladder.size() > kMaxEscalationRungs)
    return Status(StatusCode::kInvalidArgument, "escalation: ladder must have 1.." +
                                                    std::to_string(kMaxEscalationRungs) + " rungs, got " +
                                                    std::to_string(ladder.size()));
  for (size_t i = 0; i < ladder.size(); ++i) {
    if (!(ladder[i] > 0 && ladder[i] <= 1))
      return Status(StatusCode::kInvalidArgument, "escalation: ladder[" + std::to_string(i) +
                                                      "] must be in (0, 1], got " + std::to_string(ladder[i]));
    if (i > 0 && !(ladder[i] > ladder[i - 1]))
      return Status(StatusCode::kInvalidArgument, "escalation: ladder must be strictly ascending, ladder[" +
                                                      std::to_string(i) + "] = " + std::to_string(ladder[i]));
  }
  if (ladder.back() != 1.0)
    return Status(StatusCode::kInvalidArgument,
                  "escalation: the last rung must be 1 (dense), got " + std::to_string(ladder.back()));
  EscalationPolicy p;
  p.threshold_ = threshold;
  p.ladder_ = std::move(ladder);
  p.mode_ = mode;
  return p;
}

std::vector<double> EscalationPolicy::DefaultLadder() {
  // Quarter octaves from 1/256: each escalation costs about 19% more than the step it redoes.
  std::vector<double> l;
  for (int k = 32; k >= 0; --k) l.push_back(k == 0 ? 1.0 : std::exp2(-k / 4.0));
  return l;
}

EscalationState EscalationPolicy::Start(const Prediction& pr) const noexcept {
  EscalationState s;
  s.total_blocks = pr.total_blocks;
  s.causal_blocks = pr.causal_blocks;
  return s;
}

int64_t EscalationPolicy::NextRung(int64_t total_blocks, int64_t causal_blocks, int32_t sink,
                                   int32_t local) const noexcept {
  if (causal_blocks <= 0) return 0;
  auto rung_blocks = [&](double f) {
    Budget b = Budget::Fraction(f);
    b.sink_blocks = sink < 0 ? 0 : sink;
    b.local_blocks = local < 0 ? 0 : local;
    return ResolveBudget(b, causal_blocks).total_blocks;
  };
  // The ladder is strictly ascending (Create checks) and a resolved budget is non-decreasing in
  // its fraction, so the first rung above total_blocks is found by bisection (6 resolutions for
  // the default 33 rungs; calibration's simulation calls this per request per candidate).
  size_t lo = 0, hi = ladder_.size();
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (rung_blocks(ladder_[mid]) > total_blocks)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo < ladder_.size() ? rung_blocks(ladder_[lo]) : causal_blocks;
}

EscalationDecision EscalationPolicy::Step(EscalationState* s, double top1_prob, int64_t answer_position, int32_t sink,
                                          int32_t local) const noexcept {
  EscalationDecision d;
  if (s == nullptr) return d;
  d.total_blocks = s->total_blocks;
  if (s->total_blocks >= s->causal_blocks) return d;                          // dense: nothing to escalate to
  if (mode_ == EscalationMode::kFirstToken && answer_position > 0) return d;  // only the first is checked
  if (top1_prob >= threshold_) return d;                                      // confident (false for NaN: escalate)
  d.recompute = true;
  d.restart = mode_ == EscalationMode::kRestartAnswer && answer_position > 0;
  d.total_blocks = NextRung(s->total_blocks, s->causal_blocks, sink, local);
  s->total_blocks = d.total_blocks;
  // A count, not an index: saturates rather than overflowing for a caller-made state near the top.
  if (s->escalations < INT32_MAX) ++s->escalations;
  return d;
}

namespace detail {
namespace {

class EscalatePredictor final : public PredictorBase {
 public:
  EscalatePredictor(std::unique_ptr<Predictor> m, EscalationPolicy p) : member_(std::move(m)), policy_(std::move(p)) {}
  EscalatePredictor(const EscalatePredictor& o) : PredictorBase(o), member_(o.member_->Clone()), policy_(o.policy_) {}
  std::string type() const override { return "escalate"; }
  std::unique_ptr<Predictor> Clone() const override { return std::make_unique<EscalatePredictor>(*this); }
  bool MonotoneInLength() const override { return member_->MonotoneInLength(); }
  Expected<Estimate> EstimateBlocks(const RequestFeatures& f) const override {
    auto p = member_->Predict(f);
    if (!p.ok()) return p.status();
    return Estimate{static_cast<double>(p->total_blocks), p->fallback};
  }
  void WriteParams(json& j) const override {
    json m = json::parse(member_->ToJson(), nullptr, false);
    j["member"] = m.is_discarded() ? json::object() : m;
    j["threshold"] = policy_.threshold();
    j["ladder"] = policy_.ladder();
    j["mode"] = EscalationModeName(policy_.mode());
  }
  const EscalationPolicy& policy() const { return policy_; }
  const Predictor& member() const { return *member_; }

 private:
  std::unique_ptr<Predictor> member_;
  EscalationPolicy policy_;
};

}  // namespace

Expected<std::unique_ptr<Predictor>> EscalateFromJson(const json& j) {
  ObjectReader r(j, Context("escalate"));
  ReadHeader(r, "escalate");
  std::unique_ptr<Predictor> member;
  if (const json* m = r.Get("member", true)) {
    auto p = MemberFromJson(*m, r.context() + ": member");
    if (!p.ok())
      r.Fail(p.status().code(), p.status().message());
    else
      member = std::move(p).value();
  }
  double threshold = 0;
  r.Number("threshold", &threshold, true);
  std::vector<double> ladder = EscalationPolicy::DefaultLadder();
  r.NumberArray("ladder", &ladder, false);
  std::string mode_name = EscalationModeName(EscalationMode::kRecomputeStep);
  EscalationMode mode = EscalationMode::kRecomputeStep;
  if (r.String("mode", &mode_name, false) && !ParseEscalationMode(mode_name, &mode))
    r.FailKey("mode", "must be 'recompute_step', 'restart_answer' or 'first_token', got '" + mode_name + "'");
  BudgetLimits lim;
  ReadLimits(r, &lim);
  Status st = r.Finish();
  if (!st.ok()) return st;
  auto pol = EscalationPolicy::Create(threshold, ladder, mode);
  if (!pol.ok()) return Status(StatusCode::kParseError, r.context() + ": " + pol.status().message());
  auto p = std::make_unique<EscalatePredictor>(std::move(member), std::move(pol).value());
  p->set_limits(lim);
  return std::unique_ptr<Predictor>(std::move(p));
}

}  // namespace detail

std::unique_ptr<Predictor> MakeEscalate(std::unique_ptr<Predictor> member, EscalationPolicy policy) {
  return std::make_unique<detail::EscalatePredictor>(std::move(member), std::move(policy));
}

const EscalationPolicy* EscalationOf(const Predictor& p) {
  const auto* e = dynamic_cast<const detail::EscalatePredictor*>(&p);
  return e == nullptr ? nullptr : &e->policy();
}

const Predictor* EscalationMember(const Predictor& p) {
  const auto* e = dynamic_cast<const detail::EscalatePredictor*>(&p);
  return e == nullptr ? nullptr : &e->member();
}

}  // namespace sparsebudget
