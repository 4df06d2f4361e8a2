// Fuzzes the .npy reader: any bytes give an array or a Status, never a crash, and never an
// allocation larger than the file could fill (libFuzzer's -malloc_limit_mb catches that).
#include <string>

#include "fuzz/fuzz_common.hpp"
#include "sparsebudget/calibration.hpp"

using namespace sparsebudget;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 20)) return 0;
  static const std::string path = sbfuzz::ScratchPath("npy");
  sbfuzz::WriteFile(path, data, size);
  auto a = ReadNpy(path);
  if (!a.ok()) {
    SBFUZZ_CHECK(a.status().message().find(path) != std::string::npos, "error does not name the file");
    return 0;
  }
  uint64_t count = 1;
  for (int64_t d : a->shape) {
    SBFUZZ_CHECK(d >= 0, "negative dimension");
    count *= static_cast<uint64_t>(d);
  }
  SBFUZZ_CHECK(count == a->data.size(), "shape and data disagree");
  SBFUZZ_CHECK(count * 2 <= size, "more values than the file holds");
  // Round trip through the writer (float32).
  static const std::string out = sbfuzz::ScratchPath("npy-out");
  if (!WriteNpy(out, a->shape, a->data).ok()) sbfuzz::Die("WriteNpy", "failed on a read array");
  auto b = ReadNpy(out);
  SBFUZZ_CHECK(b.ok() && b->shape == a->shape && b->data.size() == a->data.size(), "npy round trip");
  SBFUZZ_CHECK(a->data.empty() || std::memcmp(a->data.data(), b->data.data(), a->data.size() * sizeof(float)) == 0,
               "npy round trip values");
  return 0;
}
