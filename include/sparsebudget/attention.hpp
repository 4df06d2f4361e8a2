/// @file
/// sparsebudget/attention.hpp - block-sparse attention on the CPU: summaries, selection, attend.
///
/// Data path for one request:  plan -> block summaries -> select blocks -> attend -> output.
/// The fused call SparseAttention() runs select + attend; Attend() alone runs over any block list.
///
/// Shapes. num_q_heads query heads share num_kv_heads key/value heads (GQA; num_kv_heads must
/// divide num_q_heads; group = num_q_heads / num_kv_heads). The request's context holds
/// context_length tokens (positions 0..L-1); the num_queries queries are the LAST num_queries
/// positions (1 = decode, more = a causal prefill chunk). Keys are grouped in blocks of block_size
/// tokens by absolute position: block j = positions [j*B, j*B + B). Queries are grouped the same
/// way into query blocks; a query block qb sees causal blocks 0..qb, and inside block qb the usual
/// causal mask applies. The last block may be partial.
///
/// Selection rule (exact). For each (kv head, query block) unit:
///   forced = blocks [0, sink) U [qb+1-max(local,1), qb]   (the own block is always kept)
///   score(j) for every causal block j, summed over the group's query heads and the unit's queries:
///     kMean : sum_rows q . mean_key(j)                             (MoBA)
///     kBound: sum_rows sum_d max(q_d * kmin_jd, q_d * kmax_jd)      (Quest's upper bound)
///   The `scored` best non-forced blocks are kept, ordered by score descending; equal scores go to
///   the lower block index; NaN scores rank below every number. The result lists the kept blocks
///   in ascending index order.
///   Top-p: estimated block mass p_j = softmax_j(scale * score(j) / rows) over all causal blocks
///   (rows = heads x queries summed); forced blocks count first, then scored blocks in rank order
///   until the cumulative mass reaches top_p; the total is then clamped to [min_blocks,
///   max_blocks].
///   Scope (AttentionParams::selection_scope). kPerKvHead: each unit ranks with its own kv head's
///   summaries and its group's queries, as above. kAllKvHeads: every kv head of a query block gets
///   the same list, selected as above with score(j) summed over all kv heads (each kv head's
///   summaries with its group's queries; rows = all q heads x queries). Decode then reads each
///   kept block's tokens once for all kv heads, contiguously on a token-major cache (64K, 5%,
///   fp16, 2 threads on a Xeon: 0.82 against 1.32 ms, docs/performance.md); the price is that a
///   kv head may lose a block only it would have ranked high (docs/kernel.md, "Selection scope",
///   measures it on the bundled models). Attend walks any decode selection whose units all hold
///   one list this way, with results equal bit for bit to the per-unit walk.
///
/// Numerics. Attention over the kept tokens is exact softmax(scale * q.k) v computed with an
/// online softmax in fp32 (fp16/bf16 keys and values are widened in registers, q8_0 blocks
/// dequantized exactly in registers; accumulation is always fp32; the reference is the
/// dequantized values). Results agree with a float64 reference within 64 * eps_f32 * sqrt(head_dim) *
/// max|out| for fp32 K/V (tests/test_attention.cpp states the fp16/bf16 bound). Results are
/// bit-identical across reruns and across thread partitions for a given ISA; they may differ in
/// the last bits between ISAs.
///
/// NaN/Inf. A NaN or Inf in a query row, or in a key/value a row attends to, can make that output
/// row NaN; rows that do not touch it are unaffected. Nothing crashes and nothing is read or
/// written outside the described buffers.
///
/// Cost, ownership, threads. MakePlan validates the shape and budget and allocates nothing.
/// Execute calls (Select, Attend, SparseAttention and their partitions) validate the views they
/// read (O(pages)) and a caller-made selection (O(kept blocks)) on every call (the C API checks
/// nothing more: it only translates), allocate nothing, spawn no thread, and write only their
/// outputs and the caller's workspace. For a batch and many layers, op.hpp validates once per
/// step. The caller owns every
/// buffer. Plans, summaries (const) and views may be shared by any number of threads; a
/// workspace may be used by one call at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparsebudget/budget.hpp"
#include "sparsebudget/status.hpp"

namespace sparsebudget {

class ThreadPool;

/// Element type of K and V (queries and outputs are always fp32). Numeric values are part of the
/// C ABI (sb_dtype).
///
/// kQ8_0 is ggml's q8_0 block format, as llama.cpp's 8-bit KV caches store it: each run of 32
/// consecutive values of a row is one 34-byte block, an IEEE fp16 scale d followed by 32 int8 q,
/// value = float(d) * q (exact in fp32). With kQ8_0, head_dim and every stride must be multiples
/// of 32 (strides still count values: s values are s / 32 * 34 bytes); blocks need no alignment.
enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8_0 = 3 };

/// Values per q8_0 block and its size in bytes (fp16 scale + 32 int8).
inline constexpr int32_t kQ8_0BlockValues = 32;
inline constexpr int32_t kQ8_0BlockBytes = 34;
/// Block scoring for selection (rule above): kMean needs key sums, kBound key min/max in the
/// BlockSummaries. Numeric values are part of the C ABI (sb_scoring).
enum class Scoring : int { kMean = 0, kBound = 1 };
/// Which units share one block list (rule above). Numeric values are part of the C ABI
/// (sb_selection_scope).
enum class SelectionScope : int { kPerKvHead = 0, kAllKvHeads = 1 };

/// "f32", "f16", "bf16", "q8_0"; "unknown" for other values.
const char* DTypeName(DType t) noexcept;
/// "mean", "bound"; "unknown" for other values.
const char* ScoringName(Scoring s) noexcept;
/// "per_kv_head", "all_kv_heads"; "unknown" for other values.
const char* SelectionScopeName(SelectionScope s) noexcept;
/// Bytes per element: 4 for kF32, 2 for kF16 and kBF16; 0 for kQ8_0, a block type (use
/// DTypeBytes).
size_t DTypeSize(DType t) noexcept;
/// Bytes of n consecutive values of type t: n * DTypeSize(t), or n / 32 * 34 for kQ8_0. -1 if n is
/// negative, not a multiple of 32 for kQ8_0, t is not a DType, or the product overflows. O(1).
int64_t DTypeBytes(DType t, int64_t n) noexcept;

/// Converts n elements of `dtype` (IEEE fp16, bf16 or fp32, any alignment) to fp32 with the
/// active ISA's conversion (exact: every fp16/bf16 value is representable in fp32). The one
/// conversion routine of the library; engines and tools may use it for weights or caches.
/// kQ8_0 (n values = n / 32 blocks) is dequantized exactly (fp16 scale * int8 fits fp32); there,
/// out[i] for i past the last complete block of 32 is set to NaN. O(n), allocates nothing,
/// thread-safe.
void ToFloat32(const void* in, DType dtype, int64_t n, float* out) noexcept;

/// Quantizes n fp32 values (n a positive multiple of 32) to n / 32 q8_0 blocks at `out` (n / 32 *
/// 34 bytes, any alignment), exactly as ggml's reference quantize_row_q8_0: per block d =
/// max|x| / 127, stored as fp16, q = round(x / d) computed as roundf(x * (1 / d)) with the fp32 d
/// (q = 0 for an all-zero block). Round trip: |ToFloat32(q8) - x| <= d/2 + |x| * 2^-11 (the fp16
/// rounding of d) while d is a normal fp16 (block max|x| >= 127 * 2^-14, about 7.8e-3); below
/// that the scale is an fp16 subnormal with an absolute step of 2^-24, adding up to 127 * 2^-25
/// (about 3.8e-6) to the bound, and a block with max|x| < about 3.8e-6 dequantizes to all zeros.
/// Errors (nothing written): kInvalidArgument for a null pointer, n not a positive multiple of
/// 32, or an input that is not finite or has |x| >= 65520 * 127 (about 8.32e6; its scale would
/// round to an fp16 infinity); the message names its index. O(n), allocates nothing,
/// thread-safe.
Status QuantizeQ8_0(const float* in, int64_t n, void* out);

/// K and V of one request. Element (kv head h, token t, dim d) of K lives at
///   contiguous: k + t*token_stride + h*head_stride + d
///   paged:      k + page_table[t / page_size]*page_stride + (t % page_size)*token_stride
///                 + h*head_stride + d
/// (in elements of dtype; for kQ8_0 in values, every stride a multiple of 32), and V likewise
/// with the same strides. head_dim is contiguous. In the paged layout page_size must be a
/// multiple of block_size, so a block never straddles pages.
struct KVCacheView {
  const void* k = nullptr;  ///< K (caller-owned; only read, never kept after a call)
  const void* v = nullptr;  ///< V, same layout and strides as K (BlockSummaries::Append ignores it)
  DType dtype = DType::kF32;  ///< element type of K and V; must equal the plan's kv_dtype
  int64_t token_stride = 0;   ///< elements between consecutive tokens (within a page), >= 0
  int64_t head_stride = 0;    ///< elements between consecutive kv heads, >= 0
  const int32_t* page_table = nullptr;  ///< null = contiguous
  int64_t page_size = 0;    ///< paged only: tokens per page, a positive multiple of block_size
  int64_t page_stride = 0;  ///< paged only: elements between consecutive pages
  /// Paged only: pages in the pool K and V point into, >= 1; every page_table entry must lie in
  /// [0, num_pages). The library cannot see the pool's size, so this is what makes an entry past
  /// the pool an error (kInvalidArgument naming it) instead of a read past the caller's memory.
  int64_t num_pages = 0;
};

/// Queries (fp32) and outputs (fp32): row (query i, q head h) at data + i*token_stride +
/// h*head_stride, head_dim contiguous. Query i sits at position context_length - num_queries + i.
struct QueryView {
  const float* data = nullptr;  ///< row (query 0, q head 0); caller-owned, only read
  int64_t token_stride = 0;     ///< floats between consecutive queries, >= 0
  int64_t head_stride = 0;      ///< floats between consecutive q heads, >= 0
};
/// Attention outputs (fp32), laid out like QueryView; rows must not overlap.
struct OutputView {
  float* data = nullptr;     ///< row (query 0, q head 0); caller-owned, written by the attend calls
  int64_t token_stride = 0;  ///< floats between consecutive queries, >= 0
  int64_t head_stride = 0;   ///< floats between consecutive q heads, >= 0
};

/// Head counts, sizes and positions of one call (see Shapes above); validated by MakePlan.
struct AttentionShape {
  int32_t num_q_heads = 0;   ///< query heads, >= 1
  int32_t num_kv_heads = 0;  ///< K/V heads, >= 1, must divide num_q_heads
  int32_t head_dim =
      0;  ///< in [1, 4096] (a multiple of 32 for kQ8_0); fast paths for multiples of 16
  int32_t block_size = 64;     ///< power of two in [16, 256]
  int64_t context_length = 0;  ///< L >= num_queries; L = 0 with num_queries = 0 is a no-op
  int32_t num_queries = 1;     ///< >= 0; 0 is a no-op
};

/// Everything MakePlan validates: shape, K/V element type, block scoring and budget.
struct AttentionParams {
  AttentionShape shape;               ///< heads, sizes and positions
  DType kv_dtype = DType::kF32;       ///< element type of K and V
  Scoring scoring = Scoring::kBound;  ///< block scoring used by selection
  float scale = 0.0f;                 ///< 0 = 1/sqrt(head_dim)
  Budget budget;                      ///< validated by MakePlan
  /// Units that share one block list (Scope in the selection rule above).
  SelectionScope selection_scope = SelectionScope::kPerKvHead;
};

/// Everything an execute call needs, validated and precomputed; a plain value (no heap).
struct AttentionPlan {
  AttentionParams params;  ///< the parameters, as given
  float scale = 0.0f;      ///< softmax scale in use: params.scale, or 1/sqrt(head_dim) if that is 0
  int32_t group = 0;       ///< q heads per kv head
  int64_t num_blocks = 0;  ///< causal blocks of the last query = ceil(L / B)
  int64_t first_query_pos = 0;    ///< L - num_queries
  int64_t first_query_block = 0;  ///< query block of the first query
  int64_t num_query_blocks = 0;   ///< query blocks touched by the queries
  int64_t num_units = 0;          ///< num_kv_heads * num_query_blocks
  int64_t chunk_blocks = 0;       ///< blocks per work item (split-K granularity)
  int64_t max_chunks = 0;         ///< ceil(num_blocks / chunk_blocks)
  int32_t max_rows = 0;           ///< rows (heads x queries) of the largest unit
  size_t workspace_bytes = 0;     ///< what Select/Attend/SparseAttention need
  bool empty = false;             ///< num_queries == 0: every call is a no-op
};

/// Validates params (every field; the message names the bad value) and fills `plan`.
/// Costs O(1), allocates nothing.
Status MakePlan(const AttentionParams& params, AttentionPlan* plan);

/// Checks that the views cover the plan's shape without overlapping rows and without byte counts
/// that overflow. MakePlan cannot do this because views change per call; execute calls run it.
/// O(1).
Status ValidateViews(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
                     const OutputView* out);

/// Chosen blocks: for unit u = kv_head * num_query_blocks + (qb - first_query_block),
/// indices[u * capacity .. + counts[u]) hold the kept block indices in ascending order;
/// 1 <= counts[u] <= causal blocks of u. capacity must be >= plan.num_blocks, and
/// num_units * capacity int32s must be addressable (else kOutOfRange); buffers 4-byte aligned.
struct BlockSelection {
  int32_t* indices = nullptr;  ///< num_units * capacity entries (caller-owned)
  int32_t* counts = nullptr;   ///< num_units entries: kept blocks per unit
  int64_t capacity = 0;        ///< entries per unit in `indices`
};
/// Read-only BlockSelection, the attend calls' input; indices == nullptr means dense.
struct ConstBlockSelection {
  const int32_t* indices = nullptr;  ///< as BlockSelection::indices
  const int32_t* counts = nullptr;   ///< as BlockSelection::counts
  int64_t capacity = 0;              ///< as BlockSelection::capacity
};

/// Counters of one selection call (or of one partition slice).
struct SelectionStats {
  int64_t units = 0;            ///< (kv head, query block) units selected
  int64_t units_clamped = 0;    ///< units whose request was clamped (or more than exists)
  int64_t kept_blocks = 0;      ///< sum over units
  int64_t causal_blocks = 0;    ///< sum over units of causal blocks (kept / causal = density)
  bool dense = false;           ///< every unit kept every causal block
  bool dense_fallback = false;  ///< SparseAttention ran dense because the budget kept >= 90%
};

/// Per-block key summaries of one request's K: running sum (for the mean key) and per-dimension
/// min/max (for the bound), fp32, laid out [kv head][block][head_dim]. Built once and updated
/// incrementally as tokens are appended; Append only reads the new tokens. The summaries own
/// their memory, sized for max_tokens at Create (the only allocation). Const methods are safe from
/// any number of threads; Append/Reset need exclusive access.
class BlockSummaries {
 public:
  /// Shape and contents; num_kv_heads, head_dim and block_size must match the plan's.
  struct Config {
    int32_t num_kv_heads = 0;  ///< >= 1
    int32_t head_dim = 0;      ///< in [1, 4096]
    int32_t block_size = 64;   ///< power of two in [16, 256]
    int64_t max_tokens = 0;    ///< capacity in tokens, >= 0; memory is sized for it at Create
    bool mean = true;          ///< keep sums for Scoring::kMean
    bool bound = true;         ///< keep min/max for Scoring::kBound
  };
  /// Validates `config` (mean, bound or both must be kept) and allocates zeroed storage of
  /// (mean + 2*bound) x num_kv_heads x ceil(max_tokens / block_size) x head_dim floats.
  /// Errors: kInvalidArgument naming the bad field, kOutOfRange if the storage is too large.
  static Expected<BlockSummaries> Create(const Config& config);

  /// Folds tokens [num_tokens(), new_num_tokens) of `kv` into the summaries. O(new tokens x
  /// heads x head_dim). Errors: dtype/view mismatch, new_num_tokens beyond max_tokens or below
  /// num_tokens().
  Status Append(const KVCacheView& kv, int64_t new_num_tokens);
  /// Forgets all tokens (num_tokens() becomes 0) and keeps the memory. O(1).
  void Reset() noexcept { num_tokens_ = 0; }

  /// The configuration given to Create.
  const Config& config() const noexcept { return config_; }
  /// Tokens folded in so far.
  int64_t num_tokens() const noexcept { return num_tokens_; }
  /// Blocks holding at least one token: ceil(num_tokens() / block_size).
  int64_t num_blocks() const noexcept;
  /// True if the summaries keep what scoring `s` needs (sums for kMean, min/max for kBound).
  bool has(Scoring s) const noexcept { return s == Scoring::kMean ? config_.mean : config_.bound; }
  /// @name Summaries of one block
  ///@{

  /// Pointers to block `block` of kv head `head` (head_dim floats each): the key sum, min and max.
  /// Null if that kind is not kept. Not bounds-checked: needs head < num_kv_heads and block <
  /// ceil(max_tokens / block_size); values mean something only below num_blocks(). Valid while
  /// the summaries live; Append updates the values in place.
  const float* key_sum(int32_t head, int64_t block) const noexcept;
  const float* key_min(int32_t head, int64_t block) const noexcept;
  const float* key_max(int32_t head, int64_t block) const noexcept;
  ///@}
  /// Tokens folded into `block` so far (B for full blocks).
  int64_t block_count(int64_t block) const noexcept;

  /// Storage (exposed so fuzzers and engines can account for memory).
  size_t bytes() const noexcept;

  BlockSummaries() = default;

 private:
  Config config_;
  int64_t num_tokens_ = 0;
  int64_t max_blocks_ = 0;
  /// One allocation; sum, min and max regions inside it (offsets, so copies stay valid).
  std::vector<float> storage_;
  size_t sum_offset_ = 0;
  size_t min_offset_ = 0;
  size_t max_offset_ = 0;
};

/// Selects blocks for every unit. Summaries must cover context_length tokens and keep the plan's
/// scoring kind. Workspace: plan.workspace_bytes (may be shared with Attend of the same call
/// sequence, not concurrently). O(units x blocks x rows x head_dim) reads of summaries plus a
/// partial sort; allocates nothing.
/// With `pool`, units (kAllKvHeads: query blocks, one selection each) are spread over its threads
/// (same result).
Status SelectBlocks(const AttentionPlan& plan, const QueryView& q, const BlockSummaries& summaries,
                    BlockSelection out, void* workspace, SelectionStats* stats = nullptr,
                    ThreadPool* pool = nullptr);
/// The same work split for an engine's own threads: units [U*ith/nth, U*(ith+1)/nth) (kAllKvHeads:
/// query blocks [Q*ith/nth, Q*(ith+1)/nth), each written to every kv head's unit). `stats`
/// receives this slice's counts (add the slices' counts; AND their `dense`). Spawns nothing.
Status SelectBlocksPartition(const AttentionPlan& plan, const QueryView& q,
                             const BlockSummaries& summaries, BlockSelection out, void* workspace,
                             int ith, int nth, SelectionStats* stats = nullptr);

/// Attention of every query over the blocks in `selection` (kept blocks per unit; the causal mask
/// is applied inside the own block). selection.indices == nullptr means dense (all causal blocks).
/// Single-threaded unless `pool` is given. Allocates nothing.
Status Attend(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
              ConstBlockSelection selection, OutputView out, void* workspace,
              ThreadPool* pool = nullptr);

/// The same work split for an engine's own threads. Call AttendPartition(ith, nth) on nth threads
/// (0 <= ith < nth), then, after all returned (a barrier), AttendMerge(ith, nth) on nth threads.
/// Same workspace for both phases. Results are bit-identical for every nth. Spawns nothing.
/// Each call checks what Attend checks (views O(pages), selection O(kept blocks)), so an error is
/// reported by every ith; the batched phases of op.hpp validate once per step instead.
Status AttendPartition(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
                       ConstBlockSelection selection, OutputView out, void* workspace, int ith,
                       int nth);
/// Phase two of the partitioned attend: combines the split-K partial results in `workspace` into
/// `out` for units [U*ith/nth, U*(ith+1)/nth). Needs neither q nor kv. Spawns nothing.
Status AttendMerge(const AttentionPlan& plan, ConstBlockSelection selection, OutputView out,
                   void* workspace, int ith, int nth);

/// True when the plan's budget is dense or a count budget (blocks or fraction) keeping >= 90%
/// of the last query block's causal blocks: SparseAttention then runs the dense path (a budget
/// keeping every block still reports its clamp through selection, which scores nothing). Engines driving SelectBlocksPartition / AttendPartition themselves use it to make the
/// same decision (pass an empty selection to Attend* for dense). O(1).
bool PlanRunsDense(const AttentionPlan& plan) noexcept;

/// Fused: select with the plan's budget, then attend. When a count budget (blocks or fraction)
/// keeps at least 90% of the causal blocks of the last query block, scoring would cost more than
/// the blocks it saves: the dense path runs instead (exact attention over every block) and
/// stats->dense_fallback reports it. A dense budget also skips selection. `selection_out` (optional) receives the chosen blocks; when null, the selection is
/// kept inside the workspace. `summaries` may be null only for a dense budget.
Status SparseAttention(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
                       const BlockSummaries* summaries, OutputView out, void* workspace,
                       ThreadPool* pool = nullptr, SelectionStats* stats = nullptr,
                       BlockSelection selection_out = {});

}  // namespace sparsebudget
