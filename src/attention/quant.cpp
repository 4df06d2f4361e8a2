// q8_0 quantization (ggml's block format): the library's one fp32 -> q8_0 routine.
#include <cmath>
#include <cstring>
#include <string>

#include "sparsebudget/attention.hpp"

namespace sparsebudget {

namespace {

// fp32 -> IEEE binary16, round to nearest even (as F16C's vcvtps2ph with rounding mode 0 and
// ggml's GGML_FP32_TO_FP16). The input is finite and non-negative here (a scale); values above
// the fp16 range are rejected by the caller.
uint16_t HalfOfScale(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const int e = static_cast<int>((x >> 23) & 0xffu) - 127 + 15;
  uint32_t m = x & 0x7fffffu;
  if (e <= 0) {  // subnormal half (or zero)
    if (e < -10) return 0;
    m |= 0x800000u;
    const int shift = 14 - e;
    uint32_t hm = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (hm & 1u))) ++hm;  // may carry into the smallest normal
    return static_cast<uint16_t>(hm);
  }
  uint32_t hm = m >> 13, he = static_cast<uint32_t>(e);
  const uint32_t rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (hm & 1u))) {
    if (++hm == 0x400u) {
      hm = 0;
      ++he;
    }
  }
  if (he >= 31) return 0x7c00u;  // rounds to infinity: rejected by the caller before this
  return static_cast<uint16_t>((he << 10) | hm);
}

}  // namespace

Status QuantizeQ8_0(const float* in, int64_t n, void* out) {
  auto bad = [](const std::string& m) { return Status(StatusCode::kInvalidArgument, m); };
  if (in == nullptr || out == nullptr) return bad("QuantizeQ8_0: in or out is null");
  if (n <= 0 || n % kQ8_0BlockValues != 0)
    return bad("QuantizeQ8_0: n must be a positive multiple of 32, got " + std::to_string(n));
  // Largest |x| whose scale max|x| / 127 still rounds to a finite fp16 (65504 + half an ulp).
  constexpr float kMaxAbs = 65519.996f * 127.0f;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(in[i]) || std::fabs(in[i]) >= kMaxAbs)
      return bad("QuantizeQ8_0: in[" + std::to_string(i) + "] = " + std::to_string(in[i]) +
                 " is not finite or too large for a q8_0 fp16 scale");
  auto* dst = static_cast<unsigned char*>(out);
  for (int64_t b = 0; b < n / kQ8_0BlockValues; ++b) {
    const float* x = in + b * kQ8_0BlockValues;
    float amax = 0.0f;
    for (int j = 0; j < kQ8_0BlockValues; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    // A subnormal d (amax < ~3.7e-37) has 1/d = inf; its fp16 scale is 0, so all codes are 0.
    const float id = d != 0.0f && std::isfinite(1.0f / d) ? 1.0f / d : 0.0f;
    const uint16_t h = HalfOfScale(d);
    unsigned char* blk = dst + b * kQ8_0BlockBytes;
    std::memcpy(blk, &h, 2);
    for (int j = 0; j < kQ8_0BlockValues; ++j) {
      const auto q = static_cast<int8_t>(std::round(x[j] * id));  // half away from zero, as roundf
      std::memcpy(blk + 2 + j, &q, 1);
    }
  }
  return OkStatus();
}

}  // namespace sparsebudget
