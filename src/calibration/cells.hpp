// Internal: per-cell calibration of any signal (docs/predictors.md "Cells"). Every fittable
// predictor and every numeric feature is calibrated through FitCells; ChooseCellSpec picks the
// signal and bucket counts by cross-validation on the calibration traces alone.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "calibration/internal.hpp"

namespace sparsebudget::detail {

// Which signal orders requests inside a length bucket, and how finely: one for the label-free
// tier, one for the task tiers (labelled calibrations choose each with its own cross-validation).
struct CellSpec {
  std::string source;       // label-free tier: "" = length only; "feature:NAME"; "predictor:TYPE" (fitted here)
  int buckets = 1;          // quantile buckets of the score per (tier, length bucket), in [1, 16]
  bool by_task = false;     // also task tiers (labelled), backing off to the label-free tier
  std::string task_source;  // task tiers' signal, as `source` (used when by_task)
  int task_buckets = 1;     // task tiers' buckets, in [1, 16] (used when by_task)
  std::string Describe() const;
};

// Each trace's simulated (cost, loss) at every start of the grid, for one CellSettings (an
// outcome depends on the trace, the grid and the settings' alpha, limits and escalation policy,
// never on the cells), so the candidates and folds of one cross-validation share it.
struct GridOutcomes {
  const std::vector<TraceRecord>* traces = nullptr;
  size_t grid_size = 0;
  std::vector<double> cost;  // [trace * grid_size + k]: step fraction
  std::vector<char> loss;    // [trace * grid_size + k]: Loss()
};

// What the caller fixes for every candidate.
struct CellSettings {
  double alpha = 0.05;                           // miss target
  double delta = 0.0;                            // 0: conformal risk control; else binomial tests
  double abstain_above = 0.9;                    // a cell missing > alpha at every budget <= this runs dense
  int min_cell = 20;                             // fewer fit requests: the cell backs off to its parent
  FitOptions fit;                                // limits (and options of fitted score predictors)
  const EscalationPolicy* escalation = nullptr;  // simulate this policy (threshold, ladder)
  // Optional: each trace's simulated (cost, loss) at every grid fraction, shared by the
  // candidates and folds of ChooseCellSpec (an outcome depends on the trace, the grid and the
  // settings above, never on the cells). Used only for the `traces` vector it was built from.
  const GridOutcomes* grid_outcomes = nullptr;
};

// A fitted and level-picked cells predictor.
struct CellsFit {
  std::unique_ptr<Predictor> predictor;
  std::vector<std::string> abstained;  // "tier=* length_bucket=2 (L<=2896) score_bucket=1"
  double free_lambda = 0.0, task_lambda = 0.0;
  double hold_mean_fraction = 0.0;  // on the held-out part, as picked (labelled when by_task)
  double hold_miss_share = 0.0;
};

// Fits cells on traces[fit_idx] and picks the Lagrangian level on traces[hold_idx] (label-free
// tier with the holdout's task labels removed; task tiers with them).
Expected<CellsFit> FitCells(const std::vector<TraceRecord>& traces, const std::vector<size_t>& fit_idx,
                            const std::vector<size_t>& hold_idx, const CellSpec& spec, const CellSettings& set);

// Fills `table` for traces[idx] under `set` (N x grid cells of 9 bytes); false, leaving it
// unused, beyond 2^24 cells (FitCells then simulates per group).
bool BuildGridOutcomes(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx, const CellSettings& set,
                       GridOutcomes* table);

// `folds` folds of traces[idx], stratified by task, seeded (each fold's indices ascending within
// a task). The one fold rule of every cross-validation here (signals, escalation threshold).
std::vector<std::vector<size_t>> TaskStratifiedFolds(const std::vector<TraceRecord>& traces,
                                                     const std::vector<size_t>& idx, int folds, uint64_t seed);
// The indices of every fold but fold k, ascending (fit part of fold k's round).
std::vector<size_t> AllFoldsBut(const std::vector<std::vector<size_t>>& folds, size_t k);

// Cross-validated choice among `candidates` (folds stratified by task, seeded): the candidate of
// least mean budget fraction on the held-out folds at the picked level. `report` gets one line
// per candidate.
Expected<CellSpec> ChooseCellSpec(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx,
                                  const std::vector<CellSpec>& candidates, const CellSettings& set, int folds,
                                  uint64_t seed, std::string* report);

// Both tiers' signals from `signals` (CellCandidates): the label-free tier's by ChooseCellSpec on
// traces[idx] with the task labels removed (what a calibration on unlabelled traces chooses);
// with task labels in traces[idx], then the task tiers' (or none) by ChooseCellSpec on the
// labelled traces with the label-free tier fixed. `report` gets both sections.
Expected<CellSpec> ChooseCellSpecs(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx,
                                   const std::vector<CellSpec>& signals, const CellSettings& set, int folds,
                                   uint64_t seed, std::string* report);

// Candidate signals (label-free tier fields set) for a predictor type ("auto": every signal
// present in the traces).
std::vector<CellSpec> CellCandidates(const std::string& type, const std::vector<TraceRecord>& traces,
                                     const std::vector<size_t>& idx);

// A copy with the task label removed (task = unknown, no task_probs).
RequestFeatures StripTask(const RequestFeatures& f);

// True if some trace carries a task other than unknown, and at least two distinct ones.
bool HasTaskLabels(const std::vector<TraceRecord>& traces, const std::vector<size_t>& idx);

}  // namespace sparsebudget::detail
