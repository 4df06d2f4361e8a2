// ggml peer: builds one ggml_flash_attn_ext decode graph over the benchmark's K/V buffers.
#include "ggml_peer.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "ggml-cpu.h"
#include "ggml.h"

namespace sbbench {

namespace {
// One persistent ggml thread pool per thread count, shared by every graph (as llama.cpp keeps one
// per context): pools poll for work, so several idle pools would compete for the cores.
ggml_threadpool* Pool(int threads) {
  static ggml_threadpool* pools[3] = {nullptr, nullptr, nullptr};
  const int i = threads == 1 ? 1 : 2;
  if (pools[i] == nullptr) {
    ggml_threadpool_params tp = ggml_threadpool_params_default(i);
    pools[i] = ggml_threadpool_new(&tp);
  }
  return pools[i];
}
}  // namespace

struct GgmlDecode::Impl {
  ggml_context* meta = nullptr;  // q, out, views and the graph (K/V data stays the caller's)
  ggml_cgraph* graph = nullptr;
  ggml_tensor* out = nullptr;
  ggml_cplan plan{};
  std::vector<uint8_t> work;
};

GgmlDecode::GgmlDecode(const void* k, const void* v, bool q8_0, int64_t L, int num_q_heads, int num_kv_heads,
                       int head_dim, bool head_major, const float* q, int threads)
    : impl_(new Impl) {
  ggml_init_params ip{};
  ip.mem_size = size_t{64} << 20;
  ip.mem_buffer = nullptr;
  ip.no_alloc = false;
  impl_->meta = ggml_init(ip);
  ggml_context* ctx = impl_->meta;
  const ggml_type kvt = q8_0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F16;
  ggml_tensor* qt = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, head_dim, 1, num_q_heads);
  std::memcpy(qt->data, q, sizeof(float) * static_cast<size_t>(head_dim) * static_cast<size_t>(num_q_heads));
  // K/V tensors without storage of their own: data points at the benchmark's buffers.
  auto wrap = [&](const void* data) {
    ggml_tensor* t;
    if (head_major) {
      t = ggml_new_tensor_3d(ctx, kvt, head_dim, 1, 1);  // resized below
      t->ne[1] = L;
      t->ne[2] = num_kv_heads;
      t->nb[2] = t->nb[1] * static_cast<size_t>(L);
      t->nb[3] = t->nb[2] * static_cast<size_t>(num_kv_heads);
    } else {
      // llama.cpp's cache: [dim, kv heads, tokens], viewed as [dim, tokens, kv heads].
      t = ggml_new_tensor_3d(ctx, kvt, head_dim, 1, 1);
      t->ne[1] = num_kv_heads;
      t->ne[2] = L;
      t->nb[2] = t->nb[1] * static_cast<size_t>(num_kv_heads);
      t->nb[3] = t->nb[2] * static_cast<size_t>(L);
    }
    t->data = const_cast<void*>(data);
    return head_major ? t : ggml_permute(ctx, t, 0, 2, 1, 3);
  };
  ggml_tensor* kt = wrap(k);
  ggml_tensor* vt = wrap(v);
  impl_->out =
      ggml_flash_attn_ext(ctx, qt, kt, vt, nullptr, 1.0f / std::sqrt(static_cast<float>(head_dim)), 0.0f, 0.0f);
  impl_->graph = ggml_new_graph(ctx);
  ggml_build_forward_expand(impl_->graph, impl_->out);
  ggml_threadpool* pool = Pool(threads);
  impl_->plan = ggml_graph_plan(impl_->graph, threads == 1 ? 1 : 2, pool);
  impl_->work.resize(impl_->plan.work_size + 64);
  impl_->plan.work_data = impl_->work.data();
}

GgmlDecode::~GgmlDecode() {
  ggml_free(impl_->meta);
  delete impl_;
}

bool GgmlDecode::Run() { return ggml_graph_compute(impl_->graph, &impl_->plan) == GGML_STATUS_SUCCESS; }

const float* GgmlDecode::out() const { return static_cast<const float*>(impl_->out->data); }

}  // namespace sbbench
