// Consumer check through the C++ API: dense decode attention equals the mean of V when all keys
// are equal (uniform softmax).
#include <cmath>
#include <cstdio>
#include <vector>

#include "sparsebudget/sparsebudget.hpp"

int main() {
  namespace sb = sparsebudget;
  sb::AttentionParams p;
  p.shape.num_q_heads = 2;
  p.shape.num_kv_heads = 1;
  p.shape.head_dim = 16;
  p.shape.block_size = 16;
  p.shape.context_length = 40;
  p.shape.num_queries = 1;
  sb::AttentionPlan plan;
  if (sb::Status st = sb::MakePlan(p, &plan); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  std::vector<float> q(32, 0.5f), k(40 * 16, 1.0f), v(40 * 16), out(32, 0.0f);
  for (int t = 0; t < 40; ++t)
    for (int d = 0; d < 16; ++d) v[t * 16 + d] = static_cast<float>(t);
  std::vector<unsigned char> ws(plan.workspace_bytes + 1);
  sb::KVCacheView kv;
  kv.k = k.data();
  kv.v = v.data();
  kv.token_stride = 16;
  kv.head_stride = 16;
  sb::Status st =
      sb::Attend(plan, sb::QueryView{q.data(), 32, 16}, kv, {}, sb::OutputView{out.data(), 32, 16}, ws.data());
  if (!st.ok() || std::fabs(out[0] - 19.5f) > 1e-4f || std::fabs(out[31] - 19.5f) > 1e-4f) {
    std::fprintf(stderr, "unexpected result %g (%s)\n", out[0], st.ToString().c_str());
    return 1;
  }
  std::printf("consumer_cpp: sparsebudget %s ok (isa %s)\n", sb::Version(), sb::IsaName(sb::ActiveIsa()));
  return 0;
}
