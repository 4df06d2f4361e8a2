// sparsebudget: the command-line front end of the predictors, calibration and evaluation.
// Exit codes: 0 ok, 1 bad input (the message names the file and line), 2 usage.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "sparsebudget/calibration.hpp"
#include "sparsebudget/isa.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/probe.hpp"
#include "sparsebudget/sparsebudget.hpp"
#include "sparsebudget/traces.hpp"

namespace sb = sparsebudget;

namespace {

constexpr int kOk = 0, kBadInput = 1, kUsage = 2;

int Fail(const sb::Status& st) {
  fmt::print(stderr, "sparsebudget: error: {}\n", st.ToString());
  return kBadInput;
}

std::shared_ptr<spdlog::logger> Log() {
  static auto log = [] {
    auto l = spdlog::stderr_color_mt("sparsebudget");
    // Progress only on a terminal.
    l->set_level(isatty(STDERR_FILENO) ? spdlog::level::info : spdlog::level::warn);
    l->set_pattern("[%H:%M:%S] %v");
    return l;
  }();
  return log;
}

bool LooksLikeFile(const std::string& s) {
  return s.find('/') != std::string::npos || s.find(".json") != std::string::npos || std::filesystem::exists(s);
}

// TYPE with defaults (for predict) or a predictor JSON file.
sb::Expected<std::unique_ptr<sb::Predictor>> PredictorArg(const std::string& arg) {
  if (LooksLikeFile(arg)) return sb::LoadPredictor(arg);
  if (!arg.empty() && arg[0] == '{') return sb::PredictorFromJson(arg);
  return sb::PredictorFromJson("{\"schema_version\":1,\"type\":\"" + arg + "\"}");
}

std::string Stem(const std::string& path) { return std::filesystem::path(path).stem().string(); }

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string PredictionJson(const std::string& id, const sb::Prediction& p, const std::string& type) {
  std::string s = "{";
  if (!id.empty()) s += fmt::format("\"id\":\"{}\",", id);
  s += fmt::format(
      "\"type\":\"{}\",\"mode\":\"fraction\",\"fraction\":{},\"total_blocks\":{},\"causal_blocks\":{},"
      "\"budget_fraction\":{},\"estimate_blocks\":{},\"sink_blocks\":{},\"local_blocks\":{},\"min_blocks\":{},"
      "\"max_blocks\":{},\"clamped\":{},\"fallback\":{}}}",
      type, p.fraction, p.total_blocks, p.causal_blocks, p.budget.fraction, p.estimate_blocks, p.budget.sink_blocks,
      p.budget.local_blocks, p.budget.min_blocks, p.budget.max_blocks, p.clamped ? "true" : "false",
      p.fallback ? "true" : "false");
  return s;
}

// ---- subcommands ----------------------------------------------------------------------------

struct PredictArgs {
  std::string predictor = "length_law", features, traces, task = "unknown";
  int64_t length = 0;
  int block_size = 64;
  double entropy = 0, top1 = 0, probe90 = 0;
  // Which options were given: every given value goes to the library, which validates it (a
  // sentinel such as -1 would silently drop a bad value).
  bool has_length = false, has_entropy = false, has_top1 = false, has_probe90 = false;
};

int RunPredict(const PredictArgs& a) {
  auto p = PredictorArg(a.predictor);
  if (!p.ok()) return Fail(p.status());
  if (!a.traces.empty()) {
    auto tr = sb::ReadTraces(a.traces);
    if (!tr.ok()) return Fail(tr.status());
    for (const auto& r : *tr) {
      auto pr = (*p)->Predict(r.features);
      if (!pr.ok())
        return Fail(sb::Status(pr.status().code(),
                               a.traces + ": line " + std::to_string(r.line) + ": " + pr.status().message()));
      fmt::print("{}\n", PredictionJson(r.id, *pr, (*p)->type()));
    }
    return kOk;
  }
  sb::RequestFeatures f;
  if (!a.features.empty()) {
    std::string text = a.features;
    if (text[0] != '{') {
      std::error_code ec;
      if (std::filesystem::is_directory(text, ec))
        return Fail(sb::Status(sb::StatusCode::kIoError, text + ": is a directory, not a file"));
      std::ifstream in(text);
      if (!in) return Fail(sb::Status(sb::StatusCode::kIoError, text + ": cannot open"));
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    auto ff = sb::FeaturesFromJson(text);
    if (!ff.ok()) return Fail(ff.status());
    f = *ff;
  } else {
    if (!a.has_length) {
      fmt::print(stderr, "sparsebudget predict: give --features, --traces or --length\n");
      return kUsage;
    }
    f.context_length = a.length;
    f.block_size = a.block_size;
    f.task = a.task;
    if (a.has_entropy) f.entropy = a.entropy;
    if (a.has_top1) f.top1_prob = a.top1;
    if (a.has_probe90) f.probe_blocks_90 = a.probe90;
  }
  auto pr = (*p)->Predict(f);
  if (!pr.ok()) return Fail(pr.status());
  fmt::print("{}\n", PredictionJson("", *pr, (*p)->type()));
  return kOk;
}

struct CalibrateArgs {
  std::string traces, predictor, out, bucket_feature, terms;
  double target_degraded = -1, target_mean = -1, holdout = 0.3, delta = 0, l2 = 1e-3, quantile = 0;
  double min_fraction = 0, max_fraction = 1;
  int64_t min_blocks = 0, max_blocks = 0;
  int bucket_count = 2, probe_mass = 90;
  uint64_t seed = 1;
  int min_cell = 20, cv_folds = 3;
  double abstain_above = 0.9;
  bool escalation = false, label_free = false;
  std::string ladder;
};

// --label-free: the traces as an engine that never knows the task would see them.
void DropTaskLabels(std::vector<sb::TraceRecord>* traces) {
  for (auto& r : *traces) {
    r.features.task = sb::kTaskUnknown;
    r.features.task_probs.clear();
  }
}

int RunCalibrate(const CalibrateArgs& a) {
  Log()->info("reading {}", a.traces);
  auto tr = sb::ReadTraces(a.traces);
  if (!tr.ok()) return Fail(tr.status());
  if (a.label_free) DropTaskLabels(&*tr);
  sb::CalibrationOptions o;
  o.target_degraded = a.target_degraded;
  o.target_mean_fraction = a.target_mean;
  o.holdout = a.holdout;
  o.delta = a.delta;
  o.seed = a.seed;
  o.fit.bucket_feature = a.bucket_feature;
  o.fit.bucket_count = a.bucket_count;
  o.fit.terms = SplitComma(a.terms);
  o.fit.l2 = a.l2;
  o.fit.quantile = a.quantile;
  o.fit.probe_mass = a.probe_mass;
  o.fit.limits.min_fraction = a.min_fraction;
  o.fit.limits.max_fraction = a.max_fraction;
  o.fit.limits.min_blocks = a.min_blocks;
  o.fit.limits.max_blocks = a.max_blocks;
  o.min_cell = a.min_cell;
  o.cv_folds = a.cv_folds;
  o.abstain_above = a.abstain_above;
  o.escalation = a.escalation;
  if (!a.ladder.empty()) {
    o.escalation_ladder.clear();
    for (const auto& s : SplitComma(a.ladder)) {
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (end == s.c_str() || *end != '\0')
        return Fail(sb::Status(sb::StatusCode::kInvalidArgument, "--ladder: not a number: '" + s + "'"));
      o.escalation_ladder.push_back(v);
    }
  }
  std::unique_ptr<sb::Predictor> base;
  if (LooksLikeFile(a.predictor)) {
    auto p = sb::LoadPredictor(a.predictor);
    if (!p.ok()) return Fail(p.status());
    base = std::move(p).value();
  }
  Log()->info("calibrating {} on {} traces", a.predictor, tr->size());
  auto res = sb::Calibrate(a.predictor, base.get(), *tr, o);
  if (!res.ok()) return Fail(res.status());
  sb::Status st = sb::SavePredictor(*res->predictor, a.out);
  if (!st.ok()) return Fail(st);
  if (!res->selection.empty()) fmt::print("candidates (cross-validated on the fit part):\n{}", res->selection);
  if (!res->signal.empty()) fmt::print("chose: {}\n", res->signal);
  for (const auto& c : res->abstained_cells) fmt::print("abstains to dense (uncertifiable at the target): {}\n", c);
  fmt::print("{} -> {}\n", res->summary, a.out);
  return kOk;
}

struct EvaluateArgs {
  bool label_free = false;
  std::string traces, json;
  std::vector<std::string> predictors, names;
  std::vector<double> fixed;
  std::vector<int64_t> fixed_blocks;
  double kv_bytes = 512;
};

int RunEvaluate(const EvaluateArgs& a) {
  Log()->info("reading {}", a.traces);
  auto tr = sb::ReadTraces(a.traces);
  if (!tr.ok()) return Fail(tr.status());
  if (a.label_free) DropTaskLabels(&*tr);
  std::vector<std::unique_ptr<sb::Predictor>> owned;
  std::vector<std::pair<std::string, const sb::Predictor*>> list;
  for (size_t i = 0; i < a.predictors.size(); ++i) {
    auto p = PredictorArg(a.predictors[i]);
    if (!p.ok()) return Fail(p.status());
    owned.push_back(std::move(p).value());
    const std::string name = i < a.names.size()               ? a.names[i]
                             : LooksLikeFile(a.predictors[i]) ? Stem(a.predictors[i])
                                                              : a.predictors[i];
    list.push_back({name, owned.back().get()});
  }
  for (double f : a.fixed) {
    if (!(f > 0 && f <= 1))
      return Fail(sb::Status(sb::StatusCode::kInvalidArgument, "--fixed must be in (0, 1], got " + std::to_string(f)));
    owned.push_back(sb::MakeFixedFraction(f));
    list.push_back({fmt::format("fixed:{}", f), owned.back().get()});
  }
  for (int64_t b : a.fixed_blocks) {
    if (b < 1)
      return Fail(
          sb::Status(sb::StatusCode::kInvalidArgument, "--fixed-blocks must be >= 1, got " + std::to_string(b)));
    owned.push_back(sb::MakeFixedBlocks(b));
    list.push_back({fmt::format("fixed_blocks:{}", b), owned.back().get()});
  }
  sb::EvalOptions o;
  o.kv_bytes_per_token = a.kv_bytes;
  Log()->info("evaluating {} predictors on {} traces", list.size(), tr->size());
  auto rep = sb::Evaluate(*tr, list, o);
  if (!rep.ok()) return Fail(rep.status());
  fmt::print("{}", sb::EvalReportMarkdown(*rep));
  if (!a.json.empty()) {
    std::ofstream out(a.json);
    if (!out) return Fail(sb::Status(sb::StatusCode::kIoError, a.json + ": cannot open for writing"));
    out << sb::EvalReportJson(*rep) << "\n";
    if (!out) return Fail(sb::Status(sb::StatusCode::kIoError, a.json + ": write failed"));
  }
  return kOk;
}

struct OracleArgs {
  std::string q, k, v, scoring = "mean", json;
  double epsilon = 0.05;
  int block_size = 64, sink = 1, local = 1;
};

int RunOracle(const OracleArgs& a) {
  auto q = sb::ReadNpy(a.q);
  if (!q.ok()) return Fail(q.status());
  auto k = sb::ReadNpy(a.k);
  if (!k.ok()) return Fail(k.status());
  auto v = sb::ReadNpy(a.v);
  if (!v.ok()) return Fail(v.status());
  auto bad = [](const std::string& m) { return Fail(sb::Status(sb::StatusCode::kInvalidArgument, m)); };
  if (k->shape.size() != 3) return bad(a.k + ": shape must be [tokens, kv_heads, head_dim]");
  if (v->shape != k->shape) return bad(a.v + ": shape must equal the shape of " + a.k);
  std::vector<int64_t> qs = q->shape;
  if (qs.size() == 2) qs.insert(qs.begin(), 1);
  if (qs.size() != 3) return bad(a.q + ": shape must be [queries, q_heads, head_dim] or [q_heads, head_dim]");
  if (qs[2] != k->shape[2])
    return bad(a.q + ": head_dim " + std::to_string(qs[2]) + " differs from K's " + std::to_string(k->shape[2]));
  sb::AttentionParams p;
  p.shape.num_q_heads = static_cast<int32_t>(qs[1]);
  p.shape.num_kv_heads = static_cast<int32_t>(k->shape[1]);
  p.shape.head_dim = static_cast<int32_t>(qs[2]);
  p.shape.block_size = a.block_size;
  p.shape.context_length = k->shape[0];
  p.shape.num_queries = static_cast<int32_t>(qs[0]);
  p.kv_dtype = sb::DType::kF32;
  if (a.scoring == "mean")
    p.scoring = sb::Scoring::kMean;
  else if (a.scoring == "bound")
    p.scoring = sb::Scoring::kBound;
  else
    return bad("--scoring must be mean or bound, got " + a.scoring);
  p.budget.sink_blocks = a.sink;
  p.budget.local_blocks = a.local;
  const int64_t hd = p.shape.head_dim;
  sb::QueryView qv{q->data.data(), qs[1] * hd, hd};
  sb::KVCacheView kv;
  kv.k = k->data.data();
  kv.v = v->data.data();
  kv.dtype = sb::DType::kF32;
  kv.token_stride = k->shape[1] * hd;
  kv.head_stride = hd;
  auto o = sb::OracleFromAttention(p, qv, kv, a.epsilon);
  if (!o.ok()) return Fail(o.status());
  std::string curve = "[";
  for (size_t i = 0; i < o->curve.size(); ++i)
    curve += fmt::format("{}{{\"blocks\":{},\"fraction\":{},\"rel_error\":{},\"quality\":{}}}", i ? "," : "",
                         o->curve[i].blocks, o->curve[i].fraction, o->curve[i].rel_error,
                         std::max(0.0, 1.0 - o->curve[i].rel_error));
  curve += "]";
  const std::string doc = fmt::format(
      "{{\"oracle\":{{\"blocks\":{},\"fraction\":{},\"criterion\":\"rel_l2<={}\"}},\"causal_blocks\":{},\"curve\":{}}}",
      o->blocks, o->fraction, a.epsilon, o->causal_blocks, curve);
  fmt::print("oracle: {} of {} blocks (fraction {:.4f}) at relative L2 error <= {}\n", o->blocks, o->causal_blocks,
             o->fraction, a.epsilon);
  for (const auto& c : o->curve)
    fmt::print("  blocks {:5d}  fraction {:.4f}  rel_error {:.3e}\n", c.blocks, c.fraction, c.rel_error);
  if (!a.json.empty()) {
    std::ofstream out(a.json);
    out << doc << "\n";
    if (!out) return Fail(sb::Status(sb::StatusCode::kIoError, a.json + ": write failed"));
  }
  return kOk;
}

int RunValidate(const std::vector<std::string>& files) {
  for (const auto& f : files) {
    auto tr = sb::ReadTraces(f);
    if (!tr.ok()) return Fail(tr.status());
    std::map<std::string, int64_t> tasks;
    int64_t lmin = INT64_MAX, lmax = 0, disagree = 0;
    for (const auto& r : *tr) {
      tasks[r.task()]++;
      lmin = std::min(lmin, r.context_length());
      lmax = std::max(lmax, r.context_length());
      if (r.oracle.blocks != sb::MonotoneOracleBlocks(r)) ++disagree;
    }
    std::string ts;
    for (const auto& kv : tasks) ts += fmt::format("{}{}={}", ts.empty() ? "" : ", ", kv.first, kv.second);
    fmt::print(
        "{}: ok, {} records; tasks: {}; context_length {}..{}; oracle differs from the curve's monotone oracle in {} "
        "records\n",
        f, tr->size(), ts, lmin, lmax, disagree);
  }
  return kOk;
}

struct SynthArgs {
  std::string out, lengths = "512,1024,2048,4096,8192";
  int64_t count = 1000;
  uint64_t seed = 1;
  int block_size = 64;
  bool fine = false, continuous = false;
  double noise = 0.35, lucky = 0.1;
  int laws = 0;
};

int RunSynth(const SynthArgs& a) {
  sb::SynthOptions o;
  o.count = a.count;
  o.seed = a.seed;
  o.block_size = a.block_size;
  o.fine_grid = a.fine;
  o.continuous_lengths = a.continuous;
  o.noise = a.noise;
  o.lucky = a.lucky;
  if (a.laws != 0 && a.laws != 1)
    return Fail(sb::Status(sb::StatusCode::kInvalidArgument, "--laws must be 0 or 1, got " + std::to_string(a.laws)));
  o.laws = a.laws;
  o.lengths.clear();
  for (const auto& s : SplitComma(a.lengths)) {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() || *end != '\0' || v < 1)
      return Fail(sb::Status(sb::StatusCode::kInvalidArgument, "--lengths: '" + s + "' is not a positive integer"));
    o.lengths.push_back(v);
  }
  if (a.count < 1) return Fail(sb::Status(sb::StatusCode::kInvalidArgument, "--count must be >= 1"));
  const std::vector<sb::TraceRecord> records = sb::SynthesizeTraces(o);
  // Write only what `validate` (the trace reader) accepts: the reader's own checks, per record.
  for (size_t i = 0; i < records.size(); ++i) {
    auto back = sb::ParseTraceRecord(sb::TraceRecordToJson(records[i]), static_cast<int64_t>(i) + 1);
    if (!back.ok())
      return Fail(sb::Status(back.status().code(), "synth (--block-size " + std::to_string(a.block_size) +
                                                       ", --lengths " + a.lengths +
                                                       ") would write a record the trace "
                                                       "reader rejects: " +
                                                       back.status().message()));
  }
  sb::Status st = sb::WriteTraces(a.out, records);
  if (!st.ok()) return Fail(st);
  fmt::print("wrote {} synthetic traces (seed {}) to {}\n", a.count, a.seed, a.out);
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sparsebudget: per-request sparse-attention budgets (predict, calibrate, evaluate)"};
  app.require_subcommand(1);
  int rc = kOk;

  auto* info = app.add_subcommand("info", "print version and the active ISA");
  info->callback([&] {
    fmt::print("sparsebudget {}\nactive ISA: {}\ndetected ISA: {}\npredictor types:", sb::Version(),
               sb::IsaName(sb::ActiveIsa()), sb::IsaName(sb::DetectedIsa()));
    for (const auto& t : sb::PredictorTypes()) fmt::print(" {}", t);
    fmt::print("\n");
  });

  PredictArgs pa;
  auto* predict = app.add_subcommand("predict", "features in, budget out (JSON)");
  predict->add_option("--predictor,-p", pa.predictor, "predictor TYPE (defaults), FILE.json or inline JSON")
      ->capture_default_str();
  predict->add_option("--features,-f", pa.features, "features JSON object or file");
  predict->add_option("--traces", pa.traces, "predict for every record of a trace file (JSONL out)");
  auto* p_length = predict->add_option("--length,-L", pa.length, "context length in tokens");
  predict->add_option("--task", pa.task, "task class");
  predict->add_option("--block-size", pa.block_size, "block size")->capture_default_str();
  auto* p_entropy = predict->add_option("--entropy", pa.entropy, "next-token entropy (nats)");
  auto* p_top1 = predict->add_option("--top1-prob", pa.top1, "next-token top-1 probability");
  auto* p_probe90 = predict->add_option("--probe-blocks-90", pa.probe90, "probe statistic probe_blocks_90");
  predict->callback([&] {
    pa.has_length = p_length->count() > 0;
    pa.has_entropy = p_entropy->count() > 0;
    pa.has_top1 = p_top1->count() > 0;
    pa.has_probe90 = p_probe90->count() > 0;
    rc = RunPredict(pa);
  });

  CalibrateArgs ca;
  auto* cal = app.add_subcommand("calibrate", "fit a predictor on traces and calibrate it to a target");
  cal->add_option("--traces", ca.traces, "training traces (JSONL)")->required();
  cal->add_option("--predictor,-p", ca.predictor,
                  "TYPE to fit (auto, fixed, length_law, task_length_law, linear, probe, table) or FILE.json to "
                  "rescale; auto chooses the signal and cells by cross-validation")
      ->required();
  auto* td = cal->add_option("--target-degraded", ca.target_degraded, "largest share of degraded requests (alpha)");
  auto* tm = cal->add_option("--target-mean-budget", ca.target_mean, "mean budget fraction to reach");
  td->excludes(tm);
  cal->add_option("-o,--output", ca.out, "output predictor JSON")->required();
  cal->add_option("--holdout", ca.holdout, "share of traces held out for the finite-sample correction")
      ->capture_default_str();
  cal->add_option("--delta", ca.delta, "0: guarantee in expectation; >0: P(miss rate > alpha) <= delta")
      ->capture_default_str();
  cal->add_option("--seed", ca.seed, "split seed")->capture_default_str();
  cal->add_option("--bucket-feature", ca.bucket_feature, "table: extra cell dimension, e.g. entropy");
  cal->add_option("--bucket-count", ca.bucket_count, "table: quantile buckets of --bucket-feature")
      ->capture_default_str();
  cal->add_option("--terms", ca.terms, "linear: comma-separated terms (default: from the traces)");
  cal->add_option("--l2", ca.l2, "linear: ridge penalty")->capture_default_str();
  cal->add_option("--quantile", ca.quantile, "linear: pinball level (0 = least squares)")->capture_default_str();
  cal->add_option("--probe-mass", ca.probe_mass, "probe: 50, 90 or 99")->capture_default_str();
  cal->add_option("--min-fraction", ca.min_fraction, "limit")->capture_default_str();
  cal->add_option("--max-fraction", ca.max_fraction, "limit")->capture_default_str();
  cal->add_option("--min-blocks", ca.min_blocks, "limit")->capture_default_str();
  cal->add_option("--max-blocks", ca.max_blocks, "limit")->capture_default_str();
  cal->add_option("--min-cell", ca.min_cell, "cells: fewer fit requests back off to the parent cell")
      ->capture_default_str();
  cal->add_option("--cv-folds", ca.cv_folds, "cells: folds of the cross-validated choice")->capture_default_str();
  cal->add_option("--abstain-above", ca.abstain_above,
                  "cells: run a cell dense if it misses the target at every budget <= this fraction (0: never)")
      ->capture_default_str();
  cal->add_flag("--label-free", ca.label_free, "drop the traces' task labels (calibrate as for traffic without them)");
  cal->add_flag("--escalation", ca.escalation,
                "calibrate start budgets and the self-check threshold jointly (traces need curve top1_prob)");
  cal->add_option("--ladder", ca.ladder,
                  "escalation: comma-separated ascending rung fractions ending in 1 (default 2^(-k/4), k = 32..0)");
  cal->callback([&] {
    if ((ca.target_degraded < 0) == (ca.target_mean < 0)) {
      fmt::print(stderr, "sparsebudget calibrate: give exactly one of --target-degraded and --target-mean-budget\n");
      rc = kUsage;
      return;
    }
    rc = RunCalibrate(ca);
  });

  EvaluateArgs ea;
  auto* ev = app.add_subcommand("evaluate", "evaluate predictors on test traces against fixed budgets and the oracle");
  ev->add_option("--traces", ea.traces, "test traces (JSONL)")->required();
  ev->add_option("--predictor,-p", ea.predictors, "predictor FILE.json or TYPE (repeatable)");
  ev->add_option("--name", ea.names, "display names, in --predictor order (default: file stem)");
  ev->add_option("--fixed", ea.fixed, "fixed budget fraction (repeatable)");
  ev->add_option("--fixed-blocks", ea.fixed_blocks, "fixed total blocks (repeatable)");
  ev->add_flag("--label-free", ea.label_free, "drop the traces' task labels before evaluating");
  ev->add_option("--json", ea.json, "write the report as JSON (tools/plot_frontier.py plots it)");
  ev->add_option("--kv-bytes-per-token", ea.kv_bytes, "K+V bytes per token per (layer, kv head)")
      ->capture_default_str();
  ev->callback([&] {
    if (ea.predictors.empty() && ea.fixed.empty() && ea.fixed_blocks.empty()) {
      fmt::print(stderr, "sparsebudget evaluate: give at least one --predictor or --fixed\n");
      rc = kUsage;
      return;
    }
    if (ea.names.size() > ea.predictors.size()) {
      fmt::print(stderr, "sparsebudget evaluate: {} --name values for {} --predictor values (one name per predictor)\n",
                 ea.names.size(), ea.predictors.size());
      rc = kUsage;
      return;
    }
    rc = RunEvaluate(ea);
  });

  OracleArgs oa;
  auto* orc = app.add_subcommand("oracle", "smallest block budget within epsilon of dense attention (Q/K/V .npy)");
  orc->add_option("--q", oa.q, "queries [queries, q_heads, head_dim] or [q_heads, head_dim], float32/float16")
      ->required();
  orc->add_option("--k", oa.k, "keys [tokens, kv_heads, head_dim]")->required();
  orc->add_option("--v", oa.v, "values [tokens, kv_heads, head_dim]")->required();
  orc->add_option("--epsilon", oa.epsilon, "largest relative L2 error to dense")->capture_default_str();
  orc->add_option("--block-size", oa.block_size, "block size")->capture_default_str();
  orc->add_option("--scoring", oa.scoring, "mean or bound")->capture_default_str();
  orc->add_option("--sink", oa.sink, "sink blocks")->capture_default_str();
  orc->add_option("--local", oa.local, "local blocks")->capture_default_str();
  orc->add_option("--json", oa.json, "write the oracle and its curve as JSON");
  orc->callback([&] { rc = RunOracle(oa); });

  std::vector<std::string> vfiles;
  auto* val = app.add_subcommand("validate", "check trace files");
  val->add_option("traces", vfiles, "trace files (JSONL)")->required();
  val->callback([&] { rc = RunValidate(vfiles); });

  SynthArgs sa;
  auto* syn = app.add_subcommand("synth", "write synthetic traces with a known budget law (docs/traces.md)");
  syn->add_option("-o,--output", sa.out, "output JSONL")->required();
  syn->add_option("--count,-n", sa.count, "records")->capture_default_str();
  syn->add_option("--seed", sa.seed, "seed")->capture_default_str();
  syn->add_option("--block-size", sa.block_size, "block size")->capture_default_str();
  syn->add_option("--lengths", sa.lengths, "comma-separated context lengths")->capture_default_str();
  syn->add_flag("--continuous", sa.continuous, "log-uniform lengths between the min and max of --lengths");
  syn->add_flag("--fine-grid", sa.fine, "curve at every block count up to 512");
  syn->add_option("--noise", sa.noise, "sd of the log-normal noise of the needed budget")->capture_default_str();
  syn->add_option("--lucky", sa.lucky, "chance scale of a correct answer below the need")->capture_default_str();
  syn->add_option("--laws", sa.laws, "law set: 0 (docs/traces.md) or 1 (other constants, for generalization checks)")
      ->capture_default_str();
  syn->callback([&] { rc = RunSynth(sa); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsage;
  }
  return rc;
}
