/* c_predict_attend.c - the predict-then-attend path through the C API (C99).
 *
 * One decode step of one layer for one request:
 *   1. load a predictor (JSON text here; sb_predictor_load_file for a file),
 *   2. describe the request (length, task) and predict its budget,
 *   3. plan the attention with that budget, build the block summaries of K,
 *   4. run the fused select + attend, report the density, and compare with dense attention.
 * Run: ./c_predict_attend [context_length]   (default 8192) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparsebudget/sparsebudget.h"

#define CHECK_SB(call)                                                               \
  do {                                                                               \
    sb_status st_ = (call);                                                          \
    if (st_ != SB_OK) {                                                              \
      fprintf(stderr, "%s failed: %s (%s)\n", #call, sb_status_string(st_), sb_last_error()); \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

static void on_log(void* user, sb_log_level level, const char* message) {
  (void)user;
  fprintf(stderr, "[sparsebudget %d] %s\n", (int)level, message);
}

int main(int argc, char** argv) {
  enum { HQ = 8, HKV = 2, D = 64, B = 64 };
  const int64_t L = argc > 1 ? atoll(argv[1]) : 8192;
  /* A length law: estimate = c * L^a / block_size blocks, i.e. the budget grows like sqrt(L). */
  static const char* predictor_json =
      "{\"schema_version\": 1, \"type\": \"length_law\", \"c\": 12.8, \"a\": 0.5}";
  sb_predictor* predictor = NULL;
  sb_request_features features;
  sb_prediction prediction;
  sb_attention_params params;
  sb_plan* plan = NULL;
  sb_plan* dense_plan = NULL;
  sb_summaries_config config;
  sb_summaries* summaries = NULL;
  sb_selection_stats stats;
  sb_query_view qv;
  sb_kv_view kv;
  sb_output_view ov;
  size_t ws_bytes = 0, dense_ws_bytes = 0;
  float *q, *k, *v, *out, *dense;
  void* ws;
  int64_t i;
  double max_diff = 0.0, max_ref = 0.0;

  if (L < 1) {
    fprintf(stderr, "context_length must be >= 1\n");
    return 1;
  }
  CHECK_SB(sb_set_log_callback(on_log, NULL, SB_LOG_INFO));
  printf("sparsebudget %s, kernels %s\n", sb_version(), sb_isa_name(sb_isa_active()));

  /* 1-2. predict the budget */
  CHECK_SB(sb_predictor_load_json(predictor_json, &predictor));
  sb_request_features_init(&features);
  features.context_length = L;
  features.block_size = B;
  features.task = "single_qa";
  prediction.struct_size = sizeof prediction;
  CHECK_SB(sb_predictor_predict(predictor, &features, &prediction));
  printf("predictor %s: keep %lld of %lld blocks (fraction %.3f%s)\n", sb_predictor_type(predictor),
         (long long)prediction.total_blocks, (long long)prediction.causal_blocks, prediction.fraction,
         prediction.clamped ? ", clamped" : "");

  /* synthetic K/V with a few "relevant" blocks the query aligns with */
  q = (float*)malloc(sizeof(float) * HQ * D);
  k = (float*)malloc(sizeof(float) * (size_t)L * HKV * D);
  v = (float*)malloc(sizeof(float) * (size_t)L * HKV * D);
  out = (float*)malloc(sizeof(float) * HQ * D);
  dense = (float*)malloc(sizeof(float) * HQ * D);
  srand(7);
  for (i = 0; i < HQ * D; ++i) q[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  for (i = 0; i < L * HKV * D; ++i) {
    const int64_t t = i / (HKV * D);
    const int64_t h = (i / D) % HKV;
    const int64_t d = i % D;
    const int relevant = (t / B) % 17 == 3;
    float align = 0.0f; /* the kv head's query group, summed */
    int g;
    for (g = 0; g < HQ / HKV; ++g) align += q[(h * (HQ / HKV) + g) * D + d];
    k[i] = ((float)rand() / (float)RAND_MAX - 0.5f) + (relevant ? 16.0f * align : 0.0f);
    v[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  }

  /* 3. plan with the predicted budget; summaries of K */
  sb_attention_params_init(&params);
  params.num_q_heads = HQ;
  params.num_kv_heads = HKV;
  params.head_dim = D;
  params.block_size = B;
  params.context_length = L;
  params.num_queries = 1;
  params.budget = prediction.budget;
  CHECK_SB(sb_plan_create(&params, &plan));
  CHECK_SB(sb_plan_workspace_bytes(plan, &ws_bytes));

  memset(&kv, 0, sizeof kv);
  kv.struct_size = sizeof kv;
  kv.k = k;
  kv.v = v;
  kv.dtype = SB_DTYPE_F32;
  kv.token_stride = HKV * D;
  kv.head_stride = D;
  sb_summaries_config_init(&config);
  config.num_kv_heads = HKV;
  config.head_dim = D;
  config.block_size = B;
  config.max_tokens = L;
  CHECK_SB(sb_summaries_create(&config, &summaries));
  CHECK_SB(sb_summaries_append(summaries, &kv, L)); /* in an engine: after each prefill chunk / token */

  /* 4. sparse decode, then dense for comparison */
  params.budget.mode = SB_BUDGET_DENSE;
  CHECK_SB(sb_plan_create(&params, &dense_plan));
  CHECK_SB(sb_plan_workspace_bytes(dense_plan, &dense_ws_bytes));
  ws = malloc((ws_bytes > dense_ws_bytes ? ws_bytes : dense_ws_bytes) + 1);
  qv.struct_size = sizeof qv;
  qv.data = q;
  qv.token_stride = HQ * D;
  qv.head_stride = D;
  ov.struct_size = sizeof ov;
  ov.data = out;
  ov.token_stride = HQ * D;
  ov.head_stride = D;
  stats.struct_size = sizeof stats;
  CHECK_SB(sb_sparse_attention(plan, &qv, &kv, summaries, &ov, ws, NULL, &stats, NULL));
  ov.data = dense;
  CHECK_SB(sb_attend(dense_plan, &qv, &kv, NULL, &ov, ws, NULL));
  for (i = 0; i < HQ * D; ++i) {
    const double diff = fabs((double)out[i] - (double)dense[i]);
    if (diff > max_diff) max_diff = diff;
    if (fabs((double)dense[i]) > max_ref) max_ref = fabs((double)dense[i]);
  }
  printf("sparse decode: kept %lld of %lld blocks (density %.3f); max|sparse - dense| = %.3g (max|dense| %.3g)\n",
         (long long)stats.kept_blocks, (long long)stats.causal_blocks,
         (double)stats.kept_blocks / (double)stats.causal_blocks, max_diff, max_ref);

  free(ws);
  free(q);
  free(k);
  free(v);
  free(out);
  free(dense);
  sb_summaries_destroy(summaries);
  sb_plan_destroy(plan);
  sb_plan_destroy(dense_plan);
  sb_predictor_destroy(predictor);
  return 0;
}
