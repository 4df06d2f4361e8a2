// RequestFeatures: lookup by name, validation, JSON.
#include "sparsebudget/features.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/checked.hpp"
#include "io/json_util.hpp"
#include "predictors/feature_fields.hpp"

namespace sparsebudget {

namespace {
using detail::json;

std::optional<double> Base(const RequestFeatures& f, std::string_view name) {
  if (name == "context_length") return static_cast<double>(f.context_length);
  if (name == "log_length")
    return f.context_length > 0 ? std::optional<double>(std::log(static_cast<double>(f.context_length))) : std::nullopt;
  if (name == "causal_blocks") return static_cast<double>(f.causal_blocks());
  if (name == "expected_output_length") return f.expected_output_length;
  if (name == "entropy") return f.entropy;
  if (name == "top1_prob") return f.top1_prob;
  if (name == "probe_blocks_50") return f.probe_blocks_50;
  if (name == "probe_blocks_90") return f.probe_blocks_90;
  if (name == "probe_blocks_99") return f.probe_blocks_99;
  if (name == "probe_entropy") return f.probe_entropy;
  if (name == "probe_top5_mass") return f.probe_top5_mass;
  if (name.substr(0, 5) == "task:") {
    const std::string t(name.substr(5));
    if (!f.task_probs.empty()) {
      auto it = f.task_probs.find(t);
      return it == f.task_probs.end() ? 0.0 : it->second;
    }
    return f.task == t ? 1.0 : 0.0;
  }
  auto it = f.extra.find(std::string(name));
  if (it != f.extra.end()) return it->second;
  return std::nullopt;
}

using detail::kOptionalFeatureFields;
}  // namespace

int64_t RequestFeatures::causal_blocks() const noexcept {
  if (context_length <= 0 || block_size <= 0) return 0;
  return detail::CeilDiv(context_length, block_size);
}

std::optional<double> RequestFeatures::Get(std::string_view name) const {
  if (name.substr(0, 4) == "log:") {
    auto v = Base(*this, name.substr(4));
    if (!v) return std::nullopt;
    return std::log(std::max(*v, 1e-6));
  }
  return Base(*this, name);
}

Expected<LogitStats> LogitStatsFromLogits(const float* logits, int64_t n) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  if (n < 1) return bad("logits: n must be >= 1, got " + std::to_string(n));
  if (logits == nullptr) return bad("logits is null");
  float mx = -INFINITY;
  int64_t argmax = -1;
  for (int64_t i = 0; i < n; ++i) {
    const float x = logits[i];
    if (std::isnan(x) || x == INFINITY)
      return bad("logits[" + std::to_string(i) + "] = " + std::to_string(x) + " is not finite");
    if (x > mx) {
      mx = x;
      argmax = i;
    }
  }
  if (argmax < 0) return bad("logits: every one of the " + std::to_string(n) + " logits is -inf");
  // Shifted by the max, every term is in (0, 1]; the max contributes exactly exp(0) = 1 (and
  // d = 0 to S), so Z starts at 1 and stays >= 1.
  double z = 1.0, s = 0.0;
  const double m = static_cast<double>(mx);
  for (int64_t i = 0; i < n; ++i) {
    if (i == argmax || logits[i] == -INFINITY) continue;
    const double d = static_cast<double>(logits[i]) - m;
    const double e = std::exp(d);
    z += e;
    s += e * d;
  }
  LogitStats st;
  // ln Z - S/Z >= 0 mathematically; clamp the rounding residue of a one-hot distribution.
  st.entropy = std::max(0.0, std::log(z) - s / z);
  st.top1_prob = 1.0 / z;
  return st;
}

void SetLogitFeatures(const LogitStats& stats, RequestFeatures* f) {
  f->entropy = stats.entropy;
  f->top1_prob = stats.top1_prob;
}

Status ValidateFeatures(const RequestFeatures& f) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  if (f.context_length < 1) return bad("features.context_length must be >= 1, got " + std::to_string(f.context_length));
  if (f.block_size < 1) return bad("features.block_size must be >= 1, got " + std::to_string(f.block_size));
  if (f.task.empty()) return bad("features.task must not be empty (use \"unknown\")");
  for (const auto& kv : f.task_probs) {
    if (!(kv.second >= 0.0 && kv.second <= 1.0))
      return bad("features.task_probs[" + kv.first + "] must be in [0, 1], got " + std::to_string(kv.second));
  }
  for (const auto& of : kOptionalFeatureFields) {
    const auto& v = f.*of.member;
    if (v && !std::isfinite(*v)) return bad(std::string("features.") + of.name + " must be finite or unknown");
  }
  if (f.entropy && *f.entropy < 0) return bad("features.entropy must be >= 0, got " + std::to_string(*f.entropy));
  if (f.expected_output_length && *f.expected_output_length < 0)
    return bad("features.expected_output_length must be >= 0, got " + std::to_string(*f.expected_output_length));
  if (f.top1_prob && !(*f.top1_prob >= 0 && *f.top1_prob <= 1))
    return bad("features.top1_prob must be in [0, 1], got " + std::to_string(*f.top1_prob));
  for (const char* n : {"probe_blocks_50", "probe_blocks_90", "probe_blocks_99"}) {
    auto v = f.Get(n);
    if (v && *v < 0) return bad(std::string("features.") + n + " must be >= 0, got " + std::to_string(*v));
  }
  if (f.probe_top5_mass && !(*f.probe_top5_mass >= 0 && *f.probe_top5_mass <= 1.0 + 1e-9))
    return bad("features.probe_top5_mass must be in [0, 1], got " + std::to_string(*f.probe_top5_mass));
  for (const auto& kv : f.extra) {
    if (!std::isfinite(kv.second)) return bad("features.extra[" + kv.first + "] must be finite");
  }
  return OkStatus();
}

Expected<RequestFeatures> FeaturesFromJson(const std::string& text) {
  auto parsed = detail::ParseJson(text, "features");
  if (!parsed.ok()) return parsed.status();
  detail::ObjectReader r(*parsed, "features");
  RequestFeatures f;
  r.Integer("context_length", &f.context_length, true);
  r.Int32("block_size", &f.block_size, false);
  r.String("task", &f.task, false);
  for (const auto& of : kOptionalFeatureFields) r.NumberOrNull(of.name, &(f.*of.member), false);
  if (const json* tp = r.Get("task_probs", false)) {
    if (!tp->is_object()) {
      r.FailKey("task_probs", "must be an object of numbers");
    } else {
      for (auto it = tp->begin(); it != tp->end(); ++it) {
        if (!it->is_number()) {
          r.FailKey("task_probs." + it.key(), "must be a number");
          break;
        }
        f.task_probs[it.key()] = it->get<double>();
      }
    }
  }
  if (const json* ex = r.Get("extra", false)) {
    if (!ex->is_object()) {
      r.FailKey("extra", "must be an object of numbers");
    } else {
      for (auto it = ex->begin(); it != ex->end(); ++it) {
        if (!it->is_number()) {
          r.FailKey("extra." + it.key(), "must be a number");
          break;
        }
        f.extra[it.key()] = it->get<double>();
      }
    }
  }
  Status st = r.Finish();
  if (!st.ok()) return st;
  st = ValidateFeatures(f);
  if (!st.ok()) return st;
  return f;
}

std::string FeaturesToJson(const RequestFeatures& f) {
  json j = json::object();
  j["context_length"] = f.context_length;
  j["block_size"] = f.block_size;
  j["task"] = f.task;
  for (const auto& of : kOptionalFeatureFields) {
    const auto& v = f.*of.member;
    j[of.name] = v ? json(*v) : json(nullptr);
  }
  if (!f.task_probs.empty()) j["task_probs"] = f.task_probs;
  if (!f.extra.empty()) j["extra"] = f.extra;
  return j.dump();
}

}  // namespace sparsebudget
