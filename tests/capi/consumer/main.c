/* Consumer check through the C API (C99): dense decode attention equals the mean of V when all
 * keys are equal (uniform softmax). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparsebudget/sparsebudget.h"

int main(void) {
  sb_attention_params p;
  sb_plan* plan = NULL;
  size_t ws_bytes = 0;
  void* ws;
  float q[32], k[40 * 16], v[40 * 16], out[32];
  sb_query_view qv;
  sb_kv_view kv;
  sb_output_view ov;
  int t, d;

  sb_attention_params_init(&p);
  p.num_q_heads = 2;
  p.num_kv_heads = 1;
  p.head_dim = 16;
  p.block_size = 16;
  p.context_length = 40;
  p.num_queries = 1;
  if (sb_plan_create(&p, &plan) != SB_OK || sb_plan_workspace_bytes(plan, &ws_bytes) != SB_OK) {
    fprintf(stderr, "plan: %s\n", sb_last_error());
    return 1;
  }
  for (d = 0; d < 32; ++d) q[d] = 0.5f;
  for (t = 0; t < 40; ++t)
    for (d = 0; d < 16; ++d) {
      k[t * 16 + d] = 1.0f;
      v[t * 16 + d] = (float)t;
    }
  ws = malloc(ws_bytes + 1);
  qv.struct_size = sizeof qv;
  qv.data = q;
  qv.token_stride = 32;
  qv.head_stride = 16;
  memset(&kv, 0, sizeof kv);
  kv.struct_size = sizeof kv;
  kv.k = k;
  kv.v = v;
  kv.dtype = SB_DTYPE_F32;
  kv.token_stride = 16;
  kv.head_stride = 16;
  ov.struct_size = sizeof ov;
  ov.data = out;
  ov.token_stride = 32;
  ov.head_stride = 16;
  if (sb_attend(plan, &qv, &kv, NULL, &ov, ws, NULL) != SB_OK) {
    fprintf(stderr, "attend: %s\n", sb_last_error());
    return 1;
  }
  free(ws);
  sb_plan_destroy(plan);
  if (fabsf(out[0] - 19.5f) > 1e-4f || fabsf(out[31] - 19.5f) > 1e-4f) {
    fprintf(stderr, "unexpected result %g\n", (double)out[0]);
    return 1;
  }
  printf("consumer_c: sparsebudget %s ok (isa %s)\n", sb_version(), sb_isa_name(sb_isa_active()));
  return 0;
}
