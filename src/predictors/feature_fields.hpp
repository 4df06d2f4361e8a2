// Internal: the optional numeric fields of RequestFeatures by JSON name, shared by the features
// JSON reader/writer and the trace reader/writer (one list, so they cannot drift apart).
#pragma once

#include <optional>

#include "sparsebudget/features.hpp"

namespace sparsebudget::detail {

struct OptionalFeatureField {
  const char* name;
  std::optional<double> RequestFeatures::*member;
};

inline constexpr OptionalFeatureField kOptionalFeatureFields[] = {
    {"expected_output_length", &RequestFeatures::expected_output_length},
    {"entropy", &RequestFeatures::entropy},
    {"top1_prob", &RequestFeatures::top1_prob},
    {"probe_blocks_50", &RequestFeatures::probe_blocks_50},
    {"probe_blocks_90", &RequestFeatures::probe_blocks_90},
    {"probe_blocks_99", &RequestFeatures::probe_blocks_99},
    {"probe_entropy", &RequestFeatures::probe_entropy},
    {"probe_top5_mass", &RequestFeatures::probe_top5_mass},
};

}  // namespace sparsebudget::detail
