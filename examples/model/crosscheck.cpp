// The C++ runner against the trace generator (tools/train/make_traces.py, PyTorch on the GPU)
// on the requests of data/traces/crosscheck.json: dense logits, next-token entropy, the
// attention-probe features, and the greedy answers at every budget of the trace grid, decoded
// here with the library's block-sparse kernel.
//   model_crosscheck MODEL_DIR CROSSCHECK.json
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "sparsebudget/features.hpp"
#include "sparsebudget/probe.hpp"
#include "tiny_model.hpp"

using namespace sparsebudget;

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: %s MODEL_DIR CROSSCHECK.json\n", argv[0]), 2;
  auto model = tinymodel::Model::Load(argv[1]);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().ToString().c_str()), 1;
  std::ifstream in(argv[2]);
  const auto doc = nlohmann::json::parse(in);
  ThreadPool pool(2);
  int failures = 0, grid_points = 0, grid_same = 0;
  double worst_logit = 0, worst_feature = 0;
  for (const auto& r : doc.at("requests")) {
    const auto prompt = r.at("prompt").get<std::vector<int32_t>>();
    const auto answer = r.at("reference_answer").get<std::vector<int32_t>>();
    const int64_t n = static_cast<int64_t>(prompt.size());
    tinymodel::Session s(*model, n + static_cast<int64_t>(answer.size()) + 1, 64, &pool);
    if (!s.Prefill(std::vector<int32_t>(prompt.begin(), prompt.end() - 1)).ok()) return 1;
    auto logits = s.Decode(prompt.back(), Budget::Dense());
    if (!logits.ok()) return 1;
    const auto ref16 = r.at("dense_logits_first16").get<std::vector<double>>();
    for (size_t i = 0; i < ref16.size(); ++i) worst_logit = std::max(worst_logit, std::abs(ref16[i] - (*logits)[i]));
    if (tinymodel::Argmax(*logits) != r.at("dense_argmax").get<int32_t>()) ++failures;
    RequestFeatures mine;
    if (Status st = s.Features(*logits, &mine); !st.ok()) return std::fprintf(stderr, "%s\n", st.ToString().c_str()), 1;
    const double ent = *mine.entropy;
    ProbeStats avg;
    avg.blocks_90 = *mine.probe_blocks_90;
    avg.entropy = *mine.probe_entropy;
    avg.top5_mass = *mine.probe_top5_mass;
    const auto& f = r.at("features");
    double dfeat[7];
    int nf = 0;
    for (const char* name : {"entropy", "top1_prob", "probe_blocks_50", "probe_blocks_90", "probe_blocks_99",
                             "probe_entropy", "probe_top5_mass"})
      dfeat[nf++] = std::abs(*mine.Get(name) - f.at(name).get<double>());
    for (double d : dfeat) worst_feature = std::max(worst_feature, d);
    std::printf("%s: entropy %.6f (trace %.6f), probe_blocks_90 %.4f (trace %.4f), probe_entropy %.5f (trace %.5f)\n",
                r.at("id").get<std::string>().c_str(), ent, f.at("entropy").get<double>(), avg.blocks_90,
                f.at("probe_blocks_90").get<double>(), avg.entropy, f.at("probe_entropy").get<double>());
    // Greedy answers at each grid budget: total blocks b = sink + own + (b - 2) scored.
    for (auto& [key, out] : r.at("greedy_outputs").items()) {
      const int64_t b = std::stoll(key);
      Budget budget = Budget::Blocks(b - 2);
      s.Truncate(n - 1);
      int32_t tok = prompt.back();
      std::vector<int32_t> got;
      for (size_t i = 0; i < answer.size(); ++i) {
        auto lg = s.Decode(tok, budget);
        if (!lg.ok()) return 1;
        tok = tinymodel::Argmax(*lg);
        got.push_back(tok);
      }
      ++grid_points;
      const bool same = got == out.get<std::vector<int32_t>>();
      grid_same += same;
      if (!same) std::printf("  budget %lld blocks: greedy output differs from the trace\n", static_cast<long long>(b));
    }
  }
  std::printf("max |logit diff| (first 16) %.2e, max feature diff %.2e, greedy outputs equal at %d/%d grid budgets\n",
              worst_logit, worst_feature, grid_same, grid_points);
  if (worst_logit > 5e-3 || worst_feature > 5e-3) ++failures;
  // Exact-match decisions may flip on a near-tie of block scores between implementations; the
  // trace generator's note says so. Allow at most one flip in the whole grid.
  if (grid_points - grid_same > 1) ++failures;
  return failures == 0 ? 0 : 1;
}
