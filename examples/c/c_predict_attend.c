/* c_predict_attend.c - the predict-then-attend path through the C API (C99).
 *
 * One decode step of a model with LAYERS layers, through the engine API (sb_op):
 *   1. load a predictor (JSON text here; sb_predictor_load_file for a file),
 *   2. describe the request (length, task) and predict its budget,
 *   3. create the op once (the model's heads, head_dim, block size, K/V type) and a step plan;
 *      build the block summaries of K,
 *   4. plan the step once for a batch of two entries (the request at its predicted budget, and
 *      the same request at a dense budget as the reference), then per layer one sb_op_run_layer
 *      call for the batch (layer l scales the budget by 1 + l), report the density and compare
 *      with dense attention.
 * Run: ./c_predict_attend [context_length]   (default 8192) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparsebudget/sparsebudget.h"

#define CHECK_SB(call)                                                                        \
  do {                                                                                        \
    sb_status st_ = (call);                                                                   \
    if (st_ != SB_OK) {                                                                       \
      fprintf(stderr, "%s failed: %s (%s)\n", #call, sb_status_string(st_), sb_last_error()); \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

static void on_log(void* user, sb_log_level level, const char* message) {
  (void)user;
  fprintf(stderr, "[sparsebudget %d] %s\n", (int)level, message);
}

int main(int argc, char** argv) {
  enum { HQ = 8, HKV = 2, D = 64, B = 64, LAYERS = 2 };
  const int64_t L = argc > 1 ? atoll(argv[1]) : 8192;
  /* A length law: estimate = c * L^a / block_size blocks, i.e. the budget grows like sqrt(L). */
  static const char* predictor_json = "{\"schema_version\": 1, \"type\": \"length_law\", \"c\": 12.8, \"a\": 0.5}";
  sb_predictor* predictor = NULL;
  sb_request_features features;
  sb_prediction prediction;
  sb_op_config op_config;
  sb_op* op = NULL;
  sb_step_plan* step = NULL;
  sb_step_request requests[2];
  sb_layer_input inputs[2];
  sb_layer_args args;
  sb_layer_stats stats;
  sb_summaries_config config;
  sb_summaries* summaries = NULL;
  size_t ws_bytes = 0, ws_align = 0;
  float *q, *k, *v, *out, *dense;
  void* ws_raw;
  void* ws;
  int layer, r;
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

  /* 3. the op (once per model), a step plan (once per engine), summaries of K (per layer; one K
   * here, shared by the layers) */
  sb_op_config_init(&op_config);
  op_config.num_q_heads = HQ;
  op_config.num_kv_heads = HKV;
  op_config.head_dim = D;
  op_config.block_size = B;
  op_config.kv_dtype = SB_DTYPE_F32;
  op_config.scoring = SB_SCORING_BOUND;
  CHECK_SB(sb_op_create(&op_config, &op));
  CHECK_SB(sb_step_plan_create(2, &step));
  sb_summaries_config_init(&config);
  config.num_kv_heads = HKV;
  config.head_dim = D;
  config.block_size = B;
  config.max_tokens = L;
  for (r = 0; r < 2; ++r) {
    sb_step_request_init(&requests[r]);
    requests[r].context_length = L;
    requests[r].num_queries = 1;
    requests[r].budget = prediction.budget;
    requests[r].kv.dtype = SB_DTYPE_F32; /* layout only: k/v come per layer */
    requests[r].kv.token_stride = HKV * D;
    requests[r].kv.head_stride = D;
    requests[r].q_token_stride = requests[r].out_token_stride = HQ * D;
    requests[r].q_head_stride = requests[r].out_head_stride = D;
  }
  requests[1].budget.mode = SB_BUDGET_DENSE;
  {
    sb_kv_view kv;
    memset(&kv, 0, sizeof kv);
    kv.struct_size = sizeof kv;
    kv.k = k;
    kv.v = v;
    kv.dtype = SB_DTYPE_F32;
    kv.token_stride = HKV * D;
    kv.head_stride = D;
    CHECK_SB(sb_summaries_create(&config, &summaries));
    CHECK_SB(sb_summaries_append(summaries, &kv, L)); /* in an engine: after each prefill chunk / token */
  }

  /* 4. one plan for the step, one call per layer */
  CHECK_SB(sb_op_plan(op, requests, 2, step));
  CHECK_SB(sb_step_plan_workspace(step, &ws_bytes, &ws_align));
  ws_raw = malloc(ws_bytes + ws_align);
  ws = (void*)(((uintptr_t)ws_raw + ws_align - 1) / ws_align * ws_align);
  for (r = 0; r < 2; ++r) {
    inputs[r].q = q;
    inputs[r].out = r == 0 ? out : dense;
    inputs[r].k = k;
    inputs[r].v = v;
    inputs[r].summaries = summaries;
    inputs[r].lse = NULL;
  }
  for (layer = 0; layer < LAYERS; ++layer) {
    sb_layer_args_init(&args);
    args.inputs = inputs;
    args.budget_scale = 1.0 + layer;
    args.workspace = ws;
    stats.struct_size = sizeof stats;
    CHECK_SB(sb_op_run_layer(op, step, &args, NULL, &stats));
    max_diff = 0.0;
    max_ref = 0.0;
    for (i = 0; i < HQ * D; ++i) {
      const double diff = fabs((double)out[i] - (double)dense[i]);
      if (diff > max_diff) max_diff = diff;
      if (fabs((double)dense[i]) > max_ref) max_ref = fabs((double)dense[i]);
    }
    /* stats count both entries of the batch; the dense one keeps every causal block */
    printf(
        "layer %d (budget x%.0f): kept %lld of %lld blocks over the batch (sparse entry %.3f); "
        "max|sparse - dense| = %.3g (max|dense| %.3g)\n",
        layer, args.budget_scale, (long long)stats.kept_blocks, (long long)stats.causal_blocks,
        (double)(stats.kept_blocks - stats.causal_blocks / 2) / (double)(stats.causal_blocks / 2), max_diff, max_ref);
  }

  free(ws_raw);
  free(q);
  free(k);
  free(v);
  free(out);
  free(dense);
  sb_summaries_destroy(summaries);
  sb_step_plan_destroy(step);
  sb_op_destroy(op);
  sb_predictor_destroy(predictor);
  return 0;
}
