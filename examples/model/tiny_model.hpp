// A small decoder runner on the CPU (RMSNorm, RoPE, attention, SwiGLU MLP; Eigen for the
// matrix products, sparsebudget for attention). An example and a tool for the demo and the
// trace checks; not part of the installed library. Architecture: docs/model.md.
//
// Decoding protocol (the same as the trace generator, tools/train/make_traces.py):
//   Prefill(prompt[0 .. n-1))            dense, causal
//   Decode(prompt[n-1]), Decode(answer...) one token at a time, attention at a Budget
// Cost: prefill O(n * params + n^2 * d); a decode step O(params + kept K/V).
// Not thread-safe: one Session per request; a Model (weights) is shared read-only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparsebudget/sparsebudget.hpp"

namespace tinymodel {

using sparsebudget::Expected;
using sparsebudget::Status;

struct Config {
  int vocab_size = 0;
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int d_ff = 0;
  double rope_theta = 10000.0;
  float norm_eps = 1e-5f;
};

struct LayerWeights {
  std::vector<float> attn_norm, mlp_norm;  // [d]
  std::vector<float> wq, wk, wv, wo;       // [out][in] row-major (torch Linear)
  std::vector<float> w_gate, w_up, w_down;
};

class Model {
 public:
  // Reads <dir>/config.json and <dir>/model.safetensors (F16/BF16/F32 tensors, widened to fp32).
  static Expected<std::shared_ptr<const Model>> Load(const std::string& dir);
  const Config& config() const { return cfg_; }

  Config cfg_;
  std::vector<float> tok_emb;  // [vocab][d], also the tied lm_head
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;
};

// Per-request state: the KV cache (fp32, token-major [t][kv head][d] per layer) and its block
// summaries, kept incrementally.
class Session {
 public:
  Session(std::shared_ptr<const Model> model, int64_t max_tokens, int32_t block_size, sparsebudget::ThreadPool* pool);

  // Dense causal prefill of `tokens` at positions [length(), length() + n). Returns the logits
  // of the last token.
  Expected<std::vector<float>> Prefill(const std::vector<int32_t>& tokens);
  // One token at position length(), attention at `budget` (bound scoring) in every layer.
  // stats (optional) accumulates the selection over layers; attn_seconds the attention time.
  Expected<std::vector<float>> Decode(int32_t token, const sparsebudget::Budget& budget,
                                      sparsebudget::SelectionStats* stats = nullptr, double* attn_seconds = nullptr);

  int64_t length() const { return len_; }
  // Drops tokens past `n` (n <= length()): the cache and the summaries are restored to the
  // state after n tokens, so a request can be replayed at several budgets.
  void Truncate(int64_t n);
  // The query rows of the last decoded token, per layer ([heads][d]), for probe statistics.
  const std::vector<std::vector<float>>& last_queries() const { return last_q_; }
  const sparsebudget::BlockSummaries& summaries(int layer) const { return sums_[static_cast<size_t>(layer)]; }
  // The predictor features of the request after the last step (the library's definitions):
  // entropy and top-1 of `logits`, probe statistics of every layer's summaries and last query
  // rows (mean scoring, averaged over layers and kv heads, as the traces define them).
  Status Features(const std::vector<float>& logits, sparsebudget::RequestFeatures* features) const;

 private:
  Expected<std::vector<float>> Forward(const int32_t* tokens, int64_t n, const sparsebudget::Budget& budget,
                                       sparsebudget::SelectionStats* stats, double* attn_seconds);
  std::shared_ptr<const Model> m_;
  int64_t max_tokens_;
  int32_t block_;
  sparsebudget::ThreadPool* pool_;
  int64_t len_ = 0;
  std::vector<std::vector<float>> k_, v_;  // per layer
  std::vector<sparsebudget::BlockSummaries> sums_;
  std::vector<std::vector<float>> last_q_;
  sparsebudget::AttentionOp op_;          // one per model configuration
  sparsebudget::StepPlan plan_;           // one batch (this request) per Forward, reused by every layer
  std::vector<unsigned char> workspace_;  // plan_.workspace_bytes() + alignment slack
  sparsebudget::Status init_;
};

int32_t Argmax(const std::vector<float>& logits);

}  // namespace tinymodel
