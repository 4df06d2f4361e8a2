// Shared helpers of the reliability tests: guarded buffers (canaries on both sides, to prove a
// call wrote nothing outside its output) and a result type that covers C++ Status and C sb_status.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sparsebudget/status.hpp"

namespace sbrel {

// `n` elements of T with kGuard canary bytes before and after. data() is misaligned by nothing;
// the canaries are checked by intact().
template <typename T>
class Guarded {
 public:
  static constexpr size_t kGuard = 256;
  static constexpr unsigned char kCanary = 0xA5;
  explicit Guarded(size_t n, T fill = T()) : n_(n), raw_(kGuard * 2 + n * sizeof(T), kCanary) {
    for (size_t i = 0; i < n; ++i) std::memcpy(raw_.data() + kGuard + i * sizeof(T), &fill, sizeof(T));
  }
  T* data() { return reinterpret_cast<T*>(raw_.data() + kGuard); }
  const T* data() const { return reinterpret_cast<const T*>(raw_.data() + kGuard); }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return data()[i]; }
  bool intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (raw_[i] != kCanary || raw_[kGuard + n_ * sizeof(T) + i] != kCanary) return false;
    return true;
  }
  // Bytes of the payload, to check "unchanged on failure".
  std::vector<unsigned char> snapshot() const {
    return std::vector<unsigned char>(raw_.begin() + kGuard, raw_.begin() + static_cast<long>(kGuard + n_ * sizeof(T)));
  }

 private:
  size_t n_;
  std::vector<unsigned char> raw_;
};

// Environment knob: integer value or the default.
inline long EnvInt(const char* name, long def) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return def;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return end != v && x > 0 ? x : def;
}

}  // namespace sbrel
