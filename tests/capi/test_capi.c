/* test_capi.c - the C API from C99: results against a float64 reference and against the C++ API
 * (bit-identical), every ISA the CPU has, contiguous and paged K/V, partitions, selection,
 * predictors, probes, and the error statuses and messages of bad calls.
 * Exit status 0 = all checks passed; each failure prints the check, the seed and the shape. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capi_reference.h"
#include "sparsebudget/sparsebudget.h"

static int g_failures = 0;
static int g_checks = 0;
static char g_context[256] = "";

#define CHECK(cond)                                                                                                    \
  do {                                                                                                                 \
    ++g_checks;                                                                                                        \
    if (!(cond)) {                                                                                                     \
      ++g_failures;                                                                                                    \
      fprintf(stderr, "FAIL %s:%d: %s [%s] last_error='%s'\n", __FILE__, __LINE__, #cond, g_context, sb_last_error()); \
    }                                                                                                                  \
  } while (0)

#define CHECK_STATUS(call, expected)                                                                               \
  do {                                                                                                             \
    sb_status st_ = (call);                                                                                        \
    ++g_checks;                                                                                                    \
    if (st_ != (expected)) {                                                                                       \
      ++g_failures;                                                                                                \
      fprintf(stderr, "FAIL %s:%d: %s returned %s, expected %s [%s] last_error='%s'\n", __FILE__, __LINE__, #call, \
              sb_status_string(st_), sb_status_string(expected), g_context, sb_last_error());                      \
    }                                                                                                              \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, SB_OK)

/* The message of the last call must mention `needle`. */
#define CHECK_MESSAGE(needle)                                                                                     \
  do {                                                                                                            \
    ++g_checks;                                                                                                   \
    if (strstr(sb_last_error(), (needle)) == NULL) {                                                              \
      ++g_failures;                                                                                               \
      fprintf(stderr, "FAIL %s:%d: last_error '%s' does not mention '%s'\n", __FILE__, __LINE__, sb_last_error(), \
              (needle));                                                                                          \
    }                                                                                                             \
  } while (0)

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t g_rng = 1;
static double uniform(void) { /* [-1, 1) */
  g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static uint16_t f32_to_f16(float f) { /* round to nearest even; inputs are small normals */
  uint32_t x;
  memcpy(&x, &f, 4);
  {
    const uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffffu;
    if (exp <= 0) return (uint16_t)sign; /* flush tiny values (not produced here) */
    {
      uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
      const uint32_t rest = mant & 0x1fffu;
      if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
      return (uint16_t)h;
    }
  }
}
static float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t x;
  float f;
  if (exp == 0) {
    x = sign; /* zero (subnormals not produced here) */
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  memcpy(&f, &x, 4);
  return f;
}

typedef struct shape {
  int32_t hq, hkv, d, block;
  int64_t L;
  int32_t nq;
} shape;

static void set_context(const char* what, const shape* s, sb_isa isa, uint64_t seed) {
  snprintf(g_context, sizeof g_context, "%s hq=%d hkv=%d d=%d B=%d L=%lld nq=%d isa=%s seed=%llu", what, (int)s->hq,
           (int)s->hkv, (int)s->d, (int)s->block, (long long)s->L, (int)s->nq, sb_isa_name(isa),
           (unsigned long long)seed);
}

/* float64 softmax(scale q.k) v over causal tokens, restricted to the selected blocks if given. */
static void reference(const shape* s, const float* q, const float* k, const float* v, const int32_t* idx,
                      const int32_t* counts, int64_t capacity, double* out) {
  const int32_t group = s->hq / s->hkv;
  const int64_t first_pos = s->L - s->nq;
  const int64_t first_qb = first_pos / s->block;
  const int64_t nqb = (s->L - 1) / s->block - first_qb + 1;
  const double scale = 1.0 / sqrt((double)s->d);
  double* w = (double*)malloc((size_t)s->L * sizeof(double));
  int32_t i, h, dd;
  for (i = 0; i < s->nq; ++i) {
    const int64_t pos = first_pos + i;
    for (h = 0; h < s->hq; ++h) {
      const int32_t kvh = h / group;
      const int64_t unit = kvh * nqb + (pos / s->block - first_qb);
      const float* qr = q + ((int64_t)i * s->hq + h) * s->d;
      double mx = -INFINITY, sum = 0.0;
      int64_t t;
      for (t = 0; t <= pos; ++t) {
        int keep = 1;
        w[t] = -INFINITY;
        if (idx != NULL) {
          int32_t j;
          keep = 0;
          for (j = 0; j < counts[unit]; ++j)
            if (idx[unit * capacity + j] == t / s->block) keep = 1;
        }
        if (keep) {
          double dot = 0.0;
          const float* kr = k + (t * s->hkv + kvh) * s->d;
          for (dd = 0; dd < s->d; ++dd) dot += (double)qr[dd] * (double)kr[dd];
          w[t] = dot * scale;
          if (w[t] > mx) mx = w[t];
        }
      }
      for (dd = 0; dd < s->d; ++dd) out[((int64_t)i * s->hq + h) * s->d + dd] = 0.0;
      for (t = 0; t <= pos; ++t) {
        if (w[t] == -INFINITY) continue;
        w[t] = exp(w[t] - mx);
        sum += w[t];
      }
      for (t = 0; t <= pos; ++t) {
        const float* vr;
        if (w[t] == -INFINITY) continue;
        vr = v + (t * s->hkv + kvh) * s->d;
        for (dd = 0; dd < s->d; ++dd) out[((int64_t)i * s->hq + h) * s->d + dd] += w[t] / sum * (double)vr[dd];
      }
    }
  }
  free(w);
}

/* max |a - ref| <= 64 eps sqrt(d) max|ref| (times `loosen`). */
static int close_to(const float* a, const double* ref, int64_t n, int32_t d, double loosen) {
  double mx = 0.0, diff = 0.0;
  int64_t i;
  for (i = 0; i < n; ++i) {
    if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    if (!(fabs((double)a[i] - ref[i]) <= diff)) diff = fabs((double)a[i] - ref[i]);
  }
  if (diff != diff) return 0;
  if (diff <= 64.0 * 1.1920929e-7 * sqrt((double)d) * (mx > 0 ? mx : 1.0) * loosen) return 1;
  fprintf(stderr, "  max diff %.3g vs max|ref| %.3g\n", diff, mx);
  return 0;
}

static sb_kv_view kv_view(const shape* s, const void* k, const void* v, sb_dtype dt) {
  sb_kv_view kv;
  memset(&kv, 0, sizeof kv);
  kv.struct_size = sizeof kv;
  kv.k = k;
  kv.v = v;
  kv.dtype = dt;
  kv.token_stride = (int64_t)s->hkv * s->d;
  kv.head_stride = s->d;
  return kv;
}
static sb_query_view q_view(const shape* s, const float* q) {
  sb_query_view v;
  v.struct_size = sizeof v;
  v.data = q;
  v.token_stride = (int64_t)s->hq * s->d;
  v.head_stride = s->d;
  return v;
}
static sb_output_view o_view(const shape* s, float* o) {
  sb_output_view v;
  v.struct_size = sizeof v;
  v.data = o;
  v.token_stride = (int64_t)s->hq * s->d;
  v.head_stride = s->d;
  return v;
}
static sb_attention_params params_for(const shape* s, sb_dtype dt) {
  sb_attention_params p;
  sb_attention_params_init(&p);
  p.num_q_heads = s->hq;
  p.num_kv_heads = s->hkv;
  p.head_dim = s->d;
  p.block_size = s->block;
  p.context_length = s->L;
  p.num_queries = s->nq;
  p.kv_dtype = dt;
  return p;
}

/* ---- kernel checks ----------------------------------------------------------------------- */

static void check_shape(const shape* s, sb_isa isa, uint64_t seed) {
  const int64_t nq_el = (int64_t)s->nq * s->hq * s->d;
  const int64_t kv_el = s->L * s->hkv * s->d;
  float* q = (float*)malloc((size_t)nq_el * sizeof(float));
  float* k = (float*)malloc((size_t)kv_el * sizeof(float));
  float* v = (float*)malloc((size_t)kv_el * sizeof(float));
  float* out = (float*)malloc((size_t)nq_el * sizeof(float));
  float* out2 = (float*)malloc((size_t)nq_el * sizeof(float));
  float* out_cpp = (float*)malloc((size_t)nq_el * sizeof(float));
  double* ref = (double*)malloc((size_t)nq_el * sizeof(double));
  sb_attention_params p = params_for(s, SB_DTYPE_F32);
  sb_plan* plan = NULL;
  sb_plan_info info;
  void* ws = NULL;
  size_t ws_bytes = 0;
  int64_t i;
  int32_t nth;
  sb_query_view qv = q_view(s, q);
  sb_kv_view kvv = kv_view(s, k, v, SB_DTYPE_F32);
  sb_output_view ov = o_view(s, out);
  sb_output_view ov2 = o_view(s, out2);

  g_rng = seed;
  for (i = 0; i < nq_el; ++i) q[i] = (float)uniform();
  for (i = 0; i < kv_el; ++i) k[i] = (float)uniform();
  for (i = 0; i < kv_el; ++i) v[i] = (float)uniform();
  set_context("dense", s, isa, seed);

  CHECK_OK(sb_plan_create(&p, &plan));
  if (plan == NULL) goto done;
  info.struct_size = sizeof info;
  CHECK_OK(sb_plan_get_info(plan, &info));
  CHECK_OK(sb_plan_workspace_bytes(plan, &ws_bytes));
  CHECK(ws_bytes == info.workspace_bytes);
  CHECK(info.num_blocks == (s->L + s->block - 1) / s->block);
  CHECK(info.group == s->hq / s->hkv);
  ws = malloc(ws_bytes + 64);

  /* dense: float64 reference and the C++ API (bit-identical) */
  CHECK_OK(sb_attend(plan, &qv, &kvv, NULL, &ov, ws, NULL));
  reference(s, q, k, v, NULL, NULL, 0, ref);
  CHECK(close_to(out, ref, nq_el, s->d, 1.0));
  CHECK(ref_cpp_attend(&p, q, k, v, NULL, NULL, 0, out_cpp) == 0);
  CHECK(memcmp(out, out_cpp, (size_t)nq_el * sizeof(float)) == 0);

  /* partitions without threads: phase 1 for all ith, then phase 2; bit-identical for every nth */
  for (nth = 1; nth <= 4; ++nth) {
    int32_t ith;
    memset(out2, 0xff, (size_t)nq_el * sizeof(float));
    for (ith = 0; ith < nth; ++ith) CHECK_OK(sb_attend_partition(plan, &qv, &kvv, NULL, &ov2, ws, ith, nth));
    for (ith = 0; ith < nth; ++ith) CHECK_OK(sb_attend_merge(plan, NULL, &ov2, ws, ith, nth));
    CHECK(memcmp(out, out2, (size_t)nq_el * sizeof(float)) == 0);
  }

  /* thread pool */
  {
    sb_thread_pool* pool = NULL;
    CHECK_OK(sb_thread_pool_create(2, &pool));
    memset(out2, 0, (size_t)nq_el * sizeof(float));
    CHECK_OK(sb_attend(plan, &qv, &kvv, NULL, &ov2, ws, pool));
    CHECK(memcmp(out, out2, (size_t)nq_el * sizeof(float)) == 0);
    sb_thread_pool_destroy(pool);
  }

  /* paged: pages of 2 blocks, stored in reverse order with a gap, same results bit for bit */
  {
    const int64_t page_size = 2 * s->block;
    const int64_t pages = (s->L + page_size - 1) / page_size;
    const int64_t page_stride = page_size * s->hkv * s->d + 8; /* gap: pages need not be packed */
    float* pk = (float*)calloc((size_t)(pages * page_stride), sizeof(float));
    float* pv = (float*)calloc((size_t)(pages * page_stride), sizeof(float));
    int32_t* table = (int32_t*)malloc((size_t)pages * sizeof(int32_t));
    int64_t pg, t;
    sb_kv_view paged = kvv;
    set_context("paged", s, isa, seed);
    for (pg = 0; pg < pages; ++pg) table[pg] = (int32_t)(pages - 1 - pg);
    for (t = 0; t < s->L; ++t) {
      const int64_t dst = table[t / page_size] * page_stride + (t % page_size) * s->hkv * s->d;
      memcpy(pk + dst, k + t * s->hkv * s->d, (size_t)(s->hkv * s->d) * sizeof(float));
      memcpy(pv + dst, v + t * s->hkv * s->d, (size_t)(s->hkv * s->d) * sizeof(float));
    }
    paged.k = pk;
    paged.v = pv;
    paged.page_table = table;
    paged.page_size = page_size;
    paged.page_stride = page_stride;
    paged.num_pages = pages;
    memset(out2, 0, (size_t)nq_el * sizeof(float));
    CHECK_OK(sb_validate_views(plan, &qv, &paged, &ov2));
    CHECK_OK(sb_attend(plan, &qv, &paged, NULL, &ov2, ws, NULL));
    CHECK(memcmp(out, out2, (size_t)nq_el * sizeof(float)) == 0);
    /* a page size that is not a multiple of the block size is rejected, naming it */
    paged.page_size = s->block + s->block / 2;
    CHECK_STATUS(sb_attend(plan, &qv, &paged, NULL, &ov2, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("page_size");
    paged.page_size = page_size;
    /* a negative page index is rejected */
    table[0] = -1;
    CHECK_STATUS(sb_attend_partition(plan, &qv, &paged, NULL, &ov2, ws, 0, 1), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("page_table[0]");
    free(pk);
    free(pv);
    free(table);
  }

  /* sparse: summaries + selection (a fixed block budget), against the C++ API and the reference */
  {
    sb_plan* splan = NULL;
    sb_summaries* sum = NULL;
    sb_summaries_config cfg;
    sb_block_selection sel;
    sb_selection_stats stats;
    int32_t* idx;
    int32_t* counts;
    int32_t* idx_cpp;
    int32_t* counts_cpp;
    int64_t u, n_tok = 0;
    sb_attention_params sp = p;
    set_context("sparse", s, isa, seed);
    sp.budget.mode = SB_BUDGET_BLOCKS;
    sp.budget.blocks = 2;
    CHECK_OK(sb_plan_create(&sp, &splan));
    sb_summaries_config_init(&cfg);
    cfg.num_kv_heads = s->hkv;
    cfg.head_dim = s->d;
    cfg.block_size = s->block;
    cfg.max_tokens = s->L;
    CHECK_OK(sb_summaries_create(&cfg, &sum));
    /* append in two steps: the summaries are incremental */
    CHECK_OK(sb_summaries_append(sum, &kvv, s->L / 2));
    CHECK_OK(sb_summaries_append(sum, &kvv, s->L));
    CHECK_OK(sb_summaries_num_tokens(sum, &n_tok));
    CHECK(n_tok == s->L);
    {
      const float *ks = NULL, *kmin = NULL, *kmax = NULL;
      int64_t cnt = 0;
      int32_t dd;
      CHECK_OK(sb_summaries_block(sum, 0, 0, &ks, &kmin, &kmax, &cnt));
      CHECK(ks != NULL && kmin != NULL && kmax != NULL && cnt == (s->L < s->block ? s->L : s->block));
      for (dd = 0; ks != NULL && dd < s->d; ++dd) CHECK(kmin[dd] <= kmax[dd]);
    }
    idx = (int32_t*)malloc((size_t)(info.num_units * info.num_blocks) * sizeof(int32_t));
    counts = (int32_t*)malloc((size_t)info.num_units * sizeof(int32_t));
    idx_cpp = (int32_t*)calloc((size_t)(info.num_units * info.num_blocks), sizeof(int32_t));
    counts_cpp = (int32_t*)calloc((size_t)info.num_units, sizeof(int32_t));
    sel.struct_size = sizeof sel;
    sel.indices = idx;
    sel.counts = counts;
    sel.capacity = info.num_blocks;
    stats.struct_size = sizeof stats;
    CHECK_OK(sb_select_blocks(splan, &qv, sum, &sel, ws, &stats));
    CHECK(stats.units == info.num_units);
    CHECK(ref_cpp_select(&sp, q, k, idx_cpp, counts_cpp, info.num_blocks) == 0);
    for (u = 0; u < info.num_units; ++u) {
      CHECK(counts[u] == counts_cpp[u]);
      CHECK(memcmp(idx + u * info.num_blocks, idx_cpp + u * info.num_blocks, (size_t)counts[u] * sizeof(int32_t)) == 0);
    }
    CHECK_OK(sb_attend(splan, &qv, &kvv, &sel, &ov, ws, NULL));
    reference(s, q, k, v, idx, counts, info.num_blocks, ref);
    CHECK(close_to(out, ref, nq_el, s->d, 1.0));
    CHECK(ref_cpp_attend(&sp, q, k, v, idx, counts, info.num_blocks, out_cpp) == 0);
    CHECK(memcmp(out, out_cpp, (size_t)nq_el * sizeof(float)) == 0);
    /* one list per query block for every kv head: the C++ API's lists, the same for each kv head
     * (unit = kv head * query blocks + query block), attended as the reference says */
    {
      sb_attention_params ap = sp;
      sb_plan* aplan = NULL;
      sb_plan_info ainfo;
      int64_t qbs;
      set_context("sparse all_kv_heads", s, isa, seed);
      ap.selection_scope = SB_SELECTION_ALL_KV_HEADS;
      CHECK_OK(sb_plan_create(&ap, &aplan));
      ainfo.struct_size = sizeof ainfo;
      CHECK_OK(sb_plan_get_info(aplan, &ainfo));
      qbs = ainfo.num_units / s->hkv;
      CHECK_OK(sb_select_blocks(aplan, &qv, sum, &sel, ws, &stats));
      CHECK(stats.units == info.num_units);
      CHECK(ref_cpp_select(&ap, q, k, idx_cpp, counts_cpp, info.num_blocks) == 0);
      for (u = 0; u < info.num_units; ++u) {
        const int64_t u0 = u % qbs;
        CHECK(counts[u] == counts_cpp[u] && counts[u] == counts[u0]);
        CHECK(memcmp(idx + u * info.num_blocks, idx_cpp + u * info.num_blocks, (size_t)counts[u] * sizeof(int32_t)) ==
              0);
        CHECK(memcmp(idx + u * info.num_blocks, idx + u0 * info.num_blocks, (size_t)counts[u] * sizeof(int32_t)) == 0);
      }
      CHECK_OK(sb_attend(aplan, &qv, &kvv, &sel, &ov, ws, NULL));
      reference(s, q, k, v, idx, counts, info.num_blocks, ref);
      CHECK(close_to(out, ref, nq_el, s->d, 1.0));
      sb_plan_destroy(aplan);
      /* back to the per-kv-head lists for the checks below */
      CHECK_OK(sb_select_blocks(splan, &qv, sum, &sel, ws, &stats));
      CHECK_OK(sb_attend(splan, &qv, &kvv, &sel, &ov, ws, NULL));
      set_context("sparse", s, isa, seed);
    }
    /* partitioned with the selection */
    for (nth = 1; nth <= 3; nth += 2) {
      int32_t ith;
      for (ith = 0; ith < nth; ++ith) CHECK_OK(sb_attend_partition(splan, &qv, &kvv, &sel, &ov2, ws, ith, nth));
      for (ith = 0; ith < nth; ++ith) CHECK_OK(sb_attend_merge(splan, &sel, &ov2, ws, ith, nth));
      CHECK(memcmp(out, out2, (size_t)nq_el * sizeof(float)) == 0);
    }
    /* fused */
    memset(out2, 0, (size_t)nq_el * sizeof(float));
    CHECK_OK(sb_sparse_attention(splan, &qv, &kvv, sum, &ov2, ws, NULL, &stats, NULL));
    CHECK(memcmp(out, out2, (size_t)nq_el * sizeof(float)) == 0);
    CHECK(stats.kept_blocks <= stats.causal_blocks);
    /* a bad selection: descending indices in a unit with two or more kept blocks */
    for (u = 0; u < info.num_units; ++u) {
      if (counts[u] >= 2) {
        int32_t tmp = idx[u * info.num_blocks];
        idx[u * info.num_blocks] = idx[u * info.num_blocks + 1];
        idx[u * info.num_blocks + 1] = tmp;
        CHECK_STATUS(sb_attend_partition(splan, &qv, &kvv, &sel, &ov2, ws, 0, 1), SB_ERROR_OUT_OF_RANGE);
        CHECK_MESSAGE("ascending");
        CHECK_STATUS(sb_attend(splan, &qv, &kvv, &sel, &ov2, ws, NULL), SB_ERROR_OUT_OF_RANGE);
        break;
      }
    }
    /* non-dense budget without summaries */
    CHECK_STATUS(sb_sparse_attention(splan, &qv, &kvv, NULL, &ov2, ws, NULL, NULL, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("summaries");
    free(idx);
    free(counts);
    free(idx_cpp);
    free(counts_cpp);
    sb_summaries_destroy(sum);
    sb_plan_destroy(splan);
  }

  /* f16 K/V: against the reference on the rounded values, and bit-identical to the C++ API */
  {
    uint16_t* hk = (uint16_t*)malloc((size_t)kv_el * sizeof(uint16_t));
    uint16_t* hv = (uint16_t*)malloc((size_t)kv_el * sizeof(uint16_t));
    float* rk = (float*)malloc((size_t)kv_el * sizeof(float));
    float* rv = (float*)malloc((size_t)kv_el * sizeof(float));
    sb_attention_params hp = params_for(s, SB_DTYPE_F16);
    sb_plan* hplan = NULL;
    sb_kv_view hkv = kv_view(s, hk, hv, SB_DTYPE_F16);
    set_context("f16", s, isa, seed);
    for (i = 0; i < kv_el; ++i) {
      hk[i] = f32_to_f16(k[i]);
      hv[i] = f32_to_f16(v[i]);
      rk[i] = f16_to_f32(hk[i]);
      rv[i] = f16_to_f32(hv[i]);
    }
    CHECK_OK(sb_plan_create(&hp, &hplan));
    CHECK_OK(sb_attend(hplan, &qv, &hkv, NULL, &ov, ws, NULL));
    reference(s, q, rk, rv, NULL, NULL, 0, ref);
    CHECK(close_to(out, ref, nq_el, s->d, 4.0));
    CHECK(ref_cpp_attend(&hp, q, hk, hv, NULL, NULL, 0, out_cpp) == 0);
    CHECK(memcmp(out, out_cpp, (size_t)nq_el * sizeof(float)) == 0);
    /* the plan's dtype and the view's must agree */
    CHECK_STATUS(sb_attend(hplan, &qv, &kvv, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("dtype");
    sb_plan_destroy(hplan);
    free(hk);
    free(hv);
    free(rk);
    free(rv);
  }

done:
  sb_plan_destroy(plan);
  free(ws);
  free(q);
  free(k);
  free(v);
  free(out);
  free(out2);
  free(out_cpp);
  free(ref);
}

/* ---- error statuses ---------------------------------------------------------------------- */

static int g_log_count = 0;
static char g_log_last[512];
static void log_cb(void* user, sb_log_level level, const char* message) {
  int* count = (int*)user;
  ++*count;
  (void)level;
  snprintf(g_log_last, sizeof g_log_last, "%s", message);
}

static void check_errors(void) {
  sb_attention_params p;
  sb_plan* plan = (sb_plan*)&p; /* must be reset to NULL on failure */
  sb_summaries_config cfg;
  sb_summaries* sum = NULL;
  sb_budget b;
  sb_resolved_budget rb;
  sb_isa isa;
  unsigned char big[sizeof(sb_attention_params) + 16];
  snprintf(g_context, sizeof g_context, "errors");

  CHECK(strcmp(sb_status_string(SB_OK), "ok") == 0);
  CHECK(strcmp(sb_status_string(SB_ERROR_INVALID_ARGUMENT), "invalid_argument") == 0);
  CHECK(strcmp(sb_status_string(SB_ERROR_INTERNAL), "internal") == 0);
  CHECK(strcmp(sb_status_string((sb_status)99), "unknown") == 0);

  CHECK_STATUS(sb_plan_create(NULL, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("sb_plan_create: params is null");
  CHECK(plan == NULL);
  CHECK_STATUS(sb_plan_create(&p, NULL), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("plan is null");

  sb_attention_params_init(&p);
  p.num_q_heads = 4;
  p.num_kv_heads = 2;
  p.head_dim = 0;
  p.context_length = 10;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("head_dim must be in [1, 4096], got 0");
  p.head_dim = 16;
  p.num_kv_heads = 3;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("num_kv_heads");
  p.num_kv_heads = 2;
  p.kv_dtype = (sb_dtype)7;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("kv_dtype");
  p.kv_dtype = SB_DTYPE_BF16;
  p.selection_scope = (sb_selection_scope)5;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("params->selection_scope is not an sb_selection_scope: 5");
  p.selection_scope = SB_SELECTION_PER_KV_HEAD;
  p.reserved = 3;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("params->reserved must be 0, got 3");
  /* a caller built against the header before selection_scope: its struct (112 bytes) ends at
   * the budget, and nothing past it is read */
  p.struct_size = 112;
  p.selection_scope = (sb_selection_scope)9;
  CHECK_OK(sb_plan_create(&p, &plan));
  p.selection_scope = SB_SELECTION_PER_KV_HEAD;
  p.reserved = 0;
  sb_plan_destroy(plan);
  plan = NULL;
  p.struct_size = sizeof p;
  p.budget.fraction = 2.0;
  p.budget.mode = SB_BUDGET_FRACTION;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("fraction");
  p.budget.fraction = 0.5;
  p.struct_size = 8;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("struct_size");
  p.struct_size = sizeof p;
  p.budget.struct_size = 0;
  CHECK_STATUS(sb_plan_create(&p, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("params->budget->struct_size");
  p.budget.struct_size = sizeof p.budget;
  CHECK_OK(sb_plan_create(&p, &plan));
  CHECK(strcmp(sb_last_error(), "") == 0); /* success clears the message */
  sb_plan_destroy(plan);

  /* a newer, larger struct: accepted when the unknown tail is zero, rejected otherwise */
  memset(big, 0, sizeof big);
  p.struct_size = sizeof big;
  memcpy(big, &p, sizeof p);
  CHECK_OK(sb_plan_create((const sb_attention_params*)(const void*)big, &plan));
  sb_plan_destroy(plan);
  big[sizeof p + 3] = 1;
  CHECK_STATUS(sb_plan_create((const sb_attention_params*)(const void*)big, &plan), SB_ERROR_UNSUPPORTED);
  CHECK_MESSAGE("larger");
  p.struct_size = sizeof p;

  /* execute calls: null arguments and partition indices */
  CHECK_OK(sb_plan_create(&p, &plan));
  {
    float qbuf[4 * 16], obuf[4 * 16];
    uint16_t kbuf[10 * 2 * 16];
    size_t ws_bytes = 0;
    void* ws;
    sb_query_view qv;
    sb_output_view ov;
    sb_kv_view kv;
    memset(qbuf, 0, sizeof qbuf);
    memset(kbuf, 0, sizeof kbuf);
    qv.struct_size = sizeof qv;
    qv.data = qbuf;
    qv.token_stride = 64;
    qv.head_stride = 16;
    ov.struct_size = sizeof ov;
    ov.data = obuf;
    ov.token_stride = 64;
    ov.head_stride = 16;
    memset(&kv, 0, sizeof kv);
    kv.struct_size = sizeof kv;
    kv.k = kbuf;
    kv.v = kbuf;
    kv.dtype = SB_DTYPE_BF16;
    kv.token_stride = 32;
    kv.head_stride = 16;
    CHECK_OK(sb_plan_workspace_bytes(plan, &ws_bytes));
    ws = malloc(ws_bytes + 1);
    CHECK_OK(sb_attend(plan, &qv, &kv, NULL, &ov, ws, NULL));
    CHECK_STATUS(sb_attend(NULL, &qv, &kv, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("sb_attend: plan is null");
    CHECK_STATUS(sb_attend(plan, NULL, &kv, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("q is null");
    CHECK_STATUS(sb_attend(plan, &qv, NULL, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("kv is null");
    CHECK_STATUS(sb_attend(plan, &qv, &kv, NULL, NULL, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("out is null");
    if (ws_bytes > 0) {
      CHECK_STATUS(sb_attend(plan, &qv, &kv, NULL, &ov, NULL, NULL), SB_ERROR_INVALID_ARGUMENT);
      CHECK_MESSAGE("workspace");
    }
    kv.k = NULL;
    CHECK_STATUS(sb_attend(plan, &qv, &kv, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("kv.k is null");
    kv.k = kbuf;
    kv.dtype = (sb_dtype)-1;
    CHECK_STATUS(sb_attend(plan, &qv, &kv, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("kv->dtype");
    kv.dtype = SB_DTYPE_BF16;
    qv.head_stride = 8; /* rows overlap */
    CHECK_STATUS(sb_attend(plan, &qv, &kv, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("overlap");
    qv.head_stride = 16;
    CHECK_STATUS(sb_attend_partition(plan, &qv, &kv, NULL, &ov, ws, 2, 2), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("ith 2 of nth 2");
    CHECK_STATUS(sb_attend_merge(plan, NULL, &ov, ws, 0, 0), SB_ERROR_INVALID_ARGUMENT);
    {
      sb_block_selection sel;
      sel.struct_size = sizeof sel;
      sel.indices = NULL;
      sel.counts = NULL;
      sel.capacity = 0;
      CHECK_STATUS(sb_attend(plan, &qv, &kv, &sel, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
      CHECK_MESSAGE("selection->indices is null");
    }
    CHECK_STATUS(sb_select_blocks(plan, &qv, NULL, NULL, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("summaries is null");
    free(ws);
  }
  CHECK_STATUS(sb_plan_get_info(plan, NULL), SB_ERROR_INVALID_ARGUMENT);
  sb_plan_destroy(plan);
  sb_plan_destroy(NULL);

  /* summaries */
  sb_summaries_config_init(&cfg);
  cfg.num_kv_heads = 2;
  cfg.head_dim = 16;
  cfg.block_size = 48;
  cfg.max_tokens = 100;
  CHECK_STATUS(sb_summaries_create(&cfg, &sum), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("block_size must be a power of two");
  CHECK(sum == NULL);
  cfg.block_size = 16;
  CHECK_OK(sb_summaries_create(&cfg, &sum));
  CHECK_STATUS(sb_summaries_append(sum, NULL, 10), SB_ERROR_INVALID_ARGUMENT);
  {
    float kb[200 * 2 * 16];
    sb_kv_view kv;
    size_t bytes = 0;
    memset(kb, 0, sizeof kb);
    memset(&kv, 0, sizeof kv);
    kv.struct_size = sizeof kv;
    kv.k = kb;
    kv.dtype = SB_DTYPE_F32;
    kv.token_stride = 32;
    kv.head_stride = 16;
    CHECK_STATUS(sb_summaries_append(sum, &kv, 101), SB_ERROR_OUT_OF_RANGE);
    CHECK_MESSAGE("max_tokens 100");
    CHECK_OK(sb_summaries_append(sum, &kv, 40));
    CHECK_STATUS(sb_summaries_block(sum, 0, 3, NULL, NULL, NULL, NULL), SB_ERROR_OUT_OF_RANGE);
    CHECK_MESSAGE("block 3");
    CHECK_OK(sb_summaries_bytes(sum, &bytes));
    CHECK(bytes == 3u * 2u * 7u * 16u * sizeof(float));
    CHECK_OK(sb_summaries_reset(sum));
  }
  sb_summaries_destroy(sum);

  /* budgets */
  sb_budget_init(&b);
  b.mode = SB_BUDGET_FRACTION;
  b.fraction = 0.5;
  b.sink_blocks = 1;
  b.local_blocks = 1;
  rb.struct_size = sizeof rb;
  CHECK_OK(sb_budget_validate(&b));
  CHECK_OK(sb_budget_resolve(&b, 10, &rb));
  CHECK(rb.total_blocks == 5);
  b.mode = (sb_budget_mode)9;
  CHECK_STATUS(sb_budget_validate(&b), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("mode");
  b.mode = SB_BUDGET_FRACTION;
  CHECK_STATUS(sb_budget_resolve(&b, 0, &rb), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("causal_blocks");
  /* an exact total (an escalation rung): resolves to it for every total, dense at the top */
  {
    int64_t t;
    for (t = 0; t <= 37; ++t) {
      sb_budget tb;
      sb_budget_init(&tb);
      CHECK_OK(sb_budget_for_total(t, 37, 1, 2, &tb));
      CHECK_OK(sb_budget_resolve(&tb, 37, &rb));
      CHECK(rb.total_blocks == (t < 3 ? 3 : t)); /* never below sink 1 + local 2 */
      CHECK(tb.sink_blocks == 1 && (t >= 37 || tb.local_blocks == 2));
      CHECK((t >= 37) == (tb.mode == SB_BUDGET_DENSE));
    }
    CHECK_STATUS(sb_budget_for_total(-1, 37, 1, 1, &b), SB_ERROR_INVALID_ARGUMENT);
    CHECK_MESSAGE("total_blocks");
  }

  /* ISA names and caps */
  CHECK_OK(sb_isa_parse("avx2", &isa));
  CHECK(isa == SB_ISA_AVX2);
  CHECK_STATUS(sb_isa_parse("sse9", &isa), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("sse9");
  CHECK_STATUS(sb_isa_set_max((sb_isa)5), SB_ERROR_INVALID_ARGUMENT);
  CHECK(sb_isa_supported(SB_ISA_SCALAR) == 1);
  CHECK(sb_isa_supported((sb_isa)5) == 0);

  /* the log callback sees failures (and nothing below its level) */
  CHECK_STATUS(sb_set_log_callback(log_cb, &g_log_count, (sb_log_level)9), SB_ERROR_INVALID_ARGUMENT);
  CHECK_OK(sb_set_log_callback(log_cb, &g_log_count, SB_LOG_ERROR));
  CHECK_STATUS(sb_plan_create(NULL, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK(g_log_count == 1);
  CHECK(strstr(g_log_last, "params is null") != NULL);
  CHECK_OK(sb_set_log_callback(NULL, NULL, SB_LOG_DEBUG));
  CHECK_STATUS(sb_plan_create(NULL, &plan), SB_ERROR_INVALID_ARGUMENT);
  CHECK(g_log_count == 1);
}

/* ---- predictors and probes --------------------------------------------------------------- */

static void check_predictors(void) {
  static const char* json = "{\"schema_version\": 1, \"type\": \"fixed\", \"fraction\": 0.25}";
  sb_predictor* pred = NULL;
  sb_request_features f;
  sb_prediction pr;
  double fraction = 0.0, b90 = 0.0, ent = 0.0;
  int64_t total = 0;
  size_t len = 0;
  char small[4];
  char* buf;
  snprintf(g_context, sizeof g_context, "predictors");

  CHECK_OK(sb_predictor_load_json(json, &pred));
  if (pred == NULL) return;
  CHECK(strcmp(sb_predictor_type(pred), "fixed") == 0);
  sb_request_features_init(&f);
  f.context_length = 4096;
  f.block_size = 64;
  f.task = "single_qa";
  pr.struct_size = sizeof pr;
  CHECK_OK(sb_predictor_predict(pred, &f, &pr));
  CHECK(ref_cpp_predict_fraction(json, 4096, 64, &fraction, &total) == 0);
  CHECK(pr.budget.mode == SB_BUDGET_FRACTION);
  CHECK(pr.budget.fraction == fraction);
  CHECK(pr.total_blocks == total);
  CHECK(pr.causal_blocks == 64);
  CHECK(pr.budget.struct_size == sizeof(sb_budget));
  CHECK_OK(sb_budget_validate(&pr.budget));
  /* to_json: size query, too small, exact */
  memset(small, 'x', sizeof small);
  CHECK_STATUS(sb_predictor_to_json(pred, small, sizeof small, &len), SB_ERROR_OUT_OF_RANGE);
  CHECK(len > 10 && small[0] == 'x' && small[sizeof small - 1] == 'x'); /* not written on failure */
  buf = (char*)malloc(len + 1);
  CHECK_OK(sb_predictor_to_json(pred, buf, len + 1, &len));
  CHECK(strstr(buf, "fixed") != NULL);
  free(buf);
  /* bad features name the field */
  f.context_length = 0;
  CHECK_STATUS(sb_predictor_predict(pred, &f, &pr), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("context_length");
  f.context_length = 100;
  f.num_extra = 1;
  CHECK_STATUS(sb_predictor_predict(pred, &f, &pr), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("extra_names");
  sb_predictor_destroy(pred);
  pred = NULL;

  CHECK_STATUS(sb_predictor_load_json("{\"schema_version\": 1, \"type\": \"fixed\", \"fraktion\": 1}", &pred),
               SB_ERROR_PARSE);
  CHECK(pred == NULL);
  CHECK(strlen(sb_last_error()) > 0);
  CHECK(sb_predictor_load_file("/nonexistent/predictor.json", &pred) != SB_OK);
  CHECK_MESSAGE("/nonexistent/predictor.json");
  CHECK_STATUS(sb_predictor_load_json(NULL, &pred), SB_ERROR_INVALID_ARGUMENT);
  CHECK(sb_predictor_type(NULL) == NULL);

  /* probe statistics from scores, against the C++ API; and into the features */
  {
    double scores[8] = {4.0, 0.5, 0.1, 3.0, -1.0, 0.0, 2.0, 0.2};
    sb_probe_stats ps;
    ps.struct_size = sizeof ps;
    CHECK_OK(sb_probe_from_scores(scores, 8, 1.0, &ps));
    CHECK(ref_cpp_probe_scores(scores, 8, 1.0, &b90, &ent) == 0);
    CHECK(ps.blocks_90 == b90 && ps.entropy == ent && ps.num_blocks == 8);
    CHECK_OK(sb_probe_set_features(&ps, &f));
    CHECK(f.probe_blocks_90 == b90);
    CHECK_STATUS(sb_probe_from_scores(scores, 0, 1.0, &ps), SB_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(sb_probe_from_scores(scores, 8, 1.0, NULL), SB_ERROR_INVALID_ARGUMENT);
  }
}

/* q8_0 K/V through the C API: sb_quantize_q8_0, then sb_attend on the blocks, against the float64
 * reference on the values decoded here (fp16 scale times int8). */
static double half_to_double(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double sign = (h >> 15) ? -1.0 : 1.0;
  if (e == 0) return sign * ldexp((double)m, -24);
  return sign * ldexp((double)(1024 + m), e - 25);
}

static void check_q8_0(sb_isa isa) {
  const shape s = {4, 2, 64, 16, 100, 3};
  const int64_t nq_el = (int64_t)s.nq * s.hq * s.d, kv_el = s.L * s.hkv * s.d;
  float* q = (float*)malloc((size_t)nq_el * sizeof(float));
  float* k = (float*)malloc((size_t)kv_el * sizeof(float));
  float* v = (float*)malloc((size_t)kv_el * sizeof(float));
  float* out = (float*)malloc((size_t)nq_el * sizeof(float));
  double* ref = (double*)malloc((size_t)nq_el * sizeof(double));
  unsigned char* kq = (unsigned char*)malloc((size_t)(kv_el / 32 * 34));
  unsigned char* vq = (unsigned char*)malloc((size_t)(kv_el / 32 * 34));
  sb_attention_params p = params_for(&s, SB_DTYPE_Q8_0);
  sb_plan* plan = NULL;
  size_t ws_bytes = 0;
  void* ws = NULL;
  int64_t i;
  sb_query_view qv = q_view(&s, q);
  sb_kv_view kvv = kv_view(&s, kq, vq, SB_DTYPE_Q8_0);
  sb_output_view ov = o_view(&s, out);
  set_context("q8_0", &s, isa, 77);
  g_rng = 77;
  for (i = 0; i < nq_el; ++i) q[i] = (float)uniform();
  for (i = 0; i < kv_el; ++i) k[i] = (float)uniform();
  for (i = 0; i < kv_el; ++i) v[i] = (float)uniform();
  CHECK_OK(sb_quantize_q8_0(k, kv_el, kq));
  CHECK_OK(sb_quantize_q8_0(v, kv_el, vq));
  CHECK_STATUS(sb_quantize_q8_0(k, 33, kq), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("33");
  for (i = 0; i < kv_el; ++i) { /* the decoded values replace k and v for the reference */
    uint16_t hk, hv;
    memcpy(&hk, kq + i / 32 * 34, 2);
    memcpy(&hv, vq + i / 32 * 34, 2);
    k[i] = (float)(half_to_double(hk) * (signed char)kq[i / 32 * 34 + 2 + i % 32]);
    v[i] = (float)(half_to_double(hv) * (signed char)vq[i / 32 * 34 + 2 + i % 32]);
  }
  CHECK_OK(sb_plan_create(&p, &plan));
  if (plan == NULL) goto done;
  CHECK_OK(sb_plan_workspace_bytes(plan, &ws_bytes));
  ws = malloc(ws_bytes + 64);
  CHECK_OK(sb_attend(plan, &qv, &kvv, NULL, &ov, ws, NULL));
  reference(&s, q, k, v, NULL, NULL, 0, ref);
  CHECK(close_to(out, ref, nq_el, s.d, 1.0));
  kvv.token_stride = 144; /* no overlap, but not a multiple of 32 values */
  CHECK_STATUS(sb_attend(plan, &qv, &kvv, NULL, &ov, ws, NULL), SB_ERROR_INVALID_ARGUMENT);
  CHECK_MESSAGE("multiples of 32");
done:
  sb_plan_destroy(plan);
  free(ws);
  free(q);
  free(k);
  free(v);
  free(out);
  free(ref);
  free(kq);
  free(vq);
}

int main(void) {
  static const shape shapes[] = {
      {4, 2, 64, 16, 100, 1},   /* GQA decode, partial last block */
      {4, 2, 64, 16, 100, 37},  /* GQA prefill chunk across blocks */
      {2, 2, 32, 32, 64, 64},   /* full prefill, L a multiple of B */
      {8, 1, 80, 16, 257, 1},   /* MQA, head_dim not a multiple of 16, many blocks (split-K) */
      {3, 3, 16, 16, 17, 2},    /* B+1 */
      {2, 1, 128, 64, 1000, 3}, /* decode-ish, long */
  };
  const sb_isa isas[3] = {SB_ISA_SCALAR, SB_ISA_AVX2, SB_ISA_AVX512};
  size_t i;
  int j;

  CHECK(strcmp(sb_last_error(), "") == 0);
  {
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", SB_VERSION_MAJOR, SB_VERSION_MINOR, SB_VERSION_PATCH);
    CHECK(strcmp(sb_version(), expect) == 0);
  }
  printf("sparsebudget %s, detected ISA %s\n", sb_version(), sb_isa_name(sb_isa_detected()));

  check_errors();
  check_predictors();
  for (j = 0; j < 3; ++j) {
    if (!sb_isa_supported(isas[j])) {
      printf("isa %s: not supported by this CPU, skipped\n", sb_isa_name(isas[j]));
      continue;
    }
    CHECK_OK(sb_isa_set_max(isas[j]));
    CHECK(sb_isa_active() == isas[j]);
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; ++i)
      check_shape(&shapes[i], isas[j], 1000u + i * 7u + (unsigned)j);
    check_q8_0(isas[j]);
    printf("isa %s: checked %d shapes\n", sb_isa_name(isas[j]), (int)(sizeof shapes / sizeof shapes[0]));
  }
  CHECK_OK(sb_isa_set_max(SB_ISA_AVX512));

  printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
