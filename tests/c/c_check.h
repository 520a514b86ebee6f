/* Checks for the C API example programs: count every check, print each failure with the last
 * weft error, and let main() exit nonzero when any failed. Each program defines `who` (its
 * process's role), `checks` and `failures`. */
#ifndef WEFT_TESTS_C_CHECK_H_
#define WEFT_TESTS_C_CHECK_H_

#include <stdio.h>

#include "weft/weft.h"

#define CHECK(cond, ...)                                               \
  do {                                                                 \
    checks++;                                                          \
    if (!(cond)) {                                                     \
      failures++;                                                      \
      fprintf(stderr, "[%s] FAILED %s:%d: ", who, __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                    \
      fprintf(stderr, "\n  last error: %s\n", weft_last_error());      \
    }                                                                  \
  } while (0)

#define EXPECT_CODE(expr, want)                                                                  \
  do {                                                                                           \
    int rc_ = (expr);                                                                            \
    CHECK(rc_ == (want), "%s returned %d (%s), expected %s", #expr, rc_, weft_error_string(rc_), \
          weft_error_string(want));                                                              \
  } while (0)

#define EXPECT_OK(expr) EXPECT_CODE(expr, WEFT_OK)

#endif /* WEFT_TESTS_C_CHECK_H_ */
