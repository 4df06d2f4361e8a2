// sparsebudget kernel benchmarks (Google Benchmark). Every figure is also reported against this
// machine's limits measured at start-up in the same process (read bandwidth, FMA peak), and
// against a dense baseline built on OpenBLAS (GEMM + softmax + GEMM) in the same binary.
//
//   build/bench/bench_attention --benchmark_out=results.json --benchmark_out_format=json
//
// Names: op/isa:X/kv:T/L:N/budget:B/score:S/B:64/threads:N. Counters: GB/s of K/V (and
// summaries) actually read, bw_frac = that rate over the measured DRAM read bandwidth for the
// same thread count, kept = fraction of causal blocks kept, GFLOP/s and fma_frac for prefill.
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "probes.hpp"
#include "sparsebudget/sparsebudget.hpp"
#ifdef SPARSEBUDGET_BENCH_GGML
#include "ggml_peer.hpp"
#endif

using namespace sparsebudget;

namespace {

constexpr int32_t kHq = 32, kHkv = 8, kD = 128;

struct Limits {
  double bw[3] = {0, 0, 0};   // GB/s for 1 and 2 threads
  double fma[3] = {0, 0, 0};  // GFLOP/s for 1 and 2 threads
  double mix[3] = {0, 0, 0};  // GFLOP/s of the fp16 score step's operand mix, 1 and 2 threads
} g_limits;

ThreadPool& Pool(int threads) {
  static ThreadPool p1(1), p2(2);
  return threads == 1 ? p1 : p2;
}

// Cheap deterministic fill (a generator per element is too slow for GiB-sized caches).
uint16_t HalfOf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int e = static_cast<int>((x >> 23) & 0xff) - 112;
  if (e <= 0) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(e) << 10) + (((x & 0x7fffffu) + 0x1000u) >> 13)));
}

void Fill(void* dst, DType t, size_t n, uint64_t seed) {
  if (t == DType::kQ8_0) {
    // fp32 values in chunks, quantized by the library (ggml's q8_0 rule).
    constexpr size_t kChunk = 4096;
    std::vector<float> tmp(kChunk);
    for (size_t i = 0; i < n; i += kChunk) {
      const size_t c = std::min(kChunk, n - i);
      Fill(tmp.data(), DType::kF32, c, seed * 1000003 + i / kChunk);
      if (!QuantizeQ8_0(tmp.data(), static_cast<int64_t>(c),
                        static_cast<unsigned char*>(dst) + DTypeBytes(t, static_cast<int64_t>(i)))
               .ok())
        std::abort();
    }
    return;
  }
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const float f = static_cast<float>(static_cast<int64_t>(s >> 40) - (1 << 23)) / static_cast<float>(1 << 23);
    if (t == DType::kF32)
      static_cast<float*>(dst)[i] = f;
    else if (t == DType::kF16)
      static_cast<uint16_t*>(dst)[i] = HalfOf(f);
    else {
      uint32_t x;
      std::memcpy(&x, &f, 4);
      static_cast<uint16_t*>(dst)[i] = static_cast<uint16_t>(x >> 16);
    }
  }
}

// KV caches live in transparent huge pages, as engines allocate them: a kv head's rows are
// kv_heads * head_dim elements apart, so with 4 KiB pages every other row is a TLB miss.
// SPARSEBUDGET_BENCH_SMALL_PAGES=1 measures the 4 KiB case.
struct HugeBuffer {
  void* p = nullptr;
  size_t n = 0;
  explicit HugeBuffer(size_t bytes) : n((bytes + (size_t{2} << 20) - 1) & ~((size_t{2} << 20) - 1)) {
    p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    if (!std::getenv("SPARSEBUDGET_BENCH_SMALL_PAGES")) madvise(p, n, MADV_HUGEPAGE);
  }
  ~HugeBuffer() { munmap(p, n); }
  unsigned char* get() const { return static_cast<unsigned char*>(p); }
};

// K/V of one (dtype, L), token-major [t][kv head][d], in enough copies that rotating through
// them streams from DRAM (>= 128 MiB in total, four times the L3).
struct KVSet {
  DType dtype;
  int64_t L;
  int copies = 1;
  std::vector<std::unique_ptr<HugeBuffer>> k, v;
  std::map<int, std::vector<BlockSummaries>> summaries;  // by block size
  bool head_major = false;                               // [kv head][t][d] instead of the engines' [t][kv head][d]
  KVCacheView View(int i) const {
    if (head_major)
      return KVCacheView{k[static_cast<size_t>(i)]->get(), v[static_cast<size_t>(i)]->get(), dtype, kD, L * kD};
    return KVCacheView{k[static_cast<size_t>(i)]->get(), v[static_cast<size_t>(i)]->get(), dtype, kHkv * kD, kD};
  }
  const BlockSummaries& Summaries(int i, int B) {
    auto& s = summaries[B];
    if (s.empty()) {
      for (int c = 0; c < copies; ++c) {
        auto made = BlockSummaries::Create({kHkv, kD, B, L, true, true});
        (void)made->Append(View(c), L);
        s.push_back(std::move(*made));
      }
    }
    return s[static_cast<size_t>(i)];
  }
};

KVSet& GetKV(DType dtype, int64_t L, bool head_major = false) {
  static std::unique_ptr<KVSet> cur;
  if (cur && cur->dtype == dtype && cur->L == L && cur->head_major == head_major) return *cur;
  cur.reset();  // free the previous set first
  cur = std::make_unique<KVSet>();
  cur->dtype = dtype;
  cur->L = L;
  cur->head_major = head_major;
  const size_t n = static_cast<size_t>(L) * kHkv * kD;
  const auto bytes = static_cast<size_t>(DTypeBytes(dtype, static_cast<int64_t>(n)));
  // Copies: K + V in all beyond 4x the L3 (and 128 MiB), so that neither dense walks nor the
  // blocks a sparse call keeps (rotating queries too, see RunAttention) stay cache-resident.
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  // (At most 2 GiB, whatever sysconf says: some VMs report the whole socket's L3.)
  const size_t floor_bytes =
      std::min<size_t>(size_t{2} << 30, std::max<size_t>(size_t{128} << 20, l3 > 0 ? 4 * static_cast<size_t>(l3) : 0));
  cur->copies = static_cast<int>(std::max<size_t>(1, floor_bytes / (2 * bytes) + 1));
  // Tiny caches (the fixed-cost probe at L = 64) stay cache-resident: they measure overhead.
  if (2 * bytes < (size_t{1} << 20)) cur->copies = 1;
  for (int c = 0; c < cur->copies; ++c) {
    cur->k.emplace_back(new HugeBuffer(bytes));
    cur->v.emplace_back(new HugeBuffer(bytes));
    Fill(cur->k.back()->get(), dtype, n, 2 * static_cast<uint64_t>(c) + 1);
    Fill(cur->v.back()->get(), dtype, n, 2 * static_cast<uint64_t>(c) + 2);
  }
  return *cur;
}

std::vector<float> RandomQ(size_t n, uint64_t seed) {
  std::vector<float> q(n);
  Fill(q.data(), DType::kF32, n, seed);
  return q;
}

struct DecodeArgs {
  DType dtype;
  int64_t L;
  double fraction;  // 1 = dense
  Scoring scoring;
  int32_t B;
  int threads;
  int32_t num_queries = 1;
  bool head_major = false;
  SelectionScope scope = SelectionScope::kPerKvHead;  // named in the row only when not the default
};

// The plan parameters of a decode row: its shape (32 q / 8 kv heads, d 128), K/V type, scoring,
// and budget (dense at fraction >= 1).
AttentionParams DecodeParams(const DecodeArgs& a) {
  AttentionParams p;
  p.shape = {kHq, kHkv, kD, a.B, a.L, a.num_queries};
  p.kv_dtype = a.dtype;
  p.scoring = a.scoring;
  p.budget = a.fraction >= 1.0 ? Budget::Dense() : Budget::Fraction(a.fraction);
  p.selection_scope = a.scope;
  return p;
}

void RunAttention(benchmark::State& state, DecodeArgs a) {
  KVSet& kv = GetKV(a.dtype, a.L, a.head_major);
  AttentionPlan plan;
  if (Status st = MakePlan(DecodeParams(a), &plan); !st.ok()) {
    state.SkipWithError(st.ToString().c_str());
    return;
  }
  std::vector<unsigned char> ws(plan.workspace_bytes + 64);
  // Seven query sets in turn (coprime to the copy count's rotation unless it is 7): a sparse
  // call keeps other blocks each time, as decode steps do, so its kept blocks are not
  // L3-resident from the previous call.
  constexpr int kQuerySets = 7;
  const size_t qn = static_cast<size_t>(a.num_queries) * kHq * kD;
  const std::vector<float> q = RandomQ(qn * kQuerySets, 99);
  std::vector<float> out(qn);
  const OutputView ov{out.data(), kHq * kD, kD};
  // Summaries are built outside the timed loop (an engine keeps them incrementally).
  for (int c = 0; c < kv.copies; ++c) (void)kv.Summaries(c, a.B);
  SelectionStats stats;
  int i = 0;
  for (auto _ : state) {
    const int c = i % kv.copies;
    const QueryView qv{q.data() + static_cast<size_t>(i % kQuerySets) * qn, kHq * kD, kD};
    ++i;
    Status st = SparseAttention(plan, qv, kv.View(c), &kv.Summaries(c, a.B), ov, ws.data(), &Pool(a.threads), &stats);
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(out.data());
  }
  // Bytes actually read per call: kept K/V blocks, plus the summaries scored when sparse.
  const double kept = static_cast<double>(stats.kept_blocks) / static_cast<double>(stats.causal_blocks);
  const double elem = static_cast<double>(DTypeBytes(a.dtype, kD)) / kD;  // bytes per value
  double bytes = static_cast<double>(stats.kept_blocks) * a.B * kD * elem * 2.0;
  if (!stats.dense && a.fraction < 1.0)
    bytes += static_cast<double>(plan.num_blocks) * kHkv * kD * 4.0 * (a.scoring == Scoring::kBound ? 2 : 1);
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bw_frac"] =
      benchmark::Counter(bytes / (g_limits.bw[a.threads] * 1e9), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["kept"] = kept;
  if (a.num_queries > 1) {
    // Causal prefill FLOPs over the kept tokens: 2 matmuls of 2*D each per (row, key).
    double pairs = 0;
    const int64_t first = a.L - a.num_queries;
    for (int64_t i2 = 0; i2 < a.num_queries; ++i2) pairs += static_cast<double>(first + i2 + 1);
    const double flops = 4.0 * kD * kHq * pairs * kept;
    state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["fma_frac"] =
        benchmark::Counter(flops / (g_limits.fma[a.threads] * 1e9), benchmark::Counter::kIsIterationInvariantRate);
  }
}

// The same decode with K/V cache-resident: a paged view whose every page is the first block, so
// each block reads the same L2-resident 2 x 8 x 64 rows. Its time is the walk's arithmetic and
// L2 traffic alone (plus, when sparse, selection over summaries of that view, L3-resident), the
// floor under the DRAM-bound row of the same shape (reported beside issue 13's targets by
// bench/report.py).
void RunComputeOnly(benchmark::State& state, DecodeArgs a) {
  KVSet& kv = GetKV(a.dtype, a.L);
  const std::vector<int32_t> pages(static_cast<size_t>((a.L + a.B - 1) / a.B), 0);
  KVCacheView view = kv.View(0);
  view.page_table = pages.data();
  view.page_size = a.B;
  view.page_stride = static_cast<int64_t>(a.B) * kHkv * kD;
  view.num_pages = 1;  // every entry is page 0: the L2-resident first block
  AttentionPlan plan;
  if (Status st = MakePlan(DecodeParams(a), &plan); !st.ok()) {
    state.SkipWithError(st.ToString().c_str());
    return;
  }
  std::optional<BlockSummaries> sums;  // of the resident view, for the sparse rows
  if (a.fraction < 1.0) {
    auto made = BlockSummaries::Create({kHkv, kD, a.B, a.L, true, true});
    if (!made.ok() || !made->Append(view, a.L).ok()) {
      state.SkipWithError("summaries of the resident view");
      return;
    }
    sums.emplace(std::move(*made));
  }
  std::vector<unsigned char> ws(plan.workspace_bytes + 64);
  // Seven query sets in turn, as RunAttention (the sparse rows keep other blocks each call).
  constexpr int kQuerySets = 7;
  const size_t qn = static_cast<size_t>(kHq) * kD;
  const std::vector<float> q = RandomQ(qn * kQuerySets, 99);
  std::vector<float> out(qn);
  int i = 0;
  for (auto _ : state) {
    const QueryView qv{q.data() + static_cast<size_t>(i++ % kQuerySets) * qn, kHq * kD, kD};
    Status st = SparseAttention(plan, qv, view, sums ? &*sums : nullptr, OutputView{out.data(), kHq * kD, kD},
                                ws.data(), &Pool(a.threads));
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(out.data());
  }
  // The DRAM row's bytes at the probe: the memory floor this compute floor is compared with
  // (dense rows; a sparse row's bytes depend on its selection, in its decode row's counters).
  if (a.fraction >= 1.0) {
    const double bytes =
        static_cast<double>(plan.num_blocks) * a.B * static_cast<double>(DTypeBytes(a.dtype, kD)) * kHkv * 2.0;
    state.counters["mem_floor_ms"] = bytes / (g_limits.bw[a.threads] * 1e9) * 1e3;
    // The call's FLOPs (q.k and p.v: 2 x 2 x head_dim per row and key) at the score-step mix's
    // rate: the arithmetic floor of fp32 math on fp16 K/V (f16 rows; q8_0 converts more per value).
    const double flops = 4.0 * kD * kHq * static_cast<double>(a.L);
    if (a.dtype == DType::kF16) state.counters["mix_floor_ms"] = flops / (g_limits.mix[a.threads] * 1e9) * 1e3;
  }
}

// The kept K/V blocks of a sparse decode call, read with no arithmetic: SelectBlocks' choice for
// the same queries and copies as RunAttention (made outside the timed loop), every unit's K then V
// rows summed by the read probe's loop, units split over the threads in contiguous ranges. Its
// time is what memory delivers to that access pattern: on the engines' token-major cache a kept
// block is 64 rows of head_dim values, num_kv_heads rows apart; head-major it is one range.
// bench/report.py sets it under the sparse row's roofline target (issue 13).
void RunKeptRead(benchmark::State& state, DecodeArgs a, bool prefetch) {
  KVSet& kv = GetKV(a.dtype, a.L, a.head_major);
  AttentionPlan plan;
  if (Status st = MakePlan(DecodeParams(a), &plan); !st.ok()) {
    state.SkipWithError(st.ToString().c_str());
    return;
  }
  // Selections for every (copy, query set) pair the decode row cycles through.
  constexpr int kQuerySets = 7;
  const size_t qn = static_cast<size_t>(kHq) * kD;
  const std::vector<float> q = RandomQ(qn * kQuerySets, 99);
  std::vector<unsigned char> ws(plan.workspace_bytes + 64);
  const int cycle = kv.copies * kQuerySets;
  const auto cap = static_cast<size_t>(plan.num_blocks);
  std::vector<int32_t> idx(static_cast<size_t>(cycle) * static_cast<size_t>(plan.num_units) * cap);
  std::vector<int32_t> cnt(static_cast<size_t>(cycle) * static_cast<size_t>(plan.num_units));
  for (int i = 0; i < cycle; ++i) {
    const int c = i % kv.copies;
    const size_t u0 = static_cast<size_t>(i) * static_cast<size_t>(plan.num_units);
    const Status st =
        SelectBlocks(plan, QueryView{q.data() + static_cast<size_t>(i % kQuerySets) * qn, kHq * kD, kD},
                     kv.Summaries(c, a.B), BlockSelection{&idx[u0 * cap], &cnt[u0], plan.num_blocks}, ws.data());
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return;
    }
  }
  const bool avx512 = IsaSupported(Isa::kAvx512);
  const long row_bytes = static_cast<long>(DTypeBytes(a.dtype, kD));
  const long stride = a.head_major ? row_bytes : row_bytes * kHkv;  // bytes between a head's tokens
  int64_t kept_blocks = 0;
  std::vector<float> sums(static_cast<size_t>(a.threads));
  int i = 0;
  for (auto _ : state) {
    const int c = i % kv.copies;
    const size_t u0 = static_cast<size_t>(i % cycle) * static_cast<size_t>(plan.num_units);
    ++i;
    const KVCacheView view = kv.View(c);
    Pool(a.threads).Run([&](int ith, int nth) {
      float acc = 0;
      const int64_t lo = plan.num_units * ith / nth, hi = plan.num_units * (ith + 1) / nth;
      for (int64_t u = lo; u < hi; ++u) {  // decode: unit u is kv head u
        const int32_t* blocks = &idx[(u0 + static_cast<size_t>(u)) * cap];
        const int32_t n = cnt[u0 + static_cast<size_t>(u)];
        // Byte offset of (head u, block b): head-major [h][t][d], token-major [t][h][d].
        auto offset = [&](int32_t b) {
          const long tok = static_cast<long>(b) * a.B;
          return a.head_major ? (static_cast<long>(u) * a.L + tok) * row_bytes
                              : tok * stride + static_cast<long>(u) * row_bytes;
        };
        const auto* k = static_cast<const char*>(view.k);
        const auto* v = static_cast<const char*>(view.v);
        for (int32_t j = 0; j < n; ++j) {
          const long off = offset(blocks[j]);
          const long next = prefetch && j + 1 < n ? offset(blocks[j + 1]) : -1;
          acc += sbbench::SumRows(k + off, a.B, stride, row_bytes, avx512, next >= 0 ? k + next : nullptr);
          acc += sbbench::SumRows(v + off, a.B, stride, row_bytes, avx512, next >= 0 ? v + next : nullptr);
        }
      }
      sums[static_cast<size_t>(ith)] = acc;
    });
    benchmark::DoNotOptimize(sums.data());
  }
  for (int64_t u = 0; u < plan.num_units; ++u) kept_blocks += cnt[static_cast<size_t>(u)];
  const double bytes = static_cast<double>(kept_blocks) * a.B * static_cast<double>(row_bytes) * 2.0;
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bw_frac"] =
      benchmark::Counter(bytes / (g_limits.bw[a.threads] * 1e9), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["probe_ms"] = bytes / (g_limits.bw[a.threads] * 1e9) * 1e3;  // these bytes at the read probe
}

// Selection alone (scoring + top-k) at the same shapes, for the selection share of a call.
void RunSelect(benchmark::State& state, DecodeArgs a) {
  KVSet& kv = GetKV(a.dtype, a.L);
  AttentionPlan plan;
  if (Status st = MakePlan(DecodeParams(a), &plan); !st.ok()) {
    state.SkipWithError(st.ToString().c_str());
    return;
  }
  std::vector<unsigned char> ws(plan.workspace_bytes + 64);
  std::vector<int32_t> idx(static_cast<size_t>(plan.num_units * plan.num_blocks)),
      cnt(static_cast<size_t>(plan.num_units));
  const std::vector<float> q = RandomQ(kHq * kD, 99);
  for (int c = 0; c < kv.copies; ++c) (void)kv.Summaries(c, a.B);
  int i = 0;
  for (auto _ : state) {
    const int c = i++ % kv.copies;
    (void)SelectBlocks(plan, QueryView{q.data(), kHq * kD, kD}, kv.Summaries(c, a.B),
                       BlockSelection{idx.data(), cnt.data(), plan.num_blocks}, ws.data());
    benchmark::DoNotOptimize(idx.data());
  }
}

// Dense baseline on OpenBLAS, fp32 K/V: per kv head S = K Qg^T (L x G), softmax over L, O = P^T V.
void RunBlasBaseline(benchmark::State& state, int64_t L, int threads, int32_t num_queries) {
  openblas_set_num_threads(threads);
  KVSet& kv = GetKV(DType::kF32, L);
  const int32_t G = kHq / kHkv;
  const int32_t rows = G * num_queries;
  const std::vector<float> q = RandomQ(static_cast<size_t>(num_queries) * kHq * kD, 99);
  std::vector<float> s(static_cast<size_t>(L) * rows), out(q.size()), qg(static_cast<size_t>(rows) * kD);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  int it = 0;
  for (auto _ : state) {
    const int c = it++ % kv.copies;
    const auto* K = reinterpret_cast<const float*>(kv.k[static_cast<size_t>(c)]->get());
    const auto* V = reinterpret_cast<const float*>(kv.v[static_cast<size_t>(c)]->get());
    for (int32_t h = 0; h < kHkv; ++h) {
      for (int32_t i = 0; i < num_queries; ++i)
        for (int32_t g = 0; g < G; ++g)
          std::memcpy(&qg[(static_cast<size_t>(i) * G + g) * kD], &q[(static_cast<size_t>(i) * kHq + h * G + g) * kD],
                      kD * 4);
      // S (L x rows) = K_h (L x D, ld = Hkv*D) * Qg^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(L), rows, kD, scale, K + h * kD, kHkv * kD,
                  qg.data(), kD, 0.0f, s.data(), rows);
      // Column softmax with the causal mask of each query.
      for (int32_t r = 0; r < rows; ++r) {
        const int64_t pos = L - num_queries + r / G;
        float mx = -INFINITY;
        for (int64_t t = 0; t <= pos; ++t) mx = std::max(mx, s[static_cast<size_t>(t) * rows + r]);
        float z = 0;
        for (int64_t t = 0; t < L; ++t) {
          float& x = s[static_cast<size_t>(t) * rows + r];
          x = t <= pos ? std::exp(x - mx) : 0.0f;
          z += x;
        }
        for (int64_t t = 0; t <= pos; ++t) s[static_cast<size_t>(t) * rows + r] /= z;
      }
      // O (rows x D) = S^T (rows x L) * V_h (L x D)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, kD, static_cast<int>(L), 1.0f, s.data(), rows,
                  V + h * kD, kHkv * kD, 0.0f, qg.data(), kD);
    }
    benchmark::DoNotOptimize(qg.data());
  }
  const double bytes = static_cast<double>(L) * kHkv * kD * 4.0 * 2.0;
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bw_frac"] =
      benchmark::Counter(bytes / (g_limits.bw[threads] * 1e9), benchmark::Counter::kIsIterationInvariantRate);
}

// An engine's decode step: 16 requests of mixed lengths and budgets, one after another.
void RunBatch(benchmark::State& state, int threads) {
  struct Req {
    int64_t L;
    double f;
  };
  const std::vector<Req> reqs = {
      {1024, 1.0},  {2048, 0.5},   {4096, 0.25}, {8192, 0.1},  {16384, 0.05}, {32768, 0.05}, {3000, 1.0}, {6000, 0.2},
      {12000, 0.1}, {24000, 0.05}, {500, 1.0},   {9000, 0.15}, {20000, 0.08}, {28000, 0.04}, {7000, 0.3}, {15000, 0.1}};
  KVSet& kv = GetKV(DType::kF16, 32768);
  for (int c = 0; c < kv.copies; ++c) (void)kv.Summaries(c, 64);
  std::vector<AttentionPlan> plans(reqs.size());
  size_t ws_bytes = 0;
  for (size_t r = 0; r < reqs.size(); ++r) {
    AttentionParams p;
    p.shape = {kHq, kHkv, kD, 64, reqs[r].L, 1};
    p.kv_dtype = DType::kF16;
    p.budget = reqs[r].f >= 1.0 ? Budget::Dense() : Budget::Fraction(reqs[r].f);
    (void)MakePlan(p, &plans[r]);
    ws_bytes = std::max(ws_bytes, plans[r].workspace_bytes);
  }
  std::vector<unsigned char> ws(ws_bytes + 64);
  const std::vector<float> q = RandomQ(kHq * kD, 7);
  std::vector<float> out(q.size());
  double bytes = 0;
  int it = 0;
  for (auto _ : state) {
    bytes = 0;
    for (size_t r = 0; r < reqs.size(); ++r) {
      const int c = it++ % kv.copies;
      SelectionStats st;
      (void)SparseAttention(plans[r], QueryView{q.data(), kHq * kD, kD}, kv.View(c), &kv.Summaries(c, 64),
                            OutputView{out.data(), kHq * kD, kD}, ws.data(), &Pool(threads), &st);
      bytes += static_cast<double>(st.kept_blocks) * 64 * kD * 2.0 * 2.0;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bw_frac"] =
      benchmark::Counter(bytes / (g_limits.bw[threads] * 1e9), benchmark::Counter::kIsIterationInvariantRate);
}

#ifdef SPARSEBUDGET_BENCH_GGML
// ggml's flash attention over the same K/V copies (one graph per copy, built outside the timed
// loop). Before timing, its output is checked against ours on copy 0 (same q, dense).
void RunGgml(benchmark::State& state, DType dtype, int64_t L, bool head_major, int threads) {
  KVSet& kv = GetKV(dtype, L, head_major);
  const std::vector<float> q = RandomQ(kHq * kD, 99);
  std::vector<std::unique_ptr<sbbench::GgmlDecode>> graphs;
  for (int c = 0; c < kv.copies; ++c)
    graphs.emplace_back(new sbbench::GgmlDecode(kv.k[static_cast<size_t>(c)]->get(),
                                                kv.v[static_cast<size_t>(c)]->get(), dtype == DType::kQ8_0, L, kHq,
                                                kHkv, kD, head_major, q.data(), threads));
  {
    AttentionParams p;
    p.shape = {kHq, kHkv, kD, 64, L, 1};
    p.kv_dtype = dtype;
    p.budget = Budget::Dense();
    AttentionPlan plan;
    (void)MakePlan(p, &plan);
    std::vector<unsigned char> ws(plan.workspace_bytes + 64);
    std::vector<float> ours(q.size());
    (void)SparseAttention(plan, QueryView{q.data(), kHq * kD, kD}, kv.View(0), nullptr,
                          OutputView{ours.data(), kHq * kD, kD}, ws.data());
    if (!graphs[0]->Run()) {
      state.SkipWithError("ggml_graph_compute failed");
      return;
    }
    // ggml rounds q to fp16 (q8_0 for q8_0 K) and, for f16 V, accumulates in fp16: at 64K its
    // output is off by a few percent of the (small, cancelling) outputs. A wrong layout would be
    // uncorrelated (relative L2 error ~1.4); 0.25 separates the two.
    double worst = 0, scale = 1e-30, e2 = 0, o2 = 1e-300;
    for (size_t i = 0; i < ours.size(); ++i) {
      const double d = static_cast<double>(ours[i]) - graphs[0]->out()[i];
      worst = std::max(worst, std::abs(d));
      scale = std::max(scale, static_cast<double>(std::abs(ours[i])));
      e2 += d * d;
      o2 += static_cast<double>(ours[i]) * ours[i];
    }
    state.counters["max_diff_vs_ours"] = worst / scale;
    state.counters["l2_diff_vs_ours"] = std::sqrt(e2 / o2);
    if (!(std::sqrt(e2 / o2) <= 0.25)) {
      state.SkipWithError("ggml output differs from sparsebudget's: not the same attention");
      return;
    }
  }
  int i = 0;
  for (auto _ : state) {
    const int c = i++ % kv.copies;
    if (!graphs[static_cast<size_t>(c)]->Run()) {
      state.SkipWithError("ggml_graph_compute failed");
      return;
    }
  }
  const double bytes = static_cast<double>(DTypeBytes(dtype, L * kHkv * kD)) * 2.0;
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bw_frac"] =
      benchmark::Counter(bytes / (g_limits.bw[threads] * 1e9), benchmark::Counter::kIsIterationInvariantRate);
}
#endif
// An engine's decode step through the engine API (op.hpp): 16 requests of 1K-64K tokens, fp16
// K/V in one shared page pool (pages of 128 tokens handed out shuffled), 32/8 heads, d 128, one
// StepPlan per step and RunLayer for each of 32 layers. Budgets: predicted per request by the
// task-length law of the synthetic traces (tasks round-robin), or a fixed fraction. The 32
// layers share the page pool and the summaries (1.2 GB is all the machine can spare) but each
// layer has its own queries, so each selects its own blocks. Counters: overhead_frac = share of
// the step's thread time spent outside the select and attend work items (planning, per-layer
// bookkeeping, split-K merging, barrier waits), from LayerStats::kernel_ns; kept_frac = kept /
// causal blocks.
void RunEngineStep(benchmark::State& state, double fraction, int threads) {
  constexpr int64_t kPageTokens = 128;
  constexpr int kLayers = 32;
  static const std::vector<int64_t> lens = {1024,  1536,  2048,  3072,  4096,  6144,  8192,  10240,
                                            12288, 16384, 20480, 24576, 32768, 40960, 49152, 65536};
  struct PagedKV {
    std::unique_ptr<HugeBuffer> k, v;
    std::vector<std::vector<int32_t>> tables;
    std::vector<BlockSummaries> sums;
  };
  static std::unique_ptr<PagedKV> pool;
  const int64_t page_elems = kPageTokens * kHkv * kD;
  if (!pool) {
    GetKV(DType::kF16, 64);  // frees the big caches of the decode rows first
    pool = std::make_unique<PagedKV>();
    int64_t pages = 0;
    for (int64_t L : lens) pages += (L + kPageTokens - 1) / kPageTokens;
    const size_t bytes = static_cast<size_t>(pages * page_elems) * 2;
    pool->k = std::make_unique<HugeBuffer>(bytes);
    pool->v = std::make_unique<HugeBuffer>(bytes);
    Fill(pool->k->get(), DType::kF16, static_cast<size_t>(pages * page_elems), 11);
    Fill(pool->v->get(), DType::kF16, static_cast<size_t>(pages * page_elems), 12);
    std::vector<int32_t> ids(static_cast<size_t>(pages));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(5));
    size_t next = 0;
    for (int64_t L : lens) {
      std::vector<int32_t> t(static_cast<size_t>((L + kPageTokens - 1) / kPageTokens));
      for (auto& x : t) x = ids[next++];
      pool->tables.push_back(std::move(t));
      KVCacheView kv{pool->k->get(), pool->v->get(), DType::kF16, kHkv * kD, kD, pool->tables.back().data(),
                     kPageTokens,    page_elems,     pages};
      auto s = BlockSummaries::Create({kHkv, kD, 64, L, false, true});
      (void)s->Append(kv, L);
      pool->sums.push_back(std::move(*s));
    }
  }
  AttentionOpConfig cfg;
  cfg.num_q_heads = kHq;
  cfg.num_kv_heads = kHkv;
  cfg.head_dim = kD;
  cfg.block_size = 64;
  cfg.kv_dtype = DType::kF16;
  cfg.scoring = Scoring::kBound;
  auto op = AttentionOp::Create(cfg);
  if (!op.ok()) return state.SkipWithError(op.status().ToString().c_str());
  // Budgets: predicted (fraction 0) or fixed.
  std::vector<StepRequest> reqs(lens.size());
  std::unique_ptr<Predictor> law;
  if (fraction <= 0.0) {
    std::vector<TaskLaw> laws;
    for (const SynthLaw& sl : SynthLaws()) laws.push_back({sl.task, sl.c, sl.a, 0.0});
    law = MakeTaskLengthLaw(std::move(laws), TaskLaw{"*", 12.8, 0.5, 0.0});
  }
  const char* const tasks[] = {kTaskSingleQa, kTaskMultiQa, kTaskMultiHop, kTaskAggregation};
  for (size_t r = 0; r < lens.size(); ++r) {
    StepRequest& s = reqs[r];
    s.context_length = lens[r];
    s.kv = KVCacheView{nullptr, nullptr, DType::kF16, kHkv * kD, kD, pool->tables[r].data(), kPageTokens, page_elems};
    s.q = {nullptr, kHq * kD, kD};
    s.out = {nullptr, kHq * kD, kD};
    if (law) {
      RequestFeatures f;
      f.context_length = lens[r];
      f.task = tasks[r % 4];
      auto pred = law->Predict(f);
      if (!pred.ok()) return state.SkipWithError(pred.status().ToString().c_str());
      s.budget = pred->budget;
    } else {
      s.budget = Budget::Fraction(fraction);
    }
  }
  StepPlan plan;
  plan.Reserve(static_cast<int32_t>(reqs.size()));
  if (Status st = op->Plan(reqs.data(), static_cast<int32_t>(reqs.size()), &plan); !st.ok())
    return state.SkipWithError(st.ToString().c_str());
  HugeBuffer ws(plan.workspace_bytes() + 64);
  const std::vector<float> q = RandomQ(static_cast<size_t>(kLayers) * lens.size() * kHq * kD, 3);
  std::vector<float> out(lens.size() * kHq * kD);
  std::vector<LayerInput> in(static_cast<size_t>(kLayers) * lens.size());
  for (int l = 0; l < kLayers; ++l)
    for (size_t r = 0; r < lens.size(); ++r) {
      LayerInput& x = in[static_cast<size_t>(l) * lens.size() + r];
      x.q = q.data() + (static_cast<size_t>(l) * lens.size() + r) * kHq * kD;
      x.out = out.data() + r * kHq * kD;
      x.k = pool->k->get();
      x.v = pool->v->get();
      x.summaries = &pool->sums[r];
    }
  double wall_ns = 0, kernel_ns = 0, kept = 0, causal = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    (void)op->Plan(reqs.data(), static_cast<int32_t>(reqs.size()), &plan);
    for (int l = 0; l < kLayers; ++l) {
      LayerArgs a{&in[static_cast<size_t>(l) * lens.size()], 1.0, ws.get()};
      a.measure_kernel_time = true;
      LayerStats st;
      (void)op->RunLayer(plan, a, &Pool(threads), &st);
      kernel_ns += static_cast<double>(st.kernel_ns);
      kept += static_cast<double>(st.selection.kept_blocks);
      causal += static_cast<double>(st.selection.causal_blocks);
    }
    wall_ns += static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["overhead_frac"] = 1.0 - kernel_ns / (wall_ns * threads);
  state.counters["kept_frac"] = causal > 0 ? kept / causal : 0.0;
  state.counters["layers"] = kLayers;
}

std::string Pct(double f) {
  if (f >= 1.0) return "dense";
  char b[16];
  std::snprintf(b, sizeof b, "%g%%", f * 100);
  return b;
}

void RegisterAll(bool quick) {
  const std::string isa = IsaName(ActiveIsa());
  auto name = [&](const char* op, const DecodeArgs& a) {
    char b[240];
    const std::string scope =
        a.scope == SelectionScope::kPerKvHead ? "" : std::string("/scope:") + SelectionScopeName(a.scope);
    std::snprintf(b, sizeof b, "%s/isa:%s/kv:%s%s/L:%lld/budget:%s/score:%s%s/B:%d/threads:%d", op, isa.c_str(),
                  DTypeName(a.dtype), a.head_major ? "/layout:head_major" : "", static_cast<long long>(a.L),
                  Pct(a.fraction).c_str(), ScoringName(a.scoring), scope.c_str(), a.B, a.threads);
    return std::string(b);
  };
  auto add = [&](const DecodeArgs& a) {
    benchmark::RegisterBenchmark(name("decode", a).c_str(), RunAttention, a)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  const std::vector<int64_t> lens =
      quick ? std::vector<int64_t>{4096, 65536} : std::vector<int64_t>{4096, 16384, 65536, 131072};
  const std::vector<double> budgets = {1.0, 0.25, 0.10, 0.05, 0.02};
  // Main grid: every K/V type, length, budget and thread count (mean scoring, B = 64).
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32})
    for (int64_t L : lens)
      for (int threads : {1, 2})
        for (double f : budgets) add({dt, L, f, Scoring::kMean, 64, threads});
  // Scoring rule and block size at 64K fp16 on 2 threads.
  for (double f : budgets) {
    if (f >= 1.0) continue;
    add({DType::kF16, 65536, f, Scoring::kBound, 64, 2});
    add({DType::kF16, 65536, f, Scoring::kMean, 32, 2});
    add({DType::kF16, 65536, f, Scoring::kMean, 128, 2});
  }
  // q8_0 K/V (ggml's blocks), token-major: dense and 5%.
  for (int64_t L : lens)
    for (int threads : {1, 2})
      for (double f : {1.0, 0.05}) add({DType::kQ8_0, L, f, Scoring::kMean, 64, threads});
  // The head-major layout ([kv head][t][d], as ggml's flash attention reads it): f16 and q8_0 dense
  // at the peer's shapes, and 5% f16 at 64K.
  for (DType dt : {DType::kF16, DType::kQ8_0})
    for (int64_t L : {4096, 16384, 65536})
      for (int threads : {1, 2}) {
        DecodeArgs a{dt, L, 1.0, Scoring::kMean, 64, threads};
        a.head_major = true;
        add(a);
      }
  {
    DecodeArgs a{DType::kF16, 65536, 0.05, Scoring::kMean, 64, 2};
    a.head_major = true;
    add(a);
  }
  // One block list for every kv head (SelectionScope::kAllKvHeads): decode reads each kept block
  // once for all heads, contiguously on the token-major cache. f16 and q8_0 at 5%, and the other
  // sparse budgets for f16 on 2 threads, at 64K.
  for (DType dt : {DType::kF16, DType::kQ8_0})
    for (int threads : {1, 2}) {
      DecodeArgs a{dt, 65536, 0.05, Scoring::kMean, 64, threads};
      a.scope = SelectionScope::kAllKvHeads;
      add(a);
    }
  for (double f : budgets) {
    if (f >= 1.0 || f == 0.05) continue;
    DecodeArgs a{DType::kF16, 65536, f, Scoring::kMean, 64, 2};
    a.scope = SelectionScope::kAllKvHeads;
    add(a);
  }
#ifdef SPARSEBUDGET_BENCH_GGML
  // The peer: ggml_flash_attn_ext (llama.cpp's CPU attention) on the same K/V buffers.
  for (DType dt : {DType::kF16, DType::kQ8_0})
    for (bool hm : {true, false})
      for (int64_t L : {4096, 16384, 65536})
        for (int threads : {1, 2}) {
          char b[160];
          std::snprintf(b, sizeof b, "peer/ggml/kv:%s/layout:%s/L:%lld/threads:%d", DTypeName(dt),
                        hm ? "head_major" : "token_major", static_cast<long long>(L), threads);
          benchmark::RegisterBenchmark(b, RunGgml, dt, L, hm, threads)->UseRealTime()->Unit(benchmark::kMillisecond);
        }
#endif
  // Compute-only floors of the 64K token-major rows (K/V L2-resident): dense, and 5% for f16.
  for (DType dt : {DType::kF16, DType::kQ8_0})
    for (int threads : {1, 2})
      for (double f : {1.0, 0.05}) {
        if (f < 1.0 && dt != DType::kF16) continue;
        const DecodeArgs a{dt, 65536, f, Scoring::kMean, 64, threads};
        benchmark::RegisterBenchmark(name("compute", a).c_str(), RunComputeOnly, a)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
  // The 5% rows' kept blocks read without arithmetic (the access pattern's own floor).
  for (bool prefetch : {false, true})
    for (bool hm : {false, true})
      for (int threads : {1, 2}) {
        DecodeArgs a{DType::kF16, 65536, 0.05, Scoring::kMean, 64, threads};
        a.head_major = hm;
        benchmark::RegisterBenchmark(
            name(prefetch ? "kept_read/prefetch:next_block" : "kept_read/prefetch:none", a).c_str(), RunKeptRead, a,
            prefetch)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
  // Selection share and short-context fixed cost.
  for (Scoring s : {Scoring::kMean, Scoring::kBound}) {
    DecodeArgs a{DType::kF16, 65536, 0.05, s, 64, 1};
    benchmark::RegisterBenchmark(name("select", a).c_str(), RunSelect, a)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (int64_t L : {64, 4096}) add({DType::kF16, L, 1.0, Scoring::kMean, 64, 1});
  add({DType::kF16, 4096, 0.1, Scoring::kMean, 64, 1});
  // Dense baseline (OpenBLAS GEMM + softmax + GEMM, fp32 K/V).
  for (int64_t L : lens)
    for (int threads : {1, 2}) {
      char b[160];
      std::snprintf(b, sizeof b, "baseline_openblas/decode/kv:f32/L:%lld/threads:%d", static_cast<long long>(L),
                    threads);
      benchmark::RegisterBenchmark(b, RunBlasBaseline, L, threads, 1)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  // Prefill: causal chunks at the end of the context.
  for (auto [nq, L] : std::vector<std::pair<int32_t, int64_t>>{{512, 4096}, {2048, 8192}}) {
    if (quick && nq > 512) continue;
    for (double f : {1.0, 0.1}) {
      DecodeArgs a{DType::kF16, L, f, Scoring::kMean, 64, 2, nq};
      char b[200];
      std::snprintf(b, sizeof b, "prefill/isa:%s/kv:f16/nq:%d/L:%lld/budget:%s/threads:2", isa.c_str(), nq,
                    static_cast<long long>(L), Pct(f).c_str());
      benchmark::RegisterBenchmark(b, RunAttention, a)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
    char b[160];
    std::snprintf(b, sizeof b, "baseline_openblas/prefill/kv:f32/nq:%d/L:%lld/threads:2", nq,
                  static_cast<long long>(L));
    benchmark::RegisterBenchmark(b, RunBlasBaseline, L, 2, nq)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (double f : {0.0, 0.05})
    for (int threads : {1, 2}) {
      char b[200];
      std::snprintf(b, sizeof b, "engine_step/isa:%s/kv:f16_paged/requests:16/layers:32/budget:%s/threads:%d",
                    isa.c_str(), f > 0 ? Pct(f).c_str() : "predicted", threads);
      benchmark::RegisterBenchmark(b, RunEngineStep, f, threads)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  for (int threads : {1, 2})
    benchmark::RegisterBenchmark(
        ("batch/isa:" + isa + "/kv:f16/requests:16/threads:" + std::to_string(threads)).c_str(), RunBatch, threads)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick")
      quick = true;
    else
      args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  const bool avx512 = IsaSupported(Isa::kAvx512);
  for (int t : {1, 2}) {
    g_limits.bw[t] = sbbench::ReadBandwidthGBs(t, avx512);
    g_limits.fma[t] = sbbench::FmaPeakGFlops(t, avx512);
    g_limits.mix[t] = sbbench::ScoreMixGFlops(t, avx512);
  }
  benchmark::AddCustomContext("isa", IsaName(ActiveIsa()));
  for (int t : {1, 2}) {
    benchmark::AddCustomContext("read_bw_GBs_threads" + std::to_string(t), std::to_string(g_limits.bw[t]));
    benchmark::AddCustomContext("fma_peak_GFLOPs_threads" + std::to_string(t), std::to_string(g_limits.fma[t]));
    benchmark::AddCustomContext("score_mix_GFLOPs_threads" + std::to_string(t), std::to_string(g_limits.mix[t]));
  }
  std::fprintf(stderr,
               "measured limits: read %.1f GB/s (1 thr), %.1f GB/s (2 thr); FMA %.0f / %.0f GFLOP/s, fp16 score-step "
               "mix %.0f / %.0f GFLOP/s (%s)\n",
               g_limits.bw[1], g_limits.bw[2], g_limits.fma[1], g_limits.fma[2], g_limits.mix[1], g_limits.mix[2],
               avx512 ? "avx512" : "avx2");
  RegisterAll(quick);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
