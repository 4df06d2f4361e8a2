/// @file
/// sparsebudget/budget.hpp - the budget: what a predictor produces and the kernel consumes.
///
/// Counting rule used everywhere (kernel, predictors, traces): for one (kv head, query block) the
/// causal blocks are 0..qb where qb is the query block. Kept blocks are
///   - the `sink_blocks` leading blocks,
///   - the `local_blocks` most recent blocks, which always include the query's own block qb
///     (kept even when local_blocks is 0),
///   - plus `scored` blocks chosen by block score among the rest.
/// "total" counts all of them. A fraction budget means total = ceil(fraction * causal_blocks).
/// min_blocks / max_blocks clamp the total (0 = no clamp); asking for more than exists keeps all
/// blocks (dense); either case is reported as clamped.
#pragma once

#include <cstdint>

#include "sparsebudget/status.hpp"

namespace sparsebudget {

/// How a Budget sets the number of kept blocks. Numeric values equal sb_budget_mode (C ABI).
enum class BudgetMode : int {
  kDense = 0,     ///< keep every causal block
  kBlocks = 1,    ///< keep `blocks` scored blocks in addition to sink and local ones
  kFraction = 2,  ///< keep ceil(fraction * causal_blocks) blocks in total
  kTopP = 3,      ///< keep the fewest blocks whose estimated mass reaches top_p (see attention.hpp)
};

/// "dense", "blocks", "fraction", "top_p"; "unknown" for other values.
const char* BudgetModeName(BudgetMode mode) noexcept;

/// How many key blocks to keep per (kv head, query block), by the counting rule above. A plain
/// value (no heap); the factories set only their mode's fields (defaults elsewhere) and do not
/// validate. Per-layer scales are a call argument (LayerArgs::budget_scale, ScaleBudget in
/// op.hpp), not part of the budget.
struct Budget {
  BudgetMode mode = BudgetMode::kDense;  ///< which of blocks / fraction / top_p applies
  int64_t blocks = 0;                    ///< kBlocks: scored blocks, >= 0
  double fraction = 1.0;                 ///< kFraction: in [0, 1]
  double top_p = 0.9;                    ///< kTopP: in (0, 1]
  int64_t min_blocks = 0;                ///< clamp on total kept blocks, 0 = none
  int64_t max_blocks = 0;    ///< clamp on total kept blocks, 0 = none; must be >= min_blocks
  int32_t sink_blocks = 1;   ///< >= 0
  int32_t local_blocks = 1;  ///< >= 0; the own block is always kept

  /// Keep every causal block.
  static Budget Dense() { return Budget{}; }
  /// Keep `k` scored blocks besides the sink and local ones.
  static Budget Blocks(int64_t k) {
    Budget b;
    b.mode = BudgetMode::kBlocks;
    b.blocks = k;
    return b;
  }
  /// Keep ceil(f * causal_blocks) blocks in total.
  static Budget Fraction(double f) {
    Budget b;
    b.mode = BudgetMode::kFraction;
    b.fraction = f;
    return b;
  }
  /// Keep exactly `total` of `causal_blocks` blocks (sink and local included): a count that came
  /// from elsewhere, such as an escalation rung (EscalationDecision::total_blocks). A fraction
  /// budget total / causal_blocks pinned by min_blocks = max_blocks = total, so ResolveBudget
  /// returns `total` whatever the fraction's rounding (never fewer than the forced blocks);
  /// Dense() when total >= causal_blocks. Bad counts (total < 0, causal_blocks < 1) give a budget
  /// that ValidateBudget rejects.
  static Budget Total(int64_t total, int64_t causal_blocks, int32_t sink = 1, int32_t local = 1) {
    if (total >= causal_blocks && causal_blocks >= 1) return Dense();
    Budget b;
    b.mode = BudgetMode::kFraction;
    b.fraction =
        causal_blocks >= 1 ? static_cast<double>(total) / static_cast<double>(causal_blocks) : -1.0;
    b.min_blocks = b.max_blocks = total;
    b.sink_blocks = sink;
    b.local_blocks = local;
    return b;
  }
  /// Keep the fewest blocks whose estimated mass reaches `p`, the total clamped to
  /// [min_total, max_total] (0 = no clamp).
  static Budget TopP(double p, int64_t min_total = 0, int64_t max_total = 0) {
    Budget b;
    b.mode = BudgetMode::kTopP;
    b.top_p = p;
    b.min_blocks = min_total;
    b.max_blocks = max_total;
    return b;
  }
};

/// Checks every field; the message names the bad one. O(1), no allocation on success.
Status ValidateBudget(const Budget& budget);

/// Budget::Total with its arguments checked (the C and Python entry points call this): errors
/// (kInvalidArgument) name causal_blocks < 1, total < 0, or the bad sink / local value. O(1).
Expected<Budget> CheckedTotalBudget(int64_t total, int64_t causal_blocks, int32_t sink = 1,
                                    int32_t local = 1);

/// What a budget keeps out of a given number of causal blocks (ResolveBudget).
struct ResolvedBudget {
  int64_t forced_blocks = 0;  ///< sink + local (+ own) blocks, deduplicated
  int64_t total_blocks = 0;   ///< forced + scored
  int64_t scored_blocks = 0;  ///< chosen by score
  bool clamped = false;       ///< min/max clamp applied, or more requested than exist
};

/// Number of blocks kept out of `causal_blocks` (>= 1) for the count-based modes (dense, blocks,
/// fraction). Top-p needs scores and is resolved by the selection itself; here it returns the
/// clamp bounds applied to the forced count. O(1), never fails on a validated budget.
ResolvedBudget ResolveBudget(const Budget& budget, int64_t causal_blocks) noexcept;

/// Blocks forced by the sink/local rule out of `causal_blocks`.
int64_t ForcedBlocks(const Budget& budget, int64_t causal_blocks) noexcept;

/// The forced blocks as two ranges: [0, sink_end) and [local_begin, causal_blocks), with
/// sink_end <= local_begin (the union, deduplicated). Candidates for scoring are
/// [sink_end, local_begin). O(1).
struct ForcedRanges {
  int64_t sink_end = 0;     ///< min(sink_blocks, causal_blocks)
  int64_t local_begin = 0;  ///< max(sink_end, causal_blocks - max(local_blocks, 1))
};
/// See ForcedRanges.
ForcedRanges ForcedBlockRanges(const Budget& budget, int64_t causal_blocks) noexcept;

/// The clamp step of the counting rule: a wanted total (forced blocks included) clamped to
/// [min_blocks, max_blocks] (0 = none), then to at most causal_blocks (asking for more is dense)
/// and at least the forced blocks. ResolveBudget and the top-p selection both use it: the rule
/// lives here only. O(1).
ResolvedBudget ClampTotal(const Budget& budget, int64_t want, int64_t causal_blocks) noexcept;

}  // namespace sparsebudget
