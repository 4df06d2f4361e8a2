/* C helpers of test_bad_input_capi.cpp: calls with out-of-range enum values, made from C. */
#ifndef SB_REL_CAPI_ENUM_CALLERS_H_
#define SB_REL_CAPI_ENUM_CALLERS_H_
#include "sparsebudget/sparsebudget.h"
#ifdef __cplusplus
extern "C" {
#endif
sb_status rel_plan_with_enum(const sb_attention_params* base, int which, int value);
sb_status rel_views_with_dtype(const sb_plan* plan, const sb_query_view* q, const sb_kv_view* kv,
                               const sb_output_view* out, int dtype);
sb_status rel_budget_with_mode(int mode);
sb_status rel_isa_set_max(int v);
const char* rel_isa_name(int v);
int rel_isa_supported(int v);
const char* rel_status_string(int v);
sb_status rel_set_log_level(int v);
#ifdef __cplusplus
}
#endif
#endif
