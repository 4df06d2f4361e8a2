/* The escalation policy from C99: create/validate, step, restart mode, policy of a predictor. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sparsebudget/sparsebudget.h"

static int failures = 0;
#define CHECK(cond)                                                                                              \
  do {                                                                                                           \
    if (!(cond)) {                                                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, sb_last_error()); \
      ++failures;                                                                                                \
    }                                                                                                            \
  } while (0)

int main(void) {
  const double ladder[3] = {0.125, 0.5, 1.0};
  const double bad_ladder[2] = {0.5, 0.25};
  sb_escalation_policy* p = NULL;
  sb_escalation_state s;
  sb_prediction pr;
  sb_escalation_action action = SB_ESCALATION_CONTINUE;
  int64_t total = -1;
  sb_predictor* pred = NULL;
  sb_escalation_policy* from_pred = NULL;

  CHECK(sb_escalation_policy_create(0.5, bad_ladder, 2, SB_ESCALATE_RECOMPUTE_STEP, &p) == SB_ERROR_INVALID_ARGUMENT);
  CHECK(p == NULL && strstr(sb_last_error(), "ascending") != NULL);
  CHECK(sb_escalation_policy_create(0.5, ladder, 0, SB_ESCALATE_RECOMPUTE_STEP, &p) == SB_ERROR_INVALID_ARGUMENT);
  CHECK(sb_escalation_policy_create(0.5, ladder, 3, (sb_escalation_mode)7, &p) == SB_ERROR_INVALID_ARGUMENT);
  CHECK(sb_escalation_policy_create(0.5, NULL, 3, SB_ESCALATE_RECOMPUTE_STEP, &p) == SB_ERROR_INVALID_ARGUMENT);
  CHECK(sb_escalation_policy_create(0.5, ladder, 3, SB_ESCALATE_RECOMPUTE_STEP, &p) == SB_OK && p != NULL);
  CHECK(sb_escalation_policy_threshold(p) == 0.5);
  CHECK(isnan(sb_escalation_policy_threshold(NULL)));

  memset(&pr, 0, sizeof pr);
  pr.struct_size = sizeof pr;
  pr.total_blocks = 4;
  pr.causal_blocks = 64;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  CHECK(sb_escalation_start(p, &pr, &s) == SB_OK && s.total_blocks == 4 && s.causal_blocks == 64);
  CHECK(sb_escalation_step(p, &s, 0.9, 0, 1, 1, &action, &total) == SB_OK);
  CHECK(action == SB_ESCALATION_CONTINUE && total == 4);
  CHECK(sb_escalation_step(p, &s, 0.2, 1, 1, 1, &action, &total) == SB_OK);
  CHECK(action == SB_ESCALATION_RECOMPUTE && total == 8 && s.total_blocks == 8 && s.escalations == 1);
  CHECK(sb_escalation_step(p, &s, 0.2, -1, 1, 1, &action, &total) == SB_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(sb_last_error(), "answer_position") != NULL);
  CHECK(sb_escalation_step(p, NULL, 0.2, 0, 1, 1, &action, &total) == SB_ERROR_INVALID_ARGUMENT);
  s.struct_size = 3;
  CHECK(sb_escalation_step(p, &s, 0.2, 0, 1, 1, &action, &total) == SB_ERROR_INVALID_ARGUMENT);
  s.struct_size = sizeof s;
  sb_escalation_policy_destroy(p);

  CHECK(sb_escalation_policy_create(0.5, ladder, 3, SB_ESCALATE_RESTART_ANSWER, &p) == SB_OK);
  CHECK(sb_escalation_start(p, &pr, &s) == SB_OK);
  CHECK(sb_escalation_step(p, &s, 0.1, 2, 1, 1, &action, &total) == SB_OK && action == SB_ESCALATION_RESTART &&
        total == 8);
  sb_escalation_policy_destroy(p);

  /* first_token: a later token never escalates, the first one does. */
  CHECK(sb_escalation_policy_create(0.5, ladder, 3, SB_ESCALATE_FIRST_TOKEN, &p) == SB_OK);
  CHECK(sb_escalation_start(p, &pr, &s) == SB_OK);
  CHECK(sb_escalation_step(p, &s, 0.1, 2, 1, 1, &action, &total) == SB_OK && action == SB_ESCALATION_CONTINUE &&
        total == 4);
  CHECK(sb_escalation_step(p, &s, 0.1, 0, 1, 1, &action, &total) == SB_OK && action == SB_ESCALATION_RECOMPUTE &&
        total == 8);
  sb_escalation_policy_destroy(p);
  CHECK(sb_escalation_policy_create(0.5, ladder, 3, (sb_escalation_mode)3, &p) == SB_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(sb_last_error(), "got 3") != NULL);

  /* A calibrated escalate predictor carries its policy; other predictors have none. */
  CHECK(sb_predictor_load_json("{\"schema_version\":1,\"type\":\"escalate\",\"threshold\":0.25,"
                               "\"member\":{\"schema_version\":1,\"type\":\"fixed\",\"fraction\":0.1}}",
                               &pred) == SB_OK);
  CHECK(sb_predictor_escalation_policy(pred, &from_pred) == SB_OK && sb_escalation_policy_threshold(from_pred) == 0.25);
  sb_escalation_policy_destroy(from_pred);
  sb_predictor_destroy(pred);
  CHECK(sb_predictor_load_json("{\"schema_version\":1,\"type\":\"fixed\",\"fraction\":0.1}", &pred) == SB_OK);
  CHECK(sb_predictor_escalation_policy(pred, &from_pred) == SB_ERROR_NOT_FOUND && from_pred == NULL);
  sb_predictor_destroy(pred);
  sb_escalation_policy_destroy(NULL);

  printf("escalation C API: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
