/// @file
/// sparsebudget/sparsebudget.hpp - the umbrella header: the whole C++ API, in pipeline order.
///
/// A request goes through the stages in this order, one header each:
///   features.hpp, probe.hpp  what a predictor sees (logit and attention-probe features)
///   predictor.hpp            features -> Budget (and calibration.hpp / traces.hpp to fit one)
///   budget.hpp               the budget and the counting rule
///   attention.hpp            views, block summaries; per-request plan, select, attend
///   op.hpp                   the engine API: one AttentionOp per model, one StepPlan per step,
///                            RunLayer per layer for the whole batch; LSE and state merging
/// Infrastructure: status.hpp (errors), isa.hpp (kernel builds), thread_pool.hpp, version.hpp.
#pragma once

// In stage order, not sorted (clang-format would sort them).
// clang-format off
#include "sparsebudget/status.hpp"
#include "sparsebudget/version.hpp"
#include "sparsebudget/isa.hpp"
#include "sparsebudget/thread_pool.hpp"

#include "sparsebudget/features.hpp"
#include "sparsebudget/probe.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/traces.hpp"
#include "sparsebudget/calibration.hpp"
#include "sparsebudget/budget.hpp"
#include "sparsebudget/attention.hpp"
#include "sparsebudget/op.hpp"
// clang-format on
