/* C declarations of capi_reference.cpp (the C++ API computing what test_capi.c checks). All
 * layouts contiguous: q/out [num_queries][num_q_heads][head_dim], K/V [L][num_kv_heads][head_dim].
 * Return 0 on success. */
#ifndef SPARSEBUDGET_TESTS_CAPI_REFERENCE_H_
#define SPARSEBUDGET_TESTS_CAPI_REFERENCE_H_
#include "sparsebudget/sparsebudget.h"
#ifdef __cplusplus
extern "C" {
#endif
int ref_cpp_attend(const sb_attention_params* params, const float* q, const void* k, const void* v,
                   const int32_t* sel_indices, const int32_t* sel_counts, int64_t sel_capacity, float* out);
int ref_cpp_select(const sb_attention_params* params, const float* q, const void* k, int32_t* indices, int32_t* counts,
                   int64_t capacity);
int ref_cpp_probe_scores(const double* scores, int64_t n, double scale_over_rows, double* blocks_90, double* entropy);
int ref_cpp_predict_fraction(const char* json, int64_t context_length, int32_t block_size, double* fraction,
                             int64_t* total_blocks);
#ifdef __cplusplus
}
#endif
#endif
