// Zero heap allocations in the per-layer path: a global operator new that counts, in its own
// executable (it replaces the allocator of the whole program). After one warm-up step (the
// StepPlan reserved, the workspace and the pool made), a decode step's Plan and its RunLayer
// calls (alone, with a ThreadPool, and as the three ith/nth phases) must not allocate.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include "kernel_testing.hpp"

namespace {
std::atomic<long> g_allocs{0};
std::atomic<bool> g_counting{false};
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

int main() {
  using namespace sparsebudget;
  constexpr int32_t kHq = 8, kHkv = 2, kDim = 64, kB = 16, kLayers = 4;
  std::mt19937_64 rng(1);
  const int64_t lengths[] = {40, 500, 1500, 3000};
  const Budget budgets[] = {Budget::Blocks(3), Budget::Fraction(0.2), Budget::TopP(0.7), Budget::Dense()};
  std::vector<sbtest::KVData> kv;
  std::vector<sbtest::QData> q;
  std::vector<std::vector<float>> out, lse;
  std::vector<BlockSummaries> sums;
  std::vector<StepRequest> steps;
  for (int r = 0; r < 4; ++r) {
    sbtest::LayoutChoice lay;
    lay.page_size = r % 2 ? 64 : 0;
    kv.push_back(sbtest::MakeKV(rng, DType::kF16, lengths[r], kHkv, kDim, lay));
    q.push_back(sbtest::MakeQ(rng, 1, kHq, kDim, 0, 0));
    out.emplace_back(kHq * kDim);
    lse.emplace_back(kHq);
    sums.push_back(*BlockSummaries::Create({kHkv, kDim, kB, lengths[r], true, true}));
    if (!sums.back().Append(kv.back().view, lengths[r]).ok()) return 1;
    StepRequest s;
    s.context_length = lengths[r];
    s.budget = budgets[r];
    s.kv = kv.back().view;
    s.q = q.back().view;
    s.out = {nullptr, kHq * kDim, kDim};
    steps.push_back(s);
  }
  AttentionOpConfig c;
  c.num_q_heads = kHq;
  c.num_kv_heads = kHkv;
  c.head_dim = kDim;
  c.block_size = kB;
  c.kv_dtype = DType::kF16;
  auto op = AttentionOp::Create(c);
  if (!op.ok()) return 1;
  StepPlan plan;
  plan.Reserve(4);
  ThreadPool pool(3);
  if (!op->Plan(steps.data(), 4, &plan).ok()) return 1;
  std::vector<unsigned char> ws(plan.workspace_bytes() + 64);
  void* w = ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64;
  std::vector<LayerInput> in(4);
  for (int r = 0; r < 4; ++r)
    in[static_cast<size_t>(r)] = {q[static_cast<size_t>(r)].view.data, out[static_cast<size_t>(r)].data(),
                                  kv[static_cast<size_t>(r)].view.k,   kv[static_cast<size_t>(r)].view.v,
                                  &sums[static_cast<size_t>(r)],       lse[static_cast<size_t>(r)].data()};
  long calls = 0;
  bool ok = true;
  g_counting = true;
  for (int step = 0; step < 3; ++step) {
    ok = ok && op->Plan(steps.data(), 4, &plan).ok();
    for (int l = 0; l < kLayers; ++l) {
      LayerArgs a{in.data(), 0.5 + 0.5 * l, w};
      LayerStats st;
      ok = ok && op->RunLayer(plan, a, nullptr, &st).ok();
      ok = ok && op->RunLayer(plan, a, &pool, &st).ok();
      for (int ith = 0; ith < 2; ++ith) ok = ok && op->SelectPhase(plan, a, ith, 2).ok();
      for (int ith = 0; ith < 2; ++ith) ok = ok && op->AttendPhase(plan, a, ith, 2).ok();
      for (int ith = 0; ith < 2; ++ith) ok = ok && op->MergePhase(plan, a, ith, 2).ok();
      calls += 8;
    }
  }
  g_counting = false;
  const long n = g_allocs.load();
  // The counter itself works: one allocation while counting is seen.
  g_counting = true;
  { std::vector<int> probe(7, 1); }
  g_counting = false;
  const bool counter_works = g_allocs.load() == n + 1;
  if (!counter_works) std::printf("FAIL: the counting allocator did not see a test allocation\n");
  ok = ok && counter_works;
  std::printf(
      "per-layer path: %ld calls (Plan, RunLayer alone / with a 3-thread pool, phases), %ld heap "
      "allocations (ISA %s)\n",
      calls, n, IsaName(op->isa()));
  if (!ok) std::printf("FAIL: a call returned an error\n");
  if (n != 0) std::printf("FAIL: the per-layer path allocated\n");
  return ok && n == 0 ? 0 : 1;
}
