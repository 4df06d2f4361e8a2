// CPU feature detection and the kernel dispatch table.
#include "sparsebudget/isa.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "kernels/kernels.hpp"

namespace sparsebudget {
namespace {

// Feature bits only (never the CPU model: virtual machines mask it). __builtin_cpu_supports also
// checks that the OS saves the wider register state (XGETBV) for the AVX families.
Isa Detect() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  // F16C from CPUID leaf 1 (ECX bit 29): clang has no __builtin_cpu_supports("f16c").
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  if (avx512 && avx2) return Isa::kAvx512;
  if (avx2) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

std::once_flag g_once;
Isa g_detected = Isa::kScalar;
std::atomic<int> g_cap{static_cast<int>(Isa::kAvx512)};

void Init() {
  std::call_once(g_once, [] {
    g_detected = Detect();
    // Read once under call_once, before any thread could call setenv through us.
    if (const char* env = std::getenv("SPARSEBUDGET_MAX_ISA")) {  // NOLINT(concurrency-mt-unsafe)
      Expected<Isa> cap = ParseIsa(env);
      // An unknown value must not silently run the fastest path: fall back to the scalar one.
      g_cap.store(static_cast<int>(cap.ok() ? *cap : Isa::kScalar));
    }
  });
}

}  // namespace

const char* IsaName(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

Expected<Isa> ParseIsa(const char* name) {
  if (name == nullptr) return Status(StatusCode::kInvalidArgument, "ISA name is null");
  if (std::strcmp(name, "scalar") == 0) return Isa::kScalar;
  if (std::strcmp(name, "avx2") == 0) return Isa::kAvx2;
  if (std::strcmp(name, "avx512") == 0) return Isa::kAvx512;
  return Status(StatusCode::kInvalidArgument,
                std::string("unknown ISA '") + name + "' (expected scalar, avx2 or avx512)");
}

Isa DetectedIsa() noexcept {
  Init();
  return g_detected;
}

Isa ActiveIsa() noexcept {
  Init();
  const int cap = g_cap.load(std::memory_order_relaxed);
  return static_cast<Isa>(cap < static_cast<int>(g_detected) ? cap : static_cast<int>(g_detected));
}

void SetMaxIsa(Isa cap) noexcept {
  Init();
  g_cap.store(static_cast<int>(cap), std::memory_order_relaxed);
}

bool IsaSupported(Isa isa) noexcept { return static_cast<int>(isa) <= static_cast<int>(DetectedIsa()); }

namespace kernels {

const KernelTable& KernelsFor(Isa isa) noexcept {
  switch (isa) {
    case Isa::kAvx512: return avx512::kTable;
    case Isa::kAvx2: return avx2::kTable;
    case Isa::kScalar: break;
  }
  return scalar::kTable;
}

const KernelTable& Kernels() noexcept { return KernelsFor(ActiveIsa()); }

}  // namespace kernels
}  // namespace sparsebudget
