#include "sparsebudget/budget.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/checked.hpp"

namespace sparsebudget {

const char* BudgetModeName(BudgetMode mode) noexcept {
  switch (mode) {
    case BudgetMode::kDense: return "dense";
    case BudgetMode::kBlocks: return "blocks";
    case BudgetMode::kFraction: return "fraction";
    case BudgetMode::kTopP: return "top_p";
  }
  return "unknown";
}

Status ValidateBudget(const Budget& b) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  switch (b.mode) {
    case BudgetMode::kDense: break;
    case BudgetMode::kBlocks:
      if (b.blocks < 0) return bad("budget.blocks must be >= 0, got " + std::to_string(b.blocks));
      break;
    case BudgetMode::kFraction:
      if (!(b.fraction >= 0.0 && b.fraction <= 1.0))
        return bad("budget.fraction must be in [0, 1], got " + std::to_string(b.fraction));
      break;
    case BudgetMode::kTopP:
      if (!(b.top_p > 0.0 && b.top_p <= 1.0))
        return bad("budget.top_p must be in (0, 1], got " + std::to_string(b.top_p));
      break;
    default: return bad("budget.mode is not a BudgetMode: " + std::to_string(static_cast<int>(b.mode)));
  }
  if (b.min_blocks < 0) return bad("budget.min_blocks must be >= 0, got " + std::to_string(b.min_blocks));
  if (b.max_blocks < 0) return bad("budget.max_blocks must be >= 0, got " + std::to_string(b.max_blocks));
  if (b.max_blocks != 0 && b.max_blocks < b.min_blocks)
    return bad("budget.max_blocks (" + std::to_string(b.max_blocks) + ") must be >= min_blocks (" +
               std::to_string(b.min_blocks) + ")");
  if (b.sink_blocks < 0) return bad("budget.sink_blocks must be >= 0, got " + std::to_string(b.sink_blocks));
  if (b.local_blocks < 0) return bad("budget.local_blocks must be >= 0, got " + std::to_string(b.local_blocks));
  return OkStatus();
}

ForcedRanges ForcedBlockRanges(const Budget& b, int64_t causal_blocks) noexcept {
  ForcedRanges r;
  if (causal_blocks <= 0) return r;
  // sink covers [0, sink), local covers [n - max(local, 1), n): the own block is always kept.
  r.sink_end = std::min<int64_t>(b.sink_blocks, causal_blocks);
  r.local_begin = std::max<int64_t>(r.sink_end, causal_blocks - std::max<int64_t>(1, b.local_blocks));
  return r;
}

Expected<Budget> CheckedTotalBudget(int64_t total, int64_t causal_blocks, int32_t sink, int32_t local) {
  if (causal_blocks < 1)
    return Status(StatusCode::kInvalidArgument, "causal_blocks must be >= 1, got " + std::to_string(causal_blocks));
  if (total < 0) return Status(StatusCode::kInvalidArgument, "total_blocks must be >= 0, got " + std::to_string(total));
  const Budget b = Budget::Total(total, causal_blocks, sink, local);
  if (Status st = ValidateBudget(b); !st.ok()) return st;  // sink / local < 0
  return b;
}

int64_t ForcedBlocks(const Budget& b, int64_t causal_blocks) noexcept {
  if (causal_blocks <= 0) return 0;
  const ForcedRanges f = ForcedBlockRanges(b, causal_blocks);
  return f.sink_end + (causal_blocks - f.local_begin);
}

ResolvedBudget ClampTotal(const Budget& b, int64_t want, int64_t causal_blocks) noexcept {
  ResolvedBudget r;
  if (causal_blocks <= 0) return r;
  r.forced_blocks = ForcedBlocks(b, causal_blocks);
  int64_t total = want;
  if (b.min_blocks > 0 && total < b.min_blocks) {
    total = b.min_blocks;
    r.clamped = true;
  }
  if (b.max_blocks > 0 && total > b.max_blocks) {
    total = b.max_blocks;
    r.clamped = true;
  }
  if (total > causal_blocks) {
    // Asking for more than exists is dense; a dense request itself is not a clamp.
    if (b.mode != BudgetMode::kDense) r.clamped = true;
    total = causal_blocks;
  }
  total = std::max(total, r.forced_blocks);
  r.total_blocks = total;
  r.scored_blocks = total - r.forced_blocks;
  return r;
}

ResolvedBudget ResolveBudget(const Budget& b, int64_t causal_blocks) noexcept {
  if (causal_blocks <= 0) return ResolvedBudget{};
  const int64_t forced = ForcedBlocks(b, causal_blocks);
  int64_t want = causal_blocks;
  // `more` = the budget asks for more blocks than exist (a clamp unless dense). Counts are formed
  // without overflow for every causal_blocks up to INT64_MAX.
  bool more = false;
  switch (b.mode) {
    case BudgetMode::kDense: want = causal_blocks; break;
    case BudgetMode::kBlocks:
      more = b.blocks > causal_blocks - forced;
      want = more ? causal_blocks : forced + b.blocks;
      break;
    case BudgetMode::kFraction: {
      const double w = std::ceil(b.fraction * static_cast<double>(causal_blocks) - 1e-9);
      want = w >= static_cast<double>(causal_blocks) ? causal_blocks : static_cast<int64_t>(w);
      break;
    }
    case BudgetMode::kTopP: want = forced; break;
  }
  ResolvedBudget r = ClampTotal(b, want, causal_blocks);
  if (more) r.clamped = true;
  return r;
}

}  // namespace sparsebudget
