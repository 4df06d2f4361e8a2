// Internal helpers shared by the attention stages.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "sparsebudget/attention.hpp"

namespace sparsebudget::kernels {
struct KernelTable;
}

namespace sparsebudget::detail {

// Smallest split-K chunk, in blocks: below this the merge costs more than the parallelism gains.
inline constexpr int64_t kMinChunkBlocks = 8;

// Byte offsets of the workspace regions (each 64-byte aligned relative to the workspace start).
struct WorkspaceLayout {
  size_t sel_indices = 0;  // int32 [units][num_blocks]: the fused call's own selection
  size_t sel_counts = 0;   // int32 [units]
  size_t scores = 0;       // float [units][num_blocks]: block scores
  size_t order = 0;        // int32 [units][num_blocks]: candidate ranking
  size_t qsum = 0;         // float [units][head_dim]: summed query for mean scoring
  size_t partials = 0;     // float [units][max_chunks][partial_stride]: split-K states
  size_t partial_stride = 0;
  size_t total = 0;
};
bool ComputeLayout(const AttentionPlan& plan, WorkspaceLayout* layout);

// Validation shared by the C++ and C entry points (one place each; issue 12).
// K/V layout for reading tokens [t0, t1) (1 <= t1) of `heads` x `dim`: strides >= 0, rows do not
// overlap, every offset a read forms fits in int64 bytes, the page table entries of the pages
// covering [t0, t1) are >= 0 and their offsets fit. O(pages read).
Status CheckKvLayout(const KVCacheView& kv, int64_t t0, int64_t t1, int32_t heads, int32_t dim, int32_t block_size);
// A workspace for `plan`: non-null when the plan needs bytes, 4-byte aligned (it holds floats and
// int32s; the header promises nothing beyond 4 bytes is needed).
Status CheckWorkspace(const AttentionPlan& plan, const void* workspace);
// Selection buffers for `plan`: both non-null and 4-byte aligned, capacity >= num_blocks, and
// num_units x capacity entries addressable without overflow (unit u's row starts at u * capacity).
Status CheckSelectionBuffers(const AttentionPlan& plan, const int32_t* indices, const int32_t* counts,
                             int64_t capacity);
// A caller-made selection: the buffers as above, every count in [1, causal blocks of its unit]
// (0 blocks would leave a row with no key: 0/0) and indices ascending within them. O(kept blocks).
Status CheckSelection(const AttentionPlan& plan, const ConstBlockSelection& selection);

// Query rows of unit u: the unit's kv head and query block, and its queries' index range.
struct Unit {
  int32_t kv_head;
  int64_t query_block;
  int32_t q_begin;  // first query index (0-based within num_queries)
  int32_t q_end;
};

inline Unit UnitOf(const AttentionPlan& p, int64_t u) noexcept {
  Unit unit;
  unit.kv_head = static_cast<int32_t>(u / p.num_query_blocks);
  unit.query_block = p.first_query_block + u % p.num_query_blocks;
  const int64_t B = p.params.shape.block_size;
  const int64_t lo = unit.query_block * B > p.first_query_pos ? unit.query_block * B : p.first_query_pos;
  const int64_t hi_pos = (unit.query_block + 1) * B;
  const int64_t L = p.params.shape.context_length;
  const int64_t hi = hi_pos < L ? hi_pos : L;
  unit.q_begin = static_cast<int32_t>(lo - p.first_query_pos);
  unit.q_end = static_cast<int32_t>(hi - p.first_query_pos);
  return unit;
}

// Selections a SelectRun makes: one per unit, or one per query block with kAllKvHeads (written
// to every kv head's unit).
inline int64_t SelectionCount(const AttentionPlan& p) noexcept {
  return p.params.selection_scope == SelectionScope::kAllKvHeads ? p.num_query_blocks : p.num_units;
}

inline int64_t NowNs() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The execute bodies, with the kernel table chosen once by the caller (one ISA per call) and no
// validation (the callers validated). ith/nth as in the public partition calls.
// select.cpp: units [U*ith/nth, U*(ith+1)/nth) into `out`; adds the slice's counts to *st
// (st->dense must start true); with kernel_ns, adds the time spent per unit.
void SelectRun(const AttentionPlan& plan, const kernels::KernelTable& kt, const QueryView& q,
               const BlockSummaries& summaries, const BlockSelection& out, void* workspace, int ith, int nth,
               SelectionStats* st, int64_t* kernel_ns);
// attend.cpp: phase one (work items), then after a barrier phase two (split-K merge). lse may be
// null; kernel_ns (optional) receives the time spent in work items.
void AttendRun(const AttentionPlan& plan, const kernels::KernelTable& kt, const QueryView& q, const KVCacheView& kv,
               ConstBlockSelection sel, OutputView out, float* lse, void* ws, int ith, int nth, int64_t* kernel_ns);
void MergeRunAll(const AttentionPlan& plan, const kernels::KernelTable& kt, ConstBlockSelection sel, OutputView out,
                 float* lse, void* ws, int ith, int nth);
// SelectBlocks and Attend (validation, then the bodies on the caller's pool) on a given kernel
// table: the public calls pass kernels::Kernels(); SparseAttention reads the table once and runs
// both stages on it, so a concurrent SetMaxIsa cannot give one call two ISAs.
Status SelectBlocksOn(const kernels::KernelTable& kt, const AttentionPlan& plan, const QueryView& q,
                      const BlockSummaries& summaries, BlockSelection out, void* workspace, SelectionStats* stats,
                      ThreadPool* pool);
Status AttendOn(const kernels::KernelTable& kt, const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
                ConstBlockSelection selection, OutputView out, void* workspace, ThreadPool* pool);
// SparseAttention's rule: select then attend, dense (dense budget), or dense fallback (a count
// budget keeping >= 90% but not all of the blocks).
enum class DenseRule { kSelect, kDense, kFallback };
DenseRule DenseDecision(const AttentionPlan& plan) noexcept;
// Summaries usable by selection for this plan: same heads / head_dim / block, covering
// context_length tokens, keeping the plan's scoring kind. O(1).
Status CheckSummaries(const AttentionPlan& plan, const BlockSummaries& summaries);
// The query rows alone (what selection reads): non-null, not overlapping, extent fits.
Status ValidateQuery(const AttentionPlan& plan, const QueryView& q);
// Strides, dtype and page table of the views (ValidateViews without the data-pointer checks).
Status ValidateLayouts(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv, const OutputView* out);
// Stats of a dense run (every causal block of every unit).
void DenseStats(const AttentionPlan& plan, bool fallback, SelectionStats* stats) noexcept;

template <typename T>
inline T* At(void* base, size_t offset) noexcept {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

}  // namespace sparsebudget::detail
