// Scalar build of the kernels: portable C++, no ISA flags. The fallback on every CPU and the
// path forced by SPARSEBUDGET_MAX_ISA=scalar.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/kernels.hpp"

namespace sparsebudget::kernels::scalar {
namespace {

using VF = float;
constexpr int kLanes = 1;
constexpr int kVecRegs = 16;  // vector registers (AccumulateV and key-step sizes)

// IEEE half -> float, exact for every input (subnormals, inf, NaN).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float BF16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline VF Zero() { return 0.0f; }
inline VF Set1(float x) { return x; }
inline VF Load(const float* p) { return *p; }
inline VF LoadH(const uint16_t* p) { return HalfToFloat(*p); }
inline VF LoadB(const uint16_t* p) { return BF16ToFloat(*p); }
inline VF LoadN(const float* p, int n) { return n > 0 ? *p : 0.0f; }
inline VF LoadHN(const uint16_t* p, int n) { return n > 0 ? HalfToFloat(*p) : 0.0f; }
inline VF LoadBN(const uint16_t* p, int n) { return n > 0 ? BF16ToFloat(*p) : 0.0f; }
inline VF LoadQ8(const int8_t* p) { return static_cast<float>(*p); }
inline float Half1(uint16_t h) { return HalfToFloat(h); }
inline void Store(float* p, VF x) { *p = x; }
inline void StoreN(float* p, VF x, int n) {
  if (n > 0) *p = x;
}
inline VF Fma(VF a, VF b, VF c) { return a * b + c; }
inline VF Keep(VF x) { return x; }
inline VF Mul(VF a, VF b) { return a * b; }
inline VF Add(VF a, VF b) { return a + b; }
inline VF Sub(VF a, VF b) { return a - b; }
inline VF Max(VF a, VF b) { return a > b ? a : b; }
inline VF Min(VF a, VF b) { return a < b ? a : b; }
inline float ReduceAdd(VF x) { return x; }
inline void ReduceAdd4(VF a, VF b, VF c, VF d, float* out) {
  out[0] = a;
  out[1] = b;
  out[2] = c;
  out[3] = d;
}
// No shared-shuffle 16-sum reduction here (16 registers: KeysPerStep never pairs 4 keys with
// 4 rows), so the kernels' 4x4 score step is not compiled for this build.
constexpr bool kReduceAdd4x4 = false;
void ReduceAdd4x4(const VF* v, float scale, float* out, int64_t ld) = delete;
inline float ReduceMax(VF x) { return x; }
inline VF Exp(VF x) { return std::exp(x); }

#include "kernels/kernels_impl.inc"

}  // namespace

const KernelTable kTable = {Isa::kScalar, AttendBlocks, AttendHeads, DotRows, BoundRows, SummaryAdd, ToF32};

}  // namespace sparsebudget::kernels::scalar
