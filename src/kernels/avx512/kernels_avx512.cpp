// AVX-512 (F, BW, VL, DQ) build of the kernels (16 fp32 lanes). Compiled with those flags only;
// called only when CPUID reports them and the OS saves the ZMM state.
#include <immintrin.h>

#include <cstdint>

#include "kernels/kernels.hpp"

namespace sparsebudget::kernels::avx512 {
namespace {

using VF = __m512;
constexpr int kLanes = 16;
constexpr int kVecRegs = 32;  // vector registers (AccumulateV and key-step sizes)

inline __mmask16 FirstN(int n) { return static_cast<__mmask16>((1u << n) - 1u); }

inline VF Zero() { return _mm512_setzero_ps(); }
inline VF Set1(float x) { return _mm512_set1_ps(x); }
inline VF Load(const float* p) { return _mm512_loadu_ps(p); }
inline VF LoadH(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
// bf16 -> fp32 is a 16-bit shift into the high half (exact).
inline VF LoadB(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// Masked loads never touch the masked-off lanes' memory.
inline VF LoadN(const float* p, int n) { return _mm512_maskz_loadu_ps(FirstN(n), p); }
inline VF LoadHN(const uint16_t* p, int n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(FirstN(n), p)); }
inline VF LoadBN(const uint16_t* p, int n) {
  const __m256i h = _mm256_maskz_loadu_epi16(FirstN(n), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// 16 int8 -> fp32 (sign-extending load, exact conversion).
inline VF LoadQ8(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline float Half1(uint16_t h) { return _cvtsh_ss(h); }
inline void Store(float* p, VF x) { _mm512_storeu_ps(p, x); }
inline void StoreN(float* p, VF x, int n) { _mm512_mask_storeu_ps(p, FirstN(n), x); }
inline VF Fma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
// Keeps x in a register (the compiler would otherwise re-load it as a memory operand per use).
inline VF Keep(VF x) {
  asm("" : "+v"(x));
  return x;
}
inline VF Mul(VF a, VF b) { return _mm512_mul_ps(a, b); }
inline VF Add(VF a, VF b) { return _mm512_add_ps(a, b); }
inline VF Sub(VF a, VF b) { return _mm512_sub_ps(a, b); }
inline VF Max(VF a, VF b) { return _mm512_max_ps(a, b); }
inline VF Min(VF a, VF b) { return _mm512_min_ps(a, b); }
inline float ReduceAdd(VF x) {
  const __m256 h =
      _mm256_add_ps(_mm512_castps512_ps256(x), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Transpose-add: after two unpack rounds each 128-bit lane holds partial sums of a, b, c, d;
// the four lanes are then added.
inline void ReduceAdd4(VF a, VF b, VF c, VF d, float* out) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                                    _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  const __m256 h =
      _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}
// Sixteen sums at once: out[g * ld + e] = scale * (lanes of v[4 g + e] summed), g, e in 0..3
// (ScoreKeys: g a row, e a key, so each row gets its four keys as one 128-bit store). Per group
// the ReduceAdd4 transpose leaves each 128-bit lane with partial sums of its four vectors; two
// rounds of 128-bit lane shuffles then add the four lanes of all groups together: 49 shuffle/add
// uops for 16 sums against 52 for four ReduceAdd4, and the scale is one multiply, not sixteen.
constexpr bool kReduceAdd4x4 = true;
inline void ReduceAdd4x4(const VF* v, float scale, float* out, int64_t ld) {
  __m512 part[4];
  for (int g = 0; g < 4; ++g) {
    const VF* x = v + 4 * g;
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(x[0], x[1]), _mm512_unpackhi_ps(x[0], x[1]));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(x[2], x[3]), _mm512_unpackhi_ps(x[2], x[3]));
    part[g] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                            _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  }
  // Lanes [g0 l0+l1, g0 l2+l3, g1 l0+l1, g1 l2+l3], likewise for groups 2 and 3.
  const __m512 p01 = _mm512_add_ps(_mm512_shuffle_f32x4(part[0], part[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(part[0], part[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 p23 = _mm512_add_ps(_mm512_shuffle_f32x4(part[2], part[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(part[2], part[3], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 sums = _mm512_mul_ps(_mm512_add_ps(_mm512_shuffle_f32x4(p01, p23, _MM_SHUFFLE(2, 0, 2, 0)),
                                                  _mm512_shuffle_f32x4(p01, p23, _MM_SHUFFLE(3, 1, 3, 1))),
                                    _mm512_set1_ps(scale));
  _mm_storeu_ps(out, _mm512_castps512_ps128(sums));
  _mm_storeu_ps(out + ld, _mm512_extractf32x4_ps(sums, 1));
  _mm_storeu_ps(out + 2 * ld, _mm512_extractf32x4_ps(sums, 2));
  _mm_storeu_ps(out + 3 * ld, _mm512_extractf32x4_ps(sums, 3));
}
inline float ReduceMax(VF x) {
  const __m256 h =
      _mm256_max_ps(_mm512_castps512_ps256(x), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x): as in the AVX2 build (Cephes range reduction and polynomial), with the 2^n scaling
// done by vscalefps, which needs no integer trip and handles the exponent range exactly.
inline VF Exp(VF x) {
  const VF lo = Set1(-87.3365447504f);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(Set1(88.3762626647949f), x);
  x = _mm512_max_ps(lo, x);
  const VF n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, Set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  VF r = _mm512_fnmadd_ps(n, Set1(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, Set1(-2.12194440e-4f), r);
  VF p = Set1(1.9875691500e-4f);
  p = Fma(p, r, Set1(1.3981999507e-3f));
  p = Fma(p, r, Set1(8.3334519073e-3f));
  p = Fma(p, r, Set1(4.1665795894e-2f));
  p = Fma(p, r, Set1(1.6666665459e-1f));
  p = Fma(p, r, Set1(5.0000001201e-1f));
  p = Fma(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, Set1(1.0f)));
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(~underflow), p, n);
}

#include "kernels/kernels_impl.inc"

}  // namespace

const KernelTable kTable = {Isa::kAvx512, AttendBlocks, AttendHeads, DotRows, BoundRows, SummaryAdd, ToF32};

}  // namespace sparsebudget::kernels::avx512
