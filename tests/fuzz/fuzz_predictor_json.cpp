// Fuzzes the predictor JSON loader: any text gives a predictor or a Status, never a crash;
// a loaded predictor round-trips exactly through ToJson and predicts finite, in-range budgets.
#include <cmath>
#include <string>

#include "fuzz/fuzz_common.hpp"
#include "sparsebudget/predictor.hpp"

using namespace sparsebudget;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 16)) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto p = PredictorFromJson(text);
  if (!p.ok()) {
    SBFUZZ_CHECK(!p.status().message().empty(), "error without a message");
    return 0;
  }
  const Predictor& pred = **p;
  const std::string j1 = pred.ToJson();
  auto again = PredictorFromJson(j1);
  SBFUZZ_CHECK(again.ok(), "ToJson output does not load: " + again.status().ToString() + "\n" + j1);
  SBFUZZ_CHECK((*again)->ToJson() == j1, "round trip differs:\n" + j1 + "\n" + (*again)->ToJson());
  SBFUZZ_CHECK((*again)->type() == pred.type(), "type changed");
  auto clone = pred.Clone();
  SBFUZZ_CHECK(clone && clone->ToJson() == j1, "Clone differs");

  const char* tasks[] = {"single_qa", "multi_hop", "aggregation", "unknown", "other"};
  for (int i = 0; i < 10; ++i) {
    RequestFeatures f;
    f.context_length = int64_t{1} << (i * 2 % 22);
    f.block_size = i % 3 == 0 ? 16 : 64;
    f.task = tasks[i % 5];
    if (i % 2) {
      f.entropy = 0.1 * i;
      f.top1_prob = 0.05 * i;
      f.probe_blocks_50 = 1.0 + i;
      f.probe_blocks_90 = 2.0 + i;
      f.probe_blocks_99 = 3.0 + i;
      f.probe_entropy = 0.3 * i;
      f.probe_top5_mass = 0.09 * i;
      f.expected_output_length = 10.0 * i;
    }
    auto r = pred.Predict(f);
    if (!r.ok()) continue;  // a predictor may reject features it needs; never crash
    const Prediction& pr = *r;
    SBFUZZ_CHECK(pr.causal_blocks == f.causal_blocks(), "causal_blocks");
    SBFUZZ_CHECK(
        pr.total_blocks >= 1 && pr.total_blocks <= pr.causal_blocks,
        "total_blocks " + std::to_string(pr.total_blocks) + " of " + std::to_string(pr.causal_blocks) + " for " + j1);
    SBFUZZ_CHECK(std::isfinite(pr.fraction) && pr.fraction > 0 && pr.fraction <= 1.0, "fraction");
    SBFUZZ_CHECK(ValidateBudget(pr.budget).ok(), "budget invalid: " + ValidateBudget(pr.budget).ToString());
  }
  return 0;
}
