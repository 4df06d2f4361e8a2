// Internal: the one place where products and sums of caller-given sizes, strides and capacities
// are formed (issue 12). Every such expression in the library goes through these helpers, which
// report overflow instead of executing it: a signed overflow is undefined behaviour, and a wrapped
// offset turns a bad size into an out-of-bounds read or write that later checks cannot see.
// docs/reliability.md ("Rules") lists this rule and the tests that hold it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sparsebudget::detail {

// a * b and a + b into *out; false (and *out unspecified) when the exact result does not fit T.
template <typename T>
[[nodiscard]] inline bool CheckedMul(T a, T b, T* out) noexcept {
  return !__builtin_mul_overflow(a, b, out);
}
template <typename T>
[[nodiscard]] inline bool CheckedAdd(T a, T b, T* out) noexcept {
  return !__builtin_add_overflow(a, b, out);
}

// Elements spanned by n >= 1 items `stride` apart, each `len` long: (n - 1) * stride + len.
[[nodiscard]] inline bool CheckedExtent(int64_t n, int64_t stride, int64_t len, int64_t* out) noexcept {
  int64_t a;
  return CheckedMul<int64_t>(n - 1, stride, &a) && CheckedAdd<int64_t>(a, len, out);
}

// Byte size of `count` elements of `elem` bytes that a pointer may address: count * elem <=
// PTRDIFF_MAX, so `base + i` for every i < count is defined pointer arithmetic.
[[nodiscard]] inline bool CheckedBytes(int64_t count, size_t elem, int64_t* bytes) noexcept {
  return count >= 0 && CheckedMul<int64_t>(count, static_cast<int64_t>(elem), bytes) && *bytes <= PTRDIFF_MAX;
}

// ceil(a / b) for a >= 0, b >= 1, without forming a + b - 1 (which overflows near INT64_MAX).
inline constexpr int64_t CeilDiv(int64_t a, int64_t b) noexcept { return a / b + (a % b != 0 ? 1 : 0); }

// a + b, saturated at INT64_MAX (a, b >= 0): counts that mean "more than exists".
inline constexpr int64_t SaturatingAdd(int64_t a, int64_t b) noexcept { return a > INT64_MAX - b ? INT64_MAX : a + b; }

}  // namespace sparsebudget::detail
