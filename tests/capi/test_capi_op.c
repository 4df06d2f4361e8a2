/* The engine API through C (C99): a batch through sb_op_plan / sb_op_run_layer / the phases
 * equals sb_sparse_attention per request bitwise; LSE + sb_merge_states over a split context;
 * bad input names the request; the logit and layer-probe features. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparsebudget/sparsebudget.h"

static int g_failures = 0;
#define EXPECT(cond)                                                                                              \
  do {                                                                                                            \
    if (!(cond)) {                                                                                                \
      fprintf(stderr, "%s:%d: EXPECT(%s) failed (last error: %s)\n", __FILE__, __LINE__, #cond, sb_last_error()); \
      ++g_failures;                                                                                               \
    }                                                                                                             \
  } while (0)

enum { HQ = 4, HKV = 2, D = 32, B = 16, NREQ = 3 };

static float frand(unsigned* s) {
  *s = *s * 1103515245u + 12345u;
  return (float)((*s >> 8) & 0xffff) / 65536.0f - 0.5f;
}

int main(void) {
  static const int64_t lengths[NREQ] = {17, 300, 1000};
  float* k[NREQ];
  float* v[NREQ];
  float q[NREQ][HQ * D], out[NREQ][HQ * D], ref[NREQ][HQ * D], lse[NREQ][HQ];
  sb_summaries* sums[NREQ];
  sb_step_request req[NREQ];
  sb_layer_input in[NREQ];
  sb_op_config oc;
  sb_op* op = NULL;
  sb_step_plan* plan = NULL;
  sb_layer_args args;
  sb_layer_stats st;
  size_t bytes = 0, align = 0;
  void* raw;
  void* ws;
  unsigned seed = 3;
  int r, i, ith;
  sb_isa isa;

  sb_op_config_init(&oc);
  oc.num_q_heads = HQ;
  oc.num_kv_heads = HKV;
  oc.head_dim = D;
  oc.block_size = B;
  EXPECT(sb_op_create(&oc, &op) == SB_OK);
  EXPECT(sb_op_isa(op, &isa) == SB_OK && isa == sb_isa_active());
  EXPECT(sb_step_plan_create(NREQ, &plan) == SB_OK);
  for (r = 0; r < NREQ; ++r) {
    sb_summaries_config c;
    sb_kv_view kv;
    const size_t n = (size_t)lengths[r] * HKV * D;
    k[r] = (float*)malloc(n * sizeof(float));
    v[r] = (float*)malloc(n * sizeof(float));
    for (i = 0; i < (int)n; ++i) k[r][i] = frand(&seed), v[r][i] = frand(&seed);
    for (i = 0; i < HQ * D; ++i) q[r][i] = 4.0f * frand(&seed);
    sb_summaries_config_init(&c);
    c.num_kv_heads = HKV;
    c.head_dim = D;
    c.block_size = B;
    c.max_tokens = lengths[r];
    EXPECT(sb_summaries_create(&c, &sums[r]) == SB_OK);
    memset(&kv, 0, sizeof kv);
    kv.struct_size = sizeof kv;
    kv.k = k[r];
    kv.v = v[r];
    kv.dtype = SB_DTYPE_F32;
    kv.token_stride = HKV * D;
    kv.head_stride = D;
    EXPECT(sb_summaries_append(sums[r], &kv, lengths[r]) == SB_OK);
    sb_step_request_init(&req[r]);
    req[r].context_length = lengths[r];
    req[r].kv.token_stride = HKV * D;
    req[r].kv.head_stride = D;
    req[r].q_token_stride = req[r].out_token_stride = HQ * D;
    req[r].q_head_stride = req[r].out_head_stride = D;
    in[r].q = q[r];
    in[r].out = out[r];
    in[r].k = k[r];
    in[r].v = v[r];
    in[r].summaries = sums[r];
    in[r].lse = lse[r];
  }
  req[1].budget.mode = SB_BUDGET_BLOCKS;
  req[1].budget.blocks = 3;
  req[2].budget.mode = SB_BUDGET_FRACTION;
  req[2].budget.fraction = 0.2;
  EXPECT(sb_op_plan(op, req, NREQ, plan) == SB_OK);
  EXPECT(sb_step_plan_workspace(plan, &bytes, &align) == SB_OK && align == 64);
  raw = malloc(bytes + align);
  ws = (void*)(((uintptr_t)raw + align - 1) / align * align);
  sb_layer_args_init(&args);
  args.inputs = in;
  args.workspace = ws;
  st.struct_size = sizeof st;
  EXPECT(sb_op_run_layer(op, plan, &args, NULL, &st) == SB_OK);
  EXPECT(st.units == NREQ * HKV && st.dense_requests == 1);

  /* Reference: sb_sparse_attention per request. */
  for (r = 0; r < NREQ; ++r) {
    sb_attention_params p;
    sb_plan* pp = NULL;
    sb_query_view qv;
    sb_kv_view kv;
    sb_output_view ov;
    size_t wb = 0;
    void* w;
    sb_attention_params_init(&p);
    p.num_q_heads = HQ;
    p.num_kv_heads = HKV;
    p.head_dim = D;
    p.block_size = B;
    p.context_length = lengths[r];
    p.budget = req[r].budget;
    EXPECT(sb_plan_create(&p, &pp) == SB_OK);
    EXPECT(sb_plan_workspace_bytes(pp, &wb) == SB_OK);
    w = malloc(wb + 64);
    qv.struct_size = sizeof qv;
    qv.data = q[r];
    qv.token_stride = HQ * D;
    qv.head_stride = D;
    kv = req[r].kv;
    kv.k = k[r];
    kv.v = v[r];
    ov.struct_size = sizeof ov;
    ov.data = ref[r];
    ov.token_stride = HQ * D;
    ov.head_stride = D;
    EXPECT(sb_sparse_attention(pp, &qv, &kv, sums[r], &ov, w, NULL, NULL, NULL) == SB_OK);
    EXPECT(memcmp(out[r], ref[r], sizeof out[r]) == 0);
    free(w);
    sb_plan_destroy(pp);
  }
  /* The phases on two "threads" give the same bits. */
  memset(out, 0, sizeof out);
  for (ith = 0; ith < 2; ++ith) EXPECT(sb_op_select_phase(op, plan, &args, ith, 2, NULL) == SB_OK);
  for (ith = 0; ith < 2; ++ith) EXPECT(sb_op_attend_phase(op, plan, &args, ith, 2, NULL) == SB_OK);
  for (ith = 0; ith < 2; ++ith) EXPECT(sb_op_merge_phase(op, plan, &args, ith, 2) == SB_OK);
  for (r = 0; r < NREQ; ++r) EXPECT(memcmp(out[r], ref[r], sizeof out[r]) == 0);
  /* LSE is finite, and merging a state with itself leaves v and adds ln 2. */
  {
    float v2[HQ * D], l2[HQ];
    memcpy(v2, out[0], sizeof v2);
    memcpy(l2, lse[0], sizeof l2);
    for (i = 0; i < HQ; ++i) EXPECT(isfinite(lse[0][i]));
    EXPECT(sb_merge_states(HQ, D, out[0], D, lse[0], v2, D, l2) == SB_OK);
    for (i = 0; i < HQ; ++i) EXPECT(fabs(l2[i] - (lse[0][i] + log(2.0))) < 1e-5);
    for (i = 0; i < HQ * D; ++i) EXPECT(fabs(v2[i] - out[0][i]) < 1e-6);
    EXPECT(sb_merge_states(HQ, D, NULL, D, lse[0], v2, D, l2) == SB_ERROR_INVALID_ARGUMENT);
  }
  /* Bad input: the message names the request and the value. */
  req[2].budget.fraction = 1.5;
  EXPECT(sb_op_plan(op, req, NREQ, plan) == SB_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(sb_last_error(), "request 2") != NULL && strstr(sb_last_error(), "fraction") != NULL);
  EXPECT(sb_op_run_layer(op, plan, &args, NULL, NULL) != SB_OK); /* a failed plan holds no batch */
  req[2].budget.fraction = 0.2;
  req[1].kv.struct_size = 3;
  EXPECT(sb_op_plan(op, req, NREQ, plan) == SB_ERROR_INVALID_ARGUMENT);
  req[1].kv.struct_size = sizeof(sb_kv_view);
  /* A count beyond SB_MAX_STEP_REQUESTS is refused before anything is read or allocated. */
  EXPECT(sb_op_plan(op, req, SB_MAX_STEP_REQUESTS + 1, plan) == SB_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(sb_last_error(), "65537") != NULL);
  EXPECT(sb_op_plan(op, req, INT32_MAX, plan) == SB_ERROR_INVALID_ARGUMENT);
  {
    sb_step_plan* big = NULL;
    EXPECT(sb_step_plan_create(SB_MAX_STEP_REQUESTS + 1, &big) == SB_ERROR_INVALID_ARGUMENT && big == NULL);
  }
  EXPECT(sb_op_plan(op, req, NREQ, plan) == SB_OK);
  in[1].summaries = NULL;
  EXPECT(sb_op_run_layer(op, plan, &args, NULL, NULL) == SB_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(sb_last_error(), "request 1") != NULL);
  in[1].summaries = sums[1];
  args.budget_scale = -1.0;
  EXPECT(sb_op_run_layer(op, plan, &args, NULL, NULL) == SB_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(sb_last_error(), "budget_scale") != NULL);
  args.budget_scale = 1.0;
  /* A caller built against the first sb_op_config (struct_size 40, its last 4 bytes padding):
   * whatever the padding holds, the op is per kv head. The current struct's selection scope and
   * reserved field are checked. */
  {
    sb_op* old = NULL;
    sb_op_config first = oc;
    first.struct_size = 40;
    first.padding0 = 0x41414141;
    first.selection_scope = (sb_selection_scope)9; /* past struct_size: never read */
    EXPECT(sb_op_create(&first, &old) == SB_OK && old != NULL);
    sb_op_destroy(old);
    old = NULL;
    first = oc;
    first.selection_scope = SB_SELECTION_ALL_KV_HEADS;
    EXPECT(sb_op_create(&first, &old) == SB_OK && old != NULL);
    sb_op_destroy(old);
    old = NULL;
    first.selection_scope = (sb_selection_scope)2;
    EXPECT(sb_op_create(&first, &old) == SB_ERROR_INVALID_ARGUMENT && old == NULL);
    EXPECT(strstr(sb_last_error(), "selection_scope") != NULL);
    first.selection_scope = SB_SELECTION_PER_KV_HEAD;
    first.reserved = 1;
    EXPECT(sb_op_create(&first, &old) == SB_ERROR_INVALID_ARGUMENT && old == NULL);
    EXPECT(strstr(sb_last_error(), "config->reserved must be 0, got 1") != NULL);
    first.struct_size = 36;
    EXPECT(sb_op_create(&first, &old) == SB_ERROR_INVALID_ARGUMENT && old == NULL);
    EXPECT(strstr(sb_last_error(), "smaller than the first version's 40") != NULL);
  }
  oc.kv_dtype = (sb_dtype)7;
  {
    sb_op* bad = NULL;
    EXPECT(sb_op_create(&oc, &bad) == SB_ERROR_INVALID_ARGUMENT && bad == NULL);
  }
  /* Features: logits and layer probes. */
  {
    float logits[3] = {1.0f, 1.0f, -INFINITY};
    sb_logit_stats ls;
    sb_probe_stats ps;
    const sb_summaries* ls_sums[2];
    const float* ls_q[2];
    ls.struct_size = sizeof ls;
    EXPECT(sb_logit_stats_compute(logits, 3, &ls) == SB_OK);
    EXPECT(fabs(ls.entropy - log(2.0)) < 1e-12 && fabs(ls.top1_prob - 0.5) < 1e-12);
    logits[0] = NAN;
    EXPECT(sb_logit_stats_compute(logits, 3, &ls) == SB_ERROR_INVALID_ARGUMENT);
    ls_sums[0] = ls_sums[1] = sums[2];
    ls_q[0] = ls_q[1] = q[2];
    ps.struct_size = sizeof ps;
    EXPECT(sb_probe_from_layers(ls_sums, ls_q, 2, D, HQ, 0.0f, &ps) == SB_OK);
    EXPECT(ps.num_blocks == (1000 + B - 1) / B && ps.blocks_90 >= 1.0);
    EXPECT(sb_probe_from_layers(ls_sums, ls_q, 0, D, HQ, 0.0f, &ps) == SB_ERROR_INVALID_ARGUMENT);
  }
  for (r = 0; r < NREQ; ++r) {
    free(k[r]);
    free(v[r]);
    sb_summaries_destroy(sums[r]);
  }
  free(raw);
  sb_step_plan_destroy(plan);
  sb_op_destroy(op);
  printf("capi op: %s (%d failures), ISA %s\n", g_failures == 0 ? "OK" : "FAILED", g_failures, sb_isa_name(isa));
  return g_failures == 0 ? 0 : 1;
}
