// engine_loop.cpp - an engine-style decode loop over a paged KV cache, driven by the engine's
// own threads through the engine API of sparsebudget/op.hpp (no sparsebudget::ThreadPool).
//
// What an inference engine does with sparsebudget, end to end:
//   1. a batch of requests of mixed lengths and task classes sits in a PAGED KV cache: one shared
//      page pool per layer (pages of 128 tokens, fp16 K/V, 8 kv heads x head_dim 128) and a page
//      table per request (pages handed out from a shuffled free list, so no request is contiguous);
//   2. at admission (after prefill) each request's budget is predicted from cheap features (task,
//      length) by a predictor: --predictor FILE.json, else task_length_law calibrated here on
//      data/traces_nl/train.jsonl (the bundled model B's traces) to at most 5% degraded requests
//      WITH the escalation policy (calibration.hpp `escalation`), else a built-in law;
//   3. per request and layer, BlockSummaries are built once over the prompt and then updated
//      incrementally (Append reads only the new token) as every decode step appends a token;
//   4. every decode step plans the batch once (AttentionOp::Plan: lengths, page tables, budgets;
//      one StepPlan at the predicted budgets, one at dense budgets for the baseline), then runs,
//      per layer, on nth engine threads in lockstep with a barrier between phases:
//        SelectPhase(ith, nth)  AttendPhase(ith, nth)  MergePhase(ith, nth)
//      each thread taking its slice of every request; the same three phases then run the dense
//      plan (the baseline, and the reference for the error column). Nothing allocates per step
//      or per layer: page tables and workspaces are sized for the final lengths at admission;
//   4b. the self-check under sparsity (escalation.hpp), when the predictor carries a policy: after
//      each step the engine reads the top-1 probability of the token the step produced (here from
//      a stand-in LM head over the last layer's output, through the library's
//      LogitStatsFromLogits; an engine uses its model's logits row) and calls
//      EscalationPolicy::Step per request; the requests it escalates are planned again in one
//      "redo" StepPlan (the others with num_queries 0) at their next ladder rung, that step's
//      layers are recomputed for them, and they continue at the new budget;
//   5. finally, for every request and layer, the threaded output is compared BITWISE with a
//      single-threaded SparseAttention() call on the same inputs (at each request's final
//      budget, escalations included), and one request is also
//      gathered into a contiguous buffer and checked (paged == contiguous, bitwise).
//
// Usage: engine_loop [--requests N] [--min-len L] [--max-len L] [--layers N] [--steps N]
//                    [--threads N] [--seed S] [--predictor FILE.json] [--traces FILE.jsonl]
//                    [--no-escalation]
// Exit code 0 when every check passes, 1 otherwise, 2 on a usage error.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "sparsebudget/attention.hpp"
#include "sparsebudget/calibration.hpp"
#include "sparsebudget/escalation.hpp"
#include "sparsebudget/features.hpp"
#include "sparsebudget/isa.hpp"
#include "sparsebudget/op.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/traces.hpp"
#include "sparsebudget/version.hpp"

namespace sb = sparsebudget;

namespace {

// ---- model shape and cache geometry ----------------------------------------------------------
constexpr int32_t kQHeads = 32;
constexpr int32_t kKVHeads = 8;
constexpr int32_t kHeadDim = 128;
constexpr int32_t kBlock = 64;  // kernel block size (tokens); the page size is a multiple
constexpr int64_t kPage = 128;  // tokens per page
constexpr int64_t kTokenStride = int64_t{kKVHeads} * kHeadDim;  // halves per token in a page
constexpr int64_t kPageStride = kPage * kTokenStride;           // halves per page
constexpr sb::Scoring kScoring = sb::Scoring::kBound;

#ifndef SPARSEBUDGET_SOURCE_DIR
#define SPARSEBUDGET_SOURCE_DIR "."
#endif

struct Options {
  int requests = 12;
  int64_t min_len = 1024;
  int64_t max_len = 32768;
  int layers = 4;
  int steps = 8;
  int threads = 0;  // 0 = hardware concurrency
  uint64_t seed = 1;
  std::string predictor;  // FILE.json; empty = calibrate on --traces
  std::string traces = std::string(SPARSEBUDGET_SOURCE_DIR) + "/data/traces_nl/train.jsonl";
  bool escalation = true;  // calibrate with the escalation policy (when calibrating here)
};

// ---- small utilities ---------------------------------------------------------------------
uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
uint64_t Hash(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0, uint64_t e = 0) {
  return Mix(Mix(Mix(Mix(Mix(a) ^ b) ^ c) ^ d) ^ e);
}

// IEEE fp32 -> fp16, round to nearest even (no F16C needed: the example builds with plain flags).
uint16_t ToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x47800000u) return static_cast<uint16_t>(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax < 0x38800000u) {  // subnormal or zero
    float a;
    std::memcpy(&a, &ax, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  const uint32_t mant_odd = (ax >> 13) & 1u;
  const uint32_t r = ax + 0xfffu + mant_odd;
  return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
}
float FromHalf(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  float f;
  if (e == 0) {
    f = std::ldexp(static_cast<float>(m), -24);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  const uint32_t bits = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112) << 23) | (m << 13));
  std::memcpy(&f, &bits, 4);
  return f;
}

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }
int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// 64-byte aligned byte buffer for workspaces.
struct AlignedBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  void Reserve(size_t n) {
    if (n <= bytes) return;
    Free();
    p = ::operator new (n == 0 ? 1 : n, std::align_val_t{64});
    bytes = n;
  }
  void Free() {
    if (p) ::operator delete (p, std::align_val_t{64});
    p = nullptr;
    bytes = 0;
  }
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr, o.bytes = 0; }
  ~AlignedBuffer() { Free(); }
};

// A barrier for the engine's threads (C++17 has no std::barrier). Generation counting; waiters
// yield, so more threads than cores still make progress.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void Wait() {
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
    } else {
      while (gen_.load(std::memory_order_acquire) == gen) std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<unsigned> gen_{0};
};

// ---- the paged KV cache ------------------------------------------------------------------
// One pool per layer for K and one for V; a request's page table is shared by all its layers
// (vLLM's layout: the block table is per request, the cache tensors are per layer).
class PagePool {
 public:
  PagePool(int layers, int64_t num_pages, uint64_t seed) : num_pages_(num_pages) {
    const size_t halves = static_cast<size_t>(num_pages * kPageStride);
    for (int l = 0; l < layers; ++l) {
      k_.emplace_back(new uint16_t[halves]);
      v_.emplace_back(new uint16_t[halves]);
    }
    free_.resize(static_cast<size_t>(num_pages));
    for (int64_t i = 0; i < num_pages; ++i) free_[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    for (size_t i = free_.size(); i > 1; --i)  // shuffled: a request's pages are scattered
      std::swap(free_[i - 1], free_[Hash(seed, 77, i) % i]);
  }
  // Not thread-safe: the engine allocates pages on one thread between barriers.
  int32_t Allocate() {
    if (free_.empty()) return -1;
    const int32_t p = free_.back();
    free_.pop_back();
    return p;
  }
  int64_t num_pages() const { return num_pages_; }
  int64_t used_pages() const { return num_pages_ - static_cast<int64_t>(free_.size()); }
  uint16_t* k(int layer) { return k_[static_cast<size_t>(layer)].get(); }
  uint16_t* v(int layer) { return v_[static_cast<size_t>(layer)].get(); }
  size_t bytes() const { return 2 * k_.size() * static_cast<size_t>(num_pages_ * kPageStride) * 2; }

 private:
  int64_t num_pages_;
  std::vector<std::unique_ptr<uint16_t[]>> k_, v_;
  std::vector<int32_t> free_;
};

// ---- synthetic but structured activations --------------------------------------------------
// Keys are noise (from a shared table) except in a request's "hot" blocks, which carry a
// per-(request, layer, kv head) topic direction u; queries point along u. Attention is therefore
// concentrated on a few blocks, how many depending on the task class, as in retrieval-style tasks.
constexpr size_t kNoise = size_t{1} << 20;
constexpr float kKeyTopic = 10.0f;    // hot keys: noise + 10 u
constexpr float kQueryTopic = 10.0f;  // queries: noise + 10 u

struct NoiseTable {
  std::vector<float> f;
  std::vector<uint16_t> h;
  explicit NoiseTable(uint64_t seed) : f(kNoise), h(kNoise) {
    for (size_t i = 0; i < kNoise; ++i) {  // uniform with unit variance, rounded to fp16
      const double u = static_cast<double>(Hash(seed, 1, i) >> 11) * (1.0 / 9007199254740992.0);
      h[i] = ToHalf(static_cast<float>((2.0 * u - 1.0) * std::sqrt(3.0)));
      f[i] = FromHalf(h[i]);
    }
  }
  size_t Offset(uint64_t key) const { return static_cast<size_t>(key % (kNoise - kHeadDim)); }
};

const char* const kTasks[] = {sb::kTaskSingleQa, sb::kTaskMultiQa, sb::kTaskMultiHop, sb::kTaskAggregation};

struct Request {
  int id = 0;
  std::string task;
  int64_t prompt_len = 0;
  int64_t len = 0;  // tokens in the cache now
  std::vector<int32_t> page_table;
  std::vector<sb::BlockSummaries> summaries;  // per layer
  std::vector<std::vector<float>> topic;      // per (layer * kKVHeads + h): unit vector [head_dim]
  std::vector<std::vector<uint8_t>> hot;      // per (layer * kKVHeads + h): 1 for a hot block
  sb::Prediction prediction;
  sb::EscalationState escalation;        // the policy's per-request state (budget now, escalations)
  bool redo = false;                     // this step is recomputed at a higher budget
  bool restart = false;                  // ... and the answer restarted (EscalationMode::kRestartAnswer)
  int64_t pages_allocated = 0;           // pages of the page table handed out so far
  double min_top1 = 1.0;                 // lowest top-1 probability seen (the stand-in LM head)
  bool dense_fallback = false;           // the budget keeps >= 90% of the blocks: the op runs it dense
  std::vector<float> q, out, dense_out;  // per layer: [q heads][head_dim]
  double max_rel_err = 0.0;
};

bool IsHot(const Request& r, int layer, int h, int64_t block) {
  const std::vector<uint8_t>& hot = r.hot[static_cast<size_t>(layer * kKVHeads + h)];
  return block < static_cast<int64_t>(hot.size()) && hot[static_cast<size_t>(block)] != 0;
}

// Writes token t of request r (K and V of every kv head) into layer `layer`'s pages.
void WriteToken(PagePool& pool, const NoiseTable& noise, const Request& r, uint64_t seed, int layer, int64_t t) {
  const int64_t page = r.page_table[static_cast<size_t>(t / kPage)];
  const int64_t base = page * kPageStride + (t % kPage) * kTokenStride;
  uint16_t* k = pool.k(layer) + base;
  uint16_t* v = pool.v(layer) + base;
  for (int h = 0; h < kKVHeads; ++h) {
    const uint64_t key = Hash(seed, 3, static_cast<uint64_t>(r.id), static_cast<uint64_t>(layer * kKVHeads + h),
                              static_cast<uint64_t>(t));
    const size_t ko = noise.Offset(key), vo = noise.Offset(Mix(key));
    uint16_t* kh = k + h * kHeadDim;
    if (IsHot(r, layer, h, t / kBlock)) {
      const float* u = r.topic[static_cast<size_t>(layer * kKVHeads + h)].data();
      for (int d = 0; d < kHeadDim; ++d) kh[d] = ToHalf(noise.f[ko + static_cast<size_t>(d)] + kKeyTopic * u[d]);
    } else {
      std::memcpy(kh, &noise.h[ko], kHeadDim * sizeof(uint16_t));
    }
    std::memcpy(v + h * kHeadDim, &noise.h[vo], kHeadDim * sizeof(uint16_t));
  }
}

void MakeQuery(const NoiseTable& noise, Request& r, uint64_t seed, int layer, int64_t step) {
  float* q = r.q.data() + static_cast<size_t>(layer) * kQHeads * kHeadDim;
  for (int qh = 0; qh < kQHeads; ++qh) {
    const float* u = r.topic[static_cast<size_t>(layer * kKVHeads + qh / (kQHeads / kKVHeads))].data();
    const size_t o = noise.Offset(Hash(seed, 4, static_cast<uint64_t>(r.id),
                                       static_cast<uint64_t>(layer * kQHeads + qh), static_cast<uint64_t>(step)));
    for (int d = 0; d < kHeadDim; ++d) q[qh * kHeadDim + d] = noise.f[o + static_cast<size_t>(d)] + kQueryTopic * u[d];
  }
}

// ---- a stand-in LM head -------------------------------------------------------------------
// The self-check reads the top-1 probability of the token a step produced. An engine takes it
// from its model's logits row for that step; this example has no model, so a fixed random
// projection of the last layer's attention output (all q heads) stands in:
//   logits_v = kLogitGain * (w_v . o) / ||o||,  w_v = kQHeads * kHeadDim values of the noise table.
// Its top-1 probabilities are not a model's; the gain only places them around the calibrated
// threshold so that a run meets both sure and unsure steps. What is real is the control flow.
constexpr int kVocab = 512;
constexpr int kHiddenOut = kQHeads * kHeadDim;
constexpr double kLogitGain = 3.2;

void StandInLogits(const NoiseTable& noise, uint64_t seed, const float* o, float* logits) {
  double n2 = 0;
  for (int j = 0; j < kHiddenOut; ++j) n2 += static_cast<double>(o[j]) * o[j];
  const double g = kLogitGain / std::sqrt(std::max(n2, 1e-300));
  for (int v = 0; v < kVocab; ++v) {
    const float* w = &noise.f[Hash(seed, 8, static_cast<uint64_t>(v)) % (kNoise - kHiddenOut)];
    double dot = 0;
    for (int j = 0; j < kHiddenOut; ++j) dot += static_cast<double>(w[j]) * o[j];
    logits[v] = static_cast<float>(g * dot);
  }
}

sb::KVCacheView PagedView(PagePool& pool, const Request& r, int layer) {
  sb::KVCacheView kv;
  kv.k = pool.k(layer);
  kv.v = pool.v(layer);
  kv.dtype = sb::DType::kF16;
  kv.token_stride = kTokenStride;
  kv.head_stride = kHeadDim;
  kv.page_table = r.page_table.data();
  kv.page_size = kPage;
  kv.page_stride = kPageStride;
  kv.num_pages = pool.num_pages();
  return kv;
}
sb::QueryView QView(const Request& r, int layer) {
  return {r.q.data() + static_cast<size_t>(layer) * kQHeads * kHeadDim, kQHeads * kHeadDim, kHeadDim};
}

// ---- the predictor -----------------------------------------------------------------------
std::unique_ptr<sb::Predictor> MakePredictor(const Options& o, std::string* how) {
  if (!o.predictor.empty()) {
    auto p = sb::LoadPredictor(o.predictor);
    if (!p.ok()) {
      std::fprintf(stderr, "engine_loop: %s\n", p.status().ToString().c_str());
      return nullptr;
    }
    *how = "loaded " + o.predictor;
    return std::move(p).value();
  }
  if (std::ifstream(o.traces).good()) {
    auto traces = sb::ReadTraces(o.traces);
    if (traces.ok()) {
      sb::CalibrationOptions co;
      co.target_degraded = 0.05;
      co.escalation = o.escalation;
      auto r = sb::Calibrate("task_length_law", nullptr, *traces, co);
      if (r.ok()) {
        *how = std::string("task_length_law") + (o.escalation ? " with escalation" : "") + " calibrated on " +
               o.traces + ": " + r->summary;
        return std::move(r->predictor);
      }
      std::fprintf(stderr, "engine_loop: calibration failed: %s\n", r.status().ToString().c_str());
    } else {
      std::fprintf(stderr, "engine_loop: %s\n", traces.status().ToString().c_str());
    }
  }
  // No traces: the per-task laws of the documented synthetic generator (docs/traces.md).
  std::vector<sb::TaskLaw> laws;
  for (const sb::SynthLaw& s : sb::SynthLaws()) laws.push_back({s.task, s.c, s.a, 0.0});
  *how = "task_length_law built in code from SynthLaws() (no traces found at " + o.traces + ")";
  return sb::MakeTaskLengthLaw(std::move(laws), sb::TaskLaw{"*", 12.8, 0.5, 0.0});
}

// ---- the engine --------------------------------------------------------------------------
struct Engine {
  Options opt;
  int nth = 1;
  std::vector<Request> reqs;
  std::unique_ptr<PagePool> pool;
  std::unique_ptr<NoiseTable> noise;
  std::unique_ptr<Barrier> barrier;
  const sb::Predictor* predictor = nullptr;
  const sb::EscalationPolicy* policy = nullptr;  // null: the predictor carries none
  // The engine API: one op for the model; per step one plan for the batch at the predicted
  // budgets and one at dense budgets (the baseline), each reused by every layer.
  sb::AttentionOp op;
  std::vector<sb::StepRequest> steps, dense_steps;
  sb::StepPlan plan, dense_plan;
  // The self-check's redo: the requests it escalated, at their new budgets (num_queries 0 for the
  // others), one plan for the batch, its own workspace (sized at admission).
  std::vector<sb::StepRequest> redo_steps;
  sb::StepPlan redo_plan;
  bool any_redo = false;
  int64_t recomputed_steps = 0;
  sb::LayerStats redo_stats;                                      // blocks read by recomputed steps (all threads)
  std::vector<std::vector<float>> logits;                         // per engine thread: the stand-in logits row
  AlignedBuffer workspace, dense_workspace, redo_workspace;       // sized at admission for the final lengths
  std::vector<std::vector<sb::LayerInput>> inputs, dense_inputs;  // [layer][request]
  std::vector<sb::LayerStats> thread_stats;                       // per engine thread, summed over layers and steps
  double sparse_wall = 0, dense_wall = 0, redo_wall = 0, prefill_wall = 0, append_wall = 0, plan_wall = 0;
  std::mutex error_mutex;
  std::string error;  // first failure; threads keep running through the barriers

  void Fail(const std::string& where, const sb::Status& st) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (error.empty()) error = where + ": " + st.ToString();
  }
  bool Mine(size_t r, int ith) const { return static_cast<int>(r % static_cast<size_t>(nth)) == ith; }

  // The step's batch: every request's length, paged layout and budget (thread 0, between barriers).
  void PlanStep() {
    for (size_t i = 0; i < reqs.size(); ++i) {
      steps[i].context_length = dense_steps[i].context_length = reqs[i].len;
    }
    if (sb::Status st = op.Plan(steps.data(), static_cast<int32_t>(steps.size()), &plan); !st.ok()) Fail("Plan", st);
    if (sb::Status st = op.Plan(dense_steps.data(), static_cast<int32_t>(dense_steps.size()), &dense_plan); !st.ok())
      Fail("Plan(dense)", st);
    if (plan.workspace_bytes() > workspace.bytes || dense_plan.workspace_bytes() > dense_workspace.bytes)
      Fail("workspace", sb::Status(sb::StatusCode::kInternal, "sized for the final lengths, yet too small"));
    for (size_t i = 0; i < reqs.size(); ++i)
      reqs[i].dense_fallback = sb::PlanRunsDense(*plan.request_plan(static_cast<int32_t>(i)));
  }

  void Prefill(int ith) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (!Mine(i, ith)) continue;
      Request& r = reqs[i];
      for (int l = 0; l < opt.layers; ++l) {
        for (int64_t t = 0; t < r.prompt_len; ++t) WriteToken(*pool, *noise, r, opt.seed, l, t);
        if (sb::Status st = r.summaries[static_cast<size_t>(l)].Append(PagedView(*pool, r, l), r.prompt_len); !st.ok())
          Fail("BlockSummaries::Append", st);
      }
      r.len = r.prompt_len;
      sb::RequestFeatures f;
      f.context_length = r.prompt_len;
      f.block_size = kBlock;
      f.task = r.task;
      auto pred = predictor->Predict(f);
      if (!pred.ok()) {
        Fail("Predict", pred.status());
        continue;
      }
      r.prediction = *pred;
      steps[i].budget = r.prediction.budget;
      if (policy != nullptr) r.escalation = policy->Start(r.prediction);
    }
    barrier->Wait();
    if (ith == 0) {
      // Workspaces for the final lengths (the page tables are sized for them at admission, the
      // unallocated tail pointing at page 0), so no step allocates.
      for (size_t i = 0; i < reqs.size(); ++i)
        steps[i].context_length = dense_steps[i].context_length = reqs[i].prompt_len + opt.steps;
      sb::StepPlan big;
      if (sb::Status st = op.Plan(steps.data(), static_cast<int32_t>(steps.size()), &big); !st.ok()) Fail("Plan", st);
      workspace.Reserve(big.workspace_bytes());
      if (sb::Status st = op.Plan(dense_steps.data(), static_cast<int32_t>(dense_steps.size()), &big); !st.ok())
        Fail("Plan(dense)", st);
      dense_workspace.Reserve(big.workspace_bytes());
      // A recomputed step runs at a rung of the policy's ladder: the largest workspace over the
      // rungs at the final lengths bounds every redo plan (PlanRedo checks it).
      if (policy != nullptr) {
        redo_steps = steps;
        for (double f : policy->ladder()) {
          for (sb::StepRequest& s : redo_steps) {
            s.budget = sb::Budget::Fraction(f);
            s.budget.sink_blocks = steps[0].budget.sink_blocks;
            s.budget.local_blocks = steps[0].budget.local_blocks;
          }
          if (sb::Status st = op.Plan(redo_steps.data(), static_cast<int32_t>(redo_steps.size()), &big); !st.ok())
            Fail("Plan(redo sizing)", st);
          redo_workspace.Reserve(big.workspace_bytes());
        }
        redo_plan.Reserve(static_cast<int32_t>(reqs.size()));
      }
      PlanStep();
    }
  }

  // Appends the token this step decodes and its queries (a query depends on the token's position
  // in the answer, so a restarted answer decodes the same tokens again).
  void AppendTokens(int ith) {
    for (size_t i = 0; i < reqs.size(); ++i)
      if (Mine(i, ith)) AppendOne(reqs[i]);
  }
  void AppendOne(Request& r) {
    {
      const int64_t t = r.len;
      for (int l = 0; l < opt.layers; ++l) {
        WriteToken(*pool, *noise, r, opt.seed, l, t);
        if (sb::Status st = r.summaries[static_cast<size_t>(l)].Append(PagedView(*pool, r, l), t + 1); !st.ok())
          Fail("BlockSummaries::Append", st);
        MakeQuery(*noise, r, opt.seed, l, t - r.prompt_len);
      }
      r.len = t + 1;
    }
  }

  // One layer for the whole batch: select, barrier, attend, barrier, merge, barrier; then the
  // same at dense budgets (the baseline and the reference for the error column).
  void Layer(int ith, int layer) {
    const int64_t t_start = NowNs();
    sb::LayerArgs a{inputs[static_cast<size_t>(layer)].data(), 1.0, workspace.p};
    a.measure_kernel_time = true;
    sb::LayerStats& mine = thread_stats[static_cast<size_t>(ith)];
    Phases(plan, a, ith, "", &mine);
    const int64_t t_mid = NowNs();
    const sb::LayerArgs d{dense_inputs[static_cast<size_t>(layer)].data(), 1.0, dense_workspace.p};
    Phases(dense_plan, d, ith, "(dense)", nullptr);
    if (ith == 0) {
      sparse_wall += static_cast<double>(t_mid - t_start) * 1e-9;
      dense_wall += static_cast<double>(NowNs() - t_mid) * 1e-9;
    }
  }

  // The three phases of one layer on this engine thread, a barrier after each; adds this
  // thread's counters to *stats when given.
  void Phases(const sb::StepPlan& p, const sb::LayerArgs& a, int ith, const char* what, sb::LayerStats* stats) {
    sb::LayerStats st;
    auto add = [stats, &st] {
      if (stats == nullptr) return;
      stats->selection.kept_blocks += st.selection.kept_blocks;
      stats->selection.causal_blocks += st.selection.causal_blocks;
      stats->kernel_ns += st.kernel_ns;
    };
    if (sb::Status s = op.SelectPhase(p, a, ith, nth, &st); !s.ok()) Fail(std::string("SelectPhase") + what, s);
    add();
    barrier->Wait();
    if (sb::Status s = op.AttendPhase(p, a, ith, nth, &st); !s.ok()) Fail(std::string("AttendPhase") + what, s);
    add();
    barrier->Wait();
    if (sb::Status s = op.MergePhase(p, a, ith, nth); !s.ok()) Fail(std::string("MergePhase") + what, s);
    barrier->Wait();
  }

  // The self-check (each thread, its requests): the top-1 probability of the token this step
  // produced under the request's budget, and the policy's verdict. An escalated request gets its
  // next rung as its budget, for the recomputed step and the steps after it.
  void SelfCheck(int ith) {
    if (policy == nullptr) return;
    float* lg = logits[static_cast<size_t>(ith)].data();
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (!Mine(i, ith)) continue;
      Request& r = reqs[i];
      StandInLogits(*noise, opt.seed, r.out.data() + static_cast<size_t>(opt.layers - 1) * kHiddenOut, lg);
      auto ls = sb::LogitStatsFromLogits(lg, kVocab);
      if (!ls.ok()) {
        Fail("LogitStatsFromLogits", ls.status());
        continue;
      }
      r.min_top1 = std::min(r.min_top1, ls->top1_prob);
      const int64_t causal = (r.len + kBlock - 1) / kBlock;
      r.escalation.causal_blocks = causal;
      sb::Budget& b = steps[i].budget;
      const int64_t answer_position = r.len - 1 - r.prompt_len;
      const sb::EscalationDecision d =
          policy->Step(&r.escalation, ls->top1_prob, answer_position, b.sink_blocks, b.local_blocks);
      r.redo = d.recompute;
      r.restart = d.restart;
      if (!d.recompute) continue;
      if (d.restart) {
        // kRestartAnswer: drop the answer decoded so far and decode its first token again. The
        // cache keeps the prompt; each layer's summaries are rebuilt over it (BlockSummaries has
        // no truncation: O(prompt) here, a cost of restarting) and the first answer token is
        // appended again.
        r.len = r.prompt_len;
        for (int l = 0; l < opt.layers; ++l) {
          sb::BlockSummaries& sum = r.summaries[static_cast<size_t>(l)];
          sum.Reset();
          if (sb::Status st = sum.Append(PagedView(*pool, r, l), r.prompt_len); !st.ok())
            Fail("BlockSummaries::Append", st);
        }
        AppendOne(r);
      }
      b = sb::Budget::Total(d.total_blocks, (r.len + kBlock - 1) / kBlock, b.sink_blocks, b.local_blocks);
    }
  }

  // Thread 0, between barriers: one plan for the escalated requests.
  void PlanRedo() {
    any_redo = false;
    for (size_t i = 0; i < reqs.size(); ++i) {
      redo_steps[i] = steps[i];
      redo_steps[i].context_length = reqs[i].len;  // a restarted answer is back at its first token
      redo_steps[i].num_queries = reqs[i].redo ? 1 : 0;
      if (reqs[i].redo) any_redo = true, ++recomputed_steps;
    }
    if (!any_redo) return;
    if (sb::Status st = op.Plan(redo_steps.data(), static_cast<int32_t>(redo_steps.size()), &redo_plan); !st.ok())
      Fail("Plan(redo)", st);
    if (redo_plan.workspace_bytes() > redo_workspace.bytes)
      Fail("redo workspace", sb::Status(sb::StatusCode::kInternal, "sized over the ladder, yet too small"));
  }

  // Recomputes one layer of this step for the escalated requests (their outputs are overwritten;
  // the others have no queries in the redo plan).
  void RedoLayer(int ith, int layer) {
    const sb::LayerArgs a{inputs[static_cast<size_t>(layer)].data(), 1.0, redo_workspace.p};
    sb::LayerStats mine;
    Phases(redo_plan, a, ith, "(redo)", &mine);
    std::lock_guard<std::mutex> lock(error_mutex);
    redo_stats.selection.kept_blocks += mine.selection.kept_blocks;
  }

  // The error column: this step's final outputs (recomputed ones included) against dense. A
  // restarted answer's step is skipped: its dense reference was for the discarded position.
  void Errors(int ith) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (!Mine(i, ith)) continue;
      Request& r = reqs[i];
      if (r.restart) continue;
      for (int layer = 0; layer < opt.layers; ++layer) {
        const size_t off = static_cast<size_t>(layer) * kHiddenOut;
        double num = 0, den = 0;
        for (size_t j = 0; j < static_cast<size_t>(kHiddenOut); ++j) {
          const double diff = static_cast<double>(r.out[off + j]) - r.dense_out[off + j];
          num += diff * diff;
          den += static_cast<double>(r.dense_out[off + j]) * r.dense_out[off + j];
        }
        r.max_rel_err = std::max(r.max_rel_err, std::sqrt(num / std::max(den, 1e-300)));
      }
    }
  }

  void Run(int ith) {
    auto t0 = std::chrono::steady_clock::now();
    Prefill(ith);
    barrier->Wait();
    if (ith == 0) prefill_wall = Seconds(std::chrono::steady_clock::now() - t0);
    for (int64_t step = 0; step < opt.steps; ++step) {
      if (ith == 0) {
        t0 = std::chrono::steady_clock::now();
        for (Request& r : reqs)
          if (r.len / kPage >= r.pages_allocated) {  // the new token starts a page not yet held
            const int32_t page = pool->Allocate();
            if (page < 0) Fail("PagePool", sb::Status(sb::StatusCode::kOutOfRange, "out of pages"));
            r.page_table[static_cast<size_t>(r.len / kPage)] = std::max(page, 0);
            ++r.pages_allocated;
          }
      }
      barrier->Wait();
      AppendTokens(ith);
      barrier->Wait();
      if (ith == 0) {
        append_wall += Seconds(std::chrono::steady_clock::now() - t0);
        t0 = std::chrono::steady_clock::now();
        PlanStep();
        plan_wall += Seconds(std::chrono::steady_clock::now() - t0);
      }
      barrier->Wait();
      for (int l = 0; l < opt.layers; ++l) Layer(ith, l);
      if (policy != nullptr) {
        SelfCheck(ith);
        barrier->Wait();
        if (ith == 0) PlanRedo();
        barrier->Wait();
        if (any_redo) {
          const int64_t t_redo = NowNs();
          for (int l = 0; l < opt.layers; ++l) RedoLayer(ith, l);
          if (ith == 0) redo_wall += static_cast<double>(NowNs() - t_redo) * 1e-9;
        }
      }
      Errors(ith);
    }
  }
};

int ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "engine_loop: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--requests")
      o->requests = std::atoi(next());
    else if (a == "--min-len")
      o->min_len = std::atoll(next());
    else if (a == "--max-len")
      o->max_len = std::atoll(next());
    else if (a == "--layers")
      o->layers = std::atoi(next());
    else if (a == "--steps")
      o->steps = std::atoi(next());
    else if (a == "--threads")
      o->threads = std::atoi(next());
    else if (a == "--seed")
      o->seed = std::strtoull(next(), nullptr, 10);
    else if (a == "--predictor")
      o->predictor = next();
    else if (a == "--traces")
      o->traces = next();
    else if (a == "--no-escalation")
      o->escalation = false;
    else {
      std::fprintf(stderr,
                   "usage: engine_loop [--requests N] [--min-len L] [--max-len L] [--layers N] [--steps N]\n"
                   "                   [--threads N] [--seed S] [--predictor FILE.json] [--traces FILE.jsonl]\n"
                   "                   [--no-escalation]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (o->requests < 1 || o->min_len < 1 || o->max_len < o->min_len || o->layers < 1 || o->steps < 1 || o->threads < 0) {
    std::fprintf(stderr, "engine_loop: need requests, layers, steps >= 1 and 1 <= min-len <= max-len\n");
    return 2;
  }
  return -1;
}

// Checks, after the loop: the threaded outputs equal single-threaded SparseAttention bit for bit
// (every request, every layer, last step), and paged equals contiguous for the longest request.
bool CheckAgainstSparseAttention(Engine& e) {
  bool ok = true;
  AlignedBuffer ws;
  std::vector<float> ref(static_cast<size_t>(kQHeads * kHeadDim));
  int64_t compared = 0;
  // The last step's budgets: escalated requests ran it (or its recomputation) at their new rung.
  sb::StepPlan last;
  for (size_t i = 0; i < e.reqs.size(); ++i) e.steps[i].context_length = e.reqs[i].len;
  if (sb::Status st = e.op.Plan(e.steps.data(), static_cast<int32_t>(e.steps.size()), &last); !st.ok()) {
    std::printf("check: Plan failed: %s\n", st.ToString().c_str());
    return false;
  }
  for (size_t i = 0; i < e.reqs.size(); ++i) {
    Request& r = e.reqs[i];
    const sb::AttentionPlan& plan = *last.request_plan(static_cast<int32_t>(i));
    ws.Reserve(plan.workspace_bytes);
    for (int l = 0; l < e.opt.layers; ++l) {
      sb::OutputView ov{ref.data(), kHeadDim * kQHeads, kHeadDim};
      sb::Status st = sb::SparseAttention(plan, QView(r, l), PagedView(*e.pool, r, l),
                                          &r.summaries[static_cast<size_t>(l)], ov, ws.p);
      if (!st.ok()) {
        std::printf("check: SparseAttention failed: %s\n", st.ToString().c_str());
        return false;
      }
      const float* mine = r.out.data() + static_cast<size_t>(l) * kQHeads * kHeadDim;
      if (std::memcmp(mine, ref.data(), ref.size() * sizeof(float)) != 0) {
        std::printf("check: request %d layer %d: threaded (nth=%d) output differs from SparseAttention\n", r.id, l,
                    e.nth);
        ok = false;
      }
      ++compared;
    }
  }
  // Paged == contiguous for the longest request, layer 0.
  const auto longest =
      std::max_element(e.reqs.begin(), e.reqs.end(), [](const Request& a, const Request& b) { return a.len < b.len; });
  const Request& r = *longest;
  const sb::AttentionPlan& plan = *last.request_plan(static_cast<int32_t>(longest - e.reqs.begin()));
  std::vector<uint16_t> k(static_cast<size_t>(r.len * kTokenStride)), v(k.size());
  const sb::KVCacheView paged = PagedView(*e.pool, r, 0);
  for (int64_t t = 0; t < r.len; ++t) {
    const int64_t src = r.page_table[static_cast<size_t>(t / kPage)] * kPageStride + (t % kPage) * kTokenStride;
    std::memcpy(&k[static_cast<size_t>(t * kTokenStride)], static_cast<const uint16_t*>(paged.k) + src,
                kTokenStride * sizeof(uint16_t));
    std::memcpy(&v[static_cast<size_t>(t * kTokenStride)], static_cast<const uint16_t*>(paged.v) + src,
                kTokenStride * sizeof(uint16_t));
  }
  sb::KVCacheView contiguous;
  contiguous.k = k.data();
  contiguous.v = v.data();
  contiguous.dtype = sb::DType::kF16;
  contiguous.token_stride = kTokenStride;
  contiguous.head_stride = kHeadDim;
  ws.Reserve(plan.workspace_bytes);
  sb::OutputView ov{ref.data(), kHeadDim * kQHeads, kHeadDim};
  if (sb::Status st = sb::SparseAttention(plan, QView(r, 0), contiguous, &r.summaries[0], ov, ws.p); !st.ok()) {
    std::printf("check: SparseAttention (contiguous) failed: %s\n", st.ToString().c_str());
    return false;
  }
  const bool same = std::memcmp(r.out.data(), ref.data(), ref.size() * sizeof(float)) == 0;
  if (!same) std::printf("check: request %d: paged output differs from contiguous\n", r.id);
  std::printf(
      "check: batched AttentionOp phases (nth=%d) == single-threaded SparseAttention per request, bitwise: "
      "%s (%" PRId64 " request-layers)\n",
      e.nth, ok ? "yes" : "NO", compared);
  std::printf("check: paged == contiguous K/V (request %d, %" PRId64 " tokens), bitwise: %s\n", r.id, r.len,
              same ? "yes" : "NO");
  return ok && same;
}

}  // namespace

int main(int argc, char** argv) {
  Engine e;
  if (int rc = ParseArgs(argc, argv, &e.opt); rc >= 0) return rc;
  const Options& o = e.opt;
  e.nth = o.threads > 0 ? o.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  std::string how;
  std::unique_ptr<sb::Predictor> predictor = MakePredictor(o, &how);
  if (!predictor) return 1;
  e.predictor = predictor.get();
  e.policy = sb::EscalationOf(*predictor);

  // The batch: lengths log-spaced over [min_len, max_len] with a jitter, tasks in turn.
  int64_t pages = 0;
  for (int i = 0; i < o.requests; ++i) {
    Request r;
    r.id = i;
    r.task = kTasks[i % 4];
    const double t = o.requests == 1 ? 1.0 : static_cast<double>(i) / (o.requests - 1);
    const double jitter =
        1.0 + 0.1 * (static_cast<double>(Hash(o.seed, 5, static_cast<uint64_t>(i)) % 1000) / 1000.0 - 0.5);
    r.prompt_len =
        std::clamp<int64_t>(static_cast<int64_t>(static_cast<double>(o.min_len) *
                                                 std::pow(static_cast<double>(o.max_len) / o.min_len, t) * jitter),
                            o.min_len, o.max_len);
    // Hot blocks of the prompt per (layer, kv head), by task: two needles (single_qa), four
    // (multi_qa), six (multi_hop), 8% of the blocks (aggregation).
    const int64_t blocks = (r.prompt_len + kBlock - 1) / kBlock;
    const int64_t num_hot =
        std::min<int64_t>(blocks, r.task == sb::kTaskSingleQa   ? 2
                                  : r.task == sb::kTaskMultiQa  ? 4
                                  : r.task == sb::kTaskMultiHop ? 6
                                                                : std::max<int64_t>(2, blocks * 8 / 100));
    // The page table is sized for the request's final length at admission (vLLM's padded block
    // table); entries past the allocated pages point at page 0 until a page is handed out.
    r.page_table.assign(static_cast<size_t>((r.prompt_len + o.steps + kPage - 1) / kPage), 0);
    pages += (r.prompt_len + o.steps + kPage - 1) / kPage;
    sb::BlockSummaries::Config c;
    c.num_kv_heads = kKVHeads;
    c.head_dim = kHeadDim;
    c.block_size = kBlock;
    c.max_tokens = r.prompt_len + o.steps;
    c.mean = kScoring == sb::Scoring::kMean;
    c.bound = kScoring == sb::Scoring::kBound;
    for (int l = 0; l < o.layers; ++l) {
      auto s = sb::BlockSummaries::Create(c);
      if (!s.ok()) {
        std::fprintf(stderr, "engine_loop: %s\n", s.status().ToString().c_str());
        return 1;
      }
      r.summaries.push_back(std::move(s).value());
      for (int h = 0; h < kKVHeads; ++h) {
        std::vector<uint8_t> hot(static_cast<size_t>(blocks), 0);
        for (int64_t n = 0, k = 0; n < num_hot; ++k) {  // num_hot distinct blocks
          const size_t b = Hash(o.seed, 2, static_cast<uint64_t>(i), static_cast<uint64_t>(l * kKVHeads + h),
                                static_cast<uint64_t>(k)) %
                           static_cast<uint64_t>(blocks);
          if (!hot[b]) hot[b] = 1, ++n;
        }
        r.hot.push_back(std::move(hot));
        std::vector<float> u(kHeadDim);
        double n2 = 0;
        for (int d = 0; d < kHeadDim; ++d) {
          u[static_cast<size_t>(d)] = static_cast<float>(
              static_cast<double>(Hash(o.seed, 6, static_cast<uint64_t>(i), static_cast<uint64_t>(l * kKVHeads + h),
                                       static_cast<uint64_t>(d)) >>
                                  11) /
                  9007199254740992.0 -
              0.5);
          n2 += static_cast<double>(u[static_cast<size_t>(d)]) * u[static_cast<size_t>(d)];
        }
        for (float& x : u) x = static_cast<float>(x / std::sqrt(n2));
        r.topic.push_back(std::move(u));
      }
    }
    r.q.assign(static_cast<size_t>(o.layers * kQHeads * kHeadDim), 0.0f);
    r.out = r.q;
    r.dense_out = r.q;
    e.reqs.push_back(std::move(r));
  }
  const int64_t spare = 8;
  e.pool = std::make_unique<PagePool>(o.layers, pages + spare, o.seed);
  for (Request& r : e.reqs)
    for (int64_t p = 0; p < (r.prompt_len + kPage - 1) / kPage; ++p)
      r.page_table[static_cast<size_t>(p)] = e.pool->Allocate(), ++r.pages_allocated;
  e.noise = std::make_unique<NoiseTable>(o.seed);
  e.barrier = std::make_unique<Barrier>(e.nth);
  e.thread_stats.assign(static_cast<size_t>(e.nth), sb::LayerStats{});
  e.logits.assign(static_cast<size_t>(e.nth), std::vector<float>(kVocab));
  sb::AttentionOpConfig oc;
  oc.num_q_heads = kQHeads;
  oc.num_kv_heads = kKVHeads;
  oc.head_dim = kHeadDim;
  oc.block_size = kBlock;
  oc.kv_dtype = sb::DType::kF16;
  oc.scoring = kScoring;
  auto op = sb::AttentionOp::Create(oc);
  if (!op.ok()) {
    std::fprintf(stderr, "engine_loop: %s\n", op.status().ToString().c_str());
    return 1;
  }
  e.op = *op;
  // Layouts per request (the same for every layer: one page table, one pool per layer), and the
  // per-layer pointers, fixed for the whole run.
  for (Request& r : e.reqs) {
    sb::StepRequest s;
    s.kv = PagedView(*e.pool, r, 0);
    s.kv.k = s.kv.v = nullptr;
    s.q = {nullptr, kQHeads * kHeadDim, kHeadDim};
    s.out = {nullptr, kQHeads * kHeadDim, kHeadDim};
    e.steps.push_back(s);
    s.budget = sb::Budget::Dense();
    e.dense_steps.push_back(s);
  }
  e.inputs.assign(static_cast<size_t>(o.layers), std::vector<sb::LayerInput>(e.reqs.size()));
  e.dense_inputs = e.inputs;
  for (int l = 0; l < o.layers; ++l)
    for (size_t i = 0; i < e.reqs.size(); ++i) {
      Request& r = e.reqs[i];
      const size_t off = static_cast<size_t>(l) * kQHeads * kHeadDim;
      sb::LayerInput in;
      in.q = r.q.data() + off;
      in.out = r.out.data() + off;
      in.k = e.pool->k(l);
      in.v = e.pool->v(l);
      in.summaries = &r.summaries[static_cast<size_t>(l)];
      e.inputs[static_cast<size_t>(l)][i] = in;
      in.out = r.dense_out.data() + off;
      in.summaries = nullptr;  // dense: nothing to select
      e.dense_inputs[static_cast<size_t>(l)][i] = in;
    }
  for (Request& r : e.reqs)
    for (int l = 0; l < o.layers; ++l) MakeQuery(*e.noise, r, o.seed, l, -1);

  std::printf(
      "sparsebudget %s, kernels %s, %d engine threads (std::thread + barrier driving AttentionOp's "
      "Select/Attend/MergePhase)\n",
      sb::Version(), sb::IsaName(e.op.isa()), e.nth);
  std::printf("model: %d q heads, %d kv heads, head_dim %d, %d layers; block %d tokens; %s scoring\n", kQHeads,
              kKVHeads, kHeadDim, o.layers, kBlock, sb::ScoringName(kScoring));
  std::printf("paged KV cache: fp16, %" PRId64 " pages of %" PRId64 " tokens per layer, %.1f MiB in all\n",
              e.pool->num_pages(), kPage, static_cast<double>(e.pool->bytes()) / (1 << 20));
  std::printf("predictor: %s\n", how.c_str());
  if (e.policy != nullptr)
    std::printf(
        "self-check: escalate a request when its step's top-1 probability < %.4f (%zu-rung ladder, mode %s); top-1 "
        "from a "
        "stand-in LM head (no model here)\n",
        e.policy->threshold(), e.policy->ladder().size(), sb::EscalationModeName(e.policy->mode()));
  else
    std::printf("self-check: none (the predictor carries no escalation policy)\n");

  // The engine's threads: ith 0 is this thread.
  std::vector<std::thread> workers;
  for (int ith = 1; ith < e.nth; ++ith) workers.emplace_back([&e, ith] { e.Run(ith); });
  e.Run(0);
  for (std::thread& t : workers) t.join();
  if (!e.error.empty()) {
    std::printf("error: %s\n", e.error.c_str());
    return 1;
  }

  std::printf("prefill (K/V writes + summaries + prediction): %.2f s; %d decode steps x %d layers\n\n", e.prefill_wall,
              o.steps, o.layers);
  std::printf("%3s %-12s %7s %8s %7s %4s %7s %9s %9s\n", "req", "task", "length", "budget", "blocks", "esc", "final",
              "min top1", "rel err");
  double sum_frac = 0;
  for (const Request& r : e.reqs) {
    sum_frac += r.prediction.fraction;
    const int64_t final_blocks = e.policy ? r.escalation.total_blocks : r.prediction.total_blocks;
    std::printf("%3d %-12s %7" PRId64 " %7.1f%% %7" PRId64 " %4d %7" PRId64 " %9.3f %9.2e%s\n", r.id, r.task.c_str(),
                r.len, 100.0 * r.prediction.fraction, r.prediction.total_blocks, r.escalation.escalations, final_blocks,
                e.policy ? r.min_top1 : std::nan(""), r.max_rel_err, r.dense_fallback ? "  (dense fallback)" : "");
  }
  int64_t kept = 0, causal = 0, kernel_ns = 0;
  for (const sb::LayerStats& t : e.thread_stats)
    kept += t.selection.kept_blocks, causal += t.selection.causal_blocks, kernel_ns += t.kernel_ns;
  std::printf(
      "\n(budget: predicted fraction at admission; blocks: its total blocks per kv head; esc: steps the "
      "self-check escalated; final: total blocks after them; min top1: lowest stand-in top-1 probability; rel err: "
      "max over layers and steps of ||sparse - dense|| / ||dense||, recomputed steps counted after recompute)\n");
  std::printf(
      "totals: mean budget %.1f%%, kept %.1f%% of causal blocks (all layers, steps, kv heads); decode "
      "attention wall time sparse %.3f s vs dense %.3f s (%.1fx); token appends %.3f s; step plans %.4f s\n",
      100.0 * sum_frac / static_cast<double>(e.reqs.size()),
      100.0 * static_cast<double>(kept) / static_cast<double>(std::max<int64_t>(causal, 1)), e.sparse_wall,
      e.dense_wall, e.dense_wall / std::max(e.sparse_wall, 1e-12), e.append_wall, e.plan_wall);
  std::printf(
      "sparse layers: %.1f%% of the engine threads' time inside select/attend work items (the rest: "
      "per-layer bookkeeping, merging, barrier waits)\n",
      100.0 * static_cast<double>(kernel_ns) * 1e-9 / std::max(e.sparse_wall * e.nth, 1e-12));
  if (e.policy != nullptr)
    std::printf("self-check: %" PRId64 " of %" PRId64
                " request-steps recomputed at a higher rung; their recomputation read "
                "%.1f%% more blocks than the steps themselves and took %.3f s (not in the sparse time above)\n",
                e.recomputed_steps, static_cast<int64_t>(e.reqs.size()) * o.steps,
                100.0 * static_cast<double>(e.redo_stats.selection.kept_blocks) /
                    static_cast<double>(std::max<int64_t>(kept, 1)),
                e.redo_wall);

  const bool ok = CheckAgainstSparseAttention(e);
  std::printf("%s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
