// Internal: strict JSON object reading with messages that name the key (nlohmann_json, no-throw
// paths only: parse with allow_exceptions = false, type-check before every get).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sparsebudget/status.hpp"

namespace sparsebudget::detail {

using json = nlohmann::json;

// The status for a file that could not be opened: kNotFound when it does not exist, kIoError
// otherwise (unreadable, a directory, ...).
inline Status CannotOpen(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return Status(StatusCode::kNotFound, path + ": no such file");
  return Status(StatusCode::kIoError, path + ": cannot open");
}

// Opens `path` for binary reading into *in. kNotFound when it does not exist; kIoError when it is
// a directory (an ifstream "opens" one and then reads nothing, which would surface as a parse
// error) or cannot be opened. Every file reader of the library opens through this.
inline Status OpenForReading(const std::string& path, std::ifstream* in) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return Status(StatusCode::kIoError, path + ": is a directory, not a file");
  in->open(path, std::ios::binary);
  if (!*in) return CannotOpen(path);
  return OkStatus();
}

inline const char* JsonTypeName(const json& j) {
  if (j.is_null()) return "null";
  if (j.is_boolean()) return "boolean";
  if (j.is_number_integer() || j.is_number_unsigned()) return "integer";
  if (j.is_number()) return "number";
  if (j.is_string()) return "string";
  if (j.is_array()) return "array";
  return "object";
}

// Deepest nesting of objects and arrays ParseJson accepts. Every walk of a parsed document
// (nlohmann's dump and destructor, the predictor readers) recurses per level, so the depth is
// bounded while parsing, before anything recurses: a 5 MB file of nested objects must fail with a
// message, not overflow the stack. Predictors nest at most 32 levels (2 JSON levels each).
inline constexpr int kMaxJsonDepth = 128;

// SAX handler that builds the DOM (nlohmann's own builder) and rejects, as they stream past,
// nesting deeper than kMaxJsonDepth and a key repeated within one object (nlohmann keeps the last
// silently; a file saying two things is an error).
class StrictJsonSax {
 public:
  explicit StrictJsonSax(json* root) : dom_(*root, /*allow_exceptions=*/false) {}
  const std::string& error() const { return error_; }

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return dom_.number_float(v, s); }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) {
    if (!Enter()) return false;
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    if (!keys_.back().insert(k).second) {
      error_ = "duplicate key '" + k + "'";
      return false;
    }
    return dom_.key(k);
  }
  bool end_object() {
    keys_.pop_back();
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return Enter() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& /*ex*/) {
    error_ = "not valid JSON";
    return false;
  }

 private:
  bool Enter() {
    if (++depth_ > kMaxJsonDepth) {
      error_ = "nests deeper than " + std::to_string(kMaxJsonDepth) + " levels of objects and arrays";
      return false;
    }
    return true;
  }
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<std::set<std::string>> keys_;
  int depth_ = 0;
  std::string error_;
};

// Parses text (depth-bounded, duplicate keys rejected); on failure names `what` (file, line).
inline Expected<json> ParseJson(const std::string& text, const std::string& what) {
  json j;
  StrictJsonSax sax(&j);
  if (!json::sax_parse(text, &sax, json::input_format_t::json, /*strict=*/true) || j.is_discarded())
    return Status(StatusCode::kParseError, what + ": " + (sax.error().empty() ? "not valid JSON" : sax.error()));
  return j;
}

inline bool IsIntegral(const json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return true;
  if (v.is_number_float()) {
    const double d = v.get<double>();
    return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15;
  }
  return false;
}

// An unsigned JSON integer above INT64_MAX: read as int64 it would wrap to a negative number (and
// be reported as one).
inline bool AboveInt64(const json& v) {
  return v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX);
}

// Reads keys of one object; remembers the first error; Finish() also rejects unknown keys.
class ObjectReader {
 public:
  ObjectReader(const json& obj, std::string context) : obj_(obj), ctx_(std::move(context)) {
    if (!obj_.is_object()) Fail(StatusCode::kParseError, ctx_ + ": expected a JSON object, got " + JsonTypeName(obj_));
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  const std::string& context() const { return ctx_; }

  void Fail(StatusCode code, const std::string& msg) {
    if (status_.ok()) status_ = Status(code, msg);
  }
  void FailKey(const std::string& key, const std::string& what) {
    Fail(StatusCode::kParseError, ctx_ + ": key '" + key + "' " + what);
  }

  // The value under key, or null when absent (FailKey if required).
  const json* Get(const std::string& key, bool required) {
    if (!status_.ok() || !obj_.is_object()) return nullptr;
    seen_.insert(key);
    auto it = obj_.find(key);
    if (it == obj_.end()) {
      if (required) FailKey(key, "is missing");
      return nullptr;
    }
    return &*it;
  }

  bool Number(const std::string& key, double* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (!v->is_number()) {
      FailKey(key, std::string("must be a number, got ") + JsonTypeName(*v));
      return false;
    }
    *out = v->get<double>();
    if (!std::isfinite(*out)) {
      FailKey(key, "must be finite");
      return false;
    }
    return true;
  }
  // number or null -> optional
  bool NumberOrNull(const std::string& key, std::optional<double>* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (v->is_null()) {
      out->reset();
      return true;
    }
    double d = 0;
    if (!v->is_number()) {
      FailKey(key, std::string("must be a number or null, got ") + JsonTypeName(*v));
      return false;
    }
    d = v->get<double>();
    if (!std::isfinite(d)) {
      FailKey(key, "must be finite");
      return false;
    }
    *out = d;
    return true;
  }
  bool Integer(const std::string& key, int64_t* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (!IsIntegral(*v)) {
      FailKey(key, std::string("must be an integer, got ") + JsonTypeName(*v) + " " + v->dump());
      return false;
    }
    if (AboveInt64(*v)) {
      FailKey(key, "is out of range (above 2^63 - 1): " + v->dump());
      return false;
    }
    *out = v->is_number_float() ? static_cast<int64_t>(v->get<double>()) : v->get<int64_t>();
    return true;
  }
  bool Int32(const std::string& key, int32_t* out, bool required) {
    int64_t x = 0;
    if (!Integer(key, &x, required)) return false;
    if (x < INT32_MIN || x > INT32_MAX) {
      FailKey(key, "is out of range: " + std::to_string(x));
      return false;
    }
    *out = static_cast<int32_t>(x);
    return true;
  }
  bool String(const std::string& key, std::string* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (!v->is_string()) {
      FailKey(key, std::string("must be a string, got ") + JsonTypeName(*v));
      return false;
    }
    *out = v->get<std::string>();
    return true;
  }
  bool Bool(const std::string& key, bool* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (!v->is_boolean()) {
      FailKey(key, std::string("must be a boolean, got ") + JsonTypeName(*v));
      return false;
    }
    *out = v->get<bool>();
    return true;
  }
  bool NumberArray(const std::string& key, std::vector<double>* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (!v->is_array()) {
      FailKey(key, std::string("must be an array of numbers, got ") + JsonTypeName(*v));
      return false;
    }
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (!e.is_number() || !std::isfinite(e.get<double>())) {
        FailKey(key + "[" + std::to_string(i) + "]", std::string("must be a finite number, got ") + JsonTypeName(e));
        return false;
      }
      out->push_back(e.get<double>());
    }
    return true;
  }
  bool IntegerArray(const std::string& key, std::vector<int64_t>* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (!v->is_array()) {
      FailKey(key, std::string("must be an array of integers, got ") + JsonTypeName(*v));
      return false;
    }
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (!IsIntegral(e)) {
        FailKey(key + "[" + std::to_string(i) + "]", std::string("must be an integer, got ") + JsonTypeName(e));
        return false;
      }
      if (AboveInt64(e)) {
        FailKey(key + "[" + std::to_string(i) + "]", "is out of range (above 2^63 - 1): " + e.dump());
        return false;
      }
      out->push_back(e.is_number_float() ? static_cast<int64_t>(e.get<double>()) : e.get<int64_t>());
    }
    return true;
  }
  bool StringArray(const std::string& key, std::vector<std::string>* out, bool required) {
    const json* v = Get(key, required);
    if (v == nullptr) return false;
    if (!v->is_array()) {
      FailKey(key, std::string("must be an array of strings, got ") + JsonTypeName(*v));
      return false;
    }
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (!e.is_string()) {
        FailKey(key + "[" + std::to_string(i) + "]", std::string("must be a string, got ") + JsonTypeName(e));
        return false;
      }
      out->push_back(e.get<std::string>());
    }
    return true;
  }

  // Marks a key as known without reading it.
  void Allow(const std::string& key) { seen_.insert(key); }
  // Allows every key not read (traces: extra top-level keys are welcome).
  Status FinishLenient() const { return status_; }
  Status Finish() {
    if (!status_.ok() || !obj_.is_object()) return status_;
    for (auto it = obj_.begin(); it != obj_.end(); ++it) {
      if (seen_.count(it.key()) == 0) {
        FailKey(it.key(), "is not a known key");
        break;
      }
    }
    return status_;
  }

 private:
  const json& obj_;
  std::string ctx_;
  Status status_;
  std::set<std::string> seen_;
};

}  // namespace sparsebudget::detail
