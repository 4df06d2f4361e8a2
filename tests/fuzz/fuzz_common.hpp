// Shared helpers of the libFuzzer targets: a byte reader and a loud failure that libFuzzer
// records as a crash (with the input saved as crash-<sha1>).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <unistd.h>

namespace sbfuzz {

[[noreturn]] inline void Die(const char* what, const std::string& detail) {
  std::fprintf(stderr, "FUZZ INVARIANT BROKEN: %s: %s\n", what, detail.c_str());
  std::abort();
}
#define SBFUZZ_CHECK(cond, detail)               \
  do {                                           \
    if (!(cond)) ::sbfuzz::Die(#cond, (detail)); \
  } while (0)

// Consumes little-endian integers from the front of the input; zeros when exhausted.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint64_t U(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(Byte()) << (8 * i);
    return v;
  }
  uint8_t Byte() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  int64_t Range(int64_t lo, int64_t hi) {  // inclusive, hi - lo < 2^32
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    return lo + static_cast<int64_t>(U(4) % span);
  }
  int64_t I64() { return static_cast<int64_t>(U(8)); }
  size_t left() const { return n_; }
  const uint8_t* rest() const { return p_; }

 private:
  const uint8_t* p_;
  size_t n_;
};

// Wrapping arithmetic for a fuzzer's own stride guesses (no UB on the fuzzer's side).
inline int64_t Mul(int64_t a, int64_t b) {
  int64_t r;
  __builtin_mul_overflow(a, b, &r);
  return r;
}
inline int64_t Add(int64_t a, int64_t b) {
  int64_t r;
  __builtin_add_overflow(a, b, &r);
  return r;
}

// Elements an (n x h x d) view reaches: (n-1)*ts + (h-1)*hs + d; -1 when absurd.
inline int64_t Extent(int64_t n, int64_t h, int64_t d, int64_t ts, int64_t hs) {
  if (n <= 0 || h <= 0) return 0;
  int64_t a, b, c;
  if (__builtin_mul_overflow(n - 1, ts, &a) || __builtin_mul_overflow(h - 1, hs, &b) ||
      __builtin_add_overflow(a, b, &c) || __builtin_add_overflow(c, d, &c))
    return -1;
  return c;
}

// A per-process scratch file (tmpfs when available) for readers that take a path.
inline std::string ScratchPath(const char* tag) {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/sbfuzz-" + tag + "-" + std::to_string(getpid());
}
inline void WriteFile(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) Die("fopen", path);
  if (size > 0 && std::fwrite(data, 1, size, f) != size) Die("fwrite", path);
  std::fclose(f);
}

}  // namespace sbfuzz
