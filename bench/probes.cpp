// Machine-limit probes measured in the same run as the kernels: DRAM read bandwidth and fp32 FMA
// peak. Compiled with AVX-512 flags (bench/CMakeLists.txt) and called only when the CPU has it;
// an AVX2 variant is used otherwise.
#include "probes.hpp"

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace sbbench {

namespace {

// Sums [begin, end) with 8 independent 512-bit accumulators: bandwidth-bound, never
// compute-bound.
__attribute__((target("avx512f"))) float SumAvx512(const float* p, size_t n) {
  __m512 a[8];
  for (auto& x : a) x = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 128 <= n; i += 128)
    for (int j = 0; j < 8; ++j) a[j] = _mm512_add_ps(a[j], _mm512_loadu_ps(p + i + 16 * j));
  for (int j = 1; j < 8; ++j) a[0] = _mm512_add_ps(a[0], a[j]);
  return _mm512_reduce_add_ps(a[0]);
}

__attribute__((target("avx512f"))) float SumRowsAvx512(const char* p, long rows, long stride, long bytes,
                                                       const char* next) {
  __m512 a[4];
  for (auto& x : a) x = _mm512_setzero_ps();
  for (long r = 0; r < rows; ++r, p += stride) {
    if (next)
      for (long o = 0; o < bytes; o += 64) __builtin_prefetch(next + r * stride + o, 0, 2);
    long o = 0;
    for (; o + 256 <= bytes; o += 256)
      for (int j = 0; j < 4; ++j) a[j] = _mm512_add_ps(a[j], _mm512_loadu_ps(p + o + 64 * j));
    for (; o < bytes; o += 64) {  // the row's last lines (masked: never past its end)
      const long n = bytes - o < 64 ? (bytes - o) / 4 : 16;
      a[0] = _mm512_add_ps(a[0], _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p + o));
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}

__attribute__((target("avx512f"))) float FmaLoopAvx512(long iters) {
  __m512 a[16];
  for (int j = 0; j < 16; ++j) a[j] = _mm512_set1_ps(1.0f + 1e-7f * static_cast<float>(j));
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i)
    for (int j = 0; j < 16; ++j) a[j] = _mm512_fmadd_ps(a[j], m, c);
  for (int j = 1; j < 16; ++j) a[0] = _mm512_add_ps(a[0], a[j]);
  return _mm512_reduce_add_ps(a[0]);
}

// 12 accumulators: with the two constants 14 of AVX2's 16 registers (16 spilled three of them to
// the stack, whose store-to-load chains halved the measured peak), and still more chains than
// FMA units x latency (2 x 4).
constexpr int kFmaChainsAvx2 = 12;
__attribute__((target("avx2,fma"))) float FmaLoopAvx2(long iters) {
  __m256 a[kFmaChainsAvx2];
  for (int j = 0; j < kFmaChainsAvx2; ++j) a[j] = _mm256_set1_ps(1.0f + 1e-7f * static_cast<float>(j));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i)
    for (int j = 0; j < kFmaChainsAvx2; ++j) a[j] = _mm256_fmadd_ps(a[j], m, c);
  for (int j = 1; j < kFmaChainsAvx2; ++j) a[0] = _mm256_add_ps(a[0], a[j]);
  float out[8];
  _mm256_storeu_ps(out, a[0]);
  return out[0];
}

// The fp16 score step's operand mix (ScoreKeys on an fp16 cache, 4 GQA rows): per vector step
// kKeys fp16 K vectors converted, 4 fp32 q vectors loaded, 4 x kKeys FMAs into as many sums;
// K and q L1-resident, d 128. kKeys is the kernels' own step (AVX-512 4, AVX2 3). The FMA rate
// this mix reaches is the practical floor of fp32 arithmetic on fp16 K/V, below the FMA peak.
constexpr int kMixDim = 128;
constexpr int kMixKeysAvx512 = 4, kMixKeysAvx2 = 3;  // KeysPerStep(4 rows) in those kernel builds
alignas(64) uint16_t g_mix_k[8][kMixDim];
alignas(64) float g_mix_q[4][kMixDim];

__attribute__((target("avx512f"))) float ScoreMixAvx512(long groups) {
  constexpr int kKeys = kMixKeysAvx512;
  __m512 tot = _mm512_setzero_ps();
  for (long g = 0; g < groups; ++g) {
    __m512 ac[kKeys][4];
    for (auto& row : ac)
      for (auto& x : row) x = _mm512_setzero_ps();
    const int base = static_cast<int>(g & 4);  // keys base..base+3 of 8: not hoistable
    for (int d = 0; d < kMixDim; d += 16) {
      __m512 k[kKeys];
      for (int j = 0; j < kKeys; ++j)
        k[j] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(&g_mix_k[base + j][d])));
      for (int r = 0; r < 4; ++r) {
        __m512 q = _mm512_loadu_ps(&g_mix_q[r][d]);
        asm("" : "+v"(q));  // one load per use, as the kernels' Keep(Load(...))
        for (int j = 0; j < kKeys; ++j) ac[j][r] = _mm512_fmadd_ps(q, k[j], ac[j][r]);
      }
    }
    for (auto& row : ac)
      for (auto& x : row) tot = _mm512_add_ps(tot, x);
  }
  return _mm512_reduce_add_ps(tot);
}

__attribute__((target("avx2,fma,f16c"))) float ScoreMixAvx2(long groups) {
  constexpr int kKeys = kMixKeysAvx2;
  __m256 tot = _mm256_setzero_ps();
  for (long g = 0; g < groups; ++g) {
    __m256 ac[kKeys][4];
    for (auto& row : ac)
      for (auto& x : row) x = _mm256_setzero_ps();
    const int base = static_cast<int>(g & 4);  // as in the AVX-512 loop
    for (int d = 0; d < kMixDim; d += 8) {
      __m256 k[kKeys];
      for (int j = 0; j < kKeys; ++j)
        k[j] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&g_mix_k[base + j][d])));
      for (int r = 0; r < 4; ++r) {
        __m256 q = _mm256_loadu_ps(&g_mix_q[r][d]);
        asm("" : "+x"(q));
        for (int j = 0; j < kKeys; ++j) ac[j][r] = _mm256_fmadd_ps(q, k[j], ac[j][r]);
      }
    }
    for (auto& row : ac)
      for (auto& x : row) tot = _mm256_add_ps(tot, x);
  }
  float out[8];
  _mm256_storeu_ps(out, tot);
  return out[0];
}

template <typename F>
double TimeThreads(int threads, F&& f) {
  std::vector<std::thread> ts;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  double start = 0;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load()) {
      }
      f(t);
    });
  while (ready.load() != threads) {
  }
  const auto t0 = std::chrono::steady_clock::now();
  go.store(true);
  for (auto& t : ts) t.join();
  start = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return start;
}

volatile float g_sink;

}  // namespace

double ReadBandwidthGBs(int threads, bool avx512) {
  // 1 GiB, far beyond the 32 MiB L3: every pass streams from DRAM.
  const size_t n = size_t{1} << 28;
  static std::vector<float> buf(n, 1.0f);
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const double s = TimeThreads(threads, [&](int t) {
      const size_t lo = n * static_cast<size_t>(t) / static_cast<size_t>(threads);
      const size_t hi = n * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
      float acc = 0;
      if (avx512) {
        acc = SumAvx512(buf.data() + lo, hi - lo);
      } else {
        for (size_t i = lo; i < hi; i += 16) acc += buf[i];  // one load per line
      }
      g_sink = acc;
    });
    if (s < best) best = s;
  }
  return static_cast<double>(n * sizeof(float)) / best / 1e9;
}

float SumRows(const void* base, long rows, long stride_bytes, long row_bytes, bool avx512, const void* next) {
  const char* p = static_cast<const char*>(base);
  const char* n = static_cast<const char*>(next);
  if (avx512) return SumRowsAvx512(p, rows, stride_bytes, row_bytes, n);
  float acc = 0;
  for (long r = 0; r < rows; ++r) {
    for (long o = 0; o < row_bytes; o += 64) {
      if (n) __builtin_prefetch(n + r * stride_bytes + o, 0, 2);
      acc += static_cast<float>(static_cast<unsigned char>(p[r * stride_bytes + o]));
    }
  }
  return acc;
}

double FmaPeakGFlops(int threads, bool avx512) {
  const long iters = 20'000'000;
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const double s = TimeThreads(threads, [&](int) { g_sink = avx512 ? FmaLoopAvx512(iters) : FmaLoopAvx2(iters); });
    if (s < best) best = s;
  }
  const double lanes = avx512 ? 16 : 8, chains = avx512 ? 16 : kFmaChainsAvx2;
  return 2.0 * lanes * chains * static_cast<double>(iters) * threads / best / 1e9;
}

double ScoreMixGFlops(int threads, bool avx512) {
  for (int j = 0; j < 8; ++j)
    for (int d = 0; d < kMixDim; ++d) g_mix_k[j][d] = 0x3c00;  // fp16 1.0
  for (auto& row : g_mix_q)
    for (float& x : row) x = 1e-6f;
  const long groups = 2'000'000;
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const double s =
        TimeThreads(threads, [&](int) { g_sink = avx512 ? ScoreMixAvx512(groups) : ScoreMixAvx2(groups); });
    if (s < best) best = s;
  }
  // FMAs per group: 4 rows x keys x head_dim values, 2 FLOP each.
  const double keys = avx512 ? kMixKeysAvx512 : kMixKeysAvx2;
  return 2.0 * 4.0 * keys * kMixDim * static_cast<double>(groups) * threads / best / 1e9;
}

}  // namespace sbbench
