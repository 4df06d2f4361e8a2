// Concurrency: 8 threads share one loaded predictor, one set of const block summaries, one plan
// and one ThreadPool, and make 10,000 mixed calls each (predict / select / attend / fused
// sparse attention / partitioned attend), starting together on a barrier so that their first
// kernel calls race the one-time ISA dispatch (nothing in this process touches the kernels
// before). Every result must equal the single-threaded one computed afterwards, bit for bit.
// Built and run under TSan by tools/reliability.sh. SPARSEBUDGET_CONCURRENCY_CALLS overrides the
// 10,000 calls per thread (for quick local runs only).
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "reliability_util.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/sparsebudget.h"
#include "sparsebudget/sparsebudget.hpp"

namespace {

using namespace sparsebudget;

constexpr int kThreads = 8;
constexpr int kKinds = 24;  // distinct requests; call i of thread t uses kind (i * 7 + t) % kKinds

uint64_t Hash(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void Wait() {
    std::unique_lock<std::mutex> lock(m_);
    if (++count_ == n_) {
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return count_ >= n_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
};

// Shared, read-only state.
struct Shared {
  static constexpr int32_t Hq = 8, Hkv = 2, D = 32, B = 16;
  static constexpr int64_t L = 24 * B + 7;  // 25 blocks
  static constexpr int32_t NQ = 20;         // prefill chunk for some kinds
  std::vector<float> k, v, q;
  KVCacheView kv;
  std::unique_ptr<Predictor> predictor;
  std::vector<AttentionPlan> plans;  // one per kind
  std::vector<RequestFeatures> features;
  BlockSummaries summaries;

  Shared() {
    std::mt19937_64 rng(12345);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    k.resize(static_cast<size_t>(L * Hkv * D));
    v.resize(k.size());
    q.resize(static_cast<size_t>(NQ * Hq * D));
    for (auto& x : k) x = nd(rng);
    for (auto& x : v) x = nd(rng);
    for (auto& x : q) x = nd(rng);
    kv = {k.data(), v.data(), DType::kF32, Hkv * D, D};
    auto p = PredictorFromJson(R"({"schema_version": 1, "type": "max", "members": [
        {"schema_version": 1, "type": "length_law", "c": 12.8, "a": 0.5},
        {"schema_version": 1, "type": "probe", "mass": 90, "margin": 1.25, "add_blocks": 1.0, "fallback_fraction": 1.0}]})");
    if (!p.ok()) {
      ADD_FAILURE() << p.status().ToString();
      predictor = MakeLengthLaw();
    } else {
      predictor = std::move(*p);
    }
    for (int kind = 0; kind < kKinds; ++kind) {
      AttentionParams ap;
      ap.shape = {Hq, Hkv, D, B, L, kind % 3 == 0 ? NQ : 1};
      ap.scoring = kind % 2 ? Scoring::kMean : Scoring::kBound;
      switch (kind % 4) {
        case 0: ap.budget = Budget::Blocks(kind % 7); break;
        case 1: ap.budget = Budget::Fraction(0.1 + 0.03 * kind); break;
        case 2: ap.budget = Budget::TopP(0.5 + 0.02 * kind); break;
        default: ap.budget = Budget::Dense(); break;
      }
      AttentionPlan plan;
      EXPECT_TRUE(MakePlan(ap, &plan).ok());
      plans.push_back(plan);
      RequestFeatures f;
      f.context_length = 100 + 977 * kind;
      f.block_size = kind % 2 ? 64 : 16;
      f.task = kind % 3 ? "multi_hop" : "single_qa";
      if (kind % 2) f.probe_blocks_90 = 1.0 + kind;
      features.push_back(f);
    }
  }
  size_t MaxWorkspace() const {
    size_t m = 0;
    for (const auto& p : plans) m = std::max(m, p.workspace_bytes);
    return m + 64;
  }
};

// Per-thread buffers and one call of kind `kind`, variant `op`; returns a hash of every output.
struct Worker {
  const Shared& s;
  ThreadPool* pool;
  std::vector<unsigned char> ws;
  std::vector<float> out;
  std::vector<int32_t> idx, cnt;
  explicit Worker(const Shared& sh, ThreadPool* p)
      : s(sh),
        pool(p),
        ws(sh.MaxWorkspace()),
        out(static_cast<size_t>(Shared::NQ * Shared::Hq * Shared::D)),
        idx(static_cast<size_t>(64 * 64)),
        cnt(64) {}

  uint64_t Call(int kind, int op) {
    const AttentionPlan& plan = s.plans[static_cast<size_t>(kind)];
    const QueryView qv{s.q.data(), Shared::Hq * Shared::D, Shared::D};
    const OutputView ov{out.data(), Shared::Hq * Shared::D, Shared::D};
    const BlockSelection sel{idx.data(), cnt.data(), plan.num_blocks};
    std::fill(out.begin(), out.end(), -1.0f);
    std::fill(cnt.begin(), cnt.end(), -1);
    const size_t units = static_cast<size_t>(plan.num_units);
    switch (op) {
      case 0: {  // predict
        auto r = s.predictor->Predict(s.features[static_cast<size_t>(kind)]);
        if (!r.ok()) return 1;
        uint64_t h = Hash(&r->total_blocks, sizeof r->total_blocks);
        h = Hash(&r->budget.fraction, sizeof(double), h);
        return Hash(&r->estimate_blocks, sizeof(double), h);
      }
      case 1: {                                                                // select only
        if (plan.params.budget.mode == BudgetMode::kDense) return 0x5e1ec7ed;  // nothing to select
        SelectionStats st;
        if (!SelectBlocks(plan, qv, s.summaries, sel, ws.data(), &st).ok()) return 3;
        uint64_t h = Hash(cnt.data(), units * 4);
        for (size_t u = 0; u < units; ++u)
          h = Hash(idx.data() + u * static_cast<size_t>(plan.num_blocks), static_cast<size_t>(cnt[u]) * 4, h);
        return Hash(&st.kept_blocks, sizeof st.kept_blocks, h);
      }
      case 2: {  // fused, single thread
        if (!SparseAttention(plan, qv, s.kv, &s.summaries, ov, ws.data()).ok()) return 4;
        return Hash(out.data(), out.size() * 4);
      }
      case 3: {  // fused on the shared pool (Runs are serialised inside the pool)
        if (!SparseAttention(plan, qv, s.kv, &s.summaries, ov, ws.data(), pool).ok()) return 5;
        return Hash(out.data(), out.size() * 4);
      }
      default: {  // select, then engine-style partitions 3 slices, in reverse order
        ConstBlockSelection cs{};
        if (plan.params.budget.mode != BudgetMode::kDense) {
          if (!SelectBlocks(plan, qv, s.summaries, sel, ws.data()).ok()) return 6;
          cs = {idx.data(), cnt.data(), plan.num_blocks};
        }
        for (int ith = 2; ith >= 0; --ith)
          if (!AttendPartition(plan, qv, s.kv, cs, ov, ws.data(), ith, 3).ok()) return 7;
        for (int ith = 0; ith < 3; ++ith)
          if (!AttendMerge(plan, cs, ov, ws.data(), ith, 3).ok()) return 8;
        return Hash(out.data(), out.size() * 4);
      }
    }
  }
};

int OpOf(int i) { return (i / 3 + i) % 5; }

TEST(Concurrency, EightThreadsSharedPredictorSummariesAndPoolMatchSingleThreaded) {
  const int calls = static_cast<int>(sbrel::EnvInt("SPARSEBUDGET_CONCURRENCY_CALLS", 10000));
  Shared s;  // touches no kernel: summaries are appended inside the race below
  ThreadPool pool(2);
  Barrier start(kThreads + 1), summaries_ready(kThreads + 1);
  std::vector<std::vector<uint64_t>> got(kThreads, std::vector<uint64_t>(static_cast<size_t>(calls)));
  std::vector<Isa> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Worker w(s, &pool);
      start.Wait();
      // Race the first dispatch: dense attention (no summaries needed) and ISA queries, while
      // the main thread builds the shared summaries through the same dispatch.
      seen[static_cast<size_t>(t)] = ActiveIsa();
      got[static_cast<size_t>(t)][0] = w.Call(t % 2 ? 7 : 3, t % 2 ? 2 : 4);  // kinds 3 and 7 are dense
      summaries_ready.Wait();
      for (int i = 1; i < calls; ++i)
        got[static_cast<size_t>(t)][static_cast<size_t>(i)] = w.Call((i * 7 + t) % kKinds, OpOf(i));
    });
  }
  start.Wait();
  {
    auto sum = BlockSummaries::Create({Shared::Hkv, Shared::D, Shared::B, Shared::L, true, true});
    ASSERT_TRUE(sum.ok());
    ASSERT_TRUE(sum->Append(s.kv, Shared::L).ok());
    s.summaries = std::move(*sum);
  }
  summaries_ready.Wait();
  for (auto& th : threads) th.join();

  // Single-threaded reference, after the fact, on the same ISA.
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(seen[static_cast<size_t>(t)], ActiveIsa());
  Worker ref(s, &pool);
  std::vector<std::vector<uint64_t>> want(kKinds, std::vector<uint64_t>(5));
  for (int kind = 0; kind < kKinds; ++kind)
    for (int op = 0; op < 5; ++op) want[static_cast<size_t>(kind)][static_cast<size_t>(op)] = ref.Call(kind, op);
  // Partitioned, pooled and single-threaded attention agree bitwise.
  for (int kind = 0; kind < kKinds; ++kind) {
    EXPECT_EQ(want[static_cast<size_t>(kind)][2], want[static_cast<size_t>(kind)][3]) << "kind " << kind;
    EXPECT_EQ(want[static_cast<size_t>(kind)][2], want[static_cast<size_t>(kind)][4]) << "kind " << kind;
    for (int op = 0; op < 5; ++op)
      EXPECT_GT(want[static_cast<size_t>(kind)][static_cast<size_t>(op)], 8u)
          << "call failed: kind " << kind << " op " << op;
  }
  int mismatches = 0;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(got[static_cast<size_t>(t)][0],
              want[static_cast<size_t>(t % 2 ? 7 : 3)][static_cast<size_t>(t % 2 ? 2 : 4)])
        << "first (dispatch-racing) call of thread " << t;
    for (int i = 1; i < calls; ++i) {
      const uint64_t w = want[static_cast<size_t>((i * 7 + t) % kKinds)][static_cast<size_t>(OpOf(i))];
      if (got[static_cast<size_t>(t)][static_cast<size_t>(i)] != w && ++mismatches <= 5)
        ADD_FAILURE() << "thread " << t << " call " << i << " kind " << (i * 7 + t) % kKinds << " op " << OpOf(i)
                      << " differs from the single-threaded result";
    }
  }
  EXPECT_EQ(mismatches, 0);
  std::printf("[ threads  ] %d threads x %d calls on %s: %d mismatches\n", kThreads, calls, IsaName(ActiveIsa()),
              mismatches);
}

// Parsing, cloning, registry lookups and Predict on one shared predictor from many threads.
TEST(Concurrency, PredictorCopiesAndConstCallsFromManyThreads) {
  auto base = MakeTaskLengthLaw({{"single_qa", 40.0, 0.5, 0.0}, {"multi_hop", 90.0, 0.6, 0.1}}, {"*", 12.8, 0.5, 0.0});
  const std::string json = base->ToJson();
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        // Registry lookups, parsing, cloning and ToJson concurrently with Predict on the shared one.
        auto p = PredictorFromJson(json);
        if (!p.ok() || (*p)->ToJson() != json) ++bad;
        auto c = base->Clone();
        RequestFeatures f;
        f.context_length = 1000 + 31 * i + t;
        f.task = i % 2 ? "multi_hop" : "single_qa";
        auto a = base->Predict(f), b = c->Predict(f);
        if (!a.ok() || !b.ok() || a->total_blocks != b->total_blocks) ++bad;
        if (PredictorTypes().empty()) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

// The C API's error message is per thread: concurrent failures each see their own value.
TEST(Concurrency, CapiLastErrorIsPerThread) {
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      sb_attention_params p;
      sb_attention_params_init(&p);
      p.num_q_heads = 8;
      p.num_kv_heads = 2;
      p.context_length = 100;
      for (int i = 0; i < 500; ++i) {
        p.head_dim = -(1000 * t + i + 1);
        sb_plan* plan = nullptr;
        if (sb_plan_create(&p, &plan) != SB_ERROR_INVALID_ARGUMENT ||
            std::strstr(sb_last_error(), std::to_string(p.head_dim).c_str()) == nullptr)
          ++bad;
        p.head_dim = 64;
        if (sb_plan_create(&p, &plan) != SB_OK || sb_last_error()[0] != '\0') ++bad;
        sb_plan_destroy(plan);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
