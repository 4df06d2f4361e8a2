// Machine-limit probes for ratios measured in the same run.
#pragma once

namespace sbbench {
// Best of 3: streamed read of 1 GiB split over `threads` threads, GB/s.
double ReadBandwidthGBs(int threads, bool avx512);
// Reads `rows` rows of row_bytes, stride_bytes apart, touching every 64-byte line once (the read
// probe's loop, no arithmetic beyond the sum); returns the sum so the reads cannot be dropped.
// With `next` (rows of the same geometry), row r's lines there are prefetched into L2 while row r
// is read: the software prefetch the kernels do one block ahead, without their arithmetic.
float SumRows(const void* base, long rows, long stride_bytes, long row_bytes, bool avx512, const void* next = nullptr);
// fp32 FMA peak with independent accumulators per thread (16 AVX-512, 12 AVX2), GFLOP/s.
double FmaPeakGFlops(int threads, bool avx512);
// FMA rate of the fp16 score step's operand mix (fp16 K converted in registers, fp32 q loaded,
// the kernels' keys x 4 rows per step; L1-resident), GFLOP/s: the practical floor of fp32
// arithmetic on fp16 K/V on this machine, which the compute-only rows are compared with.
double ScoreMixGFlops(int threads, bool avx512);
}  // namespace sbbench
