// ggml's CPU flash attention (llama.cpp's) as a peer measured in the same process as ours.
// Only in bench_attention_peer (bench/CMakeLists.txt builds ggml for `make bench` only).
#pragma once

#include <cstdint>

namespace sbbench {

// One decode step (a single query per q head) of ggml_flash_attn_ext over caller-owned K/V, laid
// out as sparsebudget's benchmark caches: head-major [kv head][token][dim] or llama.cpp's
// token-major [token][kv head][dim]; f16 or q8_0 (ggml's blocks, the same bytes sparsebudget
// reads). The graph, its work buffer and a persistent ggml thread pool are made once; Run() only
// computes (threads: 1 or 2, fixed at construction; one pool per thread count is shared).
class GgmlDecode {
 public:
  GgmlDecode(const void* k, const void* v, bool q8_0, int64_t L, int num_q_heads, int num_kv_heads, int head_dim,
             bool head_major, const float* q, int threads);
  ~GgmlDecode();
  GgmlDecode(const GgmlDecode&) = delete;
  GgmlDecode& operator=(const GgmlDecode&) = delete;
  bool Run();                // false if ggml reported an error
  const float* out() const;  // [q head][dim] after Run()

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace sbbench
