// Machine-limit probes measured in the same run as the kernels: DRAM read bandwidth and fp32 FMA
// peak. Compiled with AVX-512 flags (bench/CMakeLists.txt) and called only when the CPU has it;
// an AVX2 variant is used otherwise.
#include "probes.hpp"

#include <immintrin.h>

#include <atomic>
#include <chrono>
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

__attribute__((target("avx2,fma"))) float FmaLoopAvx2(long iters) {
  __m256 a[16];
  for (int j = 0; j < 16; ++j) a[j] = _mm256_set1_ps(1.0f + 1e-7f * static_cast<float>(j));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i)
    for (int j = 0; j < 16; ++j) a[j] = _mm256_fmadd_ps(a[j], m, c);
  for (int j = 1; j < 16; ++j) a[0] = _mm256_add_ps(a[0], a[j]);
  float out[8];
  _mm256_storeu_ps(out, a[0]);
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
  const double lanes = avx512 ? 16 : 8;
  return 2.0 * lanes * 16.0 * static_cast<double>(iters) * threads / best / 1e9;
}

}  // namespace sbbench
