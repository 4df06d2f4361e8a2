// Machine-limit probes for ratios measured in the same run.
#pragma once

namespace sbbench {
// Best of 3: streamed read of 1 GiB split over `threads` threads, GB/s.
double ReadBandwidthGBs(int threads, bool avx512);
// fp32 FMA peak with 16 independent accumulators per thread, GFLOP/s.
double FmaPeakGFlops(int threads, bool avx512);
}  // namespace sbbench
