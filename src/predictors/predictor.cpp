// Predictor base: limits, Predict, the registry and JSON dispatch.
#include "sparsebudget/predictor.hpp"
#include "io/json_util.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "predictors/internal.hpp"

namespace sparsebudget {

Status ValidateLimits(const BudgetLimits& l) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  if (!(l.scale > 0.0) || !std::isfinite(l.scale))
    return bad("limits: 'scale' must be finite and > 0, got " + std::to_string(l.scale));
  if (!(l.min_fraction >= 0.0 && l.min_fraction <= 1.0))
    return bad("limits: 'min_fraction' must be in [0, 1], got " + std::to_string(l.min_fraction));
  if (!(l.max_fraction >= l.min_fraction && l.max_fraction <= 1.0))
    return bad("limits: 'max_fraction' must be in [min_fraction, 1], got " + std::to_string(l.max_fraction));
  if (l.min_blocks < 0) return bad("limits: 'min_blocks' must be >= 0, got " + std::to_string(l.min_blocks));
  if (l.max_blocks < 0 || (l.max_blocks != 0 && l.max_blocks < l.min_blocks))
    return bad("limits: 'max_blocks' must be 0 or >= min_blocks, got " + std::to_string(l.max_blocks));
  if (l.sink_blocks < 0) return bad("limits: 'sink_blocks' must be >= 0, got " + std::to_string(l.sink_blocks));
  if (l.local_blocks < 0) return bad("limits: 'local_blocks' must be >= 0, got " + std::to_string(l.local_blocks));
  return OkStatus();
}

Prediction ApplyLimits(const BudgetLimits& l, double estimate_blocks, int64_t causal_blocks) {
  Prediction p;
  p.estimate_blocks = estimate_blocks;
  p.causal_blocks = causal_blocks;
  const double nb = static_cast<double>(std::max<int64_t>(causal_blocks, 1));
  double frac = l.scale * estimate_blocks / nb;
  bool clamped = false;
  if (!(frac >= l.min_fraction)) {
    frac = l.min_fraction;
    clamped = true;
  }
  if (frac > l.max_fraction) {
    frac = l.max_fraction;
    clamped = true;
  }
  Budget b = Budget::Fraction(frac);
  b.min_blocks = l.min_blocks;
  b.max_blocks = l.max_blocks;
  b.sink_blocks = l.sink_blocks;
  b.local_blocks = l.local_blocks;
  const ResolvedBudget r = ResolveBudget(b, causal_blocks);
  p.budget = b;
  p.total_blocks = r.total_blocks;
  p.fraction = causal_blocks > 0 ? static_cast<double>(r.total_blocks) / nb : 0.0;
  p.clamped = clamped || r.clamped;
  return p;
}

Expected<Prediction> Predictor::Predict(const RequestFeatures& f) const {
  Status st = ValidateFeatures(f);
  if (!st.ok()) return st;
  auto e = EstimateBlocks(f);
  if (!e.ok()) return e.status();
  double blocks = e->blocks;
  if (std::isnan(blocks)) return Status(StatusCode::kInternal, "predictor '" + type() + "' produced a NaN estimate");
  if (blocks < 0) blocks = 0;  // +inf stays: it is clamped to max_fraction
  Prediction p = ApplyLimits(limits_, blocks, f.causal_blocks());
  p.fallback = e->fallback;
  return p;
}

namespace detail {

std::string Context(const std::string& type) { return "predictor '" + type + "'"; }

std::string PredictorBase::ToJson() const {
  json j = json::object();
  j["schema_version"] = kPredictorSchemaVersion;
  j["type"] = type();
  WriteParams(j);
  WriteLimits(j, limits_);
  return j.dump();
}

void WriteLimits(json& j, const BudgetLimits& l) {
  j["scale"] = l.scale;
  j["min_fraction"] = l.min_fraction;
  j["max_fraction"] = l.max_fraction;
  j["min_blocks"] = l.min_blocks;
  j["max_blocks"] = l.max_blocks;
  j["sink_blocks"] = l.sink_blocks;
  j["local_blocks"] = l.local_blocks;
}

void ReadLimits(ObjectReader& r, BudgetLimits* l) {
  r.Number("scale", &l->scale, false);
  r.Number("min_fraction", &l->min_fraction, false);
  r.Number("max_fraction", &l->max_fraction, false);
  r.Integer("min_blocks", &l->min_blocks, false);
  r.Integer("max_blocks", &l->max_blocks, false);
  r.Int32("sink_blocks", &l->sink_blocks, false);
  r.Int32("local_blocks", &l->local_blocks, false);
  if (r.ok()) {
    Status st = ValidateLimits(*l);
    if (!st.ok()) r.Fail(StatusCode::kParseError, r.context() + ": " + st.message());
  }
}

void ReadHeader(ObjectReader& r, const std::string& expected_type) {
  int64_t version = 0;
  if (r.Integer("schema_version", &version, true) && version != kPredictorSchemaVersion)
    r.FailKey("schema_version",
              "must be " + std::to_string(kPredictorSchemaVersion) + ", got " + std::to_string(version));
  std::string type;
  if (r.String("type", &type, true) && type != expected_type)
    r.FailKey("type", "must be '" + expected_type + "', got '" + type + "'");
}

Expected<std::unique_ptr<Predictor>> MemberFromJson(const json& j, const std::string& where) {
  if (!j.is_object()) return Status(StatusCode::kParseError, where + ": expected a predictor object");
  // Combinators nest; bound the depth so a hostile file cannot exhaust the stack or time.
  constexpr int kMaxNesting = 32;
  static thread_local int depth = 0;
  if (depth >= kMaxNesting)
    return Status(StatusCode::kParseError,
                  where + ": predictors nest deeper than " + std::to_string(kMaxNesting) + " levels");
  struct Guard {
    Guard() { ++depth; }
    ~Guard() { --depth; }
  } guard;
  auto p = PredictorFromJson(j.dump());
  if (!p.ok()) return Status(p.status().code(), where + ": " + p.status().message());
  return std::move(p).value();
}

}  // namespace detail

namespace {

using detail::json;

struct Registry {
  std::mutex mu;
  std::map<std::string, PredictorFactory> factories;
};

PredictorFactory Builtin(Expected<std::unique_ptr<Predictor>> (*fn)(const json&)) {
  return [fn](const std::string& text) -> Expected<std::unique_ptr<Predictor>> {
    auto j = detail::ParseJson(text, "predictor");
    if (!j.ok()) return j.status();
    return fn(*j);
  };
}

Registry& GetRegistry() {
  static Registry* reg = [] {
    auto* r = new Registry;
    r->factories["fixed"] = Builtin(&detail::FixedFromJson);
    r->factories["length_law"] = Builtin(&detail::LengthLawFromJson);
    r->factories["task_length_law"] = Builtin(&detail::TaskLengthLawFromJson);
    r->factories["linear"] = Builtin(&detail::LinearFromJson);
    r->factories["probe"] = Builtin(&detail::ProbeFromJson);
    r->factories["table"] = Builtin(&detail::TableFromJson);
    r->factories["cells"] = Builtin(&detail::CellsFromJson);
    r->factories["escalate"] = Builtin(&detail::EscalateFromJson);
    r->factories["max"] = Builtin(&detail::MaxFromJson);
    r->factories["clamp"] = Builtin(&detail::ClampFromJson);
    return r;
  }();
  return *reg;
}

}  // namespace

Status RegisterPredictor(const std::string& type, PredictorFactory factory) {
  if (type.empty()) return Status(StatusCode::kInvalidArgument, "predictor type name must not be empty");
  if (!factory) return Status(StatusCode::kInvalidArgument, "factory for '" + type + "' is empty");
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.factories.count(type) != 0)
    return Status(StatusCode::kInvalidArgument, "predictor type '" + type + "' is already registered");
  r.factories[type] = std::move(factory);
  return OkStatus();
}

std::vector<std::string> PredictorTypes() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> out;
  for (const auto& kv : r.factories) out.push_back(kv.first);
  return out;
}

Expected<std::unique_ptr<Predictor>> PredictorFromJson(const std::string& text) {
  auto j = detail::ParseJson(text, "predictor");
  if (!j.ok()) return j.status();
  if (!j->is_object())
    return Status(StatusCode::kParseError,
                  std::string("predictor: expected a JSON object, got ") + detail::JsonTypeName(*j));
  auto it = j->find("type");
  if (it == j->end()) return Status(StatusCode::kParseError, "predictor: key 'type' is missing");
  if (!it->is_string()) return Status(StatusCode::kParseError, "predictor: key 'type' must be a string");
  const std::string type = it->get<std::string>();
  PredictorFactory f;
  {
    Registry& r = GetRegistry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto fit = r.factories.find(type);
    if (fit == r.factories.end()) {
      std::string known;
      for (const auto& kv : r.factories) known += (known.empty() ? "" : ", ") + kv.first;
      return Status(StatusCode::kNotFound,
                    "predictor: key 'type' names unknown type '" + type + "' (known: " + known + ")");
    }
    f = fit->second;
  }
  return f(text);
}

Expected<std::unique_ptr<Predictor>> LoadPredictor(const std::string& path) {
  std::ifstream in;
  if (Status st = detail::OpenForReading(path, &in); !st.ok()) return st;
  std::stringstream ss;
  ss << in.rdbuf();
  auto p = PredictorFromJson(ss.str());
  if (!p.ok()) return Status(p.status().code(), path + ": " + p.status().message());
  return std::move(p).value();
}

Status SavePredictor(const Predictor& p, const std::string& path) {
  auto j = detail::ParseJson(p.ToJson(), "predictor");
  if (!j.ok()) return j.status();
  std::ofstream out(path, std::ios::binary);
  if (!out) return Status(StatusCode::kIoError, path + ": cannot open for writing");
  out << j->dump(2) << "\n";
  if (!out) return Status(StatusCode::kIoError, path + ": write failed");
  return OkStatus();
}

}  // namespace sparsebudget
