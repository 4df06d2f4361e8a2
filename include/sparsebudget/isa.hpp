/// @file
/// sparsebudget/isa.hpp - which instruction set the kernels run, and how to cap it.
///
/// The kernels exist in three builds: a portable scalar one (always present), AVX2 (+FMA, F16C)
/// and AVX-512 (F, BW, VL, DQ). The best one the CPU supports is chosen once, on first use, from
/// CPUID feature bits (never from the CPU model). The environment variable
/// SPARSEBUDGET_MAX_ISA=scalar|avx2|avx512 caps the choice at start-up (an unrecognised value
/// caps it at scalar); SetMaxIsa caps it later.
/// All functions here are thread-safe.
#pragma once

#include "sparsebudget/status.hpp"

namespace sparsebudget {

/// A kernel build, ordered: each level needs the CPU features of the ones below it. kScalar:
/// portable C++; kAvx2: AVX2 + FMA + F16C; kAvx512: AVX-512 F/BW/VL/DQ. Values equal sb_isa.
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* IsaName(Isa isa) noexcept;  ///< "scalar", "avx2", "avx512"; "unknown" otherwise
/// Parses "scalar", "avx2", "avx512" (case-sensitive). Error names the bad text.
Expected<Isa> ParseIsa(const char* name);

/// The best ISA this CPU (and OS, for AVX state) supports, ignoring any cap.
Isa DetectedIsa() noexcept;
/// The ISA the kernels use now: min(DetectedIsa(), cap).
Isa ActiveIsa() noexcept;
/// Caps the ISA for all later kernel calls. Asking for more than the CPU has is not an error:
/// the active ISA is then the detected one. Calls already running finish on their old kernels.
void SetMaxIsa(Isa cap) noexcept;
/// True if kernels for `isa` can run on this CPU.
bool IsaSupported(Isa isa) noexcept;

}  // namespace sparsebudget
