/// @file
/// sparsebudget/escalation.hpp - the self-check under sparsity: decode at the predicted budget;
/// when a generated token's top-1 probability under that budget falls below a calibrated
/// threshold, recompute that step at the next rung of a budget ladder (up to dense) and
/// continue there.
///
/// An engine keeps one EscalationState per request and calls Step() once per decode step with
/// the top-1 probability of the token that step produced (the softmax maximum of that step's
/// logits row, computed at the step's budget). Calibrate (calibration.hpp, `--escalation`) picks the
/// threshold and the start budgets jointly for a risk target, counting recomputed steps in the
/// cost; the calibrated predictor file carries the policy (predictor type "escalate").
///
/// Cost and threading: EscalationPolicy is an immutable value (ladder of at most 64 rungs);
/// Step() is O(rungs), allocates nothing, never throws, and is safe to call concurrently on a
/// shared policy. EscalationState is the caller's, one per request.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparsebudget/budget.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/status.hpp"

namespace sparsebudget {

/// Largest ladder accepted (a ladder is a handful of budget fractions).
inline constexpr size_t kMaxEscalationRungs = 64;

/// Per-request state of the policy: the budget the request decodes at now.
struct EscalationState {
  int64_t total_blocks = 0;   ///< current budget in total kept blocks (budget.hpp's counting)
  int64_t causal_blocks = 0;  ///< of the request's current decode step
  int32_t escalations = 0;    ///< steps recomputed so far (saturates at INT32_MAX)
};

/// How the policy reacts to an unsure token.
enum class EscalationMode {
  kRecomputeStep,  ///< recompute that step at the next rung and continue there (prefix kept)
  kRestartAnswer,  ///< discard the answer so far and decode it again from the next rung
  kFirstToken,     ///< check only the answer's first token: recompute it at the next rung while
                   ///< unsure, then decode the rest at that budget unchecked (one step redone per
                   ///< escalation; the cheapest mode, exact in simulation)
};

/// "recompute_step", "restart_answer", "first_token" (the JSON and Python names); "unknown" for
/// other values.
const char* EscalationModeName(EscalationMode mode) noexcept;
/// The mode of a name of EscalationModeName; false (mode unchanged) for any other string.
bool ParseEscalationMode(const std::string& name, EscalationMode* mode) noexcept;

/// What to do after a decode step.
struct EscalationDecision {
  bool recompute = false;    ///< redo work at `total_blocks`: this step, or (restart) the answer
  bool restart = false;      ///< kRestartAnswer: drop the answer's tokens, start it again
  int64_t total_blocks = 0;  ///< the budget for the redone work and the steps after it
};

/// Threshold + ladder. Immutable once created.
class EscalationPolicy {
 public:
  /// threshold in [0, 1] (0 never escalates); ladder: ascending fractions in (0, 1], last = 1,
  /// at most kMaxEscalationRungs. Errors (kInvalidArgument) name the bad value.
  static Expected<EscalationPolicy> Create(double threshold, std::vector<double> ladder,
                                           EscalationMode mode = EscalationMode::kRecomputeStep);
  /// The default ladder: 2^(-k/4) for k = 32..0 (1/256 up to 1 in quarter octaves).
  static std::vector<double> DefaultLadder();

  double threshold() const noexcept { return threshold_; }
  EscalationMode mode() const noexcept { return mode_; }
  const std::vector<double>& ladder() const noexcept { return ladder_; }

  /// State for a request starting at `prediction`'s budget (total_blocks, causal_blocks).
  EscalationState Start(const Prediction& prediction) const noexcept;
  /// The next rung above `total_blocks` for a request of `causal_blocks` blocks, counted by
  /// budget.hpp's rule with `sink`/`local` forced blocks: the smallest rung whose total blocks
  /// exceed `total_blocks`, else causal_blocks (dense).
  int64_t NextRung(int64_t total_blocks, int64_t causal_blocks, int32_t sink = 1,
                   int32_t local = 1) const noexcept;
  /// One decode step produced a token with probability `top1_prob` under state->total_blocks:
  /// escalate when top1_prob < threshold and the state is not dense yet (NaN escalates too).
  /// Updates `state` (budget, escalations) and says what to redo: the step (kRecomputeStep, or
  /// the answer's first token) or the whole answer (kRestartAnswer after its first token;
  /// `answer_position` is the 0-based index of the token in the answer). kFirstToken checks
  /// only answer_position 0. A state whose
  /// causal_blocks grew with decoding keeps its total_blocks.
  EscalationDecision Step(EscalationState* state, double top1_prob, int64_t answer_position = 0,
                          int32_t sink = 1, int32_t local = 1) const noexcept;

 private:
  double threshold_ = 0.0;
  EscalationMode mode_ = EscalationMode::kRecomputeStep;
  std::vector<double> ladder_;
};

/// Wraps a start-budget predictor with a policy (JSON type "escalate": {"member": {...},
/// "threshold": t, "ladder": [...], "mode": "recompute_step"|"restart_answer"}). Predict
/// returns the member's start budget.
std::unique_ptr<Predictor> MakeEscalate(std::unique_ptr<Predictor> member, EscalationPolicy policy);
/// The policy of an "escalate" predictor, or null for any other predictor.
const EscalationPolicy* EscalationOf(const Predictor& predictor);
/// The start-budget member of an "escalate" predictor, or null for any other predictor.
const Predictor* EscalationMember(const Predictor& predictor);

}  // namespace sparsebudget
