// Trace JSONL reader/writer and the quality-at-budget rule.
#include "sparsebudget/traces.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "io/json_util.hpp"
#include "predictors/feature_fields.hpp"

namespace sparsebudget {

namespace {
using detail::json;
using detail::ObjectReader;

using detail::kOptionalFeatureFields;
}  // namespace

namespace {

Status BadKey(const std::string& key, const std::string& what) {
  return Status(StatusCode::kInvalidArgument, "key '" + key + "' " + what);
}

// The scalar keys, which the reader checks before the curve: every curve rule depends on them.
Status ValidateRecordHeader(const TraceRecord& rec) {
  const RequestFeatures& f = rec.features;
  if (rec.id.empty()) return BadKey("id", "must not be empty");
  if (f.task.empty()) return BadKey("task", "must not be empty");
  if (f.context_length < 1) return BadKey("context_length", "must be >= 1, got " + std::to_string(f.context_length));
  if (f.block_size < 1) return BadKey("block_size", "must be >= 1, got " + std::to_string(f.block_size));
  return OkStatus();
}

}  // namespace

Status ValidateTraceRecord(const TraceRecord& rec) {
  const auto bad = BadKey;
  const RequestFeatures& f = rec.features;
  if (Status st = ValidateRecordHeader(rec); !st.ok()) return st;
  if (rec.curve.empty()) return bad("curve", "must be a non-empty array");
  const int64_t nb = f.causal_blocks();
  const double nbd = static_cast<double>(nb);
  for (size_t i = 0; i < rec.curve.size(); ++i) {
    const CurvePoint& p = rec.curve[i];
    const std::string k = "curve[" + std::to_string(i) + "]";
    if (p.blocks < 1 || p.blocks > nb)
      return bad(k + ".blocks",
                 "must be in [1, causal_blocks " + std::to_string(nb) + "], got " + std::to_string(p.blocks));
    if (i > 0 && p.blocks <= rec.curve[i - 1].blocks)
      return bad(k + ".blocks", "must be strictly ascending, got " + std::to_string(p.blocks) + " after " +
                                    std::to_string(rec.curve[i - 1].blocks));
    // !(|d| <= tol) also rejects a NaN fraction.
    if (!(std::fabs(p.fraction - static_cast<double>(p.blocks) / nbd) <= 1e-4))
      return bad(k + ".fraction",
                 "must equal blocks / causal_blocks = " + std::to_string(static_cast<double>(p.blocks) / nbd) +
                     ", got " + std::to_string(p.fraction));
    if (!(p.quality >= 0 && p.quality <= 1))
      return bad(k + ".quality", "must be in [0, 1], got " + std::to_string(p.quality));
    if (p.top1_prob && !(*p.top1_prob >= 0 && *p.top1_prob <= 1))
      return bad(k + ".top1_prob", "must be in [0, 1] or null, got " + std::to_string(*p.top1_prob));
    if (p.min_top1_prob && !(*p.min_top1_prob >= 0 && *p.min_top1_prob <= 1))
      return bad(k + ".min_top1_prob", "must be in [0, 1] or null, got " + std::to_string(*p.min_top1_prob));
    if (p.top1_prob && p.min_top1_prob && *p.min_top1_prob > *p.top1_prob + 1e-6)
      return bad(k + ".min_top1_prob", "must be <= top1_prob " + std::to_string(*p.top1_prob) +
                                           " (a minimum over the answer's tokens, the first included), got " +
                                           std::to_string(*p.min_top1_prob));
  }
  if (!(rec.dense_quality >= 0 && rec.dense_quality <= 1))
    return bad("dense_quality", "must be in [0, 1], got " + std::to_string(rec.dense_quality));
  if (rec.oracle.blocks < 1 || rec.oracle.blocks > nb)
    return bad("oracle.blocks",
               "must be in [1, causal_blocks " + std::to_string(nb) + "], got " + std::to_string(rec.oracle.blocks));
  if (!(std::fabs(rec.oracle.fraction - static_cast<double>(rec.oracle.blocks) / nbd) <= 1e-4))
    return bad("oracle.fraction", "must equal blocks / causal_blocks, got " + std::to_string(rec.oracle.fraction));
  if (Status st = ValidateFeatures(f); !st.ok()) return st;
  return OkStatus();
}

Expected<TraceRecord> ParseTraceRecord(const std::string& text, int64_t line_number) {
  const std::string where = "line " + std::to_string(line_number);
  auto parsed = detail::ParseJson(text, where);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  ObjectReader r(j, where);
  TraceRecord rec;
  rec.line = line_number;
  RequestFeatures& f = rec.features;
  // Types and keys here; the value rules in ValidateTraceRecord (shared with in-memory records).
  r.String("id", &rec.id, true);
  r.String("task", &f.task, true);
  r.Integer("context_length", &f.context_length, true);
  r.Int32("block_size", &f.block_size, true);
  if (r.ok())
    if (Status st = ValidateRecordHeader(rec); !st.ok()) r.Fail(StatusCode::kParseError, where + ": " + st.message());
  if (const json* feats = r.Get("features", true)) {
    if (!feats->is_object()) {
      r.FailKey("features", "must be an object");
    } else {
      for (auto it = feats->begin(); it != feats->end() && r.ok(); ++it) {
        const std::string key = "features." + it.key();
        if (!it->is_null() && !it->is_number()) {
          r.FailKey(key, std::string("must be a number or null, got ") + detail::JsonTypeName(*it));
          break;
        }
        if (it->is_number() && !std::isfinite(it->get<double>())) {
          r.FailKey(key, "must be finite");
          break;
        }
        bool known = false;
        for (const auto& k : kOptionalFeatureFields) {
          if (it.key() == k.name) {
            known = true;
            if (it->is_number()) f.*k.member = it->get<double>();
          }
        }
        if (!known && it->is_number()) f.extra[it.key()] = it->get<double>();
      }
    }
  }
  if (const json* curve = r.Get("curve", true)) {
    if (!curve->is_array() || curve->empty()) {
      r.FailKey("curve", "must be a non-empty array");
    } else {
      for (size_t i = 0; i < curve->size() && r.ok(); ++i) {
        ObjectReader cr((*curve)[i], where + ": curve[" + std::to_string(i) + "]");
        CurvePoint p;
        cr.Integer("blocks", &p.blocks, true);
        cr.Number("fraction", &p.fraction, true);
        cr.Number("quality", &p.quality, true);
        cr.NumberOrNull("top1_prob", &p.top1_prob, false);
        cr.NumberOrNull("min_top1_prob", &p.min_top1_prob, false);
        Status st = cr.Finish();
        if (!st.ok()) r.Fail(st.code(), st.message());
        rec.curve.push_back(p);
      }
    }
  }
  r.Number("dense_quality", &rec.dense_quality, true);
  if (const json* o = r.Get("oracle", true)) {
    ObjectReader orr(*o, where + ": oracle");
    orr.Integer("blocks", &rec.oracle.blocks, true);
    orr.Number("fraction", &rec.oracle.fraction, true);
    orr.String("criterion", &rec.oracle.criterion, true);
    Status st = orr.Finish();
    if (!st.ok()) r.Fail(st.code(), st.message());
  }
  Status st = r.FinishLenient();  // other top-level keys are welcome
  if (!st.ok()) return st;
  st = ValidateTraceRecord(rec);
  if (!st.ok()) return Status(StatusCode::kParseError, where + ": " + st.message());
  return rec;
}

Expected<std::vector<TraceRecord>> ReadTraces(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return detail::CannotOpen(path);
  std::vector<TraceRecord> out;
  std::set<std::string> ids;
  std::string line;
  int64_t n = 0;
  int64_t blank = 0;  // a blank line is only allowed at the very end
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (blank == 0) blank = n;
      continue;
    }
    if (blank != 0)
      return Status(StatusCode::kParseError, path + ": line " + std::to_string(blank) + ": empty line inside the file");
    auto rec = ParseTraceRecord(line, n);
    if (!rec.ok()) return Status(rec.status().code(), path + ": " + rec.status().message());
    if (!ids.insert(rec->id).second)
      return Status(StatusCode::kParseError,
                    path + ": line " + std::to_string(n) + ": key 'id' duplicates '" + rec->id + "'");
    out.push_back(std::move(rec).value());
  }
  if (in.bad()) return Status(StatusCode::kIoError, path + ": read failed");
  if (out.empty()) return Status(StatusCode::kParseError, path + ": no records");
  return out;
}

std::string TraceRecordToJson(const TraceRecord& r) {
  json j = json::object();
  j["id"] = r.id;
  j["task"] = r.features.task;
  j["context_length"] = r.features.context_length;
  j["block_size"] = r.features.block_size;
  json f = json::object();
  for (const auto& k : kOptionalFeatureFields) {
    const auto& v = r.features.*k.member;
    if (v)
      f[k.name] = *v;
    else if (std::string(k.name) != "expected_output_length")
      f[k.name] = nullptr;
  }
  for (const auto& kv : r.features.extra) f[kv.first] = kv.second;
  j["features"] = f;
  json c = json::array();
  for (const auto& p : r.curve) {
    json pj = {{"blocks", p.blocks}, {"fraction", p.fraction}, {"quality", p.quality}};
    if (p.top1_prob) pj["top1_prob"] = *p.top1_prob;
    if (p.min_top1_prob) pj["min_top1_prob"] = *p.min_top1_prob;
    c.push_back(pj);
  }
  j["curve"] = c;
  j["dense_quality"] = r.dense_quality;
  j["oracle"] = {{"blocks", r.oracle.blocks}, {"fraction", r.oracle.fraction}, {"criterion", r.oracle.criterion}};
  return j.dump();
}

Status WriteTraces(const std::string& path, const std::vector<TraceRecord>& records) {
  std::ofstream out(path, std::ios::binary);
  if (!out) return Status(StatusCode::kIoError, path + ": cannot open for writing");
  for (const auto& r : records) out << TraceRecordToJson(r) << "\n";
  if (!out) return Status(StatusCode::kIoError, path + ": write failed");
  return OkStatus();
}

double QualityAt(const TraceRecord& r, int64_t total_blocks) noexcept {
  if (total_blocks >= r.causal_blocks()) return r.dense_quality;
  auto it = std::upper_bound(r.curve.begin(), r.curve.end(), total_blocks,
                             [](int64_t b, const CurvePoint& p) { return b < p.blocks; });
  if (it == r.curve.begin()) return 0.0;
  return std::prev(it)->quality;
}

bool Degraded(const TraceRecord& r, int64_t total_blocks) noexcept {
  return QualityAt(r, total_blocks) < r.dense_quality;
}

int64_t MonotoneOracleBlocks(const TraceRecord& r) noexcept {
  const int64_t nb = r.causal_blocks();
  int64_t oracle = nb;
  for (size_t i = r.curve.size(); i-- > 0;) {
    if (r.curve[i].blocks >= nb) continue;  // the dense point itself
    if (r.curve[i].quality >= r.dense_quality)
      oracle = r.curve[i].blocks;
    else
      break;
  }
  return oracle;
}

}  // namespace sparsebudget
