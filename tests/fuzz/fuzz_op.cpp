// Fuzzes the engine API (sb_op_create / sb_op_plan / sb_op_run_layer / the phases /
// sb_merge_states, and AttentionOp::Create / Plan under them): arbitrary configurations, batches
// of step requests (budgets, strides, page tables, struct sizes) and layer arguments give a
// status, never a crash or a UB report; the C and C++ layers agree on validity; and when a small
// batch is accepted, one layer runs on buffers of exactly the documented extent (so ASan reports
// any access validation let through), the phases on 1..4 "threads" give the bits of
// sb_op_run_layer, and every output row is finite.
#include <cmath>
#include <cstddef>
#include <cstring>
#include <new>
#include <vector>

#include "fuzz/fuzz_common.hpp"
#include "sparsebudget/op.hpp"
#include "sparsebudget/sparsebudget.h"

using namespace sparsebudget;

namespace {

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
    case 5: return int64_t{1} << in.Range(0, 62);
    case 6: return in.I64();
    default: return in.Range(lo, hi);
  }
}
int32_t Pick32(sbfuzz::Bytes& in, int64_t lo, int64_t hi) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(Pick(in, lo, hi))));
}
double PickReal(sbfuzz::Bytes& in, double lo, double hi) {
  switch (in.Byte() % 16) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -1.0;
    case 3: return 1e300;
    case 4: return 0.0;
    default: return lo + (hi - lo) * static_cast<double>(in.U(2)) / 65535.0;
  }
}

constexpr int kMaxRequests = 3;
constexpr int64_t kLimit = int64_t{1} << 18;  // elements per buffer when executing

struct RequestBuffers {
  std::vector<float> q, out, out2, lse, lse2;
  std::vector<unsigned char> k, v;
  std::vector<int32_t> table;
  sb_summaries* summaries = nullptr;
};

std::string Describe(const sb_step_request& s, const sb_op_config& oc) {
  std::string d = "L=" + std::to_string(s.context_length) + " nq=" + std::to_string(s.num_queries) +
                  " op_dtype=" + std::to_string(oc.kv_dtype) + " kv_dtype=" + std::to_string(s.kv.dtype) +
                  " D=" + std::to_string(oc.head_dim) + " Hkv=" + std::to_string(oc.num_kv_heads) +
                  " B=" + std::to_string(oc.block_size) + " ts=" + std::to_string(s.kv.token_stride) +
                  " hs=" + std::to_string(s.kv.head_stride) + " page_size=" + std::to_string(s.kv.page_size) +
                  " page_stride=" + std::to_string(s.kv.page_stride) + " num_pages=" + std::to_string(s.kv.num_pages) +
                  " budget_mode=" + std::to_string(s.budget.mode);
  if (s.kv.page_table != nullptr && s.kv.page_size > 0 && s.context_length > 0) {
    d += " table=";
    const int64_t np = s.context_length / s.kv.page_size + (s.context_length % s.kv.page_size != 0);
    for (int64_t i = 0; i < np && i < 8; ++i) d += std::to_string(s.kv.page_table[i]) + ",";
  }
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sbfuzz::Bytes in(data, size);
  sb_op_config oc;
  sb_op_config_init(&oc);
  oc.num_q_heads = Pick32(in, 1, 4);
  oc.num_kv_heads = Pick32(in, 1, 2);
  oc.head_dim = in.Byte() % 4 == 0 ? 32 * static_cast<int32_t>(in.Range(1, 2)) : Pick32(in, 1, 40);
  oc.block_size = in.Byte() % 4 ? 16 << in.Range(0, 2) : Pick32(in, 0, 300);
  // Enums stay inside their bit range in C++ (out-of-range values come from C in the matrix).
  oc.kv_dtype = static_cast<sb_dtype>(in.Range(0, 3));
  oc.scoring = static_cast<sb_scoring>(in.Range(0, 1));
  oc.scale = in.Byte() % 8 == 0 ? static_cast<float>(PickReal(in, -2, 2)) : 0.0f;
  if (in.Byte() % 32 == 0) oc.struct_size = static_cast<size_t>(in.Range(0, sizeof(sb_op_config)));

  sb_op* op = nullptr;
  const sb_status ost = sb_op_create(&oc, &op);
  SBFUZZ_CHECK((ost == SB_OK) == (op != nullptr), "op pointer vs status");
  SBFUZZ_CHECK(ost == SB_OK || std::strlen(sb_last_error()) > 0, "error without a message");
  AttentionOpConfig cc;
  cc.num_q_heads = oc.num_q_heads;
  cc.num_kv_heads = oc.num_kv_heads;
  cc.head_dim = oc.head_dim;
  cc.block_size = oc.block_size;
  cc.kv_dtype = static_cast<DType>(oc.kv_dtype);
  cc.scoring = static_cast<Scoring>(oc.scoring);
  cc.scale = oc.scale;
  auto cop = AttentionOp::Create(cc);
  if (oc.struct_size == sizeof(sb_op_config))
    SBFUZZ_CHECK(cop.ok() == (ost == SB_OK), "C and C++ disagree on the config: " + cop.status().ToString());
  if (ost != SB_OK || !cop.ok()) {
    sb_op_destroy(op);
    return 0;
  }
  const int64_t H = oc.num_q_heads, Hkv = oc.num_kv_heads, D = oc.head_dim;

  // A batch of up to kMaxRequests requests.
  // Counts beyond the array only where the library must refuse them before reading (< 0 or
  // above SB_MAX_STEP_REQUESTS).
  int32_t n = static_cast<int32_t>(in.Byte() % 8 == 0 ? Pick32(in, -2, 5) : in.Range(0, kMaxRequests));
  if (n > kMaxRequests && n <= SB_MAX_STEP_REQUESTS) n = kMaxRequests;
  const int32_t slots = n > 0 && n <= kMaxRequests ? n : 1;
  sb_step_request req[kMaxRequests];
  RequestBuffers buf[kMaxRequests];
  bool honest_sizes = true;
  for (int32_t r = 0; r < slots; ++r) {
    sb_step_request& s = req[r];
    sb_step_request_init(&s);
    const int64_t L = Pick(in, 0, 200);
    s.context_length = L;
    s.num_queries = in.Byte() % 4 ? static_cast<int32_t>(in.Range(0, 3)) : Pick32(in, 0, 300);
    s.budget.mode = static_cast<sb_budget_mode>(in.Range(0, 3));
    s.budget.sink_blocks = Pick32(in, 0, 2);
    s.budget.local_blocks = Pick32(in, 0, 2);
    s.budget.blocks = Pick(in, 0, 8);
    s.budget.fraction = PickReal(in, 0, 1);
    s.budget.top_p = PickReal(in, 0, 1);
    s.kv.dtype = in.Byte() % 16 ? oc.kv_dtype : static_cast<sb_dtype>(in.Range(0, 3));
    const bool head_major = in.Byte() % 2;
    const bool paged = in.Byte() % 3 == 0;
    int64_t tok = L;
    if (paged) {
      s.kv.page_size = in.Byte() % 4 ? Mul(oc.block_size, in.Range(1, 3)) : Pick(in, 0, 300);
      const int64_t per_page = s.kv.page_size > 0 ? s.kv.page_size : 1;
      // (The table must cover the pages the request claims: the caller's contract.)
      const int64_t npages = L > 0 ? L / per_page + (L % per_page != 0) : 0;
      if (npages > 64) {
        sb_op_destroy(op);
        return 0;
      }
      buf[r].table.resize(static_cast<size_t>(npages) + 1);
      for (auto& t : buf[r].table) t = in.Byte() % 8 ? static_cast<int32_t>(in.Range(0, 3)) : Pick32(in, 0, 10);
      s.kv.page_table = buf[r].table.data();
      // Mostly the pool the entries fit (4 pages), else any count: entries past it must be refused.
      s.kv.num_pages = in.Byte() % 4 ? 4 : Pick(in, -2, 12);
      tok = s.kv.page_size < L ? s.kv.page_size : L;
    }
    if (head_major) {
      s.kv.token_stride = in.Byte() % 4 ? D + in.Range(0, 2) : Pick(in, 0, 100);
      s.kv.head_stride = in.Byte() % 4 ? Mul(s.kv.token_stride, tok > 0 ? tok : 1) : Pick(in, 0, 10000);
    } else {
      s.kv.head_stride = in.Byte() % 4 ? D + in.Range(0, 2) : Pick(in, 0, 100);
      s.kv.token_stride = in.Byte() % 4 ? Mul(s.kv.head_stride, Hkv) : Pick(in, 0, 1000);
    }
    if (paged)
      s.kv.page_stride =
          in.Byte() % 4 ? Extent(tok, Hkv, D, s.kv.token_stride, s.kv.head_stride) : Pick(in, -100, 10000);
    s.q_head_stride = in.Byte() % 4 ? D : Pick(in, 0, 100);
    s.q_token_stride = in.Byte() % 4 ? Mul(s.q_head_stride, H) : Pick(in, 0, 1000);
    s.out_head_stride = in.Byte() % 4 ? D : Pick(in, 0, 100);
    s.out_token_stride = in.Byte() % 4 ? Mul(s.out_head_stride, H) : Pick(in, 0, 1000);
    if (in.Byte() % 32 == 0) {
      s.struct_size = static_cast<size_t>(in.Range(0, sizeof(sb_step_request)));
      honest_sizes = false;
    }
  }

  // Plan: C and C++ agree when every struct_size is the real one.
  sb_step_plan* plan = nullptr;
  SBFUZZ_CHECK(sb_step_plan_create(kMaxRequests, &plan) == SB_OK, "step plan create");
  const sb_status pst = sb_op_plan(op, n > 0 ? req : nullptr, n, plan);
  SBFUZZ_CHECK(pst == SB_OK || std::strlen(sb_last_error()) > 0, "plan error without a message");
  // A request of zero queries is skipped: C++ validates nothing more of it, while the C layer
  // still translates its structs (and so refuses, e.g., a negative page_stride there). The
  // layers must agree on batches without such requests.
  bool any_skipped = false;
  for (int32_t r = 0; r < n && r < kMaxRequests; ++r) any_skipped = any_skipped || req[r].num_queries == 0;
  if (honest_sizes && !any_skipped && n >= 0 && n <= kMaxRequests) {
    std::vector<StepRequest> creq(static_cast<size_t>(n));
    for (int32_t r = 0; r < n; ++r) {
      const sb_step_request& s = req[r];
      StepRequest& c = creq[static_cast<size_t>(r)];
      c.context_length = s.context_length;
      c.num_queries = s.num_queries;
      c.budget.mode = static_cast<BudgetMode>(s.budget.mode);
      c.budget.sink_blocks = s.budget.sink_blocks;
      c.budget.local_blocks = s.budget.local_blocks;
      c.budget.blocks = s.budget.blocks;
      c.budget.fraction = s.budget.fraction;
      c.budget.top_p = s.budget.top_p;
      c.budget.min_blocks = s.budget.min_blocks;
      c.budget.max_blocks = s.budget.max_blocks;
      c.kv.dtype = static_cast<DType>(s.kv.dtype);
      c.kv.token_stride = s.kv.token_stride;
      c.kv.head_stride = s.kv.head_stride;
      c.kv.page_table = s.kv.page_table;
      c.kv.page_size = s.kv.page_size;
      c.kv.page_stride = s.kv.page_stride;
      c.kv.num_pages = s.kv.num_pages;
      c.q.token_stride = s.q_token_stride;
      c.q.head_stride = s.q_head_stride;
      c.out.token_stride = s.out_token_stride;
      c.out.head_stride = s.out_head_stride;
    }
    StepPlan cplan;
    const Status cst = cop->Plan(creq.data(), n, &cplan);
    SBFUZZ_CHECK(cst.ok() == (pst == SB_OK), "C and C++ disagree on the batch: " + cst.ToString() + " vs " +
                                                 std::string(pst == SB_OK ? "ok" : sb_last_error()) +
                                                 "; request 0: " + Describe(req[0], oc));
  }
  if (pst != SB_OK || n <= 0) {
    sb_step_plan_destroy(plan);
    sb_op_destroy(op);
    return 0;
  }

  // Accepted: exact-size buffers for every request, or stop if any is large.
  sb_layer_input inputs[kMaxRequests], inputs2[kMaxRequests];
  bool small = true;
  for (int32_t r = 0; r < n && small; ++r) {
    const sb_step_request& s = req[r];
    if (s.num_queries == 0) {  // skipped: the library must not touch any of its pointers
      inputs[r] = inputs2[r] = sb_layer_input{nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
      continue;
    }
    const int64_t L = s.context_length, NQ = s.num_queries;
    const int64_t qext = Extent(NQ, H, D, s.q_token_stride, s.q_head_stride);
    const int64_t oext = Extent(NQ, H, D, s.out_token_stride, s.out_head_stride);
    const bool paged = s.kv.page_table != nullptr;
    const int64_t tok = paged ? (s.kv.page_size < L ? s.kv.page_size : L) : L;
    int64_t kvext = Extent(tok, Hkv, D, s.kv.token_stride, s.kv.head_stride);
    if (paged && kvext >= 0 && L > 0) {
      SBFUZZ_CHECK(s.kv.page_size > 0, "sb_op_plan accepted " + Describe(s, oc));
      const int64_t npages = L / s.kv.page_size + (L % s.kv.page_size != 0);
      int64_t hi = 0;
      for (int64_t i = 0; i < npages; ++i) {
        int64_t off;
        if (__builtin_mul_overflow(static_cast<int64_t>(buf[r].table[static_cast<size_t>(i)]), s.kv.page_stride,
                                   &off) ||
            __builtin_add_overflow(off, kvext, &off)) {
          hi = -1;
          break;
        }
        SBFUZZ_CHECK(off >= 0, "sb_op_plan accepted a page before the buffer: " + Describe(s, oc));
        SBFUZZ_CHECK(buf[r].table[static_cast<size_t>(i)] < s.kv.num_pages,
                     "sb_op_plan accepted a page past the pool: " + Describe(s, oc));
        if (off > hi) hi = off;
      }
      kvext = hi;
    }
    if (qext < 0 || oext < 0 || kvext < 0 || qext > kLimit || oext > kLimit || kvext > kLimit) {
      small = false;
      break;
    }
    RequestBuffers& b = buf[r];
    b.q.assign(static_cast<size_t>(qext), 0.0f);
    for (size_t i = 0; i < b.q.size(); ++i) b.q[i] = static_cast<float>(static_cast<int>(in.Byte()) - 128) / 32.0f;
    b.out.assign(static_cast<size_t>(oext), -7.0f);
    b.out2 = b.out;
    b.lse.assign(static_cast<size_t>(NQ * H), 0.0f);
    b.lse2 = b.lse;
    const int64_t kvbytes = DTypeBytes(static_cast<DType>(s.kv.dtype), kvext);
    SBFUZZ_CHECK(kvbytes >= 0,
                 "validated K/V extent " + std::to_string(kvext) + " has no byte size: " + Describe(s, oc));
    // 0x3c: a small finite value in every element type (f16 1.0-ish, q8_0 scales and quants).
    b.k.assign(static_cast<size_t>(kvbytes), 0x3c);
    b.v.assign(static_cast<size_t>(kvbytes), 0x3c);
    for (size_t i = 0; i < b.k.size(); i += 7) b.k[i] = static_cast<unsigned char>(0x30 + in.Byte() % 16);
    sb_summaries_config sc;
    sb_summaries_config_init(&sc);
    sc.num_kv_heads = oc.num_kv_heads;
    sc.head_dim = oc.head_dim;
    sc.block_size = oc.block_size;
    sc.max_tokens = L;
    sb_kv_view kv = s.kv;
    kv.k = b.k.data();
    kv.v = b.v.data();
    // Summaries for most requests; a missing one is legal only where the request runs dense.
    if (in.Byte() % 8 != 0 && sb_summaries_create(&sc, &b.summaries) == SB_OK)
      SBFUZZ_CHECK(sb_summaries_append(b.summaries, &kv, L) == SB_OK,
                   std::string("append of a validated layout failed: ") + sb_last_error() + "; " + Describe(s, oc));
    const bool want_lse = in.Byte() % 2;
    inputs[r] = {b.q.data(), b.out.data(), b.k.data(), b.v.data(), b.summaries, want_lse ? b.lse.data() : nullptr};
    inputs2[r] = {b.q.data(), b.out2.data(), b.k.data(), b.v.data(), b.summaries, want_lse ? b.lse2.data() : nullptr};
  }
  if (small) {
    size_t bytes = 0, align = 0;
    SBFUZZ_CHECK(sb_step_plan_workspace(plan, &bytes, &align) == SB_OK && align == 64, "workspace query");
    std::vector<unsigned char> raw(bytes + 64 + 1);
    void* ws = raw.data() + (64 - reinterpret_cast<uintptr_t>(raw.data()) % 64) % 64;
    sb_layer_args args;
    sb_layer_args_init(&args);
    args.inputs = inputs;
    args.workspace = ws;
    if (in.Byte() % 4 == 0) args.budget_scale = PickReal(in, 0, 4);
    if (in.Byte() % 32 == 0) args.workspace = static_cast<unsigned char*>(ws) + 4;  // misaligned: an error
    sb_layer_stats st;
    st.struct_size = sizeof st;
    const sb_status rst = sb_op_run_layer(op, plan, &args, nullptr, &st);
    SBFUZZ_CHECK(rst == SB_OK || std::strlen(sb_last_error()) > 0, "layer error without a message");
    if (rst == SB_OK) {
      SBFUZZ_CHECK(st.kept_blocks <= st.causal_blocks && st.units >= 0, "stats out of range");
      // The phases on nth threads give the same bits.
      const int nth = static_cast<int>(in.Range(1, 4));
      sb_layer_args args2 = args;
      args2.inputs = inputs2;
      for (int ith = 0; ith < nth; ++ith)
        SBFUZZ_CHECK(sb_op_select_phase(op, plan, &args2, ith, nth, nullptr) == SB_OK, sb_last_error());
      for (int ith = 0; ith < nth; ++ith)
        SBFUZZ_CHECK(sb_op_attend_phase(op, plan, &args2, ith, nth, nullptr) == SB_OK, sb_last_error());
      for (int ith = 0; ith < nth; ++ith)
        SBFUZZ_CHECK(sb_op_merge_phase(op, plan, &args2, ith, nth) == SB_OK, sb_last_error());
      for (int32_t r = 0; r < n; ++r) {
        const RequestBuffers& b = buf[r];
        SBFUZZ_CHECK(
            b.out.empty() || std::memcmp(b.out.data(), b.out2.data(), b.out.size() * sizeof(float)) == 0,
            "phases on " + std::to_string(nth) + " threads differ from run_layer (request " + std::to_string(r) + ")");
        SBFUZZ_CHECK(b.lse.empty() || std::memcmp(b.lse.data(), b.lse2.data(), b.lse.size() * sizeof(float)) == 0,
                     "lse differs");
        // Every written output row is finite (K/V and q are small and finite).
        for (int64_t i = 0; i < req[r].num_queries; ++i)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t d = 0; d < D; ++d) {
              const float x = b.out[static_cast<size_t>(i * req[r].out_token_stride + h * req[r].out_head_stride + d)];
              SBFUZZ_CHECK(std::isfinite(x), "non-finite output (request " + std::to_string(r) + ")");
            }
      }
      // Merging request 0's state with itself: finite, or a status for bad strides.
      const RequestBuffers& b0 = buf[0];
      if (inputs[0].lse != nullptr && req[0].num_queries > 0 && req[0].out_head_stride == D &&
          req[0].out_token_stride == H * D) {
        std::vector<float> v2 = b0.out, l2 = b0.lse;
        const int64_t rows = req[0].num_queries * H;
        SBFUZZ_CHECK(
            sb_merge_states(rows, oc.head_dim, b0.out.data(), D, b0.lse.data(), v2.data(), D, l2.data()) == SB_OK,
            sb_last_error());
      }
    }
  }
  for (auto& b : buf) sb_summaries_destroy(b.summaries);
  sb_step_plan_destroy(plan);
  sb_op_destroy(op);
  return 0;
}
