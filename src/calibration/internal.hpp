// Internal helpers shared by fitting, calibration, evaluation and the synthetic generator.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "sparsebudget/calibration.hpp"
#include "sparsebudget/escalation.hpp"

namespace sparsebudget::detail {

// Deterministic across platforms (std::normal_distribution is not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t Next() {  // splitmix64
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0); }
  double Normal() {
    double u1 = Uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }

 private:
  uint64_t s_;
};

// Every record through ValidateTraceRecord (records built in memory skip the reader's checks);
// the error names the call, the index and the id: "calibrate: traces[3] (id 'a'): key ...".
Status CheckTraces(const char* fn, const std::vector<TraceRecord>& traces);
// FitPredictor on traces that already passed CheckTraces (Calibrate's fits on its subsets: the
// check is not repeated per fit).
Expected<std::unique_ptr<Predictor>> FitCheckedTraces(const std::string& type, const std::vector<TraceRecord>& traces,
                                                      const FitOptions& options);

// Fit target in blocks: the geometric midpoint of the oracle's censoring interval
// (largest curve point below the monotone oracle, oracle]; the oracle itself when it is the
// smallest curve point.
double FitTargetBlocks(const TraceRecord& r);

// Requests that carry information for fitting a budget (dense quality > 0).
bool Informative(const TraceRecord& r);

// Per-trace base estimate of a predictor (limits applied later with a varying scale).
struct BaseEstimate {
  double blocks = 0;
  bool fallback = false;
};
Expected<std::vector<BaseEstimate>> BaseEstimates(const Predictor& p, const std::vector<TraceRecord>& traces);

// Total blocks for one trace with `limits` (scale included) applied to `estimate`.
inline int64_t TotalBlocks(const BudgetLimits& limits, double estimate, const TraceRecord& r) {
  return ApplyLimits(limits, estimate, r.causal_blocks()).total_blocks;
}

// Splits indices 0..n-1 into (fit, holdout), stratified by task, seeded.
void SplitIndices(const std::vector<TraceRecord>& traces, double holdout, uint64_t seed, std::vector<size_t>* fit,
                  std::vector<size_t>* hold);

// Geometric length edges: midpoints between the distinct powers of two (rounded log2) present.
std::vector<int64_t> LengthEdges(const std::vector<const TraceRecord*>& traces);

// The binomial CDF P(X <= k), X ~ Bin(n, p).
double BinomCdf(int64_t k, int64_t n, double p);

// The Lagrangian path of per-cell allocations (table predictor). Cells are (task, length
// bucket, feature bucket); every cell picks a fraction from `grid`. For each lambda the cell
// minimises  sum_i fraction_i + lambda * sum_i miss_i  over its requests; choices are made
// monotone along the path (cumulative max), and the path ends with every cell dense.
struct TablePath {
  TableModel shape;                      // edges and bucket feature; cells empty
  std::vector<TableCell> cells;          // task, buckets; fraction unused
  std::vector<double> grid;              // candidate fractions, ascending, last = 1
  std::vector<double> lambdas;           // per path point (+inf for the dense end)
  std::vector<std::vector<int>> choice;  // [point][cell] -> grid index
  size_t size() const { return choice.size(); }
  Expected<std::unique_ptr<Predictor>> At(size_t point, const BudgetLimits& limits) const;
};
Expected<TablePath> BuildTablePath(const std::vector<const TraceRecord*>& traces, const FitOptions& options);

// One request served from `start_blocks` under an escalation policy (null: no escalation),
// simulated from the trace's curve (docs/predictors.md "Escalation"):
//  - at budget b the first answer token has top1_prob(b) of the largest curve point <= b;
//    below the threshold the step is recomputed at the next rung (exact: nothing decoded at b
//    survives, and decoding from the next rung is what the curve recorded there);
//  - once the first token is accepted at b, the answer's budget is b (effective_blocks); if a
//    later token's probability (min_top1_prob(b)) is below the threshold, the policy escalates
//    mid-answer: counted conservatively as the whole answer at b and again at each rung after,
//    with the quality min(quality(b), quality(final rung)), since the trace does not say where
//    the trigger fell;
//  - kRestartAnswer: an unsure later token restarts the answer at the next rung: quality exact,
//    cost counted as the whole answer at b;
//  - kFirstToken: later tokens are not checked: quality exact (the curve at the accepted b), cost
//    the recomputed first steps plus the answer at b;
//  - unknown probabilities never trigger.
// step_fraction: blocks read per decode step, averaged over the answer's steps (answer_length
// or expected_output_length, else 1 step), recomputed steps included, / causal_blocks.
struct SimOutcome {
  double step_fraction = 0.0;
  int64_t effective_blocks = 0;
  double quality = 0.0;
  bool miss = false;       // effective_blocks < monotone oracle
  bool degraded = false;   // quality < dense quality
  int32_t recomputed = 0;  // steps recomputed
};
SimOutcome Simulate(const TraceRecord& r, int64_t start_blocks, const EscalationPolicy* policy,
                    const BudgetLimits& limits);

// Index of the cell of a request in the table's shape: (length bucket, feature bucket).
int32_t LengthBucket(const TableModel& shape, int64_t length);
int32_t FeatureBucket(const TableModel& shape, const RequestFeatures& f);

}  // namespace sparsebudget::detail
