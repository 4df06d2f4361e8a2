/* A C caller passing enum values outside the declared enumerators: legal C (an enum object
 * holds any int the type can represent), and exactly what the C API must reject with
 * SB_ERROR_INVALID_ARGUMENT. Kept in C so the test itself has no undefined behaviour. */
#include "sparsebudget/sparsebudget.h"

#include "capi_enum_callers.h"

sb_status rel_plan_with_enum(const sb_attention_params* base, int which, int value) {
  sb_attention_params p = *base;
  sb_plan* out = NULL;
  sb_status s;
  switch (which) {
    case 0: p.kv_dtype = (sb_dtype)value; break;
    case 1: p.scoring = (sb_scoring)value; break;
    default: p.budget.mode = (sb_budget_mode)value; break;
  }
  s = sb_plan_create(&p, &out);
  sb_plan_destroy(out);
  return s;
}

sb_status rel_views_with_dtype(const sb_plan* plan, const sb_query_view* q, const sb_kv_view* kv,
                               const sb_output_view* out, int dtype) {
  sb_kv_view v = *kv;
  v.dtype = (sb_dtype)dtype;
  return sb_validate_views(plan, q, &v, out);
}

sb_status rel_budget_with_mode(int mode) {
  sb_budget b;
  sb_budget_init(&b);
  b.mode = (sb_budget_mode)mode;
  return sb_budget_validate(&b);
}

sb_status rel_isa_set_max(int v) { return sb_isa_set_max((sb_isa)v); }
const char* rel_isa_name(int v) { return sb_isa_name((sb_isa)v); }
int rel_isa_supported(int v) { return sb_isa_supported((sb_isa)v); }
const char* rel_status_string(int v) { return sb_status_string((sb_status)v); }
sb_status rel_set_log_level(int v) { return sb_set_log_callback(NULL, NULL, (sb_log_level)v); }
