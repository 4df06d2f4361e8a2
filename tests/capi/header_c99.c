/* sparsebudget.h must compile alone as strict C99 (-std=c99 -pedantic -Werror). */
#include "sparsebudget/sparsebudget.h"

int sb_header_c99_check(void);
int sb_header_c99_check(void) { return (int)sizeof(sb_attention_params) > 0 && SB_OK == 0; }
