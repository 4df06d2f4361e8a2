// Internal: the per-ISA kernel table. ISA translation units implement these with their own
// compile flags; core code calls them only through Kernels(), after CPUID said they can run.
#pragma once

#include <cstdint>

#include "sparsebudget/attention.hpp"
#include "sparsebudget/isa.hpp"

namespace sparsebudget::kernels {

inline constexpr int kMaxBlock = 256;
inline constexpr int kMaxHeadDim = 4096;

// Online-softmax state of the query rows that share a kv head and a block list (caller-owned
// arrays of `rows` entries). acc rows are unnormalised sums of p * v; the output is acc / l.
struct RowSet {
  int rows = 0;
  const float* const* q;
  const int64_t* pos;  // absolute position (causal mask: key position <= pos)
  float* const* acc;   // head_dim floats each
  float* m;            // running max of scaled scores
  float* l;            // running sum of exp(score - m)
};

// Where the K and V of one block start, in bytes; tokens follow at token_stride bytes.
struct BlockPtr {
  const char* k;
  const char* v;
};

// Bytes of `values` consecutive values (a multiple of 32 for q8_0: 34-byte blocks of 32).
// static: every translation unit (ISA ones included) gets its own copy, so no ISA-specific copy can
// be picked by the linker for code that runs on a CPU without that ISA.
static inline int64_t ValueBytes(DType dtype, int64_t values) noexcept {
  switch (dtype) {
    case DType::kF32: return values * 4;
    case DType::kQ8_0: return values / kQ8_0BlockValues * kQ8_0BlockBytes;
    default: return values * 2;
  }
}

static inline BlockPtr BlockAddress(const KVCacheView& kv, int32_t head, int64_t block, int32_t block_size) noexcept {
  const int64_t tok0 = block * block_size;
  int64_t off;
  if (kv.page_table == nullptr) {
    off = tok0 * kv.token_stride + head * kv.head_stride;
  } else {
    off = static_cast<int64_t>(kv.page_table[tok0 / kv.page_size]) * kv.page_stride +
          (tok0 % kv.page_size) * kv.token_stride + head * kv.head_stride;
  }
  const int64_t bytes = ValueBytes(kv.dtype, off);
  return {kv.k ? static_cast<const char*>(kv.k) + bytes : nullptr,
          kv.v ? static_cast<const char*>(kv.v) + bytes : nullptr};
}

struct AttendArgs {
  const KVCacheView* kv;
  int32_t head;           // kv head
  const int32_t* blocks;  // block indices to walk; null = blocks block_begin, block_begin+1, ...
  int64_t block_begin;
  int64_t num_blocks;
  int64_t prefetch_after = -1;  // block to prefetch while the last listed one runs (-1: none)
  int32_t block_size;
  int32_t head_dim;
  int64_t context_length;  // tokens that exist
  float scale;
};

struct KernelTable {
  Isa isa;
  // Updates the rows' state with every token of args.blocks (masked by position and by L).
  void (*attend_blocks)(RowSet* rows, const AttendArgs& args);
  // Decode over one block list shared by num_heads kv heads: updates sets[h] (the rows of kv head
  // args.head + h, at most 8 rows each) with args.blocks (or blocks [block_begin, block_begin +
  // num_blocks) when null); bit-identical to calling attend_blocks for each head, but reads each
  // block in token order across heads.
  void (*attend_heads)(RowSet* sets, int32_t num_heads, const AttendArgs& args);
  // scores[j] += dot(q, rows[j*ld ..]) for j < n (mean-key scoring with a summed query).
  void (*dot_rows)(const float* q, const float* rows, int64_t ld, int64_t n, int32_t dim, float* scores);
  // scores[j] += sum_d max(q_d*mn_jd, q_d*mx_jd) for j < n (Quest bound), for one query row.
  void (*bound_rows)(const float* q, const float* mn, const float* mx, int64_t ld, int64_t n, int32_t dim,
                     float* scores);
  // Folds one key (dtype elements) into sum/min/max (any of which may be null); `first` starts
  // a block.
  void (*summary_add)(const void* key, DType dtype, int32_t dim, float* sum, float* mn, float* mx, bool first);
  // out[i] = float(in[i]) for n elements of dtype.
  void (*to_f32)(const void* in, DType dtype, int64_t n, float* out);
};

const KernelTable& Kernels() noexcept;            // the active table (ActiveIsa())
const KernelTable& KernelsFor(Isa isa) noexcept;  // a specific table; isa must be supported

namespace scalar {
extern const KernelTable kTable;
}
namespace avx2 {
extern const KernelTable kTable;
}
namespace avx512 {
extern const KernelTable kTable;
}

}  // namespace sparsebudget::kernels
