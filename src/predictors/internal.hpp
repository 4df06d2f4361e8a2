// Internal: the JSON side shared by the built-in predictors.
#pragma once

#include <memory>
#include <string>

#include "io/json_util.hpp"
#include "sparsebudget/predictor.hpp"

namespace sparsebudget::detail {

// Built-ins serialise through this: ToJson = header + WriteParams + limits.
class PredictorBase : public Predictor {
 public:
  std::string ToJson() const final;
  virtual void WriteParams(json& j) const = 0;
};

void WriteLimits(json& j, const BudgetLimits& limits);
// Reads the optional limit keys into `limits` and validates them.
void ReadLimits(ObjectReader& r, BudgetLimits* limits);
// Checks "schema_version" (== 1) and "type" (== expected) and marks them read.
void ReadHeader(ObjectReader& r, const std::string& expected_type);
// "predictor 'TYPE'" context for messages.
std::string Context(const std::string& type);
// A member predictor given inline as a JSON object.
Expected<std::unique_ptr<Predictor>> MemberFromJson(const json& j, const std::string& where);

// Built-in factories (json already parsed).
Expected<std::unique_ptr<Predictor>> FixedFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> LengthLawFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> TaskLengthLawFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> LinearFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> ProbeFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> TableFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> CellsFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> EscalateFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> MaxFromJson(const json& j);
Expected<std::unique_ptr<Predictor>> ClampFromJson(const json& j);

}  // namespace sparsebudget::detail
