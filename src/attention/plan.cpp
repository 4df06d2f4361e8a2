// Plan: validate a shape once, precompute the work split and the workspace size.
#include <cmath>
#include <cstdint>
#include <string>

#include "attention/internal.hpp"
#include "core/checked.hpp"
#include "kernels/kernels.hpp"

namespace sparsebudget {

const char* DTypeName(DType t) noexcept {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kQ8_0: return "q8_0";
  }
  return "unknown";
}

const char* ScoringName(Scoring s) noexcept {
  switch (s) {
    case Scoring::kMean: return "mean";
    case Scoring::kBound: return "bound";
  }
  return "unknown";
}

const char* SelectionScopeName(SelectionScope s) noexcept {
  switch (s) {
    case SelectionScope::kPerKvHead: return "per_kv_head";
    case SelectionScope::kAllKvHeads: return "all_kv_heads";
  }
  return "unknown";
}

size_t DTypeSize(DType t) noexcept {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kQ8_0: return 0;
  }
  return 0;
}

int64_t DTypeBytes(DType t, int64_t n) noexcept {
  if (n < 0) return -1;
  const auto dt = static_cast<int>(t);
  if (dt < 0 || dt > 3) return -1;
  if (t == DType::kQ8_0) {
    if (n % kQ8_0BlockValues != 0) return -1;
    // 34 bytes per 32 values: n near 2^63 still overflows, so the product is checked too.
    int64_t bytes;
    if (!detail::CheckedMul(n / kQ8_0BlockValues, static_cast<int64_t>(kQ8_0BlockBytes), &bytes)) return -1;
    return bytes;
  }
  int64_t bytes;
  if (!detail::CheckedMul(n, static_cast<int64_t>(DTypeSize(t)), &bytes)) return -1;
  return bytes;
}

void ToFloat32(const void* in, DType dtype, int64_t n, float* out) noexcept {
  if (n <= 0) return;
  int64_t whole = n;
  if (dtype == DType::kQ8_0) {
    whole = n - n % kQ8_0BlockValues;
    for (int64_t i = whole; i < n; ++i) out[i] = NAN;  // an incomplete block has no values
  }
  if (whole > 0) kernels::Kernels().to_f32(in, dtype, whole, out);
}

namespace detail {

namespace {
// Far above any model (the largest have 128 query heads); keeps row counts in int32.
constexpr int64_t kMaxHeads = 65536;
Status Bad(const std::string& m) { return Status(StatusCode::kInvalidArgument, m); }
std::string S(int64_t v) { return std::to_string(v); }

// Adds count * elem bytes rounded up to 64 to *total; false on overflow.
bool AddRegion(size_t* total, size_t* offset, uint64_t count, uint64_t elem) {
  uint64_t bytes;
  if (!CheckedMul<uint64_t>(count, elem, &bytes) || !CheckedAdd<uint64_t>(bytes, 63, &bytes)) return false;
  bytes = bytes / 64 * 64;
  *offset = *total;
  return CheckedAdd<size_t>(*total, bytes, total);
}
}  // namespace

bool ComputeLayout(const AttentionPlan& p, WorkspaceLayout* w) {
  size_t total = 0;
  const auto units = static_cast<uint64_t>(p.num_units);
  const auto nb = static_cast<uint64_t>(p.num_blocks);
  const auto dim = static_cast<uint64_t>(p.params.shape.head_dim);
  uint64_t units_nb = 0, units_dim = 0, partial_stride = 0, units_chunks = 0, partial_floats = 0;
  bool ok = CheckedMul(units, nb, &units_nb) && CheckedMul(units, dim, &units_dim) &&
            CheckedMul<uint64_t>(static_cast<uint64_t>(p.max_rows), dim + 2, &partial_stride) &&
            CheckedMul<uint64_t>(units, static_cast<uint64_t>(p.max_chunks), &units_chunks) &&
            CheckedMul(units_chunks, partial_stride, &partial_floats);
  ok = ok && AddRegion(&total, &w->sel_indices, units_nb, 4) && AddRegion(&total, &w->sel_counts, units, 4) &&
       AddRegion(&total, &w->scores, units_nb, 4) && AddRegion(&total, &w->order, units_nb, 4) &&
       AddRegion(&total, &w->qsum, units_dim, 4);
  w->partial_stride = static_cast<size_t>(partial_stride);
  if (p.max_chunks > 1) {
    ok = ok && AddRegion(&total, &w->partials, partial_floats, 4);
  } else {
    w->partials = total;
  }
  w->total = total;
  return ok;
}

}  // namespace detail

Status MakePlan(const AttentionParams& params, AttentionPlan* plan) {
  using detail::Bad;
  using detail::S;
  if (plan == nullptr) return Bad("plan is null");
  const AttentionShape& s = params.shape;
  if (s.num_q_heads < 1) return Bad("num_q_heads must be >= 1, got " + S(s.num_q_heads));
  if (s.num_kv_heads < 1) return Bad("num_kv_heads must be >= 1, got " + S(s.num_kv_heads));
  if (s.num_q_heads > detail::kMaxHeads)
    return Bad("num_q_heads must be <= " + S(detail::kMaxHeads) + ", got " + S(s.num_q_heads));
  if (s.num_q_heads % s.num_kv_heads != 0)
    return Bad("num_kv_heads (" + S(s.num_kv_heads) + ") must divide num_q_heads (" + S(s.num_q_heads) + ")");
  if (s.head_dim < 1 || s.head_dim > 4096) return Bad("head_dim must be in [1, 4096], got " + S(s.head_dim));
  if (s.block_size < 16 || s.block_size > kernels::kMaxBlock || (s.block_size & (s.block_size - 1)) != 0)
    return Bad("block_size must be a power of two in [16, 256], got " + S(s.block_size));
  if (s.num_queries < 0) return Bad("num_queries must be >= 0, got " + S(s.num_queries));
  if (s.context_length < 0) return Bad("context_length must be >= 0, got " + S(s.context_length));
  if (s.context_length < s.num_queries)
    return Bad("context_length (" + S(s.context_length) + ") must be >= num_queries (" + S(s.num_queries) + ")");
  if (s.context_length / s.block_size >= (int64_t{1} << 31) - 1)
    return Status(StatusCode::kOutOfRange,
                  "context_length " + S(s.context_length) + " has more blocks than 32-bit block indices hold");
  const auto dt = static_cast<int>(params.kv_dtype);
  if (dt < 0 || dt > 3) return Bad("kv_dtype is not a DType: " + S(dt));
  if (params.kv_dtype == DType::kQ8_0 && s.head_dim % kQ8_0BlockValues != 0)
    return Bad("head_dim must be a multiple of 32 for q8_0 K/V, got " + S(s.head_dim));
  const auto sc = static_cast<int>(params.scoring);
  if (sc < 0 || sc > 1) return Bad("scoring is not a Scoring: " + S(sc));
  const auto scope = static_cast<int>(params.selection_scope);
  if (scope < 0 || scope > 1) return Bad("selection_scope is not a SelectionScope: " + S(scope));
  if (!std::isfinite(params.scale)) return Bad("scale must be finite, got " + std::to_string(params.scale));
  if (Status st = ValidateBudget(params.budget); !st.ok()) return st;

  AttentionPlan p;
  p.params = params;
  p.scale = params.scale != 0.0f ? params.scale : 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  p.group = s.num_q_heads / s.num_kv_heads;
  p.empty = s.num_queries == 0;
  if (!p.empty) {
    const int64_t L = s.context_length;
    p.num_blocks = detail::CeilDiv(L, s.block_size);
    p.first_query_pos = L - s.num_queries;
    p.first_query_block = p.first_query_pos / s.block_size;
    p.num_query_blocks = (L - 1) / s.block_size - p.first_query_block + 1;
    p.num_units = p.num_query_blocks * s.num_kv_heads;
    const int64_t q_per_block = s.num_queries < s.block_size ? s.num_queries : s.block_size;
    p.max_rows = static_cast<int32_t>(q_per_block * p.group);
    // Split-K: few units (decode with few kv heads) are cut into chunks so that two or more
    // threads have work; the cut depends on the shape and the selection only, never on the
    // thread count, so results are bit-identical for every partition.
    const int64_t want_chunks = p.num_units >= 16 ? 1 : (32 + p.num_units - 1) / p.num_units;
    const int64_t possible = (p.num_blocks + detail::kMinChunkBlocks - 1) / detail::kMinChunkBlocks;
    p.max_chunks = want_chunks < possible ? want_chunks : possible;
    if (p.max_chunks < 1) p.max_chunks = 1;
    p.chunk_blocks = (p.num_blocks + p.max_chunks - 1) / p.max_chunks;
    detail::WorkspaceLayout w;
    if (!detail::ComputeLayout(p, &w))
      return Status(StatusCode::kOutOfRange, "workspace size overflows for context_length " + S(L));
    p.workspace_bytes = w.total;
  }
  *plan = p;
  return OkStatus();
}

namespace {

// A (tokens x heads x dim) view with the dim contiguous: rows must not overlap and the largest
// offset must fit. Either order of nesting is accepted (token-major or head-major).
Status CheckRows(const char* what, int64_t ntok, int64_t nhead, int64_t dim, int64_t ts, int64_t hs, DType dtype) {
  using detail::Bad;
  using detail::S;
  if (ts < 0 || hs < 0)
    return Bad(std::string(what) + " strides must be >= 0, got token_stride " + S(ts) + " head_stride " + S(hs));
  const bool many_tok = ntok > 1, many_head = nhead > 1;
  bool ok;
  if (many_tok && many_head) {
    // Products that overflow cannot be met by any stride: treat them as "does not fit".
    int64_t head_extent, tok_extent;
    const bool head_fits = detail::CheckedMul(hs, nhead, &head_extent);
    const bool tok_fits = detail::CheckedMul(ts, ntok, &tok_extent);
    ok = (hs >= dim && head_fits && ts >= head_extent) || (ts >= dim && tok_fits && hs >= tok_extent);
  } else if (many_tok) {
    ok = ts >= dim;
  } else if (many_head) {
    ok = hs >= dim;
  } else {
    ok = true;
  }
  if (!ok)
    return Bad(std::string(what) + " rows overlap: token_stride " + S(ts) + ", head_stride " + S(hs) + " for " +
               S(ntok) + " tokens x " + S(nhead) + " heads x head_dim " + S(dim));
  if (dtype == DType::kQ8_0 && (ts % kQ8_0BlockValues != 0 || hs % kQ8_0BlockValues != 0))
    return Bad(std::string(what) + " strides must be multiples of 32 values for q8_0, got token_stride " + S(ts) +
               " head_stride " + S(hs));
  // The kernels step by the strides in bytes even when one token or head exists (prefetch, block
  // addresses), so each stride must be representable in bytes on its own, not only the extent.
  if (DTypeBytes(dtype, ts) < 0 || DTypeBytes(dtype, hs) < 0)
    return Status(StatusCode::kOutOfRange, std::string(what) + " strides overflow in bytes (token_stride " + S(ts) +
                                               ", head_stride " + S(hs) + ")");
  int64_t a, c;
  if (!detail::CheckedExtent(ntok, ts, dim, &a) || !detail::CheckedExtent(nhead, hs, 0, &c) ||
      !detail::CheckedAdd(a, c, &c) || DTypeBytes(dtype, c) < 0)
    return Status(StatusCode::kOutOfRange,
                  std::string(what) + " byte extent overflows (token_stride " + S(ts) + ", head_stride " + S(hs) + ")");
  return OkStatus();
}

}  // namespace

Status ValidateViews(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv, const OutputView* out) {
  using detail::Bad;
  if (plan.empty) return OkStatus();
  if (q.data == nullptr) return Bad("q.data is null");
  if (out != nullptr && out->data == nullptr) return Bad("out.data is null");
  if (kv.k == nullptr) return Bad("kv.k is null");
  if (kv.v == nullptr) return Bad("kv.v is null");
  return detail::ValidateLayouts(plan, q, kv, out);
}

Status detail::ValidateQuery(const AttentionPlan& plan, const QueryView& q) {
  if (plan.empty) return OkStatus();
  if (q.data == nullptr) return detail::Bad("q.data is null");
  const AttentionShape& s = plan.params.shape;
  return CheckRows("q", s.num_queries, s.num_q_heads, s.head_dim, q.token_stride, q.head_stride, DType::kF32);
}

Status detail::ValidateLayouts(const AttentionPlan& plan, const QueryView& q, const KVCacheView& kv,
                               const OutputView* out) {
  using detail::Bad;
  using detail::S;
  if (plan.empty) return OkStatus();
  const AttentionShape& s = plan.params.shape;
  if (Status st = CheckRows("q", s.num_queries, s.num_q_heads, s.head_dim, q.token_stride, q.head_stride, DType::kF32);
      !st.ok())
    return st;
  if (out != nullptr) {
    if (Status st = CheckRows("out", s.num_queries, s.num_q_heads, s.head_dim, out->token_stride, out->head_stride,
                              DType::kF32);
        !st.ok())
      return st;
  }
  if (kv.dtype != plan.params.kv_dtype)
    return Bad(std::string("kv.dtype ") + DTypeName(kv.dtype) + " differs from the plan's " +
               DTypeName(plan.params.kv_dtype));
  return detail::CheckKvLayout(kv, 0, s.context_length, s.num_kv_heads, s.head_dim, s.block_size);
}

namespace detail {

Status CheckKvLayout(const KVCacheView& kv, int64_t t0, int64_t t1, int32_t heads, int32_t dim, int32_t block_size) {
  const DType elem = kv.dtype;
  if (kv.page_table == nullptr) return CheckRows("kv", t1, heads, dim, kv.token_stride, kv.head_stride, elem);
  if (kv.page_size < block_size || kv.page_size % block_size != 0)
    return Bad("kv.page_size must be a positive multiple of block_size (" + S(block_size) + "), got " +
               S(kv.page_size));
  if (kv.page_stride < 0) return Bad("kv.page_stride must be >= 0, got " + S(kv.page_stride));
  if (kv.dtype == DType::kQ8_0 && kv.page_stride % kQ8_0BlockValues != 0)
    return Bad("kv.page_stride must be a multiple of 32 values for q8_0, got " + S(kv.page_stride));
  const int64_t tok_in_page = t1 < kv.page_size ? t1 : kv.page_size;
  if (Status st = CheckRows("kv page", tok_in_page, heads, dim, kv.token_stride, kv.head_stride, elem); !st.ok())
    return st;
  // CheckRows proved this extent fits in int64 bytes.
  const int64_t page_extent =
      (tok_in_page - 1) * kv.token_stride + static_cast<int64_t>(heads - 1) * kv.head_stride + dim;
  const int64_t pages = CeilDiv(t1, kv.page_size);
  if (pages > 1 && kv.page_stride < page_extent)
    return Bad("kv.page_stride " + S(kv.page_stride) + " is smaller than one page's extent " + S(page_extent));
  if (kv.num_pages < 1)
    return Bad("kv.num_pages (pages in the pool the page table points into) must be >= 1 for a paged view, got " +
               S(kv.num_pages));
  // The pool's extent fits in int64 bytes, so every entry in [0, num_pages) addresses memory
  // inside the pool the caller declared.
  int64_t pool_extent;
  if (!CheckedMul<int64_t>(kv.num_pages - 1, kv.page_stride, &pool_extent) ||
      !CheckedAdd(pool_extent, page_extent, &pool_extent) || DTypeBytes(elem, pool_extent) < 0)
    return Bad("kv.num_pages " + S(kv.num_pages) + " x kv.page_stride " + S(kv.page_stride) + " overflows");
  for (int64_t i = t0 / kv.page_size; i < pages; ++i) {
    const int64_t pg = kv.page_table[i];
    if (pg < 0 || pg >= kv.num_pages)
      return Bad("kv.page_table[" + S(i) + "] = " + S(pg) +
                 " is outside the pool's [0, kv.num_pages = " + S(kv.num_pages) + ")");
  }
  return OkStatus();
}

}  // namespace detail

}  // namespace sparsebudget
