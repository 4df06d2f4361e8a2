// C API: the escalation policy (escalation.hpp). The C layer only translates.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "capi/capi_internal.hpp"
#include "sparsebudget/escalation.hpp"

struct sb_escalation_policy {
  sparsebudget::EscalationPolicy policy;
};

using namespace sparsebudget;
static_assert(static_cast<int>(EscalationMode::kRecomputeStep) == SB_ESCALATE_RECOMPUTE_STEP &&
                  static_cast<int>(EscalationMode::kRestartAnswer) == SB_ESCALATE_RESTART_ANSWER &&
                  static_cast<int>(EscalationMode::kFirstToken) == SB_ESCALATE_FIRST_TOKEN,
              "sb_escalation_mode mirrors EscalationMode");
using capi::Fail;
using capi::Guard;
using capi::Null;
using capi::Ok;

extern "C" {

sb_status sb_escalation_policy_create(double threshold, const double* ladder, int32_t num_rungs,
                                      sb_escalation_mode mode, sb_escalation_policy** policy) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (policy == nullptr) return Null(fn, "policy");
    *policy = nullptr;
    if (num_rungs < 1 || static_cast<size_t>(num_rungs) > kMaxEscalationRungs)
      return Fail(
          fn, SB_ERROR_INVALID_ARGUMENT,
          "num_rungs must be in [1, " + std::to_string(kMaxEscalationRungs) + "], got " + std::to_string(num_rungs));
    if (ladder == nullptr) return Null(fn, "ladder");
    const int m = capi::EnumBits(mode);
    if (m != SB_ESCALATE_RECOMPUTE_STEP && m != SB_ESCALATE_RESTART_ANSWER && m != SB_ESCALATE_FIRST_TOKEN)
      return Fail(
          fn, SB_ERROR_INVALID_ARGUMENT,
          "mode must be SB_ESCALATE_RECOMPUTE_STEP, SB_ESCALATE_RESTART_ANSWER or SB_ESCALATE_FIRST_TOKEN, got " +
              std::to_string(m));
    // The C enum's values are EscalationMode's (the static_assert above).
    auto p = EscalationPolicy::Create(threshold, std::vector<double>(ladder, ladder + num_rungs),
                                      static_cast<EscalationMode>(m));
    if (!p.ok()) return Fail(fn, p.status());
    *policy = new sb_escalation_policy{std::move(p).value()};
    return Ok();
  });
}

sb_status sb_predictor_escalation_policy(const sb_predictor* predictor, sb_escalation_policy** policy) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (policy == nullptr) return Null(fn, "policy");
    *policy = nullptr;
    if (predictor == nullptr) return Null(fn, "predictor");
    const EscalationPolicy* p = EscalationOf(*capi::PredictorOf(predictor));
    if (p == nullptr)
      return Fail(fn, SB_ERROR_NOT_FOUND, "the predictor is not of type 'escalate' (calibrate with --escalation)");
    *policy = new sb_escalation_policy{*p};
    return Ok();
  });
}

void sb_escalation_policy_destroy(sb_escalation_policy* policy) { delete policy; }

double sb_escalation_policy_threshold(const sb_escalation_policy* policy) {
  return policy == nullptr ? std::nan("") : policy->policy.threshold();
}

sb_status sb_escalation_start(const sb_escalation_policy* policy, const sb_prediction* prediction,
                              sb_escalation_state* state) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (policy == nullptr) return Null(fn, "policy");
    sb_prediction in{};
    if (sb_status st = capi::ReadIn(fn, "prediction", prediction, sizeof(sb_prediction), &in); st != SB_OK) return st;
    if (sb_status st = capi::CheckOut(fn, "state", state, sizeof(sb_escalation_state)); st != SB_OK) return st;
    if (in.causal_blocks < 1 || in.total_blocks < 0 || in.total_blocks > in.causal_blocks)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  "prediction: need 0 <= total_blocks <= causal_blocks and causal_blocks >= 1, got " +
                      std::to_string(in.total_blocks) + " of " + std::to_string(in.causal_blocks));
    Prediction p;
    p.total_blocks = in.total_blocks;
    p.causal_blocks = in.causal_blocks;
    const EscalationState s = policy->policy.Start(p);
    sb_escalation_state out{};
    out.total_blocks = s.total_blocks;
    out.causal_blocks = s.causal_blocks;
    out.escalations = s.escalations;
    capi::WriteOut(state, out);
    return Ok();
  });
}

sb_status sb_escalation_step(const sb_escalation_policy* policy, sb_escalation_state* state, double top1_prob,
                             int64_t answer_position, int32_t sink_blocks, int32_t local_blocks,
                             sb_escalation_action* action, int64_t* total_blocks) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (policy == nullptr) return Null(fn, "policy");
    if (action == nullptr) return Null(fn, "action");
    if (answer_position < 0)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  "answer_position must be >= 0, got " + std::to_string(answer_position));
    if (total_blocks == nullptr) return Null(fn, "total_blocks");
    sb_escalation_state in{};
    if (sb_status st = capi::ReadIn(fn, "state", state, sizeof(sb_escalation_state), &in); st != SB_OK) return st;
    if (in.causal_blocks < 1 || in.total_blocks < 0 || in.escalations < 0)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  "state: need causal_blocks >= 1, total_blocks >= 0, escalations >= 0, got " +
                      std::to_string(in.causal_blocks) + ", " + std::to_string(in.total_blocks) + ", " +
                      std::to_string(in.escalations));
    if (sink_blocks < 0 || local_blocks < 0)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  "sink_blocks and local_blocks must be >= 0, got " + std::to_string(sink_blocks) + ", " +
                      std::to_string(local_blocks));
    EscalationState s;
    s.total_blocks = in.total_blocks;
    s.causal_blocks = in.causal_blocks;
    s.escalations = in.escalations;
    const EscalationDecision d = policy->policy.Step(&s, top1_prob, answer_position, sink_blocks, local_blocks);
    in.total_blocks = s.total_blocks;
    in.escalations = s.escalations;
    capi::WriteOut(state, in);
    *action = !d.recompute ? SB_ESCALATION_CONTINUE : d.restart ? SB_ESCALATION_RESTART : SB_ESCALATION_RECOMPUTE;
    *total_blocks = d.total_blocks;
    return Ok();
  });
}

}  // extern "C"
