// AVX2 + FMA + F16C build of the kernels (8 fp32 lanes). Compiled with -mavx2 -mfma -mf16c only;
// called only when CPUID reports those features and the OS saves the YMM state.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/kernels.hpp"

namespace sparsebudget::kernels::avx2 {
namespace {

using VF = __m256;
constexpr int kLanes = 8;
constexpr int kVecRegs = 16;  // vector registers (AccumulateV and key-step sizes)

// Lane mask with the first n (0..8) lanes set.
inline __m256i FirstN(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

inline VF Zero() { return _mm256_setzero_ps(); }
inline VF Set1(float x) { return _mm256_set1_ps(x); }
inline VF Load(const float* p) { return _mm256_loadu_ps(p); }
inline VF LoadH(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline VF LoadB(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline VF LoadN(const float* p, int n) { return _mm256_maskload_ps(p, FirstN(n)); }
// 16-bit partial loads: copy the n valid elements so nothing past the end is touched.
inline VF LoadHN(const uint16_t* p, int n) {
  uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(tmp, p, static_cast<size_t>(n) * sizeof(uint16_t));
  return LoadH(tmp);
}
inline VF LoadBN(const uint16_t* p, int n) {
  uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(tmp, p, static_cast<size_t>(n) * sizeof(uint16_t));
  return LoadB(tmp);
}
// 8 int8 -> fp32 (sign-extending load, exact conversion).
inline VF LoadQ8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline float Half1(uint16_t h) { return _cvtsh_ss(h); }
inline void Store(float* p, VF x) { _mm256_storeu_ps(p, x); }
inline void StoreN(float* p, VF x, int n) { _mm256_maskstore_ps(p, FirstN(n), x); }
inline VF Fma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
// Keeps x in a register (the compiler would otherwise re-load it as a memory operand per use).
inline VF Keep(VF x) {
  asm("" : "+x"(x));
  return x;
}
inline VF Mul(VF a, VF b) { return _mm256_mul_ps(a, b); }
inline VF Add(VF a, VF b) { return _mm256_add_ps(a, b); }
inline VF Sub(VF a, VF b) { return _mm256_sub_ps(a, b); }
inline VF Max(VF a, VF b) { return _mm256_max_ps(a, b); }
inline VF Min(VF a, VF b) { return _mm256_min_ps(a, b); }
inline float ReduceAdd(VF x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Transpose-add: after two unpack rounds each 128-bit half holds partial sums of a, b, c, d.
inline void ReduceAdd4(VF a, VF b, VF c, VF d, float* out) {
  const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
  const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
  const __m256 abcd = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(ab), _mm256_castps_pd(cd))),
                                    _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(ab), _mm256_castps_pd(cd))));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
}
// No shared-shuffle 16-sum reduction here (16 registers: KeysPerStep never pairs 4 keys with
// 4 rows), so the kernels' 4x4 score step is not compiled for this build.
constexpr bool kReduceAdd4x4 = false;
void ReduceAdd4x4(const VF* v, float scale, float* out, int64_t ld) = delete;
inline float ReduceMax(VF x) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x): x = n*ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact product), e^r from a
// degree-6 minimax polynomial (Cephes expf, ~1 ulp), 2^n added to the exponent bits. Inputs
// below -87.3 give 0 (so exp(-inf) = 0); NaN stays NaN (max/min keep their second operand).
inline VF Exp(VF x) {
  const VF hi = Set1(88.3762626647949f), lo = Set1(-87.3365447504f);
  const VF underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(hi, x);
  x = _mm256_max_ps(lo, x);
  const VF n =
      _mm256_round_ps(_mm256_mul_ps(x, Set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  VF r = _mm256_fnmadd_ps(n, Set1(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, Set1(-2.12194440e-4f), r);
  VF p = Set1(1.9875691500e-4f);
  p = Fma(p, r, Set1(1.3981999507e-3f));
  p = Fma(p, r, Set1(8.3334519073e-3f));
  p = Fma(p, r, Set1(4.1665795894e-2f));
  p = Fma(p, r, Set1(1.6666665459e-1f));
  p = Fma(p, r, Set1(5.0000001201e-1f));
  p = Fma(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, Set1(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const VF y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, y);
}

#include "kernels/kernels_impl.inc"

}  // namespace

const KernelTable kTable = {Isa::kAvx2, AttendBlocks, AttendHeads, DotRows, BoundRows, SummaryAdd, ToF32};

}  // namespace sparsebudget::kernels::avx2
