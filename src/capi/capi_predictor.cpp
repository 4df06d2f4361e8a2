// C API: request features, predictors and probe statistics.
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capi/capi_internal.hpp"
#include "sparsebudget/features.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/probe.hpp"

struct sb_predictor {
  std::unique_ptr<sparsebudget::Predictor> predictor;
  std::string type;
};

namespace sparsebudget::capi {

const Predictor* PredictorOf(const sb_predictor* p) noexcept { return p->predictor.get(); }

namespace {

std::optional<double> Opt(double v) {
  if (std::isnan(v)) return std::nullopt;
  return v;
}

sb_status ToFeatures(const char* fn, const sb_request_features* in, RequestFeatures* out) {
  sb_request_features f{};
  if (sb_status st = ReadIn(fn, "features", in, sizeof(sb_request_features), &f); st != SB_OK) return st;
  RequestFeatures r;
  r.context_length = f.context_length;
  r.block_size = f.block_size;
  r.task = f.task != nullptr ? f.task : kTaskUnknown;
  r.expected_output_length = Opt(f.expected_output_length);
  r.entropy = Opt(f.entropy);
  r.top1_prob = Opt(f.top1_prob);
  r.probe_blocks_50 = Opt(f.probe_blocks_50);
  r.probe_blocks_90 = Opt(f.probe_blocks_90);
  r.probe_blocks_99 = Opt(f.probe_blocks_99);
  r.probe_entropy = Opt(f.probe_entropy);
  r.probe_top5_mass = Opt(f.probe_top5_mass);
  struct Named {
    const char* what;
    int32_t n;
    const char* const* names;
    const double* values;
    std::map<std::string, double>* into;
  };
  const Named lists[2] = {{"task_prob", f.num_task_probs, f.task_prob_names, f.task_prob_values, &r.task_probs},
                          {"extra", f.num_extra, f.extra_names, f.extra_values, &r.extra}};
  for (const Named& l : lists) {
    if (l.n < 0)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  std::string("features->num_") + l.what + (l.what[0] == 't' ? "s" : "") + " must be >= 0, got " +
                      std::to_string(l.n));
    if (l.n > 0 && (l.names == nullptr || l.values == nullptr))
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  std::string("features->") + l.what + "_names or " + l.what + "_values is null");
    for (int32_t i = 0; i < l.n; ++i) {
      if (l.names[i] == nullptr)
        return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                    std::string("features->") + l.what + "_names[" + std::to_string(i) + "] is null");
      // A repeated name is an error, as in the JSON reader (a map would keep the last silently).
      if (!l.into->emplace(l.names[i], l.values[i]).second)
        return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                    std::string("features->") + l.what + "_names[" + std::to_string(i) + "] '" + l.names[i] +
                        "' repeats an earlier name");
    }
  }
  *out = std::move(r);
  return SB_OK;
}

sb_probe_stats ToProbe(const ProbeStats& p) {
  sb_probe_stats r{};
  r.blocks_50 = p.blocks_50;
  r.blocks_90 = p.blocks_90;
  r.blocks_99 = p.blocks_99;
  r.entropy = p.entropy;
  r.top5_mass = p.top5_mass;
  r.num_blocks = p.num_blocks;
  return r;
}

sb_status Adopt(const char* fn, Expected<std::unique_ptr<Predictor>> r, sb_predictor** predictor) {
  if (!r.ok()) return Fail(fn, r.status());
  auto h = std::make_unique<sb_predictor>();
  h->predictor = std::move(r).value();
  if (h->predictor == nullptr) return Fail(fn, SB_ERROR_INTERNAL, "the loader returned no predictor");
  h->type = h->predictor->type();
  *predictor = h.release();
  return Ok();
}

}  // namespace
}  // namespace sparsebudget::capi

using namespace sparsebudget;  // NOLINT(google-build-using-namespace): this file is the boundary
using capi::Fail;
using capi::Guard;
using capi::Null;
using capi::Ok;

extern "C" {

void sb_request_features_init(sb_request_features* features) {
  if (features == nullptr) return;
  std::memset(static_cast<void*>(features), 0, sizeof(*features));
  features->struct_size = sizeof(sb_request_features);
  features->block_size = 64;
  const double nan = std::nan("");
  features->expected_output_length = nan;
  features->entropy = nan;
  features->top1_prob = nan;
  features->probe_blocks_50 = nan;
  features->probe_blocks_90 = nan;
  features->probe_blocks_99 = nan;
  features->probe_entropy = nan;
  features->probe_top5_mass = nan;
}

sb_status sb_predictor_load_file(const char* path, sb_predictor** predictor) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (predictor == nullptr) return Null(fn, "predictor");
    *predictor = nullptr;
    if (path == nullptr) return Null(fn, "path");
    return capi::Adopt(fn, LoadPredictor(path), predictor);
  });
}

sb_status sb_predictor_load_json(const char* json_text, sb_predictor** predictor) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (predictor == nullptr) return Null(fn, "predictor");
    *predictor = nullptr;
    if (json_text == nullptr) return Null(fn, "json_text");
    return capi::Adopt(fn, PredictorFromJson(json_text), predictor);
  });
}

void sb_predictor_destroy(sb_predictor* predictor) { delete predictor; }

const char* sb_predictor_type(const sb_predictor* predictor) {
  return predictor != nullptr ? predictor->type.c_str() : nullptr;
}

sb_status sb_predictor_to_json(const sb_predictor* predictor, char* buffer, size_t capacity, size_t* length) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (predictor == nullptr) return Null(fn, "predictor");
    if (length == nullptr) return Null(fn, "length");
    if (buffer == nullptr && capacity > 0) return Null(fn, "buffer (with capacity > 0)");
    const std::string json = predictor->predictor->ToJson();
    *length = json.size();
    if (capacity < json.size() + 1) {
      // Nothing is written through `buffer` on failure (sparsebudget.h conventions).
      return Fail(fn, SB_ERROR_OUT_OF_RANGE,
                  "capacity " + std::to_string(capacity) + " is below the " + std::to_string(json.size() + 1) +
                      " bytes the JSON needs");
    }
    if (buffer == nullptr) return Null(fn, "buffer");  // unreachable (capacity >= 1 here); for the analyzer
    std::memcpy(buffer, json.c_str(), json.size() + 1);
    return Ok();
  });
}

sb_status sb_predictor_predict(const sb_predictor* predictor, const sb_request_features* features,
                               sb_prediction* prediction) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (predictor == nullptr) return Null(fn, "predictor");
    if (sb_status st = capi::CheckOut(fn, "prediction", prediction, sizeof(sb_prediction)); st != SB_OK) return st;
    RequestFeatures f;
    if (sb_status st = capi::ToFeatures(fn, features, &f); st != SB_OK) return st;
    Expected<Prediction> p = predictor->predictor->Predict(f);
    if (!p.ok()) return Fail(fn, p.status());
    sb_prediction r{};
    r.budget = capi::FromBudget(p->budget);
    r.estimate_blocks = p->estimate_blocks;
    r.causal_blocks = p->causal_blocks;
    r.total_blocks = p->total_blocks;
    r.fraction = p->fraction;
    r.clamped = p->clamped ? 1 : 0;
    r.fallback = p->fallback ? 1 : 0;
    capi::WriteOut(prediction, r);
    return Ok();
  });
}

sb_status sb_probe_from_summaries(const sb_summaries* summaries, const float* q, int64_t q_head_stride,
                                  int32_t num_q_heads, float scale, sb_probe_stats* stats) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (summaries == nullptr) return Null(fn, "summaries");
    if (q == nullptr) return Null(fn, "q");
    if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_probe_stats)); st != SB_OK) return st;
    const int32_t dim = summaries->summaries.config().head_dim;
    if (num_q_heads > 1 && q_head_stride < dim)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                  "q_head_stride " + std::to_string(q_head_stride) + " is below head_dim " + std::to_string(dim));
    Expected<ProbeStats> r = ProbeStatsFromSummaries(summaries->summaries, q, q_head_stride, num_q_heads, scale);
    if (!r.ok()) return Fail(fn, r.status());
    capi::WriteOut(stats, capi::ToProbe(*r));
    return Ok();
  });
}

sb_status sb_probe_from_scores(const double* scores, int64_t num_scores, double scale_over_rows,
                               sb_probe_stats* stats) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (scores == nullptr) return Null(fn, "scores");
    if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_probe_stats)); st != SB_OK) return st;
    if (num_scores < 1)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "num_scores must be >= 1, got " + std::to_string(num_scores));
    const std::vector<double> v(scores, scores + num_scores);
    Expected<ProbeStats> r = ProbeStatsFromScores(v, scale_over_rows);
    if (!r.ok()) return Fail(fn, r.status());
    capi::WriteOut(stats, capi::ToProbe(*r));
    return Ok();
  });
}

sb_status sb_probe_set_features(const sb_probe_stats* stats, sb_request_features* features) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (stats == nullptr) return Null(fn, "stats");
    if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_probe_stats)); st != SB_OK) return st;
    if (sb_status st = capi::CheckOut(fn, "features", features, sizeof(sb_request_features)); st != SB_OK) return st;
    features->probe_blocks_50 = stats->blocks_50;
    features->probe_blocks_90 = stats->blocks_90;
    features->probe_blocks_99 = stats->blocks_99;
    features->probe_entropy = stats->entropy;
    features->probe_top5_mass = stats->top5_mass;
    return Ok();
  });
}

sb_status sb_logit_stats_compute(const float* logits, int64_t n, sb_logit_stats* stats) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_logit_stats)); st != SB_OK) return st;
    Expected<LogitStats> r = LogitStatsFromLogits(logits, n);
    if (!r.ok()) return Fail(fn, r.status());
    sb_logit_stats out{};
    out.entropy = r->entropy;
    out.top1_prob = r->top1_prob;
    capi::WriteOut(stats, out);
    return Ok();
  });
}

sb_status sb_probe_from_layers(const sb_summaries* const* summaries, const float* const* last_q, int32_t num_layers,
                               int64_t q_head_stride, int32_t num_q_heads, float scale, sb_probe_stats* stats) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (sb_status st = capi::CheckOut(fn, "stats", stats, sizeof(sb_probe_stats)); st != SB_OK) return st;
    if (summaries == nullptr) return Null(fn, "summaries");
    if (num_layers < 1 || num_layers > 4096)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "num_layers must be in [1, 4096], got " + std::to_string(num_layers));
    // The handles wrap BlockSummaries; translate the pointer array (bounded above, on the stack).
    const BlockSummaries* inner[4096];
    for (int32_t l = 0; l < num_layers; ++l) inner[l] = summaries[l] ? &summaries[l]->summaries : nullptr;
    Expected<ProbeStats> r = ProbeStatsFromLayers(inner, last_q, num_layers, q_head_stride, num_q_heads, scale);
    if (!r.ok()) return Fail(fn, r.status());
    capi::WriteOut(stats, capi::ToProbe(*r));
    return Ok();
  });
}

}  // extern "C"
