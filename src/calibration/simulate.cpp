// Simulating the escalation policy from a trace's curve (the rules are in internal.hpp).
#include <algorithm>
#include <cmath>

#include "calibration/internal.hpp"

namespace sparsebudget::detail {

namespace {

// The curve point that serves budget b (largest blocks <= b), or null below the first point.
const CurvePoint* PointAt(const TraceRecord& r, int64_t b) {
  auto it =
      std::upper_bound(r.curve.begin(), r.curve.end(), b, [](int64_t x, const CurvePoint& p) { return x < p.blocks; });
  return it == r.curve.begin() ? nullptr : &*std::prev(it);
}

double AnswerSteps(const TraceRecord& r) {
  auto it = r.features.extra.find("answer_length");
  double n = it != r.features.extra.end() ? it->second : r.features.expected_output_length.value_or(1.0);
  if (!(n >= 1.0)) n = 1.0;
  return std::min(n, 1e6);
}

}  // namespace

SimOutcome Simulate(const TraceRecord& r, int64_t start, const EscalationPolicy* pol, const BudgetLimits& lim) {
  SimOutcome o;
  const int64_t nb = r.causal_blocks();
  const double dnb = static_cast<double>(nb);
  const int64_t oracle = MonotoneOracleBlocks(r);
  auto finish = [&](int64_t eff, double quality, double blocks_read, double steps) {
    o.effective_blocks = eff;
    o.quality = quality;
    o.miss = eff < oracle;
    o.degraded = quality < r.dense_quality;
    o.step_fraction = blocks_read / (steps * dnb);
    return o;
  };
  if (pol == nullptr || pol->threshold() <= 0.0) {
    const int64_t b = std::min(start, nb);
    return finish(b, QualityAt(r, b), static_cast<double>(b), 1.0);
  }
  const double tau = pol->threshold();
  const double steps = AnswerSteps(r);
  auto next = [&](int64_t b) { return pol->NextRung(b, nb, lim.sink_blocks, lim.local_blocks); };
  double read = 0.0;  // blocks read, summed over decode steps
  int64_t b = std::min(start, nb);
  // First token: recompute at the next rung while it is unsure.
  while (b < nb) {
    const CurvePoint* p = PointAt(r, b);
    if (p == nullptr || !p->top1_prob || *p->top1_prob >= tau) break;
    read += static_cast<double>(b);
    ++o.recomputed;
    b = next(b);
  }
  if (pol->mode() == EscalationMode::kFirstToken) {
    // Later tokens are not checked: the rest of the answer decodes at b, exactly what the curve
    // recorded there.
    if (b >= nb) return finish(nb, r.dense_quality, read + steps * dnb, steps);
    return finish(b, QualityAt(r, b), read + steps * static_cast<double>(b), steps);
  }
  if (pol->mode() == EscalationMode::kRestartAnswer) {
    // Any unsure token restarts the answer at the next rung: exact quality (decoding from the
    // next rung is what the curve recorded there); cost counted as the whole answer at b.
    while (b < nb) {
      const CurvePoint* p = PointAt(r, b);
      if (p == nullptr || !p->min_top1_prob || *p->min_top1_prob >= tau) break;
      read += steps * static_cast<double>(b);
      ++o.recomputed;
      b = next(b);
      while (b < nb) {  // the restarted answer's first token may be unsure again
        const CurvePoint* q = PointAt(r, b);
        if (q == nullptr || !q->top1_prob || *q->top1_prob >= tau) break;
        read += static_cast<double>(b);
        ++o.recomputed;
        b = next(b);
      }
    }
    if (b >= nb) return finish(nb, r.dense_quality, read + steps * dnb, steps);
    return finish(b, QualityAt(r, b), read + steps * static_cast<double>(b), steps);
  }
  if (b >= nb) return finish(nb, r.dense_quality, read + steps * dnb, steps);
  const CurvePoint* p = PointAt(r, b);
  if (p == nullptr || !p->min_top1_prob || *p->min_top1_prob >= tau)
    return finish(b, QualityAt(r, b), read + steps * static_cast<double>(b), steps);
  // A later token is unsure: the whole answer at b (upper bound), then at each rung until one is
  // confident throughout (or dense); the prefix decoded at b is kept.
  read += steps * static_cast<double>(b);
  const double q_first = QualityAt(r, b);
  int64_t c = next(b);
  ++o.recomputed;
  while (c < nb) {
    const CurvePoint* pc = PointAt(r, c);
    read += steps * static_cast<double>(c);
    if (pc == nullptr || !pc->min_top1_prob || *pc->min_top1_prob >= tau) break;
    ++o.recomputed;
    c = next(c);
  }
  if (c >= nb) read += steps * dnb;
  const double q_final = c >= nb ? r.dense_quality : QualityAt(r, c);
  return finish(b, std::min(q_first, q_final), read, steps);
}

}  // namespace sparsebudget::detail
