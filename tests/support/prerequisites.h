// Skipping a test for a missing prerequisite, so that a skip never hides a failure or a missing install.
//
//   MLAGPT_REQUIRE_INSTALLED(condition, message)  something deploy/setup.sh installs (the fortunes corpus, a tool):
//                                                 when `condition` is false the test is skipped with `message` on a
//                                                 developer's machine, and fails in CI (CI=true), where setup ran.
//   MLAGPT_REQUIRE_GPU(condition, message)        a CUDA build and device: skipped without one, and fails when
//                                                 MLAGPT_REQUIRE_GPU=1 (the GPU recipes set it), so `ctest -L gpu`
//                                                 on a GPU machine cannot pass by skipping.
//
// Both return from the test body, like GTEST_SKIP(). How CTest sees a skip: tests/support/gtest_main.cpp.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string_view>

namespace mlagpt::testing {

inline bool env_is_true(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && (std::string_view(value) == "1" || std::string_view(value) == "true");
}

}  // namespace mlagpt::testing

// Skips with `message` unless `condition`, or fails when the environment variable `strict` is true ("1" or "true"),
// saying why with `why`.
#define MLAGPT_REQUIRE_OR_SKIP(condition, strict, why, message) \
  if (condition) {                                              \
  } else if (::mlagpt::testing::env_is_true(strict)) {          \
    FAIL() << message << " (" << why << ")";                    \
  } else                                                        \
    GTEST_SKIP() << message

#define MLAGPT_REQUIRE_INSTALLED(condition, message) \
  MLAGPT_REQUIRE_OR_SKIP(condition, "CI", "CI=true: deploy/setup.sh should have installed it, so this fails", message)

#define MLAGPT_REQUIRE_GPU(condition, message)            \
  MLAGPT_REQUIRE_OR_SKIP(condition, "MLAGPT_REQUIRE_GPU", \
                         "MLAGPT_REQUIRE_GPU=1: a GPU test may not skip, so this fails", message)
