// Fuzzes shape and parameter validation of the C API (sb_plan_create, sb_validate_views,
// sb_summaries_create) and of the C++ layer under it (MakePlan, ValidateViews): arbitrary
// params, strides, page tables and budgets give a status, never a crash or a UB report; the C
// and C++ answers agree; and when everything is accepted and small, the kernels run on buffers
// of exactly the documented extent (so ASan reports any read or write validation let through).
#include <cmath>
#include <cstddef>
#include <cstring>
#include <new>
#include <vector>

#include "fuzz/fuzz_common.hpp"
#include "sparsebudget/attention.hpp"
#include "sparsebudget/sparsebudget.h"

using namespace sparsebudget;

namespace {

using sbfuzz::Add;
using sbfuzz::Extent;
using sbfuzz::Mul;

// Mostly plausible values, sometimes the edges that break arithmetic.
int64_t Pick(sbfuzz::Bytes& in, int64_t lo, int64_t hi) {
  switch (in.Byte() % 16) {
    case 0: return 0;
    case 1: return -1;
    case 2: return INT64_MIN;
    case 3: return INT64_MAX;
    case 4: return INT32_MAX;
    case 5: return INT32_MIN;
    case 6: return int64_t{1} << in.Range(0, 62);
    case 7: return in.I64();
    default: return in.Range(lo, hi);
  }
}
int32_t Pick32(sbfuzz::Bytes& in, int64_t lo, int64_t hi) {
  const int64_t v = Pick(in, lo, hi);
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v)));
}
double PickReal(sbfuzz::Bytes& in, double lo, double hi) {
  switch (in.Byte() % 12) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: return -0.5;
    case 4: return 1e300;
    default: return lo + (hi - lo) * static_cast<double>(in.U(2)) / 65535.0;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sbfuzz::Bytes in(data, size);
  // The params live at the start of a zeroed 256-byte object, so any struct_size up to 256 is
  // honest about the memory behind it (a newer header's larger struct with zero extra fields).
  alignas(16) static unsigned char storage[256];
  std::memset(storage, 0, sizeof storage);
  sb_attention_params& p = *new (storage) sb_attention_params;
  sb_attention_params_init(&p);
  p.num_q_heads = Pick32(in, 1, 8);
  p.num_kv_heads = Pick32(in, 1, 4);
  p.head_dim = Pick32(in, 1, 70);
  p.block_size = Pick32(in, 8, 80);
  if (in.Byte() % 2) p.block_size = 16 << in.Range(0, 2);
  p.context_length = Pick(in, 0, 300);
  p.num_queries = Pick32(in, 0, 40);
  // C enums hold any int in C, but in C++ only the values of their bit range are defined
  // (sb_dtype 0..3, sb_scoring 0..1, sb_budget_mode 0..3), so the fuzzer stays inside it;
  // out-of-range values come from C in the bad-input matrix (capi_enum_callers.c).
  p.kv_dtype = static_cast<sb_dtype>(in.Range(0, 3));
  p.scoring = static_cast<sb_scoring>(in.Range(0, 1));
  p.scale = in.Byte() % 8 == 0 ? static_cast<float>(PickReal(in, -2, 2)) : 0.0f;
  p.budget.mode = static_cast<sb_budget_mode>(in.Range(0, 3));
  p.budget.sink_blocks = Pick32(in, 0, 3);
  p.budget.local_blocks = Pick32(in, 0, 3);
  p.budget.blocks = Pick(in, 0, 20);
  p.budget.fraction = PickReal(in, 0, 1);
  p.budget.top_p = PickReal(in, 0, 1);
  p.budget.min_blocks = in.Byte() % 4 == 0 ? Pick(in, 0, 10) : 0;
  p.budget.max_blocks = in.Byte() % 4 == 0 ? Pick(in, 0, 10) : 0;
  if (in.Byte() % 16 == 0) p.struct_size = static_cast<size_t>(in.Range(0, 256));
  // The embedded budget may claim more than its slot only inside the outer object.
  if (in.Byte() % 16 == 0)
    p.budget.struct_size =
        static_cast<size_t>(in.Range(0, 256 - static_cast<int64_t>(offsetof(sb_attention_params, budget))));
  if (in.Byte() % 32 == 0) storage[sizeof(sb_attention_params) + in.Range(0, 7)] = in.Byte();  // a "newer field" set

  // C API and C++ must agree on validity.
  sb_plan* plan = nullptr;
  const sb_status cst = sb_plan_create(&p, &plan);
  SBFUZZ_CHECK((cst == SB_OK) == (plan != nullptr), "plan pointer vs status");
  SBFUZZ_CHECK(cst == SB_OK || std::strlen(sb_last_error()) > 0, "error without a message");
  AttentionParams cp;
  cp.shape = {p.num_q_heads, p.num_kv_heads, p.head_dim, p.block_size, p.context_length, p.num_queries};
  cp.kv_dtype = static_cast<DType>(p.kv_dtype);
  cp.scoring = static_cast<Scoring>(p.scoring);
  cp.scale = p.scale;
  cp.budget.mode = static_cast<BudgetMode>(p.budget.mode);
  cp.budget.sink_blocks = p.budget.sink_blocks;
  cp.budget.local_blocks = p.budget.local_blocks;
  cp.budget.blocks = p.budget.blocks;
  cp.budget.fraction = p.budget.fraction;
  cp.budget.top_p = p.budget.top_p;
  cp.budget.min_blocks = p.budget.min_blocks;
  cp.budget.max_blocks = p.budget.max_blocks;
  AttentionPlan plan_cpp;
  const Status st = MakePlan(cp, &plan_cpp);
  const bool sizes_ok = p.struct_size == sizeof(sb_attention_params) && p.budget.struct_size == sizeof(sb_budget);
  if (sizes_ok) {
    SBFUZZ_CHECK(st.ok() == (cst == SB_OK), "C and C++ disagree: " + st.ToString() + " vs " + sb_last_error());
    // (The codes may differ when several fields are bad: the layers check in different orders.)
  }
  if (!st.ok() || cst != SB_OK) {
    sb_plan_destroy(plan);
    return 0;
  }
  sb_plan_info info;
  info.struct_size = sizeof info;
  SBFUZZ_CHECK(sb_plan_get_info(plan, &info) == SB_OK, "get_info");
  SBFUZZ_CHECK(info.workspace_bytes == plan_cpp.workspace_bytes, "workspace bytes differ");

  // Views: strides near the dense layout, or arbitrary.
  const int64_t H = p.num_q_heads, Hkv = p.num_kv_heads, D = p.head_dim, L = p.context_length, NQ = p.num_queries;
  QueryView q;
  q.head_stride = in.Byte() % 4 ? Add(D, in.Range(0, 3)) : Pick(in, 0, 100);
  q.token_stride = in.Byte() % 4 ? Add(Mul(q.head_stride, H), in.Range(0, 3)) : Pick(in, 0, 1000);
  OutputView o;
  o.head_stride = in.Byte() % 4 ? D : Pick(in, 0, 100);
  o.token_stride = in.Byte() % 4 ? Mul(o.head_stride, H) : Pick(in, 0, 1000);
  KVCacheView kv;
  kv.dtype = in.Byte() % 16 ? cp.kv_dtype : static_cast<DType>(in.Range(0, 3));  // sb_dtype bit range
  const bool head_major = in.Byte() % 2;
  const bool paged = in.Byte() % 3 == 0;
  const int64_t rows_in_layout = paged ? 0 : L;  // fixed below for paged
  std::vector<int32_t> table;
  if (paged) {
    kv.page_size = in.Byte() % 4 ? Mul(p.block_size, in.Range(1, 3)) : Pick(in, 0, 300);
    const int64_t per_page = kv.page_size > 0 ? kv.page_size : 1;
    const int64_t npages = L / per_page + (L % per_page != 0 ? 1 : 0);
    if (npages > 64) return sb_plan_destroy(plan), 0;
    table.resize(static_cast<size_t>(npages) + 1);
    for (auto& t : table) t = in.Byte() % 8 ? static_cast<int32_t>(in.Range(0, 4)) : Pick32(in, 0, 10);
    kv.page_table = table.data();
    // Mostly the pool the entries fit (5 pages), else any count: entries past it must be refused.
    kv.num_pages = in.Byte() % 4 ? 5 : Pick(in, -2, 12);
  }
  const int64_t tok = paged ? (kv.page_size < L ? kv.page_size : L) : rows_in_layout;
  if (head_major) {
    kv.token_stride = in.Byte() % 4 ? Add(D, in.Range(0, 2)) : Pick(in, 0, 100);
    kv.head_stride = in.Byte() % 4 ? Mul(kv.token_stride, tok > 0 ? tok : 1) : Pick(in, 0, 10000);
  } else {
    kv.head_stride = in.Byte() % 4 ? Add(D, in.Range(0, 2)) : Pick(in, 0, 100);
    kv.token_stride = in.Byte() % 4 ? Mul(kv.head_stride, Hkv) : Pick(in, 0, 1000);
  }
  if (paged) {
    const int64_t ext = Extent(tok, Hkv, D, kv.token_stride, kv.head_stride);
    kv.page_stride = in.Byte() % 4 ? ext : Pick(in, -100, 10000);
  }

  // Buffers of exactly the documented extent (only when small): K/V are not dereferenced during
  // validation, so use placeholders first.
  static float dummy[1];
  kv.k = dummy;
  kv.v = dummy;
  q.data = dummy;
  o.data = dummy;
  const Status vst = ValidateViews(plan_cpp, q, kv, &o);
  sb_query_view cq{sizeof(sb_query_view), q.data, q.token_stride, q.head_stride};
  sb_output_view co{sizeof(sb_output_view), o.data, o.token_stride, o.head_stride};
  sb_kv_view ckv{sizeof(sb_kv_view), kv.k,           kv.v,          static_cast<sb_dtype>(kv.dtype),
                 kv.token_stride,    kv.head_stride, kv.page_table, kv.page_size,
                 kv.page_stride,     kv.num_pages};
  const sb_status cvst = sb_validate_views(plan, &cq, &ckv, &co);
  // (An empty plan accepts any views in C++; the C API still converts the enums first.)
  SBFUZZ_CHECK(!vst.ok() || cvst == SB_OK || plan_cpp.empty || (paged && kv.page_stride < 0),
               "C++ accepts views the C API rejects: " + std::string(sb_last_error()));
  if (!vst.ok() || plan_cpp.empty) {
    sb_plan_destroy(plan);
    return 0;
  }

  // Everything was accepted: run on exact-size buffers.
  const int64_t qext = Extent(NQ, H, D, q.token_stride, q.head_stride);
  const int64_t oext = Extent(NQ, H, D, o.token_stride, o.head_stride);
  int64_t kvext = Extent(tok, Hkv, D, kv.token_stride, kv.head_stride);
  if (paged) {
    const int64_t npages = L / kv.page_size + (L % kv.page_size != 0 ? 1 : 0);
    int64_t hi = 0;
    for (int64_t i = 0; i < npages; ++i) {
      int64_t off;
      if (__builtin_mul_overflow(static_cast<int64_t>(table[static_cast<size_t>(i)]), kv.page_stride, &off) ||
          __builtin_add_overflow(off, kvext, &off)) {
        hi = -1;
        break;
      }
      SBFUZZ_CHECK(table[static_cast<size_t>(i)] >= 0 && table[static_cast<size_t>(i)] < kv.num_pages,
                   "ValidateViews accepted page_table[" + std::to_string(i) +
                       "] = " + std::to_string(table[static_cast<size_t>(i)]) + " outside num_pages " +
                       std::to_string(kv.num_pages));
      SBFUZZ_CHECK(off >= 0, "ValidateViews accepted page_table[" + std::to_string(i) +
                                 "] = " + std::to_string(table[static_cast<size_t>(i)]) + " with page_stride " +
                                 std::to_string(kv.page_stride) + ": a page before the buffer");
      if (off > hi) hi = off;
    }
    kvext = hi;
  }
  const int64_t kLimit = int64_t{1} << 20;
  if (qext < 0 || oext < 0 || kvext < 0 || qext > kLimit || oext > kLimit || kvext > kLimit) {
    sb_plan_destroy(plan);
    return 0;
  }
  std::vector<float> qb(static_cast<size_t>(qext), 0.25f), ob(static_cast<size_t>(oext));
  // (kvext is a whole number of q8_0 blocks once validated: strides and head_dim are multiples of 32.)
  const int64_t kvbytes = DTypeBytes(kv.dtype, kvext);
  SBFUZZ_CHECK(kvbytes >= 0, "validated K/V extent has no byte size");
  std::vector<unsigned char> kb(static_cast<size_t>(kvbytes), 0x3c), vb(kb.size(), 0x3c);
  q.data = qb.data();
  o.data = ob.data();
  kv.k = kb.data();
  kv.v = vb.data();
  std::vector<unsigned char> ws(plan_cpp.workspace_bytes + 1);
  SBFUZZ_CHECK(Attend(plan_cpp, q, kv, {}, o, ws.data()).ok(), "dense Attend failed after validation");
  auto sum = BlockSummaries::Create({p.num_kv_heads, p.head_dim, p.block_size, L, true, true});
  if (sum.ok() && sum->Append(kv, L).ok()) {
    std::vector<int32_t> idx(static_cast<size_t>(plan_cpp.num_units * plan_cpp.num_blocks)),
        cnt(static_cast<size_t>(plan_cpp.num_units));
    const Status sst = SparseAttention(plan_cpp, q, kv, &*sum, o, ws.data(), nullptr, nullptr,
                                       {idx.data(), cnt.data(), plan_cpp.num_blocks});
    SBFUZZ_CHECK(sst.ok(), "SparseAttention failed after validation: " + sst.ToString());
  }
  cq.data = q.data;
  co.data = o.data;
  ckv.k = kv.k;
  ckv.v = kv.v;
  if (cvst == SB_OK)
    SBFUZZ_CHECK(sb_attend(plan, &cq, &ckv, nullptr, &co, ws.data(), nullptr) == SB_OK, "sb_attend failed");
  sb_plan_destroy(plan);
  return 0;
}
